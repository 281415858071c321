/* Streamed outputs with real processes: outputs several times larger than what a worker may
 * hold are written while they are computed (the workers' chunk peak stays far below them, and
 * the files hold SPEC §2's values, checked against the harness's own formula and .npy reader);
 * an interrupted or failed run leaves neither a temporary file nor an output behind; tsr_store
 * and tsr_compute with store targets through the C API, and their argument checks. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tessera/tessera.h"

/* A (3072 x 2048 float64, 48 MiB) and B = float32(A) (24 MiB), in 192 chunks of 128 x 256
 * each: 72 MiB of output, 6 times what a worker is allowed to hold (12 MiB). */
static const char *big_prog =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"A\": {\"op\": \"random\", \"shape\": [3072, 2048], \"chunks\": [128, 256], \"seed\": 5},\n"
    " \"B\": {\"op\": \"astype\", \"args\": [\"A\"], \"dtype\": \"float32\"}\n"
    "}, \"outputs\": {\"A\": \"a.npy\", \"B\": \"b.npy\"}}\n";

#define ROWS 3072
#define COLS 2048

/* Cluster processes of the test running, stopped by its fini when an assertion ends it early
 * (a process left running would keep the test's output open). */
static pid_t procs[8];
static int nprocs;

static pid_t track(pid_t pid) {
    cr_assert_lt(nprocs, 8);
    procs[nprocs++] = pid;
    return pid;
}

/* The process has been reaped by the test itself. */
static void untrack(pid_t pid) {
    for (int i = 0; i < nprocs; i++)
        if (procs[i] == pid) procs[i] = 0;
}

/* The stats file last loaded, freed by the fini too. */
static json_t *stats;

static void stop_all(void) {
    while (nprocs > 0) {
        pid_t p = procs[--nprocs];
        if (p > 0) stop_proc(p);
    }
    json_decref(stats);
    stats = NULL;
}

TestSuite(stream, .fini = stop_all);

static void check_big_outputs(const char *dir) {
    char path[512];
    npy_data a, b;
    snprintf(path, sizeof path, "%s/a.npy", dir);
    cr_assert_eq(read_npy(path, &a), 0, "cannot read %s", path);
    snprintf(path, sizeof path, "%s/b.npy", dir);
    cr_assert_eq(read_npy(path, &b), 0, "cannot read %s", path);
    cr_assert(!a.f32 && a.ndim == 2 && a.shape[0] == ROWS && a.shape[1] == COLS);
    cr_assert(b.f32 && b.ndim == 2 && b.shape[0] == ROWS && b.shape[1] == COLS);
    for (int64_t i = 0; i < (int64_t)ROWS * COLS; i++) {
        double r = ref_random_f64(5, (uint64_t)i);
        if (a.v[i] != r || b.v[i] != (double)(float)r)
            cr_assert_fail("element %lld: a = %.17g b = %.9g, expected %.17g and %.9g",
                           (long long)i, a.v[i], b.v[i], r, (double)(float)r);
    }
    npy_free(&a);
    npy_free(&b);
}

/* Is any entry of dir a temporary (".tmp-" in its name)? */
static int has_tmp(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert(d);
    int found = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp-")) found = 1;
    closedir(d);
    return found;
}

Test(stream, outputs_larger_than_the_workers_memory, .timeout = 300) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", big_prog);
    char addr[64];
    track(start_scheduler(addr, sizeof addr));
    const char *lim[] = {"--memory-limit", "12582912", NULL};
    track(start_worker_with(addr, 1, "w0", lim));
    track(start_worker_with(addr, 1, "w1", lim));
    const char *argv[] = {"tessera", "submit",  "--scheduler", addr, "--no-progress",
                          "--stats", "st.json", "p.json",      NULL};
    proc_result r = run_cmd(dir, argv, 240);
    cr_assert_eq(r.status, 0, "submit exit %d:\n%s", r.status, r.err);
    proc_result_free(&r);
    check_big_outputs(dir);
    cr_assert(!has_tmp(dir), "a temporary file was left behind");

    char path[512];
    snprintf(path, sizeof path, "%s/st.json", dir);
    json_error_t err;
    stats = json_load_file(path, 0, &err);
    cr_assert(stats, "%s: %s", path, err.text);
    const json_t *ws = json_object_get(stats, "workers");
    cr_assert(json_is_array(ws) && json_array_size(ws) == 2, "two workers in the stats");
    /* Without streaming each worker would hold its share of the 48 MiB until the end; with it
     * a worker holds a few unwritten chunks (256 KiB each) at a time, and the chunks waiting
     * for their consumer, under its 12 MiB limit (about 4 MiB here, 9 under ASan). */
    const double out_bytes = (double)ROWS * COLS * (8 + 4);
    for (size_t k = 0; k < json_array_size(ws); k++) {
        const json_t *w = json_array_get(ws, k);
        double peak = json_number_value(json_object_get(w, "chunk_peak"));
        double tasks = json_number_value(json_object_get(w, "tasks"));
        cr_assert_gt(peak, 0);
        cr_assert_lt(peak, out_bytes / 6, "worker %s held %.1f MiB of chunks at once (%g tasks)",
                     json_string_value(json_object_get(w, "name")), peak / (1 << 20), tasks);
    }
    stop_all();
    remove_tmpdir(dir);
}

/* Starts `tessera ARGS...` in dir with its output discarded. */
static pid_t spawn_quiet(const char *dir, const char *const *argv) {
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        FILE *nul = freopen("/dev/null", "w", stdout);
        (void)nul;
        nul = freopen("/dev/null", "w", stderr);
        (void)nul;
        if (chdir(dir) != 0) _exit(126);
        execv(tessera_exe(), (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Bytes of written data in dir's temporaries (their allocated blocks: a .npy temporary is
 * sized at once but sparse until chunks land in it). */
static long long tmp_written(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert(d);
    long long n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (strstr(e->d_name, ".tmp-") && stat(p, &st) == 0) n += (long long)st.st_blocks * 512;
    }
    closedir(d);
    return n;
}

/* Waits until the run has written some chunks into a temporary output, at most ~30 s. */
static void wait_for_tmp(const char *dir) {
    for (int i = 0; i < 3000 && tmp_written(dir) < (1 << 20); i++) usleep(10000);
    cr_assert_geq(tmp_written(dir), 1 << 20, "no chunk was written into a temporary output");
}

/* A run long enough to be caught while it writes (a matmul chain, streamed out). */
static const char *long_prog =
    "{\"tessera\": 1, \"arrays\": {"
    "\"A\": {\"op\": \"random\", \"shape\": [2400, 2400], \"chunks\": 300},"
    "\"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"A\"]},"
    "\"D\": {\"op\": \"matmul\", \"args\": [\"C\", \"C\"]}},"
    "\"outputs\": {\"C\": \"c.npy\", \"D\": \"d.npy\"}}";

Test(stream, interrupt_leaves_nothing, .timeout = 120) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", long_prog);
    char addr[64];
    track(start_scheduler(addr, sizeof addr));
    track(start_worker(addr, 1, "w0", NULL));
    const char *argv[] = {"tessera", "submit", "--scheduler", addr, "p.json", NULL};
    pid_t pid = track(spawn_quiet(dir, argv));
    wait_for_tmp(dir);
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    untrack(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 130, "submit: status %d", st);
    cr_assert(!has_tmp(dir), "an interrupted run left a temporary output");
    cr_assert_eq(dir_entries(dir), 1, "an interrupted run left an output");
    stop_all();
    remove_tmpdir(dir);
}

Test(stream, failure_leaves_nothing, .timeout = 120) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", long_prog);
    char addr[64];
    pid_t s = track(start_scheduler(addr, sizeof addr));
    track(start_worker(addr, 1, "w0", NULL));
    const char *argv[] = {"tessera", "submit", "--scheduler", addr, "p.json", NULL};
    pid_t pid = track(spawn_quiet(dir, argv));
    wait_for_tmp(dir);
    /* The scheduler dies mid-run: the client's call fails (exit 1) and cleans up. */
    kill(s, SIGKILL);
    waitpid(s, NULL, 0);
    untrack(s);
    int st;
    waitpid(pid, &st, 0);
    untrack(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "submit: status %d", st);
    cr_assert(!has_tmp(dir), "a failed run left a temporary output");
    cr_assert_eq(dir_entries(dir), 1, "a failed run left an output");
    stop_all();
    remove_tmpdir(dir);
}

/* A worker killed while the output streams out costs time, not results: its chunks are made
 * again elsewhere and reported again, and a fetch from it that failed waits for that. C = A @ 1
 * (2048 x 8192 by 8192 x 256 ones): every row of C is the row sum of A, a cheap reference
 * whatever order BLAS adds in; 8 output chunks of a GFLOP each. */
Test(stream, worker_lost_mid_run_costs_time_not_results, .timeout = 300) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json",
               "{\"tessera\": 1, \"arrays\": {"
               "\"A\": {\"op\": \"random\", \"shape\": [2048, 8192], \"chunks\": [256, 1024], "
               "\"seed\": 3},"
               "\"O\": {\"op\": \"ones\", \"shape\": [8192, 256], \"chunks\": [1024, 256]},"
               "\"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"O\"]}},"
               "\"outputs\": {\"C\": \"c.npy\"}}");
    char addr[64];
    track(start_scheduler(addr, sizeof addr));
    track(start_worker(addr, 1, "w0", NULL));
    pid_t w1 = track(start_worker(addr, 1, "w1", NULL));
    const char *argv[] = {"tessera", "submit", "--scheduler", addr, "p.json", NULL};
    pid_t pid = track(spawn_quiet(dir, argv));
    /* One output chunk (512 KiB) written: kill a worker while the rest are being made. */
    for (int i = 0; i < 6000 && tmp_written(dir) < (512 << 10); i++) usleep(10000);
    kill(w1, SIGKILL);
    waitpid(w1, NULL, 0);
    untrack(w1);
    int st;
    waitpid(pid, &st, 0);
    untrack(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "submit: status %d", st);
    char path[512];
    snprintf(path, sizeof path, "%s/c.npy", dir);
    npy_data c;
    cr_assert_eq(read_npy(path, &c), 0);
    cr_assert(c.ndim == 2 && c.shape[0] == 2048 && c.shape[1] == 256);
    for (int64_t r = 0; r < 2048; r++) {
        double sum = 0;
        for (int64_t k = 0; k < 8192; k++) sum += ref_random_f64(3, (uint64_t)(r * 8192 + k));
        for (int64_t j = 0; j < 256; j++)
            if (fabs(c.v[r * 256 + j] - sum) > 1e-8)
                cr_assert_fail("C[%lld, %lld] = %.17g, row sum %.17g", (long long)r, (long long)j,
                               c.v[r * 256 + j], sum);
    }
    npy_free(&c);
    cr_assert(!has_tmp(dir));
    stop_all();
    remove_tmpdir(dir);
}

/* ---- the C API ---- */

static tsr_client *local_cluster(int workers) {
    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.workers = workers;
    lo.tessera_path = tessera_exe();
    tsr_client *c = NULL;
    cr_assert_eq(tsr_client_start_local(&lo, &c), 0, "%s", tsr_last_error());
    return c;
}

static void expect_random(const char *path, int64_t rows, int64_t cols, uint64_t seed) {
    npy_data d;
    cr_assert_eq(read_npy(path, &d), 0, "cannot read %s", path);
    cr_assert(d.ndim == 2 && d.shape[0] == rows && d.shape[1] == cols);
    for (int64_t i = 0; i < rows * cols; i++)
        cr_assert_eq(d.v[i], ref_random_f64(seed, (uint64_t)i), "%s[%lld]", path, (long long)i);
    npy_free(&d);
}

/* Renames the directory vanish_from at the first progress report, once. */
static char vanish_from[512], vanish_to[512];
static int vanished;

static void vanish(const tsr_progress *p, void *user) {
    (void)p;
    (void)user;
    if (!vanished && rename(vanish_from, vanish_to) == 0) vanished = 1;
}

static void expect_file(const char *path, const char *text) {
    char buf[256] = "";
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s is gone", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cr_assert_str_eq(buf, text, "%s was changed", path);
}

/* Several outputs are written all or none (atomic_file.c, tsr__tmpout_commit_all): when the last
 * one's directory vanishes during the job, its rename fails at the end and the outputs already
 * in place are taken back out, leaving the .npy file and the Zarr store that were there before.
 * With every directory there, the same call replaces both and keeps nothing aside. */
Test(stream, outputs_are_written_all_or_none, .timeout = 180) {
    tsr_client *c = local_cluster(2);
    char *dir = make_tmpdir();
    char d1[400], old_store[600], pz[512], p1[512], p2[600];
    cr_assert_lt(strlen(dir), 300);
    snprintf(d1, sizeof d1, "%s/d1", dir);
    snprintf(vanish_from, sizeof vanish_from, "%s/d2", dir);
    snprintf(vanish_to, sizeof vanish_to, "%s/gone", dir);
    cr_assert_eq(mkdir(d1, 0755), 0);
    cr_assert_eq(mkdir(vanish_from, 0755), 0);
    snprintf(pz, sizeof pz, "%s/x.zarr", d1);
    snprintf(p1, sizeof p1, "%s/x.npy", d1);
    snprintf(p2, sizeof p2, "%s/y.npy", vanish_from);
    snprintf(old_store, sizeof old_store, "%s/marker", pz);
    cr_assert_eq(mkdir(pz, 0755), 0);
    write_file(pz, ".zarray", "{}"); /* what makes it a store tsr_store may replace */
    write_file(pz, "marker", "the old store\n");
    write_file(d1, "x.npy", "old contents\n");
    /* 2 MiB in 8 chunks. The scheduler reports progress every 100 ms and always once more just
     * before the job's end (scheduler/server.c), and the outputs are renamed into place only
     * after that end, so the callback renames the directory in time however short the job. */
    int64_t shape[2] = {1024, 256}, chunks[2] = {128, 256};
    tsr_array *x;
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 11, &x), 0);
    tsr_store_target t[3];
    tsr_store_target_init(&t[0], x, pz);
    tsr_store_target_init(&t[1], x, p1);
    tsr_store_target_init(&t[2], x, p2);
    tsr_compute_options o;
    tsr_compute_options_default(&o);
    o.progress = vanish;
    o.progress_interval_ms = 0;
    vanished = 0;
    int rc = tsr_store(c, t, 3, &o);
    cr_assert(vanished, "the job ended before a progress report");
    cr_assert_neq(rc, 0, "the store succeeded without its directory");
    const char *msg = tsr_client_errmsg(c);
    cr_assert(strstr(msg, p2) && strstr(msg, "the other outputs were left as they were"), "%s",
              msg);
    expect_file(p1, "old contents\n");
    expect_file(old_store, "the old store\n");
    cr_assert_eq(dir_entries(pz), 2, "the old store was changed");
    cr_assert_eq(dir_entries(d1), 2, "something was left beside the outputs");

    cr_assert_eq(mkdir(vanish_from, 0755), 0);
    o.progress = NULL;
    cr_assert_eq(tsr_store(c, t, 3, &o), 0, "%s", tsr_client_errmsg(c));
    expect_random(p1, 1024, 256, 11);
    expect_random(p2, 1024, 256, 11);
    struct stat st;
    cr_assert_eq(stat(old_store, &st), -1, "the old store's file is still there");
    char zarray[700];
    snprintf(zarray, sizeof zarray, "%s/.zarray", pz);
    cr_assert_eq(stat(zarray, &st), 0, "the new store has no .zarray");
    cr_assert_eq(dir_entries(d1), 2, "something was kept aside");
    cr_assert_eq(dir_entries(vanish_from), 1);
    tsr_array_free(x);
    tsr_client_free(c);
    remove_tmpdir(dir);
}

Test(stream, store_api, .timeout = 120) {
    tsr_client *c = local_cluster(2);
    char *dir = make_tmpdir();
    /* Ragged chunks on both axes; the same array stored twice, and once more kept. */
    int64_t shape[2] = {37, 23}, chunks[2] = {10, 7};
    tsr_array *x, *s;
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 9, &x), 0);
    cr_assert_eq(tsr_reduce(TSR_SUM, x, NULL, 0, &s), 0);
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/x1.npy", dir);
    snprintf(p2, sizeof p2, "%s/x2.npy", dir);
    tsr_store_target t[2];
    tsr_store_target_init(&t[0], x, p1);
    tsr_store_target_init(&t[1], x, p2);
    cr_assert_eq(tsr_store(c, t, 2, NULL), 0, "%s", tsr_client_errmsg(c));
    expect_random(p1, 37, 23, 9);
    expect_random(p2, 37, 23, 9);
    cr_assert_eq(dir_entries(dir), 2);
    /* Stored arrays are not kept. */
    double v;
    double *buf = malloc(37 * 23 * sizeof *buf);
    cr_assert_eq(tsr_array_read(x, buf, 37 * 23 * sizeof *buf), TSR_ENOTCOMPUTED);

    /* tsr_compute with store targets: x written and x and s kept, in one submission. */
    unlink(p1);
    tsr_compute_options o;
    tsr_compute_options_default(&o);
    o.store = t;
    o.nstore = 1;
    tsr_array *keep[2] = {x, s};
    cr_assert_eq(tsr_compute(c, keep, 2, &o), 0, "%s", tsr_client_errmsg(c));
    expect_random(p1, 37, 23, 9);
    cr_assert_eq(tsr_array_read(x, buf, 37 * 23 * sizeof *buf), 0, "%s", tsr_client_errmsg(c));
    double sum = 0;
    for (int64_t i = 0; i < 37 * 23; i++) {
        cr_assert_eq(buf[i], ref_random_f64(9, (uint64_t)i));
        sum += buf[i];
    }
    cr_assert_eq(tsr_array_read(s, &v, sizeof v), 0, "%s", tsr_client_errmsg(c));
    cr_assert_float_eq(v, sum, 1e-9);
    free(buf);

    /* Bad targets fail before anything runs, naming the array, and create nothing. */
    cr_assert_eq(tsr_array_set_name(x, "xs"), 0);
    tsr_store_target bad[2];
    char p3[512], p4[512];
    snprintf(p3, sizeof p3, "%s/new.npy", dir);
    snprintf(p4, sizeof p4, "%s/no/such/dir/x.npy", dir);
    tsr_store_target_init(&bad[0], x, p3);
    tsr_store_target_init(&bad[1], x, p3);
    cr_assert_eq(tsr_store(c, bad, 2, NULL), TSR_EINVALID);
    cr_assert(strstr(tsr_client_errmsg(c), "both write"), "%s", tsr_client_errmsg(c));
    tsr_store_target_init(&bad[1], x, "");
    cr_assert_eq(tsr_store(c, bad, 2, NULL), TSR_EINVALID);
    tsr_store_target_init(&bad[1], x, p3);
    bad[1].compressor = TSR_COMPRESSOR_ZLIB;
    cr_assert_eq(tsr_store(c, &bad[1], 1, NULL), TSR_EINVALID);
    cr_assert(strstr(tsr_client_errmsg(c), "\"xs\""), "%s", tsr_client_errmsg(c));
    tsr_store_target_init(&bad[1], NULL, p3);
    cr_assert_eq(tsr_store(c, &bad[1], 1, NULL), TSR_EINVALID);
    tsr_store_target_init(&bad[1], x, p4);
    cr_assert_eq(tsr_store(c, &bad[1], 1, NULL), -ENOENT);
    cr_assert(strstr(tsr_client_errmsg(c), p4) && strstr(tsr_client_errmsg(c), "\"xs\""), "%s",
              tsr_client_errmsg(c));
    tsr_store_target_init(&bad[1], x, p3);
    bad[1].reserved[3] = 1;
    cr_assert_eq(tsr_store(c, &bad[1], 1, NULL), TSR_EINVALID);
    cr_assert_eq(dir_entries(dir), 2, "a refused store left something behind");
    tsr_array_free(s);
    tsr_array_free(x);
    tsr_client_free(c);
    remove_tmpdir(dir);
}
