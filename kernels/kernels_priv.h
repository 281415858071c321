/* What the files of kernels/ share: the per-dtype CPU tables (instantiated from cpu_tmpl.c), the
 * GPU table and index helpers. Kernels reached through these tables trust their arguments:
 * tsr__kernel_run (table.c) has checked them. */
#ifndef TSR_KERNELS_PRIV_H
#define TSR_KERNELS_PRIV_H

#include "kernels/kernels.h"

extern const tsr_kernel_fn tsr__cpu_kernels_f64[TSR_KOP_COUNT];
extern const tsr_kernel_fn tsr__cpu_kernels_f32[TSR_KOP_COUNT];
extern const tsr_kernel_fn tsr__cpu_kernels_i64[TSR_KOP_COUNT];
extern const tsr_kernel_fn tsr__cpu_kernels_bool[TSR_KOP_COUNT];
/* CPU kernels that handle every dtype their family's row declares themselves (copies that move
 * elements by size, families whose output dtype differs from their inputs'): looked up before
 * the per-dtype tables (kernels/generic.c; NULL for a family that has none). */
extern const tsr_kernel_fn tsr__cpu_kernels_any[TSR_KOP_COUNT];
/* The dtype-generic kernels of kernels/elementwise.c. */
int tsr__k_compare(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                   char *err, size_t errlen);
int tsr__k_predicate(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                     char *err, size_t errlen);
int tsr__k_where(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                 char *err, size_t errlen);

/* A float converted to int64 as NumPy does on x86-64, without undefined behaviour: NaN, +-inf and
 * values outside [-2^63, 2^63) give INT64_MIN; others truncate toward zero. */
static inline int64_t tsr__f2i(double v) {
    return v >= -9223372036854775808.0 && v < 9223372036854775808.0 ? (int64_t)v : INT64_MIN;
}

/* Float matrix products (gemm.c): out (m x n, row-major) = a (m x k) @ b (k x n) + beta * out,
 * beta 0 or 1, by libxsmm for the tile shapes it computes faster (where built with it), else by
 * OpenBLAS; which one depends on the shape alone. tsr__gemm_small_kernel says whether a shape
 * goes to libxsmm (for tests). */
void tsr__gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, const double *b, int beta,
                   double *out);
void tsr__gemm_f32(int64_t m, int64_t n, int64_t k, const float *a, const float *b, int beta,
                   float *out);
int tsr__gemm_small_kernel(int64_t m, int64_t n, int64_t k);

/* PACK and MATMUL_PACKED (gemm_pack.c; the layouts are kernels.h's). tsr__packed_product_*: out
 * (m x n, row-major) = (zero ? 0 : out) + pa @ pb over packed operands, each element the chain
 * of fma() over k in order; tsr__packed_force_portable(1) makes it take the portable path even
 * on an AVX-512 CPU (tests compare the two). */
int k_pack(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
           size_t errlen);
int k_matmul_packed(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                    char *err, size_t errlen);
int k_pack_source(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                  char *err, size_t errlen);
int tsr__packed_product_f64(int64_t m, int64_t n, int64_t k, const double *pa, const double *pb,
                            int zero, double *out);
int tsr__packed_product_f32(int64_t m, int64_t n, int64_t k, const float *pa, const float *pb,
                            int zero, float *out);
void tsr__packed_force_portable(int on);

/* Issue 13's linear-algebra families (linalg.c): their kernels, registered in
 * tsr__cpu_kernels_any, and the checks of what their descriptors need beyond the row (called by
 * table.c's check_family). */
int k_normal(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
             size_t errlen);
int k_eye(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
          size_t errlen);
int k_contract(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
               size_t errlen);
int tsr__check_eye(const tsr_kdesc *d, char *err, size_t errlen);
int tsr__check_contract(const tsr_kdesc *d, const tsr_chunkview *in, int nin,
                        const tsr_chunkview *out, char *err, size_t errlen);
/* The dtype-generic kernels of DATA and HELD (data.c). */
int tsr__k_data(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
                size_t errlen);
int tsr__k_held(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
                size_t errlen);
/* Issue 13's reductions and scans (kernels/reduce2.c): the dtype-generic kernels, the checks
 * check_family runs for their families (0, or TSR_EINVALID with a message). */
int k_reduce2(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
              size_t errlen);
int k_combine2(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
               size_t errlen);
int k_scan(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
           size_t errlen);
int tsr__check_reduce2(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                       size_t errlen);
int tsr__check_combine2(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                        size_t errlen);
int tsr__check_scan(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err, size_t errlen);
/* The dtype-generic kernels (kernels/shape.c). */
int k_strided(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
              size_t errlen);
int k_take(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
           size_t errlen);
/* The user-kernel family's (kernels/map_blocks.c): calls the plugin function the worker resolved
 * into the descriptor. */
int tsr__k_map_blocks(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                      char *err, size_t errlen);
/* FUSED (kernels/fused.c): one kernel for both float dtypes (its steps each have their own), in
 * the generic table and in both per-dtype ones; tsr__fused_check is its family's checks. */
int tsr__k_fused(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                 char *err, size_t errlen);
int tsr__fused_check(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                     size_t errlen);
/* The GPU kernels (kernels/cuda/host.c, in the CUDA module only), one table for both float
 * dtypes: they read the dtype from the descriptor. NULL for families that have none (LOAD). */
extern const tsr_kernel_fn tsr__gpu_kernels[TSR_KOP_COUNT];
/* Makes tsr__kernel_lookup(..., TSR_DEVICE_GPU) answer from table (TSR_KOP_COUNT entries). */
void tsr__kernels_set_gpu(const tsr_kernel_fn *table);

/* SPEC §2's random values for global indices g0 .. g0 + n - 1 (random.c; vectorised, the same
 * bits as tsr__random_f64/f32 element by element). The plain functions are the baseline code;
 * _pick returns the best copy for this CPU. */
typedef void (*tsr__random_row_f64_fn)(double *o, uint64_t seed, uint64_t g0, int64_t n);
typedef void (*tsr__random_row_f32_fn)(float *o, uint64_t seed, uint64_t g0, int64_t n);
void tsr__random_row_f64(double *o, uint64_t seed, uint64_t g0, int64_t n);
void tsr__random_row_f32(float *o, uint64_t seed, uint64_t g0, int64_t n);
tsr__random_row_f64_fn tsr__random_row_f64_pick(void);
tsr__random_row_f32_fn tsr__random_row_f32_pick(void);

/* Elements of a shape (1 for ndim 0). */
static inline int64_t tsr__shape_nelem(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int a = 0; a < ndim; a++) n *= shape[a];
    return n;
}

/* C-order strides in elements. */
static inline void tsr__shape_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int a = ndim - 1; a >= 0; a--) {
        strides[a] = s;
        s *= shape[a];
    }
}

/* Advances a row-major multi-index over `shape` (n axes); 0 once it wraps around. */
static inline int tsr__next_index(int64_t *idx, const int64_t *shape, int n) {
    for (int a = n - 1; a >= 0; a--) {
        if (++idx[a] < shape[a]) return 1;
        idx[a] = 0;
    }
    return 0;
}

#endif
