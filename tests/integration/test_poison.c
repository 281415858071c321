/* Poison tasks and zero-length reductions, with real processes.
 *
 * - Reductions over zero-length axes give NumPy's answers through `tessera run` (sum 0, mean NaN),
 *   compared with numpy itself (/usr/bin/python3).
 * - A task that kills every worker that runs it (the workers' test-only fault injection,
 *   $TESSERA_FAULT_KILL_KERNEL, docs/cli/worker.md) fails its job after --allowed-failures worker
 *   deaths, with a message naming the array and the chunk; the scheduler and the workers that
 *   never ran it stay up and run the next job. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define PY "/usr/bin/python3"

/* Arrays whose reductions meet an empty axis, every reduction that has an identity or a NaN
 * answer, over several axes, chunk grids and both dtypes. */
static const char zero_prog[] =
    "{\"tessera\": 1, \"arrays\": {"
    "\"E\": {\"op\": \"zeros\", \"shape\": [0], \"chunks\": 4},"
    "\"F\": {\"op\": \"ones\", \"shape\": [3, 0], \"chunks\": 2},"
    "\"G\": {\"op\": \"ones\", \"shape\": [0, 5], \"chunks\": [3, 2], \"dtype\": \"float32\"},"
    "\"GT\": {\"op\": \"transpose\", \"args\": [\"G\"]},"
    "\"s0\": {\"op\": \"sum\", \"args\": [\"E\"], \"axis\": null},"
    "\"m0\": {\"op\": \"mean\", \"args\": [\"E\"], \"axis\": null},"
    "\"s1\": {\"op\": \"sum\", \"args\": [\"F\"], \"axis\": 1},"
    "\"m1\": {\"op\": \"mean\", \"args\": [\"F\"], \"axis\": -1},"
    "\"s2\": {\"op\": \"sum\", \"args\": [\"F\"], \"axis\": [0, 1]},"
    "\"m2\": {\"op\": \"mean\", \"args\": [\"F\"], \"axis\": null},"
    "\"s3\": {\"op\": \"sum\", \"args\": [\"G\"], \"axis\": 0},"
    "\"m3\": {\"op\": \"mean\", \"args\": [\"G\"], \"axis\": [0]},"
    "\"m4\": {\"op\": \"mean\", \"args\": [\"GT\"], \"axis\": 1},"
    "\"x5\": {\"op\": \"max\", \"args\": [\"F\"], \"axis\": 0},"
    "\"n5\": {\"op\": \"min\", \"args\": [\"G\"], \"axis\": 1}"
    "}, \"outputs\": {\"s0\": \"-\", \"m0\": \"-\", \"s1\": \"-\", \"m1\": \"-\", \"s2\": \"-\", "
    "\"m2\": \"-\", \"s3\": \"-\", \"m3\": \"-\", \"m4\": \"-\", \"x5\": \"-\", \"n5\": \"-\"}}";

/* The same with numpy, printed as SPEC §2 prints outputs. max/min over an empty axis are errors
 * in NumPy, but these reduce a non-empty axis of an empty array: empty results. */
static const char zero_ref[] =
    "import warnings, numpy as np\n"
    "warnings.simplefilter('ignore')\n"
    "E = np.zeros((0,)); F = np.ones((3, 0)); G = np.ones((0, 5), np.float32)\n"
    "out = [('s0', E.sum()), ('m0', E.mean()), ('s1', F.sum(axis=1)), ('m1', F.mean(axis=-1)),\n"
    "       ('s2', F.sum(axis=(0, 1))), ('m2', F.mean()), ('s3', G.sum(axis=0)),\n"
    "       ('m3', G.mean(axis=(0,))), ('m4', G.T.mean(axis=1)), ('x5', F.max(axis=0)),\n"
    "       ('n5', G.min(axis=1))]\n"
    "for name, v in out:\n"
    "    v = np.asarray(v).ravel()\n"
    "    print((name + ': ' + ' '.join('%.17g' % x for x in v)).rstrip())\n";

/* Lines with trailing blanks removed (an empty 1-d output is "NAME:" or "NAME: "). */
static char *normalise(const char *s) {
    char *o = malloc(strlen(s) + 1), *w = o;
    cr_assert(o);
    for (const char *p = s; *p; p++) {
        if (*p == '\n')
            while (w > o && w[-1] == ' ') w--;
        *w++ = *p;
    }
    while (w > o && (w[-1] == ' ' || w[-1] == '\n')) w--;
    *w = '\0';
    return o;
}

Test(poison, zero_length_reductions_match_numpy, .timeout = 120) {
    const char *pa[] = {PY, "-c", zero_ref, NULL};
    proc_result ref = run_cmd(NULL, pa, 60);
    if (ref.status != 0 && strstr(ref.err, "No module named"))
        cr_skip_test("numpy is not installed for %s", PY);
    cr_assert_eq(ref.status, 0, "numpy reference: %s", ref.err);
    char *dir = make_tmpdir();
    write_file(dir, "zero.json", zero_prog);
    const char *argv[] = {"tessera", "run", "--workers", "2", "zero.json", NULL};
    proc_result r = run_cmd(dir, argv, 60);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    char *got = normalise(r.out), *want = normalise(ref.out);
    cr_assert_str_eq(got, want, "tessera:\n%s\nnumpy:\n%s", got, want);
    /* The checks at check time: max of an empty axis has no identity, as in NumPy. */
    write_file(dir, "max.json",
               "{\"tessera\": 1, \"arrays\": {\"F\": {\"op\": \"ones\", \"shape\": [3, 0]}, "
               "\"x\": {\"op\": \"max\", \"args\": [\"F\"], \"axis\": 1}}, "
               "\"outputs\": {\"x\": \"-\"}}");
    const char *cargv[] = {"tessera", "check", "max.json", NULL};
    proc_result c = run_cmd(dir, cargv, 30);
    cr_assert_eq(c.status, 2, "exit %d:\n%s", c.status, c.err);
    cr_assert(strstr(c.err, "max.json") && strstr(c.err, "\"x\"") && strstr(c.err, "identity"),
              "%s", c.err);
    free(got);
    free(want);
    proc_result_free(&c);
    proc_result_free(&r);
    proc_result_free(&ref);
    remove_tmpdir(dir);
}

/* Waits up to timeout_s for pid to end; its status, or -1 while it runs. */
static int wait_exit(pid_t pid, double timeout_s) {
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return st;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) * 1e-9 >
            timeout_s)
            return -1;
        usleep(20000);
    }
}

/* A sum of one chunk: one REDUCE task, the one the fault injection kills with (run with
 * --no-fuse: fused, the ones and the sum would be one FUSED task). */
static const char poison_prog[] =
    "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"ones\", \"shape\": [6, 8], \"chunks\": [6, "
    "8]},"
    "\"total\": {\"op\": \"sum\", \"args\": [\"A\"], \"axis\": 1}}, \"outputs\": {\"total\": "
    "\"-\"}}";

static void poison_run(const char *allowed, int deaths) {
    char addr[64];
    const char *sx[] = {"--allowed-failures", allowed, NULL};
    pid_t sched = start_scheduler_with(addr, sizeof addr, allowed ? sx : NULL);
    /* deaths + 1 workers that die running a reduce task: the last one never gets it. */
    setenv("TESSERA_FAULT_KILL_KERNEL", "reduce", 1);
    pid_t w[8];
    int nbad = deaths + 1;
    char name[16];
    for (int i = 0; i < nbad; i++) {
        snprintf(name, sizeof name, "bad%d", i);
        w[i] = start_worker(addr, 1, name, NULL);
    }
    unsetenv("TESSERA_FAULT_KILL_KERNEL");
    char *dir = make_tmpdir();
    write_file(dir, "p.json", poison_prog);
    const char *argv[] = {"tessera", "submit", "--no-fuse", "--scheduler", addr, "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 60);
    cr_assert_eq(r.status, 1, "exit %d, want 1:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "array \"total\" (sum)"), "no array in:\n%s", r.err);
    cr_assert(strstr(r.err, "chunk (0,)"), "no chunk in:\n%s", r.err);
    char want[96];
    snprintf(want, sizeof want, "died %d times", deaths);
    cr_assert(strstr(r.err, want), "want \"%s\" in:\n%s", want, r.err);
    snprintf(want, sizeof want, "--allowed-failures %d", deaths);
    cr_assert(strstr(r.err, want), "want \"%s\" in:\n%s", want, r.err);
    /* The scheduler is alive, and so is the worker that never ran the task: they run the next
     * job (it has no reduce). */
    cr_assert_eq(kill(sched, 0), 0, "the scheduler died");
    write_file(dir, "q.json",
               "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"arange\", \"start\": 0, "
               "\"stop\": 6, \"chunks\": 2}, \"B\": {\"op\": \"mul\", \"args\": [\"A\", 2]}}, "
               "\"outputs\": {\"B\": \"-\"}}");
    const char *argv2[] = {"tessera", "submit", "--scheduler", addr, "q.json", NULL};
    proc_result r2 = run_cmd(dir, argv2, 60);
    cr_assert_eq(r2.status, 0, "next job: exit %d\n%s", r2.status, r2.err);
    cr_assert_str_eq(r2.out, "B: 0 2 4 6 8 10\n");
    /* Exactly `deaths` workers died, of SIGKILL. */
    int killed = 0;
    for (int i = 0; i < nbad; i++) {
        int st = wait_exit(w[i], 0.2);
        if (st != -1) {
            cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "worker %d: status %d", i, st);
            killed++;
        } else {
            stop_proc(w[i]);
        }
    }
    cr_assert_eq(killed, deaths, "%d workers died, want %d", killed, deaths);
    cr_assert_eq(stop_proc(sched), 0);
    proc_result_free(&r2);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

Test(poison, default_allowed_failures_is_three, .timeout = 120) {
    poison_run(NULL, 3);
}

Test(poison, allowed_failures_option, .timeout = 120) {
    poison_run("1", 1);
}

/* A task whose inputs and output cannot fit in any worker's memory limit fails its job at
 * submission, naming the array, the chunk and the sizes, instead of spilling or being killed
 * without end; a job whose tasks fit runs on the same cluster. */
Test(poison, task_larger_than_every_memory_limit, .timeout = 120) {
    char addr[64];
    pid_t sched = start_scheduler(addr, sizeof addr);
    const char *wx[] = {"--memory-limit", "8MiB", NULL};
    pid_t w = start_worker_with(addr, 1, "small", wx);
    char *dir = make_tmpdir();
    /* C's chunks are 512 x 1024 float64, 4 MiB: each add needs 12 MiB (with --no-fuse: fused,
     * the add would make A's and B's values in place and need only its output). */
    write_file(dir, "big.json",
               "{\"tessera\": 1, \"arrays\": {"
               "\"A\": {\"op\": \"random\", \"shape\": [1024, 1024], \"chunks\": [512, 1024]},"
               "\"B\": {\"op\": \"random\", \"shape\": [1024, 1024], \"chunks\": [512, 1024], "
               "\"seed\": 7},"
               "\"C\": {\"op\": \"add\", \"args\": [\"A\", \"B\"]}}, \"outputs\": {\"C\": "
               "\"c.npy\"}}");
    const char *argv[] = {"tessera", "submit", "--no-fuse", "--scheduler", addr, "big.json", NULL};
    proc_result r = run_cmd(dir, argv, 60);
    cr_assert_eq(r.status, 1, "exit %d, want 1:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "array \"C\" (add): chunk (0, 0)"), "%s", r.err);
    cr_assert(strstr(r.err, "needs 12.0 MiB") && strstr(r.err, "inputs 8.0 MiB") &&
                  strstr(r.err, "output 4.0 MiB") && strstr(r.err, "largest: 8.0 MiB"),
              "%s", r.err);
    cr_assert_eq(dir_entries(dir), 1, "an output was written");
    /* 128 x 1024 chunks (1 MiB): 3 MiB a task, fine. */
    write_file(dir, "ok.json",
               "{\"tessera\": 1, \"arrays\": {"
               "\"A\": {\"op\": \"ones\", \"shape\": [1024, 1024], \"chunks\": [128, 1024]},"
               "\"C\": {\"op\": \"add\", \"args\": [\"A\", \"A\"]},"
               "\"s\": {\"op\": \"sum\", \"args\": [\"C\"], \"axis\": null}}, "
               "\"outputs\": {\"s\": \"-\"}}");
    const char *argv2[] = {"tessera", "submit", "--scheduler", addr, "ok.json", NULL};
    proc_result r2 = run_cmd(dir, argv2, 60);
    cr_assert_eq(r2.status, 0, "exit %d:\n%s", r2.status, r2.err);
    cr_assert_str_eq(r2.out, "s: 2097152\n");
    cr_assert_eq(stop_proc(w), 0);
    cr_assert_eq(stop_proc(sched), 0);
    proc_result_free(&r2);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

/* `tessera run` with fewer workers than --allowed-failures: nobody else joins a local cluster,
 * so a task that killed each of its workers fails the run (it used to wait for ever). */
Test(poison, local_cluster_smaller_than_allowed_failures, .timeout = 120) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", poison_prog);
    setenv("TESSERA_FAULT_KILL_KERNEL", "reduce", 1);
    const char *argv[] = {"tessera", "run", "--no-fuse", "--workers", "2", "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 60);
    unsetenv("TESSERA_FAULT_KILL_KERNEL");
    cr_assert_eq(r.status, 1, "exit %d, want 1:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "array \"total\" (sum): chunk (0,)"), "%s", r.err);
    cr_assert(strstr(r.err, "died 2 times") && strstr(r.err, "--allowed-failures 2"), "%s", r.err);
    proc_result_free(&r);
    /* Two chunks, two killing tasks: each worker may die of another task, so that neither task
     * reaches the count; the run then fails because every worker is gone. Either way it ends. */
    write_file(dir, "q.json",
               "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"ones\", \"shape\": [6, 8], "
               "\"chunks\": [3, 8]}, \"total\": {\"op\": \"sum\", \"args\": [\"A\"], "
               "\"axis\": 1}}, \"outputs\": {\"total\": \"-\"}}");
    setenv("TESSERA_FAULT_KILL_KERNEL", "reduce", 1);
    const char *argv2[] = {"tessera", "run", "--no-fuse", "--workers", "2", "q.json", NULL};
    r = run_cmd(dir, argv2, 60);
    unsetenv("TESSERA_FAULT_KILL_KERNEL");
    cr_assert_eq(r.status, 1, "exit %d, want 1:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "died 2 times") || strstr(r.err, "every worker of the local cluster"),
              "%s", r.err);
    proc_result_free(&r);
    remove_tmpdir(dir);
}
