/* Fetching computed chunks straight from the workers that hold them, into a caller buffer
 * (tsr_array_read) or a .npy file (tsr_array_save_npy), never assembling the array in memory.
 * The connections, gets and reply matching are the shared fetch pool's (wire/fetch.h); this file
 * decides what to ask for, at most MAX_OUTSTANDING chunks at a time, and where the bytes go. A
 * call that ends (done, failed, interrupted) cancels what it still waits for, so a late reply is
 * dropped by the pool and never reaches a later call. Runs inside the blocking calls, on the
 * caller's thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client.h"

typedef tsr__fetch fetch;

/* ---- fetching chunks from workers ---- */

/* Chunks asked for at once (each holds a buffer of its size until written out). */
#define MAX_OUTSTANDING 8

uint64_t tsr__chunk_nbytes(const tsr_array *a, int64_t ci) {
    int64_t off[TSR_MAX_NDIM], shp[TSR_MAX_NDIM];
    tsr__array_chunk_box(a, ci, off, shp);
    uint64_t n = tsr_dtype_size(a->dtype);
    for (int d = 0; d < a->ndim; d++) n *= (uint64_t)shp[d];
    return n;
}

static void unlink_fetch(tsr__rt *rt, fetch *f) {
    if (f->prev)
        f->prev->next = f->next;
    else
        rt->outstanding = f->next;
    if (f->next) f->next->prev = f->prev;
    rt->noutstanding--;
}

static void free_fetch(fetch *f) {
    free(f->data);
    free(f);
}

static const char *on_chunk(tsr__fetch_req *r, const tsr__msg_chunk *ck, uint64_t plen,
                            void **dest) {
    fetch *f = r->user;
    (void)ck;
    if (plen != f->nbytes) return "chunk size does not match the array's";
    f->data = malloc(plen ? plen : 1);
    if (!f->data) return "no memory for a chunk";
    *dest = f->data;
    return NULL;
}

static void pump(tsr__rt *rt);

/* ---- chunks made again after a loss ---- */

/* A fetch fails when its holder dies (or is stopped, and then lost to the scheduler's
 * heartbeats); the scheduler makes the chunk again elsewhere and sends the job's `finished`
 * again, which tsr__fetch_on_moved records. A failed chunk is asked for again at its new
 * address as soon as one is known, so a read never fails for a loss the cluster recovers from;
 * one that nobody reports again within the client's timeout fails the read. */

static int cmp_moved(const void *x, const void *y) {
    uint32_t a = ((const tsr__moved_out *)x)->id, b = ((const tsr__moved_out *)y)->id;
    return (a > b) - (a < b);
}

static tsr__moved *find_moved(const tsr__rt *rt, uint64_t job) {
    for (size_t i = 0; i < rt->nmoved; i++)
        if (rt->moved[i].job == job) return &rt->moved[i];
    return NULL;
}

static void free_moved(tsr__moved *m) {
    for (size_t i = 0; i < m->n; i++) free(m->v[i].addr);
    free(m->v);
}

void tsr__fetch_drop_moved(tsr__rt *rt, uint64_t job) {
    tsr__moved *m = find_moved(rt, job);
    if (!m) return;
    free_moved(m);
    *m = rt->moved[--rt->nmoved];
}

/* Where chunk (job, id) was last reported again, or NULL. */
static const char *moved_addr(const tsr__rt *rt, uint64_t job, uint32_t id) {
    const tsr__moved *m = find_moved(rt, job);
    if (!m) return NULL;
    tsr__moved_out key = {.id = id}, *e = bsearch(&key, m->v, m->n, sizeof key, cmp_moved);
    return e ? e->addr : NULL;
}

void tsr__fetch_refresh_addrs(tsr__rt *rt, tsr_array *a) {
    if (!a->computed.task || !find_moved(rt, a->computed.job)) return;
    for (int64_t ci = 0; ci < a->computed.nchunks; ci++) {
        const char *na = moved_addr(rt, a->computed.job, a->computed.task[ci]);
        if (!na || (a->computed.addr[ci] && !strcmp(na, a->computed.addr[ci]))) continue;
        char *d = strdup(na);
        if (!d) continue; /* the old address then fails, and the chunk is made again */
        free(a->computed.addr[ci]);
        a->computed.addr[ci] = d;
    }
}

/* Chunk ci of the array being read takes its latest address: 1 if that changed. */
static int update_addr(tsr__rt *rt, int64_t ci) {
    tsr_array *a = rt->array;
    const char *na = moved_addr(rt, a->computed.job, a->computed.task[ci]);
    if (!na || (a->computed.addr[ci] && !strcmp(na, a->computed.addr[ci]))) return 0;
    char *d = strdup(na);
    if (!d) return 0; /* it stays lost, and the timeout ends the read */
    free(a->computed.addr[ci]);
    a->computed.addr[ci] = d;
    return 1;
}

static int push_ci(int64_t **v, size_t *n, size_t *cap, int64_t ci) {
    if (TSR__GROW(*v, *cap, *n + 1) < 0) return -ENOMEM;
    (*v)[(*n)++] = ci;
    return 0;
}

static void retry(tsr__rt *rt, int64_t ci) {
    if (push_ci(&rt->retry, &rt->nretry, &rt->retrycap, ci) != 0)
        tsr__rt_fail(rt, -ENOMEM, "out of memory");
}

/* The fetch of chunk ci failed (why says how): ask again where it was reported since, or wait
 * for it to be reported again. */
static void lose(tsr__rt *rt, int64_t ci, const char *why) {
    if (update_addr(rt, ci)) {
        retry(rt, ci);
        return;
    }
    if (push_ci(&rt->lost, &rt->nlost, &rt->lostcap, ci) != 0) {
        tsr__rt_fail(rt, -ENOMEM, "out of memory");
        return;
    }
    if (rt->lost_since == 0) {
        rt->lost_since = rt->lost_retry = tsr__now();
        snprintf(rt->lost_why, sizeof rt->lost_why, "%s", why);
    }
}

/* The read in progress takes its job's latest addresses: lost chunks that have a new holder
 * are asked for again, and so are outstanding ones whose holder changed (a stopped worker's
 * fetch would otherwise wait for the client's timeout). */
static void relocate(tsr__rt *rt) {
    for (fetch *f = rt->outstanding, *nx; f; f = nx) {
        nx = f->next;
        if (f->store || !update_addr(rt, f->ci)) continue;
        unlink_fetch(rt, f);
        tsr__fetch_cancel(&f->req);
        retry(rt, f->ci);
        free_fetch(f);
    }
    for (size_t i = 0; i < rt->nlost;) {
        if (update_addr(rt, rt->lost[i])) {
            retry(rt, rt->lost[i]);
            rt->lost[i] = rt->lost[--rt->nlost];
        } else {
            i++;
        }
    }
    pump(rt);
}

void tsr__fetch_on_moved(tsr__rt *rt, const tsr__msg_finished *m) {
    tsr__moved nm = {.job = m->job, .n = m->outputs.n};
    nm.v = calloc(nm.n ? nm.n : 1, sizeof *nm.v);
    if (!nm.v) return; /* a read that needs it times out */
    for (size_t k = 0; k < nm.n; k++) {
        tsr__m_output e;
        TSR__LIST_GET(&m->outputs, output, k, &e);
        nm.v[k].id = e.id;
        if (TSR__M_HAS(output, &e, addr)) nm.v[k].addr = strndup(e.addr.p, e.addr.n);
    }
    qsort(nm.v, nm.n, sizeof *nm.v, cmp_moved);
    tsr__moved *old = find_moved(rt, m->job);
    if (old) {
        free_moved(old);
        *old = nm;
    } else if (TSR__GROW(rt->moved, rt->movedcap, rt->nmoved + 1) < 0) {
        free_moved(&nm);
        return;
    } else {
        rt->moved[rt->nmoved++] = nm;
    }
    if (rt->array && rt->array->computed.job == m->job) relocate(rt);
}

int tsr__fetch_redirect(tsr__rt *rt, uint32_t job, uint32_t id, const char *addr) {
    for (fetch *f = rt->outstanding; f; f = f->next) {
        if (!f->store || f->req.job != job || f->req.id != id) continue;
        if (!f->req.from || !strcmp(f->req.from, addr)) return 0;
        unlink_fetch(rt, f);
        tsr__fetch_cancel(&f->req);
        free_fetch(f);
        return 1;
    }
    return 0;
}

void tsr__fetch_tick(tsr__rt *rt, uint64_t timeout_ms) {
    if (!rt->array || rt->nlost == 0) return;
    double now = tsr__now();
    if ((now - rt->lost_since) * 1e3 > (double)timeout_ms) {
        tsr__rt_fail(rt, TSR_ECLOSED, "%s (and the scheduler did not make it again in %.0f s)",
                     rt->lost_why, now - rt->lost_since);
        return;
    }
    /* Once a second, lost chunks are asked for again where they were: a fetch can fail on a
     * holder that is alive (a connection dropped), and then nothing reports it again. */
    if (now - rt->lost_retry < 1.0) return;
    rt->lost_retry = now;
    while (rt->nlost > 0) retry(rt, rt->lost[--rt->nlost]);
    pump(rt);
}

static void on_done(tsr__fetch_req *r, int status, const char *why) {
    fetch *f = r->user;
    tsr__rt *rt = f->rt;
    tsr_array *a = rt->array;
    unlink_fetch(rt, f);
    if (f->store) {
        tsr__ostream_fetched(rt, f, status, why);
        free_fetch(f);
        return;
    }
    char msg[600];
    if (status == TSR__FETCH_MISSING) {
        snprintf(msg, sizeof msg, "chunk %lld of array \"%s\" is no longer held by worker %s",
                 (long long)f->ci, a->name, r->from);
        lose(rt, f->ci, msg);
        pump(rt);
    } else if (status != TSR__FETCH_OK) {
        snprintf(msg, sizeof msg, "cannot fetch chunk %lld of array \"%s\": %s", (long long)f->ci,
                 a->name, why);
        lose(rt, f->ci, msg);
        pump(rt);
    } else {
        int rc = f->data ? rt->sink(rt, f) : TSR_EPROTOCOL;
        if (rc) {
            tsr__rt_fail(rt, rc, "%s", rt->c->errmsg);
        } else if (++rt->chunks_done == a->computed.nchunks) {
            rt->fetch_complete = 1;
            uv_stop(&rt->c->loop);
        } else {
            if (rt->nlost == 0) rt->lost_since = 0; /* progress: the clock starts again */
            pump(rt);
        }
    }
    free_fetch(f);
}

static void pack_hello(void *user, tsr__conn *c, msgpack_sbuffer *sb) {
    (void)user;
    tsr__msg_hello m;
    tsr__hello_init(&m, "peer", c);
    tsr__msg_pack_hello(sb, &m);
}

static const tsr__fetch_cbs fetch_cbs = {
    .on_chunk = on_chunk,
    .on_done = on_done,
    .pack_hello = pack_hello,
};

/* Asks for chunk ci of the array being read. 0, or -1 with the read failed. */
static int ask(tsr__rt *rt, int64_t ci) {
    tsr_array *a = rt->array;
    update_addr(rt, ci); /* made again since the job finished: asked for where it is now */
    fetch *f = calloc(1, sizeof *f);
    if (!f) {
        tsr__rt_fail(rt, -ENOMEM, "out of memory");
        return -1;
    }
    f->rt = rt;
    f->ci = ci;
    f->nbytes = tsr__chunk_nbytes(a, ci);
    f->req.job = (uint32_t)a->computed.job;
    f->req.id = a->computed.task[ci];
    f->req.user = f;
    f->req.has_cap = tsr__client_get_cap(rt->c, a->computed.job, f->req.cap) == 0;
    if (tsr__fetch_get(&rt->pool, &f->req, a->computed.addr[ci]) != 0) {
        free(f);
        tsr__rt_fail(rt, -ENOMEM, "cannot reach worker %s", a->computed.addr[ci]);
        return -1;
    }
    f->next = rt->outstanding;
    if (f->next) f->next->prev = f;
    rt->outstanding = f;
    rt->noutstanding++;
    return 0;
}

/* Chunks asked for again come first, then those never asked for. */
static void pump(tsr__rt *rt) {
    tsr_array *a = rt->array;
    while (rt->noutstanding < MAX_OUTSTANDING && !rt->failed && a) {
        int64_t ci;
        if (rt->nretry > 0)
            ci = rt->retry[--rt->nretry];
        else if (rt->next_chunk < a->computed.nchunks)
            ci = rt->next_chunk++;
        else
            break;
        if (ask(rt, ci) != 0) break;
    }
    tsr__fetch_flush(&rt->pool);
}

/* Set up at the first fetch: a client that never reads opens no peer connection. */
static void pool_init(tsr__rt *rt) {
    if (!rt->pool.cbs) {
        tsr__fetch_pool_init(&rt->pool, &rt->c->loop, &rt->c->log, &fetch_cbs, rt, MAX_OUTSTANDING);
        rt->pool.secret = rt->c->token;
    }
}

int tsr__fetch_task(tsr__rt *rt, uint32_t job, uint32_t id, uint64_t nbytes, const char *addr) {
    pool_init(rt);
    fetch *f = calloc(1, sizeof *f);
    if (!f) return -ENOMEM;
    f->rt = rt;
    f->store = 1;
    f->ci = id;
    f->nbytes = nbytes;
    f->req.job = job;
    f->req.id = id;
    f->req.user = f;
    f->req.has_cap = tsr__client_get_cap(rt->c, job, f->req.cap) == 0;
    if (tsr__fetch_get(&rt->pool, &f->req, addr) != 0) {
        free(f);
        return -ENOMEM;
    }
    f->next = rt->outstanding;
    if (f->next) f->next->prev = f;
    rt->outstanding = f;
    rt->noutstanding++;
    return 0;
}

void tsr__fetch_cancel_all(tsr__rt *rt) {
    while (rt->outstanding) {
        fetch *f = rt->outstanding;
        unlink_fetch(rt, f);
        tsr__fetch_cancel(&f->req);
        free_fetch(f);
    }
}

static int fetch_all(tsr_array *a, int (*sink)(tsr__rt *, fetch *), void *user) {
    tsr_client *c = a->client;
    if (!a->computed.task)
        return tsr__fail(c, TSR_ENOTCOMPUTED,
                         "array \"%s\" has not been computed (call tsr_compute first)", a->name);
    if (!c->connected || !c->rt)
        return tsr__fail(c, TSR_ENOTCONNECTED, "the client is no longer connected");
    tsr__rt *rt = c->rt;
    pool_init(rt);
    tsr__rt_begin(rt);
    rt->array = a;
    rt->sink = sink;
    rt->sink_user = user;
    rt->next_chunk = 0;
    rt->chunks_done = 0;
    rt->nlost = rt->nretry = 0;
    rt->lost_since = 0;
    rt->fetch_complete = a->computed.nchunks == 0;
    pump(rt);
    int rc = tsr__rt_run_until(rt, &rt->fetch_complete, 0);
    /* What is still outstanding belongs to no call now: cancelled, so that its reply, if one
     * comes, is dropped by the pool instead of reaching a later call. */
    tsr__fetch_cancel_all(rt);
    rt->array = NULL;
    tsr__rt_end(rt);
    return rc;
}

int tsr__chunk_runs(const tsr_array *a, int64_t ci, const char *src,
                    int (*fn)(void *u, int64_t dst, const char *src, size_t nbytes), void *u) {
    int64_t off[TSR_MAX_NDIM], shp[TSR_MAX_NDIM], stride[TSR_MAX_NDIM];
    tsr__array_chunk_box(a, ci, off, shp);
    size_t es = tsr_dtype_size(a->dtype);
    int nd = a->ndim;
    if (nd == 0) return fn(u, 0, src, es);
    for (int d = 0; d < nd; d++)
        if (shp[d] == 0) return 0;
    stride[nd - 1] = 1;
    for (int d = nd - 2; d >= 0; d--) stride[d] = stride[d + 1] * a->shape[d + 1];
    int64_t idx[TSR_MAX_NDIM] = {0};
    size_t run = (size_t)shp[nd - 1] * es;
    for (;;) {
        int64_t dst = off[nd - 1];
        for (int d = 0; d < nd - 1; d++) dst += (off[d] + idx[d]) * stride[d];
        int rc = fn(u, dst, src, run);
        if (rc) return rc;
        src += run;
        int d = nd - 2;
        while (d >= 0 && ++idx[d] == shp[d]) idx[d--] = 0;
        if (d < 0) break;
    }
    return 0;
}

typedef struct read_ctx {
    char *buf;
    size_t es;
} read_ctx;

static int copy_run(void *u, int64_t dst, const char *src, size_t nbytes) {
    read_ctx *r = u;
    memcpy(r->buf + (size_t)dst * r->es, src, nbytes);
    return 0;
}

static int read_sink(tsr__rt *rt, fetch *f) {
    return tsr__chunk_runs(rt->array, f->ci, f->data, copy_run, rt->sink_user);
}

int tsr_array_read(tsr_array *a, void *buf, size_t size) {
    if (!a) return TSR_EINVALID;
    size_t need = (size_t)tsr_array_size(a) * tsr_dtype_size(a->dtype);
    if (!buf || size < need)
        return tsr__fail(a->client, TSR_EINVALID,
                         "tsr_array_read: array \"%s\" needs a buffer of %zu bytes, got %zu",
                         a->name, need, buf ? size : 0);
    read_ctx r = {buf, tsr_dtype_size(a->dtype)};
    return fetch_all(a, read_sink, &r);
}

void tsr__fetch_free_peers(tsr__rt *rt) {
    if (rt->pool.cbs) tsr__fetch_pool_free(&rt->pool);
    for (size_t i = 0; i < rt->nmoved; i++) free_moved(&rt->moved[i]);
    free(rt->moved);
    free(rt->lost);
    free(rt->retry);
}

typedef struct save_ctx {
    int fd;
    int64_t data_offset;
    size_t es;
    const char *path;
    tsr_array *a;
} save_ctx;

static int write_run(void *u, int64_t dst, const char *src, size_t nbytes) {
    save_ctx *s = u;
    off_t pos = (off_t)(s->data_offset + dst * (int64_t)s->es);
    while (nbytes > 0) {
        ssize_t w = pwrite(s->fd, src, nbytes, pos);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return tsr__fail(s->a->client, -e, "cannot write \"%s\" (array \"%s\"): %s", s->path,
                             s->a->name, strerror(e));
        }
        src += w;
        nbytes -= (size_t)w;
        pos += w;
    }
    return 0;
}

static int save_sink(tsr__rt *rt, fetch *f) {
    return tsr__chunk_runs(rt->array, f->ci, f->data, write_run, rt->sink_user);
}

/* Fills the temporary file: the header, the file's full length, then every chunk at its place. */
static int fill_npy(int fd, void *user, int *recorded) {
    save_ctx *s = user;
    char hdr[512];
    tsr_array *a = s->a;
    int hl = tsr__npy_format_header(a->dtype, a->ndim, a->shape, hdr, sizeof hdr);
    if (hl < 0) return hl;
    s->fd = fd;
    s->data_offset = hl;
    *recorded = 1; /* every failure below is recorded where it happens */
    int rc = write_run(&(save_ctx){fd, 0, 1, s->path, a}, 0, hdr, (size_t)hl);
    if (rc) return rc;
    if ((rc = tsr__tmpout_length(fd, (off_t)(hl + tsr_array_size(a) * (int64_t)s->es))) != 0)
        return tsr__fail(a->client, rc, "cannot write \"%s\" (array \"%s\"): %s", s->path, a->name,
                         strerror(-rc));
    return fetch_all(a, save_sink, s);
}

int tsr_array_save_npy(tsr_array *a, const char *path) {
    if (!a) return TSR_EINVALID;
    tsr_client *c = a->client;
    if (!path || !*path)
        return tsr__fail(c, TSR_EINVALID, "tsr_array_save_npy: empty path for array \"%s\"",
                         a->name);
    if (!a->computed.task)
        return tsr__fail(c, TSR_ENOTCOMPUTED,
                         "array \"%s\" has not been computed (call tsr_compute first)", a->name);
    char what[300];
    snprintf(what, sizeof what, "array \"%s\"", a->name);
    save_ctx s = {-1, 0, tsr_dtype_size(a->dtype), path, a};
    return tsr__write_file(c, path, what, fill_npy, &s);
}
