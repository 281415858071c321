/* Kernels against naive loops written here, for both dtypes, plus the descriptor checks. */
#include <criterion/criterion.h>
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "kernels/kernels_priv.h"
#include "tsr_config.h"

static const int dtypes[2] = {TSR_FLOAT64, TSR_FLOAT32};

static int64_t nelem(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int a = 0; a < ndim; a++) n *= shape[a];
    return n;
}

/* A buffer of n elements of dtype dt holding x (converted). */
static void *make(int dt, const double *x, int64_t n) {
    void *p = calloc((size_t)(n ? n : 1), 8);
    for (int64_t j = 0; j < n; j++) {
        if (dt == TSR_FLOAT64)
            ((double *)p)[j] = x[j];
        else
            ((float *)p)[j] = (float)x[j];
    }
    return p;
}

static double get(const void *p, int dt, int64_t j) {
    return dt == TSR_FLOAT64 ? ((const double *)p)[j] : (double)((const float *)p)[j];
}

static tsr_chunkview view(void *data, int dt, int ndim, const int64_t *shape) {
    tsr_chunkview v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = (uint8_t)dt;
    v.ndim = (uint8_t)ndim;
    for (int a = 0; a < ndim && a < TSR_MAX_NDIM; a++) v.shape[a] = shape[a];
    return v;
}

static tsr_kdesc desc(int kop, int fn, int dt, int ndim, const int64_t *shape) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = (uint8_t)kop;
    d.fn = (uint8_t)fn;
    d.dtype = (uint8_t)dt;
    d.ndim = (uint8_t)ndim;
    for (int a = 0; a < ndim; a++) d.shape[a] = shape[a];
    return d;
}

static char errbuf[256];

/* Runs d into a fresh output buffer (*outp, caller frees). */
static int run(const tsr_kdesc *d, const tsr_chunkview *in, int nin, void **outp) {
    int64_t n = nelem(d->ndim <= TSR_MAX_NDIM ? d->ndim : 0, d->shape);
    void *o = calloc((size_t)(n ? n : 1), 8);
    tsr_chunkview out = view(o, d->dtype, d->ndim, d->shape);
    *outp = o;
    errbuf[0] = '\0';
    return tsr__kernel_run(d, in, nin, &out, TSR_DEVICE_CPU, errbuf, sizeof errbuf);
}

static double fill_value(int64_t j) {
    return (double)((j * 37) % 23) / 4.0 - 2.5;
}

static double *ramp(int64_t n) {
    double *x = malloc((size_t)(n ? n : 1) * sizeof *x);
    for (int64_t j = 0; j < n; j++) x[j] = fill_value(j);
    return x;
}

Test(kernels, lookup) {
    cr_assert(tsr__kernel_lookup(TSR_KOP_MATMUL, TSR_FLOAT64, TSR_DEVICE_CPU));
    cr_assert(tsr__kernel_lookup(TSR_KOP_ASTYPE, TSR_FLOAT32, TSR_DEVICE_CPU));
    cr_assert_null(tsr__kernel_lookup(TSR_KOP_COUNT, TSR_FLOAT64, TSR_DEVICE_CPU));
    cr_assert(tsr__kernel_lookup(TSR_KOP_FILL, TSR_INT64, TSR_DEVICE_CPU));
    cr_assert(tsr__kernel_lookup(TSR_KOP_FILL, TSR_BOOL, TSR_DEVICE_CPU));
    cr_assert_null(tsr__kernel_lookup(TSR_KOP_RANDOM, TSR_INT64, TSR_DEVICE_CPU));
    cr_assert(tsr__kernel_lookup(TSR_KOP_MATMUL, TSR_BOOL, TSR_DEVICE_CPU));
    cr_assert_null(tsr__kernel_lookup(TSR_KOP_FILL, TSR_DTYPE_COUNT, TSR_DEVICE_CPU));
    cr_assert_null(tsr__kernel_lookup(-1, TSR_FLOAT64, TSR_DEVICE_CPU));
}

Test(kernels, fill) {
    for (int t = 0; t < 2; t++) {
        int dt = dtypes[t];
        double v = 2.25;
        int64_t sh[2] = {3, 5};
        tsr_kdesc d = desc(TSR_KOP_FILL, 0, dt, 2, sh);
        d.nf = 1;
        d.f = &v;
        void *o;
        cr_assert_eq(run(&d, NULL, 0, &o), 0, "%s", errbuf);
        for (int j = 0; j < 15; j++) cr_assert_eq(get(o, dt, j), 2.25);
        free(o);
        d.ndim = 0; /* 0-d: one element */
        cr_assert_eq(run(&d, NULL, 0, &o), 0);
        cr_assert_eq(get(o, dt, 0), 2.25);
        free(o);
        sh[1] = 0; /* zero-size */
        d = desc(TSR_KOP_FILL, 0, dt, 2, sh);
        d.nf = 1;
        d.f = &v;
        cr_assert_eq(run(&d, NULL, 0, &o), 0);
        free(o);
    }
}

Test(kernels, random_chunk_matches_global_index) {
    int64_t gshape[3] = {4, 6, 7}, off[3] = {1, 2, 3}, sh[3] = {2, 3, 4};
    uint64_t seed = 0xFEDCBA9876543210ull;
    int64_t params[7] = {(int64_t)seed, 4, 6, 7, 1, 2, 3};
    for (int t = 0; t < 2; t++) {
        int dt = dtypes[t];
        tsr_kdesc d = desc(TSR_KOP_RANDOM, 0, dt, 3, sh);
        d.ni = 7;
        d.i = params;
        void *o;
        cr_assert_eq(run(&d, NULL, 0, &o), 0, "%s", errbuf);
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 4; c++) {
                    uint64_t g = (uint64_t)(((a + off[0]) * gshape[1] + b + off[1]) * gshape[2] +
                                            c + off[2]);
                    double want = dt == TSR_FLOAT64 ? tsr__random_f64(seed, g)
                                                    : (double)tsr__random_f32(seed, g);
                    cr_assert_eq(get(o, dt, (a * 3 + b) * 4 + c), want);
                }
        free(o);
    }
    /* 0-d: global index 0. */
    int64_t p0 = 5;
    tsr_kdesc d = desc(TSR_KOP_RANDOM, 0, TSR_FLOAT64, 0, NULL);
    d.ni = 1;
    d.i = &p0;
    void *o;
    cr_assert_eq(run(&d, NULL, 0, &o), 0);
    cr_assert_eq(get(o, TSR_FLOAT64, 0), tsr__random_f64(5, 0));
    free(o);
}

/* SPEC §2's formula written out again, to check the vectorised rows against. */
static uint64_t spec_bits(uint64_t s, uint64_t i) {
    uint64_t z = s + (i + 1) * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Rows of every length up to 41 (whole vectors and tails) at global offsets up to 2^62 and
 * seeds that wrap, for both dtypes: each element equals the formula exactly. */
Test(kernels, random_rows_match_formula) {
    uint64_t seeds[3] = {0, 42, UINT64_MAX};
    int64_t starts[4] = {0, 13, (int64_t)1 << 53, ((int64_t)1 << 62) - 7};
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 3; s++)
            for (int g = 0; g < 4; g++)
                for (int64_t len = 1; len <= 41; len++) {
                    int64_t sh[1] = {len};
                    int64_t p[3] = {(int64_t)seeds[s], INT64_MAX, starts[g]};
                    tsr_kdesc d = desc(TSR_KOP_RANDOM, 0, dtypes[t], 1, sh);
                    d.ni = 3;
                    d.i = p;
                    void *o;
                    cr_assert_eq(run(&d, NULL, 0, &o), 0, "%s", errbuf);
                    for (int64_t j = 0; j < len; j++) {
                        uint64_t z = spec_bits(seeds[s], (uint64_t)(starts[g] + j));
                        double want = dtypes[t] == TSR_FLOAT64
                                          ? (double)(z >> 11) / 9007199254740992.0
                                          : (double)((float)(z >> 40) / 16777216.0f);
                        cr_assert_eq(get(o, dtypes[t], j), want, "dt %d seed %d start %d j %lld",
                                     dtypes[t], s, g, (long long)j);
                    }
                    free(o);
                }
    /* Several rows of odd length: each row restarts at its own global index. */
    int64_t sh[2] = {5, 11}, p[5] = {7, 9, 100, 3, 50};
    tsr_kdesc d = desc(TSR_KOP_RANDOM, 0, TSR_FLOAT32, 2, sh);
    d.ni = 5;
    d.i = p;
    void *o;
    cr_assert_eq(run(&d, NULL, 0, &o), 0, "%s", errbuf);
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 11; c++) {
            uint64_t z = spec_bits(7, (uint64_t)((3 + r) * 100 + 50 + c));
            cr_assert_eq(((float *)o)[r * 11 + c], (float)(z >> 40) / 16777216.0f);
        }
    free(o);
}

Test(kernels, arange) {
    for (int t = 0; t < 2; t++) {
        int dt = dtypes[t];
        int64_t sh[1] = {6}, off = 10;
        double f[2] = {-1.5, 0.1};
        tsr_kdesc d = desc(TSR_KOP_ARANGE, 0, dt, 1, sh);
        d.ni = 1;
        d.i = &off;
        d.nf = 2;
        d.f = f;
        void *o;
        cr_assert_eq(run(&d, NULL, 0, &o), 0, "%s", errbuf);
        for (int j = 0; j < 6; j++) {
            double want = -1.5 + (double)(10 + j) * 0.1;
            if (dt == TSR_FLOAT32) want = (double)(float)want;
            cr_assert_eq(get(o, dt, j), want);
        }
        free(o);
    }
}

/* Writes a little .npy by hand (version 1.0, header padded to 128 bytes) and returns the data
 * offset. */
static int64_t write_npy(const char *path, int dt, const int64_t *shape, int ndim,
                         const double *x) {
    char hdr[128];
    char sh[64] = "";
    for (int a = 0; a < ndim; a++) {
        char s[24];
        snprintf(s, sizeof s, "%lld,%s", (long long)shape[a], ndim == 1 ? "" : " ");
        strcat(sh, s);
    }
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                     dt == TSR_FLOAT64 ? "<f8" : "<f4", sh);
    cr_assert(n < 117);
    memset(hdr + n, ' ', 117 - (size_t)n);
    hdr[117] = '\n';
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fwrite("\x93NUMPY\x01\x00\x76\x00", 1, 10, f);
    fwrite(hdr, 1, 118, f);
    int64_t total = nelem(ndim, shape);
    for (int64_t j = 0; j < total; j++) {
        if (dt == TSR_FLOAT64)
            fwrite(&x[j], 8, 1, f);
        else {
            float v = (float)x[j];
            fwrite(&v, 4, 1, f);
        }
    }
    fclose(f);
    return 128;
}

Test(kernels, load_chunks_from_npy) {
    int64_t gshape[3] = {5, 6, 7};
    int64_t total = nelem(3, gshape);
    double *x = ramp(total);
    char path[] = "/tmp/tsr_test_load_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    /* A chunk spanning the trailing axes in full (one run per leading index) and a ragged one. */
    int64_t boxes[3][6] = {{1, 0, 0, 3, 6, 7}, {2, 1, 3, 3, 4, 4}, {4, 5, 6, 1, 1, 1}};
    for (int fdt = 0; fdt < 2; fdt++) {
        int64_t off0 = write_npy(path, fdt, gshape, 3, x);
        for (int t = 0; t < 2; t++) {
            int dt = dtypes[t];
            for (int b = 0; b < 3; b++) {
                const int64_t *off = boxes[b], *sh = boxes[b] + 3;
                int64_t p[8] = {off0, fdt, 5, 6, 7, off[0], off[1], off[2]};
                tsr_kdesc d = desc(TSR_KOP_LOAD, 0, dt, 3, sh);
                d.ni = 8;
                d.i = p;
                d.s = path;
                void *o;
                cr_assert_eq(run(&d, NULL, 0, &o), 0, "%s", errbuf);
                for (int i = 0; i < sh[0]; i++)
                    for (int j = 0; j < sh[1]; j++)
                        for (int k = 0; k < sh[2]; k++) {
                            double v = x[((i + off[0]) * 6 + j + off[1]) * 7 + k + off[2]];
                            if (fdt == TSR_FLOAT32 || dt == TSR_FLOAT32) v = (double)(float)v;
                            cr_assert_eq(get(o, dt, (i * sh[1] + j) * sh[2] + k), v);
                        }
                free(o);
            }
        }
    }
    /* A file shorter than its header says. */
    int64_t big[3] = {50, 6, 7}, p[8] = {128, 0, 50, 6, 7, 40, 0, 0}, sh[3] = {10, 6, 7};
    tsr_kdesc d = desc(TSR_KOP_LOAD, 0, TSR_FLOAT64, 3, sh);
    (void)big;
    d.ni = 8;
    d.i = p;
    d.s = path;
    void *o;
    cr_assert_eq(run(&d, NULL, 0, &o), TSR_ENPY);
    cr_assert(strstr(errbuf, path), "%s", errbuf);
    free(o);
    unlink(path);
    /* A missing file: -errno and the path in the message. */
    cr_assert_eq(run(&d, NULL, 0, &o), -ENOENT);
    cr_assert(strstr(errbuf, path), "%s", errbuf);
    free(o);
    free(x);
}

static double ref_unary(int fn, double x, int dt) {
    if (dt == TSR_FLOAT32) {
        float f = (float)x;
        switch (fn) {
        case TSR_NEG:
            return -f;
        case TSR_ABS:
            return fabsf(f);
        case TSR_EXP:
            return expf(f);
        case TSR_LOG:
            return logf(f);
        case TSR_SQRT:
            return sqrtf(f);
        case TSR_SIN:
            return sinf(f);
        case TSR_COS:
            return cosf(f);
        default:
            return tanhf(f);
        }
    }
    switch (fn) {
    case TSR_NEG:
        return -x;
    case TSR_ABS:
        return fabs(x);
    case TSR_EXP:
        return exp(x);
    case TSR_LOG:
        return log(x);
    case TSR_SQRT:
        return sqrt(x);
    case TSR_SIN:
        return sin(x);
    case TSR_COS:
        return cos(x);
    default:
        return tanh(x);
    }
}

static int same(double a, double b) {
    return (isnan(a) && isnan(b)) || a == b;
}

Test(kernels, unary_all_ops) {
    int64_t sh[2] = {4, 6};
    double *x = ramp(24);
    for (int t = 0; t < 2; t++) {
        int dt = dtypes[t];
        void *xb = make(dt, x, 24);
        tsr_chunkview in = view(xb, dt, 2, sh);
        for (int fn = TSR_NEG; fn <= TSR_TANH; fn++) {
            tsr_kdesc d = desc(TSR_KOP_UNARY, fn, dt, 2, sh);
            void *o;
            cr_assert_eq(run(&d, &in, 1, &o), 0, "%s", errbuf);
            for (int j = 0; j < 24; j++)
                cr_assert(same(get(o, dt, j), ref_unary(fn, get(xb, dt, j), dt)), "fn %d j %d", fn,
                          j);
            free(o);
        }
        free(xb);
    }
    free(x);
}

static double ref_binary(int fn, double x, double y, int dt) {
    if (dt == TSR_FLOAT32) {
        float a = (float)x, b = (float)y;
        switch (fn) {
        case TSR_ADD:
            return a + b;
        case TSR_SUB:
            return a - b;
        case TSR_MUL:
            return a * b;
        case TSR_DIV:
            return a / b;
        case TSR_POW:
            return powf(a, b);
        case TSR_MAXIMUM:
            return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
        default:
            return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
        }
    }
    switch (fn) {
    case TSR_ADD:
        return x + y;
    case TSR_SUB:
        return x - y;
    case TSR_MUL:
        return x * y;
    case TSR_DIV:
        return x / y;
    case TSR_POW:
        return pow(x, y);
    case TSR_MAXIMUM:
        return isnan(x) || isnan(y) ? NAN : x > y ? x : y;
    default:
        return isnan(x) || isnan(y) ? NAN : x < y ? x : y;
    }
}

/* Element of a right-aligned broadcast input at output multi-index idx. */
static int64_t bcast_index(int ndim, const int64_t *shape, int ond, const int64_t *idx) {
    int64_t k = 0;
    for (int a = 0; a < ndim; a++) {
        int64_t i = shape[a] == 1 ? 0 : idx[ond - ndim + a];
        k = k * shape[a] + i;
    }
    return k;
}

Test(kernels, binary_broadcasting) {
    int64_t osh[3] = {2, 3, 4};
    struct {
        int na, nb;
        int64_t a[3], b[3];
    } cases[] = {
        {3, 3, {2, 3, 4}, {2, 3, 4}}, {3, 2, {2, 3, 4}, {3, 1}}, {3, 1, {2, 3, 4}, {4}},
        {3, 3, {2, 1, 4}, {1, 3, 1}}, {0, 3, {0}, {2, 3, 4}},    {2, 3, {3, 4}, {2, 1, 1}},
        {3, 2, {1, 1, 1}, {1, 4}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t na = nelem(cases[c].na, cases[c].a), nb = nelem(cases[c].nb, cases[c].b);
        double *xa = ramp(na), *xb = ramp(nb);
        for (int64_t j = 0; j < nb; j++) xb[j] = xb[j] * 0.5 + 0.25;
        if (na > 2) xa[2] = NAN; /* NaN in either operand propagates through maximum/minimum */
        if (nb > 1) xb[1] = NAN;
        for (int t = 0; t < 2; t++) {
            int dt = dtypes[t];
            /* Mixed input dtypes: b comes in the other dtype. */
            int bdt = (c % 2) ? dtypes[1 - t] : dt;
            void *ba = make(dt, xa, na), *bb = make(bdt, xb, nb);
            tsr_chunkview in[2] = {view(ba, dt, cases[c].na, cases[c].a),
                                   view(bb, bdt, cases[c].nb, cases[c].b)};
            for (int fn = TSR_ADD; fn <= TSR_MINIMUM; fn++) {
                tsr_kdesc d = desc(TSR_KOP_BINARY, fn, dt, 3, osh);
                void *o;
                cr_assert_eq(run(&d, in, 2, &o), 0, "%s", errbuf);
                int64_t idx[3];
                for (idx[0] = 0; idx[0] < 2; idx[0]++)
                    for (idx[1] = 0; idx[1] < 3; idx[1]++)
                        for (idx[2] = 0; idx[2] < 4; idx[2]++) {
                            double x = get(ba, dt, bcast_index(cases[c].na, cases[c].a, 3, idx));
                            double y = get(bb, bdt, bcast_index(cases[c].nb, cases[c].b, 3, idx));
                            double got = get(o, dt, (idx[0] * 3 + idx[1]) * 4 + idx[2]);
                            cr_assert(same(got, ref_binary(fn, x, y, dt)),
                                      "case %zu fn %d dt %d: %g vs %g", c, fn, dt, got,
                                      ref_binary(fn, x, y, dt));
                        }
                free(o);
            }
            free(ba);
            free(bb);
        }
        free(xa);
        free(xb);
    }
}

Test(kernels, binary_scalar_both_sides) {
    int64_t sh[1] = {9};
    double *x = ramp(9);
    x[4] = NAN;
    for (int t = 0; t < 2; t++) {
        int dt = dtypes[t];
        void *xb = make(dt, x, 9);
        tsr_chunkview in = view(xb, dt, 1, sh);
        for (int fn = TSR_ADD; fn <= TSR_MINIMUM; fn++)
            for (int64_t first = 0; first < 2; first++) {
                double s = 1.5;
                tsr_kdesc d = desc(TSR_KOP_BINARY_SCALAR, fn, dt, 1, sh);
                d.nf = 1;
                d.f = &s;
                d.ni = 1;
                d.i = &first;
                void *o;
                cr_assert_eq(run(&d, &in, 1, &o), 0, "%s", errbuf);
                for (int j = 0; j < 9; j++) {
                    double v = get(xb, dt, j);
                    double want = first ? ref_binary(fn, s, v, dt) : ref_binary(fn, v, s, dt);
                    cr_assert(same(get(o, dt, j), want));
                }
                free(o);
            }
        free(xb);
    }
    free(x);
}

/* Naive triple loop in double; mag (if not NULL) gets each element's sum of |terms|, the scale
 * of its rounding error. */
static void ref_matmul(const double *a, const double *b, double *c, int64_t m, int64_t k, int64_t n,
                       double *mag) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, t = fabs(c[i * n + j]);
            for (int64_t p = 0; p < k; p++) {
                s += a[i * k + p] * b[p * n + j];
                t += fabs(a[i * k + p] * b[p * n + j]);
            }
            c[i * n + j] += s;
            if (mag) mag[i * n + j] = t;
        }
}

static void check_matmul(int dt, int adt, int bdt, int64_t m, int64_t k, int64_t n, int bvec,
                         int mode /* 0: none, 1: Cprev copy, 2: Cprev in place */) {
    double *a = ramp(m * k), *b = ramp(k * n), *c = ramp(m * n);
    for (int64_t j = 0; j < k * n; j++) b[j] = b[j] * 0.3 - 0.1;
    double *want = calloc((size_t)(m * n + 1), sizeof *want);
    if (mode)
        for (int64_t j = 0; j < m * n; j++) want[j] = get(c, TSR_FLOAT64, j);
    void *ba = make(adt, a, m * k), *bb = make(bdt, b, k * n), *bc = make(dt, c, m * n);
    double *ra = malloc((size_t)(m * k + 1) * 8), *rb = malloc((size_t)(k * n + 1) * 8);
    for (int64_t j = 0; j < m * k; j++) ra[j] = get(ba, adt, j);
    for (int64_t j = 0; j < k * n; j++) rb[j] = get(bb, bdt, j);
    if (mode)
        for (int64_t j = 0; j < m * n; j++) want[j] = get(bc, dt, j);
    double *mag = malloc((size_t)(m * n + 1) * sizeof *mag);
    ref_matmul(ra, rb, want, m, k, n, mag);

    int64_t ash[2] = {m, k}, bsh[2] = {k, n}, osh[2] = {m, n};
    int ond = bvec ? 1 : 2;
    tsr_chunkview in[3] = {view(ba, adt, 2, ash), view(bb, bdt, ond, bsh), view(bc, dt, ond, osh)};
    tsr_kdesc d = desc(TSR_KOP_MATMUL, 0, dt, ond, osh);
    tsr_chunkview out;
    void *o = NULL;
    if (mode == 2) {
        out = view(bc, dt, ond, osh);
        cr_assert_eq(tsr__kernel_run(&d, in, 3, &out, TSR_DEVICE_CPU, errbuf, sizeof errbuf), 0,
                     "%s", errbuf);
    } else {
        cr_assert_eq(run(&d, in, mode ? 3 : 2, &o), 0, "%s", errbuf);
    }
    const void *res = mode == 2 ? bc : o;
    /* The classic bound of a k-term dot product's rounding: k + 2 units of the dtype's roundoff
     * (doubled) at the scale of the terms' absolute sum. A wrong product is off by O(mag). */
    double tol = 2.0 * (double)(k + 2) * (dt == TSR_FLOAT64 ? 0x1p-53 : 0x1p-24);
    for (int64_t j = 0; j < m * n; j++)
        cr_assert(fabs(get(res, dt, j) - want[j]) <= tol * (1 + mag[j]),
                  "m%lld k%lld n%lld mode %d j %lld: %g vs %g", (long long)m, (long long)k,
                  (long long)n, mode, (long long)j, get(res, dt, j), want[j]);
    free(o);
    free(a), free(b), free(c), free(want), free(mag), free(ba), free(bb), free(bc), free(ra),
        free(rb);
}

Test(kernels, matmul) {
    for (int t = 0; t < 2; t++) {
        int dt = dtypes[t];
        for (int mode = 0; mode < 3; mode++) {
            check_matmul(dt, dt, dt, 5, 7, 3, 0, mode);
            check_matmul(dt, dt, dt, 17, 33, 9, 0, mode);
            check_matmul(dt, dt, dt, 6, 4, 1, 1, mode); /* 1-d B */
            check_matmul(dt, dt, dt, 3, 0, 4, 0, mode); /* k = 0 */
        }
        check_matmul(dt, TSR_FLOAT32, TSR_FLOAT64, 8, 5, 6, 0, 1); /* mixed inputs */
        check_matmul(dt, TSR_FLOAT64, TSR_FLOAT32, 8, 5, 1, 1, 0);
        check_matmul(dt, dt, dt, 0, 3, 4, 0, 0);
    }
}

/* Tile shapes on both sides of the rule that sends a product to libxsmm instead of OpenBLAS
 * (kernels/gemm.c: both output sides in [96, 256], k at most 256), each with and without a
 * running sum, in place too: whichever library computes it, the same naive reference. */
Test(kernels, matmul_tile_shapes) {
    static const int64_t shapes[][3] = {
        {128, 128, 128}, {256, 200, 96},  {97, 256, 250}, {96, 1, 96},     {256, 256, 256},
        {95, 128, 128},  {128, 257, 128}, {257, 64, 128}, {300, 128, 300},
    };
#if TSR_HAVE_XSMM
    cr_assert(tsr__gemm_small_kernel(128, 128, 128) && tsr__gemm_small_kernel(256, 256, 256));
    cr_assert(tsr__gemm_small_kernel(97, 96, 1) && !tsr__gemm_small_kernel(95, 128, 128));
    cr_assert(!tsr__gemm_small_kernel(128, 128, 257) && !tsr__gemm_small_kernel(257, 128, 64));
#else
    cr_assert(!tsr__gemm_small_kernel(128, 128, 128)); /* built without libxsmm: OpenBLAS only */
#endif
    for (int t = 0; t < 2; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int mode = 0; mode < 3; mode++)
                check_matmul(dtypes[t], dtypes[t], dtypes[t], shapes[s][0], shapes[s][1],
                             shapes[s][2], 0, mode);
}

Test(kernels, transpose_nd) {
    int64_t sh3[3] = {3, 4, 5};
    int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    double *x = ramp(60);
    for (int t = 0; t < 2; t++) {
        int dt = dtypes[t];
        void *xb = make(dt, x, 60);
        tsr_chunkview in = view(xb, dt, 3, sh3);
        for (int p = 0; p < 6; p++) {
            int64_t perm[3], osh[3];
            for (int j = 0; j < 3; j++) {
                perm[j] = perms[p][j];
                osh[j] = sh3[perm[j]];
            }
            tsr_kdesc d = desc(TSR_KOP_TRANSPOSE, 0, dt, 3, osh);
            d.ni = 3;
            d.i = perm;
            void *o;
            cr_assert_eq(run(&d, &in, 1, &o), 0, "%s", errbuf);
            int64_t oi[3];
            for (oi[0] = 0; oi[0] < osh[0]; oi[0]++)
                for (oi[1] = 0; oi[1] < osh[1]; oi[1]++)
                    for (oi[2] = 0; oi[2] < osh[2]; oi[2]++) {
                        int64_t ii[3];
                        for (int j = 0; j < 3; j++) ii[perm[j]] = oi[j];
                        double want = get(xb, dt, (ii[0] * 4 + ii[1]) * 5 + ii[2]);
                        cr_assert_eq(get(o, dt, (oi[0] * osh[1] + oi[1]) * osh[2] + oi[2]), want);
                    }
            free(o);
        }
        free(xb);
    }
    free(x);
    /* 2-d across several tiles, ragged, and 4-d with unit axes. */
    int64_t m = 70, n = 45, sh2[2] = {70, 45}, osh2[2] = {45, 70}, perm2[2] = {1, 0};
    double *y = ramp(m * n);
    for (int64_t j = 0; j < m * n; j++) y[j] += (double)j;
    tsr_chunkview in2 = view(y, TSR_FLOAT64, 2, sh2);
    tsr_kdesc d2 = desc(TSR_KOP_TRANSPOSE, 0, TSR_FLOAT64, 2, osh2);
    d2.ni = 2;
    d2.i = perm2;
    void *o;
    cr_assert_eq(run(&d2, &in2, 1, &o), 0, "%s", errbuf);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) cr_assert_eq(((double *)o)[i * m + j], y[j * n + i]);
    free(o);
    int64_t sh4[4] = {1, 6, 1, 7}, perm4[4] = {3, 2, 0, 1}, osh4[4] = {7, 1, 1, 6};
    tsr_chunkview in4 = view(y, TSR_FLOAT64, 4, sh4);
    tsr_kdesc d4 = desc(TSR_KOP_TRANSPOSE, 0, TSR_FLOAT64, 4, osh4);
    d4.ni = 4;
    d4.i = perm4;
    cr_assert_eq(run(&d4, &in4, 1, &o), 0, "%s", errbuf);
    for (int64_t i = 0; i < 7; i++)
        for (int64_t j = 0; j < 6; j++) cr_assert_eq(((double *)o)[i * 6 + j], y[j * 7 + i]);
    free(o);
    free(y);
}

/* Naive reduction over the axes in mask, terms in row-major order, accumulated in double. */
static void ref_reduce(int fn, const void *x, int dt, const int64_t *sh, int mask, double *out,
                       int64_t nout) {
    for (int64_t j = 0; j < nout; j++)
        out[j] = fn == TSR_MAX ? -INFINITY : fn == TSR_MIN ? INFINITY : 0.0;
    int64_t i[3];
    for (i[0] = 0; i[0] < sh[0]; i[0]++)
        for (i[1] = 0; i[1] < sh[1]; i[1]++)
            for (i[2] = 0; i[2] < sh[2]; i[2]++) {
                int64_t o = 0;
                for (int a = 0; a < 3; a++)
                    if (!(mask & (1 << a))) o = o * sh[a] + i[a];
                double v = get(x, dt, (i[0] * sh[1] + i[1]) * sh[2] + i[2]);
                if (fn == TSR_SUM || fn == TSR_MEAN)
                    out[o] += v;
                else if (isnan(out[o]) || isnan(v))
                    out[o] = NAN;
                else if (fn == TSR_MAX)
                    out[o] = v > out[o] ? v : out[o];
                else
                    out[o] = v < out[o] ? v : out[o];
            }
}

Test(kernels, reduce_axes) {
    int64_t sh[3] = {3, 4, 5};
    double *x = ramp(60);
    for (int64_t j = 0; j < 60; j++) x[j] = x[j] * 1.1e-3 + 1.0 / (double)(j + 3);
    for (int nanc = 0; nanc < 2; nanc++) {
        if (nanc) x[17] = NAN;
        for (int t = 0; t < 2; t++) {
            int dt = dtypes[t];
            void *xb = make(dt, x, 60);
            tsr_chunkview in = view(xb, dt, 3, sh);
            for (int fn = TSR_SUM; fn <= TSR_MIN; fn++)
                for (int mask = 0; mask < 8; mask++) {
                    int64_t axes[3], osh[3];
                    int na = 0, od = 0;
                    for (int a = 0; a < 3; a++) {
                        if (mask & (1 << a))
                            axes[na++] = a;
                        else
                            osh[od++] = sh[a];
                    }
                    tsr_kdesc d = desc(TSR_KOP_REDUCE, fn, dt, od, osh);
                    d.ni = (uint32_t)na;
                    d.i = na ? axes : NULL;
                    void *o;
                    cr_assert_eq(run(&d, &in, 1, &o), 0, "%s", errbuf);
                    int64_t nout = nelem(od, osh);
                    double want[60];
                    ref_reduce(fn, xb, dt, sh, mask, want, nout);
                    for (int64_t j = 0; j < nout; j++) {
                        double w = dt == TSR_FLOAT32 ? (double)(float)want[j] : want[j];
                        cr_assert(same(get(o, dt, j), w),
                                  "fn %d mask %d dt %d j %lld: %.17g vs %.17g", fn, mask, dt,
                                  (long long)j, get(o, dt, j), w);
                    }
                    free(o);
                }
            free(xb);
        }
    }
    free(x);
}

Test(kernels, combine_order_and_scale) {
    int64_t sh[1] = {3};
    /* (1e16 + 1) - 1e16 is 0 in double: combining in any other order would give 1. */
    double a[3] = {1e16, 2.0, NAN}, b[3] = {1.0, 5.0, 1.0}, c[3] = {-1e16, -3.0, 2.0};
    double scale = 0.5, one = 1.0;
    void *o;
    tsr_chunkview in[3] = {view(a, TSR_FLOAT64, 1, sh), view(b, TSR_FLOAT64, 1, sh),
                           view(c, TSR_FLOAT64, 1, sh)};
    tsr_kdesc d = desc(TSR_KOP_COMBINE, TSR_SUM, TSR_FLOAT64, 1, sh);
    d.nf = 1;
    d.f = &one;
    cr_assert_eq(run(&d, in, 3, &o), 0, "%s", errbuf);
    cr_assert_eq(((double *)o)[0], 0.0);
    cr_assert_eq(((double *)o)[1], 4.0);
    cr_assert(isnan(((double *)o)[2]));
    free(o);
    d.fn = TSR_MEAN;
    d.f = &scale;
    cr_assert_eq(run(&d, in, 3, &o), 0);
    cr_assert_eq(((double *)o)[1], 2.0);
    free(o);
    d.fn = TSR_MAX;
    d.f = &one;
    cr_assert_eq(run(&d, in, 3, &o), 0);
    cr_assert_eq(((double *)o)[0], 1e16);
    cr_assert_eq(((double *)o)[1], 5.0);
    cr_assert(isnan(((double *)o)[2]));
    free(o);
    d.fn = TSR_MIN;
    cr_assert_eq(run(&d, in, 3, &o), 0);
    cr_assert_eq(((double *)o)[0], -1e16);
    cr_assert_eq(((double *)o)[1], -3.0);
    cr_assert(isnan(((double *)o)[2]));
    free(o);
    /* float32 output, mixed input dtypes, many elements (several blocks). */
    int64_t n = 3000, shn[1] = {3000};
    double *x = ramp(n), *y = ramp(n);
    for (int64_t j = 0; j < n; j++) y[j] = 1.0 / (double)(j + 1);
    void *xf = make(TSR_FLOAT32, x, n);
    tsr_chunkview in2[2] = {view(xf, TSR_FLOAT32, 1, shn), view(y, TSR_FLOAT64, 1, shn)};
    d = desc(TSR_KOP_COMBINE, TSR_MEAN, TSR_FLOAT32, 1, shn);
    d.nf = 1;
    d.f = &scale;
    cr_assert_eq(run(&d, in2, 2, &o), 0, "%s", errbuf);
    for (int64_t j = 0; j < n; j++) {
        float want = (float)(((double)((float *)xf)[j] + y[j]) * 0.5);
        cr_assert_eq(((float *)o)[j], want);
    }
    free(o);
    free(x), free(y), free(xf);
}

Test(kernels, assemble_from_several_inputs) {
    /* Output box rows [2, 6) x cols [3, 8) of a global array whose value at (r, c) is
     * 100r + c, from four inputs that tile it with overhangs. */
    int64_t ooff[2] = {2, 3}, osh[2] = {4, 5};
    int64_t ioffs[4][2] = {{0, 0}, {0, 5}, {4, 0}, {4, 5}},
            ish[4][2] = {{4, 5}, {4, 4}, {3, 5}, {3, 4}};
    for (int t = 0; t < 2; t++) {
        int dt = dtypes[t];
        tsr_chunkview in[4];
        void *bufs[4];
        for (int k = 0; k < 4; k++) {
            double v[20];
            for (int r = 0; r < ish[k][0]; r++)
                for (int c = 0; c < ish[k][1]; c++)
                    v[r * ish[k][1] + c] =
                        100.0 * (double)(r + ioffs[k][0]) + (double)(c + ioffs[k][1]);
            int idt = k == 2 ? dtypes[1 - t] : dt; /* one input in the other dtype */
            bufs[k] = make(idt, v, ish[k][0] * ish[k][1]);
            in[k] = view(bufs[k], idt, 2, ish[k]);
        }
        int64_t p[10] = {ooff[0], ooff[1]};
        for (int k = 0; k < 4; k++) {
            p[2 + 2 * k] = ioffs[k][0];
            p[3 + 2 * k] = ioffs[k][1];
        }
        tsr_kdesc d = desc(TSR_KOP_ASSEMBLE, 0, dt, 2, osh);
        d.ni = 10;
        d.i = p;
        void *o;
        cr_assert_eq(run(&d, in, 4, &o), 0, "%s", errbuf);
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 5; c++)
                cr_assert_eq(get(o, dt, r * 5 + c), 100.0 * (r + 2) + (c + 3));
        free(o);
        /* Without the last input a corner is uncovered. */
        d.ni = 8;
        cr_assert_eq(run(&d, in, 3, &o), TSR_EINVALID);
        free(o);
        for (int k = 0; k < 4; k++) free(bufs[k]);
    }
}

Test(kernels, astype) {
    int64_t sh[2] = {2, 3};
    double x[6] = {1.0 / 3, -2.5, 1e40, 0.0, -0.0, 7.0};
    void *o;
    tsr_chunkview in = view(x, TSR_FLOAT64, 2, sh);
    tsr_kdesc d = desc(TSR_KOP_ASTYPE, 0, TSR_FLOAT32, 2, sh);
    cr_assert_eq(run(&d, &in, 1, &o), 0, "%s", errbuf);
    for (int j = 0; j < 6; j++) cr_assert(same(((float *)o)[j], (float)x[j]));
    free(o);
}

/* Runs d twice: out of place, then with the output in a copy of input k's bytes (in[k] pointing
 * at the same copy), and expects the same bytes. */
static void check_in_place(const tsr_kdesc *d, const tsr_chunkview *in, int nin, int k) {
    cr_assert(tsr__kernel_may_alias(d, in, nin, k), "kop %d input %d", d->kop, k);
    void *o;
    cr_assert_eq(run(d, in, nin, &o), 0, "%s", errbuf);
    size_t nbytes = (size_t)tsr__kdesc_nbytes(d);
    void *shared = malloc(nbytes ? nbytes : 1);
    memcpy(shared, in[k].data, nbytes);
    tsr_chunkview vin[8];
    memcpy(vin, in, (size_t)nin * sizeof *in);
    vin[k].data = shared;
    tsr_chunkview out = view(shared, d->dtype, d->ndim, d->shape);
    cr_assert_eq(tsr__kernel_run(d, vin, nin, &out, TSR_DEVICE_CPU, errbuf, sizeof errbuf), 0, "%s",
                 errbuf);
    cr_assert_eq(memcmp(shared, o, nbytes), 0, "kop %d fn %d input %d differs in place", d->kop,
                 d->fn, k);
    free(shared);
    free(o);
}

Test(kernels, in_place_matches_out_of_place) {
    int64_t n = 2500, sh[2] = {50, 50}, row[2] = {1, 50}; /* 2500 > one combine block */
    double *x = ramp(n), *y = ramp(n), *z = ramp(n);
    for (int64_t j = 0; j < n; j++) {
        y[j] = y[j] * 0.7 + 3.0;
        z[j] = 1.0 / (double)(j + 2);
    }
    for (int t = 0; t < 2; t++) {
        int dt = dtypes[t], other = dtypes[1 - t];
        void *bx = make(dt, x, n), *by = make(dt, y, n), *bz = make(other, z, n);
        void *brow = make(dt, y, 50);
        tsr_chunkview vx = view(bx, dt, 2, sh), vy = view(by, dt, 2, sh),
                      vz = view(bz, other, 2, sh);
        tsr_chunkview vrow = view(brow, dt, 2, row);
        for (int fn = TSR_NEG; fn <= TSR_TANH; fn++) {
            tsr_kdesc d = desc(TSR_KOP_UNARY, fn, dt, 2, sh);
            check_in_place(&d, &vx, 1, 0);
        }
        for (int fn = TSR_ADD; fn <= TSR_MINIMUM; fn++) {
            tsr_kdesc d = desc(TSR_KOP_BINARY, fn, dt, 2, sh);
            tsr_chunkview same2[2] = {vx, vy}, bcast[2] = {vrow, vx}, mixed[2] = {vx, vz};
            check_in_place(&d, same2, 2, 0);
            check_in_place(&d, same2, 2, 1);
            check_in_place(&d, bcast, 2, 1);
            check_in_place(&d, mixed, 2, 0);
            cr_assert(!tsr__kernel_may_alias(&d, bcast, 2, 0), "a broadcast input never aliases");
            cr_assert(!tsr__kernel_may_alias(&d, mixed, 2, 1), "nor one of another dtype");
            double s = 1.25;
            int64_t first = fn % 2;
            tsr_kdesc ds = desc(TSR_KOP_BINARY_SCALAR, fn, dt, 2, sh);
            ds.nf = 1;
            ds.f = &s;
            ds.ni = 1;
            ds.i = &first;
            check_in_place(&ds, &vy, 1, 0);
        }
        tsr_kdesc a = desc(TSR_KOP_ASTYPE, 0, dt, 2, sh);
        check_in_place(&a, &vx, 1, 0);
        cr_assert(!tsr__kernel_may_alias(&a, &vz, 1, 0), "astype between dtypes never aliases");
        double scale = 0.5;
        for (int fn = TSR_SUM; fn <= TSR_MIN; fn++) {
            tsr_kdesc c = desc(TSR_KOP_COMBINE, fn, dt, 2, sh);
            c.nf = 1;
            c.f = &scale;
            tsr_chunkview three[3] = {vx, vz, vy};
            check_in_place(&c, three, 3, 0);
            check_in_place(&c, three, 3, 2);
        }
        /* Matmul accumulation: Cprev only. */
        tsr_kdesc m = desc(TSR_KOP_MATMUL, 0, dt, 2, sh);
        tsr_chunkview mm[3] = {vx, vy, vy};
        check_in_place(&m, mm, 3, 2);
        cr_assert(!tsr__kernel_may_alias(&m, mm, 3, 0));
        cr_assert(!tsr__kernel_may_alias(&m, mm, 2, 1));
        /* Reductions change the shape; out-of-range inputs are refused. */
        int64_t axes[1] = {0};
        tsr_kdesc r = desc(TSR_KOP_REDUCE, TSR_SUM, dt, 1, sh + 1);
        r.ni = 1;
        r.i = axes;
        cr_assert(!tsr__kernel_may_alias(&r, &vx, 1, 0));
        cr_assert(!tsr__kernel_may_alias(&a, &vx, 1, 1));
        cr_assert(!tsr__kernel_may_alias(&a, &vx, 1, -1));
        free(bx), free(by), free(bz), free(brow);
    }
    free(x), free(y), free(z);
}

Test(kernels, zero_size_chunks) {
    int64_t sh[2] = {0, 4}, rsh[1] = {4}, axes[1] = {0};
    double dummy = 0;
    tsr_chunkview in = view(&dummy, TSR_FLOAT64, 2, sh);
    void *o;
    tsr_kdesc d = desc(TSR_KOP_UNARY, TSR_EXP, TSR_FLOAT64, 2, sh);
    cr_assert_eq(run(&d, &in, 1, &o), 0, "%s", errbuf);
    free(o);
    d = desc(TSR_KOP_REDUCE, TSR_SUM, TSR_FLOAT64, 1, rsh);
    d.ni = 1;
    d.i = axes;
    cr_assert_eq(run(&d, &in, 1, &o), 0, "%s", errbuf);
    for (int j = 0; j < 4; j++) cr_assert_eq(((double *)o)[j], 0.0);
    free(o);
    d.fn = TSR_MAX; /* NumPy refuses this too */
    cr_assert_eq(run(&d, &in, 1, &o), TSR_EINVALID);
    free(o);
    /* The empty axis innermost: (4, 0) summed over axis 1. */
    int64_t sh2[2] = {4, 0}, axes2[1] = {1};
    in = view(&dummy, TSR_FLOAT32, 2, sh2);
    d = desc(TSR_KOP_REDUCE, TSR_SUM, TSR_FLOAT32, 1, rsh);
    d.ni = 1;
    d.i = axes2;
    cr_assert_eq(run(&d, &in, 1, &o), 0, "%s", errbuf);
    for (int j = 0; j < 4; j++) cr_assert_eq(((float *)o)[j], 0.0f);
    free(o);
}

Test(kernels, malformed_descriptors) {
    int64_t sh[2] = {2, 3}, bad[2] = {-1, 3}, sh3[2] = {3, 2};
    double x[6] = {0}, y[6] = {0}, v = 1;
    tsr_chunkview in[2] = {view(x, TSR_FLOAT64, 2, sh), view(y, TSR_FLOAT64, 2, sh3)};
    void *o;
    tsr_kdesc d;

    d = desc(TSR_KOP_COUNT, 0, TSR_FLOAT64, 2, sh);
    cr_assert_eq(run(&d, NULL, 0, &o), TSR_EINVALID);
    free(o);
    d = desc(TSR_KOP_FILL, 0, 7, 2, sh); /* bad dtype */
    cr_assert_eq(run(&d, NULL, 0, &o), TSR_EINVALID);
    free(o);
    d = desc(TSR_KOP_FILL, 0, TSR_FLOAT64, 2, sh); /* no value */
    cr_assert_eq(run(&d, NULL, 0, &o), TSR_EINVALID);
    cr_assert(strlen(errbuf) > 0);
    free(o);
    d = desc(TSR_KOP_FILL, 0, TSR_FLOAT64, 2, sh);
    d.ndim = 9; /* ndim > max */
    d.nf = 1;
    d.f = &v;
    cr_assert_eq(run(&d, NULL, 0, &o), TSR_EINVALID);
    free(o);
    d = desc(TSR_KOP_UNARY, 99, TSR_FLOAT64, 2, sh); /* unknown op */
    cr_assert_eq(run(&d, in, 1, &o), TSR_EINVALID);
    free(o);
    d = desc(TSR_KOP_UNARY, TSR_EXP, TSR_FLOAT64, 2, sh); /* wrong input count */
    cr_assert_eq(run(&d, in, 2, &o), TSR_EINVALID);
    free(o);
    d = desc(TSR_KOP_BINARY, TSR_ADD, TSR_FLOAT64, 2, sh); /* does not broadcast */
    cr_assert_eq(run(&d, in, 2, &o), TSR_EINVALID);
    cr_assert(strstr(errbuf, "broadcast"), "%s", errbuf);
    free(o);
    d = desc(TSR_KOP_MATMUL, 0, TSR_FLOAT64, 2, sh); /* (2x3) @ (3x2) is 2x2, not 2x3 */
    cr_assert_eq(run(&d, in, 2, &o), TSR_EINVALID);
    free(o);
    int64_t perm[2] = {0, 0};
    d = desc(TSR_KOP_TRANSPOSE, 0, TSR_FLOAT64, 2, sh);
    d.ni = 2;
    d.i = perm;
    cr_assert_eq(run(&d, in, 1, &o), TSR_EINVALID);
    free(o);
    int64_t axes[2] = {1, 0};
    d = desc(TSR_KOP_REDUCE, TSR_SUM, TSR_FLOAT64, 0, NULL);
    d.ni = 2;
    d.i = axes; /* not ascending */
    cr_assert_eq(run(&d, in, 1, &o), TSR_EINVALID);
    free(o);
    int64_t rp[5] = {1, 2, 3, 1, 1}; /* chunk overhangs the global shape */
    d = desc(TSR_KOP_RANDOM, 0, TSR_FLOAT64, 2, sh);
    d.ni = 5;
    d.i = rp;
    cr_assert_eq(run(&d, NULL, 0, &o), TSR_EINVALID);
    free(o);
    d.ni = 3; /* wrong parameter count */
    cr_assert_eq(run(&d, NULL, 0, &o), TSR_EINVALID);
    free(o);
    int64_t lp[6] = {64, 5, 2, 3, 0, 0}; /* bad file dtype */
    d = desc(TSR_KOP_LOAD, 0, TSR_FLOAT64, 2, sh);
    d.ni = 6;
    d.i = lp;
    d.s = "/nonexistent";
    cr_assert_eq(run(&d, NULL, 0, &o), TSR_EINVALID);
    free(o);
    d = desc(TSR_KOP_FILL, 0, TSR_FLOAT64, 2, bad); /* negative shape */
    d.nf = 1;
    d.f = &v;
    tsr_chunkview out = view(x, TSR_FLOAT64, 2, bad);
    cr_assert_eq(tsr__kernel_run(&d, NULL, 0, &out, TSR_DEVICE_CPU, errbuf, sizeof errbuf),
                 TSR_EINVALID);
    tsr_chunkview nodata = view(NULL, TSR_FLOAT64, 2, sh);
    d = desc(TSR_KOP_UNARY, TSR_EXP, TSR_FLOAT64, 2, sh);
    cr_assert_eq(run(&d, &nodata, 1, &o), TSR_EINVALID);
    free(o);
    cr_assert_eq(tsr__kernel_run(NULL, NULL, 0, NULL, TSR_DEVICE_CPU, errbuf, sizeof errbuf),
                 TSR_EINVALID);
}

Test(kernels, flops) {
    int64_t osh[2] = {10, 20}, ash[2] = {10, 30}, bsh[2] = {30, 20};
    tsr_chunkview in[2] = {view(NULL, TSR_FLOAT64, 2, ash), view(NULL, TSR_FLOAT64, 2, bsh)};
    tsr_kdesc d = desc(TSR_KOP_MATMUL, 0, TSR_FLOAT64, 2, osh);
    cr_assert_eq(tsr__kop_flops(d.kop, d.ndim, d.shape, 2, in[0].ndim, in[0].shape),
                 2.0 * 10 * 20 * 30);
    d = desc(TSR_KOP_UNARY, TSR_EXP, TSR_FLOAT64, 2, osh);
    cr_assert_eq(tsr__kop_flops(d.kop, d.ndim, d.shape, 1, in[0].ndim, in[0].shape), 200.0);
}

/* The library only reads OpenBLAS's process-wide thread count (the program sets it). */
Test(kernels, blas_threads_read_back) {
    openblas_set_num_threads(1);
    cr_assert_eq(tsr__kernels_blas_threads(), 1);
}

/* int64 and bool kernels against values written out by hand (NumPy's, on x86-64): wrapping
 * arithmetic, float -> int64 of NaN/inf/out of range, int64 sums past 2^53, comparisons in the
 * promoted dtype, predicates, where. */
Test(kernels, int64_and_bool) {
    int64_t sh[1] = {4};
    int64_t xi[4] = {INT64_MAX, INT64_MIN, -7, (1LL << 53) + 1};
    int64_t yi[4] = {1, -1, 2, 1};
    tsr_chunkview in[3] = {view(xi, TSR_INT64, 1, sh), view(yi, TSR_INT64, 1, sh)};
    void *o;
    tsr_kdesc d = desc(TSR_KOP_BINARY, TSR_ADD, TSR_INT64, 1, sh);
    cr_assert_eq(run(&d, in, 2, &o), 0, "%s", errbuf);
    int64_t want_add[4] = {INT64_MIN, INT64_MAX, -5, (1LL << 53) + 2};
    cr_assert_arr_eq(o, want_add, sizeof want_add);
    free(o);
    d = desc(TSR_KOP_BINARY, TSR_MUL, TSR_INT64, 1, sh);
    cr_assert_eq(run(&d, in, 2, &o), 0, "%s", errbuf);
    int64_t want_mul[4] = {INT64_MAX, INT64_MIN, -14, (1LL << 53) + 1};
    cr_assert_arr_eq(o, want_mul, sizeof want_mul);
    free(o);
    d = desc(TSR_KOP_UNARY, TSR_NEG, TSR_INT64, 1, sh);
    cr_assert_eq(run(&d, in, 1, &o), 0, "%s", errbuf);
    int64_t want_neg[4] = {-INT64_MAX, INT64_MIN, 7, -(1LL << 53) - 1};
    cr_assert_arr_eq(o, want_neg, sizeof want_neg);
    free(o);
    /* sqrt of int64 runs in float64 */
    d = desc(TSR_KOP_UNARY, TSR_SQRT, TSR_FLOAT64, 1, sh);
    cr_assert_eq(run(&d, in, 1, &o), 0, "%s", errbuf);
    cr_assert(isnan(((double *)o)[2]) && ((double *)o)[0] == sqrt(9223372036854775807.0));
    free(o);
    /* pow by a negative int64 exponent fails the task */
    d = desc(TSR_KOP_BINARY, TSR_POW, TSR_INT64, 1, sh);
    cr_assert_eq(run(&d, in, 2, &o), TSR_EINVALID);
    cr_assert(strstr(errbuf, "negative integer powers"), "%s", errbuf);
    free(o);

    double xf[4] = {NAN, INFINITY, 1e19, -2.75};
    in[0] = view(xf, TSR_FLOAT64, 1, sh);
    d = desc(TSR_KOP_ASTYPE, 0, TSR_INT64, 1, sh);
    cr_assert_eq(run(&d, in, 1, &o), 0, "%s", errbuf);
    int64_t want_i[4] = {INT64_MIN, INT64_MIN, INT64_MIN, -2};
    cr_assert_arr_eq(o, want_i, sizeof want_i);
    free(o);
    d = desc(TSR_KOP_ASTYPE, 0, TSR_BOOL, 1, sh);
    cr_assert_eq(run(&d, in, 1, &o), 0, "%s", errbuf);
    uint8_t want_b[4] = {1, 1, 1, 1};
    cr_assert_arr_eq(o, want_b, sizeof want_b);
    free(o);

    /* sum of int64 in int64: 2^53 + 1 survives, INT64_MAX + INT64_MIN + ... wraps */
    in[0] = view(xi, TSR_INT64, 1, sh);
    int64_t ax[1] = {0};
    d = desc(TSR_KOP_REDUCE, TSR_SUM, TSR_INT64, 0, NULL);
    d.i = ax;
    d.ni = 1;
    cr_assert_eq(run(&d, in, 1, &o), 0, "%s", errbuf);
    cr_assert_eq(*(int64_t *)o, -1 - 7 + (1LL << 53) + 1);
    free(o);

    /* int64 vs float64 compared in float64; isnan of a float; where into int64 */
    int64_t cdt[1] = {TSR_FLOAT64};
    in[1] = view(xf, TSR_FLOAT64, 1, sh);
    d = desc(TSR_KOP_COMPARE, TSR_LESS, TSR_BOOL, 1, sh);
    d.i = cdt;
    d.ni = 1;
    cr_assert_eq(run(&d, in, 2, &o), 0, "%s", errbuf);
    uint8_t want_lt[4] = {0, 1, 1, 0};
    cr_assert_arr_eq(o, want_lt, sizeof want_lt);
    free(o);
    in[0] = view(xf, TSR_FLOAT64, 1, sh);
    d = desc(TSR_KOP_PREDICATE, TSR_ISNAN, TSR_BOOL, 1, sh);
    cr_assert_eq(run(&d, in, 1, &o), 0, "%s", errbuf);
    uint8_t want_nan[4] = {1, 0, 0, 0};
    cr_assert_arr_eq(o, want_nan, sizeof want_nan);
    free(o);
    uint8_t c[4] = {1, 0, 1, 0};
    in[0] = view(c, TSR_BOOL, 1, sh);
    in[1] = view(xi, TSR_INT64, 1, sh);
    int64_t wi[2] = {0, 1};
    double wf[2] = {0, -2.5};
    d = desc(TSR_KOP_WHERE, 0, TSR_INT64, 1, sh);
    d.i = wi;
    d.ni = 2;
    d.f = wf;
    d.nf = 2;
    cr_assert_eq(run(&d, in, 2, &o), 0, "%s", errbuf);
    int64_t want_w[4] = {INT64_MAX, -2, -7, -2};
    cr_assert_arr_eq(o, want_w, sizeof want_w);
    free(o);
}
