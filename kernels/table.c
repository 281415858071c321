/* The kernel table keyed by (kernel family, dtype, device), and the checks every descriptor passes
 * before a kernel runs: first the columns of its family's row in the operations table (graph/ops.h:
 * inputs, sub-operation, dtypes), then what the family's layout needs. Descriptors come from peers:
 * anything that does not match its family's contract (kernels.h) is TSR_EINVALID with a message,
 * never a crash. A device backend registers its table at run time (tsr__kernels_set_gpu): the CUDA
 * backend is a module that only GPU workers load (kernels/cuda_load.c).
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/device.h"
#include "kernels/kernels_priv.h"
#include "zarr/zarr.h"
#include "tsr_config.h"

/* The GPU kernels, once a backend registered them. */
static const tsr_kernel_fn *gpu_kernels;

void tsr__kernels_set_gpu(const tsr_kernel_fn *table) {
    gpu_kernels = table;
}

tsr_kernel_fn tsr__kernel_lookup(int kop, int dtype, tsr_device dev) {
    const tsr__kop_info *k = tsr__kop_info_of(kop);
    if (!k || dtype < 0 || dtype > 31) return NULL;
    if (!(k->dtypes & TSR__DT(dtype))) return NULL;
    if (dev == TSR_DEVICE_CPU && tsr__cpu_kernels_any[kop]) return tsr__cpu_kernels_any[kop];
    if (dev == TSR_DEVICE_CPU) {
        switch (dtype) {
        case TSR_FLOAT64:
            return tsr__cpu_kernels_f64[kop];
        case TSR_FLOAT32:
            return tsr__cpu_kernels_f32[kop];
        case TSR_INT64:
            return tsr__cpu_kernels_i64[kop];
        case TSR_BOOL:
            return tsr__cpu_kernels_bool[kop];
        default:
            return NULL;
        }
    }
    /* The GPU kernels are float-only (docs/gpu.md). */
    if (dtype != TSR_FLOAT64 && dtype != TSR_FLOAT32) return NULL;
    if (dev == TSR_DEVICE_GPU && gpu_kernels) return gpu_kernels[kop];
    return NULL;
}

int tsr__kernels_blas_threads(void) {
    return openblas_get_num_threads();
}

/* ---- checks --------------------------------------------------------------------------------- */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        char msg_[192];                                                                            \
        tsr__fmt(msg_, sizeof msg_, __VA_ARGS__);                                                  \
        tsr__fmt(err, errlen, "%s kernel: %s", tsr__kop_name(d->kop), msg_);                       \
        return TSR_EINVALID;                                                                       \
    } while (0)

/* Elements of a shape, or -1 when the product overflows int64 (shapes are non-negative). */
static int64_t safe_nelem(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int a = 0; a < ndim; a++) {
        if (shape[a] == 0) return 0;
        if (n > INT64_MAX / shape[a]) return -1;
        n *= shape[a];
    }
    return n;
}

static int same_shape(const tsr_chunkview *a, const tsr_kdesc *d) {
    if (a->ndim != d->ndim) return 0;
    for (int k = 0; k < d->ndim; k++)
        if (a->shape[k] != d->shape[k]) return 0;
    return 1;
}

/* Checks a global box description: gshape[nd] and offset[nd] with offset + shape <= gshape,
 * and gshape's element count times esize plus base fitting in int64. */
static int check_box(const tsr_kdesc *d, const int64_t *gshape, const int64_t *off, int64_t esize,
                     int64_t base, char *err, size_t errlen) {
    int64_t n = 1;
    for (int a = 0; a < d->ndim; a++) {
        if (gshape[a] < 0 || off[a] < 0 || off[a] > gshape[a] || d->shape[a] > gshape[a] - off[a])
            FAIL("chunk at offset %lld of size %lld does not fit global extent %lld on axis %d",
                 (long long)off[a], (long long)d->shape[a], (long long)gshape[a], a);
        if (gshape[a] && n > INT64_MAX / gshape[a]) FAIL("global shape too large");
        n *= gshape[a];
    }
    if (n > (INT64_MAX - base) / esize) FAIL("global shape too large");
    return 0;
}

static int check_views(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                       char *err, size_t errlen) {
    if (d->kop >= TSR_KOP_COUNT) {
        tsr__fmt(err, errlen, "kernel family %d out of range", d->kop);
        return TSR_EINVALID;
    }
    if (d->dtype >= TSR_DTYPE_COUNT) FAIL("invalid output dtype %d", d->dtype);
    if (d->ndim > TSR_MAX_NDIM) FAIL("ndim %d exceeds %d", d->ndim, TSR_MAX_NDIM);
    for (int a = 0; a < d->ndim; a++)
        if (d->shape[a] < 0) FAIL("negative extent on axis %d", a);
    if (safe_nelem(d->ndim, d->shape) < 0) FAIL("chunk too large");
    if ((d->ni && !d->i) || (d->nf && !d->f)) FAIL("missing parameters");
    if (!out || !same_shape(out, d) || out->dtype != d->dtype)
        FAIL("output chunk does not match the descriptor");
    if (!out->data && safe_nelem(d->ndim, d->shape) > 0) FAIL("output chunk has no buffer");
    if (nin < 0 || (nin > 0 && !in)) FAIL("invalid input list");
    for (int k = 0; k < nin; k++) {
        const tsr_chunkview *v = &in[k];
        if (v->dtype >= TSR_DTYPE_COUNT) FAIL("input %d: invalid dtype %d", k, v->dtype);
        if (v->ndim > TSR_MAX_NDIM) FAIL("input %d: ndim %d exceeds %d", k, v->ndim, TSR_MAX_NDIM);
        for (int a = 0; a < v->ndim; a++)
            if (v->shape[a] < 0) FAIL("input %d: negative extent on axis %d", k, a);
        int64_t n = safe_nelem(v->ndim, v->shape);
        if (n < 0) FAIL("input %d: too large", k);
        if (n > 0 && !v->data) FAIL("input %d has no buffer", k);
    }
    return 0;
}

#define NEED_PARAMS(ni_, nf_)                                                                      \
    do {                                                                                           \
        if (d->ni != (uint32_t)(ni_) || d->nf != (uint32_t)(nf_))                                  \
            FAIL("expects %d integer and %d float parameters, got %u and %u", (int)(ni_),          \
                 (int)(nf_), d->ni, d->nf);                                                        \
    } while (0)

static int check_same_as_output(const tsr_kdesc *d, const tsr_chunkview *in, int k, int need_dtype,
                                char *err, size_t errlen) {
    if (!same_shape(&in[k], d)) FAIL("input %d does not have the output's shape", k);
    if (need_dtype && in[k].dtype != d->dtype) FAIL("input %d does not have the output's dtype", k);
    return 0;
}

/* Each of the nin inputs broadcasts to the output (right-aligned, extent 1 or the output's). */
static int check_broadcast(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                           size_t errlen) {
    for (int k = 0; k < nin; k++) {
        const tsr_chunkview *v = &in[k];
        if (v->ndim > d->ndim) FAIL("input %d has more axes than the output", k);
        int lead = d->ndim - v->ndim;
        for (int a = 0; a < v->ndim; a++)
            if (v->shape[a] != d->shape[lead + a] && v->shape[a] != 1)
                FAIL("input %d extent %lld does not broadcast to %lld on axis %d", k,
                     (long long)v->shape[a], (long long)d->shape[lead + a], lead + a);
    }
    return 0;
}

/* A MATMUL descriptor's k-steps (kernels.h), or 0 when i says something impossible. */
static int64_t matmul_groups(const tsr_kdesc *d) {
    if (d->ni == 0) return 1;
    return d->i[0] >= 1 && d->i[0] <= TSR__MATMUL_MAX_GROUP ? d->i[0] : 0;
}

static int check_matmul(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                        char *err, size_t errlen) {
    int64_t g = matmul_groups(d);
    if (g == 0) FAIL("k-steps must be 1 to %d", TSR__MATMUL_MAX_GROUP);
    if (nin != 2 * g && nin != 2 * g + 1)
        FAIL("%lld k-steps take %lld or %lld inputs, got %d", (long long)g, (long long)(2 * g),
             (long long)(2 * g + 1), nin);
    if (d->ndim != 1 && d->ndim != 2) FAIL("output must be 1-d or 2-d");
    for (int64_t s = 0; s < g; s++) {
        const tsr_chunkview *a = &in[2 * s], *b = &in[2 * s + 1];
        if (a->ndim != 2) FAIL("A must be 2-d");
        if (b->ndim != d->ndim) FAIL("B must have the output's ndim");
        if (a->shape[1] != b->shape[0])
            FAIL("A.shape[1] == B.shape[0] needed, got %lld and %lld", (long long)a->shape[1],
                 (long long)b->shape[0]);
        if (d->shape[0] != a->shape[0] || (d->ndim == 2 && d->shape[1] != b->shape[1]))
            FAIL("output shape does not match A @ B");
        for (int k = 0; k < d->ndim; k++)
            if (d->shape[k] > INT32_MAX || a->shape[1] > INT32_MAX)
                FAIL("dimensions exceed BLAS's");
    }
    if (nin == 2 * g + 1) {
        int rc = check_same_as_output(d, in, nin - 1, 0, err, errlen);
        if (rc) return rc;
        if (in[nin - 1].data == out->data && in[nin - 1].dtype != d->dtype)
            FAIL("in-place accumulation needs Cprev in the output's dtype");
    }
    return 0;
}

static int check_pack(const tsr_kdesc *d, const tsr_chunkview *in, char *err, size_t errlen) {
    const tsr_chunkview *x = &in[0];
    if (d->ni != 1 || (d->i[0] != 0 && d->i[0] != 1))
        FAIL("expects i = [0] (a left operand) or [1] (a right one)");
    if ((x->dtype != TSR_FLOAT64 && x->dtype != TSR_FLOAT32) || x->ndim != 2)
        FAIL("the input must be a 2-d float tile");
    if (d->dtype != x->dtype || d->ndim != 1) FAIL("the output must be 1-d, of the input's dtype");
    int64_t len = tsr__packed_len((int)d->i[0], x->shape[0], x->shape[1]);
    if (len < 0 || d->shape[0] != len)
        FAIL("a %lld x %lld tile packs into %lld values, not %lld", (long long)x->shape[0],
             (long long)x->shape[1], (long long)len, (long long)d->shape[0]);
    return 0;
}

static int check_pack_source(const tsr_kdesc *d, char *err, size_t errlen) {
    if (d->ni < 4 || (d->i[0] != 0 && d->i[0] != 1))
        FAIL("expects i = [role (0 or 1), kop, rows, cols, the source's i...]");
    const tsr__kop_info *k = tsr__kop_info_of((int)d->i[1]);
    if (!k || d->i[1] == TSR_KOP_PACK_SOURCE || k->max_in != 0 ||
        !tsr__kop_has((int)d->i[1], TSR__KOP_RECOMPUTE))
        FAIL("family %lld is not a source that can be made anywhere", (long long)d->i[1]);
    if (d->i[2] < 0 || d->i[3] < 0) FAIL("negative tile shape");
    int64_t len = tsr__packed_len((int)d->i[0], d->i[2], d->i[3]);
    if (d->ndim != 1 || len < 0 || d->shape[0] != len)
        FAIL("a %lld x %lld tile packs into %lld values, not %lld", (long long)d->i[2],
             (long long)d->i[3], (long long)len, (long long)d->shape[0]);
    return 0;
}

/* Each step's k follows from the packed lengths: A_s holds m * k values, B_s k * n. */
static int check_matmul_packed(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                               size_t errlen) {
    int64_t g = matmul_groups(d);
    if (g == 0) FAIL("k-steps must be 1 to %d", TSR__MATMUL_MAX_GROUP);
    if (nin != 2 * g && nin != 2 * g + 1)
        FAIL("%lld k-steps take %lld or %lld inputs, got %d", (long long)g, (long long)(2 * g),
             (long long)(2 * g + 1), nin);
    if ((d->dtype != TSR_FLOAT64 && d->dtype != TSR_FLOAT32) || d->ndim != 2)
        FAIL("the output must be 2-d float");
    int64_t m = d->shape[0], n = d->shape[1], la = m, lb = n;
    for (int64_t s = 0; s < 2 * g; s++) {
        const tsr_chunkview *v = &in[s];
        if (v->dtype != d->dtype || v->ndim != 1)
            FAIL("packed operands are 1-d, of the output's dtype");
    }
    for (int64_t s = 0; s < g; s++) {
        int64_t a = in[2 * s].shape[0], b = in[2 * s + 1].shape[0];
        int64_t k = la ? a / la : lb ? b / lb : 0;
        if ((la && a != la * k) || (lb && b != lb * k) || (!la && a) || (!lb && b))
            FAIL("step %lld: packed lengths %lld and %lld do not make a %lld x k and a k x %lld "
                 "tile",
                 (long long)s, (long long)a, (long long)b, (long long)m, (long long)n);
    }
    if (nin == 2 * g + 1) {
        int rc = check_same_as_output(d, in, nin - 1, 0, err, errlen);
        if (rc) return rc;
        if (in[nin - 1].dtype != d->dtype) FAIL("Cprev must have the output's dtype");
    }
    return 0;
}

static int check_reduce(const tsr_kdesc *d, const tsr_chunkview *in, char *err, size_t errlen) {
    const tsr_chunkview *x = &in[0]; /* any dtype: a sum of bools gives int64 */
    if (d->ni > (uint32_t)x->ndim) FAIL("more axes than the input has");
    for (uint32_t k = 0; k < d->ni; k++) {
        if (d->i[k] < 0 || d->i[k] >= x->ndim) FAIL("axis %lld out of range", (long long)d->i[k]);
        if (k && d->i[k] <= d->i[k - 1]) FAIL("axes must be ascending and distinct");
    }
    /* keepdims: the output may also keep the reduced axes, with extent 1. */
    int keep = d->ndim == x->ndim && d->ni > 0;
    if (!keep && (uint32_t)d->ndim != x->ndim - d->ni)
        FAIL("output ndim does not match the reduction");
    for (int a = 0, oa = 0, k = 0; a < x->ndim; a++) {
        if ((uint32_t)k < d->ni && d->i[k] == a) {
            k++;
            if (keep && d->shape[oa++] != 1) FAIL("a kept reduced axis must have extent 1");
            continue;
        }
        if (x->shape[a] != d->shape[oa])
            FAIL("output extent %lld does not match input extent %lld on input axis %d",
                 (long long)d->shape[oa], (long long)x->shape[a], a);
        oa++;
    }
    return 0;
}

static int check_transpose(const tsr_kdesc *d, const tsr_chunkview *in, char *err, size_t errlen) {
    if (d->ni != d->ndim) FAIL("expects %d axes in the permutation, got %u", d->ndim, d->ni);
    if (in[0].ndim != d->ndim) FAIL("input ndim differs from the output's");
    if (in[0].dtype != d->dtype) FAIL("input does not have the output's dtype");
    int seen[TSR_MAX_NDIM] = {0};
    for (int j = 0; j < d->ndim; j++) {
        int64_t p = d->i[j];
        if (p < 0 || p >= d->ndim || seen[p]) FAIL("not a permutation");
        seen[p] = 1;
        if (in[0].shape[p] != d->shape[j]) FAIL("output extent mismatch on axis %d", j);
    }
    return 0;
}

/* Each input's box must lie in the array (offsets >= 0) and the intersections must add up to
 * the output exactly (inputs never overlap by contract, so this catches gaps). */
static int check_assemble(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                          size_t errlen) {
    int nd = d->ndim;
    if (nd == 0 ? d->ni != 0 : d->ni != (uint64_t)nd * (uint64_t)(nin + 1))
        FAIL("expects %d offsets, got %u", nd * (nin + 1), d->ni);
    if (nd == 0 && nin != 1) FAIL("a 0-d chunk is assembled from exactly 1 input");
    for (uint32_t k = 0; k < d->ni; k++)
        if (d->i[k] < 0 || d->i[k] > INT64_MAX / 4) FAIL("offset out of range");
    int64_t covered = 0;
    for (int k = 0; k < nin; k++) {
        if (in[k].ndim != nd) FAIL("input %d ndim differs from the output's", k);
        const int64_t *ioff = d->i + (size_t)nd * (size_t)(k + 1);
        int64_t vol = 1;
        for (int a = 0; a < nd; a++) {
            if (in[k].shape[a] > INT64_MAX / 4 || d->shape[a] > INT64_MAX / 4)
                FAIL("input %d too large", k);
            int64_t lo = TSR__MAX(d->i[a], ioff[a]);
            int64_t hi = TSR__MIN(d->i[a] + d->shape[a], ioff[a] + in[k].shape[a]);
            vol *= hi > lo ? hi - lo : 0;
        }
        covered += vol;
        if (covered > safe_nelem(nd, d->shape)) FAIL("inputs overlap");
    }
    if (covered != safe_nelem(nd, d->shape))
        FAIL("inputs cover %lld of %lld output elements", (long long)covered,
             (long long)safe_nelem(nd, d->shape));
    return 0;
}

/* STRIDED: i = [offset, stride[0..d)]; every element the output reads lies inside the input
 * chunk (the lowest and highest flat index reached, computed without overflow). */
static int check_strided(const tsr_kdesc *d, const tsr_chunkview *in, char *err, size_t errlen) {
    NEED_PARAMS(1 + d->ndim, 0);
    if (in[0].dtype != d->dtype) FAIL("input does not have the output's dtype");
    int64_t n = safe_nelem(in[0].ndim, in[0].shape);
    if (safe_nelem(d->ndim, d->shape) == 0) return 0;
    int64_t lo = d->i[0], hi = d->i[0];
    for (int a = 0; a < d->ndim; a++) {
        int64_t s = d->i[1 + a], span;
        if (__builtin_mul_overflow(s, d->shape[a] - 1, &span))
            FAIL("stride %lld out of range on axis %d", (long long)s, a);
        if ((span < 0 && __builtin_add_overflow(lo, span, &lo)) ||
            (span > 0 && __builtin_add_overflow(hi, span, &hi)))
            FAIL("strides out of range");
    }
    if (lo < 0 || hi >= n)
        FAIL("reads elements %lld to %lld of an input of %lld", (long long)lo, (long long)hi,
             (long long)n);
    return 0;
}

/* TAKE: i = [axis]; inputs X_0 .. X_(nin-2) (the output's ndim and dtype, the output's extents
 * but along axis), then a 1-d int64 index chunk as long as the output along axis. */
static int check_take(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                      size_t errlen) {
    NEED_PARAMS(1, 0);
    int64_t ax = d->i[0];
    if (ax < 0 || ax >= d->ndim) FAIL("axis %lld out of range", (long long)ax);
    const tsr_chunkview *ind = &in[nin - 1];
    if (ind->dtype != TSR_INT64 || ind->ndim != 1) FAIL("the indices must be a 1-d int64 chunk");
    if (ind->shape[0] != d->shape[ax]) FAIL("output extent differs from the indices' count");
    int64_t n = 0;
    for (int k = 0; k < nin - 1; k++) {
        if (in[k].ndim != d->ndim || in[k].dtype != d->dtype)
            FAIL("input %d does not have the output's ndim and dtype", k);
        for (int a = 0; a < d->ndim; a++)
            if (a != ax && in[k].shape[a] != d->shape[a])
                FAIL("input %d extent mismatch on axis %d", k, a);
        if (__builtin_add_overflow(n, in[k].shape[ax], &n)) FAIL("inputs too large");
    }
    return 0;
}

/* The kernel's name, the output block's place in the result, and inputs no deeper than it. */
static int check_map_blocks(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                            size_t errlen) {
    int nd = d->ndim;
    char lib[TSR__PLUGIN_NAME_MAX], sym[TSR__PLUGIN_NAME_MAX], why[160];
    if (d->ni != (uint32_t)(3 * nd)) FAIL("expects %d integer parameters, got %u", 3 * nd, d->ni);
    if (tsr__plugin_parse_name(d->s, lib, sizeof lib, sym, sizeof sym, why, sizeof why))
        FAIL("%s", why);
    for (int a = 0; a < nd; a++)
        if (d->i[nd + a] < 0) FAIL("negative block index on axis %d", a);
    for (int k = 0; k < nin; k++)
        if (in[k].ndim > nd) FAIL("input %d has more axes than the output", k);
    return check_box(d, d->i, d->i + 2 * nd, 1, 0, err, errlen);
}

/* The table's columns: how many inputs, and which sub-operations. */
static int check_row(const tsr_kdesc *d, int nin, char *err, size_t errlen) {
    const tsr__kop_info *k = tsr__kop_info_of(d->kop);
    if (nin < k->min_in || (k->max_in != TSR__ANY && nin > k->max_in)) {
        if (k->max_in == TSR__ANY)
            FAIL("expects at least %d input%s, got %d", k->min_in, k->min_in == 1 ? "" : "s", nin);
        else if (k->max_in == 0)
            FAIL("expects no inputs, got %d", nin);
        else if (k->max_in == k->min_in)
            FAIL("expects %d input%s, got %d", k->min_in, k->min_in == 1 ? "" : "s", nin);
        else
            FAIL("expects %d %s %d inputs, got %d", k->min_in,
                 k->max_in == k->min_in + 1 ? "or" : "to", k->max_in, nin);
    }
    if (k->nfn && d->fn >= k->nfn) FAIL("unknown operation %d", d->fn);
    if (!(tsr__kop_fn_dtypes(d->kop, d->fn) & TSR__DT(d->dtype)))
        FAIL("not defined for %s", tsr_dtype_name((tsr_dtype)d->dtype));
    return 0;
}

/* What each family needs beyond its row (kernels.h documents the layouts). */
static int check_family(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                        char *err, size_t errlen) {
    int nd = d->ndim;
    int rc = check_row(d, nin, err, errlen);
    if (rc) return rc;
    switch ((tsr_kop)d->kop) {
    case TSR_KOP_FILL:
        if (d->nf < 1) FAIL("expects a value");
        return 0;
    case TSR_KOP_RANDOM:
        NEED_PARAMS(1 + 2 * nd, 0);
        return check_box(d, d->i + 1, d->i + 1 + nd, 1, 0, err, errlen);
    case TSR_KOP_ARANGE:
        if (nd != 1) FAIL("output must be 1-d");
        NEED_PARAMS(1, 2);
        if (d->i[0] < 0 || d->i[0] > INT64_MAX - d->shape[0]) FAIL("offset out of range");
        return 0;
    case TSR_KOP_LOAD:
        if (d->fn == TSR__LOAD_ZARR) {
            NEED_PARAMS(3 + 3 * nd, 1);
            if (!d->s || !d->s[0]) FAIL("no path");
            if (d->i[0] < 0 || d->i[0] >= TSR_DTYPE_COUNT)
                FAIL("invalid file dtype %lld", (long long)d->i[0]);
            if (d->i[1] < 0 || d->i[1] >= TSR__ZC_COUNT)
                FAIL("unknown codec %lld", (long long)d->i[1]);
            if (d->i[2] != '.' && d->i[2] != '/') FAIL("invalid dimension separator");
            for (int a = 0; a < nd; a++)
                if (d->i[3 + nd + a] < 1)
                    FAIL("chunk size %lld on axis %d", (long long)d->i[3 + nd + a], a);
            if (safe_nelem(nd, d->i + 3 + nd) < 0 || safe_nelem(nd, d->i + 3 + nd) > INT64_MAX / 8)
                FAIL("store chunks too large");
            return check_box(d, d->i + 3, d->i + 3 + 2 * nd, 1, 0, err, errlen);
        }
        NEED_PARAMS(2 + 2 * nd, 0);
        if (!d->s || !d->s[0]) FAIL("no path");
        if (d->i[0] < 0) FAIL("negative data offset");
        if (d->i[1] < 0 || d->i[1] >= TSR_DTYPE_COUNT)
            FAIL("invalid file dtype %lld", (long long)d->i[1]);
        return check_box(d, d->i + 2, d->i + 2 + nd, (int64_t)tsr_dtype_size((tsr_dtype)d->i[1]),
                         d->i[0], err, errlen);
    case TSR_KOP_UNARY: /* the input may have another dtype: sqrt of int64 gives float64 */
        return check_same_as_output(d, in, 0, 0, err, errlen);
    case TSR_KOP_BINARY:
        return check_broadcast(d, in, 2, err, errlen);
    case TSR_KOP_BINARY_SCALAR:
        if (d->nf < 1 || d->ni < 1) FAIL("expects a scalar and its side");
        return check_same_as_output(d, in, 0, 0, err, errlen);
    case TSR_KOP_MATMUL:
        return check_matmul(d, in, nin, out, err, errlen);
    case TSR_KOP_TRANSPOSE:
        return check_transpose(d, in, err, errlen);
    case TSR_KOP_REDUCE:
        return check_reduce(d, in, err, errlen);
    case TSR_KOP_COMBINE:
        if (d->nf < 1) FAIL("expects a scale");
        for (int k = 0; k < nin; k++) {
            rc = check_same_as_output(d, in, k, 0, err, errlen);
            if (rc) return rc;
        }
        return 0;
    case TSR_KOP_ASSEMBLE:
        return check_assemble(d, in, nin, err, errlen);
    case TSR_KOP_ASTYPE:
        return check_same_as_output(d, in, 0, 0, err, errlen);
    case TSR_KOP_COMPARE:
        if (d->fn < TSR_LESS || d->fn > TSR_LOGICAL_OR)
            FAIL("%s is not a comparison", tsr__binary_name(d->fn));
        if ((nin == 2 ? d->ni != 1 : d->ni != 2 && d->ni != 3) ||
            d->nf != (uint32_t)(nin == 2 ? 0 : 1))
            FAIL("expects %s",
                 nin == 2 ? "i = [dtype]" : "i = [dtype, scalar_first], f = [scalar]");
        if (d->i[0] < 0 || d->i[0] >= TSR_DTYPE_COUNT)
            FAIL("invalid compute dtype %lld", (long long)d->i[0]);
        return check_broadcast(d, in, nin, err, errlen);
    case TSR_KOP_PREDICATE:
        if (d->fn != TSR_LOGICAL_NOT && d->fn != TSR_ISNAN && d->fn != TSR_ISFINITE)
            FAIL("%s is not a predicate", tsr__unary_name(d->fn));
        return check_same_as_output(d, in, 0, 0, err, errlen);
    case TSR_KOP_WHERE:
        if ((d->ni != 2 && d->ni != 6) || d->nf != 2)
            FAIL("expects 2 or 6 integer and 2 float parameters, got %u and %u", d->ni, d->nf);
        if ((d->i[0] != 0 && d->i[0] != 1) || (d->i[1] != 0 && d->i[1] != 1) ||
            (d->ni == 6 && ((d->i[2] != 0 && d->i[2] != 1) || (d->i[4] != 0 && d->i[4] != 1))))
            FAIL("scalar flags must be 0 or 1");
        if (nin != 3 - (int)d->i[0] - (int)d->i[1])
            FAIL("expects %d inputs, got %d", 3 - (int)d->i[0] - (int)d->i[1], nin);
        return check_broadcast(d, in, nin, err, errlen);
    case TSR_KOP_NORMAL:
        NEED_PARAMS(1 + 2 * nd, 2);
        return check_box(d, d->i + 1, d->i + 1 + nd, 1, 0, err, errlen);
    case TSR_KOP_EYE:
        return tsr__check_eye(d, err, errlen);
    case TSR_KOP_CONTRACT:
        return tsr__check_contract(d, in, nin, out, err, errlen);
    case TSR_KOP_DATA:
        /* The chunk's bytes, packed 8 to an integer parameter (kernels.h). */
        if ((uint64_t)d->ni < (tsr__kdesc_nbytes(d) + 7) / 8)
            FAIL("expects %llu bytes of data, got %llu", (unsigned long long)tsr__kdesc_nbytes(d),
                 (unsigned long long)d->ni * 8);
        return 0;
    case TSR_KOP_HELD:
        if (d->ni < 2) FAIL("expects the held chunk's job and task");
        if (nin != 1)
            FAIL("the held chunk (%lld,%lld) did not arrive", (long long)d->i[0],
                 (long long)d->i[1]);
        return check_same_as_output(d, in, 0, 1, err, errlen);
    case TSR_KOP_REDUCE2:
        return tsr__check_reduce2(d, in, nin, err, errlen);
    case TSR_KOP_COMBINE2:
        return tsr__check_combine2(d, in, nin, err, errlen);
    case TSR_KOP_SCAN:
        return tsr__check_scan(d, in, nin, err, errlen);
    case TSR_KOP_STRIDED:
        return check_strided(d, in, err, errlen);
    case TSR_KOP_TAKE:
        return check_take(d, in, nin, err, errlen);
    case TSR_KOP_MAP_BLOCKS:
        return check_map_blocks(d, in, nin, err, errlen);
    case TSR_KOP_FUSED:
        return tsr__fused_check(d, in, nin, err, errlen);
    case TSR_KOP_PACK:
        return check_pack(d, in, err, errlen);
    case TSR_KOP_MATMUL_PACKED:
        return check_matmul_packed(d, in, nin, err, errlen);
    case TSR_KOP_PACK_SOURCE:
        return check_pack_source(d, err, errlen);
    case TSR_KOP_COUNT:
        break;
    }
    FAIL("unknown kernel family");
}

int tsr__kernel_run(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                    tsr_device dev, char *err, size_t errlen) {
    if (errlen) err[0] = '\0';
    if (!d) {
        tsr__fmt(err, errlen, "no kernel descriptor");
        return TSR_EINVALID;
    }
    int rc = check_views(d, in, nin, out, err, errlen);
    if (!rc) rc = check_family(d, in, nin, out, err, errlen);
    if (rc) return rc;
    /* The GPU kernels read float inputs only (docs/gpu.md): the worker runs the rest on its
     * host.
     */
    for (int k = 0; k < nin && dev == TSR_DEVICE_GPU; k++)
        if (in[k].dtype != TSR_FLOAT64 && in[k].dtype != TSR_FLOAT32) {
            tsr__fmt(err, errlen, "%s kernel: no GPU kernel for %s inputs", tsr__kop_name(d->kop),
                     tsr_dtype_name((tsr_dtype)in[k].dtype));
            return TSR_EUNSUPPORTED;
        }
    tsr_kernel_fn fn = tsr__kernel_lookup(d->kop, d->dtype, dev);
    if (!fn) {
        tsr__fmt(err, errlen, "%s kernel: no %s kernel for %s", tsr__kop_name(d->kop),
                 dev == TSR_DEVICE_CPU ? "CPU" : "GPU", tsr_dtype_name((tsr_dtype)d->dtype));
        return TSR_EUNSUPPORTED;
    }
    return fn(d, in, nin, out, err, errlen);
}

/* ---- aliasing ------------------------------------------------------------------------------
 */

/* The table's alias column decides; here only what every family shares: input k must have the
 * output's shape and dtype (so output element j overwrites exactly input element j). */
/* BYTES: a STRIDED descriptor that reads input 0 in order, element j from element j (offset 0,
 * the output's C strides, as many elements), so output and input are the same bytes. */
static int copies_bytes(const tsr_kdesc *d, const tsr_chunkview *in, int k) {
    if (k != 0 || d->kop != TSR_KOP_STRIDED || d->ni != 1u + d->ndim || !d->i || d->i[0] != 0)
        return 0;
    if (in[0].dtype != d->dtype || in[0].ndim > TSR_MAX_NDIM) return 0;
    int64_t n = safe_nelem(d->ndim, d->shape), s = 1;
    if (n <= 0 || safe_nelem(in[0].ndim, in[0].shape) != n) return 0;
    for (int a = d->ndim - 1; a >= 0; a--) {
        if (d->shape[a] > 1 && d->i[1 + a] != s) return 0;
        s *= d->shape[a];
    }
    return 1;
}

int tsr__kernel_may_alias(const tsr_kdesc *d, const tsr_chunkview *in, int nin, int k) {
    const tsr__kop_info *row = d ? tsr__kop_info_of(d->kop) : NULL;
    if (!row || !in || k < 0 || k >= nin || d->ndim > TSR_MAX_NDIM) return 0;
    if (nin < row->min_in || (row->max_in != TSR__ANY && nin > row->max_in)) return 0;
    if (row->alias == TSR__ALIAS_BYTES) return copies_bytes(d, in, k);
    if (row->alias == TSR__ALIAS_SIZE) /* PACK: a tile becomes its packing, same dtype, same size */
        return k == 0 && in[0].dtype == d->dtype && in[0].ndim == 2 && d->ndim == 1 &&
               tsr__packed_len(0, in[0].shape[0], in[0].shape[1]) == d->shape[0];
    if (in[k].dtype != d->dtype || !same_shape(&in[k], d)) return 0;
    switch (row->alias) {
    case TSR__ALIAS_ANY:
        return 1;
    case TSR__ALIAS_LAST: /* matmul's and contract's Cprev, when given (i[0]: contract's steps)
                           */
        if (d->kop == TSR_KOP_CONTRACT)
            return k == nin - 1 && d->ni >= 1 && d->i && d->i[0] >= 1 &&
                   d->i[0] <= TSR__MATMUL_MAX_GROUP && nin == 2 * d->i[0] + 1;
        return k == nin - 1 && (d->kop == TSR_KOP_MATMUL || d->kop == TSR_KOP_MATMUL_PACKED) &&
               nin == 2 * matmul_groups(d) + 1;
    case TSR__ALIAS_NONE:
    case TSR__ALIAS_BYTES:
    case TSR__ALIAS_SIZE:
        break;
    }
    return 0;
}
