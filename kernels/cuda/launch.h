/* The C interface between the host side of the GPU kernels (kernels.c: descriptors, index
 * tables, cuBLAS calls) and their device code (kernels.cu: one template per kernel, instantiated
 * per dtype). Launchers take device pointers, dtypes and index tables as plain values, only
 * enqueue work on the stream they are given, and return the launch's cudaError_t (0: accepted).
 * Included by C and by CUDA C++: plain types only. */
#ifndef TSR_KERNELS_CUDA_LAUNCH_H
#define TSR_KERNELS_CUDA_LAUNCH_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "kernels/spec_random.h"
#include "tessera/tessera.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A chunk walked in row-major order as m merged axes (unit axes dropped, neighbours that stay
 * contiguous merged), stored innermost first: element j of the walk has multi-index idx over
 * ext, and offsets sum(idx[k] * s0[k]) and sum(idx[k] * s1[k]) into two operands. m = 0 is a
 * single element at offset 0. */
typedef struct tsr__cu_index {
    int m;
    int64_t ext[TSR_MAX_NDIM];
    int64_t s0[TSR_MAX_NDIM], s1[TSR_MAX_NDIM];
} tsr__cu_index;

#ifdef __CUDA_ARCH__ /* device code only: gcc (nvcc's host pass too) warns about it */
#define TSR__CU_UNROLL _Pragma("unroll")
#else
#define TSR__CU_UNROLL
#endif

/* Offsets of walk element j into both operands (the device code's, and the host emulation's in
 * tests/gpu/cuda_emul.c). Only the inner axes divide: the outermost takes what is left. */
static inline TSR__HOSTDEV void tsr__cu_offsets(const tsr__cu_index *ix, int64_t j, int64_t *o0,
                                                int64_t *o1) {
    int64_t a = 0, b = 0;
    TSR__CU_UNROLL
    for (int k = 0; k < TSR_MAX_NDIM; k++) {
        if (k >= ix->m) break;
        if (k == ix->m - 1) {
            a += j * ix->s0[k];
            b += j * ix->s1[k];
            break;
        }
        int64_t q = j / ix->ext[k], r = j - q * ix->ext[k];
        a += r * ix->s0[k];
        b += r * ix->s1[k];
        j = q;
    }
    *o0 = a;
    *o1 = b;
}

/* The first operand's offset only. */
static inline TSR__HOSTDEV int64_t tsr__cu_offset0(const tsr__cu_index *ix, int64_t j) {
    int64_t a = 0;
    TSR__CU_UNROLL
    for (int k = 0; k < TSR_MAX_NDIM; k++) {
        if (k >= ix->m) break;
        if (k == ix->m - 1) {
            a += j * ix->s0[k];
            break;
        }
        int64_t q = j / ix->ext[k];
        a += (j - q * ix->ext[k]) * ix->s0[k];
        j = q;
    }
    return a;
}

/* Inputs a combine launch folds (kernels.c splits longer lists across launches). */
#define TSR__CU_COMBINE_MAX 32
typedef struct tsr__cu_inputs {
    int k;
    const void *p[TSR__CU_COMBINE_MAX];
    uint8_t dt[TSR__CU_COMBINE_MAX];
} tsr__cu_inputs;

/* In the launchers, dt/odt/idt are tsr_dtype values and fn the descriptor's sub-operation. */

/* o[j] = (T)v. */
int tsr__cu_fill(int dt, void *o, int64_t n, double v, cudaStream_t st);
/* o[j] = SPEC's random value at global index gbase + offset0(j) (s0: global strides). */
int tsr__cu_random(int dt, void *o, int64_t n, uint64_t seed, uint64_t gbase,
                   const tsr__cu_index *ix, cudaStream_t st);
/* o[j] = (T)(start + (double)(offset + j) * step). */
int tsr__cu_arange(int dt, void *o, int64_t n, double start, double step, int64_t offset,
                   cudaStream_t st);
int tsr__cu_unary(int dt, int fn, void *o, const void *a, int64_t n, cudaStream_t st);
/* o[j] = x OP y with x = a[offset0(j)], y = b[offset1(j)] converted to T (adt, bdt: their
 * dtypes); a NULL operand is the scalar (T)sa or (T)sb instead. o is contiguous. */
int tsr__cu_binary(int dt, int fn, void *o, const void *a, int adt, double sa, const void *b,
                   int bdt, double sb, int64_t n, const tsr__cu_index *ix, cudaStream_t st);
/* o[j] = (T)a[j] for n contiguous elements. */
int tsr__cu_convert(int odt, void *o, int idt, const void *a, int64_t n, cudaStream_t st);
/* o[offset1(j)] = (T)a[offset0(j)] for j < n. */
int tsr__cu_gather(int odt, void *o, int idt, const void *a, int64_t n, const tsr__cu_index *ix,
                   cudaStream_t st);
/* Plane pl (of `planes`, at input offset offset0(pl) and output offset offset1(pl) of pix) holds
 * np x nq elements: o[i * osp + j] = a[i + j * isq], transposed through shared-memory tiles. */
int tsr__cu_transpose2d(int dt, void *o, const void *a, int64_t np, int64_t nq, int64_t osp,
                        int64_t isq, int64_t planes, const tsr__cu_index *pix, cudaStream_t st);
/* One pass of a reduction of `outs` outputs over `terms` terms each: output o's terms are
 * x[offset0(o of kix) + offset0(r of rix)] for r in row-major order, cut into nseg segments of
 * seglen terms. Each (output, segment) folds its terms in double (fn's fold, starting at init);
 * with nseg = 1 the result goes to dst[o] in odt, else to the double partial dst[o * nseg + seg].
 * block: one thread block per (output, segment) folding its terms as a fixed tree (the terms
 * are contiguous in x); otherwise one thread per (output, segment), in order. */
int tsr__cu_reduce(int fn, int block, int xdt, const void *x, const tsr__cu_index *kix,
                   const tsr__cu_index *rix, int64_t outs, int64_t terms, int64_t seglen,
                   int64_t nseg, double init, int odt, void *dst, cudaStream_t st);
/* Folds inputs in order for n elements: the accumulator starts at the first input (first) or
 * at acc[j]; after the folds it goes to o[j] = (T)(acc * scale) when scale != 1, else (T)acc
 * (last), or back to acc[j]. */
int tsr__cu_combine(int dt, int fn, void *o, double *acc, int first, int last,
                    const tsr__cu_inputs *in, double scale, int64_t n, cudaStream_t st);

/* Threads per block of the reduction's tree (block = 1) and terms each thread folds first. */
#define TSR__CU_REDUCE_THREADS 256
#define TSR__CU_REDUCE_ITEMS 16

#ifdef __cplusplus
}
#endif

#endif
