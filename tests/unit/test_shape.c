/* The structural operations below the cluster: the STRIDED and TAKE kernels for every dtype
 * against naive loops written here (and their descriptor checks on bad input), and the chunk
 * grids and task counts the constructors and lowering give (what is copied and what is not). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "kernels/kernels.h"

static const int all_dtypes[4] = {TSR_FLOAT64, TSR_FLOAT32, TSR_INT64, TSR_BOOL};

static size_t esize(int dt) {
    return tsr_dtype_size((tsr_dtype)dt);
}

/* Element j as a distinct-enough bit pattern of dtype dt (bool: alternating 0/1). */
static void put(void *p, int dt, int64_t j, int64_t v) {
    switch (dt) {
    case TSR_FLOAT64:
        ((double *)p)[j] = (double)v + 0.25;
        break;
    case TSR_FLOAT32:
        ((float *)p)[j] = (float)v + 0.5f;
        break;
    case TSR_INT64:
        ((int64_t *)p)[j] = v * 1000003 - 7;
        break;
    default:
        ((uint8_t *)p)[j] = (uint8_t)((v * 7 / 3) & 1);
        break;
    }
}

static tsr_chunkview view(void *data, int dt, int ndim, const int64_t *shape) {
    tsr_chunkview v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = (uint8_t)dt;
    v.ndim = (uint8_t)ndim;
    for (int a = 0; a < ndim; a++) v.shape[a] = shape[a];
    return v;
}

static tsr_kdesc desc(int kop, int dt, int ndim, const int64_t *shape, int64_t *i, uint32_t ni) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = (uint8_t)kop;
    d.dtype = (uint8_t)dt;
    d.ndim = (uint8_t)ndim;
    for (int a = 0; a < ndim; a++) d.shape[a] = shape[a];
    d.i = i;
    d.ni = ni;
    return d;
}

static char err[256];

/* x[3, 4, 5] -> x[2:0:-1, 1, ::2] (shape (2, 3)) and x reversed on every axis. */
Test(shape_kernels, strided_every_dtype) {
    int64_t xs[3] = {3, 4, 5};
    for (int k = 0; k < 4; k++) {
        int dt = all_dtypes[k];
        char *x = calloc(60, 8), *o = calloc(60, 8), *want = calloc(60, 8);
        for (int64_t j = 0; j < 60; j++) put(x, dt, j, j);
        tsr_chunkview in = view(x, dt, 3, xs);
        int64_t os[2] = {2, 3}, iv[3] = {2 * 20 + 1 * 5, -20, 2};
        tsr_kdesc d = desc(TSR_KOP_STRIDED, dt, 2, os, iv, 3);
        tsr_chunkview out = view(o, dt, 2, os);
        cr_assert_eq(tsr__kernel_run(&d, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err), 0, "%s",
                     err);
        for (int64_t a = 0; a < 2; a++)
            for (int64_t b = 0; b < 3; b++)
                memcpy(want + (a * 3 + b) * esize(dt),
                       x + ((2 - a) * 20 + 1 * 5 + 2 * b) * (int64_t)esize(dt), esize(dt));
        cr_assert_eq(memcmp(o, want, 6 * esize(dt)), 0, "dtype %d", dt);
        int64_t rv[4] = {59, -20, -5, -1};
        tsr_kdesc r = desc(TSR_KOP_STRIDED, dt, 3, xs, rv, 4);
        tsr_chunkview rout = view(o, dt, 3, xs);
        cr_assert_eq(tsr__kernel_run(&r, &in, 1, &rout, TSR_DEVICE_CPU, err, sizeof err), 0);
        for (int64_t j = 0; j < 60; j++)
            cr_assert_eq(
                memcmp(o + j * (int64_t)esize(dt), x + (59 - j) * (int64_t)esize(dt), esize(dt)), 0,
                "dtype %d element %lld", dt, (long long)j);
        free(x);
        free(o);
        free(want);
    }
}

/* Reads outside the input, overflowing strides and a dtype change are refused, never run. */
Test(shape_kernels, strided_checks) {
    double x[12] = {0}, o[12];
    int64_t xs[1] = {12}, os[2] = {3, 4};
    tsr_chunkview in = view(x, TSR_FLOAT64, 1, xs);
    tsr_chunkview out = view(o, TSR_FLOAT64, 2, os);
    int64_t cases[][3] = {{1, 4, 1},    {0, 5, 1},         {-1, 4, 1},
                          {12, -4, -1}, {0, INT64_MAX, 1}, {0, INT64_MIN / 2, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        tsr_kdesc d = desc(TSR_KOP_STRIDED, TSR_FLOAT64, 2, os, cases[k], 3);
        cr_assert_eq(tsr__kernel_run(&d, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err),
                     TSR_EINVALID, "case %zu", k);
    }
    int64_t ok[3] = {11, -4, -1};
    tsr_kdesc d = desc(TSR_KOP_STRIDED, TSR_FLOAT64, 2, os, ok, 3);
    cr_assert_eq(tsr__kernel_run(&d, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err), 0, "%s", err);
    d.dtype = TSR_FLOAT32;
    out.dtype = TSR_FLOAT32;
    cr_assert_eq(tsr__kernel_run(&d, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    tsr_kdesc few = desc(TSR_KOP_STRIDED, TSR_FLOAT64, 2, os, ok, 2);
    out.dtype = TSR_FLOAT64;
    cr_assert_eq(tsr__kernel_run(&few, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err),
                 TSR_EINVALID);
}

/* A STRIDED copy may reuse its input's buffer only when it copies the bytes unchanged (a
 * reshape of the chunk); it then leaves them as they are. A reversal or a part may not. */
Test(shape_kernels, strided_aliases_only_unchanged_bytes) {
    int64_t x[12], xs[2] = {3, 4}, os[3] = {2, 1, 6};
    for (int j = 0; j < 12; j++) x[j] = j * 11 - 5;
    tsr_chunkview in = view(x, TSR_INT64, 2, xs);
    int64_t same[4] = {0, 6, 99, 1}, rev[4] = {11, -6, 0, -1}, off[4] = {1, 6, 0, 1};
    tsr_kdesc d = desc(TSR_KOP_STRIDED, TSR_INT64, 3, os, same, 4);
    cr_assert(tsr__kernel_may_alias(&d, &in, 1, 0));
    tsr_chunkview out = view(x, TSR_INT64, 3, os);
    cr_assert_eq(tsr__kernel_run(&d, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err), 0, "%s", err);
    for (int j = 0; j < 12; j++) cr_assert_eq(x[j], j * 11 - 5);
    d.i = rev;
    cr_assert_not(tsr__kernel_may_alias(&d, &in, 1, 0));
    d.i = off;
    cr_assert_not(tsr__kernel_may_alias(&d, &in, 1, 0));
    int64_t small[2] = {2, 5}, part[3] = {0, 4, 1};
    tsr_kdesc p = desc(TSR_KOP_STRIDED, TSR_INT64, 2, small, part, 3);
    cr_assert_not(tsr__kernel_may_alias(&p, &in, 1, 0));
    d.i = same;
    d.dtype = TSR_FLOAT64;
    cr_assert_not(tsr__kernel_may_alias(&d, &in, 1, 0));
}

/* numpy.take(X, [-1, 0, 4, 2, -5], axis=1) with X (3, 5) in two chunks along axis 1 (2 + 3). */
Test(shape_kernels, take_every_dtype) {
    int64_t idx[5] = {-1, 0, 4, 2, -5}, is[1] = {5};
    for (int k = 0; k < 4; k++) {
        int dt = all_dtypes[k];
        size_t es = esize(dt);
        char *x = calloc(15, 8), *x0 = calloc(6, 8), *x1 = calloc(9, 8), *o = calloc(15, 8);
        for (int64_t j = 0; j < 15; j++) put(x, dt, j, j);
        for (int64_t r = 0; r < 3; r++) {
            memcpy(x0 + r * 2 * (int64_t)es, x + r * 5 * (int64_t)es, 2 * es);
            memcpy(x1 + r * 3 * (int64_t)es, x + (r * 5 + 2) * (int64_t)es, 3 * es);
        }
        int64_t s0[2] = {3, 2}, s1[2] = {3, 3}, os[2] = {3, 5}, iv[1] = {1};
        tsr_chunkview in[3] = {view(x0, dt, 2, s0), view(x1, dt, 2, s1),
                               view(idx, TSR_INT64, 1, is)};
        tsr_kdesc d = desc(TSR_KOP_TAKE, dt, 2, os, iv, 1);
        tsr_chunkview out = view(o, dt, 2, os);
        cr_assert_eq(tsr__kernel_run(&d, in, 3, &out, TSR_DEVICE_CPU, err, sizeof err), 0, "%s",
                     err);
        for (int64_t r = 0; r < 3; r++)
            for (int64_t p = 0; p < 5; p++) {
                int64_t col = idx[p] < 0 ? idx[p] + 5 : idx[p];
                cr_assert_eq(
                    memcmp(o + (r * 5 + p) * (int64_t)es, x + (r * 5 + col) * (int64_t)es, es), 0,
                    "dtype %d (%lld, %lld)", dt, (long long)r, (long long)p);
            }
        free(x);
        free(x0);
        free(x1);
        free(o);
    }
}

/* An index out of [-n, n) fails the task with NumPy's words; a float index chunk is refused. */
Test(shape_kernels, take_errors) {
    double x[6] = {0}, o[6];
    int64_t xs[1] = {6}, is[1] = {3}, iv[1] = {0};
    int64_t bad[3][3] = {{0, 6, 1}, {-7, 0, 0}, {INT64_MIN, 0, 0}};
    const char *msg[3] = {"index 6 is out of bounds for axis 0 with size 6",
                          "index -7 is out of bounds for axis 0 with size 6",
                          "index -9223372036854775808 is out of bounds"};
    for (int k = 0; k < 3; k++) {
        tsr_chunkview in[2] = {view(x, TSR_FLOAT64, 1, xs), view(bad[k], TSR_INT64, 1, is)};
        tsr_kdesc d = desc(TSR_KOP_TAKE, TSR_FLOAT64, 1, is, iv, 1);
        tsr_chunkview out = view(o, TSR_FLOAT64, 1, is);
        cr_assert_neq(tsr__kernel_run(&d, in, 2, &out, TSR_DEVICE_CPU, err, sizeof err), 0);
        cr_assert(strstr(err, msg[k]), "%s", err);
    }
    double fidx[3] = {0, 1, 2};
    tsr_chunkview in[2] = {view(x, TSR_FLOAT64, 1, xs), view(fidx, TSR_FLOAT64, 1, is)};
    tsr_kdesc d = desc(TSR_KOP_TAKE, TSR_FLOAT64, 1, is, iv, 1);
    tsr_chunkview out = view(o, TSR_FLOAT64, 1, is);
    cr_assert_eq(tsr__kernel_run(&d, in, 2, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
}

/* ---- grids and task counts ---- */

static tsr_client *c;

static void setup(void) {
    cr_assert_eq(tsr_client_new_offline(&c), 0);
}

static void teardown(void) {
    tsr_client_free(c);
}

TestSuite(shape_api, .init = setup, .fini = teardown, .timeout = 60);

static tsr_array *src(int ndim, const int64_t *shape, const int64_t *chunks, tsr_dtype dt) {
    tsr_array *a = NULL;
    cr_assert_eq(tsr_zeros(c, ndim, shape, chunks, dt, &a), 0, "%s", tsr_client_errmsg(c));
    return a;
}

static void grid_is(const tsr_array *a, int ax, int64_t n, const int64_t *sizes) {
    cr_assert_eq(tsr_array_numchunks(a, ax), n, "%s axis %d: %lld chunks", tsr_array_name(a), ax,
                 (long long)tsr_array_numchunks(a, ax));
    for (int64_t k = 0; k < n; k++)
        cr_assert_eq(tsr_array_chunks(a, ax)[k], sizes[k], "%s axis %d chunk %lld",
                     tsr_array_name(a), ax, (long long)k);
}

static int64_t tasks(tsr_array *a) {
    return tsr_task_count(&a, 1);
}

/* x[10] chunks 4: [1:10:3] takes 1 | 4, 7 (per input chunk); [::-1] gives 2, 4, 4. */
Test(shape_api, slice_follows_input_chunks) {
    int64_t sh[1] = {10}, ch[1] = {4};
    tsr_array *x = src(1, sh, ch, TSR_INT64), *s = NULL, *r = NULL, *w = NULL;
    tsr_index i1 = {TSR_INDEX_RANGE, 1, 0, 1, 0, 3};
    cr_assert_eq(tsr_slice(x, &i1, 1, &s), 0, "%s", tsr_client_errmsg(c));
    grid_is(s, 0, 2, (int64_t[]){1, 2});
    tsr_index rev = {TSR_INDEX_RANGE, 0, 0, 0, 0, -1};
    cr_assert_eq(tsr_slice(x, &rev, 1, &r), 0);
    grid_is(r, 0, 3, (int64_t[]){2, 4, 4});
    cr_assert_eq(tasks(r), 3 + 3);
    /* Whole chunks, step 1: no task beyond the source's. */
    tsr_index whole = {TSR_INDEX_RANGE, 1, 1, 4, 10, 1};
    cr_assert_eq(tsr_slice(x, &whole, 1, &w), 0);
    grid_is(w, 0, 2, (int64_t[]){4, 2});
    cr_assert_eq(tasks(w), 2);
    /* Only the chunks the slice covers are made: [5:7] lies in chunk 1. */
    tsr_array *part = NULL;
    tsr_index mid = {TSR_INDEX_RANGE, 1, 1, 5, 7, 1};
    cr_assert_eq(tsr_slice(x, &mid, 1, &part), 0);
    grid_is(part, 0, 1, (int64_t[]){2});
    cr_assert_eq(tasks(part), 1 + 1);
    tsr_array_free(part);
    tsr_array *bad = NULL;
    tsr_index zero = {TSR_INDEX_RANGE, 0, 0, 0, 0, 0};
    cr_assert_eq(tsr_slice(x, &zero, 1, &bad), TSR_EINVALID);
    cr_assert_null(bad);
    tsr_index far = {TSR_INDEX_INT, 0, 0, -11, 0, 1};
    cr_assert_eq(tsr_slice(x, &far, 1, &bad), TSR_EINVALID);
    cr_assert_eq(tsr_slice(NULL, &far, 1, &bad), TSR_EINVALID);
    cr_assert_eq(tsr_slice(x, NULL, 1, &bad), TSR_EINVALID);
    tsr_array_free(x);
    tsr_array_free(s);
    tsr_array_free(r);
    tsr_array_free(w);
}

/* The reshape rule: whole trailing extents and row-aligned boundaries need no rechunk. */
Test(shape_api, reshape_rechunks_only_when_it_must) {
    int64_t sh[2] = {6, 8}, ch[2] = {2, 8}, ch2[2] = {2, 3};
    tsr_array *x = src(2, sh, ch, TSR_FLOAT32), *y = src(2, sh, ch2, TSR_FLOAT32);
    tsr_array *a = NULL, *b = NULL, *f = NULL, *g = NULL, *e = NULL, *q = NULL;
    cr_assert_eq(tsr_reshape(x, 3, (int64_t[]){6, 2, 4}, &a), 0);
    grid_is(a, 0, 3, (int64_t[]){2, 2, 2});
    grid_is(a, 1, 1, (int64_t[]){2});
    cr_assert_eq(tasks(a), 3 + 3);
    cr_assert_eq(tsr_reshape(x, 1, (int64_t[]){-1}, &b), 0);
    grid_is(b, 0, 3, (int64_t[]){16, 16, 16});
    cr_assert_eq(tasks(b), 3 + 3);
    /* y's columns are in 3 chunks: merged first (a rechunk per output chunk), then copied. */
    cr_assert_eq(tsr_reshape(y, 1, (int64_t[]){48}, &f), 0);
    cr_assert_eq(tasks(f), 9 + 3 + 3);
    /* (6, 8) rows of 2 into (4, 12): 16-element boundaries are not multiples of 12. */
    cr_assert_eq(tsr_reshape(x, 2, (int64_t[]){4, 12}, &g), 0);
    cr_assert_eq(tsr_array_size(g), 48);
    int64_t sum = 0;
    for (int64_t k = 0; k < tsr_array_numchunks(g, 0); k++) sum += tsr_array_chunks(g, 0)[k];
    cr_assert_eq(sum, 4);
    cr_assert_eq(tsr_expand_dims(x, (int[]){0, 2}, 2, &e), 0);
    cr_assert_eq(tsr_array_ndim(e), 4);
    grid_is(e, 1, 3, (int64_t[]){2, 2, 2});
    cr_assert_eq(tsr_squeeze(e, NULL, 0, &q), 0);
    cr_assert_eq(tsr_array_ndim(q), 2);
    tsr_array *bad = NULL;
    cr_assert_eq(tsr_reshape(x, 2, (int64_t[]){-1, -1}, &bad), TSR_EINVALID);
    cr_assert_eq(tsr_reshape(x, 2, (int64_t[]){5, -1}, &bad), TSR_ESHAPE);
    cr_assert_eq(tsr_reshape(x, 2, (int64_t[]){INT64_MAX, 4}, &bad), TSR_ESHAPE);
    cr_assert_eq(tsr_squeeze(x, (int[]){0}, 1, &bad), TSR_ESHAPE);
    cr_assert_eq(tsr_expand_dims(x, (int[]){0, 0}, 2, &bad), TSR_EINVALID);
    cr_assert_null(bad);
    tsr_array *arr[] = {x, y, a, b, f, g, e, q};
    for (size_t k = 0; k < 8; k++) tsr_array_free(arr[k]);
}

/* concatenate keeps each operand's chunks along the axis and aligns the others to the first's;
 * dtypes promote as NumPy's; take's grid is X's with the index's along the axis. */
Test(shape_api, concatenate_stack_take_grids) {
    int64_t s1[2] = {5, 6}, c1[2] = {2, 3}, s2[2] = {3, 6}, c2[2] = {3, 2};
    tsr_array *x = src(2, s1, c1, TSR_FLOAT32), *y = src(2, s2, c2, TSR_INT64), *z = NULL;
    tsr_array *k = NULL, *t = NULL, *t2 = NULL;
    cr_assert_eq(tsr_concatenate((tsr_array *[]){x, y, x}, 3, 0, &z), 0, "%s",
                 tsr_client_errmsg(c));
    cr_assert_eq(tsr_array_dtype(z), TSR_FLOAT64);
    grid_is(z, 0, 7, (int64_t[]){2, 2, 1, 3, 2, 2, 1});
    grid_is(z, 1, 2, (int64_t[]){3, 3});
    cr_assert_eq(tsr_stack((tsr_array *[]){x, x}, 2, -1, &k), 0);
    cr_assert_eq(tsr_array_ndim(k), 3);
    grid_is(k, 2, 2, (int64_t[]){1, 1});
    /* One expand_dims copy per operand chunk; the concatenation adds none. */
    cr_assert_eq(tasks(k), 6 + 2 * 6);
    int64_t is[1] = {7}, ic[1] = {4};
    tsr_array *ind = src(1, is, ic, TSR_INT64);
    cr_assert_eq(tsr_take(x, ind, (int[]){-1}, &t), 0, "%s", tsr_client_errmsg(c));
    grid_is(t, 0, 3, (int64_t[]){2, 2, 1});
    grid_is(t, 1, 2, (int64_t[]){4, 3});
    /* Each output chunk: the 2 chunks of x along axis 1, and one index chunk. */
    cr_assert_eq(tasks(t), 6 + 2 + 6);
    cr_assert_eq(tsr_take(x, ind, NULL, &t2), 0, "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_array_ndim(t2), 1);
    cr_assert_eq(tsr_array_shape(t2)[0], 7);
    tsr_array *bad = NULL;
    cr_assert_eq(tsr_take(x, x, (int[]){0}, &bad), TSR_EINVALID);
    cr_assert_eq(tsr_take(x, ind, (int[]){2}, &bad), TSR_EINVALID);
    cr_assert_eq(tsr_concatenate((tsr_array *[]){x, ind}, 2, 0, &bad), TSR_ESHAPE);
    cr_assert_eq(tsr_concatenate(NULL, 0, 0, &bad), TSR_EINVALID);
    cr_assert_eq(tsr_stack((tsr_array *[]){x, y}, 2, 0, &bad), TSR_ESHAPE);
    cr_assert_null(bad);
    tsr_array *arr[] = {x, y, z, k, t, t2, ind};
    for (size_t j = 0; j < 7; j++) tsr_array_free(arr[j]);
}
