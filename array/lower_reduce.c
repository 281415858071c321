/* Lowering of issue 13's reductions (prod, any, all, var, std, argmax, argmin: TSR_A_REDUCE2) and
 * scans (cumsum, cumprod: TSR_A_SCAN). A reduction's output chunk is one REDUCE2 partial per input
 * chunk, folded by a fixed tree of COMBINE2 tasks whose root writes the result; a scan's output
 * chunk is one SCAN task that continues the output chunk before it along the axis. Parameter
 * layouts are kernels/kernels.h's. Like lower.c, this validates nothing (reduce.c did). */
#include <stdlib.h>
#include <string.h>

#include "array/lower.h"

#define FAN_IN 8 /* as lower.c's reductions */

static void desc_init(tsr_kdesc *d, int kop, int fn, int dtype, int ndim, const int64_t *shape) {
    memset(d, 0, sizeof *d);
    d->kop = (uint8_t)kop;
    d->fn = (uint8_t)fn;
    d->dtype = (uint8_t)dtype;
    d->ndim = (uint8_t)ndim;
    for (int ax = 0; ax < ndim; ax++) d->shape[ax] = shape[ax];
}

static int64_t ravel(const tsr_array *a, const int64_t *idx) {
    int64_t ci = 0;
    for (int ax = 0; ax < a->ndim; ax++) ci = ci * a->numchunks[ax] + idx[ax];
    return ci;
}

/* ---- reductions ------------------------------------------------------------------------------ */

typedef struct r2ctx {
    lctx *L;
    tsr_array *a, *x;
    int64_t ci;
    int64_t xidx[TSR_MAX_NDIM];  /* kept axes fixed by the output chunk */
    int64_t *goff[TSR_MAX_NDIM]; /* per reduced axis k: cumulative chunk offsets of x */
    int64_t cnt[24];             /* items per tree level */
    int height;
    int ndim; /* the result chunk */
    const int64_t *shape;
    int64_t plen; /* values in one partial: fields * elements of the result chunk */
    int pdtype;   /* the partials' dtype */
    int ints;     /* argmax/argmin of int64/bool values */
    double ddof;
    int root_final;  /* the tree's root writes the result (else a partial: var's first pass) */
    int64_t moments; /* var/std's second pass: the first pass's task, else -1 */
} r2ctx;

/* The REDUCE2 partial of the p-th input chunk, row-major over the reduced axes' chunk indices. */
static int64_t r2_partial(r2ctx *R, int64_t p) {
    tsr_array *a = R->a, *x = R->x;
    int r = a->naxes;
    int64_t ip[3 * TSR_MAX_NDIM], xshape[TSR_MAX_NDIM];
    for (int k = r - 1; k >= 0; k--) {
        int ax = a->axes[k];
        R->xidx[ax] = p % x->numchunks[ax];
        p /= x->numchunks[ax];
    }
    for (int k = 0; k < r; k++) {
        ip[k] = a->axes[k];
        ip[r + k] = x->shape[a->axes[k]];
        ip[2 * r + k] = R->goff[k][R->xidx[a->axes[k]]];
    }
    uint32_t deps[2];
    int rc = tsr__lower_dep(R->L, x, ravel(x, R->xidx), &deps[0]);
    if (rc < 0) return rc;
    deps[1] = (uint32_t)R->moments;
    for (int ax = 0; ax < x->ndim; ax++) xshape[ax] = x->chunks[ax][R->xidx[ax]];
    tsr_kdesc d;
    desc_init(&d, TSR_KOP_REDUCE2, a->fn, R->pdtype, 1, &R->plen);
    d.i = ip;
    d.ni = (uint32_t)(3 * r);
    return tsr__lower_add(R->L, a, R->ci, &d, deps, R->moments >= 0 ? 2 : 1, x->ndim, xshape);
}

static int64_t r2_combine(r2ctx *R, const uint32_t *deps, uint32_t n, int final) {
    int64_t ip[2] = {final, R->ints};
    tsr_kdesc d;
    if (final)
        desc_init(&d, TSR_KOP_COMBINE2, R->a->fn, R->a->dtype, R->ndim, R->shape);
    else
        desc_init(&d, TSR_KOP_COMBINE2, R->a->fn, R->pdtype, 1, &R->plen);
    d.i = ip;
    d.ni = 2;
    d.f = &R->ddof;
    d.nf = 1;
    return tsr__lower_add(R->L, R->a, R->ci, &d, deps, n, 0, NULL);
}

/* Item j of tree level `level` (lower.c's tree): consecutive groups of up to FAN_IN, level by
 * level, a lone child passing up; the root is the final combine. */
static int64_t r2_tree(r2ctx *R, int level, int64_t j) {
    if (level == 0) return r2_partial(R, j);
    int64_t first = j * FAN_IN, last = TSR__MIN(first + FAN_IN, R->cnt[level - 1]);
    if (last - first == 1) return r2_tree(R, level - 1, first);
    uint32_t deps[FAN_IN];
    for (int64_t k = first; k < last; k++) {
        int64_t t = r2_tree(R, level - 1, k);
        if (t < 0) return t;
        deps[k - first] = (uint32_t)t;
    }
    return r2_combine(R, deps, (uint32_t)(last - first), level == R->height && R->root_final);
}

int64_t tsr__emit_reduce2(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                          const int64_t *shape) {
    tsr_array *x = a->args[0];
    r2ctx R = {.L = L, .a = a, .x = x, .ci = ci, .ndim = a->ndim, .shape = shape};
    int reduced[TSR_MAX_NDIM] = {0};
    R.cnt[0] = 1;
    int64_t rc = 0;
    for (int k = 0; k < a->naxes; k++) {
        int ax = a->axes[k];
        reduced[ax] = 1;
        R.cnt[0] *= x->numchunks[ax];
        R.goff[k] = malloc((size_t)(x->numchunks[ax] + 1) * sizeof(int64_t));
        if (!R.goff[k]) {
            rc = tsr__fail(a->client, -ENOMEM, "out of memory");
            goto done;
        }
        R.goff[k][0] = 0;
        for (int64_t c = 0; c < x->numchunks[ax]; c++)
            R.goff[k][c + 1] = R.goff[k][c] + x->chunks[ax][c];
    }
    for (int ax = 0, o = 0; ax < x->ndim; ax++)
        if (!reduced[ax]) R.xidx[ax] = idx[a->keepdims ? ax : o++];
    while (R.cnt[R.height] > 1) {
        R.cnt[R.height + 1] = (R.cnt[R.height] + FAN_IN - 1) / FAN_IN;
        R.height++;
    }
    int64_t nout = 1;
    for (int ax = 0; ax < a->ndim; ax++) nout *= shape[ax];
    R.plen = nout * tsr__reduce2_fields(a->fn);
    R.pdtype = tsr__reduce2_partial_dtype(a->fn, x->dtype);
    R.ints = x->dtype == TSR_INT64 || x->dtype == TSR_BOOL;
    R.ddof = a->ddof;
    R.moments = -1;
    R.root_final = 1;
    if (a->fn == TSR__R2_VAR || a->fn == TSR__R2_STD) {
        /* Two passes, as NumPy: the first tree gives each output's (count, mean) over the whole
         * reduction; the second pass's partials are the squared deviations from that mean. */
        R.root_final = 0;
        rc = r2_tree(&R, R.height, 0);
        if (rc < 0) goto done;
        R.moments = rc;
        R.root_final = 1;
    }
    rc = r2_tree(&R, R.height, 0);
    if (rc >= 0 && R.height == 0) { /* a lone partial still needs the final combine */
        uint32_t dep = (uint32_t)rc;
        rc = r2_combine(&R, &dep, 1, 1);
    }
done:
    for (int k = 0; k < a->naxes; k++) free(R.goff[k]);
    return rc;
}

/* ---- scans ----------------------------------------------------------------------------------- */

/* a->naxes 1: along a->axes[0], a has x's grid. a->naxes 0: flattened; a is 1-d and x (the
 * operand, rechunked to whole rows by reduce.c when it had several chunks on a later axis) has
 * one chunk per chunk of a along its first axis. */
int64_t tsr__emit_scan(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                       const int64_t *shape) {
    tsr_array *x = a->args[0];
    int flat = a->naxes == 0, ax = flat ? 0 : a->axes[0];
    int64_t xci = ci;
    if (flat) {
        int64_t xidx[TSR_MAX_NDIM] = {0};
        if (x->ndim > 0) xidx[0] = idx[0];
        xci = ravel(x, xidx);
    }
    /* The chain: the chunk before along the axis. Its own predecessors are emitted first, from
     * the earliest missing one up, so that a long chain does not recurse once per link. */
    uint32_t deps[2];
    uint32_t ndeps = 1;
    if (idx[ax] > 0) {
        int64_t step = 1;
        for (int k = a->ndim - 1; k > ax; k--) step *= a->numchunks[k];
        int64_t first = ci - step;
        while (idx[ax] - (ci - first) / step > 0 && a->lower_tasks[first] == UINT32_MAX &&
               a->lower_tasks[first - step] == UINT32_MAX)
            first -= step;
        for (int64_t p = first; p < ci; p += step) {
            int rc = tsr__lower_dep(L, a, p, &deps[1]);
            if (rc < 0) return rc;
        }
        ndeps = 2;
    }
    int rc = tsr__lower_dep(L, x, xci, &deps[0]);
    if (rc < 0) return rc;
    int64_t ip[1] = {flat ? -1 : ax};
    tsr_kdesc d;
    desc_init(&d, TSR_KOP_SCAN, a->fn, a->dtype, a->ndim, shape);
    d.i = ip;
    d.ni = 1;
    int64_t xshape[TSR_MAX_NDIM];
    int64_t xidx[TSR_MAX_NDIM];
    int64_t c = xci;
    for (int k = x->ndim - 1; k >= 0; k--) {
        xidx[k] = c % x->numchunks[k];
        c /= x->numchunks[k];
    }
    for (int k = 0; k < x->ndim; k++) xshape[k] = x->chunks[k][xidx[k]];
    return tsr__lower_add(L, a, ci, &d, deps, ndeps, x->ndim, xshape);
}
