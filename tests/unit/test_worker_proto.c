/* The worker's side of the newer compute contract (PROTOCOL.md): donated inputs (written in
 * place where the kernel allows and nobody else holds the buffer, dropped from the store
 * either way), inputs recomputed locally from their descriptor and kept as replicas, and the
 * `st` figures on every done. One real worker per test, a blocking fake scheduler, and peer
 * connections to read what the worker holds. */
#include <math.h>

#include "kernels/kernels.h"
#include "worker_fixture.h"

TestSuite(worker_proto, .timeout = 60);

/* ---- Messages -------------------------------------------------------------------------------- */

/* An input entry: [id, addr|nil], [id, addr|nil, flags] or [id, nil, flags, kdesc]. */
typedef struct tin {
    uint64_t id;
    const char *addr;
    int flags;
    const tsr_kdesc *kd; /* RECOMPUTE's descriptor, or NULL */
    int uses;            /* tasks that still need the input, sent when > 0 */
} tin;

/* A compute message being built by the fake scheduler: tasks are added one at a time (their
 * descriptors packed at once, as they may live on the caller's stack) and sent by
 * send_compute through the message layer. One at a time per test process. */
typedef struct ctask {
    uint32_t id;
    msgpack_sbuffer kd;
    int nin;
    tin ins[4];
    msgpack_sbuffer ikd[4];
} ctask;

static struct {
    uint64_t job;
    int has_trace, trace;
    size_t want, n;
    ctask t[64];
    const ctask *cur; /* the task whose inputs are being generated */
} cb;

static msgpack_sbuffer kdesc_bin(const tsr_kdesc *d) {
    msgpack_sbuffer kb;
    msgpack_packer kp;
    packer_start(&kb, &kp);
    cr_assert_eq(tsr__kdesc_pack(&kp, d), 0);
    return kb;
}

static void start_traced_compute(uint64_t job, size_t ntasks, int trace) {
    cr_assert_leq(ntasks, 64);
    cb.job = job;
    cb.has_trace = 1;
    cb.trace = trace;
    cb.want = ntasks;
    cb.n = 0;
}

static void start_compute(uint64_t job, size_t ntasks) {
    start_traced_compute(job, ntasks, 0);
    cb.has_trace = 0;
}

static void add_task(uint64_t id, const tsr_kdesc *d, int nin, const tin *ins) {
    cr_assert(cb.n < cb.want && nin <= 4);
    ctask *t = &cb.t[cb.n++];
    t->id = (uint32_t)id;
    t->kd = kdesc_bin(d);
    t->nin = nin;
    for (int k = 0; k < nin; k++) {
        t->ins[k] = ins[k];
        if (ins[k].kd) t->ikd[k] = kdesc_bin(ins[k].kd);
    }
}

static void gen_input(void *ctx, uint32_t k, void *elem) {
    (void)ctx;
    const ctask *t = cb.cur;
    const tin *in = &t->ins[k];
    tsr__m_input *e = elem;
    e->id = (uint32_t)in->id;
    if (in->addr) {
        e->addr = tsr__str_of(in->addr);
        e->has |= TSR__M_BIT(input, addr);
    }
    if (in->kd || in->flags) {
        e->flags = (uint64_t)in->flags;
        e->has |= TSR__M_BIT(input, flags);
    }
    if (in->kd) {
        e->kdesc = (tsr__str){t->ikd[k].data, (uint32_t)t->ikd[k].size};
        e->has |= TSR__M_BIT(input, kdesc);
    }
    if (in->uses > 0) {
        e->uses = (uint32_t)in->uses;
        e->has |= TSR__M_BIT(input, uses);
    }
}

static void gen_task(void *ctx, uint32_t i, void *elem) {
    (void)ctx;
    const ctask *t = &cb.t[i];
    cb.cur = t;
    *(tsr__m_task *)elem = (tsr__m_task){
        .id = t->id,
        .kdesc = {t->kd.data, (uint32_t)t->kd.size},
        .inputs = {.n = (uint32_t)t->nin, .gen = gen_input},
    };
}

static void send_compute(int fd) {
    cr_assert_eq(cb.n, cb.want);
    tsr__msg_compute m = {.job = (uint32_t)cb.job,
                          .trace = cb.trace,
                          .tasks = {.n = (uint32_t)cb.n, .gen = gen_task}};
    if (cb.has_trace) m.has |= TSR__MSG_BIT(compute, trace);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_compute(&sb, &m);
    put_frame(fd, &sb);
    for (size_t i = 0; i < cb.n; i++) {
        msgpack_sbuffer_destroy(&cb.t[i].kd);
        for (int k = 0; k < cb.t[i].nin; k++)
            if (cb.t[i].ins[k].kd) msgpack_sbuffer_destroy(&cb.t[i].ikd[k]);
    }
    cb.n = cb.want = 0;
}

/* One task in its own compute message. */
static void send_task(wsession *s, uint64_t job, uint64_t id, const tsr_kdesc *d, int nin,
                      const tin *ins) {
    start_compute(job, 1);
    add_task(id, d, nin, ins);
    send_compute(s->fd);
}

static void send_free(wsession *s, uint64_t job, const uint64_t *ids, int n) {
    tsr__m_key keys[64];
    cr_assert_leq(n, 64);
    for (int k = 0; k < n; k++)
        keys[k] = (tsr__m_key){.job = (uint32_t)job, .id = (uint32_t)ids[k]};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_free(&sb, &(tsr__msg_free){.keys = {.n = (uint32_t)n, .v = keys}});
    put_frame(s->fd, &sb);
}

/* ---- Reading outcomes ------------------------------------------------------------------------ */

typedef struct wst {
    uint64_t rss_peak, rss, chunk_bytes, chunk_peak, tasks, in_bytes, out_bytes;
    double busy_s, in_s;
} wst;

static uint64_t st_u64(const msgpack_object *st, const char *key) {
    uint64_t v = 0;
    cr_assert_eq(tsr__mp_get_uint(st, key, &v), 0, "st.%s missing or not a count", key);
    return v;
}

static double st_f64(const msgpack_object *st, const char *key) {
    double v = -1;
    cr_assert_eq(tsr__mp_get_double(st, key, &v), 0, "st.%s missing", key);
    return v;
}

/* Every done carries st with all nine figures, and they hang together; and, since every worker
 * has a memory limit by default (the machine's), the disk tier's six: spilled_bytes,
 * unspilled_bytes, disk_bytes, paused, spill_s, unspill_s. */
static void read_st(const msgpack_object *hdr, wst *out) {
    const msgpack_object *st = tsr__mp_get(hdr, "st");
    cr_assert(st && st->type == MSGPACK_OBJECT_MAP, "done without st");
    cr_assert_eq(st->via.map.size, 9 + 6);
    cr_assert(tsr__mp_get(st, "paused") && tsr__mp_get(st, "spilled_bytes"));
    wst v;
    v.rss_peak = st_u64(st, "rss_peak");
    v.rss = st_u64(st, "rss");
    v.chunk_bytes = st_u64(st, "chunk_bytes");
    v.chunk_peak = st_u64(st, "chunk_peak");
    v.tasks = st_u64(st, "tasks");
    v.in_bytes = st_u64(st, "in_bytes");
    v.out_bytes = st_u64(st, "out_bytes");
    v.busy_s = st_f64(st, "busy_s");
    v.in_s = st_f64(st, "in_s");
    cr_assert(v.rss > 0 && v.rss_peak >= v.rss, "rss %llu, rss_peak %llu",
              (unsigned long long)v.rss, (unsigned long long)v.rss_peak);
    cr_assert(v.chunk_peak >= v.chunk_bytes);
    cr_assert(v.busy_s >= 0 && v.busy_s < 60 && v.in_s >= 0 && v.in_s < 60);
    *out = v;
}

/* Reads frames until the worker has reported `n` task ids (done or erred); outcomes go to
 * done[id] = 1 or erred[id] = 1 (ids < 64), the last st to *st. */
static void collect(wsession *s, int n, int *done, int *erred, char (*msgs)[256], wst *st) {
    for (int got = 0; got < n;) {
        void *payload;
        uint64_t plen;
        cr_assert_eq(get_frame(s->fd, &s->up, &payload, &plen), 0, "worker hung up");
        char type[32];
        cr_assert_eq(tsr__mp_type(&s->up.data, type, sizeof type), 0);
        if (strcmp(type, "done") == 0) {
            const msgpack_object *items = tsr__mp_get(&s->up.data, "items");
            cr_assert(items && items->type == MSGPACK_OBJECT_ARRAY);
            for (uint32_t i = 0; i < items->via.array.size; i++) {
                uint64_t id = items->via.array.ptr[i].via.array.ptr[1].via.u64;
                cr_assert(id < 64 && !done[id] && !erred[id], "id %llu reported twice",
                          (unsigned long long)id);
                done[id] = 1;
                got++;
            }
            read_st(&s->up.data, st);
        } else {
            cr_assert_str_eq(type, "erred");
            int64_t id = -1;
            cr_assert_eq(tsr__mp_get_int(&s->up.data, "id", &id), 0);
            cr_assert(id >= 0 && id < 64 && !done[id] && !erred[id]);
            erred[id] = 1;
            if (msgs) tsr__mp_get_str(&s->up.data, "msg", msgs[id], sizeof msgs[id]);
            got++;
        }
    }
}

/* Waits for n tasks that must all succeed. */
static void wait_done(wsession *s, int n, wst *st) {
    int done[64] = {0}, erred[64] = {0};
    char msgs[64][256];
    memset(msgs, 0, sizeof msgs);
    collect(s, n, done, erred, msgs, st);
    for (int id = 0; id < 64; id++) cr_assert(!erred[id], "task %d erred: %s", id, msgs[id]);
}

/* Asks the worker's peer port for (job, id): 1 with the payload (caller frees), or 0 when it
 * answers missing. */
static int peer_get(wsession *s, uint64_t job, uint64_t id, void **payload, uint64_t *plen) {
    int fd = tcp_connect(s->paddr);
    set_timeout(fd);
    peer_hello(fd, TSR_PROTOCOL_VERSION);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    char type[16];
    cr_assert_eq(get_frame(fd, &up, payload, plen), 0);
    tsr__mp_type(&up.data, type, sizeof type);
    cr_assert_str_eq(type, "welcome");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_get(&sb, &(tsr__msg_get){.job = (uint32_t)job, .id = (uint32_t)id});
    put_frame(fd, &sb);
    cr_assert_eq(get_frame(fd, &up, payload, plen), 0);
    tsr__mp_type(&up.data, type, sizeof type);
    msgpack_unpacked_destroy(&up);
    close(fd);
    if (strcmp(type, "missing") == 0) return 0;
    cr_assert_str_eq(type, "chunk");
    return 1;
}

static tsr_kdesc desc(int kop, int fn, int rows, int cols) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = (uint8_t)kop;
    d.fn = (uint8_t)fn;
    d.dtype = TSR_FLOAT64;
    d.ndim = 2;
    d.shape[0] = rows;
    d.shape[1] = cols;
    return d;
}

/* ---- Donation -------------------------------------------------------------------------------- */

enum { N = 16, CHUNK = N * N * 8 };

/* A random N x N block at block offset (r, c) of a 3N x 3N array. */
static tsr_kdesc random_block(int64_t *p, uint64_t seed, int r, int c) {
    tsr_kdesc d = desc(TSR_KOP_RANDOM, 0, N, N);
    p[0] = (int64_t)seed;
    p[1] = p[2] = 3 * N;
    p[3] = r * N;
    p[4] = c * N;
    d.ni = 5;
    d.i = p;
    return d;
}

/* C = sum_k A[0,k] @ B[k,0], computed here with the kernels, one step after another. */
static void reference_chain(double *c) {
    double a[N * N], b[N * N];
    int64_t pa[5], pb[5], sh[2] = {N, N};
    tsr_chunkview va = {.data = a, .dtype = TSR_FLOAT64, .ndim = 2, .shape = {N, N}};
    tsr_chunkview vb = {.data = b, .dtype = TSR_FLOAT64, .ndim = 2, .shape = {N, N}};
    tsr_chunkview in[3] = {va, vb, va};
    char err[256];
    double prev[N * N];
    for (int k = 0; k < 3; k++) {
        tsr_kdesc da = random_block(pa, 3, 0, k), db = random_block(pb, 4, k, 0);
        tsr_chunkview out = {.data = a, .dtype = TSR_FLOAT64, .ndim = 2, .shape = {N, N}};
        cr_assert_eq(tsr__kernel_run(&da, NULL, 0, &out, TSR_DEVICE_CPU, err, sizeof err), 0);
        out.data = b;
        cr_assert_eq(tsr__kernel_run(&db, NULL, 0, &out, TSR_DEVICE_CPU, err, sizeof err), 0);
        tsr_kdesc dm = desc(TSR_KOP_MATMUL, 0, N, N);
        (void)sh;
        memcpy(prev, c, sizeof prev);
        in[2].data = prev;
        out.data = c;
        cr_assert_eq(tsr__kernel_run(&dm, in, k ? 3 : 2, &out, TSR_DEVICE_CPU, err, sizeof err), 0,
                     "%s", err);
    }
}

/* A k-chain of three matmuls on one executor, each step sent once the previous one is done
 * (as the scheduler does), with Cprev donated or not. Donated: every step accumulates into
 * the previous partial's buffer, so the chunk bytes never exceed the six sources and one
 * partial, and the partials leave the store; not donated: two partials are alive while a step
 * runs. The bytes are the same either way, and those of the kernels run here. */
Test(worker_proto, donate_matmul_chain) {
    wsession s;
    session_start(&s, "wD", 1);
    void *result[2] = {NULL, NULL};
    wst st;
    for (int run = 0; run < 2; run++) {
        uint64_t job = 10 + (uint64_t)run;
        int donate = run == 0 ? TSR__IN_DONATE : 0;
        start_compute(job, 6);
        int64_t p[6][5];
        for (int k = 0; k < 3; k++) {
            tsr_kdesc da = random_block(p[2 * k], 3, 0, k),
                      db = random_block(p[2 * k + 1], 4, k, 0);
            add_task((uint64_t)(2 * k), &da, 0, NULL);
            add_task((uint64_t)(2 * k + 1), &db, 0, NULL);
        }
        send_compute(s.fd);
        wait_done(&s, 6, &st);
        tsr_kdesc dm = desc(TSR_KOP_MATMUL, 0, N, N);
        for (int k = 0; k < 3; k++) {
            tin ins[3] = {{(uint64_t)(2 * k), NULL, 0, NULL},
                          {(uint64_t)(2 * k + 1), NULL, 0, NULL},
                          {(uint64_t)(6 + k - 1), NULL, donate, NULL}};
            send_task(&s, job, (uint64_t)(6 + k), &dm, k ? 3 : 2, ins);
            wait_done(&s, 1, &st);
        }
        cr_assert_eq(st.tasks, 9 * (uint64_t)(run + 1), "st.tasks %llu after run %d",
                     (unsigned long long)st.tasks, run);
        if (run == 0) {
            cr_expect_eq(st.chunk_peak, 7 * CHUNK,
                         "chunk peak %llu: the chain did not "
                         "accumulate in place",
                         (unsigned long long)st.chunk_peak);
            cr_expect_eq(st.chunk_bytes, 7 * CHUNK);
        } else {
            cr_expect_eq(st.chunk_peak, 9 * CHUNK, "chunk peak %llu without donation",
                         (unsigned long long)st.chunk_peak);
        }
        uint64_t plen;
        cr_assert_eq(peer_get(&s, job, 8, &result[run], &plen), 1);
        cr_assert_eq(plen, CHUNK);
        void *p6;
        int held = peer_get(&s, job, 6, &p6, &plen);
        cr_expect_eq(held, !donate, "partial (%llu,6) %s", (unsigned long long)job,
                     donate ? "still held after its donation" : "gone without a donation");
        free(p6);
        /* Free everything, the donated keys too: unknown keys are harmless. */
        uint64_t all[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
        send_free(&s, job, all, 9);
    }
    cr_expect_eq(memcmp(result[0], result[1], CHUNK), 0, "donation changed the result");
    double want[N * N];
    memset(want, 0, sizeof want);
    reference_chain(want);
    cr_expect_eq(memcmp(result[0], want, CHUNK), 0, "the chain differs from the kernels run here");
    free(result[0]);
    free(result[1]);
    /* After the frees nothing is held. */
    tsr_kdesc fill = desc(TSR_KOP_FILL, 0, 1, 1);
    double v = 1;
    fill.nf = 1;
    fill.f = &v;
    send_task(&s, 12, 0, &fill, 0, NULL);
    wait_done(&s, 1, &st);
    cr_expect_eq(st.chunk_bytes, 8);
    session_end(&s);
}

/* A donated input that another task still holds (that task waits for a fetch from a peer
 * that answers late) must not be overwritten: the donating task gets a fresh output, the
 * input still leaves the store, and the waiting task later reads the original values. */
Test(worker_proto, donate_falls_back_when_shared) {
    wsession s;
    session_start(&s, "wE", 1);
    char paddr[64];
    int plfd = tcp_listen_any(paddr, sizeof paddr);
    tsr_kdesc fill = desc(TSR_KOP_FILL, 0, 3, 4);
    double v = 1.5;
    fill.nf = 1;
    fill.f = &v;
    send_task(&s, 7, 0, &fill, 0, NULL);
    wst st;
    wait_done(&s, 1, &st);

    msgpack_sbuffer sb;
    msgpack_packer pk;
    start_compute(7, 2);
    tsr_kdesc add = desc(TSR_KOP_BINARY, TSR_ADD, 3, 4), neg = desc(TSR_KOP_UNARY, TSR_NEG, 3, 4);
    tin t1[2] = {{0, NULL, 0, NULL}, {50, paddr, 0, NULL}},
        t2[1] = {{0, NULL, TSR__IN_DONATE, NULL}};
    add_task(1, &add, 2, t1);
    add_task(2, &neg, 1, t2);
    send_compute(s.fd);

    /* The late peer: welcome, take the get, answer only after task 2 is done. */
    int pfd = accept(plfd, NULL, NULL);
    cr_assert(pfd >= 0);
    set_timeout(pfd);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    void *payload;
    uint64_t plen;
    char type[16];
    cr_assert_eq(get_frame(pfd, &up, &payload, &plen), 0);
    tsr__mp_type(&up.data, type, sizeof type);
    cr_assert_str_eq(type, "hello");
    packer_start(&sb, &pk);
    tsr__msg_pack_welcome(&sb, &(tsr__msg_welcome){.v = TSR_PROTOCOL_VERSION, .id = 1});
    put_frame(pfd, &sb);
    cr_assert_eq(get_frame(pfd, &up, &payload, &plen), 0);
    tsr__mp_type(&up.data, type, sizeof type);
    cr_assert_str_eq(type, "get");

    int done[64] = {0}, erred[64] = {0};
    collect(&s, 1, done, erred, NULL, &st);
    cr_assert(done[2], "task 2 should finish while task 1 waits");
    void *p0;
    cr_expect_eq(peer_get(&s, 7, 0, &p0, &plen), 0, "the donated input is still stored");
    free(p0);

    packer_start(&sb, &pk);
    tsr__m_i64_item shape34[2] = {{.v = 3}, {.v = 4}};
    tsr__msg_pack_chunk(
        &sb,
        &(tsr__msg_chunk){
            .job = 7, .id = 50, .dtype = TSR_FLOAT64, .shape = {.n = 2, .v = shape34}, .n = 96});
    double two[12];
    for (int i = 0; i < 12; i++) two[i] = 2.0;
    put_frame_payload(pfd, &sb, two, sizeof two);
    collect(&s, 1, done, erred, NULL, &st);
    cr_assert(done[1]);
    cr_expect_eq(st.in_bytes, 96);
    cr_expect(st.in_s > 0, "in_s %g while a fetch was in progress", st.in_s);
    cr_expect_eq(st.tasks, 3);

    void *p1, *p2;
    cr_assert_eq(peer_get(&s, 7, 1, &p1, &plen), 1);
    cr_assert_eq(peer_get(&s, 7, 2, &p2, &plen), 1);
    for (int i = 0; i < 12; i++) {
        cr_expect_eq(((double *)p1)[i], 3.5, "task 1 read an overwritten input");
        cr_expect_eq(((double *)p2)[i], -1.5);
    }
    free(p1);
    free(p2);
    msgpack_unpacked_destroy(&up);
    close(pfd);
    close(plfd);
    session_end(&s);
}

/* ---- Recompute ------------------------------------------------------------------------------- */

/* SPEC §2's formula, written out again. */
static double spec_f64(uint64_t s, uint64_t i) {
    uint64_t z = s + (i + 1) * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

/* Two tasks in one batch need a source chunk this worker lacks: it is computed once, kept as a
 * replica (served to peers, exactly the formula's values) until a free names it. */
Test(worker_proto, recompute_replica) {
    wsession s;
    session_start(&s, "wR", 1);
    enum { R = 4, C = 6, BYTES = R * C * 8 };
    tsr_kdesc rnd = desc(TSR_KOP_RANDOM, 0, R, C);
    int64_t rp[5] = {99, 8, 12, 4, 6};
    rnd.ni = 5;
    rnd.i = rp;
    tsr_kdesc neg = desc(TSR_KOP_UNARY, TSR_NEG, R, C), abs_ = desc(TSR_KOP_UNARY, TSR_ABS, R, C);
    tin in5[1] = {{5, NULL, TSR__IN_RECOMPUTE, &rnd}};
    start_compute(7, 2);
    add_task(10, &neg, 1, in5);
    add_task(11, &abs_, 1, in5);
    send_compute(s.fd);
    wst st;
    wait_done(&s, 2, &st);
    cr_expect_eq(st.tasks, 2, "the recompute is not one of the scheduler's tasks");
    /* Once: the replica and the two outputs, never a second copy. */
    cr_expect_eq(st.chunk_bytes, 3 * BYTES);
    cr_expect_eq(st.chunk_peak, 3 * BYTES, "chunk peak %llu: recomputed twice?",
                 (unsigned long long)st.chunk_peak);

    void *rep, *out;
    uint64_t plen;
    cr_assert_eq(peer_get(&s, 7, 5, &rep, &plen), 1, "the replica is not served");
    cr_assert_eq(plen, BYTES);
    cr_assert_eq(peer_get(&s, 7, 10, &out, &plen), 1);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            double want = spec_f64(99, (uint64_t)((4 + r) * 12 + 6 + c));
            cr_assert_eq(((double *)rep)[r * C + c], want, "replica (%d,%d)", r, c);
            cr_assert_eq(((double *)out)[r * C + c], -want);
        }
    free(rep);
    free(out);

    /* A held replica is used as is; a descriptor that is not a source is refused. */
    uint64_t five = 5;
    tin again[1] = {{5, NULL, TSR__IN_RECOMPUTE, &rnd}},
        bad[1] = {{6, NULL, TSR__IN_RECOMPUTE, &neg}};
    start_compute(7, 2);
    add_task(12, &neg, 1, again);
    add_task(13, &neg, 1, bad);
    send_compute(s.fd);
    int done[64] = {0}, erred[64] = {0};
    char msgs[64][256];
    memset(msgs, 0, sizeof msgs);
    collect(&s, 2, done, erred, msgs, &st);
    cr_expect(done[12] && erred[13]);
    cr_expect(strstr(msgs[13], "cannot be recomputed") != NULL, "%s", msgs[13]);
    cr_expect_eq(st.chunk_peak, 4 * BYTES);
    cr_expect_eq(st.out_bytes, 2 * BYTES, "out_bytes %llu after serving two chunks",
                 (unsigned long long)st.out_bytes);

    send_free(&s, 7, &five, 1);
    void *gone;
    cr_expect_eq(peer_get(&s, 7, 5, &gone, &plen), 0, "the replica outlived its free");
    free(gone);
    tin ten[1] = {{10, NULL, 0, NULL}};
    send_task(&s, 7, 14, &neg, 1, ten);
    wait_done(&s, 1, &st);
    cr_expect_eq(st.chunk_bytes, 4 * BYTES, "10, 11, 12 and 14: the replica's bytes went");
    cr_expect_eq(st.tasks, 4, "13 never ran");
    session_end(&s);
}

/* Whether a recomputed source is kept as a replica depends on the uses the scheduler says remain:
 * a plain source from 6 (TSR__REPLICA_MIN_USES), a packed source tile (PACK_SOURCE), dearer to
 * make again, from 2 (TSR__REPLICA_MIN_USES_PACKED). A replica kept is served to peers; one not
 * kept is not. */
Test(worker_proto, replicas_kept_by_remaining_uses) {
    wsession s;
    session_start(&s, "wU", 1);
    enum { R = 8, C = 40 };
    int64_t rp[5] = {5, 16, 80, 8, 40};
    tsr_kdesc rnd = desc(TSR_KOP_RANDOM, 0, R, C);
    rnd.ni = 5;
    rnd.i = rp;
    int64_t pp[4 + 5] = {1, TSR_KOP_RANDOM, R, C, 5, 16, 80, 8, 40};
    tsr_kdesc pk = desc(TSR_KOP_PACK_SOURCE, 0, R * C, 0);
    pk.ndim = 1;
    pk.i = pp;
    pk.ni = 9;
    tsr_kdesc neg = desc(TSR_KOP_UNARY, TSR_NEG, R, C),
              neg1 = desc(TSR_KOP_UNARY, TSR_NEG, R * C, 0);
    neg1.ndim = 1;
    /* key: source, uses sent, kept? */
    struct {
        uint64_t key;
        const tsr_kdesc *src, *task;
        int uses, kept;
    } cases[] = {{20, &rnd, &neg, 5, 0},
                 {21, &rnd, &neg, 6, 1},
                 {22, &pk, &neg1, 1, 0},
                 {23, &pk, &neg1, 2, 1},
                 {24, &pk, &neg1, 5, 1}};
    enum { NC = sizeof cases / sizeof cases[0] };
    start_compute(7, NC);
    for (int c = 0; c < NC; c++) {
        tin in[1] = {{cases[c].key, NULL, TSR__IN_RECOMPUTE, cases[c].src, cases[c].uses}};
        add_task(30 + (uint64_t)c, cases[c].task, 1, in);
    }
    send_compute(s.fd);
    wst st;
    wait_done(&s, NC, &st);
    for (int c = 0; c < NC; c++) {
        void *p = NULL;
        uint64_t plen = 0;
        int got = peer_get(&s, 7, cases[c].key, &p, &plen);
        cr_expect_eq(got, cases[c].kept, "source %llu (%s, %d uses left): %s",
                     (unsigned long long)cases[c].key, tsr__kop_name(cases[c].src->kop),
                     cases[c].uses, got ? "kept" : "not kept");
        if (got) cr_expect_eq(plen, (uint64_t)R * C * 8);
        free(p);
    }
    session_end(&s);
}

/* ---- Peer replies ---------------------------------------------------------------------------- */

/* Small replies of a loop turn are written together and large ones on their own: pipelined
 * gets for small, large, missing and small chunks still come back in request order, each with
 * its own bytes. */
Test(worker_proto, peer_replies_in_order) {
    wsession s;
    session_start(&s, "wP", 1);
    enum { BIG = 100 * 1000 }; /* elements: 800 kB, past the batching limit */
    tsr_kdesc small = desc(TSR_KOP_ARANGE, 0, 0, 0), big = small;
    small.ndim = big.ndim = 1;
    small.shape[0] = 5;
    big.shape[0] = BIG;
    double sf[2] = {1.0, 1.0}, bf[2] = {-3.0, 0.5};
    int64_t off = 0;
    small.nf = big.nf = 2;
    small.f = sf;
    big.f = bf;
    small.ni = big.ni = 1;
    small.i = big.i = &off;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start_compute(7, 3);
    add_task(1, &small, 0, NULL);
    add_task(2, &big, 0, NULL);
    add_task(3, &small, 0, NULL);
    send_compute(s.fd);
    wst st;
    wait_done(&s, 3, &st);

    int fd = tcp_connect(s.paddr);
    set_timeout(fd);
    peer_hello(fd, TSR_PROTOCOL_VERSION);
    uint64_t order[5] = {1, 2, 99, 3, 2};
    /* All five requests in one write, so the worker reads them in one turn. */
    msgpack_sbuffer all;
    msgpack_sbuffer_init(&all);
    for (int k = 0; k < 5; k++) {
        packer_start(&sb, &pk);
        tsr__msg_pack_get(&sb, &(tsr__msg_get){.job = 7, .id = (uint32_t)order[k]});
        unsigned char len[4] = {0, 0, 0, (unsigned char)sb.size};
        msgpack_sbuffer_write(&all, (const char *)len, 4);
        msgpack_sbuffer_write(&all, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
    write_all(fd, all.data, all.size);
    msgpack_sbuffer_destroy(&all);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    void *payload;
    uint64_t plen;
    char type[16];
    cr_assert_eq(get_frame(fd, &up, &payload, &plen), 0);
    tsr__mp_type(&up.data, type, sizeof type);
    cr_assert_str_eq(type, "welcome");
    for (int k = 0; k < 5; k++) {
        cr_assert_eq(get_frame(fd, &up, &payload, &plen), 0, "reply %d", k);
        tsr__mp_type(&up.data, type, sizeof type);
        int64_t id = -1;
        tsr__mp_get_int(&up.data, "id", &id);
        cr_assert_eq(id, (int64_t)order[k], "reply %d is for %lld", k, (long long)id);
        if (order[k] == 99) {
            cr_assert_str_eq(type, "missing");
            continue;
        }
        cr_assert_str_eq(type, "chunk");
        int n = order[k] == 2 ? BIG : 5;
        cr_assert_eq(plen, (uint64_t)n * 8);
        for (int j = 0; j < n; j += n == BIG ? 997 : 1) {
            double want = order[k] == 2 ? -3.0 + 0.5 * j : 1.0 + j;
            cr_assert_eq(((double *)payload)[j], want, "reply %d element %d", k, j);
        }
        free(payload);
    }
    msgpack_unpacked_destroy(&up);
    close(fd);
    session_end(&s);
}

/* ---- Trace ----------------------------------------------------------------------------------- */

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* What done messages said about each task (ids < 64) and the transfers in their tr. */
typedef struct traced {
    int n[64]; /* elements of the task's item; 0 = not reported */
    double seconds[64], start[64];
    uint64_t thread[64];
    int ntr;
    uint64_t tr_job[8], tr_id[8], tr_bytes[8];
    double tr_start[8], tr_end[8];
    char tr_from[8][80];
} traced;

/* Reads done messages until `count` tasks are reported (all must succeed). */
static void collect_traced(wsession *s, int count, traced *tr) {
    for (int got = 0; got < count;) {
        void *payload;
        uint64_t plen;
        cr_assert_eq(get_frame(s->fd, &s->up, &payload, &plen), 0, "worker hung up");
        char type[32];
        cr_assert_eq(tsr__mp_type(&s->up.data, type, sizeof type), 0);
        cr_assert_str_eq(type, "done", "a task failed");
        const msgpack_object *items = tsr__mp_get(&s->up.data, "items");
        cr_assert(items && items->type == MSGPACK_OBJECT_ARRAY);
        for (uint32_t i = 0; i < items->via.array.size; i++) {
            const msgpack_object *it = &items->via.array.ptr[i];
            cr_assert(it->type == MSGPACK_OBJECT_ARRAY && it->via.array.size >= 4);
            const msgpack_object *f = it->via.array.ptr;
            uint64_t id = f[1].via.u64;
            cr_assert(id < 64 && tr->n[id] == 0, "id %llu reported twice", (unsigned long long)id);
            tr->n[id] = (int)it->via.array.size;
            cr_assert_eq(tsr__mp_as_double(&f[3], &tr->seconds[id]), 0);
            if (it->via.array.size == 6) {
                cr_assert_eq(f[4].type, MSGPACK_OBJECT_FLOAT64, "start is not a double");
                tr->start[id] = f[4].via.f64;
                cr_assert_eq(f[5].type, MSGPACK_OBJECT_POSITIVE_INTEGER, "thread is not a count");
                tr->thread[id] = f[5].via.u64;
            }
            got++;
        }
        const msgpack_object *to = tsr__mp_get(&s->up.data, "tr");
        if (!to) continue;
        cr_assert(to->type == MSGPACK_OBJECT_ARRAY && to->via.array.size > 0, "empty tr");
        for (uint32_t i = 0; i < to->via.array.size; i++) {
            const msgpack_object *x = &to->via.array.ptr[i];
            cr_assert(x->type == MSGPACK_OBJECT_ARRAY && x->via.array.size == 6);
            const msgpack_object *f = x->via.array.ptr;
            cr_assert(tr->ntr < 8);
            int k = tr->ntr++;
            tr->tr_job[k] = f[0].via.u64;
            tr->tr_id[k] = f[1].via.u64;
            tr->tr_bytes[k] = f[2].via.u64;
            cr_assert(f[3].type == MSGPACK_OBJECT_FLOAT64 && f[4].type == MSGPACK_OBJECT_FLOAT64);
            tr->tr_start[k] = f[3].via.f64;
            tr->tr_end[k] = f[4].via.f64;
            cr_assert(f[5].type == MSGPACK_OBJECT_STR && f[5].via.str.size < 80);
            memcpy(tr->tr_from[k], f[5].via.str.ptr, f[5].via.str.size);
            tr->tr_from[k][f[5].via.str.size] = '\0';
        }
    }
}

/* A traced job's items carry the kernel's wall-clock start and the executor's index; another
 * job's items, in flight at the same time, keep four elements, and so does trace: false. */
Test(worker_proto, trace_items) {
    enum { THREADS = 2, TRACED = 12, PLAIN = 6, ELEMS = 20000 };
    wsession s;
    session_start(&s, "wT", THREADS);
    tsr_kdesc fill = desc(TSR_KOP_FILL, 0, 1, ELEMS);
    double v = 0.25;
    fill.nf = 1;
    fill.f = &v;
    double before = wall_now();
    start_traced_compute(1, TRACED, 1);
    for (int k = 0; k < TRACED; k++) add_task((uint64_t)k, &fill, 0, NULL);
    send_compute(s.fd);
    start_compute(2, PLAIN);
    for (int k = 0; k < PLAIN; k++) add_task((uint64_t)(TRACED + k), &fill, 0, NULL);
    send_compute(s.fd);
    traced tr;
    memset(&tr, 0, sizeof tr);
    collect_traced(&s, TRACED + PLAIN, &tr);
    double after = wall_now();
    for (int id = 0; id < TRACED; id++) {
        cr_assert_eq(tr.n[id], 6, "traced task %d has %d elements", id, tr.n[id]);
        cr_expect(tr.start[id] >= before && tr.start[id] + tr.seconds[id] <= after,
                  "task %d ran %.6f..%.6f, outside the test's %.6f..%.6f", id, tr.start[id],
                  tr.start[id] + tr.seconds[id], before, after);
        cr_expect_lt(tr.thread[id], THREADS, "task %d on executor %llu", id,
                     (unsigned long long)tr.thread[id]);
    }
    /* One executor runs its tasks one after another. */
    for (int a = 0; a < TRACED; a++)
        for (int b = a + 1; b < TRACED; b++)
            if (tr.thread[a] == tr.thread[b])
                cr_expect(tr.start[a] + tr.seconds[a] <= tr.start[b] + 1e-6 ||
                              tr.start[b] + tr.seconds[b] <= tr.start[a] + 1e-6,
                          "tasks %d and %d overlap on executor %llu", a, b,
                          (unsigned long long)tr.thread[a]);
    for (int id = TRACED; id < TRACED + PLAIN; id++)
        cr_expect_eq(tr.n[id], 4, "untraced task %d has %d elements", id, tr.n[id]);
    cr_expect_eq(tr.ntr, 0, "transfers reported without fetches");

    memset(&tr, 0, sizeof tr);
    start_traced_compute(3, 1, 0);
    add_task(0, &fill, 0, NULL);
    send_compute(s.fd);
    collect_traced(&s, 1, &tr);
    cr_expect_eq(tr.n[0], 4, "trace: false gave %d elements", tr.n[0]);
    session_end(&s);
}

/* Answers a get from the worker, from a fake peer's accepted connection: a (job, id) chunk of
 * n doubles of value v. */
static void fake_peer_serve(int pfd, msgpack_unpacked *up, uint64_t job, uint64_t id, int n,
                            double v) {
    void *payload;
    uint64_t plen;
    tsr__msg m;
    cr_assert_eq(get_frame(pfd, up, &payload, &plen), 0);
    cr_assert_eq(frame_msg(up, &m), TSR__MSG_get);
    cr_assert(m.u.get.job == job && m.u.get.id == id, "asked for (%u,%u)", m.u.get.job, m.u.get.id);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__m_i64_item shape[2] = {{.v = 1}, {.v = n}};
    tsr__msg_pack_chunk(&sb, &(tsr__msg_chunk){.job = (uint32_t)job,
                                               .id = (uint32_t)id,
                                               .dtype = TSR_FLOAT64,
                                               .shape = {.n = 2, .v = shape},
                                               .n = (uint64_t)n * 8});
    double *vals = malloc((size_t)n * sizeof *vals);
    for (int i = 0; i < n; i++) vals[i] = v;
    put_frame_payload(pfd, &sb, vals, (size_t)n * 8);
    free(vals);
}

/* A traced job's fetch from a peer shows up in a done's tr, with its bytes, its times and the
 * peer's address; its recomputed input does not (it crossed no network), and an untraced job's
 * fetch adds nothing. */
Test(worker_proto, trace_transfers) {
    wsession s;
    session_start(&s, "wX", 1);
    char paddr[64];
    int plfd = tcp_listen_any(paddr, sizeof paddr);
    enum { NA = 300, NB = 7 };
    tsr_kdesc neg = desc(TSR_KOP_UNARY, TSR_NEG, 1, NA);
    tsr_kdesc fill = desc(TSR_KOP_FILL, 0, 1, NA);
    double one = 1;
    fill.nf = 1;
    fill.f = &one;
    double before = wall_now();
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start_traced_compute(4, 2, 1);
    tin fetched[1] = {{50, paddr, 0, NULL}}, made[1] = {{60, NULL, TSR__IN_RECOMPUTE, &fill}};
    add_task(1, &neg, 1, fetched);
    add_task(2, &neg, 1, made);
    send_compute(s.fd);

    int pfd = accept(plfd, NULL, NULL);
    cr_assert(pfd >= 0);
    set_timeout(pfd);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    void *payload;
    uint64_t plen;
    char type[16];
    cr_assert_eq(get_frame(pfd, &up, &payload, &plen), 0);
    tsr__mp_type(&up.data, type, sizeof type);
    cr_assert_str_eq(type, "hello");
    packer_start(&sb, &pk);
    tsr__msg_pack_welcome(&sb, &(tsr__msg_welcome){.v = TSR_PROTOCOL_VERSION, .id = 1});
    put_frame(pfd, &sb);
    fake_peer_serve(pfd, &up, 4, 50, NA, 2.0);
    traced tr;
    memset(&tr, 0, sizeof tr);
    collect_traced(&s, 2, &tr);
    double after = wall_now();
    cr_expect(tr.n[1] == 6 && tr.n[2] == 6);
    cr_assert_eq(tr.ntr, 1, "%d transfers for one fetch", tr.ntr);
    cr_expect(tr.tr_job[0] == 4 && tr.tr_id[0] == 50, "transfer of (%llu,%llu)",
              (unsigned long long)tr.tr_job[0], (unsigned long long)tr.tr_id[0]);
    cr_expect_eq(tr.tr_bytes[0], NA * 8);
    cr_expect_str_eq(tr.tr_from[0], paddr);
    cr_expect(before <= tr.tr_start[0] && tr.tr_start[0] <= tr.tr_end[0] && tr.tr_end[0] <= after,
              "transfer %.6f..%.6f outside the test's %.6f..%.6f", tr.tr_start[0], tr.tr_end[0],
              before, after);
    /* The task that used the chunk started once it was here. */
    cr_expect_geq(tr.start[1] + 1e-6, tr.tr_end[0]);

    /* The same peer, an untraced job: the fetch happens, tr stays out. */
    tin fetched2[1] = {{51, paddr, 0, NULL}};
    tsr_kdesc neg2 = desc(TSR_KOP_UNARY, TSR_NEG, 1, NB);
    send_task(&s, 5, 3, &neg2, 1, fetched2);
    fake_peer_serve(pfd, &up, 5, 51, NB, 3.0);
    memset(&tr, 0, sizeof tr);
    collect_traced(&s, 1, &tr);
    cr_expect_eq(tr.n[3], 4);
    cr_expect_eq(tr.ntr, 0, "an untraced fetch was reported");
    void *p3;
    cr_assert_eq(peer_get(&s, 5, 3, &p3, &plen), 1);
    cr_expect_eq(((double *)p3)[NB - 1], -3.0);
    free(p3);
    msgpack_unpacked_destroy(&up);
    close(pfd);
    close(plfd);
    session_end(&s);
}
