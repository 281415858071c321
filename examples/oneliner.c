/* Dask's one-liner `(a @ b).sum()` in a few lines of C, on arrays made from this program's own
 * memory, plus a second result that reuses the persisted product instead of computing it again
 * (and a scope, so that no intermediate is freed by hand):
 *
 *     ab = a @ b; ab.persist(); print(ab.sum(), (ab * 2 + 1).mean())
 *
 * Build against the installed library:
 *
 *     cc oneliner.c $(pkg-config --cflags --libs tessera) -o oneliner && ./oneliner [HOST:PORT]
 *
 * Without an address it starts an embedded local cluster (the `tessera` executable named by
 * $TESSERA_EXE, else the installed one). Prints "sum S" and "mean M". */
#include <stdio.h>
#include <stdlib.h>

#include <tessera/tessera.h>

enum { N = 300, CHUNK = 100 };

int main(int argc, char **argv) {
    /* The inputs: any memory of the program's; tsr_from_buffer copies it at the call. */
    double *a = malloc(sizeof(double) * N * N), *b = malloc(sizeof(double) * N * N);
    if (!a || !b) return 1;
    for (int i = 0; i < N * N; i++) {
        a[i] = (double)(i % 17) / 17.0 - 0.5;
        b[i] = (double)(i % 13) / 13.0;
    }
    tsr_client *c;
    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.tessera_path = getenv("TESSERA_EXE");
    int rc = argc > 1 ? tsr_client_connect(argv[1], NULL, &c) : tsr_client_start_local(&lo, &c);
    if (rc) {
        fprintf(stderr, "cannot start: %s\n", tsr_last_error());
        return 1;
    }
    int64_t shape[2] = {N, N}, chunks[2] = {CHUNK, CHUNK};
    tsr_array *A, *B, *AB, *t, *u, *sum, *mean;
    double s = 0, m = 0;
    /* Every handle made inside the scope is freed at its end: no tsr_array_free per
     * intermediate. */
    tsr_scope_begin(c);
    if ((rc = tsr_from_buffer(c, a, TSR_FLOAT64, 2, shape, chunks, &A)) ||
        (rc = tsr_from_buffer(c, b, TSR_FLOAT64, 2, shape, chunks, &B)) ||
        (rc = tsr_matmul(A, B, &AB)) || (rc = tsr_persist(c, &AB, 1, NULL)) ||
        (rc = tsr_sum_all(AB, &sum)) || (rc = tsr_compute_scalar(sum, &s)) ||
        (rc = tsr_mul_scalar(AB, 2.0, &t)) || (rc = tsr_add_scalar(t, 1.0, &u)) ||
        (rc = tsr_mean_all(u, &mean)) || (rc = tsr_compute_scalar(mean, &m))) {
        fprintf(stderr, "failed: %s: %s\n", tsr_strerror(rc), tsr_client_errmsg(c));
    } else {
        printf("sum %.17g\nmean %.17g\n", s, m);
    }
    tsr_scope_end(c);
    free(a); /* already copied: the arrays never needed these after tsr_from_buffer */
    free(b);
    tsr_client_free(c);
    return rc ? 1 : 0;
}
