/* A client's session with a scheduler: the connection and the hello, dispatching the
 * scheduler's messages to the concern they belong to (compute.c, stats.c), running the client's
 * own loop until what a blocking call waits for, interrupts, the releases freed arrays left,
 * and closing. All of it runs on the caller's thread inside the blocking API calls; only
 * tsr_client_interrupt() may come from another thread (or a signal handler). */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "client/client.h"
#include "wire/auth.h"

/* How long a blocking call waits for a sign of life from the scheduler by default: many of its
 * heartbeats (one a second), and more than a long submission takes it to decode. */
#define TSR__CLIENT_TIMEOUT_MS 30000

void tsr__rt_fail(tsr__rt *rt, int code, const char *fmt, ...) {
    if (rt->failed) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rt->failmsg, sizeof rt->failmsg, fmt, ap);
    va_end(ap);
    rt->failed = code;
    uv_stop(&rt->c->loop);
}

int tsr__send_msg(tsr__conn *conn, tsr__msg_type type, const void *m) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack(&sb, type, m);
    int rc = tsr__conn_send(conn, &sb, NULL, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

void tsr__hello_init(tsr__msg_hello *m, const char *role, tsr__conn *conn) {
    memset(m, 0, sizeof *m);
    m->v = TSR_PROTOCOL_VERSION;
    m->role = tsr__str_of(role);
    m->name = tsr__str_of("client");
    TSR__MSG_SET(hello, m, name);
    tsr__auth_sign_hello(conn, m);
}

int tsr__client_set_cap(tsr_client *c, uint64_t job, const void *cap) {
    for (size_t k = 0; k < c->ncaps; k++)
        if (c->caps[k].job == job) {
            memcpy(c->caps[k].cap, cap, 32);
            return 0;
        }
    if (TSR__GROW(c->caps, c->caps_cap, c->ncaps + 1)) return -ENOMEM;
    c->caps[c->ncaps].job = job;
    memcpy(c->caps[c->ncaps++].cap, cap, 32);
    return 0;
}

int tsr__client_get_cap(const tsr_client *c, uint64_t job, uint8_t *cap) {
    for (size_t k = 0; k < c->ncaps; k++)
        if (c->caps[k].job == job) {
            memcpy(cap, c->caps[k].cap, 32);
            return 0;
        }
    return -1;
}

int tsr__send_release(tsr__conn *conn, uint64_t job) {
    return tsr__send_msg(conn, TSR__MSG_release, &(tsr__msg_release){.job = (uint32_t)job});
}

void tsr__client_flush_releases(tsr_client *c) {
    if (c->connected && c->sched && !c->sched->closing)
        for (size_t k = 0; k < c->nreleases; k++) tsr__send_release(c->sched, c->releases[k]);
    if (c->rt)
        for (size_t k = 0; k < c->nreleases; k++) tsr__fetch_drop_moved(c->rt, c->releases[k]);
    /* Queued on the connection: the loop writes them at its next run, or at close. */
    c->nreleases = 0;
}

int tsr_client_flush(tsr_client *c) {
    if (!c) return TSR_EINVALID;
    if (!c->connected || !c->sched) {
        c->nreleases = 0; /* nothing to release on: the scheduler dropped the jobs itself */
        return 0;
    }
    tsr__client_flush_releases(c);
    tsr__uv_run(&c->loop, UV_RUN_NOWAIT); /* writes what the socket did not take at once */
    return 0;
}

/* ---- the scheduler connection ---- */

static void sched_on_connect(tsr__conn *conn, int status) {
    tsr__rt *rt = conn->owner;
    if (status < 0) {
        tsr__rt_fail(rt, status, "cannot connect to scheduler at %s: %s", rt->c->address,
                     uv_strerror(status));
        return;
    }
    tsr__msg_hello m;
    tsr__hello_init(&m, rt->c->monitor ? "monitor" : "client", conn);
    tsr__send_msg(conn, TSR__MSG_hello, &m);
}

static void sched_on_close(tsr__conn *conn, int status, const char *reason) {
    tsr__rt *rt = conn->owner;
    (void)status;
    rt->c->sched = NULL;
    rt->c->connected = 0;
    tsr__rt_fail(rt, TSR_ECLOSED, "lost the connection to the scheduler at %s (%s)", rt->c->address,
                 reason);
}

static void sched_on_frame(tsr__conn *conn, const msgpack_object *hdr, void *payload,
                           uint64_t plen) {
    tsr__rt *rt = conn->owner;
    (void)payload;
    (void)plen;
    /* A type this client does not know (one a newer scheduler added) is ignored; a known one
     * that does not decode is a broken peer, except for optional fields (finished's stats and
     * trace, a snapshot's parts), which are informational: one that does not decode is left
     * out, with a warning, rather than costing the computation. */
    if (tsr__msg_peek_type(hdr) == TSR__MSG_NONE) return;
    tsr__msg m;
    char err[160];
    uint64_t dropped = 0;
    if (tsr__msg_decode_soft(hdr, &m, &dropped, err, sizeof err) != 0) {
        tsr__rt_fail(rt, TSR_EPROTOCOL, "malformed message from the scheduler at %s: %s",
                     rt->c->address, err);
        tsr__conn_close(conn, "malformed message");
        return;
    }
    if (dropped)
        tsr__log(&rt->c->log, TSR_LOG_WARN, "left out a malformed part of '%s' from %s: %s",
                 tsr__msg_name(m.type), rt->c->address, err);
    if (m.type == TSR__MSG_welcome) {
        /* Mutual: a server that cannot prove the token gets nothing (docs/security.md). */
        if (tsr__auth_check_welcome(conn, &m.u.welcome, NULL, NULL) != 0) {
            tsr__rt_fail(rt, TSR_EAUTH, "the scheduler at %s does not prove it holds the token",
                         rt->c->address);
            tsr__conn_close(conn, "the scheduler does not prove it holds the token");
            return;
        }
        rt->welcomed = 1;
        rt->hello_info = rt->c->monitor; /* a monitor's snapshot at hello follows */
        uv_stop(&rt->c->loop);
    } else if (m.type == TSR__MSG_error) {
        char msg[512];
        tsr__str_copy(msg, sizeof msg, m.u.error.msg);
        tsr__rt_fail(rt, strstr(msg, "authentication failed") ? TSR_EAUTH : TSR_EPROTOCOL,
                     "scheduler at %s: %s", rt->c->address, msg);
    } else if (m.type == TSR__MSG_heartbeat) {
        /* A sign of life: its arrival is all (wire/conn.c notes it for on_live). */
    } else if (m.type == TSR__MSG_info && rt->c->monitor) {
        tsr__info_on_message(rt, &m.u.info);
    } else {
        tsr__compute_on_message(rt, &m);
    }
}

static const tsr__conn_cbs sched_cbs = {
    .on_frame = sched_on_frame,
    .on_close = sched_on_close,
    .on_connect = sched_on_connect,
};

/* ---- running the loop until a condition ---- */

static void on_interrupt(uv_async_t *a) {
    tsr__rt *rt = a->data;
    if (atomic_load(&rt->interrupted)) tsr__rt_fail(rt, TSR_EINTERRUPTED, "interrupted");
}

static void on_timeout(uv_timer_t *t) {
    tsr__rt *rt = t->data;
    tsr__rt_fail(rt, -ETIMEDOUT, "timed out waiting for the scheduler at %s", rt->c->address);
}

/* Liveness: while a call waits, a scheduler that has sent nothing for the client's timeout is
 * taken for gone (stopped, hung, or cut off without a close reaching us): the call fails and
 * the connection closes, so later calls fail at once. A late tick means this loop was held up
 * (a callback ran long): nothing is judged on it. */
static void on_live(uv_timer_t *t) {
    tsr__rt *rt = t->data;
    tsr__conn *sc = rt->c->sched;
    uint64_t now = uv_now(&rt->c->loop);
    int stalled = now - rt->live_last > rt->live_tick + rt->live_ms / 2;
    rt->live_last = now;
    /* Workers the call reads outputs from are held to the same limit, and so is the wait for
     * a streamed chunk lost with its worker to be made again. */
    if (rt->pool.cbs) tsr__fetch_close_silent(&rt->pool, rt->live_ms, stalled);
    if (rt->store && !stalled) tsr__ostream_tick(rt, rt->live_ms);
    if (!stalled) tsr__fetch_tick(rt, rt->live_ms);
    /* A local cluster whose every worker died would leave the call waiting for workers that
     * never come (nobody else joins it). */
    const char *dead = tsr__local_dead(rt->c);
    if (dead && !rt->failed) {
        tsr__rt_fail(rt, TSR_ECOMPUTE, "%s", dead);
        return;
    }
    if (!sc || sc->closing) return;
    if (stalled) sc->last_read = now;
    uint64_t quiet = tsr__conn_silent_ms(sc, 0);
    if (quiet <= rt->live_ms) return;
    tsr__rt_fail(rt, -ETIMEDOUT,
                 "the scheduler at %s sent nothing for %.1f s (stopped or unreachable?); giving up",
                 rt->c->address, (double)quiet / 1e3);
    tsr__conn_close(sc, "the scheduler went silent");
}

int tsr__rt_run_until(tsr__rt *rt, const int *flag, int timeout_ms) {
    if (timeout_ms > 0) uv_timer_start(&rt->timer, on_timeout, (uint64_t)timeout_ms, 0);
    int to = rt->c->live_timeout_ms;
    if (to >= 0 && rt->c->sched && !rt->c->sched->closing) {
        rt->live_ms = (uint64_t)(to > 0 ? to : TSR__CLIENT_TIMEOUT_MS);
        rt->live_tick = rt->live_ms / 8;
        if (rt->live_tick > 1000) rt->live_tick = 1000;
        if (rt->live_tick < 10) rt->live_tick = 10;
        /* Between calls nobody reads the socket: the silence is counted from now. */
        uv_update_time(&rt->c->loop);
        rt->live_last = rt->c->sched->last_read = uv_now(&rt->c->loop);
        uv_timer_start(&rt->live, on_live, rt->live_tick, rt->live_tick);
    }
    while (!*flag && !rt->failed) {
        if (atomic_load(&rt->interrupted)) {
            tsr__rt_fail(rt, TSR_EINTERRUPTED, "interrupted");
            break;
        }
        tsr__uv_run(&rt->c->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&rt->timer);
    uv_timer_stop(&rt->live);
    if (rt->failed) {
        int rc = rt->failed;
        tsr__fail(rt->c, rc, "%s", rt->failmsg);
        /* Keep the failure for callers that check; the next wait starts clean. */
        rt->failed = 0;
        return rc;
    }
    return 0;
}

void tsr__rt_begin(tsr__rt *rt) {
    atomic_store(&rt->interrupted, 0);
    tsr__client_flush_releases(rt->c);
}

void tsr__rt_end(tsr__rt *rt) {
    atomic_store(&rt->interrupted, 0);
}

void tsr_client_interrupt(tsr_client *c) {
    if (!c || !c->rt) return;
    atomic_store(&c->rt->interrupted, 1); /* lock-free atomic_int: async-signal-safe */
    uv_async_send(&c->rt->interrupt);     /* async-signal-safe */
}

/* ---- opening and closing ---- */

int tsr__client_open(tsr_client *c, const char *address, const char *token, int timeout_ms) {
    snprintf(c->address, sizeof c->address, "%s", address);
    snprintf(c->token, sizeof c->token, "%s", token ? token : "");
    int rc = uv_loop_init(&c->loop);
    if (rc) return tsr__fail(c, rc, "cannot create an event loop: %s", uv_strerror(rc));
    c->loop_init = 1;
    tsr__rt *rt = calloc(1, sizeof *rt);
    if (!rt) return tsr__fail(c, -ENOMEM, "out of memory");
    c->rt = rt;
    rt->c = c;
    uv_async_init(&c->loop, &rt->interrupt, on_interrupt);
    rt->interrupt.data = rt;
    uv_timer_init(&c->loop, &rt->timer);
    rt->timer.data = rt;
    uv_timer_init(&c->loop, &rt->live);
    rt->live.data = rt;
    c->sched = tsr__conn_new(&c->loop, &sched_cbs, rt, &c->log);
    if (!c->sched) return tsr__fail(c, -ENOMEM, "out of memory");
    c->sched->auth.secret = c->token;
    rc = tsr__conn_connect(c->sched, address);
    if (rc) {
        tsr__conn_close(c->sched, "bad address");
        c->sched = NULL;
        return tsr__fail(c, rc, "invalid scheduler address \"%s\" (expected HOST:PORT)", address);
    }
    c->connected = 1;
    rc = tsr__rt_run_until(rt, &rt->welcomed, timeout_ms);
    if (rc) c->connected = 0;
    return rc;
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) {
        if (h->type == UV_TCP && h->data) {
            tsr__conn_close(h->data, "client closing");
        } else {
            uv_close(h, NULL);
        }
    }
}

void tsr__client_close(tsr_client *c) {
    if (!c->loop_init) return;
    /* Last chance for the releases of freed arrays. uv_write writes at once when the socket
     * takes it (a few small frames always fit), and the NOWAIT run writes the rest that it can
     * before the close; a release that still does not make it is done by the scheduler's own
     * cleanup when the connection closes. */
    tsr__client_flush_releases(c);
    tsr__uv_run(&c->loop, UV_RUN_NOWAIT);
    if (c->rt) {
        /* Connections' on_close callbacks must not report failures into a dying runtime. */
        c->rt->failed = TSR_ECLOSED;
    }
    uv_walk(&c->loop, close_walk, NULL);
    tsr__uv_run(&c->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&c->loop);
    if (rc) tsr__log(&c->log, TSR_LOG_WARN, "event loop not empty at close: %s", uv_strerror(rc));
    c->loop_init = 0;
    if (c->rt) {
        tsr__fetch_free_peers(c->rt);
        json_decref(c->rt->stats);
        json_decref(c->rt->info);
        tsr__trace_free(c->trace);
        c->trace = NULL;
        free(c->rt);
        c->rt = NULL;
    }
}

void tsr_client_options_default(tsr_client_options *o) {
    memset(o, 0, sizeof *o);
    o->connect_timeout_ms = 10000;
    o->timeout_ms = TSR__CLIENT_TIMEOUT_MS;
    o->log_level = TSR_LOG_WARN;
}

void tsr__client_set_logger(tsr_client *c, const tsr_logger *lg, int level) {
    c->log.cb = lg->callback;
    c->log.cookie = lg->cookie;
    c->log.level = level;
}

int tsr_client_connect(const char *address, const tsr_client_options *opts, tsr_client **out) {
    return tsr__client_connect_as(address, opts, 0, out);
}

int tsr__client_connect_as(const char *address, const tsr_client_options *opts, int monitor,
                           tsr_client **out) {
    *out = NULL;
    tsr_client_options def;
    if (!opts) {
        tsr_client_options_default(&def);
        opts = &def;
    }
    if (!address) return tsr__fail_thread(TSR_EINVALID, "no scheduler address given");
    tsr_client *c;
    int rc = tsr_client_new_offline(&c);
    if (rc) return rc;
    c->monitor = monitor;
    c->live_timeout_ms = opts->timeout_ms;
    tsr__client_set_logger(c, &opts->logger, opts->log_level);
    rc = tsr__client_open(c, address, opts->token, opts->connect_timeout_ms);
    if (rc) {
        tsr__fail_thread(rc, "%s", c->errmsg);
        tsr_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

typedef struct wait_check {
    tsr__rt *rt;
    const char *(*dead)(void *arg);
    void *arg;
} wait_check;

static void on_wait_check(uv_timer_t *t) {
    wait_check *w = t->data;
    const char *why = w->dead(w->arg);
    if (why && !w->rt->failed) tsr__rt_fail(w->rt, TSR_ESPAWN, "%s", why);
}

int tsr__client_wait_workers(tsr_client *c, int n, int timeout_ms, const char *(*dead)(void *arg),
                             void *arg) {
    tsr__rt *rt = c->rt;
    rt->got_workers = 0;
    int rc = tsr__send_msg(c->sched, TSR__MSG_wait_workers,
                           &(tsr__msg_wait_workers){.count = (uint64_t)(n > 0 ? n : 0)});
    if (rc) return tsr__fail(c, rc, "cannot talk to the scheduler: %s", tsr_strerror(rc));
    /* A process that will never say hello (it failed to start: no device, a bad cpu set) ends
     * the wait at once instead of at the timeout. */
    uv_timer_t check;
    wait_check wc = {rt, dead, arg};
    int checking = dead && uv_timer_init(&c->loop, &check) == 0;
    if (checking) {
        check.data = &wc;
        uv_timer_start(&check, on_wait_check, 100, 100);
    }
    rc = tsr__rt_run_until(rt, &rt->got_workers, timeout_ms);
    if (checking) {
        uv_close((uv_handle_t *)&check, NULL);
        tsr__uv_run(&c->loop, UV_RUN_NOWAIT);
    }
    return rc;
}

void tsr__client_shutdown_cluster(tsr_client *c) {
    if (c->sched && !c->sched->closing)
        tsr__send_msg(c->sched, TSR__MSG_shutdown, &(tsr__msg_shutdown){0});
    if (c->loop_init) tsr__uv_run(&c->loop, UV_RUN_NOWAIT);
}

void tsr_client_free(tsr_client *c) {
    if (!c) return;
    /* Arrays still alive become inert handles; the jobs they held are released below. */
    tsr__client_detach_arrays(c);
    if (c->local && c->connected && c->sched) {
        tsr__client_flush_releases(c);
        tsr__client_shutdown_cluster(c);
    }
    tsr__client_close(c);
    tsr__local_free(c);
    free(c->releases);
    free(c->caps);
    sodium_memzero(c->token, sizeof c->token);
    free(c);
}
