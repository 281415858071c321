#!/usr/bin/python3
"""Dask, the Python peer of bench/run: one measurement per process, printed as one JSON line.

  dask_peer.py --sched distributed|threaded --what matmul --n 4096 --chunk 512 [--dtype float32]
  dask_peer.py --sched distributed|threaded --what small --n 320000 --chunk 8

matmul: A, B = da.random.random_sample((n, n), chunks) (astype for float32), then
        (A @ B).sum().compute() is timed; the inputs are made inside the timed graph, as Tessera's.
small:  (da.ones(n, chunks) + 1).sum().compute() is timed (Tessera's sum(add(ones, 1))).
fusion: X, Y = random_sample((n, n), chunks), then
        sqrt(abs((((X + 1) * 2 - Y) / 3) ** 2 + maximum(X, Y))).sum().compute() is timed
        (bench.py's fusion section; the inputs are made inside the timed graph).

distributed = LocalCluster(n_workers=2, threads_per_worker=1, processes=True), created and
warmed up (a tiny matmul) before timing, OPENBLAS_NUM_THREADS=1 in every process; the bytes
moved between workers are the sum over workers of their transfer_incoming_log totals during the
timed run. threaded = dask's threads scheduler with 2 threads.

--timeout T caps the timed computation: past it the line {"timeout": T} is printed and the
process kills its own process group (its cluster included), so bench/run must start it as a
session leader (it does, with start_new_session).
"""
import argparse
import json
import os
import signal
import sys
import threading
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402


def build(a, seed):
    if a.what == "matmul":
        rs = da.random.RandomState(seed)
        A = rs.random_sample((a.n, a.n), chunks=(a.chunk, a.chunk))
        B = rs.random_sample((a.n, a.n), chunks=(a.chunk, a.chunk))
        if a.dtype == "float32":
            A, B = A.astype(np.float32), B.astype(np.float32)
        return (A @ B).sum()
    if a.what == "fusion":
        rs = da.random.RandomState(seed)
        X = rs.random_sample((a.n, a.n), chunks=(a.chunk, a.chunk))
        Y = rs.random_sample((a.n, a.n), chunks=(a.chunk, a.chunk))
        return da.sqrt(da.abs((((X + 1) * 2 - Y) / 3) ** 2 + da.maximum(X, Y))).sum()
    return (da.ones(a.n, chunks=a.chunk) + 1).sum()


def ntasks(expr):
    (opt,) = dask.optimize(expr)
    return len(dict(opt.__dask_graph__()))


def clear_log(dask_worker):
    dask_worker.transfer_incoming_log.clear()


def incoming(dask_worker):
    return sum(d["total"] for d in dask_worker.transfer_incoming_log)


def give_up(res, cap):
    print(json.dumps({**res, "timeout": cap}), flush=True)
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)  # this process and every cluster process it started
    os._exit(3)


def timed(client, expr, cap, res):
    """(seconds, value) of expr.compute(), or give_up past cap seconds."""
    t0 = time.perf_counter()
    if client is not None:
        fut = client.compute(expr)
        try:
            v = fut.result(timeout=cap)
        except TimeoutError:
            give_up(res, cap)
        return time.perf_counter() - t0, v
    box = []
    th = threading.Thread(target=lambda: box.append(expr.compute()), daemon=True)
    th.start()
    th.join(cap)
    if not box:
        give_up(res, cap)
    return time.perf_counter() - t0, box[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sched", choices=["distributed", "threaded"], required=True)
    ap.add_argument("--what", choices=["matmul", "small", "fusion"], required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--chunk", type=int, required=True)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--timeout", type=float, default=600.0)
    a = ap.parse_args()
    res = {"sched": a.sched, "what": a.what, "n": a.n, "chunk": a.chunk, "dtype": a.dtype}
    client = cluster = None
    if a.sched == "distributed":
        from distributed import Client, LocalCluster
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None,
                               env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        client = Client(cluster)
        client.wait_for_workers(2)
    else:
        dask.config.set(scheduler="threads", num_workers=2)
    # Warm-up: imports and first-call costs in every process, not timed.
    rs = da.random.RandomState(7)
    w = rs.random_sample((256, 256), chunks=64)
    (w @ w).sum().compute()
    (da.ones(64, chunks=8) + 1).sum().compute()
    expr = build(a, 1)
    res["tasks"] = ntasks(expr)
    if client is not None:
        client.run(clear_log)
    res["seconds"], v = timed(client, expr, a.timeout, res)
    res["value"] = float(v)
    if client is not None:
        res["in_bytes"] = int(sum(client.run(incoming).values()))
        client.close()
        cluster.close()
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main())
