/* `tessera top` against real clusters: the --json and --once snapshots agree with what the
 * cluster is known to hold (its workers, a computed job whose counts add up to the graph's size,
 * the totals after it is released), the invariants hold while a job runs, errors name the
 * address, and the full-screen dashboard works in a real terminal (tmux: worker rows, bars and
 * totals on screen and changing, redrawn on resize, `q` and ^C restoring the terminal). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tessera/tessera.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The cluster of a test (scheduler first), a background submit, and the tmux server: stopped
 * by fini even when an assertion ends the test early. */
static pid_t cluster[3], submit_pid;
static char tmux_sock[512], tmux_path[512];
static json_t *snap;

/* Stops the test's tmux server (its socket lives in the test's directory: before that goes). */
static void stop_tmux(void) {
    if (!tmux_sock[0]) return;
    const char *argv[] = {tmux_path, "-S", tmux_sock, "kill-server", NULL};
    proc_result r = run_cmd(NULL, argv, 10);
    proc_result_free(&r);
    tmux_sock[0] = 0;
}

static void cleanup(void) {
    if (submit_pid > 0) {
        kill(submit_pid, SIGKILL);
        waitpid(submit_pid, NULL, 0);
        submit_pid = 0;
    }
    stop_tmux();
    for (int k = 2; k >= 0; k--)
        if (cluster[k] > 0) stop_proc(cluster[k]);
    memset(cluster, 0, sizeof cluster);
    json_decref(snap);
    snap = NULL;
}

static void start_cluster(char *addr, size_t size) {
    cluster[0] = start_scheduler(addr, size);
    cluster[1] = start_worker(addr, 1, "w1", NULL);
    cluster[2] = start_worker(addr, 1, "w2", NULL);
}

/* `tessera top --json --scheduler addr`, parsed (owned by `snap` until the next call). */
static json_t *top_json(const char *addr) {
    const char *argv[] = {"tessera", "top", "--json", "--scheduler", addr, NULL};
    proc_result r = run_cmd(NULL, argv, 30);
    cr_assert_eq(r.status, 0, "top --json exit %d:\n%s", r.status, r.err);
    json_decref(snap);
    json_error_t err;
    snap = json_loads(r.out, 0, &err);
    cr_assert(json_is_object(snap), "top --json printed no JSON object (%s):\n%s", err.text, r.out);
    proc_result_free(&r);
    return snap;
}

static long long inum(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "no integer \"%s\" in the snapshot", key);
    return (long long)json_integer_value(v);
}

/* done + running + ready + erred + waiting of a job or an operation. */
static long long count_sum(const json_t *o) {
    return inum(o, "done") + inum(o, "running") + inum(o, "ready") + inum(o, "erred") +
           inum(o, "waiting");
}

/* A job's and each of its operations' counts add up: done + running + ready + erred + waiting =
 * total, none negative; the operations' totals, and their ready counts, add up to the job's.
 * Returns the job's total. */
static long long check_job_counts(const json_t *j) {
    long long total = inum(j, "total"), sum = 0, ready = 0;
    cr_assert_eq(count_sum(j), total, "job counts do not add up to its total %lld", total);
    size_t k;
    const json_t *op;
    json_array_foreach(json_object_get(j, "ops"), k, op) {
        long long t = inum(op, "total");
        cr_assert(inum(op, "done") >= 0 && inum(op, "running") >= 0 && inum(op, "ready") >= 0 &&
                  inum(op, "waiting") >= 0);
        cr_assert_eq(count_sum(op), t, "op %s: counts do not add up to %lld",
                     json_string_value(json_object_get(op, "op")), t);
        sum += t;
        ready += inum(op, "ready");
    }
    cr_assert_eq(sum, total, "the operations' totals add up to %lld, the job has %lld", sum, total);
    cr_assert_eq(ready, inum(j, "ready"),
                 "the operations' ready tasks add up to %lld, the job "
                 "says %lld",
                 ready, inum(j, "ready"));
    return total;
}

static const json_t *find_op(const json_t *j, const char *name) {
    size_t k;
    const json_t *op;
    json_array_foreach(json_object_get(j, "ops"), k, op) {
        if (strcmp(json_string_value(json_object_get(op, "op")), name) == 0) return op;
    }
    return NULL;
}

/* An idle cluster, then a job computed and held by a client (the API: it stays on the cluster
 * until its arrays are freed), then nothing again once released. */
Test(top, json_and_once_match_the_cluster, .timeout = 180, .fini = cleanup) {
    char addr[128];
    start_cluster(addr, sizeof addr);

    json_t *v = top_json(addr);
    cr_assert_eq(inum(v, "workers"), 2);
    cr_assert_eq(inum(v, "cpu_workers"), 2);
    cr_assert_eq(json_array_size(json_object_get(v, "wlist")), 2);
    cr_assert_eq(json_array_size(json_object_get(v, "jlist")), 0);
    cr_assert_str_eq(json_string_value(json_object_get(v, "addr")), addr);
    long long done0 = inum(v, "done_total");

    tsr_client *c;
    cr_assert_eq(tsr_client_connect(addr, NULL, &c), 0, "%s", tsr_last_error());
    int64_t shape[2] = {512, 512}, chunks[2] = {128, 128};
    tsr_array *a, *b, *m, *t;
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 1, &a), 0);
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 2, &b), 0);
    cr_assert_eq(tsr_matmul(a, b, &m), 0);
    cr_assert_eq(tsr_reduce(TSR_SUM, m, NULL, 0, &t), 0);
    tsr_array *outs[2] = {m, t};
    int64_t tasks = tsr_task_count(outs, 2);
    cr_assert(tasks > 0);
    cr_assert_eq(tsr_compute(c, outs, 2, NULL), 0, "%s", tsr_client_errmsg(c));
    char *stats = tsr_client_stats_json(c);
    json_t *st = json_loads(stats, 0, NULL);
    free(stats);
    cr_assert(st);
    long long inl = json_integer_value(json_object_get(st, "sources_inline"));
    json_decref(st);

    /* Finished and held: one job, every task done, nothing running or waiting. */
    v = top_json(addr);
    const json_t *jl = json_object_get(v, "jlist");
    cr_assert_eq(json_array_size(jl), 1, "want the held job in jlist");
    const json_t *j = json_array_get(jl, 0);
    cr_assert_eq(check_job_counts(j), tasks, "top's total is not the graph's %lld tasks",
                 (long long)tasks);
    cr_assert_eq(inum(j, "done"), tasks);
    const json_t *mm = find_op(j, "matmul");
    /* 4x4 output chunks, each one task of its 4 k-steps (docs/arrays.md: small blocks are
     * grouped). */
    cr_assert(mm && inum(mm, "done") == inum(mm, "total") && inum(mm, "total") == 4 * 4,
              "matmul: want 16/16 done");
    /* The workers ran every task but the inline sources, and report them all. */
    long long wsum = 0;
    size_t k;
    const json_t *w;
    json_array_foreach(json_object_get(v, "wlist"), k, w) {
        wsum += inum(w, "tasks");
        if (inum(w, "tasks") > 0)
            cr_assert(inum(w, "rss") > 0, "a worker that ran tasks reports its memory");
    }
    cr_assert_eq(inum(v, "done_total") - done0, tasks - inl);
    cr_assert_eq(wsum, tasks - inl);

    /* The plain-text snapshot shows the same. */
    const char *argv[] = {"tessera", "top", "--once", "--scheduler", addr, NULL};
    proc_result r = run_cmd(NULL, argv, 30);
    cr_assert_eq(r.status, 0, "top --once exit %d:\n%s", r.status, r.err);
    char want[64];
    snprintf(want, sizeof want, "%lld/%lld tasks", (long long)tasks, (long long)tasks);
    cr_assert(strstr(r.out, "2 workers (2 cpu, 0 gpu)") && strstr(r.out, " w1 ") &&
                  strstr(r.out, " w2 ") && strstr(r.out, want) && strstr(r.out, "16/16"),
              "--once is missing workers or the job:\n%s", r.out);
    for (const char *line = r.out; *line;) {
        const char *nl = strchr(line, '\n');
        cr_assert(nl && nl - line <= 80, "--once off a terminal is 80 columns wide:\n%s", r.out);
        line = nl + 1;
    }
    proc_result_free(&r);

    tsr_array_free(t);
    tsr_array_free(m);
    tsr_array_free(b);
    tsr_array_free(a);
    /* Freeing only records the release; the client sends it at its next network call. */
    cr_assert_eq(tsr_client_flush(c), 0);
    double deadline = now_s() + 20;
    while (json_array_size(json_object_get(top_json(addr), "jlist")) != 0) {
        cr_assert(now_s() < deadline, "the released job is still listed");
        sleep_ms(100);
    }
    tsr_client_free(c);
}

/* 32x32 output chunks of 128, each a chain of 2 tasks of 16 k-steps (docs/arrays.md): 2048
 * matmul tasks. */
static const char *big =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"A\": {\"op\": \"random\", \"shape\": [4096, 4096], \"chunks\": 128, \"seed\": 1},\n"
    " \"B\": {\"op\": \"random\", \"shape\": [4096, 4096], \"chunks\": 128, \"seed\": 2},\n"
    " \"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]},\n"
    " \"t\": {\"op\": \"sum\", \"args\": [\"C\"], \"axis\": null}},\n"
    " \"outputs\": {\"t\": \"-\"}}\n";

/* `tessera submit` in the background, its output to dir/submit.log. */
static void submit_bg(const char *dir, const char *addr) {
    char log[600];
    snprintf(log, sizeof log, "%s/submit.log", dir);
    submit_pid = fork();
    cr_assert(submit_pid >= 0);
    if (submit_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (chdir(dir) != 0 || fd < 0) _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(tessera_exe(), "tessera", "submit", "--scheduler", addr, "big.json", (char *)NULL);
        _exit(127);
    }
}

/* Has the background submit exited? Reaps it and keeps its status if so. */
static int submit_status = -1;

static int submit_exited(void) {
    int st;
    if (submit_pid <= 0) return 1;
    if (waitpid(submit_pid, &st, WNOHANG) != submit_pid) return 0;
    submit_pid = 0;
    submit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return 1;
}

static int wait_submit(int timeout_s) {
    double deadline = now_s() + timeout_s;
    while (!submit_exited()) {
        cr_assert(now_s() < deadline, "submit did not finish in %d s", timeout_s);
        sleep_ms(50);
    }
    return submit_status;
}

/* While the job runs every snapshot's counts add up, and done never goes back. */
Test(top, json_counts_add_up_while_running, .timeout = 240, .fini = cleanup) {
    char addr[128];
    start_cluster(addr, sizeof addr);
    char *dir = make_tmpdir();
    write_file(dir, "big.json", big);
    const char *check[] = {"tessera", "check", "big.json", NULL};
    proc_result r = run_cmd(dir, check, 60);
    const char *line = strstr(r.out, " tasks");
    while (line && line > r.out && line[-1] != '\n') line--;
    long long tasks = line ? strtoll(line, NULL, 10) : 0;
    proc_result_free(&r);
    cr_assert(tasks > 2048);
    submit_bg(dir, addr);
    long long last = -1;
    int seen = 0, saw_ready = 0;
    double deadline = now_s() + 150;
    while (!submit_exited() && now_s() < deadline) {
        const json_t *jl = json_object_get(top_json(addr), "jlist");
        if (json_array_size(jl) == 1) {
            const json_t *j = json_array_get(jl, 0);
            cr_assert_eq(check_job_counts(j), tasks);
            cr_assert(inum(j, "done") >= last, "done went back from %lld", last);
            if (inum(j, "done") < tasks) seen++;
            /* Thousands of tasks, windows of a few per thread: the rest wait in backlogs. */
            if (inum(j, "ready") > 0) saw_ready++;
            last = inum(j, "done");
        }
        sleep_ms(200);
    }
    cr_assert(seen > 0, "never saw the job running");
    cr_assert(saw_ready > 0, "never saw a ready task in %d snapshots of the running job", seen);
    cr_assert_eq(wait_submit(100), 0, "the job failed");
    remove_tmpdir(dir);
}

Test(top, errors_name_the_address, .timeout = 60) {
    /* A port nothing listens on: a scheduler just stopped. */
    char addr[128];
    pid_t s = start_scheduler(addr, sizeof addr);
    cr_assert_eq(stop_proc(s), 0);
    const char *once[] = {"tessera", "top", "--once", "--scheduler", addr, NULL};
    proc_result r = run_cmd(NULL, once, 30);
    cr_assert_eq(r.status, 1, "exit %d", r.status);
    cr_assert(strstr(r.err, addr), "the message does not name %s:\n%s", addr, r.err);
    proc_result_free(&r);
    const char *full[] = {"tessera", "top", "--scheduler", addr, NULL};
    r = run_cmd(NULL, full, 30);
    cr_assert_eq(r.status, 2, "the dashboard off a terminal: exit %d", r.status);
    cr_assert(strstr(r.err, "--once"), "%s", r.err);
    proc_result_free(&r);
    const char *none[] = {"tessera", "top", "--once", NULL};
    r = run_cmd(NULL, none, 30);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "TESSERA_SCHEDULER"), "%s", r.err);
    proc_result_free(&r);
    const char *bad[] = {"tessera", "top", "--once", "--interval", "0", "--scheduler", addr, NULL};
    r = run_cmd(NULL, bad, 30);
    cr_assert_eq(r.status, 2);
    proc_result_free(&r);
}

/* ---- the dashboard in a real terminal ---- */

static int find_tmux(void) {
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/bin:/bin");
    int found = 0;
    for (char *save, *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(tmux_path, sizeof tmux_path, "%s/tmux", d);
        found = access(tmux_path, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* Runs tmux on the test's own server (never the user's) with the arguments in args (at most
 * 12, NULL-terminated); returns its stdout (malloc'd). */
static char *tmux_argv(const char *const *args) {
    const char *argv[16] = {tmux_path, "-S", tmux_sock};
    int n = 3;
    while (*args && n < 15) argv[n++] = *args++;
    argv[n] = NULL;
    proc_result r = run_cmd(NULL, argv, 20);
    cr_assert_eq(r.status, 0, "tmux %s failed (%d): %s", argv[3], r.status, r.err);
    free(r.err);
    return r.out;
}
#define TMUX(...) free(tmux_argv((const char *[]){__VA_ARGS__, NULL}))

/* Starts the test's tmux server with a session running cmd in a cols x rows window. Not through
 * run_cmd: the server outlives the command that starts it, and must not hold the test's pipes
 * (run_cmd would wait for their end forever), so the child keeps no descriptor but /dev/null. */
static void tmux_start(const char *session, const char *cols, const char *rows, const char *cmd) {
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);
        for (int k = 0; k < 3; k++) dup2(fd, k);
        for (int k = 3; k < 1024; k++) close(k);
        execl(tmux_path, "tmux", "-f", "/dev/null", "-S", tmux_sock, "new-session", "-d", "-s",
              session, "-x", cols, "-y", rows, cmd, (char *)NULL);
        _exit(127);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tmux new-session failed");
}

static char *capture(const char *target) {
    return tmux_argv((const char *[]){"capture-pane", "-p", "-t", target, NULL});
}

/* Captures the pane until it contains every one of the strings (NULL-terminated list). */
static char *wait_screen(const char *target, const char *const *want, int timeout_s) {
    double deadline = now_s() + timeout_s;
    for (;;) {
        char *s = capture(target);
        int ok = 1;
        for (int k = 0; want[k] && ok; k++) ok = strstr(s, want[k]) != NULL;
        if (ok) return s;
        cr_assert(now_s() < deadline, "the screen never showed \"%s\":\n%s", want[0], s);
        free(s);
        sleep_ms(100);
    }
}

static char *pane_flag(const char *target, const char *fmt) {
    char *s = tmux_argv((const char *[]){"display-message", "-p", "-t", target, fmt, NULL});
    s[strcspn(s, "\n")] = 0;
    return s;
}

/* The matmul bar's done count on screen ("matmul [###...]  312/2048"), or -1. */
static long long matmul_done(const char *screen, long long *total) {
    const char *m = strstr(screen, "matmul [");
    const char *close = m ? strchr(m, ']') : NULL;
    long long d = -1;
    if (!close || sscanf(close + 1, " %lld/%lld", &d, total) != 2) return -1;
    return d;
}

static int read_status(const char *dir, const char *name, int timeout_s) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    double deadline = now_s() + timeout_s;
    for (;;) {
        FILE *f = fopen(path, "r");
        int st = -1;
        if (f) {
            if (fscanf(f, "%d", &st) != 1) st = -1;
            fclose(f);
        }
        if (st >= 0) return st;
        cr_assert(now_s() < deadline, "%s never appeared", name);
        sleep_ms(100);
    }
}

/* The terminal is given back: the alternate screen left, the cursor shown, keypad mode off,
 * and the pane's shell carried on. */
static void check_restored(const char *target) {
    char *s = pane_flag(target, "#{alternate_on} #{cursor_flag} #{keypad_cursor_flag}");
    cr_assert_str_eq(s, "0 1 0", "alternate screen, cursor, keypad after top exited: %s", s);
    free(s);
    const char *after[] = {"TOP-EXITED", NULL};
    free(wait_screen(target, after, 10));
}

Test(top, dashboard_in_tmux, .timeout = 300, .fini = cleanup) {
    if (!find_tmux()) cr_skip_test("tmux is not installed");
    char addr[128];
    start_cluster(addr, sizeof addr);
    char *dir = make_tmpdir();
    write_file(dir, "big.json", big);
    snprintf(tmux_sock, sizeof tmux_sock, "%s/tmux.sock", dir);
    /* The pane runs top, then records its status and says so, then waits (the pane stays). The
     * shell survives the ^C it shares with top (`trap :`, which top does not inherit). */
    char script[2048];
    snprintf(script, sizeof script,
             "trap : INT\n\"%s\" top --scheduler %s\necho $? > \"%s/$1\"\necho TOP-EXITED\n"
             "exec sleep 120\n",
             tessera_exe(), addr, dir);
    write_file(dir, "pane.sh", script);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "sh %s/pane.sh status", dir);
    tmux_start("top", "100", "30", cmd);

    const char *idle[] = {"WORKER", " w1 ", " w2 ", "2 workers", "no job running", NULL};
    free(wait_screen("top", idle, 30));
    submit_bg(dir, addr);
    const char *running[] = {"matmul [", "job ", NULL};
    char *first = wait_screen("top", running, 60);
    long long total = 0, d1 = matmul_done(first, &total);
    cr_assert(d1 >= 0 && total == 2048, "no matmul bar with a count of 2048:\n%s", first);
    cr_assert(strstr(first, " w1 ") && strstr(first, " w2 ") && strstr(first, "tasks/s"),
              "worker rows or totals missing:\n%s", first);
    /* The numbers move as tasks finish. */
    char *second = NULL;
    long long d2 = d1;
    double deadline = now_s() + 60;
    while (d2 <= d1 && now_s() < deadline) {
        sleep_ms(250);
        free(second);
        second = capture("top");
        long long t2 = 0;
        long long d = matmul_done(second, &t2);
        if (d >= 0)
            d2 = d;
        else if (strstr(second, "no job running"))
            break; /* finished between two captures */
    }
    cr_assert(d2 > d1 || strstr(second, "no job running"), "matmul stayed at %lld:\n%s", d1,
              second);
    cr_assert(strcmp(first, second) != 0, "the screen did not change");
    free(first);
    free(second);

    /* 80x24: redrawn to the new width (the title ends 9 columns from the right edge: at 100
     * columns "q: quit" started at 91, now at 71), still with the workers and the jobs. */
    TMUX("resize-window", "-t", "top", "-x", "80", "-y", "24");
    const char *small[] = {"q: quit", " w1 ", " w2 ", "JOBS", NULL};
    double until = now_s() + 20;
    for (;;) {
        char *s = wait_screen("top", small, 20);
        const char *q = strstr(s, "q: quit");
        const char *nl = strchr(s, '\n');
        int at = nl && q < nl ? (int)(q - s) : -1;
        free(s);
        if (at == 71) break;
        cr_assert(now_s() < until, "not redrawn for 80 columns (\"q: quit\" at column %d)", at);
        sleep_ms(100);
    }

    TMUX("send-keys", "-t", "top", "q");
    cr_assert_eq(read_status(dir, "status", 20), 0, "q: exit status");
    check_restored("top");

    /* ^C: exit status 130, the terminal given back as well. */
    snprintf(cmd, sizeof cmd, "sh %s/pane.sh status2", dir);
    TMUX("respawn-pane", "-k", "-t", "top", cmd);
    const char *again[] = {"WORKER", " w1 ", NULL};
    free(wait_screen("top", again, 30));
    TMUX("send-keys", "-t", "top", "C-c");
    cr_assert_eq(read_status(dir, "status2", 20), 130, "^C: exit status");
    check_restored("top");

    cr_assert_eq(wait_submit(200), 0, "the job failed");
    stop_tmux();
    remove_tmpdir(dir);
}
