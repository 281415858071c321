/* What `run` and `submit` tell a person on stderr about a computation: the progress bar on a
 * terminal (tasks done/total, percent, rate, elapsed, ETA; redrawn at most 10 times a second on
 * one line), plain periodic lines instead when --progress forces progress off a terminal, the
 * summary line at the end, and the --report table per operation and line on spilling (from the
 * client's statistics, tsr_client_stats_json). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "top.h"

/* Seconds between plain progress lines. */
#define LINE_INTERVAL_S 1.0

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_init(cli_progress *bar, int mode) {
    memset(bar, 0, sizeof *bar);
    int tty = isatty(2);
    if (mode != CLI_PROGRESS_OFF && tty)
        bar->style = CLI_BAR;
    else if (mode == CLI_PROGRESS_FORCE)
        bar->style = CLI_LINES;
    else
        bar->style = CLI_QUIET;
}

void cli_progress_cb(const tsr_progress *p, void *user) {
    cli_progress *bar = user;
    if (bar->style == CLI_QUIET || bar->finished) return;
    double t = now();
    int final = p->total && p->done >= p->total;
    double every = bar->style == CLI_BAR ? 0.1 : LINE_INTERVAL_S;
    if (!final && bar->last > 0 && t - bar->last < every) return;
    bar->last = t;
    double frac = p->total ? (double)p->done / (double)p->total : 0;
    /* The first half second says little about the rate (cheap sources finish at once). */
    double rate =
        p->elapsed > 0 && (p->elapsed >= 0.5 || final) ? (double)p->done / p->elapsed : -1;
    char el[48], eta[48], r[32];
    top_fmt_clock(p->elapsed, el, sizeof el);
    top_fmt_clock(rate > 0 ? (double)(p->total - p->done) / rate : -1, eta, sizeof eta);
    top_fmt_rate(rate, r, sizeof r);
    if (bar->style == CLI_LINES) {
        fprintf(stderr, "progress: %llu/%llu tasks %3.0f%% %s tasks/s elapsed %s ETA %s%s\n",
                (unsigned long long)p->done, (unsigned long long)p->total, frac * 100, r, el, eta,
                p->erred ? " (errors)" : "");
        if (final) bar->finished = 1;
        fflush(stderr);
        return;
    }
    enum { WIDTH = 30 };
    int fill = (int)(frac * WIDTH);
    char line[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) line[i] = i < fill ? '#' : '.';
    line[WIDTH] = 0;
    fprintf(stderr, "\r[%s] %llu/%llu %3.0f%% %s tasks/s %s ETA %s%s\033[K", line,
            (unsigned long long)p->done, (unsigned long long)p->total, frac * 100, r, el, eta,
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

/* ---- the summary line and the report, from the run's statistics ---- */

static double num(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

/* "78.0 MiB": bytes in binary units, as people read transfer sizes. */
static void fmt_bytes(double b, char *out, size_t size) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (b >= 1024 && u < 5) {
        b /= 1024;
        u++;
    }
    snprintf(out, size, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

static json_t *load_stats(tsr_client *c) {
    char *text = tsr_client_stats_json(c);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return j;
}

void cli_summary(tsr_client *c) {
    json_t *j = load_stats(c);
    if (!j) return;
    double seconds = num(j, "seconds"), flops = 0;
    size_t k;
    const json_t *op;
    json_array_foreach(json_object_get(j, "ops"), k, op) flops += num(op, "flops");
    char moved[32], gf[48] = "";
    fmt_bytes(num(j, "moved_bytes"), moved, sizeof moved);
    if (flops > 0 && seconds > 0) snprintf(gf, sizeof gf, ", %.1f GFLOP/s", flops / seconds / 1e9);
    fprintf(stderr, "done: %.0f tasks in %.2f s%s, %s moved between workers\n", num(j, "tasks"),
            seconds, gf, moved);
    fflush(stderr);
    json_decref(j);
}

void cli_report(tsr_client *c) {
    json_t *j = load_stats(c);
    if (!j) return;
    const json_t *ops = json_object_get(j, "ops");
    /* The op column fits the longest name (fused chains: "fused(add,mul,sqrt)"). */
    int width = 12;
    size_t k;
    const json_t *op;
    json_array_foreach(ops, k, op) {
        const char *name = json_string_value(json_object_get(op, "op"));
        if (name && (int)strlen(name) > width) width = (int)strlen(name);
    }
    if (width > 64) width = 64;
    fprintf(stderr, "%-*s %8s %10s %10s %9s %12s\n", width, "op", "tasks", "kernel s", "mean ms",
            "GFLOP/s", "moved");
    double tasks = 0, secs = 0, flops = 0;
    json_array_foreach(ops, k, op) {
        double n = num(op, "tasks"), s = num(op, "seconds"), f = num(op, "flops");
        /* Sources made inline never ran alone: their time is in their consumers', so the mean
         * is over the tasks that ran (none ran: no mean). */
        double ran = n - num(op, "inline");
        char mean[32] = "-", gf[32] = "-", moved[32];
        if (s > 0 && ran > 0) snprintf(mean, sizeof mean, "%.3f", s / ran * 1e3);
        if (s > 0 && f > 0) snprintf(gf, sizeof gf, "%.2f", f / s / 1e9);
        fmt_bytes(num(op, "moved_bytes"), moved, sizeof moved);
        const char *name = json_string_value(json_object_get(op, "op"));
        fprintf(stderr, "%-*.*s %8.0f %10.3f %10s %9s %12s\n", width, width, name ? name : "?", n,
                s, mean, gf, moved);
        tasks += n;
        secs += s;
        flops += f;
    }
    char gf[32] = "-", moved[32];
    if (secs > 0 && flops > 0) snprintf(gf, sizeof gf, "%.2f", flops / secs / 1e9);
    fmt_bytes(num(j, "moved_bytes"), moved, sizeof moved);
    fprintf(stderr, "%-*s %8.0f %10.3f %10s %9s %12s\n", width, "total", tasks, secs, "", gf,
            moved);
    if (num(j, "sources_inline") > 0)
        fprintf(stderr, "(%.0f source tasks ran inline in the tasks that used them)\n",
                num(j, "sources_inline"));
    /* Workers over their memory target wrote chunks to disk: say how much, summed over the
     * workers that ran this computation (their counters since they started, as in workers[]). */
    double spilled = 0, unspilled = 0;
    int spillers = 0;
    const json_t *w;
    json_array_foreach(json_object_get(j, "workers"), k, w) {
        spilled += num(w, "spilled_bytes");
        unspilled += num(w, "unspilled_bytes");
        spillers += num(w, "spilled_bytes") > 0;
    }
    if (spilled > 0) {
        char out[32], in[32];
        fmt_bytes(spilled, out, sizeof out);
        fmt_bytes(unspilled, in, sizeof in);
        fprintf(stderr, "spilled to disk: %s written, %s read back, by %d worker%s\n", out, in,
                spillers, spillers == 1 ? "" : "s");
    }
    fflush(stderr);
    json_decref(j);
}
