/* int64 and bool end to end, and the elementwise ops of SPEC §2's second set, through `tessera
 * run` on real local clusters: every unary op on every dtype, every binary op on every dtype pair
 * (NEP 50's promotion table), weak program-file numbers on either side, astype between all four
 * dtypes (float -> int64 of NaN/inf/out of range), int64 wrap-around (INT64_MAX + 1, sums,
 * matmul), reductions, where, clip, sources, on ragged chunk grids with broadcasting. Each output
 * .npy is compared with NumPy's own value, dtype included (dtypes_helper.py, run with
 * /usr/bin/python3 and NumPy's NEP 50 promotion), and 1 and 3 workers must write the same bytes.
 * Program errors (an op NumPy does not define on a dtype, shapes that do not broadcast) exit 2
 * naming the file, the array and the problem. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define PY "/usr/bin/python3"

TestSuite(dtypes, .timeout = 240);

static const char *helper(void) {
    const char *h = getenv("DTYPES_HELPER");
    cr_assert(h, "DTYPES_HELPER is not set");
    return h;
}

static void py(const char *dir, const char *mode, const char *a, const char *b) {
    const char *argv[] = {PY, helper(), mode, a, b, NULL};
    proc_result r = run_cmd(dir, argv, 120);
    cr_assert_eq(r.status, 0, "dtypes_helper.py %s: exit %d\n%s%s", mode, r.status, r.out, r.err);
    proc_result_free(&r);
}

static void run_prog(const char *dir, const char *workers) {
    const char *argv[] = {"tessera",   "run", "--no-progress", "--workers", workers,
                          "prog.json", NULL};
    proc_result r = run_cmd(dir, argv, 180);
    cr_assert_eq(r.status, 0, "tessera run --workers %s: exit %d\n%s", workers, r.status, r.err);
    proc_result_free(&r);
}

Test(dtypes, every_op_and_dtype_pair_matches_numpy) {
    char *d1 = make_tmpdir(), *d3 = make_tmpdir();
    py(d1, "gen", d1, NULL);
    py(d3, "gen", d3, NULL);
    run_prog(d1, "1");
    py(d1, "check", d1, NULL);
    run_prog(d3, "3");
    py(d1, "same", d1, d3); /* byte-identical whatever the placement */
    remove_tmpdir(d1);
    remove_tmpdir(d3);
}

/* Zarr stores of int64 and bool written by python3-zarr are loaded, and int64/bool outputs are
 * written as stores zarr reads back and as .npy files NumPy reads back. */
Test(dtypes, zarr_and_npy_round_trip) {
    char *d = make_tmpdir();
    py(d, "zgen", d, NULL);
    const char *argv[] = {"tessera", "run", "--no-progress", "zprog.json", NULL};
    proc_result r = run_cmd(d, argv, 120);
    cr_assert_eq(r.status, 0, "exit %d\n%s", r.status, r.err);
    proc_result_free(&r);
    py(d, "zcheck", d, NULL);
    remove_tmpdir(d);
}

typedef struct bad_case {
    const char *what, *arrays, *expect[3];
    int status;
} bad_case;

static const bad_case bad[] = {
    {"neg of bool",
     "\"b\": {\"op\": \"ones\", \"shape\": [3], \"dtype\": \"bool\"},"
     "\"y\": {\"op\": \"neg\", \"args\": [\"b\"]}",
     {"array \"y\"", "neg", "not defined for bool"},
     2},
    {"sign of bool",
     "\"b\": {\"op\": \"ones\", \"shape\": [3], \"dtype\": \"bool\"},"
     "\"y\": {\"op\": \"sign\", \"args\": [\"b\"]}",
     {"array \"y\"", "sign", "bool"},
     2},
    {"sub of bools",
     "\"b\": {\"op\": \"ones\", \"shape\": [3], \"dtype\": \"bool\"},"
     "\"y\": {\"op\": \"sub\", \"args\": [\"b\", \"b\"]}",
     {"array \"y\"", "sub", "bool and bool"},
     2},
    {"random of int64",
     "\"y\": {\"op\": \"random\", \"shape\": [3], \"dtype\": \"int64\"}",
     {"array \"y\"", "random", "int64"},
     2},
    {"bool arange",
     "\"y\": {\"op\": \"arange\", \"stop\": 3, \"dtype\": \"bool\"}",
     {"array \"y\"", "arange", "bool"},
     2},
    {"int64 arange with a fractional step",
     "\"y\": {\"op\": \"arange\", \"stop\": 3, \"step\": 0.5, \"dtype\": \"int64\"}",
     {"array \"y\"", "integral", NULL},
     2},
    {"comparison shapes",
     "\"a\": {\"op\": \"zeros\", \"shape\": [4, 3]}, \"b\": {\"op\": \"zeros\", \"shape\": [4]},"
     "\"y\": {\"op\": \"less\", \"args\": [\"a\", \"b\"]}",
     {"array \"y\"", "could not be broadcast", "(4,3) (4,)"},
     2},
    {"where shapes",
     "\"c\": {\"op\": \"ones\", \"shape\": [2], \"dtype\": \"bool\"},"
     "\"a\": {\"op\": \"zeros\", \"shape\": [3]},"
     "\"y\": {\"op\": \"where\", \"args\": [\"c\", \"a\", 1]}",
     {"array \"y\"", "could not be broadcast", "(2,) (3,)"},
     2},
    {"where condition a number",
     "\"a\": {\"op\": \"zeros\", \"shape\": [3]},"
     "\"y\": {\"op\": \"where\", \"args\": [1, \"a\", \"a\"]}",
     {"array \"y\"", "args[0]", NULL},
     2},
    {"clip without bounds",
     "\"a\": {\"op\": \"zeros\", \"shape\": [3]},"
     "\"y\": {\"op\": \"clip\", \"args\": [\"a\"], \"min\": null}",
     {"array \"y\"", "min", NULL},
     2},
    {"clip with a string bound",
     "\"a\": {\"op\": \"zeros\", \"shape\": [3]},"
     "\"y\": {\"op\": \"clip\", \"args\": [\"a\"], \"max\": \"1\"}",
     {"array \"y\"", "\"max\" must be a number", NULL},
     2},
    {"int64 to a negative int power",
     "\"a\": {\"op\": \"arange\", \"stop\": 4, \"dtype\": \"int64\"},"
     "\"y\": {\"op\": \"pow\", \"args\": [\"a\", -1]}",
     {"array \"y\"", "negative integer powers", NULL},
     2},
    /* An array exponent is only seen when the chunk is computed: the computation fails. */
    {"int64 to a negative int power, array exponent",
     "\"a\": {\"op\": \"arange\", \"start\": -2, \"stop\": 4, \"chunks\": 4, \"dtype\": "
     "\"int64\"},"
     "\"y\": {\"op\": \"pow\", \"args\": [\"a\", \"a\"]}",
     {"y", "negative integer powers", NULL},
     1},
};

Test(dtypes, program_errors_name_file_array_and_problem) {
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const bad_case *bc = &bad[i];
        char *dir = make_tmpdir();
        char prog[2048];
        snprintf(prog, sizeof prog,
                 "{\"tessera\": 1, \"arrays\": {%s}, \"outputs\": {\"y\": \"y.npy\"}}", bc->arrays);
        write_file(dir, "bad.json", prog);
        const char *argv[] = {"tessera", "run", "--no-progress", "bad.json", NULL};
        proc_result r = run_cmd(dir, argv, 60);
        cr_assert_eq(r.status, bc->status, "%s: exit %d, want %d\n%s", bc->what, r.status,
                     bc->status, r.err);
        if (bc->status == 2)
            cr_assert(strstr(r.err, "bad.json"), "%s: message lacks the file:\n%s", bc->what,
                      r.err);
        for (int k = 0; k < 3 && bc->expect[k]; k++)
            cr_assert(strstr(r.err, bc->expect[k]), "%s: message lacks \"%s\":\n%s", bc->what,
                      bc->expect[k], r.err);
        if (bc->status == 2) cr_assert_eq(dir_entries(dir), 1, "%s: a file was created", bc->what);
        proc_result_free(&r);
        remove_tmpdir(dir);
    }
}

/* `tessera check` describes the new ops like the old ones, and the result dtypes it shows are
 * NumPy 2's. */
Test(dtypes, check_prints_ops_and_dtypes) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json",
               "{\"tessera\": 1, \"arrays\": {"
               "\"a\": {\"op\": \"arange\", \"stop\": 6, \"chunks\": 4, \"dtype\": \"int64\"},"
               "\"h\": {\"op\": \"div\", \"args\": [\"a\", 2]},"
               "\"c\": {\"op\": \"greater_equal\", \"args\": [\"a\", 2.5]},"
               "\"w\": {\"op\": \"where\", \"args\": [\"c\", \"a\", 0.5]},"
               "\"k\": {\"op\": \"clip\", \"args\": [\"a\"], \"min\": 1, \"max\": 3},"
               "\"s\": {\"op\": \"sum\", \"args\": [\"c\"]}"
               "}, \"outputs\": {\"w\": \"-\", \"k\": \"-\", \"h\": \"-\", \"s\": \"-\"}}");
    const char *argv[] = {"tessera", "check", "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 60);
    cr_assert_eq(r.status, 0, "exit %d\n%s", r.status, r.err);
    const char *want[] = {"greater_equal", "where", "clip", "bool", "int64", "float64"};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        cr_assert(strstr(r.out, want[k]), "check output lacks %s:\n%s", want[k], r.out);
    proc_result_free(&r);
    const char *run[] = {"tessera", "run", "--no-progress", "p.json", NULL};
    r = run_cmd(dir, run, 60);
    cr_assert_eq(r.status, 0, "exit %d\n%s", r.status, r.err);
    /* numpy: where(a >= 2.5, a, 0.5), clip(a, 1, 3), a / 2, sum(a >= 2.5) */
    cr_assert(strstr(r.out, "w: 0.5 0.5 0.5 3 4 5\n"), "%s", r.out);
    cr_assert(strstr(r.out, "k: 1 1 2 3 3 3\n"), "%s", r.out);
    cr_assert(strstr(r.out, "h: 0 0.5 1 1.5 2 2.5\n"), "%s", r.out);
    cr_assert(strstr(r.out, "s: 3\n"), "%s", r.out);
    proc_result_free(&r);
    remove_tmpdir(dir);
}
