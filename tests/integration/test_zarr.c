/* Zarr v2 stores with real processes, against an independent reader and writer: Debian's
 * python3-zarr through tests/integration/zarr_helper.py (run with /usr/bin/python3). Stores
 * Tessera writes (each compressor, ragged edge chunks, an irregular grid, 0-d) are read by zarr
 * and compared with SPEC §2's formula written out in numpy; stores zarr writes (each compressor,
 * ragged chunks, missing chunks, "/" separators, NaN fill, 0-d) are loaded by Tessera and
 * compared with the harness's own formula. Bad .zarray files and bad output entries are exit-2
 * errors naming the file, the array and the problem; an existing store is replaced only by a
 * complete one, and never when the run is interrupted. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define PY "/usr/bin/python3"

static const char *helper(void) {
    const char *h = getenv("ZARR_HELPER");
    cr_assert(h, "ZARR_HELPER is not set (meson sets it)");
    return h;
}

/* Debian's python3-zarr is a test dependency (README, .ci/run); without it there is nothing
 * independent to compare with, and the test says so instead of passing. */
static void need_zarr(void) {
    const char *argv[] = {PY, "-c", "import zarr, numcodecs, numpy", NULL};
    proc_result r = run_cmd(NULL, argv, 60);
    int ok = r.status == 0;
    proc_result_free(&r);
    if (!ok) cr_skip_test("python3-zarr is not installed (apt-get install python3-zarr)");
}

/* Runs zarr_helper.py CMD DIR [ARG] and expects "ok". */
static void py(const char *cmd, const char *dir, const char *arg) {
    const char *argv[] = {PY, helper(), cmd, dir, arg, NULL};
    proc_result r = run_cmd(NULL, argv, 120);
    cr_assert(r.status == 0 && strstr(r.out, "ok"), "zarr_helper.py %s: exit %d\n%s%s", cmd,
              r.status, r.out, r.err);
    proc_result_free(&r);
}

static proc_result tessera(const char *dir, const char *cmd, const char *file) {
    const char *argv[] = {"tessera", cmd, "--workers", "2", "--no-progress", file, NULL};
    const char *check[] = {"tessera", cmd, file, NULL};
    return run_cmd(dir, strcmp(cmd, "check") ? argv : check, 200);
}

static int has_tmp(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert(d);
    int found = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp-") || strstr(e->d_name, ".old-")) found = 1;
    closedir(d);
    return found;
}

Test(zarr, tessera_stores_read_by_zarr, .timeout = 200) {
    need_zarr();
    char *dir = make_tmpdir();
    write_file(
        dir, "w.json",
        "{\"tessera\": 1, \"arrays\": {\n"
        " \"A\": {\"op\": \"random\", \"shape\": [37, 23], \"chunks\": [10, 7], \"seed\": 5},\n"
        " \"B\": {\"op\": \"random\", \"shape\": [50], \"chunks\": 16, \"dtype\": "
        "\"float32\", \"seed\": 6},\n"
        " \"C\": {\"op\": \"random\", \"shape\": [20, 9, 4], \"chunks\": [7, 4, 4], "
        "\"seed\": 7},\n"
        " \"X\": {\"op\": \"random\", \"shape\": [13, 11], \"chunks\": [4, 5], \"seed\": 8},\n"
        " \"Z\": {\"op\": \"zeros\", \"shape\": [13, 11], \"chunks\": [3, 4]},\n"
        " \"D\": {\"op\": \"add\", \"args\": [\"X\", \"Z\"]},\n"
        " \"s\": {\"op\": \"random\", \"shape\": [], \"seed\": 9}\n"
        "}, \"outputs\": {\"A\": \"a.zarr\",\n"
        " \"B\": {\"path\": \"b.zarr\", \"compressor\": \"zlib\"},\n"
        " \"C\": {\"path\": \"c.zarr\", \"compressor\": null},\n"
        " \"D\": \"d.zarr\", \"s\": {\"path\": \"s.zarr\"}}}\n");
    proc_result r = tessera(dir, "run", "w.json");
    cr_assert_eq(r.status, 0, "run: exit %d\n%s", r.status, r.err);
    proc_result_free(&r);
    cr_assert(!has_tmp(dir), "a temporary store was left behind");
    py("check", dir, NULL);
    remove_tmpdir(dir);
}

/* Compares a .npy Tessera wrote with f(i) for each flat index i. */
static void expect_npy(const char *dir, const char *name, int64_t n, double (*f)(int64_t)) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    npy_data d;
    cr_assert_eq(read_npy(path, &d), 0, "cannot read %s", path);
    cr_assert_eq(d.n, n, "%s: %lld elements", name, (long long)d.n);
    for (int64_t i = 0; i < n; i++) {
        double want = f(i);
        if (!(d.v[i] == want || (isnan(want) && isnan(d.v[i]))))
            cr_assert_fail("%s[%lld] = %.17g, expected %.17g", name, (long long)i, d.v[i], want);
    }
    npy_free(&d);
}

/* m1.zarr: 37 x 23 in 10 x 7 chunks, chunks (1,2) and (3,3) missing (fill -1.5). */
static double m1(int64_t i) {
    int64_t r = i / 23, c = i % 23;
    if ((r / 10 == 1 && c / 7 == 2) || (r / 10 == 3 && c / 7 == 3)) return -1.5;
    return ref_random_f64(11, (uint64_t)i);
}
static double m2(int64_t i) {
    return (double)ref_random_f32(12, (uint64_t)i);
}
/* m3.zarr: 20 x 9 in 8 x 4 chunks, chunk (2,1) missing (fill NaN). */
static double m3(int64_t i) {
    int64_t r = i / 9, c = i % 9;
    if (r / 8 == 2 && c / 4 == 1) return NAN;
    return ref_random_f64(13, (uint64_t)i);
}

Test(zarr, zarr_stores_loaded_by_tessera, .timeout = 200) {
    need_zarr();
    char *dir = make_tmpdir();
    py("make", dir, NULL);
    write_file(dir, "l.json",
               "{\"tessera\": 1, \"arrays\": {\n"
               " \"M1\": {\"op\": \"load\", \"path\": \"m1.zarr\"},\n"
               " \"M1b\": {\"op\": \"load\", \"path\": \"m1.zarr\", \"chunks\": [16, 5]},\n"
               " \"M2\": {\"op\": \"load\", \"path\": \"m2.zarr\"},\n"
               " \"M3\": {\"op\": \"load\", \"path\": \"m3.zarr\"},\n"
               " \"M4\": {\"op\": \"load\", \"path\": \"m4.zarr\"}\n"
               "}, \"outputs\": {\"M1\": \"m1.npy\", \"M1b\": \"m1b.npy\", \"M2\": \"m2.npy\",\n"
               " \"M3\": \"m3.npy\", \"M4\": \"-\"}}\n");
    proc_result r = tessera(dir, "check", "l.json");
    cr_assert_eq(r.status, 0, "check: exit %d\n%s", r.status, r.err);
    /* The store's chunks by default; the override as given. */
    cr_assert(strstr(r.out, "M1: load shape=(37, 23) dtype=float64 chunks=(10, 7)"), "%s", r.out);
    cr_assert(strstr(r.out, "M1b: load shape=(37, 23) dtype=float64 chunks=(16, 5)"), "%s", r.out);
    cr_assert(strstr(r.out, "M2: load shape=(50,) dtype=float32 chunks=(16,)"), "%s", r.out);
    proc_result_free(&r);
    r = tessera(dir, "run", "l.json");
    cr_assert_eq(r.status, 0, "run: exit %d\n%s", r.status, r.err);
    char want[64];
    snprintf(want, sizeof want, "M4: %.17g\n", ref_random_f64(14, 0));
    cr_assert_str_eq(r.out, want);
    proc_result_free(&r);
    expect_npy(dir, "m1.npy", 37 * 23, m1);
    expect_npy(dir, "m1b.npy", 37 * 23, m1);
    expect_npy(dir, "m2.npy", 50, m2);
    expect_npy(dir, "m3.npy", 20 * 9, m3);

    /* A chunk file that does not decode fails the computation (exit 1), naming it. */
    write_file(dir, "c.json",
               "{\"tessera\": 1, \"arrays\": {\"M5\": {\"op\": \"load\", \"path\": \"m5.zarr\"}},"
               " \"outputs\": {\"M5\": \"m5.npy\"}}");
    r = tessera(dir, "run", "c.json");
    cr_assert_eq(r.status, 1, "run: exit %d\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "m5.zarr/0.1") && strstr(r.err, "\"M5\""), "%s", r.err);
    proc_result_free(&r);
    char path[600];
    snprintf(path, sizeof path, "%s/m5.npy", dir);
    cr_assert(!file_exists(path));
    remove_tmpdir(dir);
}

/* A .zarray Tessera cannot read: `check` exits 2 naming the program file, the array, the
 * store's .zarray and the problem. */
static void bad_store(const char *dir, const char *zarray, const char *problem) {
    char sub[600];
    snprintf(sub, sizeof sub, "%s/x.zarr", dir);
    mkdir(sub, 0755);
    write_file(sub, ".zarray", zarray);
    proc_result r = tessera(dir, "check", "p.json");
    cr_assert_eq(r.status, 2, "exit %d for %s:\n%s", r.status, zarray, r.err);
    cr_assert(strstr(r.err, "p.json: array \"X\": load x.zarr: .zarray: "), "%s", r.err);
    cr_assert(strstr(r.err, problem), "no \"%s\" in: %s", problem, r.err);
    proc_result_free(&r);
}

#define ZA(fields)                                                                                 \
    "{\"zarr_format\": 2, \"shape\": [4, 4], \"chunks\": [2, 2], \"order\": \"C\", "               \
    "\"filters\": null, \"fill_value\": 0, " fields "}"

Test(zarr, bad_zarray_and_bad_outputs, .timeout = 120) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json",
               "{\"tessera\": 1, \"arrays\": {\"X\": {\"op\": \"load\", \"path\": \"x.zarr\"}},"
               " \"outputs\": {\"X\": \"-\"}}");
    bad_store(dir, "{\"zarr_format\": 2, \"shape\": [4", "invalid JSON");
    bad_store(dir, ZA("\"dtype\": \">f8\", \"compressor\": null"), "unsupported dtype \">f8\"");
    bad_store(dir, ZA("\"dtype\": \"<i4\", \"compressor\": null"), "unsupported dtype \"<i4\"");
    bad_store(dir,
              "{\"zarr_format\": 2, \"shape\": [4, 4], \"chunks\": [2, 2], \"order\": \"F\", "
              "\"dtype\": \"<f8\", \"compressor\": null}",
              "unsupported order \"F\"");
    bad_store(dir, ZA("\"dtype\": \"<f8\", \"compressor\": {\"id\": \"zstd\", \"level\": 1}"),
              "unsupported compressor \"zstd\"");
    bad_store(dir,
              "{\"zarr_format\": 2, \"shape\": [4, 4], \"chunks\": [2], \"order\": \"C\", "
              "\"dtype\": \"<f8\", \"compressor\": null}",
              "\"chunks\" has 1 entry but \"shape\" has 2");
    bad_store(dir,
              "{\"zarr_format\": 3, \"shape\": [4, 4], \"chunks\": [2, 2], \"order\": \"C\", "
              "\"dtype\": \"<f8\", \"compressor\": null}",
              "\"zarr_format\" must be 2");
    bad_store(dir,
              "{\"zarr_format\": 2, \"shape\": [4, 4], \"chunks\": [2, 2], \"order\": \"C\", "
              "\"dtype\": \"<f8\", \"compressor\": null, \"filters\": [{\"id\": \"delta\"}]}",
              "filters are not supported");

    /* Output entries: a store is {"path", "compressor"}, nothing else. */
    static const char *const outs[][2] = {
        {"{\"path\": \"y.zarr\", \"compressor\": \"lz5\"}", "unknown compressor \"lz5\""},
        {"{\"path\": \"y.zarr\", \"compresor\": \"zlib\"}", "unknown key \"compresor\""},
        {"{\"compressor\": \"zlib\"}", "needs \"path\""},
        {"{\"path\": 3}", "\"path\" must be the store's path"},
    };
    for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
        char prog[512];
        snprintf(prog, sizeof prog,
                 "{\"tessera\": 1, \"arrays\": {\"Y\": {\"op\": \"zeros\", \"shape\": [3]}},"
                 " \"outputs\": {\"Y\": %s}}",
                 outs[k][0]);
        write_file(dir, "o.json", prog);
        proc_result r = tessera(dir, "run", "o.json");
        cr_assert_eq(r.status, 2, "exit %d for %s:\n%s", r.status, outs[k][0], r.err);
        cr_assert(strstr(r.err, "o.json: array \"Y\": output: ") && strstr(r.err, outs[k][1]), "%s",
                  r.err);
        proc_result_free(&r);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/y.zarr", dir);
    cr_assert(!file_exists(path));
    remove_tmpdir(dir);
}

/* Entries of k.zarr's temporary store (dir/k.zarr.tmp-XXXXXX), -1 when there is none. */
static int tmp_store_entries(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert(d);
    int n = -1;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "k.zarr.tmp-", 11) != 0) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        n = dir_entries(p);
    }
    closedir(d);
    return n;
}

Test(zarr, existing_store_replaced_only_when_complete, .timeout = 200) {
    need_zarr();
    char *dir = make_tmpdir();
    char path[600];
    /* A complete run replaces the store: its old files are gone. */
    py("old", dir, "o.zarr");
    write_file(dir, "r.json",
               "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"random\", \"shape\": [37, 23], "
               "\"chunks\": [10, 7], \"seed\": 5}}, \"outputs\": {\"A\": \"o.zarr\"}}");
    proc_result r = tessera(dir, "run", "r.json");
    cr_assert_eq(r.status, 0, "run: exit %d\n%s", r.status, r.err);
    proc_result_free(&r);
    snprintf(path, sizeof path, "%s/o.zarr/stale.chunk", dir);
    cr_assert(!file_exists(path), "the old store's files are still there");
    snprintf(path, sizeof path, "%s/o.zarr/3.3", dir);
    cr_assert(file_exists(path));
    cr_assert(!has_tmp(dir));

    /* A directory that is not a store is never replaced: exit 1 before anything runs. */
    snprintf(path, sizeof path, "%s/plain.zarr", dir);
    mkdir(path, 0755);
    write_file(path, "notes.txt", "mine");
    write_file(dir, "n.json",
               "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"zeros\", \"shape\": [3]}},"
               " \"outputs\": {\"A\": \"plain.zarr\"}}");
    r = tessera(dir, "run", "n.json");
    cr_assert_eq(r.status, 1, "run: exit %d\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "plain.zarr") && strstr(r.err, "not a Zarr array store"), "%s", r.err);
    proc_result_free(&r);
    snprintf(path, sizeof path, "%s/plain.zarr/notes.txt", dir);
    cr_assert(file_exists(path));

    /* Interrupted while writing: the old store stays as it was, no temporary is left. */
    py("old", dir, "k.zarr");
    write_file(dir, "k.json",
               "{\"tessera\": 1, \"arrays\": {"
               "\"A\": {\"op\": \"random\", \"shape\": [2400, 2400], \"chunks\": 300},"
               "\"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"A\"]},"
               "\"D\": {\"op\": \"matmul\", \"args\": [\"C\", \"C\"]}},"
               "\"outputs\": {\"C\": \"k.zarr\", \"D\": \"d.npy\"}}");
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        FILE *nul = freopen("/dev/null", "w", stderr);
        (void)nul;
        if (chdir(dir) != 0) _exit(126);
        execl(tessera_exe(), "tessera", "run", "--workers", "1", "--no-progress", "k.json",
              (char *)NULL);
        _exit(127);
    }
    /* Wait for a chunk file in the temporary store (.zarray and .zattrs come first). */
    for (int i = 0; i < 3000 && tmp_store_entries(dir) < 3; i++) usleep(10000);
    int n = tmp_store_entries(dir);
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    cr_assert_geq(n, 3, "no chunk was written into the temporary store");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 130, "run: status %d", st);
    cr_assert(!has_tmp(dir), "an interrupted run left a temporary store");
    py("same", dir, "k.zarr");
    remove_tmpdir(dir);
}
