/* The client's side of the cluster: connecting and the hello, submitting a lowered graph and
 * waiting for it (with progress, called back and published for other threads), monitor
 * snapshots, and fetching computed chunks straight from the workers that hold them, into a
 * caller buffer or a .npy file (never assembling the array in memory). All of it runs the
 * client's own loop on the caller's thread, inside the blocking API calls; only
 * tsr_client_progress() and tsr_client_interrupt() may come from other threads. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "array/array.h"
#include "array/client.h"
#include "array/local.h"
#include "wire/wire.h"

typedef struct fetch fetch;

/* A connection to one worker's peer port, with its FIFO of outstanding gets. */
typedef struct peer {
    struct peer *next;
    struct tsr__rt *rt;
    char addr[128];
    tsr__conn *conn;
    int welcomed;
    fetch **fifo; /* outstanding requests in send order */
    size_t head, count, cap;
} peer;

/* One requested chunk. */
struct fetch {
    uint64_t job;
    uint32_t id;
    int64_t ci; /* chunk index in the array's grid */
    void *data; /* received payload (owned) */
    uint64_t nbytes;
};

typedef struct tsr__rt {
    tsr_client *c;
    /* What the blocking call currently waits for. */
    int welcomed;
    int failed; /* a negative code once the wait must end in failure */
    char failmsg[1024];
    int interrupted;
    uv_async_t interrupt;
    uv_timer_t timer;
    /* Job tracking (one submission at a time). */
    uint64_t job;
    int accepted, finished;
    tsr_progress progress;
    const tsr_compute_options *copts;
    double t0;
    double last_cb; /* when the progress callback last ran */
    uint32_t *out_ids;
    char **out_addr;
    size_t nout;
    json_t *stats;   /* of the last finished job (tsr_client_stats_json), or NULL */
    uint64_t ntasks; /* tasks in the graph submitted last */
    /* Monitor snapshots: the latest `info`, and how many were asked for and answered. The
     * scheduler also sends one unasked on hello; an info that arrives when every request is
     * answered is that one (or a reply overtaken by it): kept, not counted. */
    json_t *info;
    uint64_t info_asked, info_got;
    int info_ready;
    /* wait_workers; also carries a failed task's array index */
    int64_t workers;
    int got_workers;
    /* Fetching. */
    peer *peers;
    /* The fetch in progress: chunks of `array` go to sink(). */
    tsr_array *array;
    int (*sink)(struct tsr__rt *rt, fetch *f);
    void *sink_user;
    int64_t next_chunk; /* next chunk index to request */
    int64_t chunks_done;
    int fetch_complete;
} tsr__rt;

static const tsr__conn_cbs sched_cbs;
static const tsr__conn_cbs peer_cbs;

static void set_failed(tsr__rt *rt, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_failed(tsr__rt *rt, int code, const char *fmt, ...) {
    if (rt->failed) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rt->failmsg, sizeof rt->failmsg, fmt, ap);
    va_end(ap);
    rt->failed = code;
    uv_stop(&rt->c->loop);
}

static void send_hello(tsr__conn *conn, const char *role, const char *token) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    tsr__mp_pack_type(&pk, token && *token ? 5 : 4, "hello");
    tsr__mp_pack_str(&pk, "v");
    msgpack_pack_int(&pk, TSR_PROTOCOL_VERSION);
    tsr__mp_pack_str(&pk, "role");
    tsr__mp_pack_str(&pk, role);
    tsr__mp_pack_str(&pk, "name");
    tsr__mp_pack_str(&pk, "client");
    if (token && *token) {
        tsr__mp_pack_str(&pk, "token");
        tsr__mp_pack_str(&pk, token);
    }
    tsr__conn_send(conn, &sb, NULL, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
}

/* Sends a header-only message built by fill(). */
static int send_simple(tsr__conn *conn, const char *type, const char *key, int64_t value) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    tsr__mp_pack_type(&pk, key ? 2 : 1, type);
    if (key) {
        tsr__mp_pack_str(&pk, key);
        msgpack_pack_int64(&pk, value);
    }
    int rc = tsr__conn_send(conn, &sb, NULL, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ---- scheduler connection ---- */

static void sched_on_connect(tsr__conn *conn, int status) {
    tsr__rt *rt = conn->owner;
    if (status < 0) {
        set_failed(rt, status, "cannot connect to scheduler at %s: %s", rt->c->address,
                   uv_strerror(status));
        return;
    }
    send_hello(conn, rt->c->monitor ? "monitor" : "client", rt->c->token);
}

static void sched_on_close(tsr__conn *conn, int status, const char *reason) {
    tsr__rt *rt = conn->owner;
    rt->c->sched = NULL;
    rt->c->connected = 0;
    set_failed(rt, TSR_ECLOSED, "lost the connection to the scheduler at %s (%s)", rt->c->address,
               reason);
}

/* Publishes the progress for tsr_client_progress() (client.h: a sequence lock, this thread
 * being its only writer). */
static void publish(tsr_client *c, int running, const tsr_progress *p) {
    unsigned seq = atomic_load_explicit(&c->pub.seq, memory_order_relaxed);
    atomic_store_explicit(&c->pub.seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&c->pub.running, running, memory_order_relaxed);
    atomic_store_explicit(&c->pub.done, p->done, memory_order_relaxed);
    atomic_store_explicit(&c->pub.total, p->total, memory_order_relaxed);
    atomic_store_explicit(&c->pub.erred, p->erred, memory_order_relaxed);
    atomic_store_explicit(&c->pub.elapsed, p->elapsed, memory_order_relaxed);
    atomic_store_explicit(&c->pub.seq, seq + 2, memory_order_release);
}

/* Calls the compute options' progress callback, at most every progress_interval_ms unless
 * `final` (the 100% call, which always comes). */
static void report_progress(tsr__rt *rt, int final) {
    const tsr_compute_options *o = rt->copts;
    if (!o || !o->progress) return;
    double t = tsr__now();
    if (!final && o->progress_interval_ms > 0 && rt->last_cb > 0 &&
        (t - rt->last_cb) * 1000.0 < o->progress_interval_ms)
        return;
    rt->last_cb = t;
    o->progress(&rt->progress, o->user);
}

static void handle_finished(tsr__rt *rt, const msgpack_object *hdr) {
    const msgpack_object *outs = tsr__mp_get(hdr, "outputs");
    if (!outs || outs->type != MSGPACK_OBJECT_ARRAY) {
        set_failed(rt, TSR_EPROTOCOL, "malformed 'finished' message from the scheduler");
        return;
    }
    size_t n = outs->via.array.size;
    rt->out_ids = calloc(n ? n : 1, sizeof *rt->out_ids);
    rt->out_addr = calloc(n ? n : 1, sizeof *rt->out_addr);
    if (!rt->out_ids || !rt->out_addr) {
        set_failed(rt, -ENOMEM, "out of memory");
        return;
    }
    rt->nout = n;
    for (size_t k = 0; k < n; k++) {
        const msgpack_object *e = &outs->via.array.ptr[k];
        int64_t id;
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 2 ||
            tsr__mp_as_int(&e->via.array.ptr[0], &id) || id < 0 || id > UINT32_MAX ||
            e->via.array.ptr[1].type != MSGPACK_OBJECT_STR) {
            set_failed(rt, TSR_EPROTOCOL, "malformed output entry from the scheduler");
            return;
        }
        rt->out_ids[k] = (uint32_t)id;
        rt->out_addr[k] =
            strndup(e->via.array.ptr[1].via.str.ptr, e->via.array.ptr[1].via.str.size);
        if (!rt->out_addr[k]) {
            set_failed(rt, -ENOMEM, "out of memory");
            return;
        }
    }
    /* Built here, when the job is done, so `seconds` stops at `finished` and excludes fetching. */
    json_t *st = tsr__stats_json(tsr__mp_get(hdr, "stats"), tsr__now() - rt->t0, rt->ntasks);
    if (st) {
        json_decref(rt->stats);
        rt->stats = st;
    }
    /* The trace, if this job was traced; an untraced job leaves none, so that what
     * tsr_client_trace_json() returns always describes the last computation. */
    tsr__trace_free(rt->c->trace);
    rt->c->trace = NULL;
    if (tsr__trace_parse(tsr__mp_get(hdr, "trace"), rt->job, &rt->c->trace) != 0) {
        set_failed(rt, -ENOMEM, "out of memory keeping the trace");
        return;
    }
    rt->finished = 1;
    uv_stop(&rt->c->loop);
}

static void sched_on_frame(tsr__conn *conn, const msgpack_object *hdr, void *payload,
                           uint64_t plen) {
    tsr__rt *rt = conn->owner;
    char type[32];
    if (tsr__mp_type(hdr, type, sizeof type)) {
        tsr__conn_close(conn, "message without a type");
        return;
    }
    if (strcmp(type, "welcome") == 0) {
        rt->welcomed = 1;
        uv_stop(&rt->c->loop);
    } else if (strcmp(type, "error") == 0) {
        char msg[512] = "unknown error";
        tsr__mp_get_str(hdr, "msg", msg, sizeof msg);
        set_failed(rt, TSR_EPROTOCOL, "scheduler at %s: %s", rt->c->address, msg);
    } else if (strcmp(type, "accepted") == 0) {
        uint64_t job = 0, tasks = 0;
        tsr__mp_get_uint(hdr, "job", &job);
        tsr__mp_get_uint(hdr, "tasks", &tasks);
        rt->job = job;
        rt->accepted = 1;
        rt->progress.total = tasks;
    } else if (strcmp(type, "rejected") == 0) {
        char msg[512] = "?";
        tsr__mp_get_str(hdr, "msg", msg, sizeof msg);
        set_failed(rt, TSR_EPROTOCOL, "the scheduler rejected the graph: %s", msg);
    } else if (strcmp(type, "progress") == 0) {
        uint64_t v;
        if (tsr__mp_get_uint(hdr, "done", &v) == 0) rt->progress.done = v;
        if (tsr__mp_get_uint(hdr, "total", &v) == 0) rt->progress.total = v;
        if (tsr__mp_get_uint(hdr, "erred", &v) == 0) rt->progress.erred = v;
        rt->progress.elapsed = tsr__now() - rt->t0;
        publish(rt->c, 1, &rt->progress);
        report_progress(rt, 0);
    } else if (strcmp(type, "finished") == 0) {
        handle_finished(rt, hdr);
    } else if (strcmp(type, "failed") == 0) {
        char msg[700] = "?";
        tsr__mp_get_str(hdr, "msg", msg, sizeof msg);
        int64_t id = -1, array = -1;
        tsr__mp_get_int(hdr, "id", &id);
        tsr__mp_get_int(hdr, "array", &array);
        rt->progress.erred++;
        /* compute() turns the array index into a name. */
        rt->workers = array;
        set_failed(rt, TSR_ECOMPUTE, "task %lld: %s", (long long)id, msg);
    } else if (strcmp(type, "info") == 0 && rt->c->monitor) {
        json_t *j = tsr__mp_to_json(hdr, "t");
        if (j) {
            json_decref(rt->info);
            rt->info = j;
        }
        if (rt->info_got < rt->info_asked) rt->info_got++;
        if (rt->info_got == rt->info_asked) {
            rt->info_ready = 1;
            uv_stop(&rt->c->loop);
        }
    } else if (strcmp(type, "workers") == 0) {
        int64_t n = 0;
        tsr__mp_get_int(hdr, "count", &n);
        rt->workers = n;
        rt->got_workers = 1;
        uv_stop(&rt->c->loop);
    }
    (void)payload;
    (void)plen;
}

static const tsr__conn_cbs sched_cbs = {
    .on_frame = sched_on_frame,
    .on_close = sched_on_close,
    .on_connect = sched_on_connect,
};

/* ---- running the loop until a condition ---- */

static void on_interrupt(uv_async_t *a) {
    tsr__rt *rt = a->data;
    if (rt->interrupted) set_failed(rt, TSR_EINTERRUPTED, "interrupted");
}

static void on_timeout(uv_timer_t *t) {
    tsr__rt *rt = t->data;
    set_failed(rt, -ETIMEDOUT, "timed out waiting for the scheduler at %s", rt->c->address);
}

/* Runs the loop until *flag is set or a failure; timeout_ms 0 = none. */
static int run_until(tsr__rt *rt, const int *flag, int timeout_ms) {
    if (timeout_ms > 0) uv_timer_start(&rt->timer, on_timeout, (uint64_t)timeout_ms, 0);
    while (!*flag && !rt->failed) {
        if (rt->interrupted) {
            set_failed(rt, TSR_EINTERRUPTED, "interrupted");
            break;
        }
        uv_run(&rt->c->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&rt->timer);
    if (rt->failed) {
        int rc = rt->failed;
        tsr__fail(rt->c, rc, "%s", rt->failmsg);
        /* Keep the failure for callers that check; the next wait starts clean. */
        rt->failed = 0;
        return rc;
    }
    return 0;
}

void tsr_client_interrupt(tsr_client *c) {
    if (!c || !c->rt) return;
    c->rt->interrupted = 1;
    uv_async_send(&c->rt->interrupt); /* async-signal-safe */
}

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
    c->sched = tsr__conn_new(&c->loop, &sched_cbs, rt, &c->log);
    if (!c->sched) return tsr__fail(c, -ENOMEM, "out of memory");
    rc = tsr__conn_connect(c->sched, address);
    if (rc) {
        tsr__conn_close(c->sched, "bad address");
        c->sched = NULL;
        return tsr__fail(c, rc, "invalid scheduler address \"%s\" (expected HOST:PORT)", address);
    }
    c->connected = 1;
    rc = run_until(rt, &rt->welcomed, timeout_ms);
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
    if (c->rt) {
        /* Connections' on_close callbacks must not report failures into a dying runtime. */
        c->rt->failed = TSR_ECLOSED;
    }
    uv_walk(&c->loop, close_walk, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&c->loop);
    if (rc) tsr__log(&c->log, TSR_LOG_WARN, "event loop not empty at close: %s", uv_strerror(rc));
    c->loop_init = 0;
    if (c->rt) {
        peer *p = c->rt->peers;
        while (p) {
            peer *next = p->next;
            free(p->fifo);
            free(p);
            p = next;
        }
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
}

void tsr_compute_options_default(tsr_compute_options *o) {
    memset(o, 0, sizeof *o);
    o->progress_interval_ms = 100;
}

int tsr_client_connect(const char *address, const tsr_client_options *opts, tsr_client **out) {
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
    rc = tsr__client_open(c, address, opts->token, opts->connect_timeout_ms);
    if (rc) {
        tsr__fail_thread(rc, "%s", c->errmsg);
        tsr_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int tsr__client_wait_workers(tsr_client *c, int n, int timeout_ms) {
    tsr__rt *rt = c->rt;
    rt->got_workers = 0;
    int rc = send_simple(c->sched, "wait_workers", "count", n);
    if (rc) return tsr__fail(c, rc, "cannot talk to the scheduler: %s", tsr_strerror(rc));
    return run_until(rt, &rt->got_workers, timeout_ms);
}

void tsr__client_shutdown_cluster(tsr_client *c) {
    if (c->sched && !c->sched->closing) send_simple(c->sched, "shutdown", NULL, 0);
    if (c->loop_init) uv_run(&c->loop, UV_RUN_NOWAIT);
}

/* ---- submitting ---- */

static void free_payload(void *p) {
    free(p);
}

static void clear_outputs(tsr__rt *rt) {
    for (size_t k = 0; k < rt->nout; k++) free(rt->out_addr[k]);
    free(rt->out_addr);
    free(rt->out_ids);
    rt->out_addr = NULL;
    rt->out_ids = NULL;
    rt->nout = 0;
}

void tsr__array_release_computed(tsr_array *a) {
    tsr__computed *cp = &a->computed;
    if (!cp->task) return;
    for (int64_t k = 0; k < cp->nchunks; k++) free(cp->addr[k]);
    free(cp->addr);
    free(cp->task);
    tsr__jobref *jr = cp->jobref;
    memset(cp, 0, sizeof *cp);
    if (jr && --jr->refs == 0) {
        tsr_client *c = jr->client;
        if (c->connected && c->sched) {
            send_simple(c->sched, "release", "job", (int64_t)jr->job);
            uv_run(&c->loop, UV_RUN_NOWAIT);
        }
        free(jr);
    }
}

static int submit_graph(tsr_client *c, const tsr_graph *g, int trace) {
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    int rc = tsr__graph_pack(g, &body);
    if (rc) {
        msgpack_sbuffer_destroy(&body);
        return tsr__fail(c, rc, "cannot encode the task graph: %s", tsr_strerror(rc));
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    tsr__mp_pack_type(&pk, trace ? 3 : 2, "submit");
    tsr__mp_pack_str(&pk, "n");
    msgpack_pack_uint64(&pk, body.size);
    if (trace) {
        tsr__mp_pack_str(&pk, "trace");
        msgpack_pack_true(&pk);
    }
    char *payload = body.data;
    size_t plen = body.size;
    body.data = NULL;
    rc = tsr__conn_send(c->sched, &sb, payload, plen, free_payload, payload);
    msgpack_sbuffer_destroy(&sb);
    if (rc) return tsr__fail(c, rc, "cannot send the graph to the scheduler: %s", tsr_strerror(rc));
    return 0;
}

int tsr_compute(tsr_client *c, tsr_array *const *arrays, size_t n,
                const tsr_compute_options *opts) {
    if (!c) return TSR_EINVALID;
    if (n > 0 && !arrays) return tsr__fail(c, TSR_EINVALID, "tsr_compute: arrays is NULL");
    for (size_t k = 0; k < n; k++) {
        if (!arrays[k]) return tsr__fail(c, TSR_EINVALID, "tsr_compute: arrays[%zu] is NULL", k);
        if (arrays[k]->client != c)
            return tsr__fail(c, TSR_EINVALID, "array \"%s\" belongs to another client",
                             arrays[k]->name);
    }
    if (!c->connected || !c->rt)
        return tsr__fail(c, TSR_ENOTCONNECTED,
                         "this client is not connected to a cluster (offline client)");
    if (c->monitor)
        return tsr__fail(c, TSR_EINVALID, "a monitor client cannot compute (it only watches)");
    if (n == 0) return 0;
    tsr__rt *rt = c->rt;
    int started = 0;
    tsr_graph g;
    tsr__graph_init(&g);
    int rc = tsr__lower(c, arrays, n, &g);
    if (rc) goto out;
    tsr__graph_finish(&g);
    rt->accepted = rt->finished = 0;
    memset(&rt->progress, 0, sizeof rt->progress);
    rt->progress.total = g.ntasks;
    rt->ntasks = g.ntasks;
    rt->t0 = tsr__now();
    rt->last_cb = 0;
    rt->copts = opts;
    atomic_store_explicit(&c->pub.t0, rt->t0, memory_order_relaxed);
    publish(c, 1, &rt->progress);
    started = 1;
    rt->workers = -1;
    rc = submit_graph(c, &g, opts && opts->trace);
    if (rc) goto out;
    rc = run_until(rt, &rt->finished, 0);
    if (rc == TSR_ECOMPUTE && rt->workers >= 0 && (size_t)rt->workers < g.narrays) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", c->errmsg);
        tsr__fail(c, rc, "array \"%s\" (%s): %s", g.arrays[rt->workers].name,
                  g.arrays[rt->workers].op, msg);
    }
    if (rc) {
        if (rt->accepted && c->connected && c->sched) {
            /* Cancels the job if it is still running, frees whatever it holds. */
            send_simple(c->sched, "release", "job", (int64_t)rt->job);
            uv_run(&c->loop, UV_RUN_NOWAIT);
        }
        goto out;
    }
    /* Map task ids to holders, then record each array's chunks. */
    char **by_id = calloc(g.ntasks ? g.ntasks : 1, sizeof *by_id);
    tsr__jobref *jr = calloc(1, sizeof *jr);
    if (!by_id || !jr) {
        free(by_id);
        free(jr);
        rc = tsr__fail(c, -ENOMEM, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < rt->nout; k++)
        if (rt->out_ids[k] < g.ntasks) by_id[rt->out_ids[k]] = rt->out_addr[k];
    jr->job = rt->job;
    jr->client = c;
    for (size_t k = 0; k < n; k++) {
        tsr_array *a = arrays[k];
        if (a->computed.jobref == jr) continue; /* listed twice */
        tsr__array_release_computed(a);
        int64_t nch = tsr__array_nchunks(a);
        a->computed.task = malloc((size_t)(nch ? nch : 1) * sizeof *a->computed.task);
        a->computed.addr = calloc((size_t)(nch ? nch : 1), sizeof *a->computed.addr);
        if (!a->computed.task || !a->computed.addr) {
            free(a->computed.task);
            free(a->computed.addr);
            a->computed.task = NULL;
            a->computed.addr = NULL;
            rc = tsr__fail(c, -ENOMEM, "out of memory");
            break;
        }
        a->computed.nchunks = nch;
        a->computed.job = rt->job;
        a->computed.jobref = jr;
        jr->refs++;
        for (int64_t ci = 0; ci < nch; ci++) {
            uint32_t id = a->lower_tasks[ci];
            a->computed.task[ci] = id;
            a->computed.addr[ci] = by_id[id] ? strdup(by_id[id]) : NULL;
            if (!a->computed.addr[ci]) {
                rc = tsr__fail(c, TSR_EPROTOCOL,
                               "the scheduler did not say where chunk %lld of \"%s\" is",
                               (long long)ci, a->name);
            }
        }
    }
    free(by_id);
    if (jr->refs == 0) free(jr);
    if (rc == 0) {
        rt->progress.done = rt->progress.total;
        rt->progress.elapsed = tsr__now() - rt->t0;
        report_progress(rt, 1);
    }
out:
    if (started) {
        rt->progress.elapsed = tsr__now() - rt->t0;
        publish(c, 0, &rt->progress);
    }
    clear_outputs(rt);
    rt->copts = NULL;
    tsr__graph_free(&g);
    return rc;
}

int tsr_client_progress(tsr_client *c, tsr_progress *out) {
    if (!c || !out) return TSR_EINVALID;
    tsr_progress p;
    int running;
    double t0;
    unsigned s1, s2;
    do {
        s1 = atomic_load_explicit(&c->pub.seq, memory_order_acquire);
        running = atomic_load_explicit(&c->pub.running, memory_order_relaxed);
        p.done = atomic_load_explicit(&c->pub.done, memory_order_relaxed);
        p.total = atomic_load_explicit(&c->pub.total, memory_order_relaxed);
        p.erred = atomic_load_explicit(&c->pub.erred, memory_order_relaxed);
        p.elapsed = atomic_load_explicit(&c->pub.elapsed, memory_order_relaxed);
        t0 = atomic_load_explicit(&c->pub.t0, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        s2 = atomic_load_explicit(&c->pub.seq, memory_order_relaxed);
    } while ((s1 & 1) || s1 != s2);
    if (running) p.elapsed = tsr__now() - t0;
    *out = p;
    return running;
}

/* ---- monitor snapshots ---- */

int tsr_client_connect_monitor(const char *address, const tsr_client_options *opts,
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
    c->monitor = 1;
    rc = tsr__client_open(c, address, opts->token, opts->connect_timeout_ms);
    if (rc) {
        tsr__fail_thread(rc, "%s", c->errmsg);
        tsr_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int tsr_client_info_json(tsr_client *c, int timeout_ms, char **out) {
    if (!out)
        return c ? tsr__fail(c, TSR_EINVALID, "tsr_client_info_json: out is NULL") : TSR_EINVALID;
    *out = NULL;
    if (!c) return TSR_EINVALID;
    if (!c->monitor)
        return tsr__fail(c, TSR_EINVALID,
                         "tsr_client_info_json needs a client from tsr_client_connect_monitor");
    if (!c->connected || !c->rt || !c->sched)
        return tsr__fail(c, TSR_ENOTCONNECTED, "lost the connection to the scheduler at %s",
                         c->address);
    tsr__rt *rt = c->rt;
    int rc = send_simple(c->sched, "info", NULL, 0);
    if (rc) return tsr__fail(c, rc, "cannot talk to the scheduler: %s", tsr_strerror(rc));
    rt->info_asked++;
    rt->info_ready = 0;
    rc = run_until(rt, &rt->info_ready, timeout_ms);
    if (rc) return rc;
    size_t n = rt->info ? json_dumpb(rt->info, NULL, 0, JSON_COMPACT) : 0;
    char *s = n ? malloc(n + 1) : NULL;
    if (!s || json_dumpb(rt->info, s, n, JSON_COMPACT) != n) {
        free(s);
        return tsr__fail(c, -ENOMEM, "out of memory");
    }
    s[n] = 0;
    *out = s;
    return 0;
}

char *tsr_client_stats_json(tsr_client *c) {
    if (!c || !c->rt || !c->rt->stats) return NULL;
    /* Dumped into our own malloc'd buffer rather than json_dumps' so the caller's free() is right
     * even if the program gave jansson other allocators. */
    size_t n = json_dumpb(c->rt->stats, NULL, 0, JSON_COMPACT);
    if (n == 0) return NULL;
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (json_dumpb(c->rt->stats, s, n, JSON_COMPACT) != n) {
        free(s);
        return NULL;
    }
    s[n] = 0;
    return s;
}

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
    uint64_t job = 0;
    int64_t id = -1;
    if (!f || !tsr__mp_str_eq(tsr__mp_get(hdr, "t"), "chunk") ||
        tsr__mp_get_uint(hdr, "job", &job) || tsr__mp_get_int(hdr, "id", &id) || job != f->job ||
        id != (int64_t)f->id || plen != f->nbytes)
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
    char type[32];
    if (tsr__mp_type(hdr, type, sizeof type)) {
        tsr__conn_close(conn, "message without a type");
        return;
    }
    if (strcmp(type, "welcome") == 0) {
        p->welcomed = 1;
        return;
    }
    fetch *f = peer_front(p);
    if (strcmp(type, "error") == 0) {
        char msg[512] = "?";
        tsr__mp_get_str(hdr, "msg", msg, sizeof msg);
        set_failed(r, TSR_EPROTOCOL, "worker %s refused the connection: %s", p->addr, msg);
        return;
    }
    if (!f) {
        tsr__conn_close(conn, "unexpected message from worker");
        return;
    }
    if (strcmp(type, "missing") == 0) {
        set_failed(r, TSR_ECOMPUTE, "chunk %lld of array \"%s\" is no longer held by worker %s",
                   (long long)f->ci, r->array->name, p->addr);
        return;
    }
    if (strcmp(type, "chunk") != 0) {
        tsr__conn_close(conn, "unexpected message from worker");
        return;
    }
    peer_pop(p);
    if (!f->data && f->nbytes == 0) f->data = malloc(1);
    int rc = r->sink(r, f);
    free(f->data);
    free(f);
    if (rc) {
        set_failed(r, rc, "%s", r->c->errmsg);
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
        if (p->count) {
            set_failed(r, TSR_ECLOSED, "lost the connection to worker %s while fetching (%s)",
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
    send_hello(p->conn, "peer", rt->c->token);
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
            set_failed(rt, -ENOMEM, "cannot reach worker %s", a->computed.addr[ci]);
            return;
        }
        f->job = a->computed.job;
        f->id = a->computed.task[ci];
        f->ci = ci;
        f->nbytes = chunk_bytes(a, ci);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        tsr__mp_pack_type(&pk, 3, "get");
        tsr__mp_pack_str(&pk, "job");
        msgpack_pack_uint64(&pk, f->job);
        tsr__mp_pack_str(&pk, "id");
        msgpack_pack_uint32(&pk, f->id);
        tsr__conn_send(p->conn, &sb, NULL, 0, NULL, NULL);
        msgpack_sbuffer_destroy(&sb);
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
    rt->array = a;
    rt->sink = sink;
    rt->sink_user = user;
    rt->next_chunk = 0;
    rt->chunks_done = 0;
    rt->fetch_complete = a->computed.nchunks == 0;
    pump(rt);
    int rc = run_until(rt, &rt->fetch_complete, 0);
    rt->array = NULL;
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

typedef struct save_ctx {
    int fd;
    int64_t data_offset;
    size_t es;
    const char *path;
    tsr_client *c;
} save_ctx;

static int write_run(void *u, int64_t dst, const char *src, size_t nbytes) {
    save_ctx *s = u;
    off_t pos = (off_t)(s->data_offset + dst * (int64_t)s->es);
    while (nbytes > 0) {
        ssize_t w = pwrite(s->fd, src, nbytes, pos);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return tsr__fail(s->c, -e, "cannot write \"%s\": %s", s->path, strerror(e));
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

int tsr_array_save_npy(tsr_array *a, const char *path) {
    if (!a) return TSR_EINVALID;
    tsr_client *c = a->client;
    if (!path || !*path) return tsr__fail(c, TSR_EINVALID, "tsr_array_save_npy: empty path");
    if (!a->computed.task)
        return tsr__fail(c, TSR_ENOTCOMPUTED,
                         "array \"%s\" has not been computed (call tsr_compute first)", a->name);
    char hdr[512];
    int hl = tsr__npy_format_header(a->dtype, a->ndim, a->shape, hdr, sizeof hdr);
    if (hl < 0) return tsr__fail(c, hl, "cannot format a .npy header for \"%s\"", a->name);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return tsr__fail(c, -ENOMEM, "out of memory");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp-XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return tsr__fail(c, -e, "cannot create \"%s\": %s", path, strerror(e));
    }
    fchmod(fd, 0644);
    save_ctx s = {fd, hl, tsr_dtype_size(a->dtype), path, c};
    int64_t total = hl + tsr_array_size(a) * (int64_t)s.es;
    int rc = write_run(&(save_ctx){fd, 0, 1, path, c}, 0, hdr, (size_t)hl);
    if (rc == 0 && ftruncate(fd, (off_t)total) != 0) {
        int e = errno;
        rc = tsr__fail(c, -e, "cannot write \"%s\": %s", path, strerror(e));
    }
    if (rc == 0) rc = fetch_all(a, save_sink, &s);
    if (close(fd) != 0 && rc == 0) {
        int e = errno;
        rc = tsr__fail(c, -e, "cannot write \"%s\": %s", path, strerror(e));
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        int e = errno;
        rc = tsr__fail(c, -e, "cannot rename \"%s\" to \"%s\": %s", tmp, path, strerror(e));
    }
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}
