/* Issue 13's kernels (kernels/reduce2.c) run through tsr__kernel_run on every input dtype,
 * against naive loops written here: int64 products that wrap, bool any/all, argmax/argmin on
 * int64 values beyond 2^53 and on NaNs spread over partials met in either order, var/std from
 * split partials, cumsum/cumprod of bool and int64 (wrapping) and float32 continuing a running
 * value; plus descriptors the checks refuse. int64/bool arrays cannot be made end to end before
 * the int64/bool kernels of other families land, so these are the tests of those dtypes. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "graph/ops.h"
#include "kernels/kernels.h"

TestSuite(reduce2, .timeout = 60);

static tsr_chunkview view(void *data, int dt, int ndim, const int64_t *shape) {
    tsr_chunkview v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = (uint8_t)dt;
    v.ndim = (uint8_t)ndim;
    for (int a = 0; a < ndim; a++) v.shape[a] = shape[a];
    return v;
}

static tsr_kdesc desc(int kop, int fn, int dt, int ndim, const int64_t *shape, int64_t *i,
                      uint32_t ni, double *f, uint32_t nf) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = (uint8_t)kop;
    d.fn = (uint8_t)fn;
    d.dtype = (uint8_t)dt;
    d.ndim = (uint8_t)ndim;
    for (int a = 0; a < ndim; a++) d.shape[a] = shape[a];
    d.i = i;
    d.ni = ni;
    d.f = f;
    d.nf = nf;
    return d;
}

static int run(const tsr_kdesc *d, const tsr_chunkview *in, int nin, void *out) {
    tsr_chunkview o = view(out, d->dtype, d->ndim, d->shape);
    char err[256];
    int rc = tsr__kernel_run(d, in, nin, &o, TSR_DEVICE_CPU, err, sizeof err);
    if (rc) cr_log_info("kernel: %s", err);
    return rc;
}

/* A REDUCE2 partial of x (ndim 2) over axis ax, x being the chunk at goff of a gext-long axis. */
static int partial2(int fn, const tsr_chunkview *x, int64_t ax, int64_t gext, int64_t goff,
                    void *out) {
    int64_t ip[3] = {ax, gext, goff};
    int64_t len = x->shape[1 - ax] * tsr__reduce2_fields(fn);
    tsr_kdesc d = desc(TSR_KOP_REDUCE2, fn, tsr__reduce2_partial_dtype(fn, x->dtype), 1, &len, ip,
                       3, NULL, 0);
    return run(&d, x, 1, out);
}

static int final2(int fn, const tsr_chunkview *parts, int n, int odt, int64_t nout, int ints,
                  double ddof, void *out) {
    int64_t ip[2] = {1, ints};
    tsr_kdesc d = desc(TSR_KOP_COMBINE2, fn, odt, 1, &nout, ip, 2, &ddof, 1);
    return run(&d, parts, n, out);
}

Test(reduce2, int64_prod_wraps_and_bool_prod_is_int64) {
    int64_t x[3 * 4], sh[2] = {3, 4};
    for (int j = 0; j < 12; j++) x[j] = (j % 2 ? -1 : 1) * (INT64_C(3000000007) + j);
    tsr_chunkview xv = view(x, TSR_INT64, 2, sh);
    int64_t part[3], got[3];
    cr_assert_eq(partial2(TSR__R2_PROD, &xv, 1, 4, 0, part), 0);
    cr_assert_eq(final2(TSR__R2_PROD, (tsr_chunkview[]){view(part, TSR_INT64, 1, (int64_t[]){3})},
                        1, TSR_INT64, 3, 1, 0, got),
                 0);
    for (int r = 0; r < 3; r++) {
        uint64_t want = 1;
        for (int c = 0; c < 4; c++) want *= (uint64_t)x[r * 4 + c];
        cr_assert_eq((uint64_t)got[r], want, "row %d", r);
    }
    uint8_t b[6] = {1, 1, 0, 1, 1, 1};
    int64_t bs[2] = {2, 3}, bp[3];
    tsr_chunkview bv = view(b, TSR_BOOL, 2, bs);
    cr_assert_eq(partial2(TSR__R2_PROD, &bv, 0, 2, 0, bp), 0);
    cr_assert(bp[0] == 1 && bp[1] == 1 && bp[2] == 0);
}

Test(reduce2, any_all_on_bool_and_float_with_nan) {
    uint8_t b[6] = {0, 0, 1, 0, 1, 1};
    int64_t sh[2] = {2, 3};
    tsr_chunkview bv = view(b, TSR_BOOL, 2, sh);
    uint8_t any[3], all[3];
    cr_assert_eq(partial2(TSR__R2_ANY, &bv, 0, 2, 0, any), 0);
    cr_assert_eq(partial2(TSR__R2_ALL, &bv, 0, 2, 0, all), 0);
    cr_assert(any[0] == 0 && any[1] == 1 && any[2] == 1);
    cr_assert(all[0] == 0 && all[1] == 0 && all[2] == 1);
    double f[6] = {0, NAN, -0.0, 0, 2, 0};
    tsr_chunkview fv = view(f, TSR_FLOAT64, 2, sh);
    cr_assert_eq(partial2(TSR__R2_ANY, &fv, 0, 2, 0, any), 0);
    cr_assert(any[0] == 0 && any[1] == 1 && any[2] == 0); /* NaN is true, -0.0 false */
}

/* Two partials of a 1-row argmax over a 10-long axis: chunk a holds indices 0..4, chunk b 5..9. */
Test(reduce2, argmax_nan_and_ties_whatever_the_order) {
    double a[5] = {1, 9, 3, 9, 2}, b[5] = {9, NAN, 4, NAN, 9};
    int64_t sh[2] = {1, 5};
    tsr_chunkview av = view(a, TSR_FLOAT64, 2, sh), bv = view(b, TSR_FLOAT64, 2, sh);
    int64_t pa[2], pb[2], got;
    cr_assert_eq(partial2(TSR__R2_ARGMAX, &av, 1, 10, 0, pa), 0);
    cr_assert_eq(partial2(TSR__R2_ARGMAX, &bv, 1, 10, 5, pb), 0);
    cr_assert_eq(pa[1], 1); /* the first of the tied 9s */
    cr_assert_eq(pb[1], 6); /* the first NaN */
    int64_t two[1] = {2};
    tsr_chunkview ab[2] = {view(pa, TSR_INT64, 1, two), view(pb, TSR_INT64, 1, two)};
    tsr_chunkview ba[2] = {ab[1], ab[0]};
    cr_assert_eq(final2(TSR__R2_ARGMAX, ab, 2, TSR_INT64, 1, 0, 0, &got), 0);
    cr_assert_eq(got, 6);
    cr_assert_eq(final2(TSR__R2_ARGMAX, ba, 2, TSR_INT64, 1, 0, 0, &got), 0);
    cr_assert_eq(got, 6);
    /* Without the NaNs the tie between index 1 and index 5 goes to 1, in either order. */
    b[1] = b[3] = 0;
    cr_assert_eq(partial2(TSR__R2_ARGMAX, &bv, 1, 10, 5, pb), 0);
    cr_assert_eq(final2(TSR__R2_ARGMAX, ba, 2, TSR_INT64, 1, 0, 0, &got), 0);
    cr_assert_eq(got, 1);
    cr_assert_eq(partial2(TSR__R2_ARGMIN, &av, 1, 10, 0, pa), 0);
    cr_assert_eq(pa[1], 0);
}

Test(reduce2, argmax_int64_beyond_2p53_and_bool) {
    int64_t x[4] = {INT64_C(9007199254740993), INT64_C(9007199254740992), INT64_MIN, 7};
    int64_t sh[2] = {1, 4}, p[2];
    tsr_chunkview xv = view(x, TSR_INT64, 2, sh);
    cr_assert_eq(partial2(TSR__R2_ARGMAX, &xv, 1, 4, 0, p), 0);
    cr_assert_eq(p[1], 0); /* as doubles the first two would tie */
    cr_assert_eq(partial2(TSR__R2_ARGMIN, &xv, 1, 4, 0, p), 0);
    cr_assert_eq(p[1], 2);
    uint8_t b[4] = {0, 0, 1, 1};
    tsr_chunkview bv = view(b, TSR_BOOL, 2, sh);
    cr_assert_eq(partial2(TSR__R2_ARGMAX, &bv, 1, 4, 0, p), 0);
    cr_assert_eq(p[1], 2);
}

/* var/std of 2 x 7 values split into chunks of 3 and 4 columns, combined, against two passes over
 * the whole rows; int64 values give float64. */
Test(reduce2, var_std_from_split_partials) {
    double x[14];
    for (int j = 0; j < 14; j++) x[j] = 10 + sin(j * 1.3) * (j + 1);
    for (int ddof = 0; ddof <= 2; ddof++) {
        for (int fn = TSR__R2_VAR; fn <= TSR__R2_STD; fn++) {
            double l[6], r[8], pl[6], pr[6], got[2];
            for (int row = 0; row < 2; row++) {
                memcpy(l + 3 * row, x + 7 * row, 3 * sizeof *x);
                memcpy(r + 4 * row, x + 7 * row + 3, 4 * sizeof *x);
            }
            tsr_chunkview lv = view(l, TSR_FLOAT64, 2, (int64_t[]){2, 3});
            tsr_chunkview rv = view(r, TSR_FLOAT64, 2, (int64_t[]){2, 4});
            cr_assert_eq(partial2(fn, &lv, 1, 7, 0, pl), 0);
            cr_assert_eq(partial2(fn, &rv, 1, 7, 3, pr), 0);
            int64_t six[1] = {6};
            tsr_chunkview parts[2] = {view(pl, TSR_FLOAT64, 1, six), view(pr, TSR_FLOAT64, 1, six)};
            cr_assert_eq(final2(fn, parts, 2, TSR_FLOAT64, 2, 0, ddof, got), 0);
            for (int row = 0; row < 2; row++) {
                double m = 0, m2 = 0;
                for (int c = 0; c < 7; c++) m += x[7 * row + c];
                m /= 7;
                for (int c = 0; c < 7; c++) m2 += (x[7 * row + c] - m) * (x[7 * row + c] - m);
                double want = m2 / (7 - ddof);
                if (fn == TSR__R2_STD) want = sqrt(want);
                cr_assert(fabs(got[row] - want) <= 1e-13 * want,
                          "fn %d ddof %d row %d: %.17g %.17g", fn, ddof, row, got[row], want);
            }
        }
    }
    /* Var's two passes: with a mean 1e6 times the spread, the second pass (deviations from the
     * first pass's global mean) stays within 1e-13 of two passes over the whole row. */
    double y[7], l[3], r[4], pl[3], pr[3], gm[3], got;
    for (int j = 0; j < 7; j++) y[j] = 1e6 + sin(j * 1.3);
    memcpy(l, y, sizeof l);
    memcpy(r, y + 3, sizeof r);
    tsr_chunkview lv = view(l, TSR_FLOAT64, 2, (int64_t[]){1, 3});
    tsr_chunkview rv = view(r, TSR_FLOAT64, 2, (int64_t[]){1, 4});
    int64_t three[1] = {3}, ip[3] = {1, 7, 0};
    cr_assert_eq(partial2(TSR__R2_VAR, &lv, 1, 7, 0, pl), 0);
    cr_assert_eq(partial2(TSR__R2_VAR, &rv, 1, 7, 3, pr), 0);
    int64_t cip[2] = {0, 0};
    tsr_chunkview first[2] = {view(pl, TSR_FLOAT64, 1, three), view(pr, TSR_FLOAT64, 1, three)};
    tsr_kdesc cd = desc(TSR_KOP_COMBINE2, TSR__R2_VAR, TSR_FLOAT64, 1, three, cip, 2, NULL, 0);
    cr_assert_eq(run(&cd, first, 2, gm), 0);
    tsr_chunkview gv = view(gm, TSR_FLOAT64, 1, three);
    tsr_kdesc pd = desc(TSR_KOP_REDUCE2, TSR__R2_VAR, TSR_FLOAT64, 1, three, ip, 3, NULL, 0);
    cr_assert_eq(run(&pd, (tsr_chunkview[]){lv, gv}, 2, pl), 0);
    ip[2] = 3;
    cr_assert_eq(run(&pd, (tsr_chunkview[]){rv, gv}, 2, pr), 0);
    /* pl and pr now hold the second pass's partials, which first still views. */
    cr_assert_eq(final2(TSR__R2_VAR, first, 2, TSR_FLOAT64, 1, 0, 0, &got), 0);
    double m = 0, m2 = 0;
    for (int j = 0; j < 7; j++) m += y[j];
    m /= 7;
    for (int j = 0; j < 7; j++) m2 += (y[j] - m) * (y[j] - m);
    cr_assert(fabs(got - m2 / 7) <= 1e-13 * (m2 / 7), "%.17g %.17g", got, m2 / 7);
    /* The second input only for var/std. */
    pd.fn = TSR__R2_PROD;
    cr_assert_eq(run(&pd, (tsr_chunkview[]){lv, gv}, 2, pl), TSR_EINVALID);

    int64_t xi[4] = {1, 2, 3, 4}, sh[2] = {1, 4};
    double p[3], v;
    tsr_chunkview xv = view(xi, TSR_INT64, 2, sh);
    cr_assert_eq(partial2(TSR__R2_VAR, &xv, 1, 4, 0, p), 0);
    cr_assert_eq(final2(TSR__R2_VAR, (tsr_chunkview[]){view(p, TSR_FLOAT64, 1, (int64_t[]){3})}, 1,
                        TSR_FLOAT64, 1, 0, 0, &v),
                 0);
    cr_assert_eq(v, 1.25);
    /* N - ddof <= 0: M2 / 0, NumPy's inf (or NaN for a zero M2). */
    cr_assert_eq(final2(TSR__R2_VAR, (tsr_chunkview[]){view(p, TSR_FLOAT64, 1, (int64_t[]){3})}, 1,
                        TSR_FLOAT64, 1, 0, 5, &v),
                 0);
    cr_assert(isinf(v));
}

static int scan(int fn, int axis, const tsr_chunkview *x, const tsr_chunkview *carry, void *out) {
    int64_t ip[1] = {axis};
    tsr_kdesc d =
        desc(TSR_KOP_SCAN, fn, tsr__scan_dtype(x->dtype), x->ndim, x->shape, ip, 1, NULL, 0);
    tsr_chunkview in[2] = {*x, carry ? *carry : *x};
    return run(&d, in, carry ? 2 : 1, out);
}

Test(reduce2, scans_of_bool_int64_and_float32_with_a_running_value) {
    uint8_t b[6] = {1, 0, 1, 1, 1, 0};
    int64_t sh[2] = {2, 3}, out[6];
    tsr_chunkview bv = view(b, TSR_BOOL, 2, sh);
    cr_assert_eq(scan(TSR_CUMSUM, 1, &bv, NULL, out), 0);
    int64_t want[6] = {1, 1, 2, 1, 2, 2};
    cr_assert_arr_eq(out, want, sizeof want);
    /* Continuing a previous chunk along axis 0 (its last row is [5, 6, 7]). */
    int64_t prev[6] = {0, 0, 0, 5, 6, 7};
    tsr_chunkview pv = view(prev, TSR_INT64, 2, sh);
    cr_assert_eq(scan(TSR_CUMSUM, 0, &bv, &pv, out), 0);
    int64_t want0[6] = {6, 6, 8, 7, 7, 8};
    cr_assert_arr_eq(out, want0, sizeof want0);
    /* int64 cumprod wraps. */
    int64_t x[4] = {INT64_MAX, 3, -5, INT64_MIN}, w[4], sh4[1] = {4};
    tsr_chunkview xv = view(x, TSR_INT64, 1, sh4);
    cr_assert_eq(scan(TSR_CUMPROD, -1, &xv, NULL, w), 0);
    uint64_t acc = 1;
    for (int j = 0; j < 4; j++) {
        acc *= (uint64_t)x[j];
        cr_assert_eq((uint64_t)w[j], acc, "element %d", j);
    }
    /* float32 accumulates in float32, from the running value's last element. */
    float f[5] = {0.1f, 1e8f, 3.3f, -1e8f, 0.7f}, run0[2] = {9.f, 0.25f}, fo[5];
    tsr_chunkview fv = view(f, TSR_FLOAT32, 1, (int64_t[]){5});
    tsr_chunkview cv = view(run0, TSR_FLOAT32, 1, (int64_t[]){2});
    cr_assert_eq(scan(TSR_CUMSUM, -1, &fv, &cv, fo), 0);
    float s = 0.25f;
    for (int j = 0; j < 5; j++) {
        s = s + f[j];
        cr_assert(memcmp(&s, &fo[j], sizeof s) == 0, "element %d: %.9g %.9g", j, fo[j], s);
    }
}

Test(reduce2, checks_refuse_bad_descriptors) {
    double x[6] = {0};
    int64_t sh[2] = {2, 3}, len = 3, ip[3] = {0, 2, 0}, out[6];
    tsr_chunkview xv = view(x, TSR_FLOAT64, 2, sh);
    /* An argmax partial of float64 is int64, not float64. */
    tsr_kdesc d =
        desc(TSR_KOP_REDUCE2, TSR__R2_ARGMAX, TSR_FLOAT64, 1, (int64_t[]){6}, ip, 3, NULL, 0);
    cr_assert_eq(run(&d, &xv, 1, out), TSR_EINVALID);
    /* The chunk does not fit its global extent. */
    int64_t bad[3] = {0, 1, 0};
    d = desc(TSR_KOP_REDUCE2, TSR__R2_PROD, TSR_FLOAT64, 1, &len, bad, 3, NULL, 0);
    cr_assert_eq(run(&d, &xv, 1, out), TSR_EINVALID);
    /* argmax over an empty axis. */
    int64_t esh[2] = {0, 3}, eip[3] = {0, 0, 0};
    tsr_chunkview ev = view(NULL, TSR_FLOAT64, 2, esh);
    d = desc(TSR_KOP_REDUCE2, TSR__R2_ARGMAX, TSR_INT64, 1, (int64_t[]){6}, eip, 3, NULL, 0);
    cr_assert_eq(run(&d, &ev, 1, out), TSR_EINVALID);
    /* A scan's running value of the wrong shape, and of the wrong dtype. */
    int64_t sip[1] = {0};
    float c32[3] = {0};
    double c[4] = {0};
    tsr_chunkview in[2] = {xv, view(c, TSR_FLOAT64, 2, (int64_t[]){1, 4})};
    d = desc(TSR_KOP_SCAN, TSR_CUMSUM, TSR_FLOAT64, 2, sh, sip, 1, NULL, 0);
    cr_assert_eq(run(&d, in, 2, out), TSR_EINVALID);
    in[1] = view(c32, TSR_FLOAT32, 2, (int64_t[]){1, 3});
    cr_assert_eq(run(&d, in, 2, out), TSR_EINVALID);
    /* Partials of different sizes. */
    int64_t cip[2] = {1, 0};
    double zero = 0;
    tsr_chunkview parts[2] = {view(x, TSR_FLOAT64, 1, (int64_t[]){6}),
                              view(x, TSR_FLOAT64, 1, (int64_t[]){3})};
    d = desc(TSR_KOP_COMBINE2, TSR__R2_VAR, TSR_FLOAT64, 1, (int64_t[]){2}, cip, 2, &zero, 1);
    cr_assert_eq(run(&d, parts, 2, out), TSR_EINVALID);
}

/* ---- the C API, on an offline client: shapes, dtypes, chunks, task counts, refusals ---------- */

static void shape_is(const tsr_array *a, int ndim, const int64_t *shape) {
    cr_assert_eq(tsr_array_ndim(a), ndim);
    for (int k = 0; k < ndim; k++) cr_assert_eq(tsr_array_shape(a)[k], shape[k], "axis %d", k);
}

Test(reduce2, api_shapes_dtypes_chunks_and_errors) {
    tsr_client *c = NULL;
    cr_assert_eq(tsr_client_new_offline(&c), 0);
    /* The task counts below are the unfused lowering's (sources as tasks of their own). */
    cr_assert_eq(tsr_client_set_fusion(c, 0), 0);
    tsr_array *x = NULL, *r = NULL;
    int64_t sh[3] = {7, 5, 4}, ch[3] = {3, 2, 4};
    cr_assert_eq(tsr_random(c, 3, sh, ch, TSR_FLOAT32, 1, &x), 0);
    tsr_reduce_options o;
    tsr_reduce_options_default(&o);
    o.keepdims = 1;
    /* sum with keepdims: (7, 1, 4), one chunk of 1 on the reduced axis. 3 x 3 partials: 9
     * REDUCE + 3 x 1 COMBINE (each output chunk combines its 3 partials). */
    cr_assert_eq(tsr_reduce_ex(TSR_SUM, x, (int[]){-2}, 1, &o, &r), 0, "%s", tsr_client_errmsg(c));
    shape_is(r, 3, (int64_t[]){7, 1, 4});
    cr_assert_eq(tsr_array_numchunks(r, 1), 1);
    cr_assert_eq(tsr_array_numchunks(r, 0), 3);
    cr_assert_eq(tsr_array_dtype(r), TSR_FLOAT32);
    cr_assert_eq(tsr_task_count(&r, 1), 9 + 3 + 9);
    tsr_array_free(r);
    /* var over everything, twice (the mean, then the deviations): 9 partials, one COMBINE2 of 8
     * then the root of 2, per pass; float32 stays. */
    cr_assert_eq(tsr_reduce_ex(TSR_VAR, x, NULL, 0, NULL, &r), 0);
    shape_is(r, 0, NULL);
    cr_assert_eq(tsr_array_dtype(r), TSR_FLOAT32);
    cr_assert_eq(tsr_task_count(&r, 1), 9 + 2 * (9 + 2)); /* two passes */
    tsr_array_free(r);
    /* argmax over one axis with keepdims: int64; any: bool. */
    cr_assert_eq(tsr_reduce_ex(TSR_ARGMAX, x, (int[]){0}, 1, &o, &r), 0);
    shape_is(r, 3, (int64_t[]){1, 5, 4});
    cr_assert_eq(tsr_array_dtype(r), TSR_INT64);
    tsr_array_free(r);
    cr_assert_eq(tsr_reduce(TSR_ANY, x, (int[]){0, 2}, 2, &r), 0);
    shape_is(r, 1, (int64_t[]){5});
    cr_assert_eq(tsr_array_dtype(r), TSR_BOOL);
    tsr_array_free(r);
    /* Refusals: argmax over two axes, ddof < 0, a bad axis. */
    cr_assert_eq(tsr_reduce(TSR_ARGMIN, x, (int[]){0, 1}, 2, &r), TSR_EINVALID);
    cr_assert(strstr(tsr_client_errmsg(c), "one axis"), "%s", tsr_client_errmsg(c));
    o.ddof = -1;
    cr_assert_eq(tsr_reduce_ex(TSR_STD, x, NULL, 0, &o, &r), TSR_EINVALID);
    cr_assert(strstr(tsr_client_errmsg(c), "ddof"), "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_scan(TSR_CUMSUM, x, 3, 0, &r), TSR_EINVALID);
    cr_assert(strstr(tsr_client_errmsg(c), "out of bounds"), "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_scan((tsr_scan_op)2, x, 0, 0, &r), TSR_EINVALID);
    cr_assert_null(r);
    /* A scan along an axis keeps the grid: one SCAN per chunk (plus 9 sources). */
    cr_assert_eq(tsr_scan(TSR_CUMPROD, x, -1, 0, &r), 0);
    shape_is(r, 3, sh);
    cr_assert_eq(tsr_task_count(&r, 1), 9 + 9);
    tsr_array_free(r);
    /* Flattened: x is rechunked to whole rows, 3*2*4 = 24 elements per chunk = 1 row of 20, so 7
     * chunks of 20; the result is 1-d, 140 long, chunks of 20. */
    cr_assert_eq(tsr_scan(TSR_CUMSUM, x, 0, 1, &r), 0);
    shape_is(r, 1, (int64_t[]){140});
    cr_assert_eq(tsr_array_numchunks(r, 0), 7);
    cr_assert_eq(tsr_array_chunks(r, 0)[6], 20);
    tsr_array_free(r);
    /* argmax of an empty axis fails as NumPy does; prod of one gives ones. */
    tsr_array *e = NULL;
    cr_assert_eq(tsr_zeros(c, 2, (int64_t[]){0, 3}, NULL, TSR_FLOAT64, &e), 0);
    cr_assert_eq(tsr_reduce(TSR_ARGMAX, e, (int[]){0}, 1, &r), TSR_ESHAPE);
    cr_assert(strstr(tsr_client_errmsg(c), "empty sequence"), "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_reduce(TSR_ARGMAX, e, (int[]){1}, 1, &r), 0); /* an empty result: fine */
    shape_is(r, 1, (int64_t[]){0});
    tsr_array_free(r);
    cr_assert_eq(tsr_reduce(TSR_PROD, e, (int[]){0}, 1, &r), 0);
    tsr_array_free(r);
    tsr_array_free(e);
    tsr_array_free(x);
    tsr_client_free(c);
}
