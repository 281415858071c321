#!/usr/bin/env bash
# Wall time of `tessera run examples/matmul.json` (4096x4096 float64, chunks 512, the output
# reduced to a printed sum) next to one 2-thread cblas_dgemm on the same matrices, run in
# alternation (A B A B ...) because the machines here are shared and noisy. Prints a Markdown
# table with the machine and the date; the median of the pairwise ratios is the figure to quote.
# Usage: bench/matmul_vs_dgemm.sh BUILD_DIR [ROUNDS]
set -euo pipefail
build=${1:-build} rounds=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
tessera="$build/python-free-cli/tessera"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/dgemm" "$here/dgemm.c" $(pkg-config --cflags --libs openblas)
flops=$(awk 'BEGIN { printf "%.0f", 2 * 4096^3 }')
echo "| round | tessera run (s) | GFLOP/s | dgemm 2 threads (s) | GFLOP/s | tessera / dgemm time |"
echo "|---|---|---|---|---|---|"
ratios=()
for r in $(seq 1 "$rounds"); do
  t0=$(date +%s.%N)
  "$tessera" run --no-progress "$root/examples/matmul.json" > "$tmp/out"
  t1=$(date +%s.%N)
  tt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  read -r td gd _ < <("$tmp/dgemm" 4096 2)
  ratio=$(awk -v a="$tt" -v b="$td" 'BEGIN { print a / b }')
  ratios+=("$ratio")
  printf "| %d | %.2f | %.1f | %.2f | %.1f | %.2f |\n" "$r" "$tt" "$(awk -v f="$flops" -v t="$tt" 'BEGIN { print f / t / 1e9 }')" "$td" "$gd" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
printf "\nmedian time ratio tessera/dgemm: %.2f (machine: %s, %s cores; %s)\n" "$median" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$(nproc)" "$(date -u +%Y-%m-%d)"
