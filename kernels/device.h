/* A compute device behind a GPU worker's device tier (worker/devtier.c): its memory, copies
 * between host and device, and its kernels. A backend is a table of functions; the worker asks
 * tsr__devops_pick() for one and never tests TSR_HAVE_CUDA itself.
 *
 * Backends:
 *   cuda  kernels/cuda/ (built with -Dcuda=enabled/auto where nvcc and cuBLAS are found): one
 *         device, a compute stream with its cuBLAS handle, a copy stream; kernels in
 *         kernels/cuda/ reached through the kernel table with TSR_DEVICE_GPU.
 *   fake  kernels/fakedev.c: a "device" in host memory that runs the CPU kernels, so the device
 *         tier, its cache, eviction and write-back, and GPU placement are tested on machines
 *         without a GPU (TESSERA_FAKE_GPU=1 picks it; for tests only, docs/gpu.md).
 *
 * Threading: every call on a context comes from the one thread that opened it (the worker's GPU
 * executor), except count(), which any thread may call.
 *
 * Ordering: h2d, run and d2h calls on one context take effect in the order they are made. h2d
 * and run may return before the work ends (asynchronous); d2h returns when the bytes are on the
 * host; wait returns when everything issued so far has finished. free may be called right after
 * the last call that used the memory was issued: the backend delays the release as needed. */
#ifndef TSR_KERNELS_DEVICE_H
#define TSR_KERNELS_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

typedef struct tsr__devinfo {
    char name[128];       /* "NVIDIA H200" */
    char pci_bus_id[32];  /* "0000:65:00.0", "" when unknown */
    char driver[32];      /* driver version, "" when unknown */
    char runtime[32];     /* runtime (toolkit) version, "" when unknown */
    uint64_t total_bytes; /* device memory */
    uint64_t free_bytes;  /* free when opened */
} tsr__devinfo;

typedef struct tsr__devops {
    const char *name; /* "cuda", "fake" */
    /* Devices present; 0 when there is none or no driver (never fails loudly). */
    int (*count)(void);
    /* Opens device id for the calling thread: 0, or a negative code with a message in err. */
    int (*open)(int id, void **ctx, tsr__devinfo *info, char *err, size_t errlen);
    void (*close)(void *ctx); /* waits for outstanding work, frees everything the backend owns */
    /* n bytes of device memory, or NULL when the device has no room for them. */
    void *(*alloc)(void *ctx, size_t n);
    void (*free)(void *ctx, void *p);
    /* Copies; 0 or a negative code with a message in err. */
    int (*h2d)(void *ctx, void *dst, const void *src, size_t n, char *err, size_t errlen);
    int (*d2h)(void *ctx, void *dst, const void *src, size_t n, char *err, size_t errlen);
    /* Runs the kernel for d on device memory: the views' data are device pointers. Same checks
     * and contract as tsr__kernel_run (kernels.h); may return before the kernel finishes. */
    int (*run)(void *ctx, const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
               char *err, size_t errlen);
    /* Waits for everything issued; reports an asynchronous failure of any of it. */
    int (*wait)(void *ctx, char *err, size_t errlen);
    /* Whether the device has a kernel for (kop, dtype); families without one run on the host. */
    int (*has_kernel)(int kop, int dtype);
    /* Optional (may be NULL): page-lock host memory the worker reuses for copies, and undo it. */
    int (*pin)(void *ctx, void *host, size_t n);
    void (*unpin)(void *ctx, void *host);
} tsr__devops;

/* The CUDA backend (a module loaded on first use: kernels/cuda_load.c), or NULL when built
 * without CUDA or the module cannot be loaded; tsr__devops_cuda_error says why then. */
const tsr__devops *tsr__devops_cuda(void);
const char *tsr__devops_cuda_error(void);
/* The host-memory stand-in (always built). */
const tsr__devops *tsr__devops_fake(void);
/* The backend a GPU worker uses: fake when TESSERA_FAKE_GPU=1 is set in the environment, else
 * cuda; NULL when neither (built without CUDA). */
const tsr__devops *tsr__devops_pick(void);

#endif
