/* Chunks between workers: the peer server (answers get with the stored chunk's bytes, or
 * missing) and the worker's side of the shared fetch pool (wire/fetch.h): checking a reply's
 * dtype and shape, receiving it straight into a fresh chunk buffer, noting traced transfers. It
 * knows nothing of tasks: fetch results go back to task.c.
 *
 * Writes are batched per loop turn: gets wait for the end of the turn, and replies with small
 * payloads are copied into one buffer per connection, so a turn costs one write per connection
 * instead of one per chunk (each write being a TCP segment and a wake-up on the other side).
 * Large payloads are never copied: they go out as their own write, after the batch so far. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/auth.h"
#include "wire/fetch.h"
#include "worker/worker.h"

/* Replies carrying at most this many payload bytes are copied into the turn's batch. */
#define BATCH_MAX_PAYLOAD (16 * 1024)
/* A batch this large goes out at once, so that backpressure (wire.h) sees it. */
#define BATCH_FLUSH (256 * 1024)

/* ---- Server side ----------------------------------------------------------------------------- */

static void pin_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen);
static void pin_on_close(tsr__conn *c, int status, const char *reason);
enum { SERVED, PARKED };
static int serve_get(peer_in *p, uint32_t job, uint32_t id);
static int prepare_get(peer_in *p, uint32_t job, uint32_t id, int read);

static void pin_on_drain(tsr__conn *c);

static const tsr__conn_cbs pin_cbs = {
    .on_frame = pin_on_frame,
    .on_close = pin_on_close,
    .on_drain = pin_on_drain,
};

void tsr__peer_on_connection(uv_stream_t *server, int status) {
    tsr__worker *w = server->data;
    if (status < 0) {
        tsr__log(&w->log, TSR_LOG_WARN, "peer accept failed: %s", uv_strerror(status));
        return;
    }
    peer_in *p = calloc(1, sizeof *p);
    tsr__conn *c = p ? tsr__conn_new(&w->loop, &pin_cbs, p, &w->log) : NULL;
    if (!c) {
        free(p);
        tsr__log(&w->log, TSR_LOG_ERROR, "no memory for a peer connection");
        return;
    }
    p->w = w;
    p->conn = c;
    /* Peers only ask; nothing they send carries a payload or needs a large header. */
    c->max_payload = 0;
    c->max_header = 64 * 1024;
    /* A peer that asks and never reads gets no more answers once 4 MiB wait for it, and one
     * that never says hello goes (wire.h). */
    tsr__conn_limit_output(c);
    tsr__conn_set_deadline(c, tsr__hello_timeout_ms, "no hello in time");
    p->next = w->pins;
    if (w->pins) w->pins->prev = p;
    w->pins = p;
    int rc = tsr__conn_accept(c, server);
    if (rc < 0) tsr__conn_close(c, uv_strerror(rc));
}

static void pin_on_close(tsr__conn *c, int status, const char *reason) {
    peer_in *p = c->owner;
    tsr__worker *w = p->w;
    if (status != 0 && status != TSR_ECLOSED)
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s dropped: %s", c->peer, reason);
    if (p->prev)
        p->prev->next = p->next;
    else
        w->pins = p->next;
    if (p->next) p->next->prev = p->prev;
    tsr__wbatch_free(&p->out);
    free(p->parked);
    free(p);
}

static void close_after_write(void *arg) {
    tsr__conn_close(arg, "refused");
}

/* A chunk being written to a peer: the write borrows the bytes, so it holds a reference. */
typedef struct send_ref {
    tsr__worker *w;
    tsr__buf *buf;
} send_ref;

static void send_done(void *arg) {
    send_ref *r = arg;
    tsr__chunkmem_unref(&r->w->mem, r->buf);
    free(r);
}

static void send_error_and_close(tsr__conn *c, const char *msg) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_error(&sb, &(tsr__msg_error){.msg = tsr__str_of(msg)});
    tsr__conn_send(c, &sb, NULL, 0, close_after_write, c);
    msgpack_sbuffer_destroy(&sb);
}

static void pin_hello(peer_in *p, const msgpack_object *hdr) {
    tsr__worker *w = p->w;
    tsr__conn *c = p->conn;
    tsr__msg m;
    char err[160];
    int64_t v = 0;
    /* The version first: a peer of another version gets a refusal that says so. */
    if (tsr__msg_peek_type(hdr) == TSR__MSG_hello &&
        (tsr__msg_hello_version(hdr, &v) != 0 || v != TSR_PROTOCOL_VERSION)) {
        char msg[96];
        if (tsr__msg_hello_version(hdr, &v) == 0)
            snprintf(msg, sizeof msg, "protocol version mismatch: got %lld, want %d", (long long)v,
                     TSR_PROTOCOL_VERSION);
        else
            snprintf(msg, sizeof msg, "protocol version mismatch: got none, want %d",
                     TSR_PROTOCOL_VERSION);
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: %s", c->peer, msg);
        send_error_and_close(c, msg);
        return;
    }
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0 || m.type != TSR__MSG_hello) {
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: first frame is not a hello", c->peer);
        tsr__conn_close(c, "first frame is not a hello");
        return;
    }
    if (!tsr__str_eq(m.u.hello.role, "peer")) {
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: hello without role \"peer\"", c->peer);
        send_error_and_close(c, "this is a worker's peer port: role must be \"peer\"");
        return;
    }
    /* A worker with a secret requires it on its peer port too, loopback or not: the answer to
     * the challenge this connection opened with (wire/auth.c). */
    if (tsr__auth_check_hello(c, w->opts->token, &m.u.hello) != 0) {
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: authentication failed", c->peer);
        send_error_and_close(c, "authentication failed: missing or wrong token");
        return;
    }
    p->greeted = 1;
    tsr__conn_clear_deadline(c);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_welcome wm = {.v = TSR_PROTOCOL_VERSION, .id = ++w->next_peer_id};
    tsr__auth_sign_welcome(c, w->opts->token, &wm, NULL);
    tsr__msg_pack_welcome(&sb, &wm);
    tsr__conn_send(c, &sb, NULL, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
}

static void pin_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    peer_in *p = c->owner;
    tsr__worker *w = p->w;
    (void)payload;
    (void)plen;
    if (!p->greeted) {
        pin_hello(p, hdr);
        return;
    }
    tsr__msg m;
    char err[160];
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0) {
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: %s", c->peer, err);
        tsr__conn_close(c, "malformed message");
        return;
    }
    if (m.type != TSR__MSG_get) {
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: unexpected message (want get)", c->peer);
        tsr__conn_close(c, "unexpected message");
        return;
    }
    uint32_t job = m.u.get.job, id = m.u.get.id;
    /* Only the job's owner (and the workers) hold its capability (docs/security.md). */
    if (w->has_ckey &&
        (!TSR__MSG_HAS(get, &m.u.get, cap) || tsr__capkey_check(&w->ckey, job, m.u.get.cap) != 0)) {
        char msg[96];
        snprintf(msg, sizeof msg, "no valid capability for job %u", job);
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: %s", c->peer, msg);
        uv_read_stop((uv_stream_t *)&c->tcp);                /* nothing more from it is acted on */
        if (p->out.head.data) tsr__wbatch_flush(c, &p->out); /* earlier replies first */
        tsr__wbatch_free(&p->out);
        send_error_and_close(c, msg);
        return;
    }
    if (p->nparked == 0 && serve_get(p, job, id) == SERVED) return;
    /* Replies keep request order: behind a parked get, the others wait too. Their write-backs
     * from the device are asked for at once, so that they overlap; their reads from disk only
     * when their turn comes, since each takes memory. */
    if (p->nparked) prepare_get(p, job, id, 0);
    if (TSR__GROW(p->parked, p->parked_cap, p->nparked + 1) != 0) {
        tsr__conn_close(c, "no memory for a queued get");
        return;
    }
    p->parked[p->nparked++] = (tsr__m_key){.job = job, .id = id};
}

/* Asks for the bytes of a chunk that are not in host memory: read back from disk (spill.c), or
 * written back from the device (a GPU worker's dirty copy). 1 if asked for (the get must wait),
 * 0 if its host bytes are current. */
static int prepare_get(peer_in *p, uint32_t job, uint32_t id, int read) {
    tsr__worker *w = p->w;
    const tsr__chunk *ch = tsr__store_get(&w->store, job, id);
    if (ch && !ch->buf) { /* on disk (spill.c): read back first */
        if (read && tsr__spill_fetch(w, job, id) != 0)
            tsr__conn_close(p->conn, "no memory to read a spilled chunk back");
        return 1;
    }
    if (!w->gpu || !ch || !tsr__devtier_stale(&w->dev, ch->buf)) return 0;
    if (tsr__gpu_writeback(w, ch->buf) != 0) tsr__conn_close(p->conn, "no memory for a write-back");
    return 1;
}

/* Answers one get: chunk or missing. A chunk whose bytes are on the device only (a GPU worker's
 * dirty copy) is not answered yet: its write-back is asked of the GPU thread, and the get waits
 * (PARKED) until tsr__peer_resume. */
static int serve_get(peer_in *p, uint32_t job, uint32_t id) {
    tsr__worker *w = p->w;
    tsr__conn *c = p->conn;
    /* Replies go out in request order: small ones join the turn's batch, and a large one
     * first sends the batch so far. */
    if (prepare_get(p, job, id, 1)) return p->conn->closing ? SERVED : PARKED;
    const tsr__chunk *ch = tsr__store_get(&w->store, job, id);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = 0;
    if (!ch) {
        tsr__msg_pack_missing(&sb, &(tsr__msg_missing){.job = job, .id = id});
        rc = tsr__wbatch_add(&p->out, &sb, NULL, 0);
    } else {
        tsr__m_i64_item shape[TSR_MAX_NDIM];
        for (int k = 0; k < ch->ndim; k++) shape[k] = (tsr__m_i64_item){.v = ch->shape[k]};
        tsr__msg_pack_chunk(&sb, &(tsr__msg_chunk){.job = job,
                                                   .id = id,
                                                   .dtype = ch->dtype,
                                                   .shape = {.n = ch->ndim, .v = shape},
                                                   .n = ch->buf->size});
        w->st.out_bytes += ch->buf->size;
        if (ch->buf->size <= BATCH_MAX_PAYLOAD) {
            rc = tsr__wbatch_add(&p->out, &sb, ch->buf->data, ch->buf->size);
        } else if ((rc = tsr__wbatch_flush(c, &p->out)) == 0) {
            /* The write borrows the bytes: hold a reference so a free meanwhile cannot pull
             * them from under it. */
            send_ref *r = malloc(sizeof *r);
            if (r) {
                r->w = w;
                r->buf = tsr__buf_ref(ch->buf);
                tsr__conn_send(c, &sb, r->buf->data, r->buf->size, send_done, r);
            } else {
                rc = -ENOMEM;
            }
        }
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0 && p->out.len > BATCH_FLUSH) rc = tsr__wbatch_flush(c, &p->out);
    if (rc < 0) tsr__conn_close(c, tsr_strerror(rc));
    return SERVED;
}

/* Serves p's parked gets in order, up to the first that must wait or until its output is
 * over the soft cap (the rest go when it drains: pin_on_drain). */
static void resume_peer(peer_in *p) {
    size_t k = 0;
    while (k < p->nparked && !p->conn->closing && !tsr__conn_over_soft(p->conn) &&
           serve_get(p, (uint32_t)p->parked[k].job, (uint32_t)p->parked[k].id) == SERVED)
        k++;
    if (k == 0) return; /* nothing answered (parked may be NULL: no memmove) */
    memmove(p->parked, p->parked + k, (p->nparked - k) * sizeof *p->parked);
    p->nparked -= k;
}

void tsr__peer_resume(tsr__worker *w) {
    for (peer_in *p = w->pins; p; p = p->next) resume_peer(p);
}

static void pin_on_drain(tsr__conn *c) {
    resume_peer(c->owner);
}

/* ---- Fetch side ------------------------------------------------------------------------------ */

static const char *fetch_on_chunk(tsr__fetch_req *r, const tsr__msg_chunk *ck, uint64_t plen,
                                  void **dest) {
    wfetch *f = r->user;
    tsr__worker *w = f->w;
    if (ck->dtype >= TSR_DTYPE_COUNT) return "bad dtype";
    if (ck->shape.n > TSR_MAX_NDIM) return "bad shape";
    uint64_t count = 1;
    f->ndim = (uint8_t)ck->shape.n;
    for (uint32_t k = 0; k < ck->shape.n; k++) {
        tsr__m_i64_item e;
        TSR__LIST_GET(&ck->shape, i64_item, k, &e);
        if (e.v < 0 || (e.v > 0 && count > UINT64_MAX / (uint64_t)e.v)) return "bad shape";
        f->shape[k] = e.v;
        count *= (uint64_t)e.v;
    }
    if (count > UINT64_MAX / 8 || count * tsr_dtype_size((tsr_dtype)ck->dtype) != plen)
        return "payload size does not match dtype and shape";
    f->dtype = (uint8_t)ck->dtype;
    if (plen > SIZE_MAX || !(f->buf = tsr__chunkmem_new(&w->mem, (size_t)plen)))
        return "no memory for a chunk";
    if (plen > 0) *dest = f->buf->data;
    return NULL;
}

/* A traced job's fetch arrived whole: keep it for the next done's tr. Without memory the trace
 * just lacks it. */
static void note_transfer(tsr__worker *w, const wfetch *f, const char *from) {
    if (TSR__GROW(w->xfers, w->xfer_cap, w->nxfer + 1) != 0) return;
    wxfer *x = &w->xfers[w->nxfer++];
    x->job = f->job;
    x->id = f->id;
    x->nbytes = f->buf->size;
    x->start = f->req.sent;
    x->end = tsr__wall_now();
    snprintf(x->from, sizeof x->from, "%s", from);
}

static void fetch_on_done(tsr__fetch_req *r, int status, const char *why) {
    wfetch *f = r->user;
    tsr__worker *w = f->w;
    if (status == TSR__FETCH_OK) {
        f->state = FETCH_READY;
        if (f->traced) note_transfer(w, f, r->from);
        tsr__worker_fetch_done(w, f);
    } else if (!w->stopping) {
        /* A half-received payload's buffer goes with the fetch. */
        tsr__worker_fetch_failed(w, f, why);
    }
}

static void fetch_pack_hello(void *user, tsr__conn *c, msgpack_sbuffer *sb) {
    tsr__worker_pack_peer_hello(user, c, sb);
}

static const tsr__fetch_cbs fetch_cbs = {
    .on_chunk = fetch_on_chunk,
    .on_done = fetch_on_done,
    .pack_hello = fetch_pack_hello,
};

void tsr__peer_init(tsr__worker *w) {
    tsr__fetch_pool_init(&w->fetch, &w->loop, &w->log, &fetch_cbs, w, TSR__PEER_MAX_INFLIGHT);
    w->fetch.secret = w->opts->token;
    w->fetch.max_header = 1 << 20;
    w->fetch.clock = tsr__wall_now;
}

int tsr__peer_fetch(tsr__worker *w, wfetch *f, const char *addr) {
    f->w = w;
    f->state = FETCH_WAITING;
    f->req.job = (uint32_t)f->job;
    f->req.id = (uint32_t)f->id;
    f->req.user = f;
    if (w->has_ckey) {
        memcpy(f->req.cap, tsr__capkey_cap(&w->ckey, f->req.job), sizeof f->req.cap);
        f->req.has_cap = 1;
    }
    /* Sent at the end of the loop turn (tsr__peer_flush), with the turn's other gets. */
    return tsr__fetch_get(&w->fetch, &f->req, addr);
}

void tsr__peer_flush(tsr__worker *w) {
    tsr__fetch_flush(&w->fetch);
    for (peer_in *p = w->pins; p; p = p->next) {
        if (!p->out.head.data) continue;
        int rc = p->conn->closing ? 0 : tsr__wbatch_flush(p->conn, &p->out);
        tsr__wbatch_free(&p->out);
        if (rc < 0) tsr__conn_close(p->conn, tsr_strerror(rc));
    }
}

void tsr__peer_close_all(tsr__worker *w) {
    for (peer_in *p = w->pins; p; p = p->next) tsr__conn_close(p->conn, "worker stopping");
    tsr__fetch_close_all(&w->fetch);
}
