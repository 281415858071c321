/* Issue 13's reductions and scans through `tessera run` on real local clusters: prod, any, all,
 * var, std (ddof), argmax, argmin (ties, NaNs, flat and per axis), keepdims on every reduction,
 * cumsum and cumprod (per axis and flattened, across ragged chunks), in float64 and float32.
 * Every output is compared with numpy (/usr/bin/python3) rebuilding the inputs from SPEC §2's
 * random formula: bitwise where NumPy's loop is the same (argmax/argmin, any/all, cumsum/cumprod,
 * max/min), within a relative tolerance for sums, products and moments (whose summation orders
 * differ from NumPy's pairwise ones). Outputs of 1 and 3 workers, and of a CPU worker beside a
 * GPU worker on the fake device, are byte-identical. The program file errors exit 2 naming the
 * file, the array and the problem. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define PY "/usr/bin/python3"

TestSuite(reductions, .timeout = 240);

/* Ragged chunks everywhere; D has 6 x 4 chunks, so a full reduction combines 24 partials in a
 * two-level tree. N has NaNs (sqrt of negatives), T ties (maximum with 0.7). */
static const char prog[] =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"A\": {\"op\": \"random\", \"shape\": [7, 5], \"chunks\": [3, 2], \"seed\": 1},\n"
    " \"B\": {\"op\": \"random\", \"shape\": [4, 6, 5], \"chunks\": [3, 4, 2], \"seed\": 2,"
    " \"dtype\": \"float32\"},\n"
    " \"C\": {\"op\": \"random\", \"shape\": [10], \"chunks\": 3, \"seed\": 3},\n"
    " \"D\": {\"op\": \"random\", \"shape\": [40, 30], \"chunks\": [7, 8], \"seed\": 4},\n"
    " \"As\": {\"op\": \"sub\", \"args\": [\"A\", 0.3]},\n"
    " \"N\": {\"op\": \"sqrt\", \"args\": [\"As\"]},\n"
    " \"T\": {\"op\": \"maximum\", \"args\": [\"A\", 0.7]},\n"
    " \"Ps\": {\"op\": \"sub\", \"args\": [\"A\", 0.8]},\n"
    " \"P\": {\"op\": \"maximum\", \"args\": [\"Ps\", 0]},\n"
    " \"Qs\": {\"op\": \"sub\", \"args\": [\"B\", 0.1]},\n"
    " \"S\": {\"op\": \"mul\", \"args\": [\"A\", 2000000]},\n"
    " \"I\": {\"op\": \"astype\", \"args\": [\"S\"], \"dtype\": \"int64\"},\n"
    " \"Bl\": {\"op\": \"greater\", \"args\": [\"A\", 0.5]},\n"
    " \"pI\": {\"op\": \"prod\", \"args\": [\"I\"], \"axis\": 0},\n"
    " \"pB\": {\"op\": \"prod\", \"args\": [\"Bl\"], \"axis\": 1},\n"
    " \"aI\": {\"op\": \"any\", \"args\": [\"I\"], \"axis\": 0},\n"
    " \"lB\": {\"op\": \"all\", \"args\": [\"Bl\"], \"axis\": 1},\n"
    " \"vI\": {\"op\": \"var\", \"args\": [\"I\"], \"axis\": 0, \"ddof\": 1},\n"
    " \"sB\": {\"op\": \"std\", \"args\": [\"Bl\"]},\n"
    " \"mI\": {\"op\": \"argmax\", \"args\": [\"I\"], \"axis\": 0},\n"
    " \"nB\": {\"op\": \"argmin\", \"args\": [\"Bl\"]},\n"
    " \"cI\": {\"op\": \"cumsum\", \"args\": [\"I\"], \"axis\": 1},\n"
    " \"cB\": {\"op\": \"cumsum\", \"args\": [\"Bl\"]},\n"
    " \"qI\": {\"op\": \"cumprod\", \"args\": [\"I\"], \"axis\": 0},\n"
    " \"kB\": {\"op\": \"sum\", \"args\": [\"Bl\"], \"axis\": 0, \"keepdims\": true},\n"
    " \"kI\": {\"op\": \"max\", \"args\": [\"I\"], \"axis\": 1, \"keepdims\": true},\n"
    " \"Q\": {\"op\": \"maximum\", \"args\": [\"Qs\", 0]},\n"
    " \"sum_k\": {\"op\": \"sum\", \"args\": [\"A\"], \"axis\": 0, \"keepdims\": true},\n"
    " \"mean_k\": {\"op\": \"mean\", \"args\": [\"B\"], \"axis\": [0, 2], \"keepdims\": true},\n"
    " \"max_k\": {\"op\": \"max\", \"args\": [\"B\"], \"axis\": null, \"keepdims\": true},\n"
    " \"min_k\": {\"op\": \"min\", \"args\": [\"A\"], \"axis\": -1, \"keepdims\": true},\n"
    " \"prod0\": {\"op\": \"prod\", \"args\": [\"A\"], \"axis\": 0},\n"
    " \"prod_all\": {\"op\": \"prod\", \"args\": [\"B\"]},\n"
    " \"prod_k\": {\"op\": \"prod\", \"args\": [\"C\"], \"keepdims\": true},\n"
    " \"any1\": {\"op\": \"any\", \"args\": [\"P\"], \"axis\": 1},\n"
    " \"any_all\": {\"op\": \"any\", \"args\": [\"P\"], \"axis\": null},\n"
    " \"all02\": {\"op\": \"all\", \"args\": [\"Q\"], \"axis\": [0, 2]},\n"
    " \"all_k\": {\"op\": \"all\", \"args\": [\"Q\"], \"axis\": 1, \"keepdims\": true},\n"
    " \"var0\": {\"op\": \"var\", \"args\": [\"D\"], \"axis\": 0},\n"
    " \"var_all\": {\"op\": \"var\", \"args\": [\"D\"]},\n"
    " \"std1\": {\"op\": \"std\", \"args\": [\"D\"], \"axis\": -1, \"ddof\": 1},\n"
    " \"var32\": {\"op\": \"var\", \"args\": [\"B\"], \"axis\": 1},\n"
    " \"std_k\": {\"op\": \"std\", \"args\": [\"B\"], \"axis\": [0, 2], \"keepdims\": true,"
    " \"ddof\": 2},\n"
    " \"var_dd\": {\"op\": \"var\", \"args\": [\"A\"], \"axis\": 0, \"ddof\": 9},\n"
    " \"amax\": {\"op\": \"argmax\", \"args\": [\"D\"], \"axis\": null},\n"
    " \"amin0\": {\"op\": \"argmin\", \"args\": [\"D\"], \"axis\": 0},\n"
    " \"amax_nan\": {\"op\": \"argmax\", \"args\": [\"N\"], \"axis\": 1},\n"
    " \"amin_nan0\": {\"op\": \"argmin\", \"args\": [\"N\"], \"axis\": 0},\n"
    " \"amax_nanf\": {\"op\": \"argmax\", \"args\": [\"N\"]},\n"
    " \"amin_tie\": {\"op\": \"argmin\", \"args\": [\"T\"], \"axis\": -2},\n"
    " \"amin_tief\": {\"op\": \"argmin\", \"args\": [\"T\"]},\n"
    " \"amax_k\": {\"op\": \"argmax\", \"args\": [\"B\"], \"axis\": -1, \"keepdims\": true},\n"
    " \"amax32\": {\"op\": \"argmax\", \"args\": [\"B\"]},\n"
    " \"cs0\": {\"op\": \"cumsum\", \"args\": [\"A\"], \"axis\": 0},\n"
    " \"cs1\": {\"op\": \"cumsum\", \"args\": [\"B\"], \"axis\": -1},\n"
    " \"cs32_0\": {\"op\": \"cumsum\", \"args\": [\"B\"], \"axis\": 0},\n"
    " \"csf\": {\"op\": \"cumsum\", \"args\": [\"B\"], \"axis\": null},\n"
    " \"csD\": {\"op\": \"cumsum\", \"args\": [\"D\"], \"axis\": 0},\n"
    " \"csDf\": {\"op\": \"cumsum\", \"args\": [\"D\"]},\n"
    " \"cp1\": {\"op\": \"cumprod\", \"args\": [\"A\"], \"axis\": 1},\n"
    " \"cpf\": {\"op\": \"cumprod\", \"args\": [\"C\"]}\n"
    "},\n"
    "\"outputs\": {";

/* The outputs (each NAME to NAME.npy) and how numpy computes each: "expression|tolerance". A
 * tolerance of 0 asks for the same bits, dtype and shape. */
static const char *const checks[][2] = {
    {"sum_k", "A.sum(axis=0, keepdims=True)|1e-14"},
    {"mean_k", "B.astype('f8').mean(axis=(0, 2), keepdims=True).astype('f4')|1e-6"},
    {"max_k", "B.max(axis=None, keepdims=True)|0"},
    {"min_k", "A.min(axis=-1, keepdims=True)|0"},
    {"prod0", "A.prod(axis=0)|1e-13"},
    {"prod_all", "B.astype('f8').prod().astype('f4')|1e-5"},
    {"prod_k", "C.prod(keepdims=True)|1e-13"},
    {"any1", "P.any(axis=1)|0"},
    {"any_all", "P.any()|0"},
    {"all02", "Q.all(axis=(0, 2))|0"},
    {"all_k", "Q.all(axis=1, keepdims=True)|0"},
    {"var0", "D.var(axis=0)|1e-12"},
    {"var_all", "D.var()|1e-12"},
    {"std1", "D.std(axis=-1, ddof=1)|1e-12"},
    {"var32", "B.astype('f8').var(axis=1).astype('f4')|1e-6"},
    {"std_k", "B.astype('f8').std(axis=(0, 2), keepdims=True, ddof=2).astype('f4')|1e-6"},
    {"var_dd", "A.var(axis=0, ddof=9)|1e-12"},
    {"amax", "D.argmax()|0"},
    {"amin0", "D.argmin(axis=0)|0"},
    {"amax_nan", "N.argmax(axis=1)|0"},
    {"amin_nan0", "N.argmin(axis=0)|0"},
    {"amax_nanf", "N.argmax()|0"},
    {"amin_tie", "T.argmin(axis=-2)|0"},
    {"amin_tief", "T.argmin()|0"},
    {"amax_k", "B.argmax(axis=-1, keepdims=True)|0"},
    {"amax32", "B.argmax()|0"},
    {"cs0", "A.cumsum(axis=0)|0"},
    {"cs1", "B.cumsum(axis=-1)|0"},
    {"cs32_0", "B.cumsum(axis=0)|0"},
    {"csf", "B.cumsum()|0"},
    {"csD", "D.cumsum(axis=0)|0"},
    {"csDf", "D.cumsum()|0"},
    {"cp1", "A.cumprod(axis=1)|0"},
    {"cpf", "C.cumprod()|0"},
    /* int64 and bool inputs (int64 products wrap, as NumPy's). */
    {"pI", "I.prod(axis=0)|0"},
    {"pB", "Bo.prod(axis=1)|0"},
    {"aI", "I.any(axis=0)|0"},
    {"lB", "Bo.all(axis=1)|0"},
    {"vI", "I.var(axis=0, ddof=1)|1e-12"},
    {"sB", "Bo.std()|1e-12"},
    {"mI", "I.argmax(axis=0)|0"},
    {"nB", "Bo.argmin()|0"},
    {"cI", "I.cumsum(axis=1)|0"},
    {"cB", "Bo.cumsum()|0"},
    {"qI", "I.cumprod(axis=0)|0"},
    {"kB", "Bo.sum(axis=0, keepdims=True)|0"},
    {"kI", "I.max(axis=1, keepdims=True)|0"},
};
#define NCHECKS (sizeof checks / sizeof checks[0])

/* numpy's side: the inputs from SPEC §2's formula, then each check read from argv. */
static const char ref_py[] =
    "import sys, warnings, numpy as np\n"
    "warnings.simplefilter('ignore')\n"
    "def rnd(shape, seed, f32=False):\n"
    "    i = np.arange(int(np.prod(shape)), dtype=np.uint64)\n"
    "    with np.errstate(over='ignore'):\n"
    "        z = np.uint64(seed) + (i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)\n"
    "        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)\n"
    "        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)\n"
    "        z = z ^ (z >> np.uint64(31))\n"
    "    if f32:\n"
    "        v = ((z >> np.uint64(40)).astype(np.float64) * 2.0**-24).astype(np.float32)\n"
    "    else:\n"
    "        v = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53\n"
    "    return v.reshape(shape)\n"
    "A = rnd((7, 5), 1); B = rnd((4, 6, 5), 2, True); C = rnd((10,), 3); D = rnd((40, 30), 4)\n"
    "N = np.sqrt(A - 0.3); T = np.maximum(A, 0.7); P = np.maximum(A - 0.8, 0)\n"
    "Q = np.maximum(B - np.float32(0.1), np.float32(0))\n"
    "I = (A * 2000000).astype(np.int64); Bo = A > 0.5\n"
    "bad = 0\n"
    "for spec in sys.argv[1:]:\n"
    "    name, expr, tol = spec.split('|')\n"
    "    want = np.asarray(eval(expr)); got = np.load(name + '.npy'); tol = float(tol)\n"
    "    if got.dtype != want.dtype or got.shape != want.shape:\n"
    "        print(name, 'dtype/shape', got.dtype, got.shape, 'want', want.dtype, want.shape)\n"
    "        bad += 1\n"
    "    elif tol == 0 and got.tobytes() != want.tobytes():\n"
    "        print(name, 'differs:', got.ravel()[:8], 'want', want.ravel()[:8]); bad += 1\n"
    "    elif tol and not np.allclose(got, want, rtol=tol, atol=0, equal_nan=True):\n"
    "        print(name, 'not within', tol, got.ravel()[:8], 'want', want.ravel()[:8]); bad += 1\n"
    "print('checked', len(sys.argv) - 1, 'bad', bad)\n"
    "sys.exit(1 if bad else 0)\n";

static void write_prog(const char *dir) {
    size_t cap = sizeof prog + NCHECKS * 64;
    char *text = malloc(cap);
    cr_assert(text);
    size_t len = (size_t)snprintf(text, cap, "%s", prog);
    for (size_t k = 0; k < NCHECKS; k++)
        len += (size_t)snprintf(text + len, cap - len, "%s\"%s\": \"%s.npy\"", k ? ", " : "",
                                checks[k][0], checks[k][0]);
    snprintf(text + len, cap - len, "}}\n");
    write_file(dir, "prog.json", text);
    free(text);
}

/* Runs the program with `--workers WORKERS` (and `--gpus 0`, a worker on the fake device, when
 * gpus is set) in a new directory, which it returns. */
static char *run_in_new_dir(const char *workers, int gpus) {
    char *dir = make_tmpdir();
    write_prog(dir);
    const char *argv[] = {"tessera", "run", "--workers", workers, "prog.json", NULL, NULL, NULL};
    if (gpus) {
        argv[4] = "--gpus";
        argv[5] = "0";
        argv[6] = "prog.json";
    }
    proc_result r = run_cmd(dir, argv, 120);
    cr_assert_eq(r.status, 0, "tessera run --workers %s%s failed (%d):\n%s", workers,
                 gpus ? " --gpus 0" : "", r.status, r.err);
    proc_result_free(&r);
    return dir;
}

static char *slurp(const char *dir, const char *name, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    FILE *f = fopen(path, "rb");
    cr_assert(f, "no %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert(buf);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

Test(reductions, match_numpy_and_one_vs_three_workers) {
    char *d1 = run_in_new_dir("1", 0);
    char *d3 = run_in_new_dir("3", 0);
    /* A GPU worker (the fake device) beside a CPU worker: the new families have no device
     * kernels and run on its host, with the same bits. */
    setenv("TESSERA_FAKE_GPU", "1", 1);
    char *dg = run_in_new_dir("1", 1);
    unsetenv("TESSERA_FAKE_GPU");
    for (size_t k = 0; k < NCHECKS; k++) {
        size_t n1, n3, ng;
        char *b1 = slurp(d1, checks[k][0], &n1), *b3 = slurp(d3, checks[k][0], &n3);
        char *bg = slurp(dg, checks[k][0], &ng);
        cr_expect(n1 == n3 && memcmp(b1, b3, n1) == 0, "%s differs between 1 and 3 workers",
                  checks[k][0]);
        cr_expect(n1 == ng && memcmp(b1, bg, n1) == 0, "%s differs with a GPU worker",
                  checks[k][0]);
        free(b1);
        free(b3);
        free(bg);
    }
    const char *argv[NCHECKS + 4] = {PY, "-c", ref_py};
    char specs[NCHECKS][160];
    for (size_t k = 0; k < NCHECKS; k++) {
        snprintf(specs[k], sizeof specs[k], "%s|%s", checks[k][0], checks[k][1]);
        argv[3 + k] = specs[k];
    }
    argv[3 + NCHECKS] = NULL;
    proc_result ref = run_cmd(d1, argv, 60);
    if (ref.status != 0 && strstr(ref.err, "No module named"))
        cr_skip_test("numpy is not installed for %s", PY);
    cr_assert_eq(ref.status, 0, "against numpy:\n%s%s", ref.out, ref.err);
    proc_result_free(&ref);
    remove_tmpdir(d1);
    remove_tmpdir(d3);
    remove_tmpdir(dg);
}

/* `tessera check` of one bad definition: exit 2, and the message names the file, the array and
 * what is wrong. */
static void bad(const char *def, const char *want) {
    char *dir = make_tmpdir();
    char text[1024];
    snprintf(text, sizeof text,
             "{\"tessera\": 1, \"arrays\": {\"X\": {\"op\": \"random\", \"shape\": [4, 3]},"
             " \"E\": {\"op\": \"zeros\", \"shape\": [0, 3]}, \"y\": %s},"
             " \"outputs\": {\"y\": \"y.npy\"}}",
             def);
    write_file(dir, "bad.json", text);
    const char *argv[] = {"tessera", "check", "bad.json", NULL};
    proc_result r = run_cmd(dir, argv, 30);
    cr_expect_eq(r.status, 2, "%s: exit %d:\n%s", def, r.status, r.err);
    cr_expect(strstr(r.err, "bad.json") && strstr(r.err, "\"y\"") && strstr(r.err, want),
              "%s: want \"%s\" in:\n%s", def, want, r.err);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

Test(reductions, program_file_errors) {
    bad("{\"op\": \"argmax\", \"args\": [\"X\"], \"axis\": [0]}", "not a list");
    bad("{\"op\": \"argmin\", \"args\": [\"X\"], \"axis\": 2}", "out of bounds");
    bad("{\"op\": \"var\", \"args\": [\"X\"], \"ddof\": -1}", "\"ddof\" must be a non-negative");
    bad("{\"op\": \"std\", \"args\": [\"X\"], \"ddof\": 1.5}", "\"ddof\" must be a non-negative");
    bad("{\"op\": \"sum\", \"args\": [\"X\"], \"keepdims\": 1}", "\"keepdims\" must be true");
    bad("{\"op\": \"prod\", \"args\": [\"X\"], \"ddof\": 1}", "unknown key \"ddof\"");
    bad("{\"op\": \"argmax\", \"args\": [\"E\"], \"axis\": 0}", "empty sequence");
    bad("{\"op\": \"argmin\", \"args\": [\"E\"]}", "empty sequence");
    bad("{\"op\": \"cumsum\", \"args\": [\"X\"], \"axis\": [0, 1]}", "not a list");
    bad("{\"op\": \"cumprod\", \"args\": [\"X\"], \"axis\": -3}", "out of bounds");
    bad("{\"op\": \"any\", \"args\": [\"X\"], \"axis\": [1, 1]}", "repeated axis");
}
