/* .zarray metadata: parsing what Tessera can read (float64/float32 little-endian, C order, no
 * filters, no compressor or zlib or blosc, any fill_value, "." or "/" separators) with a message
 * for anything else, and writing what Tessera's stores carry. Chunk keys. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "zarr/zarr.h"

#define BAD(...)                                                                                   \
    do {                                                                                           \
        tsr__fmt(err, errlen, __VA_ARGS__);                                                        \
        rc = TSR_EZARR;                                                                            \
        goto out;                                                                                  \
    } while (0)

/* A JSON value as written, shortened, for messages. */
static const char *show(const json_t *v, char *buf, size_t size) {
    if (!v) return "nothing";
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!s) return "?";
    snprintf(buf, size, "%s", s);
    if (strlen(s) >= size && size > 4) memcpy(buf + size - 4, "...", 4);
    free(s);
    return buf;
}

/* A list of at most TSR_MAX_NDIM integers >= min into out; its length, or -1. */
static int int_list(const json_t *v, int64_t min, int64_t *out) {
    if (!json_is_array(v) || json_array_size(v) > TSR_MAX_NDIM) return -1;
    for (size_t k = 0; k < json_array_size(v); k++) {
        const json_t *e = json_array_get(v, k);
        if (!json_is_integer(e) || json_integer_value(e) < min) return -1;
        out[k] = json_integer_value(e);
    }
    return (int)json_array_size(v);
}

static int parse_codec(const json_t *c, tsr__zarr_codec *codec, char *err, size_t errlen) {
    int rc = 0;
    char b[120];
    memset(codec, 0, sizeof *codec);
    if (!c || json_is_null(c)) return 0;
    const json_t *id = json_object_get(c, "id");
    if (!json_is_object(c) || !json_is_string(id))
        BAD("\"compressor\" must be null or an object with an \"id\", got %s",
            show(c, b, sizeof b));
    const char *name = json_string_value(id);
    if (!strcmp(name, "zlib")) {
        codec->id = TSR__ZC_ZLIB;
        const json_t *lv = json_object_get(c, "level");
        codec->level = json_is_integer(lv) ? (int)json_integer_value(lv) : 1;
    } else if (!strcmp(name, "blosc")) {
        codec->id = TSR__ZC_BLOSC;
        const json_t *cn = json_object_get(c, "cname");
        snprintf(codec->cname, sizeof codec->cname, "%s",
                 json_is_string(cn) ? json_string_value(cn) : "lz4");
        const json_t *lv = json_object_get(c, "clevel"), *sh = json_object_get(c, "shuffle");
        codec->level = json_is_integer(lv) ? (int)json_integer_value(lv) : 5;
        codec->shuffle = json_is_integer(sh) ? (int)json_integer_value(sh) : 1;
    } else {
        BAD("unsupported compressor \"%s\" (Tessera reads null, \"zlib\" and \"blosc\")", name);
    }
out:
    return rc;
}

static int parse_fill(const json_t *v, double *fill, char *err, size_t errlen) {
    int rc = 0;
    char b[80];
    if (!v || json_is_null(v)) {
        *fill = 0; /* zarr leaves missing chunks undefined then: zeros are as good and fixed */
    } else if (json_is_number(v)) {
        *fill = json_number_value(v);
    } else if (json_is_boolean(v)) {
        *fill = json_is_true(v) ? 1 : 0; /* a bool store's fill */
    } else if (json_is_string(v) && !strcmp(json_string_value(v), "NaN")) {
        *fill = NAN;
    } else if (json_is_string(v) && !strcmp(json_string_value(v), "Infinity")) {
        *fill = INFINITY;
    } else if (json_is_string(v) && !strcmp(json_string_value(v), "-Infinity")) {
        *fill = -INFINITY;
    } else {
        BAD("\"fill_value\" must be a number, \"NaN\", \"Infinity\", \"-Infinity\" or null, got %s",
            show(v, b, sizeof b));
    }
out:
    return rc;
}

int tsr__zarr_parse_meta(const char *text, size_t len, tsr__zarr_meta *m, char *err,
                         size_t errlen) {
    int rc = 0;
    char b[120];
    memset(m, 0, sizeof *m);
    m->sep = '.';
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) BAD("invalid JSON at line %d: %s", je.line, je.text);
    if (!json_is_object(root)) BAD("not a JSON object");
    const json_t *v = json_object_get(root, "zarr_format");
    if (!json_is_integer(v) || json_integer_value(v) != 2)
        BAD("\"zarr_format\" must be 2 (a Zarr v2 array), got %s", show(v, b, sizeof b));
    v = json_object_get(root, "shape");
    int nd = int_list(v, 0, m->shape);
    if (nd < 0)
        BAD("\"shape\" must be a list of at most %d non-negative integers, got %s", TSR_MAX_NDIM,
            show(v, b, sizeof b));
    m->ndim = nd;
    v = json_object_get(root, "chunks");
    int nc = int_list(v, 1, m->chunks);
    if (nc < 0) BAD("\"chunks\" must be a list of positive integers, got %s", show(v, b, sizeof b));
    if (nc != nd)
        BAD("\"chunks\" has %d entr%s but \"shape\" has %d", nc, nc == 1 ? "y" : "ies", nd);
    v = json_object_get(root, "dtype");
    if (!json_is_string(v)) BAD("\"dtype\" must be a string, got %s", show(v, b, sizeof b));
    tsr_dtype zdt;
    if (tsr__dtype_from_descr(json_string_value(v), &zdt) == 0)
        m->dtype = zdt;
    else
        BAD("unsupported dtype \"%s\" (Tessera reads \"<f8\", \"<f4\", \"<i8\" and \"|b1\": "
            "little-endian float64, float32, int64 and bool)",
            json_string_value(v));
    v = json_object_get(root, "order");
    if (!json_is_string(v) || strcmp(json_string_value(v), "C") != 0)
        BAD("unsupported order %s (Tessera reads \"C\")", show(v, b, sizeof b));
    v = json_object_get(root, "filters");
    if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
        BAD("filters are not supported, got %s", show(v, b, sizeof b));
    if ((rc = parse_codec(json_object_get(root, "compressor"), &m->codec, err, errlen))) goto out;
    if ((rc = parse_fill(json_object_get(root, "fill_value"), &m->fill, err, errlen))) goto out;
    /* An int64 store's fill is an integer: NaN, infinities, fractions and values past int64's
     * range have no int64 value to fill with (zarr-python fails on them too). */
    v = json_object_get(root, "fill_value");
    if (m->dtype == TSR_INT64 && !json_is_integer(v) &&
        !(m->fill >= -0x1p63 && m->fill < 0x1p63 && m->fill == nearbyint(m->fill)))
        BAD("\"fill_value\" of an int64 (\"<i8\") store must be an integer in int64's range, got "
            "%s",
            show(v, b, sizeof b));
    v = json_object_get(root, "dimension_separator");
    if (v && !json_is_null(v)) {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(s, ".") && strcmp(s, "/"))
            BAD("\"dimension_separator\" must be \".\" or \"/\", got %s", show(v, b, sizeof b));
        m->sep = s[0];
    }
out:
    json_decref(root);
    return rc;
}

int tsr__zarr_read_meta(const char *dir, tsr__zarr_meta *m, char *err, size_t errlen) {
    size_t n = strlen(dir);
    char *path = malloc(n + sizeof "/.zarray");
    if (!path) return -ENOMEM;
    memcpy(path, dir, n);
    memcpy(path + n, "/.zarray", sizeof "/.zarray");
    FILE *f = fopen(path, "rb");
    free(path);
    if (!f) {
        int e = errno;
        tsr__fmt(err, errlen, "cannot read .zarray: %s", strerror(e));
        return -e;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            char *t = realloc(text, cap = cap ? cap * 2 : 8192);
            if (!t) {
                free(text);
                fclose(f);
                return -ENOMEM;
            }
            text = t;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
        if (len > ((size_t)1 << 20)) {
            free(text);
            fclose(f);
            tsr__fmt(err, errlen, ".zarray: larger than 1 MiB");
            return TSR_EZARR;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(text);
        tsr__fmt(err, errlen, "cannot read .zarray");
        return -EIO;
    }
    char msg[512];
    int rc = tsr__zarr_parse_meta(text, len, m, msg, sizeof msg);
    free(text);
    if (rc) tsr__fmt(err, errlen, ".zarray: %s", msg);
    return rc;
}

static json_t *int_array(int n, const int64_t *v) {
    json_t *a = json_array();
    for (int k = 0; a && k < n; k++) json_array_append_new(a, json_integer(v[k]));
    return a;
}

/* An int64 store's fill as an integer. A JSON integer near int64's ends reads as a double one
 * past them (2^63 for 2^63 - 1), so the ends are clamped, and what is not a number is 0. */
static json_int_t fill_int(double f) {
    if (!(f == f)) return 0;
    if (f >= 0x1p63) return INT64_MAX;
    if (f <= -0x1p63) return INT64_MIN;
    return (json_int_t)f;
}

char *tsr__zarr_format_meta(const tsr__zarr_meta *m) {
    json_t *root = json_object(), *comp;
    if (!root) return NULL;
    switch (m->codec.id) {
    case TSR__ZC_ZLIB:
        comp = json_pack("{s:s, s:i}", "id", "zlib", "level", m->codec.level);
        break;
    case TSR__ZC_BLOSC:
        comp =
            json_pack("{s:s, s:s, s:i, s:i, s:i}", "id", "blosc", "cname", m->codec.cname, "clevel",
                      m->codec.level, "shuffle", m->codec.shuffle, "blocksize", m->codec.blocksize);
        break;
    default:
        comp = json_null();
    }
    /* zarr-python wants an int64 store's fill as an integer and a bool store's as a bool. */
    json_t *fill = m->dtype == TSR_INT64  ? json_integer(fill_int(m->fill))
                   : m->dtype == TSR_BOOL ? json_boolean(m->fill != 0)
                   : isnan(m->fill)       ? json_string("NaN")
                   : isinf(m->fill)       ? json_string(m->fill > 0 ? "Infinity" : "-Infinity")
                                          : json_real(m->fill);
    char sep[2] = {m->sep, 0};
    json_object_set_new(root, "chunks", int_array(m->ndim, m->chunks));
    json_object_set_new(root, "compressor", comp);
    json_object_set_new(root, "dimension_separator", json_string(sep));
    json_object_set_new(root, "dtype", json_string(tsr__dtype_descr(m->dtype)));
    json_object_set_new(root, "fill_value", fill);
    json_object_set_new(root, "filters", json_null());
    json_object_set_new(root, "order", json_string("C"));
    json_object_set_new(root, "shape", int_array(m->ndim, m->shape));
    json_object_set_new(root, "zarr_format", json_integer(2));
    char *s = json_dumps(root, JSON_INDENT(4) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(root);
    return s;
}

size_t tsr__zarr_chunk_key(int ndim, const int64_t *idx, char sep, char *buf, size_t size) {
    if (ndim == 0) return (size_t)snprintf(buf, size, "0");
    size_t n = 0;
    for (int a = 0; a < ndim && n + 1 < size; a++) {
        if (a) buf[n++] = sep;
        n += (size_t)snprintf(buf + n, size - n, "%lld", (long long)idx[a]);
    }
    return n < size ? n : size - 1;
}

tsr__zarr_codec tsr__zarr_codec_of(int compressor) {
    tsr__zarr_codec c = {0};
    switch (compressor) {
    case TSR_COMPRESSOR_NONE:
        c.id = TSR__ZC_NONE;
        break;
    case TSR_COMPRESSOR_ZLIB:
        c.id = TSR__ZC_ZLIB;
        c.level = 1;
        break;
    default:
        c.id = TSR__ZC_BLOSC;
        c.level = 5;
        c.shuffle = 1;
        snprintf(c.cname, sizeof c.cname, "lz4");
    }
    return c;
}
