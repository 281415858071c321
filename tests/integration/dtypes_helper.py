"""Reference side of tests/integration/test_dtypes.c: NumPy (run as /usr/bin/python3, with
NumPy's NEP 50 "weak" promotion switched on, i.e. NumPy 2's rules) computes what each array of a
program file must hold, dtype included.

  dtypes_helper.py gen DIR       writes DIR/prog.json and its .npy inputs
  dtypes_helper.py check DIR     compares each DIR/<name>.npy tessera wrote with NumPy's value
  dtypes_helper.py same D1 D2    byte-compares the outputs of two runs
  dtypes_helper.py zgen DIR      writes int64 and bool Zarr stores (python3-zarr) and zprog.json
  dtypes_helper.py zcheck DIR    reads the stores and .npy files zprog.json wrote

Where NumPy gives a dtype Tessera does not have (float16 for sqrt or floor of bool, int8 for
square of bool), the reference is NumPy's operation on the bool input cast to float64 / int64,
as docs/arrays.md says Tessera computes it. Nothing here reads Tessera's earlier output.
"""
import json
import os
import sys
import warnings

import numpy as np

np._set_promotion_state("weak")
warnings.simplefilter("ignore")

I64MAX = np.iinfo(np.int64).max
I64MIN = np.iinfo(np.int64).min


def inputs():
    ints = np.array([I64MAX, I64MIN, -7, -1, 0, 1, 2, 3, 5, 9, 100, -100, 2**40, -(2**40) + 3,
                     12345678901234567, 7, 8, -3, 4, 6, 1, 0, -2, 2**53 + 1, -(2**53) - 1, 11,
                     13, 17, 19, 23, 29, 31, 37, 41, 43], dtype=np.int64).reshape(5, 7)
    flts = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 0.5, 1.5, 2.5, -2.5, -0.5, 3.7, -3.7,
                     1e19, 9.3e18, -1e19, 0.25, 0.75, -0.75, 1.0, -1.0, 2.0, 1e-300, 7.5,
                     -7.5, 100.25, 0.1, -0.1, 0.9, -0.9, 4.0, 5.5, 6.5, -6.5, 0.3, 2.0 ** 62],
                    dtype=np.float64).reshape(5, 7)
    bools = (np.arange(35).reshape(5, 7) * 7 % 3 == 0)
    f32 = np.array([[0.5, -1.5, 2.5, np.nan, -0.25, 3.0, 1e30]], dtype=np.float32)
    j = np.array([3, -2, 0, 1, 5, 2, -1], dtype=np.int64)
    jpos = np.array([0, 1, 2, 3, 1, 2, 0], dtype=np.int64)
    k = (np.arange(28, dtype=np.int64).reshape(7, 4) * 3 - 40) * (2**40 + 1)
    return {"I": ints, "F": flts, "B": bools, "G": f32, "J": j, "P": jpos, "K": k}


UNARY = ["neg", "abs", "exp", "log", "sqrt", "sin", "cos", "tanh", "floor", "ceil", "round",
         "tan", "arcsin", "arccos", "arctan", "log1p", "expm1", "sign", "square", "logical_not",
         "isnan", "isfinite"]
NP_UNARY = {"neg": np.negative, "abs": np.absolute, "round": np.rint}
FLOATY = {"exp", "log", "sqrt", "sin", "cos", "tanh", "tan", "arcsin", "arccos", "arctan",
          "log1p", "expm1"}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
          "pow": np.power, "maximum": np.maximum, "minimum": np.minimum, "less": np.less,
          "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
          "equal": np.equal, "not_equal": np.not_equal, "logical_and": np.logical_and,
          "logical_or": np.logical_or}


def unary_ref(name, x):
    if x.dtype == np.bool_ and name in FLOATY:
        x = x.astype(np.float64)  # NumPy: float16
    if x.dtype == np.bool_ and name in ("floor", "ceil", "round", "square"):
        x = x.astype(np.int64)  # NumPy: float16 / int8
    if x.dtype == np.int64 and name in ("floor", "ceil", "round"):
        return x.copy()  # SPEC: floor/ceil/round keep int64
    return NP_UNARY.get(name, getattr(np, name, None))(x)


def unary_defined(name, dt):
    return not (dt == np.bool_ and name in ("neg", "sign"))


def wh(c, x, y):
    """numpy.where with NumPy 2's weak scalars: 1.24's where promotes a Python number as a value,
    its ufuncs (np.add) as NEP 50 says, so the dtype comes from an empty add."""
    def probe(a):
        return np.zeros(0, a.dtype) if isinstance(a, np.ndarray) else a
    px, py = probe(x), probe(y)
    if isinstance(px, np.ndarray) or isinstance(py, np.ndarray):
        dt = np.add(px, py).dtype if not (isinstance(px, np.ndarray) and isinstance(py, np.ndarray)) \
            else np.result_type(px, py)
    else:
        dt = np.result_type(type(x), type(y)) if type(x) != type(y) else np.asarray(x).dtype
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype == np.bool_:
        dt = np.bool_
    return np.where(c, x, y).astype(dt)


def program():
    """The program's arrays (JSON) and, for each output, its NumPy value."""
    v = inputs()
    arrays, want = {}, {}
    chunks = {"I": [2, 3], "F": [2, 5], "B": [3, 4], "G": [1, 3], "J": 3, "P": 4, "K": [3, 3]}
    for n in v:
        arrays[n] = {"op": "load", "path": n + ".npy", "chunks": chunks[n]}
    main = ["I", "F", "B", "G"]

    def out(name, d, val):
        arrays[name] = d
        want[name] = np.asarray(val)

    for u in UNARY:
        for x in main:
            if unary_defined(u, v[x].dtype):
                out("u_%s_%s" % (u, x), {"op": u, "args": [x]}, unary_ref(u, v[x]))
    for b in BINARY:
        for x in main:
            for y in main + ["J"]:
                if b == "sub" and v[x].dtype == np.bool_ and v[y].dtype == np.bool_:
                    continue
                if b == "pow" and (v[x].dtype == np.bool_ or v[y].dtype != np.float32):
                    continue  # int powers below, with non-negative exponents
                out("b_%s_%s_%s" % (b, x, y), {"op": b, "args": [x, y]}, BINARY[b](v[x], v[y]))
    out("pow_I_P", {"op": "pow", "args": ["I", "P"]}, np.power(v["I"], v["P"]))
    out("pow_P_2", {"op": "pow", "args": ["P", 2]}, np.power(v["P"], 2))
    out("pow_I_F", {"op": "pow", "args": ["I", "F"]}, np.power(v["I"], v["F"]))
    # Weak scalars (NEP 50): each op with an int and a float literal, on either side.
    for x in main:
        for s, lit in (("2", 2), ("f", 1.5), ("m", -3), ("h", 0.5)):
            for b in ("add", "mul", "maximum", "less", "equal", "logical_or", "div"):
                out("s_%s_%s_%s" % (b, x, s), {"op": b, "args": [x, lit]}, BINARY[b](v[x], lit))
            out("r_sub_%s_%s" % (x, s), {"op": "sub", "args": [lit, x]}, np.subtract(lit, v[x]))
        out("s_sub1_%s" % x, {"op": "sub", "args": [x, 1]}, np.subtract(v[x], 1))
        out("s_pow2_%s" % x, {"op": "pow", "args": [x, 2]},
            np.power(v[x].astype(np.int64) if x == "B" else v[x], 2))
        out("s_powf_%s" % x, {"op": "pow", "args": [x, 0.5]}, np.power(v[x], 0.5))
        out("s_add1_wrap_%s" % x, {"op": "add", "args": [x, 1]}, np.add(v[x], 1))
        for t in ("float64", "float32", "int64", "bool"):
            out("as_%s_%s" % (x, t), {"op": "astype", "args": [x], "dtype": t}, v[x].astype(t))
        for r in ("sum", "mean", "max", "min"):
            for ax in (None, 0, -1):
                out("red_%s_%s_%s" % (r, x, "n" if ax is None else "m1" if ax == -1 else ax),
                    {"op": r, "args": [x], "axis": ax}, getattr(np, r)(v[x], axis=ax))
        out("T_%s" % x, {"op": "transpose", "args": [x]}, v[x].T)
        out("rc_%s" % x, {"op": "rechunk", "args": [x], "chunks": [4, 2]}, v[x])
        out("w_B_%s_I" % x, {"op": "where", "args": ["B", x, "I"]}, wh(v["B"], v[x], v["I"]))
        out("w_%s_2_f" % x, {"op": "where", "args": [x, 2, 0.5]}, wh(v[x], 2, 0.5))
        out("w_%s_F_7" % x, {"op": "where", "args": [x, "F", 7]}, wh(v[x], v["F"], 7))
        out("w_F_%s_7" % x, {"op": "where", "args": ["F", x, 7]}, wh(v["F"], v[x], 7))
        out("w_F_m1_%s" % x, {"op": "where", "args": ["F", -1, x]}, wh(v["F"], -1, v[x]))
        out("w_J_%s_G" % x, {"op": "where", "args": ["J", x, "G"]}, wh(v["J"], v[x], v["G"]))
        if x != "B":
            out("clip_%s_i" % x, {"op": "clip", "args": [x], "min": 2, "max": 6},
                np.clip(v[x], 2, 6))
            out("clip_%s_lo" % x, {"op": "clip", "args": [x], "min": -1.5, "max": None},
                np.clip(v[x], -1.5, None))
            out("clip_%s_hi" % x, {"op": "clip", "args": [x], "max": 0.5}, np.clip(v[x], None, 0.5))
            out("clip_%s_x" % x, {"op": "clip", "args": [x], "min": 3, "max": 1},
                np.clip(v[x], 3, 1))
    # Integer numbers stay exact past 2^53 where the op runs in int64.
    out("big_add", {"op": "add", "args": ["I", 9223372036854775807]}, np.add(v["I"], I64MAX))
    out("big_sub", {"op": "sub", "args": [-9223372036854775807, "I"]}, np.subtract(-I64MAX, v["I"]))
    out("big_eq", {"op": "equal", "args": ["I", 9007199254740993]}, np.equal(v["I"], 2**53 + 1))
    out("big_lt", {"op": "less", "args": [9007199254740992, "I"]}, np.less(2**53, v["I"]))
    out("big_f", {"op": "add", "args": ["F", 9007199254740993]}, np.add(v["F"], 2**53 + 1))
    out("clip_B", {"op": "clip", "args": ["B"], "min": 0, "max": 0}, np.clip(v["B"], 0, 0))
    big, I64 = 2**53 + 3, np.int64  # a double rounds 2^53 + 3 to 2^53 + 4
    out("big_clip", {"op": "clip", "args": ["I"], "min": -big, "max": big},
        np.clip(v["I"], I64(-big), I64(big)))
    out("big_clip_lo", {"op": "clip", "args": ["I"], "min": big - 2}, np.maximum(v["I"], I64(big - 2)))
    out("big_where_x", {"op": "where", "args": ["B", big, "I"]}, np.where(v["B"], I64(big), v["I"]))
    out("big_where_y", {"op": "where", "args": ["B", "I", -I64MAX]},
        np.where(v["B"], v["I"], I64(-I64MAX)))
    out("big_where_xy", {"op": "where", "args": ["B", big, -big]},
        np.where(v["B"], I64(big), I64(-big)))
    out("mm_IK", {"op": "matmul", "args": ["I", "K"]}, v["I"] @ v["K"])
    out("mm_IJ", {"op": "matmul", "args": ["I", "J"]}, v["I"] @ v["J"])
    out("mm_BK", {"op": "matmul", "args": ["B", "K"]}, v["B"] @ v["K"])
    out("mm_BBT", {"op": "matmul", "args": ["B", "T_B"]}, v["B"] @ v["B"].T)
    out("mm_BJb", {"op": "matmul", "args": ["T_B", "u_logical_not_B"]}, v["B"].T @ ~v["B"])
    out("zeros_i", {"op": "zeros", "shape": [3, 5], "chunks": 2, "dtype": "int64"},
        np.zeros((3, 5), np.int64))
    out("ones_b", {"op": "ones", "shape": [4], "chunks": 3, "dtype": "bool"}, np.ones(4, bool))
    out("full_i", {"op": "full", "shape": [5], "chunks": 2, "dtype": "int64",
                   "value": 9223372036854775807}, np.full(5, I64MAX, np.int64))
    out("full_b", {"op": "full", "shape": [2, 3], "chunks": 2, "dtype": "bool", "value": 2},
        np.full((2, 3), True))
    out("full_f2i", {"op": "full", "shape": [3], "dtype": "int64", "value": -2.75},
        np.full(3, -2, np.int64))
    out("ar_i", {"op": "arange", "start": -5, "stop": 17, "step": 3, "chunks": 3,
                 "dtype": "int64"}, np.arange(-5, 17, 3, dtype=np.int64))
    out("ar_id", {"op": "arange", "start": 10, "stop": -4, "step": -4, "chunks": 2,
                  "dtype": "int64"}, np.arange(10, -4, -4, dtype=np.int64))
    return v, arrays, want


def gen(d):
    v, arrays, want = program()
    for n in ("I", "F", "B", "G", "J", "P", "K"):
        np.save(os.path.join(d, n + ".npy"), v[n])
    prog = {"tessera": 1, "arrays": arrays, "outputs": {n: n + ".npy" for n in want}}
    with open(os.path.join(d, "prog.json"), "w") as f:
        json.dump(prog, f)


def check(d):
    _, _, want = program()
    bad = 0
    for n, w in want.items():
        try:
            got = np.load(os.path.join(d, n + ".npy"))
        except Exception as e:  # noqa: BLE001
            print("%s: cannot read: %s" % (n, e))
            bad += 1
            continue
        if got.dtype != w.dtype or got.shape != w.shape:
            print("%s: got %s%s, want %s%s" % (n, got.dtype, got.shape, w.dtype, w.shape))
            bad += 1
            continue
        if w.dtype.kind == "f":
            rtol = 2e-6 if w.dtype == np.float32 else 1e-9 if n.startswith("red_mean") else 1e-13
            ok = np.allclose(got, w, rtol=rtol, atol=0, equal_nan=True) and \
                np.array_equal(np.isinf(got), np.isinf(w)) and \
                np.array_equal(np.signbit(got[np.isinf(got)]), np.signbit(w[np.isinf(w)]))
        else:
            ok = np.array_equal(got, w)
        if not ok:
            print("%s: values differ\n got  %r\n want %r" % (n, got.ravel()[:40], w.ravel()[:40]))
            bad += 1
    print("checked %d arrays, %d wrong" % (len(want), bad))
    return 1 if bad else 0


def same(d1, d2):
    _, _, want = program()
    bad = 0
    for n in want:
        with open(os.path.join(d1, n + ".npy"), "rb") as f1, \
                open(os.path.join(d2, n + ".npy"), "rb") as f2:
            if f1.read() != f2.read():
                print("%s differs between the runs" % n)
                bad += 1
    return 1 if bad else 0


ZI = (np.arange(35, dtype=np.int64).reshape(5, 7) * (2**40 + 1)) - 2**60
ZB = np.arange(35).reshape(5, 7) % 3 == 0


def zgen(d):
    import zarr
    z = zarr.open(os.path.join(d, "in_i.zarr"), mode="w", shape=(5, 7), chunks=(2, 3), dtype="<i8")
    z[:] = ZI
    z = zarr.open(os.path.join(d, "in_b.zarr"), mode="w", shape=(5, 7), chunks=(3, 3), dtype="|b1")
    z[:] = ZB
    prog = {"tessera": 1, "arrays": {
        "i": {"op": "load", "path": "in_i.zarr", "chunks": [2, 4]},
        "b": {"op": "load", "path": "in_b.zarr"},
        "w": {"op": "where", "args": ["b", "i", 0]},
        "nb": {"op": "logical_not", "args": ["b"]},
        "s": {"op": "sum", "args": ["i"], "axis": 0}},
        "outputs": {"w": {"path": "w.zarr"}, "nb": {"path": "nb.zarr"}, "i": "i.npy",
                    "b": "b.npy", "s": "s.npy"}}
    with open(os.path.join(d, "zprog.json"), "w") as f:
        json.dump(prog, f)


def zcheck(d):
    import zarr
    want = {"w.zarr": np.where(ZB, ZI, 0), "nb.zarr": ~ZB, "i.npy": ZI, "b.npy": ZB,
            "s.npy": ZI.sum(axis=0)}
    bad = 0
    for n, w in want.items():
        p = os.path.join(d, n)
        got = zarr.open(p, "r")[:] if n.endswith(".zarr") else np.load(p)
        if got.dtype != w.dtype or not np.array_equal(got, w):
            print("%s: got %s %r, want %s %r" % (n, got.dtype, got, w.dtype, w))
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "zgen":
        zgen(sys.argv[2])
    elif sys.argv[1] == "zcheck":
        sys.exit(zcheck(sys.argv[2]))
    elif sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif sys.argv[1] == "check":
        sys.exit(check(sys.argv[2]))
    else:
        sys.exit(same(sys.argv[2], sys.argv[3]))
