/* An example Tessera plugin (docs/plugins.md): user kernels for `map_blocks`. Built by meson as
 * examples/plugins/libscale_add.so; by hand:
 *
 *     cc -shared -fPIC -o libscale_add.so scale_add.c $(pkg-config --cflags tessera)
 *
 * and used from a program file as "kernel": "scale_add:scale_add" by workers started with
 * `--plugin-dir` naming the directory that holds the library. Kernels here are pure functions of
 * their blocks, as plugin.h requires. */
#include <stdio.h>
#include <string.h>

#include <tessera/plugin.h>

TSR_PLUGIN_DECLARE();

/* Element k (row-major over the output block's shape) of block b, where b's axes are aligned to
 * the right of the output's and an axis of extent 1 is broadcast. As a double. */
static double element_at(const tsr_plugin_block *b, const tsr_plugin_block *out, int64_t k) {
    int64_t off = 0;
    for (int a = out->ndim - 1; a >= 0; a--) {
        int64_t i = k % out->shape[a];
        k /= out->shape[a];
        int ba = a - (out->ndim - b->ndim);
        if (ba >= 0 && b->shape[ba] != 1) off += i * b->strides[ba];
    }
    switch (b->dtype) {
    case TSR_PLUGIN_FLOAT64:
        return ((const double *)b->data)[off];
    case TSR_PLUGIN_FLOAT32:
        return ((const float *)b->data)[off];
    case TSR_PLUGIN_INT64:
        return (double)((const int64_t *)b->data)[off];
    default:
        return ((const unsigned char *)b->data)[off];
    }
}

static int64_t nelem(const tsr_plugin_block *b) {
    int64_t n = 1;
    for (int a = 0; a < b->ndim; a++) n *= b->shape[a];
    return n;
}

/* out = s * x + y + z + ...: x and the others broadcast to the output block, s the first number
 * among the arguments (1 when there is none). Float outputs only. */
TSR_PLUGIN_EXPORT int scale_add(const tsr_plugin_block *in, int nin, tsr_plugin_block *out,
                                const tsr_plugin_info *info, char *err, size_t errlen) {
    if (out->dtype != TSR_PLUGIN_FLOAT64 && out->dtype != TSR_PLUGIN_FLOAT32) {
        snprintf(err, errlen, "scale_add makes float64 or float32, not dtype %d", out->dtype);
        return 1;
    }
    double s = info->nscalars > 0 ? info->scalars[0] : 1.0;
    int64_t n = nelem(out);
    for (int64_t k = 0; k < n; k++) {
        double v = s * element_at(&in[0], out, k);
        for (int j = 1; j < nin; j++) v += element_at(&in[j], out, k);
        if (out->dtype == TSR_PLUGIN_FLOAT64)
            ((double *)out->data)[k] = v;
        else
            ((float *)out->data)[k] = (float)v;
    }
    return 0;
}

/* Each element's row-major index in the whole result (int64 or float64): shows the block's
 * place, info->offset and info->gshape. The inputs only give the grid. */
TSR_PLUGIN_EXPORT int global_index(const tsr_plugin_block *in, int nin, tsr_plugin_block *out,
                                   const tsr_plugin_info *info, char *err, size_t errlen) {
    (void)in;
    (void)nin;
    int64_t n = nelem(out);
    for (int64_t k = 0; k < n; k++) {
        int64_t g = 0, rest = k, idx[TSR_PLUGIN_MAX_NDIM];
        for (int a = out->ndim - 1; a >= 0; a--) {
            idx[a] = rest % out->shape[a];
            rest /= out->shape[a];
        }
        for (int a = 0; a < out->ndim; a++) g = g * info->gshape[a] + info->offset[a] + idx[a];
        if (out->dtype == TSR_PLUGIN_INT64)
            ((int64_t *)out->data)[k] = g;
        else if (out->dtype == TSR_PLUGIN_FLOAT64)
            ((double *)out->data)[k] = (double)g;
        else {
            snprintf(err, errlen, "global_index makes int64 or float64");
            return 1;
        }
    }
    return 0;
}

/* Fails on the block whose index along axis 0 is the first number given, with a message: what
 * a kernel's error looks like to the user. Elsewhere it copies its first input (float64). */
TSR_PLUGIN_EXPORT int fail_on_block(const tsr_plugin_block *in, int nin, tsr_plugin_block *out,
                                    const tsr_plugin_info *info, char *err, size_t errlen) {
    (void)nin;
    if (info->nscalars > 0 && info->ndim > 0 && (double)info->block_index[0] == info->scalars[0]) {
        snprintf(err, errlen, "refusing block %lld on purpose", (long long)info->block_index[0]);
        return 7;
    }
    if (out->dtype != in[0].dtype || nelem(out) != nelem(&in[0])) {
        snprintf(err, errlen, "fail_on_block copies its first input");
        return 1;
    }
    size_t esize = out->dtype == TSR_PLUGIN_FLOAT32 ? 4 : out->dtype == TSR_PLUGIN_BOOL ? 1 : 8;
    memcpy(out->data, in[0].data, (size_t)nelem(out) * esize);
    return 0;
}

/* A bool block: x > t, t the first number (0 when there is none). Any input dtype. */
TSR_PLUGIN_EXPORT int threshold(const tsr_plugin_block *in, int nin, tsr_plugin_block *out,
                                const tsr_plugin_info *info, char *err, size_t errlen) {
    (void)nin;
    if (out->dtype != TSR_PLUGIN_BOOL) {
        snprintf(err, errlen, "threshold makes bool");
        return 1;
    }
    double t = info->nscalars > 0 ? info->scalars[0] : 0.0;
    int64_t n = nelem(out);
    for (int64_t k = 0; k < n; k++)
        ((unsigned char *)out->data)[k] = element_at(&in[0], out, k) > t;
    return 0;
}
