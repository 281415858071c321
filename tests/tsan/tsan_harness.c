/* A standalone ThreadSanitizer harness for the threaded paths (Criterion's runner is not built
 * for TSan here): an embedded local cluster of TSan-built `tessera` processes (each worker's loop
 * thread handing tasks to two pinned executors and taking results back), a client computing on
 * it while a second thread polls tsr_client_progress() and a third calls tsr_client_interrupt().
 * Results are checked against naive loops over SPEC §2's random formula. Exit status 0 only when
 * every check passed; run.sh fails the test when any process wrote a TSan report. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tessera/tessera.h>

static double random_at(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "tsan_harness: FAIL %s:%d: ", __FILE__, __LINE__);                     \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

typedef struct poller {
    tsr_client *c;
    atomic_int stop;
    long polls, running_seen;
} poller;

static void *poll_main(void *arg) {
    poller *p = arg;
    struct timespec ts = {0, 200 * 1000};
    while (!atomic_load(&p->stop)) {
        tsr_progress pr;
        int r = tsr_client_progress(p->c, &pr);
        p->polls++;
        if (r == 1) p->running_seen++;
        if (pr.done > pr.total) {
            fprintf(stderr, "tsan_harness: progress done %llu > total %llu\n",
                    (unsigned long long)pr.done, (unsigned long long)pr.total);
            failures++;
        }
        nanosleep(&ts, NULL);
    }
    return NULL;
}

typedef struct interrupter {
    tsr_client *c;
    int delay_ms;
} interrupter;

static void *interrupt_main(void *arg) {
    interrupter *it = arg;
    struct timespec ts = {it->delay_ms / 1000, (long)(it->delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    tsr_client_interrupt(it->c);
    return NULL;
}

/* C = A @ B for random A (seed 1) and B (seed 2) of n x n in chunks of ch, then sum(C); checks
 * every element of C against a naive product and the sum against the naive sum. */
static void matmul_round(tsr_client *c, int n, int ch) {
    int64_t shape[2] = {n, n}, chunks[2] = {ch, ch};
    tsr_array *a = NULL, *b = NULL, *m = NULL, *s = NULL;
    int rc = tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 1, &a);
    if (!rc) rc = tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 2, &b);
    if (!rc) rc = tsr_matmul(a, b, &m);
    if (!rc) rc = tsr_reduce(TSR_SUM, m, NULL, 0, &s);
    CHECK(rc == 0, "building the graph: %s", tsr_client_errmsg(c));

    poller p = {.c = c};
    pthread_t th;
    pthread_create(&th, NULL, poll_main, &p);
    tsr_array *want[2] = {m, s};
    if (!rc) rc = tsr_compute(c, want, 2, NULL);
    atomic_store(&p.stop, 1);
    pthread_join(th, NULL);
    CHECK(rc == 0, "compute n=%d chunk=%d: %s", n, ch, tsr_client_errmsg(c));

    double *got = malloc(sizeof(double) * (size_t)n * (size_t)n), sum = 0;
    if (!rc) rc = tsr_array_read(m, got, sizeof(double) * (size_t)n * (size_t)n);
    if (!rc) rc = tsr_array_read(s, &sum, sizeof sum);
    CHECK(rc == 0, "read: %s", tsr_client_errmsg(c));
    if (!rc) {
        double ref_sum = 0;
        int bad = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double ref = 0;
                for (int k = 0; k < n; k++)
                    ref += random_at(1, (uint64_t)i * n + k) * random_at(2, (uint64_t)k * n + j);
                ref_sum += ref;
                if (fabs(got[(size_t)i * n + j] - ref) > 1e-12 * n) bad++;
            }
        CHECK(bad == 0, "%d of %d elements of C differ from the naive product", bad, n * n);
        CHECK(fabs(sum - ref_sum) <= 1e-9 * fabs(ref_sum), "sum %.17g, naive %.17g", sum, ref_sum);
    }
    free(got);
    tsr_array_free(s);
    tsr_array_free(m);
    tsr_array_free(b);
    tsr_array_free(a);
}

/* A computation interrupted from another thread returns TSR_EINTERRUPTED (or finishes first);
 * either way the client stays usable. */
static void interrupt_round(tsr_client *c) {
    int64_t shape[2] = {1024, 1024}, chunks[2] = {64, 64};
    tsr_array *a = NULL, *b = NULL, *m = NULL, *s = NULL;
    int rc = tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 3, &a);
    if (!rc) rc = tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 4, &b);
    if (!rc) rc = tsr_matmul(a, b, &m);
    if (!rc) rc = tsr_reduce(TSR_SUM, m, NULL, 0, &s);
    CHECK(rc == 0, "building the graph: %s", tsr_client_errmsg(c));
    interrupter it = {.c = c, .delay_ms = 30};
    pthread_t th;
    pthread_create(&th, NULL, interrupt_main, &it);
    if (!rc) rc = tsr_compute(c, &s, 1, NULL);
    pthread_join(th, NULL);
    CHECK(rc == 0 || rc == TSR_EINTERRUPTED, "interrupted compute returned %s: %s",
          tsr_strerror(rc), tsr_client_errmsg(c));
    tsr_array_free(s);
    tsr_array_free(m);
    tsr_array_free(b);
    tsr_array_free(a);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tsan_harness PATH-TO-TESSERA\n");
        return 2;
    }
    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.workers = 2;
    lo.threads = 2;
    lo.tessera_path = argv[1];
    tsr_client *c = NULL;
    if (tsr_client_start_local(&lo, &c) != 0) {
        fprintf(stderr, "tsan_harness: cannot start a local cluster: %s\n", tsr_last_error());
        return 1;
    }
    matmul_round(c, 96, 32); /* 3x3x3 blocks: k-chains and transfers between two workers */
    matmul_round(c, 64, 8);  /* 512 tiny tasks: the executors' hand-off under load */
    interrupt_round(c);
    matmul_round(c, 48, 16); /* the client still computes after an interrupt */
    tsr_client_free(c);

    /* A GPU worker on the fake device (kernels/fakedev.c) beside a CPU worker, with a device so
     * small that copies are evicted and written back: the GPU thread, the loop (peers' gets
     * waiting for write-backs, chunks freed while their copies are resident) and the device
     * tier's lock. */
    setenv("TESSERA_FAKE_GPU", "1", 1);
    setenv("TESSERA_FAKE_GPU_MEMORY", "65536", 1);
    tsr_local_options_default(&lo);
    lo.workers = 1;
    lo.threads = 1;
    lo.gpus = "0";
    lo.tessera_path = argv[1];
    if (tsr_client_start_local(&lo, &c) != 0) {
        fprintf(stderr, "tsan_harness: cannot start a local cluster with a GPU worker: %s\n",
                tsr_last_error());
        return 1;
    }
    matmul_round(c, 96, 32);
    matmul_round(c, 64, 8);
    tsr_client_free(c);
    unsetenv("TESSERA_FAKE_GPU");

    /* Workers with a memory limit far below the job's chunks: the spill thread writing and
     * reading back while the loop frees, fetches and serves. */
    tsr_local_options_default(&lo);
    lo.workers = 2;
    lo.threads = 1;
    lo.memory_limit = 1 << 20;
    lo.tessera_path = argv[1];
    if (tsr_client_start_local(&lo, &c) != 0) {
        fprintf(stderr, "tsan_harness: cannot start a local cluster with memory limits: %s\n",
                tsr_last_error());
        return 1;
    }
    matmul_round(c, 384, 128); /* 128 KiB chunks: spilled */
    tsr_client_free(c);
    printf("tsan_harness: %d failures\n", failures);
    return failures ? 1 : 0;
}
