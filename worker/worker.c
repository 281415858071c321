/* The worker: its loop, the scheduler connection (hello, compute, free, shutdown), reporting
 * finished tasks (done with stats, erred), start-up and shutdown. The task life cycle is in
 * task.c; compute never runs here: ready tasks go to the executors (exec.c) and come back
 * through the completion queue. The library's worker changes no process-wide state: signals, the
 * malloc policy and OpenBLAS's thread count are the program's (tessera.h, tsr_worker_new). */
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "wire/auth.h"
#include "worker/worker.h"

/* The public handle: the worker, its own copy of the options and what only the handle's life
 * cycle needs. */
struct tsr_worker {
    tsr__worker w;
    tsr_worker_options o; /* w.opts points here; its strings are the copies below */
    char *strs[7]; /* scheduler, token, cpus, name, listen_host, spill_dir, fault_kill_kernel */
    uv_async_t stop_async; /* tsr_worker_stop and _retire; unreferenced, open until free */
    atomic_int stop_req, retire_req; /* what the async was sent for (a stop wins) */
    int async_ok;
    int ran;
};

#define HEARTBEAT_MS 1000
#define TIMEOUT_MS 30000

void tsr_worker_options_default(tsr_worker_options *opts) {
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->threads = 1;
    opts->gpu = -1;
    opts->listen_host = "127.0.0.1";
    opts->log_level = TSR_LOG_WARN;
    opts->blas_threads = 1;
    opts->heartbeat_ms = HEARTBEAT_MS;
    opts->timeout_ms = TIMEOUT_MS;
}

static void worker_stop(tsr__worker *w, const char *why);

/* ---- Messages to the scheduler --------------------------------------------------------------- */

static void send_sched(tsr__worker *w, msgpack_sbuffer *sb) {
    if (w->sched && !w->sched->closing) {
        int rc = tsr__conn_send(w->sched, sb, NULL, 0, NULL, NULL);
        if (rc < 0)
            tsr__log(&w->log, TSR_LOG_WARN, "send to scheduler failed: %s", tsr_strerror(rc));
    }
    msgpack_sbuffer_destroy(sb);
}

void tsr__worker_send_replicated(tsr__worker *w, uint64_t job, uint64_t id, uint64_t nbytes,
                                 const char *msg) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_replicated m = {.job = (uint32_t)job, .id = (uint32_t)id, .nbytes = nbytes};
    if (msg) {
        tsr__log(&w->log, TSR_LOG_WARN, "could not keep (%llu,%llu) for a retiring worker: %s",
                 (unsigned long long)job, (unsigned long long)id, msg);
        m.msg = tsr__str_of(msg);
        TSR__MSG_SET(replicated, &m, msg);
    }
    tsr__msg_pack_replicated(&sb, &m);
    send_sched(w, &sb);
}

void tsr__worker_send_erred(tsr__worker *w, uint64_t job, uint64_t id, const char *msg, int kept) {
    tsr__log(&w->log, TSR_LOG_INFO, "task (%llu,%llu) failed: %s", (unsigned long long)job,
             (unsigned long long)id, msg);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_erred m = {.job = (uint32_t)job, .id = (uint32_t)id, .msg = tsr__str_of(msg)};
    TSR__MSG_SET(erred, &m, msg);
    if (kept) {
        m.kept = 1;
        TSR__MSG_SET(erred, &m, kept);
    }
    tsr__msg_pack_erred(&sb, &m);
    send_sched(w, &sb);
}

/* The hello both connections start with: role "worker" (to the scheduler) or "peer". */
static void hello_common(tsr__worker *w, tsr__msg_hello *m, const char *role) {
    *m = (tsr__msg_hello){
        .v = TSR_PROTOCOL_VERSION, .role = tsr__str_of(role), .name = tsr__str_of(w->name)};
    TSR__MSG_SET(hello, m, name);
}

void tsr__worker_pack_peer_hello(tsr__worker *w, tsr__conn *c, msgpack_sbuffer *sb) {
    tsr__msg_hello m;
    hello_common(w, &m, "peer");
    tsr__auth_sign_hello(c, &m);
    tsr__msg_pack_hello(sb, &m);
}

static void send_hello(tsr__worker *w) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_hello m;
    hello_common(w, &m, "worker");
    m.threads = w->nexec;
    m.kind = tsr__str_of(w->gpu ? "gpu" : "cpu");
    m.addr = tsr__str_of(w->peer_addr);
    m.cpus = tsr__str_of(w->cpus);
    m.mem = w->opts->memory_limit > 0 ? w->opts->memory_limit : 0;
    m.pid = (int64_t)getpid();
    m.has |= TSR__MSG_BIT(hello, threads) | TSR__MSG_BIT(hello, kind) | TSR__MSG_BIT(hello, addr) |
             TSR__MSG_BIT(hello, cpus) | TSR__MSG_BIT(hello, mem) | TSR__MSG_BIT(hello, pid);
    /* The plugin libraries it can load: the scheduler sends map_blocks tasks by them. */
    tsr__m_str_item libs[TSR__WORKER_PLUGINS_MAX];
    uint32_t nlibs = 0;
    for (int k = 0; k < w->plugins.nnames && nlibs < TSR__ARRAY_LEN(libs); k++)
        libs[nlibs++].s = tsr__str_of(w->plugins.names[k]);
    if (w->plugins.nnames > (int)nlibs)
        tsr__log(&w->log, TSR_LOG_WARN, "%d plugin libraries found; only %u are announced",
                 w->plugins.nnames, nlibs);
    if (nlibs) {
        m.plugins = (tsr__list){.n = nlibs, .v = libs};
        m.has |= TSR__MSG_BIT(hello, plugins);
    }
    if (w->st.dev.on) { /* the device as the GPU tier opened it (worker.h, wdevstats) */
        m.dev_name = tsr__str_of(w->st.dev.name);
        m.dev_limit = w->st.dev.limit;
        m.has |= TSR__MSG_BIT(hello, dev_name) | TSR__MSG_BIT(hello, dev_limit);
    }
    tsr__auth_sign_hello(w->sched, &m);
    tsr__msg_pack_hello(&sb, &m);
    send_sched(w, &sb);
}

/* ---- Liveness -------------------------------------------------------------------------------- */

/* Every heartbeat interval, on the loop thread (never an executor's, so a long kernel does not
 * silence us): a heartbeat to the scheduler; a scheduler that has sent nothing for the timeout
 * ends the worker as a closed connection does, and a peer connection with fetches outstanding
 * that has been silent as long is closed, which fails those fetches (the scheduler places their
 * tasks again). A late tick means this loop was held up: nothing is judged on it. */
static void on_beat(uv_timer_t *tm) {
    tsr__worker *w = tm->data;
    uint64_t now = uv_now(&w->loop);
    int stalled = now - w->last_beat > w->heartbeat_ms + w->timeout_ms / 2;
    w->last_beat = now;
    tsr__fetch_close_silent(&w->fetch, w->timeout_ms, stalled);
    if (!w->sched || w->sched->closing) return;
    if (stalled) w->sched->last_read = now;
    uint64_t quiet = tsr__conn_silent_ms(w->sched, 0);
    if (w->welcomed && quiet > w->timeout_ms) {
        char why[128];
        tsr__fmt(why, sizeof why, "the scheduler at %s sent nothing for %.1f s", w->opts->scheduler,
                 (double)quiet / 1e3);
        tsr__log(&w->log, TSR_LOG_ERROR, "%s: giving up on it", why);
        tsr__conn_close(w->sched, why); /* sched_on_close stops the worker */
        return;
    }
    if (!w->welcomed || w->sched->queued_bytes > 0) return; /* queued frames say it already */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_heartbeat(&sb, &(tsr__msg_heartbeat){0});
    send_sched(w, &sb);
}

/* ---- Giving memory back ---------------------------------------------------------------------- */

/* After a job the heap still spans its busiest moment: tens of thousands of tiny chunks, task
 * records and fetch entries, freed all over it, and glibc returns memory only from the heap's
 * top. Once no task has been live for IDLE_TRIM_MS, the task pool and the empty tables go and
 * malloc_trim returns every free page, wherever it lies. Never while tasks are live: trimming
 * walks the heap, and the pages would be taken back at once. */
#define IDLE_TRIM_MS 100

static void on_idle(uv_timer_t *tm) {
    tsr__worker *w = tm->data;
    if (w->all || !w->worked) return; /* busy again: armed anew when it next goes idle */
    w->worked = 0;
    uint64_t hwm = 0, before = 0, after = 0;
    double t0 = tsr__now();
    if (w->st.status_fd >= 0) tsr__read_rss(w->st.status_fd, &hwm, &before);
    tsr__task_idle(w);
    tsr__chunkmem_drain(&w->mem);
    malloc_trim(0);
    if (w->st.status_fd >= 0) tsr__read_rss(w->st.status_fd, &hwm, &after);
    tsr__log(&w->log, TSR_LOG_INFO, "idle: VmRSS %llu -> %llu KiB (%.1f ms)",
             (unsigned long long)(before >> 10), (unsigned long long)(after >> 10),
             (tsr__now() - t0) * 1e3);
}

static void arm_idle(tsr__worker *w) {
    if (w->idle_ok && w->worked && !w->all && !w->stopping)
        uv_timer_start(&w->idle, on_idle, IDLE_TRIM_MS, 0);
}

/* ---- Completions ----------------------------------------------------------------------------- */

/* done's items and tr, generated from the worker's arrays. */
static void gen_done_item(void *ctx, uint32_t i, void *elem) {
    const done_item *it = &((const tsr__worker *)ctx)->done[i];
    tsr__m_done_item *e = elem;
    *e = (tsr__m_done_item){.job = (uint32_t)it->job,
                            .id = (uint32_t)it->id,
                            .nbytes = it->nbytes,
                            .seconds = it->seconds,
                            .start = it->start,
                            .thread = it->thread};
    TSR__M_SET(done_item, e, seconds);
    if (it->traced) e->has |= TSR__M_BIT(done_item, start) | TSR__M_BIT(done_item, thread);
}

static void gen_transfer(void *ctx, uint32_t i, void *elem) {
    const wxfer *x = &((const tsr__worker *)ctx)->xfers[i];
    *(tsr__m_transfer *)elem = (tsr__m_transfer){.job = (uint32_t)x->job,
                                                 .id = (uint32_t)x->id,
                                                 .nbytes = x->nbytes,
                                                 .start = x->start,
                                                 .end = x->end,
                                                 .from = tsr__str_of(x->from)};
}

/* Executors finished some tasks: keep the chunks, wake the tasks waiting for them, and report
 * everything in one done message (and one erred per failure). */
static void on_async(uv_async_t *a) {
    tsr__worker *w = a->data;
    wtask *list = tsr__exec_take_done(w);
    if (list) w->worked = 1;
    if (tsr__gpu_take_writebacks(w)) tsr__peer_resume(w);
    if (w->io_started && tsr__spill_done(w)) tsr__peer_resume(w);
    while (list) {
        wtask *t = list;
        list = t->qnext;
        t->qnext = NULL;
        tsr__task_finished(w, t);
    }
    uint64_t held = atomic_load_explicit(&w->mem.bytes, memory_order_relaxed);
    if (w->opts->memory_limit > 0 && held + w->mem.cap > (uint64_t)w->opts->memory_limit)
        tsr__chunkmem_release(&w->mem); /* reusable memory goes first, the warm reserve too */
    if (w->opts->memory_limit > 0 && held > (uint64_t)w->opts->memory_limit && !w->over_limit) {
        w->over_limit = 1;
        tsr__log(&w->log, TSR_LOG_WARN, "holding %llu bytes, over the memory limit of %lld",
                 (unsigned long long)held, (long long)w->opts->memory_limit);
    } else if (w->over_limit && held <= (uint64_t)w->opts->memory_limit) {
        w->over_limit = 0;
    }
    arm_idle(w);
    if (w->ndone == 0) return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_done m = {.items = {.n = (uint32_t)w->ndone, .gen = gen_done_item, .ctx = w},
                       .tr = {.n = (uint32_t)w->nxfer, .gen = gen_transfer, .ctx = w}};
    if (w->nxfer) TSR__MSG_SET(done, &m, tr);
    tsr__stats_fill(w, &m.st);
    TSR__MSG_SET(done, &m, st);
    tsr__msg_pack_done(&sb, &m);
    w->nxfer = 0;
    w->ndone = 0;
    w->st.msgs_out++;
    send_sched(w, &sb);
}

/* A done with no items: the worker's st alone, when its paused state changed (spill.c). */
static void send_stats(tsr__worker *w) {
    w->spill_report = 0;
    if (!w->welcomed) return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_done m = {.items = {.n = 0, .gen = gen_done_item, .ctx = w}};
    tsr__stats_fill(w, &m.st);
    TSR__MSG_SET(done, &m, st);
    tsr__msg_pack_done(&sb, &m);
    w->st.msgs_out++;
    send_sched(w, &sb);
}

/* End of a loop turn: the disk tier spills or pauses as the bytes held ask, everything made
 * ready during the turn goes to the executors at once, and the turn's gets and small replies to
 * peers go out, one write per connection. */
static void on_check(uv_check_t *c) {
    tsr__worker *w = c->data;
    tsr__spill_check(w);
    if (w->spill_report) send_stats(w);
    tsr__exec_flush(w);
    tsr__peer_flush(w);
}

/* ---- Scheduler connection -------------------------------------------------------------------- */

static void sched_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    tsr__worker *w = c->owner;
    (void)payload;
    (void)plen;
    tsr__msg m;
    char err[200];
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0) {
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler sent a bad frame: %s", err);
        tsr__conn_close(c, err);
        return;
    }
    if (!w->welcomed) {
        if (m.type == TSR__MSG_welcome) {
            w->ckey.have = 0;
            if (tsr__auth_check_welcome(c, &m.u.welcome, w->ckey.key, &w->has_ckey) != 0) {
                tsr__log(&w->log, TSR_LOG_ERROR,
                         "the scheduler at %s does not prove it holds the token",
                         w->opts->scheduler);
                w->exit_code = TSR_EAUTH;
                tsr__conn_close(c, "the scheduler does not prove it holds the token");
                return;
            }
            w->welcomed = 1;
            tsr__log(&w->log, TSR_LOG_INFO, "connected to scheduler %s; peers reach us at %s",
                     w->opts->scheduler, w->peer_addr);
            if (w->opts->on_ready) w->opts->on_ready(w->peer_addr, w->opts->user);
            return;
        }
        char msg[200] = "unexpected reply to hello";
        if (m.type == TSR__MSG_error) tsr__str_copy(msg, sizeof msg, m.u.error.msg);
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler %s refused us: %s", w->opts->scheduler, msg);
        w->exit_code = strstr(msg, "version")                        ? TSR_EVERSION
                       : strstr(msg, "token") || strstr(msg, "auth") ? TSR_EAUTH
                                                                     : TSR_EPROTOCOL;
        tsr__conn_close(c, "refused");
        return;
    }
    const char *why = NULL;
    switch (m.type) {
    case TSR__MSG_compute:
        why = tsr__task_compute(w, &m.u.compute);
        break;
    case TSR__MSG_free:
        why = tsr__task_free_keys(w, &m.u.free);
        if (!why) {
            w->worked = 1;
            arm_idle(w);
        }
        break;
    case TSR__MSG_shutdown:
        worker_stop(w, "the scheduler asked us to shut down");
        return;
    case TSR__MSG_heartbeat: /* its arrival was the point (wire/conn.c notes it) */
        return;
    case TSR__MSG_replicate:
        why = tsr__task_replicate(w, &m.u.replicate);
        break;
    case TSR__MSG_peer_lost: {
        /* Fetches from it fail now, not after --timeout: the scheduler runs their tasks again
         * once their inputs are made again. */
        char addr[128];
        if (tsr__str_copy(addr, sizeof addr, m.u.peer_lost.addr) == 0)
            tsr__fetch_close_addr(&w->fetch, addr, "the scheduler lost that worker");
        return;
    }
    default:
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler sent an unexpected \"%s\"",
                 tsr__msg_name(m.type));
        tsr__conn_close(c, "unexpected message");
        return;
    }
    if (why) {
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler sent a bad %s: %s", tsr__msg_name(m.type), why);
        tsr__conn_close(c, why);
    }
}

static void sched_on_connect(tsr__conn *c, int status) {
    tsr__worker *w = c->owner;
    if (status == UV_ECANCELED && w->stopping) return; /* stopped (or freed) while connecting */
    if (status < 0) {
        tsr__log(&w->log, TSR_LOG_ERROR, "cannot reach the scheduler at %s: %s", w->opts->scheduler,
                 uv_strerror(status));
        if (w->exit_code == 0) w->exit_code = status;
        return; /* on_close follows */
    }
    send_hello(w);
}

static void sched_on_close(tsr__conn *c, int status, const char *reason) {
    tsr__worker *w = c->owner;
    w->sched = NULL;
    if (!w->welcomed && w->exit_code == 0 && !w->stopping) { /* not when we stopped first */
        w->exit_code = status < 0 ? status : TSR_ECLOSED;
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler %s closed before welcoming us: %s",
                 w->opts->scheduler, reason);
    } else if (!w->stopping) {
        tsr__log(&w->log, TSR_LOG_INFO, "scheduler connection closed: %s", reason);
    }
    worker_stop(w, "the scheduler connection closed");
}

static const tsr__conn_cbs sched_cbs = {
    .on_frame = sched_on_frame,
    .on_close = sched_on_close,
    .on_connect = sched_on_connect,
};

/* ---- Start and stop -------------------------------------------------------------------------- */

/* Stops taking work, lets each executor finish its current task (queued ones are abandoned)
 * and closes every handle; uv_run then returns. */
static void worker_stop(tsr__worker *w, const char *why) {
    if (w->stopping) return;
    w->stopping = 1;
    tsr__log(&w->log, TSR_LOG_INFO, "stopping: %s", why);
    if (w->sync_ok) tsr__exec_stop(w);
    tsr__spill_stop(w); /* before the async handle it reports through goes */
    if (w->sched) tsr__conn_close(w->sched, "worker stopping");
    if (w->server_ok) uv_close((uv_handle_t *)&w->server, NULL);
    if (w->async_ok) uv_close((uv_handle_t *)&w->async, NULL);
    if (w->check_ok) uv_close((uv_handle_t *)&w->check, NULL);
    if (w->idle_ok) uv_close((uv_handle_t *)&w->idle, NULL);
    if (w->beat_ok) uv_close((uv_handle_t *)&w->beat, NULL);
    w->server_ok = w->async_ok = w->check_ok = w->idle_ok = w->beat_ok = 0;
    tsr__peer_close_all(w);
}

/* Decides every executor's core and the hello's cpus string. */
static int setup_topology(tsr__worker *w) {
    const tsr_worker_options *o = w->opts;
    if (hwloc_topology_init(&w->topo) < 0) return TSR_EINVALID;
    w->topo_ok = 1;
    if (hwloc_topology_load(w->topo) < 0) {
        tsr__log(&w->log, TSR_LOG_ERROR, "hwloc could not read the machine's topology");
        return TSR_EINVALID;
    }
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    hwloc_bitmap_t all = hwloc_bitmap_alloc();
    int rc = set && all ? 0 : -ENOMEM;
    if (rc == 0 && (rc = tsr__worker_cpuset(w->topo, o->cpus, set)) != 0)
        tsr__log(&w->log, TSR_LOG_ERROR, "bad cpu set \"%s\": no usable cores in it",
                 o->cpus ? o->cpus : "(all)");
    for (int k = 0; rc == 0 && k < w->nexec; k++) {
        wexec *e = &w->execs[k];
        e->w = w;
        e->k = k;
        if (!(e->set = hwloc_bitmap_alloc())) rc = -ENOMEM;
        if (rc == 0) rc = tsr__worker_pick_core(w->topo, set, k, e->set);
        if (rc == 0) hwloc_bitmap_or(all, all, e->set);
    }
    if (rc == 0 && w->gpu && !(w->allowed = hwloc_bitmap_dup(set))) rc = -ENOMEM;
    if (rc == 0) {
        hwloc_bitmap_list_snprintf(w->cpus, sizeof w->cpus, all);
        tsr__log(&w->log, TSR_LOG_INFO, "%d executor thread(s) on cpus %s", w->nexec, w->cpus);
    }
    hwloc_bitmap_free(set);
    hwloc_bitmap_free(all);
    return rc;
}

static int worker_start(tsr__worker *w) {
    const tsr_worker_options *o = w->opts;
    int rc = setup_topology(w);
    if (rc) return rc;
    if (pthread_mutex_init(&w->qmu, NULL) != 0) return -ENOMEM;
    pthread_mutex_init(&w->cmu, NULL);
    pthread_cond_init(&w->qcv, NULL);
    w->sync_ok = 1;

    if ((rc = uv_loop_init(&w->loop)) != 0) return rc;
    w->loop_ok = 1;
    if ((rc = uv_async_init(&w->loop, &w->async, on_async)) != 0) return rc;
    w->async.data = w;
    w->async_ok = 1;
    if ((rc = uv_check_init(&w->loop, &w->check)) != 0) return rc;
    w->check.data = w;
    w->check_ok = 1;
    uv_check_start(&w->check, on_check);
    if ((rc = uv_timer_init(&w->loop, &w->idle)) != 0) return rc;
    w->idle.data = w;
    w->idle_ok = 1;
    if ((rc = uv_timer_init(&w->loop, &w->beat)) != 0) return rc;
    w->beat.data = w;
    w->beat_ok = 1;
    w->heartbeat_ms = (uint64_t)(o->heartbeat_ms > 0 ? o->heartbeat_ms : HEARTBEAT_MS);
    w->timeout_ms = (uint64_t)(o->timeout_ms > 0 ? o->timeout_ms : TIMEOUT_MS);
    w->last_beat = uv_now(&w->loop);
    uv_timer_start(&w->beat, on_beat, w->heartbeat_ms, w->heartbeat_ms);

    if ((rc = tsr__spill_start(w)) != 0) return rc;
    tsr__peer_init(w);
    if ((rc = uv_tcp_init(&w->loop, &w->server)) != 0) return rc;
    w->server.data = w;
    w->server_ok = 1;
    const char *host = o->listen_host && o->listen_host[0] ? o->listen_host : "127.0.0.1";
    char laddr[96];
    snprintf(laddr, sizeof laddr, strchr(host, ':') ? "[%s]:0" : "%s:0", host);
    rc = tsr__listen(&w->server, laddr, tsr__peer_on_connection, w->peer_addr, sizeof w->peer_addr);
    if (rc) {
        tsr__log(&w->log, TSR_LOG_ERROR, "cannot listen for peers on %s: %s", laddr,
                 tsr_strerror(rc));
        return rc;
    }

    int blas = tsr__kernels_blas_threads();
    int want = o->blas_threads > 0 ? o->blas_threads : 1;
    if (blas > want)
        tsr__log(&w->log, TSR_LOG_WARN,
                 "OpenBLAS may use %d threads per call, more than blas_threads (%d): the "
                 "program should call openblas_set_num_threads(%d)",
                 blas, want, want);
    if ((rc = tsr__exec_start(w)) != 0) return rc;

    if (!(w->sched = tsr__conn_new(&w->loop, &sched_cbs, w, &w->log))) return -ENOMEM;
    /* The scheduler sends no payloads to workers. */
    w->sched->max_payload = 0;
    w->sched->auth.secret = o->token;
    rc = tsr__conn_connect(w->sched, o->scheduler);
    if (rc) {
        tsr__log(&w->log, TSR_LOG_ERROR, "cannot reach the scheduler at %s: %s", o->scheduler,
                 tsr_strerror(rc));
        w->exit_code = rc;
        return rc;
    }
    return 0;
}

uint64_t tsr__worker_pool_cap(const tsr_worker_options *o, int nexec) {
    if (o->pool_bytes < 0) return 0;
    if (o->pool_bytes > 0) return (uint64_t)o->pool_bytes;
    uint64_t cap = TSR__POOL_DEFAULT * (uint64_t)nexec;
    if (o->memory_limit > 0 && (uint64_t)o->memory_limit / 10 < cap)
        cap = (uint64_t)o->memory_limit / 10;
    return cap;
}

/* Which pages chunk buffers are mapped in (common.c, tsr__pages_probe): as the options say, or
 * measured here, before the reserve below is made in them. */
static void choose_pages(tsr__worker *w, int asked) {
    if (asked != 0) {
        tsr__chunkmem_set_pages(&w->mem, asked > 0 ? TSR__PAGES_HUGE : TSR__PAGES_SMALL);
        tsr__log(&w->log, TSR_LOG_INFO, "pages: %s, as asked", asked > 0 ? "huge" : "4 KiB");
        return;
    }
    double huge_ms, small_ms;
    int pages = tsr__pages_probe(&huge_ms, &small_ms);
    tsr__chunkmem_set_pages(&w->mem, pages);
    tsr__chunkmem_adapt(&w->mem, huge_ms, small_ms); /* measured: later touches may say otherwise */
    tsr__log(&w->log, TSR_LOG_INFO,
             "pages: %s (a first touch of 2 MiB took %.2f ms in huge pages, %.2f ms in 4 KiB "
             "pages)",
             pages == TSR__PAGES_HUGE ? "huge" : "4 KiB", huge_ms, small_ms);
}

/* How many bytes of replicas a worker keeps (task.c, "Replicas"): TSR__REPLICA_DEFAULT, or a
 * tenth of the memory limit when that is less. */
static uint64_t replica_cap(const tsr_worker_options *o) {
    uint64_t cap = TSR__REPLICA_DEFAULT;
    if (o->memory_limit > 0 && (uint64_t)o->memory_limit / 10 < cap)
        cap = (uint64_t)o->memory_limit / 10;
    return cap ? cap : 1;
}

static void free_writebacks(tsr__worker *w, wwb *r) {
    while (r) {
        wwb *next = r->next;
        tsr__chunkmem_unref(&w->mem, r->buf);
        free(r);
        r = next;
    }
}

static void worker_cleanup(tsr__worker *w) {
    /* Write-backs asked for and never done (the worker stopped first), or not yet taken. */
    free_writebacks(w, w->wb_head);
    free_writebacks(w, w->wb_done);
    w->wb_head = w->wb_tail = w->wb_done = NULL;
    tsr__task_cleanup(w);
    tsr__spill_cleanup(w);
    tsr__store_free(&w->store);
    tsr__stats_free(&w->st);
    tsr__devtier_destroy(&w->dev); /* every buffer went: no record is left attached */
    if (w->mem_ok) tsr__chunkmem_destroy(&w->mem);
    if (w->zone) msgpack_zone_free(w->zone);
    if (w->sync_ok) {
        pthread_mutex_destroy(&w->qmu);
        pthread_mutex_destroy(&w->cmu);
        pthread_cond_destroy(&w->qcv);
    }
    for (int k = 0; k < w->nexec && w->execs; k++) hwloc_bitmap_free(w->execs[k].set);
    if (w->allowed) hwloc_bitmap_free(w->allowed);

    free(w->execs);
    if (w->topo_ok) hwloc_topology_destroy(w->topo);
}

/* Graceful retirement (PROTOCOL.md): the scheduler moves what only we hold, then sends
 * shutdown. Without a scheduler connection there is nothing to hand over. */
static void worker_retire(tsr__worker *w) {
    if (w->stopping || w->retiring) return;
    if (!w->sched || w->sched->closing) {
        worker_stop(w, "retired (no scheduler)");
        return;
    }
    w->retiring = 1;
    tsr__log(&w->log, TSR_LOG_INFO, "retiring: the scheduler moves our chunks, then stops us");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_retire m = {0};
    tsr__msg_pack_retire(&sb, &m);
    send_sched(w, &sb);
}

static void on_stop_async(uv_async_t *a) {
    tsr_worker *h = a->data;
    if (atomic_exchange(&h->stop_req, 0))
        worker_stop(&h->w, "stop requested");
    else if (atomic_exchange(&h->retire_req, 0))
        worker_retire(&h->w);
}

/* Closes the stop handle, runs the loop until every close is done and closes it. */
static void finish_loop(tsr_worker *h) {
    tsr__worker *w = &h->w;
    if (!w->loop_ok) return;
    if (h->async_ok) uv_close((uv_handle_t *)&h->stop_async, NULL);
    h->async_ok = 0;
    tsr__uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Executors are joined; nothing else can be running. */
    int lrc = uv_loop_close(&w->loop);
    if (lrc != 0)
        tsr__log(&w->log, TSR_LOG_ERROR, "event loop still had handles at exit: %s",
                 uv_strerror(lrc));
    w->loop_ok = 0;
}

static void release(tsr_worker *h) {
    worker_cleanup(&h->w);
    tsr__roots_free(&h->w);
    tsr__plugins_free(&h->w);
    for (size_t i = 0; i < TSR__ARRAY_LEN(h->strs); i++) free(h->strs[i]);
    free(h);
}

/* Copies the options' strings, so the caller's may go once tsr_worker_new returns. */
static int copy_options(tsr_worker *h, const tsr_worker_options *opts) {
    h->o = *opts;
    const char **fields[] = {&h->o.scheduler,
                             &h->o.token,
                             &h->o.cpus,
                             &h->o.name,
                             &h->o.listen_host,
                             &h->o.spill_dir,
                             &h->o.fault_kill_kernel};
    for (size_t i = 0; i < TSR__ARRAY_LEN(fields); i++) {
        if (!*fields[i]) continue;
        if (!(h->strs[i] = strdup(*fields[i]))) return -ENOMEM;
        *fields[i] = h->strs[i];
    }
    return 0;
}

int tsr_worker_new(const tsr_worker_options *opts, tsr_worker **out) {
    if (!out) return TSR_EINVALID;
    *out = NULL;
    tsr__logger early = {"worker", TSR_LOG_WARN, NULL, NULL};
    if (opts) {
        early.level = opts->log_level;
        early.cb = opts->logger.callback;
        early.cookie = opts->logger.cookie;
    }
    if (!opts || !opts->scheduler || !opts->scheduler[0]) {
        tsr__log(&early, TSR_LOG_ERROR, "no scheduler address given");
        return TSR_EINVALID;
    }
    tsr_worker *h = calloc(1, sizeof *h);
    if (!h) return -ENOMEM;
    tsr__worker *w = &h->w;
    w->st.status_fd = -1;
    if (copy_options(h, opts) != 0) {
        for (size_t i = 0; i < TSR__ARRAY_LEN(h->strs); i++) free(h->strs[i]);
        free(h);
        return -ENOMEM;
    }
    /* Every worker has a memory limit: by default the machine's (or its cgroup's). */
    if (h->o.memory_limit == 0) h->o.memory_limit = (int64_t)tsr__system_memory();
    opts = w->opts = &h->o;
    if (opts->name && opts->name[0]) {
        snprintf(w->name, sizeof w->name, "%s", opts->name);
    } else {
        char host[48] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(w->name, sizeof w->name, "%s-%ld", host, (long)getpid());
    }
    snprintf(w->who, sizeof w->who, "worker %s", w->name);
    w->log = early;
    w->log.who = w->who;
    /* A GPU worker has one executor: the GPU thread (gpu.c). */
    w->gpu = opts->gpu >= 0;
    w->nexec = w->gpu ? 1 : opts->threads > 0 ? opts->threads : 1;
    tsr__chunkmem_init(&w->mem, tsr__worker_pool_cap(opts, w->nexec));
    choose_pages(w, opts->huge_pages);
    /* Part of the pool's cap is made resident now, before hello, so that a job's buffers do not
     * pay for first touches inside it (pool.c, "warm reserve"). */
    tsr__chunkmem_reserve(&w->mem, TSR__RESERVE_DEFAULT * (uint64_t)w->nexec);
    w->mem_ok = 1;
    tsr__store_init(&w->store);
    w->store.mem = &w->mem;
    tsr__kmap_init(&w->pending);
    tsr__kmap_init(&w->fetched);
    tsr__kmap_init(&w->replicas);
    w->rep_cap = replica_cap(opts);
    tsr__stats_init(&w->st);

    w->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    w->execs = calloc((size_t)w->nexec, sizeof *w->execs);
    int rc = w->zone && w->execs ? tsr__roots_init(w) : -ENOMEM;
    h->o.data_roots = NULL; /* resolved into w->roots: the caller's array is not kept */
    h->o.n_data_roots = 0;
    if (rc == 0) rc = tsr__plugins_init(w);
    h->o.plugin_dirs = NULL; /* resolved into w->plugins, likewise */
    h->o.n_plugin_dirs = 0;
    if (rc == 0) rc = worker_start(w);
    if (rc == 0 && (rc = uv_async_init(&w->loop, &h->stop_async, on_stop_async)) == 0) {
        /* Unreferenced: it must not keep tsr_worker_run going once everything else closed, and
         * it stays open until free so that a late tsr_worker_stop still finds a live handle. */
        h->stop_async.data = h;
        h->async_ok = 1;
        uv_unref((uv_handle_t *)&h->stop_async);
    }
    if (rc != 0) {
        worker_stop(w, "start-up failed");
        finish_loop(h);
        release(h);
        return rc;
    }
    if (!opts->name || !opts->name[0]) {
        /* The default name gets the peer port once it is bound, so that unnamed workers of one
         * process (tests, embedding programs) still have names of their own; the hello that
         * carries it goes out from the loop, after this. */
        const char *port = strrchr(w->peer_addr, ':');
        size_t n = strlen(w->name);
        if (port) snprintf(w->name + n, sizeof w->name - n, "-%s", port + 1);
        snprintf(w->who, sizeof w->who, "worker %s", w->name);
    }
    *out = h;
    return 0;
}

const char *tsr_worker_address(const tsr_worker *h) {
    return h ? h->w.peer_addr : NULL;
}

const char *tsr_worker_name(const tsr_worker *h) {
    return h ? h->w.name : NULL;
}

int tsr_worker_run(tsr_worker *h) {
    if (!h || h->ran) return TSR_EINVALID;
    h->ran = 1;
    tsr__worker *w = &h->w;
    tsr__uv_run(&w->loop, UV_RUN_DEFAULT);
    uint64_t hwm = 0, rss = 0;
    if (w->st.status_fd >= 0) tsr__read_rss(w->st.status_fd, &hwm, &rss);
    tsr__poolstats ps;
    tsr__chunkmem_read(&w->mem, &ps);
    tsr__log(&w->log, TSR_LOG_INFO,
             "stopped: %llu tasks (%llu in place) in %llu compute messages, reported in %llu "
             "done messages; chunk peak %llu bytes (%llu in the store); VmHWM %llu bytes; pool: "
             "%llu reused, %llu new, %llu evicted, pages %s after %llu switches; replicas: %llu "
             "made, %llu dropped early",
             (unsigned long long)w->st.tasks, (unsigned long long)w->st.in_place,
             (unsigned long long)w->st.msgs_in, (unsigned long long)w->st.msgs_out,
             (unsigned long long)w->mem.peak, (unsigned long long)w->store.peak,
             (unsigned long long)hwm, (unsigned long long)ps.hits, (unsigned long long)ps.misses,
             (unsigned long long)ps.evicted, ps.pages == TSR__PAGES_SMALL ? "4 KiB" : "huge",
             (unsigned long long)ps.switches, (unsigned long long)w->rep_made,
             (unsigned long long)w->rep_dropped);
    if (w->st.spill.on && (w->st.spill.spilled_bytes || w->st.spill.unspilled_bytes))
        tsr__log(&w->log, TSR_LOG_INFO,
                 "spilled %llu bytes to disk, read %llu back (memory limit %lld bytes)",
                 (unsigned long long)w->st.spill.spilled_bytes,
                 (unsigned long long)w->st.spill.unspilled_bytes, (long long)w->opts->memory_limit);
    if (w->gpu) {
        tsr__devstats ds;
        tsr__devtier_read(&w->dev, &ds);
        tsr__log(&w->log, TSR_LOG_INFO,
                 "device: peak %llu of %llu bytes; in %llu copies (%llu bytes), out %llu "
                 "(%llu bytes); %llu evicted; %llu tasks on the host for want of room",
                 (unsigned long long)ds.peak, (unsigned long long)ds.limit,
                 (unsigned long long)ds.h2d_count, (unsigned long long)ds.h2d_bytes,
                 (unsigned long long)ds.d2h_count, (unsigned long long)ds.d2h_bytes,
                 (unsigned long long)ds.evicted, (unsigned long long)w->gpu_fallbacks);
    }
    return w->exit_code;
}

void tsr_worker_stop(tsr_worker *h) {
    if (!h) return;
    atomic_store(&h->stop_req, 1); /* lock-free: async-signal-safe, as uv_async_send is */
    uv_async_send(&h->stop_async);
}

void tsr_worker_retire(tsr_worker *h) {
    if (!h) return;
    atomic_store(&h->retire_req, 1);
    uv_async_send(&h->stop_async);
}

void tsr_worker_free(tsr_worker *h) {
    if (!h) return;
    tsr__worker *w = &h->w;
    if (!w->stopping) worker_stop(w, "freed"); /* never ran, or not stopped */
    finish_loop(h);
    release(h);
}
