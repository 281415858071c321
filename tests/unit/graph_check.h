/* The structural invariants every lowered graph must have, checked by the tests on the
 * in-memory graph (production code validates the packed payload once, in the scheduler's
 * decoder, tsr__proto_submit): deps in range and smaller than their task, outputs in range,
 * shapes non-negative, kop and dtype in range. 0 or TSR_EPROGRAM with a message in err. */
#ifndef TSR_TEST_GRAPH_CHECK_H
#define TSR_TEST_GRAPH_CHECK_H

#include <math.h>

#include "graph/graph.h"

static int graph_check(const tsr_graph *g, char *err, size_t errlen) {
    for (size_t t = 0; t < g->ntasks; t++) {
        const tsr_gtask *tk = &g->tasks[t];
        const tsr_kdesc *d = &tk->d;
        if (d->kop >= TSR_KOP_COUNT) {
            tsr__fmt(err, errlen, "task %zu: kernel family %d out of range", t, d->kop);
            return TSR_EPROGRAM;
        }
        if (d->dtype > TSR_FLOAT32) {
            tsr__fmt(err, errlen, "task %zu (%s): invalid dtype %d", t, tsr__kop_name(d->kop),
                     d->dtype);
            return TSR_EPROGRAM;
        }
        if (d->ndim > TSR_MAX_NDIM) {
            tsr__fmt(err, errlen, "task %zu (%s): ndim %d exceeds %d", t, tsr__kop_name(d->kop),
                     d->ndim, TSR_MAX_NDIM);
            return TSR_EPROGRAM;
        }
        for (int a = 0; a < d->ndim; a++) {
            if (d->shape[a] < 0) {
                tsr__fmt(err, errlen, "task %zu (%s): negative shape %lld on axis %d", t,
                         tsr__kop_name(d->kop), (long long)d->shape[a], a);
                return TSR_EPROGRAM;
            }
        }
        if (tk->array >= g->narrays) {
            tsr__fmt(err, errlen, "task %zu: array index %u out of range (%zu arrays)", t,
                     tk->array, g->narrays);
            return TSR_EPROGRAM;
        }
        if ((uint64_t)tk->deps_off + tk->ndeps > g->ndeps) {
            tsr__fmt(err, errlen, "task %zu: dependency list out of range", t);
            return TSR_EPROGRAM;
        }
        for (uint32_t k = 0; k < tk->ndeps; k++) {
            uint32_t dep = g->deps[tk->deps_off + k];
            if (dep >= t) {
                tsr__fmt(err, errlen, "task %zu: dependency %u is not an earlier task", t, dep);
                return TSR_EPROGRAM;
            }
        }
        if (!(tk->flops >= 0) || isinf(tk->flops)) {
            tsr__fmt(err, errlen, "task %zu: invalid cost estimate", t);
            return TSR_EPROGRAM;
        }
    }
    for (size_t k = 0; k < g->noutputs; k++) {
        if (g->outputs[k] >= g->ntasks) {
            tsr__fmt(err, errlen, "output %zu: task %u out of range (%zu tasks)", k, g->outputs[k],
                     g->ntasks);
            return TSR_EPROGRAM;
        }
    }
    return 0;
}

#endif
