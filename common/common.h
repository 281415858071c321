/* The small shared toolbox: logging, monotonic time, aligned refcounted buffers
 * and a growable-array helper. Dependency-free (libc only); every module may include it. */
#ifndef TSR_COMMON_H
#define TSR_COMMON_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/tessera.h"

#define TSR__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TSR__MIN(a, b) ((a) < (b) ? (a) : (b))
#define TSR__MAX(a, b) ((a) > (b) ? (a) : (b))

/* Grows *items (with *cap slots of elem bytes) so that `need` fit. 0 or -ENOMEM. */
int tsr__grow(void **items, size_t *cap, size_t need, size_t elem);
#define TSR__GROW(ptr, cap, need) tsr__grow((void **)&(ptr), &(cap), (need), sizeof(*(ptr)))

/* Seconds on a monotonic clock. */
double tsr__now(void);

/* This process's resident memory now (VmRSS) and at its peak (VmHWM), in bytes, from
 * /proc/self/status. 0, or -1 when it cannot be read (both are then 0). */
int tsr__proc_mem(uint64_t *rss, uint64_t *hwm);

/* Logging through the caller's logger (tessera.h's tsr_logger; TSR_LOG_* levels are public):
 * the library never prints on its own. A line goes to cb when its level is at or under `level`;
 * with no cb it is dropped. */
typedef struct tsr__logger {
    const char *who; /* "scheduler", "worker w1", ... (borrowed; for debugging, not printed) */
    int level;       /* messages above this level are dropped */
    void (*cb)(void *cookie, int level, const char *msg); /* NULL = silent */
    void *cookie;
} tsr__logger;
void tsr__log(const tsr__logger *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A 64-byte aligned, reference-counted byte buffer (chunk data). */
typedef struct tsr__buf {
    atomic_int refs;
    size_t size;
    void *data; /* 64-byte aligned, size bytes (at least 64 allocated, so never NULL) */
    /* An allocator that wants its buffers back (the worker's buffer pool, worker/pool.c) sets
     * release: the last unref calls it instead of freeing. owner, cap (bytes usable at data)
     * and next (the owner's free list) are the owner's; tsr__buf_new leaves them zero. */
    void (*release)(struct tsr__buf *b);
    void *owner;
    struct tsr__buf *next;
    size_t cap;
    /* A GPU worker's device tier (worker/devtier.c) records the buffer's device copy in dev and
     * sets dev_drop, which the last unref calls first (before release), so the copy is let go
     * before the buffer can be reused. Both are the tier's; NULL elsewhere. */
    void *dev;
    void (*dev_drop)(struct tsr__buf *b);
} tsr__buf;

/* refs = 1; NULL on ENOMEM. Buffers of 2 MiB and more get their own mapping, 2 MiB aligned, with
 * transparent huge pages asked for on every whole huge page in it (common.c says why). */
tsr__buf *tsr__buf_new(size_t size);
/* The mapping helpers behind it, for allocators of their own: size bytes (a multiple of 4 KiB)
 * starting on a 2 MiB boundary; NULL on ENOMEM. What its whole huge pages are advised:
 * transparent huge pages (TSR__PAGES_HUGE), 4 KiB pages (TSR__PAGES_SMALL) or nothing. */
enum { TSR__PAGES_NONE = 0, TSR__PAGES_HUGE = 1, TSR__PAGES_SMALL = 2 };
void *tsr__map_aligned(size_t size, int pages);
/* 4 KiB pages are the cheaper when a first touch of them costs less than this share of a huge
 * page's (huge pages also spare the TLB). */
#define TSR__PAGES_SMALL_FACTOR 0.5
/* Times a first touch of 2 MiB in huge pages and in 4 KiB pages (ms, the median of a few, both
 * kinds in turn) and returns the cheaper kind, TSR__PAGES_HUGE or TSR__PAGES_SMALL. Maps and
 * unmaps 16 MiB. A worker calls it when it starts (common.c says why). */
int tsr__pages_probe(double *huge_ms, double *small_ms);
/* Writes a byte on every 4 KiB page of [p, p + len), faulting in whatever is not resident yet,
 * and returns how long that took in ms. */
double tsr__touch_pages(void *p, size_t len);
void tsr__unmap(void *p, size_t size);
tsr__buf *tsr__buf_ref(tsr__buf *b);
void tsr__buf_unref(tsr__buf *b); /* NULL is a no-op */

/* Formats into a fixed buffer, always NUL-terminated; returns dst. */
char *tsr__fmt(char *dst, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Splits "HOST:PORT" (HOST may be "[v6]"); 0 or TSR_EINVALID. host gets at most hostsize-1. */
int tsr__parse_address(const char *addr, char *host, size_t hostsize, int *port);
/* Is HOST a loopback address (127.0.0.0/8, ::1, "localhost")? */
int tsr__is_loopback(const char *host);
/* Does path name an existing character device (/dev/null)? Outputs written there are written in
 * place, and any number may go there (client/atomic_file.c). */
int tsr__is_char_device(const char *path);
/* "a pipe", "a socket" or "a block device" for a file of mode m (stat's st_mode), which no output
 * may be written to (a .npy is written at offsets, in any order); NULL for any other kind. */
const char *tsr__unwritable_kind(unsigned m);

/* A dtype's NumPy descr as .npy headers and Zarr's .zarray say it ("<f8", "<f4", "<i8", "|b1"),
 * NULL for an invalid value; and the reverse (also "<b1"), 0 or TSR_EINVALID. */
const char *tsr__dtype_descr(tsr_dtype dtype);
int tsr__dtype_from_descr(const char *descr, tsr_dtype *out);

/* The memory this process may use, in bytes: the machine's (MemTotal), or its cgroup's limit
 * (v2 memory.max, v1 memory.limit_in_bytes) where that is lower; 0 when unknown. */
uint64_t tsr__system_memory(void);

#endif
