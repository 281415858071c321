/* Float64 matrix products over operands packed once (PACK and MATMUL_PACKED, kernels.h).
 *
 * OpenBLAS lays both operands of every call out again in its own panels. A blocked matmul
 * hands each tile to many calls (A_ik to every C_ij of its row, B_kj to every C_ij of its
 * column), so at 512² tiles a call ran at 0.93-0.95 of the rate of one 4096-wide call, and the
 * same tiles were laid out 8 or 16 times over (bench/notes.md §29). Lowering now gives each such
 * tile a PACK task, whose chunk holds the tile in the layout the kernel below reads, and the
 * matmul tasks read those chunks: each tile is laid out once, the packed chunk is an ordinary
 * chunk (stored, moved, spilled like any other), and the unpacked tile can be freed as soon as
 * it is packed, so the job holds no more memory than before.
 *
 * Layouts (MR = 12, NR = 16): a left operand A (m x k) is ceil(m / MR) panels of MR rows, each
 * holding, for k-step s = 0 .. k-1, the MR values A[p*MR + r][s] (rows past m zero); a right
 * operand B (k x n) is ceil(n / NR) panels of NR columns, each holding, for each s, the NR
 * values B[s][q*NR + c] (columns past n zero).
 *
 * Every output element is one chain of fused multiply-adds over k in order, from the output's
 * old value (Cprev) or from zero: out[i][j] = fma(A[i][k-1], B[k-1][j], ... fma(A[i][0],
 * B[0][j], c0)). The AVX-512 kernel blocks the work for the caches; the portable one walks the
 * elements one by one; both compute that chain, so their results are the same bits, whichever
 * CPU runs a task, and the tests check both against a loop of fma() calls. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
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
    if (rows < 0 || cols < 0) return -1;
    int64_t side = role == 0 ? rows : cols, other = role == 0 ? cols : rows;
    int64_t unit = role == 0 ? MR : NR;
    int64_t padded = (side + unit - 1) / unit * unit;
    if (padded < side || (other && padded > INT64_MAX / 8 / other)) return -1;
    return padded * other;
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

#if HAVE_AVX512_KERNEL
/* Left packing eight k-steps of a row at a time: each load is scattered to its MR-strided
 * places. */
__attribute__((target("avx512f"))) static void pack_left_avx512(const double *a, int64_t m,
                                                                int64_t k, double *p) {
    const __m512i at = _mm512_setr_epi64(0, MR, 2 * MR, 3 * MR, 4 * MR, 5 * MR, 6 * MR, 7 * MR);
    for (int64_t i0 = 0; i0 < m; i0 += MR, p += MR * k) {
        int64_t rows = m - i0 < MR ? m - i0 : MR, s = 0;
        for (; s + 8 <= k; s += 8)
            for (int64_t r = 0; r < MR; r++) {
                __m512d v = r < rows ? _mm512_loadu_pd(a + (i0 + r) * k + s) : _mm512_setzero_pd();
                _mm512_i64scatter_pd(p + s * MR + r, at, v, 8);
            }
        for (; s < k; s++)
            for (int64_t r = 0; r < MR; r++) p[s * MR + r] = r < rows ? a[(i0 + r) * k + s] : 0;
    }
}
#endif

static void pack_left(const double *a, int64_t m, int64_t k, double *p) {
#if HAVE_AVX512_KERNEL
    if (cpu_has_avx512()) {
        pack_left_avx512(a, m, k, p);
        return;
    }
#endif
    for (int64_t i0 = 0; i0 < m; i0 += MR, p += MR * k) {
        int64_t rows = m - i0 < MR ? m - i0 : MR;
        for (int64_t s = 0; s < k; s++)
            for (int64_t r = 0; r < MR; r++) p[s * MR + r] = r < rows ? a[(i0 + r) * k + s] : 0;
    }
}

#if HAVE_AVX512_KERNEL
/* The whole panels of a right operand: two 64-byte copies per k-step. */
__attribute__((target("avx512f"))) static void pack_right_avx512(const double *b, int64_t k,
                                                                 int64_t n, double *p) {
    for (int64_t j0 = 0; j0 + NR <= n; j0 += NR)
        for (int64_t s = 0; s < k; s++, p += NR) {
            const double *q = b + s * n + j0;
            _mm512_store_pd(p, _mm512_loadu_pd(q));
            _mm512_store_pd(p + 8, _mm512_loadu_pd(q + 8));
        }
}
#endif

static void pack_right(const double *b, int64_t k, int64_t n, double *p) {
    int64_t j0 = 0;
#if HAVE_AVX512_KERNEL
    if (cpu_has_avx512() && ((uintptr_t)p & 63) == 0) {
        j0 = n / NR * NR;
        pack_right_avx512(b, k, n, p);
        p += j0 * k;
    }
#endif
    for (; j0 < n; j0 += NR) {
        int64_t cols = n - j0 < NR ? n - j0 : NR;
        for (int64_t s = 0; s < k; s++, p += NR) {
            memcpy(p, b + s * n + j0, (size_t)cols * sizeof(double));
            if (cols < NR) memset(p + cols, 0, (size_t)(NR - cols) * sizeof(double));
        }
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

/* out (m x n) = (zero ? 0 : out) + pa @ pb, KC steps at a time; a micro-tile that crosses an
 * edge of out runs on a copy. */
__attribute__((target("avx512f,fma"))) static void product_avx512(int64_t m, int64_t n, int64_t k,
                                                                  const double *pa,
                                                                  const double *pb, int zero,
                                                                  double *out) {
    _Alignas(64) double edge[MR * NR];
    int64_t mp = (m + MR - 1) / MR * MR;
    for (int64_t pc = 0; pc < k; pc += KC) {
        int64_t kc = k - pc < KC ? k - pc : KC;
        int z = zero && pc == 0;
        for (int64_t ic = 0; ic < mp; ic += MC) {
            int64_t ie = ic + MC < mp ? ic + MC : mp;
            for (int64_t j = 0; j < n; j += NR) {
                const double *bp = pb + j * k + pc * NR;
                for (int64_t i = ic; i < ie; i += MR) {
                    const double *ap = pa + i * k + pc * MR;
                    if (i + MR <= m && j + NR <= n) {
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

/* The same chain, one element at a time. */
static void product_portable(int64_t m, int64_t n, int64_t k, const double *pa, const double *pb,
                             int zero, double *out) {
    for (int64_t i = 0; i < m; i++) {
        const double *ap = pa + (i / MR) * MR * k + i % MR;
        for (int64_t j = 0; j < n; j++) {
            const double *bp = pb + (j / NR) * NR * k + j % NR;
            double c = zero ? 0.0 : out[i * n + j];
            for (int64_t s = 0; s < k; s++) c = fma(ap[s * MR], bp[s * NR], c);
            out[i * n + j] = c;
        }
    }
}

void tsr__packed_product(int64_t m, int64_t n, int64_t k, const double *pa, const double *pb,
                         int zero, double *out) {
#if HAVE_AVX512_KERNEL
    if (use_avx512()) {
        product_avx512(m, n, k, pa, pb, zero, out);
        return;
    }
#endif
    product_portable(m, n, k, pa, pb, zero, out);
}

/* ---- the kernels ---------------------------------------------------------------------------- */

int k_pack(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
           size_t errlen) {
    (void)nin;
    (void)err;
    (void)errlen;
    const tsr_chunkview *x = &in[0];
    if (d->i[0] == 0)
        pack_left(x->data, x->shape[0], x->shape[1], out->data);
    else
        pack_right(x->data, x->shape[0], x->shape[1], out->data);
    return 0;
}

int k_matmul_packed(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                    char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    int64_t g = d->ni ? d->i[0] : 1, m = d->shape[0], n = d->shape[1];
    double *o = out->data;
    int have = nin == 2 * g + 1;
    if (have && out->data != in[nin - 1].data)
        memcpy(o, in[nin - 1].data, (size_t)(m * n) * sizeof(double));
    int64_t mp = (m + MR - 1) / MR * MR;
    for (int64_t s = 0; s < g; s++) {
        int64_t k = mp ? in[2 * s].shape[0] / mp : 0;
        if (m == 0 || n == 0 || k == 0) continue;
        tsr__packed_product(m, n, k, in[2 * s].data, in[2 * s + 1].data, !have, o);
        have = 1;
    }
    if (!have && m * n != 0) memset(o, 0, (size_t)(m * n) * sizeof(double));
    return 0;
}
