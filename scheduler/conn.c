/* One peer of the scheduler (client, worker or monitor): accept, hello, dispatch of frames to
 * the state machine, close. Callbacks in lifecycle order. Peer input is checked here and in
 * proto.c; anything malformed closes this connection only, with a logged reason. */
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"
#include "wire/auth.h"
#include "wire/msg.h"
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
    /* Until it says who it is, a peer gets backpressure and a deadline (wire.h). */
    tsr__conn_limit_output(p->conn);
    tsr__conn_set_deadline(p->conn, tsr__hello_timeout_ms, "no hello in time");
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
    tsr__conn_stop_reading(p->conn); /* nothing more from it is acted on */
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
    /* The answer to the challenge this connection opened with (wire/auth.c). */
    if (tsr__auth_check_proof(p->conn, srv->token, role_name(h.role), h.has_proof ? h.cnonce : NULL,
                              h.has_proof ? h.mac : NULL) != 0) {
        tsr__log(&srv->log, TSR_LOG_WARN, "%s %s (%s): authentication failed", role_name(h.role),
                 p->name, p->conn->peer);
        send_error_and_close(p, "authentication failed: missing or wrong token");
        return;
    }
    p->role = h.role;
    tsr__conn_clear_deadline(p->conn);
    /* Clients and monitors keep the output caps; a worker's link is read at both ends always
     * (compute one way, done the other: two paused ends would wait on each other). */
    if (h.role == TSR__ROLE_WORKER) tsr__conn_unlimit_output(p->conn);
    p->conn->max_header = h.role == TSR__ROLE_MONITOR ? HELLO_MAX_HEADER : TSR_WIRE_MAX_HEADER;
    p->conn->max_payload = h.role == TSR__ROLE_CLIENT ? CLIENT_MAX_PAYLOAD : 0;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    /* The server's proof; a worker's welcome carries the capability key (docs/security.md). */
    tsr__msg_welcome wm = {.v = TSR_PROTOCOL_VERSION, .id = p->id};
    tsr__auth_sign_welcome(p->conn, srv->token, &wm, h.role == TSR__ROLE_WORKER ? srv->ckey : NULL);
    tsr__msg_pack_welcome(&b, &wm);
    tsr__peer_send(p, &b);
    if (h.role == TSR__ROLE_WORKER) {
        int kind = strcmp(h.kind, "gpu") == 0 ? TSR__KIND_GPU : TSR__KIND_CPU;
        p->wid = tsr__sched_add_worker_plugins(&srv->st, p->id, (uint32_t)h.threads, kind, h.addr,
                                               p->name, (const char(*)[TSR__PLUGIN_NAME])h.plugins,
                                               h.nplugins);
        tsr__sworker *w = &srv->st.w[p->wid];
        snprintf(w->cpus, sizeof w->cpus, "%s", h.cpus);
        w->mem_limit = h.mem > 0 ? (uint64_t)h.mem : 0;
        /* Jobs waiting for workers meet its limit now (tsr__sched_unfit). */
        if (w->mem_limit) tsr__sched_check_jobs(&srv->st);
        /* A GPU worker's device figures are shown from the start (zero until its first st). */
        w->dev = kind == TSR__KIND_GPU || h.has_dev;
        snprintf(w->dev_name, sizeof w->dev_name, "%s", h.dev_name);
        w->st.dev_limit = h.dev_limit;
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

static void handle_submit(tsr__peer *p, const tsr__msg_submit *m, const void *payload,
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
        if (TSR__MSG_HAS(submit, m, stream)) spec.nstream = m->stream;
        int stream = spec.nstream > 0;
        rc = tsr__jobspec_check_held(&srv->st, p->id, &spec, err, sizeof err);
        if (rc)
            tsr__jobspec_free(&spec);
        else
            rc = tsr__sched_submit(&srv->st, p->id, &spec, &job, err, sizeof err);
        if (rc == 0) {
            /* NULL when it failed at once (no connected worker can run one of its tasks): the
             * failed message follows this accepted at the turn's flush. */
            tsr__sjob *j = tsr__sched_job(&srv->st, job);
            if (j) {
                j->rss_base = rss;
                j->trace = TSR__MSG_HAS(submit, m, trace) && m->trace;
            }
            uint8_t cap[32];
            tsr__auth_cap(srv->ckey, job, cap);
            tsr__proto_accepted(&b, job, n, stream, cap);
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

static void handle_client(tsr__peer *p, const tsr__msg *m, void *payload, uint64_t plen) {
    tsr__server *srv = p->srv;
    switch (m->type) {
    case TSR__MSG_submit:
        handle_submit(p, &m->u.submit, payload, plen);
        break;
    case TSR__MSG_release:
        if (tsr__sched_release(&srv->st, p->id, m->u.release.job) != 0)
            tsr__log(&srv->log, TSR_LOG_DEBUG, "client %s: release of unknown job %u", p->name,
                     m->u.release.job);
        break;
    case TSR__MSG_release_keys: {
        const tsr__list *l = &m->u.release_keys.ids;
        uint32_t *ids = malloc(((size_t)l->n + 1) * sizeof *ids);
        if (!ids) abort();
        for (uint32_t i = 0; i < l->n; i++) {
            tsr__m_id_item e;
            TSR__LIST_GET(l, id_item, i, &e); /* a LIST: checked when decoded */
            ids[i] = e.id;
        }
        if (tsr__sched_release_keys(&srv->st, p->id, m->u.release_keys.job, ids, l->n) != 0)
            tsr__log(&srv->log, TSR_LOG_DEBUG, "client %s: release_keys of unknown job %u", p->name,
                     m->u.release_keys.job);
        free(ids);
        break;
    }
    case TSR__MSG_wait_workers: {
        uint64_t n = m->u.wait_workers.count;
        if (srv->st.nalive >= n)
            reply_workers(p);
        else
            p->wait_n = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
        break;
    }
    case TSR__MSG_shutdown:
        /* Only the cluster's owner, who holds its secret, may stop it (docs/security.md): a
         * scheduler without one has nobody who can prove that, and is stopped by a signal. */
        if (!srv->token) {
            tsr__log(&srv->log, TSR_LOG_WARN,
                     "client %s: shutdown refused (this scheduler has no token, so no client "
                     "can prove it owns the cluster)",
                     p->name);
            msgpack_sbuffer b;
            msgpack_sbuffer_init(&b);
            tsr__proto_error(&b, "shutdown refused: the scheduler has no token (stop it with a "
                                 "signal)");
            tsr__peer_send(p, &b);
            msgpack_sbuffer_destroy(&b);
            break;
        }
        tsr__server_stop(srv, "shutdown requested by a client");
        break;
    case TSR__MSG_heartbeat: /* a sign of life, nothing to do */
        break;
    default:
        drop(p, "unexpected message type from a client");
    }
}

/* ---- workers ---- */

/* A worker's `st` map (PROTOCOL.md); absent fields leave the rest as it was (paused included:
 * a worker with a disk tier sends it in every st). */
static void read_stats(tsr__peer *p, const tsr__m_wstats *st) {
    tsr__server *srv = p->srv;
    tsr__sched *s = &srv->st;
    tsr__wstats w = s->w[p->wid].st;
#define TAKE(f)                                                                                    \
    if (TSR__M_HAS(wstats, st, f)) w.f = st->f;
    TAKE(rss_peak)
    TAKE(rss)
    TAKE(chunk_bytes)
    TAKE(chunk_peak)
    TAKE(tasks)
    TAKE(in_bytes)
    TAKE(out_bytes)
    TAKE(busy_s)
    TAKE(in_s)
    TAKE(dev_used)
    TAKE(dev_limit)
    TAKE(h2d_bytes)
    TAKE(d2h_bytes)
    TAKE(dev_evicted)
    TAKE(spilled_bytes)
    TAKE(unspilled_bytes)
    TAKE(disk_bytes)
    TAKE(paused)
    TAKE(spill_s)
    TAKE(unspill_s)
#undef TAKE
    const uint64_t dev = TSR__M_BIT(wstats, dev_used) | TSR__M_BIT(wstats, dev_limit) |
                         TSR__M_BIT(wstats, h2d_bytes) | TSR__M_BIT(wstats, d2h_bytes) |
                         TSR__M_BIT(wstats, dev_evicted);
    const uint64_t spill = TSR__M_BIT(wstats, spilled_bytes) | TSR__M_BIT(wstats, unspilled_bytes) |
                           TSR__M_BIT(wstats, disk_bytes) | TSR__M_BIT(wstats, paused);
    if (st->has & dev) s->w[p->wid].dev = 1;
    if (st->has & spill) s->w[p->wid].spill = 1;
    if (s->w[p->wid].retiring) w.paused = 1; /* for good (retire.c) */
    if (w.paused != s->w[p->wid].st.paused)
        tsr__events_add(&srv->events, tsr__now() - srv->started, "worker %s %s", p->name,
                        w.paused ? "paused (memory)" : "resumed");
    tsr__sched_worker_stats(s, p->wid, &w);
}

/* `tr` in done: the traced peer fetches completed since the last done. */
static void read_transfers(tsr__peer *p, const tsr__list *tr) {
    for (uint32_t i = 0; i < tr->n; i++) {
        tsr__m_transfer x;
        TSR__LIST_GET(tr, transfer, i, &x);
        char from[64];
        tsr__str_copy(from, sizeof from, x.from);
        tsr__sched_trace_xfer(&p->srv->st, p->wid, x.job, x.id, x.nbytes, x.start, x.end, from);
    }
}

static void handle_done(tsr__peer *p, const tsr__msg_done *m) {
    tsr__server *srv = p->srv;
    /* Stats and transfers first: a finished job reported in this batch sends them. A done with
     * no items is a report of st alone (a worker sends one when it pauses or resumes): it
     * changes nothing but the figures and the pause. */
    if (TSR__MSG_HAS(done, m, st)) read_stats(p, &m->st);
    read_transfers(p, &m->tr);
    /* items is a LAZY list (wire/msg.h): an element that does not decode drops the worker, as
     * a done that did not decode would; the items before it stand, as they do when
     * tsr__sched_done refuses one (dropping the worker requeues its work either way). */
    for (uint32_t i = 0; i < m->items.n; i++) {
        tsr__m_done_item it;
        if (TSR__LIST_GET(&m->items, done_item, i, &it) != 0) {
            drop(p, "malformed done item");
            return;
        }
        double secs = TSR__M_HAS(done_item, &it, seconds) ? it.seconds : -1;
        /* A traced job's items add [start, thread] (before done: a finished job sends its
         * trace). */
        if (TSR__M_HAS(done_item, &it, start) && TSR__M_HAS(done_item, &it, thread))
            tsr__sched_trace_span(&srv->st, p->wid, it.job, it.id, it.start, secs, it.thread);
        if (tsr__sched_done(&srv->st, p->wid, it.job, it.id, it.nbytes, secs) != 0) {
            drop(p, "malformed done item");
            return;
        }
    }
}

static void handle_erred(tsr__peer *p, const tsr__msg_erred *m) {
    char msg[MSG_MAX] = "task failed";
    if (TSR__MSG_HAS(erred, m, msg)) tsr__str_copy(msg, sizeof msg, m->msg);
    int kept = TSR__MSG_HAS(erred, m, kept) && m->kept;
    if (tsr__sched_erred(&p->srv->st, p->wid, m->job, m->id, msg, kept, tsr__now()) != 0)
        drop(p, "erred for a task id out of range");
}

/* ---- frames ---- */

static int on_header(tsr__conn *c, const msgpack_object *hdr, uint64_t plen, void **dest) {
    (void)c;
    (void)dest;
    /* Only a client's submit carries a payload (the other roles have max_payload 0). */
    if (plen > 0 && tsr__msg_peek_type(hdr) != TSR__MSG_submit) return TSR_EPROTOCOL;
    return 0;
}

static void on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    tsr__peer *p = c->owner;
    if (p->close_when_drained || p->srv->stopping) return;
    if (p->role == TSR__ROLE_NONE) {
        handle_hello(p, hdr);
        return;
    }
    tsr__msg m;
    char err[200];
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0) {
        if (p->role != TSR__ROLE_MONITOR) drop(p, err); /* monitors: the rest is ignored */
        return;
    }
    switch (p->role) {
    case TSR__ROLE_CLIENT:
        handle_client(p, &m, payload, plen);
        break;
    case TSR__ROLE_WORKER:
        if (m.type == TSR__MSG_done)
            handle_done(p, &m.u.done);
        else if (m.type == TSR__MSG_erred)
            handle_erred(p, &m.u.erred);
        else if (m.type == TSR__MSG_retire)
            tsr__retire_begin(p);
        else if (m.type == TSR__MSG_replicated)
            tsr__retire_replicated(p, &m.u.replicated);
        else if (m.type != TSR__MSG_heartbeat) /* its arrival was the point (wire/conn.c) */
            drop(p, "unexpected message type from a worker");
        break;
    case TSR__ROLE_MONITOR:
        /* `tessera top` will grow this; for now a snapshot on request, the rest ignored. */
        if (m.type == TSR__MSG_info) {
            msgpack_sbuffer b;
            msgpack_sbuffer_init(&b);
            tsr__proto_info(&b, &p->srv->st, &p->srv->events, tsr__now() - p->srv->started,
                            p->srv->addr);
            tsr__peer_send(p, &b);
            msgpack_sbuffer_destroy(&b);
        }
        break;
    default:
        break;
    }
}

/* ---- close ---- */

/* Every live worker hears that the worker at addr is lost: a fetch from it (stopped, it answers
 * nothing) fails at once, instead of after the fetching worker's --timeout. */
static void tell_peer_lost(tsr__server *srv, const char *addr) {
    tsr__msg_peer_lost m = {.addr = tsr__str_of(addr)};
    for (size_t i = 0; i < srv->npeers; i++) {
        tsr__peer *q = srv->peers[i];
        if (!q || q->role != TSR__ROLE_WORKER || !q->conn || q->conn->closing ||
            !srv->st.w[q->wid].alive)
            continue;
        msgpack_sbuffer b; /* tsr__peer_send takes the buffer's bytes */
        msgpack_sbuffer_init(&b);
        tsr__msg_pack_peer_lost(&b, &m);
        tsr__peer_send(q, &b);
        msgpack_sbuffer_destroy(&b);
    }
}

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
            tell_peer_lost(srv, srv->st.w[p->wid].addr);
            if (srv->st.w[p->wid].retiring) tsr__retire_gone(srv); /* finished messages held */
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
