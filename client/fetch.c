/* Fetching computed chunks straight from the workers that hold them, into a caller buffer
 * (tsr_array_read) or a .npy file (tsr_array_save_npy), never assembling the array in memory.
 * One connection per worker with a FIFO of outstanding gets; replies come back in order, and a
 * reply to a request of an earlier call (one that an interrupt or a failure ended) is matched to
 * that request and dropped. Runs inside the blocking calls, on the caller's thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client.h"

typedef tsr__fetch fetch;

/* A connection to one worker's peer port, with its FIFO of outstanding gets. */
typedef struct tsr__peer {
    struct tsr__peer *next;
    tsr__rt *rt;
    char addr[128];
    tsr__conn *conn;
    int welcomed;
    fetch **fifo; /* outstanding requests in send order */
    size_t head, count, cap;
} peer;

/* ---- fetching chunks from workers ---- */

#define MAX_OUTSTANDING 8

static void peer_on_connect(tsr__conn *conn, int status) {
    (void)conn;
    (void)status; /* a failure closes the connection; peer_on_close reports it */
}

static fetch *peer_front(peer *p) {
    return p->count ? p->fifo[p->head] : NULL;
}

static void peer_pop(peer *p) {
    p->head = (p->head + 1) % p->cap;
    p->count--;
}

static int peer_push(peer *p, fetch *f) {
    if (p->count == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 8;
        fetch **nf = malloc(ncap * sizeof *nf);
        if (!nf) return -ENOMEM;
        for (size_t k = 0; k < p->count; k++) nf[k] = p->fifo[(p->head + k) % p->cap];
        free(p->fifo);
        p->fifo = nf;
        p->head = 0;
        p->cap = ncap;
    }
    p->fifo[(p->head + p->count) % p->cap] = f;
    p->count++;
    return 0;
}

static uint64_t chunk_bytes(const tsr_array *a, int64_t ci) {
    int64_t off[TSR_MAX_NDIM], shp[TSR_MAX_NDIM];
    tsr__array_chunk_box(a, ci, off, shp);
    uint64_t n = tsr_dtype_size(a->dtype);
    for (int d = 0; d < a->ndim; d++) n *= (uint64_t)shp[d];
    return n;
}

static int peer_on_header(tsr__conn *conn, const msgpack_object *hdr, uint64_t plen, void **dest) {
    peer *p = conn->owner;
    if (plen == 0) return 0;
    fetch *f = peer_front(p);
    tsr__msg m;
    char err[160];
    if (!f || tsr__msg_decode(hdr, &m, err, sizeof err) != 0 || m.type != TSR__MSG_chunk ||
        m.u.chunk.job != f->job || m.u.chunk.id != f->id || plen != f->nbytes)
        return TSR_EPROTOCOL;
    f->data = malloc(plen ? plen : 1);
    if (!f->data) return -ENOMEM;
    *dest = f->data;
    return 0;
}

static void pump(tsr__rt *rt);

static void peer_on_frame(tsr__conn *conn, const msgpack_object *hdr, void *payload,
                          uint64_t plen) {
    peer *p = conn->owner;
    tsr__rt *r = p->rt;
    (void)payload;
    (void)plen;
    tsr__msg m;
    char err[160];
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0) {
        tsr__conn_close(conn, "malformed message");
        return;
    }
    if (m.type == TSR__MSG_welcome) {
        p->welcomed = 1;
        return;
    }
    fetch *f = peer_front(p);
    if (m.type == TSR__MSG_error) {
        char msg[512];
        tsr__str_copy(msg, sizeof msg, m.u.error.msg);
        if (r->array)
            tsr__rt_fail(r, TSR_EPROTOCOL, "worker %s refused the connection: %s", p->addr, msg);
        tsr__conn_close(conn, "refused");
        return;
    }
    if (!f || (m.type != TSR__MSG_missing && m.type != TSR__MSG_chunk)) {
        tsr__conn_close(conn, "unexpected message from worker");
        return;
    }
    /* Each reply answers the oldest outstanding request on this connection. */
    peer_pop(p);
    if (f->gen != r->fetch_gen || !r->array) {
        free(f->data);
        free(f);               /* the call that asked has returned: dropped */
        if (r->array) pump(r); /* it held one of the slots of the fetch in progress */
        return;
    }
    if (m.type == TSR__MSG_missing) {
        tsr__rt_fail(r, TSR_ECOMPUTE, "chunk %lld of array \"%s\" is no longer held by worker %s",
                     (long long)f->ci, r->array->name, p->addr);
        free(f);
        return;
    }
    if (!f->data && f->nbytes == 0) f->data = malloc(1);
    int rc = r->sink(r, f);
    free(f->data);
    free(f);
    if (rc) {
        tsr__rt_fail(r, rc, "%s", r->c->errmsg);
        return;
    }
    r->chunks_done++;
    if (r->chunks_done == r->array->computed.nchunks) {
        r->fetch_complete = 1;
        uv_stop(&r->c->loop);
    } else {
        pump(r);
    }
}

static void peer_on_close(tsr__conn *conn, int status, const char *reason) {
    peer *p = conn->owner;
    tsr__rt *r = p->rt;
    if (r) {
        for (peer **pp = &r->peers; *pp; pp = &(*pp)->next) {
            if (*pp == p) {
                *pp = p->next;
                break;
            }
        }
        int current = 0; /* does the call in progress wait for this worker? */
        for (size_t k = 0; k < p->count; k++)
            if (p->fifo[(p->head + k) % p->cap]->gen == r->fetch_gen) current = 1;
        if (current && r->array) {
            tsr__rt_fail(r, TSR_ECLOSED, "lost the connection to worker %s while fetching (%s)",
                         p->addr, reason);
        }
    }
    while (p->count) {
        fetch *f = peer_front(p);
        peer_pop(p);
        free(f->data);
        free(f);
    }
    free(p->fifo);
    free(p);
    (void)status;
}

static const tsr__conn_cbs peer_cbs = {
    .on_header = peer_on_header,
    .on_frame = peer_on_frame,
    .on_close = peer_on_close,
    .on_connect = peer_on_connect,
};

static peer *get_peer(tsr__rt *rt, const char *addr) {
    for (peer *p = rt->peers; p; p = p->next)
        if (strcmp(p->addr, addr) == 0 && !p->conn->closing) return p;
    peer *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    snprintf(p->addr, sizeof p->addr, "%s", addr);
    p->rt = rt;
    p->conn = tsr__conn_new(&rt->c->loop, &peer_cbs, p, &rt->c->log);
    if (!p->conn) {
        free(p);
        return NULL;
    }
    if (tsr__conn_connect(p->conn, addr) != 0) {
        p->rt = NULL; /* not listed: on_close must not look for it */
        tsr__conn_close(p->conn, "bad address");
        return NULL;
    }
    /* libuv queues writes made while connecting, so the hello goes first. */
    tsr__msg_hello hello;
    tsr__hello_init(&hello, "peer", rt->c->token);
    tsr__send_msg(p->conn, TSR__MSG_hello, &hello);
    p->next = rt->peers;
    rt->peers = p;
    return p;
}

static void pump(tsr__rt *rt) {
    tsr_array *a = rt->array;
    int64_t outstanding = 0;
    for (peer *p = rt->peers; p; p = p->next) outstanding += (int64_t)p->count;
    while (outstanding < MAX_OUTSTANDING && rt->next_chunk < a->computed.nchunks && !rt->failed) {
        int64_t ci = rt->next_chunk++;
        peer *p = get_peer(rt, a->computed.addr[ci]);
        fetch *f = calloc(1, sizeof *f);
        if (!p || !f || peer_push(p, f) != 0) {
            free(f);
            tsr__rt_fail(rt, -ENOMEM, "cannot reach worker %s", a->computed.addr[ci]);
            return;
        }
        f->gen = rt->fetch_gen;
        f->job = a->computed.job;
        f->id = a->computed.task[ci];
        f->ci = ci;
        f->nbytes = chunk_bytes(a, ci);
        tsr__send_msg(p->conn, TSR__MSG_get, &(tsr__msg_get){.job = (uint32_t)f->job, .id = f->id});
        outstanding++;
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
    tsr__rt_begin(rt);
    rt->fetch_gen++;
    rt->array = a;
    rt->sink = sink;
    rt->sink_user = user;
    rt->next_chunk = 0;
    rt->chunks_done = 0;
    rt->fetch_complete = a->computed.nchunks == 0;
    pump(rt);
    int rc = tsr__rt_run_until(rt, &rt->fetch_complete, 0);
    /* Requests still outstanding now belong to no call: their replies are dropped. */
    rt->array = NULL;
    tsr__rt_end(rt);
    return rc;
}

/* Calls fn for every contiguous run (along the last axis) of chunk ci: dst is the run's
 * element offset in the whole array (C order), src its bytes in the chunk. */
static int for_each_run(const tsr_array *a, int64_t ci, const char *src,
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
    return for_each_run(rt->array, f->ci, f->data, copy_run, rt->sink_user);
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
    peer *p = rt->peers;
    while (p) {
        peer *next = p->next;
        free(p->fifo);
        free(p);
        p = next;
    }
    rt->peers = NULL;
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
    return for_each_run(rt->array, f->ci, f->data, write_run, rt->sink_user);
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
