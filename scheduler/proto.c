/* The scheduler's side of docs/PROTOCOL.md: msgpack headers and payloads to structs and back.
 * Pure functions on buffers (unit-testable); every read of peer input is checked, never
 * asserted. Framing lives in wire/, meanings in state.c. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"
#include "wire/msg.h"
#include "wire/wire.h"

/* ---- decoding ---- */

int tsr__proto_hello(const msgpack_object *hdr, tsr__hello *h, char *err, size_t errlen) {
    memset(h, 0, sizeof *h);
    /* The version first: a peer of another version gets a refusal that says so, whatever the
     * rest of its hello looks like. */
    if (tsr__msg_hello_version(hdr, &h->v) == 0 && h->v != TSR_PROTOCOL_VERSION &&
        tsr__msg_peek_type(hdr) == TSR__MSG_hello)
        return TSR_EVERSION;
    tsr__msg m;
    char why[160];
    if (tsr__msg_decode(hdr, &m, why, sizeof why) != 0) {
        tsr__fmt(err, errlen, "bad hello: %s", why);
        return TSR_EPROTOCOL;
    }
    if (m.type != TSR__MSG_hello) {
        tsr__fmt(err, errlen, "first frame is not a hello");
        return TSR_EPROTOCOL;
    }
    const tsr__msg_hello *x = &m.u.hello;
    if (tsr__str_eq(x->role, "client"))
        h->role = TSR__ROLE_CLIENT;
    else if (tsr__str_eq(x->role, "worker"))
        h->role = TSR__ROLE_WORKER;
    else if (tsr__str_eq(x->role, "monitor"))
        h->role = TSR__ROLE_MONITOR;
    else {
        tsr__fmt(err, errlen, "unknown role");
        return TSR_EPROTOCOL;
    }
    if (tsr__str_copy(h->name, sizeof h->name, x->name) != 0) {
        tsr__fmt(err, errlen, "bad name");
        return TSR_EPROTOCOL;
    }
    if (TSR__MSG_HAS(hello, x, cnonce) && TSR__MSG_HAS(hello, x, mac) && x->cnonce.n == 32 &&
        x->mac.n == 32) {
        memcpy(h->cnonce, x->cnonce.p, 32);
        memcpy(h->mac, x->mac.p, 32);
        h->has_proof = 1;
    }
    if (h->role == TSR__ROLE_WORKER) {
        h->threads = x->threads;
        if (!TSR__MSG_HAS(hello, x, threads) || h->threads < 1 || h->threads > 4096) {
            tsr__fmt(err, errlen, "worker hello: threads missing or out of range");
            return TSR_EPROTOCOL;
        }
        if (!TSR__MSG_HAS(hello, x, addr) || tsr__str_copy(h->addr, sizeof h->addr, x->addr) ||
            !h->addr[0]) {
            tsr__fmt(err, errlen, "worker hello: addr missing or too long");
            return TSR_EPROTOCOL;
        }
        char host[64];
        int port;
        if (tsr__parse_address(h->addr, host, sizeof host, &port) != 0) {
            tsr__fmt(err, errlen, "worker hello: bad addr");
            return TSR_EPROTOCOL;
        }
        if (tsr__str_copy(h->kind, sizeof h->kind, x->kind) != 0) {
            tsr__fmt(err, errlen, "worker hello: bad kind");
            return TSR_EPROTOCOL;
        }
        /* Optional, for monitors: a list too long is cut, and so is a device name. */
        tsr__str_copy(h->cpus, sizeof h->cpus, x->cpus);
        h->mem = x->mem > 0 ? x->mem : 0;
        if (TSR__MSG_HAS(hello, x, dev_name))
            tsr__str_copy(h->dev_name, sizeof h->dev_name, x->dev_name);
        if (TSR__MSG_HAS(hello, x, dev_limit)) h->dev_limit = x->dev_limit;
        h->has_dev = TSR__MSG_HAS(hello, x, dev_name) || TSR__MSG_HAS(hello, x, dev_limit);
        /* Optional: the plugin libraries it can load. Names too long for the table are left
         * out (no task can name them: the client refuses them too). */
        for (uint32_t k = 0; TSR__MSG_HAS(hello, x, plugins) && k < x->plugins.n; k++) {
            tsr__m_str_item e;
            if (TSR__LIST_GET(&x->plugins, str_item, k, &e) != 0) {
                tsr__fmt(err, errlen, "worker hello: bad plugins list");
                return TSR_EPROTOCOL;
            }
            if (h->nplugins < TSR__WORKER_PLUGINS && e.s.n > 0 && e.s.n < TSR__PLUGIN_NAME)
                tsr__str_copy(h->plugins[h->nplugins++], TSR__PLUGIN_NAME, e.s);
        }
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
        uint32_t n, ln, lo, lp;
        const char *name, *op, *plugin;
        if (tsr__mpr_array(&r, &n) || (n != 2 && n != 3) || tsr__mpr_str(&r, &name, &ln) ||
            tsr__mpr_str(&r, &op, &lo)) {
            tsr__fmt(err, errlen, "array %u: not [name, op] or [name, op, plugin]", a);
            return TSR_EPROGRAM;
        }
        size_t k = lo < sizeof g->ops[a] - 1 ? lo : sizeof g->ops[a] - 1;
        memcpy(g->ops[a], op, k);
        g->ops[a][k] = 0;
        if (n == 2) continue;
        /* The plugin library its tasks need: placement sends them only where it is. */
        if (tsr__mpr_str(&r, &plugin, &lp) || lp == 0 || lp >= TSR__PLUGIN_NAME ||
            memchr(plugin, 0, lp)) {
            tsr__fmt(err, errlen, "array %u: bad plugin library name", a);
            return TSR_EPROGRAM;
        }
        if (!g->plugins && !(g->plugins = calloc((size_t)g->narrays + 1, sizeof *g->plugins))) {
            tsr__fmt(err, errlen, "out of memory");
            return -ENOMEM;
        }
        memcpy(g->plugins[a], plugin, lp);
        g->plugins[a][lp] = 0;
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

/* ---- encoding: every header through wire/msg.h; lists come from generators over the
 * scheduler's own arrays, so nothing is copied into intermediate structs. Generators are called
 * for i = 0, 1, ... in order (msg.c), which the cursors below rely on. ---- */

void tsr__proto_error(msgpack_sbuffer *b, const char *msg) {
    tsr__msg_pack_error(b, &(tsr__msg_error){.msg = tsr__str_of(msg)});
}

void tsr__proto_rejected(msgpack_sbuffer *b, const char *msg) {
    tsr__msg_pack_rejected(b, &(tsr__msg_rejected){.msg = tsr__str_of(msg)});
}

void tsr__proto_simple(msgpack_sbuffer *b, const char *type) {
    tsr__msg m;
    memset(&m, 0, sizeof m);
    tsr__msg_pack(b, tsr__msg_type_of(type, strlen(type)), &m.u);
}

void tsr__proto_accepted(msgpack_sbuffer *b, uint32_t job, uint32_t tasks, int stream,
                         const uint8_t *cap) {
    tsr__msg_accepted m = {.job = job, .tasks = tasks, .stream = 1};
    if (stream) TSR__MSG_SET(accepted, &m, stream);
    if (cap) {
        m.cap = (tsr__str){(const char *)cap, 32};
        TSR__MSG_SET(accepted, &m, cap);
    }
    tsr__msg_pack_accepted(b, &m);
}

typedef struct sctx {
    const tsr__sched *s;
    const tsr__sjob *j;
    const uint32_t *tasks;
} sctx;

static void gen_stored(void *ctx, uint32_t i, void *elem) {
    const sctx *c = ctx;
    const tsr__stask *t = &c->j->t[c->tasks[i]];
    tsr__m_output *e = elem;
    e->id = c->tasks[i];
    e->addr = tsr__str_of(c->s->w[t->where].addr);
    TSR__M_SET(output, e, addr);
    e->nbytes = t->nbytes;
}

void tsr__proto_computed(msgpack_sbuffer *b, const tsr__sched *s, const tsr__sjob *j,
                         const uint32_t *tasks, size_t n) {
    sctx c = {s, j, tasks};
    tsr__msg_pack_computed(
        b, &(tsr__msg_computed){.job = j->id,
                                .outputs = {.n = (uint32_t)n, .gen = gen_stored, .ctx = &c}});
}

void tsr__proto_progress(msgpack_sbuffer *b, const tsr__sjob *j) {
    tsr__msg_pack_progress(
        b, &(tsr__msg_progress){
               .job = j->id, .done = j->ndone, .total = j->g.ntasks, .erred = j->nerred});
}

void tsr__proto_failed(msgpack_sbuffer *b, uint32_t job, uint32_t task, uint32_t array,
                       const char *msg) {
    tsr__msg_pack_failed(
        b, &(tsr__msg_failed){.job = job, .id = task, .array = array, .msg = tsr__str_of(msg)});
}

void tsr__proto_workers(msgpack_sbuffer *b, uint32_t n) {
    tsr__msg_pack_workers(b, &(tsr__msg_workers){.count = n});
}

typedef struct fctx {
    const tsr__sched *s;
    const tsr__sjob *j;
    size_t wcur; /* the next worker to consider (workers lists skip some) */
} fctx;

static void gen_output(void *ctx, uint32_t o, void *elem) {
    const fctx *c = ctx;
    tsr__m_output *e = elem;
    const tsr__stask *t = &c->j->t[c->j->g.outputs[o]];
    e->id = c->j->g.outputs[o];
    if (t->state == TSR__TS_MEMORY && t->where != TSR__NONE) {
        e->addr = tsr__str_of(c->s->w[t->where].addr);
        TSR__M_SET(output, e, addr);
    }
    e->nbytes = t->nbytes;
}

static void gen_op_stat(void *ctx, uint32_t o, void *elem) {
    const tsr__sjob *j = ((const fctx *)ctx)->j;
    *(tsr__m_op_stat *)elem = (tsr__m_op_stat){.op = tsr__str_of(j->opname[o]),
                                               .tasks = j->op_total[o],
                                               .inline_ = j->op_inline[o],
                                               .seconds = j->op_seconds[o],
                                               .flops = j->op_flops[o],
                                               .moved_bytes = j->op_moved[o]};
}

/* The workers that ran something for this job, in worker order. */
static void gen_worker_stat(void *ctx, uint32_t i, void *elem) {
    fctx *c = ctx;
    (void)i;
    while (!c->j->wtasks[c->wcur]) c->wcur++;
    size_t w = c->wcur++;
    const tsr__sworker *wk = &c->s->w[w];
    *(tsr__m_worker_stat *)elem = (tsr__m_worker_stat){.name = tsr__str_of(wk->name),
                                                       .addr = tsr__str_of(wk->addr),
                                                       .threads = wk->threads,
                                                       .tasks = c->j->wtasks[w],
                                                       .rss_peak = wk->st.rss_peak,
                                                       .rss = wk->st.rss,
                                                       .chunk_peak = wk->st.chunk_peak,
                                                       .busy_s = wk->st.busy_s,
                                                       .in_bytes = wk->st.in_bytes,
                                                       .in_s = wk->st.in_s,
                                                       .out_bytes = wk->st.out_bytes};
    ((tsr__m_worker_stat *)elem)->has |= TSR__M_BIT(worker_stat, threads);
    if (wk->dev) {
        tsr__m_worker_stat *e = elem;
        e->h2d_bytes = wk->st.h2d_bytes;
        e->d2h_bytes = wk->st.d2h_bytes;
        e->dev_evicted = wk->st.dev_evicted;
        e->has |= TSR__M_BIT(worker_stat, h2d_bytes) | TSR__M_BIT(worker_stat, d2h_bytes) |
                  TSR__M_BIT(worker_stat, dev_evicted);
    }
    if (wk->spill) { /* its disk tier: only from workers that report one */
        tsr__m_worker_stat *e = elem;
        e->spilled_bytes = wk->st.spilled_bytes;
        e->unspilled_bytes = wk->st.unspilled_bytes;
        e->disk_bytes = wk->st.disk_bytes;
        e->paused = wk->st.paused;
        e->spill_s = wk->st.spill_s;
        e->unspill_s = wk->st.unspill_s;
        e->has |= TSR__M_BIT(worker_stat, spilled_bytes) |
                  TSR__M_BIT(worker_stat, unspilled_bytes) | TSR__M_BIT(worker_stat, disk_bytes) |
                  TSR__M_BIT(worker_stat, paused) | TSR__M_BIT(worker_stat, spill_s) |
                  TSR__M_BIT(worker_stat, unspill_s);
    }
}

static void gen_worker_name(void *ctx, uint32_t w, void *elem) {
    ((tsr__m_str_item *)elem)->s = tsr__str_of(((const fctx *)ctx)->s->w[w].name);
}

static void gen_op_name(void *ctx, uint32_t o, void *elem) {
    ((tsr__m_str_item *)elem)->s = tsr__str_of(((const fctx *)ctx)->j->opname[o]);
}

static void gen_span(void *ctx, uint32_t i, void *elem) {
    const tsr__sjob *j = ((const fctx *)ctx)->j;
    const tsr__tspan *t = &j->spans[i];
    *(tsr__m_trace_task *)elem = (tsr__m_trace_task){.worker = t->worker,
                                                     .id = t->task,
                                                     .op = j->aop[j->g.array[t->task]],
                                                     .start = t->start,
                                                     .seconds = t->seconds,
                                                     .thread = t->thread};
}

/* finished's transfers: [worker, id, nbytes, start, end, from] (the tuple's first is a worker). */
static void gen_xfer(void *ctx, uint32_t i, void *elem) {
    const tsr__txfer *x = &((const fctx *)ctx)->j->xfers[i];
    *(tsr__m_transfer *)elem = (tsr__m_transfer){.job = x->worker,
                                                 .id = x->task,
                                                 .nbytes = x->nbytes,
                                                 .start = x->start,
                                                 .end = x->end,
                                                 .from = tsr__str_of(x->from)};
}

void tsr__proto_finished(msgpack_sbuffer *b, const tsr__sched *s, const tsr__sjob *j,
                         uint64_t rss_peak) {
    fctx c = {s, j, 0};
    uint32_t nw = 0;
    for (size_t w = 0; w < j->nwtasks; w++) nw += j->wtasks[w] > 0;
    tsr__msg_finished m = {
        .job = j->id,
        .outputs = {.n = j->g.noutputs, .gen = gen_output, .ctx = &c},
        .stats = {.tasks = j->g.ntasks,
                  .sources_inline = j->nvirtual,
                  .moved_bytes = j->moved_bytes,
                  .sched_rss_base = j->rss_base,
                  .sched_rss_peak = rss_peak,
                  .ops = {.n = j->nops, .gen = gen_op_stat, .ctx = &c},
                  .workers = {.n = nw, .gen = gen_worker_stat, .ctx = &c}},
    };
    TSR__MSG_SET(finished, &m, stats);
    if (j->retire_moved) {
        m.stats.retire_moved = j->retire_moved;
        TSR__M_SET(job_stats, &m.stats, retire_moved);
    }
    if (j->trace) {
        /* At most 1,000,000 events are kept so the header stays under its limit. */
        m.trace =
            (tsr__m_job_trace){.workers = {.n = (uint32_t)s->nw, .gen = gen_worker_name, .ctx = &c},
                               .ops = {.n = j->nops, .gen = gen_op_name, .ctx = &c},
                               .tasks = {.n = (uint32_t)j->nspans, .gen = gen_span, .ctx = &c},
                               .transfers = {.n = (uint32_t)j->nxfers, .gen = gen_xfer, .ctx = &c},
                               .dropped = j->trace_dropped};
        TSR__MSG_SET(finished, &m, trace);
    }
    tsr__msg_pack_finished(b, &m);
}

typedef struct cctx {
    tsr__sched *s;
    uint32_t wid;
    const tsr__sjob *j;
    const uint32_t *tasks;
    uint32_t cur; /* the task whose inputs are being packed */
    uint8_t *fl;  /* its input flags (tsr__sched_plan_inputs) */
    size_t flcap;
    uint8_t flags[64];
} cctx;

static void gen_input(void *ctx, uint32_t k, void *elem) {
    const cctx *c = ctx;
    const tsr__sjob *j = c->j;
    tsr__m_input *e = elem;
    uint32_t in = j->g.deps[j->g.dep_off[c->cur] + k];
    const tsr__stask *ti = &j->t[in];
    uint8_t f = c->fl[k];
    e->id = in;
    /* nil when this worker holds it (or makes it). An input that is not in memory cannot
     * happen for a task that is sent; nil then makes the worker report it missing (erred). */
    if (!(f & TSR__IN_RECOMPUTE) && ti->state == TSR__TS_MEMORY && ti->where != c->wid &&
        ti->where != TSR__NONE) {
        e->addr = tsr__str_of(c->s->w[ti->where].addr);
        TSR__M_SET(input, e, addr);
    }
    if (f) {
        e->flags = f;
        TSR__M_SET(input, e, flags);
    }
    if (f & TSR__IN_RECOMPUTE) {
        e->kdesc = (tsr__str){(const char *)j->g.arena + j->g.kd_off[in],
                              (uint32_t)(j->g.kd_off[in + 1] - j->g.kd_off[in])};
        TSR__M_SET(input, e, kdesc);
        /* How many tasks still need it, this one included: the worker keeps a replica only
         * where enough uses remain to pay for holding it (worker/task.c, "Replicas"). */
        e->uses = ti->refs;
        TSR__M_SET(input, e, uses);
    }
}

static void gen_task(void *ctx, uint32_t i, void *elem) {
    cctx *c = ctx;
    const tsr__sjob *j = c->j;
    tsr__m_task *e = elem;
    uint32_t id = c->tasks[i];
    uint32_t lo = j->g.dep_off[id], hi = j->g.dep_off[id + 1];
    if (hi - lo > c->flcap) {
        uint8_t *nf = malloc(hi - lo);
        if (!nf) abort();
        if (c->fl != c->flags) free(c->fl);
        c->fl = nf;
        c->flcap = hi - lo;
    }
    tsr__sched_plan_inputs(c->s, c->wid, (tsr__sjob *)j, id, c->fl);
    c->cur = id;
    e->id = id;
    e->kdesc = (tsr__str){(const char *)j->g.arena + j->g.kd_off[id],
                          (uint32_t)(j->g.kd_off[id + 1] - j->g.kd_off[id])};
    e->inputs = (tsr__list){.n = hi - lo, .gen = gen_input, .ctx = c};
}

void tsr__proto_compute(msgpack_sbuffer *b, tsr__sched *s, uint32_t wid, uint32_t job,
                        const uint32_t *tasks, size_t n) {
    cctx c = {.s = s, .wid = wid, .j = s->jobs[job], .tasks = tasks};
    c.fl = c.flags;
    c.flcap = sizeof c.flags;
    tsr__msg_compute m = {
        .job = job, .trace = c.j->trace, .tasks = {.n = (uint32_t)n, .gen = gen_task, .ctx = &c}};
    if (c.j->trace) TSR__MSG_SET(compute, &m, trace);
    tsr__msg_pack_compute(b, &m);
    if (c.fl != c.flags) free(c.fl);
}

static void gen_key(void *ctx, uint32_t i, void *elem) {
    const tsr__key *k = &((const tsr__key *)ctx)[i];
    *(tsr__m_key *)elem = (tsr__m_key){.job = k->job, .id = k->task};
}

void tsr__proto_free(msgpack_sbuffer *b, const tsr__key *keys, size_t n) {
    tsr__msg_pack_free(
        b, &(tsr__msg_free){.keys = {.n = (uint32_t)n, .gen = gen_key, .ctx = (void *)keys}});
}

void tsr__events_add(tsr__events *ev, double t, const char *fmt, ...) {
    uint32_t i = ev->n++ % TSR__NEVENTS;
    ev->t[i] = t;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->msg[i], sizeof ev->msg[i], fmt, ap);
    va_end(ap);
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

typedef struct ictx {
    const tsr__sched *s;
    const tsr__events *ev;
    size_t wcur;        /* next worker to consider (only the alive ones are listed) */
    const tsr__sjob *j; /* the job whose ops are being packed */
} ictx;

static void gen_state(void *ctx, uint32_t st, void *elem) {
    *(tsr__m_kv *)elem = (tsr__m_kv){.k = tsr__str_of(tsr__task_state_name((int)st)),
                                     .v = ((const ictx *)ctx)->s->count[st]};
}

static void gen_winfo(void *ctx, uint32_t i, void *elem) {
    ictx *c = ctx;
    (void)i;
    while (!c->s->w[c->wcur].alive) c->wcur++;
    const tsr__sworker *wk = &c->s->w[c->wcur++];
    *(tsr__m_winfo *)elem = (tsr__m_winfo){
        .name = tsr__str_of(wk->name),
        .addr = tsr__str_of(wk->addr),
        .kind = tsr__str_of(wk->kind == TSR__KIND_GPU ? "gpu" : "cpu"),
        .cpus = tsr__str_of(wk->cpus),
        .threads = wk->threads,
        .running = wk->inflight.n,
        .queued = wk->backlog.n,
        .tasks = wk->st.tasks,
        .rss = wk->st.rss,
        .mem_limit = wk->mem_limit,
        .chunk_bytes = wk->st.chunk_bytes,
        .in_bytes = wk->st.in_bytes,
        .out_bytes = wk->st.out_bytes,
        .busy_s = wk->st.busy_s,
        .speed = wk->speed,
    };
    if (wk->dev) { /* a GPU worker's device: only from workers that have one */
        tsr__m_winfo *e = elem;
        e->dev_name = tsr__str_of(wk->dev_name);
        e->dev_used = wk->st.dev_used;
        e->dev_limit = wk->st.dev_limit;
        e->h2d_bytes = wk->st.h2d_bytes;
        e->d2h_bytes = wk->st.d2h_bytes;
        e->dev_evicted = wk->st.dev_evicted;
        e->has |= TSR__M_BIT(winfo, dev_name) | TSR__M_BIT(winfo, dev_used) |
                  TSR__M_BIT(winfo, dev_limit) | TSR__M_BIT(winfo, h2d_bytes) |
                  TSR__M_BIT(winfo, d2h_bytes) | TSR__M_BIT(winfo, dev_evicted);
    }
    if (wk->spill) { /* its disk tier: only from workers that report one */
        tsr__m_winfo *e = elem;
        e->spilled_bytes = wk->st.spilled_bytes;
        e->unspilled_bytes = wk->st.unspilled_bytes;
        e->disk_bytes = wk->st.disk_bytes;
        e->paused = wk->st.paused;
        e->has |= TSR__M_BIT(winfo, spilled_bytes) | TSR__M_BIT(winfo, unspilled_bytes) |
                  TSR__M_BIT(winfo, disk_bytes) | TSR__M_BIT(winfo, paused);
    }
}

static void gen_op_info(void *ctx, uint32_t o, void *elem) {
    const ictx *c = ctx;
    const tsr__sjob *j = c->j;
    *(tsr__m_op_info *)elem = (tsr__m_op_info){.op = tsr__str_of(j->opname[o]),
                                               .total = j->op_total[o],
                                               .ready = j->op_ready[o],
                                               .done = j->op_done[o],
                                               .running = running_of(c->s, j->id, o),
                                               .erred = j->op_err[o],
                                               .flops_done = j->op_flops[o]};
}

static void gen_jinfo(void *ctx, uint32_t i, void *elem) {
    ictx *c = ctx;
    const tsr__sjob *j = c->s->jobs[c->s->live[i]];
    c->j = j; /* its ops are packed before the next job is asked for */
    *(tsr__m_jinfo *)elem = (tsr__m_jinfo){.job = j->id,
                                           .total = j->g.ntasks,
                                           .done = j->ndone,
                                           .erred = j->nerred,
                                           .moved_bytes = j->moved_bytes,
                                           .ops = {.n = j->nops, .gen = gen_op_info, .ctx = c}};
}

static void gen_event(void *ctx, uint32_t i, void *elem) {
    const tsr__events *ev = ((const ictx *)ctx)->ev;
    uint32_t ne = ev->n < TSR__NEVENTS ? ev->n : TSR__NEVENTS;
    uint32_t k = (ev->n - ne + i) % TSR__NEVENTS;
    *(tsr__m_event *)elem = (tsr__m_event){.t = ev->t[k], .msg = tsr__str_of(ev->msg[k])};
}

void tsr__proto_info(msgpack_sbuffer *b, const tsr__sched *s, const tsr__events *ev, double uptime,
                     const char *addr) {
    ictx c = {s, ev, 0, NULL};
    tsr__msg_info m = {
        .addr = tsr__str_of(addr),
        .uptime = uptime,
        .workers = s->nalive,
        .jobs = s->nlive,
        .done_total = s->done_total,
        .tasks = {.n = TSR__TS_COUNT, .gen = gen_state, .ctx = &c},
        .wlist = {.n = (uint32_t)s->nalive, .gen = gen_winfo, .ctx = &c},
        .jlist = {.n = (uint32_t)s->nlive, .gen = gen_jinfo, .ctx = &c},
        .events = {.n = ev->n < TSR__NEVENTS ? ev->n : TSR__NEVENTS, .gen = gen_event, .ctx = &c},
    };
    m.has = ~(uint64_t)0; /* the reply carries every field */
    tsr__msg_pack_info(b, &m);
}
