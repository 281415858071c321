/* What the worker's files share: the chunk store, the (job, id) hash map under it, the hwloc
 * pinning helpers, and the worker's state. The loop thread owns everything here except the
 * executor queue and the completion queue, which are guarded by their mutexes. */
#ifndef TSR_WORKER_PRIV_H
#define TSR_WORKER_PRIV_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <hwloc.h>
#include <uv.h>

#include "common/common.h"
#include "graph/graph.h"
#include "wire/wire.h"

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

/* ---- Chunk store: the chunks this worker holds for the scheduler ---------------------------- */

typedef struct tsr__chunk {
    uint64_t job, id;
    tsr__buf *buf; /* one reference owned by the store */
    uint8_t dtype, ndim;
    int64_t shape[TSR_MAX_NDIM];
} tsr__chunk;

typedef struct tsr__store {
    tsr__kmap map; /* values are tsr__chunk* */
    uint64_t bytes, peak;
} tsr__store;

void tsr__store_init(tsr__store *s);
void tsr__store_free(tsr__store *s); /* drops every chunk */
/* Stores a chunk, taking over the caller's reference to buf (also on failure, where it is
 * released). An existing chunk under the same key is replaced. 0 or -ENOMEM. */
int tsr__store_put(tsr__store *s, uint64_t job, uint64_t id, tsr__buf *buf, uint8_t dtype,
                   uint8_t ndim, const int64_t *shape);
/* Borrowed; valid until the key is freed or replaced. NULL when absent. */
const tsr__chunk *tsr__store_get(const tsr__store *s, uint64_t job, uint64_t id);
/* Drops the store's reference; 1 if the key was present, else 0. */
int tsr__store_drop(tsr__store *s, uint64_t job, uint64_t id);
static inline size_t tsr__store_count(const tsr__store *s) {
    return s->map.len;
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
typedef struct wfetch wfetch;
typedef struct peer_out peer_out;
typedef struct peer_in peer_in;

/* A waiter: input `idx` of task `t`. */
typedef struct wwaiter {
    wtask *t;
    uint32_t idx;
} wwaiter;

typedef struct wtask_in {
    uint64_t job, id;
    tsr__buf *buf; /* a reference once the input is available */
    uint8_t dtype, ndim;
    int64_t shape[TSR_MAX_NDIM];
    wfetch *fetch; /* the fetched copy this input uses (its users count includes us), or NULL */
} wtask_in;

struct wtask {
    uint64_t job, id;
    tsr_kdesc d; /* i/f/s point at ip/fp/sp below */
    int64_t *ip;
    double *fp;
    char *sp;
    uint32_t nin;
    wtask_in *in;
    uint32_t missing; /* inputs not yet available (+1 while the task is being set up) */
    int failed;       /* erred already sent */
    int mapped;       /* listed in w->pending */
    /* Tasks on this worker waiting for this one's chunk. */
    wwaiter *deps;
    size_t ndeps, deps_cap;
    /* Filled by the executor. */
    tsr__buf *out;
    int rc;
    double seconds;
    char msg[256];
    wtask *qnext;               /* executor queue / completion queue link */
    wtask *all_prev, *all_next; /* every live task, for shutdown (loop thread only) */
};

enum { FETCH_WAITING = 0, FETCH_SENT, FETCH_READY };

struct wfetch {
    uint64_t job, id;
    int state;
    peer_out *peer;
    tsr__buf *buf;
    uint8_t dtype, ndim;
    int64_t shape[TSR_MAX_NDIM];
    wwaiter *waiters; /* inputs waiting for the bytes */
    size_t nwaiters, waiters_cap;
    size_t users;  /* task inputs holding this copy; at 0 (and READY) the copy is dropped */
    wfetch *qnext; /* the peer's send queue */
};

#define TSR__PEER_MAX_INFLIGHT 4

struct peer_out {
    tsr__worker *w;
    tsr__conn *conn;
    char addr[80];
    int connected, welcomed;
    wfetch *qhead, *qtail;                    /* not yet requested */
    wfetch *inflight[TSR__PEER_MAX_INFLIGHT]; /* requested, in request order (a ring) */
    int ihead, ninflight;
    peer_out *next;
};

struct peer_in {
    tsr__worker *w;
    tsr__conn *conn;
    int greeted;
    peer_in *prev, *next;
};

typedef struct wexec {
    tsr__worker *w;
    int k;
    pthread_t th;
    int started;
    hwloc_bitmap_t set;
} wexec;

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
    int loop_ok, server_ok, async_ok, sig_ok;

    uv_tcp_t server;
    uv_async_t async;
    uv_signal_t sigint, sigterm;

    tsr__conn *sched;
    int welcomed;
    uint64_t next_peer_id;

    tsr__store store;
    tsr__kmap pending; /* (job, id) -> wtask* not yet finished on this worker */
    tsr__kmap fetched; /* (job, id) -> wfetch* */
    wtask *all;
    peer_out *peers;
    peer_in *pins;
    int over_limit;

    hwloc_topology_t topo;
    int topo_ok;
    int nexec;
    wexec *execs;

    /* Executor queue (FIFO), guarded by qmu. */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    wtask *qhead, *qtail;
    int qstop;
    /* Completion queue, guarded by cmu; the loop drains it on async. */
    pthread_mutex_t cmu;
    wtask *chead, *ctail;
    int sync_ok;
};

/* exec.c: starts/stops the executor threads; the loop hands ready tasks to tsr__exec_push. */
int tsr__exec_start(tsr__worker *w);
void tsr__exec_stop(tsr__worker *w); /* joins every started thread (their current task ends) */
void tsr__exec_push(tsr__worker *w, wtask *t);
/* Moves the completion queue into a local list (loop thread). */
wtask *tsr__exec_take_done(tsr__worker *w);

/* peer.c: the peer server (get -> chunk/missing) and fetches from other workers. */
void tsr__peer_on_connection(uv_stream_t *server, int status);
/* Requests a chunk from addr for a fetch entry already in w->fetched. 0 or a negative code. */
int tsr__peer_fetch(tsr__worker *w, wfetch *f, const char *addr);
void tsr__peer_close_all(tsr__worker *w);

/* worker.c: what peer.c reports back. */
void tsr__worker_fetch_done(tsr__worker *w, wfetch *f);
void tsr__worker_fetch_failed(tsr__worker *w, wfetch *f, const char *why);
/* Packs the hello every outgoing connection starts with (role "peer"). */
void tsr__worker_pack_peer_hello(tsr__worker *w, msgpack_sbuffer *sb);

#endif
