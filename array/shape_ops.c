/* The structural operations' constructors (slice, take, concatenate, stack, reshape, squeeze,
 * expand_dims): argument checks with NumPy's messages, shape and dtype inference, and the output
 * chunk grids, which decide what lowering (lower_shape.c) moves: a grid built from the operand's
 * own chunk boundaries lets each output chunk come from one operand chunk. Nothing here builds
 * tasks or talks to a cluster; every user mistake is a negative code and a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"

/* NumPy's spelling of a shape: "(3,4)", "(5,)", "()". */
static const char *shp(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, size, "(");
    for (int ax = 0; ax < ndim && n < size; ax++)
        n += (size_t)snprintf(buf + n, size - n, ax ? ",%lld" : "%lld", (long long)shape[ax]);
    if (n < size) snprintf(buf + n, size - n, ndim == 1 ? ",)" : ")");
    return buf;
}

#define START(x, out, what)                                                                        \
    do {                                                                                           \
        if (!(x)) return tsr__fail(NULL, TSR_EINVALID, "%s: operand is NULL", (what));             \
        if (!(out)) return tsr__fail((x)->client, TSR_EINVALID, "%s: out is NULL", (what));        \
        *(out) = NULL;                                                                             \
    } while (0)

/* Gives a (holding its operands) the grid sizes/n and its name; *out receives it. */
static int finish(tsr_array *a, int64_t *const *sizes, const int64_t *n, tsr_array **out) {
    int rc = tsr__array_set_chunk_sizes(a, sizes, n);
    if (rc < 0) return tsr__array_discard(a, rc);
    if (!tsr__array_named(a)) return -ENOMEM;
    *out = a;
    return 0;
}

/* An axis counted from the end when negative, checked against ndim (NumPy's message). */
static int norm_axis(tsr_client *c, const char *what, const char *name, int axis, int ndim,
                     int *out) {
    int ax = axis < 0 ? axis + ndim : axis;
    if (ax < 0 || ax >= ndim)
        return tsr__fail(c, TSR_EINVALID,
                         "%s of %s: axis %d is out of bounds for array of dimension %d", what, name,
                         axis, ndim);
    *out = ax;
    return 0;
}

/* ---- slice ---------------------------------------------------------------------------------- */

/* NumPy's PySlice_AdjustIndices: the first index and the length of start:stop:step on an axis
 * of extent n. step is neither 0 nor INT64_MIN. */
static int64_t slice_len(const tsr_index *it, int64_t n, int64_t *first) {
    int64_t step = it->step, s, e;
    if (step > 0) {
        s = it->has_start ? it->start : 0;
        e = it->has_stop ? it->stop : n;
        s = s < 0 ? TSR__MAX(s + n, 0) : TSR__MIN(s, n);
        e = e < 0 ? TSR__MAX(e + n, 0) : TSR__MIN(e, n);
        *first = s;
        return e > s ? (e - s - 1) / step + 1 : 0;
    }
    s = it->has_start ? it->start : n - 1;
    e = it->has_stop ? it->stop : -1;
    if (it->has_start) s = s < 0 ? TSR__MAX(s + n, -1) : TSR__MIN(s, n - 1);
    if (it->has_stop) e = e < 0 ? TSR__MAX(e + n, -1) : TSR__MIN(e, n - 1);
    *first = s;
    return s > e ? (s - e - 1) / (-step) + 1 : 0;
}

/* The output chunks along one sliced axis: consecutive selected positions that fall in one
 * chunk of x make one output chunk. Writes at most x->numchunks[ax] sizes; returns the count. */
static int64_t slice_chunks(const tsr_array *x, int ax, const int64_t *o, int64_t first,
                            int64_t step, int64_t len, int64_t *sizes) {
    int64_t n = 0;
    if (len == 0) {
        sizes[n++] = 0;
        return n;
    }
    for (int64_t j = 0; j < len;) {
        int64_t g = first + j * step, c = tsr__chunk_at(o, x->numchunks[ax], g);
        int64_t cnt = step > 0 ? (o[c + 1] - 1 - g) / step + 1 : (g - o[c]) / (-step) + 1;
        cnt = TSR__MIN(cnt, len - j);
        sizes[n++] = cnt;
        j += cnt;
    }
    return n;
}

int tsr_slice(tsr_array *x, const tsr_index *index, int nindex, tsr_array **out) {
    START(x, out, "slice");
    tsr_client *c = x->client;
    const char *name = tsr_array_name(x);
    if (nindex < 0 || (nindex > 0 && !index))
        return tsr__fail(c, TSR_EINVALID, "slice of %s: invalid index list", name);
    if (nindex > x->ndim)
        return tsr__fail(c, TSR_EINVALID,
                         "slice of %s: too many indices for array: array is %d-dimensional, but "
                         "%d were indexed",
                         name, x->ndim, nindex);
    int64_t first[TSR_MAX_NDIM] = {0}, step[TSR_MAX_NDIM] = {0}, len[TSR_MAX_NDIM] = {0};
    int64_t shape[TSR_MAX_NDIM];
    int nd = 0;
    for (int ax = 0; ax < x->ndim; ax++) {
        int64_t n = x->shape[ax];
        const tsr_index *it = ax < nindex ? &index[ax] : NULL;
        if (it && it->kind == TSR_INDEX_INT) {
            if (it->start < -n || it->start >= n)
                return tsr__fail(c, TSR_EINVALID,
                                 "slice of %s: index %lld is out of bounds for axis %d with size "
                                 "%lld",
                                 name, (long long)it->start, ax, (long long)n);
            first[ax] = it->start < 0 ? it->start + n : it->start;
            step[ax] = 0;
            continue;
        }
        if (it && it->kind != TSR_INDEX_RANGE)
            return tsr__fail(c, TSR_EINVALID, "slice of %s: unknown index kind %d on axis %d", name,
                             (int)it->kind, ax);
        if (it && it->step == 0)
            return tsr__fail(c, TSR_EINVALID, "slice of %s: slice step cannot be zero (axis %d)",
                             name, ax);
        if (it && it->step == INT64_MIN)
            return tsr__fail(c, TSR_EINVALID, "slice of %s: step out of range on axis %d", name,
                             ax);
        tsr_index whole = {.kind = TSR_INDEX_RANGE, .step = 1};
        step[ax] = it ? it->step : 1;
        len[ax] = slice_len(it ? it : &whole, n, &first[ax]);
        if (len[ax] == 0) first[ax] = 0;
        shape[nd++] = len[ax];
    }
    tsr_array *a = tsr__array_new(c, "slice", x->dtype, nd, shape);
    if (!a) return tsr__fail(c, -ENOMEM, "out of memory");
    a->aop = TSR_A_SLICE;
    (void)tsr__array_add_arg(a, x);
    memcpy(a->sl_start, first, sizeof first);
    memcpy(a->sl_step, step, sizeof step);
    int64_t *sizes[TSR_MAX_NDIM] = {0}, n[TSR_MAX_NDIM];
    int rc = 0;
    for (int ax = 0, oa = 0; ax < x->ndim && rc == 0; ax++) {
        if (step[ax] == 0) continue;
        int64_t *o = malloc((size_t)(x->numchunks[ax] + 1) * sizeof *o);
        sizes[oa] = malloc((size_t)x->numchunks[ax] * sizeof **sizes);
        if (!o || !sizes[oa]) {
            free(o);
            rc = tsr__fail(c, -ENOMEM, "out of memory");
            break;
        }
        o[0] = 0;
        for (int64_t k = 0; k < x->numchunks[ax]; k++) o[k + 1] = o[k] + x->chunks[ax][k];
        n[oa] = slice_chunks(x, ax, o, first[ax], step[ax], len[ax], sizes[oa]);
        free(o);
        oa++;
    }
    rc = rc < 0 ? tsr__array_discard(a, rc) : finish(a, sizes, n, out);
    for (int k = 0; k < nd; k++) free(sizes[k]);
    return rc;
}

/* ---- reshape, squeeze, expand_dims ---------------------------------------------------------- */

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* The grid of a reshape of x (operand x2, maybe a hidden rechunk of x) to shape[nd], whose
 * element count equals x's. Axes of length 1 aside, the axes of both shapes fall into groups
 * of equal products (walking both from the left). In a group, an output chunk is a block of
 * whole rows: x's chunks there must span the group's later axes whole, and their boundaries
 * along its first axis, counted in elements of the group, must fall on multiples of the
 * output's row length Q (the product of the group's later output axes). Where they do not, x is
 * rechunked: later axes whole, the first axis in runs of a multiple of Q / gcd(P, Q) rows (P:
 * the product of the group's later input axes) about as many elements as x's first chunk. Each
 * output chunk is then one chunk of x2, its elements in the same C order. map[k]: the output
 * axis whose chunk index is x2's along axis k, or -1. */
typedef struct rgrid {
    int64_t *osizes[TSR_MAX_NDIM], on[TSR_MAX_NDIM]; /* the output grid (owned sizes) */
    int64_t *isizes[TSR_MAX_NDIM], in[TSR_MAX_NDIM]; /* x2's (owned where rechunked) */
    int64_t whole[TSR_MAX_NDIM];                     /* x's extents, for one-chunk axes */
    int iowned[TSR_MAX_NDIM];
    int rechunk;
    int map[TSR_MAX_NDIM];
} rgrid;

static void rgrid_free(rgrid *g) {
    for (int k = 0; k < TSR_MAX_NDIM; k++) {
        free(g->osizes[k]);
        if (g->iowned[k]) free(g->isizes[k]);
    }
}

static int one_chunk(rgrid *g, int oax, int64_t extent) {
    g->osizes[oax] = malloc(sizeof **g->osizes);
    if (!g->osizes[oax]) return -ENOMEM;
    g->osizes[oax][0] = extent;
    g->on[oax] = 1;
    return 0;
}

static int reshape_grid(const tsr_array *x, int nd, const int64_t *shape, rgrid *g) {
    int64_t total = 1;
    for (int k = 0; k < x->ndim; k++) {
        total *= x->shape[k];
        g->whole[k] = x->shape[k];
        g->isizes[k] = x->chunks[k];
        g->in[k] = x->numchunks[k];
        g->map[k] = -1;
    }
    int ii[TSR_MAX_NDIM], jj[TSR_MAX_NDIM], ni = 0, nj = 0;
    for (int k = 0; k < x->ndim; k++)
        if (x->shape[k] != 1) ii[ni++] = k;
    for (int k = 0; k < nd; k++) {
        if (shape[k] != 1) jj[nj++] = k;
        if (total == 0 || shape[k] == 1)
            if (one_chunk(g, k, shape[k]) < 0) return -ENOMEM;
    }
    if (total == 0) return 0; /* one empty chunk, made from x's first */
    for (int i = 0, j = 0; i < ni; i++, j++) {
        int i0 = i, j0 = j;
        int64_t pi = x->shape[ii[i]], po = shape[jj[j]];
        while (pi != po) {
            if (pi < po)
                pi *= x->shape[ii[++i]];
            else
                po *= shape[jj[++j]];
        }
        int f = ii[i0], of = jj[j0];
        int64_t P = pi / x->shape[f], Q = po / shape[of], elems = x->chunks[f][0];
        int whole = 1;
        for (int k = i0 + 1; k <= i; k++) {
            whole &= x->numchunks[ii[k]] == 1;
            elems *= x->chunks[ii[k]][0];
        }
        int64_t edge = 0, fits = 1;
        for (int64_t k = 0; k < x->numchunks[f]; k++) {
            edge += x->chunks[f][k];
            fits &= (edge * P) % Q == 0;
        }
        if (!whole || !fits) {
            g->rechunk = 1;
            for (int k = i0 + 1; k <= i; k++) {
                g->isizes[ii[k]] = &g->whole[ii[k]];
                g->in[ii[k]] = 1;
            }
        }
        if (!fits) {
            int64_t u = Q / gcd64(P, Q), rows = TSR__MAX(elems / P / u, 1) * u;
            int64_t ext = x->shape[f], nc = (ext + rows - 1) / rows;
            g->isizes[f] = malloc((size_t)nc * sizeof **g->isizes);
            if (!g->isizes[f]) return -ENOMEM;
            g->iowned[f] = 1;
            g->in[f] = nc;
            for (int64_t k = 0; k < nc; k++) g->isizes[f][k] = TSR__MIN(rows, ext - k * rows);
        }
        g->osizes[of] = malloc((size_t)g->in[f] * sizeof **g->osizes);
        if (!g->osizes[of]) return -ENOMEM;
        g->on[of] = g->in[f];
        for (int64_t k = 0; k < g->in[f]; k++) g->osizes[of][k] = g->isizes[f][k] * P / Q;
        for (int k = j0 + 1; k <= j; k++)
            if (one_chunk(g, jj[k], shape[jj[k]]) < 0) return -ENOMEM;
        g->map[f] = of;
    }
    return 0;
}

/* x reshaped to shape[nd] (checked: the same element count), named after opname. */
static int reshape_to(tsr_array *x, const char *opname, int nd, const int64_t *shape,
                      tsr_array **out) {
    tsr_client *c = x->client;
    rgrid g;
    memset(&g, 0, sizeof g);
    tsr_array *x2 = x, *owned = NULL;
    int rc = reshape_grid(x, nd, shape, &g);
    if (rc < 0) rc = tsr__fail(c, rc, "out of memory");
    if (rc == 0 && g.rechunk) {
        rc = tsr__array_hidden_rechunk(x, g.isizes, g.in, &owned);
        x2 = owned;
    }
    tsr_array *a = NULL;
    if (rc == 0 && !(a = tsr__array_new(c, opname, x->dtype, nd, shape)))
        rc = tsr__fail(c, -ENOMEM, "out of memory");
    if (rc == 0) {
        a->aop = TSR_A_RESHAPE;
        (void)tsr__array_add_arg(a, x2);
        memcpy(a->axes, g.map, sizeof g.map);
        a->naxes = x->ndim;
        rc = finish(a, g.osizes, g.on, out);
    }
    tsr__array_unref(owned); /* the new array holds its own reference */
    rgrid_free(&g);
    return rc;
}

int tsr_reshape(tsr_array *x, int ndim, const int64_t *shape, tsr_array **out) {
    START(x, out, "reshape");
    tsr_client *c = x->client;
    char sb[256];
    if (ndim < 0 || ndim > TSR_MAX_NDIM || (ndim > 0 && !shape))
        return tsr__fail(c, TSR_EINVALID, "reshape of %s: the new shape must have 0 to %d axes",
                         tsr_array_name(x), TSR_MAX_NDIM);
    int64_t total = tsr_array_size(x), known = 1, sh[TSR_MAX_NDIM];
    int unknown = -1, over = 0;
    for (int k = 0; k < ndim; k++) {
        sh[k] = shape[k];
        if (shape[k] == -1) {
            if (unknown >= 0)
                return tsr__fail(c, TSR_EINVALID,
                                 "reshape of %s: can only specify one unknown dimension",
                                 tsr_array_name(x));
            unknown = k;
        } else if (shape[k] < 0) {
            return tsr__fail(c, TSR_EINVALID, "reshape of %s: negative dimension %lld on axis %d",
                             tsr_array_name(x), (long long)shape[k], k);
        } else if (__builtin_mul_overflow(known, shape[k], &known)) {
            over = 1;
        }
    }
    if (unknown >= 0 && !over && known > 0 && total % known == 0) sh[unknown] = total / known;
    if (over || (unknown >= 0 && (known == 0 || total % known)) || (unknown < 0 && known != total))
        return tsr__fail(c, TSR_ESHAPE,
                         "reshape of %s: cannot reshape array of size %lld into "
                         "shape %s",
                         tsr_array_name(x), (long long)total, shp(sb, sizeof sb, ndim, shape));
    return reshape_to(x, "reshape", ndim, sh, out);
}

int tsr_squeeze(tsr_array *x, const int *axes, int naxes, tsr_array **out) {
    START(x, out, "squeeze");
    tsr_client *c = x->client;
    int drop[TSR_MAX_NDIM] = {0};
    if (!axes) {
        for (int k = 0; k < x->ndim; k++) drop[k] = x->shape[k] == 1;
    } else {
        if (naxes < 0 || naxes > x->ndim)
            return tsr__fail(c, TSR_EINVALID, "squeeze of %s: %d axes for an array of %d",
                             tsr_array_name(x), naxes, x->ndim);
        for (int k = 0; k < naxes; k++) {
            int ax = 0;
            int rc = norm_axis(c, "squeeze", tsr_array_name(x), axes[k], x->ndim, &ax);
            if (rc < 0) return rc;
            if (drop[ax])
                return tsr__fail(c, TSR_EINVALID, "squeeze of %s: repeated axis %d",
                                 tsr_array_name(x), axes[k]);
            if (x->shape[ax] != 1)
                return tsr__fail(c, TSR_ESHAPE,
                                 "squeeze of %s: cannot select an axis to squeeze out which has "
                                 "size not equal to one (axis %d has size %lld)",
                                 tsr_array_name(x), axes[k], (long long)x->shape[ax]);
            drop[ax] = 1;
        }
    }
    int64_t sh[TSR_MAX_NDIM];
    int nd = 0;
    for (int k = 0; k < x->ndim; k++)
        if (!drop[k]) sh[nd++] = x->shape[k];
    return reshape_to(x, "squeeze", nd, sh, out);
}

int tsr_expand_dims(tsr_array *x, const int *axes, int naxes, tsr_array **out) {
    START(x, out, "expand_dims");
    tsr_client *c = x->client;
    if (naxes < 1 || !axes)
        return tsr__fail(c, TSR_EINVALID, "expand_dims of %s: no axis given", tsr_array_name(x));
    int nd = x->ndim + naxes;
    if (nd > TSR_MAX_NDIM)
        return tsr__fail(c, TSR_ESHAPE, "expand_dims of %s: %d axes; at most %d are supported",
                         tsr_array_name(x), nd, TSR_MAX_NDIM);
    int ins[TSR_MAX_NDIM] = {0};
    for (int k = 0; k < naxes; k++) {
        int ax = 0;
        int rc = norm_axis(c, "expand_dims", tsr_array_name(x), axes[k], nd, &ax);
        if (rc < 0) return rc;
        if (ins[ax])
            return tsr__fail(c, TSR_EINVALID, "expand_dims of %s: repeated axis %d",
                             tsr_array_name(x), axes[k]);
        ins[ax] = 1;
    }
    int64_t sh[TSR_MAX_NDIM];
    for (int k = 0, src = 0; k < nd; k++) sh[k] = ins[k] ? 1 : x->shape[src++];
    return reshape_to(x, "expand_dims", nd, sh, out);
}

/* ---- take ----------------------------------------------------------------------------------- */

int tsr_take(tsr_array *x, tsr_array *ind, const int *axis, tsr_array **out) {
    START(x, out, "take");
    tsr_client *c = x->client;
    char sb[256];
    if (!ind) return tsr__fail(c, TSR_EINVALID, "take of %s: indices are NULL", tsr_array_name(x));
    if (ind->client != c)
        return tsr__fail(c, TSR_EINVALID, "%s and %s belong to different clients",
                         tsr_array_name(x), tsr_array_name(ind));
    if (ind->ndim != 1 || ind->dtype != TSR_INT64)
        return tsr__fail(c, TSR_EINVALID,
                         "take of %s: the indices %s must be a 1-d int64 array, got %s with "
                         "shape %s",
                         tsr_array_name(x), tsr_array_name(ind), tsr_dtype_name(ind->dtype),
                         shp(sb, sizeof sb, ind->ndim, ind->shape));
    if (!axis && x->ndim != 1) { /* numpy.take's axis=None: from the flattened array */
        tsr_array *flat = NULL;
        int64_t all = -1;
        int rc = tsr_reshape(x, 1, &all, &flat);
        if (rc < 0) return rc;
        int zero = 0;
        rc = tsr_take(flat, ind, &zero, out);
        tsr_array_free(flat);
        return rc;
    }
    int ax = 0;
    if (x->ndim == 0)
        return tsr__fail(c, TSR_EINVALID, "take of %s: cannot take from a 0-d array along an axis",
                         tsr_array_name(x));
    if (axis) {
        int rc = norm_axis(c, "take", tsr_array_name(x), *axis, x->ndim, &ax);
        if (rc < 0) return rc;
    }
    int64_t shape[TSR_MAX_NDIM], *sizes[TSR_MAX_NDIM], n[TSR_MAX_NDIM];
    for (int k = 0; k < x->ndim; k++) {
        shape[k] = k == ax ? ind->shape[0] : x->shape[k];
        sizes[k] = k == ax ? ind->chunks[0] : x->chunks[k];
        n[k] = k == ax ? ind->numchunks[0] : x->numchunks[k];
    }
    tsr_array *a = tsr__array_new(c, "take", x->dtype, x->ndim, shape);
    if (!a) return tsr__fail(c, -ENOMEM, "out of memory");
    a->aop = TSR_A_TAKE;
    a->axes[0] = ax;
    a->naxes = 1;
    int rc = tsr__array_add_arg(a, x);
    if (rc == 0) rc = tsr__array_add_arg(a, ind);
    if (rc < 0) return tsr__array_discard(a, rc);
    return finish(a, sizes, n, out);
}

/* ---- concatenate, stack --------------------------------------------------------------------- */

static int concat(tsr_array *const *xs, int nx, int axis, const char *opname, tsr_array **out) {
    if (!xs || nx < 1 || !xs[0])
        return tsr__fail(NULL, TSR_EINVALID, "%s: need at least one array to concatenate", opname);
    tsr_array *x0 = xs[0];
    tsr_client *c = x0->client;
    if (!out) return tsr__fail(c, TSR_EINVALID, "%s: out is NULL", opname);
    *out = NULL;
    int nd = x0->ndim, ax = 0;
    if (nd == 0)
        return tsr__fail(c, TSR_ESHAPE, "%s of %s: zero-dimensional arrays cannot be concatenated",
                         opname, tsr_array_name(x0));
    int rc = norm_axis(c, opname, tsr_array_name(x0), axis, nd, &ax);
    if (rc < 0) return rc;
    tsr_dtype dtype = x0->dtype;
    int64_t total = 0, nchunks = 0;
    for (int k = 0; k < nx; k++) {
        tsr_array *x = xs[k];
        if (!x) return tsr__fail(c, TSR_EINVALID, "%s: operand %d is NULL", opname, k);
        if (x->client != c)
            return tsr__fail(c, TSR_EINVALID, "%s and %s belong to different clients",
                             tsr_array_name(x0), tsr_array_name(x));
        if (x->ndim != nd)
            return tsr__fail(c, TSR_ESHAPE,
                             "%s: all the input arrays must have same number of dimensions, but "
                             "the array at index 0 (%s) has %d dimension(s) and the array at "
                             "index %d (%s) has %d dimension(s)",
                             opname, tsr_array_name(x0), nd, k, tsr_array_name(x), x->ndim);
        for (int a = 0; a < nd; a++)
            if (a != ax && x->shape[a] != x0->shape[a])
                return tsr__fail(c, TSR_ESHAPE,
                                 "%s: all the input array dimensions except for the "
                                 "concatenation axis must match exactly, but along dimension "
                                 "%d, the array at index 0 (%s) has size %lld and the array at "
                                 "index %d (%s) has size %lld",
                                 opname, a, tsr_array_name(x0), (long long)x0->shape[a], k,
                                 tsr_array_name(x), (long long)x->shape[a]);
        if (__builtin_add_overflow(total, x->shape[ax], &total) || total > ((int64_t)1 << 60))
            return tsr__fail(c, TSR_ESHAPE, "%s: the result is too large", opname);
        if (x->shape[ax] > 0) nchunks += x->numchunks[ax];
        dtype = tsr__promote(dtype, x->dtype); /* arrays only: numpy.result_type, no weak scalar */
    }
    int64_t shape[TSR_MAX_NDIM], *sizes[TSR_MAX_NDIM], n[TSR_MAX_NDIM], bytes = 1;
    memcpy(shape, x0->shape, sizeof shape);
    shape[ax] = total;
    for (int d = 0; d < nd; d++)
        if (__builtin_mul_overflow(bytes, shape[d], &bytes)) bytes = INT64_MAX;
    if (bytes > ((int64_t)1 << 60) / (int64_t)tsr_dtype_size(dtype))
        return tsr__fail(c, TSR_ESHAPE, "%s: the result is too large", opname);
    tsr_array *a = tsr__array_new(c, opname, dtype, nd, shape);
    int64_t *axsizes = malloc((size_t)(nchunks ? nchunks : 1) * sizeof *axsizes);
    if (!a || !axsizes) {
        free(axsizes);
        if (a) tsr__array_discard(a, -ENOMEM);
        return tsr__fail(c, -ENOMEM, "out of memory");
    }
    a->aop = TSR_A_CONCATENATE;
    a->axes[0] = ax;
    a->naxes = 1;
    /* Each operand in the result's dtype and with x0's chunks on the other axes. */
    int64_t m = 0;
    for (int k = 0; k < nx && rc == 0; k++) {
        tsr_array *x = xs[k], *conv = NULL, *aligned = NULL;
        if (x->dtype != dtype && (rc = tsr_astype(x, dtype, &conv)) == 0) x = conv;
        int differs = 0;
        for (int d = 0; d < nd && rc == 0; d++) {
            sizes[d] = d == ax ? x->chunks[d] : x0->chunks[d];
            n[d] = d == ax ? x->numchunks[d] : x0->numchunks[d];
            differs |= x->numchunks[d] != n[d] ||
                       memcmp(x->chunks[d], sizes[d], (size_t)n[d] * sizeof(int64_t)) != 0;
        }
        if (rc == 0 && differs && (rc = tsr__array_hidden_rechunk(x, sizes, n, &aligned)) == 0)
            x = aligned;
        if (rc == 0) rc = tsr__array_add_arg(a, x);
        tsr_array_free(conv);
        tsr__array_unref(aligned);
        if (rc == 0 && x->shape[ax] > 0)
            for (int64_t j = 0; j < x->numchunks[ax]; j++) axsizes[m++] = x->chunks[ax][j];
    }
    if (rc < 0) {
        free(axsizes);
        return tsr__array_discard(a, rc);
    }
    if (m == 0) axsizes[m++] = 0; /* every operand is empty along axis */
    for (int d = 0; d < nd; d++) {
        sizes[d] = d == ax ? axsizes : x0->chunks[d];
        n[d] = d == ax ? m : x0->numchunks[d];
    }
    rc = finish(a, sizes, n, out);
    free(axsizes);
    return rc;
}

int tsr_concatenate(tsr_array *const *xs, int n, int axis, tsr_array **out) {
    return concat(xs, n, axis, "concatenate", out);
}

int tsr_stack(tsr_array *const *xs, int n, int axis, tsr_array **out) {
    if (!xs || n < 1 || !xs[0])
        return tsr__fail(NULL, TSR_EINVALID, "stack: need at least one array to stack");
    tsr_client *c = xs[0]->client;
    if (!out) return tsr__fail(c, TSR_EINVALID, "stack: out is NULL");
    *out = NULL;
    for (int k = 1; k < n; k++) {
        if (!xs[k]) return tsr__fail(c, TSR_EINVALID, "stack: operand %d is NULL", k);
        int same = xs[k]->ndim == xs[0]->ndim;
        for (int a = 0; same && a < xs[0]->ndim; a++) same = xs[k]->shape[a] == xs[0]->shape[a];
        if (!same) {
            char b0[256], bk[256];
            return tsr__fail(c, TSR_ESHAPE,
                             "stack: all input arrays must have the same shape, but %s has "
                             "shape %s and %s has shape %s",
                             tsr_array_name(xs[0]), shp(b0, sizeof b0, xs[0]->ndim, xs[0]->shape),
                             tsr_array_name(xs[k]), shp(bk, sizeof bk, xs[k]->ndim, xs[k]->shape));
        }
    }
    int ax = 0;
    int rc = norm_axis(c, "stack", tsr_array_name(xs[0]), axis, xs[0]->ndim + 1, &ax);
    if (rc < 0) return rc;
    tsr_array **e = calloc((size_t)n, sizeof *e);
    if (!e) return tsr__fail(c, -ENOMEM, "out of memory");
    for (int k = 0; k < n && rc == 0; k++) rc = tsr_expand_dims(xs[k], &ax, 1, &e[k]);
    if (rc == 0) rc = concat(e, n, ax, "stack", out);
    for (int k = 0; k < n; k++) tsr_array_free(e[k]);
    free(e);
    return rc;
}
