/* Fusion (issue 13): the FUSED kernel against the unfused kernels of the same steps run one after
 * the other (a different code path: whole chunks, one kernel per operation) and against naive C
 * loops, bit for bit, for float64, float32 and mixed chains, broadcast inputs, sizes that are not
 * a multiple of the kernel's block, and reduction prologues; malformed programs refused by the
 * descriptor checks (and random ones never crashing: the ASan build checks the memory); and the
 * task counts lowering gives with and without fusion, counted independently by hand. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "kernels/kernels.h"

/* ---- kernel-level helpers -------------------------------------------------------------------- */

static size_t esz(int dt) {
    return tsr_dtype_size((tsr_dtype)dt);
}

static tsr_chunkview view(int dt, int nd, const int64_t *shape) {
    tsr_chunkview v;
    memset(&v, 0, sizeof v);
    v.dtype = (uint8_t)dt;
    v.ndim = (uint8_t)nd;
    int64_t n = 1;
    for (int a = 0; a < nd; a++) {
        v.shape[a] = shape[a];
        n *= shape[a];
    }
    v.data = calloc((size_t)(n ? n : 1), esz(dt));
    return v;
}

static int64_t count(const tsr_chunkview *v) {
    int64_t n = 1;
    for (int a = 0; a < v->ndim; a++) n *= v->shape[a];
    return n;
}

/* Values that exercise signs, zero, NaN and sizes (independent of Tessera's random). */
static double val(int64_t j, int salt) {
    if (j % 97 == 13) return NAN;
    if (j % 89 == 7) return 0.0;
    return sin((double)j * 0.37 + salt) * (1.0 + (double)(j % 11));
}

static void fill(tsr_chunkview *v, int salt) {
    for (int64_t j = 0; j < count(v); j++) {
        if (v->dtype == TSR_FLOAT64)
            ((double *)v->data)[j] = val(j, salt);
        else if (v->dtype == TSR_FLOAT32)
            ((float *)v->data)[j] = (float)val(j, salt);
    }
}

static tsr_kdesc desc(int kop, int fn, int dt, int nd, const int64_t *shape) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = (uint8_t)kop;
    d.fn = (uint8_t)fn;
    d.dtype = (uint8_t)dt;
    d.ndim = (uint8_t)nd;
    for (int a = 0; a < nd; a++) d.shape[a] = shape[a];
    return d;
}

static int krun(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out) {
    char err[256];
    int rc = tsr__kernel_run(d, in, nin, out, TSR_DEVICE_CPU, err, sizeof err);
    if (rc) cr_log_info("kernel: %s", err);
    return rc;
}

/* A step as a test writes it: kind, fn, dtype, operands (>= 0 a step, < 0 input -1-k), scalar. */
typedef struct tstep {
    int kind, fn, dtype;
    int64_t a, b;
    double s;
} tstep;

/* Runs the steps one unfused kernel each (UNARY, BINARY, BINARY_SCALAR, ASTYPE) on whole
 * chunks; returns the last step's chunk (the others freed). */
static tsr_chunkview unfused(const tstep *st, int ns, const tsr_chunkview *in, int dn,
                             const int64_t *dom) {
    tsr_chunkview regs[16];
    cr_assert(ns <= 16);
    for (int s = 0; s < ns; s++) {
        tsr_chunkview ops[2];
        int nops = st[s].kind == TSR__FS_BINARY ? 2 : 1;
        int64_t r[2] = {st[s].a, st[s].b};
        for (int k = 0; k < nops; k++) ops[k] = r[k] >= 0 ? regs[r[k]] : in[-1 - r[k]];
        /* An unfused UNARY or scalar op takes its input in its own dtype: what lowering gives
         * it is an array of that dtype, so convert first as an astype would. */
        tsr_chunkview conv = {0};
        if (nops == 1 && st[s].kind != TSR__FS_ASTYPE && ops[0].dtype != st[s].dtype) {
            conv = view(st[s].dtype, dn, dom);
            tsr_kdesc c = desc(TSR_KOP_ASTYPE, 0, st[s].dtype, dn, dom);
            cr_assert_eq(krun(&c, &ops[0], 1, &conv), 0);
            ops[0] = conv;
        }
        regs[s] = view(st[s].dtype, dn, dom);
        tsr_kdesc d;
        double f = st[s].s;
        int64_t first;
        switch (st[s].kind) {
        case TSR__FS_UNARY:
            d = desc(TSR_KOP_UNARY, st[s].fn, st[s].dtype, dn, dom);
            break;
        case TSR__FS_BINARY:
            d = desc(TSR_KOP_BINARY, st[s].fn, st[s].dtype, dn, dom);
            break;
        case TSR__FS_SCALAR_R:
        case TSR__FS_SCALAR_L:
            d = desc(TSR_KOP_BINARY_SCALAR, st[s].fn, st[s].dtype, dn, dom);
            first = st[s].kind == TSR__FS_SCALAR_L;
            d.f = &f;
            d.nf = 1;
            d.i = &first;
            d.ni = 1;
            break;
        default:
            d = desc(TSR_KOP_ASTYPE, 0, st[s].dtype, dn, dom);
            break;
        }
        cr_assert_eq(krun(&d, ops, nops, &regs[s]), 0, "unfused step %d", s);
        free(conv.data);
    }
    for (int s = 0; s < ns - 1; s++) free(regs[s].data);
    return regs[ns - 1];
}

/* The FUSED descriptor of the steps (fn 0, or 1 + r with axes). */
static tsr_kdesc fused_desc(const tstep *st, int ns, int dn, const int64_t *dom, int fn,
                            const int64_t *axes, int naxes, int64_t *iv, double *fv, int odt,
                            int ond, const int64_t *oshape) {
    int ni = 0, nf = 0;
    iv[ni++] = ns;
    iv[ni++] = dn;
    for (int a = 0; a < dn; a++) iv[ni++] = dom[a];
    for (int s = 0; s < ns; s++) {
        int64_t b = st[s].b;
        if (st[s].kind == TSR__FS_SCALAR_R || st[s].kind == TSR__FS_SCALAR_L) {
            fv[nf] = st[s].s;
            b = nf++;
        } else if (st[s].kind != TSR__FS_BINARY) {
            b = 0;
        }
        iv[ni++] = st[s].kind;
        iv[ni++] = st[s].kind == TSR__FS_ASTYPE ? 0 : st[s].fn;
        iv[ni++] = st[s].dtype;
        iv[ni++] = st[s].a;
        iv[ni++] = b;
    }
    iv[ni++] = naxes;
    for (int k = 0; k < naxes; k++) iv[ni++] = axes[k];
    tsr_kdesc d = desc(TSR_KOP_FUSED, fn, odt, ond, oshape);
    d.i = iv;
    d.ni = (uint32_t)ni;
    d.f = nf ? fv : NULL;
    d.nf = (uint32_t)nf;
    return d;
}

static void assert_same_bytes(const tsr_chunkview *a, const tsr_chunkview *b, const char *what) {
    cr_assert_eq(a->dtype, b->dtype, "%s: dtype", what);
    int64_t n = count(a);
    cr_assert_eq(n, count(b), "%s: size", what);
    cr_assert_eq(memcmp(a->data, b->data, (size_t)n * esz(a->dtype)), 0,
                 "%s: fused and unfused differ", what);
}

/* (((X + 1) * 2 - Y) / 3) ** 2 + maximum(X, Y), then abs, sqrt, neg: X the domain's shape, Y a
 * broadcast row; dtypes as given (mixed chains convert at the BINARY steps as the unfused
 * kernels do, and through an explicit astype). */
static int chain(tstep *st, int xdt, int ydt) {
    int pdt = xdt == TSR_FLOAT64 || ydt == TSR_FLOAT64 ? TSR_FLOAT64 : TSR_FLOAT32;
    int n = 0;
    st[n++] = (tstep){TSR__FS_SCALAR_R, TSR_ADD, xdt, -1, 0, 1.0};  /* 0: X + 1 */
    st[n++] = (tstep){TSR__FS_SCALAR_R, TSR_MUL, xdt, 0, 0, 2.0};   /* 1: * 2 */
    st[n++] = (tstep){TSR__FS_BINARY, TSR_SUB, pdt, 1, -2, 0};      /* 2: - Y */
    st[n++] = (tstep){TSR__FS_SCALAR_R, TSR_DIV, pdt, 2, 0, 3.0};   /* 3: / 3 */
    st[n++] = (tstep){TSR__FS_SCALAR_R, TSR_POW, pdt, 3, 0, 2.0};   /* 4: ** 2 */
    st[n++] = (tstep){TSR__FS_BINARY, TSR_MAXIMUM, pdt, -1, -2, 0}; /* 5 */
    st[n++] = (tstep){TSR__FS_BINARY, TSR_ADD, pdt, 4, 5, 0};       /* 6 */
    st[n++] = (tstep){TSR__FS_UNARY, TSR_ABS, pdt, 6, 0, 0};        /* 7 */
    st[n++] = (tstep){TSR__FS_UNARY, TSR_SQRT, pdt, 7, 0, 0};       /* 8 */
    st[n++] = (tstep){TSR__FS_ASTYPE, 0, xdt, 8, 0, 0};             /* 9 */
    st[n++] = (tstep){TSR__FS_SCALAR_L, TSR_SUB, xdt, 9, 0, 0.5};   /* 10: 0.5 - . */
    st[n++] = (tstep){TSR__FS_BINARY, TSR_MUL, xdt, 10, 10, 0};     /* 11: . * . */
    return n;
}

static const int64_t dom[2] = {7, 301}; /* 2107 elements: four full blocks of 512 and a tail */

Test(fuse, kernel_matches_unfused_kernels_bitwise) {
    const int dts[3][2] = {
        {TSR_FLOAT64, TSR_FLOAT64}, {TSR_FLOAT32, TSR_FLOAT32}, {TSR_FLOAT32, TSR_FLOAT64}};
    for (int c = 0; c < 3; c++) {
        int xdt = dts[c][0], ydt = dts[c][1];
        tsr_chunkview in[2] = {view(xdt, 2, dom), view(ydt, 1, dom + 1)};
        fill(&in[0], 1);
        fill(&in[1], 2);
        tstep st[16];
        int ns = chain(st, xdt, ydt);
        tsr_chunkview want = unfused(st, ns, in, 2, dom);
        int64_t iv[128];
        double fv[16];
        tsr_kdesc d = fused_desc(st, ns, 2, dom, 0, NULL, 0, iv, fv, xdt, 2, dom);
        tsr_chunkview got = view(xdt, 2, dom);
        cr_assert_eq(krun(&d, in, 2, &got), 0);
        char what[64];
        snprintf(what, sizeof what, "map %s/%s", tsr_dtype_name(xdt), tsr_dtype_name(ydt));
        assert_same_bytes(&got, &want, what);
        /* Reductions over each set of axes: the unfused REDUCE of the chain's chunk. */
        const int64_t axsets[4][2] = {{0, 1}, {1, -1}, {0, -1}, {-1, -1}};
        const int naxs[4] = {2, 1, 1, 0};
        for (int r = 0; r < TSR__REDUCE_COUNT; r++)
            for (int k = 0; k < 4; k++) {
                int64_t oshape[2];
                int ond = 0;
                for (int a = 0; a < 2; a++) {
                    int red = 0;
                    for (int j = 0; j < naxs[k]; j++) red |= axsets[k][j] == a;
                    if (!red) oshape[ond++] = dom[a];
                }
                tsr_kdesc rd = desc(TSR_KOP_REDUCE, r, xdt, ond, oshape);
                rd.i = axsets[k];
                rd.ni = (uint32_t)naxs[k];
                tsr_chunkview rw = view(xdt, ond, oshape), rg = view(xdt, ond, oshape);
                cr_assert_eq(krun(&rd, &want, 1, &rw), 0);
                tsr_kdesc fd =
                    fused_desc(st, ns, 2, dom, 1 + r, axsets[k], naxs[k], iv, fv, xdt, ond, oshape);
                cr_assert_eq(krun(&fd, in, 2, &rg), 0);
                snprintf(what, sizeof what, "%s %s axes %d", tsr_dtype_name(xdt),
                         tsr__reduce_name(r), k);
                assert_same_bytes(&rg, &rw, what);
                free(rw.data);
                free(rg.data);
            }
        free(want.data);
        free(got.data);
        free(in[0].data);
        free(in[1].data);
    }
}

/* Against a naive loop in C, for float64 (one expression per element, each op as NumPy would
 * round it) and float32 (every op rounded to float, as an unfused float32 graph does). ** 2 is
 * x * x (graph/ops.h, as NumPy's power of an array). */
Test(fuse, kernel_matches_naive_loops) {
    for (int c = 0; c < 2; c++) {
        int dt = c ? TSR_FLOAT32 : TSR_FLOAT64;
        tsr_chunkview in[2] = {view(dt, 2, dom), view(dt, 1, dom + 1)};
        fill(&in[0], 3);
        fill(&in[1], 4);
        tstep st[16];
        int ns = chain(st, dt, dt);
        int64_t iv[128];
        double fv[16];
        tsr_kdesc d = fused_desc(st, ns, 2, dom, 0, NULL, 0, iv, fv, dt, 2, dom);
        tsr_chunkview got = view(dt, 2, dom);
        cr_assert_eq(krun(&d, in, 2, &got), 0);
        for (int64_t i = 0; i < dom[0]; i++)
            for (int64_t j = 0; j < dom[1]; j++) {
                int64_t e = i * dom[1] + j;
                if (dt == TSR_FLOAT64) {
                    double x = ((double *)in[0].data)[e], y = ((double *)in[1].data)[j];
                    double t0 = ((x + 1) * 2 - y) / 3, t = t0 * t0;
                    double m = (x >= y || x != x) ? x : y;
                    double v = 0.5 - sqrt(fabs(t + m));
                    double want = v * v, g = ((double *)got.data)[e];
                    cr_assert(memcmp(&want, &g, 8) == 0 || (isnan(want) && isnan(g)),
                              "f64 element %lld: %.17g != %.17g", (long long)e, g, want);
                } else {
                    float x = ((float *)in[0].data)[e], y = ((float *)in[1].data)[j];
                    float t0 = x + 1.0f, t1 = t0 * 2.0f, t2 = t1 - y, t3 = t2 / 3.0f;
                    float t4 = t3 * t3, m = (x >= y || x != x) ? x : y;
                    float t6 = t4 + m, t8 = sqrtf(fabsf(t6)), t10 = 0.5f - t8;
                    float want = t10 * t10, g = ((float *)got.data)[e];
                    cr_assert(memcmp(&want, &g, 4) == 0 || (isnan(want) && isnan(g)),
                              "f32 element %lld: %.9g != %.9g", (long long)e, (double)g,
                              (double)want);
                }
            }
        free(got.data);
        free(in[0].data);
        free(in[1].data);
    }
}

/* Source steps: RANDOM's values made in place against the RANDOM kernel's chunk (the domain at
 * an offset in a larger array), and FILL against FILL's, through a chain. */
Test(fuse, source_steps_match_source_kernels) {
    const int64_t gshape[2] = {20, 400}, off[2] = {3, 5};
    for (int c = 0; c < 2; c++) {
        int dt = c ? TSR_FLOAT32 : TSR_FLOAT64;
        uint64_t seed = 0xfeedfacecafebeefull;
        tsr_chunkview x = view(dt, 2, dom);
        fill(&x, 9);
        tsr_chunkview r = view(dt, 2, dom), f = view(dt, 2, dom);
        int64_t rv[5];
        memcpy(&rv[0], &seed, 8);
        rv[1] = gshape[0], rv[2] = gshape[1], rv[3] = off[0], rv[4] = off[1];
        tsr_kdesc rd = desc(TSR_KOP_RANDOM, 0, dt, 2, dom);
        rd.i = rv;
        rd.ni = 5;
        cr_assert_eq(krun(&rd, NULL, 0, &r), 0);
        double fval = 2.5;
        tsr_kdesc fd = desc(TSR_KOP_FILL, 0, dt, 2, dom);
        fd.f = &fval;
        fd.nf = 1;
        cr_assert_eq(krun(&fd, NULL, 0, &f), 0);
        /* unfused: (r * f) + x, then sqrt */
        tsr_chunkview in3[3] = {r, f, x};
        tstep st[3] = {{TSR__FS_BINARY, TSR_MUL, dt, -1, -2, 0},
                       {TSR__FS_BINARY, TSR_ADD, dt, 0, -3, 0},
                       {TSR__FS_UNARY, TSR_SQRT, dt, 1, 0, 0}};
        tsr_chunkview want = unfused(st, 3, in3, 2, dom);
        /* fused: RANDOM, FILL, mul, add x, sqrt; x the only input */
        int64_t iv[64] = {5,         2,         dom[0], dom[1], TSR__FS_RANDOM,
                          0,         dt,        0,      0,      TSR__FS_FILL,
                          0,         dt,        0,      0,      TSR__FS_BINARY,
                          TSR_MUL,   dt,        0,      1,      TSR__FS_BINARY,
                          TSR_ADD,   dt,        2,      -1,     TSR__FS_UNARY,
                          TSR_SQRT,  dt,        3,      0,      0,
                          gshape[0], gshape[1], off[0], off[1]};
        memcpy(&iv[7], &seed, 8);
        tsr_kdesc d = desc(TSR_KOP_FUSED, 0, dt, 2, dom);
        d.i = iv;
        d.ni = 34;
        d.f = &fval;
        d.nf = 1;
        tsr_chunkview got = view(dt, 2, dom);
        cr_assert_eq(krun(&d, &x, 1, &got), 0);
        assert_same_bytes(&got, &want, c ? "sources f32" : "sources f64");
        /* A sum of the random values alone (no input at all) against REDUCE of the chunk. */
        int64_t sv[] = {1, 2, dom[0], dom[1], TSR__FS_RANDOM, 0,         dt,     0,
                        0, 2, 0,      1,      gshape[0],      gshape[1], off[0], off[1]};
        memcpy(&sv[7], &seed, 8);
        tsr_kdesc sd = desc(TSR_KOP_FUSED, 1 + TSR_SUM, dt, 0, dom);
        sd.i = sv;
        sd.ni = 16;
        const int64_t axes[2] = {0, 1};
        tsr_kdesc ud = desc(TSR_KOP_REDUCE, TSR_SUM, dt, 0, dom);
        ud.i = axes;
        ud.ni = 2;
        tsr_chunkview s1 = view(dt, 0, dom), s2 = view(dt, 0, dom);
        cr_assert_eq(krun(&sd, NULL, 0, &s1), 0);
        cr_assert_eq(krun(&ud, &r, 1, &s2), 0);
        assert_same_bytes(&s1, &s2, "sum of random");
        free(s1.data);
        free(s2.data);
        free(got.data);
        free(want.data);
        free(r.data);
        free(f.data);
        free(x.data);
    }
}

/* ---- malformed programs -------------------------------------------------------------------- */

static int try_fused(const tsr_kdesc *d, const tsr_chunkview *in, int nin) {
    tsr_chunkview out = view(d->dtype, d->ndim, d->shape);
    char err[256] = "";
    int rc = tsr__kernel_run(d, in, nin, &out, TSR_DEVICE_CPU, err, sizeof err);
    if (rc) cr_assert(err[0], "refusal without a message");
    free(out.data);
    return rc;
}

Test(fuse, malformed_programs_are_refused) {
    const int64_t sh[2] = {3, 4};
    tsr_chunkview in[2] = {view(TSR_FLOAT64, 2, sh), view(TSR_FLOAT64, 1, sh + 1)};
    fill(&in[0], 5);
    fill(&in[1], 6);
    /* A valid base: [S=2, D=2, 3, 4, add(in0, in1), scalar mul(step0, f[0])] */
    const int64_t base[] = {2,       2,           3,  4,  TSR__FS_BINARY,
                            TSR_ADD, TSR_FLOAT64, -1, -2, TSR__FS_SCALAR_R,
                            TSR_MUL, TSR_FLOAT64, 0,  0,  0};
    const double fv[1] = {2.0};
    int64_t iv[32];
    memcpy(iv, base, sizeof base);
    tsr_kdesc d = desc(TSR_KOP_FUSED, 0, TSR_FLOAT64, 2, sh);
    d.i = iv;
    d.ni = 15;
    d.f = fv;
    d.nf = 1;
    cr_assert_eq(try_fused(&d, in, 2), 0, "the base program must run");
    struct {
        int at;
        int64_t v;
        const char *what;
    } bad[] = {
        {0, 0, "no steps"},
        {0, TSR__FUSED_MAX_STEPS + 1, "too many steps"},
        {0, 3, "more steps than integers"},
        {1, 9, "domain ndim"},
        {1, -1, "negative domain ndim"},
        {2, -3, "negative extent"},
        {2, 5, "domain differs from the output"},
        {4, TSR__FS_KINDS, "unknown kind"},
        {4, -1, "negative kind"},
        {5, TSR__BINARY_COUNT, "binary op out of range"},
        {6, TSR_INT64, "int64 step"},
        {6, 77, "dtype out of range"},
        {7, 0, "operand is the step itself"},
        {7, -3, "input out of range"},
        {8, INT64_MIN, "input far out of range"},
        {12, 1, "forward reference"},
        {13, 1, "scalar index out of range"},
        {13, -1, "negative scalar index"},
        {11, TSR_FLOAT32, "last step's dtype differs from the output's"},
        {14, 1, "axes on an elementwise program"},
        {14, -1, "negative axis count"},
        {14, 3, "more axes than parameters"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        memcpy(iv, base, sizeof base);
        iv[bad[k].at] = bad[k].v;
        int rc = try_fused(&d, in, 2);
        cr_assert_eq(rc, TSR_EINVALID, "%s: rc %d", bad[k].what, rc);
    }
    memcpy(iv, base, sizeof base);
    iv[9] = TSR__FS_ASTYPE; /* astype with an fn */
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "astype with fn");
    iv[9] = TSR__FS_UNARY;
    iv[10] = TSR__UNARY_COUNT;
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "unary op out of range");
    memcpy(iv, base, sizeof base);
    d.ni = 14;
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "truncated program");
    d.ni = 15;
    d.nf = 0;
    d.f = NULL;
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "missing scalar");
    d.nf = 1;
    d.f = fv;
    cr_assert_eq(try_fused(&d, in, 1), TSR_EINVALID, "an input fewer than referenced");
    d.fn = TSR__FUSED_NFN;
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "fn out of range");
    /* Reductions: axes ascending, in range, and the output's shape what they leave. */
    const int64_t osh[1] = {3};
    tsr_kdesc r = desc(TSR_KOP_FUSED, 1 + TSR_SUM, TSR_FLOAT64, 1, osh);
    r.i = iv;
    r.f = fv;
    r.nf = 1;
    iv[14] = 1;
    iv[15] = 1;
    r.ni = 16;
    cr_assert_eq(try_fused(&r, in, 2), 0, "sum over axis 1");
    iv[15] = 0;
    cr_assert_eq(try_fused(&r, in, 2), TSR_EINVALID, "output shape does not match");
    iv[15] = 2;
    cr_assert_eq(try_fused(&r, in, 2), TSR_EINVALID, "axis out of range");
    iv[14] = 2;
    iv[15] = 1;
    iv[16] = 1;
    r.ni = 17;
    cr_assert_eq(try_fused(&r, in, 2), TSR_EINVALID, "repeated axis");
    /* Source steps: a random box must hold the domain, a fill its scalar. */
    d.fn = 0;
    const int64_t src[] = {2,       2,           3, 4,  TSR__FS_RANDOM,
                           0,       TSR_FLOAT64, 9, 0,  TSR__FS_BINARY,
                           TSR_ADD, TSR_FLOAT64, 0, -1, 0,
                           10,      20,          7, 16};
    memcpy(iv, src, sizeof src);
    d.ni = 19;
    cr_assert_eq(try_fused(&d, in, 2), 0, "random + input");
    iv[17] = 8;
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "random box past its array");
    iv[17] = 7;
    iv[8] = 1;
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "random box out of the parameters");
    iv[8] = 0;
    iv[15] = INT64_MAX;
    iv[16] = INT64_MAX;
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "random array too large");
    memcpy(iv, src, sizeof src);
    iv[5] = 1;
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "random with an fn");
    memcpy(iv, src, sizeof src);
    iv[4] = TSR__FS_FILL;
    iv[8] = 1;
    cr_assert_eq(try_fused(&d, in, 2), TSR_EINVALID, "fill scalar out of range");
    iv[8] = 0;
    cr_assert_eq(try_fused(&d, in, 2), 0, "fill + input");
    /* Inputs: a shape that does not broadcast, an integer dtype. */
    const int64_t bad_sh[1] = {3};
    tsr_chunkview nb[2] = {in[0], view(TSR_FLOAT64, 1, bad_sh)};
    cr_assert_eq(try_fused(&d, nb, 2), TSR_EINVALID, "non-broadcasting input");
    free(nb[1].data);
    tsr_chunkview ib[2] = {in[0], view(TSR_INT64, 1, sh + 1)};
    cr_assert_eq(try_fused(&d, ib, 2), TSR_EINVALID, "int64 input");
    free(ib[1].data);
    free(in[0].data);
    free(in[1].data);
}

static uint64_t rng = 7;
static uint64_t rnd(void) {
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Random programs near valid ones: every one runs or is refused with a message; buffers are
 * exactly their chunks' bytes, so the ASan build catches any read or write outside them. */
Test(fuse, random_programs_run_or_are_refused, .timeout = 60) {
    int ran = 0, refused = 0;
    for (int it = 0; it < 20000; it++) {
        int dn = (int)(rnd() % 4);
        int64_t dsh[4];
        for (int a = 0; a < dn; a++) /* sometimes a last axis longer than a block */
            dsh[a] = (int64_t)(rnd() % 5) + (a == dn - 1 && rnd() % 4 == 0 ? 600 : 0);
        int nin = 1 + (int)(rnd() % 3);
        tsr_chunkview in[3];
        for (int k = 0; k < nin; k++) {
            int ind = dn ? (int)(rnd() % (unsigned)(dn + 1)) : 0;
            int64_t ish[4];
            for (int a = 0; a < ind; a++)
                ish[a] = rnd() % 4 == 0 ? 1 : rnd() % 16 == 0 ? 2 : dsh[dn - ind + a];
            in[k] = view(rnd() % 8 ? (int)(rnd() % 2) : TSR_INT64, ind, ish);
            fill(&in[k], k);
        }
        int ns = 1 + (int)(rnd() % 6);
        int64_t iv[64];
        double fv[4] = {1.5, -2, 0, 3};
        int ni = 0;
        iv[ni++] = rnd() % 32 ? ns : (int64_t)(rnd() % 80) - 5;
        iv[ni++] = rnd() % 32 ? dn : (int64_t)(rnd() % 12) - 2;
        for (int a = 0; a < dn; a++) iv[ni++] = rnd() % 32 ? dsh[a] : (int64_t)(rnd() % 7) - 1;
        int last_dt = 0;
        for (int s = 0; s < ns; s++) {
            int kind = (int)(rnd() % (TSR__FS_KINDS + 1));
            int fnmax = kind == TSR__FS_UNARY ? TSR__UNARY_COUNT : TSR__BINARY_COUNT;
            last_dt = rnd() % 16 ? (int)(rnd() % 2) : (int)(rnd() % 5);
            iv[ni++] = kind;
            iv[ni++] = kind == TSR__FS_ASTYPE && rnd() % 4 ? 0 : (int64_t)(rnd() % (fnmax + 1));
            iv[ni++] = last_dt;
            iv[ni++] = (int64_t)(rnd() % (unsigned)(s + nin + 1)) - nin;
            iv[ni++] = (int64_t)(rnd() % (unsigned)(s + nin + 2)) - nin;
        }
        int fn = rnd() % 2 ? 0 : (int)(rnd() % (TSR__FUSED_NFN + 1));
        int64_t osh[4], axes[4];
        int ond = 0, nax = 0;
        if (fn == 0) {
            ond = dn;
            for (int a = 0; a < dn; a++) osh[a] = dsh[a];
        } else {
            for (int a = 0; a < dn; a++) {
                if (rnd() % 2)
                    axes[nax++] = a;
                else
                    osh[ond++] = dsh[a];
            }
        }
        iv[ni++] = rnd() % 32 ? nax : (int64_t)(rnd() % 7) - 1;
        for (int k = 0; k < nax; k++) iv[ni++] = axes[k];
        if (rnd() % 16 == 0) iv[ni++] = (int64_t)(rnd() % 5);                  /* junk */
        for (int a = 0; a < dn; a++) iv[ni++] = dsh[a] + (int64_t)(rnd() % 3); /* a box */
        for (int a = 0; a < dn; a++) iv[ni++] = (int64_t)(rnd() % 3);
        tsr_kdesc d = desc(TSR_KOP_FUSED, fn, rnd() % 16 ? last_dt : (int)(rnd() % 2), ond, osh);
        d.i = iv;
        d.ni = (uint32_t)ni;
        d.f = fv;
        d.nf = (uint32_t)(rnd() % 5);
        if (!d.nf) d.f = NULL;
        if (d.dtype > TSR_FLOAT32) d.dtype = TSR_FLOAT64;
        int rc = try_fused(&d, in, nin);
        cr_assert(rc == 0 || rc < 0, "rc %d", rc);
        if (rc == 0)
            ran++;
        else
            refused++;
        for (int k = 0; k < nin; k++) free(in[k].data);
    }
    cr_assert(ran > 200 && refused > 500, "ran %d, refused %d", ran, refused);
}

/* ---- lowering: task counts ------------------------------------------------------------------ */

static tsr_client *cl;

static tsr_array *rand_arr(int nd, const int64_t *shape, const int64_t *chunks, uint64_t seed) {
    tsr_array *a = NULL;
    cr_assert_eq(tsr_random(cl, nd, shape, chunks, TSR_FLOAT64, seed, &a), 0, "%s",
                 tsr_client_errmsg(cl));
    return a;
}

static tsr_array *un(tsr_unary_op op, tsr_array *x) {
    tsr_array *a = NULL;
    cr_assert_eq(tsr_unary(op, x, &a), 0, "%s", tsr_client_errmsg(cl));
    return a;
}

static tsr_array *bin(tsr_binary_op op, tsr_array *x, tsr_array *y) {
    tsr_array *a = NULL;
    cr_assert_eq(tsr_binary(op, x, y, &a), 0, "%s", tsr_client_errmsg(cl));
    return a;
}

static tsr_array *sc(tsr_binary_op op, tsr_array *x, double s) {
    tsr_array *a = NULL;
    cr_assert_eq(tsr_binary_scalar(op, x, s, 0, &a), 0, "%s", tsr_client_errmsg(cl));
    return a;
}

/* Task counts with fusion on and off. */
static void counts(tsr_array *const *outs, size_t n, int64_t fused, int64_t unfused_) {
    cr_assert_eq(tsr_client_set_fusion(cl, 1), 0);
    int64_t f = tsr_task_count(outs, n);
    cr_assert_eq(tsr_client_set_fusion(cl, 0), 0);
    int64_t u = tsr_task_count(outs, n);
    tsr_client_set_fusion(cl, 1);
    cr_assert_eq(f, fused, "fused: %lld tasks, want %lld", (long long)f, (long long)fused);
    cr_assert_eq(u, unfused_, "unfused: %lld tasks, want %lld", (long long)u, (long long)unfused_);
}

Test(fuse, task_counts) {
    cr_assert_eq(tsr_client_new_offline(&cl), 0);
    const int64_t shape[2] = {1000, 700}, chunks[2] = {300, 256}; /* a 4 x 3 grid, ragged */
    tsr_array *X = rand_arr(2, shape, chunks, 1), *Y = rand_arr(2, shape, chunks, 2);
    /* Ten ops: sqrt(abs((((X + 1) * 2 - Y) / 3) ** 2 + maximum(X, Y))) */
    tsr_array *t = sc(TSR_ADD, X, 1), *u = sc(TSR_MUL, t, 2), *v = bin(TSR_SUB, u, Y);
    tsr_array *w = sc(TSR_DIV, v, 3), *p = sc(TSR_POW, w, 2), *m = bin(TSR_MAXIMUM, X, Y);
    tsr_array *q = bin(TSR_ADD, p, m), *ab = un(TSR_ABS, q), *h = un(TSR_SQRT, ab);
    /* 12 chunks. Unfused: X and Y 12 tasks each, 9 ops x 12. Fused: 12 tasks, which make X's
     * and Y's values in place (random sources with the chain's chunks). */
    counts(&h, 1, 12, 24 + 9 * 12);
    /* sum over everything: 12 partials (fused with the chain) and a tree of 8 + 4 -> 2 -> 1
     * combines: 3. */
    tsr_array *s = NULL;
    cr_assert_eq(tsr_reduce(TSR_SUM, h, NULL, 0, &s), 0);
    counts(&s, 1, 12 + 3, 24 + 9 * 12 + 12 + 3);
    /* With h also requested, h is not fused into the sum: 12 fused tasks make h, the sum's
     * 12 partials read them. */
    tsr_array *both[2] = {s, h};
    counts(both, 2, 12 + 12 + 3, 24 + 9 * 12 + 12 + 3);
    /* mean over axis 0: per output chunk (3) four partials and one combine (with the scale). */
    int ax0 = 0;
    tsr_array *mn = NULL;
    cr_assert_eq(tsr_reduce(TSR_MEAN, h, &ax0, 1, &mn), 0);
    counts(&mn, 1, 12 + 3, 24 + 9 * 12 + 12 + 3);

    /* An operand with two consumers is not fused: a = X + 1 feeds b and c (a makes X in place,
     * b and c read a). */
    tsr_array *a = sc(TSR_ADD, X, 1), *b = un(TSR_EXP, a), *c2 = un(TSR_SIN, a);
    tsr_array *bc[2] = {b, c2};
    counts(bc, 2, 12 * 3, 12 + 12 * 3);
    /* ... but one consumer using it twice is: d = a2 * a2 with a2 = X - 1. */
    tsr_array *a2 = sc(TSR_SUB, X, 1), *d = bin(TSR_MUL, a2, a2);
    counts(&d, 1, 12, 12 + 2 * 12);

    /* A broadcast operand stays its own tasks: r = sqrt(R) (3 chunks, R made in place) added
     * to every row. */
    const int64_t rshape[1] = {700}, rchunks[1] = {256};
    tsr_array *R = rand_arr(1, rshape, rchunks, 3), *r = un(TSR_SQRT, R);
    tsr_array *xr = bin(TSR_ADD, X, r), *e = un(TSR_EXP, xr);
    counts(&e, 1, 3 + 12, 3 + 3 + 12 + 12 + 12);

    /* A chain longer than TSR__FUSED_MAX_STEPS splits: X and 100 negations are 64 + 37 steps. */
    tsr_array *n = X;
    tsr_array *chainv[100];
    for (int k = 0; k < 100; k++) n = chainv[k] = un(TSR_NEG, n);
    counts(&n, 1, 2 * 12, 12 + 100 * 12);

    /* A source used by something that does not fuse keeps its tasks for it: X @ X's inputs. */
    tsr_array *sq = NULL, *mm = NULL, *mmx = NULL;
    const int64_t sshape[2] = {256, 256}, schunks[2] = {128, 128}; /* not packed: MATMUL reads S */
    tsr_array *S = rand_arr(2, sshape, schunks, 4);
    cr_assert_eq(tsr_unary(TSR_EXP, S, &sq), 0);
    cr_assert_eq(tsr_matmul(S, S, &mm), 0);
    cr_assert_eq(tsr_binary(TSR_ADD, sq, mm, &mmx), 0);
    /* S 4 tasks (for the matmul), matmul 2 x 2 one-task chains (chunks of 128, k has 2 chunks:
     * both steps in one task), fused add(exp(S), mm) 4. Unfused: exp 4, add 4. (Chunks of 256
     * or more would be packed: the matmul would read PACK_SOURCE tiles, not S, and S would fuse
     * into exp too.) */
    int64_t fm = 0, um = 0;
    cr_assert_eq(tsr_client_set_fusion(cl, 1), 0);
    fm = tsr_task_count(&mmx, 1);
    cr_assert_eq(tsr_client_set_fusion(cl, 0), 0);
    um = tsr_task_count(&mmx, 1);
    tsr_client_set_fusion(cl, 1);
    cr_assert_eq(um - fm, 4, "fusing exp into add saves its 4 tasks: %lld vs %lld", (long long)fm,
                 (long long)um);

    /* The dot view names the chain. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_eq(tsr_write_dot(&h, 1, f), 0);
    fclose(f);
    cr_assert(strstr(buf, "fused(add,mul,sub,div,pow,maximum,add,abs,sqrt)"), "%s", buf);
    free(buf);

    tsr_array *all[] = {X, Y, t,  u,  v, w, p, m,  q, ab, h,  s,  mn,
                        a, b, c2, a2, d, R, r, xr, e, S,  sq, mm, mmx};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) tsr_array_free(all[k]);
    for (int k = 0; k < 100; k++) tsr_array_free(chainv[k]);
    tsr_client_free(cl);
}
