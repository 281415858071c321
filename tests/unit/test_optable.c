/* The operations table (graph/ops.h, array/array.h): every row is complete (a kernel for each
 * dtype it declares, none for the others), names round-trip and match SPEC §2's lists written
 * out here by hand, the arity/alias columns are what the kernels enforce, and the one cost
 * model gives 2mnk for a matmul block, checked against shapes worked out independently. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "graph/graph.h"
#include "kernels/device.h"
#include "kernels/kernels.h"

TestSuite(optable, .timeout = 60);

/* SPEC §2's program-file names, in the public enums' order. */
static const char *const spec_unary[] = {
    "neg",   "abs",  "exp",    "log",         "sqrt",   "sin",     "cos",    "tanh",
    "floor", "ceil", "round",  "tan",         "arcsin", "arccos",  "arctan", "log1p",
    "expm1", "sign", "square", "logical_not", "isnan",  "isfinite"};
static const char *const spec_binary[] = {"add",        "sub",         "mul",           "div",
                                          "pow",        "maximum",     "minimum",       "less",
                                          "less_equal", "greater",     "greater_equal", "equal",
                                          "not_equal",  "logical_and", "logical_or"};
static const char *const spec_reduce[] = {"sum", "mean", "max", "min"};
/* Issue 13's reductions (their public values follow spec_reduce's) and scans. */
static const char *const spec_reduce2[] = {"prod", "any", "all", "var", "std", "argmax", "argmin"};
static const char *const spec_scan[] = {"cumsum", "cumprod"};

Test(optable, every_family_has_a_kernel_for_each_declared_dtype) {
    for (int kop = 0; kop < TSR_KOP_COUNT; kop++) {
        const tsr__kop_info *k = tsr__kop_info_of(kop);
        cr_assert_not_null(k);
        cr_assert(k->dtypes != 0, "%s declares no dtype", k->name);
        for (int dt = 0; dt < 32; dt++) {
            int declared = (k->dtypes >> dt) & 1;
            tsr_kernel_fn fn = tsr__kernel_lookup(kop, dt, TSR_DEVICE_CPU);
            if (declared)
                cr_assert_not_null(fn, "%s declares dtype %d but has no CPU kernel for it", k->name,
                                   dt);
            else
                cr_assert_null(fn, "%s has a kernel for undeclared dtype %d", k->name, dt);
        }
        /* GPU kernels exist where the CUDA backend was built, for every declared float dtype of
         * every family but file reads (the worker runs LOAD on the host) and the CPU-only
         * dtype-generic families, structural copies and fused programs (docs/gpu.md). */
        for (int dt = 0; dt < 32; dt++) {
            /* Issue 13's families other than the elementwise ones are CPU-only too
             * (docs/gpu.md): a GPU worker runs them on its host, as it does LOAD. */
            int cpu_only =
                kop == TSR_KOP_LOAD || kop == TSR_KOP_COMPARE || kop == TSR_KOP_PREDICATE ||
                kop == TSR_KOP_WHERE || kop == TSR_KOP_NORMAL || kop == TSR_KOP_EYE ||
                kop == TSR_KOP_CONTRACT || kop == TSR_KOP_DATA || kop == TSR_KOP_HELD ||
                kop == TSR_KOP_REDUCE2 || kop == TSR_KOP_COMBINE2 || kop == TSR_KOP_SCAN ||
                kop == TSR_KOP_STRIDED || kop == TSR_KOP_TAKE || kop == TSR_KOP_MAP_BLOCKS ||
                kop == TSR_KOP_FUSED || kop == TSR_KOP_PACK || kop == TSR_KOP_PACK_SOURCE;
            int gpu = tsr__devops_cuda() && !cpu_only && (((k->dtypes & TSR__DT_FLOAT) >> dt) & 1);
            tsr_kernel_fn fn = tsr__kernel_lookup(kop, dt, TSR_DEVICE_GPU);
            if (gpu)
                cr_assert_not_null(fn, "%s has no GPU kernel for dtype %d", k->name, dt);
            else
                cr_assert_null(fn, "%s has an unexpected GPU kernel for dtype %d", k->name, dt);
        }
    }
    cr_assert_null(tsr__kop_info_of(TSR_KOP_COUNT));
    cr_assert_null(tsr__kop_info_of(-1));
    cr_assert_null(tsr__kernel_lookup(-1, TSR_FLOAT64, TSR_DEVICE_CPU));
}

Test(optable, family_names_are_distinct) {
    for (int a = 0; a < TSR_KOP_COUNT; a++) {
        cr_assert_str_neq(tsr__kop_name(a), "?");
        for (int b = 0; b < a; b++) cr_assert_str_neq(tsr__kop_name(a), tsr__kop_name(b));
    }
    /* The wire numbers of a few families (kernel descriptors carry them). */
    cr_assert_eq(TSR_KOP_FILL, 0);
    cr_assert_eq(TSR_KOP_MATMUL, 7);
    cr_assert_eq(TSR_KOP_ASTYPE, 12);
    cr_assert_eq(TSR_KOP_COMPARE, 13);
    cr_assert_eq(TSR_KOP_WHERE, 15);
    cr_assert_eq(TSR_KOP_NORMAL, 16);
    cr_assert_eq(TSR_KOP_CONTRACT, 18);
    cr_assert_eq(TSR_KOP_COMBINE2, TSR_KOP_REDUCE2 + 1);
    cr_assert_eq(TSR_KOP_SCAN, TSR_KOP_REDUCE2 + 2);
    cr_assert_eq(TSR_KOP_STRIDED, 24);
    cr_assert_eq(TSR_KOP_TAKE, 25);
    cr_assert_eq(TSR_KOP_MAP_BLOCKS, 26);
    cr_assert_eq(TSR_KOP_FUSED, 27);
    cr_assert_eq(TSR_KOP_PACK, 28);
    cr_assert_eq(TSR_KOP_MATMUL_PACKED, 29);
    cr_assert_eq(TSR_KOP_PACK_SOURCE, 30);
    cr_assert_eq(TSR_KOP_COUNT, 31);
}

Test(optable, names_round_trip_and_match_spec) {
    cr_assert_eq(TSR__UNARY_COUNT, (int)TSR__ARRAY_LEN(spec_unary));
    cr_assert_eq(TSR__BINARY_COUNT, (int)TSR__ARRAY_LEN(spec_binary));
    cr_assert_eq(TSR__REDUCE_COUNT, (int)TSR__ARRAY_LEN(spec_reduce));
    for (int k = 0; k < TSR__UNARY_COUNT; k++) {
        cr_assert_str_eq(tsr_unary_name((tsr_unary_op)k), spec_unary[k]);
    }
    for (int k = 0; k < TSR__BINARY_COUNT; k++) {
        cr_assert_str_eq(tsr_binary_name((tsr_binary_op)k), spec_binary[k]);
    }
    for (int k = 0; k < TSR__REDUCE_COUNT; k++) {
        cr_assert_str_eq(tsr_reduce_name((tsr_reduce_op)k), spec_reduce[k]);
    }
    cr_assert_eq(TSR__REDUCE2_COUNT, (int)TSR__ARRAY_LEN(spec_reduce2));
    for (int k = 0; k < TSR__REDUCE2_COUNT; k++) {
        cr_assert_str_eq(tsr_reduce_name((tsr_reduce_op)(TSR__REDUCE_COUNT + k)), spec_reduce2[k]);
        cr_assert_str_eq(tsr__reduce2_name(k), spec_reduce2[k]);
    }
    cr_assert_str_eq(tsr_reduce_name(TSR_ARGMIN), "argmin");
    cr_assert_null(tsr_reduce_name((tsr_reduce_op)(TSR__REDUCE_COUNT + TSR__REDUCE2_COUNT)));
    cr_assert_eq(TSR__SCAN_COUNT, (int)TSR__ARRAY_LEN(spec_scan));
    for (int k = 0; k < TSR__SCAN_COUNT; k++) cr_assert_str_eq(tsr__scan_name(k), spec_scan[k]);
    cr_assert_eq(tsr_unary_name(TSR_TANH), tsr__unary_name(TSR_TANH));
    cr_assert_null(tsr__unary_name(TSR__UNARY_COUNT));
    cr_assert_null(tsr__binary_name(-1));
}

/* The expression column evaluated as a fused loop would: expanded in place with T = double. */
Test(optable, elementwise_expressions_are_scalar_functions) {
    typedef double T;
#define M(fn) fn
#include "graph/ops_float.h"
    const double xs[] = {-2.5, -1, 0, 0.5, 3};
    for (size_t i = 0; i < TSR__ARRAY_LEN(xs); i++) {
        T x = xs[i], y = 1.5, got[TSR__BINARY_COUNT + TSR__UNARY_COUNT];
        int n = 0;
#define UNARY_EVAL(E, name, dtypes, expr) got[n++] = (expr);
#define BINARY_EVAL(E, name, dtypes, expr) got[n++] = (expr);
        TSR__UNARY_MAP(UNARY_EVAL)
        TSR__BINARY_MAP(BINARY_EVAL)
#undef UNARY_EVAL
#undef BINARY_EVAL
        const double want[] = {-x,
                               fabs(x),
                               exp(x),
                               log(x),
                               sqrt(x),
                               sin(x),
                               cos(x),
                               tanh(x),
                               floor(x),
                               ceil(x),
                               nearbyint(x),
                               tan(x),
                               asin(x),
                               acos(x),
                               atan(x),
                               log1p(x),
                               expm1(x),
                               x > 0   ? 1
                               : x < 0 ? -1
                                       : 0,
                               x * x,
                               x == 0,
                               0,
                               1,
                               x + y,
                               x - y,
                               x * y,
                               x / y,
                               pow(x, y),
                               fmax(x, y),
                               fmin(x, y),
                               x<y, x <= y, x>
                                   y,
                               x >= y,
                               x == y,
                               x != y,
                               x != 0 && y != 0,
                               x != 0 || y != 0};
        cr_assert_eq(n, (int)TSR__ARRAY_LEN(want));
        for (int k = 0; k < n; k++)
            cr_assert((isnan(got[k]) && isnan(want[k])) || got[k] == want[k],
                      "x=%g op %d: %g != %g", x, k, got[k], want[k]);
    }
#undef M
}

static tsr_kdesc desc(int kop, int ndim, const int64_t *shape) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = (uint8_t)kop;
    d.dtype = TSR_FLOAT64;
    d.ndim = (uint8_t)ndim;
    for (int a = 0; a < ndim; a++) d.shape[a] = shape[a];
    return d;
}

static tsr_chunkview view(void *data, int ndim, const int64_t *shape) {
    tsr_chunkview v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = TSR_FLOAT64;
    v.ndim = (uint8_t)ndim;
    for (int a = 0; a < ndim; a++) v.shape[a] = shape[a];
    return v;
}

/* Which input the output may reuse, written out per family from kernels.h's contracts. */
Test(optable, alias_column_matches_the_kernel_contracts) {
    int64_t sh[1] = {4};
    double buf[4][4] = {{0}};
    tsr_chunkview in[3] = {view(buf[0], 1, sh), view(buf[1], 1, sh), view(buf[2], 1, sh)};
    struct {
        int kop, nin, k, want;
    } cases[] = {
        {TSR_KOP_UNARY, 1, 0, 1},   {TSR_KOP_BINARY_SCALAR, 1, 0, 1}, {TSR_KOP_ASTYPE, 1, 0, 1},
        {TSR_KOP_BINARY, 2, 0, 1},  {TSR_KOP_BINARY, 2, 1, 1},        {TSR_KOP_BINARY, 1, 0, 0},
        {TSR_KOP_COMBINE, 3, 2, 1}, {TSR_KOP_COMBINE, 1, 0, 1},       {TSR_KOP_MATMUL, 3, 2, 1},
        {TSR_KOP_MATMUL, 3, 0, 0},  {TSR_KOP_MATMUL, 2, 1, 0},        {TSR_KOP_TRANSPOSE, 1, 0, 0},
        {TSR_KOP_REDUCE, 1, 0, 0},  {TSR_KOP_ASSEMBLE, 1, 0, 0},      {TSR_KOP_FILL, 1, 0, 0},
        {TSR_KOP_UNARY, 2, 0, 0},
    };
    for (size_t c = 0; c < TSR__ARRAY_LEN(cases); c++) {
        tsr_kdesc d = desc(cases[c].kop, 1, sh);
        cr_assert_eq(tsr__kernel_may_alias(&d, in, cases[c].nin, cases[c].k), cases[c].want,
                     "%s nin %d k %d", tsr__kop_name(cases[c].kop), cases[c].nin, cases[c].k);
    }
    /* A different dtype or shape never aliases. */
    tsr_kdesc d = desc(TSR_KOP_UNARY, 1, sh);
    in[0].dtype = TSR_FLOAT32;
    cr_assert_eq(tsr__kernel_may_alias(&d, in, 1, 0), 0);
}

/* Every family refuses an input count outside its row's range, with a message. */
Test(optable, arity_column_is_enforced) {
    int64_t sh[1] = {4};
    double buf[4] = {0}, out[4];
    tsr_chunkview in[4] = {view(buf, 1, sh), view(buf, 1, sh), view(buf, 1, sh), view(buf, 1, sh)};
    for (int kop = 0; kop < TSR_KOP_COUNT; kop++) {
        const tsr__kop_info *k = tsr__kop_info_of(kop);
        int bad[2] = {k->min_in - 1, k->max_in == TSR__ANY ? -1 : k->max_in + 1};
        for (int b = 0; b < 2; b++) {
            if (bad[b] < 0 || bad[b] > 4) continue;
            tsr_kdesc d = desc(kop, 1, sh);
            tsr_chunkview o = view(out, 1, sh);
            char err[256] = "";
            cr_assert_eq(tsr__kernel_run(&d, in, bad[b], &o, TSR_DEVICE_CPU, err, sizeof err),
                         TSR_EINVALID, "%s with %d inputs", k->name, bad[b]);
            cr_assert(strstr(err, "expects"), "%s: \"%s\"", k->name, err);
        }
    }
}

Test(optable, traits) {
    for (int kop = 0; kop < TSR_KOP_COUNT; kop++) {
        int source = kop == TSR_KOP_FILL || kop == TSR_KOP_RANDOM || kop == TSR_KOP_ARANGE ||
                     kop == TSR_KOP_NORMAL || kop == TSR_KOP_EYE || kop == TSR_KOP_PACK_SOURCE;
        cr_assert_eq(tsr__kop_has(kop, TSR__KOP_RECOMPUTE), source, "%s", tsr__kop_name(kop));
        int is_long = kop == TSR_KOP_MATMUL || kop == TSR_KOP_LOAD || kop == TSR_KOP_CONTRACT ||
                      kop == TSR_KOP_MAP_BLOCKS || kop == TSR_KOP_MATMUL_PACKED;
        cr_assert_eq(tsr__kop_has(kop, TSR__KOP_LONG), is_long, "%s", tsr__kop_name(kop));
    }
    cr_assert_eq(tsr__kop_has(TSR_KOP_COUNT, 0), 0);
}

/* The cost model alone: a 10x30 @ 30x20 block is 2*10*20*30 flops, a reduction's partial counts
 * its input, a combine of 3 inputs 3 per output element. */
Test(optable, flops_model) {
    int64_t osh[2] = {10, 20}, ash[2] = {10, 30}, xsh[3] = {4, 5, 6};
    cr_assert_eq(tsr__kop_flops(TSR_KOP_MATMUL, 2, osh, 2, 2, ash), 2.0 * 10 * 20 * 30);
    cr_assert_eq(tsr__kop_flops(TSR_KOP_MATMUL, 1, osh, 3, 2, ash), 2.0 * 10 * 30);
    cr_assert_eq(tsr__kop_flops(TSR_KOP_REDUCE, 1, xsh, 1, 3, xsh), 120.0);
    cr_assert_eq(tsr__kop_flops(TSR_KOP_COMBINE, 2, osh, 3, 0, NULL), 600.0);
    cr_assert_eq(tsr__kop_flops(TSR_KOP_UNARY, 2, osh, 1, 0, NULL), 200.0);
    cr_assert_eq(tsr__kop_flops(TSR_KOP_FILL, 0, NULL, 0, 0, NULL), 1.0);
}

/* Lowering charges each block product of an uneven matmul 2*m*n*k of its own block, and the
 * whole product 2*M*N*K. */
Test(optable, lowered_matmul_flops_are_2mnk) {
    tsr_client *c;
    cr_assert_eq(tsr_client_new_offline(&c), 0);
    int64_t as[2] = {70, 50}, ach[2] = {40, 30}, bs[2] = {50, 90}, bch[2] = {30, 60};
    tsr_array *a = NULL, *b = NULL, *m = NULL;
    cr_assert_eq(tsr_random(c, 2, as, ach, TSR_FLOAT64, 1, &a), 0);
    cr_assert_eq(tsr_random(c, 2, bs, bch, TSR_FLOAT32, 2, &b), 0);
    cr_assert_eq(tsr_matmul(a, b, &m), 0, "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_array_dtype(m), TSR_FLOAT64); /* the PROMOTE rule */
    tsr_graph g;
    tsr__graph_init(&g);
    cr_assert_eq(tsr__lower(c, &m, 1, &g, 0), 0, "%s", tsr_client_errmsg(c));
    tsr__graph_finish(&g);
    double total = 0;
    size_t nmm = 0;
    for (size_t t = 0; t < g.ntasks; t++) {
        const tsr_gtask *gt = &g.tasks[t];
        if (gt->d.kop != TSR_KOP_MATMUL) continue;
        nmm++;
        /* Its k-steps (docs/arrays.md: small blocks are grouped): inputs A_0, B_0, A_1, ... */
        uint32_t steps = gt->d.ni ? (uint32_t)gt->d.i[0] : 1;
        double m_ = (double)gt->d.shape[0], n_ = (double)gt->d.shape[1], k_ = 0;
        for (uint32_t q = 0; q < steps; q++) {
            const tsr_gtask *A = &g.tasks[g.deps[gt->deps_off + 2 * q]];
            cr_assert_eq(A->d.shape[0], gt->d.shape[0]);
            k_ += (double)A->d.shape[1];
        }
        cr_assert_eq(gt->flops, 2.0 * m_ * n_ * k_, "task %zu: %g", t, gt->flops);
        total += gt->flops;
    }
    /* Row blocks 40+30, column blocks 60+30, k blocks 30+20: 2x2 outputs, each one task of
     * both k-steps (a step is far below 64 MFLOP). */
    cr_assert_eq(nmm, 4);
    cr_assert_eq(total, 2.0 * 70 * 90 * 50);
    tsr__graph_free(&g);
    tsr_array_free(m);
    tsr_array_free(a);
    tsr_array_free(b);
    tsr_client_free(c);
}

/* Each array-level row's family and operand count. */
Test(optable, array_level_rows) {
    cr_assert_eq(tsr__aop_kop(TSR_A_FULL), TSR_KOP_FILL);
    cr_assert_eq(tsr__aop_kop(TSR_A_RECHUNK), TSR_KOP_ASSEMBLE);
    cr_assert_eq(tsr__aop_kop(TSR_A_REDUCE), TSR_KOP_REDUCE);
    cr_assert_eq(TSR__AOP_NARGS_BINARY, 2);
    cr_assert_eq(TSR__AOP_NARGS_BINARY_SCALAR, 1);
    cr_assert_eq(TSR__AOP_NARGS_LOAD, 0);
    static const int nargs[] = {
#define NARGS_ROW(E, kop, n, ...) n,
        TSR__AOP_MAP(NARGS_ROW)
#undef NARGS_ROW
    };
    for (int a = 0; a < TSR__AOP_COUNT; a++) {
        const tsr__kop_info *k = tsr__kop_info_of(tsr__aop_kop((tsr_aop)a));
        cr_assert_not_null(k);
        cr_assert_eq(k->min_in == 0, nargs[a] == 0, "aop %d", a);
    }
    cr_assert_eq(tsr__aop_dtype(TSR_A_UNARY, TSR_FLOAT32, TSR_FLOAT32, TSR_FLOAT64), TSR_FLOAT32);
    cr_assert_eq(tsr__aop_dtype(TSR_A_BINARY, TSR_INT64, TSR_FLOAT32, TSR_FLOAT32), TSR_FLOAT64);
    cr_assert_eq(tsr__aop_dtype(TSR_A_COMPARE, TSR_INT64, TSR_FLOAT32, TSR_FLOAT32), TSR_BOOL);
    cr_assert_eq(tsr__aop_dtype(TSR_A_WHERE, TSR_BOOL, TSR_INT64, TSR_FLOAT32), TSR_INT64);
    cr_assert_eq(tsr__aop_dtype(TSR_A_BINARY, TSR_FLOAT32, TSR_FLOAT64, TSR_FLOAT32), TSR_FLOAT64);
    cr_assert_eq(tsr__aop_dtype(TSR_A_BINARY, TSR_FLOAT32, TSR_FLOAT32, TSR_FLOAT64), TSR_FLOAT32);
    cr_assert_eq(tsr__aop_dtype(TSR_A_ASTYPE, TSR_FLOAT64, TSR_FLOAT64, TSR_FLOAT32), TSR_FLOAT32);
}

/* NumPy: sum and mean of nothing have a value (0, NaN), max and min raise, naming the ufunc. */
Test(optable, reduction_columns) {
    cr_assert(tsr__reduce_has_identity(TSR_SUM));
    cr_assert(tsr__reduce_has_identity(TSR_MEAN));
    cr_assert_not(tsr__reduce_has_identity(TSR_MAX));
    cr_assert_not(tsr__reduce_has_identity(TSR_MIN));
    cr_assert_str_eq(tsr__reduce_ufunc(TSR_SUM), "add");
    cr_assert_str_eq(tsr__reduce_ufunc(TSR_MAX), "maximum");
    cr_assert_str_eq(tsr__reduce_ufunc(TSR_MIN), "minimum");
    cr_assert_null(tsr__reduce_ufunc(TSR__REDUCE_COUNT));
    for (int fn = 0; fn < TSR__REDUCE_COUNT; fn++)
        cr_assert_eq(tsr__reduce_scales(fn), fn == TSR_MEAN, "%s", tsr__reduce_name(fn));
}

/* The sub-operation dtype column narrows the family's, as NumPy defines the ops (written out by
 * hand): int64 has the arithmetic but not the float math, bool only what stays bool. */
Test(optable, sub_operation_dtypes) {
    const uint32_t F = TSR__DT_FLOAT, N = F | TSR__DT(TSR_INT64), A = N | TSR__DT(TSR_BOOL);
    static const uint32_t unary_want[] = {0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0,
                                          1, 1, 1, 1, 1, 1, 0, 0, 2, 2, 2};
    for (int fn = 0; fn < TSR__UNARY_COUNT; fn++) {
        uint32_t want = unary_want[fn] == 1 ? F : unary_want[fn] == 2 ? 0 : N;
        if (fn == TSR_ABS) want = A;
        cr_assert_eq(tsr__kop_fn_dtypes(TSR_KOP_UNARY, fn), want, "%s", tsr__unary_name(fn));
    }
    for (int fn = 0; fn < TSR__BINARY_COUNT; fn++) {
        uint32_t want = fn >= TSR_LESS                   ? 0
                        : fn == TSR_DIV                  ? F
                        : fn == TSR_SUB || fn == TSR_POW ? N
                                                         : A;
        cr_assert_eq(tsr__kop_fn_dtypes(TSR_KOP_BINARY, fn), want, "%s", tsr__binary_name(fn));
        cr_assert_eq(tsr__kop_fn_dtypes(TSR_KOP_BINARY_SCALAR, fn), want);
        cr_assert_eq(tsr__kop_fn_dtypes(TSR_KOP_COMPARE, fn), TSR__DT(TSR_BOOL));
    }
    cr_assert_eq(tsr__kop_fn_dtypes(TSR_KOP_UNARY, TSR__UNARY_COUNT), 0);
    cr_assert_eq(tsr__kop_fn_dtypes(TSR_KOP_MATMUL, 200), A); /* fn unused */
    cr_assert_eq(tsr__kop_fn_dtypes(TSR_KOP_COUNT, 0), 0);
    cr_assert_eq(TSR__DT_FLOAT, TSR__DT(TSR_FLOAT64) | TSR__DT(TSR_FLOAT32));
}
