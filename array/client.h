/* The client struct: its offline core (errors, names, epochs: array/client.c) is what array/
 * uses; the connection state below it belongs to client/ (client/client.h), which array/ never
 * includes. */
#ifndef TSR_CLIENT_H
#define TSR_CLIENT_H

#include <errno.h>
#include <stdatomic.h>
#include <uv.h>

#include "common/common.h"

struct tsr__conn;
struct tsr__local;
typedef struct tsr__trace tsr__trace;

struct tsr_client {
    char errmsg[1024];
    uint64_t seq;   /* generated array names */
    uint64_t epoch; /* lowering epochs */
    int no_fuse;    /* tsr_client_set_fusion(c, 0): lowering leaves elementwise chains unfused */
    tsr__logger log;
    /* Jobs whose arrays were all freed, to be released on the scheduler by client/. */
    uint64_t *releases;
    size_t nreleases, releases_cap;

    /* Every array made on this client and not yet freed (array.c), so that tsr_client_free can
     * detach the ones still alive: they stay valid, inert handles (tsr_array_free only frees
     * their memory) instead of pointing at a freed client. */
    struct tsr_array *live;
    /* Open scopes (array/scope.c): the user handles made since each tsr_scope_begin, in order,
     * with NULL where one was freed or kept; marks[k] is where scope k starts. */
    struct tsr_array **scoped;
    size_t nscoped, scoped_cap;
    size_t *marks;
    size_t nmarks, marks_cap;
    /* Set by compute.c for a retry after a held chunk was lost: lowering then ignores persisted
     * chunks and lowers every array from its definition. */
    int lower_no_held;

    /* Connection state; connected == 0 for an offline client. */
    int connected;
    char address[128];
    char token[256];
    /* The capabilities of this client's jobs (accepted's cap, docs/security.md), presented
     * with every get of their chunks; dropped when the job is released. */
    struct tsr__jobcap {
        uint64_t job;
        uint8_t cap[32];
    } * caps;
    size_t ncaps, caps_cap;
    uv_loop_t loop;
    int loop_init;
    struct tsr__conn *sched;
    struct tsr__local *local; /* the embedded cluster this client started, or NULL */
    struct tsr__rt *rt;       /* client/'s private state */
    int monitor;              /* says hello as a `monitor` (tsr_client_connect_monitor) */
    int live_timeout_ms;      /* tsr_client_options.timeout_ms (0: the default) */
    tsr__trace *trace;        /* of the last computation that finished, if it was traced */

    /* The progress of the computation in flight, published for tsr_client_progress() on any
     * thread. A sequence lock with one writer, the thread inside tsr_compute(): seq is odd while
     * it writes, so a reader that saw the same even seq before and after copying the fields got
     * one consistent snapshot. Every field is atomic so that the racing copy is defined. */
    struct {
        atomic_uint seq;
        atomic_int running;
        _Atomic uint64_t done, total, erred;
        _Atomic double t0, elapsed; /* tsr__now() at submission; seconds when it ended */
    } pub;
};

int tsr__fail_thread(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records that the arrays computed in `job` are all freed, so that the client releases the job
 * on the scheduler at its next network operation or at tsr_client_free (client/). array/ only
 * records: it never runs the loop or sends a message. 0, or -ENOMEM (the job is then left to
 * the scheduler's end-of-connection cleanup). */
int tsr__client_note_release(tsr_client *c, uint64_t job);

#endif
