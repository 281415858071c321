/* Where tasks go (DESIGN.md, docs/ARCHITECTURE.md "Placement"): an up-front partition that gives
 * every task a home, earliest-finish-time placement of each ready task among a few candidate
 * workers (its home, the holders of its inputs, the least loaded), the per-worker backlog heaps,
 * and work stealing with the same cost model. Pure: no sockets, no clock. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"

/* ---- backlog: a binary min-heap on (job, task), so older jobs and lower ids go first ---- */

static int key_less(tsr__key a, tsr__key b) {
    return a.job != b.job ? a.job < b.job : a.task < b.task;
}

static void heap_set(tsr__sched *s, tsr__keyvec *h, size_t i, tsr__key k) {
    h->v[i] = k;
    tsr__key_task(s, k)->pos = (uint32_t)i;
}

static void sift_up(tsr__sched *s, tsr__keyvec *h, size_t i) {
    tsr__key k = h->v[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!key_less(k, h->v[p])) break;
        heap_set(s, h, i, h->v[p]);
        i = p;
    }
    heap_set(s, h, i, k);
}

static void sift_down(tsr__sched *s, tsr__keyvec *h, size_t i) {
    tsr__key k = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && key_less(h->v[c + 1], h->v[c])) c++;
        if (!key_less(h->v[c], k)) break;
        heap_set(s, h, i, h->v[c]);
        i = c;
    }
    heap_set(s, h, i, k);
}

void tsr__backlog_push(tsr__sched *s, uint32_t wid, tsr__key k) {
    tsr__keyvec *h = &s->w[wid].backlog;
    if (TSR__GROW(h->v, h->cap, h->n + 1) != 0) abort(); /* as state.c's oom() */
    h->v[h->n++] = k;
    sift_up(s, h, h->n - 1);
    s->backlog_total++;
    s->w[wid].q_backlog += tsr__key_task(s, k)->est;
}

void tsr__backlog_remove(tsr__sched *s, uint32_t wid, uint32_t pos) {
    tsr__keyvec *h = &s->w[wid].backlog;
    s->backlog_total--;
    s->w[wid].q_backlog = h->n > 1 ? s->w[wid].q_backlog - tsr__key_task(s, h->v[pos])->est : 0;
    h->n--;
    if (pos == h->n) return;
    h->v[pos] = h->v[h->n];
    tsr__key_task(s, h->v[pos])->pos = pos;
    if (pos > 0 && key_less(h->v[pos], h->v[(pos - 1) / 2]))
        sift_up(s, h, pos);
    else
        sift_down(s, h, pos);
}

tsr__key tsr__backlog_pop(tsr__sched *s, uint32_t wid) {
    tsr__key top = s->w[wid].backlog.v[0];
    tsr__backlog_remove(s, wid, 0);
    return top;
}

/* ---- kernel availability ---- */

void tsr__kinds_init(tsr__sched *s) {
    for (int kind = 0; kind < TSR__KINDS; kind++)
        for (int kop = 0; kop < TSR_KOP_COUNT; kop++)
            s->kernels[kind][kop] = tsr__kop_info_of(kop)->dtypes;
}

int tsr__kind_runs(const tsr__sched *s, int kind, int kop, int dtype) {
    if (kind < 0 || kind >= TSR__KINDS) return 0;
    if (kop < 0 || kop >= TSR_KOP_COUNT) return 1;
    uint32_t dts = s->kernels[kind][kop];
    if (dtype < 0 || dtype > 31) return dts != 0;
    return (dts >> dtype & 1) != 0;
}

static unsigned class_kinds(const tsr__sched *s, uint32_t cls) {
    if (cls == 0 || cls >= s->cost.n) return (1u << TSR__KINDS) - 1;
    const tsr__cls *k = &s->cost.c[cls];
    unsigned m = 0;
    for (int kind = 0; kind < TSR__KINDS; kind++)
        if (tsr__kind_runs(s, kind, k->kop, k->dtype)) m |= 1u << kind;
    return m;
}

unsigned tsr__task_kinds(const tsr__sched *s, const tsr__sjob *j, uint32_t id) {
    unsigned m = class_kinds(s, j->cls[id]);
    for (uint32_t k = j->g.dep_off[id]; k < j->g.dep_off[id + 1]; k++) {
        uint32_t in = j->g.deps[k];
        if (j->t[in].flags & TSR__TF_VIRTUAL) m &= class_kinds(s, j->cls[in]);
    }
    return m;
}

unsigned tsr__alive_kinds(const tsr__sched *s) {
    unsigned m = 0;
    for (int kind = 0; kind < TSR__KINDS; kind++)
        if (s->nkind[kind] > 0) m |= 1u << kind;
    return m;
}

const char *tsr__task_plugin(const tsr__sjob *j, uint32_t id) {
    if (!j->g.plugins) return NULL;
    const char *lib = j->g.plugins[j->g.array[id]];
    return lib[0] ? lib : NULL;
}

int tsr__worker_has_plugin(const tsr__sworker *w, const char *lib) {
    if (!lib) return 1;
    for (uint32_t k = 0; k < w->nplugins; k++)
        if (strcmp(w->plugins[k], lib) == 0) return 1;
    return 0;
}

/* Whether w can run a task: a kernel of its kind (kinds, tsr__task_kinds) and, for a user
 * kernel, the plugin library lib (NULL: none needed). A task never goes to a worker that cannot
 * load its plugin (docs/plugins.md). */
static int can_run(const tsr__sworker *w, unsigned kinds, const char *lib) {
    return (kinds >> w->kind & 1) != 0 && tsr__worker_has_plugin(w, lib);
}

/* ---- the partition ---- */

/* Tasks are numbered in the depth-first order of lowering, so consecutive ids share inputs (the
 * k-chain of one output block, the rows of one operand). Cutting that order into contiguous
 * runs of equal expected time keeps producers and consumers together; cheap sources are made
 * wherever they are needed, so what crosses a cut is only the few chunks computed on one side
 * and used on the other. docs/ARCHITECTURE.md says why this does as well as a general graph
 * partitioner on our graphs.
 *
 * Each worker's run is its share of the job's work, in proportion to how fast it would do the
 * whole job alone: threads / (speed x the job's seconds on one thread of its kind). For CPU
 * workers alike that is threads / speed; a GPU worker that runs the job's matmuls 20 times
 * faster than a core gets about 20 cores' share, not one thread's. Progress along the order is
 * measured for each worker in its own kind's seconds, as a fraction of the whole job. */
/* Tasks the partition divides: those still to run (all of them at submission; what is left
 * when it is done again because the workers changed). Virtual sources are made where needed. */
static int unfinished(const tsr__stask *t) {
    return !(t->flags & TSR__TF_VIRTUAL) && t->state != TSR__TS_MEMORY &&
           t->state != TSR__TS_RELEASED && t->state != TSR__TS_ERRED;
}

void tsr__partition(tsr__sched *s, tsr__sjob *j) {
    if (s->roundrobin || s->nalive == 0) return;
    uint32_t *ws = malloc(s->nw * sizeof *ws);
    double *share = malloc(s->nw * sizeof *share);
    if (!ws || !share) { /* no homes: placement still works, only without the partition */
        free(ws);
        free(share);
        return;
    }
    double T[TSR__KINDS] = {0};
    for (uint32_t t = 0; t < j->g.ntasks; t++) {
        if (!unfinished(&j->t[t])) continue;
        unsigned kinds = tsr__task_kinds(s, j, t);
        for (int k = 0; k < TSR__KINDS; k++)
            if (kinds >> k & 1) T[k] += tsr__cost_kind(&s->cost, j->cls[t], k);
    }
    size_t nw = 0;
    double rate_total = 0;
    for (uint32_t w = 0; w < s->nw && w < TSR__NOHOME; w++) {
        const tsr__sworker *wk = &s->w[w];
        if (!wk->alive || !(T[wk->kind] > 0)) continue;
        share[nw] = wk->threads / (wk->speed * T[wk->kind]);
        rate_total += share[nw];
        ws[nw++] = w;
    }
    if (nw == 0) {
        free(ws);
        free(share);
        return;
    }
    size_t wi = 0;
    double acc = 0, end = share[0] / rate_total;
    for (uint32_t t = 0; t < j->g.ntasks; t++) {
        if (!unfinished(&j->t[t])) continue;
        const tsr__sworker *wk = &s->w[ws[wi]];
        double c = tsr__cost_kind(&s->cost, j->cls[t], wk->kind) / T[wk->kind];
        while (acc + c / 2 > end && wi + 1 < nw) { /* a task goes where its middle falls */
            wi++;
            end += share[wi] / rate_total;
            wk = &s->w[ws[wi]];
            c = tsr__cost_kind(&s->cost, j->cls[t], wk->kind) / T[wk->kind];
        }
        /* A task its home could not run has none: placement alone decides. */
        j->t[t].home = can_run(wk, tsr__task_kinds(s, j, t), tsr__task_plugin(j, t))
                           ? (uint16_t)ws[wi]
                           : TSR__NOHOME;
        acc += c;
    }
    free(ws);
    free(share);
}

/* The workers changed: what every live job still has to run is divided again among the live
 * workers, so that one that joins mid-job gets its share of homes (not only what it steals)
 * and nothing keeps a lost worker as its home. */
void tsr__repartition(tsr__sched *s) {
    for (size_t i = 0; i < s->nlive; i++) {
        tsr__sjob *j = s->jobs[s->live[i]];
        if (!j->cancelled) tsr__partition(s, j);
    }
}

/* ---- placement ---- */

/* Seconds before task id could start on worker wid because of its inputs: nothing for inputs
 * held there, a transfer for inputs held elsewhere (with the copies off and onto a GPU worker's
 * device), the making of a virtual source not yet there. */
static double input_cost(const tsr__sched *s, const tsr__sjob *j, uint32_t id, uint32_t wid) {
    double c = 0;
    for (uint32_t k = j->g.dep_off[id]; k < j->g.dep_off[id + 1]; k++) {
        uint32_t in = j->g.deps[k];
        const tsr__stask *ti = &j->t[in];
        if (ti->flags & TSR__TF_VIRTUAL) {
            if (!(wid < 64 && j->rmask && (j->rmask[in] >> wid & 1)))
                c += tsr__cost_est(&s->cost, j->cls[in], &s->w[wid]);
        } else if (ti->where != wid) {
            int from = ti->where < s->nw ? s->w[ti->where].kind : TSR__KIND_CPU;
            c += tsr__cost_xfer(&s->cost, ti->nbytes, from, s->w[wid].kind);
        }
    }
    return c;
}

/* Expected finish of task id on wid: when the worker can start it, plus its inputs, plus its
 * run, plus (away from home) moving the result back to where its consumers are expected (off a
 * GPU worker's device, onto its home's).
 *
 * "Can start" counts the work already sent to the worker, not its backlog: the backlog is in
 * priority order and a newly ready task usually goes ahead of most of it (its inputs were just
 * made, so it belongs to a chain already under way, while the backlog's tail holds work that
 * was ready earlier at lower priority). Counting whole backlogs made a k-chain step hop to the
 * other worker whenever the two backlogs differed by a few tasks (over a thousand 128 KiB
 * moves for the 4096² matmul at chunk 128). Backlogs are rebalanced by stealing instead, when
 * a worker actually runs dry. */
static double finish_time(const tsr__sched *s, const tsr__sjob *j, uint32_t id, uint32_t wid) {
    const tsr__stask *t = &j->t[id];
    double f = s->w[wid].q_inflight / s->w[wid].threads + input_cost(s, j, id, wid) +
               tsr__cost_est(&s->cost, j->cls[id], &s->w[wid]);
    if (t->home != TSR__NOHOME && t->home != wid && t->home < s->nw && s->w[t->home].alive &&
        j->rdep_off[id + 1] > j->rdep_off[id])
        f += tsr__cost_xfer(&s->cost, t->nbytes, s->w[wid].kind, s->w[t->home].kind);
    return f;
}

/* Refreshes the two least loaded live workers (every so many placements: with many workers this
 * keeps placement from scanning them all for every task). */
static void refresh_least(tsr__sched *s) {
    s->least[0] = s->least[1] = TSR__NONE;
    for (uint32_t w = 0; w < s->nw; w++) {
        if (!s->w[w].alive) continue;
        double l = tsr__worker_load(&s->w[w]);
        if (s->least[0] == TSR__NONE || l < tsr__worker_load(&s->w[s->least[0]])) {
            s->least[1] = s->least[0];
            s->least[0] = w;
        } else if (s->least[1] == TSR__NONE || l < tsr__worker_load(&s->w[s->least[1]])) {
            s->least[1] = w;
        }
    }
}

/* Scans all workers up to this many; beyond, only the pruned candidates. */
#define FULL_SCAN_WORKERS 8

/* How strongly placement avoids w for a task making nbytes (docs/ARCHITECTURE.md, "Placement";
 * stealing ranks thief and victim the same way): AVOID_NONE; AVOID_MEMORY when what w will hold
 * (tsr__worker_mem) plus the task's output would pass its memory limit; AVOID_PAUSED when w is
 * paused (when it will start anything is not known). A candidate of a lower rank always wins
 * over one of a higher rank, whatever their finish times; within a rank, earliest finish
 * decides as before. So a worker without room is skipped while another has room, and when
 * every candidate is out of room (or paused), placement is what it would have been without
 * the rule. */
enum { AVOID_NONE, AVOID_MEMORY, AVOID_PAUSED };

static int avoid(const tsr__sworker *w, uint64_t nbytes) {
    if (w->st.paused) return AVOID_PAUSED;
    if (w->mem_limit > 0 && tsr__worker_mem(w) + nbytes > w->mem_limit) return AVOID_MEMORY;
    return AVOID_NONE;
}

/* The best candidate so far: its worker, expected finish and avoidance rank. */
typedef struct pick {
    uint32_t w;
    double f;
    int avoid;
} pick;

/* A candidate: live, with a kernel for the task (kinds, tsr__task_kinds), and of the lowest
 * avoidance rank, finishing it earliest so far. */
static void consider(const tsr__sched *s, const tsr__sjob *j, uint32_t id, unsigned kinds,
                     uint32_t w, pick *best) {
    if (w >= s->nw || !s->w[w].alive || !can_run(&s->w[w], kinds, tsr__task_plugin(j, id))) return;
    int a = avoid(&s->w[w], j->t[id].nbytes);
    if (best->w != TSR__NONE && a > best->avoid) return;
    double f = finish_time(s, j, id, w);
    /* Ties (typically tasks with no inputs while windows are full): home first, then the
     * shorter backlog. */
    if (best->w == TSR__NONE || a < best->avoid || f < best->f ||
        (f == best->f && best->w != j->t[id].home &&
         (w == j->t[id].home || tsr__worker_load(&s->w[w]) < tsr__worker_load(&s->w[best->w])))) {
        *best = (pick){w, f, a};
    }
}

/* The next live worker able to run the task, not paused if any such is (the baseline keeps no
 * other rule). */
static uint32_t round_robin(tsr__sched *s, unsigned kinds, const char *lib) {
    for (int any = 0; any < 2; any++) {
        for (size_t n = 0; n < s->nw; n++) {
            uint32_t w = (uint32_t)((s->rr + n) % s->nw);
            if (s->w[w].alive && can_run(&s->w[w], kinds, lib) && (any || !s->w[w].st.paused)) {
                s->rr = (w + 1) % (uint32_t)s->nw;
                return w;
            }
        }
    }
    return TSR__NONE;
}

/* A HELD task goes where the chunk it names is, when that worker can take it: its kernel then
 * copies from the worker's own store instead of fetching (tsr_persist). */
static uint32_t held_where(const tsr__sched *s, const tsr__sjob *j, uint32_t task, unsigned kinds) {
    uint32_t job, id;
    if (!tsr__jobspec_held(&j->g, task, &job, &id) || job == TSR__NONE) return TSR__NONE;
    const tsr__sjob *src = tsr__sched_job(s, job);
    if (!src || id >= src->g.ntasks || src->t[id].state != TSR__TS_MEMORY) return TSR__NONE;
    uint32_t w = src->t[id].where;
    if (w >= s->nw || !s->w[w].alive || !can_run(&s->w[w], kinds, tsr__task_plugin(j, task)) ||
        s->w[w].st.paused)
        return TSR__NONE;
    return w;
}

uint32_t tsr__place(tsr__sched *s, const tsr__sjob *j, uint32_t task) {
    if (s->nalive == 0) return TSR__NONE;
    unsigned kinds = tsr__task_kinds(s, j, task);
    /* Only tasks without inputs can be HELD: the others skip the descriptor check. */
    uint32_t hw =
        j->g.dep_off[task] == j->g.dep_off[task + 1] ? held_where(s, j, task, kinds) : TSR__NONE;
    if (hw != TSR__NONE) return hw;
    if (s->roundrobin) return round_robin(s, kinds, tsr__task_plugin(j, task));
    pick best = {TSR__NONE, 0, AVOID_NONE};
    const tsr__stask *t = &j->t[task];
    if (s->nw <= FULL_SCAN_WORKERS) {
        for (uint32_t w = 0; w < s->nw; w++) consider(s, j, task, kinds, w, &best);
        return best.w;
    }
    if ((s->placements++ & 63) == 0 || s->least[0] == TSR__NONE || !s->w[s->least[0]].alive)
        refresh_least(s);
    if (t->home != TSR__NOHOME) consider(s, j, task, kinds, t->home, &best);
    for (uint32_t k = j->g.dep_off[task]; k < j->g.dep_off[task + 1]; k++) {
        const tsr__stask *in = &j->t[j->g.deps[k]];
        if (in->where != TSR__NONE) consider(s, j, task, kinds, in->where, &best);
    }
    consider(s, j, task, kinds, s->least[0], &best);
    consider(s, j, task, kinds, s->least[1], &best);
    /* Every pruned candidate is avoided (paused or out of memory): look at them all, which
     * costs O(workers) only while some are. */
    if (best.w != TSR__NONE && best.avoid != AVOID_NONE)
        for (uint32_t w = 0; w < s->nw; w++) consider(s, j, task, kinds, w, &best);
    return best.w != TSR__NONE ? best.w : round_robin(s, kinds, tsr__task_plugin(j, task));
}

/* ---- stealing ---- */

/* How long a victim's backlog waits: a paused worker's, for an unknown time (it goes first). */
static double victim_wait(const tsr__sworker *w) {
    return w->st.paused ? INFINITY : tsr__worker_load(w);
}

/* An idle worker (room in its window, nothing in its backlog, not paused) takes never-sent
 * tasks from the most loaded backlog (a paused worker's first), from the front (the next ones
 * due), while each would finish earlier on the thief, inputs moved, than it would start on the
 * victim, and the thief has a kernel for it (it stops at the first it has none for: the front
 * is what is due). Tasks already sent are never taken back: a stolen task has not started
 * anywhere. */
uint32_t tsr__steal(tsr__sched *s, uint32_t thief) {
    if (s->roundrobin) return 0;
    tsr__sworker *t = &s->w[thief];
    if (t->st.paused) return 0; /* a paused worker takes no new work, stolen or not */
    uint32_t victim = TSR__NONE;
    for (uint32_t wid = 0; wid < s->nw; wid++) {
        if (wid == thief || !s->w[wid].alive || s->w[wid].backlog.n == 0) continue;
        if (victim == TSR__NONE || victim_wait(&s->w[wid]) > victim_wait(&s->w[victim]))
            victim = wid;
    }
    if (victim == TSR__NONE) return 0;
    tsr__sworker *v = &s->w[victim];
    size_t half = (v->backlog.n + 1) / 2, n = 0;
    uint64_t took = 0; /* output bytes of the tasks taken */
    size_t room = (size_t)TSR__WINDOW_MAX_PER_THREAD * t->threads;
    while (n < half && n < room && v->backlog.n > 0) {
        tsr__key k = v->backlog.v[0];
        tsr__sjob *j = s->jobs[k.job];
        if (!can_run(t, tsr__task_kinds(s, j, k.task), tsr__task_plugin(j, k.task))) break;
        /* Ranked as placement ranks workers: never a task the thief has less room for than
         * the victim (what it took so far counts; a paused victim ranks last). */
        uint64_t nb = j->t[k.task].nbytes;
        if (avoid(t, took + nb) > avoid(v, nb)) break;
        /* The victim's wait for this task: its in-flight work (the backlog front comes next);
         * a paused victim starts nothing until it resumes, so anything the thief can run
         * finishes earlier on the thief. */
        double wait = v->st.paused ? INFINITY : v->q_inflight / v->threads;
        double here = tsr__worker_load(t) + input_cost(s, j, k.task, thief) +
                      tsr__cost_est(&s->cost, j->cls[k.task], t);
        double there = wait + tsr__cost_est(&s->cost, j->cls[k.task], v);
        if (here >= there) break;
        tsr__backlog_pop(s, victim);
        tsr__stask *ts = tsr__key_task(s, k);
        ts->where = thief;
        ts->est = (float)tsr__cost_est(&s->cost, j->cls[k.task], t);
        tsr__backlog_push(s, thief, k);
        took += nb;
        n++;
    }
    if (n)
        tsr__log(s->log, TSR_LOG_DEBUG, "worker %s steals %zu tasks from %s", t->name, n, v->name);
    return (uint32_t)n;
}
