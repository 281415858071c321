/* Float matrix products over operands packed once (PACK, PACK_SOURCE and MATMUL_PACKED,
 * kernels.h).
 *
 * OpenBLAS lays both operands of every call out again in its own panels. A blocked matmul
 * hands each tile to many calls (A_ik to every C_ij of its row, B_kj to every C_ij of its
 * column), so at 512² tiles a call ran at 0.93-0.95 of the rate of one 4096-wide call, and the
 * same tiles were laid out 8 or 16 times over (bench/notes.md §29). Lowering now gives each such
 * tile a PACK task, whose chunk holds the tile in the layout the kernel below reads, and the
 * matmul tasks read those chunks: each tile is laid out once, the packed chunk is an ordinary
 * chunk (stored, moved, spilled like any other), and the unpacked tile is gone once it is
 * packed. A tile of a source that can be made anywhere (random, full, ...) is made and packed
 * by one PACK_SOURCE task, which the scheduler makes again wherever it is needed, as it would
 * the source.
 *
 * Layouts (MR = 6; NR = 32 for float64, 64 for float32: 256 bytes): a left operand A (m x k)
 * is ceil(m / MR) panels of MR rows (the
 * last one of what is left), each holding, for k-step s = 0 .. k-1, its rows' values A[p*MR +
 * r][s]; a right operand B (k x n) is ceil(n / NR) panels of NR columns (the last one of what is
 * left), each holding, for each s, its columns' values B[s][q*NR + c]. A packed tile has the
 * tile's size, so PACK may write it over its input's buffer when the worker holds the only
 * reference (the input is copied aside first): the source tile's memory becomes the packed
 * tile's, and no new buffer is touched.
 *
 * Every output element is one chain of fused multiply-adds (in the output's dtype) over k in
 * order, from the output's
 * old value (Cprev) or from zero: out[i][j] = fma(A[i][k-1], B[k-1][j], ... fma(A[i][0],
 * B[0][j], c0)). The AVX-512 kernel blocks the work for the caches; the portable one walks the
 * elements one by one; both compute that chain, so their results are the same bits, whichever
 * CPU runs a task, and the tests check both against a loop of fma() calls. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
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
    KC = 512, /* k-steps per pass over a micro-tile: its B panel (128 KiB) is read from L2 */
    MC = 48,  /* rows of A (in L2) that each B panel is used across before the next panel */
    /* The columns of B (NC) one pass over all of A's rows reads, 2 MiB of it (512 float64, 1024
     * float32 columns): without that bound a 2048-wide tile streamed 8 MiB of B from the last
     * level cache for every MC rows, 44-50 GFLOP/s a core against 52-53 (bench/notes.md §33). */
    B_SLICE_BYTES = 2 << 20,
};

int64_t tsr__packed_len(int role, int64_t rows, int64_t cols) {
    (void)role;
    if (rows < 0 || cols < 0 || (cols && rows > INT64_MAX / 8 / cols)) return -1;
    return rows * cols;
}

static int cpu_has_avx512(void) {
#if HAVE_AVX512_KERNEL
    static _Atomic int ok = -1; /* executors may ask at once: they store the same answer */
    int v = atomic_load_explicit(&ok, memory_order_relaxed);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
        atomic_store_explicit(&ok, v, memory_order_relaxed);
    }
    return v;
#else
    return 0;
#endif
}

/* 0: the AVX-512 kernel where the CPU has it; 1: always the portable one (tests). */
static _Atomic int force_portable;

void tsr__packed_force_portable(int on) {
    atomic_store_explicit(&force_portable, on, memory_order_relaxed);
}

static int use_avx512(void) {
    return !atomic_load_explicit(&force_portable, memory_order_relaxed) && cpu_has_avx512();
}

/* ---- packing -------------------------------------------------------------------------------- */

/* Per-thread scratch: a tile packed in place is copied here first, and a product's last panels
 * are padded here to full width for the AVX-512 kernel. Kept between calls, so its pages stay
 * warm; freed when the thread exits. */
enum { SCRATCH_TILE, SCRATCH_LEFT_EDGE, SCRATCH_RIGHT_EDGE, SCRATCHES };
typedef struct scratch {
    void *p[SCRATCHES];
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

static void *scratch_get(int which, size_t n) {
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
        if (n > SIZE_MAX - 63 || !(s->p[which] = aligned_alloc(64, (n + 63) & ~(size_t)63)))
            return NULL;
        s->cap[which] = n;
    }
    return s->p[which];
}

/* ---- the two float types -------------------------------------------------------------------- */

/* float64: 6 x 32 micro-tiles of 8-double vectors; float32: 6 x 64 of 16-float vectors (the
 * same 256-byte rows of B, so the same cache blocking). 6 x 32 ran 3-4% faster than 12 x 16 on
 * this machine's Zen 4 (bench/notes.md §32): per k-step 6 broadcasts and 4 loads feed 24 fused
 * multiply-adds, where 12 x 16 needed 12 and 2. */
#define T double
#define NAME(x) x##_f64
#define NR 32
#define VL 8
#define NC (B_SLICE_BYTES / (KC * 8))
#define VEC __m512d
#define LOADU _mm512_loadu_pd
#define STOREU _mm512_storeu_pd
#define SET1 _mm512_set1_pd
#define SETZERO _mm512_setzero_pd
#define FMADD _mm512_fmadd_pd
#define SCATTER_IDX                                                                                \
    __m512i at = _mm512_setr_epi64(0, MR, 2 * MR, 3 * MR, 4 * MR, 5 * MR, 6 * MR, 7 * MR)
#define SCATTER(p, at, v) _mm512_i64scatter_pd(p, at, v, 8)
#define FMA fma
#include "kernels/gemm_pack_tmpl.c"

#define T float
#define NAME(x) x##_f32
#define NR 64
#define VL 16
#define NC (B_SLICE_BYTES / (KC * 4))
#define VEC __m512
#define LOADU _mm512_loadu_ps
#define STOREU _mm512_storeu_ps
#define SET1 _mm512_set1_ps
#define SETZERO _mm512_setzero_ps
#define FMADD _mm512_fmadd_ps
#define SCATTER_IDX                                                                                \
    __m512i at = _mm512_setr_epi32(0, MR, 2 * MR, 3 * MR, 4 * MR, 5 * MR, 6 * MR, 7 * MR, 8 * MR,  \
                                   9 * MR, 10 * MR, 11 * MR, 12 * MR, 13 * MR, 14 * MR, 15 * MR)
#define SCATTER(p, at, v) _mm512_i32scatter_ps(p, at, v, 4)
#define FMA fmaf
#include "kernels/gemm_pack_tmpl.c"

/* ---- the kernels ---------------------------------------------------------------------------- */

/* Rows r0 .. r0 + h of a rows x cols tile (src holds those h rows) into out, the tile packed. A
 * left strip starts on a panel's first row (r0 a multiple of MR). */
static void pack_rows_any(int dt, int left, const void *src, int64_t h, int64_t cols, int64_t rows,
                          int64_t r0, void *out) {
    size_t at = (size_t)(r0 * cols);
    if (dt == TSR_FLOAT64 && left)
        pack_left_f64(src, h, cols, (double *)out + at);
    else if (dt == TSR_FLOAT64)
        pack_right_rows_f64(src, h, cols, rows, r0, out);
    else if (left)
        pack_left_f32(src, h, cols, (float *)out + at);
    else
        pack_right_rows_f32(src, h, cols, rows, r0, out);
}

/* In place (out over the input, which the worker donated): the tile is copied aside first. */
int k_pack(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
           size_t errlen) {
    (void)nin;
    const tsr_chunkview *x = &in[0];
    int64_t rows = x->shape[0], cols = x->shape[1];
    size_t bytes = (size_t)(rows * cols) * tsr_dtype_size((tsr_dtype)x->dtype);
    const void *src = x->data;
    if (out->data == x->data && bytes > 0) {
        void *copy = scratch_get(SCRATCH_TILE, bytes);
        if (!copy) {
            tsr__fmt(err, errlen, "no memory to pack a %lld x %lld tile in place", (long long)rows,
                     (long long)cols);
            return -ENOMEM;
        }
        memcpy(copy, src, bytes);
        src = copy;
    }
    pack_rows_any(x->dtype, d->i[0] == 0, src, rows, cols, rows, 0, out->data);
    return 0;
}

/* The descriptor of rows r0 .. r0 + h of the source tile s: s with h rows and its row offset moved
 * on by r0, for the families whose values depend only on where they are (RANDOM and NORMAL: i =
 * [seed, gshape[2], offset[2]]; EYE: [k, offset[2]]) or on nothing (FILL). 0, or -1 for another
 * family or layout, which is then made as one tile. */
static int strip_desc(const tsr_kdesc *s, int64_t r0, int64_t h, tsr_kdesc *t, int64_t iv[5]) {
    int at;
    switch (s->kop) {
    case TSR_KOP_FILL:
        at = -1;
        break;
    case TSR_KOP_RANDOM:
    case TSR_KOP_NORMAL:
        if (s->ni != 5) return -1;
        at = 3;
        break;
    case TSR_KOP_EYE:
        if (s->ni != 3) return -1;
        at = 1;
        break;
    default:
        return -1;
    }
    *t = *s;
    t->shape[0] = h;
    if (at >= 0) {
        memcpy(iv, s->i, s->ni * sizeof *iv);
        iv[at] += r0;
        t->i = iv;
    }
    return 0;
}

/* Bytes of source a strip holds at most: small enough to stay in the first-level cache between
 * being made and being packed (a right strip; a left one is 2 MR rows, whatever their length). */
#define STRIP_BYTES 16384

/* The source's tile is made by its own kernel (checks included) a strip of rows at a time into
 * per-thread scratch, and each strip packed into the output while it is still in cache: the
 * output is written once and nothing tile-sized is read back (bench/notes.md §31). A family
 * without strips is made whole, then packed. */
int k_pack_source(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                  char *err, size_t errlen) {
    (void)in;
    (void)nin;
    tsr_kdesc s;
    memset(&s, 0, sizeof s);
    s.kop = (uint8_t)d->i[1];
    s.dtype = d->dtype;
    s.ndim = 2;
    s.shape[0] = d->i[2];
    s.shape[1] = d->i[3];
    s.i = d->ni > 4 ? d->i + 4 : NULL;
    s.ni = d->ni - 4;
    s.f = d->f;
    s.nf = d->nf;
    int64_t rows = s.shape[0], cols = s.shape[1];
    int left = d->i[0] == 0;
    size_t es = tsr_dtype_size((tsr_dtype)d->dtype), row_bytes = (size_t)cols * es;
    if (rows == 0 || cols == 0) return 0;
    int64_t h = left ? 2 * TSR__PACK_MR : (int64_t)(STRIP_BYTES / row_bytes);
    tsr_kdesc t = s;
    int64_t iv[5];
    int strips = h >= 1 && h < rows && strip_desc(&s, 0, h, &t, iv) == 0;
    if (!strips) h = rows;
    tsr_chunkview strip;
    memset(&strip, 0, sizeof strip);
    strip.dtype = d->dtype;
    strip.ndim = 2;
    strip.shape[1] = cols;
    if (!(strip.data = scratch_get(SCRATCH_TILE, (size_t)h * row_bytes))) {
        tsr__fmt(err, errlen, "no memory to make a %lld x %lld tile", (long long)rows,
                 (long long)cols);
        return -ENOMEM;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += h) {
        int64_t n = rows - r0 < h ? rows - r0 : h;
        if (strips) (void)strip_desc(&s, r0, n, &t, iv);
        strip.shape[0] = n;
        int rc = tsr__kernel_run(&t, NULL, 0, &strip, TSR_DEVICE_CPU, err, errlen);
        if (rc != 0) return rc;
        pack_rows_any(d->dtype, left, strip.data, n, cols, rows, r0, out->data);
    }
    return 0;
}

int k_matmul_packed(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                    char *err, size_t errlen) {
    int64_t g = d->ni ? d->i[0] : 1, m = d->shape[0], n = d->shape[1];
    size_t es = tsr_dtype_size((tsr_dtype)d->dtype);
    int have = nin == 2 * g + 1;
    if (have && out->data != in[nin - 1].data)
        memcpy(out->data, in[nin - 1].data, (size_t)(m * n) * es);
    for (int64_t s = 0; s < g; s++) {
        int64_t k = m ? in[2 * s].shape[0] / m : 0;
        if (m == 0 || n == 0 || k == 0) continue;
        int rc = d->dtype == TSR_FLOAT64
                     ? tsr__packed_product_f64(m, n, k, in[2 * s].data, in[2 * s + 1].data, !have,
                                               out->data)
                     : tsr__packed_product_f32(m, n, k, in[2 * s].data, in[2 * s + 1].data, !have,
                                               out->data);
        if (rc < 0) {
            tsr__fmt(err, errlen, "out of memory");
            return -ENOMEM;
        }
        have = 1;
    }
    if (!have && m * n != 0) memset(out->data, 0, (size_t)(m * n) * es);
    return 0;
}
