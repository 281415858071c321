/* Tessera: a task-graph scheduler for chunked array compute.
 *
 * This is the only public header. It declares the client API (lazy chunked arrays that are
 * lowered to a chunk-task graph and computed on a cluster), the program-file loader that sits on
 * top of it, and the entry points that run a scheduler or a worker inside the calling process.
 *
 * Conventions, for every function below:
 * - Fallible functions return an int: 0 on success, a negative code on failure. System failures
 *   are -errno; Tessera's own codes are the TSR_E* values. tsr_strerror() names any of them.
 * - After a failure, tsr_client_errmsg() holds a readable message that names the offending array
 *   and shape. Invalid calls never crash or abort the process.
 * - "borrowed": the pointer stays owned by the callee and valid as long as its owner lives.
 *   "copied": the callee keeps its own copy. "caller frees with X": ownership passes to you.
 * - Thread-safety: a tsr_client and everything made from it (arrays, programs) must be used from
 *   one thread at a time. Different clients are independent and may be used concurrently. The
 *   exceptions, callable from any thread while another uses the client, are
 *   tsr_client_interrupt() and tsr_client_progress().
 */
#ifndef TESSERA_TESSERA_H
#define TESSERA_TESSERA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "plugin.h" /* user kernels (map_blocks): self-contained, usable alone */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TSR_API __attribute__((visibility("default")))
#else
#define TSR_API
#endif

#define TSR_VERSION_MAJOR 0
#define TSR_VERSION_MINOR 1
#define TSR_VERSION_PATCH 0

/* The most axes an array may have. */
#define TSR_MAX_NDIM 8

/* Tessera's own error codes. XX(name, value, message). They sit in a band of their own,
 * -5001 to -5999, that meets neither -errno (Linux's errno values stay below 4096) nor libuv's
 * own codes (UV_EAI_* are -3000 to -3014, UV_EOF and the rest lie in -4095 to -4000), so any
 * code a function returns names one failure. New codes take the next value in the band. */
#define TSR_ERRNO_MAP(XX)                                                                          \
    XX(INVALID, -5001, "invalid argument")                                                         \
    XX(SHAPE, -5002, "incompatible shapes")                                                        \
    XX(PROGRAM, -5003, "invalid program")                                                          \
    XX(NPY, -5004, "bad .npy file")                                                                \
    XX(NOTCOMPUTED, -5005, "array has not been computed")                                          \
    XX(COMPUTE, -5006, "computation failed")                                                       \
    XX(PROTOCOL, -5007, "protocol error")                                                          \
    XX(VERSION, -5008, "protocol version mismatch")                                                \
    XX(AUTH, -5009, "authentication failed")                                                       \
    XX(TOOLARGE, -5010, "too large")                                                               \
    XX(CLOSED, -5011, "connection closed")                                                         \
    XX(NOTCONNECTED, -5012, "client is not connected to a cluster")                                \
    XX(INTERRUPTED, -5013, "interrupted")                                                          \
    XX(UNSUPPORTED, -5014, "not supported")                                                        \
    XX(SPAWN, -5015, "could not start a cluster process")                                          \
    XX(ZARR, -5016, "bad Zarr store")

typedef enum tsr_errcode {
#define TSR__XX(name, value, msg) TSR_E##name = (value),
    TSR_ERRNO_MAP(TSR__XX)
#undef TSR__XX
} tsr_errcode;

/* A message for any code: TSR_E* codes, -errno codes and libuv codes. Never NULL; an unknown
 * code gets a fixed string. Borrowed (static storage). */
TSR_API const char *tsr_strerror(int code);
/* The symbolic name ("TSR_ESHAPE", "ENOENT", ...), or "UNKNOWN". Borrowed (static storage). */
TSR_API const char *tsr_err_name(int code);

/* Element types. int64 and bool (one byte, 0 or 1) are .npy's "<i8" and "|b1". Which
 * operations take them: SPEC §2 and docs/arrays.md. */
typedef enum tsr_dtype { TSR_FLOAT64 = 0, TSR_FLOAT32 = 1, TSR_INT64 = 2, TSR_BOOL = 3 } tsr_dtype;
#define TSR_DTYPE_COUNT 4

/* "float64", "float32", "int64" or "bool"; NULL for an invalid value. Borrowed. */
TSR_API const char *tsr_dtype_name(tsr_dtype dtype);

/* The memory this process may use, in bytes: the machine's, or its cgroup's limit where lower
 * (cgroup v2 memory.max, v1 memory.limit_in_bytes); 0 when unknown. Workers' default memory
 * limits come from it. */
TSR_API uint64_t tsr_system_memory(void);
/* Parses "float64", "float32", "int64" or "bool". Returns 0 or TSR_EINVALID. */
TSR_API int tsr_dtype_parse(const char *name, tsr_dtype *out);
/* Bytes per element: 8, 4, 8 or 1; 0 for an invalid value. */
TSR_API size_t tsr_dtype_size(tsr_dtype dtype);

typedef struct tsr_client tsr_client;
typedef struct tsr_array tsr_array;
typedef struct tsr_program tsr_program;

/* ---------------------------------------------------------------------------------------------
 * Logging: the library never prints on its own; what a client or server has to say goes to the
 * logger in its options (nothing when none is set).
 * ------------------------------------------------------------------------------------------- */

typedef enum tsr_log_level {
    TSR_LOG_ERROR = 0,
    TSR_LOG_WARN = 1,
    TSR_LOG_INFO = 2,
    TSR_LOG_DEBUG = 3
} tsr_log_level;

/* "error", "warning", "info", "debug"; levels outside that range get the nearest name.
 * Borrowed (static storage). */
TSR_API const char *tsr_log_level_name(int level);

/* Where a client's or server's log lines go (as dav1d's Dav1dLogger). callback receives one
 * line without a trailing newline (msg is borrowed for the call) and its level; it runs on the
 * thread that called the client function, or the server's _new or _run function, and must not
 * call back into that client or server. A NULL callback drops every line. The cookie is passed
 * through untouched. */
typedef struct tsr_logger {
    void *cookie;
    void (*callback)(void *cookie, int level, const char *msg);
} tsr_logger;

/* ---------------------------------------------------------------------------------------------
 * Clients
 * ------------------------------------------------------------------------------------------- */

typedef struct tsr_client_options {
    const char *token;      /* shared token for a non-loopback scheduler; copied; NULL = none */
    int connect_timeout_ms; /* default 10000 */
    /* A blocking call fails with -ETIMEDOUT ("the scheduler at ... sent nothing for N s") once
     * the scheduler has been silent this long while the call waits; a scheduler sends a
     * heartbeat every second (its heartbeat_ms). Default 30000; 0 = the default, negative = wait
     * forever. (It took the padding after connect_timeout_ms: the struct's size did not change.) */
    int timeout_ms;
    tsr_logger logger;    /* copied; default: none (silent) */
    int log_level;        /* lines above this level are dropped; default TSR_LOG_WARN */
    uint8_t reserved[32]; /* room to grow: must stay zero (tsr_client_options_default) */
} tsr_client_options;

TSR_API void tsr_client_options_default(tsr_client_options *opts);

/* Connects to a running scheduler at "HOST:PORT". On success *out is a new client that the
 * caller frees with tsr_client_free(). On failure *out is NULL and, where one could be made,
 * a message is in the thread's last-error buffer (tsr_last_error()). opts may be NULL. */
TSR_API int tsr_client_connect(const char *address, const tsr_client_options *opts,
                               tsr_client **out);

typedef struct tsr_local_options {
    /* The layout: one pinned executor thread per physical core. Neither set (the default): one
     * worker with a thread per core, which measured faster than a worker per core
     * (docs/cli/run.md). workers alone: that many workers of 1 thread; threads alone: as many
     * workers of that many threads as the cores allow (at least 1). */
    int workers; /* CPU worker processes; 0 = the layout above; -1 = none (GPU workers only) */
    int threads; /* executor threads per worker; 0 = the layout above */
    const char *tessera_path; /* the `tessera` executable used to start the processes; copied;
                                 NULL = the installed one, else `tessera` found on PATH */
    int verbose;              /* pass the cluster processes' logs through to stderr (theirs, not
                                 the library's: the processes' stderr is the program's) */
    tsr_logger logger;        /* the client's own lines; copied; default: none (silent) */
    int log_level;            /* lines above this level are dropped; default TSR_LOG_WARN */
    /* GPU workers, one per id in this list ("0", "0,1"; NULL or "" = none; copied), each with a
     * core of its own when the machine has more cores than GPUs (the last ones: CPU workers get
     * the rest), and device_memory_limit bytes of device memory each (0 = most of the device:
     * tsr_worker_options). Taken from reserved, which shrank from 32 bytes to 16. */
    const char *gpus;
    int64_t device_memory_limit;
    /* Each worker's memory limit (tsr_worker_options.memory_limit): 0 = the default, the
     * machine's memory (tsr_system_memory) less a tenth (at least 512 MiB, for the scheduler,
     * the client and the system), divided among the workers; -1 = none. And where they spill
     * (NULL: $TMPDIR, else /tmp; copied). Taken from reserved, the last of it. */
    int64_t memory_limit;
    const char *spill_dir;
    /* The workers' data roots (tsr_worker_options.data_roots; copied): `tessera run` gives the
     * program file's directory and the working directory. None: the working directory. The
     * cluster gets a random token of its own, which reaches its processes through an inherited
     * descriptor, never their command lines (docs/security.md). This field grows the struct. */
    const char *const *data_roots;
    int n_data_roots;
    /* The scheduler's tsr_scheduler_options.allowed_failures: 0 = its default (3). A cluster of
     * fewer workers uses their number instead (nobody else joins it: a task that killed each of
     * them fails the computation rather than leaving it waiting); a computation whose workers
     * have all died fails too. This field grew the struct (reserved was used up): a program
     * built against an older header must be rebuilt. */
    int allowed_failures;
    /* The workers' plugin directories (tsr_worker_options.plugin_dirs; at most 64, copied):
     * `tessera run --plugin-dir DIR`. None: the workers run no user kernel. This field grew
     * the struct. */
    const char *const *plugin_dirs;
    int n_plugin_dirs;
} tsr_local_options;

TSR_API void tsr_local_options_default(tsr_local_options *opts);

/* Starts an embedded local cluster (one scheduler and opts->workers worker processes on
 * 127.0.0.1, each worker pinned to its own cores) and connects to it. tsr_client_free() stops
 * the cluster and reaps every process. opts may be NULL. */
TSR_API int tsr_client_start_local(const tsr_local_options *opts, tsr_client **out);

/* A client with no cluster: arrays can be built, checked and described (task counts, --dot),
 * and tsr_compute() fails with TSR_ENOTCONNECTED. */
TSR_API int tsr_client_new_offline(tsr_client **out);

/* Stops a local cluster if this client started one, closes connections and frees the client.
 * Arrays still alive are detached first: what they hold on the cluster is released, their
 * client-side copies (tsr_from_buffer's data, chunk addresses) are freed, and each handle stays a
 * valid, inert object until its tsr_array_free() (or tsr_program_free()), which then only frees
 * its memory. A detached array still answers the accessors (name, shape, dtype, chunks;
 * tsr_array_client() gives NULL); computing, reading or building on it fails with TSR_EINVALID
 * or TSR_ENOTCOMPUTED. NULL is a no-op. */
TSR_API void tsr_client_free(tsr_client *client);

/* The message of the client's last failure ("" if none). Borrowed; valid until the next call
 * on the client. */
TSR_API const char *tsr_client_errmsg(const tsr_client *client);

/* The message of the calling thread's last failure in a function that has no client (connect,
 * start_local). Borrowed; valid until the thread's next such call. */
TSR_API const char *tsr_last_error(void);

/* Makes the blocking call in progress on c (tsr_compute, tsr_array_read, tsr_array_save_npy)
 * return TSR_EINTERRUPTED soon. It ends that call only: the next call starts afresh, and an
 * interrupt sent while no call is in progress is forgotten. Async-signal-safe: meant for a
 * SIGINT handler. */
TSR_API void tsr_client_interrupt(tsr_client *client);

/* Sends now the releases of the arrays freed since the client last talked to the cluster.
 * tsr_array_free() only records what the cluster may drop (it never blocks or talks to the
 * network); the client sends that at its next tsr_compute, read or save, at tsr_client_free, or
 * here. 0, or a negative code. */
TSR_API int tsr_client_flush(tsr_client *client);

/* "HOST:PORT" of the scheduler; NULL for an offline client. Borrowed. */
TSR_API const char *tsr_client_address(const tsr_client *client);

/* The token this client proves to its scheduler: the one it was given, or the random secret of
 * the local cluster it started (tsr_client_start_local), so that the program that owns the
 * cluster can let other clients or monitors of its own in (tsr_client_options.token). NULL when
 * there is none. Borrowed, valid until tsr_client_free(); keep it out of command lines and
 * logs (docs/security.md). */
TSR_API const char *tsr_client_token(const tsr_client *client);

/* Statistics of the last computation this client finished (the last successful tsr_compute() or
 * tsr_program_run()), as one compact JSON object:
 *   {"tasks": N, "seconds": S, "sources_inline": N, "moved_bytes": B,
 *    "scheduler": {"rss_base": B, "rss_peak": B},
 *    "ops": [{"op", "tasks", "inline", "seconds", "flops", "moved_bytes"}, ...],
 *    "workers": [{"name", "addr", "tasks", "rss_peak", "rss", "chunk_peak", "busy_s",
 *                 "in_bytes", "in_s", "out_bytes", and for GPU workers "h2d_bytes",
 *                 "d2h_bytes", "dev_evicted", and for workers with a memory limit
 *                 "spilled_bytes", "unspilled_bytes", "disk_bytes", "paused"}, ...]}
 * `seconds` is measured by the client from submitting the graph to the scheduler's `finished`
 * (fetching outputs excluded); `tasks` is the job's task count; the rest is what the scheduler
 * reported with `finished` (docs/PROTOCOL.md: bytes, seconds, per operation type its tasks, how
 * many of them were sources made inline by their consumers (`inline`: they never ran alone), the
 * kernel seconds and flops of those that ran and the input bytes fetched for them, and per worker
 * the tasks of this job it ran plus its latest counters; the workers' tasks add up to
 * tasks - sources_inline). A
 * field the scheduler did not send is absent. Returns NULL when nothing has finished yet (and for
 * an offline client) or when out of memory. Caller frees with free(). */
TSR_API char *tsr_client_stats_json(tsr_client *client);

/* Writes that JSON object and a newline to path (copied), under a temporary name renamed onto
 * path once complete (as tsr_client_save_trace). Computing zero arrays counts as a computation
 * of zero tasks. TSR_ENOTCOMPUTED when nothing has been computed, TSR_EINVALID for an empty
 * path, -errno when the file cannot be written. */
TSR_API int tsr_client_save_stats(tsr_client *client, const char *path);

/* Connects to a running scheduler as a monitor (what `tessera top` does): a client that can
 * only ask for snapshots with tsr_client_info_json(); tsr_compute() on it fails with
 * TSR_EINVALID. Otherwise as tsr_client_connect(): caller frees with tsr_client_free(); on
 * failure *out is NULL and tsr_last_error() says why. opts may be NULL. */
TSR_API int tsr_client_connect_monitor(const char *address, const tsr_client_options *opts,
                                       tsr_client **out);

/* Asks the scheduler for a snapshot of the cluster and waits for it (timeout_ms 0 = no limit;
 * -ETIMEDOUT past it). On success *json is one compact JSON object that the caller frees with
 * free(): the scheduler's `info` message of docs/PROTOCOL.md ("Monitor") without its "t" key:
 *   {"addr", "uptime", "workers", "jobs", "done_total", "tasks": {STATE: N, ...},
 *    "wlist": [{"name", "addr", "kind", "cpus", "threads", "running", "queued", "tasks", "rss",
 *               "mem_limit", "chunk_bytes", "in_bytes", "out_bytes", "busy_s", "speed",
 *               and for GPU workers "dev_name", "dev_used", "dev_limit", "h2d_bytes",
 *               "d2h_bytes", "dev_evicted", and for workers with a memory limit
 *               "spilled_bytes", "unspilled_bytes", "disk_bytes", "paused"}, ...],
 *    "jlist": [{"job", "total", "done", "erred", "moved_bytes",
 *               "ops": [{"op", "total", "ready", "done", "running", "erred", "flops_done"},
 *                       ...]}, ...],
 *    "events": [[T, MSG], ...]}
 * Values are copied as the scheduler sent them; a value JSON cannot hold is left out. Only for
 * a client from tsr_client_connect_monitor() (else TSR_EINVALID). Interruptible with
 * tsr_client_interrupt() (TSR_EINTERRUPTED). */
TSR_API int tsr_client_info_json(tsr_client *client, int timeout_ms, char **json);

/* ---------------------------------------------------------------------------------------------
 * Lazy chunked arrays
 *
 * Every constructor below returns a new handle in *out that the caller frees with
 * tsr_array_free(). Operands are borrowed: the new array keeps what it needs, so operands may be
 * freed at any time. `chunks` arrays hold one chunk size per axis (the last chunk on an axis may
 * be smaller); NULL picks the default, which keeps every chunk at or under 64 MiB.
 * ------------------------------------------------------------------------------------------- */

TSR_API int tsr_zeros(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks,
                      tsr_dtype dtype, tsr_array **out);
TSR_API int tsr_ones(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks,
                     tsr_dtype dtype, tsr_array **out);
TSR_API int tsr_full(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks,
                     tsr_dtype dtype, double value, tsr_array **out);
/* An int64 full with an exact value (tsr_full's double holds integers up to 2^53 exactly; a
 * float value converts as astype does: truncated, NaN/inf/out of range give INT64_MIN). */
TSR_API int tsr_full_int64(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks,
                           int64_t value, tsr_array **out);
/* Uniform on [0, 1); element i (row-major index in the whole array) is SPEC §2's formula. */
TSR_API int tsr_random(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks,
                       tsr_dtype dtype, uint64_t seed, tsr_array **out);
/* Standard normal samples scaled: element i (row-major index) is loc + scale * (sqrt(-2 ln(1 -
 * u1)) * cos(2 pi u2)), with u1, u2 the float64 tsr_random values of indices 2i and 2i + 1 of the
 * same seed, computed in double and rounded to dtype. dtype float64 or float32 (others are
 * TSR_EINVALID). Made wherever it is needed, like random. */
TSR_API int tsr_normal(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks,
                       tsr_dtype dtype, uint64_t seed, double loc, double scale, tsr_array **out);
/* numpy.eye(n, m, k): n x m, ones on diagonal k (k > 0 above the main one), zeros elsewhere.
 * n, m >= 0 (else TSR_ESHAPE); dtype float64 or float32 (else TSR_EINVALID); chunks NULL or two
 * sizes. */
TSR_API int tsr_eye(tsr_client *c, int64_t n, int64_t m, int64_t k, const int64_t *chunks,
                    tsr_dtype dtype, tsr_array **out);
/* 1-d: start + i*step for i in 0 .. ceil((stop-start)/step)-1. chunk <= 0 picks the default. */
TSR_API int tsr_arange(tsr_client *c, double start, double stop, double step, int64_t chunk,
                       tsr_dtype dtype, tsr_array **out);
/* A .npy file (<f8 or <f4, C order). The header is read now; the data is read by the workers
 * when the array is computed, so the path must be readable by them. path copied (made absolute). */
TSR_API int tsr_load_npy(tsr_client *c, const char *path, const int64_t *chunks, tsr_array **out);
/* An array of the caller's memory: data holds shape's elements of dtype in C order. The
 * elements are copied at the call (the caller may free or reuse data at once) and the copy stays
 * with the array until tsr_array_free() (or tsr_client_free()), so a chunk lost with its worker
 * is sent again and the result is still right. Each chunk travels to a worker inside its task of
 * the submitted graph (through the scheduler), with every computation that uses the array: for
 * data used by several computations, tsr_persist() it once. chunks NULL picks chunks of at most
 * 4 MiB; a chunk may hold at most 16 MiB (else TSR_EINVALID). Any dtype (float64, float32,
 * int64, bool: one byte 0/1). data may be NULL only for an empty array. Errors: TSR_EINVALID,
 * TSR_ESHAPE (with a message naming what is wrong), -ENOMEM. Same thread rules as every
 * constructor. */
TSR_API int tsr_from_buffer(tsr_client *c, const void *data, tsr_dtype dtype, int ndim,
                            const int64_t *shape, const int64_t *chunks, tsr_array **out);
/* A Zarr v2 array store: the directory holding .zarray and the chunk files (docs/zarr.md:
 * dtype "<f8" or "<f4", order "C", compressor null, zlib or blosc, no filters; a missing chunk
 * file reads as fill_value). .zarray is read now (a bad one is TSR_EZARR, the message naming the
 * file); the chunks are read by the workers when the array is computed. chunks NULL takes the
 * store's own chunks, so each task reads one chunk file; other chunks read the store chunks each
 * one meets. path copied (made absolute). */
TSR_API int tsr_load_zarr(tsr_client *c, const char *path, const int64_t *chunks, tsr_array **out);

typedef enum tsr_unary_op {
    TSR_NEG,
    TSR_ABS,
    TSR_EXP,
    TSR_LOG,
    TSR_SQRT,
    TSR_SIN,
    TSR_COS,
    TSR_TANH,
    TSR_FLOOR,
    TSR_CEIL,
    TSR_ROUND, /* halves to even, as numpy.round */
    TSR_TAN,
    TSR_ARCSIN,
    TSR_ARCCOS,
    TSR_ARCTAN,
    TSR_LOG1P,
    TSR_EXPM1,
    TSR_SIGN, /* NaN stays NaN */
    TSR_SQUARE,
    TSR_LOGICAL_NOT, /* these three give bool, for any operand dtype */
    TSR_ISNAN,
    TSR_ISFINITE
} tsr_unary_op;

typedef enum tsr_binary_op {
    TSR_ADD,
    TSR_SUB,
    TSR_MUL,
    TSR_DIV,
    TSR_POW,
    TSR_MAXIMUM,
    TSR_MINIMUM,
    TSR_LESS, /* the comparisons and logical operations give bool, computed in the operands' */
    TSR_LESS_EQUAL, /* promoted dtype (a NaN compares unequal to everything) */
    TSR_GREATER,
    TSR_GREATER_EQUAL,
    TSR_EQUAL,
    TSR_NOT_EQUAL,
    TSR_LOGICAL_AND,
    TSR_LOGICAL_OR
} tsr_binary_op;

/* The reductions. TSR_PROD and later (issue 13) give: prod of int64/bool int64 (wrapping), any/all
 * bool, var/std of int64/bool float64 (of float32 float32), argmax/argmin int64. */
typedef enum tsr_reduce_op {
    TSR_SUM,
    TSR_MEAN,
    TSR_MAX,
    TSR_MIN,
    TSR_PROD,
    TSR_ANY,
    TSR_ALL,
    TSR_VAR,
    TSR_STD,
    TSR_ARGMAX,
    TSR_ARGMIN
} tsr_reduce_op;

/* The cumulative scans (tsr_scan). */
typedef enum tsr_scan_op { TSR_CUMSUM, TSR_CUMPROD } tsr_scan_op;

/* Names as in program files ("neg", "add", "sum", ...); NULL for invalid values. Borrowed. */
TSR_API const char *tsr_unary_name(tsr_unary_op op);
TSR_API const char *tsr_binary_name(tsr_binary_op op);
TSR_API const char *tsr_reduce_name(tsr_reduce_op op);

/* Elementwise, IEEE semantics. Result dtype as NumPy 2 (docs/arrays.md, "Dtypes and promotion"):
 * neg/abs/floor/ceil/round/sign/square keep int64 (bool: abs keeps bool, floor/ceil/round/square
 * give int64), the other math ops give float64 for int64/bool, logical_not/isnan/isfinite give
 * bool. TSR_EINVALID (nothing made) for an op NumPy does not define on x's dtype (neg or sign of
 * bool). */
TSR_API int tsr_unary(tsr_unary_op op, tsr_array *x, tsr_array **out);
/* Elementwise with NumPy broadcasting; operands whose chunks differ are rechunked to common
 * chunks first. The result dtype is numpy.result_type of the operands (float32 with float64 or
 * int64 gives float64; bool with bool stays bool), float64 for div of integers, bool for the
 * comparisons and logical ops. int64 arithmetic wraps around. TSR_EINVALID for an op NumPy does
 * not define on the dtypes (sub of bools, pow of bools), TSR_ESHAPE when shapes do not broadcast.
 */
TSR_API int tsr_binary(tsr_binary_op op, tsr_array *x, tsr_array *y, tsr_array **out);
/* x OP s (scalar_first == 0) or s OP x (scalar_first != 0). s is a weak scalar (NEP 50): an
 * integral s never widens x (int64 + 2 is int64, float32 + 2 float32, bool + 2 int64); a
 * fractional or non-finite s keeps a float x's dtype and makes an int64/bool x float64. Use
 * tsr_binary_scalar_kind to say whether s is an integer or a float literal explicitly. */
TSR_API int tsr_binary_scalar(tsr_binary_op op, tsr_array *x, double s, int scalar_first,
                              tsr_array **out);
/* As tsr_binary_scalar, with the scalar's kind given: is_float != 0 treats s as a Python float
 * (1.0 makes an int64 x float64), 0 as a Python int (s must be integral). */
TSR_API int tsr_binary_scalar_kind(tsr_binary_op op, tsr_array *x, double s, int is_float,
                                   int scalar_first, tsr_array **out);
/* As tsr_binary_scalar with an integer scalar kept exact where the operation runs in int64
 * (a double holds integers up to 2^53 only): int64 + 9223372036854775807 wraps as NumPy's. */
TSR_API int tsr_binary_scalar_int64(tsr_binary_op op, tsr_array *x, int64_t s, int scalar_first,
                                    tsr_array **out);
/* numpy.where(cond, x, y): elementwise, the three broadcast together (TSR_ESHAPE otherwise);
 * cond of any dtype (non-zero is true); the result dtype is numpy.result_type of x and y.
 * References are taken, not consumed. */
TSR_API int tsr_where(tsr_array *cond, tsr_array *x, tsr_array *y, tsr_array **out);
/* The same with x or y a number: x NULL takes xs, y NULL takes ys (a weak scalar, NEP 50: an
 * is_float number makes int64/bool float64, an integral one keeps int64 and makes bool int64);
 * with both numbers the result is int64 or float64. */
TSR_API int tsr_where_scalars(tsr_array *cond, tsr_array *x, double xs, int xs_is_float,
                              tsr_array *y, double ys, int ys_is_float, tsr_array **out);
/* As tsr_where_scalars with integer numbers kept exact (a double holds integers up to 2^53
 * only): x NULL takes *xs, y NULL takes *ys (each pointer non-NULL where its array is NULL).
 * where(c, 9007199254740993, int64 y) is exactly 2^53 + 1 where c holds, as NumPy's. */
TSR_API int tsr_where_int64(tsr_array *cond, tsr_array *x, const int64_t *xs, tsr_array *y,
                            const int64_t *ys, tsr_array **out);
/* numpy.clip(x, min, max): min or max NULL for none (not both). Bit 0 of float_mask says min is a
 * float literal, bit 1 max (weak scalars as in tsr_binary_scalar_kind: clip of int64 by 0.5 gives
 * float64). Made as maximum then minimum, so NaN propagates and min > max gives max. */
TSR_API int tsr_clip(tsr_array *x, const double *min, const double *max, int float_mask,
                     tsr_array **out);
/* tsr_clip with integer bounds kept exact where it runs in int64 (as tsr_binary_scalar_int64):
 * clip of int64 by 2^53 + 3 is exactly that bound where it applies. */
TSR_API int tsr_clip_int64(tsr_array *x, const int64_t *min, const int64_t *max, tsr_array **out);
/* NumPy's a @ b: 2-d @ 2-d and 2-d @ 1-d as blocked gemm chains; N-d operands broadcast their
 * batch axes (all but the last two) as NumPy does and 1-d operands get a unit axis that the result
 * drops (1-d @ 2-d is 1-d, 1-d @ 1-d is 0-d), lowered like tsr_tensordot. Chunks of b are
 * rechunked to a's along the contracted axis (and shared batch axes) when they differ. Errors:
 * TSR_ESHAPE (a 0-d operand, contracted extents that differ, batch shapes that do not broadcast).
 * Dtypes as tsr_tensordot. */
TSR_API int tsr_matmul(tsr_array *a, tsr_array *b, tsr_array **out);
/* numpy.tensordot: contracts axis axes_a[j] of a with axis axes_b[j] of b for j < naxes (negative
 * axes count from the end); the result has a's remaining axes, then b's, in order. axes_a and
 * axes_b NULL is numpy's integer form: the last naxes axes of a with the first naxes of b. Each
 * output chunk is a chain over the contracted axes' chunk blocks in a fixed order (bitwise the
 * same for any number of workers); b is rechunked to a's chunks on the contracted axes when they
 * differ. Result dtype: float64 if either operand is float64 (or one is int64 and the other
 * float32), float32 for float32 with float32 or bool, int64 for int64 with int64 or bool
 * (wrapping), bool for two bool operands (an or of ands, as NumPy). Errors: TSR_ESHAPE (an axis out
 * of range or repeated, paired extents that differ, a result of more than TSR_MAX_NDIM axes),
 * TSR_EINVALID (naxes < 0, one of axes_a/axes_b NULL). axes copied. */
TSR_API int tsr_tensordot(tsr_array *a, tsr_array *b, const int *axes_a, const int *axes_b,
                          int naxes, tsr_array **out);
/* numpy.transpose; axes NULL (naxes 0) reverses the axes. axes copied. */
TSR_API int tsr_transpose(tsr_array *x, const int *axes, int naxes, tsr_array **out);
/* Reduction with keepdims=False. axes NULL reduces every axis (a 0-d result); otherwise naxes
 * axes, negative ones counting from the end. axes copied. */
TSR_API int tsr_reduce(tsr_reduce_op op, tsr_array *x, const int *axes, int naxes, tsr_array **out);

/* Options of tsr_reduce_ex. Initialise with tsr_reduce_options_default (keepdims 0, ddof 0). */
typedef struct tsr_reduce_options {
    int keepdims; /* nonzero: reduced axes stay, with extent 1 (one chunk), as NumPy's keepdims */
    int ddof;     /* var/std: the divisor is N - ddof (>= 0; NaN or inf when N - ddof <= 0) */
    unsigned char reserved[24]; /* zero */
} tsr_reduce_options;
TSR_API void tsr_reduce_options_default(tsr_reduce_options *o);
/* tsr_reduce with options (opts NULL: the defaults, which is tsr_reduce). argmax/argmin take
 * axes NULL (the flat index) or exactly one axis; they fail (TSR_ESHAPE) on an empty reduced
 * axis, as NumPy does; the lowest index wins ties, and the first NaN wins over everything.
 * var/std take two passes, as NumPy's (the mean, then the squared deviations from it), with
 * partials combined in an order fixed by the graph: bitwise the same on any number of workers,
 * within rounding (not bitwise) of NumPy's. Errors: TSR_EINVALID (unknown op, ddof < 0, a bad
 * axis), TSR_ESHAPE. axes and opts copied. */
TSR_API int tsr_reduce_ex(tsr_reduce_op op, tsr_array *x, const int *axes, int naxes,
                          const tsr_reduce_options *opts, tsr_array **out);
/* numpy.cumsum / numpy.cumprod along axis (negative counts from the end), or over the flattened
 * array (C order; a 1-d result) when flatten is nonzero (axis then ignored). float64/float32
 * keep their dtype and accumulate in it, as NumPy's sequential loop does (bitwise NumPy's);
 * int64/bool give int64 (wrapping). Chunk k along the axis continues from chunk k-1's last
 * values: a chain of tasks along the axis. A flattened scan of an N-d array first rechunks it to
 * whole rows (every axis but the first in one chunk). Errors: TSR_EINVALID (unknown op, bad
 * axis). */
TSR_API int tsr_scan(tsr_scan_op op, tsr_array *x, int axis, int flatten, tsr_array **out);
/* Same values, new chunks (one per axis). chunks copied. */
TSR_API int tsr_rechunk(tsr_array *x, const int64_t *chunks, tsr_array **out);
TSR_API int tsr_astype(tsr_array *x, tsr_dtype dtype, tsr_array **out);
/* A user kernel applied block by block (docs/plugins.md): `kernel` is "LIBRARY:SYMBOL", a
 * function of the plugin library LIBRARY (a bare name: no '/', no "..") that the workers load
 * from their --plugin-dir directories only; it is called once per output block with the
 * arguments' blocks (include/tessera/plugin.h gives its signature). args[0..nargs) are the
 * array operands (borrowed; the result takes its own references), args[0] first; scalars[0..
 * nscalars) are numbers passed to every call (NULL when nscalars is 0). The result has dtype
 * `dtype` and, when shape is NULL, args[0]'s shape and its chunks (or `chunks`, one size per
 * axis, when given); every other operand has at most as many axes, aligned to the right, each
 * either of the result's extent (rechunked to the result's chunks) or 1 (one block, passed
 * whole). When shape (ndim axes) is given and differs from args[0]'s, `chunks` is required and
 * every operand must have ndim axes and the result's number of chunks on each: output block i
 * gets each operand's block i, as it is. Errors: TSR_EINVALID (a malformed kernel name, a NULL
 * operand), TSR_ESHAPE (operands that do not line up). Whether a worker has the library is
 * known only when the graph runs: a job whose plugin no connected worker has fails then. */
TSR_API int tsr_map_blocks(const char *kernel, tsr_array *const *args, int nargs,
                           const double *scalars, int nscalars, tsr_dtype dtype,
                           const int64_t *shape, int ndim, const int64_t *chunks, tsr_array **out);

/* Shorthands, each one call of the constructor it names (same errors, same ownership):
 * tsr_sum_all / tsr_mean_all reduce every axis (a 0-d result, for tsr_compute_scalar());
 * tsr_sum_axis one axis (negative counts from the end); tsr_<op>_scalar is
 * tsr_binary_scalar(op, x, s, 0): x + s, x - s, x * s, x / s. An intermediate array may be
 * freed as soon as the next one is built from it (operands are kept by the arrays made from
 * them), so `(a @ b).sum()` is:
 *   tsr_array *ab, *s; double v;
 *   tsr_matmul(a, b, &ab); tsr_sum_all(ab, &s); tsr_array_free(ab);
 *   tsr_compute_scalar(s, &v); tsr_array_free(s);   */
/* Auto-release. Between tsr_scope_begin(c) and the matching tsr_scope_end(c), every array handle
 * made on c (by any constructor, shorthand or tsr_from_buffer) is recorded, and tsr_scope_end
 * frees those still alive (as tsr_array_free would), newest first. tsr_scope_keep(a) takes a out
 * of its scope: the caller frees it as usual (tsr_array_free), e.g. the one result to keep. A
 * handle freed by hand inside the scope is simply forgotten by it. Scopes nest; arrays of a
 * program (tsr_program_load) are never scoped, the program frees them. So a six-term expression
 * needs one call at its end instead of a free per intermediate:
 *   tsr_scope_begin(c);
 *   tsr_matmul(a, b, &ab); tsr_add_scalar(ab, 1, &t); tsr_sum_all(t, &s);
 *   tsr_compute_scalar(s, &v);
 *   tsr_scope_end(c);                 (ab, t and s are freed here)
 * tsr_scope_begin: 0, TSR_EINVALID (c NULL), -ENOMEM. tsr_scope_end: 0, or TSR_EINVALID when no
 * scope is open. tsr_client_free drops open scopes (their handles stay valid, the caller's to
 * free). Same thread rules as the constructors; never blocks or talks to the cluster. */
TSR_API int tsr_scope_begin(tsr_client *c);
TSR_API int tsr_scope_end(tsr_client *c);
TSR_API void tsr_scope_keep(tsr_array *a);

TSR_API int tsr_sum_all(tsr_array *x, tsr_array **out);
TSR_API int tsr_mean_all(tsr_array *x, tsr_array **out);
TSR_API int tsr_sum_axis(tsr_array *x, int axis, tsr_array **out);
TSR_API int tsr_add_scalar(tsr_array *x, double s, tsr_array **out);
TSR_API int tsr_sub_scalar(tsr_array *x, double s, tsr_array **out);
TSR_API int tsr_mul_scalar(tsr_array *x, double s, tsr_array **out);
TSR_API int tsr_div_scalar(tsr_array *x, double s, tsr_array **out);
/* ---- Structural operations (NumPy semantics; docs/arrays.md says what each one moves) ---- */

/* One item of a basic index, for one leading axis of X[...]. */
typedef enum tsr_index_kind {
    TSR_INDEX_RANGE, /* start:stop:step; has_start/has_stop 0 for the default (NumPy's None) */
    TSR_INDEX_INT    /* the integer `start` (negative counts from the end); drops the axis */
} tsr_index_kind;

typedef struct tsr_index {
    tsr_index_kind kind;
    int has_start, has_stop;
    int64_t start, stop;
    int64_t step; /* RANGE: not 0; 1 for the default */
} tsr_index;

/* X[index[0], ..., index[nindex-1]] with basic indexing; axes past nindex are taken whole.
 * index copied (NULL when nindex is 0). Output chunks are the parts of the input's chunks the
 * slice covers; an input chunk taken whole with step 1 is reused without a task. Errors
 * (TSR_EINVALID / TSR_ESHAPE, the message naming x): more items than axes, an integer out of
 * range, a step of 0. */
TSR_API int tsr_slice(tsr_array *x, const tsr_index *index, int nindex, tsr_array **out);
/* numpy.take(x, indices, axis): indices a 1-d int64 array, -n <= i < n (n = x's extent along
 * axis, negative ones counting from the end); any other value fails the computation
 * (TSR_ECOMPUTE through tsr_compute), naming the array. axis NULL takes from the flattened x.
 * Each output chunk is made from every chunk of x along axis and one chunk of indices. */
TSR_API int tsr_take(tsr_array *x, tsr_array *indices, const int *axis, tsr_array **out);
/* numpy.concatenate(xs, axis): n >= 1 arrays of the same ndim (>= 1) and the same extents but
 * along axis; dtypes promote as NumPy's (an operand of another dtype is converted first). Chunks
 * are reused: the output's chunks along axis are the operands' one after the other, and an
 * operand whose chunks on another axis differ from xs[0]'s is rechunked to them. xs copied. */
TSR_API int tsr_concatenate(tsr_array *const *xs, int n, int axis, tsr_array **out);
/* numpy.stack(xs, axis): expand_dims of each at axis, then concatenate. Shapes must be equal. */
TSR_API int tsr_stack(tsr_array *const *xs, int n, int axis, tsr_array **out);
/* numpy.reshape(x, shape) in C order; at most one entry may be -1 (inferred). shape copied.
 * Rechunks x only where a chunk of x is not a block of whole rows of the new shape (the rule
 * is in docs/arrays.md). */
TSR_API int tsr_reshape(tsr_array *x, int ndim, const int64_t *shape, tsr_array **out);
/* numpy.squeeze(x, axis): axes NULL squeezes every axis of length 1; otherwise the naxes axes
 * given, each of length 1. axes copied. */
TSR_API int tsr_squeeze(tsr_array *x, const int *axes, int naxes, tsr_array **out);
/* numpy.expand_dims(x, axis): inserts naxes (>= 1) axes of length 1 at the given positions of
 * the result (negative ones counting from its end). axes copied. */
TSR_API int tsr_expand_dims(tsr_array *x, const int *axes, int naxes, tsr_array **out);

/* Names an array (for messages, progress and `check`). name copied; must be an identifier. */
TSR_API int tsr_array_set_name(tsr_array *a, const char *name);
/* The array's name: the one set, or a generated one such as "matmul-7". Borrowed. */
TSR_API const char *tsr_array_name(const tsr_array *a);
TSR_API int tsr_array_ndim(const tsr_array *a);
/* ndim entries. Borrowed; valid while a lives. */
TSR_API const int64_t *tsr_array_shape(const tsr_array *a);
TSR_API tsr_dtype tsr_array_dtype(const tsr_array *a);
/* The number of chunks along axis, and their sizes (borrowed; valid while a lives). */
TSR_API int64_t tsr_array_numchunks(const tsr_array *a, int axis);
TSR_API const int64_t *tsr_array_chunks(const tsr_array *a, int axis);
/* The operation that made the array ("random", "matmul", ...). Borrowed. */
TSR_API const char *tsr_array_op(const tsr_array *a);
/* The client the array belongs to. Borrowed. */
TSR_API tsr_client *tsr_array_client(const tsr_array *a);
/* Total element count (1 for a 0-d array). */
TSR_API int64_t tsr_array_size(const tsr_array *a);

/* Drops the handle. An array that other arrays were built from lives on inside them; chunks a
 * computed array holds on the cluster are released once no handle needs them, by the client at
 * its next network call (tsr_client_flush). Never blocks, runs the client's loop or sends
 * anything itself. NULL is a no-op. Safe after tsr_client_free() of the array's client: the
 * handle was detached then (see tsr_client_free) and this only frees its memory. */
TSR_API void tsr_array_free(tsr_array *a);

/* ---------------------------------------------------------------------------------------------
 * Computing
 * ------------------------------------------------------------------------------------------- */

typedef struct tsr_progress {
    uint64_t done;  /* tasks finished */
    uint64_t total; /* tasks in the submission */
    uint64_t erred;
    double elapsed; /* seconds since the submission */
} tsr_progress;

/* Called on the thread that called tsr_compute(), from inside it. Must not call into the
 * client. */
typedef void (*tsr_progress_cb)(const tsr_progress *p, void *user);

/* Where tsr_store() (or tsr_compute() with tsr_compute_options.store) writes an array. */
typedef enum tsr_format {
    TSR_FORMAT_AUTO = 0, /* from the path: a name ending in ".zarr" is a Zarr store, else .npy */
    TSR_FORMAT_NPY = 1,  /* one .npy file (format 1.0, C order) */
    TSR_FORMAT_ZARR = 2  /* a Zarr v2 directory store (docs/zarr.md) */
} tsr_format;

/* How a Zarr store's chunks are compressed. */
typedef enum tsr_compressor {
    TSR_COMPRESSOR_DEFAULT = 0, /* blosc: lz4, level 5, byte shuffle (zarr's own default) */
    TSR_COMPRESSOR_NONE = 1,    /* raw chunks ("compressor": null) */
    TSR_COMPRESSOR_ZLIB = 2,    /* zlib, level 1 (numcodecs' Zlib default) */
    TSR_COMPRESSOR_BLOSC = 3    /* the same as TSR_COMPRESSOR_DEFAULT, said explicitly */
} tsr_compressor;

typedef struct tsr_store_target {
    tsr_array *array;     /* borrowed for the call */
    const char *path;     /* borrowed for the call; relative to the working directory */
    int format;           /* a tsr_format; default TSR_FORMAT_AUTO */
    int compressor;       /* a tsr_compressor, for Zarr stores only (a .npy target must leave it
                             TSR_COMPRESSOR_DEFAULT); default TSR_COMPRESSOR_DEFAULT */
    uint8_t reserved[24]; /* room to grow: must stay zero (tsr_store_target_init) */
} tsr_store_target;

/* Zeroes *t and sets its array and path (both borrowed: they must outlive the call that uses
 * t): format AUTO, the default compressor. */
TSR_API void tsr_store_target_init(tsr_store_target *t, tsr_array *array, const char *path);

typedef struct tsr_compute_options {
    tsr_progress_cb progress; /* NULL = none */
    void *user;
    int progress_interval_ms; /* the callback runs at most this often (the scheduler reports at
                                 most every 100 ms), plus once at 100%; default 100, 0 = every
                                 report */
    int trace;                /* nonzero: record every task's run and every chunk transfer, for
                                 tsr_client_trace_json() / tsr_client_save_trace(); default 0 */
    /* Arrays to write while the computation runs, as tsr_store() does, in the same submission
     * as the arrays computed (nstore targets, borrowed for the call; NULL/0 = none). Taken from
     * reserved, which shrank from 32 bytes to 16: same size, same ABI. */
    const tsr_store_target *store;
    size_t nstore;
    /* Nonzero: run every elementwise operation as its own tasks instead of fusing chains of
     * them (and a chain feeding a reduction's partials) into one task per chunk (docs/arrays.md,
     * "Fusion"); for measurement and debugging, the results are the same bits. Default 0. Taken
     * from reserved (16 bytes to 15): same size, same ABI. */
    uint8_t no_fuse;
    uint8_t reserved[15]; /* room for later options without changing the struct's size:
                             zeroed by tsr_compute_options_default */
} tsr_compute_options;

TSR_API void tsr_compute_options_default(tsr_compute_options *opts);

/* Polls the progress of the computation running on `client`: fills *out and returns 1 while a
 * tsr_compute() or tsr_program_run() is running (elapsed counts up to now), 0 when none is (*out
 * then describes the last one: done == total after a success; all zero before the first), or
 * TSR_EINVALID when client or out is NULL.
 * Thread-safety: this and tsr_client_interrupt() are the only functions that may be called from
 * another thread while tsr_compute() runs on the client, as often as wished (no lock, no system
 * call beyond reading the clock; the fields it returns always come from the same report). The
 * client must stay alive: do not call it concurrently with tsr_client_free(). Counts come from
 * the scheduler's progress reports (every 100 ms at most), so done moves in steps. */
TSR_API int tsr_client_progress(tsr_client *client, tsr_progress *out);

/* Computes n arrays in one submission and waits. On success every array's chunks are held on
 * the cluster's workers until tsr_array_free(), ready for tsr_array_read() and
 * tsr_array_save_npy(). On failure (TSR_ECOMPUTE) the message names the array and the task.
 * opts may be NULL. With opts->store, the same submission also writes those targets as
 * tsr_store() does (an array both computed here and stored is written and kept). */
TSR_API int tsr_compute(tsr_client *c, tsr_array *const *arrays, size_t n,
                        const tsr_compute_options *opts);

/* Computes n arrays like tsr_compute() and keeps them for later computations too: a later
 * tsr_compute(), tsr_store() or tsr_persist() of arrays built from them takes their chunks where
 * the workers hold them (one HELD task per chunk, copying or fetching it) instead of running
 * their graphs again. The chunks stay on the workers until tsr_array_free() of the persisted
 * array (its own handle: arrays built from it do not keep the chunks). A held chunk lost with
 * its worker (the scheduler remakes the persisted job's outputs, and the client follows them
 * where it is told) can make a later computation fail on its HELD task; tsr_compute() then runs
 * that computation once more with every array computed from its definition, which the client
 * still has, so the result is right either way. Reading a persisted array (tsr_array_read) works
 * as after tsr_compute(). opts as tsr_compute()'s, without store targets (TSR_EINVALID). Errors
 * as tsr_compute(). Thread-safety as tsr_compute(). */
TSR_API int tsr_persist(tsr_client *c, tsr_array *const *arrays, size_t n,
                        const tsr_compute_options *opts);

/* Computes a (unless it is already computed) and reads its one element into *value, converted to
 * double (bool: 0 or 1). a must have exactly one element (a 0-d array, e.g. tsr_sum_all's), else
 * TSR_ESHAPE. a stays computed (its chunk held) until tsr_array_free(). Errors as tsr_compute()
 * and tsr_array_read(); TSR_EINVALID for NULL arguments or a detached array. */
TSR_API int tsr_compute_scalar(tsr_array *a, double *value);

/* Computes and writes arrays in one call, as dask.array.store(sources, targets): each chunk is
 * written to its place in its target as soon as it is computed, and the workers free it once it
 * is written, so an output larger than the workers' memory together can be written (the
 * scheduler holds a job back while its unwritten chunks reach a budget: docs/PROTOCOL.md
 * "Streamed outputs"). The arrays are not kept on the cluster (tsr_array_read() on them needs a
 * tsr_compute()).
 *
 * Every target is written under a temporary name beside its path (PATH.tmp-XXXXXX: a file for
 * .npy, a directory for a Zarr store) and renamed onto its path only once the whole computation
 * has succeeded and every target is complete; on failure or interrupt (tsr_client_interrupt) the
 * temporaries are removed and nothing is left behind. An existing .npy file is replaced; an
 * existing Zarr store is replaced only at that last step (swapped out in one rename where the
 * file system allows); any other existing directory, or a file where a store goes (-EEXIST),
 * and a directory where a .npy file goes (-EISDIR), are refused before anything runs. A Zarr target
 * whose array has irregular chunks (an unequal chunk before the last on some axis) is written with
 * regular chunks, each axis's largest (a rechunk in the same submission). Two targets may not name
 * the same path. The targets are put in place all or none: if one cannot be at the end (its
 * directory vanished, say), those already renamed are taken back out and the files and stores
 * that were at their paths are put back, so a failed call changes no output.
 *
 * targets: n entries, borrowed for the call (see tsr_store_target_init). opts may be NULL; its
 * own store/nstore must be empty. Errors: TSR_EINVALID (a bad target: the message names it),
 * -errno when a file cannot be created or written (the message names the path and the array),
 * TSR_ECOMPUTE (a task failed, a chunk file of a loaded store does not decode),
 * TSR_EINTERRUPTED, and those of tsr_compute(). Thread-safety as tsr_compute(). */
TSR_API int tsr_store(tsr_client *c, const tsr_store_target *targets, size_t n,
                      const tsr_compute_options *opts);

/* The execution trace of the last computation this client finished (the last successful
 * tsr_compute() or tsr_program_run()), when it ran with tsr_compute_options.trace set, in the
 * Chrome trace-event format that Perfetto (ui.perfetto.dev) and chrome://tracing open:
 *   {"traceEvents": [
 *     {"name": "process_name", "ph": "M", "pid": P, "tid": T, "args": {"name": WORKER}},
 *     {"name": "thread_name", "ph": "M", "pid": P, "tid": T, "args": {"name": "tsr-exec-K"}},
 *     {"name": OP, "cat": "task", "ph": "X", "ts": US, "dur": US, "pid": P, "tid": T,
 *      "args": {"task": ID}},
 *     {"name": "transfer", "cat": "transfer", "ph": "X", "ts": US, "dur": US, "pid": P,
 *      "tid": T, "args": {"task": ID, "bytes": B, "from": "HOST:PORT"}}, ...],
 *    "displayTimeUnit": "ms",
 *    "otherData": {"generator", "job", "t0", "tasks", "transfers", "dropped"}}
 * One complete ("X") event per task run (inline sources never run alone and have none), on the
 * thread that ran it: pid = worker index + 1, tid = executor thread index + 1 (thread
 * "tsr-exec-K" is tid K+1; Perfetto gives pid 0 and tid 0 special meanings). One per chunk a
 * worker fetched from another, on the fetching worker's pid and a "transfers" thread (tid
 * 100000 + lane: concurrent fetches go on separate lanes, so no two events of one thread
 * overlap). ts and dur are microseconds; ts counts from the earliest event, which happened at
 * otherData.t0 (seconds since the Epoch, CLOCK_REALTIME of the workers' machine). Each named
 * thread also gets "thread_sort_index" metadata (its tid: executors first, then transfer lanes).
 * `dropped` counts events the scheduler did not keep (it keeps at most 1,000,000 per job).
 * Returns NULL when the last computation was not traced, nothing has finished yet, the
 * scheduler sent no trace, or out of memory. Caller frees with free(). Like every call on a
 * client but the two named at the top, not while another thread uses the client. */
TSR_API char *tsr_client_trace_json(tsr_client *client);

/* Writes that trace to path (copied) under a temporary name (PATH.tmp-XXXXXX) renamed onto path
 * once complete, streaming it (a large trace is never assembled in memory); on failure the
 * temporary file is removed. *dropped (dropped may be NULL) receives otherData.dropped: events
 * missing from the file. TSR_ENOTCOMPUTED when there is no trace (see above), TSR_EINVALID for
 * an empty path, -errno when the file cannot be written. */
TSR_API int tsr_client_save_trace(tsr_client *client, const char *path, uint64_t *dropped);

/* Reads a computed array into buf (C order, the array's dtype; size must be at least
 * tsr_array_size(a) * tsr_dtype_size(dtype)). Chunks come straight from the workers. */
TSR_API int tsr_array_read(tsr_array *a, void *buf, size_t size);

/* Writes a computed array to a .npy file, chunk by chunk (the array is never assembled in
 * memory), under a temporary name that is renamed into place once complete. path copied. */
TSR_API int tsr_array_save_npy(tsr_array *a, const char *path);

/* The number of chunk tasks computing these arrays would run (shared sub-graphs counted once),
 * after fusion unless the client's fusion is off (tsr_client_set_fusion). */
TSR_API int64_t tsr_task_count(tsr_array *const *arrays, size_t n);
/* Whether lowering fuses elementwise chains into one task per chunk on this client (default on;
 * docs/arrays.md, "Fusion"): tsr_task_count, tsr_write_dot and tsr_compute follow it
 * (tsr_compute_options.no_fuse also turns it off for one computation). 0, or TSR_EINVALID. */
TSR_API int tsr_client_set_fusion(tsr_client *client, int on);

/* Writes the chunk-task graph of these arrays in Graphviz dot syntax. */
TSR_API int tsr_write_dot(tsr_array *const *arrays, size_t n, FILE *f);

/* ---------------------------------------------------------------------------------------------
 * Program files (SPEC §2): a client of the API above.
 * ------------------------------------------------------------------------------------------- */

/* Loads and validates a program file, building its arrays on client c (which may be offline).
 * Errors: TSR_EPROGRAM (or -errno), with a message such as
 * `prog.json: array "C": matmul needs A.shape[1] == B.shape[0], got 300 and 200`
 * in tsr_client_errmsg(c). Caller frees with tsr_program_free(). */
TSR_API int tsr_program_load(tsr_client *c, const char *path, tsr_program **out);
/* Same, from a string; `name` is used in messages in place of the file name. */
TSR_API int tsr_program_load_string(tsr_client *c, const char *json, const char *name,
                                    tsr_program **out);

TSR_API size_t tsr_program_narrays(const tsr_program *p);
/* The i-th array in dependency order (operands before their users). Borrowed. */
TSR_API tsr_array *tsr_program_array(const tsr_program *p, size_t i);
/* The array of that name, or NULL. Borrowed. */
TSR_API tsr_array *tsr_program_find(const tsr_program *p, const char *name);
TSR_API size_t tsr_program_noutputs(const tsr_program *p);
/* Output i, in file order: its array (borrowed) and its path ("-" prints on stdout). */
TSR_API tsr_array *tsr_program_output(const tsr_program *p, size_t i, const char **path);
/* Output i as a store target for tsr_store(): its array and path (both borrowed from p), its
 * format (TSR_FORMAT_ZARR for an object entry, else TSR_FORMAT_AUTO) and compressor. 0, or
 * TSR_EINVALID when i is out of range or the output is printed ("-"). */
TSR_API int tsr_program_output_target(const tsr_program *p, size_t i, tsr_store_target *t);

/* Computes every output in one submission, writing the file outputs (.npy files and Zarr
 * stores) as their chunks are computed, as tsr_store() does (each under a temporary name,
 * renamed into place once everything has succeeded), then prints the "-" outputs on `out` in
 * file order. opts may be NULL; store targets in opts are written too. */
TSR_API int tsr_program_run(tsr_program *p, const tsr_compute_options *opts, FILE *out);

TSR_API void tsr_program_free(tsr_program *p);

/* ---------------------------------------------------------------------------------------------
 * Servers as handles: a scheduler or a worker inside the calling process (the `tessera scheduler`
 * and `tessera worker` commands are thin wrappers over these).
 *
 * The library changes no process-wide state and never prints on its own: no signal handlers, no
 * environment reads, no malloc or OpenBLAS settings, no SIGPIPE disposition. What a server has to
 * say goes to the logger in its options (nothing is printed when none is set). Several
 * schedulers and workers may run side by side in one process, each on its own thread.
 *
 * SIGPIPE: a program need not ignore it. The library writes sockets through libuv, with writev(),
 * which cannot take MSG_NOSIGNAL; so every such write runs with SIGPIPE blocked on the thread
 * that makes it (the one inside tsr_scheduler_run(), tsr_worker_run() or a client call), and a
 * SIGPIPE it raised is taken with sigtimedwait() before SIGPIPE is unblocked again: it is never
 * delivered, the write fails with EPIPE, and only that connection closes. The disposition of
 * SIGPIPE is never changed. Two consequences: a SIGPIPE sent to the process with kill() while a
 * library call blocks it may be taken too; and a program that blocks SIGPIPE itself keeps it
 * blocked (the library then leaves the mask and any pending SIGPIPE alone).
 * ------------------------------------------------------------------------------------------- */

/* The library's version, "MAJOR.MINOR.PATCH" (TSR_VERSION_* of the library actually linked).
 * Borrowed (static storage). */
TSR_API const char *tsr_version(void);

typedef struct tsr_scheduler tsr_scheduler;

typedef enum tsr_placement {
    TSR_PLACEMENT_DEFAULT = 0,   /* partition, locality and stealing (docs/ARCHITECTURE.md) */
    TSR_PLACEMENT_ROUNDROBIN = 1 /* a baseline for benchmarks: tasks round-robin, no stealing */
} tsr_placement;

/* tsr_scheduler_options.allowed_failures when 0 (Dask's default). */
#define TSR_ALLOWED_FAILURES_DEFAULT 3

typedef struct tsr_scheduler_options {
    const char *listen; /* "HOST:PORT"; default "127.0.0.1:8786"; port 0 picks a free port.
                           Copied */
    const char *token;  /* required from every peer; mandatory when listening off loopback;
                           copied; NULL or "" = none */
    tsr_logger logger;  /* default: none (silent) */
    int log_level;      /* lines above this level are dropped; default TSR_LOG_WARN */
    int placement;      /* a tsr_placement; default TSR_PLACEMENT_DEFAULT */
    /* Liveness (docs/PROTOCOL.md "Liveness"). Every heartbeat_ms (default 1000) the scheduler
     * sends a heartbeat to each worker, client and monitor; a worker it hears nothing from for
     * worker_timeout_ms (default 10000) is lost, as if its connection had closed. 0 = the
     * default. Taken from reserved, which shrank from 32 bytes to 24: same size, same ABI. */
    int heartbeat_ms;
    int worker_timeout_ms;
    /* Poison tasks (Dask's allowed-failures): a task that was running on allowed_failures
     * workers when each of them died (crashed, was killed, or went silent) is marked erred and
     * its job fails, naming the array and the task, instead of being placed on the next worker.
     * 0 = the default, 3. Taken from reserved, which shrank from 24 bytes to 20: same size, same
     * ABI. */
    int allowed_failures;
    uint8_t reserved[20]; /* room to grow: must stay zero (tsr_scheduler_options_default) */
} tsr_scheduler_options;

TSR_API void tsr_scheduler_options_default(tsr_scheduler_options *opts);

/* Creates a scheduler and binds its listening socket (so tsr_scheduler_address() names the port
 * picked for port 0); nothing is served until tsr_scheduler_run(). On success *out is a new
 * handle that the caller frees with tsr_scheduler_free(); on failure *out is NULL and the
 * logger said why (TSR_EINVALID for a bad address, TSR_EAUTH for off-loopback without a token,
 * -errno when the address cannot be bound). opts may be NULL (the defaults). */
TSR_API int tsr_scheduler_new(const tsr_scheduler_options *opts, tsr_scheduler **out);

/* "HOST:PORT" actually bound ("127.0.0.1:40123"). Borrowed; valid until tsr_scheduler_free().
 * Any thread. */
TSR_API const char *tsr_scheduler_address(const tsr_scheduler *s);

/* Serves on the calling thread until tsr_scheduler_stop() or a client's shutdown request, then
 * tells every worker to shut down and closes every connection (waiting at most 2 s for their
 * queued writes). Returns 0 on a clean stop. Runs once per handle: a second call returns
 * TSR_EINVALID. */
TSR_API int tsr_scheduler_run(tsr_scheduler *s);

/* Asks a scheduler to stop; tsr_scheduler_run() returns soon after. Async-signal-safe and safe
 * from any thread (uv_async_send), before, during or after tsr_scheduler_run(), any number of
 * times; not after tsr_scheduler_free(). */
TSR_API void tsr_scheduler_stop(tsr_scheduler *s);

/* Closes everything the scheduler holds (stopping it first when it never ran) and frees it. Not
 * while tsr_scheduler_run() is running on another thread: stop it and let run return first.
 * NULL is a no-op. */
TSR_API void tsr_scheduler_free(tsr_scheduler *s);

typedef struct tsr_worker tsr_worker;

typedef struct tsr_worker_options {
    const char *scheduler;   /* "HOST:PORT"; required; copied */
    const char *token;       /* NULL = none; copied */
    int threads;             /* executor threads; default 1 */
    const char *cpus;        /* cores to pin to, hwloc list syntax ("0-3,6"); NULL = all; copied */
    int gpu;                 /* GPU id, -1 = CPU worker (default) */
    const char *name;        /* NULL = "HOST-PID-PORT" (PORT: the peer port); copied */
    const char *listen_host; /* address peers reach this worker on; default "127.0.0.1"; copied */
    /* Chunk memory, bytes: chunks, the buffer pool and buffers in flight all count. Above 70%
     * of it the worker spills chunks to disk until it holds 60%; above 80% it is paused (the
     * scheduler sends it no new work) until it is under 70% again (docs/memory.md). 0 = the
     * default: tsr_system_memory(); -1 = no limit (nothing is spilled). */
    int64_t memory_limit;
    /* Called on the worker's thread once the scheduler has welcomed it, with the address peers
     * fetch chunks from (as tsr_worker_address()). */
    void (*on_ready)(const char *peer_address, void *user);
    void *user;
    tsr_logger logger; /* default: none (silent) */
    int log_level;     /* lines above this level are dropped; default TSR_LOG_WARN */
    /* Threads one BLAS call of an executor may use; default 1 (the executors already use one
     * core each). OpenBLAS's thread count is process-wide, so the library does not set it: the
     * program applies it (openblas_set_num_threads(), as `tessera worker` does). The worker logs
     * a warning when OpenBLAS is set to use more. */
    int blas_threads;
    /* Liveness (docs/PROTOCOL.md "Liveness"): a heartbeat to the scheduler every heartbeat_ms
     * (default 1000), sent by the loop thread, so it keeps beating while kernels run; the worker
     * stops, as when the connection closes, once the scheduler has sent nothing for timeout_ms
     * (default 30000), and a fetch from a peer that sends nothing for as long fails (the
     * scheduler then places the task again). 0 = the default. Taken from reserved, which shrank
     * from 32 bytes to 24: same size, same ABI. */
    int heartbeat_ms;
    int timeout_ms;
    /* The buffer pool: freed chunk buffers of 64 KiB and more are kept, up to this many bytes,
     * and reused without mapping or faulting pages again; given back when the worker goes idle.
     * 0 = the default (64 MiB per executor thread, or a tenth of memory_limit when that is
     * less), -1 = no pool.
     * Taken from reserved, which shrank from 24 bytes to 16: same size, same ABI. */
    int64_t pool_bytes;
    /* A GPU worker's device memory limit (gpu >= 0): the chunks it keeps on the device, least
     * recently used evicted to host memory beyond it. 0 = the default: the device's free memory
     * when the worker starts, less a tenth (at least 256 MiB) for cuBLAS and the runtime. Taken
     * from reserved, which shrank from 16 bytes to 8: same size, same ABI. */
    int64_t device_memory_limit;
    /* Where chunks are spilled when the worker holds more than memory_limit allows
     * (docs/memory.md): a directory of the worker's own is made under it at the first spill and
     * removed at exit. NULL = $TMPDIR, else /tmp; copied. Taken from reserved, the last of it:
     * a field after this one grows the struct. */
    const char *spill_dir;
    /* Data roots (docs/security.md): a `load` task reads only a .npy file or Zarr store whose
     * real path (symlinks and `..` resolved) lies under one of these directories, and whose
     * header matches the task's dtype and shape. n_data_roots entries, each copied. None given:
     * the working directory when the worker has a token; any path (the header still checked)
     * when it has none, since a cluster without a token is open to every local user anyway. A
     * root that does not exist fails tsr_worker_new with TSR_EINVALID. This field grows the
     * struct: code built against an older header must be rebuilt. */
    const char *const *data_roots;
    int n_data_roots;
    /* Fault injection, for tests of failure handling only (docs/cli/worker.md): the name of a
     * kernel family ("reduce", "matmul", ...; tsr__kop_name's names) whose tasks kill this
     * worker's process with SIGKILL when an executor starts one, as a task that crashes its
     * worker would. NULL = none (the default); copied. `tessera worker` sets it from
     * $TESSERA_FAULT_KILL_KERNEL. This field grew the struct. */
    const char *fault_kill_kernel;
    /* Plugin directories (docs/plugins.md): the only places this worker loads user kernels
     * (map_blocks' "LIBRARY:SYMBOL") from, as DIR/libLIBRARY.so or DIR/LIBRARY.so, in this
     * order. n_plugin_dirs entries, each copied (as a real path). The libraries found there at
     * start are announced to the scheduler, which sends a map_blocks task only to a worker that
     * has its library. None (the default): this worker runs no user kernel. A directory that
     * does not exist fails tsr_worker_new with TSR_EINVALID. This field grew the struct. */
    const char *const *plugin_dirs;
    int n_plugin_dirs;
    /* The pages chunk buffers are mapped in: 0 = measured when the worker starts (the default:
     * a first touch of 2 MiB in each kind is timed, and 4 KiB pages are taken when they cost
     * less than half of a huge page's; docs/ARCHITECTURE.md "Buffers and memory"), 1 =
     * transparent huge pages, -1 = 4 KiB pages. `tessera worker` sets it from
     * $TESSERA_HUGE_PAGES. This field grew the struct. */
    int huge_pages;
} tsr_worker_options;

TSR_API void tsr_worker_options_default(tsr_worker_options *opts);

/* Creates a worker: reads the topology, starts and pins its executor threads, binds its peer
 * socket (tsr_worker_address()) and starts connecting to the scheduler. Nothing is served until
 * tsr_worker_run(). On success *out is a new handle that the caller frees with
 * tsr_worker_free(); on failure *out is NULL (TSR_EINVALID: no scheduler address, a bad cpu set;
 * TSR_EUNSUPPORTED: a GPU worker). opts may not be NULL (a scheduler address is required).
 *
 * A worker process does best with glibc's dynamic mmap threshold fixed at 128 KiB
 * (mallopt(M_MMAP_THRESHOLD, 128 * 1024); mallopt(M_TRIM_THRESHOLD, 256 * 1024)), so large
 * message buffers go back to the kernel when freed (chunk buffers come from the worker's own
 * pool); `tessera worker` sets it, the library does not. */
TSR_API int tsr_worker_new(const tsr_worker_options *opts, tsr_worker **out);

/* The address peers fetch this worker's chunks from ("127.0.0.1:40125"). Borrowed; valid until
 * tsr_worker_free(). Any thread. */
TSR_API const char *tsr_worker_address(const tsr_worker *w);

/* The worker's name (the option, or "HOST-PID-PORT"). Borrowed; valid until tsr_worker_free(). */
TSR_API const char *tsr_worker_name(const tsr_worker *w);

/* Serves on the calling thread until tsr_worker_stop(), the scheduler goes away (closes the
 * connection, or sends nothing for timeout_ms) or sends shutdown. Each executor finishes its
 * current task; queued ones are abandoned. Returns 0 on a clean stop, or why it stopped otherwise
 * (e.g. -ECONNREFUSED: no scheduler there, TSR_EVERSION/TSR_EAUTH: refused by it). Runs once per
 * handle: a second call returns TSR_EINVALID. */
TSR_API int tsr_worker_run(tsr_worker *w);

/* Asks a worker to stop, as tsr_scheduler_stop(): async-signal-safe, any thread, any time
 * before tsr_worker_free(). */
TSR_API void tsr_worker_stop(tsr_worker *w);

/* Asks a worker to retire gracefully (docs/PROTOCOL.md, "Retiring a worker"): it tells its
 * scheduler, which lets it finish what it was sent, copies the chunks that only it holds and a
 * job still needs to other live workers, then tells it to shut down (tsr_worker_run returns 0),
 * so nothing is computed again. With no scheduler connection, or no other live worker, it stops
 * at once. There is no deadline here: call tsr_worker_stop() when the caller's runs out.
 * Async-signal-safe, any thread, any time before tsr_worker_free(). */
TSR_API void tsr_worker_retire(tsr_worker *w);

/* Joins the executors, closes everything and frees the worker. Not while tsr_worker_run() runs
 * on another thread. NULL is a no-op. */
TSR_API void tsr_worker_free(tsr_worker *w);

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_TESSERA_H */
