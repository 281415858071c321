/* The (job, id) hash map of pending tasks and fetches, the chunk store (refcounted chunk buffers
 * with byte accounting, in chained buckets) and the worker-wide count of chunk buffer bytes. Pure
 * data structures, loop thread only (but for the counters, which executors add to): no I/O, no
 * locks. Dropping a chunk releases the store's reference only, so a peer send in progress keeps
 * the bytes alive. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker.h"

static size_t key_hash(uint64_t job, uint64_t id) {
    uint64_t h = job * 0x9E3779B97F4A7C15ull ^ (id + 0x632BE59BD9B4E019ull);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    return (size_t)h;
}

void tsr__kmap_init(tsr__kmap *m) {
    memset(m, 0, sizeof *m);
}

void tsr__kmap_free(tsr__kmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static tsr__kslot *find_slot(const tsr__kmap *m, uint64_t job, uint64_t id) {
    if (m->cap == 0) return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = key_hash(job, id) & mask;; i = (i + 1) & mask) {
        tsr__kslot *s = &m->slots[i];
        if (!s->val) return NULL;
        if (s->job == job && s->id == id) return s;
    }
}

void *tsr__kmap_get(const tsr__kmap *m, uint64_t job, uint64_t id) {
    tsr__kslot *s = find_slot(m, job, id);
    return s ? s->val : NULL;
}

static void insert_new(tsr__kslot *slots, size_t cap, uint64_t job, uint64_t id, void *val) {
    size_t mask = cap - 1;
    size_t i = key_hash(job, id) & mask;
    while (slots[i].val) i = (i + 1) & mask;
    slots[i].job = job;
    slots[i].id = id;
    slots[i].val = val;
}

int tsr__kmap_put(tsr__kmap *m, uint64_t job, uint64_t id, void *val, void **old) {
    if (old) *old = NULL;
    tsr__kslot *s = find_slot(m, job, id);
    if (s) {
        if (old) *old = s->val;
        s->val = val;
        return 0;
    }
    /* Keep the load factor under 1/2 so probe runs stay short. */
    if ((m->len + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 16;
        tsr__kslot *ns = calloc(ncap, sizeof *ns);
        if (!ns) return -ENOMEM;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].val)
                insert_new(ns, ncap, m->slots[i].job, m->slots[i].id, m->slots[i].val);
        free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    insert_new(m->slots, m->cap, job, id, val);
    m->len++;
    return 0;
}

void *tsr__kmap_del(tsr__kmap *m, uint64_t job, uint64_t id) {
    tsr__kslot *s = find_slot(m, job, id);
    if (!s) return NULL;
    void *val = s->val;
    size_t mask = m->cap - 1;
    size_t hole = (size_t)(s - m->slots);
    m->slots[hole].val = NULL;
    m->len--;
    /* Backward-shift: move later entries of the probe run into the hole when their home slot
     * does not lie cyclically between the hole and their current slot. */
    for (size_t j = (hole + 1) & mask; m->slots[j].val; j = (j + 1) & mask) {
        size_t home = key_hash(m->slots[j].job, m->slots[j].id) & mask;
        int between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (between) continue;
        m->slots[hole] = m->slots[j];
        m->slots[j].val = NULL;
        hole = j;
    }
    return val;
}

/* ---- Store ----------------------------------------------------------------------------------- */

#define STORE_MIN_CAP 16

void tsr__store_init(tsr__store *s) {
    memset(s, 0, sizeof *s);
}

static void chunk_free(tsr__store *s, tsr__chunk *c) {
    if (c->buf) s->bytes -= c->buf->size; /* a spilled chunk holds no bytes here */
    tsr__chunkmem_unref(s->mem, c->buf);
    free(c);
}

void tsr__store_free(tsr__store *s) {
    for (size_t i = 0; i < s->cap; i++) {
        for (tsr__chunk *c = s->heads[i], *next; c; c = next) {
            next = c->next;
            chunk_free(s, c);
        }
    }
    free(s->heads);
    s->heads = NULL;
    s->cap = s->len = 0;
    s->bytes = 0;
}

/* Moves every chain onto a table of ncap heads. On ENOMEM the old table stays: chains just get
 * longer (growing) or the memory is not given back yet (shrinking). */
static void store_resize(tsr__store *s, size_t ncap) {
    tsr__chunk **nh = calloc(ncap, sizeof *nh);
    if (!nh) return;
    for (size_t i = 0; i < s->cap; i++) {
        for (tsr__chunk *c = s->heads[i], *next; c; c = next) {
            next = c->next;
            size_t b = key_hash(c->job, c->id) & (ncap - 1);
            c->next = nh[b];
            nh[b] = c;
        }
    }
    free(s->heads);
    s->heads = nh;
    s->cap = ncap;
}

static tsr__chunk **store_link(const tsr__store *s, uint64_t job, uint64_t id) {
    if (s->cap == 0) return NULL;
    tsr__chunk **pc = &s->heads[key_hash(job, id) & (s->cap - 1)];
    while (*pc && ((*pc)->job != job || (*pc)->id != id)) pc = &(*pc)->next;
    return pc;
}

int tsr__store_put(tsr__store *s, uint64_t job, uint64_t id, tsr__buf *buf, uint8_t dtype,
                   uint8_t ndim, const int64_t *shape) {
    if (ndim > TSR_MAX_NDIM) ndim = TSR_MAX_NDIM;
    tsr__chunk *c = malloc(sizeof *c + ndim * sizeof *shape);
    if (!c) {
        tsr__chunkmem_unref(s->mem, buf);
        return -ENOMEM;
    }
    c->job = job;
    c->id = id;
    c->buf = buf;
    c->dtype = dtype;
    c->ndim = ndim;
    if (ndim) memcpy(c->shape, shape, ndim * sizeof *shape);
    /* At most one chunk per bucket on average. */
    if (s->len + 1 > s->cap) store_resize(s, s->cap ? s->cap * 2 : STORE_MIN_CAP);
    if (s->cap == 0) {
        tsr__chunkmem_unref(s->mem, buf);
        free(c);
        return -ENOMEM;
    }
    tsr__chunk **pc = store_link(s, job, id);
    tsr__chunk *old = *pc;
    if (old) {
        c->next = old->next;
        chunk_free(s, old);
        s->len--;
    } else {
        c->next = NULL;
    }
    *pc = c;
    s->len++;
    s->bytes += buf->size;
    if (s->bytes > s->peak) s->peak = s->bytes;
    return 0;
}

const tsr__chunk *tsr__store_get(const tsr__store *s, uint64_t job, uint64_t id) {
    tsr__chunk **pc = store_link(s, job, id);
    return pc ? *pc : NULL;
}

int tsr__store_drop(tsr__store *s, uint64_t job, uint64_t id) {
    tsr__chunk **pc = store_link(s, job, id);
    if (!pc || !*pc) return 0;
    tsr__chunk *c = *pc;
    *pc = c->next;
    chunk_free(s, c);
    s->len--;
    /* Halving at an eighth full leaves it a quarter full: a put and a drop at the boundary
     * cannot make it resize back and forth. */
    if (s->cap > STORE_MIN_CAP && s->len < s->cap / 8) store_resize(s, s->cap / 2);
    return 1;
}

tsr__buf *tsr__store_evict(tsr__store *s, uint64_t job, uint64_t id) {
    tsr__chunk **pc = store_link(s, job, id);
    if (!pc || !*pc || !(*pc)->buf) return NULL;
    tsr__buf *b = (*pc)->buf;
    (*pc)->buf = NULL;
    s->bytes -= b->size;
    return b;
}

int tsr__store_restore(tsr__store *s, uint64_t job, uint64_t id, tsr__buf *buf) {
    tsr__chunk **pc = store_link(s, job, id);
    if (!pc || !*pc || (*pc)->buf) return -1;
    (*pc)->buf = buf;
    s->bytes += buf->size;
    if (s->bytes > s->peak) s->peak = s->bytes;
    return 0;
}
