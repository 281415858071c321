/* Dtype-generic elementwise kernels (registered in kernels/generic.c): the families whose output
 * dtype differs from their inputs', so no per-dtype instance of cpu_tmpl.c fits them.
 *
 *  COMPARE    the comparisons and logical_and/or (tsr_binary_op LESS .. LOGICAL_OR) -> bool,
 *             computed in the operands' promoted dtype (i[0]);
 *  PREDICATE  logical_not, isnan, isfinite (tsr_unary_op) -> bool;
 *  WHERE      C ? X : Y in the output dtype.
 *
 * Every operand broadcasts to the output (right-aligned, extent 1 or the output's). The output is
 * walked a row (its last axis) at a time, in blocks of BLOCK elements: each operand's block is
 * converted into a staging buffer of the compute dtype, then one loop per operation and dtype
 * runs over the block, with no call per element. */
#include <math.h>
#include <string.h>

#include "common/common.h"
#include "kernels/kernels_priv.h"

#define BLOCK 512

/* Large enough for BLOCK elements of any dtype, aligned for all of them. */
typedef union stage {
    double f64[BLOCK];
    float f32[BLOCK];
    int64_t i64[BLOCK];
    uint8_t b[BLOCK];
} stage;

/* n elements of dtype idt at src (stride st elements: 1, or 0 repeating one element), converted
 * to dtype odt at dst: floats to int64 as tsr__f2i, anything non-zero (NaN too) to bool true. */
#define CONV_LOOP(OT, IT, EXPR)                                                                    \
    do {                                                                                           \
        OT *o_ = dst;                                                                              \
        const IT *s_ = src;                                                                        \
        for (int64_t j = 0; j < n; j++) {                                                          \
            IT v = s_[j * st];                                                                     \
            o_[j] = (EXPR);                                                                        \
        }                                                                                          \
    } while (0)
#define CONV_FROM(IT, TO_INT)                                                                      \
    switch (odt) {                                                                                 \
    case TSR_FLOAT64:                                                                              \
        CONV_LOOP(double, IT, (double)v);                                                          \
        return;                                                                                    \
    case TSR_FLOAT32:                                                                              \
        CONV_LOOP(float, IT, (float)v);                                                            \
        return;                                                                                    \
    case TSR_INT64:                                                                                \
        CONV_LOOP(int64_t, IT, TO_INT(v));                                                         \
        return;                                                                                    \
    case TSR_BOOL:                                                                                 \
        CONV_LOOP(uint8_t, IT, (uint8_t)(v != 0));                                                 \
        return;                                                                                    \
    default:                                                                                       \
        return;                                                                                    \
    }
#define F2I(v) tsr__f2i((double)(v))
#define I2I(v) ((int64_t)(v))
static void conv(void *dst, int odt, const void *src, int idt, int64_t st, int64_t n) {
    switch (idt) {
    case TSR_FLOAT64:
        CONV_FROM(double, F2I)
    case TSR_FLOAT32:
        CONV_FROM(float, F2I)
    case TSR_INT64:
        CONV_FROM(int64_t, I2I)
    case TSR_BOOL:
        CONV_FROM(uint8_t, I2I)
    default:
        return;
    }
}
#undef CONV_FROM
#undef CONV_LOOP

/* One operand as the walk sees it: its data and dtype (a scalar is one float64 element with
 * stride 0 everywhere), and its strides on the output's axes. */
typedef struct operand {
    const void *data;
    int dtype;
    int64_t st[TSR_MAX_NDIM];
} operand;

static void bind_array(operand *p, const tsr_chunkview *v, const tsr_chunkview *out) {
    int64_t own[TSR_MAX_NDIM];
    tsr__shape_strides(v->ndim, v->shape, own);
    int lead = out->ndim - v->ndim;
    for (int ax = 0; ax < out->ndim; ax++) {
        int ia = ax - lead;
        p->st[ax] = ia < 0 || (v->shape[ia] == 1 && out->shape[ax] != 1) ? 0 : own[ia];
    }
    p->data = v->data;
    p->dtype = v->dtype;
}

static void bind_number(operand *p, const double *s) {
    memset(p->st, 0, sizeof p->st);
    p->data = s;
    p->dtype = TSR_FLOAT64;
}

/* COMPARE's scalar: f[0], or exactly the int64 i[2] when given. */
static void bind_scalar(operand *p, const tsr_kdesc *d) {
    bind_number(p, d->f);
    if (d->ni >= 3) {
        p->data = &d->i[2];
        p->dtype = TSR_INT64;
    }
}

/* Converts block [j0, j0 + len) of the output row whose first element's multi-index is idx (the
 * last axis at 0) from operand p into dst as dtype cdt. */
static void gather(void *dst, int cdt, const operand *p, const tsr_chunkview *out,
                   const int64_t *idx, int64_t j0, int64_t len) {
    int nd = out->ndim;
    int64_t off = 0, last = nd ? p->st[nd - 1] : 0;
    for (int ax = 0; ax + 1 < nd; ax++) off += idx[ax] * p->st[ax];
    off += j0 * last;
    const char *src = (const char *)p->data + (size_t)off * tsr_dtype_size((tsr_dtype)p->dtype);
    conv(dst, cdt, src, p->dtype, last, len);
}

/* Calls body(j0, len, o) for each block of each output row; idx is the row's multi-index. */
#define WALK(out, body)                                                                            \
    do {                                                                                           \
        int nd_ = (out)->ndim;                                                                     \
        int64_t n_ = tsr__shape_nelem(nd_, (out)->shape);                                          \
        int64_t inner_ = nd_ ? (out)->shape[nd_ - 1] : 1;                                          \
        int64_t idx[TSR_MAX_NDIM] = {0};                                                           \
        int64_t rows_ = inner_ ? n_ / inner_ : 0;                                                  \
        for (int64_t r_ = 0; r_ < rows_; r_++) {                                                   \
            for (int64_t j0 = 0; j0 < inner_; j0 += BLOCK) {                                       \
                int64_t len = TSR__MIN(BLOCK, inner_ - j0);                                        \
                int64_t at = r_ * inner_ + j0;                                                     \
                body                                                                               \
            }                                                                                      \
            if (nd_ > 1) tsr__next_index(idx, (out)->shape, nd_ - 1);                              \
        }                                                                                          \
    } while (0)

/* ---- compare -------------------------------------------------------------------------------- */

#define CMP_LOOP(TY, OP)                                                                           \
    for (int64_t j = 0; j < len; j++) {                                                            \
        TY x = ((const TY *)xs)[j], y = ((const TY *)ys)[j];                                       \
        o[j] = (uint8_t)(OP);                                                                      \
    }                                                                                              \
    break;
#define CMP_OPS(TY)                                                                                \
    switch (fn) {                                                                                  \
    case TSR_LESS:                                                                                 \
        CMP_LOOP(TY, x < y)                                                                        \
    case TSR_LESS_EQUAL:                                                                           \
        CMP_LOOP(TY, x <= y)                                                                       \
    case TSR_GREATER:                                                                              \
        CMP_LOOP(TY, x > y)                                                                        \
    case TSR_GREATER_EQUAL:                                                                        \
        CMP_LOOP(TY, x >= y)                                                                       \
    case TSR_EQUAL:                                                                                \
        CMP_LOOP(TY, x == y)                                                                       \
    case TSR_NOT_EQUAL:                                                                            \
        CMP_LOOP(TY, x != y)                                                                       \
    case TSR_LOGICAL_AND:                                                                          \
        CMP_LOOP(TY, x != 0 && y != 0)                                                             \
    case TSR_LOGICAL_OR:                                                                           \
        CMP_LOOP(TY, x != 0 || y != 0)                                                             \
    default:                                                                                       \
        break;                                                                                     \
    }

static void compare_block(int fn, int cdt, uint8_t *o, const void *xs, const void *ys,
                          int64_t len) {
    switch (cdt) {
    case TSR_FLOAT64:
        CMP_OPS(double)
        break;
    case TSR_FLOAT32:
        CMP_OPS(float)
        break;
    case TSR_INT64:
        CMP_OPS(int64_t)
        break;
    default:
        CMP_OPS(uint8_t)
        break;
    }
}
#undef CMP_OPS
#undef CMP_LOOP

/* 2 inputs: i = [compute dtype]; 1 input: i = [compute dtype, scalar_first], f = [scalar]. */
int tsr__k_compare(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                   char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    int cdt = (int)d->i[0];
    operand px, py;
    if (nin == 2) {
        bind_array(&px, &in[0], out);
        bind_array(&py, &in[1], out);
    } else if (d->i[1]) {
        bind_scalar(&px, d);
        bind_array(&py, &in[0], out);
    } else {
        bind_array(&px, &in[0], out);
        bind_scalar(&py, d);
    }
    stage xs, ys;
    uint8_t *o = out->data;
    WALK(out, {
        gather(&xs, cdt, &px, out, idx, j0, len);
        gather(&ys, cdt, &py, out, idx, j0, len);
        compare_block(d->fn, cdt, o + at, &xs, &ys, len);
    });
    return 0;
}

/* ---- predicate ------------------------------------------------------------------------------ */

#define PRED_FLOAT(TY, ISFIN)                                                                      \
    do {                                                                                           \
        const TY *x = in[0].data;                                                                  \
        if (d->fn == TSR_LOGICAL_NOT)                                                              \
            for (int64_t j = 0; j < n; j++) o[j] = x[j] == 0;                                      \
        else if (d->fn == TSR_ISNAN)                                                               \
            for (int64_t j = 0; j < n; j++) o[j] = x[j] != x[j];                                   \
        else                                                                                       \
            for (int64_t j = 0; j < n; j++) o[j] = ISFIN(x[j]) != 0;                               \
    } while (0)
#define PRED_INT(TY)                                                                               \
    do {                                                                                           \
        const TY *x = in[0].data;                                                                  \
        if (d->fn == TSR_LOGICAL_NOT)                                                              \
            for (int64_t j = 0; j < n; j++) o[j] = x[j] == 0;                                      \
        else /* integers are never NaN and always finite */                                        \
            memset(o, d->fn == TSR_ISFINITE, (size_t)n);                                           \
    } while (0)

/* 1 input of the output's shape, any dtype. Writes the whole output after reading each element
 * once, element by element: an input aliasing the output (bool -> bool) would still be safe. */
int tsr__k_predicate(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                     char *err, size_t errlen) {
    (void)nin;
    (void)err;
    (void)errlen;
    uint8_t *o = out->data;
    int64_t n = tsr__shape_nelem(out->ndim, out->shape);
    if (n == 0) return 0; /* no buffer to write */
    switch (in[0].dtype) {
    case TSR_FLOAT64:
        PRED_FLOAT(double, isfinite);
        break;
    case TSR_FLOAT32:
        PRED_FLOAT(float, isfinite);
        break;
    case TSR_INT64:
        PRED_INT(int64_t);
        break;
    default:
        PRED_INT(uint8_t);
        break;
    }
    return 0;
}
#undef PRED_FLOAT
#undef PRED_INT

/* ---- where ---------------------------------------------------------------------------------- */

#define SELECT(TY)                                                                                 \
    do {                                                                                           \
        TY *ot = (TY *)(void *)(o + (size_t)at * sizeof(TY));                                      \
        const TY *xt = (const TY *)(const void *)&xs, *yt = (const TY *)(const void *)&ys;         \
        for (int64_t j = 0; j < len; j++) ot[j] = cs.b[j] ? xt[j] : yt[j];                         \
    } while (0)

/* in[0] = C, then X unless i[0] (X is the scalar f[0], or exactly the int64 i[3] when i[2]),
 * then Y unless i[1] (Y is f[1], or exactly i[5] when i[4]); i[2..5] only when ni == 6. */
int tsr__k_where(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                 char *err, size_t errlen) {
    (void)nin;
    (void)err;
    (void)errlen;
    operand pc, px, py;
    int k = 1;
    bind_array(&pc, &in[0], out);
    int exact = d->ni >= 6;
    if (d->i[0])
        bind_number(&px, &d->f[0]);
    else
        bind_array(&px, &in[k++], out);
    if (d->i[0] && exact && d->i[2]) {
        px.data = &d->i[3];
        px.dtype = TSR_INT64;
    }
    if (d->i[1])
        bind_number(&py, &d->f[1]);
    else
        bind_array(&py, &in[k], out);
    if (d->i[1] && exact && d->i[4]) {
        py.data = &d->i[5];
        py.dtype = TSR_INT64;
    }
    int odt = out->dtype;
    stage cs, xs, ys;
    char *o = out->data;
    WALK(out, {
        gather(&cs, TSR_BOOL, &pc, out, idx, j0, len);
        gather(&xs, odt, &px, out, idx, j0, len);
        gather(&ys, odt, &py, out, idx, j0, len);
        switch (tsr_dtype_size((tsr_dtype)odt)) {
        case 8:
            SELECT(uint64_t);
            break;
        case 4:
            SELECT(uint32_t);
            break;
        default:
            SELECT(uint8_t);
            break;
        }
    });
    return 0;
}
#undef SELECT
