/* A submitted job's task table (tsr__jobspec, decoded by proto.c): the checks it passes before
 * the state machine takes it (state.c trusts every index afterwards), and its freeing. */
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "scheduler/sched.h"

int tsr__jobspec_check(const tsr__jobspec *g, char *err, size_t errlen) {
    if (g->dep_off[0] != 0 || g->kd_off[0] != 0) goto bad_off;
    for (uint32_t t = 0; t < g->ntasks; t++) {
        if (g->dep_off[t + 1] < g->dep_off[t] || g->kd_off[t + 1] < g->kd_off[t]) goto bad_off;
        if (g->kd_off[t + 1] == g->kd_off[t]) {
            tsr__fmt(err, errlen, "task %u: empty kernel descriptor", t);
            return TSR_EPROGRAM;
        }
        if (g->array[t] >= g->narrays) {
            tsr__fmt(err, errlen, "task %u: array index %u out of range (%u arrays)", t,
                     g->array[t], g->narrays);
            return TSR_EPROGRAM;
        }
        for (uint32_t k = g->dep_off[t]; k < g->dep_off[t + 1]; k++) {
            if (g->deps[k] >= t) {
                tsr__fmt(err, errlen, "task %u: input %u is not an earlier task", t, g->deps[k]);
                return TSR_EPROGRAM;
            }
        }
    }
    for (uint32_t o = 0; o < g->noutputs; o++) {
        if (g->outputs[o] >= g->ntasks) {
            tsr__fmt(err, errlen, "output %u: task id %u out of range (%u tasks)", o, g->outputs[o],
                     g->ntasks);
            return TSR_EPROGRAM;
        }
    }
    if (g->nstream > g->noutputs) {
        tsr__fmt(err, errlen, "stream: %u streamed outputs, but the graph has %u outputs",
                 g->nstream, g->noutputs);
        return TSR_EPROGRAM;
    }
    return 0;
bad_off:
    tsr__fmt(err, errlen, "inconsistent task table offsets");
    return TSR_EPROGRAM;
}

int tsr__jobspec_held(const tsr__jobspec *g, uint32_t t, uint32_t *job, uint32_t *task) {
    const uint8_t *kd = g->arena + g->kd_off[t];
    size_t n = g->kd_off[t + 1] - g->kd_off[t];
    /* A descriptor is a msgpack array whose first item is the family, a small integer: only
     * those that say HELD are decoded. */
    if (n < 2 || (kd[0] & 0xf0) != 0x90 || kd[1] != TSR_KOP_HELD) return 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    tsr_kdesc d;
    int64_t *ib = NULL;
    double *fb = NULL;
    int rc = msgpack_unpack_next(&u, (const char *)kd, n, NULL) == MSGPACK_UNPACK_SUCCESS
                 ? tsr__kdesc_unpack(&u.data, &d, &ib, &fb)
                 : TSR_EPROTOCOL;
    int ok = rc == 0 && d.ni >= 2 && d.i[0] >= 0 && d.i[0] <= UINT32_MAX && d.i[1] >= 0 &&
             d.i[1] <= UINT32_MAX;
    *job = ok ? (uint32_t)d.i[0] : TSR__NONE;
    *task = ok ? (uint32_t)d.i[1] : TSR__NONE;
    tsr__kdesc_unpack_free(ib, fb);
    msgpack_unpacked_destroy(&u);
    return 1;
}

int tsr__jobspec_check_held(const tsr__sched *s, uint32_t client, const tsr__jobspec *g, char *err,
                            size_t errlen) {
    int rc = tsr__jobspec_check(g, err, errlen); /* the offsets read below are checked */
    if (rc) return rc;
    for (uint32_t t = 0; t < g->ntasks; t++) {
        uint32_t job, task;
        if (!tsr__jobspec_held(g, t, &job, &task)) continue;
        const tsr__sjob *j = job != TSR__NONE ? tsr__sched_job(s, job) : NULL;
        if (!j || j->client != client || j->cancelled || task >= j->g.ntasks) {
            tsr__fmt(err, errlen,
                     "task %u: a held chunk must name a task of a live job of the same client", t);
            return TSR_EPROGRAM;
        }
    }
    return 0;
}

void tsr__jobspec_free(tsr__jobspec *g) {
    free(g->array);
    free(g->dep_off);
    free(g->deps);
    free(g->nbytes);
    free(g->flops);
    free(g->kd_off);
    free(g->arena);
    free(g->outputs);
    free(g->ops);
    free(g->plugins);
    memset(g, 0, sizeof *g);
}
