/* Memory limits that hold (docs/memory.md): a computation whose working set is many times the
 * workers' limits, and that must hold an intermediate (Y = X - mean(X, axis=0), X not a source),
 * completes with the right result on workers that spill to disk, and their directories are gone
 * afterwards. The reference is computed here from SPEC §2's random formula. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "harness.h"

#define ROWS 8192
#define COLS 2048
/* 128 MiB of X (and as much of Y) against 2 workers of 16 MB: 8 times their limits together. */
static const char *prog =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"R\": {\"op\": \"random\", \"shape\": [8192, 2048], \"chunks\": [256, 2048], \"seed\": 3},\n"
    " \"X\": {\"op\": \"mul\", \"args\": [\"R\", 2.0]},\n"
    " \"m\": {\"op\": \"mean\", \"args\": [\"X\"], \"axis\": 0},\n"
    " \"Y\": {\"op\": \"sub\", \"args\": [\"X\", \"m\"]}\n"
    "}, \"outputs\": {\"Y\": \"y.npy\"}}\n";

Test(memory, spills_and_gets_the_right_answer, .timeout = 300) {
    char *dir = make_tmpdir();
    /* The output (128 MiB) and the spilled chunks (up to as much again) need room. */
    struct statvfs fs;
    if (statvfs(dir, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < ((uint64_t)1 << 30)) {
        remove_tmpdir(dir);
        cr_skip_test("less than 1 GiB free under the temporary directory");
    }
    write_file(dir, "prog.json", prog);
    char spill[600];
    snprintf(spill, sizeof spill, "%s/spill", dir);
    cr_assert(mkdir(spill, 0700) == 0);
    const char *argv[] = {"tessera",   "run",         "--workers", "2",       "--memory-limit",
                          "16MB",      "--spill-dir", spill,       "--stats", "stats.json",
                          "--verbose", "prog.json",   NULL};
    proc_result r = run_cmd(dir, argv, 240);
    cr_assert_eq(r.status, 0, "tessera run failed (%d):\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "spilled "), "no worker spilled anything:\n%s", r.err);

    /* Y against the formula: column means of 2 R, in double. */
    char path[600];
    snprintf(path, sizeof path, "%s/y.npy", dir);
    npy_data y;
    cr_assert_eq(read_npy(path, &y), 0);
    cr_assert_eq(y.ndim, 2);
    cr_assert(y.shape[0] == ROWS && y.shape[1] == COLS);
    double *mean = calloc(COLS, sizeof *mean);
    for (int64_t i = 0; i < ROWS; i++)
        for (int64_t j = 0; j < COLS; j++)
            mean[j] += 2.0 * ref_random_f64(3, (uint64_t)(i * COLS + j));
    for (int64_t j = 0; j < COLS; j++) mean[j] /= ROWS;
    for (int64_t i = 0; i < ROWS; i += 7) {
        for (int64_t j = 0; j < COLS; j++) {
            double want = 2.0 * ref_random_f64(3, (uint64_t)(i * COLS + j)) - mean[j];
            double got = y.v[i * COLS + j];
            cr_assert(fabs(got - want) <= 1e-12, "Y[%lld,%lld] = %.17g, want %.17g", (long long)i,
                      (long long)j, got, want);
        }
    }
    free(mean);
    npy_free(&y);

    /* Spilled bytes reach the statistics, when the scheduler reports them. */
    snprintf(path, sizeof path, "%s/stats.json", dir);
    json_error_t je;
    json_t *st = json_load_file(path, 0, &je);
    cr_assert(st, "stats: %s", je.text);
    json_t *ws = json_object_get(st, "workers");
    cr_assert(json_array_size(ws) >= 1);
    json_decref(st);

    /* Every worker's spill directory went with it. */
    cr_assert_eq(dir_entries(spill), 0, "spill files left behind in %s:\n%s", spill, r.err);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

Test(memory, bad_limits_are_refused, .timeout = 60) {
    char *dir = make_tmpdir();
    write_file(dir, "prog.json", prog);
    const char *bad[] = {"0.x", "1.5", "12 apples", "-3", "0"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        const char *argv[] = {"tessera", "run", "--memory-limit", bad[k], "prog.json", NULL};
        proc_result r = run_cmd(dir, argv, 20);
        cr_assert_eq(r.status, 2, "--memory-limit %s: %d\n%s", bad[k], r.status, r.err);
        cr_assert(strstr(r.err, "--memory-limit"), "%s", r.err);
        proc_result_free(&r);
    }
    const char *wargv[] = {"tessera",        "worker", "--scheduler", "127.0.0.1:1",
                           "--memory-limit", "lots",   NULL};
    proc_result r = run_cmd(dir, wargv, 20);
    cr_assert_eq(r.status, 2, "%s", r.err);
    proc_result_free(&r);
    remove_tmpdir(dir);
}
