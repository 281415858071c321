/* The GPU executor: a GPU worker's one executor thread (docs/gpu.md). It opens the device, binds
 * itself to a core near it, and then runs the worker's ready tasks in order, as a CPU executor
 * does, with the device tier (devtier.c) in front of the kernels:
 *
 * - A task whose family has a device kernel gets its inputs' device copies (copied in when not
 *   resident), a device copy for its output (in place when the loop gave it a donated input's
 *   buffer), runs on the device and leaves its output there, dirty. Before it waits for the
 *   kernel, the thread copies in the inputs of the next queued task (prefetch, into free device
 *   memory only), so copies overlap kernels.
 * - A family without a device kernel (file reads) runs the CPU kernel on host buffers, after the
 *   inputs' dirty copies are written back; so does a task whose copies do not fit in the device
 *   memory limit even after eviction (it is slower, never failed for that).
 * - Write-backs the loop asks for (a peer or client gets a chunk whose bytes are on the device)
 *   come before tasks.
 *
 * Only this thread calls the device backend. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "worker/worker.h"

/* ---- start-up -------------------------------------------------------------------------------- */

/* Binds the calling thread to a core near the device: the cores of the device's closest non-I/O
 * ancestor in the topology (found from its PCI bus id), within the allowed ones; any allowed
 * core when that leaves none or the device is not in the topology. Sets w->cpus. */
static void bind_near_device(tsr__worker *w, wexec *e) {
    hwloc_bitmap_t near = hwloc_bitmap_alloc();
    if (!near) return;
    const char *bus = w->dev.info.pci_bus_id;
    /* The device's place needs hwloc's PCI objects: a topology of their own, loaded only here,
     * once a device is open (the PCI plugin costs time, and is nothing to other workers). */
    hwloc_obj_t pci = NULL;
    hwloc_topology_t io;
    if (bus[0] && hwloc_topology_init(&io) == 0) {
        hwloc_topology_set_io_types_filter(io, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
        if (hwloc_topology_load(io) == 0 && (pci = hwloc_get_pcidev_by_busidstring(io, bus))) {
            hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(io, pci);
            if (anc && anc->cpuset) hwloc_bitmap_and(near, anc->cpuset, w->allowed);
        }
        hwloc_topology_destroy(io);
    }
    const char *where = "near the device";
    if (hwloc_bitmap_iszero(near)) {
        hwloc_bitmap_copy(near, w->allowed);
        where = pci ? "(none of the device's own is allowed)" : "(the device's place is unknown)";
    }
    if (tsr__worker_pick_core(w->topo, near, 0, e->set) == 0) {
        if (hwloc_set_cpubind(w->topo, e->set, HWLOC_CPUBIND_THREAD) < 0)
            tsr__log(&w->log, TSR_LOG_WARN, "could not pin the GPU thread: %s", strerror(errno));
        hwloc_bitmap_list_snprintf(w->cpus, sizeof w->cpus, e->set);
    }
    tsr__log(&w->log, TSR_LOG_INFO, "GPU %d (%s, bus %s): thread on cpus %s %s", w->opts->gpu,
             w->dev.info.name, bus[0] ? bus : "?", w->cpus, where);
    hwloc_bitmap_free(near);
}

static void set_state(tsr__worker *w, int state) {
    pthread_mutex_lock(&w->qmu);
    w->gpu_state = state;
    pthread_cond_broadcast(&w->gcv);
    pthread_mutex_unlock(&w->qmu);
}

/* ---- running tasks --------------------------------------------------------------------------- */

/* How many queued tasks ahead the GPU thread copies inputs in while a kernel runs. */
#define PREFETCH_TASKS 4

/* Releases the device copies a task acquired (inputs with DEVPIN, and its output). */
static void release_all(tsr__worker *w, wtask *t, int out_acquired, int wrote) {
    for (uint32_t k = 0; k < t->nin; k++) {
        if (!(t->in[k].flags & TSR__IN_DEVPIN)) continue;
        t->in[k].flags &= (uint8_t)~TSR__IN_DEVPIN;
        tsr__devtier_release(&w->dev, t->in[k].buf, wrote && (int)k == t->alias);
    }
    if (out_acquired) tsr__devtier_release(&w->dev, t->out, wrote);
}

/* The device kernels take float inputs only (docs/gpu.md): a task reading int64 or bool (a sum of
 * bools, sqrt of int64) runs on the host. */
static int device_runs(tsr__worker *w, const wtask *t) {
    for (uint32_t k = 0; k < t->nin; k++)
        if (t->in[k].dtype != TSR_FLOAT64 && t->in[k].dtype != TSR_FLOAT32) return 0;
    return w->dev.ops->has_kernel(t->kd->d.kop, t->kd->d.dtype);
}

/* Copies in what it can of t's inputs ahead of time (free device memory only). */
static void prefetch(tsr__worker *w, wtask *t) {
    if (!device_runs(w, t)) return;
    char err[8];
    for (uint32_t k = 0; k < t->nin; k++) {
        wtask_in *in = &t->in[k];
        if (in->flags & TSR__IN_DEVPIN) continue;
        if (!tsr__devtier_acquire(&w->dev, in->buf, TSR__DEV_PREFETCH, err, sizeof err)) return;
        in->flags |= TSR__IN_DEVPIN;
    }
}

/* The next few queued tasks, for prefetch: they stay in the queue, and only this thread takes
 * tasks from it, so they stay valid until this thread runs them. */
static size_t peek_next(tsr__worker *w, wtask **out, size_t max) {
    size_t n = 0;
    pthread_mutex_lock(&w->qmu);
    for (wtask *t = w->qhead; t && n < max; t = t->qnext) out[n++] = t;
    pthread_mutex_unlock(&w->qmu);
    return n;
}

/* The host path: inputs' host bytes made current, the output's device copy dropped. */
static void run_on_host(tsr__worker *w, wtask *t) {
    char msg[256];
    release_all(w, t, 0, 0); /* a prefetch's holds: the output's copy must be free to go */
    for (uint32_t k = 0; k < t->nin; k++) {
        int rc = tsr__devtier_writeback(&w->dev, t->in[k].buf, msg, sizeof msg);
        if (rc != 0) {
            t->rc = rc;
            t->err = strdup(msg);
            return;
        }
    }
    if (t->out) tsr__devtier_invalidate(&w->dev, t->out);
    tsr__exec_run_host(w, t);
}

static void run_task(tsr__worker *w, wtask *t) {
    const tsr_kdesc *d = &t->kd->d;
    if (!device_runs(w, t)) {
        run_on_host(w, t);
        return;
    }
    char msg[256];
    msg[0] = '\0';
    if ((t->rc = tsr__exec_check_buffers(t, msg, sizeof msg)) != 0) {
        t->err = strdup(msg);
        return;
    }
    tsr_chunkview stack[16], *ins = stack;
    if (t->nin > TSR__ARRAY_LEN(stack) && !(ins = malloc(t->nin * sizeof *ins))) {
        t->rc = -ENOMEM;
        t->err = strdup("no memory for the inputs' views");
        return;
    }
    int out_acquired = 0;
    int rc = 0;
    for (uint32_t k = 0; k < t->nin && rc == 0; k++) {
        wtask_in *in = &t->in[k];
        void *p = tsr__devtier_acquire(&w->dev, in->buf, TSR__DEV_INPUT, msg, sizeof msg);
        if (!p) {
            rc = -ENOMEM;
            break;
        }
        if (in->flags & TSR__IN_DEVPIN)
            tsr__devtier_release(&w->dev, in->buf, 0); /* the prefetch's hold; ours remains */
        in->flags |= TSR__IN_DEVPIN;
        ins[k] = (tsr_chunkview){.data = p, .dtype = in->dtype, .ndim = in->ndim};
        memcpy(ins[k].shape, in->shape, sizeof ins[k].shape);
    }
    tsr_chunkview out = {.dtype = d->dtype, .ndim = d->ndim};
    memcpy(out.shape, d->shape, sizeof out.shape);
    if (rc == 0 && t->alias >= 0) {
        out.data = ins[t->alias].data; /* in place: t->out is that input's buffer */
    } else if (rc == 0) {
        if (!t->out) {
            /* The output's home in host memory, reserved now so that evicting its device copy
             * never needs memory the worker does not have. Its pages are touched only by a
             * write-back. */
            uint64_t nbytes = tsr__kdesc_nbytes(d);
            t->out = nbytes <= SIZE_MAX ? tsr__chunkmem_new(&w->mem, (size_t)nbytes) : NULL;
            if (!t->out) {
                t->rc = -ENOMEM;
                t->err = strdup("no host memory for an output chunk");
                release_all(w, t, 0, 0);
                if (ins != stack) free(ins);
                return;
            }
        }
        out.data = tsr__devtier_acquire(&w->dev, t->out, TSR__DEV_OUTPUT, msg, sizeof msg);
        if (out.data)
            out_acquired = 1;
        else
            rc = -ENOMEM;
    }
    if (rc == -ENOMEM) {
        /* No room on the device even after eviction: the host computes it. */
        release_all(w, t, out_acquired, 0);
        if (ins != stack) free(ins);
        w->gpu_fallbacks++;
        if (w->gpu_fallbacks == 1)
            tsr__log(&w->log, TSR_LOG_WARN, "task (%llu,%llu) runs on the host: %s",
                     (unsigned long long)t->job, (unsigned long long)t->id, msg);
        run_on_host(w, t);
        return;
    }
    if (rc == 0) rc = w->dev.ops->run(w->dev.ctx, d, ins, (int)t->nin, &out, msg, sizeof msg);
    if (rc == 0) {
        /* While the kernel runs: the next tasks' inputs, in queue order, as far as free device
         * memory goes (a prefetch never evicts). */
        wtask *next[PREFETCH_TASKS];
        size_t n = peek_next(w, next, PREFETCH_TASKS);
        for (size_t k = 0; k < n; k++) prefetch(w, next[k]);
        rc = w->dev.ops->wait(w->dev.ctx, msg, sizeof msg);
    }
    release_all(w, t, out_acquired, rc == 0);
    if (ins != stack) free(ins);
    if (rc != 0) {
        t->rc = rc;
        t->err = strdup(msg[0] ? msg : tsr_strerror(rc));
    }
}

/* ---- write-backs ----------------------------------------------------------------------------- */

int tsr__gpu_writeback(tsr__worker *w, tsr__buf *buf) {
    wwb *r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;
    r->buf = tsr__buf_ref(buf);
    pthread_mutex_lock(&w->qmu);
    if (w->wb_tail)
        w->wb_tail->next = r;
    else
        w->wb_head = r;
    w->wb_tail = r;
    pthread_cond_broadcast(&w->qcv);
    pthread_mutex_unlock(&w->qmu);
    return 0;
}

int tsr__gpu_take_writebacks(tsr__worker *w) {
    if (!w->gpu) return 0;
    pthread_mutex_lock(&w->cmu);
    wwb *r = w->wb_done;
    w->wb_done = NULL;
    pthread_mutex_unlock(&w->cmu);
    int any = r != NULL;
    while (r) {
        wwb *next = r->next;
        if (r->rc != 0)
            tsr__log(&w->log, TSR_LOG_ERROR, "writing a chunk back from the device failed: %s",
                     tsr_strerror(r->rc));
        tsr__chunkmem_unref(&w->mem, r->buf);
        free(r);
        r = next;
    }
    return any;
}

static void do_writebacks(tsr__worker *w, wwb *list) {
    char msg[256];
    wwb *tail = NULL;
    for (wwb *r = list; r; r = r->next) {
        r->rc = tsr__devtier_writeback(&w->dev, r->buf, msg, sizeof msg);
        if (r->rc != 0) tsr__log(&w->log, TSR_LOG_ERROR, "write-back: %s", msg);
        tail = r;
    }
    pthread_mutex_lock(&w->cmu);
    tail->next = w->wb_done;
    w->wb_done = list;
    pthread_mutex_unlock(&w->cmu);
    uv_async_send(&w->async);
}

/* ---- the thread ------------------------------------------------------------------------------ */

static void *gpu_main(void *arg) {
    wexec *e = arg;
    tsr__worker *w = e->w;
    const tsr__devops *ops = tsr__devops_pick();
    int rc;
    if (!ops) {
        tsr__fmt(w->gpu_err, sizeof w->gpu_err, "%s", tsr__devops_cuda_error());
        rc = TSR_EUNSUPPORTED;
    } else if (ops->count() <= 0) {
        tsr__fmt(w->gpu_err, sizeof w->gpu_err, "no %s device found (asked for GPU %d)", ops->name,
                 w->opts->gpu);
        rc = TSR_EUNSUPPORTED;
    } else {
        rc = tsr__devtier_open(&w->dev, ops, w->opts->gpu, w->opts->device_memory_limit, w->gpu_err,
                               sizeof w->gpu_err);
    }
    if (rc != 0) {
        set_state(w, rc < 0 ? rc : TSR_EUNSUPPORTED);
        return NULL;
    }
    bind_near_device(w, e);
    set_state(w, 1);

    pthread_mutex_lock(&w->qmu);
    for (;;) {
        while (!w->qstop && !w->qhead && !w->wb_head) {
            w->qidle++;
            pthread_cond_wait(&w->qcv, &w->qmu);
            w->qidle--;
        }
        if (w->qstop) break;
        if (w->wb_head) {
            wwb *list = w->wb_head;
            w->wb_head = w->wb_tail = NULL;
            pthread_mutex_unlock(&w->qmu);
            do_writebacks(w, list);
            pthread_mutex_lock(&w->qmu);
            continue;
        }
        wtask *t = w->qhead;
        w->qhead = t->qnext;
        if (!w->qhead) w->qtail = NULL;
        pthread_mutex_unlock(&w->qmu);
        t->qnext = NULL;
        tsr__devtier_reap(&w->dev);
        double t0 = tsr__now();
        run_task(w, t);
        t->t0 = t0;
        t->thread = 0;
        t->seconds = tsr__now() - t0;
        /* Device tasks are long: each is reported at once. */
        wtask *head = t, *tail = t;
        tsr__exec_publish(w, &head, &tail);
        pthread_mutex_lock(&w->qmu);
    }
    pthread_mutex_unlock(&w->qmu);
    tsr__devtier_close(&w->dev);
    return NULL;
}

int tsr__gpu_start(tsr__worker *w) {
    wexec *e = &w->execs[0];
    if (pthread_cond_init(&w->gcv, NULL) != 0) return -ENOMEM;
    int rc = pthread_create(&e->th, NULL, gpu_main, e);
    if (rc != 0) {
        pthread_cond_destroy(&w->gcv);
        tsr__log(&w->log, TSR_LOG_ERROR, "cannot start the GPU thread: %s", strerror(rc));
        return -rc;
    }
    e->started = 1;
    pthread_setname_np(e->th, "tsr-gpu-0");
    pthread_mutex_lock(&w->qmu);
    while (w->gpu_state == 0) pthread_cond_wait(&w->gcv, &w->qmu);
    int state = w->gpu_state;
    pthread_mutex_unlock(&w->qmu);
    pthread_cond_destroy(&w->gcv);
    if (state < 0) {
        tsr__log(&w->log, TSR_LOG_ERROR, "GPU %d: %s", w->opts->gpu, w->gpu_err);
        pthread_join(e->th, NULL);
        e->started = 0;
        return state;
    }
    /* What the hello and every st report (worker.h, wdevstats). */
    w->st.dev.on = 1;
    tsr__fmt(w->st.dev.name, sizeof w->st.dev.name, "%s", w->dev.info.name);
    w->st.dev.limit = w->dev.limit;
    return 0;
}
