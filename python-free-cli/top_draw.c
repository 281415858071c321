/* `tessera top`'s screen layout, drawn from the view (top_view.c) onto a character canvas: a
 * header, one row per worker (and more for a GPU worker's device and a spilling or paused
 * worker's disk), a progress bar per operation of each running job and the last events. The same
 * canvas becomes the ncurses screen or the `--once` text, so the two always agree. Fits any size:
 * when rows run short, events go first, then worker and operation rows are summarised. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "top.h"

/* ---- formatting ---- */

void top_fmt_bytes(double b, char *out, size_t size) {
    static const char units[] = "KMGTPE";
    if (!(b >= 1024)) {
        snprintf(out, size, "%.0f", b > 0 ? b : 0);
        return;
    }
    int u = -1;
    while (b >= 1024 && u < 5) {
        b /= 1024;
        u++;
    }
    snprintf(out, size, b < 10 ? "%.1f%c" : "%.0f%c", b, units[u]);
}

void top_fmt_clock(double s, char *out, size_t size) {
    if (!(s >= 0) || s > 3600.0 * 9999) {
        snprintf(out, size, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    char tmp[64]; /* room for any long, so only the final copy can truncate */
    if (t >= 3600)
        snprintf(tmp, sizeof tmp, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(tmp, sizeof tmp, "%02ld:%02ld", t / 60, t % 60);
    snprintf(out, size, "%s", tmp);
}

void top_fmt_rate(double v, char *out, size_t size) {
    if (!(v >= 0))
        snprintf(out, size, "-");
    else if (v < 10)
        snprintf(out, size, "%.1f", v);
    else if (v < 10000)
        snprintf(out, size, "%.0f", v);
    else if (v < 1e7)
        snprintf(out, size, "%.1fk", v / 1e3);
    else
        snprintf(out, size, "%.1fM", v / 1e6);
}

/* A count in at most 7 characters. */
static void fmt_count(double v, char *out, size_t size) {
    if (v < 1e7)
        snprintf(out, size, "%.0f", v > 0 ? v : 0);
    else
        top_fmt_rate(v, out, size);
}

/* ---- canvas ---- */

int top_canvas_init(top_canvas *cv, int rows, int cols) {
    memset(cv, 0, sizeof *cv);
    if (rows < 1) rows = 1;
    if (cols < 1) cols = 1;
    cv->ch = malloc((size_t)rows * (size_t)cols);
    cv->attr = malloc((size_t)rows * (size_t)cols);
    if (!cv->ch || !cv->attr) {
        top_canvas_free(cv);
        return -1;
    }
    cv->rows = rows;
    cv->cols = cols;
    memset(cv->ch, ' ', (size_t)rows * (size_t)cols);
    memset(cv->attr, TS_NORMAL, (size_t)rows * (size_t)cols);
    return 0;
}

void top_canvas_free(top_canvas *cv) {
    free(cv->ch);
    free(cv->attr);
    cv->ch = NULL;
    cv->attr = NULL;
}

void top_canvas_print(const top_canvas *cv, FILE *f) {
    for (int r = 0; r < cv->used && r < cv->rows; r++) {
        const char *line = cv->ch + (size_t)r * (size_t)cv->cols;
        int n = cv->cols;
        while (n > 0 && line[n - 1] == ' ') n--;
        fprintf(f, "%.*s\n", n, line);
    }
}

/* Writes text at (row, col), clipped to the canvas; control characters become '?'. Returns
 * the column after it. */
static int put(top_canvas *cv, int row, int col, int style, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int put(top_canvas *cv, int row, int col, int style, const char *fmt, ...) {
    if (row < 0 || row >= cv->rows) return col;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (const char *p = buf; *p && col < cv->cols; p++, col++) {
        if (col < 0) continue;
        size_t at = (size_t)row * (size_t)cv->cols + (size_t)col;
        cv->ch[at] = (unsigned char)*p < 32 || *p == 127 ? '?' : *p;
        cv->attr[at] = (unsigned char)style;
    }
    if (row + 1 > cv->used) cv->used = row + 1;
    return col;
}

static void fill(top_canvas *cv, int row, int col, int n, char ch, int style) {
    for (int k = 0; k < n; k++) put(cv, row, col + k, style, "%c", ch);
}

/* ---- view access ---- */

static double num(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

/* A rate, or -1 when the view has none yet (a JSON null). */
static double rate(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : -1;
}

static const char *str(const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* ---- sections ---- */

static int draw_header(const json_t *v, top_canvas *cv, int row) {
    char up[32], b1[32], b2[32], b3[32], r1[32], r2[32];
    fill(cv, row, 0, cv->cols, ' ', TS_TITLE);
    top_fmt_clock(num(v, "uptime"), up, sizeof up);
    int c =
        put(cv, row, 0, TS_TITLE, " tessera top  %s  up %s  %.0f workers (%.0f cpu, %.0f gpu)",
            str(v, "addr"), up, num(v, "workers"), num(v, "cpu_workers"), num(v, "gpu_workers"));
    if (c + 10 <= cv->cols) put(cv, row, cv->cols - 9, TS_TITLE, "q: quit");
    row++;
    top_fmt_rate(rate(v, "tasks_per_s"), r1, sizeof r1);
    double bps = rate(v, "bytes_per_s");
    if (bps >= 0)
        top_fmt_bytes(bps, b1, sizeof b1);
    else
        snprintf(b1, sizeof b1, "-");
    top_fmt_rate(rate(v, "gflops"), r2, sizeof r2);
    top_fmt_bytes(num(v, "mem_used"), b2, sizeof b2);
    if (num(v, "mem_limit") > 0)
        top_fmt_bytes(num(v, "mem_limit"), b3, sizeof b3);
    else
        snprintf(b3, sizeof b3, "no limit");
    char done[32];
    fmt_count(num(v, "done_total"), done, sizeof done);
    put(cv, row++, 0, TS_NORMAL, " tasks/s %s  GFLOP/s %s  moved %s/s  memory %s / %s  done %s", r1,
        r2, b1, b2, b3, done);
    const json_t *t = json_object_get(v, "tasks");
    put(cv, row++, 0, TS_NORMAL,
        " tasks  waiting %.0f  ready %.0f  queued %.0f  running %.0f  memory %.0f  erred %.0f",
        num(t, "waiting"), num(t, "ready"), num(t, "queued"), num(t, "running"), num(t, "memory"),
        num(t, "erred"));
    return row + 1;
}

/* Column widths of the worker table: name and host share what the fixed columns leave. */
typedef struct wcols {
    int name, host;
} wcols;

static wcols worker_cols(int cols) {
    /* " " + CPUS(6) EXEC(4) QUEUE(5) DONE(7) MEMORY(11) IN(6) OUT(6) BUSY(4), one space each */
    int fixed = 1 + 6 + 4 + 5 + 7 + 11 + 6 + 6 + 4 + 10;
    int left = cols - fixed;
    wcols w = {10, 10};
    if (left > 20) {
        w.host = left / 3 < 16 ? left / 3 : 16;
        w.name = left - w.host;
        if (w.name > 24) w.name = 24;
    }
    return w;
}

/* A paused worker takes no new work until it catches up with spilling (PROTOCOL.md). */
static int is_paused(const json_t *w) {
    return json_is_true(json_object_get(w, "paused"));
}

static void draw_worker(const json_t *w, top_canvas *cv, int row, wcols wc) {
    char done[16], used[16], lim[16], in[16], out[16], mem[40], busy[8];
    fmt_count(num(w, "tasks"), done, sizeof done);
    top_fmt_bytes(num(w, "rss"), used, sizeof used);
    if (num(w, "mem_limit") > 0)
        top_fmt_bytes(num(w, "mem_limit"), lim, sizeof lim);
    else
        snprintf(lim, sizeof lim, "-");
    snprintf(mem, sizeof mem, "%s/%s", used, lim);
    top_fmt_bytes(num(w, "in_bytes"), in, sizeof in);
    top_fmt_bytes(num(w, "out_bytes"), out, sizeof out);
    double b = rate(w, "busy");
    if (b >= 0)
        snprintf(busy, sizeof busy, "%.0f%%", b * 100);
    else
        snprintf(busy, sizeof busy, "-");
    const char *cpus = str(w, "cpus");
    if (strcmp(str(w, "kind"), "gpu") == 0 && !*cpus) cpus = "gpu";
    put(cv, row, 0, TS_NORMAL, " %-*.*s %-*.*s %-6.6s %4.0f %5.0f %7s %11s %6s %6s %4s", wc.name,
        wc.name, str(w, "name"), wc.host, wc.host, str(w, "host"), *cpus ? cpus : "-",
        num(w, "running"), num(w, "queued"), done, mem, in, out, busy);
    if (is_paused(w)) /* its name in red: it takes no new work */
        put(cv, row, 1, TS_ALERT, "%-*.*s", wc.name, wc.name, str(w, "name"));
}

/* A GPU worker's device, on a line of its own under its row (CPU rows stay as they are): the
 * device's name, its cache's device memory in use / limit, bytes copied host to device (h2d)
 * and back (d2h) and per second, chunks evicted from the device. */
/* A per-second byte rate, or "-" while there is none yet. */
static void fmt_rate(const json_t *w, const char *key, char *out, size_t size) {
    double r = rate(w, key);
    if (r >= 0)
        top_fmt_bytes(r, out, size);
    else
        snprintf(out, size, "-");
}

static int has_device(const json_t *w) {
    return json_object_get(w, "dev_used") != NULL;
}

static void draw_device(const json_t *w, top_canvas *cv, int row) {
    char used[16], lim[16], h2d[16], d2h[16], r1[16], r2[16];
    top_fmt_bytes(num(w, "dev_used"), used, sizeof used);
    if (num(w, "dev_limit") > 0)
        top_fmt_bytes(num(w, "dev_limit"), lim, sizeof lim);
    else
        snprintf(lim, sizeof lim, "-");
    top_fmt_bytes(num(w, "h2d_bytes"), h2d, sizeof h2d);
    top_fmt_bytes(num(w, "d2h_bytes"), d2h, sizeof d2h);
    fmt_rate(w, "h2d_per_s", r1, sizeof r1);
    fmt_rate(w, "d2h_per_s", r2, sizeof r2);
    char tail[160];
    snprintf(tail, sizeof tail, "  dev %s/%s  h2d %s %s/s  d2h %s %s/s  evicted %.0f", used, lim,
             h2d, r1, d2h, r2, num(w, "dev_evicted"));
    /* The name gets what the figures leave of the width (at least 8 characters). */
    int wname = cv->cols - 3 - (int)strlen(tail);
    if (wname < 8) wname = 8;
    const char *name = str(w, "dev_name");
    put(cv, row, 0, TS_NORMAL, "   %-.*s%s", wname, *name ? name : "?", tail);
}

/* A worker with a disk tier (a memory limit) that has spilled anything or is paused gets a row
 * under its own (and under its device's): PAUSED first when it is (red: it takes no new work),
 * the chunk bytes on disk now, the bytes spilled to disk and read back, in all and per second.
 * Workers that spill nothing keep one row. */
static int has_disk(const json_t *w) {
    return is_paused(w) || num(w, "spilled_bytes") > 0 || num(w, "disk_bytes") > 0;
}

static void draw_disk(const json_t *w, top_canvas *cv, int row) {
    char on[16], out[16], in[16], r1[16], r2[16];
    top_fmt_bytes(num(w, "disk_bytes"), on, sizeof on);
    top_fmt_bytes(num(w, "spilled_bytes"), out, sizeof out);
    top_fmt_bytes(num(w, "unspilled_bytes"), in, sizeof in);
    fmt_rate(w, "spilled_per_s", r1, sizeof r1);
    fmt_rate(w, "unspilled_per_s", r2, sizeof r2);
    int c = put(cv, row, 0, TS_NORMAL, "   ");
    if (is_paused(w)) c = put(cv, row, c, TS_ALERT, "PAUSED  ");
    put(cv, row, c, TS_NORMAL, "disk %s  spilled %s %s/s  read back %s %s/s", on, out, r1, in, r2);
}

static int worker_rows(const json_t *w) {
    return 1 + has_device(w) + has_disk(w);
}

/* Draws the worker table in at most `space` rows (heading included); returns the next row. */
static int draw_workers(const json_t *v, top_canvas *cv, int row, int space) {
    const json_t *wl = json_object_get(v, "wlist");
    size_t n = json_array_size(wl);
    wcols wc = worker_cols(cv->cols);
    put(cv, row++, 0, TS_HEAD, " %-*s %-*s %-6s %4s %5s %7s %11s %6s %6s %4s", wc.name, "WORKER",
        wc.host, "HOST", "CPUS", "EXEC", "QUEUE", "DONE", "MEM/LIMIT", "IN", "OUT", "BUSY");
    if (n == 0) {
        put(cv, row++, 0, TS_WAITING, " no workers connected");
        return row;
    }
    int fit = space > 1 ? space - 1 : 0, need = 0;
    for (size_t k = 0; k < n; k++) need += worker_rows(json_array_get(wl, k));
    /* Everything, or as many workers as fit with a line left to summarise the rest. */
    int room = need <= fit ? fit : fit - 1;
    size_t shown = 0;
    for (; shown < n; shown++) {
        const json_t *w = json_array_get(wl, shown);
        if (worker_rows(w) > room) break;
        room -= worker_rows(w);
        draw_worker(w, cv, row++, wc);
        if (has_device(w)) draw_device(w, cv, row++);
        if (has_disk(w)) draw_disk(w, cv, row++);
    }
    if (shown < n) put(cv, row++, 0, TS_WAITING, " +%zu more workers", n - shown);
    return row;
}

/* The bar: done, erred, running, ready, waiting, left to right, each cell belonging to the
 * segment its middle falls in so that the segments' lengths add up to the width. */
static void draw_bar(top_canvas *cv, int row, int col, int width, const json_t *o) {
    enum { NSEG = 5 };
    double total = num(o, "total");
    double seg[NSEG] = {num(o, "done"), num(o, "erred"), num(o, "running"), num(o, "ready"), 0};
    static const char chars[NSEG] = {'#', '!', '>', '+', '.'};
    static const int styles[NSEG] = {TS_DONE, TS_ERRED, TS_RUNNING, TS_READY, TS_WAITING};
    put(cv, row, col, TS_NORMAL, "[");
    double edge[NSEG], acc = 0;
    for (int s = 0; s < NSEG - 1; s++) edge[s] = (acc += seg[s]);
    edge[NSEG - 1] = total;
    for (int k = 0; k < width; k++) {
        double mid = total > 0 ? (k + 0.5) * total / width : total + 1;
        int s = 0;
        while (s < NSEG - 1 && mid >= edge[s]) s++;
        put(cv, row, col + 1 + k, styles[s], "%c", chars[s]);
    }
    put(cv, row, col + 1 + width, TS_NORMAL, "]");
}

static int digits(double v) {
    int d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

/* One operation's line: name, bar, done/total, rate and ETA. */
static void draw_op(const json_t *op, top_canvas *cv, int row, int wname, int wcount) {
    char counts[48], r[16], eta[16];
    snprintf(counts, sizeof counts, "%.0f/%.0f", num(op, "done"), num(op, "total"));
    top_fmt_rate(rate(op, "rate"), r, sizeof r);
    double e = rate(op, "eta");
    if (num(op, "done") + num(op, "erred") >= num(op, "total"))
        snprintf(eta, sizeof eta, "done");
    else
        top_fmt_clock(e, eta, sizeof eta);
    int tail = 1 + wcount + 1 + 8 + 1 + 12; /* " counts r/s ETA xx:xx" */
    int bar = cv->cols - (3 + wname + 1) - 2 - tail;
    int show_tail = 1;
    if (bar < 10) {
        bar = cv->cols - (3 + wname + 1) - 2 - (1 + wcount);
        show_tail = 0;
    }
    int c = put(cv, row, 0, TS_NORMAL, "   %-*.*s ", wname, wname, str(op, "op"));
    if (bar >= 4) {
        draw_bar(cv, row, c, bar, op);
        c += bar + 2;
    }
    c = put(cv, row, c, TS_NORMAL, " %*s", wcount, counts);
    if (show_tail) put(cv, row, c, TS_NORMAL, " %6s/s ETA %-8s", r, eta);
}

static int job_rows(const json_t *j) {
    return 1 + (int)json_array_size(json_object_get(j, "ops"));
}

/* Draws the jobs in at most `space` rows; returns the next row. */
static int draw_jobs(const json_t *v, top_canvas *cv, int row, int space) {
    const json_t *jl = json_object_get(v, "jlist");
    int end = row + space;
    int c = put(cv, row, 0, TS_HEAD, " JOBS ");
    c = put(cv, row, c + 1, TS_DONE, "#");
    c = put(cv, row, c, TS_NORMAL, " done ");
    c = put(cv, row, c, TS_RUNNING, ">");
    c = put(cv, row, c, TS_NORMAL, " running ");
    c = put(cv, row, c, TS_READY, "+");
    c = put(cv, row, c, TS_NORMAL, " ready ");
    c = put(cv, row, c, TS_ERRED, "!");
    c = put(cv, row, c, TS_NORMAL, " erred ");
    c = put(cv, row, c, TS_WAITING, ".");
    put(cv, row, c, TS_NORMAL, " waiting");
    row++;
    if (json_array_size(jl) == 0) {
        put(cv, row++, 0, TS_WAITING, " no job running");
        return row;
    }
    /* Names and counts aligned across every job. */
    int wname = 6, wcount = 3;
    size_t k, o;
    const json_t *j, *op;
    json_array_foreach(jl, k, j) {
        json_array_foreach(json_object_get(j, "ops"), o, op) {
            int n = (int)strlen(str(op, "op"));
            if (n > wname) wname = n < 12 ? n : 12;
            int d = 2 * digits(num(op, "total")) + 1;
            if (d > wcount) wcount = d;
        }
    }
    json_array_foreach(jl, k, j) {
        if (row >= end) break;
        size_t nops = json_array_size(json_object_get(j, "ops"));
        int left = end - row;
        /* No room for this job and a summary of the rest: summarise from here. */
        if (left == 1 && k + 1 < json_array_size(jl)) {
            put(cv, row++, 0, TS_WAITING, " +%zu more jobs", json_array_size(jl) - k);
            break;
        }
        char r[16], eta[16], moved[16];
        double total = num(j, "total"), done = num(j, "done");
        top_fmt_rate(rate(j, "rate"), r, sizeof r);
        top_fmt_clock(rate(j, "eta"), eta, sizeof eta);
        top_fmt_bytes(num(j, "moved_bytes"), moved, sizeof moved);
        put(cv, row++, 0, TS_HEAD,
            " job %.0f  %.0f/%.0f tasks  %.0f%%  %s tasks/s  ETA %s  moved %s%s", num(j, "job"),
            done, total, total > 0 ? 100.0 * done / total : 0, r, eta, moved,
            num(j, "erred") > 0 ? "  ERRORS" : "");
        for (o = 0; o < nops; o++) {
            if (row >= end) break;
            if (end - row == 1 && o + 1 < nops) {
                put(cv, row++, 0, TS_WAITING, "   +%zu more operations", nops - o);
                break;
            }
            draw_op(json_array_get(json_object_get(j, "ops"), o), cv, row++, wname, wcount);
        }
    }
    return row;
}

static int is_alert(const char *msg) {
    return strstr(msg, "fail") || strstr(msg, "lost") || strstr(msg, "err");
}

/* The last events that fit in `space` rows (heading included), newest last. */
static void draw_events(const json_t *v, top_canvas *cv, int row, int space) {
    const json_t *ev = json_object_get(v, "events");
    size_t n = json_array_size(ev);
    if (space < 2 || n == 0) return;
    put(cv, row++, 0, TS_HEAD, " EVENTS");
    size_t fit = (size_t)(space - 1);
    for (size_t k = n > fit ? n - fit : 0; k < n; k++) {
        const json_t *e = json_array_get(ev, k);
        char t[32];
        top_fmt_clock(num(e, "t"), t, sizeof t);
        const char *msg = str(e, "msg");
        put(cv, row++, 0, is_alert(msg) ? TS_ALERT : TS_NORMAL, " %8s  %s", t, msg);
    }
}

static int jobs_needed(const json_t *v) {
    const json_t *jl = json_object_get(v, "jlist");
    int n = 1;
    size_t k;
    const json_t *j;
    json_array_foreach(jl, k, j) n += job_rows(j);
    return json_array_size(jl) ? n : 2;
}

static int workers_needed(const json_t *v) {
    const json_t *wl = json_object_get(v, "wlist");
    int rows = 0;
    size_t k;
    const json_t *w;
    json_array_foreach(wl, k, w) rows += worker_rows(w);
    return 1 + (rows ? rows : 1);
}

static int events_needed(const json_t *v) {
    size_t n = json_array_size(json_object_get(v, "events"));
    return n ? 1 + (int)n : 0;
}

int top_rows_needed(const json_t *v) {
    /* header (3) + blank, workers + blank, jobs + blank, events */
    return 4 + workers_needed(v) + 1 + jobs_needed(v) + 1 + events_needed(v);
}

void top_draw(const json_t *v, top_canvas *cv) {
    memset(cv->ch, ' ', (size_t)cv->rows * (size_t)cv->cols);
    memset(cv->attr, TS_NORMAL, (size_t)cv->rows * (size_t)cv->cols);
    cv->used = 0;
    int row = draw_header(v, cv, 0);
    int avail = cv->rows - row;
    int W = workers_needed(v), J = jobs_needed(v), E = events_needed(v);
    /* Short of rows: events give way first, then workers and jobs share what is left, half
     * each, or what one needs if that is less and the rest to the other. */
    int wspace = W, jspace = J;
    if (W + 1 + J > avail) {
        int half = (avail - 1) / 2;
        if (W <= half)
            jspace = avail - 1 - W;
        else if (J <= half)
            wspace = avail - 1 - J;
        else
            wspace = half, jspace = avail - 1 - half;
        if (wspace < 2) wspace = 2;
        if (jspace < 2) jspace = 2;
    }
    row = draw_workers(v, cv, row, wspace) + 1;
    row = draw_jobs(v, cv, row, jspace) + 1;
    draw_events(v, cv, row, E < cv->rows - row ? E : cv->rows - row);
}
