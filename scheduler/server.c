/* The scheduler handle: its own libuv loop, the listener, the per-turn flush of batched messages
 * (a uv_check), progress ticks, tsr_scheduler_stop (a uv_async, safe from signal handlers) and a
 * clean stop in which every handle is closed and uv_loop_close() succeeds. No globals and no
 * process-wide state (signals, environment, SIGPIPE are the caller's): two schedulers in one
 * process just work. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"
#include "wire/auth.h"
#include "wire/msg.h"
#include "wire/wire.h"

#define PROGRESS_MS 100
#define STOP_GRACE_MS 2000
#define HEARTBEAT_MS 1000
#define WORKER_TIMEOUT_MS 10000

/* The public handle: the server, plus what only the handle's life cycle needs. */
struct tsr_scheduler {
    tsr__server srv;
    uv_async_t stop_async; /* tsr_scheduler_stop; unreferenced, open until free */
    char *token;           /* copied from the options */
    int ran;               /* tsr_scheduler_run was called */
};

void tsr_scheduler_options_default(tsr_scheduler_options *opts) {
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->listen = "127.0.0.1:8786";
    opts->log_level = TSR_LOG_WARN;
    opts->placement = TSR_PLACEMENT_DEFAULT;
    opts->heartbeat_ms = HEARTBEAT_MS;
    opts->worker_timeout_ms = WORKER_TIMEOUT_MS;
    opts->allowed_failures = TSR__ALLOWED_FAILURES;
}

static void on_progress(uv_timer_t *t);

static tsr__peer *peer_of(tsr__server *srv, uint32_t id) {
    return id < srv->npeers ? srv->peers[id] : NULL;
}

static void touch(tsr__server *srv, tsr__peer *p) {
    if (p->touched) return;
    if (TSR__GROW(srv->touched, srv->touchcap, srv->ntouched + 1) != 0) abort();
    p->touched = 1;
    srv->touched[srv->ntouched++] = p->id;
}

static void add_key(tsr__keyvec *kv, uint32_t job, uint32_t task) {
    if (TSR__GROW(kv->v, kv->cap, kv->n + 1) != 0) abort();
    kv->v[kv->n++] = (tsr__key){job, task};
}

static int key_cmp(const void *a, const void *b) {
    const tsr__key *x = a, *y = b;
    if (x->job != y->job) return x->job < y->job ? -1 : 1;
    return x->task < y->task ? -1 : x->task > y->task;
}

static void send_progress(tsr__server *srv, tsr__sjob *j) {
    tsr__peer *c = peer_of(srv, j->client);
    j->dirty = 0;
    if (!c || j->cancelled) return;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tsr__proto_progress(&b, j);
    tsr__peer_send(c, &b);
    msgpack_sbuffer_destroy(&b);
}

#define COMPUTE_SPLIT_BYTES ((uint64_t)16 << 20)

static void flush_worker(tsr__server *srv, tsr__peer *p) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tsr__keyvec *kv = &p->out_compute;
    if (kv->n > 0) {
        /* compute names one job, so a turn sends one message per (worker, job). */
        qsort(kv->v, kv->n, sizeof *kv->v, key_cmp);
        uint32_t *ids = malloc(kv->n * sizeof *ids);
        if (!ids) abort();
        for (size_t i = 0; i < kv->n;) {
            size_t e = i, n = 0;
            /* Descriptors can be large (a DATA chunk's bytes, tsr_from_buffer): a message ends
             * once its tasks' descriptors pass COMPUTE_SPLIT_BYTES, far under the 64 MiB a
             * header may have. */
            const tsr__sjob *jb = tsr__sched_job(&srv->st, kv->v[i].job);
            uint64_t kbytes = 0;
            while (e < kv->n && kv->v[e].job == kv->v[i].job && kbytes < COMPUTE_SPLIT_BYTES) {
                uint32_t t = kv->v[e++].task;
                if (jb) kbytes += jb->g.kd_off[t + 1] - jb->g.kd_off[t];
                ids[n++] = t;
            }
            tsr__proto_compute(&b, &srv->st, p->wid, kv->v[i].job, ids, n);
            tsr__peer_send(p, &b);
            i = e;
        }
        free(ids);
        kv->n = 0;
    }
    if (p->out_free.n > 0) {
        tsr__proto_free(&b, p->out_free.v, p->out_free.n);
        tsr__peer_send(p, &b);
        p->out_free.n = 0;
    }
    msgpack_sbuffer_destroy(&b);
}

/* The turn's streamed chunks, one `computed` per job, sent before anything else of the turn
 * so that they reach the client before that turn's `finished` or `failed`. A chunk lost or
 * freed again within the turn is left out (it will be reported when it is made again). */
static void send_stored(tsr__server *srv, msgpack_sbuffer *b) {
    tsr__sched *s = &srv->st;
    tsr__keyvec kv = {0};
    for (size_t i = 0; i < s->nact; i++) {
        const tsr__action *a = &s->act[i];
        if (a->kind != TSR__ACT_STORED) continue;
        tsr__sjob *j = tsr__sched_job(s, a->job);
        if (!j || j->cancelled) continue;
        const tsr__stask *t = &j->t[a->task];
        if (t->state != TSR__TS_MEMORY || t->where == TSR__NONE || !s->w[t->where].alive) continue;
        add_key(&kv, a->job, a->task);
    }
    if (kv.n == 0) return;
    qsort(kv.v, kv.n, sizeof *kv.v, key_cmp);
    uint32_t *ids = malloc(kv.n * sizeof *ids);
    if (!ids) abort();
    for (size_t i = 0; i < kv.n;) {
        size_t e = i, n = 0;
        while (e < kv.n && kv.v[e].job == kv.v[i].job) {
            if (n == 0 || ids[n - 1] != kv.v[e].task) ids[n++] = kv.v[e].task;
            e++;
        }
        tsr__sjob *j = tsr__sched_job(s, kv.v[i].job);
        tsr__peer *c = peer_of(srv, j->client);
        if (c) {
            tsr__proto_computed(b, s, j, ids, n);
            tsr__peer_send(c, b);
        }
        i = e;
    }
    free(ids);
    free(kv.v);
}

/* Turns the state machine's actions of this loop turn into messages. */
static void flush(tsr__server *srv) {
    tsr__sched *s = &srv->st;
    tsr__sched_balance(s);
    tsr__retire_pass(srv); /* after stealing: a retiring worker's backlog may have gone */
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    send_stored(srv, &b);
    for (size_t i = 0; i < s->nact; i++) {
        const tsr__action *a = &s->act[i];
        tsr__sjob *j = tsr__sched_job(s, a->job);
        if (a->kind == TSR__ACT_COMPUTE) {
            /* Skip tasks taken back since (requeued after a loss, or cancelled) and duplicates
             * of a task pumped twice in one turn. */
            if (!j || j->cancelled) continue;
            tsr__stask *t = &j->t[a->task];
            if (t->state != TSR__TS_RUNNING || t->where != a->worker || (t->flags & TSR__TF_SENT))
                continue;
            t->flags |= TSR__TF_SENT;
            tsr__peer *p = peer_of(srv, s->w[a->worker].peer);
            if (!p) continue;
            add_key(&p->out_compute, a->job, a->task);
            touch(srv, p);
        } else if (a->kind == TSR__ACT_FREE) {
            if (!s->w[a->worker].alive) continue;
            tsr__peer *p = peer_of(srv, s->w[a->worker].peer);
            if (!p) continue;
            add_key(&p->out_free, a->job, a->task);
            touch(srv, p);
        } else if (a->kind == TSR__ACT_FINISHED) {
            if (!j || j->cancelled || !j->finished_sent) continue;
            if (tsr__retire_busy(s)) continue; /* sent when it ends (retire.c) */
            tsr__peer *c = peer_of(srv, j->client);
            if (!c) continue;
            send_progress(srv, j); /* the last progress (done == total) comes first */
            uint64_t rss, hwm;
            tsr__proc_mem(&rss, &hwm);
            tsr__proto_finished(&b, s, j, hwm);
            tsr__peer_send(c, &b);
        } else if (a->kind == TSR__ACT_FAILED) {
            tsr__peer *c = peer_of(srv, a->client);
            if (!c) continue;
            tsr__events_add(&srv->events, tsr__now() - srv->started, "job %u task %u failed: %s",
                            a->job, a->task, a->msg ? a->msg : "failed");
            tsr__proto_failed(&b, a->job, a->task, a->array, a->msg ? a->msg : "failed");
            tsr__peer_send(c, &b);
        }
    }
    msgpack_sbuffer_destroy(&b);
    tsr__sched_clear_actions(s);
    for (size_t i = 0; i < srv->ntouched; i++) {
        tsr__peer *p = peer_of(srv, srv->touched[i]);
        if (!p) continue;
        p->touched = 0;
        flush_worker(srv, p);
    }
    srv->ntouched = 0;
    if ((s->ndirty > 0 || s->nparked > 0) && !uv_is_active((uv_handle_t *)&srv->progress))
        uv_timer_start(&srv->progress, on_progress, PROGRESS_MS, PROGRESS_MS);
}

static void on_progress(uv_timer_t *t) {
    tsr__server *srv = t->data;
    tsr__sched *s = &srv->st;
    if (s->nparked > 0) {
        tsr__sched_tick(s, tsr__now());
        if (s->nact > 0) tsr__server_kick(srv);
    }
    if (s->ndirty == 0 && s->nparked == 0) {
        uv_timer_stop(t);
        return;
    }
    for (size_t i = 0; i < s->ndirty; i++) {
        tsr__sjob *j = tsr__sched_job(s, s->dirty[i]);
        if (j && j->dirty) send_progress(srv, j);
    }
    s->ndirty = 0;
}

static void on_check(uv_check_t *h) {
    tsr__server *srv = h->data;
    uv_idle_stop(&srv->idle);
    if (!srv->stopping) flush(srv);
}

static void on_idle(uv_idle_t *h) {
    (void)h;
}

/* ---- liveness ---- */

/* Every heartbeat interval: a heartbeat to every welcomed peer, and a worker silent for longer
 * than the worker timeout is lost: its connection is closed, and on_close (conn.c) recovers
 * its tasks exactly as for a connection the worker closed. A late tick means the loop itself
 * was held up (a huge submission being decoded, the process stopped): what arrived meanwhile
 * has not been read yet, so nobody is judged on that tick. */
static void on_heartbeat(uv_timer_t *t) {
    tsr__server *srv = t->data;
    uint64_t now = uv_now(&srv->loop);
    int stalled = now - srv->last_beat > srv->heartbeat_ms + srv->worker_timeout_ms / 2;
    srv->last_beat = now;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    for (size_t i = 0; i < srv->npeers; i++) {
        tsr__peer *p = srv->peers[i];
        if (!p || p->role == TSR__ROLE_NONE || p->conn->closing || p->close_when_drained) continue;
        if (stalled) p->conn->last_read = now;
        if (p->role == TSR__ROLE_WORKER &&
            tsr__conn_silent_ms(p->conn, 0) > srv->worker_timeout_ms) {
            char why[96];
            tsr__fmt(why, sizeof why, "sent nothing for %.1f s (worker timeout)",
                     (double)tsr__conn_silent_ms(p->conn, 0) / 1e3);
            tsr__log(&srv->log, TSR_LOG_WARN, "worker %s (%s) %s: lost", p->name, p->conn->peer,
                     why);
            tsr__conn_close(p->conn, why);
            continue;
        }
        /* A peer that does not read would only pile heartbeats up: what is queued already will
         * tell it we are alive once it reads. */
        if (p->conn->queued_bytes > 0) continue;
        tsr__msg_pack_heartbeat(&b, &(tsr__msg_heartbeat){0});
        tsr__peer_send(p, &b);
    }
    msgpack_sbuffer_destroy(&b);
}

void tsr__server_kick(tsr__server *srv) {
    if (!srv->stopping) uv_idle_start(&srv->idle, on_idle);
}

/* ---- stopping ---- */

static void on_handle_closed(uv_handle_t *h) {
    (void)h;
}

static void close_handle(uv_handle_t *h) {
    if (!uv_is_closing(h)) uv_close(h, on_handle_closed);
}

static void on_stop_timer(uv_timer_t *t) {
    tsr__server *srv = t->data;
    tsr__log(&srv->log, TSR_LOG_WARN, "stop: forcing the remaining connections closed");
    for (size_t i = 0; i < srv->npeers; i++)
        if (srv->peers[i]) tsr__conn_close(srv->peers[i]->conn, "scheduler stopping");
    close_handle((uv_handle_t *)t);
}

void tsr__server_stop(tsr__server *srv, const char *why) {
    if (srv->stopping) return;
    srv->stopping = 1;
    tsr__log(&srv->log, TSR_LOG_INFO, "stopping: %s", why);
    close_handle((uv_handle_t *)&srv->listener);
    close_handle((uv_handle_t *)&srv->check);
    close_handle((uv_handle_t *)&srv->idle);
    close_handle((uv_handle_t *)&srv->progress);
    close_handle((uv_handle_t *)&srv->heartbeat);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    size_t open = 0;
    for (size_t i = 0; i < srv->npeers; i++) {
        tsr__peer *p = srv->peers[i];
        if (!p) continue;
        open++;
        if (p->role == TSR__ROLE_WORKER) {
            tsr__proto_simple(&b, "shutdown");
            tsr__peer_send(p, &b);
        }
        tsr__peer_close_soon(p, NULL); /* after the queued writes (shutdown, finished...) */
    }
    msgpack_sbuffer_destroy(&b);
    /* Peers that do not read could keep writes pending forever: bound the wait. */
    if (open > 0) {
        uv_timer_start(&srv->stop_timer, on_stop_timer, STOP_GRACE_MS, 0);
    } else {
        close_handle((uv_handle_t *)&srv->stop_timer);
    }
}

void tsr__server_peer_closed(tsr__server *srv) {
    srv->nopen--;
    if (srv->stopping && srv->nopen == 0) close_handle((uv_handle_t *)&srv->stop_timer);
}

static void on_walk(uv_handle_t *h, void *arg) {
    tsr__server *srv = arg;
    tsr__log(&srv->log, TSR_LOG_ERROR, "handle left open at exit: %s",
             uv_handle_type_name(uv_handle_get_type(h)));
}

static void on_stop_async(uv_async_t *a) {
    tsr__server_stop(a->data, "stop requested");
}

static void close_all(tsr__server *srv) {
    close_handle((uv_handle_t *)&srv->listener);
    close_handle((uv_handle_t *)&srv->check);
    close_handle((uv_handle_t *)&srv->idle);
    close_handle((uv_handle_t *)&srv->progress);
    close_handle((uv_handle_t *)&srv->heartbeat);
    close_handle((uv_handle_t *)&srv->stop_timer);
}

/* Runs the loop until every handle is closed and closes it; 0 or why it could not. */
static int finish_loop(tsr_scheduler *s) {
    tsr__server *srv = &s->srv;
    close_handle((uv_handle_t *)&s->stop_async);
    tsr__uv_run(&srv->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&srv->loop);
    if (rc) {
        uv_walk(&srv->loop, on_walk, srv);
        tsr__log(&srv->log, TSR_LOG_ERROR, "uv_loop_close: %s", uv_strerror(rc));
    }
    return rc;
}

static void release(tsr_scheduler *s) {
    tsr__sched_free(&s->srv.st);
    free(s->srv.peers);
    free(s->srv.touched);
    free(s->token);
    free(s);
}

int tsr_scheduler_new(const tsr_scheduler_options *opts, tsr_scheduler **out) {
    if (!out) return TSR_EINVALID;
    *out = NULL;
    tsr_scheduler_options def;
    if (!opts) {
        tsr_scheduler_options_default(&def);
        opts = &def;
    }
    const char *listen_addr = opts->listen ? opts->listen : "127.0.0.1:8786";
    tsr_scheduler *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    tsr__server *srv = &s->srv;
    srv->log.who = "scheduler";
    srv->log.level = opts->log_level;
    srv->log.cb = opts->logger.callback;
    srv->log.cookie = opts->logger.cookie;
    if (opts->token && opts->token[0] && !(s->token = strdup(opts->token))) {
        free(s);
        return -ENOMEM;
    }
    srv->token = s->token;
    if (tsr__auth_init() != 0) {
        tsr__log(&srv->log, TSR_LOG_ERROR, "cannot start libsodium (no random source?)");
        free(s->token);
        free(s);
        return TSR_EUNSUPPORTED;
    }
    tsr__auth_random(srv->ckey, sizeof srv->ckey);

    char host[96];
    int port, rc = tsr__parse_address(listen_addr, host, sizeof host, &port);
    if (rc) {
        tsr__log(&srv->log, TSR_LOG_ERROR, "bad listen address '%s'", listen_addr);
        free(s->token);
        free(s);
        return rc;
    }
    if (!tsr__is_loopback(host) && !srv->token) {
        tsr__log(&srv->log, TSR_LOG_ERROR, "listening on %s (not loopback) requires a token",
                 listen_addr);
        free(s->token);
        free(s);
        return TSR_EAUTH;
    }
    rc = uv_loop_init(&srv->loop);
    if (rc) {
        free(s->token);
        free(s);
        return rc;
    }
    tsr__sched_init(&srv->st, &srv->log);
    srv->started = tsr__now();
    /* A baseline for benchmarks only (bench/, docs/ARCHITECTURE.md): tasks go round-robin, no
     * partition, no stealing. */
    if (opts->placement == TSR_PLACEMENT_ROUNDROBIN) {
        srv->st.roundrobin = 1;
        tsr__log(&srv->log, TSR_LOG_INFO, "placement: round-robin");
    }
    uv_tcp_init(&srv->loop, &srv->listener);
    uv_check_init(&srv->loop, &srv->check);
    uv_idle_init(&srv->loop, &srv->idle);
    uv_timer_init(&srv->loop, &srv->progress);
    uv_timer_init(&srv->loop, &srv->stop_timer);
    uv_timer_init(&srv->loop, &srv->heartbeat);
    srv->heartbeat_ms = (uint64_t)(opts->heartbeat_ms > 0 ? opts->heartbeat_ms : HEARTBEAT_MS);
    srv->worker_timeout_ms =
        (uint64_t)(opts->worker_timeout_ms > 0 ? opts->worker_timeout_ms : WORKER_TIMEOUT_MS);
    if (opts->allowed_failures > 0)
        srv->st.allowed_failures =
            (uint32_t)TSR__MIN(opts->allowed_failures, TSR__ALLOWED_FAILURES_MAX);
    /* Unreferenced: it must not keep tsr_scheduler_run going once everything else closed, and it
     * stays open until free so that a late tsr_scheduler_stop still finds a live handle. */
    uv_async_init(&srv->loop, &s->stop_async, on_stop_async);
    uv_unref((uv_handle_t *)&s->stop_async);
    srv->listener.data = srv->check.data = srv->idle.data = srv;
    srv->progress.data = srv->stop_timer.data = s->stop_async.data = srv->heartbeat.data = srv;

    char bound[96];
    rc = tsr__listen(&srv->listener, listen_addr, tsr__server_on_connection, bound, sizeof bound);
    if (rc) {
        tsr__log(&srv->log, TSR_LOG_ERROR, "cannot listen on %s: %s", listen_addr,
                 tsr_strerror(rc));
        srv->stopping = 1;
        close_all(srv);
        finish_loop(s);
        release(s);
        return rc;
    }
    uv_check_start(&srv->check, on_check);
    srv->last_beat = uv_now(&srv->loop);
    uv_timer_start(&srv->heartbeat, on_heartbeat, srv->heartbeat_ms, srv->heartbeat_ms);
    tsr__log(&srv->log, TSR_LOG_INFO, "listening on %s", bound);
    snprintf(srv->addr, sizeof srv->addr, "%s", bound);
    *out = s;
    return 0;
}

const char *tsr_scheduler_address(const tsr_scheduler *s) {
    return s ? s->srv.addr : NULL;
}

int tsr_scheduler_run(tsr_scheduler *s) {
    if (!s || s->ran) return TSR_EINVALID;
    s->ran = 1;
    tsr__uv_run(&s->srv.loop, UV_RUN_DEFAULT);
    return 0;
}

void tsr_scheduler_stop(tsr_scheduler *s) {
    if (s) uv_async_send(&s->stop_async); /* async-signal-safe */
}

void tsr_scheduler_free(tsr_scheduler *s) {
    if (!s) return;
    tsr__server *srv = &s->srv;
    if (!srv->stopping) {
        /* Never ran, or run has not been asked to stop: stop now and let the closes finish. */
        tsr__server_stop(srv, "freed");
        tsr__uv_run(&srv->loop, UV_RUN_DEFAULT);
    }
    finish_loop(s);
    release(s);
}
