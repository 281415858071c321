/* Scheduler tests: the pure state machine and placement with simulated workers (no sockets):
 * freeing, moves, stealing, losses and retries, streamed outputs, paused workers; and the
 * submit decoder. The socket-level tests are test_sched_socket.c. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "scheduler/sched.h"
#include "mp_ref.h"
#include "wire/msg.h"
#include "wire/wire.h"

#include "sched_fixture.h"
#include "sched_graph.h"

/* ---- state machine ---- */

Test(sched_state, diamond_frees_exactly_when_last_consumer_finishes) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g;
    diamond(&g);
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(x.n, 1);
    cr_assert(has(&x, TSR__ACT_COMPUTE, w, 0));

    cr_assert_eq(tsr__sched_done(&s, w, job, 0, 800, -1), 0);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_COMPUTE, w, 1) && has(&x, TSR__ACT_COMPUTE, w, 2));
    cr_assert_eq(count(&x, TSR__ACT_FREE), 0);

    tsr__sched_done(&s, w, job, 1, 800, -1);
    drain(&s, &x);
    cr_assert_eq(x.n, 0, "task 0 is still needed by task 2");

    tsr__sched_done(&s, w, job, 2, 800, -1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FREE, w, 0));
    cr_assert(has(&x, TSR__ACT_COMPUTE, w, 3));
    cr_assert_eq(x.n, 2);

    tsr__sched_done(&s, w, job, 3, 800, -1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FREE, w, 1) && has(&x, TSR__ACT_FREE, w, 2));
    cr_assert(!has(&x, TSR__ACT_FREE, w, 3), "outputs are never freed before release");
    cr_assert(has_finished(&x, job));
    tsr__sjob *j = tsr__sched_job(&s, job);
    cr_assert_eq(j->t[3].state, TSR__TS_MEMORY);
    cr_assert_eq(j->ndone, 4);

    cr_assert_eq(tsr__sched_release(&s, 99, job), TSR_EINVALID, "not that client's job");
    cr_assert_eq(tsr__sched_release(&s, 7, job), 0);
    drain(&s, &x);
    cr_assert_eq(x.n, 1);
    cr_assert(has(&x, TSR__ACT_FREE, w, 3));
    cr_assert_null(tsr__sched_job(&s, job));
    for (int st = 0; st < TSR__TS_COUNT; st++) cr_assert_eq(s.count[st], 0);
    cr_assert_eq(s.w[w].held.n, 0);
    tsr__sched_free(&s);
}

Test(sched_state, chain_moves_at_most_once) {
    /* A chain of equal tasks on two idle workers: the partition may cut it in two (each half
     * has a home), but it never bounces between workers. */
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    uint32_t w1 = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    gb g = {0};
    uint32_t prev = gb_task(&g, 0, NULL);
    for (int i = 0; i < 7; i++) prev = gb_task(&g, 1, (uint32_t[]){prev});
    g.outputs[g.nout++] = prev;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(x.n, 1);
    uint32_t at = x.a[0].worker, moves = 0;
    cr_assert(at == w0 || at == w1);
    for (uint32_t t = 0; t < 8; t++) {
        cr_assert_eq(tsr__sched_done(&s, at, job, t, 100, 0.01), 0);
        drain(&s, &x);
        if (t < 7) {
            uint32_t next = has(&x, TSR__ACT_COMPUTE, w0, t + 1) ? w0 : w1;
            cr_assert(has(&x, TSR__ACT_COMPUTE, next, t + 1));
            moves += next != at;
            at = next;
        }
        if (t > 0) cr_assert_eq(count(&x, TSR__ACT_FREE), 1, "task %u's input is freed", t);
    }
    cr_assert_leq(moves, 1);
    cr_assert(has_finished(&x, job));
    tsr__sched_free(&s);
}

/* Runs a job to completion with simulated workers that finish tasks in the order they were
 * sent, checking every free against the graph: only once, never an output, and only after
 * every consumer finished. */
static void run_checked(tsr__sched *s, const gb *g, uint32_t job) {
    int done[64] = {0}, freed[64] = {0};
    tsr__key queue[256];
    size_t qh = 0, qt = 0;
    int finished = 0;
    acts x;
    for (int guard = 0; guard < 1000 && !finished; guard++) {
        drain(s, &x);
        for (size_t i = 0; i < x.n; i++) {
            tsr__action *a = &x.a[i];
            if (a->kind == TSR__ACT_COMPUTE) {
                queue[qt++] = (tsr__key){a->worker, a->task};
            } else if (a->kind == TSR__ACT_FREE) {
                uint32_t t = a->task;
                cr_assert(!freed[t], "task %u freed twice", t);
                freed[t] = 1;
                for (uint32_t o = 0; o < g->nout; o++) cr_assert_neq(g->outputs[o], t);
                for (uint32_t d = t + 1; d < g->n; d++)
                    for (uint32_t k = 0; k < g->ndeps[d]; k++)
                        if (g->deps[d][k] == t)
                            cr_assert(done[d], "task %u freed before consumer %u", t, d);
            } else if (a->kind == TSR__ACT_FINISHED) {
                finished = 1;
            }
        }
        if (qh < qt) {
            tsr__key k = queue[qh++];
            /* inputs must be in memory when a task is sent */
            tsr__sjob *j = tsr__sched_job(s, job);
            for (uint32_t d = 0; d < g->ndeps[k.task]; d++)
                cr_assert_eq(j->t[g->deps[k.task][d]].state, TSR__TS_MEMORY);
            done[k.task] = 1;
            cr_assert_eq(tsr__sched_done(s, k.job, job, k.task, 1000, -1), 0);
        }
    }
    cr_assert(finished);
    for (uint32_t t = 0; t < g->n; t++) {
        int is_out = 0;
        for (uint32_t o = 0; o < g->nout; o++) is_out |= g->outputs[o] == t;
        cr_assert_eq(freed[t], !is_out, "task %u freed=%d output=%d", t, freed[t], is_out);
    }
}

Test(sched_state, blocked_matmul_2x2) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    tsr__sched_add_worker(&s, 2, 2, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    gb g = {0};
    uint32_t A[2][2], B[2][2];
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++) A[i][k] = gb_task(&g, 0, NULL);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++) B[k][j] = gb_task(&g, 0, NULL);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            /* C[i,j] = A[i,0] B[0,j], then += A[i,1] B[1,j] (gemm with beta = 1, fixed order) */
            uint32_t c0 = gb_task(&g, 2, (uint32_t[]){A[i][0], B[0][j]});
            uint32_t c1 = gb_task(&g, 3, (uint32_t[]){c0, A[i][1], B[1][j]});
            g.outputs[g.nout++] = c1;
        }
    uint32_t job = submit(&s, &g);
    cr_assert_eq(tsr__sched_job(&s, job)->t[A[0][0]].refs, 2);
    run_checked(&s, &g, job);
    tsr__sjob *j = tsr__sched_job(&s, job);
    for (uint32_t o = 0; o < g.nout; o++) {
        cr_assert_eq(j->t[g.outputs[o]].state, TSR__TS_MEMORY);
        cr_assert_eq(j->t[g.outputs[o]].refs, 1);
    }
    cr_assert_eq(s.count[TSR__TS_MEMORY], 4);
    cr_assert_eq(s.count[TSR__TS_RELEASED], 12);
    tsr__sched_client_gone(&s, 7);
    cr_assert_null(tsr__sched_job(&s, job));
    tsr__sched_free(&s);
}

Test(sched_state, stealing_moves_only_backlog_tasks) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g = {0};
    for (int i = 0; i < 10; i++) gb_task(&g, 0, NULL);
    g.outputs[g.nout++] = 9;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 2, "a window of two 10 ms tasks");
    int sent0[10] = {0};
    for (size_t i = 0; i < x.n; i++) sent0[x.a[i].task] = 1;
    cr_assert_eq(s.w[w0].backlog.n, 8);
    cr_assert(sent0[0] && sent0[1], "lowest ids go first");

    /* w1 steals from the front of w0's backlog while a task would finish earlier there than
     * it would start on w0 (after w0's two in-flight tasks): two tasks. */
    uint32_t w1 = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 2);
    for (size_t i = 0; i < x.n; i++) {
        cr_assert_eq(x.a[i].worker, w1);
        cr_assert(!sent0[x.a[i].task], "task %u was already sent to w0", x.a[i].task);
        cr_assert_eq(tsr__sched_job(&s, job)->t[x.a[i].task].where, w1);
        cr_assert_lt(x.a[i].task, 4, "the next tasks due");
    }
    cr_assert_eq(s.w[w0].backlog.n, 6);
    cr_assert_eq(s.w[w0].inflight.n, 2);
    tsr__sched_free(&s);
}

Test(sched_state, window_refills_from_backlog_on_done) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g = {0};
    for (int i = 0; i < 10; i++) gb_task(&g, 0, NULL);
    for (int i = 0; i < 10; i++) g.outputs[g.nout++] = (uint32_t)i;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 2);
    for (uint32_t t = 0; t < 10; t++) {
        cr_assert_eq(tsr__sched_done(&s, w, job, t, 10, 0.01), 0);
        drain(&s, &x);
        if (t + 2 < 10) {
            cr_assert_eq(x.n, 1, "task %u: one slot freed, one task sent", t);
            cr_assert(has(&x, TSR__ACT_COMPUTE, w, t + 2), "in priority order");
        }
        cr_assert_leq(s.w[w].inflight.n, 2);
    }
    cr_assert(has_finished(&x, job));
    tsr__sched_free(&s);
}

Test(sched_state, error_cancels_and_frees_everything) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g = {0};
    uint32_t a = gb_task(&g, 0, NULL);
    uint32_t b = gb_task(&g, 1, (uint32_t[]){a});
    uint32_t c = gb_task(&g, 1, (uint32_t[]){a});
    for (int i = 0; i < 6; i++) gb_task(&g, 1, (uint32_t[]){a}); /* fill the backlog */
    uint32_t d = gb_task(&g, 2, (uint32_t[]){b, c});
    g.outputs[g.nout++] = d;
    g.outputs[g.nout++] = a;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    tsr__sched_done(&s, w, job, a, 10, -1);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), TSR__WINDOW_MIN_PER_THREAD);
    cr_assert_gt(s.w[w].backlog.n, 0);
    cr_assert_eq(tsr__sched_erred(&s, w, job, b, "kernel exploded", 0, 0.0), 0);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FAILED, 0, b));
    for (size_t i = 0; i < x.n; i++)
        if (x.a[i].kind == TSR__ACT_FAILED) cr_assert_eq(x.a[i].client, 7);
    cr_assert(has(&x, TSR__ACT_FREE, w, a), "held chunks (outputs too) are freed");
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 0);
    cr_assert_eq(s.w[w].backlog.n, 0);
    cr_assert_eq(s.backlog_total, 0);
    cr_assert_not_null(tsr__sched_job(&s, job), "waits for the tasks already sent");
    /* The tasks still running report: each is answered with a free, then the job goes. */
    for (uint32_t t = c; t < c + TSR__WINDOW_MIN_PER_THREAD - 1; t++) {
        cr_assert_eq(tsr__sched_done(&s, w, job, t, 10, -1), 0);
        drain(&s, &x);
        cr_assert(has(&x, TSR__ACT_FREE, w, t));
        cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 0);
    }
    cr_assert_null(tsr__sched_job(&s, job));
    cr_assert_eq(s.w[w].inflight.n, 0);
    cr_assert_eq(s.w[w].held.n, 0);
    for (int st = 0; st < TSR__TS_COUNT; st++) cr_assert_eq(s.count[st], 0);
    /* A late report for the deleted job is answered with a free too. */
    tsr__sched_done(&s, w, job, 5, 10, -1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FREE, w, 5));
    tsr__sched_free(&s);
}

Test(sched_state, worker_loss_requeues_running_and_queued) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g = {0};
    for (int i = 0; i < 8; i++) gb_task(&g, 0, NULL);
    for (int i = 0; i < 8; i++) g.outputs[g.nout++] = (uint32_t)i;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    tsr__sched_done(&s, w0, job, 0, 10, -1);
    drain(&s, &x);
    uint32_t w1 =
        tsr__sched_add_worker(&s, 2, 8, TSR__KIND_CPU, "127.0.0.1:9002", "w1"); /* window 18 */
    drain(&s, &x);
    tsr__sched_remove_worker(&s, w0);
    drain(&s, &x);
    /* Everything w0 had (the output it held, its running and queued tasks) now runs on w1. */
    tsr__sjob *j = tsr__sched_job(&s, job);
    for (uint32_t t = 0; t < 8; t++) {
        cr_assert(j->t[t].state == TSR__TS_RUNNING && j->t[t].where == w1, "task %u: %s", t,
                  tsr__task_state_name(j->t[t].state));
    }
    cr_assert_eq(j->ndone, 0);
    for (uint32_t t = 0; t < 8; t++) tsr__sched_done(&s, w1, job, t, 10, -1);
    drain(&s, &x);
    cr_assert(has_finished(&x, job));
    tsr__sched_free(&s);
}

Test(sched_state, worker_loss_recomputes_lost_chunks_recursively) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g = {0};
    gb_task(&g, 0, NULL);            /* 0 */
    gb_task(&g, 1, (uint32_t[]){0}); /* 1 */
    gb_task(&g, 1, (uint32_t[]){1}); /* 2, output */
    g.outputs[g.nout++] = 2;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    tsr__sched_done(&s, w0, job, 0, 10, -1);
    drain(&s, &x);
    tsr__sched_done(&s, w0, job, 1, 10, -1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FREE, w0, 0));
    cr_assert(has(&x, TSR__ACT_COMPUTE, w0, 2));
    uint32_t w1 = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    drain(&s, &x);
    cr_assert_eq(x.n, 0);

    /* w0 dies holding 1 (needed by 2) and running 2; 0 was freed, so it is recomputed too. */
    tsr__sched_remove_worker(&s, w0);
    drain(&s, &x);
    tsr__sjob *j = tsr__sched_job(&s, job);
    cr_assert_eq(x.n, 1);
    cr_assert(has(&x, TSR__ACT_COMPUTE, w1, 0));
    cr_assert_eq(j->t[0].refs, 1);
    cr_assert_eq(j->t[1].refs, 1);
    cr_assert_eq(j->t[2].refs, 1);
    cr_assert_eq(j->ndone, 0);
    tsr__sched_done(&s, w1, job, 0, 10, -1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_COMPUTE, w1, 1));
    tsr__sched_done(&s, w1, job, 1, 10, -1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FREE, w1, 0) && has(&x, TSR__ACT_COMPUTE, w1, 2));
    tsr__sched_done(&s, w1, job, 2, 10, -1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FREE, w1, 1) && has_finished(&x, job));
    cr_assert(!has(&x, TSR__ACT_FREE, w1, 2));
    cr_assert_eq(s.count[TSR__TS_MEMORY], 1);
    cr_assert_eq(s.count[TSR__TS_RELEASED], 2);
    tsr__sched_free(&s);
}

Test(sched_state, lost_input_of_a_running_task_is_a_retry) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g;
    diamond(&g);
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    tsr__sched_done(&s, w0, job, 0, 10, -1);
    drain(&s, &x); /* 1 and 2 run on w0 */
    uint32_t w1 = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    tsr__sched_done(&s, w0, job, 1, 10, -1);
    tsr__sched_done(&s, w0, job, 2, 10, -1);
    drain(&s, &x); /* 3 runs on w0 */
    cr_assert(has(&x, TSR__ACT_COMPUTE, w0, 3));
    /* Lose w0, which holds 1 and 2 and runs 3. */
    tsr__sjob *j = tsr__sched_job(&s, job);
    tsr__sched_remove_worker(&s, w0);
    drain(&s, &x);
    /* 3 was running on w0: requeued; 1 and 2 lost, recomputed from 0, itself recomputed. */
    cr_assert(has(&x, TSR__ACT_COMPUTE, w1, 0));
    cr_assert_eq(j->t[3].state, TSR__TS_WAITING);
    cr_assert_eq(j->t[3].deps_left, 2);
    tsr__sched_done(&s, w1, job, 0, 10, -1);
    drain(&s, &x);
    tsr__sched_done(&s, w1, job, 1, 10, -1);
    /* 2 errs as a failed fetch would after a loss: only a retry if flagged, so make it so. */
    j->t[2].flags |= TSR__TF_INPUT_LOST;
    cr_assert_eq(tsr__sched_erred(&s, w1, job, 2, "fetch failed", 0, 0.0), 0);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_FAILED), 0);
    cr_assert(has(&x, TSR__ACT_COMPUTE, w1, 2));
    tsr__sched_done(&s, w1, job, 2, 10, -1);
    drain(&s, &x);
    tsr__sched_done(&s, w1, job, 3, 10, -1);
    drain(&s, &x);
    cr_assert(has_finished(&x, job));
    cr_assert_eq(s.count[TSR__TS_MEMORY], 1);
    tsr__sched_free(&s);
}

/* Two workers; 0 and 1 made on different ones, 2 = f(0, 1) placed on one of them. */
static uint32_t spread_pair(tsr__sched *s, acts *x) {
    tsr__sched_init(s, &quiet);
    cr_assert_eq(tsr__sched_add_worker(s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0"), 0);
    cr_assert_eq(tsr__sched_add_worker(s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1"), 1);
    gb g = {0};
    gb_task(&g, 0, NULL);
    gb_task(&g, 0, NULL);
    gb_task(&g, 2, (uint32_t[]){0, 1});
    g.outputs[g.nout++] = 2;
    uint32_t job = submit(s, &g);
    drain(s, x);
    tsr__sjob *j = tsr__sched_job(s, job);
    cr_assert_neq(j->t[0].where, j->t[1].where, "sources are spread");
    tsr__sched_done(s, j->t[0].where, job, 0, 10, -1);
    tsr__sched_done(s, j->t[1].where, job, 1, 10, -1);
    drain(s, x);
    return job;
}

/* 2 = f(0, 1) runs where 0 is and is its last consumer (0 donated), fetching 1 from the other
 * worker, which is lost. The fetch fails before 2 starts: the worker keeps 0 and says so
 * (kept), and the retry runs with 0 donated again. Without kept the scheduler believed 0 gone
 * for good yet sent the retry to its holder as if there, and the worker, which had dropped
 * it, failed the job ("is not on this worker"). */
Test(sched_state, erred_before_start_keeps_donated_inputs) {
    tsr__sched s;
    acts x;
    uint32_t job = spread_pair(&s, &x);
    tsr__sjob *j = tsr__sched_job(&s, job);
    uint32_t at = j->t[2].where, local = j->t[0].where == at ? 0 : 1, remote = 1 - local;
    uint32_t other = j->t[remote].where;
    uint8_t fl[2];
    tsr__sched_plan_inputs(&s, at, j, 2, fl); /* as the server does when it sends 2 */
    cr_assert_eq(fl[local], TSR__IN_DONATE);
    cr_assert_eq(fl[remote], 0);
    tsr__sched_remove_worker(&s, other);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_COMPUTE, at, remote), "the lost input is made again");
    tsr__sched_done(&s, at, job, remote, 10, -1);
    drain(&s, &x);
    cr_assert_eq(tsr__sched_erred(&s, at, job, 2, "could not fetch input", 1, 0.0), 0);
    cr_assert(!(j->t[local].flags & TSR__TF_DONATED), "kept: the input is held again");
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_FAILED), 0);
    cr_assert(has(&x, TSR__ACT_COMPUTE, at, 2), "retried");
    tsr__sched_plan_inputs(&s, at, j, 2, fl);
    cr_assert_eq(fl[local], TSR__IN_DONATE);
    cr_assert_eq(fl[remote], TSR__IN_DONATE);
    tsr__sched_done(&s, at, job, 2, 10, -1);
    drain(&s, &x);
    cr_assert(has_finished(&x, job));
    tsr__sched_free(&s);
}

/* 0 and 1 on different workers, 2 = f(0, 1) errs where one input is remote. */
static uint32_t remote_setup(tsr__sched *s, uint32_t *where2, uint32_t *other) {
    acts x;
    uint32_t job = spread_pair(s, &x);
    tsr__sjob *j = tsr__sched_job(s, job);
    *where2 = j->t[2].where;
    *other = *where2 == 0 ? 1 : 0;
    cr_assert_eq(tsr__sched_erred(s, *where2, job, 2, "could not fetch input", 0, 10.0), 0);
    drain(s, &x);
    cr_assert_eq(x.n, 0, "parked, not failed yet");
    tsr__sched_tick(s, 10.5);
    drain(s, &x);
    cr_assert_eq(x.n, 0);
    return job;
}

Test(sched_state, fetch_error_then_loss_is_a_retry) {
    tsr__sched s;
    uint32_t at, other;
    acts x;
    uint32_t job = remote_setup(&s, &at, &other);
    tsr__sched_remove_worker(&s, other);
    drain(&s, &x);
    uint32_t lost = tsr__sched_job(&s, job)->t[0].state == TSR__TS_MEMORY ? 1 : 0;
    cr_assert(has(&x, TSR__ACT_COMPUTE, at, lost), "the lost input is recomputed");
    cr_assert_eq(s.nparked, 0);
    tsr__sched_tick(&s, 100.0);
    tsr__sched_done(&s, at, job, lost, 10, -1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_COMPUTE, at, 2));
    cr_assert_eq(count(&x, TSR__ACT_FAILED), 0);
    tsr__sched_done(&s, at, job, 2, 10, -1);
    drain(&s, &x);
    cr_assert(has_finished(&x, job));
    tsr__sched_free(&s);
}

Test(sched_state, fetch_error_without_loss_fails_after_grace) {
    tsr__sched s;
    uint32_t at, other;
    acts x;
    uint32_t job = remote_setup(&s, &at, &other);
    tsr__sched_tick(&s, 11.5);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FAILED, 0, 2));
    cr_assert(has(&x, TSR__ACT_FREE, at, 0) || has(&x, TSR__ACT_FREE, other, 0));
    cr_assert_eq(count(&x, TSR__ACT_FREE), 2);
    cr_assert_null(tsr__sched_job(&s, job));
    cr_assert_eq(s.nparked, 0);
    tsr__sched_free(&s);
}

Test(sched_state, no_workers_then_one_joins) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    gb g;
    diamond(&g);
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(x.n, 0);
    cr_assert_eq(s.count[TSR__TS_READY], 1);
    uint32_t w = tsr__sched_add_worker(&s, 3, 2, TSR__KIND_CPU, "127.0.0.1:9003", "w");
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_COMPUTE, w, 0));
    (void)job;
    tsr__sched_free(&s);
}

/* ---- streamed outputs (PROTOCOL.md "Streamed outputs") ---- */

/* Tasks of the job in a running or held state whose chunks the client has not released: what
 * the budget limits, counted here by walking the tasks. */
static uint32_t unwritten(const tsr__sched *s, uint32_t job, const int *released, uint32_t n) {
    const tsr__sjob *j = tsr__sched_job(s, job);
    uint32_t c = 0;
    for (uint32_t t = 0; t < n; t++)
        c += !released[t] && (j->t[t].state == TSR__TS_RUNNING || j->t[t].state == TSR__TS_MEMORY);
    return c;
}

Test(sched_state, stream_budget_holds_back_and_releases_free) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    /* One thread: the budget is the floor, 8 unwritten chunks. */
    cr_assert_eq(tsr__stream_budget(&s), TSR__STREAM_MIN);
    enum { N = 30 };
    gb g = {0};
    for (int i = 0; i < N; i++) gb_task(&g, 0, NULL);
    for (int i = 0; i < N; i++) g.outputs[g.nout++] = (uint32_t)i;
    g.nstream = N;
    int released[N] = {0}, stored[N] = {0};
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), TSR__WINDOW_MIN_PER_THREAD);
    /* Run what is sent, never releasing: the worker ends up holding the budget, and nothing
     * more is sent. */
    uint32_t next = 0;
    for (int round = 0; round < N; round++) {
        const tsr__sjob *j = tsr__sched_job(&s, job);
        while (next < N && j->t[next].state != TSR__TS_RUNNING) next++;
        if (next == N) break;
        cr_assert_eq(tsr__sched_done(&s, w, job, next, 100, 0.01), 0);
        drain(&s, &x);
        cr_assert(has(&x, TSR__ACT_STORED, w, next), "task %u reported as computed", next);
        cr_assert_eq(count(&x, TSR__ACT_STORED), 1);
        stored[next] = 1;
        cr_assert_eq(count(&x, TSR__ACT_FREE), 0, "an unwritten output is never freed");
        cr_assert_leq(unwritten(&s, job, released, N), TSR__STREAM_MIN);
    }
    cr_assert_eq(unwritten(&s, job, released, N), TSR__STREAM_MIN);
    cr_assert_eq(s.w[w].inflight.n, 0, "nothing running: held back by the budget");
    cr_assert_eq(s.w[w].held.n, TSR__STREAM_MIN);
    cr_assert_gt(s.w[w].backlog.n, 0);
    /* Releasing three frees them and lets tasks go again, up to the budget. */
    uint32_t ids[3] = {0, 1, 2};
    cr_assert_eq(tsr__sched_release_keys(&s, 99, job, ids, 3), TSR_EINVALID, "another client");
    cr_assert_eq(tsr__sched_release_keys(&s, 7, job, ids, 3), 0);
    for (int k = 0; k < 3; k++) released[ids[k]] = 1;
    drain(&s, &x);
    for (int k = 0; k < 3; k++) cr_assert(has(&x, TSR__ACT_FREE, w, ids[k]));
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), TSR__WINDOW_MIN_PER_THREAD);
    cr_assert_leq(unwritten(&s, job, released, N), TSR__STREAM_MIN);
    /* A release repeated, or of an id out of range, is ignored. */
    cr_assert_eq(tsr__sched_release_keys(&s, 7, job, (uint32_t[]){0, 12345}, 2), 0);
    drain(&s, &x);
    cr_assert_eq(x.n, 0);
    /* Run to the end, releasing each chunk once it is reported (as a client writing it). */
    int finished = 0;
    for (int guard = 0; guard < 4 * N && !finished; guard++) {
        const tsr__sjob *j = tsr__sched_job(&s, job);
        uint32_t t = 0;
        while (t < N && j->t[t].state != TSR__TS_RUNNING) t++;
        uint32_t rel[N];
        uint32_t nrel = 0;
        for (uint32_t k = 0; k < N; k++)
            if (stored[k] && !released[k]) rel[nrel++] = k, released[k] = 1;
        if (nrel) cr_assert_eq(tsr__sched_release_keys(&s, 7, job, rel, nrel), 0);
        if (t < N) cr_assert_eq(tsr__sched_done(&s, w, job, t, 100, 0.01), 0);
        drain(&s, &x);
        for (size_t i = 0; i < x.n; i++)
            if (x.a[i].kind == TSR__ACT_STORED) stored[x.a[i].task] = 1;
        finished = has_finished(&x, job);
        cr_assert_leq(unwritten(&s, job, released, N), TSR__STREAM_MIN);
    }
    cr_assert(finished);
    for (int t = 0; t < N; t++) cr_assert(stored[t], "task %d never reported", t);
    cr_assert_eq(tsr__sched_release(&s, 7, job), 0);
    drain(&s, &x);
    cr_assert_null(tsr__sched_job(&s, job));
    for (int st = 0; st < TSR__TS_COUNT; st++) cr_assert_eq(s.count[st], 0);
    tsr__sched_free(&s);
}

Test(sched_state, stream_kept_outputs_and_consumers) {
    /* a -> b; outputs a (streamed), k (streamed and listed again: kept), b (kept). */
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g = {0};
    uint32_t a = gb_task(&g, 0, NULL);
    uint32_t k = gb_task(&g, 0, NULL);
    uint32_t b = gb_task(&g, 1, (uint32_t[]){a});
    g.outputs[g.nout++] = a;
    g.outputs[g.nout++] = k;
    g.outputs[g.nout++] = b;
    g.outputs[g.nout++] = k;
    g.nstream = 2;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(tsr__sched_done(&s, w, job, a, 100, 0.01), 0);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_STORED, w, a));
    /* Written while b still needs it: not freed until b has run. */
    cr_assert_eq(tsr__sched_release_keys(&s, 7, job, (uint32_t[]){a, k}, 2), 0);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_FREE), 0);
    cr_assert_eq(tsr__sched_done(&s, w, job, k, 100, 0.01), 0);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_STORED, w, k), "a kept output is reported too");
    cr_assert_eq(tsr__sched_done(&s, w, job, b, 100, 0.01), 0);
    drain(&s, &x);
    cr_assert(!has(&x, TSR__ACT_STORED, w, b), "b is not streamed");
    cr_assert(has(&x, TSR__ACT_FREE, w, a), "a goes once its last consumer has run");
    cr_assert(!has(&x, TSR__ACT_FREE, w, k), "k is kept: its release was ignored");
    cr_assert(has_finished(&x, job));
    const tsr__sjob *j = tsr__sched_job(&s, job);
    cr_assert_eq(j->t[a].state, TSR__TS_RELEASED);
    cr_assert_eq(j->t[k].state, TSR__TS_MEMORY);
    cr_assert_eq(j->t[b].state, TSR__TS_MEMORY);
    /* More streamed outputs than outputs is a malformed submission. */
    gb bad = {0};
    gb_task(&bad, 0, NULL);
    bad.outputs[bad.nout++] = 0;
    bad.nstream = 2;
    tsr__jobspec spec;
    gb_spec(&bad, &spec);
    uint32_t job2;
    char err[128];
    cr_assert_eq(tsr__sched_submit(&s, 7, &spec, &job2, err, sizeof err), TSR_EPROGRAM);
    cr_assert(strstr(err, "stream"), "%s", err);
    tsr__sched_free(&s);
}

Test(sched_state, stream_lost_output_is_reported_again) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g = {0};
    gb_task(&g, 0, NULL);
    gb_task(&g, 0, NULL);
    g.outputs[g.nout++] = 0;
    g.outputs[g.nout++] = 1;
    g.nstream = 2;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(tsr__sched_done(&s, w0, job, 0, 100, 0.01), 0);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_STORED, w0, 0));
    uint32_t w1 = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    tsr__sched_remove_worker(&s, w0);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_COMPUTE, w1, 0) && has(&x, TSR__ACT_COMPUTE, w1, 1));
    cr_assert_eq(tsr__sched_job(&s, job)->stream_held, 2, "counted again once sent again");
    tsr__sched_done(&s, w1, job, 0, 100, 0.01);
    tsr__sched_done(&s, w1, job, 1, 100, 0.01);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_STORED, w1, 0), "made again: reported again");
    cr_assert(has(&x, TSR__ACT_STORED, w1, 1));
    cr_assert(has_finished(&x, job));
    tsr__sched_free(&s);
}

/* A task that was running on each of allowed_failures workers when they died fails its job
 * (Dask's allowed-failures), naming the task; before that it is retried elsewhere. */
Test(sched_state, poison_task_fails_after_allowed_deaths) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    cr_assert_eq(s.allowed_failures, 3);
    uint32_t w[4];
    char addr[32], name[8];
    for (int i = 0; i < 4; i++) {
        snprintf(addr, sizeof addr, "127.0.0.1:%d", 9001 + i);
        snprintf(name, sizeof name, "w%d", i);
        w[i] = tsr__sched_add_worker(&s, (uint32_t)i + 1, 1, TSR__KIND_CPU, addr, name);
    }
    gb g = {0};
    gb_task(&g, 0, NULL);
    g.outputs[g.nout++] = 0;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    for (int death = 1; death <= 3; death++) {
        tsr__sjob *j = tsr__sched_job(&s, job);
        cr_assert(j && j->t[0].state == TSR__TS_RUNNING, "death %d: not running", death);
        uint32_t on = j->t[0].where;
        tsr__sched_remove_worker(&s, on);
        drain(&s, &x);
        if (death < 3) {
            cr_assert_eq(count(&x, TSR__ACT_FAILED), 0, "failed after %d deaths", death);
            cr_assert(has(&x, TSR__ACT_COMPUTE, tsr__sched_job(&s, job)->t[0].where, 0));
            cr_assert_neq(tsr__sched_job(&s, job)->t[0].where, on);
        } else {
            cr_assert(has(&x, TSR__ACT_FAILED, 0, 0), "not failed after 3 deaths");
        }
    }
    cr_assert_null(tsr__sched_job(&s, job), "the failed job is gone");
    size_t alive = 0;
    for (int i = 0; i < 4; i++) alive += s.w[w[i]].alive;
    cr_assert_eq(alive, 1);
    tsr__sched_free(&s);
}

/* Only tasks sent to the worker that died are suspected: with allowed_failures 1, the job fails
 * on a task that was running there, and the tasks only queued there have no death counted. */
Test(sched_state, only_tasks_sent_to_the_dead_worker_count) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    s.allowed_failures = 1;
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    gb g = {0};
    for (int i = 0; i < 12; i++) {
        gb_task(&g, 0, NULL);
        g.outputs[g.nout++] = (uint32_t)i;
    }
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    tsr__sjob *j = tsr__sched_job(&s, job);
    int sent = 0, queued = 0;
    uint8_t was_sent[12];
    for (uint32_t t = 0; t < 12; t++) {
        was_sent[t] = j->t[t].where == w0 && (j->t[t].flags & TSR__TF_SENT);
        sent += was_sent[t];
        queued += j->t[t].where == w0 && j->t[t].state == TSR__TS_QUEUED;
    }
    cr_assert(sent > 0 && queued > 0, "sent %d, queued %d on w0", sent, queued);
    tsr__sched_remove_worker(&s, w0);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_FAILED), 1);
    for (size_t i = 0; i < x.n; i++)
        if (x.a[i].kind == TSR__ACT_FAILED)
            cr_assert(was_sent[x.a[i].task], "task %u failed but was never sent", x.a[i].task);
    tsr__sched_free(&s);
}

/* A task whose inputs and output together exceed every worker's memory limit fails its job at
 * submission; one worker without a limit, or with room, lets it run. */
Test(sched_state, task_larger_than_every_memory_limit_fails_at_submission) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    s.w[w0].mem_limit = 1000;
    gb g = {0};
    uint32_t a = gb_task(&g, 0, NULL), b = gb_task(&g, 0, NULL);
    uint32_t c = gb_task(&g, 2, (uint32_t[]){a, b});
    g.nbytes[a] = g.nbytes[b] = g.nbytes[c] = 400; /* c needs 1200 */
    g.outputs[g.nout++] = c;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FAILED, 0, c), "c fits nowhere and should fail");
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 0);
    cr_assert_null(tsr__sched_job(&s, job));
    /* A roomier worker joins: the same job runs. */
    uint32_t w1 = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    s.w[w1].mem_limit = 1200;
    job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_FAILED), 0);
    /* It leaves before c runs: c fits nowhere again and the job fails. */
    tsr__sched_remove_worker(&s, w1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FAILED, 0, c));
    tsr__sched_free(&s);

    /* A job waiting for workers: the first one places its tasks before the server records its
     * limit (conn.c), then the check fails the job and nothing it was to be sent goes out. */
    tsr__sched_init(&s, &quiet);
    gb g1 = {0};
    uint32_t big = gb_task(&g1, 0, NULL); /* ready at once: placed when the worker joins */
    g1.nbytes[big] = 1200;
    g1.outputs[g1.nout++] = big;
    job = submit(&s, &g1);
    drain(&s, &x);
    cr_assert_eq(x.n, 0);
    w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    s.w[w0].mem_limit = 1000;
    tsr__sched_check_jobs(&s);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FAILED, 0, big), "the job should fail once the limit is known");
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 0, "a task went out to a worker it cannot fit");
    cr_assert_null(tsr__sched_job(&s, job));
    tsr__sched_free(&s);
}

Test(sched_state, bogus_reports) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g;
    diamond(&g);
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(tsr__sched_done(&s, w, job, 4000, 1, -1), TSR_EPROTOCOL);
    cr_assert_eq(tsr__sched_done(&s, w, job, 3, 1, -1), 0, "not running: ignored");
    cr_assert_eq(tsr__sched_erred(&s, w, job, 9, "x", 0, 0.0), TSR_EPROTOCOL);
    drain(&s, &x);
    cr_assert_eq(x.n, 0);
    cr_assert_eq(tsr__sched_job(&s, job)->t[3].state, TSR__TS_WAITING);
    tsr__sched_free(&s);
}

/* ---- pause (issue 11): a worker over its pause threshold gets no new work ---- */

/* The worker's st as it would report it, with only `paused` changed. */
static void set_paused(tsr__sched *s, uint32_t wid, int paused) {
    tsr__wstats st = s->w[wid].st;
    st.paused = paused;
    tsr__sched_worker_stats(s, wid, &st);
}

/* n independent 10 ms tasks, all outputs. */
static void independent(gb *g, uint32_t n) {
    memset(g, 0, sizeof *g);
    for (uint32_t i = 0; i < n; i++) {
        gb_task(g, 0, NULL);
        g->outputs[g->nout++] = i;
    }
}

static size_t computes_to(const acts *x, uint32_t w) {
    size_t n = 0;
    for (size_t i = 0; i < x->n; i++) n += x->a[i].kind == TSR__ACT_COMPUTE && x->a[i].worker == w;
    return n;
}

Test(sched_state, pause_stops_compute_and_others_steal_the_backlog) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    uint32_t w1 = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    gb g;
    independent(&g, 12);
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    /* Windows of two 10 ms tasks each, and the rest in backlogs (w0 has some). */
    cr_assert_eq(computes_to(&x, w0), 2);
    cr_assert_eq(computes_to(&x, w1), 2);
    cr_assert_gt(s.w[w0].backlog.n, 0);
    tsr__key r0 = s.w[w0].inflight.v[0], r1 = s.w[w0].inflight.v[1];

    set_paused(&s, w0, 1);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 0, "pausing sends nothing and takes nothing back");
    /* Its running tasks are reported as usual; its window is not refilled. */
    cr_assert_eq(tsr__sched_done(&s, w0, job, r0.task, 10, 0.01), 0);
    cr_assert_eq(tsr__sched_done(&s, w0, job, r1.task, 10, 0.01), 0);
    drain(&s, &x);
    cr_assert_eq(computes_to(&x, w0), 0);
    cr_assert_eq(s.w[w0].inflight.n, 0);

    /* w1 runs its own work, then takes w0's backlog: the job finishes while w0 is paused. */
    int ran[12] = {0};
    ran[r0.task] = ran[r1.task] = 1;
    for (int guard = 0; guard < 100 && !has_finished(&x, job); guard++) {
        cr_assert_gt(s.w[w1].inflight.n, 0, "w1 has nothing to run and the job is not done");
        tsr__key k = s.w[w1].inflight.v[0];
        cr_assert_eq(tsr__sched_done(&s, w1, job, k.task, 10, 0.01), 0);
        ran[k.task]++;
        drain(&s, &x);
        cr_assert_eq(computes_to(&x, w0), 0, "a compute for the paused worker");
    }
    cr_assert(has_finished(&x, job));
    for (int t = 0; t < 12; t++) cr_assert_eq(ran[t], 1, "task %d ran %d times", t, ran[t]);
    cr_assert_eq(s.w[w0].backlog.n, 0, "w1 took all of w0's backlog");
    tsr__sched_free(&s);
}

Test(sched_state, resuming_refills_the_window_at_once) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g;
    independent(&g, 6);
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 2);
    set_paused(&s, w, 1);
    cr_assert_eq(tsr__sched_done(&s, w, job, 0, 10, 0.01), 0);
    cr_assert_eq(tsr__sched_done(&s, w, job, 1, 10, 0.01), 0);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 0);
    /* Paused again (a repeated st): still nothing. */
    set_paused(&s, w, 1);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 0);
    /* The st that ends the pause refills the window by itself, before any balance. */
    set_paused(&s, w, 0);
    cr_assert_eq(s.w[w].inflight.n, 2, "the window is refilled by the report itself");
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_COMPUTE, w, 2) && has(&x, TSR__ACT_COMPUTE, w, 3));
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 2);
    tsr__sched_free(&s);
}

Test(sched_state, new_tasks_avoid_a_paused_worker) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    uint32_t w1 = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    set_paused(&s, w0, 1);
    /* A chain whose first half has w0 as home: all of it goes to w1 while w0 is paused. */
    gb g = {0};
    uint32_t prev = gb_task(&g, 0, NULL);
    for (int i = 1; i < 8; i++) prev = gb_task(&g, 1, (uint32_t[]){prev});
    g.outputs[g.nout++] = prev;
    acts x;
    uint32_t job = submit(&s, &g);
    tsr__sjob *j = tsr__sched_job(&s, job);
    cr_assert_eq(j->t[0].home, w0, "the partition still gives w0 a share");
    for (uint32_t t = 0; t < 8; t++) {
        /* Placed on w1 (checked before the turn's balance, which could steal it back). */
        cr_assert_eq(j->t[t].where, w1, "task %u placed on w%u", t, j->t[t].where);
        drain(&s, &x);
        cr_assert(has(&x, TSR__ACT_COMPUTE, w1, t), "task %u not sent to w1", t);
        cr_assert_eq(computes_to(&x, w0), 0);
        cr_assert_eq(tsr__sched_done(&s, w1, job, t, 10, 0.01), 0);
    }
    drain(&s, &x);
    cr_assert(has_finished(&x, job));
    tsr__sched_free(&s);
}

Test(sched_state, every_worker_paused_waits_then_resumes) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w0 = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    uint32_t w1 = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "w1");
    set_paused(&s, w0, 1);
    set_paused(&s, w1, 1);
    gb g;
    independent(&g, 6);
    acts x;
    uint32_t job = submit(&s, &g);
    /* Nothing is sent and nothing fails; balancing again and again emits nothing (the server
     * flushes only when something arrives, so nothing spins either). */
    for (int turn = 0; turn < 5; turn++) {
        drain(&s, &x);
        cr_assert_eq(x.n, 0, "turn %d: %zu actions while every worker is paused", turn, x.n);
    }
    cr_assert_eq(s.count[TSR__TS_QUEUED], 6, "every task waits in a backlog");
    cr_assert_eq(s.w[w0].backlog.n + s.w[w1].backlog.n, 6);

    /* w1 resumes: it runs its backlog, then steals w0's, while w0 stays paused. */
    set_paused(&s, w1, 0);
    drain(&s, &x);
    cr_assert_eq(computes_to(&x, w1), 2);
    for (int guard = 0; guard < 100 && !has_finished(&x, job); guard++) {
        cr_assert_gt(s.w[w1].inflight.n, 0);
        tsr__key k = s.w[w1].inflight.v[0];
        cr_assert_eq(tsr__sched_done(&s, w1, job, k.task, 10, 0.01), 0);
        drain(&s, &x);
        cr_assert_eq(computes_to(&x, w0), 0);
    }
    cr_assert(has_finished(&x, job));
    cr_assert_eq(tsr__sched_job(&s, job)->wtasks[w1], 6, "w1 ran all six");
    tsr__sched_free(&s);
}

/* ---- submit decoding ---- */

Test(sched_proto, submit_decode_and_validation) {
    char err[200];
    tsr__jobspec spec;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    pack_graph(&b, 0);
    cr_assert_eq(tsr__proto_submit(b.data, b.size, &spec, err, sizeof err), 0, "%s", err);
    cr_assert_eq(spec.ntasks, 2);
    cr_assert_eq(spec.dep_off[2], 1);
    cr_assert_eq(spec.deps[0], 0);
    cr_assert_eq(memcmp(spec.arena + spec.kd_off[1], "xyz", 3), 0);
    cr_assert_eq(spec.outputs[0], 1);
    tsr__jobspec_free(&spec);
    const char *want[] = {NULL, "array index", "earlier task", "bin", "output"};
    for (int v = 1; v <= 4; v++) {
        msgpack_sbuffer_clear(&b);
        pack_graph(&b, v);
        cr_assert_eq(tsr__proto_submit(b.data, b.size, &spec, err, sizeof err), TSR_EPROGRAM);
        cr_assert(strstr(err, want[v]), "variant %d: %s", v, err);
    }
    cr_assert_eq(tsr__proto_submit("\xc1", 1, &spec, err, sizeof err), TSR_EPROGRAM);
    msgpack_sbuffer_destroy(&b);
}

/* Issue 12, item 3: a task that errs before it starts (kept: a fetch failed, or an input was
 * not on its worker, as when a chunk's holder just died) is run again, up to
 * TSR__INPUT_RETRIES times; only the next such error, like any kernel error, fails the job. */
Test(sched_state, input_errors_are_retried_then_fail) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t w = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "w0");
    gb g = {0};
    uint32_t a = gb_task(&g, 0, NULL);
    uint32_t b = gb_task(&g, 1, (uint32_t[]){a});
    g.outputs[g.nout++] = b;
    acts x;
    uint32_t job = submit(&s, &g);
    drain(&s, &x);
    tsr__sched_done(&s, w, job, a, 10, -1);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_COMPUTE, w, b));
    for (int i = 0; i < TSR__INPUT_RETRIES; i++) {
        cr_assert_eq(tsr__sched_erred(&s, w, job, b, "input (1,0) is not on this worker", 1, 0.0),
                     0);
        drain(&s, &x);
        cr_assert_eq(count(&x, TSR__ACT_FAILED), 0, "retry %d failed the job", i);
        cr_assert(has(&x, TSR__ACT_COMPUTE, w, b), "retry %d: not sent again", i);
    }
    cr_assert_eq(tsr__sched_erred(&s, w, job, b, "input (1,0) is not on this worker", 1, 0.0), 0);
    drain(&s, &x);
    cr_assert(has(&x, TSR__ACT_FAILED, 0, b), "the retries are bounded");
    tsr__sched_free(&s);
}

/* A fetch from a live holder that fails (a dropped connection) and stays unexplained by a loss
 * through the grace period is run again when it erred before starting. */
Test(sched_state, kept_fetch_error_without_loss_is_retried_after_grace) {
    tsr__sched s;
    acts x;
    uint32_t job = spread_pair(&s, &x);
    tsr__sjob *j = tsr__sched_job(&s, job);
    uint32_t at = j->t[2].where;
    cr_assert_eq(tsr__sched_erred(&s, at, job, 2, "could not fetch input", 1, 10.0), 0);
    drain(&s, &x);
    cr_assert_eq(x.n, 0, "parked first");
    tsr__sched_tick(&s, 12.0);
    drain(&s, &x);
    cr_assert_eq(count(&x, TSR__ACT_FAILED), 0);
    cr_assert_eq(count(&x, TSR__ACT_COMPUTE), 1, "run again");
    tsr__sched_free(&s);
}
