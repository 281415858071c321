/* zarr/: .zarray parsing (what is read, what is refused and how it is said) and writing, chunk
 * keys, each codec's round trip and its refusal of corrupt data; and the LOAD kernel's Zarr
 * mode on a store the test writes itself (raw chunk files made with plain stdio, so the reader
 * is checked against naive loops, not against Tessera's writer). */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "zarr/zarr.h"

static const char *good =
    "{\"chunks\": [10, 7], \"compressor\": {\"blocksize\": 0, \"clevel\": 5, \"cname\": \"lz4\","
    " \"id\": \"blosc\", \"shuffle\": 1}, \"dtype\": \"<f8\", \"fill_value\": \"NaN\","
    " \"filters\": null, \"order\": \"C\", \"shape\": [37, 23], \"zarr_format\": 2}";

Test(zarr_meta, parses_what_zarr_writes) {
    tsr__zarr_meta m;
    char err[256];
    cr_assert_eq(tsr__zarr_parse_meta(good, strlen(good), &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.ndim, 2);
    cr_assert(m.shape[0] == 37 && m.shape[1] == 23 && m.chunks[0] == 10 && m.chunks[1] == 7);
    cr_assert_eq(m.dtype, TSR_FLOAT64);
    cr_assert_eq(m.codec.id, TSR__ZC_BLOSC);
    cr_assert(isnan(m.fill));
    cr_assert_eq(m.sep, '.');
    const char *z = "{\"chunks\": [], \"compressor\": {\"id\": \"zlib\", \"level\": 3}, \"dtype\": "
                    "\"<f4\", \"fill_value\": -1.5, \"filters\": [], \"order\": \"C\", \"shape\": "
                    "[], \"zarr_format\": 2, \"dimension_separator\": \"/\"}";
    cr_assert_eq(tsr__zarr_parse_meta(z, strlen(z), &m, err, sizeof err), 0, "%s", err);
    cr_assert(m.ndim == 0 && m.dtype == TSR_FLOAT32 && m.codec.id == TSR__ZC_ZLIB);
    cr_assert(m.codec.level == 3 && m.fill == -1.5 && m.sep == '/');
    /* What Tessera writes reads back the same. */
    tsr__zarr_meta w = {.ndim = 3, .shape = {5, 0, 9}, .chunks = {2, 1, 4}, .dtype = TSR_FLOAT32};
    w.codec = tsr__zarr_codec_of(TSR_COMPRESSOR_ZLIB);
    w.sep = '.';
    char *text = tsr__zarr_format_meta(&w);
    cr_assert(text);
    cr_assert(strstr(text, "\"zarr_format\": 2") && strstr(text, "\"order\": \"C\""), "%s", text);
    cr_assert_eq(tsr__zarr_parse_meta(text, strlen(text), &m, err, sizeof err), 0, "%s", err);
    free(text);
    cr_assert(m.ndim == 3 && m.shape[1] == 0 && m.chunks[2] == 4 && m.codec.id == TSR__ZC_ZLIB);
    cr_assert(m.codec.level == 1 && m.fill == 0 && m.dtype == TSR_FLOAT32);
}

Test(zarr_meta, refusals_say_what_is_wrong) {
    static const char *const cases[][2] = {
        {"[1, 2]", "not a JSON object"},
        {"{\"zarr_format\": 2", "invalid JSON"},
        {"{\"zarr_format\": 2, \"zarr_format\": 2}", "invalid JSON"},
        {"{\"zarr_format\": 3}", "\"zarr_format\" must be 2"},
        {"{\"zarr_format\": 2, \"shape\": [-1], \"chunks\": [1]}", "\"shape\" must be"},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [0]}", "\"chunks\" must be"},
        {"{\"zarr_format\": 2, \"shape\": [4, 4], \"chunks\": [2]}", "has 1 entry but"},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<i4\"}",
         "unsupported dtype \"<i4\""},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<f8\", \"order\": "
         "\"F\"}",
         "unsupported order \"F\""},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<f8\", \"order\": "
         "\"C\", \"compressor\": {\"id\": \"lzma\"}}",
         "unsupported compressor \"lzma\""},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<f8\", \"order\": "
         "\"C\", \"filters\": [{\"id\": \"delta\"}]}",
         "filters are not supported"},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<f8\", \"order\": "
         "\"C\", \"fill_value\": \"lots\"}",
         "\"fill_value\" must be"},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<i8\", \"order\": "
         "\"C\", \"fill_value\": \"NaN\"}",
         "\"fill_value\" of an int64 (\"<i8\") store must be an integer"},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<i8\", \"order\": "
         "\"C\", \"fill_value\": 1e19}",
         "must be an integer in int64's range, got 1e19"},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<i8\", \"order\": "
         "\"C\", \"fill_value\": 2.5}",
         "must be an integer in int64's range"},
        {"{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<f8\", \"order\": "
         "\"C\", \"dimension_separator\": \"-\"}",
         "\"dimension_separator\" must be"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tsr__zarr_meta m;
        char err[256] = "";
        int rc = tsr__zarr_parse_meta(cases[k][0], strlen(cases[k][0]), &m, err, sizeof err);
        cr_assert_eq(rc, TSR_EZARR, "%s accepted", cases[k][0]);
        cr_assert(strstr(err, cases[k][1]), "%s: said \"%s\"", cases[k][0], err);
    }
}

Test(zarr_meta, chunk_keys) {
    char b[64];
    cr_assert_eq(tsr__zarr_chunk_key(0, NULL, '.', b, sizeof b), 1);
    cr_assert_str_eq(b, "0");
    int64_t idx[3] = {12, 0, 3};
    tsr__zarr_chunk_key(3, idx, '.', b, sizeof b);
    cr_assert_str_eq(b, "12.0.3");
    tsr__zarr_chunk_key(3, idx, '/', b, sizeof b);
    cr_assert_str_eq(b, "12/0/3");
}

Test(zarr_codec, round_trips_and_corruption) {
    enum { N = 3000 };
    double *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) x[i] = i % 17 == 0 ? 0.5 * i : sin(i);
    int comps[] = {TSR_COMPRESSOR_NONE, TSR_COMPRESSOR_ZLIB, TSR_COMPRESSOR_DEFAULT};
    for (size_t k = 0; k < 3; k++) {
        tsr__zarr_codec c = tsr__zarr_codec_of(comps[k]);
        size_t cap = tsr__zarr_encode_bound(&c, N * sizeof *x), len = 0;
        char *buf = malloc(cap), err[200];
        cr_assert_eq(tsr__zarr_encode(&c, 8, x, N * sizeof *x, buf, cap, &len, err, sizeof err), 0,
                     "%s", err);
        memset(y, 0, N * sizeof *y);
        cr_assert_eq(tsr__zarr_decode(c.id, buf, len, y, N * sizeof *y, err, sizeof err), 0, "%s",
                     err);
        cr_assert_eq(memcmp(x, y, N * sizeof *x), 0, "codec %d does not round-trip", c.id);
        /* The wrong size, and garbage, are refused without writing past the buffer. */
        cr_assert_eq(tsr__zarr_decode(c.id, buf, len, y, N * sizeof *y - 8, err, sizeof err),
                     TSR_EZARR, "codec %d accepted a size that is not the chunk's", c.id);
        if (c.id != TSR__ZC_NONE) {
            memset(buf + 16, 0x5a, len > 64 ? 48 : len - 16);
            cr_assert_eq(tsr__zarr_decode(c.id, buf, len, y, N * sizeof *y, err, sizeof err),
                         TSR_EZARR, "codec %d accepted corrupt data", c.id);
        }
        free(buf);
    }
    free(x);
    free(y);
}

/* ---- the LOAD kernel on a store written here ---- */

static char dir[] = "/tmp/tsr-zarr-test-XXXXXX";

/* Writes chunk (i, j) of a 7 x 5 float64 store in 3 x 2 chunks, raw: element (r, c) of the
 * array is r * 100 + c; the part of an edge chunk outside the array is garbage (-7). */
static void write_chunk(int i, int j) {
    double v[6];
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 2; c++) {
            int gr = i * 3 + r, gc = j * 2 + c;
            v[r * 2 + c] = gr < 7 && gc < 5 ? gr * 100 + gc : -7;
        }
    char p[128];
    snprintf(p, sizeof p, "%s/%d.%d", dir, i, j);
    FILE *f = fopen(p, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(v, sizeof v, 1, f), 1);
    fclose(f);
}

static int run_box(const int64_t *off, const int64_t *shape, int dt, void *out, char *err) {
    int64_t p[9] = {TSR_FLOAT64, TSR__ZC_NONE, '.', 7, 5, 3, 2, off[0], off[1]};
    double fill = -1.25;
    tsr_kdesc d = {.kop = TSR_KOP_LOAD, .fn = TSR__LOAD_ZARR, .dtype = (uint8_t)dt, .ndim = 2};
    d.shape[0] = shape[0];
    d.shape[1] = shape[1];
    d.i = p;
    d.ni = 9;
    d.f = &fill;
    d.nf = 1;
    d.s = dir;
    tsr_chunkview o = {.data = out, .dtype = (uint8_t)dt, .ndim = 2};
    o.shape[0] = shape[0];
    o.shape[1] = shape[1];
    return tsr__kernel_run(&d, NULL, 0, &o, TSR_DEVICE_CPU, err, 200);
}

Test(zarr_kernel, reads_boxes_across_chunks_and_fills_missing) {
    cr_assert(mkdtemp(dir));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (!(i == 1 && j == 1)) write_chunk(i, j); /* (1, 1) missing: fill */
    /* Boxes: one store chunk, a box across four chunks, the ragged corner, the whole array. */
    int64_t boxes[][4] = {{0, 0, 3, 2}, {2, 1, 3, 3}, {6, 4, 1, 1}, {0, 0, 7, 5}, {4, 0, 3, 5}};
    for (int dt = 0; dt < 2; dt++) {
        for (size_t b = 0; b < sizeof boxes / sizeof boxes[0]; b++) {
            const int64_t *off = boxes[b], *sh = boxes[b] + 2;
            double o64[35];
            float o32[35];
            char err[200];
            int rc = run_box(off, sh, dt, dt == TSR_FLOAT64 ? (void *)o64 : (void *)o32, err);
            cr_assert_eq(rc, 0, "%s", err);
            for (int r = 0; r < sh[0]; r++)
                for (int c = 0; c < sh[1]; c++) {
                    int gr = (int)off[0] + r, gc = (int)off[1] + c;
                    double want = gr / 3 == 1 && gc / 2 == 1 ? -1.25 : gr * 100 + gc;
                    double got = dt == TSR_FLOAT64 ? o64[r * sh[1] + c] : o32[r * sh[1] + c];
                    cr_assert_eq(got, (dt == TSR_FLOAT32 ? (double)(float)want : want),
                                 "box %zu dtype %d (%d, %d): %g, want %g", b, dt, gr, gc, got,
                                 want);
                }
        }
    }
    /* A chunk file of the wrong size: an error naming it, nothing written past the output. */
    char p[128];
    snprintf(p, sizeof p, "%s/0.0", dir);
    FILE *f = fopen(p, "wb");
    fputs("short", f);
    fclose(f);
    double o[6];
    char err[200];
    cr_assert_eq(run_box((int64_t[]){0, 0}, (int64_t[]){3, 2}, TSR_FLOAT64, o, err), TSR_EZARR);
    cr_assert(strstr(err, "/0.0"), "%s", err);
    /* A descriptor out of range is refused before anything is read. */
    int64_t bad[9] = {TSR_FLOAT64, 9, '.', 7, 5, 3, 2, 0, 0};
    tsr_kdesc d = {.kop = TSR_KOP_LOAD, .fn = TSR__LOAD_ZARR, .dtype = TSR_FLOAT64, .ndim = 2};
    d.shape[0] = 3;
    d.shape[1] = 2;
    d.i = bad;
    d.ni = 9;
    d.f = (double[]){0};
    d.nf = 1;
    d.s = dir;
    tsr_chunkview ov = {.data = o, .dtype = TSR_FLOAT64, .ndim = 2, .shape = {3, 2}};
    cr_assert_eq(tsr__kernel_run(&d, NULL, 0, &ov, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    bad[1] = TSR__ZC_NONE;
    bad[7] = 6; /* rows 6..8 of 7 */
    cr_assert_eq(tsr__kernel_run(&d, NULL, 0, &ov, TSR_DEVICE_CPU, err, sizeof err), TSR_EINVALID);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            snprintf(p, sizeof p, "%s/%d.%d", dir, i, j);
            unlink(p);
        }
    rmdir(dir);
}
