/* Servers as handles, through the public API only: two schedulers and four workers side by side
 * in this one process (each on its own thread, port 0, addresses read back), a computation
 * submitted to each through a client and checked against a naive product of the inputs read
 * back, then stopped from another thread or from a signal handler and freed with every loop
 * closed (a failed uv_loop_close reaches the logger as an error, which the tests count). Also:
 * the library prints nothing on its own, the options' life cycle and tsr_version(). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tessera/tessera.h"

/* ---- A logger that records instead of printing ---------------------------------------------- */

typedef struct logbook {
    atomic_int errors, lines;
    pthread_mutex_t mu;
    char last_error[256];
} logbook;

static void record(void *cookie, int level, const char *msg) {
    logbook *lb = cookie;
    atomic_fetch_add(&lb->lines, 1);
    if (level != TSR_LOG_ERROR) return;
    atomic_fetch_add(&lb->errors, 1);
    pthread_mutex_lock(&lb->mu);
    snprintf(lb->last_error, sizeof lb->last_error, "%s", msg);
    pthread_mutex_unlock(&lb->mu);
}

static logbook book = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ---- Servers on threads ---------------------------------------------------------------------- */

/* Workers that the scheduler welcomed, and a way to wait for them. */
static pthread_mutex_t ready_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cv = PTHREAD_COND_INITIALIZER;
static int nready;

static void on_ready(const char *peer_address, void *user) {
    (void)peer_address;
    (void)user;
    pthread_mutex_lock(&ready_mu);
    nready++;
    pthread_cond_broadcast(&ready_cv);
    pthread_mutex_unlock(&ready_mu);
}

static int wait_ready(int n, int seconds) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&ready_mu);
    int rc = 0;
    while (nready < n && rc == 0) rc = pthread_cond_timedwait(&ready_cv, &ready_mu, &until);
    int got = nready;
    pthread_mutex_unlock(&ready_mu);
    return got;
}

typedef struct server {
    tsr_scheduler *s; /* one of the two is set */
    tsr_worker *w;
    pthread_t th;
    int rc;
} server;

static void *serve(void *arg) {
    server *sv = arg;
    sv->rc = sv->s ? tsr_scheduler_run(sv->s) : tsr_worker_run(sv->w);
    return NULL;
}

static tsr_scheduler *new_scheduler(void) {
    tsr_scheduler_options o;
    tsr_scheduler_options_default(&o);
    o.listen = "127.0.0.1:0";
    o.logger.callback = record;
    o.logger.cookie = &book;
    tsr_scheduler *s = NULL;
    cr_assert_eq(tsr_scheduler_new(&o, &s), 0, "%s", book.last_error);
    const char *addr = tsr_scheduler_address(s);
    cr_assert(strncmp(addr, "127.0.0.1:", 10) == 0 && strcmp(addr, "127.0.0.1:0") != 0, "%s", addr);
    return s;
}

static tsr_worker *new_worker(const char *sched_addr, const char *name) {
    tsr_worker_options o;
    tsr_worker_options_default(&o);
    /* A copy that goes before the worker does: the options' strings are copied. */
    char *addr = strdup(sched_addr);
    o.scheduler = addr;
    o.name = name;
    o.on_ready = on_ready;
    o.logger.callback = record;
    o.logger.cookie = &book;
    tsr_worker *w = NULL;
    int rc = tsr_worker_new(&o, &w);
    memset(addr, 'x', strlen(addr));
    free(addr);
    cr_assert_eq(rc, 0, "%s: %s", tsr_strerror(rc), book.last_error);
    cr_assert_str_eq(tsr_worker_name(w), name);
    cr_assert(strncmp(tsr_worker_address(w), "127.0.0.1:", 10) == 0, "%s", tsr_worker_address(w));
    return w;
}

static void start(server *sv) {
    cr_assert_eq(pthread_create(&sv->th, NULL, serve, sv), 0);
}

/* The embedding program's duty (tessera.h): a peer that vanishes must not kill the process. */
static void embedder(void) {
    signal(SIGPIPE, SIG_IGN);
}

/* ---- One client's computation ---------------------------------------------------------------- */

enum { M = 37, K = 29, N = 23 };

typedef struct job {
    const char *address;
    uint64_t seed;
    int rc;
    char err[512];
    double a[M * K], b[K * N], d[M * N], colsum[N];
} job;

/* D = A @ B + 1.5 and the column sums of D, with A and B read back too, on a fresh client. Runs
 * on its own thread (no Criterion assertion here: the main thread checks). */
static void *client_job(void *arg) {
    job *j = arg;
    tsr_client *c = NULL;
    tsr_array *A = NULL, *B = NULL, *C = NULL, *D = NULL, *S = NULL;
    j->rc = tsr_client_connect(j->address, NULL, &c);
    if (j->rc) {
        snprintf(j->err, sizeof j->err, "connect: %s", tsr_last_error());
        return NULL;
    }
    const int64_t ash[2] = {M, K}, ach[2] = {16, 10}, bsh[2] = {K, N}, bch[2] = {10, 8};
    const int axis0[1] = {0};
    int rc = tsr_random(c, 2, ash, ach, TSR_FLOAT64, j->seed, &A);
    if (!rc) rc = tsr_random(c, 2, bsh, bch, TSR_FLOAT64, j->seed + 1, &B);
    if (!rc) rc = tsr_matmul(A, B, &C);
    if (!rc) rc = tsr_binary_scalar(TSR_ADD, C, 1.5, 0, &D);
    if (!rc) rc = tsr_reduce(TSR_SUM, D, axis0, 1, &S);
    tsr_array *outs[4] = {A, B, D, S};
    if (!rc) rc = tsr_compute(c, outs, 4, NULL);
    if (!rc) rc = tsr_array_read(A, j->a, sizeof j->a);
    if (!rc) rc = tsr_array_read(B, j->b, sizeof j->b);
    if (!rc) rc = tsr_array_read(D, j->d, sizeof j->d);
    if (!rc) rc = tsr_array_read(S, j->colsum, sizeof j->colsum);
    if (rc) snprintf(j->err, sizeof j->err, "%s: %s", tsr_strerror(rc), tsr_client_errmsg(c));
    j->rc = rc;
    tsr_array_free(A);
    tsr_array_free(B);
    tsr_array_free(C);
    tsr_array_free(D);
    tsr_array_free(S);
    tsr_client_free(c);
    return NULL;
}

/* The naive reference, from the inputs read back. */
static void check_job(const job *j) {
    cr_assert_eq(j->rc, 0, "job on %s: %s", j->address, j->err);
    double lo = 1, hi = 0;
    for (int i = 0; i < M * K; i++) {
        lo = fmin(lo, j->a[i]);
        hi = fmax(hi, j->a[i]);
    }
    cr_assert(lo >= 0 && hi < 1 && hi > lo, "A is not uniform on [0, 1): [%g, %g]", lo, hi);
    for (int n = 0; n < N; n++) {
        double col = 0;
        for (int m = 0; m < M; m++) {
            double ref = 1.5;
            for (int k = 0; k < K; k++) ref += j->a[m * K + k] * j->b[k * N + n];
            cr_assert_float_eq(j->d[m * N + n], ref, 1e-12 * K, "D[%d,%d] = %.17g, want %.17g", m,
                               n, j->d[m * N + n], ref);
            col += ref;
        }
        cr_assert_float_eq(j->colsum[n], col, 1e-11 * M * K, "sum(D)[%d] = %.17g, want %.17g", n,
                           j->colsum[n], col);
    }
}

/* ---- Tests ----------------------------------------------------------------------------------- */

typedef struct stopper {
    server *sv;
    size_t n;
} stopper;

static void *stop_all(void *arg) {
    stopper *st = arg;
    for (size_t i = 0; i < st->n; i++) {
        if (st->sv[i].s) tsr_scheduler_stop(st->sv[i].s);
        if (st->sv[i].w) tsr_worker_stop(st->sv[i].w);
    }
    return NULL;
}

Test(servers, two_schedulers_four_workers_in_one_process, .init = embedder, .timeout = 120) {
    server sv[6];
    memset(sv, 0, sizeof sv);
    sv[0].s = new_scheduler();
    sv[1].s = new_scheduler();
    cr_assert_str_neq(tsr_scheduler_address(sv[0].s), tsr_scheduler_address(sv[1].s));
    static const char *names[4] = {"a0", "a1", "b0", "b1"};
    for (int i = 0; i < 4; i++)
        sv[2 + i].w = new_worker(tsr_scheduler_address(sv[i / 2].s), names[i]);
    for (int i = 0; i < 6; i++) start(&sv[i]);
    cr_assert_eq(wait_ready(4, 60), 4, "not every worker was welcomed: %s", book.last_error);

    /* One computation per scheduler, both at once, with different inputs. */
    job *jobs = calloc(2, sizeof *jobs);
    pthread_t cth[2];
    for (int i = 0; i < 2; i++) {
        jobs[i].address = tsr_scheduler_address(sv[i].s);
        jobs[i].seed = 100 + 10 * (uint64_t)i;
        cr_assert_eq(pthread_create(&cth[i], NULL, client_job, &jobs[i]), 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(cth[i], NULL);
    for (int i = 0; i < 2; i++) check_job(&jobs[i]);
    cr_assert(memcmp(jobs[0].a, jobs[1].a, sizeof jobs[0].a) != 0, "both clusters computed the "
                                                                   "same inputs");

    /* Everything stops from another thread; run returns 0 on every one. */
    stopper st = {sv, 6};
    pthread_t sth;
    cr_assert_eq(pthread_create(&sth, NULL, stop_all, &st), 0);
    pthread_join(sth, NULL);
    for (int i = 0; i < 6; i++) {
        pthread_join(sv[i].th, NULL);
        cr_expect_eq(sv[i].rc, 0, "server %d: %s", i, tsr_strerror(sv[i].rc));
    }
    /* Stopping again after run returned is harmless. */
    tsr_scheduler_stop(sv[0].s);
    tsr_worker_stop(sv[2].w);
    for (int i = 0; i < 6; i++) {
        tsr_scheduler_free(sv[i].s);
        tsr_worker_free(sv[i].w);
    }
    cr_assert_eq(atomic_load(&book.errors), 0, "an error was logged: %s", book.last_error);
    free(jobs);
}

static tsr_scheduler *sig_sched;
static tsr_worker *sig_worker;

static void on_usr1(int sig) {
    (void)sig;
    tsr_scheduler_stop(sig_sched);
    tsr_worker_stop(sig_worker);
}

Test(servers, stop_from_a_signal_handler, .init = embedder, .timeout = 60) {
    server sv[2];
    memset(sv, 0, sizeof sv);
    sv[0].s = sig_sched = new_scheduler();
    sv[1].w = sig_worker = new_worker(tsr_scheduler_address(sig_sched), "sig");
    start(&sv[0]);
    start(&sv[1]);
    cr_assert_eq(wait_ready(1, 30), 1, "the worker was not welcomed: %s", book.last_error);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    cr_assert_eq(raise(SIGUSR1), 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(sv[i].th, NULL);
        cr_expect_eq(sv[i].rc, 0, "server %d: %s", i, tsr_strerror(sv[i].rc));
    }
    tsr_worker_free(sig_worker);
    tsr_scheduler_free(sig_sched);
    cr_assert_eq(atomic_load(&book.errors), 0, "an error was logged: %s", book.last_error);
}

Test(servers, life_cycle_without_serving, .init = embedder, .timeout = 30) {
    /* Stop before run: run returns at once; a second run is refused. */
    tsr_scheduler *s = new_scheduler();
    tsr_scheduler_stop(s);
    cr_assert_eq(tsr_scheduler_run(s), 0);
    cr_assert_eq(tsr_scheduler_run(s), TSR_EINVALID);
    tsr_scheduler_free(s);
    /* Freed without ever running, with a worker that never ran either. */
    s = new_scheduler();
    tsr_worker *w = new_worker(tsr_scheduler_address(s), "idle");
    tsr_worker_free(w);
    tsr_scheduler_free(s);
    tsr_scheduler_free(NULL);
    tsr_worker_free(NULL);
    cr_assert_eq(atomic_load(&book.errors), 0, "an error was logged: %s", book.last_error);

    /* A worker whose scheduler is not there: new succeeds, run says why. */
    tsr_worker_options o;
    tsr_worker_options_default(&o);
    o.scheduler = "127.0.0.1:1";
    cr_assert_eq(tsr_worker_new(&o, &w), 0);
    cr_assert_eq(tsr_worker_run(w), -ECONNREFUSED);
    tsr_worker_free(w);
    o.scheduler = NULL;
    w = (tsr_worker *)&o; /* must be reset on failure */
    cr_assert_eq(tsr_worker_new(&o, &w), TSR_EINVALID);
    cr_assert_null(w);
    cr_assert_eq(tsr_worker_new(NULL, &w), TSR_EINVALID);
}

/* Unnamed workers of one process get names of their own: HOST-PID-PORT, PORT their peer port. */
Test(servers, unnamed_workers_have_distinct_names, .init = embedder, .timeout = 30) {
    tsr_scheduler *s = new_scheduler();
    tsr_worker *w[2];
    char host[64] = "localhost", want[2][160];
    gethostname(host, sizeof host - 1);
    for (int i = 0; i < 2; i++) {
        tsr_worker_options o;
        tsr_worker_options_default(&o);
        o.scheduler = tsr_scheduler_address(s);
        cr_assert_eq(tsr_worker_new(&o, &w[i]), 0);
        const char *port = strrchr(tsr_worker_address(w[i]), ':');
        cr_assert_not_null(port);
        snprintf(want[i], sizeof want[i], "%.47s-%ld-%s", host, (long)getpid(), port + 1);
        cr_assert_str_eq(tsr_worker_name(w[i]), want[i]);
    }
    cr_assert_str_neq(tsr_worker_name(w[0]), tsr_worker_name(w[1]));
    tsr_worker_free(w[0]);
    tsr_worker_free(w[1]);
    tsr_scheduler_free(s);
}

/* Runs fn with this process's stderr going to a file; returns what was written there. */
static char *capture_stderr(void (*fn)(void)) {
    char path[] = "/tmp/tsr-stderr-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)len + 1);
    pread(fd, text, (size_t)len, 0);
    close(fd);
    return text;
}

static void failing_servers_without_logger(void) {
    tsr_scheduler_options so;
    tsr_scheduler_options_default(&so);
    so.listen = "0.0.0.0:0"; /* refused: no token off loopback */
    so.log_level = TSR_LOG_DEBUG;
    tsr_scheduler *s = NULL;
    cr_assert_eq(tsr_scheduler_new(&so, &s), TSR_EAUTH);
    so.listen = "nonsense";
    cr_assert_eq(tsr_scheduler_new(&so, &s), TSR_EINVALID);
    tsr_worker_options wo;
    tsr_worker_options_default(&wo);
    wo.log_level = TSR_LOG_DEBUG;
    tsr_worker *w = NULL;
    cr_assert_eq(tsr_worker_new(&wo, &w), TSR_EINVALID);
    wo.scheduler = "127.0.0.1:1";
    wo.gpu = 0;
    setenv("TESSERA_CUDA_MODULE", "/nonexistent/libtessera_cuda.so", 1); /* no backend to load */
    cr_assert_eq(tsr_worker_new(&wo, &w), TSR_EUNSUPPORTED);
}

Test(servers, the_library_is_quiet_without_a_logger, .init = embedder, .timeout = 30) {
    char *text = capture_stderr(failing_servers_without_logger);
    cr_expect_str_empty(text, "the library printed: %s", text);
    free(text);

    /* With a logger the same failure is told to it, naming the address. */
    tsr_scheduler_options so;
    tsr_scheduler_options_default(&so);
    so.listen = "0.0.0.0:0";
    so.logger.callback = record;
    so.logger.cookie = &book;
    tsr_scheduler *s = NULL;
    cr_assert_eq(tsr_scheduler_new(&so, &s), TSR_EAUTH);
    cr_assert_null(s);
    cr_assert(strstr(book.last_error, "0.0.0.0:0") && strstr(book.last_error, "token"), "%s",
              book.last_error);
}

Test(servers, version_and_level_names) {
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", TSR_VERSION_MAJOR, TSR_VERSION_MINOR,
             TSR_VERSION_PATCH);
    cr_assert_str_eq(tsr_version(), want);
    cr_assert_str_eq(tsr_log_level_name(TSR_LOG_ERROR), "error");
    cr_assert_str_eq(tsr_log_level_name(TSR_LOG_WARN), "warning");
    cr_assert_str_eq(tsr_log_level_name(TSR_LOG_INFO), "info");
    cr_assert_str_eq(tsr_log_level_name(TSR_LOG_DEBUG), "debug");
    cr_assert_str_eq(tsr_log_level_name(99), "debug");
}
