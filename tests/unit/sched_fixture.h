/* Shared by the scheduler's unit tests: small graphs built by hand as a decoded submission
 * (tsr__jobspec) and a drain of the state machine's actions, as the server's flush sees them.
 * Task t's kernel descriptor is one byte (opaque) unless src[t] names a kernel family, which
 * makes it the four-byte prefix of a real descriptor, [family, fn 0, dtype (float64 unless
 * dtype[t] says 1 + another)] (so a fill/random/arange task with no inputs is a cheap source,
 * and the scheduler knows the family and dtype a worker needs a kernel for). */
#ifndef TSR_TEST_SCHED_FIXTURE_H
#define TSR_TEST_SCHED_FIXTURE_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "scheduler/sched.h"

__attribute__((unused)) static tsr__logger quiet = {"scheduler-test", TSR_LOG_ERROR};

/* ---- building graphs ---- */

#define GB_MAX 512

typedef struct gb {
    uint32_t n;
    uint32_t ndeps[GB_MAX];
    uint32_t deps[GB_MAX][8];
    uint32_t outputs[GB_MAX];
    uint32_t nout;
    int src[GB_MAX];         /* 1 + kernel family, or 0: an opaque descriptor */
    int dtype[GB_MAX];       /* 1 + tsr_dtype, or 0: float64 (with src only) */
    float flops[GB_MAX];     /* 0: the default (about 10 ms of work) */
    uint64_t nbytes[GB_MAX]; /* 0: the default (1000) */
    uint32_t nstream;        /* the first nstream outputs are streamed (submit's `stream`) */
} gb;

static inline uint32_t gb_task(gb *g, uint32_t nd, const uint32_t *d) {
    cr_assert_lt(g->n, GB_MAX);
    uint32_t id = g->n++;
    g->ndeps[id] = nd;
    for (uint32_t k = 0; k < nd; k++) g->deps[id][k] = d[k];
    return id;
}

static inline void gb_spec(const gb *g, tsr__jobspec *s) {
    memset(s, 0, sizeof *s);
    s->ntasks = g->n;
    s->narrays = 1;
    s->noutputs = g->nout;
    s->array = calloc(g->n + 1, sizeof *s->array);
    s->dep_off = calloc(g->n + 1, sizeof *s->dep_off);
    s->deps = calloc(GB_MAX * 8, sizeof *s->deps);
    s->nbytes = calloc(g->n + 1, sizeof *s->nbytes);
    s->flops = calloc(g->n + 1, sizeof *s->flops);
    s->ops = calloc(2, sizeof *s->ops);
    strcpy(s->ops[0], "test");
    s->kd_off = calloc(g->n + 1, sizeof *s->kd_off);
    s->arena = calloc(4 * g->n + 1, 1);
    s->outputs = calloc(g->nout + 1, sizeof *s->outputs);
    uint32_t dp = 0, kp = 0;
    for (uint32_t t = 0; t < g->n; t++) {
        s->dep_off[t] = dp;
        for (uint32_t k = 0; k < g->ndeps[t]; k++) s->deps[dp++] = g->deps[t][k];
        s->nbytes[t] = g->nbytes[t] ? g->nbytes[t] : 1000;
        /* about 10 ms each by default: in-flight windows hold the minimum */
        s->flops[t] = g->flops[t] ? g->flops[t] : 2e8f;
        s->kd_off[t] = kp;
        if (g->src[t]) {
            s->arena[kp++] = 0x97;
            s->arena[kp++] = (uint8_t)(g->src[t] - 1);
            s->arena[kp++] = 0;
            s->arena[kp++] = (uint8_t)(g->dtype[t] ? g->dtype[t] - 1 : TSR_FLOAT64);
        } else {
            s->arena[kp++] = (uint8_t)t;
        }
    }
    s->dep_off[g->n] = dp;
    s->kd_off[g->n] = kp;
    memcpy(s->outputs, g->outputs, g->nout * sizeof *g->outputs);
    s->nstream = g->nstream;
}

static inline uint32_t submit(tsr__sched *s, const gb *g) {
    tsr__jobspec spec;
    gb_spec(g, &spec);
    uint32_t job = 0;
    char err[128];
    cr_assert_eq(tsr__sched_submit(s, 7, &spec, &job, err, sizeof err), 0, "%s", err);
    return job;
}

static inline void diamond(gb *g) {
    memset(g, 0, sizeof *g);
    uint32_t a = gb_task(g, 0, NULL);
    uint32_t b = gb_task(g, 1, (uint32_t[]){a});
    uint32_t c = gb_task(g, 1, (uint32_t[]){a});
    uint32_t d = gb_task(g, 2, (uint32_t[]){b, c});
    g->outputs[g->nout++] = d;
}

/* ---- collecting actions (what the server's flush would see) ---- */

typedef struct acts {
    tsr__action a[256];
    size_t n;
} acts;

static inline void drain(tsr__sched *s, acts *out) {
    tsr__sched_balance(s);
    out->n = 0;
    for (size_t i = 0; i < s->nact; i++) {
        tsr__action a = s->act[i];
        a.msg = NULL;
        if (a.kind == TSR__ACT_COMPUTE) {
            tsr__sjob *j = tsr__sched_job(s, a.job);
            if (!j || j->cancelled) continue; /* as the server skips them */
            tsr__stask *t = &j->t[a.task];
            if (t->state != TSR__TS_RUNNING || t->where != a.worker || (t->flags & TSR__TF_SENT))
                continue;
            t->flags |= TSR__TF_SENT; /* as the server marks what it wrote */
        }
        cr_assert_lt(out->n, 256);
        out->a[out->n++] = a;
    }
    tsr__sched_clear_actions(s);
}

static inline int has(const acts *x, int kind, uint32_t worker, uint32_t task) {
    for (size_t i = 0; i < x->n; i++)
        if (x->a[i].kind == kind && x->a[i].task == task &&
            (kind == TSR__ACT_FINISHED || kind == TSR__ACT_FAILED || x->a[i].worker == worker))
            return 1;
    return 0;
}

static inline size_t count(const acts *x, int kind) {
    size_t n = 0;
    for (size_t i = 0; i < x->n; i++) n += x->a[i].kind == kind;
    return n;
}

static inline int has_finished(const acts *x, uint32_t job) {
    for (size_t i = 0; i < x->n; i++)
        if (x->a[i].kind == TSR__ACT_FINISHED && x->a[i].job == job) return 1;
    return 0;
}

#endif
