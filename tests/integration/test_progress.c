/* What `run` and `submit` print about a computation, and progress in the C API: quiet off a
 * terminal unless --progress forces plain lines; the bar and the summary line on a terminal (a
 * real pty); the summary's and --report's numbers agree with the graph; tsr_client_progress()
 * polled from another thread while tsr_compute() runs, and the throttled callback. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tessera/tessera.h"

/* 16x16 blocks of 32: 256 matmul tasks (each takes its chain's 16 k-steps: docs/arrays.md) and
 * 512 sources, small enough for a few seconds under sanitizers. */
static const char *prog =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"A\": {\"op\": \"random\", \"shape\": [512, 512], \"chunks\": 32, \"seed\": 1},\n"
    " \"B\": {\"op\": \"random\", \"shape\": [512, 512], \"chunks\": 32, \"seed\": 2},\n"
    " \"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]},\n"
    " \"t\": {\"op\": \"sum\", \"args\": [\"C\"], \"axis\": null}},\n"
    " \"outputs\": {\"t\": \"-\"}}\n";

static long long check_tasks(const char *dir) {
    const char *argv[] = {"tessera", "check", "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 60);
    cr_assert_eq(r.status, 0, "check: %s", r.err);
    const char *line = strstr(r.out, " tasks");
    while (line && line > r.out && line[-1] != '\n') line--;
    long long n = line ? strtoll(line, NULL, 10) : 0;
    proc_result_free(&r);
    cr_assert(n > 512);
    return n;
}

static char *setup(long long *tasks) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", prog);
    *tasks = check_tasks(dir);
    return dir;
}

/* The summary line: "done: N tasks in S s, G GFLOP/s, M moved between workers". */
static void check_summary(const char *err, long long tasks) {
    const char *s = strstr(err, "done: ");
    cr_assert(s, "no summary line in:\n%s", err);
    long long n = 0;
    double secs = 0, gflops = 0;
    cr_assert_eq(sscanf(s, "done: %lld tasks in %lf s, %lf GFLOP/s", &n, &secs, &gflops), 3,
                 "summary line not as documented: %s", s);
    cr_assert_eq(n, tasks, "summary says %lld tasks, check says %lld", n, tasks);
    cr_assert(secs > 0 && secs < 300 && gflops > 0, "summary: %g s, %g GFLOP/s", secs, gflops);
    cr_assert(strstr(s, " moved between workers\n"), "%s", s);
}

Test(progress, quiet_off_a_terminal, .timeout = 120) {
    long long tasks;
    char *dir = setup(&tasks);
    const char *argv[] = {"tessera", "run", "-w", "2", "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    cr_assert_str_eq(r.err, "", "stderr is not a terminal: nothing on it, got:\n%s", r.err);
    cr_assert(strncmp(r.out, "t: ", 3) == 0, "%s", r.out);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

Test(progress, forced_lines_and_summary, .timeout = 120) {
    long long tasks;
    char *dir = setup(&tasks);
    const char *argv[] = {"tessera", "run", "-w", "2", "--progress", "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    cr_assert(!strchr(r.err, '\r') && !strchr(r.err, '\033'), "no terminal controls off one");
    char want[96];
    snprintf(want, sizeof want, "progress: %lld/%lld tasks 100%%", tasks, tasks);
    cr_assert(strstr(r.err, want), "no final \"%s\" line in:\n%s", want, r.err);
    /* Every line is a progress line or the summary, and the summary is the last. */
    int lines = 0;
    for (const char *l = r.err; *l; lines++) {
        const char *nl = strchr(l, '\n');
        cr_assert(nl, "unterminated line: %s", l);
        cr_assert(!strncmp(l, "progress: ", 10) || (!strncmp(l, "done: ", 6) && !nl[1]),
                  "unexpected line: %.*s", (int)(nl - l), l);
        l = nl + 1;
    }
    cr_assert(lines >= 2);
    check_summary(r.err, tasks);
    /* outputs on stdout stay clean */
    cr_assert(strncmp(r.out, "t: ", 3) == 0 && !strchr(r.out + 3, '\n')[1], "%s", r.out);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

/* --report on submit: one row per operation, their task counts adding up to the graph's, a
 * kernel time and GFLOP/s for the matmul, and a total row. */
Test(progress, report_table, .timeout = 120) {
    long long tasks;
    char *dir = setup(&tasks);
    char addr[128];
    pid_t s = start_scheduler(addr, sizeof addr);
    pid_t w1 = start_worker(addr, 1, "w1", NULL), w2 = start_worker(addr, 1, "w2", NULL);
    const char *argv[] = {"tessera", "submit", "--scheduler", addr, "--report", "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 100);
    stop_proc(w2);
    stop_proc(w1);
    stop_proc(s);
    cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
    cr_assert(!strstr(r.err, "done: "), "no summary without a terminal or --progress");
    const char *head = strstr(r.err, "op ");
    cr_assert(head == r.err, "the table does not start the output:\n%s", r.err);
    cr_assert(strstr(head, "tasks") && strstr(head, "kernel s") && strstr(head, "mean ms") &&
              strstr(head, "GFLOP/s") && strstr(head, "moved"));
    long long sum = 0, total = -1;
    int saw_matmul = 0;
    for (const char *l = strchr(r.err, '\n') + 1; *l; l = strchr(l, '\n') + 1) {
        char name[32];
        long long n;
        double secs;
        if (sscanf(l, "%31s %lld %lf", name, &n, &secs) != 3) break;
        if (!strcmp(name, "total")) {
            total = n;
            break;
        }
        sum += n;
        if (!strcmp(name, "matmul")) {
            char mean[32], gf[32];
            cr_assert_eq(sscanf(l, "%*s %*d %*f %31s %31s", mean, gf), 2);
            cr_assert_eq(n, 256);
            cr_assert(secs > 0 && atof(mean) > 0 && atof(gf) > 0, "matmul row: %s", l);
            saw_matmul = 1;
        }
    }
    cr_assert(saw_matmul, "no matmul row:\n%s", r.err);
    cr_assert_eq(sum, tasks, "the rows add up to %lld tasks, the graph has %lld", sum, tasks);
    cr_assert_eq(total, tasks, "total row: %lld", total);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

/* Runs `tessera run` with a pty as its terminal; returns everything it wrote there. */
static char *run_on_pty(const char *dir, const char *extra) {
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    cr_assert(pid >= 0, "forkpty: %s", strerror(errno));
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(126);
        if (extra)
            execl(tessera_exe(), "tessera", "run", "-w", "2", extra, "p.json", (char *)NULL);
        else
            execl(tessera_exe(), "tessera", "run", "-w", "2", "p.json", (char *)NULL);
        _exit(127);
    }
    char *out = calloc(1, 1);
    size_t len = 0;
    for (;;) {
        struct pollfd p = {master, POLLIN, 0};
        int n = poll(&p, 1, 100000);
        cr_assert(n > 0, "no output from tessera run on a pty for 100 s");
        char buf[4096];
        ssize_t k = read(master, buf, sizeof buf);
        if (k <= 0) break; /* EIO once the child has exited and closed the pty */
        out = realloc(out, len + (size_t)k + 1);
        memcpy(out + len, buf, (size_t)k);
        len += (size_t)k;
        out[len] = 0;
    }
    close(master);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tessera run on a pty failed:\n%s", out);
    return out;
}

Test(progress, bar_and_summary_on_a_terminal, .timeout = 200) {
    long long tasks;
    char *dir = setup(&tasks);
    char *out = run_on_pty(dir, NULL);
    char want[96];
    snprintf(want, sizeof want, "] %lld/%lld 100%%", tasks, tasks);
    cr_assert(strstr(out, "\r[") && strstr(out, want), "no bar reaching 100%%:\n%s", out);
    cr_assert(strstr(out, "tasks/s") && strstr(out, "ETA"), "%s", out);
    cr_assert(strstr(out, "t: "), "the printed output is missing:\n%s", out);
    /* The tty turns "\n" into "\r\n": the summary ends its own line. */
    char *s = strstr(out, "done: ");
    cr_assert(s && strstr(s, "moved between workers\r\n"), "%s", out);
    char *to = s;
    for (char *from = s; *from; from++)
        if (*from != '\r') *to++ = *from;
    *to = 0;
    check_summary(out, tasks);
    free(out);
    out = run_on_pty(dir, "--no-progress");
    cr_assert(!strstr(out, "\r[") && !strstr(out, "done: "), "--no-progress drew:\n%s", out);
    cr_assert(strstr(out, "t: "), "%s", out);
    free(out);
    remove_tmpdir(dir);
}

/* ---- the C API ---- */

typedef struct poller {
    tsr_client *c;
    atomic_int stop;
    uint64_t want_total;
    /* What the poller saw (checked on the test's thread: Criterion asserts belong there). */
    long polls, running_polls, bad;
    char why[256];
} poller;

static void *poll_thread(void *arg) {
    poller *p = arg;
    uint64_t last = 0;
    double last_elapsed = 0;
    while (!atomic_load(&p->stop)) {
        tsr_progress pr;
        int rc = tsr_client_progress(p->c, &pr);
        p->polls++;
        if (rc == 1) {
            p->running_polls++;
            if (pr.total != p->want_total || pr.done > pr.total || pr.done < last ||
                pr.elapsed < last_elapsed) {
                p->bad++;
                snprintf(p->why, sizeof p->why, "done %llu total %llu (last %llu) elapsed %g",
                         (unsigned long long)pr.done, (unsigned long long)pr.total,
                         (unsigned long long)last, pr.elapsed);
            }
            last = pr.done;
            last_elapsed = pr.elapsed;
        } else if (rc != 0) {
            p->bad++;
            snprintf(p->why, sizeof p->why, "tsr_client_progress returned %d", rc);
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

typedef struct calls {
    int n;
    tsr_progress last;
} calls;

static void count_cb(const tsr_progress *p, void *user) {
    calls *k = user;
    k->n++;
    k->last = *p;
}

Test(progress, api_poll_from_another_thread, .timeout = 200) {
    tsr_progress pr;
    cr_assert_eq(tsr_client_progress(NULL, &pr), TSR_EINVALID);
    tsr_client *off;
    cr_assert_eq(tsr_client_new_offline(&off), 0);
    memset(&pr, 0xff, sizeof pr);
    cr_assert_eq(tsr_client_progress(off, &pr), 0);
    cr_assert(pr.done == 0 && pr.total == 0 && pr.erred == 0, "nothing ran on this client");
    tsr_client_free(off);

    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.workers = 2;
    lo.tessera_path = tessera_exe();
    tsr_client *c;
    cr_assert_eq(tsr_client_start_local(&lo, &c), 0, "%s", tsr_last_error());
    int64_t shape[2] = {1024, 1024}, chunks[2] = {64, 64};
    tsr_array *a, *b, *m, *t;
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 1, &a), 0);
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 2, &b), 0);
    cr_assert_eq(tsr_matmul(a, b, &m), 0);
    cr_assert_eq(tsr_reduce(TSR_SUM, m, NULL, 0, &t), 0);
    int64_t tasks = tsr_task_count(&t, 1);

    poller p = {.c = c, .want_total = (uint64_t)tasks};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, poll_thread, &p), 0);
    calls k = {0};
    tsr_compute_options co;
    tsr_compute_options_default(&co);
    co.progress = count_cb;
    co.user = &k;
    co.progress_interval_ms = 300;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = tsr_compute(c, &t, 1, &co);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    atomic_store(&p.stop, 1);
    pthread_join(th, NULL);
    cr_assert_eq(rc, 0, "%s", tsr_client_errmsg(c));
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;

    cr_assert_eq(p.bad, 0, "%ld inconsistent polls, e.g. %s", p.bad, p.why);
    cr_assert(p.running_polls > 0, "never saw the computation running (%ld polls)", p.polls);
    cr_assert_eq(tsr_client_progress(c, &pr), 0, "nothing runs after tsr_compute returned");
    cr_assert(pr.done == (uint64_t)tasks && pr.total == (uint64_t)tasks, "after: %llu/%llu",
              (unsigned long long)pr.done, (unsigned long long)pr.total);
    cr_assert(pr.elapsed > 0 && pr.elapsed <= wall + 0.01, "elapsed %g, wall %g", pr.elapsed, wall);
    /* The callback: throttled to one call per 300 ms plus the final one, which says 100%. */
    cr_assert(k.n >= 1 && k.n <= (int)(wall / 0.3) + 2, "%d calls in %g s", k.n, wall);
    cr_assert(k.last.done == (uint64_t)tasks && k.last.total == (uint64_t)tasks);

    /* A monitor of the same cluster can watch but not compute; a client cannot ask for info. */
    char *info = NULL;
    cr_assert_eq(tsr_client_info_json(c, 1000, &info), TSR_EINVALID);
    cr_assert_null(info);
    tsr_client *mon;
    tsr_client_options mo; /* the local cluster's secret: only its owner can let a monitor in */
    tsr_client_options_default(&mo);
    mo.token = tsr_client_token(c);
    cr_assert_not_null(mo.token);
    cr_assert_eq(tsr_client_connect_monitor(tsr_client_address(c), &mo, &mon), 0, "%s",
                 tsr_last_error());
    cr_assert_eq(tsr_client_info_json(mon, 10000, &info), 0, "%s", tsr_client_errmsg(mon));
    cr_assert(strstr(info, "\"wlist\"") && !strstr(info, "\"t\":"), "%s", info);
    free(info);
    tsr_array *x;
    cr_assert_eq(tsr_ones(mon, 2, shape, chunks, TSR_FLOAT64, &x), 0);
    cr_assert_eq(tsr_compute(mon, &x, 1, NULL), TSR_EINVALID);
    tsr_array_free(x);
    tsr_client_free(mon);

    tsr_array_free(t);
    tsr_array_free(m);
    tsr_array_free(b);
    tsr_array_free(a);
    tsr_client_free(c);
}
