/* Placement tests on the pure state machine with simulated workers: inline sources, donated
 * buffers, the partition, earliest-finish placement and stealing against a slow worker, and
 * the round-robin baseline. The simulation runs each worker's sent tasks one at a time, in the
 * order sent, for a duration that depends on the worker, and reports them as the server would
 * (planning inputs when a task is written, so transfers and replicas are counted). */
#include "sched_fixture.h"
#include "mp_ref.h"
#include "wire/wire.h"

/* ---- a small discrete-event simulation ---- */

#define SIM_W 4
#define SIM_Q 1024

typedef struct sim {
    tsr__sched s;
    uint32_t job;
    double slow[SIM_W];          /* seconds per task on each worker */
    double mm[SIM_W];            /* seconds per MATMUL task (0: slow[]) */
    int xfer;                    /* add each task's input transfers to its time (sim_xfer) */
    int sizes;                   /* report the graph's chunk sizes (else 1000 bytes each) */
    double clock[SIM_W];         /* when each worker is free */
    tsr__key fifo[SIM_W][SIM_Q]; /* sent tasks: {job, task} */
    double run[SIM_W][SIM_Q];    /* their kernel seconds, and with transfers */
    double busy[SIM_W][SIM_Q];
    size_t head[SIM_W], tail[SIM_W];
    uint32_t ran[SIM_W];    /* tasks run per worker */
    uint32_t ran_mm[SIM_W]; /* of which MATMUL */
    uint32_t frees, recomputes, donations;
    uint64_t frees_of[128]; /* workers that got a free, per task (bit mask) */
    double makespan;
    int finished;
    /* memtrack: the simulation keeps each worker's chunk bytes from what it was told (outputs
     * made, frees, donated inputs consumed) and reports them in st with every done, as a
     * worker does; peak is the most each held at once. One job, task ids < GB_MAX. */
    int memtrack;
    uint64_t mem[SIM_W], peak[SIM_W];
    uint64_t donated[SIM_W][SIM_Q]; /* input bytes a sent task consumes (DONATE) */
    uint64_t size_of[GB_MAX];       /* the size each chunk was reported with */
} sim;

static int sim_kop(const sim *m, const tsr__sjob *j, uint32_t task) {
    return m->s.cost.c[j->cls[task]].kop;
}

/* The world's transfer time (the scheduler's priors, applied where the sim sends a task): a
 * peer fetch, plus the copies off and onto a GPU worker's device. */
static double sim_xfer(const sim *m, uint64_t nbytes, uint32_t from, uint32_t to) {
    double t = 3e-4 + (double)nbytes / 1e9;
    if (m->s.w[from].kind == TSR__KIND_GPU) t += (double)nbytes / 2e10;
    if (m->s.w[to].kind == TSR__KIND_GPU) t += (double)nbytes / 2e10;
    return t;
}

static void sim_drain(sim *m) {
    tsr__sched *s = &m->s;
    tsr__sched_balance(s);
    for (size_t i = 0; i < s->nact; i++) {
        tsr__action a = s->act[i];
        tsr__sjob *j = tsr__sched_job(s, a.job);
        if (a.kind == TSR__ACT_COMPUTE) {
            tsr__stask *t = &j->t[a.task];
            if (t->state != TSR__TS_RUNNING || t->where != a.worker || (t->flags & TSR__TF_SENT))
                continue;
            t->flags |= TSR__TF_SENT;
            double in = 0;
            for (uint32_t k = j->g.dep_off[a.task]; k < j->g.dep_off[a.task + 1]; k++) {
                const tsr__stask *ti = &j->t[j->g.deps[k]];
                if (m->xfer && !(ti->flags & TSR__TF_VIRTUAL) && ti->where != a.worker)
                    in += sim_xfer(m, ti->nbytes, ti->where, a.worker);
            }
            uint8_t fl[8];
            tsr__sched_plan_inputs(s, a.worker, j, a.task, fl);
            uint64_t donated = 0;
            for (uint32_t k = 0; k < j->g.dep_off[a.task + 1] - j->g.dep_off[a.task]; k++) {
                m->recomputes += (fl[k] & TSR__IN_RECOMPUTE) != 0;
                m->donations += (fl[k] & TSR__IN_DONATE) != 0;
                if (m->memtrack && (fl[k] & TSR__IN_DONATE))
                    donated += m->size_of[j->g.deps[j->g.dep_off[a.task] + k]];
            }
            cr_assert_lt(m->tail[a.worker], SIM_Q);
            m->donated[a.worker][m->tail[a.worker]] = donated;
            double r = sim_kop(m, j, a.task) == TSR_KOP_MATMUL && m->mm[a.worker] > 0
                           ? m->mm[a.worker]
                           : m->slow[a.worker];
            m->run[a.worker][m->tail[a.worker]] = r;
            m->busy[a.worker][m->tail[a.worker]] = r + in;
            m->fifo[a.worker][m->tail[a.worker]++] = (tsr__key){a.job, a.task};
        } else if (a.kind == TSR__ACT_FREE) {
            m->frees++;
            if (a.task < 128) m->frees_of[a.task] |= 1ull << a.worker;
            if (m->memtrack) {
                cr_assert_geq(m->mem[a.worker], m->size_of[a.task], "a free of more than held");
                m->mem[a.worker] -= m->size_of[a.task];
            }
        } else if (a.kind == TSR__ACT_FINISHED) {
            m->finished = 1;
        }
    }
    tsr__sched_clear_actions(s);
}

/* Runs until the job finishes: the worker whose current task ends first reports it, with its
 * kernel time (and the size the graph gave, with `sizes`). */
static void sim_run(sim *m, uint32_t nw) {
    sim_drain(m);
    for (int guard = 0; guard < 100000 && !m->finished; guard++) {
        int best = -1;
        for (uint32_t w = 0; w < nw; w++)
            if (m->head[w] < m->tail[w] &&
                (best < 0 || m->clock[w] + m->busy[w][m->head[w]] <
                                 m->clock[best] + m->busy[best][m->head[best]]))
                best = (int)w;
        cr_assert_geq(best, 0, "nothing running and the job is not finished");
        size_t h = m->head[best]++;
        tsr__key k = m->fifo[best][h];
        m->clock[best] += m->busy[best][h];
        /* Idle workers catch up with the clock (they could not start earlier). */
        for (uint32_t w = 0; w < nw; w++)
            if (m->head[w] == m->tail[w] && m->clock[w] < m->clock[best])
                m->clock[w] = m->clock[best];
        m->ran[best]++;
        tsr__sjob *j = tsr__sched_job(&m->s, k.job);
        m->ran_mm[best] += sim_kop(m, j, k.task) == TSR_KOP_MATMUL;
        if (m->clock[best] > m->makespan) m->makespan = m->clock[best];
        uint64_t nbytes = m->sizes ? j->t[k.task].nbytes : 1000;
        if (m->memtrack) {
            /* The output is made, then the donated inputs go; st goes with the done. */
            cr_assert_lt(k.task, GB_MAX);
            m->size_of[k.task] = nbytes;
            m->mem[best] += nbytes;
            if (m->mem[best] > m->peak[best]) m->peak[best] = m->mem[best];
            m->mem[best] -= m->donated[best][h];
            tsr__wstats st = m->s.w[best].st;
            st.chunk_bytes = m->mem[best];
            tsr__sched_worker_stats(&m->s, (uint32_t)best, &st);
        }
        cr_assert_eq(tsr__sched_done(&m->s, (uint32_t)best, k.job, k.task, nbytes, m->run[best][h]),
                     0);
        sim_drain(m);
    }
    cr_assert(m->finished);
}

/* Forgets the last run (counts, clocks, queues) but not what the scheduler learned. */
static void sim_again(sim *m) {
    memset(m->clock, 0, sizeof m->clock);
    memset(m->head, 0, sizeof m->head);
    memset(m->tail, 0, sizeof m->tail);
    memset(m->ran, 0, sizeof m->ran);
    memset(m->ran_mm, 0, sizeof m->ran_mm);
    m->frees = m->recomputes = m->donations = 0;
    memset(m->frees_of, 0, sizeof m->frees_of);
    m->makespan = 0;
    m->finished = 0;
}

static void sim_add(sim *m, uint32_t w, int kind) {
    char name[16], addr[32];
    snprintf(name, sizeof name, "%s%u", kind == TSR__KIND_GPU ? "g" : "w", w);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", 9001 + w);
    cr_assert_eq(tsr__sched_add_worker(&m->s, w + 1, 1, kind, addr, name), w);
    m->slow[w] = 0.01;
}

static sim *sim_new(void) {
    sim *m = calloc(1, sizeof *m);
    cr_assert_not_null(m);
    tsr__sched_init(&m->s, &quiet);
    return m;
}

static void sim_free(sim *m) {
    tsr__sched_free(&m->s);
    free(m);
}

static void sim_init(sim *m, uint32_t nw) {
    memset(m, 0, sizeof *m);
    tsr__sched_init(&m->s, &quiet);
    for (uint32_t w = 0; w < nw; w++) sim_add(m, w, TSR__KIND_CPU);
}

/* ---- tests ---- */

Test(placement, cheap_sources_are_made_where_needed) {
    sim m;
    sim_init(&m, 2);
    gb g = {0};
    uint32_t r = gb_task(&g, 0, NULL);
    g.src[r] = 1 + TSR_KOP_RANDOM;
    for (int i = 0; i < 4; i++) g.outputs[g.nout++] = gb_task(&g, 1, (uint32_t[]){r});
    m.job = submit(&m.s, &g);
    tsr__sjob *j = tsr__sched_job(&m.s, m.job);
    cr_assert(j->t[r].flags & TSR__TF_VIRTUAL);
    cr_assert_eq(j->t[r].state, TSR__TS_MEMORY, "available from the start");
    cr_assert_eq(j->ndone, 1);
    sim_run(&m, 2);
    cr_assert(m.ran[0] > 0 && m.ran[1] > 0, "consumers spread over both workers");
    cr_assert_eq(m.recomputes, 4, "every consumer is told how to make it");
    cr_assert_eq(j->moved_bytes, 0, "nothing moved");
    cr_assert_eq(m.ran[0] + m.ran[1], 4, "the source never runs as a task of its own");
    cr_assert_eq(m.frees_of[r], 3, "its replica is freed on both workers");
    tsr__sched_free(&m.s);
}

Test(placement, a_source_that_is_an_output_runs_as_a_task) {
    sim m;
    sim_init(&m, 1);
    gb g = {0};
    uint32_t r = gb_task(&g, 0, NULL);
    g.src[r] = 1 + TSR_KOP_FILL;
    g.outputs[g.nout++] = r;
    m.job = submit(&m.s, &g);
    cr_assert_not(tsr__sched_job(&m.s, m.job)->t[r].flags & TSR__TF_VIRTUAL);
    sim_run(&m, 1);
    cr_assert_eq(m.ran[0], 1);
    tsr__sched_free(&m.s);
}

Test(placement, last_consumer_gets_the_buffer) {
    sim m;
    sim_init(&m, 1);
    gb g = {0};
    uint32_t a = gb_task(&g, 0, NULL);
    uint32_t b = gb_task(&g, 1, (uint32_t[]){a});    /* a has two consumers: b and c */
    uint32_t c = gb_task(&g, 2, (uint32_t[]){a, b}); /* last of a, and of b */
    uint32_t d = gb_task(&g, 1, (uint32_t[]){c});
    g.outputs[g.nout++] = d;
    g.outputs[g.nout++] = c; /* c is an output too: never donated */
    m.job = submit(&m.s, &g);
    sim_run(&m, 1);
    /* c takes a's and b's buffers (2), d may not take c's (an output). */
    cr_assert_eq(m.donations, 2);
    cr_assert_eq(m.frees_of[a] | m.frees_of[b], 0, "no free for donated buffers");
    tsr__sjob *j = tsr__sched_job(&m.s, m.job);
    cr_assert_eq(j->t[a].state, TSR__TS_RELEASED);
    cr_assert_eq(j->t[c].state, TSR__TS_MEMORY);
    tsr__sched_free(&m.s);
}

Test(placement, blocked_matmul_rows_stay_together) {
    /* C = A B on a 4x4 grid of blocks, random A and B: k-chains of 4 gemms per C block. */
    sim m;
    sim_init(&m, 2);
    gb g = {0};
    uint32_t A[4][4], B[4][4], Cb[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            uint32_t prev = UINT32_MAX;
            for (int k = 0; k < 4; k++) {
                if (j == 0) A[i][k] = gb_task(&g, 0, NULL), g.src[A[i][k]] = 1 + TSR_KOP_RANDOM;
                if (i == 0) B[k][j] = gb_task(&g, 0, NULL), g.src[B[k][j]] = 1 + TSR_KOP_RANDOM;
                uint32_t in[3] = {A[i][k], B[k][j], prev};
                prev = gb_task(&g, k ? 3 : 2, in);
                g.nbytes[prev] = 1 << 21;
            }
            Cb[i][j] = prev;
            g.outputs[g.nout++] = prev;
        }
    cr_assert_lt(g.n, 128);
    m.job = submit(&m.s, &g);
    sim_run(&m, 2);
    tsr__sjob *j = tsr__sched_job(&m.s, m.job);
    cr_assert(m.ran[0] >= 24 && m.ran[1] >= 24, "balanced: %u / %u", m.ran[0], m.ran[1]);
    /* Each chain moves its partial at most once (a cut through it), and sources are made on
     * each worker at most once. */
    cr_assert_leq(j->moved_bytes, 2u * (1u << 21), "moved %llu bytes",
                  (unsigned long long)j->moved_bytes);
    cr_assert_leq(m.makespan, 32 * 0.01 * 1.1, "makespan %.3f s", m.makespan);
    (void)Cb;
    tsr__sched_free(&m.s);
}

Test(placement, slow_worker_gets_less_work) {
    /* 60 independent 10 ms tasks, one worker twice as slow (its core is shared): the ideal
     * makespan is 60 / (100 + 50) tasks/s = 0.4 s. Round-robin would take 30 * 0.02 = 0.6 s. */
    sim m;
    sim_init(&m, 2);
    m.slow[1] = 0.02;
    gb g = {0};
    for (int i = 0; i < 60; i++) g.outputs[g.nout++] = gb_task(&g, 0, NULL);
    m.job = submit(&m.s, &g);
    sim_run(&m, 2);
    cr_assert_gt(m.ran[0], m.ran[1] + 10, "fast %u, slow %u", m.ran[0], m.ran[1]);
    cr_assert_leq(m.makespan, 1.15 * 0.4, "makespan %.3f s", m.makespan);
    cr_assert_lt(m.s.w[1].speed / m.s.w[0].speed, 2.5);
    cr_assert_gt(m.s.w[1].speed / m.s.w[0].speed, 1.4, "learned: w1 slower");
    tsr__sched_free(&m.s);
}

/* A tiny task that ran late (its worker descheduled) is one sample, not a new mean: it neither
 * multiplies its class's estimate nor, through the next on-time tasks, makes its worker look
 * several times faster. Longer tasks still teach speed (slow_worker_gets_less_work). */
Test(placement, a_late_tiny_task_moves_neither_mean_nor_speed) {
    tsr__costs c;
    tsr__costs_init(&c);
    uint32_t add = tsr__cost_class(&c, "add", TSR_KOP_BINARY, TSR_FLOAT64, 1, 64, 8.f);
    tsr__sworker w = {.kind = TSR__KIND_CPU, .speed = 1, .threads = 1};
    for (int k = 0; k < 20; k++) tsr__cost_learn(&c, add, &w, 3e-7);
    cr_assert_float_eq(tsr__cost_est(&c, add, &w), 3e-7, 1e-12);
    tsr__cost_learn(&c, add, &w, 5e-3); /* 16,000 times the mean */
    double late = tsr__cost_est(&c, add, &w);
    /* counted as 8 means with weight 0.1: 0.3 + 0.1 * 2.1 us */
    cr_assert_float_eq(late, 5.1e-7, 1e-12, "mean after the late task: %g s", late);
    for (int k = 0; k < 50; k++) tsr__cost_learn(&c, add, &w, 3e-7);
    cr_assert_float_eq(w.speed, 1.0, 1e-12, "speed %g", w.speed);
    cr_assert_lt(tsr__cost_est(&c, add, &w), 3.02e-7, "back to the usual length");
    tsr__costs_free(&c);
}

Test(placement, round_robin_baseline_alternates) {
    sim m;
    sim_init(&m, 2);
    m.s.roundrobin = 1;
    m.slow[1] = 0.02;
    gb g = {0};
    for (int i = 0; i < 20; i++) g.outputs[g.nout++] = gb_task(&g, 0, NULL);
    m.job = submit(&m.s, &g);
    sim_run(&m, 2);
    cr_assert_eq(m.ran[0], 10);
    cr_assert_eq(m.ran[1], 10);
    tsr__sched_free(&m.s);
}

Test(placement, many_workers_place_on_the_input_holder) {
    /* With more workers than the full scan covers, candidates are pruned to the home, the
     * input holders and the least loaded: a chain still follows its input. */
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    for (uint32_t w = 0; w < 40; w++) {
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%u", 9001 + w);
        tsr__sched_add_worker(&s, w + 1, 1, TSR__KIND_CPU, addr, "w");
    }
    gb g = {0};
    uint32_t a = gb_task(&g, 0, NULL);
    uint32_t b = gb_task(&g, 1, (uint32_t[]){a});
    g.nbytes[a] = 64u << 20; /* a big input: moving it costs more than waiting */
    g.outputs[g.nout++] = b;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    tsr__sjob *j = tsr__sched_job(&s, job);
    uint32_t wa = j->t[a].where;
    cr_assert_eq(tsr__sched_done(&s, wa, job, a, 64u << 20, 0.01), 0);
    drain(&s, &x);
    cr_assert_eq(j->t[b].where, wa);
    tsr__sched_free(&s);
}

Test(placement, per_operation_counters_add_up) {
    /* The monitor's counters are kept as tasks change state; after a run they must agree with
     * the graph, and the info snapshot must carry them. */
    sim m;
    sim_init(&m, 2);
    gb g = {0};
    uint32_t r = gb_task(&g, 0, NULL);
    g.src[r] = 1 + TSR_KOP_RANDOM;
    for (int i = 0; i < 6; i++) {
        uint32_t a = gb_task(&g, 1, (uint32_t[]){r});
        g.outputs[g.nout++] = gb_task(&g, 1, (uint32_t[]){a});
    }
    m.job = submit(&m.s, &g);
    tsr__sjob *j = tsr__sched_job(&m.s, m.job);
    cr_assert_eq(j->nops, 1, "one array, one op name in the fixture");
    cr_assert_eq(j->op_total[0], g.n);
    cr_assert_eq(j->op_done[0], 1, "the inline source");
    cr_assert_eq(j->op_inline[0], 1);
    cr_assert_eq(j->op_ready[0] + m.s.w[0].inflight.n + m.s.w[1].inflight.n, 6,
                 "the six first-level tasks are ready or sent");
    sim_run(&m, 2);
    cr_assert_eq(j->op_done[0], g.n);
    cr_assert_eq(j->op_ready[0], 0);
    cr_assert_eq(m.s.done_total, g.n - 1);

    tsr__events ev = {0};
    tsr__events_add(&ev, 1.5, "worker %s joined", "w0");
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tsr__proto_info(&b, &m.s, &ev, 2.0, "127.0.0.1:1");
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&up, b.data, b.size, &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *jl = tsr__mp_get(&up.data, "jlist");
    cr_assert_eq(jl->via.array.size, 1);
    const msgpack_object *ops = tsr__mp_get(&jl->via.array.ptr[0], "ops");
    uint64_t done = 0, total = 0;
    cr_assert_eq(tsr__mp_get_uint(&ops->via.array.ptr[0], "done", &done), 0);
    cr_assert_eq(tsr__mp_get_uint(&ops->via.array.ptr[0], "total", &total), 0);
    cr_assert_eq(done, g.n);
    cr_assert_eq(total, g.n);
    const msgpack_object *wl = tsr__mp_get(&up.data, "wlist");
    cr_assert_eq(wl->via.array.size, 2);
    const msgpack_object *evs = tsr__mp_get(&up.data, "events");
    cr_assert_eq(evs->via.array.size, 1);
    cr_assert(tsr__mp_str_eq(&evs->via.array.ptr[0].via.array.ptr[1], "worker w0 joined"));
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&b);
    tsr__sched_free(&m.s);
}

Test(placement, trace_records_travel_in_finished) {
    sim m;
    sim_init(&m, 2);
    gb g = {0};
    for (int i = 0; i < 4; i++) g.outputs[g.nout++] = gb_task(&g, 0, NULL);
    m.job = submit(&m.s, &g);
    tsr__sjob *j = tsr__sched_job(&m.s, m.job);
    tsr__sched_trace_span(&m.s, 0, m.job, 1, 100.0, 0.5, 0); /* untraced: ignored */
    cr_assert_eq(j->nspans, 0);
    j->trace = 1;
    tsr__sched_trace_span(&m.s, 1, m.job, 2, 100.0, 0.5, 3);
    tsr__sched_trace_xfer(&m.s, 0, m.job, 2, 4096, 100.5, 100.6, "127.0.0.1:9002");
    tsr__sched_trace_span(&m.s, 1, m.job, 99, 100.0, 0.5, 0); /* no such task: ignored */
    sim_run(&m, 2);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tsr__proto_finished(&b, &m.s, j, 0);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&up, b.data, b.size, &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *tr = tsr__mp_get(&up.data, "trace");
    cr_assert_not_null(tr);
    const msgpack_object *tasks = tsr__mp_get(tr, "tasks");
    cr_assert_eq(tasks->via.array.size, 1);
    const msgpack_object *t = tasks->via.array.ptr[0].via.array.ptr;
    cr_assert_eq(t[0].via.u64, 1);
    cr_assert_eq(t[1].via.u64, 2);
    cr_assert_eq(t[5].via.u64, 3);
    const msgpack_object *xs = tsr__mp_get(tr, "transfers");
    cr_assert_eq(xs->via.array.size, 1);
    cr_assert_eq(xs->via.array.ptr[0].via.array.ptr[2].via.u64, 4096);
    cr_assert(tsr__mp_str_eq(&xs->via.array.ptr[0].via.array.ptr[5], "127.0.0.1:9002"));
    cr_assert_eq(tsr__mp_get(tr, "workers")->via.array.size, 2);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&b);
    tsr__sched_free(&m.s);
}

/* ---- memory (issue 11): roots throttled by bytes, placement by room ---- */

/* A sum of 64 roots of 1 MiB each (opaque sources, so they run as tasks), in groups of 8 under
 * combines of 1 KiB, then one combine of the 8: lowered depth-first, as lowering emits it. The
 * roots are tiny (200 us, and expected to be so), so the in-flight window is deep enough to
 * take every root at once. */
static uint32_t sum_of_roots(gb *g) {
    memset(g, 0, sizeof *g);
    uint32_t groups[8];
    for (int c = 0; c < 8; c++) {
        uint32_t r[8];
        for (int i = 0; i < 8; i++) {
            r[i] = gb_task(g, 0, NULL);
            g->nbytes[r[i]] = 1u << 20;
            g->flops[r[i]] = 1;
        }
        groups[c] = gb_task(g, 8, r);
        g->nbytes[groups[c]] = 1024;
        g->flops[groups[c]] = 1;
    }
    uint32_t total = gb_task(g, 8, groups);
    g->nbytes[total] = 1024;
    g->outputs[g->nout++] = total;
    return total;
}

static uint64_t roots_peak(uint64_t mem_limit) {
    sim *m = sim_new();
    sim_add(m, 0, TSR__KIND_CPU);
    m->slow[0] = 2e-4;
    m->sizes = 1;
    m->memtrack = 1;
    m->s.w[0].mem_limit = mem_limit; /* from its hello */
    gb g;
    sum_of_roots(&g);
    m->job = submit(&m->s, &g);
    sim_run(m, 1);
    cr_assert_eq(m->ran[0], 64 + 9);
    cr_assert_eq(m->mem[0], 1024, "only the output is left");
    uint64_t peak = m->peak[0];
    sim_free(m);
    return peak;
}

Test(placement, roots_are_released_within_the_memory_limit) {
    /* Without a limit the deep window takes every root before their combines can run: the
     * worker holds them all. With a 32 MiB limit roots go out only while what the worker will
     * hold stays under half of it (16 MiB), beyond the window's minimum of two tasks; their
     * combines, ready as soon as their eight inputs are, run before later roots. */
    uint64_t unlimited = roots_peak(0);
    cr_assert_geq(unlimited, 48u << 20, "peak %llu: the test does not exercise the window",
                  (unsigned long long)unlimited);
    uint64_t limited = roots_peak(32u << 20);
    cr_log_info("peak chunk bytes: %llu without a limit, %llu with 32 MiB",
                (unsigned long long)unlimited, (unsigned long long)limited);
    cr_assert_leq(limited, (16u << 20) + (2u << 20) + (64u << 10), "peak %llu bytes",
                  (unsigned long long)limited);
    cr_assert_geq(limited, 8u << 20, "a combine's eight inputs are held at once");
}

/* 24 chains r -> t: r tiny, t makes 1 MiB that the client asked for (so it stays). w0 has a
 * 4 MiB limit, w1 64 MiB. Each t is ready where its r ran, and would stay there by earliest
 * finish (its input is there); once w0 has no room for another MiB, t goes to w1. */
static void held_outputs(sim *m, uint64_t limit0) {
    sim_init(m, 2);
    m->sizes = 1;
    m->memtrack = 1;
    m->s.w[0].mem_limit = limit0;
    m->s.w[1].mem_limit = limit0 ? 64u << 20 : 0;
    gb g = {0};
    for (int i = 0; i < 24; i++) {
        uint32_t r = gb_task(&g, 0, NULL);
        uint32_t t = gb_task(&g, 1, (uint32_t[]){r});
        g.nbytes[t] = 1u << 20;
        g.outputs[g.nout++] = t;
    }
    m->job = submit(&m->s, &g);
    sim_run(m, 2);
}

Test(placement, a_worker_without_room_is_skipped_while_another_has_room) {
    sim *m = sim_new();
    held_outputs(m, 0);
    cr_assert_geq(m->peak[0], 8u << 20, "without limits w0 keeps its share: %llu",
                  (unsigned long long)m->peak[0]);
    sim_free(m);

    m = sim_new();
    held_outputs(m, 4u << 20);
    cr_assert_leq(m->peak[0], (4u << 20) + (16u << 10), "w0 holds %llu bytes",
                  (unsigned long long)m->peak[0]);
    cr_assert_eq(m->mem[0] + m->mem[1], 24u << 20, "every output is held somewhere");
    cr_assert_geq(m->mem[1], 20u << 20);
    sim_free(m);
}

/* Two workers near their 100 MiB limits (as reported: 99 MiB of chunks); a task b whose 64 MiB
 * input a was just made on one of them, making 2 MiB. Returns whether b goes where a is. With
 * room for b on the other worker (room != 0), it goes there, 64 MiB transfer and all; with room
 * nowhere the rule ranks both alike and earliest finish decides as without it: b stays. */
static int follows_its_input(int room) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    gb g = {0};
    uint32_t a = gb_task(&g, 0, NULL);
    uint32_t b = gb_task(&g, 1, (uint32_t[]){a});
    g.nbytes[a] = 64u << 20;
    g.nbytes[b] = 2u << 20;
    g.outputs[g.nout++] = b;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    tsr__sjob *j = tsr__sched_job(&s, job);
    uint32_t wa = j->t[a].where;
    for (uint32_t w = 0; w < 2; w++) {
        s.w[w].mem_limit = 100u << 20;
        tsr__wstats st = s.w[w].st;
        st.chunk_bytes = room && w != wa ? 90u << 20 : 99u << 20;
        tsr__sched_worker_stats(&s, w, &st);
    }
    cr_assert_eq(tsr__sched_done(&s, wa, job, a, 64u << 20, 0.01), 0);
    int follows = j->t[b].where == wa;
    tsr__sched_free(&s);
    return follows;
}

Test(placement, memory_ranks_before_finish_time) {
    cr_assert(follows_its_input(0), "no room anywhere: b stays with its input");
    cr_assert_not(follows_its_input(1), "room on the other worker: b goes there");
}

/* ---- GPU workers (issue 10) ---- */

/* A random source of nbytes (one flop per float64, as lowering counts). */
static uint32_t random_block(gb *g, uint64_t nbytes) {
    uint32_t r = gb_task(g, 0, NULL);
    g->src[r] = 1 + TSR_KOP_RANDOM;
    g->nbytes[r] = nbytes;
    g->flops[r] = (float)(nbytes / 8);
    return r;
}

/* C = A B on an n x n grid of blocks with kk k-steps each: random A and B blocks (inline
 * sources) and one k-chain of MATMUL tasks per C block (2e8 flops each), all blocks of
 * `nbytes`. */
static void blocked_matmul(gb *g, int n, int kk, uint64_t nbytes) {
    memset(g, 0, sizeof *g);
    uint32_t A[8][8], B[8][8];
    cr_assert(n <= 8 && kk <= 8);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            uint32_t prev = UINT32_MAX;
            for (int k = 0; k < kk; k++) {
                if (j == 0) A[i][k] = random_block(g, nbytes);
                if (i == 0) B[k][j] = random_block(g, nbytes);
                uint32_t in[3] = {A[i][k], B[k][j], prev};
                prev = gb_task(g, k ? 3 : 2, in);
                g->src[prev] = 1 + TSR_KOP_MATMUL;
                g->nbytes[prev] = nbytes;
            }
            g->outputs[g->nout++] = prev;
        }
}

/* A cluster of ngpu GPU workers (workers 0..) and ncpu CPU workers, each with one executor: a
 * MATMUL task takes 10 ms on a CPU and 0.5 ms on a GPU, anything else 1 ms and 0.1 ms; inputs
 * moved take the time sim_xfer says. */
static sim *mixed(uint32_t ngpu, uint32_t ncpu) {
    sim *m = sim_new();
    uint32_t w = 0;
    for (uint32_t k = 0; k < ngpu; k++, w++) {
        sim_add(m, w, TSR__KIND_GPU);
        m->mm[w] = 0.0005;
        m->slow[w] = 0.0001;
    }
    for (uint32_t k = 0; k < ncpu; k++, w++) {
        sim_add(m, w, TSR__KIND_CPU);
        m->mm[w] = 0.01;
        m->slow[w] = 0.001;
    }
    m->xfer = 1;
    m->sizes = 1;
    return m;
}

/* Runs g twice on m (the first run teaches the scheduler each kind's times) and leaves the
 * second run's figures in m. */
static void run_learned(sim *m, const gb *g) {
    m->job = submit(&m->s, g);
    sim_run(m, (uint32_t)m->s.nw);
    sim_again(m);
    m->job = submit(&m->s, g);
    sim_run(m, (uint32_t)m->s.nw);
}

Test(placement_gpu, gpu_takes_most_matmuls_and_cpus_only_shorten_the_makespan) {
    static gb g;
    blocked_matmul(&g, 6, 6, 256 << 10);
    sim *gpu = mixed(1, 0), *cpu = mixed(0, 2), *mix = mixed(1, 2);
    run_learned(gpu, &g);
    run_learned(cpu, &g);
    run_learned(mix, &g);
    uint32_t mm = 6 * 6 * 6;
    cr_log_info("makespans: gpu only %.4f s, 2 cpus %.4f s, 1 gpu + 2 cpus %.4f s; matmuls on "
                "the gpu %u, cpus %u / %u",
                gpu->makespan, cpu->makespan, mix->makespan, mix->ran_mm[0], mix->ran_mm[1],
                mix->ran_mm[2]);
    cr_assert_eq(mix->ran_mm[0] + mix->ran_mm[1] + mix->ran_mm[2], mm);
    /* The ideal split of 216 products at 2000/s and 2 x 100/s: the GPU does 20/22 of them (196),
     * 98 ms in all; GPU alone 108 ms. */
    cr_assert_geq(mix->ran_mm[0], mm * 8 / 10, "the GPU does most: %u of %u", mix->ran_mm[0], mm);
    cr_assert_gt(mix->ran_mm[1] + mix->ran_mm[2], 0, "the CPUs help");
    cr_assert_lt(mix->makespan, gpu->makespan, "mixed %.4f s, GPU alone %.4f s", mix->makespan,
                 gpu->makespan);
    cr_assert_lt(mix->makespan, cpu->makespan);
    cr_assert_leq(gpu->makespan, mm * 0.0005 * 1.05, "GPU alone: back to back");
    /* The partition gave the GPU about its share of the products as homes (20/22), not a
     * thread's (1/3). */
    const tsr__sjob *j = tsr__sched_job(&mix->s, mix->job);
    uint32_t homes[3] = {0};
    for (uint32_t t = 0; t < j->g.ntasks; t++)
        if (g.src[t] == 1 + TSR_KOP_MATMUL && j->t[t].home < 3) homes[j->t[t].home]++;
    cr_assert(homes[0] >= mm * 85 / 100 && homes[0] <= mm * 95 / 100, "GPU homes %u, CPUs %u, %u",
              homes[0], homes[1], homes[2]);
    sim_free(gpu);
    sim_free(cpu);
    sim_free(mix);
}

Test(placement_gpu, slow_cpus_do_not_stretch_the_makespan) {
    /* CPUs 100 times slower than the GPU on matmul: a product given to one would have to be
     * among the first to pay off. Whatever they take, the job must not end later than on the
     * GPU alone. */
    static gb g;
    blocked_matmul(&g, 6, 6, 256 << 10);
    sim *gpu = mixed(1, 0), *mix = mixed(1, 2);
    mix->mm[1] = mix->mm[2] = 0.05;
    run_learned(gpu, &g);
    run_learned(mix, &g);
    cr_log_info("makespans: gpu only %.4f s, 1 gpu + 2 slow cpus %.4f s; matmuls on the cpus %u",
                gpu->makespan, mix->makespan, mix->ran_mm[1] + mix->ran_mm[2]);
    cr_assert_leq(mix->makespan, gpu->makespan * 1.01);
    sim_free(gpu);
    sim_free(mix);
}

Test(placement_gpu, small_elementwise_ops_stay_with_their_inputs_on_cpus) {
    /* Sixteen 64 KiB chunks made on the CPUs (a CPU-only family), then an elementwise op per
     * pair. The GPU runs elementwise ops ten times faster, but moving two inputs onto it costs
     * more than the op does where they are. */
    static gb g;
    memset(&g, 0, sizeof g);
    for (int p = 0; p < 8; p++) {
        uint32_t in[2];
        for (int k = 0; k < 2; k++) {
            in[k] = gb_task(&g, 0, NULL);
            g.src[in[k]] = 1 + TSR_KOP_LOAD;
            g.nbytes[in[k]] = 64 << 10;
            g.flops[in[k]] = 8192;
        }
        uint32_t b = gb_task(&g, 2, in);
        g.src[b] = 1 + TSR_KOP_BINARY;
        g.nbytes[b] = 64 << 10;
        g.flops[b] = 8192;
        g.outputs[g.nout++] = b;
    }
    sim *m = mixed(1, 2);
    m->s.kernels[TSR__KIND_GPU][TSR_KOP_LOAD] = 0;
    for (int w = 0; w < 3; w++) m->slow[w] = w == 0 ? 0.000005 : 0.00005;
    run_learned(m, &g);
    cr_assert_eq(m->ran[0], 0, "the GPU ran %u of them", m->ran[0]);
    cr_assert_eq(m->ran[1] + m->ran[2], g.n);
    sim_free(m);
}

/* The priors of docs/ARCHITECTURE.md, for checking decisions by hand. */
#define CPU_FLOPS 2e10
#define CPU_BYTES 4e9
#define CPU_TASK 2e-6
#define GPU_FLOPS 5e12
#define GPU_BYTES 1e11
#define GPU_TASK 1e-5
#define LINK_BW 1e9
#define LINK_LAT 3e-4
#define PCIE 2e10

/* One elementwise op on a 64 MiB chunk made on a CPU (a CPU-only family), while that CPU has Q
 * seconds of other work in flight: on the CPU at once behind that work, or on an idle GPU after
 * the peer transfer and the host-to-device copy. Returns where it went. */
static uint32_t place_after_load(double Q) {
    const uint64_t big = 64u << 20;
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    s.kernels[TSR__KIND_GPU][TSR_KOP_LOAD] = 0;
    tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "cpu");
    tsr__sched_add_worker(&s, 2, 1, TSR__KIND_GPU, "127.0.0.1:9002", "gpu");
    gb g = {0};
    uint32_t t0 = gb_task(&g, 0, NULL), fill = gb_task(&g, 0, NULL);
    g.src[t0] = g.src[fill] = 1 + TSR_KOP_LOAD;
    g.nbytes[t0] = big;
    g.flops[t0] = 1;
    /* The filler's prior is Q: flops at the CPU rate, plus its 1000 bytes and the task cost. */
    g.flops[fill] = (float)((Q - 1000 / CPU_BYTES - CPU_TASK) * CPU_FLOPS);
    uint32_t t1 = gb_task(&g, 1, (uint32_t[]){t0});
    g.src[t1] = 1 + TSR_KOP_BINARY;
    g.nbytes[t1] = big;
    g.flops[t1] = (float)(big / 8);
    g.outputs[g.nout++] = t1;
    g.outputs[g.nout++] = fill;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    tsr__sjob *j = tsr__sched_job(&s, job);
    cr_assert(j->t[t0].where == 0 && j->t[fill].where == 0, "only the CPU makes them");
    cr_assert_eq(j->t[t0].state, TSR__TS_RUNNING);
    cr_assert_eq(j->t[fill].state, TSR__TS_RUNNING);
    cr_assert(fabs(j->t[fill].est - Q) < 1e-6, "the filler is %.6f s", j->t[fill].est);
    cr_assert_eq(tsr__sched_done(&s, 0, job, t0, big, -1), 0); /* no time: nothing learned */
    drain(&s, &x);
    uint32_t where = j->t[t1].where;
    tsr__sched_free(&s);
    return where;
}

Test(placement_gpu, moving_to_a_gpu_pays_the_copy_onto_its_device) {
    const double big = (double)(64u << 20);
    double cpu_run = (big / 8) / CPU_FLOPS + 2 * big / CPU_BYTES + CPU_TASK;
    double gpu_run = (big / 8) / GPU_FLOPS + 2 * big / GPU_BYTES + GPU_TASK;
    double net = LINK_LAT + big / LINK_BW, h2d = big / PCIE;
    /* The CPU keeps it while Q + cpu_run < net + h2d + gpu_run. Without the copy onto the
     * device the GPU would win from Q > net + gpu_run - cpu_run already. */
    double lo = net + gpu_run - cpu_run, hi = lo + h2d;
    cr_assert_eq(place_after_load((lo + hi) / 2), 0, "the copy makes the CPU finish first");
    cr_assert_eq(place_after_load(hi + 0.002), 1, "a busy enough CPU loses it to the GPU");
}

Test(placement_gpu, priors_and_learning_are_per_kind) {
    tsr__costs c;
    tsr__costs_init(&c);
    uint64_t nb = 2u << 20;
    uint32_t mm = tsr__cost_class(&c, "matmul", TSR_KOP_MATMUL, TSR_FLOAT64, 3, nb, 2.7e8f);
    uint32_t add = tsr__cost_class(&c, "add", TSR_KOP_BINARY, TSR_FLOAT64, 2, nb, 262144.f);
    double mcpu = tsr__cost_kind(&c, mm, TSR__KIND_CPU),
           mgpu = tsr__cost_kind(&c, mm, TSR__KIND_GPU);
    cr_assert_float_eq(mcpu, 2.7e8 / CPU_FLOPS + 4.0 * nb / CPU_BYTES + CPU_TASK, 1e-9);
    cr_assert_float_eq(mgpu, 2.7e8 / GPU_FLOPS + 4.0 * nb / GPU_BYTES + GPU_TASK, 1e-9);
    cr_assert_gt(mcpu / mgpu, 50, "a GPU's matmul prior is far faster: %.1fx", mcpu / mgpu);
    double acpu = tsr__cost_kind(&c, add, TSR__KIND_CPU),
           agpu = tsr__cost_kind(&c, add, TSR__KIND_GPU);
    cr_assert_float_eq(agpu, 262144 / GPU_FLOPS + 3.0 * nb / GPU_BYTES + GPU_TASK, 1e-9);
    cr_assert_gt(acpu / agpu, 10, "memory-bound: the bandwidth ratio, about 25x");
    /* The same family of another dtype is another class. */
    cr_assert_neq(tsr__cost_class(&c, "add", TSR_KOP_BINARY, TSR_FLOAT32, 2, nb, 262144.f), add);
    /* Measurements on a CPU worker replace the CPU prior only. */
    tsr__sworker cpu = {.kind = TSR__KIND_CPU, .speed = 1, .threads = 1};
    tsr__sworker gpu = {.kind = TSR__KIND_GPU, .speed = 1, .threads = 1};
    for (int k = 0; k < 5; k++) tsr__cost_learn(&c, mm, &cpu, 0.02);
    cr_assert_float_eq(tsr__cost_est(&c, mm, &cpu), 0.02, 1e-9);
    cr_assert_float_eq(tsr__cost_est(&c, mm, &gpu), mgpu, 1e-12);
    for (int k = 0; k < 5; k++) tsr__cost_learn(&c, mm, &gpu, 0.001);
    cr_assert_float_eq(tsr__cost_est(&c, mm, &gpu), 0.001, 1e-9);
    cr_assert_float_eq(tsr__cost_est(&c, mm, &cpu), 0.02, 1e-9);
    /* A transfer to or from a GPU worker adds the device copy. */
    double move = tsr__cost_move(&c, nb);
    cr_assert_float_eq(tsr__cost_xfer(&c, nb, TSR__KIND_CPU, TSR__KIND_CPU), move, 1e-12);
    cr_assert_float_eq(tsr__cost_xfer(&c, nb, TSR__KIND_CPU, TSR__KIND_GPU), move + nb / PCIE,
                       1e-12);
    cr_assert_float_eq(tsr__cost_xfer(&c, nb, TSR__KIND_GPU, TSR__KIND_CPU), move + nb / PCIE,
                       1e-12);
    tsr__costs_free(&c);
}

Test(placement_gpu, descriptor_dtype_is_read) {
    /* [kop, fn, dtype, ...] as msgpack_pack_uint8 writes them: fixints, or 0xcc and a byte. */
    const uint8_t a[] = {0x97, TSR_KOP_BINARY, 3, TSR_FLOAT32, 0x90};
    const uint8_t b[] = {0x97, TSR_KOP_UNARY, 0xcc, 200, TSR_FLOAT32, 0x90};
    const uint8_t c[] = {0x97, TSR_KOP_UNARY, 0xcc};
    cr_assert_eq(tsr__kdesc_peek_dtype(a, sizeof a), TSR_FLOAT32);
    cr_assert_eq(tsr__kdesc_peek_dtype(b, sizeof b), TSR_FLOAT32);
    cr_assert_eq(tsr__kdesc_peek_dtype(c, sizeof c), -1, "truncated");
    cr_assert_eq(tsr__kdesc_peek_dtype(a, 3), -1, "truncated");
}

/* ---- kernel availability ---- */

/* g's tasks of family kop become array 1, named "mm", the rest array 0 ("src"). */
static uint32_t submit_two_arrays(tsr__sched *s, const gb *g, int kop) {
    tsr__jobspec spec;
    gb_spec(g, &spec);
    spec.narrays = 2;
    free(spec.ops);
    spec.ops = calloc(2, sizeof *spec.ops);
    strcpy(spec.ops[0], "src");
    strcpy(spec.ops[1], "mm");
    for (uint32_t t = 0; t < g->n; t++) spec.array[t] = g->src[t] == 1 + kop;
    uint32_t job = 0;
    char err[128];
    cr_assert_eq(tsr__sched_submit(s, 7, &spec, &job, err, sizeof err), 0, "%s", err);
    return job;
}

/* The one failed action among the pending ones (its message copied into msg). */
static const tsr__action *the_failure(const tsr__sched *s, char *msg, size_t size) {
    const tsr__action *f = NULL;
    for (size_t i = 0; i < s->nact; i++) {
        if (s->act[i].kind != TSR__ACT_FAILED) continue;
        cr_assert_null(f, "one failure per job");
        f = &s->act[i];
    }
    cr_assert_not_null(f, "no failed action");
    snprintf(msg, size, "%s", f->msg ? f->msg : "");
    return f;
}

static void small_matmul(gb *g) {
    blocked_matmul(g, 2, 2, 1000);
}

Test(availability, a_job_no_connected_worker_can_run_fails_at_once) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    s.kernels[TSR__KIND_GPU][TSR_KOP_MATMUL] = 0; /* a CPU-only family, as a plugin might be */
    tsr__sched_add_worker(&s, 1, 1, TSR__KIND_GPU, "127.0.0.1:9001", "g0");
    tsr__sched_add_worker(&s, 2, 1, TSR__KIND_GPU, "127.0.0.1:9002", "g1");
    cr_assert_not(tsr__kind_runs(&s, TSR__KIND_GPU, TSR_KOP_MATMUL, TSR_FLOAT64));
    cr_assert(tsr__kind_runs(&s, TSR__KIND_CPU, TSR_KOP_MATMUL, TSR_FLOAT64));
    cr_assert(tsr__kind_runs(&s, TSR__KIND_GPU, TSR_KOP_RANDOM, TSR_FLOAT64));
    gb g;
    small_matmul(&g);
    uint32_t job = submit_two_arrays(&s, &g, TSR_KOP_MATMUL);
    char msg[256];
    const tsr__action *f = the_failure(&s, msg, sizeof msg);
    cr_assert_eq(f->job, job);
    cr_assert_eq(f->array, 1, "the matmul's array, which the client names");
    cr_assert_eq(g.src[f->task], 1 + TSR_KOP_MATMUL);
    cr_assert(strstr(msg, "no connected worker has a kernel for matmul (float64)"), "%s", msg);
    cr_assert(strstr(msg, "runs on cpu workers") && strstr(msg, "2 gpu"), "%s", msg);
    acts x;
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 0, "nothing was sent");
    cr_assert_null(tsr__sched_job(&s, job), "the job is gone");
    for (int st = 0; st < TSR__TS_COUNT; st++) cr_assert_eq(s.count[st], 0);
    /* A CPU worker joins: the same graph runs, and only there. */
    tsr__sched_add_worker(&s, 3, 1, TSR__KIND_CPU, "127.0.0.1:9003", "c0");
    job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_FAILED), 0);
    for (size_t i = 0; i < x.n; i++)
        if (x.a[i].kind == TSR__ACT_COMPUTE) cr_assert_eq(x.a[i].worker, 2);
    tsr__sched_free(&s);
}

Test(availability, a_source_made_inline_needs_a_kernel_where_it_is_made) {
    /* Inline sources are made by their consumers' workers: a random a GPU cannot make keeps
     * its consumer off GPU workers too. */
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    s.kernels[TSR__KIND_GPU][TSR_KOP_RANDOM] = 1u << TSR_FLOAT32; /* float32 only */
    tsr__sched_add_worker(&s, 1, 1, TSR__KIND_GPU, "127.0.0.1:9001", "g0");
    gb g;
    small_matmul(&g);
    submit_two_arrays(&s, &g, TSR_KOP_MATMUL);
    char msg[256];
    const tsr__action *f = the_failure(&s, msg, sizeof msg);
    cr_assert_eq(f->array, 1, "the consumer fails: the source never runs alone");
    cr_assert(strstr(msg, "kernel for random (float64)") && strstr(msg, "runs on cpu workers"),
              "%s", msg);
    tsr__sched_free(&s);
}

Test(availability, waiting_for_a_first_worker_then_judged_by_it) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    s.kernels[TSR__KIND_GPU][TSR_KOP_MATMUL] = 0;
    gb g;
    small_matmul(&g);
    uint32_t job = submit_two_arrays(&s, &g, TSR_KOP_MATMUL);
    acts x;
    drain(&s, &x);
    cr_assert_eq(x.n, 0, "no worker yet: it waits, as every job does");
    tsr__sched_add_worker(&s, 1, 1, TSR__KIND_GPU, "127.0.0.1:9001", "g0");
    char msg[256];
    cr_assert_eq(the_failure(&s, msg, sizeof msg)->job, job);
    drain(&s, &x);
    cr_assert_null(tsr__sched_job(&s, job));
    cr_assert_eq(s.unassigned.n, 0);
    tsr__sched_free(&s);
}

Test(availability, losing_the_last_worker_with_the_kernel_fails_the_job) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    s.kernels[TSR__KIND_GPU][TSR_KOP_MATMUL] = 0;
    tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "c0");
    tsr__sched_add_worker(&s, 2, 1, TSR__KIND_GPU, "127.0.0.1:9002", "g0");
    gb g;
    small_matmul(&g);
    uint32_t job = submit_two_arrays(&s, &g, TSR_KOP_MATMUL);
    gb e = {0}; /* a job of elementwise ops: any worker will do */
    uint32_t r = random_block(&e, 1000);
    for (int k = 0; k < 4; k++) {
        uint32_t u = gb_task(&e, 1, (uint32_t[]){r});
        e.src[u] = 1 + TSR_KOP_UNARY;
        e.outputs[e.nout++] = u;
    }
    uint32_t other = submit(&s, &e);
    acts x;
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_FAILED), 0);
    tsr__sched_remove_worker(&s, 0);
    char msg[256];
    const tsr__action *f = the_failure(&s, msg, sizeof msg);
    cr_assert_eq(f->job, job);
    cr_assert(strstr(msg, "connected workers are 1 gpu"), "%s", msg);
    drain(&s, &x);
    /* The other job carries on on the GPU. */
    tsr__sjob *o = tsr__sched_job(&s, other);
    cr_assert_not_null(o);
    for (uint32_t t = 1; t < e.n; t++)
        cr_assert(o->t[t].state == TSR__TS_RUNNING && o->t[t].where == 1, "task %u", t);
    tsr__sched_free(&s);
}

Test(availability, a_gpu_never_steals_what_it_has_no_kernel_for) {
    /* Forty CPU-only tasks queue on the one CPU; the idle, faster GPU may not take any. */
    gb g = {0};
    for (int k = 0; k < 40; k++) {
        uint32_t t = gb_task(&g, 0, NULL);
        g.src[t] = 1 + TSR_KOP_LOAD;
        g.outputs[g.nout++] = t;
    }
    sim *m = mixed(1, 1);
    m->s.kernels[TSR__KIND_GPU][TSR_KOP_LOAD] = 0;
    m->job = submit(&m->s, &g);
    cr_assert_gt(m->s.w[1].backlog.n, 0, "a backlog to steal from");
    sim_run(m, 2);
    cr_assert_eq(m->ran[0], 0);
    cr_assert_eq(m->ran[1], 40);
    sim_free(m);
}

/* A decoded submission whose one array needs plugin library lib (map_blocks). */
static uint32_t submit_plugin(tsr__sched *s, const gb *g, const char *lib) {
    tsr__jobspec spec;
    gb_spec(g, &spec);
    spec.plugins = calloc(2, sizeof *spec.plugins);
    snprintf(spec.plugins[0], sizeof spec.plugins[0], "%s", lib);
    uint32_t job = 0;
    char err[128];
    cr_assert_eq(tsr__sched_submit(s, 7, &spec, &job, err, sizeof err), 0, "%s", err);
    return job;
}

/* Tasks of an array that needs a plugin library run only on the worker that announced it
 * (placement, the partition's homes and stealing alike, even while it is the busiest), and a
 * job whose library no live worker has fails at once, naming it. */
Test(placement, plugin_tasks_go_only_to_workers_with_the_library) {
    sim m;
    memset(&m, 0, sizeof m);
    tsr__sched_init(&m.s, &quiet);
    const char libs[2][TSR__PLUGIN_NAME] = {"other", "lib"};
    sim_add(&m, 0, TSR__KIND_CPU);
    cr_assert_eq(
        tsr__sched_add_worker_plugins(&m.s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1", libs, 2),
        1);
    m.slow[1] = 0.01;
    sim_add(&m, 2, TSR__KIND_CPU);
    gb g = {0};
    for (int i = 0; i < 40; i++) g.outputs[g.nout++] = gb_task(&g, 0, NULL);
    m.job = submit_plugin(&m.s, &g, "lib");
    sim_run(&m, 3);
    cr_assert_eq(m.ran[1], 40, "the worker with the library ran %d of 40", m.ran[1]);
    cr_assert_eq(m.ran[0] + m.ran[2], 0);

    gb h = {0};
    h.outputs[h.nout++] = gb_task(&h, 0, NULL);
    uint32_t job = submit_plugin(&m.s, &h, "missing");
    int failed = 0;
    for (size_t i = 0; i < m.s.nact; i++)
        if (m.s.act[i].kind == TSR__ACT_FAILED && m.s.act[i].job == job) {
            cr_assert(strstr(m.s.act[i].msg, "\"missing\"") &&
                          strstr(m.s.act[i].msg, "--plugin-dir"),
                      "%s", m.s.act[i].msg);
            failed = 1;
        }
    cr_assert(failed, "a job no worker can run did not fail");
    tsr__sched_clear_actions(&m.s);
    tsr__sched_free(&m.s);
}
