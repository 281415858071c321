/* map_blocks: a user kernel (docs/plugins.md) applied block by block. Checks the kernel's name
 * and how the operands line up, and builds the array node; lower.c (emit_map_blocks) emits one
 * task per output block. Nothing here loads a plugin: only workers do, from their own
 * directories, and the client never learns whether one exists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "kernels/kernels.h"

/* The most numbers one call takes (they travel in every task's descriptor). */
#define MAX_SCALARS 1024

static int shape_differs(const tsr_array *x, const int64_t *shape, int ndim) {
    if (ndim != x->ndim) return 1;
    for (int ax = 0; ax < ndim; ax++)
        if (shape[ax] != x->shape[ax]) return 1;
    return 0;
}

/* Aligns every operand to a's grid (the default form): operand k has at most a->ndim axes,
 * aligned to the right, each of a's extent (rechunked to a's chunks where they differ) or 1 (one
 * block, passed whole). Adds the aligned operands to a. */
static int add_aligned(tsr_array *a, tsr_array *const *args, int nargs) {
    int d = a->ndim;
    for (int k = 0; k < nargs; k++) {
        tsr_array *x = args[k], *owned = NULL;
        if (x->ndim > d)
            return tsr__fail(a->client, TSR_ESHAPE,
                             "map_blocks: argument %d (%s) has %d axes, more than the result's %d",
                             k, tsr_array_name(x), x->ndim, d);
        int o = d - x->ndim;
        int64_t *sizes[TSR_MAX_NDIM], n[TSR_MAX_NDIM], one = 1;
        for (int ax = 0; ax < x->ndim; ax++) {
            if (x->shape[ax] == a->shape[ax + o]) {
                sizes[ax] = a->chunks[ax + o];
                n[ax] = a->numchunks[ax + o];
            } else if (x->shape[ax] == 1) {
                sizes[ax] = &one;
                n[ax] = 1;
            } else {
                return tsr__fail(a->client, TSR_ESHAPE,
                                 "map_blocks: argument %d (%s) has extent %lld on axis %d where "
                                 "the result has %lld (it must be equal, or 1)",
                                 k, tsr_array_name(x), (long long)x->shape[ax], ax,
                                 (long long)a->shape[ax + o]);
            }
        }
        int rc = tsr__array_align(&x, sizes, n, &owned);
        if (rc == 0) rc = tsr__array_add_arg(a, x);
        tsr__array_unref(owned); /* a holds its own reference */
        if (rc < 0) return rc;
    }
    return 0;
}

/* The blockwise form (an explicit result shape): every operand has the result's axes and number
 * of chunks on each, and block i of each goes to output block i as it is. */
static int add_blockwise(tsr_array *a, tsr_array *const *args, int nargs) {
    for (int k = 0; k < nargs; k++) {
        tsr_array *x = args[k];
        if (x->ndim != a->ndim)
            return tsr__fail(a->client, TSR_ESHAPE,
                             "map_blocks with an explicit shape: argument %d (%s) has %d axes, "
                             "the result %d (each output block takes the operands' blocks of "
                             "the same index)",
                             k, tsr_array_name(x), x->ndim, a->ndim);
        for (int ax = 0; ax < a->ndim; ax++)
            if (x->numchunks[ax] != a->numchunks[ax])
                return tsr__fail(a->client, TSR_ESHAPE,
                                 "map_blocks with an explicit shape: argument %d (%s) has %lld "
                                 "chunks on axis %d, the result %lld (they must be equal)",
                                 k, tsr_array_name(x), (long long)x->numchunks[ax], ax,
                                 (long long)a->numchunks[ax]);
        int rc = tsr__array_add_arg(a, x);
        if (rc < 0) return rc;
    }
    return 0;
}

int tsr_map_blocks(const char *kernel, tsr_array *const *args, int nargs, const double *scalars,
                   int nscalars, tsr_dtype dtype, const int64_t *shape, int ndim,
                   const int64_t *chunks, tsr_array **out) {
    if (!out) return tsr__fail(NULL, TSR_EINVALID, "map_blocks: out is NULL");
    *out = NULL;
    if (nargs < 1 || !args || !args[0])
        return tsr__fail(NULL, TSR_EINVALID, "map_blocks: needs at least one array argument");
    tsr_array *x = args[0];
    tsr_client *c = x->client;
    for (int k = 1; k < nargs; k++) {
        if (!args[k]) return tsr__fail(c, TSR_EINVALID, "map_blocks: argument %d is NULL", k);
        if (args[k]->client != c)
            return tsr__fail(c, TSR_EINVALID, "map_blocks: %s and %s belong to different clients",
                             tsr_array_name(x), tsr_array_name(args[k]));
    }
    char lib[TSR__PLUGIN_NAME_MAX], sym[TSR__PLUGIN_NAME_MAX], why[300];
    if (tsr__plugin_parse_name(kernel, lib, sizeof lib, sym, sizeof sym, why, sizeof why))
        return tsr__fail(c, TSR_EINVALID, "map_blocks of %s: %s", tsr_array_name(x), why);
    if (tsr_dtype_size(dtype) == 0)
        return tsr__fail(c, TSR_EINVALID, "map_blocks of %s: invalid dtype %d", tsr_array_name(x),
                         (int)dtype);
    if (nscalars < 0 || nscalars > MAX_SCALARS || (nscalars > 0 && !scalars))
        return tsr__fail(c, TSR_EINVALID, "map_blocks of %s: %d scalars (0 to %d, not NULL)",
                         tsr_array_name(x), nscalars, MAX_SCALARS);
    int blockwise = shape && shape_differs(x, shape, ndim);
    if (blockwise) {
        if (ndim < 0 || ndim > TSR_MAX_NDIM)
            return tsr__fail(c, TSR_ESHAPE, "map_blocks of %s: ndim must be 0 to %d, got %d",
                             tsr_array_name(x), TSR_MAX_NDIM, ndim);
        for (int ax = 0; ax < ndim; ax++)
            if (shape[ax] < 0)
                return tsr__fail(c, TSR_ESHAPE, "map_blocks of %s: negative extent %lld on axis %d",
                                 tsr_array_name(x), (long long)shape[ax], ax);
        int64_t total = (int64_t)tsr_dtype_size(dtype);
        for (int ax = 0; ax < ndim && total > 0; ax++) {
            if (shape[ax] > 0 && total > ((int64_t)1 << 60) / shape[ax])
                return tsr__fail(c, TSR_ESHAPE, "map_blocks of %s: the result shape is too large",
                                 tsr_array_name(x));
            total *= shape[ax];
        }
        if (!chunks)
            return tsr__fail(c, TSR_EINVALID,
                             "map_blocks of %s: a result shape other than the first argument's "
                             "needs its chunks",
                             tsr_array_name(x));
    } else {
        shape = x->shape;
        ndim = x->ndim;
    }
    tsr_array *a = tsr__array_new(c, "map_blocks", dtype, ndim, shape);
    if (!a) return tsr__fail(c, -ENOMEM, "out of memory");
    a->aop = TSR_A_MAP_BLOCKS;
    a->blockwise = blockwise;
    int rc = chunks ? tsr__array_set_chunks(a, chunks)
                    : tsr__array_set_chunk_sizes(a, x->chunks, x->numchunks);
    if (rc == 0) rc = blockwise ? add_blockwise(a, args, nargs) : add_aligned(a, args, nargs);
    if (rc == 0 && !(a->kernel = strdup(kernel))) rc = tsr__fail(c, -ENOMEM, "out of memory");
    if (rc == 0 && nscalars > 0) {
        a->scalars = malloc((size_t)nscalars * sizeof *a->scalars);
        if (!a->scalars)
            rc = tsr__fail(c, -ENOMEM, "out of memory");
        else
            memcpy(a->scalars, scalars, (size_t)nscalars * sizeof *a->scalars);
        a->nscalars = nscalars;
    }
    if (rc < 0) return tsr__array_discard(a, rc);
    if (!tsr__array_named(a)) return -ENOMEM;
    *out = a;
    return 0;
}
