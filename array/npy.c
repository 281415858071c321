/* The .npy file header: reading (versions 1.0, 2.0 and 3.0) and writing (version 1.0).
 * Only little-endian float64/float32 in C order are accepted. The header dict is a Python literal
 * for which no C library exists, so a small strict parser lives here; it accepts exactly what
 * numpy.save writes (and the old Python 2 "3L" integers) and rejects everything else by name.
 * This file never reads or writes array data. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "array/array.h"

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* Headers larger than this are not something numpy writes for a plain array. */
#define NPY_MAX_HEADER (1 << 20)

static int npy_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int npy_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return TSR_ENPY;
}

/* A cursor over the header dict. */
typedef struct dict_parser {
    const char *p, *end;
    char *err;
    size_t errlen;
} dict_parser;

static void skip_ws(dict_parser *d) {
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

static int expect(dict_parser *d, char c, const char *what) {
    skip_ws(d);
    if (d->p >= d->end || *d->p != c)
        return npy_err(d->err, d->errlen, "malformed header: expected %s", what);
    d->p++;
    return 0;
}

/* A Python string literal in single or double quotes, without escapes (numpy never needs them
 * for the keys and dtype strings we accept). */
static int parse_str(dict_parser *d, char *out, size_t size) {
    skip_ws(d);
    if (d->p >= d->end || (*d->p != '\'' && *d->p != '"'))
        return npy_err(d->err, d->errlen, "malformed header: expected a quoted string");
    char q = *d->p++;
    size_t n = 0;
    while (d->p < d->end && *d->p != q) {
        if (*d->p == '\\' || *d->p == '\n')
            return npy_err(d->err, d->errlen, "malformed header: unsupported string literal");
        if (n + 1 < size) out[n++] = *d->p;
        d->p++;
    }
    if (d->p >= d->end) return npy_err(d->err, d->errlen, "malformed header: unterminated string");
    d->p++;
    out[n] = '\0';
    return 0;
}

static int parse_dims(dict_parser *d, tsr__npy_header *h) {
    int rc = expect(d, '(', "a shape tuple such as (3, 4)");
    if (rc) return rc;
    h->ndim = 0;
    for (;;) {
        skip_ws(d);
        if (d->p < d->end && *d->p == ')') break;
        if (d->p < d->end && *d->p == '-')
            return npy_err(d->err, d->errlen, "malformed header: negative dimension in shape");
        if (d->p >= d->end || *d->p < '0' || *d->p > '9')
            return npy_err(d->err, d->errlen,
                           "malformed header: shape must be a tuple of integers");
        int64_t v = 0;
        while (d->p < d->end && *d->p >= '0' && *d->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return npy_err(d->err, d->errlen, "malformed header: dimension is too large");
            v = v * 10 + (*d->p++ - '0');
        }
        if (d->p < d->end && *d->p == 'L') d->p++; /* Python 2 long literal */
        if (h->ndim == TSR_MAX_NDIM)
            return npy_err(d->err, d->errlen, "arrays of more than %d dimensions are not supported",
                           TSR_MAX_NDIM);
        h->shape[h->ndim++] = v;
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        /* Python needs the comma in a one-element tuple: "(5)" is the integer 5. */
        if (h->ndim == 1)
            return npy_err(d->err, d->errlen,
                           "malformed header: a one-element shape needs a trailing comma");
        break;
    }
    return expect(d, ')', "')' closing the shape tuple");
}

static int parse_descr(dict_parser *d, tsr__npy_header *h) {
    skip_ws(d);
    if (d->p < d->end && *d->p == '[')
        return npy_err(d->err, d->errlen,
                       "structured dtypes are not supported (only '<f8', '<f4', '<i8' and '|b1')");
    char s[32];
    int rc = parse_str(d, s, sizeof s);
    if (rc) return rc;
    tsr_dtype dt;
    if (tsr__dtype_from_descr(s, &dt) == 0) {
        h->dtype = dt;
    } else if (s[0] == '>' &&
               (!strcmp(s + 1, "f8") || !strcmp(s + 1, "f4") || !strcmp(s + 1, "i8"))) {
        return npy_err(
            d->err, d->errlen,
            "big-endian data ('%s') is not supported; only '<f8', '<f4', '<i8' and '|b1'", s);
    } else {
        return npy_err(d->err, d->errlen,
                       "unsupported dtype '%s'; only '<f8' (float64), '<f4' (float32), '<i8' "
                       "(int64) and '|b1' (bool)",
                       s);
    }
    return 0;
}

static int parse_bool(dict_parser *d, int *out) {
    skip_ws(d);
    size_t left = (size_t)(d->end - d->p);
    if (left >= 4 && !memcmp(d->p, "True", 4)) {
        *out = 1;
        d->p += 4;
    } else if (left >= 5 && !memcmp(d->p, "False", 5)) {
        *out = 0;
        d->p += 5;
    } else {
        return npy_err(d->err, d->errlen, "malformed header: fortran_order must be True or False");
    }
    return 0;
}

/* Parses "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }" followed by padding. */
static int parse_dict(const char *text, size_t len, tsr__npy_header *h, char *err, size_t errlen) {
    dict_parser d = {text, text + len, err, errlen};
    int seen_descr = 0, seen_order = 0, seen_shape = 0, fortran = 0, rc;
    if ((rc = expect(&d, '{', "a '{' starting the header dict"))) return rc;
    for (;;) {
        skip_ws(&d);
        if (d.p < d.end && *d.p == '}') break;
        char key[32];
        if ((rc = parse_str(&d, key, sizeof key))) return rc;
        if ((rc = expect(&d, ':', "':' after a key"))) return rc;
        int *seen;
        if (!strcmp(key, "descr")) {
            seen = &seen_descr;
            rc = parse_descr(&d, h);
        } else if (!strcmp(key, "fortran_order")) {
            seen = &seen_order;
            rc = parse_bool(&d, &fortran);
        } else if (!strcmp(key, "shape")) {
            seen = &seen_shape;
            rc = parse_dims(&d, h);
        } else {
            return npy_err(err, errlen, "malformed header: unexpected key '%s'", key);
        }
        if (rc) return rc;
        if (*seen) return npy_err(err, errlen, "malformed header: duplicate key '%s'", key);
        *seen = 1;
        skip_ws(&d);
        if (d.p < d.end && *d.p == ',') {
            d.p++;
            continue;
        }
        break;
    }
    if ((rc = expect(&d, '}', "'}' closing the header dict"))) return rc;
    skip_ws(&d);
    /* Some writers pad with NULs before the newline; numpy itself reads them fine. */
    while (d.p < d.end && (*d.p == '\0' || *d.p == ' ' || *d.p == '\n')) d.p++;
    if (d.p != d.end)
        return npy_err(err, errlen, "malformed header: unexpected text after the dict");
    if (!seen_descr || !seen_order || !seen_shape)
        return npy_err(err, errlen, "malformed header: missing key '%s'",
                       !seen_descr   ? "descr"
                       : !seen_order ? "fortran_order"
                                     : "shape");
    if (fortran)
        return npy_err(err, errlen, "Fortran order is not supported (save the array in C order)");
    return 0;
}

int tsr__npy_read_header(const char *path, tsr__npy_header *h, char *err, size_t errlen) {
    memset(h, 0, sizeof *h);
    if (err && errlen) err[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        npy_err(err, errlen, "cannot open: %s", strerror(e));
        return -e;
    }
    char *text = NULL;
    int rc;
    unsigned char pre[12];
    size_t got = fread(pre, 1, 10, f);
    if (ferror(f)) {
        rc = -errno;
        npy_err(err, errlen, "cannot read: %s", strerror(errno));
        goto out;
    }
    if (got < 6 || memcmp(pre, npy_magic, 6) != 0) {
        rc = npy_err(err, errlen, "not a .npy file (bad magic string)");
        goto out;
    }
    if (got < 10) {
        rc = npy_err(err, errlen, "file is truncated inside the .npy header");
        goto out;
    }
    int major = pre[6], minor = pre[7];
    uint64_t hlen;
    int64_t prelen;
    if (major == 1 && minor == 0) {
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
        prelen = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (fread(pre + 10, 1, 2, f) != 2) {
            rc = npy_err(err, errlen, "file is truncated inside the .npy header");
            goto out;
        }
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 |
               (uint64_t)pre[11] << 24;
        prelen = 12;
    } else {
        rc =
            npy_err(err, errlen, "unsupported .npy format version %d.%d (expected 1.0, 2.0 or 3.0)",
                    major, minor);
        goto out;
    }
    if (hlen > NPY_MAX_HEADER) {
        rc = npy_err(err, errlen, "header is too large (%" PRIu64 " bytes)", hlen);
        goto out;
    }
    text = malloc(hlen + 1);
    if (!text) {
        rc = -ENOMEM;
        npy_err(err, errlen, "out of memory");
        goto out;
    }
    if (fread(text, 1, hlen, f) != hlen) {
        rc = npy_err(err, errlen, "file is truncated inside the .npy header");
        goto out;
    }
    text[hlen] = '\0';
    if ((rc = parse_dict(text, hlen, h, err, errlen))) goto out;

    int64_t count = 1;
    for (int i = 0; i < h->ndim; i++) {
        if (h->shape[i] && count > INT64_MAX / 8 / h->shape[i]) {
            rc = npy_err(err, errlen, "shape is too large");
            goto out;
        }
        count *= h->shape[i];
    }
    int64_t nbytes = count * (int64_t)tsr_dtype_size(h->dtype);
    h->data_offset = prelen + (int64_t)hlen;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        rc = -errno;
        npy_err(err, errlen, "cannot stat: %s", strerror(errno));
        goto out;
    }
    int64_t have = (int64_t)st.st_size - h->data_offset;
    if (have < nbytes) {
        rc = npy_err(err, errlen,
                     "file is truncated: expected %" PRId64 " data bytes, found %" PRId64, nbytes,
                     have > 0 ? have : 0);
        goto out;
    }
    rc = 0;
out:
    free(text);
    fclose(f);
    if (rc) memset(h, 0, sizeof *h);
    return rc;
}

int tsr__npy_format_header(tsr_dtype dtype, int ndim, const int64_t *shape, char *buf,
                           size_t size) {
    if (!tsr_dtype_size(dtype) || ndim < 0 || ndim > TSR_MAX_NDIM) return TSR_EINVALID;
    /* The dict as numpy writes it: repr() of a tuple, so "()" "(5,)" "(3, 4)". */
    char dict[64 + TSR_MAX_NDIM * 24];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     tsr__dtype_descr(dtype));
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return TSR_EINVALID;
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%" PRId64, i ? ", " : "", shape[i]);
    }
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    /* magic(6) + version(2) + length(2) + dict + padding + '\n' == a multiple of 64. */
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64;
    if (total > size) return -ENOBUFS;
    size_t hlen = total - 10;
    memcpy(buf, npy_magic, 6);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', total - 10 - (size_t)n - 1);
    buf[total - 1] = '\n';
    return (int)total;
}
