# Independent reference for tests/integration/test_linalg.c: rebuilds the program's inputs from
# SPEC §2's random formula with numpy and checks the outputs `tessera run` wrote in the current
# directory against numpy's tensordot, @, eye and the normal formula. Prints "ok", or one line
# per mismatch and exits 1. Test helper only (never part of Tessera).
import sys
import numpy as np

U = np.uint64


def rnd(shape, seed, dt="float64", count=None):
    n = int(np.prod(shape)) if count is None else count
    with np.errstate(over="ignore"):
        i = np.arange(n, dtype=np.uint64)
        z = U(seed) + (i + U(1)) * U(0x9E3779B97F4A7C15)
        z = (z ^ (z >> U(30))) * U(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U(27))) * U(0x94D049BB133111EB)
        z = z ^ (z >> U(31))
    if dt == "float32":
        return ((z >> U(40)).astype(np.float32) * np.float32(2.0**-24)).reshape(shape)
    return ((z >> U(11)).astype(np.float64) * 2.0**-53).reshape(shape)


def normal(shape, seed, loc, scale):
    n = int(np.prod(shape))
    u = rnd((2 * n,), seed)
    u1, u2 = u[0::2], u[1::2]
    return (loc + scale * (np.sqrt(-2 * np.log(1 - u1)) * np.cos(2 * np.pi * u2))).reshape(shape)


bad = []


def close(name, want, rtol):
    got = np.load(name + ".npy")
    if got.shape != want.shape or got.dtype != want.dtype:
        bad.append("%s: got %s %s, want %s %s" % (name, got.shape, got.dtype, want.shape, want.dtype))
        return
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    lim = rtol * np.maximum(1.0, np.abs(want.astype(np.float64)))
    if not (err <= lim).all():
        bad.append("%s: max error %g" % (name, err.max()))


def exact(name, want):
    got = np.load(name + ".npy")
    if got.shape != want.shape or got.dtype != want.dtype or not (got == want).all():
        bad.append("%s: got %r, want %r" % (name, got, want))


A = rnd((5, 7, 6), 1)
B = rnd((6, 7, 4), 2)
close("T1", np.tensordot(A, B, axes=([1, 2], [1, 0])), 1e-13)
C32 = rnd((4, 6), 3, "float32")
D = rnd((6, 3, 5), 4)
close("T2", np.tensordot(C32, D, axes=([-1], [0])), 1e-13)
E = rnd((3,), 5)
F = rnd((2, 2), 6)
close("T3", np.tensordot(E, F, axes=0), 1e-15)
G32 = rnd((3, 4, 5), 7, "float32")
H32 = rnd((4, 5, 2), 8, "float32")
close("T4", np.tensordot(G32, H32), 1e-5)
X = rnd((3, 1, 4, 5), 9)
Y = rnd((2, 5, 3), 10)
close("M1", X @ Y, 1e-13)
v = rnd((7,), 11)
W = rnd((7, 5), 12)
close("M2", v @ W, 1e-13)
P = rnd((2, 3, 7), 13)
close("M3", P @ v, 1e-13)
close("M4", np.asarray(v @ v), 1e-13)
Q32 = rnd((2, 3, 4), 14, "float32")
R32 = rnd((4, 2), 15, "float32")
close("M5", Q32 @ R32, 1e-5)
K1 = rnd((2, 100, 1000), 16)
K2 = rnd((1000, 100), 17)
close("M6", K1 @ K2, 1e-12)
W2 = rnd((4, 5), 18)
Z = rnd((3, 5, 6), 19)
close("M7", W2 @ Z, 1e-13)
close("N1", normal((3, 5, 7), 7, 1.0, 2.0), 1e-14)
n2 = normal((10,), 12345678901234, 0.0, 1.0).astype(np.float32)
close("N2", n2, 2.5e-7)
exact("E1", np.eye(5, 7, 2))
exact("E2", np.eye(6, k=-1, dtype=np.float32))
exact("E3", np.eye(4, 3, 10))
J1 = (rnd((4, 5, 3), 20) * 1000).astype(np.int64)
J2 = (rnd((5, 2), 21) * 1000).astype(np.int64)
exact("I1", np.tensordot(J1, J2, axes=([1], [0])))
H1 = np.full((2, 3, 4), 3037000500, np.int64)
H2 = np.full((4, 2), 3037000500, np.int64)
exact("I2", H1 @ H2)  # wraps around, as NumPy's int64 loops do
close("I3", np.tensordot(J1, C32, axes=([0], [0])), 1e-13)
L1 = rnd((2, 3, 4), 22) < 0.3
L2 = rnd((4, 5), 23) < 0.3
exact("B1", L1 @ L2)
print("\n".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
