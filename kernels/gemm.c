/* Every float matrix product of the CPU kernels goes through here: out (m x n, row-major, row
 * stride n) = a (m x k) @ b (k x n) + beta * out, beta 0 or 1.
 *
 * OpenBLAS packs both operands into its own layout on every call, which a blocked product pays
 * once per tile: at 128-256 that is 7-30% of the call (bench/notes.md §21). libxsmm's JIT kernels
 * read the tiles where they lie, so tiles in that range go to libxsmm where it was built in
 * (-Dxsmm, default auto). Which library computes a product is decided by its shape and dtype
 * alone, never by timing, load or placement: SPEC's bitwise determinism holds whatever worker
 * runs a task, as long as the workers run the same build on the same kind of CPU (as with any
 * BLAS). */
#include <cblas.h>
#include <stdint.h>

#include "kernels/kernels_priv.h"
#include "tsr_config.h"

#if TSR_HAVE_XSMM
#include <libxsmm.h>
#include <pthread.h>

static pthread_once_t xsmm_once = PTHREAD_ONCE_INIT;
static void xsmm_start(void) {
    libxsmm_init();
}

/* The shapes libxsmm computes faster than OpenBLAS here: both output sides in [96, 256] and k
 * at most 256 (measured on cold tiles, two cores busy, float64 and float32: +7-30% from 128 to
 * 256, within 5% either way at 64 and 384, OpenBLAS ahead from 384 on). */
static int xsmm_shape(int64_t m, int64_t n, int64_t k) {
    return m >= 96 && n >= 96 && m <= 256 && n <= 256 && k >= 1 && k <= 256;
}
#endif

/* Row-major out = a @ b + beta out is column-major out^T = b^T a^T + beta out^T: libxsmm (column
 * major) is asked for M = n, N = m with a and b swapped. One definition per float type. */
#if TSR_HAVE_XSMM
#define SMALL_GEMM(XSMM_T, DISPATCH)                                                               \
    if (xsmm_shape(m, n, k)) {                                                                     \
        pthread_once(&xsmm_once, xsmm_start);                                                      \
        libxsmm_blasint M = (libxsmm_blasint)n, N = (libxsmm_blasint)m, K = (libxsmm_blasint)k;    \
        int flags = beta ? LIBXSMM_GEMM_FLAG_NONE : LIBXSMM_GEMM_FLAG_BETA_0;                      \
        XSMM_T f = DISPATCH(M, N, K, &M, &K, &M, NULL, NULL, &flags, NULL);                        \
        if (f) {                                                                                   \
            f(b, a, out);                                                                          \
            return;                                                                                \
        }                                                                                          \
    }
#else
#define SMALL_GEMM(XSMM_T, DISPATCH)
#endif

void tsr__gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, const double *b, int beta,
                   double *out) {
    SMALL_GEMM(libxsmm_dmmfunction, libxsmm_dmmdispatch)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, 1.0,
                a, (blasint)k, b, (blasint)n, beta ? 1.0 : 0.0, out, (blasint)n);
}

void tsr__gemm_f32(int64_t m, int64_t n, int64_t k, const float *a, const float *b, int beta,
                   float *out) {
    SMALL_GEMM(libxsmm_smmfunction, libxsmm_smmdispatch)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, 1.0f,
                a, (blasint)k, b, (blasint)n, beta ? 1.0f : 0.0f, out, (blasint)n);
}

int tsr__gemm_small_kernel(int64_t m, int64_t n, int64_t k) {
#if TSR_HAVE_XSMM
    return xsmm_shape(m, n, k);
#else
    (void)m;
    (void)n;
    (void)k;
    return 0;
#endif
}
