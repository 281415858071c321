/* The FUSED kernel's per-dtype loops, written once and compiled once per step dtype: fused.c
 * defines T (the element type), SFX (a name suffix), T_DTYPE and M(fn) (the libm function for T,
 * as cpu_f64.c / cpu_f32.c do), then includes this file. Every loop runs over one block of at most
 * FBLOCK elements; the operation is chosen by a switch outside the loop, and each case expands
 * the operation's expression from the operations table (graph/ops.h), the same expression the
 * unfused kernels of cpu_tmpl.c expand: a fused step computes what its unfused kernel would,
 * rounded to T as that kernel's output is. */
#define FCAT2(a, b) a##_##b
#define FCAT(a, b) FCAT2(a, b)
#define F(name) FCAT(name, SFX)

/* o[j] = expr(a[j]) for the unary operation fn. */
static void F(unary)(int fn, T *o, const T *a, int64_t n) {
#define FUSED_UNARY_CASE(E, name, dtypes, expr)                                                    \
    case TSR_##E:                                                                                  \
        for (int64_t j = 0; j < n; j++) {                                                          \
            T x = a[j];                                                                            \
            o[j] = (expr);                                                                         \
        }                                                                                          \
        return;
    switch (fn) {
        TSR__UNARY_MAP(FUSED_UNARY_CASE)
    default:
        return;
    }
#undef FUSED_UNARY_CASE
}

/* o[j] = a[j*sa] OP b[j*sb], strides 0 or 1; inlined with constant strides (binary_row in
 * cpu_tmpl.c does the same) so that each case is a straight loop. o may be a or b (each element
 * is read before it is written, at the same index). */
static inline __attribute__((always_inline)) void
F(binary_loop)(int fn, T *o, const T *a, int64_t sa, const T *b, int64_t sb, int64_t n) {
#define FUSED_BINARY_CASE(E, name, dtypes, expr)                                                   \
    case TSR_##E:                                                                                  \
        for (int64_t j = 0; j < n; j++) {                                                          \
            T x = a[j * sa], y = b[j * sb];                                                        \
            o[j] = (expr);                                                                         \
        }                                                                                          \
        return;
    switch (fn) {
        TSR__BINARY_MAP(FUSED_BINARY_CASE)
    default:
        return;
    }
#undef FUSED_BINARY_CASE
}

static void F(binary)(int fn, T *o, const T *a, int64_t sa, const T *b, int64_t sb, int64_t n) {
    if (sa && sb)
        F(binary_loop)(fn, o, a, 1, b, 1, n);
    else if (sa)
        F(binary_loop)(fn, o, a, 1, b, 0, n);
    else if (sb)
        F(binary_loop)(fn, o, a, 0, b, 1, n);
    else
        F(binary_loop)(fn, o, a, 0, b, 0, n);
}

/* n values of dtype sdt (float64 or float32) at src, converted to T (a C conversion, as the
 * unfused kernels' convert_to_T). */
static void F(convert)(T *dst, const void *src, int sdt, int64_t n) {
    if (sdt == TSR_FLOAT64) {
        const double *s = src;
        for (int64_t j = 0; j < n; j++) dst[j] = (T)s[j];
    } else {
        const float *s = src;
        for (int64_t j = 0; j < n; j++) dst[j] = (T)s[j];
    }
}

/* Elements [at, at + len) of the domain, read from input v through its broadcast strides (bs:
 * per domain axis, 0 where v is broadcast), converted to T: a run along the last axis at a time. */
static void F(gather)(T *dst, const tsr_chunkview *v, const fused_prog *p, const int64_t *bs,
                      int64_t at, int64_t len) {
    int nd = p->dn;
    size_t esz = tsr_dtype_size((tsr_dtype)v->dtype);
    if (nd == 0) {
        for (int64_t j = 0; j < len; j++) F(convert)(dst + j, v->data, v->dtype, 1);
        return;
    }
    int64_t inner = p->dom[nd - 1], last = bs[nd - 1];
    int64_t done = 0;
    while (done < len) {
        int64_t pos = at + done, row = pos / inner, col = pos % inner, base = 0;
        for (int a = nd - 2; a >= 0; a--) {
            base += (row % p->dom[a]) * bs[a];
            row /= p->dom[a];
        }
        int64_t seg = TSR__MIN(inner - col, len - done);
        const char *src = (const char *)v->data;
        if (last) {
            F(convert)(dst + done, src + (size_t)(base + col * last) * esz, v->dtype, seg);
        } else {
            T x;
            F(convert)(&x, src + (size_t)base * esz, v->dtype, 1);
            for (int64_t j = 0; j < seg; j++) dst[done + j] = x;
        }
        done += seg;
    }
}

/* RANDOM's values (SPEC §2) of domain elements [at, at + len): box = [gshape[0..D), offset[0..D)]
 * places the domain in the source array, whose row-major global index picks each value; a run
 * along the last axis at a time, with the same row function k_random uses (bit for bit the
 * values a RANDOM chunk holds). */
static void F(random)(T *dst, const fused_prog *p, uint64_t seed, const int64_t *box, int64_t at,
                      int64_t len) {
    int nd = p->dn;
    if (nd == 0) {
        dst[0] = RANDOM_ONE(seed, 0);
        return;
    }
    const int64_t *gshape = box, *off = box + nd;
    int64_t gstride[TSR_MAX_NDIM];
    tsr__shape_strides(nd, gshape, gstride);
    int64_t inner = p->dom[nd - 1], done = 0;
    while (done < len) {
        int64_t pos = at + done, row = pos / inner, col = pos % inner;
        uint64_t g0 = (uint64_t)(off[nd - 1] + col);
        for (int a = nd - 2; a >= 0; a--) {
            g0 += (uint64_t)((off[a] + row % p->dom[a]) * gstride[a]);
            row /= p->dom[a];
        }
        int64_t seg = TSR__MIN(inner - col, len - done);
        RANDOM_ROW(p)(dst + done, seed, g0, seg);
        done += seg;
    }
}

/* Folds len values into the reduction's double accumulators, continuing the row-major walk of
 * the domain at *c (kernels.h: REDUCE folds its input in row-major order, so every accumulator
 * sees the same terms in the same order as the unfused partial). */
static void F(fold)(int fn, double *acc, const T *v, int64_t len, fused_walk *c) {
#define FUSED_FOLD_LOOP(OP)                                                                        \
    while (len > 0) {                                                                              \
        int64_t seg = TSR__MIN(c->inner - c->j, len);                                              \
        if (c->inner_os == 0) {                                                                    \
            double s = acc[c->oo];                                                                 \
            for (int64_t k = 0; k < seg; k++) s = OP(s, v[k]);                                     \
            acc[c->oo] = s;                                                                        \
        } else {                                                                                   \
            double *ac = acc + c->oo + c->j;                                                       \
            for (int64_t k = 0; k < seg; k++) ac[k] = OP(ac[k], v[k]);                             \
        }                                                                                          \
        v += seg;                                                                                  \
        len -= seg;                                                                                \
        c->j += seg;                                                                               \
        if (c->j == c->inner) fused_walk_next_row(c);                                              \
    }
#define FUSED_FOLD_CASE(E, name, init_, fold, ...)                                                 \
    case TSR_##E:                                                                                  \
        FUSED_FOLD_LOOP(fold)                                                                      \
        return;
    switch (fn) {
        TSR__REDUCE_MAP(FUSED_FOLD_CASE)
    default:
        return;
    }
#undef FUSED_FOLD_CASE
#undef FUSED_FOLD_LOOP
}

/* Runs step s over the block [at, at + len): fetches its operands as T (an earlier step's
 * register, or an input read in place when it covers the domain in T, else gathered), and writes
 * dst. */
static void F(step)(const fused_prog *p, int s, const tsr_chunkview *in, T *dst, void *const *reg,
                    T *scratch_a, T *scratch_b, int64_t at, int64_t len) {
    const fused_step *st = &p->st[s];
    const T *ops[2] = {NULL, NULL};
    int64_t refs[2] = {st->a, st->b};
    int nops = st->kind == TSR__FS_BINARY ? 2 : st->kind >= TSR__FS_RANDOM ? 0 : 1;
    for (int k = 0; k < nops; k++) {
        T *scratch = k ? scratch_b : scratch_a;
        int64_t r = refs[k];
        if (r >= 0) {
            int rdt = p->st[r].dtype;
            if (rdt == T_DTYPE) {
                ops[k] = reg[p->slot[r]];
            } else {
                F(convert)(scratch, reg[p->slot[r]], rdt, len);
                ops[k] = scratch;
            }
            continue;
        }
        const tsr_chunkview *v = &in[-1 - r];
        if (p->full[-1 - r] && v->dtype == T_DTYPE) {
            ops[k] = (const T *)v->data + at;
        } else if (p->full[-1 - r]) {
            F(convert)
            (scratch, (const char *)v->data + (size_t)at * tsr_dtype_size((tsr_dtype)v->dtype),
             v->dtype, len);
            ops[k] = scratch;
        } else {
            F(gather)(scratch, v, p, p->bstride[-1 - r], at, len);
            ops[k] = scratch;
        }
    }
    T sc;
    switch (st->kind) {
    case TSR__FS_UNARY:
        F(unary)(st->fn, dst, ops[0], len);
        break;
    case TSR__FS_BINARY:
        F(binary)(st->fn, dst, ops[0], 1, ops[1], 1, len);
        break;
    case TSR__FS_SCALAR_R:
        sc = (T)p->f[st->b];
        F(binary)(st->fn, dst, ops[0], 1, &sc, 0, len);
        break;
    case TSR__FS_SCALAR_L:
        sc = (T)p->f[st->b];
        F(binary)(st->fn, dst, &sc, 0, ops[0], 1, len);
        break;
    case TSR__FS_RANDOM:
        F(random)(dst, p, (uint64_t)st->a, p->boxes + st->b, at, len);
        break;
    case TSR__FS_FILL:
        sc = (T)p->f[st->b];
        for (int64_t j = 0; j < len; j++) dst[j] = sc;
        break;
    default: /* TSR__FS_ASTYPE: the operand is already converted to T */
        if (dst != ops[0]) memmove(dst, ops[0], (size_t)len * sizeof(T));
        break;
    }
}

#undef F
#undef FCAT
#undef FCAT2
