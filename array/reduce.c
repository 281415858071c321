/* The reduction and scan constructors: tsr_reduce_ex (every reduction, with keepdims and ddof;
 * tsr_reduce is its default) and tsr_scan (cumsum, cumprod). Owns the argument checks and NumPy's
 * result shapes and dtypes; lowering is lower.c's (sum, mean, max, min) and lower_reduce.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"

static const char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, size, "(");
    for (int ax = 0; ax < ndim && n < size; ax++)
        n += (size_t)snprintf(buf + n, size - n, ax ? ",%lld" : "%lld", (long long)shape[ax]);
    if (n < size) snprintf(buf + n, size - n, ndim == 1 ? ",)" : ")");
    return buf;
}

/* Normalises axis ax of x (negative counts from the end) into *out, or fails naming op and x. */
static int norm_axis(tsr_array *x, const char *op, int ax, int *out) {
    char sb[256];
    int a = ax < 0 ? ax + x->ndim : ax;
    if (a < 0 || a >= x->ndim)
        return tsr__fail(x->client, TSR_EINVALID,
                         "%s of %s: axis %d is out of bounds for an array of shape %s", op,
                         tsr_array_name(x), ax, shape_str(sb, sizeof sb, x->ndim, x->shape));
    *out = a;
    return 0;
}

void tsr_reduce_options_default(tsr_reduce_options *o) {
    if (o) memset(o, 0, sizeof *o);
}

/* The result dtype of reduction op over x (NEP 50, SPEC §2). */
static tsr_dtype reduce_dtype(int op, tsr_dtype x) {
    int fl = x == TSR_FLOAT64 || x == TSR_FLOAT32;
    switch (op) {
    case TSR_PROD:
        return fl ? x : TSR_INT64;
    case TSR_ANY:
    case TSR_ALL:
        return TSR_BOOL;
    case TSR_VAR:
    case TSR_STD:
        return fl ? x : TSR_FLOAT64;
    case TSR_ARGMAX:
    case TSR_ARGMIN:
        return TSR_INT64;
    default:
        return tsr__reduce_dtype(op, x);
    }
}

int tsr_reduce_ex(tsr_reduce_op op, tsr_array *x, const int *axes, int naxes,
                  const tsr_reduce_options *opts, tsr_array **out) {
    if (!x) return tsr__fail(NULL, TSR_EINVALID, "reduce: operand is NULL");
    if (!out) return tsr__fail(x->client, TSR_EINVALID, "reduce: out is NULL");
    *out = NULL;
    char sb[256];
    const char *name = tsr_reduce_name(op);
    if (!name) return tsr__fail(x->client, TSR_EINVALID, "unknown reduction %d", (int)op);
    tsr_reduce_options o;
    tsr_reduce_options_default(&o);
    if (opts) o = *opts;
    if (o.ddof < 0)
        return tsr__fail(x->client, TSR_EINVALID, "%s of %s: ddof must be >= 0, got %d", name,
                         tsr_array_name(x), o.ddof);
    int arg = op == TSR_ARGMAX || op == TSR_ARGMIN;
    int red[TSR_MAX_NDIM], nred = 0, reduced[TSR_MAX_NDIM] = {0};
    if (!axes) {
        for (int ax = 0; ax < x->ndim; ax++) red[nred++] = ax;
    } else {
        if (naxes < 0 || naxes > x->ndim)
            return tsr__fail(x->client, TSR_EINVALID, "%s of %s: %d axes for an array of shape %s",
                             name, tsr_array_name(x), naxes,
                             shape_str(sb, sizeof sb, x->ndim, x->shape));
        if (arg && naxes != 1)
            return tsr__fail(x->client, TSR_EINVALID,
                             "%s of %s: takes one axis or none (the flat index), got %d", name,
                             tsr_array_name(x), naxes);
        for (int k = 0; k < naxes; k++) {
            int ax = 0;
            int rc = norm_axis(x, name, axes[k], &ax);
            if (rc < 0) return rc;
            if (reduced[ax])
                return tsr__fail(x->client, TSR_EINVALID, "%s of %s: repeated axis %d", name,
                                 tsr_array_name(x), axes[k]);
            reduced[ax] = 1;
        }
        for (int ax = 0; ax < x->ndim; ax++)
            if (reduced[ax]) red[nred++] = ax; /* ascending */
    }
    int64_t count = 1;
    for (int k = 0; k < nred; k++) {
        reduced[red[k]] = 1;
        count *= x->shape[red[k]];
    }
    int is2 = (int)op >= TSR__REDUCE_COUNT, fn = is2 ? (int)op - TSR__REDUCE_COUNT : (int)op;
    int identity = is2 ? tsr__reduce2_has_identity(fn) : tsr__reduce_has_identity(fn);
    if (count == 0 && !identity) {
        if (arg)
            return tsr__fail(x->client, TSR_ESHAPE,
                             "%s of %s: attempt to get %s of an empty sequence (shape %s)", name,
                             tsr_array_name(x), name, shape_str(sb, sizeof sb, x->ndim, x->shape));
        for (int k = 0; k < nred; k++)
            if (x->shape[red[k]] == 0)
                return tsr__fail(x->client, TSR_ESHAPE,
                                 "%s of %s: zero-size array to reduction operation %s which has "
                                 "no identity (shape %s, axis %d)",
                                 name, tsr_array_name(x), tsr__reduce_ufunc(fn),
                                 shape_str(sb, sizeof sb, x->ndim, x->shape), red[k]);
    }
    /* Result: the kept axes (and, with keepdims, the reduced ones as extent-1 single chunks). */
    int64_t shape[TSR_MAX_NDIM], n[TSR_MAX_NDIM], one = 1, *one_p = &one;
    int64_t *sizes[TSR_MAX_NDIM];
    int nd = 0;
    for (int ax = 0; ax < x->ndim; ax++) {
        if (reduced[ax] && !o.keepdims) continue;
        shape[nd] = reduced[ax] ? 1 : x->shape[ax];
        sizes[nd] = reduced[ax] ? one_p : x->chunks[ax];
        n[nd++] = reduced[ax] ? 1 : x->numchunks[ax];
    }
    tsr_array *a = tsr__array_new(x->client, name, reduce_dtype((int)op, x->dtype), nd, shape);
    if (!a) return tsr__fail(x->client, -ENOMEM, "out of memory");
    a->aop = is2 ? TSR_A_REDUCE2 : TSR_A_REDUCE;
    a->fn = fn;
    a->keepdims = o.keepdims != 0;
    a->ddof = o.ddof;
    int rc = tsr__array_add_arg(a, x);
    if (rc < 0) return tsr__array_discard(a, rc);
    memcpy(a->axes, red, (size_t)nred * sizeof *red);
    a->naxes = nred;
    rc = tsr__array_set_chunk_sizes(a, sizes, n);
    if (rc < 0) return tsr__array_discard(a, rc);
    if (!tsr__array_named(a)) return -ENOMEM;
    *out = a;
    return 0;
}

/* ---- scans ----------------------------------------------------------------------------------- */

/* x rechunked so that each chunk is a run of whole rows (one chunk on every axis but the first),
 * with about as many elements per chunk as x's first chunk has; NULL in *rows when x's chunks
 * already are (or x is empty or has under two axes). The caller frees *rows. */
static int whole_rows(tsr_array *x, tsr_array **rows) {
    int split = 0;
    *rows = NULL;
    for (int ax = 1; ax < x->ndim; ax++) split |= x->numchunks[ax] > 1;
    if (!split) return 0;
    int64_t row = 1, first = 1, ch[TSR_MAX_NDIM];
    for (int ax = 0; ax < x->ndim; ax++) first *= x->chunks[ax][0];
    for (int ax = 1; ax < x->ndim; ax++) row *= x->shape[ax];
    ch[0] = TSR__MAX(1, TSR__MIN(x->shape[0], first / (row ? row : 1)));
    for (int ax = 1; ax < x->ndim; ax++) ch[ax] = TSR__MAX(1, x->shape[ax]);
    return tsr_rechunk(x, ch, rows);
}

int tsr_scan(tsr_scan_op op, tsr_array *x, int axis, int flatten, tsr_array **out) {
    if (!x) return tsr__fail(NULL, TSR_EINVALID, "scan: operand is NULL");
    if (!out) return tsr__fail(x->client, TSR_EINVALID, "scan: out is NULL");
    *out = NULL;
    const char *name = tsr__scan_name((int)op);
    if (!name) return tsr__fail(x->client, TSR_EINVALID, "unknown scan %d", (int)op);
    tsr_dtype dtype = (tsr_dtype)tsr__scan_dtype(x->dtype);
    if (!flatten) {
        int ax = 0;
        int rc = norm_axis(x, name, axis, &ax);
        if (rc < 0) return rc;
        tsr_array *a = tsr__array_new(x->client, name, dtype, x->ndim, x->shape);
        if (!a) return tsr__fail(x->client, -ENOMEM, "out of memory");
        a->aop = TSR_A_SCAN;
        a->fn = (int)op;
        a->axes[0] = ax;
        a->naxes = 1;
        rc = tsr__array_add_arg(a, x);
        if (rc == 0) rc = tsr__array_set_chunk_sizes(a, x->chunks, x->numchunks);
        if (rc < 0) return tsr__array_discard(a, rc);
        if (!tsr__array_named(a)) return -ENOMEM;
        *out = a;
        return 0;
    }
    int64_t total = 1;
    for (int ax = 0; ax < x->ndim; ax++) total *= x->shape[ax];
    tsr_array *rows = NULL; /* nothing to scan: the one empty chunk comes from x's first */
    int rc = total ? whole_rows(x, &rows) : 0;
    if (rc < 0) return rc;
    tsr_array *src = rows ? rows : x;
    tsr_array *a = tsr__array_new(x->client, name, dtype, 1, &total);
    if (!a) {
        tsr_array_free(rows);
        return tsr__fail(x->client, -ENOMEM, "out of memory");
    }
    a->aop = TSR_A_SCAN;
    a->fn = (int)op;
    a->naxes = 0;
    rc = tsr__array_add_arg(a, src);
    /* One chunk of a per chunk of src along its first axis (a 0-d src: one chunk of 1). */
    int64_t row = 1, nch = src->ndim ? src->numchunks[0] : 1;
    for (int ax = 1; ax < src->ndim; ax++) row *= src->shape[ax];
    int64_t *sizes = rc == 0 ? malloc((size_t)nch * sizeof *sizes) : NULL;
    if (rc == 0 && !sizes) rc = tsr__fail(x->client, -ENOMEM, "out of memory");
    for (int64_t k = 0; rc == 0 && k < nch; k++)
        sizes[k] = total == 0 ? 0 : src->ndim ? src->chunks[0][k] * row : 1;
    if (rc == 0) rc = tsr__array_set_chunk_sizes(a, &sizes, total == 0 ? &(int64_t){1} : &nch);
    free(sizes);
    tsr_array_free(rows); /* a holds its own reference */
    if (rc < 0) return tsr__array_discard(a, rc);
    if (!tsr__array_named(a)) return -ENOMEM;
    *out = a;
    return 0;
}
