/* One framed connection: reading frames (length, msgpack header, payload straight into the
 * owner's buffer), writing frames without copying payloads, and closing exactly once. It knows
 * nothing of message meanings; malformed input closes this connection only. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/auth.h"
#include "wire/wire.h"

#define STAGE_CHUNK (64 * 1024)

typedef struct write_req {
    uv_write_t req;
    uint8_t len[4];
    char *hdr;
    size_t bytes;
    tsr__conn *conn;
    void (*done)(void *arg);
    void *arg;
} write_req;

typedef struct connect_req {
    uv_connect_t req;
    tsr__conn *conn;
} connect_req;

/* A host-name lookup under way for tsr__conn_connect. The connection points at it (resolving)
 * so that closing the connection first detaches it: the lookup then ends on its own and only
 * frees itself. */
typedef struct resolve_req {
    uv_getaddrinfo_t req;
    tsr__conn *conn; /* NULL once the connection closed during the lookup */
    int port;
    char host[96];
} resolve_req;

static void on_close_cb(uv_handle_t *h);
static void on_timer_closed(uv_handle_t *h);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void process_stage(tsr__conn *c);

unsigned tsr__hello_timeout_ms = 10000;

/* ---- SIGPIPE ----------------------------------------------------------------------------------
 * libuv writes sockets with write()/writev(), which cannot take MSG_NOSIGNAL: a write to a
 * connection the peer has reset raises SIGPIPE, whose default action kills the process (a peer
 * that asks for a large chunk twice and resets did exactly that to workers). The library may not
 * change the process's disposition (tessera.h), so every socket write it makes runs with SIGPIPE
 * blocked on the writing thread: inside tsr__uv_run (where libuv writes what a socket did not
 * take at once) and around uv_write (which writes at once when it can). A SIGPIPE those writes
 * raise is thread-directed, so it stays pending on this thread, and is taken with sigtimedwait
 * before the mask is restored: it is never delivered, and the write fails with EPIPE, closing
 * that connection only. A caller that blocks SIGPIPE itself is left alone. */

static _Thread_local int sigpipe_depth;

typedef struct pipe_guard {
    int active; /* this guard blocked SIGPIPE and unblocks it */
} pipe_guard;

static void guard_enter(pipe_guard *g) {
    g->active = 0;
    if (sigpipe_depth++ > 0) return; /* an outer guard on this thread holds it */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    if (pthread_sigmask(SIG_BLOCK, &block, &old) == 0 && !sigismember(&old, SIGPIPE)) g->active = 1;
}

static void guard_leave(pipe_guard *g) {
    sigpipe_depth--;
    if (!g->active) return;
    sigset_t only, pend;
    sigemptyset(&only);
    sigaddset(&only, SIGPIPE);
    if (sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE)) {
        const struct timespec zero = {0, 0};
        while (sigtimedwait(&only, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_UNBLOCK, &only, NULL);
}

int tsr__uv_run(uv_loop_t *loop, uv_run_mode mode) {
    pipe_guard g;
    guard_enter(&g);
    int rc = uv_run(loop, mode);
    guard_leave(&g);
    return rc;
}

tsr__conn *tsr__conn_new(uv_loop_t *loop, const tsr__conn_cbs *cbs, void *owner,
                         const tsr__logger *log) {
    tsr__conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (uv_tcp_init(loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_unref((uv_handle_t *)&c->timer); /* never what keeps a loop running */
    c->handles_open = 2;
    c->loop = loop;
    c->cbs = cbs;
    c->owner = owner;
    c->log = log;
    c->max_header = TSR_WIRE_MAX_HEADER;
    c->max_payload = TSR_WIRE_MAX_PAYLOAD;
    msgpack_unpacked_init(&c->hdr_unpacked);
    strcpy(c->peer, "?");
    c->last_read = c->last_send = uv_now(loop);
    return c;
}

static void set_peer_name(tsr__conn *c) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
    char host[48] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
}

static void close_with(tsr__conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void close_with(tsr__conn *c, int status, const char *fmt, ...) {
    if (c->closing) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->reason, sizeof c->reason, fmt, ap);
    va_end(ap);
    c->status = status;
    c->closing = 1;
    if (c->resolving) {
        /* The lookup cannot be stopped once running; it ends on its own and finds no conn. */
        resolve_req *rr = c->resolving;
        rr->conn = NULL;
        uv_cancel((uv_req_t *)&rr->req);
        c->resolving = NULL;
    }
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    uv_close((uv_handle_t *)&c->tcp, on_close_cb);
}

/* ---- backpressure and the greeting deadline --------------------------------------------------
 * A connection with limits (tsr__conn_limit_output) stops reading while more than out_soft bytes
 * of its output are queued: a peer that sends requests and never reads the replies (20,000 gets
 * grew a worker by 335 MB) gets no more of them answered until it reads. Frames already read
 * wait in the stage, in order. One timer per connection runs while a deadline is set or the
 * connection is paused: it closes a connection not greeted in time, and one whose paused output
 * made no progress for stall_ms (libuv's write queue did not shrink). */

/* What the queued output costs in memory: its bytes, and for each frame its write request and
 * the allocator's overhead (20-byte replies cost several times their size). */
#define FRAME_OVERHEAD 256

static size_t out_cost(const tsr__conn *c) {
    return c->queued_bytes + c->queued_frames * FRAME_OVERHEAD;
}

static int over_soft(const tsr__conn *c) {
    return c->out_soft && out_cost(c) > c->out_soft;
}

int tsr__conn_over_soft(const tsr__conn *c) {
    return over_soft(c);
}

static void timer_cb(uv_timer_t *t);

/* Starts the timer for the earliest thing due (checking a paused connection's progress at
 * least every second), or stops it. */
static void arm(tsr__conn *c) {
    if (c->closing) return;
    uint64_t now = uv_now(c->loop), due = c->deadline;
    if (c->paused && c->stall_ms) {
        uint64_t d = c->stall_since + c->stall_ms;
        if (d > now + 1000) d = now + 1000;
        if (!due || d < due) due = d;
    }
    if (!due) {
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, timer_cb, due > now ? due - now : 0, 0);
}

static void timer_cb(uv_timer_t *t) {
    tsr__conn *c = t->data;
    uint64_t now = uv_now(c->loop);
    if (c->deadline && now >= c->deadline) {
        close_with(c, UV_ETIMEDOUT, "%s", c->deadline_why);
        return;
    }
    if (c->paused && c->stall_ms) {
        size_t q = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
        if (q < c->stall_mark) {
            c->stall_mark = q;
            c->stall_since = now;
        } else if (now - c->stall_since >= c->stall_ms) {
            close_with(c, UV_ETIMEDOUT, "peer reads nothing: %zu bytes queued for it for %u ms",
                       c->queued_bytes, c->stall_ms);
            return;
        }
    }
    arm(c);
}

static void pause_reading(tsr__conn *c) {
    if (c->paused || c->closing) return;
    c->paused = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->stall_mark = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    c->stall_since = uv_now(c->loop);
    arm(c);
}

/* Reads again: first the owner's held-back work (on_drain: it was asked for before the frames
 * still in the stage), then those frames. */
static void resume_reading(tsr__conn *c) {
    if (!c->paused || c->closing || c->stopped) return;
    c->paused = 0;
    arm(c);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rc) {
        close_with(c, rc, "read error: %s", uv_strerror(rc));
        return;
    }
    if (c->cbs->on_drain) c->cbs->on_drain(c);
    if (!c->closing && !c->in_payload) process_stage(c);
}

void tsr__conn_stop_reading(tsr__conn *c) {
    c->stopped = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

void tsr__conn_limit_output(tsr__conn *c) {
    c->out_soft = TSR_WIRE_OUT_SOFT;
    c->out_hard = TSR_WIRE_OUT_HARD;
    c->stall_ms = TSR_WIRE_OUT_STALL_MS;
}

void tsr__conn_unlimit_output(tsr__conn *c) {
    c->out_soft = c->out_hard = 0;
    c->stall_ms = 0;
    resume_reading(c);
}

void tsr__conn_set_deadline(tsr__conn *c, unsigned ms, const char *why) {
    c->deadline = uv_now(c->loop) + (ms ? ms : 1);
    snprintf(c->deadline_why, sizeof c->deadline_why, "%s", why);
    arm(c);
}

void tsr__conn_clear_deadline(tsr__conn *c) {
    c->deadline = 0;
    arm(c);
}

uint64_t tsr__conn_silent_ms(const tsr__conn *c, int since_send) {
    uint64_t now = uv_now(c->loop), last = c->last_read;
    if (since_send && c->last_send > last) last = c->last_send;
    return now > last ? now - last : 0;
}

void tsr__conn_close(tsr__conn *c, const char *reason) {
    if (!c || c->closing) return;
    close_with(c, 0, "%s", reason ? reason : "closed");
}

void tsr__conn_drop_payload(tsr__conn *c) {
    if (!c->in_payload || c->pdest_owned || c->closing) return;
    /* The rest lands where the bytes so far went in a buffer of our own (rare: a cancelled
     * fetch), so the offsets alloc_cb computes stay valid. */
    uint8_t *scratch = malloc(c->plen ? c->plen : 1);
    if (!scratch) {
        c->pdest = NULL;
        close_with(c, -ENOMEM, "no memory to drop a payload of %llu bytes",
                   (unsigned long long)c->plen);
        return;
    }
    c->pdest = scratch;
    c->pdest_owned = 1;
}

static void on_close_cb(uv_handle_t *h) {
    tsr__conn *c = h->data;
    if (c->cbs && c->cbs->on_close) c->cbs->on_close(c, c->status, c->reason);
    if (c->pdest_owned) free(c->pdest);
    msgpack_unpacked_destroy(&c->hdr_unpacked);
    free(c->stage);
    c->stage = NULL;
    if (--c->handles_open == 0) free(c);
}

static void on_timer_closed(uv_handle_t *h) {
    tsr__conn *c = h->data;
    if (--c->handles_open == 0) free(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    tsr__conn *c = h->data;
    (void)suggested;
    if (c->in_payload) {
        uint64_t left = c->plen - c->pgot;
        size_t n = left > ((size_t)1 << 30) ? ((size_t)1 << 30) : (size_t)left;
        *buf = uv_buf_init((char *)c->pdest + c->pgot, (unsigned)n);
        return;
    }
    if (c->stage_cap - c->stage_len < STAGE_CHUNK) {
        size_t ncap = c->stage_cap ? c->stage_cap : STAGE_CHUNK;
        while (ncap - c->stage_len < STAGE_CHUNK) ncap *= 2;
        uint8_t *p = realloc(c->stage, ncap);
        if (!p) {
            *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS to read_cb */
            return;
        }
        c->stage = p;
        c->stage_cap = ncap;
    }
    *buf = uv_buf_init((char *)c->stage + c->stage_len, (unsigned)(c->stage_cap - c->stage_len));
}

/* Delivers the pending frame whose header sits at the start of the stage. */
static void deliver(tsr__conn *c, void *payload, uint64_t plen) {
    c->cbs->on_frame(c, &c->hdr_unpacked.data, payload, plen);
    c->have_hdr = 0;
}

/* Parses complete frames from the stage. Returns when it needs more bytes, enters a payload
 * read, or the connection closes. */
static void process_stage(tsr__conn *c) {
    size_t pos = 0;
    while (!c->closing && !c->in_payload) {
        if (over_soft(c)) { /* backpressure: the rest waits in the stage */
            pause_reading(c);
            break;
        }
        size_t avail = c->stage_len - pos;
        if (avail < 4) break;
        const uint8_t *p = c->stage + pos;
        uint32_t hlen = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (hlen == 0 || hlen > c->max_header) {
            close_with(c, TSR_ETOOLARGE, "frame header of %u bytes (limit %u)", hlen,
                       c->max_header);
            return;
        }
        if (avail < 4 + (size_t)hlen) break;
        size_t off = 0;
        /* msgpack-c sizes a container by its declared count: a few bytes claiming four
         * billion elements would make it ask for tens of GiB. Counts the bytes cannot back
         * are refused first. */
        if (tsr__mpr_check(p + 4, hlen) != 0) {
            close_with(c, TSR_EPROTOCOL, "malformed frame header");
            return;
        }
        msgpack_unpack_return r =
            msgpack_unpack_next(&c->hdr_unpacked, (const char *)p + 4, hlen, &off);
        if (r != MSGPACK_UNPACK_SUCCESS || off != hlen ||
            c->hdr_unpacked.data.type != MSGPACK_OBJECT_MAP) {
            close_with(c, TSR_EPROTOCOL, "malformed frame header");
            return;
        }
        const msgpack_object *hdr = &c->hdr_unpacked.data;
        uint64_t plen = 0;
        const msgpack_object *n = tsr__mp_get(hdr, "n");
        if (n && n->type == MSGPACK_OBJECT_POSITIVE_INTEGER) plen = n->via.u64;
        if (n && n->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            close_with(c, TSR_EPROTOCOL, "malformed payload length");
            return;
        }
        if (plen > c->max_payload) {
            close_with(c, TSR_ETOOLARGE, "payload of %llu bytes (limit %llu)",
                       (unsigned long long)plen, (unsigned long long)c->max_payload);
            return;
        }
        if (c->auth.first) {
            /* The server's challenge opens the connection (wire/auth.c): a side with a secret
             * waited for it and says hello now; one without ignores it. */
            c->auth.first = 0;
            if (c->auth.await || tsr__msg_peek_type(hdr) == TSR__MSG_challenge) {
                char why[200];
                int rc = tsr__auth_take_challenge(c, hdr, why, sizeof why);
                if (rc && c->auth.await) {
                    close_with(c, rc, "%s", why);
                    return;
                }
                if (plen > 0) {
                    close_with(c, TSR_EPROTOCOL, "challenge with a payload");
                    return;
                }
                pos += 4 + (size_t)hlen;
                if (c->auth.await) {
                    c->auth.await = 0;
                    if (c->cbs->on_connect) c->cbs->on_connect(c, 0);
                }
                continue;
            }
        }
        void *dest = NULL;
        c->have_hdr = 1;
        if (c->cbs->on_header) {
            int rc = c->cbs->on_header(c, hdr, plen, &dest);
            if (rc < 0) {
                close_with(c, rc, "rejected frame: %s", tsr_strerror(rc));
                return;
            }
            if (c->closing) return;
        }
        size_t body = 4 + (size_t)hlen;
        if (plen == 0) {
            deliver(c, NULL, 0);
            pos += body;
            continue;
        }
        int owned = 0;
        if (!dest) {
            dest = malloc(plen);
            if (!dest) {
                close_with(c, -ENOMEM, "no memory for a payload of %llu bytes",
                           (unsigned long long)plen);
                return;
            }
            owned = 1;
        }
        size_t have = avail - body;
        size_t take = have < plen ? have : (size_t)plen;
        memcpy(dest, p + body, take);
        if (take == plen) {
            deliver(c, dest, plen);
            if (owned) free(dest);
            pos += body + take;
            continue;
        }
        /* The rest of the payload is read straight into dest. The header stays at the start
         * of the stage (hdr points into it) until the frame is delivered. */
        if (p != c->stage) {
            /* hdr points into the bytes being moved: decode it again at its new place. */
            memmove(c->stage, p, body);
            off = 0;
            msgpack_unpack_next(&c->hdr_unpacked, (const char *)c->stage + 4, hlen, &off);
        }
        c->stage_len = body;
        pos = 0;
        c->in_payload = 1;
        c->plen = plen;
        c->pgot = take;
        c->pdest = dest;
        c->pdest_owned = owned;
        return;
    }
    if (c->closing) return;
    if (pos > 0) {
        memmove(c->stage, c->stage + pos, c->stage_len - pos);
        c->stage_len -= pos;
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    tsr__conn *c = s->data;
    (void)buf;
    if (nread == 0) return;
    if (nread > 0) c->last_read = uv_now(c->loop);
    if (nread < 0) {
        if (nread == UV_EOF) {
            if (c->in_payload || c->stage_len > 0)
                close_with(c, TSR_EPROTOCOL, "truncated frame (connection closed mid-frame)");
            else
                close_with(c, TSR_ECLOSED, "closed by peer");
        } else {
            close_with(c, (int)nread, "read error: %s", uv_strerror((int)nread));
        }
        return;
    }
    if (c->in_payload) {
        c->pgot += (uint64_t)nread;
        if (c->pgot < c->plen) {
            if (over_soft(c)) pause_reading(c);
            return;
        }
        uint8_t *dest = c->pdest;
        int owned = c->pdest_owned;
        c->in_payload = 0;
        c->pdest = NULL;
        c->pdest_owned = 0;
        deliver(c, dest, c->plen);
        if (owned) free(dest);
        c->stage_len = 0;
        if (!c->closing && over_soft(c)) pause_reading(c);
        return;
    }
    c->stage_len += (size_t)nread;
    process_stage(c);
}

static int start_reading(tsr__conn *c) {
    uv_tcp_nodelay(&c->tcp, 1);
    set_peer_name(c);
    return uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

int tsr__conn_accept(tsr__conn *c, uv_stream_t *server) {
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc == 0) rc = start_reading(c);
    if (rc == 0) rc = tsr__auth_send_challenge(c);
    return rc;
}

int tsr__conn_open(tsr__conn *c, int fd) {
    int rc = uv_tcp_open(&c->tcp, fd);
    if (rc == 0) rc = start_reading(c);
    return rc;
}

static void connect_cb(uv_connect_t *req, int status) {
    connect_req *cr = (connect_req *)req;
    tsr__conn *c = cr->conn;
    free(cr);
    if (status == 0 && !c->closing) status = start_reading(c);
    if (status == 0 && !c->closing) {
        /* on_connect (which says hello) waits for the challenge when there is a secret to
         * prove; without one it is now, and the challenge is dropped when it comes. */
        c->auth.first = 1;
        c->auth.await = c->auth.secret && c->auth.secret[0];
        if (c->auth.await) return;
    }
    if (c->cbs->on_connect) c->cbs->on_connect(c, status);
    if (status < 0) close_with(c, status, "connect failed: %s", uv_strerror(status));
}

/* A numeric "HOST:PORT" into ss: 0, 1 when HOST is a name to look up (host and port are
 * filled), or TSR_EINVALID when the address is malformed. */
static int parse_numeric(const char *address, struct sockaddr_storage *ss, char *host,
                         size_t hostsize, int *port) {
    int rc = tsr__parse_address(address, host, hostsize, port);
    if (rc) return rc;
    if (uv_ip4_addr(host, *port, (struct sockaddr_in *)ss) == 0) return 0;
    if (uv_ip6_addr(host, *port, (struct sockaddr_in6 *)ss) == 0) return 0;
    return 1;
}

/* The address to use among a lookup's results, with port set: the first IPv4 one, else the
 * first IPv6 one. IPv4 first because "localhost" was 127.0.0.1 before names were looked up,
 * and a server listening there refuses ::1. UV_EAI_NODATA when there is neither. */
static int pick_address(const struct addrinfo *res, int port, struct sockaddr_storage *ss) {
    const struct addrinfo *v6 = NULL;
    for (const struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET && a->ai_addrlen <= sizeof *ss) {
            memcpy(ss, a->ai_addr, a->ai_addrlen);
            ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
            return 0;
        }
        if (a->ai_family == AF_INET6 && a->ai_addrlen <= sizeof *ss && !v6) v6 = a;
    }
    if (!v6) return UV_EAI_NODATA;
    memcpy(ss, v6->ai_addr, v6->ai_addrlen);
    ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    return 0;
}

static const struct addrinfo lookup_hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};

static int start_connect(tsr__conn *c, const struct sockaddr_storage *ss) {
    connect_req *cr = malloc(sizeof *cr);
    if (!cr) return -ENOMEM;
    cr->conn = c;
    int rc = uv_tcp_connect(&cr->req, &c->tcp, (const struct sockaddr *)ss, connect_cb);
    if (rc) free(cr);
    return rc;
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    resolve_req *rr = (resolve_req *)req;
    tsr__conn *c = rr->conn;
    if (c) {
        c->resolving = NULL;
        struct sockaddr_storage ss;
        if (status == 0) status = pick_address(res, rr->port, &ss);
        if (status < 0) {
            if (c->cbs->on_connect) c->cbs->on_connect(c, status);
            close_with(c, status, "cannot resolve host \"%s\": %s", rr->host, tsr_strerror(status));
        } else if ((status = start_connect(c, &ss)) < 0) {
            if (c->cbs->on_connect) c->cbs->on_connect(c, status);
            close_with(c, status, "connect failed: %s", tsr_strerror(status));
        }
    }
    uv_freeaddrinfo(res);
    free(rr);
}

int tsr__conn_connect(tsr__conn *c, const char *address) {
    struct sockaddr_storage ss;
    char host[96];
    int port;
    int rc = parse_numeric(address, &ss, host, sizeof host, &port);
    if (rc < 0) return rc;
    snprintf(c->peer, sizeof c->peer, "%s", address);
    if (rc == 0) return start_connect(c, &ss);
    /* A name: looked up on libuv's thread pool, so the loop never blocks on DNS. */
    resolve_req *rr = malloc(sizeof *rr);
    if (!rr) return -ENOMEM;
    rr->conn = c;
    rr->port = port;
    snprintf(rr->host, sizeof rr->host, "%s", host);
    rc = uv_getaddrinfo(c->loop, &rr->req, resolved_cb, rr->host, NULL, &lookup_hints);
    if (rc) {
        free(rr);
        return rc;
    }
    c->resolving = rr;
    return 0;
}

static void write_cb(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    tsr__conn *c = w->conn;
    c->queued_bytes -= w->bytes;
    c->queued_frames--;
    if (status < 0 && status != UV_ECANCELED)
        close_with(c, status, "write error: %s", uv_strerror(status));
    if (w->done) w->done(w->arg);
    free(w->hdr);
    free(w);
    if (c->paused && !c->closing) {
        c->stall_since = uv_now(c->loop); /* progress */
        if (!over_soft(c)) resume_reading(c);
    }
}

int tsr__conn_send(tsr__conn *c, msgpack_sbuffer *hdr, const void *payload, uint64_t plen,
                   void (*done)(void *arg), void *arg) {
    int rc = 0;
    write_req *w = NULL;
    if (c->closing) {
        rc = TSR_ECLOSED;
        goto fail;
    }
    if (hdr->size == 0 || hdr->size > TSR_WIRE_MAX_HEADER) {
        rc = TSR_ETOOLARGE;
        goto fail;
    }
    if (c->out_hard && over_soft(c) && out_cost(c) + 4 + hdr->size + plen > c->out_hard) {
        close_with(c, TSR_ETOOLARGE, "peer reads too slowly: %zu bytes queued for it (limit %zu)",
                   out_cost(c), c->out_hard);
        rc = TSR_ECLOSED;
        goto fail;
    }
    w = malloc(sizeof *w);
    if (!w) {
        rc = -ENOMEM;
        goto fail;
    }
    uint32_t n = (uint32_t)hdr->size;
    w->len[0] = (uint8_t)(n >> 24);
    w->len[1] = (uint8_t)(n >> 16);
    w->len[2] = (uint8_t)(n >> 8);
    w->len[3] = (uint8_t)n;
    /* msgpack's sbuffer starts at 8 KiB: a queued 50-byte reply would hold all of it. */
    if (hdr->alloc - hdr->size > 4096) {
        char *shrunk = realloc(hdr->data, hdr->size);
        if (shrunk) hdr->data = shrunk;
    }
    w->hdr = hdr->data;
    hdr->data = NULL;
    hdr->size = 0;
    hdr->alloc = 0;
    w->conn = c;
    w->done = done;
    w->arg = arg;
    uv_buf_t bufs[2 + 16];
    int nb = 0;
    bufs[nb++] = uv_buf_init((char *)w->len, 4);
    bufs[nb++] = uv_buf_init(w->hdr, n);
    uint64_t left = plen;
    const char *pp = payload;
    /* uv_buf_t.len is size_t on Unix, but stay within 1 GiB pieces for portability. */
    while (left > 0 && nb < (int)TSR__ARRAY_LEN(bufs)) {
        size_t piece = left > ((uint64_t)1 << 30) ? ((size_t)1 << 30) : (size_t)left;
        bufs[nb++] = uv_buf_init((char *)pp, (unsigned)piece);
        pp += piece;
        left -= piece;
    }
    if (left > 0) {
        free(w->hdr);
        free(w);
        w = NULL;
        rc = TSR_ETOOLARGE;
        goto fail;
    }
    w->bytes = 4 + n + plen;
    c->queued_bytes += w->bytes;
    c->queued_frames++;
    pipe_guard g;
    guard_enter(&g);
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, (unsigned)nb, write_cb);
    guard_leave(&g);
    if (rc) {
        c->queued_bytes -= w->bytes;
        c->queued_frames--;
        free(w->hdr);
        free(w);
        w = NULL;
        goto fail;
    }
    c->last_send = uv_now(c->loop);
    if (over_soft(c)) pause_reading(c);
    return 0;
fail:
    msgpack_sbuffer_clear(hdr);
    if (done) done(arg);
    return rc;
}

int tsr__listen(uv_tcp_t *server, const char *address, uv_connection_cb cb, char *bound,
                size_t boundsize) {
    struct sockaddr_storage ss;
    char name[96];
    int port;
    int rc = parse_numeric(address, &ss, name, sizeof name, &port);
    if (rc < 0) return rc;
    if (rc == 1) {
        /* A name, looked up synchronously (no callback): this runs once, before the server
         * serves anything. */
        uv_getaddrinfo_t req;
        rc = uv_getaddrinfo(server->loop, &req, NULL, name, NULL, &lookup_hints);
        if (rc) return rc;
        rc = pick_address(req.addrinfo, port, &ss);
        uv_freeaddrinfo(req.addrinfo);
        if (rc) return rc;
    }
    rc = uv_tcp_bind(server, (struct sockaddr *)&ss, 0);
    if (rc) return rc;
    rc = uv_listen((uv_stream_t *)server, 511, cb);
    if (rc) return rc;
    struct sockaddr_storage got;
    int len = sizeof got;
    rc = uv_tcp_getsockname(server, (struct sockaddr *)&got, &len);
    if (rc) return rc;
    char host[48];
    if (got.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&got, host, sizeof host);
        snprintf(bound, boundsize, "%s:%d", host, ntohs(((struct sockaddr_in *)&got)->sin_port));
    } else {
        uv_ip6_name((struct sockaddr_in6 *)&got, host, sizeof host);
        snprintf(bound, boundsize, "[%s]:%d", host,
                 ntohs(((struct sockaddr_in6 *)&got)->sin6_port));
    }
    return 0;
}
