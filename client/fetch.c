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
    if (status == TSR__FETCH_MISSING) {
        tsr__rt_fail(rt, TSR_ECOMPUTE, "chunk %lld of array \"%s\" is no longer held by worker %s",
                     (long long)f->ci, a->name, r->from);
    } else if (status != TSR__FETCH_OK) {
        tsr__rt_fail(rt, TSR_ECLOSED, "cannot fetch chunk %lld of array \"%s\": %s",
                     (long long)f->ci, a->name, why);
    } else {
        int rc = f->data ? rt->sink(rt, f) : TSR_EPROTOCOL;
        if (rc) {
            tsr__rt_fail(rt, rc, "%s", rt->c->errmsg);
        } else if (++rt->chunks_done == a->computed.nchunks) {
            rt->fetch_complete = 1;
            uv_stop(&rt->c->loop);
        } else {
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

static void pump(tsr__rt *rt) {
    tsr_array *a = rt->array;
    while (rt->noutstanding < MAX_OUTSTANDING && rt->next_chunk < a->computed.nchunks &&
           !rt->failed) {
        int64_t ci = rt->next_chunk++;
        fetch *f = calloc(1, sizeof *f);
        if (!f) {
            tsr__rt_fail(rt, -ENOMEM, "out of memory");
            break;
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
            break;
        }
        f->next = rt->outstanding;
        if (f->next) f->next->prev = f;
        rt->outstanding = f;
        rt->noutstanding++;
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
    if (ftruncate(fd, (off_t)(hl + tsr_array_size(a) * (int64_t)s->es)) != 0) {
        int e = errno;
        return tsr__fail(a->client, -e, "cannot write \"%s\" (array \"%s\"): %s", s->path, a->name,
                         strerror(e));
    }
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
