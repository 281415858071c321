/* One peer of the scheduler (client, worker or monitor): accept, hello, dispatch of frames to
 * the state machine, close. Callbacks in lifecycle order. Peer input is checked here and in
 * proto.c; anything malformed closes this connection only, with a logged reason. */
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"
#include "wire/wire.h"

#define HELLO_MAX_HEADER (64u * 1024)          /* before hello: small frames only */
#define CLIENT_MAX_PAYLOAD ((uint64_t)4 << 30) /* a submitted graph */
#define MSG_MAX 1024

static int on_header(tsr__conn *c, const msgpack_object *hdr, uint64_t plen, void **dest);
static void on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen);
static void on_close(tsr__conn *c, int status, const char *reason);

static const tsr__conn_cbs peer_cbs = {
    .on_header = on_header,
    .on_frame = on_frame,
    .on_close = on_close,
};

static const char *role_name(tsr__role r) {
    switch (r) {
    case TSR__ROLE_CLIENT:
        return "client";
    case TSR__ROLE_WORKER:
        return "worker";
    case TSR__ROLE_MONITOR:
        return "monitor";
    default:
        return "peer";
    }
}

/* ---- accept ---- */

void tsr__server_on_connection(uv_stream_t *listener, int status) {
    tsr__server *srv = listener->data;
    if (status < 0) {
        tsr__log(&srv->log, TSR_LOG_WARN, "accept: %s", uv_strerror(status));
        return;
    }
    if (srv->stopping) return;
    tsr__peer *p = calloc(1, sizeof *p);
    if (!p || TSR__GROW(srv->peers, srv->peercap, srv->npeers + 1) != 0) {
        free(p);
        tsr__log(&srv->log, TSR_LOG_ERROR, "accept: out of memory");
        return;
    }
    p->srv = srv;
    p->wid = TSR__NONE;
    p->conn = tsr__conn_new(&srv->loop, &peer_cbs, p, &srv->log);
    if (!p->conn) {
        free(p);
        return;
    }
    p->conn->max_header = HELLO_MAX_HEADER;
    p->conn->max_payload = 0;
    p->id = (uint32_t)srv->npeers;
    srv->peers[srv->npeers++] = p;
    srv->nopen++;
    int rc = tsr__conn_accept(p->conn, listener);
    if (rc) {
        tsr__log(&srv->log, TSR_LOG_WARN, "accept: %s", uv_strerror(rc));
        tsr__conn_close(p->conn, "accept failed");
        return;
    }
    tsr__log(&srv->log, TSR_LOG_DEBUG, "connection %u from %s", p->id, p->conn->peer);
}

/* ---- sending ---- */

static void on_sent(void *arg) {
    tsr__peer *p = arg;
    if (p->close_when_drained && p->conn->queued_bytes == 0)
        tsr__conn_close(p->conn, "closed by the scheduler");
}

void tsr__peer_send(tsr__peer *p, msgpack_sbuffer *b) {
    int rc = tsr__conn_send(p->conn, b, NULL, 0, on_sent, p);
    if (rc && rc != TSR_ECLOSED) {
        tsr__log(&p->srv->log, TSR_LOG_WARN, "%s %s: send failed: %s", role_name(p->role), p->name,
                 tsr_strerror(rc));
        tsr__conn_close(p->conn, "send failed");
    }
}

void tsr__peer_close_soon(tsr__peer *p, const char *reason) {
    if (p->conn->closing) return;
    if (reason)
        tsr__log(&p->srv->log, TSR_LOG_INFO, "%s %s (%s): closing: %s", role_name(p->role), p->name,
                 p->conn->peer, reason);
    p->close_when_drained = 1;
    uv_read_stop((uv_stream_t *)&p->conn->tcp); /* nothing more from it is acted on */
    if (p->conn->queued_bytes == 0) tsr__conn_close(p->conn, reason);
}

static void send_error_and_close(tsr__peer *p, const char *msg) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tsr__proto_error(&b, msg);
    tsr__peer_send(p, &b);
    msgpack_sbuffer_destroy(&b);
    tsr__peer_close_soon(p, msg);
}

/* A protocol violation: log why and drop the connection (queued replies are not waited for). */
static void drop(tsr__peer *p, const char *why) {
    tsr__log(&p->srv->log, TSR_LOG_WARN, "%s %s (%s): %s; closing", role_name(p->role),
             p->name[0] ? p->name : "?", p->conn->peer, why);
    tsr__conn_close(p->conn, why);
}

/* ---- hello ---- */

static int token_eq(const char *a, const char *b) {
    /* Constant time in the length of the expected token. */
    size_t na = strlen(a), nb = strlen(b);
    unsigned char d = (unsigned char)(na != nb);
    for (size_t i = 0; i < nb; i++) d |= (unsigned char)(b[i] ^ (i < na ? a[i] : 0));
    return d == 0;
}

static void handle_hello(tsr__peer *p, const msgpack_object *hdr) {
    tsr__server *srv = p->srv;
    tsr__hello h;
    char err[160], msg[200];
    int rc = tsr__proto_hello(hdr, &h, err, sizeof err);
    if (rc == TSR_EVERSION) {
        tsr__fmt(msg, sizeof msg, "protocol version mismatch: got %lld, want %d", (long long)h.v,
                 TSR_PROTOCOL_VERSION);
        send_error_and_close(p, msg);
        return;
    }
    if (rc) {
        drop(p, err);
        return;
    }
    snprintf(p->name, sizeof p->name, "%s", h.name[0] ? h.name : p->conn->peer);
    if (srv->token && (!h.has_token || !token_eq(h.token, srv->token))) {
        send_error_and_close(p, "authentication failed: missing or wrong token");
        return;
    }
    p->role = h.role;
    p->conn->max_header = h.role == TSR__ROLE_MONITOR ? HELLO_MAX_HEADER : TSR_WIRE_MAX_HEADER;
    p->conn->max_payload = h.role == TSR__ROLE_CLIENT ? CLIENT_MAX_PAYLOAD : 0;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tsr__proto_welcome(&b, p->id);
    tsr__peer_send(p, &b);
    if (h.role == TSR__ROLE_WORKER) {
        int kind = strcmp(h.kind, "gpu") == 0 ? TSR__KIND_GPU : TSR__KIND_CPU;
        p->wid = tsr__sched_add_worker(&srv->st, p->id, (uint32_t)h.threads, kind, h.addr, p->name);
        tsr__sworker *w = &srv->st.w[p->wid];
        snprintf(w->cpus, sizeof w->cpus, "%s", h.cpus);
        w->mem_limit = h.mem > 0 ? (uint64_t)h.mem : 0;
        tsr__events_add(&srv->events, tsr__now() - srv->started,
                        "worker %s joined (%s, %lld threads)", p->name, h.addr,
                        (long long)h.threads);
        tsr__log(&srv->log, TSR_LOG_INFO, "worker %s joined: %lld threads, %s, peers at %s",
                 p->name, (long long)h.threads, h.kind[0] ? h.kind : "cpu", h.addr);
        tsr__server_workers_changed(srv);
    } else {
        tsr__log(&srv->log, TSR_LOG_INFO, "%s %s connected from %s", role_name(h.role), p->name,
                 p->conn->peer);
    }
    if (h.role == TSR__ROLE_MONITOR) {
        tsr__proto_info(&b, &srv->st, &srv->events, tsr__now() - srv->started, srv->addr);
        tsr__peer_send(p, &b);
    }
    msgpack_sbuffer_destroy(&b);
}

/* ---- clients ---- */

static void handle_submit(tsr__peer *p, const msgpack_object *hdr, const void *payload,
                          uint64_t plen) {
    tsr__server *srv = p->srv;
    tsr__jobspec spec;
    char err[256];
    uint32_t job = 0;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    /* The memory the job costs is measured from here: VmRSS less the payload just received. */
    uint64_t rss, hwm;
    tsr__proc_mem(&rss, &hwm);
    rss = rss > plen ? rss - plen : 0;
    int rc = tsr__proto_submit(payload, (size_t)plen, &spec, err, sizeof err);
    if (rc == 0) {
        uint32_t n = spec.ntasks;
        rc = tsr__sched_submit(&srv->st, p->id, &spec, &job, err, sizeof err);
        if (rc == 0) {
            tsr__sjob *j = tsr__sched_job(&srv->st, job);
            j->rss_base = rss;
            const msgpack_object *tr = tsr__mp_get(hdr, "trace");
            j->trace = tr && tr->type == MSGPACK_OBJECT_BOOLEAN && tr->via.boolean;
            tsr__proto_accepted(&b, job, n);
        }
    }
    if (rc) {
        tsr__log(&srv->log, TSR_LOG_WARN, "client %s: graph rejected: %s", p->name, err);
        tsr__proto_rejected(&b, err);
    }
    /* Sent now, so accepted always precedes anything about the job (flushed at the check). */
    tsr__peer_send(p, &b);
    msgpack_sbuffer_destroy(&b);
}

static void reply_workers(tsr__peer *p) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tsr__proto_workers(&b, p->srv->st.nalive);
    tsr__peer_send(p, &b);
    msgpack_sbuffer_destroy(&b);
}

void tsr__server_workers_changed(tsr__server *srv) {
    for (size_t i = 0; i < srv->npeers; i++) {
        tsr__peer *p = srv->peers[i];
        if (p && p->wait_n && srv->st.nalive >= p->wait_n) {
            p->wait_n = 0;
            reply_workers(p);
        }
    }
}

static void handle_client(tsr__peer *p, const msgpack_object *hdr, const char *type, void *payload,
                          uint64_t plen) {
    tsr__server *srv = p->srv;
    if (strcmp(type, "submit") == 0) {
        handle_submit(p, hdr, payload, plen);
    } else if (strcmp(type, "release") == 0) {
        uint64_t job;
        if (tsr__mp_get_uint(hdr, "job", &job) != 0 || job > UINT32_MAX) {
            drop(p, "malformed release");
            return;
        }
        if (tsr__sched_release(&srv->st, p->id, (uint32_t)job) != 0)
            tsr__log(&srv->log, TSR_LOG_DEBUG, "client %s: release of unknown job %llu", p->name,
                     (unsigned long long)job);
    } else if (strcmp(type, "wait_workers") == 0) {
        /* "count", never "n": every header's "n" is its payload length (wire.h). */
        uint64_t n;
        if (tsr__mp_get_uint(hdr, "count", &n) != 0) {
            drop(p, "malformed wait_workers");
            return;
        }
        if (srv->st.nalive >= n) {
            reply_workers(p);
        } else {
            p->wait_n = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
        }
    } else if (strcmp(type, "shutdown") == 0) {
        tsr__server_stop(srv, "shutdown requested by a client");
    } else {
        drop(p, "unexpected message type from a client");
    }
}

/* ---- workers ---- */

/* A worker's `st` map (PROTOCOL.md); absent or partial maps leave the rest as it was. */
static void read_stats(tsr__peer *p, const msgpack_object *st) {
    tsr__sched *s = &p->srv->st;
    tsr__wstats w = s->w[p->wid].st;
    if (!st || st->type != MSGPACK_OBJECT_MAP) return;
    tsr__mp_get_uint(st, "rss_peak", &w.rss_peak);
    tsr__mp_get_uint(st, "rss", &w.rss);
    tsr__mp_get_uint(st, "chunk_bytes", &w.chunk_bytes);
    tsr__mp_get_uint(st, "chunk_peak", &w.chunk_peak);
    tsr__mp_get_uint(st, "tasks", &w.tasks);
    tsr__mp_get_uint(st, "in_bytes", &w.in_bytes);
    tsr__mp_get_uint(st, "out_bytes", &w.out_bytes);
    tsr__mp_get_double(st, "busy_s", &w.busy_s);
    tsr__mp_get_double(st, "in_s", &w.in_s);
    tsr__sched_worker_stats(s, p->wid, &w);
}

/* `tr` in done: [[job, id, nbytes, start, end, from_addr], ...]; bad entries are skipped. */
static void read_transfers(tsr__peer *p, const msgpack_object *tr) {
    if (!tr || tr->type != MSGPACK_OBJECT_ARRAY) return;
    for (uint32_t i = 0; i < tr->via.array.size; i++) {
        const msgpack_object *e = &tr->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 6) continue;
        const msgpack_object *f = e->via.array.ptr;
        int64_t job, id, nb;
        double t0, t1;
        char from[64] = "";
        if (tsr__mp_as_int(&f[0], &job) || tsr__mp_as_int(&f[1], &id) ||
            tsr__mp_as_int(&f[2], &nb) || tsr__mp_as_double(&f[3], &t0) ||
            tsr__mp_as_double(&f[4], &t1) || job < 0 || job > UINT32_MAX || id < 0 ||
            id > UINT32_MAX || nb < 0)
            continue;
        if (f[5].type == MSGPACK_OBJECT_STR) {
            size_t n = f[5].via.str.size < sizeof from - 1 ? f[5].via.str.size : sizeof from - 1;
            memcpy(from, f[5].via.str.ptr, n);
            from[n] = 0;
        }
        tsr__sched_trace_xfer(&p->srv->st, p->wid, (uint32_t)job, (uint32_t)id, (uint64_t)nb, t0,
                              t1, from);
    }
}

static void handle_done(tsr__peer *p, const msgpack_object *hdr) {
    tsr__server *srv = p->srv;
    const msgpack_object *items = tsr__mp_get(hdr, "items");
    if (!items || items->type != MSGPACK_OBJECT_ARRAY) {
        drop(p, "malformed done");
        return;
    }
    /* Stats and transfers first: a finished job reported in this batch sends them. */
    read_stats(p, tsr__mp_get(hdr, "st"));
    read_transfers(p, tsr__mp_get(hdr, "tr"));
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        const msgpack_object *e = &items->via.array.ptr[i];
        double secs = -1;
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 3) goto bad;
        const msgpack_object *f = e->via.array.ptr;
        if (f[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || f[0].via.u64 > UINT32_MAX ||
            f[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || f[1].via.u64 > UINT32_MAX ||
            f[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            goto bad;
        if (e->via.array.size > 3 && tsr__mp_as_double(&f[3], &secs) != 0) goto bad;
        double start;
        int64_t thread;
        /* A traced job's items add [start, thread] (before done: a finished job sends its
         * trace). Malformed trace fields are ignored, not fatal. */
        if (e->via.array.size >= 6 && tsr__mp_as_double(&f[4], &start) == 0 &&
            tsr__mp_as_int(&f[5], &thread) == 0 && thread >= 0 && thread < UINT32_MAX)
            tsr__sched_trace_span(&srv->st, p->wid, (uint32_t)f[0].via.u64, (uint32_t)f[1].via.u64,
                                  start, secs, (uint32_t)thread);
        if (tsr__sched_done(&srv->st, p->wid, (uint32_t)f[0].via.u64, (uint32_t)f[1].via.u64,
                            f[2].via.u64, secs) != 0)
            goto bad;
    }
    return;
bad:
    drop(p, "malformed done item");
}

static void handle_erred(tsr__peer *p, const msgpack_object *hdr) {
    uint64_t job, id;
    char msg[MSG_MAX] = "task failed";
    if (tsr__mp_get_uint(hdr, "job", &job) != 0 || tsr__mp_get_uint(hdr, "id", &id) != 0 ||
        job > UINT32_MAX || id > UINT32_MAX) {
        drop(p, "malformed erred");
        return;
    }
    const msgpack_object *m = tsr__mp_get(hdr, "msg");
    if (m && m->type == MSGPACK_OBJECT_STR) {
        size_t n = m->via.str.size < sizeof msg - 1 ? m->via.str.size : sizeof msg - 1;
        memcpy(msg, m->via.str.ptr, n);
        msg[n] = 0;
    }
    if (tsr__sched_erred(&p->srv->st, p->wid, (uint32_t)job, (uint32_t)id, msg, tsr__now()) != 0)
        drop(p, "erred for a task id out of range");
}

/* ---- frames ---- */

static int on_header(tsr__conn *c, const msgpack_object *hdr, uint64_t plen, void **dest) {
    (void)c;
    (void)dest;
    /* Only a client's submit carries a payload (the other roles have max_payload 0). */
    if (plen > 0 && !tsr__mp_str_eq(tsr__mp_get(hdr, "t"), "submit")) return TSR_EPROTOCOL;
    return 0;
}

static void on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    tsr__peer *p = c->owner;
    if (p->close_when_drained || p->srv->stopping) return;
    char type[32];
    if (tsr__mp_type(hdr, type, sizeof type) != 0) {
        drop(p, "frame without a type");
        return;
    }
    switch (p->role) {
    case TSR__ROLE_NONE:
        handle_hello(p, hdr);
        break;
    case TSR__ROLE_CLIENT:
        handle_client(p, hdr, type, payload, plen);
        break;
    case TSR__ROLE_WORKER:
        if (strcmp(type, "done") == 0)
            handle_done(p, hdr);
        else if (strcmp(type, "erred") == 0)
            handle_erred(p, hdr);
        else
            drop(p, "unexpected message type from a worker");
        break;
    case TSR__ROLE_MONITOR:
        /* `tessera top` will grow this; for now a snapshot on request, the rest ignored. */
        if (strcmp(type, "info") == 0) {
            msgpack_sbuffer b;
            msgpack_sbuffer_init(&b);
            tsr__proto_info(&b, &p->srv->st, &p->srv->events, tsr__now() - p->srv->started,
                            p->srv->addr);
            tsr__peer_send(p, &b);
            msgpack_sbuffer_destroy(&b);
        }
        break;
    }
}

/* ---- close ---- */

static void on_close(tsr__conn *c, int status, const char *reason) {
    tsr__peer *p = c->owner;
    tsr__server *srv = p->srv;
    int level = (status == 0 || status == TSR_ECLOSED) ? TSR_LOG_DEBUG : TSR_LOG_WARN;
    if (p->role == TSR__ROLE_WORKER && !srv->stopping) level = TSR_LOG_WARN;
    tsr__log(&srv->log, level, "%s %s (%s) disconnected: %s", role_name(p->role),
             p->name[0] ? p->name : "?", c->peer, reason && reason[0] ? reason : "closed");
    if (!srv->stopping) {
        if (p->role == TSR__ROLE_WORKER) {
            tsr__events_add(&srv->events, tsr__now() - srv->started, "worker %s lost: %s", p->name,
                            reason && reason[0] ? reason : "closed");
            tsr__sched_remove_worker(&srv->st, p->wid);
        } else if (p->role == TSR__ROLE_CLIENT) {
            tsr__sched_client_gone(&srv->st, p->id);
        }
        tsr__server_kick(srv);
    }
    srv->peers[p->id] = NULL;
    tsr__keyvec_free(&p->out_compute);
    tsr__keyvec_free(&p->out_free);
    free(p);
    tsr__server_peer_closed(srv);
}
