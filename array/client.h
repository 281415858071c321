/* The client struct, shared by client.c (errors, names), client_run.c (connection, submit,
 * fetch) and local.c (the embedded local cluster). */
#ifndef TSR_CLIENT_H
#define TSR_CLIENT_H

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <uv.h>

#include "common/common.h"

struct tsr__conn;
struct tsr__local;
typedef struct tsr__trace tsr__trace;
struct json_t;
struct msgpack_object;

struct tsr_client {
    char errmsg[1024];
    uint64_t seq;   /* generated array names */
    uint64_t epoch; /* lowering epochs */
    tsr__logger log;

    /* Connection state; connected == 0 for an offline client. */
    int connected;
    char address[128];
    char token[256];
    uv_loop_t loop;
    int loop_init;
    struct tsr__conn *sched;
    struct tsr__local *local; /* the embedded cluster this client started, or NULL */
    struct tsr__rt *rt;       /* client_run.c's private state */
    int monitor;              /* says hello as a `monitor` (tsr_client_connect_monitor) */
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

/* The JSON object tsr_client_stats_json() describes, built from the `stats` map of a `finished`
 * message (PROTOCOL.md; NULL or not a map when the scheduler sent none) and what the client
 * measured itself: `seconds` from submit to finished and `tasks` it submitted (the scheduler's
 * count replaces it where it sent one). Fields missing or of the wrong type in the map are left
 * out, never guessed. Caller owns the reference (json_decref); NULL only when out of memory. */
struct json_t *tsr__stats_json(const struct msgpack_object *stats, double seconds, uint64_t tasks);

/* A msgpack value from the network as JSON: maps with string keys become objects, arrays
 * arrays, integers integers, finite floats reals, valid UTF-8 strings strings, nil null and
 * booleans booleans. Anything else (binary data, non-string keys, NaN, nesting deeper than 16)
 * is left out. `skip` names one top-level key to leave out (the message type "t"), or NULL.
 * Caller owns the reference; NULL when out of memory or when obj itself cannot be converted. */
struct json_t *tsr__mp_to_json(const struct msgpack_object *obj, const char *skip);

/* trace.c: the `trace` map of a traced job's `finished` (PROTOCOL.md "Tracing"), kept compactly.
 * *out is NULL when map is NULL or not a map (the scheduler sent no trace); malformed entries are
 * skipped. 0, or -ENOMEM. Free with tsr__trace_free (NULL is a no-op). */
int tsr__trace_parse(const struct msgpack_object *map, uint64_t job, tsr__trace **out);
void tsr__trace_free(tsr__trace *t);
/* Writes the trace as Chrome trace-event JSON (tsr_client_trace_json describes it); sorts the
 * events in place. 0, or a negative errno when writing to f failed. */
int tsr__trace_write(tsr__trace *t, FILE *f);

#endif
