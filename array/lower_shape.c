/* Lowering of the structural operations (slice, take, concatenate, reshape and with it squeeze
 * and expand_dims): each output chunk comes from one operand chunk (take: from every chunk of X
 * along the axis and one index chunk), as the grids shape_ops.c chose make possible. A chunk
 * that is an operand's chunk unchanged passes that chunk's task through (no task, as a
 * same-grid rechunk does); otherwise one STRIDED copy. Must not validate user input (the
 * constructors did) nor talk to a cluster. */
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "array/lower.h"

static int64_t ravel(const tsr_array *a, const int64_t *idx) {
    int64_t ci = 0;
    for (int ax = 0; ax < a->ndim; ax++) ci = ci * a->numchunks[ax] + idx[ax];
    return ci;
}

/* The task making operand x's chunk ci (emitted first if needed), or a negative code. */
static int64_t chunk(lctx *L, tsr_array *x, int64_t ci) {
    uint32_t t;
    int rc = tsr__lower_dep(L, x, ci, &t);
    return rc < 0 ? rc : (int64_t)t;
}

/* One STRIDED task of a's chunk ci (shape[a->ndim]) reading operand x's chunk xci; iv = [offset,
 * stride[0..a->ndim)]. */
static int64_t strided(lctx *L, tsr_array *a, int64_t ci, const int64_t *shape, tsr_array *x,
                       int64_t xci, int64_t *iv) {
    int64_t t = chunk(L, x, xci);
    if (t < 0) return t;
    uint32_t dep = (uint32_t)t;
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = TSR_KOP_STRIDED;
    d.dtype = (uint8_t)a->dtype;
    d.ndim = (uint8_t)a->ndim;
    for (int ax = 0; ax < a->ndim; ax++) d.shape[ax] = shape[ax];
    d.i = iv;
    d.ni = (uint32_t)(1 + a->ndim);
    return tsr__lower_add(L, a, ci, &d, &dep, 1, 0, NULL);
}

/* SLICE: operand axis k takes positions sl_start[k] + j * sl_step[k] (an integer index: step 0,
 * position sl_start[k], no output axis). The output chunk's first position on each axis finds
 * the operand chunk; its strides are the steps times the operand chunk's C strides. */
int64_t tsr__emit_slice(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                        const int64_t *shape) {
    tsr_array *x = a->args[0];
    int64_t xidx[TSR_MAX_NDIM], local[TSR_MAX_NDIM], xs[TSR_MAX_NDIM], iv[1 + TSR_MAX_NDIM];
    int outax[TSR_MAX_NDIM];
    int pass = a->ndim == x->ndim;
    for (int ax = 0, oa = 0; ax < x->ndim; ax++) {
        const int64_t *o = tsr__lower_offsets(L, x, ax);
        if (!o) return -ENOMEM;
        int64_t g = a->sl_start[ax];
        outax[ax] = a->sl_step[ax] ? oa : -1;
        if (a->sl_step[ax]) {
            const int64_t *oo = tsr__lower_offsets(L, a, oa);
            if (!oo) return -ENOMEM;
            g = shape[oa] > 0 ? a->sl_start[ax] + oo[idx[oa]] * a->sl_step[ax] : 0;
        }
        xidx[ax] = tsr__chunk_at(o, x->numchunks[ax], g);
        local[ax] = g - o[xidx[ax]];
        xs[ax] = x->chunks[ax][xidx[ax]];
        if (a->sl_step[ax]) {
            pass &= a->sl_step[ax] == 1 && local[ax] == 0 && shape[oa] == xs[ax];
            oa++;
        }
    }
    if (pass) return chunk(L, x, ravel(x, xidx));
    int64_t stride = 1;
    iv[0] = 0;
    for (int ax = x->ndim - 1; ax >= 0; ax--) {
        iv[0] += local[ax] * stride;
        /* Along an axis of one element the stride is never used (and step * stride could
         * overflow for a huge step); otherwise the chunk's span bounds it. */
        if (outax[ax] >= 0) iv[1 + outax[ax]] = shape[outax[ax]] > 1 ? a->sl_step[ax] * stride : 0;
        stride *= xs[ax];
    }
    return strided(L, a, ci, shape, x, ravel(x, xidx), iv);
}

/* RESHAPE: operand axis k's chunk index is the output's along axes[k] (0 where -1); the chunk
 * holds the output chunk's elements in the same C order, so the copy is contiguous, and none is
 * needed when the shapes agree too. */
int64_t tsr__emit_reshape(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                          const int64_t *shape) {
    tsr_array *x = a->args[0];
    int64_t xidx[TSR_MAX_NDIM], iv[1 + TSR_MAX_NDIM];
    int same = x->ndim == a->ndim;
    for (int k = 0; k < x->ndim; k++) {
        xidx[k] = a->axes[k] >= 0 ? idx[a->axes[k]] : 0;
        same = same && x->chunks[k][xidx[k]] == shape[k];
    }
    int64_t xci = ravel(x, xidx);
    if (same) return chunk(L, x, xci);
    int64_t s = 1;
    iv[0] = 0;
    for (int ax = a->ndim - 1; ax >= 0; ax--) {
        iv[1 + ax] = s;
        s *= shape[ax];
    }
    return strided(L, a, ci, shape, x, xci, iv);
}

/* CONCATENATE: along the axis, the output's chunks are the operands' one after the other
 * (operands empty along it contribute none); every one is an operand's chunk, passed through. */
int64_t tsr__emit_concatenate(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                              const int64_t *shape) {
    (void)shape;
    int ax = a->axes[0];
    int64_t xidx[TSR_MAX_NDIM], j = idx[ax];
    memcpy(xidx, idx, (size_t)a->ndim * sizeof *idx);
    for (int k = 0; k < a->nargs; k++) {
        tsr_array *x = a->args[k];
        if (x->shape[ax] == 0 && a->shape[ax] > 0) continue;
        if (j < x->numchunks[ax]) {
            xidx[ax] = j;
            return chunk(L, x, ravel(x, xidx));
        }
        j -= x->numchunks[ax];
    }
    return tsr__fail(a->client, TSR_EINVALID, "%s: chunk %lld out of range", tsr_array_name(a),
                     (long long)ci);
}

/* TAKE: every chunk of X along the axis (the other axes at the output's chunk), in order, then
 * the index chunk. */
int64_t tsr__emit_take(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                       const int64_t *shape) {
    tsr_array *x = a->args[0], *ind = a->args[1];
    int ax = a->axes[0];
    int64_t nc = x->numchunks[ax], xidx[TSR_MAX_NDIM], iv[1] = {ax};
    uint32_t *deps = malloc((size_t)(nc + 1) * sizeof *deps);
    if (!deps) return tsr__fail(a->client, -ENOMEM, "out of memory");
    memcpy(xidx, idx, (size_t)a->ndim * sizeof *idx);
    int64_t t = 0;
    for (int64_t k = 0; k <= nc && t >= 0; k++) {
        xidx[ax] = k;
        t = k < nc ? chunk(L, x, ravel(x, xidx)) : chunk(L, ind, idx[ax]);
        if (t >= 0) deps[k] = (uint32_t)t;
    }
    if (t >= 0) {
        tsr_kdesc d;
        memset(&d, 0, sizeof d);
        d.kop = TSR_KOP_TAKE;
        d.dtype = (uint8_t)a->dtype;
        d.ndim = (uint8_t)a->ndim;
        for (int k = 0; k < a->ndim; k++) d.shape[k] = shape[k];
        d.i = iv;
        d.ni = 1;
        t = tsr__lower_add(L, a, ci, &d, deps, (uint32_t)(nc + 1), 0, NULL);
    }
    free(deps);
    return t;
}
