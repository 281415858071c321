/* SPEC §2's random formula over runs of consecutive global indices, four lanes at a time.
 * Every step is exact integer arithmetic, and the conversions to floating point are exact too
 * (53 and 24 significant bits, scaled by powers of two), so each build and instruction set gives
 * the bits tsr__random_f64/f32 give one element at a time. x86-64 gets AVX2 and AVX-512 copies
 * picked at run time; elsewhere the generic vector code is all there is. */
#include <stdint.h>
#include <string.h>

#include "kernels/kernels_priv.h"

/* Four lanes for the generic and AVX2 copies: GCC lowers 4 x 64-bit multiplies well for AVX2,
 * while eight-lane vectors split badly there. The AVX-512 copies below take eight lanes and the
 * native 64-bit integer conversions instead (measured). */
typedef uint64_t u64x4 __attribute__((vector_size(32)));
typedef int64_t i64x4 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef int32_t i32x4 __attribute__((vector_size(16)));
typedef float f32x4 __attribute__((vector_size(16)));

#define GOLDEN 0x9E3779B97F4A7C15ull

/* The helpers below pass 32-byte vectors by value but are always inlined into their caller, so
 * no call ever crosses the ABI GCC warns about. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

/* The finaliser, lane by lane. */
static inline __attribute__((always_inline)) u64x4 mix4(u64x4 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* seed + (g + 1) * GOLDEN for g = g0 .. g0 + 3; each later group of four adds 4 * GOLDEN
 * (wrapping, so it equals the product exactly). */
static inline __attribute__((always_inline)) u64x4 first_state(uint64_t seed, uint64_t g0) {
    u64x4 lane = {0, 1, 2, 3};
    return seed + (g0 + 1 + lane) * GOLDEN;
}

/* v < 2^53 to double, exactly: its high and low 32 bits each become a double through the
 * 2^52 exponent trick, then hi * 2^32 + lo (exact: an integer below 2^53). */
static inline __attribute__((always_inline)) f64x4 u53_to_f64(u64x4 v) {
    const u64x4 magic = (u64x4){0} + 0x4330000000000000ull;
    const f64x4 two52 = (f64x4){0} + 0x1.0p52;
    u64x4 hi = (v >> 32) | magic, lo = (v & 0xFFFFFFFFull) | magic;
    f64x4 dh, dl;
    memcpy(&dh, &hi, sizeof dh);
    memcpy(&dl, &lo, sizeof dl);
    return (dh - two52) * 0x1.0p32 + (dl - two52);
}

/* Defines name(o, seed, g0, n): `lanes` values a step, conv turning the state vector (of type
 * U, from first) into a vector of them (type V), stored as it is; the tail one at a time. */
#define ROW_FN(name, T, U, V, lanes, first, conv, scalar)                                          \
    static inline __attribute__((always_inline)) void name(T *o, uint64_t seed, uint64_t g0,       \
                                                           int64_t n) {                            \
        int64_t j = 0;                                                                             \
        U z = first(seed, g0);                                                                     \
        for (; j + (lanes) <= n; j += (lanes)) {                                                   \
            V v = conv(z);                                                                         \
            memcpy(o + j, &v, sizeof v);                                                           \
            z += (lanes)*GOLDEN;                                                                   \
        }                                                                                          \
        for (; j < n; j++) o[j] = scalar(seed, g0 + (uint64_t)j);                                  \
    }

static inline __attribute__((always_inline)) f64x4 f64_of4(u64x4 z) {
    return u53_to_f64(mix4(z) >> 11) * 0x1.0p-53;
}

static inline __attribute__((always_inline)) f32x4 f32_of4(u64x4 z) {
    /* Below 2^24: exact as int32 and as float. */
    i32x4 b = __builtin_convertvector((i64x4)(mix4(z) >> 40), i32x4);
    return __builtin_convertvector(b, f32x4) * 0x1.0p-24f;
}

ROW_FN(row_f64, double, u64x4, f64x4, 4, first_state, f64_of4, tsr__random_f64)
ROW_FN(row_f32, float, u64x4, f32x4, 4, first_state, f32_of4, tsr__random_f32)

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* AVX-512: eight lanes, and the integers become floats in one instruction each (vcvtqq2pd,
 * vcvtqq2ps; exact: below 2^53 and 2^24). A 1 Mi-element float64 row into warm memory took 0.27
 * ms against 0.44 with the four-lane body on this machine's Zen 4 (bench/notes.md, issue 9 §25),
 * and every `random` chunk a matmul uses is made at least once inside the run. */
typedef uint64_t u64x8 __attribute__((vector_size(64)));
typedef int64_t i64x8 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) u64x8 mix8(u64x8 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline __attribute__((always_inline)) u64x8 first_state8(uint64_t seed, uint64_t g0) {
    u64x8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    return seed + (g0 + 1 + lane) * GOLDEN;
}

static inline __attribute__((always_inline)) f64x8 f64_of8(u64x8 z) {
    return __builtin_convertvector((i64x8)(mix8(z) >> 11), f64x8) * 0x1.0p-53;
}

static inline __attribute__((always_inline)) f32x8 f32_of8(u64x8 z) {
    return __builtin_convertvector((i64x8)(mix8(z) >> 40), f32x8) * 0x1.0p-24f;
}

ROW_FN(row_f64_w8, double, u64x8, f64x8, 8, first_state8, f64_of8, tsr__random_f64)
ROW_FN(row_f32_w8, float, u64x8, f32x8, 8, first_state8, f32_of8, tsr__random_f32)

/* One copy per instruction set, picked by the caller once per chunk. Not target_clones: its ifunc
 * resolver runs while the program is being relocated, before a sanitizer's runtime is up, and
 * crashes TSan builds. */
#define VARIANT(isa, name, T, body)                                                                \
    static __attribute__((target(isa), noinline)) void name(T *o, uint64_t seed, uint64_t g0,      \
                                                            int64_t n) {                           \
        body(o, seed, g0, n);                                                                      \
    }
VARIANT("arch=x86-64-v4", row_f64_v4, double, row_f64_w8)
VARIANT("arch=x86-64-v3", row_f64_v3, double, row_f64)
VARIANT("arch=x86-64-v4", row_f32_v4, float, row_f32_w8)
VARIANT("arch=x86-64-v3", row_f32_v3, float, row_f32)

/* 0: baseline, 3: x86-64-v3 (AVX2), 4: x86-64-v4 (AVX-512). */
static int isa_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        return 4;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi2"))
        return 3;
    return 0;
}

tsr__random_row_f64_fn tsr__random_row_f64_pick(void) {
    int level = isa_level();
    return level == 4 ? row_f64_v4 : level == 3 ? row_f64_v3 : tsr__random_row_f64;
}

tsr__random_row_f32_fn tsr__random_row_f32_pick(void) {
    int level = isa_level();
    return level == 4 ? row_f32_v4 : level == 3 ? row_f32_v3 : tsr__random_row_f32;
}
#else
tsr__random_row_f64_fn tsr__random_row_f64_pick(void) {
    return tsr__random_row_f64;
}

tsr__random_row_f32_fn tsr__random_row_f32_pick(void) {
    return tsr__random_row_f32;
}
#endif

void tsr__random_row_f64(double *o, uint64_t seed, uint64_t g0, int64_t n) {
    row_f64(o, seed, g0, n);
}

void tsr__random_row_f32(float *o, uint64_t seed, uint64_t g0, int64_t n) {
    row_f32(o, seed, g0, n);
}
