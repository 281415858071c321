/* Authentication and isolation with real processes (docs/security.md): a wrong token is refused
 * on the scheduler's port and on a worker's peer port; a local cluster (`tessera run`'s) has a
 * secret no other local process holds, so it cannot join, fetch from or stop it, and the secret
 * is not in any child's command line; a worker's peer port serves a job's chunks only to the
 * holder of that job's capability; a crafted `load` cannot read /etc/passwd or leave the data
 * roots; a cluster started by hand on loopback without a token still works. Raw connections are
 * plain sockets speaking docs/PROTOCOL.md, signed with wire/auth.c's functions where they
 * should hold the secret. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "array/array.h"
#include "array/client.h"
#include "client/client.h"
#include "harness.h"
#include "tessera/tessera.h"
#include "wire/auth.h"
#include "wire/msg.h"
#include "wire/wire.h"

#define TOKEN "the-right-token"

/* ---- raw connections ---- */

typedef struct raw {
    int fd;
    uint8_t snonce[32];
    msgpack_unpacked up;
    char *buf;
} raw;

static int io_all(int fd, void *p, size_t n, int rd) {
    char *c = p;
    while (n) {
        ssize_t k = rd ? recv(fd, c, n, 0) : send(fd, c, n, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The next frame's message (heartbeats skipped; payloads read and dropped); -1 when closed. */
static int raw_recv(raw *r, tsr__msg *m) {
    for (;;) {
        uint8_t len[4];
        if (io_all(r->fd, len, 4, 1)) return -1;
        uint32_t n =
            (uint32_t)len[0] << 24 | (uint32_t)len[1] << 16 | (uint32_t)len[2] << 8 | len[3];
        free(r->buf);
        r->buf = malloc(n);
        if (io_all(r->fd, r->buf, n, 1)) return -1;
        size_t off = 0;
        cr_assert_eq(msgpack_unpack_next(&r->up, r->buf, n, &off), MSGPACK_UNPACK_SUCCESS);
        char err[160];
        cr_assert_eq(tsr__msg_decode(&r->up.data, m, err, sizeof err), 0, "%s", err);
        uint64_t plen = m->type == TSR__MSG_chunk ? m->u.chunk.n : 0;
        while (plen) {
            char junk[4096];
            size_t k = plen < sizeof junk ? (size_t)plen : sizeof junk;
            if (io_all(r->fd, junk, k, 1)) return -1;
            plen -= k;
        }
        if (m->type != TSR__MSG_heartbeat) return 0;
    }
}

static void raw_send(raw *r, msgpack_sbuffer *sb) {
    uint8_t len[4] = {(uint8_t)(sb->size >> 24), (uint8_t)(sb->size >> 16),
                      (uint8_t)(sb->size >> 8), (uint8_t)sb->size};
    io_all(r->fd, len, 4, 0);
    io_all(r->fd, sb->data, sb->size, 0);
    msgpack_sbuffer_clear(sb);
}

/* Connects to "HOST:PORT" and takes the challenge every connection opens with. */
static void raw_open(raw *r, const char *addr) {
    memset(r, 0, sizeof *r);
    msgpack_unpacked_init(&r->up);
    char host[64];
    int port;
    cr_assert_eq(tsr__parse_address(addr, host, sizeof host, &port), 0);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    cr_assert_eq(connect(r->fd, (struct sockaddr *)&sa, sizeof sa), 0, "connect %s", addr);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    tsr__msg m;
    cr_assert_eq(raw_recv(r, &m), 0);
    cr_assert_eq(m.type, TSR__MSG_challenge, "the first frame is %s", tsr__msg_name(m.type));
    memcpy(r->snonce, m.u.challenge.nonce.p, 32);
}

/* Says hello as role, proving secret (NULL: no proof). Returns the reply's type; an error's
 * message goes to msg. */
static tsr__msg_type raw_hello(raw *r, const char *role, const char *secret, char *msg,
                               size_t size) {
    static tsr__conn fake; /* only its handshake state is used (wire/auth.c) */
    memset(&fake, 0, sizeof fake);
    fake.auth.secret = secret;
    memcpy(fake.auth.snonce, r->snonce, 32);
    fake.auth.have_snonce = 1;
    tsr__msg_hello h = {.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of(role)};
    if (strcmp(role, "worker") == 0) {
        h.threads = 1;
        h.addr = tsr__str_of("127.0.0.1:9");
        h.has |= TSR__MSG_BIT(hello, threads) | TSR__MSG_BIT(hello, addr);
    }
    tsr__auth_sign_hello(&fake, &h);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_hello(&sb, &h);
    raw_send(r, &sb);
    msgpack_sbuffer_destroy(&sb);
    tsr__msg m;
    if (raw_recv(r, &m) != 0) return TSR__MSG_NONE;
    if (m.type == TSR__MSG_error && msg) tsr__str_copy(msg, size, m.u.error.msg);
    return m.type;
}

static void raw_get(raw *r, uint32_t job, uint32_t id, const uint8_t *cap) {
    tsr__msg_get g = {.job = job, .id = id};
    if (cap) {
        g.cap = (tsr__str){(const char *)cap, 32};
        TSR__MSG_SET(get, &g, cap);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_get(&sb, &g);
    raw_send(r, &sb);
    msgpack_sbuffer_destroy(&sb);
}

static void raw_close(raw *r) {
    close(r->fd);
    free(r->buf);
    msgpack_unpacked_destroy(&r->up);
}

/* The reply is a close, possibly after an error: nothing else comes. */
static int raw_refused(raw *r, char *msg, size_t size) {
    tsr__msg m;
    msg[0] = 0;
    for (;;) {
        if (raw_recv(r, &m) != 0) return 1;
        if (m.type == TSR__MSG_error)
            tsr__str_copy(msg, size, m.u.error.msg);
        else if (m.type != TSR__MSG_missing)
            return 0;
    }
}

/* ---- helpers ---- */

static tsr_array *compute_fill(tsr_client *c, double v) {
    int64_t shape[1] = {1000}, chunks[1] = {250};
    tsr_array *a;
    cr_assert_eq(tsr_full(c, 1, shape, chunks, TSR_FLOAT64, v, &a), 0);
    cr_assert_eq(tsr_compute(c, &a, 1, NULL), 0, "%s", tsr_client_errmsg(c));
    double got[1000];
    cr_assert_eq(tsr_array_read(a, got, sizeof got), 0, "%s", tsr_client_errmsg(c));
    for (int i = 0; i < 1000; i++) cr_assert_eq(got[i], v);
    return a;
}

static char *token_file(const char *dir) {
    char *p = malloc(strlen(dir) + 16);
    sprintf(p, "%s/token", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, TOKEN "\n", strlen(TOKEN) + 1), (ssize_t)strlen(TOKEN) + 1);
    close(fd);
    return p;
}

static const char prog[] = "{\"tessera\": 1, \"arrays\": {\"a\": {\"op\": \"full\", \"shape\": [8],"
                           " \"value\": 2.5}}, \"outputs\": {\"a\": \"a.npy\"}}";

/* ---- the tests ---- */

/* A hand-started cluster with a token (from files): a wrong or missing token is refused on the
 * scheduler's port and on the worker's peer port, for every role, by real processes too; the
 * right one works; a client's capability opens its own job's chunks only. */
Test(auth, wrong_token_refused_on_every_port, .timeout = 120) {
    char *dir = make_tmpdir();
    char *tf = token_file(dir);
    char addr[96];
    const char *sx[] = {"--token-file", tf, NULL};
    pid_t sched = start_scheduler_with(addr, sizeof addr, sx);
    pid_t wk = start_worker_with(addr, 1, "w0", sx);
    write_file(dir, "p.json", prog);

    /* Real processes: submit and worker with a wrong token. */
    const char *bad_submit[] = {"tessera", "submit", "--no-progress", "--scheduler", addr,
                                "--token", "wrong",  "p.json",        NULL};
    proc_result r = run_cmd(dir, bad_submit, 60);
    cr_assert_eq(r.status, 1, "rc %d: %s", r.status, r.err);
    cr_assert(strstr(r.err, "authentication failed"), "%s", r.err);
    proc_result_free(&r);
    const char *bad_worker[] = {"tessera", "worker", "--scheduler", addr, "--token", "wrong", NULL};
    r = run_cmd(dir, bad_worker, 60);
    cr_assert_neq(r.status, 0);
    cr_assert(strstr(r.err, "authentication failed"), "%s", r.err);
    proc_result_free(&r);
    const char *good_submit[] = {"tessera",      "submit", "--no-progress", "--scheduler", addr,
                                 "--token-file", tf,       "p.json",        NULL};
    r = run_cmd(dir, good_submit, 60);
    cr_assert_eq(r.status, 0, "%s", r.err);
    proc_result_free(&r);
    char path[512];
    snprintf(path, sizeof path, "%s/a.npy", dir);
    npy_data d;
    cr_assert_eq(read_npy(path, &d), 0);
    cr_assert(d.n == 8 && d.v[0] == 2.5 && d.v[7] == 2.5);
    npy_free(&d);

    /* The scheduler's port, raw: no proof and a wrong one, as each role. */
    const char *roles[] = {"client", "worker", "monitor"};
    char msg[200];
    for (int k = 0; k < 3; k++)
        for (int bad = 0; bad < 2; bad++) {
            raw x;
            raw_open(&x, addr);
            cr_assert_eq(raw_hello(&x, roles[k], bad ? "wrong" : NULL, msg, sizeof msg),
                         TSR__MSG_error);
            cr_assert(strstr(msg, "authentication failed"), "%s: %s", roles[k], msg);
            cr_assert(raw_refused(&x, msg, sizeof msg));
            raw_close(&x);
        }

    /* Two clients with the token, a job each. */
    tsr_client_options co;
    tsr_client_options_default(&co);
    co.token = TOKEN;
    tsr_client *c1, *c2;
    cr_assert_eq(tsr_client_connect(addr, &co, &c1), 0, "%s", tsr_last_error());
    cr_assert_eq(tsr_client_connect(addr, &co, &c2), 0, "%s", tsr_last_error());
    tsr_array *a1 = compute_fill(c1, 1.5), *a2 = compute_fill(c2, 7.0);
    uint32_t job1 = (uint32_t)a1->computed.job, job2 = (uint32_t)a2->computed.job;
    cr_assert_neq(job1, job2);
    const char *peer = a1->computed.addr[0];
    uint8_t cap1[32];
    cr_assert_eq(tsr__client_get_cap(c1, job1, cap1), 0, "the scheduler gave no capability");

    /* The worker's peer port: no proof or a wrong one is refused. */
    for (int bad = 0; bad < 2; bad++) {
        raw x;
        raw_open(&x, peer);
        cr_assert_eq(raw_hello(&x, "peer", bad ? "wrong" : NULL, msg, sizeof msg), TSR__MSG_error);
        cr_assert(strstr(msg, "authentication failed"), "%s", msg);
        raw_close(&x);
    }
    /* With the token: job 1's chunk with job 1's capability is served; without one, or with
     * job 1's for job 2, refused and closed. */
    for (int k = 0; k < 3; k++) {
        raw x;
        raw_open(&x, peer);
        cr_assert_eq(raw_hello(&x, "peer", TOKEN, NULL, 0), TSR__MSG_welcome);
        uint32_t id = a1->computed.task[0];
        if (k == 0) {
            raw_get(&x, job1, id, cap1);
            tsr__msg m;
            cr_assert_eq(raw_recv(&x, &m), 0);
            cr_assert_eq(m.type, TSR__MSG_chunk);
        } else {
            raw_get(&x, k == 1 ? job1 : job2, k == 1 ? id : a2->computed.task[0],
                    k == 1 ? NULL : cap1);
            cr_assert(raw_refused(&x, msg, sizeof msg));
            cr_assert(strstr(msg, "capability"), "%s", msg);
        }
        raw_close(&x);
    }
    /* The owners still read their own. */
    double got[1000];
    cr_assert_eq(tsr_array_read(a2, got, sizeof got), 0, "%s", tsr_client_errmsg(c2));
    cr_assert_eq(got[999], 7.0);
    tsr_array_free(a1);
    tsr_array_free(a2);
    tsr_client_free(c1);
    tsr_client_free(c2);
    stop_proc(wk);
    stop_proc(sched);
    free(tf);
    remove_tmpdir(dir);
}

static int contains(const char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return 1;
    return 0;
}

/* The local cluster `tessera run` starts has a secret of its own: another local process that
 * does not hold it cannot submit, register as a worker, stop the cluster or fetch its chunks,
 * and the secret appears in no child's command line (world-readable /proc/PID/cmdline). */
Test(auth, a_local_cluster_is_private, .timeout = 120) {
    char *dir = make_tmpdir();
    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.workers = 1;
    lo.threads = 1;
    lo.tessera_path = tessera_exe();
    lo.memory_limit = -1;
    tsr_client *c;
    cr_assert_eq(tsr_client_start_local(&lo, &c), 0, "%s", tsr_last_error());
    cr_assert(c->token[0], "the local cluster has no secret");
    cr_assert_eq(strlen(c->token), 64);

    const pid_t *pids;
    int npids = tsr__local_pids(c, &pids);
    cr_assert_eq(npids, 2, "a scheduler and a worker");
    for (int k = 0; k < npids; k++) {
        char p[64], buf[4096];
        snprintf(p, sizeof p, "/proc/%d/cmdline", (int)pids[k]);
        int fd = open(p, O_RDONLY);
        cr_assert_geq(fd, 0);
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        cr_assert_gt(n, 0);
        buf[n] = 0;
        cr_assert(!contains(buf, (size_t)n, c->token), "the secret is in %s", p);
        int file = 0;
        for (char *arg = buf; arg < buf + n; arg += strlen(arg) + 1) {
            cr_assert_str_neq(arg, "--token", "--token in %s", p);
            file |= strcmp(arg, "--token-file") == 0;
        }
        cr_assert(file, "no --token-file in %s", p);
    }

    tsr_array *a = compute_fill(c, 3.25);
    const char *addr = c->address, *peer = a->computed.addr[0];
    write_file(dir, "p.json", prog);
    const char *submit[] = {"tessera", "submit", "--no-progress", "--scheduler", addr,
                            "p.json",  NULL};
    proc_result r = run_cmd(dir, submit, 60);
    cr_assert_eq(r.status, 1, "a process without the secret submitted: %s", r.err);
    cr_assert(strstr(r.err, "authentication failed"), "%s", r.err);
    proc_result_free(&r);
    const char *worker[] = {"tessera", "worker", "--scheduler", addr, NULL};
    r = run_cmd(dir, worker, 60);
    cr_assert_neq(r.status, 0, "a process without the secret joined as a worker");
    proc_result_free(&r);
    const char *top[] = {"tessera", "top",        "--scheduler", addr,
                         "--once",  "--interval", "0.1",         NULL};
    r = run_cmd(dir, top, 60);
    cr_assert_neq(r.status, 0, "a process without the secret watched the cluster");
    proc_result_free(&r);

    /* Raw: a shutdown after a hello that proves nothing is never acted on; a get on the peer
     * port is refused. */
    char msg[200];
    raw x;
    raw_open(&x, addr);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_hello(
        &sb, &(tsr__msg_hello){.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("client")});
    raw_send(&x, &sb);
    tsr__msg_pack_shutdown(&sb, &(tsr__msg_shutdown){0});
    raw_send(&x, &sb);
    msgpack_sbuffer_destroy(&sb);
    cr_assert(raw_refused(&x, msg, sizeof msg));
    cr_assert(strstr(msg, "authentication failed"), "%s", msg);
    raw_close(&x);
    raw_open(&x, peer);
    cr_assert_eq(raw_hello(&x, "peer", NULL, msg, sizeof msg), TSR__MSG_error);
    raw_close(&x);

    /* The cluster is still there for its owner. */
    double got[1000];
    cr_assert_eq(tsr_array_read(a, got, sizeof got), 0, "%s", tsr_client_errmsg(c));
    cr_assert_eq(got[0], 3.25);
    tsr_array *b = compute_fill(c, -1.0);
    tsr_array_free(b);
    tsr_array_free(a);
    tsr_client_free(c);
    remove_tmpdir(dir);
}

/* What a crafted `load` read before: the array's file becomes a link to /etc/passwd after the
 * client read its header. A worker without data roots (no token: any path) refuses it since
 * /etc/passwd is no .npy; one with a data root refuses a link leading out of it, and a
 * directory link too. The workers live on, and a cluster started by hand on loopback without a
 * token works as before. */
Test(auth, load_reads_only_matching_npy_under_the_roots, .timeout = 120) {
    char *dir = make_tmpdir();
    char root[600], out[600], p[700], q[700];
    snprintf(root, sizeof root, "%s/root", dir);
    snprintf(out, sizeof out, "%s/outside", dir);
    cr_assert_eq(mkdir(root, 0700), 0);
    cr_assert_eq(mkdir(out, 0700), 0);
    /* A .npy of 64 float64 (512 bytes of data). */
    char hdr[128];
    int hl = tsr__npy_format_header(TSR_FLOAT64, 1, (int64_t[]){64}, hdr, sizeof hdr);
    cr_assert_gt(hl, 0);
    double v[64];
    for (int i = 0; i < 64; i++) v[i] = i;
    const char *names[] = {"root/x.npy", "root/y.npy", "outside/z.npy"};
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[k]);
        FILE *f = fopen(p, "wb");
        fwrite(hdr, 1, (size_t)hl, f);
        fwrite(v, 1, sizeof v, f);
        fclose(f);
    }

    char addr[96];
    pid_t sched = start_scheduler(addr, sizeof addr);
    const char *rx[] = {"--data-root", root, NULL};
    for (int wroot = 0; wroot < 2; wroot++) {
        pid_t wk =
            wroot ? start_worker_with(addr, 1, "rooted", rx) : start_worker(addr, 1, "any", NULL);
        tsr_client *c;
        cr_assert_eq(tsr_client_connect(addr, NULL, &c), 0, "%s", tsr_last_error());
        for (int k = 0; k < (wroot ? 2 : 1); k++) {
            tsr_array *a;
            snprintf(p, sizeof p, "%s/root/x.npy", dir);
            cr_assert_eq(tsr_load_npy(c, p, (int64_t[]){64}, &a), 0, "%s", tsr_client_errmsg(c));
            /* The swap after the header was read: /etc/passwd, or a .npy outside the root with
             * the very header the task expects. */
            unlink(p);
            snprintf(q, sizeof q, "%s/z.npy", out);
            cr_assert_eq(symlink(k == 0 ? "/etc/passwd" : q, p), 0);
            cr_assert_neq(tsr_compute(c, &a, 1, NULL), 0, "case %d was read", k);
            const char *e = tsr_client_errmsg(c);
            cr_assert(strstr(e, wroot ? "outside this worker's data roots" : "not a .npy file"),
                      "case %d: %s", k, e);
            tsr_array_free(a);
            unlink(p);
            FILE *f = fopen(p, "wb");
            fwrite(hdr, 1, (size_t)hl, f);
            fwrite(v, 1, sizeof v, f);
            fclose(f);
        }
        /* Through a directory link: the client resolves it to outside/, which the rooted worker
         * refuses. */
        if (wroot) {
            snprintf(q, sizeof q, "%s/sub", root);
            cr_assert_eq(symlink(out, q), 0);
            snprintf(p, sizeof p, "%s/sub/z.npy", root);
            tsr_array *a;
            cr_assert_eq(tsr_load_npy(c, p, NULL, &a), 0, "%s", tsr_client_errmsg(c));
            cr_assert_neq(tsr_compute(c, &a, 1, NULL), 0);
            cr_assert(strstr(tsr_client_errmsg(c), "data roots"), "%s", tsr_client_errmsg(c));
            tsr_array_free(a);
        }
        /* The worker lives on: the real file is read, byte for byte. */
        snprintf(p, sizeof p, "%s/root/x.npy", dir);
        tsr_array *a;
        cr_assert_eq(tsr_load_npy(c, p, (int64_t[]){16}, &a), 0);
        cr_assert_eq(tsr_compute(c, &a, 1, NULL), 0, "%s", tsr_client_errmsg(c));
        double got[64];
        cr_assert_eq(tsr_array_read(a, got, sizeof got), 0);
        cr_assert_eq(memcmp(got, v, sizeof v), 0);
        tsr_array_free(a);
        tsr_client_free(c);
        cr_assert_eq(stop_proc(wk), 0);
    }
    stop_proc(sched);
    remove_tmpdir(dir);
}

/* --token-file wherever --token is: a file that cannot be read, or holds no token, is a bad
 * command line (exit 2) naming the file; a missing data root stops a worker at start. */
Test(auth, bad_token_files_and_roots, .timeout = 60) {
    char *dir = make_tmpdir();
    write_file(dir, "empty", "\n");
    char empty[600];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    const char *cmds[] = {"scheduler", "worker", "submit", "top"};
    const char *files[] = {"/nonexistent/token", empty};
    for (int i = 0; i < 4; i++)
        for (int f = 0; f < 2; f++) {
            const char *argv[] = {"tessera",     cmds[i],       "--token-file", files[f],
                                  "--scheduler", "127.0.0.1:1", "x.json",       NULL};
            if (i == 0) argv[4] = NULL; /* the scheduler takes neither */
            proc_result r = run_cmd(dir, argv, 20);
            cr_assert_eq(r.status, 2, "%s --token-file %s: %d %s", cmds[i], files[f], r.status,
                         r.err);
            cr_assert(strstr(r.err, files[f]), "%s: %s", cmds[i], r.err);
            proc_result_free(&r);
        }
    const char *w[] = {"tessera",           "worker", "--scheduler", "127.0.0.1:1", "--data-root",
                       "/nonexistent/root", NULL};
    proc_result r = run_cmd(dir, w, 20);
    cr_assert_neq(r.status, 0);
    cr_assert(strstr(r.err, "/nonexistent/root"), "%s", r.err);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

/* Mutual: a client or worker holding a token refuses a scheduler that cannot prove it (one
 * without a token, such as a process that took over the port), and sends it nothing else. */
Test(auth, the_server_must_prove_the_token_too, .timeout = 60) {
    char addr[96];
    pid_t sched = start_scheduler(addr, sizeof addr);
    tsr_client_options co;
    tsr_client_options_default(&co);
    co.token = TOKEN;
    tsr_client *c = NULL;
    cr_assert_eq(tsr_client_connect(addr, &co, &c), TSR_EAUTH);
    cr_assert_null(c);
    cr_assert(strstr(tsr_last_error(), "does not prove it holds the token"), "%s",
              tsr_last_error());
    const char *w[] = {"tessera", "worker", "--scheduler", addr, "--token", TOKEN, NULL};
    proc_result r = run_cmd(NULL, w, 30);
    cr_assert_neq(r.status, 0);
    cr_assert(strstr(r.err, "does not prove it holds the token"), "%s", r.err);
    proc_result_free(&r);
    /* Without a token, the same scheduler serves. */
    pid_t wk = start_worker(addr, 1, "w", NULL);
    cr_assert_eq(tsr_client_connect(addr, NULL, &c), 0, "%s", tsr_last_error());
    tsr_array *a = compute_fill(c, 0.5);
    tsr_array_free(a);
    tsr_client_free(c);
    stop_proc(wk);
    stop_proc(sched);
}
