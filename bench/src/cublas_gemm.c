/* The limit a GPU worker's blocked matmul is measured against (bench/gpu/run): one cuBLAS gemm
 * on the whole N x N matrices, inputs already in device memory, default math mode (no TF32), after
 * one untimed warm-up call. Inputs follow SPEC §2's random formula (seeds 1 and 2), made on the
 * host and copied in before timing.
 * Usage: cublas_gemm d|s N [REPS]   prints "seconds tflops" (the median of REPS calls, default 5),
 * or exits 77 when there is no device. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
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

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));                            \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 3 || (argv[1][0] != 'd' && argv[1][0] != 's')) {
        fprintf(stderr, "usage: cublas_gemm d|s N [REPS]\n");
        return 2;
    }
    int dbl = argv[1][0] == 'd';
    size_t n = (size_t)atol(argv[2]);
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (n == 0 || reps < 1 || reps > 100) return 2;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        fprintf(stderr, "cublas_gemm: no CUDA device\n");
        return 77;
    }
    size_t es = dbl ? sizeof(double) : sizeof(float), bytes = n * n * es;
    void *h = malloc(bytes);
    void *a, *b, *c;
    if (!h) return 1;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaMalloc(&c, bytes));
    for (int m = 0; m < 2; m++) {
        for (size_t i = 0; i < n * n; i++) {
            if (dbl)
                ((double *)h)[i] = rnd((uint64_t)m + 1, i);
            else
                ((float *)h)[i] = (float)rnd((uint64_t)m + 1, i);
        }
        CK(cudaMemcpy(m ? b : a, h, bytes, cudaMemcpyHostToDevice));
    }
    free(h);
    cublasHandle_t hd;
    if (cublasCreate(&hd) != CUBLAS_STATUS_SUCCESS) return 1;
    cublasSetMathMode(hd, CUBLAS_DEFAULT_MATH);
    double t[101];
    for (int r = 0; r <= reps; r++) {
        double one = 1, zero = 0;
        float onef = 1, zerof = 0;
        CK(cudaDeviceSynchronize());
        double t0 = now();
        /* Row-major C = A B is column-major C^T = B^T A^T: the same call with A and B swapped. */
        cublasStatus_t st = dbl ? cublasDgemm(hd, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)n, (int)n,
                                              &one, b, (int)n, a, (int)n, &zero, c, (int)n)
                                : cublasSgemm(hd, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)n, (int)n,
                                              &onef, b, (int)n, a, (int)n, &zerof, c, (int)n);
        if (st != CUBLAS_STATUS_SUCCESS) {
            fprintf(stderr, "cublas gemm failed: %d\n", (int)st);
            return 1;
        }
        CK(cudaDeviceSynchronize());
        t[r] = now() - t0; /* t[0] is the warm-up */
    }
    qsort(t + 1, (size_t)reps, sizeof *t, cmp);
    double med = t[1 + reps / 2];
    printf("%.6f %.2f\n", med, 2.0 * (double)n * n * n / med / 1e12);
    cublasDestroy(hd);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    return 0;
}
