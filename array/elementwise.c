/* Elementwise constructors beyond the table's unary and binary ops: where (three operands, X and
 * Y possibly numbers) and clip (a maximum then a minimum with weak scalars). Shapes, grids and
 * rechunks come from tsr__array_broadcast (array.c); dtypes from promote.c. */
#include <math.h>

#include "array/array.h"

/* The dtype a lone number takes, as NumPy 2 gives a Python int or float (both X and Y scalars). */
static tsr_dtype scalar_dtype(int is_float) {
    return is_float ? TSR_FLOAT64 : TSR_INT64;
}

/* where with X (Y) the number xs (ys) where x (y) is NULL; xi (yi), when not NULL, is that
 * integer exactly. */
static int where_impl(tsr_array *cond, tsr_array *x, double xs, int xs_is_float, const int64_t *xi,
                      tsr_array *y, double ys, int ys_is_float, const int64_t *yi,
                      tsr_array **out) {
    if (!cond)
        return tsr__fail(x   ? x->client
                         : y ? y->client
                             : NULL,
                         TSR_EINVALID, "where: condition is NULL");
    tsr_client *c = cond->client;
    if (!out) return tsr__fail(c, TSR_EINVALID, "where: out is NULL");
    if ((x && x->client != c) || (y && y->client != c))
        return tsr__fail(c, TSR_EINVALID, "where: operands belong to different clients");
    tsr_dtype dtype;
    if (x && y)
        dtype = tsr__promote(x->dtype, y->dtype);
    else if (x)
        dtype = tsr__promote_weak(x->dtype, ys_is_float);
    else if (y)
        dtype = tsr__promote_weak(y->dtype, xs_is_float);
    else
        dtype = tsr__promote(scalar_dtype(xs_is_float), scalar_dtype(ys_is_float));
    tsr_array *ops[3] = {cond, NULL, NULL};
    int n = 1;
    if (x) ops[n++] = x;
    if (y) ops[n++] = y;
    int rc = tsr__array_broadcast(c, "where", TSR_A_WHERE, 0, ops, n, dtype, out);
    if (rc < 0) return rc;
    (*out)->scalar_mask = (x ? 0 : 1) | (y ? 0 : 2);
    (*out)->value = x ? 0 : xs;
    (*out)->value2 = y ? 0 : ys;
    (*out)->has_ivalue = !x && xi;
    (*out)->ivalue = !x && xi ? *xi : 0;
    (*out)->has_ivalue2 = !y && yi;
    (*out)->ivalue2 = !y && yi ? *yi : 0;
    return 0;
}

int tsr_where_scalars(tsr_array *cond, tsr_array *x, double xs, int xs_is_float, tsr_array *y,
                      double ys, int ys_is_float, tsr_array **out) {
    return where_impl(cond, x, xs, xs_is_float, NULL, y, ys, ys_is_float, NULL, out);
}

int tsr_where_int64(tsr_array *cond, tsr_array *x, const int64_t *xs, tsr_array *y,
                    const int64_t *ys, tsr_array **out) {
    if ((!x && !xs) || (!y && !ys))
        return tsr__fail(cond ? cond->client : NULL, TSR_EINVALID,
                         "where: an operand is neither an array nor a number");
    return where_impl(cond, x, x ? 0 : (double)*xs, 0, x ? NULL : xs, y, y ? 0 : (double)*ys, 0,
                      y ? NULL : ys, out);
}

int tsr_where(tsr_array *cond, tsr_array *x, tsr_array *y, tsr_array **out) {
    if (!x || !y)
        return tsr__fail(cond ? cond->client : NULL, TSR_EINVALID, "where: operand is NULL");
    return tsr_where_scalars(cond, x, 0, 0, y, 0, 0, out);
}

/* clip with min (max) exactly the integer *imin (*imax) where that is not NULL. */
static int clip_impl(tsr_array *x, const double *min, const double *max, int float_mask,
                     const int64_t *imin, const int64_t *imax, tsr_array **out) {
    if (!x) return tsr__fail(NULL, TSR_EINVALID, "clip: operand is NULL");
    if (!out) return tsr__fail(x->client, TSR_EINVALID, "clip: out is NULL");
    if (!min && !max)
        return tsr__fail(x->client, TSR_EINVALID,
                         "clip of %s: at least one of min and max must be given",
                         tsr_array_name(x));
    /* numpy.clip is minimum(maximum(x, min), max): NaNs of x propagate, min > max gives max. */
    tsr_array *lo = NULL, *r = NULL;
    int rc = 0;
    if (imin)
        rc = tsr_binary_scalar_int64(TSR_MAXIMUM, x, *imin, 0, &lo);
    else if (min)
        rc = tsr_binary_scalar_kind(TSR_MAXIMUM, x, *min, float_mask & 1, 0, &lo);
    if (rc < 0) return rc;
    if (imax)
        rc = tsr_binary_scalar_int64(TSR_MINIMUM, lo ? lo : x, *imax, 0, &r);
    else if (max)
        rc = tsr_binary_scalar_kind(TSR_MINIMUM, lo ? lo : x, *max, (float_mask >> 1) & 1, 0, &r);
    else
        r = lo, lo = NULL;
    if (lo) tsr_array_free(lo); /* r holds its own reference */
    if (rc < 0) return rc;
    r->opname = "clip";
    *out = r;
    return 0;
}

int tsr_clip(tsr_array *x, const double *min, const double *max, int float_mask, tsr_array **out) {
    return clip_impl(x, min, max, float_mask, NULL, NULL, out);
}

int tsr_clip_int64(tsr_array *x, const int64_t *min, const int64_t *max, tsr_array **out) {
    double dmin = min ? (double)*min : 0, dmax = max ? (double)*max : 0;
    return clip_impl(x, min ? &dmin : NULL, max ? &dmax : NULL, 0, min, max, out);
}
