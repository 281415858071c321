#!/bin/bash
# Issue 9's profile: one 4096² `sum(A @ B)` on a cluster started by hand (scheduler + two workers
# pinned to cores 0 and 1), with `perf record` (DWARF call graphs) attached to each of the three
# processes, and per-thread CPU time / context switches read from /proc before and after the run.
# Usage: bench/profile_matmul.sh CHUNK [DTYPE] [OUTDIR] [FREQ]   (release build in build-rel)
# LAYOUT=1x2: one worker with two executor threads instead of two one-thread workers.
# With SCHED=1, `perf sched record -a` replaces the sampling (per-thread run / sleep / runnable-
# but-waiting time: `perf sched timehist -i OUTDIR/sched.data -s`).
# At the end it prints the issue-9 table: CPU of both workers' executors and loop threads and of
# the scheduler, by what the call chain shows (perf here samples cpu-clock: in a VM without a
# PMU, kernel time with interrupts off lands on the irq-enable leaf, so the chain decides, not
# the leaf). Per symbol: perf report -i OUTDIR/perf.w0.data --no-children -s pid,sym.
set -eu
CHUNK=${1:?chunk}; DT=${2:-float64}; OUT=${3:-/tmp/tessera-prof-$DT-$CHUNK}; FREQ=${4:-999}
T=$(cd "$(dirname "$0")/.." && pwd)/build-rel/python-free-cli/tessera
mkdir -p "$OUT"; cd "$OUT"
cat > prog.json <<J
{"tessera":1,"arrays":{"A":{"op":"random","shape":[4096,4096],"chunks":$CHUNK,"seed":1,"dtype":"$DT"},
"B":{"op":"random","shape":[4096,4096],"chunks":$CHUNK,"seed":2,"dtype":"$DT"},
"C":{"op":"matmul","args":["A","B"]},"t":{"op":"sum","args":["C"],"axis":null}},"outputs":{"t":"-"}}
J
"$T" scheduler --listen 127.0.0.1:0 > sched.log 2>&1 & SP=$!
for _ in $(seq 50); do grep -q listening sched.log && break; sleep 0.1; done
ADDR=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' sched.log)
if [ "${LAYOUT:-2x1}" = 1x2 ]; then
  # One worker, two executor threads; w1 is then an idle stand-in (a sleep) so the rest of the
  # script stays the same.
  "$T" worker --scheduler "$ADDR" --cpus 0-1 --threads 2 > w0.log 2>&1 & W0=$!
  sleep 1000 & W1=$!
else
"$T" worker --scheduler "$ADDR" --cpus 0 > w0.log 2>&1 & W0=$!
"$T" worker --scheduler "$ADDR" --cpus 1 > w1.log 2>&1 & W1=$!
fi
sleep 1
snap() {  # per thread: pid tid comm utime stime (ticks) voluntary nonvoluntary switches
  for p in $SP $W0 $W1; do for t in /proc/$p/task/*; do
    read -r -a f < <(sed 's/^.*) //' "$t/stat")
    echo "$p ${t##*/} $(cat "$t/comm") ${f[11]} ${f[12]} $(awk '/^voluntary_ctxt/{v=$2}/^nonvoluntary_ctxt/{n=$2}END{print v, n}' "$t/status")"
  done; done
}
snap > before.txt
PIDS=()
if [ "${SCHED:-0}" = 1 ]; then
  perf sched record -a -o sched.data -q > /dev/null 2>&1 & PIDS+=($!)
else
for x in "sched:$SP" "w0:$W0" "w1:$W1"; do
  perf record -q -F "$FREQ" --call-graph dwarf,16384 -o "perf.${x%%:*}.data" -p "${x#*:}" 2>/dev/null & PIDS+=($!)
done
perf stat -e task-clock,context-switches,cpu-migrations,page-faults --per-thread \
  -p "$SP,$W0,$W1" -o perfstat.txt & PIDS+=($!)
fi
sleep 0.5
S=$(date +%s.%N)
"$T" submit --scheduler "$ADDR" --no-progress --stats stats.json prog.json > result.txt
E=$(date +%s.%N)
snap > after.txt
for p in "${PIDS[@]}"; do kill -INT "$p"; done; wait "${PIDS[@]}" 2>/dev/null || true
kill -TERM $W0 $W1 $SP; wait $W0 $W1 $SP 2>/dev/null || true
echo "submit wall $(echo "$E - $S" | bc) s; stats seconds $(python3 -c "import json;print(json.load(open('stats.json'))['seconds'])")" | tee wall.txt
# per-thread CPU during the run (ticks of 10 ms) and context switches
join -j1 <(awk '{print $2, $0}' before.txt | sort) <(awk '{print $2, $0}' after.txt | sort) |
  awk '{printf "%s %s %-16s cpu_s=%.2f vol_cs=%d invol_cs=%d\n", $2, $3, $4, ($12+$13-$5-$6)/100, $14-$7, $15-$8}' | tee threads.txt

if [ "${SCHED:-0}" = 1 ]; then
  perf sched timehist -i sched.data --state 2>/dev/null > timehist.txt
  python3 - "$SP" "$W0" "$W1" <<'PY'
import re, sys, collections
pids = set(sys.argv[1:])
rows = []
for l in open("timehist.txt"):
    p = l.split()
    if len(p) >= 7 and re.match(r"^\d+\.\d+$", p[0]):
        rows.append((float(p[0]), p[2], float(p[3]), float(p[4]), float(p[5]), p[6]))
def pid(task):
    m = re.search(r"\[(\d+)(?:/(\d+))?\]", task)
    return (m.group(2) or m.group(1)) if m else None
# the run's window: from the first to the last switch of a thread outside the three processes
# named "tessera" (the submit client)
ts = [r[0] for r in rows if r[1].startswith("tessera[") and pid(r[1]) not in pids]
t0, t1 = min(ts), max(ts)
agg, last = collections.defaultdict(collections.Counter), {}
for t, task, w, s, r, st in rows:
    if t0 <= t <= t1 and pid(task) in pids:
        a = agg[task]; a["run"] += r; a["runnable_delay"] += s
        a["preempted" if last.get(task) == "R" else "slept"] += w
    last[task] = st
print(f"window {t1 - t0:.3f} s; ms per thread")
for k, a in sorted(agg.items()):
    print(f"{k:28s} run {a['run']:8.1f} slept {a['slept']:8.1f} preempted {a['preempted']:8.1f} wakeup-to-run {a['runnable_delay']:7.1f}")
PY
  exit 0
fi
for x in sched w0 w1; do perf script -i "perf.$x.data" -F tid,comm,ip,sym 2>/dev/null > "$x.script"; done
python3 - "$(cut -d' ' -f3 wall.txt)" <<'PY'
import sys, collections
def samples(f):
    cur = None
    for line in open(f):
        if not line.strip():
            if cur: yield cur
            cur = None
        elif not line.startswith((" ", "\t")):
            p = line.split(); cur = (p[0], [])
        else:
            p = line.split(None, 1); cur[1].append(p[1].strip() if len(p) > 1 else "?")
    if cur: yield cur
def has(ch, *ks): return any(k in s for s in ch for k in ks)
def cat(ex, ch):
    leaf = ch[0] if ch else "?"
    if not ex:
        if has(ch, "munmap", "vms_clear_ptes", "flush_tlb_mm_range", "zap_", "unmap_"): return "loop: free() -> munmap + TLB-shootdown IPI"
        if has(ch, "tcp_sendmsg", "writev", "tcp_recvmsg", "_copy_to_iter") or leaf == "read": return "loop: TCP send/recv"
        return "loop: other (epoll, decode, store, ...)"
    if has(ch, "asm_exc_page_fault"):
        if has(ch, "k_random"): return "exec: page faults on inline random sources' fresh output"
        if has(ch, "gemm_beta", "k_matmul"): return "exec: page faults on fresh matmul output (BLAS beta / accumulator copy)"
        return "exec: page faults in malloc / other"
    if has(ch, "mmap"): return "exec: page faults in malloc / other"
    if "gemm_kernel" in leaf: return "exec: BLAS compute kernel"
    if "copy_" in leaf and "gemm" in "".join(ch[:3]) or "itcopy" in leaf or "oncopy" in leaf: return "exec: BLAS packing (itcopy/oncopy)"
    if has(ch, "gemm_beta"): return "exec: BLAS beta memset of fresh C"
    if has(ch, "k_random"): return "exec: inline random source generation"
    if has(ch, "k_matmul") and "mem" in leaf: return "exec: matmul accumulator copy"
    return "exec: other (sum, futex, eventfd, ...)"
wall = float(sys.argv[1]); core_ms = 2000 * wall
c = collections.Counter()
for w in ("w0", "w1"):
    for comm, ch in samples(w + ".script"):
        c[cat(comm.startswith("tsr-exec"), ch)] += 1
c["scheduler (all)"] = sum(1 for _ in samples("sched.script"))
c["not sampled: idle, perf, kernel threads"] = round(core_ms - sum(c.values()))
print(f"| where | ms (~samples) | % of 2 cores x {wall:.3f} s |\n|---|---|---|")
for k, v in c.most_common():
    print(f"| {k} | {v} | {100 * v / core_ms:.1f} |")
PY
