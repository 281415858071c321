/* `--trace FILE` of `tessera run` and `tessera submit`, and the API's trace, against real
 * clusters: the file is valid Chrome trace-event JSON with exactly one complete span per task
 * that ran (tasks - sources_inline of --stats), each on an executor thread of the worker that
 * ran it (the worker's own --threads bound), spans of one thread never overlapping, durations
 * that add up to the kernel seconds of --stats, and chunk transfers on the fetching worker when
 * round-robin placement forces them. Against a fake scheduler: the conversion of a `trace` map
 * (worker and thread numbering, transfer lanes, malformed entries, `dropped` on stderr). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tessera/tessera.h"
#include "fake_wire.h"

/* Transfers go on tids from here (tessera.h, tsr_client_trace_json). */
#define XFER_TID 100000
/* Starts and ends travel as seconds since the Epoch in doubles: 0.24 us apart near 2^31 s. */
#define CLOCK_SLACK_US 1.0

/* A matmul whose k-chains (C's partial sums) and the exp after it are non-source tasks, so
 * round-robin placement moves their chunks between workers. */
static const char *prog =
    "{\"tessera\": 1, \"arrays\": {\n"
    " \"A\": {\"op\": \"random\", \"shape\": [256, 256], \"chunks\": 64, \"seed\": 1},\n"
    " \"B\": {\"op\": \"random\", \"shape\": [256, 256], \"chunks\": 64, \"seed\": 2},\n"
    " \"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]},\n"
    " \"E\": {\"op\": \"exp\", \"args\": [\"C\"]},\n"
    " \"t\": {\"op\": \"sum\", \"args\": [\"E\"], \"axis\": null}},\n"
    " \"outputs\": {\"t\": \"-\"}}\n";

/* Files of the running test, owned here so that a failed assertion (which leaves the test at
 * once) leaks nothing; fini frees them, and stops a cluster the test started. */
static json_t *trace_j, *stats_j;
static pid_t cluster[3];
/* The API test's client and arrays: its local cluster's processes share the test's stderr, so
 * one left running would keep the test runner waiting. */
static tsr_client *api_client;
static tsr_array *api_arrays[3];

static void cleanup(void) {
    for (int k = 2; k >= 0; k--) {
        tsr_array_free(api_arrays[k]);
        api_arrays[k] = NULL;
    }
    tsr_client_free(api_client);
    api_client = NULL;
    for (int k = 2; k >= 0; k--)
        if (cluster[k] > 0) stop_proc(cluster[k]);
    memset(cluster, 0, sizeof cluster);
    json_decref(trace_j);
    json_decref(stats_j);
    trace_j = stats_j = NULL;
}

static json_t *load(const char *dir, const char *name, json_t **slot) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    json_error_t err;
    json_decref(*slot);
    *slot = json_load_file(path, 0, &err);
    cr_assert(*slot, "%s is not valid JSON: %s (line %d)", path, err.text, err.line);
    cr_assert(json_is_object(*slot), "%s is not a JSON object", path);
    return *slot;
}

static double num(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_number(v), "no number \"%s\"", key);
    return json_number_value(v);
}

static long long inum(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "no integer \"%s\"", key);
    return (long long)json_integer_value(v);
}

static const char *str(const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    cr_assert(s, "no string \"%s\"", key);
    return s;
}

/* ---- reading a trace ---- */

#define MAXW 8

typedef struct ev {
    long long pid, tid, task;
    double ts, dur;
    const json_t *e;
} ev;

typedef struct parsed {
    char names[MAXW][64]; /* process_name by pid - 1 */
    int nw;
    ev *spans, *xfers;
    size_t nspans, nxfers;
} parsed;

static void parsed_free(parsed *p) {
    free(p->spans);
    free(p->xfers);
}

/* The thread_name metadata of (pid, tid), or NULL. */
static const char *thread_name(const json_t *events, long long pid, long long tid) {
    size_t k;
    const json_t *e;
    json_array_foreach(events, k, e) {
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n && !strcmp(n, "thread_name") && inum(e, "pid") == pid && inum(e, "tid") == tid)
            return json_string_value(json_object_get(json_object_get(e, "args"), "name"));
    }
    return NULL;
}

/* Splits the events into task spans and transfers, checks the fields every event must have and
 * that every thread a span is on was named. */
static void parse_trace(const json_t *tr, parsed *p) {
    memset(p, 0, sizeof *p);
    const json_t *events = json_object_get(tr, "traceEvents");
    cr_assert(json_is_array(events), "no traceEvents array");
    size_t n = json_array_size(events);
    p->spans = calloc(n + 1, sizeof *p->spans);
    p->xfers = calloc(n + 1, sizeof *p->xfers);
    size_t k;
    const json_t *e;
    json_array_foreach(events, k, e) {
        const char *ph = str(e, "ph"), *name = str(e, "name");
        long long pid = inum(e, "pid"), tid = inum(e, "tid");
        cr_assert(pid >= 1 && pid <= MAXW, "pid %lld", pid);
        cr_assert(tid >= 1, "tid %lld (0 is never used)", tid);
        if (!strcmp(ph, "M")) {
            if (!strcmp(name, "process_name")) {
                const char *pn = str(json_object_get(e, "args"), "name");
                cr_assert(!p->names[pid - 1][0], "process %lld named twice", pid);
                snprintf(p->names[pid - 1], sizeof p->names[0], "%s", pn);
                if (pid > p->nw) p->nw = (int)pid;
            }
            continue;
        }
        cr_assert_str_eq(ph, "X", "an event that is neither metadata nor complete: %s", ph);
        ev v = {pid, tid, inum(json_object_get(e, "args"), "task"), num(e, "ts"), num(e, "dur"), e};
        cr_assert(v.ts >= 0 && v.dur >= 0, "ts %g dur %g", v.ts, v.dur);
        const char *cat = str(e, "cat");
        if (!strcmp(cat, "task")) {
            cr_assert(tid < XFER_TID, "a task span on a transfer thread");
            const char *tn = thread_name(events, pid, tid);
            char want[32];
            snprintf(want, sizeof want, "tsr-exec-%lld", tid - 1);
            cr_assert(tn && !strcmp(tn, want), "thread (%lld, %lld) is named %s, want %s", pid, tid,
                      tn ? tn : "nothing", want);
            p->spans[p->nspans++] = v;
        } else {
            cr_assert_str_eq(cat, "transfer");
            cr_assert(tid >= XFER_TID, "a transfer on an executor thread");
            const char *tn = thread_name(events, pid, tid);
            cr_assert(tn && !strncmp(tn, "transfers", 9), "transfer thread named %s",
                      tn ? tn : "nothing");
            p->xfers[p->nxfers++] = v;
        }
    }
    /* Every event's process is named. */
    for (size_t i = 0; i < p->nspans; i++)
        cr_assert(p->names[p->spans[i].pid - 1][0], "pid %lld unnamed", p->spans[i].pid);
    for (size_t i = 0; i < p->nxfers; i++)
        cr_assert(p->names[p->xfers[i].pid - 1][0], "pid %lld unnamed", p->xfers[i].pid);
}

static int by_thread_ts(const void *a, const void *b) {
    const ev *x = a, *y = b;
    if (x->pid != y->pid) return x->pid < y->pid ? -1 : 1;
    if (x->tid != y->tid) return x->tid < y->tid ? -1 : 1;
    return (x->ts > y->ts) - (x->ts < y->ts);
}

/* No two events of one (pid, tid) overlap (beyond the clock's resolution). */
static void check_no_overlap(ev *v, size_t n, const char *what) {
    qsort(v, n, sizeof *v, by_thread_ts);
    for (size_t i = 1; i < n; i++) {
        if (v[i].pid != v[i - 1].pid || v[i].tid != v[i - 1].tid) continue;
        double end = v[i - 1].ts + v[i - 1].dur;
        cr_assert(end <= v[i].ts + CLOCK_SLACK_US,
                  "%s on pid %lld tid %lld overlap: one ends at %.3f us, the next starts at %.3f",
                  what, v[i].pid, v[i].tid, end, v[i].ts);
    }
}

/* The stats' worker entry of that name, or NULL. */
static const json_t *stats_worker(const json_t *st, const char *name) {
    size_t k;
    const json_t *w;
    json_array_foreach(json_object_get(st, "workers"), k, w) {
        if (!strcmp(str(w, "name"), name)) return w;
    }
    return NULL;
}

/* What every real trace must say about the computation --stats describes: one span per task
 * that ran, each task once, per operation and per worker the counts the scheduler reported,
 * spans on threads below their worker's thread count (threads_of(name)), no overlaps, durations
 * adding up to the kernel seconds, all inside the client's submit-to-finished interval. */
static void check_against_stats(parsed *p, const json_t *st, int (*threads_of)(const char *)) {
    long long tasks = inum(st, "tasks"), inl = inum(st, "sources_inline");
    cr_assert_eq((long long)p->nspans, tasks - inl,
                 "%zu task spans; the job has %lld tasks of which %lld sources ran inline",
                 p->nspans, tasks, inl);
    char *seen = calloc((size_t)tasks, 1);
    for (size_t i = 0; i < p->nspans; i++) {
        long long id = p->spans[i].task;
        cr_assert(id >= 0 && id < tasks && !seen[id], "task %lld: out of range or twice", id);
        seen[id] = 1;
    }
    free(seen);
    /* Per operation: as many spans as tasks that ran, and their durations add up to the kernel
     * seconds the scheduler reported for them. */
    double kernel = 0, dursum = 0;
    size_t k;
    const json_t *op;
    json_array_foreach(json_object_get(st, "ops"), k, op) {
        long long want = inum(op, "tasks") - inum(op, "inline"), got = 0;
        double us = 0;
        for (size_t i = 0; i < p->nspans; i++) {
            if (!strcmp(str(p->spans[i].e, "name"), str(op, "op"))) {
                got++;
                us += p->spans[i].dur;
            }
        }
        cr_assert_eq(got, want, "op %s: %lld spans, %lld tasks ran", str(op, "op"), got, want);
        kernel += num(op, "seconds");
        dursum += us;
        cr_assert(fabs(us - num(op, "seconds") * 1e6) <= 1e-3 * us + 0.01 * (double)got + 1,
                  "op %s: spans add up to %.1f us, the kernel seconds are %g", str(op, "op"), us,
                  num(op, "seconds"));
    }
    cr_assert(dursum > 0 && kernel > 0);
    /* Per worker: its spans are the tasks the scheduler says it ran, on its own threads. */
    double first = INFINITY, last = 0;
    for (int w = 1; w <= p->nw; w++) {
        long long got = 0;
        int threads = threads_of(p->names[w - 1]);
        for (size_t i = 0; i < p->nspans; i++) {
            const ev *s = &p->spans[i];
            if (s->pid != w) continue;
            got++;
            cr_assert(s->tid - 1 >= 0 && s->tid - 1 < threads,
                      "a span on thread %lld of %s, which has %d threads", s->tid - 1,
                      p->names[w - 1], threads);
        }
        const json_t *sw = stats_worker(st, p->names[w - 1]);
        long long want = sw ? inum(sw, "tasks") : 0;
        cr_assert_eq(got, want, "%s: %lld spans, the scheduler says it ran %lld tasks",
                     p->names[w - 1], got, want);
    }
    for (size_t i = 0; i < p->nspans; i++) {
        if (p->spans[i].ts < first) first = p->spans[i].ts;
        if (p->spans[i].ts + p->spans[i].dur > last) last = p->spans[i].ts + p->spans[i].dur;
    }
    for (size_t i = 0; i < p->nxfers; i++) {
        if (p->xfers[i].ts < first) first = p->xfers[i].ts;
        if (p->xfers[i].ts + p->xfers[i].dur > last) last = p->xfers[i].ts + p->xfers[i].dur;
    }
    /* Microseconds from the earliest event, which happened after submission; the last one
     * ended before `finished` (2 ms for the clocks: the workers' realtime, the client's
     * monotonic one). */
    cr_assert(fabs(first) < 1e-9, "the earliest event is at %g us, not 0", first);
    cr_assert(last <= num(st, "seconds") * 1e6 + 2000,
              "events span %.0f us, the computation took %g s", last, num(st, "seconds"));
    check_no_overlap(p->spans, p->nspans, "task spans");
    check_no_overlap(p->xfers, p->nxfers, "transfers");
}

static int two_threads(const char *name) {
    cr_assert(!strncmp(name, "local-", 6), "a worker of tessera run named %s", name);
    return 2;
}

static char *setup(void) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json", prog);
    return dir;
}

/* `tessera run -w WORKERS --threads 2 --stats st.json --trace tr.json p.json` in dir: exit 0,
 * nothing on stderr, `t` printed, nothing dropped, and the trace checked against the stats; the
 * parsed trace is left in *p for the caller's own checks. */
static void run_traced(const char *dir, const char *workers, parsed *p) {
    const char *argv[] = {"tessera", "run",     "-w",      workers,   "--threads", "2",
                          "--stats", "st.json", "--trace", "tr.json", "p.json",    NULL};
    proc_result r = run_cmd(dir, argv, 150);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    cr_assert_str_eq(r.err, "", "nothing on stderr off a terminal, got:\n%s", r.err);
    cr_assert(!strncmp(r.out, "t: ", 3), "%s", r.out);
    proc_result_free(&r);
    const json_t *st = load(dir, "st.json", &stats_j);
    const json_t *tr = load(dir, "tr.json", &trace_j);
    const json_t *other = json_object_get(tr, "otherData");
    cr_assert_eq(inum(other, "dropped"), 0);
    parse_trace(tr, p);
    check_against_stats(p, st, two_threads);
}

Test(trace, run_one_span_per_task, .timeout = 180, .fini = cleanup) {
    char *dir = setup();
    parsed p;
    run_traced(dir, "2", &p);
    parsed_free(&p);
    /* st.json, tr.json, p.json: no temporary file left. */
    cr_assert_eq(dir_entries(dir), 3);
    remove_tmpdir(dir);
}

/* One worker: nothing moves, so the trace has spans and no transfer at all (the writer once
 * passed qsort a NULL array for them, which UBSan reports). */
Test(trace, run_one_worker_no_transfers, .timeout = 180, .fini = cleanup) {
    char *dir = setup();
    parsed p;
    run_traced(dir, "1", &p);
    cr_assert_eq(p.nxfers, 0, "%zu transfers with one worker", p.nxfers);
    parsed_free(&p);
    remove_tmpdir(dir);
}

/* Round-robin placement puts consecutive tasks of a k-chain on different workers, so partial
 * sums move: each fetch is a transfer on the fetching worker, of the chunk's bytes, from the
 * other worker's address; together no more than the bytes the scheduler had moved. */
Test(trace, roundrobin_shows_transfers, .timeout = 180, .fini = cleanup) {
    char *dir = setup();
    setenv("TESSERA_PLACEMENT", "roundrobin", 1); /* inherited by the spawned scheduler */
    const char *argv[] = {"tessera", "run",     "-w",      "2",       "--threads", "2",
                          "--stats", "st.json", "--trace", "tr.json", "p.json",    NULL};
    proc_result r = run_cmd(dir, argv, 150);
    unsetenv("TESSERA_PLACEMENT");
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    proc_result_free(&r);
    const json_t *st = load(dir, "st.json", &stats_j);
    const json_t *tr = load(dir, "tr.json", &trace_j);
    parsed p;
    parse_trace(tr, &p);
    check_against_stats(&p, st, two_threads);
    cr_assert(p.nxfers > 0, "no transfers in a round-robin run (moved_bytes %g)",
              num(st, "moved_bytes"));
    double bytes = 0;
    for (size_t i = 0; i < p.nxfers; i++) {
        const json_t *args = json_object_get(p.xfers[i].e, "args");
        long long b = inum(args, "bytes");
        /* Chunks of 64x64 float64 at most (partial sums of the reduction are smaller). */
        cr_assert(b > 0 && b <= 64 * 64 * 8, "a transfer of %lld bytes", b);
        bytes += (double)b;
        const char *to = p.names[p.xfers[i].pid - 1], *from = str(args, "from");
        const json_t *self = stats_worker(st, to);
        cr_assert(self, "transfer to %s, which ran nothing", to);
        cr_assert(strcmp(from, str(self, "addr")) != 0, "%s fetched from itself", to);
        int known = 0;
        size_t k;
        const json_t *w;
        json_array_foreach(json_object_get(st, "workers"), k, w) known |=
            !strcmp(from, str(w, "addr"));
        cr_assert(known, "a transfer from %s, not a worker of the job", from);
    }
    cr_assert(bytes <= num(st, "moved_bytes"), "transfers of %g bytes, moved_bytes %g", bytes,
              num(st, "moved_bytes"));
    parsed_free(&p);
    remove_tmpdir(dir);
}

static int submit_threads(const char *name) {
    if (!strcmp(name, "w1")) return 1;
    if (!strcmp(name, "w3")) return 3;
    cr_assert_fail("a worker named %s", name);
    return 0;
}

/* submit --trace on a cluster whose workers have 1 and 3 threads: every span on one of its own
 * worker's threads. */
Test(trace, submit_threads_per_worker, .timeout = 180, .fini = cleanup) {
    char addr[128];
    cluster[0] = start_scheduler(addr, sizeof addr);
    cluster[1] = start_worker(addr, 1, "w1", NULL);
    cluster[2] = start_worker(addr, 3, "w3", NULL);
    char *dir = setup();
    const char *argv[] = {"tessera", "submit",  "--scheduler", addr,     "--stats",
                          "st.json", "--trace", "tr.json",     "p.json", NULL};
    proc_result r = run_cmd(dir, argv, 150);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    proc_result_free(&r);
    parsed p;
    parse_trace(load(dir, "tr.json", &trace_j), &p);
    check_against_stats(&p, load(dir, "st.json", &stats_j), submit_threads);
    parsed_free(&p);
    remove_tmpdir(dir);
}

/* The API: no trace until a traced computation finished, and none after an untraced one. */
Test(trace, api, .timeout = 180, .fini = cleanup) {
    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.workers = 2;
    lo.tessera_path = tessera_exe();
    cr_assert_eq(tsr_client_start_local(&lo, &api_client), 0, "%s", tsr_last_error());
    tsr_client *c = api_client;
    cr_assert_null(tsr_client_trace_json(c));
    uint64_t dropped = 7;
    cr_assert_eq(tsr_client_save_trace(c, "/nonexistent/x.json", &dropped), TSR_ENOTCOMPUTED);
    cr_assert_eq(dropped, 0);
    int64_t shape[2] = {256, 256}, chunks[2] = {64, 64};
    tsr_array **a = &api_arrays[0], **m = &api_arrays[1], **t = &api_arrays[2];
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT64, 1, a), 0);
    cr_assert_eq(tsr_matmul(*a, *a, m), 0);
    cr_assert_eq(tsr_reduce(TSR_SUM, *m, NULL, 0, t), 0);
    tsr_compute_options co;
    tsr_compute_options_default(&co);
    cr_assert_eq(co.trace, 0, "tracing is off by default");
    cr_assert_eq(tsr_compute(c, t, 1, &co), 0, "%s", tsr_client_errmsg(c));
    cr_assert_null(tsr_client_trace_json(c), "a trace of an untraced computation");

    co.trace = 1;
    cr_assert_eq(tsr_compute(c, t, 1, &co), 0, "%s", tsr_client_errmsg(c));
    char *text = tsr_client_trace_json(c), *stats = tsr_client_stats_json(c);
    cr_assert(text && stats);
    json_error_t err;
    trace_j = json_loads(text, 0, &err);
    stats_j = json_loads(stats, 0, NULL);
    free(text);
    free(stats);
    cr_assert(json_is_object(trace_j), "not JSON: %s", err.text);
    parsed p;
    parse_trace(trace_j, &p);
    cr_assert_eq((long long)p.nspans, inum(stats_j, "tasks") - inum(stats_j, "sources_inline"));
    parsed_free(&p);
    char *dir = make_tmpdir(), path[600];
    snprintf(path, sizeof path, "%s/api.json", dir);
    cr_assert_eq(tsr_client_save_trace(c, path, &dropped), 0, "%s", tsr_client_errmsg(c));
    cr_assert_eq(dropped, 0);
    json_t *saved = json_load_file(path, 0, NULL);
    cr_assert(json_equal(saved, trace_j), "the saved trace differs from tsr_client_trace_json");
    json_decref(saved);
    snprintf(path, sizeof path, "%s/no/such/dir/x.json", dir);
    cr_assert(tsr_client_save_trace(c, path, NULL) == -ENOENT);
    cr_assert(strstr(tsr_client_errmsg(c), path), "%s", tsr_client_errmsg(c));
    cr_assert_eq(dir_entries(dir), 1, "a temporary file was left behind");
    remove_tmpdir(dir);

    co.trace = 0;
    cr_assert_eq(tsr_compute(c, t, 1, &co), 0, "%s", tsr_client_errmsg(c));
    cr_assert_null(tsr_client_trace_json(c), "the trace outlived the computation it describes");
}

/* The output conventions of --stats: exit 1 naming the file when it cannot be written (nothing
 * left behind), exit 2 for an empty name or an invalid program (nothing written). */
Test(trace, errors, .timeout = 120) {
    char *dir = setup();
    const char *argv[] = {"tessera", "run", "-w", "2", "--trace", "no/such/dir/tr.json",
                          "p.json",  NULL};
    proc_result r = run_cmd(dir, argv, 100);
    cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "no/such/dir/tr.json"), "message does not name the file:\n%s", r.err);
    proc_result_free(&r);
    const char *argv2[] = {"tessera", "run", "--trace", "", "p.json", NULL};
    r = run_cmd(dir, argv2, 60);
    cr_assert_eq(r.status, 2, "empty --trace: exit %d:\n%s", r.status, r.err);
    proc_result_free(&r);
    write_file(dir, "bad.json",
               "{\"tessera\": 1, \"arrays\": {\"C\": {\"op\": \"nope\"}}, \"outputs\": {}}");
    const char *argv3[] = {"tessera", "run", "--trace", "tr.json", "bad.json", NULL};
    r = run_cmd(dir, argv3, 60);
    cr_assert_eq(r.status, 2, "exit %d:\n%s", r.status, r.err);
    proc_result_free(&r);
    /* p.json and bad.json only. */
    cr_assert_eq(dir_entries(dir), 2, "%d entries", dir_entries(dir));
    remove_tmpdir(dir);
}

/* ---- the conversion, against a fake scheduler ---- */

typedef struct fake {
    int lfd;
    char addr[64];
    pthread_t th;
    int asked; /* the submit header carried trace: true */
    int ok;    /* the client fetched its output */
} fake;

/* When the fake's events happen (seconds since the Epoch). */
#define T0 1700000000.0

static void pack_span(msgpack_packer *pk, int w, int id, int op, double start, double secs,
                      int thread) {
    msgpack_pack_array(pk, 6);
    msgpack_pack_int(pk, w), msgpack_pack_int(pk, id), msgpack_pack_int(pk, op);
    msgpack_pack_double(pk, start), msgpack_pack_double(pk, secs), msgpack_pack_int(pk, thread);
}

static void pack_xfer(msgpack_packer *pk, int w, int id, int64_t nbytes, double start, double end,
                      const char *from) {
    msgpack_pack_array(pk, 6);
    msgpack_pack_int(pk, w), msgpack_pack_int(pk, id), msgpack_pack_int64(pk, nbytes);
    msgpack_pack_double(pk, start), msgpack_pack_double(pk, end), pstr(pk, from);
}

/* Three workers (the second's name is not UTF-8, the third's needs escaping), two ops; good
 * spans and transfers and ones that decode but make no sense; 42 events dropped. (A record that
 * does not decode at all costs the whole trace: the message layer decodes or refuses.) */
static void pack_trace(msgpack_packer *pk) {
    msgpack_pack_map(pk, 5);
    pstr(pk, "workers"), msgpack_pack_array(pk, 3);
    pstr(pk, "wa"), msgpack_pack_str(pk, 2), msgpack_pack_str_body(pk, "\xff\xfe", 2);
    pstr(pk, "w\"q");
    pstr(pk, "ops"), msgpack_pack_array(pk, 2), pstr(pk, "matmul"), pstr(pk, "add");
    pstr(pk, "tasks"), msgpack_pack_array(pk, 7);
    pack_span(pk, 0, 5, 0, T0 + 0.001, 0.002, 0); /* pid 1 tid 1, 1000 us + 2000 */
    pack_span(pk, 0, 6, 1, T0 + 0.004, 0.001, 1); /* pid 1 tid 2 */
    pack_span(pk, 2, 7, 9, T0, 0.0005, 0);        /* op out of range: "?"; the earliest */
    pack_span(pk, 5, 8, 0, T0, 1, 0);             /* no such worker */
    pack_span(pk, 0, 10, 0, T0, -1, 0);           /* negative duration */
    pack_span(pk, 0, 11, 0, T0, 1, 70000);        /* no such thread */
    pack_span(pk, 0, 12, 0, NAN, 1, 0);           /* no time */
    pstr(pk, "transfers"), msgpack_pack_array(pk, 4);
    pack_xfer(pk, 1, 5, 4096, T0 + 0.001, T0 + 0.003, "127.0.0.1:1"); /* lane 0 */
    pack_xfer(pk, 1, 6, 4096, T0 + 0.002, T0 + 0.004, "127.0.0.1:1"); /* overlaps: lane 1 */
    pack_xfer(pk, 1, 7, 100, T0 + 0.0035, T0 + 0.005, "127.0.0.1:3"); /* lane 0 is free */
    pack_xfer(pk, 1, 9, 10, T0 + 0.006, T0 + 0.005, "127.0.0.1:3");   /* ends first: dur 0 */
    pstr(pk, "dropped"), msgpack_pack_int(pk, 42);
}

static void *fake_main(void *arg) {
    fake *f = arg;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char type[32];
    int trace, p = -1;
    int c = accept(f->lfd, NULL, NULL); /* the client's scheduler connection */
    if (c < 0 || read_frame(c, type, sizeof type, &trace) || strcmp(type, "hello")) goto out;
    msgpack_pack_map(&pk, 3);
    pstr(&pk, "t"), pstr(&pk, "welcome"), pstr(&pk, "v"), msgpack_pack_int(&pk, 1);
    pstr(&pk, "id"), msgpack_pack_int(&pk, 1);
    if (send_frame(c, &sb, NULL, 0)) goto out;
    if (read_frame(c, type, sizeof type, &trace) || strcmp(type, "submit")) goto out;
    f->asked = trace;
    msgpack_pack_map(&pk, 3);
    pstr(&pk, "t"), pstr(&pk, "accepted"), pstr(&pk, "job"), msgpack_pack_int(&pk, 1);
    pstr(&pk, "tasks"), msgpack_pack_int(&pk, 1);
    if (send_frame(c, &sb, NULL, 0)) goto out;
    msgpack_pack_map(&pk, 4);
    pstr(&pk, "t"), pstr(&pk, "finished"), pstr(&pk, "job"), msgpack_pack_int(&pk, 1);
    pstr(&pk, "outputs"), msgpack_pack_array(&pk, 1), msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, 0), pstr(&pk, f->addr), msgpack_pack_int(&pk, 8);
    pstr(&pk, "trace"), pack_trace(&pk);
    if (send_frame(c, &sb, NULL, 0)) goto out;
    /* The client fetches the output chunk from the "worker" at our own address. */
    p = accept(f->lfd, NULL, NULL);
    if (p < 0 || read_frame(p, type, sizeof type, &trace) || strcmp(type, "hello")) goto out;
    msgpack_pack_map(&pk, 3);
    pstr(&pk, "t"), pstr(&pk, "welcome"), pstr(&pk, "v"), msgpack_pack_int(&pk, 1);
    pstr(&pk, "id"), msgpack_pack_int(&pk, 2);
    if (send_frame(p, &sb, NULL, 0)) goto out;
    if (read_frame(p, type, sizeof type, &trace) || strcmp(type, "get")) goto out;
    double v = 3.0;
    msgpack_pack_map(&pk, 6);
    pstr(&pk, "t"), pstr(&pk, "chunk"), pstr(&pk, "job"), msgpack_pack_int(&pk, 1);
    pstr(&pk, "id"), msgpack_pack_int(&pk, 0), pstr(&pk, "dtype"), pstr(&pk, "float64");
    pstr(&pk, "shape"), msgpack_pack_array(&pk, 0), pstr(&pk, "n"), msgpack_pack_int(&pk, 8);
    if (send_frame(p, &sb, &v, sizeof v) == 0) f->ok = 1;
    /* Drain until the client hangs up (it releases the job, then closes). */
    while (read_frame(c, type, sizeof type, &trace) == 0) {
    }
out:
    if (p >= 0) close(p);
    if (c >= 0) close(c);
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

/* The event of that category and task id (exactly one). */
static const ev *find_ev(const ev *v, size_t n, long long task) {
    const ev *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (v[i].task != task) continue;
        cr_assert_null(found, "task %lld has two events", task);
        found = &v[i];
    }
    cr_assert(found, "no event for task %lld", task);
    return found;
}

static void expect(const ev *e, const char *name, long long pid, long long tid, double ts,
                   double dur) {
    cr_assert_str_eq(str(e->e, "name"), name);
    cr_assert(e->pid == pid && e->tid == tid, "task %lld on (%lld, %lld), want (%lld, %lld)",
              e->task, e->pid, e->tid, pid, tid);
    cr_assert(fabs(e->ts - ts) <= CLOCK_SLACK_US && fabs(e->dur - dur) <= CLOCK_SLACK_US,
              "task %lld: ts %.3f dur %.3f, want %.3f and %.3f", e->task, e->ts, e->dur, ts, dur);
}

Test(trace_wire, conversion, .timeout = 60, .fini = cleanup) {
    fake f = {0};
    f.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t al = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(f.lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(f.lfd, 4) == 0 &&
              getsockname(f.lfd, (struct sockaddr *)&a, &al) == 0);
    snprintf(f.addr, sizeof f.addr, "127.0.0.1:%d", ntohs(a.sin_port));
    cr_assert(pthread_create(&f.th, NULL, fake_main, &f) == 0);
    char *dir = make_tmpdir();
    write_file(dir, "p.json",
               "{\"tessera\": 1, \"arrays\": {\"s\": {\"op\": \"full\", "
               "\"shape\": [], \"value\": 3}}, \"outputs\": {\"s\": \"-\"}}");
    const char *argv[] = {"tessera", "submit",  "--scheduler", f.addr, "--no-progress",
                          "--trace", "tr.json", "p.json",      NULL};
    proc_result r = run_cmd(dir, argv, 60);
    shutdown(f.lfd, SHUT_RDWR); /* wakes an accept() that will never be answered */
    pthread_join(f.th, NULL);
    close(f.lfd);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    cr_assert(f.asked, "the submit header did not ask for a trace");
    cr_assert(f.ok, "the client did not fetch its output");
    cr_assert_str_eq(r.out, "s: 3\n");
    cr_assert(strstr(r.err, "42") && strstr(r.err, "tr.json"),
              "no word on stderr about the 42 dropped events:\n%s", r.err);
    proc_result_free(&r);

    const json_t *tr = load(dir, "tr.json", &trace_j);
    cr_assert_eq(inum(json_object_get(tr, "otherData"), "dropped"), 42);
    cr_assert(fabs(num(json_object_get(tr, "otherData"), "t0") - T0) < 1e-3);
    parsed p;
    parse_trace(tr, &p);
    cr_assert_str_eq(p.names[0], "wa");
    cr_assert_str_eq(p.names[1], "?", "a name that is not UTF-8");
    cr_assert_str_eq(p.names[2], "w\"q");
    cr_assert_eq(p.nspans, 3, "%zu spans: malformed ones kept", p.nspans);
    expect(find_ev(p.spans, p.nspans, 5), "matmul", 1, 1, 1000, 2000);
    expect(find_ev(p.spans, p.nspans, 6), "add", 1, 2, 4000, 1000);
    expect(find_ev(p.spans, p.nspans, 7), "?", 3, 1, 0, 500);
    cr_assert_eq(p.nxfers, 4, "%zu transfers: malformed ones kept", p.nxfers);
    expect(find_ev(p.xfers, p.nxfers, 5), "transfer", 2, XFER_TID, 1000, 2000);
    expect(find_ev(p.xfers, p.nxfers, 6), "transfer", 2, XFER_TID + 1, 2000, 2000);
    expect(find_ev(p.xfers, p.nxfers, 7), "transfer", 2, XFER_TID, 3500, 1500);
    expect(find_ev(p.xfers, p.nxfers, 9), "transfer", 2, XFER_TID, 6000, 0);
    const json_t *args = json_object_get(find_ev(p.xfers, p.nxfers, 7)->e, "args");
    cr_assert_eq(inum(args, "bytes"), 100);
    cr_assert_str_eq(str(args, "from"), "127.0.0.1:3");
    check_no_overlap(p.spans, p.nspans, "task spans");
    check_no_overlap(p.xfers, p.nxfers, "transfers");
    cr_assert_str_eq(thread_name(json_object_get(tr, "traceEvents"), 2, XFER_TID + 1),
                     "transfers 2");
    parsed_free(&p);
    remove_tmpdir(dir);
}
