/* `--stats FILE` of `tessera run` and `tessera submit` with real processes: the file is valid
 * JSON describing the whole computation (its task count is the one `tessera check` prints, the
 * listed workers' tasks add up to it, the counters are consistent with each other), it describes
 * each submission on its own, and it follows the output conventions (atomic, exit 1 when it
 * cannot be written, nothing written for an invalid program). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* Several outputs (a .npy and two printed ones) from one submission; the k-chains over B's
 * rechunked rows move chunks between workers. */
static const char *prog =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"A\": {\"op\": \"random\", \"shape\": [120, 90], \"chunks\": [32, 20], \"seed\": 1},\n"
    " \"B\": {\"op\": \"random\", \"shape\": [90, 70], \"chunks\": [15, 30], \"seed\": 2},\n"
    " \"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]},\n"
    " \"t\": {\"op\": \"sum\", \"args\": [\"C\"], \"axis\": null},\n"
    " \"m\": {\"op\": \"max\", \"args\": [\"A\"], \"axis\": null}\n"
    "}, \"outputs\": {\"C\": \"c.npy\", \"t\": \"-\", \"m\": \"-\"}}\n";

/* The task count `tessera check` prints on its last line ("N tasks"). */
static long long check_tasks(const char *dir, const char *file) {
    const char *argv[] = {"tessera", "check", file, NULL};
    proc_result r = run_cmd(dir, argv, 60);
    cr_assert_eq(r.status, 0, "check exit %d:\n%s", r.status, r.err);
    const char *line = strstr(r.out, " tasks");
    cr_assert(line, "no task count in:\n%s", r.out);
    while (line > r.out && line[-1] != '\n') line--;
    long long n = strtoll(line, NULL, 10);
    proc_result_free(&r);
    cr_assert(n > 0);
    return n;
}

/* The file last loaded, owned here so that a failed assertion (which leaves the test at once)
 * does not leak it: the next load or the test's fini frees it. */
static json_t *loaded;

static void free_loaded(void) {
    json_decref(loaded);
    loaded = NULL;
}

static json_t *load_stats(const char *dir, const char *name) {
    free_loaded();
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    loaded = j;
    cr_assert(j, "%s is not valid JSON: %s (line %d)", path, err.text, err.line);
    cr_assert(json_is_object(j), "%s is not a JSON object", path);
    return j;
}

static double num(const json_t *o, const char *key, const char *what) {
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_number(v), "%s has no numeric \"%s\"", what, key);
    return json_number_value(v);
}

/* What the file must say whether or not the scheduler reported statistics. */
static void check_basics(const json_t *j, long long tasks) {
    const json_t *t = json_object_get(j, "tasks");
    cr_assert(json_is_integer(t), "no integer \"tasks\"");
    cr_assert_eq(json_integer_value(t), tasks, "stats say %lld tasks, tessera check says %lld",
                 (long long)json_integer_value(t), tasks);
    double s = num(j, "seconds", "the stats");
    cr_assert(s > 0 && s < 120, "seconds = %g", s);
}

/* The scheduler's part: the workers that ran the job, and per worker the counters of
 * PROTOCOL.md, consistent with each other and with the client's own clock. fresh: the workers
 * ran nothing before this job (their counters are cumulative since they started). */
static void check_workers(const json_t *j, long long tasks, size_t nworkers, int fresh) {
    const json_t *ws = json_object_get(j, "workers");
    cr_assert(json_is_array(ws), "no \"workers\" list in the stats (does the scheduler send "
                                 "`stats` in `finished`?)");
    cr_assert_eq(json_array_size(ws), nworkers, "%zu workers listed, want %zu", json_array_size(ws),
                 nworkers);
    double seconds = num(j, "seconds", "the stats");
    long long sum = 0;
    for (size_t k = 0; k < nworkers; k++) {
        const json_t *w = json_array_get(ws, k);
        char what[64];
        snprintf(what, sizeof what, "workers[%zu]", k);
        cr_assert(json_is_object(w), "%s is not an object", what);
        cr_assert(json_is_string(json_object_get(w, "name")), "%s has no name", what);
        cr_assert(json_is_string(json_object_get(w, "addr")), "%s has no addr", what);
        const json_t *wt = json_object_get(w, "tasks");
        cr_assert(json_is_integer(wt) && json_integer_value(wt) >= 0, "%s: bad tasks", what);
        sum += json_integer_value(wt);
    }
    /* Cheap sources made inline by their consumers are tasks of the job that no worker ran as
     * such (PROTOCOL.md); everything else ran exactly once. */
    const json_t *inl = json_object_get(j, "sources_inline");
    cr_assert(json_is_integer(inl), "no integer \"sources_inline\"");
    long long ninl = json_integer_value(inl);
    cr_assert(ninl >= 0 && ninl < tasks, "sources_inline = %lld of %lld tasks", ninl, tasks);
    cr_assert_eq(sum + ninl, tasks,
                 "the workers' tasks add up to %lld and %lld sources ran inline, the job has "
                 "%lld tasks",
                 sum, ninl, tasks);
    for (size_t k = 0; k < nworkers; k++) {
        const json_t *w = json_array_get(ws, k);
        char what[64];
        snprintf(what, sizeof what, "workers[%zu]", k);
        double rss = num(w, "rss", what), peak = num(w, "rss_peak", what);
        cr_assert(rss > 0 && peak >= rss, "%s: rss %g, rss_peak %g", what, rss, peak);
        /* Every worker of these tests runs one executor thread, but "w2" of
         * submit_describes_each_job runs two. */
        const char *name = json_string_value(json_object_get(w, "name"));
        double threads = num(w, "threads", what), want = strcmp(name, "w2") == 0 ? 2 : 1;
        cr_assert_eq(threads, want, "%s (%s): threads %g, want %g", what, name, threads, want);
        double busy = num(w, "busy_s", what);
        /* The cluster ran nothing else: its threads' busy time fits inside the client's
         * submit-to-finished interval. */
        cr_assert(busy >= 0 && (!fresh || busy <= threads * seconds + 0.01),
                  "%s: busy_s %g > %g threads x seconds %g", what, busy, threads, seconds);
        cr_assert(num(w, "chunk_peak", what) > 0, "%s: chunk_peak 0", what);
        cr_assert(num(w, "in_bytes", what) >= 0 && num(w, "in_s", what) >= 0, "%s", what);
        cr_assert(num(w, "out_bytes", what) >= 0, "%s", what);
    }
    cr_assert(num(j, "moved_bytes", "the stats") >= 0);
    const json_t *sc = json_object_get(j, "scheduler");
    cr_assert(json_is_object(sc), "no \"scheduler\" object");
    double base = num(sc, "rss_base", "scheduler"), peak = num(sc, "rss_peak", "scheduler");
    cr_assert(base > 0 && peak >= base, "scheduler rss_base %g, rss_peak %g", base, peak);
}

Test(stats, run_writes_file_with_tasks, .timeout = 120, .fini = free_loaded) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", prog);
    long long tasks = check_tasks(dir, "p.json");
    const char *argv[] = {"tessera", "run",     "--workers", "2", "--no-progress",
                          "--stats", "st.json", "p.json",    NULL};
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    cr_assert(strstr(r.out, "t: ") && strstr(r.out, "m: "), "outputs missing:\n%s", r.out);
    proc_result_free(&r);
    json_t *j = load_stats(dir, "st.json");
    check_basics(j, tasks);
    /* st.json, c.npy, p.json: no temporary file left behind. */
    cr_assert_eq(dir_entries(dir), 3);
    remove_tmpdir(dir);
}

Test(stats, run_lists_both_workers, .timeout = 120, .fini = free_loaded) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", prog);
    long long tasks = check_tasks(dir, "p.json");
    const char *argv[] = {"tessera", "run", "-w", "2", "--stats", "st.json", "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    proc_result_free(&r);
    json_t *j = load_stats(dir, "st.json");
    check_workers(j, tasks, 2, 1);
    remove_tmpdir(dir);
}

/* The cluster of submit_describes_each_job, stopped by fini even when an assertion ends the
 * test early (a scheduler left running would keep the test's output pipes open). */
static pid_t cluster[3];

static void stop_cluster(void) {
    for (int k = 2; k >= 0; k--)
        if (cluster[k] > 0) stop_proc(cluster[k]);
    free_loaded();
}

/* On a long-lived cluster each submission's file describes that submission only: the second
 * job's workers' tasks add up to its own count, not to the total since the workers started. */
Test(stats, submit_describes_each_job, .timeout = 120, .fini = stop_cluster) {
    char addr[128];
    cluster[0] = start_scheduler(addr, sizeof addr);
    cluster[1] = start_worker(addr, 1, "w1", NULL);
    cluster[2] = start_worker(addr, 2, "w2", NULL);
    char *dir = make_tmpdir();
    write_file(dir, "p.json", prog);
    write_file(dir, "q.json",
               "{\"tessera\": 1, \"arrays\": {\"x\": {\"op\": \"ones\", \"shape\": [1000], "
               "\"chunks\": 10}, \"s\": {\"op\": \"sum\", \"args\": [\"x\"]}}, "
               "\"outputs\": {\"s\": \"-\"}}");
    const char *files[] = {"p.json", "q.json"};
    for (int round = 0; round < 2; round++) {
        long long tasks = check_tasks(dir, files[round]);
        const char *argv[] = {"tessera", "submit",  "--scheduler", addr,
                              "--stats", "st.json", files[round],  NULL};
        proc_result r = run_cmd(dir, argv, 100);
        cr_assert_eq(r.status, 0, "submit %s exit %d:\n%s", files[round], r.status, r.err);
        proc_result_free(&r);
        json_t *j = load_stats(dir, "st.json");
        check_basics(j, tasks);
        check_workers(j, tasks, 2, round == 0);
    }
    for (int k = 2; k >= 0; k--) {
        cr_assert_eq(stop_proc(cluster[k]), 0, "cluster process %d did not stop cleanly", k);
        cluster[k] = 0;
    }
    remove_tmpdir(dir);
}

/* Same conventions as outputs: a stats file that cannot be written is exit 1 with a message
 * naming it; an invalid program is exit 2 before anything runs, and writes no stats. */
Test(stats, errors, .timeout = 120) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", prog);
    const char *argv[] = {"tessera", "run", "-w", "2", "--stats", "no/such/dir/st.json",
                          "p.json",  NULL};
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "no/such/dir/st.json"), "message does not name the file:\n%s", r.err);
    proc_result_free(&r);

    write_file(dir, "bad.json",
               "{\"tessera\": 1, \"arrays\": {\"C\": {\"op\": \"nope\"}}, \"outputs\": {}}");
    const char *argv2[] = {"tessera", "run", "--stats", "st.json", "bad.json", NULL};
    r = run_cmd(dir, argv2, 60);
    cr_assert_eq(r.status, 2, "exit %d:\n%s", r.status, r.err);
    proc_result_free(&r);
    char path[512];
    snprintf(path, sizeof path, "%s/st.json", dir);
    cr_assert(!file_exists(path), "stats written for an invalid program");

    const char *argv3[] = {"tessera", "run", "--stats", "", "p.json", NULL};
    r = run_cmd(dir, argv3, 60);
    cr_assert_eq(r.status, 2, "empty --stats: exit %d:\n%s", r.status, r.err);
    proc_result_free(&r);
    /* p.json, bad.json, c.npy from the first run: nothing else (no temporary files). */
    cr_assert_eq(dir_entries(dir), 3, "%d entries", dir_entries(dir));
    remove_tmpdir(dir);
}
