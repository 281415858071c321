/* Outputs written as they are computed (tsr_store, and tsr_compute's store targets): the
 * targets' temporary files, which task writes which chunk of which target, fetching each chunk
 * once the scheduler reports it (`computed`), writing it at its place (.npy: its C-order runs
 * with pwrite; Zarr: zarr_out.c), and telling the scheduler it may free it (`release_keys`,
 * once per loop turn). Everything runs on the caller's thread inside the blocking call; the
 * temporaries are renamed into place only when the call has succeeded, and removed otherwise.
 * It never decides what the scheduler computes: it only follows its reports. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/client.h"

/* Chunks fetched at once (each holds a buffer of its size until written). */
#define STORE_OUTSTANDING 8

/* What became of a target chunk's task. */
enum { CK_NONE, CK_QUEUED, CK_FETCHING, CK_WRITTEN, CK_LOST };
/* WANTED: some target writes it; KEPT: the call also keeps it (never released); AGAIN: it was
 * reported again while a fetch was under way (a failed fetch retries at the new address). */
enum { CF_WANTED = 1, CF_KEPT = 2, CF_AGAIN = 4 };

typedef struct pair {
    uint32_t target;
    int64_t ci;
    int64_t next; /* the task's next pair, or -1 */
} pair;

struct tsr__ostream {
    tsr_client *c;
    tsr__target *t;
    size_t nt;
    /* Per task of the lowered graph. */
    uint32_t ntasks;
    uint8_t *st, *fl;
    uint32_t *addr;  /* index in addrs of where it was last reported */
    int64_t *first;  /* its first (target, chunk) pair, or -1 */
    uint64_t *bytes; /* its chunk's size */
    pair *pairs;
    size_t npairs;
    uint32_t nwanted, nwritten;
    /* Tasks reported and not fetched yet, in report order. */
    uint32_t *queue;
    size_t qhead, qn, qcap;
    char **addrs; /* worker addresses seen (few): interned */
    size_t naddrs, addrcap;
    /* Written chunks to release, sent once per loop turn. */
    uint32_t *rel;
    size_t nrel, relcap;
    uv_check_t check;
    int check_on;
    int stream;  /* the scheduler reports chunks as they are computed */
    int started; /* streaming (tsr__ostream_start): the job is the rt's */
    /* Fetches that failed and wait for the chunk to be reported again (made elsewhere after a
     * lost worker): since when, and what failed first. */
    uint32_t nlost;
    double lost_since;
    char lost_why[600];
};

static const char *target_name(const tsr__target *t) {
    return tsr_array_name(t->a);
}

/* ---- targets ---- */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* A Zarr store needs one chunk size per axis: every chunk but the last the same. */
static int regular(const tsr_array *a) {
    for (int ax = 0; ax < a->ndim; ax++)
        for (int64_t k = 1; k + 1 < a->numchunks[ax]; k++)
            if (a->chunks[ax][k] != a->chunks[ax][0]) return 0;
    for (int ax = 0; ax < a->ndim; ax++)
        if (a->numchunks[ax] > 1 && a->chunks[ax][a->numchunks[ax] - 1] > a->chunks[ax][0])
            return 0;
    return 1;
}

static int check_target(tsr_client *c, const tsr_store_target *t, size_t k, int *format) {
    if (!t->array) return tsr__fail(c, TSR_EINVALID, "tsr_store: target %zu has no array", k);
    const char *name = t->array->name;
    if (t->array->client != c)
        return tsr__fail(c, TSR_EINVALID, "array \"%s\" belongs to another client", name);
    if (!t->path || !*t->path)
        return tsr__fail(c, TSR_EINVALID, "tsr_store: empty path for array \"%s\"", name);
    for (size_t i = 0; i < sizeof t->reserved; i++)
        if (t->reserved[i])
            return tsr__fail(c, TSR_EINVALID,
                             "tsr_store: target of array \"%s\" has reserved bytes set "
                             "(initialise it with tsr_store_target_init)",
                             name);
    int f = t->format;
    if (f == TSR_FORMAT_AUTO) f = ends_with(t->path, ".zarr") ? TSR_FORMAT_ZARR : TSR_FORMAT_NPY;
    if (f != TSR_FORMAT_NPY && f != TSR_FORMAT_ZARR)
        return tsr__fail(c, TSR_EINVALID, "tsr_store: \"%s\" (array \"%s\"): unknown format %d",
                         t->path, name, t->format);
    if (t->compressor < TSR_COMPRESSOR_DEFAULT || t->compressor > TSR_COMPRESSOR_BLOSC)
        return tsr__fail(c, TSR_EINVALID, "tsr_store: \"%s\" (array \"%s\"): unknown compressor %d",
                         t->path, name, t->compressor);
    if (f == TSR_FORMAT_NPY && t->compressor != TSR_COMPRESSOR_DEFAULT)
        return tsr__fail(c, TSR_EINVALID,
                         "tsr_store: \"%s\" (array \"%s\"): a .npy file is not compressed "
                         "(compressors are for Zarr stores)",
                         t->path, name);
    *format = f;
    return 0;
}

/* A regular grid for a Zarr store: each axis's largest chunk. */
static int make_regular(tsr_client *c, tsr__target *t) {
    int64_t ch[TSR_MAX_NDIM];
    for (int ax = 0; ax < t->a->ndim; ax++) {
        ch[ax] = 1;
        for (int64_t k = 0; k < t->a->numchunks[ax]; k++)
            if (t->a->chunks[ax][k] > ch[ax]) ch[ax] = t->a->chunks[ax][k];
    }
    int rc = tsr_rechunk(t->a, ch, &t->owned);
    if (rc) return rc;
    t->a = t->owned;
    return 0;
}

static int npy_begin(tsr_client *c, tsr__target *t) {
    char hdr[512];
    tsr_array *a = t->a;
    int hl = tsr__npy_format_header(a->dtype, a->ndim, a->shape, hdr, sizeof hdr);
    if (hl < 0) return tsr__fail(c, hl, "cannot format the .npy header of array \"%s\"", a->name);
    t->data_offset = hl;
    const char *p = hdr;
    size_t left = (size_t)hl;
    off_t pos = 0;
    while (left > 0) {
        ssize_t w = pwrite(t->out.fd, p, left, pos);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) goto fail;
        p += w;
        pos += w;
        left -= (size_t)w;
    }
    /* The whole length now: chunks land anywhere in it, in any order. */
    int rc = tsr__tmpout_length(
        t->out.fd, (off_t)(hl + tsr_array_size(a) * (int64_t)tsr_dtype_size(a->dtype)));
    if (rc) {
        errno = -rc;
        goto fail;
    }
    return 0;
fail:;
    int e = errno;
    return tsr__fail(c, -e, "cannot write \"%s\" (array \"%s\"): %s", t->out.path, a->name,
                     strerror(e));
}

typedef struct run_ctx {
    tsr_client *c;
    tsr__target *t;
} run_ctx;

static int npy_run(void *u, int64_t dst, const char *src, size_t nbytes) {
    run_ctx *r = u;
    tsr__target *t = r->t;
    off_t pos = (off_t)(t->data_offset + dst * (int64_t)tsr_dtype_size(t->a->dtype));
    while (nbytes > 0) {
        ssize_t w = pwrite(t->out.fd, src, nbytes, pos);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return tsr__fail(r->c, -e, "cannot write \"%s\" (array \"%s\"): %s", t->out.path,
                             target_name(t), strerror(e));
        }
        src += w;
        nbytes -= (size_t)w;
        pos += w;
    }
    return 0;
}

static int target_write(tsr_client *c, tsr__target *t, int64_t ci, const void *data) {
    if (t->format == TSR_FORMAT_ZARR) return tsr__zarr_out_chunk(c, t, ci, data);
    run_ctx r = {c, t};
    return tsr__chunk_runs(t->a, ci, data, npy_run, &r);
}

static void target_free(tsr__target *t) {
    tsr__tmpout_abort(&t->out);
    tsr_array_free(t->owned);
    free(t->pad);
    free(t->packed);
}

int tsr__ostream_new(tsr_client *c, const tsr_store_target *targets, size_t n, tsr__ostream **out) {
    *out = NULL;
    if (n > 0 && !targets) return tsr__fail(c, TSR_EINVALID, "tsr_store: targets is NULL");
    int format[64], *fmt = n <= 64 ? format : malloc(n * sizeof *fmt);
    if (!fmt) return tsr__fail(c, -ENOMEM, "out of memory");
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        rc = check_target(c, &targets[k], k, &fmt[k]);
        int device = tsr__is_char_device(targets[k].path); /* /dev/null: any number */
        for (size_t i = 0; i < k && !rc && !device; i++)
            if (!strcmp(targets[i].path, targets[k].path))
                rc = tsr__fail(c, TSR_EINVALID,
                               "tsr_store: arrays \"%s\" and \"%s\" both write \"%s\"",
                               targets[i].array->name, targets[k].array->name, targets[k].path);
        if (!rc && fmt[k] == TSR_FORMAT_ZARR)
            rc = tsr__zarr_out_check(c, targets[k].array, targets[k].path);
        struct stat st;
        if (!rc && fmt[k] == TSR_FORMAT_NPY && stat(targets[k].path, &st) == 0 &&
            S_ISDIR(st.st_mode))
            rc = tsr__fail(c, -EISDIR, "cannot write \"%s\" (array \"%s\"): it is a directory",
                           targets[k].path, targets[k].array->name);
    }
    tsr__ostream *s = rc ? NULL : calloc(1, sizeof *s);
    if (!rc && (!s || !(s->t = calloc(n ? n : 1, sizeof *s->t))))
        rc = tsr__fail(c, -ENOMEM, "out of memory");
    if (rc) {
        if (fmt != format) free(fmt);
        free(s);
        return rc;
    }
    s->c = c;
    for (size_t k = 0; k < n; k++) s->t[k].out.fd = -1;
    s->nt = n;
    for (size_t k = 0; k < n && !rc; k++) {
        tsr__target *t = &s->t[k];
        t->a = targets[k].array;
        t->format = fmt[k];
        t->compressor = targets[k].compressor;
        if (t->format == TSR_FORMAT_ZARR && !regular(t->a)) rc = make_regular(c, t);
        char what[300];
        snprintf(what, sizeof what, "array \"%s\"", targets[k].array->name);
        if (!rc)
            rc = tsr__tmpout_open(c, &t->out, targets[k].path, what, t->format == TSR_FORMAT_ZARR);
        if (!rc) rc = t->format == TSR_FORMAT_ZARR ? tsr__zarr_out_begin(c, t) : npy_begin(c, t);
    }
    if (fmt != format) free(fmt);
    if (rc) {
        tsr__ostream_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

size_t tsr__ostream_arrays(const tsr__ostream *s, tsr_array ***arrays, uint32_t *nchunks) {
    uint64_t n = 0;
    *arrays = malloc((s->nt ? s->nt : 1) * sizeof **arrays);
    if (!*arrays) return (size_t)-1;
    for (size_t k = 0; k < s->nt; k++) {
        (*arrays)[k] = s->t[k].a;
        n += (uint64_t)tsr__array_nchunks(s->t[k].a);
    }
    *nchunks = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    return s->nt;
}

int tsr__ostream_map(tsr__ostream *s, const tsr_graph *g, tsr_array *const *keep, size_t nkeep) {
    uint32_t n = (uint32_t)g->ntasks;
    s->ntasks = n;
    s->st = calloc(n + 1, 1);
    s->fl = calloc(n + 1, 1);
    s->addr = calloc(n + 1, sizeof *s->addr);
    s->first = malloc((n + 1) * sizeof *s->first);
    s->bytes = calloc(n + 1, sizeof *s->bytes);
    size_t np = 0;
    for (size_t k = 0; k < s->nt; k++) np += (size_t)tsr__array_nchunks(s->t[k].a);
    s->pairs = malloc((np + 1) * sizeof *s->pairs);
    if (!s->st || !s->fl || !s->addr || !s->first || !s->bytes || !s->pairs) return -ENOMEM;
    for (uint32_t id = 0; id < n; id++) s->first[id] = -1;
    /* Pairs in target order, each task's list in that order too (appended at its tail). */
    int64_t *last = malloc((n + 1) * sizeof *last);
    if (!last) return -ENOMEM;
    for (size_t k = 0; k < s->nt; k++) {
        tsr_array *a = s->t[k].a;
        int64_t nc = tsr__array_nchunks(a);
        for (int64_t ci = 0; ci < nc; ci++) {
            uint32_t id = a->lower_tasks[ci];
            int64_t p = (int64_t)s->npairs++;
            s->pairs[p] = (pair){(uint32_t)k, ci, -1};
            if (s->first[id] < 0) {
                s->first[id] = p;
                s->fl[id] |= CF_WANTED;
                s->bytes[id] = tsr__chunk_nbytes(a, ci);
                s->nwanted++;
            } else {
                s->pairs[last[id]].next = p;
            }
            last[id] = p;
        }
    }
    free(last);
    for (size_t k = 0; k < nkeep; k++) {
        int64_t nc = tsr__array_nchunks(keep[k]);
        for (int64_t ci = 0; ci < nc; ci++) s->fl[keep[k]->lower_tasks[ci]] |= CF_KEPT;
    }
    return 0;
}

/* ---- streaming ---- */

static void maybe_complete(tsr__rt *rt) {
    if (rt->finished && tsr__ostream_written(rt->store)) {
        rt->complete = 1;
        uv_stop(&rt->c->loop);
    }
}

/* Sends the releases of the chunks written this loop turn, in one message. */
static void on_check(uv_check_t *h) {
    tsr__ostream_flush(h->data);
}

void tsr__ostream_flush(tsr__rt *rt) {
    tsr__ostream *s = rt->store;
    if (!s || s->nrel == 0) return;
    if (rt->c->sched && !rt->c->sched->closing && !rt->failed) {
        tsr__m_id_item items[256];
        for (size_t i = 0; i < s->nrel;) {
            uint32_t m = 0;
            while (m < TSR__ARRAY_LEN(items) && i < s->nrel) items[m++].id = s->rel[i++];
            tsr__msg_release_keys msg = {.job = (uint32_t)rt->job, .ids = {.n = m, .v = items}};
            tsr__send_msg(rt->c->sched, TSR__MSG_release_keys, &msg);
        }
    }
    s->nrel = 0;
}

void tsr__ostream_start(tsr__rt *rt, int stream) {
    tsr__ostream *s = rt->store;
    s->stream = stream;
    s->started = 1;
    if (stream && uv_check_init(&rt->c->loop, &s->check) == 0) {
        s->check.data = rt;
        uv_check_start(&s->check, on_check);
        s->check_on = 1;
    }
}

static uint32_t intern(tsr__ostream *s, const char *addr) {
    for (size_t i = 0; i < s->naddrs; i++)
        if (!strcmp(s->addrs[i], addr)) return (uint32_t)i;
    char *d = strdup(addr);
    if (!d || TSR__GROW(s->addrs, s->addrcap, s->naddrs + 1) < 0) {
        free(d);
        return UINT32_MAX;
    }
    s->addrs[s->naddrs] = d;
    return (uint32_t)s->naddrs++;
}

static void enqueue(tsr__rt *rt, uint32_t id) {
    tsr__ostream *s = rt->store;
    if (s->qhead > 0 && s->qhead == s->qn) s->qhead = s->qn = 0;
    if (TSR__GROW(s->queue, s->qcap, s->qn + 1) < 0) {
        tsr__rt_fail(rt, -ENOMEM, "out of memory");
        return;
    }
    s->queue[s->qn++] = id;
    s->st[id] = CK_QUEUED;
}

static void pump(tsr__rt *rt) {
    tsr__ostream *s = rt->store;
    while (rt->noutstanding < STORE_OUTSTANDING && s->qhead < s->qn && !rt->failed) {
        uint32_t id = s->queue[s->qhead++];
        if (s->st[id] != CK_QUEUED) continue;
        if (tsr__fetch_task(rt, (uint32_t)rt->job, id, s->bytes[id], s->addrs[s->addr[id]]) != 0) {
            tsr__rt_fail(rt, -ENOMEM, "out of memory");
            break;
        }
        s->st[id] = CK_FETCHING;
    }
    tsr__fetch_flush(&rt->pool);
}

void tsr__ostream_on_computed(tsr__rt *rt, uint32_t id, const char *addr) {
    tsr__ostream *s = rt->store;
    if (!s || !s->started || id >= s->ntasks || !(s->fl[id] & CF_WANTED)) return;
    uint32_t a = intern(s, addr);
    if (a == UINT32_MAX) {
        tsr__rt_fail(rt, -ENOMEM, "out of memory");
        return;
    }
    s->addr[id] = a;
    switch (s->st[id]) {
    case CK_LOST:
        s->nlost--;
        /* fall through */
    case CK_NONE:
        enqueue(rt, id);
        pump(rt);
        break;
    case CK_FETCHING:
        /* Made again elsewhere: its holder was lost, or stopped (a fetch from it would wait
         * for the client's timeout). */
        if (tsr__fetch_redirect(rt, (uint32_t)rt->job, id, addr)) {
            enqueue(rt, id);
            pump(rt);
        } else {
            s->fl[id] |= CF_AGAIN;
        }
        break;
    default: /* queued (it goes to the latest address) or written */
        break;
    }
}

/* Writes the chunk of task id to every target chunk it is. */
static int write_task(tsr__ostream *s, uint32_t id, const void *data) {
    for (int64_t p = s->first[id]; p >= 0; p = s->pairs[p].next) {
        int rc = target_write(s->c, &s->t[s->pairs[p].target], s->pairs[p].ci, data);
        if (rc) return rc;
    }
    return 0;
}

void tsr__ostream_fetched(tsr__rt *rt, tsr__fetch *f, int status, const char *why) {
    tsr__ostream *s = rt->store;
    uint32_t id = (uint32_t)f->ci;
    if (!s || id >= s->ntasks || s->st[id] != CK_FETCHING) return;
    if (status == TSR__FETCH_OK && f->data) {
        int rc = write_task(s, id, f->data);
        if (rc) {
            tsr__rt_fail(rt, rc, "%s", rt->c->errmsg);
            return;
        }
        s->st[id] = CK_WRITTEN;
        s->fl[id] &= (uint8_t)~CF_AGAIN;
        s->nwritten++;
        if (s->stream && !(s->fl[id] & CF_KEPT)) {
            if (TSR__GROW(s->rel, s->relcap, s->nrel + 1) < 0) {
                tsr__rt_fail(rt, -ENOMEM, "out of memory");
                return;
            }
            s->rel[s->nrel++] = id;
        }
        pump(rt);
        maybe_complete(rt);
        return;
    }
    const tsr__target *t = &s->t[s->pairs[s->first[id]].target];
    char msg[600];
    if (status == TSR__FETCH_MISSING)
        snprintf(msg, sizeof msg, "chunk %lld of array \"%s\" is no longer held by worker %s",
                 (long long)s->pairs[s->first[id]].ci, target_name(t), f->req.from);
    else
        snprintf(msg, sizeof msg, "cannot fetch chunk %lld of array \"%s\": %s",
                 (long long)s->pairs[s->first[id]].ci, target_name(t), why ? why : "failed");
    if (!s->stream) {
        /* Nothing will report it again: everything was fetched after `finished`. */
        tsr__rt_fail(rt, status == TSR__FETCH_MISSING ? TSR_ECOMPUTE : TSR_ECLOSED, "%s", msg);
        return;
    }
    if (s->fl[id] & CF_AGAIN) {
        /* Reported again meanwhile (made elsewhere): fetch it from there. */
        s->fl[id] &= (uint8_t)~CF_AGAIN;
        enqueue(rt, id);
    } else {
        /* Its worker is most likely lost: the scheduler makes the chunk again and reports it.
         * Until then it waits, for the client's timeout at most (tsr__ostream_tick). */
        s->st[id] = CK_LOST;
        if (s->nlost++ == 0) {
            s->lost_since = tsr__now();
            snprintf(s->lost_why, sizeof s->lost_why, "%s", msg);
        }
    }
    pump(rt);
}

void tsr__ostream_tick(tsr__rt *rt, uint64_t timeout_ms) {
    tsr__ostream *s = rt->store;
    if (!s || s->nlost == 0) return;
    double waited = tsr__now() - s->lost_since;
    if (waited * 1e3 > (double)timeout_ms)
        tsr__rt_fail(rt, TSR_ECLOSED, "%s (and the scheduler did not make it again in %.0f s)",
                     s->lost_why, waited);
}

int tsr__ostream_written(const tsr__ostream *s) {
    return s->nwritten == s->nwanted;
}

int tsr__ostream_commit(tsr_client *c, tsr__ostream *s) {
    if (s->nt == 0) return 0;
    tsr__tmpout **outs = malloc(s->nt * sizeof *outs);
    if (!outs) return tsr__fail(c, -ENOMEM, "out of memory");
    for (size_t k = 0; k < s->nt; k++) outs[k] = &s->t[k].out;
    int rc = tsr__tmpout_commit_all(c, outs, s->nt); /* all of them, or none */
    free(outs);
    return rc;
}

static void free_check(uv_handle_t *h) {
    free(h->data);
}

void tsr__ostream_free(tsr__ostream *s) {
    if (!s) return;
    for (size_t k = 0; k < s->nt; k++) target_free(&s->t[k]);
    free(s->t);
    free(s->st);
    free(s->fl);
    free(s->addr);
    free(s->first);
    free(s->bytes);
    free(s->pairs);
    free(s->queue);
    for (size_t i = 0; i < s->naddrs; i++) free(s->addrs[i]);
    free(s->addrs);
    free(s->rel);
    if (s->check_on) {
        /* The handle lives in the store: the store goes in its close callback. */
        s->check.data = s;
        uv_close((uv_handle_t *)&s->check, free_check);
        tsr__uv_run(&s->c->loop, UV_RUN_NOWAIT);
        return;
    }
    free(s);
}
