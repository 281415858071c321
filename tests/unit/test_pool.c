/* The worker's host memory node (worker/pool.c): chunk accounting, reuse by size class, the
 * pool's cap and eviction, draining, and buffers released from other threads. References are the
 * documented rules (worker.h, ARCHITECTURE.md "Buffers and memory") re-derived here: classes are
 * eight per power of two, rounded up. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "worker/worker.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* The capacity a buffer of size bytes gets: size rounded up to an eighth of its power of two. */
static size_t want_cap(size_t size) {
    size_t p = 1;
    while (p * 2 <= size) p *= 2;
    size_t step = p / 8;
    return (size + step - 1) / step * step;
}

static uint64_t bytes(tsr__chunkmem *m) {
    return atomic_load(&m->bytes);
}

Test(pool, counts_reuses_and_rounds_by_class) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 64 * MiB);
    size_t sizes[] = {64 * KiB, 100 * KiB, 128 * KiB + 1, 600 * KiB, MiB, 3 * MiB + 5, 9 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t s = sizes[i];
        tsr__buf *b = tsr__chunkmem_new(&m, s);
        cr_assert(b);
        cr_assert_eq(b->size, s);
        cr_assert_eq(b->cap, want_cap(s), "size %zu: cap %zu, want %zu", s, b->cap, want_cap(s));
        cr_assert_eq((uintptr_t)b->data % 64, 0);
        if (s >= 2 * MiB) cr_assert_eq((uintptr_t)b->data % (2 * MiB), 0, "2 MiB aligned");
        cr_assert_eq(bytes(&m), s);
        memset(b->data, 0xab, s); /* all of it is usable */
        void *data = b->data;
        tsr__chunkmem_unref(&m, b);
        cr_assert_eq(bytes(&m), 0);
        tsr__poolstats ps;
        tsr__chunkmem_read(&m, &ps);
        cr_assert_eq(ps.pooled, want_cap(s), "freed: kept for reuse");
        /* Any size of the same class gets the same memory back. */
        size_t other = want_cap(s) - (s == want_cap(s) ? 0 : 1);
        tsr__buf *c = tsr__chunkmem_new(&m, other);
        cr_assert_eq(c->data, data, "size %zu: not reused", other);
        cr_assert_eq(c->size, other);
        cr_assert_eq(bytes(&m), other);
        tsr__chunkmem_unref(&m, c);
        tsr__chunkmem_drain(&m);
        tsr__chunkmem_read(&m, &ps);
        cr_assert_eq(ps.pooled, 0);
        cr_assert_eq(ps.mapped, 0, "drained: every mapping went");
    }
    tsr__chunkmem_destroy(&m);
}

Test(pool, small_buffers_are_counted_not_pooled) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 64 * MiB);
    tsr__buf *b = tsr__chunkmem_new(&m, 1000);
    tsr__buf *c = tsr__chunkmem_new(&m, 0);
    cr_assert(b && c && c->data);
    cr_assert_eq(bytes(&m), 1000);
    cr_assert_eq(atomic_load(&m.peak), 1000);
    tsr__buf_ref(b); /* a second holder: the bytes stay until the last goes */
    tsr__chunkmem_unref(&m, b);
    cr_assert_eq(bytes(&m), 1000);
    tsr__chunkmem_unref(&m, b);
    tsr__chunkmem_unref(&m, c);
    cr_assert_eq(bytes(&m), 0);
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 0);
    cr_assert_eq(atomic_load(&m.peak), 1000);
    tsr__chunkmem_destroy(&m);
}

/* The free lists never hold more than the cap: the least recently used class goes first. */
Test(pool, cap_evicts_least_recently_used_class) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 8 * MiB);
    tsr__buf *a[4], *big;
    for (int i = 0; i < 4; i++) a[i] = tsr__chunkmem_new(&m, MiB); /* class 1 MiB */
    big = tsr__chunkmem_new(&m, 4 * MiB);
    for (int i = 0; i < 4; i++) tsr__chunkmem_unref(&m, a[i]); /* 4 MiB pooled */
    tsr__chunkmem_unref(&m, big);                              /* 8 MiB: at the cap */
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 8 * MiB);
    cr_assert_eq(ps.evicted, 0);
    /* Use the 4 MiB class again, then free a 2 MiB buffer: the 1 MiB class is the older one. */
    big = tsr__chunkmem_new(&m, 4 * MiB);
    tsr__buf *two = tsr__chunkmem_new(&m, 2 * MiB);
    tsr__chunkmem_unref(&m, big);
    tsr__chunkmem_unref(&m, two);
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.evicted, 2, "two 1 MiB buffers make room for 2 MiB");
    cr_assert_eq(ps.pooled, 8 * MiB);
    /* A buffer larger than the cap is never kept. */
    tsr__buf *huge = tsr__chunkmem_new(&m, 16 * MiB);
    tsr__chunkmem_unref(&m, huge);
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 8 * MiB);
    cr_assert_eq(ps.mapped, ps.pooled, "only pooled memory is still mapped");
    tsr__chunkmem_destroy(&m);
}

Test(pool, no_pool_gives_everything_back) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 0);
    tsr__buf *b = tsr__chunkmem_new(&m, 3 * MiB), *c = tsr__chunkmem_new(&m, 256 * KiB);
    tsr__chunkmem_unref(&m, b);
    tsr__chunkmem_unref(&m, c);
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 0);
    cr_assert_eq(ps.mapped, 0);
    cr_assert_eq(bytes(&m), 0);
    tsr__chunkmem_destroy(&m);
}

/* Slab blocks (classes up to 1 MiB) are distinct and do not overlap while held. */
Test(pool, slab_blocks_are_disjoint) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 64 * MiB);
    enum { N = 40 };
    tsr__buf *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = tsr__chunkmem_new(&m, 192 * KiB);
        memset(b[i]->data, i, 192 * KiB);
    }
    for (int i = 0; i < N; i++) {
        const unsigned char *p = b[i]->data;
        cr_assert(p[0] == i && p[192 * KiB - 1] == i, "block %d was overwritten", i);
    }
    for (int i = 0; i < N; i++) tsr__chunkmem_unref(&m, b[i]);
    cr_assert_eq(bytes(&m), 0);
    tsr__chunkmem_destroy(&m);
}

/* Executors allocate while the loop frees: the counters and lists stay exact. */
typedef struct churn {
    tsr__chunkmem *m;
    int seed;
} churn;

static void *churn_main(void *arg) {
    churn *c = arg;
    for (int i = 0; i < 2000; i++) {
        size_t s = (size_t)(64 + ((i * 7 + c->seed * 13) % 200)) * KiB;
        tsr__buf *b = tsr__chunkmem_new(c->m, s);
        if (!b) return (void *)1;
        ((unsigned char *)b->data)[s - 1] = 1;
        tsr__chunkmem_unref(c->m, b);
    }
    return NULL;
}

Test(pool, threads_take_and_give_back) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 4 * MiB);
    pthread_t th[4];
    churn c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (churn){&m, i};
        pthread_create(&th[i], NULL, churn_main, &c[i]);
    }
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        cr_assert_null(rc);
    }
    cr_assert_eq(bytes(&m), 0);
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert(ps.pooled <= 4 * MiB);
    cr_assert(ps.hits > 0);
    tsr__chunkmem_drain(&m);
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.mapped, 0);
    tsr__chunkmem_destroy(&m);
}
