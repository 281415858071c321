/* What the worker's socket tests share: a real worker in a thread, driven by a blocking fake
 * scheduler on a plain socket, and peer connections to its chunk port. Every read has a timeout,
 * so a worker that never answers fails the test instead of hanging it. */
#ifndef TSR_TEST_WORKER_FIXTURE_H
#define TSR_TEST_WORKER_FIXTURE_H

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_ref.h"
#include "worker/worker.h"

/* ---- A worker in a thread ------------------------------------------------------------------ */

typedef struct wthread {
    tsr_worker_options o;
    pthread_t th;
    int rc;
    pthread_mutex_t mu;
    char ready_addr[96];
} wthread;

static inline void on_ready(const char *addr, void *user) {
    wthread *t = user;
    pthread_mutex_lock(&t->mu);
    snprintf(t->ready_addr, sizeof t->ready_addr, "%s", addr);
    pthread_mutex_unlock(&t->mu);
}

/* A worker's whole life on the calling thread: new, run, free. What new or run returned. */
static inline int worker_life(const tsr_worker_options *o) {
    tsr_worker *w;
    int rc = tsr_worker_new(o, &w);
    if (rc == 0) {
        rc = tsr_worker_run(w);
        tsr_worker_free(w);
    }
    return rc;
}

static inline void *worker_main(void *arg) {
    wthread *t = arg;
    t->rc = worker_life(&t->o);
    return NULL;
}

/* ---- Blocking frames ------------------------------------------------------------------------ */

static inline void write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        cr_assert(k > 0, "write: %s", strerror(errno));
        c += k;
        n -= (size_t)k;
    }
}

static inline int read_all(int fd, void *p, size_t n) {
    char *c = p;
    while (n > 0) {
        ssize_t k = read(fd, c, n);
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Sends a frame with an optional payload in one write: split writes meet Nagle and delayed
 * ACKs, and a frame sent later on another connection could overtake this one. */
static inline void put_frame_payload(int fd, msgpack_sbuffer *sb, const void *payload,
                                     size_t plen) {
    uint8_t *f = malloc(4 + sb->size + plen);
    f[0] = (uint8_t)(sb->size >> 24);
    f[1] = (uint8_t)(sb->size >> 16);
    f[2] = (uint8_t)(sb->size >> 8);
    f[3] = (uint8_t)sb->size;
    memcpy(f + 4, sb->data, sb->size);
    if (plen) memcpy(f + 4 + sb->size, payload, plen);
    write_all(fd, f, 4 + sb->size + plen);
    free(f);
    msgpack_sbuffer_destroy(sb);
}

static inline void put_frame(int fd, msgpack_sbuffer *sb) {
    put_frame_payload(fd, sb, NULL, 0);
}

/* Reads one frame: 0, or -1 at end of stream. The payload (if any) goes to *payload (caller
 * frees). Heartbeats (a worker sends one every second) are skipped: no test here is about them. */
static inline int get_frame(int fd, msgpack_unpacked *up, void **payload, uint64_t *plen) {
again:;
    uint8_t len[4];
    if (read_all(fd, len, 4)) return -1;
    uint32_t h = (uint32_t)len[0] << 24 | (uint32_t)len[1] << 16 | (uint32_t)len[2] << 8 | len[3];
    /* The unpacked object points into the bytes: keep them until the next frame. */
    static char *buf;
    free(buf);
    buf = malloc(h);
    cr_assert_eq(read_all(fd, buf, h), 0);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(up, buf, h, &off), MSGPACK_UNPACK_SUCCESS);
    /* Heartbeats, and the challenge a worker's peer port opens with (a hello without a token
     * needs no answer to it), are not what the tests here look at. */
    if (tsr__msg_peek_type(&up->data) == TSR__MSG_heartbeat ||
        tsr__msg_peek_type(&up->data) == TSR__MSG_challenge)
        goto again;
    uint64_t n = 0;
    if (tsr__mp_get(&up->data, "n")) cr_assert_eq(tsr__mp_get_uint(&up->data, "n", &n), 0);
    *plen = n;
    *payload = NULL;
    if (n) {
        *payload = malloc(n);
        cr_assert_eq(read_all(fd, *payload, n), 0);
    }
    return 0;
}

static inline int tcp_listen_any(char *addr, size_t size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(fd, 4), 0);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    snprintf(addr, size, "127.0.0.1:%d", ntohs(sa.sin_port));
    return fd;
}

static inline int tcp_connect(const char *addr) {
    char host[64];
    int port;
    cr_assert_eq(tsr__parse_address(addr, host, sizeof host, &port), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static inline void set_timeout(int fd) {
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static inline void packer_start(msgpack_sbuffer *sb, msgpack_packer *pk) {
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
}

/* Decodes the frame just read with get_frame (the message borrows from up). */
static inline tsr__msg_type frame_msg(const msgpack_unpacked *up, tsr__msg *m) {
    char err[200];
    cr_assert_eq(tsr__msg_decode(&up->data, m, err, sizeof err), 0, "%s", err);
    return m->type;
}

static inline void peer_hello(int fd, int v) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_hello(&sb, &(tsr__msg_hello){.v = v, .role = tsr__str_of("peer")});
    put_frame(fd, &sb);
}

static inline void pack_kdesc_bin(msgpack_packer *pk, const tsr_kdesc *d) {
    msgpack_sbuffer kb;
    msgpack_packer kp;
    packer_start(&kb, &kp);
    cr_assert_eq(tsr__kdesc_pack(&kp, d), 0);
    msgpack_pack_bin(pk, kb.size);
    msgpack_pack_bin_body(pk, kb.data, kb.size);
    msgpack_sbuffer_destroy(&kb);
}

/* ---- A session: one worker thread and its blocking fake scheduler --------------------------- */

typedef struct wsession {
    wthread wt;
    int lfd, fd;
    char addr[64];  /* the fake scheduler's */
    char paddr[96]; /* the worker's peer address */
    msgpack_unpacked up;
} wsession;

/* Starts a worker with `threads` executors and answers its hello. */
static inline void session_start(wsession *s, const char *name, int threads) {
    memset(s, 0, sizeof *s);
    s->lfd = tcp_listen_any(s->addr, sizeof s->addr);
    pthread_mutex_init(&s->wt.mu, NULL);
    tsr_worker_options_default(&s->wt.o);
    s->wt.o.scheduler = s->addr;
    s->wt.o.name = name;
    s->wt.o.threads = threads;
    s->wt.o.on_ready = on_ready;
    s->wt.o.user = &s->wt;
    cr_assert_eq(pthread_create(&s->wt.th, NULL, worker_main, &s->wt), 0);
    s->fd = accept(s->lfd, NULL, NULL);
    cr_assert(s->fd >= 0);
    set_timeout(s->fd);
    msgpack_unpacked_init(&s->up);
    void *payload;
    uint64_t plen;
    cr_assert_eq(get_frame(s->fd, &s->up, &payload, &plen), 0);
    tsr__msg m;
    cr_assert_eq(frame_msg(&s->up, &m), TSR__MSG_hello);
    cr_assert(TSR__MSG_HAS(hello, &m.u.hello, addr));
    cr_assert_eq(tsr__str_copy(s->paddr, sizeof s->paddr, m.u.hello.addr), 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_welcome(&sb, &(tsr__msg_welcome){.v = TSR_PROTOCOL_VERSION, .id = 0});
    put_frame(s->fd, &sb);
}

/* Hangs up (the worker leaves when its scheduler goes) and joins it. */
static inline void session_end(wsession *s) {
    msgpack_unpacked_destroy(&s->up);
    close(s->fd);
    close(s->lfd);
    pthread_join(s->wt.th, NULL);
    cr_expect_eq(s->wt.rc, 0);
    pthread_mutex_destroy(&s->wt.mu);
}

#endif
