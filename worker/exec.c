/* Executor threads: each is pinned to one core, pops ready tasks in FIFO order, runs the kernel
 * and hands results back to the loop through the completion queue and uv_async_send. They never
 * touch the loop, the store, any connection or any reference count; a task's inputs are
 * references the loop took before queueing it.
 *
 * Both hand-overs are batched, because tiny tasks take well under a microsecond while a futex
 * wake or an eventfd write costs several: the loop queues a whole turn's ready tasks under one
 * lock and wakes only idle executors, and an executor reports its finished tasks when its queue
 * runs dry, when they have waited PUBLISH_AFTER, or before it starts a task that may be long. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "worker/worker.h"

#define PUBLISH_AFTER 50e-6   /* seconds since the oldest unreported task started */
#define PUBLISH_COUNT 256     /* or this many unreported tasks */
#define LONG_BYTES (64 << 10) /* tasks with outputs this big may run long: report first */

/* Every buffer the kernel is given holds exactly what its shape and dtype say (a kernel trusts
 * its views: a chunk whose bytes disagree with its shape would be read or written past its
 * end). Chunks are checked where they enter the worker (a fetched payload against its header,
 * a made one against its descriptor); this is the last line, before any kernel touches them. */
int tsr__exec_check_buffers(const wtask *t, char *msg, size_t size) {
    for (uint32_t k = 0; k < t->nin; k++) {
        const wtask_in *in = &t->in[k];
        uint64_t n = tsr_dtype_size((tsr_dtype)in->dtype);
        for (int a = 0; a < in->ndim && a < TSR_MAX_NDIM; a++) {
            if (in->shape[a] < 0 || (in->shape[a] && n > UINT64_MAX / (uint64_t)in->shape[a]))
                n = UINT64_MAX;
            else
                n *= (uint64_t)in->shape[a];
        }
        if (in->ndim > TSR_MAX_NDIM || n != in->buf->size) {
            snprintf(msg, size, "input %u: a chunk of %zu bytes does not hold its shape and dtype",
                     k, in->buf->size);
            return TSR_EINVALID;
        }
    }
    if (t->out && t->out->size < tsr__kdesc_nbytes(&t->kd->d)) {
        snprintf(msg, size, "the output buffer (%zu bytes) is smaller than the chunk",
                 t->out->size);
        return TSR_EINVALID;
    }
    return 0;
}

/* Runs t's kernel; t->rc, and on failure t->err, say how it went. The message buffer is the
 * thread's, not the task's: a task record stays small, since thousands may be live. */
void tsr__exec_run_host(tsr__worker *w, wtask *t) {
    const tsr_kdesc *d = &t->kd->d;
    char msg[256];
    tsr_chunkview in[16];
    tsr_chunkview *ins = in;
    tsr_chunkview *heap = NULL;
    msg[0] = '\0';
    /* Test-only fault injection (tsr_worker_options.fault_kill_kernel): the process dies here
     * as it would of a crash in the kernel, with the task running. */
    const char *fault = w->opts->fault_kill_kernel;
    if (fault && strcmp(fault, tsr__kop_name(d->kop)) == 0) kill(getpid(), SIGKILL);
    if (t->nin > TSR__ARRAY_LEN(in)) {
        heap = malloc(t->nin * sizeof *heap);
        if (!heap) {
            t->rc = -ENOMEM;
            snprintf(msg, sizeof msg, "no memory for %u inputs", t->nin);
            goto out;
        }
        ins = heap;
    }
    for (uint32_t k = 0; k < t->nin; k++) {
        ins[k].data = t->in[k].buf->data;
        ins[k].dtype = t->in[k].dtype;
        ins[k].ndim = t->in[k].ndim;
        memcpy(ins[k].shape, t->in[k].shape, sizeof ins[k].shape);
    }
    /* Small outputs and donated inputs' buffers arrive as t->out already (task.c). */
    if (!t->out) {
        uint64_t nbytes = tsr__kdesc_nbytes(d);
        t->out = nbytes <= SIZE_MAX ? tsr__chunkmem_new(&w->mem, (size_t)nbytes) : NULL;
        if (!t->out) {
            t->rc = -ENOMEM;
            snprintf(msg, sizeof msg, "no memory for an output chunk of %llu bytes",
                     (unsigned long long)nbytes);
            goto out;
        }
    }
    if ((t->rc = tsr__exec_check_buffers(t, msg, sizeof msg)) != 0) goto out;
    /* A load reads only under the data roots, and only the file its task describes. */
    if (d->kop == TSR_KOP_LOAD && (t->rc = tsr__roots_check_load(w, d, msg, sizeof msg)) != 0)
        goto out;
    /* A user kernel is looked up in this worker's plugin directories, never anywhere a task
     * says; the kernel then calls what the descriptor copy hands it (kernels stay pure). */
    tsr_kdesc dp;
    if (d->kop == TSR_KOP_MAP_BLOCKS) {
        dp = *d;
        if ((t->rc = tsr__plugins_resolve(w, d->s, &dp.plugin, msg, sizeof msg)) != 0) goto out;
        d = &dp;
    }
    tsr_chunkview out;
    out.data = t->out->data;
    out.dtype = d->dtype;
    out.ndim = d->ndim;
    memcpy(out.shape, d->shape, sizeof out.shape);
    t->rc = tsr__kernel_run(d, ins, (int)t->nin, &out, TSR_DEVICE_CPU, msg, sizeof msg);
out:
    free(heap);
    if (t->rc != 0) {
        if (msg[0] == '\0') snprintf(msg, sizeof msg, "%s", tsr_strerror(t->rc));
        t->err = strdup(msg); /* NULL: the loop falls back to tsr_strerror(rc) */
    }
}

static int may_run_long(const wtask *t) {
    const tsr_kdesc *d = &t->kd->d;
    return tsr__kop_has(d->kop, TSR__KOP_LONG) || tsr__kdesc_nbytes(d) >= LONG_BYTES;
}

/* Hands an executor's finished tasks to the loop. */
void tsr__exec_publish(tsr__worker *w, wtask **head, wtask **tail) {
    if (!*head) return;
    pthread_mutex_lock(&w->cmu);
    if (w->ctail)
        w->ctail->qnext = *head;
    else
        w->chead = *head;
    w->ctail = *tail;
    pthread_mutex_unlock(&w->cmu);
    *head = *tail = NULL;
    /* Coalesces: the loop drains the whole completion queue per callback. */
    uv_async_send(&w->async);
}

static void *exec_main(void *arg) {
    wexec *e = arg;
    tsr__worker *w = e->w;
    wtask *dhead = NULL, *dtail = NULL; /* finished, not yet reported */
    size_t ndone = 0;
    double oldest = 0; /* when the oldest unreported task started */
    /* Back to back, a task starts when the previous one ended: one clock read per task. */
    double last = 0;
    int have_last = 0;
    pthread_mutex_lock(&w->qmu);
    for (;;) {
        while (!w->qstop && !w->qhead) {
            have_last = 0;
            if (dhead) {
                /* Never sleep on results the loop has not seen. */
                pthread_mutex_unlock(&w->qmu);
                tsr__exec_publish(w, &dhead, &dtail);
                ndone = 0;
                pthread_mutex_lock(&w->qmu);
                continue;
            }
            w->qidle++;
            pthread_cond_wait(&w->qcv, &w->qmu);
            w->qidle--;
        }
        if (w->qstop) break;
        wtask *t = w->qhead;
        w->qhead = t->qnext;
        if (!w->qhead) w->qtail = NULL;
        pthread_mutex_unlock(&w->qmu);
        t->qnext = NULL;

        if (dhead && may_run_long(t)) {
            tsr__exec_publish(w, &dhead, &dtail);
            ndone = 0;
            have_last = 0;
        }
        double t0 = have_last ? last : tsr__now();
        tsr__exec_run_host(w, t);
        double t1 = tsr__now();
        /* Where and when it ran, for a trace: the loop turns t0 into wall clock time for traced
         * jobs only, so an untraced task costs two stores and no clock read. */
        t->t0 = t0;
        t->thread = (uint16_t)e->k;
        t->seconds = t1 - t0;
        last = t1;
        have_last = 1;
        if (dtail)
            dtail->qnext = t;
        else
            dhead = t;
        dtail = t;
        if (ndone++ == 0) oldest = t0;
        if (ndone >= PUBLISH_COUNT || t1 - oldest >= PUBLISH_AFTER) {
            tsr__exec_publish(w, &dhead, &dtail);
            ndone = 0;
            have_last = 0;
        }
        pthread_mutex_lock(&w->qmu);
    }
    pthread_mutex_unlock(&w->qmu);
    /* The async handle is closed only after every executor is joined. */
    tsr__exec_publish(w, &dhead, &dtail);
    return NULL;
}

int tsr__exec_start(tsr__worker *w) {
    if (w->gpu) return tsr__gpu_start(w);
    for (int k = 0; k < w->nexec; k++) {
        wexec *e = &w->execs[k];
        int rc = pthread_create(&e->th, NULL, exec_main, e);
        if (rc != 0) {
            tsr__log(&w->log, TSR_LOG_ERROR, "cannot start executor thread %d: %s", k,
                     strerror(rc));
            return -rc;
        }
        e->started = 1;
        /* Named and pinned from here, so both hold by the time the worker says it is ready
         * (the thread itself might not have run yet). */
        char name[32];
        snprintf(name, sizeof name, "tsr-exec-%d", k);
        name[15] = '\0'; /* the kernel's limit */
        pthread_setname_np(e->th, name);
        if (hwloc_set_thread_cpubind(w->topo, e->th, e->set, 0) < 0) {
            char *s = NULL;
            hwloc_bitmap_list_asprintf(&s, e->set);
            tsr__log(&w->log, TSR_LOG_WARN, "could not pin executor %d to cpus %s: %s", k,
                     s ? s : "?", strerror(errno));
            free(s);
        }
    }
    return 0;
}

void tsr__exec_stop(tsr__worker *w) {
    pthread_mutex_lock(&w->qmu);
    w->qstop = 1;
    pthread_cond_broadcast(&w->qcv);
    pthread_mutex_unlock(&w->qmu);
    for (int k = 0; k < w->nexec; k++) {
        if (!w->execs[k].started) continue;
        pthread_join(w->execs[k].th, NULL);
        w->execs[k].started = 0;
    }
}

void tsr__exec_push(tsr__worker *w, wtask *t) {
    t->qnext = NULL;
    if (w->rq_tail)
        w->rq_tail->qnext = t;
    else
        w->rq_head = t;
    w->rq_tail = t;
    w->nrq++;
    w->nbusy++;
}

void tsr__exec_flush(tsr__worker *w) {
    if (!w->rq_head) return;
    pthread_mutex_lock(&w->qmu);
    if (w->qtail)
        w->qtail->qnext = w->rq_head;
    else
        w->qhead = w->rq_head;
    w->qtail = w->rq_tail;
    /* Busy executors come back for more by themselves; wake only sleeping ones, no more of
     * them than there are new tasks. */
    size_t wake = (size_t)w->qidle < w->nrq ? (size_t)w->qidle : w->nrq;
    for (size_t i = 0; i < wake; i++) pthread_cond_signal(&w->qcv);
    pthread_mutex_unlock(&w->qmu);
    w->rq_head = w->rq_tail = NULL;
    w->nrq = 0;
}

wtask *tsr__exec_take_done(tsr__worker *w) {
    pthread_mutex_lock(&w->cmu);
    wtask *t = w->chead;
    w->chead = w->ctail = NULL;
    pthread_mutex_unlock(&w->cmu);
    return t;
}
