/* Persisted arrays and computing a scalar. tsr_persist computes arrays like tsr_compute and marks
 * them so that later lowerings take their chunks from the job that holds them (HELD tasks,
 * array/lower.c) instead of lowering their definitions again; the chunks stay on the workers
 * until the array is freed (the jobref of tsr_compute). A held chunk lost with its worker fails
 * the HELD task, and tsr_compute (compute.c) then computes again from the definitions. */
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

void tsr__persist_refresh(tsr_client *c) {
    if (!c->rt || !c->connected) return;
    int any = 0;
    for (tsr_array *a = c->live; a && !any; a = a->live_next) any = a->persisted;
    if (!any) return;
    /* A `finished` sent again since the last call (the scheduler made lost outputs again) is
     * read now, before the addresses are taken; messages about other jobs are dropped as in
     * any call. */
    tsr__uv_run(&c->loop, UV_RUN_NOWAIT);
    for (tsr_array *a = c->live; a; a = a->live_next)
        if (a->persisted) tsr__fetch_refresh_addrs(c->rt, a);
}

int tsr_persist(tsr_client *c, tsr_array *const *arrays, size_t n,
                const tsr_compute_options *opts) {
    if (!c) return TSR_EINVALID;
    if (opts && opts->nstore)
        return tsr__fail(c, TSR_EINVALID,
                         "tsr_persist: write stores with tsr_store or tsr_compute");
    if (n > 0 && !arrays) return tsr__fail(c, TSR_EINVALID, "tsr_persist: arrays is NULL");
    /* Arrays persisted already keep their chunks: computing them again would only copy them. */
    tsr_array **todo = malloc((n ? n : 1) * sizeof *todo);
    if (!todo) return tsr__fail(c, -ENOMEM, "out of memory");
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        if (!arrays[k]) {
            free(todo);
            return tsr__fail(c, TSR_EINVALID, "tsr_persist: arrays[%zu] is NULL", k);
        }
        if (!(arrays[k]->persisted && arrays[k]->computed.task)) todo[m++] = arrays[k];
    }
    int rc = m > 0 ? tsr_compute(c, todo, m, opts) : 0;
    for (size_t k = 0; rc == 0 && k < m; k++) todo[k]->persisted = 1;
    free(todo);
    return rc;
}

int tsr_compute_scalar(tsr_array *a, double *value) {
    if (!a) return tsr__fail(NULL, TSR_EINVALID, "tsr_compute_scalar: array is NULL");
    tsr_client *c = a->client;
    if (!value) return tsr__fail(c, TSR_EINVALID, "tsr_compute_scalar: value is NULL");
    if (!c)
        return tsr__fail(NULL, TSR_EINVALID, "tsr_compute_scalar: the client of \"%s\" was freed",
                         a->name);
    if (tsr_array_size(a) != 1)
        return tsr__fail(c, TSR_ESHAPE,
                         "tsr_compute_scalar: array \"%s\" has %lld elements, not one (reduce it "
                         "first, e.g. tsr_sum_all)",
                         a->name, (long long)tsr_array_size(a));
    int rc = a->computed.task ? 0 : tsr_compute(c, &a, 1, NULL);
    if (rc < 0) return rc;
    union {
        double f64;
        float f32;
        int64_t i64;
        uint8_t b;
    } v;
    rc = tsr_array_read(a, &v, sizeof v);
    if (rc < 0) return rc;
    switch (a->dtype) {
    case TSR_FLOAT64:
        *value = v.f64;
        break;
    case TSR_FLOAT32:
        *value = (double)v.f32;
        break;
    case TSR_INT64:
        *value = (double)v.i64;
        break;
    default:
        *value = v.b ? 1.0 : 0.0;
        break;
    }
    return 0;
}
