/* CPU kernels, written once and compiled once per dtype: cpu_f64.c, cpu_f32.c, cpu_i64.c and
 * cpu_bool.c define T (the output element type), T_DTYPE, one of T_FLOAT / T_INT / T_BOOL, and for
 * floats M(fn) (the libm function for T), the BLAS calls and the random generators, then include
 * this file. Inputs of any of the four dtypes are converted to T as they are read. Every kernel
 * trusts its arguments (tsr__kernel_run checked them), runs its inner loop along the contiguous
 * last axis, and never calls through a function pointer per element. Results depend only on the
 * inputs: fixed summation orders. */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "kernels/kernels_priv.h"
#include "zarr/zarr.h"

#define KERNEL(name)                                                                               \
    static int name(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,      \
                    char *err, size_t errlen)

/* Elements per block where a kernel stages data (conversions, combine accumulators). */
#define BLOCK 1024

static int64_t out_nelem(const tsr_chunkview *v) {
    return tsr__shape_nelem(v->ndim, v->shape);
}

/* What differs between element kinds: conversions into T from a floating value (TO_T_F) and from
 * an integer or bool (TO_T_I), and the E_* helpers of the operations table's expressions
 * (graph/ops.h). int64 arithmetic goes through uint64_t, so it wraps and never overflows a signed
 * type; a float -> int64 conversion of NaN, +-inf or an out-of-range value gives INT64_MIN (as
 * NumPy on x86-64), and any non-zero value (NaN included) converts to bool true. */
#if defined(T_FLOAT)
#include "graph/ops_float.h"
#define TO_T_F(v) ((T)(v))
#define TO_T_I(v) ((T)(v))
typedef double ACC; /* reductions and combines accumulate in double */
#else
/* No libm for integers: float-only rows (dtype column without T_DTYPE) never run here, but their
 * expressions still compile. */
static inline T no_float(T x, ...) {
    return x;
}
#define M(fn) no_float
#define E_RND(fn, x) (x)
#define E_ISNAN(x) 0
#if defined(T_INT)
#define TO_T_F(v) tsr__f2i((double)(v))
#define TO_T_I(v) ((T)(v))
#define E_NEG(x) ((T)(0u - (uint64_t)(x)))
#define E_ADD(x, y) ((T)((uint64_t)(x) + (uint64_t)(y)))
#define E_SUB(x, y) ((T)((uint64_t)(x) - (uint64_t)(y)))
#define E_MUL(x, y) ((T)((uint64_t)(x) * (uint64_t)(y)))
#define E_ABS(x) ((x) < 0 ? E_NEG(x) : (x))
#define E_POW(x, y) ipow(x, y)
#define E_SIGN(x) ((x) > 0 ? 1 : (x) < 0 ? -1 : 0)
typedef int64_t ACC; /* int64 reductions accumulate in int64, wrapping */
/* x ** y by squaring, wrapping; y >= 0 (k_binary refuses negative exponents first). */
static inline T ipow(T x, T y) {
    uint64_t r = 1, b = (uint64_t)x;
    for (uint64_t e = (uint64_t)y; y > 0 && e; e >>= 1) {
        if (e & 1) r *= b;
        b *= b;
    }
    return (T)r;
}
#else /* T_BOOL */
#define TO_T_F(v) ((T)((v) != 0))
#define TO_T_I(v) ((T)((v) != 0))
#define E_NEG(x) (x)
#define E_ADD(x, y) ((T)((x) | (y)))
#define E_SUB(x, y) ((T)((x) ^ (y)))
#define E_MUL(x, y) ((T)((x) & (y)))
#define E_ABS(x) (x)
#define E_POW(x, y) (x)
#define E_SIGN(x) (x)
typedef double ACC;
#endif
#define E_NOT(x) ((x) == 0)
#define E_ISFINITE(x) (!E_ISNAN((x) - (x)))
#endif

/* n elements of dtype `dtype` at src (stride `st` elements: 1, or 0 to repeat one element),
 * converted into dst. */
static void convert_strided(T *dst, const void *src, int dtype, int64_t st, int64_t n) {
    if (dtype == T_DTYPE && st == 1) {
        if (n) memmove(dst, src, (size_t)n * sizeof(T));
        return;
    }
    switch (dtype) {
    case TSR_FLOAT64:
        for (int64_t j = 0; j < n; j++) dst[j] = TO_T_F(((const double *)src)[j * st]);
        break;
    case TSR_FLOAT32:
        for (int64_t j = 0; j < n; j++) dst[j] = TO_T_F(((const float *)src)[j * st]);
        break;
    case TSR_INT64:
        for (int64_t j = 0; j < n; j++) dst[j] = TO_T_I(((const int64_t *)src)[j * st]);
        break;
    case TSR_BOOL:
        for (int64_t j = 0; j < n; j++) dst[j] = TO_T_I(((const uint8_t *)src)[j * st]);
        break;
    default:
        break;
    }
}

/* n elements of dtype `dtype` at src, converted into dst. */
static void convert_to_T(T *dst, const void *src, int dtype, int64_t n) {
    convert_strided(dst, src, dtype, 1, n);
}

/* An input's data as T: its own buffer when it already is T, else a converted copy that the
 * caller frees (*tmp). NULL only on ENOMEM. */
static const T *input_as_T(const tsr_chunkview *v, T **tmp) {
    *tmp = NULL;
    if (v->dtype == T_DTYPE) return v->data;
    int64_t n = out_nelem(v);
    *tmp = malloc((size_t)(n ? n : 1) * sizeof(T));
    if (!*tmp) return NULL;
    convert_to_T(*tmp, v->data, v->dtype, n);
    return *tmp;
}

static int oom(char *err, size_t errlen) {
    tsr__fmt(err, errlen, "out of memory");
    return -ENOMEM;
}

/* ---- sources ------------------------------------------------------------------------------- */

KERNEL(k_fill) {
    T *o = out->data;
    T v = TO_T_F(d->f[0]);
#if defined(T_INT)
    if (d->ni >= 1) v = d->i[0]; /* the exact int64 value, when lowering gives it */
#endif
    int64_t n = out_nelem(out);
    for (int64_t j = 0; j < n; j++) o[j] = v;
    return 0;
}

#if defined(T_FLOAT)
/* i = [seed, gshape[0..nd), offset[0..nd)]: each row of the chunk is a run of consecutive
 * global indices starting at g0, which random.c fills eight lanes at a time. */
KERNEL(k_random) {
    int nd = d->ndim;
    uint64_t seed = (uint64_t)d->i[0];
    const int64_t *gshape = d->i + 1, *off = d->i + 1 + nd;
    T *o = out->data;
    int64_t n = out_nelem(out);
    if (n == 0) return 0;
    if (nd == 0) {
        o[0] = RANDOM_VALUE(seed, 0);
        return 0;
    }
    int64_t gstride[TSR_MAX_NDIM], idx[TSR_MAX_NDIM] = {0};
    tsr__shape_strides(nd, gshape, gstride);
    int64_t inner = out->shape[nd - 1];
    void (*row)(T *, uint64_t, uint64_t, int64_t) = RANDOM_ROW_PICK();
    for (int64_t r = 0; r < n / inner; r++) {
        uint64_t g0 = (uint64_t)off[nd - 1];
        for (int a = 0; a < nd - 1; a++) g0 += (uint64_t)((off[a] + idx[a]) * gstride[a]);
        row(o + r * inner, seed, g0, inner);
        tsr__next_index(idx, out->shape, nd - 1);
    }
    return 0;
}

KERNEL(k_arange) {
    double start = d->f[0], step = d->f[1];
    int64_t offset = d->i[0];
    T *o = out->data;
    int64_t n = out_nelem(out);
    for (int64_t j = 0; j < n; j++) o[j] = (T)(start + (double)(offset + j) * step);
    return 0;
}
#elif defined(T_INT)
#define k_random NULL
/* Integers as NumPy's integer arange: start + (offset + j) * step in int64 (start and step are
 * integral; lowering checks). */
KERNEL(k_arange) {
    int64_t start = tsr__f2i(d->f[0]), step = tsr__f2i(d->f[1]);
    uint64_t offset = (uint64_t)d->i[0];
    T *o = out->data;
    int64_t n = out_nelem(out);
    for (int64_t j = 0; j < n; j++)
        o[j] = (T)((uint64_t)start + (offset + (uint64_t)j) * (uint64_t)step);
    return 0;
}
#else
#define k_random NULL
#define k_arange NULL
#endif

/* Reads exactly len bytes at pos: 0, -errno, or 1 at end of file. */
static int pread_full(int fd, void *buf, size_t len, int64_t pos) {
    char *p = buf;
    while (len) {
        ssize_t got = pread(fd, p, len, (off_t)pos);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (got == 0) return 1;
        p += got;
        len -= (size_t)got;
        pos += got;
    }
    return 0;
}

/* Reads `count` file elements (dtype fdt) at byte pos into dst as T; .npy data is little-endian,
 * as is every machine we build for. */
static int load_run(int fd, int fdt, T *dst, int64_t count, int64_t pos, char *stage) {
    if (fdt == T_DTYPE) return pread_full(fd, dst, (size_t)count * sizeof(T), pos);
    int64_t fsize = (int64_t)tsr_dtype_size((tsr_dtype)fdt);
    for (int64_t done = 0; done < count; done += BLOCK) {
        int64_t len = TSR__MIN(BLOCK, count - done);
        int rc = pread_full(fd, stage, (size_t)(len * fsize), pos + done * fsize);
        if (rc) return rc;
        convert_to_T(dst + done, stage, fdt, len);
    }
    return 0;
}

/* A Zarr store (kernels.h: LOAD, TSR__LOAD_ZARR): every store chunk the output box meets is
 * read and decoded whole into a scratch buffer (a missing one is fill_value), then the part
 * inside the box is copied, a run along the last axis at a time. */
static int load_zarr(const tsr_kdesc *d, tsr_chunkview *out, char *err, size_t errlen) {
    int nd = d->ndim;
    int fdt = (int)d->i[0], codec = (int)d->i[1];
    char sep = (char)d->i[2];
    const int64_t *zch = d->i + 3 + nd, *off = d->i + 3 + 2 * nd;
    size_t fsize = tsr_dtype_size((tsr_dtype)fdt);
    T *o = out->data;
    if (out_nelem(out) == 0) return 0;
    int64_t lo[TSR_MAX_NDIM], span[TSR_MAX_NDIM], ci[TSR_MAX_NDIM] = {0};
    int64_t ostride[TSR_MAX_NDIM], zstride[TSR_MAX_NDIM];
    for (int a = 0; a < nd; a++) {
        lo[a] = off[a] / zch[a];
        span[a] = (off[a] + out->shape[a] - 1) / zch[a] - lo[a] + 1;
    }
    tsr__shape_strides(nd, out->shape, ostride);
    tsr__shape_strides(nd, zch, zstride);
    size_t cbytes = (size_t)tsr__shape_nelem(nd, zch) * fsize;
    char *buf = malloc(cbytes ? cbytes : 1);
    if (!buf) return oom(err, errlen);
    int rc = 0;
    do {
        int64_t idx[TSR_MAX_NDIM], b0[TSR_MAX_NDIM], bn[TSR_MAX_NDIM];
        for (int a = 0; a < nd; a++) {
            idx[a] = lo[a] + ci[a];
            int64_t s0 = idx[a] * zch[a], e0 = s0 + zch[a];
            int64_t s1 = off[a], e1 = off[a] + out->shape[a];
            b0[a] = s0 > s1 ? s0 : s1; /* the box's start, in global coordinates */
            bn[a] = (e0 < e1 ? e0 : e1) - b0[a];
        }
        rc = tsr__zarr_read_chunk(d->s, nd, idx, sep, codec, buf, cbytes, err, errlen);
        if (rc < 0) break;
        int missing = rc == 1;
        rc = 0;
        /* Runs along the last axis of the intersection. */
        int64_t run = nd ? bn[nd - 1] : 1, r[TSR_MAX_NDIM] = {0};
        do {
            int64_t src = 0, dst = 0;
            for (int a = 0; a < nd; a++) {
                int64_t g = b0[a] + r[a];
                src += (g - idx[a] * zch[a]) * zstride[a];
                dst += (g - off[a]) * ostride[a];
            }
            if (missing)
                for (int64_t j = 0; j < run; j++) o[dst + j] = TO_T_F(d->f[0]);
            else
                convert_to_T(o + dst, buf + (size_t)src * fsize, fdt, run);
        } while (nd > 1 && tsr__next_index(r, bn, nd - 1));
    } while (nd > 0 && tsr__next_index(ci, span, nd));
    free(buf);
    return rc;
}

/* i = [data_offset, file_dtype, gshape[0..nd), offset[0..nd)]. The chunk is read as runs that
 * are contiguous in the file: the trailing axes the chunk spans in full, plus one more. */
KERNEL(k_load) {
    if (d->fn == TSR__LOAD_ZARR) return load_zarr(d, out, err, errlen);
    int nd = d->ndim;
    int64_t data_offset = d->i[0];
    int fdt = (int)d->i[1];
    const int64_t *gshape = d->i + 2, *off = d->i + 2 + nd;
    int64_t fsize = (int64_t)tsr_dtype_size((tsr_dtype)fdt);
    T *o = out->data;
    int64_t n = out_nelem(out);
    if (n == 0) return 0;

    int64_t gstride[TSR_MAX_NDIM], idx[TSR_MAX_NDIM] = {0};
    tsr__shape_strides(nd, gshape, gstride);
    int k = nd ? nd - 1 : 0;
    while (k > 0 && out->shape[k] == gshape[k]) k--;
    int64_t run = nd ? tsr__shape_nelem(nd - k, out->shape + k) : 1;

    int fd = open(d->s, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        tsr__fmt(err, errlen, "%s: %s", d->s, strerror(-rc));
        return rc;
    }
    char *stage = fdt == T_DTYPE ? NULL : malloc(BLOCK * sizeof(double));
    int rc = fdt != T_DTYPE && !stage ? -ENOMEM : 0;
    for (int64_t r = 0; r < n / run && !rc; r++) {
        int64_t g = nd ? off[k] * gstride[k] : 0;
        for (int a = 0; a < k; a++) g += (off[a] + idx[a]) * gstride[a];
        rc = load_run(fd, fdt, o + r * run, run, data_offset + g * fsize, stage);
        tsr__next_index(idx, out->shape, k);
    }
    close(fd);
    free(stage);
    if (rc == 1) {
        tsr__fmt(err, errlen, "%s: file is shorter than its header says", d->s);
        return TSR_ENPY;
    }
    if (rc == -ENOMEM) return oom(err, errlen);
    if (rc) tsr__fmt(err, errlen, "%s: read failed: %s", d->s, strerror(-rc));
    return rc;
}

/* ---- elementwise ---------------------------------------------------------------------------- */

/* The input may have another dtype (sqrt of int64 runs in float64): it is converted first. */
KERNEL(k_unary) {
    T *tmp;
    const T *a = input_as_T(&in[0], &tmp);
    if (!a) return oom(err, errlen);
    T *o = out->data;
    int64_t n = out_nelem(out);
#define UNARY_CASE(E, name, dtypes, expr)                                                          \
    case TSR_##E:                                                                                  \
        if (!((dtypes)&TSR__DT(T_DTYPE))) break;                                                   \
        for (int64_t j = 0; j < n; j++) {                                                          \
            T x = a[j];                                                                            \
            (void)x;                                                                               \
            o[j] = (T)(expr);                                                                      \
        }                                                                                          \
        break;
    switch (d->fn) {
        TSR__UNARY_MAP(UNARY_CASE)
    default:
        break;
    }
#undef UNARY_CASE
    free(tmp);
    return 0;
}

/* One row of a binary operation: o[j] = a[j*sa] OP b[j*sb], OP from the table's expression
 * column (graph/ops.h). Always inlined into binary_row with constant strides (0 or 1), so each
 * case compiles to its own straight loop. */
static inline __attribute__((always_inline)) void binary_loop(int fn, T *o, const T *a, int64_t sa,
                                                              const T *b, int64_t sb, int64_t n) {
#define BINARY_CASE(E, name, dtypes, expr)                                                         \
    case TSR_##E:                                                                                  \
        if (!((dtypes)&TSR__DT(T_DTYPE))) return;                                                  \
        for (int64_t j = 0; j < n; j++) {                                                          \
            T x = a[j * sa], y = b[j * sb];                                                        \
            (void)x;                                                                               \
            (void)y;                                                                               \
            o[j] = (T)(expr);                                                                      \
        }                                                                                          \
        return;
    switch (fn) {
        TSR__BINARY_MAP(BINARY_CASE)
    default:
        return;
    }
#undef BINARY_CASE
}

static void binary_row(int fn, T *o, const T *a, int64_t sa, const T *b, int64_t sb, int64_t n) {
    if (sa && sb)
        binary_loop(fn, o, a, 1, b, 1, n);
    else if (sa)
        binary_loop(fn, o, a, 1, b, 0, n);
    else if (sb)
        binary_loop(fn, o, a, 0, b, 1, n);
    else
        binary_loop(fn, o, a, 0, b, 0, n);
}

/* Strides (in elements) of input v seen on the output's axes: right-aligned, 0 on broadcast
 * axes. */
static void broadcast_strides(const tsr_chunkview *v, const tsr_chunkview *out, int64_t *st) {
    int64_t own[TSR_MAX_NDIM];
    tsr__shape_strides(v->ndim, v->shape, own);
    int lead = out->ndim - v->ndim;
    for (int ax = 0; ax < out->ndim; ax++) {
        int ia = ax - lead;
        st[ax] = ia < 0 || (v->shape[ia] == 1 && out->shape[ax] != 1) ? 0 : own[ia];
    }
}

#if defined(T_INT)
/* NumPy refuses integers to negative integer powers. */
static int negative_exponent(const T *b, int64_t n, char *err, size_t errlen) {
    for (int64_t j = 0; j < n; j++)
        if (b[j] < 0) {
            tsr__fmt(err, errlen, "Integers to negative integer powers are not allowed");
            return 1;
        }
    return 0;
}
#endif

KERNEL(k_binary) {
    int64_t n = out_nelem(out);
    if (n == 0) return 0;
    T *ta, *tb;
    const T *a = input_as_T(&in[0], &ta), *b = input_as_T(&in[1], &tb);
    if (!a || !b) {
        free(ta);
        free(tb);
        return oom(err, errlen);
    }
#if defined(T_INT)
    if (d->fn == TSR_POW && negative_exponent(b, out_nelem(&in[1]), err, errlen)) {
        free(ta);
        free(tb);
        return TSR_EINVALID;
    }
#endif
    int64_t sa0[TSR_MAX_NDIM], sb0[TSR_MAX_NDIM];
    broadcast_strides(&in[0], out, sa0);
    broadcast_strides(&in[1], out, sb0);
    /* Drop unit axes, then merge neighbours that are contiguous for both inputs (the output
     * is always contiguous), so the inner loop runs as long as possible. */
    int64_t ext[TSR_MAX_NDIM], sa[TSR_MAX_NDIM], sb[TSR_MAX_NDIM];
    int m = 0;
    for (int ax = 0; ax < out->ndim; ax++) {
        if (out->shape[ax] == 1) continue;
        if (m && sa[m - 1] == sa0[ax] * out->shape[ax] && sb[m - 1] == sb0[ax] * out->shape[ax]) {
            ext[m - 1] *= out->shape[ax];
            sa[m - 1] = sa0[ax];
            sb[m - 1] = sb0[ax];
            continue;
        }
        ext[m] = out->shape[ax];
        sa[m] = sa0[ax];
        sb[m] = sb0[ax];
        m++;
    }
    if (m == 0) {
        ext[0] = 1;
        sa[0] = sb[0] = 0;
        m = 1;
    }
    T *o = out->data;
    int64_t inner = ext[m - 1], idx[TSR_MAX_NDIM] = {0};
    for (int64_t r = 0; r < n / inner; r++) {
        int64_t oa = 0, ob = 0;
        for (int ax = 0; ax < m - 1; ax++) {
            oa += idx[ax] * sa[ax];
            ob += idx[ax] * sb[ax];
        }
        binary_row(d->fn, o + r * inner, a + oa, sa[m - 1], b + ob, sb[m - 1], inner);
        tsr__next_index(idx, ext, m - 1);
    }
    free(ta);
    free(tb);
    return 0;
}

/* f = [scalar], i = [scalar_first]; the scalar is taken in T, and so is the input (an int64
 * array plus 1.5 runs in float64: lowering chose the output dtype by NEP 50's weak-scalar rule). */
KERNEL(k_binary_scalar) {
    T s = TO_T_F(d->f[0]);
#if defined(T_INT)
    if (d->ni >= 2) s = d->i[1]; /* the exact integer, when lowering gives it */
#endif
    int64_t n = out_nelem(out);
    T *tmp;
    const T *x = input_as_T(&in[0], &tmp);
    if (!x) return oom(err, errlen);
#if defined(T_INT)
    if (d->fn == TSR_POW && negative_exponent(d->i[0] ? x : &s, d->i[0] ? n : 1, err, errlen)) {
        free(tmp);
        return TSR_EINVALID;
    }
#endif
    if (d->i[0])
        binary_row(d->fn, out->data, &s, 0, x, 1, n);
    else
        binary_row(d->fn, out->data, x, 1, &s, 0, n);
    free(tmp);
    return 0;
}

KERNEL(k_astype) {
    convert_to_T(out->data, in[0].data, in[0].dtype, out_nelem(out));
    return 0;
}

/* ---- matmul --------------------------------------------------------------------------------- */

/* out = Cprev + A_0 @ B_0 + A_1 @ B_1 + ..., one matmul_step per k-step in order (floats: one
 * BLAS call, beta = 1 after the first) (kernels.h): a group of steps gives exactly what a chain
 * of one-step tasks gives. When Cprev is not already the output buffer it is copied there first. */
#if defined(T_FLOAT)
/* o = A @ B + beta * o, one BLAS call; o is m x n (n 1 for a matrix-vector product). */
static void matmul_step(T *o, const T *a, const T *b, int64_t m, int64_t k, int64_t n, int two_d,
                        T beta) {
    if (two_d)
        GEMM(m, n, k, a, b, beta != 0, o);
    else
        GEMV(CblasRowMajor, CblasNoTrans, (blasint)m, (blasint)k, 1, a, (blasint)k, b, 1, beta, o,
             1);
}
#else
/* No BLAS for integers: o += A @ B with wrapping arithmetic (bool: o |= A and B, NumPy's bool
 * matmul), i-k-j order in KB-wide panels of k so a panel of B stays in cache. Each output element
 * takes its terms in k order. o always holds a running sum (k_matmul zeroes it first), so beta is
 * 1 and two_d does not matter (a vector is an n = 1 matrix). */
#define KB 64
static void matmul_step(T *o, const T *a, const T *b, int64_t m, int64_t k, int64_t n, int two_d,
                        T beta) {
    (void)two_d;
    (void)beta;
    for (int64_t k0 = 0; k0 < k; k0 += KB) {
        int64_t k1 = TSR__MIN(k, k0 + KB);
        for (int64_t i = 0; i < m; i++) {
#if defined(T_INT)
            uint64_t *orow = (uint64_t *)(void *)(o + i * n);
            for (int64_t p = k0; p < k1; p++) {
                uint64_t av = (uint64_t)a[i * k + p];
                const T *brow = b + p * n;
                for (int64_t j = 0; j < n; j++) orow[j] += av * (uint64_t)brow[j];
            }
#else
            T *orow = o + i * n;
            for (int64_t p = k0; p < k1; p++) {
                if (!a[i * k + p]) continue;
                const T *brow = b + p * n;
                for (int64_t j = 0; j < n; j++) orow[j] |= brow[j];
            }
#endif
        }
    }
}
#undef KB
#endif

KERNEL(k_matmul) {
    int64_t g = d->ni ? d->i[0] : 1;
    int64_t m = out->shape[0];
    int64_t n = out->ndim == 2 ? out->shape[1] : 1;
    T *o = out->data;
    int have = nin == 2 * g + 1; /* o holds a running sum */
    if (have && out->data != in[nin - 1].data)
        convert_to_T(o, in[nin - 1].data, in[nin - 1].dtype, m * n);
#if !defined(T_FLOAT)
    if (!have && m * n != 0) { /* the integer steps add into o: start from zero */
        memset(o, 0, (size_t)(m * n) * sizeof(T));
        have = 1;
    }
#endif
    if (m == 0 || n == 0) return 0;
    for (int64_t s = 0; s < g; s++) {
        int64_t k = in[2 * s].shape[1];
        if (k == 0) continue;
        T *ta, *tb;
        const T *a = input_as_T(&in[2 * s], &ta), *b = input_as_T(&in[2 * s + 1], &tb);
        if (!a || !b) {
            free(ta);
            free(tb);
            return oom(err, errlen);
        }
        matmul_step(o, a, b, m, k, n, out->ndim == 2, have ? 1 : 0);
        free(ta);
        free(tb);
        have = 1;
    }
    if (!have) memset(o, 0, (size_t)(m * n) * sizeof(T));
    return 0;
}

/* ---- transpose ------------------------------------------------------------------------------ */

/* Output axis j reads input axis perm[j]. After dropping unit axes and merging output axes that
 * stay contiguous in the input, either the last axis is contiguous on both sides (row copies)
 * or the input's contiguous axis p is some other output axis: then each (p, last) plane is a
 * 2-d transpose, done in TILE x TILE blocks so both sides stay in cache. */
#define TILE 32
KERNEL(k_transpose) {
    int nd = out->ndim;
    const int64_t *perm = d->i;
    const T *src = in[0].data;
    T *o = out->data;
    int64_t n = out_nelem(out);
    if (n == 0) return 0;
    int64_t istr[TSR_MAX_NDIM], ostr0[TSR_MAX_NDIM];
    tsr__shape_strides(in[0].ndim, in[0].shape, istr);
    tsr__shape_strides(nd, out->shape, ostr0);
    int64_t ext[TSR_MAX_NDIM], is[TSR_MAX_NDIM], os[TSR_MAX_NDIM];
    int m = 0;
    for (int j = 0; j < nd; j++) {
        if (out->shape[j] == 1) continue;
        int64_t s = istr[perm[j]];
        if (m && is[m - 1] == s * out->shape[j]) {
            ext[m - 1] *= out->shape[j];
            is[m - 1] = s;
            os[m - 1] = ostr0[j];
            continue;
        }
        ext[m] = out->shape[j];
        is[m] = s;
        os[m] = ostr0[j];
        m++;
    }
    if (m == 0) {
        o[0] = src[0];
        return 0;
    }
    int64_t idx[TSR_MAX_NDIM] = {0};
    if (is[m - 1] == 1) {
        int64_t inner = ext[m - 1];
        for (int64_t r = 0; r < n / inner; r++) {
            int64_t so = 0;
            for (int ax = 0; ax < m - 1; ax++) so += idx[ax] * is[ax];
            memcpy(o + r * inner, src + so, (size_t)inner * sizeof(T));
            tsr__next_index(idx, ext, m - 1);
        }
        return 0;
    }
    int p = 0;
    while (is[p] != 1) p++; /* exists: the input's innermost non-unit axis has stride 1 */
    int q = m - 1;
    int64_t oext[TSR_MAX_NDIM], ois[TSR_MAX_NDIM], oos[TSR_MAX_NDIM];
    int mo = 0;
    for (int ax = 0; ax < m; ax++) {
        if (ax == p || ax == q) continue;
        oext[mo] = ext[ax];
        ois[mo] = is[ax];
        oos[mo] = os[ax];
        mo++;
    }
    int64_t np = ext[p], nq = ext[q], osp = os[p], isq = is[q];
    int64_t planes = n / (np * nq);
    for (int64_t pl = 0; pl < planes; pl++) {
        int64_t so = 0, oo = 0;
        for (int ax = 0; ax < mo; ax++) {
            so += idx[ax] * ois[ax];
            oo += idx[ax] * oos[ax];
        }
        const T *sp = src + so;
        T *op = o + oo;
        for (int64_t ib = 0; ib < np; ib += TILE) {
            int64_t ie = TSR__MIN(np, ib + TILE);
            for (int64_t jb = 0; jb < nq; jb += TILE) {
                int64_t je = TSR__MIN(nq, jb + TILE);
                for (int64_t i = ib; i < ie; i++)
                    for (int64_t j = jb; j < je; j++) op[i * osp + j] = sp[i + j * isq];
            }
        }
        tsr__next_index(idx, oext, mo);
    }
    return 0;
}
#undef TILE

/* ---- reductions ----------------------------------------------------------------------------- */

/* Floats (and bool's max/min) fold with the table's folds and starting values (TSR__REDUCE_MAP,
 * graph/ops.h) in a double accumulator. int64 folds in an int64 accumulator (never through
 * double, which would round past 2^53): the sums wrap as NumPy's do. ACC_TO_T gives the result in
 * T. */
#define FIRST_OP(s, x) ((ACC)(x))
#if defined(T_INT)
#define IFOLD_SUM(s, x) ((ACC)((uint64_t)(s) + (uint64_t)(x)))
#define IFOLD_MAX(s, x) ((x) > (s) ? (x) : (s))
#define IFOLD_MIN(s, x) ((x) < (s) ? (x) : (s))
#define ACC_TO_T(v) (v)
/* XX(fn, fold, init) for the reductions int64 has (the others have no int64 kernel). */
#define INT_REDUCE_MAP(XX)                                                                         \
    XX(TSR_SUM, IFOLD_SUM, 0)                                                                      \
    XX(TSR_MEAN, IFOLD_SUM, 0)                                                                     \
    XX(TSR_MAX, IFOLD_MAX, INT64_MIN)                                                              \
    XX(TSR_MIN, IFOLD_MIN, INT64_MAX)
#define ACC_FROM_F(v) tsr__f2i((double)(v))
#define ACC_FROM_I(v) ((ACC)(v))
#else
#define ACC_TO_T(v) TO_T_F(v)
#define ACC_FROM_F(v) ((double)(v))
#define ACC_FROM_I(v) ((double)(v))
#endif

/* n elements of dtype `dtype` at src, converted to the accumulator's type. */
static void convert_acc(ACC *dst, const void *src, int dtype, int64_t n) {
    switch (dtype) {
    case TSR_FLOAT64:
        for (int64_t j = 0; j < n; j++) dst[j] = ACC_FROM_F(((const double *)src)[j]);
        break;
    case TSR_FLOAT32:
        for (int64_t j = 0; j < n; j++) dst[j] = ACC_FROM_F(((const float *)src)[j]);
        break;
    case TSR_INT64:
        for (int64_t j = 0; j < n; j++) dst[j] = ACC_FROM_I(((const int64_t *)src)[j]);
        break;
    case TSR_BOOL:
        for (int64_t j = 0; j < n; j++) dst[j] = ACC_FROM_I(((const uint8_t *)src)[j]);
        break;
    default:
        break;
    }
}

#if defined(T_INT)
static int no_reduction(const tsr_kdesc *d, char *err, size_t errlen) {
    tsr__fmt(err, errlen, "reduce: %s is not defined for %s", tsr__reduce_name(d->fn),
             tsr_dtype_name((tsr_dtype)T_DTYPE));
    return TSR_EINVALID;
}
#endif

/* i = [axes...]. The input (converted to T when it has another dtype: a sum of bools runs in
 * int64, a mean of int64 in float64) is walked once in row-major order, each element folded into
 * its output's accumulator, so every output sees its terms in row-major order whatever the
 * axes. */
KERNEL(k_reduce) {
    const tsr_chunkview *x = &in[0];
    int64_t nout = out_nelem(out), nx = out_nelem(x);
    if (nout == 0) return 0;
    if (nx == 0 && !tsr__reduce_has_identity(d->fn)) {
        tsr__fmt(err, errlen, "reduce: %s of an empty selection", tsr__reduce_name(d->fn));
        return TSR_EINVALID;
    }
    ACC init = 0;
#if defined(T_INT)
#define INIT_CASE(fn_, fold, init_)                                                                \
    case fn_:                                                                                      \
        init = (init_);                                                                            \
        break;
    switch (d->fn) {
        INT_REDUCE_MAP(INIT_CASE)
    default:
        return no_reduction(d, err, errlen);
    }
#else
#define INIT_CASE(E, name, init_, ...)                                                             \
    case TSR_##E:                                                                                  \
        init = (init_);                                                                            \
        break;
    switch (d->fn) {
        TSR__REDUCE_MAP(INIT_CASE)
    default:
        break;
    }
#endif
#undef INIT_CASE
    if (nx == 0) { /* an empty reduced axis: every output is the identity (the walk divides by 0) */
        T *o = out->data;
        for (int64_t j = 0; j < nout; j++) o[j] = ACC_TO_T(init);
        return 0;
    }
    ACC *acc = malloc((size_t)nout * sizeof(ACC));
    T *tmp;
    const T *src = acc ? input_as_T(x, &tmp) : NULL;
    if (!src) {
        free(acc);
        return oom(err, errlen);
    }
    for (int64_t j = 0; j < nout; j++) acc[j] = init;

    /* Per input axis: extent and stride into the output (0 on reduced axes). */
    int reduced[TSR_MAX_NDIM] = {0};
    for (uint32_t k = 0; k < d->ni; k++) reduced[d->i[k]] = 1;
    int64_t ostr0[TSR_MAX_NDIM], ost[TSR_MAX_NDIM], ext[TSR_MAX_NDIM];
    tsr__shape_strides(out->ndim, out->shape, ostr0);
    int m = 0, keep = out->ndim == x->ndim; /* keepdims: the output keeps every axis */
    for (int a = 0, oa = 0; a < x->ndim; a++) {
        int64_t s = reduced[a] ? 0 : ostr0[keep ? a : oa++];
        if (x->shape[a] == 1) continue;
        if (m && ost[m - 1] == s * x->shape[a]) {
            ext[m - 1] *= x->shape[a];
            ost[m - 1] = s;
            continue;
        }
        ext[m] = x->shape[a];
        ost[m] = s;
        m++;
    }
    if (m == 0) {
        ext[0] = 1;
        ost[0] = 0;
        m = 1;
    }
    int64_t inner = ext[m - 1], inner_os = ost[m - 1], idx[TSR_MAX_NDIM] = {0};
#define REDUCE_WALK(OP)                                                                            \
    for (int64_t r = 0; r < nx / inner; r++) {                                                     \
        int64_t oo = 0;                                                                            \
        for (int ax = 0; ax < m - 1; ax++) oo += idx[ax] * ost[ax];                                \
        const T *row = src + r * inner;                                                            \
        if (inner_os == 0) {                                                                       \
            ACC s = acc[oo];                                                                       \
            for (int64_t j = 0; j < inner; j++) s = OP(s, row[j]);                                 \
            acc[oo] = s;                                                                           \
        } else {                                                                                   \
            ACC *ac = acc + oo;                                                                    \
            for (int64_t j = 0; j < inner; j++) ac[j] = OP(ac[j], row[j]);                         \
        }                                                                                          \
        tsr__next_index(idx, ext, m - 1);                                                          \
    }
#if defined(T_INT)
#define WALK_CASE(fn_, fold, init_)                                                                \
    case fn_:                                                                                      \
        REDUCE_WALK(fold)                                                                          \
        break;
    switch (d->fn) {
        INT_REDUCE_MAP(WALK_CASE)
    default:
        break;
    }
#else
#define WALK_CASE(E, name, init_, fold, ...)                                                       \
    case TSR_##E:                                                                                  \
        REDUCE_WALK(fold)                                                                          \
        break;
    switch (d->fn) {
        TSR__REDUCE_MAP(WALK_CASE)
    default:
        break;
    }
#endif
#undef WALK_CASE
#undef REDUCE_WALK
    T *o = out->data;
    for (int64_t j = 0; j < nout; j++) o[j] = ACC_TO_T(acc[j]);
    free(acc);
    free(tmp);
    return 0;
}

/* f = [scale]. ((in0 op in1) op in2) ... in the accumulator's type (double; int64 for int64),
 * block by block (so an output aliasing any input is read before it is written), then scaled and
 * rounded once to T. */
KERNEL(k_combine) {
    int64_t n = out_nelem(out);
    double scale = d->f[0];
    T *o = out->data;
    ACC acc[BLOCK], xs[BLOCK];
#if defined(T_INT)
    switch (d->fn) {
#define CHECK_CASE(fn_, fold, init_) case fn_:
        INT_REDUCE_MAP(CHECK_CASE)
#undef CHECK_CASE
        break;
    default:
        return no_reduction(d, err, errlen);
    }
#endif
    for (int64_t at = 0; at < n; at += BLOCK) {
        int64_t len = TSR__MIN(BLOCK, n - at);
        for (int k = 0; k < nin; k++) {
            const tsr_chunkview *v = &in[k];
            size_t esz = tsr_dtype_size((tsr_dtype)v->dtype);
            convert_acc(k ? xs : acc, (const char *)v->data + (size_t)at * esz, v->dtype, len);
            if (k == 0) continue;
#define FOLD_LOOP(fold)                                                                            \
    for (int64_t j = 0; j < len; j++) acc[j] = fold(acc[j], xs[j]);                                \
    break;
#if defined(T_INT)
#define FOLD_CASE(fn_, fold, init_)                                                                \
    case fn_:                                                                                      \
        FOLD_LOOP(fold)
            switch (d->fn) {
                INT_REDUCE_MAP(FOLD_CASE)
            default:
                break;
            }
#else
#define FOLD_CASE(E, name, init_, fold, ...)                                                       \
    case TSR_##E:                                                                                  \
        FOLD_LOOP(fold)
            switch (d->fn) {
                TSR__REDUCE_MAP(FOLD_CASE)
            default:
                break;
            }
#endif
#undef FOLD_CASE
#undef FOLD_LOOP
        }
        if (scale != 1.0)
            for (int64_t j = 0; j < len; j++) o[at + j] = TO_T_F((double)acc[j] * scale);
        else
            for (int64_t j = 0; j < len; j++) o[at + j] = ACC_TO_T(acc[j]);
    }
    return 0;
}

/* ---- assemble ------------------------------------------------------------------------------- */

/* i = [out_offset[0..nd), in0_offset[0..nd), ...]: each input's intersection with the output
 * box is copied row by row along the last axis, converted to T. */
KERNEL(k_assemble) {
    int nd = out->ndim;
    const int64_t *ooff = d->i;
    T *o = out->data;
    if (out_nelem(out) == 0) return 0;
    if (nd == 0) {
        convert_to_T(o, in[0].data, in[0].dtype, 1);
        return 0;
    }
    int64_t ostr[TSR_MAX_NDIM];
    tsr__shape_strides(nd, out->shape, ostr);
    for (int k = 0; k < nin; k++) {
        const tsr_chunkview *v = &in[k];
        const int64_t *ioff = d->i + (size_t)nd * (size_t)(k + 1);
        int64_t ext[TSR_MAX_NDIM], s0[TSR_MAX_NDIM], d0[TSR_MAX_NDIM], istr[TSR_MAX_NDIM];
        int empty = 0;
        for (int a = 0; a < nd; a++) {
            int64_t lo = TSR__MAX(ooff[a], ioff[a]);
            int64_t hi = TSR__MIN(ooff[a] + out->shape[a], ioff[a] + v->shape[a]);
            if (hi <= lo) empty = 1;
            ext[a] = hi - lo;
            s0[a] = lo - ioff[a];
            d0[a] = lo - ooff[a];
        }
        if (empty) continue;
        tsr__shape_strides(nd, v->shape, istr);
        int64_t rows = tsr__shape_nelem(nd - 1, ext), idx[TSR_MAX_NDIM] = {0};
        size_t esz = tsr_dtype_size((tsr_dtype)v->dtype);
        for (int64_t r = 0; r < rows; r++) {
            int64_t so = 0, doff = 0;
            for (int a = 0; a < nd; a++) {
                int64_t ia = a < nd - 1 ? idx[a] : 0;
                so += (s0[a] + ia) * istr[a];
                doff += (d0[a] + ia) * ostr[a];
            }
            convert_to_T(o + doff, (const char *)v->data + (size_t)so * esz, v->dtype, ext[nd - 1]);
            tsr__next_index(idx, ext, nd - 1);
        }
    }
    return 0;
}

/* FUSED runs one kernel for both dtypes (kernels/fused.c). */
#define k_fused tsr__k_fused

/* One entry per row of the operations table: family NAME's kernel is k_NAME. Every family the
 * table declares for this dtype must have one (a missing kernel does not compile; a test checks
 * the table against tsr__kernel_lookup). */
/* Families whose kernels handle every dtype themselves (kernels/generic.c) have none here. */
#define k_compare NULL
#define k_predicate NULL
#define k_where NULL
#define k_data NULL
#define k_held NULL
#define k_map_blocks NULL
const tsr_kernel_fn CPU_TABLE[TSR_KOP_COUNT] = {
#define KERNEL_ROW(E, name, ...) [TSR_KOP_##E] = k_##name,
    TSR__KOP_MAP(KERNEL_ROW)
#undef KERNEL_ROW
};
