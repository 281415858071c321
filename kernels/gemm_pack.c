/* Float64 matrix products over operands packed once (PACK and MATMUL_PACKED, kernels.h).
 *
 * OpenBLAS lays both operands of every call out again in its own panels. A blocked matmul
 * hands each tile to many calls (A_ik to every C_ij of its row, B_kj to every C_ij of its
 * column), so at 512² tiles a call ran at 0.93-0.95 of the rate of one 4096-wide call, and the
 * same tiles were laid out 8 or 16 times over (bench/notes.md §29). Lowering now gives each such
 * tile a PACK task, whose chunk holds the tile in the layout the kernel below reads, and the
 * matmul tasks read those chunks: each tile is laid out once, the packed chunk is an ordinary
 * chunk (stored, moved, spilled like any other), and the unpacked tile is gone once it is
 * packed.
 *
 * Layouts (MR = 12, NR = 16): a left operand A (m x k) is ceil(m / MR) panels of MR rows (the
 * last one of what is left), each holding, for k-step s = 0 .. k-1, its rows' values A[p*MR +
 * r][s]; a right operand B (k x n) is ceil(n / NR) panels of NR columns (the last one of what is
 * left), each holding, for each s, its columns' values B[s][q*NR + c]. A packed tile has the
 * tile's size, so PACK may write it over its input's buffer when the worker holds the only
 * reference (the input is copied aside first): the source tile's memory becomes the packed
 * tile's, and no new buffer is touched.
 *
 * Every output element is one chain of fused multiply-adds over k in order, from the output's
 * old value (Cprev) or from zero: out[i][j] = fma(A[i][k-1], B[k-1][j], ... fma(A[i][0],
 * B[0][j], c0)). The AVX-512 kernel blocks the work for the caches; the portable one walks the
 * elements one by one; both compute that chain, so their results are the same bits, whichever
 * CPU runs a task, and the tests check both against a loop of fma() calls. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels_priv.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_KERNEL 1
#else
#define HAVE_AVX512_KERNEL 0
#endif

enum {
    MR = TSR__PACK_MR,
    NR = TSR__PACK_NR,
    KC = 512, /* k-steps per pass over a micro-tile: its B panel (64 KiB) is read from L2 */
    MC = 96,  /* rows of A (in L2) that each B panel is used across before the next panel */
};

int64_t tsr__packed_len(int role, int64_t rows, int64_t cols) {
    (void)role;
    if (rows < 0 || cols < 0 || (cols && rows > INT64_MAX / 8 / cols)) return -1;
    return rows * cols;
}

static int cpu_has_avx512(void) {
#if HAVE_AVX512_KERNEL
    static int ok = -1;
    if (ok < 0) {
        __builtin_cpu_init();
        ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    }
    return ok;
#else
    return 0;
#endif
}

/* 0: the AVX-512 kernel where the CPU has it; 1: always the portable one (tests). */
static int force_portable;

void tsr__packed_force_portable(int on) {
    force_portable = on;
}

static int use_avx512(void) {
    return !force_portable && cpu_has_avx512();
}

/* ---- packing -------------------------------------------------------------------------------- */

/* Per-thread scratch: a tile packed in place is copied here first, and a product's last panels
 * are padded here to full width for the AVX-512 kernel. Kept between calls, so its pages stay
 * warm; freed when the thread exits. */
enum { SCRATCH_TILE, SCRATCH_LEFT_EDGE, SCRATCH_RIGHT_EDGE, SCRATCHES };
typedef struct scratch {
    double *p[SCRATCHES];
    size_t cap[SCRATCHES];
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *arg) {
    scratch *s = arg;
    for (int k = 0; k < SCRATCHES; k++) free(s->p[k]);
    free(s);
}

static void scratch_start(void) {
    (void)pthread_key_create(&scratch_key, scratch_free);
}

static double *scratch_get(int which, size_t n) {
    pthread_once(&scratch_once, scratch_start);
    scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap[which] < n) {
        free(s->p[which]);
        s->cap[which] = 0;
        if (n > SIZE_MAX / sizeof(double) ||
            !(s->p[which] = aligned_alloc(64, (n * sizeof(double) + 63) & ~(size_t)63)))
            return NULL;
        s->cap[which] = n;
    }
    return s->p[which];
}

#if HAVE_AVX512_KERNEL
/* Full left panels eight k-steps of a row at a time: each load is scattered to its MR-strided
 * places. Returns the rows done. */
__attribute__((target("avx512f"))) static int64_t pack_left_avx512(const double *a, int64_t m,
                                                                   int64_t k, double *p) {
    const __m512i at = _mm512_setr_epi64(0, MR, 2 * MR, 3 * MR, 4 * MR, 5 * MR, 6 * MR, 7 * MR);
    int64_t i0 = 0;
    for (; i0 + MR <= m; i0 += MR, p += MR * k) {
        int64_t s = 0;
        for (; s + 8 <= k; s += 8)
            for (int64_t r = 0; r < MR; r++)
                _mm512_i64scatter_pd(p + s * MR + r, at, _mm512_loadu_pd(a + (i0 + r) * k + s), 8);
        for (; s < k; s++)
            for (int64_t r = 0; r < MR; r++) p[s * MR + r] = a[(i0 + r) * k + s];
    }
    return i0;
}

/* Full right panels: two 64-byte copies per k-step. Returns the columns done. */
__attribute__((target("avx512f"))) static int64_t pack_right_avx512(const double *b, int64_t k,
                                                                    int64_t n, double *p) {
    int64_t j0 = 0;
    for (; j0 + NR <= n; j0 += NR)
        for (int64_t s = 0; s < k; s++, p += NR) {
            const double *q = b + s * n + j0;
            _mm512_storeu_pd(p, _mm512_loadu_pd(q));
            _mm512_storeu_pd(p + 8, _mm512_loadu_pd(q + 8));
        }
    return j0;
}
#endif

/* p (m * k values, not overlapping a) = a (m x k) as left panels. */
static void pack_left(const double *a, int64_t m, int64_t k, double *p) {
    int64_t i0 = 0;
#if HAVE_AVX512_KERNEL
    if (cpu_has_avx512()) i0 = pack_left_avx512(a, m, k, p);
#endif
    for (; i0 < m; i0 += MR) {
        int64_t w = m - i0 < MR ? m - i0 : MR;
        double *q = p + i0 * k;
        for (int64_t s = 0; s < k; s++)
            for (int64_t r = 0; r < w; r++) q[s * w + r] = a[(i0 + r) * k + s];
    }
}

/* p (k * n values, not overlapping b) = b (k x n) as right panels. */
static void pack_right(const double *b, int64_t k, int64_t n, double *p) {
    int64_t j0 = 0;
#if HAVE_AVX512_KERNEL
    if (cpu_has_avx512()) j0 = pack_right_avx512(b, k, n, p);
#endif
    for (; j0 < n; j0 += NR) {
        int64_t w = n - j0 < NR ? n - j0 : NR;
        double *q = p + j0 * k;
        for (int64_t s = 0; s < k; s++)
            memcpy(q + s * w, b + s * n + j0, (size_t)w * sizeof(double));
    }
}

/* ---- products ------------------------------------------------------------------------------- */

#if HAVE_AVX512_KERNEL
/* c (MR x NR, row stride ldc) = (zero ? 0 : c) + the panels' product over kc steps: 24
 * accumulators of 8 doubles, one broadcast of A and two loads of B per step. */
__attribute__((target("avx512f,fma"))) static void micro(int64_t kc, const double *restrict a,
                                                         const double *restrict b,
                                                         double *restrict c, int64_t ldc,
                                                         int zero) {
    __m512d x[MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        x[r][0] = zero ? _mm512_setzero_pd() : _mm512_loadu_pd(c + r * ldc);
        x[r][1] = zero ? _mm512_setzero_pd() : _mm512_loadu_pd(c + r * ldc + 8);
    }
    for (int64_t s = 0; s < kc; s++, a += MR, b += NR) {
        __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            __m512d v = _mm512_set1_pd(a[r]);
            x[r][0] = _mm512_fmadd_pd(v, b0, x[r][0]);
            x[r][1] = _mm512_fmadd_pd(v, b1, x[r][1]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        _mm512_storeu_pd(c + r * ldc, x[r][0]);
        _mm512_storeu_pd(c + r * ldc + 8, x[r][1]);
    }
}

/* out (m x n) = (zero ? 0 : out) + pa @ pb, KC steps at a time. A last panel narrower than MR
 * rows or NR columns is first padded to full width with zeros (ea, eb: MR * k and NR * k
 * values); a micro-tile that crosses an edge of out runs on a copy. */
__attribute__((target("avx512f,fma"))) static void
product_avx512(int64_t m, int64_t n, int64_t k, const double *pa, const double *pb, int zero,
               double *out, double *ea, double *eb) {
    _Alignas(64) double edge[MR * NR];
    int64_t mf = m / MR * MR, nf = n / NR * NR, mp = (m + MR - 1) / MR * MR;
    if (mf < m) { /* the last left panel, m - mf rows wide, to MR rows */
        int64_t w = m - mf;
        for (int64_t s = 0; s < k; s++)
            for (int64_t r = 0; r < MR; r++) ea[s * MR + r] = r < w ? pa[mf * k + s * w + r] : 0;
    }
    if (nf < n) {
        int64_t w = n - nf;
        for (int64_t s = 0; s < k; s++)
            for (int64_t c = 0; c < NR; c++) eb[s * NR + c] = c < w ? pb[nf * k + s * w + c] : 0;
    }
    for (int64_t pc = 0; pc < k; pc += KC) {
        int64_t kc = k - pc < KC ? k - pc : KC;
        int z = zero && pc == 0;
        for (int64_t ic = 0; ic < mp; ic += MC) {
            int64_t ie = ic + MC < mp ? ic + MC : mp;
            for (int64_t j = 0; j < n; j += NR) {
                const double *bp = (j < nf ? pb + j * k : eb) + pc * NR;
                for (int64_t i = ic; i < ie; i += MR) {
                    const double *ap = (i < mf ? pa + i * k : ea) + pc * MR;
                    if (i < mf && j < nf) {
                        micro(kc, ap, bp, out + i * n + j, n, z);
                        continue;
                    }
                    int64_t rows = m - i < MR ? m - i : MR, cols = n - j < NR ? n - j : NR;
                    for (int64_t r = 0; r < MR; r++)
                        for (int64_t q = 0; q < NR; q++)
                            edge[r * NR + q] =
                                r < rows && q < cols && !z ? out[(i + r) * n + j + q] : 0;
                    micro(kc, ap, bp, edge, NR, z);
                    for (int64_t r = 0; r < rows; r++)
                        memcpy(out + (i + r) * n + j, edge + r * NR, (size_t)cols * sizeof(double));
                }
            }
        }
    }
}
#endif

/* The same chain, one element at a time: A[i][s] is in i's panel (width w: MR, or what the
 * last panel has) at s * w + i % MR. */
static void product_portable(int64_t m, int64_t n, int64_t k, const double *pa, const double *pb,
                             int zero, double *out) {
    for (int64_t i = 0; i < m; i++) {
        int64_t i0 = i / MR * MR, wa = m - i0 < MR ? m - i0 : MR;
        const double *ap = pa + i0 * k + (i - i0);
        for (int64_t j = 0; j < n; j++) {
            int64_t j0 = j / NR * NR, wb = n - j0 < NR ? n - j0 : NR;
            const double *bp = pb + j0 * k + (j - j0);
            double c = zero ? 0.0 : out[i * n + j];
            for (int64_t s = 0; s < k; s++) c = fma(ap[s * wa], bp[s * wb], c);
            out[i * n + j] = c;
        }
    }
}

int tsr__packed_product(int64_t m, int64_t n, int64_t k, const double *pa, const double *pb,
                        int zero, double *out) {
#if HAVE_AVX512_KERNEL
    if (use_avx512()) {
        double *ea = m % MR ? scratch_get(SCRATCH_LEFT_EDGE, (size_t)(MR * k)) : NULL;
        double *eb = n % NR ? scratch_get(SCRATCH_RIGHT_EDGE, (size_t)(NR * k)) : NULL;
        if ((m % MR && !ea) || (n % NR && !eb)) return -ENOMEM;
        product_avx512(m, n, k, pa, pb, zero, out, ea, eb);
        return 0;
    }
#endif
    product_portable(m, n, k, pa, pb, zero, out);
    return 0;
}

/* ---- the kernels ---------------------------------------------------------------------------- */

/* In place (out over the input, which the worker donated): the tile is copied aside first. */
int k_pack(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
           size_t errlen) {
    (void)nin;
    const tsr_chunkview *x = &in[0];
    int64_t rows = x->shape[0], cols = x->shape[1];
    const double *src = x->data;
    if (out->data == x->data && rows * cols > 0) {
        double *copy = scratch_get(SCRATCH_TILE, (size_t)(rows * cols));
        if (!copy) {
            tsr__fmt(err, errlen, "no memory to pack a %lld x %lld tile in place", (long long)rows,
                     (long long)cols);
            return -ENOMEM;
        }
        memcpy(copy, src, (size_t)(rows * cols) * sizeof(double));
        src = copy;
    }
    if (d->i[0] == 0)
        pack_left(src, rows, cols, out->data);
    else
        pack_right(src, rows, cols, out->data);
    return 0;
}

int k_matmul_packed(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                    char *err, size_t errlen) {
    int64_t g = d->ni ? d->i[0] : 1, m = d->shape[0], n = d->shape[1];
    double *o = out->data;
    int have = nin == 2 * g + 1;
    if (have && out->data != in[nin - 1].data)
        memcpy(o, in[nin - 1].data, (size_t)(m * n) * sizeof(double));
    for (int64_t s = 0; s < g; s++) {
        int64_t k = m ? in[2 * s].shape[0] / m : 0;
        if (m == 0 || n == 0 || k == 0) continue;
        if (tsr__packed_product(m, n, k, in[2 * s].data, in[2 * s + 1].data, !have, o) < 0) {
            tsr__fmt(err, errlen, "out of memory");
            return -ENOMEM;
        }
        have = 1;
    }
    if (!have && m * n != 0) memset(o, 0, (size_t)(m * n) * sizeof(double));
    return 0;
}
