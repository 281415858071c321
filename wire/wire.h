/* The wire, shared by client, scheduler and worker: frames, connections, msgpack helpers and
 * limits. docs/PROTOCOL.md is the message catalogue. Nothing here knows about tasks or chunks
 * beyond "a header and an optional payload".
 *
 * A frame is: a 4-byte big-endian header length H, H bytes of msgpack (a map, the header), then
 * the payload, whose length is the header's "n" key (absent = 0). Payload bytes are never
 * re-encoded: senders hand the chunk buffer to uv_write as its own uv_buf_t, and receivers may
 * direct the payload straight into its final buffer (on_header's *dest). */
#ifndef TSR_WIRE_H
#define TSR_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <uv.h>

#include "common/common.h"

/* Bumped with every incompatible message change (2: heartbeat, which a version 1 peer would
 * close the connection on; 3: the challenge that opens every connection, and no token in the
 * hello). */
#define TSR_PROTOCOL_VERSION 3
#define TSR_WIRE_MAX_HEADER ((uint32_t)64 << 20) /* 64 MiB */
#define TSR_WIRE_MAX_PAYLOAD ((uint64_t)1 << 40) /* 1 TiB */
/* Backpressure on a connection that serves requests (tsr__conn_limit_output; docs/PROTOCOL.md
 * "Backpressure"): over the soft cap of queued output it reads no more requests; a frame queued
 * while over the soft cap that would pass the hard cap closes it, and so does a paused connection
 * whose output makes no progress for the stall time. One frame alone may exceed both caps (a
 * large chunk): the hard cap applies to what is queued behind it. */
#define TSR_WIRE_OUT_SOFT ((size_t)4 << 20)  /* 4 MiB */
#define TSR_WIRE_OUT_HARD ((size_t)64 << 20) /* 64 MiB */
#define TSR_WIRE_OUT_STALL_MS 60000
/* How long an accepted connection may take to be greeted (tsr__conn_set_deadline): a peer that
 * connects and never completes its hello is dropped then. A variable only so that tests can
 * shorten it; nothing else writes it. */
extern unsigned tsr__hello_timeout_ms; /* default 10000 */

typedef struct tsr__conn tsr__conn;

/* The handshake's state on one connection (wire/auth.c). Every accepted connection first sends
 * a challenge; a connecting side with a secret waits for it before on_connect, one without
 * drops it when it comes. */
typedef struct tsr__conn_auth {
    const char *secret; /* client side: set by the owner before connecting; NULL/"" = none */
    uint8_t snonce[32]; /* the server's nonce (sent, or received in the challenge) */
    uint8_t cnonce[32]; /* the client's nonce (made, or received in the hello) */
    uint8_t mac[32];    /* the proof this side sent, which the message borrows */
    uint8_t ckey[32];   /* the masked capability key a welcome borrows */
    int await;          /* client side: the first frame must be the challenge */
    int first;          /* client side: no frame has arrived yet */
    int have_snonce, have_cnonce;
} tsr__conn_auth;

typedef struct tsr__conn_cbs {
    /* A header arrived (hdr is a msgpack map, valid until on_frame returns). For plen > 0 the
     * owner may point *dest at a buffer of plen bytes that receives the payload directly (and
     * stays owned by the owner); leaving it NULL makes the connection malloc one, handed to
     * on_frame and freed after it returns. Returning a negative code closes the connection. */
    int (*on_header)(tsr__conn *c, const msgpack_object *hdr, uint64_t plen, void **dest);
    /* A complete frame. payload is NULL when plen == 0. */
    void (*on_frame)(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen);
    /* The connection is closed (status 0 for a local close, else the error) and about to be
     * freed: the owner drops its pointer. Called exactly once, from the loop. */
    void (*on_close)(tsr__conn *c, int status, const char *reason);
    /* tsr__conn_connect finished (status 0 or an error; on error on_close follows). */
    void (*on_connect)(tsr__conn *c, int status);
    /* Optional: a connection paused by backpressure drained below its soft cap and reads
     * again (work the owner held back for it, such as parked replies, may go now). */
    void (*on_drain)(tsr__conn *c);
} tsr__conn_cbs;

struct tsr__conn {
    uv_tcp_t tcp; /* first: the handle's data points back at the conn */
    uv_loop_t *loop;
    const tsr__conn_cbs *cbs;
    void *owner; /* the owner's per-connection object */
    const tsr__logger *log;
    char peer[64]; /* "HOST:PORT" of the other end, for messages */
    uint32_t max_header;
    uint64_t max_payload;
    int closing;
    void *resolving; /* the host-name lookup of tsr__conn_connect under way, or NULL (conn.c) */
    /* Reader state (private to conn.c). */
    uint8_t *stage; /* staging buffer for length prefixes and headers */
    size_t stage_len, stage_cap;
    int in_payload;
    uint64_t plen, pgot;
    uint8_t *pdest;
    int pdest_owned;
    msgpack_unpacked hdr_unpacked;
    int have_hdr;
    size_t queued_bytes;  /* bytes handed to uv_write and not yet written */
    size_t queued_frames; /* their frames */
    int status;           /* why it closed (0 = local close) */
    char reason[160];
    /* Liveness (heartbeats): uv_now() when bytes last arrived, and when a frame was last
     * queued; both start at creation. Any bytes count as a sign of life, not only whole frames,
     * so a long payload does not look like silence. */
    uint64_t last_read, last_send;
    tsr__conn_auth auth;
    /* Backpressure (tsr__conn_limit_output; 0 = no limit) and the greeting deadline, private
     * to conn.c: a timer runs while either is pending. */
    size_t out_soft, out_hard;
    uint32_t stall_ms;
    int paused;        /* reading stopped: queued output over out_soft */
    int stopped;       /* tsr__conn_stop_reading: never reads again */
    size_t stall_mark; /* libuv's write queue size when progress was last seen */
    uint64_t stall_since, deadline;
    char deadline_why[64];
    uv_timer_t timer;
    int handles_open; /* 2 while the TCP handle and the timer are open */
};

/* Creates a connection object on loop (not yet connected). log is borrowed. */
tsr__conn *tsr__conn_new(uv_loop_t *loop, const tsr__conn_cbs *cbs, void *owner,
                         const tsr__logger *log);
/* Accepts a pending connection from server into c and starts reading. */
int tsr__conn_accept(tsr__conn *c, uv_stream_t *server);
/* Adopts a connected stream socket fd (the connection owns it from now on) and starts reading:
 * for tests and the frame fuzzer (tests/fuzz), which feed bytes through a socketpair. */
int tsr__conn_open(tsr__conn *c, int fd);
/* Connects to "HOST:PORT"; reading starts when connected. A numeric HOST is connected to at
 * once; a name is looked up first with uv_getaddrinfo (on libuv's thread pool), and a failed
 * lookup ends like a failed connect: on_connect with the UV_EAI_* code, then on_close with
 * the reason 'cannot resolve host "HOST": ...'. Returns 0, TSR_EINVALID for an address that
 * is not HOST:PORT, or a libuv code. */
int tsr__conn_connect(tsr__conn *c, const char *address);

/* Sends a frame: the packed header in hdr (the function takes hdr->data; the sbuffer is left
 * empty and reusable) and an optional payload. The payload is borrowed until done(arg) is
 * called (after the write completes or fails); done may be NULL. Returns 0 or a negative code
 * (in which case done has already been called). */
int tsr__conn_send(tsr__conn *c, msgpack_sbuffer *hdr, const void *payload, uint64_t plen,
                   void (*done)(void *arg), void *arg);

/* uv_run with SIGPIPE blocked on the calling thread, and a SIGPIPE that the loop's socket writes
 * raised taken before it is unblocked (conn.c, "SIGPIPE"): every loop of the library runs through
 * this, so no process embedding it dies of a peer that went away. tsr__conn_send does the same
 * around its write. */
int tsr__uv_run(uv_loop_t *loop, uv_run_mode mode);

/* Backpressure with the default caps (TSR_WIRE_OUT_*): for connections that answer requests
 * (a worker's peer port, the scheduler's clients and monitors). Off by default, and off again
 * with tsr__conn_unlimit_output (the scheduler's workers: both ends of that link must keep
 * reading, or two full queues would wait on each other). */
void tsr__conn_limit_output(tsr__conn *c);
void tsr__conn_unlimit_output(tsr__conn *c);
/* Over the soft cap: the owner should hold back work it would queue on its own (replies it
 * parked), and resume it from on_drain. */
int tsr__conn_over_soft(const tsr__conn *c);
/* Closes the connection with reason `why` unless tsr__conn_clear_deadline is called within ms
 * milliseconds (the greeting: tsr__hello_timeout_ms). */
void tsr__conn_set_deadline(tsr__conn *c, unsigned ms, const char *why);
void tsr__conn_clear_deadline(tsr__conn *c);

/* Milliseconds since anything arrived on c (with since_send: since anything arrived or was
 * queued, for a requester that only expects replies to what it sent). */
uint64_t tsr__conn_silent_ms(const tsr__conn *c, int since_send);

/* The payload being received into the owner's buffer (on_header's *dest) must no longer touch
 * it: the rest goes to a buffer of the connection's own, handed to on_frame and freed. */
void tsr__conn_drop_payload(tsr__conn *c);

/* Reads nothing more, for good (a connection that closes once its output drains). */
void tsr__conn_stop_reading(tsr__conn *c);

/* Closes the connection (idempotent); on_close follows from the loop. reason may be NULL. */
void tsr__conn_close(tsr__conn *c, const char *reason);

/* Listens on "HOST:PORT" with a uv_tcp_t owned by the caller (already uv_tcp_init'ed);
 * writes the bound address ("127.0.0.1:40123") into bound. A HOST name is looked up
 * synchronously (its first IPv4 address, else its first IPv6 one). */
int tsr__listen(uv_tcp_t *server, const char *address, uv_connection_cb cb, char *bound,
                size_t boundsize);

/* ---- msgpack: the one lookup by key, for the frame layer and the codec (mp.c) ---- */

/* The value under string key `key` in map obj, or NULL (also when obj is not a map). */
const msgpack_object *tsr__mp_get(const msgpack_object *obj, const char *key);

/* ---- mpread.c: a bounds-checked cursor decoding msgpack in place (no object tree) ---- */

typedef struct tsr__mpr {
    const uint8_t *p, *end;
    int err; /* sticky: set by the first failed read */
} tsr__mpr;

void tsr__mpr_init(tsr__mpr *r, const void *data, size_t len);
/* Each returns 0, or -1 (and sets r->err) on a type mismatch or truncation. */
int tsr__mpr_array(tsr__mpr *r, uint32_t *n);
int tsr__mpr_map(tsr__mpr *r, uint32_t *n);
int tsr__mpr_uint(tsr__mpr *r, uint64_t *v);
int tsr__mpr_double(tsr__mpr *r, double *v); /* float32/64 or any int */
int tsr__mpr_bin(tsr__mpr *r, const uint8_t **p, uint32_t *n);
int tsr__mpr_str(tsr__mpr *r, const char **s, uint32_t *n);
/* Skips one value of any type (iteratively). */
int tsr__mpr_skip(tsr__mpr *r);
/* 0 when data is exactly one msgpack value whose containers' counts fit in its bytes (so
 * msgpack-c's unpacker never sizes an allocation by a count the input cannot back), else -1. */
int tsr__mpr_check(const void *data, size_t len);

#endif
