/* The limit a blocked matmul is measured against: one cblas_dgemm (or cblas_sgemm) call on the
 * whole matrices with OpenBLAS's own threads, after one untimed warm-up call (thread start-up,
 * page faults). Inputs follow SPEC §2's random formula (seeds 1 and 2), like the bench programs.
 * Usage: gemm d|s N THREADS   prints "seconds gflops checksum".
 *
 * With `tile`, the rate one single-threaded worker's kernel can reach on one chunk: repeated
 * B x B x B accumulating products (beta = 1, as in a matmul k-chain) on the same in-cache tiles
 * for about half a second, after a warm-up call.
 * Usage: gemm tile d|s B   prints "gflops microseconds_per_call". */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int tile(int dbl, int b) {
    openblas_set_num_threads(1);
    size_t nn = (size_t)b * b, es = dbl ? sizeof(double) : sizeof(float);
    void *x = malloc(nn * es), *y = malloc(nn * es), *z = calloc(nn, es);
    if (!x || !y || !z) return 1;
    for (size_t i = 0; i < nn; i++) {
        if (dbl) {
            ((double *)x)[i] = rnd(1, i);
            ((double *)y)[i] = rnd(2, i);
        } else {
            ((float *)x)[i] = (float)rnd(1, i);
            ((float *)y)[i] = (float)rnd(2, i);
        }
    }
    long calls = -1;
    double t0 = 0, t = 0;
    do {
        if (calls == 0) t0 = now(); /* call 0 was the warm-up */
        if (dbl)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, b, b, 1.0, x, b, y, b, 1.0, z,
                        b);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, b, b, 1.0f, x, b, y, b, 1.0f,
                        z, b);
        calls++;
        t = now() - t0;
    } while (calls < 1 || t < 0.5);
    printf("%.2f %.1f\n", 2.0 * b * b * (double)b * calls / t * 1e-9, t / calls * 1e6);
    free(x);
    free(y);
    free(z);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "tile") && (argv[2][0] == 'd' || argv[2][0] == 's') &&
        atoi(argv[3]) > 0)
        return tile(argv[2][0] == 'd', atoi(argv[3]));
    if (argc != 4 || (argv[1][0] != 'd' && argv[1][0] != 's')) {
        fprintf(stderr, "usage: gemm d|s N THREADS | gemm tile d|s B\n");
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
