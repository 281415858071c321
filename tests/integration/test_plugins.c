/* User kernels with real processes (docs/plugins.md): the example plugin
 * (examples/plugins/scale_add.c, built as a module into $TSR_PLUGIN_DIR) run on the example
 * program (examples/map_blocks.json) by `tessera run --plugin-dir`, against references computed
 * here with naive loops from SPEC §2's random formula (harness.c), byte-identical with 1 and 3
 * workers; placement that never gives a map_blocks task to a worker without the plugin (a
 * cluster of one worker with it and one without: the stats say who ran what); the failures a
 * user sees (no worker has the library, no such function, a kernel that returns nonzero, a
 * library that is not a plugin); and names that would reach outside the plugin directories,
 * refused at check time. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

TestSuite(plugins, .timeout = 120, .fini = proc_reap_tracked);

static const char *plugin_dir(void) {
    const char *d = getenv("TSR_PLUGIN_DIR");
    cr_assert(d && *d, "TSR_PLUGIN_DIR is not set (meson sets it)");
    return d;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* The data of a .npy file whose header says descr (e.g. "'<i8'") and holds n elements of size
 * esize: a pointer into *raw (which the caller frees). */
static const void *npy_payload(const char *path, const char *descr, size_t n, size_t esize,
                               char **raw) {
    size_t len;
    *raw = slurp(path, &len);
    cr_assert(len > 10 && memcmp(*raw, "\x93NUMPY\x01\x00", 8) == 0, "%s: not a v1 .npy", path);
    size_t hlen = (size_t)(unsigned char)(*raw)[8] | (size_t)(unsigned char)(*raw)[9] << 8;
    cr_assert(strstr(*raw + 10, descr) != NULL && strstr(*raw + 10, descr) < *raw + 10 + hlen,
              "%s: header does not say %s", path, descr);
    cr_assert_eq(len, 10 + hlen + n * esize, "%s: %zu bytes", path, len);
    return *raw + 10 + hlen;
}

static void copy_example(const char *dir) {
    char path[4096];
    size_t len;
    snprintf(path, sizeof path, "%s/examples/map_blocks.json", TSR_SOURCE_ROOT);
    char *text = slurp(path, &len);
    write_file(dir, "map_blocks.json", text);
    free(text);
}

/* The example's four outputs against naive references (X, row: SPEC §2's random values). */
static void check_example_outputs(const char *dir) {
    enum { R = 37, C = 23 };
    char path[4096];
    npy_data y;
    snprintf(path, sizeof path, "%s/Y.npy", dir);
    cr_assert_eq(read_npy(path, &y), 0);
    cr_assert_eq(y.n, R * C);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            double x = ref_random_f64(11, (uint64_t)(i * C + j)), row = ref_random_f64(12, j);
            double want = 2.5 * x;
            want += row;
            cr_assert_eq(y.v[i * C + j], want, "Y[%d,%d] = %.17g, want %.17g", i, j, y.v[i * C + j],
                         want);
        }
    npy_free(&y);
    npy_data y32;
    snprintf(path, sizeof path, "%s/Y32.npy", dir);
    cr_assert_eq(read_npy(path, &y32), 0);
    cr_assert(y32.f32, "Y32 is not float32");
    for (int k = 0; k < R * C; k++) {
        double x = ref_random_f64(11, (uint64_t)k), v = 0.5 * x;
        v += x;
        cr_assert_eq((float)y32.v[k], (float)v, "Y32 element %d", k);
    }
    npy_free(&y32);
    char *raw;
    snprintf(path, sizeof path, "%s/G.npy", dir);
    const int64_t *g = npy_payload(path, "'<i8'", R * C, 8, &raw);
    for (int k = 0; k < R * C; k++) {
        int64_t v;
        memcpy(&v, g + k, sizeof v);
        cr_assert_eq(v, k, "G element %d is %lld", k, (long long)v);
    }
    free(raw);
    /* B = X > 0.5 (bool), H = 0.5 * G + B on one 37 x 23 block (int64 and bool inputs, both
     * rechunked to it). */
    snprintf(path, sizeof path, "%s/B.npy", dir);
    const unsigned char *bv = npy_payload(path, "'|b1'", R * C, 1, &raw);
    for (int k = 0; k < R * C; k++)
        cr_assert_eq(bv[k], ref_random_f64(11, (uint64_t)k) > 0.5, "B element %d", k);
    free(raw);
    npy_data h;
    snprintf(path, sizeof path, "%s/H.npy", dir);
    cr_assert_eq(read_npy(path, &h), 0);
    for (int k = 0; k < R * C; k++) {
        double want = 0.5 * (double)k;
        want += ref_random_f64(11, (uint64_t)k) > 0.5 ? 1.0 : 0.0;
        cr_assert_eq(h.v[k], want, "H element %d", k);
    }
    npy_free(&h);
    npy_data s;
    snprintf(path, sizeof path, "%s/S.npy", dir);
    cr_assert_eq(read_npy(path, &s), 0);
    cr_assert_eq(s.ndim, 2);
    cr_assert_eq(s.shape[0], 4);
    cr_assert_eq(s.shape[1], 16);
    for (int k = 0; k < 64; k++) cr_assert_eq(s.v[k], (double)k, "S element %d", k);
    npy_free(&s);
}

static void run_example(const char *dir, const char *workers, const char *gpus) {
    copy_example(dir);
    const char *argv[16] = {"tessera", "run",          "--no-progress", "-w",
                            workers,   "--plugin-dir", plugin_dir()};
    int n = 7;
    if (gpus) {
        argv[n++] = "--gpus";
        argv[n++] = gpus;
    }
    argv[n++] = "map_blocks.json";
    argv[n] = NULL;
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 0, "run -w %s: exit %d\n%s", workers, r.status, r.err);
    proc_result_free(&r);
}

Test(plugins, example_program_against_references_1_and_3_workers) {
    char *d1 = make_tmpdir(), *d3 = make_tmpdir();
    run_example(d1, "1", NULL);
    check_example_outputs(d1);
    run_example(d3, "3", NULL);
    const char *names[] = {"Y.npy", "Y32.npy", "G.npy", "S.npy", "B.npy", "H.npy"};
    for (size_t k = 0; k < 6; k++) {
        char p1[4096], p3[4096];
        size_t n1, n3;
        snprintf(p1, sizeof p1, "%s/%s", d1, names[k]);
        snprintf(p3, sizeof p3, "%s/%s", d3, names[k]);
        char *a = slurp(p1, &n1), *b = slurp(p3, &n3);
        cr_assert(n1 == n3 && memcmp(a, b, n1) == 0, "%s differs between 1 and 3 workers",
                  names[k]);
        free(a);
        free(b);
    }
    remove_tmpdir(d1);
    remove_tmpdir(d3);
}

/* A GPU worker (the fake device: kernels/fakedev.c) runs user kernels on its host thread. */
Test(plugins, example_on_a_gpu_worker) {
    setenv("TESSERA_FAKE_GPU", "1", 1);
    char *dir = make_tmpdir();
    run_example(dir, "0", "0");
    check_example_outputs(dir);
    remove_tmpdir(dir);
    unsetenv("TESSERA_FAKE_GPU");
}

/* ---- a cluster of one worker with the plugin and one without ---- */

static pid_t cluster[3];

static void stop_cluster(void) {
    for (int k = 2; k >= 0; k--)
        if (cluster[k] > 0) stop_proc(cluster[k]);
    memset(cluster, 0, sizeof cluster);
    proc_reap_tracked();
}

static proc_result submit(const char *dir, const char *addr, const char *file) {
    const char *argv[] = {"tessera",     "submit", "--no-progress",
                          "--scheduler", addr,     "--stats",
                          "st.json",     file,     NULL};
    return run_cmd(dir, argv, 60);
}

static const char *placement_prog =
    "{\"tessera\": 1, \"arrays\": {"
    "\"X\": {\"op\": \"random\", \"shape\": [40, 30], \"chunks\": [8, 7], \"seed\": 3},"
    "\"Y\": {\"op\": \"map_blocks\", \"args\": [\"X\", 3], \"kernel\": \"scale_add:scale_add\"}},"
    "\"outputs\": {\"Y\": \"Y.npy\"}}";

Test(plugins, tasks_go_only_to_workers_with_the_plugin, .fini = stop_cluster) {
    char addr[128];
    cluster[0] = proc_track(start_scheduler(addr, sizeof addr));
    const char *with[] = {"--plugin-dir", plugin_dir(), NULL};
    cluster[1] = proc_track(start_worker(addr, 2, "without", NULL));
    cluster[2] = proc_track(start_worker_with(addr, 1, "with", with));
    char *dir = make_tmpdir();
    write_file(dir, "p.json", placement_prog);
    for (int round = 0; round < 2; round++) {
        proc_result r = submit(dir, addr, "p.json");
        cr_assert_eq(r.status, 0, "submit: exit %d\n%s", r.status, r.err);
        proc_result_free(&r);
        char path[4096];
        snprintf(path, sizeof path, "%s/Y.npy", dir);
        npy_data y;
        cr_assert_eq(read_npy(path, &y), 0);
        for (int k = 0; k < 40 * 30; k++)
            cr_assert_eq(y.v[k], 3 * ref_random_f64(3, (uint64_t)k), "Y element %d", k);
        npy_free(&y);
        snprintf(path, sizeof path, "%s/st.json", dir);
        json_error_t e;
        json_t *j = json_load_file(path, 0, &e);
        cr_assert_not_null(j, "stats: %s", e.text);
        const json_t *ws = json_object_get(j, "workers");
        cr_assert(json_is_array(ws));
        /* A worker that ran nothing of the job may be left out of its list. */
        long long with_tasks = -1, without_tasks = 0;
        for (size_t k = 0; k < json_array_size(ws); k++) {
            const json_t *w = json_array_get(ws, k);
            const char *name = json_string_value(json_object_get(w, "name"));
            long long t = json_integer_value(json_object_get(w, "tasks"));
            if (name && strcmp(name, "with") == 0) with_tasks = t;
            if (name && strcmp(name, "without") == 0) without_tasks = t;
        }
        /* 5 x 5 map_blocks tasks; the random chunks are made inline where they are used. */
        cr_assert_eq(with_tasks, 25, "the worker with the plugin ran %lld tasks", with_tasks);
        cr_assert_eq(without_tasks, 0, "the worker without the plugin ran %lld tasks",
                     without_tasks);
        json_decref(j);
    }

    /* What the user sees when a kernel cannot run. */
    struct {
        const char *kernel, *args, *want;
    } fails[] = {
        {"nolib:f", "[\"X\"]", "no connected worker can load the plugin library \"nolib\""},
        {"scale_add:no_such_function", "[\"X\"]", "has no function no_such_function"},
        {"scale_add:fail_on_block", "[\"X\", 1]", "refusing block 1 on purpose"},
    };
    for (size_t k = 0; k < sizeof fails / sizeof *fails; k++) {
        char prog[1024];
        snprintf(prog, sizeof prog,
                 "{\"tessera\": 1, \"arrays\": {\"X\": {\"op\": \"random\", \"shape\": [40, 30], "
                 "\"chunks\": [8, 7]}, \"F\": {\"op\": \"map_blocks\", \"args\": %s, "
                 "\"kernel\": \"%s\"}}, \"outputs\": {\"F\": \"F.npy\"}}",
                 fails[k].args, fails[k].kernel);
        write_file(dir, "f.json", prog);
        proc_result r = submit(dir, addr, "f.json");
        cr_assert_eq(r.status, 1, "%s: exit %d\n%s", fails[k].kernel, r.status, r.err);
        cr_assert(strstr(r.err, fails[k].want), "%s: stderr lacks \"%s\":\n%s", fails[k].kernel,
                  fails[k].want, r.err);
        cr_assert(strstr(r.err, "\"F\""), "%s: the array is not named:\n%s", fails[k].kernel,
                  r.err);
        if (k == 2) cr_assert(strstr(r.err, "chunk (1, "), "the chunk is not named:\n%s", r.err);
        proc_result_free(&r);
    }
    remove_tmpdir(dir);
}

/* Nothing a program says can make a worker open a file outside its plugin directories: such
 * names are refused before anything runs (exit 2, naming the file, the array and why). */
Test(plugins, names_outside_the_plugin_directories_are_refused) {
    char *dir = make_tmpdir();
    const char *bad[] = {"../x:y", "/tmp/x:y", "sub/lib:y", "..:y", "x", "lib:../y"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        char prog[512];
        snprintf(prog, sizeof prog,
                 "{\"tessera\": 1, \"arrays\": {\"X\": {\"op\": \"ones\", \"shape\": [4]}, "
                 "\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\"], \"kernel\": \"%s\"}}, "
                 "\"outputs\": {\"M\": \"-\"}}",
                 bad[k]);
        write_file(dir, "bad.json", prog);
        for (int cmd = 0; cmd < 2; cmd++) {
            const char *check[] = {"tessera", "check", "bad.json", NULL};
            const char *run[] = {"tessera",      "run",        "--no-progress", "-w", "1",
                                 "--plugin-dir", plugin_dir(), "bad.json",      NULL};
            proc_result r = run_cmd(dir, cmd ? run : check, 60);
            cr_assert_eq(r.status, 2, "%s with kernel %s: exit %d\n%s", cmd ? "run" : "check",
                         bad[k], r.status, r.err);
            cr_assert(strstr(r.err, "bad.json") && strstr(r.err, "\"M\""),
                      "the message does not name the file and the array:\n%s", r.err);
            proc_result_free(&r);
        }
    }
    remove_tmpdir(dir);
}

/* A library in the plugin directory that does not declare the plugin ABI is never called into;
 * a worker whose plugin directory does not exist does not start. */
Test(plugins, library_without_the_abi_and_missing_directory) {
    if (access("/usr/bin/cc", X_OK) != 0) cr_skip_test("no /usr/bin/cc to build a library");
    char *dir = make_tmpdir();
    write_file(dir, "notplugin.c",
               "#include <stddef.h>\n"
               "int f(const void *in, int nin, void *out, const void *info, char *e, size_t n);\n"
               "int f(const void *in, int nin, void *out, const void *info, char *e, size_t n) "
               "{ return 0; }\n");
    const char *cc[] = {"/usr/bin/cc",     "-shared",     "-fPIC", "-o",
                        "libnotplugin.so", "notplugin.c", NULL};
    proc_result r = run_cmd(dir, cc, 60);
    cr_assert_eq(r.status, 0, "cc: %s", r.err);
    proc_result_free(&r);
    write_file(dir, "p.json",
               "{\"tessera\": 1, \"arrays\": {\"X\": {\"op\": \"ones\", \"shape\": [4]}, "
               "\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\"], \"kernel\": \"notplugin:f\"}}, "
               "\"outputs\": {\"M\": \"-\"}}");
    const char *run[] = {"tessera",      "run", "--no-progress", "-w", "1",
                         "--plugin-dir", dir,   "p.json",        NULL};
    r = run_cmd(dir, run, 60);
    cr_assert_eq(r.status, 1, "exit %d\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "is not a Tessera plugin"), "%s", r.err);
    proc_result_free(&r);
    const char *worker[] = {"tessera",     "worker",       "--scheduler",
                            "127.0.0.1:1", "--plugin-dir", "/nonexistent/plugins",
                            NULL};
    r = run_cmd(dir, worker, 30);
    cr_assert_neq(r.status, 0, "a worker with a missing plugin directory started");
    cr_assert(strstr(r.err, "/nonexistent/plugins"), "%s", r.err);
    proc_result_free(&r);
    remove_tmpdir(dir);
}
