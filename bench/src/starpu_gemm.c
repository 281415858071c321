/* StarPU's blocked gemm, the task-runtime peer of the matmul section: C = A B on N x N
 * column-major matrices cut into B x B tiles (views with ld = N, no copies), nb^3 gemm tasks
 * C[i][j] (+)= A[i][k] B[k][j] whose k-chain on each C tile StarPU orders by its implicit
 * sequential consistency (RW on C). One untimed iteration calibrates the history-based model
 * (dmda), then one is timed from the first submit to starpu_task_wait_for_all. Adapted from the
 * peer measurements' starpu_gemm3d.c, with float32 added. Workers and scheduler come from
 * STARPU_NCPU and STARPU_SCHED. Usage: starpu_gemm d|s N B   prints "seconds gflops tasks". */
#include <cblas.h>
#include <starpu.h>
#include <stdio.h>
#include <stdlib.h>

static void gemm_cpu(void *descr[], void *arg) {
    int dbl;
    double beta;
    starpu_codelet_unpack_args(arg, &dbl, &beta);
    int m = STARPU_MATRIX_GET_NX(descr[2]), n = STARPU_MATRIX_GET_NY(descr[2]);
    int k = STARPU_MATRIX_GET_NY(descr[0]);
    int lda = STARPU_MATRIX_GET_LD(descr[0]), ldb = STARPU_MATRIX_GET_LD(descr[1]);
    int ldc = STARPU_MATRIX_GET_LD(descr[2]);
    if (dbl)
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0,
                    (double *)STARPU_MATRIX_GET_PTR(descr[0]), lda,
                    (double *)STARPU_MATRIX_GET_PTR(descr[1]), ldb, beta,
                    (double *)STARPU_MATRIX_GET_PTR(descr[2]), ldc);
    else
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f,
                    (float *)STARPU_MATRIX_GET_PTR(descr[0]), lda,
                    (float *)STARPU_MATRIX_GET_PTR(descr[1]), ldb, (float)beta,
                    (float *)STARPU_MATRIX_GET_PTR(descr[2]), ldc);
}

static struct starpu_perfmodel model_d = {.type = STARPU_HISTORY_BASED,
                                          .symbol = "tessera_bench_dgemm"};
static struct starpu_perfmodel model_s = {.type = STARPU_HISTORY_BASED,
                                          .symbol = "tessera_bench_sgemm"};
static struct starpu_codelet cl = {.cpu_funcs = {gemm_cpu},
                                   .nbuffers = 3,
                                   .modes = {STARPU_R, STARPU_R, STARPU_RW},
                                   .name = "gemm_tile"};

static double now(void) {
    return starpu_timing_now() * 1e-6;
}

int main(int argc, char **argv) {
    if (argc != 4 || (argv[1][0] != 'd' && argv[1][0] != 's')) {
        fprintf(stderr, "usage: starpu_gemm d|s N B\n");
        return 2;
    }
    int dbl = argv[1][0] == 'd';
    unsigned n = (unsigned)atoi(argv[2]), bs = (unsigned)atoi(argv[3]);
    if (!n || !bs || n % bs) {
        fprintf(stderr, "starpu_gemm: B must divide N\n");
        return 2;
    }
    unsigned nb = n / bs;
    size_t es = dbl ? sizeof(double) : sizeof(float), nn = (size_t)n * n;
    cl.model = dbl ? &model_d : &model_s;
    if (starpu_init(NULL) != 0) {
        fprintf(stderr, "starpu_init failed\n");
        return 1;
    }
    void *a, *b, *c;
    starpu_malloc(&a, nn * es);
    starpu_malloc(&b, nn * es);
    starpu_malloc(&c, nn * es);
    srand48(1);
    for (size_t i = 0; i < nn; i++) {
        if (dbl) {
            ((double *)a)[i] = drand48();
            ((double *)b)[i] = drand48();
        } else {
            ((float *)a)[i] = (float)drand48();
            ((float *)b)[i] = (float)drand48();
        }
    }
    starpu_data_handle_t ha, hb, hc;
    starpu_matrix_data_register(&ha, STARPU_MAIN_RAM, (uintptr_t)a, n, n, n, es);
    starpu_matrix_data_register(&hb, STARPU_MAIN_RAM, (uintptr_t)b, n, n, n, es);
    starpu_matrix_data_register(&hc, STARPU_MAIN_RAM, (uintptr_t)c, n, n, n, es);
    struct starpu_data_filter fx = {.filter_func = starpu_matrix_filter_block, .nchildren = nb};
    struct starpu_data_filter fy = {.filter_func = starpu_matrix_filter_vertical_block,
                                    .nchildren = nb};
    starpu_data_map_filters(ha, 2, &fx, &fy);
    starpu_data_map_filters(hb, 2, &fx, &fy);
    starpu_data_map_filters(hc, 2, &fx, &fy);
    double t = 0;
    for (int rep = 0; rep < 2; rep++) {
        double t0 = now();
        for (unsigned i = 0; i < nb; i++)
            for (unsigned j = 0; j < nb; j++)
                for (unsigned k = 0; k < nb; k++) {
                    double beta = k == 0 ? 0.0 : 1.0;
                    int ret = starpu_task_insert(
                        &cl, STARPU_R, starpu_data_get_sub_data(ha, 2, i, k), STARPU_R,
                        starpu_data_get_sub_data(hb, 2, k, j), STARPU_RW,
                        starpu_data_get_sub_data(hc, 2, i, j), STARPU_VALUE, &dbl, sizeof dbl,
                        STARPU_VALUE, &beta, sizeof beta, STARPU_FLOPS, 2.0 * bs * (double)bs * bs,
                        0);
                    if (ret) {
                        fprintf(stderr, "starpu_task_insert failed: %d\n", ret);
                        return 1;
                    }
                }
        starpu_task_wait_for_all();
        t = now() - t0;
    }
    starpu_data_unpartition(ha, STARPU_MAIN_RAM);
    starpu_data_unpartition(hb, STARPU_MAIN_RAM);
    starpu_data_unpartition(hc, STARPU_MAIN_RAM);
    starpu_data_unregister(ha);
    starpu_data_unregister(hb);
    starpu_data_unregister(hc);
    printf("%.6f %.2f %u\n", t, 2.0 * n * n * (double)n / t * 1e-9, nb * nb * nb);
    starpu_free(a);
    starpu_free(b);
    starpu_free(c);
    starpu_shutdown();
    return 0;
}
