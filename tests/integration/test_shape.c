/* The structural operations (slice, take, concatenate, stack, reshape, squeeze, expand_dims)
 * through `tessera run` on real local clusters: every output compared with NumPy's answer for the
 * same call (shape_ref.py, /usr/bin/python3, rebuilding the inputs from SPEC §2's formula), 1 and
 * 3 workers byte-identical, the task counts `tessera check` reports for the no-copy lowerings, and
 * each bad-input class an exit 2 naming the file, the array and the problem. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define PY "/usr/bin/python3"

/* Ragged chunks on every input, negative indices and steps, float64 and float32, empty
 * results; shape_ref.py holds the NumPy expression of each output. */
static const char prog[] =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"A\": {\"op\": \"random\", \"shape\": [7, 10], \"chunks\": [3, 4], \"seed\": 1},\n"
    " \"B\": {\"op\": \"random\", \"shape\": [7, 10], \"chunks\": [2, 5], \"seed\": 2,"
    " \"dtype\": \"float32\"},\n"
    " \"V\": {\"op\": \"random\", \"shape\": [23], \"chunks\": 5, \"seed\": 3},\n"
    " \"W\": {\"op\": \"random\", \"shape\": [4, 6, 5], \"chunks\": [3, 4, 2], \"seed\": 4,"
    " \"dtype\": \"float32\"},\n"
    " \"E\": {\"op\": \"arange\", \"start\": 0, \"stop\": 12, \"chunks\": 5},\n"
    " \"s1\": {\"op\": \"slice\", \"args\": [\"A\"], \"index\": [[null, null, -1], [1, -1, 3]]},\n"
    " \"s2\": {\"op\": \"slice\", \"args\": [\"A\"], \"index\": [-2, [null, null, -2]]},\n"
    " \"s3\": {\"op\": \"slice\", \"args\": [\"B\"], \"index\": [[5, 0, -2]]},\n"
    " \"s4\": {\"op\": \"slice\", \"args\": [\"A\"], \"index\": [[2, 100], null]},\n"
    " \"s5\": {\"op\": \"slice\", \"args\": [\"A\"], \"index\": [[6, 2]]},\n"
    " \"s6\": {\"op\": \"slice\", \"args\": [\"V\"], \"index\": [[-20, null, 4]]},\n"
    " \"s7\": {\"op\": \"slice\", \"args\": [\"A\"], \"index\": [3, 4]},\n"
    " \"s8\": {\"op\": \"slice\", \"args\": [\"B\"], \"index\": [[null, null, -3], [null, null, "
    "-1]]},\n"
    " \"s9\": {\"op\": \"slice\", \"args\": [\"W\"], \"index\": [[1, null], -1, [4, 0, -3]]},\n"
    " \"s10\": {\"op\": \"slice\", \"args\": [\"V\"], \"index\": [[100, -100, -1]]},\n"
    " \"s11\": {\"op\": \"slice\", \"args\": [\"A\"], \"index\": [[null, null, "
    "9223372036854775807], [-1, null, -9223372036854775807]]},\n"
    " \"c1\": {\"op\": \"concatenate\", \"args\": [\"A\", \"A\"], \"axis\": 1},\n"
    " \"c2\": {\"op\": \"concatenate\", \"args\": [\"s3\", \"A\", \"B\"]},\n"
    " \"c3\": {\"op\": \"concatenate\", \"args\": [\"V\", \"s6\", \"V\"], \"axis\": -1},\n"
    " \"c4\": {\"op\": \"concatenate\", \"args\": [\"s5\", \"A\", \"s5\"], \"axis\": 0},\n"
    " \"k1\": {\"op\": \"stack\", \"args\": [\"A\", \"B\"], \"axis\": 1},\n"
    " \"k2\": {\"op\": \"stack\", \"args\": [\"V\", \"V\", \"V\"], \"axis\": -1},\n"
    " \"r1\": {\"op\": \"reshape\", \"args\": [\"A\"], \"shape\": [-1]},\n"
    " \"r2\": {\"op\": \"reshape\", \"args\": [\"A\"], \"shape\": [2, 35]},\n"
    " \"r3\": {\"op\": \"reshape\", \"args\": [\"B\"], \"shape\": [7, 2, 5]},\n"
    " \"r4\": {\"op\": \"reshape\", \"args\": [\"B\"], \"shape\": [70]},\n"
    " \"r5\": {\"op\": \"reshape\", \"args\": [\"r1\"], \"shape\": [5, 14]},\n"
    " \"r6\": {\"op\": \"reshape\", \"args\": [\"W\"], \"shape\": [24, 5]},\n"
    " \"r7\": {\"op\": \"reshape\", \"args\": [\"W\"], \"shape\": [2, 2, 30]},\n"
    " \"r8\": {\"op\": \"reshape\", \"args\": [\"W\"], \"shape\": [4, 1, -1, 1]},\n"
    " \"E3\": {\"op\": \"reshape\", \"args\": [\"E\"], \"shape\": [3, 2, 2]},\n"
    " \"r9\": {\"op\": \"reshape\", \"args\": [\"E3\"], \"shape\": [6, 2]},\n"
    " \"q1\": {\"op\": \"expand_dims\", \"args\": [\"A\"], \"axis\": [0, -1]},\n"
    " \"q2\": {\"op\": \"squeeze\", \"args\": [\"q1\"], \"axis\": 0},\n"
    " \"q3\": {\"op\": \"squeeze\", \"args\": [\"q1\"]},\n"
    " \"q4\": {\"op\": \"expand_dims\", \"args\": [\"V\"], \"axis\": 1}\n"
    "},\n"
    "\"outputs\": {\"s1\": \"s1.npy\", \"s2\": \"s2.npy\", \"s3\": \"s3.npy\", \"s4\": "
    "\"s4.npy\", \"s5\": \"s5.npy\", \"s6\": \"s6.npy\", \"s7\": \"s7.npy\", \"s8\": \"s8.npy\", "
    "\"s9\": \"s9.npy\", \"s10\": \"s10.npy\", \"s11\": \"s11.npy\", \"c1\": \"c1.npy\", \"c2\": "
    "\"c2.npy\", \"c3\": "
    "\"c3.npy\", \"c4\": \"c4.npy\", \"k1\": \"k1.npy\", \"k2\": \"k2.npy\", \"r1\": \"r1.npy\", "
    "\"r2\": \"r2.npy\", \"r3\": \"r3.npy\", \"r4\": \"r4.npy\", \"r5\": \"r5.npy\", \"r6\": "
    "\"r6.npy\", \"r7\": \"r7.npy\", \"r8\": \"r8.npy\", \"r9\": \"r9.npy\", \"q1\": \"q1.npy\", "
    "\"q2\": \"q2.npy\", \"q3\": \"q3.npy\", \"q4\": \"q4.npy\"}}\n";

static const char *const outputs[] = {"s1",  "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10",
                                      "s11", "c1", "c2", "c3", "c4", "k1", "k2", "r1", "r2", "r3",
                                      "r4",  "r5", "r6", "r7", "r8", "r9", "q1", "q2", "q3", "q4"};

static char *read_all(const char *dir, const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s was not written", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert(buf && fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static char *run_prog(const char *workers) {
    char *dir = make_tmpdir();
    write_file(dir, "shape.json", prog);
    const char *argv[] = {"tessera", "run", "--workers", workers, "shape.json", NULL};
    proc_result r = run_cmd(dir, argv, 120);
    cr_assert_eq(r.status, 0, "%s workers: exit %d:\n%s", workers, r.status, r.err);
    proc_result_free(&r);
    return dir;
}

Test(shape, every_op_matches_numpy_and_workers_agree, .timeout = 240) {
    const char *helper = getenv("SHAPE_REF");
    cr_assert(helper, "SHAPE_REF is not set (meson sets it)");
    const char *probe[] = {PY, "-c", "import numpy", NULL};
    proc_result pr = run_cmd(NULL, probe, 30);
    if (pr.status != 0) cr_skip_test("numpy is not installed for %s", PY);
    proc_result_free(&pr);
    char *one = run_prog("1"), *three = run_prog("3");
    for (size_t k = 0; k < sizeof outputs / sizeof *outputs; k++) {
        size_t n1, n3;
        char *b1 = read_all(one, outputs[k], &n1), *b3 = read_all(three, outputs[k], &n3);
        cr_assert(n1 == n3 && memcmp(b1, b3, n1) == 0, "%s differs between 1 and 3 workers",
                  outputs[k]);
        free(b1);
        free(b3);
    }
    const char *pa[] = {PY, helper, one, NULL};
    proc_result ref = run_cmd(NULL, pa, 60);
    cr_assert_eq(ref.status, 0, "against numpy:\n%s%s", ref.out, ref.err);
    cr_assert(strstr(ref.out, "checked 30 outputs, 0 differ"), "%s", ref.out);
    proc_result_free(&ref);
    remove_tmpdir(one);
    remove_tmpdir(three);
}

/* `tessera check`'s last line: "N tasks". */
static long check_tasks(const char *dir, const char *text) {
    write_file(dir, "t.json", text);
    const char *argv[] = {"tessera", "check", "t.json", NULL};
    proc_result r = run_cmd(dir, argv, 30);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    const char *p = strstr(r.out, " tasks");
    cr_assert(p, "%s", r.out);
    while (p > r.out && p[-1] >= '0' && p[-1] <= '9') p--;
    long n = strtol(p, NULL, 10);
    proc_result_free(&r);
    return n;
}

#define PROG(arrays, out)                                                                          \
    "{\"tessera\": 1, \"arrays\": {\"X\": {\"op\": \"random\", \"shape\": [6, 8], \"chunks\": "    \
    "[2, 8]}, \"Y\": {\"op\": \"random\", \"shape\": [6, 8], \"chunks\": [2, 8], \"seed\": "       \
    "7}, " arrays "}, \"outputs\": {\"" out "\": \"o.npy\"}}"

/* X and Y have 3 chunks each. Whole chunks with step 1 and concatenation add no task; a reshape
 * that only splits whole rows adds one cheap copy per chunk and no rechunk. */
Test(shape, no_copy_lowerings, .timeout = 60) {
    char *dir = make_tmpdir();
    cr_assert_eq(check_tasks(dir, PROG("\"S\": {\"op\": \"slice\", \"args\": [\"X\"], \"index\": "
                                       "[[2, 6]]}",
                                       "S")),
                 3 - 1);
    cr_assert_eq(check_tasks(dir, PROG("\"S\": {\"op\": \"slice\", \"args\": [\"X\"], \"index\": "
                                       "[[2, null], [null, 8, 1]]}",
                                       "S")),
                 2);
    /* A part of a chunk: one copy task per output chunk on top of its source chunk. */
    cr_assert_eq(check_tasks(dir, PROG("\"S\": {\"op\": \"slice\", \"args\": [\"X\"], \"index\": "
                                       "[[1, 6]]}",
                                       "S")),
                 3 + 1);
    cr_assert_eq(check_tasks(dir, PROG("\"C\": {\"op\": \"concatenate\", \"args\": [\"X\", \"Y\", "
                                       "\"X\"]}",
                                       "C")),
                 6);
    cr_assert_eq(check_tasks(dir, PROG("\"C\": {\"op\": \"concatenate\", \"args\": [\"X\", "
                                       "\"Y\"], \"axis\": 1}",
                                       "C")),
                 6);
    cr_assert_eq(check_tasks(dir, PROG("\"R\": {\"op\": \"reshape\", \"args\": [\"X\"], \"shape\": "
                                       "[6, 2, 4]}",
                                       "R")),
                 3 + 3);
    cr_assert_eq(check_tasks(dir, PROG("\"R\": {\"op\": \"reshape\", \"args\": [\"X\"], \"shape\": "
                                       "[6, 8]}",
                                       "R")),
                 3);
    /* stack: one expand_dims copy per operand chunk; the concatenation adds none. */
    cr_assert_eq(
        check_tasks(dir, PROG("\"K\": {\"op\": \"stack\", \"args\": [\"X\", \"Y\"]}", "K")), 6 + 6);
    remove_tmpdir(dir);
}

/* Each bad input: `tessera check` exits 2 naming the file, the array and the problem. */
static void bad(const char *dir, const char *def, const char *problem) {
    char text[1024];
    snprintf(text, sizeof text,
             "{\"tessera\": 1, \"arrays\": {\"X\": {\"op\": \"zeros\", \"shape\": [4, 5], "
             "\"chunks\": 2}, \"Y\": {\"op\": \"zeros\", \"shape\": [3, 6]}, \"bad\": %s}, "
             "\"outputs\": {\"bad\": \"o.npy\"}}",
             def);
    write_file(dir, "bad.json", text);
    const char *argv[] = {"tessera", "check", "bad.json", NULL};
    proc_result r = run_cmd(dir, argv, 30);
    cr_assert_eq(r.status, 2, "%s: exit %d:\n%s", def, r.status, r.err);
    cr_assert(strstr(r.err, "bad.json") && strstr(r.err, "\"bad\"") && strstr(r.err, problem),
              "%s: want \"%s\" in:\n%s", def, problem, r.err);
    proc_result_free(&r);
}

Test(shape, bad_inputs_exit_2, .timeout = 120) {
    char *dir = make_tmpdir();
    bad(dir, "{\"op\": \"slice\", \"args\": [\"X\"], \"index\": [4]}",
        "index 4 is out of bounds for axis 0 with size 4");
    bad(dir, "{\"op\": \"slice\", \"args\": [\"X\"], \"index\": [0, -6]}",
        "index -6 is out of bounds for axis 1 with size 5");
    bad(dir, "{\"op\": \"slice\", \"args\": [\"X\"], \"index\": [[0, 3, 0]]}",
        "step cannot be zero");
    bad(dir, "{\"op\": \"slice\", \"args\": [\"X\"], \"index\": [0, 0, 0]}", "too many indices");
    bad(dir, "{\"op\": \"slice\", \"args\": [\"X\"], \"index\": [[0, 1.5]]}", "\"index\"[0]");
    bad(dir, "{\"op\": \"slice\", \"args\": [\"X\"]}", "needs \"index\"");
    bad(dir, "{\"op\": \"concatenate\", \"args\": [\"X\", \"Y\"]}",
        "along dimension 1, the array at index 0 (X) has size 5 and the array at index 1 (Y) "
        "has size 6");
    bad(dir, "{\"op\": \"concatenate\", \"args\": [\"X\", \"X\"], \"axis\": 2}",
        "axis 2 is out of bounds for array of dimension 2");
    bad(dir, "{\"op\": \"concatenate\", \"args\": [\"X\", \"X\"], \"axis\": [0]}",
        "\"axis\" must be an integer");
    bad(dir, "{\"op\": \"concatenate\", \"args\": []}", "at least one argument");
    bad(dir, "{\"op\": \"stack\", \"args\": [\"X\", \"Y\"]}", "must have the same shape");
    bad(dir, "{\"op\": \"stack\", \"args\": [\"X\", \"X\"], \"axis\": -4}",
        "axis -4 is out of bounds for array of dimension 3");
    bad(dir, "{\"op\": \"reshape\", \"args\": [\"X\"], \"shape\": [3, 7]}",
        "cannot reshape array of size 20 into shape (3,7)");
    bad(dir, "{\"op\": \"reshape\", \"args\": [\"X\"], \"shape\": [-1, 3]}",
        "cannot reshape array of size 20 into shape (-1,3)");
    bad(dir, "{\"op\": \"reshape\", \"args\": [\"X\"], \"shape\": [-1, -1]}",
        "one unknown dimension");
    bad(dir, "{\"op\": \"reshape\", \"args\": [\"X\"], \"shape\": [-2, 10]}", "\"shape\"[0]");
    bad(dir, "{\"op\": \"squeeze\", \"args\": [\"X\"], \"axis\": 1}",
        "cannot select an axis to squeeze out which has size not equal to one");
    bad(dir, "{\"op\": \"squeeze\", \"args\": [\"X\"], \"axis\": -3}",
        "axis -3 is out of bounds for array of dimension 2");
    bad(dir, "{\"op\": \"expand_dims\", \"args\": [\"X\"], \"axis\": 3}",
        "axis 3 is out of bounds for array of dimension 3");
    bad(dir, "{\"op\": \"expand_dims\", \"args\": [\"X\"], \"axis\": [1, -3]}", "repeated axis");
    bad(dir, "{\"op\": \"expand_dims\", \"args\": [\"X\"]}", "needs \"axis\"");
    bad(dir, "{\"op\": \"take\", \"args\": [\"X\", \"X\"], \"axis\": 0}",
        "must be a 1-d int64 array");
    remove_tmpdir(dir);
}

/* take with int64 indices loaded from a '<i8' .npy (written by numpy): along an axis, from the
 * flattened array, float32; 1 and 3 workers alike; an index out of range fails the run (exit 1)
 * naming the array and the index. */
static const char take_prog[] =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"X\": {\"op\": \"random\", \"shape\": [4, 6], \"chunks\": [3, 4], \"seed\": 5},\n"
    " \"Y\": {\"op\": \"random\", \"shape\": [6, 3], \"chunks\": [4, 2], \"seed\": 6,"
    " \"dtype\": \"float32\"},\n"
    " \"I\": {\"op\": \"load\", \"path\": \"idx.npy\", \"chunks\": 3},\n"
    " \"t1\": {\"op\": \"take\", \"args\": [\"X\", \"I\"], \"axis\": 1},\n"
    " \"t2\": {\"op\": \"take\", \"args\": [\"X\", \"I\"]},\n"
    " \"t3\": {\"op\": \"take\", \"args\": [\"Y\", \"I\"], \"axis\": -2}\n"
    "},\n"
    "\"outputs\": {\"t1\": \"t1.npy\", \"t2\": \"t2.npy\", \"t3\": \"t3.npy\"}}\n";

/* int64 and bool operands: slices with negative steps, concatenation (bool promoted to int64),
 * stack, take, squeeze/expand_dims/reshape; 1 and 3 workers alike, and equal to NumPy's. */
static const char ints_prog[] =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"N\": {\"op\": \"arange\", \"start\": 0, \"stop\": 24, \"chunks\": 5, \"dtype\": "
    "\"int64\"},\n"
    " \"M\": {\"op\": \"reshape\", \"args\": [\"N\"], \"shape\": [4, 6]},\n"
    " \"B\": {\"op\": \"less\", \"args\": [\"M\", 11]},\n"
    " \"I\": {\"op\": \"load\", \"path\": \"idx.npy\", \"chunks\": 3},\n"
    " \"i1\": {\"op\": \"slice\", \"args\": [\"M\"], \"index\": [[null, null, -1], [5, 0, "
    "-2]]},\n"
    " \"i2\": {\"op\": \"slice\", \"args\": [\"B\"], \"index\": [[1, 3], [null, null, 3]]},\n"
    " \"i3\": {\"op\": \"concatenate\", \"args\": [\"B\", \"M\"], \"axis\": 1},\n"
    " \"i4\": {\"op\": \"stack\", \"args\": [\"B\", \"B\"], \"axis\": -1},\n"
    " \"i5\": {\"op\": \"take\", \"args\": [\"B\", \"I\"], \"axis\": 1},\n"
    " \"E\": {\"op\": \"expand_dims\", \"args\": [\"M\"], \"axis\": 0},\n"
    " \"Q\": {\"op\": \"squeeze\", \"args\": [\"E\"]},\n"
    " \"i6\": {\"op\": \"reshape\", \"args\": [\"Q\"], \"shape\": [3, 8]}\n"
    "},\n"
    "\"outputs\": {\"i1\": \"i1.npy\", \"i2\": \"i2.npy\", \"i3\": \"i3.npy\", \"i4\": "
    "\"i4.npy\", \"i5\": \"i5.npy\", \"i6\": \"i6.npy\"}}\n";

Test(shape, int64_and_bool_match_numpy, .timeout = 240) {
    const char *helper = getenv("SHAPE_REF");
    cr_assert(helper, "SHAPE_REF is not set (meson sets it)");
    const char *probe[] = {PY, "-c", "import numpy", NULL};
    proc_result pr = run_cmd(NULL, probe, 30);
    if (pr.status != 0) cr_skip_test("numpy is not installed for %s", PY);
    proc_result_free(&pr);
    char *dirs[2];
    const char *workers[2] = {"1", "3"};
    for (int k = 0; k < 2; k++) {
        dirs[k] = make_tmpdir();
        const char *wa[] = {PY, helper, "take-inputs", dirs[k], NULL};
        proc_result w = run_cmd(NULL, wa, 60);
        cr_assert_eq(w.status, 0, "%s", w.err);
        proc_result_free(&w);
        write_file(dirs[k], "ints.json", ints_prog);
        const char *argv[] = {"tessera", "run", "--workers", workers[k], "ints.json", NULL};
        proc_result r = run_cmd(dirs[k], argv, 120);
        cr_assert_eq(r.status, 0, "%s workers: exit %d:\n%s", workers[k], r.status, r.err);
        proc_result_free(&r);
    }
    const char *names[] = {"i1", "i2", "i3", "i4", "i5", "i6"};
    for (size_t k = 0; k < 6; k++) {
        size_t n1, n3;
        char *b1 = read_all(dirs[0], names[k], &n1), *b3 = read_all(dirs[1], names[k], &n3);
        cr_assert(n1 == n3 && memcmp(b1, b3, n1) == 0, "%s differs between 1 and 3 workers",
                  names[k]);
        free(b1);
        free(b3);
    }
    const char *pa[] = {PY, helper, "ints", dirs[0], NULL};
    proc_result ref = run_cmd(NULL, pa, 60);
    cr_assert_eq(ref.status, 0, "against numpy:\n%s%s", ref.out, ref.err);
    proc_result_free(&ref);
    remove_tmpdir(dirs[0]);
    remove_tmpdir(dirs[1]);
}

Test(shape, take_matches_numpy_and_fails_on_bad_indices, .timeout = 240) {
    const char *helper = getenv("SHAPE_REF");
    cr_assert(helper, "SHAPE_REF is not set (meson sets it)");
    const char *probe[] = {PY, "-c", "import numpy", NULL};
    proc_result pr = run_cmd(NULL, probe, 30);
    if (pr.status != 0) cr_skip_test("numpy is not installed for %s", PY);
    proc_result_free(&pr);
    char *dirs[2];
    const char *workers[2] = {"1", "3"};
    for (int k = 0; k < 2; k++) {
        dirs[k] = make_tmpdir();
        const char *wa[] = {PY, helper, "take-inputs", dirs[k], NULL};
        proc_result w = run_cmd(NULL, wa, 60);
        cr_assert_eq(w.status, 0, "%s", w.err);
        proc_result_free(&w);
        write_file(dirs[k], "take.json", take_prog);
        const char *argv[] = {"tessera", "run", "--workers", workers[k], "take.json", NULL};
        proc_result r = run_cmd(dirs[k], argv, 120);
        cr_assert_eq(r.status, 0, "%s workers: exit %d:\n%s", workers[k], r.status, r.err);
        proc_result_free(&r);
    }
    const char *names[] = {"t1", "t2", "t3"};
    for (size_t k = 0; k < 3; k++) {
        size_t n1, n3;
        char *b1 = read_all(dirs[0], names[k], &n1), *b3 = read_all(dirs[1], names[k], &n3);
        cr_assert(n1 == n3 && memcmp(b1, b3, n1) == 0, "%s differs between 1 and 3 workers",
                  names[k]);
        free(b1);
        free(b3);
    }
    const char *pa[] = {PY, helper, "take", dirs[0], NULL};
    proc_result ref = run_cmd(NULL, pa, 60);
    cr_assert_eq(ref.status, 0, "against numpy:\n%s%s", ref.out, ref.err);
    proc_result_free(&ref);
    /* Indices 2x as large: 10 is out of range for an axis of 6; the run fails naming t1. */
    char bad[sizeof take_prog + 16];
    snprintf(bad, sizeof bad, "%s", take_prog);
    char *p = strstr(bad, "idx.npy");
    memcpy(p, "bad.npy", 7);
    write_file(dirs[0], "bad.json", bad);
    const char *argv[] = {"tessera", "run", "--workers", "2", "bad.json", NULL};
    proc_result r = run_cmd(dirs[0], argv, 120);
    cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "is out of bounds for axis") && strstr(r.err, "\"t"), "%s", r.err);
    proc_result_free(&r);
    remove_tmpdir(dirs[0]);
    remove_tmpdir(dirs[1]);
}
