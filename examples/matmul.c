/* A blocked matrix product through the C API, on an embedded local cluster (or on a running
 * scheduler given as the first argument). Build against the installed library:
 *
 *     cc matmul.c $(pkg-config --cflags --libs tessera) -o matmul && ./matmul [HOST:PORT]
 *
 * It checks a few entries of C against dot products computed here from SPEC §2's random
 * formula, and prints the sum of C. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <tessera/tessera.h>

static double random_at(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static void progress(const tsr_progress *p, void *user) {
    (void)user;
    fprintf(stderr, "\r%llu/%llu tasks", (unsigned long long)p->done, (unsigned long long)p->total);
}

int main(int argc, char **argv) {
    enum { N = 1024, CHUNK = 256 };
    tsr_client *c;
    int rc = argc > 1 ? tsr_client_connect(argv[1], NULL, &c) : tsr_client_start_local(NULL, &c);
    if (rc) {
        fprintf(stderr, "cannot start: %s\n", tsr_last_error());
        return 1;
    }
    int64_t shape[2] = {N, N}, chunks[2] = {CHUNK, CHUNK};
    tsr_array *a = NULL, *b = NULL, *m = NULL, *total = NULL;
    if ((rc = tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 1, &a)) ||
        (rc = tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 2, &b)) || (rc = tsr_matmul(a, b, &m)) ||
        (rc = tsr_reduce(TSR_SUM, m, NULL, 0, &total)))
        goto fail;
    tsr_compute_options co;
    tsr_compute_options_default(&co);
    co.progress = progress;
    tsr_array *want[2] = {m, total};
    if ((rc = tsr_compute(c, want, 2, &co))) goto fail;
    fputc('\n', stderr);

    double *cbuf = malloc(sizeof(double) * N * N), sum;
    if (!cbuf) goto fail;
    if ((rc = tsr_array_read(m, cbuf, sizeof(double) * N * N)) ||
        (rc = tsr_array_read(total, &sum, sizeof sum))) {
        free(cbuf);
        goto fail;
    }
    int bad = 0;
    for (int t = 0; t < 16; t++) {
        int i = (t * 131) % N, j = (t * 577 + 3) % N;
        double ref = 0;
        for (int k = 0; k < N; k++)
            ref += random_at(1, (uint64_t)i * N + k) * random_at(2, (uint64_t)k * N + j);
        if (fabs(cbuf[i * N + j] - ref) > 1e-9 * fabs(ref)) {
            fprintf(stderr, "C[%d,%d] = %.17g, expected %.17g\n", i, j, cbuf[i * N + j], ref);
            bad = 1;
        }
    }
    free(cbuf);
    printf("sum(A @ B) = %.17g (%s)\n", sum, bad ? "MISMATCH" : "spot checks ok");
    tsr_array_free(total);
    tsr_array_free(m);
    tsr_array_free(b);
    tsr_array_free(a);
    tsr_client_free(c);
    return bad;
fail:
    fprintf(stderr, "error: %s (%s)\n", tsr_client_errmsg(c), tsr_strerror(rc));
    tsr_array_free(total);
    tsr_array_free(m);
    tsr_array_free(b);
    tsr_array_free(a);
    tsr_client_free(c);
    return 1;
}
