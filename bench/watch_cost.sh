#!/usr/bin/env bash
# What watching costs the scheduler: CPU seconds of the scheduler process while a graph of about
# a million tiny tasks runs, unwatched and watched by a live `tessera top` (full screen in a
# detached tmux terminal) at its default 4 snapshots a second, and at 20 a second to make the
# cost visible, alternated on one long-lived cluster. Prints a Markdown table; the figure is the median extra scheduler CPU as a
# share of the unwatched run's scheduler CPU.
# Usage: bench/watch_cost.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
build=${1:-build} rounds=${2:-3}
tessera="$build/python-free-cli/tessera"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
cat > "$tmp/m.json" <<'JSON'
{"tessera":1,"arrays":{"X":{"op":"ones","shape":[2640000],"chunks":8},"Y":{"op":"add","args":["X",1]},"s":{"op":"sum","args":["Y"],"axis":null}},"outputs":{"s":"-"}}
JSON
ntasks=$("$tessera" check "$tmp/m.json" | awk '/tasks$/ {print $1}')
"$tessera" scheduler --listen 127.0.0.1:0 > "$tmp/sched.out" 2>&1 &
spid=$!; pids+=("$spid")
for _ in $(seq 50); do grep -q "listening on" "$tmp/sched.out" && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$tmp/sched.out" | head -1)
for k in 0 1; do "$tessera" worker --scheduler "$addr" --cpus "$k" > /dev/null 2>&1 & pids+=("$!"); done
cpu() { awk '{print $14 + $15}' "/proc/$spid/stat"; } # clock ticks
hz=$(getconf CLK_TCK)
run() { # interval or "none" -> scheduler CPU seconds during one submission
  local a b session="tsr-watch-$$"
  if [ "$1" != none ]; then
    # the real dashboard, full screen in a detached terminal, refreshing every $1 s
    tmux new-session -d -s "$session" -x 120 -y 40 "$tessera top --scheduler $addr --interval $1"
    sleep 0.5
  fi
  a=$(cpu)
  "$tessera" submit --scheduler "$addr" --no-progress --stats "$tmp/st.json" "$tmp/m.json" > /dev/null
  b=$(cpu)
  [ "$1" != none ] && tmux kill-session -t "$session" 2>/dev/null
  awk -v a="$a" -v b="$b" -v hz="$hz" 'BEGIN { printf "%.3f", (b - a) / hz }'
}
command -v tmux > /dev/null || { echo "watch_cost: needs tmux (apt-get install tmux)" >&2; exit 1; }
"$tessera" submit --scheduler "$addr" --no-progress "$tmp/m.json" > /dev/null # warm-up
echo "| round | unwatched sched CPU s | watched 4/s sched CPU s | extra | watched 20/s sched CPU s | extra |"
echo "|---|---|---|---|---|---|"
r4=() r20=()
for r in $(seq 1 "$rounds"); do
  u=$(run none); w4=$(run 0.25); w20=$(run 0.05)
  x4=$(awk -v u="$u" -v w="$w4" 'BEGIN { printf "%.4f", (w - u) / u }')
  x20=$(awk -v u="$u" -v w="$w20" 'BEGIN { printf "%.4f", (w - u) / u }')
  r4+=("$x4"); r20+=("$x20")
  printf "| %d | %s | %s | %+.1f%% | %s | %+.1f%% |\n" "$r" "$u" "$w4" "$(awk -v x="$x4" 'BEGIN{print 100*x}')" "$w20" "$(awk -v x="$x20" 'BEGIN{print 100*x}')"
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf "\n%s tasks; median extra scheduler CPU when watched: %+.2f%% at 4 snapshots/s, %+.2f%% at 20/s (%s, %s cores, %s)\n" \
  "$ntasks" "$(awk -v x="$(med "${r4[@]}")" 'BEGIN{print 100*x}')" "$(awk -v x="$(med "${r20[@]}")" 'BEGIN{print 100*x}')" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$(nproc)" "$(date -u +%Y-%m-%d)"

# Direct cost per snapshot on a loaded scheduler: the same graph submitted, workers stopped
# (SIGSTOP) once it runs so the scheduler holds the million-task job with full in-flight
# windows and is otherwise idle, then 2000 snapshots back to back; the scheduler's CPU over
# them / 2000 is the cost of one snapshot.
here=$(cd "$(dirname "$0")" && pwd)
cc -O2 -o "$tmp/watch_poll" "$here/watch_poll.c" -I"$here/../include" -L"$build" -ltessera \
  -Wl,-rpath,"$(cd "$build" && pwd)"
"$tessera" submit --scheduler "$addr" --no-progress "$tmp/m.json" > /dev/null &
sub=$!
sleep 1.0
for p in "${pids[@]:1}"; do kill -STOP "$p"; done
a=$(cpu)
read -r secs bytes < <("$tmp/watch_poll" "$addr" 2000)
b=$(cpu)
for p in "${pids[@]:1}"; do kill -CONT "$p"; done
wait "$sub" || true
per=$(awk -v a="$a" -v b="$b" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz / 2000 * 1e6 }')
printf "one snapshot of a scheduler holding a %s-task job: %s us of scheduler CPU (%s bytes of JSON, %.0f us round trip); at 4/s: %.3f%% of one core\n" \
  "$ntasks" "$per" "$bytes" "$(awk -v s="$secs" 'BEGIN{print s/2000*1e6}')" "$(awk -v p="$per" 'BEGIN{print p*4/1e4}')"

