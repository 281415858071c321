/* The worker: its loop, the scheduler connection (hello, compute, free, shutdown), the task
 * life cycle (inputs from the store, from tasks still running here, or fetched from peers;
 * then the executor queue; then done/erred) and shutdown. Compute never runs here: ready tasks
 * go to the executors (exec.c) and come back through the completion queue. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "worker/worker.h"

void tsr_worker_options_default(tsr_worker_options *opts) {
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->threads = 1;
    opts->gpu = -1;
    opts->listen_host = "127.0.0.1";
}

static void worker_stop(tsr__worker *w, const char *why);

/* ---- Messages to the scheduler ------------------------------------------------------------- */

static void packer_init(msgpack_sbuffer *sb, msgpack_packer *pk) {
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
}

static void send_sched(tsr__worker *w, msgpack_sbuffer *sb) {
    if (w->sched && !w->sched->closing) {
        int rc = tsr__conn_send(w->sched, sb, NULL, 0, NULL, NULL);
        if (rc < 0)
            tsr__log(&w->log, TSR_LOG_WARN, "send to scheduler failed: %s", tsr_strerror(rc));
    }
    msgpack_sbuffer_destroy(sb);
}

static void send_erred(tsr__worker *w, uint64_t job, uint64_t id, const char *msg) {
    tsr__log(&w->log, TSR_LOG_INFO, "task (%llu,%llu) failed: %s", (unsigned long long)job,
             (unsigned long long)id, msg);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    packer_init(&sb, &pk);
    tsr__mp_pack_type(&pk, 4, "erred");
    tsr__mp_pack_str(&pk, "job");
    msgpack_pack_uint64(&pk, job);
    tsr__mp_pack_str(&pk, "id");
    msgpack_pack_uint64(&pk, id);
    tsr__mp_pack_str(&pk, "msg");
    tsr__mp_pack_str(&pk, msg);
    send_sched(w, &sb);
}

static void pack_hello_common(tsr__worker *w, msgpack_packer *pk, size_t extra, const char *role) {
    const char *token = w->opts->token;
    int has_token = token && token[0];
    tsr__mp_pack_type(pk, 4 + extra + (size_t)has_token, "hello");
    tsr__mp_pack_str(pk, "v");
    msgpack_pack_int(pk, TSR_PROTOCOL_VERSION);
    tsr__mp_pack_str(pk, "role");
    tsr__mp_pack_str(pk, role);
    tsr__mp_pack_str(pk, "name");
    tsr__mp_pack_str(pk, w->name);
    if (has_token) {
        tsr__mp_pack_str(pk, "token");
        tsr__mp_pack_str(pk, token);
    }
}

void tsr__worker_pack_peer_hello(tsr__worker *w, msgpack_sbuffer *sb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_hello_common(w, &pk, 0, "peer");
}

static void send_hello(tsr__worker *w) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    packer_init(&sb, &pk);
    pack_hello_common(w, &pk, 6, "worker");
    tsr__mp_pack_str(&pk, "threads");
    msgpack_pack_int(&pk, w->nexec);
    tsr__mp_pack_str(&pk, "kind");
    tsr__mp_pack_str(&pk, "cpu");
    tsr__mp_pack_str(&pk, "addr");
    tsr__mp_pack_str(&pk, w->peer_addr);
    tsr__mp_pack_str(&pk, "cpus");
    tsr__mp_pack_str(&pk, w->cpus);
    tsr__mp_pack_str(&pk, "mem");
    msgpack_pack_int64(&pk, w->opts->memory_limit > 0 ? w->opts->memory_limit : 0);
    tsr__mp_pack_str(&pk, "pid");
    msgpack_pack_int64(&pk, (int64_t)getpid());
    send_sched(w, &sb);
}

/* ---- Task life cycle ----------------------------------------------------------------------- */

static int add_waiter(wwaiter **arr, size_t *n, size_t *cap, wtask *t, uint32_t idx) {
    if (tsr__grow((void **)arr, cap, *n + 1, sizeof **arr) != 0) return -ENOMEM;
    (*arr)[(*n)++] = (wwaiter){t, idx};
    return 0;
}

static void fetch_release(tsr__worker *w, wfetch *f);

/* Frees a task that is no longer queued, running or waited on by anything. */
static void task_free(tsr__worker *w, wtask *t) {
    for (uint32_t k = 0; k < t->nin; k++) {
        tsr__buf_unref(t->in[k].buf);
        if (t->in[k].fetch) fetch_release(w, t->in[k].fetch);
    }
    if (t->mapped) tsr__kmap_del(&w->pending, t->job, t->id);
    tsr__buf_unref(t->out);
    if (t->all_prev)
        t->all_prev->all_next = t->all_next;
    else if (w->all == t)
        w->all = t->all_next;
    if (t->all_next) t->all_next->all_prev = t->all_prev;
    free(t->in);
    free(t->deps);
    free(t->ip);
    free(t->fp);
    free(t->sp);
    free(t);
}

static void input_failed(tsr__worker *w, wtask *t, uint32_t idx, const char *msg);

/* Sends erred once and fails every task here that waits for this one's chunk. */
static void task_fail(tsr__worker *w, wtask *t, const char *msg) {
    if (t->failed) return;
    t->failed = 1;
    send_erred(w, t->job, t->id, msg);
    if (t->mapped) {
        tsr__kmap_del(&w->pending, t->job, t->id);
        t->mapped = 0;
    }
    wwaiter *deps = t->deps;
    size_t n = t->ndeps;
    t->deps = NULL;
    t->ndeps = t->deps_cap = 0;
    char why[128];
    snprintf(why, sizeof why, "input (%llu,%llu) failed", (unsigned long long)t->job,
             (unsigned long long)t->id);
    for (size_t k = 0; k < n; k++) input_failed(w, deps[k].t, deps[k].idx, why);
    free(deps);
}

/* One fewer input missing: a task with none left goes to the executors (or, failed, away). */
static void task_settle(tsr__worker *w, wtask *t) {
    if (--t->missing > 0) return;
    if (t->failed)
        task_free(w, t);
    else
        tsr__exec_push(w, t);
}

static void input_failed(tsr__worker *w, wtask *t, uint32_t idx, const char *msg) {
    (void)idx;
    task_fail(w, t, msg);
    task_settle(w, t);
}

static void input_ready(tsr__worker *w, wtask *t, uint32_t idx, tsr__buf *buf, uint8_t dtype,
                        uint8_t ndim, const int64_t *shape) {
    wtask_in *in = &t->in[idx];
    in->buf = tsr__buf_ref(buf);
    in->dtype = dtype;
    in->ndim = ndim;
    memcpy(in->shape, shape, sizeof in->shape);
    task_settle(w, t);
}

static void fetch_free(wfetch *f) {
    tsr__buf_unref(f->buf);
    free(f->waiters);
    free(f);
}

/* A task input stops using a fetched copy; the last user drops it (it is not ours to keep:
 * the scheduler never heard that we hold it). */
static void fetch_release(tsr__worker *w, wfetch *f) {
    if (--f->users > 0 || f->state != FETCH_READY) return;
    if (tsr__kmap_get(&w->fetched, f->job, f->id) == f) tsr__kmap_del(&w->fetched, f->job, f->id);
    fetch_free(f);
}

void tsr__worker_fetch_done(tsr__worker *w, wfetch *f) {
    tsr__log(&w->log, TSR_LOG_DEBUG, "fetched (%llu,%llu): %zu bytes", (unsigned long long)f->job,
             (unsigned long long)f->id, f->buf->size);
    wwaiter *ws = f->waiters;
    size_t n = f->nwaiters;
    f->waiters = NULL;
    f->nwaiters = f->waiters_cap = 0;
    /* Hold the copy while handing it out: a failed waiter may be freed (and release it)
     * inside the loop. */
    f->users++;
    for (size_t k = 0; k < n; k++)
        input_ready(w, ws[k].t, ws[k].idx, f->buf, f->dtype, f->ndim, f->shape);
    free(ws);
    fetch_release(w, f);
}

void tsr__worker_fetch_failed(tsr__worker *w, wfetch *f, const char *why) {
    if (tsr__kmap_get(&w->fetched, f->job, f->id) == f) tsr__kmap_del(&w->fetched, f->job, f->id);
    /* The waiters no longer count as users of this entry, which goes now. */
    for (size_t k = 0; k < f->nwaiters; k++) f->waiters[k].t->in[f->waiters[k].idx].fetch = NULL;
    wwaiter *ws = f->waiters;
    size_t n = f->nwaiters;
    f->waiters = NULL;
    f->nwaiters = 0;
    char msg[300];
    snprintf(msg, sizeof msg, "could not fetch input (%llu,%llu): %s", (unsigned long long)f->job,
             (unsigned long long)f->id, why);
    fetch_free(f);
    for (size_t k = 0; k < n; k++) input_failed(w, ws[k].t, ws[k].idx, msg);
    free(ws);
}

/* Makes input k of t available now or registers where it will come from. */
static void task_attach_input(tsr__worker *w, wtask *t, uint32_t k, const msgpack_object *addr) {
    wtask_in *in = &t->in[k];
    char msg[200];
    const tsr__chunk *ch = tsr__store_get(&w->store, in->job, in->id);
    if (ch) {
        input_ready(w, t, k, ch->buf, ch->dtype, ch->ndim, ch->shape);
        return;
    }
    if (addr->type == MSGPACK_OBJECT_NIL) {
        /* Not stored yet, but maybe still being computed here (a chain sent in one batch). */
        wtask *prod = tsr__kmap_get(&w->pending, in->job, in->id);
        if (prod && add_waiter(&prod->deps, &prod->ndeps, &prod->deps_cap, t, k) == 0) return;
        snprintf(msg, sizeof msg, "input (%llu,%llu) is not on this worker",
                 (unsigned long long)in->job, (unsigned long long)in->id);
        input_failed(w, t, k, msg);
        return;
    }
    char where[80];
    memcpy(where, addr->via.str.ptr, addr->via.str.size); /* size checked by the parser */
    where[addr->via.str.size] = '\0';
    wfetch *f = tsr__kmap_get(&w->fetched, in->job, in->id);
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f || tsr__kmap_put(&w->fetched, in->job, in->id, f, NULL) != 0) {
            free(f);
            input_failed(w, t, k, "no memory for a fetch");
            return;
        }
        f->job = in->job;
        f->id = in->id;
        int rc = tsr__peer_fetch(w, f, where);
        if (rc < 0) {
            tsr__worker_fetch_failed(w, f, tsr_strerror(rc));
            snprintf(msg, sizeof msg, "could not fetch input (%llu,%llu) from %s: %s",
                     (unsigned long long)in->job, (unsigned long long)in->id, where,
                     tsr_strerror(rc));
            input_failed(w, t, k, msg);
            return;
        }
    }
    f->users++;
    in->fetch = f;
    if (f->state == FETCH_READY) {
        input_ready(w, t, k, f->buf, f->dtype, f->ndim, f->shape);
    } else if (add_waiter(&f->waiters, &f->nwaiters, &f->waiters_cap, t, k) != 0) {
        in->fetch = NULL;
        f->users--;
        input_failed(w, t, k, "no memory for a fetch");
    }
}

/* Copies the descriptor's parameters so the task outlives the compute message. */
static int task_set_kdesc(wtask *t, const tsr_kdesc *d) {
    t->d = *d;
    t->d.i = NULL;
    t->d.f = NULL;
    t->d.s = NULL;
    if (d->ni) {
        if (!(t->ip = malloc(d->ni * sizeof *t->ip))) return -ENOMEM;
        memcpy(t->ip, d->i, d->ni * sizeof *t->ip);
        t->d.i = t->ip;
    }
    if (d->nf) {
        if (!(t->fp = malloc(d->nf * sizeof *t->fp))) return -ENOMEM;
        memcpy(t->fp, d->f, d->nf * sizeof *t->fp);
        t->d.f = t->fp;
    }
    if (d->s) {
        if (!(t->sp = strdup(d->s))) return -ENOMEM;
        t->d.s = t->sp;
    }
    return 0;
}

/* Decodes a kdesc (a msgpack bin holding tsr__kdesc_pack's encoding) into t. */
static int task_decode(wtask *t, const msgpack_object *kobj) {
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    const msgpack_object *o = kobj;
    int rc = TSR_EPROTOCOL;
    if (kobj->type == MSGPACK_OBJECT_BIN) {
        size_t off = 0;
        if (msgpack_unpack_next(&up, kobj->via.bin.ptr, kobj->via.bin.size, &off) !=
                MSGPACK_UNPACK_SUCCESS ||
            off != kobj->via.bin.size)
            goto out;
        o = &up.data;
    }
    tsr_kdesc d;
    int64_t *ib = NULL;
    double *fb = NULL;
    memset(&d, 0, sizeof d);
    rc = tsr__kdesc_unpack(o, &d, &ib, &fb);
    if (rc == 0) rc = task_set_kdesc(t, &d);
    tsr__kdesc_unpack_free(ib, fb);
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}

static void task_start(tsr__worker *w, uint64_t job, const msgpack_object *to) {
    const msgpack_object *f = to->via.array.ptr;
    uint64_t id = f[0].via.u64;
    const msgpack_object *ins = &f[2];
    if (tsr__kmap_get(&w->pending, job, id)) {
        tsr__log(&w->log, TSR_LOG_WARN, "task (%llu,%llu) sent twice; ignoring the repeat",
                 (unsigned long long)job, (unsigned long long)id);
        return;
    }
    wtask *t = calloc(1, sizeof *t);
    if (!t) {
        send_erred(w, job, id, "no memory for the task");
        return;
    }
    t->job = job;
    t->id = id;
    int rc = task_decode(t, &f[1]);
    if (rc == 0 && ins->via.array.size > 0 && !(t->in = calloc(ins->via.array.size, sizeof *t->in)))
        rc = -ENOMEM;
    if (rc != 0) {
        send_erred(w, job, id,
                   rc == -ENOMEM ? "no memory for the task" : "malformed kernel descriptor");
        task_free(w, t);
        return;
    }
    t->nin = ins->via.array.size;
    t->all_next = w->all;
    if (w->all) w->all->all_prev = t;
    w->all = t;
    /* One extra count while inputs are attached, so the task cannot start (or go) midway. */
    t->missing = t->nin + 1;
    for (uint32_t k = 0; k < t->nin; k++) {
        const msgpack_object *io = ins->via.array.ptr[k].via.array.ptr;
        t->in[k].job = job;
        t->in[k].id = io[0].via.u64;
    }
    for (uint32_t k = 0; k < t->nin; k++)
        task_attach_input(w, t, k, &ins->via.array.ptr[k].via.array.ptr[1]);
    if (!t->failed) {
        if (tsr__kmap_put(&w->pending, job, id, t, NULL) == 0)
            t->mapped = 1;
        else
            task_fail(w, t, "no memory for the task");
    }
    task_settle(w, t);
}

static int is_uint(const msgpack_object *o) {
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
}

/* Checks a compute message's shape completely before acting on any of it. */
static const char *compute_check(const msgpack_object *hdr, uint64_t *job,
                                 const msgpack_object **tasks) {
    const msgpack_object *jo = tsr__mp_get(hdr, "job");
    const msgpack_object *to = tsr__mp_get(hdr, "tasks");
    if (!jo || !is_uint(jo)) return "compute without a job";
    if (!to || to->type != MSGPACK_OBJECT_ARRAY) return "compute without tasks";
    for (uint32_t i = 0; i < to->via.array.size; i++) {
        const msgpack_object *t = &to->via.array.ptr[i];
        if (t->type != MSGPACK_OBJECT_ARRAY || t->via.array.size != 3) return "malformed task";
        const msgpack_object *f = t->via.array.ptr;
        if (!is_uint(&f[0])) return "malformed task id";
        if (f[1].type != MSGPACK_OBJECT_BIN && f[1].type != MSGPACK_OBJECT_ARRAY)
            return "malformed kernel descriptor";
        if (f[2].type != MSGPACK_OBJECT_ARRAY) return "malformed task inputs";
        for (uint32_t k = 0; k < f[2].via.array.size; k++) {
            const msgpack_object *in = &f[2].via.array.ptr[k];
            if (in->type != MSGPACK_OBJECT_ARRAY || in->via.array.size != 2 ||
                !is_uint(&in->via.array.ptr[0]))
                return "malformed task input";
            const msgpack_object *a = &in->via.array.ptr[1];
            if (a->type != MSGPACK_OBJECT_NIL &&
                (a->type != MSGPACK_OBJECT_STR || a->via.str.size == 0 || a->via.str.size >= 80))
                return "malformed input address";
        }
    }
    *job = jo->via.u64;
    *tasks = to;
    return NULL;
}

static void on_compute(tsr__worker *w, const msgpack_object *hdr) {
    uint64_t job = 0;
    const msgpack_object *tasks = NULL;
    const char *why = compute_check(hdr, &job, &tasks);
    if (why) {
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler sent a bad compute: %s", why);
        tsr__conn_close(w->sched, why);
        return;
    }
    /* FIFO in the scheduler's order: it sends tasks by priority. */
    for (uint32_t i = 0; i < tasks->via.array.size && !w->stopping; i++)
        task_start(w, job, &tasks->via.array.ptr[i]);
}

static void on_free(tsr__worker *w, const msgpack_object *hdr) {
    const msgpack_object *ko = tsr__mp_get(hdr, "keys");
    if (!ko || ko->type != MSGPACK_OBJECT_ARRAY) goto bad;
    for (uint32_t i = 0; i < ko->via.array.size; i++) {
        const msgpack_object *k = &ko->via.array.ptr[i];
        if (k->type != MSGPACK_OBJECT_ARRAY || k->via.array.size != 2 ||
            !is_uint(&k->via.array.ptr[0]) || !is_uint(&k->via.array.ptr[1]))
            goto bad;
    }
    size_t dropped = 0;
    for (uint32_t i = 0; i < ko->via.array.size; i++) {
        const msgpack_object *k = ko->via.array.ptr[i].via.array.ptr;
        dropped += (size_t)tsr__store_drop(&w->store, k[0].via.u64, k[1].via.u64);
    }
    tsr__log(&w->log, TSR_LOG_DEBUG, "freed %zu of %u chunks; holding %llu bytes", dropped,
             ko->via.array.size, (unsigned long long)w->store.bytes);
    if (w->over_limit && w->opts->memory_limit > 0 &&
        w->store.bytes <= (uint64_t)w->opts->memory_limit)
        w->over_limit = 0;
    return;
bad:
    tsr__log(&w->log, TSR_LOG_ERROR, "scheduler sent a malformed free");
    tsr__conn_close(w->sched, "malformed free");
}

/* Executors finished some tasks: store the chunks, wake the tasks waiting for them, and report
 * everything in one done message (and one erred per failure). */
typedef struct done_item {
    uint64_t job, id, nbytes;
    double seconds;
} done_item;

static void on_async(uv_async_t *a) {
    tsr__worker *w = a->data;
    wtask *list = tsr__exec_take_done(w);
    done_item *items = NULL;
    size_t n = 0, cap = 0;
    while (list) {
        wtask *t = list;
        list = t->qnext;
        t->qnext = NULL;
        if (t->rc != 0) {
            task_fail(w, t, t->msg);
            task_free(w, t);
            continue;
        }
        tsr__buf *out = t->out;
        t->out = NULL;
        uint64_t nbytes = out->size;
        if (tsr__store_put(&w->store, t->job, t->id, out, t->d.dtype, t->d.ndim, t->d.shape) != 0 ||
            TSR__GROW(items, cap, n + 1) != 0) {
            tsr__store_drop(&w->store, t->job, t->id);
            task_fail(w, t, "no memory to keep the result");
            task_free(w, t);
            continue;
        }
        items[n++] = (done_item){t->job, t->id, nbytes, t->seconds};
        if (t->mapped) {
            tsr__kmap_del(&w->pending, t->job, t->id);
            t->mapped = 0;
        }
        const tsr__chunk *ch = tsr__store_get(&w->store, t->job, t->id);
        for (size_t k = 0; k < t->ndeps; k++)
            input_ready(w, t->deps[k].t, t->deps[k].idx, ch->buf, ch->dtype, ch->ndim, ch->shape);
        task_free(w, t);
    }
    if (w->opts->memory_limit > 0 && w->store.bytes > (uint64_t)w->opts->memory_limit &&
        !w->over_limit) {
        w->over_limit = 1;
        tsr__log(&w->log, TSR_LOG_WARN, "holding %llu bytes, over the memory limit of %lld",
                 (unsigned long long)w->store.bytes, (long long)w->opts->memory_limit);
    }
    if (n > 0) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        packer_init(&sb, &pk);
        tsr__mp_pack_type(&pk, 2, "done");
        tsr__mp_pack_str(&pk, "items");
        msgpack_pack_array(&pk, n);
        for (size_t i = 0; i < n; i++) {
            msgpack_pack_array(&pk, 4);
            msgpack_pack_uint64(&pk, items[i].job);
            msgpack_pack_uint64(&pk, items[i].id);
            msgpack_pack_uint64(&pk, items[i].nbytes);
            msgpack_pack_double(&pk, items[i].seconds);
        }
        send_sched(w, &sb);
    }
    free(items);
}

/* ---- Scheduler connection ------------------------------------------------------------------ */

static void sched_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    tsr__worker *w = c->owner;
    (void)payload;
    (void)plen;
    char type[32];
    if (tsr__mp_type(hdr, type, sizeof type) != 0) {
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler sent a frame without a type");
        tsr__conn_close(c, "frame without a type");
        return;
    }
    if (!w->welcomed) {
        if (strcmp(type, "welcome") == 0) {
            w->welcomed = 1;
            tsr__log(&w->log, TSR_LOG_INFO, "connected to scheduler %s; peers reach us at %s",
                     w->opts->scheduler, w->peer_addr);
            if (w->opts->on_ready) w->opts->on_ready(w->peer_addr, w->opts->user);
            return;
        }
        char msg[200] = "unexpected reply to hello";
        if (strcmp(type, "error") == 0) tsr__mp_get_str(hdr, "msg", msg, sizeof msg);
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler %s refused us: %s", w->opts->scheduler, msg);
        w->exit_code = strstr(msg, "version")                        ? TSR_EVERSION
                       : strstr(msg, "token") || strstr(msg, "auth") ? TSR_EAUTH
                                                                     : TSR_EPROTOCOL;
        tsr__conn_close(c, "refused");
        return;
    }
    if (strcmp(type, "compute") == 0) {
        on_compute(w, hdr);
    } else if (strcmp(type, "free") == 0) {
        on_free(w, hdr);
    } else if (strcmp(type, "shutdown") == 0) {
        worker_stop(w, "the scheduler asked us to shut down");
    } else {
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler sent an unknown message \"%s\"", type);
        tsr__conn_close(c, "unknown message");
    }
}

static void sched_on_connect(tsr__conn *c, int status) {
    tsr__worker *w = c->owner;
    if (status < 0) {
        tsr__log(&w->log, TSR_LOG_ERROR, "cannot reach the scheduler at %s: %s", w->opts->scheduler,
                 uv_strerror(status));
        if (w->exit_code == 0) w->exit_code = status;
        return; /* on_close follows */
    }
    send_hello(w);
}

static void sched_on_close(tsr__conn *c, int status, const char *reason) {
    tsr__worker *w = c->owner;
    w->sched = NULL;
    if (!w->welcomed && w->exit_code == 0) {
        w->exit_code = status < 0 ? status : TSR_ECLOSED;
        tsr__log(&w->log, TSR_LOG_ERROR, "scheduler %s closed before welcoming us: %s",
                 w->opts->scheduler, reason);
    } else if (!w->stopping) {
        tsr__log(&w->log, TSR_LOG_INFO, "scheduler connection closed: %s", reason);
    }
    worker_stop(w, "the scheduler connection closed");
}

static const tsr__conn_cbs sched_cbs = {
    .on_frame = sched_on_frame,
    .on_close = sched_on_close,
    .on_connect = sched_on_connect,
};

/* ---- Start and stop ------------------------------------------------------------------------ */

static void on_signal(uv_signal_t *s, int signum) {
    tsr__worker *w = s->data;
    tsr__log(&w->log, TSR_LOG_INFO, "%s: stopping", signum == SIGINT ? "SIGINT" : "SIGTERM");
    worker_stop(w, "signal");
}

/* Stops taking work, lets each executor finish its current task (queued ones are abandoned)
 * and closes every handle; uv_run then returns. */
static void worker_stop(tsr__worker *w, const char *why) {
    if (w->stopping) return;
    w->stopping = 1;
    tsr__log(&w->log, TSR_LOG_INFO, "stopping: %s", why);
    if (w->sync_ok) tsr__exec_stop(w);
    if (w->sched) tsr__conn_close(w->sched, "worker stopping");
    if (w->server_ok) uv_close((uv_handle_t *)&w->server, NULL);
    if (w->async_ok) uv_close((uv_handle_t *)&w->async, NULL);
    if (w->sig_ok) {
        uv_close((uv_handle_t *)&w->sigint, NULL);
        uv_close((uv_handle_t *)&w->sigterm, NULL);
    }
    w->server_ok = w->async_ok = w->sig_ok = 0;
    tsr__peer_close_all(w);
}

/* Decides every executor's core and the hello's cpus string. */
static int setup_topology(tsr__worker *w) {
    const tsr_worker_options *o = w->opts;
    if (hwloc_topology_init(&w->topo) < 0) return TSR_EINVALID;
    w->topo_ok = 1;
    if (hwloc_topology_load(w->topo) < 0) {
        tsr__log(&w->log, TSR_LOG_ERROR, "hwloc could not read the machine's topology");
        return TSR_EINVALID;
    }
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    hwloc_bitmap_t all = hwloc_bitmap_alloc();
    int rc = set && all ? 0 : -ENOMEM;
    if (rc == 0 && (rc = tsr__worker_cpuset(w->topo, o->cpus, set)) != 0)
        tsr__log(&w->log, TSR_LOG_ERROR, "bad cpu set \"%s\": no usable cores in it",
                 o->cpus ? o->cpus : "(all)");
    for (int k = 0; rc == 0 && k < w->nexec; k++) {
        wexec *e = &w->execs[k];
        e->w = w;
        e->k = k;
        if (!(e->set = hwloc_bitmap_alloc())) rc = -ENOMEM;
        if (rc == 0) rc = tsr__worker_pick_core(w->topo, set, k, e->set);
        if (rc == 0) hwloc_bitmap_or(all, all, e->set);
    }
    if (rc == 0) {
        hwloc_bitmap_list_snprintf(w->cpus, sizeof w->cpus, all);
        tsr__log(&w->log, TSR_LOG_INFO, "%d executor thread(s) on cpus %s", w->nexec, w->cpus);
    }
    hwloc_bitmap_free(set);
    hwloc_bitmap_free(all);
    return rc;
}

static int worker_start(tsr__worker *w) {
    const tsr_worker_options *o = w->opts;
    int rc = setup_topology(w);
    if (rc) return rc;
    if (pthread_mutex_init(&w->qmu, NULL) != 0) return -ENOMEM;
    pthread_mutex_init(&w->cmu, NULL);
    pthread_cond_init(&w->qcv, NULL);
    w->sync_ok = 1;

    if ((rc = uv_loop_init(&w->loop)) != 0) return rc;
    w->loop_ok = 1;
    if ((rc = uv_async_init(&w->loop, &w->async, on_async)) != 0) return rc;
    w->async.data = w;
    w->async_ok = 1;
    uv_signal_init(&w->loop, &w->sigint);
    uv_signal_init(&w->loop, &w->sigterm);
    w->sigint.data = w->sigterm.data = w;
    w->sig_ok = 1;
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);

    if ((rc = uv_tcp_init(&w->loop, &w->server)) != 0) return rc;
    w->server.data = w;
    w->server_ok = 1;
    const char *host = o->listen_host && o->listen_host[0] ? o->listen_host : "127.0.0.1";
    char laddr[96];
    snprintf(laddr, sizeof laddr, strchr(host, ':') ? "[%s]:0" : "%s:0", host);
    rc = tsr__listen(&w->server, laddr, tsr__peer_on_connection, w->peer_addr, sizeof w->peer_addr);
    if (rc) {
        tsr__log(&w->log, TSR_LOG_ERROR, "cannot listen for peers on %s: %s", laddr,
                 tsr_strerror(rc));
        return rc;
    }

    tsr__kernels_init_threads(1);
    if ((rc = tsr__exec_start(w)) != 0) return rc;

    if (!(w->sched = tsr__conn_new(&w->loop, &sched_cbs, w, &w->log))) return -ENOMEM;
    /* The scheduler sends no payloads to workers. */
    w->sched->max_payload = 0;
    rc = tsr__conn_connect(w->sched, o->scheduler);
    if (rc) {
        tsr__log(&w->log, TSR_LOG_ERROR, "cannot reach the scheduler at %s: %s", o->scheduler,
                 tsr_strerror(rc));
        w->exit_code = rc;
        return rc;
    }
    return 0;
}

static void worker_cleanup(tsr__worker *w) {
    while (w->all) task_free(w, w->all); /* queued, waiting or finished-but-undrained */
    w->qhead = w->qtail = w->chead = w->ctail = NULL;
    for (size_t i = 0; i < w->fetched.cap; i++)
        if (w->fetched.slots[i].val) fetch_free(w->fetched.slots[i].val);
    tsr__kmap_free(&w->fetched);
    tsr__kmap_free(&w->pending);
    tsr__store_free(&w->store);
    if (w->sync_ok) {
        pthread_mutex_destroy(&w->qmu);
        pthread_mutex_destroy(&w->cmu);
        pthread_cond_destroy(&w->qcv);
    }
    for (int k = 0; k < w->nexec; k++) hwloc_bitmap_free(w->execs[k].set);
    free(w->execs);
    if (w->topo_ok) hwloc_topology_destroy(w->topo);
}

int tsr_worker_run(const tsr_worker_options *opts) {
    tsr__logger early = {"worker", TSR_LOG_WARN};
    if (!opts || !opts->scheduler || !opts->scheduler[0]) {
        tsr__log(&early, TSR_LOG_ERROR, "no scheduler address given");
        return TSR_EINVALID;
    }
    if (opts->gpu >= 0) {
        tsr__log(&early, TSR_LOG_ERROR,
                 "GPU workers are not implemented yet (asked for GPU %d); run a CPU worker",
                 opts->gpu);
        return TSR_EUNSUPPORTED;
    }
    tsr__worker *w = calloc(1, sizeof *w);
    if (!w) return -ENOMEM;
    w->opts = opts;
    if (opts->name && opts->name[0]) {
        snprintf(w->name, sizeof w->name, "%s", opts->name);
    } else {
        char host[48] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(w->name, sizeof w->name, "%s-%ld", host, (long)getpid());
    }
    snprintf(w->who, sizeof w->who, "worker %s", w->name);
    w->log.who = w->who;
    w->log.level = opts->verbose > 1 ? TSR_LOG_DEBUG : opts->verbose ? TSR_LOG_INFO : TSR_LOG_WARN;
    w->nexec = opts->threads > 0 ? opts->threads : 1;
    tsr__store_init(&w->store);
    tsr__kmap_init(&w->pending);
    tsr__kmap_init(&w->fetched);

    int rc = (w->execs = calloc((size_t)w->nexec, sizeof *w->execs)) ? worker_start(w) : -ENOMEM;
    if (rc != 0 && w->exit_code == 0) w->exit_code = rc;
    if (rc != 0) worker_stop(w, "start-up failed");
    if (w->loop_ok) {
        uv_run(&w->loop, UV_RUN_DEFAULT);
        /* Executors are joined; nothing else can be running. */
        int lrc = uv_loop_close(&w->loop);
        if (lrc != 0) {
            tsr__log(&w->log, TSR_LOG_ERROR, "event loop still had handles at exit: %s",
                     uv_strerror(lrc));
            if (w->exit_code == 0) w->exit_code = lrc;
        }
    }
    rc = w->exit_code;
    tsr__log(&w->log, TSR_LOG_INFO, "stopped (peak %llu bytes held)",
             (unsigned long long)w->store.peak);
    worker_cleanup(w);
    free(w);
    return rc;
}
