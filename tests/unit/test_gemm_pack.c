/* PACK and MATMUL_PACKED (kernels/gemm_pack.c) against the layouts and the formula kernels.h
 * gives them, re-implemented here, for float64 and float32: a packed tile's every value from
 * its index, and every product element as the chain of fma() (fmaf()) over k in order, compared
 * bit for bit, on the AVX-512 path (where the CPU has it) and on the portable one; bad
 * descriptors refused with a message. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kernels_priv.h"

enum { MR = TSR__PACK_MR };

/* The dtype under test: each test runs for float64, then float32. */
static int DT = TSR_FLOAT64;
#define NR TSR__PACK_NR(DT)

static size_t es(void) {
    return DT == TSR_FLOAT64 ? sizeof(double) : sizeof(float);
}

static double get(const void *p, int64_t j) {
    return DT == TSR_FLOAT64 ? ((const double *)p)[j] : (double)((const float *)p)[j];
}

static tsr_chunkview view(void *data, int dt, int ndim, int64_t s0, int64_t s1) {
    tsr_chunkview v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = (uint8_t)dt;
    v.ndim = (uint8_t)ndim;
    v.shape[0] = s0;
    v.shape[1] = s1;
    return v;
}

static tsr_kdesc desc(int kop, int ndim, int64_t s0, int64_t s1, int64_t *i, uint32_t ni) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = (uint8_t)kop;
    d.dtype = (uint8_t)DT;
    d.ndim = (uint8_t)ndim;
    d.shape[0] = s0;
    d.shape[1] = s1;
    d.i = i;
    d.ni = ni;
    return d;
}

/* Values with many significant bits, so that another summation order shows in the last bits. */
static void *values(int64_t n, uint64_t seed) {
    void *x = malloc((size_t)(n ? n : 1) * es());
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t j = 0; j < n; j++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        double v = (double)(int64_t)(z >> 11) * 0x1.0p-53 * 3.0 - 1.0 + 1.0 / 3.0;
        if (DT == TSR_FLOAT64)
            ((double *)x)[j] = v;
        else
            ((float *)x)[j] = (float)v;
    }
    return x;
}

static char err[256];

/* PACK of x (r x c) with role, into a fresh buffer (caller frees). */
static void *pack(const void *x, int64_t r, int64_t c, int role) {
    int64_t len = tsr__packed_len(role, r, c);
    cr_assert(len >= 0);
    int64_t i[1] = {role};
    tsr_kdesc d = desc(TSR_KOP_PACK, 1, len, 0, i, 1);
    tsr_chunkview in = view((void *)x, DT, 2, r, c);
    void *o = malloc((size_t)(len ? len : 1) * es());
    tsr_chunkview out = view(o, DT, 1, len, 0);
    cr_assert_eq(tsr__kernel_run(&d, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err), 0, "%s", err);
    return o;
}

static void check_layouts(void) {
    const int64_t shapes[][2] = {{1, 1}, {12, 16}, {13, 17}, {25, 9}, {7, 40}, {36, 33}, {5, 70}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int64_t r = shapes[t][0], c = shapes[t][1];
        void *x = values(r * c, t + 1);
        void *a = pack(x, r, c, 0), *b = pack(x, r, c, 1);
        cr_assert_eq(tsr__packed_len(0, r, c), r * c);
        cr_assert_eq(tsr__packed_len(1, r, c), r * c);
        /* Left: panel p (width w: MR, or the rows left) at p*MR*c, k-step s, row-in-panel q
         * holds x[p*MR + q][s] at s*w + q. Every value lands once: the layout is a permutation. */
        for (int64_t p = 0; p * MR < r; p++) {
            int64_t w = r - p * MR < MR ? r - p * MR : MR;
            for (int64_t s = 0; s < c; s++)
                for (int64_t q = 0; q < w; q++) {
                    double want = get(x, (p * MR + q) * c + s),
                           got = get(a, p * MR * c + s * w + q);
                    cr_assert(got == want, "%lldx%lld left p %lld s %lld q %lld: %g, want %g",
                              (long long)r, (long long)c, (long long)p, (long long)s, (long long)q,
                              got, want);
                }
        }
        /* Right: panel p (width w: NR, or the columns left) at p*NR*r, k-step s (a row of x),
         * column-in-panel q holds x[s][p*NR + q] at s*w + q. */
        for (int64_t p = 0; p * NR < c; p++) {
            int64_t w = c - p * NR < NR ? c - p * NR : NR;
            for (int64_t s = 0; s < r; s++)
                for (int64_t q = 0; q < w; q++) {
                    double want = get(x, s * c + p * NR + q), got = get(b, p * NR * r + s * w + q);
                    cr_assert(got == want, "%lldx%lld right p %lld s %lld q %lld: %g, want %g",
                              (long long)r, (long long)c, (long long)p, (long long)s, (long long)q,
                              got, want);
                }
        }
        /* In place (the worker donates the tile): the same values. */
        for (int role = 0; role < 2; role++) {
            void *y = malloc((size_t)(r * c) * es());
            memcpy(y, x, (size_t)(r * c) * es());
            int64_t i[1] = {role};
            tsr_kdesc d = desc(TSR_KOP_PACK, 1, r * c, 0, i, 1);
            tsr_chunkview in = view(y, DT, 2, r, c);
            tsr_chunkview out = view(y, DT, 1, r * c, 0);
            cr_assert(tsr__kernel_may_alias(&d, &in, 1, 0));
            cr_assert_eq(tsr__kernel_run(&d, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err), 0);
            cr_assert(memcmp(y, role ? b : a, (size_t)(r * c) * es()) == 0,
                      "%lldx%lld role %d in place", (long long)r, (long long)c, role);
            free(y);
        }
        free(x);
        free(a);
        free(b);
    }
}

Test(packed, layouts_follow_the_formula) {
    for (int t = 0; t < 2; t++) {
        DT = t ? TSR_FLOAT32 : TSR_FLOAT64;
        check_layouts();
    }
    DT = TSR_FLOAT64;
}

/* MATMUL_PACKED of g steps (A_s m x k[s], B_s k[s] x n), with or without Cprev (separate or in
 * place), against the fma chain over every step's k in order. */
static void check_product(int64_t m, int64_t n, const int64_t *k, int g, int cprev, int inplace) {
    void *A[4], *B[4], *PA[4], *PB[4];
    tsr_chunkview in[9];
    for (int s = 0; s < g; s++) {
        A[s] = values(m * k[s], 10 + (uint64_t)s);
        B[s] = values(k[s] * n, 20 + (uint64_t)s);
        PA[s] = pack(A[s], m, k[s], 0);
        PB[s] = pack(B[s], k[s], n, 1);
        in[2 * s] = view(PA[s], DT, 1, tsr__packed_len(0, m, k[s]), 0);
        in[2 * s + 1] = view(PB[s], DT, 1, tsr__packed_len(1, k[s], n), 0);
    }
    size_t bytes = (size_t)(m * n > 0 ? m * n : 1) * es();
    void *c0 = values(m * n, 30), *want = malloc(bytes);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            if (DT == TSR_FLOAT64) {
                double acc = cprev ? get(c0, i * n + j) : 0.0;
                for (int s = 0; s < g; s++)
                    for (int64_t p = 0; p < k[s]; p++)
                        acc = fma(get(A[s], i * k[s] + p), get(B[s], p * n + j), acc);
                ((double *)want)[i * n + j] = acc;
            } else {
                float acc = cprev ? (float)get(c0, i * n + j) : 0.0f;
                for (int s = 0; s < g; s++)
                    for (int64_t p = 0; p < k[s]; p++)
                        acc =
                            fmaf((float)get(A[s], i * k[s] + p), (float)get(B[s], p * n + j), acc);
                ((float *)want)[i * n + j] = acc;
            }
        }
    int64_t gi[1] = {g};
    tsr_kdesc d = desc(TSR_KOP_MATMUL_PACKED, 2, m, n, gi, g > 1 ? 1 : 0);
    int nin = 2 * g;
    void *o = inplace ? c0 : calloc(1, bytes);
    if (cprev) in[nin++] = view(c0, DT, 2, m, n);
    tsr_chunkview out = view(o, DT, 2, m, n);
    cr_assert_eq(tsr__kernel_run(&d, in, nin, &out, TSR_DEVICE_CPU, err, sizeof err), 0, "%s", err);
    for (int64_t e = 0; e < m * n; e++)
        cr_assert(memcmp((char *)o + e * (int64_t)es(), (char *)want + e * (int64_t)es(), es()) ==
                      0,
                  "dtype %d %lldx%lld, %d steps (k0 %lld), cprev %d in place %d: element %lld is "
                  "%.17g, want %.17g",
                  DT, (long long)m, (long long)n, g, (long long)k[0], cprev, inplace, (long long)e,
                  get(o, e), get(want, e));
    for (int s = 0; s < g; s++) {
        free(A[s]);
        free(B[s]);
        free(PA[s]);
        free(PB[s]);
    }
    if (!inplace) free(o);
    free(c0);
    free(want);
}

static void check_products(void) {
    const int64_t k1[] = {1}, k7[] = {7}, k37[] = {37}, k600[] = {600}, k3[] = {5, 16, 3};
    check_product(1, 1, k1, 1, 0, 0);
    check_product(12, 16, k7, 1, 0, 0);
    check_product(12, 64, k7, 1, 1, 0); /* full panels only: 2 of 6 rows, 64 columns */
    check_product(13, 17, k37, 1, 1, 0);
    check_product(25, 40, k37, 1, 1, 1);
    /* More k than one pass (512) and more rows than one row block (48): every blocking edge. */
    check_product(109, 50, k600, 1, 1, 0);
    check_product(54, 128, k600, 1, 0, 1); /* a row block and one panel of 6 more, full panels */
    check_product(30, 33, k3, 3, 0, 0);
    check_product(30, 33, k3, 3, 1, 1);
    check_product(30, 70, k37, 1, 1, 0); /* a 6-wide last panel after 64 columns */
    /* More columns than one column block (512 float64, 1024 float32), a 12-wide last panel. */
    check_product(7, 1100, k600, 1, 1, 0);
}

Test(packed, products_are_fma_chains_in_k_order) {
    for (int t = 0; t < 2; t++) {
        DT = t ? TSR_FLOAT32 : TSR_FLOAT64;
        check_products(); /* the AVX-512 kernel where this CPU has it */
        tsr__packed_force_portable(1);
        check_products();
        tsr__packed_force_portable(0);
    }
    DT = TSR_FLOAT64;
}

static void product(int64_t m, int64_t n, int64_t k, const void *pa, const void *pb, void *o) {
    if (DT == TSR_FLOAT64)
        cr_assert_eq(tsr__packed_product_f64(m, n, k, pa, pb, 1, o), 0);
    else
        cr_assert_eq(tsr__packed_product_f32(m, n, k, pa, pb, 1, o), 0);
}

Test(packed, both_paths_give_the_same_bits_on_a_tile) {
    for (int t = 0; t < 2; t++) {
        DT = t ? TSR_FLOAT32 : TSR_FLOAT64;
        int64_t m = 400, n = 385, k = 450;
        void *a = values(m * k, 1), *b = values(k * n, 2);
        void *pa = pack(a, m, k, 0), *pb = pack(b, k, n, 1);
        void *x = calloc((size_t)(m * n), es()), *y = calloc((size_t)(m * n), es());
        product(m, n, k, pa, pb, x);
        tsr__packed_force_portable(1);
        product(m, n, k, pa, pb, y);
        tsr__packed_force_portable(0);
        cr_assert(memcmp(x, y, (size_t)(m * n) * es()) == 0, "dtype %d", DT);
        /* And close to the plain sum in double. */
        for (int64_t e = 0; e < m * n; e += 97) {
            double s = 0, mag = 0;
            for (int64_t p = 0; p < k; p++) {
                double q = get(a, (e / n) * k + p) * get(b, p * n + e % n);
                s += q;
                mag += fabs(q);
            }
            double tol = DT == TSR_FLOAT64 ? 1e-13 : 1e-4;
            cr_assert(fabs(get(x, e) - s) <= tol * mag, "dtype %d element %lld: %.17g vs %.17g", DT,
                      (long long)e, get(x, e), s);
        }
        free(a);
        free(b);
        free(pa);
        free(pb);
        free(x);
        free(y);
    }
    DT = TSR_FLOAT64;
}

Test(packed, bad_descriptors_are_refused) {
    double x[64] = {0}, o[64];
    int64_t left[1] = {0}, role2[1] = {2};
    /* PACK: role out of range; a 5 x 3 tile packs into 15 values, not 16. */
    tsr_chunkview in = view(x, TSR_FLOAT64, 2, 5, 3), out = view(o, TSR_FLOAT64, 1, 15, 0);
    tsr_kdesc d = desc(TSR_KOP_PACK, 1, 15, 0, role2, 1);
    cr_assert_eq(tsr__kernel_run(&d, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    cr_assert(strstr(err, "left operand"), "%s", err);
    d = desc(TSR_KOP_PACK, 1, 16, 0, left, 1);
    out = view(o, TSR_FLOAT64, 1, 16, 0);
    cr_assert_eq(tsr__kernel_run(&d, &in, 1, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    cr_assert(strstr(err, "packs into 15"), "%s", err);
    /* MATMUL_PACKED: a 2 x 3 output takes A of 2k and B of 3k values for the same k. */
    tsr_chunkview mm[2] = {view(x, TSR_FLOAT64, 1, 4, 0), view(x, TSR_FLOAT64, 1, 9, 0)};
    out = view(o, TSR_FLOAT64, 2, 2, 3);
    d = desc(TSR_KOP_MATMUL_PACKED, 2, 2, 3, NULL, 0);
    cr_assert_eq(tsr__kernel_run(&d, mm, 2, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    cr_assert(strstr(err, "do not make"), "%s", err);
    mm[1] = view(x, TSR_FLOAT64, 1, 6, 0); /* k = 2 on both sides */
    cr_assert_eq(tsr__kernel_run(&d, mm, 2, &out, TSR_DEVICE_CPU, err, sizeof err), 0, "%s", err);
    mm[0] = view(x, TSR_FLOAT64, 2, 2, 12); /* not packed */
    cr_assert_eq(tsr__kernel_run(&d, mm, 2, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    cr_assert(strstr(err, "1-d, of the output's dtype"), "%s", err);
}

/* Valid descriptors and inputs, then one thing changed at random (a length, a role, a shape,
 * an input count, a dtype, the step count): every run either succeeds or is refused with a
 * message, never reads or writes past a buffer (ASan builds check that). */
static int64_t next(uint64_t *z) {
    *z = *z * 6364136223846793005ull + 1442695040888963407ull;
    return (int64_t)(*z >> 33);
}

Test(packed, mutated_descriptors_never_crash) {
    uint64_t z = 12345;
#define NEXT() next(&z)
    int ran = 0, refused = 0;
    for (int it = 0; it < 4000; it++) {
        int64_t m = 1 + NEXT() % 30, n = 1 + NEXT() % 40, k = 1 + NEXT() % 20;
        int g = 1 + (int)(NEXT() % 3), what = (int)(NEXT() % 8);
        int64_t la = tsr__packed_len(0, m, k), lb = tsr__packed_len(1, k, n);
        /* Every buffer has room for the largest length a mutation can ask for, and for Cprev. */
        int64_t most = la > lb ? la : lb;
        size_t room = (size_t)(most > m * n ? most : m * n) + 64;
        double *buf[7];
        tsr_chunkview in[7];
        int nin = 2 * g + (int)(NEXT() % 2);
        for (int s = 0; s < 7; s++) {
            buf[s] = calloc(room, sizeof(double));
            in[s] = view(buf[s], TSR_FLOAT64, 1, s % 2 ? lb : la, 0);
        }
        if (nin % 2) in[nin - 1] = view(buf[nin - 1], TSR_FLOAT64, 2, m, n);
        int64_t gi[1] = {g};
        tsr_kdesc d = desc(TSR_KOP_MATMUL_PACKED, 2, m, n, gi, g > 1 ? 1 : 0);
        int64_t r = NEXT() % 40;
        switch (what) {
        case 0: {
            int64_t at = NEXT() % nin;
            in[at].shape[0] += 1 + NEXT() % 20;
            break;
        }
        case 1:
            in[NEXT() % nin].shape[0] = r;
            break;
        case 2:
            d.shape[NEXT() % 2] = r;
            break;
        case 3:
            nin = (int)(NEXT() % 8);
            break;
        case 4:
            in[NEXT() % nin].dtype = TSR_FLOAT32;
            break;
        case 5:
            gi[0] = NEXT() % 5 - 1;
            d.ni = 1;
            break;
        case 6:
            in[NEXT() % nin].ndim = (uint8_t)(NEXT() % 3);
            break;
        default:
            break; /* unchanged: it runs */
        }
        double *o = calloc(room + (size_t)(m * n) + 1600, sizeof(double));
        tsr_chunkview out = view(o, TSR_FLOAT64, 2, d.shape[0], d.shape[1]);
        char msg[256] = "";
        int rc = tsr__kernel_run(&d, in, nin, &out, TSR_DEVICE_CPU, msg, sizeof msg);
        cr_assert(rc == 0 || (rc == TSR_EINVALID && msg[0]), "rc %d, \"%s\"", rc, msg);
        if (what == 7) cr_assert_eq(rc, 0, "%s", msg);
        rc ? refused++ : ran++;
        /* PACK of a random tile with a random role and length. */
        int64_t role[1] = {NEXT() % 3};
        int64_t want = tsr__packed_len(role[0] == 1, m, k);
        tsr_kdesc p = desc(TSR_KOP_PACK, 1, NEXT() % 2 ? want : r * 12, 0, role, 1);
        tsr_chunkview x = view(buf[0], TSR_FLOAT64, 2, m, k);
        tsr_chunkview po = view(o, TSR_FLOAT64, 1, p.shape[0], 0);
        rc = tsr__kernel_run(&p, &x, 1, &po, TSR_DEVICE_CPU, msg, sizeof msg);
        cr_assert(rc == 0 || (rc == TSR_EINVALID && msg[0]), "pack rc %d, \"%s\"", rc, msg);
        for (int s = 0; s < 7; s++) free(buf[s]);
        free(o);
    }
    cr_assert(ran > 100 && refused > 100, "ran %d, refused %d", ran, refused);
#undef NEXT
}

/* PACK_SOURCE: a source's tile, made and packed in one task, is PACK of that source's tile, for
 * each source family that can be made anywhere and both roles and dtypes; a family that is not
 * such a source, a wrong length and a source's own bad parameters are refused. The kernel makes
 * the tile in strips of rows (12 for a left operand, 16 KiB for a right one) where it knows the
 * family, so the shapes give one strip, several with a short last one (100 x 300: 6 or 13 rows
 * a right strip, 12 a left one) and rows too long for a strip (made whole). */
Test(packed, a_packed_source_is_its_tile_packed) {
    static const int64_t shapes[][2] = {{13, 37}, {100, 300}, {5, 3000}};
    for (int t = 0; t < 2; t++)
        for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
            DT = t ? TSR_FLOAT32 : TSR_FLOAT64;
            int64_t r = shapes[sh][0], c = shapes[sh][1];
            /* RANDOM and NORMAL: [seed, gshape[2], offset[2]] (NORMAL's f = [loc, scale]); FILL: f
             * = [value]; EYE: [k, off0, off1] (the diagonal crosses the tile). */
            int64_t rnd[5] = {7, 400, 4000, 26, 74}, eye[3] = {1, 26, 20};
            double fill[1] = {2.5}, normal[2] = {1.5, 0.25};
            struct {
                int kop;
                int64_t *i;
                uint32_t ni;
                double *f;
                uint32_t nf;
            } src[4] = {{TSR_KOP_RANDOM, rnd, 5, NULL, 0},
                        {TSR_KOP_FILL, NULL, 0, fill, 1},
                        {TSR_KOP_EYE, eye, 3, NULL, 0},
                        {TSR_KOP_NORMAL, rnd, 5, normal, 2}};
            for (int k = 0; k < 4; k++)
                for (int role = 0; role < 2; role++) {
                    tsr_kdesc sd = desc(src[k].kop, 2, r, c, src[k].i, src[k].ni);
                    sd.f = src[k].f;
                    sd.nf = src[k].nf;
                    void *tile = malloc((size_t)(r * c) * es());
                    tsr_chunkview tv = view(tile, DT, 2, r, c);
                    cr_assert_eq(
                        tsr__kernel_run(&sd, NULL, 0, &tv, TSR_DEVICE_CPU, err, sizeof err), 0,
                        "%s", err);
                    void *want = pack(tile, r, c, role);
                    int64_t pi[4 + 5] = {role, src[k].kop, r, c};
                    for (uint32_t q = 0; q < src[k].ni; q++) pi[4 + q] = src[k].i[q];
                    tsr_kdesc d = desc(TSR_KOP_PACK_SOURCE, 1, r * c, 0, pi, 4 + src[k].ni);
                    d.f = src[k].f;
                    d.nf = src[k].nf;
                    void *got = malloc((size_t)(r * c) * es());
                    tsr_chunkview out = view(got, DT, 1, r * c, 0);
                    cr_assert_eq(
                        tsr__kernel_run(&d, NULL, 0, &out, TSR_DEVICE_CPU, err, sizeof err), 0,
                        "%s", err);
                    cr_assert(memcmp(got, want, (size_t)(r * c) * es()) == 0,
                              "dtype %d source %d role %d, %lld x %lld", DT, src[k].kop, role,
                              (long long)r, (long long)c);
                    free(tile);
                    free(want);
                    free(got);
                }
        }
    DT = TSR_FLOAT64;
    double o[64];
    int64_t bad_kop[4] = {0, TSR_KOP_UNARY, 2, 2},
            bad_len[9] = {0, TSR_KOP_RANDOM, 2, 2, 1, 4, 4, 0, 0};
    tsr_kdesc d = desc(TSR_KOP_PACK_SOURCE, 1, 4, 0, bad_kop, 4);
    tsr_chunkview out = view(o, TSR_FLOAT64, 1, 4, 0);
    cr_assert_eq(tsr__kernel_run(&d, NULL, 0, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    cr_assert(strstr(err, "not a source"), "%s", err);
    d = desc(TSR_KOP_PACK_SOURCE, 1, 5, 0, bad_len, 9);
    out = view(o, TSR_FLOAT64, 1, 5, 0);
    cr_assert_eq(tsr__kernel_run(&d, NULL, 0, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    cr_assert(strstr(err, "packs into 4"), "%s", err);
    d = desc(TSR_KOP_PACK_SOURCE, 1, 4, 0, bad_len, 6); /* RANDOM without its offsets */
    out = view(o, TSR_FLOAT64, 1, 4, 0);
    cr_assert_eq(tsr__kernel_run(&d, NULL, 0, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    cr_assert(err[0]);
}
