/* No process dies of SIGPIPE (issue 12, item 2): every test here runs with SIGPIPE at its
 * default action, as a program that embeds the library may, and makes the library write to a
 * connection whose peer has gone. Before the fix each of them killed the test process. */
#include <signal.h>
#include <sys/socket.h>

#include "worker_fixture.h"

static void default_sigpipe(void) {
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
}

/* SIGPIPE is neither blocked nor pending on this thread: the library left the mask as it was. */
static void assert_mask_restored(void) {
    sigset_t cur, pend;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    cr_assert_not(sigismember(&cur, SIGPIPE), "SIGPIPE left blocked");
    sigpending(&pend);
    cr_assert_not(sigismember(&pend, SIGPIPE), "SIGPIPE left pending");
}

/* ---- the wire layer ------------------------------------------------------------------------- */

typedef struct closed {
    int n, status;
} closed;

static void wc_on_frame(tsr__conn *c, const msgpack_object *h, void *p, uint64_t n) {
    (void)c, (void)h, (void)p, (void)n;
}

static void wc_on_close(tsr__conn *c, int status, const char *reason) {
    closed *k = c->owner;
    (void)reason;
    k->n++;
    k->status = status;
}

static const tsr__conn_cbs wc_cbs = {.on_frame = wc_on_frame, .on_close = wc_on_close};

static void send_hello(tsr__conn *c, size_t plen) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_hello(&sb,
                        &(tsr__msg_hello){.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("peer")});
    static char payload[1 << 20];
    tsr__conn_send(c, &sb, plen ? payload : NULL, plen, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
}

/* uv_write writes at once when it can: to a socket whose peer has closed, that raises SIGPIPE
 * on the calling thread, outside any loop. */
Test(sigpipe, wire_send_to_closed_peer) {
    default_sigpipe();
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsr__logger log = {0};
    closed k = {0};
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    tsr__conn *c = tsr__conn_new(&loop, &wc_cbs, &k, &log);
    cr_assert_eq(tsr__conn_open(c, sv[0]), 0);
    close(sv[1]);
    for (int i = 0; i < 3; i++) send_hello(c, 0);
    assert_mask_restored();
    tsr__uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(k.n, 1);
    cr_assert_eq(k.status, UV_EPIPE, "closed with %d", k.status);
    assert_mask_restored();
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* What the socket did not take at once, libuv writes from the loop: the peer goes meanwhile. */
Test(sigpipe, wire_loop_write_to_closed_peer) {
    default_sigpipe();
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsr__logger log = {0};
    closed k = {0};
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    tsr__conn *c = tsr__conn_new(&loop, &wc_cbs, &k, &log);
    cr_assert_eq(tsr__conn_open(c, sv[0]), 0);
    /* Not reading: the loop sees the socket writable (POLLOUT), never its end of stream. */
    uv_read_stop((uv_stream_t *)&c->tcp);
    send_hello(c, 1 << 20); /* far more than the socket buffers */
    cr_assert_gt(c->queued_bytes, 0);
    tsr__uv_run(&loop, UV_RUN_NOWAIT);
    close(sv[1]);
    tsr__uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(k.n, 1);
    cr_assert(k.status == UV_EPIPE || k.status == UV_ECONNRESET, "closed with %d", k.status);
    assert_mask_restored();
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* A caller that blocks SIGPIPE itself keeps it blocked, and a SIGPIPE pending before is left. */
Test(sigpipe, caller_mask_left_alone) {
    default_sigpipe();
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, NULL);
    raise(SIGPIPE);
    uv_loop_t loop;
    uv_loop_init(&loop);
    tsr__uv_run(&loop, UV_RUN_NOWAIT);
    sigset_t cur, pend;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    sigpending(&pend);
    cr_assert(sigismember(&cur, SIGPIPE) && sigismember(&pend, SIGPIPE));
    signal(SIGPIPE, SIG_IGN); /* discard it */
    pthread_sigmask(SIG_UNBLOCK, &pipe_only, NULL);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---- an embedded worker: a peer asks for a large chunk twice and resets ------------------- */

/* A connection closed with a reset (RST, not FIN): SO_LINGER with a zero timeout. */
static void reset_close(int fd) {
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

static void wait_one_done(wsession *s) {
    for (;;) {
        void *payload;
        uint64_t plen;
        cr_assert_eq(get_frame(s->fd, &s->up, &payload, &plen), 0, "worker hung up");
        free(payload);
        tsr__msg m;
        tsr__msg_type t = frame_msg(&s->up, &m);
        cr_assert_neq(t, TSR__MSG_erred);
        if (t == TSR__MSG_done) return;
    }
}

static void pack_get(msgpack_sbuffer *all, uint32_t job, uint32_t id) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_get(&sb, &(tsr__msg_get){.job = job, .id = id});
    uint8_t len[4] = {0, 0, 0, (uint8_t)sb.size};
    msgpack_sbuffer_write(all, (const char *)len, 4);
    msgpack_sbuffer_write(all, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

Test(sigpipe, worker_peer_resets_mid_reply, .timeout = 60) {
    default_sigpipe();
    wsession s;
    session_start(&s, "wS", 1);
    /* One arange chunk of 8 MB: far past what the socket takes at once. */
    enum { BIG = 1000 * 1000 };
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = TSR_KOP_ARANGE;
    d.dtype = TSR_FLOAT64;
    d.ndim = 1;
    d.shape[0] = BIG;
    double f[2] = {0.0, 1.0};
    int64_t off = 0;
    d.nf = 2;
    d.f = f;
    d.ni = 1;
    d.i = &off;
    msgpack_sbuffer kb;
    msgpack_packer kp;
    packer_start(&kb, &kp);
    cr_assert_eq(tsr__kdesc_pack(&kp, &d), 0);
    tsr__m_task task = {.id = 1, .kdesc = {kb.data, (uint32_t)kb.size}};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_compute(&sb, &(tsr__msg_compute){.job = 3, .tasks = {.n = 1, .v = &task}});
    put_frame(s.fd, &sb);
    msgpack_sbuffer_destroy(&kb);
    wait_one_done(&s);
    /* hello and two gets in one write, then a reset: at once, or once the worker has started
     * its replies. A reply written to a reset socket fails with ECONNRESET, the next one with
     * EPIPE, which raises SIGPIPE; a worker that stops reading a peer whose replies queue up
     * (backpressure) meets the reset on its write side only. */
    for (int trial = 0; trial < 20; trial++) {
        int fd = tcp_connect(s.paddr);
        msgpack_sbuffer all, hb;
        msgpack_sbuffer_init(&all);
        msgpack_sbuffer_init(&hb);
        tsr__msg_pack_hello(
            &hb, &(tsr__msg_hello){.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("peer")});
        uint8_t len[4] = {0, 0, 0, (uint8_t)hb.size};
        msgpack_sbuffer_write(&all, (const char *)len, 4);
        msgpack_sbuffer_write(&all, hb.data, hb.size);
        msgpack_sbuffer_destroy(&hb);
        pack_get(&all, 3, 1);
        pack_get(&all, 3, 1);
        write_all(fd, all.data, all.size);
        msgpack_sbuffer_destroy(&all);
        if (trial >= 15) usleep(5000 * (useconds_t)(trial - 14));
        reset_close(fd);
    }
    /* Still serving, whole. */
    int fd = tcp_connect(s.paddr);
    set_timeout(fd);
    peer_hello(fd, TSR_PROTOCOL_VERSION);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    void *payload;
    uint64_t plen;
    cr_assert_eq(get_frame(fd, &up, &payload, &plen), 0);
    msgpack_sbuffer all;
    msgpack_sbuffer_init(&all);
    pack_get(&all, 3, 1);
    write_all(fd, all.data, all.size);
    msgpack_sbuffer_destroy(&all);
    cr_assert_eq(get_frame(fd, &up, &payload, &plen), 0);
    cr_assert_eq(plen, (uint64_t)BIG * 8);
    cr_assert_eq(((double *)payload)[BIG - 1], (double)(BIG - 1));
    free(payload);
    msgpack_unpacked_destroy(&up);
    close(fd);
    session_end(&s);
    assert_mask_restored();
}

/* ---- an embedded scheduler: a monitor asks for snapshots and resets ------------------------ */

typedef struct srv_thread {
    pthread_t th;
    tsr_scheduler *s;
    int rc;
} srv_thread;

static void *run_sched(void *arg) {
    srv_thread *t = arg;
    t->rc = tsr_scheduler_run(t->s);
    return NULL;
}

/* Connects as a monitor and reads the snapshot every monitor gets at hello. */
static int monitor(const char *addr) {
    int fd = tcp_connect(addr);
    set_timeout(fd);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_hello(
        &sb, &(tsr__msg_hello){.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("monitor")});
    put_frame(fd, &sb);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    void *payload;
    uint64_t plen;
    char type[16];
    for (int k = 0; k < 2; k++) { /* welcome, then info */
        cr_assert_eq(get_frame(fd, &up, &payload, &plen), 0);
        tsr__mp_type(&up.data, type, sizeof type);
        cr_assert_str_eq(type, k == 0 ? "welcome" : "info");
    }
    msgpack_unpacked_destroy(&up);
    return fd;
}

Test(sigpipe, scheduler_monitor_resets_mid_reply, .timeout = 60) {
    default_sigpipe();
    srv_thread t = {0};
    tsr_scheduler_options so;
    tsr_scheduler_options_default(&so);
    so.listen = "127.0.0.1:0";
    cr_assert_eq(tsr_scheduler_new(&so, &t.s), 0);
    char addr[96];
    snprintf(addr, sizeof addr, "%s", tsr_scheduler_address(t.s));
    pthread_create(&t.th, NULL, run_sched, &t);
    for (int trial = 0; trial < 5; trial++) {
        int fd = monitor(addr);
        msgpack_sbuffer all;
        msgpack_sbuffer_init(&all);
        for (int k = 0; k < 200; k++) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            tsr__msg_pack_info(&sb, &(tsr__msg_info){0});
            uint8_t len[4] = {0, 0, 0, (uint8_t)sb.size};
            msgpack_sbuffer_write(&all, (const char *)len, 4);
            msgpack_sbuffer_write(&all, sb.data, sb.size);
            msgpack_sbuffer_destroy(&sb);
        }
        write_all(fd, all.data, all.size);
        msgpack_sbuffer_destroy(&all);
        usleep(10000 * (useconds_t)trial);
        reset_close(fd);
    }
    close(monitor(addr)); /* still answering */
    tsr_scheduler_stop(t.s);
    pthread_join(t.th, NULL);
    cr_assert_eq(t.rc, 0);
    tsr_scheduler_free(t.s);
    assert_mask_restored();
}
