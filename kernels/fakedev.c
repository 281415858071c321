/* The fake device: a stand-in for a GPU that keeps "device memory" in host memory and runs the
 * CPU kernels on it. It lets the worker's device tier (cache, eviction, write-back, prefetch),
 * GPU workers' protocol and placement be tested where there is no GPU. Picked only when
 * TESSERA_FAKE_GPU=1 is in the environment (tests); never a silent fallback for a missing GPU.
 *
 * Its memory is limited like a device's: TESSERA_FAKE_GPU_MEMORY (bytes, default 1 GiB) is the
 * device's total, and alloc fails beyond it, so eviction under a device memory limit smaller
 * or larger than the device is exercised too. Copies and kernels run at once (synchronous). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/device.h"

typedef struct fake_ctx {
    uint64_t total, used;
} fake_ctx;

/* Each allocation carries its size in front of it, 64-byte aligned. */
#define HDR 64

static int fake_count(void) {
    const char *s = getenv("TESSERA_FAKE_GPU");
    return s && strcmp(s, "1") == 0 ? 1 : 0;
}

static int fake_open(int id, void **ctx, tsr__devinfo *info, char *err, size_t errlen) {
    if (id != 0) {
        tsr__fmt(err, errlen, "fake device %d does not exist (there is one: 0)", id);
        return TSR_EINVALID;
    }
    fake_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        tsr__fmt(err, errlen, "no memory");
        return -ENOMEM;
    }
    c->total = (uint64_t)1 << 30;
    const char *m = getenv("TESSERA_FAKE_GPU_MEMORY");
    if (m && *m) {
        char *end;
        unsigned long long v = strtoull(m, &end, 10);
        if (*end || v < 4096) {
            free(c);
            tsr__fmt(err, errlen, "TESSERA_FAKE_GPU_MEMORY=%s: not a byte count of 4096 or more",
                     m);
            return TSR_EINVALID;
        }
        c->total = v;
    }
    memset(info, 0, sizeof *info);
    tsr__fmt(info->name, sizeof info->name, "fake device (host memory, CPU kernels)");
    tsr__fmt(info->driver, sizeof info->driver, "none");
    tsr__fmt(info->runtime, sizeof info->runtime, "none");
    info->total_bytes = info->free_bytes = c->total;
    *ctx = c;
    return 0;
}

static void fake_close(void *ctx) {
    free(ctx);
}

static void *fake_alloc(void *ctx, size_t n) {
    fake_ctx *c = ctx;
    if (n > c->total - c->used || n > SIZE_MAX - HDR) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, HDR, HDR + n) != 0) return NULL;
    *(size_t *)p = n;
    c->used += n;
    return (char *)p + HDR;
}

static void fake_free(void *ctx, void *p) {
    fake_ctx *c = ctx;
    if (!p) return;
    char *base = (char *)p - HDR;
    c->used -= *(size_t *)base;
    free(base);
}

static int fake_copy(void *ctx, void *dst, const void *src, size_t n, char *err, size_t errlen) {
    memcpy(dst, src, n);
    return 0;
}

static int fake_run(void *ctx, const tsr_kdesc *d, const tsr_chunkview *in, int nin,
                    tsr_chunkview *out, char *err, size_t errlen) {
    return tsr__kernel_run(d, in, nin, out, TSR_DEVICE_CPU, err, errlen);
}

static int fake_wait(void *ctx, char *err, size_t errlen) {
    return 0;
}

/* As the CUDA backend: file reads, user kernels (plugins are host code, resolved by the worker's
 * host path) and fused programs run on the host. */
static int fake_has_kernel(int kop, int dtype) {
    return kop != TSR_KOP_LOAD && kop != TSR_KOP_MAP_BLOCKS && kop != TSR_KOP_FUSED &&
           tsr__kernel_lookup(kop, dtype, TSR_DEVICE_CPU) != NULL;
}

static const tsr__devops fake_ops = {
    .name = "fake",
    .count = fake_count,
    .open = fake_open,
    .close = fake_close,
    .alloc = fake_alloc,
    .free = fake_free,
    .h2d = fake_copy,
    .d2h = fake_copy,
    .run = fake_run,
    .wait = fake_wait,
    .has_kernel = fake_has_kernel,
};

const tsr__devops *tsr__devops_fake(void) {
    return &fake_ops;
}
