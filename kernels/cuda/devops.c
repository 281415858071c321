/* The CUDA backend (kernels/device.h): one device per context, with a compute stream that runs
 * kernels and cuBLAS, a copy stream for h2d copies, and a memory pool for stream-ordered
 * allocations, so that neither alloc nor free synchronises the device. GPU kernels reach the
 * context through a thread-local pointer that every call sets (tsr_kernel_fn has no context
 * parameter). Quiet: errors come back as codes and messages, never printed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/cuda/cuda_priv.h"
#include "kernels/device.h"
#include "kernels/kernels_priv.h"

static _Thread_local tsr__cuda_ctx *current;

tsr__cuda_ctx *tsr__cuda_current(void) {
    return current;
}

/* Every call comes from the thread that opened ctx (device.h); the device is set again in case
 * something else on that thread changed it. */
static tsr__cuda_ctx *enter(void *ctx) {
    tsr__cuda_ctx *c = ctx;
    current = c;
    if (cudaSetDevice(c->dev) != cudaSuccess) (void)cudaGetLastError();
    return c;
}

/* A failed call's message; clears the thread's last error so that a later launch check does
 * not report it again (errors that break the context stay: CUDA returns them from every call). */
static int fail(cudaError_t e, const char *what, char *err, size_t errlen) {
    (void)cudaGetLastError();
    tsr__fmt(err, errlen, "CUDA: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return e == cudaErrorMemoryAllocation ? -ENOMEM : TSR_ECOMPUTE;
}

/* ---- live allocations: pointer -> last run that used it ------------------------------------- */

static size_t live_slot(const tsr__cuda_ctx *c, const void *p) {
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (c->live_cap - 1);
}

static tsr__cuda_live *live_find(tsr__cuda_ctx *c, const void *p) {
    if (!c->live_cap || !p) return NULL;
    for (size_t i = live_slot(c, p);; i = (i + 1) & (c->live_cap - 1)) {
        if (c->live[i].p == p) return &c->live[i];
        if (!c->live[i].p) return NULL;
    }
}

static void live_put(tsr__cuda_ctx *c, void *p, uint64_t run) {
    size_t i = live_slot(c, p);
    while (c->live[i].p) i = (i + 1) & (c->live_cap - 1);
    c->live[i].p = p;
    c->live[i].run = run;
    c->live_n++;
}

/* Room for one more entry at a load of at most one half: 0 or -ENOMEM. */
static int live_reserve(tsr__cuda_ctx *c) {
    if (2 * (c->live_n + 1) <= c->live_cap) return 0;
    size_t cap = c->live_cap ? 2 * c->live_cap : 1024;
    tsr__cuda_live *old = c->live;
    size_t oldcap = c->live_cap;
    c->live = calloc(cap, sizeof *c->live);
    if (!c->live) {
        c->live = old;
        return -ENOMEM;
    }
    c->live_cap = cap;
    c->live_n = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].p) live_put(c, old[i].p, old[i].run);
    free(old);
    return 0;
}

/* Removes p (linear probing: later entries of its run move back). 0 when p is not live. */
static int live_remove(tsr__cuda_ctx *c, const void *p) {
    tsr__cuda_live *e = live_find(c, p);
    if (!e) return 0;
    size_t i = (size_t)(e - c->live), mask = c->live_cap - 1;
    c->live[i].p = NULL;
    c->live_n--;
    for (size_t j = (i + 1) & mask; c->live[j].p; j = (j + 1) & mask) {
        size_t home = live_slot(c, c->live[j].p);
        /* Move j back to the hole i unless its home lies cyclically in (i, j]. */
        if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
            c->live[i] = c->live[j];
            c->live[j].p = NULL;
            i = j;
        }
    }
    return 1;
}

/* ---- the backend ---------------------------------------------------------------------------- */

static int cuda_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n > 0 ? n : 0;
}

/* Releases what open created, in reverse; the fields not created yet are zero. */
static void destroy(tsr__cuda_ctx *c) {
    if (c->blas) cublasDestroy(c->blas);
    if (c->ran) cudaEventDestroy(c->ran);
    if (c->copied) cudaEventDestroy(c->copied);
    if (c->copy) cudaStreamDestroy(c->copy);
    if (c->compute) cudaStreamDestroy(c->compute);
    if (c->pool) cudaMemPoolDestroy(c->pool);
    (void)cudaGetLastError();
    if (current == c) current = NULL;
    free(c->live);
    free(c);
}

static void version(char *dst, size_t size, int v) {
    tsr__fmt(dst, size, "%d.%d", v / 1000, v % 1000 / 10);
}

static int cuda_open(int id, void **ctx, tsr__devinfo *info, char *err, size_t errlen) {
    *ctx = NULL;
    int n = cuda_count();
    if (id < 0 || id >= n) {
        tsr__fmt(err, errlen, "CUDA device %d does not exist (%d found)", id, n);
        return TSR_EINVALID;
    }
    tsr__cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        tsr__fmt(err, errlen, "out of memory");
        return -ENOMEM;
    }
    c->dev = id;
    cudaError_t e;
    const char *what;
    int rc;
#define TRY(call)                                                                                  \
    do {                                                                                           \
        what = #call;                                                                              \
        if ((e = (call)) != cudaSuccess) goto failed;                                              \
    } while (0)
    TRY(cudaSetDevice(id));
    int pools = 0;
    TRY(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, id));
    if (!pools) {
        tsr__fmt(err, errlen, "CUDA device %d has no stream-ordered allocator (memory pools)", id);
        destroy(c);
        return TSR_EUNSUPPORTED;
    }
    TRY(cudaStreamCreateWithFlags(&c->compute, cudaStreamNonBlocking));
    TRY(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking));
    TRY(cudaEventCreateWithFlags(&c->copied, cudaEventDisableTiming));
    TRY(cudaEventCreateWithFlags(&c->ran, cudaEventDisableTiming));
    struct cudaMemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = id;
    TRY(cudaMemPoolCreate(&c->pool, &props));
    /* Freed memory stays in the pool (the device tier decides what to keep), rather than going
     * back to the driver at every synchronisation. */
    uint64_t keep = UINT64_MAX;
    TRY(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep));

    cublasStatus_t s = cublasCreate(&c->blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(c->blas, c->compute);
    /* IEEE single and double precision: no TF32 (float32 stays within 1e-4 of float64). */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        tsr__fmt(err, errlen, "cuBLAS on device %d: %s", id, cublasGetStatusString(s));
        destroy(c);
        return TSR_ECOMPUTE;
    }

    memset(info, 0, sizeof *info);
    struct cudaDeviceProp prop;
    TRY(cudaGetDeviceProperties(&prop, id));
    tsr__fmt(info->name, sizeof info->name, "%s", prop.name);
    if (cudaDeviceGetPCIBusId(info->pci_bus_id, (int)sizeof info->pci_bus_id, id) != cudaSuccess) {
        (void)cudaGetLastError();
        info->pci_bus_id[0] = '\0';
    }
    int v = 0;
    if (cudaDriverGetVersion(&v) == cudaSuccess) version(info->driver, sizeof info->driver, v);
    if (cudaRuntimeGetVersion(&v) == cudaSuccess) version(info->runtime, sizeof info->runtime, v);
    size_t fr = 0, tot = 0;
    TRY(cudaMemGetInfo(&fr, &tot));
    info->total_bytes = tot;
    info->free_bytes = fr;
#undef TRY
    current = c;
    *ctx = c;
    return 0;
failed:
    rc = fail(e, what, err, errlen);
    destroy(c);
    return rc;
}

static void cuda_close(void *ctx) {
    if (!ctx) return;
    tsr__cuda_ctx *c = enter(ctx);
    cudaStreamSynchronize(c->copy);
    cudaStreamSynchronize(c->compute);
    for (size_t i = 0; i < c->live_cap; i++)
        if (c->live[i].p) cudaFreeAsync(c->live[i].p, c->compute);
    cudaStreamSynchronize(c->compute);
    destroy(c);
}

/* Allocated on the copy stream, so that h2d copies into new memory need not wait for kernels
 * still running (an allocation may reuse memory freed on compute: the pool orders that). */
static void *cuda_alloc(void *ctx, size_t n) {
    tsr__cuda_ctx *c = enter(ctx);
    if (live_reserve(c) != 0) return NULL;
    void *p = NULL;
    cudaError_t e = cudaMallocFromPoolAsync(&p, n ? n : 1, c->pool, c->copy);
    if (e == cudaErrorMemoryAllocation) {
        /* Memory freed on compute may be waiting for its kernels: let them finish, retry once. */
        (void)cudaGetLastError();
        if (cudaStreamSynchronize(c->compute) == cudaSuccess)
            e = cudaMallocFromPoolAsync(&p, n ? n : 1, c->pool, c->copy);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    /* Runs use it on compute: they must come after the allocation. */
    if (cudaEventRecord(c->copied, c->copy) != cudaSuccess ||
        cudaStreamWaitEvent(c->compute, c->copied, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        cudaFreeAsync(p, c->copy);
        (void)cudaGetLastError();
        return NULL;
    }
    live_put(c, p, 0);
    return p;
}

/* On compute, which has waited for every copy issued so far: the release follows every use. */
static void cuda_free(void *ctx, void *p) {
    if (!p) return;
    tsr__cuda_ctx *c = enter(ctx);
    if (!live_remove(c, p)) return; /* not ours */
    if (cudaFreeAsync(p, c->compute) != cudaSuccess) (void)cudaGetLastError();
}

static int cuda_h2d(void *ctx, void *dst, const void *src, size_t n, char *err, size_t errlen) {
    tsr__cuda_ctx *c = enter(ctx);
    if (n == 0) return 0;
    cudaError_t e;
    /* Copies follow the runs issued before them that used dst (ordering in device.h). */
    tsr__cuda_live *l = live_find(c, dst);
    uint64_t last = l ? TSR__MAX(l->run, c->any_run) : c->runs;
    if (last > c->copy_saw) {
        if ((e = cudaEventRecord(c->ran, c->compute)) != cudaSuccess ||
            (e = cudaStreamWaitEvent(c->copy, c->ran, 0)) != cudaSuccess)
            return fail(e, "ordering a copy after kernels", err, errlen);
        c->copy_saw = c->runs;
    }
    if ((e = cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->copy)) != cudaSuccess)
        return fail(e, "copy to the device", err, errlen);
    if ((e = cudaEventRecord(c->copied, c->copy)) != cudaSuccess ||
        (e = cudaStreamWaitEvent(c->compute, c->copied, 0)) != cudaSuccess)
        return fail(e, "ordering kernels after a copy", err, errlen);
    return 0;
}

/* On compute, after every run and copy issued so far; returns once the bytes are on the host,
 * reporting any earlier asynchronous failure. */
static int cuda_d2h(void *ctx, void *dst, const void *src, size_t n, char *err, size_t errlen) {
    tsr__cuda_ctx *c = enter(ctx);
    if (n == 0) return 0;
    cudaError_t e;
    if ((e = cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->compute)) != cudaSuccess)
        return fail(e, "copy from the device", err, errlen);
    if ((e = cudaStreamSynchronize(c->compute)) != cudaSuccess)
        return fail(e, "copy from the device, or a kernel before it", err, errlen);
    return 0;
}

/* Checks exactly as on the CPU, then launches on compute; kernels find c through current. */
static int cuda_run(void *ctx, const tsr_kdesc *d, const tsr_chunkview *in, int nin,
                    tsr_chunkview *out, char *err, size_t errlen) {
    tsr__cuda_ctx *c = enter(ctx);
    (void)cudaGetLastError(); /* a launch check must see this run's errors only */
    int rc = tsr__kernel_run(d, in, nin, out, TSR_DEVICE_GPU, err, errlen);
    uint64_t run = ++c->runs;
    for (int k = 0; k <= nin; k++) {
        void *p = k < nin ? in[k].data : (out ? out->data : NULL);
        if (!p) continue;
        tsr__cuda_live *l = live_find(c, p);
        if (l)
            l->run = run;
        else
            c->any_run = run;
    }
    return rc;
}

static int cuda_wait(void *ctx, char *err, size_t errlen) {
    tsr__cuda_ctx *c = enter(ctx);
    cudaError_t e;
    if ((e = cudaStreamSynchronize(c->copy)) != cudaSuccess)
        return fail(e, "a copy to the device failed", err, errlen);
    if ((e = cudaStreamSynchronize(c->compute)) != cudaSuccess)
        return fail(e, "a kernel or copy failed", err, errlen);
    return 0;
}

/* Everything but file reads and user kernels (plugins are host code): LOAD and MAP_BLOCKS run on
 * the host. */
static int cuda_has_kernel(int kop, int dtype) {
    return kop != TSR_KOP_LOAD && kop != TSR_KOP_MAP_BLOCKS &&
           tsr__kernel_lookup(kop, dtype, TSR_DEVICE_GPU) != NULL;
}

static int cuda_pin(void *ctx, void *host, size_t n) {
    enter(ctx);
    cudaError_t e = cudaHostRegister(host, n, cudaHostRegisterDefault);
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError();
    return e == cudaErrorMemoryAllocation ? -ENOMEM : TSR_ECOMPUTE;
}

static void cuda_unpin(void *ctx, void *host) {
    enter(ctx);
    if (cudaHostUnregister(host) != cudaSuccess) (void)cudaGetLastError();
}

static const tsr__devops cuda_ops = {
    .name = "cuda",
    .count = cuda_count,
    .open = cuda_open,
    .close = cuda_close,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .h2d = cuda_h2d,
    .d2h = cuda_d2h,
    .run = cuda_run,
    .wait = cuda_wait,
    .has_kernel = cuda_has_kernel,
    .pin = cuda_pin,
    .unpin = cuda_unpin,
};

/* The module's one exported symbol (kernels/cuda_load.c loads it): registers the GPU kernels in
 * the module's own kernel table (its copy of table.c, which cuda_run reaches through
 * tsr__kernel_run) and, through register_gpu, in the loader's. */
__attribute__((visibility("default"))) const tsr__devops *
tsr_cuda_module_entry(void (*register_gpu)(const tsr_kernel_fn *table));
__attribute__((visibility("default"))) const tsr__devops *
tsr_cuda_module_entry(void (*register_gpu)(const tsr_kernel_fn *table)) {
    tsr__kernels_set_gpu(tsr__gpu_kernels);
    if (register_gpu) register_gpu(tsr__gpu_kernels);
    return &cuda_ops;
}

void *tsr__cuda_scratch(tsr__cuda_ctx *c, size_t n) {
    void *p = NULL;
    if (cudaMallocFromPoolAsync(&p, n ? n : 1, c->pool, c->compute) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

void tsr__cuda_scratch_free(tsr__cuda_ctx *c, void *p) {
    if (p && cudaFreeAsync(p, c->compute) != cudaSuccess) (void)cudaGetLastError();
}
