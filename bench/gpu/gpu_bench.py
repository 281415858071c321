"""The GPU benchmark of issue 10, run on a machine with an NVIDIA GPU by bench/gpu/run.

Everything Tessera needs comes from bench/gpu/carry (bench/gpu/pack made it on a Debian machine),
or from a local build with --bin (a dry run on the fake device: TESSERA_FAKE_GPU=1 --quick).
Writes bench/RESULTS-gpu.md (and a copy under $OUT when set). Sections:

  tests      the CUDA kernel test, then the same under compute-sanitizer memcheck
  matmul     sum(A @ B), random inputs, GPU worker alone, warm cluster, one untimed warm-up job:
             the run's own time (stats `seconds`) against one cuBLAS call (bench/src/cublas_gemm.c)
  lowmem     the same from .npy inputs written beforehand, with --device-memory-limit at a
             quarter of the working set (evicted chunks travel back, they are not regenerated)
  mixed      a GPU worker and a CPU worker with the other cores, and who ran what
  accuracy   C = A @ B from the GPU worker against NumPy (float64 and float32)
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CARRY = os.path.join(ROOT, "bench", "gpu", "carry")
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, file=sys.stderr, flush=True)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except Exception:
        return ""


def cuda_lib_dirs():
    dirs = []
    for base in ["/usr/local/cuda", *sorted(os.popen("ls -d /usr/local/cuda-* 2>/dev/null").read().split())]:
        for sub in ["lib64", "lib", "targets/x86_64-linux/lib"]:
            d = os.path.join(base, sub)
            if os.path.exists(os.path.join(d, "libcublas.so.13")) or os.path.exists(
                    os.path.join(d, "libcudart.so.13")):
                dirs.append(d)
    for d in ["/usr/lib/x86_64-linux-gnu", "/usr/lib64"]:
        if os.path.exists(os.path.join(d, "libcublas.so.13")):
            dirs.append(d)
    try:  # pip's nvidia-* wheels
        import site
        for sp in site.getsitepackages():
            for sub in ["nvidia/cublas/lib", "nvidia/cuda_runtime/lib", "nvidia/cu13/lib"]:
                d = os.path.join(sp, sub)
                if os.path.isdir(d):
                    dirs.append(d)
    except Exception:
        pass
    return dirs


class Env:
    """How to start the carried executables: natively, or through the carried loader when the
    machine's C library is older than Debian 12's."""

    def __init__(self, binary):
        self.cuda = cuda_lib_dirs()
        libpath = ([CARRY] if binary is None else []) + self.cuda
        self.env = dict(os.environ)
        self.env["LD_LIBRARY_PATH"] = ":".join(libpath + [os.environ.get("LD_LIBRARY_PATH", "")])
        module = os.path.join(CARRY, "libtessera_cuda.so")
        if binary is None and os.path.exists(module):
            self.env["TESSERA_CUDA_MODULE"] = module
        self.tessera = os.path.abspath(binary) if binary else os.path.join(CARRY, "tessera")
        self.prefix = []
        if binary is None and not self.works([self.tessera, "--help"]):
            ld = os.path.join(CARRY, "glibc", "ld-linux-x86-64.so.2")
            self.prefix = [ld, "--library-path",
                           ":".join([os.path.join(CARRY, "glibc"), CARRY] + self.cuda)]
            if not self.works([self.tessera, "--help"]):
                raise SystemExit("gpu_bench: the carried tessera does not start here, natively or "
                                 "through the carried loader")
            log("using the carried C library")

    def cmd(self, argv):
        return self.prefix + argv

    def works(self, argv):
        try:
            return subprocess.run(self.cmd(argv), env=self.env, capture_output=True,
                                  timeout=30).returncode == 0
        except Exception:
            return False

    def run(self, argv, timeout=300, **kw):
        return subprocess.run(self.cmd(argv), env=self.env, capture_output=True, text=True,
                              timeout=timeout, **kw)

    def popen(self, argv, **kw):
        return subprocess.Popen(self.cmd(argv), env=self.env, text=True, **kw)


class Cluster:
    """A scheduler and workers started once and kept warm across jobs."""

    def __init__(self, env, workdir, workers):
        self.env, self.dir, self.procs = env, workdir, []
        self.logs = []
        sched = env.popen([env.tessera, "scheduler", "--listen", "127.0.0.1:0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.procs.append(sched)
        line = sched.stdout.readline()
        self.addr = line.strip().split()[-1]
        for name, args in workers:
            lg = open(os.path.join(workdir, f"{name}.log"), "w")
            self.logs.append(lg)
            self.procs.append(env.popen([env.tessera, "worker", "--scheduler", self.addr,
                                         "--name", name, "--verbose", *args],
                                        stdout=subprocess.DEVNULL, stderr=lg))
        deadline = time.time() + 60
        while time.time() < deadline:
            joined = sum("connected to scheduler" in open(os.path.join(workdir, f"{n}.log")).read()
                         for n, _ in workers)
            if joined == len(workers):
                return
            for p in self.procs:
                if p.poll() is not None:
                    break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("workers did not join: " + "; ".join(
            open(os.path.join(workdir, f"{n}.log")).read()[-400:] for n, _ in workers))

    def submit(self, prog, timeout=300):
        """Runs a program file; returns (stats dict, wall seconds, stdout)."""
        stats = os.path.join(self.dir, "stats.json")
        if os.path.exists(stats):
            os.unlink(stats)
        t0 = time.time()
        r = self.env.run([self.env.tessera, "submit", "--scheduler", self.addr, "--no-progress",
                          "--stats", stats, prog], timeout=timeout, cwd=self.dir)
        wall = time.time() - t0
        if r.returncode != 0:
            raise RuntimeError(f"submit {prog} failed ({r.returncode}): {r.stderr[-800:]}")
        return json.load(open(stats)), wall, r.stdout

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for lg in self.logs:
            lg.close()


def program(path, n, chunk, dtype, load=None, out=None):
    arrays = {}
    for name, seed in (("A", 1), ("B", 2)):
        if load:
            arrays[name] = {"op": "load", "path": load[name], "chunks": chunk}
        else:
            arrays[name] = {"op": "random", "shape": [n, n], "chunks": chunk, "seed": seed,
                            "dtype": dtype}
    arrays["C"] = {"op": "matmul", "args": ["A", "B"]}
    arrays["s"] = {"op": "sum", "args": ["C"]}
    outputs = {"s": "-"} if out is None else {"C": out}
    with open(path, "w") as f:
        json.dump({"tessera": 1, "arrays": arrays, "outputs": outputs}, f)
    return path


def spec_random(seed, n, dtype):
    """SPEC §2's random formula in NumPy (the test helpers' reference)."""
    g = np.arange(n * n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (g + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    if dtype == "float64":
        v = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    else:
        v = ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)).astype(np.float32)
    return v.reshape(n, n)


def cublas(env, dtype, n):
    exe = os.path.join(CARRY, "cublas_gemm")
    if not os.path.exists(exe):
        return None
    r = env.run([exe, "d" if dtype == "float64" else "s", str(n), "5"], timeout=240)
    if r.returncode != 0:
        log(f"cublas_gemm {dtype} {n}: exit {r.returncode} {r.stderr.strip()[-200:]}")
        return None
    return float(r.stdout.split()[0])


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def fmt(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="a local tessera executable instead of the carried one")
    ap.add_argument("--quick", action="store_true", help="small sizes (a dry run)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="tests,matmul,lowmem,mixed,accuracy")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RESULTS-gpu.md"))
    a = ap.parse_args()
    only = set(a.only.split(","))
    env = Env(a.bin)
    work = tempfile.mkdtemp(prefix="tsr-gpu-")
    sizes = [512, 1024] if a.quick else [8192, 16384]
    chunks = [256, 512] if a.quick else [2048, 4096]
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": sh("nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader")
        or os.environ.get("TESSERA_FAKE_GPU") and "fake device" or "?",
        "cuda": sh("nvidia-smi | grep -o 'CUDA Version: [0-9.]*'") or "?",
        "cpu": sh("lscpu | grep 'Model name' | sed 's/.*: *//'"),
        "cores": os.cpu_count(),
        "commit": sh(f"cat {CARRY}/COMMIT 2>/dev/null") or sh(f"git -C {ROOT} rev-parse --short HEAD"),
    }
    sections = []

    if "tests" in only:
        rows = []
        tests = [f for f in sorted(os.listdir(CARRY)) if f.startswith("test_cuda")] \
            if os.path.isdir(CARRY) else []
        for t in tests:
            exe = os.path.join(CARRY, t)
            r = env.run([exe], timeout=120)
            status = {0: "passed", 77: "skipped (no device)"}.get(r.returncode, f"FAILED ({r.returncode})")
            rows.append(f"| {t} | {status} | {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''} |")
            log(t, status)
            san = shutil.which("compute-sanitizer") or next(
                (p for p in ["/usr/local/cuda/bin/compute-sanitizer"] if os.path.exists(p)), None)
            if san and r.returncode == 0:
                r2 = env.run([san, "--tool", "memcheck", "--error-exitcode", "3", exe], timeout=150)
                s2 = "passed" if r2.returncode == 0 else f"FAILED ({r2.returncode}): " + \
                    r2.stdout.strip().splitlines()[-1][:120] if r2.stdout.strip() else ""
                rows.append(f"| {t} under compute-sanitizer memcheck | {s2} | |")
                log(t, "memcheck", s2)
        sections.append("## GPU tests\n\n| test | result | last line |\n|---|---|---|\n" +
                        ("\n".join(rows) if rows else "| (no CUDA test binary carried) | not run | |"))

    if "matmul" in only:
        cl = Cluster(env, work, [("gpu0", ["--gpu", "0"])])
        try:
            cl.submit(program(os.path.join(work, "warm.json"), sizes[0], chunks[0], "float64"))
            rows = []
            for n in sizes:
                for dt in ("float64", "float32"):
                    limit = cublas(env, dt, n)
                    for ch in chunks:
                        p = program(os.path.join(work, f"m{n}{dt}{ch}.json"), n, ch, dt)
                        secs, walls = [], []
                        for _ in range(a.reps):
                            st, wall, _ = cl.submit(p)
                            secs.append(st["seconds"])
                            walls.append(wall)
                        s = median(secs)
                        ratio = limit / s if limit and s else None
                        tfl = 2.0 * n ** 3 / s / 1e12
                        rows.append(f"| {n}² | {dt} | {ch} | {fmt(s)} | {fmt(median(walls))} | "
                                    f"{fmt(limit, '.4f')} | {tfl:.1f} | {fmt(ratio, '.2f')} |")
                        log(rows[-1])
            sections.append(
                "## sum(A @ B) on one GPU worker (random inputs, warm cluster)\n\n"
                "Median of %d runs after one untimed warm-up job. **seconds** = the run's own time "
                "(stats `seconds`, submit to finished); **wall** = `tessera submit` start to exit; "
                "**cuBLAS** = one cublasDgemm/Sgemm on the whole matrices, inputs already on the "
                "device (median of 5 after a warm-up); **ratio** = cuBLAS / seconds (target ≥ "
                "0.90 at the larger size).\n\n"
                "| n | dtype | chunk | seconds | wall | cuBLAS | TFLOP/s | ratio |\n"
                "|---|---|---|---|---|---|---|---|\n" % a.reps + "\n".join(rows))
        finally:
            cl.stop()

    if "lowmem" in only:
        n = sizes[-1]
        ch = chunks[-1]
        rows = []
        for dt in ("float64", "float32"):
            es = 8 if dt == "float64" else 4
            load = {}
            for name, seed in (("A", 1), ("B", 2)):
                path = os.path.join(work, f"{name}{dt}.npy")
                np.save(path, np.random.default_rng(seed).random((n, n), dtype=np.float64).astype(dt))
                load[name] = path
            working = 3 * n * n * es
            limit_bytes = working // 4
            cl = Cluster(env, work, [("gpu0", ["--gpu", "0", "--device-memory-limit",
                                               str(limit_bytes)])])
            try:
                p = program(os.path.join(work, f"low{dt}.json"), n, ch, dt, load=load)
                cl.submit(p)  # warm-up (also the page cache)
                secs = [cl.submit(p)[0]["seconds"] for _ in range(max(1, a.reps - 1))]
            finally:
                cl.stop()
            dev = open(os.path.join(work, "gpu0.log")).read()
            line = next((l for l in dev.splitlines() if "device: peak" in l), "")
            limit = cublas(env, dt, n)
            s = median(secs)
            rows.append(f"| {n}² | {dt} | {ch} | {limit_bytes >> 20} MiB | {fmt(s)} | "
                        f"{fmt(limit, '.4f')} | {fmt(limit / s if limit and s else None, '.2f')} | "
                        f"{line.split('info: ')[-1]} |")
            log(rows[-1])
            for v in load.values():
                os.unlink(v)
        sections.append(
            "## Device memory at a quarter of the working set, inputs from .npy\n\n"
            "A, B loaded from .npy files written beforehand (so evicted chunks are copied back, "
            "not regenerated); working set = A + B + C. Target ≥ 0.75 of one cuBLAS call.\n\n"
            "| n | dtype | chunk | device limit | seconds | cuBLAS | ratio | the worker's device "
            "line |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))

    if "mixed" in only:
        n, ch = sizes[0], chunks[0]
        cpus = max(1, (os.cpu_count() or 2) - 1)
        cl = Cluster(env, work, [("gpu0", ["--gpu", "0", "--cpus", str(cpus)]),
                                 ("cpu0", ["--threads", str(cpus), "--cpus", f"0-{cpus - 1}"])])
        try:
            p = program(os.path.join(work, "mixed.json"), n, ch, "float64")
            cl.submit(p)
            st, wall, _ = cl.submit(p)
        finally:
            cl.stop()
        who = ", ".join(f"{w.get('name')}: {w.get('tasks')} tasks" for w in st.get("workers", []))
        sections.append(
            "## Mixed: one GPU worker and one CPU worker (%d threads)\n\n"
            "%d² float64, chunk %d: %.3f s (stats `seconds`); %s\n" % (cpus, n, ch, st["seconds"], who))
        log(sections[-1])

    if "accuracy" in only:
        n, ch = (256, 64) if a.quick else (4096, 1024)
        cl = Cluster(env, work, [("gpu0", ["--gpu", "0"])])
        rows = []
        try:
            for dt in ("float64", "float32"):
                p = program(os.path.join(work, f"acc{dt}.json"), n, ch, dt, out=f"C{dt}.npy")
                cl.submit(p)
                got = np.load(os.path.join(work, f"C{dt}.npy")).astype(np.float64)
                ref = spec_random(1, n, dt).astype(np.float64) @ spec_random(2, n, dt).astype(np.float64)
                rel = float(np.max(np.abs(got - ref) / np.abs(ref)))
                want = 1e-12 if dt == "float64" else 1e-4
                rows.append(f"| {dt} | {n}² chunk {ch} | {rel:.2e} | {want:.0e} | "
                            f"{'met' if rel <= want else 'MISSED'} |")
                log(rows[-1])
        finally:
            cl.stop()
        sections.append("## Accuracy: C = A @ B from the GPU worker against NumPy (float64 "
                        "products of the same inputs)\n\n| dtype | case | max relative error | "
                        "target | |\n|---|---|---|---|---|\n" + "\n".join(rows))

    head = (f"# Tessera on a GPU (issue 10)\n\nMeasured {info['date']} by `bench/gpu/run` at "
            f"commit {info['commit']}: {info['gpu']}, {info['cuda']}, {info['cpu']}, "
            f"{info['cores']} cores.\n")
    text = head + "\n" + "\n\n".join(sections) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    if os.environ.get("OUT"):
        shutil.copy(a.out, os.path.join(os.environ["OUT"], os.path.basename(a.out)))
    print(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
