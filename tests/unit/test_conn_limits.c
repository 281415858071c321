/* Connections that never say hello are dropped (issue 12, item 8): the worker's peer port and
 * the scheduler's port each close a silent connection once the greeting deadline passes
 * (tsr__hello_timeout_ms, 10 s by default, 300 ms here), and keep a greeted one. */
#include <poll.h>

#include "worker_fixture.h"

/* Waits up to ms for fd to be closed by the other end, reading (and dropping) what comes
 * before (the challenge every port opens with): 1 if it was closed. */
static int closed_within(int fd, int ms) {
    for (int waited = 0; waited < ms; waited += 50) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        char b[256];
        if (recv(fd, b, sizeof b, MSG_DONTWAIT) <= 0) return 1;
    }
    return 0;
}

Test(conn_limits, worker_peer_hello_deadline, .timeout = 60) {
    signal(SIGPIPE, SIG_IGN);
    tsr__hello_timeout_ms = 300;
    wsession s;
    session_start(&s, "wH", 1);
    int silent = tcp_connect(s.paddr);
    int greeted = tcp_connect(s.paddr);
    peer_hello(greeted, TSR_PROTOCOL_VERSION);
    cr_assert(closed_within(silent, 5000), "a silent peer was kept");
    /* The greeted peer is still served, well past the deadline. */
    usleep(500 * 1000);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_get(&sb, &(tsr__msg_get){.job = 1, .id = 1});
    put_frame(greeted, &sb);
    set_timeout(greeted);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    void *payload;
    uint64_t plen;
    char type[16];
    for (int k = 0; k < 2; k++) { /* welcome, then the answer */
        cr_assert_eq(get_frame(greeted, &up, &payload, &plen), 0);
        tsr__mp_type(&up.data, type, sizeof type);
        cr_assert_str_eq(type, k == 0 ? "welcome" : "missing");
    }
    msgpack_unpacked_destroy(&up);
    close(silent);
    close(greeted);
    session_end(&s);
}

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

Test(conn_limits, scheduler_hello_deadline, .timeout = 60) {
    signal(SIGPIPE, SIG_IGN);
    tsr__hello_timeout_ms = 300;
    srv_thread t = {0};
    tsr_scheduler_options so;
    tsr_scheduler_options_default(&so);
    so.listen = "127.0.0.1:0";
    cr_assert_eq(tsr_scheduler_new(&so, &t.s), 0);
    char addr[96];
    snprintf(addr, sizeof addr, "%s", tsr_scheduler_address(t.s));
    pthread_create(&t.th, NULL, run_sched, &t);
    int silent = tcp_connect(addr);
    int greeted = tcp_connect(addr);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_hello(
        &sb, &(tsr__msg_hello){.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("monitor")});
    put_frame(greeted, &sb);
    cr_assert(closed_within(silent, 5000), "a silent connection was kept");
    usleep(500 * 1000);
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_info(&sb, &(tsr__msg_info){0});
    put_frame(greeted, &sb);
    set_timeout(greeted);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    void *payload;
    uint64_t plen;
    char type[16];
    for (int k = 0; k < 3; k++) { /* welcome, the snapshot at hello, the one asked for */
        cr_assert_eq(get_frame(greeted, &up, &payload, &plen), 0);
        tsr__mp_type(&up.data, type, sizeof type);
        cr_assert_str_eq(type, k == 0 ? "welcome" : "info");
    }
    msgpack_unpacked_destroy(&up);
    close(silent);
    close(greeted);
    tsr_scheduler_stop(t.s);
    pthread_join(t.th, NULL);
    cr_assert_eq(t.rc, 0);
    tsr_scheduler_free(t.s);
}
