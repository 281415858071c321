#!/usr/bin/python3
"""The benchmark suite of issue 3, driven by bench/run (which installs what is missing first).

Builds what it needs (a release build of tessera unless --build is given, and the C helpers in
bench/src), runs the sections below with the systems compared in alternation (A B A B ...) within
each round, and writes a Markdown report (bench/RESULTS.md for a full run of every section).

Sections: matmul, small, transfers, memory, imbalance, traffic, spill, fusion (docs/benchmarks.md says what
each measures and how). Every figure is a median over rounds; every comparison is the median of
the per-round ratios, because the machines are shared and an absolute time can move 2x between
runs while a same-round ratio does not.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, ".build")
BIN = os.path.join(BUILD, "bin")
PY = "/usr/bin/python3"  # Debian's Python, where python3-dask lives (not a pyenv shim)
HZ = os.sysconf("SC_CLK_TCK")
SECTIONS = ["matmul", "small", "transfers", "memory", "imbalance", "traffic", "spill", "fusion"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def fmt(x, digits=2):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 1e5:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


# ---- CPU accounting: how much of the machine something outside the benchmark used ----------

class Load:
    """Measures the CPU used by processes outside the benchmark while a measurement ran: the
    machine's busy time (/proc/stat) minus ours (this process, reaped children, and the
    long-lived processes we started, read from /proc). Reported per round, in cores."""

    live = set()  # pids of long-lived processes we started (clusters, the spinner)

    @staticmethod
    def _busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / HZ

    @staticmethod
    def _ours():
        t = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            r = resource.getrusage(who)
            t += r.ru_utime + r.ru_stime
        for pid in list(Load.live):
            t += proc_cpu(pid) or 0.0
        return t

    def __enter__(self):
        self.t0, self.b0, self.o0 = time.perf_counter(), self._busy(), self._ours()
        return self

    def __exit__(self, *exc):
        wall = max(time.perf_counter() - self.t0, 1e-3)
        self.foreign = max(0.0, (self._busy() - self.b0) - (self._ours() - self.o0)) / wall


def proc_cpu(pid):
    """utime + stime of a live process in seconds, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / HZ
    except (OSError, IndexError, ValueError):
        return None


def proc_cpu_ns(pid):
    """CPU time of every thread of a live process in seconds, from schedstat (ns resolution)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        return None
    return total / 1e9


QUIET = 0.25  # cores used by other processes above which a round is done again


def wait_quiet(max_wait):
    """Waits (at most max_wait seconds) until other processes use less than QUIET cores over
    half a second; returns whether that happened."""
    deadline = time.time() + max_wait
    while True:
        with Load() as load:
            time.sleep(0.5)
        if load.foreign < QUIET:
            return True
        if time.time() > deadline:
            log(f"the machine stays busy ({load.foreign:.2f} cores used by other processes); "
                "measuring anyway")
            return False


# ---- running things -------------------------------------------------------------------------

class Result:
    def __init__(self, rc, out, err, wall, timed_out, foreign):
        self.rc, self.out, self.err, self.wall = rc, out, err, wall
        self.timed_out, self.foreign = timed_out, foreign

    def ok(self):
        return self.rc == 0 and not self.timed_out


def run(cmd, env=None, timeout=600, cwd=None):
    """Runs cmd in its own process group (so a time limit kills everything it started)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    with Load() as load:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=e, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        timed_out = False
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        wall = time.perf_counter() - t0
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything it left behind
        except ProcessLookupError:
            pass
    r = Result(p.returncode, out, err, wall, timed_out, load.foreign)
    with open(os.path.join(WORK, "log.txt"), "a") as f:
        f.write(f"=== {' '.join(cmd)} env={env} rc={p.returncode} wall={wall:.3f} "
                f"timed_out={timed_out}\n{out[-4000:]}\n{err[-4000:]}\n")
    return r


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=60).stdout.strip()
    except Exception as ex:  # noqa: BLE001 - only for the report's version strings
        return f"? ({ex})"


# ---- building -------------------------------------------------------------------------------

def source_commit(src):
    """The full commit of a source tree, and whether tracked files differ from it: the report
    names exactly what was measured."""
    rev = sh(f"git -C {src} rev-parse HEAD 2>/dev/null")
    if not rev:
        return "not a git checkout"
    # --no-optional-locks: a status must not take the index lock of a checkout in use
    dirty = sh(f"git -C {src} --no-optional-locks status --porcelain --untracked-files=no "
               "2>/dev/null")
    return rev + (" with uncommitted changes" if dirty else "")


def build_tessera(build_dir, src=ROOT, bdir=os.path.join(BUILD, "tessera")):
    """A release build of the tree at src in bdir (or the given --build directory as is);
    returns (executable, description, commit of the source built)."""
    if build_dir:
        exe = os.path.join(os.path.abspath(build_dir), "python-free-cli", "tessera")
        if not os.access(exe, os.X_OK):
            sys.exit(f"bench: no tessera executable at {exe}")
        btype = sh(f"meson introspect --buildoptions {build_dir} | {PY} -c \"import json,sys; "
                   "print([o['value'] for o in json.load(sys.stdin) "
                   "if o['name']=='buildtype'][0])\"")
        try:
            with open(os.path.join(build_dir, "meson-info", "meson-info.json")) as f:
                src = json.load(f)["directories"]["source"]
        except (OSError, KeyError, ValueError):
            src = "?"
        commit = source_commit(src) if src != "?" else "unknown"
        return exe, f"given build {build_dir}, {btype}, of {src}", commit
    if not os.path.exists(os.path.join(bdir, "build.ninja")):
        log(f"configuring a release build of tessera in {os.path.relpath(bdir)}")
        r = subprocess.run(["meson", "setup", bdir, src, "--buildtype=release",
                            "-Dtests=disabled"], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"bench: meson setup failed:\n{r.stdout}\n{r.stderr}")
    log(f"building tessera in {os.path.relpath(bdir)} (ninja)")
    r = subprocess.run(["ninja", "-C", bdir], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"bench: building tessera failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return (os.path.join(bdir, "python-free-cli", "tessera"),
            f"{os.path.relpath(bdir, ROOT)} (release)", source_commit(src))


def build_baseline(commit):
    """A release build of another commit, for the small section's no-regression A/B: checked
    out in a detached worktree, built like the current tree, and the worktree removed (the
    build directory keeps the executable). The build is named by the full commit, so a later
    run with the same baseline reuses it instead of building again. Returns {"exe", "commit"}."""
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", "--quiet",
                        commit + "^{commit}"], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"bench: --baseline {commit} is not a commit of {ROOT}")
    sha = r.stdout.strip()
    bdir = os.path.join(BUILD, "baseline-" + sha[:12])
    exe = os.path.join(bdir, "python-free-cli", "tessera")
    if os.access(exe, os.X_OK):
        log(f"baseline {sha[:12]}: reusing {os.path.relpath(bdir)}")
        return {"exe": exe, "commit": sha}
    shutil.rmtree(bdir, ignore_errors=True)  # an unfinished build: its worktree is gone
    src = os.path.join(BUILD, "baseline-src-" + sha[:12])
    shutil.rmtree(src, ignore_errors=True)
    # --force: a run killed while building leaves its worktree registered though removed
    r = subprocess.run(["git", "-C", ROOT, "worktree", "add", "--force", "--detach", src, sha],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"bench: git worktree add for the baseline failed:\n{r.stderr}")
    try:
        exe, _, _ = build_tessera(None, src=src, bdir=bdir)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", src],
                       capture_output=True)
    return {"exe": exe, "commit": sha}


def pkgconfig(*names):
    r = subprocess.run(["pkg-config", "--cflags", "--libs", *names], capture_output=True,
                       text=True)
    return r.stdout.split() if r.returncode == 0 else None


def build_helpers():
    """Compiles bench/src/*.c into bench/.build/bin; returns {name: path or None} and reasons."""
    os.makedirs(BIN, exist_ok=True)
    blas = pkgconfig("openblas")
    starpu = pkgconfig("starpu-1.3")
    plan = {
        "gemm": (["-march=native"], blas, "OpenBLAS (libopenblas-dev) not found by pkg-config"),
        "tcp_stream": ([], [], None),
        "spin": ([], [], None),
        "starpu_gemm": ([], (starpu + blas) if starpu and blas else None,
                        "StarPU (libstarpu-dev) not found by pkg-config starpu-1.3"),
        "starpu_empty": ([], starpu, "StarPU (libstarpu-dev) not found by pkg-config starpu-1.3"),
    }
    got, why = {}, {}
    for name, (extra, libs, missing) in plan.items():
        src, exe = os.path.join(HERE, "src", name + ".c"), os.path.join(BIN, name)
        if libs is None:
            got[name], why[name] = None, missing
            continue
        if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
            r = subprocess.run(["gcc", "-O2", "-Wall", *extra, "-o", exe, src, *libs],
                               capture_output=True, text=True)
            if r.returncode:
                got[name], why[name] = None, f"does not compile: {r.stderr.strip()[-300:]}"
                continue
        got[name] = exe
    return got, why


# ---- programs -------------------------------------------------------------------------------

def write_program(path, arrays, outputs):
    with open(path, "w") as f:
        json.dump({"tessera": 1, "arrays": arrays, "outputs": outputs}, f)
    return path


def matmul_program(path, n, chunk, dtype, reduce=True):
    arrays = {
        "A": {"op": "random", "shape": [n, n], "chunks": chunk, "seed": 1, "dtype": dtype},
        "B": {"op": "random", "shape": [n, n], "chunks": chunk, "seed": 2, "dtype": dtype},
        "C": {"op": "matmul", "args": ["A", "B"]},
    }
    if reduce:
        arrays["t"] = {"op": "sum", "args": ["C"], "axis": None}
        return write_program(path, arrays, {"t": "-"})
    return write_program(path, arrays, {"C": os.path.join(os.path.dirname(path), "c.npy")})


def small_program(path, n, chunk):
    return write_program(path, {
        "x": {"op": "ones", "shape": [n], "chunks": chunk},
        "y": {"op": "add", "args": ["x", 1]},
        "s": {"op": "sum", "args": ["y"]},
    }, {"s": "-"})


def chain_program(path, rows, cols, steps):
    """One chunk of rows x cols float64 through `steps` elementwise tasks: under round-robin
    placement consecutive tasks alternate workers, so every step moves the whole chunk."""
    arrays = {"X": {"op": "random", "shape": [rows, cols], "chunks": [rows, cols], "seed": 1},
              "Y0": {"op": "add", "args": ["X", 1]}}
    for i in range(1, steps):
        arrays[f"Y{i}"] = {"op": "neg", "args": [f"Y{i - 1}"]}
    arrays["s"] = {"op": "sum", "args": [f"Y{steps - 1}"]}
    return write_program(path, arrays, {"s": "-"})


# How `tessera run` spends the 2 cores: two 1-thread workers, one 2-thread worker, or whatever
# it picks by itself (a worker per physical core hwloc reports, 1 thread each).
LAYOUTS = {"2x1": ["--workers", "2", "--threads", "1"], "1x2": ["--workers", "1", "--threads", "2"],
           "default": []}


class Bench:
    def __init__(self, args, tessera, helpers, why, base=None):
        self.a, self.tessera, self.h, self.why = args, tessera, helpers, why
        self.base = base  # {"exe", "commit"} of --baseline's build, or None
        self.smoke = args.smoke
        self.q = args.quick or args.smoke  # smoke is quicker still: sizes without targets
        self.layout = args.layout
        self.nrounds = args.rounds or (1 if self.smoke else 2 if self.q else 5)
        self.quiet_wait = 5 if self.q else 20
        self.data = {}
        self.dask_ok, self.dask_why = self._check_dask()
        self.starpu_env = {"STARPU_HOME": os.path.join(BUILD, "starpu"), "STARPU_NCPU": "2",
                           "STARPU_SILENT": "1", "STARPU_NCUDA": "0", "STARPU_NOPENCL": "0",
                           "OPENBLAS_NUM_THREADS": "1"}
        os.makedirs(self.starpu_env["STARPU_HOME"], exist_ok=True)

    def _check_dask(self):
        r = subprocess.run([PY, "-c", "import dask, distributed, numpy"], capture_output=True,
                           text=True)
        if r.returncode:
            return False, "python3-dask/python3-distributed/python3-numpy cannot be imported: " \
                + r.stderr.strip().splitlines()[-1]
        return True, None

    def rounds(self, label, one, n=None):
        """Calls one(i) -> row (a dict with "foreign") for n rounds, after waiting for a quiet
        machine each time. A round during which other processes used QUIET cores or more is
        done again, at most n extra times in all, so the medians come from quiet rounds
        wherever the machine allows. Returns (kept rows, rows done again)."""
        n = n or self.nrounds
        kept, redone, extra = [], [], n
        while len(kept) < n:
            wait_quiet(self.quiet_wait)
            row = one(len(kept))
            if row["foreign"] >= QUIET and extra > 0:
                extra -= 1
                redone.append(row)
                log(f"{label}: other processes used {row['foreign']:.2f} cores during round "
                    f"{len(kept) + 1}; doing it again")
                continue
            kept.append(row)
        return kept, redone

    def check_count(self, prog, *extra):
        r = run([self.tessera, "check", *extra, prog], timeout=600)
        m = re.search(r"^(\d+) tasks$", r.out, re.M)
        if not m:
            raise RuntimeError(f"tessera check {prog} failed: {r.err}")
        return int(m.group(1))

    def tessera_run(self, prog, env=None, layout="2x1", timeout=600, extra=()):
        """`tessera run` with --stats in one of LAYOUTS (the sections other than matmul keep
        2x1: they are about two workers); returns (stats dict or None, Result)."""
        st = prog + ".stats.json"
        if os.path.exists(st):
            os.remove(st)
        r = run([self.tessera, "run", "--no-progress", *LAYOUTS[layout], *extra, "--stats", st,
                 prog],
                env=env, timeout=timeout, cwd=os.path.dirname(prog))
        if not r.ok():
            log(f"tessera run {os.path.basename(prog)} failed (rc {r.rc}"
                f"{', timed out' if r.timed_out else ''}): {r.err.strip()[-300:]}")
            return None, r
        with open(st) as f:
            return json.load(f), r

    def dask(self, sched, what, n, chunk, cap, dtype="float64"):
        """One Dask measurement in a fresh process; returns (dict, Result). The driver enforces
        cap on the timed part; the outer limit also allows for starting the cluster."""
        r = run([PY, os.path.join(HERE, "dask_peer.py"), "--sched", sched, "--what", what,
                 "--n", str(n), "--chunk", str(chunk), "--dtype", dtype, "--timeout", str(cap)],
                env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}, timeout=cap + 90)
        rows = [json.loads(x) for x in r.out.splitlines() if x.startswith("{")]
        if r.timed_out or (rows and rows[-1].get("timeout")):
            return {"timeout": cap}, r
        if not r.ok() or not rows:
            log(f"dask {sched} {what} failed: {r.err.strip()[-300:]}")
            return None, r
        return rows[-1], r


# ---- section 1: blocked matmul --------------------------------------------------------------

LARGE_N = 8192  # the larger case of issue 9: end-to-end figures where start-up weighs less
# Per-round ratios of seconds, (key, label, numerator, denominator): above 1 means tessera is
# faster than the other side. All three are reported for every configuration.
MATMUL_RATIOS = [("starpu", "tessera / starpu", "starpu_s", "tessera_s"),
                 ("limit", "limit / tessera s", "limit_s", "tessera_s"),
                 ("wall", "limit / tessera wall", "limit_s", "tessera_wall")]
# Issue 9's targets, by (n, dtype, chunk) and ratio key; a ratio without one is only reported.
# Quick and smoke sizes are not in the table, so they have none.
MATMUL_TARGETS = {
    (4096, "float64", 1024): {"starpu": 1.0},
    (4096, "float64", 512): {"starpu": 1.0, "limit": 0.92},
    (4096, "float64", 256): {"starpu": 1.0, "limit": 0.85},
    (4096, "float64", 128): {"starpu": 1.0, "limit": 0.70},
    (4096, "float32", 512): {"starpu": 1.0},
    (LARGE_N, "float64", 512): {"starpu": 1.0, "wall": 0.90},
    (LARGE_N, "float64", 1024): {"starpu": 1.0, "wall": 0.90},
}


def matmul_cases(b):
    """(n, dtype, chunk, rounds, Dask cap in s) of every configuration section 1 runs."""
    if b.smoke:
        return [(1024, "float64", 512, 1, 30)]
    n, cap = (2048, 30) if b.q else (4096, 60)
    cases = [(n, "float64", c, b.nrounds, cap) for c in (1024, 512, 256, 128)]
    cases.append((n, "float32", 512, b.nrounds, cap))
    if not b.q:
        # 8x the work of 4096² for every system: 3 rounds unless --rounds says otherwise, so
        # the full run stays within the hour, and a cap that leaves Dask its 8x too.
        cases += [(LARGE_N, "float64", c, b.a.rounds or 3, 120) for c in (512, 1024)]
    return cases


def extra_layouts(b, n, dtype, chunk):
    """The explicit layouts also run, in the same rounds, besides the main one: the two
    headline float64 chunk sizes at the section's first size, where the question of how to
    spend two cores (two 1-thread workers or one 2-thread worker) matters most."""
    if n >= LARGE_N or dtype != "float64" or chunk not in (512, 128):
        return []
    return [lay for lay in ("2x1", "1x2") if lay != b.layout]


def sec_matmul(b):
    tmp = tempfile.mkdtemp(dir=WORK)
    out = {"layout": b.layout, "configs": []}
    for n, dtype, chunk, nrounds, cap in matmul_cases(b):
        prog = matmul_program(os.path.join(tmp, f"mm_{n}_{dtype}_{chunk}.json"), n, chunk, dtype)
        flops = 2.0 * n ** 3
        extras = extra_layouts(b, n, dtype, chunk)
        cfg = {"n": n, "dtype": dtype, "chunk": chunk, "cap": cap, "flops": flops,
               "extras": extras, "tasks": b.check_count(prog)}
        gave_up = set()  # Dask schedulers that hit their cap here: not retried
        letter = "d" if dtype == "float64" else "s"

        def one(rnd, prog=prog, n=n, dtype=dtype, chunk=chunk, cap=cap, flops=flops,
                extras=extras, cfg=cfg, gave_up=gave_up, letter=letter):
            row, fg = {}, []

            def tessera(lay):
                st, r = b.tessera_run(prog, layout=lay)
                fg.append(r.foreign)
                if not st:
                    return
                if lay == b.layout:
                    row["tessera_s"], row["tessera_wall"] = st["seconds"], r.wall
                    row["tessera_workers"] = len(st.get("workers", []))
                else:
                    row[f"tessera_{lay}_s"] = st["seconds"]
                if lay == "2x1":
                    # Section 6 compares bytes between two workers with Dask's two: only a
                    # two-worker run's traffic means that.
                    row["moved_bytes"] = st.get("moved_bytes")
                    row["in_bytes"] = sum(w.get("in_bytes", 0) for w in st.get("workers", []))

            def limit():
                r = run([b.h["gemm"], letter, str(n), "2"], timeout=300)
                fg.append(r.foreign)
                if r.ok():
                    row["limit_s"] = float(r.out.split()[0])
                r = run([b.h["gemm"], "tile", letter, str(chunk)], timeout=60)
                fg.append(r.foreign)
                if r.ok():
                    # Two single-threaded workers each at one core's rate on one chunk: the
                    # most their kernels allow, expressed as seconds for the whole product.
                    row["ceiling_s"] = flops / (2 * float(r.out.split()[0]) * 1e9)

            def dask(sched, key):
                if sched in gave_up:
                    row[key] = "not retried"
                    return
                d, r = b.dask(sched, "matmul", n, chunk, cap, dtype)
                fg.append(r.foreign)
                if d and d.get("timeout"):
                    gave_up.add(sched)
                    row[key] = f"> {cap} s"
                elif d:
                    row[key] = d["seconds"]
                    if sched == "distributed":
                        row["dask_in_bytes"] = d["in_bytes"]
                        cfg["dask_tasks"] = d["tasks"]

            def starpu():
                r = run([b.h["starpu_gemm"], letter, str(n), str(chunk)],
                        env={**b.starpu_env, "STARPU_SCHED": "dmda"}, timeout=300)
                fg.append(r.foreign)
                if r.ok():
                    row["starpu_s"] = float(r.out.split()[0])

            steps = [lambda lay=lay: tessera(lay) for lay in [b.layout] + extras]
            if b.h["gemm"]:
                steps.append(limit)
            if b.dask_ok:
                steps += [lambda: dask("distributed", "dask_dist_s"),
                          lambda: dask("threaded", "dask_thr_s")]
            if b.h["starpu_gemm"]:
                steps.append(starpu)
            # The order is reversed every other round: whatever runs first after another
            # system's exit runs ~5% slower here (the same tessera build measured three times
            # in a row after StarPU: 1.64, 1.55, 1.55 s; bench/notes.md, issue 9 §13), so no
            # system may always be first.
            for step in (steps if rnd % 2 == 0 else steps[::-1]):
                step()
            row["foreign"] = max(fg)
            log(f"matmul {n} {dtype} chunk {chunk} round {rnd + 1}: " + ", ".join(
                f"{k} {fmt(v, 3)}" for k, v in row.items() if k.endswith("_s")))
            return row

        cfg["rounds"], cfg["redone"] = b.rounds(f"matmul {n} {dtype} chunk {chunk}", one,
                                                nrounds)
        out["configs"].append(cfg)
    b.data["matmul"] = out
    shutil.rmtree(tmp, ignore_errors=True)


def redone_note(redone):
    """A line saying how many rounds were done again because of other load (or nothing)."""
    if not redone:
        return []
    loads = ", ".join(f"{r['foreign']:.2f}" for r in redone)
    return [f"{len(redone)} round(s) done again because other processes used {loads} cores "
            "during them; the rounds below are the ones kept.", ""]


def ratio(num, den):
    if isinstance(num, (int, float)) and isinstance(den, (int, float)) and den > 0:
        return num / den
    return None


def below(value, target):
    """met/missed for a strict "less than" target."""
    if value is None:
        return "—"
    return "**met**" if value < target else \
        f"**missed** by {(value - target) / target * 100:.0f}%"


def met(value, target, higher_is_better=True):
    if value is None or target is None:
        return "—"
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "**met**"
    miss = (target - value) / target if higher_is_better else (value - target) / target
    return f"**missed** by {miss * 100:.0f}%"


def layout_words(lay, workers=None):
    if lay == "default":
        return "`tessera run`'s defaults (no `--workers`/`--threads`: one worker with a " \
            "thread per physical core" + (f"; the stats showed {workers:g} worker(s)" if workers
                                          else "") + ")"
    w, t = lay.split("x")
    return f"`--workers {w} --threads {t}`"


def numbers(rows, key):
    return [r.get(key) for r in rows if isinstance(r.get(key), (int, float))]


def matmul_summary(cfg):
    """Medians of a configuration: seconds per column, and each ratio as the median of the
    per-round ratios (never a ratio of medians from different moments)."""
    rows = cfg["rounds"]
    s = {k: median(numbers(rows, k)) for k in (
        "tessera_s", "tessera_wall", "starpu_s", "dask_dist_s", "dask_thr_s", "limit_s",
        *(f"tessera_{lay}_s" for lay in cfg.get("extras", [])))}
    for key, _, num, den in MATMUL_RATIOS:
        s[key] = median([ratio(r.get(num), r.get(den)) for r in rows])
    for lay in cfg.get("extras", []):
        s[f"limit_{lay}"] = median([ratio(r.get("limit_s"), r.get(f"tessera_{lay}_s"))
                                    for r in rows])
    return s


def md_matmul_config(cfg):
    """The per-round table of one configuration and its medians (GFLOP/s, ratio to limit)."""
    fl, cap = cfg["flops"], cfg["cap"]
    keys = [("tessera_s", "tessera"), ("tessera_wall", "tessera wall"),
            *((f"tessera_{lay}_s", f"tessera {lay}") for lay in cfg.get("extras", [])),
            ("limit_s", "limit"), ("ceiling_s", "kernel ceiling"),
            ("dask_dist_s", "dask dist"), ("dask_thr_s", "dask thr"), ("starpu_s", "starpu")]
    lines = [f"### {cfg['n']}², {cfg['dtype']}, chunk {cfg['chunk']} ({cfg['tasks']} tessera "
             "tasks" + (f", {cfg['dask_tasks']} Dask tasks" if cfg.get("dask_tasks") else "")
             + f", {len(cfg['rounds'])} round{'s' if len(cfg['rounds']) != 1 else ''})", "",
             *redone_note(cfg["redone"]),
             "| round | " + " | ".join(f"{lab} s (GFLOP/s)" for _, lab in keys)
             + " | other load (cores) |", "|---" * (len(keys) + 2) + "|"]
    for i, row in enumerate(cfg["rounds"]):
        cells = []
        for k, _ in keys:
            v = row.get(k)
            cells.append(f"{v:.3f} ({fl / v / 1e9:.1f})" if isinstance(v, (int, float))
                         else v if isinstance(v, str) else "—")
        lines.append(f"| {i + 1} | " + " | ".join(cells) + f" | {row['foreign']:.2f} |")
    timeouts = matmul_timeouts(cfg)
    gflops = {k: median([fl / v / 1e9 for v in numbers(cfg["rounds"], k)]) for k, _ in keys}
    to_limit = {k: median([ratio(r.get("limit_s"), r.get(k)) for r in cfg["rounds"]])
                for k, _ in keys}
    lines += ["", "| | " + " | ".join(lab for _, lab in keys) + " |",
              "|---" * (len(keys) + 1) + "|",
              "| median GFLOP/s | " + " | ".join(
                  fmt(gflops[k], 1) if gflops[k] is not None else (
                      f"did not finish in {cap} s" if timeouts.get(k) else "—")
                  for k, _ in keys) + " |",
              "| median ratio to limit | " + " | ".join(
                  "1" if k == "limit_s" else fmt(to_limit[k]) for k, _ in keys) + " |", ""]
    return lines


def matmul_timeouts(cfg):
    """{column: its "> cap s" / "not retried" text} for the Dask columns that hit the cap."""
    return {k: next((r[k] for r in cfg["rounds"] + cfg["redone"] if isinstance(r.get(k), str)),
                    None) for k in ("dask_dist_s", "dask_thr_s")}


def md_matmul_summary(b, n, group, sums):
    cells = ("tessera_s", "starpu_s", "dask_dist_s", "dask_thr_s", "limit_s")
    lines = [f"### Summary, {n}² (seconds: medians over rounds; ratios: medians of the "
             "per-round ratios)", "",
             "| dtype | chunk | tessera s | starpu s | dask dist s | dask thr s | limit s | "
             + " | ".join(f"{lab} | target" for _, lab, _, _ in MATMUL_RATIOS) + " |",
             "|---" * (7 + 2 * len(MATMUL_RATIOS)) + "|"]
    for cfg, s in zip(group, sums):
        to = matmul_timeouts(cfg)
        tg = s["targets"]
        secs = [fmt(s[k], 3) if s[k] is not None else (
            f"did not finish in {cfg['cap']} s" if to.get(k) else "—") for k in cells]
        rts = [f"{fmt(s[key])} | " + (f"≥ {tg[key]:.2f}: {met(s[key], tg[key])}"
                                       if key in tg else "— (quick)" if b.q else "—")
               for key, _, _, _ in MATMUL_RATIOS]
        lines.append(f"| {cfg['dtype']} | {cfg['chunk']} | " + " | ".join(secs + rts) + " |")
    return lines + [""]


def md_matmul_layouts(b, d, configs, sums):
    main = d.get("layout", "2x1")
    rows = []
    for cfg, s in zip(configs, sums):
        if not cfg.get("extras"):
            continue
        workers = median(numbers(cfg["rounds"], "tessera_workers"))
        for lay in [main] + cfg["extras"]:
            if lay == main:
                sec, rt, name = s["tessera_s"], s["limit"], f"{lay} (main column)"
                if lay == "default" and workers:
                    name = f"default ({workers:g} workers in the stats; main column)"
            else:
                sec, rt, name = s[f"tessera_{lay}_s"], s[f"limit_{lay}"], lay
            rows.append(f"| {cfg['n']}² {cfg['dtype']} | {cfg['chunk']} | {name} | "
                        f"{fmt(sec, 3)} | {fmt(rt)} |")
    if not rows:
        return []
    return ["### Layouts (same rounds; limit / tessera s is the median of per-round ratios)",
            "", "`2x1` = `--workers 2 --threads 1`, `1x2` = `--workers 1 --threads 2`, "
            "`default` = neither option.", "",
            "| size, dtype | chunk | layout | tessera s (median) | limit / tessera s |",
            "|---|---|---|---|---|", *rows, ""]


def md_matmul(b, d):
    main = d.get("layout", "2x1")  # results saved before issue 9 ran 2x1 only
    configs = [{"n": d.get("n"), "cap": d.get("cap"), "flops": d.get("flops"), **c}
               for c in d["configs"]]  # ... and kept n, cap, flops for the whole section
    sizes = sorted({c["n"] for c in configs})
    caps = ", ".join(f"{cap} s at {n}²" for n, cap in sorted({(c["n"], c["cap"])
                                                              for c in configs}))
    workers = median([w for c in configs for w in numbers(c["rounds"], "tessera_workers")])
    lines = [
        "## 1. Blocked matmul, " + " and ".join(f"{n}×{n}" for n in sizes)
        + (" (quick: not the issue's sizes)" if b.q else ""),
        "",
        f"`tessera run --no-progress --stats F` with {layout_words(main, workers)} of "
        "`t = sum(A @ B)` with `random` inputs (printed, so no file is written). **tessera** = "
        "the stats' `seconds` (submit → finished, cluster start-up excluded, as Dask's timing "
        "excludes its cluster); **tessera wall** = the whole command (start-up, shutdown "
        "included). For float64 at chunks 512 and 128 (not at 8192²) the other explicit "
        "layouts run in the same rounds: **tessera 2x1** = `--workers 2 --threads 1`, "
        "**tessera 1x2** = `--workers 1 --threads 2` (stats seconds). "
        "**limit** = one `cblas_dgemm`/`cblas_sgemm` call on the whole matrices, 2 OpenBLAS "
        "threads (after one untimed call). **kernel ceiling** = what two single-threaded "
        "workers could reach if each ran its chunk-sized OpenBLAS gemm at the rate one core "
        "reaches repeating it on in-cache tiles (2 × one core's rate; not a system, an upper "
        "bound for any one-thread-per-worker schedule calling OpenBLAS at this chunk size; "
        "Tessera computes tiles of 96–255 with libxsmm where built with it, and float tiles of "
        "256–2048 with its own kernel over tiles packed once, so it can pass this bound). "
        "**dask dist** = "
        "`LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`, "
        "`(A @ B).sum().compute()` with `da.random` inputs, cluster started and warmed up "
        "before timing, OPENBLAS_NUM_THREADS=1. **dask thr** = Dask's threaded scheduler, 2 "
        "threads. **starpu** = StarPU's blocked gemm (tiles as views, dmda, 2 CPU workers, one "
        f"untimed calibration iteration). A Dask run is capped ({caps} of compute); a Dask "
        "scheduler that did not finish in time is not retried in later rounds of that "
        "configuration. The summaries' ratios are of seconds, per round, then the median: "
        "**tessera / starpu** = starpu s / tessera s, **limit / tessera s** = limit s / "
        "tessera's stats seconds, **limit / tessera wall** = limit s / the whole command's "
        "seconds (above 1: tessera is the faster). Within a round the systems run in the "
        "order of the columns, reversed every other round: here the first run after another "
        "system's exit is ~5% slower, so none may always come first.",
        "",
    ]
    summary, all_sums = [], []
    for n in sizes:
        group = [c for c in configs if c["n"] == n]
        sums = []
        for cfg in group:
            lines += md_matmul_config(cfg)
            s = matmul_summary(cfg)
            s["targets"] = MATMUL_TARGETS.get((n, cfg["dtype"], cfg["chunk"]), {})
            sums.append(s)
            summary.append({"n": n, "dtype": cfg["dtype"], "chunk": cfg["chunk"], **s})
        lines += md_matmul_summary(b, n, group, sums)
        all_sums += sums
    lines += md_matmul_layouts(b, d, configs, all_sums)
    b.data["matmul"]["summary"] = summary
    return lines


# ---- section 2: small tasks -----------------------------------------------------------------

class Cluster:
    """A scheduler and 2 workers started by hand (so the scheduler's pid is known), one core
    each, reaped on close."""

    def __init__(self, tessera, env=None):
        self.procs = []
        e = {**os.environ, **(env or {})}
        s = subprocess.Popen([tessera, "scheduler", "--listen", "127.0.0.1:0"], env=e,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(s)
        line = s.stdout.readline()
        m = re.search(r"listening on (\S+)", line)
        if not m:
            self.close()
            raise RuntimeError(f"scheduler did not start: {line!r}")
        self.addr, self.sched_pid = m.group(1), s.pid
        ncpu = os.cpu_count() or 1
        for k in range(2):
            w = subprocess.Popen([tessera, "worker", "--scheduler", self.addr, "--threads", "1",
                                  "--cpus", str(k % ncpu), "--name", f"bench-{k}"], env=e,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.procs.append(w)
            if "ready on" not in w.stdout.readline():
                self.close()
                raise RuntimeError("worker did not start")
        for p in self.procs:
            Load.live.add(p.pid)

    def close(self):
        for p in reversed(self.procs):
            Load.live.discard(p.pid)
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def sec_small(b):
    n, chunk = 320000, 8
    dask_n = 32000 if b.q else n
    cap = 60 if b.q else 400
    tmp = tempfile.mkdtemp(dir=WORK)
    prog = small_program(os.path.join(tmp, "small.json"), n, chunk)
    warm = small_program(os.path.join(tmp, "warm.json"), 8000, chunk)
    # The current build runs --no-fuse: the section measures tiny tasks, and fused, ones + add +
    # the partial would be one task per chunk (issue 13). Baselines from before fusion had none.
    out = {"n": n, "chunk": chunk, "tasks": b.check_count(prog, "--no-fuse"), "dask_n": dask_n,
           "cap": cap, "base_commit": b.base["commit"] if b.base else None}
    starpu_tasks = 100000
    cl = Cluster(b.tessera)
    # (prefix of the row's keys, executable, its cluster): the current build, and with
    # --baseline the baseline's build in a cluster of its own, alternated round by round.
    builds = [("", b.tessera, cl)]

    knows = {}

    def unfused(exe):
        """`--no-fuse` for every build that has fusion: the current one, and a baseline from after
        issue 13 (asked once: `check --no-fuse` fails on a build without the option). Without it
        a post-fusion baseline would run the fused graph, a third of the tasks, and the ratio
        would compare different graphs."""
        if exe not in knows:
            knows[exe] = exe == b.tessera or run([exe, "check", "--no-fuse", warm],
                                                  timeout=60).ok()
        return ["--no-fuse"] if knows[exe] else []

    try:
        if b.base:
            try:
                builds.append(("base_", b.base["exe"], Cluster(b.base["exe"])))
            except RuntimeError as ex:
                log(f"small: the baseline's cluster did not start: {ex}")
                out["base_error"] = str(ex)
        # The warm-up runs as the rounds do (the current build --no-fuse): its cost classes are
        # the ones the rounds use, so the first round does not start from the priors. (Warmed
        # up fused, the current build met add and sum for the first time in round 1.)
        for _, exe, c in builds:
            run([exe, "submit", "--no-progress", *unfused(exe), "--scheduler", c.addr, warm],
                timeout=120)
        def one(rnd):
            row, fg = {}, []
            st_path = os.path.join(tmp, "small.stats.json")
            for pre, exe, c in (builds if rnd % 2 == 0 else builds[::-1]):
                c0 = proc_cpu_ns(c.sched_pid)
                r = run([exe, "submit", "--no-progress", *unfused(exe), "--scheduler", c.addr,
                         "--stats", st_path, prog], timeout=600)
                c1 = proc_cpu_ns(c.sched_pid)
                fg.append(r.foreign)
                if r.ok():
                    with open(st_path) as f:
                        st = json.load(f)
                    row.update({pre + "tasks": st["tasks"], pre + "seconds": st["seconds"],
                                pre + "wall": r.wall, pre + "sched_cpu": c1 - c0,
                                pre + "inline": st.get("sources_inline", 0),
                                pre + "rate": st["tasks"] / st["seconds"],
                                pre + "us_per_task": (c1 - c0) / st["tasks"] * 1e6})
            row["vs_base"] = ratio(row.get("rate"), row.get("base_rate"))
            for sched in ("eager", "lws"):
                if b.h["starpu_empty"]:
                    r = run([b.h["starpu_empty"], str(starpu_tasks)],
                            env={**b.starpu_env, "STARPU_SCHED": sched}, timeout=120)
                    fg.append(r.foreign)
                    if r.ok():
                        row[f"starpu_{sched}"] = float(r.out.split()[1])
            row["foreign"] = max(fg)
            log(f"small round {rnd + 1}: tessera {fmt(row.get('rate'), 0)} tasks/s, "
                f"{fmt(row.get('us_per_task'))} us/task in the scheduler"
                + (f", baseline {fmt(row.get('base_rate'), 0)}" if len(builds) > 1 else "")
                + f"; starpu eager {fmt(row.get('starpu_eager'), 0)}, lws "
                f"{fmt(row.get('starpu_lws'), 0)}")
            return row

        # A submission takes 0.11-0.15 s, and one build against the other reads 0.85-1.12 per
        # round in the same minutes (bench/notes.md §31): with a baseline, three times the
        # rounds (each ~2 s), so the median of the per-round ratios is the build's and not the
        # minute's.
        out["rounds"], out["redone"] = b.rounds(
            "small", one, 3 * b.nrounds if len(builds) > 1 and not b.q else None)
    finally:
        for _, _, c in builds:
            c.close()
    if b.dask_ok:
        log(f"small: Dask distributed once on n={dask_n} (cap {cap} s)")
        d, r = b.dask("distributed", "small", dask_n, chunk, cap)
        out["dask"] = d
        out["dask_foreign"] = r.foreign
        if dask_n != n:
            dprog = small_program(os.path.join(tmp, "small_dask.json"), dask_n, chunk)
            out["dask_tessera_tasks"] = b.check_count(dprog, "--no-fuse")
            st, r = b.tessera_run(dprog, extra=("--no-fuse",))
            out["dask_tessera_s"] = st["seconds"] if st else None
        else:
            out["dask_tessera_s"] = median([x.get("seconds") for x in out["rounds"]])
            out["dask_tessera_tasks"] = out["tasks"]
    b.data["small"] = out
    shutil.rmtree(tmp, ignore_errors=True)


def md_small(b, d):
    lines = [
        "## 2. Small tasks", "",
        f"`sum(add(ones({d['n']}, chunks={d['chunk']}), 1))`: {d['tasks']} tasks by "
        "`tessera check`, submitted with `tessera submit --stats` to a cluster started by hand "
        "(`tessera scheduler` + 2 × `tessera worker --threads 1 --cpus K`), warmed up by one "
        "smaller submission with the same options (`--no-fuse`, for every build that has it). "
        "**tasks/s** = tasks / stats `seconds` (submit → finished). "
        "**sched µs/task** = CPU time of the scheduler process (all threads, "
        "/proc/PID/task/*/schedstat) during the submission / tasks. The `ones` chunks are "
        "cheap sources that the scheduler hands to their consumers to make inline "
        "(`sources_inline`), so the workers ran `tasks - inline` tasks. **StarPU** = 100,000 "
        "independent empty tasks with no data, 2 CPU workers, in one process (the in-process "
        "best the issue names), schedulers eager and lws."
        + (f" **baseline** = the same submissions to a second cluster of the same shape "
           f"started from a release build of commit {d['base_commit']} (`--baseline`), "
           "alternated with the current build round by round (the first of the two swaps "
           "every round), in three times the section's rounds (a submission takes ~0.13 s, "
           "and single rounds scatter by ±15%); **current / baseline** = the ratio of their "
           "tasks/s in the round."
           if d.get("base_commit") else ""), "",
        *([f"The baseline's cluster did not start: `{d['base_error']}`.", ""]
          if d.get("base_error") else []),
        *redone_note(d.get("redone", [])),
        "| round | tasks | inline | seconds | tasks/s | sched CPU s | sched µs/task | "
        "submit wall s | StarPU eager tasks/s | StarPU lws tasks/s | other load |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(d["rounds"]):
        lines.append(f"| {i + 1} | {r.get('tasks', '—')} | {r.get('inline', '—')} | "
                     f"{fmt(r.get('seconds'), 3)} | {fmt(r.get('rate'), 0)} | "
                     f"{fmt(r.get('sched_cpu'), 3)} | {fmt(r.get('us_per_task'))} | "
                     f"{fmt(r.get('wall'), 3)} | {fmt(r.get('starpu_eager'), 0)} | "
                     f"{fmt(r.get('starpu_lws'), 0)} | {r['foreign']:.2f} |")
    based = any(r.get("base_rate") for r in d["rounds"])
    if based:
        lines += ["", "| round | current tasks/s | baseline tasks/s | baseline tasks | "
                  "baseline sched µs/task | current / baseline |", "|---|---|---|---|---|---|"]
        lines += [f"| {i + 1} | {fmt(r.get('rate'), 0)} | {fmt(r.get('base_rate'), 0)} | "
                  f"{r.get('base_tasks', '—')} | {fmt(r.get('base_us_per_task'))} | "
                  f"{fmt(r.get('vs_base'))} |" for i, r in enumerate(d["rounds"])]
    rate = median([r.get("rate") for r in d["rounds"]])
    us = median([r.get("us_per_task") for r in d["rounds"]])
    best_sp = median([max([r.get(k) for k in ("starpu_eager", "starpu_lws") if r.get(k)] or [0])
                      or None for r in d["rounds"]])
    rel = median([ratio(r.get("rate"), max([r.get(k) for k in ("starpu_eager", "starpu_lws")
                                            if r.get(k)] or [0])) for r in d["rounds"]])
    lines += ["", "| figure | median | target | |", "|---|---|---|---|",
              f"| tessera tasks/s (end to end) | {fmt(rate, 0)} | ≥ 200,000 | "
              f"{met(rate, 200000)} |",
              f"| scheduler µs per task | {fmt(us)} | — | |",
              f"| StarPU empty tasks/s (better of eager, lws) | {fmt(best_sp, 0)} | — | |",
              f"| tessera / StarPU tasks/s, per round | {fmt(rel)} | aim: 1 | |"]
    vs_base = median([r.get("vs_base") for r in d["rounds"]]) if based else None
    if based:
        lines += [f"| baseline ({d['base_commit'][:12]}) tasks/s | "
                  f"{fmt(median([r.get('base_rate') for r in d['rounds']]), 0)} | — | |",
                  f"| current / baseline tasks/s, per round | {fmt(vs_base)} | ≥ 0.90 | "
                  f"{met(vs_base, 0.9)} |"]
    dk = d.get("dask")
    if dk is None and "dask" in d:
        lines.append("| Dask distributed | failed (see bench/.work/log.txt) | | |")
    elif dk and dk.get("timeout"):
        lines.append(f"| Dask distributed on n={d['dask_n']} | did not finish in {d['cap']} s "
                     "| | |")
    elif dk:
        drate = dk["tasks"] / dk["seconds"]
        lines += [f"| Dask distributed tasks/s (its own {dk['tasks']} tasks, n={d['dask_n']}) "
                  f"| {fmt(drate, 0)} | | |",
                  f"| Dask distributed seconds for n={d['dask_n']} / tessera's "
                  f"({d['dask_tessera_tasks']} tasks) | "
                  f"{fmt(ratio(dk['seconds'], d['dask_tessera_s']), 1)} | — | |"]
        if d["dask_n"] != d["n"]:
            lines.append("")
            lines.append(f"Quick mode: Dask ran once on the smaller graph n={d['dask_n']} (about "
                         "400 tasks/s here, so the full graph takes minutes); tessera's time "
                         "on that same smaller graph is the comparison.")
    lines.append("")
    b.data["small"]["summary"] = {"rate": rate, "us_per_task": us, "starpu": best_sp,
                                  "vs_starpu": rel, "vs_base": vs_base,
                                  "base_commit": d.get("base_commit")}
    return lines


# ---- section 8: fusion (issue 13) -------------------------------------------------------------

def fusion_program(path, n, chunk):
    """sum(sqrt(abs((((X + 1) * 2 - Y) / 3) ** 2 + maximum(X, Y)))): ten cheap ops on two
    n x n float64 `random` inputs, reduced to one printed sum (dask_peer.py --what fusion is the
    same expression)."""
    arrays = {
        "X": {"op": "random", "shape": [n, n], "chunks": chunk, "seed": 1},
        "Y": {"op": "random", "shape": [n, n], "chunks": chunk, "seed": 2},
        "a": {"op": "add", "args": ["X", 1]}, "b": {"op": "mul", "args": ["a", 2]},
        "c": {"op": "sub", "args": ["b", "Y"]}, "d": {"op": "div", "args": ["c", 3]},
        "e": {"op": "pow", "args": ["d", 2]}, "m": {"op": "maximum", "args": ["X", "Y"]},
        "f": {"op": "add", "args": ["e", "m"]}, "g": {"op": "abs", "args": ["f"]},
        "h": {"op": "sqrt", "args": ["g"]}, "s": {"op": "sum", "args": ["h"], "axis": None},
    }
    return write_program(path, arrays, {"s": "-"})


def sec_fusion(b):
    n, chunk = (4096 if b.q else 8192), 1024
    cap = 120 if b.q else 400
    tmp = tempfile.mkdtemp(dir=WORK)
    prog = fusion_program(os.path.join(tmp, "fusion.json"), n, chunk)
    out = {"n": n, "chunk": chunk, "cap": cap,
           "tasks": b.check_count(prog),
           "unfused_tasks": int(re.search(r"^(\d+) tasks$", run(
               [b.tessera, "check", "--no-fuse", prog], timeout=600).out, re.M).group(1))}
    # (key, how): Tessera fused and --no-fuse, then Dask threaded and distributed; the order
    # turns round by round so no variant always runs first.
    variants = [("fused", ()), ("unfused", ("--no-fuse",))]
    if b.dask_ok:
        variants += [("threaded", None), ("distributed", None)]

    def one(rnd):
        row, fg = {}, []
        order = variants if rnd % 2 == 0 else variants[::-1]
        for key, extra in order:
            if extra is not None:
                st, r = b.tessera_run(prog, extra=extra)
                fg.append(r.foreign)
                if st:
                    m = re.search(r"^s: (\S+)$", r.out, re.M)
                    row.update({key + "_s": st["seconds"], key + "_wall": r.wall,
                                key + "_tasks": st["tasks"],
                                key + "_value": float(m.group(1)) if m else None})
            else:
                dk, r = b.dask(key, "fusion", n, chunk, cap)
                fg.append(r.foreign)
                if dk and dk.get("timeout"):
                    row[key + "_timeout"] = cap
                elif dk:
                    row.update({key + "_s": dk["seconds"], key + "_tasks": dk["tasks"],
                                key + "_value": dk.get("value")})
        row["speedup"] = ratio(row.get("unfused_s"), row.get("fused_s"))
        row["foreign"] = max(fg) if fg else 0.0
        log(f"fusion round {rnd + 1}: fused {fmt(row.get('fused_s'))} s, unfused "
            f"{fmt(row.get('unfused_s'))} s (x{fmt(row.get('speedup'))}), dask threaded "
            f"{fmt(row.get('threaded_s'))} s, distributed {fmt(row.get('distributed_s'))} s")
        return row

    out["rounds"], out["redone"] = b.rounds("fusion", one)
    b.data["fusion"] = out
    shutil.rmtree(tmp, ignore_errors=True)


def md_fusion(b, d):
    lines = [
        "## 8. Fusion (issue 13)", "",
        f"`sum(sqrt(abs((((X + 1) * 2 - Y) / 3) ** 2 + maximum(X, Y))))` on {d['n']}² float64 "
        f"`random` X, Y at chunk {d['chunk']}: ten cheap operations reduced to one printed sum. "
        "**fused** = `tessera run --workers 2 --threads 1` (the chain and the sum's partials run "
        "as one task per chunk), **unfused** = the same with `--no-fuse`; seconds are stats "
        "`seconds` (submit → finished). **Dask** = the same expression on "
        "`da.random.RandomState(1).random_sample` inputs (its own values), threaded (2 threads) "
        "and distributed (2 worker processes × 1 thread), `compute()` timed after a warm-up; "
        "its task count is after `dask.optimize` (which fuses blockwise operations too). "
        f"Tasks by `tessera check`: fused {d['tasks']}, `--no-fuse` {d['unfused_tasks']}.", "",
        *redone_note(d.get("redone", [])),
        "| round | fused s | unfused s | unfused / fused | Dask threaded s | "
        "Dask distributed s | fused tasks | unfused tasks | Dask tasks | other load |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(d["rounds"]):
        def dk(k):
            return f"> {r[k + '_timeout']}" if r.get(k + "_timeout") else fmt(r.get(k + "_s"))
        lines.append(f"| {i + 1} | {fmt(r.get('fused_s'))} | {fmt(r.get('unfused_s'))} | "
                     f"{fmt(r.get('speedup'))} | {dk('threaded')} | {dk('distributed')} | "
                     f"{r.get('fused_tasks', '—')} | {r.get('unfused_tasks', '—')} | "
                     f"{r.get('distributed_tasks', r.get('threaded_tasks', '—'))} | "
                     f"{r['foreign']:.2f} |")
    same = all(r.get("fused_value") == r.get("unfused_value") for r in d["rounds"]
               if r.get("fused_value") is not None)
    tasks_ratio = ratio(d["unfused_tasks"], d["tasks"])
    speedup = median([r.get("speedup") for r in d["rounds"]])
    lines += ["", "| figure | median | target | |", "|---|---|---|---|",
              f"| unfused / fused tasks | {fmt(tasks_ratio)} | ≥ 3 | {met(tasks_ratio, 3.0)} |",
              f"| unfused / fused seconds, per round | {fmt(speedup)} | ≥ 2 | "
              f"{met(speedup, 2.0)} |",
              f"| Dask threaded / fused seconds, per round | "
              f"{fmt(median([ratio(r.get('threaded_s'), r.get('fused_s')) for r in d['rounds']]))}"
              " | — | |",
              f"| Dask distributed / fused seconds, per round | "
              f"{fmt(median([ratio(r.get('distributed_s'), r.get('fused_s')) for r in d['rounds']]))}"
              " | — | |",
              f"| fused sum == unfused sum, every round | {'yes' if same else 'NO'} | yes | |", ""]
    b.data["fusion"]["summary"] = {"tasks_ratio": tasks_ratio, "speedup": speedup}
    return lines


# ---- section 3: transfers -------------------------------------------------------------------

def sec_transfers(b):
    rows, cols = 8192, 1024  # one 64 MiB float64 chunk
    steps = 12 if b.q else 24
    tmp = tempfile.mkdtemp(dir=WORK)
    prog = chain_program(os.path.join(tmp, "chain.json"), rows, cols, steps)
    out = {"chunk_mib": rows * cols * 8 >> 20, "steps": steps}
    def one(rnd):
        row = {}
        # --no-fuse: fused, the chain would be one task and nothing would move (issue 13).
        st, r = b.tessera_run(prog, env={"TESSERA_PLACEMENT": "roundrobin"}, extra=("--no-fuse",))
        fg = [r.foreign]
        if st:
            ws = st.get("workers", [])
            row["moved"] = st.get("moved_bytes")
            row["per_worker"] = [ratio(w.get("in_bytes"), w.get("in_s")) for w in ws]
            ib = sum(w.get("in_bytes", 0) for w in ws)
            ins = sum(w.get("in_s", 0) for w in ws)
            row["in_bytes"], row["in_s"] = ib, ins
            row["gbps"] = ib / ins / 1e9 if ins else None
        r = run([b.h["tcp_stream"], "2048", "8"], timeout=120)
        fg.append(r.foreign)
        if r.ok():
            row["tcp"] = float(r.out.split()[1])
        row["ratio"] = ratio(row.get("gbps"), row.get("tcp"))
        row["foreign"] = max(fg)
        log(f"transfers round {rnd + 1}: tessera {fmt(row.get('gbps'))} GB/s, "
            f"tcp {fmt(row.get('tcp'))} GB/s")
        return row

    out["rounds"], out["redone"] = b.rounds("transfers", one)
    b.data["transfers"] = out
    shutil.rmtree(tmp, ignore_errors=True)


def md_transfers(b, d):
    lines = [
        "## 3. Transfers", "",
        f"One {d['chunk_mib']} MiB float64 chunk through a chain of {d['steps']} elementwise "
        "tasks, `tessera run` with `TESSERA_PLACEMENT=roundrobin` in its environment (inherited "
        "by the scheduler it spawns), so consecutive tasks alternate workers and every step "
        "moves the chunk to the other worker while nothing else runs. **tessera GB/s** = "
        "Σ workers' `in_bytes` / Σ `in_s` (bytes fetched from the other worker / seconds during "
        "which a fetch was in progress). **TCP** = the bench's own raw loopback stream "
        "(bench/src/tcp_stream.c: 2 GiB in 8 MiB writes, one direction), in the same round. "
        "GB = 10⁹ bytes.", "",
        *redone_note(d.get("redone", [])),
        "| round | moved GB | per worker GB/s | tessera GB/s | TCP GB/s | ratio | other load |",
        "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(d["rounds"]):
        pw = ", ".join(fmt(x / 1e9 if x else None) for x in r.get("per_worker", [])) or "—"
        lines.append(f"| {i + 1} | {fmt((r.get('moved') or 0) / 1e9)} | {pw} | "
                     f"{fmt(r.get('gbps'))} | {fmt(r.get('tcp'))} | {fmt(r.get('ratio'))} | "
                     f"{r['foreign']:.2f} |")
    rt = median([r.get("ratio") for r in d["rounds"]])
    lines += ["", "| figure | median | target | |", "|---|---|---|---|",
              f"| tessera GB/s | {fmt(median([r.get('gbps') for r in d['rounds']]))} | | |",
              f"| raw loopback TCP GB/s | {fmt(median([r.get('tcp') for r in d['rounds']]))} "
              "| | |",
              f"| tessera / TCP, per round | {fmt(rt)} | ≥ 0.8 | {met(rt, 0.8)} |", ""]
    b.data["transfers"]["summary"] = {"ratio": rt}
    return lines


# ---- section 4: memory ----------------------------------------------------------------------

def sec_memory(b):
    n, chunk = 2666672, 8
    tmp = tempfile.mkdtemp(dir=WORK)
    prog = small_program(os.path.join(tmp, "million.json"), n, chunk)
    mn = 2048 if b.q else 4096
    mm = matmul_program(os.path.join(tmp, "mm.json"), mn, 512, "float64")
    # --no-fuse: the million tasks are the point (fused, ones + add + partial are one task).
    out = {"n": n, "tasks": b.check_count(prog, "--no-fuse"), "mm_n": mn}
    def one(rnd):
        row = {}
        st, r = b.tessera_run(prog, extra=("--no-fuse",))
        fg = [r.foreign]
        if st:
            sc = st.get("scheduler", {})
            if "rss_peak" in sc and "rss_base" in sc:
                row["sched_peak"], row["sched_base"] = sc["rss_peak"], sc["rss_base"]
                row["bpt"] = (sc["rss_peak"] - sc["rss_base"]) / st["tasks"]
            row["seconds"] = st["seconds"]
            row["workers"] = worker_mem(st)
        # The same graph on `tessera run`'s default layout (one worker, a thread per core: a
        # pool and warm reserve per thread).
        st, r = b.tessera_run(prog, layout="default", extra=("--no-fuse",))
        fg.append(r.foreign)
        if st:
            row["dflt_workers"] = worker_mem(st)
        st, r = b.tessera_run(mm)
        fg.append(r.foreign)
        if st:
            row["mm_workers"] = worker_mem(st)
        row["foreign"] = max(fg)
        log(f"memory round {rnd + 1}: scheduler {fmt(row.get('bpt'), 1)} B/task")
        return row

    out["rounds"], out["redone"] = b.rounds("memory", one, 1 if b.q else min(b.nrounds, 3))
    b.data["memory"] = out
    shutil.rmtree(tmp, ignore_errors=True)


# A worker's buffer pool may keep this many freed chunk bytes per executor thread
# (tsr_worker_options.pool_bytes's default); issue 9's bound counts it.
POOL_CAP = 64 * 2 ** 20


def worker_mem(st):
    """(name, rss_peak, chunk_peak, threads) of each worker in a stats file."""
    return [(w.get("name"), w.get("rss_peak"), w.get("chunk_peak"), w.get("threads", 1))
            for w in st.get("workers", [])]


def worker_bound(chunk_peak, threads=1):
    return 1.15 * chunk_peak + POOL_CAP * threads + 32 * 2 ** 20


def md_memory(b, d):
    mib = 2 ** 20
    lines = [
        "## 4. Memory", "",
        f"A graph of {d['tasks']:,} tasks (`sum(add(ones({d['n']}, chunks=8), 1))`), run to "
        "completion with `tessera run --stats`. **scheduler B/task** = (`scheduler.rss_peak` − "
        "`scheduler.rss_base`) / tasks: the scheduler's peak resident memory (VmHWM at finish) "
        "above its resident memory when the graph arrived. Each worker's `rss_peak` is shown "
        "next to `chunk_peak` (the most chunk bytes it held at once) and issue 9's bound "
        "1.15 × chunk_peak + pool cap (the default: 64 MiB per executor thread) + 32 MiB, for "
        "this graph (tiny chunks) on two 1-thread workers and on the default layout (one worker, "
        "a thread per core), and for the "
        f"{d['mm_n']}² float64 matmul at chunk 512 (large chunks) on two 1-thread workers.", "",
        *redone_note(d.get("redone", [])),
        "| round | seconds | sched rss_base MiB | sched rss_peak MiB | sched B/task | "
        "workers, 1M graph: rss_peak / chunk_peak / bound MiB | default layout, 1M graph | "
        "workers, matmul: rss_peak / chunk_peak / bound MiB | other load |",
        "|---|---|---|---|---|---|---|---|---|"]
    worst = None
    for i, r in enumerate(d["rounds"]):
        def ws(key):
            nonlocal worst
            cells = []
            for name, rp, cp, *th in r.get(key, []):
                if rp is None or cp is None:
                    cells.append(f"{name}: —")
                    continue
                bound = worker_bound(cp, th[0] if th else 1)
                q = rp / bound
                worst = q if worst is None else max(worst, q)
                cells.append(f"{name}{f' ({th[0]} threads)' if th and th[0] != 1 else ''}: "
                             f"{rp / mib:.0f} / {cp / mib:.1f} / {bound / mib:.0f}")
            return "; ".join(cells) or "—"
        lines.append(f"| {i + 1} | {fmt(r.get('seconds'))} | "
                     f"{fmt((r.get('sched_base') or 0) / mib, 1)} | "
                     f"{fmt((r.get('sched_peak') or 0) / mib, 1)} | {fmt(r.get('bpt'), 1)} | "
                     f"{ws('workers')} | {ws('dflt_workers')} | {ws('mm_workers')} | "
                     f"{r['foreign']:.2f} |")
    bpt = median([r.get("bpt") for r in d["rounds"]])
    lines += ["", "| figure | median / worst | target | |", "|---|---|---|---|",
              f"| scheduler bytes per task at {d['tasks']:,} tasks | {fmt(bpt, 1)} | ≤ 256 | "
              f"{met(bpt, 256, False)} |",
              f"| worst worker rss_peak / (1.15 × chunk_peak + 64 MiB pool a thread + 32 MiB) | "
              f"{fmt(worst)} | ≤ 1 | "
              f"{met(worst, 1.0, False)} |", ""]
    b.data["memory"]["summary"] = {"bytes_per_task": bpt, "worst_worker": worst}
    return lines


# ---- section 7: spilling (issue 11) ------------------------------------------------------------

def spill_program(path, rows):
    """Y = X - mean(X, axis=0) with X not a source, and sum(Y * Y, axis=0) out: X must be held
    (or spilled) until its means are known. 1 MiB chunks."""
    return write_program(path, {
        "R": {"op": "random", "shape": [rows, 2048], "chunks": [64, 2048], "seed": 3},
        "X": {"op": "mul", "args": ["R", 2.0]},
        "m": {"op": "mean", "args": ["X"], "axis": 0},
        "Y": {"op": "sub", "args": ["X", "m"]},
        "Q": {"op": "mul", "args": ["Y", "Y"]},
        "S": {"op": "sum", "args": ["Q"], "axis": 0}}, {"S": "s.npy"})


def raw_disk(d, mib):
    """The disk's own sequential bandwidth in d, in MiB/s each way: mib MiB written in 1 MiB
    blocks and flushed to the device (fsync inside the timing), then dropped from the page cache
    (POSIX_FADV_DONTNEED) and read back from the device. Spilling writes through the page cache
    and often reads from it, so it may beat these."""
    path = os.path.join(d, "raw.bin")
    block = os.urandom(1 << 20)
    t0 = time.time()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for _ in range(mib):
        os.write(fd, block)
    os.fsync(fd)
    os.close(fd)
    w = mib / (time.time() - t0)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    t0 = time.time()
    while os.read(fd, 1 << 20):
        pass
    r = mib / (time.time() - t0)
    os.close(fd)
    os.unlink(path)
    return w, r


def sec_spill(b):
    rows = 16384 if b.q else 65536  # X: 256 MiB quick, 1 GiB full
    xbytes = rows * 2048 * 8
    tmp = tempfile.mkdtemp(dir=WORK)
    prog = spill_program(os.path.join(tmp, "spill.json"), rows)
    spilldir = tempfile.mkdtemp(prefix="spill-", dir=os.environ.get("TMPDIR", "/tmp"))
    # Working set X against the two workers' limits together: 1x (none), 2x, 4x.
    cases = [("unlimited", ["--memory-limit", "none"])] + [
        (f"{k}x", ["--memory-limit", str(xbytes // (2 * k)), "--spill-dir", spilldir])
        for k in (2, 4)]
    out = {"rows": rows, "x_mib": xbytes >> 20}

    def one(rnd):
        row = {"foreign": 0.0}
        row["raw_write"], row["raw_read"] = raw_disk(spilldir, 512 if not b.q else 256)
        for name, extra in cases:
            st, r = b.tessera_run(prog, extra=extra)
            row["foreign"] = max(row["foreign"], r.foreign)
            if not st:
                continue
            ws = st.get("workers", [])
            row[name] = {"seconds": st["seconds"],
                         "spilled": sum(w.get("spilled_bytes", 0) for w in ws),
                         "unspilled": sum(w.get("unspilled_bytes", 0) for w in ws),
                         "spill_s": sum(w.get("spill_s", 0) for w in ws),
                         "unspill_s": sum(w.get("unspill_s", 0) for w in ws),
                         "rss": max((w.get("rss_peak", 0) for w in ws), default=0)}
        log(f"spill round {rnd + 1}: " + ", ".join(
            f"{n} {fmt(row.get(n, {}).get('seconds'))} s" for n, _ in cases))
        return row

    out["rounds"], out["redone"] = b.rounds("spill", one, 1 if b.q else min(b.nrounds, 3))
    b.data["spill"] = out
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(spilldir, ignore_errors=True)


def md_spill(b, d):
    mib = 2 ** 20
    lines = ["## 7. Spilling to disk", "",
             f"`S = sum((X - mean(X, axis=0))**2, axis=0)` with X = 2 × random, "
             f"{d['x_mib']} MiB in 1 MiB chunks, on 2 workers of 1 thread: X must be held "
             "(or spilled) until its column means are known. Run with no memory limit, and "
             "with each worker's `--memory-limit` at X / 4 (X is 2× the limits together) and "
             "X / 8 (4×). **raw** = the disk's sequential write (flushed: fsync) and read (from "
             "the device: the page cache dropped) of the spill directory's file system in 1 MiB "
             "blocks, measured by the bench in the same round; spilling goes through the page "
             "cache, so it may beat them. **write/read** = the workers' "
             "bytes spilled (read back) over the seconds their I/O threads spent writing "
             "(reading).", "",
             *redone_note(d.get("redone", [])),
             "| round | raw write MiB/s | raw read MiB/s | unlimited s | 2× s | 4× s | 2× / "
             "unlimited | 4× / unlimited | spilled MiB (4×) | write MiB/s (4×) | read MiB/s "
             "(4×) | worst rss_peak MiB (4×) | other load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    wr, rr, m2, m4 = [], [], [], []
    for i, r in enumerate(d["rounds"]):
        u, x2, x4 = r.get("unlimited", {}), r.get("2x", {}), r.get("4x", {})
        q2 = ratio(x2.get("seconds"), u.get("seconds"))
        q4 = ratio(x4.get("seconds"), u.get("seconds"))
        wt = x4["spilled"] / mib / x4["spill_s"] if x4.get("spill_s") else None
        rt = x4["unspilled"] / mib / x4["unspill_s"] if x4.get("unspill_s") else None
        if wt:
            wr.append(wt / r["raw_write"])
        if rt:
            rr.append(rt / r["raw_read"])
        m2.append(q2)
        m4.append(q4)
        lines.append(f"| {i + 1} | {r['raw_write']:.0f} | {r['raw_read']:.0f} | "
                     f"{fmt(u.get('seconds'))} | {fmt(x2.get('seconds'))} | "
                     f"{fmt(x4.get('seconds'))} | {fmt(q2)} | {fmt(q4)} | "
                     f"{(x4.get('spilled') or 0) / mib:.0f} | {fmt(wt, 0)} | {fmt(rt, 0)} | "
                     f"{(x4.get('rss') or 0) / mib:.0f} | {r['foreign']:.2f} |")
    s = {"write": median(wr), "read": median(rr), "x2": median(m2), "x4": median(m4)}
    b.data["spill"]["summary"] = s
    lines += ["", "| figure | median | target | |", "|---|---|---|---|",
              f"| spill write throughput / raw sequential write | {fmt(s['write'])} | ≥ 0.70 | "
              f"{met(s['write'], 0.7)} |",
              f"| read-back throughput / raw sequential read | {fmt(s['read'])} | ≥ 0.70 | "
              f"{met(s['read'], 0.7)} |",
              f"| makespan at 2× memory / unlimited | {fmt(s['x2'])} | (reported) | |",
              f"| makespan at 4× memory / unlimited | {fmt(s['x4'])} | (reported) | |", ""]
    return lines


# ---- section 5: imbalance -------------------------------------------------------------------

def sec_imbalance(b):
    if (os.cpu_count() or 1) < 2:
        b.data["imbalance"] = {"skipped": "needs 2 cores"}
        return
    n, chunk = (3072, 384) if b.q else (4096, 512)
    tmp = tempfile.mkdtemp(dir=WORK)
    prog = matmul_program(os.path.join(tmp, "mm.json"), n, chunk, "float64", reduce=False)
    out = {"n": n, "chunk": chunk, "tasks": b.check_count(prog)}
    spin = subprocess.Popen([b.h["spin"], "1"])
    Load.live.add(spin.pid)
    try:
        time.sleep(0.2)
        def one(rnd):
            row, fg = {}, []
            for mode in ("default", "roundrobin"):
                env = {"TESSERA_PLACEMENT": mode} if mode == "roundrobin" else None
                st, r = b.tessera_run(prog, env=env)
                fg.append(r.foreign)
                if not st or not st.get("workers"):
                    continue
                ws = st["workers"]
                speeds = [w["tasks"] / w["busy_s"] for w in ws
                          if w.get("busy_s") and w.get("tasks")]
                work = sum(w.get("tasks", 0) for w in ws)
                row[mode] = {"seconds": st["seconds"],
                             "ideal": work / sum(speeds) if speeds else None,
                             "split": [(w.get("name"), w.get("tasks"), w.get("busy_s"))
                                       for w in ws]}
            row["foreign"] = max(fg)  # the spinner is ours: not counted
            log(f"imbalance round {rnd + 1}: default {fmt(row.get('default', {}).get('seconds'))}"
                f" s, round-robin {fmt(row.get('roundrobin', {}).get('seconds'))} s")
            return row

        out["rounds"], out["redone"] = b.rounds("imbalance", one)
    finally:
        Load.live.discard(spin.pid)
        spin.kill()
        spin.wait()
    b.data["imbalance"] = out
    shutil.rmtree(tmp, ignore_errors=True)


def md_imbalance(b, d):
    if d.get("skipped"):
        return ["## 5. Imbalance", "", f"Skipped: {d['skipped']}.", ""]
    lines = [
        "## 5. Imbalance", "",
        f"C = A @ B, {d['n']}² float64 at chunk {d['chunk']} ({d['tasks']} tasks, all but "
        "the inline sources equal-cost gemms; C goes to a .npy file, so no reduction), "
        "`tessera run` with 2 workers (worker K pinned to core K) while `bench/src/spin.c` "
        "spins on core 1, so worker 1 gets about half a core. **makespan** = stats `seconds`. "
        "**ideal** = work / Σ speeds from the same run's stats, with work = Σ workers' tasks "
        "and each worker's speed = its tasks / its `busy_s`. Default placement and "
        "`TESSERA_PLACEMENT=roundrobin` alternate within each round. \"Clearly better than "
        "round-robin\" is taken to mean a makespan at most 0.9 × round-robin's.", "",
        *redone_note(d.get("redone", [])),
        "| round | default s | ideal s | default / ideal | split (tasks, busy s) | round-robin s "
        "| ideal s | rr / ideal | default / rr | other load |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(d["rounds"]):
        de, rr = r.get("default", {}), r.get("roundrobin", {})
        split = "; ".join(f"{nm}: {t}, {fmt(bs)}" for nm, t, bs in de.get("split", []))
        lines.append(
            f"| {i + 1} | {fmt(de.get('seconds'), 3)} | {fmt(de.get('ideal'), 3)} | "
            f"{fmt(ratio(de.get('seconds'), de.get('ideal')))} | {split or '—'} | "
            f"{fmt(rr.get('seconds'), 3)} | {fmt(rr.get('ideal'), 3)} | "
            f"{fmt(ratio(rr.get('seconds'), rr.get('ideal')))} | "
            f"{fmt(ratio(de.get('seconds'), rr.get('seconds')))} | {r['foreign']:.2f} |")
    vs_ideal = median([ratio(r.get("default", {}).get("seconds"),
                             r.get("default", {}).get("ideal")) for r in d["rounds"]])
    vs_rr = median([ratio(r.get("default", {}).get("seconds"),
                          r.get("roundrobin", {}).get("seconds")) for r in d["rounds"]])
    lines += ["", "| figure | median | target | |", "|---|---|---|---|",
              f"| default makespan / ideal | {fmt(vs_ideal)} | ≤ 1.15 | "
              f"{met(vs_ideal, 1.15, False)} |",
              f"| default makespan / round-robin makespan | {fmt(vs_rr)} | ≤ 0.9 | "
              f"{met(vs_rr, 0.9, False)} |", ""]
    b.data["imbalance"]["summary"] = {"vs_ideal": vs_ideal, "vs_rr": vs_rr}
    return lines


# ---- section 6: traffic ---------------------------------------------------------------------

def sec_traffic(b):
    n, chunk = (2048 if b.q else 4096), 512
    mm = b.data.get("matmul")
    cfg = next((c for c in (mm or {}).get("configs", []) if c.get("n", n) == n
                and c["dtype"] == "float64" and c["chunk"] == chunk), None)
    out = {"n": n, "chunk": chunk, "rounds": []}
    if cfg and any("dask_in_bytes" in r for r in cfg["rounds"]):
        out["from_matmul"] = True
        for r in cfg["rounds"]:
            out["rounds"].append({k: r.get(k) for k in ("moved_bytes", "in_bytes",
                                                         "dask_in_bytes")}
                                 | {"foreign": r["foreign"]})
        b.data["traffic"] = out
        return
    tmp = tempfile.mkdtemp(dir=WORK)
    prog = matmul_program(os.path.join(tmp, "mm.json"), n, chunk, "float64")
    def one(rnd):
        row = {}
        st, r = b.tessera_run(prog)
        fg = [r.foreign]
        if st:
            row["moved_bytes"] = st.get("moved_bytes")
            row["in_bytes"] = sum(w.get("in_bytes", 0) for w in st.get("workers", []))
        if b.dask_ok:
            dk, r = b.dask("distributed", "matmul", n, chunk, 120)
            fg.append(r.foreign)
            if dk and "in_bytes" in dk:
                row["dask_in_bytes"] = dk["in_bytes"]
        row["foreign"] = max(fg)
        log(f"traffic round {rnd + 1}: tessera {fmt((row.get('in_bytes') or 0) / 1e6, 0)} MB, "
            f"dask {fmt((row.get('dask_in_bytes') or 0) / 1e6, 0)} MB")
        return row

    out["rounds"], out["redone"] = b.rounds("traffic", one)
    b.data["traffic"] = out
    shutil.rmtree(tmp, ignore_errors=True)


def md_traffic(b, d):
    lines = [
        "## 6. Traffic", "",
        f"Bytes moved between the 2 workers for `sum(A @ B)`, {d['n']}² float64 at chunk "
        f"{d['chunk']}, `random` inputs in both systems. **tessera moved** = stats "
        "`moved_bytes` (what the scheduler told workers to fetch from each other); **tessera "
        "in** = Σ workers' `in_bytes` (what they fetched). **Dask** = Σ over the 2 workers of "
        "`transfer_incoming_log` totals during the timed `compute()` (distributed 2022.12.1; "
        "the log is cleared after warm-up). MB = 10⁶ bytes."
        + (" Taken from section 1's runs (tessera's `--workers 2 --threads 1` run of each "
           "round)." if d.get("from_matmul") else ""), "",
        *redone_note(d.get("redone", [])),
        "| round | tessera moved MB | tessera in MB | Dask MB | tessera in / Dask |",
        "|---|---|---|---|---|"]
    for i, r in enumerate(d["rounds"]):
        lines.append(f"| {i + 1} | {fmt((r.get('moved_bytes') or 0) / 1e6, 1)} | "
                     f"{fmt((r.get('in_bytes') or 0) / 1e6, 1)} | "
                     f"{fmt(r['dask_in_bytes'] / 1e6, 1) if r.get('dask_in_bytes') else '—'} | "
                     f"{fmt(ratio(r.get('in_bytes'), r.get('dask_in_bytes')), 3)} |")
    rt = median([ratio(r.get("in_bytes"), r.get("dask_in_bytes")) for r in d["rounds"]])
    lines += ["", "| figure | median | target | |", "|---|---|---|---|",
              f"| tessera bytes / Dask bytes | {fmt(rt, 3)} | < 1 | {below(rt, 1.0)} |", ""]
    b.data["traffic"]["summary"] = {"ratio": rt}
    return lines


# ---- the report -----------------------------------------------------------------------------

def machine(b, tessera_desc, commit):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lscpu = sh("lscpu")
    fam = re.search(r"CPU family:\s*(\d+)", lscpu)
    mdl = re.search(r"Model:\s*(\d+)", lscpu)
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    py = sh(f"{PY} -c 'import dask, distributed, numpy; print(dask.__version__, "
            "distributed.__version__, numpy.__version__)'").split()
    return {
        "cpu": cpu + (f" (family {fam.group(1)} model {mdl.group(1)})" if fam and mdl else ""),
        "cores": os.cpu_count(), "ram": mem, "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit, "tessera_build": tessera_desc,
        "baseline": b.base["commit"] if b.base else None,
        "openblas": sh("dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null") or
        sh("pkg-config --modversion openblas"),
        "libxsmm": sh("pkg-config --modversion libxsmm") or "not built in",
        "dask": py[0] if len(py) == 3 else "not available",
        "distributed": py[1] if len(py) == 3 else "not available",
        "numpy": py[2] if len(py) == 3 else "not available",
        "starpu": (sh("pkg-config --modversion starpu-1.3") or "not available") +
        (f" (Debian {v})" if (v := sh("dpkg-query -W -f='${Version}' libstarpu-dev "
                                      "2>/dev/null")) else ""),
        "gcc": sh("gcc -dumpfullversion"),
    }


def run_flags(b):
    """The options of bench/run that change what is measured, as typed."""
    smoke, layout, base = getattr(b, "smoke", False), getattr(b, "layout", None), \
        getattr(b, "base", None)
    return ("".join([" --smoke" if smoke else " --quick" if b.q else "",
                     f" --layout {layout}" if layout and layout != "default" else "",
                     f" --baseline {base['commit'][:12]}" if base else ""]))


def report(b, info, sections, minutes, path):
    mode = "SMOKE TEST — one tiny configuration, 1 round; checks the suite, measures nothing " \
        "worth keeping" if getattr(b, "smoke", False) else \
        "QUICK MODE — smaller sizes and 2 rounds; a smoke test, not the issue's figures" \
        if b.q else "full"
    # Results saved before the commit line existed named the checkout's short commit instead.
    commit = info.get("commit") or info.get("tessera", "?")
    lines = ["# Benchmark results", "",
             f"Written by `bench/run{run_flags(b)}` "
             f"({'sections: ' + ', '.join(sections) if sections != SECTIONS else 'all sections'}"
             f", {b.nrounds} rounds; mode: {mode}). "
             "See docs/benchmarks.md for what each figure means. Rerun rather than edit: this "
             "file is generated.", "",
             f"- **Machine:** {info['cpu']}, {info['cores']} cores, {info['ram']} RAM, "
             f"kernel {info['kernel']}",
             f"- **Date:** {info['date']} (suite took {minutes:.1f} min)",
             f"- **Commit:** tessera {commit} ({info['tessera_build']})"
             + (f"; baseline {info['baseline']} (small section's A/B)"
                if info.get("baseline") else ""),
             f"- **Versions:** OpenBLAS "
             f"{info['openblas']}, libxsmm {info.get('libxsmm', '?')}, dask {info['dask']}, distributed {info['distributed']}, "
             f"numpy {info['numpy']}, StarPU {info['starpu']}, gcc {info['gcc']}",
             "- **Method:** the systems compared run in alternation (A B A B …) within each "
             "round; a figure is the median over rounds, a comparison the median of the "
             "per-round ratios. *other load* = CPU used by processes outside the benchmark "
             "during the round's runs (cores), from /proc/stat minus our own processes: the "
             "machine is shared, and rounds with load are noisier.", ""]
    unavailable = [f"{k}: {v}" for k, v in b.why.items()]
    if not b.dask_ok:
        unavailable.append(f"Dask: {b.dask_why}")
    if unavailable:
        lines += ["**Peers that could not run:** " + "; ".join(unavailable), ""]
    # Summary of the targets first, then each section.
    bodies = []
    renderers = {"matmul": md_matmul, "small": md_small, "transfers": md_transfers,
                 "memory": md_memory, "imbalance": md_imbalance, "traffic": md_traffic,
                 "spill": md_spill, "fusion": md_fusion}
    for s in sections:
        if s in b.data:
            try:
                bodies += renderers[s](b, b.data[s])
            except Exception as ex:  # noqa: BLE001 - a report with a hole beats none
                bodies += [f"## {s}", "", f"Could not render: {ex!r}", ""]
    for s, err in b.data.get("errors", {}).items():
        lines += [f"**Section {s} failed:** `{err}` (details in bench/.work/log.txt)", ""]
    lines += targets_table(b) + bodies
    notes = os.path.join(HERE, "notes.md")
    if os.path.exists(notes) and not b.q:
        with open(notes) as f:
            lines += ["## Notes (hand-written: `bench/notes.md`, about the run named there)", "",
                      f.read().strip(), ""]
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    meta = {"quick": b.q, "smoke": b.smoke, "layout": b.layout, "base": b.base,
            "nrounds": b.nrounds, "why": b.why, "dask_ok": b.dask_ok,
            "dask_why": b.dask_why, "sections": sections, "minutes": minutes,
            "out": os.path.abspath(path)}
    with open(raw_path(path), "w") as f:
        json.dump({"machine": info, "meta": meta, "data": b.data}, f, indent=1, default=str)


def raw_path(report_path):
    """Where a report's raw results go: bench/.work/RESULTS.json for bench/RESULTS.md, and so
    on, so a quick or partial run never overwrites a full run's."""
    return os.path.join(WORK, os.path.splitext(os.path.basename(report_path))[0] + ".json")


def render(path):
    """Writes the report again from a saved results.json (after editing bench/notes.md)."""
    with open(path) as f:
        saved = json.load(f)
    m = saved["meta"]
    b = types.SimpleNamespace(q=m["quick"], smoke=m.get("smoke", False),
                              layout=m.get("layout", "2x1"), base=m.get("base"),
                              nrounds=m["nrounds"], why=m["why"], dask_ok=m["dask_ok"],
                              dask_why=m["dask_why"], data=saved["data"])
    report(b, saved["machine"], m["sections"], m["minutes"], m["out"])
    log(f"wrote {os.path.relpath(m['out'])} from {path}")


def targets_table(b):
    rows = []
    for s in b.data.get("matmul", {}).get("summary") or []:
        for key, label, _, _ in MATMUL_RATIOS:
            t = s.get("targets", {}).get(key)
            if t:
                rows.append((f"matmul {s['n']}² {s['dtype']} chunk {s['chunk']}: {label}",
                             fmt(s[key]), f"≥ {t:.2f}", met(s[key], t)))
    sm = b.data.get("small", {}).get("summary")
    if sm:
        rows.append(("small tasks: tasks/s end to end", fmt(sm["rate"], 0), "≥ 200,000",
                     met(sm["rate"], 200000)))
        if sm.get("vs_base") is not None:
            rows.append((f"small tasks: current / baseline ({sm['base_commit'][:12]}) tasks/s",
                         fmt(sm["vs_base"]), "≥ 0.90", met(sm["vs_base"], 0.9)))
    for key, label, tgt, hib in (("transfers", "transfers: tessera / raw TCP", 0.8, True),
                                 ("traffic", "traffic: tessera / Dask bytes", 1.0, False)):
        s = b.data.get(key, {}).get("summary")
        if s:
            rows.append((label, fmt(s["ratio"], 3), ("≥ " if hib else "< ") + str(tgt),
                         met(s["ratio"], tgt) if hib else below(s["ratio"], tgt)))
    s = b.data.get("memory", {}).get("summary")
    if s:
        rows.append(("memory: scheduler bytes per task at 1M tasks",
                     fmt(s["bytes_per_task"], 1), "≤ 256",
                     met(s["bytes_per_task"], 256, False)))
        rows.append(("memory: worst worker rss_peak / (1.15 chunk_peak + pool + 32 MiB)",
                     fmt(s["worst_worker"]), "≤ 1", met(s["worst_worker"], 1.0, False)))
    s = b.data.get("spill", {}).get("summary")
    if s:
        for key, label in (("write", "spill: write throughput / raw sequential write"),
                           ("read", "spill: read-back throughput / raw sequential read")):
            rows.append((label, fmt(s.get(key)), "≥ 0.70", met(s.get(key), 0.7)))
    s = b.data.get("fusion", {}).get("summary")
    if s:
        rows.append(("fusion: unfused / fused tasks", fmt(s.get("tasks_ratio")), "≥ 3",
                     met(s.get("tasks_ratio"), 3.0)))
        rows.append(("fusion: unfused / fused seconds, per round", fmt(s.get("speedup")), "≥ 2",
                     met(s.get("speedup"), 2.0)))
    s = b.data.get("imbalance", {}).get("summary")
    if s:
        rows.append(("imbalance: makespan / ideal", fmt(s["vs_ideal"]), "≤ 1.15",
                     met(s["vs_ideal"], 1.15, False)))
        rows.append(("imbalance: makespan / round-robin's", fmt(s["vs_rr"]), "≤ 0.9",
                     met(s["vs_rr"], 0.9, False)))
    if not rows:
        return []
    title = "## Targets (quick mode: sizes differ from the issue's)" if b.q else "## Targets"
    return [title, "", "| target | measured (median) | target | |", "|---|---|---|---|"] + [
        f"| {a} | {m} | {t} | {ok} |" for a, m, t, ok in rows] + [""]


def main():
    global WORK
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smaller sizes, 2 rounds: a smoke test of the whole suite")
    ap.add_argument("--rounds", type=int, help="rounds per section (default 5; 2 with --quick;"
                    " section 1's 8192² configurations: 3)")
    ap.add_argument("--layout", choices=list(LAYOUTS), default="default",
                    help="how `tessera run` spends the cores in section 1's main tessera column: "
                    "2x1 = --workers 2 --threads 1, 1x2 = --workers 1 --threads 2, default = "
                    "neither option (default: default)")
    ap.add_argument("--baseline", metavar="COMMIT",
                    help="also build COMMIT and compare it with the current build on the small "
                    "tasks (section 2), alternated round by round")
    # A check that the suite runs at all, in about a minute: section 1 on one 1024² float64
    # configuration at chunk 512, 1 round. Not documented: it measures nothing worth keeping.
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--build", help="use this tessera build directory instead of building one")
    ap.add_argument("--render", metavar="RESULTS_JSON", nargs="?", const="",
                    help="measure nothing: write the report again from a run's saved raw results "
                    "(default: those of --out, bench/.work/RESULTS.json for bench/RESULTS.md), "
                    "e.g. after editing bench/notes.md")
    ap.add_argument("--out", help="report path (default bench/RESULTS.md for a full run of "
                    "every section, bench/RESULTS-quick.md with --quick, bench/RESULTS-partial.md"
                    " with --only)")
    a = ap.parse_args()
    WORK = os.path.join(HERE, ".work")
    if a.render is not None:
        render(a.render or raw_path(a.out or os.path.join(HERE, "RESULTS.md")))
        return
    sections = ["matmul"] if a.smoke and not a.only else SECTIONS
    if a.only:
        sections = [s.strip() for s in a.only.split(",") if s.strip()]
        bad = [s for s in sections if s not in SECTIONS]
        if bad:
            ap.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    if a.rounds is not None and a.rounds < 1:
        ap.error("--rounds must be at least 1")
    out = a.out or os.path.join(HERE, "RESULTS-quick.md" if a.quick or a.smoke else
                                "RESULTS-partial.md" if a.only else "RESULTS.md")
    os.makedirs(WORK, exist_ok=True)
    with open(os.path.join(WORK, "log.txt"), "w") as f:
        f.write(f"bench/run {' '.join(sys.argv[1:])}\n")
    started = time.time()
    tessera, desc, commit = build_tessera(a.build)
    base = build_baseline(a.baseline) if a.baseline else None
    helpers, why = build_helpers()
    for k, v in why.items():
        log(f"cannot run {k}: {v}")
    b = Bench(a, tessera, helpers, why, base)
    if not b.dask_ok:
        log(f"cannot run Dask: {b.dask_why}")
    info = machine(b, desc, commit)
    fns = {"matmul": sec_matmul, "small": sec_small, "transfers": sec_transfers,
           "memory": sec_memory, "imbalance": sec_imbalance, "traffic": sec_traffic,
           "spill": sec_spill, "fusion": sec_fusion}
    for s in sections:
        log(f"section {s}")
        t0 = time.time()
        try:
            fns[s](b)
        except Exception as ex:  # noqa: BLE001 - report what ran, say what did not
            log(f"section {s} failed: {ex!r}")
            b.data.setdefault("errors", {})[s] = repr(ex)
        log(f"section {s} took {time.time() - t0:.0f} s")
        report(b, info, sections, (time.time() - started) / 60, out)
    report(b, info, sections, (time.time() - started) / 60, out)
    log(f"wrote {os.path.relpath(out)} in {(time.time() - started) / 60:.1f} min")


WORK = None

if __name__ == "__main__":
    main()
