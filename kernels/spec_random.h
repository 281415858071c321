/* SPEC §2's random formula for one element, on its own so that the CUDA kernels (kernels/cuda/,
 * C++ device code) compile the very code the CPU kernels run: plain integer arithmetic and exact
 * conversions, so every device gives the same bits. Dependency-free (stdint only). */
#ifndef TSR_KERNELS_SPEC_RANDOM_H
#define TSR_KERNELS_SPEC_RANDOM_H

#include <stdint.h>

#ifdef __CUDACC__
#define TSR__HOSTDEV __host__ __device__
#else
#define TSR__HOSTDEV
#endif

/* Global row-major index g, seed s. */
static inline TSR__HOSTDEV uint64_t tsr__random_bits(uint64_t s, uint64_t g) {
    uint64_t z = s + (g + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline TSR__HOSTDEV double tsr__random_f64(uint64_t s, uint64_t g) {
    return (double)(tsr__random_bits(s, g) >> 11) * 0x1.0p-53;
}
static inline TSR__HOSTDEV float tsr__random_f32(uint64_t s, uint64_t g) {
    return (float)(tsr__random_bits(s, g) >> 40) * 0x1.0p-24f;
}

#endif
