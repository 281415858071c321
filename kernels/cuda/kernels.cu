/* The GPU kernels' device code, behind the C launchers of launch.h: one template per kernel,
 * instantiated for float64 and float32, and per sub-operation from the operations table's maps
 * (graph/ops.h), so a new row there is compiled here too or fails to compile. The element
 * expressions and folds are the table's own, as the CPU kernels expand them. No state, no
 * allocation, no synchronisation: a launcher only enqueues on the stream it is given. Built with
 * -fmad=false so that products and sums round one at a time, as in the CPU kernels. */
#include <math.h>
#include <stdint.h>

#include "graph/ops.h"
#include "kernels/cuda/launch.h"

namespace {

constexpr int THREADS = 256;
/* Elementwise grids stride over the elements beyond this many blocks. */
constexpr int64_t MAX_BLOCKS = 65536;

unsigned grid_for(int64_t n) {
    int64_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 1 ? 1 : b > MAX_BLOCKS ? MAX_BLOCKS : b);
}

#define FOR_EACH(j, n)                                                                             \
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < (n);                      \
         j += (int64_t)gridDim.x * blockDim.x)

/* The maps' M(fn): libm's function for the element type. */
#define DM_UNARY(fn)                                                                               \
    __device__ inline double dm_##fn(double x) {                                                   \
        return ::fn(x);                                                                            \
    }                                                                                              \
    __device__ inline float dm_##fn(float x) {                                                     \
        return ::fn##f(x);                                                                         \
    }
DM_UNARY(fabs)
DM_UNARY(exp)
DM_UNARY(log)
DM_UNARY(sqrt)
DM_UNARY(sin)
DM_UNARY(cos)
DM_UNARY(tanh)
DM_UNARY(floor)
DM_UNARY(ceil)
DM_UNARY(nearbyint)
DM_UNARY(tan)
DM_UNARY(asin)
DM_UNARY(acos)
DM_UNARY(atan)
DM_UNARY(log1p)
DM_UNARY(expm1)
__device__ inline double dm_pow(double x, double y) {
    return ::pow(x, y);
}
__device__ inline float dm_pow(float x, float y) {
    return ::powf(x, y);
}
#define M(fn) dm_##fn
#include "graph/ops_float.h"

/* One functor per table row. */
#define UNARY_OP(E, name, dtypes, expr)                                                            \
    struct un_##E {                                                                                \
        template <typename T> __device__ static T f(T x) {                                         \
            return (expr);                                                                         \
        }                                                                                          \
    };
TSR__UNARY_MAP(UNARY_OP)
#undef UNARY_OP

#define BINARY_OP(E, name, dtypes, expr)                                                           \
    struct bin_##E {                                                                               \
        template <typename T> __device__ static T f(T x, T y) {                                    \
            return (expr);                                                                         \
        }                                                                                          \
    };
TSR__BINARY_MAP(BINARY_OP)
#undef BINARY_OP

#define REDUCE_OP(E, name, init, fold, ...)                                                        \
    struct red_##E {                                                                               \
        __device__ static double f(double s, double x) {                                           \
            return fold(s, x);                                                                     \
        }                                                                                          \
    };
TSR__REDUCE_MAP(REDUCE_OP)
#undef REDUCE_OP

template <typename T> __device__ inline T load_as(const void *p, int dt, int64_t i) {
    return dt == TSR_FLOAT64 ? (T)((const double *)p)[i] : (T)((const float *)p)[i];
}

__device__ inline void store_as(void *p, int dt, int64_t i, double v) {
    if (dt == TSR_FLOAT64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

/* ---- sources and elementwise ---------------------------------------------------------------- */

template <typename T> __global__ void k_fill(T *o, int64_t n, T v) {
    FOR_EACH(j, n) o[j] = v;
}

template <typename T> __device__ inline T random_value(uint64_t s, uint64_t g);
template <> __device__ inline double random_value<double>(uint64_t s, uint64_t g) {
    return tsr__random_f64(s, g);
}
template <> __device__ inline float random_value<float>(uint64_t s, uint64_t g) {
    return tsr__random_f32(s, g);
}

template <typename T>
__global__ void k_random(T *o, int64_t n, uint64_t seed, uint64_t gbase, tsr__cu_index ix) {
    FOR_EACH(j, n) o[j] = random_value<T>(seed, gbase + (uint64_t)tsr__cu_offset0(&ix, j));
}

template <typename T>
__global__ void k_arange(T *o, int64_t n, double start, double step, int64_t offset) {
    FOR_EACH(j, n) o[j] = (T)(start + (double)(offset + j) * step);
}

/* Elementwise kernels read element j before writing it: the output may be an input. */
template <typename T, typename OP> __global__ void k_unary(T *o, const T *a, int64_t n) {
    FOR_EACH(j, n) o[j] = OP::template f<T>(a[j]);
}

template <typename T, typename OP>
__global__ void k_binary(T *o, const void *a, int adt, T sa, const void *b, int bdt, T sb,
                         int64_t n, tsr__cu_index ix) {
    FOR_EACH(j, n) {
        int64_t ia, ib;
        tsr__cu_offsets(&ix, j, &ia, &ib);
        T x = a ? load_as<T>(a, adt, ia) : sa;
        T y = b ? load_as<T>(b, bdt, ib) : sb;
        o[j] = OP::template f<T>(x, y);
    }
}

template <typename TO, typename TI> __global__ void k_convert(TO *o, const TI *a, int64_t n) {
    FOR_EACH(j, n) o[j] = (TO)a[j];
}

template <typename TO, typename TI>
__global__ void k_gather(TO *o, const TI *a, int64_t n, tsr__cu_index ix) {
    FOR_EACH(j, n) {
        int64_t ia, io;
        tsr__cu_offsets(&ix, j, &ia, &io);
        o[io] = (TO)a[ia];
    }
}

/* ---- transpose ------------------------------------------------------------------------------ */

constexpr int TILE = 32, TILE_ROWS = 8;

/* Blocks of TILE_ROWS x TILE threads stride over (plane, tile row, tile column); a tile is read
 * along the input's contiguous axis (i) and written along the output's (j). */
template <typename T>
__global__ void k_transpose2d(T *o, const T *a, int64_t np, int64_t nq, int64_t osp, int64_t isq,
                              int64_t planes, tsr__cu_index pix) {
    __shared__ T tile[TILE][TILE + 1];
    int64_t tp = (np + TILE - 1) / TILE, tq = (nq + TILE - 1) / TILE, ntiles = planes * tp * tq;
    for (int64_t b = blockIdx.x; b < ntiles; b += gridDim.x) {
        int64_t pl = b / (tp * tq), rest = b - pl * (tp * tq);
        int64_t ib = rest / tq * TILE, jb = rest % tq * TILE;
        int64_t so, oo;
        tsr__cu_offsets(&pix, pl, &so, &oo);
        for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {
            int64_t i = ib + threadIdx.x, j = jb + k;
            if (i < np && j < nq) tile[k][threadIdx.x] = a[so + i + j * isq];
        }
        __syncthreads();
        for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {
            int64_t i = ib + k, j = jb + threadIdx.x;
            if (i < np && j < nq) o[oo + i * osp + j] = tile[threadIdx.x][k];
        }
        __syncthreads();
    }
}

/* ---- reductions ----------------------------------------------------------------------------- */

/* One thread per (output, segment): the segment's terms in row-major order, as the CPU folds
 * them. Neighbouring threads take neighbouring outputs (coalesced when the input's last axis
 * is kept). The reduced multi-index advances by carries, without a division per term. */
template <typename TI, typename OP>
__global__ void k_reduce_thread(const TI *x, tsr__cu_index kix, tsr__cu_index rix, int64_t outs,
                                int64_t terms, int64_t seglen, int64_t nseg, double init, int odt,
                                void *dst) {
    FOR_EACH(t, outs * nseg) {
        int64_t seg = t / outs, o = t - seg * outs;
        const TI *base = x + tsr__cu_offset0(&kix, o);
        int64_t r0 = seg * seglen, r1 = r0 + seglen < terms ? r0 + seglen : terms;
        double s = init;
        if (r0 < r1) {
            int64_t idx[TSR_MAX_NDIM], off = 0, rem = r0;
#pragma unroll
            for (int k = 0; k < TSR_MAX_NDIM; k++) {
                if (k >= rix.m) break;
                idx[k] = k == rix.m - 1 ? rem : rem % rix.ext[k];
                rem = k == rix.m - 1 ? 0 : rem / rix.ext[k];
                off += idx[k] * rix.s0[k];
            }
            for (int64_t r = r0; r < r1; r++) {
                s = OP::f(s, (double)base[off]);
#pragma unroll
                for (int k = 0; k < TSR_MAX_NDIM; k++) {
                    if (k >= rix.m) break;
                    off += rix.s0[k];
                    if (++idx[k] < rix.ext[k]) break;
                    off -= rix.ext[k] * rix.s0[k];
                    idx[k] = 0;
                }
            }
        }
        if (nseg == 1)
            store_as(dst, odt, o, s);
        else
            ((double *)dst)[o * nseg + seg] = s;
    }
}

/* One block per (output, segment) of contiguous terms: thread t folds terms t, t + THREADS, ...
 * then the block combines its partials as a fixed tree (the same for every run). */
template <typename TI, typename OP>
__global__ void k_reduce_block(const TI *x, tsr__cu_index kix, tsr__cu_index rix, int64_t outs,
                               int64_t terms, int64_t seglen, int64_t nseg, double init, int odt,
                               void *dst) {
    __shared__ double part[TSR__CU_REDUCE_THREADS];
    for (int64_t b = blockIdx.x; b < outs * nseg; b += gridDim.x) {
        int64_t o = b / nseg, seg = b - o * nseg;
        const TI *base = x + tsr__cu_offset0(&kix, o);
        int64_t r0 = seg * seglen, r1 = r0 + seglen < terms ? r0 + seglen : terms;
        double s = init;
        for (int64_t r = r0 + threadIdx.x; r < r1; r += TSR__CU_REDUCE_THREADS)
            s = OP::f(s, (double)base[tsr__cu_offset0(&rix, r)]);
        part[threadIdx.x] = s;
        __syncthreads();
        for (int w = TSR__CU_REDUCE_THREADS / 2; w > 0; w >>= 1) {
            if ((int)threadIdx.x < w)
                part[threadIdx.x] = OP::f(part[threadIdx.x], part[threadIdx.x + w]);
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            if (nseg == 1)
                store_as(dst, odt, o, part[0]);
            else
                ((double *)dst)[o * nseg + seg] = part[0];
        }
        __syncthreads();
    }
}

/* Inputs folded in order in double; a long list is split across launches through acc. */
template <typename T, typename OP>
__global__ void k_combine(T *o, double *acc, int first, int last, tsr__cu_inputs in, double scale,
                          int64_t n) {
    FOR_EACH(j, n) {
        double s = first ? load_as<double>(in.p[0], in.dt[0], j) : acc[j];
        for (int k = first ? 1 : 0; k < in.k; k++)
            s = OP::f(s, load_as<double>(in.p[k], in.dt[k], j));
        if (!last)
            acc[j] = s;
        else if (scale != 1.0)
            o[j] = (T)(s * scale);
        else
            o[j] = (T)s;
    }
}

/* ---- launchers, per dtype ------------------------------------------------------------------- */

int status() {
    return (int)cudaGetLastError();
}

template <typename T> int unary_t(int fn, void *o, const void *a, int64_t n, cudaStream_t st) {
    switch (fn) {
#define CASE(E, ...)                                                                               \
    case TSR_##E:                                                                                  \
        k_unary<T, un_##E><<<grid_for(n), THREADS, 0, st>>>((T *)o, (const T *)a, n);              \
        return status();
        TSR__UNARY_MAP(CASE)
#undef CASE
    default:
        return (int)cudaErrorInvalidValue;
    }
}

template <typename T>
int binary_t(int fn, void *o, const void *a, int adt, double sa, const void *b, int bdt, double sb,
             int64_t n, const tsr__cu_index *ix, cudaStream_t st) {
    switch (fn) {
#define CASE(E, ...)                                                                               \
    case TSR_##E:                                                                                  \
        k_binary<T, bin_##E>                                                                       \
            <<<grid_for(n), THREADS, 0, st>>>((T *)o, a, adt, (T)sa, b, bdt, (T)sb, n, *ix);       \
        return status();
        TSR__BINARY_MAP(CASE)
#undef CASE
    default:
        return (int)cudaErrorInvalidValue;
    }
}

template <typename TI>
int reduce_t(int fn, int block, const void *x, const tsr__cu_index *kix, const tsr__cu_index *rix,
             int64_t outs, int64_t terms, int64_t seglen, int64_t nseg, double init, int odt,
             void *dst, cudaStream_t st) {
    int64_t work = outs * nseg;
    unsigned grid = (unsigned)(work < MAX_BLOCKS ? work : MAX_BLOCKS);
    switch (fn) {
#define CASE(E, ...)                                                                               \
    case TSR_##E:                                                                                  \
        if (block)                                                                                 \
            k_reduce_block<TI, red_##E><<<grid, TSR__CU_REDUCE_THREADS, 0, st>>>(                  \
                (const TI *)x, *kix, *rix, outs, terms, seglen, nseg, init, odt, dst);             \
        else                                                                                       \
            k_reduce_thread<TI, red_##E><<<grid_for(work), THREADS, 0, st>>>(                      \
                (const TI *)x, *kix, *rix, outs, terms, seglen, nseg, init, odt, dst);             \
        return status();
        TSR__REDUCE_MAP(CASE)
#undef CASE
    default:
        return (int)cudaErrorInvalidValue;
    }
}

template <typename T>
int combine_t(int fn, void *o, double *acc, int first, int last, const tsr__cu_inputs *in,
              double scale, int64_t n, cudaStream_t st) {
    switch (fn) {
#define CASE(E, ...)                                                                               \
    case TSR_##E:                                                                                  \
        k_combine<T, red_##E>                                                                      \
            <<<grid_for(n), THREADS, 0, st>>>((T *)o, acc, first, last, *in, scale, n);            \
        return status();
        TSR__REDUCE_MAP(CASE)
#undef CASE
    default:
        return (int)cudaErrorInvalidValue;
    }
}

template <typename TO>
int gather_t(void *o, int idt, const void *a, int64_t n, const tsr__cu_index *ix, cudaStream_t st) {
    if (idt == TSR_FLOAT64)
        k_gather<TO, double><<<grid_for(n), THREADS, 0, st>>>((TO *)o, (const double *)a, n, *ix);
    else
        k_gather<TO, float><<<grid_for(n), THREADS, 0, st>>>((TO *)o, (const float *)a, n, *ix);
    return status();
}

template <typename TO> int convert_t(void *o, int idt, const void *a, int64_t n, cudaStream_t st) {
    if (idt == TSR_FLOAT64)
        k_convert<TO, double><<<grid_for(n), THREADS, 0, st>>>((TO *)o, (const double *)a, n);
    else
        k_convert<TO, float><<<grid_for(n), THREADS, 0, st>>>((TO *)o, (const float *)a, n);
    return status();
}

template <typename T>
int transpose2d_t(void *o, const void *a, int64_t np, int64_t nq, int64_t osp, int64_t isq,
                  int64_t planes, const tsr__cu_index *pix, cudaStream_t st) {
    int64_t tiles = planes * ((np + TILE - 1) / TILE) * ((nq + TILE - 1) / TILE);
    unsigned grid = (unsigned)(tiles < MAX_BLOCKS ? tiles : MAX_BLOCKS);
    k_transpose2d<T><<<grid, dim3(TILE, TILE_ROWS), 0, st>>>((T *)o, (const T *)a, np, nq, osp, isq,
                                                             planes, *pix);
    return status();
}

} // namespace

/* ---- the C interface (launch.h) ------------------------------------------------------------- */

#define BY_DTYPE(dt, call) ((dt) == TSR_FLOAT64 ? call<double> : call<float>)

extern "C" int tsr__cu_fill(int dt, void *o, int64_t n, double v, cudaStream_t st) {
    if (n <= 0) return 0;
    if (dt == TSR_FLOAT64)
        k_fill<double><<<grid_for(n), THREADS, 0, st>>>((double *)o, n, v);
    else
        k_fill<float><<<grid_for(n), THREADS, 0, st>>>((float *)o, n, (float)v);
    return status();
}

extern "C" int tsr__cu_random(int dt, void *o, int64_t n, uint64_t seed, uint64_t gbase,
                              const tsr__cu_index *ix, cudaStream_t st) {
    if (n <= 0) return 0;
    if (dt == TSR_FLOAT64)
        k_random<double><<<grid_for(n), THREADS, 0, st>>>((double *)o, n, seed, gbase, *ix);
    else
        k_random<float><<<grid_for(n), THREADS, 0, st>>>((float *)o, n, seed, gbase, *ix);
    return status();
}

extern "C" int tsr__cu_arange(int dt, void *o, int64_t n, double start, double step, int64_t offset,
                              cudaStream_t st) {
    if (n <= 0) return 0;
    if (dt == TSR_FLOAT64)
        k_arange<double><<<grid_for(n), THREADS, 0, st>>>((double *)o, n, start, step, offset);
    else
        k_arange<float><<<grid_for(n), THREADS, 0, st>>>((float *)o, n, start, step, offset);
    return status();
}

extern "C" int tsr__cu_unary(int dt, int fn, void *o, const void *a, int64_t n, cudaStream_t st) {
    if (n <= 0) return 0;
    return BY_DTYPE(dt, unary_t)(fn, o, a, n, st);
}

extern "C" int tsr__cu_binary(int dt, int fn, void *o, const void *a, int adt, double sa,
                              const void *b, int bdt, double sb, int64_t n, const tsr__cu_index *ix,
                              cudaStream_t st) {
    if (n <= 0) return 0;
    return BY_DTYPE(dt, binary_t)(fn, o, a, adt, sa, b, bdt, sb, n, ix, st);
}

extern "C" int tsr__cu_convert(int odt, void *o, int idt, const void *a, int64_t n,
                               cudaStream_t st) {
    if (n <= 0) return 0;
    return BY_DTYPE(odt, convert_t)(o, idt, a, n, st);
}

extern "C" int tsr__cu_gather(int odt, void *o, int idt, const void *a, int64_t n,
                              const tsr__cu_index *ix, cudaStream_t st) {
    if (n <= 0) return 0;
    return BY_DTYPE(odt, gather_t)(o, idt, a, n, ix, st);
}

extern "C" int tsr__cu_transpose2d(int dt, void *o, const void *a, int64_t np, int64_t nq,
                                   int64_t osp, int64_t isq, int64_t planes,
                                   const tsr__cu_index *pix, cudaStream_t st) {
    if (np <= 0 || nq <= 0 || planes <= 0) return 0;
    return BY_DTYPE(dt, transpose2d_t)(o, a, np, nq, osp, isq, planes, pix, st);
}

extern "C" int tsr__cu_reduce(int fn, int block, int xdt, const void *x, const tsr__cu_index *kix,
                              const tsr__cu_index *rix, int64_t outs, int64_t terms, int64_t seglen,
                              int64_t nseg, double init, int odt, void *dst, cudaStream_t st) {
    if (outs <= 0 || nseg <= 0) return 0;
    return BY_DTYPE(xdt, reduce_t)(fn, block, x, kix, rix, outs, terms, seglen, nseg, init, odt,
                                   dst, st);
}

extern "C" int tsr__cu_combine(int dt, int fn, void *o, double *acc, int first, int last,
                               const tsr__cu_inputs *in, double scale, int64_t n, cudaStream_t st) {
    if (n <= 0) return 0;
    return BY_DTYPE(dt, combine_t)(fn, o, acc, first, last, in, scale, n, st);
}
