/* Liveness with real processes (docs/PROTOCOL.md "Liveness"): a worker stopped with SIGSTOP in
 * the middle of a job that needs both workers is declared lost after the worker timeout and the
 * job still finishes with the right result; resumed, it finds its connection closed, nothing it
 * sends late is counted, and it exits; a client whose scheduler is killed or stopped fails with
 * a message naming it instead of waiting forever; a worker whose scheduler is stopped exits.
 * Short heartbeats and timeouts keep each test to a few seconds. */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tessera/tessera.h>

#include "harness.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Waits at most timeout_s for pid to exit on its own: its status (exit code, or 128+signal),
 * or -1 when it is still running (it is then left running). */
static int wait_exit(pid_t pid, double timeout_s) {
    double deadline = now_s() + timeout_s;
    int st;
    while (now_s() < deadline) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(20000);
    }
    return -1;
}

/* The scheduler's monitor snapshot (a fresh monitor connection each time). */
static json_t *snapshot(const char *addr) {
    tsr_client *m;
    cr_assert_eq(tsr_client_connect_monitor(addr, NULL, &m), 0, "%s", tsr_last_error());
    char *js = NULL;
    cr_assert_eq(tsr_client_info_json(m, 10000, &js), 0, "%s", tsr_client_errmsg(m));
    json_error_t e;
    json_t *j = json_loads(js, 0, &e);
    cr_assert(j, "bad info json: %s", e.text);
    free(js);
    tsr_client_free(m);
    return j;
}

static int events_mention(json_t *info, const char *a, const char *b) {
    json_t *ev = json_object_get(info, "events"), *e;
    size_t i;
    json_array_foreach(ev, i, e) {
        const char *msg = json_string_value(json_object_get(e, "msg"));
        if (!msg) msg = json_string_value(json_array_get(e, 1));
        if (msg && strstr(msg, a) && strstr(msg, b)) return 1;
    }
    return 0;
}

/* sum(A @ B) of two random n x n arrays, computed on the cluster. */
typedef struct mm_job {
    tsr_client *c;
    int64_t n, chunk;
    double got;
    int rc;
} mm_job;

static void build_sum_mm(mm_job *j, tsr_array **keep, tsr_array **sum) {
    int64_t shape[2] = {j->n, j->n}, ch[2] = {j->chunk, j->chunk};
    tsr_array *a, *b, *ab;
    cr_assert_eq(tsr_random(j->c, 2, shape, ch, TSR_FLOAT64, 11, &a), 0);
    cr_assert_eq(tsr_random(j->c, 2, shape, ch, TSR_FLOAT64, 12, &b), 0);
    cr_assert_eq(tsr_matmul(a, b, &ab), 0);
    cr_assert_eq(tsr_reduce(TSR_SUM, ab, NULL, 0, sum), 0);
    tsr_array_free(a);
    tsr_array_free(b);
    *keep = ab;
}

/* The same sum, independently: sum_ij (AB)_ij = sum_k colsum(A)_k * rowsum(B)_k. */
static double ref_sum_mm(int64_t n) {
    double *col = calloc((size_t)n, sizeof *col), total = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < n; k++) col[k] += ref_random_f64(11, (uint64_t)(i * n + k));
    for (int64_t k = 0; k < n; k++) {
        double row = 0;
        for (int64_t jj = 0; jj < n; jj++) row += ref_random_f64(12, (uint64_t)(k * n + jj));
        total += col[k] * row;
    }
    free(col);
    return total;
}

static double run_sum_mm(mm_job *j) {
    tsr_array *ab, *sum;
    build_sum_mm(j, &ab, &sum);
    j->rc = tsr_compute(j->c, &sum, 1, NULL);
    double v = NAN;
    if (j->rc == 0) j->rc = tsr_array_read(sum, &v, sizeof v);
    tsr_array_free(ab);
    tsr_array_free(sum);
    return v;
}

/* Stops `pid` once the client's computation has reported progress (so both workers have tasks
 * and chunks of the job), recording how far it was. */
typedef struct stopper {
    tsr_client *c;
    pid_t pid;
    pthread_t th;
    tsr_progress at;
    int stopped;
} stopper;

static void *stop_mid_job(void *arg) {
    stopper *s = arg;
    double deadline = now_s() + 20;
    while (now_s() < deadline) {
        tsr_progress p;
        int running = tsr_client_progress(s->c, &p);
        if (running == 1 && p.done > 0 && p.done < p.total / 2) {
            s->at = p;
            kill(s->pid, SIGSTOP);
            s->stopped = 1;
            break;
        }
        /* Too late (a very fast machine): not while the client reads the result from it. */
        if (running == 1 && p.done >= p.total / 2) break;
        usleep(2000);
    }
    return NULL;
}

Test(live, stopped_worker_is_lost_and_its_late_reports_dropped, .timeout = 60) {
    char addr[128];
    /* Margins for a loaded machine: w1 must never be taken for lost (it would leave no
     * worker), and w1's fetches from w2 time out after the scheduler has lost w2. */
    const char *sx[] = {"--worker-timeout", "2500", "--heartbeat", "200", NULL};
    pid_t s = start_scheduler_with(addr, sizeof addr, sx);
    const char *wx[] = {"--heartbeat", "200", "--timeout", "4000", NULL};
    pid_t w1 = start_worker_with(addr, 1, "w1", wx);
    pid_t w2 = start_worker_with(addr, 1, "w2", wx);

    tsr_client *c;
    cr_assert_eq(tsr_client_connect(addr, NULL, &c), 0, "%s", tsr_last_error());
    /* Big enough that the job is still running when w2 stops: 1728 block products (512 were
     * done before the stopper could act once the workers got their buffer pool). */
    mm_job j = {.c = c, .n = 2400, .chunk = 200};
    stopper st = {.c = c, .pid = w2};
    pthread_create(&st.th, NULL, stop_mid_job, &st);
    double t0 = now_s();
    double got = run_sum_mm(&j);
    double took = now_s() - t0;
    pthread_join(st.th, NULL);
    cr_assert_eq(j.rc, 0, "the job failed after a worker was stopped: %s", tsr_client_errmsg(c));
    double want = ref_sum_mm(j.n);
    cr_assert(fabs(got - want) <= 1e-9 * fabs(want), "sum(A@B) = %.17g, want %.17g", got, want);
    if (st.stopped) {
        cr_log_info("w2 stopped at %llu/%llu tasks; the job took %.2f s",
                    (unsigned long long)st.at.done, (unsigned long long)st.at.total, took);
    } else {
        cr_log_warn("the job was past half-way before w2 could be stopped: stopping it now");
        /* Release the job's output first: w2 may hold it, and the scheduler would otherwise
         * recompute it when w2 is lost, moving done_total after the test reads it. */
        cr_assert_eq(tsr_client_flush(c), 0);
        usleep(200000);
        kill(w2, SIGSTOP);
    }

    /* The scheduler declared w2 lost because it went silent (not because it closed). */
    json_t *info = NULL;
    for (double end = now_s() + 10; now_s() < end; usleep(100000)) {
        json_decref(info);
        info = snapshot(addr);
        if (events_mention(info, "w2 lost", "sent nothing")) break;
    }
    cr_assert(events_mention(info, "w2 lost", "sent nothing"), "no loss of w2 in %s",
              json_dumps(info, 0));
    cr_assert_eq(json_integer_value(json_object_get(info, "workers")), 1);
    json_int_t done_before = json_integer_value(json_object_get(info, "done_total"));
    json_decref(info);

    /* Resumed, w2 runs what it had been sent and reports it on a connection the scheduler
     * closed: it must exit, and nothing it sent may count. */
    kill(w2, SIGCONT);
    int w2st = wait_exit(w2, 10);
    if (w2st < 0) {
        kill(w2, SIGKILL);
        waitpid(w2, NULL, 0);
    }
    cr_assert(w2st >= 0 && w2st < 128, "w2 did not exit by itself after SIGCONT (status %d)", w2st);
    info = snapshot(addr);
    cr_assert_eq(json_integer_value(json_object_get(info, "done_total")), done_before,
                 "tasks counted after the lost worker came back");
    cr_assert_eq(json_integer_value(json_object_get(info, "workers")), 1);
    json_decref(info);

    /* The scheduler is healthy: another job runs, on w1 alone. */
    mm_job j2 = {.c = c, .n = 400, .chunk = 100};
    got = run_sum_mm(&j2);
    cr_assert_eq(j2.rc, 0, "%s", tsr_client_errmsg(c));
    want = ref_sum_mm(j2.n);
    cr_assert(fabs(got - want) <= 1e-9 * fabs(want), "sum(A@B) = %.17g, want %.17g", got, want);
    tsr_client_free(c);
    cr_assert_eq(stop_proc(w1), 0);
    cr_assert_eq(stop_proc(s), 0);
}

/* A job that cannot run (no worker) keeps tsr_compute waiting on the scheduler. */
typedef struct killer {
    pid_t pid;
    int sig;
    int after_ms;
    pthread_t th;
} killer;

static void *kill_later(void *arg) {
    killer *k = arg;
    usleep((useconds_t)k->after_ms * 1000);
    kill(k->pid, k->sig);
    return NULL;
}

static int compute_waiting(tsr_client *c) {
    int64_t shape[1] = {1000}, ch[1] = {100};
    tsr_array *a;
    cr_assert_eq(tsr_ones(c, 1, shape, ch, TSR_FLOAT64, &a), 0);
    int rc = tsr_compute(c, &a, 1, NULL);
    tsr_array_free(a);
    return rc;
}

Test(live, client_fails_promptly_when_scheduler_is_killed, .timeout = 30) {
    char addr[128];
    pid_t s = start_scheduler(addr, sizeof addr);
    tsr_client *c;
    cr_assert_eq(tsr_client_connect(addr, NULL, &c), 0, "%s", tsr_last_error());
    killer k = {.pid = s, .sig = SIGKILL, .after_ms = 300};
    pthread_create(&k.th, NULL, kill_later, &k);
    double t0 = now_s();
    int rc = compute_waiting(c);
    double took = now_s() - t0;
    pthread_join(k.th, NULL);
    waitpid(s, NULL, 0);
    cr_assert_neq(rc, 0, "tsr_compute succeeded without a scheduler");
    cr_assert_lt(took, 5.0, "tsr_compute took %.1f s to notice", took);
    const char *msg = tsr_client_errmsg(c);
    cr_assert(strstr(msg, addr) && strstr(msg, "lost the connection"),
              "the message does not name the scheduler: %s", msg);
    /* Later calls fail at once too. */
    t0 = now_s();
    cr_assert_neq(compute_waiting(c), 0);
    cr_assert_lt(now_s() - t0, 2.0);
    tsr_client_free(c);
}

Test(live, client_fails_after_timeout_when_scheduler_is_silent, .timeout = 30) {
    char addr[128];
    const char *sx[] = {"--heartbeat", "200", NULL};
    pid_t s = start_scheduler_with(addr, sizeof addr, sx);
    tsr_client_options o;
    tsr_client_options_default(&o);
    o.timeout_ms = 1500;
    tsr_client *c;
    cr_assert_eq(tsr_client_connect(addr, &o, &c), 0, "%s", tsr_last_error());
    /* Heartbeats keep a waiting call alive past the timeout while the scheduler runs; it then
     * fails about one timeout after the scheduler stops. */
    killer k = {.pid = s, .sig = SIGSTOP, .after_ms = 2500};
    pthread_create(&k.th, NULL, kill_later, &k);
    double t0 = now_s();
    int rc = compute_waiting(c);
    double took = now_s() - t0;
    pthread_join(k.th, NULL);
    kill(s, SIGCONT);
    cr_assert_eq(rc, -ETIMEDOUT, "rc %d: %s", rc, tsr_client_errmsg(c));
    cr_assert_gt(took, 2.5 + 1.2, "failed after %.2f s, before the scheduler went silent", took);
    cr_assert_lt(took, 2.5 + 6.0, "took %.2f s to notice the silence", took);
    const char *msg = tsr_client_errmsg(c);
    cr_assert(strstr(msg, addr) && strstr(msg, "sent nothing for"),
              "the message does not say the scheduler went silent: %s", msg);
    tsr_client_free(c);
    cr_assert_eq(stop_proc(s), 0);
}

Test(live, worker_stops_when_scheduler_is_silent, .timeout = 30) {
    char addr[128];
    const char *sx[] = {"--heartbeat", "200", NULL};
    pid_t s = start_scheduler_with(addr, sizeof addr, sx);
    const char *wx[] = {"--heartbeat", "200", "--timeout", "1500", NULL};
    pid_t w = start_worker_with(addr, 1, "w", wx);
    /* Running past its timeout while the scheduler beats. */
    cr_assert_eq(wait_exit(w, 2.0), -1, "the worker exited while its scheduler was alive");
    kill(s, SIGSTOP);
    double t0 = now_s();
    int st = wait_exit(w, 10);
    double took = now_s() - t0;
    kill(s, SIGCONT);
    if (st < 0) {
        kill(w, SIGKILL);
        waitpid(w, NULL, 0);
    }
    cr_assert(st >= 0 && st < 128, "the worker did not stop by itself (status %d)", st);
    cr_assert_gt(took, 1.2, "stopped after %.2f s, before its timeout", took);
    cr_assert_eq(stop_proc(s), 0);
}

Test(live, client_read_from_a_stopped_worker_fails_after_timeout, .timeout = 30) {
    char addr[128];
    /* The scheduler keeps beating and does not lose the worker during the test: only the
     * fetch connection's silence can end the read. */
    const char *sx[] = {"--heartbeat", "200", "--worker-timeout", "60000", NULL};
    pid_t s = start_scheduler_with(addr, sizeof addr, sx);
    pid_t w = start_worker(addr, 1, "w", NULL);
    tsr_client_options o;
    tsr_client_options_default(&o);
    o.timeout_ms = 1500;
    tsr_client *c;
    cr_assert_eq(tsr_client_connect(addr, &o, &c), 0, "%s", tsr_last_error());
    int64_t shape[1] = {1000}, ch[1] = {100};
    tsr_array *a;
    cr_assert_eq(tsr_ones(c, 1, shape, ch, TSR_FLOAT64, &a), 0);
    cr_assert_eq(tsr_compute(c, &a, 1, NULL), 0, "%s", tsr_client_errmsg(c));
    kill(w, SIGSTOP);
    double *buf = malloc(1000 * sizeof *buf);
    double t0 = now_s();
    int rc = tsr_array_read(a, buf, 1000 * sizeof *buf);
    double took = now_s() - t0;
    kill(w, SIGCONT);
    cr_assert_neq(rc, 0, "a read from a stopped worker succeeded");
    cr_assert(took > 1.2 && took < 8.0, "the read failed after %.2f s", took);
    const char *msg = tsr_client_errmsg(c);
    cr_assert(strstr(msg, "sent nothing"), "the message does not say the worker went silent: %s",
              msg);
    free(buf);
    tsr_array_free(a);
    tsr_client_free(c);
    cr_assert_eq(stop_proc(w), 0);
    cr_assert_eq(stop_proc(s), 0);
}
