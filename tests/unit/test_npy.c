/* The .npy header reader and writer (array/npy.c). Files are written by hand here with fwrite,
 * independently of our formatter, so the two cannot agree on the same mistake. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "array/array.h"

static char dir[64];
static char path[128];

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/tsr-npy-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/a.npy", dir);
}

static void teardown(void) {
    unlink(path);
    rmdir(dir);
}

TestSuite(npy, .init = setup, .fini = teardown, .timeout = 30);

/* Writes a .npy file the way numpy does: magic, version, header length, the dict padded with
 * spaces and a newline to a multiple of 64 bytes, then ndata zero bytes. */
static void write_npy(int major, const char *dict, size_t ndata) {
    size_t pre = major == 1 ? 10 : 12;
    size_t total = (pre + strlen(dict) + 1 + 63) / 64 * 64;
    size_t hlen = total - pre;
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite("\x93NUMPY", 1, 6, f);
    unsigned char v[6] = {(unsigned char)major,       0, (unsigned char)(hlen & 0xff),
                          (unsigned char)(hlen >> 8), 0, 0};
    fwrite(v, 1, pre - 6, f);
    fputs(dict, f);
    for (size_t i = pre + strlen(dict); i < total - 1; i++) fputc(' ', f);
    fputc('\n', f);
    for (size_t i = 0; i < ndata; i++) fputc(0, f);
    fclose(f);
}

static void write_raw(const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

/* Reads path expecting failure with code and a message containing want. */
static void expect_error(int code, const char *want) {
    tsr__npy_header h;
    char err[256];
    int rc = tsr__npy_read_header(path, &h, err, sizeof err);
    cr_assert_eq(rc, code, "rc %d (%s), want %d", rc, err, code);
    cr_assert(strstr(err, want), "message \"%s\" lacks \"%s\"", err, want);
}

Test(npy, round_trip) {
    static const int64_t shapes[][TSR_MAX_NDIM] = {
        {0}, {5}, {3, 4}, {0}, {2, 3, 4}, {1, 1, 1, 1, 1, 1, 1, 1}, {100000, 70000},
    };
    static const int ndims[] = {0, 1, 2, 1, 3, 8, 2};
    for (size_t s = 0; s < sizeof ndims / sizeof ndims[0]; s++) {
        for (int dt = 0; dt < 2; dt++) {
            char buf[512];
            int len = tsr__npy_format_header((tsr_dtype)dt, ndims[s], shapes[s], buf, sizeof buf);
            cr_assert_gt(len, 0);
            cr_assert_eq(len % 64, 0, "header length %d", len);
            cr_assert_eq(memcmp(buf, "\x93NUMPY\x01\x00", 8), 0);
            cr_assert_eq((unsigned char)buf[8] | (unsigned char)buf[9] << 8, len - 10);
            cr_assert_eq(buf[len - 1], '\n');
            int64_t count = 1;
            for (int i = 0; i < ndims[s]; i++) count *= shapes[s][i];
            size_t nbytes = (size_t)count * tsr_dtype_size((tsr_dtype)dt);
            if (nbytes > 1 << 20) nbytes = 0; /* the big shape: check only the header */
            FILE *f = fopen(path, "wb");
            fwrite(buf, 1, (size_t)len, f);
            for (size_t i = 0; i < nbytes; i++) fputc(0, f);
            fclose(f);
            tsr__npy_header h;
            char err[256];
            int rc = tsr__npy_read_header(path, &h, err, sizeof err);
            if (count * (int64_t)tsr_dtype_size((tsr_dtype)dt) > 1 << 20) {
                cr_assert_eq(rc, TSR_ENPY);
                cr_assert(strstr(err, "file is truncated"), "%s", err);
                continue;
            }
            cr_assert_eq(rc, 0, "%s", err);
            cr_assert_eq(h.dtype, (tsr_dtype)dt);
            cr_assert_eq(h.ndim, ndims[s]);
            for (int i = 0; i < ndims[s]; i++) cr_assert_eq(h.shape[i], shapes[s][i]);
            cr_assert_eq(h.data_offset, len);
        }
    }
}

Test(npy, format_matches_numpy) {
    char buf[256];
    int64_t shape[2] = {3, 4};
    int len = tsr__npy_format_header(TSR_FLOAT64, 2, shape, buf, sizeof buf);
    cr_assert_eq(len, 128); /* numpy pads to 64: 10 + 59 + 1 bytes round up to 128 */
    buf[len] = '\0';
    const char *dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }";
    cr_assert_eq(strncmp(buf + 10, dict, strlen(dict)), 0, "%s", buf + 10);
    for (int i = 10 + (int)strlen(dict); i < len - 1; i++) cr_assert_eq(buf[i], ' ');
    len = tsr__npy_format_header(TSR_FLOAT32, 1, shape, buf, sizeof buf);
    buf[len] = '\0';
    cr_assert(strstr(buf + 10, "'descr': '<f4'") && strstr(buf + 10, "'shape': (3,), }"), "%s",
              buf + 10);
    len = tsr__npy_format_header(TSR_FLOAT32, 0, shape, buf, sizeof buf);
    buf[len] = '\0';
    cr_assert(strstr(buf + 10, "'shape': (), }"), "%s", buf + 10);
    /* numpy.save of int64 and bool arrays writes '<i8' and '|b1'. */
    len = tsr__npy_format_header(TSR_INT64, 1, shape, buf, sizeof buf);
    buf[len] = '\0';
    cr_assert(strstr(buf + 10, "'descr': '<i8'"), "%s", buf + 10);
    len = tsr__npy_format_header(TSR_BOOL, 1, shape, buf, sizeof buf);
    buf[len] = '\0';
    cr_assert(strstr(buf + 10, "'descr': '|b1'"), "%s", buf + 10);
}

/* Headers as numpy.save writes them for int64 and bool (and '<b1', which means the same). */
Test(npy, int64_and_bool) {
    tsr__npy_header h;
    char err[256];
    write_npy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 24);
    cr_assert_eq(tsr__npy_read_header(path, &h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h.dtype, TSR_INT64);
    write_npy(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (2, 3), }", 6);
    cr_assert_eq(tsr__npy_read_header(path, &h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h.dtype, TSR_BOOL);
    cr_assert_eq(h.ndim, 2);
    write_npy(1, "{'descr': '<b1', 'fortran_order': False, 'shape': (2,), }", 2);
    cr_assert_eq(tsr__npy_read_header(path, &h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h.dtype, TSR_BOOL);
    /* A file too short for its int64 data is refused as for floats. */
    write_npy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 16);
    cr_assert_neq(tsr__npy_read_header(path, &h, err, sizeof err), 0);
}

Test(npy, format_errors) {
    char buf[256];
    int64_t shape[2] = {3, -1};
    cr_assert_lt(tsr__npy_format_header(TSR_FLOAT64, 2, shape, buf, 63), 0);
    cr_assert_eq(tsr__npy_format_header(TSR_FLOAT64, 2, shape, buf, sizeof buf), TSR_EINVALID);
    cr_assert_eq(tsr__npy_format_header(TSR_FLOAT64, TSR_MAX_NDIM + 1, shape, buf, sizeof buf),
                 TSR_EINVALID);
    cr_assert_eq(tsr__npy_format_header((tsr_dtype)7, 1, shape, buf, sizeof buf), TSR_EINVALID);
}

Test(npy, hand_written_versions) {
    tsr__npy_header h;
    char err[256];
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", 96);
    cr_assert_eq(tsr__npy_read_header(path, &h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h.ndim, 2);
    cr_assert_eq(h.shape[0], 3);
    cr_assert_eq(h.shape[1], 4);
    cr_assert_eq(h.dtype, TSR_FLOAT64);
    cr_assert_eq(h.data_offset, 128);

    write_npy(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }", 28);
    cr_assert_eq(tsr__npy_read_header(path, &h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h.ndim, 1);
    cr_assert_eq(h.shape[0], 7);
    cr_assert_eq(h.dtype, TSR_FLOAT32);
    cr_assert_eq(h.data_offset, 128);

    write_npy(3, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", 8);
    cr_assert_eq(tsr__npy_read_header(path, &h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h.ndim, 0);

    /* Key order, double quotes, no trailing comma and Python 2 longs are all valid literals. */
    write_npy(1, "{\"shape\": (2L, 2L), \"fortran_order\": False, \"descr\": \"<f8\"}", 32);
    cr_assert_eq(tsr__npy_read_header(path, &h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h.shape[1], 2);

    /* Extra data after the array is tolerated, as numpy does. */
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 5), }", 16);
    cr_assert_eq(tsr__npy_read_header(path, &h, err, sizeof err), 0, "%s", err);
    cr_assert_eq(h.shape[0], 0);
}

Test(npy, bad_magic) {
    write_raw("\x93NUMPX\x01\x00\x10\x00{}", 12);
    expect_error(TSR_ENPY, "not a .npy file (bad magic string)");
    write_raw("hello", 5);
    expect_error(TSR_ENPY, "not a .npy file");
    write_raw("", 0);
    expect_error(TSR_ENPY, "not a .npy file");
}

Test(npy, short_header) {
    write_raw("\x93NUMPY\x01", 7);
    expect_error(TSR_ENPY, "truncated inside the .npy header");
    write_raw("\x93NUMPY\x01\x00\x40\x00{'descr'", 17);
    expect_error(TSR_ENPY, "truncated inside the .npy header");
}

Test(npy, bad_version) {
    write_raw("\x93NUMPY\x04\x00\x10\x00", 10);
    expect_error(TSR_ENPY, "unsupported .npy format version 4.0");
    write_raw("\x93NUMPY\x01\x01\x10\x00", 10);
    expect_error(TSR_ENPY, "unsupported .npy format version 1.1");
}

Test(npy, big_endian) {
    write_npy(1, "{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }", 24);
    expect_error(TSR_ENPY, "big-endian data ('>f8') is not supported");
}

Test(npy, int_dtype) {
    write_npy(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", 12);
    expect_error(TSR_ENPY, "unsupported dtype '<i4'");
    write_npy(1, "{'descr': '>i8', 'fortran_order': False, 'shape': (3,), }", 24);
    expect_error(TSR_ENPY, "big-endian data ('>i8') is not supported");
    write_npy(1, "{'descr': '=f8', 'fortran_order': False, 'shape': (3,), }", 24);
    expect_error(TSR_ENPY, "unsupported dtype '=f8'");
    write_npy(1, "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (3,), }", 24);
    expect_error(TSR_ENPY, "structured dtypes are not supported");
}

Test(npy, fortran) {
    write_npy(1, "{'descr': '<f8', 'fortran_order': True, 'shape': (3, 4), }", 96);
    expect_error(TSR_ENPY, "Fortran order is not supported");
}

Test(npy, truncated_data) {
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", 40);
    expect_error(TSR_ENPY, "file is truncated: expected 96 data bytes, found 40");
    write_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 0);
    expect_error(TSR_ENPY, "file is truncated: expected 4 data bytes, found 0");
}

Test(npy, garbage_dict) {
    write_npy(1, "garbage", 0);
    expect_error(TSR_ENPY, "malformed header");
    write_npy(1, "{'descr': '<f8', 'fortran_order': False}", 0);
    expect_error(TSR_ENPY, "missing key 'shape'");
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), 'x': 1}", 96);
    expect_error(TSR_ENPY, "unexpected key 'x'");
    write_npy(1, "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': ()}", 8);
    expect_error(TSR_ENPY, "duplicate key 'descr'");
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (5)}", 40);
    expect_error(TSR_ENPY, "one-element shape needs a trailing comma");
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (-5,)}", 40);
    expect_error(TSR_ENPY, "negative dimension");
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,2,3,4,5,6,7,8,9)}", 0);
    expect_error(TSR_ENPY, "more than 8 dimensions");
    write_npy(1, "{'descr': '<f8', 'fortran_order': 0, 'shape': ()}", 8);
    expect_error(TSR_ENPY, "fortran_order must be True or False");
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': ()} extra", 8);
    expect_error(TSR_ENPY, "unexpected text after the dict");
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,)}", 8);
    expect_error(TSR_ENPY, "dimension is too large");
    write_npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", 8);
    expect_error(TSR_ENPY, "shape is too large");
}

Test(npy, missing_file) {
    snprintf(path, sizeof path, "%s/nope.npy", dir);
    expect_error(-ENOENT, "cannot open");
}
