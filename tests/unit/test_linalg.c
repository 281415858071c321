/* The CONTRACT, NORMAL and EYE kernels called directly (kernels/linalg.c): contractions with batch
 * broadcasting, permuted and empty contractions, 0-d results, several k-steps with and without a
 * running sum (in place too), float64, float32, mixed inputs and wrapping int64, against naive
 * loops written here; then mutations of those valid descriptors, which must run or be refused
 * with a message, never crash (the ASan build checks the buffers). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "array/array.h"
#include "kernels/kernels.h"

typedef struct ccase {
    int nbatch, nc, ndim, na, nb;
    int64_t oshape[4], ashape[4], bshape[4];
    int64_t role_a[4], role_b[4];
} ccase;

static const ccase cases[] = {
    /* batch (2,3) with A's second batch axis broadcast, m 3, k 4, n 5: a batched matmul. */
    {2, 1, 4, 4, 3, {2, 3, 3, 5}, {2, 1, 3, 4}, {3, 4, 5}, {0, 1, 2, -1}, {1, -1, 3}},
    /* tensordot over two pairs in permuted order: A (3,4,5) . B (5,2,3), out (4,2). */
    {0, 2, 2, 3, 3, {4, 2}, {3, 4, 5}, {5, 2, 3}, {-2, 0, -1}, {-1, 1, -2}},
    /* an outer product (no contraction). */
    {0, 0, 2, 1, 1, {3, 2}, {3}, {2}, {0}, {1}},
    /* an inner product: a 0-d result. */
    {0, 1, 0, 1, 1, {0}, {4}, {4}, {-1}, {-1}},
    /* an empty contraction: zeros (or Cprev). */
    {0, 1, 2, 2, 2, {2, 3}, {2, 0}, {0, 3}, {0, -1}, {-1, 1}},
};

static int64_t nel(int nd, const int64_t *s) {
    int64_t n = 1;
    for (int a = 0; a < nd; a++) n *= s[a];
    return n;
}

static double getv(const tsr_chunkview *v, int64_t j) {
    switch (v->dtype) {
    case TSR_FLOAT64:
        return ((double *)v->data)[j];
    case TSR_FLOAT32:
        return ((float *)v->data)[j];
    case TSR_BOOL:
        return ((uint8_t *)v->data)[j];
    default:
        return (double)((int64_t *)v->data)[j];
    }
}

/* An int64 or bool element as the wrapping product sees it. */
static uint64_t ival(const tsr_chunkview *v, int64_t j) {
    return v->dtype == TSR_INT64 ? (uint64_t)((int64_t *)v->data)[j] : ((uint8_t *)v->data)[j];
}

static void fill(tsr_chunkview *v, int dtype, int nd, const int64_t *shape, uint64_t seed) {
    memset(v, 0, sizeof *v);
    v->dtype = (uint8_t)dtype;
    v->ndim = (uint8_t)nd;
    memcpy(v->shape, shape, (size_t)nd * sizeof *shape);
    int64_t n = nel(nd, shape);
    v->data = malloc((size_t)(n ? n : 1) * 8);
    for (int64_t j = 0; j < n; j++) {
        uint64_t z = (seed + (uint64_t)j + 1) * 0x9E3779B97F4A7C15ull;
        z ^= z >> 29;
        if (dtype == TSR_FLOAT64)
            ((double *)v->data)[j] = (double)(z >> 11) * 0x1p-53 - 0.5;
        else if (dtype == TSR_FLOAT32)
            ((float *)v->data)[j] = (float)(z >> 40) * 0x1p-24f - 0.5f;
        else if (dtype == TSR_BOOL)
            ((uint8_t *)v->data)[j] = (z >> 40) % 3 == 0; /* sparse: some sums stay 0 */
        else
            ((int64_t *)v->data)[j] = (int64_t)(z | 0x4000000000000000ull); /* large: wraps */
    }
}

/* Element-index helpers: the operand element of output index o and contraction index kc. */
static int64_t operand_at(const ccase *c, int k, const int64_t *o, const int64_t *kc) {
    int nd = k ? c->nb : c->na;
    const int64_t *shape = k ? c->bshape : c->ashape, *role = k ? c->role_b : c->role_a;
    int64_t j = 0;
    for (int ax = 0; ax < nd; ax++) {
        int64_t i = role[ax] < 0 ? kc[-1 - role[ax]] : (shape[ax] == 1 ? 0 : o[role[ax]]);
        j = j * shape[ax] + i;
    }
    return j;
}

/* out = Cprev (if any) + sum over steps of A_s . B_s: doubles for floats, uint64 for int64. */
static void reference(const ccase *c, const tsr_chunkview *in, int g, const tsr_chunkview *cprev,
                      int dtype, double *fref, uint64_t *iref) {
    int64_t kext[4] = {1, 1, 1, 1};
    for (int ax = 0; ax < c->na; ax++)
        if (c->role_a[ax] < 0) kext[-1 - c->role_a[ax]] = c->ashape[ax];
    int64_t n = nel(c->ndim, c->oshape), nk = nel(c->nc, kext);
    int64_t o[4] = {0};
    for (int64_t j = 0; j < n; j++) {
        double fs = cprev ? getv(cprev, j) : 0;
        uint64_t is = 0;
        if (cprev && dtype == TSR_INT64) is = (uint64_t)((int64_t *)cprev->data)[j];
        if (cprev && dtype == TSR_BOOL) is = ((uint8_t *)cprev->data)[j];
        for (int s = 0; s < g; s++) {
            int64_t kc[4] = {0};
            for (int64_t q = 0; q < nk; q++) {
                int64_t ja = operand_at(c, 0, o, kc), jb = operand_at(c, 1, o, kc);
                if (dtype == TSR_INT64)
                    is += ival(&in[2 * s], ja) * ival(&in[2 * s + 1], jb);
                else if (dtype == TSR_BOOL)
                    is |= ((uint8_t *)in[2 * s].data)[ja] & ((uint8_t *)in[2 * s + 1].data)[jb];
                else
                    fs += getv(&in[2 * s], ja) * getv(&in[2 * s + 1], jb);
                for (int p = c->nc - 1; p >= 0; p--) {
                    if (++kc[p] < kext[p]) break;
                    kc[p] = 0;
                }
            }
        }
        if (dtype == TSR_INT64 || dtype == TSR_BOOL)
            iref[j] = is;
        else
            fref[j] = fs;
        for (int a = c->ndim - 1; a >= 0; a--) {
            if (++o[a] < c->oshape[a]) break;
            o[a] = 0;
        }
    }
}

static void make_desc(const ccase *c, int dtype, int g, tsr_kdesc *d, int64_t *iv) {
    memset(d, 0, sizeof *d);
    d->kop = TSR_KOP_CONTRACT;
    d->dtype = (uint8_t)dtype;
    d->ndim = (uint8_t)c->ndim;
    memcpy(d->shape, c->oshape, sizeof c->oshape);
    iv[0] = g;
    iv[1] = c->nbatch;
    iv[2] = c->nc;
    iv[3] = c->na;
    iv[4] = c->nb;
    for (int ax = 0; ax < c->na; ax++) iv[5 + ax] = c->role_a[ax];
    for (int ax = 0; ax < c->nb; ax++) iv[5 + c->na + ax] = c->role_b[ax];
    d->i = iv;
    d->ni = (uint32_t)(5 + c->na + c->nb);
}

Test(linalg, contract_matches_naive_loops) {
    const int in_dt[][3] = {
        /* out, A, B */
        {TSR_FLOAT64, TSR_FLOAT64, TSR_FLOAT64}, {TSR_FLOAT32, TSR_FLOAT32, TSR_FLOAT32},
        {TSR_FLOAT64, TSR_FLOAT32, TSR_FLOAT64}, {TSR_INT64, TSR_INT64, TSR_INT64},
        {TSR_INT64, TSR_BOOL, TSR_INT64},        {TSR_BOOL, TSR_BOOL, TSR_BOOL}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (int t = 0; t < 6; t++)
            for (int mode = 0; mode < 3; mode++) { /* 1 step; 2 steps + Cprev; in place */
                const ccase *c = &cases[ci];
                int dt = in_dt[t][0], g = mode ? 2 : 1, nin = 2 * g + (mode ? 1 : 0);
                tsr_chunkview in[5], out;
                for (int s = 0; s < g; s++) {
                    fill(&in[2 * s], in_dt[t][1], c->na, c->ashape, 100 * ci + 10 * s + 1);
                    fill(&in[2 * s + 1], in_dt[t][2], c->nb, c->bshape, 100 * ci + 10 * s + 2);
                }
                if (mode) fill(&in[nin - 1], dt, c->ndim, c->oshape, 77 + ci);
                int64_t n = nel(c->ndim, c->oshape);
                double *fref = calloc((size_t)n + 1, sizeof *fref);
                uint64_t *iref = calloc((size_t)n + 1, sizeof *iref);
                reference(c, in, g, mode ? &in[nin - 1] : NULL, dt, fref, iref);
                memset(&out, 0, sizeof out);
                out.dtype = (uint8_t)dt;
                out.ndim = (uint8_t)c->ndim;
                memcpy(out.shape, c->oshape, sizeof c->oshape);
                out.data = mode == 2 ? in[nin - 1].data : malloc((size_t)(n ? n : 1) * 8);
                if (mode != 2) memset(out.data, 0x5a, (size_t)(n ? n : 1) * 8);
                tsr_kdesc d;
                int64_t iv[16];
                make_desc(c, dt, g, &d, iv);
                if (mode == 2) cr_assert(tsr__kernel_may_alias(&d, in, nin, nin - 1));
                char err[256] = "";
                int rc = tsr__kernel_run(&d, in, nin, &out, TSR_DEVICE_CPU, err, sizeof err);
                cr_assert_eq(rc, 0, "case %zu dtype %d mode %d: %s", ci, t, mode, err);
                for (int64_t j = 0; j < n; j++) {
                    if (dt == TSR_BOOL) {
                        cr_assert_eq(((uint8_t *)out.data)[j], iref[j],
                                     "case %zu mode %d bool %lld", ci, mode, (long long)j);
                        continue;
                    }
                    if (dt == TSR_INT64) {
                        cr_assert_eq((uint64_t)((int64_t *)out.data)[j], iref[j],
                                     "case %zu mode %d element %lld", ci, mode, (long long)j);
                        continue;
                    }
                    double got = getv(&out, j), tol = dt == TSR_FLOAT32 ? 1e-5 : 1e-13;
                    cr_assert(fabs(got - fref[j]) <= tol * fmax(1, fabs(fref[j])),
                              "case %zu dtype %d mode %d element %lld: %.17g != %.17g", ci, t, mode,
                              (long long)j, got, fref[j]);
                }
                for (int k = 0; k < nin; k++) free(in[k].data);
                if (mode != 2) free(out.data);
                free(fref);
                free(iref);
            }
}

static uint64_t rng = 5;
static uint64_t rnd(void) {
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* One mutation of a valid contraction: a parameter, an input's shape or ndim, the input count or
 * the output's shape; whatever comes of it runs or is refused with a message. */
Test(linalg, mutated_contractions_never_crash, .timeout = 60) {
    static const int64_t vals[] = {-9, -3, -2, -1, 0, 1, 2, 3, 4, 5, 7, 33, INT64_MAX, INT64_MIN};
    int ran = 0, refused = 0;
    for (int it = 0; it < 20000; it++) {
        const ccase *c = &cases[rnd() % (sizeof cases / sizeof cases[0])];
        int dt = (int)(rnd() % 4), g = 1 + (int)(rnd() % 2);
        tsr_kdesc d;
        int64_t iv[16];
        make_desc(c, dt, g, &d, iv);
        int nin = 2 * g + (int)(rnd() % 2);
        tsr_chunkview in[6];
        for (int s = 0; s < g; s++) {
            fill(&in[2 * s], (int)(rnd() % 4), c->na, c->ashape, (uint64_t)it);
            fill(&in[2 * s + 1], (int)(rnd() % 4), c->nb, c->bshape, (uint64_t)it + 1);
        }
        for (int k = 2 * g; k < 6; k++) fill(&in[k], d.dtype, c->ndim, c->oshape, 3);
        switch (rnd() % 5) {
        case 0:
            iv[rnd() % d.ni] = vals[rnd() % (sizeof vals / sizeof vals[0])];
            break;
        case 1: { /* an input with other extents (its buffer made for them) */
            int k = (int)(rnd() % 6);
            int64_t sh[8];
            int nd = (int)(rnd() % 5);
            for (int a = 0; a < nd; a++) sh[a] = (int64_t)(rnd() % 6);
            free(in[k].data);
            fill(&in[k], in[k].dtype, nd, sh, 9);
            break;
        }
        case 2:
            nin = (int)(rnd() % 7);
            break;
        case 3:
            if (d.ndim) d.shape[rnd() % d.ndim] = (int64_t)(rnd() % 6);
            break;
        default:
            d.ni = (uint32_t)(rnd() % 16);
            break;
        }
        tsr_chunkview out = {0};
        out.dtype = d.dtype;
        out.ndim = d.ndim;
        memcpy(out.shape, d.shape, sizeof d.shape);
        out.data = malloc((size_t)tsr__kdesc_nbytes(&d) + 1);
        char err[256] = "";
        int rc = tsr__kernel_run(&d, in, nin, &out, TSR_DEVICE_CPU, err, sizeof err);
        cr_assert(rc <= 0);
        if (rc) {
            cr_assert(err[0], "code %d without a message", rc);
            refused++;
        } else {
            ran++;
        }
        for (int k = 0; k < 6; k++) free(in[k].data);
        free(out.data);
    }
    cr_assert(ran > 1000 && refused > 1000, "ran %d, refused %d", ran, refused);
}

Test(linalg, eye_and_normal_kernels) {
    /* eye: a (3,4) chunk at offset (2,1) of an array with diagonal k = -1. */
    int64_t iv[3] = {-1, 2, 1};
    tsr_kdesc d = {.kop = TSR_KOP_EYE, .dtype = TSR_FLOAT32, .ndim = 2, .shape = {3, 4}};
    d.i = iv;
    d.ni = 3;
    float o[12];
    tsr_chunkview out = {.data = o, .dtype = TSR_FLOAT32, .ndim = 2, .shape = {3, 4}};
    char err[256] = "";
    cr_assert_eq(tsr__kernel_run(&d, NULL, 0, &out, TSR_DEVICE_CPU, err, sizeof err), 0, "%s", err);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            cr_assert_eq(o[r * 4 + c], (1 + c) - (2 + r) == -1 ? 1.0f : 0.0f);
    /* normal: a (2,3) chunk at offset (1,2) of a (4,5) array, loc 3, scale -2. */
    int64_t nv[5] = {42, 4, 5, 1, 2};
    double fv[2] = {3, -2}, v[6];
    tsr_kdesc nd = {.kop = TSR_KOP_NORMAL, .dtype = TSR_FLOAT64, .ndim = 2, .shape = {2, 3}};
    nd.i = nv;
    nd.ni = 5;
    nd.f = fv;
    nd.nf = 2;
    tsr_chunkview nout = {.data = v, .dtype = TSR_FLOAT64, .ndim = 2, .shape = {2, 3}};
    cr_assert_eq(tsr__kernel_run(&nd, NULL, 0, &nout, TSR_DEVICE_CPU, err, sizeof err), 0, "%s",
                 err);
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++) {
            uint64_t g = (uint64_t)((1 + r) * 5 + 2 + c);
            double u1 = tsr__random_f64(42, 2 * g), u2 = tsr__random_f64(42, 2 * g + 1);
            double want = 3 - 2 * (sqrt(-2 * log(1 - u1)) * cos(2 * M_PI * u2));
            cr_assert(fabs(v[r * 3 + c] - want) <= 1e-14 * fmax(1, fabs(want)), "%.17g %.17g",
                      v[r * 3 + c], want);
        }
    /* eye with a 3-d output or offsets past the end is refused. */
    d.ndim = 3;
    cr_assert_eq(tsr__kernel_run(&d, NULL, 0, &out, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
}

/* ---- arrays: inference and lowering (an offline client: nothing is computed) ---------------- */

static tsr_client *oc;

static void osetup(void) {
    cr_assert_eq(tsr_client_new_offline(&oc), 0);
}

static void oteardown(void) {
    tsr_client_free(oc);
}

static tsr_array *rnd_array(int ndim, const int64_t *shape, const int64_t *chunks, tsr_dtype dt) {
    tsr_array *a = NULL;
    cr_assert_eq(tsr_random(oc, ndim, shape, chunks, dt, 1, &a), 0, "%s", tsr_client_errmsg(oc));
    return a;
}

static void chunks_are(const tsr_array *a, int axis, const int64_t *want, int64_t n) {
    cr_assert_eq(tsr_array_numchunks(a, axis), n, "axis %d", axis);
    for (int64_t k = 0; k < n; k++) cr_assert_eq(tsr_array_chunks(a, axis)[k], want[k]);
}

static void lower_one(tsr_array *a, tsr_graph *g) {
    tsr__graph_init(g);
    cr_assert_eq(tsr__lower(oc, &a, 1, g, 0), 0, "%s", tsr_client_errmsg(oc));
    tsr__graph_finish(g);
}

static size_t count(const tsr_graph *g, int kop, uint32_t ndeps) {
    size_t n = 0;
    for (size_t t = 0; t < g->ntasks; t++)
        n += g->tasks[t].d.kop == kop && (ndeps == 0 || g->tasks[t].ndeps == ndeps);
    return n;
}

Test(linalg_arrays, tensordot_chunks_and_tasks, .init = osetup, .fini = oteardown) {
    /* A (5,7,6) chunks (2,3,4) . B (6,7,4) chunks (5,2,3) over ([1,2],[1,0]): B is rechunked to
     * [4,2] x [3,3,1] x [3,1] (2*3*2 = 12 assembles); the result (5,4) has A's row chunks [2,2,1]
     * and B's column chunks [3,1]: 6 chunks, each a chain of 3*2 = 6 block pairs grouped into one
     * CONTRACT task of 12 inputs. 18 + 16 random tasks. */
    tsr_array *a = rnd_array(3, (int64_t[]){5, 7, 6}, (int64_t[]){2, 3, 4}, TSR_FLOAT64);
    tsr_array *b = rnd_array(3, (int64_t[]){6, 7, 4}, (int64_t[]){5, 2, 3}, TSR_FLOAT32);
    tsr_array *t = NULL;
    cr_assert_eq(tsr_tensordot(a, b, (int[]){1, -1}, (int[]){1, 0}, 2, &t), 0, "%s",
                 tsr_client_errmsg(oc));
    cr_assert_eq(tsr_array_ndim(t), 2);
    cr_assert_eq(tsr_array_dtype(t), TSR_FLOAT64);
    chunks_are(t, 0, (int64_t[]){2, 2, 1}, 3);
    chunks_are(t, 1, (int64_t[]){3, 1}, 2);
    tsr_graph g;
    lower_one(t, &g);
    cr_assert_eq(count(&g, TSR_KOP_ASSEMBLE, 0), 12);
    cr_assert_eq(count(&g, TSR_KOP_CONTRACT, 12), 6);
    cr_assert_eq(g.ntasks, 18 + 16 + 12 + 6);
    tsr__graph_free(&g);
    tsr_array_free(t);
    /* The integer form: axes 1 pairs A's last axis with B's first. */
    cr_assert_eq(tsr_tensordot(a, b, NULL, NULL, 1, &t), 0, "%s", tsr_client_errmsg(oc));
    cr_assert_eq(tsr_array_ndim(t), 4);
    cr_assert_eq(tsr_array_shape(t)[1], 7);
    cr_assert_eq(tsr_array_shape(t)[3], 4);
    tsr_array_free(t);
    /* Errors. */
    cr_assert_eq(tsr_tensordot(a, b, NULL, NULL, -1, &t), TSR_EINVALID);
    cr_assert_eq(tsr_tensordot(a, b, (int[]){0}, NULL, 1, &t), TSR_EINVALID);
    cr_assert_eq(tsr_tensordot(a, NULL, NULL, NULL, 1, &t), TSR_EINVALID);
    cr_assert_eq(tsr_tensordot(a, b, NULL, NULL, 1, NULL), TSR_EINVALID);
    cr_assert_eq(tsr_tensordot(a, b, (int[]){0}, (int[]){0}, 1, &t), TSR_ESHAPE);
    cr_assert(strstr(tsr_client_errmsg(oc), "got 5 and 6"), "%s", tsr_client_errmsg(oc));
    cr_assert_eq(tsr_tensordot(a, b, (int[]){-4}, (int[]){0}, 1, &t), TSR_ESHAPE);
    cr_assert_eq(tsr_tensordot(a, a, NULL, NULL, 0, &t), 0); /* 6 axes: fine */
    tsr_array *t2 = NULL;
    cr_assert_eq(tsr_tensordot(t, a, NULL, NULL, 0, &t2), TSR_ESHAPE); /* 9 axes */
    cr_assert(strstr(tsr_client_errmsg(oc), "at most 8"), "%s", tsr_client_errmsg(oc));
    cr_assert_null(t2);
    tsr_array_free(t);
    tsr_array_free(a);
    tsr_array_free(b);
}

Test(linalg_arrays, batched_matmul_groups_its_chain, .init = osetup, .fini = oteardown) {
    /* (2,100,1000) chunks (1,100,25) @ (1000,100) chunks (25,100): one step of a (1,100,100)
     * output chunk is 2*10^4*25 = 5e5 flops, so 32 steps a task at most: 40 block pairs are 2
     * tasks of 20, of 40 and 20*2 + 1 inputs, per output chunk (2 chunks). */
    tsr_array *a = rnd_array(3, (int64_t[]){2, 100, 1000}, (int64_t[]){1, 100, 25}, TSR_FLOAT32);
    tsr_array *b = rnd_array(2, (int64_t[]){1000, 100}, (int64_t[]){25, 100}, TSR_FLOAT32);
    tsr_array *m = NULL;
    cr_assert_eq(tsr_matmul(a, b, &m), 0, "%s", tsr_client_errmsg(oc));
    cr_assert_eq(tsr_array_dtype(m), TSR_FLOAT32);
    cr_assert_eq(tsr_array_ndim(m), 3);
    tsr_graph g;
    lower_one(m, &g);
    cr_assert_eq(count(&g, TSR_KOP_CONTRACT, 40), 2);
    cr_assert_eq(count(&g, TSR_KOP_CONTRACT, 41), 2);
    cr_assert_eq(count(&g, TSR_KOP_CONTRACT, 0), 4);
    tsr__graph_free(&g);
    tsr_array_free(m);
    /* Batch axes that do not broadcast, a 0-d operand. */
    tsr_array *x = rnd_array(3, (int64_t[]){3, 2, 4}, NULL, TSR_FLOAT64);
    tsr_array *y = rnd_array(3, (int64_t[]){2, 4, 5}, NULL, TSR_FLOAT64);
    tsr_array *s = rnd_array(0, NULL, NULL, TSR_FLOAT64);
    cr_assert_eq(tsr_matmul(x, y, &m), TSR_ESHAPE);
    cr_assert(strstr(tsr_client_errmsg(oc), "do not broadcast"), "%s", tsr_client_errmsg(oc));
    cr_assert_eq(tsr_matmul(s, y, &m), TSR_ESHAPE);
    cr_assert_null(m);
    tsr_array_free(x);
    tsr_array_free(y);
    tsr_array_free(s);
    tsr_array_free(a);
    tsr_array_free(b);
}

Test(linalg_arrays, normal_and_eye_arguments, .init = osetup, .fini = oteardown) {
    tsr_array *a = NULL;
    cr_assert_eq(tsr_normal(oc, 1, (int64_t[]){4}, NULL, TSR_INT64, 0, 0, 1, &a), TSR_EINVALID);
    cr_assert(strstr(tsr_client_errmsg(oc), "int64"), "%s", tsr_client_errmsg(oc));
    cr_assert_eq(tsr_eye(oc, 3, 3, 0, NULL, TSR_BOOL, &a), TSR_EINVALID);
    cr_assert_eq(tsr_eye(oc, -1, 3, 0, NULL, TSR_FLOAT64, &a), TSR_ESHAPE);
    cr_assert_eq(tsr_eye(oc, 3, -1, 0, NULL, TSR_FLOAT64, &a), TSR_ESHAPE);
    cr_assert_eq(tsr_eye(NULL, 3, 3, 0, NULL, TSR_FLOAT64, &a), TSR_EINVALID);
    cr_assert_null(a);
    cr_assert_eq(tsr_eye(oc, 0, 5, INT64_MIN, (int64_t[]){2, 2}, TSR_FLOAT32, &a), 0);
    cr_assert_eq(tsr_array_shape(a)[0], 0);
    cr_assert_eq(tsr_array_shape(a)[1], 5);
    tsr_array_free(a);
    cr_assert_eq(tsr_normal(oc, 2, (int64_t[]){3, 4}, (int64_t[]){2, 3}, TSR_FLOAT32, 9, 1, 2, &a),
                 0);
    tsr_graph g;
    lower_one(a, &g);
    cr_assert_eq(count(&g, TSR_KOP_NORMAL, 0), 4);
    tsr__graph_free(&g);
    tsr_array_free(a);
}

/* Result dtypes of matmul and tensordot (numpy.result_type; construction and lowering only: the
 * integration test computes int64 and bool products). A 2-d product stays MATMUL. */
Test(linalg_arrays, product_dtypes, .init = osetup, .fini = oteardown) {
    static const struct {
        tsr_dtype x, y, want;
    } rows[] = {
        {TSR_FLOAT64, TSR_FLOAT32, TSR_FLOAT64}, {TSR_FLOAT32, TSR_FLOAT32, TSR_FLOAT32},
        {TSR_INT64, TSR_FLOAT32, TSR_FLOAT64},   {TSR_INT64, TSR_INT64, TSR_INT64},
        {TSR_BOOL, TSR_INT64, TSR_INT64},        {TSR_BOOL, TSR_FLOAT32, TSR_FLOAT32},
        {TSR_BOOL, TSR_BOOL, TSR_BOOL},
    };
    for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
        tsr_array *x = NULL, *y = NULL, *m = NULL, *t = NULL;
        cr_assert_eq(tsr_zeros(oc, 2, (int64_t[]){2, 3}, NULL, rows[k].x, &x), 0);
        cr_assert_eq(tsr_zeros(oc, 2, (int64_t[]){3, 4}, NULL, rows[k].y, &y), 0);
        cr_assert_eq(tsr_matmul(x, y, &m), 0, "%s", tsr_client_errmsg(oc));
        cr_assert_eq(tsr_tensordot(x, y, NULL, NULL, 1, &t), 0, "%s", tsr_client_errmsg(oc));
        cr_assert_eq(tsr_array_dtype(m), rows[k].want, "row %zu", k);
        cr_assert_eq(tsr_array_dtype(t), rows[k].want, "row %zu", k);
        tsr_graph g;
        lower_one(m, &g);
        cr_assert_eq(count(&g, TSR_KOP_MATMUL, 0), 1, "row %zu", k);
        tsr__graph_free(&g);
        tsr_array_free(x);
        tsr_array_free(y);
        tsr_array_free(m);
        tsr_array_free(t);
    }
}
