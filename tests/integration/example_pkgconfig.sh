#!/bin/sh
# Builds examples/matmul.c against the library exactly as a user would, through pkg-config
# (the uninstalled .pc meson writes), and runs it on an embedded local cluster.
# Usage: example_pkgconfig.sh BUILD_DIR SOURCE_DIR TESSERA_EXE [SANITIZE]
# SANITIZE is meson's b_sanitize: a sanitized library needs a program built the same way.
set -eu
build=$1 src=$2 exe=$3 san=${4:-none}
sanflags=""
[ "$san" = none ] || sanflags="-fsanitize=$san"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export PKG_CONFIG_PATH="$build/meson-uninstalled"
cc -std=c11 -Wall -Wextra -Werror $sanflags "$src/examples/matmul.c" \
   $(pkg-config --cflags --libs tessera) -lm -o "$tmp/matmul"
# The local cluster finds `tessera` on PATH when it is not installed.
PATH="$(dirname "$exe"):$PATH" LD_LIBRARY_PATH="$build" "$tmp/matmul" > "$tmp/out" 2>"$tmp/err" || {
  cat "$tmp/err"; exit 1; }
cat "$tmp/out"
grep -q "spot checks ok" "$tmp/out"
