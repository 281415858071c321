/* Every op of SPEC §2 through `tessera run` on a real local cluster, each output compared with
 * a reference computed here by naive loops from the random formula (re-implemented in the
 * harness), never with Tessera's own earlier output. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static const char *prog =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"z\": {\"op\": \"zeros\", \"shape\": [4, 3], \"chunks\": 2},\n"
    " \"o\": {\"op\": \"ones\", \"shape\": [5], \"chunks\": 2, \"dtype\": \"float32\"},\n"
    " \"f\": {\"op\": \"full\", \"shape\": [3, 3], \"chunks\": [2, 3], \"value\": 2.5},\n"
    " \"r\": {\"op\": \"random\", \"shape\": [7, 5], \"chunks\": [3, 2], \"seed\": 5},\n"
    " \"r32\": {\"op\": \"random\", \"shape\": [7, 5], \"chunks\": 4, \"seed\": 6, \"dtype\": "
    "\"float32\"},\n"
    " \"a\": {\"op\": \"arange\", \"start\": 1, \"stop\": 10, \"step\": 1.5, \"chunks\": 2},\n"
    " \"L\": {\"op\": \"load\", \"path\": \"in.npy\", \"chunks\": [4, 3]},\n"
    " \"row\": {\"op\": \"random\", \"shape\": [5], \"chunks\": 3, \"seed\": 9},\n"
    " \"col\": {\"op\": \"random\", \"shape\": [7, 1], \"chunks\": 2, \"seed\": 10},\n"
    " \"t\": {\"op\": \"random\", \"shape\": [5, 4], \"chunks\": [3, 3], \"seed\": 11},\n"
    " \"v\": {\"op\": \"random\", \"shape\": [5], \"chunks\": 2, \"seed\": 12},\n"
    " \"T3\": {\"op\": \"random\", \"shape\": [2, 3, 4], \"chunks\": 2, \"seed\": 13},\n"
    " \"neg\": {\"op\": \"neg\", \"args\": [\"r\"]},\n"
    " \"abs\": {\"op\": \"abs\", \"args\": [\"L\"]},\n"
    " \"exp\": {\"op\": \"exp\", \"args\": [\"r\"]},\n"
    " \"log\": {\"op\": \"log\", \"args\": [\"L\"]},\n"
    " \"sqrt\": {\"op\": \"sqrt\", \"args\": [\"L\"]},\n"
    " \"sin\": {\"op\": \"sin\", \"args\": [\"L\"]},\n"
    " \"cos\": {\"op\": \"cos\", \"args\": [\"r\"]},\n"
    " \"tanh\": {\"op\": \"tanh\", \"args\": [\"L\"]},\n"
    " \"add\": {\"op\": \"add\", \"args\": [\"r\", \"row\"]},\n"
    " \"sub\": {\"op\": \"sub\", \"args\": [\"L\", 1.5]},\n"
    " \"div\": {\"op\": \"div\", \"args\": [2, \"r\"]},\n"
    " \"mul\": {\"op\": \"mul\", \"args\": [\"r\", \"r32\"]},\n"
    " \"pow\": {\"op\": \"pow\", \"args\": [\"r\", 2.5]},\n"
    " \"max0\": {\"op\": \"maximum\", \"args\": [\"L\", 0]},\n"
    " \"minc\": {\"op\": \"minimum\", \"args\": [\"r\", \"col\"]},\n"
    " \"mm\": {\"op\": \"matmul\", \"args\": [\"r\", \"t\"]},\n"
    " \"mv\": {\"op\": \"matmul\", \"args\": [\"r\", \"v\"]},\n"
    " \"tr\": {\"op\": \"transpose\", \"args\": [\"L\"]},\n"
    " \"tr3\": {\"op\": \"transpose\", \"args\": [\"T3\"], \"axes\": [1, 2, 0]},\n"
    " \"s\": {\"op\": \"sum\", \"args\": [\"r\"], \"axis\": null},\n"
    " \"m0\": {\"op\": \"mean\", \"args\": [\"r\"], \"axis\": 0},\n"
    " \"mx\": {\"op\": \"max\", \"args\": [\"L\"], \"axis\": 1},\n"
    " \"mn\": {\"op\": \"min\", \"args\": [\"T3\"], \"axis\": [0, 2]},\n"
    " \"sl\": {\"op\": \"sum\", \"args\": [\"T3\"], \"axis\": -1},\n"
    " \"rc\": {\"op\": \"rechunk\", \"args\": [\"r\"], \"chunks\": [2, 5]},\n"
    " \"as\": {\"op\": \"astype\", \"args\": [\"r\"], \"dtype\": \"float32\"}\n"
    "},\n"
    "\"outputs\": {\"z\": \"z.npy\", \"o\": \"o.npy\", \"f\": \"f.npy\", \"r\": \"r.npy\",\n"
    " \"r32\": \"r32.npy\", \"a\": \"-\", \"neg\": \"neg.npy\", \"abs\": \"abs.npy\",\n"
    " \"exp\": \"exp.npy\", \"log\": \"log.npy\", \"sqrt\": \"sqrt.npy\", \"sin\": \"sin.npy\",\n"
    " \"cos\": \"cos.npy\", \"tanh\": \"tanh.npy\", \"add\": \"add.npy\", \"sub\": \"sub.npy\",\n"
    " \"div\": \"div.npy\", \"mul\": \"mul.npy\", \"pow\": \"pow.npy\", \"max0\": \"max0.npy\",\n"
    " \"minc\": \"minc.npy\", \"mm\": \"mm.npy\", \"mv\": \"-\", \"tr\": \"tr.npy\",\n"
    " \"tr3\": \"tr3.npy\", \"s\": \"-\", \"m0\": \"-\", \"mx\": \"mx.npy\", \"mn\": \"-\",\n"
    " \"sl\": \"sl.npy\", \"rc\": \"rc.npy\", \"as\": \"as.npy\"}}\n";

/* The loaded input: 6x4, element i = i*0.25 - 2 (negative ones exercise NaN from log/sqrt). */
static double Lv(int64_t i) {
    return (double)i * 0.25 - 2.0;
}

static void write_input(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/in.npy", dir);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    char hdr[118];
    memset(hdr, ' ', sizeof hdr);
    int n =
        snprintf(hdr, sizeof hdr, "{'descr': '<f8', 'fortran_order': False, 'shape': (6, 4), }");
    hdr[n] = ' ';
    hdr[117] = '\n';
    fwrite("\x93NUMPY\x01\x00\x76\x00", 1, 10, f);
    fwrite(hdr, 1, sizeof hdr, f);
    for (int i = 0; i < 24; i++) {
        double v = Lv(i);
        fwrite(&v, 8, 1, f);
    }
    fclose(f);
}

static double R(uint64_t seed, int64_t i) {
    return ref_random_f64(seed, (uint64_t)i);
}

static int close_enough(double got, double want, double rtol) {
    if (isnan(want)) return isnan(got);
    return fabs(got - want) <= rtol * (fabs(want) + 1e-300) + 1e-300 || got == want;
}

typedef double (*ref_fn)(const int64_t *idx);

static const char *g_dir;

static void check(const char *name, int ndim, const int64_t *shape, int f32, ref_fn fn,
                  double rtol) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.npy", g_dir, name);
    npy_data d;
    cr_assert(read_npy(path, &d) == 0, "%s: cannot read %s", name, path);
    cr_assert_eq(d.ndim, ndim, "%s: ndim %d, want %d", name, d.ndim, ndim);
    cr_assert_eq(d.f32, f32, "%s: wrong dtype", name);
    for (int k = 0; k < ndim; k++) cr_assert_eq(d.shape[k], shape[k], "%s: shape[%d]", name, k);
    int64_t idx[8] = {0};
    for (int64_t i = 0; i < d.n; i++) {
        double want = fn(idx);
        cr_assert(close_enough(d.v[i], want, rtol), "%s[%lld]: got %.17g, want %.17g", name,
                  (long long)i, d.v[i], want);
        for (int k = ndim - 1; k >= 0; k--) {
            if (++idx[k] < shape[k]) break;
            idx[k] = 0;
        }
    }
    npy_free(&d);
}

#define RI(i, j) R(5, (i)*5 + (j))
#define LI(i, j) Lv((i)*4 + (j))
static double f_z(const int64_t *x) {
    (void)x;
    return 0;
}
static double f_o(const int64_t *x) {
    (void)x;
    return 1;
}
static double f_f(const int64_t *x) {
    (void)x;
    return 2.5;
}
static double f_r(const int64_t *x) {
    return RI(x[0], x[1]);
}
static double f_r32(const int64_t *x) {
    return ref_random_f32(6, (uint64_t)(x[0] * 5 + x[1]));
}
static double f_neg(const int64_t *x) {
    return -RI(x[0], x[1]);
}
static double f_abs(const int64_t *x) {
    return fabs(LI(x[0], x[1]));
}
static double f_exp(const int64_t *x) {
    return exp(RI(x[0], x[1]));
}
static double f_log(const int64_t *x) {
    return log(LI(x[0], x[1]));
}
static double f_sqrt(const int64_t *x) {
    return sqrt(LI(x[0], x[1]));
}
static double f_sin(const int64_t *x) {
    return sin(LI(x[0], x[1]));
}
static double f_cos(const int64_t *x) {
    return cos(RI(x[0], x[1]));
}
static double f_tanh(const int64_t *x) {
    return tanh(LI(x[0], x[1]));
}
static double f_add(const int64_t *x) {
    return RI(x[0], x[1]) + R(9, x[1]);
}
static double f_sub(const int64_t *x) {
    return LI(x[0], x[1]) - 1.5;
}
static double f_div(const int64_t *x) {
    return 2.0 / RI(x[0], x[1]);
}
static double f_mul(const int64_t *x) {
    return RI(x[0], x[1]) * (double)ref_random_f32(6, (uint64_t)(x[0] * 5 + x[1]));
}
static double f_pow(const int64_t *x) {
    return pow(RI(x[0], x[1]), 2.5);
}
static double f_max0(const int64_t *x) {
    return LI(x[0], x[1]) > 0 ? LI(x[0], x[1]) : 0;
}
static double f_minc(const int64_t *x) {
    double a = RI(x[0], x[1]), b = R(10, x[0]);
    return a < b ? a : b;
}
static double f_mm(const int64_t *x) {
    double s = 0;
    for (int k = 0; k < 5; k++) s += RI(x[0], k) * R(11, k * 4 + x[1]);
    return s;
}
static double f_tr(const int64_t *x) {
    return LI(x[1], x[0]);
}
/* tr3[i,j,k] = T3[k,i,j] for axes (1,2,0); T3 is 2x3x4. */
static double f_tr3(const int64_t *x) {
    return R(13, x[2] * 12 + x[0] * 4 + x[1]);
}
static double f_mx(const int64_t *x) {
    double m = -INFINITY;
    for (int j = 0; j < 4; j++) m = LI(x[0], j) > m ? LI(x[0], j) : m;
    return m;
}
static double f_sl(const int64_t *x) {
    double s = 0;
    for (int k = 0; k < 4; k++) s += R(13, x[0] * 12 + x[1] * 4 + k);
    return s;
}
static double f_as(const int64_t *x) {
    return (double)(float)RI(x[0], x[1]);
}

/* Parses "name: v1 v2 ..." from the output into vals; returns the count. */
static int printed(const char *out, const char *name, double *vals, int max) {
    char key[64];
    snprintf(key, sizeof key, "%s: ", name);
    const char *line = out;
    while (line && *line) {
        if (strncmp(line, key, strlen(key)) == 0) {
            const char *p = line + strlen(key);
            int n = 0;
            while (*p && *p != '\n' && n < max) {
                char *end;
                vals[n++] = strtod(p, &end);
                cr_assert(end != p, "bad printed value in \"%s\"", line);
                p = end;
                if (*p == ' ') p++;
            }
            return n;
        }
        line = strchr(line, '\n');
        if (line) line++;
    }
    cr_assert_fail("no printed output \"%s\" in:\n%s", name, out);
    return 0;
}

/* Runs the program with `tessera run ARGS... prog.json` and checks every output. */
static void every_op(const char *const *args) {
    char *dir = make_tmpdir();
    g_dir = dir;
    write_input(dir);
    write_file(dir, "prog.json", prog);
    const char *argv[16] = {"tessera", "run"};
    int a = 2;
    while (*args && a < 14) argv[a++] = *args++;
    argv[a++] = "prog.json";
    argv[a] = NULL;
    proc_result r = run_cmd(dir, argv, 120);
    cr_assert_eq(r.status, 0, "tessera run failed (%d):\n%s", r.status, r.err);

    int64_t s43[] = {4, 3}, s5[] = {5}, s33[] = {3, 3}, s75[] = {7, 5}, s64[] = {6, 4},
            s74[] = {7, 4}, s46[] = {4, 6}, s342[] = {3, 4, 2}, s6[] = {6}, s23[] = {2, 3};
    check("z", 2, s43, 0, f_z, 0);
    check("o", 1, s5, 1, f_o, 0);
    check("f", 2, s33, 0, f_f, 0);
    check("r", 2, s75, 0, f_r, 0);
    check("r32", 2, s75, 1, f_r32, 0);
    check("neg", 2, s75, 0, f_neg, 0);
    check("abs", 2, s64, 0, f_abs, 0);
    check("exp", 2, s75, 0, f_exp, 1e-15);
    check("log", 2, s64, 0, f_log, 1e-15);
    check("sqrt", 2, s64, 0, f_sqrt, 1e-15);
    check("sin", 2, s64, 0, f_sin, 1e-15);
    check("cos", 2, s75, 0, f_cos, 1e-15);
    check("tanh", 2, s64, 0, f_tanh, 1e-15);
    check("add", 2, s75, 0, f_add, 0);
    check("sub", 2, s64, 0, f_sub, 0);
    check("div", 2, s75, 0, f_div, 0);
    check("mul", 2, s75, 0, f_mul, 0);
    check("pow", 2, s75, 0, f_pow, 1e-15);
    check("max0", 2, s64, 0, f_max0, 0);
    check("minc", 2, s75, 0, f_minc, 0);
    check("mm", 2, s74, 0, f_mm, 1e-13);
    check("tr", 2, s46, 0, f_tr, 0);
    check("tr3", 3, s342, 0, f_tr3, 0);
    check("mx", 1, s6, 0, f_mx, 0);
    check("sl", 2, s23, 0, f_sl, 1e-14);
    check("rc", 2, s75, 0, f_r, 0);
    check("as", 2, s75, 1, f_as, 0);

    double vals[16];
    int n = printed(r.out, "a", vals, 16);
    cr_assert_eq(n, 6, "arange(1, 10, 1.5) has 6 elements, printed %d", n);
    for (int i = 0; i < 6; i++) cr_assert_eq(vals[i], 1 + i * 1.5);
    n = printed(r.out, "s", vals, 16);
    cr_assert_eq(n, 1);
    double s = 0;
    for (int i = 0; i < 35; i++) s += R(5, i);
    cr_assert(close_enough(vals[0], s, 1e-13), "sum: got %.17g want %.17g", vals[0], s);
    n = printed(r.out, "m0", vals, 16);
    cr_assert_eq(n, 5);
    for (int j = 0; j < 5; j++) {
        double m = 0;
        for (int i = 0; i < 7; i++) m += RI(i, j);
        cr_assert(close_enough(vals[j], m / 7, 1e-13), "mean[%d]", j);
    }
    n = printed(r.out, "mv", vals, 16);
    cr_assert_eq(n, 7);
    for (int i = 0; i < 7; i++) {
        double m = 0;
        for (int k = 0; k < 5; k++) m += RI(i, k) * R(12, k);
        cr_assert(close_enough(vals[i], m, 1e-13), "mv[%d]", i);
    }
    n = printed(r.out, "mn", vals, 16);
    cr_assert_eq(n, 3);
    for (int j = 0; j < 3; j++) {
        double m = INFINITY;
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 4; k++) m = fmin(m, R(13, i * 12 + j * 4 + k));
        cr_assert_eq(vals[j], m, "min[%d]", j);
    }
    /* Printed outputs come in file order. */
    const char *pa = strstr(r.out, "a: "), *pmv = strstr(r.out, "mv: "),
               *ps = strstr(r.out, "\ns: "), *pm0 = strstr(r.out, "m0: "),
               *pmn = strstr(r.out, "mn: ");
    cr_assert(pa && pmv && ps && pm0 && pmn && pa < pmv && pmv < ps && ps < pm0 && pm0 < pmn,
              "printed outputs out of order:\n%s", r.out);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

Test(ops, every_op_against_naive_references, .timeout = 180) {
    every_op((const char *[]){"--workers", "2", NULL});
}

/* A GPU worker alone, on the fake device (kernels/fakedev.c: device memory in host memory, the
 * CPU kernels), with a device so small that copies are evicted (dirty ones written back) and
 * some tasks do not fit at all and run on the host: every path of the device tier, and every
 * write-back the client's fetches ask for, against the same references. */
Test(ops, every_op_on_a_gpu_worker_with_a_tiny_device, .timeout = 180) {
    setenv("TESSERA_FAKE_GPU", "1", 1);
    setenv("TESSERA_FAKE_GPU_MEMORY", "4096", 1); /* a 2048-byte limit: a few chunks */
    every_op((const char *[]){"--workers", "0", "--gpus", "0", NULL});
    unsetenv("TESSERA_FAKE_GPU_MEMORY");
    unsetenv("TESSERA_FAKE_GPU");
}

/* A GPU worker beside CPU workers: chunks move between the kinds through host memory. */
Test(ops, every_op_on_cpu_and_gpu_workers, .timeout = 180) {
    setenv("TESSERA_FAKE_GPU", "1", 1);
    every_op((const char *[]){"--workers", "1", "--gpus", "0", NULL});
    unsetenv("TESSERA_FAKE_GPU");
}
