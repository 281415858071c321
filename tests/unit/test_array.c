/* Lazy arrays and lowering: shape/dtype/chunk inference, validation messages, broadcasting and
 * chunk unification, and the task graphs lowering builds. Expectations are worked out by hand
 * in the comments next to them. Uses an offline client: nothing is computed. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "array/array.h"
#include "kernels/kernels.h"
#include "graph/graph.h"
#include "graph_check.h"

static tsr_client *c;

/* The graphs worked out here are the unfused ones, an operation's tasks each; fusion's counts
 * (chains and sources made inside one task per chunk) are tests/unit/test_fuse.c's. */
static void setup(void) {
    cr_assert_eq(tsr_client_new_offline(&c), 0);
    cr_assert_eq(tsr_client_set_fusion(c, 0), 0);
}

static void teardown(void) {
    tsr_client_free(c);
}

TestSuite(array, .init = setup, .fini = teardown, .timeout = 60);

static tsr_array *rnd(int ndim, const int64_t *shape, const int64_t *chunks) {
    tsr_array *a = NULL;
    cr_assert_eq(tsr_random(c, ndim, shape, chunks, TSR_FLOAT64, 1, &a), 0, "%s",
                 tsr_client_errmsg(c));
    return a;
}

static void assert_chunks(const tsr_array *a, int axis, const int64_t *want, int64_t n) {
    cr_assert_eq(tsr_array_numchunks(a, axis), n, "axis %d: %lld chunks, want %lld", axis,
                 (long long)tsr_array_numchunks(a, axis), (long long)n);
    for (int64_t k = 0; k < n; k++)
        cr_assert_eq(tsr_array_chunks(a, axis)[k], want[k], "axis %d chunk %lld: %lld != %lld",
                     axis, (long long)k, (long long)tsr_array_chunks(a, axis)[k],
                     (long long)want[k]);
}

static void assert_msg(const char *needle) {
    cr_assert(strstr(tsr_client_errmsg(c), needle), "message \"%s\" lacks \"%s\"",
              tsr_client_errmsg(c), needle);
}

/* Lowers and checks the structural invariants every graph must have. */
static void lower(tsr_array *const *arrays, size_t n, tsr_graph *g) {
    tsr__graph_init(g);
    cr_assert_eq(tsr__lower(c, arrays, n, g, 0), 0, "%s", tsr_client_errmsg(c));
    tsr__graph_finish(g);
    char err[256];
    cr_assert_eq(graph_check(g, err, sizeof err), 0, "%s", err);
    for (size_t t = 0; t < g->ntasks; t++)
        for (uint32_t k = 0; k < g->tasks[t].ndeps; k++)
            cr_assert_lt(g->deps[g->tasks[t].deps_off + k], t);
}

static size_t count_kop(const tsr_graph *g, int kop) {
    size_t n = 0;
    for (size_t t = 0; t < g->ntasks; t++) n += g->tasks[t].d.kop == kop;
    return n;
}

/* ---- sources and chunks ------------------------------------------------------------------- */

Test(array, regular_and_ragged_chunks) {
    int64_t shape[2] = {10, 6}, chunks[2] = {4, 6};
    tsr_array *a = NULL;
    cr_assert_eq(tsr_zeros(c, 2, shape, chunks, TSR_FLOAT32, &a), 0);
    cr_assert_eq(tsr_array_ndim(a), 2);
    cr_assert_eq(tsr_array_shape(a)[0], 10);
    cr_assert_eq(tsr_array_dtype(a), TSR_FLOAT32);
    cr_assert_eq(tsr_array_size(a), 60);
    cr_assert_str_eq(tsr_array_op(a), "zeros");
    cr_assert_eq(tsr_array_client(a), c);
    assert_chunks(a, 0, (int64_t[]){4, 4, 2}, 3);
    assert_chunks(a, 1, (int64_t[]){6}, 1);
    cr_assert_eq(tsr_array_numchunks(a, 2), 0);
    cr_assert_null(tsr_array_chunks(a, -1));
    cr_assert_eq(tsr_task_count(&a, 1), 3);
    tsr_array_free(a);
}

Test(array, chunks_larger_than_shape_and_zero_length_axes) {
    int64_t shape[2] = {0, 5}, chunks[2] = {2, 100};
    tsr_array *a = NULL;
    cr_assert_eq(tsr_ones(c, 2, shape, chunks, TSR_FLOAT64, &a), 0);
    assert_chunks(a, 0, (int64_t[]){0}, 1);
    assert_chunks(a, 1, (int64_t[]){5}, 1);
    cr_assert_eq(tsr_array_size(a), 0);
    tsr_array_free(a);
    cr_assert_eq(tsr_zeros(c, 2, shape, NULL, TSR_FLOAT64, &a), 0);
    assert_chunks(a, 0, (int64_t[]){0}, 1);
    assert_chunks(a, 1, (int64_t[]){5}, 1);
    tsr_array_free(a);
}

Test(array, zero_d) {
    tsr_array *a = NULL, *b = NULL;
    cr_assert_eq(tsr_full(c, 0, NULL, NULL, TSR_FLOAT64, 2.5, &a), 0);
    cr_assert_eq(tsr_array_ndim(a), 0);
    cr_assert_eq(tsr_array_size(a), 1);
    cr_assert_eq(tsr_task_count(&a, 1), 1);
    cr_assert_eq(tsr_reduce(TSR_SUM, a, NULL, 0, &b), 0);
    cr_assert_eq(tsr_array_ndim(b), 0);
    /* One FILL, one REDUCE partial that is the result. */
    cr_assert_eq(tsr_task_count(&b, 1), 2);
    tsr_array_free(a);
    tsr_array_free(b);
}

Test(array, default_chunks_halve_the_largest_axis) {
    tsr_array *a = NULL;
    /* 4096x4096 float64 = 128 MiB: halving axis 0 (first on a tie) gives 2048x4096 = 64 MiB. */
    int64_t s1[2] = {4096, 4096};
    cr_assert_eq(tsr_zeros(c, 2, s1, NULL, TSR_FLOAT64, &a), 0);
    assert_chunks(a, 0, (int64_t[]){2048, 2048}, 2);
    assert_chunks(a, 1, (int64_t[]){4096}, 1);
    tsr_array_free(a);
    /* 10000x10000 float64: 5000x10000, 5000x5000, 2500x5000, 2500x2500 = 50 MB. */
    int64_t s2[2] = {10000, 10000};
    cr_assert_eq(tsr_random(c, 2, s2, NULL, TSR_FLOAT64, 0, &a), 0);
    assert_chunks(a, 0, (int64_t[]){2500, 2500, 2500, 2500}, 4);
    assert_chunks(a, 1, (int64_t[]){2500, 2500, 2500, 2500}, 4);
    tsr_array_free(a);
    /* 1e9 float32 (4 GB): halved 6 times to 15625000 elements = 62.5 MB. */
    int64_t s3[1] = {1000000000};
    cr_assert_eq(tsr_zeros(c, 1, s3, NULL, TSR_FLOAT32, &a), 0);
    cr_assert_eq(tsr_array_numchunks(a, 0), 64);
    cr_assert_eq(tsr_array_chunks(a, 0)[0], 15625000);
    tsr_array_free(a);
    /* Ragged halving: 3 x 10000001 float64 -> axis 1 halved (ceil) until under 64 MiB. */
    int64_t s4[2] = {3, 10000001};
    cr_assert_eq(tsr_zeros(c, 2, s4, NULL, TSR_FLOAT64, &a), 0);
    /* 3*10000001*8 = 240 MB -> 5000001 (120 MB) -> 2500001 (60 MB). */
    cr_assert_eq(tsr_array_chunks(a, 0)[0], 3);
    cr_assert_eq(tsr_array_chunks(a, 1)[0], 2500001);
    cr_assert_eq(tsr_array_numchunks(a, 1), 4);
    tsr_array_free(a);
}

Test(array, source_errors) {
    tsr_array *a = (tsr_array *)1;
    int64_t neg[2] = {3, -1}, ok[2] = {3, 4}, zero[2] = {0, 2}, big[2] = {1LL << 40, 1LL << 40};
    cr_assert_eq(tsr_zeros(c, 2, neg, NULL, TSR_FLOAT64, &a), TSR_ESHAPE);
    cr_assert_null(a);
    assert_msg("negative dimension -1 on axis 1");
    cr_assert_eq(tsr_zeros(c, 2, ok, zero, TSR_FLOAT64, &a), TSR_EINVALID);
    assert_msg("chunk size must be positive, got 0 on axis 0");
    cr_assert_eq(tsr_zeros(c, 9, ok, NULL, TSR_FLOAT64, &a), TSR_ESHAPE);
    assert_msg("ndim must be between 0 and 8, got 9");
    cr_assert_eq(tsr_zeros(c, -1, ok, NULL, TSR_FLOAT64, &a), TSR_ESHAPE);
    cr_assert_eq(tsr_zeros(c, 2, big, NULL, TSR_FLOAT64, &a), TSR_ESHAPE);
    assert_msg("too large");
    cr_assert_eq(tsr_zeros(c, 2, NULL, NULL, TSR_FLOAT64, &a), TSR_EINVALID);
    cr_assert_eq(tsr_zeros(c, 2, ok, NULL, (tsr_dtype)7, &a), TSR_EINVALID);
    cr_assert_eq(tsr_zeros(c, 2, ok, NULL, TSR_FLOAT64, NULL), TSR_EINVALID);
    cr_assert_eq(tsr_zeros(NULL, 2, ok, NULL, TSR_FLOAT64, &a), TSR_EINVALID);
    /* Too many chunks for one array. */
    int64_t huge[2] = {1 << 20, 1 << 20}, one[2] = {1, 1};
    cr_assert_eq(tsr_zeros(c, 2, huge, one, TSR_FLOAT64, &a), TSR_EINVALID);
    assert_msg("chunks too small");
}

Test(array, arange) {
    tsr_array *a = NULL;
    /* ceil((10 - 0) / 3) = 4 elements: 0 3 6 9. */
    cr_assert_eq(tsr_arange(c, 0, 10, 3, 3, TSR_FLOAT64, &a), 0);
    cr_assert_eq(tsr_array_shape(a)[0], 4);
    assert_chunks(a, 0, (int64_t[]){3, 1}, 2);
    cr_assert_str_eq(tsr_array_op(a), "arange");
    tsr_graph g;
    lower(&a, 1, &g);
    cr_assert_eq(g.ntasks, 2);
    const tsr_kdesc *d = &g.tasks[1].d;
    cr_assert_eq(d->kop, TSR_KOP_ARANGE);
    cr_assert_eq(d->nf, 2);
    cr_assert_eq(d->f[0], 0.0);
    cr_assert_eq(d->f[1], 3.0);
    cr_assert_eq(d->ni, 1);
    cr_assert_eq(d->i[0], 3);
    cr_assert_eq(d->shape[0], 1);
    tsr__graph_free(&g);
    tsr_array_free(a);
    cr_assert_eq(tsr_arange(c, 5, 0, -1, 0, TSR_FLOAT32, &a), 0); /* 5 4 3 2 1 */
    cr_assert_eq(tsr_array_shape(a)[0], 5);
    cr_assert_eq(tsr_array_numchunks(a, 0), 1);
    tsr_array_free(a);
    cr_assert_eq(tsr_arange(c, 0, 1, 0, 0, TSR_FLOAT64, &a), TSR_EINVALID);
    assert_msg("step must not be zero");
    cr_assert_eq(tsr_arange(c, 5, 0, 1, 0, TSR_FLOAT64, &a), TSR_ESHAPE);
    assert_msg("negative length");
    cr_assert_eq(tsr_arange(c, 0, INFINITY, 1, 0, TSR_FLOAT64, &a), TSR_EINVALID);
}

Test(array, random_descriptor_layout) {
    int64_t shape[2] = {5, 7}, chunks[2] = {2, 3};
    tsr_array *a = NULL;
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT32, 42, &a), 0);
    tsr_graph g;
    lower(&a, 1, &g);
    cr_assert_eq(g.ntasks, 9); /* 3 x 3 chunks */
    cr_assert_eq(g.noutputs, 9);
    /* Chunk (1,2) is row-major chunk 5: offset (2,6), shape (2,1). */
    const tsr_kdesc *d = &g.tasks[g.outputs[5]].d;
    cr_assert_eq(d->kop, TSR_KOP_RANDOM);
    cr_assert_eq(d->dtype, TSR_FLOAT32);
    cr_assert_eq(d->ndim, 2);
    cr_assert_eq(d->shape[0], 2);
    cr_assert_eq(d->shape[1], 1);
    cr_assert_eq(d->ni, 5);
    int64_t want[5] = {42, 5, 7, 2, 6};
    for (int k = 0; k < 5; k++) cr_assert_eq(d->i[k], want[k]);
    cr_assert_eq(a->lower_tasks[5], g.outputs[5]);
    cr_assert_str_eq(g.arrays[g.tasks[0].array].op, "random");
    tsr__graph_free(&g);
    tsr_array_free(a);
}

Test(array, full_descriptor_layout) {
    int64_t shape[1] = {4}, chunks[1] = {4};
    tsr_array *a = NULL;
    cr_assert_eq(tsr_full(c, 1, shape, chunks, TSR_FLOAT64, -3.5, &a), 0);
    cr_assert_str_eq(tsr_array_op(a), "full");
    tsr_graph g;
    lower(&a, 1, &g);
    cr_assert_eq(g.tasks[0].d.kop, TSR_KOP_FILL);
    cr_assert_eq(g.tasks[0].d.nf, 1);
    cr_assert_eq(g.tasks[0].d.f[0], -3.5);
    tsr__graph_free(&g);
    tsr_array_free(a);
}

Test(array, load_npy) {
    char path[] = "/tmp/tsr_test_array_XXXXXX.npy";
    int fd = mkstemps(path, 4);
    cr_assert_geq(fd, 0);
    int64_t shape[2] = {3, 4};
    char hdr[256];
    int n = tsr__npy_format_header(TSR_FLOAT32, 2, shape, hdr, sizeof hdr);
    cr_assert_gt(n, 0);
    float data[12] = {0};
    cr_assert_eq(write(fd, hdr, (size_t)n), n);
    cr_assert_eq(write(fd, data, sizeof data), (ssize_t)sizeof data);
    close(fd);

    tsr_array *a = NULL;
    int64_t chunks[2] = {2, 4};
    cr_assert_eq(tsr_load_npy(c, path, chunks, &a), 0, "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_array_dtype(a), TSR_FLOAT32);
    cr_assert_eq(tsr_array_shape(a)[1], 4);
    cr_assert_str_eq(tsr_array_op(a), "load");
    tsr_graph g;
    lower(&a, 1, &g);
    cr_assert_eq(g.ntasks, 2);
    const tsr_kdesc *d = &g.tasks[1].d;
    cr_assert_eq(d->kop, TSR_KOP_LOAD);
    cr_assert_str_eq(d->s, path);
    int64_t want[6] = {n, TSR_FLOAT32, 3, 4, 2, 0};
    cr_assert_eq(d->ni, 6);
    for (int k = 0; k < 6; k++) cr_assert_eq(d->i[k], want[k]);
    cr_assert_eq(d->shape[0], 1);
    tsr__graph_free(&g);
    tsr_array_free(a);
    unlink(path);
    cr_assert_lt(tsr_load_npy(c, "/nonexistent/x.npy", NULL, &a), 0);
    assert_msg("/nonexistent/x.npy");
    cr_assert_null(a);
}

/* ---- names -------------------------------------------------------------------------------- */

Test(array, names) {
    int64_t shape[1] = {4};
    tsr_array *a = rnd(1, shape, NULL);
    cr_assert(strncmp(tsr_array_name(a), "random-", 7) == 0, "%s", tsr_array_name(a));
    cr_assert_eq(tsr_array_set_name(a, "_ok1"), 0);
    cr_assert_str_eq(tsr_array_name(a), "_ok1");
    cr_assert_eq(tsr_array_set_name(a, "1abc"), TSR_EINVALID);
    assert_msg("1abc");
    cr_assert_eq(tsr_array_set_name(a, "a-b"), TSR_EINVALID);
    cr_assert_eq(tsr_array_set_name(a, ""), TSR_EINVALID);
    cr_assert_eq(tsr_array_set_name(a, NULL), TSR_EINVALID);
    cr_assert_str_eq(tsr_array_name(a), "_ok1");
    cr_assert_str_eq(tsr_unary_name(TSR_TANH), "tanh");
    cr_assert_str_eq(tsr_binary_name(TSR_MINIMUM), "minimum");
    cr_assert_str_eq(tsr_reduce_name(TSR_MEAN), "mean");
    cr_assert_null(tsr_unary_name((tsr_unary_op)99));
    cr_assert_null(tsr_binary_name((tsr_binary_op)-1));
    cr_assert_null(tsr_reduce_name((tsr_reduce_op)11)); /* one past TSR_ARGMIN */
    tsr_array_free(a);
    tsr_array_free(NULL);
}

/* A failed constructor reports under its operands' names, never under the generated name of the
 * array it did not make, and takes no generated name: the next array made gets the next one. */
Test(array, failed_constructors_take_no_names) {
    int64_t shape[2] = {10, 10}, chunks[2] = {5, 5}, bad[2] = {0, 5};
    tsr_array *a, *out = NULL;
    cr_assert_eq(tsr_zeros(c, 2, shape, chunks, TSR_FLOAT64, &a), 0);
    cr_assert_str_eq(tsr_array_name(a), "zeros-1");
    cr_assert_eq(tsr_rechunk(a, bad, &out), TSR_EINVALID);
    cr_assert_null(out);
    const char *msg = tsr_client_errmsg(c);
    cr_assert(strstr(msg, "zeros-1") && !strstr(msg, "rechunk-"), "%s", msg);
    cr_assert_eq(tsr_zeros(c, 2, shape, bad, TSR_FLOAT64, &out), TSR_EINVALID);
    msg = tsr_client_errmsg(c);
    cr_assert(!strstr(msg, "zeros-2"), "%s", msg);
    int64_t vshape[1] = {3};
    tsr_array *v;
    cr_assert_eq(tsr_ones(c, 1, vshape, NULL, TSR_FLOAT64, &v), 0);
    cr_assert_str_eq(tsr_array_name(v), "ones-2");
    cr_assert_neq(tsr_binary(TSR_ADD, a, v, &out), 0);
    cr_assert_neq(tsr_matmul(a, v, &out), 0);
    int axes[2] = {0, 0};
    cr_assert_neq(tsr_transpose(a, axes, 2, &out), 0);
    cr_assert_neq(tsr_reduce(TSR_SUM, a, (int[]){5}, 1, &out), 0);
    cr_assert_neq(tsr_astype(a, (tsr_dtype)99, &out), 0);
    cr_assert_neq(tsr_unary((tsr_unary_op)99, a, &out), 0);
    cr_assert_null(out);
    tsr_array *t;
    cr_assert_eq(tsr_rechunk(a, NULL, &t), 0);
    cr_assert_str_eq(tsr_array_name(t), "rechunk-3");
    tsr_array_free(t);
    tsr_array_free(v);
    tsr_array_free(a);
}

/* ---- elementwise ---------------------------------------------------------------------------- */

Test(array, unary_astype_scalar) {
    int64_t shape[2] = {4, 6}, chunks[2] = {2, 4};
    tsr_array *x = NULL, *u = NULL, *t = NULL, *s = NULL;
    cr_assert_eq(tsr_random(c, 2, shape, chunks, TSR_FLOAT32, 0, &x), 0);
    cr_assert_eq(tsr_unary(TSR_EXP, x, &u), 0);
    cr_assert_str_eq(tsr_array_op(u), "exp");
    cr_assert_eq(tsr_array_dtype(u), TSR_FLOAT32);
    assert_chunks(u, 1, (int64_t[]){4, 2}, 2);
    cr_assert_eq(tsr_astype(u, TSR_FLOAT64, &t), 0);
    cr_assert_eq(tsr_array_dtype(t), TSR_FLOAT64);
    /* A scalar never promotes: float32 + 1.5 stays float32. */
    cr_assert_eq(tsr_binary_scalar(TSR_SUB, x, 1.5, 1, &s), 0);
    cr_assert_eq(tsr_array_dtype(s), TSR_FLOAT32);
    cr_assert_str_eq(tsr_array_op(s), "sub");
    tsr_array *outs[2] = {t, s};
    tsr_graph g;
    lower(outs, 2, &g);
    /* 4 random + 4 exp + 4 astype + 4 scalar. */
    cr_assert_eq(g.ntasks, 16);
    cr_assert_eq(count_kop(&g, TSR_KOP_ASTYPE), 4);
    const tsr_kdesc *d = &g.tasks[g.outputs[4]].d;
    cr_assert_eq(d->kop, TSR_KOP_BINARY_SCALAR);
    cr_assert_eq(d->fn, TSR_SUB);
    cr_assert_eq(d->f[0], 1.5);
    cr_assert_eq(d->i[0], 1);
    cr_assert_eq(g.tasks[g.outputs[0]].d.kop, TSR_KOP_ASTYPE);
    tsr__graph_free(&g);
    tsr_array *bad = NULL;
    cr_assert_eq(tsr_unary((tsr_unary_op)42, x, &bad), TSR_EINVALID);
    cr_assert_eq(tsr_astype(x, (tsr_dtype)5, &bad), TSR_EINVALID);
    cr_assert_eq(tsr_unary(TSR_NEG, NULL, &bad), TSR_EINVALID);
    cr_assert_null(bad);
    tsr_array_free(x);
    tsr_array_free(u);
    tsr_array_free(t);
    tsr_array_free(s);
}

Test(array, broadcasting_shapes) {
    int64_t s34[2] = {3, 4}, s4[1] = {4}, s514[3] = {5, 1, 4}, s31[2] = {3, 1}, s5[1] = {5};
    tsr_array *a = rnd(2, s34, NULL), *b = rnd(1, s4, NULL), *p = rnd(3, s514, NULL),
              *q = rnd(2, s31, NULL), *r = rnd(1, s5, NULL), *o = NULL;
    cr_assert_eq(tsr_binary(TSR_ADD, a, b, &o), 0);
    cr_assert_eq(tsr_array_ndim(o), 2);
    cr_assert_eq(tsr_array_shape(o)[0], 3);
    cr_assert_eq(tsr_array_shape(o)[1], 4);
    cr_assert_str_eq(tsr_array_op(o), "add");
    tsr_array_free(o);
    /* (5,1,4) with (3,1) -> (5,3,4). */
    cr_assert_eq(tsr_binary(TSR_MUL, p, q, &o), 0);
    cr_assert_eq(tsr_array_ndim(o), 3);
    cr_assert_eq(tsr_array_shape(o)[0], 5);
    cr_assert_eq(tsr_array_shape(o)[1], 3);
    cr_assert_eq(tsr_array_shape(o)[2], 4);
    tsr_array_free(o);
    cr_assert_eq(tsr_array_set_name(a, "X"), 0);
    cr_assert_eq(tsr_array_set_name(r, "Y"), 0);
    cr_assert_eq(tsr_binary(TSR_ADD, a, r, &o), TSR_ESHAPE);
    cr_assert_null(o);
    assert_msg("operands could not be broadcast together with shapes (3,4) (5,)");
    assert_msg("X");
    assert_msg("Y");
    cr_assert_eq(tsr_binary((tsr_binary_op)TSR__BINARY_COUNT, a, b, &o), TSR_EINVALID);
    cr_assert_eq(tsr_binary(TSR_ADD, a, NULL, &o), TSR_EINVALID);
    tsr_array_free(a);
    tsr_array_free(b);
    tsr_array_free(p);
    tsr_array_free(q);
    tsr_array_free(r);
}

Test(array, binary_promotes) {
    int64_t s[1] = {8};
    tsr_array *a = NULL, *b = NULL, *o = NULL;
    cr_assert_eq(tsr_ones(c, 1, s, NULL, TSR_FLOAT32, &a), 0);
    cr_assert_eq(tsr_ones(c, 1, s, NULL, TSR_FLOAT64, &b), 0);
    cr_assert_eq(tsr_binary(TSR_POW, a, b, &o), 0);
    cr_assert_eq(tsr_array_dtype(o), TSR_FLOAT64);
    tsr_array_free(o);
    cr_assert_eq(tsr_binary(TSR_MAXIMUM, a, a, &o), 0);
    cr_assert_eq(tsr_array_dtype(o), TSR_FLOAT32);
    cr_assert_eq(tsr_task_count(&o, 1), 2); /* one source chunk shared, one maximum */
    tsr_array_free(o);
    tsr_array_free(a);
    tsr_array_free(b);
}

Test(array, chunk_unification) {
    /* x: 4,4,2 (boundaries 4 8 10); y: 3,3,3,1 (3 6 9 10); union 3 4 6 8 9 10. */
    int64_t s[1] = {10}, c4[1] = {4}, c3[1] = {3};
    tsr_array *x = rnd(1, s, c4), *y = rnd(1, s, c3), *o = NULL;
    cr_assert_eq(tsr_binary(TSR_ADD, x, y, &o), 0);
    assert_chunks(o, 0, (int64_t[]){3, 1, 2, 2, 1, 1}, 6);
    tsr_graph g;
    lower(&o, 1, &g);
    /* 3 + 4 sources, 6 + 6 assembles, 6 adds. */
    cr_assert_eq(g.ntasks, 25);
    cr_assert_eq(count_kop(&g, TSR_KOP_ASSEMBLE), 12);
    cr_assert_eq(count_kop(&g, TSR_KOP_BINARY), 6);
    /* Output chunk 2 covers [4,6): x's rechunk takes x chunk 1 (offset 4); the ASSEMBLE
     * parameters are [out_offset, in_offset]. */
    const tsr_gtask *add = &g.tasks[g.outputs[2]];
    cr_assert_eq(add->ndeps, 2);
    const tsr_gtask *ax = &g.tasks[g.deps[add->deps_off]];
    cr_assert_eq(ax->d.kop, TSR_KOP_ASSEMBLE);
    cr_assert_eq(ax->ndeps, 1);
    cr_assert_eq(ax->d.ni, 2);
    cr_assert_eq(ax->d.i[0], 4);
    cr_assert_eq(ax->d.i[1], 4);
    cr_assert_eq(ax->d.shape[0], 2);
    tsr__graph_free(&g);
    tsr_array_free(o);
    tsr_array_free(x);
    tsr_array_free(y);
}

Test(array, broadcast_chunks_and_deps) {
    /* (6,4) chunks (2,4) + (4,) chunks 2: axis 1 unifies to [2,2]; the 2-d operand is rechunked
     * (3x2 assembles), the 1-d one is not. */
    int64_t s64[2] = {6, 4}, c24[2] = {2, 4}, s4[1] = {4}, c2[1] = {2};
    tsr_array *x = rnd(2, s64, c24), *y = rnd(1, s4, c2), *o = NULL;
    cr_assert_eq(tsr_binary(TSR_DIV, x, y, &o), 0);
    assert_chunks(o, 0, (int64_t[]){2, 2, 2}, 3);
    assert_chunks(o, 1, (int64_t[]){2, 2}, 2);
    tsr_graph g;
    lower(&o, 1, &g);
    cr_assert_eq(g.ntasks, 3 + 2 + 6 + 6);
    /* Output chunk (2,1) uses y's chunk 1: a RANDOM of shape (2,) at offset 2. */
    const tsr_gtask *t = &g.tasks[g.outputs[5]];
    const tsr_gtask *yt = &g.tasks[g.deps[t->deps_off + 1]];
    cr_assert_eq(yt->d.kop, TSR_KOP_RANDOM);
    cr_assert_eq(yt->d.ndim, 1);
    cr_assert_eq(yt->d.i[2], 2);
    tsr__graph_free(&g);
    tsr_array_free(o);
    tsr_array_free(x);
    tsr_array_free(y);

    /* (4,1) chunks (2,1) with (1,4) chunks (1,2): each broadcasts along the other's axis;
     * output (4,4) chunks [2,2]x[2,2], 4 adds on 2 + 2 sources, no rechunk. */
    int64_t s41[2] = {4, 1}, c21[2] = {2, 1}, s14[2] = {1, 4}, c12[2] = {1, 2};
    x = rnd(2, s41, c21);
    y = rnd(2, s14, c12);
    cr_assert_eq(tsr_binary(TSR_SUB, x, y, &o), 0);
    assert_chunks(o, 0, (int64_t[]){2, 2}, 2);
    assert_chunks(o, 1, (int64_t[]){2, 2}, 2);
    lower(&o, 1, &g);
    cr_assert_eq(g.ntasks, 8);
    const tsr_gtask *b = &g.tasks[g.outputs[3]];
    cr_assert_eq(g.tasks[g.deps[b->deps_off]].d.shape[1], 1);
    cr_assert_eq(g.tasks[g.deps[b->deps_off + 1]].d.shape[0], 1);
    tsr__graph_free(&g);
    tsr_array_free(o);
    tsr_array_free(x);
    tsr_array_free(y);
}

/* ---- matmul --------------------------------------------------------------------------------- */

/* docs/arrays.md: a matmul task takes g k-steps, g = 1 when one step is at least 64 MFLOP
 * (2 m n k of one block product), else the fewest steps that reach it, at most 32. */
/* The lowering's rule, restated: the fewest steps whose flops reach 128 MFLOP (at most 32); more
 * if the chain would otherwise have over 4 tasks, as long as a task stays under 1.1 GFLOP; then
 * the chain's nk steps in that many tasks' worth of equal groups, rounded up. */
static int64_t want_group(double m, double n, double k, int64_t nk) {
    double step = 2 * m * n * k;
    if (nk <= 1) return 1;
    int64_t g = 1;
    while (g < 32 && (double)g * step < 128e6) g++;
    while (g < 32 && (nk + g - 1) / g > 4 && (double)(g + 1) * step <= 1.1e9) g++;
    int64_t tasks = (nk + g - 1) / g;
    return (nk + tasks - 1) / tasks;
}

Test(array, matmul_blocked) {
    /* Chunks of 2200 (not packed: above TSR__PACKED_MAX): 21 GFLOP a step, one step a task. */
    int64_t s[2] = {8800, 8800}, ch[2] = {2200, 2200};
    cr_assert_eq(want_group(2200, 2200, 2200, 4), 1);
    tsr_array *a = rnd(2, s, ch), *b = rnd(2, s, ch), *m = NULL;
    cr_assert_eq(tsr_matmul(a, b, &m), 0);
    cr_assert_str_eq(tsr_array_op(m), "matmul");
    tsr_graph g;
    lower(&m, 1, &g);
    /* 4x4 output chunks, a chain of 4 block products each: 64 MATMUL; 32 sources. */
    cr_assert_eq(count_kop(&g, TSR_KOP_MATMUL), 64);
    cr_assert_eq(g.ntasks, 96);
    cr_assert_eq(g.noutputs, 16);
    /* C[0,0]'s chain: first block product takes A[0,0] and B[0,0] (tasks 0 and 1 in depth-first
     * order), later ones add the previous partial. */
    const tsr_gtask *t = &g.tasks[g.outputs[0]];
    cr_assert_eq(t->ndeps, 3);
    cr_assert_eq(t->d.ni, 0);
    cr_assert_eq(t->d.shape[0], 2200);
    cr_assert_eq(t->flops, 2.0 * 2200 * 2200 * 2200);
    uint32_t prev = g.deps[t->deps_off + 2];
    int links = 1;
    while (g.tasks[prev].ndeps == 3) {
        prev = g.deps[g.tasks[prev].deps_off + 2];
        links++;
    }
    cr_assert_eq(links, 3);
    cr_assert_eq(g.tasks[prev].ndeps, 2);
    cr_assert_eq(g.deps[g.tasks[prev].deps_off], 0);
    cr_assert_eq(g.deps[g.tasks[prev].deps_off + 1], 1);
    cr_assert_eq(prev, 2);
    tsr__graph_free(&g);
    tsr_array_free(m);
    tsr_array_free(a);
    tsr_array_free(b);
}

/* Small blocks: the k-steps of a chain are grouped into tasks of g steps, inputs A_0, B_0, A_1,
 * B_1, ... then the previous partial; the last group takes what is left. */
/* Float64 chunks of 256 to 2048 are multiplied over packed tiles (kernels.h, MATMUL_PACKED):
 * each operand chunk gets one packing task, which the products take in its place; a random
 * source's is a PACK_SOURCE (made wherever needed, as the source would be), in place of it. */
static int packs(int64_t chunk) {
    return chunk >= TSR__PACKED_MIN && chunk <= TSR__PACKED_MAX;
}

static void check_groups(int64_t n, int64_t chunk) {
    int64_t s[2] = {n, n}, ch[2] = {chunk, chunk};
    int64_t nk = n / chunk, gs = want_group((double)chunk, (double)chunk, (double)chunk, nk);
    int64_t per_chain = (nk + gs - 1) / gs;
    int pk = packs(chunk), kop = pk ? TSR_KOP_MATMUL_PACKED : TSR_KOP_MATMUL;
    tsr_array *a = rnd(2, s, ch), *b = rnd(2, s, ch), *m = NULL;
    cr_assert_eq(tsr_matmul(a, b, &m), 0);
    tsr_graph g;
    lower(&m, 1, &g);
    cr_assert_eq(count_kop(&g, kop), nk * nk * per_chain, "n %lld chunk %lld", (long long)n,
                 (long long)chunk);
    cr_assert_eq(count_kop(&g, TSR_KOP_PACK_SOURCE), pk ? 2 * nk * nk : 0);
    cr_assert_eq(count_kop(&g, TSR_KOP_RANDOM), pk ? 0 : 2 * nk * nk);
    cr_assert_eq(g.ntasks, nk * nk * per_chain + 2 * nk * nk);
    /* Walk C[0,0]'s chain back from its last task. */
    uint32_t t = g.outputs[0];
    int64_t left = nk, groups = 0;
    for (;;) {
        const tsr_gtask *x = &g.tasks[t];
        int64_t steps = groups == 0 ? nk - (per_chain - 1) * gs : gs; /* the last is shorter */
        cr_assert_eq(x->d.kop, kop);
        cr_assert_eq(x->d.ni, steps > 1 ? 1u : 0u);
        if (steps > 1) cr_assert_eq(x->d.i[0], steps);
        cr_assert_eq(x->flops, 2.0 * (double)chunk * (double)chunk * (double)(chunk * steps));
        left -= steps;
        groups++;
        int first = left == 0;
        cr_assert_eq(x->ndeps, (uint32_t)(2 * steps + (first ? 0 : 1)));
        /* A_s is A[0, k0 + s] and B_s is B[k0 + s, 0]: both sources, or their PACK tasks (A's
         * as a left operand, B's as a right one, each of the packed length). */
        for (int64_t q = 0; q < 2 * steps; q++) {
            const tsr_gtask *in = &g.tasks[g.deps[x->deps_off + (uint32_t)q]];
            if (pk) { /* i = [role, RANDOM, rows, cols, RANDOM's i...] */
                cr_assert_eq(in->d.kop, TSR_KOP_PACK_SOURCE);
                cr_assert_eq(in->d.i[0], q % 2);
                cr_assert_eq(in->d.i[1], TSR_KOP_RANDOM);
                cr_assert_eq(in->d.i[2], chunk);
                cr_assert_eq(in->d.i[3], chunk);
                cr_assert_eq(in->d.ni, 4u + 5u); /* seed, gshape[2], offset[2] */
                cr_assert_eq(in->d.shape[0], tsr__packed_len((int)(q % 2), chunk, chunk));
                cr_assert_eq(in->ndeps, 0u);
            } else {
                cr_assert_eq(in->d.kop, TSR_KOP_RANDOM);
            }
        }
        if (first) break;
        t = g.deps[x->deps_off + (uint32_t)(2 * steps)];
    }
    cr_assert_eq(groups, per_chain);
    tsr__graph_free(&g);
    tsr_array_free(m);
    tsr_array_free(a);
    tsr_array_free(b);
}

Test(array, matmul_groups_small_blocks) {
    cr_assert_eq(want_group(256, 256, 256, 16), 4);   /* 33.5 MFLOP a step */
    cr_assert_eq(want_group(128, 128, 128, 32), 16);  /* 4.2 MFLOP: 31 steps, so 2 tasks of 16 */
    cr_assert_eq(want_group(100, 100, 100, 35), 18);  /* 2 MFLOP: capped at 32, so 18 + 17 */
    cr_assert_eq(want_group(256, 256, 256, 10), 4);   /* 3 tasks: 4 + 4 + 2 */
    cr_assert_eq(want_group(512, 512, 512, 8), 2);    /* 268 MFLOP: at most 4 tasks a chain */
    cr_assert_eq(want_group(512, 512, 512, 16), 4);   /* 1.07 GFLOP a task */
    cr_assert_eq(want_group(1024, 1024, 1024, 8), 1); /* 2.1 GFLOP a step: no more */
    cr_assert_eq(want_group(128, 128, 128, 256), 32); /* capped at 32 steps */
    check_groups(1024, 256);                          /* 4 steps: one group */
    check_groups(4096, 512);                          /* 8 steps: 4 groups of 2 */
    check_groups(2560, 256);                          /* 10 steps: 4, 4, then 2 */
    check_groups(1280, 128);                          /* 10 steps: one group */
    check_groups(4096, 128);                          /* 32 steps: 2 groups of 16 */
    check_groups(400, 100);                           /* 4 steps: one group */
    check_groups(3500, 100);                          /* 35 steps: 18, then 17 */
}

/* Which products are lowered over packed tiles: float 2-d ones (operands of the output's dtype)
 * whose chunks are all 256 to 2048 on every side; each operand chunk is packed once, whatever
 * number of products reads it. */
static void check_packing(int64_t m, int64_t k, int64_t n, int64_t cm, int64_t ck, int64_t cn,
                          tsr_dtype dt, size_t want_packs) {
    int64_t sa[2] = {m, k}, sb[2] = {k, n}, ca[2] = {cm, ck}, cb[2] = {ck, cn};
    tsr_array *a = NULL, *b = NULL, *p = NULL;
    cr_assert_eq(tsr_random(c, 2, sa, ca, dt, 1, &a), 0);
    cr_assert_eq(tsr_random(c, 2, sb, cb, dt, 2, &b), 0);
    cr_assert_eq(tsr_matmul(a, b, &p), 0);
    tsr_graph g;
    lower(&p, 1, &g);
    cr_assert_eq(count_kop(&g, TSR_KOP_PACK_SOURCE), want_packs, "%lldx%lldx%lld in %lld/%lld/%lld",
                 (long long)m, (long long)k, (long long)n, (long long)cm, (long long)ck,
                 (long long)cn);
    cr_assert_eq(count_kop(&g, want_packs ? TSR_KOP_MATMUL : TSR_KOP_MATMUL_PACKED), 0);
    tsr__graph_free(&g);
    tsr_array_free(p);
    tsr_array_free(a);
    tsr_array_free(b);
}

Test(array, matmul_packs_float_tiles_of_256_to_2048) {
    check_packing(800, 900, 770, 400, 450, 385, TSR_FLOAT64, 4 + 4);       /* 2x2 and 2x2 chunks */
    check_packing(1536, 2304, 768, 768, 768, 768, TSR_FLOAT64, 6 + 3);     /* A 2x3, B 3x1 */
    check_packing(800, 900, 770, 400, 450, 385, TSR_FLOAT32, 4 + 4);       /* float32 too */
    check_packing(2048, 2048, 2048, 1024, 1024, 1024, TSR_FLOAT64, 4 + 4); /* 1024 */
    check_packing(4096, 4096, 2048, 2048, 2048, 2048, TSR_FLOAT64, 4 + 2); /* the largest */
    check_packing(4096, 4096, 2048, 2049, 2048, 2048, TSR_FLOAT64, 0);     /* OpenBLAS above */
    check_packing(512, 512, 512, 256, 256, 256, TSR_FLOAT64, 4 + 4);       /* the smallest */
    check_packing(510, 510, 510, 255, 255, 255, TSR_FLOAT64, 0);           /* libxsmm below */
    /* A side's last chunk may be smaller (an edge), never larger; the others must be in range. */
    check_packing(1100, 1024, 1024, 512, 512, 512, TSR_FLOAT64, 6 + 4); /* a 76-row edge chunk */
    check_packing(1024, 1024, 1100, 512, 512, 512, TSR_FLOAT64, 4 + 6); /* a 76-column one */
    check_packing(1024, 1100, 1024, 512, 512, 512, TSR_FLOAT64, 6 + 6); /* a 76-deep k-step */
    check_packing(1025, 1024, 1024, 512, 512, 512, TSR_FLOAT64, 6 + 4); /* a 1-row edge */
    check_packing(100, 1024, 1024, 100, 512, 512, TSR_FLOAT64, 0);      /* one chunk of 100 rows */
    check_packing(1024, 1024, 1024, 512, 200, 512, TSR_FLOAT64, 0);     /* k in chunks of 200 */
    check_packing(4200, 1024, 1024, 2100, 512, 512, TSR_FLOAT64,
                  0); /* rows in chunks of 2100: above */
    check_packing(1024, 1000, 1024, 512, 512, 512, TSR_FLOAT64, 4 + 4); /* 488 deep: packed */
    /* A @ A: A's chunks are packed once as left and once as right operands. */
    int64_t s[2] = {1024, 1024}, ch[2] = {512, 512};
    tsr_array *a = rnd(2, s, ch), *p = NULL, *a2 = NULL, *q = NULL;
    cr_assert_eq(tsr_matmul(a, a, &p), 0);
    tsr_graph g;
    lower(&p, 1, &g);
    cr_assert_eq(count_kop(&g, TSR_KOP_PACK_SOURCE), 8);
    cr_assert_eq(count_kop(&g, TSR_KOP_RANDOM), 0);
    tsr__graph_free(&g);
    /* A computed operand (2 * A) gets PACK tasks on its chunks' tasks. */
    cr_assert_eq(tsr_binary_scalar(TSR_MUL, a, 2.0, 0, &a2), 0);
    cr_assert_eq(tsr_matmul(a2, a, &q), 0);
    lower(&q, 1, &g);
    cr_assert_eq(count_kop(&g, TSR_KOP_PACK), 4);
    cr_assert_eq(count_kop(&g, TSR_KOP_PACK_SOURCE), 4);
    for (size_t t = 0; t < g.ntasks; t++)
        if (g.tasks[t].d.kop == TSR_KOP_PACK) {
            cr_assert_eq(g.tasks[t].ndeps, 1u);
            cr_assert_neq(g.tasks[g.deps[g.tasks[t].deps_off]].d.kop, TSR_KOP_RANDOM);
        }
    tsr__graph_free(&g);
    tsr_array_free(q);
    tsr_array_free(a2);
    tsr_array_free(p);
    tsr_array_free(a);
}

Test(array, matmul_errors) {
    int64_t sa[2] = {100, 300}, sb[2] = {200, 50}, s3[3] = {2, 2, 2}, s1[1] = {300};
    tsr_array *a = rnd(2, sa, NULL), *b = rnd(2, sb, NULL), *t = rnd(3, s3, NULL),
              *v = rnd(1, s1, NULL), *m = NULL;
    cr_assert_eq(tsr_array_set_name(a, "A"), 0);
    cr_assert_eq(tsr_array_set_name(b, "B"), 0);
    cr_assert_eq(tsr_matmul(a, b, &m), TSR_ESHAPE);
    assert_msg("matmul needs A.shape[1] == B.shape[0], got 300 and 200");
    /* N-d and 1-d first operands are numpy's @ too (issue 13): refused for their extents. */
    cr_assert_eq(tsr_matmul(t, b, &m), TSR_ESHAPE);
    assert_msg("got 2 and 200");
    cr_assert_eq(tsr_matmul(v, b, &m), TSR_ESHAPE);
    assert_msg("got 300 and 200");
    cr_assert_eq(tsr_matmul(a, t, &m), TSR_ESHAPE);
    cr_assert_eq(tsr_matmul(a, NULL, &m), TSR_EINVALID);
    cr_assert_null(m);
    tsr_array_free(a);
    tsr_array_free(b);
    tsr_array_free(t);
    tsr_array_free(v);
}

Test(array, matmul_rechunks_b_and_vector) {
    /* A (4,6) chunks (2,3): columns [3,3]. B (6,2) chunks (2,2): rows [2,2,2] -> rechunked to
     * [3,3] (2 assembles). C (4,2) chunks [2,2]x[2]: 2 chunks, each one task of its 2 k-blocks
     * (grouped: docs/arrays.md) = 2 MATMUL. */
    int64_t sa[2] = {4, 6}, ca[2] = {2, 3}, sb[2] = {6, 2}, cb[2] = {2, 2};
    tsr_array *a = NULL, *b = NULL, *m = NULL;
    cr_assert_eq(tsr_random(c, 2, sa, ca, TSR_FLOAT32, 0, &a), 0);
    b = rnd(2, sb, cb);
    cr_assert_eq(tsr_matmul(a, b, &m), 0);
    cr_assert_eq(tsr_array_dtype(m), TSR_FLOAT64);
    assert_chunks(m, 0, (int64_t[]){2, 2}, 2);
    assert_chunks(m, 1, (int64_t[]){2}, 1);
    tsr_graph g;
    lower(&m, 1, &g);
    cr_assert_eq(count_kop(&g, TSR_KOP_ASSEMBLE), 2);
    cr_assert_eq(count_kop(&g, TSR_KOP_MATMUL), 2);
    cr_assert_eq(g.ntasks, 4 + 3 + 2 + 2);
    tsr__graph_free(&g);
    tsr_array_free(m);

    /* A @ v with v (6,) chunk 3: out (4,) chunks [2,2], 2 MATMUL of 2 k-steps each. */
    int64_t sv[1] = {6}, cv[1] = {3};
    tsr_array *v = rnd(1, sv, cv);
    cr_assert_eq(tsr_matmul(a, v, &m), 0);
    cr_assert_eq(tsr_array_ndim(m), 1);
    cr_assert_eq(tsr_array_shape(m)[0], 4);
    lower(&m, 1, &g);
    cr_assert_eq(g.ntasks, 4 + 2 + 2);
    cr_assert_eq(g.tasks[g.outputs[1]].d.ndim, 1);
    cr_assert_eq(g.tasks[g.outputs[1]].ndeps, 4);
    tsr__graph_free(&g);
    tsr_array_free(m);
    tsr_array_free(v);
    tsr_array_free(a);
    tsr_array_free(b);
}

/* ---- transpose ------------------------------------------------------------------------------ */

Test(array, transpose) {
    int64_t s[3] = {2, 3, 4}, ch[3] = {1, 2, 3};
    tsr_array *x = rnd(3, s, ch), *t = NULL;
    cr_assert_eq(tsr_transpose(x, NULL, 0, &t), 0);
    cr_assert_eq(tsr_array_shape(t)[0], 4);
    cr_assert_eq(tsr_array_shape(t)[2], 2);
    assert_chunks(t, 0, (int64_t[]){3, 1}, 2);
    assert_chunks(t, 1, (int64_t[]){2, 1}, 2);
    assert_chunks(t, 2, (int64_t[]){1, 1}, 2);
    tsr_graph g;
    lower(&t, 1, &g);
    cr_assert_eq(g.ntasks, 16); /* 8 sources, 8 transposes */
    /* Output chunk (1,0,1) = row-major 5 reads input chunk (1,0,1) reversed -> (1,0,1): offset
     * (1,0,3) in the input. */
    const tsr_gtask *tt = &g.tasks[g.outputs[5]];
    cr_assert_eq(tt->d.kop, TSR_KOP_TRANSPOSE);
    cr_assert_eq(tt->d.i[0], 2);
    cr_assert_eq(tt->d.i[1], 1);
    cr_assert_eq(tt->d.i[2], 0);
    const tsr_gtask *src = &g.tasks[g.deps[tt->deps_off]];
    cr_assert_eq(src->d.i[4], 1);
    cr_assert_eq(src->d.i[5], 0);
    cr_assert_eq(src->d.i[6], 3);
    tsr__graph_free(&g);
    tsr_array_free(t);
    int ax[3] = {1, -3, 2};
    cr_assert_eq(tsr_transpose(x, ax, 3, &t), 0);
    cr_assert_eq(tsr_array_shape(t)[0], 3);
    cr_assert_eq(tsr_array_shape(t)[1], 2);
    tsr_array_free(t);
    int dup[3] = {0, 0, 1}, oob[3] = {0, 1, 3};
    cr_assert_eq(tsr_transpose(x, dup, 3, &t), TSR_EINVALID);
    assert_msg("repeated axis");
    cr_assert_eq(tsr_transpose(x, oob, 3, &t), TSR_EINVALID);
    assert_msg("axis 3 is out of bounds for an array of shape (2,3,4)");
    cr_assert_eq(tsr_transpose(x, dup, 2, &t), TSR_EINVALID);
    tsr_array_free(x);
}

/* ---- reductions ----------------------------------------------------------------------------- */

Test(array, reduce_shapes_and_errors) {
    int64_t s[3] = {2, 3, 4};
    tsr_array *x = NULL, *r = NULL;
    cr_assert_eq(tsr_ones(c, 3, s, NULL, TSR_FLOAT32, &x), 0);
    int axes[2] = {-1, 0};
    cr_assert_eq(tsr_reduce(TSR_MEAN, x, axes, 2, &r), 0);
    cr_assert_eq(tsr_array_ndim(r), 1);
    cr_assert_eq(tsr_array_shape(r)[0], 3);
    cr_assert_eq(tsr_array_dtype(r), TSR_FLOAT32); /* reductions keep the dtype */
    cr_assert_str_eq(tsr_array_op(r), "mean");
    tsr_array_free(r);
    cr_assert_eq(tsr_reduce(TSR_MAX, x, NULL, 0, &r), 0);
    cr_assert_eq(tsr_array_ndim(r), 0);
    tsr_array_free(r);
    int dup[2] = {0, -3}, oob[1] = {3};
    cr_assert_eq(tsr_reduce(TSR_SUM, x, dup, 2, &r), TSR_EINVALID);
    assert_msg("repeated axis");
    cr_assert_eq(tsr_reduce(TSR_SUM, x, oob, 1, &r), TSR_EINVALID);
    assert_msg("out of bounds");
    cr_assert_eq(tsr_reduce((tsr_reduce_op)11, x, NULL, 0, &r), TSR_EINVALID);
    tsr_array_free(x);

    int64_t z[2] = {0, 3};
    cr_assert_eq(tsr_zeros(c, 2, z, NULL, TSR_FLOAT64, &x), 0);
    int a0[1] = {0}, a1[1] = {1};
    cr_assert_eq(tsr_reduce(TSR_MAX, x, a0, 1, &r), TSR_ESHAPE);
    assert_msg("zero-size array to reduction operation maximum which has no identity");
    cr_assert_eq(tsr_reduce(TSR_MIN, x, NULL, 0, &r), TSR_ESHAPE);
    cr_assert_eq(tsr_reduce(TSR_MAX, x, a1, 1, &r), 0); /* shape (0,), nothing reduced away */
    cr_assert_eq(tsr_array_shape(r)[0], 0);
    tsr_array_free(r);
    cr_assert_eq(tsr_reduce(TSR_SUM, x, a0, 1, &r), 0);
    cr_assert_eq(tsr_array_shape(r)[0], 3);
    tsr_array_free(r);
    tsr_array_free(x);
}

Test(array, reduce_tree_fan_in_8) {
    int64_t s[2] = {9, 9}, ch[2] = {3, 3};
    tsr_array *x = rnd(2, s, ch), *r = NULL;
    cr_assert_eq(tsr_reduce(TSR_SUM, x, NULL, 0, &r), 0);
    tsr_graph g;
    lower(&r, 1, &g);
    /* 9 partials: a COMBINE of the first 8, then a COMBINE of that with the 9th. */
    cr_assert_eq(g.ntasks, 9 + 9 + 2);
    cr_assert_eq(count_kop(&g, TSR_KOP_REDUCE), 9);
    cr_assert_eq(count_kop(&g, TSR_KOP_COMBINE), 2);
    const tsr_gtask *root = &g.tasks[g.outputs[0]];
    cr_assert_eq(root->d.kop, TSR_KOP_COMBINE);
    cr_assert_eq(root->ndeps, 2);
    cr_assert_eq(root->d.f[0], 1.0);
    cr_assert_eq(root->d.ndim, 0);
    const tsr_gtask *first = &g.tasks[g.deps[root->deps_off]];
    cr_assert_eq(first->d.kop, TSR_KOP_COMBINE);
    cr_assert_eq(first->ndeps, 8);
    cr_assert_eq(g.tasks[g.deps[root->deps_off + 1]].d.kop, TSR_KOP_REDUCE);
    /* Partials in row-major order of the input chunks: the last one reads chunk (2,2). */
    const tsr_gtask *last = &g.tasks[g.deps[root->deps_off + 1]];
    const tsr_gtask *src = &g.tasks[g.deps[last->deps_off]];
    cr_assert_eq(src->d.i[3], 6);
    cr_assert_eq(src->d.i[4], 6);
    cr_assert_eq(last->d.ni, 2);
    tsr__graph_free(&g);
    tsr_array_free(r);

    /* mean: same tree, the root carries 1/81. */
    cr_assert_eq(tsr_reduce(TSR_MEAN, x, NULL, 0, &r), 0);
    lower(&r, 1, &g);
    cr_assert_eq(g.ntasks, 20);
    cr_assert_eq(g.tasks[g.outputs[0]].d.f[0], 1.0 / 81);
    cr_assert_eq(g.tasks[g.deps[g.tasks[g.outputs[0]].deps_off]].d.f[0], 1.0);
    tsr__graph_free(&g);
    tsr_array_free(r);

    /* sum over axis 0: 3 output chunks, each a COMBINE of 3 partials. */
    int a0[1] = {0};
    cr_assert_eq(tsr_reduce(TSR_MIN, x, a0, 1, &r), 0);
    assert_chunks(r, 0, (int64_t[]){3, 3, 3}, 3);
    cr_assert_eq(tsr_task_count(&r, 1), 9 + 9 + 3);
    tsr_array_free(r);
    tsr_array_free(x);
}

Test(array, reduce_tree_81_partials) {
    /* 81 partials: level 1 has 11 items (10 COMBINEs of 8 and the 81st passed through), level 2
     * has 2 (COMBINEs of 8 and 3), the root combines those 2: 13 COMBINEs. */
    int64_t s[2] = {9, 9}, ch[2] = {1, 1};
    tsr_array *x = rnd(2, s, ch), *r = NULL;
    cr_assert_eq(tsr_reduce(TSR_SUM, x, NULL, 0, &r), 0);
    tsr_graph g;
    lower(&r, 1, &g);
    cr_assert_eq(count_kop(&g, TSR_KOP_COMBINE), 13);
    cr_assert_eq(g.ntasks, 81 + 81 + 13);
    const tsr_gtask *root = &g.tasks[g.outputs[0]];
    cr_assert_eq(root->ndeps, 2);
    cr_assert_eq(g.tasks[g.deps[root->deps_off]].ndeps, 8);
    cr_assert_eq(g.tasks[g.deps[root->deps_off + 1]].ndeps, 3);
    tsr__graph_free(&g);
    tsr_array_free(r);
    tsr_array_free(x);
}

Test(array, reduce_single_chunk) {
    int64_t s[2] = {4, 4};
    tsr_array *x = rnd(2, s, NULL), *r = NULL;
    cr_assert_eq(tsr_reduce(TSR_SUM, x, NULL, 0, &r), 0);
    cr_assert_eq(tsr_task_count(&r, 1), 2); /* the lone partial is the result */
    tsr_array_free(r);
    int a1[1] = {1};
    cr_assert_eq(tsr_reduce(TSR_MEAN, x, a1, 1, &r), 0);
    tsr_graph g;
    lower(&r, 1, &g);
    cr_assert_eq(g.ntasks, 3); /* a mean still needs its scale: a COMBINE of one */
    const tsr_gtask *t = &g.tasks[g.outputs[0]];
    cr_assert_eq(t->d.kop, TSR_KOP_COMBINE);
    cr_assert_eq(t->ndeps, 1);
    cr_assert_eq(t->d.f[0], 0.25);
    cr_assert_eq(g.tasks[1].d.i[0], 1);
    cr_assert_eq(g.tasks[1].d.shape[0], 4);
    tsr__graph_free(&g);
    tsr_array_free(r);
    tsr_array_free(x);
}

/* ---- rechunk -------------------------------------------------------------------------------- */

Test(array, rechunk) {
    int64_t s[1] = {10}, c5[1] = {5}, c4[1] = {4};
    tsr_array *x = rnd(1, s, c5), *r = NULL;
    cr_assert_eq(tsr_rechunk(x, c5, &r), 0);
    cr_assert_eq(tsr_task_count(&r, 1), 2); /* same grid: the input's own tasks */
    tsr_array_free(r);
    cr_assert_eq(tsr_rechunk(x, c4, &r), 0);
    assert_chunks(r, 0, (int64_t[]){4, 4, 2}, 3);
    tsr_graph g;
    lower(&r, 1, &g);
    cr_assert_eq(g.ntasks, 5);
    /* Chunk 1 = [4,8) from input chunks 0 ([0,5)) and 1 ([5,10)). */
    const tsr_gtask *t = &g.tasks[g.outputs[1]];
    cr_assert_eq(t->d.kop, TSR_KOP_ASSEMBLE);
    cr_assert_eq(t->ndeps, 2);
    cr_assert_eq(t->d.ni, 3);
    cr_assert_eq(t->d.i[0], 4);
    cr_assert_eq(t->d.i[1], 0);
    cr_assert_eq(t->d.i[2], 5);
    cr_assert_eq(g.tasks[g.outputs[2]].ndeps, 1);
    tsr__graph_free(&g);
    tsr_array_free(r);
    int64_t bad[1] = {-2};
    cr_assert_eq(tsr_rechunk(x, bad, &r), TSR_EINVALID);
    cr_assert_eq(tsr_rechunk(x, NULL, &r), 0); /* default: one chunk */
    cr_assert_eq(tsr_array_numchunks(r, 0), 1);
    tsr_array_free(r);
    tsr_array_free(x);

    /* 2-d: (4,4) chunks (2,2) -> (3,3): chunk (0,0) = [0,3)x[0,3) from 4 inputs, row-major. */
    int64_t s2[2] = {4, 4}, c22[2] = {2, 2}, c33[2] = {3, 3};
    x = rnd(2, s2, c22);
    cr_assert_eq(tsr_rechunk(x, c33, &r), 0);
    lower(&r, 1, &g);
    t = &g.tasks[g.outputs[0]];
    cr_assert_eq(t->ndeps, 4);
    int64_t want[10] = {0, 0, 0, 0, 0, 2, 2, 0, 2, 2};
    cr_assert_eq(t->d.ni, 10);
    for (int k = 0; k < 10; k++) cr_assert_eq(t->d.i[k], want[k]);
    cr_assert_eq(g.tasks[g.outputs[3]].ndeps, 1);
    cr_assert_eq(g.ntasks, 4 + 4);
    tsr__graph_free(&g);
    tsr_array_free(r);
    tsr_array_free(x);
}

/* ---- graphs as a whole ------------------------------------------------------------------------
 */

Test(array, shared_subgraphs_and_lifetimes) {
    int64_t s[1] = {8}, ch[1] = {4};
    tsr_array *x = rnd(1, s, ch), *y = NULL, *z = NULL;
    cr_assert_eq(tsr_binary(TSR_ADD, x, x, &y), 0);
    cr_assert_eq(tsr_unary(TSR_NEG, x, &z), 0);
    tsr_array_free(x); /* operands live on inside their users */
    tsr_array *both[2] = {y, z};
    cr_assert_eq(tsr_task_count(both, 2), 6); /* 2 sources once, 2 adds, 2 negs */
    cr_assert_eq(tsr_task_count(both, 2), 6); /* a fresh epoch gives the same count */
    cr_assert_eq(tsr_task_count(both, 0), 0);
    tsr_array_free(y);
    cr_assert_eq(tsr_task_count(&z, 1), 4);
    tsr_array_free(z);
}

Test(array, deep_chain_lowers_without_recursion) {
    int64_t s[1] = {6}, ch[1] = {2};
    tsr_array *x = rnd(1, s, ch);
    for (int k = 0; k < 300; k++) {
        tsr_array *y = NULL;
        cr_assert_eq(tsr_unary(TSR_ABS, x, &y), 0);
        tsr_array_free(x);
        x = y;
    }
    tsr_graph g;
    lower(&x, 1, &g);
    cr_assert_eq(g.ntasks, 3 * 301);
    tsr__graph_free(&g);
    tsr_array_free(x);
}

Test(array, mixed_program_is_topological) {
    int64_t s[2] = {12, 10}, ca[2] = {5, 3}, sb[2] = {10, 7}, cb[2] = {4, 4};
    tsr_array *a = rnd(2, s, ca), *b = rnd(2, sb, cb), *m = NULL, *t = NULL, *e = NULL, *r = NULL,
              *q = NULL;
    cr_assert_eq(tsr_matmul(a, b, &m), 0);
    cr_assert_eq(tsr_transpose(m, NULL, 0, &t), 0);
    cr_assert_eq(tsr_unary(TSR_SQRT, t, &e), 0);
    int ax[1] = {1};
    cr_assert_eq(tsr_reduce(TSR_MEAN, e, ax, 1, &r), 0);
    /* m (12,7) has chunks [5,5,2]x[4,3]; r = mean over t's axis 1 has (7,) chunks [4,3], which
     * match B's column chunks: q (10,7) has B's grid [4,4,2]x[4,3], 6 chunks, no rechunk. The
     * only ASSEMBLEs are the matmul's: B's rows [4,4,2] to A's columns [3,3,3,1], 4x2 chunks. */
    cr_assert_eq(tsr_binary(TSR_MINIMUM, r, b, &q), 0);
    cr_assert_eq(tsr_array_shape(q)[0], 10);
    tsr_array *outs[3] = {r, m, q};
    tsr_graph g;
    lower(outs, 3, &g); /* checks every dep < its task */
    cr_assert_eq(g.noutputs, tsr__array_nchunks(r) + tsr__array_nchunks(m) + 6);
    cr_assert_eq(tsr__array_nchunks(r), 2);
    cr_assert_eq(count_kop(&g, TSR_KOP_ASSEMBLE), 8);
    tsr__graph_free(&g);
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(tsr_write_dot(outs, 3, f), 0);
    long size = ftell(f);
    rewind(f);
    char *text = calloc(1, (size_t)size + 1);
    cr_assert_eq(fread(text, 1, (size_t)size, f), (size_t)size);
    cr_assert(strstr(text, "digraph"));
    cr_assert(strstr(text, "matmul"));
    cr_assert(strstr(text, "->"));
    size_t nodes = 0;
    for (char *p = text; (p = strstr(p, "[label=")); p++) nodes++;
    cr_assert_eq((int64_t)nodes, tsr_task_count(outs, 3));
    free(text);
    fclose(f);
    tsr_array_free(a);
    tsr_array_free(b);
    tsr_array_free(m);
    tsr_array_free(t);
    tsr_array_free(e);
    tsr_array_free(r);
    tsr_array_free(q);
}
