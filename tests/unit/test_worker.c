/* The worker: core picking on this machine's topology, the chunk store, and two real workers
 * (in threads) driven over sockets by a fake scheduler written here with wire/conn. */
#include <dirent.h>

#include "worker_fixture.h"

TestSuite(worker, .timeout = 60);

/* ---- Pinning ------------------------------------------------------------------------------- */

static hwloc_topology_t load_topo(void) {
    hwloc_topology_t t;
    cr_assert_eq(hwloc_topology_init(&t), 0);
    cr_assert_eq(hwloc_topology_load(t), 0);
    return t;
}

static int ncores_in(hwloc_topology_t topo, hwloc_const_bitmap_t set) {
    hwloc_obj_type_t type =
        hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
    int n = 0;
    for (int i = 0; i < hwloc_get_nbobjs_by_type(topo, type); i++)
        if (hwloc_bitmap_intersects(hwloc_get_obj_by_type(topo, type, (unsigned)i)->cpuset, set))
            n++;
    return n;
}

Test(worker, pick_core_all) {
    hwloc_topology_t topo = load_topo();
    hwloc_bitmap_t set = hwloc_bitmap_alloc(), a = hwloc_bitmap_alloc(), b = hwloc_bitmap_alloc();
    cr_assert_eq(tsr__worker_cpuset(topo, NULL, set), 0);
    int n = ncores_in(topo, set);
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert(n >= 1 && n <= nproc, "%d cores of %ld PUs", n, nproc);
    for (int k = 0; k < 2 * n + 1; k++) {
        cr_assert_eq(tsr__worker_pick_core(topo, set, k, a), 0);
        cr_assert(!hwloc_bitmap_iszero(a));
        cr_assert(hwloc_bitmap_isincluded(a, set), "core %d lies outside the set", k);
        /* Exactly one core. */
        hwloc_obj_t core = hwloc_get_obj_covering_cpuset(topo, a);
        cr_assert(core != NULL);
        cr_assert_eq(tsr__worker_pick_core(topo, set, k % n, b), 0);
        cr_assert(hwloc_bitmap_isequal(a, b), "thread %d does not wrap to %d", k, k % n);
        for (int j = 0; j < k && j < n; j++) {
            cr_assert_eq(tsr__worker_pick_core(topo, set, j, b), 0);
            if (k < n) cr_assert(!hwloc_bitmap_intersects(a, b), "threads %d and %d share", j, k);
        }
    }
    hwloc_bitmap_free(set);
    hwloc_bitmap_free(a);
    hwloc_bitmap_free(b);
    hwloc_topology_destroy(topo);
}

Test(worker, pick_core_list) {
    hwloc_topology_t topo = load_topo();
    hwloc_bitmap_t set = hwloc_bitmap_alloc(), a = hwloc_bitmap_alloc();
    int first = hwloc_bitmap_first(hwloc_topology_get_allowed_cpuset(topo));
    char list[32];
    snprintf(list, sizeof list, "%d", first);
    cr_assert_eq(tsr__worker_cpuset(topo, list, set), 0);
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(tsr__worker_pick_core(topo, set, k, a), 0);
        char got[64];
        hwloc_bitmap_list_snprintf(got, sizeof got, a);
        cr_assert_str_eq(got, list, "thread %d: %s", k, got);
    }
    cr_assert_eq(tsr__worker_cpuset(topo, "nonsense", set), TSR_EINVALID);
    cr_assert_eq(tsr__worker_cpuset(topo, "100000-100003", set), TSR_EINVALID);
    hwloc_bitmap_free(set);
    hwloc_bitmap_free(a);
    hwloc_topology_destroy(topo);
}

/* ---- Chunk store --------------------------------------------------------------------------- */

Test(worker, store_basic) {
    tsr__store s;
    tsr__store_init(&s);
    int64_t shape[2] = {3, 4};
    tsr__buf *b = tsr__buf_new(96);
    tsr__buf_ref(b); /* the test's own reference */
    cr_assert_eq(tsr__store_put(&s, 1, 2, b, TSR_FLOAT64, 2, shape), 0);
    cr_assert_eq(s.bytes, 96);
    const tsr__chunk *c = tsr__store_get(&s, 1, 2);
    cr_assert(c && c->buf == b && c->ndim == 2 && c->shape[1] == 4 && c->dtype == TSR_FLOAT64);
    cr_assert_null(tsr__store_get(&s, 2, 1));
    cr_assert_eq(tsr__store_put(&s, 1, 3, tsr__buf_new(40), TSR_FLOAT32, 1, shape), 0);
    cr_assert_eq(s.bytes, 136);
    cr_assert_eq(s.peak, 136);
    /* Replacing releases the old chunk's bytes. */
    cr_assert_eq(tsr__store_put(&s, 1, 3, tsr__buf_new(8), TSR_FLOAT32, 0, NULL), 0);
    cr_assert_eq(s.bytes, 104);
    cr_assert_eq(tsr__store_count(&s), 2);
    cr_assert_eq(tsr__store_drop(&s, 1, 2), 1);
    cr_assert_eq(tsr__store_drop(&s, 1, 2), 0);
    cr_assert_eq(s.bytes, 8);
    cr_assert_eq(s.peak, 136);
    /* The store dropped its reference; ours keeps the bytes alive. */
    cr_assert_eq(atomic_load(&b->refs), 1);
    tsr__buf_unref(b);
    tsr__store_free(&s);
    cr_assert_eq(s.bytes, 0);
}

Test(worker, store_many) {
    tsr__store s;
    tsr__store_init(&s);
    enum { N = 5000 };
    static char present[N];
    memset(present, 0, sizeof present);
    uint64_t expect = 0;
    unsigned seed = 12345;
    for (int step = 0; step < 40000; step++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % N);
        uint64_t job = (uint64_t)(k % 7), id = (uint64_t)k;
        if ((seed >> 4) & 1) {
            /* A put over an existing key replaces a chunk of the same size. */
            if (!present[k]) expect += (uint64_t)(k % 13) + 1;
            cr_assert_eq(
                tsr__store_put(&s, job, id, tsr__buf_new((size_t)(k % 13) + 1), 0, 0, NULL), 0);
            present[k] = 1;
        } else {
            cr_assert_eq(tsr__store_drop(&s, job, id), present[k]);
            if (present[k]) expect -= (uint64_t)(k % 13) + 1;
            present[k] = 0;
        }
        if (step % 997 == 0) {
            size_t count = 0;
            for (int j = 0; j < N; j++) {
                const tsr__chunk *c = tsr__store_get(&s, (uint64_t)(j % 7), (uint64_t)j);
                cr_assert_eq(c != NULL, present[j], "key %d", j);
                count += present[j];
            }
            cr_assert_eq(tsr__store_count(&s), count);
            cr_assert_eq(s.bytes, expect);
        }
    }
    tsr__store_free(&s);
}

/* Records hold ndim shape entries; the index grows with the count and shrinks as it empties. */
Test(worker, store_shapes_and_index_size) {
    tsr__store s;
    tsr__store_init(&s);
    enum { N = 20000, KEEP = 10 };
    for (int k = 0; k < N; k++) {
        int64_t shape[TSR_MAX_NDIM];
        for (int a = 0; a < TSR_MAX_NDIM; a++) shape[a] = k + a;
        uint8_t ndim = (uint8_t)(k % (TSR_MAX_NDIM + 1));
        cr_assert_eq(tsr__store_put(&s, 3, (uint64_t)k, tsr__buf_new(8), 0, ndim, shape), 0);
    }
    cr_assert_eq(tsr__store_count(&s), N);
    cr_assert(s.cap >= N && s.cap < 4 * N, "cap %zu for %d chunks", s.cap, N);
    for (int k = 0; k < N; k++) {
        const tsr__chunk *c = tsr__store_get(&s, 3, (uint64_t)k);
        cr_assert(c && c->id == (uint64_t)k && c->ndim == k % (TSR_MAX_NDIM + 1));
        for (int a = 0; a < c->ndim; a++) cr_assert_eq(c->shape[a], k + a);
    }
    for (int k = KEEP; k < N; k++) cr_assert_eq(tsr__store_drop(&s, 3, (uint64_t)k), 1);
    cr_assert_eq(tsr__store_count(&s), KEEP);
    cr_assert(s.cap <= 128, "the index kept %zu heads for %d chunks", s.cap, KEEP);
    for (int k = 0; k < KEEP; k++) cr_assert_not_null(tsr__store_get(&s, 3, (uint64_t)k));
    cr_assert_null(tsr__store_get(&s, 3, KEEP));
    cr_assert_eq(s.bytes, 8 * KEEP);
    tsr__store_free(&s);
    cr_assert_eq(s.cap, 0);
}

/* ---- Two workers against a fake scheduler -------------------------------------------------- */

enum { JOB = 7, NW = 2 };

typedef struct fake fake;

typedef struct wconn {
    fake *f;
    tsr__conn *c;
    int idx; /* 0 = worker A, 1 = worker B */
    int closed;
    /* From the hello. */
    char name[64], kind[16], addr[96], cpus[64], role[16];
    int64_t threads, mem, pid;
} wconn;

typedef struct pconn {
    fake *f;
    tsr__conn *c;
    int idx;
    int welcomed;
} pconn;

struct fake {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_timer_t timer;
    char addr[96];
    wconn conns[NW]; /* in accept order */
    wconn *w[NW];    /* by name: A, B */
    int nhello;
    int nconn;
    /* Progress. */
    int done_a0, done_a1, erred_a2, done_b3, done_b4;
    char erred_msg[256];
    int ndone_msgs;
    /* Peer results. */
    pconn p[NW];
    int got_a1, got_b4, got_b3, missing_a42;
    int shutdown_sent;
    int timed_out;
    char fail[256];
};

static void fake_fail(fake *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fake_fail(fake *f, const char *fmt, ...) {
    if (f->fail[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->fail, sizeof f->fail, fmt, ap);
    va_end(ap);
    uv_stop(&f->loop);
}

static void send_sb(tsr__conn *c, msgpack_sbuffer *sb) {
    cr_assert_eq(tsr__conn_send(c, sb, NULL, 0, NULL, NULL), 0);
    msgpack_sbuffer_destroy(sb);
}

static tsr_kdesc kd(int kop, int fn) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = (uint8_t)kop;
    d.fn = (uint8_t)fn;
    d.dtype = TSR_FLOAT64;
    d.ndim = 2;
    d.shape[0] = 3;
    d.shape[1] = 4;
    return d;
}

/* One task: [id, kdesc_bin, [[input_id, addr|nil], ...]]. */
static void pack_task(msgpack_packer *pk, uint64_t id, const tsr_kdesc *d, int nin,
                      const uint64_t *ins, const char *const *addrs) {
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, id);
    pack_kdesc_bin(pk, d);
    msgpack_pack_array(pk, (size_t)nin);
    for (int k = 0; k < nin; k++) {
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint64(pk, ins[k]);
        if (addrs[k])
            tsr__mp_pack_str(pk, addrs[k]);
        else
            msgpack_pack_nil(pk);
    }
}

static void start_compute(msgpack_sbuffer *sb, msgpack_packer *pk, size_t ntasks) {
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    tsr__mp_pack_type(pk, 3, "compute");
    tsr__mp_pack_str(pk, "job");
    msgpack_pack_uint64(pk, JOB);
    tsr__mp_pack_str(pk, "tasks");
    msgpack_pack_array(pk, ntasks);
}

static void send_shutdown(tsr__conn *c) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_shutdown(&sb, &(tsr__msg_shutdown){0});
    send_sb(c, &sb);
}

static void send_get(tsr__conn *c, uint64_t id) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_get(&sb, &(tsr__msg_get){.job = JOB, .id = (uint32_t)id});
    send_sb(c, &sb);
}

/* Step 1, both workers said hello: FILL 2.5 on A. */
static void step_fill(fake *f) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start_compute(&sb, &pk, 1);
    tsr_kdesc d = kd(TSR_KOP_FILL, 0);
    double v = 2.5;
    d.nf = 1;
    d.f = &v;
    pack_task(&pk, 0, &d, 0, NULL, NULL);
    send_sb(f->w[0]->c, &sb);
}

/* Step 2, A holds (7,0): NEG of it on A, a task whose input A lacks, and on B a NEG and an ADD
 * of the chunk with itself, both fetched from A. */
static void step_dependents(fake *f) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start_compute(&sb, &pk, 2);
    tsr_kdesc neg = kd(TSR_KOP_UNARY, TSR_NEG);
    uint64_t in0[2] = {0, 0}, in99[1] = {99};
    const char *nil[2] = {NULL, NULL};
    pack_task(&pk, 1, &neg, 1, in0, nil);
    pack_task(&pk, 2, &neg, 1, in99, nil);
    send_sb(f->w[0]->c, &sb);

    start_compute(&sb, &pk, 2);
    const char *at_a[2] = {f->w[0]->addr, f->w[0]->addr};
    pack_task(&pk, 3, &neg, 1, in0, at_a);
    tsr_kdesc add = kd(TSR_KOP_BINARY, TSR_ADD);
    pack_task(&pk, 4, &add, 2, in0, at_a);
    send_sb(f->w[1]->c, &sb);
}

static int task_comm_is(const char *tid, const char *want) {
    char path[300], comm[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", tid);
    FILE *fp = fopen(path, "r");
    if (!fp) return 0;
    if (!fgets(comm, sizeof comm, fp)) comm[0] = '\0';
    fclose(fp);
    comm[strcspn(comm, "\n")] = '\0';
    return strcmp(comm, want) == 0;
}

static void task_cpus(const char *tid, char *out, size_t size) {
    char path[300], line[64];
    snprintf(path, sizeof path, "/proc/self/task/%s/status", tid);
    FILE *fp = fopen(path, "r");
    out[0] = '\0';
    if (!fp) return;
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
            const char *v = line + 18;
            while (*v == ' ' || *v == '\t') v++;
            snprintf(out, size, "%s", v);
            out[strcspn(out, "\n")] = '\0';
        }
    fclose(fp);
}

/* Every executor thread is pinned to the core the helper picks for its index. */
static void check_pinning(void) {
    hwloc_topology_t topo = load_topo();
    hwloc_bitmap_t set = hwloc_bitmap_alloc(), core = hwloc_bitmap_alloc();
    cr_assert_eq(tsr__worker_cpuset(topo, NULL, set), 0);
    int seen[2] = {0, 0};
    DIR *d = opendir("/proc/self/task");
    cr_assert(d != NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        for (int k = 0; k < 2; k++) {
            char name[16];
            snprintf(name, sizeof name, "tsr-exec-%d", k);
            if (!task_comm_is(de->d_name, name)) continue;
            seen[k]++;
            char want[64], got[64];
            cr_assert_eq(tsr__worker_pick_core(topo, set, k, core), 0);
            hwloc_bitmap_list_snprintf(want, sizeof want, core);
            task_cpus(de->d_name, got, sizeof got);
            cr_expect_str_eq(got, want, "%s runs on %s, want %s", name, got, want);
        }
    }
    closedir(d);
    /* A runs two executors, B one. */
    cr_expect_eq(seen[0], 2);
    cr_expect_eq(seen[1], 1);
    hwloc_bitmap_free(set);
    hwloc_bitmap_free(core);
    hwloc_topology_destroy(topo);
}

static void pconn_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen);
static void pconn_close(tsr__conn *c, int status, const char *reason) {
    (void)c;
    (void)status;
    (void)reason;
}
static void pconn_connect(tsr__conn *c, int status) {
    pconn *p = c->owner;
    if (status < 0) {
        fake_fail(p->f, "peer connect: %s", uv_strerror(status));
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_hello(&sb,
                        &(tsr__msg_hello){.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("peer")});
    send_sb(c, &sb);
    /* Pipelined: replies come back in request order. */
    if (p->idx == 0) {
        send_get(c, 1);
        send_get(c, 42);
    } else {
        send_get(c, 4);
        send_get(c, 3);
    }
}

static const tsr__conn_cbs pconn_cbs = {
    .on_frame = pconn_frame, .on_close = pconn_close, .on_connect = pconn_connect};

static void maybe_finish(fake *f) {
    if (f->shutdown_sent || !f->got_a1 || !f->missing_a42 || !f->got_b4 || !f->got_b3) return;
    f->shutdown_sent = 1;
    tsr__conn_close(f->p[0].c, NULL);
    tsr__conn_close(f->p[1].c, NULL);
    /* A goes by request, B by losing its scheduler connection. */
    send_shutdown(f->w[0]->c);
    tsr__conn_close(f->w[1]->c, NULL);
}

static void check_chunk(fake *f, const msgpack_object *hdr, const void *payload, uint64_t plen,
                        double want) {
    int64_t dtype = -1;
    const msgpack_object *sh = tsr__mp_get(hdr, "shape");
    if (tsr__mp_get_int(hdr, "dtype", &dtype) || dtype != TSR_FLOAT64 || !sh ||
        sh->type != MSGPACK_OBJECT_ARRAY || sh->via.array.size != 2 ||
        sh->via.array.ptr[0].via.u64 != 3 || sh->via.array.ptr[1].via.u64 != 4 || plen != 96) {
        fake_fail(f, "bad chunk header");
        return;
    }
    const double *x = payload;
    for (int i = 0; i < 12; i++)
        if (x[i] != want) fake_fail(f, "element %d is %g, want %g", i, x[i], want);
}

static void pconn_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    pconn *p = c->owner;
    fake *f = p->f;
    char type[16];
    int64_t id = -1;
    tsr__mp_type(hdr, type, sizeof type);
    tsr__mp_get_int(hdr, "id", &id);
    if (!p->welcomed) {
        if (strcmp(type, "welcome") != 0) fake_fail(f, "peer replied %s to hello", type);
        p->welcomed = 1;
        return;
    }
    if (p->idx == 0 && strcmp(type, "chunk") == 0 && id == 1 && !f->got_a1) {
        check_chunk(f, hdr, payload, plen, -2.5);
        f->got_a1 = 1;
    } else if (p->idx == 0 && strcmp(type, "missing") == 0 && id == 42 && f->got_a1) {
        f->missing_a42 = 1;
    } else if (p->idx == 1 && strcmp(type, "chunk") == 0 && id == 4 && !f->got_b4) {
        check_chunk(f, hdr, payload, plen, 5.0);
        f->got_b4 = 1;
    } else if (p->idx == 1 && strcmp(type, "chunk") == 0 && id == 3 && f->got_b4) {
        check_chunk(f, hdr, payload, plen, -2.5);
        f->got_b3 = 1;
    } else {
        fake_fail(f, "unexpected peer reply %s id %lld from worker %d", type, (long long)id,
                  p->idx);
    }
    maybe_finish(f);
}

static void open_peers(fake *f) {
    for (int i = 0; i < NW; i++) {
        f->p[i].f = f;
        f->p[i].idx = i;
        f->p[i].c = tsr__conn_new(&f->loop, &pconn_cbs, &f->p[i], NULL);
        cr_assert_eq(tsr__conn_connect(f->p[i].c, f->w[i]->addr), 0);
    }
}

static void on_done(fake *f, wconn *w, const msgpack_object *hdr) {
    const msgpack_object *items = tsr__mp_get(hdr, "items");
    if (!items || items->type != MSGPACK_OBJECT_ARRAY || items->via.array.size == 0) {
        fake_fail(f, "done without items");
        return;
    }
    f->ndone_msgs++;
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        const msgpack_object *it = &items->via.array.ptr[i];
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 4) {
            fake_fail(f, "malformed done item");
            return;
        }
        uint64_t job = it->via.array.ptr[0].via.u64, id = it->via.array.ptr[1].via.u64;
        uint64_t nbytes = it->via.array.ptr[2].via.u64;
        double secs = -1;
        tsr__mp_as_double(&it->via.array.ptr[3], &secs);
        if (job != JOB || nbytes != 96 || !(secs >= 0)) fake_fail(f, "bad done item");
        if (w->idx == 0 && id == 0) {
            f->done_a0 = 1;
            step_dependents(f);
        } else if (w->idx == 0 && id == 1) {
            f->done_a1 = 1;
        } else if (w->idx == 1 && id == 3) {
            f->done_b3 = 1;
        } else if (w->idx == 1 && id == 4) {
            f->done_b4 = 1;
        } else {
            fake_fail(f, "unexpected done (%llu,%llu) from worker %d", (unsigned long long)job,
                      (unsigned long long)id, w->idx);
        }
    }
    if (f->done_a1 && f->erred_a2 && f->done_b3 && f->done_b4 && !f->p[0].c) {
        check_pinning();
        open_peers(f);
    }
}

static void wconn_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    wconn *w = c->owner;
    fake *f = w->f;
    (void)payload;
    (void)plen;
    char type[32];
    if (tsr__mp_type(hdr, type, sizeof type)) {
        fake_fail(f, "frame without type");
        return;
    }
    if (strcmp(type, "hello") == 0) {
        int64_t v = 0;
        tsr__mp_get_int(hdr, "v", &v);
        tsr__mp_get_str(hdr, "role", w->role, sizeof w->role);
        tsr__mp_get_str(hdr, "name", w->name, sizeof w->name);
        tsr__mp_get_str(hdr, "kind", w->kind, sizeof w->kind);
        tsr__mp_get_str(hdr, "addr", w->addr, sizeof w->addr);
        tsr__mp_get_str(hdr, "cpus", w->cpus, sizeof w->cpus);
        tsr__mp_get_int(hdr, "threads", &w->threads);
        tsr__mp_get_int(hdr, "mem", &w->mem);
        tsr__mp_get_int(hdr, "pid", &w->pid);
        if (v != TSR_PROTOCOL_VERSION) fake_fail(f, "hello v %lld", (long long)v);
        /* Which worker is which: by name (they connect in any order). */
        int idx = strcmp(w->name, "wB") == 0;
        w->idx = idx;
        f->w[idx] = w;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        tsr__msg_pack_welcome(&sb,
                              &(tsr__msg_welcome){.v = TSR_PROTOCOL_VERSION, .id = (uint64_t)idx});
        send_sb(w->c, &sb);
        if (++f->nhello == NW) step_fill(f);
    } else if (strcmp(type, "done") == 0) {
        on_done(f, w, hdr);
    } else if (strcmp(type, "erred") == 0) {
        int64_t id = -1;
        tsr__mp_get_int(hdr, "id", &id);
        tsr__mp_get_str(hdr, "msg", f->erred_msg, sizeof f->erred_msg);
        if (w->idx == 0 && id == 2)
            f->erred_a2 = 1;
        else
            fake_fail(f, "unexpected erred %lld: %s", (long long)id, f->erred_msg);
    } else if (strcmp(type, "heartbeat") != 0) {
        fake_fail(f, "unexpected %s from worker", type);
    }
}

static void wconn_close(tsr__conn *c, int status, const char *reason) {
    wconn *w = c->owner;
    fake *f = w->f;
    (void)status;
    (void)reason;
    w->closed = 1;
    w->c = NULL;
    if (!f->shutdown_sent) fake_fail(f, "worker %d hung up early: %s", w->idx, reason);
    if (f->conns[0].closed && f->conns[1].closed) uv_stop(&f->loop);
}

static const tsr__conn_cbs wconn_cbs = {.on_frame = wconn_frame, .on_close = wconn_close};

static void on_accept(uv_stream_t *s, int status) {
    fake *f = s->data;
    cr_assert_eq(status, 0);
    if (f->nconn >= NW) {
        fake_fail(f, "too many connections");
        return;
    }
    wconn *w = &f->conns[f->nconn++];
    w->f = f;
    w->idx = -1;
    w->c = tsr__conn_new(&f->loop, &wconn_cbs, w, NULL);
    cr_assert_eq(tsr__conn_accept(w->c, s), 0);
}

static void on_timeout(uv_timer_t *t) {
    fake *f = t->data;
    f->timed_out = 1;
    fake_fail(f, "timed out (a0 %d a1 %d a2 %d b3 %d b4 %d; peers %d %d %d %d)", f->done_a0,
              f->done_a1, f->erred_a2, f->done_b3, f->done_b4, f->got_a1, f->missing_a42, f->got_b4,
              f->got_b3);
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

Test(worker, two_workers_over_sockets) {
    fake *f = calloc(1, sizeof *f);
    cr_assert_eq(uv_loop_init(&f->loop), 0);
    cr_assert_eq(uv_tcp_init(&f->loop, &f->server), 0);
    f->server.data = f;
    cr_assert_eq(tsr__listen(&f->server, "127.0.0.1:0", on_accept, f->addr, sizeof f->addr), 0);
    uv_timer_init(&f->loop, &f->timer);
    f->timer.data = f;
    uv_timer_start(&f->timer, on_timeout, 30000, 0);

    wthread wt[NW];
    for (int i = 0; i < NW; i++) {
        memset(&wt[i], 0, sizeof wt[i]);
        pthread_mutex_init(&wt[i].mu, NULL);
        tsr_worker_options_default(&wt[i].o);
        wt[i].o.scheduler = f->addr;
        wt[i].o.name = i == 0 ? "wA" : "wB";
        wt[i].o.threads = i == 0 ? 2 : 1;
        wt[i].o.memory_limit = 12345;
        wt[i].o.on_ready = on_ready;
        wt[i].o.user = &wt[i];
        cr_assert_eq(pthread_create(&wt[i].th, NULL, worker_main, &wt[i]), 0);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    char fail[256];
    snprintf(fail, sizeof fail, "%s", f->fail);
    if (fail[0]) {
        /* Hang up so the workers stop, then still join them. */
        for (int i = 0; i < NW; i++)
            if (f->conns[i].c) tsr__conn_close(f->conns[i].c, NULL);
    }
    uv_walk(&f->loop, close_walk, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < NW; i++) pthread_join(wt[i].th, NULL);
    cr_assert_eq(uv_loop_close(&f->loop), 0);
    cr_assert_str_empty(fail, "%s", fail);

    for (int i = 0; i < NW; i++) {
        wconn *w = f->w[i];
        cr_assert(w != NULL);
        cr_expect_eq(wt[i].rc, 0, "worker %d returned %d", i, wt[i].rc);
        cr_expect_str_eq(w->role, "worker");
        cr_expect_str_eq(w->kind, "cpu");
        cr_expect_eq(w->threads, i == 0 ? 2 : 1);
        cr_expect_eq(w->mem, 12345);
        cr_expect_eq(w->pid, (int64_t)getpid());
        cr_expect(strncmp(w->addr, "127.0.0.1:", 10) == 0, "addr %s", w->addr);
        cr_expect_str_eq(wt[i].ready_addr, w->addr);
        cr_expect(w->cpus[0] != '\0');
    }
    cr_expect(strstr(f->erred_msg, "is not on this worker") != NULL, "%s", f->erred_msg);
    for (int i = 0; i < NW; i++) pthread_mutex_destroy(&wt[i].mu);
    free(f);
}

/* ---- Start-up failures --------------------------------------------------------------------- */

Test(worker, unreachable_scheduler) {
    /* A port nobody listens on: bind one, then close it. */
    uv_loop_t loop;
    uv_tcp_t s;
    char addr[96];
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &s);
    cr_assert_eq(tsr__listen(&s, "127.0.0.1:0", NULL, addr, sizeof addr), 0);
    uv_close((uv_handle_t *)&s, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);

    tsr_worker_options o;
    tsr_worker_options_default(&o);
    o.scheduler = addr;
    cr_assert_eq(worker_life(&o), -ECONNREFUSED);
    o.gpu = 0;
    /* No GPU backend to load (the CUDA runtime would be loaded here for nothing, and leaks when
     * it finds no device). */
    setenv("TESSERA_CUDA_MODULE", "/nonexistent/libtessera_cuda.so", 1);
    cr_assert_eq(worker_life(&o), TSR_EUNSUPPORTED);
    o.gpu = -1;
    o.scheduler = NULL;
    cr_assert_eq(worker_life(&o), TSR_EINVALID);
}

/* ---- One worker, a blocking fake scheduler, the awkward cases ------------------------------- */

Test(worker, chains_failures_and_bad_input) {
    char addr[64];
    int lfd = tcp_listen_any(addr, sizeof addr);
    wthread wt;
    memset(&wt, 0, sizeof wt);
    pthread_mutex_init(&wt.mu, NULL);
    tsr_worker_options_default(&wt.o);
    wt.o.scheduler = addr;
    wt.o.name = "wC";
    wt.o.threads = 3;
    wt.o.on_ready = on_ready;
    wt.o.user = &wt;
    cr_assert_eq(pthread_create(&wt.th, NULL, worker_main, &wt), 0);
    int fd = accept(lfd, NULL, NULL);
    cr_assert(fd >= 0);
    set_timeout(fd);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    void *payload;
    uint64_t plen;
    cr_assert_eq(get_frame(fd, &up, &payload, &plen), 0);
    char type[32], paddr[96];
    cr_assert_eq(tsr__mp_type(&up.data, type, sizeof type), 0);
    cr_assert_str_eq(type, "hello");
    cr_assert_eq(tsr__mp_get_str(&up.data, "addr", paddr, sizeof paddr), 0);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_welcome(&sb, &(tsr__msg_welcome){.v = TSR_PROTOCOL_VERSION, .id = 0});
    put_frame(fd, &sb);

    /* One batch: a chain computed here (0 -> 1 -> 2), a kernel that fails (3: wrong input
     * shape) and its dependent (4), an input at an address nobody serves (5), and a
     * descriptor that is not one (6). */
    start_compute(&sb, &pk, 7);
    tsr_kdesc fill = kd(TSR_KOP_FILL, 0);
    double v = 1.5;
    fill.nf = 1;
    fill.f = &v;
    tsr_kdesc neg = kd(TSR_KOP_UNARY, TSR_NEG);
    tsr_kdesc bad = neg;
    bad.shape[0] = 2;
    const char *nil[1] = {NULL}, *nowhere[1] = {"127.0.0.1:1"};
    uint64_t i0[1] = {0}, i1[1] = {1}, i3[1] = {3}, i77[1] = {77};
    pack_task(&pk, 0, &fill, 0, NULL, NULL);
    pack_task(&pk, 1, &neg, 1, i0, nil);
    pack_task(&pk, 2, &neg, 1, i1, nil);
    pack_task(&pk, 3, &bad, 1, i0, nil);
    pack_task(&pk, 4, &neg, 1, i3, nil);
    pack_task(&pk, 5, &neg, 1, i77, nowhere);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, 6);
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "\xc1\xc1\xc1", 3);
    msgpack_pack_array(&pk, 0);
    put_frame(fd, &sb);

    int done[7] = {0}, erred[7] = {0};
    char msgs[7][256];
    memset(msgs, 0, sizeof msgs);
    for (int got = 0; got < 7;) {
        cr_assert_eq(get_frame(fd, &up, &payload, &plen), 0, "worker hung up");
        cr_assert_eq(tsr__mp_type(&up.data, type, sizeof type), 0);
        if (strcmp(type, "done") == 0) {
            const msgpack_object *items = tsr__mp_get(&up.data, "items");
            for (uint32_t i = 0; i < items->via.array.size; i++) {
                uint64_t id = items->via.array.ptr[i].via.array.ptr[1].via.u64;
                cr_assert(id < 7 && !done[id] && !erred[id]);
                done[id] = 1;
                got++;
            }
        } else {
            cr_assert_str_eq(type, "erred");
            int64_t id = -1;
            cr_assert_eq(tsr__mp_get_int(&up.data, "id", &id), 0);
            cr_assert(id >= 0 && id < 7 && !done[id] && !erred[id]);
            erred[id] = 1;
            tsr__mp_get_str(&up.data, "msg", msgs[id], sizeof msgs[id]);
            got++;
        }
    }
    cr_expect(done[0] && done[1] && done[2]);
    cr_expect(erred[3] && erred[4] && erred[5] && erred[6]);
    cr_expect(strstr(msgs[4], "input (7,3) failed") != NULL, "%s", msgs[4]);
    cr_expect(strstr(msgs[5], "could not fetch input (7,77)") != NULL, "%s", msgs[5]);
    cr_expect(strstr(msgs[6], "malformed kernel descriptor") != NULL, "%s", msgs[6]);

    /* Drop (7,0); the peer port then answers missing for it and serves (7,2). */
    msgpack_sbuffer_init(&sb);
    tsr__m_key key0 = {.job = JOB, .id = 0};
    tsr__msg_pack_free(&sb, &(tsr__msg_free){.keys = {.n = 1, .v = &key0}});
    put_frame(fd, &sb);

    int pfd = tcp_connect(paddr);
    set_timeout(pfd);
    peer_hello(pfd, 1); /* version 1: before heartbeat existed */
    cr_assert_eq(get_frame(pfd, &up, &payload, &plen), 0);
    char msg[128] = "";
    tsr__mp_type(&up.data, type, sizeof type);
    tsr__mp_get_str(&up.data, "msg", msg, sizeof msg);
    cr_assert_str_eq(type, "error");
    cr_assert_str_eq(msg, "protocol version mismatch: got 1, want 3");
    cr_assert_eq(get_frame(pfd, &up, &payload, &plen), -1, "not closed after the error");
    close(pfd);

    pfd = tcp_connect(paddr);
    set_timeout(pfd);
    peer_hello(pfd, TSR_PROTOCOL_VERSION);
    cr_assert_eq(get_frame(pfd, &up, &payload, &plen), 0);
    tsr__mp_type(&up.data, type, sizeof type);
    cr_assert_str_eq(type, "welcome");
    /* Pipelined gets, answered in order. */
    for (int id = 0; id < 3; id += 2) {
        msgpack_sbuffer_init(&sb);
        tsr__msg_pack_get(&sb, &(tsr__msg_get){.job = JOB, .id = (uint32_t)id});
        put_frame(pfd, &sb);
    }
    cr_assert_eq(get_frame(pfd, &up, &payload, &plen), 0);
    tsr__mp_type(&up.data, type, sizeof type);
    cr_assert_str_eq(type, "missing");
    cr_assert_eq(get_frame(pfd, &up, &payload, &plen), 0);
    tsr__mp_type(&up.data, type, sizeof type);
    cr_assert_str_eq(type, "chunk");
    cr_assert_eq(plen, 96);
    for (int i = 0; i < 12; i++) cr_expect_eq(((double *)payload)[i], 1.5);
    free(payload);
    close(pfd);

    /* A malformed message (packed by hand: the layer cannot write it) closes the scheduler
     * connection, and the worker leaves. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    tsr__mp_pack_type(&pk, 3, "compute");
    tsr__mp_pack_str(&pk, "job");
    tsr__mp_pack_str(&pk, "x");
    tsr__mp_pack_str(&pk, "tasks");
    msgpack_pack_array(&pk, 0);
    put_frame(fd, &sb);
    cr_assert_eq(get_frame(fd, &up, &payload, &plen), -1);

    msgpack_unpacked_destroy(&up);
    close(fd);
    close(lfd);
    pthread_join(wt.th, NULL);
    cr_expect_eq(wt.rc, 0);
    pthread_mutex_destroy(&wt.mu);
}

/* compute's tasks and inputs are checked as the worker reads them (LAZY lists, wire/msg.h): a
 * task whose third input has a string for an id refuses the whole message before anything of it
 * runs (no done for the good task before it), and the worker closes the connection as for any
 * message that does not decode. */
Test(worker, malformed_compute_input_is_refused_whole) {
    wsession s;
    session_start(&s, "wM", 1);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start_compute(&sb, &pk, 2);
    tsr_kdesc fill = kd(TSR_KOP_FILL, 0);
    double v = 1.5;
    fill.nf = 1;
    fill.f = &v;
    tsr_kdesc neg = kd(TSR_KOP_UNARY, TSR_NEG);
    pack_task(&pk, 0, &fill, 0, NULL, NULL);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, 1);
    pack_kdesc_bin(&pk, &neg);
    msgpack_pack_array(&pk, 3);
    for (int k = 0; k < 3; k++) {
        msgpack_pack_array(&pk, 2);
        if (k == 2)
            tsr__mp_pack_str(&pk, "0");
        else
            msgpack_pack_uint64(&pk, 0);
        msgpack_pack_nil(&pk);
    }
    put_frame(s.fd, &sb);
    void *payload;
    uint64_t plen;
    cr_assert_eq(get_frame(s.fd, &s.up, &payload, &plen), -1, "a frame before the close");
    session_end(&s);
}

/* ---- st: the disk tier's figures (issue 11) ---------------------------------------------- */

/* tsr__stats_fill sends the disk tier's four fields only while the tier is on, paused: false
 * included (the scheduler keeps the last value of an absent field, so a resumed worker must say
 * so), and none of them from a worker without one. */
Test(worker, st_carries_the_disk_tier_only_when_on) {
    tsr__worker *w = calloc(1, sizeof *w);
    cr_assert_not_null(w);
    w->st.status_fd = -1;
    w->st.rss_at = -1;
    tsr__m_wstats out;
    const uint64_t bits = TSR__M_BIT(wstats, spilled_bytes) | TSR__M_BIT(wstats, unspilled_bytes) |
                          TSR__M_BIT(wstats, disk_bytes) | TSR__M_BIT(wstats, paused);
    w->st.spill = (wspillstats){.spilled_bytes = 9}; /* off: whatever it holds stays home */
    tsr__stats_fill(w, &out);
    cr_assert_eq(out.has & bits, 0);
    cr_assert(TSR__M_HAS(wstats, &out, chunk_bytes), "the rest as before");

    w->st.spill = (wspillstats){.on = 1,
                                .spilled_bytes = 5u << 20,
                                .unspilled_bytes = 1u << 20,
                                .disk_bytes = 4u << 20,
                                .paused = 1};
    tsr__stats_fill(w, &out);
    cr_assert_eq(out.has & bits, bits);
    cr_assert(out.spilled_bytes == 5u << 20 && out.unspilled_bytes == 1u << 20 &&
              out.disk_bytes == 4u << 20 && out.paused == 1);
    w->st.spill.paused = 0;
    tsr__stats_fill(w, &out);
    cr_assert(TSR__M_HAS(wstats, &out, paused) && out.paused == 0);
    free(w);
}
