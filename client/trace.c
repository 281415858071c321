/* Execution traces: the decoded `trace` record of a traced job's `finished` message (PROTOCOL.md,
 * "Tracing") kept in compact arrays, and written out in the Chrome trace-event format that
 * Perfetto and chrome://tracing open, streamed to a FILE so that a million events never become a
 * JSON tree. The record comes from the network: entries that make no sense (a worker not listed,
 * a negative duration, a time that is not finite) are skipped, never trusted or asserted on. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/client.h"

/* Executor thread K of worker W is (pid W+1, tid K+1): Perfetto treats pid 0 as the kernel's
 * idle process and has merged tid 0 with tid 1, so neither is used. Transfers go on tids from
 * XFER_TID, one per lane of non-overlapping fetches; thread indices at or past MAX_THREAD are
 * malformed (the scheduler accepts workers of at most 4096 threads). */
#define XFER_TID 100000
#define MAX_THREAD 65536

/* A transfer's source address: as received, and as a JSON literal. */
typedef struct addr {
    char *raw, *lit;
    uint32_t len;
} addr;

typedef struct span {
    uint32_t worker, task, op, thread;
    double start, seconds;
} span;

typedef struct xfer {
    uint32_t worker, task, from; /* from: index into tsr__trace.from */
    uint32_t lane;
    uint64_t nbytes;
    double start, end;
} xfer;

struct tsr__trace {
    char **workers; /* names as JSON string literals (quoted, escaped) */
    uint32_t nworkers;
    char **ops; /* likewise */
    uint32_t nops;
    addr *from; /* distinct source addresses of transfers */
    uint32_t nfrom;
    span *spans;
    size_t nspans;
    xfer *xfers;
    size_t nxfers;
    uint64_t dropped;
    uint64_t job;
};

void tsr__trace_free(tsr__trace *t) {
    if (!t) return;
    for (uint32_t k = 0; k < t->nworkers; k++) free(t->workers[k]);
    for (uint32_t k = 0; k < t->nops; k++) free(t->ops[k]);
    for (uint32_t k = 0; k < t->nfrom; k++) {
        free(t->from[k].raw);
        free(t->from[k].lit);
    }
    free(t->workers);
    free(t->ops);
    free(t->from);
    free(t->spans);
    free(t->xfers);
    free(t);
}

/* A string from the network as a JSON literal; one that is not valid UTF-8 becomes "?" rather
 * than invalid JSON. NULL only when out of memory. */
static char *literal(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    char *out = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    /* Copied into our own allocation: the caller frees with free(), whatever allocator the
     * program gave jansson. */
    char *copy = strdup(out ? out : "\"?\"");
    free(out);
    return copy;
}

/* Fills *names with a literal per element of a list of strings. */
static int read_names(const tsr__list *list, char ***names, uint32_t *n) {
    *names = NULL;
    *n = 0;
    if (list->n == 0) return 0;
    *names = calloc(list->n, sizeof **names);
    if (!*names) return -ENOMEM;
    for (uint32_t k = 0; k < list->n; k++) {
        tsr__m_str_item e;
        TSR__LIST_GET(list, str_item, k, &e);
        (*names)[k] = literal(e.s.n ? e.s.p : "", e.s.n);
        if (!(*names)[k]) return -ENOMEM;
        (*n)++;
    }
    return 0;
}

/* tasks: [[worker, id, op, start, seconds, thread], ...] */
static int read_spans(tsr__trace *t, const tsr__list *list) {
    if (list->n == 0) return 0;
    t->spans = malloc(list->n * sizeof *t->spans);
    if (!t->spans) return -ENOMEM;
    for (uint32_t k = 0; k < list->n; k++) {
        tsr__m_trace_task e;
        TSR__LIST_GET(list, trace_task, k, &e);
        if (e.worker >= t->nworkers || !isfinite(e.start) || !isfinite(e.seconds) ||
            e.seconds < 0 || e.thread >= MAX_THREAD)
            continue;
        span s = {.worker = e.worker,
                  .task = e.id,
                  .op = e.op < t->nops ? e.op : UINT32_MAX, /* named "?" */
                  .thread = e.thread,
                  .start = e.start,
                  .seconds = e.seconds};
        t->spans[t->nspans++] = s;
    }
    return 0;
}

/* The index of address s in t->from, added if new (a run's transfers come from a few peers). */
static int from_index(tsr__trace *t, tsr__str s, uint32_t *out) {
    const char *p = s.n ? s.p : "";
    for (uint32_t k = t->nfrom; k-- > 0;) {
        if (t->from[k].len == s.n && memcmp(t->from[k].raw, p, s.n) == 0) {
            *out = k;
            return 0;
        }
    }
    addr *grown = realloc(t->from, (t->nfrom + 1) * sizeof *grown);
    if (!grown) return -ENOMEM;
    t->from = grown;
    addr *a = &t->from[t->nfrom];
    a->raw = malloc(s.n ? s.n : 1);
    a->lit = literal(p, s.n);
    a->len = s.n;
    if (!a->raw || !a->lit) {
        free(a->raw);
        free(a->lit);
        return -ENOMEM;
    }
    memcpy(a->raw, p, s.n);
    *out = t->nfrom++;
    return 0;
}

/* transfers: [[worker, id, nbytes, start, end, from_addr], ...] */
static int read_xfers(tsr__trace *t, const tsr__list *list) {
    if (list->n == 0) return 0;
    t->xfers = malloc(list->n * sizeof *t->xfers);
    if (!t->xfers) return -ENOMEM;
    for (uint32_t k = 0; k < list->n; k++) {
        tsr__m_transfer e;
        TSR__LIST_GET(list, transfer, k, &e);
        /* In finished, a transfer's first field is the worker's index (PROTOCOL.md). */
        if (e.job >= t->nworkers || !isfinite(e.start) || !isfinite(e.end)) continue;
        xfer x = {.worker = e.job, .task = e.id, .nbytes = e.nbytes, .start = e.start};
        x.end = e.end < e.start ? e.start : e.end;
        if (from_index(t, e.from, &x.from)) return -ENOMEM;
        t->xfers[t->nxfers++] = x;
    }
    return 0;
}

int tsr__trace_parse(const tsr__m_job_trace *tr, uint64_t job, tsr__trace **out) {
    *out = NULL;
    tsr__trace *t = calloc(1, sizeof *t);
    if (!t) return -ENOMEM;
    t->job = job;
    t->dropped = tr->dropped;
    if (read_names(&tr->workers, &t->workers, &t->nworkers) ||
        read_names(&tr->ops, &t->ops, &t->nops) || read_spans(t, &tr->tasks) ||
        read_xfers(t, &tr->transfers)) {
        tsr__trace_free(t);
        return -ENOMEM;
    }
    *out = t;
    return 0;
}

/* ---- writing ---- */

static int by_track(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->worker != y->worker) return x->worker < y->worker ? -1 : 1;
    if (x->thread != y->thread) return x->thread < y->thread ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

static int by_worker_start(const void *a, const void *b) {
    const xfer *x = a, *y = b;
    if (x->worker != y->worker) return x->worker < y->worker ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

/* Puts each worker's transfers (sorted by worker, then start) in lanes: the first lane whose
 * last transfer has ended, so that no two on one lane overlap (a worker fetches up to 64 chunks
 * from each peer at once, and a thread's complete events must nest). Returns the most lanes
 * any worker needed, or -ENOMEM. */
static int assign_lanes(tsr__trace *t) {
    double *end = NULL;
    uint32_t nlanes = 0, cap = 0, most = 0;
    for (size_t i = 0; i < t->nxfers; i++) {
        xfer *x = &t->xfers[i];
        if (i == 0 || x->worker != t->xfers[i - 1].worker) nlanes = 0;
        uint32_t l = 0;
        while (l < nlanes && end[l] > x->start) l++;
        if (l == nlanes) {
            if (nlanes == cap) {
                uint32_t ncap = cap ? cap * 2 : 8;
                double *grown = realloc(end, ncap * sizeof *grown);
                if (!grown) {
                    free(end);
                    return -ENOMEM;
                }
                end = grown;
                cap = ncap;
            }
            nlanes++;
        }
        end[l] = x->end;
        x->lane = l;
        if (nlanes > most) most = nlanes;
    }
    free(end);
    return (int)most;
}

/* Microseconds since t0, as the format wants them (fractions allowed). */
static double usec(double t, double t0) {
    return (t - t0) * 1e6;
}

static const char *op_name(const tsr__trace *t, uint32_t op) {
    return op < t->nops ? t->ops[op] : "\"?\"";
}

static void meta(FILE *f, int *first, const char *what, uint32_t pid, uint32_t tid, const char *key,
                 const char *literal_value) {
    fprintf(f, "%s\n{\"name\":\"%s\",\"ph\":\"M\",\"pid\":%u,\"tid\":%u,\"args\":{\"%s\":%s}}",
            *first ? "" : ",", what, pid, tid, key, literal_value);
    *first = 0;
}

/* Metadata naming worker w's process (once) and the thread tid. */
static void name_track(FILE *f, int *first, const tsr__trace *t, uint32_t w, int new_worker,
                       uint32_t tid) {
    char name[64];
    if (new_worker) meta(f, first, "process_name", w + 1, tid, "name", t->workers[w]);
    if (tid >= XFER_TID) {
        if (tid == XFER_TID)
            snprintf(name, sizeof name, "\"transfers\"");
        else
            snprintf(name, sizeof name, "\"transfers %u\"", tid - XFER_TID + 1);
    } else {
        snprintf(name, sizeof name, "\"tsr-exec-%u\"", tid - 1);
    }
    meta(f, first, "thread_name", w + 1, tid, "name", name);
    /* Executors in index order, transfer lanes after them. */
    snprintf(name, sizeof name, "%u", tid);
    meta(f, first, "thread_sort_index", w + 1, tid, "sort_index", name);
}

int tsr__trace_write(tsr__trace *t, FILE *f) {
    /* Not with a NULL array: a run with one worker has no transfers (UB for qsort). */
    if (t->nspans) qsort(t->spans, t->nspans, sizeof *t->spans, by_track);
    if (t->nxfers) qsort(t->xfers, t->nxfers, sizeof *t->xfers, by_worker_start);
    if (assign_lanes(t) < 0) return -ENOMEM;
    double t0 = INFINITY;
    for (size_t i = 0; i < t->nspans; i++)
        if (t->spans[i].start < t0) t0 = t->spans[i].start;
    for (size_t i = 0; i < t->nxfers; i++)
        if (t->xfers[i].start < t0) t0 = t->xfers[i].start;
    if (!isfinite(t0)) t0 = 0;
    /* A worker's process is named with its first track, executors (sorted first) or else its
     * first transfer lane. */
    uint8_t *named = calloc(t->nworkers ? t->nworkers : 1, 1);
    if (!named) return -ENOMEM;
    int first = 1;
    fputs("{\"traceEvents\":[", f);
    for (size_t i = 0; i < t->nspans; i++) {
        const span *s = &t->spans[i];
        uint32_t pid = s->worker + 1, tid = s->thread + 1;
        if (i == 0 || s->worker != s[-1].worker || s->thread != s[-1].thread) {
            name_track(f, &first, t, s->worker, !named[s->worker], tid);
            named[s->worker] = 1;
        }
        fprintf(f,
                ",\n{\"name\":%s,\"cat\":\"task\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                "\"pid\":%u,\"tid\":%u,\"args\":{\"task\":%u}}",
                op_name(t, s->op), usec(s->start, t0), s->seconds * 1e6, pid, tid, s->task);
    }
    /* Lanes are numbered per worker in order of first use: a lane's first transfer names it. */
    uint32_t lanes_named = 0;
    for (size_t i = 0; i < t->nxfers; i++) {
        const xfer *x = &t->xfers[i];
        uint32_t pid = x->worker + 1, tid = XFER_TID + x->lane;
        if (i == 0 || x->worker != x[-1].worker) lanes_named = 0;
        if (x->lane == lanes_named) {
            name_track(f, &first, t, x->worker, !named[x->worker], tid);
            named[x->worker] = 1;
            lanes_named++;
        }
        fprintf(f,
                "%s\n{\"name\":\"transfer\",\"cat\":\"transfer\",\"ph\":\"X\",\"ts\":%.3f,"
                "\"dur\":%.3f,\"pid\":%u,\"tid\":%u,\"args\":{\"task\":%u,\"bytes\":%llu,"
                "\"from\":%s}}",
                first ? "" : ",", usec(x->start, t0), usec(x->end, x->start), pid, tid, x->task,
                (unsigned long long)x->nbytes, t->from[x->from].lit);
        first = 0;
    }
    free(named);
    fprintf(f,
            "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"generator\":\"tessera %d.%d.%d\","
            "\"job\":%llu,\"t0\":%.6f,\"tasks\":%zu,\"transfers\":%zu,\"dropped\":%llu}}\n",
            TSR_VERSION_MAJOR, TSR_VERSION_MINOR, TSR_VERSION_PATCH, (unsigned long long)t->job, t0,
            t->nspans, t->nxfers, (unsigned long long)t->dropped);
    return ferror(f) ? -(errno ? errno : EIO) : 0;
}

/* ---- the public calls ---- */

char *tsr_client_trace_json(tsr_client *c) {
    if (!c || !c->trace) return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    int rc = tsr__trace_write(c->trace, f);
    if (fclose(f) != 0 || rc) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Streams the trace into the temporary file through a FILE of its own (the fd stays
 * tsr__write_file's to close). */
static int fill_trace(int fd, void *user, int *recorded) {
    (void)recorded;
    int fd2 = dup(fd);
    FILE *f = fd2 >= 0 ? fdopen(fd2, "w") : NULL;
    if (!f) {
        int e = errno;
        if (fd2 >= 0) close(fd2);
        return -e;
    }
    errno = 0;
    int rc = tsr__trace_write(user, f);
    if (rc == 0 && fflush(f) != 0) rc = -(errno ? errno : EIO);
    if (fclose(f) != 0 && rc == 0) rc = -(errno ? errno : EIO);
    return rc;
}

int tsr_client_save_trace(tsr_client *c, const char *path, uint64_t *dropped) {
    if (dropped) *dropped = 0;
    if (!c) return TSR_EINVALID;
    if (!path || !*path) return tsr__fail(c, TSR_EINVALID, "tsr_client_save_trace: empty path");
    if (!c->trace)
        return tsr__fail(c, TSR_ENOTCOMPUTED,
                         "no trace to write: the last computation was not traced (set "
                         "tsr_compute_options.trace), or the scheduler sent none");
    int rc = tsr__write_file(c, path, "trace", fill_trace, c->trace);
    if (rc == 0 && dropped) *dropped = c->trace->dropped;
    return rc;
}
