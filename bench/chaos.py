#!/usr/bin/python3
"""Chaos runs against real processes (issue 12): a scheduler and 3 workers, one fault per run
at a random moment (SIGKILL a worker, or SIGSTOP it and SIGCONT it later), including while the
client fetches the outputs; every run's output files must be byte-identical to the reference
(numpy, computed here) and no temporary file may be left behind.

    bench/chaos.py [--faults 100] [--exe build/python-free-cli/tessera] [--seed S]

Runs until --faults faults have hit a running job (a fault drawn after the job ended is no
fault: that run still counts, and must still be identical). Prints one line per run and the
figure: runs, faults, identical, failures, time."""
import argparse, atexit, os, random, re, signal, subprocess, sys, tempfile, time
import numpy as np

N, CH = 1600, 200  # D = A @ B + 1.5, E = sum(D, axis=0): 36 output chunks + a reduction

PROG = """{"tessera": 1,
 "arrays": {
  "A": {"op": "random", "shape": [%d, %d], "chunks": %d, "seed": 1},
  "B": {"op": "random", "shape": [%d, %d], "chunks": %d, "seed": 2},
  "C": {"op": "matmul", "args": ["A", "B"]},
  "D": {"op": "add", "args": ["C", 1.5]},
  "E": {"op": "sum", "args": ["D"], "axis": 0}
 },
 "outputs": {"D": "d.npy", "E": "e.npy"}}
""" % (N, N, CH, N, N, CH)

def spec_random(seed, shape):
    # SPEC §2: splitmix64's mix of seed + (i + 1) * golden, top 53 bits / 2^53.
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / float(1 << 53)).reshape(shape)

ALL = []  # every server started: none outlives this script, whatever happens


@atexit.register
def reap():
    for p in ALL:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()


signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that reap() runs


def start(cmd, log):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    ALL.append(p)
    return p

def read_addr(p):
    line = p.stdout.readline()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        raise SystemExit("no address from: %r" % line)
    return m.group(1)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--faults", type=int, default=100)
    ap.add_argument("--exe", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                   "python-free-cli", "tessera"))
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--stop-share", type=float, default=0.25, help="share of faults that are SIGSTOP")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    exe = os.path.abspath(a.exe)
    work = tempfile.mkdtemp(prefix="tsr-chaos-")
    with open(os.path.join(work, "p.json"), "w") as f:
        f.write(PROG)
    log = open(os.path.join(work, "servers.log"), "w")
    sched = start([exe, "scheduler", "--listen", "127.0.0.1:0", "--worker-timeout", "1500"], log)
    addr = read_addr(sched)
    workers = []
    names = iter(range(1000000))

    def add_worker():
        w = start([exe, "worker", "--scheduler", addr, "--threads", "1", "--name", "w%d" % next(names), "--timeout", "5000"], log)
        workers.append(w)

    for _ in range(3):
        add_worker()
    submit = [exe, "submit", "--scheduler", addr, "--no-progress", "p.json"]
    # The reference, from numpy (not from Tessera).
    A, B = spec_random(1, (N, N)), spec_random(2, (N, N))
    # The undisturbed run sets the fault window; its files must match numpy closely, and every
    # disturbed run's must match the undisturbed one byte for byte.
    times = []
    for _ in range(3):  # the first run warms the workers up: the window is the median's
        t0 = time.time()
        r = subprocess.run(submit, cwd=work, capture_output=True, text=True, timeout=300)
        times.append(time.time() - t0)
        if r.returncode != 0:
            raise SystemExit("undisturbed run failed: " + r.stderr)
    base_s = sorted(times)[1]
    D = np.load(os.path.join(work, "d.npy"))
    E = np.load(os.path.join(work, "e.npy"))
    refD = A @ B + 1.5
    if not (np.allclose(D, refD, rtol=1e-12, atol=1e-9) and
            np.allclose(E, refD.sum(axis=0), rtol=1e-12)):
        raise SystemExit("undisturbed run differs from numpy")
    ref = {n: open(os.path.join(work, n), "rb").read() for n in ("d.npy", "e.npy")}
    print("undisturbed: %.2f s, matches numpy" % base_s, flush=True)
    same = fail = faults = 0
    t_all = time.time()
    run = -1
    while faults < a.faults:
        run += 1
        for n in ref:
            if os.path.exists(os.path.join(work, n)):
                os.unlink(os.path.join(work, n))
        kind = "STOP" if rnd.random() < a.stop_share else "KILL"
        at = rnd.uniform(0.05, 1.1) * base_s
        victim = rnd.randrange(len(workers))
        t0 = time.time()
        p = subprocess.Popen(submit, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        try:
            p.wait(timeout=at)
        except subprocess.TimeoutExpired:
            pass
        w = workers[victim]
        fired = p.poll() is None
        if fired:
            faults += 1
            w.send_signal(signal.SIGKILL if kind == "KILL" else signal.SIGSTOP)
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += "\n(timed out)"
        dt = time.time() - t0
        if fired and kind == "STOP":
            w.send_signal(signal.SIGCONT)  # a stale worker: it must not corrupt anything
        ok = p.returncode == 0 and all(
            os.path.exists(os.path.join(work, n)) and
            open(os.path.join(work, n), "rb").read() == ref[n] for n in ref)
        tmps = [f for f in os.listdir(work) if ".tmp-" in f]
        for f in tmps:
            os.unlink(os.path.join(work, f))
        ok = ok and not tmps
        same += ok
        fail += not ok
        print("run %3d: %s %s at %.2f s -> rc %d, %s, %.2f s%s" %
              (run, "SIG" + kind if fired else "no fault (done)", "w%d" % victim, at,
               p.returncode, "identical" if ok else "DIFFERENT", dt,
               "" if ok else "\n  " + err.strip().replace("\n", "\n  ") +
               ("\n  left: %s" % tmps if tmps else "")), flush=True)
        # Replace a worker that is gone (killed, or stopped past the timeout and then exited).
        for i, x in enumerate(workers):
            if x.poll() is not None or (fired and kind == "KILL" and i == victim):
                x.wait()
                workers[i] = None
        workers[:] = [x for x in workers if x is not None]
        while len(workers) < 3:
            add_worker()
        time.sleep(0.3)
    total = time.time() - t_all
    for w in workers:
        w.send_signal(signal.SIGTERM)
    sched.send_signal(signal.SIGTERM)
    for x in workers + [sched]:
        try:
            x.wait(timeout=10)
        except subprocess.TimeoutExpired:
            x.kill()
    print("chaos: seed %d, %d runs, %d faults, %d identical, %d failures, %.0f s (undisturbed %.2f s)"
          % (a.seed, run + 1, faults, same, fail, total, base_s))
    print("work dir (logs): %s" % work)
    sys.exit(1 if fail else 0)

main()
