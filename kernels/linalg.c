/* The CPU kernels of issue 13's linear-algebra families: CONTRACT (tensordot and N-d matmul
 * blocks) and the NORMAL and EYE sources, with the descriptor checks table.c runs for them
 * (kernels.h gives the layouts). They handle every dtype their rows declare themselves, so they
 * register in the dtype-generic table (generic.c). Like every kernel: pure, deterministic (one
 * fixed order of every sum), never trusting a descriptor that tsr__check_* has not passed. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/kernels_priv.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        char msg_[192];                                                                            \
        tsr__fmt(msg_, sizeof msg_, __VA_ARGS__);                                                  \
        tsr__fmt(err, errlen, "%s kernel: %s", tsr__kop_name(d->kop), msg_);                       \
        return TSR_EINVALID;                                                                       \
    } while (0)

/* ---- checks --------------------------------------------------------------------------------- */

/* The parameters both sources share with RANDOM's box ([seed, gshape, offset]) are checked by
 * table.c; here only the family's own. */
int tsr__check_eye(const tsr_kdesc *d, char *err, size_t errlen) {
    if (d->ndim != 2) FAIL("output must be 2-d");
    if (d->ni != 3 || d->nf != 0) FAIL("expects 3 integer parameters, got %u", d->ni);
    for (int k = 1; k < 3; k++)
        if (d->i[k] < 0 || d->i[k] > INT64_MAX / 4 - d->shape[k - 1]) FAIL("offset out of range");
    return 0;
}

/* Products of extents for the contraction (M, N, K per batch element), -1 on overflow. */
static int64_t prod_or_neg(int64_t a, int64_t b) {
    if (a == 0 || b == 0) return 0;
    return a > INT32_MAX / b ? -1 : a * b;
}

int tsr__check_contract(const tsr_kdesc *d, const tsr_chunkview *in, int nin,
                        const tsr_chunkview *out, char *err, size_t errlen) {
    if (d->ni < 5) FAIL("expects at least 5 integer parameters, got %u", d->ni);
    int64_t g = d->i[0], nbatch = d->i[1], nc = d->i[2], na = d->i[3], nb = d->i[4];
    if (g < 1 || g > TSR__MATMUL_MAX_GROUP) FAIL("k-steps must be 1 to %d", TSR__MATMUL_MAX_GROUP);
    if (nin != 2 * g && nin != 2 * g + 1)
        FAIL("%lld k-steps take %lld or %lld inputs, got %d", (long long)g, (long long)(2 * g),
             (long long)(2 * g + 1), nin);
    if (nbatch < 0 || nbatch > d->ndim || nc < 0 || nc > TSR_MAX_NDIM || na < 0 ||
        na > TSR_MAX_NDIM || nb < 0 || nb > TSR_MAX_NDIM)
        FAIL("axis counts out of range");
    if (d->ni != (uint32_t)(5 + na + nb))
        FAIL("expects %lld roles, got %u", (long long)(na + nb), d->ni - 5);
    const int64_t *role[2] = {d->i + 5, d->i + 5 + na};
    int64_t nax[2] = {na, nb};
    int cover[TSR_MAX_NDIM] = {0}, pairs[2][TSR_MAX_NDIM] = {{0}};
    int last_a = -1, first_b = TSR_MAX_NDIM;
    for (int k = 0; k < 2; k++) {
        int mine[TSR_MAX_NDIM] = {0};
        for (int ax = 0; ax < nax[k]; ax++) {
            int64_t r = role[k][ax];
            if (r < -nc || r >= d->ndim)
                FAIL("operand %d axis %d: role %lld out of range", k, ax, (long long)r);
            if (r < 0) {
                if (pairs[k][-1 - r]++) FAIL("contraction %lld repeated", (long long)(-1 - r));
                continue;
            }
            if (mine[r]++) FAIL("output axis %lld repeated in operand %d", (long long)r, k);
            cover[r]++;
            if (r >= nbatch && k == 0 && r > last_a) last_a = (int)r;
            if (r >= nbatch && k == 1 && r < first_b) first_b = (int)r;
        }
    }
    for (int j = 0; j < nc; j++)
        if (pairs[0][j] != 1 || pairs[1][j] != 1) FAIL("contraction %d needs one axis of each", j);
    for (int r = 0; r < d->ndim; r++)
        if (cover[r] == 0 || (r >= nbatch && cover[r] != 1))
            FAIL("output axis %d is not made by exactly one operand", r);
    if (last_a > first_b) FAIL("A's free axes must come before B's");
    for (int s = 0; s < nin / 2; s++) {
        const tsr_chunkview *v[2] = {&in[2 * s], &in[2 * s + 1]};
        int64_t kext[TSR_MAX_NDIM] = {0}, K = 1;
        for (int k = 0; k < 2; k++) {
            if (v[k]->ndim != nax[k])
                FAIL("input %d must have %lld axes", 2 * s + k, (long long)nax[k]);
            for (int ax = 0; ax < nax[k]; ax++) {
                int64_t r = role[k][ax], e = v[k]->shape[ax];
                if (r < 0 && k == 0) kext[-1 - r] = e;
                if (r < 0 && k == 1 && kext[-1 - r] != e)
                    FAIL("contraction %lld: extents %lld and %lld differ", (long long)(-1 - r),
                         (long long)kext[-1 - r], (long long)e);
                if (r >= 0 && e != d->shape[r] && !(r < nbatch && e == 1))
                    FAIL("input %d extent %lld on axis %d does not match the output's %lld",
                         2 * s + k, (long long)e, ax, (long long)d->shape[r]);
            }
        }
        for (int j = 0; j < nc; j++) {
            K = prod_or_neg(K, kext[j]);
            if (K < 0) FAIL("contraction too large for BLAS");
        }
        for (int k = 0; k < 2 && d->dtype == TSR_INT64; k++)
            if (v[k]->dtype != TSR_INT64 && v[k]->dtype != TSR_BOOL)
                FAIL("an int64 product needs int64 or bool inputs");
        for (int k = 0; k < 2 && d->dtype == TSR_BOOL; k++)
            if (v[k]->dtype != TSR_BOOL) FAIL("a bool product needs bool inputs");
    }
    int64_t mn = 1;
    for (int r = (int)nbatch; r < d->ndim; r++) {
        mn = prod_or_neg(mn, d->shape[r]);
        if (mn < 0) FAIL("dimensions exceed BLAS's");
    }
    if (nin == 2 * g + 1) {
        const tsr_chunkview *c = &in[nin - 1];
        if (c->ndim != d->ndim) FAIL("Cprev must have the output's shape");
        for (int a = 0; a < d->ndim; a++)
            if (c->shape[a] != d->shape[a]) FAIL("Cprev must have the output's shape");
        if (c->data == out->data && c->dtype != d->dtype)
            FAIL("in-place accumulation needs Cprev in the output's dtype");
    }
    return 0;
}

#undef FAIL

/* ---- sources -------------------------------------------------------------------------------- */

static int put(void *o, int dtype, int64_t j, double v) {
    if (dtype == TSR_FLOAT32)
        ((float *)o)[j] = (float)v;
    else
        ((double *)o)[j] = v;
    return 0;
}

/* i = [seed, gshape[0..nd), offset[0..nd)], f = [loc, scale]. Each row of the chunk is a run of
 * consecutive global indices. */
int k_normal(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
             size_t errlen) {
    (void)in, (void)nin, (void)err, (void)errlen;
    int nd = d->ndim;
    uint64_t seed = (uint64_t)d->i[0];
    const int64_t *gshape = d->i + 1, *off = d->i + 1 + nd;
    double loc = d->f[0], scale = d->f[1];
    int64_t n = tsr__shape_nelem(nd, out->shape);
    if (n == 0) return 0;
    int64_t gstride[TSR_MAX_NDIM], idx[TSR_MAX_NDIM] = {0};
    tsr__shape_strides(nd, gshape, gstride);
    int64_t row = nd ? out->shape[nd - 1] : 1;
    for (int64_t r = 0, j = 0; r < n / row; r++) {
        uint64_t g0 = 0;
        for (int a = 0; a < nd; a++)
            g0 += (uint64_t)(off[a] + (a == nd - 1 ? 0 : idx[a])) * (uint64_t)gstride[a];
        for (int64_t c = 0; c < row; c++, j++) {
            uint64_t g = g0 + (uint64_t)c;
            double u1 = tsr__random_f64(seed, 2 * g), u2 = tsr__random_f64(seed, 2 * g + 1);
            put(out->data, out->dtype, j,
                loc + scale * (sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2)));
        }
        if (nd > 1) tsr__next_index(idx, out->shape, nd - 1);
    }
    return 0;
}

int k_eye(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
          size_t errlen) {
    (void)in, (void)nin, (void)err, (void)errlen;
    int64_t k = d->i[0], r0 = d->i[1], c0 = d->i[2], rows = out->shape[0], cols = out->shape[1];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            put(out->data, out->dtype, r * cols + c, (c0 + c) - (r0 + r) == k ? 1.0 : 0.0);
    return 0;
}

/* ---- contraction ---------------------------------------------------------------------------- */

/* A strided view of one operand block in the order the product needs (a virtual C-order array
 * of n axes with extents ext and element strides str into the block). */
typedef struct view {
    int n;
    int64_t ext[2 * TSR_MAX_NDIM], str[2 * TSR_MAX_NDIM];
} view;

static void view_push(view *v, int64_t ext, int64_t str) {
    v->ext[v->n] = ext;
    v->str[v->n] = str;
    v->n++;
}

/* Is the view the block's own C-order layout (so the block can be used as it stands)? */
static int view_contiguous(const view *v) {
    int64_t s = 1;
    for (int a = v->n - 1; a >= 0; a--) {
        if (v->ext[a] != 1 && v->str[a] != s) return 0;
        s *= v->ext[a];
    }
    return 1;
}

/* Element j of a block of dtype dt, as a double or an int64. */
static double ld_f(const void *p, int dt, int64_t j) {
    switch (dt) {
    case TSR_FLOAT64:
        return ((const double *)p)[j];
    case TSR_FLOAT32:
        return ((const float *)p)[j];
    case TSR_INT64:
        return (double)((const int64_t *)p)[j];
    default:
        return ((const uint8_t *)p)[j];
    }
}

static int64_t ld_i(const void *p, int dt, int64_t j) {
    return dt == TSR_INT64 ? ((const int64_t *)p)[j] : (int64_t)((const uint8_t *)p)[j];
}

/* Copies the view of src (dtype sdt, at element offset base) into dst in C order, converted to
 * dst's dtype ddt. */
static void gather(void *dst, int ddt, const void *src, int sdt, int64_t base, const view *v) {
    int64_t total = 1, idx[2 * TSR_MAX_NDIM] = {0};
    for (int a = 0; a < v->n; a++) total *= v->ext[a];
    int last = v->n - 1;
    int64_t row = v->n ? v->ext[last] : 1, rs = v->n ? v->str[last] : 0;
    for (int64_t j = 0; j < total; j += row) {
        int64_t o = base;
        for (int a = 0; a < last; a++) o += idx[a] * v->str[a];
        for (int64_t c = 0; c < row; c++) {
            int64_t at = o + c * rs;
            if (ddt == TSR_FLOAT64)
                ((double *)dst)[j + c] = ld_f(src, sdt, at);
            else if (ddt == TSR_FLOAT32)
                ((float *)dst)[j + c] = (float)ld_f(src, sdt, at);
            else if (ddt == TSR_BOOL)
                ((uint8_t *)dst)[j + c] = ld_i(src, sdt, at) != 0;
            else
                ((int64_t *)dst)[j + c] = ld_i(src, sdt, at);
        }
        if (last > 0) tsr__next_index(idx, v->ext, last);
    }
}

/* out (M x N, row stride N) = beta * out + a (M x K) @ b (K x N). int64 wraps (unsigned
 * arithmetic), summing over k in increasing order. */
static void product(int dt, int64_t M, int64_t N, int64_t K, const void *a, const void *b, int beta,
                    void *out) {
    if (dt == TSR_FLOAT64) {
        tsr__gemm_f64(M, N, K, a, b, beta, out);
    } else if (dt == TSR_FLOAT32) {
        tsr__gemm_f32(M, N, K, a, b, beta, out);
    } else {
        const int64_t *x = a, *y = b;
        int64_t *o = out;
        for (int64_t m = 0; m < M; m++) {
            uint64_t *orow = (uint64_t *)(o + m * N);
            if (!beta) memset(orow, 0, (size_t)N * sizeof *orow);
            for (int64_t k = 0; k < K; k++) {
                uint64_t s = (uint64_t)x[m * K + k];
                const int64_t *yr = y + k * N;
                for (int64_t n = 0; n < N; n++) orow[n] += s * (uint64_t)yr[n];
            }
        }
    }
}

/* One step: out (every batch element) (+)= A . B. */
static int contract_step(const tsr_kdesc *d, const tsr_chunkview *A, const tsr_chunkview *B,
                         int beta, tsr_chunkview *out) {
    int nbatch = (int)d->i[1], nc = (int)d->i[2];
    const int64_t *role[2] = {d->i + 5, d->i + 5 + d->i[3]};
    const tsr_chunkview *v[2] = {A, B};
    /* A bool product is an int64 one (no sum of 0/1 products can wrap to 0) made 0/1 and or-ed
     * into the output, as NumPy's bool matmul is an or of ands. */
    int odt = out->dtype, dt = odt == TSR_BOOL ? TSR_INT64 : odt;
    size_t es = tsr_dtype_size((tsr_dtype)dt), oes = tsr_dtype_size((tsr_dtype)odt);
    int64_t bstr[2][TSR_MAX_NDIM] = {{0}}, bext[TSR_MAX_NDIM];
    view pv[2] = {{0}, {0}};
    int64_t M = 1, N = 1, K = 1;
    for (int r = 0; r < nbatch; r++) bext[r] = d->shape[r];
    for (int k = 0; k < 2; k++) {
        int64_t str[TSR_MAX_NDIM];
        tsr__shape_strides(v[k]->ndim, v[k]->shape, str);
        /* Batch strides (0 where the operand lacks the axis or broadcasts it). */
        for (int ax = 0; ax < v[k]->ndim; ax++)
            if (role[k][ax] >= 0 && role[k][ax] < nbatch && v[k]->shape[ax] != 1)
                bstr[k][role[k][ax]] = str[ax];
        /* A: its free axes in output order, then the contractions; B: contractions, then its
         * free axes. */
        for (int pass = 0; pass < 2; pass++) {
            int want_free = (k == 0) == (pass == 0);
            if (want_free) {
                for (int r = nbatch; r < d->ndim; r++)
                    for (int ax = 0; ax < v[k]->ndim; ax++)
                        if (role[k][ax] == r) view_push(&pv[k], v[k]->shape[ax], str[ax]);
            } else {
                for (int j = 0; j < nc; j++)
                    for (int ax = 0; ax < v[k]->ndim; ax++)
                        if (role[k][ax] == -1 - j) view_push(&pv[k], v[k]->shape[ax], str[ax]);
            }
        }
    }
    for (int ax = 0; ax < A->ndim; ax++) {
        if (role[0][ax] >= nbatch) M *= A->shape[ax];
        if (role[0][ax] < 0) K *= A->shape[ax];
    }
    for (int ax = 0; ax < B->ndim; ax++)
        if (role[1][ax] >= nbatch) N *= B->shape[ax];
    int64_t nbe = tsr__shape_nelem(nbatch, bext);
    if (nbe == 0 || M == 0 || N == 0) return 0;
    if (K == 0) { /* an empty sum: zeros, or Cprev unchanged */
        if (!beta) memset(out->data, 0, (size_t)(nbe * M * N) * oes);
        return 0;
    }
    /* Each operand is used in place when its view is its own layout in the output dtype, else
     * packed; a packed block is reused while its batch offset stays the same (broadcasting). */
    const void *mat[2] = {NULL, NULL};
    void *buf[2] = {NULL, NULL};
    int64_t packed_at[2] = {-1, -1}, sz[2] = {M * K, K * N};
    int direct[2];
    int64_t *tmp = NULL;
    for (int k = 0; k < 2; k++) {
        direct[k] = v[k]->dtype == dt && view_contiguous(&pv[k]);
        if (!direct[k] && !(buf[k] = malloc((size_t)sz[k] * es))) {
            free(buf[0]);
            return -ENOMEM;
        }
    }
    if (odt == TSR_BOOL && !(tmp = malloc((size_t)(M * N) * sizeof *tmp))) {
        free(buf[0]);
        free(buf[1]);
        return -ENOMEM;
    }
    int64_t bidx[TSR_MAX_NDIM] = {0};
    for (int64_t e = 0; e < nbe; e++) {
        for (int k = 0; k < 2; k++) {
            int64_t base = 0;
            for (int r = 0; r < nbatch; r++) base += bidx[r] * bstr[k][r];
            if (direct[k]) {
                mat[k] = (const char *)v[k]->data + (size_t)base * es;
            } else if (packed_at[k] != base) {
                gather(buf[k], dt, v[k]->data, v[k]->dtype, base, &pv[k]);
                packed_at[k] = base;
                mat[k] = buf[k];
            }
        }
        char *o = (char *)out->data + (size_t)(e * M * N) * oes;
        if (tmp) {
            product(dt, M, N, K, mat[0], mat[1], 0, tmp);
            for (int64_t j = 0; j < M * N; j++)
                ((uint8_t *)o)[j] = (uint8_t)((beta && o[j]) || tmp[j] != 0);
        } else {
            product(dt, M, N, K, mat[0], mat[1], beta, o);
        }
        tsr__next_index(bidx, bext, nbatch);
    }
    free(buf[0]);
    free(buf[1]);
    free(tmp);
    return 0;
}

int k_contract(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
               size_t errlen) {
    int64_t g = d->i[0];
    int64_t n = tsr__shape_nelem(out->ndim, out->shape);
    size_t es = tsr_dtype_size((tsr_dtype)out->dtype);
    int have = nin == 2 * g + 1;
    if (have && out->data != in[nin - 1].data && n > 0) {
        view all = {0};
        view_push(&all, n, 1);
        gather(out->data, out->dtype, in[nin - 1].data, in[nin - 1].dtype, 0, &all);
    }
    for (int64_t s = 0; s < g; s++) {
        int rc = contract_step(d, &in[2 * s], &in[2 * s + 1], have, out);
        if (rc < 0) {
            tsr__fmt(err, errlen, "out of memory");
            return rc;
        }
        have = 1;
    }
    if (!have && n > 0) memset(out->data, 0, (size_t)n * es);
    return 0;
}
