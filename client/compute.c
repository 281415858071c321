/* Computing: submitting a lowered graph, following the job to its end (accepted, progress,
 * finished or failed) with progress called back and published for other threads, and recording
 * where each output chunk now lives. Runs inside tsr_compute on the caller's thread; only
 * tsr_client_progress() reads from other threads. The messages come from the network: a
 * malformed one fails the computation, never the process. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

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

static void handle_finished(tsr__rt *rt, const tsr__msg_finished *m) {
    uint32_t n = m->outputs.n;
    rt->out_ids = calloc(n ? n : 1, sizeof *rt->out_ids);
    rt->out_addr = calloc(n ? n : 1, sizeof *rt->out_addr);
    if (!rt->out_ids || !rt->out_addr) {
        tsr__rt_fail(rt, -ENOMEM, "out of memory");
        return;
    }
    rt->nout = n;
    for (uint32_t k = 0; k < n; k++) {
        tsr__m_output e;
        TSR__LIST_GET(&m->outputs, output, k, &e);
        rt->out_ids[k] = e.id;
        if (!TSR__M_HAS(output, &e, addr)) {
            /* A streamed chunk the client has written and released is nowhere now; any other
             * output is somewhere (those the call keeps are checked when recorded). */
            if (rt->store) continue;
            tsr__rt_fail(rt, TSR_EPROTOCOL, "malformed output entry from the scheduler");
            return;
        }
        rt->out_addr[k] = strndup(e.addr.p, e.addr.n);
        if (!rt->out_addr[k]) {
            tsr__rt_fail(rt, -ENOMEM, "out of memory");
            return;
        }
        /* A scheduler that does not stream tells where everything is only now. */
        if (rt->store) tsr__ostream_on_computed(rt, e.id, rt->out_addr[k]);
    }
    /* Built here, when the job is done, so `seconds` stops at `finished` and excludes fetching. */
    json_t *st = tsr__stats_json(TSR__MSG_HAS(finished, m, stats) ? &m->stats : NULL,
                                 tsr__now() - rt->t0, rt->ntasks);
    if (st) {
        json_decref(rt->stats);
        rt->stats = st;
    }
    /* The trace, if this job was traced; an untraced job leaves none, so that what
     * tsr_client_trace_json() returns always describes the last computation. */
    tsr__trace_free(rt->c->trace);
    rt->c->trace = NULL;
    if (TSR__MSG_HAS(finished, m, trace) &&
        tsr__trace_parse(&m->trace, rt->job, &rt->c->trace) != 0) {
        tsr__rt_fail(rt, -ENOMEM, "out of memory keeping the trace");
        return;
    }
    rt->finished = 1;
    rt->complete = !rt->store || tsr__ostream_written(rt->store);
    uv_stop(&rt->c->loop);
}

/* Streamed output chunks now in memory (PROTOCOL.md "Streamed outputs"). */
static void on_computed(tsr__rt *rt, const tsr__msg_computed *m) {
    char addr[128];
    for (uint32_t k = 0; k < m->outputs.n && !rt->failed; k++) {
        tsr__m_output e;
        TSR__LIST_GET(&m->outputs, output, k, &e);
        if (!TSR__M_HAS(output, &e, addr) || tsr__str_copy(addr, sizeof addr, e.addr) != 0) {
            tsr__rt_fail(rt, TSR_EPROTOCOL, "malformed computed entry from the scheduler");
            return;
        }
        tsr__ostream_on_computed(rt, e.id, addr);
    }
}

static void on_progress(tsr__rt *rt, const tsr__msg_progress *m) {
    rt->progress.done = m->done;
    rt->progress.total = m->total;
    rt->progress.erred = m->erred;
    rt->progress.elapsed = tsr__now() - rt->t0;
    publish(rt->c, 1, &rt->progress);
    report_progress(rt, 0);
}

static void on_failed(tsr__rt *rt, const tsr__msg_failed *m) {
    char msg[700];
    tsr__str_copy(msg, sizeof msg, m->msg);
    rt->progress.erred++;
    /* compute() turns the array index into a name. */
    rt->workers = m->array;
    rt->failed_task = (int64_t)m->id;
    tsr__rt_fail(rt, TSR_ECOMPUTE, "task %lld: %s", (long long)m->id, msg);
}

/* Is this message about the job of the computation in progress? An interrupted or failed
 * tsr_compute returns without waiting for the rest of its job's messages, which then arrive
 * during a later call: they are dropped. */
static int current_job(const tsr__rt *rt, uint32_t job) {
    return rt->accepted && !rt->finished && job == rt->job;
}

int tsr__compute_on_message(tsr__rt *rt, const tsr__msg *m) {
    if (m->type == TSR__MSG_accepted || m->type == TSR__MSG_rejected) {
        /* The scheduler answers submissions in order: an answer while later submissions wait
         * for theirs belongs to one whose call has returned. */
        if (++rt->answered < rt->submitted) {
            if (m->type == TSR__MSG_accepted && rt->c->sched)
                tsr__send_release(rt->c->sched, m->u.accepted.job); /* orphaned */
            return 1;
        }
    }
    switch (m->type) {
    case TSR__MSG_accepted:
        rt->job = m->u.accepted.job;
        rt->accepted = 1;
        if (TSR__MSG_HAS(accepted, &m->u.accepted, cap) && m->u.accepted.cap.n == 32 &&
            tsr__client_set_cap(rt->c, rt->job, m->u.accepted.cap.p) != 0) {
            tsr__rt_fail(rt, -ENOMEM, "out of memory");
            break;
        }
        rt->progress.total = m->u.accepted.tasks;
        if (rt->store)
            tsr__ostream_start(rt, TSR__MSG_HAS(accepted, &m->u.accepted, stream) &&
                                       m->u.accepted.stream);
        break;
    case TSR__MSG_computed:
        /* Also after `finished`: a chunk lost with its worker is made and reported again. */
        if (rt->store && rt->accepted && m->u.computed.job == rt->job)
            on_computed(rt, &m->u.computed);
        break;
    case TSR__MSG_rejected: {
        char msg[512];
        tsr__str_copy(msg, sizeof msg, m->u.rejected.msg);
        tsr__rt_fail(rt, TSR_EPROTOCOL, "the scheduler rejected the graph: %s", msg);
        break;
    }
    case TSR__MSG_progress:
        if (current_job(rt, m->u.progress.job)) on_progress(rt, &m->u.progress);
        break;
    case TSR__MSG_finished:
        if (current_job(rt, m->u.finished.job))
            handle_finished(rt, &m->u.finished);
        else /* again, after a loss: where its outputs are now (fetch.c) */
            tsr__fetch_on_moved(rt, &m->u.finished);
        break;
    case TSR__MSG_failed:
        if (current_job(rt, m->u.failed.job)) on_failed(rt, &m->u.failed);
        break;
    case TSR__MSG_workers:
        rt->workers = m->u.workers.count > INT64_MAX ? INT64_MAX : (int64_t)m->u.workers.count;
        rt->got_workers = 1;
        uv_stop(&rt->c->loop);
        break;
    default:
        return 0;
    }
    return 1;
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

static int submit_graph(tsr_client *c, const tsr_graph *g, int trace, uint32_t stream) {
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    int rc = tsr__graph_pack(g, &body);
    if (rc) {
        msgpack_sbuffer_destroy(&body);
        return tsr__fail(c, rc, "cannot encode the task graph: %s", tsr_strerror(rc));
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_submit m = {.n = body.size, .trace = 1};
    TSR__MSG_SET(submit, &m, n);
    if (trace) TSR__MSG_SET(submit, &m, trace);
    if (stream) {
        m.stream = stream;
        TSR__MSG_SET(submit, &m, stream);
    }
    tsr__msg_pack_submit(&sb, &m);
    char *payload = body.data;
    size_t plen = body.size;
    body.data = NULL;
    rc = tsr__conn_send(c->sched, &sb, payload, plen, free_payload, payload);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0) c->rt->submitted++;
    if (rc) return tsr__fail(c, rc, "cannot send the graph to the scheduler: %s", tsr_strerror(rc));
    return 0;
}

/* Computing nothing finishes at once: its statistics say zero tasks, and its trace (when asked
 * for) has no events, so that what the client reports always describes the last call. */
static int record_empty(tsr__rt *rt, const tsr_compute_options *opts) {
    json_t *st = tsr__stats_json(NULL, 0.0, 0);
    if (!st) return tsr__fail(rt->c, -ENOMEM, "out of memory");
    json_decref(rt->stats);
    rt->stats = st;
    tsr__trace_free(rt->c->trace);
    rt->c->trace = NULL;
    tsr__m_job_trace empty = {0};
    if (opts && opts->trace && tsr__trace_parse(&empty, 0, &rt->c->trace) != 0)
        return tsr__fail(rt->c, -ENOMEM, "out of memory");
    return 0;
}

void tsr_compute_options_default(tsr_compute_options *o) {
    memset(o, 0, sizeof *o);
    o->progress_interval_ms = 100;
}

void tsr_store_target_init(tsr_store_target *t, tsr_array *array, const char *path) {
    if (!t) return;
    memset(t, 0, sizeof *t);
    t->array = array;
    t->path = path;
}

/* Records where each chunk of the arrays computed and kept now lives (the job's outputs as
 * `finished` listed them). */
static int record_kept(tsr__rt *rt, const tsr_graph *g, tsr_array *const *arrays, size_t n) {
    tsr_client *c = rt->c;
    int rc = 0;
    char **by_id = calloc(g->ntasks ? g->ntasks : 1, sizeof *by_id);
    tsr__jobref *jr = calloc(1, sizeof *jr);
    if (!by_id || !jr) {
        free(by_id);
        free(jr);
        return tsr__fail(c, -ENOMEM, "out of memory");
    }
    for (size_t k = 0; k < rt->nout; k++)
        if (rt->out_ids[k] < g->ntasks && rt->out_addr[k]) by_id[rt->out_ids[k]] = rt->out_addr[k];
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
    return rc;
}

/* tsr_compute and tsr_store: computes `arrays` (kept on the cluster) and writes `targets` as
 * their chunks come, all in one submission. */
static int compute(tsr_client *c, tsr_array *const *arrays, size_t n,
                   const tsr_store_target *targets, size_t nt, const tsr_compute_options *opts) {
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
    tsr__rt *rt = c->rt;
    if (n == 0 && nt == 0) return record_empty(rt, opts);
    /* The targets' temporaries exist from here: every way out below removes them unless the
     * whole call succeeded. */
    tsr__ostream *store = NULL;
    int rc = nt ? tsr__ostream_new(c, targets, nt, &store) : 0;
    if (rc) return rc;
    tsr__rt_begin(rt);
    int started = 0;
    tsr_graph g;
    tsr__graph_init(&g);
    /* The stored arrays first: the graph's first nstream outputs are their chunks. */
    tsr_array **all = NULL;
    uint32_t nstream = 0;
    size_t ns = store ? tsr__ostream_arrays(store, &all, &nstream) : 0;
    if (store && ns == (size_t)-1) {
        rc = tsr__fail(c, -ENOMEM, "out of memory");
        goto out;
    }
    if (ns > 0) {
        tsr_array **grown = realloc(all, (ns + n) * sizeof *all);
        if (!grown) {
            rc = tsr__fail(c, -ENOMEM, "out of memory");
            goto out;
        }
        all = grown;
        for (size_t k = 0; k < n; k++) all[ns + k] = arrays[k];
    }
    tsr__persist_refresh(c);
    rc = tsr__lower(c, ns ? (tsr_array *const *)all : arrays, ns + n, &g,
                    !c->no_fuse && !(opts && opts->no_fuse));
    if (rc) goto out;
    tsr__graph_finish(&g);
    if (store && tsr__ostream_map(store, &g, arrays, n) != 0) {
        rc = tsr__fail(c, -ENOMEM, "out of memory");
        goto out;
    }
    rt->accepted = rt->finished = rt->complete = 0;
    rt->store = store;
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
    rt->failed_task = -1;
    rc = submit_graph(c, &g, opts && opts->trace, nstream);
    if (rc) goto out;
    rc = tsr__rt_run_until(rt, &rt->complete, 0);
    rt->held_lost = rc == TSR_ECOMPUTE && rt->failed_task >= 0 &&
                    (uint64_t)rt->failed_task < g.ntasks &&
                    g.tasks[rt->failed_task].d.kop == TSR_KOP_HELD;
    if (rc == TSR_ECOMPUTE && rt->workers >= 0 && (size_t)rt->workers < g.narrays) {
        char msg[1024], chunk[160] = "";
        snprintf(msg, sizeof msg, "%s", c->errmsg);
        if (rt->failed_task >= 0 && (uint64_t)rt->failed_task < g.ntasks &&
            g.tasks[rt->failed_task].array == (uint32_t)rt->workers) {
            char idx[128];
            tsr__graph_chunk_str(&g, (uint32_t)rt->failed_task, idx, sizeof idx);
            if (idx[0]) snprintf(chunk, sizeof chunk, "chunk %s: ", idx);
        }
        tsr__fail(c, rc, "array \"%s\" (%s): %s%s", g.arrays[rt->workers].name,
                  g.arrays[rt->workers].op, chunk, msg);
    }
    if (rc == 0 && store) {
        /* Every chunk is written: the chunks still held for it may go at once. */
        tsr__ostream_flush(rt);
        rc = tsr__ostream_commit(c, store);
    }
    if (rc) {
        if (rt->accepted && c->connected && c->sched) {
            /* Cancels the job if it is still running, frees whatever it holds. */
            tsr__send_release(c->sched, rt->job);
            tsr__uv_run(&c->loop, UV_RUN_NOWAIT);
        }
        goto out;
    }
    if (n > 0) {
        rc = record_kept(rt, &g, arrays, n);
    } else if (c->connected && c->sched) {
        /* Nothing is kept: whatever the job still holds can go. */
        tsr__send_release(c->sched, rt->job);
        tsr__uv_run(&c->loop, UV_RUN_NOWAIT);
    }
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
    /* Fetches still outstanding (a failed or interrupted store) are cancelled, and what was
     * not renamed into place is removed. */
    if (store) tsr__fetch_cancel_all(rt);
    rt->store = NULL;
    tsr__ostream_free(store);
    free(all);
    clear_outputs(rt);
    rt->copts = NULL;
    /* What the scheduler still says about this job reaches no call: dropped (current_job). */
    rt->accepted = 0;
    tsr__graph_free(&g);
    tsr__rt_end(rt);
    return rc;
}

static int compute_retry_held(tsr_client *c, tsr_array *const *arrays, size_t n,
                              const tsr_store_target *targets, size_t nt,
                              const tsr_compute_options *opts) {
    if (c && c->rt) c->rt->held_lost = 0;
    int rc = compute(c, arrays, n, targets, nt, opts);
    if (rc == TSR_ECOMPUTE && c->rt && c->rt->held_lost && !c->lower_no_held) {
        /* A persisted chunk was lost with its worker: compute again from the definitions,
         * which the client still has (docs/arrays.md, "Persisted arrays"). */
        tsr__log(&c->log, TSR_LOG_INFO, "a persisted chunk is gone (%s): computing again",
                 c->errmsg);
        c->lower_no_held = 1;
        rc = compute(c, arrays, n, targets, nt, opts);
        c->lower_no_held = 0;
    }
    return rc;
}

int tsr_compute(tsr_client *c, tsr_array *const *arrays, size_t n,
                const tsr_compute_options *opts) {
    return compute_retry_held(c, arrays, n, opts ? opts->store : NULL, opts ? opts->nstore : 0,
                              opts);
}

int tsr_store(tsr_client *c, const tsr_store_target *targets, size_t n,
              const tsr_compute_options *opts) {
    if (!c) return TSR_EINVALID;
    if (opts && opts->nstore)
        return tsr__fail(c, TSR_EINVALID,
                         "tsr_store: give the targets as its arguments, not in opts->store too");
    return compute_retry_held(c, NULL, 0, targets, n, opts);
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
