/* Backpressure and allocation bombs against real processes (issue 12, item 8): a peer that asks
 * a `tessera worker` for 20,000 chunks and never reads the replies, a monitor that asks a
 * `tessera scheduler` for 200,000 snapshots and never reads them, and a 5-byte header claiming a
 * map of four billion entries. Each process must stay alive with its resident memory bounded
 * (before: +335 MB and +64 MB), and a peer fetching a chunk larger than the hard cap, twice,
 * must still get both. RSS bounds are not asserted under ASan (TSR_TEST_ASAN: shadow memory). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "graph/graph.h"
#include "harness.h"
#include "wire/msg.h"
#include "wire/wire.h"

/* ---- sockets and frames ---- */

static int dial(const char *addr) {
    char host[64];
    int port;
    cr_assert_eq(tsr__parse_address(addr, host, sizeof host, &port), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "%s", strerror(errno));
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        cr_assert_gt(k, 0, "send: %s", strerror(errno));
        c += k;
        n -= (size_t)k;
    }
}

static int recv_all(int fd, void *p, size_t n) {
    char *c = p;
    while (n > 0) {
        ssize_t k = recv(fd, c, n, 0);
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Appends header sb as a frame to out (sb is left empty). */
static void frame(msgpack_sbuffer *out, msgpack_sbuffer *sb) {
    uint8_t len[4] = {(uint8_t)(sb->size >> 24), (uint8_t)(sb->size >> 16),
                      (uint8_t)(sb->size >> 8), (uint8_t)sb->size};
    msgpack_sbuffer_write(out, (const char *)len, 4);
    msgpack_sbuffer_write(out, sb->data, sb->size);
    msgpack_sbuffer_clear(sb);
}

static void send_msg(int fd, msgpack_sbuffer *sb) {
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    frame(&out, sb);
    send_all(fd, out.data, out.size);
    msgpack_sbuffer_destroy(&out);
}

/* Reads one frame, skipping heartbeats and challenges: its type, and its payload (caller frees) in
 * *payload. -1 when the connection ends. */
static int recv_msg(int fd, tsr__msg_type *type, void **payload, uint64_t *plen) {
    for (;;) {
        uint8_t len[4];
        if (recv_all(fd, len, 4)) return -1;
        uint32_t h =
            (uint32_t)len[0] << 24 | (uint32_t)len[1] << 16 | (uint32_t)len[2] << 8 | len[3];
        char *buf = malloc(h);
        cr_assert_eq(recv_all(fd, buf, h), 0);
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        cr_assert_eq(msgpack_unpack_next(&up, buf, h, &off), MSGPACK_UNPACK_SUCCESS);
        tsr__msg m;
        char err[200];
        cr_assert_eq(tsr__msg_decode(&up.data, &m, err, sizeof err), 0, "%s", err);
        uint64_t n = 0;
        if (m.type == TSR__MSG_chunk) n = m.u.chunk.n;
        *type = m.type;
        msgpack_unpacked_destroy(&up);
        free(buf);
        *plen = n;
        *payload = NULL;
        if (n) {
            *payload = malloc(n);
            cr_assert_eq(recv_all(fd, *payload, n), 0);
        }
        /* Heartbeats, and the challenge every port opens with (a hello without a token needs
         * no answer to it: docs/PROTOCOL.md). */
        if (*type != TSR__MSG_heartbeat && *type != TSR__MSG_challenge) return 0;
        free(*payload);
    }
}

static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f, "process %d is gone", (int)pid);
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static int alive(pid_t pid) {
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

/* The process under test, killed and reaped after a test that failed half-way. */
static pid_t under_test;

static void reap(void) {
    int st;
    if (under_test > 0 && waitpid(under_test, &st, WNOHANG) == 0) {
        kill(under_test, SIGKILL);
        waitpid(under_test, &st, 0);
    }
}

static int asan(void) {
    return getenv("TSR_TEST_ASAN") != NULL;
}

/* ---- a `tessera worker` driven by a fake scheduler ---- */

typedef struct fworker {
    pid_t pid;
    int lfd, fd;
    char peer[96];
} fworker;

static void fworker_start(fworker *f) {
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(f->lfd, 4) == 0 &&
              getsockname(f->lfd, (struct sockaddr *)&sa, &sl) == 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    const char *argv[] = {"tessera", "worker", "--scheduler", addr, "--name", "wB", NULL};
    int out;
    f->pid = under_test = spawn_reading(argv, &out);
    f->fd = accept(f->lfd, NULL, NULL);
    cr_assert(f->fd >= 0);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    tsr__msg_type t;
    void *p;
    uint64_t n;
    cr_assert_eq(recv_msg(f->fd, &t, &p, &n), 0);
    cr_assert_eq(t, TSR__MSG_hello);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_welcome(&sb, &(tsr__msg_welcome){.v = TSR_PROTOCOL_VERSION, .id = 0});
    send_msg(f->fd, &sb);
    msgpack_sbuffer_destroy(&sb);
    wait_marker(out, "ready on ", f->peer, sizeof f->peer);
    close(out);
}

/* Task (job 1, id) makes arange(count) as float64 on the worker; waits for its done. */
static void fworker_arange(fworker *f, uint32_t id, int64_t count) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = TSR_KOP_ARANGE;
    d.dtype = TSR_FLOAT64;
    d.ndim = 1;
    d.shape[0] = count;
    double fp[2] = {0.0, 1.0};
    int64_t off = 0;
    d.nf = 2;
    d.f = fp;
    d.ni = 1;
    d.i = &off;
    msgpack_sbuffer kb, sb;
    msgpack_packer kp;
    msgpack_sbuffer_init(&kb);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&kp, &kb, msgpack_sbuffer_write);
    cr_assert_eq(tsr__kdesc_pack(&kp, &d), 0);
    tsr__m_task task = {.id = id, .kdesc = {kb.data, (uint32_t)kb.size}};
    tsr__msg_pack_compute(&sb, &(tsr__msg_compute){.job = 1, .tasks = {.n = 1, .v = &task}});
    send_msg(f->fd, &sb);
    msgpack_sbuffer_destroy(&kb);
    msgpack_sbuffer_destroy(&sb);
    for (;;) {
        tsr__msg_type t;
        void *p;
        uint64_t n;
        cr_assert_eq(recv_msg(f->fd, &t, &p, &n), 0, "the worker hung up");
        cr_assert_neq(t, TSR__MSG_erred);
        if (t == TSR__MSG_done) return;
    }
}

static int peer_connect(const char *addr) {
    int fd = dial(addr);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_hello(&sb,
                        &(tsr__msg_hello){.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("peer")});
    send_msg(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
    tsr__msg_type t;
    void *p;
    uint64_t n;
    cr_assert_eq(recv_msg(fd, &t, &p, &n), 0);
    cr_assert_eq(t, TSR__MSG_welcome);
    return fd;
}

static void send_gets(int fd, uint32_t id, int count) {
    msgpack_sbuffer all, sb;
    msgpack_sbuffer_init(&all);
    msgpack_sbuffer_init(&sb);
    for (int k = 0; k < count; k++) {
        tsr__msg_pack_get(&sb, &(tsr__msg_get){.job = 1, .id = id});
        frame(&all, &sb);
    }
    send_all(fd, all.data, all.size);
    msgpack_sbuffer_destroy(&all);
    msgpack_sbuffer_destroy(&sb);
}

/* Reads one chunk reply and checks it is arange(count). */
static void expect_arange(int fd, int64_t count) {
    tsr__msg_type t;
    void *p;
    uint64_t n;
    cr_assert_eq(recv_msg(fd, &t, &p, &n), 0, "no reply");
    cr_assert_eq(t, TSR__MSG_chunk);
    cr_assert_eq(n, (uint64_t)count * 8);
    const double *v = p;
    for (int64_t i = 0; i < count; i += count / 7 + 1) cr_assert_eq(v[i], (double)i);
    cr_assert_eq(v[count - 1], (double)(count - 1));
    free(p);
}

Test(backpressure, worker_unread_gets, .timeout = 120, .fini = reap) {
    fworker f;
    fworker_start(&f);
    enum { SMALL = 2000, BIG = 10 * 1000 * 1000 }; /* 16 kB (batched replies); 80 MB */
    fworker_arange(&f, 1, SMALL);
    fworker_arange(&f, 2, BIG);
    long before = rss_kb(f.pid);
    /* 20,000 gets of the 16 kB chunk, never read: 320 MB of replies. */
    int flood = peer_connect(f.peer);
    send_gets(flood, 1, 20000);
    sleep(2);
    long during = rss_kb(f.pid);
    cr_log_info("worker RSS %ld kB before the flood, %ld kB after 20,000 unread gets", before,
                during);
    cr_assert(alive(f.pid));
    if (!asan())
        cr_assert_lt(during - before, 48 * 1024, "the worker grew by %ld kB", during - before);
    /* A peer that reads gets what it asks for, the 80 MB chunk (past the 64 MiB hard cap) twice,
     * while the flooding peer is still connected. */
    int fd = peer_connect(f.peer);
    send_gets(fd, 2, 2);
    expect_arange(fd, BIG);
    expect_arange(fd, BIG);
    close(fd);
    /* The flooding peer, once it reads, gets its replies in order. */
    for (int k = 0; k < 100; k++) expect_arange(flood, SMALL);
    close(flood);
    cr_assert(alive(f.pid));
    close(f.fd); /* the worker leaves when its scheduler goes */
    close(f.lfd);
    cr_assert_eq(stop_proc(f.pid), 0);
}

/* ---- a `tessera scheduler` ---- */

static int monitor_connect(const char *addr) {
    int fd = dial(addr);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_hello(
        &sb, &(tsr__msg_hello){.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("monitor")});
    send_msg(fd, &sb);
    msgpack_sbuffer_destroy(&sb);
    tsr__msg_type t;
    void *p;
    uint64_t n;
    cr_assert_eq(recv_msg(fd, &t, &p, &n), 0);
    cr_assert_eq(t, TSR__MSG_welcome);
    cr_assert_eq(recv_msg(fd, &t, &p, &n), 0);
    cr_assert_eq(t, TSR__MSG_info);
    return fd;
}

Test(backpressure, scheduler_unread_info, .timeout = 120, .fini = reap) {
    char addr[96];
    pid_t pid = under_test = start_scheduler(addr, sizeof addr);
    long before = rss_kb(pid);
    int flood = monitor_connect(addr);
    msgpack_sbuffer all, sb;
    msgpack_sbuffer_init(&all);
    msgpack_sbuffer_init(&sb);
    for (int k = 0; k < 200000; k++) {
        tsr__msg_pack_info(&sb, &(tsr__msg_info){0});
        frame(&all, &sb);
    }
    send_all(flood, all.data, all.size);
    msgpack_sbuffer_destroy(&all);
    msgpack_sbuffer_destroy(&sb);
    sleep(2);
    long during = rss_kb(pid);
    cr_log_info("scheduler RSS %ld kB before, %ld kB after 200,000 unread info requests", before,
                during);
    cr_assert(alive(pid));
    if (!asan())
        cr_assert_lt(during - before, 16 * 1024, "the scheduler grew by %ld kB", during - before);
    close(monitor_connect(addr)); /* everyone else is still served */
    /* Reading again, the monitor gets its snapshots. */
    for (int k = 0; k < 1000; k++) {
        tsr__msg_type t;
        void *p;
        uint64_t n;
        cr_assert_eq(recv_msg(flood, &t, &p, &n), 0);
        cr_assert_eq(t, TSR__MSG_info);
    }
    close(flood);
    cr_assert_eq(stop_proc(pid), 0);
}

/* A 5-byte header, one map claiming 2^32-1 entries: refused by its length before msgpack-c is
 * asked to make room (it asked malloc for 128 GiB), and only that connection goes. */
Test(backpressure, scheduler_map_bomb, .timeout = 60, .fini = reap) {
    char addr[96];
    pid_t pid = under_test = start_scheduler(addr, sizeof addr);
    long before = rss_kb(pid);
    int fd = dial(addr);
    send_all(fd, "\x00\x00\x00\x05\xdf\xff\xff\xff\xff", 9);
    char b[256];
    ssize_t k;
    while ((k = recv(fd, b, sizeof b, 0)) > 0) { /* the challenge, then the end */
    }
    cr_assert(k == 0 || errno == ECONNRESET, "the connection stayed open");
    close(fd);
    cr_assert(alive(pid));
    cr_assert_lt(rss_kb(pid) - before, 8 * 1024);
    close(monitor_connect(addr));
    cr_assert_eq(stop_proc(pid), 0);
}
