/* The scheduler's private header: the pure task state machine (state.c), placement and the
 * per-worker backlog heaps (placement.c), message encoding/decoding (proto.c) and the server
 * (server.c, conn.c). state.c and placement.c know nothing about sockets: they change a
 * tsr__sched and append tsr__action records that the server turns into messages. */
#ifndef TSR_SCHED_H
#define TSR_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <uv.h>

#include "common/common.h"
#include "graph/ops.h"

#define TSR__NONE UINT32_MAX

/* Task states (DESIGN.md): queued = in a worker's backlog (never sent); running = sent to a
 * worker (in its in-flight window) and not reported yet; ready = no worker to place it on. */
enum {
    TSR__TS_WAITING = 0,
    TSR__TS_READY,
    TSR__TS_QUEUED,
    TSR__TS_RUNNING,
    TSR__TS_MEMORY,
    TSR__TS_RELEASED,
    TSR__TS_ERRED,
    TSR__TS_COUNT
};
const char *tsr__task_state_name(int st);

enum {
    TSR__TF_OUTPUT = 1,     /* the client asked for this chunk: it holds one reference */
    TSR__TF_MARK = 2,       /* scratch mark used while recovering from a lost worker */
    TSR__TF_INPUT_LOST = 4, /* sent, and an input's only holder died since: an erred is retried */
    TSR__TF_SENT = 8,       /* the compute message carrying it has been written */
    TSR__TF_SUSPECT = 16,   /* erred with remote inputs: parked, see tsr__sched_tick */
    TSR__TF_DONATED = 32,   /* its buffer was given to its last consumer: no free to send */
    TSR__TF_VIRTUAL = 64,   /* a cheap source made where needed (RECOMPUTE), never run alone */
    TSR__TF_FAR_REPLICA = 128, /* has replicas on workers >= 64, listed in sjob.rfar */
};

#define TSR__NOHOME UINT16_MAX
/* tsr_scheduler_options.allowed_failures: the default (Dask's), and the most (a byte counts). */
#define TSR__ALLOWED_FAILURES TSR_ALLOWED_FAILURES_DEFAULT
#define TSR__ALLOWED_FAILURES_MAX 255

typedef struct tsr__key {
    uint32_t job, task;
} tsr__key;

typedef struct tsr__keyvec {
    tsr__key *v;
    size_t n, cap;
} tsr__keyvec;

/* One task. `pos` is its index in whichever worker list holds it (backlog heap, in-flight
 * window or held chunks, all exclusive by state) or in the unassigned list (ready). */
typedef struct tsr__stask {
    uint8_t state;
    uint8_t flags;
    uint16_t home;      /* the partition's worker for it (TSR__NOHOME: none) */
    uint32_t deps_left; /* inputs not in memory (meaningful while waiting) */
    uint32_t refs;      /* dependents not finished + (output ? 1 : 0) */
    uint32_t where;     /* worker queued/running on, or holding the chunk (memory); virtual
                         * sources: TSR__NONE */
    uint32_t pos;
    float est;       /* expected seconds on `where`, added to its queue totals while queued */
    uint64_t nbytes; /* the graph's estimate, then the size the worker reported */
} tsr__stask;

/* Plugin libraries: a name's bytes with its NUL, and how many one worker may announce (its
 * hello's `plugins`; more are left out, and the worker says so in its log). */
#define TSR__PLUGIN_NAME 64
#define TSR__WORKER_PLUGINS 32

/* A decoded submission (proto.c fills it; tsr__sched_submit takes ownership of the arrays). */
typedef struct tsr__jobspec {
    uint32_t ntasks, narrays, noutputs;
    uint32_t *array;   /* ntasks: array index of each task */
    uint32_t *dep_off; /* ntasks + 1: inputs of task t are deps[dep_off[t] .. dep_off[t+1]) */
    uint32_t *deps;
    uint64_t *nbytes;  /* ntasks (freed once copied into the task table) */
    float *flops;      /* ntasks: the client's cost estimate (freed once classified) */
    uint64_t *kd_off;  /* ntasks + 1: kdesc bytes of t are arena[kd_off[t] .. kd_off[t+1]) */
    uint8_t *arena;    /* every kdesc, copied out of the payload */
    uint32_t *outputs; /* noutputs task ids, in the graph's order */
    char (*ops)[64];   /* narrays operation names ("matmul", "fused(add,sqrt)"), truncated */
    /* narrays plugin libraries (map_blocks' "LIBRARY"), "" for an array that needs none; NULL
     * when no array needs one. A task runs only on a worker that announced its array's. */
    char (*plugins)[TSR__PLUGIN_NAME];
    uint32_t nstream; /* the first nstream outputs are streamed (submit's `stream`) */
} tsr__jobspec;

void tsr__jobspec_free(tsr__jobspec *spec);
/* Structural checks (deps < task id, indices in range, offsets monotonic). 0 or TSR_EPROGRAM. */
int tsr__jobspec_check(const tsr__jobspec *spec, char *err, size_t errlen);
struct tsr__sched;
/* Is task t a HELD task (tsr_persist)? 1 with the chunk it names in *job, *task (TSR__NONE both
 * when its descriptor is malformed), else 0. Decodes only HELD descriptors. */
int tsr__jobspec_held(const tsr__jobspec *g, uint32_t t, uint32_t *job, uint32_t *task);
/* A HELD task (tsr_persist, kernels/kernels.h) takes a chunk of another job, which its worker
 * fetches with the capability of that job: the job must be a live one of the same client (else
 * a client could read another's chunks). 0 or TSR_EPROGRAM with the message in err. */
int tsr__jobspec_check_held(const struct tsr__sched *s, uint32_t client, const tsr__jobspec *spec,
                            char *err, size_t errlen);

/* Trace records (only for traced jobs). */
typedef struct tsr__tspan {
    uint32_t worker, task;
    double start, seconds;
    uint32_t thread;
} tsr__tspan;
typedef struct tsr__txfer {
    uint32_t worker, task;
    uint64_t nbytes;
    double start, end;
    char from[64];
} tsr__txfer;
/* A trace travels in the finished header (64 MiB at most): events beyond this are counted,
 * not kept. */
#define TSR__TRACE_MAX 1000000

typedef struct tsr__sjob {
    uint32_t id;
    uint32_t client; /* the server's connection id of the submitting client */
    tsr__jobspec g;
    tsr__stask *t;
    uint32_t *rdep_off; /* ntasks + 1: dependents in CSR form */
    uint32_t *rdeps;
    uint32_t *cls;    /* ntasks: cost class (cost.c) */
    uint64_t *rmask;  /* ntasks, allocated on first use: workers (< 64) holding a replica of
                       * a virtual source */
    tsr__keyvec rfar; /* {worker, task} replicas on workers >= 64 */
    uint32_t *wtasks; /* tasks run per worker id (nwtasks entries) */
    size_t nwtasks;
    uint64_t moved_bytes;     /* input bytes workers were told to fetch from other workers */
    int trace;                /* the client asked for a trace (PROTOCOL.md) */
    struct tsr__tspan *spans; /* traced task runs, in report order */
    size_t nspans, spancap;
    struct tsr__txfer *xfers; /* traced transfers */
    size_t nxfers, xfercap;
    uint64_t trace_dropped; /* events past TSR__TRACE_MAX */
    uint64_t rss_base;      /* the scheduler's VmRSS when the submission arrived */
    uint32_t ndone, nerred;
    uint32_t nvirtual;     /* cheap sources made where needed (never run as tasks) */
    uint32_t retire_moved; /* chunks copied off retiring workers (retire.c) */
    /* Progress per operation type (`tessera top`): aop maps an array to its op; counts are
     * kept as tasks change state, never recomputed by walking tasks. */
    uint16_t *aop;
    uint32_t nops;
    char (*opname)[64];
    uint32_t *op_total, *op_done, *op_err;
    uint32_t *op_ready;  /* in a backlog or unassigned: inputs there, not sent yet */
    uint32_t *op_inline; /* virtual sources (made by their consumers) */
    double *op_flops;    /* flops of the done tasks */
    double *op_seconds;  /* kernel seconds the workers reported for them */
    uint64_t *op_moved;  /* input bytes fetched from other workers for them */
    uint32_t inflight;   /* tasks in some worker's in-flight window */
    uint32_t live_pos;   /* index in tsr__sched.live */
    /* Streamed outputs (PROTOCOL.md "Streamed outputs"): per task TSR__SO_* bits, NULL for a
     * job that streams nothing; stream_held counts the tasks whose TSR__SO_BUDGET counts now
     * (running, or in memory and not released by the client). */
    uint8_t *stream;
    uint32_t stream_held;
    /* Poison tasks: per task, how many workers died while it was in their in-flight window
     * (allocated at the first such death; tsr__sched.allowed_failures ends it). */
    uint8_t *deaths;
    /* Per task, how often it was run again after it erred before it started (a failed fetch, a
     * missing input: not its kernel's fault); allocated at the first. */
    uint8_t *input_retries;
    int cancelled;     /* failed or released: only waits for in-flight reports to drain */
    int finished_sent; /* a finished message was emitted for the current set of outputs */
    int dirty;         /* progress changed since the last progress message */
} tsr__sjob;

/* A worker's latest `st` report (PROTOCOL.md), kept for stats, the bandwidth estimate and
 * placement. The dev_ fields are a GPU worker's device cache, the spilled/disk fields and paused
 * its disk tier (0 from workers that do not report them). paused: the worker is over its pause
 * threshold and takes no new work (tsr__sched_worker_stats). */
typedef struct tsr__wstats {
    uint64_t rss_peak, rss, chunk_bytes, chunk_peak, tasks, in_bytes, out_bytes;
    double busy_s, in_s;
    uint64_t dev_used, dev_limit, h2d_bytes, d2h_bytes, dev_evicted;
    uint64_t spilled_bytes, unspilled_bytes, disk_bytes;
    double spill_s, unspill_s;
    int paused;
} tsr__wstats;

typedef struct tsr__sworker {
    uint32_t peer; /* the server's connection id (opaque here) */
    int alive;
    int kind; /* TSR__KIND_CPU or TSR__KIND_GPU */
    uint32_t threads;
    double q_inflight; /* expected seconds of work sent and not reported */
    double q_backlog;  /* expected seconds of work in the backlog */
    double speed;      /* measured / class mean (1 = typical; 2 = twice as slow) */
    tsr__wstats st;
    tsr__keyvec backlog; /* binary heap on (job, task): lower = higher priority */
    tsr__keyvec inflight;
    uint64_t inflight_bytes; /* expected output bytes of the in-flight window's tasks */
    tsr__keyvec held;        /* chunks in memory here */
    uint64_t held_bytes;
    char addr[64]; /* where peers fetch its chunks */
    char name[64];
    char cpus[64]; /* as the worker said in its hello */
    uint64_t mem_limit;
    int dev;            /* reports device figures (a GPU worker): info and stats carry them */
    char dev_name[64];  /* the device, as its hello named it */
    int spill;          /* reports its disk tier (spilled bytes, paused): info and stats carry it */
    int retiring;       /* sent retire (TSR__RETIRING), told to shut down since (TSR__RETIRED) */
    tsr__keyvec moving; /* retiring: chunks asked of other workers (replicate), not yet there */
    uint32_t handed;    /* retiring: chunks moved to other workers so far */
    uint32_t nplugins;  /* the plugin libraries it can load (its hello's `plugins`) */
    char plugins[TSR__WORKER_PLUGINS][TSR__PLUGIN_NAME];
} tsr__sworker;

/* Streamed output bits (tsr__sjob.stream): NOTIFY, the client is told with `computed` when the
 * chunk goes into memory; BUDGET, it will be released by the client once written, and counts
 * against the job's budget of unwritten chunks while it runs or is held. */
enum { TSR__SO_NOTIFY = 1, TSR__SO_BUDGET = 2 };
/* The budget: streamed chunks per executor thread of the live workers, and the least. */
#define TSR__STREAM_PER_THREAD 4
#define TSR__STREAM_MIN 8

/* STORED: a streamed output chunk went into memory (job, task; `computed` to the client). */
enum { TSR__ACT_COMPUTE, TSR__ACT_FREE, TSR__ACT_FINISHED, TSR__ACT_FAILED, TSR__ACT_STORED };

typedef struct tsr__action {
    int kind;
    uint32_t worker;    /* COMPUTE, FREE */
    uint32_t job, task; /* the key (FINISHED: job only) */
    uint32_t client;    /* FAILED */
    uint32_t array;     /* FAILED */
    char *msg;          /* FAILED: owned */
} tsr__action;

/* An erred task that had inputs on other workers: if one of those workers turns out lost
 * within the grace period (its disconnect may reach us after the failed fetch), it is a retry;
 * otherwise the job fails with msg. */
typedef struct tsr__parked {
    tsr__key k;
    double since;
    char *msg;
    char worker[64];
    int kept; /* it erred before it started (its inputs' stage): it may be run again */
} tsr__parked;

/* How many times a task that errs before it starts (a fetch that failed, an input its worker
 * did not have) is run again before its error fails the job. */
#define TSR__INPUT_RETRIES 3

enum { TSR__KIND_CPU = 0, TSR__KIND_GPU = 1, TSR__KINDS };

/* A cost class: tasks of one operation on one chunk shape and dtype (cost.c). */
typedef struct tsr__cls {
    uint64_t hash;
    char op[64];
    uint8_t kop;   /* kernel family; UINT8_MAX when the descriptor does not say */
    uint8_t dtype; /* output tsr_dtype; UINT8_MAX when the descriptor does not say */
    uint32_t ndeps;
    uint64_t nbytes;
    float flops;
    double model[TSR__KINDS]; /* prior seconds per worker kind, until measurements come */
    double mean[TSR__KINDS];  /* learned seconds per worker kind (normalised by worker speed) */
    uint32_t n[TSR__KINDS];   /* samples behind mean */
} tsr__cls;

typedef struct tsr__costs {
    tsr__cls *c; /* c[0] unused: class ids start at 1 */
    size_t n, cap;
    uint32_t *slot; /* open-addressing index into c (0 = empty) */
    size_t nslot;   /* power of two */
    double bw;      /* bytes/s of peer transfers, from workers' in_bytes / in_s */
    double latency; /* seconds per transfer round trip */
    double h2d_bw;  /* bytes/s of a GPU worker's host-to-device copies (a prior) */
    double d2h_bw;  /* bytes/s of its device-to-host copies (a prior) */
} tsr__costs;

typedef struct tsr__sched {
    const tsr__logger *log;
    tsr__costs cost;
    int roundrobin;      /* bench-only baseline: TSR_PLACEMENT_ROUNDROBIN */
    uint32_t placements; /* counter for refreshing `least` */
    uint32_t least[2];   /* cached least-loaded workers (many workers only) */
    tsr__sworker *w;
    size_t nw, wcap;
    uint32_t nalive;
    uint32_t nthreads;          /* executor threads of the live workers */
    uint32_t nkind[TSR__KINDS]; /* live workers of each kind */
    /* Which kernels each kind of worker has: a tsr_dtype bit set per (kind, family), from the
     * operations table (placement.c, tsr__kind_runs). Every kind has every family today; a
     * family that only some kinds have (a CPU-only plugin) clears its bits for the others. */
    uint32_t kernels[TSR__KINDS][TSR_KOP_COUNT];
    tsr__sjob **jobs; /* by id; NULL once deleted. Slot 0 is unused (job ids start at 1). */
    size_t njobs, jcap;
    uint32_t *live; /* ids of jobs not deleted */
    size_t nlive, livecap;
    tsr__keyvec unassigned; /* ready tasks with no worker to go to */
    tsr__action *act;
    size_t nact, actcap;
    uint32_t *dirty; /* jobs whose progress changed (each once, see sjob.dirty) */
    size_t ndirty, dirtycap;
    uint64_t backlog_total;
    uint64_t done_total;           /* tasks reported done since start, all jobs */
    uint64_t count[TSR__TS_COUNT]; /* tasks by state over live jobs */
    uint32_t rr;                   /* round-robin cursor for tasks without inputs */
    uint64_t *score;               /* placement scratch, one per worker */
    size_t score_cap;
    tsr__keyvec s1, s2;  /* recovery scratch */
    tsr__parked *parked; /* errors that may be fetches from a worker not yet known lost */
    size_t nparked, parkcap;
    double grace; /* seconds a parked error waits for a loss before failing its job */
    /* A task in the in-flight window of this many workers when they died is poison: it is
     * marked erred and its job fails (Dask's allowed-failures; default 3, at most 255). */
    uint32_t allowed_failures;
} tsr__sched;

/* ---- state.c ---- */
void tsr__sched_init(tsr__sched *s, const tsr__logger *log);
void tsr__sched_free(tsr__sched *s);
static inline tsr__sjob *tsr__sched_job(const tsr__sched *s, uint32_t id) {
    return id < s->njobs ? s->jobs[id] : NULL;
}
static inline tsr__stask *tsr__key_task(const tsr__sched *s, tsr__key k) {
    return &s->jobs[k.job]->t[k.task];
}
/* A worker joins; returns its id (index into s->w). addr/name copied. */
uint32_t tsr__sched_add_worker(tsr__sched *s, uint32_t peer, uint32_t threads, int kind,
                               const char *addr, const char *name);
/* The same, for a worker that can load the plugin libraries plugins[0..nplugins) (copied; at
 * most TSR__WORKER_PLUGINS): they count before its first placement and admission checks. */
uint32_t tsr__sched_add_worker_plugins(tsr__sched *s, uint32_t peer, uint32_t threads, int kind,
                                       const char *addr, const char *name,
                                       const char (*plugins)[TSR__PLUGIN_NAME], uint32_t nplugins);
/* A worker's connection closed: requeue its tasks, recompute chunks only it held. */
void tsr__sched_remove_worker(tsr__sched *s, uint32_t wid);
/* A new job from client; spec's arrays are taken over (freed on failure too). 0, or
 * TSR_EPROGRAM with a message in err. */
int tsr__sched_submit(tsr__sched *s, uint32_t client, tsr__jobspec *spec, uint32_t *job_out,
                      char *err, size_t errlen);
/* Worker wid finished (job, task), holding nbytes. TSR_EPROTOCOL for an impossible report. */
int tsr__sched_done(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task, uint64_t nbytes,
                    double seconds);
/* Trace events from a worker's done (ignored for untraced or unknown jobs). */
void tsr__sched_trace_span(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task, double start,
                           double seconds, uint32_t thread);
void tsr__sched_trace_xfer(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task,
                           uint64_t nbytes, double start, double end, const char *from);
/* A task failed. kept: it never started, so the inputs it was given to consume (DONATE) are still
 * on that worker. now: seconds on any monotonic clock (for the grace period of parked errors). */
int tsr__sched_erred(tsr__sched *s, uint32_t wid, uint32_t job, uint32_t task, const char *msg,
                     int kept, double now);
/* Fails the jobs of parked errors older than the grace period. */
void tsr__sched_tick(tsr__sched *s, double now);
/* Fails every live job that has a task no live worker can run: no kernel for it, or inputs and
 * output larger than every worker's memory limit (after a worker joined or its limit is known). */
void tsr__sched_check_jobs(tsr__sched *s);

/* ---- poison.c ---- */
/* The first unfinished task of j whose inputs and output together exceed every live worker's
 * memory limit, with the reason in msg; TSR__NONE when all fit (or a live worker has no limit,
 * or none is live). */
uint32_t tsr__sched_unfit(const tsr__sched *s, const tsr__sjob *j, char *msg, size_t size);
/* The first task of j not started whose plugin library (map_blocks) no live worker announced,
 * with the reason in msg; TSR__NONE when there is none (or no worker is live). */
uint32_t tsr__sched_no_plugin(const tsr__sched *s, const tsr__sjob *j, char *msg, size_t size);
/* The largest memory limit among live workers (UINT64_MAX when one has none). */
uint64_t tsr__sched_largest_limit(const tsr__sched *s);
/* A worker died with task id of j in its in-flight window: counts the death against the task if
 * it had been sent there; 1 when that makes it poison (allowed_failures deaths). */
int tsr__sched_count_death(tsr__sched *s, tsr__sjob *j, uint32_t id);
/* Why a poison task fails (last: the worker that died last). */
void tsr__sched_poison_msg(const tsr__sched *s, const tsr__sjob *j, uint32_t id, const char *last,
                           char *msg, size_t size);
/* The client releases a job (cancelling it if still running). TSR_EINVALID if not its job. */
int tsr__sched_release(tsr__sched *s, uint32_t client, uint32_t job);
/* The client has written these streamed output chunks of its job: drop its references (freeing
 * what nothing else needs) and give their budget back. Keys that are not streamed, unreleased
 * outputs of the job are ignored; TSR_EINVALID if the job is not the client's. */
int tsr__sched_release_keys(tsr__sched *s, uint32_t client, uint32_t job, const uint32_t *ids,
                            size_t n);
/* A streaming job's budget of unwritten chunks (TSR__STREAM_PER_THREAD per live thread). */
uint32_t tsr__stream_budget(const tsr__sched *s);
void tsr__sched_client_gone(tsr__sched *s, uint32_t client);
/* Idle workers steal from the largest backlogs. Called once per loop turn. */
void tsr__sched_balance(tsr__sched *s);
/* Drops the emitted actions (freeing their messages). */
void tsr__sched_clear_actions(tsr__sched *s);
/* How the inputs of a task being sent to wid travel: per input, PROTOCOL.md flags (DONATE,
 * RECOMPUTE) into flags[k]. Records replicas, donations and moved bytes. */
enum { TSR__IN_DONATE = 1, TSR__IN_RECOMPUTE = 2 };
void tsr__sched_plan_inputs(tsr__sched *s, uint32_t wid, tsr__sjob *j, uint32_t task,
                            uint8_t *flags);
/* A worker's st report. One that ends a pause refills the worker's window at once. */
void tsr__sched_worker_stats(tsr__sched *s, uint32_t wid, const tsr__wstats *st);

/* Helpers shared with placement.c. */
void tsr__sched_pump(tsr__sched *s, uint32_t wid);
void tsr__keyvec_free(tsr__keyvec *kv);

/* ---- cost.c ---- */
void tsr__costs_init(tsr__costs *c);
void tsr__costs_free(tsr__costs *c);
/* The class of a task (interned); 0 only when out of memory. kop and dtype: UINT8_MAX when
 * unknown. */
uint32_t tsr__cost_class(tsr__costs *c, const char *op, uint8_t kop, uint8_t dtype, uint32_t ndeps,
                         uint64_t nbytes, float flops);
/* Expected seconds of a task of class cls on one thread of a worker of this kind, before any
 * worker's speed factor: the learned mean, or the prior until there is one. */
double tsr__cost_kind(const tsr__costs *c, uint32_t cls, int kind);
/* Expected seconds of a task of class cls on worker w. */
double tsr__cost_est(const tsr__costs *c, uint32_t cls, const tsr__sworker *w);
/* Learns from a measured run of a class-cls task on w. */
void tsr__cost_learn(tsr__costs *c, uint32_t cls, tsr__sworker *w, double seconds);
/* Seconds to move nbytes between two workers. */
static inline double tsr__cost_move(const tsr__costs *c, uint64_t nbytes) {
    return c->latency + (double)nbytes / c->bw;
}
/* Seconds to move nbytes from a worker of kind `from` to one of kind `to`: the peer transfer,
 * plus the copy off the source's device (a GPU worker keeps what it computed on its device)
 * and onto the destination's (a GPU worker computes from device memory). */
static inline double tsr__cost_xfer(const tsr__costs *c, uint64_t nbytes, int from, int to) {
    double s = tsr__cost_move(c, nbytes);
    if (from == TSR__KIND_GPU) s += (double)nbytes / c->d2h_bw;
    if (to == TSR__KIND_GPU) s += (double)nbytes / c->h2d_bw;
    return s;
}
/* The kernel family of a descriptor (its first field), or -1. */
int tsr__kdesc_peek_kop(const uint8_t *kd, size_t len);
/* The output dtype of a descriptor (its third field), or -1. */
int tsr__kdesc_peek_dtype(const uint8_t *kd, size_t len);

/* ---- placement.c ---- */
/* Kernel availability: does a worker of this kind have a kernel for family kop making dtype?
 * The one test placement, stealing and job admission use. An unknown family or dtype
 * (UINT8_MAX, an opaque descriptor) runs anywhere: the worker judges it. */
int tsr__kind_runs(const tsr__sched *s, int kind, int kop, int dtype);
/* Fills s->kernels from the operations table: every kind has every family. */
void tsr__kinds_init(tsr__sched *s);
/* The kinds (bit 1 << kind) that can run task id: its own kernel and those of the virtual
 * sources it makes where it runs (RECOMPUTE). */
unsigned tsr__task_kinds(const tsr__sched *s, const tsr__sjob *j, uint32_t id);
/* The kinds with a live worker (bit 1 << kind). */
unsigned tsr__alive_kinds(const tsr__sched *s);
/* The plugin library task id needs (its array's, map_blocks), or NULL when it needs none. */
const char *tsr__task_plugin(const tsr__sjob *j, uint32_t id);
/* Whether worker w announced library lib (1 when lib is NULL). */
int tsr__worker_has_plugin(const tsr__sworker *w, const char *lib);
/* Seconds until w is free, from the expected durations of what it has queued. */
static inline double tsr__worker_load(const tsr__sworker *w) {
    return (w->q_inflight + w->q_backlog) / (double)w->threads;
}
/* Sizes the in-flight window: keep sending while fewer than min tasks or less than this many
 * expected seconds per thread are in flight, up to max tasks per thread. 20 ms, not 4: with every
 * core running an executor, the worker's loop thread waits for a core before it can report and
 * take new work, and a deeper queue keeps the executors busy meanwhile (4096² matmul, medians of
 * 3 alternated runs, 4 / 20 / 50 ms: chunk 256 1.640 / 1.563 / 1.708 s, 128 1.935 / 1.877 /
 * 1.818, 512 1.580 / 1.564 / 1.643; bench/notes.md, issue 9). */
#define TSR__WINDOW_MIN_PER_THREAD 2
#define TSR__WINDOW_SECONDS 0.02
#define TSR__WINDOW_MAX_PER_THREAD 1024
/* Memory (issue 11, docs/ARCHITECTURE.md "Placement"). The bytes a worker will hold once what
 * was sent to it is done: its chunk bytes as it last reported them (every done carries them)
 * plus the expected outputs of its in-flight window. Backlogs are not counted: their tasks may
 * still be stolen, and most of them consume what they are given. */
static inline uint64_t tsr__worker_mem(const tsr__sworker *w) {
    return w->st.chunk_bytes + w->inflight_bytes;
}
/* A root (a task whose inputs are all cheap sources made where needed, so nothing it needs has
 * to be produced first) enters a worker's window beyond the window's minimum only while
 * tsr__worker_mem plus its output stays under this fraction of the worker's memory limit (hello
 * `mem`; no limit, no bound). The rest of the limit is for what the roots' consumers make, so
 * that roots produced ahead of their consumers are not what makes a worker spill. The window's
 * minimum (TSR__WINDOW_MIN_PER_THREAD) is never cut: every thread keeps work, and a worker
 * whose held chunks alone pass the fraction (outputs nobody has fetched yet) still progresses. */
#define TSR__ROOT_MEM_FRACTION 0.5
/* Gives each task of a job that is still to run a home (the partition): at submission, and
 * again whenever a worker joins or is lost. */
void tsr__partition(tsr__sched *s, tsr__sjob *j);
/* tsr__partition for every live job (the workers changed). */
void tsr__repartition(tsr__sched *s);
/* The worker a ready task should go to, or TSR__NONE when no worker is alive. */
uint32_t tsr__place(tsr__sched *s, const tsr__sjob *j, uint32_t task);
/* Backlog heap on (job, task); keeps each task's pos current. */
void tsr__backlog_push(tsr__sched *s, uint32_t wid, tsr__key k);
tsr__key tsr__backlog_pop(tsr__sched *s, uint32_t wid);
void tsr__backlog_remove(tsr__sched *s, uint32_t wid, uint32_t pos);
/* Moves up to what fits in thief's window from the largest backlog. Returns tasks moved. */
uint32_t tsr__steal(tsr__sched *s, uint32_t thief);

/* ---- proto.c ---- */
typedef enum {
    TSR__ROLE_NONE = 0,
    TSR__ROLE_CLIENT,
    TSR__ROLE_WORKER,
    TSR__ROLE_MONITOR
} tsr__role;

typedef struct tsr__hello {
    int64_t v;
    tsr__role role;
    char name[64];
    uint8_t cnonce[32], mac[32]; /* the answer to the challenge (wire/auth.c) */
    int has_proof;               /* both came, of the right size */
    int64_t threads;
    char kind[8];
    char addr[64];
    char cpus[64];      /* worker: the cores it is pinned to (hwloc list), optional */
    int64_t mem;        /* worker: memory limit in bytes, 0 = none, optional */
    char dev_name[64];  /* GPU worker: its device's name, optional */
    uint64_t dev_limit; /* GPU worker: device memory its cache may use, optional */
    int has_dev;        /* the hello carried either */
    uint32_t nplugins;  /* worker: the plugin libraries it can load, optional */
    char plugins[TSR__WORKER_PLUGINS][TSR__PLUGIN_NAME];
} tsr__hello;

/* Parses a hello header. 0, TSR_EVERSION (h->v holds what was sent), or TSR_EPROTOCOL with a
 * reason in err. */
int tsr__proto_hello(const msgpack_object *hdr, tsr__hello *h, char *err, size_t errlen);
/* Decodes and validates a submission payload into spec. 0, or TSR_EPROGRAM with err. */
int tsr__proto_submit(const void *payload, size_t len, tsr__jobspec *spec, char *err,
                      size_t errlen);

void tsr__proto_error(msgpack_sbuffer *b, const char *msg);
void tsr__proto_simple(msgpack_sbuffer *b, const char *type); /* {t:type} */
/* stream: the job's outputs are streamed (accepted's `stream: true`); cap: the job's
 * capability (32 bytes, wire/auth.h), or NULL. */
void tsr__proto_accepted(msgpack_sbuffer *b, uint32_t job, uint32_t tasks, int stream,
                         const uint8_t *cap);
/* {t:"computed", job, outputs:[[id, addr, nbytes], ...]}: tasks are streamed outputs of j, each
 * in memory on a live worker. */
void tsr__proto_computed(msgpack_sbuffer *b, const tsr__sched *s, const tsr__sjob *j,
                         const uint32_t *tasks, size_t n);
void tsr__proto_rejected(msgpack_sbuffer *b, const char *msg);
void tsr__proto_progress(msgpack_sbuffer *b, const tsr__sjob *j);
void tsr__proto_failed(msgpack_sbuffer *b, uint32_t job, uint32_t task, uint32_t array,
                       const char *msg);
void tsr__proto_workers(msgpack_sbuffer *b, uint32_t n);
/* {t:"finished", job, outputs:[[id, addr, nbytes], ...], stats:{...}}; rss_peak: the
 * scheduler's VmHWM now. */
void tsr__proto_finished(msgpack_sbuffer *b, const tsr__sched *s, const tsr__sjob *j,
                         uint64_t rss_peak);
/* {t:"compute", job, tasks:[[id, kdesc_bin, [[input, addr|nil], ...]], ...]} for worker wid. */
void tsr__proto_compute(msgpack_sbuffer *b, tsr__sched *s, uint32_t wid, uint32_t job,
                        const uint32_t *tasks, size_t n);
/* {t:"free", keys:[[job, id], ...]} */
void tsr__proto_free(msgpack_sbuffer *b, const tsr__key *keys, size_t n);
/* Recent events (worker arrivals and losses, failures) for monitors: a ring of the last few. */
#define TSR__NEVENTS 8
typedef struct tsr__events {
    double t[TSR__NEVENTS];
    char msg[TSR__NEVENTS][160];
    uint32_t n; /* total recorded; the ring holds the last TSR__NEVENTS */
} tsr__events;
void tsr__events_add(tsr__events *ev, double t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The monitor snapshot (PROTOCOL.md "Monitor"): aggregated counters only. */
void tsr__proto_info(msgpack_sbuffer *b, const tsr__sched *s, const tsr__events *ev, double uptime,
                     const char *addr);

/* ---- server.c and conn.c ---- */
typedef struct tsr__conn tsr__conn;
typedef struct tsr__server tsr__server;

/* One connection's owner object (conn.c): freed in the connection's close callback. */
typedef struct tsr__peer {
    tsr__server *srv;
    tsr__conn *conn;
    uint32_t id; /* index in srv->peers; also the id sent in welcome */
    tsr__role role;
    uint32_t wid; /* worker id in the state (workers only) */
    char name[64];
    uint32_t wait_n;         /* wait_workers target (clients), 0 = not waiting */
    int close_when_drained;  /* close once every queued write is done */
    int touched;             /* in srv->touched this turn */
    tsr__keyvec out_compute; /* this turn's batch (workers) */
    tsr__keyvec out_free;
} tsr__peer;

struct tsr__server {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_check_t check;      /* flushes the turn's batched messages */
    uv_idle_t idle;        /* keeps poll from blocking when a flush is due */
    uv_timer_t progress;   /* 100 ms progress ticks while some job changes */
    uv_timer_t stop_timer; /* bounds how long a clean stop waits for writes */
    uv_timer_t heartbeat;  /* liveness: heartbeats out, silent workers lost (server.c) */
    uint64_t heartbeat_ms, worker_timeout_ms;
    uint64_t last_beat; /* uv_now() of the last heartbeat tick */
    tsr__logger log;
    tsr__sched st;
    tsr__events events;
    double started;    /* tsr__now() at start */
    char addr[96];     /* where it listens */
    tsr__peer **peers; /* by id; NULL once closed */
    size_t npeers, peercap;
    size_t nopen;      /* peers not yet closed */
    uint32_t *touched; /* peers with batched output this turn */
    size_t ntouched, touchcap;
    const char *token; /* borrowed from the options; NULL = none required */
    /* The key of the per-job capabilities (docs/security.md): random per scheduler, given to
     * workers in their welcome; a job's owner gets HMAC(ckey, job) in accepted. */
    uint8_t ckey[32];
    int stopping;
};

/* conn.c */
void tsr__server_on_connection(uv_stream_t *listener, int status);
/* Sends a packed header (b is left empty). Failures close the connection. */
void tsr__peer_send(tsr__peer *p, msgpack_sbuffer *b);
/* Closes after the queued writes are done. */
void tsr__peer_close_soon(tsr__peer *p, const char *reason);
/* retire.c: graceful retirement (PROTOCOL.md, "Retiring a worker"). While one is under way
 * (busy), finished messages wait: they would name the retiring worker for outputs it is about to
 * hand over; they are sent when it ends (or when the worker is gone, retired or not). */
enum { TSR__RETIRING = 1, TSR__RETIRED = 2 };
void tsr__retire_begin(tsr__peer *p);
int tsr__retire_busy(const tsr__sched *s);
void tsr__retire_gone(tsr__server *srv);
/* Each flush: moves on every retirement that can (retire.c). */
void tsr__retire_pass(tsr__server *srv);
struct tsr__msg_replicated;
void tsr__retire_replicated(tsr__peer *p, const struct tsr__msg_replicated *m);
/* server.c */
void tsr__server_kick(tsr__server *srv); /* a flush is due though we are not in a poll turn */
void tsr__server_stop(tsr__server *srv, const char *why);
void tsr__server_workers_changed(tsr__server *srv);
void tsr__server_peer_closed(tsr__server *srv);

#endif
