/* tensordot, N-d matmul, normal and eye through the real `tessera run`, against numpy
 * (linalg_ref.py rebuilds the inputs from SPEC §2's random formula; /usr/bin/python3): ragged
 * chunks, rechunked operands, batch broadcasting, 1-d operands, negative axes, both float dtypes
 * and their promotion, a k-chain long enough to be split into several grouped tasks. 1 and 3
 * workers, and a fake-GPU worker, give byte-identical files (SPEC Determinism). Invalid programs
 * exit 2 naming the file, the array and the problem. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define PY "/usr/bin/python3"

static const char prog[] =
    "{\"tessera\": 1, \"arrays\": {"
    "\"A\": {\"op\": \"random\", \"shape\": [5, 7, 6], \"chunks\": [2, 3, 4], \"seed\": 1},"
    "\"B\": {\"op\": \"random\", \"shape\": [6, 7, 4], \"chunks\": [5, 2, 3], \"seed\": 2},"
    "\"T1\": {\"op\": \"tensordot\", \"args\": [\"A\", \"B\"], \"axes\": [[1, 2], [1, 0]]},"
    "\"C\": {\"op\": \"random\", \"shape\": [4, 6], \"chunks\": [3, 4], \"seed\": 3, "
    "\"dtype\": \"float32\"},"
    "\"D\": {\"op\": \"random\", \"shape\": [6, 3, 5], \"chunks\": [4, 2, 3], \"seed\": 4},"
    "\"T2\": {\"op\": \"tensordot\", \"args\": [\"C\", \"D\"], \"axes\": [[-1], [0]]},"
    "\"E\": {\"op\": \"random\", \"shape\": [3], \"chunks\": 2, \"seed\": 5},"
    "\"F\": {\"op\": \"random\", \"shape\": [2, 2], \"chunks\": 1, \"seed\": 6},"
    "\"T3\": {\"op\": \"tensordot\", \"args\": [\"E\", \"F\"], \"axes\": 0},"
    "\"G\": {\"op\": \"random\", \"shape\": [3, 4, 5], \"chunks\": [2, 3, 2], \"seed\": 7, "
    "\"dtype\": \"float32\"},"
    "\"H\": {\"op\": \"random\", \"shape\": [4, 5, 2], \"chunks\": [2, 4, 1], \"seed\": 8, "
    "\"dtype\": \"float32\"},"
    "\"T4\": {\"op\": \"tensordot\", \"args\": [\"G\", \"H\"]},"
    "\"X\": {\"op\": \"random\", \"shape\": [3, 1, 4, 5], \"chunks\": [2, 1, 3, 2], \"seed\": 9},"
    "\"Y\": {\"op\": \"random\", \"shape\": [2, 5, 3], \"chunks\": [1, 4, 2], \"seed\": 10},"
    "\"M1\": {\"op\": \"matmul\", \"args\": [\"X\", \"Y\"]},"
    "\"v\": {\"op\": \"random\", \"shape\": [7], \"chunks\": 3, \"seed\": 11},"
    "\"W\": {\"op\": \"random\", \"shape\": [7, 5], \"chunks\": [2, 2], \"seed\": 12},"
    "\"M2\": {\"op\": \"matmul\", \"args\": [\"v\", \"W\"]},"
    "\"P\": {\"op\": \"random\", \"shape\": [2, 3, 7], \"chunks\": [1, 2, 4], \"seed\": 13},"
    "\"M3\": {\"op\": \"matmul\", \"args\": [\"P\", \"v\"]},"
    "\"M4\": {\"op\": \"matmul\", \"args\": [\"v\", \"v\"]},"
    "\"Q\": {\"op\": \"random\", \"shape\": [2, 3, 4], \"chunks\": [2, 2, 3], \"seed\": 14, "
    "\"dtype\": \"float32\"},"
    "\"R\": {\"op\": \"random\", \"shape\": [4, 2], \"chunks\": [3, 1], \"seed\": 15, "
    "\"dtype\": \"float32\"},"
    "\"M5\": {\"op\": \"matmul\", \"args\": [\"Q\", \"R\"]},"
    "\"K1\": {\"op\": \"random\", \"shape\": [2, 100, 1000], \"chunks\": [1, 100, 25], "
    "\"seed\": 16},"
    "\"K2\": {\"op\": \"random\", \"shape\": [1000, 100], \"chunks\": [25, 100], \"seed\": 17},"
    "\"M6\": {\"op\": \"matmul\", \"args\": [\"K1\", \"K2\"]},"
    "\"W2\": {\"op\": \"random\", \"shape\": [4, 5], \"chunks\": [3, 2], \"seed\": 18},"
    "\"Z\": {\"op\": \"random\", \"shape\": [3, 5, 6], \"chunks\": [2, 3, 4], \"seed\": 19},"
    "\"M7\": {\"op\": \"matmul\", \"args\": [\"W2\", \"Z\"]},"
    "\"N1\": {\"op\": \"normal\", \"shape\": [3, 5, 7], \"chunks\": [2, 3, 4], \"seed\": 7, "
    "\"loc\": 1, \"scale\": 2},"
    "\"N2\": {\"op\": \"normal\", \"shape\": [10], \"chunks\": 3, \"seed\": 12345678901234, "
    "\"dtype\": \"float32\"},"
    "\"E1\": {\"op\": \"eye\", \"n\": 5, \"m\": 7, \"k\": 2, \"chunks\": [2, 3]},"
    "\"E2\": {\"op\": \"eye\", \"n\": 6, \"m\": null, \"k\": -1, \"chunks\": 4, \"dtype\": "
    "\"float32\"},"
    "\"E3\": {\"op\": \"eye\", \"n\": 4, \"m\": 3, \"k\": 10},"
    "\"R1\": {\"op\": \"random\", \"shape\": [4, 5, 3], \"chunks\": [3, 2, 2], \"seed\": 20},"
    "\"R2\": {\"op\": \"random\", \"shape\": [5, 2], \"chunks\": [3, 1], \"seed\": 21},"
    "\"S1\": {\"op\": \"mul\", \"args\": [\"R1\", 1000]},"
    "\"S2\": {\"op\": \"mul\", \"args\": [\"R2\", 1000]},"
    "\"J1\": {\"op\": \"astype\", \"args\": [\"S1\"], \"dtype\": \"int64\"},"
    "\"J2\": {\"op\": \"astype\", \"args\": [\"S2\"], \"dtype\": \"int64\"},"
    "\"I1\": {\"op\": \"tensordot\", \"args\": [\"J1\", \"J2\"], \"axes\": [[1], [0]]},"
    "\"H1\": {\"op\": \"full\", \"shape\": [2, 3, 4], \"chunks\": 2, \"value\": 3037000500, "
    "\"dtype\": \"int64\"},"
    "\"H2\": {\"op\": \"full\", \"shape\": [4, 2], \"chunks\": 3, \"value\": 3037000500, "
    "\"dtype\": \"int64\"},"
    "\"I2\": {\"op\": \"matmul\", \"args\": [\"H1\", \"H2\"]},"
    "\"I3\": {\"op\": \"tensordot\", \"args\": [\"J1\", \"C\"], \"axes\": [[0], [0]]},"
    "\"R3\": {\"op\": \"random\", \"shape\": [2, 3, 4], \"chunks\": [1, 2, 3], \"seed\": 22},"
    "\"R4\": {\"op\": \"random\", \"shape\": [4, 5], \"chunks\": [3, 2], \"seed\": 23},"
    "\"L1\": {\"op\": \"less\", \"args\": [\"R3\", 0.3]},"
    "\"L2\": {\"op\": \"less\", \"args\": [\"R4\", 0.3]},"
    "\"B1\": {\"op\": \"matmul\", \"args\": [\"L1\", \"L2\"]}"
    "}, \"outputs\": {\"T1\": \"T1.npy\", \"T2\": \"T2.npy\", \"T3\": \"T3.npy\", "
    "\"T4\": \"T4.npy\", \"M1\": \"M1.npy\", \"M2\": \"M2.npy\", \"M3\": \"M3.npy\", "
    "\"M4\": \"M4.npy\", \"M5\": \"M5.npy\", \"M6\": \"M6.npy\", \"M7\": \"M7.npy\", \"N1\": "
    "\"N1.npy\", "
    "\"N2\": \"N2.npy\", \"E1\": \"E1.npy\", \"E2\": \"E2.npy\", \"E3\": \"E3.npy\", "
    "\"I1\": \"I1.npy\", \"I2\": \"I2.npy\", \"I3\": \"I3.npy\", \"B1\": \"B1.npy\"}}";

static const char *const outs[] = {"T1", "T2", "T3", "T4", "M1", "M2", "M3", "M4", "M5", "M6",
                                   "M7", "N1", "N2", "E1", "E2", "E3", "I1", "I2", "I3", "B1"};

static char *slurp(const char *dir, const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s missing", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert(buf && fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

Test(linalg, matches_numpy_and_workers_agree_bitwise, .timeout = 240) {
    /* 1 CPU worker, 3 CPU workers, and a GPU worker alone on the fake device with room for a
     * few chunks only (its kernels are the CPU ones; these families run on its host thread). */
    char *dir[3] = {make_tmpdir(), make_tmpdir(), make_tmpdir()};
    const char *const runs[3][7] = {
        {"tessera", "run", "--workers", "1", "p.json", NULL},
        {"tessera", "run", "--workers", "3", "p.json", NULL},
        {"tessera", "run", "--workers", "0", "--gpus", "0", "p.json"},
    };
    for (int k = 0; k < 3; k++) {
        write_file(dir[k], "p.json", prog);
        if (k == 2) {
            setenv("TESSERA_FAKE_GPU", "1", 1);
            setenv("TESSERA_FAKE_GPU_MEMORY", "4096", 1);
        }
        const char *argv[8] = {NULL};
        memcpy(argv, runs[k], sizeof runs[k]);
        proc_result r = run_cmd(dir[k], argv, 120);
        unsetenv("TESSERA_FAKE_GPU");
        unsetenv("TESSERA_FAKE_GPU_MEMORY");
        cr_assert_eq(r.status, 0, "run %d: exit %d:\n%s", k, r.status, r.err);
        proc_result_free(&r);
    }
    for (size_t j = 0; j < sizeof outs / sizeof outs[0]; j++)
        for (int k = 1; k < 3; k++) {
            size_t n0, n1;
            char *a = slurp(dir[0], outs[j], &n0), *b = slurp(dir[k], outs[j], &n1);
            cr_assert(n0 == n1 && memcmp(a, b, n0) == 0, "%s differs between runs 0 and %d",
                      outs[j], k);
            free(a);
            free(b);
        }
    const char *pa[] = {PY, TSR_SOURCE_DIR "/linalg_ref.py", NULL};
    proc_result ref = run_cmd(dir[0], pa, 120);
    if (ref.status != 0 && strstr(ref.err, "No module named"))
        cr_skip_test("numpy is not installed for %s", PY);
    cr_assert_eq(ref.status, 0, "numpy disagrees:\n%s%s", ref.out, ref.err);
    cr_assert(strstr(ref.out, "ok"), "%s", ref.out);
    proc_result_free(&ref);
    for (int k = 0; k < 3; k++) remove_tmpdir(dir[k]);
}

/* `tessera check` prints the new ops and the task count. */
Test(linalg, check_prints_ops_and_tasks, .timeout = 60) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", prog);
    const char *argv[] = {"tessera", "check", "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 30);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    const char *want[] = {"T1: tensordot shape=(5, 4)",
                          "M1: matmul shape=(3, 2, 4, 3)",
                          "M2: matmul shape=(5,)",
                          "M4: matmul shape=()",
                          "N2: normal shape=(10,) dtype=float32",
                          "E1: eye shape=(5, 7)",
                          " tasks"};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        cr_assert(strstr(r.out, want[k]), "missing \"%s\" in:\n%s", want[k], r.out);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

/* Each bad definition: `tessera check` exits 2 naming the file, the array and the problem. */
Test(linalg, invalid_programs_exit_2, .timeout = 120) {
    static const struct {
        const char *defs, *needle;
    } cases[] = {
        {"\"x\": {\"op\": \"tensordot\", \"args\": [\"A\", \"B\"], \"axes\": [[0], [0]]}",
         "got 5 and 6"},
        {"\"x\": {\"op\": \"tensordot\", \"args\": [\"A\", \"B\"], \"axes\": [[3], [0]]}",
         "out of range"},
        {"\"x\": {\"op\": \"tensordot\", \"args\": [\"A\", \"B\"], \"axes\": [[2, -1], [0, 0]]}",
         "repeated"},
        {"\"x\": {\"op\": \"tensordot\", \"args\": [\"A\", \"B\"], \"axes\": [[2], [0, 1]]}",
         "same length"},
        {"\"x\": {\"op\": \"tensordot\", \"args\": [\"A\", \"B\"], \"axes\": 4}", "4 axes"},
        {"\"x\": {\"op\": \"matmul\", \"args\": [\"S\", \"U\"]}", "do not broadcast"},
        {"\"x\": {\"op\": \"matmul\", \"args\": [\"A\", \"A\"]}", "got 6 and 7"},
        {"\"x\": {\"op\": \"normal\", \"shape\": [3], \"dtype\": \"int64\"}", "float"},
        {"\"x\": {\"op\": \"eye\", \"n\": 3, \"dtype\": \"int64\"}", "float"},
        {"\"x\": {\"op\": \"eye\", \"n\": -1}", ">= 0"},
        {"\"x\": {\"op\": \"eye\", \"n\": 3, \"m\": -2}", ">= 0"},
        {"\"x\": {\"op\": \"eye\", \"n\": 3, \"k\": 0.5}", "integer"},
        {"\"x\": {\"op\": \"eye\", \"n\": 3, \"chunks\": [1, 2, 3]}", "chunks"},
    };
    char *dir = make_tmpdir();
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char text[1024];
        snprintf(text, sizeof text,
                 "{\"tessera\": 1, \"arrays\": {"
                 "\"A\": {\"op\": \"random\", \"shape\": [5, 7, 6], \"chunks\": 3},"
                 "\"B\": {\"op\": \"random\", \"shape\": [6, 7, 4], \"chunks\": 3},"
                 "\"S\": {\"op\": \"random\", \"shape\": [3, 2, 4], \"chunks\": 3},"
                 "\"U\": {\"op\": \"random\", \"shape\": [2, 4, 5], \"chunks\": 3}, %s}, "
                 "\"outputs\": {\"x\": \"x.npy\"}}",
                 cases[k].defs);
        write_file(dir, "bad.json", text);
        const char *argv[] = {"tessera", "check", "bad.json", NULL};
        proc_result r = run_cmd(dir, argv, 30);
        cr_assert_eq(r.status, 2, "case %zu: exit %d:\n%s", k, r.status, r.err);
        cr_assert(strstr(r.err, "bad.json") && strstr(r.err, "\"x\"") &&
                      strstr(r.err, cases[k].needle),
                  "case %zu: \"%s\" lacks \"%s\"", k, r.err, cases[k].needle);
        proc_result_free(&r);
    }
    remove_tmpdir(dir);
}
