/* The device tier of a GPU worker's memory manager (DESIGN.md, "Worker: memory nodes";
 * docs/gpu.md). Host memory is every chunk's home: a chunk's buffer (tsr__buf) always exists in
 * the host node, and the device holds at most one copy of it, recorded here. A copy is clean
 * (the same bytes as the host buffer) or dirty (written by a kernel on the device: the host
 * bytes are stale until written back).
 *
 * - Kernels read and write device copies; a task's outputs stay on the device, dirty, until
 *   something on the host needs them (a peer's or client's get, a host-only kernel) or they are
 *   evicted.
 * - Resident copies are kept least recently used first under the device memory limit. A copy in
 *   use by issued work is busy and never evicted; evicting a dirty copy writes it back into its
 *   host buffer first, so eviction never loses bytes and never needs host memory it does not
 *   have (the buffer was reserved when the chunk was made).
 * - When the host buffer's last reference goes (the loop thread frees a chunk), the copy is
 *   orphaned at once (tsr__buf's dev_drop) and its device memory given back by the GPU thread
 *   at its next step: only that thread calls the device backend.
 *
 * Locking: mu guards every record, the lists and the counters. The GPU thread holds it while it
 * writes a dirty copy back, so the loop cannot release that host buffer (and the pool hand it
 * out again) under the copy. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker.h"

struct tsr__devcopy {
    tsr__devtier *tier;
    tsr__buf *buf; /* the host home; NULL once orphaned */
    void *dptr;    /* device memory; NULL when not resident */
    size_t bytes;
    uint32_t busy;             /* issued work using it */
    uint8_t dirty;             /* the device bytes are newer than the host's */
    tsr__devcopy *prev, *next; /* resident copies, oldest first */
};

/* ---- lists (mu held) ------------------------------------------------------------------------- */

static void lru_unlink(tsr__devtier *t, tsr__devcopy *c) {
    if (c->prev)
        c->prev->next = c->next;
    else if (t->old == c)
        t->old = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else if (t->young == c)
        t->young = c->prev;
    c->prev = c->next = NULL;
}

static void lru_append(tsr__devtier *t, tsr__devcopy *c) {
    c->next = NULL;
    c->prev = t->young;
    if (t->young)
        t->young->next = c;
    else
        t->old = c;
    t->young = c;
}

/* Gives back c's device memory (mu held). */
static void drop_memory(tsr__devtier *t, tsr__devcopy *c) {
    if (!c->dptr) return;
    t->ops->free(t->ctx, c->dptr);
    c->dptr = NULL;
    t->used -= c->bytes;
}

/* Orphans and empty records waiting for the GPU thread: chained through next. */
static void push_orphan(tsr__devtier *t, tsr__devcopy *c) {
    c->prev = NULL;
    c->next = t->orphans;
    t->orphans = c;
}

/* tsr__buf's dev_drop: the host buffer's last reference went (any thread; the loop in practice).
 * No work can be using the copy: every task holding the buffer is gone. */
static void on_buf_drop(tsr__buf *b) {
    tsr__devcopy *c = b->dev;
    tsr__devtier *t = c->tier;
    pthread_mutex_lock(&t->mu);
    b->dev = NULL;
    b->dev_drop = NULL;
    c->buf = NULL;
    if (c->dptr) lru_unlink(t, c);
    push_orphan(t, c);
    pthread_mutex_unlock(&t->mu);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

int tsr__devtier_open(tsr__devtier *t, const tsr__devops *ops, int id, int64_t limit, char *err,
                      size_t errlen) {
    memset(t, 0, sizeof *t);
    t->ops = ops;
    int rc = ops->open(id, &t->ctx, &t->info, err, errlen);
    if (rc != 0) return rc;
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        ops->close(t->ctx);
        tsr__fmt(err, errlen, "no memory");
        return -ENOMEM;
    }
    t->mu_ok = 1;
    if (limit > 0) {
        t->limit = (uint64_t)limit;
    } else {
        uint64_t reserve = t->info.free_bytes / 10;
        if (reserve < ((uint64_t)256 << 20)) reserve = (uint64_t)256 << 20;
        t->limit =
            t->info.free_bytes > reserve ? t->info.free_bytes - reserve : t->info.free_bytes / 2;
    }
    t->open = 1;
    return 0;
}

void tsr__devtier_reap(tsr__devtier *t) {
    pthread_mutex_lock(&t->mu);
    tsr__devcopy *c = t->orphans;
    t->orphans = NULL;
    while (c) {
        tsr__devcopy *next = c->next;
        drop_memory(t, c);
        free(c);
        c = next;
    }
    pthread_mutex_unlock(&t->mu);
}

void tsr__devtier_close(tsr__devtier *t) {
    if (!t->open) return;
    tsr__devtier_reap(t);
    pthread_mutex_lock(&t->mu);
    /* Buffers still alive keep a record with no device memory: their dev_drop frees it. */
    while (t->old) {
        tsr__devcopy *c = t->old;
        lru_unlink(t, c);
        drop_memory(t, c);
    }
    pthread_mutex_unlock(&t->mu);
    t->ops->close(t->ctx);
    t->open = 0;
}

void tsr__devtier_destroy(tsr__devtier *t) {
    if (!t->mu_ok) return;
    /* Closed: orphans since then have no device memory left, only their records. */
    while (t->orphans) {
        tsr__devcopy *c = t->orphans;
        t->orphans = c->next;
        free(c);
    }
    pthread_mutex_destroy(&t->mu);
    t->mu_ok = 0;
}

/* ---- copies ---------------------------------------------------------------------------------- */

/* Writes c back to its host buffer if it is dirty (mu held). */
static int writeback_locked(tsr__devtier *t, tsr__devcopy *c, char *err, size_t errlen) {
    if (!c->dirty || !c->dptr || !c->buf) return 0;
    int rc = t->ops->d2h(t->ctx, c->buf->data, c->dptr, c->bytes, err, errlen);
    if (rc != 0) return rc;
    c->dirty = 0;
    t->d2h_bytes += c->bytes;
    t->d2h_count++;
    return 0;
}

/* Room for n more bytes under the limit, evicting idle copies oldest first (mu held). */
static int make_room_locked(tsr__devtier *t, size_t n, char *err, size_t errlen) {
    tsr__devcopy *c = t->old;
    while (t->used + n > t->limit && c) {
        tsr__devcopy *next = c->next;
        if (c->busy == 0) {
            int rc = writeback_locked(t, c, err, errlen);
            if (rc != 0) return rc;
            lru_unlink(t, c);
            drop_memory(t, c);
            t->evicted++;
        }
        c = next;
    }
    return t->used + n <= t->limit ? 0 : -ENOMEM;
}

/* Device memory for c (mu held): 0, -ENOMEM (the limit or the device has no room even after
 * eviction; evict = 0: without evicting anything), or a copy failure. */
static int place_locked(tsr__devtier *t, tsr__devcopy *c, int evict, char *err, size_t errlen) {
    /* A prefetch leaves a quarter of the limit free: the task running next must find room
     * without the copies held for the tasks after it. */
    if (!evict && t->used + c->bytes > t->limit - t->limit / 4) return -ENOMEM;
    if (t->used + c->bytes > t->limit) {
        int rc = make_room_locked(t, c->bytes, err, errlen);
        if (rc != 0) return rc;
    }
    for (;;) {
        c->dptr = t->ops->alloc(t->ctx, c->bytes ? c->bytes : 1);
        if (c->dptr) break;
        /* The device itself is fuller than the limit says (another process, the runtime):
         * evict one more idle copy and try again. */
        if (!evict) return -ENOMEM;
        tsr__devcopy *v = t->old;
        while (v && v->busy) v = v->next;
        if (!v) return -ENOMEM;
        int rc = writeback_locked(t, v, err, errlen);
        if (rc != 0) return rc;
        lru_unlink(t, v);
        drop_memory(t, v);
        t->evicted++;
    }
    t->used += c->bytes;
    if (t->used > t->peak) t->peak = t->used;
    lru_append(t, c);
    return 0;
}

/* The record of b, made if it has none (mu held). */
static tsr__devcopy *record_locked(tsr__devtier *t, tsr__buf *b) {
    if (b->dev) return b->dev;
    tsr__devcopy *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->tier = t;
    c->buf = b;
    c->bytes = b->size;
    b->dev = c;
    b->dev_drop = on_buf_drop;
    return c;
}

static void touch_locked(tsr__devtier *t, tsr__devcopy *c) {
    if (t->young == c) return;
    lru_unlink(t, c);
    lru_append(t, c);
}

void *tsr__devtier_acquire(tsr__devtier *t, tsr__buf *b, int mode, char *err, size_t errlen) {
    void *p = NULL;
    int rc = 0;
    pthread_mutex_lock(&t->mu);
    tsr__devcopy *c = record_locked(t, b);
    if (!c) {
        tsr__fmt(err, errlen, "no memory");
        goto out;
    }
    if (c->dptr) {
        touch_locked(t, c);
    } else {
        rc = place_locked(t, c, mode != TSR__DEV_PREFETCH, err, errlen);
        if (rc == -ENOMEM) {
            if (mode != TSR__DEV_PREFETCH)
                tsr__fmt(err, errlen,
                         "device memory: %zu bytes do not fit (%llu of %llu in use by this task "
                         "and others)",
                         c->bytes, (unsigned long long)t->used, (unsigned long long)t->limit);
            goto out;
        }
        if (rc != 0) goto out;
        if (mode != TSR__DEV_OUTPUT) {
            /* Not resident means clean: a dirty copy is written back before it leaves. */
            rc = t->ops->h2d(t->ctx, c->dptr, b->data, c->bytes, err, errlen);
            if (rc != 0) {
                lru_unlink(t, c);
                drop_memory(t, c);
                goto out;
            }
            t->h2d_bytes += c->bytes;
            t->h2d_count++;
        }
    }
    c->busy++;
    p = c->dptr;
out:
    pthread_mutex_unlock(&t->mu);
    return p;
}

void tsr__devtier_release(tsr__devtier *t, tsr__buf *b, int wrote) {
    pthread_mutex_lock(&t->mu);
    tsr__devcopy *c = b->dev;
    if (c) {
        if (c->busy) c->busy--;
        if (wrote) c->dirty = 1;
    }
    pthread_mutex_unlock(&t->mu);
}

int tsr__devtier_writeback(tsr__devtier *t, tsr__buf *b, char *err, size_t errlen) {
    pthread_mutex_lock(&t->mu);
    int rc = b->dev ? writeback_locked(t, b->dev, err, errlen) : 0;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void tsr__devtier_invalidate(tsr__devtier *t, tsr__buf *b) {
    pthread_mutex_lock(&t->mu);
    tsr__devcopy *c = b->dev;
    if (c && c->dptr && !c->busy) {
        lru_unlink(t, c);
        drop_memory(t, c);
        c->dirty = 0;
    }
    pthread_mutex_unlock(&t->mu);
}

int tsr__devtier_stale(tsr__devtier *t, const tsr__buf *b) {
    pthread_mutex_lock(&t->mu);
    const tsr__devcopy *c = b->dev;
    int stale = c && c->dirty && c->dptr;
    pthread_mutex_unlock(&t->mu);
    return stale;
}

int tsr__devtier_clean_one(tsr__devtier *t, char *err, size_t errlen) {
    pthread_mutex_lock(&t->mu);
    tsr__devcopy *c = t->old;
    while (c && !(c->dirty && !c->busy)) c = c->next;
    int rc = c ? writeback_locked(t, c, err, errlen) : 0;
    pthread_mutex_unlock(&t->mu);
    return rc < 0 ? rc : c != NULL;
}

void tsr__devtier_read(tsr__devtier *t, tsr__devstats *out) {
    memset(out, 0, sizeof *out);
    if (!t->mu_ok) return; /* never opened (counters stay readable after close) */
    pthread_mutex_lock(&t->mu);
    *out = (tsr__devstats){.used = t->used,
                           .peak = t->peak,
                           .limit = t->limit,
                           .h2d_bytes = t->h2d_bytes,
                           .d2h_bytes = t->d2h_bytes,
                           .h2d_count = t->h2d_count,
                           .d2h_count = t->d2h_count,
                           .evicted = t->evicted};
    for (const tsr__devcopy *c = t->old; c; c = c->next) {
        out->resident++;
        if (c->dirty) out->dirty++;
    }
    pthread_mutex_unlock(&t->mu);
}
