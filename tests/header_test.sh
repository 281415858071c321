#!/bin/sh
# Every public header compiles alone, as C11 with -pedantic, and as C++.
set -eu
src=$1
for h in "$src"/include/tessera/*.h; do
  printf '#include "%s"\n' "$h" | cc -std=c11 -pedantic -Wall -Wextra -Werror -fsyntax-only -x c -
  if command -v c++ >/dev/null 2>&1; then
    printf '#include "%s"\n' "$h" | c++ -std=c++11 -Wall -Werror -fsyntax-only -x c++ -
  fi
done
echo "headers ok"
