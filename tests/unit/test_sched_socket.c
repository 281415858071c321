/* Scheduler tests over sockets: tsr_scheduler_run on 127.0.0.1:0 driven with plain POSIX
 * sockets (bad hellos and frames close only their connection; a fake worker and client run a
 * small graph; a GPU worker's figures and a paused worker's state reach monitors and placement;
 * a client's shutdown stops it). The pure state machine is test_sched.c. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "scheduler/sched.h"
#include "mp_ref.h"
#include "wire/auth.h"
#include "wire/msg.h"
#include "wire/wire.h"

#include "sched_fixture.h"
#include "sched_graph.h"

/* ---- sockets ---- */

typedef struct srv_thread {
    pthread_t th;
    tsr_scheduler *s;
    char addr[96];
    int port;
    int rc;
} srv_thread;

static void *run_sched(void *arg) {
    srv_thread *t = arg;
    t->rc = tsr_scheduler_run(t->s);
    return NULL;
}

/* The token of the schedulers here (start_sched); a client's shutdown needs it. */
#define TEST_TOKEN "sched-socket-test"

/* A scheduler on port 0 of 127.0.0.1 with token (NULL: none), run on its own thread; t->addr
 * and t->port say where. */
static void start_sched_token(srv_thread *t, const char *token) {
    signal(SIGPIPE, SIG_IGN);
    tsr_scheduler_options so;
    tsr_scheduler_options_default(&so);
    so.listen = "127.0.0.1:0";
    so.token = token;
    cr_assert_eq(tsr_scheduler_new(&so, &t->s), 0);
    snprintf(t->addr, sizeof t->addr, "%s", tsr_scheduler_address(t->s));
    pthread_create(&t->th, NULL, run_sched, t);
    char host[64];
    cr_assert_eq(tsr__parse_address(t->addr, host, sizeof host, &t->port), 0);
}

static void start_sched(srv_thread *t) {
    start_sched_token(t, TEST_TOKEN);
}

static int recv_frame(int fd, msgpack_unpacked *up, char *buf, size_t cap);
static uint8_t nonces[1024][32];

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* Every connection opens with the server's challenge (wire/auth.c). */
    static char buf[4096];
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    cr_assert_eq(recv_frame(fd, &up, buf, sizeof buf), 0, "no challenge");
    tsr__msg m;
    char err[160];
    cr_assert_eq(tsr__msg_decode(&up.data, &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.type, TSR__MSG_challenge);
    cr_assert(m.u.challenge.v == TSR_PROTOCOL_VERSION && m.u.challenge.nonce.n == 32);
    cr_assert_lt(fd, 1024);
    memcpy(nonces[fd], m.u.challenge.nonce.p, 32);
    msgpack_unpacked_destroy(&up);
    return fd;
}

static void send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        cr_assert_gt(w, 0);
        c += w;
        n -= (size_t)w;
    }
}

static void send_frame(int fd, msgpack_sbuffer *b, const void *payload, size_t plen) {
    uint8_t len[4] = {(uint8_t)(b->size >> 24), (uint8_t)(b->size >> 16), (uint8_t)(b->size >> 8),
                      (uint8_t)b->size};
    send_all(fd, len, 4);
    send_all(fd, b->data, b->size);
    if (plen) send_all(fd, payload, plen);
    msgpack_sbuffer_clear(b);
}

static int recv_all(int fd, void *p, size_t n) {
    char *c = p;
    while (n > 0) {
        ssize_t r = recv(fd, c, n, 0);
        if (r <= 0) return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Reads one frame's header into up; -1 when the connection is closed. */
/* Heartbeats (one a second to every peer) are skipped: the tests here are not about them. */
static int recv_frame(int fd, msgpack_unpacked *up, char *buf, size_t cap) {
    for (;;) {
        uint8_t len[4];
        if (recv_all(fd, len, 4)) return -1;
        size_t n = (size_t)len[0] << 24 | (size_t)len[1] << 16 | (size_t)len[2] << 8 | len[3];
        cr_assert_lt(n, cap);
        if (recv_all(fd, buf, n)) return -1;
        size_t off = 0;
        cr_assert_eq(msgpack_unpack_next(up, buf, n, &off), MSGPACK_UNPACK_SUCCESS);
        if (tsr__msg_peek_type(&up->data) != TSR__MSG_heartbeat) return 0;
    }
}

/* Receives a frame and decodes it with the message layer; it must be of type `type`. */
static void expect_type(int fd, const char *type, msgpack_unpacked *up, char *buf, size_t cap,
                        tsr__msg *m) {
    cr_assert_eq(recv_frame(fd, up, buf, cap), 0, "expected %s, connection closed", type);
    char err[200];
    cr_assert_eq(tsr__msg_decode(&up->data, m, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(tsr__msg_name(m->type), type);
}

static void expect_closed(int fd) {
    if (fd < 0) return;
    char c;
    ssize_t r;
    do r = recv(fd, &c, 1, 0);
    while (r > 0);
    cr_assert_leq(r, 0);
}

/* nonces: the server's nonce of each dialled connection (its challenge), by descriptor. */

/* A hello signed as wire/auth.c would sign it, with secret (NULL: unsigned), sent on fd. The
 * signing needs only a connection's handshake state, so a zeroed tsr__conn stands in for one. */
static void send_hello_as(int fd, msgpack_sbuffer *b, tsr__msg_hello *h, const char *secret) {
    cr_assert_lt(fd, 1024);
    static tsr__conn fake;
    memset(&fake, 0, sizeof fake);
    fake.auth.secret = secret;
    memcpy(fake.auth.snonce, nonces[fd], 32);
    fake.auth.have_snonce = 1;
    tsr__auth_sign_hello(&fake, h);
    tsr__msg_pack_hello(b, h);
    send_frame(fd, b, NULL, 0);
}

static void send_hello_msg(int fd, msgpack_sbuffer *b, tsr__msg_hello *h) {
    send_hello_as(fd, b, h, TEST_TOKEN);
}

static void send_hello(int fd, msgpack_sbuffer *b, int v, const char *role, const char *addr) {
    tsr__msg_hello h = {.v = v, .role = tsr__str_of(role), .name = tsr__str_of("test")};
    TSR__MSG_SET(hello, &h, name);
    if (addr) {
        h.threads = 1;
        h.addr = tsr__str_of(addr);
        h.has |= TSR__MSG_BIT(hello, threads) | TSR__MSG_BIT(hello, addr);
    }
    send_hello_msg(fd, b, &h);
}

Test(sched_socket, bad_peers_are_dropped_and_good_ones_served, .timeout = 30) {
    srv_thread t = {.rc = -1};
    start_sched(&t);

    static char buf[1 << 16];
    tsr__msg m;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);

    /* unknown role: closed */
    int fd = dial(t.port);
    send_hello(fd, &b, TSR_PROTOCOL_VERSION, "bogus", NULL);
    expect_closed(fd);
    close(fd);

    /* oversize header length: closed */
    fd = dial(t.port);
    send_all(fd, "\x7f\xff\xff\xff", 4);
    expect_closed(fd);
    close(fd);

    /* not msgpack: closed */
    fd = dial(t.port);
    send_all(fd, "\x00\x00\x00\x02\xc1\xc1", 6);
    expect_closed(fd);
    close(fd);

    /* wrong version: an error naming both versions, then closed */
    fd = dial(t.port);
    send_hello(fd, &b, 1, "client", NULL); /* version 1: before heartbeat existed */
    expect_type(fd, "error", &up, buf, sizeof buf, &m);
    char msg[128];
    cr_assert_eq(tsr__str_copy(msg, sizeof msg, m.u.error.msg), 0);
    cr_assert_str_eq(msg, "protocol version mismatch: got 1, want 3");
    expect_closed(fd);
    close(fd);

    /* A fake worker and a client run a two-task graph. */
    int cl = dial(t.port);
    send_hello(cl, &b, TSR_PROTOCOL_VERSION, "client", NULL);
    expect_type(cl, "welcome", &up, buf, sizeof buf, &m);
    tsr__msg_pack_wait_workers(&b, &(tsr__msg_wait_workers){.count = 1});
    send_frame(cl, &b, NULL, 0);

    int wk = dial(t.port);
    send_hello(wk, &b, TSR_PROTOCOL_VERSION, "worker", "127.0.0.1:1");
    expect_type(wk, "welcome", &up, buf, sizeof buf, &m);
    expect_type(cl, "workers", &up, buf, sizeof buf, &m);

    msgpack_sbuffer g;
    msgpack_sbuffer_init(&g);
    pack_graph(&g, 0);
    tsr__msg_submit sub = {.n = g.size};
    TSR__MSG_SET(submit, &sub, n);
    tsr__msg_pack_submit(&b, &sub);
    send_frame(cl, &b, g.data, g.size);
    expect_type(cl, "accepted", &up, buf, sizeof buf, &m);
    uint32_t job = m.u.accepted.job;

    for (int task = 0; task < 2; task++) {
        expect_type(wk, "compute", &up, buf, sizeof buf, &m);
        cr_assert_eq(m.u.compute.tasks.n, 1);
        tsr__m_task tk;
        TSR__LIST_GET(&m.u.compute.tasks, task, 0, &tk);
        cr_assert_eq(tk.id, (uint32_t)task);
        cr_assert_gt(tk.kdesc.n, 0);
        cr_assert_eq(tk.inputs.n, (uint32_t)task, "inputs");
        if (task == 1) {
            /* [0, nil, 1]: held here, and task 1 is its last consumer, so it is donated */
            tsr__m_input in;
            TSR__LIST_GET(&tk.inputs, input, 0, &in);
            cr_assert_eq(in.id, 0);
            cr_assert(!TSR__M_HAS(input, &in, addr));
            cr_assert_eq(in.flags, TSR__IN_DONATE);
        }
        tsr__m_done_item it = {.job = job, .id = (uint32_t)task, .nbytes = 64, .seconds = 0.01};
        TSR__M_SET(done_item, &it, seconds);
        tsr__msg_pack_done(&b, &(tsr__msg_done){.items = {.n = 1, .v = &it}});
        send_frame(wk, &b, NULL, 0);
    }
    /* no free for task 0: its buffer was donated to task 1 */
    for (;;) {
        cr_assert_eq(recv_frame(cl, &up, buf, sizeof buf), 0);
        cr_assert_eq(tsr__msg_decode(&up.data, &m, NULL, 0), 0);
        if (m.type == TSR__MSG_finished) break;
        cr_assert_eq(m.type, TSR__MSG_progress);
    }
    cr_assert_eq(m.u.finished.outputs.n, 1);
    tsr__m_output o;
    TSR__LIST_GET(&m.u.finished.outputs, output, 0, &o);
    cr_assert_eq(o.id, 1);
    cr_assert(tsr__str_eq(o.addr, "127.0.0.1:1"));
    cr_assert_eq(o.nbytes, 64);

    /* a client that sends a worker's message is dropped; the others carry on */
    int bad = dial(t.port);
    send_hello(bad, &b, TSR_PROTOCOL_VERSION, "client", NULL);
    expect_type(bad, "welcome", &up, buf, sizeof buf, &m);
    tsr__msg_pack_done(&b, &(tsr__msg_done){.items = {.n = 0}});
    send_frame(bad, &b, NULL, 0);
    expect_closed(bad);
    close(bad);

    tsr__msg_pack_release(&b, &(tsr__msg_release){.job = job});
    send_frame(cl, &b, NULL, 0);
    expect_type(wk, "free", &up, buf, sizeof buf, &m); /* the output */
    tsr__m_key k;
    TSR__LIST_GET(&m.u.free.keys, key, 0, &k);
    cr_assert(m.u.free.keys.n == 1 && k.job == job && k.id == 1);

    tsr__msg_pack_shutdown(&b, &(tsr__msg_shutdown){0});
    send_frame(cl, &b, NULL, 0);
    expect_type(wk, "shutdown", &up, buf, sizeof buf, &m);
    expect_closed(wk);
    expect_closed(cl);
    close(wk);
    close(cl);
    pthread_join(t.th, NULL);
    cr_assert_eq(t.rc, 0);
    tsr_scheduler_free(t.s);
    msgpack_sbuffer_destroy(&g);
    msgpack_sbuffer_destroy(&b);
    msgpack_unpacked_destroy(&up);
}

/* done's items are checked as the scheduler reads them (a LAZY list, wire/msg.h): an item with a
 * string where the task id belongs drops that worker, as a done that does not decode would, and
 * the scheduler carries on serving its client. */
Test(sched_socket, malformed_done_item_drops_the_worker, .timeout = 30) {
    srv_thread t = {.rc = -1};
    start_sched(&t);

    static char buf[1 << 16];
    tsr__msg m;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);

    int cl = dial(t.port);
    send_hello(cl, &b, TSR_PROTOCOL_VERSION, "client", NULL);
    expect_type(cl, "welcome", &up, buf, sizeof buf, &m);
    tsr__msg_pack_wait_workers(&b, &(tsr__msg_wait_workers){.count = 1});
    send_frame(cl, &b, NULL, 0);
    int wk = dial(t.port);
    send_hello(wk, &b, TSR_PROTOCOL_VERSION, "worker", "127.0.0.1:1");
    expect_type(wk, "welcome", &up, buf, sizeof buf, &m);
    expect_type(cl, "workers", &up, buf, sizeof buf, &m);

    msgpack_sbuffer g;
    msgpack_sbuffer_init(&g);
    pack_graph(&g, 0);
    tsr__msg_submit sub = {.n = g.size};
    TSR__MSG_SET(submit, &sub, n);
    tsr__msg_pack_submit(&b, &sub);
    send_frame(cl, &b, g.data, g.size);
    expect_type(cl, "accepted", &up, buf, sizeof buf, &m);
    uint32_t job = m.u.accepted.job;
    expect_type(wk, "compute", &up, buf, sizeof buf, &m);

    /* done {items: [[job, 0, 64], [job, "1", 64]]}, packed by hand (the layer cannot write it). */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    tsr__mp_pack_type(&pk, 2, "done");
    tsr__mp_pack_str(&pk, "items");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint32(&pk, job);
    msgpack_pack_uint32(&pk, 0);
    msgpack_pack_uint64(&pk, 64);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint32(&pk, job);
    tsr__mp_pack_str(&pk, "1");
    msgpack_pack_uint64(&pk, 64);
    send_frame(wk, &b, NULL, 0);
    expect_closed(wk);
    close(wk);

    /* The scheduler is still there for its client. */
    tsr__msg_pack_shutdown(&b, &(tsr__msg_shutdown){0});
    send_frame(cl, &b, NULL, 0);
    expect_closed(cl);
    close(cl);
    pthread_join(t.th, NULL);
    cr_assert_eq(t.rc, 0);
    tsr_scheduler_free(t.s);
    msgpack_sbuffer_destroy(&g);
    msgpack_sbuffer_destroy(&b);
    msgpack_unpacked_destroy(&up);
}

/* The monitor's wlist entry of worker `name` in an info message (decoded into *out). */
static void find_winfo(const tsr__msg *m, const char *name, tsr__m_winfo *out) {
    for (uint32_t i = 0; i < m->u.info.wlist.n; i++) {
        cr_assert_eq(TSR__LIST_GET(&m->u.info.wlist, winfo, i, out), 0);
        if (tsr__str_eq(out->name, name)) return;
    }
    cr_assert_fail("no worker %s in info", name);
}

/* A GPU worker's hello and st carry its device's figures; the scheduler passes them to monitors
 * (and says nothing of a device for a CPU worker, whose hello and st are as before). */
Test(sched_socket, gpu_worker_figures_reach_monitors, .timeout = 30) {
    srv_thread t = {.rc = -1};
    start_sched(&t);
    static char buf[1 << 16];
    tsr__msg m;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);

    int cpu = dial(t.port);
    send_hello(cpu, &b, TSR_PROTOCOL_VERSION, "worker", "127.0.0.1:1"); /* no kind, no device */
    expect_type(cpu, "welcome", &up, buf, sizeof buf, &m);
    int gpu = dial(t.port);
    tsr__msg_hello h = {.v = TSR_PROTOCOL_VERSION,
                        .role = tsr__str_of("worker"),
                        .name = tsr__str_of("g0"),
                        .threads = 1,
                        .kind = tsr__str_of("gpu"),
                        .addr = tsr__str_of("127.0.0.1:2"),
                        .dev_name = tsr__str_of("Fake GPU"),
                        .dev_limit = 8ull << 30};
    h.has = TSR__MSG_BIT(hello, name) | TSR__MSG_BIT(hello, threads) | TSR__MSG_BIT(hello, kind) |
            TSR__MSG_BIT(hello, addr) | TSR__MSG_BIT(hello, dev_name) |
            TSR__MSG_BIT(hello, dev_limit);
    send_hello_msg(gpu, &b, &h);
    expect_type(gpu, "welcome", &up, buf, sizeof buf, &m);

    int mon = dial(t.port);
    send_hello(mon, &b, TSR_PROTOCOL_VERSION, "monitor", NULL);
    expect_type(mon, "welcome", &up, buf, sizeof buf, &m);
    expect_type(mon, "info", &up, buf, sizeof buf, &m);
    tsr__m_winfo wi;
    find_winfo(&m, "g0", &wi);
    cr_assert(tsr__str_eq(wi.kind, "gpu") && tsr__str_eq(wi.dev_name, "Fake GPU"));
    cr_assert(TSR__M_HAS(winfo, &wi, dev_limit) && wi.dev_limit == 8ull << 30, "from the hello");
    cr_assert(TSR__M_HAS(winfo, &wi, dev_used) && wi.dev_used == 0);
    find_winfo(&m, "test", &wi);
    cr_assert(tsr__str_eq(wi.kind, "cpu"));
    cr_assert_not(TSR__M_HAS(winfo, &wi, dev_name) || TSR__M_HAS(winfo, &wi, dev_used) ||
                  TSR__M_HAS(winfo, &wi, h2d_bytes));

    /* The GPU worker reports its cache; the next snapshot shows it. */
    tsr__msg_done d = {.items = {.n = 0}};
    d.st = (tsr__m_wstats){.dev_used = 3u << 20,
                           .dev_limit = 6ull << 30,
                           .h2d_bytes = 11u << 20,
                           .d2h_bytes = 5u << 20,
                           .dev_evicted = 4};
    d.st.has = TSR__M_BIT(wstats, dev_used) | TSR__M_BIT(wstats, dev_limit) |
               TSR__M_BIT(wstats, h2d_bytes) | TSR__M_BIT(wstats, d2h_bytes) |
               TSR__M_BIT(wstats, dev_evicted);
    TSR__MSG_SET(done, &d, st);
    tsr__msg_pack_done(&b, &d);
    send_frame(gpu, &b, NULL, 0);
    /* Two connections: ask until the scheduler has read the worker's (a few turns at most). */
    for (int tries = 0; tries < 500; tries++) {
        tsr__msg_pack_info(&b, &(tsr__msg_info){0});
        send_frame(mon, &b, NULL, 0);
        expect_type(mon, "info", &up, buf, sizeof buf, &m);
        find_winfo(&m, "g0", &wi);
        if (wi.dev_used) break;
        usleep(2000);
    }
    cr_assert(wi.dev_used == 3u << 20 && wi.dev_limit == 6ull << 30 && wi.h2d_bytes == 11u << 20 &&
              wi.d2h_bytes == 5u << 20 && wi.dev_evicted == 4);

    tsr__msg_pack_shutdown(&b, &(tsr__msg_shutdown){0});
    int cl = dial(t.port);
    msgpack_sbuffer c;
    msgpack_sbuffer_init(&c);
    send_hello(cl, &c, TSR_PROTOCOL_VERSION, "client", NULL);
    send_frame(cl, &b, NULL, 0);
    expect_closed(cl);
    expect_closed(gpu);
    expect_closed(cpu);
    close(cl);
    close(gpu);
    close(cpu);
    close(mon);
    pthread_join(t.th, NULL);
    cr_assert_eq(t.rc, 0);
    tsr_scheduler_free(t.s);
    msgpack_sbuffer_destroy(&c);
    msgpack_sbuffer_destroy(&b);
    msgpack_unpacked_destroy(&up);
}

/* The monitor's view of worker `name`, asked for until it has read what `ready` waits for (the
 * worker's report and the monitor's request travel on different connections). */
static void await_winfo(int mon, const char *name, int (*ready)(const tsr__m_winfo *),
                        msgpack_unpacked *up, char *buf, size_t cap, tsr__msg *m,
                        tsr__m_winfo *wi) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    for (int tries = 0; tries < 1000; tries++) {
        tsr__msg_pack_info(&b, &(tsr__msg_info){0});
        send_frame(mon, &b, NULL, 0);
        expect_type(mon, "info", up, buf, cap, m);
        find_winfo(m, name, wi);
        if (ready(wi)) break;
        usleep(2000);
    }
    msgpack_sbuffer_destroy(&b);
    cr_assert(ready(wi), "the monitor never saw it");
}

static int is_paused(const tsr__m_winfo *wi) {
    return TSR__M_HAS(winfo, wi, paused) && wi->paused;
}

/* A done with no items and st {paused: true} is accepted (the worker stays connected), reaches
 * monitors, and holds back the worker's work; the one with paused: false sends it at once. */
Test(sched_socket, a_paused_worker_gets_work_when_it_resumes, .timeout = 30) {
    srv_thread t = {.rc = -1};
    start_sched(&t);
    static char buf[1 << 16];
    tsr__msg m;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);

    int cl = dial(t.port);
    send_hello(cl, &b, TSR_PROTOCOL_VERSION, "client", NULL);
    expect_type(cl, "welcome", &up, buf, sizeof buf, &m);
    int wk = dial(t.port);
    send_hello(wk, &b, TSR_PROTOCOL_VERSION, "worker", "127.0.0.1:1");
    expect_type(wk, "welcome", &up, buf, sizeof buf, &m);
    int mon = dial(t.port);
    send_hello(mon, &b, TSR_PROTOCOL_VERSION, "monitor", NULL);
    expect_type(mon, "welcome", &up, buf, sizeof buf, &m);
    expect_type(mon, "info", &up, buf, sizeof buf, &m);
    tsr__m_winfo wi;
    find_winfo(&m, "test", &wi);
    cr_assert_not(TSR__M_HAS(winfo, &wi, paused), "no disk tier reported yet");

    /* The worker pauses: {t:"done", items:[], st:{spilled_bytes, disk_bytes, paused:true}}. */
    tsr__msg_done d = {.items = {.n = 0}};
    d.st = (tsr__m_wstats){.spilled_bytes = 5u << 20, .disk_bytes = 5u << 20, .paused = 1};
    d.st.has = TSR__M_BIT(wstats, spilled_bytes) | TSR__M_BIT(wstats, disk_bytes) |
               TSR__M_BIT(wstats, paused);
    TSR__MSG_SET(done, &d, st);
    tsr__msg_pack_done(&b, &d);
    send_frame(wk, &b, NULL, 0);
    await_winfo(mon, "test", is_paused, &up, buf, sizeof buf, &m, &wi);
    cr_assert(wi.spilled_bytes == 5u << 20 && wi.disk_bytes == 5u << 20 &&
              TSR__M_HAS(winfo, &wi, unspilled_bytes) && wi.unspilled_bytes == 0);

    /* A two-task graph: accepted, queued for the paused worker, not sent. */
    msgpack_sbuffer g;
    msgpack_sbuffer_init(&g);
    pack_graph(&g, 0);
    tsr__msg_submit sub = {.n = g.size};
    TSR__MSG_SET(submit, &sub, n);
    tsr__msg_pack_submit(&b, &sub);
    send_frame(cl, &b, g.data, g.size);
    expect_type(cl, "accepted", &up, buf, sizeof buf, &m);
    uint32_t job = m.u.accepted.job;
    tsr__msg_pack_info(&b, &(tsr__msg_info){0});
    send_frame(mon, &b, NULL, 0); /* read after the submit's turn: its flush is done */
    expect_type(mon, "info", &up, buf, sizeof buf, &m);
    find_winfo(&m, "test", &wi);
    cr_assert(wi.running == 0 && wi.queued == 1, "running %llu, queued %llu",
              (unsigned long long)wi.running, (unsigned long long)wi.queued);

    /* It resumes: the compute follows at once, and the job runs as usual. */
    d.st.paused = 0;
    tsr__msg_pack_done(&b, &d);
    send_frame(wk, &b, NULL, 0);
    for (int task = 0; task < 2; task++) {
        expect_type(wk, "compute", &up, buf, sizeof buf, &m);
        tsr__m_task tk;
        cr_assert_eq(TSR__LIST_GET(&m.u.compute.tasks, task, 0, &tk), 0);
        cr_assert_eq(tk.id, (uint32_t)task);
        tsr__m_done_item it = {.job = job, .id = (uint32_t)task, .nbytes = 64};
        tsr__msg_pack_done(&b, &(tsr__msg_done){.items = {.n = 1, .v = &it}});
        send_frame(wk, &b, NULL, 0);
    }
    for (;;) {
        cr_assert_eq(recv_frame(cl, &up, buf, sizeof buf), 0);
        cr_assert_eq(tsr__msg_decode(&up.data, &m, NULL, 0), 0);
        if (m.type == TSR__MSG_finished) break;
        cr_assert_eq(m.type, TSR__MSG_progress);
    }
    /* finished's stats carry the worker's disk tier as it last reported it. */
    tsr__m_worker_stat ws;
    cr_assert_eq(m.u.finished.stats.workers.n, 1);
    cr_assert_eq(TSR__LIST_GET(&m.u.finished.stats.workers, worker_stat, 0, &ws), 0);
    cr_assert(TSR__M_HAS(worker_stat, &ws, paused) && ws.paused == 0 &&
              ws.spilled_bytes == 5u << 20 && ws.disk_bytes == 5u << 20);

    tsr__msg_pack_shutdown(&b, &(tsr__msg_shutdown){0});
    send_frame(cl, &b, NULL, 0);
    expect_closed(wk);
    expect_closed(cl);
    close(wk);
    close(cl);
    close(mon);
    pthread_join(t.th, NULL);
    cr_assert_eq(t.rc, 0);
    tsr_scheduler_free(t.s);
    msgpack_sbuffer_destroy(&g);
    msgpack_sbuffer_destroy(&b);
    msgpack_unpacked_destroy(&up);
}

/* ---- the handshake (wire/auth.c, docs/security.md) ---- */

/* HMAC-SHA256(key, msg), computed here with libsodium's one-shot API as the reference for the
 * layouts docs/PROTOCOL.md gives ("Handshake"). */
static void ref_hmac(const void *key, size_t keylen, const void *msg, size_t len, uint8_t *out) {
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, msg, len);
    crypto_auth_hmacsha256_final(&st, out);
}

/* A scheduler with a token refuses a hello that does not prove it (none, or a wrong one) with
 * "authentication failed", and welcomes one that does with its own proof: HMAC(token,
 * "tessera server\0" || snonce || cnonce). A worker's welcome carries the capability key, masked
 * by HMAC(token, "tessera ckey\0" || snonce || cnonce), and the client's accepted carries
 * HMAC(ckey, "tessera-cap\0" || job as 4 big-endian bytes). */
Test(sched_socket, the_token_is_proven_never_sent, .timeout = 30) {
    srv_thread t = {.rc = -1};
    start_sched(&t);
    static char buf[1 << 16];
    tsr__msg m;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    char msg[200];

    /* No proof at all, then a proof made with the wrong token: refused, closed. */
    for (int k = 0; k < 2; k++) {
        int fd = dial(t.port);
        tsr__msg_hello h = {.v = TSR_PROTOCOL_VERSION,
                            .role = tsr__str_of("worker"),
                            .threads = 1,
                            .addr = tsr__str_of("127.0.0.1:1")};
        h.has = TSR__MSG_BIT(hello, threads) | TSR__MSG_BIT(hello, addr);
        send_hello_as(fd, &b, &h, k == 0 ? NULL : "not-the-token");
        expect_type(fd, "error", &up, buf, sizeof buf, &m);
        tsr__str_copy(msg, sizeof msg, m.u.error.msg);
        cr_assert(strstr(msg, "authentication failed"), "%s", msg);
        expect_closed(fd);
        close(fd);
    }
    /* A proof for another role does not pass either (the role is under the MAC). */
    int fd = dial(t.port);
    {
        static tsr__conn fake;
        memset(&fake, 0, sizeof fake);
        fake.auth.secret = TEST_TOKEN;
        memcpy(fake.auth.snonce, nonces[fd], 32);
        fake.auth.have_snonce = 1;
        tsr__msg_hello h = {.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("client")};
        tsr__auth_sign_hello(&fake, &h);
        h.role = tsr__str_of("monitor");
        tsr__msg_pack_hello(&b, &h);
        send_frame(fd, &b, NULL, 0);
        expect_type(fd, "error", &up, buf, sizeof buf, &m);
        expect_closed(fd);
        close(fd);
    }

    /* The right token: the welcome proves the scheduler holds it too. */
    int wk = dial(t.port);
    tsr__msg_hello h = {.v = TSR_PROTOCOL_VERSION,
                        .role = tsr__str_of("worker"),
                        .threads = 1,
                        .addr = tsr__str_of("127.0.0.1:1")};
    h.has = TSR__MSG_BIT(hello, threads) | TSR__MSG_BIT(hello, addr);
    static tsr__conn fake;
    memset(&fake, 0, sizeof fake);
    fake.auth.secret = TEST_TOKEN;
    memcpy(fake.auth.snonce, nonces[wk], 32);
    fake.auth.have_snonce = 1;
    tsr__auth_sign_hello(&fake, &h);
    uint8_t cnonce[32];
    memcpy(cnonce, h.cnonce.p, 32);
    /* The hello carries no token, only the MAC. */
    tsr__msg_pack_hello(&b, &h);
    cr_assert_null(memmem(b.data, b.size, TEST_TOKEN, strlen(TEST_TOKEN)));
    send_frame(wk, &b, NULL, 0);
    expect_type(wk, "welcome", &up, buf, sizeof buf, &m);
    uint8_t in[64 + 16], want[32], pad[32], ckey[32];
    memcpy(in, "tessera server", 15);
    memcpy(in + 15, nonces[wk], 32);
    memcpy(in + 47, cnonce, 32);
    ref_hmac(TEST_TOKEN, strlen(TEST_TOKEN), in, 79, want);
    cr_assert(TSR__MSG_HAS(welcome, &m.u.welcome, mac) && m.u.welcome.mac.n == 32 &&
              memcmp(m.u.welcome.mac.p, want, 32) == 0);
    memcpy(in, "tessera ckey", 13);
    memcpy(in + 13, nonces[wk], 32);
    memcpy(in + 45, cnonce, 32);
    ref_hmac(TEST_TOKEN, strlen(TEST_TOKEN), in, 77, pad);
    cr_assert(TSR__MSG_HAS(welcome, &m.u.welcome, ckey) && m.u.welcome.ckey.n == 32);
    for (int i = 0; i < 32; i++) ckey[i] = (uint8_t)m.u.welcome.ckey.p[i] ^ pad[i];

    /* The client's job capability, from the key the worker got. */
    int cl = dial(t.port);
    send_hello(cl, &b, TSR_PROTOCOL_VERSION, "client", NULL);
    expect_type(cl, "welcome", &up, buf, sizeof buf, &m);
    cr_assert(!TSR__MSG_HAS(welcome, &m.u.welcome, ckey), "a client gets no capability key");
    msgpack_sbuffer g;
    msgpack_sbuffer_init(&g);
    pack_graph(&g, 0);
    tsr__msg_submit sub = {.n = g.size};
    TSR__MSG_SET(submit, &sub, n);
    tsr__msg_pack_submit(&b, &sub);
    send_frame(cl, &b, g.data, g.size);
    expect_type(cl, "accepted", &up, buf, sizeof buf, &m);
    uint32_t job = m.u.accepted.job;
    uint8_t capmsg[16] = "tessera-cap", cap[32];
    capmsg[12] = (uint8_t)(job >> 24);
    capmsg[13] = (uint8_t)(job >> 16);
    capmsg[14] = (uint8_t)(job >> 8);
    capmsg[15] = (uint8_t)job;
    ref_hmac(ckey, 32, capmsg, 16, cap);
    cr_assert(TSR__MSG_HAS(accepted, &m.u.accepted, cap) && m.u.accepted.cap.n == 32 &&
              memcmp(m.u.accepted.cap.p, cap, 32) == 0);

    /* The token's holder may stop the cluster. */
    tsr__msg_pack_shutdown(&b, &(tsr__msg_shutdown){0});
    send_frame(cl, &b, NULL, 0);
    expect_closed(cl);
    close(cl);
    close(wk);
    pthread_join(t.th, NULL);
    cr_assert_eq(t.rc, 0);
    tsr_scheduler_free(t.s);
    msgpack_sbuffer_destroy(&g);
    msgpack_sbuffer_destroy(&b);
    msgpack_unpacked_destroy(&up);
}

/* A scheduler without a token (loopback, started by hand) serves clients that prove nothing,
 * as SPEC §4 says, but nobody can prove to own it: a client's shutdown is refused, and it
 * keeps serving. */
Test(sched_socket, without_a_token_shutdown_is_refused, .timeout = 30) {
    srv_thread t = {.rc = -1};
    start_sched_token(&t, NULL);
    static char buf[1 << 16];
    tsr__msg m;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    int cl = dial(t.port);
    tsr__msg_hello h = {.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("client")};
    send_hello_as(cl, &b, &h, NULL);
    expect_type(cl, "welcome", &up, buf, sizeof buf, &m);
    cr_assert(!TSR__MSG_HAS(welcome, &m.u.welcome, mac));
    tsr__msg_pack_shutdown(&b, &(tsr__msg_shutdown){0});
    send_frame(cl, &b, NULL, 0);
    expect_type(cl, "error", &up, buf, sizeof buf, &m);
    char msg[200];
    tsr__str_copy(msg, sizeof msg, m.u.error.msg);
    cr_assert(strstr(msg, "shutdown refused"), "%s", msg);
    tsr__msg_pack_wait_workers(&b, &(tsr__msg_wait_workers){.count = 0});
    send_frame(cl, &b, NULL, 0);
    expect_type(cl, "workers", &up, buf, sizeof buf, &m); /* still serving */
    tsr_scheduler_stop(t.s);
    expect_closed(cl);
    close(cl);
    pthread_join(t.th, NULL);
    cr_assert_eq(t.rc, 0);
    tsr_scheduler_free(t.s);
    msgpack_sbuffer_destroy(&b);
    msgpack_unpacked_destroy(&up);
}
