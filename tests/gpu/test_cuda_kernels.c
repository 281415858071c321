/* The CUDA backend's kernels against the CPU kernels: every family, both dtypes, odd and ragged
 * shapes, broadcasting, grouped matmul with Cprev (in place too), 1-d matmul, transpose perms,
 * reductions over every axis set and across several passes, long combines, assembles; each run
 * through the backend (alloc, h2d, run, d2h) exactly as a worker would. float64 must match the
 * CPU within 1e-12 (relative), float32 a float64 reference within 1e-4, RANDOM bit for bit. Also
 * the backend's refusals (bad descriptors, LOAD) and that an h2d waits for the kernels reading
 * its destination.
 *
 * A plain program (no Criterion): exits 0 when everything matches, 1 otherwise, and 77 (skipped,
 * for meson) when there is no CUDA device. On a GPU machine without meson, run it from the build
 * folder: build/tests/gpu/test_cuda_kernels [-v]  (-v lists every check). The same source is
 * linked with a host emulation of the device (cuda_emul.c) as test_cuda_kernels_emul, which
 * runs everywhere. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "kernels/kernels.h"

static const tsr__devops *ops;
static void *ctx;
static int verbose, nchecks, nfailed;

#define MAXIN 80
#define F64 TSR_FLOAT64
#define F32 TSR_FLOAT32
#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NOSHAPE ((const int64_t *)NULL)

/* ---- host chunks ---------------------------------------------------------------------------- */

static int64_t count(const tsr_chunkview *v) {
    int64_t n = 1;
    for (int a = 0; a < v->ndim; a++) n *= v->shape[a];
    return n;
}

static size_t bytes(const tsr_chunkview *v) {
    return (size_t)count(v) * tsr_dtype_size((tsr_dtype)v->dtype);
}

static tsr_chunkview chunk(int dtype, int nd, const int64_t *shape) {
    tsr_chunkview v;
    memset(&v, 0, sizeof v);
    v.dtype = (uint8_t)dtype;
    v.ndim = (uint8_t)nd;
    for (int a = 0; a < nd; a++) v.shape[a] = shape[a];
    v.data = calloc(1, bytes(&v) + 8);
    if (!v.data) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return v;
}

static double get(const tsr_chunkview *v, int64_t j) {
    return v->dtype == F64 ? ((const double *)v->data)[j] : ((const float *)v->data)[j];
}

static void set(tsr_chunkview *v, int64_t j, double x) {
    if (v->dtype == F64)
        ((double *)v->data)[j] = x;
    else
        ((float *)v->data)[j] = (float)x;
}

static uint64_t next_seed = 1;

/* Values in [lo, hi), different for every chunk made. */
static tsr_chunkview uniform(int dtype, int nd, const int64_t *shape, double lo, double hi) {
    tsr_chunkview v = chunk(dtype, nd, shape);
    uint64_t seed = next_seed++;
    for (int64_t j = 0; j < count(&v); j++) set(&v, j, lo + (hi - lo) * tsr__random_f64(seed, j));
    return v;
}

static tsr_chunkview converted(const tsr_chunkview *v, int dtype) {
    tsr_chunkview c = chunk(dtype, v->ndim, v->shape);
    for (int64_t j = 0; j < count(v); j++) set(&c, j, get(v, j));
    return c;
}

static void drop(tsr_chunkview *v, int n) {
    for (int k = 0; k < n; k++) free(v[k].data);
}

static tsr_kdesc desc(int kop, int fn, int dtype, int nd, const int64_t *shape) {
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = (uint8_t)kop;
    d.fn = (uint8_t)fn;
    d.dtype = (uint8_t)dtype;
    d.ndim = (uint8_t)nd;
    for (int a = 0; a < nd; a++) d.shape[a] = shape[a];
    return d;
}

/* ---- one comparison ---------------------------------------------------------------------------
 */

static int device_copy(const tsr_chunkview *h, tsr_chunkview *dv, char *err, size_t errlen) {
    *dv = *h;
    dv->data = ops->alloc(ctx, bytes(h));
    if (!dv->data) {
        snprintf(err, errlen, "device alloc of %zu bytes failed", bytes(h));
        return -1;
    }
    return ops->h2d(ctx, dv->data, h->data, bytes(h), err, errlen);
}

/* Set for inputs whose bytes mean something only in their own dtype (packed tiles: a float32
 * panel is 32 wide, a float64 one 16): the float32 reference is then the CPU's in float32. */
static int same_dtype_reference;

/* Runs d on in[] through the backend and compares with the CPU: float64 and tol 0 against the
 * CPU in the same dtype (tol 0: bit for bit), float32 against the CPU in float64 on the same
 * values. alias >= 0: the output is input alias's device buffer. Where the CPU refuses the
 * descriptor, the backend must refuse it with the same code. */
static void check(const char *what, const tsr_kdesc *d, const tsr_chunkview *in, int nin,
                  double tol, int alias) {
    char err[256] = "", gerr[256] = "";
    int ok = 1;
    nchecks++;

    /* The reference. */
    tsr_kdesc rd = *d;
    tsr_chunkview rin[MAXIN];
    int widen = tol != 0 && d->dtype == F32 && !same_dtype_reference;
    for (int k = 0; k < nin; k++) rin[k] = widen ? converted(&in[k], F64) : in[k];
    if (widen) rd.dtype = F64;
    tsr_chunkview ref = chunk(rd.dtype, d->ndim, d->shape);
    int rrc = tsr__kernel_run(&rd, rin, nin, &ref, TSR_DEVICE_CPU, err, sizeof err);
    if (widen) drop(rin, nin);

    /* The device. */
    tsr_chunkview din[MAXIN], got = chunk(d->dtype, d->ndim, d->shape), dout = got;
    int made = 0, grc = 0;
    for (; made < nin && !grc; made++) grc = device_copy(&in[made], &din[made], gerr, sizeof gerr);
    dout.data = NULL;
    if (!grc) {
        dout.data = alias >= 0 ? din[alias].data : ops->alloc(ctx, bytes(&got));
        if (!dout.data) {
            snprintf(gerr, sizeof gerr, "device alloc failed");
            grc = -1;
        }
    }
    if (!grc) grc = ops->run(ctx, d, din, nin, &dout, gerr, sizeof gerr);
    if (!grc) grc = ops->d2h(ctx, got.data, dout.data, bytes(&got), gerr, sizeof gerr);
    int wrc = ops->wait(ctx, err, sizeof err);
    if (wrc && !grc) {
        grc = wrc;
        snprintf(gerr, sizeof gerr, "%s", err);
    }
    for (int k = 0; k < made; k++) ops->free(ctx, din[k].data);
    if (alias < 0) ops->free(ctx, dout.data);

    char why[512] = "";
    if (rrc || grc) {
        if (rrc != grc) {
            ok = 0;
            snprintf(why, sizeof why, "CPU returned %d, device %d (%s)", rrc, grc, gerr);
        }
    } else {
        size_t esz = tsr_dtype_size((tsr_dtype)d->dtype);
        for (int64_t j = 0; j < count(&got) && ok; j++) {
            double g = get(&got, j), r = get(&ref, j);
            if (tol == 0)
                ok = memcmp((char *)got.data + j * esz, (char *)ref.data + j * esz, esz) == 0;
            else if (isnan(g) || isnan(r))
                ok = isnan(g) && isnan(r);
            else
                ok = fabs(g - r) <= tol * fabs(r) || g == r;
            if (!ok)
                snprintf(why, sizeof why, "element %lld: device %.17g, reference %.17g",
                         (long long)j, g, r);
        }
    }
    if (!ok) nfailed++;
    if (!ok || verbose)
        printf("%s %s %s%s%s\n", ok ? "ok  " : "FAIL", tsr_dtype_name((tsr_dtype)d->dtype), what,
               ok ? "" : ": ", why);
    free(ref.data);
    free(got.data);
}

static double tol_of(int dtype) {
    return dtype == F64 ? 1e-12 : 1e-4;
}

/* ---- families ------------------------------------------------------------------------------- */

static void test_sources(int dt) {
    const int64_t *shapes[] = {NOSHAPE, SHAPE(0), SHAPE(7), SHAPE(3, 5, 17),
                               SHAPE(2, 3, 1, 4, 5, 1, 2, 3)};
    const int nds[] = {0, 1, 1, 3, 8};
    for (int s = 0; s < 5; s++) {
        double v[] = {0.1};
        tsr_kdesc d = desc(TSR_KOP_FILL, 0, dt, nds[s], shapes[s]);
        d.nf = 1;
        d.f = v;
        check("fill", &d, NULL, 0, tol_of(dt), -1);
    }

    /* random: chunk shape, global shape, offset */
    struct {
        int nd;
        int64_t shape[3], gshape[3], off[3];
    } rs[] = {
        {0, {0}, {0}, {0}},
        {1, {1000}, {5000}, {1234}},
        {2, {37, 41}, {100, 200}, {13, 150}},
        {3, {5, 7, 300}, {9, 7, 300}, {2, 0, 0}},
        {3, {4, 1, 9}, {10, 3, 20}, {3, 2, 5}},
        {2, {0, 5}, {4, 5}, {4, 0}},
    };
    const uint64_t seeds[] = {42, 0xDEADBEEFCAFEBABEull};
    for (size_t r = 0; r < sizeof rs / sizeof rs[0]; r++)
        for (int s = 0; s < 2; s++) {
            int nd = rs[r].nd;
            int64_t i[7];
            i[0] = (int64_t)seeds[s];
            for (int a = 0; a < nd; a++) {
                i[1 + a] = rs[r].gshape[a];
                i[1 + nd + a] = rs[r].off[a];
            }
            tsr_kdesc d = desc(TSR_KOP_RANDOM, 0, dt, nd, rs[r].shape);
            d.ni = (uint32_t)(1 + 2 * nd);
            d.i = i;
            char what[64];
            snprintf(what, sizeof what, "random %zu seed %d", r, s);
            check(what, &d, NULL, 0, 0, -1);
        }

    struct {
        int64_t n, offset;
        double start, step;
    } ar[] = {{1237, 1000, -3.7, 0.013}, {0, 0, 1, 1}, {1, 0, 2.5, -1}, {4099, 7, 1e6, 1e-3}};
    for (size_t a = 0; a < sizeof ar / sizeof ar[0]; a++) {
        double f[] = {ar[a].start, ar[a].step};
        int64_t i[] = {ar[a].offset};
        tsr_kdesc d = desc(TSR_KOP_ARANGE, 0, dt, 1, &ar[a].n);
        d.nf = 2;
        d.f = f;
        d.ni = 1;
        d.i = i;
        check("arange", &d, NULL, 0, tol_of(dt), -1);
    }
}

static void test_elementwise(int dt) {
    char what[96];
    for (int fn = 0; fn < TSR__UNARY_COUNT; fn++) {
        const int64_t *shapes[] = {SHAPE(1237), SHAPE(3, 0), SHAPE(17, 33)};
        for (int s = 0; s < 3; s++) {
            int nd = s == 0 ? 1 : 2;
            tsr_chunkview x = uniform(dt, nd, shapes[s], 0.25, 2.5);
            tsr_kdesc d = desc(TSR_KOP_UNARY, fn, dt, nd, shapes[s]);
            snprintf(what, sizeof what, "unary %s shape %d", tsr__unary_name(fn), s);
            check(what, &d, &x, 1, tol_of(dt), -1);
            if (s == 2) {
                snprintf(what, sizeof what, "unary %s in place", tsr__unary_name(fn));
                check(what, &d, &x, 1, tol_of(dt), 0);
            }
            drop(&x, 1);
        }
    }

    /* binary: output shape, then each input's (dtype -1: the output's) */
    struct {
        int nd, na, nb;
        int64_t out[3], a[3], b[3];
        int adt, bdt, alias;
    } bs[] = {
        {3, 3, 3, {4, 5, 6}, {4, 5, 6}, {4, 5, 6}, -1, -1, -1},
        {3, 3, 1, {4, 5, 6}, {4, 5, 6}, {6}, -1, -1, -1},
        {3, 3, 2, {4, 5, 6}, {4, 1, 6}, {5, 1}, -1, -1, -1},
        {3, 0, 3, {4, 5, 6}, {0}, {1, 5, 6}, -1, -1, -1},
        {0, 0, 0, {0}, {0}, {0}, -1, -1, -1},
        {2, 2, 2, {257, 3}, {257, 1}, {1, 3}, -1, -1, -1},
        {2, 1, 2, {1, 9}, {9}, {1, 1}, -1, -1, -1},
        {3, 3, 1, {4, 5, 6}, {4, 5, 6}, {6}, F32, F64, -1},
        {3, 3, 1, {4, 5, 6}, {4, 5, 6}, {6}, F64, F32, -1},
        {3, 3, 2, {4, 5, 6}, {4, 5, 6}, {5, 6}, -1, -1, 0},
        {3, 3, 3, {4, 5, 6}, {4, 5, 1}, {4, 5, 6}, -1, -1, 1},
        {2, 2, 2, {3, 0}, {3, 1}, {1, 0}, -1, -1, -1},
    };
    for (int fn = 0; fn < TSR__BINARY_COUNT; fn++)
        for (size_t c = 0; c < sizeof bs / sizeof bs[0]; c++) {
            tsr_chunkview in[2] = {
                uniform(bs[c].adt < 0 ? dt : bs[c].adt, bs[c].na, bs[c].a, 0.5, 2),
                uniform(bs[c].bdt < 0 ? dt : bs[c].bdt, bs[c].nb, bs[c].b, -3, -2.5),
            };
            tsr_kdesc d = desc(TSR_KOP_BINARY, fn, dt, bs[c].nd, bs[c].out);
            snprintf(what, sizeof what, "binary %s case %zu", tsr__binary_name(fn), c);
            check(what, &d, in, 2, tol_of(dt), bs[c].alias);
            drop(in, 2);
        }

    for (int fn = 0; fn < TSR__BINARY_COUNT; fn++)
        for (int first = 0; first < 2; first++) {
            tsr_chunkview x = uniform(dt, 1, SHAPE(999), 0.5, 2);
            double f[] = {-2.75};
            int64_t i[] = {first};
            tsr_kdesc d = desc(TSR_KOP_BINARY_SCALAR, fn, dt, 1, SHAPE(999));
            d.nf = 1;
            d.f = f;
            d.ni = 1;
            d.i = i;
            snprintf(what, sizeof what, "binary_scalar %s scalar_first=%d", tsr__binary_name(fn),
                     first);
            check(what, &d, &x, 1, tol_of(dt), -1);
            snprintf(what, sizeof what, "binary_scalar %s scalar_first=%d in place",
                     tsr__binary_name(fn), first);
            check(what, &d, &x, 1, tol_of(dt), 0);
            drop(&x, 1);
        }

    for (int from = 0; from < 2; from++) {
        tsr_chunkview x = uniform(from, 2, SHAPE(31, 33), -1e3, 1e3);
        tsr_kdesc d = desc(TSR_KOP_ASTYPE, 0, dt, 2, SHAPE(31, 33));
        snprintf(what, sizeof what, "astype from %s", tsr_dtype_name((tsr_dtype)from));
        check(what, &d, &x, 1, tol_of(dt), -1);
        if (from == dt) check("astype in place", &d, &x, 1, tol_of(dt), 0);
        drop(&x, 1);
    }
}

/* g k-steps of sizes ks[] for an m x n output (n < 0: 1-d B), with Cprev when cprev; adt/bdt/cdt
 * the inputs' dtypes (-1: the output's). */
static void matmul_case(const char *what, int dt, int64_t m, int64_t n, int g, const int64_t *ks,
                        int cprev, int adt, int bdt, int cdt, int in_place) {
    tsr_chunkview in[MAXIN];
    int nin = 0, vec = n < 0;
    int64_t oshape[2] = {m, vec ? 0 : n};
    for (int s = 0; s < g; s++) {
        in[nin++] = uniform(adt < 0 ? dt : adt, 2, SHAPE(m, ks[s]), 0, 1);
        if (vec)
            in[nin++] = uniform(bdt < 0 ? dt : bdt, 1, SHAPE(ks[s]), 0, 1);
        else
            in[nin++] = uniform(bdt < 0 ? dt : bdt, 2, SHAPE(ks[s], n), 0, 1);
    }
    if (cprev) in[nin++] = uniform(cdt < 0 ? dt : cdt, vec ? 1 : 2, oshape, 0, 4);
    int64_t i[] = {g};
    tsr_kdesc d = desc(TSR_KOP_MATMUL, 0, dt, vec ? 1 : 2, oshape);
    d.ni = 1;
    d.i = i;
    check(what, &d, in, nin, tol_of(dt), in_place ? nin - 1 : -1);
    drop(in, nin);
}

static void test_matmul(int dt) {
    int other = dt == F64 ? F32 : F64;
    matmul_case("matmul 37x41 @ 41x29", dt, 37, 29, 1, SHAPE(41), 0, -1, -1, -1, 0);
    matmul_case("matmul with Cprev", dt, 37, 29, 1, SHAPE(41), 1, -1, -1, -1, 0);
    matmul_case("matmul 3 k-steps, Cprev in place", dt, 33, 65, 3, SHAPE(16, 33, 7), 1, -1, -1, -1,
                1);
    matmul_case("matmul 2 k-steps", dt, 130, 67, 2, SHAPE(16, 33), 0, -1, -1, -1, 0);
    matmul_case("matmul 1-d, 2 k-steps, Cprev", dt, 37, -1, 2, SHAPE(41, 20), 1, -1, -1, -1, 0);
    matmul_case("matmul 1-d, in place", dt, 64, -1, 1, SHAPE(100), 1, -1, -1, -1, 1);
    matmul_case("matmul mixed dtypes", dt, 21, 19, 2, SHAPE(23, 5), 1, other, -1, other, 0);
    matmul_case("matmul mixed dtypes 1-d", dt, 21, -1, 1, SHAPE(23), 1, -1, other, -1, 0);
    matmul_case("matmul k = 0", dt, 5, 7, 1, SHAPE(0), 0, -1, -1, -1, 0);
    matmul_case("matmul k = 0 with Cprev", dt, 5, 7, 2, SHAPE(0, 3), 1, -1, -1, other, 0);
    matmul_case("matmul m = 0", dt, 0, 7, 1, SHAPE(4), 1, -1, -1, -1, 0);
    matmul_case("matmul 1 x 1", dt, 1, 1, 1, SHAPE(1), 0, -1, -1, -1, 0);
    matmul_case("matmul 32 k-steps", dt, 9, 11, 32,
                SHAPE(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                      23, 24, 25, 26, 27, 28, 29, 30, 31, 32),
                1, -1, -1, -1, 1);
}

/* MATMUL_PACKED: g steps of tiles packed by the CPU's PACK kernel, so the device's gathers and
 * cuBLAS call read the layout kernels.h gives. */
static tsr_chunkview packed(const tsr_chunkview *x, int role) {
    int64_t len = tsr__packed_len(role, x->shape[0], x->shape[1]), r[1] = {role};
    tsr_chunkview p = chunk(x->dtype, 1, SHAPE(len));
    tsr_kdesc d = desc(TSR_KOP_PACK, 0, x->dtype, 1, SHAPE(len));
    d.ni = 1;
    d.i = r;
    char err[256];
    if (tsr__kernel_run(&d, x, 1, &p, TSR_DEVICE_CPU, err, sizeof err) != 0) {
        fprintf(stderr, "PACK failed: %s\n", err);
        exit(1);
    }
    return p;
}

static void packed_case(const char *what, int dt, int64_t m, int64_t n, int g, const int64_t *ks,
                        int cprev, int in_place) {
    tsr_chunkview in[MAXIN];
    int nin = 0;
    for (int s = 0; s < g; s++) {
        tsr_chunkview a = uniform(dt, 2, SHAPE(m, ks[s]), 0, 1);
        tsr_chunkview b = uniform(dt, 2, SHAPE(ks[s], n), 0, 1);
        in[nin++] = packed(&a, 0);
        in[nin++] = packed(&b, 1);
        drop(&a, 1);
        drop(&b, 1);
    }
    if (cprev) in[nin++] = uniform(dt, 2, SHAPE(m, n), 0, 4);
    int64_t i[] = {g};
    tsr_kdesc d = desc(TSR_KOP_MATMUL_PACKED, 0, dt, 2, SHAPE(m, n));
    d.ni = 1;
    d.i = i;
    same_dtype_reference = 1;
    check(what, &d, in, nin, tol_of(dt), in_place ? nin - 1 : -1);
    same_dtype_reference = 0;
    drop(in, nin);
}

static void test_matmul_packed(int dt) {
    packed_case("matmul_packed 37x41 @ 41x29", dt, 37, 29, 1, SHAPE(41), 0, 0);
    packed_case("matmul_packed 24x70, Cprev", dt, 24, 70, 1, SHAPE(9), 1, 0);
    packed_case("matmul_packed 3 k-steps, Cprev in place", dt, 33, 65, 3, SHAPE(16, 33, 7), 1, 1);
    packed_case("matmul_packed 1 x 1", dt, 1, 1, 1, SHAPE(1), 0, 0);
}

static void transpose_case(int dt, int nd, const int64_t *shape, const int64_t *perm) {
    int64_t oshape[TSR_MAX_NDIM];
    char what[128];
    int at = snprintf(what, sizeof what, "transpose (");
    for (int j = 0; j < nd; j++) {
        oshape[j] = shape[perm[j]];
        at += snprintf(what + at, sizeof what - (size_t)at, "%lld%s", (long long)shape[j],
                       j + 1 < nd ? "," : "");
    }
    at += snprintf(what + at, sizeof what - (size_t)at, ") perm (");
    for (int j = 0; j < nd; j++)
        at += snprintf(what + at, sizeof what - (size_t)at, "%lld%s", (long long)perm[j],
                       j + 1 < nd ? "," : ")");
    tsr_chunkview x = uniform(dt, nd, shape, -1, 1);
    tsr_kdesc d = desc(TSR_KOP_TRANSPOSE, 0, dt, nd, oshape);
    d.ni = (uint32_t)nd;
    d.i = perm;
    check(what, &d, &x, 1, 0, -1); /* a copy: exact */
    drop(&x, 1);
}

static void test_transpose(int dt) {
    transpose_case(dt, 2, SHAPE(67, 45), SHAPE(1, 0));
    transpose_case(dt, 2, SHAPE(300, 500), SHAPE(1, 0));
    transpose_case(dt, 2, SHAPE(1, 45), SHAPE(1, 0));
    const int64_t perms3[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int p = 0; p < 6; p++) transpose_case(dt, 3, SHAPE(5, 7, 9), perms3[p]);
    for (int p = 0; p < 6; p++) transpose_case(dt, 3, SHAPE(40, 3, 70), perms3[p]);
    transpose_case(dt, 4, SHAPE(3, 1, 4, 6), SHAPE(2, 0, 3, 1));
    transpose_case(dt, 4, SHAPE(33, 2, 35, 3), SHAPE(2, 3, 0, 1));
    transpose_case(dt, 8, SHAPE(2, 3, 2, 1, 3, 2, 2, 3), SHAPE(7, 6, 5, 4, 3, 2, 1, 0));
    transpose_case(dt, 8, SHAPE(2, 3, 2, 1, 3, 2, 2, 3), SHAPE(1, 0, 3, 2, 5, 4, 7, 6));
    transpose_case(dt, 2, SHAPE(1, 1), SHAPE(1, 0));
    transpose_case(dt, 0, NOSHAPE, NOSHAPE);
    transpose_case(dt, 2, SHAPE(0, 5), SHAPE(1, 0));
}

static void reduce_case(int dt, int fn, int nd, const int64_t *shape, int nax, const int64_t *axes,
                        int nan_at) {
    int64_t oshape[TSR_MAX_NDIM];
    int no = 0;
    char what[128];
    int at = snprintf(what, sizeof what, "reduce %s (", tsr__reduce_name(fn));
    for (int a = 0, k = 0; a < nd; a++) {
        at += snprintf(what + at, sizeof what - (size_t)at, "%lld%s", (long long)shape[a],
                       a + 1 < nd ? "," : "");
        if (k < nax && axes[k] == a)
            k++;
        else
            oshape[no++] = shape[a];
    }
    at += snprintf(what + at, sizeof what - (size_t)at, ") axes (");
    for (int k = 0; k < nax; k++)
        at += snprintf(what + at, sizeof what - (size_t)at, "%lld%s", (long long)axes[k],
                       k + 1 < nax ? "," : "");
    snprintf(what + at, sizeof what - (size_t)at, ")%s", nan_at >= 0 ? " with a NaN" : "");
    tsr_chunkview x = uniform(dt, nd, shape, 0.5, 1.5);
    if (nan_at >= 0) set(&x, nan_at, NAN);
    tsr_kdesc d = desc(TSR_KOP_REDUCE, fn, dt, no, oshape);
    d.ni = (uint32_t)nax;
    d.i = axes;
    check(what, &d, &x, 1, tol_of(dt), -1);
    drop(&x, 1);
}

static void test_reduce(int dt) {
    const int64_t *axsets[] = {NOSHAPE,     SHAPE(0),    SHAPE(1),    SHAPE(2),
                               SHAPE(0, 1), SHAPE(0, 2), SHAPE(1, 2), SHAPE(0, 1, 2)};
    const int naxs[] = {0, 1, 1, 1, 2, 2, 2, 3};
    for (int fn = 0; fn < TSR__REDUCE_COUNT; fn++) {
        for (int s = 0; s < 8; s++)
            reduce_case(dt, fn, 3, SHAPE(13, 50, 9), naxs[s], axsets[s], -1);
        for (int s = 0; s < 8; s++)
            reduce_case(dt, fn, 3, SHAPE(3, 700, 5), naxs[s], axsets[s], -1);
        reduce_case(dt, fn, 2, SHAPE(3, 100000), 1, SHAPE(1), -1);
        reduce_case(dt, fn, 1, SHAPE(1000000), 1, SHAPE(0), -1);
        reduce_case(dt, fn, 2, SHAPE(100000, 3), 1, SHAPE(0), -1);
        reduce_case(dt, fn, 3, SHAPE(64, 33, 2), 2, SHAPE(0, 2), -1);
        reduce_case(dt, fn, 2, SHAPE(7, 300), 1, SHAPE(1), 3 * 300 + 100);
        reduce_case(dt, fn, 2, SHAPE(7, 300), 1, SHAPE(0), 3 * 300 + 100);
        reduce_case(dt, fn, 1, SHAPE(5000), 1, SHAPE(0), 4321);
        reduce_case(dt, fn, 2, SHAPE(4, 0), 1, SHAPE(1), -1); /* max/min: refused */
        reduce_case(dt, fn, 2, SHAPE(0, 4), 1, SHAPE(1), -1);
        reduce_case(dt, fn, 0, NOSHAPE, 0, NOSHAPE, -1);
    }
}

static void test_combine(int dt) {
    int other = dt == F64 ? F32 : F64;
    char what[96];
    for (int fn = 0; fn < TSR__REDUCE_COUNT; fn++) {
        const int nins[] = {1, 3, 40, 33};
        for (int c = 0; c < 4; c++) {
            int nin = nins[c];
            tsr_chunkview in[MAXIN];
            for (int k = 0; k < nin; k++)
                in[k] = uniform(k == 1 ? other : dt, 1, SHAPE(1001), -1, 1);
            if (c == 2) set(&in[17], 500, NAN);
            double f[] = {tsr__reduce_scales(fn) ? 0.25 : 1};
            tsr_kdesc d = desc(TSR_KOP_COMBINE, fn, dt, 1, SHAPE(1001));
            d.nf = 1;
            d.f = f;
            snprintf(what, sizeof what, "combine %s of %d", tsr__reduce_name(fn), nin);
            check(what, &d, in, nin, tol_of(dt), -1);
            snprintf(what, sizeof what, "combine %s of %d in place", tsr__reduce_name(fn), nin);
            check(what, &d, in, nin, tol_of(dt), 0);
            drop(in, nin);
        }
    }
}

static void test_assemble(int dt) {
    int other = dt == F64 ? F32 : F64;
    {
        tsr_chunkview in[4] = {
            uniform(dt, 2, SHAPE(6, 8), -1, 1),
            uniform(dt, 2, SHAPE(4, 10), -1, 1),
            uniform(other, 2, SHAPE(6, 6), -1, 1),
            uniform(dt, 2, SHAPE(7, 6), -1, 1),
        };
        int64_t i[] = {20, 30, 18, 28, 20, 36, 24, 30, 24, 36};
        tsr_kdesc d = desc(TSR_KOP_ASSEMBLE, 0, dt, 2, SHAPE(10, 12));
        d.ni = 10;
        d.i = i;
        check("assemble 2-d from 4", &d, in, 4, tol_of(dt), -1);
        drop(in, 4);
    }
    {
        tsr_chunkview in[2] = {uniform(dt, 3, SHAPE(4, 2, 6), -1, 1),
                               uniform(other, 3, SHAPE(4, 3, 6), -1, 1)};
        int64_t i[] = {0, 0, 0, 0, 0, 0, 0, 2, 0};
        tsr_kdesc d = desc(TSR_KOP_ASSEMBLE, 0, dt, 3, SHAPE(4, 5, 6));
        d.ni = 9;
        d.i = i;
        check("assemble 3-d from 2", &d, in, 2, tol_of(dt), -1);
        drop(in, 2);
    }
    {
        tsr_chunkview in[2] = {uniform(dt, 1, SHAPE(8), -1, 1), uniform(dt, 1, SHAPE(10), -1, 1)};
        int64_t i[] = {5, 0, 8};
        tsr_kdesc d = desc(TSR_KOP_ASSEMBLE, 0, dt, 1, SHAPE(10));
        d.ni = 3;
        d.i = i;
        check("assemble 1-d rechunk", &d, in, 2, tol_of(dt), -1);
        drop(in, 2);
    }
    {
        tsr_chunkview x = uniform(other, 0, NOSHAPE, -1, 1);
        tsr_kdesc d = desc(TSR_KOP_ASSEMBLE, 0, dt, 0, NOSHAPE);
        check("assemble 0-d", &d, &x, 1, tol_of(dt), -1);
        drop(&x, 1);
    }
}

/* ---- the backend itself --------------------------------------------------------------------- */

static void expect(int cond, const char *what) {
    nchecks++;
    if (!cond) nfailed++;
    if (!cond || verbose) printf("%s %s\n", cond ? "ok  " : "FAIL", what);
}

static void test_backend(void) {
    expect(!ops->has_kernel(TSR_KOP_LOAD, F64), "has_kernel: no LOAD");
    expect(ops->has_kernel(TSR_KOP_MATMUL, F64) && ops->has_kernel(TSR_KOP_REDUCE, F32),
           "has_kernel: matmul, reduce");
    expect(!ops->has_kernel(TSR_KOP_FILL, 7), "has_kernel: no unknown dtype");

    /* Refusals come from the same checks as on the CPU. */
    char err[256];
    tsr_chunkview out = chunk(F64, 1, SHAPE(4));
    void *dev = ops->alloc(ctx, 64);
    free(out.data);
    out.data = dev;
    int64_t li[] = {0, F64, 4, 0};
    tsr_kdesc load = desc(TSR_KOP_LOAD, 0, F64, 1, SHAPE(4));
    load.ni = 4;
    load.i = li;
    load.s = "/nonexistent";
    expect(ops->run(ctx, &load, NULL, 0, &out, err, sizeof err) == TSR_EUNSUPPORTED,
           "run: LOAD has no GPU kernel");
    tsr_kdesc bad = desc(TSR_KOP_FILL, 0, F64, 1, SHAPE(5)); /* output shape differs */
    double v[] = {1};
    bad.nf = 1;
    bad.f = v;
    expect(ops->run(ctx, &bad, NULL, 0, &out, err, sizeof err) == TSR_EINVALID,
           "run: a descriptor not matching its output is refused");
    expect(ops->wait(ctx, err, sizeof err) == 0, "wait after refusals");
    ops->free(ctx, dev);

    /* An h2d into memory a queued kernel reads waits for that kernel (device.h's ordering). */
    int64_t n = 1 << 23;
    tsr_chunkview a = uniform(F64, 1, &n, 0.5, 1.5), b = uniform(F64, 1, &n, 0.5, 1.5);
    tsr_chunkview got = chunk(F64, 1, &n), ref = chunk(F64, 1, &n);
    void *da = ops->alloc(ctx, bytes(&a)), *dr = ops->alloc(ctx, bytes(&a));
    int ok = da && dr && ops->h2d(ctx, da, a.data, bytes(&a), err, sizeof err) == 0;
    tsr_kdesc d = desc(TSR_KOP_UNARY, TSR_SIN, F64, 1, &n);
    tsr_chunkview din = a, dout = a;
    din.data = da;
    dout.data = dr;
    for (int r = 0; r < 4 && ok; r++) ok = ops->run(ctx, &d, &din, 1, &dout, err, sizeof err) == 0;
    ok = ok && ops->h2d(ctx, da, b.data, bytes(&b), err, sizeof err) == 0;
    ok = ok && ops->d2h(ctx, got.data, dr, bytes(&got), err, sizeof err) == 0;
    ok = ok && tsr__kernel_run(&d, &a, 1, &ref, TSR_DEVICE_CPU, err, sizeof err) == 0;
    for (int64_t j = 0; j < n && ok; j++)
        ok = fabs(get(&got, j) - get(&ref, j)) <= 1e-12 * fabs(get(&ref, j));
    expect(ok, "h2d after a run waits for the run reading its destination");
    ops->free(ctx, da);
    ops->free(ctx, dr);
    free(a.data);
    free(b.data);
    free(got.data);
    free(ref.data);
}

int main(int argc, char **argv) {
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    ops = tsr__devops_cuda();
    if (!ops || ops->count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    tsr__devinfo info;
    char err[256];
    if (ops->open(0, &ctx, &info, err, sizeof err) != 0) {
        printf("FAIL open: %s\n", err);
        return 1;
    }
    printf("device 0: %s, PCI %s, driver %s, runtime %s, %.1f of %.1f GiB free\n", info.name,
           info.pci_bus_id, info.driver, info.runtime, (double)info.free_bytes / (1 << 30),
           (double)info.total_bytes / (1 << 30));
    for (int dt = F64; dt <= F32; dt++) {
        test_sources(dt);
        test_elementwise(dt);
        test_matmul(dt);
        test_transpose(dt);
        test_reduce(dt);
        test_combine(dt);
        test_assemble(dt);
        test_matmul_packed(dt);
    }
    test_backend();
    ops->close(ctx);
    printf("%d checks, %d failed\n", nchecks, nfailed);
    return nfailed ? 1 : 0;
}
