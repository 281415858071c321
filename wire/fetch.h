/* The one chunk-fetch client, used by workers (their inputs) and clients (read and save): a pool
 * of connections to workers' peer ports, one per address, each opened with a hello (role peer),
 * at most max_inflight gets outstanding on it, replies matched to requests in order, payloads
 * received straight into the buffer the owner names. It knows nothing of tasks or arrays: what a
 * chunk is for stays with the owner, who embeds a tsr__fetch_req in its own request record.
 *
 * Gets are queued by tsr__fetch_get and written by tsr__fetch_flush, one write per connection
 * (the worker flushes once per loop turn; the client after queueing). Everything runs on the
 * pool's loop thread. */
#ifndef TSR_WIRE_FETCH_H
#define TSR_WIRE_FETCH_H

#include <stdint.h>

#include "wire/msg.h"
#include "wire/wire.h"

/* The most gets one connection may have outstanding (the ring's size). */
#define TSR__FETCH_MAX_INFLIGHT 64

typedef struct tsr__fetch_req tsr__fetch_req;
typedef struct tsr__fetch_peer tsr__fetch_peer;

/* How a request ended (on_done). */
enum { TSR__FETCH_OK = 0, TSR__FETCH_MISSING, TSR__FETCH_ERROR };

typedef struct tsr__fetch_cbs {
    /* The `chunk` header answering r arrived (job and id already match r). Check it and, for
     * plen > 0, point *dest at plen bytes that receive the payload (they stay the owner's).
     * Returns NULL, or why the reply is unacceptable: the connection then closes and every
     * request on it ends in TSR__FETCH_ERROR. */
    const char *(*on_chunk)(tsr__fetch_req *r, const tsr__msg_chunk *ck, uint64_t plen,
                            void **dest);
    /* r is over and no longer the pool's: TSR__FETCH_OK (the payload is in the buffer on_chunk
     * named), TSR__FETCH_MISSING (the peer does not hold the chunk) or TSR__FETCH_ERROR (why
     * says what happened, naming the peer). r->from is the peer's address during the call. The
     * callback may queue, cancel or free requests, this one included. */
    void (*on_done)(tsr__fetch_req *r, int status, const char *why);
    /* Packs the hello every connection starts with (role "peer"); c is the connection, for
     * the answer to its challenge (tsr__auth_sign_hello). */
    void (*pack_hello)(void *user, tsr__conn *c, msgpack_sbuffer *sb);
} tsr__fetch_cbs;

/* One request, embedded in the owner's record. The owner sets job, id and user, and the job's
 * capability (cap, has_cap) when it has one: the worker asked checks it (docs/security.md). */
struct tsr__fetch_req {
    uint32_t job, id;
    void *user;
    uint8_t cap[32];
    int has_cap;
    /* Set by the pool. */
    double sent;      /* when the get went out, by the pool's clock (0 without one) */
    const char *from; /* the peer's address (valid until on_done returns) */
    tsr__fetch_peer *peer;
    tsr__fetch_req *qnext; /* the peer's queue of gets not yet written */
    int sent_slot;         /* ring slot once sent, else -1 */
};

typedef struct tsr__fetch_pool {
    uv_loop_t *loop;
    const tsr__logger *log;
    const tsr__fetch_cbs *cbs;
    void *user;         /* for pack_hello */
    const char *secret; /* the cluster's secret (borrowed), proven to every peer; NULL = none */
    int max_inflight;
    uint32_t max_header;   /* of replies; 0 = the connection's default */
    double (*clock)(void); /* stamps r->sent, or NULL */
    int closing;           /* tsr__fetch_close_all was called: losses are not warned about */
    tsr__fetch_peer *peers;
} tsr__fetch_pool;

/* Sets up an empty pool (nothing to free until a request is made). log, cbs and user are
 * borrowed for the pool's life. max_inflight is capped at TSR__FETCH_MAX_INFLIGHT. */
void tsr__fetch_pool_init(tsr__fetch_pool *p, uv_loop_t *loop, const tsr__logger *log,
                          const tsr__fetch_cbs *cbs, void *user, int max_inflight);

/* Queues a get of (r->job, r->id) to the worker at addr ("HOST:PORT"), opening a connection
 * when there is none. Written at the next tsr__fetch_flush. A connection that cannot be made
 * ends its requests through on_done (from the loop), never here. 0 or -ENOMEM. */
int tsr__fetch_get(tsr__fetch_pool *p, tsr__fetch_req *r, const char *addr);

/* Forgets r, whose owner goes away: a queued get is never written, and the reply to one
 * already sent is received and dropped (its payload lands in a scratch buffer), never
 * delivered. on_done is not called for r. */
void tsr__fetch_cancel(tsr__fetch_req *r);

/* Writes the queued gets, as far as each connection's in-flight limit allows: one write per
 * connection. */
void tsr__fetch_flush(tsr__fetch_pool *p);

/* Liveness: closes each connection with gets outstanding or queued (the hello may still be
 * unanswered) on which nothing has arrived or been sent for more than timeout_ms, so its
 * requests end in TSR__FETCH_ERROR instead of waiting on a stopped or hung peer. stalled: the
 * caller's own loop was held up, so silence is counted from now instead (nothing was read). */
void tsr__fetch_close_silent(tsr__fetch_pool *p, uint64_t timeout_ms, int stalled);

/* Closes the connection to addr, if there is one: its requests end in TSR__FETCH_ERROR (why)
 * from the loop. For a peer known to be lost, which may be stopped and answer nothing. */
void tsr__fetch_close_addr(tsr__fetch_pool *p, const char *addr, const char *why);
/* Closes every connection; their requests end in TSR__FETCH_ERROR from the loop. */
void tsr__fetch_close_all(tsr__fetch_pool *p);

/* Frees what connections the loop never closed (after uv_run has drained the loop, none). */
void tsr__fetch_pool_free(tsr__fetch_pool *p);

/* ---- Frames gathered for one write (also the worker's peer server) ---- */

/* Frames for one connection gathered during a loop turn and written in one go: the first
 * frame's header, then everything after it, which tsr__conn_send writes as that frame's
 * "payload" (the bytes on the stream are the same as frame by frame). */
typedef struct tsr__wbatch {
    msgpack_sbuffer head;
    char *rest;
    size_t len, cap;
} tsr__wbatch;

/* Appends a frame (header hdr, left empty, and plen payload bytes, copied). 0 or -ENOMEM. */
int tsr__wbatch_add(tsr__wbatch *b, msgpack_sbuffer *hdr, const void *payload, size_t plen);
/* Writes the batch and leaves it empty. 0 or a negative code. */
int tsr__wbatch_flush(tsr__conn *c, tsr__wbatch *b);
void tsr__wbatch_free(tsr__wbatch *b);

#endif
