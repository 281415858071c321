/* The toolbox: logging, time, buffers. Must stay free of libuv and msgpack (so tsr_strerror(),
 * which names libuv codes too, lives in wire/errors.c). */
#include "common/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

/* Chunk buffers of a huge page and more get their own 2 MiB-aligned mapping, which asks for
 * transparent huge pages (madvise: the kernels here have THP policy "madvise"), or for 4 KiB
 * pages (MADV_NOHUGEPAGE, so that a "THP always" kernel follows the choice too) where a worker
 * measured those cheaper (tsr__pages_probe; the worker's pool maps with its choice, client-side
 * buffers keep huge pages). Only whole huge pages inside the chunk are advised, so resident
 * memory never exceeds what the chunk uses.
 *
 * Which is cheaper to touch for the first time has flipped with the machines these guests run
 * on, and it is most of what a job's fresh memory costs (bench/notes.md, issue 9 §1, §13, §19):
 * one generation faulted 4 KiB pages at ~8.6 us each (16.9 ns per float64 filled, 0.66 in huge
 * pages: the 4096-squared matmul at chunk 512 took 2.4 s in 4 KiB pages and 1.6-1.9 s in huge
 * pages); the next faults a fresh huge page in 4.0-4.7 ms and 2 MiB of 4 KiB pages in 0.8-1.1
 * ms, for as long as the guest has free memory in pieces smaller than a huge page that it has
 * not yet handed back to the host (then 5-6 ms). So a worker measures both when it starts. */
#define HUGE_PAGE ((size_t)2 << 20)
#define PAGE ((size_t)4096)
#define PROBE_GRANULES 4

static void advise(char *p, size_t size, int pages) {
    if (size < HUGE_PAGE || (pages != TSR__PAGES_HUGE && pages != TSR__PAGES_SMALL)) return;
    /* advisory: failure is harmless */
    madvise(p, size & ~(HUGE_PAGE - 1), pages == TSR__PAGES_HUGE ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int tsr__pages_probe(double *huge_ms, double *small_ms) {
    /* PROBE_GRANULES huge pages of each kind, touched in turn so that both meet the same
     * moment's machine; the median granule of each decides. */
    size_t half = PROBE_GRANULES * HUGE_PAGE;
    char *p = tsr__map_aligned(2 * half, TSR__PAGES_NONE);
    if (!p) return TSR__PAGES_HUGE;
    advise(p, half, TSR__PAGES_HUGE);
    advise(p + half, half, TSR__PAGES_SMALL);
    double t[2][PROBE_GRANULES];
    for (int g = 0; g < PROBE_GRANULES; g++) {
        for (int kind = 0; kind < 2; kind++) {
            t[kind][g] =
                tsr__touch_pages(p + (size_t)kind * half + (size_t)g * HUGE_PAGE, HUGE_PAGE);
        }
    }
    tsr__unmap(p, 2 * half);
    for (int kind = 0; kind < 2; kind++) qsort(t[kind], PROBE_GRANULES, sizeof(double), cmp_double);
    double h = (t[0][PROBE_GRANULES / 2 - 1] + t[0][PROBE_GRANULES / 2]) / 2;
    double s = (t[1][PROBE_GRANULES / 2 - 1] + t[1][PROBE_GRANULES / 2]) / 2;
    if (huge_ms) *huge_ms = h;
    if (small_ms) *small_ms = s;
    /* Huge pages unless 4 KiB ones are clearly cheaper: they also spare the TLB, and a huge page
     * a process gave back moments ago is nearly free to take again (0.13-0.2 ms). */
    return s < TSR__PAGES_SMALL_FACTOR * h ? TSR__PAGES_SMALL : TSR__PAGES_HUGE;
}

double tsr__touch_pages(void *p, size_t len) {
    double t0 = tsr__now();
    for (size_t off = 0; off < len; off += PAGE) ((volatile char *)p)[off] = 0;
    return (tsr__now() - t0) * 1e3;
}

void *tsr__map_aligned(size_t size, int pages) {
    if (size > SIZE_MAX - HUGE_PAGE) return NULL;
    /* Map a huge page more, then cut the slack off both ends. */
    size_t len = size + HUGE_PAGE;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (p > m) munmap(m, (size_t)(p - m));
    size_t tail = (size_t)(m + len - (p + size));
    if (tail) munmap(p + size, tail);
    advise(p, size, pages);
    return p;
}

void tsr__unmap(void *p, size_t size) {
    if (p) munmap(p, size);
}

static void release_mapped(tsr__buf *b) {
    tsr__unmap(b->data, b->cap);
    free(b);
}

tsr__buf *tsr__buf_new(size_t size) {
    if (size >= HUGE_PAGE) {
        tsr__buf *b = calloc(1, sizeof *b);
        if (!b) return NULL;
        size_t len = (size + PAGE - 1) & ~(PAGE - 1);
        if (len < size || !(b->data = tsr__map_aligned(len, 1))) {
            free(b);
            return NULL;
        }
        atomic_init(&b->refs, 1);
        b->size = size;
        b->cap = len;
        b->release = release_mapped;
        return b;
    }
    /* One block: the header, then the bytes from the next 64-byte boundary. A single malloc
     * stays on glibc's fast paths for small chunks (aligned_alloc splits blocks and frees the
     * pieces, which dominated tiny tasks). */
    size_t alloc = size < 64 ? 64 : (size + 63) & ~(size_t)63;
    tsr__buf *b = malloc(sizeof *b + 63 + alloc);
    if (!b) return NULL;
    memset(b, 0, sizeof *b);
    b->data = (void *)(((uintptr_t)(b + 1) + 63) & ~(uintptr_t)63);
    atomic_init(&b->refs, 1);
    b->size = size;
    b->cap = alloc;
    return b;
}

tsr__buf *tsr__buf_ref(tsr__buf *b) {
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void tsr__buf_unref(tsr__buf *b) {
    if (!b) return;
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
    if (b->dev_drop) b->dev_drop(b);
    if (b->release)
        b->release(b);
    else
        free(b);
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

int tsr__is_char_device(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISCHR(st.st_mode);
}

const char *tsr__unwritable_kind(unsigned m) {
    return S_ISFIFO(m) ? "a pipe" : S_ISSOCK(m) ? "a socket" : S_ISBLK(m) ? "a block device" : NULL;
}

const char *tsr_dtype_name(tsr_dtype dtype) {
    switch (dtype) {
    case TSR_FLOAT64:
        return "float64";
    case TSR_FLOAT32:
        return "float32";
    case TSR_INT64:
        return "int64";
    case TSR_BOOL:
        return "bool";
    }
    return NULL;
}

int tsr_dtype_parse(const char *name, tsr_dtype *out) {
    for (int d = 0; name && d < TSR_DTYPE_COUNT; d++)
        if (strcmp(name, tsr_dtype_name((tsr_dtype)d)) == 0) {
            *out = (tsr_dtype)d;
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
    case TSR_INT64:
        return 8;
    case TSR_BOOL:
        return 1;
    }
    return 0;
}

const char *tsr__dtype_descr(tsr_dtype dtype) {
    static const char *const d[TSR_DTYPE_COUNT] = {"<f8", "<f4", "<i8", "|b1"};
    return (unsigned)dtype < TSR_DTYPE_COUNT ? d[dtype] : NULL;
}

int tsr__dtype_from_descr(const char *descr, tsr_dtype *out) {
    for (int d = 0; descr && d < TSR_DTYPE_COUNT; d++)
        if (strcmp(descr, tsr__dtype_descr((tsr_dtype)d)) == 0) {
            *out = (tsr_dtype)d;
            return 0;
        }
    /* NumPy writes bool as "|b1"; "<b1" and ">b1" mean the same single byte. */
    if (descr && (strcmp(descr, "<b1") == 0 || strcmp(descr, ">b1") == 0)) {
        *out = TSR_BOOL;
        return 0;
    }
    return TSR_EINVALID;
}

#define TSR__STR_(x) #x
#define TSR__STR(x) TSR__STR_(x)

const char *tsr_version(void) {
    return TSR__STR(TSR_VERSION_MAJOR) "." TSR__STR(TSR_VERSION_MINOR) "." TSR__STR(
        TSR_VERSION_PATCH);
}

/* The first number in a file, or 0. */
static uint64_t read_u64(const char *path, const char *key) {
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    char line[256];
    uint64_t v = 0;
    while (fgets(line, sizeof line, f)) {
        if (key && strncmp(line, key, strlen(key)) != 0) continue;
        const char *p = line + (key ? strlen(key) : 0);
        while (*p == ' ' || *p == '\t') p++;
        if (*p >= '0' && *p <= '9') v = strtoull(p, NULL, 10);
        break;
    }
    fclose(f);
    return v;
}

uint64_t tsr__system_memory(void) {
    uint64_t total = read_u64("/proc/meminfo", "MemTotal:") * 1024;
    /* "max" reads as 0: no limit. v1's "no limit" is a huge number, larger than the machine. */
    uint64_t cg = read_u64("/sys/fs/cgroup/memory.max", NULL);
    if (!cg) cg = read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes", NULL);
    if (cg && (!total || cg < total)) total = cg;
    return total;
}

uint64_t tsr_system_memory(void) {
    return tsr__system_memory();
}
