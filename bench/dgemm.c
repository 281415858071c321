/* The limit a blocked matmul is measured against: one cblas_dgemm call on the whole matrices,
 * with OpenBLAS's own threads. Same inputs as examples/matmul.json (SPEC §2 random, seeds 1, 2).
 * Usage: dgemm N THREADS  — prints "seconds gflops". */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double rnd(uint64_t s, uint64_t i) {
    uint64_t z = s + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4096;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    openblas_set_num_threads(threads);
    size_t nn = (size_t)n * n;
    double *a = malloc(nn * 8), *b = malloc(nn * 8), *c = malloc(nn * 8);
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < nn; i++) {
        a[i] = rnd(1, i);
        b[i] = rnd(2, i);
    }
    double t0 = now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
    double t = now() - t0;
    double sum = 0;
    for (size_t i = 0; i < nn; i++) sum += c[i];
    printf("%.6f %.2f %.17g\n", t, 2.0 * n * n * (double)n / t * 1e-9, sum);
    free(a);
    free(b);
    free(c);
    return 0;
}
