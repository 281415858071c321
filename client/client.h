/* What the files of client/ share: the runtime state of a connected client (tsr__rt) and the
 * functions one concern offers the others. client/ is the network side of the API (session,
 * compute, fetch, stats, trace, the embedded local cluster); it builds on array/, which must
 * never include this header. Everything here runs on the caller's thread inside the blocking
 * API calls, except tsr_client_interrupt() and tsr_client_progress(). */
#ifndef TSR_CLIENT_CLIENT_H
#define TSR_CLIENT_CLIENT_H

#include <stdatomic.h>
#include <stdio.h>
#include <sys/types.h>

#include "array/array.h"
#include "array/client.h"
#include "tessera/tessera.h"
#include "wire/fetch.h"
#include "wire/msg.h"
#include "wire/wire.h"

struct json_t;
typedef struct tsr__fetch tsr__fetch;
typedef struct tsr__ostream tsr__ostream;

/* Where a finished job's outputs are now, as a `finished` that came again after a recovery
 * listed them (the scheduler makes lost output chunks again and says so): sorted by id. */
typedef struct tsr__moved_out {
    uint32_t id;
    char *addr; /* owned; NULL for a chunk listed without one (a streamed chunk, released) */
} tsr__moved_out;
typedef struct tsr__moved {
    uint64_t job;
    size_t n;
    tsr__moved_out *v;
} tsr__moved;

typedef struct tsr__rt {
    tsr_client *c;
    /* What the blocking call currently waits for. */
    int welcomed;
    int failed; /* a negative code once the wait must end in failure */
    char failmsg[1024];
    /* Set by tsr_client_interrupt (any thread, a signal handler); cleared when a blocking call
     * starts and when the call it interrupted returns, so that it ends one call only. */
    atomic_int interrupted;
    uv_async_t interrupt;
    uv_timer_t timer;
    /* Liveness (session.c): checks, while a blocking call waits, that the scheduler still sends
     * something (it sends a heartbeat every second). */
    uv_timer_t live;
    uint64_t live_ms, live_tick, live_last;
    /* Job tracking (one submission at a time). */
    uint64_t job;
    int accepted, finished;
    uint64_t submitted, answered; /* submissions sent, and answered (accepted or rejected) */
    tsr_progress progress;
    const tsr_compute_options *copts;
    double t0;
    double last_cb; /* when the progress callback last ran */
    uint32_t *out_ids;
    char **out_addr;
    size_t nout;
    struct json_t *stats; /* of the last finished job (tsr_client_stats_json), or NULL */
    uint64_t ntasks;      /* tasks in the graph submitted last */
    /* Monitor snapshots. The scheduler sends one unasked right after `welcome` (PROTOCOL.md),
     * then one per request, in order on the one connection: hello_info says the unasked one is
     * still to come, so that it is never taken for the answer to a request. */
    struct json_t *info;
    int hello_info;
    uint64_t info_asked, info_got;
    int info_ready;
    /* wait_workers; also carries a failed task's array index */
    int64_t workers;
    int64_t failed_task; /* a failed message's task id (-1: none), for naming its chunk */
    int got_workers;
    /* Fetching (fetch.c): the peer connections, and the requests of the call in progress (a
     * call cancels what it still waits for when it returns, so none outlive it). */
    tsr__fetch_pool pool;
    tsr__fetch *outstanding;
    int64_t noutstanding;
    tsr_array *array; /* the array being fetched; NULL between fetches */
    int (*sink)(struct tsr__rt *rt, tsr__fetch *f);
    void *sink_user;
    int64_t next_chunk; /* next chunk index to request */
    int64_t chunks_done;
    int fetch_complete;
    /* A read's chunks whose holder failed them (fetch.c): `lost` wait for the scheduler to
     * report them again (a `finished` after a recovery), `retry` are asked for again first. */
    int64_t *lost, *retry;
    size_t nlost, nretry, lostcap, retrycap;
    double lost_since; /* when a chunk was lost with none fetched since; 0 if none */
    double lost_retry; /* when lost chunks were last asked for again where they were */
    char lost_why[600];
    tsr__moved *moved; /* finished jobs' outputs reported again (compute.c) */
    size_t nmoved, movedcap;
    /* The store the computation in progress writes as it goes (store.c), or NULL; complete is
     * what the call waits for: `finished`, and every stored chunk written. */
    tsr__ostream *store;
    int complete;
    /* The computation failed on a HELD task (a persisted chunk that is gone): tsr_compute then
     * runs it again with every array lowered from its definition (persist.c). */
    int held_lost;
} tsr__rt;

/* One requested chunk (fetch.c). */
struct tsr__fetch {
    tsr__fetch_req req; /* job, id, and the pool's bookkeeping */
    tsr__rt *rt;
    int store;  /* for a streamed store (store.c), not a read of rt->array */
    int64_t ci; /* chunk index in the array's grid (a store's: the task id) */
    void *data; /* received payload (owned) */
    uint64_t nbytes;
    struct tsr__fetch *prev, *next; /* rt->outstanding */
};

/* ---- session.c ---- */

/* Records the failure that ends the current wait (the first one wins) and stops the loop. */
void tsr__rt_fail(tsr__rt *rt, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Runs the loop until *flag is set, a failure, an interrupt or timeout_ms (0 = none). 0, or the
 * failure's code with its message on the client. */
int tsr__rt_run_until(tsr__rt *rt, const int *flag, int timeout_ms);
/* Starts a blocking API call: forgets an interrupt that arrived between calls, and sends the
 * releases that freed arrays left (tsr__client_flush_releases). */
void tsr__rt_begin(tsr__rt *rt);
/* Ends a blocking API call: an interrupt it received ends with it. */
void tsr__rt_end(tsr__rt *rt);
/* Sends a message without payload: m points to the tsr__msg_<type> (wire/msg.h). 0 or a
 * negative code. */
int tsr__send_msg(tsr__conn *conn, tsr__msg_type type, const void *m);
/* Fills a client's hello: role, the name "client", and the answer to conn's challenge when the
 * client has a token (wire/auth.c). */
void tsr__hello_init(tsr__msg_hello *m, const char *role, tsr__conn *conn);

/* The processes of the local cluster c started (the scheduler first), for tests; 0 when none. */
int tsr__local_pids(const tsr_client *c, const pid_t **pids);

/* The capability of job (accepted's cap): remembered, and copied into a fetch request (0 when
 * there is one, -1 when the scheduler gave none). */
int tsr__client_set_cap(tsr_client *c, uint64_t job, const void *cap);
int tsr__client_get_cap(const tsr_client *c, uint64_t job, uint8_t *cap);
int tsr__send_release(tsr__conn *conn, uint64_t job);
/* Sends a `release` for every job that freed arrays no longer hold (array.c records them on
 * the client; array/ never talks to the network itself), without running the loop. */
void tsr__client_flush_releases(tsr_client *c);
/* Sends the client's log lines to lg (copied) at or under level. */
void tsr__client_set_logger(tsr_client *c, const tsr_logger *lg, int level);
/* tsr_client_connect and tsr_client_connect_monitor (monitor != 0): one connect for both roles,
 * the options (timeout, logger, token) applied alike. */
int tsr__client_connect_as(const char *address, const tsr_client_options *opts, int monitor,
                           tsr_client **out);
int tsr__client_open(tsr_client *c, const char *address, const char *token, int timeout_ms);
void tsr__client_close(tsr_client *c);
/* dead (may be NULL) is asked every 100 ms while waiting: a message ends the wait with
 * TSR_ESPAWN (a worker process exited before it joined). */
int tsr__client_wait_workers(tsr_client *c, int n, int timeout_ms, const char *(*dead)(void *arg),
                             void *arg);
void tsr__client_shutdown_cluster(tsr_client *c);

/* ---- compute.c ---- */

/* Handles a scheduler message about the job in flight (accepted, rejected, progress, finished,
 * failed, workers); 1 if it was one, else 0. */
int tsr__compute_on_message(tsr__rt *rt, const tsr__msg *m);

/* ---- persist.c ---- */

/* Before lowering: the persisted arrays of c take their chunks' latest addresses. */
void tsr__persist_refresh(tsr_client *c);

/* ---- fetch.c ---- */

/* Frees the fetch pool's state once the loop has closed its connections (tsr__client_close). */
void tsr__fetch_free_peers(tsr__rt *rt);
/* Asks the worker at addr for chunk (job, id) of nbytes for the store in progress; its end goes
 * to tsr__ostream_fetched. Linked in rt->outstanding. 0 or -ENOMEM. */
int tsr__fetch_task(tsr__rt *rt, uint32_t job, uint32_t id, uint64_t nbytes, const char *addr);
/* Cancels every outstanding request (their late replies are dropped by the pool). */
void tsr__fetch_cancel_all(tsr__rt *rt);
/* A `finished` for a job whose call has returned: its outputs were made again after a loss.
 * Recorded, and a read in progress of that job's chunks asks the new holders. */
void tsr__fetch_on_moved(tsr__rt *rt, const tsr__msg_finished *m);
/* A store's chunk id of job, being fetched, is reported at addr: when that is not where the
 * fetch goes (its holder was lost and it was made again), the fetch is cancelled and 1
 * returned, so that the caller asks addr; else 0. */
int tsr__fetch_redirect(tsr__rt *rt, uint32_t job, uint32_t id, const char *addr);
/* A computed array's chunks take the addresses the scheduler last reported for them (a
 * `finished` again after a loss), so that a persisted array's HELD tasks name where its chunks
 * are now (persist.c). */
void tsr__fetch_refresh_addrs(tsr__rt *rt, tsr_array *a);
/* Forgets the moves of a job that is released. */
void tsr__fetch_drop_moved(tsr__rt *rt, uint64_t job);
/* Liveness tick (session.c): a chunk whose fetch failed and that the scheduler has not reported
 * again within timeout_ms fails the read. */
void tsr__fetch_tick(tsr__rt *rt, uint64_t timeout_ms);
/* Bytes of chunk ci of a. */
uint64_t tsr__chunk_nbytes(const tsr_array *a, int64_t ci);
/* Calls fn for every contiguous run (along the last axis) of chunk ci of a: dst is the run's
 * element offset in the whole array (C order), src its bytes in the chunk (C order, src the
 * chunk's start). Stops at fn's first nonzero return and returns it. */
int tsr__chunk_runs(const tsr_array *a, int64_t ci, const char *src,
                    int (*fn)(void *u, int64_t dst, const char *src, size_t nbytes), void *u);

/* ---- store.c: outputs written as they are computed ---- */

/* An output being written under a temporary name beside its final path: a file
 * (PATH.tmp-XXXXXX, mode 0644) or a directory (a Zarr store, mode 0755). */
typedef struct tsr__tmpout {
    char *path; /* the final path (owned) */
    char *tmp;  /* the temporary file or directory (owned); NULL once renamed */
    int fd;     /* the temporary file, or the directory (O_DIRECTORY), or -1 */
    int dir;
    int direct;     /* path is a character device (/dev/null): written where it is, never renamed */
    char what[300]; /* names the data in messages (`array "x"`), or "" */
} tsr__tmpout;

/* One target being written: a .npy file or a Zarr store under a temporary name. */
typedef struct tsr__target {
    tsr_array *a;        /* the array written: the caller's (borrowed) or `owned` */
    tsr_array *owned;    /* a regular rechunk made for a Zarr store, freed with the target */
    int format;          /* TSR_FORMAT_NPY or TSR_FORMAT_ZARR */
    int compressor;      /* a tsr_compressor (Zarr) */
    tsr__tmpout out;     /* the temporary file or directory */
    int64_t data_offset; /* .npy: bytes of header before the data */
    void *pad, *packed;  /* Zarr: a whole-chunk buffer for edge chunks, and one for compression */
    size_t packed_cap;
} tsr__target;

/* Checks targets (arrays of client c, paths, formats, no path twice), prepares what they need
 * (a regular rechunk for a Zarr store of an irregular grid) and creates their temporary files
 * and directories, so that a target that cannot be written fails before anything is computed.
 * On success *out is a store the caller frees with tsr__ostream_free. */
int tsr__ostream_new(tsr_client *c, const tsr_store_target *targets, size_t n, tsr__ostream **out);
/* The arrays to lower first (the graph's outputs 0 .. nchunks-1 are then the targets' chunks,
 * streamed) and how many chunk outputs they make. */
size_t tsr__ostream_arrays(const tsr__ostream *s, tsr_array ***arrays, uint32_t *nchunks);
/* After lowering g: which task writes which target chunk; tasks of the `keep` arrays (computed
 * and kept by the same call) are never released. 0 or -ENOMEM. */
int tsr__ostream_map(tsr__ostream *s, const tsr_graph *g, tsr_array *const *keep, size_t nkeep);
/* Starts streaming the job: stream says whether the scheduler reports chunks as they are
 * computed (accepted's stream); without it everything is fetched at `finished`. */
void tsr__ostream_start(tsr__rt *rt, int stream);
/* A `computed` entry (or a `finished` output with an address): chunk id is at addr. */
void tsr__ostream_on_computed(tsr__rt *rt, uint32_t id, const char *addr);
/* A fetch of the store ended (fetch.c): the chunk is written to every target that has it. */
void tsr__ostream_fetched(tsr__rt *rt, tsr__fetch *f, int status, const char *why);
/* Sends the releases of written chunks not sent yet (it happens once per loop turn). */
void tsr__ostream_flush(tsr__rt *rt);
/* Is every target chunk written? */
int tsr__ostream_written(const tsr__ostream *s);
/* Liveness tick (session.c): a chunk whose fetch failed and that the scheduler has not reported
 * again within timeout_ms fails the call. */
void tsr__ostream_tick(tsr__rt *rt, uint64_t timeout_ms);
/* Renames every target into place. 0 or a negative code with the message on c. */
int tsr__ostream_commit(tsr_client *c, tsr__ostream *s);
/* Stops streaming, removes whatever was not committed, frees. NULL is a no-op. */
void tsr__ostream_free(tsr__ostream *s);

/* ---- zarr_out.c: writing a Zarr v2 store (docs/zarr.md) ---- */

/* Refuses a path where a store cannot go: an existing file, or a directory that is neither a
 * Zarr array store (it has .zarray) nor empty. 0, or -EEXIST with the message on c. */
int tsr__zarr_out_check(tsr_client *c, const tsr_array *a, const char *path);
/* Writes .zarray and .zattrs into the target's open temporary directory. */
int tsr__zarr_out_begin(tsr_client *c, tsr__target *t);
/* Writes chunk ci (C order, the chunk's own shape) as one compressed chunk file, padded to the
 * store's chunk shape at the array's edges. */
int tsr__zarr_out_chunk(tsr_client *c, tsr__target *t, int64_t ci, const void *data);

/* ---- stats.c ---- */

/* Handles an `info` message (a monitor's snapshot). */
void tsr__info_on_message(tsr__rt *rt, const tsr__msg_info *m);

/* The JSON object tsr_client_stats_json() describes, built from the `stats` record of a
 * `finished` message (PROTOCOL.md; NULL when the scheduler sent none) and what the client
 * measured itself: `seconds` from submit to finished and `tasks` it submitted (the scheduler's
 * count replaces it where it sent one). Numbers JSON cannot hold (NaN, infinities) are left out.
 * Caller owns the reference (json_decref); NULL only when out of memory. */
struct json_t *tsr__stats_json(const tsr__m_job_stats *stats, double seconds, uint64_t tasks);

/* A decoded record as JSON, walking its schema (wire/msg.h): a map record becomes an object
 * keyed by the wire names of the fields present, a tuple an array, a bare record its one value;
 * lists become arrays and KV maps objects. Integers stay integers (a count past INT64_MAX
 * becomes a real), finite floats reals, valid UTF-8 strings strings; binary data, NaN and
 * invalid strings are left out. Caller owns the reference; NULL when out of memory. */
struct json_t *tsr__rec_to_json(const tsr__schema *s, const void *rec);

/* ---- trace.c ---- */

/* The `trace` record of a traced job's `finished` (PROTOCOL.md "Tracing"), kept compactly;
 * entries naming a worker that is not listed, a negative duration, a thread index out of range
 * or a time that is not finite are skipped. 0, or -ENOMEM. Free with tsr__trace_free (NULL is a
 * no-op). */
int tsr__trace_parse(const tsr__m_job_trace *tr, uint64_t job, tsr__trace **out);
void tsr__trace_free(tsr__trace *t);
/* Writes the trace as Chrome trace-event JSON (tsr_client_trace_json describes it); sorts the
 * events in place. 0, or a negative errno when writing to f failed. */
int tsr__trace_write(tsr__trace *t, FILE *f);

/* ---- atomic_file.c: the one temp-then-rename writer ---- */

/* Creates the temporary file (dir == 0) or directory beside path. 0, or a negative code with
 * the message recorded on c ("cannot create \"PATH\" (what): reason"). A file whose path names
 * an existing character device (/dev/null) is opened and written in place instead (t->direct):
 * renaming a temporary onto it would replace the device with a plain file. A pipe, a socket or
 * a block device is refused (-EINVAL): outputs are written at offsets, in any order. */
int tsr__tmpout_open(tsr_client *c, tsr__tmpout *t, const char *path, const char *what, int dir);
/* Gives a file being written its whole length (a .npy's chunks land anywhere in it): ftruncate
 * for a regular file; a character device written in place has no length to set. 0 or -errno. */
int tsr__tmpout_length(int fd, off_t len);
/* Closes it and renames it onto path: a file replaces what is there; a directory replaces an
 * existing store (swapped in one step where the file system can, the old one then removed).
 * The temporary is removed on failure. 0 or a negative code with the message on c; t is
 * released either way. */
int tsr__tmpout_commit(tsr_client *c, tsr__tmpout *t);
/* Commits n temporaries as one: all are put in place, or, when one cannot be (say its
 * directory vanished), those already placed are taken back out and what was at their paths
 * before is put back (a path that had nothing gets nothing), so a failure changes no output.
 * The old files and stores are kept aside (a file as a hard link, so its path never goes
 * missing) until every output is in place. *t[0..n) are released either way; 0 or a negative
 * code with the message on c. */
int tsr__tmpout_commit_all(tsr_client *c, tsr__tmpout *const *t, size_t n);
/* Closes and removes the temporary file or directory; t is released. Safe on a released t. */
void tsr__tmpout_abort(tsr__tmpout *t);
/* 1 when dir has no entries, 0 when it has, -errno when it cannot be read. */
int tsr__dir_empty(const char *dir);

/* Writes a file the way every file the library saves is written: under PATH.tmp-XXXXXX (mode
 * 0644), filled by fill(fd, user), then renamed onto path, so that a reader never sees a partial
 * file and a failure leaves none (the temporary file is removed). fill returns 0 or a negative
 * code, with its message already recorded on c when `recorded` is set by it; every other failure
 * is recorded here as "cannot create/write \"PATH\" (what): reason", `what` naming the data
 * (e.g. `array "x"`; may be NULL). 0 or a negative code. */
int tsr__write_file(tsr_client *c, const char *path, const char *what,
                    int (*fill)(int fd, void *user, int *recorded), void *user);
/* A fill for tsr__write_file that writes len bytes of data. */
typedef struct tsr__bytes {
    const void *data;
    size_t len;
} tsr__bytes;
int tsr__fill_bytes(int fd, void *user, int *recorded);

/* ---- local.c ---- */

/* Stops and reaps the local cluster c started, if any (tsr_client_free). */
void tsr__local_free(tsr_client *c);
/* Why c's local cluster cannot compute any more (its scheduler exited, or every worker did), or
 * NULL (also for a client that did not start one). Looks without reaping. */
const char *tsr__local_dead(tsr_client *c);

/* The cores (one PU os-index per physical core) in hwloc order; returns the count or a negative
 * code. *cores is malloc'd. */
int tsr__physical_cores(int **cores);

/* The cpu list ("0,1") for worker w of a local cluster with `threads` threads per worker:
 * cores w*threads .. w*threads+threads-1, wrapping round the available cores. */
void tsr__local_cpus(const int *cores, int ncores, int w, int threads, char *out, size_t size);

#endif
