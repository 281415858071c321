/* The GPU kernels' host side: one function per kernel family, for float64 and float32 alike (the
 * device code in kernels.cu is templated per dtype), and the GPU kernel table. Each follows its
 * CPU kernel (kernels/cpu_tmpl.c) step for step: the same index merging, conversions, BLAS call
 * sequence and fold order where order matters, with data on the device. Kernels trust their
 * arguments (tsr__kernel_run checked them, as for the CPU), launch on the compute stream of the
 * calling thread's context (devops.c) and never wait for the device. */
#include <errno.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cuda/cuda_priv.h"
#include "kernels/cuda/launch.h"
#include "kernels/kernels_priv.h"

#define KERNEL(name)                                                                               \
    static int name(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,      \
                    char *err, size_t errlen)

/* The calling thread's context, or a TSR_EINVALID return: GPU kernels run inside the CUDA
 * backend's run(), which sets it. */
#define CONTEXT(c)                                                                                 \
    tsr__cuda_ctx *c = tsr__cuda_current();                                                        \
    if (!c) {                                                                                      \
        tsr__fmt(err, errlen, "%s GPU kernel: no CUDA context on this thread",                     \
                 tsr__kop_name(d->kop));                                                           \
        return TSR_EINVALID;                                                                       \
    }

static int64_t nelem(const tsr_chunkview *v) {
    return tsr__shape_nelem(v->ndim, v->shape);
}

static size_t esize(int dtype) {
    return tsr_dtype_size((tsr_dtype)dtype);
}

/* A launcher's result: 0, or TSR_ECOMPUTE with CUDA's message. */
static int launched(const tsr_kdesc *d, int e, char *err, size_t errlen) {
    if (!e) return 0;
    (void)cudaGetLastError();
    tsr__fmt(err, errlen, "%s GPU kernel: CUDA: %s", tsr__kop_name(d->kop),
             cudaGetErrorString((cudaError_t)e));
    return TSR_ECOMPUTE;
}

static int blas_failed(const tsr_kdesc *d, cublasStatus_t s, char *err, size_t errlen) {
    tsr__fmt(err, errlen, "%s GPU kernel: cuBLAS: %s", tsr__kop_name(d->kop),
             cublasGetStatusString(s));
    return TSR_ECOMPUTE;
}

static int no_scratch(const tsr_kdesc *d, char *err, size_t errlen) {
    tsr__fmt(err, errlen, "%s GPU kernel: out of device memory for scratch", tsr__kop_name(d->kop));
    return -ENOMEM;
}

/* The walk over nd axes of extent ext (outermost first) with strides s0 and s1 (NULL: zeros)
 * as launch.h's index: unit axes dropped, an axis merged into its outer neighbour when both
 * strides continue it (as the CPU kernels merge), then stored innermost first. */
static void make_index(tsr__cu_index *ix, int nd, const int64_t *ext, const int64_t *s0,
                       const int64_t *s1) {
    int64_t e[TSR_MAX_NDIM], a0[TSR_MAX_NDIM], a1[TSR_MAX_NDIM];
    int m = 0;
    for (int ax = 0; ax < nd; ax++) {
        int64_t t0 = s0 ? s0[ax] : 0, t1 = s1 ? s1[ax] : 0;
        if (ext[ax] == 1) continue;
        if (m && a0[m - 1] == t0 * ext[ax] && a1[m - 1] == t1 * ext[ax]) {
            e[m - 1] *= ext[ax];
            a0[m - 1] = t0;
            a1[m - 1] = t1;
            continue;
        }
        e[m] = ext[ax];
        a0[m] = t0;
        a1[m] = t1;
        m++;
    }
    memset(ix, 0, sizeof *ix);
    ix->m = m;
    for (int k = 0; k < m; k++) {
        ix->ext[k] = e[m - 1 - k];
        ix->s0[k] = a0[m - 1 - k];
        ix->s1[k] = a1[m - 1 - k];
    }
}

/* ---- sources and elementwise ---------------------------------------------------------------- */

KERNEL(g_fill) {
    CONTEXT(c);
    return launched(d, tsr__cu_fill(d->dtype, out->data, nelem(out), d->f[0], c->compute), err,
                    errlen);
}

/* i = [seed, gshape[0..nd), offset[0..nd)]: chunk element idx is global element
 * sum((offset + idx) * gstride). */
KERNEL(g_random) {
    CONTEXT(c);
    int nd = d->ndim;
    const int64_t *gshape = d->i + 1, *off = d->i + 1 + nd;
    int64_t gstride[TSR_MAX_NDIM];
    tsr__shape_strides(nd, gshape, gstride);
    uint64_t gbase = 0;
    for (int a = 0; a < nd; a++) gbase += (uint64_t)(off[a] * gstride[a]);
    tsr__cu_index ix;
    make_index(&ix, nd, out->shape, gstride, NULL);
    return launched(
        d,
        tsr__cu_random(d->dtype, out->data, nelem(out), (uint64_t)d->i[0], gbase, &ix, c->compute),
        err, errlen);
}

KERNEL(g_arange) {
    CONTEXT(c);
    return launched(
        d, tsr__cu_arange(d->dtype, out->data, nelem(out), d->f[0], d->f[1], d->i[0], c->compute),
        err, errlen);
}

KERNEL(g_unary) {
    CONTEXT(c);
    return launched(d,
                    tsr__cu_unary(d->dtype, d->fn, out->data, in[0].data, nelem(out), c->compute),
                    err, errlen);
}

/* Strides of input v on the output's axes: right-aligned, 0 on broadcast axes (as the CPU's
 * broadcast_strides). */
static void broadcast_strides(const tsr_chunkview *v, const tsr_chunkview *out, int64_t *st) {
    int64_t own[TSR_MAX_NDIM];
    tsr__shape_strides(v->ndim, v->shape, own);
    int lead = out->ndim - v->ndim;
    for (int ax = 0; ax < out->ndim; ax++) {
        int ia = ax - lead;
        st[ax] = ia < 0 || (v->shape[ia] == 1 && out->shape[ax] != 1) ? 0 : own[ia];
    }
}

/* Inputs of either dtype are converted to the output's as they are read. */
KERNEL(g_binary) {
    CONTEXT(c);
    int64_t sa[TSR_MAX_NDIM] = {0}, sb[TSR_MAX_NDIM] = {0};
    broadcast_strides(&in[0], out, sa);
    broadcast_strides(&in[1], out, sb);
    tsr__cu_index ix;
    make_index(&ix, out->ndim, out->shape, sa, sb);
    return launched(d,
                    tsr__cu_binary(d->dtype, d->fn, out->data, in[0].data, in[0].dtype, 0,
                                   in[1].data, in[1].dtype, 0, nelem(out), &ix, c->compute),
                    err, errlen);
}

/* f = [scalar], i = [scalar_first]: the scalar is taken in the output dtype. */
KERNEL(g_binary_scalar) {
    CONTEXT(c);
    int64_t n = nelem(out), one = 1;
    tsr__cu_index ix;
    make_index(&ix, 1, &n, &one, &one);
    int first = d->i[0] != 0;
    const void *x = in[0].data;
    return launched(d,
                    tsr__cu_binary(d->dtype, d->fn, out->data, first ? NULL : x, d->dtype, d->f[0],
                                   first ? x : NULL, d->dtype, d->f[0], n, &ix, c->compute),
                    err, errlen);
}

/* n elements of dtype idt at src into dst as dtype odt, on the compute stream. */
static int convert(tsr__cuda_ctx *c, int odt, void *dst, int idt, const void *src, int64_t n) {
    if (n == 0 || (odt == idt && dst == src)) return 0;
    if (odt == idt)
        return (int)cudaMemcpyAsync(dst, src, (size_t)n * esize(odt), cudaMemcpyDeviceToDevice,
                                    c->compute);
    return tsr__cu_convert(odt, dst, idt, src, n, c->compute);
}

KERNEL(g_astype) {
    CONTEXT(c);
    return launched(d, convert(c, d->dtype, out->data, in[0].dtype, in[0].data, nelem(out)), err,
                    errlen);
}

/* ---- matmul --------------------------------------------------------------------------------- */

/* One cuBLAS call of a k-step: C (m x n) = A (m x k) @ B (k x n) + beta C in row-major order is
 * C^T = B^T A^T + beta C^T in cuBLAS's column-major order, with the same buffers; for a 1-d B,
 * y = A x is A^T's transpose times x. */
static cublasStatus_t gemm_step(tsr__cuda_ctx *c, const tsr_chunkview *out, const void *a,
                                const void *b, int64_t m, int64_t n, int64_t k, int accumulate) {
    int im = (int)m, in = (int)n, ik = (int)k;
    if (out->dtype == TSR_FLOAT64) {
        const double one = 1, beta = accumulate ? 1 : 0;
        if (out->ndim == 2)
            return cublasDgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, im, ik, &one, b, in, a, ik,
                               &beta, out->data, in);
        return cublasDgemv(c->blas, CUBLAS_OP_T, ik, im, &one, a, ik, b, 1, &beta, out->data, 1);
    }
    const float one = 1, beta = accumulate ? 1 : 0;
    if (out->ndim == 2)
        return cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, im, ik, &one, b, in, a, ik, &beta,
                           out->data, in);
    return cublasSgemv(c->blas, CUBLAS_OP_T, ik, im, &one, a, ik, b, 1, &beta, out->data, 1);
}

/* An input's data in the output dtype: its own buffer, or a converted copy in scratch (*tmp,
 * which the caller releases). NULL when the device has no room. */
static const void *input_as(tsr__cuda_ctx *c, const tsr_chunkview *v, int dtype, void **tmp,
                            int *rc) {
    *tmp = NULL;
    *rc = 0;
    if (v->dtype == dtype) return v->data;
    int64_t n = nelem(v);
    *tmp = tsr__cuda_scratch(c, (size_t)n * esize(dtype));
    if (!*tmp) return NULL;
    *rc = tsr__cu_convert(dtype, *tmp, v->dtype, v->data, n, c->compute);
    return *tmp;
}

/* A matmul's running sum starts as Cprev (the last input, when have), converted into the output
 * unless it is the output. */
static int start_sum(tsr__cuda_ctx *c, const tsr_kdesc *d, const tsr_chunkview *in, int nin,
                     tsr_chunkview *out, int64_t n, int have, char *err, size_t errlen) {
    if (!have) return 0;
    const tsr_chunkview *cp = &in[nin - 1];
    return launched(d, convert(c, d->dtype, out->data, cp->dtype, cp->data, n), err, errlen);
}

/* out = Cprev + A_0 @ B_0 + A_1 @ B_1 + ..., one cuBLAS call per k-step in order with beta = 1
 * after the first (kernels.h), Cprev copied into the output first unless it is the output. */
KERNEL(g_matmul) {
    CONTEXT(c);
    int64_t g = d->ni ? d->i[0] : 1;
    int64_t m = out->shape[0];
    int64_t n = out->ndim == 2 ? out->shape[1] : 1;
    int have = nin == 2 * g + 1; /* the output holds a running sum */
    int rc = start_sum(c, d, in, nin, out, m * n, have, err, errlen);
    if (rc) return rc;
    if (m == 0 || n == 0) return 0;
    for (int64_t s = 0; s < g; s++) {
        int64_t k = in[2 * s].shape[1];
        if (k == 0) continue;
        void *ta, *tb;
        int ea, eb;
        const void *a = input_as(c, &in[2 * s], d->dtype, &ta, &ea);
        const void *b = input_as(c, &in[2 * s + 1], d->dtype, &tb, &eb);
        cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
        if (a && b && !ea && !eb) st = gemm_step(c, out, a, b, m, n, k, have);
        tsr__cuda_scratch_free(c, ta);
        tsr__cuda_scratch_free(c, tb);
        if (!a || !b) return no_scratch(d, err, errlen);
        if ((rc = launched(d, ea ? ea : eb, err, errlen))) return rc;
        if (st != CUBLAS_STATUS_SUCCESS) return blas_failed(d, st, err, errlen);
        have = 1;
    }
    if (!have)
        return launched(
            d, (int)cudaMemsetAsync(out->data, 0, (size_t)(m * n) * esize(d->dtype), c->compute),
            err, errlen);
    return 0;
}

/* A packed tile laid out plainly (kernels.h's layouts): the full panels by one gather, the last,
 * narrower one (w wide) by another. Left: o is m x k; right: o is k x n. */
static int unpack(tsr__cuda_ctx *c, int dt, int role, const void *pv, int64_t m, int64_t n,
                  int64_t k, void *ov) {
    const int64_t U = role == 0 ? TSR__PACK_MR : TSR__PACK_NR(dt), side = role == 0 ? m : n;
    int64_t full = side / U * U, w = side - full, es = (int64_t)esize(dt);
    const char *p = pv;
    char *o = ov;
    tsr__cu_index ix;
    int rc = 0;
    if (full && role == 0) { /* o[p*MR + r][s] = p[p][s][r] */
        int64_t e[3] = {full / U, U, k}, si[3] = {U * k, 1, U}, so[3] = {U * k, k, 1};
        make_index(&ix, 3, e, si, so);
        rc = tsr__cu_gather(dt, o, dt, p, full * k, &ix, c->compute);
    } else if (full) { /* o[s][q*NR + c] = p[q][s][c] */
        int64_t e[3] = {k, full / U, U}, si[3] = {U, U * k, 1}, so[3] = {n, U, 1};
        make_index(&ix, 3, e, si, so);
        rc = tsr__cu_gather(dt, o, dt, p, full * k, &ix, c->compute);
    }
    if (rc || !w) return rc;
    if (role == 0) { /* rows full.. of o, from the last panel at full * k: [s][r] */
        int64_t e[2] = {w, k}, si[2] = {1, w}, so[2] = {k, 1};
        make_index(&ix, 2, e, si, so);
        return tsr__cu_gather(dt, o + full * k * es, dt, p + full * k * es, w * k, &ix, c->compute);
    }
    int64_t e[2] = {k, w}, si[2] = {w, 1}, so[2] = {n, 1};
    make_index(&ix, 2, e, si, so);
    return tsr__cu_gather(dt, o + full * es, dt, p + full * k * es, w * k, &ix, c->compute);
}

/* MATMUL_PACKED (kernels.h): each step's packed tiles are laid out plainly in scratch, then one
 * cuBLAS call as MATMUL's. */
KERNEL(g_matmul_packed) {
    CONTEXT(c);
    int64_t g = d->ni ? d->i[0] : 1, m = out->shape[0], n = out->shape[1];
    size_t es = esize(d->dtype);
    int have = nin == 2 * g + 1;
    int rc = start_sum(c, d, in, nin, out, m * n, have, err, errlen);
    if (rc) return rc;
    if (m == 0 || n == 0) return 0;
    for (int64_t s = 0; s < g; s++) {
        int64_t k = in[2 * s].shape[0] / m;
        if (k == 0) continue;
        void *a = tsr__cuda_scratch(c, (size_t)(m * k) * es);
        void *b = a ? tsr__cuda_scratch(c, (size_t)(k * n) * es) : NULL;
        if (!b) {
            tsr__cuda_scratch_free(c, a);
            return no_scratch(d, err, errlen);
        }
        rc = unpack(c, d->dtype, 0, in[2 * s].data, m, n, k, a);
        if (!rc) rc = unpack(c, d->dtype, 1, in[2 * s + 1].data, m, n, k, b);
        cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
        if (!rc) st = gemm_step(c, out, a, b, m, n, k, have);
        tsr__cuda_scratch_free(c, a);
        tsr__cuda_scratch_free(c, b);
        if ((rc = launched(d, rc, err, errlen))) return rc;
        if (st != CUBLAS_STATUS_SUCCESS) return blas_failed(d, st, err, errlen);
        have = 1;
    }
    if (!have)
        return launched(d, (int)cudaMemsetAsync(out->data, 0, (size_t)(m * n) * es, c->compute),
                        err, errlen);
    return 0;
}

/* ---- transpose ------------------------------------------------------------------------------ */

/* Output axis j reads input axis perm[j]. After merging (as the CPU does), either the output's
 * last axis is contiguous in the input too (a gather reads and writes rows), or the input's
 * contiguous axis p is another output axis: then each (p, last) plane is a 2-d transpose
 * through shared-memory tiles, planes indexed by the remaining axes. */
KERNEL(g_transpose) {
    CONTEXT(c);
    int nd = out->ndim;
    int64_t n = nelem(out);
    if (n == 0) return 0;
    int64_t istr[TSR_MAX_NDIM], pstr[TSR_MAX_NDIM], ostr[TSR_MAX_NDIM];
    tsr__shape_strides(nd, in[0].shape, istr);
    tsr__shape_strides(nd, out->shape, ostr);
    for (int j = 0; j < nd; j++) pstr[j] = istr[d->i[j]];
    tsr__cu_index ix;
    make_index(&ix, nd, out->shape, pstr, ostr);
    if (ix.m == 0 || ix.s0[0] == 1)
        return launched(
            d, tsr__cu_gather(d->dtype, out->data, d->dtype, in[0].data, n, &ix, c->compute), err,
            errlen);
    int p = 1;
    while (ix.s0[p] != 1) p++; /* exists: the input's innermost non-unit axis has stride 1 */
    /* The planes: every merged axis but 0 (the output's last) and p, outermost first. */
    int64_t pe[TSR_MAX_NDIM] = {0}, p0[TSR_MAX_NDIM] = {0}, p1[TSR_MAX_NDIM] = {0};
    int mp = 0;
    for (int k = ix.m - 1; k >= 1; k--) {
        if (k == p) continue;
        pe[mp] = ix.ext[k];
        p0[mp] = ix.s0[k];
        p1[mp] = ix.s1[k];
        mp++;
    }
    tsr__cu_index pix;
    make_index(&pix, mp, pe, p0, p1);
    int64_t planes = tsr__shape_nelem(mp, pe);
    return launched(d,
                    tsr__cu_transpose2d(d->dtype, out->data, in[0].data, ix.ext[p], ix.ext[0],
                                        ix.s1[p], ix.s0[0], planes, &pix, c->compute),
                    err, errlen);
}

/* ---- reductions ----------------------------------------------------------------------------- */

/* How one pass cuts `terms` terms of each of `outs` outputs. Contiguous terms, enough of them:
 * a block per segment of THREADS x ITEMS terms, folded as a tree. Otherwise a thread per
 * output, in order (so few terms give exactly the CPU's sums), cut into segments only when
 * there are too few outputs to fill the device. Depends on the shapes only, so a chunk reduces
 * the same way on every run and device. */
static void reduce_plan(const tsr__cu_index *rix, int64_t outs, int64_t terms, int *block,
                        int64_t *seglen, int64_t *nseg) {
    const int64_t threads_wanted = 65536, min_seg = 32;
    if (rix->m > 0 && rix->s0[0] == 1 && terms >= 2 * TSR__CU_REDUCE_THREADS) {
        *block = 1;
        *seglen = (int64_t)TSR__CU_REDUCE_THREADS * TSR__CU_REDUCE_ITEMS;
    } else {
        *block = 0;
        int64_t want = outs < threads_wanted ? (threads_wanted + outs - 1) / outs : 1;
        int64_t most = (terms + min_seg - 1) / min_seg;
        int64_t segs = terms > 2 * min_seg ? TSR__MIN(want, most) : 1;
        *seglen = segs > 1 ? (terms + segs - 1) / segs : terms;
    }
    *nseg = *seglen > 0 ? (terms + *seglen - 1) / *seglen : 1;
    if (*nseg < 1) *nseg = 1;
}

/* i = [axes...]. Output o's terms are the input elements with its kept indices, in row-major
 * order of the reduced ones; each pass folds segments of them in double, and writes either the
 * output or a partial per segment, which the next pass reduces (as one more contiguous axis)
 * with the same fold. */
KERNEL(g_reduce) {
    CONTEXT(c);
    const tsr_chunkview *x = &in[0];
    int64_t outs = nelem(out), nx = nelem(x);
    if (outs == 0) return 0;
    if (nx == 0 && !tsr__reduce_has_identity(d->fn)) {
        tsr__fmt(err, errlen, "reduce: %s of an empty selection", tsr__reduce_name(d->fn));
        return TSR_EINVALID;
    }
    double init = 0.0;
#define INIT_CASE(E, name, init_, ...)                                                             \
    case TSR_##E:                                                                                  \
        init = (init_);                                                                            \
        break;
    switch (d->fn) {
        TSR__REDUCE_MAP(INIT_CASE)
    default:
        break;
    }
#undef INIT_CASE
    int reduced[TSR_MAX_NDIM] = {0};
    for (uint32_t k = 0; k < d->ni; k++) reduced[d->i[k]] = 1;
    int64_t istr[TSR_MAX_NDIM], ke[TSR_MAX_NDIM] = {0}, ks[TSR_MAX_NDIM] = {0},
                                re[TSR_MAX_NDIM] = {0}, rs[TSR_MAX_NDIM] = {0};
    tsr__shape_strides(x->ndim, x->shape, istr);
    int nk = 0, nr = 0;
    for (int a = 0; a < x->ndim; a++) {
        if (reduced[a]) {
            re[nr] = x->shape[a];
            rs[nr++] = istr[a];
        } else {
            ke[nk] = x->shape[a];
            ks[nk++] = istr[a];
        }
    }
    tsr__cu_index kix, rix;
    make_index(&kix, nk, ke, ks, NULL);
    make_index(&rix, nr, re, rs, NULL);
    int64_t terms = tsr__shape_nelem(nr, re);

    const void *src = x->data;
    int srcdt = x->dtype;
    void *prev = NULL; /* scratch holding src, once src is a pass's partials */
    for (;;) {
        int block;
        int64_t seglen, nseg;
        reduce_plan(&rix, outs, terms, &block, &seglen, &nseg);
        void *dst = out->data;
        if (nseg > 1 && !(dst = tsr__cuda_scratch(c, (size_t)(outs * nseg) * sizeof(double)))) {
            tsr__cuda_scratch_free(c, prev);
            return no_scratch(d, err, errlen);
        }
        int e = tsr__cu_reduce(d->fn, block, srcdt, src, &kix, &rix, outs, terms, seglen, nseg,
                               init, d->dtype, dst, c->compute);
        tsr__cuda_scratch_free(c, prev);
        if (e || nseg == 1) {
            if (nseg > 1) tsr__cuda_scratch_free(c, dst);
            return launched(d, e, err, errlen);
        }
        /* Next: partial[o * nseg + seg], nseg contiguous terms per output. */
        int64_t one = 1;
        make_index(&kix, 1, &outs, &nseg, NULL);
        make_index(&rix, 1, &nseg, &one, NULL);
        terms = nseg;
        src = prev = dst;
        srcdt = TSR_FLOAT64;
    }
}

/* f = [scale]. ((in0 op in1) op in2) ... in double for each element, scaled and rounded once;
 * beyond TSR__CU_COMBINE_MAX inputs the double accumulators wait in scratch between launches.
 * The output may be any input: each element is read before it is written. */
KERNEL(g_combine) {
    CONTEXT(c);
    int64_t n = nelem(out);
    if (n == 0) return 0;
    double *acc = NULL;
    if (nin > TSR__CU_COMBINE_MAX && !(acc = tsr__cuda_scratch(c, (size_t)n * sizeof(double))))
        return no_scratch(d, err, errlen);
    int e = 0;
    for (int k0 = 0; k0 < nin && !e; k0 += TSR__CU_COMBINE_MAX) {
        tsr__cu_inputs group;
        memset(&group, 0, sizeof group);
        group.k = TSR__MIN(TSR__CU_COMBINE_MAX, nin - k0);
        for (int k = 0; k < group.k; k++) {
            group.p[k] = in[k0 + k].data;
            group.dt[k] = in[k0 + k].dtype;
        }
        e = tsr__cu_combine(d->dtype, d->fn, out->data, acc, k0 == 0,
                            k0 + TSR__CU_COMBINE_MAX >= nin, &group, d->f[0], n, c->compute);
    }
    tsr__cuda_scratch_free(c, acc);
    return launched(d, e, err, errlen);
}

/* ---- assemble ------------------------------------------------------------------------------- */

/* i = [out_offset[0..nd), in0_offset[0..nd), ...]: each input's intersection with the output box
 * is gathered into place, converted to the output dtype; one launch per input. */
KERNEL(g_assemble) {
    CONTEXT(c);
    int nd = out->ndim;
    const int64_t *ooff = d->i;
    if (nelem(out) == 0) return 0;
    if (nd == 0)
        return launched(d, convert(c, d->dtype, out->data, in[0].dtype, in[0].data, 1), err,
                        errlen);
    int64_t ostr[TSR_MAX_NDIM];
    tsr__shape_strides(nd, out->shape, ostr);
    for (int k = 0; k < nin; k++) {
        const tsr_chunkview *v = &in[k];
        const int64_t *ioff = d->i + (size_t)nd * (size_t)(k + 1);
        int64_t ext[TSR_MAX_NDIM], istr[TSR_MAX_NDIM], sbase = 0, dbase = 0;
        int empty = 0;
        tsr__shape_strides(nd, v->shape, istr);
        for (int a = 0; a < nd; a++) {
            int64_t lo = TSR__MAX(ooff[a], ioff[a]);
            int64_t hi = TSR__MIN(ooff[a] + out->shape[a], ioff[a] + v->shape[a]);
            if (hi <= lo) empty = 1;
            ext[a] = hi - lo;
            sbase += (lo - ioff[a]) * istr[a];
            dbase += (lo - ooff[a]) * ostr[a];
        }
        if (empty) continue;
        tsr__cu_index ix;
        make_index(&ix, nd, ext, istr, ostr);
        int e = tsr__cu_gather(d->dtype, (char *)out->data + (size_t)dbase * esize(d->dtype),
                               v->dtype, (const char *)v->data + (size_t)sbase * esize(v->dtype),
                               tsr__shape_nelem(nd, ext), &ix, c->compute);
        if (e) return launched(d, e, err, errlen);
    }
    return 0;
}

/* One entry per row of the operations table: family NAME's GPU kernel is g_NAME. File reads, and
 * issue 13's comparisons, predicates, where, linear-algebra families, DATA/HELD, reductions,
 * scans and structural copies have none yet: their CPU kernels run on the GPU worker's host
 * thread (docs/gpu.md). A missing kernel does not compile. */
#define g_load NULL
/* The dtype-generic families (comparisons, predicates, where) are CPU-only (docs/gpu.md). */
#define g_compare NULL
#define g_predicate NULL
#define g_where NULL
#define g_normal NULL
#define g_eye NULL
#define g_contract NULL
#define g_data NULL
#define g_held NULL
/* Issue 13's reductions and scans have CPU kernels only: a GPU worker runs them on its host. */
#define g_reduce2 NULL
#define g_combine2 NULL
#define g_scan NULL
/* The structural copies run on the host too (docs/gpu.md). */
#define g_strided NULL
#define g_take NULL
/* User kernels are host code: the worker runs MAP_BLOCKS on the host (docs/plugins.md). */
#define g_map_blocks NULL
/* FUSED programs run their CPU kernel on the GPU worker's host thread (docs/gpu.md). */
#define g_fused NULL
/* PACK lays a tile out for the CPU kernel (kernels/gemm_pack.c): a GPU worker runs it on its
 * host; g_matmul_packed above lays the tiles out plainly again for cuBLAS. */
#define g_pack NULL
#define g_pack_source NULL
const tsr_kernel_fn tsr__gpu_kernels[TSR_KOP_COUNT] = {
#define KERNEL_ROW(E, name, ...) [TSR_KOP_##E] = g_##name,
    TSR__KOP_MAP(KERNEL_ROW)
#undef KERNEL_ROW
};
