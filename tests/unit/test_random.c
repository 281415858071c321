/* SPEC §2's random formula: the header's implementation against literal values computed with
 * Python's big integers masked to 64 bits, and against a step-by-step re-implementation. */
#include <criterion/criterion.h>

#include "kernels/kernels.h"
#include "kernels/kernels_priv.h"

/* The formula written out again, one step per line as in the SPEC. */
static uint64_t spec_bits(uint64_t s, uint64_t i) {
    uint64_t z = s + (i + 1) * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Computed with:
 *   python3 -c "M=(1<<64)-1
 *   def bits(s,i):
 *     z=(s+((i+1)*0x9E3779B97F4A7C15))&M
 *     z=((z^(z>>30))*0xBF58476D1CE4E5B9)&M
 *     z=((z^(z>>27))*0x94D049BB133111EB)&M
 *     return z^(z>>31)"
 * with float64 = (z >> 11) * 2**-53 and float32 = (z >> 40) * 2**-24. */
static const struct {
    uint64_t seed, index, bits;
    double f64;
    float f32;
} known[] = {
    {0, 0, UINT64_C(0xe220a8397b1dcdaf), 0.8833108082136426, 0.8833107948303223f},
    {1, 0, UINT64_C(0x910a2dec89025cc1), 0.5665615751722809, 0.5665615200996399f},
    {42, 12345, UINT64_C(0xbe5663aa0035cbd7), 0.7435056963006083, 0.7435056567192078f},
    {UINT64_C(0xffffffffffffffff), 7, UINT64_C(0x405da438a39e8064), 0.25142885573188245,
     0.25142884254455566f},
    {2, UINT64_C(1099511627779), UINT64_C(0xbbf42a258c21dae5), 0.7341944066685139,
     0.7341943979263306f},
};

Test(random, literal_values) {
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
        cr_assert_eq(tsr__random_bits(known[k].seed, known[k].index), known[k].bits, "case %zu", k);
        cr_assert_eq(tsr__random_f64(known[k].seed, known[k].index), known[k].f64, "case %zu", k);
        cr_assert_eq(tsr__random_f32(known[k].seed, known[k].index), known[k].f32, "case %zu", k);
    }
}

Test(random, matches_spec_steps) {
    uint64_t seeds[] = {0, 1, 3, UINT64_C(0x8000000000000000), UINT64_MAX};
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++)
        for (uint64_t i = 0; i < 2000; i += 7) {
            uint64_t z = spec_bits(seeds[s], i);
            cr_assert_eq(tsr__random_bits(seeds[s], i), z);
            cr_assert_eq(tsr__random_f64(seeds[s], i), (double)(z >> 11) / 9007199254740992.0);
            cr_assert_eq(tsr__random_f32(seeds[s], i), (float)(z >> 40) / 16777216.0f);
        }
}

Test(random, unit_interval) {
    for (uint64_t i = 0; i < 100000; i++) {
        double d = tsr__random_f64(9, i);
        float f = tsr__random_f32(9, i);
        cr_assert(d >= 0.0 && d < 1.0);
        cr_assert(f >= 0.0f && f < 1.0f);
    }
}

/* The generic row bodies (the AVX2 and baseline copies; the picked copy is what
 * kernels::random_rows_match_formula runs, AVX-512 here) against the formula: every length up
 * to 41, so whole vectors and tails, at offsets near 2^53 and 2^62. */
Test(random, generic_rows_match_formula) {
    uint64_t seeds[] = {0, 42, UINT64_MAX};
    uint64_t starts[] = {0, 13, UINT64_C(1) << 53, (UINT64_C(1) << 62) - 7};
    double d[41];
    float f[41];
    for (size_t s = 0; s < 3; s++)
        for (size_t g = 0; g < 4; g++)
            for (int64_t len = 1; len <= 41; len++) {
                tsr__random_row_f64(d, seeds[s], starts[g], len);
                tsr__random_row_f32(f, seeds[s], starts[g], len);
                for (int64_t j = 0; j < len; j++) {
                    uint64_t z = spec_bits(seeds[s], starts[g] + (uint64_t)j);
                    cr_assert_eq(d[j], (double)(z >> 11) / 9007199254740992.0,
                                 "f64 seed %zu start %zu len %lld j %lld", s, g, (long long)len,
                                 (long long)j);
                    cr_assert_eq(f[j], (float)(z >> 40) / 16777216.0f,
                                 "f32 seed %zu start %zu len %lld j %lld", s, g, (long long)len,
                                 (long long)j);
                }
            }
}
