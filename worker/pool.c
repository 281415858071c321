/* The host memory node: every chunk buffer of the worker comes from here and goes back here, and
 * freed buffers are kept for reuse, so that on the hot path nothing maps, unmaps or faults pages
 * in (bench/notes.md, issue 9: a fresh 4 KiB page costs ~8.6 us to touch in this guest, and an
 * munmap a cross-core TLB shootdown; together they were a quarter of the 4096² matmul at chunk
 * 128).
 *
 * - Buffers under TSR__POOL_MIN are malloc'd and freed as before: glibc's own caches serve them
 *   well, and pooling them would only add a lock to tiny tasks.
 * - Larger ones are rounded up to a size class (eight per power of two, so at most 12.5% more)
 *   and come from a per-class free list, newest first (its pages are the warmest).
 * - A class of at most 1 MiB carves its buffers out of 2 MiB slabs; larger classes map each
 *   buffer on its own, 2 MiB aligned. Every mapping asks for the pages the worker measured
 *   cheaper to touch when it started (m->pages: transparent huge pages unless 4 KiB pages cost
 *   less than half as much; common.c, tsr__pages_probe).
 * - The free lists hold at most `cap` bytes. A buffer that would go over evicts the buffers of
 *   the least recently used classes first; evicting unmaps it (or, in a slab, gives its pages
 *   back with MADV_DONTNEED and unmaps the slab when none of it is left in use or pooled).
 * - tsr__chunkmem_drain empties the lists when the worker goes idle.
 * - The warm reserve (tsr__chunkmem_reserve; a worker makes TSR__RESERVE_DEFAULT per executor,
 *   at most its cap, at start, before it says hello): one mapping of 2 MiB granules in the
 *   pool's pages, every page touched once when it is made. Slabs and large buffers take free
 *   granules (first fit) before mapping anew, and give them back to the reserve, still resident,
 *   when they are evicted. In this guest a page a process touches for the first time costs a
 *   host-side fault (2.3-4.8 ms per 2 MiB, bench/notes.md issue 9 §1 and §13), and a job's first
 *   touches cost the 4096² matmul 5-10% (§11, §13). Made at the first pooled-size request
 *   instead (as it was for a while) the whole touch stalled the one executor that asked, and
 *   gave the gain back (§12). The reserve's unused granules count against the cap like pooled
 *   buffers do, so the pool still keeps at most cap bytes it does not use; only
 *   tsr__chunkmem_release (a worker near its memory limit) gives them back to the system.
 * - Page kinds adapt (tsr__chunkmem_adapt, when the worker measured them at start rather than
 *   being told): the probe touches 8 MiB, and when it finds huge pages cheap it is memory some
 *   process freed moments ago, which the guest still backs; a job that needs more soon meets
 *   huge pages the host must fault in, 4-5 ms per 2 MiB against ~0.9 in 4 KiB pages
 *   (bench/notes.md, issue 9 §19, §26: 5.6% of a 4096² chunk-512 run). So the first 2 MiB of
 *   every new mapping (not the reserve's) is touched where it is mapped, and timed: that fault
 *   would come at the buffer's first write anyway. Two touches in a row costing more than
 *   ADAPT_FACTOR times the other kind's last one switch later mappings to the other kind; that
 *   kind's own touches are then what a switch back is judged by.
 *
 * Any thread may take or release buffers (executors allocate their outputs, the loop frees), so
 * the lists are under one mutex; the chunk byte counters stay atomics. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "worker/worker.h"

#define SLAB_LEN ((size_t)2 << 20)
#define SLAB_MAX_CLASS ((size_t)1 << 20) /* classes above this map buffers one by one */
#define GRANULE SLAB_LEN                 /* the warm reserve's unit */
#define ADAPT_FACTOR 2.0 /* the probe's rule too: common.h, TSR__PAGES_SMALL_FACTOR */
#define ADAPT_RUN 2

/* Reserve granule states: unused and resident, in use, unused and given back. */
enum { G_IDLE = 0, G_USED = 1, G_COLD = 2 };

struct tsr__slab {
    tsr__chunkmem *m;
    tsr__slab *next; /* the class's slabs */
    char *base;
    uint32_t cls, nblocks;
    uint32_t nout;    /* blocks in use or pooled; at 0 the slab is unmapped */
    uint32_t npooled; /* of those, the ones in the class's free list */
    tsr__buf *fresh;  /* blocks never handed out or given back (no resident pages) */
    tsr__buf hdr[];   /* nblocks headers; block k is base + k * cap */
};

/* Class index and capacity of a buffer of size bytes (size >= TSR__POOL_MIN). */
static unsigned class_of(size_t size, size_t *cap) {
    unsigned lg = 63u - (unsigned)__builtin_clzll((unsigned long long)size);
    size_t step = (size_t)1 << (lg - 3);
    size_t c = (size + step - 1) & ~(step - 1);
    *cap = c;
    return lg * 8 + (unsigned)(c >> (lg - 3)) - 8;
}

static void count(tsr__chunkmem *m, size_t size) {
    uint_fast64_t now = atomic_fetch_add_explicit(&m->bytes, size, memory_order_relaxed) + size;
    uint_fast64_t peak = atomic_load_explicit(&m->peak, memory_order_relaxed);
    while (now > peak && !atomic_compare_exchange_weak_explicit(
                             &m->peak, &peak, now, memory_order_relaxed, memory_order_relaxed)) {
    }
}

static void uncount(tsr__chunkmem *m, size_t size) {
    atomic_fetch_sub_explicit(&m->bytes, size, memory_order_relaxed);
}

static void release_small(tsr__buf *b) {
    uncount(b->owner, b->size);
    free(b);
}

/* Slab blocks point at their slab, mapped buffers at the node: the release function says which. */
static void release_slab(tsr__buf *b);
static void release_mapped(tsr__buf *b);

static int in_slab(const tsr__buf *b) {
    return b->release == release_slab;
}

/* ---- the warm reserve (mu held) ---- */

static int in_reserve(const tsr__chunkmem *m, const char *p) {
    return m->nwarm && p >= m->warm && p < m->warm + m->nwarm * GRANULE;
}

/* len bytes (rounded up to granules) of the reserve, first fit; NULL when none is free. */
static char *reserve_take(tsr__chunkmem *m, size_t len) {
    size_t n = (len + GRANULE - 1) / GRANULE;
    for (size_t i = 0; i + n <= m->nwarm;) {
        size_t k = 0;
        while (k < n && m->gstate[i + k] != G_USED) k++;
        if (k < n) {
            i += k + 1;
            continue;
        }
        for (k = 0; k < n; k++) {
            if (m->gstate[i + k] == G_IDLE) m->warm_idle -= GRANULE;
            m->gstate[i + k] = G_USED;
        }
        return m->warm + i * GRANULE;
    }
    return NULL;
}

/* Gives p's granules back to the reserve, resident. */
static void reserve_give(tsr__chunkmem *m, char *p, size_t len) {
    size_t i = (size_t)(p - m->warm) / GRANULE, n = (len + GRANULE - 1) / GRANULE;
    for (size_t k = 0; k < n; k++) m->gstate[i + k] = G_IDLE;
    m->warm_idle += n * GRANULE;
    m->warm_stamp = m->tick;
}

/* Gives the reserve's highest idle granule back to the system (first fit keeps using the low
 * ones); 0 when none is idle. */
static int reserve_cool_one(tsr__chunkmem *m) {
    for (size_t i = m->nwarm; i-- > 0;) {
        if (m->gstate[i] != G_IDLE) continue;
        madvise(m->warm + i * GRANULE, GRANULE, MADV_DONTNEED);
        m->gstate[i] = G_COLD;
        m->warm_idle -= GRANULE;
        return 1;
    }
    return 0;
}

/* Whether granules that went idle at tick `since` were last used before every pooled buffer's
 * class. */
static int reserve_idle_oldest(const tsr__chunkmem *m, uint64_t since) {
    for (unsigned c = 0; c < TSR__POOL_CLASSES; c++)
        if (m->cls[c].free && m->cls[c].stamp < since) return 0;
    return 1;
}

static int evict_one_locked(tsr__chunkmem *m);

/* len bytes of the reserve, evicting pooled buffers (least recently used class first) while
 * that may free granules: a reserve held by one class's free list goes to the class that needs
 * it. NULL when the reserve has no room even then, or there is none. */
static char *reserve_take_evicting(tsr__chunkmem *m, size_t len) {
    if ((len + GRANULE - 1) / GRANULE > m->nwarm) return NULL;
    char *p;
    while (!(p = reserve_take(m, len)) && m->pooled_warm > 0 && evict_one_locked(m)) {
    }
    return p;
}

/* A first touch of 2 MiB in pages `kind` took ms: the rule of "Page kinds" above (mu held; the
 * callers time touches only while m->adapt). */
static void observe_locked(tsr__chunkmem *m, int kind, double ms) {
    if (kind != m->pages) return;
    int other = kind == TSR__PAGES_HUGE ? TSR__PAGES_SMALL : TSR__PAGES_HUGE;
    m->touch_ms[kind] = ms;
    if (ms <= ADAPT_FACTOR * m->touch_ms[other]) {
        m->slow = 0;
        return;
    }
    if (++m->slow < ADAPT_RUN) return;
    m->pages = other;
    m->slow = 0;
    m->switches++;
}

/* Memory for a slab or a large buffer: from the reserve, else mapped anew (and its first touch
 * timed, when the kind adapts). */
static char *take_locked(tsr__chunkmem *m, size_t len) {
    char *p = reserve_take_evicting(m, len);
    if (p) return p;
    int kind = m->pages;
    if (!(p = tsr__map_aligned(len, kind))) return NULL;
    if (m->adapt && len >= GRANULE) observe_locked(m, kind, tsr__touch_pages(p, GRANULE));
    return p;
}

static void give_locked(tsr__chunkmem *m, char *p, size_t len) {
    if (in_reserve(m, p))
        reserve_give(m, p, len);
    else
        tsr__unmap(p, len);
}

/* Frees slab s, none of whose blocks is in use or pooled any more: its memory goes back whole
 * (mu held). */
static void free_slab_locked(tsr__chunkmem *m, tsr__slab *s) {
    tsr__slab **p = &m->cls[s->cls].slabs;
    while (*p != s) p = &(*p)->next;
    *p = s->next;
    m->mapped -= SLAB_LEN;
    give_locked(m, s->base, SLAB_LEN);
    free(s);
}

/* Gives a pooled-class buffer's memory back to the system, or to the reserve (mu held). */
static void destroy_locked(tsr__chunkmem *m, tsr__buf *b) {
    if (!in_slab(b)) {
        m->mapped -= b->cap;
        give_locked(m, b->data, b->cap);
        free(b);
        return;
    }
    tsr__slab *s = b->owner;
    if (--s->nout == 0) {
        free_slab_locked(m, s);
        return;
    }
    madvise(b->data, b->cap, MADV_DONTNEED);
    b->next = s->fresh;
    s->fresh = b;
}

/* Takes b, which is in class c's free list after *pp, out of the pool's counts (mu held). */
static void unpool_locked(tsr__chunkmem *m, tsr__buf **pp, tsr__buf *b) {
    *pp = b->next;
    m->pooled -= b->cap;
    if (in_reserve(m, b->data)) m->pooled_warm -= b->cap;
    if (in_slab(b)) ((tsr__slab *)b->owner)->npooled--;
}

/* A slab of class c whose blocks are all in the free list, or NULL (mu held). */
static tsr__slab *idle_slab(tsr__chunkmem *m, unsigned c) {
    for (tsr__slab *s = m->cls[c].slabs; s; s = s->next)
        if (s->npooled > 0 && s->npooled == s->nout) return s;
    return NULL;
}

/* Evicts from the least recently used non-empty class; 0 when there was nothing to evict. A
 * slab whose blocks are all pooled goes whole (unmapped, or back to the reserve), so its huge
 * page is given back as one: evicting a single block gives its pages back with MADV_DONTNEED,
 * which splits the huge page, and in this guest the block's next use then faults 4 KiB pages
 * back one by one (~13 us each: 1.7 ms for a 512 KiB block; bench/notes.md issue 9 §13). */
static int evict_one_locked(tsr__chunkmem *m) {
    unsigned best = TSR__POOL_CLASSES;
    for (unsigned c = 0; c < TSR__POOL_CLASSES; c++)
        if (m->cls[c].free && (best == TSR__POOL_CLASSES || m->cls[c].stamp < m->cls[best].stamp))
            best = c;
    if (best == TSR__POOL_CLASSES) return 0;
    tsr__slab *s = idle_slab(m, best);
    if (s) {
        tsr__buf **pp = &m->cls[best].free;
        while (*pp && s->npooled > 0) {
            tsr__buf *b = *pp;
            if (b->owner != s) {
                pp = &b->next;
                continue;
            }
            unpool_locked(m, pp, b);
            m->evicted++;
        }
        free_slab_locked(m, s); /* its headers go with it */
        return 1;
    }
    tsr__buf *b = m->cls[best].free;
    unpool_locked(m, &m->cls[best].free, b);
    m->evicted++;
    destroy_locked(m, b);
    return 1;
}

static void release_to(tsr__chunkmem *m, tsr__buf *b) {
    uncount(m, b->size);
    size_t cap;
    unsigned c = class_of(b->cap, &cap);
    pthread_mutex_lock(&m->mu);
    int warm = in_reserve(m, b->data);
    if (b->cap > m->cap && !warm) {
        destroy_locked(m, b);
        pthread_mutex_unlock(&m->mu);
        return;
    }
    b->next = m->cls[c].free;
    m->cls[c].free = b;
    m->cls[c].stamp = ++m->tick;
    m->pooled += b->cap;
    if (in_slab(b)) ((tsr__slab *)b->owner)->npooled++;
    if (warm) m->pooled_warm += b->cap;
    /* Memory kept and unused (pooled, and the reserve's unused granules) stays within the cap,
     * the least recently used going first: granules that were idle before this release, and
     * unused since before every pooled buffer, are given back to the system (the 64 MiB chunks
     * of a chain were unmapped on every release while a 32 MiB reserve no buffer fitted in sat
     * idle, and every fetch then faulted its destination in). Evicting a reserve's buffer
     * changes nothing resident, so it stops when only those are left (at most the reserve,
     * itself at most the cap); the granules such an eviction makes idle stay resident. */
    uint64_t stale = m->warm_idle, since = m->warm_stamp;
    while (m->pooled + m->warm_idle > m->cap) {
        if (stale && reserve_idle_oldest(m, since) && reserve_cool_one(m)) {
            stale -= GRANULE;
            continue;
        }
        if (!(m->pooled > m->pooled_warm && evict_one_locked(m))) break;
    }
    pthread_mutex_unlock(&m->mu);
}

static void release_slab(tsr__buf *b) {
    release_to(((tsr__slab *)b->owner)->m, b);
}

static void release_mapped(tsr__buf *b) {
    release_to(b->owner, b);
}

/* A block of class c from one of its slabs, mapping a new slab when all are in use (mu held). */
static tsr__buf *slab_block_locked(tsr__chunkmem *m, unsigned c, size_t cap) {
    tsr__slab *s = m->cls[c].slabs;
    while (s && !s->fresh) s = s->next;
    if (!s) {
        uint32_t n = (uint32_t)(SLAB_LEN / cap);
        s = calloc(1, sizeof *s + n * sizeof(tsr__buf));
        if (!s) return NULL;
        if (!(s->base = take_locked(m, SLAB_LEN))) {
            free(s);
            return NULL;
        }
        s->m = m;
        s->cls = c;
        s->nblocks = n;
        for (uint32_t k = n; k-- > 0;) {
            tsr__buf *h = &s->hdr[k];
            h->data = s->base + (size_t)k * cap;
            h->cap = cap;
            h->owner = s;
            h->release = release_slab;
            h->next = s->fresh;
            s->fresh = h;
        }
        s->next = m->cls[c].slabs;
        m->cls[c].slabs = s;
        m->mapped += SLAB_LEN;
    }
    tsr__buf *b = s->fresh;
    s->fresh = b->next;
    s->nout++;
    return b;
}

tsr__buf *tsr__chunkmem_new(tsr__chunkmem *m, size_t size) {
    if (!m) return tsr__buf_new(size);
    tsr__buf *b;
    if (size < TSR__POOL_MIN) {
        if (!(b = tsr__buf_new(size))) return NULL;
        b->release = release_small;
        b->owner = m;
        count(m, size);
        return b;
    }
    size_t cap;
    unsigned c = class_of(size, &cap);
    pthread_mutex_lock(&m->mu);
    m->cls[c].stamp = ++m->tick;
    if ((b = m->cls[c].free)) {
        unpool_locked(m, &m->cls[c].free, b);
        m->hits++;
    } else if (cap <= SLAB_MAX_CLASS) {
        b = slab_block_locked(m, c, cap);
        m->misses++;
    }
    char *warm = !b && cap > SLAB_MAX_CLASS ? reserve_take_evicting(m, cap) : NULL;
    int kind = m->pages, timed = !warm && m->adapt && cap >= GRANULE;
    pthread_mutex_unlock(&m->mu);
    if (!b && cap > SLAB_MAX_CLASS) {
        if (!(b = calloc(1, sizeof *b)) || !(b->data = warm ? warm : tsr__map_aligned(cap, kind))) {
            if (warm) {
                pthread_mutex_lock(&m->mu);
                reserve_give(m, warm, cap);
                pthread_mutex_unlock(&m->mu);
            }
            free(b);
            return NULL;
        }
        b->cap = cap;
        b->owner = m;
        b->release = release_mapped;
        double ms = timed ? tsr__touch_pages(b->data, GRANULE) : 0;
        pthread_mutex_lock(&m->mu);
        if (timed) observe_locked(m, kind, ms);
        m->mapped += cap;
        m->misses++;
        pthread_mutex_unlock(&m->mu);
    }
    if (!b) return NULL;
    b->next = NULL;
    b->size = size;
    atomic_init(&b->refs, 1);
    count(m, size);
    return b;
}

void tsr__chunkmem_drain(tsr__chunkmem *m) {
    pthread_mutex_lock(&m->mu);
    while (m->pooled > 0 && evict_one_locked(m)) {
    }
    pthread_mutex_unlock(&m->mu);
}

void tsr__chunkmem_init(tsr__chunkmem *m, uint64_t cap) {
    memset(m, 0, sizeof *m);
    atomic_init(&m->bytes, 0);
    atomic_init(&m->peak, 0);
    m->cap = cap;
    m->pages = TSR__PAGES_HUGE;
    pthread_mutex_init(&m->mu, NULL);
}

void tsr__chunkmem_set_pages(tsr__chunkmem *m, int pages) {
    pthread_mutex_lock(&m->mu);
    m->pages = pages == TSR__PAGES_SMALL ? TSR__PAGES_SMALL : TSR__PAGES_HUGE;
    pthread_mutex_unlock(&m->mu);
}

void tsr__chunkmem_adapt(tsr__chunkmem *m, double huge_ms, double small_ms) {
    pthread_mutex_lock(&m->mu);
    m->adapt = 1;
    m->touch_ms[TSR__PAGES_HUGE] = huge_ms;
    m->touch_ms[TSR__PAGES_SMALL] = small_ms;
    m->slow = 0;
    pthread_mutex_unlock(&m->mu);
}

void tsr__chunkmem_reserve(tsr__chunkmem *m, uint64_t bytes) {
    if (bytes > m->cap) bytes = m->cap;
    size_t n = (size_t)(bytes / GRANULE);
    pthread_mutex_lock(&m->mu);
    int have = m->warm != NULL, pages = m->pages;
    pthread_mutex_unlock(&m->mu);
    if (n == 0 || have) return;
    char *base = tsr__map_aligned(n * GRANULE, pages);
    uint8_t *st = calloc(n, 1); /* G_IDLE */
    if (!base || !st) {         /* no reserve: buffers are mapped as they are needed */
        if (base) tsr__unmap(base, n * GRANULE);
        free(st);
        return;
    }
    tsr__touch_pages(base, n * GRANULE);
    pthread_mutex_lock(&m->mu);
    m->warm = base;
    m->gstate = st;
    m->nwarm = n;
    m->warm_idle = n * GRANULE;
    pthread_mutex_unlock(&m->mu);
}

void tsr__chunkmem_release(tsr__chunkmem *m) {
    tsr__chunkmem_drain(m);
    pthread_mutex_lock(&m->mu);
    while (reserve_cool_one(m)) {
    }
    pthread_mutex_unlock(&m->mu);
}

void tsr__chunkmem_destroy(tsr__chunkmem *m) {
    tsr__chunkmem_drain(m);
    if (m->warm) tsr__unmap(m->warm, m->nwarm * GRANULE);
    free(m->gstate);
    m->warm = NULL;
    m->gstate = NULL;
    m->nwarm = 0;
    pthread_mutex_destroy(&m->mu);
}

void tsr__chunkmem_unref(tsr__chunkmem *m, tsr__buf *b) {
    (void)m; /* the buffer knows where it goes back to */
    tsr__buf_unref(b);
}

void tsr__chunkmem_read(tsr__chunkmem *m, tsr__poolstats *out) {
    pthread_mutex_lock(&m->mu);
    *out = (tsr__poolstats){.pooled = m->pooled,
                            .mapped = m->mapped,
                            .hits = m->hits,
                            .misses = m->misses,
                            .evicted = m->evicted,
                            .reserved = m->warm ? m->nwarm * GRANULE : 0,
                            .reserve_idle = m->warm_idle,
                            .pages = m->pages,
                            .switches = m->switches};
    pthread_mutex_unlock(&m->mu);
}
