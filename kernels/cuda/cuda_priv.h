/* What the CUDA backend's C files share: the context one executor thread opens (devops.c) and
 * the GPU kernels' host side (kernels.c) launch on. Built only with CUDA. */
#ifndef TSR_KERNELS_CUDA_PRIV_H
#define TSR_KERNELS_CUDA_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

/* A live allocation and the last run that used it (h2d into it waits for that run). */
typedef struct tsr__cuda_live {
    void *p; /* NULL: empty slot */
    uint64_t run;
} tsr__cuda_live;

typedef struct tsr__cuda_ctx {
    int dev;
    /* Kernels and cuBLAS run on compute, in the order of run() calls; h2d copies on copy. After
     * each alloc and h2d, compute waits for copy (the event copied), so a run sees every copy
     * and allocation issued before it. copy waits for compute (the event ran) only before an
     * h2d into memory that a run it has not waited for used. */
    cudaStream_t compute, copy;
    cudaEvent_t copied, ran;
    cublasHandle_t blas;
    cudaMemPool_t pool;   /* stream-ordered allocations; keeps freed memory for reuse */
    uint64_t runs;        /* run() calls so far */
    uint64_t copy_saw;    /* copy has waited for compute up to this run */
    uint64_t any_run;     /* the last run that used memory not handed out by alloc */
    tsr__cuda_live *live; /* open addressing, live_cap a power of two */
    size_t live_cap, live_n;
} tsr__cuda_ctx;

/* The context of the calling thread's latest backend call (open, run, ...): GPU kernels reach
 * theirs this way because tsr_kernel_fn has no context parameter. NULL before any. */
tsr__cuda_ctx *tsr__cuda_current(void);

/* n bytes of scratch ordered on the compute stream (NULL when the device is out of memory),
 * and its release, which may follow the last launch using it at once. */
void *tsr__cuda_scratch(tsr__cuda_ctx *c, size_t n);
void tsr__cuda_scratch_free(tsr__cuda_ctx *c, void *p);

#endif
