/* map_blocks without a cluster: the plugin-name rules (what a client may ask a worker to load),
 * the MAP_BLOCKS kernel's call of the function a descriptor carries (blocks, strides, the block's
 * place, the numbers, a failing kernel's message) and its descriptor checks, and the array side:
 * shape/chunk inference, alignment of operands, the blockwise form, refusals and the tasks
 * lowering emits; program files; the worker's plugin registry (what it opens, and refuses).
 * Expected values are worked out by hand next to each check. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "graph/graph.h"
#include "kernels/kernels.h"
#include "worker/worker.h"

static tsr_client *c;

static void setup(void) {
    cr_assert_eq(tsr_client_new_offline(&c), 0);
}

static void teardown(void) {
    tsr_client_free(c);
}

TestSuite(map_blocks, .init = setup, .fini = teardown, .timeout = 60);

/* ---- names ---- */

Test(map_blocks, plugin_names) {
    char lib[TSR__PLUGIN_NAME_MAX], sym[TSR__PLUGIN_NAME_MAX], err[256];
    cr_assert_eq(tsr__plugin_parse_name("scale_add:scale_add", lib, sizeof lib, sym, sizeof sym,
                                        err, sizeof err),
                 0, "%s", err);
    cr_assert_str_eq(lib, "scale_add");
    cr_assert_str_eq(sym, "scale_add");
    cr_assert_eq(tsr__plugin_parse_name("my-lib.v2+x:_f9", lib, sizeof lib, sym, sizeof sym, err,
                                        sizeof err),
                 0, "%s", err);
    cr_assert_str_eq(lib, "my-lib.v2+x");
    cr_assert_str_eq(sym, "_f9");
    /* Anything that could name a file outside the plugin directories, or no function. */
    const char *bad[] = {
        "../x:y",    "/tmp/x:y",
        "a/b:y",     "..:y",
        ".hidden:y", "a..b:y",
        "x",         "x:",
        ":y",        "x:1y",
        "x:y-z",     "x:y:z",
        "x\\y:z",    "",
        "x y:z",     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:f"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        err[0] = '\0';
        cr_assert_eq(
            tsr__plugin_parse_name(bad[k], lib, sizeof lib, sym, sizeof sym, err, sizeof err),
            TSR_EINVALID, "\"%s\" accepted", bad[k]);
        cr_assert(err[0], "no message for \"%s\"", bad[k]);
    }
    cr_assert_eq(tsr__plugin_parse_name(NULL, lib, sizeof lib, sym, sizeof sym, err, sizeof err),
                 TSR_EINVALID);
    err[0] = '\0';
    tsr__plugin_parse_name("../x:y", lib, sizeof lib, sym, sizeof sym, err, sizeof err);
    cr_assert(strstr(err, "bare name"), "%s", err);
}

/* ---- the kernel ---- */

/* What the test plugin saw, checked after the call. */
typedef struct seen {
    int calls, nin;
    tsr_plugin_block in[3], out;
    int64_t gshape[2], index[2], offset[2];
    double scalars[2];
    int nscalars;
    char kernel[64];
} seen;
static seen S;

/* out = in0 + 10 * in1 (in1 broadcast on axis 0 when its extent there is 1), by strides. */
static int test_kernel(const tsr_plugin_block *in, int nin, tsr_plugin_block *out,
                       const tsr_plugin_info *info, char *err, size_t errlen) {
    S.calls++;
    S.nin = nin;
    for (int k = 0; k < nin && k < 3; k++) S.in[k] = in[k];
    S.out = *out;
    for (int a = 0; a < info->ndim; a++) {
        S.gshape[a] = info->gshape[a];
        S.index[a] = info->block_index[a];
        S.offset[a] = info->offset[a];
    }
    S.nscalars = info->nscalars;
    for (int k = 0; k < info->nscalars && k < 2; k++) S.scalars[k] = info->scalars[k];
    snprintf(S.kernel, sizeof S.kernel, "%s", info->kernel);
    if (info->nscalars > 1 && info->scalars[1] < 0) {
        snprintf(err, errlen, "negative second number");
        return 3;
    }
    const double *x = in[0].data, *y = in[1].data;
    double *o = out->data;
    for (int64_t i = 0; i < out->shape[0]; i++)
        for (int64_t j = 0; j < out->shape[1]; j++)
            o[i * out->strides[0] + j * out->strides[1]] =
                x[i * in[0].strides[0] + j * in[0].strides[1]] +
                10 * y[(in[1].shape[0] == 1 ? 0 : i) * in[1].strides[0] + j * in[1].strides[1]];
    return 0;
}

static tsr_chunkview view(void *data, int64_t r, int64_t cols) {
    tsr_chunkview v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = TSR_FLOAT64;
    v.ndim = 2;
    v.shape[0] = r;
    v.shape[1] = cols;
    return v;
}

/* A 2x3 block at block index (1, 2), offset (2, 6), of a 5x9 result. */
static tsr_kdesc block_desc(int64_t *iv, const double *fv, uint32_t nf) {
    int64_t vals[6] = {5, 9, 1, 2, 2, 6};
    memcpy(iv, vals, sizeof vals);
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = TSR_KOP_MAP_BLOCKS;
    d.dtype = TSR_FLOAT64;
    d.ndim = 2;
    d.shape[0] = 2;
    d.shape[1] = 3;
    d.i = iv;
    d.ni = 6;
    d.f = fv;
    d.nf = nf;
    d.s = "lib:test_kernel";
    d.plugin = test_kernel;
    return d;
}

Test(map_blocks, kernel_calls_the_resolved_function) {
    double x[6] = {1, 2, 3, 4, 5, 6}, y[3] = {0.5, 0.25, 0.125}, out[6] = {0};
    double fv[2] = {2.5, 7};
    int64_t iv[6];
    tsr_kdesc d = block_desc(iv, fv, 2);
    tsr_chunkview in[2] = {view(x, 2, 3), view(y, 1, 3)};
    tsr_chunkview o = view(out, 2, 3);
    char err[256] = "";
    memset(&S, 0, sizeof S);
    cr_assert_eq(tsr__kernel_run(&d, in, 2, &o, TSR_DEVICE_CPU, err, sizeof err), 0, "%s", err);
    cr_assert_eq(S.calls, 1);
    cr_assert_eq(S.nin, 2);
    /* Dense C order: strides (3, 1) for 2x3, (3, 1) for 1x3, in elements. */
    cr_assert_eq(S.in[0].strides[0], 3);
    cr_assert_eq(S.in[0].strides[1], 1);
    cr_assert_eq(S.in[1].shape[0], 1);
    cr_assert_eq(S.in[1].dtype, TSR_PLUGIN_FLOAT64);
    cr_assert_eq(S.out.ndim, 2);
    cr_assert_eq(S.gshape[0], 5);
    cr_assert_eq(S.gshape[1], 9);
    cr_assert_eq(S.index[0], 1);
    cr_assert_eq(S.index[1], 2);
    cr_assert_eq(S.offset[0], 2);
    cr_assert_eq(S.offset[1], 6);
    cr_assert_eq(S.nscalars, 2);
    cr_assert_eq(S.scalars[0], 2.5);
    cr_assert_eq(S.scalars[1], 7);
    cr_assert_str_eq(S.kernel, "lib:test_kernel");
    double want[6] = {6, 4.5, 4.25, 9, 7.5, 7.25}; /* x + 10 * y, y's row broadcast */
    for (int k = 0; k < 6; k++) cr_assert_eq(out[k], want[k], "element %d: %g", k, out[k]);
}

Test(map_blocks, failing_kernel_and_bad_descriptors) {
    double x[6] = {0}, y[6] = {0}, out[6];
    double fv[2] = {1, -1};
    int64_t iv[6];
    tsr_chunkview in[2] = {view(x, 2, 3), view(y, 2, 3)};
    tsr_chunkview o = view(out, 2, 3);
    char err[256] = "";
    tsr_kdesc d = block_desc(iv, fv, 2);
    cr_assert_eq(tsr__kernel_run(&d, in, 2, &o, TSR_DEVICE_CPU, err, sizeof err), TSR_ECOMPUTE);
    cr_assert(strstr(err, "negative second number") && strstr(err, "lib:test_kernel") &&
                  strstr(err, "returned 3"),
              "%s", err);
    /* Not resolved by a worker: refused, never called. */
    d = block_desc(iv, fv, 1);
    d.plugin = NULL;
    memset(&S, 0, sizeof S);
    cr_assert_eq(tsr__kernel_run(&d, in, 2, &o, TSR_DEVICE_CPU, err, sizeof err), TSR_EUNSUPPORTED);
    cr_assert_eq(S.calls, 0);
    /* A path for a library, a missing place, a place outside the result, an input deeper than
     * the output: refused before the plugin runs. */
    d = block_desc(iv, fv, 1);
    d.s = "../evil:f";
    cr_assert_eq(tsr__kernel_run(&d, in, 2, &o, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    d = block_desc(iv, fv, 1);
    d.ni = 4;
    cr_assert_eq(tsr__kernel_run(&d, in, 2, &o, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    d = block_desc(iv, fv, 1);
    iv[5] = 7; /* columns 7..9 of 9 */
    cr_assert_eq(tsr__kernel_run(&d, in, 2, &o, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    d = block_desc(iv, fv, 1);
    in[1].ndim = 3;
    in[1].shape[2] = 1;
    cr_assert_eq(tsr__kernel_run(&d, in, 2, &o, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    cr_assert_eq(S.calls, 0);
    cr_assert_eq(tsr__kernel_run(&d, in, 0, &o, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
}

/* ---- arrays and lowering ---- */

static tsr_array *rnd(int ndim, const int64_t *shape, const int64_t *chunks) {
    tsr_array *a = NULL;
    cr_assert_eq(tsr_random(c, ndim, shape, chunks, TSR_FLOAT64, 1, &a), 0, "%s",
                 tsr_client_errmsg(c));
    return a;
}

static size_t count_kop(const tsr_graph *g, int kop) {
    size_t n = 0;
    for (size_t t = 0; t < g->ntasks; t++) n += g->tasks[t].d.kop == kop;
    return n;
}

Test(map_blocks, aligned_form) {
    int64_t xs[2] = {10, 7}, xc[2] = {4, 3}, ys[1] = {7}, yc[1] = {5}, bs[2] = {1, 7};
    tsr_array *x = rnd(2, xs, xc), *y = rnd(1, ys, yc), *b = rnd(2, bs, bs), *m = NULL;
    tsr_array *args[3] = {x, y, b};
    double sc[1] = {2};
    cr_assert_eq(tsr_map_blocks("lib:f", args, 3, sc, 1, TSR_INT64, NULL, 0, NULL, &m), 0, "%s",
                 tsr_client_errmsg(c));
    /* x's shape and grid: 3 x 3 blocks of (4,4,2) x (3,3,1). */
    cr_assert_eq(tsr_array_ndim(m), 2);
    cr_assert_eq(tsr_array_shape(m)[0], 10);
    cr_assert_eq(tsr_array_dtype(m), TSR_INT64);
    cr_assert_eq(tsr_array_numchunks(m, 0), 3);
    cr_assert_eq(tsr_array_numchunks(m, 1), 3);
    tsr_graph g;
    tsr__graph_init(&g);
    cr_assert_eq(tsr__lower(c, &m, 1, &g, 0), 0, "%s", tsr_client_errmsg(c));
    tsr__graph_finish(&g);
    /* 9 map tasks; y (chunks 5,2) is rechunked to (3,3,1): 3 assembles; b is broadcast on
     * axis 0 and rechunked on axis 1: 3 assembles. */
    cr_assert_eq(count_kop(&g, TSR_KOP_MAP_BLOCKS), 9);
    cr_assert_eq(count_kop(&g, TSR_KOP_ASSEMBLE), 6);
    for (size_t t = 0; t < g.ntasks; t++) {
        const tsr_gtask *gt = &g.tasks[t];
        if (gt->d.kop != TSR_KOP_MAP_BLOCKS) continue;
        cr_assert_eq(gt->ndeps, 3);
        cr_assert_str_eq(gt->d.s, "lib:f");
        cr_assert_eq(gt->d.nf, 1);
        cr_assert_eq(gt->d.f[0], 2);
        cr_assert_eq(gt->d.ni, 6);
        cr_assert_eq(gt->d.dtype, TSR_INT64);
        /* i = [gshape, block index, offset]: offsets are 4 * row block, 3 * column block. */
        cr_assert_eq(gt->d.i[0], 10);
        cr_assert_eq(gt->d.i[1], 7);
        cr_assert_eq(gt->d.i[4], 4 * gt->d.i[2]);
        cr_assert_eq(gt->d.i[5], 3 * gt->d.i[3]);
        cr_assert_str_eq(g.arrays[gt->array].plugin, "lib");
    }
    /* The submission carries the library for the scheduler's placement. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    cr_assert_eq(tsr__graph_pack(&g, &sb), 0);
    cr_assert(memmem(sb.data, sb.size, "\xa3lib", 4), "no plugin name in the payload");
    msgpack_sbuffer_destroy(&sb);
    tsr__graph_free(&g);
    tsr_array_free(m);
    /* chunks given: the result's grid, every operand rechunked to it (x too). */
    int64_t oc[2] = {5, 7};
    cr_assert_eq(tsr_map_blocks("lib:f", args, 1, NULL, 0, TSR_FLOAT32, NULL, 0, oc, &m), 0);
    cr_assert_eq(tsr_array_numchunks(m, 0), 2);
    cr_assert_eq(tsr_array_numchunks(m, 1), 1);
    tsr_array_free(m);
    tsr_array_free(x);
    tsr_array_free(y);
    tsr_array_free(b);
}

Test(map_blocks, blockwise_form_and_refusals) {
    int64_t xs[2] = {10, 7}, xc[2] = {4, 3};
    tsr_array *x = rnd(2, xs, xc), *m = NULL;
    int64_t os[2] = {6, 3}, oc[2] = {2, 1};
    cr_assert_eq(tsr_map_blocks("lib:f", &x, 1, NULL, 0, TSR_FLOAT64, os, 2, oc, &m), 0, "%s",
                 tsr_client_errmsg(c));
    tsr_graph g;
    tsr__graph_init(&g);
    cr_assert_eq(tsr__lower(c, &m, 1, &g, 0), 0, "%s", tsr_client_errmsg(c));
    tsr__graph_finish(&g);
    /* 3 x 3 output blocks, each on x's block of the same index, no rechunk. */
    cr_assert_eq(count_kop(&g, TSR_KOP_MAP_BLOCKS), 9);
    cr_assert_eq(count_kop(&g, TSR_KOP_ASSEMBLE), 0);
    for (size_t t = 0; t < g.ntasks; t++) {
        const tsr_gtask *gt = &g.tasks[t];
        if (gt->d.kop != TSR_KOP_MAP_BLOCKS) continue;
        const tsr_gtask *in = &g.tasks[g.deps[gt->deps_off]];
        /* x's block (r, c) has offset (4r, 3c): its RANDOM descriptor's offsets. */
        cr_assert_eq(in->d.i[3], 4 * gt->d.i[2]);
        cr_assert_eq(in->d.i[4], 3 * gt->d.i[3]);
    }
    tsr__graph_free(&g);
    tsr_array_free(m);

    int64_t bad_oc[2] = {3, 1}; /* 2 x 3 blocks: x has 3 x 3 */
    cr_assert_eq(tsr_map_blocks("lib:f", &x, 1, NULL, 0, TSR_FLOAT64, os, 2, bad_oc, &m),
                 TSR_ESHAPE);
    cr_assert(strstr(tsr_client_errmsg(c), "chunks on axis 0"), "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_map_blocks("lib:f", &x, 1, NULL, 0, TSR_FLOAT64, os, 2, NULL, &m),
                 TSR_EINVALID);
    cr_assert(strstr(tsr_client_errmsg(c), "needs its chunks"), "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_map_blocks("/tmp/x:f", &x, 1, NULL, 0, TSR_FLOAT64, NULL, 0, NULL, &m),
                 TSR_EINVALID);
    cr_assert(strstr(tsr_client_errmsg(c), "bare name"), "%s", tsr_client_errmsg(c));
    int64_t ys[1] = {5};
    tsr_array *y = rnd(1, ys, ys), *args[2] = {x, y};
    cr_assert_eq(tsr_map_blocks("lib:f", args, 2, NULL, 0, TSR_FLOAT64, NULL, 0, NULL, &m),
                 TSR_ESHAPE);
    cr_assert(strstr(tsr_client_errmsg(c), "extent 5 on axis 0"), "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_map_blocks("lib:f", args, 0, NULL, 0, TSR_FLOAT64, NULL, 0, NULL, &m),
                 TSR_EINVALID);
    cr_assert_eq(tsr_map_blocks("lib:f", args, 1, NULL, 2, TSR_FLOAT64, NULL, 0, NULL, &m),
                 TSR_EINVALID);
    cr_assert_eq(tsr_map_blocks("lib:f", args, 1, NULL, 0, (tsr_dtype)9, NULL, 0, NULL, &m),
                 TSR_EINVALID);
    cr_assert_null(m);
    tsr_array_free(x);
    tsr_array_free(y);
}

/* ---- program files ---- */

static int load(const char *arrays, tsr_program **p) {
    char json[2048];
    snprintf(json, sizeof json,
             "{\"tessera\": 1, \"arrays\": {\"X\": {\"op\": \"random\", \"shape\": [10, 7], "
             "\"chunks\": [4, 3]}, \"v\": {\"op\": \"random\", \"shape\": [7], \"chunks\": 5}, "
             "%s}, \"outputs\": {\"M\": \"m.npy\"}}",
             arrays);
    *p = NULL;
    return tsr_program_load_string(c, json, "p.json", p);
}

Test(map_blocks, program_files) {
    tsr_program *p;
    cr_assert_eq(load("\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\", 2, \"v\", -1], "
                      "\"kernel\": \"lib:f\", \"dtype\": \"int64\"}",
                      &p),
                 0, "%s", tsr_client_errmsg(c));
    tsr_array *m = tsr_program_find(p, "M");
    cr_assert_eq(tsr_array_dtype(m), TSR_INT64);
    cr_assert_eq(m->nargs, 2);
    cr_assert_eq(m->nscalars, 2);
    cr_assert_eq(m->scalars[0], 2);
    cr_assert_eq(m->scalars[1], -1);
    cr_assert_str_eq(m->kernel, "lib:f");
    tsr_program_free(p);
    /* dtype defaults to the first operand's; shape + chunks: the blockwise form. */
    cr_assert_eq(load("\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\"], \"kernel\": \"lib:f\", "
                      "\"shape\": [3, 3], \"chunks\": [1, 1]}",
                      &p),
                 0, "%s", tsr_client_errmsg(c));
    m = tsr_program_find(p, "M");
    cr_assert_eq(tsr_array_dtype(m), TSR_FLOAT64);
    cr_assert_eq(m->blockwise, 1);
    tsr_program_free(p);
    struct {
        const char *def, *want;
    } bad[] = {
        {"\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\"]}", "needs \"kernel\""},
        {"\"M\": {\"op\": \"map_blocks\", \"args\": [2, \"X\"], \"kernel\": \"lib:f\"}",
         "args[0] must be an array"},
        {"\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\"], \"kernel\": 3}", "LIBRARY:SYMBOL"},
        {"\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\"], \"kernel\": \"../lib:f\"}",
         "bare name"},
        {"\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\"], \"kernel\": \"lib:f\", \"path\": 1}",
         "unknown key \"path\""},
        {"\"M\": {\"op\": \"map_blocks\", \"args\": [], \"kernel\": \"lib:f\"}",
         "at least one argument"},
        {"\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\"], \"kernel\": \"lib:f\", "
         "\"shape\": [3, 3]}",
         "needs its chunks"},
        {"\"M\": {\"op\": \"map_blocks\", \"args\": [\"X\"], \"kernel\": \"lib:f\", "
         "\"chunks\": [1, 1, 1]}",
         "chunks"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        cr_assert_eq(load(bad[k].def, &p), TSR_EPROGRAM, "%s accepted", bad[k].def);
        const char *msg = tsr_client_errmsg(c);
        cr_assert(strstr(msg, "p.json") && strstr(msg, "\"M\"") && strstr(msg, bad[k].want),
                  "%s: \"%s\" lacks \"%s\"", bad[k].def, msg, bad[k].want);
    }
}

/* ---- the worker's plugin registry (worker/plugins.c) ---- */

/* A worker whose only plugin directory is the build's examples/plugins. */
static void plugin_worker(tsr__worker *w, tsr_worker_options *o, const char *const *dirs,
                          int ndirs) {
    memset(w, 0, sizeof *w);
    tsr_worker_options_default(o);
    o->plugin_dirs = dirs;
    o->n_plugin_dirs = ndirs;
    w->opts = o;
    w->log = (tsr__logger){"test", TSR_LOG_ERROR, NULL, NULL};
}

/* Whatever a task names, the worker opens only DIR/libNAME.so or DIR/NAME.so in its own
 * directories, refuses names that would leave them before touching the file system, and says
 * why; a resolved function is the library's, and runs. */
Test(map_blocks, worker_resolves_only_in_its_directories) {
    const char *dirs[] = {TSR_BUILD_ROOT "/examples/plugins"};
    tsr__worker w;
    tsr_worker_options o;
    plugin_worker(&w, &o, dirs, 1);
    cr_assert_eq(tsr__plugins_init(&w), 0);
    cr_assert_eq(w.plugins.nnames, 1);
    cr_assert_str_eq(w.plugins.names[0], "scale_add");
    tsr_plugin_fn fn = NULL, again = NULL;
    char msg[512] = "";
    cr_assert_eq(tsr__plugins_resolve(&w, "scale_add:global_index", &fn, msg, sizeof msg), 0, "%s",
                 msg);
    cr_assert_not_null(fn);
    cr_assert_eq(tsr__plugins_resolve(&w, "scale_add:global_index", &again, msg, sizeof msg), 0);
    cr_assert_eq(fn, again, "the cached function");
    int64_t out[6], gshape[2] = {4, 3}, index[2] = {1, 0}, offset[2] = {2, 0};
    tsr_plugin_block ob = {
        .data = out, .dtype = TSR_PLUGIN_INT64, .ndim = 2, .shape = {2, 3}, .strides = {3, 1}};
    tsr_plugin_info info = {
        .abi = TSR_PLUGIN_ABI, .ndim = 2, .block_index = index, .offset = offset, .gshape = gshape};
    char err[128];
    cr_assert_eq(fn(NULL, 0, &ob, &info, err, sizeof err), 0);
    for (int k = 0; k < 6; k++) cr_assert_eq(out[k], 6 + k, "element %d", k);
    struct {
        const char *spec, *want;
    } bad[] = {
        {"../plugins/libscale_add:scale_add", "bare name"},
        {"/tmp/x:y", "bare name"},
        {TSR_BUILD_ROOT "/examples/plugins/libscale_add.so:scale_add", "bare name"},
        {"libscale_add.so:scale_add", "not in this worker's plugin directories"},
        {"nolib:f", "--plugin-dir"},
        {"scale_add:no_such_function", "has no function no_such_function"},
        {"scale_add:scale_add;", "C identifier"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        msg[0] = '\0';
        fn = (tsr_plugin_fn)1;
        cr_assert_neq(tsr__plugins_resolve(&w, bad[k].spec, &fn, msg, sizeof msg), 0, "%s",
                      bad[k].spec);
        cr_assert_null(fn);
        cr_assert(strstr(msg, bad[k].want), "%s: \"%s\" lacks \"%s\"", bad[k].spec, msg,
                  bad[k].want);
    }
    tsr__plugins_free(&w);

    /* No directories: nothing is ever loaded. A directory that does not exist: no start. */
    plugin_worker(&w, &o, NULL, 0);
    cr_assert_eq(tsr__plugins_init(&w), 0);
    cr_assert_neq(tsr__plugins_resolve(&w, "scale_add:scale_add", &fn, msg, sizeof msg), 0);
    tsr__plugins_free(&w);
    const char *missing[] = {"/nonexistent/tessera-plugins"};
    plugin_worker(&w, &o, missing, 1);
    cr_assert_eq(tsr__plugins_init(&w), TSR_EINVALID);
    tsr__plugins_free(&w);
}
