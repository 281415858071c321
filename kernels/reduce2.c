/* The second reductions and the scans (issue 13): REDUCE2 (a chunk's partial of prod, any, all,
 * var, std, argmax, argmin), COMBINE2 (partials folded strictly in order, the last one writing the
 * result) and SCAN (cumsum/cumprod of a chunk continuing the running value of the chunk before).
 * Dtype-generic kernels (kernels/generic.c): each reads its input dtype itself, since their output
 * dtypes differ from their inputs'. Layouts are in kernels/kernels.h; the checks that make the
 * kernels safe to run on a peer's descriptor are tsr__check_reduce2/combine2/scan, called from
 * table.c's check_family. Pure functions of their inputs, with fixed orders. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
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

static int oom(char *err, size_t errlen) {
    tsr__fmt(err, errlen, "out of memory");
    return -ENOMEM;
}

/* ---- dtypes ---------------------------------------------------------------------------------- */

static int is_float(int dt) {
    return dt == TSR_FLOAT64 || dt == TSR_FLOAT32;
}

/* Element j of a chunk of dtype dt, as a double / as an int64 (int64 and bool chunks). The switch
 * is on a loop-invariant dtype, which the branch predictor (or the compiler's unswitching) takes
 * out of the loops. */
static inline double get_f(const void *p, int dt, int64_t j) {
    switch (dt) {
    case TSR_FLOAT64:
        return ((const double *)p)[j];
    case TSR_FLOAT32:
        return (double)((const float *)p)[j];
    case TSR_INT64:
        return (double)((const int64_t *)p)[j];
    default:
        return ((const uint8_t *)p)[j] != 0;
    }
}

static inline int64_t get_i(const void *p, int dt, int64_t j) {
    return dt == TSR_INT64 ? ((const int64_t *)p)[j] : (int64_t)(((const uint8_t *)p)[j] != 0);
}

/* Stores double v as element j of a float chunk (dt float64 or float32). */
static inline void put_f(void *p, int dt, int64_t j, double v) {
    if (dt == TSR_FLOAT64)
        ((double *)p)[j] = v;
    else
        ((float *)p)[j] = (float)v;
}

/* Wrapping int64 arithmetic (NumPy's), through uint64: never undefined behaviour. */
static inline int64_t wrap_i(uint64_t u) {
    int64_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* ---- REDUCE2 --------------------------------------------------------------------------------- */

/* i = [axes[0..r), gext[0..r), goff[0..r)]. */
static int64_t kept_nelem(const tsr_kdesc *d, const tsr_chunkview *x) {
    uint32_t r = d->ni / 3;
    int64_t n = 1;
    for (int a = 0; a < x->ndim; a++) {
        int red = 0;
        for (uint32_t k = 0; k < r; k++) red |= d->i[k] == a;
        if (!red) n *= x->shape[a];
    }
    return n;
}

int tsr__check_reduce2(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                       size_t errlen) {
    const tsr_chunkview *x = &in[0];
    if (d->ni % 3) FAIL("expects 3 integers per reduced axis, got %u", d->ni);
    uint32_t r = d->ni / 3;
    if (r > (uint32_t)x->ndim) FAIL("more axes than the input has");
    const int64_t *ax = d->i, *gext = d->i + r, *goff = d->i + 2 * r;
    int64_t gn = 1;
    for (uint32_t k = 0; k < r; k++) {
        if (ax[k] < 0 || ax[k] >= x->ndim) FAIL("axis %lld out of range", (long long)ax[k]);
        if (k && ax[k] <= ax[k - 1]) FAIL("axes must be ascending and distinct");
        int64_t e = x->shape[ax[k]];
        if (gext[k] < 0 || goff[k] < 0 || goff[k] > gext[k] || e > gext[k] - goff[k])
            FAIL("chunk does not fit the global extent on axis %lld", (long long)ax[k]);
        if (gext[k] && gn > INT64_MAX / gext[k]) FAIL("global extent too large");
        gn *= gext[k] ? gext[k] : 1;
    }
    if (d->dtype != tsr__reduce2_partial_dtype(d->fn, x->dtype))
        FAIL("a %s partial of %s is %s, not %s", tsr__reduce2_name(d->fn),
             tsr_dtype_name((tsr_dtype)x->dtype),
             tsr_dtype_name((tsr_dtype)tsr__reduce2_partial_dtype(d->fn, x->dtype)),
             tsr_dtype_name((tsr_dtype)d->dtype));
    int64_t kept = kept_nelem(d, x), f = tsr__reduce2_fields(d->fn);
    if (kept > INT64_MAX / 3 || tsr__shape_nelem(d->ndim, d->shape) != kept * f)
        FAIL("output holds %lld values, the partial needs %lld",
             (long long)tsr__shape_nelem(d->ndim, d->shape), (long long)(kept * f));
    if (nin == 2) { /* var/std's second pass: the first pass's (count, mean, M2) per output */
        if (d->fn != TSR__R2_VAR && d->fn != TSR__R2_STD)
            FAIL("%s takes one input", tsr__reduce2_name(d->fn));
        if (in[1].dtype != TSR_FLOAT64 || tsr__shape_nelem(in[1].ndim, in[1].shape) != kept * 3)
            FAIL("the mean input must be %lld float64 values", (long long)(kept * 3));
    }
    if (kept > 0 && tsr__shape_nelem(x->ndim, x->shape) == 0 && !tsr__reduce2_has_identity(d->fn))
        FAIL("%s of an empty sequence", tsr__reduce2_name(d->fn));
    return 0;
}

/* Visits a chunk's elements in row-major order, keeping the output element o they fold into and
 * (argmax/argmin) the global index gi along the reduced axes (row-major over their global
 * extents: the flat index when every axis is reduced). */
typedef struct walk {
    int n;
    int64_t shape[TSR_MAX_NDIM], ostr[TSR_MAX_NDIM], gstr[TSR_MAX_NDIM], idx[TSR_MAX_NDIM];
    int64_t o, gi;
} walk;

static void walk_init(walk *w, const tsr_kdesc *d, const tsr_chunkview *x) {
    uint32_t r = d->ni / 3;
    const int64_t *ax = d->i, *gext = d->i + r, *goff = d->i + 2 * r;
    memset(w, 0, sizeof *w);
    w->n = x->ndim;
    int reduced[TSR_MAX_NDIM] = {0};
    int64_t g = 1;
    for (int k = (int)r - 1; k >= 0; k--) {
        reduced[ax[k]] = 1;
        w->gstr[ax[k]] = g;
        w->gi += goff[k] * g;
        g *= gext[k];
    }
    int64_t s = 1;
    for (int a = x->ndim - 1; a >= 0; a--) {
        w->shape[a] = x->shape[a];
        if (!reduced[a]) {
            w->ostr[a] = s;
            s *= x->shape[a];
        }
    }
}

static inline void walk_next(walk *w) {
    for (int a = w->n - 1; a >= 0; a--) {
        if (++w->idx[a] < w->shape[a]) {
            w->o += w->ostr[a];
            w->gi += w->gstr[a];
            return;
        }
        w->o -= (w->shape[a] - 1) * w->ostr[a];
        w->gi -= (w->shape[a] - 1) * w->gstr[a];
        w->idx[a] = 0;
    }
}

/* Is (v, i) a better argmax (max != 0) or argmin than (bv, bi)? The first NaN beats everything,
 * then the larger (smaller) value, then the lower index: so the answer does not depend on the
 * order in which candidates meet. */
static inline int better_f(double v, int64_t i, double bv, int64_t bi, int max) {
    int vn = v != v, bn = bv != bv;
    if (bn) return vn && i < bi;
    if (vn) return 1;
    if (v == bv) return i < bi;
    return max ? v > bv : v < bv;
}

static inline int better_i(int64_t v, int64_t i, int64_t bv, int64_t bi, int max) {
    if (v == bv) return i < bi;
    return max ? v > bv : v < bv;
}

static int reduce_prod(const tsr_chunkview *x, tsr_chunkview *out, walk *w, int64_t nx,
                       int64_t nout, char *err, size_t errlen) {
    if (out->dtype == TSR_INT64) {
        uint64_t *acc = malloc((size_t)nout * sizeof *acc);
        if (!acc) return oom(err, errlen);
        for (int64_t o = 0; o < nout; o++) acc[o] = 1;
        for (int64_t j = 0; j < nx; j++, walk_next(w))
            acc[w->o] *= (uint64_t)get_i(x->data, x->dtype, j);
        for (int64_t o = 0; o < nout; o++) ((int64_t *)out->data)[o] = wrap_i(acc[o]);
        free(acc);
        return 0;
    }
    double *acc = malloc((size_t)nout * sizeof *acc);
    if (!acc) return oom(err, errlen);
    for (int64_t o = 0; o < nout; o++) acc[o] = 1.0;
    for (int64_t j = 0; j < nx; j++, walk_next(w)) acc[w->o] *= get_f(x->data, x->dtype, j);
    for (int64_t o = 0; o < nout; o++) put_f(out->data, out->dtype, o, acc[o]);
    free(acc);
    return 0;
}

/* var/std: (count, mean, M2) per output, in row-major order and in double. With one input, two
 * passes over the chunk (its mean, then the squared deviations from it); with a second input
 * (the first pass over the whole array: its (count, mean, M2) per output), the deviations from
 * that global mean, so that every partial shares one mean and Chan's update is a plain sum. */
static int reduce_moments(const tsr_kdesc *d, const tsr_chunkview *x, const tsr_chunkview *gm,
                          tsr_chunkview *out, int64_t nx, int64_t nout, char *err, size_t errlen) {
    double *p = out->data;
    double cnt = nout ? (double)(nx / nout) : 0;
    double *sum = malloc((size_t)nout * sizeof *sum);
    if (!sum) return oom(err, errlen);
    walk w;
    for (int64_t o = 0; o < nout; o++) sum[o] = 0;
    if (gm) {
        for (int64_t o = 0; o < nout; o++) {
            p[3 * o] = cnt;
            p[3 * o + 1] = ((const double *)gm->data)[3 * o + 1];
        }
    } else {
        walk_init(&w, d, x);
        for (int64_t j = 0; j < nx; j++, walk_next(&w)) sum[w.o] += get_f(x->data, x->dtype, j);
        for (int64_t o = 0; o < nout; o++) {
            p[3 * o] = cnt;
            p[3 * o + 1] = cnt > 0 ? sum[o] / cnt : 0;
            sum[o] = 0;
        }
    }
    walk_init(&w, d, x);
    for (int64_t j = 0; j < nx; j++, walk_next(&w)) {
        double dv = get_f(x->data, x->dtype, j) - p[3 * w.o + 1];
        sum[w.o] += dv * dv;
    }
    for (int64_t o = 0; o < nout; o++) p[3 * o + 2] = sum[o];
    free(sum);
    return 0;
}

/* argmax/argmin: (value, index) pairs in an int64 chunk; a float input's value is kept as the
 * bits of its float64 value, an int64/bool input's as the int64. */
static int reduce_arg(const tsr_chunkview *x, tsr_chunkview *out, walk *w, int64_t nx, int64_t nout,
                      int max) {
    int64_t *p = out->data;
    for (int64_t o = 0; o < nout; o++) p[2 * o + 1] = -1;
    if (is_float(x->dtype)) {
        for (int64_t j = 0; j < nx; j++, walk_next(w)) {
            double v = get_f(x->data, x->dtype, j), bv;
            int64_t *b = p + 2 * w->o;
            memcpy(&bv, &b[0], sizeof bv);
            if (b[1] < 0 || better_f(v, w->gi, bv, b[1], max)) {
                memcpy(&b[0], &v, sizeof v);
                b[1] = w->gi;
            }
        }
    } else {
        for (int64_t j = 0; j < nx; j++, walk_next(w)) {
            int64_t v = get_i(x->data, x->dtype, j), *b = p + 2 * w->o;
            if (b[1] < 0 || better_i(v, w->gi, b[0], b[1], max)) {
                b[0] = v;
                b[1] = w->gi;
            }
        }
    }
    return 0;
}

int k_reduce2(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
              size_t errlen) {
    const tsr_chunkview *x = &in[0];
    int64_t nx = tsr__shape_nelem(x->ndim, x->shape), nout = kept_nelem(d, x);
    if (nout == 0) return 0;
    walk w;
    walk_init(&w, d, x);
    switch (d->fn) {
    case TSR__R2_PROD:
        return reduce_prod(x, out, &w, nx, nout, err, errlen);
    case TSR__R2_ANY:
    case TSR__R2_ALL: {
        uint8_t *o = out->data, any = d->fn == TSR__R2_ANY;
        memset(o, any ? 0 : 1, (size_t)nout);
        for (int64_t j = 0; j < nx; j++, walk_next(&w)) {
            uint8_t t = get_f(x->data, x->dtype, j) != 0;
            o[w.o] = any ? (o[w.o] | t) : (o[w.o] & t);
        }
        return 0;
    }
    case TSR__R2_VAR:
    case TSR__R2_STD:
        return reduce_moments(d, x, nin == 2 ? &in[1] : NULL, out, nx, nout, err, errlen);
    case TSR__R2_ARGMAX:
    case TSR__R2_ARGMIN:
        return reduce_arg(x, out, &w, nx, nout, d->fn == TSR__R2_ARGMAX);
    default:
        break;
    }
    tsr__fmt(err, errlen, "reduce2 kernel: unknown operation %d", d->fn);
    return TSR_EINVALID;
}

/* ---- COMBINE2 -------------------------------------------------------------------------------- */

/* The result dtype of reduction fn whose partials are of dtype pdt, given the output dtype asked
 * (var/std: float64 or float32; the others are fixed). -1 when none fits. */
static int final_ok(int fn, int pdt, int odt) {
    switch (fn) {
    case TSR__R2_PROD:
        return odt == pdt && pdt != TSR_BOOL;
    case TSR__R2_ANY:
    case TSR__R2_ALL:
        return odt == TSR_BOOL && pdt == TSR_BOOL;
    case TSR__R2_VAR:
    case TSR__R2_STD:
        return is_float(odt) && pdt == TSR_FLOAT64;
    default:
        return odt == TSR_INT64 && pdt == TSR_INT64;
    }
}

int tsr__check_combine2(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                        size_t errlen) {
    if ((d->ni != 0 && d->ni != 2) || d->nf > 1)
        FAIL("expects i = [final, value kind] or none, f = [ddof] or none");
    if (d->ni && d->i[0] != 0 && d->i[0] != 1) FAIL("final must be 0 or 1");
    if (d->ni && d->i[1] != 0 && d->i[1] != 1) FAIL("value kind must be 0 or 1");
    if (d->nf && (!(d->f[0] >= 0) || d->f[0] > 1e18)) FAIL("ddof must be a non-negative number");
    int final = d->ni && d->i[0] == 1;
    int64_t p = tsr__shape_nelem(in[0].ndim, in[0].shape), f = tsr__reduce2_fields(d->fn);
    for (int k = 0; k < nin; k++) {
        if (in[k].dtype != in[0].dtype) FAIL("input %d's dtype differs from input 0's", k);
        if (tsr__shape_nelem(in[k].ndim, in[k].shape) != p)
            FAIL("input %d's size differs from input 0's", k);
    }
    if (p % f)
        FAIL("partials of %s hold %lld values per element", tsr__reduce2_name(d->fn), (long long)f);
    if (!final_ok(d->fn, in[0].dtype, in[0].dtype) && d->fn != TSR__R2_VAR && d->fn != TSR__R2_STD)
        FAIL("%s partials are not %s", tsr__reduce2_name(d->fn),
             tsr_dtype_name((tsr_dtype)in[0].dtype));
    if ((d->fn == TSR__R2_VAR || d->fn == TSR__R2_STD) && in[0].dtype != TSR_FLOAT64)
        FAIL("%s partials are float64", tsr__reduce2_name(d->fn));
    int64_t n = tsr__shape_nelem(d->ndim, d->shape);
    if (!final) {
        if (d->dtype != in[0].dtype || n != p) FAIL("a partial combine keeps its inputs' layout");
    } else {
        if (!final_ok(d->fn, in[0].dtype, d->dtype))
            FAIL("%s does not give %s", tsr__reduce2_name(d->fn),
                 tsr_dtype_name((tsr_dtype)d->dtype));
        if (n > INT64_MAX / 3 || n * f != p)
            FAIL("output holds %lld values for %lld partial values", (long long)n, (long long)p);
    }
    return 0;
}

/* Chan et al.'s pairwise update: (n, mean, M2) of a followed by b. */
static inline void chan(double *a, const double *b) {
    if (b[0] == 0) return;
    if (a[0] == 0) {
        memcpy(a, b, 3 * sizeof *a);
        return;
    }
    double n = a[0] + b[0], delta = b[1] - a[1];
    a[1] += delta * (b[0] / n);
    a[2] += b[2] + delta * delta * (a[0] * b[0] / n);
    a[0] = n;
}

/* i = [final, value kind (argmax/argmin: 1 for int64 values)] (none: 0, 0), f = [ddof] (none: 0).
 * Inputs fold strictly in
 * order, element by element, so an output never depends on anything but the graph. */
int k_combine2(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
               size_t errlen) {
    (void)err;
    (void)errlen;
    int fn = d->fn, final = d->ni && d->i[0] == 1, ints = d->ni && d->i[1] == 1;
    double ddof = d->nf ? d->f[0] : 0;
    int64_t n = tsr__shape_nelem(in[0].ndim, in[0].shape) / tsr__reduce2_fields(fn);
    int pdt = in[0].dtype;
    for (int64_t j = 0; j < n; j++) {
        switch (fn) {
        case TSR__R2_PROD:
            if (pdt == TSR_INT64) {
                uint64_t acc = (uint64_t)((const int64_t *)in[0].data)[j];
                for (int k = 1; k < nin; k++) acc *= (uint64_t)((const int64_t *)in[k].data)[j];
                ((int64_t *)out->data)[j] = wrap_i(acc);
            } else {
                double acc = get_f(in[0].data, pdt, j);
                for (int k = 1; k < nin; k++) acc *= get_f(in[k].data, pdt, j);
                put_f(out->data, out->dtype, j, acc);
            }
            break;
        case TSR__R2_ANY:
        case TSR__R2_ALL: {
            uint8_t acc = ((const uint8_t *)in[0].data)[j] != 0;
            for (int k = 1; k < nin; k++) {
                uint8_t t = ((const uint8_t *)in[k].data)[j] != 0;
                acc = fn == TSR__R2_ANY ? (acc | t) : (acc & t);
            }
            ((uint8_t *)out->data)[j] = acc;
            break;
        }
        case TSR__R2_VAR:
        case TSR__R2_STD: {
            double m[3];
            memcpy(m, (const double *)in[0].data + 3 * j, sizeof m);
            for (int k = 1; k < nin; k++) chan(m, (const double *)in[k].data + 3 * j);
            if (!final) {
                memcpy((double *)out->data + 3 * j, m, sizeof m);
                break;
            }
            /* NumPy divides by max(N - ddof, 0): 0/0 is NaN, x/0 inf. */
            double den = m[0] - ddof > 0 ? m[0] - ddof : 0;
            double v = m[0] > 0 ? m[2] / den : NAN;
            put_f(out->data, out->dtype, j, fn == TSR__R2_STD ? sqrt(v) : v);
            break;
        }
        default: { /* ARGMAX, ARGMIN */
            const int64_t *b = (const int64_t *)in[0].data + 2 * j;
            int64_t best[2] = {b[0], b[1]};
            for (int k = 1; k < nin; k++) {
                const int64_t *c = (const int64_t *)in[k].data + 2 * j;
                int take;
                if (c[1] < 0)
                    take = 0;
                else if (best[1] < 0)
                    take = 1;
                else if (ints)
                    take = better_i(c[0], c[1], best[0], best[1], fn == TSR__R2_ARGMAX);
                else {
                    double cv, bv;
                    memcpy(&cv, &c[0], sizeof cv);
                    memcpy(&bv, &best[0], sizeof bv);
                    take = better_f(cv, c[1], bv, best[1], fn == TSR__R2_ARGMAX);
                }
                if (take) memcpy(best, c, sizeof best);
            }
            if (final)
                ((int64_t *)out->data)[j] = best[1];
            else
                memcpy((int64_t *)out->data + 2 * j, best, sizeof best);
            break;
        }
        }
    }
    return 0;
}

/* ---- SCAN ------------------------------------------------------------------------------------ */

int tsr__check_scan(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                    size_t errlen) {
    const tsr_chunkview *x = &in[0];
    if (d->ni != 1) FAIL("expects i = [axis]");
    if (d->dtype != tsr__scan_dtype(x->dtype))
        FAIL("a scan of %s gives %s", tsr_dtype_name((tsr_dtype)x->dtype),
             tsr_dtype_name((tsr_dtype)tsr__scan_dtype(x->dtype)));
    int64_t axis = d->i[0];
    if (axis == -1) {
        if (tsr__shape_nelem(d->ndim, d->shape) != tsr__shape_nelem(x->ndim, x->shape))
            FAIL("a flat scan's output has its input's size");
    } else {
        if (axis < 0 || axis >= x->ndim) FAIL("axis %lld out of range", (long long)axis);
        if (d->ndim != x->ndim) FAIL("output ndim differs from the input's");
        for (int a = 0; a < d->ndim; a++)
            if (d->shape[a] != x->shape[a]) FAIL("output shape differs from the input's");
    }
    if (nin == 2) {
        const tsr_chunkview *c = &in[1];
        if (c->dtype != d->dtype) FAIL("the running value is not in the output's dtype");
        if (axis == -1) {
            if (tsr__shape_nelem(c->ndim, c->shape) < 1) FAIL("the running value is empty");
        } else {
            if (c->ndim != x->ndim) FAIL("the running value's ndim differs from the input's");
            for (int a = 0; a < x->ndim; a++)
                if (a == axis ? c->shape[a] < 1 : c->shape[a] != x->shape[a])
                    FAIL("the running value's shape does not fit the input on axis %d", a);
        }
    }
    return 0;
}

/* One scan loop per output dtype: R is the running type (uint64_t for int64, so that it wraps),
 * LD(j) reads input element j as R, OP folds. out[j] = x[j] for the first element with no running
 * value, else OP(previous, x[j]): NumPy's sequential loop, so results are bitwise NumPy's. */
#define SCAN_BODY(R, LD, CARRY, OP)                                                                \
    do {                                                                                           \
        R *o = out->data;                                                                          \
        for (int64_t q = 0; q < outer; q++) {                                                      \
            R *oq = o + q * len * inner;                                                           \
            for (int64_t i = 0; i < inner; i++) {                                                  \
                int64_t j = q * len * inner + i;                                                   \
                if (len)                                                                           \
                    oq[i] = carry ? OP(CARRY((q * clen + clen - 1) * inner + i), LD(j)) : LD(j);   \
            }                                                                                      \
            for (int64_t l = 1; l < len; l++)                                                      \
                for (int64_t i = 0; i < inner; i++)                                                \
                    oq[l * inner + i] =                                                            \
                        OP(oq[(l - 1) * inner + i], LD(q * len * inner + l * inner + i));          \
        }                                                                                          \
    } while (0)

#define ADD(a, b) ((a) + (b))
#define MUL(a, b) ((a) * (b))

int k_scan(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
           size_t errlen) {
    (void)err;
    (void)errlen;
    const tsr_chunkview *x = &in[0];
    const tsr_chunkview *cv = nin == 2 ? &in[1] : NULL;
    int carry = cv != NULL, sum = d->fn == TSR_CUMSUM;
    int64_t outer = 1, len, inner = 1, clen = 1;
    if (d->i[0] == -1) {
        len = tsr__shape_nelem(x->ndim, x->shape);
        if (cv) clen = tsr__shape_nelem(cv->ndim, cv->shape);
    } else {
        int ax = (int)d->i[0];
        for (int a = 0; a < ax; a++) outer *= x->shape[a];
        for (int a = ax + 1; a < x->ndim; a++) inner *= x->shape[a];
        len = x->shape[ax];
        if (cv) clen = cv->shape[ax];
    }
    if (outer * len * inner == 0) return 0;
    const void *xs = x->data, *cs = cv ? cv->data : NULL;
    if (out->dtype == TSR_FLOAT64) {
#define LD(j) (((const double *)xs)[j])
#define CY(j) (((const double *)cs)[j])
        if (sum)
            SCAN_BODY(double, LD, CY, ADD);
        else
            SCAN_BODY(double, LD, CY, MUL);
#undef LD
#undef CY
    } else if (out->dtype == TSR_FLOAT32) {
#define LD(j) (((const float *)xs)[j])
#define CY(j) (((const float *)cs)[j])
        if (sum)
            SCAN_BODY(float, LD, CY, ADD);
        else
            SCAN_BODY(float, LD, CY, MUL);
#undef LD
#undef CY
    } else { /* int64 from int64 or bool, in uint64 so that it wraps as NumPy's does */
        int xdt = x->dtype;
#define LD(j) ((uint64_t)get_i(xs, xdt, j))
#define CY(j) ((uint64_t)((const int64_t *)cs)[j])
        if (sum)
            SCAN_BODY(uint64_t, LD, CY, ADD);
        else
            SCAN_BODY(uint64_t, LD, CY, MUL);
#undef LD
#undef CY
    }
    return 0;
}
