/* A host-memory stand-in for the CUDA device, linked with the CUDA backend's host side
 * (kernels/cuda/host.c) and test_cuda_kernels.c into test_cuda_kernels_emul, so that the GPU
 * kernels' descriptor handling, index tables, multi-pass reductions and cuBLAS argument order
 * are checked where there is no GPU, by the same comparisons a GPU gets. It provides what
 * host.c calls: the launchers of launch.h (each its documented contract, written plainly; the
 * index walk is the device code's own), the CUDA runtime and cuBLAS calls (cuBLAS's
 * column-major definitions, with its argument checks), the context, and a backend table
 * standing in for devops.c. Not the device code: kernels.cu itself runs only on a GPU. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph/ops.h"
#include "graph/ops_float.h"
#include "kernels/cuda/cuda_priv.h"
#include "kernels/cuda/launch.h"
#include "kernels/device.h"
#include "kernels/kernels_priv.h"

static double at(const void *p, int dt, int64_t j) {
    return dt == TSR_FLOAT64 ? ((const double *)p)[j] : ((const float *)p)[j];
}

static void put(void *p, int dt, int64_t j, double v) {
    if (dt == TSR_FLOAT64)
        ((double *)p)[j] = v;
    else
        ((float *)p)[j] = (float)v;
}

/* The table's expressions, per element type (M(fn) as the CPU kernels define it). */
#define UN_CASE(E, name, dtypes, expr)                                                             \
    case TSR_##E:                                                                                  \
        return (expr);
#define BIN_CASE(E, name, dtypes, expr)                                                            \
    case TSR_##E:                                                                                  \
        return (expr);
#define ELEMENTWISE(T, s)                                                                          \
    static T unary_##s(int fn, T x) {                                                              \
        switch (fn) { TSR__UNARY_MAP(UN_CASE) }                                                    \
        return 0;                                                                                  \
    }                                                                                              \
    static T binary_##s(int fn, T x, T y) {                                                        \
        switch (fn) { TSR__BINARY_MAP(BIN_CASE) }                                                  \
        return 0;                                                                                  \
    }
#define M(fn) fn
ELEMENTWISE(double, f64)
#undef M
#define M(fn) fn##f
ELEMENTWISE(float, f32)
#undef M

static double fold(int fn, double s, double x) {
#define FOLD_CASE(E, name, init, f, ...)                                                           \
    case TSR_##E:                                                                                  \
        return f(s, x);
    switch (fn) { TSR__REDUCE_MAP(FOLD_CASE) }
#undef FOLD_CASE
    return s;
}

/* ---- launch.h ------------------------------------------------------------------------------- */

int tsr__cu_fill(int dt, void *o, int64_t n, double v, cudaStream_t st) {
    for (int64_t j = 0; j < n; j++) put(o, dt, j, v);
    return 0;
}

int tsr__cu_random(int dt, void *o, int64_t n, uint64_t seed, uint64_t gbase,
                   const tsr__cu_index *ix, cudaStream_t st) {
    for (int64_t j = 0; j < n; j++) {
        uint64_t g = gbase + (uint64_t)tsr__cu_offset0(ix, j);
        put(o, dt, j, dt == TSR_FLOAT64 ? tsr__random_f64(seed, g) : tsr__random_f32(seed, g));
    }
    return 0;
}

int tsr__cu_arange(int dt, void *o, int64_t n, double start, double step, int64_t offset,
                   cudaStream_t st) {
    for (int64_t j = 0; j < n; j++) put(o, dt, j, start + (double)(offset + j) * step);
    return 0;
}

int tsr__cu_unary(int dt, int fn, void *o, const void *a, int64_t n, cudaStream_t st) {
    for (int64_t j = 0; j < n; j++)
        put(o, dt, j,
            dt == TSR_FLOAT64 ? unary_f64(fn, at(a, dt, j)) : unary_f32(fn, (float)at(a, dt, j)));
    return 0;
}

int tsr__cu_binary(int dt, int fn, void *o, const void *a, int adt, double sa, const void *b,
                   int bdt, double sb, int64_t n, const tsr__cu_index *ix, cudaStream_t st) {
    for (int64_t j = 0; j < n; j++) {
        int64_t ia, ib;
        tsr__cu_offsets(ix, j, &ia, &ib);
        double x = a ? at(a, adt, ia) : sa, y = b ? at(b, bdt, ib) : sb;
        put(o, dt, j,
            dt == TSR_FLOAT64 ? binary_f64(fn, x, y) : binary_f32(fn, (float)x, (float)y));
    }
    return 0;
}

int tsr__cu_convert(int odt, void *o, int idt, const void *a, int64_t n, cudaStream_t st) {
    for (int64_t j = 0; j < n; j++) put(o, odt, j, at(a, idt, j));
    return 0;
}

int tsr__cu_gather(int odt, void *o, int idt, const void *a, int64_t n, const tsr__cu_index *ix,
                   cudaStream_t st) {
    for (int64_t j = 0; j < n; j++) {
        int64_t ia, io;
        tsr__cu_offsets(ix, j, &ia, &io);
        put(o, odt, io, at(a, idt, ia));
    }
    return 0;
}

int tsr__cu_transpose2d(int dt, void *o, const void *a, int64_t np, int64_t nq, int64_t osp,
                        int64_t isq, int64_t planes, const tsr__cu_index *pix, cudaStream_t st) {
    for (int64_t pl = 0; pl < planes; pl++) {
        int64_t so, oo;
        tsr__cu_offsets(pix, pl, &so, &oo);
        for (int64_t i = 0; i < np; i++)
            for (int64_t j = 0; j < nq; j++)
                put(o, dt, oo + i * osp + j, at(a, dt, so + i + j * isq));
    }
    return 0;
}

/* Block mode folds as the device's block does: thread t takes terms t, t + THREADS, ..., then
 * the partials pair up as a halving tree. */
int tsr__cu_reduce(int fn, int block, int xdt, const void *x, const tsr__cu_index *kix,
                   const tsr__cu_index *rix, int64_t outs, int64_t terms, int64_t seglen,
                   int64_t nseg, double init, int odt, void *dst, cudaStream_t st) {
    double part[TSR__CU_REDUCE_THREADS];
    for (int64_t o = 0; o < outs; o++)
        for (int64_t seg = 0; seg < nseg; seg++) {
            int64_t base = tsr__cu_offset0(kix, o), r0 = seg * seglen;
            int64_t r1 = r0 + seglen < terms ? r0 + seglen : terms;
            double s = init;
            if (block) {
                for (int t = 0; t < TSR__CU_REDUCE_THREADS; t++) {
                    part[t] = init;
                    for (int64_t r = r0 + t; r < r1; r += TSR__CU_REDUCE_THREADS)
                        part[t] = fold(fn, part[t], at(x, xdt, base + tsr__cu_offset0(rix, r)));
                }
                for (int w = TSR__CU_REDUCE_THREADS / 2; w > 0; w >>= 1)
                    for (int t = 0; t < w; t++) part[t] = fold(fn, part[t], part[t + w]);
                s = part[0];
            } else {
                for (int64_t r = r0; r < r1; r++)
                    s = fold(fn, s, at(x, xdt, base + tsr__cu_offset0(rix, r)));
            }
            if (nseg == 1)
                put(dst, odt, o, s);
            else
                ((double *)dst)[o * nseg + seg] = s;
        }
    return 0;
}

int tsr__cu_combine(int dt, int fn, void *o, double *acc, int first, int last,
                    const tsr__cu_inputs *in, double scale, int64_t n, cudaStream_t st) {
    for (int64_t j = 0; j < n; j++) {
        double s = first ? at(in->p[0], in->dt[0], j) : acc[j];
        for (int k = first ? 1 : 0; k < in->k; k++) s = fold(fn, s, at(in->p[k], in->dt[k], j));
        if (!last)
            acc[j] = s;
        else
            put(o, dt, j, scale != 1.0 ? s * scale : s);
    }
    return 0;
}

/* ---- the CUDA runtime and cuBLAS calls host.c makes ------------------------------------------ */

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
    memmove(dst, src, count);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t count, cudaStream_t stream) {
    memset(p, value, count);
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t error) {
    return "emulated CUDA error";
}

const char *cublasGetStatusString(cublasStatus_t status) {
    return "emulated cuBLAS error";
}

/* cuBLAS's definitions: column-major, op(A) m x k, op(B) k x n, C m x n; C is not read when
 * beta is 0. Leading dimensions are checked as cuBLAS checks them. */
#define GEMM(name, T)                                                                              \
    cublasStatus_t name(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,       \
                        int n, int k, const T *alpha, const T *A, int lda, const T *B, int ldb,    \
                        const T *beta, T *C, int ldc) {                                            \
        if (m < 0 || n < 0 || k < 0 || lda < TSR__MAX(1, ta == CUBLAS_OP_N ? m : k) ||             \
            ldb < TSR__MAX(1, tb == CUBLAS_OP_N ? k : n) || ldc < TSR__MAX(1, m))                  \
            return CUBLAS_STATUS_INVALID_VALUE;                                                    \
        for (int i = 0; i < m; i++)                                                                \
            for (int j = 0; j < n; j++) {                                                          \
                double s = 0;                                                                      \
                for (int l = 0; l < k; l++)                                                        \
                    s += (double)(ta == CUBLAS_OP_N ? A[i + (size_t)l * lda]                       \
                                                    : A[l + (size_t)i * lda]) *                    \
                         (tb == CUBLAS_OP_N ? B[l + (size_t)j * ldb] : B[j + (size_t)l * ldb]);    \
                T *c = &C[i + (size_t)j * ldc];                                                    \
                *c = (T)(*alpha * s + (*beta != 0 ? *beta * *c : 0));                              \
            }                                                                                      \
        return CUBLAS_STATUS_SUCCESS;                                                              \
    }
GEMM(cublasDgemm_v2, double)
GEMM(cublasSgemm_v2, float)

/* y = alpha op(A) x + beta y, A m x n column-major. */
#define GEMV(name, T)                                                                              \
    cublasStatus_t name(cublasHandle_t h, cublasOperation_t trans, int m, int n, const T *alpha,   \
                        const T *A, int lda, const T *x, int incx, const T *beta, T *y,            \
                        int incy) {                                                                \
        if (m < 0 || n < 0 || lda < TSR__MAX(1, m) || incx == 0 || incy == 0)                      \
            return CUBLAS_STATUS_INVALID_VALUE;                                                    \
        int ny = trans == CUBLAS_OP_N ? m : n, nx = trans == CUBLAS_OP_N ? n : m;                  \
        for (int i = 0; i < ny; i++) {                                                             \
            double s = 0;                                                                          \
            for (int l = 0; l < nx; l++)                                                           \
                s += (double)(trans == CUBLAS_OP_N ? A[i + (size_t)l * lda]                        \
                                                   : A[l + (size_t)i * lda]) *                     \
                     x[(size_t)l * (size_t)incx];                                                  \
            T *c = &y[(size_t)i * (size_t)incy];                                                   \
            *c = (T)(*alpha * s + (*beta != 0 ? *beta * *c : 0));                                  \
        }                                                                                          \
        return CUBLAS_STATUS_SUCCESS;                                                              \
    }
GEMV(cublasDgemv_v2, double)
GEMV(cublasSgemv_v2, float)

/* ---- the context and a backend standing in for devops.c ---------------------------------------
 */

static tsr__cuda_ctx emul_ctx;
static int emul_open;

tsr__cuda_ctx *tsr__cuda_current(void) {
    return emul_open ? &emul_ctx : NULL;
}

void *tsr__cuda_scratch(tsr__cuda_ctx *c, size_t n) {
    return malloc(n ? n : 1);
}

void tsr__cuda_scratch_free(tsr__cuda_ctx *c, void *p) {
    free(p);
}

static int emul_count(void) {
    return 1;
}

static int emul_open_dev(int id, void **ctx, tsr__devinfo *info, char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    strcpy(info->name, "emulated CUDA device (host memory, tests/gpu/cuda_emul.c)");
    emul_open = 1;
    *ctx = &emul_ctx;
    return 0;
}

static void emul_close(void *ctx) {
    emul_open = 0;
}

static void *emul_alloc(void *ctx, size_t n) {
    return malloc(n ? n : 1);
}

static void emul_free(void *ctx, void *p) {
    free(p);
}

static int emul_copy(void *ctx, void *dst, const void *src, size_t n, char *err, size_t errlen) {
    memcpy(dst, src, n);
    return 0;
}

static int emul_run(void *ctx, const tsr_kdesc *d, const tsr_chunkview *in, int nin,
                    tsr_chunkview *out, char *err, size_t errlen) {
    return tsr__kernel_run(d, in, nin, out, TSR_DEVICE_GPU, err, errlen);
}

static int emul_wait(void *ctx, char *err, size_t errlen) {
    return 0;
}

static int emul_has_kernel(int kop, int dtype) {
    return kop != TSR_KOP_LOAD && tsr__kernel_lookup(kop, dtype, TSR_DEVICE_GPU) != NULL;
}

static const tsr__devops emul_ops = {
    .name = "cuda (emulated)",
    .count = emul_count,
    .open = emul_open_dev,
    .close = emul_close,
    .alloc = emul_alloc,
    .free = emul_free,
    .h2d = emul_copy,
    .d2h = emul_copy,
    .run = emul_run,
    .wait = emul_wait,
    .has_kernel = emul_has_kernel,
};

const tsr__devops *tsr__devops_cuda(void) {
    tsr__kernels_set_gpu(tsr__gpu_kernels); /* as the module's entry point does */
    return &emul_ops;
}
