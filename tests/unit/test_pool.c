/* The worker's host memory node (worker/pool.c): chunk accounting, reuse by size class, the
 * pool's cap and eviction, draining, and buffers released from other threads. References are the
 * documented rules (worker.h, ARCHITECTURE.md "Buffers and memory") re-derived here: classes are
 * eight per power of two, rounded up. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
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

/* A slab whose blocks are all pooled is evicted whole: its huge page goes back as one instead of
 * block by block with MADV_DONTNEED (which splits it; pool.c, evict_one_locked). */
Test(pool, a_slab_all_pooled_is_evicted_whole) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, MiB);
    tsr__buf *b[4];
    for (int i = 0; i < 4; i++) b[i] = tsr__chunkmem_new(&m, 512 * KiB); /* one slab of 4 */
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.mapped, 2 * MiB, "four 512 KiB blocks share one 2 MiB slab");
    tsr__chunkmem_unref(&m, b[0]);
    tsr__chunkmem_unref(&m, b[1]); /* 1 MiB pooled: at the cap */
    tsr__chunkmem_unref(&m, b[2]); /* over: one block evicted, the slab still has b[3] out */
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.evicted, 1);
    cr_assert_eq(ps.pooled, MiB);
    cr_assert_eq(ps.mapped, 2 * MiB);
    tsr__chunkmem_unref(&m, b[3]); /* every block left is pooled: the slab goes, whole */
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 0, "%llu bytes still pooled", (unsigned long long)ps.pooled);
    cr_assert_eq(ps.mapped, 0, "the slab is still mapped");
    cr_assert_eq(ps.evicted, 4);
    cr_assert_eq(bytes(&m), 0);
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

/* ---- the warm reserve (pool.c) ---- */

/* This process's resident memory, from /proc/self/status. */
static uint64_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert(f);
    char line[256];
    uint64_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %" SCNu64, &kib) == 1) break;
    fclose(f);
    return kib << 10;
}

static int in_warm(const tsr__chunkmem *m, const void *p) {
    return m->warm && (const char *)p >= m->warm &&
           (const char *)p < m->warm + m->nwarm * (2 * MiB);
}

/* Memory the pool keeps unused (pooled buffers and idle reserve granules) stays within its cap. */
static void assert_within_cap(tsr__chunkmem *m) {
    tsr__poolstats ps;
    tsr__chunkmem_read(m, &ps);
    cr_assert_leq(ps.pooled + ps.reserve_idle, m->cap, "pooled %" PRIu64 " + idle reserve %" PRIu64,
                  ps.pooled, ps.reserve_idle);
}

Test(pool, reserve_is_resident_and_serves_slabs_and_large_buffers) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 32 * MiB);
    uint64_t before = rss_bytes();
    tsr__chunkmem_reserve(&m, 32 * MiB + 5);
    uint64_t after = rss_bytes();
    cr_assert_geq(after, before + 30 * MiB, "reserve not resident: RSS %" PRIu64 " -> %" PRIu64,
                  before, after);
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.reserved, 32 * MiB, "rounded down to 2 MiB granules, at most the cap");
    cr_assert_eq(ps.reserve_idle, 32 * MiB);
    tsr__buf *big = tsr__chunkmem_new(&m, 3 * MiB), *small = tsr__chunkmem_new(&m, 256 * KiB);
    cr_assert(big && small);
    cr_assert(in_warm(&m, big->data) && in_warm(&m, small->data), "not from the reserve");
    cr_assert_eq((uintptr_t)big->data % (2 * MiB), 0);
    memset(big->data, 1, 3 * MiB);
    memset(small->data, 2, 256 * KiB);
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.reserve_idle, 32 * MiB - 4 * MiB - 2 * MiB, "3 MiB takes 2 granules, a slab 1");
    tsr__chunkmem_unref(&m, big);
    tsr__chunkmem_unref(&m, small);
    assert_within_cap(&m);
    cr_assert_eq(atomic_load(&m.bytes), 0);
    /* Idle: the lists are emptied, the reserve stays resident and whole. */
    tsr__chunkmem_drain(&m);
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 0);
    cr_assert_eq(ps.mapped, 0);
    cr_assert_eq(ps.reserve_idle, 32 * MiB);
    cr_assert_geq(rss_bytes(), before + 30 * MiB, "drain gave the reserve back");
    /* Near a memory limit: given back, yet still used (cold) for later buffers. */
    tsr__chunkmem_release(&m);
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.reserve_idle, 0);
    cr_assert_leq(rss_bytes(), before + 2 * MiB, "release kept the reserve resident");
    tsr__buf *again = tsr__chunkmem_new(&m, 2 * MiB);
    cr_assert(in_warm(&m, again->data));
    memset(again->data, 3, 2 * MiB);
    tsr__chunkmem_unref(&m, again);
    tsr__chunkmem_destroy(&m);
}

/* A buffer larger than the reserve is mapped on its own. Released, it is kept, and the reserve's
 * granules idle since start are given back instead, down to the cap: the least recently used
 * memory goes first (a chain of 64 MiB chunks on 32 MiB of idle reserve faulted every fetch's
 * destination in anew). Its next use is a hit. */
Test(pool, an_idle_reserve_gives_way_to_a_buffer_used_since) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 64 * MiB);
    tsr__chunkmem_reserve(&m, 32 * MiB);
    tsr__buf *huge = tsr__chunkmem_new(&m, 40 * MiB);
    cr_assert(huge && !in_warm(&m, huge->data));
    memset(huge->data, 1, 40 * MiB);
    void *where = huge->data;
    uint64_t before = rss_bytes();
    tsr__chunkmem_unref(&m, huge);
    assert_within_cap(&m);
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 40 * MiB, "the buffer was not kept");
    cr_assert_eq(ps.reserve_idle, 24 * MiB, "the reserve kept more than the cap leaves");
    cr_assert_leq(rss_bytes(), before - 6 * MiB, "the reserve's granules stayed resident");
    huge = tsr__chunkmem_new(&m, 40 * MiB);
    cr_assert_eq(huge->data, where);
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.hits, 1);
    /* The granules given back still serve buffers (cold). */
    tsr__buf *small = tsr__chunkmem_new(&m, 4 * MiB);
    cr_assert(in_warm(&m, small->data));
    memset(small->data, 2, 4 * MiB);
    tsr__chunkmem_unref(&m, small);
    tsr__chunkmem_unref(&m, huge);
    assert_within_cap(&m);
    tsr__chunkmem_destroy(&m);
}

/* Granules that an eviction gives back to the reserve while a release brings the pool down to
 * its cap stay resident: only granules idle before the release may go back to the system. */
Test(pool, granules_an_eviction_frees_stay_resident) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 4 * MiB);
    tsr__chunkmem_reserve(&m, 4 * MiB);
    tsr__buf *a = tsr__chunkmem_new(&m, 2 * MiB), *b = tsr__chunkmem_new(&m, 2 * MiB);
    tsr__buf *c = tsr__chunkmem_new(&m, 2 * MiB);
    cr_assert(in_warm(&m, a->data) && in_warm(&m, b->data) && !in_warm(&m, c->data));
    tsr__chunkmem_unref(&m, c);
    tsr__chunkmem_unref(&m, a);
    tsr__chunkmem_unref(&m, b); /* over the cap: the pool evicts down to it */
    assert_within_cap(&m);
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.reserve_idle, 4 * MiB, "reserve granules given back: %" PRIu64 " idle",
                 ps.reserve_idle);
    cr_assert_eq(ps.pooled, 0);
    tsr__chunkmem_destroy(&m);
}

Test(pool, reserve_moves_from_a_class_to_the_one_that_needs_it) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 4 * MiB);
    tsr__chunkmem_reserve(&m, 4 * MiB);
    tsr__buf *a = tsr__chunkmem_new(&m, 2 * MiB), *b = tsr__chunkmem_new(&m, 2 * MiB);
    cr_assert(in_warm(&m, a->data) && in_warm(&m, b->data) && a->data != b->data);
    tsr__chunkmem_unref(&m, a);
    tsr__chunkmem_unref(&m, b);
    assert_within_cap(&m);
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 4 * MiB, "the 2 MiB class keeps both");
    /* A 3.5 MiB buffer needs both granules: the 2 MiB class's pooled buffers give them up. */
    tsr__buf *c = tsr__chunkmem_new(&m, 3 * MiB + MiB / 2);
    cr_assert(c);
    cr_assert_eq((char *)c->data, m.warm, "not made from the reserve");
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 0);
    cr_assert_eq(ps.reserve_idle, 0);
    tsr__chunkmem_unref(&m, c);
    assert_within_cap(&m);
    tsr__chunkmem_destroy(&m);
}

Test(pool, buffers_outside_the_reserve_are_kept_only_within_the_cap) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 8 * MiB);
    tsr__chunkmem_reserve(&m, 4 * MiB);
    tsr__buf *v[5];
    for (int i = 0; i < 5; i++) v[i] = tsr__chunkmem_new(&m, 2 * MiB);
    int warm = 0;
    for (int i = 0; i < 5; i++) warm += in_warm(&m, v[i]->data);
    cr_assert_eq(warm, 2, "two granules of reserve, three buffers mapped");
    for (int i = 0; i < 5; i++) {
        tsr__chunkmem_unref(&m, v[i]);
        assert_within_cap(&m);
    }
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    cr_assert_eq(ps.pooled, 8 * MiB, "the cap's worth kept");
    cr_assert_eq(ps.mapped, 10 * MiB - ps.evicted * 2 * MiB);
    tsr__chunkmem_destroy(&m);
}

/* The VmFlags line of the mapping holding p, from /proc/self/smaps ("" when none is found). */
static void vm_flags(const void *p, char *out, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    cr_assert(f);
    char line[512];
    int inside = 0;
    out[0] = '\0';
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = a >= lo && a < hi;
        else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, n, "%s", line + 8);
            break;
        }
    }
    fclose(f);
}

static int has_flag(const char *flags, const char *flag) {
    char padded[520];
    snprintf(padded, sizeof padded, " %s ", flags);
    for (char *c = padded; *c; c++)
        if (*c == '\n') *c = ' ';
    char want[8];
    snprintf(want, sizeof want, " %s ", flag);
    return strstr(padded, want) != NULL;
}

/* What a mapping asks the kernel for: huge pages ("hg" in smaps), 4 KiB pages ("nh") or
 * nothing; and a pool maps its reserve, slabs and large buffers as it was told. */
Test(pool, mappings_ask_for_the_pages_they_were_told) {
    char flags[512];
    struct {
        int pages;
        const char *want, *absent;
    } cases[] = {{TSR__PAGES_SMALL, "nh", "hg"},
                 {TSR__PAGES_HUGE, "hg", "nh"},
                 {TSR__PAGES_NONE, NULL, NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *p = tsr__map_aligned(4 * MiB, cases[i].pages);
        cr_assert(p);
        vm_flags(p, flags, sizeof flags);
        cr_assert_neq(flags[0], '\0', "no smaps entry for the mapping");
        if (cases[i].want) {
            cr_assert(has_flag(flags, cases[i].want), "case %zu: want %s in VmFlags:%s", i,
                      cases[i].want, flags);
            cr_assert(!has_flag(flags, cases[i].absent), "case %zu: %s in VmFlags:%s", i,
                      cases[i].absent, flags);
        } else {
            cr_assert(!has_flag(flags, "hg") && !has_flag(flags, "nh"), "case %zu: VmFlags:%s", i,
                      flags);
        }
        tsr__unmap(p, 4 * MiB);
    }
    for (int small = 0; small < 2; small++) {
        tsr__chunkmem m;
        tsr__chunkmem_init(&m, 64 * MiB);
        if (small) tsr__chunkmem_set_pages(&m, TSR__PAGES_SMALL);
        tsr__chunkmem_reserve(&m, 4 * MiB);
        const char *want = small ? "nh" : "hg", *absent = small ? "hg" : "nh";
        /* One buffer from the reserve, one slab block, one large buffer mapped on its own. */
        tsr__buf *b[3] = {tsr__chunkmem_new(&m, 3 * MiB), tsr__chunkmem_new(&m, 256 * KiB),
                          tsr__chunkmem_new(&m, 6 * MiB)};
        for (int k = 0; k < 3; k++) {
            cr_assert(b[k]);
            vm_flags(b[k]->data, flags, sizeof flags);
            cr_assert(has_flag(flags, want) && !has_flag(flags, absent),
                      "pool %s, buffer %d: VmFlags:%s", small ? "4 KiB" : "huge", k, flags);
        }
        for (int k = 0; k < 3; k++) tsr__chunkmem_unref(&m, b[k]);
        tsr__chunkmem_destroy(&m);
    }
}

/* The probe times both kinds and returns the one its rule calls for: 4 KiB pages only when they
 * cost less than half of what a huge page does. */
Test(pool, the_probe_returns_the_pages_its_timings_call_for) {
    for (int round = 0; round < 3; round++) {
        double h = -1, s = -1;
        int pages = tsr__pages_probe(&h, &s);
        cr_assert_gt(h, 0.0);
        cr_assert_gt(s, 0.0);
        cr_assert_lt(h, 1000.0, "%.3f ms for 2 MiB", h);
        cr_assert_lt(s, 1000.0, "%.3f ms for 2 MiB", s);
        int want = s < 0.5 * h ? TSR__PAGES_SMALL : TSR__PAGES_HUGE;
        cr_assert_eq(pages, want, "huge %.3f ms, 4 KiB %.3f ms: pages %d", h, s, pages);
    }
}

/* The default cap is 64 MiB per executor thread, bounded by a tenth of the memory limit; an
 * explicit pool_bytes wins, and -1 turns the pool off. */
Test(pool, default_cap_scales_with_executor_threads) {
    tsr_worker_options o;
    tsr_worker_options_default(&o);
    o.memory_limit = 0;
    cr_assert_eq(tsr__worker_pool_cap(&o, 1), 64 * MiB);
    cr_assert_eq(tsr__worker_pool_cap(&o, 2), 128 * MiB);
    cr_assert_eq(tsr__worker_pool_cap(&o, 16), 1024 * MiB);
    o.memory_limit = (int64_t)(1024 * MiB);
    cr_assert_eq(tsr__worker_pool_cap(&o, 1), 64 * MiB, "64 MiB is under a tenth of 1 GiB");
    cr_assert_eq(tsr__worker_pool_cap(&o, 2), 1024 * MiB / 10, "a tenth of the limit is less");
    o.pool_bytes = 5 * MiB;
    cr_assert_eq(tsr__worker_pool_cap(&o, 8), 5 * MiB);
    o.pool_bytes = -1;
    cr_assert_eq(tsr__worker_pool_cap(&o, 8), 0);
}

/* Page kinds adapt: with the other kind's last touch made to look free, two new mappings whose
 * first 2 MiB took any time at all switch the kind; made to look endless, nothing does; and a
 * pool told its kind (no tsr__chunkmem_adapt) keeps it. Every buffer is mapped anew (no pool),
 * and each stays usable whatever its kind. */
static uint64_t adapt_run(int adapt, int start, double other_ms, int nbufs, int *pages_after) {
    tsr__chunkmem m;
    tsr__chunkmem_init(&m, 0);
    tsr__chunkmem_set_pages(&m, start);
    if (adapt)
        tsr__chunkmem_adapt(&m, start == TSR__PAGES_HUGE ? 0 : other_ms,
                            start == TSR__PAGES_SMALL ? 0 : other_ms);
    for (int k = 0; k < nbufs; k++) {
        tsr__buf *b = tsr__chunkmem_new(&m, 4 * MiB);
        cr_assert(b != NULL);
        memset(b->data, k + 1, 4 * MiB);
        cr_assert_eq(((unsigned char *)b->data)[4 * MiB - 1], k + 1);
        tsr__chunkmem_unref(&m, b);
    }
    tsr__poolstats ps;
    tsr__chunkmem_read(&m, &ps);
    *pages_after = ps.pages;
    tsr__chunkmem_destroy(&m);
    return ps.switches;
}

Test(pool, page_kind_follows_first_touch_costs) {
    int pages;
    /* The first touch sets this kind's cost; the other kind at 1e-9 ms: every touch is slow. */
    cr_assert_eq(adapt_run(1, TSR__PAGES_HUGE, 1e-9, 1, &pages), 0, "one slow touch is not a run");
    cr_assert_eq(pages, TSR__PAGES_HUGE);
    cr_assert_eq(adapt_run(1, TSR__PAGES_HUGE, 1e-9, 2, &pages), 1);
    cr_assert_eq(pages, TSR__PAGES_SMALL, "two slow touches in a row switch to 4 KiB pages");
    cr_assert_eq(adapt_run(1, TSR__PAGES_SMALL, 1e-9, 2, &pages), 1);
    cr_assert_eq(pages, TSR__PAGES_HUGE);
    cr_assert_eq(adapt_run(1, TSR__PAGES_HUGE, 1e9, 6, &pages), 0, "never slower than 2e9 ms");
    cr_assert_eq(pages, TSR__PAGES_HUGE);
    cr_assert_eq(adapt_run(0, TSR__PAGES_HUGE, 1e-9, 6, &pages), 0, "told its kind: kept");
    cr_assert_eq(pages, TSR__PAGES_HUGE);
}
