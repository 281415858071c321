/* The task life cycle, on the loop thread: decoding compute messages, taking each input from the
 * store, from a task still running here, from a local recompute or from a peer; donation; handing
 * ready tasks to the executors (exec.c); keeping and reporting results; free. Compute never runs
 * here.
 *
 * Tiny tasks arrive by the thousand, so the common path allocates nothing it can avoid: task
 * records come from a pool, descriptors that repeat (same bytes) are decoded once and shared,
 * and the rest of a descriptor's decoding reuses one msgpack zone. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "worker/worker.h"

#define POOL_NIN 3    /* task records with room for this many inputs are pooled */
#define POOL_MAX 4096 /* at most this many kept */

/* ---- Kernel descriptors ---------------------------------------------------------------------- */

static uint64_t bytes_hash(const unsigned char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
    }
    uint64_t v = 0;
    memcpy(&v, p, n);
    h = (h ^ v) * 0x94D049BB133111EBull;
    return h ^ (h >> 32);
}

static void wkd_unref(wkdesc *k) {
    if (k && --k->refs == 0) free(k);
}

/* Copies d (and the bytes it came from) into one allocation. */
static wkdesc *wkd_new(const tsr_kdesc *d, const void *bin, size_t binlen) {
    size_t slen = d->s ? strlen(d->s) + 1 : 0;
    size_t size = sizeof(wkdesc) + d->ni * sizeof(int64_t) + d->nf * sizeof(double) + slen + binlen;
    wkdesc *k = malloc(size);
    if (!k) return NULL;
    k->d = *d;
    char *p = (char *)(k + 1);
    int64_t *ip = (int64_t *)p;
    if (d->ni) memcpy(ip, d->i, d->ni * sizeof *ip);
    k->d.i = d->ni ? ip : NULL;
    double *fp = (double *)(ip + d->ni);
    if (d->nf) memcpy(fp, d->f, d->nf * sizeof *fp);
    k->d.f = d->nf ? fp : NULL;
    char *sp = (char *)(fp + d->nf);
    if (slen) memcpy(sp, d->s, slen);
    k->d.s = slen ? sp : NULL;
    unsigned char *bp = (unsigned char *)sp + slen;
    if (binlen) memcpy(bp, bin, binlen);
    k->bin = bp;
    k->binlen = (uint32_t)binlen;
    k->refs = 1;
    k->hash = 0;
    return k;
}

/* A kdesc from a compute message: a msgpack bin holding tsr__kdesc_pack's encoding. *out gets a
 * reference. 0, -ENOMEM or TSR_EPROTOCOL. */
static int wkd_get(tsr__worker *w, tsr__str kbin, wkdesc **out) {
    msgpack_object obj;
    const unsigned char *bin = (const unsigned char *)kbin.p;
    size_t binlen = kbin.n;
    uint64_t h = bytes_hash(bin, binlen);
    wkdesc *c = w->kcache[h % TSR__KCACHE_SLOTS];
    if (c && c->hash == h && c->binlen == binlen && memcmp(c->bin, bin, binlen) == 0) {
        c->refs++;
        *out = c;
        return 0;
    }
    size_t off = 0;
    msgpack_zone_clear(w->zone);
    if (binlen == 0 || tsr__mpr_check(bin, binlen) != 0 ||
        msgpack_unpack((const char *)bin, binlen, &off, w->zone, &obj) != MSGPACK_UNPACK_SUCCESS ||
        off != binlen)
        return TSR_EPROTOCOL;
    tsr_kdesc d;
    int64_t *ib = NULL;
    double *fb = NULL;
    memset(&d, 0, sizeof d);
    int rc = tsr__kdesc_unpack(&obj, &d, &ib, &fb);
    wkdesc *k = NULL;
    if (rc == 0 && !(k = wkd_new(&d, bin, binlen))) rc = -ENOMEM;
    tsr__kdesc_unpack_free(ib, fb);
    if (rc) return rc;
    k->hash = h;
    wkdesc **slot = &w->kcache[h % TSR__KCACHE_SLOTS];
    wkd_unref(*slot);
    *slot = k;
    k->refs++;
    *out = k;
    return 0;
}

/* ---- Task records ---------------------------------------------------------------------------- */

static wtask *task_alloc(tsr__worker *w, uint32_t nin) {
    uint32_t cap = nin <= POOL_NIN ? POOL_NIN : nin;
    wtask *t;
    if (cap == POOL_NIN && w->task_pool) {
        t = w->task_pool;
        w->task_pool = t->qnext;
        w->npool--;
    } else if (!(t = malloc(sizeof *t + cap * sizeof(wtask_in)))) {
        return NULL;
    }
    memset(t, 0, offsetof(wtask, in));
    memset(t->in, 0, nin * sizeof *t->in);
    t->cap_in = cap;
    t->nin = nin;
    t->alias = -1;
    return t;
}

static void task_link(tsr__worker *w, wtask *t) {
    t->all_next = w->all;
    if (w->all) w->all->all_prev = t;
    w->all = t;
}

static int add_waiter(wwaiter **arr, size_t *n, size_t *cap, wtask *t, uint32_t idx) {
    if (tsr__grow((void **)arr, cap, *n + 1, sizeof **arr) != 0) return -ENOMEM;
    (*arr)[(*n)++] = (wwaiter){t, idx};
    return 0;
}

static void fetch_release(tsr__worker *w, wfetch *f);

/* Donated inputs leave the store when their task is dispatched or, failing that, freed: the
 * scheduler sends no free for them. Only the buffer the task holds is dropped. A task that erred
 * before it was queued keeps them (erred said kept). */
static void drop_donated(tsr__worker *w, wtask *t) {
    for (uint32_t k = 0; k < t->nin; k++) {
        wtask_in *in = &t->in[k];
        if (!(in->flags & TSR__IN_DONATE) || !in->buf) continue;
        const tsr__chunk *ch = tsr__store_get(&w->store, in->job, in->id);
        if (ch && ch->buf == in->buf) {
            tsr__store_drop(&w->store, in->job, in->id);
            tsr__spill_forget(w, in->job, in->id);
        }
    }
}

/* Frees a task that is no longer queued, running or waited on by anything. */
void tsr__task_free(tsr__worker *w, wtask *t) {
    if (!t->queued && !t->kept) drop_donated(w, t);
    for (uint32_t k = 0; k < t->nin; k++) {
        tsr__chunkmem_unref(&w->mem, t->in[k].buf);
        if (t->in[k].fetch) fetch_release(w, t->in[k].fetch);
    }
    if (t->mapped) tsr__kmap_del(&w->pending, t->job, t->id);
    tsr__chunkmem_unref(&w->mem, t->out);
    if (t->all_prev)
        t->all_prev->all_next = t->all_next;
    else if (w->all == t)
        w->all = t->all_next;
    if (t->all_next) t->all_next->all_prev = t->all_prev;
    free(t->deps);
    free(t->err);
    wkd_unref(t->kd);
    if (t->cap_in == POOL_NIN && w->npool < POOL_MAX) {
        t->qnext = w->task_pool;
        w->task_pool = t;
        w->npool++;
    } else {
        free(t);
    }
}

/* ---- Failure and readiness ------------------------------------------------------------------- */

static void input_failed(tsr__worker *w, wtask *t, uint32_t idx, const char *msg);

/* Reports the failure once (a scheduler task sends erred; a local recompute only tells its
 * waiters) and fails every task here that waits for this one's chunk. */
static void task_fail(tsr__worker *w, wtask *t, const char *msg) {
    if (t->failed) return;
    t->failed = 1;
    char why[400];
    if (t->internal) {
        tsr__log(&w->log, TSR_LOG_INFO, "recomputing (%llu,%llu) failed: %s",
                 (unsigned long long)t->job, (unsigned long long)t->id, msg);
        snprintf(why, sizeof why, "could not recompute input (%llu,%llu): %s",
                 (unsigned long long)t->job, (unsigned long long)t->id, msg);
    } else {
        /* Before it was queued (an input failed) its donated inputs were never consumed: they
         * stay, and the scheduler, told so, may run it again with them (a retry after a lost
         * peer) or free them. */
        t->kept = !t->queued;
        tsr__worker_send_erred(w, t->job, t->id, msg, t->kept);
        snprintf(why, sizeof why, "input (%llu,%llu) failed", (unsigned long long)t->job,
                 (unsigned long long)t->id);
    }
    if (t->mapped) {
        tsr__kmap_del(&w->pending, t->job, t->id);
        t->mapped = 0;
    }
    wwaiter *deps = t->deps;
    size_t n = t->ndeps;
    t->deps = NULL;
    t->ndeps = t->deps_cap = 0;
    for (size_t k = 0; k < n; k++) input_failed(w, deps[k].t, deps[k].idx, why);
    free(deps);
}

/* With every input here: drop donated inputs from the store, and when one of them is a buffer
 * nobody else holds and the kernel allows it, let the output be written into it (matmul
 * accumulation, elementwise ops) instead of a fresh buffer. Small outputs are allocated here:
 * the loop frees every chunk, and a buffer from an executor's malloc arena would make each of
 * those frees take that arena's lock while the executor allocates from it. Large ones come from
 * the buffer pool (pool.c), taken by the executor when the task starts. */
static void task_dispatch(tsr__worker *w, wtask *t) {
    drop_donated(w, t);
    t->queued = 1;
    tsr_chunkview stack[8], *v = stack;
    for (uint32_t k = 0; k < t->nin; k++) {
        wtask_in *in = &t->in[k];
        if (!(in->flags & TSR__IN_DONATE) || in->fetch ||
            atomic_load_explicit(&in->buf->refs, memory_order_acquire) != 1)
            continue;
        /* A grouped matmul has up to 65 inputs. Without memory for their views the output
         * simply gets a buffer of its own. */
        if (t->nin > TSR__ARRAY_LEN(stack) && v == stack && !(v = malloc(t->nin * sizeof *v))) {
            v = stack;
            break;
        }
        for (uint32_t j = 0; j < t->nin; j++) {
            v[j].data = t->in[j].buf->data;
            v[j].dtype = t->in[j].dtype;
            v[j].ndim = t->in[j].ndim;
            memcpy(v[j].shape, t->in[j].shape, sizeof v[j].shape);
        }
        if (tsr__kernel_may_alias(&t->kd->d, v, (int)t->nin, (int)k) &&
            in->buf->size == tsr__kdesc_nbytes(&t->kd->d)) {
            t->out = tsr__buf_ref(in->buf);
            t->alias = (int)k;
            w->st.in_place++;
            break;
        }
    }
    if (v != stack) free(v);
    uint64_t nbytes = tsr__kdesc_nbytes(&t->kd->d);
    if (!t->out && nbytes < TSR__LOOP_ALLOC_MAX &&
        !(t->out = tsr__chunkmem_new(&w->mem, (size_t)nbytes))) {
        task_fail(w, t, "no memory for an output chunk");
        tsr__task_free(w, t);
        return;
    }
    tsr__exec_push(w, t);
}

/* One fewer input missing: a task with none left goes to the executors (or, failed, away). */
static void task_settle(tsr__worker *w, wtask *t) {
    if (--t->missing > 0) return;
    if (t->failed)
        tsr__task_free(w, t);
    else
        task_dispatch(w, t);
}

static void input_failed(tsr__worker *w, wtask *t, uint32_t idx, const char *msg) {
    (void)idx;
    task_fail(w, t, msg);
    task_settle(w, t);
}

static void input_set(wtask *t, uint32_t idx, tsr__buf *buf, uint8_t dtype, uint8_t ndim,
                      const int64_t *shape) {
    wtask_in *in = &t->in[idx];
    in->buf = tsr__buf_ref(buf);
    in->dtype = dtype;
    in->ndim = ndim;
    /* A stored chunk's shape has ndim entries only; the rest of ours stays zero. */
    if (ndim) memcpy(in->shape, shape, ndim * sizeof *shape);
}

static void input_ready(tsr__worker *w, wtask *t, uint32_t idx, tsr__buf *buf, uint8_t dtype,
                        uint8_t ndim, const int64_t *shape) {
    input_set(t, idx, buf, dtype, ndim, shape);
    task_settle(w, t);
}

void tsr__task_inputs_ready(tsr__worker *w, wwaiter *deps, size_t n, const tsr__chunk *ch) {
    /* Every waiter takes its reference before any of them is dispatched (as in
     * tsr__task_finished). */
    for (size_t k = 0; k < n; k++)
        input_set(deps[k].t, deps[k].idx, ch->buf, ch->dtype, ch->ndim, ch->shape);
    for (size_t k = 0; k < n; k++) task_settle(w, deps[k].t);
}

void tsr__task_inputs_failed(tsr__worker *w, wwaiter *deps, size_t n, const char *msg) {
    for (size_t k = 0; k < n; k++) input_failed(w, deps[k].t, deps[k].idx, msg);
}

/* ---- Fetched inputs -------------------------------------------------------------------------- */

static void fetch_free(tsr__worker *w, wfetch *f) {
    tsr__chunkmem_unref(&w->mem, f->buf);
    free(f->waiters);
    free(f);
}

static void fetch_begin(tsr__worker *w, wfetch *f);
static void fetch_end(tsr__worker *w, wfetch *f);

/* A task input stops using a fetched copy; the last user drops it (it is not ours to keep:
 * the scheduler never heard that we hold it). */
static void fetch_release(tsr__worker *w, wfetch *f) {
    if (--f->users > 0 || f->state != FETCH_READY) return;
    if (tsr__kmap_get(&w->fetched, f->job, f->id) == f) tsr__kmap_del(&w->fetched, f->job, f->id);
    fetch_free(w, f);
}

void tsr__worker_fetch_done(tsr__worker *w, wfetch *f) {
    tsr__log(&w->log, TSR_LOG_DEBUG, "fetched (%llu,%llu): %zu bytes", (unsigned long long)f->job,
             (unsigned long long)f->id, f->buf->size);
    fetch_end(w, f);
    w->st.in_bytes += f->buf->size;
    wwaiter *ws = f->waiters;
    size_t n = f->nwaiters;
    f->waiters = NULL;
    f->nwaiters = f->waiters_cap = 0;
    /* Hold the copy while handing it out: a failed waiter may be freed (and release it)
     * inside the loop. */
    f->users++;
    for (size_t k = 0; k < n; k++)
        input_ready(w, ws[k].t, ws[k].idx, f->buf, f->dtype, f->ndim, f->shape);
    free(ws);
    if (f->keep) tsr__task_keep_fetched(w, f);
    fetch_release(w, f);
}

void tsr__task_keep_fetched(tsr__worker *w, wfetch *f) {
    f->keep = 0;
    if (!tsr__store_get(&w->store, f->job, f->id)) { /* else held already */
        if (tsr__store_put(&w->store, f->job, f->id, tsr__buf_ref(f->buf), f->dtype, f->ndim,
                           f->shape) != 0) {
            tsr__worker_send_replicated(w, f->job, f->id, 0, "no memory to keep it");
            return;
        }
        tsr__spill_track(w, f->job, f->id, f->buf);
    }
    tsr__worker_send_replicated(w, f->job, f->id, f->buf->size, NULL);
}

/* The scheduler moves a chunk off a retiring worker (PROTOCOL.md, "Retiring a worker"): fetched
 * like an input (joining a fetch of the same key under way), and kept once it arrives. A failed
 * fetch is reported (replicated with msg): the scheduler then lets the retiring worker go, and
 * what it still held is made again by the usual recovery. */
const char *tsr__task_replicate(tsr__worker *w, const tsr__msg_replicate *m) {
    char addr[80];
    if (tsr__str_copy(addr, sizeof addr, m->addr) != 0) return "address too long";
    const tsr__chunk *ch = tsr__store_get(&w->store, m->job, m->id);
    if (ch) {
        tsr__worker_send_replicated(w, m->job, m->id, ch->buf ? ch->buf->size : 0, NULL);
        return NULL;
    }
    wfetch *f = tsr__kmap_get(&w->fetched, m->job, m->id);
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f || tsr__kmap_put(&w->fetched, m->job, m->id, f, NULL) != 0) {
            free(f);
            tsr__worker_send_replicated(w, m->job, m->id, 0, "no memory for a fetch");
            return NULL;
        }
        f->job = m->job;
        f->id = m->id;
        f->keep = 1;
        fetch_begin(w, f);
        int rc = tsr__peer_fetch(w, f, addr);
        if (rc < 0) tsr__worker_fetch_failed(w, f, tsr_strerror(rc));
        return NULL;
    }
    if (f->state == FETCH_READY)
        tsr__task_keep_fetched(w, f);
    else
        f->keep = 1;
    return NULL;
}

void tsr__worker_fetch_failed(tsr__worker *w, wfetch *f, const char *why) {
    fetch_end(w, f);
    if (f->keep) tsr__worker_send_replicated(w, f->job, f->id, 0, why);
    if (tsr__kmap_get(&w->fetched, f->job, f->id) == f) tsr__kmap_del(&w->fetched, f->job, f->id);
    /* The waiters no longer count as users of this entry, which goes now. */
    for (size_t k = 0; k < f->nwaiters; k++) f->waiters[k].t->in[f->waiters[k].idx].fetch = NULL;
    wwaiter *ws = f->waiters;
    size_t n = f->nwaiters;
    f->waiters = NULL;
    f->nwaiters = 0;
    char msg[300];
    snprintf(msg, sizeof msg, "could not fetch input (%llu,%llu): %s", (unsigned long long)f->job,
             (unsigned long long)f->id, why);
    fetch_free(w, f);
    for (size_t k = 0; k < n; k++) input_failed(w, ws[k].t, ws[k].idx, msg);
    free(ws);
}

/* A fetch takes memory when its bytes arrive: with a memory limit, a fetch is asked for while
 * what the worker holds and the fetches under way will bring stay under its spill threshold;
 * past it, one at a time, and only while the executors have fewer tasks than there are
 * executors (so that fetches always progress). The others wait, in order. Counting only the
 * bytes held let a window of fast tasks ask for ~60 fetches at once, all admitted before the
 * first arrived: the worker went 40% over its limit. */
static int fetch_admits(tsr__worker *w, uint64_t bytes) {
    uint64_t held = atomic_load_explicit(&w->mem.bytes, memory_order_relaxed);
    if (held + w->fetch_expect + bytes <= w->spill_hi) return 1;
    return w->st.nfetch == 0 && tsr__exec_would_idle(w);
}

static int fetch_fits(tsr__worker *w, uint64_t bytes) {
    if (!w->io_started) return 1;
    if (w->fd_head) return 0; /* keep the order */
    return fetch_admits(w, bytes);
}

/* Counts f's bytes as on their way (fetch_expect) and its fetch as begun. */
static void fetch_begin(tsr__worker *w, wfetch *f) {
    f->counted = f->expect;
    w->fetch_expect += f->counted;
    tsr__stats_fetch_begin(&w->st);
}

/* f's bytes came, or never will. */
static void fetch_end(tsr__worker *w, wfetch *f) {
    w->fetch_expect -= f->counted;
    f->counted = 0;
    tsr__stats_fetch_end(&w->st);
}

void tsr__task_pump_fetches(tsr__worker *w) {
    while (w->fd_head && fetch_admits(w, w->fd_head->expect)) {
        wfetch *f = w->fd_head;
        w->fd_head = f->dnext;
        if (!w->fd_head) w->fd_tail = NULL;
        f->dnext = NULL;
        fetch_begin(w, f);
        int rc = tsr__peer_fetch(w, f, f->daddr);
        if (rc < 0) tsr__worker_fetch_failed(w, f, tsr_strerror(rc));
    }
}

static void attach_fetch(tsr__worker *w, wtask *t, uint32_t k, tsr__str addr) {
    wtask_in *in = &t->in[k];
    char where[80];
    tsr__str_copy(where, sizeof where, addr); /* size checked by tsr__task_compute */
    wfetch *f = tsr__kmap_get(&w->fetched, in->job, in->id);
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f || tsr__kmap_put(&w->fetched, in->job, in->id, f, NULL) != 0) {
            free(f);
            input_failed(w, t, k, "no memory for a fetch");
            return;
        }
        f->job = in->job;
        f->id = in->id;
        f->traced = t->traced; /* every user of (job, id) is of the same job */
        f->expect = tsr_dtype_size((tsr_dtype)in->dtype);
        for (int ax = 0; ax < in->ndim; ax++) f->expect *= (uint64_t)in->shape[ax];
        if (!fetch_fits(w, f->expect)) {
            /* Over the spill threshold with fetches under way: asked for later, in order. */
            f->state = FETCH_WAITING;
            f->w = w;
            memcpy(f->daddr, where, sizeof f->daddr);
            if (w->fd_tail)
                w->fd_tail->dnext = f;
            else
                w->fd_head = f;
            w->fd_tail = f;
        } else {
            fetch_begin(w, f);
            int rc = tsr__peer_fetch(w, f, where);
            if (rc < 0) {
                char msg[200];
                tsr__worker_fetch_failed(w, f, tsr_strerror(rc));
                snprintf(msg, sizeof msg, "could not fetch input (%llu,%llu) from %s: %s",
                         (unsigned long long)in->job, (unsigned long long)in->id, where,
                         tsr_strerror(rc));
                input_failed(w, t, k, msg);
                return;
            }
        }
    }
    f->users++;
    in->fetch = f;
    if (f->state == FETCH_READY) {
        input_ready(w, t, k, f->buf, f->dtype, f->ndim, f->shape);
    } else if (add_waiter(&f->waiters, &f->nwaiters, &f->waiters_cap, t, k) != 0) {
        in->fetch = NULL;
        f->users--;
        input_failed(w, t, k, "no memory for a fetch");
    }
}

/* ---- Replicas --------------------------------------------------------------------------------
 *
 * Source chunks this worker makes for its own tasks (random, fill, arange: RECOMPUTE) stay in
 * the store as replicas until the scheduler frees them, and the scheduler sends their
 * descriptor with every task that needs them, so a replica dropped early is simply made again
 * when next needed. Holding them costs memory, and in these guests a first touch of memory
 * costs about as much as making a chunk again 15 times: ~2.3 ms per fresh 2 MiB (host-side
 * faults) against ~0.15 ms to fill a pooled 2 MiB buffer (bench/notes.md, issue 9). So replicas
 * are kept least recently used first, at most rep_cap bytes (worker.h): the 4096² and 8192²
 * matmuls keep all their sources (each is used 8 to 32 times), a larger one keeps rows of A
 * while B's chunks are made again per row of A in warm, reused buffers. (A bound of 64 MiB was
 * 4% faster at chunk 512 and 14% slower at chunk 128, where each chunk of B is used 32 times,
 * before sources were packed; with packed sources, which cost twice as much to make again, 2
 * GiB was 2.1% faster than 256 MiB at 8192² chunk 512.) Only the store's reference is dropped:
 * queued tasks keep theirs.
 *
 * The scheduler also sends how many tasks still need each source chunk (`uses`). A chunk with
 * fewer than TSR__REPLICA_MIN_USES is not kept at all: it is made again for each task that
 * needs it (tasks waiting at the same time still share one run), and its buffer goes straight
 * back to the pool, so the chunks a worker makes keep reusing warm memory. Measured against
 * keeping every replica (bench/notes.md, issue 9, section 10; medians of per-round ratios, 5
 * alternated rounds): a threshold of 6 made the 4096² matmul 10% faster at chunk 1024 (4 uses
 * a chunk) and 3% at 512 (8 uses: a chunk dropped by the bound above is not kept when made
 * again near its last uses), and left 256 and 128 unchanged; 12 lost 3% at 512. A packed
 * source tile (PACK_SOURCE) costs 2-4 times a plain one to make, and is kept from 2 uses
 * (TSR__REPLICA_MIN_USES_PACKED): at 4096² chunk 1024, packed, keeping ran 4% faster than
 * making each tile per use (bench/notes.md §32). */

static void rep_unlink(tsr__worker *w, wreplica *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        w->rep_old = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        w->rep_new = r->prev;
    r->prev = r->next = NULL;
}

static void rep_append(tsr__worker *w, wreplica *r) {
    r->prev = w->rep_new;
    r->next = NULL;
    if (w->rep_new)
        w->rep_new->next = r;
    else
        w->rep_old = r;
    w->rep_new = r;
}

/* The scheduler freed the key (or the chunk went): forget it. */
static void rep_forget(tsr__worker *w, uint64_t job, uint64_t id) {
    if (w->replicas.len == 0) return;
    wreplica *r = tsr__kmap_del(&w->replicas, job, id);
    if (!r) return;
    rep_unlink(w, r);
    w->rep_bytes -= r->bytes;
    free(r);
}

/* A task here uses the replica under this key: it becomes the most recently used. */
static void rep_touch(tsr__worker *w, uint64_t job, uint64_t id) {
    if (w->replicas.len == 0) return;
    wreplica *r = tsr__kmap_get(&w->replicas, job, id);
    if (!r || r == w->rep_new) return;
    rep_unlink(w, r);
    rep_append(w, r);
}

/* Keeps the chunk just stored under (job, id) as a replica, then drops the least recently used
 * ones over the bound. Without memory for the record the replica is simply not bounded. */
static void rep_keep(tsr__worker *w, uint64_t job, uint64_t id, const tsr__buf *buf) {
    w->rep_made++;
    rep_forget(w, job, id);
    wreplica *r = malloc(sizeof *r);
    if (!r) return;
    *r = (wreplica){job, id, buf, buf->size, NULL, NULL};
    if (tsr__kmap_put(&w->replicas, job, id, r, NULL) != 0) {
        free(r);
        return;
    }
    rep_append(w, r);
    w->rep_bytes += r->bytes;
    while (w->rep_bytes > w->rep_cap && w->rep_old != r) {
        wreplica *o = w->rep_old;
        const tsr__chunk *ch = tsr__store_get(&w->store, o->job, o->id);
        if (ch && ch->buf == o->buf) {
            tsr__store_drop(&w->store, o->job, o->id);
            w->rep_dropped++;
        }
        rep_forget(w, o->job, o->id);
    }
}

static void rep_cleanup(tsr__worker *w) {
    while (w->rep_old) rep_forget(w, w->rep_old->job, w->rep_old->id);
    tsr__kmap_free(&w->replicas);
}

/* ---- Recomputed inputs ----------------------------------------------------------------------- */

/* Input k of t is a source chunk this worker does not hold: compute it here from its descriptor
 * as an internal task that keeps the result as a replica under the input's key. Later tasks
 * needing the same key find it in w->pending (or the store) and wait instead. */
static void attach_recompute(tsr__worker *w, wtask *t, uint32_t k, tsr__str kobj, int64_t uses) {
    wtask_in *in = &t->in[k];
    char msg[200];
    wkdesc *kd = NULL;
    int rc = wkd_get(w, kobj, &kd);
    if (rc == 0 && !tsr__kop_has(kd->d.kop, TSR__KOP_RECOMPUTE)) {
        snprintf(msg, sizeof msg, "input (%llu,%llu) cannot be recomputed: %s is not a source",
                 (unsigned long long)in->job, (unsigned long long)in->id, tsr__kop_name(kd->d.kop));
        wkd_unref(kd);
        input_failed(w, t, k, msg);
        return;
    }
    if (rc != 0) {
        snprintf(msg, sizeof msg, "%s for recomputed input (%llu,%llu)",
                 rc == -ENOMEM ? "no memory" : "malformed kernel descriptor",
                 (unsigned long long)in->job, (unsigned long long)in->id);
        input_failed(w, t, k, msg);
        return;
    }
    /* Kept as a replica only where enough uses remain (the scheduler's count; none sent: kept,
     * as before the count existed). */
    int keep = uses < 0 || uses >= (kd->d.kop == TSR_KOP_PACK_SOURCE ? TSR__REPLICA_MIN_USES_PACKED
                                                                     : TSR__REPLICA_MIN_USES);
    wtask *r = task_alloc(w, 0);
    if (!r) {
        wkd_unref(kd);
        input_failed(w, t, k, "no memory for a recompute");
        return;
    }
    r->job = in->job;
    r->id = in->id;
    r->kd = kd;
    r->internal = 1;
    r->drop = !keep;
    task_link(w, r);
    r->mapped = tsr__kmap_put(&w->pending, r->job, r->id, r, NULL) == 0;
    if (!r->mapped || add_waiter(&r->deps, &r->ndeps, &r->deps_cap, t, k) != 0) {
        tsr__task_free(w, r);
        input_failed(w, t, k, "no memory for a recompute");
        return;
    }
    r->missing = 1;
    task_settle(w, r);
}

/* ---- Starting tasks -------------------------------------------------------------------------- */

/* Makes input k of t available now or registers where it will come from: the store, a task
 * still running here (a chain sent in one batch, or a recompute in progress), a local
 * recompute, or a peer. */
static void task_attach_input(tsr__worker *w, wtask *t, uint32_t k, const tsr__m_input *e) {
    wtask_in *in = &t->in[k];
    int has_addr = TSR__M_HAS(input, e, addr);
    uint64_t flags = e->flags;
    int recompute = (flags & TSR__IN_RECOMPUTE) && TSR__M_HAS(input, e, kdesc);
    in->flags = (uint8_t)(flags & (TSR__IN_DONATE | TSR__IN_RECOMPUTE));
    const tsr__chunk *ch = tsr__store_get(&w->store, in->job, in->id);
    if (ch && !ch->buf) {
        /* On disk (spill.c): read back, and this input waits for it. */
        int rc = tsr__spill_wait(w, in->job, in->id, t, k);
        if (rc != 0) input_failed(w, t, k, "no memory to read a spilled input back");
        return;
    }
    if (ch) {
        if (recompute)
            rep_touch(w, in->job, in->id);
        else
            tsr__spill_touch(w, in->job, in->id);
        input_ready(w, t, k, ch->buf, ch->dtype, ch->ndim, ch->shape);
        return;
    }
    if (!has_addr || recompute) {
        wtask *prod = tsr__kmap_get(&w->pending, in->job, in->id);
        if (prod) {
            if (add_waiter(&prod->deps, &prod->ndeps, &prod->deps_cap, t, k) != 0)
                input_failed(w, t, k, "no memory for a waiter");
            return;
        }
    }
    if (recompute) {
        attach_recompute(w, t, k, e->kdesc, TSR__M_HAS(input, e, uses) ? (int64_t)e->uses : -1);
    } else if (!has_addr) {
        char msg[200];
        snprintf(msg, sizeof msg, "input (%llu,%llu) is not on this worker",
                 (unsigned long long)in->job, (unsigned long long)in->id);
        input_failed(w, t, k, msg);
    } else {
        attach_fetch(w, t, k, e->addr);
    }
}

/* A HELD task (tsr_persist): its one input is a chunk of an earlier job of the same client, named
 * by its descriptor (kernels/kernels.h), taken from this worker's store or fetched from the worker
 * that held it when the client lowered the graph. The graph lists no input for it, since the
 * scheduler tracks chunks per job; a chunk lost since fails the task, and the client then
 * computes the array again from its definition (client/persist.c). */
static void attach_held(tsr__worker *w, wtask *t) {
    const tsr_kdesc *d = &t->kd->d;
    wtask_in *in = &t->in[0];
    if (d->ni < 2 || d->i[0] < 0 || d->i[0] > UINT32_MAX || d->i[1] < 0 || d->i[1] > UINT32_MAX) {
        input_failed(w, t, 0, "malformed held chunk");
        return;
    }
    in->job = (uint64_t)d->i[0];
    in->id = (uint64_t)d->i[1];
    const tsr__chunk *ch = tsr__store_get(&w->store, in->job, in->id);
    if (ch && !ch->buf) {
        if (tsr__spill_wait(w, in->job, in->id, t, 0) != 0)
            input_failed(w, t, 0, "no memory to read a spilled input back");
        return;
    }
    if (ch) {
        input_ready(w, t, 0, ch->buf, ch->dtype, ch->ndim, ch->shape);
        return;
    }
    size_t n = d->s ? strlen(d->s) : 0;
    if (n == 0 || n >= 80) {
        char msg[200];
        snprintf(msg, sizeof msg, "held chunk (%llu,%llu) is not on this worker",
                 (unsigned long long)in->job, (unsigned long long)in->id);
        input_failed(w, t, 0, msg);
        return;
    }
    attach_fetch(w, t, 0, (tsr__str){d->s, (uint32_t)n});
}

static void task_start(tsr__worker *w, uint64_t job, const tsr__m_task *to, uint8_t traced) {
    uint64_t id = to->id;
    const tsr__list *ins = &to->inputs;
    wtask *old = tsr__kmap_get(&w->pending, job, id);
    if (old) {
        if (old->internal) {
            /* We are already recomputing this chunk for another task: that run becomes this
             * task (same descriptor, same key) and is reported when it ends. */
            old->internal = 0;
            old->drop = 0;
            old->traced = traced;
            return;
        }
        tsr__log(&w->log, TSR_LOG_WARN, "task (%llu,%llu) sent twice; ignoring the repeat",
                 (unsigned long long)job, (unsigned long long)id);
        return;
    }
    wtask *t = task_alloc(w, ins->n);
    if (!t) {
        tsr__worker_send_erred(w, job, id, "no memory for the task", 1);
        return;
    }
    t->job = job;
    t->id = id;
    t->traced = traced;
    int rc = wkd_get(w, to->kdesc, &t->kd);
    if (rc != 0) {
        tsr__worker_send_erred(
            w, job, id, rc == -ENOMEM ? "no memory for the task" : "malformed kernel descriptor",
            1);
        tsr__task_free(w, t);
        return;
    }
    /* An output that cannot fit in the memory limit by itself: refused here, where a task the
     * scheduler's admission (which trusts the graph's sizes) let through is told apart from one
     * that would push the worker into spilling without end. */
    uint64_t obytes = tsr__kdesc_nbytes(&t->kd->d);
    if (w->opts->memory_limit > 0 && obytes > (uint64_t)w->opts->memory_limit) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "its output chunk (%llu bytes) is larger than this worker's memory limit (%lld "
                 "bytes)",
                 (unsigned long long)obytes, (long long)w->opts->memory_limit);
        tsr__worker_send_erred(w, job, id, msg, 1);
        tsr__task_free(w, t);
        return;
    }
    int held = t->kd->d.kop == TSR_KOP_HELD && t->nin == 0;
    if (held) { /* task_alloc leaves room for POOL_NIN inputs, and cleared none */
        t->nin = 1;
        memset(&t->in[0], 0, sizeof t->in[0]);
    }
    task_link(w, t);
    /* One extra count while inputs are attached, so the task cannot start (or go) midway. */
    t->missing = t->nin + 1;
    if (held) attach_held(w, t);
    /* The inputs were checked by tsr__task_compute's first pass: these reads cannot fail. */
    tsr__m_input e;
    uint32_t listed = held ? 0 : t->nin;
    for (uint32_t k = 0; k < listed; k++) {
        rc = TSR__LIST_GET(ins, input, k, &e);
        assert(rc == 0);
        t->in[k].job = job;
        t->in[k].id = e.id;
    }
    for (uint32_t k = 0; k < listed; k++) {
        rc = TSR__LIST_GET(ins, input, k, &e);
        assert(rc == 0);
        task_attach_input(w, t, k, &e);
    }
    if (!t->failed) {
        if (tsr__kmap_put(&w->pending, job, id, t, NULL) == 0)
            t->mapped = 1;
        else
            task_fail(w, t, "no memory for the task");
    }
    task_settle(w, t);
}

/* The first pass checks every task and input: tasks and inputs are LAZY lists (wire/msg.h), so
 * this pass is where they are decoded and checked, and a malformed one refuses the whole message
 * before any task starts. It also checks what the message layer cannot: input addresses fit (80
 * bytes) and are not empty. */
const char *tsr__task_compute(tsr__worker *w, const tsr__msg_compute *m) {
    tsr__m_task t;
    tsr__m_input in;
    for (uint32_t i = 0; i < m->tasks.n; i++) {
        if (TSR__LIST_GET(&m->tasks, task, i, &t) != 0) return "malformed task";
        for (uint32_t k = 0; k < t.inputs.n; k++) {
            if (TSR__LIST_GET(&t.inputs, input, k, &in) != 0) return "malformed task input";
            if (TSR__M_HAS(input, &in, addr) && (in.addr.n == 0 || in.addr.n >= 80))
                return "malformed input address";
        }
    }
    w->st.msgs_in++;
    uint8_t traced = TSR__MSG_HAS(compute, m, trace) && m->trace;
    /* FIFO in the scheduler's order: it sends tasks by priority. */
    for (uint32_t i = 0; i < m->tasks.n && !w->stopping; i++) {
        int rc = TSR__LIST_GET(&m->tasks, task, i, &t); /* checked above */
        assert(rc == 0);
        (void)rc;
        task_start(w, m->job, &t, traced);
    }
    return NULL;
}

/* ---- Results --------------------------------------------------------------------------------- */

void tsr__task_finished(tsr__worker *w, wtask *t) {
    if (w->nbusy > 0) w->nbusy--;
    w->st.busy_s += t->seconds;
    if (!t->internal) w->st.tasks++;
    if (t->rc != 0) {
        task_fail(w, t, t->err ? t->err : tsr_strerror(t->rc));
        tsr__task_free(w, t);
        return;
    }
    const tsr_kdesc *d = &t->kd->d;
    tsr__buf *out = t->out;
    if ((!t->internal && TSR__GROW(w->done, w->done_cap, w->ndone + 1) != 0) ||
        (!t->drop && tsr__store_put(&w->store, t->job, t->id, tsr__buf_ref(out), d->dtype, d->ndim,
                                    d->shape) != 0)) {
        task_fail(w, t, "no memory to keep the result");
        tsr__task_free(w, t);
        return;
    }
    t->out = NULL;
    if (t->internal && !t->drop) rep_keep(w, t->job, t->id, out);
    if (!t->internal && !t->drop) tsr__spill_track(w, t->job, t->id, out);
    if (!t->internal) {
        done_item *it = &w->done[w->ndone++];
        *it = (done_item){t->job, t->id, out->size, t->seconds, 0, t->thread, t->traced};
        /* t0 is on tsr__now's clock. Its offset from the wall clock is read once per worker:
         * reading it again at each completion (two clock calls, with preemption or a slewing
         * clock between them) moved a span's start by microseconds against the previous span's
         * end, so back-to-back spans of one thread overlapped. A wall clock step after the first
         * traced task shifts this worker's spans as a whole; untraced tasks never read it. */
        if (t->traced) {
            if (!w->wall_offset_ok) {
                w->wall_offset = tsr__wall_now() - tsr__now();
                w->wall_offset_ok = 1;
            }
            it->start = t->t0 + w->wall_offset;
        }
    }
    if (t->mapped) {
        tsr__kmap_del(&w->pending, t->job, t->id);
        t->mapped = 0;
    }
    /* Every waiter takes its reference before any of them is dispatched: a waiter with the
     * input donated may then find the store and the waiters its only other holders. */
    wwaiter *deps = t->deps;
    size_t n = t->ndeps;
    t->deps = NULL;
    t->ndeps = t->deps_cap = 0;
    for (size_t k = 0; k < n; k++)
        input_set(deps[k].t, deps[k].idx, out, d->dtype, d->ndim, d->shape);
    tsr__chunkmem_unref(&w->mem, out);
    for (size_t k = 0; k < n; k++) task_settle(w, deps[k].t);
    free(deps);
    tsr__task_free(w, t);
}

const char *tsr__task_free_keys(tsr__worker *w, const tsr__msg_free *m) {
    size_t dropped = 0;
    /* keys is a LAZY list (wire/msg.h): a malformed key refuses the message, and the connection
     * closes; the keys before it are freed already, which is harmless (freeing is idempotent and
     * the scheduler forgets this worker's chunks when it goes). */
    for (uint32_t i = 0; i < m->keys.n; i++) {
        tsr__m_key k;
        if (TSR__LIST_GET(&m->keys, key, i, &k) != 0) return "malformed key";
        if (tsr__store_drop(&w->store, k.job, k.id)) {
            rep_forget(w, k.job, k.id);
            tsr__spill_forget(w, k.job, k.id);
            dropped++;
            continue;
        }
        /* A replica still being computed is not kept once it is done. Unknown keys (donated
         * inputs, repeats) are fine. */
        wtask *r = tsr__kmap_get(&w->pending, k.job, k.id);
        if (r && r->internal) r->drop = 1;
    }
    tsr__log(&w->log, TSR_LOG_DEBUG, "freed %zu of %u chunks; holding %llu bytes", dropped,
             m->keys.n, (unsigned long long)w->store.bytes);
    return NULL;
}

void tsr__task_idle(tsr__worker *w) {
    assert(!w->all);
    while (w->task_pool) {
        wtask *t = w->task_pool;
        w->task_pool = t->qnext;
        free(t);
    }
    w->npool = 0;
    /* With no task live, nothing is pending; fetches of chunks not yet used may remain. */
    if (w->pending.len == 0) tsr__kmap_free(&w->pending);
    if (w->fetched.len == 0) tsr__kmap_free(&w->fetched);
    if (w->ndone == 0) {
        free(w->done);
        w->done = NULL;
        w->done_cap = 0;
    }
    if (w->nxfer == 0) {
        free(w->xfers);
        w->xfers = NULL;
        w->xfer_cap = 0;
    }
}

void tsr__task_cleanup(tsr__worker *w) {
    while (w->all) tsr__task_free(w, w->all); /* queued, waiting or finished-but-undrained */
    w->qhead = w->qtail = w->chead = w->ctail = w->rq_head = w->rq_tail = NULL;
    for (size_t i = 0; i < w->fetched.cap; i++)
        if (w->fetched.slots[i].val) fetch_free(w, w->fetched.slots[i].val);
    w->fd_head = w->fd_tail = NULL; /* held-back fetches were in w->fetched: freed above */
    tsr__kmap_free(&w->fetched);
    tsr__kmap_free(&w->pending);
    rep_cleanup(w);
    w->ndone = w->nxfer = 0; /* unsent */
    tsr__task_idle(w);
    for (size_t i = 0; i < TSR__KCACHE_SLOTS; i++) {
        wkd_unref(w->kcache[i]);
        w->kcache[i] = NULL;
    }
}
