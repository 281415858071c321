/* The progress bar `run` and `submit` draw on stderr when it is a terminal: tasks done/total,
 * percent, rate, elapsed, ETA. Redrawn at most 10 times a second, on one line. */
#include <stdio.h>
#include <time.h>

#include "cli.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_time(double s, char *out, size_t size) {
    if (s < 0 || s > 360000) {
        snprintf(out, size, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(out, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, size, "%02ld:%02ld", t / 60, t % 60);
}

void cli_progress_cb(const tsr_progress *p, void *user) {
    cli_progress *bar = user;
    if (!bar->enabled || bar->finished) return;
    double t = now();
    int final = p->total && p->done >= p->total;
    if (!final && t - bar->last < 0.1) return;
    bar->last = t;
    enum { WIDTH = 30 };
    double frac = p->total ? (double)p->done / (double)p->total : 0;
    int fill = (int)(frac * WIDTH);
    char line[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) line[i] = i < fill ? '#' : '.';
    line[WIDTH] = 0;
    double rate = p->elapsed > 0 ? (double)p->done / p->elapsed : 0;
    char el[48], eta[48];
    fmt_time(p->elapsed, el, sizeof el);
    fmt_time(rate > 0 ? (double)(p->total - p->done) / rate : -1, eta, sizeof eta);
    fprintf(stderr, "\r[%s] %llu/%llu %3.0f%% %.0f tasks/s %s ETA %s%s\033[K", line,
            (unsigned long long)p->done, (unsigned long long)p->total, frac * 100, rate, el, eta,
            p->erred ? " (errors)" : "");
    bar->drawn = 1;
    if (final) {
        /* End the line now: printed outputs follow on stdout, which shares the terminal. */
        fputc('\n', stderr);
        bar->drawn = 0;
        bar->finished = 1;
    }
    fflush(stderr);
}

void cli_progress_end(cli_progress *bar) {
    if (bar->drawn) fputc('\n', stderr);
    bar->drawn = 0;
}
