/* FUSED (issue 13): a chain of elementwise operations, and optionally the partial of the reduction
 * it feeds, run as one task in one pass over memory (kernels/kernels.h gives the descriptor's
 * layout; array/fuse.c builds it). The domain is processed in blocks of FBLOCK elements: each step
 * runs across the whole block into a register (a block-sized buffer that stays in L1) before the
 * next step starts, the operation chosen by a switch outside the element loop (fused_tmpl.c), so
 * no intermediate chunk is ever written and no function is called per element. Each step rounds
 * to its own dtype, as its unfused kernel does, so a fused chain gives the unfused graph's bits.
 *
 * The descriptor comes from a peer: tsr__fused_check validates every field (step kinds, operation
 * numbers and their dtypes, operand references, scalar indices, the domain and the inputs'
 * broadcast) before the kernel runs; the kernel trusts what it checked. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/kernels_priv.h"
/* The E_* helpers of the table's expressions for float element types (T and M are defined
 * before each instance of fused_tmpl.c). */
#include "graph/ops_float.h"

/* The most elements a reduction's domain may have (2^33: 64 GiB of float64). */
#define TSR__FUSED_MAX_DOMAIN ((int64_t)1 << 33)

/* Elements per block: a few registers of this many doubles stay in L1. */
#define FBLOCK 512

typedef struct fused_step {
    int kind, fn, dtype;
    int64_t a, b;
} fused_step;

typedef struct fused_prog {
    int nsteps, dn;
    int64_t dom[TSR_MAX_NDIM];
    fused_step st[TSR__FUSED_MAX_STEPS];
    int slot[TSR__FUSED_MAX_STEPS]; /* each step's register */
    int nslots;
    const double *f;
    const int64_t *axes, *boxes; /* the reduced axes (naxes), the random steps' boxes */
    int naxes;
    tsr__random_row_f64_fn row64;
    tsr__random_row_f32_fn row32;
    unsigned char *full;              /* per input: covers the domain element for element */
    int64_t (*bstride)[TSR_MAX_NDIM]; /* per input: strides per domain axis, 0 on broadcast */
} fused_prog;

/* The row-major walk of a reduction's folds (k_reduce's, in cpu_tmpl.c): merged axes, the
 * output stride of each (0 on reduced ones), and where the walk is. */
typedef struct fused_walk {
    int m;
    int64_t ext[TSR_MAX_NDIM], ost[TSR_MAX_NDIM], idx[TSR_MAX_NDIM];
    int64_t inner, inner_os, j, oo;
} fused_walk;

static void fused_walk_next_row(fused_walk *c) {
    c->j = 0;
    tsr__next_index(c->idx, c->ext, c->m - 1);
    c->oo = 0;
    for (int ax = 0; ax < c->m - 1; ax++) c->oo += c->idx[ax] * c->ost[ax];
}

#define T double
#define SFX f64
#define T_DTYPE TSR_FLOAT64
#define M(fn) fn
#define RANDOM_ONE tsr__random_f64
#define RANDOM_ROW(p) (p)->row64
#include "kernels/fused_tmpl.c"
#undef T
#undef SFX
#undef T_DTYPE
#undef M
#undef RANDOM_ONE
#undef RANDOM_ROW

#define T float
#define SFX f32
#define T_DTYPE TSR_FLOAT32
#define M(fn) fn##f
#define RANDOM_ONE tsr__random_f32
#define RANDOM_ROW(p) (p)->row32
#include "kernels/fused_tmpl.c"
#undef T
#undef SFX
#undef T_DTYPE
#undef M
#undef RANDOM_ONE
#undef RANDOM_ROW

/* ---- checks ------------------------------------------------------------------------------- */

#define FFAIL(...)                                                                                 \
    do {                                                                                           \
        char msg_[160];                                                                            \
        tsr__fmt(msg_, sizeof msg_, __VA_ARGS__);                                                  \
        tsr__fmt(err, errlen, "fused kernel: %s", msg_);                                           \
        return TSR_EINVALID;                                                                       \
    } while (0)

static int is_float(int64_t dt) {
    return dt == TSR_FLOAT64 || dt == TSR_FLOAT32;
}

/* Elements of a global shape, or -1 when the product overflows (or a negative extent). */
static int64_t safe_count(int nd, const int64_t *shape) {
    int64_t n = 1;
    for (int a = 0; a < nd; a++) {
        if (shape[a] < 0) return -1;
        if (shape[a] == 0) return 0;
        if (n > INT64_MAX / shape[a]) return -1;
        n *= shape[a];
    }
    return n;
}

int tsr__fused_check(const tsr_kdesc *d, const tsr_chunkview *in, int nin, char *err,
                     size_t errlen) {
    if (d->ni < 2) FFAIL("expects a program");
    int64_t S = d->i[0], D = d->i[1];
    if (S < 1 || S > TSR__FUSED_MAX_STEPS)
        FFAIL("%lld steps (1 to %d allowed)", (long long)S, TSR__FUSED_MAX_STEPS);
    if (D < 0 || D > TSR_MAX_NDIM) FFAIL("domain ndim %lld out of range", (long long)D);
    uint64_t at = (uint64_t)TSR__FS_STEPS_AT(D), end = at + (uint64_t)S * TSR__FS_STEP_INTS;
    if (d->ni < end + 1)
        FFAIL("expects at least %llu integer parameters, got %u", (unsigned long long)(end + 1),
              d->ni);
    const int64_t *dom = d->i + 2, *axes = d->i + end + 1;
    if (d->i[end] < 0 || d->i[end] > D || (uint64_t)d->i[end] > d->ni - end - 1)
        FFAIL("%lld reduced axes out of range", (long long)d->i[end]);
    uint64_t naxes = (uint64_t)d->i[end];
    const int64_t *boxes = axes + naxes;
    uint64_t nbox = d->ni - end - 1 - naxes;
    int64_t n = 1;
    for (int a = 0; a < D; a++) {
        if (dom[a] < 0) FFAIL("negative domain extent on axis %d", a);
        if (dom[a] && n > (INT64_MAX / 16) / dom[a]) FFAIL("domain too large");
        n *= dom[a];
    }
    for (int k = 0; k < nin; k++) {
        const tsr_chunkview *v = &in[k];
        if (!is_float(v->dtype)) FFAIL("input %d: dtype %d is not a float", k, v->dtype);
        if (v->ndim > D) FFAIL("input %d has more axes than the domain", k);
        int lead = (int)D - v->ndim;
        for (int a = 0; a < v->ndim; a++)
            if (v->shape[a] != dom[lead + a] && v->shape[a] != 1)
                FFAIL("input %d extent %lld does not broadcast to %lld on axis %d", k,
                      (long long)v->shape[a], (long long)dom[lead + a], lead + a);
    }
    for (int64_t s = 0; s < S; s++) {
        const int64_t *q = d->i + at + (uint64_t)s * TSR__FS_STEP_INTS;
        int64_t kind = q[0], fn = q[1], dt = q[2], a = q[3], b = q[4];
        if (kind < 0 || kind >= TSR__FS_KINDS)
            FFAIL("step %lld: unknown kind %lld", (long long)s, (long long)kind);
        if (!is_float(dt))
            FFAIL("step %lld: dtype %lld is not a float", (long long)s, (long long)dt);
        if (kind < TSR__FS_RANDOM && (a >= s || a < -(int64_t)nin))
            FFAIL("step %lld: operand %lld out of range", (long long)s, (long long)a);
        switch (kind) {
        case TSR__FS_RANDOM:
            if (fn != 0) FFAIL("step %lld: random takes no operation", (long long)s);
            if (b < 0 || (uint64_t)b > nbox || nbox - (uint64_t)b < 2 * (uint64_t)D)
                FFAIL("step %lld: random box %lld out of range", (long long)s, (long long)b);
            for (int ax = 0; ax < D; ax++) {
                int64_t g = boxes[b + ax], o = boxes[b + D + ax];
                if (g < 0 || o < 0 || o > g || dom[ax] > g - o)
                    FFAIL("step %lld: random box does not hold the domain on axis %d", (long long)s,
                          ax);
            }
            if (safe_count((int)D, boxes + b) < 0)
                FFAIL("step %lld: random array too large", (long long)s);
            break;
        case TSR__FS_FILL:
            if (fn != 0) FFAIL("step %lld: fill takes no operation", (long long)s);
            if (b < 0 || (uint64_t)b >= d->nf)
                FFAIL("step %lld: scalar %lld out of range", (long long)s, (long long)b);
            break;
        case TSR__FS_UNARY:
            if (fn < 0 || fn >= TSR__UNARY_COUNT ||
                !(tsr__kop_fn_dtypes(TSR_KOP_UNARY, (int)fn) & TSR__DT(dt)))
                FFAIL("step %lld: unary operation %lld undefined here", (long long)s,
                      (long long)fn);
            break;
        case TSR__FS_BINARY:
        case TSR__FS_SCALAR_R:
        case TSR__FS_SCALAR_L:
            if (fn < 0 || fn >= TSR__BINARY_COUNT ||
                !(tsr__kop_fn_dtypes(TSR_KOP_BINARY, (int)fn) & TSR__DT(dt)))
                FFAIL("step %lld: binary operation %lld undefined here", (long long)s,
                      (long long)fn);
            if (kind == TSR__FS_BINARY && (b >= s || b < -(int64_t)nin))
                FFAIL("step %lld: operand %lld out of range", (long long)s, (long long)b);
            if (kind != TSR__FS_BINARY && (b < 0 || (uint64_t)b >= d->nf))
                FFAIL("step %lld: scalar %lld out of range", (long long)s, (long long)b);
            break;
        default: /* TSR__FS_ASTYPE */
            if (fn != 0) FFAIL("step %lld: astype takes no operation", (long long)s);
            break;
        }
    }
    if (d->i[at + (uint64_t)(S - 1) * TSR__FS_STEP_INTS + 2] != d->dtype)
        FFAIL("the last step's dtype is not the output's");
    if (d->fn == 0) {
        if (naxes) FFAIL("an elementwise program takes no axes");
        if (D != d->ndim) FFAIL("domain ndim differs from the output's");
        for (int a = 0; a < D; a++)
            if (dom[a] != d->shape[a])
                FFAIL("domain extent differs from the output's on axis %d", a);
        return 0;
    }
    /* A reduction's domain is not a buffer the worker allocated: bound the work a peer can ask
     * for (the chunk it stands for could never be larger than a worker's memory). */
    if (n > TSR__FUSED_MAX_DOMAIN) FFAIL("domain of %lld elements too large", (long long)n);
    if (naxes > (uint64_t)D) FFAIL("more reduced axes than the domain has");
    for (uint64_t k = 0; k < naxes; k++) {
        if (axes[k] < 0 || axes[k] >= D) FFAIL("axis %lld out of range", (long long)axes[k]);
        if (k && axes[k] <= axes[k - 1]) FFAIL("axes must be ascending and distinct");
    }
    if ((uint64_t)d->ndim != (uint64_t)D - naxes) FFAIL("output ndim does not match the reduction");
    for (int a = 0, oa = 0; a < D; a++) {
        int red = 0;
        for (uint64_t k = 0; k < naxes; k++) red |= axes[k] == a;
        if (red) continue;
        if (dom[a] != d->shape[oa])
            FFAIL("output extent %lld does not match domain extent %lld on axis %d",
                  (long long)d->shape[oa], (long long)dom[a], a);
        oa++;
    }
    return 0;
}

/* ---- the kernel ---------------------------------------------------------------------------- */

/* Reads the (checked) program and gives every step a register: a step's register is freed after
 * the last step that reads it, so a chain needs two or three whatever its length. */
static void parse(const tsr_kdesc *d, fused_prog *p) {
    p->nsteps = (int)d->i[0];
    p->dn = (int)d->i[1];
    for (int a = 0; a < p->dn; a++) p->dom[a] = d->i[2 + a];
    const int64_t *q = d->i + TSR__FS_STEPS_AT(p->dn);
    int last_use[TSR__FUSED_MAX_STEPS], busy[TSR__FUSED_MAX_STEPS] = {0};
    for (int s = 0; s < p->nsteps; s++, q += TSR__FS_STEP_INTS) {
        p->st[s] = (fused_step){(int)q[0], (int)q[1], (int)q[2], q[3], q[4]};
        last_use[s] = -1;
    }
    for (int s = 0; s < p->nsteps; s++) {
        const fused_step *st = &p->st[s];
        if (st->kind < TSR__FS_RANDOM && st->a >= 0) last_use[st->a] = s;
        if (st->kind == TSR__FS_BINARY && st->b >= 0) last_use[st->b] = s;
    }
    p->nslots = 0;
    for (int s = 0; s < p->nsteps; s++) {
        const fused_step *st = &p->st[s];
        /* Operands read for the last time here free their registers first: a step may write
         * the register it reads (each element is read before it is written). */
        if (st->kind < TSR__FS_RANDOM && st->a >= 0 && last_use[st->a] == s)
            busy[p->slot[st->a]] = 0;
        if (st->kind == TSR__FS_BINARY && st->b >= 0 && last_use[st->b] == s)
            busy[p->slot[st->b]] = 0;
        int r = 0;
        while (busy[r]) r++;
        busy[r] = 1;
        p->slot[s] = r;
        if (r + 1 > p->nslots) p->nslots = r + 1;
    }
    p->f = d->f;
    p->naxes = (int)*q;
    p->axes = q + 1;
    p->boxes = q + 1 + p->naxes;
    p->row64 = tsr__random_row_f64_pick();
    p->row32 = tsr__random_row_f32_pick();
}

/* Sets up the row-major walk of a reduction over the domain (as k_reduce does). */
static void walk_init(const tsr_kdesc *d, const fused_prog *p, const tsr_chunkview *out,
                      fused_walk *c) {
    int reduced[TSR_MAX_NDIM] = {0};
    for (int k = 0; k < p->naxes; k++) reduced[p->axes[k]] = 1;
    int64_t ostr0[TSR_MAX_NDIM];
    tsr__shape_strides(out->ndim, out->shape, ostr0);
    int m = 0;
    for (int a = 0, oa = 0; a < p->dn; a++) {
        int64_t s = reduced[a] ? 0 : ostr0[oa++];
        if (p->dom[a] == 1) continue;
        if (m && c->ost[m - 1] == s * p->dom[a]) {
            c->ext[m - 1] *= p->dom[a];
            c->ost[m - 1] = s;
            continue;
        }
        c->ext[m] = p->dom[a];
        c->ost[m] = s;
        m++;
    }
    if (m == 0) {
        c->ext[0] = 1;
        c->ost[0] = 0;
        m = 1;
    }
    c->m = m;
    memset(c->idx, 0, sizeof c->idx);
    c->inner = c->ext[m - 1];
    c->inner_os = c->ost[m - 1];
    c->j = 0;
    c->oo = 0;
}

static double reduce_init(int r) {
#define FUSED_INIT_CASE(E, name, init_, ...)                                                       \
    case TSR_##E:                                                                                  \
        return (init_);
    switch (r) {
        TSR__REDUCE_MAP(FUSED_INIT_CASE)
    default:
        return 0.0;
    }
#undef FUSED_INIT_CASE
}

int tsr__k_fused(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                 char *err, size_t errlen) {
    fused_prog p;
    parse(d, &p);
    int red = d->fn - 1; /* the reduction, or -1 */
    int64_t n = tsr__shape_nelem(p.dn, p.dom), nout = tsr__shape_nelem(out->ndim, out->shape);
    if (red >= 0 && nout == 0) return 0;
    if (red >= 0 && n == 0 && !tsr__reduce_has_identity(red)) {
        tsr__fmt(err, errlen, "fused kernel: %s of an empty selection", tsr__reduce_name(red));
        return TSR_EINVALID;
    }
    size_t regbytes = FBLOCK * sizeof(double);
    size_t meta = (size_t)(nin ? nin : 1) * (sizeof *p.bstride + 1);
    char *mem = malloc((size_t)(p.nslots + 2) * regbytes + meta +
                       (red >= 0 ? (size_t)nout * sizeof(double) : 0));
    if (!mem) {
        tsr__fmt(err, errlen, "out of memory");
        return -ENOMEM;
    }
    void *reg[TSR__FUSED_MAX_STEPS];
    for (int r = 0; r < p.nslots; r++) reg[r] = mem + (size_t)r * regbytes;
    double *sa = (double *)(mem + (size_t)p.nslots * regbytes), *sb = sa + FBLOCK;
    char *rest = mem + (size_t)(p.nslots + 2) * regbytes;
    double *acc = NULL;
    if (red >= 0) {
        acc = (double *)rest;
        rest += (size_t)nout * sizeof(double);
        double init = reduce_init(red);
        for (int64_t j = 0; j < nout; j++) acc[j] = init;
    }
    p.bstride = (int64_t(*)[TSR_MAX_NDIM])rest;
    p.full = (unsigned char *)(rest + (size_t)(nin ? nin : 1) * sizeof *p.bstride);
    for (int k = 0; k < nin; k++) {
        const tsr_chunkview *v = &in[k];
        int64_t own[TSR_MAX_NDIM];
        tsr__shape_strides(v->ndim, v->shape, own);
        int lead = p.dn - v->ndim;
        for (int ax = 0; ax < p.dn; ax++) {
            int ia = ax - lead;
            p.bstride[k][ax] = ia < 0 || (v->shape[ia] == 1 && p.dom[ax] != 1) ? 0 : own[ia];
        }
        p.full[k] = tsr__shape_nelem(v->ndim, v->shape) == n;
    }
    fused_walk walk;
    if (red >= 0 && n > 0) walk_init(d, &p, out, &walk);
    int last = p.nsteps - 1;
    size_t osz = tsr_dtype_size((tsr_dtype)d->dtype);
    for (int64_t at = 0; at < n; at += FBLOCK) {
        int64_t len = TSR__MIN(FBLOCK, n - at);
        for (int s = 0; s < p.nsteps; s++) {
            void *dst =
                red < 0 && s == last ? (char *)out->data + (size_t)at * osz : reg[p.slot[s]];
            if (p.st[s].dtype == TSR_FLOAT64)
                step_f64(&p, s, in, dst, reg, sa, sb, at, len);
            else
                step_f32(&p, s, in, dst, reg, (float *)sa, (float *)sb, at, len);
        }
        if (red >= 0) {
            if (d->dtype == TSR_FLOAT64)
                fold_f64(red, acc, reg[p.slot[last]], len, &walk);
            else
                fold_f32(red, acc, reg[p.slot[last]], len, &walk);
        }
    }
    if (red >= 0) {
        if (d->dtype == TSR_FLOAT64) {
            double *o = out->data;
            for (int64_t j = 0; j < nout; j++) o[j] = acc[j];
        } else {
            float *o = out->data;
            for (int64_t j = 0; j < nout; j++) o[j] = (float)acc[j];
        }
    }
    free(mem);
    return 0;
}
