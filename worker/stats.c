/* The figures a worker piggybacks on every done message (`st`, PROTOCOL.md): memory (VmHWM and
 * VmRSS from /proc/self/status, read at most every few milliseconds; chunk bytes from the
 * worker's counters), executor busy time, tasks, and peer traffic with the wall time during
 * which at least one fetch was in progress; on a GPU worker, its device cache's figures as the
 * GPU tier keeps them in st->dev; with a memory limit, the disk tier's as it keeps them in
 * st->spill. Loop thread only. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/worker.h"

/* Reading /proc costs a few microseconds; done messages can come thousands of times a second. */
#define RSS_PERIOD 0.005

void tsr__stats_init(wstats *st) {
    memset(st, 0, sizeof *st);
    st->status_fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    st->rss_at = -1;
}

void tsr__stats_free(wstats *st) {
    if (st->status_fd >= 0) close(st->status_fd);
    st->status_fd = -1;
}

void tsr__stats_fetch_begin(wstats *st) {
    if (st->nfetch++ == 0) st->fetch_since = tsr__now();
}

void tsr__stats_fetch_end(wstats *st) {
    if (st->nfetch > 0 && --st->nfetch == 0) st->in_s += tsr__now() - st->fetch_since;
}

/* The value of "Key:   123 kB" in a /proc status text, in bytes; 0 when absent. */
static uint64_t status_kb(const char *text, const char *key) {
    const char *p = strstr(text, key);
    if (!p) return 0;
    p += strlen(key);
    while (*p == ' ' || *p == '\t') p++;
    return strtoull(p, NULL, 10) * 1024;
}

int tsr__read_rss(int fd, uint64_t *hwm, uint64_t *rss) {
    char text[4096];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n < 0) return -errno;
    text[n] = '\0';
    *hwm = status_kb(text, "\nVmHWM:");
    *rss = status_kb(text, "\nVmRSS:");
    return 0;
}

void tsr__stats_fill(tsr__worker *w, tsr__m_wstats *out) {
    wstats *st = &w->st;
    double now = tsr__now();
    if (st->status_fd >= 0 && (st->rss_at < 0 || now - st->rss_at >= RSS_PERIOD)) {
        uint64_t hwm, rss;
        if (tsr__read_rss(st->status_fd, &hwm, &rss) == 0) {
            st->rss_peak = hwm;
            st->rss = rss;
        }
        st->rss_at = now;
    }
    if (w->gpu && st->dev.on) {
        tsr__devstats ds;
        tsr__devtier_read(&w->dev, &ds);
        st->dev.used = ds.used;
        st->dev.h2d_bytes = ds.h2d_bytes;
        st->dev.d2h_bytes = ds.d2h_bytes;
        st->dev.evicted = ds.evicted;
    }
    *out = (tsr__m_wstats){
        .has = ~(uint64_t)0,
        .rss_peak = st->rss_peak,
        .rss = st->rss,
        .chunk_bytes = atomic_load_explicit(&w->mem.bytes, memory_order_relaxed),
        .chunk_peak = atomic_load_explicit(&w->mem.peak, memory_order_relaxed),
        .busy_s = st->busy_s,
        .tasks = st->tasks,
        .in_bytes = st->in_bytes,
        .in_s = st->in_s + (st->nfetch ? now - st->fetch_since : 0),
        .out_bytes = st->out_bytes,
        .dev_used = st->dev.used,
        .dev_limit = st->dev.limit,
        .h2d_bytes = st->dev.h2d_bytes,
        .d2h_bytes = st->dev.d2h_bytes,
        .dev_evicted = st->dev.evicted,
        .spilled_bytes = st->spill.spilled_bytes,
        .unspilled_bytes = st->spill.unspilled_bytes,
        .disk_bytes = st->spill.disk_bytes,
        .paused = st->spill.paused,
        .spill_s = st->spill.spill_s,
        .unspill_s = st->spill.unspill_s,
    };
    /* The device's figures only from a worker that has one: a CPU worker's st stays as it was. */
    if (!st->dev.on)
        out->has &= ~(TSR__M_BIT(wstats, dev_used) | TSR__M_BIT(wstats, dev_limit) |
                      TSR__M_BIT(wstats, h2d_bytes) | TSR__M_BIT(wstats, d2h_bytes) |
                      TSR__M_BIT(wstats, dev_evicted));
    /* The disk tier's only from a worker that has one (a memory limit); paused goes in every st
     * then, false included, so the scheduler always holds the worker's current state. */
    if (!st->spill.on)
        out->has &= ~(TSR__M_BIT(wstats, spilled_bytes) | TSR__M_BIT(wstats, unspilled_bytes) |
                      TSR__M_BIT(wstats, disk_bytes) | TSR__M_BIT(wstats, paused) |
                      TSR__M_BIT(wstats, spill_s) | TSR__M_BIT(wstats, unspill_s));
}
