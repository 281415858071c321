"""NumPy's answers for tests/integration/test_shape.c: rebuilds the program's inputs from SPEC §2's
random formula (written out again here, in numpy) and compares each .npy output Tessera wrote in
DIR with NumPy's result for the same call, exactly (values, dtype and shape).
Usage: shape_ref.py DIR (the structural operations' program), shape_ref.py take-inputs DIR
(writes the '<i8' index files the take program loads), shape_ref.py take DIR (its outputs).
Prints one line per mismatch; exit status 0 when all match."""
import os
import sys

import numpy as np


def random(seed, shape, dtype="float64"):
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    if dtype == "float64":
        v = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    else:
        v = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    return v.reshape(shape)


A = random(1, (7, 10))
B = random(2, (7, 10), "float32")
V = random(3, (23,))
W = random(4, (4, 6, 5), "float32")
E = np.arange(0.0, 12.0, 1.0)

want = {
    "s1": A[::-1, 1:-1:3],
    "s2": A[-2, ::-2],
    "s3": B[5:0:-2],
    "s4": A[2:100],
    "s5": A[6:2],
    "s6": V[-20::4],
    "s7": A[3, 4],
    "s8": B[::-3, ::-1],
    "s9": W[1:, -1, 4:0:-3],
    "s10": V[100:-100:-1],
    "s11": A[:: 2**63 - 1, -1 :: -(2**63 - 1)],
    "c1": np.concatenate([A, A], axis=1),
    "c2": np.concatenate([B[5:0:-2], A, B], axis=0),
    "c3": np.concatenate([V, V[-20::4], V], axis=-1),
    "c4": np.concatenate([A[6:2], A, A[6:2]]),
    "k1": np.stack([A, B], axis=1),
    "k2": np.stack([V, V, V], axis=-1),
    "r1": A.reshape(-1),
    "r2": A.reshape(2, 35),
    "r3": B.reshape(7, 2, 5),
    "r4": B.reshape(70),
    "r5": A.reshape(-1).reshape(5, 14),
    "r6": W.reshape(24, 5),
    "r7": W.reshape(2, 2, 30),
    "r8": W.reshape(4, 1, 30, 1),
    "r9": E.reshape(3, 2, 2).reshape(6, 2),
    "q1": np.expand_dims(A, (0, -1)),
    "q2": np.squeeze(np.expand_dims(A, (0, -1)), 0),
    "q3": np.squeeze(np.expand_dims(A, (0, -1))),
    "q4": np.expand_dims(V, 1),
}


TAKE_I = np.array([-1, 0, 5, 3, -4, 2, 2], np.int64)


def take_want():
    X = random(5, (4, 6))
    Y = random(6, (6, 3), "float32")
    return {
        "t1": np.take(X, TAKE_I, axis=1),
        "t2": np.take(X, TAKE_I),
        "t3": np.take(Y, TAKE_I, axis=-2),
    }


def ints_want():
    M = np.arange(24, dtype=np.int64).reshape(4, 6)
    B = M < 11
    return {
        "i1": M[::-1, 5:0:-2],
        "i2": B[1:3, ::3],
        "i3": np.concatenate([B, M], axis=1),
        "i4": np.stack([B, B], axis=-1),
        "i5": np.take(B, TAKE_I, axis=1),
        "i6": np.squeeze(np.expand_dims(M, 0)).reshape(3, 8),
    }


def main():
    if sys.argv[1] == "take-inputs":
        np.save(os.path.join(sys.argv[2], "idx.npy"), TAKE_I)
        np.save(os.path.join(sys.argv[2], "bad.npy"), TAKE_I * 2)
        return
    expected = want
    if sys.argv[1] in ("take", "ints"):
        expected = take_want() if sys.argv[1] == "take" else ints_want()
        sys.argv.pop(1)
    d = sys.argv[1]
    bad = 0
    for name, w in sorted(expected.items()):
        path = os.path.join(d, name + ".npy")
        if not os.path.exists(path):
            print("%s: no output" % name)
            bad += 1
            continue
        g = np.load(path)
        w = np.asarray(w)
        if g.dtype != w.dtype or g.shape != w.shape or not np.array_equal(g, w):
            print("%s: got %s %s, want %s %s" % (name, g.dtype, g.shape, w.dtype, w.shape))
            bad += 1
    print("checked %d outputs, %d differ" % (len(expected), bad))
    sys.exit(1 if bad else 0)


main()
