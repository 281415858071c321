/* `tessera top`'s model: recent `info` snapshots, and the view derived from them (rates, busy
 * fractions, ETAs from the deltas between the newest snapshot and one up to TOP_WINDOW_S older).
 * Snapshots come from the network: every field is looked up and type-checked, a missing one
 * reads as 0 or is left out of the view, never guessed. */
#include <math.h>
#include <string.h>

#include "top.h"

void top_hist_push(top_hist *h, json_t *snap, double t) {
    if (h->n == TOP_HIST) {
        json_decref(h->snap[0]);
        memmove(h->snap, h->snap + 1, (TOP_HIST - 1) * sizeof *h->snap);
        memmove(h->t, h->t + 1, (TOP_HIST - 1) * sizeof *h->t);
        h->n--;
    }
    h->snap[h->n] = snap;
    h->t[h->n] = t;
    h->n++;
    /* Keep one snapshot older than the window, so that a slow scheduler still gives rates. */
    while (h->n > 2 && h->t[h->n - 1] - h->t[1] >= TOP_WINDOW_S) {
        json_decref(h->snap[0]);
        memmove(h->snap, h->snap + 1, (size_t)(h->n - 1) * sizeof *h->snap);
        memmove(h->t, h->t + 1, (size_t)(h->n - 1) * sizeof *h->t);
        h->n--;
    }
}

void top_hist_clear(top_hist *h) {
    for (int k = 0; k < h->n; k++) json_decref(h->snap[k]);
    h->n = 0;
}

static double num(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    double d = json_is_number(v) ? json_number_value(v) : 0;
    return isfinite(d) ? d : 0;
}

static const char *str(const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static void set_num(json_t *o, const char *key, double v) {
    json_object_set_new(o, key, json_real(isfinite(v) ? v : 0));
}

static void set_count(json_t *o, const char *key, double v) {
    json_object_set_new(o, key, json_integer((json_int_t)(v > 0 ? v : 0)));
}

/* v per second over dt, or null when there is no interval to measure over. */
static void set_rate(json_t *o, const char *key, double delta, double dt) {
    if (dt > 0)
        set_num(o, key, delta > 0 ? delta / dt : 0);
    else
        json_object_set_new(o, key, json_null());
}

/* A sum of rates already per second, or null when there is no interval (the first snapshot). */
static void set_per_s(json_t *o, const char *key, double v, double dt) {
    if (dt > 0)
        set_num(o, key, v);
    else
        json_object_set_new(o, key, json_null());
}

/* Seconds left at `rate` per second, or null when nothing is being done. */
static void set_eta(json_t *o, double left, double rate, double dt) {
    if (dt > 0 && rate > 0)
        set_num(o, "eta", left / rate);
    else
        json_object_set_new(o, "eta", json_null());
}

/* The element of list `arr` whose `key` equals that of `like` (NULL when none or no list). */
static const json_t *find_like(const json_t *arr, const char *key, const json_t *like) {
    const json_t *want = json_object_get(like, key);
    if (!want || !json_is_array(arr)) return NULL;
    size_t k;
    const json_t *e;
    json_array_foreach(arr, k, e) {
        if (json_equal(json_object_get(e, key), (json_t *)want)) return e;
    }
    return NULL;
}

/* The interval between snapshots a (older) and b, by the scheduler's own clock when it has one
 * (no network delay in it), else by ours; 0 when they are not in order. */
static double span(const top_hist *h, int a, int b) {
    double dt = num(h->snap[b], "uptime") - num(h->snap[a], "uptime");
    if (!(dt > 0)) dt = h->t[b] - h->t[a];
    return dt > 0 ? dt : 0;
}

/* The oldest earlier snapshot whose list `list` has an element like `like` (same `key`): the
 * reference its rates are measured from, so that a job or a worker that appeared a moment ago
 * gets rates as soon as it has been seen twice. NULL (and *dt 0) when there is none. */
static const json_t *find_ref(const top_hist *h, const char *list, const char *key,
                              const json_t *like, double *dt) {
    *dt = 0;
    for (int k = 0; k < h->n - 1; k++) {
        const json_t *e = find_like(json_object_get(h->snap[k], list), key, like);
        double d = e ? span(h, k, h->n - 1) : 0;
        if (d > 0) {
            *dt = d;
            return e;
        }
    }
    return NULL;
}

/* The host part of "HOST:PORT" (IPv6 "[::1]:PORT" keeps its brackets). */
static void host_of(const char *addr, char *out, size_t size) {
    const char *colon = strrchr(addr, ':');
    size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
    if (n >= size) n = size - 1;
    memcpy(out, addr, n);
    out[n] = 0;
}

/* The rate of counter `key` of w since old, as `out`: null without an interval or without the
 * counter in the older snapshot. */
static void counter_rate(json_t *o, const char *out, const json_t *w, const json_t *old,
                         const char *key, double dt) {
    int ok = old && dt > 0 && json_object_get(old, key);
    set_rate(o, out, ok ? num(w, key) - num(old, key) : 0, ok ? dt : 0);
}

static json_t *worker_view(const json_t *w, const json_t *old, double dt) {
    /* The dev_ fields, h2d_bytes and d2h_bytes come from GPU workers only, the spilled, disk
     * and paused ones from workers with a disk tier (PROTOCOL.md). */
    static const char *const copied[] = {
        "name",     "addr",     "kind",      "cpus",        "threads",   "running",    "queued",
        "tasks",    "rss",      "mem_limit", "chunk_bytes", "in_bytes",  "out_bytes",  "busy_s",
        "dev_name", "dev_used", "dev_limit", "h2d_bytes",   "d2h_bytes", "dev_evicted"};
    static const char *const disk[] = {"spilled_bytes", "unspilled_bytes", "disk_bytes", "paused"};
    json_t *o = json_object();
    if (!o) return NULL;
    for (size_t f = 0; f < sizeof copied / sizeof *copied; f++) {
        json_t *v = json_object_get(w, copied[f]);
        if (v) json_object_set(o, copied[f], v);
    }
    for (size_t f = 0; f < sizeof disk / sizeof *disk; f++) {
        json_t *v = json_object_get(w, disk[f]);
        if (v) json_object_set(o, disk[f], v);
    }
    if (json_object_get(w, "h2d_bytes")) { /* copy rates, as the workers' busy fractions */
        counter_rate(o, "h2d_per_s", w, old, "h2d_bytes", dt);
        counter_rate(o, "d2h_per_s", w, old, "d2h_bytes", dt);
    }
    if (json_object_get(w, "spilled_bytes")) { /* disk traffic, the same way */
        counter_rate(o, "spilled_per_s", w, old, "spilled_bytes", dt);
        counter_rate(o, "unspilled_per_s", w, old, "unspilled_bytes", dt);
    }
    char host[128];
    host_of(str(w, "addr"), host, sizeof host);
    json_object_set_new(o, "host", json_string(host));
    double threads = num(w, "threads");
    if (old && dt > 0 && threads > 0) {
        double busy = (num(w, "busy_s") - num(old, "busy_s")) / (dt * threads);
        set_num(o, "busy", busy < 0 ? 0 : busy > 1 ? 1 : busy);
        set_rate(o, "tasks_per_s", num(w, "tasks") - num(old, "tasks"), dt);
    } else {
        json_object_set_new(o, "busy", json_null());
        json_object_set_new(o, "tasks_per_s", json_null());
    }
    return o;
}

/* The counts of a job or an operation: what the scheduler says, plus waiting (neither done,
 * running, ready nor erred), the rate of completions, and the ETA at that rate. */
static void progress_view(json_t *o, const json_t *cur, const json_t *old, double running,
                          double ready, double dt) {
    double total = num(cur, "total"), done = num(cur, "done"), erred = num(cur, "erred");
    /* The counts come from one snapshot, but keep the segments inside the total regardless. */
    if (ready > total - done - running - erred) ready = total - done - running - erred;
    set_count(o, "total", total);
    set_count(o, "done", done);
    set_count(o, "running", running);
    set_count(o, "ready", ready);
    set_count(o, "erred", erred);
    set_count(o, "waiting", total - done - running - ready - erred);
    double d = old ? done - num(old, "done") : 0;
    double mdt = old ? dt : 0;
    set_rate(o, "rate", d, mdt);
    set_eta(o, total - done - erred, mdt > 0 && d > 0 ? d / mdt : 0, mdt);
}

static json_t *job_view(const json_t *j, const json_t *old, double dt, double *gflops) {
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set(o, "job", json_object_get(j, "job"));
    json_object_set_new(o, "moved_bytes", json_integer((json_int_t)num(j, "moved_bytes")));
    json_t *ops = json_array();
    double running = 0, ready = 0;
    size_t k;
    const json_t *op;
    json_array_foreach(json_object_get(j, "ops"), k, op) {
        const json_t *oldop = old ? find_like(json_object_get(old, "ops"), "op", op) : NULL;
        json_t *v = json_object();
        if (!v) break;
        json_object_set_new(v, "op", json_string(str(op, "op")));
        double r = num(op, "running");
        running += r;
        progress_view(v, op, oldop, r, num(op, "ready"), dt);
        ready += num(v, "ready"); /* as shown: the job's bar adds up its operations' */
        set_num(v, "flops_done", num(op, "flops_done"));
        double df = oldop ? num(op, "flops_done") - num(oldop, "flops_done") : 0;
        if (df > 0 && dt > 0) *gflops += df / 1e9 / dt;
        set_rate(v, "gflops", df / 1e9, oldop ? dt : 0);
        json_array_append_new(ops, v);
    }
    progress_view(o, j, old, running, ready, dt);
    json_object_set_new(o, "ops", ops);
    return o;
}

json_t *top_view(const top_hist *h) {
    if (h->n == 0) return NULL;
    const json_t *cur = h->snap[h->n - 1];
    double dt = h->n > 1 ? span(h, 0, h->n - 1) : 0;
    const json_t *old = dt > 0 ? h->snap[0] : NULL;
    json_t *v = json_object();
    if (!v) return NULL;
    json_object_set_new(v, "addr", json_string(str(cur, "addr")));
    set_num(v, "uptime", num(cur, "uptime"));
    set_num(v, "interval", dt);
    json_t *tasks = json_object_get(cur, "tasks");
    json_object_set_new(v, "tasks", json_is_object(tasks) ? json_incref(tasks) : json_object());
    set_count(v, "done_total", num(cur, "done_total"));
    set_rate(v, "tasks_per_s", old ? num(cur, "done_total") - num(old, "done_total") : 0, dt);

    json_t *wl = json_array();
    double cpu = 0, gpu = 0, threads = 0, rss = 0, limit = 0, chunks = 0, moved = 0, wdt;
    double disk = 0, paused = 0;
    int unlimited = 0;
    size_t k;
    const json_t *w;
    json_array_foreach(json_object_get(cur, "wlist"), k, w) {
        const json_t *ow = find_ref(h, "wlist", "addr", w, &wdt);
        json_t *o = worker_view(w, ow, wdt);
        if (!o) break;
        json_array_append_new(wl, o);
        if (strcmp(str(w, "kind"), "gpu") == 0)
            gpu++;
        else
            cpu++;
        threads += num(w, "threads");
        rss += num(w, "rss");
        chunks += num(w, "chunk_bytes");
        disk += num(w, "disk_bytes");
        paused += json_is_true(json_object_get(w, "paused"));
        if (num(w, "mem_limit") > 0)
            limit += num(w, "mem_limit");
        else
            unlimited = 1;
        double d = ow ? num(w, "in_bytes") - num(ow, "in_bytes") : 0;
        if (d > 0) moved += d / wdt;
    }
    set_count(v, "workers", (double)json_array_size(wl));
    set_count(v, "cpu_workers", cpu);
    set_count(v, "gpu_workers", gpu);
    set_count(v, "threads", threads);
    set_per_s(v, "bytes_per_s", moved, dt);
    set_count(v, "mem_used", rss);
    set_count(v, "mem_limit", unlimited ? 0 : limit); /* 0: some worker has no limit */
    set_count(v, "chunk_bytes", chunks);
    set_count(v, "disk_bytes", disk);
    set_count(v, "paused_workers", paused);

    json_t *jl = json_array();
    double gflops = 0, jdt;
    const json_t *j;
    json_array_foreach(json_object_get(cur, "jlist"), k, j) {
        const json_t *oj = find_ref(h, "jlist", "job", j, &jdt);
        json_t *o = job_view(j, oj, jdt, &gflops);
        if (!o) break;
        json_array_append_new(jl, o);
    }
    set_per_s(v, "gflops", gflops, dt);
    json_object_set_new(v, "wlist", wl);
    json_object_set_new(v, "jlist", jl);

    json_t *ev = json_array();
    const json_t *e;
    json_array_foreach(json_object_get(cur, "events"), k, e) {
        if (!json_is_array(e) || json_array_size(e) < 2) continue;
        json_t *o = json_object();
        if (!o) break;
        const json_t *t = json_array_get(e, 0);
        set_num(o, "t", json_is_number(t) ? json_number_value(t) : 0);
        const char *msg = json_string_value(json_array_get(e, 1));
        json_object_set_new(o, "msg", json_string(msg ? msg : ""));
        json_array_append_new(ev, o);
    }
    json_object_set_new(v, "events", ev);
    return v;
}
