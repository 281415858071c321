/* Placement tests on the pure state machine with simulated workers: inline sources, donated
 * buffers, the partition, earliest-finish placement and stealing against a slow worker, and
 * the round-robin baseline. The simulation runs each worker's sent tasks one at a time, in the
 * order sent, for a duration that depends on the worker, and reports them as the server would
 * (planning inputs when a task is written, so transfers and replicas are counted). */
#include "sched_fixture.h"
#include "mp_ref.h"
#include "wire/wire.h"

/* ---- a small discrete-event simulation ---- */

typedef struct sim {
    tsr__sched s;
    uint32_t job;
    double slow[4];        /* seconds per task on each worker */
    double clock[4];       /* when each worker is free */
    tsr__key fifo[4][512]; /* sent tasks: {job, task} */
    size_t head[4], tail[4];
    uint32_t ran[4]; /* tasks run per worker */
    uint32_t frees, recomputes, donations;
    uint64_t frees_of[128]; /* workers that got a free, per task (bit mask) */
    double makespan;
    int finished;
} sim;

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
            uint8_t fl[8];
            tsr__sched_plan_inputs(s, a.worker, j, a.task, fl);
            for (uint32_t k = 0; k < j->g.dep_off[a.task + 1] - j->g.dep_off[a.task]; k++) {
                m->recomputes += (fl[k] & TSR__IN_RECOMPUTE) != 0;
                m->donations += (fl[k] & TSR__IN_DONATE) != 0;
            }
            cr_assert_lt(m->tail[a.worker], 512);
            m->fifo[a.worker][m->tail[a.worker]++] = (tsr__key){a.job, a.task};
        } else if (a.kind == TSR__ACT_FREE) {
            m->frees++;
            if (a.task < 128) m->frees_of[a.task] |= 1ull << a.worker;
        } else if (a.kind == TSR__ACT_FINISHED) {
            m->finished = 1;
        }
    }
    tsr__sched_clear_actions(s);
}

/* Runs until the job finishes: the worker whose current task ends first reports it. */
static void sim_run(sim *m, uint32_t nw) {
    sim_drain(m);
    for (int guard = 0; guard < 100000 && !m->finished; guard++) {
        int best = -1;
        for (uint32_t w = 0; w < nw; w++)
            if (m->head[w] < m->tail[w] &&
                (best < 0 || m->clock[w] + m->slow[w] < m->clock[best] + m->slow[best]))
                best = (int)w;
        cr_assert_geq(best, 0, "nothing running and the job is not finished");
        tsr__key k = m->fifo[best][m->head[best]++];
        m->clock[best] += m->slow[best];
        /* Idle workers catch up with the clock (they could not start earlier). */
        for (uint32_t w = 0; w < nw; w++)
            if (m->head[w] == m->tail[w] && m->clock[w] < m->clock[best])
                m->clock[w] = m->clock[best];
        m->ran[best]++;
        if (m->clock[best] > m->makespan) m->makespan = m->clock[best];
        cr_assert_eq(tsr__sched_done(&m->s, (uint32_t)best, k.job, k.task, 1000, m->slow[best]), 0);
        sim_drain(m);
    }
    cr_assert(m->finished);
}

static void sim_init(sim *m, uint32_t nw) {
    memset(m, 0, sizeof *m);
    tsr__sched_init(&m->s, &quiet);
    for (uint32_t w = 0; w < nw; w++) {
        char name[16], addr[32];
        snprintf(name, sizeof name, "w%u", w);
        snprintf(addr, sizeof addr, "127.0.0.1:%u", 9001 + w);
        tsr__sched_add_worker(&m->s, w + 1, 1, TSR__KIND_CPU, addr, name);
        m->slow[w] = 0.01;
    }
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
