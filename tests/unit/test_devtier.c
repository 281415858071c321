/* The device tier's state machine (worker/devtier.c) on the fake device (kernels/fakedev.c,
 * device memory in host memory): copies in and out, clean and dirty copies, least recently used
 * eviction under the limit with write-back of dirty copies, busy copies that stay, prefetch that
 * never evicts, and orphaned copies given back. The "kernels" here write device memory directly,
 * which the fake device allows (its device pointers are host pointers). */
#include <criterion/criterion.h>
#include <string.h>

#include "worker/worker.h"

#define N 4096 /* bytes per buffer */

static tsr__devtier tier;
static char err[256];

static void open_tier(int64_t limit) {
    int rc = tsr__devtier_open(&tier, tsr__devops_fake(), 0, limit, err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
}

static void close_tier(void) {
    tsr__devtier_close(&tier);
    tsr__devtier_destroy(&tier);
}

static tsr__buf *buf_with(unsigned char byte) {
    tsr__buf *b = tsr__buf_new(N);
    cr_assert(b);
    memset(b->data, byte, N);
    return b;
}

static int all_bytes(const void *p, unsigned char byte) {
    const unsigned char *c = p;
    for (size_t i = 0; i < N; i++)
        if (c[i] != byte) return 0;
    return 1;
}

static tsr__devstats stats(void) {
    tsr__devstats s;
    tsr__devtier_read(&tier, &s);
    return s;
}

Test(devtier, input_is_copied_in_once_and_reused) {
    open_tier(10 * N);
    tsr__buf *a = buf_with(7);
    void *d = tsr__devtier_acquire(&tier, a, TSR__DEV_INPUT, err, sizeof err);
    cr_assert(d, "%s", err);
    cr_assert(d != a->data, "the device copy is memory of its own");
    cr_assert(all_bytes(d, 7));
    tsr__devtier_release(&tier, a, 0);
    void *d2 = tsr__devtier_acquire(&tier, a, TSR__DEV_INPUT, err, sizeof err);
    cr_assert_eq(d2, d, "a resident copy is used again");
    tsr__devtier_release(&tier, a, 0);
    tsr__devstats s = stats();
    cr_assert_eq(s.h2d_count, 1);
    cr_assert_eq(s.h2d_bytes, N);
    cr_assert_eq(s.used, N);
    cr_assert_eq(s.resident, 1);
    cr_assert_eq(s.dirty, 0);
    cr_assert_not(tsr__devtier_stale(&tier, a));
    tsr__buf_unref(a);
    close_tier();
}

Test(devtier, output_is_dirty_until_written_back) {
    open_tier(10 * N);
    tsr__buf *o = buf_with(0);
    void *d = tsr__devtier_acquire(&tier, o, TSR__DEV_OUTPUT, err, sizeof err);
    cr_assert(d, "%s", err);
    cr_assert_eq(stats().h2d_count, 0, "an output is not copied in");
    memset(d, 42, N); /* the kernel */
    tsr__devtier_release(&tier, o, 1);
    cr_assert(tsr__devtier_stale(&tier, o));
    cr_assert(all_bytes(o->data, 0), "the host bytes are untouched until written back");
    cr_assert_eq(tsr__devtier_writeback(&tier, o, err, sizeof err), 0, "%s", err);
    cr_assert(all_bytes(o->data, 42));
    cr_assert_not(tsr__devtier_stale(&tier, o));
    tsr__devstats s = stats();
    cr_assert_eq(s.d2h_count, 1);
    cr_assert_eq(s.d2h_bytes, N);
    /* A second write-back of a clean copy copies nothing. */
    cr_assert_eq(tsr__devtier_writeback(&tier, o, err, sizeof err), 0);
    cr_assert_eq(stats().d2h_count, 1);
    tsr__buf_unref(o);
    close_tier();
}

Test(devtier, eviction_is_least_recently_used_and_writes_dirty_copies_back) {
    open_tier(3 * N);
    tsr__buf *b[4];
    void *d[4];
    for (int k = 0; k < 3; k++) {
        b[k] = buf_with((unsigned char)k);
        d[k] = tsr__devtier_acquire(&tier, b[k], k == 1 ? TSR__DEV_OUTPUT : TSR__DEV_INPUT, err,
                                    sizeof err);
        cr_assert(d[k], "%s", err);
        if (k == 1) memset(d[k], 99, N);
        tsr__devtier_release(&tier, b[k], k == 1);
    }
    /* Use 0 again: 1 is now the least recently used, and dirty. */
    cr_assert(tsr__devtier_acquire(&tier, b[0], TSR__DEV_INPUT, err, sizeof err));
    tsr__devtier_release(&tier, b[0], 0);
    b[3] = buf_with(3);
    d[3] = tsr__devtier_acquire(&tier, b[3], TSR__DEV_INPUT, err, sizeof err);
    cr_assert(d[3], "%s", err);
    tsr__devtier_release(&tier, b[3], 0);
    tsr__devstats s = stats();
    cr_assert_eq(s.evicted, 1);
    cr_assert_eq(s.used, 3 * N, "never over the limit");
    cr_assert_eq(s.d2h_count, 1, "the dirty copy went back to the host before it left");
    cr_assert(all_bytes(b[1]->data, 99));
    cr_assert_not(tsr__devtier_stale(&tier, b[1]));
    /* 1 comes back as a clean copy with the kernel's bytes. */
    void *again = tsr__devtier_acquire(&tier, b[1], TSR__DEV_INPUT, err, sizeof err);
    cr_assert(again);
    cr_assert(all_bytes(again, 99));
    tsr__devtier_release(&tier, b[1], 0);
    cr_assert_eq(stats().evicted, 2, "the next oldest (2) made room");
    for (int k = 0; k < 4; k++) tsr__buf_unref(b[k]);
    close_tier();
}

Test(devtier, busy_copies_stay_and_a_task_that_cannot_fit_is_refused) {
    open_tier(2 * N);
    tsr__buf *a = buf_with(1), *b = buf_with(2), *c = buf_with(3);
    cr_assert(tsr__devtier_acquire(&tier, a, TSR__DEV_INPUT, err, sizeof err));
    cr_assert(tsr__devtier_acquire(&tier, b, TSR__DEV_INPUT, err, sizeof err));
    err[0] = '\0';
    cr_assert_null(tsr__devtier_acquire(&tier, c, TSR__DEV_INPUT, err, sizeof err));
    cr_assert(strstr(err, "do not fit"), "%s", err);
    cr_assert_eq(stats().evicted, 0, "busy copies are never evicted");
    tsr__devtier_release(&tier, a, 0);
    cr_assert(tsr__devtier_acquire(&tier, c, TSR__DEV_INPUT, err, sizeof err), "%s", err);
    cr_assert_eq(stats().evicted, 1);
    tsr__devtier_release(&tier, b, 0);
    tsr__devtier_release(&tier, c, 0);
    tsr__buf_unref(a);
    tsr__buf_unref(b);
    tsr__buf_unref(c);
    close_tier();
}

Test(devtier, prefetch_uses_free_room_only) {
    open_tier(2 * N);
    tsr__buf *a = buf_with(1), *b = buf_with(2), *c = buf_with(3);
    cr_assert(tsr__devtier_acquire(&tier, a, TSR__DEV_PREFETCH, err, sizeof err));
    cr_assert(tsr__devtier_acquire(&tier, b, TSR__DEV_INPUT, err, sizeof err));
    tsr__devtier_release(&tier, a, 0);
    tsr__devtier_release(&tier, b, 0);
    cr_assert_null(tsr__devtier_acquire(&tier, c, TSR__DEV_PREFETCH, err, sizeof err),
                   "a prefetch evicts nothing");
    tsr__devstats s = stats();
    cr_assert_eq(s.evicted, 0);
    cr_assert_eq(s.resident, 2);
    tsr__buf_unref(a);
    tsr__buf_unref(b);
    tsr__buf_unref(c);
    close_tier();
}

Test(devtier, prefetch_leaves_a_quarter_of_the_limit_for_the_next_task) {
    open_tier(4 * N);
    tsr__buf *b[5];
    for (int k = 0; k < 5; k++) b[k] = buf_with((unsigned char)k);
    for (int k = 0; k < 3; k++)
        cr_assert(tsr__devtier_acquire(&tier, b[k], TSR__DEV_PREFETCH, err, sizeof err));
    cr_assert_null(tsr__devtier_acquire(&tier, b[3], TSR__DEV_PREFETCH, err, sizeof err),
                   "a fourth prefetch would fill the last quarter");
    cr_assert(tsr__devtier_acquire(&tier, b[3], TSR__DEV_INPUT, err, sizeof err), "%s", err);
    cr_assert_null(tsr__devtier_acquire(&tier, b[4], TSR__DEV_INPUT, err, sizeof err),
                   "everything resident is held");
    for (int k = 0; k < 4; k++) tsr__devtier_release(&tier, b[k], 0);
    for (int k = 0; k < 5; k++) tsr__buf_unref(b[k]);
    close_tier();
}

Test(devtier, a_released_buffer_gives_its_device_memory_back) {
    open_tier(4 * N);
    tsr__buf *a = buf_with(5);
    void *d = tsr__devtier_acquire(&tier, a, TSR__DEV_OUTPUT, err, sizeof err);
    cr_assert(d);
    memset(d, 6, N);
    tsr__devtier_release(&tier, a, 1);
    cr_assert_eq(stats().used, N);
    tsr__buf_unref(a); /* the loop frees the chunk: no write-back, the copy is an orphan */
    cr_assert_eq(stats().resident, 0);
    cr_assert_eq(stats().used, N, "the GPU thread gives the memory back, not the loop");
    tsr__devtier_reap(&tier);
    cr_assert_eq(stats().used, 0);
    cr_assert_eq(stats().d2h_count, 0, "a freed chunk is never written back");
    close_tier();
}

Test(devtier, invalidate_drops_an_idle_copy) {
    open_tier(4 * N);
    tsr__buf *a = buf_with(5);
    cr_assert(tsr__devtier_acquire(&tier, a, TSR__DEV_INPUT, err, sizeof err));
    tsr__devtier_release(&tier, a, 0);
    memset(a->data, 8, N); /* a host kernel wrote it */
    tsr__devtier_invalidate(&tier, a);
    cr_assert_eq(stats().used, 0);
    void *d = tsr__devtier_acquire(&tier, a, TSR__DEV_INPUT, err, sizeof err);
    cr_assert(d);
    cr_assert(all_bytes(d, 8), "copied in again with the host's new bytes");
    tsr__devtier_release(&tier, a, 0);
    tsr__buf_unref(a);
    close_tier();
}

Test(devtier, clean_one_writes_back_the_oldest_dirty_copy) {
    open_tier(4 * N);
    tsr__buf *a = buf_with(0), *b = buf_with(0);
    void *da = tsr__devtier_acquire(&tier, a, TSR__DEV_OUTPUT, err, sizeof err);
    void *db = tsr__devtier_acquire(&tier, b, TSR__DEV_OUTPUT, err, sizeof err);
    memset(da, 1, N);
    memset(db, 2, N);
    tsr__devtier_release(&tier, a, 1);
    tsr__devtier_release(&tier, b, 1);
    cr_assert_eq(tsr__devtier_clean_one(&tier, err, sizeof err), 1);
    cr_assert(all_bytes(a->data, 1));
    cr_assert(tsr__devtier_stale(&tier, b));
    cr_assert_eq(tsr__devtier_clean_one(&tier, err, sizeof err), 1);
    cr_assert(all_bytes(b->data, 2));
    cr_assert_eq(tsr__devtier_clean_one(&tier, err, sizeof err), 0);
    tsr__buf_unref(a);
    tsr__buf_unref(b);
    close_tier();
}

Test(devtier, default_limit_leaves_room_for_the_runtime) {
    setenv("TESSERA_FAKE_GPU_MEMORY", "4294967296", 1);
    open_tier(0);
    cr_assert_eq(tier.limit, 4294967296ull - 4294967296ull / 10);
    close_tier();
    unsetenv("TESSERA_FAKE_GPU_MEMORY");
}
