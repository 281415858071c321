/* PACK and MATMUL_PACKED for one float type (gemm_pack.c includes this once per type, with T,
 * NAME(), NR, VL and the vector macros defined; see there for the layouts and the kernel). It
 * undefines them at its end, ready for the next type. */

#if HAVE_AVX512_KERNEL
/* Full left panels VL k-steps of a row at a time: each load is scattered to its MR-strided
 * places. Returns the rows done. */
__attribute__((target("avx512f"))) static int64_t NAME(pack_left_avx512)(const T *a, int64_t m,
                                                                         int64_t k, T *p) {
    const SCATTER_IDX;
    int64_t i0 = 0;
    for (; i0 + MR <= m; i0 += MR, p += MR * k) {
        int64_t s = 0;
        for (; s + VL <= k; s += VL)
            for (int64_t r = 0; r < MR; r++)
                SCATTER(p + s * MR + r, at, LOADU(a + (i0 + r) * k + s));
        for (; s < k; s++)
            for (int64_t r = 0; r < MR; r++) p[s * MR + r] = a[(i0 + r) * k + s];
    }
    return i0;
}

/* Rows s0 .. s0 + h of full right panels (b holds those h rows): NR / VL 64-byte copies per
 * k-step. Returns the columns done. */
__attribute__((target("avx512f"))) static int64_t
NAME(pack_right_avx512)(const T *b, int64_t h, int64_t n, int64_t k, int64_t s0, T *p) {
    int64_t j0 = 0;
    for (; j0 + NR <= n; j0 += NR) {
        T *d = p + j0 * k + s0 * NR;
        for (int64_t s = 0; s < h; s++, d += NR) {
            const T *q = b + s * n + j0;
#pragma GCC unroll 4
            for (int v = 0; v < NR / VL; v++) STOREU(d + v * VL, LOADU(q + v * VL));
        }
    }
    return j0;
}
#endif

/* p (m * k values, not overlapping a) = a (m x k) as left panels. */
static void NAME(pack_left)(const T *a, int64_t m, int64_t k, T *p) {
    int64_t i0 = 0;
#if HAVE_AVX512_KERNEL
    if (cpu_has_avx512()) i0 = NAME(pack_left_avx512)(a, m, k, p);
#endif
    for (; i0 < m; i0 += MR) {
        int64_t w = m - i0 < MR ? m - i0 : MR;
        T *q = p + i0 * k;
        for (int64_t s = 0; s < k; s++)
            for (int64_t r = 0; r < w; r++) q[s * w + r] = a[(i0 + r) * k + s];
    }
}

/* Rows s0 .. s0 + h of a k x n right operand (b: those h rows, h x n) into p, the operand's
 * right panels (k * n values, not overlapping b). */
static void NAME(pack_right_rows)(const T *b, int64_t h, int64_t n, int64_t k, int64_t s0, T *p) {
    int64_t j0 = 0;
#if HAVE_AVX512_KERNEL
    if (cpu_has_avx512()) j0 = NAME(pack_right_avx512)(b, h, n, k, s0, p);
#endif
    for (; j0 < n; j0 += NR) {
        int64_t w = n - j0 < NR ? n - j0 : NR;
        T *q = p + j0 * k + s0 * w;
        for (int64_t s = 0; s < h; s++) memcpy(q + s * w, b + s * n + j0, (size_t)w * sizeof(T));
    }
}

/* ---- products ------------------------------------------------------------------------------- */

#if HAVE_AVX512_KERNEL
/* c (MR x NR, row stride ldc) = (zero ? 0 : c) + the panels' product over kc steps: MR * NR /
 * VL (24) accumulators, MR broadcasts of A and NR / VL loads of B per step. cn, if not NULL, is
 * the next call's c (same ldc): its lines are fetched into L2 while this call runs, so that
 * call's first steps do not wait for its accumulators from memory (+0.5-3.5%, notes §33). */
__attribute__((target("avx512f,fma"))) static void NAME(micro)(int64_t kc, const T *restrict a,
                                                               const T *restrict b, T *restrict c,
                                                               int64_t ldc, int zero, const T *cn) {
    enum { NV = NR / VL };
    VEC x[MR][NV];
    if (cn)
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NV; v++)
                _mm_prefetch((const char *)(cn + r * ldc + v * VL), _MM_HINT_T1);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) x[r][v] = zero ? SETZERO() : LOADU(c + r * ldc + v * VL);
    for (int64_t s = 0; s < kc; s++, a += MR, b += NR) {
        VEC bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = LOADU(b + v * VL);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            VEC av = SET1(a[r]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) x[r][v] = FMADD(av, bv[v], x[r][v]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) STOREU(c + r * ldc + v * VL, x[r][v]);
}

/* The kc k-steps from pc of out's columns jc .. je (NR-aligned, all rows), MC rows of A across
 * each B panel; z: start from zero. The edges are as product_avx512 says. */
__attribute__((target("avx512f,fma"))) static void
NAME(block_avx512)(int64_t m, int64_t n, int64_t k, const T *pa, const T *pb, T *out, const T *ea,
                   const T *eb, int64_t jc, int64_t je, int64_t pc, int64_t kc, int z) {
    _Alignas(64) T edge[MR * NR];
    int64_t mf = m / MR * MR, nf = n / NR * NR, mp = (m + MR - 1) / MR * MR;
    for (int64_t ic = 0; ic < mp; ic += MC) {
        int64_t ie = ic + MC < mp ? ic + MC : mp;
        for (int64_t j = jc; j < je; j += NR) {
            const T *bp = (j < nf ? pb + j * k : eb) + pc * NR;
            for (int64_t i = ic; i < ie; i += MR) {
                const T *ap = (i < mf ? pa + i * k : ea) + pc * MR;
                if (i < mf && j < nf) {
                    /* The next micro-tile in this order, if it lies in out whole. */
                    int64_t ni = i + MR < ie ? i + MR : j + NR < je ? ic : ie;
                    int64_t nj = i + MR < ie ? j : j + NR < je ? j + NR : jc;
                    const T *cn = ni < mf && nj < nf ? out + ni * n + nj : NULL;
                    NAME(micro)(kc, ap, bp, out + i * n + j, n, z, cn);
                    continue;
                }
                int64_t rows = m - i < MR ? m - i : MR, cols = n - j < NR ? n - j : NR;
                for (int64_t r = 0; r < MR; r++)
                    for (int64_t q = 0; q < NR; q++)
                        edge[r * NR + q] =
                            r < rows && q < cols && !z ? out[(i + r) * n + j + q] : 0;
                NAME(micro)(kc, ap, bp, edge, NR, z, NULL);
                for (int64_t r = 0; r < rows; r++)
                    memcpy(out + (i + r) * n + j, edge + r * NR, (size_t)cols * sizeof(T));
            }
        }
    }
}

/* out (m x n) = (zero ? 0 : out) + pa @ pb, NC columns and KC steps at a time (each element's
 * steps still in k order). A last panel narrower than MR rows or NR columns is first padded to
 * full width with zeros (ea, eb: MR * k and NR * k values); a micro-tile that crosses an edge
 * of out runs on a copy. */
__attribute__((target("avx512f,fma"))) static void NAME(product_avx512)(int64_t m, int64_t n,
                                                                        int64_t k, const T *pa,
                                                                        const T *pb, int zero,
                                                                        T *out, T *ea, T *eb) {
    int64_t mf = m / MR * MR, nf = n / NR * NR;
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
    for (int64_t jc = 0; jc < n; jc += NC) {
        int64_t je = jc + NC < n ? jc + NC : n;
        for (int64_t pc = 0; pc < k; pc += KC) {
            int64_t kc = k - pc < KC ? k - pc : KC;
            NAME(block_avx512)(m, n, k, pa, pb, out, ea, eb, jc, je, pc, kc, zero && pc == 0);
        }
    }
}
#endif

/* The same chain, one element at a time: A[i][s] is in i's panel (width w: MR, or what the
 * last panel has) at s * w + i % MR. */
static void NAME(product_portable)(int64_t m, int64_t n, int64_t k, const T *pa, const T *pb,
                                   int zero, T *out) {
    for (int64_t i = 0; i < m; i++) {
        int64_t i0 = i / MR * MR, wa = m - i0 < MR ? m - i0 : MR;
        const T *ap = pa + i0 * k + (i - i0);
        for (int64_t j = 0; j < n; j++) {
            int64_t j0 = j / NR * NR, wb = n - j0 < NR ? n - j0 : NR;
            const T *bp = pb + j0 * k + (j - j0);
            T c = zero ? 0 : out[i * n + j];
            for (int64_t s = 0; s < k; s++) c = FMA(ap[s * wa], bp[s * wb], c);
            out[i * n + j] = c;
        }
    }
}

int NAME(tsr__packed_product)(int64_t m, int64_t n, int64_t k, const T *pa, const T *pb, int zero,
                              T *out) {
#if HAVE_AVX512_KERNEL
    if (use_avx512()) {
        T *ea = m % MR ? scratch_get(SCRATCH_LEFT_EDGE, (size_t)(MR * k) * sizeof(T)) : NULL;
        T *eb = n % NR ? scratch_get(SCRATCH_RIGHT_EDGE, (size_t)(NR * k) * sizeof(T)) : NULL;
        if ((m % MR && !ea) || (n % NR && !eb)) return -ENOMEM;
        NAME(product_avx512)(m, n, k, pa, pb, zero, out, ea, eb);
        return 0;
    }
#endif
    NAME(product_portable)(m, n, k, pa, pb, zero, out);
    return 0;
}

#undef T
#undef NAME
#undef NR
#undef VL
#undef NC
#undef VEC
#undef LOADU
#undef STOREU
#undef SET1
#undef SETZERO
#undef FMADD
#undef SCATTER_IDX
#undef SCATTER
#undef FMA
