/* A submitted job's task table (tsr__jobspec, decoded by proto.c): the checks it passes before
 * the state machine takes it (state.c trusts every index afterwards), and its freeing. */
#include <stdlib.h>
#include <string.h>

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
    memset(g, 0, sizeof *g);
}
