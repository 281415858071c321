/* The scheduler's side of docs/PROTOCOL.md: msgpack headers and payloads to structs and back.
 * Pure functions on buffers (unit-testable); every read of peer input is checked, never
 * asserted. Framing lives in wire/, meanings in state.c. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"
#include "wire/wire.h"

/* ---- decoding ---- */

int tsr__proto_hello(const msgpack_object *hdr, tsr__hello *h, char *err, size_t errlen) {
    memset(h, 0, sizeof *h);
    if (!tsr__mp_str_eq(tsr__mp_get(hdr, "t"), "hello")) {
        tsr__fmt(err, errlen, "first frame is not a hello");
        return TSR_EPROTOCOL;
    }
    if (tsr__mp_get_int(hdr, "v", &h->v) != 0) {
        tsr__fmt(err, errlen, "hello without a protocol version");
        return TSR_EPROTOCOL;
    }
    if (h->v != TSR_PROTOCOL_VERSION) return TSR_EVERSION;
    const msgpack_object *role = tsr__mp_get(hdr, "role");
    if (tsr__mp_str_eq(role, "client"))
        h->role = TSR__ROLE_CLIENT;
    else if (tsr__mp_str_eq(role, "worker"))
        h->role = TSR__ROLE_WORKER;
    else if (tsr__mp_str_eq(role, "monitor"))
        h->role = TSR__ROLE_MONITOR;
    else {
        tsr__fmt(err, errlen, "unknown or missing role");
        return TSR_EPROTOCOL;
    }
    if (tsr__mp_get(hdr, "name") && tsr__mp_get_str(hdr, "name", h->name, sizeof h->name) != 0) {
        tsr__fmt(err, errlen, "bad name");
        return TSR_EPROTOCOL;
    }
    if (tsr__mp_get(hdr, "token")) {
        if (tsr__mp_get_str(hdr, "token", h->token, sizeof h->token) != 0) {
            tsr__fmt(err, errlen, "bad token");
            return TSR_EPROTOCOL;
        }
        h->has_token = 1;
    }
    if (h->role == TSR__ROLE_WORKER) {
        if (tsr__mp_get_int(hdr, "threads", &h->threads) != 0 || h->threads < 1 ||
            h->threads > 4096) {
            tsr__fmt(err, errlen, "worker hello: threads missing or out of range");
            return TSR_EPROTOCOL;
        }
        if (tsr__mp_get_str(hdr, "addr", h->addr, sizeof h->addr) != 0 || !h->addr[0]) {
            tsr__fmt(err, errlen, "worker hello: addr missing or too long");
            return TSR_EPROTOCOL;
        }
        char host[64];
        int port;
        if (tsr__parse_address(h->addr, host, sizeof host, &port) != 0) {
            tsr__fmt(err, errlen, "worker hello: bad addr");
            return TSR_EPROTOCOL;
        }
        if (tsr__mp_get(hdr, "kind") &&
            tsr__mp_get_str(hdr, "kind", h->kind, sizeof h->kind) != 0) {
            tsr__fmt(err, errlen, "worker hello: bad kind");
            return TSR_EPROTOCOL;
        }
        /* Optional, for monitors: a list too long is cut, a bad type ignored. */
        const msgpack_object *c = tsr__mp_get(hdr, "cpus");
        if (c && c->type == MSGPACK_OBJECT_STR) {
            size_t n = c->via.str.size < sizeof h->cpus - 1 ? c->via.str.size : sizeof h->cpus - 1;
            memcpy(h->cpus, c->via.str.ptr, n);
            h->cpus[n] = 0;
        }
        if (tsr__mp_get_int(hdr, "mem", &h->mem) != 0 || h->mem < 0) h->mem = 0;
    }
    return 0;
}

static int rd_u32(tsr__mpr *r, uint32_t *out) {
    uint64_t v;
    if (tsr__mpr_uint(r, &v) || v >= UINT32_MAX) return -1;
    *out = (uint32_t)v;
    return 0;
}

/* The submission is decoded from its bytes in two passes over the tasks (validate and size,
 * then fill), never as a msgpack object tree: see wire/mpread.c. */

/* Pass 1: validates the tasks list and sizes the job. */
static int check_tasks(tsr__mpr r, uint32_t n, uint32_t narrays, uint64_t *ndeps, uint64_t *nkd,
                       char *err, size_t errlen) {
    *ndeps = *nkd = 0;
    for (uint32_t t = 0; t < n; t++) {
        uint32_t nf, a, nd, kl;
        uint64_t nbytes;
        double flops;
        const uint8_t *kd;
        if (tsr__mpr_array(&r, &nf) || nf != 5) {
            tsr__fmt(err, errlen, "task %u: not [array, deps, nbytes, flops, kdesc]", t);
            return TSR_EPROGRAM;
        }
        if (rd_u32(&r, &a) || a >= narrays) {
            tsr__fmt(err, errlen, "task %u: array index out of range (%u arrays)", t, narrays);
            return TSR_EPROGRAM;
        }
        if (tsr__mpr_array(&r, &nd)) {
            tsr__fmt(err, errlen, "task %u: deps is not an array", t);
            return TSR_EPROGRAM;
        }
        for (uint32_t k = 0; k < nd; k++) {
            uint32_t d;
            if (rd_u32(&r, &d) || d >= t) {
                tsr__fmt(err, errlen, "task %u: input %u is not an earlier task id", t, k);
                return TSR_EPROGRAM;
            }
        }
        *ndeps += nd;
        if (tsr__mpr_uint(&r, &nbytes)) {
            tsr__fmt(err, errlen, "task %u: nbytes is not a non-negative integer", t);
            return TSR_EPROGRAM;
        }
        if (tsr__mpr_double(&r, &flops) || !isfinite(flops) || flops < 0) {
            tsr__fmt(err, errlen, "task %u: flops is not a finite non-negative number", t);
            return TSR_EPROGRAM;
        }
        if (tsr__mpr_bin(&r, &kd, &kl) || kl == 0) {
            tsr__fmt(err, errlen, "task %u: kdesc is not a non-empty bin", t);
            return TSR_EPROGRAM;
        }
        *nkd += kl;
    }
    if (*ndeps >= UINT32_MAX) {
        tsr__fmt(err, errlen, "too many dependencies");
        return TSR_EPROGRAM;
    }
    return 0;
}

static int fill_tasks(tsr__mpr r, tsr__jobspec *g) {
    uint32_t dp = 0;
    uint64_t kp = 0;
    for (uint32_t t = 0; t < g->ntasks; t++) {
        uint32_t nf, nd, kl;
        uint64_t nb;
        double flops;
        const uint8_t *kd;
        tsr__mpr_array(&r, &nf);
        rd_u32(&r, &g->array[t]);
        tsr__mpr_array(&r, &nd);
        g->dep_off[t] = dp;
        for (uint32_t k = 0; k < nd; k++) rd_u32(&r, &g->deps[dp++]);
        tsr__mpr_uint(&r, &nb);
        g->nbytes[t] = nb;
        tsr__mpr_double(&r, &flops);
        g->flops[t] = (float)flops;
        tsr__mpr_bin(&r, &kd, &kl);
        g->kd_off[t] = kp;
        memcpy(g->arena + kp, kd, kl);
        kp += kl;
    }
    g->dep_off[g->ntasks] = dp;
    g->kd_off[g->ntasks] = kp;
    return r.err ? -1 : 0; /* pass 1 checked the same bytes */
}

static int decode_arrays(tsr__mpr r, tsr__jobspec *g, char *err, size_t errlen) {
    for (uint32_t a = 0; a < g->narrays; a++) {
        uint32_t n, ln, lo;
        const char *name, *op;
        if (tsr__mpr_array(&r, &n) || n != 2 || tsr__mpr_str(&r, &name, &ln) ||
            tsr__mpr_str(&r, &op, &lo)) {
            tsr__fmt(err, errlen, "array %u: not [name, op]", a);
            return TSR_EPROGRAM;
        }
        size_t k = lo < sizeof g->ops[a] - 1 ? lo : sizeof g->ops[a] - 1;
        memcpy(g->ops[a], op, k);
        g->ops[a][k] = 0;
    }
    return 0;
}

static int decode_root(tsr__mpr *r, tsr__jobspec *g, char *err, size_t errlen) {
    uint32_t nkeys;
    uint64_t v = 0;
    int has_v = 0;
    tsr__mpr arrays = {0}, tasks = {0}, outputs = {0};
    uint32_t na = 0, nt = 0, no = 0;
    int seen = 0;
    if (tsr__mpr_map(r, &nkeys)) {
        tsr__fmt(err, errlen, "graph payload is not a map");
        return TSR_EPROGRAM;
    }
    for (uint32_t i = 0; i < nkeys; i++) {
        const char *key;
        uint32_t kl;
        if (tsr__mpr_str(r, &key, &kl)) break;
        if (kl == 1 && key[0] == 'v') {
            has_v = tsr__mpr_uint(r, &v) == 0;
            continue;
        }
        tsr__mpr *slot = NULL;
        uint32_t *len = NULL;
        if (kl == 6 && memcmp(key, "arrays", 6) == 0) slot = &arrays, len = &na, seen |= 1;
        if (kl == 5 && memcmp(key, "tasks", 5) == 0) slot = &tasks, len = &nt, seen |= 2;
        if (kl == 7 && memcmp(key, "outputs", 7) == 0) slot = &outputs, len = &no, seen |= 4;
        if (!slot) {
            tsr__mpr_skip(r);
            continue;
        }
        if (tsr__mpr_array(r, len)) break;
        *slot = *r; /* positioned at the first element */
        slot->p = r->p;
        for (uint32_t e = 0; e < *len && !r->err; e++) tsr__mpr_skip(r);
    }
    if (r->err || r->p != r->end) {
        tsr__fmt(err, errlen, "graph payload is not one well-formed msgpack map");
        return TSR_EPROGRAM;
    }
    if (!has_v || v != 1) {
        tsr__fmt(err, errlen, "graph format version is not 1");
        return TSR_EPROGRAM;
    }
    if (seen != 7) {
        tsr__fmt(err, errlen, "graph needs arrays, tasks and outputs lists");
        return TSR_EPROGRAM;
    }
    if (nt >= UINT32_MAX - 1) {
        tsr__fmt(err, errlen, "too many tasks");
        return TSR_EPROGRAM;
    }
    g->narrays = na;
    g->ops = calloc((size_t)na + 1, sizeof *g->ops);
    if (!g->ops) goto oom;
    int rc = decode_arrays(arrays, g, err, errlen);
    if (rc) return rc;
    uint64_t ndeps, nkd;
    rc = check_tasks(tasks, nt, na, &ndeps, &nkd, err, errlen);
    if (rc) return rc;
    uint32_t n = nt;
    g->ntasks = n;
    g->noutputs = no;
    g->array = malloc(((size_t)n + 1) * sizeof *g->array);
    g->dep_off = malloc(((size_t)n + 1) * sizeof *g->dep_off);
    g->deps = malloc(((size_t)ndeps + 1) * sizeof *g->deps);
    g->nbytes = malloc(((size_t)n + 1) * sizeof *g->nbytes);
    g->flops = malloc(((size_t)n + 1) * sizeof *g->flops);
    g->kd_off = malloc(((size_t)n + 1) * sizeof *g->kd_off);
    g->arena = malloc((size_t)nkd + 1);
    g->outputs = malloc(((size_t)g->noutputs + 1) * sizeof *g->outputs);
    if (!g->array || !g->dep_off || !g->deps || !g->nbytes || !g->flops || !g->kd_off ||
        !g->arena || !g->outputs)
        goto oom;
    if (fill_tasks(tasks, g) != 0) {
        tsr__fmt(err, errlen, "graph tasks changed between passes");
        return TSR_EPROGRAM;
    }
    for (uint32_t o = 0; o < no; o++) {
        if (rd_u32(&outputs, &g->outputs[o]) || g->outputs[o] >= n) {
            tsr__fmt(err, errlen, "output %u is not a task id below %u", o, n);
            return TSR_EPROGRAM;
        }
    }
    return 0;
oom:
    tsr__fmt(err, errlen, "out of memory for a graph of %u tasks", nt);
    return TSR_EPROGRAM;
}

int tsr__proto_submit(const void *payload, size_t len, tsr__jobspec *spec, char *err,
                      size_t errlen) {
    memset(spec, 0, sizeof *spec);
    if (!payload || len == 0) {
        tsr__fmt(err, errlen, "submit without a graph payload");
        return TSR_EPROGRAM;
    }
    tsr__mpr r;
    tsr__mpr_init(&r, payload, len);
    int rc = decode_root(&r, spec, err, errlen);
    if (rc) tsr__jobspec_free(spec);
    return rc;
}

/* ---- encoding ---- */

static void pk_init(msgpack_packer *pk, msgpack_sbuffer *b) {
    msgpack_packer_init(pk, b, msgpack_sbuffer_write);
}

void tsr__proto_welcome(msgpack_sbuffer *b, uint32_t id) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 3, "welcome");
    tsr__mp_pack_str(&pk, "v");
    msgpack_pack_int(&pk, TSR_PROTOCOL_VERSION);
    tsr__mp_pack_str(&pk, "id");
    msgpack_pack_uint32(&pk, id);
}

static void pack_msg(msgpack_sbuffer *b, const char *type, const char *msg) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 2, type);
    tsr__mp_pack_str(&pk, "msg");
    tsr__mp_pack_str(&pk, msg);
}

void tsr__proto_error(msgpack_sbuffer *b, const char *msg) {
    pack_msg(b, "error", msg);
}

void tsr__proto_rejected(msgpack_sbuffer *b, const char *msg) {
    pack_msg(b, "rejected", msg);
}

void tsr__proto_simple(msgpack_sbuffer *b, const char *type) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 1, type);
}

void tsr__proto_accepted(msgpack_sbuffer *b, uint32_t job, uint32_t tasks) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 3, "accepted");
    tsr__mp_pack_str(&pk, "job");
    msgpack_pack_uint32(&pk, job);
    tsr__mp_pack_str(&pk, "tasks");
    msgpack_pack_uint32(&pk, tasks);
}

void tsr__proto_progress(msgpack_sbuffer *b, const tsr__sjob *j) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 5, "progress");
    tsr__mp_pack_str(&pk, "job");
    msgpack_pack_uint32(&pk, j->id);
    tsr__mp_pack_str(&pk, "done");
    msgpack_pack_uint32(&pk, j->ndone);
    tsr__mp_pack_str(&pk, "total");
    msgpack_pack_uint32(&pk, j->g.ntasks);
    tsr__mp_pack_str(&pk, "erred");
    msgpack_pack_uint32(&pk, j->nerred);
}

void tsr__proto_failed(msgpack_sbuffer *b, uint32_t job, uint32_t task, uint32_t array,
                       const char *msg) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 5, "failed");
    tsr__mp_pack_str(&pk, "job");
    msgpack_pack_uint32(&pk, job);
    tsr__mp_pack_str(&pk, "id");
    msgpack_pack_uint32(&pk, task);
    tsr__mp_pack_str(&pk, "array");
    msgpack_pack_uint32(&pk, array);
    tsr__mp_pack_str(&pk, "msg");
    tsr__mp_pack_str(&pk, msg);
}

void tsr__proto_workers(msgpack_sbuffer *b, uint32_t n) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 2, "workers");
    tsr__mp_pack_str(&pk, "count");
    msgpack_pack_uint32(&pk, n);
}

static void pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v) {
    tsr__mp_pack_str(pk, k);
    msgpack_pack_uint64(pk, v);
}

static void pack_kv_f(msgpack_packer *pk, const char *k, double v) {
    tsr__mp_pack_str(pk, k);
    msgpack_pack_double(pk, v);
}

static void pack_trace(msgpack_packer *pk, const tsr__sched *s, const tsr__sjob *j);

void tsr__proto_finished(msgpack_sbuffer *b, const tsr__sched *s, const tsr__sjob *j,
                         uint64_t rss_peak) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, j->trace ? 5 : 4, "finished");
    tsr__mp_pack_str(&pk, "job");
    msgpack_pack_uint32(&pk, j->id);
    tsr__mp_pack_str(&pk, "outputs");
    msgpack_pack_array(&pk, j->g.noutputs);
    for (uint32_t o = 0; o < j->g.noutputs; o++) {
        const tsr__stask *t = &j->t[j->g.outputs[o]];
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint32(&pk, j->g.outputs[o]);
        if (t->state == TSR__TS_MEMORY && t->where != TSR__NONE)
            tsr__mp_pack_str(&pk, s->w[t->where].addr);
        else
            msgpack_pack_nil(&pk);
        msgpack_pack_uint64(&pk, t->nbytes);
    }
    /* Statistics (PROTOCOL.md): the workers that ran something for this job. */
    uint32_t nw = 0;
    for (size_t w = 0; w < j->nwtasks; w++) nw += j->wtasks[w] > 0;
    tsr__mp_pack_str(&pk, "stats");
    msgpack_pack_map(&pk, 7);
    pack_kv_u64(&pk, "tasks", j->g.ntasks);
    pack_kv_u64(&pk, "sources_inline", j->nvirtual);
    pack_kv_u64(&pk, "moved_bytes", j->moved_bytes);
    pack_kv_u64(&pk, "sched_rss_base", j->rss_base);
    pack_kv_u64(&pk, "sched_rss_peak", rss_peak);
    tsr__mp_pack_str(&pk, "ops");
    msgpack_pack_array(&pk, j->nops);
    for (uint32_t o = 0; o < j->nops; o++) {
        msgpack_pack_map(&pk, 6);
        tsr__mp_pack_str(&pk, "op");
        tsr__mp_pack_str(&pk, j->opname[o]);
        pack_kv_u64(&pk, "tasks", j->op_total[o]);
        pack_kv_u64(&pk, "inline", j->op_inline[o]);
        pack_kv_f(&pk, "seconds", j->op_seconds[o]);
        pack_kv_f(&pk, "flops", j->op_flops[o]);
        pack_kv_u64(&pk, "moved_bytes", j->op_moved[o]);
    }
    tsr__mp_pack_str(&pk, "workers");
    msgpack_pack_array(&pk, nw);
    for (size_t w = 0; w < j->nwtasks; w++) {
        if (!j->wtasks[w]) continue;
        const tsr__sworker *wk = &s->w[w];
        msgpack_pack_map(&pk, 10);
        tsr__mp_pack_str(&pk, "name");
        tsr__mp_pack_str(&pk, wk->name);
        tsr__mp_pack_str(&pk, "addr");
        tsr__mp_pack_str(&pk, wk->addr);
        pack_kv_u64(&pk, "tasks", j->wtasks[w]);
        pack_kv_u64(&pk, "rss_peak", wk->st.rss_peak);
        pack_kv_u64(&pk, "rss", wk->st.rss);
        pack_kv_u64(&pk, "chunk_peak", wk->st.chunk_peak);
        pack_kv_f(&pk, "busy_s", wk->st.busy_s);
        pack_kv_u64(&pk, "in_bytes", wk->st.in_bytes);
        pack_kv_f(&pk, "in_s", wk->st.in_s);
        pack_kv_u64(&pk, "out_bytes", wk->st.out_bytes);
    }
    if (j->trace) pack_trace(&pk, s, j);
}

/* trace: {workers:[name...], ops:[name...], tasks:[[worker, id, op, start, seconds, thread]...],
 * transfers:[[worker, id, nbytes, start, end, from]...], dropped}. */
static void pack_trace(msgpack_packer *pk, const tsr__sched *s, const tsr__sjob *j) {
    tsr__mp_pack_str(pk, "trace");
    msgpack_pack_map(pk, 5);
    tsr__mp_pack_str(pk, "workers");
    msgpack_pack_array(pk, s->nw);
    for (size_t w = 0; w < s->nw; w++) tsr__mp_pack_str(pk, s->w[w].name);
    tsr__mp_pack_str(pk, "ops");
    msgpack_pack_array(pk, j->nops);
    for (uint32_t o = 0; o < j->nops; o++) tsr__mp_pack_str(pk, j->opname[o]);
    tsr__mp_pack_str(pk, "tasks");
    msgpack_pack_array(pk, j->nspans);
    for (size_t i = 0; i < j->nspans; i++) {
        const tsr__tspan *t = &j->spans[i];
        msgpack_pack_array(pk, 6);
        msgpack_pack_uint32(pk, t->worker);
        msgpack_pack_uint32(pk, t->task);
        msgpack_pack_uint32(pk, j->aop[j->g.array[t->task]]);
        msgpack_pack_double(pk, t->start);
        msgpack_pack_double(pk, t->seconds);
        msgpack_pack_uint32(pk, t->thread);
    }
    tsr__mp_pack_str(pk, "transfers");
    msgpack_pack_array(pk, j->nxfers);
    for (size_t i = 0; i < j->nxfers; i++) {
        const tsr__txfer *x = &j->xfers[i];
        msgpack_pack_array(pk, 6);
        msgpack_pack_uint32(pk, x->worker);
        msgpack_pack_uint32(pk, x->task);
        msgpack_pack_uint64(pk, x->nbytes);
        msgpack_pack_double(pk, x->start);
        msgpack_pack_double(pk, x->end);
        tsr__mp_pack_str(pk, x->from);
    }
    tsr__mp_pack_str(pk, "dropped");
    msgpack_pack_uint64(pk, j->trace_dropped);
}

void tsr__proto_compute(msgpack_sbuffer *b, tsr__sched *s, uint32_t wid, uint32_t job,
                        const uint32_t *tasks, size_t n) {
    tsr__sjob *j = s->jobs[job];
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, j->trace ? 4 : 3, "compute");
    tsr__mp_pack_str(&pk, "job");
    msgpack_pack_uint32(&pk, job);
    if (j->trace) {
        tsr__mp_pack_str(&pk, "trace");
        msgpack_pack_true(&pk);
    }
    tsr__mp_pack_str(&pk, "tasks");
    msgpack_pack_array(&pk, n);
    uint8_t flags[64], *fl = flags;
    size_t flcap = sizeof flags;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = tasks[i];
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint32(&pk, id);
        size_t kl = (size_t)(j->g.kd_off[id + 1] - j->g.kd_off[id]);
        msgpack_pack_bin(&pk, kl);
        msgpack_pack_bin_body(&pk, j->g.arena + j->g.kd_off[id], kl);
        uint32_t lo = j->g.dep_off[id], hi = j->g.dep_off[id + 1];
        if (hi - lo > flcap) {
            uint8_t *nf = malloc(hi - lo);
            if (!nf) abort();
            if (fl != flags) free(fl);
            fl = nf;
            flcap = hi - lo;
        }
        tsr__sched_plan_inputs(s, wid, j, id, fl);
        msgpack_pack_array(&pk, hi - lo);
        for (uint32_t k = lo; k < hi; k++) {
            uint32_t in = j->g.deps[k];
            const tsr__stask *ti = &j->t[in];
            uint8_t f = fl[k - lo];
            msgpack_pack_array(&pk, f & TSR__IN_RECOMPUTE ? 4 : f ? 3 : 2);
            msgpack_pack_uint32(&pk, in);
            /* nil when this worker holds it (or makes it). An input that is not in memory
             * cannot happen for a task that is sent; nil then makes the worker report it
             * missing (erred). */
            if (!(f & TSR__IN_RECOMPUTE) && ti->state == TSR__TS_MEMORY && ti->where != wid &&
                ti->where != TSR__NONE)
                tsr__mp_pack_str(&pk, s->w[ti->where].addr);
            else
                msgpack_pack_nil(&pk);
            if (f) msgpack_pack_uint8(&pk, f);
            if (f & TSR__IN_RECOMPUTE) {
                size_t il = (size_t)(j->g.kd_off[in + 1] - j->g.kd_off[in]);
                msgpack_pack_bin(&pk, il);
                msgpack_pack_bin_body(&pk, j->g.arena + j->g.kd_off[in], il);
            }
        }
    }
    if (fl != flags) free(fl);
}

void tsr__proto_free(msgpack_sbuffer *b, const tsr__key *keys, size_t n) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 2, "free");
    tsr__mp_pack_str(&pk, "keys");
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint32(&pk, keys[i].job);
        msgpack_pack_uint32(&pk, keys[i].task);
    }
}

void tsr__events_add(tsr__events *ev, double t, const char *fmt, ...) {
    uint32_t i = ev->n++ % TSR__NEVENTS;
    ev->t[i] = t;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->msg[i], sizeof ev->msg[i], fmt, ap);
    va_end(ap);
}

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v) {
    tsr__mp_pack_str(pk, k);
    tsr__mp_pack_str(pk, v);
}

/* Tasks of (job, op) in some worker's in-flight window: walks the windows, which are short by
 * construction, never the tasks. */
static uint32_t running_of(const tsr__sched *s, uint32_t job, uint32_t op) {
    uint32_t n = 0;
    const tsr__sjob *j = s->jobs[job];
    for (size_t w = 0; w < s->nw; w++) {
        const tsr__keyvec *f = &s->w[w].inflight;
        for (size_t i = 0; i < f->n; i++)
            n += f->v[i].job == job && j->aop[j->g.array[f->v[i].task]] == op;
    }
    return n;
}

void tsr__proto_info(msgpack_sbuffer *b, const tsr__sched *s, const tsr__events *ev, double uptime,
                     const char *addr) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 10, "info");
    pack_kv_str(&pk, "addr", addr);
    pack_kv_f(&pk, "uptime", uptime);
    pack_kv_u64(&pk, "workers", s->nalive);
    pack_kv_u64(&pk, "jobs", s->nlive);
    pack_kv_u64(&pk, "done_total", s->done_total);
    tsr__mp_pack_str(&pk, "tasks");
    msgpack_pack_map(&pk, TSR__TS_COUNT);
    for (int st = 0; st < TSR__TS_COUNT; st++) {
        tsr__mp_pack_str(&pk, tsr__task_state_name(st));
        msgpack_pack_uint64(&pk, s->count[st]);
    }
    tsr__mp_pack_str(&pk, "wlist");
    msgpack_pack_array(&pk, s->nalive);
    for (size_t w = 0; w < s->nw; w++) {
        const tsr__sworker *wk = &s->w[w];
        if (!wk->alive) continue;
        msgpack_pack_map(&pk, 15);
        pack_kv_str(&pk, "name", wk->name);
        pack_kv_str(&pk, "addr", wk->addr);
        pack_kv_str(&pk, "kind", wk->kind == TSR__KIND_GPU ? "gpu" : "cpu");
        pack_kv_str(&pk, "cpus", wk->cpus);
        pack_kv_u64(&pk, "threads", wk->threads);
        pack_kv_u64(&pk, "running", wk->inflight.n);
        pack_kv_u64(&pk, "queued", wk->backlog.n);
        pack_kv_u64(&pk, "tasks", wk->st.tasks);
        pack_kv_u64(&pk, "rss", wk->st.rss);
        pack_kv_u64(&pk, "mem_limit", wk->mem_limit);
        pack_kv_u64(&pk, "chunk_bytes", wk->st.chunk_bytes);
        pack_kv_u64(&pk, "in_bytes", wk->st.in_bytes);
        pack_kv_u64(&pk, "out_bytes", wk->st.out_bytes);
        pack_kv_f(&pk, "busy_s", wk->st.busy_s);
        pack_kv_f(&pk, "speed", wk->speed);
    }
    tsr__mp_pack_str(&pk, "jlist");
    msgpack_pack_array(&pk, s->nlive);
    for (size_t i = 0; i < s->nlive; i++) {
        const tsr__sjob *j = s->jobs[s->live[i]];
        msgpack_pack_map(&pk, 6);
        pack_kv_u64(&pk, "job", j->id);
        pack_kv_u64(&pk, "total", j->g.ntasks);
        pack_kv_u64(&pk, "done", j->ndone);
        pack_kv_u64(&pk, "erred", j->nerred);
        pack_kv_u64(&pk, "moved_bytes", j->moved_bytes);
        tsr__mp_pack_str(&pk, "ops");
        msgpack_pack_array(&pk, j->nops);
        for (uint32_t o = 0; o < j->nops; o++) {
            msgpack_pack_map(&pk, 7);
            pack_kv_str(&pk, "op", j->opname[o]);
            pack_kv_u64(&pk, "total", j->op_total[o]);
            pack_kv_u64(&pk, "ready", j->op_ready[o]);
            pack_kv_u64(&pk, "done", j->op_done[o]);
            pack_kv_u64(&pk, "running", running_of(s, j->id, o));
            pack_kv_u64(&pk, "erred", j->op_err[o]);
            pack_kv_f(&pk, "flops_done", j->op_flops[o]);
        }
    }
    tsr__mp_pack_str(&pk, "events");
    uint32_t ne = ev->n < TSR__NEVENTS ? ev->n : TSR__NEVENTS;
    msgpack_pack_array(&pk, ne);
    for (uint32_t k = ev->n - ne; k < ev->n; k++) {
        msgpack_pack_array(&pk, 2);
        msgpack_pack_double(&pk, ev->t[k % TSR__NEVENTS]);
        tsr__mp_pack_str(&pk, ev->msg[k % TSR__NEVENTS]);
    }
}
