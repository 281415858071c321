/* The program loader's structural operations (slice, take, concatenate, stack, reshape, squeeze,
 * expand_dims) and map_blocks: parsing their keys ("index", a reshape's "shape") and building
 * them through the public API. A client of tessera.h only, as loader.c. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "array/loader_priv.h"

/* A slice's "index": one item per leading axis, each an integer, [start, stop] or [start, stop,
 * step] (null for a default) or null (the whole axis). */
int tsr__loader_parse_index(tsr__loader *L, tsr__loader_def *d, json_t *v) {
    char b[64];
    if (!json_is_array(v))
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "\"index\" must be a list with one item per axis, got %s",
                                tsr__loader_show(v, b, sizeof b));
    if (json_array_size(v) > TSR_MAX_NDIM)
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "\"index\" has %zu items; arrays have at most %d axes",
                                json_array_size(v), TSR_MAX_NDIM);
    d->nindex = (int)json_array_size(v);
    for (int i = 0; i < d->nindex; i++) {
        json_t *x = json_array_get(v, (size_t)i);
        tsr_index *it = &d->index[i];
        memset(it, 0, sizeof *it);
        it->kind = TSR_INDEX_RANGE;
        it->step = 1;
        if (json_is_null(x)) continue;
        if (json_is_integer(x)) {
            it->kind = TSR_INDEX_INT;
            it->start = json_integer_value(x);
            continue;
        }
        size_t n = json_is_array(x) ? json_array_size(x) : 0;
        int ok = n == 2 || n == 3;
        for (size_t k = 0; ok && k < n; k++) {
            json_t *e = json_array_get(x, k);
            ok = json_is_null(e) || json_is_integer(e);
        }
        if (!ok)
            return tsr__loader_fail(
                L, d, TSR_EPROGRAM,
                "\"index\"[%d] must be an integer, [start, stop], [start, stop, step] "
                "(integers or null) or null, got %s",
                i, tsr__loader_show(x, b, sizeof b));
        json_t *st = json_array_get(x, 0), *sp = json_array_get(x, 1);
        json_t *sz = n == 3 ? json_array_get(x, 2) : NULL;
        it->has_start = json_is_integer(st);
        it->start = json_integer_value(st);
        it->has_stop = json_is_integer(sp);
        it->stop = json_integer_value(sp);
        if (sz && json_is_integer(sz)) it->step = json_integer_value(sz);
        if (it->step == 0)
            return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"index\"[%d]: slice step cannot be zero",
                                    i);
    }
    return 0;
}

/* A reshape's "shape": integers >= 0, and at most one -1 (inferred). */
int tsr__loader_parse_newshape(tsr__loader *L, tsr__loader_def *d, json_t *v) {
    char b[64];
    if (!json_is_array(v) || json_array_size(v) > TSR_MAX_NDIM)
        return tsr__loader_fail(
            L, d, TSR_EPROGRAM,
            "\"shape\" must be a list of at most %d integers (one may be -1), got %s", TSR_MAX_NDIM,
            tsr__loader_show(v, b, sizeof b));
    d->ndim = (int)json_array_size(v);
    int unknown = 0;
    for (int i = 0; i < d->ndim; i++) {
        json_t *x = json_array_get(v, (size_t)i);
        if (!json_is_integer(x) || json_integer_value(x) < -1)
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "\"shape\"[%d] must be a non-negative integer or -1, got %s", i,
                                    tsr__loader_show(x, b, sizeof b));
        d->shape[i] = json_integer_value(x);
        if (d->shape[i] == -1 && unknown++)
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "\"shape\": can only specify one unknown dimension");
    }
    return 0;
}
/* The structural operations (array/shape_ops.c). "axis" is one integer for take (or null: the
 * flattened array), concatenate and stack (default 0). */
int tsr__loader_build_shape_def(tsr__loader *L, tsr__loader_def *d, tsr_array *x, tsr_array *y) {
    char b[64];
    tsr_array *a = NULL;
    int rc = 0, kind = d->op->kind, axis = d->has_axes ? d->axes[0] : 0;
    json_t *axv = json_object_get(d->obj, "axis");
    if ((kind == TSR__LK_TAKE || kind == TSR__LK_CONCATENATE || kind == TSR__LK_STACK) && axv &&
        !json_is_integer(axv) && !(kind == TSR__LK_TAKE && json_is_null(axv)))
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"axis\" must be an integer%s, got %s",
                                kind == TSR__LK_TAKE ? " or null" : "",
                                tsr__loader_show(axv, b, sizeof b));
    switch (kind) {
    case TSR__LK_SLICE:
        rc = tsr_slice(x, d->index, d->nindex, &a);
        break;
    case TSR__LK_TAKE:
        rc = tsr_take(x, y, d->has_axes ? &axis : NULL, &a);
        break;
    case TSR__LK_CONCATENATE:
    case TSR__LK_STACK: {
        tsr_array **xs = malloc((size_t)d->nargs * sizeof *xs);
        if (!xs) return tsr__loader_fail(L, d, -ENOMEM, "out of memory");
        for (int k = 0; k < d->nargs; k++) xs[k] = L->defs[d->arg[k]].array;
        rc = kind == TSR__LK_STACK ? tsr_stack(xs, d->nargs, axis, &a)
                                   : tsr_concatenate(xs, d->nargs, axis, &a);
        free(xs);
        break;
    }
    case TSR__LK_RESHAPE:
        rc = tsr_reshape(x, d->ndim, d->shape, &a);
        break;
    case TSR__LK_SQUEEZE:
        rc = tsr_squeeze(x, d->has_axes ? d->axes : NULL, d->naxes, &a);
        break;
    case TSR__LK_EXPAND_DIMS:
        if (!d->has_axes) return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"axis\" must not be null");
        rc = tsr_expand_dims(x, d->axes, d->naxes, &a);
        break;
    default:
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "unknown op");
    }
    return tsr__loader_built(L, d, rc, a);
}

/* map_blocks: the array operands in order, the numbers in order; dtype defaults to the first
 * operand's, shape to its shape (the blockwise form only when "shape" differs). */
int tsr__loader_build_map_blocks(tsr__loader *L, tsr__loader_def *d, const int64_t *chunks,
                                 tsr_array **out) {
    tsr_array **arrays = malloc((size_t)d->nargs * sizeof *arrays);
    double *scalars = malloc((size_t)d->nargs * sizeof *scalars);
    if (!arrays || !scalars) {
        free(arrays);
        free(scalars);
        tsr__fail(L->c, -ENOMEM, "out of memory");
        return -ENOMEM;
    }
    int na = 0, ns = 0;
    for (int k = 0; k < d->nargs; k++) {
        if (d->arg[k] >= 0)
            arrays[na++] = L->defs[d->arg[k]].array;
        else
            scalars[ns++] = d->scalar[k];
    }
    int has_shape = json_object_get(d->obj, "shape") != NULL;
    tsr_dtype dtype = json_object_get(d->obj, "dtype") ? d->dtype : tsr_array_dtype(arrays[0]);
    int rc = tsr_map_blocks(d->kernel, arrays, na, scalars, ns, dtype, has_shape ? d->shape : NULL,
                            has_shape ? d->ndim : 0, chunks, out);
    free(arrays);
    free(scalars);
    return rc;
}
