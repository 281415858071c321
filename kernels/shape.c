/* The structural kernels: STRIDED (a strided copy, for slices and per-chunk reshapes) and TAKE
 * (numpy.take along one axis). Dtype-generic: they move elements by tsr_dtype_size and never
 * look at values (but TAKE's int64 indices), so every dtype works; registered in generic.c.
 * tsr__kernel_run (table.c) checked the descriptor and the inputs' shapes before they run. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/kernels_priv.h"

/* n elements of size es from src (stride `stride` elements) to the contiguous dst. */
static void copy_row(char *dst, const char *src, int64_t stride, int64_t n, size_t es) {
    if (stride == 1) {
        if (n) memcpy(dst, src, (size_t)n * es);
        return;
    }
    switch (es) {
    case 8:
        for (int64_t j = 0; j < n; j++) memcpy(dst + 8 * j, src + 8 * stride * j, 8);
        break;
    case 4:
        for (int64_t j = 0; j < n; j++) memcpy(dst + 4 * j, src + 4 * stride * j, 4);
        break;
    default:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + es * (size_t)j, src + (int64_t)es * stride * j, es);
        break;
    }
}

/* out[j] = in[i[0] + sum_k j_k * i[1 + k]], row by row along the last axis. */
int k_strided(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
              size_t errlen) {
    (void)nin, (void)err, (void)errlen;
    size_t es = tsr_dtype_size((tsr_dtype)d->dtype);
    int nd = d->ndim;
    int64_t n = tsr__shape_nelem(nd, d->shape);
    if (n == 0) return 0;
    const char *src = in[0].data;
    char *dst = out->data;
    if (dst == src) return 0; /* in place: only an unchanged copy may alias (table.c) */
    if (nd == 0) {
        memcpy(dst, src + (size_t)d->i[0] * es, es);
        return 0;
    }
    const int64_t *stride = d->i + 1;
    int64_t len = d->shape[nd - 1], rows = n / len, idx[TSR_MAX_NDIM] = {0};
    for (int64_t r = 0; r < rows; r++) {
        int64_t base = d->i[0];
        for (int k = 0; k < nd - 1; k++) base += idx[k] * stride[k];
        copy_row(dst + (size_t)(r * len) * es, src + base * (int64_t)es, stride[nd - 1], len, es);
        tsr__next_index(idx, d->shape, nd - 1);
    }
    return 0;
}

/* Inputs X_0 .. X_(nin-2), X's chunks along axis i[0] in order, and the 1-d int64 index chunk
 * last. Every index is checked (and its chunk found) before anything is copied. */
int k_take(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
           size_t errlen) {
    int ax = (int)d->i[0], nx = nin - 1, nd = d->ndim;
    size_t es = tsr_dtype_size((tsr_dtype)d->dtype);
    const tsr_chunkview *ind = &in[nin - 1];
    const int64_t *iv = ind->data;
    int64_t m = ind->shape[0], n = 0;
    for (int k = 0; k < nx; k++) n += in[k].shape[ax];
    int64_t outer = 1, inner = 1;
    for (int a = 0; a < ax; a++) outer *= d->shape[a];
    for (int a = ax + 1; a < nd; a++) inner *= d->shape[a];
    if (m == 0) return 0;
    int64_t *where = malloc((size_t)m * 2 * sizeof *where); /* (chunk, position) per index */
    if (!where) {
        tsr__fmt(err, errlen, "take kernel: out of memory");
        return -ENOMEM;
    }
    for (int64_t p = 0; p < m; p++) {
        int64_t v = iv[p];
        if (v < -n || v >= n) {
            tsr__fmt(err, errlen, "take: index %lld is out of bounds for axis %d with size %lld",
                     (long long)v, ax, (long long)n);
            free(where);
            return TSR_EINVALID;
        }
        if (v < 0) v += n;
        int k = 0;
        while (v >= in[k].shape[ax]) v -= in[k++].shape[ax];
        where[2 * p] = k;
        where[2 * p + 1] = v;
    }
    size_t row = (size_t)inner * es;
    char *dst = out->data;
    for (int64_t o = 0; o < outer && row > 0; o++)
        for (int64_t p = 0; p < m; p++) {
            const tsr_chunkview *x = &in[where[2 * p]];
            const char *src = (const char *)x->data +
                              (size_t)((o * x->shape[ax] + where[2 * p + 1]) * inner) * es;
            memcpy(dst + (size_t)(o * m + p) * row, src, row);
        }
    free(where);
    return 0;
}
