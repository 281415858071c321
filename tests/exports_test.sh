#!/bin/sh
# libtessera exports its API (tsr_*) and nothing else: not the symbols of the static libraries
# linked into it (libxsmm), which would collide with a user's own copy. Names that start with
# an underscore are the toolchain's and the sanitizers' (e.g. ASan's __odr_asan_gen_*), not ours.
set -eu
lib=$1
bad=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVWui]$/ {print $3}' | sed 's/@.*//' |
  grep -v -e '^tsr_' -e '^_' || true)
if [ -n "$bad" ]; then
  echo "$lib exports symbols outside tsr_*:"
  echo "$bad" | head -20
  echo "($(echo "$bad" | wc -l) in all)"
  exit 1
fi
echo "exports ok: $(nm -D --defined-only "$lib" | grep -c ' tsr_') tsr_* symbols"
