/* The task state machine: jobs, tasks and workers in flat arrays, every transition O(1) or
 * O(inputs + dependents). Pure and deterministic: it never touches a socket, it appends
 * tsr__action records (compute, free, finished, failed) that server.c turns into messages.
 * Small internal vectors abort on allocation failure (as redis does); sizes that come from
 * peers are checked and allocated in proto.c / tsr__sched_submit, which fail cleanly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "scheduler/sched.h"

/* The library prints nothing on its own (the host owns stderr), and a scheduler that cannot
 * grow its own bookkeeping mid-event cannot go on consistently: it aborts. */
static void oom(void) {
    abort();
}

#define MUST_GROW(ptr, cap, need)                                                                  \
    do {                                                                                           \
        if (TSR__GROW(ptr, cap, need) != 0) oom();                                                 \
    } while (0)

const char *tsr__task_state_name(int st) {
    static const char *names[] = {"waiting", "ready",    "queued", "running",
                                  "memory",  "released", "erred"};
    return st >= 0 && st < TSR__TS_COUNT ? names[st] : "?";
}

/* ---- small containers ---- */

void tsr__keyvec_free(tsr__keyvec *kv) {
    free(kv->v);
    kv->v = NULL;
    kv->n = kv->cap = 0;
}

/* Appends k to a position-tracked list (in-flight, held, unassigned). */
static void list_add(tsr__sched *s, tsr__keyvec *kv, tsr__key k) {
    MUST_GROW(kv->v, kv->cap, kv->n + 1);
    tsr__key_task(s, k)->pos = (uint32_t)kv->n;
    kv->v[kv->n++] = k;
}

static void list_remove(tsr__sched *s, tsr__keyvec *kv, uint32_t pos) {
    kv->n--;
    if (pos != kv->n) {
        kv->v[pos] = kv->v[kv->n];
        tsr__key_task(s, kv->v[pos])->pos = pos;
    }
}

static inline uint32_t op_of(const tsr__sjob *j, uint32_t task) {
    return j->aop[j->g.array[task]];
}

static int is_ready(int st) {
    return st == TSR__TS_READY || st == TSR__TS_QUEUED;
}

/* Every state change goes through here: global counts by state, and per operation the tasks
 * ready but not sent (for monitors). */
/* Does a streamed chunk in this state count against its job's budget? Running (it will be
 * in memory soon) or in memory (the client has not released it yet). */
static int stream_counts(int st) {
    return st == TSR__TS_RUNNING || st == TSR__TS_MEMORY;
}

/* Every state change goes through here: global counts by state, per operation the tasks
 * ready but not sent (for monitors), and a streaming job's unwritten chunks. */
static void set_state(tsr__sched *s, tsr__sjob *j, tsr__stask *t, int st) {
    s->count[t->state]--;
    s->count[st]++;
    if (is_ready(t->state) != is_ready(st)) {
        uint32_t op = op_of(j, (uint32_t)(t - j->t));
        j->op_ready[op] += is_ready(st) ? 1 : (uint32_t)-1;
    }
    if (j->stream && (j->stream[t - j->t] & TSR__SO_BUDGET) &&
        stream_counts(t->state) != stream_counts(st))
        j->stream_held += stream_counts(st) ? 1 : (uint32_t)-1;
    t->state = (uint8_t)st;
}

uint32_t tsr__stream_budget(const tsr__sched *s) {
    uint64_t b = (uint64_t)TSR__STREAM_PER_THREAD * s->nthreads;
    return b < TSR__STREAM_MIN ? TSR__STREAM_MIN : b > UINT32_MAX ? UINT32_MAX : (uint32_t)b;
}

/* Is the task at the front of a backlog held back because its job has as many unwritten
 * streamed chunks as the budget allows? Nothing of that job is sent until the client's
 * releases free the budget (tsr__sched_release_keys pumps every worker then). */
static int stream_blocked(const tsr__sched *s, tsr__key k) {
    const tsr__sjob *j = s->jobs[k.job];
    return j->stream && j->stream_held >= tsr__stream_budget(s);
}

static tsr__action *emit(tsr__sched *s, int kind) {
    MUST_GROW(s->act, s->actcap, s->nact + 1);
    tsr__action *a = &s->act[s->nact++];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    return a;
}

static void mark_dirty(tsr__sched *s, tsr__sjob *j) {
    if (j->dirty) return;
    j->dirty = 1;
    MUST_GROW(s->dirty, s->dirtycap, s->ndirty + 1);
    s->dirty[s->ndirty++] = j->id;
}

void tsr__sched_clear_actions(tsr__sched *s) {
    for (size_t i = 0; i < s->nact; i++) free(s->act[i].msg);
    s->nact = 0;
}

/* ---- lifecycle ---- */

void tsr__sched_init(tsr__sched *s, const tsr__logger *log) {
    memset(s, 0, sizeof *s);
    s->log = log;
    s->njobs = 1; /* job ids start at 1 */
    s->grace = 1.0;
    s->allowed_failures = TSR__ALLOWED_FAILURES;
    tsr__costs_init(&s->cost);
    s->least[0] = s->least[1] = TSR__NONE;
    tsr__kinds_init(s);
    MUST_GROW(s->jobs, s->jcap, 1);
    s->jobs[0] = NULL;
}

static void job_free(tsr__sjob *j) {
    if (!j) return;
    tsr__jobspec_free(&j->g);
    free(j->t);
    free(j->rdep_off);
    free(j->rdeps);
    free(j->cls);
    free(j->rmask);
    free(j->wtasks);
    free(j->aop);
    free(j->opname);
    free(j->op_total);
    free(j->op_done);
    free(j->op_err);
    free(j->op_flops);
    free(j->op_seconds);
    free(j->op_ready);
    free(j->op_inline);
    free(j->op_moved);
    free(j->spans);
    free(j->xfers);
    free(j->stream);
    free(j->deaths);
    free(j->input_retries);
    tsr__keyvec_free(&j->rfar);
    free(j);
}

void tsr__sched_free(tsr__sched *s) {
    for (size_t i = 0; i < s->njobs; i++) job_free(s->jobs[i]);
    free(s->jobs);
    for (size_t i = 0; i < s->nw; i++) {
        tsr__keyvec_free(&s->w[i].backlog);
        tsr__keyvec_free(&s->w[i].inflight);
        tsr__keyvec_free(&s->w[i].held);
        tsr__keyvec_free(&s->w[i].moving);
    }
    free(s->w);
    free(s->live);
    tsr__keyvec_free(&s->unassigned);
    tsr__sched_clear_actions(s);
    free(s->act);
    free(s->dirty);
    free(s->score);
    tsr__keyvec_free(&s->s1);
    tsr__keyvec_free(&s->s2);
    for (size_t i = 0; i < s->nparked; i++) free(s->parked[i].msg);
    free(s->parked);
    tsr__costs_free(&s->cost);
    memset(s, 0, sizeof *s);
}

/* ---- placement glue ---- */

/* Is the in-flight window of w full? It holds at least TSR__WINDOW_MIN_PER_THREAD tasks per
 * thread and otherwise TSR__WINDOW_SECONDS of expected work per thread: long tasks keep a
 * short queue (stealing stays possible), tiny ones a long one, so that a worker never waits
 * for a round trip to the scheduler (hundreds of microseconds here) between tasks. A paused
 * worker's window is full whatever it holds: it takes nothing new (and so steals nothing)
 * until its st says it caught up. */
static int window_full(const tsr__sworker *w) {
    if (w->st.paused) return 1;
    size_t n = w->inflight.n;
    if (n < (size_t)TSR__WINDOW_MIN_PER_THREAD * w->threads) return 0;
    if (n >= (size_t)TSR__WINDOW_MAX_PER_THREAD * w->threads) return 1;
    return w->q_inflight >= TSR__WINDOW_SECONDS * w->threads;
}

static void inflight_remove(tsr__sched *s, tsr__sworker *w, tsr__stask *t) {
    list_remove(s, &w->inflight, t->pos);
    w->q_inflight = w->inflight.n ? w->q_inflight - t->est : 0;
    w->inflight_bytes = w->inflight.n ? w->inflight_bytes - t->nbytes : 0;
}

/* A root: every input is a cheap source made where it is needed (or it has none), so it is
 * ready from the start and what it makes is new memory, not a step of work under way. */
static int is_root(const tsr__sjob *j, uint32_t id) {
    for (uint32_t k = j->g.dep_off[id]; k < j->g.dep_off[id + 1]; k++)
        if (!(j->t[j->g.deps[k]].flags & TSR__TF_VIRTUAL)) return 0;
    return 1;
}

/* Root throttling by memory (sched.h, TSR__ROOT_MEM_FRACTION): the task at the front of w's
 * backlog waits if it is a root, the window holds its minimum already and the root's output
 * would take what w will hold past the fraction of its limit. Lowering is depth-first, so a
 * consumer that becomes ready usually has a lower id than the roots still queued and goes ahead
 * of them: the window goes to work that frees memory while roots wait. */
static int root_waits(const tsr__sched *s, const tsr__sworker *w, tsr__key k) {
    if (w->mem_limit == 0 || w->inflight.n < (size_t)TSR__WINDOW_MIN_PER_THREAD * w->threads)
        return 0;
    const tsr__sjob *j = s->jobs[k.job];
    uint64_t after = tsr__worker_mem(w) + j->t[k.task].nbytes;
    if ((double)after <= TSR__ROOT_MEM_FRACTION * (double)w->mem_limit) return 0;
    return is_root(j, k.task);
}

/* Moves tasks from the backlog into the in-flight window while it has room; each becomes a
 * compute action (the server batches them per worker and loop turn). */
void tsr__sched_pump(tsr__sched *s, uint32_t wid) {
    tsr__sworker *w = &s->w[wid];
    while (w->backlog.n > 0 && !window_full(w) && !root_waits(s, w, w->backlog.v[0]) &&
           !stream_blocked(s, w->backlog.v[0])) {
        tsr__key k = tsr__backlog_pop(s, wid);
        tsr__sjob *j = s->jobs[k.job];
        tsr__stask *t = &j->t[k.task];
        set_state(s, j, t, TSR__TS_RUNNING);
        t->flags &= (uint8_t) ~(TSR__TF_SENT | TSR__TF_INPUT_LOST);
        list_add(s, &w->inflight, k);
        w->q_inflight += t->est;
        w->inflight_bytes += t->nbytes;
        s->jobs[k.job]->inflight++;
        tsr__action *a = emit(s, TSR__ACT_COMPUTE);
        a->worker = wid;
        a->job = k.job;
        a->task = k.task;
    }
}

static void make_ready(tsr__sched *s, tsr__sjob *j, uint32_t id) {
    tsr__stask *t = &j->t[id];
    tsr__key k = {j->id, id};
    uint32_t wid = tsr__place(s, j, id);
    if (wid == TSR__NONE) {
        set_state(s, j, t, TSR__TS_READY);
        t->where = TSR__NONE;
        list_add(s, &s->unassigned, k);
        return;
    }
    set_state(s, j, t, TSR__TS_QUEUED);
    t->where = wid;
    t->est = (float)tsr__cost_est(&s->cost, j->cls[id], &s->w[wid]);
    tsr__backlog_push(s, wid, k);
    tsr__sched_pump(s, wid);
}

/* Takes a task out of whatever queue holds it before it was sent (ready, queued, or running
 * but not written yet). Returns 0 if it was in none of those (it stays as it is). */
static int unqueue(tsr__sched *s, tsr__sjob *j, uint32_t id) {
    tsr__stask *t = &j->t[id];
    switch (t->state) {
    case TSR__TS_READY:
        list_remove(s, &s->unassigned, t->pos);
        return 1;
    case TSR__TS_QUEUED:
        tsr__backlog_remove(s, t->where, t->pos);
        return 1;
    case TSR__TS_RUNNING:
        if (t->flags & TSR__TF_SENT) return 0;
        inflight_remove(s, &s->w[t->where], t);
        j->inflight--;
        return 1;
    default:
        return 0;
    }
}

static void push_key(tsr__keyvec *kv, tsr__key k);
static int check_runnable(tsr__sched *s, tsr__sjob *j);
static void fail_unrunnable(tsr__sched *s);
static void fail_task(tsr__sched *s, tsr__sjob *j, uint32_t task, const char *worker,
                      const char *msg);

static void emit_free(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task) {
    tsr__action *a = emit(s, TSR__ACT_FREE);
    a->worker = wid;
    a->job = job;
    a->task = task;
}

/* The chunk is no longer needed: free it on its holder and on every worker that made a
 * replica of it. A donated chunk is already gone from its holder. */
static void release_chunk(tsr__sched *s, tsr__sjob *j, uint32_t id) {
    tsr__stask *t = &j->t[id];
    if (t->where != TSR__NONE) {
        tsr__sworker *w = &s->w[t->where];
        list_remove(s, &w->held, t->pos);
        w->held_bytes -= t->nbytes;
        if (!(t->flags & TSR__TF_DONATED)) emit_free(s, t->where, j->id, id);
    }
    if (j->rmask && j->rmask[id]) {
        for (uint32_t w = 0; w < 64 && w < s->nw; w++)
            if ((j->rmask[id] >> w & 1) && s->w[w].alive) emit_free(s, w, j->id, id);
        j->rmask[id] = 0;
    }
    if (t->flags & TSR__TF_FAR_REPLICA) {
        for (size_t i = 0; i < j->rfar.n;) {
            tsr__key r = j->rfar.v[i]; /* {worker, task} */
            if (r.task != id) {
                i++;
                continue;
            }
            if (s->w[r.job].alive) emit_free(s, r.job, j->id, id);
            j->rfar.v[i] = j->rfar.v[--j->rfar.n];
        }
        t->flags &= (uint8_t)~TSR__TF_FAR_REPLICA;
    }
    t->where = TSR__NONE;
    set_state(s, j, t, TSR__TS_RELEASED);
}

/* Takes a parked error off the list (it is retried, or its job is going away). */
static void unpark(tsr__sched *s, tsr__sjob *j, uint32_t id) {
    j->t[id].flags &= (uint8_t)~TSR__TF_SUSPECT;
    for (size_t i = 0; i < s->nparked; i++) {
        if (s->parked[i].k.job == j->id && s->parked[i].k.task == id) {
            free(s->parked[i].msg);
            s->parked[i] = s->parked[--s->nparked];
            return;
        }
    }
}

/* ---- jobs ---- */

/* Groups the job's arrays by operation name for per-operation progress. */
static int op_table(tsr__sjob *j, const tsr__jobspec *g) {
    j->opname = calloc((size_t)g->narrays + 1, sizeof *j->opname);
    if (!j->opname) return -1;
    for (uint32_t a = 0; a < g->narrays; a++) {
        uint32_t o = 0;
        while (o < j->nops && strcmp(j->opname[o], g->ops[a]) != 0) o++;
        if (o == j->nops) {
            if (j->nops == UINT16_MAX)
                o = j->nops - 1; /* absurdly many: lump the rest */
            else
                memcpy(j->opname[j->nops++], g->ops[a], sizeof j->opname[0]);
        }
        j->aop[a] = (uint16_t)o;
    }
    j->op_total = calloc((size_t)j->nops + 1, sizeof *j->op_total);
    j->op_done = calloc((size_t)j->nops + 1, sizeof *j->op_done);
    j->op_err = calloc((size_t)j->nops + 1, sizeof *j->op_err);
    j->op_flops = calloc((size_t)j->nops + 1, sizeof *j->op_flops);
    j->op_seconds = calloc((size_t)j->nops + 1, sizeof *j->op_seconds);
    j->op_ready = calloc((size_t)j->nops + 1, sizeof *j->op_ready);
    j->op_inline = calloc((size_t)j->nops + 1, sizeof *j->op_inline);
    j->op_moved = calloc((size_t)j->nops + 1, sizeof *j->op_moved);
    if (!j->op_total || !j->op_done || !j->op_err || !j->op_flops || !j->op_seconds ||
        !j->op_moved || !j->op_ready || !j->op_inline)
        return -1;
    for (uint32_t t = 0; t < g->ntasks; t++) j->op_total[j->aop[g->array[t]]]++;
    return 0;
}

static void live_add(tsr__sched *s, tsr__sjob *j) {
    MUST_GROW(s->live, s->livecap, s->nlive + 1);
    j->live_pos = (uint32_t)s->nlive;
    s->live[s->nlive++] = j->id;
}

static void job_delete(tsr__sched *s, tsr__sjob *j) {
    s->nlive--;
    if (j->live_pos != s->nlive) {
        s->live[j->live_pos] = s->live[s->nlive];
        s->jobs[s->live[j->live_pos]]->live_pos = j->live_pos;
    }
    for (uint32_t i = 0; i < j->g.ntasks; i++) s->count[j->t[i].state]--;
    s->jobs[j->id] = NULL;
    tsr__log(s->log, TSR_LOG_DEBUG, "job %u deleted", j->id);
    job_free(j);
}

int tsr__sched_submit(tsr__sched *s, uint32_t client, tsr__jobspec *spec, uint32_t *job_out,
                      char *err, size_t errlen) {
    int rc = tsr__jobspec_check(spec, err, errlen);
    if (rc) {
        tsr__jobspec_free(spec);
        return rc;
    }
    uint32_t n = spec->ntasks;
    tsr__sjob *j = calloc(1, sizeof *j);
    if (j) {
        j->t = calloc(n ? n : 1, sizeof *j->t);
        j->rdep_off = calloc((size_t)n + 1, sizeof *j->rdep_off);
        j->rdeps = malloc(((size_t)spec->dep_off[n] + 1) * sizeof *j->rdeps);
        j->cls = malloc(((size_t)n + 1) * sizeof *j->cls);
        j->nwtasks = s->nw;
        j->wtasks = calloc(s->nw + 1, sizeof *j->wtasks);
        j->aop = calloc((size_t)spec->narrays + 1, sizeof *j->aop);
    }
    if (!j || !j->t || !j->rdep_off || !j->rdeps || !j->cls || !j->wtasks || !j->aop ||
        op_table(j, spec) != 0) {
        job_free(j);
        tsr__jobspec_free(spec);
        tsr__fmt(err, errlen, "out of memory for a graph of %u tasks", n);
        return TSR_EPROGRAM;
    }
    MUST_GROW(s->jobs, s->jcap, s->njobs + 1);
    j->id = (uint32_t)s->njobs;
    s->jobs[s->njobs++] = j;
    j->client = client;
    j->g = *spec;
    memset(spec, 0, sizeof *spec);
    const tsr__jobspec *g = &j->g;

    /* Dependents in CSR form: count, prefix-sum, fill (in task order, so deterministic). */
    for (uint32_t k = 0; k < g->dep_off[n]; k++) j->rdep_off[g->deps[k] + 1]++;
    for (uint32_t t = 0; t < n; t++) j->rdep_off[t + 1] += j->rdep_off[t];
    uint32_t *fill = j->rdep_off; /* reuse: fill from the start offsets, then shift back */
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t k = g->dep_off[t]; k < g->dep_off[t + 1]; k++)
            j->rdeps[fill[g->deps[k]]++] = t;
    for (uint32_t t = n; t > 0; t--) j->rdep_off[t] = j->rdep_off[t - 1];
    j->rdep_off[0] = 0;

    for (uint32_t t = 0; t < n; t++) {
        tsr__stask *ts = &j->t[t];
        ts->state = TSR__TS_WAITING;
        ts->where = TSR__NONE;
        ts->home = TSR__NOHOME;
        ts->nbytes = g->nbytes[t];
        ts->refs = j->rdep_off[t + 1] - j->rdep_off[t];
    }
    s->count[TSR__TS_WAITING] += n;
    for (uint32_t o = 0; o < g->noutputs; o++) {
        tsr__stask *ts = &j->t[g->outputs[o]];
        if (!(ts->flags & TSR__TF_OUTPUT)) {
            ts->flags |= TSR__TF_OUTPUT;
            ts->refs++;
        }
    }
    /* Streamed outputs: the first nstream; one that is listed again after them is kept (the
     * client reads it later), so it is reported but never released or budgeted. Set before
     * anything is placed, so that the budget sees every chunk. */
    if (g->nstream > 0) {
        j->stream = calloc(n, 1);
        if (!j->stream) oom();
        for (uint32_t o = 0; o < g->nstream; o++)
            j->stream[g->outputs[o]] = TSR__SO_NOTIFY | TSR__SO_BUDGET;
        for (uint32_t o = g->nstream; o < g->noutputs; o++)
            j->stream[g->outputs[o]] &= (uint8_t)~TSR__SO_BUDGET;
    }
    /* Cost classes, and the cheap sources that are made where they are needed (RECOMPUTE)
     * instead of being run once and moved: they count as done from the start. */
    for (uint32_t t = 0; t < n; t++) {
        const uint8_t *kd = g->arena + g->kd_off[t];
        size_t kl = (size_t)(g->kd_off[t + 1] - g->kd_off[t]);
        int kop = tsr__kdesc_peek_kop(kd, kl), dtype = tsr__kdesc_peek_dtype(kd, kl);
        uint32_t nd = g->dep_off[t + 1] - g->dep_off[t];
        j->cls[t] =
            tsr__cost_class(&s->cost, g->ops[g->array[t]], kop < 0 ? UINT8_MAX : (uint8_t)kop,
                            dtype < 0 ? UINT8_MAX : (uint8_t)dtype, nd, g->nbytes[t], g->flops[t]);
        tsr__stask *ts = &j->t[t];
        if (nd == 0 && !(ts->flags & TSR__TF_OUTPUT) && tsr__kop_has(kop, TSR__KOP_RECOMPUTE)) {
            ts->flags |= TSR__TF_VIRTUAL;
            set_state(s, j, ts, TSR__TS_MEMORY);
            j->ndone++;
            j->nvirtual++;
            j->op_done[op_of(j, t)]++;
            j->op_inline[op_of(j, t)]++;
        }
    }
    for (uint32_t t = 0; t < n; t++) {
        uint32_t left = 0;
        for (uint32_t k = g->dep_off[t]; k < g->dep_off[t + 1]; k++)
            left += !(j->t[g->deps[k]].flags & TSR__TF_VIRTUAL);
        j->t[t].deps_left = left;
    }
    free(j->g.nbytes);
    free(j->g.flops);
    j->g.nbytes = NULL;
    j->g.flops = NULL;
    live_add(s, j);
    tsr__partition(s, j);
    *job_out = j->id;
    tsr__log(s->log, TSR_LOG_INFO, "job %u: %u tasks, %u outputs (client %u)", j->id, n,
             g->noutputs, client);
    /* A task no connected worker has a kernel for fails the job now (accepted, then failed,
     * naming its array), not when it comes up. */
    if (check_runnable(s, j) != 0) return 0; /* j is gone */
    for (uint32_t t = 0; t < n; t++) {
        tsr__stask *ts = &j->t[t];
        if (ts->state == TSR__TS_MEMORY && ts->refs == 0) release_chunk(s, j, t);
        if (ts->state == TSR__TS_WAITING && ts->deps_left == 0) make_ready(s, j, t);
    }
    mark_dirty(s, j);
    if (j->ndone == n && !j->finished_sent) {
        j->finished_sent = 1;
        emit(s, TSR__ACT_FINISHED)->job = j->id;
    }
    return 0;
}

/* Cancels a job (failed or released): nothing more is sent for it, every chunk it holds is
 * freed, and it is deleted once the tasks already sent to workers have been reported. */
static void job_cancel(tsr__sched *s, tsr__sjob *j) {
    j->cancelled = 1;
    for (uint32_t id = 0; id < j->g.ntasks; id++) {
        tsr__stask *t = &j->t[id];
        if (t->flags & TSR__TF_SUSPECT) unpark(s, j, id);
        if (t->state == TSR__TS_MEMORY) {
            release_chunk(s, j, id);
        } else if (unqueue(s, j, id)) {
            set_state(s, j, t, TSR__TS_RELEASED);
            t->where = TSR__NONE;
        }
    }
    if (j->inflight == 0) job_delete(s, j);
}

/* ---- workers ---- */

uint32_t tsr__sched_add_worker(tsr__sched *s, uint32_t peer, uint32_t threads, int kind,
                               const char *addr, const char *name) {
    return tsr__sched_add_worker_plugins(s, peer, threads, kind, addr, name, NULL, 0);
}

uint32_t tsr__sched_add_worker_plugins(tsr__sched *s, uint32_t peer, uint32_t threads, int kind,
                                       const char *addr, const char *name,
                                       const char (*plugins)[TSR__PLUGIN_NAME], uint32_t nplugins) {
    MUST_GROW(s->w, s->wcap, s->nw + 1);
    MUST_GROW(s->score, s->score_cap, s->nw + 1);
    uint32_t wid = (uint32_t)s->nw++;
    tsr__sworker *w = &s->w[wid];
    memset(w, 0, sizeof *w);
    s->score[wid] = 0;
    w->peer = peer;
    w->alive = 1;
    w->threads = threads ? threads : 1;
    w->kind = kind == TSR__KIND_GPU ? TSR__KIND_GPU : TSR__KIND_CPU;
    w->speed = 1.0;
    snprintf(w->addr, sizeof w->addr, "%s", addr);
    snprintf(w->name, sizeof w->name, "%s", name);
    for (uint32_t k = 0; k < nplugins && k < TSR__WORKER_PLUGINS; k++)
        snprintf(w->plugins[w->nplugins++], TSR__PLUGIN_NAME, "%s", plugins[k]);
    s->nalive++;
    s->nthreads += w->threads;
    s->nkind[w->kind]++;
    tsr__repartition(s);
    /* Tasks that had nowhere to go get placed now (placement may spread them out). One pass
     * over the list as it was: a task this worker has no kernel for goes back on it. */
    tsr__keyvec pend = s->unassigned;
    s->unassigned = (tsr__keyvec){0};
    for (size_t i = pend.n; i-- > 0;) {
        tsr__key k = pend.v[i];
        make_ready(s, s->jobs[k.job], k.task);
    }
    tsr__keyvec_free(&pend);
    /* Jobs submitted while no worker was connected are judged when the first one comes: those
     * it has no kernel for fail now (and anything it left unassigned). */
    if (s->nalive == 1 || s->unassigned.n > 0) fail_unrunnable(s);
    return wid;
}

/* ---- kernel availability ---- */

static const char *kind_name(int kind) {
    return kind == TSR__KIND_GPU ? "gpu" : "cpu";
}

/* Why no live worker can run task id: the family (its own, or a source it would make) that
 * lacks a kernel on every live kind. */
static void unrunnable_msg(const tsr__sched *s, const tsr__sjob *j, uint32_t id, char *msg,
                           size_t size) {
    unsigned alive = tsr__alive_kinds(s);
    uint32_t cls = j->cls[id];
    for (uint32_t k = j->g.dep_off[id]; k < j->g.dep_off[id + 1]; k++) {
        uint32_t in = j->g.deps[k];
        if ((j->t[in].flags & TSR__TF_VIRTUAL) &&
            !(tsr__task_kinds(s, j, in) & alive)) /* a source's own kinds */
            cls = j->cls[in];
    }
    const tsr__cls *c = &s->cost.c[cls];
    char has[32] = "", live[64] = "";
    size_t hn = 0, ln = 0;
    for (int kind = 0; kind < TSR__KINDS; kind++) {
        if (tsr__kind_runs(s, kind, c->kop, c->dtype))
            hn += (size_t)snprintf(has + hn, hn < sizeof has ? sizeof has - hn : 0, "%s%s",
                                   hn ? "/" : "", kind_name(kind));
        if (s->nkind[kind])
            ln += (size_t)snprintf(live + ln, ln < sizeof live ? sizeof live - ln : 0, "%s%u %s",
                                   ln ? ", " : "", s->nkind[kind], kind_name(kind));
    }
    tsr__fmt(msg, size,
             "no connected worker has a kernel for %s (%s): it runs on %s workers, and the "
             "connected workers are %s",
             tsr__kop_name(c->kop),
             c->dtype < 32 ? tsr_dtype_name((tsr_dtype)c->dtype) : "any dtype", hn ? has : "no",
             live);
}

/* A job that has a task no live worker can run (no kernel for it on any live kind) fails on
 * that task, instead of waiting forever: -1 then, and j is gone or cancelled. With no worker at
 * all it waits, as every job does: any kind may come. Tasks done (or made where needed) are not
 * asked; a virtual source is asked through its consumers. */
static int check_runnable(tsr__sched *s, tsr__sjob *j) {
    if (s->nalive == 0 || j->cancelled) return 0;
    unsigned alive = tsr__alive_kinds(s);
    for (uint32_t t = 0; t < j->g.ntasks; t++) {
        int st = j->t[t].state;
        if (st != TSR__TS_WAITING && st != TSR__TS_READY) continue;
        if (tsr__task_kinds(s, j, t) & alive) continue;
        char msg[256];
        unrunnable_msg(s, j, t, msg, sizeof msg);
        if (st == TSR__TS_READY) { /* unassigned: take it off that list first */
            list_remove(s, &s->unassigned, j->t[t].pos);
            set_state(s, j, &j->t[t], TSR__TS_WAITING);
        }
        fail_task(s, j, t, "the scheduler", msg);
        return -1;
    }
    char msg[400];
    uint32_t t = tsr__sched_no_plugin(s, j, msg, sizeof msg);
    if (t == TSR__NONE) t = tsr__sched_unfit(s, j, msg, sizeof msg);
    if (t != TSR__NONE) {
        if (unqueue(s, j, t)) set_state(s, j, &j->t[t], TSR__TS_WAITING);
        fail_task(s, j, t, "the scheduler", msg);
        return -1;
    }
    return 0;
}

/* Every live job, after the kinds of live workers changed. */
static void fail_unrunnable(tsr__sched *s) {
    for (size_t i = 0; i < s->nlive;) {
        size_t before = s->nlive;
        check_runnable(s, s->jobs[s->live[i]]);
        if (s->nlive == before) i++; /* else slot i now holds another job */
    }
}

void tsr__sched_check_jobs(tsr__sched *s) {
    fail_unrunnable(s);
}

/* Inputs not available: a virtual source always is (it is made where it is needed). */
static uint32_t count_missing(const tsr__sjob *j, uint32_t id) {
    uint32_t n = 0;
    for (uint32_t k = j->g.dep_off[id]; k < j->g.dep_off[id + 1]; k++)
        n += j->t[j->g.deps[k]].state != TSR__TS_MEMORY;
    return n;
}

static void push_key(tsr__keyvec *kv, tsr__key k) {
    MUST_GROW(kv->v, kv->cap, kv->n + 1);
    kv->v[kv->n++] = k;
}

/* A task that had finished must run again: it is unfinished, so its inputs regain the
 * reference it gave up when it finished. */
static void resurrect(tsr__sched *s, tsr__sjob *j, uint32_t id, tsr__keyvec *S) {
    tsr__stask *t = &j->t[id];
    if (t->flags & TSR__TF_VIRTUAL) {
        set_state(s, j, t, TSR__TS_MEMORY); /* available again, nothing to recompute */
        return;
    }
    t->flags &= (uint8_t)~TSR__TF_DONATED;
    j->op_done[op_of(j, id)]--;
    j->op_flops[op_of(j, id)] -= s->cost.c[j->cls[id]].flops;
    set_state(s, j, t, TSR__TS_WAITING);
    t->where = TSR__NONE;
    t->flags |= TSR__TF_MARK;
    j->ndone--;
    if (j->finished_sent) j->finished_sent = 0;
    mark_dirty(s, j);
    push_key(S, (tsr__key){j->id, id});
}

void tsr__sched_remove_worker(tsr__sched *s, uint32_t wid) {
    tsr__sworker *w = &s->w[wid];
    if (!w->alive) return;
    w->alive = 0;
    s->nalive--;
    s->nthreads -= w->threads;
    s->nkind[w->kind]--;
    tsr__keyvec *R = &s->s1, *S = &s->s2;
    R->n = S->n = 0;
    tsr__log(s->log, TSR_LOG_WARN, "worker %s (%s) lost: %zu queued, %zu running, %zu chunks held",
             w->name, w->addr, w->backlog.n, w->inflight.n, w->held.n);

    /* 1. Its queued and running tasks go back to waiting (deps recounted in step 4). */
    for (size_t i = 0; i < w->backlog.n; i++) push_key(R, w->backlog.v[i]);
    s->backlog_total -= w->backlog.n;
    w->backlog.n = 0;
    w->q_backlog = w->q_inflight = 0;
    w->inflight_bytes = 0;
    tsr__keyvec poison = {0};
    for (size_t i = 0; i < w->inflight.n; i++) {
        tsr__key k = w->inflight.v[i];
        tsr__sjob *j = s->jobs[k.job];
        j->inflight--;
        if (j->cancelled) {
            set_state(s, j, &j->t[k.task], TSR__TS_RELEASED);
            continue;
        }
        if (tsr__sched_count_death(s, j, k.task)) {
            /* Failed below, once the worker's other tasks and chunks are accounted for. */
            tsr__stask *t = &j->t[k.task];
            set_state(s, j, t, TSR__TS_WAITING);
            t->where = TSR__NONE;
            t->flags &= (uint8_t)~TSR__TF_SENT;
            push_key(&poison, k);
            continue;
        }
        push_key(R, k);
    }
    w->inflight.n = 0;
    for (size_t i = 0; i < R->n; i++) {
        tsr__sjob *j = s->jobs[R->v[i].job];
        tsr__stask *t = &j->t[R->v[i].task];
        set_state(s, j, t, TSR__TS_WAITING);
        t->where = TSR__NONE;
        t->flags |= TSR__TF_MARK;
    }

    /* 2. Chunks it held are still needed (else they would have been freed): recompute. */
    for (size_t i = 0; i < w->held.n; i++) {
        tsr__key k = w->held.v[i];
        resurrect(s, s->jobs[k.job], k.task, S);
    }
    w->held.n = 0;
    w->held_bytes = 0;

    /* 3. Walk producers: every resurrected task takes its inputs' references back, and an input
     *    already freed has to be recomputed too. S grows while we walk it. */
    for (size_t i = 0; i < S->n; i++) {
        tsr__sjob *j = s->jobs[S->v[i].job];
        uint32_t id = S->v[i].task;
        for (uint32_t k = j->g.dep_off[id]; k < j->g.dep_off[id + 1]; k++) {
            uint32_t in = j->g.deps[k];
            tsr__stask *ti = &j->t[in];
            ti->refs++;
            if (ti->state == TSR__TS_RELEASED && !(ti->flags & TSR__TF_MARK))
                resurrect(s, j, in, S);
        }
    }

    /* 4. Consumers outside the recomputed set lose an input they counted as available. */
    for (size_t i = 0; i < S->n; i++) {
        tsr__sjob *j = s->jobs[S->v[i].job];
        uint32_t id = S->v[i].task;
        for (uint32_t k = j->rdep_off[id]; k < j->rdep_off[id + 1]; k++) {
            uint32_t d = j->rdeps[k];
            tsr__stask *td = &j->t[d];
            if (td->flags & TSR__TF_MARK) continue;
            if (td->state == TSR__TS_WAITING) {
                td->deps_left++;
                if (td->flags & TSR__TF_SUSPECT) {
                    /* Its error was a fetch from this worker after all: run it again. */
                    tsr__log(s->log, TSR_LOG_INFO, "job %u task %u: retrying after a lost input",
                             j->id, d);
                    unpark(s, j, d);
                }
            } else if (unqueue(s, j, d)) {
                set_state(s, j, td, TSR__TS_WAITING);
                td->where = TSR__NONE;
                td->deps_left = 1;
            } else if (td->state == TSR__TS_RUNNING) {
                td->flags |= TSR__TF_INPUT_LOST; /* its erred will be a retry, not a failure */
            }
        }
    }

    /* 5. Recount and place what can run, after the tasks still to run have new homes. */
    tsr__repartition(s);
    for (int pass = 0; pass < 2; pass++) {
        tsr__keyvec *L = pass ? S : R;
        for (size_t i = 0; i < L->n; i++) {
            tsr__sjob *j = s->jobs[L->v[i].job];
            j->t[L->v[i].task].flags &= (uint8_t)~TSR__TF_MARK;
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        tsr__keyvec *L = pass ? S : R;
        for (size_t i = 0; i < L->n; i++) {
            tsr__sjob *j = s->jobs[L->v[i].job];
            uint32_t id = L->v[i].task;
            j->t[id].deps_left = count_missing(j, id);
            if (j->t[id].deps_left == 0) make_ready(s, j, id);
        }
    }
    if (S->n)
        tsr__log(s->log, TSR_LOG_INFO, "worker %s lost: recomputing %zu chunks", w->name, S->n);

    /* 6. Cancelled jobs that were only waiting for this worker's reports can go. */
    for (size_t i = 0; i < s->nlive;) {
        tsr__sjob *j = s->jobs[s->live[i]];
        if (j->cancelled && j->inflight == 0)
            job_delete(s, j); /* swaps another id into slot i */
        else
            i++;
    }

    /* 7. Poison tasks fail their jobs (each job once: the first cancels it). */
    for (size_t i = 0; i < poison.n; i++) {
        tsr__sjob *j = tsr__sched_job(s, poison.v[i].job);
        if (!j || j->cancelled) continue;
        char msg[256];
        tsr__sched_poison_msg(s, j, poison.v[i].task, w->name, msg, sizeof msg);
        fail_task(s, j, poison.v[i].task, w->name, msg);
    }
    tsr__keyvec_free(&poison);

    /* 8. It was the last of its kind (jobs with tasks only that kind has kernels for fail), or
     *    it had memory the others lack (jobs with a task none of them can hold fail). */
    if (s->nkind[w->kind] == 0 || w->mem_limit == 0 || w->mem_limit > tsr__sched_largest_limit(s))
        fail_unrunnable(s);
}

/* ---- reports ---- */

/* Common checks for done/erred: the job (NULL when already deleted) and whether the report
 * matches a task running on wid. */
static int lookup_report(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task, tsr__sjob **jp) {
    tsr__sjob *j = tsr__sched_job(s, job);
    *jp = j;
    if (!j) return 0;
    if (task >= j->g.ntasks) return TSR_EPROTOCOL;
    tsr__stask *t = &j->t[task];
    if (t->state != TSR__TS_RUNNING || t->where != wid) {
        tsr__log(s->log, TSR_LOG_DEBUG, "worker %s: stale report for (%u, %u) in state %s",
                 s->w[wid].name, job, task, tsr__task_state_name(t->state));
        *jp = NULL;
        return 1;
    }
    inflight_remove(s, &s->w[wid], t);
    j->inflight--;
    t->flags &= (uint8_t)~TSR__TF_SENT;
    return 0;
}

static int done(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task, uint64_t nbytes,
                double seconds) {
    tsr__sjob *j;
    int rc = lookup_report(s, wid, job, task, &j);
    if (rc < 0) return rc;
    if (rc > 0) return 0;
    if (j && seconds >= 0) tsr__cost_learn(&s->cost, j->cls[task], &s->w[wid], seconds);
    if (j) {
        if (wid >= j->nwtasks) {
            uint32_t *nw = realloc(j->wtasks, (wid + 1) * sizeof *nw);
            if (!nw) oom();
            memset(nw + j->nwtasks, 0, (wid + 1 - j->nwtasks) * sizeof *nw);
            j->wtasks = nw;
            j->nwtasks = wid + 1;
        }
        j->wtasks[wid]++;
    }
    if (!j || j->cancelled) {
        /* The job is gone or cancelled: the chunk is of no use to anyone. */
        tsr__action *a = emit(s, TSR__ACT_FREE);
        a->worker = wid;
        a->job = job;
        a->task = task;
        if (j) {
            set_state(s, j, &j->t[task], TSR__TS_RELEASED);
            if (j->inflight == 0) job_delete(s, j);
        }
        return 0;
    }
    tsr__stask *t = &j->t[task];
    tsr__sworker *w = &s->w[wid];
    set_state(s, j, t, TSR__TS_MEMORY);
    t->flags &= (uint8_t)~TSR__TF_INPUT_LOST;
    t->nbytes = nbytes;
    t->where = wid;
    list_add(s, &w->held, (tsr__key){job, task});
    w->held_bytes += nbytes;
    j->ndone++;
    s->done_total++;
    j->op_done[op_of(j, task)]++;
    j->op_flops[op_of(j, task)] += s->cost.c[j->cls[task]].flops;
    if (seconds > 0) j->op_seconds[op_of(j, task)] += seconds;
    mark_dirty(s, j);

    const tsr__jobspec *g = &j->g;
    for (uint32_t k = g->dep_off[task]; k < g->dep_off[task + 1]; k++) {
        uint32_t in = g->deps[k];
        tsr__stask *ti = &j->t[in];
        ti->refs--;
        if (ti->refs == 0 && ti->state == TSR__TS_MEMORY) release_chunk(s, j, in);
    }
    for (uint32_t k = j->rdep_off[task]; k < j->rdep_off[task + 1]; k++) {
        uint32_t d = j->rdeps[k];
        tsr__stask *td = &j->t[d];
        /* Only waiting dependents count it: after a recovery, others may have finished. */
        if (td->state == TSR__TS_WAITING && --td->deps_left == 0) make_ready(s, j, d);
    }
    if (j->stream && (j->stream[task] & TSR__SO_NOTIFY)) {
        tsr__action *a = emit(s, TSR__ACT_STORED);
        a->worker = wid;
        a->job = job;
        a->task = task;
    }
    if (t->refs == 0) release_chunk(s, j, task); /* nothing needs it (and not an output) */
    if (j->ndone == g->ntasks && !j->finished_sent) {
        j->finished_sent = 1;
        emit(s, TSR__ACT_FINISHED)->job = job;
        tsr__log(s->log, TSR_LOG_INFO, "job %u finished", job);
    }
    return 0;
}

static void fail_task(tsr__sched *s, tsr__sjob *j, uint32_t task, const char *worker,
                      const char *msg) {
    tsr__stask *t = &j->t[task];
    set_state(s, j, t, TSR__TS_ERRED);
    t->where = TSR__NONE;
    j->nerred++;
    j->op_err[op_of(j, task)]++;
    mark_dirty(s, j);
    tsr__log(s->log, TSR_LOG_WARN, "job %u task %u (array %u) failed on %s: %s", j->id, task,
             j->g.array[task], worker, msg);
    tsr__action *a = emit(s, TSR__ACT_FAILED);
    a->job = j->id;
    a->task = task;
    a->client = j->client;
    a->array = j->g.array[task];
    a->msg = strdup(msg);
    if (!a->msg) oom();
    job_cancel(s, j);
}

/* A task that erred before it started (kept: its inputs' stage failed, as when a holder dies
 * or a chunk is not where the scheduler last knew it) goes back to waiting and runs again, at
 * most TSR__INPUT_RETRIES times: 1 then, 0 when its error must fail the job. */
static int retry_input(tsr__sched *s, tsr__sjob *j, uint32_t task, const char *msg) {
    if (!j->input_retries) {
        j->input_retries = calloc(j->g.ntasks ? j->g.ntasks : 1, 1);
        if (!j->input_retries) oom();
    }
    if (j->input_retries[task] >= TSR__INPUT_RETRIES) return 0;
    j->input_retries[task]++;
    tsr__stask *t = &j->t[task];
    tsr__log(s->log, TSR_LOG_INFO, "job %u task %u: run again after an input failure (%s)", j->id,
             task, msg);
    set_state(s, j, t, TSR__TS_WAITING);
    t->where = TSR__NONE;
    t->deps_left = count_missing(j, task);
    if (t->deps_left == 0) make_ready(s, j, task);
    return 1;
}

static int erred(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task, const char *msg,
                 int kept, double now) {
    tsr__sjob *j;
    int rc = lookup_report(s, wid, job, task, &j);
    if (rc < 0) return rc;
    if (rc > 0 || !j) return 0;
    tsr__stask *t = &j->t[task];
    if (kept) {
        /* It never started: what it was given to consume is still on that worker, to be
         * donated again on a retry or freed like any chunk. */
        for (uint32_t k = j->g.dep_off[task]; k < j->g.dep_off[task + 1]; k++) {
            tsr__stask *ti = &j->t[j->g.deps[k]];
            if ((ti->flags & TSR__TF_DONATED) && ti->state == TSR__TS_MEMORY && ti->where == wid)
                ti->flags &= (uint8_t)~TSR__TF_DONATED;
        }
    }
    if (j->cancelled) {
        set_state(s, j, t, TSR__TS_RELEASED);
        if (j->inflight == 0) job_delete(s, j);
        return 0;
    }
    set_state(s, j, t, TSR__TS_WAITING);
    t->where = TSR__NONE;
    if (t->flags & TSR__TF_INPUT_LOST) {
        /* It most likely failed to fetch from the lost worker: run it again once its inputs
         * are back. */
        t->flags &= (uint8_t)~TSR__TF_INPUT_LOST;
        tsr__log(s->log, TSR_LOG_INFO, "job %u task %u: retrying after a lost input (%s)", job,
                 task, msg);
        t->deps_left = count_missing(j, task);
        if (t->deps_left == 0) make_ready(s, j, task);
        return 0;
    }
    int remote = 0, donated = 0;
    for (uint32_t k = j->g.dep_off[task]; k < j->g.dep_off[task + 1]; k++) {
        const tsr__stask *ti = &j->t[j->g.deps[k]];
        remote |= ti->state == TSR__TS_MEMORY && ti->where != wid && ti->where != TSR__NONE;
        donated |= (ti->flags & TSR__TF_DONATED) != 0;
    }
    if (donated) remote = 0; /* its input is gone: it cannot be retried (PROTOCOL.md) */
    if (remote && s->grace > 0) {
        /* Park it (waiting, in no queue) until the grace period tells a failed fetch from a
         * worker that is dying from a real failure. */
        MUST_GROW(s->parked, s->parkcap, s->nparked + 1);
        tsr__parked *p = &s->parked[s->nparked++];
        p->k = (tsr__key){job, task};
        p->since = now;
        p->msg = strdup(msg);
        if (!p->msg) oom();
        snprintf(p->worker, sizeof p->worker, "%s", s->w[wid].name);
        p->kept = kept;
        t->flags |= TSR__TF_SUSPECT;
        t->deps_left = 0;
        return 0;
    }
    if (kept && !donated && retry_input(s, j, task, msg)) return 0;
    fail_task(s, j, task, s->w[wid].name, msg);
    return 0;
}

void tsr__sched_tick(tsr__sched *s, double now) {
    for (size_t i = 0; i < s->nparked;) {
        tsr__parked p = s->parked[i];
        if (now - p.since < s->grace) {
            i++;
            continue;
        }
        s->parked[i] = s->parked[--s->nparked];
        tsr__sjob *j = tsr__sched_job(s, p.k.job);
        if (j && !j->cancelled && (j->t[p.k.task].flags & TSR__TF_SUSPECT)) {
            j->t[p.k.task].flags &= (uint8_t)~TSR__TF_SUSPECT;
            /* Nobody was lost: a fetch from a live worker failed (a dropped connection). */
            if (!p.kept || !retry_input(s, j, p.k.task, p.msg)) {
                fail_task(s, j, p.k.task, p.worker, p.msg); /* may unpark others: rescan */
                i = 0;
            }
        }
        free(p.msg);
    }
}

/* After a report the worker's window has room: refill it from its backlog (after the report's
 * newly ready dependents were queued, so the heap picks among all of them). */
int tsr__sched_done(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task, uint64_t nbytes,
                    double seconds) {
    int rc = done(s, wid, job, task, nbytes, seconds);
    if (s->w[wid].alive) tsr__sched_pump(s, wid);
    return rc;
}

int tsr__sched_erred(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task, const char *msg,
                     int kept, double now) {
    int rc = erred(s, wid, job, task, msg, kept, now);
    if (s->w[wid].alive) tsr__sched_pump(s, wid);
    return rc;
}

int tsr__sched_release(tsr__sched *s, uint32_t client, uint32_t job) {
    tsr__sjob *j = tsr__sched_job(s, job);
    if (!j || j->client != client) return TSR_EINVALID;
    if (j->cancelled) return 0;
    tsr__log(s->log, TSR_LOG_DEBUG, "job %u released", job);
    job_cancel(s, j);
    return 0;
}

int tsr__sched_release_keys(tsr__sched *s, uint32_t client, uint32_t job, const uint32_t *ids,
                            size_t n) {
    tsr__sjob *j = tsr__sched_job(s, job);
    if (!j || j->client != client) return TSR_EINVALID;
    if (j->cancelled || !j->stream) return 0;
    int freed = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = ids[i];
        if (id >= j->g.ntasks || !(j->stream[id] & TSR__SO_BUDGET)) continue;
        tsr__stask *t = &j->t[id];
        if (stream_counts(t->state)) {
            j->stream_held--;
            freed = 1;
        }
        /* Written: no more reports, and the client's reference goes (a chunk still needed by
         * a pending task stays until its last consumer has run, as any chunk). */
        j->stream[id] = 0;
        t->flags &= (uint8_t)~TSR__TF_OUTPUT;
        t->refs--;
        if (t->refs == 0 && t->state == TSR__TS_MEMORY) release_chunk(s, j, id);
    }
    /* Budget given back: backlogs held back by it may move again. */
    if (freed)
        for (uint32_t wid = 0; wid < s->nw; wid++)
            if (s->w[wid].alive) tsr__sched_pump(s, wid);
    return 0;
}

void tsr__sched_client_gone(tsr__sched *s, uint32_t client) {
    for (size_t i = 0; i < s->nlive;) {
        tsr__sjob *j = s->jobs[s->live[i]];
        size_t before = s->nlive;
        if (j->client == client && !j->cancelled) job_cancel(s, j);
        if (s->nlive == before) i++; /* else slot i now holds another job */
    }
}

void tsr__sched_balance(tsr__sched *s) {
    if (s->backlog_total == 0) return;
    for (uint32_t wid = 0; wid < s->nw && s->backlog_total > 0; wid++) {
        tsr__sworker *w = &s->w[wid];
        if (!w->alive || window_full(w)) continue;
        if (w->backlog.n == 0 && tsr__steal(s, wid) == 0) continue;
        tsr__sched_pump(s, wid);
    }
}

void tsr__sched_plan_inputs(tsr__sched *s, uint32_t wid, tsr__sjob *j, uint32_t task,
                            uint8_t *flags) {
    const tsr__jobspec *g = &j->g;
    for (uint32_t k = g->dep_off[task]; k < g->dep_off[task + 1]; k++) {
        uint32_t in = g->deps[k];
        tsr__stask *ti = &j->t[in];
        uint8_t f = 0;
        if (ti->flags & TSR__TF_VIRTUAL) {
            f = TSR__IN_RECOMPUTE;
            if (wid < 64) {
                if (!j->rmask) {
                    j->rmask = calloc(g->ntasks, sizeof *j->rmask);
                    if (!j->rmask) oom();
                }
                j->rmask[in] |= 1ull << wid;
            } else {
                /* Workers past the mask: an unordered list (many workers are rare). */
                ti->flags |= TSR__TF_FAR_REPLICA;
                push_key(&j->rfar, (tsr__key){wid, in});
            }
        } else if (ti->state == TSR__TS_MEMORY && ti->where == wid) {
            /* Its last consumer, on its holder, and nobody will ask for it again (not an
             * output; a virtual source never gets here). */
            if (ti->refs == 1 && !(ti->flags & TSR__TF_OUTPUT)) {
                f = TSR__IN_DONATE;
                ti->flags |= TSR__TF_DONATED;
            }
        } else if (ti->state == TSR__TS_MEMORY) {
            j->moved_bytes += ti->nbytes;
            j->op_moved[op_of(j, task)] += ti->nbytes;
        }
        flags[k - g->dep_off[task]] = f;
    }
}

void tsr__sched_worker_stats(tsr__sched *s, uint32_t wid, const tsr__wstats *st) {
    tsr__sworker *w = &s->w[wid];
    /* Bandwidth from the fetches since the last report (a report covering at least 1 MiB). */
    uint64_t db = st->in_bytes > w->st.in_bytes ? st->in_bytes - w->st.in_bytes : 0;
    double ds = st->in_s - w->st.in_s;
    if (db >= (1u << 20) && ds > 0) {
        double bw = (double)db / ds;
        s->cost.bw += 0.25 * (bw - s->cost.bw);
    }
    int was_paused = w->st.paused;
    w->st = *st;
    if (was_paused == st->paused) return;
    tsr__log(s->log, TSR_LOG_INFO, "worker %s %s (memory: %llu chunk bytes, %llu on disk)", w->name,
             st->paused ? "paused: no new work until it catches up" : "resumed",
             (unsigned long long)st->chunk_bytes, (unsigned long long)st->disk_bytes);
    /* Resumed: its window is refilled now, not at its next report (it may have none coming);
     * an empty backlog is refilled by stealing when the server balances at the turn's end. */
    if (!st->paused && w->alive) tsr__sched_pump(s, wid);
}

void tsr__sched_trace_span(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task, double start,
                           double seconds, uint32_t thread) {
    tsr__sjob *j = tsr__sched_job(s, job);
    if (!j || !j->trace || task >= j->g.ntasks) return;
    if (j->nspans + j->nxfers >= TSR__TRACE_MAX) {
        j->trace_dropped++;
        return;
    }
    MUST_GROW(j->spans, j->spancap, j->nspans + 1);
    j->spans[j->nspans++] = (tsr__tspan){wid, task, start, seconds, thread};
}

void tsr__sched_trace_xfer(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task,
                           uint64_t nbytes, double start, double end, const char *from) {
    tsr__sjob *j = tsr__sched_job(s, job);
    if (!j || !j->trace || task >= j->g.ntasks) return;
    if (j->nspans + j->nxfers >= TSR__TRACE_MAX) {
        j->trace_dropped++;
        return;
    }
    MUST_GROW(j->xfers, j->xfercap, j->nxfers + 1);
    tsr__txfer *x = &j->xfers[j->nxfers++];
    *x = (tsr__txfer){.worker = wid, .task = task, .nbytes = nbytes, .start = start, .end = end};
    snprintf(x->from, sizeof x->from, "%s", from);
}
