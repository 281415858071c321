/* The toolbox: logging, time, buffers. Must stay free of libuv and msgpack (so tsr_strerror(),
 * which names libuv codes too, lives in wire/errors.c). */
#include "common/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

int tsr__grow(void **items, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 8;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem) return -ENOMEM;
        ncap *= 2;
    }
    void *p = realloc(*items, ncap * elem);
    if (!p) return -ENOMEM;
    *items = p;
    *cap = ncap;
    return 0;
}

double tsr__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int tsr__proc_mem(uint64_t *rss, uint64_t *hwm) {
    *rss = *hwm = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[128];
    int found = 0;
    while (found < 2 && fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            *rss = (uint64_t)kb << 10, found++;
        else if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
            *hwm = (uint64_t)kb << 10, found++;
    }
    fclose(f);
    return found == 2 ? 0 : -1;
}

void tsr__log(const tsr__logger *lg, int level, const char *fmt, ...) {
    if (!lg || !lg->cb || level > lg->level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lg->cb(lg->cookie, level, msg);
}

const char *tsr_log_level_name(int level) {
    static const char *names[] = {"error", "warning", "info", "debug"};
    return names[level < TSR_LOG_ERROR ? 0 : level > TSR_LOG_DEBUG ? 3 : level];
}

/* Chunks of at least twice this size start on a huge-page boundary and ask for transparent huge
 * pages: the first touch of a fresh 64 MiB buffer (a fetched payload, a kernel's output) costs
 * about 60 ms in 4 KiB pages here against about 10 ms in 2 MiB ones, which otherwise caps a
 * transfer at ~1 GB/s whatever the network does. Only whole huge pages inside the chunk are
 * advised, so resident memory never exceeds what the chunk uses. Not below 4 MiB: the 4096²
 * matmul at chunk 512 (2 MiB chunks) ran 10-15% slower with its chunks in huge pages (alternated
 * runs, 1.86-2.2 s against 2.07-2.25 s). */
#define HUGE_PAGE ((size_t)2 << 20)

tsr__buf *tsr__buf_new(size_t size) {
    /* One block: the header, then the bytes from the next 64-byte boundary (2 MiB for large
     * chunks). A single malloc stays on glibc's fast paths for small chunks (aligned_alloc
     * splits blocks and frees the pieces, which dominated tiny tasks), and large blocks still
     * get their own mapping. */
    size_t align = size >= 2 * HUGE_PAGE ? HUGE_PAGE : 64;
    if (size > SIZE_MAX - sizeof(tsr__buf) - 2 * align) return NULL;
    size_t alloc = size < 64 ? 64 : (size + 63) & ~(size_t)63;
    tsr__buf *b = malloc(sizeof *b + align - 1 + alloc);
    if (!b) return NULL;
    b->data = (void *)(((uintptr_t)(b + 1) + align - 1) & ~(uintptr_t)(align - 1));
    if (align == HUGE_PAGE) {
        size_t whole = size & ~(HUGE_PAGE - 1);
        if (whole) madvise(b->data, whole, MADV_HUGEPAGE); /* advisory: failure is harmless */
    }
    atomic_init(&b->refs, 1);
    b->size = size;
    return b;
}

tsr__buf *tsr__buf_ref(tsr__buf *b) {
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void tsr__buf_unref(tsr__buf *b) {
    if (!b) return;
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) free(b);
}

char *tsr__fmt(char *dst, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
    return dst;
}

int tsr__parse_address(const char *addr, char *host, size_t hostsize, int *port) {
    if (!addr || !*addr) return TSR_EINVALID;
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) return TSR_EINVALID;
    const char *h = addr;
    size_t hlen = (size_t)(colon - addr);
    if (h[0] == '[') {
        if (hlen < 2 || h[hlen - 1] != ']') return TSR_EINVALID;
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= hostsize) return TSR_EINVALID;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || p < 0 || p > 65535) return TSR_EINVALID;
    memcpy(host, h, hlen);
    host[hlen] = 0;
    *port = (int)p;
    return 0;
}

int tsr__is_loopback(const char *host) {
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0;
}

const char *tsr_dtype_name(tsr_dtype dtype) {
    switch (dtype) {
    case TSR_FLOAT64:
        return "float64";
    case TSR_FLOAT32:
        return "float32";
    }
    return NULL;
}

int tsr_dtype_parse(const char *name, tsr_dtype *out) {
    if (name && strcmp(name, "float64") == 0) {
        *out = TSR_FLOAT64;
        return 0;
    }
    if (name && strcmp(name, "float32") == 0) {
        *out = TSR_FLOAT32;
        return 0;
    }
    return TSR_EINVALID;
}

size_t tsr_dtype_size(tsr_dtype dtype) {
    switch (dtype) {
    case TSR_FLOAT64:
        return 8;
    case TSR_FLOAT32:
        return 4;
    }
    return 0;
}

#define TSR__STR_(x) #x
#define TSR__STR(x) TSR__STR_(x)

const char *tsr_version(void) {
    return TSR__STR(TSR_VERSION_MAJOR) "." TSR__STR(TSR_VERSION_MINOR) "." TSR__STR(
        TSR_VERSION_PATCH);
}
