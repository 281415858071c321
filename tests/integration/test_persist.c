/* Issue 13's API ergonomics against real local clusters: tsr_persist (later computations take
 * the held chunks: fewer tasks, same values), tsr_from_buffer (round trips in every dtype, and a
 * worker killed mid-computation or holding persisted chunks costs time, not results), the
 * shorthands and tsr_compute_scalar, and tsr_client_free with arrays still alive (detached
 * handles, freed afterwards; run under ASan for leaks and use-after-free). Every value is checked
 * against naive loops computed here. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "client/client.h"
#include "harness.h"
#include "tessera/tessera.h"

static tsr_client *local_cluster(int workers) {
    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.workers = workers;
    lo.tessera_path = tessera_exe();
    lo.verbose = getenv("TSR_TEST_VERBOSE") != NULL;
    tsr_client *c = NULL;
    cr_assert_eq(tsr_client_start_local(&lo, &c), 0, "%s", tsr_last_error());
    /* Task counts here compare HELD tasks with the unfused graphs they replace. */
    cr_assert_eq(tsr_client_set_fusion(c, 0), 0);
    return c;
}

/* The task count the scheduler reports for the last computation. */
static long last_tasks(tsr_client *c) {
    char *js = tsr_client_stats_json(c);
    cr_assert(js);
    json_t *st = json_loads(js, 0, NULL);
    cr_assert(st, "%s", js);
    long n = (long)json_integer_value(json_object_get(st, "tasks"));
    json_decref(st);
    free(js);
    return n;
}

/* The tasks of operation `op` (an array-level name: "matmul") the last computation ran. */
static long op_tasks(tsr_client *c, const char *op) {
    char *js = tsr_client_stats_json(c);
    cr_assert(js);
    json_t *st = json_loads(js, 0, NULL), *o;
    cr_assert(st, "%s", js);
    size_t i;
    long n = 0;
    json_array_foreach(json_object_get(st, "ops"), i, o) {
        const char *name = json_string_value(json_object_get(o, "op"));
        if (name && !strcmp(name, op)) n += (long)json_integer_value(json_object_get(o, "tasks"));
    }
    json_decref(st);
    free(js);
    return n;
}

#define OK(c, call) cr_assert_eq((call), 0, "%s: %s", #call, tsr_client_errmsg(c))

/* Relative closeness for sums computed in a different order. */
static int close_to(double x, double ref) {
    return fabs(x - ref) <= 1e-9 * fmax(1.0, fabs(ref));
}

/* n x n float64 values, reproducible. */
static double *values(int64_t n, double scale) {
    double *v = malloc((size_t)(n * n) * sizeof *v);
    cr_assert(v);
    for (int64_t i = 0; i < n * n; i++) v[i] = scale * (double)((i * 7919) % 1000) / 1000.0 - 0.5;
    return v;
}

/* X = A @ A + 1 (naive), n x n. */
static double *ref_x(const double *a, int64_t n) {
    double *x = malloc((size_t)(n * n) * sizeof *x);
    cr_assert(x);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += a[i * n + k] * a[k * n + j];
            x[i * n + j] = s + 1.0;
        }
    return x;
}

/* Persist X, then two later computations that use it: each runs its own tasks plus one HELD
 * task per chunk of X, far fewer than lowering X again, and gives the reference's values. */
Test(persist, later_jobs_reuse_chunks, .timeout = 120) {
    tsr_client *c = local_cluster(2);
    const int64_t n = 96, k = 24;
    double *av = values(n, 1.0), *xr = ref_x(av, n);
    int64_t shape[2] = {n, n}, chunks[2] = {k, k};
    tsr_array *a, *aa, *x, *x2, *s1, *s2;
    OK(c, tsr_from_buffer(c, av, TSR_FLOAT64, 2, shape, chunks, &a));
    free(av); /* copied at the call */
    OK(c, tsr_matmul(a, a, &aa));
    OK(c, tsr_add_scalar(aa, 1.0, &x));
    tsr_array_free(aa); /* x keeps its operands */
    OK(c, tsr_mul_scalar(x, 2.0, &x2));
    OK(c, tsr_sum_all(x2, &s1));
    tsr_array_free(x2);
    OK(c, tsr_sum_axis(x, 0, &s2));
    int64_t full1 = tsr_task_count(&s1, 1), full2 = tsr_task_count(&s2, 1);

    OK(c, tsr_persist(c, &x, 1, NULL));
    cr_assert_eq(op_tasks(c, "matmul"), 16, "persisting X ran its matmul tasks");
    double *xv = malloc((size_t)(n * n) * sizeof *xv);
    OK(c, tsr_array_read(x, xv, (size_t)(n * n) * sizeof *xv));
    for (int64_t i = 0; i < n * n; i++)
        cr_assert(close_to(xv[i], xr[i]), "x[%lld] = %.17g, expected %.17g", (long long)i, xv[i],
                  xr[i]);
    free(xv);

    /* 16 chunks of X: one HELD task each replaces X's data, matmul and add tasks (at least 3
     * per chunk, 2 more than the HELD task). */
    int64_t held1 = tsr_task_count(&s1, 1), held2 = tsr_task_count(&s2, 1);
    cr_assert_leq(held1, full1 - 32, "held %lld, full %lld", (long long)held1, (long long)full1);
    cr_assert_leq(held2, full2 - 32, "held %lld, full %lld", (long long)held2, (long long)full2);

    double v;
    OK(c, tsr_compute_scalar(s1, &v));
    long t1 = last_tasks(c);
    double ref = 0;
    for (int64_t i = 0; i < n * n; i++) ref += 2.0 * xr[i];
    cr_assert(close_to(v, ref), "sum = %.17g, expected %.17g", v, ref);
    cr_assert_leq(t1, held1, "the job ran %ld tasks, lowering said %lld", t1, (long long)held1);
    cr_assert_eq(op_tasks(c, "matmul"), 0, "the later job ran matmul tasks again");
    cr_assert_eq(op_tasks(c, "from_buffer"), 0, "the later job sent the data again");

    OK(c, tsr_compute(c, &s2, 1, NULL));
    long t2 = last_tasks(c);
    cr_assert_leq(t2, held2);
    cr_assert_eq(op_tasks(c, "matmul"), 0, "the later job ran matmul tasks again");
    double col[96];
    OK(c, tsr_array_read(s2, col, sizeof col));
    for (int64_t j = 0; j < n; j++) {
        double r = 0;
        for (int64_t i = 0; i < n; i++) r += xr[i * n + j];
        cr_assert(close_to(col[j], r), "col %lld = %.17g, expected %.17g", (long long)j, col[j], r);
    }
    /* Persisting it again runs nothing; computing it again keeps it persisted (its new job's
     * copies are held instead). */
    OK(c, tsr_persist(c, &x, 1, NULL));
    cr_assert_eq(last_tasks(c), t2);
    OK(c, tsr_compute(c, &x, 1, NULL));
    cr_assert_eq(op_tasks(c, "matmul"), 0);
    cr_assert_eq(tsr_task_count(&s1, 1), held1);
    /* Freeing the persisted array: later lowerings compute it again, and its job is released
     * on the cluster (a graph that still named its chunks is refused: no live job). */
    uint64_t job = x->computed.job;
    uint32_t task0 = x->computed.task[0];
    char *addr0 = strdup(x->computed.addr[0]);
    tsr_array_free(x);
    cr_assert_eq(tsr_task_count(&s1, 1), full1);
    OK(c, tsr_client_flush(c));
    int64_t one[2] = {k, k};
    double zero[24 * 24] = {0};
    tsr_array *ghost, *gs;
    OK(c, tsr_from_buffer(c, zero, TSR_FLOAT64, 2, one, one, &ghost));
    tsr__computed saved = ghost->computed;
    uint32_t gtask[1] = {task0};
    char *gaddr[1] = {addr0};
    ghost->computed = (tsr__computed){.job = job, .nchunks = 1, .task = gtask, .addr = gaddr};
    ghost->persisted = 1;
    OK(c, tsr_sum_all(ghost, &gs));
    cr_assert_neq(tsr_compute(c, &gs, 1, NULL), 0, "a released job's chunk was still served");
    cr_assert(strstr(tsr_client_errmsg(c), "live job"), "%s", tsr_client_errmsg(c));
    ghost->computed = saved;
    tsr_array_free(gs);
    tsr_array_free(ghost);
    free(addr0);
    tsr_array_free(s1);
    tsr_array_free(s2);
    tsr_array_free(a);
    free(xr);
    tsr_client_free(c);
}

/* Every dtype round-trips through the workers, with irregular edge chunks and a 0-d array. */
Test(persist, from_buffer_roundtrip, .timeout = 120) {
    tsr_client *c = local_cluster(2);
    int64_t shape[2] = {7, 5}, chunks[2] = {3, 2};
    double f64[35];
    float f32[35];
    int64_t i64[35];
    uint8_t b[35];
    for (int i = 0; i < 35; i++) {
        f64[i] = i * 1.25 - 3;
        f32[i] = (float)(i * 0.5 - 7);
        i64[i] = (int64_t)i * 1000000007LL - 17;
        b[i] = (uint8_t)(i % 3 == 0);
    }
    const void *src[4] = {f64, f32, i64, b};
    tsr_dtype dt[4] = {TSR_FLOAT64, TSR_FLOAT32, TSR_INT64, TSR_BOOL};
    tsr_array *arr[5];
    for (int d = 0; d < 4; d++) OK(c, tsr_from_buffer(c, src[d], dt[d], 2, shape, chunks, &arr[d]));
    double scalar = 42.5;
    OK(c, tsr_from_buffer(c, &scalar, TSR_FLOAT64, 0, NULL, NULL, &arr[4]));
    OK(c, tsr_compute(c, arr, 5, NULL));
    for (int d = 0; d < 4; d++) {
        uint8_t got[35 * 8];
        size_t bytes = 35 * tsr_dtype_size(dt[d]);
        OK(c, tsr_array_read(arr[d], got, bytes));
        cr_assert_eq(memcmp(got, src[d], bytes), 0, "dtype %s differs", tsr_dtype_name(dt[d]));
    }
    double v = 0;
    OK(c, tsr_compute_scalar(arr[4], &v));
    cr_assert_eq(v, 42.5);
    /* Computing with it: sum(x * 3 - 1) in float64. */
    tsr_array *y, *z, *s;
    OK(c, tsr_mul_scalar(arr[0], 3.0, &y));
    OK(c, tsr_sub_scalar(y, 1.0, &z));
    OK(c, tsr_sum_all(z, &s));
    OK(c, tsr_compute_scalar(s, &v));
    double ref = 0;
    for (int i = 0; i < 35; i++) ref += f64[i] * 3.0 - 1.0;
    cr_assert(close_to(v, ref), "%.17g vs %.17g", v, ref);
    /* Bad calls fail with a message, never crash. */
    tsr_array *bad = NULL;
    int64_t big[2] = {4096, 4096};
    cr_assert_eq(tsr_from_buffer(c, f64, TSR_FLOAT64, 2, big, big, &bad), TSR_EINVALID);
    cr_assert(strstr(tsr_client_errmsg(c), "give smaller chunks"), "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_from_buffer(c, NULL, TSR_FLOAT64, 2, shape, chunks, &bad), TSR_EINVALID);
    cr_assert_eq(tsr_from_buffer(c, f64, (tsr_dtype)99, 2, shape, chunks, &bad), TSR_EINVALID);
    cr_assert_null(bad);
    cr_assert_eq(tsr_compute_scalar(y, &v), TSR_ESHAPE);
    tsr_array_free(y);
    tsr_array_free(z);
    tsr_array_free(s);
    for (int d = 0; d < 5; d++) tsr_array_free(arr[d]);
    tsr_client_free(c);
}

typedef struct killer {
    pid_t pid;
    int fired;
} killer;

static void kill_once(const tsr_progress *p, void *user) {
    killer *k = user;
    if (!k->fired && p->done > 0) {
        kill(k->pid, SIGKILL);
        k->fired = 1;
    }
}

/* The last worker of c's local cluster (the scheduler is pids[0]). */
static pid_t a_worker(tsr_client *c) {
    const pid_t *pids;
    int n = tsr__local_pids(c, &pids);
    cr_assert_geq(n, 3);
    return pids[n - 1];
}

/* A worker killed while a computation on a from_buffer array runs: the chunks it held are sent
 * again from the client's copy (the scheduler re-runs their DATA tasks) and the result is right. */
Test(persist, from_buffer_worker_killed, .timeout = 120) {
    tsr_client *c = local_cluster(3);
    const int64_t n = 160, k = 20;
    double *av = values(n, 2.0), *xr = ref_x(av, n);
    int64_t shape[2] = {n, n}, chunks[2] = {k, k};
    tsr_array *a, *aa, *x, *s;
    OK(c, tsr_from_buffer(c, av, TSR_FLOAT64, 2, shape, chunks, &a));
    OK(c, tsr_matmul(a, a, &aa));
    OK(c, tsr_add_scalar(aa, 1.0, &x));
    OK(c, tsr_sum_axis(x, 1, &s));
    killer kl = {a_worker(c), 0};
    tsr_compute_options o;
    tsr_compute_options_default(&o);
    o.progress = kill_once;
    o.user = &kl;
    o.progress_interval_ms = 0;
    OK(c, tsr_compute(c, &s, 1, &o));
    cr_assert(kl.fired, "the computation ended before any progress report");
    double row[160];
    OK(c, tsr_array_read(s, row, sizeof row));
    for (int64_t i = 0; i < n; i++) {
        double r = 0;
        for (int64_t j = 0; j < n; j++) r += xr[i * n + j];
        cr_assert(close_to(row[i], r), "row %lld = %.17g, expected %.17g", (long long)i, row[i], r);
    }
    tsr_array_free(aa);
    tsr_array_free(x);
    tsr_array_free(s);
    tsr_array_free(a);
    free(av);
    free(xr);
    tsr_client_free(c);
}

/* A worker holding persisted chunks dies between computations: the next computation that uses
 * them still gives the right result (the lost HELD tasks fail and it runs again from the
 * definitions, or the chunks were already made again). */
Test(persist, persisted_worker_killed, .timeout = 120) {
    tsr_client *c = local_cluster(3);
    const int64_t n = 64, k = 16;
    double *av = values(n, 1.0);
    int64_t shape[2] = {n, n}, chunks[2] = {k, k};
    tsr_array *x, *y, *s;
    OK(c, tsr_from_buffer(c, av, TSR_FLOAT64, 2, shape, chunks, &x));
    OK(c, tsr_persist(c, &x, 1, NULL));
    pid_t victim = a_worker(c);
    kill(victim, SIGKILL);
    cr_assert_geq(proc_wait_exit(victim, 10), 0);
    OK(c, tsr_mul_scalar(x, 0.5, &y));
    OK(c, tsr_sum_all(y, &s));
    double v;
    OK(c, tsr_compute_scalar(s, &v));
    double ref = 0;
    for (int64_t i = 0; i < n * n; i++) ref += av[i] * 0.5;
    cr_assert(close_to(v, ref), "%.17g vs %.17g", v, ref);
    tsr_array_free(y);
    tsr_array_free(s);
    tsr_array_free(x);
    free(av);
    tsr_client_free(c);
}

/* A held chunk that is nowhere (its record points at a closed port and a task whose chunk its
 * job freed long ago, as after a loss the scheduler could not repair): the HELD task fails, and
 * tsr_compute runs the computation again from the definitions, with the right result. */
Test(persist, held_chunk_gone_recomputes, .timeout = 120) {
    tsr_client *c = local_cluster(2);
    const int64_t n = 32, k = 16;
    double *av = values(n, 1.0);
    int64_t shape[2] = {n, n}, chunks[2] = {k, k};
    tsr_array *x, *y, *s;
    OK(c, tsr_from_buffer(c, av, TSR_FLOAT64, 2, shape, chunks, &x));
    OK(c, tsr_add_scalar(x, 3.0, &y));
    OK(c, tsr_persist(c, &y, 1, NULL));
    free(y->computed.addr[1]);
    y->computed.addr[1] = strdup("127.0.0.1:1");
    y->computed.task[1] -= 1; /* its DATA input's task, freed since */
    OK(c, tsr_sum_all(y, &s));
    double v;
    OK(c, tsr_compute_scalar(s, &v));
    double ref = 0;
    for (int64_t i = 0; i < n * n; i++) ref += av[i] + 3.0;
    cr_assert(close_to(v, ref), "%.17g vs %.17g", v, ref);
    /* The retry lowered y from its definition: its data was sent again. */
    cr_assert_eq(op_tasks(c, "from_buffer"), 4);
    tsr_array_free(y);
    tsr_array_free(s);
    tsr_array_free(x);
    free(av);
    tsr_client_free(c);
}

/* A graph whose HELD task names another client's job is refused by the scheduler (its worker
 * would fetch that chunk with the job's capability), and the other client's data stays its own. */
Test(persist, held_of_other_client_refused, .timeout = 120) {
    tsr_client *b = local_cluster(1);
    tsr_client_options co;
    tsr_client_options_default(&co);
    co.token = tsr_client_token(b);
    tsr_client *a = NULL;
    cr_assert_eq(tsr_client_connect(tsr_client_address(b), &co, &a), 0, "%s", tsr_last_error());
    int64_t shape[1] = {8}, chunks[1] = {4};
    double v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, zero[8] = {0};
    tsr_array *x, *fake, *s;
    OK(b, tsr_from_buffer(b, v, TSR_FLOAT64, 1, shape, chunks, &x));
    OK(b, tsr_persist(b, &x, 1, NULL));
    /* Client a forges a persisted array that points at b's chunks. */
    OK(a, tsr_from_buffer(a, zero, TSR_FLOAT64, 1, shape, chunks, &fake));
    tsr__computed saved = fake->computed;
    fake->computed = x->computed;
    fake->computed.jobref = NULL;
    fake->persisted = 1;
    OK(a, tsr_sum_all(fake, &s));
    int rc = tsr_compute(a, &s, 1, NULL);
    cr_assert_neq(rc, 0);
    cr_assert(strstr(tsr_client_errmsg(a), "held chunk"), "%s", tsr_client_errmsg(a));
    fake->computed = saved;
    fake->persisted = 0;
    tsr_array_free(s);
    tsr_array_free(fake);
    tsr_client_free(a);
    double back[8];
    OK(b, tsr_array_read(x, back, sizeof back));
    cr_assert_eq(memcmp(back, v, sizeof v), 0);
    tsr_array_free(x);
    tsr_client_free(b);
}

/* tsr_client_free with arrays alive (computed, persisted, from_buffer, lazy, inside a program):
 * the handles stay valid and inert, and freeing them afterwards is safe (ASan: no leak, no
 * use-after-free). */
Test(persist, client_free_with_live_arrays, .timeout = 120) {
    tsr_client *c = local_cluster(1);
    int64_t shape[1] = {10}, chunks[1] = {4};
    double v[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    tsr_array *a, *b, *s, *lazy;
    OK(c, tsr_from_buffer(c, v, TSR_FLOAT64, 1, shape, chunks, &a));
    OK(c, tsr_add_scalar(a, 1.0, &b));
    OK(c, tsr_persist(c, &b, 1, NULL));
    OK(c, tsr_sum_all(b, &s));
    double r;
    OK(c, tsr_compute_scalar(s, &r));
    cr_assert_eq(r, 65.0);
    OK(c, tsr_mul_scalar(s, 2.0, &lazy));
    tsr_program *p;
    OK(c, tsr_program_load_string(c,
                                  "{\"tessera\": 1, \"arrays\": {\"z\": {\"op\": \"zeros\", "
                                  "\"shape\": [3], \"dtype\": \"float64\"}}, \"outputs\": {}}",
                                  "inline", &p));
    tsr_client_free(c);
    /* Inert handles: accessors answer, building or computing fails cleanly. */
    cr_assert_eq(tsr_array_shape(b)[0], 10);
    cr_assert_null(tsr_array_client(b));
    tsr_array *bad = NULL;
    cr_assert_eq(tsr_add_scalar(b, 1.0, &bad), TSR_EINVALID);
    cr_assert_null(bad);
    cr_assert_eq(tsr_compute_scalar(s, &r), TSR_EINVALID);
    double buf[10];
    cr_assert_eq(tsr_array_read(b, buf, sizeof buf), TSR_ENOTCOMPUTED);
    tsr_array_free(lazy);
    tsr_array_free(s);
    tsr_array_free(b);
    tsr_array_free(a);
    tsr_program_free(p);
}

/* The same offline, and detaching twice-referenced arrays in either free order. */
Test(persist, client_free_offline, .timeout = 30) {
    tsr_client *c;
    cr_assert_eq(tsr_client_new_offline(&c), 0);
    int64_t shape[2] = {4, 4};
    double v[16] = {0};
    tsr_array *a, *b, *m;
    OK(c, tsr_from_buffer(c, v, TSR_FLOAT64, 2, shape, NULL, &a));
    OK(c, tsr_matmul(a, a, &b));
    OK(c, tsr_sum_axis(b, -1, &m));
    tsr_array_free(b);
    /* An empty array needs no data. */
    int64_t none[2] = {0, 3};
    tsr_array *e;
    OK(c, tsr_from_buffer(c, NULL, TSR_INT64, 2, none, NULL, &e));
    cr_assert_eq(tsr_array_size(e), 0);
    cr_assert_eq(tsr_task_count(&e, 1), 1);
    tsr_client_free(c);
    tsr_array_free(e);
    tsr_array_free(a); /* still an operand of m */
    cr_assert_str_eq(tsr_array_op(m), "sum");
    tsr_array_free(m);
}

/* Scopes free what was made in them: a six-term expression, a kept result that outlives its
 * scope, a handle freed by hand inside one, nesting, and a scope left open at tsr_client_free
 * (ASan: nothing leaks, nothing is freed twice). */
Test(persist, scopes_release_intermediates, .timeout = 30) {
    tsr_client *c;
    cr_assert_eq(tsr_client_new_offline(&c), 0);
    cr_assert_eq(tsr_scope_end(c), TSR_EINVALID);
    int64_t shape[2] = {6, 6}, chunks[2] = {3, 3};
    double v[36] = {0};
    tsr_array *a, *kept;
    OK(c, tsr_from_buffer(c, v, TSR_FLOAT64, 2, shape, chunks, &a));
    OK(c, tsr_scope_begin(c));
    tsr_array *ab, *t1, *t2, *t3, *t4, *s;
    OK(c, tsr_matmul(a, a, &ab));
    OK(c, tsr_add_scalar(ab, 1.0, &t1));
    OK(c, tsr_mul_scalar(t1, 2.0, &t2));
    OK(c, tsr_binary(TSR_ADD, t2, a, &t3));
    OK(c, tsr_unary(TSR_EXP, t3, &t4));
    tsr_array_free(t4); /* by hand: the scope forgets it */
    OK(c, tsr_sub_scalar(t3, 0.5, &t4));
    OK(c, tsr_sum_all(t4, &s));
    OK(c, tsr_scope_begin(c)); /* nested */
    tsr_array *inner;
    OK(c, tsr_mean_all(t4, &inner));
    OK(c, tsr_div_scalar(s, 3.0, &kept));
    tsr_scope_keep(kept);
    OK(c, tsr_scope_end(c));
    cr_assert_gt(tsr_task_count(&s, 1), 0);
    OK(c, tsr_scope_end(c)); /* frees ab, t1 .. t4, s */
    cr_assert_gt(tsr_task_count(&kept, 1), 4, "the kept result still has its whole graph");
    cr_assert_str_eq(tsr_array_op(kept), "div");
    OK(c, tsr_scope_begin(c));
    tsr_array *left;
    OK(c, tsr_unary(TSR_NEG, a, &left));
    tsr_client_free(c); /* with a scope open: its handles stay the caller's */
    tsr_array_free(left);
    tsr_array_free(kept);
    tsr_array_free(a);
}
