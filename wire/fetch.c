/* The chunk-fetch pool (fetch.h): one connection per peer address, a queue of gets not yet
 * written and a ring of gets outstanding, replies matched to the ring's head in order. It owns no
 * request: owners embed tsr__fetch_req, and a cancelled one leaves only its (job, id) behind in
 * the ring, so that its reply is recognised and dropped. It must not call back into an owner
 * for a request the owner cancelled. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/auth.h"
#include "wire/fetch.h"

typedef struct slot {
    tsr__fetch_req *r; /* NULL once cancelled */
    uint32_t job, id;
} slot;

struct tsr__fetch_peer {
    tsr__fetch_pool *pool;
    tsr__conn *conn; /* NULL once closed */
    char addr[80];
    int welcomed;
    int receiving; /* the ring's head is receiving its payload into the owner's buffer */
    tsr__fetch_req *qhead, *qtail;
    slot ring[TSR__FETCH_MAX_INFLIGHT];
    int ihead, ninflight;
    tsr__fetch_peer *next;
};

static int fp_on_header(tsr__conn *c, const msgpack_object *hdr, uint64_t plen, void **dest);
static void fp_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen);
static void fp_on_close(tsr__conn *c, int status, const char *reason);
static void fp_on_connect(tsr__conn *c, int status);

static const tsr__conn_cbs fp_cbs = {
    .on_header = fp_on_header,
    .on_frame = fp_on_frame,
    .on_close = fp_on_close,
    .on_connect = fp_on_connect,
};

void tsr__fetch_pool_init(tsr__fetch_pool *p, uv_loop_t *loop, const tsr__logger *log,
                          const tsr__fetch_cbs *cbs, void *user, int max_inflight) {
    memset(p, 0, sizeof *p);
    p->loop = loop;
    p->log = log;
    p->cbs = cbs;
    p->user = user;
    p->max_inflight = max_inflight < 1                         ? 1
                      : max_inflight > TSR__FETCH_MAX_INFLIGHT ? TSR__FETCH_MAX_INFLIGHT
                                                               : max_inflight;
}

/* ---- requests ---- */

int tsr__fetch_get(tsr__fetch_pool *pool, tsr__fetch_req *r, const char *addr) {
    tsr__fetch_peer *p = pool->peers;
    /* A connection that is closing fails what it holds; new requests get a fresh one. */
    while (p && (!p->conn || p->conn->closing || strcmp(p->addr, addr) != 0)) p = p->next;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p) return -ENOMEM;
        p->pool = pool;
        snprintf(p->addr, sizeof p->addr, "%s", addr);
        p->conn = tsr__conn_new(pool->loop, &fp_cbs, p, pool->log);
        if (!p->conn) {
            free(p);
            return -ENOMEM;
        }
        if (pool->max_header) p->conn->max_header = pool->max_header;
        p->conn->auth.secret = pool->secret;
        p->next = pool->peers;
        pool->peers = p;
        int rc = tsr__conn_connect(p->conn, addr);
        if (rc < 0) {
            /* Queue the request anyway: on_close ends it like any other on this peer. */
            tsr__log(pool->log, TSR_LOG_WARN, "cannot connect to peer %s: %s", addr,
                     tsr_strerror(rc));
            tsr__conn_close(p->conn, tsr_strerror(rc));
        }
    }
    r->peer = p;
    r->from = p->addr;
    r->sent_slot = -1;
    r->qnext = NULL;
    if (p->qtail)
        p->qtail->qnext = r;
    else
        p->qhead = r;
    p->qtail = r;
    return 0;
}

void tsr__fetch_cancel(tsr__fetch_req *r) {
    tsr__fetch_peer *p = r->peer;
    if (!p) return;
    if (r->sent_slot >= 0) {
        /* The payload of the head may be arriving in the owner's buffer, which goes away. */
        if (p->receiving && r->sent_slot == p->ihead && p->conn) {
            tsr__conn_drop_payload(p->conn);
            p->receiving = 0;
        }
        p->ring[r->sent_slot].r = NULL;
    } else {
        tsr__fetch_req **pp = &p->qhead, *prev = NULL;
        while (*pp && *pp != r) {
            prev = *pp;
            pp = &(*pp)->qnext;
        }
        if (*pp) {
            *pp = r->qnext;
            if (p->qtail == r) p->qtail = prev;
        }
    }
    r->peer = NULL;
    r->qnext = NULL;
    r->sent_slot = -1;
}

/* Writes what is queued on p, as far as the in-flight limit allows, in one write. */
static void pump(tsr__fetch_peer *p) {
    tsr__fetch_pool *pool = p->pool;
    tsr__wbatch b;
    memset(&b, 0, sizeof b);
    while (p->welcomed && p->conn && !p->conn->closing && p->qhead &&
           p->ninflight < pool->max_inflight) {
        tsr__fetch_req *r = p->qhead;
        p->qhead = r->qnext;
        if (!p->qhead) p->qtail = NULL;
        r->qnext = NULL;
        int k = (p->ihead + p->ninflight) % TSR__FETCH_MAX_INFLIGHT;
        p->ring[k] = (slot){r, r->job, r->id};
        p->ninflight++;
        r->sent_slot = k;
        r->sent = pool->clock ? pool->clock() : 0;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        tsr__msg_get g = {.job = r->job, .id = r->id};
        if (r->has_cap) {
            g.cap = (tsr__str){(const char *)r->cap, sizeof r->cap};
            TSR__MSG_SET(get, &g, cap);
        }
        tsr__msg_pack_get(&sb, &g);
        int rc = tsr__wbatch_add(&b, &sb, NULL, 0);
        msgpack_sbuffer_destroy(&sb);
        if (rc < 0) {
            /* r counts as requested: closing ends it with the rest. */
            tsr__wbatch_free(&b);
            tsr__conn_close(p->conn, "no memory for a get");
            return;
        }
    }
    int rc = p->conn && !p->conn->closing ? tsr__wbatch_flush(p->conn, &b) : 0;
    tsr__wbatch_free(&b);
    if (rc < 0) {
        tsr__log(pool->log, TSR_LOG_WARN, "get to %s failed: %s", p->addr, tsr_strerror(rc));
        tsr__conn_close(p->conn, "send failed");
    }
}

void tsr__fetch_flush(tsr__fetch_pool *pool) {
    for (tsr__fetch_peer *p = pool->peers; p; p = p->next)
        if (p->qhead) pump(p);
}

void tsr__fetch_close_silent(tsr__fetch_pool *pool, uint64_t timeout_ms, int stalled) {
    for (tsr__fetch_peer *p = pool->peers; p; p = p->next) {
        if (!p->conn || p->conn->closing || (p->ninflight == 0 && !p->qhead)) continue;
        if (stalled) p->conn->last_read = uv_now(pool->loop);
        uint64_t quiet = tsr__conn_silent_ms(p->conn, 1);
        if (quiet <= timeout_ms) continue;
        char why[96];
        tsr__fmt(why, sizeof why, "peer sent nothing for %.1f s", (double)quiet / 1e3);
        tsr__conn_close(p->conn, why); /* on_close unlinks it later, from the loop */
    }
}

void tsr__fetch_close_addr(tsr__fetch_pool *pool, const char *addr, const char *why) {
    for (tsr__fetch_peer *p = pool->peers; p; p = p->next)
        if (p->conn && !strcmp(p->addr, addr)) tsr__conn_close(p->conn, why);
}

void tsr__fetch_close_all(tsr__fetch_pool *pool) {
    pool->closing = 1;
    for (tsr__fetch_peer *p = pool->peers; p; p = p->next)
        if (p->conn) tsr__conn_close(p->conn, "closing");
}

void tsr__fetch_pool_free(tsr__fetch_pool *pool) {
    while (pool->peers) {
        tsr__fetch_peer *p = pool->peers;
        pool->peers = p->next;
        if (p->conn) p->conn->owner = NULL; /* never closed: nothing will call back */
        free(p);
    }
}

/* ---- the connection ---- */

static void fp_on_connect(tsr__conn *c, int status) {
    tsr__fetch_peer *p = c->owner;
    if (status < 0) return; /* on_close follows */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    p->pool->cbs->pack_hello(p->pool->user, c, &sb);
    tsr__conn_send(c, &sb, NULL, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
}

/* Takes the ring's head (NULL r when it was cancelled). */
static slot ring_pop(tsr__fetch_peer *p) {
    slot s = p->ring[p->ihead];
    p->ring[p->ihead].r = NULL;
    p->ihead = (p->ihead + 1) % TSR__FETCH_MAX_INFLIGHT;
    p->ninflight--;
    if (s.r) {
        s.r->peer = NULL;
        s.r->sent_slot = -1;
    }
    return s;
}

static int head_is(const tsr__fetch_peer *p, uint32_t job, uint32_t id) {
    return p->ninflight > 0 && p->ring[p->ihead].job == job && p->ring[p->ihead].id == id;
}

static int fp_on_header(tsr__conn *c, const msgpack_object *hdr, uint64_t plen, void **dest) {
    tsr__fetch_peer *p = c->owner;
    tsr__msg m;
    char err[160];
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0 || m.type != TSR__MSG_chunk) {
        if (plen == 0) return 0; /* judged in on_frame */
        tsr__log(p->pool->log, TSR_LOG_WARN, "peer %s: unexpected payload", p->addr);
        tsr__conn_close(c, "unexpected payload");
        return 0;
    }
    if (!p->welcomed || !head_is(p, m.u.chunk.job, m.u.chunk.id)) {
        tsr__log(p->pool->log, TSR_LOG_WARN, "peer %s: chunk reply out of order", p->addr);
        tsr__conn_close(c, "chunk reply out of order");
        return 0;
    }
    tsr__fetch_req *r = p->ring[p->ihead].r;
    if (!r) return 0; /* cancelled: the payload goes to a scratch buffer and is dropped */
    void *d = NULL;
    const char *why = p->pool->cbs->on_chunk(r, &m.u.chunk, plen, &d);
    if (why) {
        tsr__log(p->pool->log, TSR_LOG_WARN, "peer %s: %s", p->addr, why);
        tsr__conn_close(c, why);
        return 0;
    }
    if (plen > 0) {
        *dest = d;
        p->receiving = d != NULL;
    }
    return 0;
}

static void fp_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    tsr__fetch_peer *p = c->owner;
    tsr__fetch_pool *pool = p->pool;
    (void)payload;
    (void)plen;
    p->receiving = 0;
    tsr__msg m;
    char err[160];
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0) {
        tsr__log(pool->log, TSR_LOG_WARN, "peer %s: %s", p->addr, err);
        tsr__conn_close(c, "malformed message");
        return;
    }
    if (!p->welcomed) {
        if (m.type == TSR__MSG_welcome) {
            /* Mutual: a peer that cannot prove the secret gets no gets (docs/security.md). */
            if (tsr__auth_check_welcome(c, &m.u.welcome, NULL, NULL) != 0) {
                tsr__log(pool->log, TSR_LOG_WARN, "peer %s does not prove it holds the token",
                         p->addr);
                tsr__conn_close(c, "the peer does not prove it holds the token");
                return;
            }
            p->welcomed = 1;
            pump(p);
            return;
        }
        char msg[200] = "?", why[240];
        if (m.type == TSR__MSG_error) tsr__str_copy(msg, sizeof msg, m.u.error.msg);
        tsr__log(pool->log, TSR_LOG_WARN, "peer %s refused us: %s", p->addr, msg);
        snprintf(why, sizeof why, "refused: %s", msg);
        tsr__conn_close(c, why);
        return;
    }
    if (m.type == TSR__MSG_chunk) {
        slot s = ring_pop(p); /* on_header checked it is the head */
        if (s.r) pool->cbs->on_done(s.r, TSR__FETCH_OK, NULL);
    } else if (m.type == TSR__MSG_missing && head_is(p, m.u.missing.job, m.u.missing.id)) {
        slot s = ring_pop(p);
        char why[160];
        snprintf(why, sizeof why, "%s does not hold it", p->addr);
        if (s.r) pool->cbs->on_done(s.r, TSR__FETCH_MISSING, why);
    } else {
        tsr__log(pool->log, TSR_LOG_WARN, "peer %s: unexpected %s", p->addr, tsr__msg_name(m.type));
        tsr__conn_close(c, "unexpected message");
    }
}

/* The next request still asked of a closed peer (the ring first, then the queue), or NULL. Taken
 * one at a time, so that a cancel from an on_done callback is seen. */
static tsr__fetch_req *take_one(tsr__fetch_peer *p) {
    while (p->ninflight) {
        slot s = ring_pop(p);
        if (s.r) return s.r;
    }
    tsr__fetch_req *r = p->qhead;
    if (r) {
        p->qhead = r->qnext;
        if (!p->qhead) p->qtail = NULL;
        r->qnext = NULL;
        r->peer = NULL;
    }
    return r;
}

static void fp_on_close(tsr__conn *c, int status, const char *reason) {
    tsr__fetch_peer *p = c->owner;
    (void)status;
    if (!p) return; /* the pool was freed first */
    tsr__fetch_pool *pool = p->pool;
    p->conn = NULL;
    /* Unlinked first, so that a retry from on_done opens a fresh connection. */
    for (tsr__fetch_peer **pp = &pool->peers; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    if ((p->ninflight || p->qhead) && !pool->closing)
        tsr__log(pool->log, TSR_LOG_WARN, "connection to peer %s lost: %s", p->addr, reason);
    char why[240];
    snprintf(why, sizeof why, "connection to %s failed: %s", p->addr, reason);
    tsr__fetch_req *r;
    while ((r = take_one(p))) {
        r->from = p->addr;
        pool->cbs->on_done(r, TSR__FETCH_ERROR, why);
    }
    free(p);
}

/* ---- batched writes ---- */

int tsr__wbatch_add(tsr__wbatch *b, msgpack_sbuffer *hdr, const void *payload, size_t plen) {
    if (!b->head.data) {
        /* The first frame's header is the one tsr__conn_send frames itself. */
        if (tsr__grow((void **)&b->rest, &b->cap, b->len + plen + 1, 1) != 0) return -ENOMEM;
        b->head = *hdr;
        msgpack_sbuffer_init(hdr);
    } else {
        if (tsr__grow((void **)&b->rest, &b->cap, b->len + 4 + hdr->size + plen, 1) != 0)
            return -ENOMEM;
        uint32_t n = (uint32_t)hdr->size;
        unsigned char *q = (unsigned char *)b->rest + b->len;
        q[0] = (unsigned char)(n >> 24);
        q[1] = (unsigned char)(n >> 16);
        q[2] = (unsigned char)(n >> 8);
        q[3] = (unsigned char)n;
        memcpy(q + 4, hdr->data, hdr->size);
        b->len += 4 + hdr->size;
        msgpack_sbuffer_clear(hdr);
    }
    if (plen) memcpy(b->rest + b->len, payload, plen);
    b->len += plen;
    return 0;
}

int tsr__wbatch_flush(tsr__conn *c, tsr__wbatch *b) {
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

void tsr__wbatch_free(tsr__wbatch *b) {
    msgpack_sbuffer_destroy(&b->head);
    free(b->rest);
    memset(b, 0, sizeof *b);
}
