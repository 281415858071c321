/* Chunks between workers: the peer server (answers get with the stored chunk's bytes, or
 * missing) and the fetch side (one connection per peer address, at most TSR__PEER_MAX_INFLIGHT
 * gets outstanding on it, payloads received straight into fresh chunk buffers). It knows
 * nothing of tasks: fetch results go back to task.c.
 *
 * Writes are batched per loop turn: gets wait for the end of the turn, and replies with small
 * payloads are copied into one buffer per connection, so a turn costs one write per connection
 * instead of one per chunk (each write being a TCP segment and a wake-up on the other side).
 * Large payloads are never copied: they go out as their own write, after the batch so far. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker.h"

/* Replies carrying at most this many payload bytes are copied into the turn's batch. */
#define BATCH_MAX_PAYLOAD (16 * 1024)

/* ---- Batched writes -------------------------------------------------------------------------- */

/* Appends a frame (header hdr, left empty, and plen payload bytes). 0 or -ENOMEM. */
static int batch_add(wbatch *b, msgpack_sbuffer *hdr, const void *payload, size_t plen) {
    if (!b->head.data) {
        /* The first frame's header is the one tsr__conn_send frames itself. */
        if (tsr__grow((void **)&b->rest, &b->cap, b->len + plen + 1, 1) != 0) return -ENOMEM;
        b->head = *hdr;
        msgpack_sbuffer_init(hdr);
    } else {
        if (tsr__grow((void **)&b->rest, &b->cap, b->len + 4 + hdr->size + plen, 1) != 0)
            return -ENOMEM;
        uint32_t n = (uint32_t)hdr->size;
        unsigned char *p = (unsigned char *)b->rest + b->len;
        p[0] = (unsigned char)(n >> 24);
        p[1] = (unsigned char)(n >> 16);
        p[2] = (unsigned char)(n >> 8);
        p[3] = (unsigned char)n;
        memcpy(p + 4, hdr->data, hdr->size);
        b->len += 4 + hdr->size;
        msgpack_sbuffer_clear(hdr);
    }
    if (plen) memcpy(b->rest + b->len, payload, plen);
    b->len += plen;
    return 0;
}

/* Writes the batch: the first header as the frame's header and everything after it as its
 * "payload" (the bytes on the stream are the same as frame by frame). */
static int batch_flush(tsr__conn *c, wbatch *b) {
    if (!b->head.data) return 0;
    char *rest = b->rest;
    size_t len = b->len;
    msgpack_sbuffer head = b->head;
    msgpack_sbuffer_init(&b->head);
    b->rest = NULL;
    b->len = b->cap = 0;
    int rc = tsr__conn_send(c, &head, rest, len, free, rest);
    msgpack_sbuffer_destroy(&head);
    return rc;
}

static void batch_free(wbatch *b) {
    msgpack_sbuffer_destroy(&b->head);
    free(b->rest);
    memset(b, 0, sizeof *b);
}

/* ---- Server side ----------------------------------------------------------------------------- */

static void pin_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen);
static void pin_on_close(tsr__conn *c, int status, const char *reason);

static const tsr__conn_cbs pin_cbs = {
    .on_frame = pin_on_frame,
    .on_close = pin_on_close,
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
    batch_free(&p->out);
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
    /* Off loopback, peers prove they belong to the cluster as the scheduler's clients do. */
    const char *token = w->opts->token;
    const char *lh = w->opts->listen_host ? w->opts->listen_host : "127.0.0.1";
    if (token && token[0] && !tsr__is_loopback(lh)) {
        if (!TSR__MSG_HAS(hello, &m.u.hello, token) || !tsr__str_eq(m.u.hello.token, token)) {
            tsr__log(&w->log, TSR_LOG_WARN, "peer %s: bad or missing token", c->peer);
            send_error_and_close(c, "authentication failed: bad or missing token");
            return;
        }
    }
    p->greeted = 1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_welcome(&sb,
                          &(tsr__msg_welcome){.v = TSR_PROTOCOL_VERSION, .id = ++w->next_peer_id});
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
    /* Replies go out in request order: small ones join the turn's batch, and a large one
     * first sends the batch so far. */
    const tsr__chunk *ch = tsr__store_get(&w->store, job, id);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = 0;
    if (!ch) {
        tsr__msg_pack_missing(&sb, &(tsr__msg_missing){.job = job, .id = id});
        rc = batch_add(&p->out, &sb, NULL, 0);
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
            rc = batch_add(&p->out, &sb, ch->buf->data, ch->buf->size);
        } else if ((rc = batch_flush(c, &p->out)) == 0) {
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
    if (rc < 0) tsr__conn_close(c, tsr_strerror(rc));
}

/* ---- Fetch side ------------------------------------------------------------------------------ */

static int pout_on_header(tsr__conn *c, const msgpack_object *hdr, uint64_t plen, void **dest);
static void pout_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen);
static void pout_on_close(tsr__conn *c, int status, const char *reason);
static void pout_on_connect(tsr__conn *c, int status);

static const tsr__conn_cbs pout_cbs = {
    .on_header = pout_on_header,
    .on_frame = pout_on_frame,
    .on_close = pout_on_close,
    .on_connect = pout_on_connect,
};

/* Requests what is queued, as far as the in-flight limit allows, in one write. */
static void pump(peer_out *p) {
    tsr__worker *w = p->w;
    wbatch b;
    memset(&b, 0, sizeof b);
    while (p->welcomed && p->conn && !p->conn->closing && p->qhead &&
           p->ninflight < TSR__PEER_MAX_INFLIGHT) {
        wfetch *f = p->qhead;
        p->qhead = f->qnext;
        if (!p->qhead) p->qtail = NULL;
        f->qnext = NULL;
        f->state = FETCH_SENT;
        if (f->traced) f->sent = tsr__wall_now();
        p->inflight[(p->ihead + p->ninflight) % TSR__PEER_MAX_INFLIGHT] = f;
        p->ninflight++;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        tsr__msg_pack_get(&sb, &(tsr__msg_get){.job = (uint32_t)f->job, .id = (uint32_t)f->id});
        int rc = batch_add(&b, &sb, NULL, 0);
        msgpack_sbuffer_destroy(&sb);
        if (rc < 0) {
            /* f counts as requested: closing fails it with the rest. */
            batch_free(&b);
            tsr__conn_close(p->conn, "no memory for a get");
            return;
        }
    }
    int rc = p->conn && !p->conn->closing ? batch_flush(p->conn, &b) : 0;
    batch_free(&b);
    if (rc < 0) {
        /* on_close fails everything queued and in flight. */
        tsr__log(&w->log, TSR_LOG_WARN, "get to %s failed: %s", p->addr, tsr_strerror(rc));
        tsr__conn_close(p->conn, "send failed");
    }
}

void tsr__peer_flush(tsr__worker *w) {
    for (peer_out *p = w->peers; p; p = p->next)
        if (p->qhead) pump(p);
    for (peer_in *p = w->pins; p; p = p->next) {
        if (!p->out.head.data) continue;
        int rc = p->conn->closing ? 0 : batch_flush(p->conn, &p->out);
        batch_free(&p->out);
        if (rc < 0) tsr__conn_close(p->conn, tsr_strerror(rc));
    }
}

int tsr__peer_fetch(tsr__worker *w, wfetch *f, const char *addr) {
    peer_out *p = w->peers;
    /* A connection that is closing will fail what it holds; new requests get a fresh one. */
    while (p && (!p->conn || p->conn->closing || strcmp(p->addr, addr) != 0)) p = p->next;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p) return -ENOMEM;
        p->w = w;
        snprintf(p->addr, sizeof p->addr, "%s", addr);
        p->conn = tsr__conn_new(&w->loop, &pout_cbs, p, &w->log);
        if (!p->conn) {
            free(p);
            return -ENOMEM;
        }
        p->conn->max_header = 1 << 20;
        p->next = w->peers;
        w->peers = p;
        int rc = tsr__conn_connect(p->conn, addr);
        if (rc < 0) {
            /* Queue the fetch anyway: on_close reports the failure to it like to any other. */
            tsr__log(&w->log, TSR_LOG_WARN, "cannot connect to peer %s: %s", addr,
                     tsr_strerror(rc));
            tsr__conn_close(p->conn, tsr_strerror(rc));
        }
    }
    f->peer = p;
    f->state = FETCH_WAITING;
    f->qnext = NULL;
    if (p->qtail)
        p->qtail->qnext = f;
    else
        p->qhead = f;
    p->qtail = f;
    /* Sent at the end of the loop turn (tsr__peer_flush), with the turn's other gets. */
    return 0;
}

static void pout_on_connect(tsr__conn *c, int status) {
    peer_out *p = c->owner;
    if (status < 0) return; /* on_close follows */
    p->connected = 1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__worker_pack_peer_hello(p->w, &sb);
    tsr__conn_send(c, &sb, NULL, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
}

/* A traced job's fetch arrived whole: keep it for the next done's tr. Without memory the trace
 * just lacks it. */
static void note_transfer(tsr__worker *w, const wfetch *f, const char *from) {
    if (TSR__GROW(w->xfers, w->xfer_cap, w->nxfer + 1) != 0) return;
    wxfer *x = &w->xfers[w->nxfer++];
    x->job = f->job;
    x->id = f->id;
    x->nbytes = f->buf->size;
    x->start = f->sent;
    x->end = tsr__wall_now();
    snprintf(x->from, sizeof x->from, "%s", from);
}

static wfetch *inflight_head(peer_out *p) {
    return p->ninflight ? p->inflight[p->ihead] : NULL;
}

static wfetch *inflight_pop(peer_out *p) {
    wfetch *f = p->inflight[p->ihead];
    p->inflight[p->ihead] = NULL;
    p->ihead = (p->ihead + 1) % TSR__PEER_MAX_INFLIGHT;
    p->ninflight--;
    return f;
}

/* Does the reply name the request at the head of the queue? */
static int reply_matches(uint32_t job, uint32_t id, const wfetch *f) {
    return f && job == f->job && id == f->id;
}

static int pout_on_header(tsr__conn *c, const msgpack_object *hdr, uint64_t plen, void **dest) {
    peer_out *p = c->owner;
    tsr__worker *w = p->w;
    tsr__msg m;
    char err[160];
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0 || m.type != TSR__MSG_chunk) {
        if (plen == 0) return 0; /* judged in on_frame */
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: unexpected payload", c->peer);
        tsr__conn_close(c, "unexpected payload");
        return 0;
    }
    const tsr__msg_chunk *ck = &m.u.chunk;
    wfetch *f = inflight_head(p);
    const char *why = NULL;
    if (!p->welcomed || !reply_matches(ck->job, ck->id, f)) why = "chunk reply out of order";
    if (!why && ck->dtype != TSR_FLOAT64 && ck->dtype != TSR_FLOAT32) why = "bad dtype";
    if (!why && ck->shape.n > TSR_MAX_NDIM) why = "bad shape";
    uint64_t count = 1;
    if (!why) {
        f->ndim = (uint8_t)ck->shape.n;
        for (uint32_t k = 0; k < ck->shape.n; k++) {
            tsr__m_i64_item e;
            TSR__LIST_GET(&ck->shape, i64_item, k, &e);
            if (e.v < 0 || (e.v > 0 && count > UINT64_MAX / (uint64_t)e.v)) {
                why = "bad shape";
                break;
            }
            f->shape[k] = e.v;
            count *= (uint64_t)e.v;
        }
    }
    if (!why && (count > UINT64_MAX / 8 || count * tsr_dtype_size((tsr_dtype)ck->dtype) != plen))
        why = "payload size does not match dtype and shape";
    if (why) {
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: %s", c->peer, why);
        tsr__conn_close(c, why);
        return 0;
    }
    f->dtype = (uint8_t)ck->dtype;
    if (plen > SIZE_MAX || !(f->buf = tsr__chunkmem_new(&w->mem, (size_t)plen))) {
        tsr__conn_close(c, "no memory for a chunk");
        return 0;
    }
    if (plen > 0) *dest = f->buf->data;
    return 0;
}

static void pout_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    peer_out *p = c->owner;
    tsr__worker *w = p->w;
    (void)payload;
    (void)plen;
    tsr__msg m;
    char err[160];
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0) {
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: %s", p->addr, err);
        tsr__conn_close(c, "malformed message");
        return;
    }
    if (!p->welcomed) {
        if (m.type == TSR__MSG_welcome) {
            p->welcomed = 1;
            pump(p);
            return;
        }
        char msg[200] = "?";
        if (m.type == TSR__MSG_error) tsr__str_copy(msg, sizeof msg, m.u.error.msg);
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s refused us: %s", p->addr, msg);
        tsr__conn_close(c, "refused");
        return;
    }
    if (m.type == TSR__MSG_chunk) {
        wfetch *f = inflight_pop(p); /* on_header checked it is the head and made f->buf */
        f->state = FETCH_READY;
        f->peer = NULL;
        if (f->traced) note_transfer(w, f, p->addr);
        tsr__worker_fetch_done(w, f);
    } else if (m.type == TSR__MSG_missing &&
               reply_matches(m.u.missing.job, m.u.missing.id, inflight_head(p))) {
        wfetch *f = inflight_pop(p);
        f->peer = NULL;
        char why[160];
        snprintf(why, sizeof why, "%s does not hold it", p->addr);
        tsr__worker_fetch_failed(w, f, why);
    } else {
        tsr__log(&w->log, TSR_LOG_WARN, "peer %s: unexpected %s", p->addr, tsr__msg_name(m.type));
        tsr__conn_close(c, "unexpected message");
        return;
    }
    /* The freed in-flight slots are refilled at the end of the loop turn. */
}

static void pout_on_close(tsr__conn *c, int status, const char *reason) {
    peer_out *p = c->owner;
    tsr__worker *w = p->w;
    p->conn = NULL;
    for (peer_out **pp = &w->peers; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    /* Everything still asked of this peer fails (after unlinking, so a retry made from a
     * failure callback opens a fresh connection). */
    wfetch *list = NULL, **tail = &list;
    while (p->ninflight) {
        *tail = inflight_pop(p);
        tail = &(*tail)->qnext;
    }
    *tail = p->qhead;
    p->qhead = p->qtail = NULL;
    if (list && !w->stopping)
        tsr__log(&w->log, TSR_LOG_WARN, "connection to peer %s lost: %s", p->addr, reason);
    char why[200];
    (void)status;
    snprintf(why, sizeof why, "connection to %s failed: %s", p->addr, reason);
    while (list) {
        wfetch *f = list;
        list = f->qnext;
        f->qnext = NULL;
        f->peer = NULL;
        /* A half-received payload's buffer goes with the fetch. */
        if (!w->stopping) tsr__worker_fetch_failed(w, f, why);
    }
    free(p);
}

void tsr__peer_close_all(tsr__worker *w) {
    for (peer_in *p = w->pins; p; p = p->next) tsr__conn_close(p->conn, "worker stopping");
    for (peer_out *p = w->peers; p; p = p->next)
        if (p->conn) tsr__conn_close(p->conn, "worker stopping");
}
