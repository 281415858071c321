#!/bin/sh
# Builds examples/matmul.c against the library exactly as a user of a packaged tree would:
# `meson install --destdir` into a temporary folder, then pkg-config on that tree's tessera.pc
# with --define-prefix and without it (the file's paths are relative to itself). The flags must
# point into that tree only: no OpenBLAS or other dependency's include path, nothing from the
# build folder or the configured prefix. Then runs the program on an embedded local cluster. The
# example plugin (examples/plugins/scale_add.c) is built the same way, from the installed header.
# Usage: example_pkgconfig.sh BUILD_DIR SOURCE_DIR TESSERA_EXE MESON [SANITIZE]
# SANITIZE is meson's b_sanitize: a sanitized library needs a program built the same way.
set -eu
build=$1 src=$2 exe=$3 meson=$4 san=${5:-none}
sanflags=""
[ "$san" = none ] || sanflags="-fsanitize=$san"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dest="$tmp/dest"
"$meson" install -C "$build" --no-rebuild --destdir "$dest" > "$tmp/install.log" 2>&1 || {
  cat "$tmp/install.log"; exit 1; }
pc=$(find "$dest" -path '*/pkgconfig/tessera.pc')
[ -n "$pc" ] || { echo "no pkgconfig/tessera.pc under the installed tree"; exit 1; }
prefix=$("$meson" introspect "$build" --buildoptions |
  python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"][0])')
fail=0
for define in --define-prefix ""; do
  flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config $define --cflags --libs tessera)
  echo "pkg-config $define: $flags"
  case "$flags" in
  *openblas*) echo "  names OpenBLAS: a user of the shared library needs none of its flags"; fail=1 ;;
  esac
  libdir=""
  for f in $flags; do
    case "$f" in
    -I* | -L*)
      path=${f#-?}
      case "$path" in
      "$dest"/*) ;;
      *) echo "  $f: outside the installed tree $dest"; fail=1; continue ;;
      esac
      real=$(realpath -m "$path")
      case "$real" in
      "$dest$prefix"/*) ;;
      *) echo "  $f: resolves to $real, outside $dest$prefix"; fail=1 ;;
      esac
      [ "${f#-I}" = "$f" ] || [ -f "$real/tessera/tessera.h" ] || {
        echo "  $f: no tessera/tessera.h there"; fail=1; }
      [ "${f#-L}" = "$f" ] || { libdir=$real; [ -e "$real/libtessera.so" ] || {
        echo "  $f: no libtessera.so there"; fail=1; }; }
      ;;
    -ltessera) ;;
    *) echo "  $f: a flag a user of the shared library does not need"; fail=1 ;;
    esac
  done
  [ "$fail" = 0 ] || exit 1
  cc -std=c11 -Wall -Wextra -Werror $sanflags "$src/examples/matmul.c" $flags -lm -o "$tmp/matmul"
  # The example plugin, built as docs/plugins.md says: the header alone, no library.
  cflags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config $define --cflags tessera)
  cc -shared -fPIC -std=c11 -Wall -Wextra -Werror $sanflags -o "$tmp/libscale_add.so" \
    "$src/examples/plugins/scale_add.c" $cflags
  nm -D "$tmp/libscale_add.so" | grep -q ' R tsr_plugin_abi$' || {
    echo "the example plugin exports no tsr_plugin_abi"; exit 1; }
done
# The local cluster finds `tessera` on PATH when it is not installed.
PATH="$(dirname "$exe"):$PATH" LD_LIBRARY_PATH="$libdir" "$tmp/matmul" > "$tmp/out" 2>"$tmp/err" || {
  cat "$tmp/err"; exit 1; }
cat "$tmp/out"
grep -q "spot checks ok" "$tmp/out"
