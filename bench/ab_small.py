#!/usr/bin/env python3
"""A/B of two `tessera` builds on the small-task graph of bench.py's "small" section
(ones(n, chunks 8) + 1, summed: one tiny task per chunk), alternated round by round on a fresh
`tessera run --workers 2` each time. It is what a change of the per-task path (messages,
decoding, placement) costs or saves the scheduler and workers, measured in the same minutes.

    bench/ab_small.py LABEL_A TESSERA_A LABEL_B TESSERA_B [--rounds N] [--n N] [--out FILE]

Prints (and with --out writes) a Markdown table: tasks/s per round (tasks / the stats'
`seconds`, submit to finished) and the B/A ratio of the medians."""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile


def machine():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.release()}"


def one(tessera, prog, tmp):
    st = os.path.join(tmp, "stats.json")
    subprocess.run([tessera, "run", "--workers", "2", "--no-progress", "--stats", st, prog],
                   check=True, stdout=subprocess.DEVNULL, timeout=600)
    with open(st) as f:
        s = json.load(f)
    return s["tasks"] / s["seconds"], s["tasks"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("label_a")
    ap.add_argument("tessera_a")
    ap.add_argument("label_b")
    ap.add_argument("tessera_b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=320000)
    ap.add_argument("--out")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    prog = os.path.join(tmp, "small.json")
    with open(prog, "w") as f:
        json.dump({"tessera": 1,
                   "arrays": {"x": {"op": "ones", "shape": [a.n], "chunks": 8},
                              "y": {"op": "add", "args": ["x", 1]},
                              "s": {"op": "sum", "args": ["y"]}},
                   "outputs": {"s": "-"}}, f)
    rates = {a.label_a: [], a.label_b: []}
    tasks = 0
    one(a.tessera_a, prog, tmp)  # warm the page cache and the CPUs' clocks
    for r in range(a.rounds):
        order = [(a.label_a, a.tessera_a), (a.label_b, a.tessera_b)]
        if r % 2:
            order.reverse()
        for label, exe in order:
            rate, tasks = one(exe, prog, tmp)
            rates[label].append(rate)
    ma, mb = statistics.median(rates[a.label_a]), statistics.median(rates[a.label_b])
    lines = [
        f"Small tasks, A/B ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{machine()}): `tessera run --workers 2` on ones({a.n}, chunks 8) + 1, summed "
        f"({tasks} tasks), {a.rounds} rounds alternated, tasks/s = tasks / submit-to-finished "
        "seconds.",
        "",
        "| build | " + " | ".join(f"round {i + 1}" for i in range(a.rounds)) + " | median |",
        "|---|" + "---|" * (a.rounds + 1),
    ]
    for label in (a.label_a, a.label_b):
        lines.append(f"| {label} | " + " | ".join(f"{x:,.0f}" for x in rates[label]) +
                     f" | {statistics.median(rates[label]):,.0f} |")
    lines += ["", f"{a.label_b} / {a.label_a} (medians): {mb / ma:.2f}"]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
