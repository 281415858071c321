/* The program-file loader (array/loader.c) on an offline client: good programs build arrays with
 * the right shapes, dtypes and chunks; every class of bad input fails with TSR_EPROGRAM and a
 * message naming the file, the array and the problem. tsr_program_run is covered by the
 * integration tests, which have a cluster. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/tessera.h"

static tsr_client *c;
static char dir[64];
static char file[128];

static void setup(void) {
    cr_assert_eq(tsr_client_new_offline(&c), 0);
    snprintf(dir, sizeof dir, "/tmp/tsr-loader-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void) {
    tsr_client_free(c);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(loader, .init = setup, .fini = teardown, .timeout = 30);

/* Loads json as "prog.json", expecting success. */
static tsr_program *good(const char *json) {
    tsr_program *p = NULL;
    int rc = tsr_program_load_string(c, json, "prog.json", &p);
    cr_assert_eq(rc, 0, "rc %d: %s", rc, tsr_client_errmsg(c));
    cr_assert_not_null(p);
    return p;
}

/* Loads json as "prog.json", expecting TSR_EPROGRAM and each given substring in the message. */
static void bad(const char *json, const char *want1, const char *want2) {
    tsr_program *p = (tsr_program *)1;
    int rc = tsr_program_load_string(c, json, "prog.json", &p);
    const char *msg = tsr_client_errmsg(c);
    cr_assert_eq(rc, TSR_EPROGRAM, "rc %d (%s) for %s", rc, msg, json);
    cr_assert_null(p);
    cr_assert_eq(strncmp(msg, "prog.json", 9), 0, "message \"%s\" does not name the file", msg);
    cr_assert(strstr(msg, want1), "message \"%s\" lacks \"%s\"", msg, want1);
    if (want2) cr_assert(strstr(msg, want2), "message \"%s\" lacks \"%s\"", msg, want2);
}

/* A program with one array definition and no outputs. */
static void bad1(const char *def, const char *want1, const char *want2) {
    char json[4096];
    snprintf(json, sizeof json, "{\"tessera\": 1, \"arrays\": {%s}, \"outputs\": {}}", def);
    bad(json, want1, want2);
}

static void assert_array(tsr_program *p, const char *name, const char *op, tsr_dtype dtype,
                         int ndim, const int64_t *shape, const int64_t *numchunks) {
    tsr_array *a = tsr_program_find(p, name);
    cr_assert_not_null(a, "no array %s", name);
    cr_assert_str_eq(tsr_array_name(a), name);
    cr_assert_str_eq(tsr_array_op(a), op);
    cr_assert_eq(tsr_array_dtype(a), dtype, "%s: dtype", name);
    cr_assert_eq(tsr_array_ndim(a), ndim, "%s: ndim %d", name, tsr_array_ndim(a));
    for (int i = 0; i < ndim; i++) {
        cr_assert_eq(tsr_array_shape(a)[i], shape[i], "%s: shape[%d]", name, i);
        if (numchunks)
            cr_assert_eq(tsr_array_numchunks(a, i), numchunks[i], "%s: numchunks[%d] = %lld", name,
                         i, (long long)tsr_array_numchunks(a, i));
    }
}

static size_t position(tsr_program *p, const char *name) {
    for (size_t i = 0; i < tsr_program_narrays(p); i++)
        if (!strcmp(tsr_array_name(tsr_program_array(p, i)), name)) return i;
    cr_assert_fail("no array %s", name);
    return 0;
}

/* Writes a little-endian .npy file by hand. */
static void write_npy(const char *path, const char *descr, const char *shape, size_t nbytes) {
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     descr, shape);
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64;
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(total - 10), 0};
    fwrite(pre, 1, 10, f);
    fputs(dict, f);
    for (size_t i = 10 + (size_t)n; i < total - 1; i++) fputc(' ', f);
    fputc('\n', f);
    for (size_t i = 0; i < nbytes; i++) fputc(0, f);
    fclose(f);
}

/* ---- good programs ---- */

Test(loader, spec_example) {
    tsr_program *p =
        good("{\n"
             "  \"tessera\": 1,\n"
             "  \"arrays\": {\n"
             "    \"A\": {\"op\": \"random\", \"shape\": [4096, 4096], \"chunks\": 512, \"seed\": "
             "1},\n"
             "    \"B\": {\"op\": \"random\", \"shape\": [4096, 4096], \"chunks\": [512, 1024], "
             "\"seed\": 2},\n"
             "    \"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]},\n"
             "    \"D\": {\"op\": \"add\", \"args\": [\"C\", 1.5]},\n"
             "    \"t\": {\"op\": \"sum\", \"args\": [\"D\"], \"axis\": null}\n"
             "  },\n"
             "  \"outputs\": {\"C\": \"c.npy\", \"t\": \"-\"}\n"
             "}\n");
    int64_t sq[2] = {4096, 4096}, nc_a[2] = {8, 8}, nc_b[2] = {8, 4};
    assert_array(p, "A", "random", TSR_FLOAT64, 2, sq, nc_a);
    assert_array(p, "B", "random", TSR_FLOAT64, 2, sq, nc_b);
    assert_array(p, "C", "matmul", TSR_FLOAT64, 2, sq, NULL);
    assert_array(p, "D", "add", TSR_FLOAT64, 2, sq, NULL);
    assert_array(p, "t", "sum", TSR_FLOAT64, 0, NULL, NULL);
    cr_assert_eq(tsr_program_narrays(p), 5);
    cr_assert_null(tsr_program_array(p, 5));
    cr_assert_null(tsr_program_find(p, "Q"));
    cr_assert_eq(tsr_program_noutputs(p), 2);
    const char *path;
    cr_assert_eq(tsr_program_output(p, 0, &path), tsr_program_find(p, "C"));
    cr_assert_str_eq(path, "c.npy");
    cr_assert_eq(tsr_program_output(p, 1, &path), tsr_program_find(p, "t"));
    cr_assert_str_eq(path, "-");
    cr_assert_null(tsr_program_output(p, 2, &path));
    tsr_program_free(p);
}

Test(loader, dependency_order) {
    /* Users listed before their operands are built after them. */
    tsr_program *p = good("{\"tessera\": 1, \"arrays\": {"
                          "\"t\": {\"op\": \"sum\", \"args\": [\"D\"]},"
                          "\"D\": {\"op\": \"mul\", \"args\": [\"C\", \"A\"]},"
                          "\"C\": {\"op\": \"exp\", \"args\": [\"A\"]},"
                          "\"A\": {\"op\": \"ones\", \"shape\": [10]}"
                          "}, \"outputs\": {\"t\": \"-\", \"D\": \"d.npy\"}}");
    cr_assert_eq(tsr_program_narrays(p), 4);
    cr_assert_lt(position(p, "A"), position(p, "C"));
    cr_assert_lt(position(p, "C"), position(p, "D"));
    cr_assert_lt(position(p, "D"), position(p, "t"));
    const char *path;
    cr_assert_str_eq(tsr_array_name(tsr_program_output(p, 0, &path)), "t");
    cr_assert_str_eq(tsr_array_name(tsr_program_output(p, 1, &path)), "D");
    tsr_program_free(p);
}

Test(loader, sources) {
    tsr_program *p =
        good("{\"tessera\": 1, \"arrays\": {"
             "\"z\": {\"op\": \"zeros\", \"shape\": [10, 6], \"chunks\": [4, 6]},"
             "\"o\": {\"op\": \"ones\", \"shape\": [], \"dtype\": \"float32\"},"
             "\"f\": {\"op\": \"full\", \"shape\": [7], \"value\": -2.5, \"chunks\": 3},"
             "\"r\": {\"op\": \"random\", \"shape\": [5, 5], \"dtype\": \"float32\", "
             "\"seed\": \"18446744073709551615\"},"
             "\"r2\": {\"op\": \"random\", \"shape\": [0, 3], \"seed\": 9223372036854775807},"
             "\"g\": {\"op\": \"arange\", \"start\": 0, \"stop\": 10, \"step\": 3, \"chunks\": 2},"
             "\"h\": {\"op\": \"arange\", \"stop\": 5.5, \"chunks\": [4], \"dtype\": \"float32\"}"
             "}, \"outputs\": {}}");
    int64_t s_z[2] = {10, 6}, n_z[2] = {3, 1};
    assert_array(p, "z", "zeros", TSR_FLOAT64, 2, s_z, n_z);
    assert_array(p, "o", "ones", TSR_FLOAT32, 0, NULL, NULL);
    int64_t s_f[1] = {7}, n_f[1] = {3};
    assert_array(p, "f", "full", TSR_FLOAT64, 1, s_f, n_f);
    int64_t s_r[2] = {5, 5};
    assert_array(p, "r", "random", TSR_FLOAT32, 2, s_r, NULL);
    int64_t s_r2[2] = {0, 3};
    assert_array(p, "r2", "random", TSR_FLOAT64, 2, s_r2, NULL);
    int64_t s_g[1] = {4}, n_g[1] = {2};
    assert_array(p, "g", "arange", TSR_FLOAT64, 1, s_g, n_g);
    int64_t s_h[1] = {6}, n_h[1] = {2};
    assert_array(p, "h", "arange", TSR_FLOAT32, 1, s_h, n_h);
    cr_assert_eq(tsr_program_noutputs(p), 0);
    tsr_program_free(p);
}

Test(loader, operations) {
    tsr_program *p = good(
        "{\"tessera\": 1, \"arrays\": {"
        "\"X\": {\"op\": \"random\", \"shape\": [6, 4, 2], \"chunks\": 2, \"dtype\": \"float32\"},"
        "\"Y\": {\"op\": \"add\", \"args\": [\"X\", 1.5]},"
        "\"Z\": {\"op\": \"sub\", \"args\": [2, \"X\"]},"
        "\"W\": {\"op\": \"maximum\", \"args\": [\"X\", \"V\"]},"
        "\"V\": {\"op\": \"ones\", \"shape\": [2]},"
        "\"T\": {\"op\": \"transpose\", \"args\": [\"X\"]},"
        "\"T2\": {\"op\": \"transpose\", \"args\": [\"X\"], \"axes\": [1, 0, 2]},"
        "\"S\": {\"op\": \"sum\", \"args\": [\"X\"], \"axis\": 1},"
        "\"M\": {\"op\": \"mean\", \"args\": [\"X\"], \"axis\": [0, -1]},"
        "\"N\": {\"op\": \"max\", \"args\": [\"X\"]},"
        "\"R\": {\"op\": \"rechunk\", \"args\": [\"X\"], \"chunks\": [3, 4, 1]},"
        "\"R2\": {\"op\": \"rechunk\", \"args\": [\"X\"], \"chunks\": 6},"
        "\"C\": {\"op\": \"astype\", \"args\": [\"X\"], \"dtype\": \"float64\"},"
        "\"E\": {\"op\": \"tanh\", \"args\": [\"C\"]},"
        "\"A\": {\"op\": \"ones\", \"shape\": [3, 4]},"
        "\"B\": {\"op\": \"ones\", \"shape\": [4]},"
        "\"P\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]}"
        "}, \"outputs\": {\"P\": \"-\", \"N\": \"-\"}}");
    int64_t s[3] = {6, 4, 2};
    /* A scalar never promotes: float32 + 1.5 stays float32; float32 with float64 promotes. */
    assert_array(p, "Y", "add", TSR_FLOAT32, 3, s, NULL);
    assert_array(p, "Z", "sub", TSR_FLOAT32, 3, s, NULL);
    assert_array(p, "W", "maximum", TSR_FLOAT64, 3, s, NULL);
    int64_t st[3] = {2, 4, 6}, st2[3] = {4, 6, 2};
    assert_array(p, "T", "transpose", TSR_FLOAT32, 3, st, NULL);
    assert_array(p, "T2", "transpose", TSR_FLOAT32, 3, st2, NULL);
    int64_t ss[2] = {6, 2}, sm[1] = {4};
    assert_array(p, "S", "sum", TSR_FLOAT32, 2, ss, NULL);
    assert_array(p, "M", "mean", TSR_FLOAT32, 1, sm, NULL);
    assert_array(p, "N", "max", TSR_FLOAT32, 0, NULL, NULL);
    int64_t nr[3] = {2, 1, 2}, nr2[3] = {1, 1, 1};
    assert_array(p, "R", "rechunk", TSR_FLOAT32, 3, s, nr);
    assert_array(p, "R2", "rechunk", TSR_FLOAT32, 3, s, nr2);
    assert_array(p, "C", "astype", TSR_FLOAT64, 3, s, NULL);
    assert_array(p, "E", "tanh", TSR_FLOAT64, 3, s, NULL);
    int64_t sp[1] = {3};
    assert_array(p, "P", "matmul", TSR_FLOAT64, 1, sp, NULL);
    tsr_program_free(p);
}

Test(loader, load_npy) {
    char npy[160], json[1024];
    snprintf(npy, sizeof npy, "%s/x.npy", dir);
    write_npy(npy, "<f4", "(5, 3)", 60);
    snprintf(json, sizeof json,
             "{\"tessera\": 1, \"arrays\": {"
             "\"X\": {\"op\": \"load\", \"path\": \"%s\"},"
             "\"Y\": {\"op\": \"load\", \"path\": \"%s\", \"chunks\": 2},"
             "\"Z\": {\"op\": \"load\", \"path\": \"%s\", \"chunks\": [5, 1]}"
             "}, \"outputs\": {}}",
             npy, npy, npy);
    tsr_program *p = good(json);
    int64_t s[2] = {5, 3}, ny[2] = {3, 2}, nz[2] = {1, 3};
    assert_array(p, "X", "load", TSR_FLOAT32, 2, s, NULL);
    assert_array(p, "Y", "load", TSR_FLOAT32, 2, s, ny);
    assert_array(p, "Z", "load", TSR_FLOAT32, 2, s, nz);
    tsr_program_free(p);

    snprintf(json, sizeof json,
             "{\"tessera\": 1, \"arrays\": {\"X\": {\"op\": \"load\", \"path\": \"%s\", "
             "\"chunks\": [5]}}, \"outputs\": {}}",
             npy);
    bad(json, "array \"X\": \"chunks\" has 1 entry but the array has 2 axes", NULL);

    write_npy(npy, ">f8", "(5, 3)", 120);
    bad(json, "array \"X\"", "big-endian");
    cr_assert(strstr(tsr_client_errmsg(c), npy), "%s", tsr_client_errmsg(c));

    write_npy(npy, "<f8", "(5, 3)", 100);
    bad(json, "array \"X\"", "file is truncated: expected 120 data bytes, found 100");
    cr_assert(strstr(tsr_client_errmsg(c), npy), "%s", tsr_client_errmsg(c));

    bad1("\"X\": {\"op\": \"load\", \"path\": \"/nonexistent/dir/x.npy\"}", "array \"X\"",
         "/nonexistent/dir/x.npy");
    bad1("\"X\": {\"op\": \"load\", \"path\": \"\"}", "array \"X\": \"path\" must be a file name",
         NULL);
    bad1("\"X\": {\"op\": \"load\", \"path\": 3}", "array \"X\": \"path\" must be a file name",
         NULL);
}

Test(loader, from_file) {
    snprintf(file, sizeof file, "%s/prog.json", dir);
    FILE *f = fopen(file, "w");
    fputs("{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"zeros\", \"shape\": [3]}}, "
          "\"outputs\": {\"A\": \"-\"}}",
          f);
    fclose(f);
    tsr_program *p = NULL;
    cr_assert_eq(tsr_program_load(c, file, &p), 0, "%s", tsr_client_errmsg(c));
    cr_assert_eq(tsr_program_narrays(p), 1);
    tsr_program_free(p);

    f = fopen(file, "w");
    fputs("{\n  \"tessera\": 1,\n  \"arrays\": {\"A\": {\"op\": \"zeros\",, }}\n}\n", f);
    fclose(f);
    p = (tsr_program *)1;
    cr_assert_eq(tsr_program_load(c, file, &p), TSR_EPROGRAM);
    cr_assert_null(p);
    char want[256];
    snprintf(want, sizeof want, "%s:3:", file);
    cr_assert(strstr(tsr_client_errmsg(c), want), "%s", tsr_client_errmsg(c));
    cr_assert(strstr(tsr_client_errmsg(c), "JSON syntax error"), "%s", tsr_client_errmsg(c));

    snprintf(file, sizeof file, "%s/missing.json", dir);
    cr_assert_eq(tsr_program_load(c, file, &p), -ENOENT);
    cr_assert(strstr(tsr_client_errmsg(c), "missing.json: cannot open"), "%s",
              tsr_client_errmsg(c));
    cr_assert_eq(tsr_program_load(c, dir, &p), -EISDIR);
}

/* ---- bad programs ---- */

Test(loader, json_syntax) {
    bad("{\"tessera\": 1,\n \"arrays\": {]}", "prog.json:2:", "JSON syntax error");
    bad("{\"tessera\": 1, \"tessera\": 1, \"arrays\": {}, \"outputs\": {}}",
        "prog.json:1:", "duplicate");
    bad("{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"random\", \"shape\": [2], \"seed\": "
        "18446744073709551615}}, \"outputs\": {}}",
        "prog.json:1:", "as a string of digits");
    bad("[1, 2]", "prog.json: a program must be a JSON object", NULL);
}

Test(loader, top_level) {
    bad("{\"tessera\": 2, \"arrays\": {}, \"outputs\": {}}",
        "prog.json: unsupported format version 2 (expected \"tessera\": 1)", NULL);
    bad("{\"tessera\": \"1\", \"arrays\": {}, \"outputs\": {}}", "unsupported format version \"1\"",
        NULL);
    bad("{\"tessera\": 1.0, \"arrays\": {}, \"outputs\": {}}", "unsupported format version", NULL);
    bad("{\"arrays\": {}, \"outputs\": {}}", "prog.json: missing the format version", NULL);
    bad("{\"tessera\": 1, \"outputs\": {}}", "prog.json: missing \"arrays\"", NULL);
    bad("{\"tessera\": 1, \"arrays\": []}", "prog.json: \"arrays\" must be an object", NULL);
    bad("{\"tessera\": 1, \"arrays\": {}}", "prog.json: missing \"outputs\"", NULL);
    bad("{\"tessera\": 1, \"arrays\": {}, \"outputs\": {}, \"extra\": 1}",
        "prog.json: unknown top-level key \"extra\"", NULL);
    tsr_program_free(good("{\"tessera\": 1, \"arrays\": {}, \"outputs\": {}}"));
}

Test(loader, names) {
    bad1("\"1A\": {\"op\": \"ones\", \"shape\": [1]}", "invalid array name \"1A\"", NULL);
    bad1("\"a-b\": {\"op\": \"ones\", \"shape\": [1]}", "invalid array name \"a-b\"", NULL);
    bad1("\"\": {\"op\": \"ones\", \"shape\": [1]}", "invalid array name \"\"", NULL);
    bad1("\"_ok9\": {\"op\": \"ones\", \"shape\": [1]}, \"b c\": {\"op\": \"ones\"}",
         "invalid array name \"b c\"", NULL);
}

Test(loader, ops_and_keys) {
    bad1("\"X\": {\"op\": \"foo\"}", "prog.json: array \"X\": unknown op \"foo\"", NULL);
    bad1("\"X\": {\"shape\": [1]}", "array \"X\": missing \"op\"", NULL);
    bad1("\"X\": {\"op\": 3}", "array \"X\": \"op\" must be a string", NULL);
    bad1("\"X\": 5", "array \"X\": a definition must be an object", NULL);
    bad1("\"A\": {\"op\": \"random\", \"shape\": [2], \"chunk\": 1}",
         "array \"A\": unknown key \"chunk\" for op \"random\"", "shape, chunks, dtype, seed");
    bad1("\"A\": {\"op\": \"random\", \"shape\": [2], \"args\": []}",
         "array \"A\": unknown key \"args\"", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"B\": {\"op\": \"neg\", \"args\": [\"A\"], "
         "\"dtype\": \"float32\"}",
         "array \"B\": unknown key \"dtype\" for op \"neg\" (it takes args)", NULL);
    bad1("\"A\": {\"op\": \"random\"}", "array \"A\": random needs \"shape\"", NULL);
    bad1("\"A\": {\"op\": \"full\", \"shape\": [2]}", "array \"A\": full needs \"value\"", NULL);
    bad1("\"A\": {\"op\": \"arange\", \"start\": 1}", "array \"A\": arange needs \"stop\"", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"B\": {\"op\": \"rechunk\", \"args\": "
         "[\"A\"]}",
         "array \"B\": rechunk needs \"chunks\"", NULL);
    bad1("\"A\": {\"op\": \"neg\"}", "array \"A\": neg needs \"args\"", NULL);
}

Test(loader, attributes) {
    bad1("\"A\": {\"op\": \"zeros\", \"shape\": [2, -3]}",
         "array \"A\": \"shape\"[1] must be a non-negative integer, got -3", NULL);
    bad1("\"A\": {\"op\": \"zeros\", \"shape\": [2.5]}",
         "array \"A\": \"shape\"[0] must be a non-negative integer, got 2.5", NULL);
    bad1("\"A\": {\"op\": \"zeros\", \"shape\": 4}", "array \"A\": \"shape\" must be a list", NULL);
    bad1("\"A\": {\"op\": \"zeros\", \"shape\": [1,1,1,1,1,1,1,1,1]}",
         "array \"A\": \"shape\" has 9 axes; at most 8", NULL);
    bad1("\"A\": {\"op\": \"zeros\", \"shape\": [4], \"chunks\": 0}",
         "array \"A\": \"chunks\" must be positive, got 0", NULL);
    bad1("\"A\": {\"op\": \"zeros\", \"shape\": [4], \"chunks\": [-1]}",
         "array \"A\": \"chunks\"[0] must be a positive integer, got -1", NULL);
    bad1("\"A\": {\"op\": \"zeros\", \"shape\": [4, 4], \"chunks\": [2]}",
         "array \"A\": \"chunks\" has 1 entry but the array has 2 axes", NULL);
    bad1("\"A\": {\"op\": \"zeros\", \"shape\": [4], \"chunks\": \"auto\"}",
         "array \"A\": \"chunks\" must be a positive integer or a list", NULL);
    bad1("\"A\": {\"op\": \"arange\", \"stop\": 4, \"chunks\": [2, 2]}",
         "array \"A\": \"chunks\" has 2 entries but the array has 1 axis", NULL);
    bad1("\"A\": {\"op\": \"zeros\", \"shape\": [4], \"dtype\": \"int32\"}",
         "array \"A\": unknown dtype \"int32\" (expected \"float64\", \"float32\", \"int64\" or "
         "\"bool\")",
         NULL);
    bad1("\"A\": {\"op\": \"random\", \"shape\": [4], \"seed\": -1}",
         "array \"A\": \"seed\" must be an integer from 0 to 2^64-1", NULL);
    bad1("\"A\": {\"op\": \"random\", \"shape\": [4], \"seed\": 1.5}", "array \"A\": \"seed\"",
         NULL);
    bad1("\"A\": {\"op\": \"random\", \"shape\": [4], \"seed\": \"18446744073709551616\"}",
         "array \"A\": \"seed\"", NULL);
    bad1("\"A\": {\"op\": \"random\", \"shape\": [4], \"seed\": \"12a\"}", "array \"A\": \"seed\"",
         NULL);
    bad1("\"A\": {\"op\": \"full\", \"shape\": [4], \"value\": \"nan\"}",
         "array \"A\": \"value\" must be a number", NULL);
    bad1("\"A\": {\"op\": \"arange\", \"stop\": 4, \"step\": 0}",
         "array \"A\": \"step\" must not be 0", NULL);
    bad1("\"A\": {\"op\": \"arange\", \"stop\": -4}", "array \"A\": arange", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"S\": {\"op\": \"sum\", \"args\": [\"A\"], "
         "\"axis\": \"x\"}",
         "array \"S\": \"axis\" must be null, an integer or a list of integers", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"S\": {\"op\": \"sum\", \"args\": [\"A\"], "
         "\"axis\": [0.5]}",
         "array \"S\": \"axis\" must hold axis numbers", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"S\": {\"op\": \"sum\", \"args\": [\"A\"], "
         "\"axis\": 3}",
         "array \"S\":", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2, 3]}, \"T\": {\"op\": \"transpose\", \"args\": "
         "[\"A\"], \"axes\": 1}",
         "array \"T\": \"axes\" must be null or a list of integers", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2, 3]}, \"T\": {\"op\": \"transpose\", \"args\": "
         "[\"A\"], \"axes\": [0, 0]}",
         "array \"T\":", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2, 3]}, \"R\": {\"op\": \"rechunk\", \"args\": "
         "[\"A\"], \"chunks\": [1, 1, 1]}",
         "array \"R\": \"chunks\" has 3 entries but the array has 2 axes", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2, 3]}, \"D\": {\"op\": \"astype\", \"args\": "
         "[\"A\"], \"dtype\": \"float16\"}",
         "array \"D\": unknown dtype \"float16\"", NULL);
}

Test(loader, args) {
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"C\": {\"op\": \"add\", \"args\": [\"A\", "
         "\"Q\"]}",
         "prog.json: array \"C\": unknown array \"Q\"", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"C\": {\"op\": \"add\", \"args\": [1, 2]}",
         "array \"C\": add needs at least one array argument, got two numbers", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"C\": {\"op\": \"add\", \"args\": [\"A\"]}",
         "array \"C\": add takes 2 arguments in \"args\", got 1", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"C\": {\"op\": \"neg\", \"args\": [\"A\", "
         "\"A\"]}",
         "array \"C\": neg takes 1 argument in \"args\", got 2", NULL);
    bad1("\"C\": {\"op\": \"neg\", \"args\": [1.5]}",
         "array \"C\": neg takes arrays only; args[0] is the number 1.5", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2, 2]}, \"C\": {\"op\": \"matmul\", \"args\": "
         "[\"A\", 2]}",
         "array \"C\": matmul takes arrays only", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [2]}, \"C\": {\"op\": \"add\", \"args\": [\"A\", "
         "true]}",
         "array \"C\": args[1] must be an array name or a number, got true", NULL);
    bad1("\"C\": {\"op\": \"neg\", \"args\": \"A\"}", "array \"C\": \"args\" must be a list", NULL);
}

Test(loader, cycles) {
    bad1("\"A\": {\"op\": \"neg\", \"args\": [\"B\"]}, \"B\": {\"op\": \"neg\", \"args\": [\"A\"]}",
         "prog.json: cycle between arrays \"A\" -> \"B\" -> \"A\"", NULL);
    bad1("\"A\": {\"op\": \"add\", \"args\": [\"A\", 1]}", "cycle between arrays \"A\" -> \"A\"",
         NULL);
    bad1("\"Z\": {\"op\": \"ones\", \"shape\": [2]}, \"A\": {\"op\": \"add\", \"args\": [\"Z\", "
         "\"B\"]}, \"B\": {\"op\": \"exp\", \"args\": [\"C\"]}, \"C\": {\"op\": \"mul\", \"args\": "
         "[\"Z\", \"B\"]}",
         "cycle between arrays \"B\" -> \"C\" -> \"B\"", NULL);
}

Test(loader, long_cycle) {
    /* A long cycle is shown by its ends and its length. */
    char defs[2048];
    size_t len = 0;
    for (int i = 0; i < 20; i++)
        len += (size_t)snprintf(defs + len, sizeof defs - len,
                                "%s\"x%d\": {\"op\": \"neg\", \"args\": [\"x%d\"]}", i ? ", " : "",
                                i, (i + 1) % 20);
    bad1(defs,
         "cycle between arrays \"x0\" -> \"x1\" -> \"x2\" -> \"x3\" -> ... -> \"x17\" -> \"x18\" "
         "-> \"x19\" -> \"x0\"",
         "(a cycle of 20 arrays)");
}

Test(loader, api_errors) {
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [100, 300]}, \"B\": {\"op\": \"ones\", \"shape\": "
         "[200, 50]}, \"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]}",
         "prog.json: array \"C\": matmul needs A.shape[1] == B.shape[0], got 300 and 200", NULL);
    bad1("\"A\": {\"op\": \"ones\", \"shape\": [3]}, \"B\": {\"op\": \"ones\", \"shape\": [4]}, "
         "\"C\": {\"op\": \"add\", \"args\": [\"A\", \"B\"]}",
         "prog.json: array \"C\": ", NULL);
}

Test(loader, outputs) {
    const char *arrays = "{\"tessera\": 1, \"arrays\": {"
                         "\"A\": {\"op\": \"ones\", \"shape\": [4096, 4096], \"chunks\": 1024},"
                         "\"v\": {\"op\": \"ones\", \"shape\": [1000]},"
                         "\"w\": {\"op\": \"ones\", \"shape\": [1001]},"
                         "\"m\": {\"op\": \"ones\", \"shape\": [2, 2]},"
                         "\"k\": {\"op\": \"ones\", \"shape\": [1, 7, 1]},"
                         "\"s\": {\"op\": \"sum\", \"args\": [\"A\"]}},"
                         "\"outputs\": ";
    char json[1024];
#define OUT(o) (snprintf(json, sizeof json, "%s%s}", arrays, o), json)
    tsr_program_free(good(OUT("{\"v\": \"-\", \"s\": \"-\", \"A\": \"a.npy\"}")));
    bad(OUT("{\"Q\": \"-\"}"), "prog.json: outputs: unknown array \"Q\"", NULL);
    bad(OUT("{\"A\": 3}"), "prog.json: outputs: \"A\" must map to a .npy or .zarr path, \"-\"",
        NULL);
    /* Zarr stores: a .zarr path, or an object with the store's path and its compressor. */
    tsr_program *p = good(OUT("{\"A\": \"a.zarr\", \"s\": {\"path\": \"s.zarr\", \"compressor\": "
                              "\"zlib\"}, \"v\": {\"path\": \"v\", \"compressor\": null}, "
                              "\"w\": {\"path\": \"w.zarr\"}}"));
    static const struct {
        const char *path;
        int format, compressor;
    } want[] = {{"a.zarr", TSR_FORMAT_AUTO, TSR_COMPRESSOR_DEFAULT},
                {"s.zarr", TSR_FORMAT_ZARR, TSR_COMPRESSOR_ZLIB},
                {"v", TSR_FORMAT_ZARR, TSR_COMPRESSOR_NONE},
                {"w.zarr", TSR_FORMAT_ZARR, TSR_COMPRESSOR_DEFAULT}};
    for (size_t k = 0; k < 4; k++) {
        tsr_store_target t;
        cr_assert_eq(tsr_program_output_target(p, k, &t), 0);
        cr_assert_str_eq(t.path, want[k].path);
        cr_assert_eq(t.format, want[k].format, "output %zu", k);
        cr_assert_eq(t.compressor, want[k].compressor, "output %zu", k);
        cr_assert_eq(t.array, tsr_program_output(p, k, NULL));
    }
    tsr_store_target t;
    cr_assert_eq(tsr_program_output_target(p, 4, &t), TSR_EINVALID);
    tsr_program_free(p);
    p = good(OUT("{\"v\": \"-\"}"));
    cr_assert_eq(tsr_program_output_target(p, 0, &t), TSR_EINVALID, "a printed output");
    tsr_program_free(p);
    bad(OUT("{\"A\": {\"path\": \"a.zarr\", \"compressor\": \"lz5\"}}"),
        "prog.json: array \"A\": output: unknown compressor \"lz5\" (expected \"blosc\", "
        "\"zlib\" or null)",
        NULL);
    bad(OUT("{\"A\": {\"path\": \"a.zarr\", \"level\": 3}}"),
        "prog.json: array \"A\": output: unknown key \"level\"", NULL);
    bad(OUT("{\"A\": {\"compressor\": \"zlib\"}}"),
        "prog.json: array \"A\": output: a store output needs \"path\"", NULL);
    bad(OUT("{\"A\": {\"path\": \"-\"}}"), "array \"A\": output: \"path\" must be", NULL);
    bad(OUT("{\"A\": \"x.zarr\", \"v\": {\"path\": \"x.zarr\"}}"),
        "outputs: \"A\" and \"v\" both write \"x.zarr\"", NULL);
    bad(OUT("{\"A\": \"\"}"), "outputs: \"A\" must map", NULL);
    bad(OUT("[\"A\"]"), "prog.json: \"outputs\" must be an object", NULL);
    bad(OUT("{\"A\": \"x.npy\", \"v\": \"x.npy\"}"),
        "outputs: \"A\" and \"v\" both write \"x.npy\"", NULL);
    bad(OUT("{\"A\": \"-\"}"),
        "prog.json: array \"A\": cannot print an array of shape (4096,4096); give a .npy path",
        NULL);
    bad(OUT("{\"w\": \"-\"}"), "array \"w\": cannot print an array of shape (1001,)", NULL);
    bad(OUT("{\"m\": \"-\"}"), "array \"m\": cannot print an array of shape (2,2)", NULL);
    /* All axes of extent 1 but one (a keepdims result) print as a line. */
    tsr_program_free(good(OUT("{\"k\": \"-\"}")));
#undef OUT
}

Test(loader, null_arguments) {
    tsr_program *p = (tsr_program *)1;
    cr_assert_eq(tsr_program_load_string(c, NULL, "x", &p), TSR_EINVALID);
    cr_assert_null(p);
    cr_assert_eq(tsr_program_load(c, NULL, &p), TSR_EINVALID);
    cr_assert_eq(tsr_program_narrays(NULL), 0);
    cr_assert_null(tsr_program_find(NULL, "A"));
    tsr_program_free(NULL);
}

/* A number JSON cannot hold names the array (and key) it is in, wherever it sits in the
 * definition; one outside "arrays" names only the file. */
Test(loader, number_out_of_range_names_the_array) {
    bad("{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"full\", \"shape\": [2], \"value\": "
        "1e400}}, \"outputs\": {}}",
        "array \"A\": \"value\"", "out of range");
    bad("{\"tessera\": 1, \"arrays\": {\"ok\": {\"op\": \"ones\", \"shape\": [2]}, \"B\": {\"op\": "
        "\"zeros\", \"shape\": [2, -1e999], \"chunks\": 1}}, \"outputs\": {}}",
        "array \"B\": \"shape\"", "out of range");
    bad("{\"tessera\": 1, \"arrays\": {\"s\": {\"op\": \"random\", \"shape\": [2], \"seed\": "
        "99999999999999999999999}, \"t\\\"x\": {}}, \"outputs\": {}}",
        "array \"s\": \"seed\"", "string of digits");
    bad("{\"tessera\": 1e400, \"arrays\": {}, \"outputs\": {}}", "prog.json:1:", "out of range");
    cr_assert_null(strstr(tsr_client_errmsg(c), "array"), "%s", tsr_client_errmsg(c));
}
