/* The chunk-task graph: building it (pools of parameters, deps), checking it, and its msgpack
 * forms (a kernel descriptor; the whole submission payload). The payload's one decoder is the
 * scheduler's (tsr__proto_submit, scheduler/proto.c).
 * Pure data code: no I/O, no event loop. Everything decoded here comes from a peer, so it is
 * checked field by field and never asserted on. */
#include "graph/graph.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Bounds on decoded counts: far above anything lowering produces, low enough that sizes in
 * uint32 fields and byte counts in size_t cannot overflow. */
#define KDESC_MAX_PARAMS (1u << 24)
#define KDESC_MAX_STRING (1u << 16)
#define CHUNK_MAX_BYTES ((uint64_t)1 << 48)

uint64_t tsr__kdesc_nbytes(const tsr_kdesc *d) {
    uint64_t n = tsr_dtype_size((tsr_dtype)d->dtype);
    for (int a = 0; a < d->ndim && a < TSR_MAX_NDIM; a++) n *= (uint64_t)d->shape[a];
    return n;
}

/* ---- kernel descriptors -------------------------------------------------------------------- */

int tsr__kdesc_pack(msgpack_packer *pk, const tsr_kdesc *d) {
    int rc = 0;
    rc |= msgpack_pack_array(pk, 7);
    rc |= msgpack_pack_uint8(pk, d->kop);
    rc |= msgpack_pack_uint8(pk, d->fn);
    rc |= msgpack_pack_uint8(pk, d->dtype);
    rc |= msgpack_pack_array(pk, d->ndim);
    for (int a = 0; a < d->ndim; a++) rc |= msgpack_pack_int64(pk, d->shape[a]);
    rc |= msgpack_pack_array(pk, d->ni);
    for (uint32_t k = 0; k < d->ni; k++) rc |= msgpack_pack_int64(pk, d->i[k]);
    rc |= msgpack_pack_array(pk, d->nf);
    for (uint32_t k = 0; k < d->nf; k++) rc |= msgpack_pack_double(pk, d->f[k]);
    if (d->s) {
        size_t len = strlen(d->s);
        rc |= msgpack_pack_str(pk, len);
        rc |= msgpack_pack_str_body(pk, d->s, len);
    } else {
        rc |= msgpack_pack_nil(pk);
    }
    return rc ? -ENOMEM : 0;
}

/* An integer that fits int64 (positive or negative encoding). */
static int obj_int64(const msgpack_object *o, int64_t *v) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX) return -1;
        *v = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return 0;
    }
    return -1;
}

static int obj_uint(const msgpack_object *o, uint64_t max, uint64_t *v) {
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max) return -1;
    *v = o->via.u64;
    return 0;
}

/* Any number as a double (encoders may shorten integral floats to integers). */
static int obj_number(const msgpack_object *o, double *v) {
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *v = o->via.f64;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *v = (double)o->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = (double)o->via.i64;
        return 0;
    default:
        return -1;
    }
}

/* How many sub-operations each family accepts in `fn` (the table's nfn; a family that does not
 * use fn tolerates any byte). */
static int fn_limit(int kop) {
    const tsr__kop_info *k = tsr__kop_info_of(kop);
    return k && k->nfn ? k->nfn : 256;
}

/* The string parameter is stored NUL-terminated after the integers in *ibuf, so one free
 * releases both. */
int tsr__kdesc_unpack(const msgpack_object *obj, tsr_kdesc *d, int64_t **ibuf, double **fbuf) {
    *ibuf = NULL;
    *fbuf = NULL;
    memset(d, 0, sizeof *d);
    if (obj->type != MSGPACK_OBJECT_ARRAY || obj->via.array.size != 7) return TSR_EPROTOCOL;
    const msgpack_object *it = obj->via.array.ptr;
    uint64_t kop, fn, dtype;
    if (obj_uint(&it[0], TSR_KOP_COUNT - 1, &kop) || obj_uint(&it[1], 255, &fn) ||
        obj_uint(&it[2], TSR_DTYPE_COUNT - 1, &dtype))
        return TSR_EPROTOCOL;
    if (fn >= (uint64_t)fn_limit((int)kop)) return TSR_EPROTOCOL;
    d->kop = (uint8_t)kop;
    d->fn = (uint8_t)fn;
    d->dtype = (uint8_t)dtype;

    const msgpack_object *shape = &it[3], *ip = &it[4], *fp = &it[5], *sp = &it[6];
    if (shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size > TSR_MAX_NDIM)
        return TSR_EPROTOCOL;
    d->ndim = (uint8_t)shape->via.array.size;
    uint64_t bytes = tsr_dtype_size((tsr_dtype)d->dtype);
    for (int a = 0; a < d->ndim; a++) {
        if (obj_int64(&shape->via.array.ptr[a], &d->shape[a]) || d->shape[a] < 0)
            return TSR_EPROTOCOL;
        /* Zero-size chunks are fine; only a product that would overflow is rejected. */
        if (d->shape[a] > 0 && bytes > CHUNK_MAX_BYTES / (uint64_t)d->shape[a])
            return TSR_EPROTOCOL;
        bytes *= (uint64_t)d->shape[a];
    }
    if (ip->type != MSGPACK_OBJECT_ARRAY || ip->via.array.size > KDESC_MAX_PARAMS)
        return TSR_EPROTOCOL;
    if (fp->type != MSGPACK_OBJECT_ARRAY || fp->via.array.size > KDESC_MAX_PARAMS)
        return TSR_EPROTOCOL;
    size_t slen = 0;
    if (sp->type == MSGPACK_OBJECT_STR) {
        slen = sp->via.str.size;
        /* An empty string's pointer may be NULL (msgpack-c): memchr and memcpy must not see it. */
        if (slen > KDESC_MAX_STRING || (slen && memchr(sp->via.str.ptr, 0, slen)))
            return TSR_EPROTOCOL;
    } else if (sp->type != MSGPACK_OBJECT_NIL) {
        return TSR_EPROTOCOL;
    }

    d->ni = ip->via.array.size;
    d->nf = fp->via.array.size;
    size_t ibytes = (size_t)d->ni * sizeof(int64_t);
    int64_t *ib = NULL;
    double *fb = NULL;
    if (d->ni || sp->type == MSGPACK_OBJECT_STR) {
        ib = malloc(ibytes + slen + 1);
        if (!ib) return -ENOMEM;
    }
    if (d->nf) {
        fb = malloc((size_t)d->nf * sizeof(double));
        if (!fb) {
            free(ib);
            return -ENOMEM;
        }
    }
    for (uint32_t k = 0; k < d->ni; k++)
        if (obj_int64(&ip->via.array.ptr[k], &ib[k])) goto bad;
    for (uint32_t k = 0; k < d->nf; k++)
        if (obj_number(&fp->via.array.ptr[k], &fb[k])) goto bad;
    if (sp->type == MSGPACK_OBJECT_STR) {
        char *s = (char *)ib + ibytes;
        if (slen) memcpy(s, sp->via.str.ptr, slen);
        s[slen] = '\0';
        d->s = s;
    }
    d->i = d->ni ? ib : NULL;
    d->f = d->nf ? fb : NULL;
    *ibuf = ib;
    *fbuf = fb;
    return 0;
bad:
    free(ib);
    free(fb);
    memset(d, 0, sizeof *d);
    return TSR_EPROTOCOL;
}

void tsr__kdesc_unpack_free(int64_t *ibuf, double *fbuf) {
    free(ibuf);
    free(fbuf);
}

/* ---- building a graph ---------------------------------------------------------------------- */

void tsr__graph_init(tsr_graph *g) {
    memset(g, 0, sizeof *g);
}

void tsr__graph_free(tsr_graph *g) {
    if (!g) return;
    for (size_t a = 0; a < g->narrays; a++) {
        free(g->arrays[a].name);
        free(g->arrays[a].op);
        free(g->arrays[a].plugin);
    }
    for (size_t k = 0; k < g->nstrings; k++) free(g->strings[k]);
    free(g->tasks);
    free(g->deps);
    free(g->arrays);
    free(g->outputs);
    free(g->ipool);
    free(g->fpool);
    free(g->strings);
    memset(g, 0, sizeof *g);
}

int64_t tsr__graph_add_array(tsr_graph *g, const char *name, const char *op) {
    if (g->narrays >= UINT32_MAX || TSR__GROW(g->arrays, g->arrays_cap, g->narrays + 1))
        return -ENOMEM;
    char *n = strdup(name ? name : "");
    char *o = strdup(op ? op : "");
    if (!n || !o) {
        free(n);
        free(o);
        return -ENOMEM;
    }
    memset(&g->arrays[g->narrays], 0, sizeof g->arrays[g->narrays]);
    g->arrays[g->narrays].name = n;
    g->arrays[g->narrays].op = o;
    return (int64_t)g->narrays++;
}

void tsr__graph_set_grid(tsr_graph *g, uint32_t a, int ndim, const int64_t *grid) {
    if (a >= g->narrays || ndim < 0 || ndim > TSR_MAX_NDIM) return;
    g->arrays[a].ndim = ndim;
    for (int k = 0; k < ndim; k++) g->arrays[a].grid[k] = grid[k];
}

int tsr__graph_set_plugin(tsr_graph *g, uint32_t a, const char *lib) {
    if (g->arrays[a].plugin) return 0;
    g->arrays[a].plugin = strdup(lib);
    return g->arrays[a].plugin ? 0 : -ENOMEM;
}

void tsr__graph_chunk_str(const tsr_graph *g, uint32_t t, char *buf, size_t size) {
    if (size) buf[0] = '\0';
    if (t >= g->ntasks || g->tasks[t].chunk < 0 || g->tasks[t].array >= g->narrays) return;
    const tsr_garray *a = &g->arrays[g->tasks[t].array];
    if (a->ndim == 0) return; /* one chunk: nothing to say */
    int64_t idx[TSR_MAX_NDIM], ci = g->tasks[t].chunk;
    for (int k = a->ndim; k-- > 0;) {
        if (a->grid[k] <= 0) return;
        idx[k] = ci % a->grid[k];
        ci /= a->grid[k];
    }
    if (ci != 0) return; /* not in the grid: say nothing rather than something wrong */
    size_t at = 0;
    at += (size_t)snprintf(buf, size, "(");
    for (int k = 0; k < a->ndim && at < size; k++)
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", k ? ", " : "", (long long)idx[k]);
    if (at < size) snprintf(buf + at, size - at, a->ndim == 1 ? ",)" : ")");
}

/* Parameters are appended to the pools in task order, so task t's i[] starts at the sum of the
 * earlier tasks' ni (likewise f[]): tsr__graph_finish recomputes the pointers from the counts
 * alone, which keeps it idempotent and lets tasks be added after a finish. Strings are owned
 * copies whose addresses never move, so d.s is valid at once. */
int64_t tsr__graph_add_task(tsr_graph *g, const tsr_kdesc *d, uint32_t array, const uint32_t *deps,
                            uint32_t ndeps, double flops) {
    size_t id = g->ntasks;
    if (id >= UINT32_MAX) return TSR_ETOOLARGE;
    for (uint32_t k = 0; k < ndeps; k++)
        if (deps[k] >= id) return TSR_EINVALID;
    if (d->ndim > TSR_MAX_NDIM || (d->ni && !d->i) || (d->nf && !d->f)) return TSR_EINVALID;
    if (TSR__GROW(g->tasks, g->tasks_cap, id + 1) ||
        TSR__GROW(g->deps, g->deps_cap, g->ndeps + ndeps) ||
        TSR__GROW(g->ipool, g->ipool_cap, g->nipool + d->ni) ||
        TSR__GROW(g->fpool, g->fpool_cap, g->nfpool + d->nf) ||
        (d->s && TSR__GROW(g->strings, g->strings_cap, g->nstrings + 1)))
        return -ENOMEM;
    char *s = NULL;
    if (d->s && !(s = strdup(d->s))) return -ENOMEM;
    if (d->s) g->strings[g->nstrings++] = s;

    if (ndeps) memcpy(g->deps + g->ndeps, deps, ndeps * sizeof *deps);
    if (d->ni) memcpy(g->ipool + g->nipool, d->i, d->ni * sizeof *d->i);
    if (d->nf) memcpy(g->fpool + g->nfpool, d->f, d->nf * sizeof *d->f);
    tsr_gtask *t = &g->tasks[id];
    t->d = *d;
    t->d.i = NULL;
    t->d.f = NULL;
    t->d.s = s;
    t->array = array;
    t->deps_off = (uint32_t)g->ndeps;
    t->ndeps = ndeps;
    t->flops = flops;
    t->chunk = -1;
    g->ndeps += ndeps;
    g->nipool += d->ni;
    g->nfpool += d->nf;
    g->ntasks++;
    return (int64_t)id;
}

int tsr__graph_add_output(tsr_graph *g, uint32_t task) {
    if (task >= g->ntasks) return TSR_EINVALID;
    if (TSR__GROW(g->outputs, g->outputs_cap, g->noutputs + 1)) return -ENOMEM;
    g->outputs[g->noutputs++] = task;
    return 0;
}

/* Task t's descriptor with its pointers resolved against the pools; ioff and foff hold the pool
 * offsets of task t and are advanced past it. */
static tsr_kdesc resolved(const tsr_graph *g, size_t t, size_t *ioff, size_t *foff) {
    tsr_kdesc d = g->tasks[t].d;
    d.i = d.ni ? g->ipool + *ioff : NULL;
    d.f = d.nf ? g->fpool + *foff : NULL;
    *ioff += d.ni;
    *foff += d.nf;
    return d;
}

void tsr__graph_finish(tsr_graph *g) {
    size_t ioff = 0, foff = 0;
    for (size_t t = 0; t < g->ntasks; t++) g->tasks[t].d = resolved(g, t, &ioff, &foff);
}

static int pack_cstr(msgpack_packer *pk, const char *s) {
    size_t len = strlen(s);
    return msgpack_pack_str(pk, len) | msgpack_pack_str_body(pk, s, len);
}

int tsr__graph_pack(const tsr_graph *g, msgpack_sbuffer *out) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_sbuffer kb; /* one task's descriptor, reused */
    msgpack_sbuffer_init(&kb);
    msgpack_packer kpk;
    msgpack_packer_init(&kpk, &kb, msgpack_sbuffer_write);

    int rc = 0;
    rc |= msgpack_pack_map(&pk, 4);
    rc |= pack_cstr(&pk, "v");
    rc |= msgpack_pack_int(&pk, 1);
    rc |= pack_cstr(&pk, "arrays");
    rc |= msgpack_pack_array(&pk, g->narrays);
    for (size_t a = 0; a < g->narrays; a++) {
        rc |= msgpack_pack_array(&pk, g->arrays[a].plugin ? 3 : 2);
        rc |= pack_cstr(&pk, g->arrays[a].name);
        rc |= pack_cstr(&pk, g->arrays[a].op);
        if (g->arrays[a].plugin) rc |= pack_cstr(&pk, g->arrays[a].plugin);
    }
    rc |= pack_cstr(&pk, "tasks");
    rc |= msgpack_pack_array(&pk, g->ntasks);
    size_t ioff = 0, foff = 0;
    for (size_t t = 0; t < g->ntasks && !rc; t++) {
        const tsr_gtask *tk = &g->tasks[t];
        tsr_kdesc d = resolved(g, t, &ioff, &foff);
        msgpack_sbuffer_clear(&kb);
        rc |= tsr__kdesc_pack(&kpk, &d);
        rc |= msgpack_pack_array(&pk, 5);
        rc |= msgpack_pack_uint32(&pk, tk->array);
        rc |= msgpack_pack_array(&pk, tk->ndeps);
        for (uint32_t k = 0; k < tk->ndeps; k++)
            rc |= msgpack_pack_uint32(&pk, g->deps[tk->deps_off + k]);
        rc |= msgpack_pack_uint64(&pk, tsr__kdesc_nbytes(&d));
        rc |= msgpack_pack_double(&pk, tk->flops);
        rc |= msgpack_pack_bin(&pk, kb.size);
        rc |= msgpack_pack_bin_body(&pk, kb.data, kb.size);
    }
    rc |= pack_cstr(&pk, "outputs");
    rc |= msgpack_pack_array(&pk, g->noutputs);
    for (size_t k = 0; k < g->noutputs; k++) rc |= msgpack_pack_uint32(&pk, g->outputs[k]);
    msgpack_sbuffer_destroy(&kb);
    return rc ? -ENOMEM : 0;
}
