/* What the worker's files share: the chunk store, a (job, id) hash map, chunk memory
 * accounting, the hwloc pinning helpers, and the worker's state. The loop thread owns everything
 * here except the executor queue and the completion queue (guarded by their mutexes) and the
 * chunk memory counters (atomics). References to chunk buffers are taken and dropped on the loop
 * thread only: executors read and write the bytes but never touch a count, so on the loop a
 * count of 1 means that nobody else holds the buffer (donation and accounting rely on it). */
#ifndef TSR_WORKER_PRIV_H
#define TSR_WORKER_PRIV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <hwloc.h>
#include <uv.h>

#include "common/common.h"
#include "graph/graph.h"
#include "kernels/device.h"
#include "wire/auth.h"
#include "wire/fetch.h"
#include "wire/msg.h"
#include "wire/wire.h"

/* A worker's plugins (plugins.c): the directories it was started with, the libraries found in
 * them at start, and the libraries and functions opened since (under mu: executors resolve). */
typedef struct tsr__plugin_lib {
    char name[64];
    void *handle;
} tsr__plugin_lib;
typedef struct tsr__plugin_sym {
    char spec[130]; /* "LIBRARY:SYMBOL" */
    tsr_plugin_fn fn;
} tsr__plugin_sym;
/* The most libraries a hello announces (the scheduler keeps as many: TSR__WORKER_PLUGINS). */
#define TSR__WORKER_PLUGINS_MAX 32
typedef struct tsr__plugins {
    char **dirs; /* real paths */
    int ndirs;
    char (*names)[64]; /* library names found at start, sorted */
    int nnames;
    pthread_mutex_t mu;
    int mu_ok;
    tsr__plugin_lib *libs;
    size_t nlibs, libs_cap;
    tsr__plugin_sym *syms;
    size_t nsyms, syms_cap;
} tsr__plugins;

/* ---- (job, id) -> pointer hash map (open addressing, linear probing, backward-shift delete) */

typedef struct tsr__kslot {
    uint64_t job, id;
    void *val; /* NULL = empty slot */
} tsr__kslot;

typedef struct tsr__kmap {
    tsr__kslot *slots;
    size_t cap; /* a power of two, or 0 */
    size_t len;
} tsr__kmap;

void tsr__kmap_init(tsr__kmap *m);
void tsr__kmap_free(tsr__kmap *m); /* frees the table, not the values */
void *tsr__kmap_get(const tsr__kmap *m, uint64_t job, uint64_t id);
/* Inserts or replaces (val must not be NULL); 0 or -ENOMEM. *old gets the replaced value or
 * NULL; old may be NULL. */
int tsr__kmap_put(tsr__kmap *m, uint64_t job, uint64_t id, void *val, void **old);
/* Removes the key; returns its value or NULL. */
void *tsr__kmap_del(tsr__kmap *m, uint64_t job, uint64_t id);

/* ---- Chunk memory: the host memory node (pool.c) ------------------------------------------- */

/* Stored chunks, fetched copies, recomputed replicas and outputs being written all count in
 * bytes, each buffer once however many holders it has, from allocation until its last reference
 * goes. Buffers of TSR__POOL_MIN bytes and more then go back to a pool of at most cap bytes
 * (pooled), by size class, for reuse without mapping or faulting pages again; pool.c says how. */
#define TSR__POOL_MIN ((size_t)64 << 10)
#define TSR__POOL_CLASSES (64 * 8)
/* The pool's default size per executor thread: 64 MiB, so a worker of T threads keeps T times
 * that (a tenth of the memory limit when that is less), as T one-thread workers would: the
 * pool serves the executors' outputs and inputs, and issue 9 sized it when a cluster ran a
 * worker per core. A 2-thread worker with 128 MiB and a 64 MiB reserve ran the 4096² matmul
 * 1-3% faster than with 64 and 32 (bench/notes.md, issue 9 §25). */
#define TSR__POOL_DEFAULT ((uint64_t)64 << 20)
/* The warm reserve a worker makes at start per executor thread, before it says hello (at most
 * the pool's cap): 32 MiB gained as much as 48 or 64 for a one-thread worker on the 4096²
 * matmul, and 48 would take the one-thread workers of the million-tiny-task graph to 0.92 of
 * issue 9's RSS bound (32: 0.75; bench/notes.md, issue 9 §13 and §25). */
#define TSR__RESERVE_DEFAULT ((uint64_t)32 << 20)
/* The buffer pool's cap of a worker with nexec executor threads: TSR__POOL_DEFAULT per thread
 * (a tenth of memory_limit when that is less), or what pool_bytes asks for (-1: no pool). */
uint64_t tsr__worker_pool_cap(const tsr_worker_options *o, int nexec);

typedef struct tsr__slab tsr__slab;

typedef struct tsr__chunkmem {
    atomic_uint_fast64_t bytes, peak;
    pthread_mutex_t mu; /* everything below */
    uint64_t cap;       /* most bytes the free lists keep; 0: none */
    int pages;          /* what its mappings ask for: TSR__PAGES_HUGE (the default) or _SMALL */
    /* Adapting the page kind (tsr__chunkmem_adapt): on or not, the last first touch of 2 MiB
     * seen in each kind (ms, indexed by TSR__PAGES_*), the current kind's slow touches in a row,
     * and how many times the kind changed. */
    int adapt;
    double touch_ms[3];
    unsigned slow;
    uint64_t switches;
    uint64_t pooled; /* bytes in the free lists */
    uint64_t mapped; /* bytes of the pool's mappings (slabs and large buffers) alive */
    uint64_t hits, misses, evicted, tick;
    /* The warm reserve (pool.c): nwarm granules of 2 MiB at warm, resident from the start;
     * gstate says which are in use; warm_idle counts the resident ones that are not. */
    char *warm;
    uint8_t *gstate;
    size_t nwarm;
    uint64_t warm_idle;
    uint64_t warm_stamp;  /* tick at which a granule last went idle (0: since start) */
    uint64_t pooled_warm; /* of pooled, the bytes whose memory is the reserve's */
    struct {
        tsr__buf *free; /* newest first */
        uint64_t stamp; /* tick of the class's last use */
        tsr__slab *slabs;
    } cls[TSR__POOL_CLASSES];
} tsr__chunkmem;

typedef struct tsr__poolstats {
    uint64_t pooled, mapped, hits, misses, evicted;
    uint64_t reserved, reserve_idle; /* the warm reserve's bytes, and those resident and unused */
    int pages;                       /* the kind new mappings ask for now */
    uint64_t switches;               /* times tsr__chunkmem_adapt's rule changed it */
} tsr__poolstats;

void tsr__chunkmem_init(tsr__chunkmem *m, uint64_t cap);
/* The pages the pool's mappings ask for from now on (common.h, TSR__PAGES_*): a worker sets what
 * tsr__pages_probe measured cheaper before it makes its reserve. */
void tsr__chunkmem_set_pages(tsr__chunkmem *m, int pages);
/* Lets the pool change the kind its mappings ask for while it runs (pool.c, "Page kinds"), from
 * what tsr__pages_probe measured a first touch of 2 MiB to cost in each kind. */
void tsr__chunkmem_adapt(tsr__chunkmem *m, double huge_ms, double small_ms);
/* Gives the pool a warm reserve of bytes (rounded down to 2 MiB; at most its cap), mapped and
 * touched now, so that slabs and large buffers come from memory that is resident already
 * (pool.c). Without memory for it, the pool simply has none. */
void tsr__chunkmem_reserve(tsr__chunkmem *m, uint64_t bytes);
/* tsr__chunkmem_drain, and the reserve's unused memory given back to the system too (it is
 * reused later, but no longer warm): for a worker near its memory limit. */
void tsr__chunkmem_release(tsr__chunkmem *m);
/* Drains the pool; every buffer must have come back. */
void tsr__chunkmem_destroy(tsr__chunkmem *m);
/* A counted buffer of size bytes (refs = 1), its contents undefined; any thread. NULL on
 * ENOMEM. m may be NULL (not counted, not pooled). */
tsr__buf *tsr__chunkmem_new(tsr__chunkmem *m, size_t size);
/* Drops one reference; the last one uncounts the bytes and gives the buffer back to m's pool.
 * b may be NULL. */
void tsr__chunkmem_unref(tsr__chunkmem *m, tsr__buf *b);
/* Gives every pooled buffer back to the system (the worker went idle), except the warm
 * reserve's memory, which stays resident for the next job (tsr__chunkmem_release gives it too). */
void tsr__chunkmem_drain(tsr__chunkmem *m);
void tsr__chunkmem_read(tsr__chunkmem *m, tsr__poolstats *out);

/* ---- Device tier: a GPU worker's chunk copies in device memory (devtier.c) ------------------ */

typedef struct tsr__devcopy tsr__devcopy;

typedef struct tsr__devtier {
    const tsr__devops *ops;
    void *ctx;
    tsr__devinfo info;
    int open, mu_ok;
    pthread_mutex_t mu; /* everything below, and every record */
    uint64_t limit, used, peak;
    tsr__devcopy *old, *young; /* resident copies, least recently used first */
    tsr__devcopy *orphans;     /* records whose host buffer went; freed by the GPU thread */
    uint64_t h2d_bytes, d2h_bytes, h2d_count, d2h_count, evicted;
} tsr__devtier;

typedef struct tsr__devstats {
    uint64_t used, peak, limit, h2d_bytes, d2h_bytes, h2d_count, d2h_count, evicted;
    uint64_t resident, dirty;
} tsr__devstats;

/* How a task uses a copy it acquires. */
enum {
    TSR__DEV_INPUT,    /* read: copied to the device if not resident (evicting as needed) */
    TSR__DEV_OUTPUT,   /* written whole: device memory only, no copy */
    TSR__DEV_PREFETCH, /* read, ahead of time: only into free room (three quarters of the limit at
                          most), never evicting */
};

/* GPU thread: opens device id with the backend; limit 0 = the default (tessera.h). */
int tsr__devtier_open(tsr__devtier *t, const tsr__devops *ops, int id, int64_t limit, char *err,
                      size_t errlen);
void tsr__devtier_close(tsr__devtier *t);   /* GPU thread: every device byte goes */
void tsr__devtier_destroy(tsr__devtier *t); /* after the GPU thread ended and every buffer went */
/* GPU thread: the device copy of b, resident and busy until released; NULL (message in err;
 * for PREFETCH, silently) when it cannot be made. */
void *tsr__devtier_acquire(tsr__devtier *t, tsr__buf *b, int mode, char *err, size_t errlen);
/* GPU thread: one acquire's work is done; wrote: the kernel wrote the copy (host now stale). */
void tsr__devtier_release(tsr__devtier *t, tsr__buf *b, int wrote);
/* GPU thread: makes b's host bytes current (d2h if the copy is dirty). */
int tsr__devtier_writeback(tsr__devtier *t, tsr__buf *b, char *err, size_t errlen);
/* GPU thread: the host bytes of b were written: its device copy goes. */
void tsr__devtier_invalidate(tsr__devtier *t, tsr__buf *b);
/* GPU thread: writes back the least recently used dirty idle copy: 1, 0 (none), or an error. */
int tsr__devtier_clean_one(tsr__devtier *t, char *err, size_t errlen);
/* GPU thread: gives back the device memory of copies whose host buffer went. */
void tsr__devtier_reap(tsr__devtier *t);
/* Any thread: are b's host bytes stale (a dirty device copy)? */
int tsr__devtier_stale(tsr__devtier *t, const tsr__buf *b);
void tsr__devtier_read(tsr__devtier *t, tsr__devstats *out); /* any thread */

/* ---- Chunk store: the chunks this worker holds for the scheduler ---------------------------- */

/* A stored chunk. Tiny chunks are stored by the tens of thousands, so the record is sized to its
 * shape and the store's index is a table of chain heads (about 8 to 16 bytes a chunk, half of it
 * again while the table grows) rather than a kmap (24 bytes a slot at most half full, and both
 * tables at once while it grows). */
typedef struct tsr__chunk {
    uint64_t job, id;
    tsr__buf *buf;           /* one reference owned by the store; NULL: spilled to disk */
    struct tsr__chunk *next; /* the store's chain for this bucket */
    uint8_t dtype, ndim;
    int64_t shape[]; /* ndim entries */
} tsr__chunk;

typedef struct tsr__store {
    tsr__chunk **heads; /* cap chains */
    size_t cap;         /* a power of two, or 0 */
    size_t len;
    uint64_t bytes, peak;
    tsr__chunkmem *mem; /* where dropped buffers are uncounted; NULL: not counted */
} tsr__store;

void tsr__store_init(tsr__store *s);
void tsr__store_free(tsr__store *s); /* drops every chunk */
/* Stores a chunk, taking over the caller's reference to buf (also on failure, where it is
 * released). An existing chunk under the same key is replaced. 0 or -ENOMEM. */
int tsr__store_put(tsr__store *s, uint64_t job, uint64_t id, tsr__buf *buf, uint8_t dtype,
                   uint8_t ndim, const int64_t *shape);
/* Borrowed; valid until the key is freed or replaced. NULL when absent. */
const tsr__chunk *tsr__store_get(const tsr__store *s, uint64_t job, uint64_t id);
/* Drops the store's reference; 1 if the key was present, else 0. The index shrinks as the store
 * empties, so a worker that once held many chunks does not keep their table. */
int tsr__store_drop(tsr__store *s, uint64_t job, uint64_t id);
/* The disk tier (spill.c): the chunk's bytes leave the store (its buffer, the store's reference
 * handed to the caller; NULL when absent or already out) while its record stays, or come back
 * (taking over buf's reference; -1 when the key is absent or holds bytes). A chunk whose buf is
 * NULL is on disk. */
tsr__buf *tsr__store_evict(tsr__store *s, uint64_t job, uint64_t id);
int tsr__store_restore(tsr__store *s, uint64_t job, uint64_t id, tsr__buf *buf);
static inline size_t tsr__store_count(const tsr__store *s) {
    return s->len;
}

/* ---- Topology and pinning ------------------------------------------------------------------ */

/* Parses cpus (hwloc list syntax, "0-3,6") into set; NULL means the PUs this process may run
 * on. The result is restricted to the topology's allowed PUs. 0 or TSR_EINVALID (unparsable,
 * or nothing left). */
int tsr__worker_cpuset(hwloc_topology_t topo, const char *cpus, hwloc_bitmap_t set);
/* The PUs executor k binds to: the k-th core intersecting set (PUs when the topology has no
 * cores), wrapping round, intersected with set. 0 or TSR_EINVALID (set holds no core). */
int tsr__worker_pick_core(hwloc_topology_t topo, hwloc_const_bitmap_t set, int k,
                          hwloc_bitmap_t out);

/* ---- The worker ---------------------------------------------------------------------------- */

typedef struct tsr__worker tsr__worker;
typedef struct wtask wtask;
typedef struct wwb wwb;
typedef struct wfetch wfetch;
typedef struct peer_in peer_in;

/* A decoded kernel descriptor, shared by every task whose compute entry carried the same bytes
 * (task.c keeps the last few in a small cache). Counted on the loop thread; executors only read
 * d. One allocation: i, f, s and the encoded bytes follow the struct. */
typedef struct wkdesc {
    tsr_kdesc d;
    uint32_t refs;
    uint32_t binlen; /* bytes of bin; 0 when decoded from a msgpack array (not cached) */
    uint64_t hash;
    const unsigned char *bin;
} wkdesc;

#define TSR__KCACHE_SLOTS 256

/* A waiter: input `idx` of task `t`. */
typedef struct wwaiter {
    wtask *t;
    uint32_t idx;
} wwaiter;

/* Input flags from the compute message (PROTOCOL.md), and the GPU thread's own: DEVPIN, the
 * input's device copy was acquired ahead of time (prefetch) and is released when the task ends. */
enum { TSR__IN_DONATE = 1, TSR__IN_RECOMPUTE = 2, TSR__IN_DEVPIN = 0x40 };

/* A write-back asked of the GPU thread: the loop holds a reference on buf until it is done. */
struct wwb {
    tsr__buf *buf;
    int rc;
    wwb *next;
};

typedef struct wtask_in {
    uint64_t job, id;
    tsr__buf *buf; /* a reference once the input is available */
    wfetch *fetch; /* the fetched copy this input uses (its users count includes us), or NULL */
    uint8_t dtype, ndim;
    uint8_t flags; /* TSR__IN_* */
    int64_t shape[TSR_MAX_NDIM];
} wtask_in;

struct wtask {
    uint64_t job, id;
    wkdesc *kd; /* one reference */
    uint32_t nin;
    uint32_t cap_in;  /* inputs the allocation has room for */
    uint32_t missing; /* inputs not yet available (+1 while the task is being set up) */
    uint8_t failed;   /* erred already sent (or, internal, its waiters failed) */
    uint8_t mapped;   /* listed in w->pending */
    uint8_t internal; /* a local recompute of an input: kept as a replica, never reported */
    uint8_t drop;     /* freed while it ran: hand the chunk to waiters, do not keep it */
    uint8_t queued;   /* handed to the executors (its donated inputs left the store then) */
    uint8_t traced;   /* its job is traced: done reports when and where the kernel ran */
    uint8_t kept;     /* erred before it was queued: its donated inputs stay in the store */
    int alias;        /* the input whose buffer is also the output (donation), or -1 */
    /* Tasks on this worker waiting for this one's chunk. */
    wwaiter *deps;
    size_t ndeps, deps_cap;
    /* Filled by the executor. */
    tsr__buf *out;
    int rc;
    uint16_t thread; /* the executor's index */
    double t0;       /* when the kernel started (tsr__now) */
    double seconds;
    wtask *qnext;               /* executor queue / completion queue / pool link */
    wtask *all_prev, *all_next; /* every live task, for shutdown (loop thread only) */
    char *err;                  /* why it failed (malloc'd, only when rc != 0; may be NULL) */
    wtask_in in[];              /* nin entries */
};

/* A fetch is WAITING while its request is in w->fetch (queued or sent), READY once its bytes
 * arrived. */
enum { FETCH_WAITING = 0, FETCH_READY };

struct wfetch {
    uint64_t job, id;
    int state;
    tsr__fetch_req req; /* the request in w->fetch while not READY */
    tsr__worker *w;
    tsr__buf *buf;
    uint8_t dtype, ndim;
    uint8_t traced; /* for a traced job: the transfer goes into done's tr */
    int64_t shape[TSR_MAX_NDIM];
    wwaiter *waiters; /* inputs waiting for the bytes */
    size_t nwaiters, waiters_cap;
    size_t users; /* task inputs holding this copy; at 0 (and READY) the copy is dropped */
    uint8_t keep; /* the scheduler asked us to hold it (replicate): stored once READY */
    /* Bytes it will bring (0 when unknown: a replicate's); counted: what of them is in
     * w->fetch_expect, from when it is asked for until its bytes arrive or it fails. */
    uint64_t expect, counted;
    /* Not asked for yet: the worker is over its spill threshold (task.c, tsr__task_pump_fetches).
     */
    struct wfetch *dnext;
    char daddr[80];
};

/* A replica: a source chunk this worker made itself for its own tasks (RECOMPUTE), kept in the
 * store. Replicas are kept least recently used first, at most w->rep_cap bytes of them
 * (TSR__REPLICA_DEFAULT, or a tenth of the memory limit): beyond that, making a source chunk
 * again in a pooled buffer costs less than holding it (task.c, "Replicas"). 2 GiB since packed
 * sources (PACK_SOURCE): made and packed, a tile costs twice a plain source's making, and at
 * 256 MiB the 8192² matmul at chunk 512 made B's packed tiles 11 times each (bench/notes.md
 * §31: 2 GiB ran it 2.1% faster, and 1024 the same). */
#define TSR__REPLICA_DEFAULT ((uint64_t)2048 << 20)
/* A source chunk fewer tasks than this still need is made again per use, not kept; a packed
 * source tile (PACK_SOURCE), which costs 2-4 times as much to make, from 2 (task.c). */
#define TSR__REPLICA_MIN_USES 6
#define TSR__REPLICA_MIN_USES_PACKED 2
typedef struct wreplica {
    uint64_t job, id;
    const tsr__buf *buf; /* the store's buffer when it was kept (identity only) */
    size_t bytes;
    struct wreplica *prev, *next;
} wreplica;

/* ---- Disk tier (spill.c) ---------------------------------------------------------------------
 *
 * With a memory limit, stored chunks of TSR__SPILL_MIN bytes and more are tracked least recently
 * used first; above TSR__SPILL_HIGH of the limit the oldest ones nobody else holds are written
 * to the worker's spill directory by the I/O thread and their memory released, until the worker
 * holds TSR__SPILL_LOW. Above TSR__PAUSE_HIGH it is paused (the scheduler sends it no new work)
 * until under TSR__PAUSE_LOW. A spilled chunk a task or a peer needs is read back by the same
 * thread. Replicas are never spilled: they are dropped (made again when needed). */
#define TSR__SPILL_MIN ((size_t)64 << 10)
#define TSR__SPILL_HIGH 0.70
#define TSR__SPILL_LOW 0.60
#define TSR__PAUSE_HIGH 0.80
#define TSR__PAUSE_LOW 0.70

typedef struct wspill {
    uint64_t job, id;
    size_t bytes;
    uint8_t on_disk; /* its file holds the chunk's bytes */
    uint8_t writing; /* a write is under way */
    uint8_t reading; /* a read is under way; waiters wait for it */
    uint8_t linked;  /* in the least-recently-used list (its bytes are in memory) */
    uint8_t queued;  /* wants reading, waits for memory (in w->rd_head's list) */
    uint8_t has_off; /* off names its extent of the spill file */
    uint64_t off;
    struct wspill *rd_next;
    wwaiter *waiters;
    size_t nwaiters, waiters_cap;
    struct wspill *prev, *next;
} wspill;

/* A request to the I/O thread. */
enum { WIO_WRITE, WIO_READ, WIO_FREE };
typedef struct wio {
    int op;
    uint64_t job, id;
    tsr__buf *buf; /* WRITE: a reference to the bytes; READ: the buffer to fill */
    uint64_t off;  /* where in the spill file */
    uint64_t len;  /* FREE: the extent's length */
    int rc;
    double seconds; /* how long the I/O thread took */
    struct wio *next;
} wio;

int tsr__spill_start(tsr__worker *w);    /* with a memory limit: the I/O thread */
void tsr__spill_stop(tsr__worker *w);    /* joins the I/O thread (its current request ends) */
void tsr__spill_cleanup(tsr__worker *w); /* after stop: files, directory, records */
/* Loop thread. A chunk just stored (buf is the store's), used, or freed. */
void tsr__spill_track(tsr__worker *w, uint64_t job, uint64_t id, const tsr__buf *buf);
void tsr__spill_touch(tsr__worker *w, uint64_t job, uint64_t id);
void tsr__spill_forget(tsr__worker *w, uint64_t job, uint64_t id);
/* Input idx of t is a stored chunk on disk: read it back and wake t then. 0 or -ENOMEM. */
int tsr__spill_wait(tsr__worker *w, uint64_t job, uint64_t id, wtask *t, uint32_t idx);
/* A peer asks for a chunk on disk: read it back (tsr__peer_resume follows). 0 or -ENOMEM. */
int tsr__spill_fetch(tsr__worker *w, uint64_t job, uint64_t id);
/* Spills or pauses as the bytes held ask; sends the paused state when it changes. */
void tsr__spill_check(tsr__worker *w);
/* Completed I/O (on async): 1 if a chunk came back (gets may be answered). */
int tsr__spill_done(tsr__worker *w);

/* task.c, for the disk tier: a chunk the waiters need is here again, or could not be read. */
void tsr__task_inputs_ready(tsr__worker *w, wwaiter *deps, size_t n, const tsr__chunk *ch);
void tsr__task_inputs_failed(tsr__worker *w, wwaiter *deps, size_t n, const char *msg);
/* Asks for the fetches held back while the worker held too much, as far as memory allows now. */
void tsr__task_pump_fetches(tsr__worker *w);

/* Gets outstanding per peer connection: tiny chunks need many per round trip. */
#define TSR__PEER_MAX_INFLIGHT 64

struct peer_in {
    tsr__worker *w;
    tsr__conn *conn;
    int greeted;
    tsr__wbatch out; /* small replies of this turn */
    /* Gets waiting, in order, behind one whose chunk is being written back from the device. */
    tsr__m_key *parked;
    size_t nparked, parked_cap;
    peer_in *prev, *next;
};

typedef struct wexec {
    tsr__worker *w;
    int k;
    pthread_t th;
    int started;
    hwloc_bitmap_t set;
} wexec;

/* A GPU worker's device cache, as `st` in done and the hello report it (PROTOCOL.md): the GPU
 * tier (issue 10) sets these, on the loop thread; stats.c and the hello only read them. While
 * `on` is 0 (a CPU worker) none of them is sent. */
typedef struct wdevstats {
    int on;                        /* this worker computes on a device: report the rest */
    char name[64];                 /* the device's name (hello dev_name) */
    uint64_t limit;                /* device bytes the chunk cache may use (dev_limit) */
    uint64_t used;                 /* device bytes the cache holds now (dev_used) */
    uint64_t h2d_bytes, d2h_bytes; /* bytes copied host to device, device to host, since start */
    uint64_t evicted;              /* chunks evicted from the device since start (dev_evicted) */
} wdevstats;

/* The disk tier (spill.c), as `st` reports it: the tier sets these on the loop thread; stats.c
 * only reads them. While `on` is 0 (no memory limit: nothing is ever spilled) none is sent. A
 * worker whose paused state changes sends a done with no items and its st at once. */
typedef struct wspillstats {
    int on;
    uint64_t spilled_bytes;    /* chunk bytes written to disk since start (spilled_bytes) */
    uint64_t unspilled_bytes;  /* chunk bytes read back from disk since start (unspilled_bytes) */
    uint64_t disk_bytes;       /* chunk bytes on disk now (disk_bytes) */
    int paused;                /* over the pause threshold: send no new work (paused) */
    double spill_s, unspill_s; /* the I/O thread's seconds writing and reading (spill_s, ...) */
} wspillstats;

/* What `st` in done reports (PROTOCOL.md), loop thread only; chunk bytes live in w->mem. */
typedef struct wstats {
    double busy_s;
    uint64_t tasks, in_bytes, out_bytes;
    double in_s;        /* closed intervals with at least one fetch in progress */
    size_t nfetch;      /* fetches in progress now */
    double fetch_since; /* when nfetch last went from 0 to 1 */
    uint64_t rss, rss_peak;
    double rss_at;              /* when they were read */
    uint64_t msgs_in, msgs_out; /* compute and done messages, for the log at exit */
    uint64_t in_place;          /* tasks that wrote into a donated input's buffer */
    int status_fd;              /* /proc/self/status, or -1 */
    wdevstats dev;              /* a GPU worker's device cache (zero on a CPU worker) */
    wspillstats spill;          /* the disk tier (zero without a memory limit) */
} wstats;

/* One finished task for the next done message; start and thread for traced jobs only. */
typedef struct done_item {
    uint64_t job, id, nbytes;
    double seconds;
    double start; /* wall clock */
    uint16_t thread;
    uint8_t traced;
} done_item;

/* A completed fetch of a traced job, for the next done message's tr (wall clock times). */
typedef struct wxfer {
    uint64_t job, id, nbytes;
    double start, end;
    char from[80];
} wxfer;

/* Trace times are CLOCK_REALTIME, which every process on the machine shares. */
static inline double tsr__wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct tsr__worker {
    uv_loop_t loop;
    const tsr_worker_options *opts;
    tsr__logger log;
    char who[96];
    char name[64];
    char peer_addr[96];
    char cpus[256];
    int exit_code;
    int stopping;
    int retiring; /* retire was sent: the scheduler moves our chunks, then sends shutdown */
    int loop_ok, server_ok, async_ok, check_ok;

    uv_tcp_t server;
    uv_async_t async;
    uv_check_t check; /* end of each loop turn: hand the turn's ready tasks to the executors */
    uv_timer_t idle;  /* a while after the last task: give memory back (worker.c, on_idle) */
    int idle_ok;
    int worked;      /* tasks ran or chunks went since memory was last given back */
    uv_timer_t beat; /* liveness: heartbeats out, a silent scheduler or peer (worker.c) */
    int beat_ok;
    uint64_t heartbeat_ms, timeout_ms, last_beat;

    tsr__conn *sched;
    int welcomed;
    /* The scheduler's capability key (welcome's ckey, docs/security.md): gets on the peer port
     * must carry HMAC(ckey, job); this worker's own fetches compute theirs. A scheduler that
     * sends none (has_ckey 0) leaves the peer port without capability checks. */
    tsr__capkey ckey;
    int has_ckey;
    /* The data roots, as real paths (dataroot.c); roots_any: no restriction on paths. */
    char **roots;
    int nroots, roots_any;
    tsr__plugins plugins; /* plugin directories and the libraries loaded from them (plugins.c) */
    uint64_t next_peer_id;

    tsr__chunkmem mem;
    int mem_ok;
    tsr__store store;
    tsr__kmap pending;           /* (job, id) -> wtask* not yet finished on this worker */
    tsr__kmap fetched;           /* (job, id) -> wfetch* */
    tsr__kmap replicas;          /* (job, id) -> wreplica*, also in the list below */
    wreplica *rep_old, *rep_new; /* least and most recently used */
    uint64_t rep_bytes, rep_cap; /* rep_cap >= 1 (worker.c: replica_cap) */
    uint64_t rep_made, rep_dropped;
    wtask *all;
    tsr__fetch_pool fetch; /* fetches from other workers (peer.c) */
    peer_in *pins;
    int over_limit;
    wstats st;
    done_item *done;
    size_t ndone, done_cap;
    wxfer *xfers; /* traced fetches completed since the last done */
    size_t nxfer, xfer_cap;
    /* CLOCK_REALTIME minus tsr__now's clock, read once, at the first traced completion
     * (task.c): one offset for every span keeps back-to-back spans of a thread from overlapping. */
    double wall_offset;
    int wall_offset_ok;

    /* Descriptor decoding without per-task allocations: a zone reused for each bin, and the
     * last descriptors seen, by hash of their bytes. */
    msgpack_zone *zone;
    wkdesc *kcache[TSR__KCACHE_SLOTS];
    wtask *task_pool; /* freed small tasks for reuse */
    size_t npool;

    hwloc_topology_t topo;
    int topo_ok;
    int nexec;
    wexec *execs;

    /* Tasks made ready during this loop turn (loop thread only), queued in one go at its end. */
    wtask *rq_head, *rq_tail;
    size_t nrq;
    /* Tasks given to the executors (tsr__exec_push) whose completion the loop has not taken yet
     * (tsr__task_finished); loop thread only. The disk tier reads ahead of them only while it is
     * under its threshold, or when they would otherwise run dry (spill.c, read_fits). */
    size_t nbusy;
    /* Bytes of the fetches asked for whose bytes have not arrived (task.c, fetch_fits). */
    uint64_t fetch_expect;
    /* Executor queue (FIFO), guarded by qmu; qidle executors wait on qcv. */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    wtask *qhead, *qtail;
    int qidle;
    int qstop;
    /* Completion queue, guarded by cmu; the loop drains it on async. */
    pthread_mutex_t cmu;
    wtask *chead, *ctail;
    int sync_ok;

    /* A GPU worker (gpu.c): one GPU executor instead of CPU executors, and the device tier. */
    int gpu;
    tsr__devtier dev;
    hwloc_bitmap_t allowed; /* the cores the options allow; the GPU thread picks one near it */
    wwb *wb_head, *wb_tail; /* write-backs asked of the GPU thread (under qmu) */
    wwb *wb_done;           /* and done (under cmu) */
    int gpu_state;          /* 0 starting, 1 running, < 0 failed to start (under qmu) */
    pthread_cond_t gcv;     /* gpu_state changed */
    char gpu_err[256];
    uint64_t gpu_fallbacks; /* device tasks run on the host for want of device memory */

    /* The disk tier (spill.c). */
    tsr__kmap spill;         /* (job, id) -> wspill*: tracked stored chunks */
    wspill *sp_old, *sp_new; /* those in memory, least recently used first */
    uint64_t spill_hi, spill_lo, pause_hi, pause_lo; /* bytes; 0 without a limit */
    uint64_t spill_writing;                          /* bytes being written now */
    uint64_t spill_reading;                          /* bytes being read back now */
    wspill *rd_head, *rd_tail; /* reads waiting for memory, first come first served */
    wfetch *fd_head, *fd_tail; /* fetches held back for memory (task.c), in order */
    char spill_path[4096];     /* the worker's own spill directory; "" until the first spill */
    int spill_fd;              /* the spill file (unlinked at once: it goes with the process) */
    uint64_t spill_end;        /* the next free offset in it */
    int spill_broken;          /* a write failed: the worker keeps its chunks in memory */
    int spill_report;          /* the paused state changed: send st at the end of the turn */
    uint64_t spill_stuck_at;   /* bytes held when it resumed with nothing to spill (spill.c) */
    int io_ok, io_started, io_stop;
    pthread_t io_th;
    pthread_mutex_t iomu; /* io_head, io_tail, io_stop */
    pthread_cond_t iocv;
    wio *io_head, *io_tail;
    wio *io_done; /* under cmu */
};

/* Whether the executors would run dry without more work: fewer tasks given to them than they
 * are. Past the spill threshold, a read back (spill.c) or a fetch (task.c) starts only then. */
static inline int tsr__exec_would_idle(const tsr__worker *w) {
    return w->nbusy < (size_t)(w->nexec > 0 ? w->nexec : 1);
}

/* Outputs smaller than this are allocated by the loop when their task is queued, larger ones by
 * the executor from the buffer pool (task.c says why). */
#define TSR__LOOP_ALLOC_MAX (128 * 1024)

/* exec.c: the executor threads. Ready tasks gather in the loop's run queue (tsr__exec_push) and
 * move to the executors once per loop turn (tsr__exec_flush, one lock and at most one wake-up
 * per idle executor). */
int tsr__exec_start(tsr__worker *w);
void tsr__exec_stop(tsr__worker *w); /* joins every started thread (their current task ends) */
void tsr__exec_push(tsr__worker *w, wtask *t);
void tsr__exec_flush(tsr__worker *w);
/* Moves the completion queue into a local list (loop thread). */
wtask *tsr__exec_take_done(tsr__worker *w);

/* The host kernel of t on host buffers (CPU executors, and a GPU worker's host-only kernels):
 * allocates t->out when the loop did not; t->rc and t->err say how it went. */
void tsr__exec_run_host(tsr__worker *w, wtask *t);
/* Before any kernel (host or device) touches t's buffers: each input's holds exactly its shape
 * and dtype, and the output's (when there is one yet) the descriptor's chunk. 0, or TSR_EINVALID
 * with a message. */
int tsr__exec_check_buffers(const wtask *t, char *msg, size_t size);
/* Hands finished tasks to the loop (executor threads). */
void tsr__exec_publish(tsr__worker *w, wtask **head, wtask **tail);

/* gpu.c: the GPU executor. */
int tsr__gpu_start(tsr__worker *w); /* starts it and waits until the device is open */
/* Loop thread: asks the GPU thread to make buf's host bytes current (tsr__peer_resume follows
 * when done). 0 or -ENOMEM. */
int tsr__gpu_writeback(tsr__worker *w, tsr__buf *buf);
/* Loop thread: write-backs done since last time: drops their references; 1 if there were any. */
int tsr__gpu_take_writebacks(tsr__worker *w);

/* task.c: the task life cycle on the loop thread. */
/* Checks a compute message completely, then starts its tasks; NULL or why it is malformed. */
const char *tsr__task_compute(tsr__worker *w, const tsr__msg_compute *m);
/* Drops the chunks a free message names; NULL or why it is malformed. */
const char *tsr__task_free_keys(tsr__worker *w, const tsr__msg_free *m);
/* An executor finished t: keep its chunk, wake its waiters, queue its done item. */
void tsr__task_finished(tsr__worker *w, wtask *t);
void tsr__task_free(tsr__worker *w, wtask *t);
void tsr__task_cleanup(tsr__worker *w); /* at exit: every task, fetch, pool and cache entry */
/* No task is live: gives back the task pool and the empty tables (see on_idle in worker.c). */
void tsr__task_idle(tsr__worker *w);

/* worker.c: messages to the scheduler. */
/* kept: the task never reached an executor, so the inputs it was given to consume (DONATE) are
 * still in the store (PROTOCOL.md, erred). */
/* msg: NULL when the chunk is held now, else why it could not be. */
void tsr__worker_send_replicated(tsr__worker *w, uint64_t job, uint64_t id, uint64_t nbytes,
                                 const char *msg);
/* replicate: fetch a chunk from a retiring worker and keep it (task.c). NULL or why not. */
const char *tsr__task_replicate(tsr__worker *w, const tsr__msg_replicate *m);
/* A fetched copy the scheduler asked us to keep goes into the store (task.c). */
void tsr__task_keep_fetched(tsr__worker *w, wfetch *f);
void tsr__worker_send_erred(tsr__worker *w, uint64_t job, uint64_t id, const char *msg, int kept);

/* stats.c */
void tsr__stats_init(wstats *st);
void tsr__stats_free(wstats *st);
void tsr__stats_fetch_begin(wstats *st);
void tsr__stats_fetch_end(wstats *st);
/* Fills done's "st" record (PROTOCOL.md), every field present. */
void tsr__stats_fill(tsr__worker *w, tsr__m_wstats *out);
/* Reads VmHWM and VmRSS (bytes) now; 0 or a negative code. */
int tsr__read_rss(int fd, uint64_t *hwm, uint64_t *rss);

/* peer.c: the peer server (get -> chunk/missing) and fetches from other workers. */
void tsr__peer_on_connection(uv_stream_t *server, int status);
/* Requests a chunk from addr for a fetch entry already in w->fetched. 0 or a negative code. */
int tsr__peer_fetch(tsr__worker *w, wfetch *f, const char *addr);
void tsr__peer_close_all(tsr__worker *w);
/* Answers the gets that waited for write-backs, as far as their chunks are current now. */
void tsr__peer_resume(tsr__worker *w);
/* Sets up w->fetch (before the loop runs). */
void tsr__peer_init(tsr__worker *w);
/* End of a loop turn: sends the gets queued during it and the replies gathered, one write per
 * connection. */
void tsr__peer_flush(tsr__worker *w);

/* task.c: what peer.c reports back. */
void tsr__worker_fetch_done(tsr__worker *w, wfetch *f);
void tsr__worker_fetch_failed(tsr__worker *w, wfetch *f, const char *why);
/* worker.c: packs the hello every outgoing connection starts with (role "peer"). */
void tsr__worker_pack_peer_hello(tsr__worker *w, tsr__conn *c, msgpack_sbuffer *sb);

/* dataroot.c: where `load` may read (docs/security.md). */
/* ---- plugins.c: user kernels (docs/plugins.md) ---- */
/* Resolves the options' plugin directories (real paths; one that does not exist fails with
 * TSR_EINVALID, logged) and lists the libraries in them (announced in the hello). */
int tsr__plugins_init(tsr__worker *w);
void tsr__plugins_free(tsr__worker *w); /* closes the libraries loaded */
/* The function "LIBRARY:SYMBOL" names, from the plugin directories only: LIBRARY is a bare name
 * looked up as DIR/libLIBRARY.so then DIR/LIBRARY.so in each directory in order, opened on first
 * use (its ABI checked) and kept open. 0, or a negative code with why in msg. Any thread. */
int tsr__plugins_resolve(tsr__worker *w, const char *spec, tsr_plugin_fn *fn, char *msg,
                         size_t msglen);

/* Resolves the options' data roots (or the default) into w->roots. 0 or TSR_EINVALID (logged). */
int tsr__roots_init(tsr__worker *w);
void tsr__roots_free(tsr__worker *w);
/* 0 when d (a LOAD) reads a file or store under a root whose header matches d; else a negative
 * code and why in msg. Any thread: w->roots is fixed once the worker started. */
int tsr__roots_check_load(const tsr__worker *w, const tsr_kdesc *d, char *msg, size_t msglen);
/* 0 when path (which may not exist yet: its directory must) lies under a root, for writes. */
int tsr__roots_check_write(const tsr__worker *w, const char *path, char *msg, size_t msglen);

#endif
