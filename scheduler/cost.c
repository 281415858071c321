/* Expected task durations and transfer times (DESIGN.md: StarPU's history-based performance
 * models, per worker kind). Tasks fall into cost classes (operation, kernel family, dtype,
 * inputs, output bytes, flops: in practice one class per operation and chunk shape); a class
 * starts from a flops/bytes prior for each worker kind and then follows the run times workers of
 * that kind report, normalised by each worker's speed factor so that a worker sharing its core
 * with something else reads as slower rather than making the whole class look slow. Bandwidth
 * comes from the workers' own measurements of their peer fetches; device copies keep a prior. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "scheduler/sched.h"

/* The priors, before any measurement; only the first tasks of a class on each kind of worker see
 * them (docs/ARCHITECTURE.md, "Placement"). A CPU thread: a sustained dgemm-like rate for flops
 * and a memory-bound rate for bytes touched, plus a fixed cost per task. A GPU worker (one
 * executor): a dgemm rate for flops far above a core's (it is what MATMUL costs; every other
 * family counts about one flop per element, which is nothing at that rate), a memory-bound rate
 * for bytes touched (what every family but MATMUL costs), and a launch-and-synchronise cost per
 * task; the families it runs on its host thread (LOAD: a file read) get the CPU prior. Host and
 * device copies: PCIe-like rates. Orders of magnitude, not measurements of any one card. */
#define MODEL_FLOPS 2e10
#define MODEL_BYTES 4e9
#define MODEL_TASK 2e-6
#define GPU_MODEL_FLOPS 5e12
#define GPU_MODEL_BYTES 1e11
#define GPU_MODEL_TASK 1e-5
#define GPU_H2D 2e10
#define GPU_D2H 2e10
#define LEARN_RATE 0.1  /* EWMA weight once a class has a few samples */
#define SPEED_RATE 0.05 /* EWMA weight of a worker's speed factor */
#define OUTLIER 8       /* a sample past this many class means counts as this many */

void tsr__costs_init(tsr__costs *c) {
    memset(c, 0, sizeof *c);
    c->bw = 1e9;
    c->latency = 3e-4; /* a wake-up across vCPUs (see docs/ARCHITECTURE.md) */
    c->h2d_bw = GPU_H2D;
    c->d2h_bw = GPU_D2H;
}

void tsr__costs_free(tsr__costs *c) {
    free(c->c);
    free(c->slot);
    memset(c, 0, sizeof *c);
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h * 0xBF58476D1CE4E5B9ull;
}

static int same(const tsr__cls *k, const char *op, uint8_t kop, uint8_t dtype, uint32_t ndeps,
                uint64_t nbytes, float flops) {
    return k->kop == kop && k->dtype == dtype && k->ndeps == ndeps && k->nbytes == nbytes &&
           k->flops == flops && strncmp(k->op, op, sizeof k->op - 1) == 0;
}

/* The priors of a class (see the constants above). */
static void priors(tsr__cls *k) {
    double touched = (double)k->nbytes * (1.0 + k->ndeps);
    k->model[TSR__KIND_CPU] = (double)k->flops / MODEL_FLOPS + touched / MODEL_BYTES + MODEL_TASK;
    if (k->kop == TSR_KOP_LOAD || tsr__kop_has(k->kop, TSR__KOP_HOST))
        k->model[TSR__KIND_GPU] = k->model[TSR__KIND_CPU];
    else
        k->model[TSR__KIND_GPU] =
            (double)k->flops / GPU_MODEL_FLOPS + touched / GPU_MODEL_BYTES + GPU_MODEL_TASK;
}

static int rehash(tsr__costs *c, size_t nslot) {
    uint32_t *slot = calloc(nslot, sizeof *slot);
    if (!slot) return -1;
    for (size_t i = 1; i < c->n; i++) {
        size_t at = c->c[i].hash & (nslot - 1);
        while (slot[at]) at = (at + 1) & (nslot - 1);
        slot[at] = (uint32_t)i;
    }
    free(c->slot);
    c->slot = slot;
    c->nslot = nslot;
    return 0;
}

uint32_t tsr__cost_class(tsr__costs *c, const char *op, uint8_t kop, uint8_t dtype, uint32_t ndeps,
                         uint64_t nbytes, float flops) {
    uint64_t h = mix(mix(mix(mix(kop, ndeps), nbytes), (uint64_t)(flops * 1.0)), dtype);
    for (const char *p = op; *p && p < op + 15; p++) h = mix(h, (uint8_t)*p);
    if (c->nslot) {
        for (size_t at = h & (c->nslot - 1); c->slot[at]; at = (at + 1) & (c->nslot - 1)) {
            tsr__cls *k = &c->c[c->slot[at]];
            if (k->hash == h && same(k, op, kop, dtype, ndeps, nbytes, flops)) return c->slot[at];
        }
    }
    if (c->n == 0) c->n = 1; /* id 0 is "no class" */
    if ((c->n + 1) * 2 > c->nslot && rehash(c, c->nslot ? c->nslot * 2 : 64) != 0) return 0;
    if (TSR__GROW(c->c, c->cap, c->n + 1) != 0) return 0;
    tsr__cls *k = &c->c[c->n];
    memset(k, 0, sizeof *k);
    k->hash = h;
    strncpy(k->op, op, sizeof k->op - 1);
    k->kop = kop;
    k->dtype = dtype;
    k->ndeps = ndeps;
    k->nbytes = nbytes;
    k->flops = flops;
    priors(k);
    size_t at = h & (c->nslot - 1);
    while (c->slot[at]) at = (at + 1) & (c->nslot - 1);
    c->slot[at] = (uint32_t)c->n;
    return (uint32_t)c->n++;
}

double tsr__cost_kind(const tsr__costs *c, uint32_t cls, int kind) {
    if (cls == 0 || cls >= c->n) return MODEL_TASK;
    const tsr__cls *k = &c->c[cls];
    return k->n[kind] ? k->mean[kind] : k->model[kind];
}

double tsr__cost_est(const tsr__costs *c, uint32_t cls, const tsr__sworker *w) {
    return tsr__cost_kind(c, cls, w->kind) * w->speed;
}

void tsr__cost_learn(tsr__costs *c, uint32_t cls, tsr__sworker *w, double seconds) {
    if (cls == 0 || cls >= c->n || !(seconds >= 0) || !isfinite(seconds)) return;
    tsr__cls *k = &c->c[cls];
    int kd = w->kind;
    /* Speed: how this worker compares with the class mean, over many classes and tasks. Tiny
     * tasks say more about overheads than about the core, so only tasks of some length count:
     * the class's usual length and this one's. (With the mean alone, one tiny task that ran
     * late, its worker descheduled, lifted a class of 0.3 us tasks past the bar, and the next
     * few dozen on-time ones each read as 8 times faster than the mean: a worker of a healthy
     * 2-core cluster fell to speed 0.57, the next job's partition gave it 62% of the tasks and
     * the other worker stole thousands back across the wire.) */
    if (k->n[kd] >= 4 && k->mean[kd] > 5e-5 && seconds > 5e-5) {
        double r = seconds / k->mean[kd];
        if (r > 8) r = 8;
        if (r < 0.125) r = 0.125;
        w->speed += SPEED_RATE * (r - w->speed);
    }
    double x = seconds / w->speed;
    if (k->n[kd] == 0)
        k->mean[kd] = x;
    else {
        /* A running mean for the first samples, then an exponential one that follows drift. */
        double a = k->n[kd] < 1.0 / LEARN_RATE ? 1.0 / (k->n[kd] + 1) : LEARN_RATE;
        /* Once the running mean has its first samples, one that ran OUTLIER times longer
         * counts as OUTLIER times: a late tiny task no longer multiplies its class's mean a
         * hundredfold (the window and every steal decision read it), while a real change still
         * moves the mean by 70% a sample. */
        if (k->n[kd] >= 1.0 / LEARN_RATE && x > OUTLIER * k->mean[kd]) x = OUTLIER * k->mean[kd];
        k->mean[kd] += a * (x - k->mean[kd]);
    }
    if (k->n[kd] < UINT32_MAX) k->n[kd]++;
}

int tsr__kdesc_peek_kop(const uint8_t *kd, size_t len) {
    /* tsr__kdesc_pack writes a 7-element array whose first element is the family as a
     * positive fixint. */
    if (len < 2 || kd[0] != 0x97 || kd[1] >= TSR_KOP_COUNT) return -1;
    return kd[1];
}

/* A uint8 as msgpack_pack_uint8 writes it (a positive fixint, or 0xcc and the byte) at *at. */
static int peek_u8(const uint8_t *kd, size_t len, size_t *at) {
    if (*at >= len) return -1;
    uint8_t b = kd[*at];
    if (b < 0x80) {
        *at += 1;
        return b;
    }
    if (b != 0xcc || *at + 1 >= len) return -1;
    *at += 2;
    return kd[*at - 1];
}

int tsr__kdesc_peek_dtype(const uint8_t *kd, size_t len) {
    /* [kop, fn, dtype, ...]: the family, the sub-operation, then the dtype, each a uint8. */
    if (tsr__kdesc_peek_kop(kd, len) < 0) return -1;
    size_t at = 2;
    if (peek_u8(kd, len, &at) < 0) return -1;
    return peek_u8(kd, len, &at);
}
