/* Executor threads: each is pinned to one core, pops ready tasks in FIFO order, runs the kernel
 * and hands the result back to the loop through the completion queue and uv_async_send. They
 * never touch the loop, the store or any connection; a task's inputs are references the loop
 * took before queueing it. */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "kernels/kernels.h"
#include "worker/worker.h"

static void run_task(wtask *t) {
    tsr_chunkview in[64];
    tsr_chunkview *ins = in;
    tsr_chunkview *heap = NULL;
    if (t->nin > TSR__ARRAY_LEN(in)) {
        heap = calloc(t->nin, sizeof *heap);
        if (!heap) {
            t->rc = -ENOMEM;
            snprintf(t->msg, sizeof t->msg, "no memory for %u inputs", t->nin);
            return;
        }
        ins = heap;
    }
    for (uint32_t k = 0; k < t->nin; k++) {
        memset(&ins[k], 0, sizeof ins[k]);
        ins[k].data = t->in[k].buf->data;
        ins[k].dtype = t->in[k].dtype;
        ins[k].ndim = t->in[k].ndim;
        memcpy(ins[k].shape, t->in[k].shape, sizeof ins[k].shape);
    }
    uint64_t nbytes = tsr__kdesc_nbytes(&t->d);
    t->out = nbytes <= SIZE_MAX ? tsr__buf_new((size_t)nbytes) : NULL;
    if (!t->out) {
        t->rc = -ENOMEM;
        snprintf(t->msg, sizeof t->msg, "no memory for an output chunk of %llu bytes",
                 (unsigned long long)nbytes);
        free(heap);
        return;
    }
    tsr_chunkview out;
    memset(&out, 0, sizeof out);
    out.data = t->out->data;
    out.dtype = t->d.dtype;
    out.ndim = t->d.ndim;
    memcpy(out.shape, t->d.shape, sizeof out.shape);
    double t0 = tsr__now();
    t->msg[0] = '\0';
    t->rc = tsr__kernel_run(&t->d, ins, (int)t->nin, &out, TSR_DEVICE_CPU, t->msg, sizeof t->msg);
    t->seconds = tsr__now() - t0;
    if (t->rc != 0 && t->msg[0] == '\0') snprintf(t->msg, sizeof t->msg, "%s", tsr_strerror(t->rc));
    free(heap);
}

static void *exec_main(void *arg) {
    wexec *e = arg;
    tsr__worker *w = e->w;
    char name[16];
    snprintf(name, sizeof name, "tsr-exec-%d", e->k);
    pthread_setname_np(pthread_self(), name);
    if (hwloc_set_cpubind(w->topo, e->set, HWLOC_CPUBIND_THREAD) < 0) {
        char *s = NULL;
        hwloc_bitmap_list_asprintf(&s, e->set);
        tsr__log(&w->log, TSR_LOG_WARN, "could not pin executor %d to cpus %s: %s", e->k,
                 s ? s : "?", strerror(errno));
        free(s);
    }
    for (;;) {
        pthread_mutex_lock(&w->qmu);
        while (!w->qstop && !w->qhead) pthread_cond_wait(&w->qcv, &w->qmu);
        if (w->qstop) {
            pthread_mutex_unlock(&w->qmu);
            break;
        }
        wtask *t = w->qhead;
        w->qhead = t->qnext;
        if (!w->qhead) w->qtail = NULL;
        t->qnext = NULL;
        pthread_mutex_unlock(&w->qmu);

        run_task(t);

        pthread_mutex_lock(&w->cmu);
        if (w->ctail)
            w->ctail->qnext = t;
        else
            w->chead = t;
        w->ctail = t;
        pthread_mutex_unlock(&w->cmu);
        /* Coalesces: the loop drains the whole completion queue per callback. */
        uv_async_send(&w->async);
    }
    return NULL;
}

int tsr__exec_start(tsr__worker *w) {
    for (int k = 0; k < w->nexec; k++) {
        wexec *e = &w->execs[k];
        int rc = pthread_create(&e->th, NULL, exec_main, e);
        if (rc != 0) {
            tsr__log(&w->log, TSR_LOG_ERROR, "cannot start executor thread %d: %s", k,
                     strerror(rc));
            return -rc;
        }
        e->started = 1;
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
    pthread_mutex_lock(&w->qmu);
    if (w->qtail)
        w->qtail->qnext = t;
    else
        w->qhead = t;
    w->qtail = t;
    pthread_cond_signal(&w->qcv);
    pthread_mutex_unlock(&w->qmu);
}

wtask *tsr__exec_take_done(tsr__worker *w) {
    pthread_mutex_lock(&w->cmu);
    wtask *t = w->chead;
    w->chead = w->ctail = NULL;
    pthread_mutex_unlock(&w->cmu);
    return t;
}
