#!/bin/sh
# Runs examples/oneliner.c (built by meson) on an embedded cluster and checks its two printed
# results against NumPy's, computed here from the same inputs (an independent reference).
set -eu
exe="$1"
out=$("$exe")
echo "$out"
printf '%s\n' "$out" | /usr/bin/python3 -c '
import sys
import numpy as np
n = 300
i = np.arange(n * n)
a = ((i % 17) / 17.0 - 0.5).reshape(n, n)
b = ((i % 13) / 13.0).reshape(n, n)
ab = a @ b
want = {"sum": ab.sum(), "mean": (ab * 2 + 1).mean()}
got = dict((k, float(v)) for k, v in (line.split() for line in sys.stdin if line.strip()))
for k, w in want.items():
    g = got[k]
    if abs(g - w) > 1e-9 * max(1.0, abs(w)):
        sys.exit("%s: got %r, numpy says %r" % (k, g, w))
print("matches numpy")
'
