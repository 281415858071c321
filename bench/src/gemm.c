/* The limit a blocked matmul is measured against: one cblas_dgemm (or cblas_sgemm) call on the
 * whole matrices with OpenBLAS's own threads, after one untimed warm-up call (thread start-up,
 * page faults). Inputs follow SPEC §2's random formula (seeds 1 and 2), like the bench programs.
 * Usage: gemm d|s N THREADS   prints "seconds gflops checksum". */
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
    if (argc != 4 || (argv[1][0] != 'd' && argv[1][0] != 's')) {
        fprintf(stderr, "usage: gemm d|s N THREADS\n");
        return 2;
    }
    int dbl = argv[1][0] == 'd';
    int n = atoi(argv[2]), threads = atoi(argv[3]);
    if (n <= 0 || threads <= 0) return 2;
    openblas_set_num_threads(threads);
    size_t nn = (size_t)n * n, es = dbl ? sizeof(double) : sizeof(float);
    void *a = malloc(nn * es), *b = malloc(nn * es), *c = malloc(nn * es);
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < nn; i++) {
        if (dbl) {
            ((double *)a)[i] = rnd(1, i);
            ((double *)b)[i] = rnd(2, i);
        } else {
            ((float *)a)[i] = (float)rnd(1, i);
            ((float *)b)[i] = (float)rnd(2, i);
        }
    }
    double t = 0;
    for (int rep = 0; rep < 2; rep++) {
        double t0 = now();
        if (dbl)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c,
                        n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                        c, n);
        t = now() - t0;
    }
    double sum = 0;
    for (size_t i = 0; i < nn; i++) sum += dbl ? ((double *)c)[i] : ((float *)c)[i];
    printf("%.6f %.2f %.17g\n", t, 2.0 * n * n * (double)n / t * 1e-9, sum);
    free(a);
    free(b);
    free(c);
    return 0;
}
