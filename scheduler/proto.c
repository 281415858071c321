/* The scheduler's side of docs/PROTOCOL.md: msgpack headers and payloads to structs and back.
 * Pure functions on buffers (unit-testable); every read of peer input is checked, never
 * asserted. Framing lives in wire/, meanings in state.c. */
#include <math.h>
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
    }
    return 0;
}

static int as_u32(const msgpack_object *o, uint32_t *out) {
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 >= UINT32_MAX) return -1;
    *out = (uint32_t)o->via.u64;
    return 0;
}

static int is_str(const msgpack_object *o) {
    return o->type == MSGPACK_OBJECT_STR;
}

/* Validates the tasks array and sizes the job (pass 1 of 2). */
static int check_tasks(const msgpack_object *tasks, uint32_t narrays, uint64_t *ndeps,
                       uint64_t *nkd, char *err, size_t errlen) {
    *ndeps = *nkd = 0;
    for (uint32_t t = 0; t < tasks->via.array.size; t++) {
        const msgpack_object *e = &tasks->via.array.ptr[t];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 5) {
            tsr__fmt(err, errlen, "task %u: not [array, deps, nbytes, flops, kdesc]", t);
            return TSR_EPROGRAM;
        }
        const msgpack_object *f = e->via.array.ptr;
        uint32_t a;
        if (as_u32(&f[0], &a) != 0 || a >= narrays) {
            tsr__fmt(err, errlen, "task %u: array index out of range (%u arrays)", t, narrays);
            return TSR_EPROGRAM;
        }
        if (f[1].type != MSGPACK_OBJECT_ARRAY) {
            tsr__fmt(err, errlen, "task %u: deps is not an array", t);
            return TSR_EPROGRAM;
        }
        for (uint32_t k = 0; k < f[1].via.array.size; k++) {
            uint32_t d;
            if (as_u32(&f[1].via.array.ptr[k], &d) != 0 || d >= t) {
                tsr__fmt(err, errlen, "task %u: input %u is not an earlier task id", t, k);
                return TSR_EPROGRAM;
            }
        }
        *ndeps += f[1].via.array.size;
        if (f[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            tsr__fmt(err, errlen, "task %u: nbytes is not a non-negative integer", t);
            return TSR_EPROGRAM;
        }
        double flops;
        if (tsr__mp_as_double(&f[3], &flops) != 0 || !isfinite(flops) || flops < 0) {
            tsr__fmt(err, errlen, "task %u: flops is not a finite non-negative number", t);
            return TSR_EPROGRAM;
        }
        if (f[4].type != MSGPACK_OBJECT_BIN || f[4].via.bin.size == 0) {
            tsr__fmt(err, errlen, "task %u: kdesc is not a non-empty bin", t);
            return TSR_EPROGRAM;
        }
        *nkd += f[4].via.bin.size;
    }
    if (*ndeps >= UINT32_MAX) {
        tsr__fmt(err, errlen, "too many dependencies");
        return TSR_EPROGRAM;
    }
    return 0;
}

static int decode_root(const msgpack_object *root, tsr__jobspec *g, char *err, size_t errlen) {
    int64_t v;
    if (root->type != MSGPACK_OBJECT_MAP) {
        tsr__fmt(err, errlen, "graph payload is not a map");
        return TSR_EPROGRAM;
    }
    if (tsr__mp_get_int(root, "v", &v) != 0 || v != 1) {
        tsr__fmt(err, errlen, "graph format version is not 1");
        return TSR_EPROGRAM;
    }
    const msgpack_object *arrays = tsr__mp_get(root, "arrays");
    const msgpack_object *tasks = tsr__mp_get(root, "tasks");
    const msgpack_object *outputs = tsr__mp_get(root, "outputs");
    if (!arrays || arrays->type != MSGPACK_OBJECT_ARRAY || !tasks ||
        tasks->type != MSGPACK_OBJECT_ARRAY || !outputs || outputs->type != MSGPACK_OBJECT_ARRAY) {
        tsr__fmt(err, errlen, "graph needs arrays, tasks and outputs lists");
        return TSR_EPROGRAM;
    }
    for (uint32_t a = 0; a < arrays->via.array.size; a++) {
        const msgpack_object *e = &arrays->via.array.ptr[a];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2 ||
            !is_str(&e->via.array.ptr[0]) || !is_str(&e->via.array.ptr[1])) {
            tsr__fmt(err, errlen, "array %u: not [name, op]", a);
            return TSR_EPROGRAM;
        }
    }
    uint32_t n = tasks->via.array.size;
    if (n >= UINT32_MAX - 1) {
        tsr__fmt(err, errlen, "too many tasks");
        return TSR_EPROGRAM;
    }
    uint64_t ndeps, nkd;
    int rc = check_tasks(tasks, arrays->via.array.size, &ndeps, &nkd, err, errlen);
    if (rc) return rc;
    g->ntasks = n;
    g->narrays = arrays->via.array.size;
    g->noutputs = outputs->via.array.size;
    g->array = malloc(((size_t)n + 1) * sizeof *g->array);
    g->dep_off = malloc(((size_t)n + 1) * sizeof *g->dep_off);
    g->deps = malloc(((size_t)ndeps + 1) * sizeof *g->deps);
    g->nbytes = malloc(((size_t)n + 1) * sizeof *g->nbytes);
    g->kd_off = malloc(((size_t)n + 1) * sizeof *g->kd_off);
    g->arena = malloc((size_t)nkd + 1);
    g->outputs = malloc(((size_t)g->noutputs + 1) * sizeof *g->outputs);
    if (!g->array || !g->dep_off || !g->deps || !g->nbytes || !g->kd_off || !g->arena ||
        !g->outputs) {
        tsr__fmt(err, errlen, "out of memory for a graph of %u tasks", n);
        return TSR_EPROGRAM;
    }
    uint32_t dp = 0;
    uint64_t kp = 0;
    for (uint32_t t = 0; t < n; t++) {
        const msgpack_object *f = tasks->via.array.ptr[t].via.array.ptr;
        g->array[t] = (uint32_t)f[0].via.u64;
        g->dep_off[t] = dp;
        for (uint32_t k = 0; k < f[1].via.array.size; k++)
            g->deps[dp++] = (uint32_t)f[1].via.array.ptr[k].via.u64;
        g->nbytes[t] = f[2].via.u64;
        g->kd_off[t] = kp;
        memcpy(g->arena + kp, f[4].via.bin.ptr, f[4].via.bin.size);
        kp += f[4].via.bin.size;
    }
    g->dep_off[n] = dp;
    g->kd_off[n] = kp;
    for (uint32_t o = 0; o < g->noutputs; o++) {
        if (as_u32(&outputs->via.array.ptr[o], &g->outputs[o]) != 0 || g->outputs[o] >= n) {
            tsr__fmt(err, errlen, "output %u is not a task id below %u", o, n);
            return TSR_EPROGRAM;
        }
    }
    return 0;
}

int tsr__proto_submit(const void *payload, size_t len, tsr__jobspec *spec, char *err,
                      size_t errlen) {
    memset(spec, 0, sizeof *spec);
    if (!payload || len == 0) {
        tsr__fmt(err, errlen, "submit without a graph payload");
        return TSR_EPROGRAM;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc;
    msgpack_unpack_return r = msgpack_unpack_next(&up, payload, len, &off);
    if (r != MSGPACK_UNPACK_SUCCESS || off != len) {
        tsr__fmt(err, errlen, "graph payload is not one msgpack object");
        rc = TSR_EPROGRAM;
    } else {
        rc = decode_root(&up.data, spec, err, errlen);
    }
    msgpack_unpacked_destroy(&up);
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

void tsr__proto_finished(msgpack_sbuffer *b, const tsr__sched *s, const tsr__sjob *j) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 3, "finished");
    tsr__mp_pack_str(&pk, "job");
    msgpack_pack_uint32(&pk, j->id);
    tsr__mp_pack_str(&pk, "outputs");
    msgpack_pack_array(&pk, j->g.noutputs);
    for (uint32_t o = 0; o < j->g.noutputs; o++) {
        const tsr__stask *t = &j->t[j->g.outputs[o]];
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint32(&pk, j->g.outputs[o]);
        if (t->state == TSR__TS_MEMORY)
            tsr__mp_pack_str(&pk, s->w[t->where].addr);
        else
            msgpack_pack_nil(&pk);
        msgpack_pack_uint64(&pk, t->nbytes);
    }
}

void tsr__proto_compute(msgpack_sbuffer *b, const tsr__sched *s, uint32_t wid, uint32_t job,
                        const uint32_t *tasks, size_t n) {
    const tsr__sjob *j = s->jobs[job];
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 3, "compute");
    tsr__mp_pack_str(&pk, "job");
    msgpack_pack_uint32(&pk, job);
    tsr__mp_pack_str(&pk, "tasks");
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t id = tasks[i];
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint32(&pk, id);
        size_t kl = (size_t)(j->g.kd_off[id + 1] - j->g.kd_off[id]);
        msgpack_pack_bin(&pk, kl);
        msgpack_pack_bin_body(&pk, j->g.arena + j->g.kd_off[id], kl);
        uint32_t lo = j->g.dep_off[id], hi = j->g.dep_off[id + 1];
        msgpack_pack_array(&pk, hi - lo);
        for (uint32_t k = lo; k < hi; k++) {
            uint32_t in = j->g.deps[k];
            const tsr__stask *ti = &j->t[in];
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint32(&pk, in);
            /* nil when this worker holds it. An input that is not in memory cannot happen for
             * a task that is sent; nil then makes the worker report it missing (erred). */
            if (ti->state == TSR__TS_MEMORY && ti->where != wid)
                tsr__mp_pack_str(&pk, s->w[ti->where].addr);
            else
                msgpack_pack_nil(&pk);
        }
    }
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

void tsr__proto_info(msgpack_sbuffer *b, const tsr__sched *s) {
    msgpack_packer pk;
    pk_init(&pk, b);
    tsr__mp_pack_type(&pk, 4, "info");
    tsr__mp_pack_str(&pk, "workers");
    msgpack_pack_uint32(&pk, s->nalive);
    tsr__mp_pack_str(&pk, "jobs");
    msgpack_pack_uint64(&pk, s->nlive);
    tsr__mp_pack_str(&pk, "tasks");
    msgpack_pack_map(&pk, TSR__TS_COUNT);
    for (int st = 0; st < TSR__TS_COUNT; st++) {
        tsr__mp_pack_str(&pk, tsr__task_state_name(st));
        msgpack_pack_uint64(&pk, s->count[st]);
    }
}
