/* Result dtypes: NumPy 2's promotion rules (NEP 50) for the four dtypes, as SPEC §2 ("Operations,
 * second set") states them. Two arrays promote as numpy.result_type; a program-file number is a
 * weak scalar (it never widens an array of its own kind or higher); each elementwise operation
 * and reduction then says what it makes of the promoted dtype (a true division of integers gives
 * float64, a comparison gives bool). Pure functions; docs/arrays.md ("Dtypes and promotion")
 * lists the same rules as tables. */
#include "array/array.h"

/* The kind order bool < int64 < floats; within floats, float32 < float64. */
static int kind(tsr_dtype t) {
    return t == TSR_BOOL ? 0 : t == TSR_INT64 ? 1 : 2;
}

static int is_float(tsr_dtype t) {
    return t == TSR_FLOAT64 || t == TSR_FLOAT32;
}

tsr_dtype tsr__promote(tsr_dtype x, tsr_dtype y) {
    if (x == y) return x;
    if (kind(x) != kind(y)) {
        tsr_dtype hi = kind(x) > kind(y) ? x : y, lo = kind(x) > kind(y) ? y : x;
        /* int64 with float32 needs float64 to hold every int64 as well as float32 does. */
        if (hi == TSR_FLOAT32 && lo == TSR_INT64) return TSR_FLOAT64;
        return hi;
    }
    return TSR_FLOAT64; /* float32 with float64 */
}

tsr_dtype tsr__promote_weak(tsr_dtype x, int scalar_is_float) {
    if (scalar_is_float) return is_float(x) ? x : TSR_FLOAT64;
    return x == TSR_BOOL ? TSR_INT64 : x;
}

int tsr__unary_dtype(int fn, tsr_dtype x, tsr_dtype *out) {
    switch (fn) {
    case TSR_NEG:
    case TSR_SIGN:
        if (x == TSR_BOOL) return TSR_EINVALID; /* NumPy: no boolean negative or sign */
        *out = x;
        return 0;
    case TSR_ABS:
        *out = x;
        return 0;
    case TSR_FLOOR:
    case TSR_CEIL:
    case TSR_ROUND:
    case TSR_SQUARE:
        *out = x == TSR_BOOL ? TSR_INT64 : x;
        return 0;
    case TSR_LOGICAL_NOT:
    case TSR_ISNAN:
    case TSR_ISFINITE:
        *out = TSR_BOOL;
        return 0;
    default: /* exp, log, sqrt, trigonometric, log1p, expm1: floats */
        if (fn < 0 || fn >= TSR__UNARY_COUNT) return TSR_EINVALID;
        *out = is_float(x) ? x : TSR_FLOAT64;
        return 0;
    }
}

int tsr__binary_dtype(int fn, tsr_dtype r, tsr_dtype *out) {
    if (fn < 0 || fn >= TSR__BINARY_COUNT) return TSR_EINVALID;
    if (fn >= TSR_LESS) {
        *out = TSR_BOOL;
        return 0;
    }
    switch (fn) {
    case TSR_SUB:
        if (r == TSR_BOOL) return TSR_EINVALID; /* NumPy: boolean subtract is not supported */
        break;
    case TSR_DIV:
        if (!is_float(r)) r = TSR_FLOAT64;
        break;
    case TSR_POW:
        if (r == TSR_BOOL) r = TSR_INT64; /* NumPy gives int8; int64 holds the same values */
        break;
    default:
        break;
    }
    *out = r;
    return 0;
}

tsr_dtype tsr__reduce_dtype(int fn, tsr_dtype x) {
    switch (fn) {
    case TSR_SUM:
        return is_float(x) ? x : TSR_INT64;
    case TSR_MEAN:
        return is_float(x) ? x : TSR_FLOAT64;
    default:
        return x;
    }
}
