#!/usr/bin/python3
"""The independent side of the Zarr tests (tests/integration/test_zarr.c): Debian's python3-zarr
and python3-numpy, never Tessera. SPEC section 2's random formula is written out again here with
numpy, so that what Tessera writes is checked against zarr's reading of it and that formula, and
what Tessera reads was made by zarr.

    zarr_helper.py check DIR     read the stores test_zarr.c's program wrote; print "ok"
    zarr_helper.py make DIR      write the stores test_zarr.c's program loads
    zarr_helper.py old DIR NAME  write a small store at DIR/NAME (to be replaced)
    zarr_helper.py same DIR NAME print "ok" if DIR/NAME is still that small store
"""
import os
import sys

import numcodecs
import numpy as np
import zarr


def rnd(seed, shape, f32=False):
    """SPEC section 2: element i (row-major) of random with seed `seed`."""
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    if f32:
        v = ((z >> np.uint64(40)).astype(np.float64) * 2.0**-24).astype(np.float32)
    else:
        v = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return v.reshape(shape)


def fail(msg):
    print(msg)
    sys.exit(1)


def expect(path, want, compressor_id, chunks=None):
    z = zarr.open(path, mode="r")
    if not isinstance(z, zarr.Array):
        fail(f"{path}: not a zarr array")
    if z.shape != want.shape or z.dtype != want.dtype:
        fail(f"{path}: shape {z.shape} dtype {z.dtype}, expected {want.shape} {want.dtype}")
    if z.order != "C":
        fail(f"{path}: order {z.order}")
    got_id = z.compressor.codec_id if z.compressor is not None else None
    if got_id != compressor_id:
        fail(f"{path}: compressor {z.compressor}, expected {compressor_id}")
    if chunks is not None and tuple(z.chunks) != tuple(chunks):
        fail(f"{path}: chunks {z.chunks}, expected {chunks}")
    got = z[...]
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)[:3]
        fail(f"{path}: values differ from the formula, first at {bad.tolist()}")
    if os.path.exists(os.path.join(path, ".zattrs")) and dict(z.attrs) != {}:
        fail(f"{path}: .zattrs is not {{}}")


def check(d):
    # test_zarr.c's write program, array by array.
    a = rnd(5, (37, 23))
    expect(f"{d}/a.zarr", a, "blosc", (10, 7))
    blosc = zarr.open(f"{d}/a.zarr", mode="r").compressor
    if (blosc.cname, blosc.clevel, blosc.shuffle) != ("lz4", 5, numcodecs.Blosc.SHUFFLE):
        fail(f"a.zarr: blosc settings {blosc}, expected lz4, level 5, byte shuffle")
    expect(f"{d}/b.zarr", rnd(6, (50,), f32=True), "zlib", (16,))
    expect(f"{d}/c.zarr", rnd(7, (20, 9, 4)), None, (7, 4, 4))
    # D = X + zeros with other chunks: an irregular grid, stored with regular chunks.
    dz = zarr.open(f"{d}/d.zarr", mode="r")
    expect(f"{d}/d.zarr", rnd(8, (13, 11)), "blosc")
    for ax, c in enumerate(dz.chunks):
        if c < 1 or c > dz.shape[ax]:
            fail(f"d.zarr: chunk {c} on axis {ax}")
    expect(f"{d}/s.zarr", rnd(9, ()), "blosc", ())
    # Every chunk file of a.zarr is there: Tessera writes edge chunks padded, as zarr does.
    names = sorted(os.listdir(f"{d}/a.zarr"))
    want = sorted([".zarray", ".zattrs"] + [f"{i}.{j}" for i in range(4) for j in range(4)])
    if names != want:
        fail(f"a.zarr holds {names}")
    print("ok")


def make(d):
    # m1: float64, blosc zstd with bit shuffle, ragged last chunks, two chunks missing.
    z = zarr.open(f"{d}/m1.zarr", mode="w", shape=(37, 23), chunks=(10, 7), dtype="<f8",
                  compressor=numcodecs.Blosc(cname="zstd", clevel=3,
                                             shuffle=numcodecs.Blosc.BITSHUFFLE),
                  fill_value=-1.5)
    z[...] = rnd(11, (37, 23))
    os.remove(f"{d}/m1.zarr/1.2")
    os.remove(f"{d}/m1.zarr/3.3")
    # m2: float32, zlib.
    z = zarr.open(f"{d}/m2.zarr", mode="w", shape=(50,), chunks=(16,), dtype="<f4",
                  compressor=numcodecs.Zlib(level=5))
    z[...] = rnd(12, (50,), f32=True)
    # m3: no compressor, "/" separator, NaN fill, one chunk missing.
    z = zarr.open(f"{d}/m3.zarr", mode="w", shape=(20, 9), chunks=(8, 4), dtype="<f8",
                  compressor=None, fill_value=np.nan, dimension_separator="/")
    z[...] = rnd(13, (20, 9))
    os.remove(f"{d}/m3.zarr/2/1")
    # m4: 0-d, blosc lz4 (zarr's default).
    z = zarr.open(f"{d}/m4.zarr", mode="w", shape=(), dtype="<f8")
    z[...] = rnd(14, ())
    # m5: a chunk file that is not blosc data.
    z = zarr.open(f"{d}/m5.zarr", mode="w", shape=(4, 4), chunks=(2, 2), dtype="<f8")
    z[...] = 1.0
    with open(f"{d}/m5.zarr/0.1", "wb") as f:
        f.write(b"this is not a blosc frame at all")
    print("ok")


def old(d, name):
    z = zarr.open(f"{d}/{name}", mode="w", shape=(3,), chunks=(2,), dtype="<f8")
    z[...] = [7.0, 8.0, 9.0]
    with open(f"{d}/{name}/stale.chunk", "wb") as f:
        f.write(b"x")
    print("ok")


def same(d, name):
    z = zarr.open(f"{d}/{name}", mode="r")
    if z.shape != (3,) or list(z[...]) != [7.0, 8.0, 9.0]:
        fail(f"{name} changed: {z.shape}")
    if not os.path.exists(f"{d}/{name}/stale.chunk"):
        fail(f"{name}: its files changed")
    print("ok")


if __name__ == "__main__":
    cmds = {"check": check, "make": make, "old": old, "same": same}
    if len(sys.argv) < 3 or sys.argv[1] not in cmds:
        fail(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
