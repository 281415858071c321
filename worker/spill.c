/* The disk tier of the worker's memory manager (DESIGN.md, "Worker: memory nodes";
 * docs/memory.md). With a memory limit, the chunks a worker stores for the scheduler are the
 * ones that can go to disk when it holds too much:
 *
 * - Stored chunks of TSR__SPILL_MIN bytes and more are tracked, least recently used first (used:
 *   stored, or read by a task). Replicas are not: the replica bound drops them, and they are made
 *   again when needed.
 * - Above TSR__SPILL_HIGH of the limit (chunk bytes held, pool and in-flight buffers included),
 *   the oldest chunks that nothing but the store holds are written to the worker's spill file
 *   (one unlinked file, make_file) by the I/O thread, until what is held and not yet being written
 * falls to TSR__SPILL_LOW. When a write ends and still nobody else holds the buffer, the store lets
 * it go; otherwise (a task took it meanwhile) the file is kept, so that the next spill of the chunk
 * costs no write.
 * - Above TSR__PAUSE_HIGH the worker is paused: it reports so in its stats at once, and the
 *   scheduler sends it no new work until it is under TSR__PAUSE_LOW again.
 * - A spilled chunk keeps its store record (buf NULL). A task that needs it waits while the I/O
 *   thread reads it back into a pooled buffer; a peer's get of it waits likewise (peer.c).
 *
 * The loop thread owns every record; the I/O thread only sees its requests (the buffers they
 * hold references to) and the directory's path, fixed before its first request. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "worker/worker.h"

/* ---- the I/O thread -------------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n, uint64_t off) {
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return k < 0 ? -errno : -EIO;
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int read_all(int fd, char *p, size_t n, uint64_t off) {
    while (n > 0) {
        ssize_t k = pread(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return k < 0 ? -errno : -EIO; /* a short file: damaged */
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* One file for every chunk: extents handed out in order and never reused (the file is sparse;
 * a freed extent's blocks go back with a punched hole), so a write, a read and a free of one
 * extent are ordered by the queue alone. */
static int do_io(tsr__worker *w, wio *r) {
    if (r->op == WIO_FREE)
        return fallocate(w->spill_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)r->off,
                         (off_t)r->len) == 0
                   ? 0
                   : -errno;
    return r->op == WIO_WRITE ? write_all(w->spill_fd, r->buf->data, r->buf->size, r->off)
                              : read_all(w->spill_fd, r->buf->data, r->buf->size, r->off);
}

static void *io_main(void *arg) {
    tsr__worker *w = arg;
    /* A spill or read back is short and what the executors may be waiting for: ahead of them
     * for a core when it wakes (CFS weight). Needs CAP_SYS_NICE; without it, as it was. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), -5);
    pthread_mutex_lock(&w->iomu);
    for (;;) {
        while (!w->io_stop && !w->io_head) pthread_cond_wait(&w->iocv, &w->iomu);
        if (w->io_stop) break;
        wio *r = w->io_head;
        w->io_head = r->next;
        if (!w->io_head) w->io_tail = NULL;
        pthread_mutex_unlock(&w->iomu);
        double t0 = tsr__now();
        r->rc = do_io(w, r);
        r->seconds = tsr__now() - t0;
        pthread_mutex_lock(&w->cmu);
        r->next = w->io_done;
        w->io_done = r;
        pthread_mutex_unlock(&w->cmu);
        uv_async_send(&w->async);
        pthread_mutex_lock(&w->iomu);
    }
    pthread_mutex_unlock(&w->iomu);
    return NULL;
}

static void submit(tsr__worker *w, wio *r) {
    pthread_mutex_lock(&w->iomu);
    r->next = NULL;
    if (w->io_tail)
        w->io_tail->next = r;
    else
        w->io_head = r;
    w->io_tail = r;
    pthread_cond_signal(&w->iocv);
    pthread_mutex_unlock(&w->iomu);
}

static wio *request(tsr__worker *w, int op, const wspill *e, tsr__buf *buf) {
    wio *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    *r = (wio){.op = op, .job = e->job, .id = e->id, .buf = buf, .off = e->off, .len = e->bytes};
    submit(w, r);
    return r;
}

/* Gives e's extent back (queued after any I/O on it already asked for). */
static void free_extent(tsr__worker *w, wspill *e) {
    if (!e->has_off) return;
    request(w, WIO_FREE, e, NULL);
    e->has_off = 0;
}

int tsr__spill_start(tsr__worker *w) {
    tsr__kmap_init(&w->spill);
    int64_t limit = w->opts->memory_limit;
    if (limit <= 0) return 0;
    w->spill_hi = (uint64_t)((double)limit * TSR__SPILL_HIGH);
    w->spill_lo = (uint64_t)((double)limit * TSR__SPILL_LOW);
    w->pause_hi = (uint64_t)((double)limit * TSR__PAUSE_HIGH);
    w->pause_lo = (uint64_t)((double)limit * TSR__PAUSE_LOW);
    if (pthread_mutex_init(&w->iomu, NULL) != 0) return -ENOMEM;
    pthread_cond_init(&w->iocv, NULL);
    w->io_ok = 1;
    int rc = pthread_create(&w->io_th, NULL, io_main, w);
    if (rc != 0) {
        tsr__log(&w->log, TSR_LOG_ERROR, "cannot start the spill thread: %s", strerror(rc));
        return -rc;
    }
    pthread_setname_np(w->io_th, "tsr-spill");
    w->io_started = 1;
    w->st.spill.on = 1;
    return 0;
}

void tsr__spill_stop(tsr__worker *w) {
    if (!w->io_started) return;
    pthread_mutex_lock(&w->iomu);
    w->io_stop = 1;
    pthread_cond_signal(&w->iocv);
    pthread_mutex_unlock(&w->iomu);
    pthread_join(w->io_th, NULL);
    w->io_started = 0;
}

/* ---- records --------------------------------------------------------------------------------- */

static void lru_unlink(tsr__worker *w, wspill *e) {
    if (!e->linked) return;
    if (e->prev)
        e->prev->next = e->next;
    else
        w->sp_old = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        w->sp_new = e->prev;
    e->prev = e->next = NULL;
    e->linked = 0;
}

static void lru_append(tsr__worker *w, wspill *e) {
    e->prev = w->sp_new;
    e->next = NULL;
    if (w->sp_new)
        w->sp_new->next = e;
    else
        w->sp_old = e;
    w->sp_new = e;
    e->linked = 1;
}

void tsr__spill_track(tsr__worker *w, uint64_t job, uint64_t id, const tsr__buf *buf) {
    if (!w->io_started || buf->size < TSR__SPILL_MIN) return;
    wspill *e = tsr__kmap_get(&w->spill, job, id);
    if (e) {
        /* Stored again under the same key (recomputed after a loss): the copy on disk is
         * stale. */
        if (e->on_disk && !e->writing && !e->reading) {
            e->on_disk = 0;
            w->st.spill.disk_bytes -= e->bytes;
            free_extent(w, e);
        }
        lru_unlink(w, e);
    } else {
        if (!(e = calloc(1, sizeof *e))) return; /* untracked: it just stays in memory */
        e->job = job;
        e->id = id;
        if (tsr__kmap_put(&w->spill, job, id, e, NULL) != 0) {
            free(e);
            return;
        }
    }
    e->bytes = buf->size;
    lru_append(w, e);
}

void tsr__spill_touch(tsr__worker *w, uint64_t job, uint64_t id) {
    if (w->spill.len == 0) return;
    wspill *e = tsr__kmap_get(&w->spill, job, id);
    if (!e || !e->linked || e == w->sp_new) return;
    lru_unlink(w, e);
    lru_append(w, e);
}

static void unqueue(tsr__worker *w, wspill *e);

/* A record whose chunk went (already out of the map): its file goes too, by the I/O thread. A
 * request under way finds no record when it completes and cleans up after itself. */
static void entry_free(tsr__worker *w, wspill *e) {
    lru_unlink(w, e);
    unqueue(w, e);
    if (e->on_disk) w->st.spill.disk_bytes -= e->bytes;
    free_extent(w, e); /* after a write or read under way: the queue keeps the order */
    wwaiter *deps = e->waiters;
    size_t n = e->nwaiters;
    free(e);
    if (n) tsr__task_inputs_failed(w, deps, n, "the chunk was freed while on disk");
    free(deps);
}

void tsr__spill_forget(tsr__worker *w, uint64_t job, uint64_t id) {
    if (w->spill.len == 0) return;
    wspill *e = tsr__kmap_del(&w->spill, job, id);
    if (e) entry_free(w, e);
}

/* ---- reading back ---------------------------------------------------------------------------- */

/* Reads take memory: one starts while the bytes held and being read stay under the spill
 * threshold; past it, one at a time, and only while the executors have fewer tasks than there are
 * executors (so that the window always progresses). The others wait in a queue, in order (a
 * task's window can ask for many at once), pumped at the end of every loop turn. Reading past the
 * threshold whenever no read was under way held a worker at up to 25% over its limit: a window
 * of ~190 fast fused tasks had its inputs read back faster than one executor consumed them. */
/* Reads e back into b (a reference the request takes over), or into a new buffer when b is
 * NULL. */
static int submit_read_into(tsr__worker *w, wspill *e, tsr__buf *b) {
    if (!b && !(b = tsr__chunkmem_new(&w->mem, e->bytes))) return -ENOMEM;
    if (!request(w, WIO_READ, e, b)) {
        tsr__chunkmem_unref(&w->mem, b);
        return -ENOMEM;
    }
    e->reading = 1;
    w->spill_reading += e->bytes;
    return 0;
}

static int submit_read(tsr__worker *w, wspill *e) {
    return submit_read_into(w, e, NULL);
}

static int read_fits(tsr__worker *w, size_t bytes) {
    uint64_t held = atomic_load_explicit(&w->mem.bytes, memory_order_relaxed);
    if (held + bytes <= w->spill_hi) return 1;
    return w->spill_reading == 0 && tsr__exec_would_idle(w);
}

/* Starts queued reads as memory allows. */
static void pump_reads(tsr__worker *w) {
    while (w->rd_head && read_fits(w, w->rd_head->bytes)) {
        wspill *e = w->rd_head;
        w->rd_head = e->rd_next;
        if (!w->rd_head) w->rd_tail = NULL;
        e->rd_next = NULL;
        e->queued = 0;
        if (submit_read(w, e) != 0) {
            wwaiter *deps = e->waiters;
            size_t n = e->nwaiters;
            e->waiters = NULL;
            e->nwaiters = e->waiters_cap = 0;
            tsr__task_inputs_failed(w, deps, n, "no memory to read a spilled input back");
            free(deps);
        }
    }
}

static void unqueue(tsr__worker *w, wspill *e) {
    if (!e->queued) return;
    wspill **pp = &w->rd_head;
    while (*pp && *pp != e) pp = &(*pp)->rd_next;
    if (*pp) *pp = e->rd_next;
    w->rd_tail = NULL;
    for (wspill *q = w->rd_head; q; q = q->rd_next) w->rd_tail = q;
    e->queued = 0;
    e->rd_next = NULL;
}

static int start_read(tsr__worker *w, wspill *e) {
    if (e->reading || e->queued) return 0;
    if (!w->rd_head && read_fits(w, e->bytes)) return submit_read(w, e);
    e->queued = 1;
    e->rd_next = NULL;
    if (w->rd_tail)
        w->rd_tail->rd_next = e;
    else
        w->rd_head = e;
    w->rd_tail = e;
    return 0;
}

int tsr__spill_wait(tsr__worker *w, uint64_t job, uint64_t id, wtask *t, uint32_t idx) {
    wspill *e = tsr__kmap_get(&w->spill, job, id);
    if (!e || !e->on_disk) return -ENOENT;
    if (TSR__GROW(e->waiters, e->waiters_cap, e->nwaiters + 1) != 0) return -ENOMEM;
    int rc = start_read(w, e);
    if (rc != 0) return rc;
    e->waiters[e->nwaiters++] = (wwaiter){t, idx};
    return 0;
}

int tsr__spill_fetch(tsr__worker *w, uint64_t job, uint64_t id) {
    wspill *e = tsr__kmap_get(&w->spill, job, id);
    if (!e || !e->on_disk) return -ENOENT;
    return start_read(w, e);
}

/* ---- spilling -------------------------------------------------------------------------------- */

/* The worker's spill file, made at the first spill in a directory of its own under the spill
 * root, then unlinked at once with its directory: nothing is left behind however the worker
 * ends, and the space goes back when the worker closes the file. */
static int make_file(tsr__worker *w) {
    if (w->spill_path[0]) return 0;
    const char *root = w->opts->spill_dir;
    if (!root || !*root) root = getenv("TMPDIR");
    if (!root || !*root) root = "/tmp";
    char tmpl[sizeof w->spill_path];
    int n = snprintf(tmpl, sizeof tmpl, "%s/tessera-spill-XXXXXX", root);
    if (n < 0 || (size_t)n + 8 >= sizeof tmpl) return -ENAMETOOLONG;
    if (!mkdtemp(tmpl)) return -errno;
    char file[sizeof tmpl + 8];
    snprintf(file, sizeof file, "%s/chunks", tmpl);
    int fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int rc = fd < 0 ? -errno : 0;
    unlink(file);
    rmdir(tmpl);
    if (rc != 0) {
        tsr__log(&w->log, TSR_LOG_ERROR, "cannot make a spill file under %s: %s", root,
                 strerror(-rc));
        w->spill_broken = 1;
        return rc;
    }
    /* Set before the first request: the I/O thread reads them only after submit's lock. */
    w->spill_fd = fd;
    memcpy(w->spill_path, tmpl, (size_t)n + 1);
    tsr__log(&w->log, TSR_LOG_INFO, "spilling to an unlinked file under %s", root);
    return 0;
}

static void set_paused(tsr__worker *w, int paused) {
    if (w->st.spill.paused == paused) return;
    w->st.spill.paused = paused;
    uint64_t held = atomic_load_explicit(&w->mem.bytes, memory_order_relaxed);
    tsr__log(&w->log, TSR_LOG_INFO, "%s: holding %llu bytes of a %lld-byte limit",
             paused ? "paused" : "resumed", (unsigned long long)held,
             (long long)w->opts->memory_limit);
    w->spill_report = 1; /* worker.c sends st at the end of the turn */
}

void tsr__spill_check(tsr__worker *w) {
    if (!w->io_started) return;
    uint64_t held = atomic_load_explicit(&w->mem.bytes, memory_order_relaxed);
    /* Bytes on their way out: being written, or being written back from a GPU worker's device
     * so that they can be written (asked for in this turn). */
    uint64_t promised = 0;
    /* The buffer pool is not drained here: its bytes do not count in held (on_async gives it
     * back near the limit), and fresh pages cost more than warm ones to read chunks into. */
    if (held > w->spill_hi && !w->spill_broken && make_file(w) == 0) {
        for (wspill *e = w->sp_old, *next; e && held > w->spill_lo + w->spill_writing + promised;
             e = next) {
            next = e->next;
            if (e->writing || e->reading) continue;
            const tsr__chunk *ch = tsr__store_get(&w->store, e->job, e->id);
            if (!ch || !ch->buf) continue;
            /* Held by a task, a peer's send or a write-back under way: not now. */
            if (atomic_load_explicit(&ch->buf->refs, memory_order_acquire) != 1) continue;
            /* A GPU worker's chunk whose newest bytes are on the device: written back first
             * (the request holds the buffer until then), spilled at a later check. */
            if (w->gpu && tsr__devtier_stale(&w->dev, ch->buf)) {
                if (tsr__gpu_writeback(w, ch->buf) == 0) promised += e->bytes;
                continue;
            }
            lru_unlink(w, e);
            if (e->on_disk) { /* written before: only the memory goes */
                tsr__chunkmem_unref(&w->mem, tsr__store_evict(&w->store, e->job, e->id));
                held = atomic_load_explicit(&w->mem.bytes, memory_order_relaxed);
                continue;
            }
            if (!e->has_off) { /* a new extent: offsets are never reused */
                e->off = w->spill_end;
                e->has_off = 1;
                w->spill_end += (e->bytes + 4095) & ~(uint64_t)4095;
            }
            if (!request(w, WIO_WRITE, e, tsr__buf_ref(ch->buf))) {
                tsr__chunkmem_unref(&w->mem, ch->buf); /* the reference just taken */
                lru_append(w, e);
                break;
            }
            e->writing = 1;
            w->spill_writing += e->bytes;
        }
    }
    pump_reads(w);
    tsr__task_pump_fetches(w);
    /* Pausing helps only while memory is on its way out. With nothing being written and nothing
     * left to write (every byte held by tasks, or spilling broken), a paused worker would wait
     * for work the scheduler never sends: it takes work again, and pauses only once it holds
     * a tenth of its limit more than it did then. */
    int draining = w->spill_writing > 0 || promised > 0;
    if (held > w->pause_hi && draining &&
        (!w->spill_stuck_at || held > w->spill_stuck_at + (w->pause_hi - w->pause_lo))) {
        w->spill_stuck_at = 0;
        set_paused(w, 1);
    } else if (held < w->pause_lo) {
        w->spill_stuck_at = 0;
        set_paused(w, 0);
    } else if (w->st.spill.paused && !draining) {
        w->spill_stuck_at = held;
        set_paused(w, 0);
    }
}

int tsr__spill_done(tsr__worker *w) {
    pthread_mutex_lock(&w->cmu);
    wio *r = w->io_done;
    w->io_done = NULL;
    pthread_mutex_unlock(&w->cmu);
    int back = 0;
    while (r) {
        wio *next = r->next;
        wspill *e = tsr__kmap_get(&w->spill, r->job, r->id);
        if (r->op == WIO_WRITE) {
            w->st.spill.spill_s += r->seconds;
            w->spill_writing -= r->buf->size;
            if (!e || !e->writing) {
                /* Freed while being written (its extent's free is queued behind the write; the
                 * record now under the key, if any, is a new chunk's). */
            } else if (r->rc != 0) {
                e->writing = 0;
                w->spill_broken = 1;
                tsr__log(&w->log, TSR_LOG_ERROR,
                         "cannot spill under %s: %s; keeping every chunk in memory from now on",
                         w->spill_path, strerror(-r->rc));
                lru_append(w, e);
            } else {
                e->writing = 0;
                e->on_disk = 1;
                w->st.spill.spilled_bytes += e->bytes;
                w->st.spill.disk_bytes += e->bytes;
                const tsr__chunk *ch = tsr__store_get(&w->store, r->job, r->id);
                /* Only the store and this request hold it: the memory can go, or serve the
                 * next read waiting for memory when it is the same size. Its pages are warm:
                 * a read into fresh pages costs ~50 times one into warm ones in this guest
                 * (bench/notes.md), and the pool cannot keep every buffer a spill lets go. */
                if (ch && ch->buf == r->buf &&
                    atomic_load_explicit(&r->buf->refs, memory_order_acquire) == 2) {
                    tsr__buf *b = tsr__store_evict(&w->store, r->job, r->id);
                    wspill *q = w->rd_head;
                    if (q && q->bytes == b->size) {
                        /* New bytes: a GPU worker's device copy of the old ones goes (as at a
                         * buffer's last unref). */
                        if (b->dev_drop) b->dev_drop(b);
                        w->rd_head = q->rd_next;
                        if (!w->rd_head) w->rd_tail = NULL;
                        q->rd_next = NULL;
                        q->queued = 0;
                        if (submit_read_into(w, q, b) != 0) {
                            /* b went with the failed request: q's waiters learn it at once. */
                            wwaiter *deps = q->waiters;
                            size_t n = q->nwaiters;
                            q->waiters = NULL;
                            q->nwaiters = q->waiters_cap = 0;
                            tsr__task_inputs_failed(w, deps, n,
                                                    "no memory to read a spilled input back");
                            free(deps);
                        }
                    } else {
                        tsr__chunkmem_unref(&w->mem, b);
                    }
                } else if (ch && ch->buf)
                    lru_append(w, e); /* in use again: in memory, and on disk already */
            }
            tsr__chunkmem_unref(&w->mem, r->buf);
        } else if (r->op == WIO_READ) {
            w->st.spill.unspill_s += r->seconds;
            w->spill_reading -= r->buf->size;
            if (!e || !e->reading) {
                tsr__chunkmem_unref(&w->mem, r->buf); /* freed while being read */
            } else if (r->rc != 0) {
                e->reading = 0;
                char msg[300];
                snprintf(msg, sizeof msg, "could not read spilled chunk (%llu,%llu) back: %s",
                         (unsigned long long)r->job, (unsigned long long)r->id, strerror(-r->rc));
                tsr__log(&w->log, TSR_LOG_ERROR, "%s", msg);
                tsr__chunkmem_unref(&w->mem, r->buf);
                wwaiter *deps = e->waiters;
                size_t n = e->nwaiters;
                e->waiters = NULL;
                e->nwaiters = e->waiters_cap = 0;
                tsr__task_inputs_failed(w, deps, n, msg);
                free(deps);
            } else {
                e->reading = 0;
                w->st.spill.unspilled_bytes += e->bytes;
                /* The file stays: if the chunk is spilled again it costs no write. */
                if (tsr__store_restore(&w->store, r->job, r->id, r->buf) != 0)
                    tsr__chunkmem_unref(&w->mem, r->buf);
                lru_append(w, e);
                back = 1;
                wwaiter *deps = e->waiters;
                size_t n = e->nwaiters;
                e->waiters = NULL;
                e->nwaiters = e->waiters_cap = 0;
                const tsr__chunk *ch = tsr__store_get(&w->store, r->job, r->id);
                if (ch && ch->buf)
                    tsr__task_inputs_ready(w, deps, n, ch);
                else
                    tsr__task_inputs_failed(w, deps, n, "the chunk went while being read back");
                free(deps);
            }
        }
        free(r);
        r = next;
    }
    pump_reads(w);
    return back;
}

void tsr__spill_cleanup(tsr__worker *w) {
    for (size_t i = 0; i < w->spill.cap; i++) {
        wspill *e = w->spill.slots[i].val;
        if (!e) continue;
        free(e->waiters);
        free(e);
    }
    tsr__kmap_free(&w->spill);
    w->sp_old = w->sp_new = NULL;
    /* Requests never run or never taken back. */
    for (int pass = 0; pass < 2; pass++) {
        wio *r = pass ? w->io_done : w->io_head;
        while (r) {
            wio *next = r->next;
            tsr__chunkmem_unref(&w->mem, r->buf);
            free(r);
            r = next;
        }
    }
    w->io_head = w->io_tail = w->io_done = NULL;
    if (w->spill_path[0]) {
        close(w->spill_fd); /* unlinked: its blocks go back now */
        w->spill_path[0] = '\0';
    }
    if (w->io_ok) {
        pthread_mutex_destroy(&w->iomu);
        pthread_cond_destroy(&w->iocv);
        w->io_ok = 0;
    }
}
