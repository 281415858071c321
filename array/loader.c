/* Program files (SPEC §2): parses a JSON program with jansson, validates it and builds its arrays
 * in dependency order through the public API. A client of tessera.h only: it never touches array
 * internals, and nothing is computed or written while loading. Every failure leaves a message
 * that starts with the file name (and the array name where there is one) in the client. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "array/array.h"
#include "array/loader_priv.h"
#include "kernels/kernels.h"

/* Array names longer than this are rejected, so that messages naming them stay readable. */
#define NAME_MAX_LEN 255

/* The program-file operations. Elementwise ops and reductions are the operations table's rows
 * (graph/ops.h) and operand counts its column (array/array.h); what is written here is only
 * program-file syntax: each op's keys. */
#define UNARY_ROW(E, name, ...) {#name, TSR__LK_UNARY, TSR_##E, TSR__AOP_NARGS_UNARY, "", ""},
#define BINARY_ROW(E, name, ...) {#name, TSR__LK_BINARY, TSR_##E, TSR__AOP_NARGS_BINARY, "", ""},
#define REDUCE_ROW(E, name, ...)                                                                   \
    {#name, TSR__LK_REDUCE, TSR_##E, TSR__AOP_NARGS_REDUCE, "axis,keepdims", ""},
/* var and std also take "ddof". */
#define KEYS2_PROD ""
#define KEYS2_ANY ""
#define KEYS2_ALL ""
#define KEYS2_VAR ",ddof"
#define KEYS2_STD ",ddof"
#define KEYS2_ARGMAX ""
#define KEYS2_ARGMIN ""
#define REDUCE2_ROW(E, name, ...)                                                                  \
    {#name, TSR__LK_REDUCE, TSR_##E, TSR__AOP_NARGS_REDUCE2, "axis,keepdims" KEYS2_##E, ""},
#define SCAN_ROW(E, name, ...) {#name, TSR__LK_SCAN, TSR_##E, TSR__AOP_NARGS_SCAN, "axis", ""},
/* clang-format off */
static const tsr__loader_op ops[] = {
    {"zeros", TSR__LK_CONST, 0, TSR__AOP_NARGS_FULL, "shape,chunks,dtype", "shape"},
    {"ones", TSR__LK_CONST, 1, TSR__AOP_NARGS_FULL, "shape,chunks,dtype", "shape"},
    {"full", TSR__LK_FULL, 0, TSR__AOP_NARGS_FULL, "shape,chunks,dtype,value", "shape,value"},
    {"random", TSR__LK_RANDOM, 0, TSR__AOP_NARGS_RANDOM, "shape,chunks,dtype,seed", "shape"},
    {"arange", TSR__LK_ARANGE, 0, TSR__AOP_NARGS_ARANGE, "start,stop,step,chunks,dtype", "stop"},
    {"load", TSR__LK_LOAD, 0, TSR__AOP_NARGS_LOAD, "path,chunks", "path"},
    TSR__UNARY_MAP(UNARY_ROW)
    TSR__BINARY_MAP(BINARY_ROW)
    {"matmul", TSR__LK_MATMUL, 0, TSR__AOP_NARGS_MATMUL, "", ""},
    {"transpose", TSR__LK_TRANSPOSE, 0, TSR__AOP_NARGS_TRANSPOSE, "axes", ""},
    TSR__REDUCE_MAP(REDUCE_ROW)
    {"rechunk", TSR__LK_RECHUNK, 0, TSR__AOP_NARGS_RECHUNK, "chunks", "chunks"},
    {"astype", TSR__LK_ASTYPE, 0, TSR__AOP_NARGS_ASTYPE, "dtype", "dtype"},
    {"where", TSR__LK_WHERE, 0, TSR__AOP_NARGS_WHERE, "", ""},
    {"clip", TSR__LK_CLIP, 0, 1, "min,max", ""},
    {"tensordot", TSR__LK_TENSORDOT, 0, TSR__AOP_NARGS_CONTRACT, "axes", ""},
    {"normal", TSR__LK_NORMAL, 0, TSR__AOP_NARGS_NORMAL, "shape,chunks,dtype,seed,loc,scale", "shape"},
    {"eye", TSR__LK_EYE, 0, TSR__AOP_NARGS_EYE, "n,m,k,chunks,dtype", "n"},
    TSR__REDUCE2_MAP(REDUCE2_ROW)
    TSR__SCAN_MAP(SCAN_ROW)
    {"slice", TSR__LK_SLICE, 0, TSR__AOP_NARGS_SLICE, "index", "index"},
    {"take", TSR__LK_TAKE, 0, TSR__AOP_NARGS_TAKE, "axis", ""},
    {"concatenate", TSR__LK_CONCATENATE, 0, TSR__LOADER_VARARGS, "axis", ""},
    {"stack", TSR__LK_STACK, 0, TSR__LOADER_VARARGS, "axis", ""},
    {"reshape", TSR__LK_RESHAPE, 0, TSR__AOP_NARGS_RESHAPE, "shape", "shape"},
    {"squeeze", TSR__LK_SQUEEZE, 0, TSR__AOP_NARGS_RESHAPE, "axis", ""},
    {"expand_dims", TSR__LK_EXPAND_DIMS, 0, TSR__AOP_NARGS_RESHAPE, "axis", "axis"},
    {"map_blocks", TSR__LK_MAP_BLOCKS, 0, TSR__LOADER_VARARGS, "kernel,dtype,shape,chunks", "kernel"},
};
/* clang-format on */
#undef UNARY_ROW
#undef BINARY_ROW
#undef REDUCE_ROW
#undef REDUCE2_ROW
#undef SCAN_ROW

int tsr__loader_fail(tsr__loader *L, const tsr__loader_def *d, int code, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (d) return tsr__fail(L->c, code, "%s: array \"%s\": %s", L->file, d->name, msg);
    return tsr__fail(L->c, code, "%s: %s", L->file, msg);
}

const char *tsr__loader_show(const json_t *v, char *buf, size_t size) {
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!s) return "?";
    if (strlen(s) >= size && size > 4) {
        memcpy(buf, s, size - 4);
        memcpy(buf + size - 4, "...", 4);
    } else {
        snprintf(buf, size, "%s", s);
    }
    free(s);
    return buf;
}

static int is_identifier(const char *s) {
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
    for (s++; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    return 1;
}

/* Is key one of the comma-separated words in list? */
static int in_list(const char *list, const char *key) {
    size_t n = strlen(key);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !memcmp(p, key, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static const tsr__loader_op *find_op(const char *name) {
    for (size_t i = 0; i < TSR__ARRAY_LEN(ops); i++)
        if (!strcmp(ops[i].name, name)) return &ops[i];
    return NULL;
}

/* ---- Attributes ---- */

static int parse_shape(tsr__loader *L, tsr__loader_def *d, json_t *v) {
    char b[64];
    if (!json_is_array(v))
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "\"shape\" must be a list of non-negative integers, got %s",
                                tsr__loader_show(v, b, sizeof b));
    if (json_array_size(v) > TSR_MAX_NDIM)
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "\"shape\" has %zu axes; at most %d are supported",
                                json_array_size(v), TSR_MAX_NDIM);
    d->ndim = (int)json_array_size(v);
    for (int i = 0; i < d->ndim; i++) {
        json_t *x = json_array_get(v, (size_t)i);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "\"shape\"[%d] must be a non-negative integer, got %s", i,
                                    tsr__loader_show(x, b, sizeof b));
        d->shape[i] = json_integer_value(x);
    }
    return 0;
}

static int parse_chunks(tsr__loader *L, tsr__loader_def *d, json_t *v) {
    char b[64];
    d->has_chunks = 1;
    if (json_is_integer(v)) {
        if (json_integer_value(v) <= 0)
            return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"chunks\" must be positive, got %s",
                                    tsr__loader_show(v, b, sizeof b));
        d->chunks_is_int = 1;
        d->chunks[0] = json_integer_value(v);
        return 0;
    }
    if (!json_is_array(v))
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "\"chunks\" must be a positive integer or a list of them, got %s",
                                tsr__loader_show(v, b, sizeof b));
    if (json_array_size(v) > TSR_MAX_NDIM)
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "\"chunks\" has %zu entries; at most %d axes are supported",
                                json_array_size(v), TSR_MAX_NDIM);
    d->nchunks = (int)json_array_size(v);
    for (int i = 0; i < d->nchunks; i++) {
        json_t *x = json_array_get(v, (size_t)i);
        if (!json_is_integer(x) || json_integer_value(x) <= 0)
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "\"chunks\"[%d] must be a positive integer, got %s", i,
                                    tsr__loader_show(x, b, sizeof b));
        d->chunks[i] = json_integer_value(x);
    }
    return 0;
}

/* Expands d's chunks to one per axis of an ndim array into out. */
static int expand_chunks(tsr__loader *L, const tsr__loader_def *d, int ndim, int64_t *out) {
    if (d->chunks_is_int) {
        for (int i = 0; i < ndim; i++) out[i] = d->chunks[0];
        return 0;
    }
    if (d->nchunks != ndim)
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"chunks\" has %d %s but the array has %d %s",
                                d->nchunks, d->nchunks == 1 ? "entry" : "entries", ndim,
                                ndim == 1 ? "axis" : "axes");
    memcpy(out, d->chunks, (size_t)ndim * sizeof *out);
    return 0;
}

static int parse_number(tsr__loader *L, tsr__loader_def *d, const char *key, json_t *v,
                        double *out) {
    char b[64];
    if (!json_is_number(v))
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"%s\" must be a number, got %s", key,
                                tsr__loader_show(v, b, sizeof b));
    *out = json_number_value(v);
    return 0;
}

/* Seeds are unsigned 64-bit. JSON integers above 2^63-1 do not survive jansson, so larger seeds
 * are accepted as strings of decimal digits. */
static int parse_seed(tsr__loader *L, tsr__loader_def *d, json_t *v) {
    char b[64];
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        d->seed = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        uint64_t x = 0;
        int ok = *s != '\0';
        for (const char *p = s; *p && ok; p++) {
            if (*p < '0' || *p > '9' || x > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                ok = 0;
            else
                x = x * 10 + (uint64_t)(*p - '0');
        }
        if (ok) {
            d->seed = x;
            return 0;
        }
    }
    return tsr__loader_fail(
        L, d, TSR_EPROGRAM,
        "\"seed\" must be an integer from 0 to 2^64-1 (above 2^63-1, write it as a "
        "string of digits), got %s",
        tsr__loader_show(v, b, sizeof b));
}

static int parse_axes(tsr__loader *L, tsr__loader_def *d, const char *key, json_t *v,
                      int allow_int) {
    char b[64];
    if (json_is_null(v)) return 0;
    json_t *one = json_is_integer(v) && allow_int ? v : NULL;
    if (!one && !json_is_array(v))
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"%s\" must be %s, got %s", key,
                                allow_int ? "null, an integer or a list of integers"
                                          : "null or a list of integers",
                                tsr__loader_show(v, b, sizeof b));
    size_t n = one ? 1 : json_array_size(v);
    if (n > TSR_MAX_NDIM)
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "\"%s\" has %zu entries; arrays have at most %d axes", key, n,
                                TSR_MAX_NDIM);
    d->has_axes = 1;
    d->naxes = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *x = one ? one : json_array_get(v, i);
        json_int_t ax = json_is_integer(x) ? json_integer_value(x) : 0;
        if (!json_is_integer(x) || ax < -TSR_MAX_NDIM || ax >= TSR_MAX_NDIM)
            return tsr__loader_fail(
                L, d, TSR_EPROGRAM, "\"%s\" must hold axis numbers from %d to %d, got %s", key,
                -TSR_MAX_NDIM, TSR_MAX_NDIM - 1, tsr__loader_show(x, b, sizeof b));
        d->axes[i] = (int)ax;
    }
    return 0;
}

/* An integer key (eye's n, m, k). */
static int parse_int(tsr__loader *L, tsr__loader_def *d, const char *key, json_t *v, int64_t *out) {
    char b[64];
    if (!json_is_integer(v))
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"%s\" must be an integer, got %s", key,
                                tsr__loader_show(v, b, sizeof b));
    *out = json_integer_value(v);
    return 0;
}

/* tensordot's "axes": an integer N (the last N axes of A with the first N of B), or two lists
 * of axes (or two integers, one axis each), as numpy.tensordot takes. */
static int parse_td_axes(tsr__loader *L, tsr__loader_def *d, json_t *v) {
    char b[64];
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < 0 || n > TSR_MAX_NDIM)
            return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"axes\" must be from 0 to %d, got %s",
                                    TSR_MAX_NDIM, tsr__loader_show(v, b, sizeof b));
        d->td_n = (int)n;
        d->td_lists = 0;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) != 2)
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "\"axes\" must be an integer or two lists of axes, got %s",
                                tsr__loader_show(v, b, sizeof b));
    int n[2];
    for (int k = 0; k < 2; k++) {
        json_t *l = json_array_get(v, (size_t)k);
        int *dst = k ? d->td_b : d->td_a;
        if (json_is_integer(l)) {
            n[k] = 1;
            json_int_t ax = json_integer_value(json_array_get(v, (size_t)k));
            if (ax < -TSR_MAX_NDIM || ax >= TSR_MAX_NDIM)
                return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                        "\"axes\" must hold axis numbers from %d to %d",
                                        -TSR_MAX_NDIM, TSR_MAX_NDIM - 1);
            dst[0] = (int)ax;
            continue;
        }
        if (!json_is_array(l) || json_array_size(l) > TSR_MAX_NDIM)
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "\"axes\"[%d] must be a list of at most %d axes, got %s", k,
                                    TSR_MAX_NDIM, tsr__loader_show(l, b, sizeof b));
        n[k] = (int)json_array_size(l);
        for (int i = 0; i < n[k]; i++) {
            json_t *x = json_array_get(l, (size_t)i);
            json_int_t ax = json_is_integer(x) ? json_integer_value(x) : 0;
            if (!json_is_integer(x) || ax < -TSR_MAX_NDIM || ax >= TSR_MAX_NDIM)
                return tsr__loader_fail(
                    L, d, TSR_EPROGRAM, "\"axes\" must hold axis numbers from %d to %d, got %s",
                    -TSR_MAX_NDIM, TSR_MAX_NDIM - 1, tsr__loader_show(x, b, sizeof b));
            dst[i] = (int)ax;
        }
    }
    if (n[0] != n[1])
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "\"axes\" lists must have the same length, got %d and %d", n[0],
                                n[1]);
    d->td_n = n[0];
    d->td_lists = 1;
    return 0;
}

static int parse_args(tsr__loader *L, tsr__loader_def *d, json_t *v) {
    char b[64];
    const tsr__loader_op *op = d->op;
    if (!v) return tsr__loader_fail(L, d, TSR_EPROGRAM, "%s needs \"args\"", op->name);
    if (!json_is_array(v))
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"args\" must be a list, got %s",
                                tsr__loader_show(v, b, sizeof b));
    size_t n = json_array_size(v);
    if (op->nargs == TSR__LOADER_VARARGS && n == 0)
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "%s takes at least one argument in \"args\", got none", op->name);
    if (op->nargs != TSR__LOADER_VARARGS && n != (size_t)op->nargs)
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "%s takes %d %s in \"args\", got %zu", op->name,
                                op->nargs, op->nargs == 1 ? "argument" : "arguments", n);
    if (n > 65536)
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "%s takes at most 65536 arguments, got %zu",
                                op->name, n);
    if (n > TSR__ARRAY_LEN(d->argbuf)) {
        d->arg = malloc(n * sizeof *d->arg);
        d->scalar = malloc(n * sizeof *d->scalar);
        if (!d->arg || !d->scalar) return tsr__loader_fail(L, d, -ENOMEM, "out of memory");
    }
    d->nargs = (int)n;
    int nscalars = 0;
    for (int k = 0; k < d->nargs; k++) {
        json_t *x = json_array_get(v, (size_t)k);
        if (json_is_string(x)) {
            json_t *ix = json_object_get(L->index, json_string_value(x));
            if (!ix)
                return tsr__loader_fail(L, d, TSR_EPROGRAM, "unknown array \"%s\"",
                                        json_string_value(x));
            d->arg[k] = (int)json_integer_value(ix);
        } else if (json_is_number(x)) {
            if (op->kind != TSR__LK_BINARY && op->kind != TSR__LK_MAP_BLOCKS &&
                !(op->kind == TSR__LK_WHERE && k > 0))
                return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                        "%s takes arrays only; args[%d] is the number %s", op->name,
                                        k, tsr__loader_show(x, b, sizeof b));
            d->arg[k] = -1;
            d->scalar[k] = json_number_value(x);
            if (json_is_real(x) && k < 32) d->scalar_float |= 1u << k;
            if (json_is_integer(x) && k < 3) d->iscalar[k] = json_integer_value(x);
            nscalars++;
        } else {
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "args[%d] must be an array name or a number, got %s", k,
                                    tsr__loader_show(x, b, sizeof b));
        }
    }
    if (nscalars == 2 && op->kind == TSR__LK_BINARY)
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "%s needs at least one array argument, got two numbers", op->name);
    if (op->kind == TSR__LK_MAP_BLOCKS && d->arg[0] < 0)
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "%s: args[0] must be an array (the result's shape and "
                                "chunks follow it), got a number",
                                op->name);
    return 0;
}

static int parse_def(tsr__loader *L, tsr__loader_def *d) {
    char b[64];
    if (!json_is_object(d->obj))
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "a definition must be an object such as {\"op\": \"zeros\", "
                                "...}, got %s",
                                tsr__loader_show(d->obj, b, sizeof b));
    json_t *opv = json_object_get(d->obj, "op");
    if (!opv) return tsr__loader_fail(L, d, TSR_EPROGRAM, "missing \"op\"");
    if (!json_is_string(opv))
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "\"op\" must be a string, got %s",
                                tsr__loader_show(opv, b, sizeof b));
    d->op = find_op(json_string_value(opv));
    if (!d->op)
        return tsr__loader_fail(L, d, TSR_EPROGRAM, "unknown op \"%s\"", json_string_value(opv));
    const tsr__loader_op *op = d->op;

    const char *key;
    json_t *v;
    json_object_foreach(d->obj, key, v) {
        if (!strcmp(key, "op") || (op->nargs && !strcmp(key, "args")) || in_list(op->keys, key))
            continue;
        char allowed[128];
        size_t len = (size_t)snprintf(allowed, sizeof allowed, "%s", op->nargs ? "args" : "");
        for (const char *p = op->keys; *p && len + 3 < sizeof allowed; p++) {
            if (p == op->keys && len) len += (size_t)snprintf(allowed + len, 3, ", ");
            if (*p == ',')
                len += (size_t)snprintf(allowed + len, 3, ", ");
            else
                allowed[len++] = *p;
            allowed[len] = '\0';
        }
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "unknown key \"%s\" for op \"%s\" (it takes %s)", key, op->name,
                                allowed);
    }
    for (const char *p = op->required; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char want[32];
        snprintf(want, sizeof want, "%.*s", (int)len, p);
        if (!json_object_get(d->obj, want))
            return tsr__loader_fail(L, d, TSR_EPROGRAM, "%s needs \"%s\"", op->name, want);
        p = e ? e + 1 : p + len;
    }

    int rc = 0;
    d->dtype = TSR_FLOAT64;
    d->start = 0;
    d->step = 1;
    d->arg = d->argbuf;
    d->scalar = d->scalarbuf;
    d->scale = 1;
    d->eye_m = -1;
    d->td_n = 2; /* numpy.tensordot's default */
    d->nargs = 0;
    if (op->nargs && (rc = parse_args(L, d, json_object_get(d->obj, "args")))) return rc;
    json_object_foreach(d->obj, key, v) {
        if (!strcmp(key, "shape")) {
            rc = op->kind == TSR__LK_RESHAPE ? tsr__loader_parse_newshape(L, d, v)
                                             : parse_shape(L, d, v);
        } else if (!strcmp(key, "index")) {
            rc = tsr__loader_parse_index(L, d, v);
        } else if (!strcmp(key, "chunks")) {
            rc = parse_chunks(L, d, v);
        } else if (!strcmp(key, "dtype")) {
            if (!json_is_string(v) || tsr_dtype_parse(json_string_value(v), &d->dtype) != 0)
                rc = tsr__loader_fail(
                    L, d, TSR_EPROGRAM,
                    "unknown dtype %s (expected \"float64\", \"float32\", \"int64\" or "
                    "\"bool\")",
                    tsr__loader_show(v, b, sizeof b));
        } else if (!strcmp(key, "value")) {
            rc = parse_number(L, d, key, v, &d->value);
        } else if (!strcmp(key, "start")) {
            rc = parse_number(L, d, key, v, &d->start);
        } else if (!strcmp(key, "stop")) {
            rc = parse_number(L, d, key, v, &d->stop);
        } else if (!strcmp(key, "step")) {
            rc = parse_number(L, d, key, v, &d->step);
            if (!rc && d->step == 0)
                rc = tsr__loader_fail(L, d, TSR_EPROGRAM, "\"step\" must not be 0");
        } else if (!strcmp(key, "min") || !strcmp(key, "max")) {
            int is_min = key[1] == 'i';
            if (!json_is_null(v)) {
                rc = parse_number(L, d, key, v, is_min ? &d->min : &d->max);
                *(is_min ? &d->has_min : &d->has_max) = 1;
                *(is_min ? &d->min_float : &d->max_float) = json_is_real(v);
                if (json_is_integer(v)) *(is_min ? &d->imin : &d->imax) = json_integer_value(v);
            }
        } else if (!strcmp(key, "seed")) {
            rc = parse_seed(L, d, v);
        } else if (!strcmp(key, "axis")) {
            rc = parse_axes(L, d, key, v, 1);
            d->axis_is_list = json_is_array(v);
        } else if (!strcmp(key, "keepdims")) {
            if (!json_is_boolean(v))
                rc = tsr__loader_fail(L, d, TSR_EPROGRAM,
                                      "\"keepdims\" must be true or false, got %s",
                                      tsr__loader_show(v, b, sizeof b));
            d->keepdims = json_is_true(v);
        } else if (!strcmp(key, "ddof")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
                rc = tsr__loader_fail(L, d, TSR_EPROGRAM,
                                      "\"ddof\" must be a non-negative integer, got %s",
                                      tsr__loader_show(v, b, sizeof b));
            else
                d->ddof = (int)json_integer_value(v);
        } else if (!strcmp(key, "axes") && op->kind == TSR__LK_TENSORDOT) {
            rc = parse_td_axes(L, d, v);
        } else if (!strcmp(key, "axes")) {
            rc = parse_axes(L, d, key, v, 0);
        } else if (!strcmp(key, "loc")) {
            rc = parse_number(L, d, key, v, &d->loc);
        } else if (!strcmp(key, "scale")) {
            rc = parse_number(L, d, key, v, &d->scale);
        } else if (!strcmp(key, "m") && json_is_null(v)) {
            d->eye_m = -1; /* numpy.eye's M=None: n */
        } else if (!strcmp(key, "n") || !strcmp(key, "m") || !strcmp(key, "k")) {
            rc = parse_int(L, d, key, v,
                           key[0] == 'n'   ? &d->eye_n
                           : key[0] == 'm' ? &d->eye_m
                                           : &d->eye_k);
            if (!rc && key[0] != 'k' && json_integer_value(v) < 0)
                rc = tsr__loader_fail(L, d, TSR_EPROGRAM, "\"%s\" must be >= 0, got %lld", key,
                                      (long long)json_integer_value(v));
        } else if (!strcmp(key, "kernel")) {
            char lib[TSR__PLUGIN_NAME_MAX], sym[TSR__PLUGIN_NAME_MAX], why[300];
            if (!json_is_string(v))
                rc = tsr__loader_fail(L, d, TSR_EPROGRAM,
                                      "\"kernel\" must be \"LIBRARY:SYMBOL\", got %s",
                                      tsr__loader_show(v, b, sizeof b));
            else if (tsr__plugin_parse_name(json_string_value(v), lib, sizeof lib, sym, sizeof sym,
                                            why, sizeof why))
                rc = tsr__loader_fail(L, d, TSR_EPROGRAM, "%s", why);
            else
                d->kernel = json_string_value(v);
        } else if (!strcmp(key, "path")) {
            if (!json_is_string(v) || !*json_string_value(v))
                rc = tsr__loader_fail(L, d, TSR_EPROGRAM, "\"path\" must be a file name, got %s",
                                      tsr__loader_show(v, b, sizeof b));
            else
                d->path = json_string_value(v);
        }
        if (rc) return rc;
    }
    /* Where the number of axes is already known, a chunks list must match it now. */
    int64_t tmp[TSR_MAX_NDIM];
    if (d->has_chunks && json_object_get(d->obj, "shape"))
        rc = expand_chunks(L, d, d->ndim, tmp);
    else if (d->has_chunks && op->kind == TSR__LK_ARANGE)
        rc = expand_chunks(L, d, 1, tmp);
    else if (d->has_chunks && op->kind == TSR__LK_EYE)
        rc = expand_chunks(L, d, 2, tmp);
    return rc;
}

/* ---- Dependency order ---- */

/* Depth-first, iteratively (a long chain of definitions must not exhaust the C stack), visiting
 * roots in file order so that the order is stable. A grey operand closes a cycle: the stack from
 * that operand up is the cycle. */
static int toposort(tsr__loader *L) {
    size_t n = L->ndefs, norder = 0, sp = 0;
    size_t *stack = malloc((n ? n : 1) * sizeof *stack);
    L->order = malloc((n ? n : 1) * sizeof *L->order);
    if (!stack || !L->order) {
        free(stack);
        return tsr__loader_fail(L, NULL, -ENOMEM, "out of memory");
    }
    for (size_t r = 0; r < n; r++) {
        if (L->defs[r].color) continue;
        L->defs[r].color = 1;
        stack[sp++] = r;
        while (sp) {
            tsr__loader_def *d = &L->defs[stack[sp - 1]];
            if (d->next_arg < d->nargs) {
                int child = d->arg[d->next_arg++];
                if (child < 0 || L->defs[child].color == 2) continue;
                if (L->defs[child].color == 0) {
                    L->defs[child].color = 1;
                    stack[sp++] = (size_t)child;
                    continue;
                }
                /* The cycle is stack[from-1 .. sp-1] and back to child; a long one is shown by
                 * its ends. */
                size_t from = sp;
                while (from > 0 && stack[from - 1] != (size_t)child) from--;
                size_t k = sp - from + 1, len = 0;
                char msg[800];
                for (size_t i = 0; i < k && len < sizeof msg; i++) {
                    if (k > 8 && i == 4) {
                        len += (size_t)snprintf(msg + len, sizeof msg - len, "... -> ");
                        i = k - 3;
                    }
                    len += (size_t)snprintf(msg + len, sizeof msg - len, "\"%.40s\" -> ",
                                            L->defs[stack[from - 1 + i]].name);
                }
                char count[48] = "";
                if (k > 8) snprintf(count, sizeof count, " (a cycle of %zu arrays)", k);
                if (len < sizeof msg)
                    snprintf(msg + len, sizeof msg - len, "\"%.40s\"%s", L->defs[child].name,
                             count);
                free(stack);
                return tsr__loader_fail(L, NULL, TSR_EPROGRAM, "cycle between arrays %s", msg);
            }
            d->color = 2;
            L->order[norder++] = stack[--sp];
        }
    }
    free(stack);
    return 0;
}

/* ---- Building ---- */

/* Turns a failed API call into a program error: `FILE: array "NAME": <the API's message>`. */
static int api_fail(tsr__loader *L, const tsr__loader_def *d, int rc) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", tsr_client_errmsg(L->c));
    if (!*msg) snprintf(msg, sizeof msg, "%s", tsr_strerror(rc));
    int code = rc == -ENOMEM ? rc : TSR_EPROGRAM;
    if (d->op->kind == TSR__LK_LOAD && !strstr(msg, d->path))
        return tsr__loader_fail(L, d, code, "%s: %s", d->path, msg);
    return tsr__loader_fail(L, d, code, "%s", msg);
}

/* Is path a Zarr store? A name ending in ".zarr" (a trailing '/' allowed), or a directory
 * holding a .zarray; anything else is read as a .npy file. */
static int is_zarr(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    if (n >= 5 && !memcmp(path + n - 5, ".zarr", 5)) return 1;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    char *za = malloc(strlen(path) + sizeof "/.zarray");
    if (!za) return 0;
    sprintf(za, "%s/.zarray", path);
    int yes = access(za, F_OK) == 0;
    free(za);
    return yes;
}

static int load_file(tsr_client *c, const char *path, const int64_t *chunks, tsr_array **out) {
    return is_zarr(path) ? tsr_load_zarr(c, path, chunks, out) : tsr_load_npy(c, path, chunks, out);
}

/* A binary op of an array and the number args[k]: an integer literal exactly, a float one as a
 * weak float (NEP 50). */
static int scalar_op(const tsr__loader_def *d, tsr_binary_op op, tsr_array *x, int k,
                     tsr_array **out) {
    int first = k == 0;
    if ((d->scalar_float >> k) & 1)
        return tsr_binary_scalar_kind(op, x, d->scalar[k], 1, first, out);
    return tsr_binary_scalar_int64(op, x, d->iscalar[k], first, out);
}

int tsr__loader_built(tsr__loader *L, tsr__loader_def *d, int rc, tsr_array *a) {
    if (rc) return api_fail(L, d, rc);
    if ((rc = tsr_array_set_name(a, d->name))) {
        tsr_array_free(a);
        return api_fail(L, d, rc);
    }
    d->array = a;
    return 0;
}

static int build_def(tsr__loader *L, tsr__loader_def *d) {
    tsr_client *c = L->c;
    int64_t ch[TSR_MAX_NDIM];
    const int64_t *chp = NULL;
    tsr_array *x = d->nargs > 0 && d->arg[0] >= 0 ? L->defs[d->arg[0]].array : NULL;
    tsr_array *y = d->nargs > 1 && d->arg[1] >= 0 ? L->defs[d->arg[1]].array : NULL;
    tsr_array *a = NULL;
    int rc = 0;
    const tsr__loader_op *op = d->op;

    if (d->has_chunks) {
        int ndim = d->ndim;
        if (op->kind == TSR__LK_ARANGE) ndim = 1;
        if (op->kind == TSR__LK_EYE) ndim = 2;
        if (op->kind == TSR__LK_RECHUNK) ndim = tsr_array_ndim(x);
        if (op->kind == TSR__LK_MAP_BLOCKS && !json_object_get(d->obj, "shape"))
            ndim = tsr_array_ndim(x);
        if (op->kind == TSR__LK_LOAD) {
            /* The number of axes is in the file: read its header once to learn it. */
            tsr_array *probe = NULL;
            if ((rc = load_file(c, d->path, NULL, &probe))) return api_fail(L, d, rc);
            ndim = tsr_array_ndim(probe);
            tsr_array_free(probe);
        }
        if ((rc = expand_chunks(L, d, ndim, ch))) return rc;
        chp = ch;
    }
    switch (op->kind) {
    case TSR__LK_CONST:
        rc = op->fn ? tsr_ones(c, d->ndim, d->shape, chp, d->dtype, &a)
                    : tsr_zeros(c, d->ndim, d->shape, chp, d->dtype, &a);
        break;
    case TSR__LK_FULL:
        if (d->dtype == TSR_INT64 && json_is_integer(json_object_get(d->obj, "value")))
            rc = tsr_full_int64(c, d->ndim, d->shape, chp,
                                json_integer_value(json_object_get(d->obj, "value")), &a);
        else
            rc = tsr_full(c, d->ndim, d->shape, chp, d->dtype, d->value, &a);
        break;
    case TSR__LK_RANDOM:
        rc = tsr_random(c, d->ndim, d->shape, chp, d->dtype, d->seed, &a);
        break;
    case TSR__LK_ARANGE:
        rc = tsr_arange(c, d->start, d->stop, d->step, chp ? chp[0] : 0, d->dtype, &a);
        break;
    case TSR__LK_LOAD:
        rc = load_file(c, d->path, chp, &a);
        break;
    case TSR__LK_UNARY:
        rc = tsr_unary((tsr_unary_op)op->fn, x, &a);
        break;
    case TSR__LK_BINARY:
        if (x && y)
            rc = tsr_binary((tsr_binary_op)op->fn, x, y, &a);
        else /* a number written as an integer stays exact (binary_scalar_int64) */
            rc = scalar_op(d, (tsr_binary_op)op->fn, x ? x : y, x ? 1 : 0, &a);
        break;
    case TSR__LK_WHERE: {
        tsr_array *z = d->arg[2] >= 0 ? L->defs[d->arg[2]].array : NULL;
        int yf = (d->scalar_float >> 1) & 1, zf = (d->scalar_float >> 2) & 1;
        if ((y || !yf) && (z || !zf)) /* numbers written as integers stay exact */
            rc = tsr_where_int64(x, y, y ? NULL : &d->iscalar[1], z, z ? NULL : &d->iscalar[2], &a);
        else
            rc = tsr_where_scalars(x, y, d->scalar[1], yf, z, d->scalar[2], zf, &a);
        break;
    }
    case TSR__LK_CLIP:
        if (!d->has_min && !d->has_max)
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "clip needs a number in \"min\" or \"max\"");
        if ((!d->has_min || !d->min_float) && (!d->has_max || !d->max_float))
            rc = tsr_clip_int64(x, d->has_min ? &d->imin : NULL, d->has_max ? &d->imax : NULL, &a);
        else /* integer bounds stay exact above, where the clip runs in int64 */
            rc = tsr_clip(x, d->has_min ? &d->min : NULL, d->has_max ? &d->max : NULL,
                          d->min_float | d->max_float << 1, &a);
        break;
    case TSR__LK_MATMUL:
        rc = tsr_matmul(x, y, &a);
        break;
    case TSR__LK_TRANSPOSE:
        rc = tsr_transpose(x, d->has_axes ? d->axes : NULL, d->naxes, &a);
        break;
    case TSR__LK_REDUCE:
        /* "axis": [] reduces nothing (as in NumPy), which differs from null: pass a non-NULL
         * pointer with zero axes. */
        if (d->axis_is_list && (op->fn == TSR_ARGMAX || op->fn == TSR_ARGMIN))
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "%s takes an integer \"axis\" or null, not a list", op->name);
        {
            tsr_reduce_options ro;
            tsr_reduce_options_default(&ro);
            ro.keepdims = d->keepdims;
            ro.ddof = d->ddof;
            rc = tsr_reduce_ex((tsr_reduce_op)op->fn, x, d->has_axes ? d->axes : NULL, d->naxes,
                               &ro, &a);
        }
        break;
    case TSR__LK_SCAN:
        /* "axis": an int, or null / absent for the flattened array (NumPy's default). */
        if (d->axis_is_list)
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "%s takes an integer \"axis\" or null, not a list", op->name);
        rc = tsr_scan((tsr_scan_op)op->fn, x, d->has_axes ? d->axes[0] : 0, !d->has_axes, &a);
        break;
    case TSR__LK_RECHUNK:
        rc = tsr_rechunk(x, chp, &a);
        break;
    case TSR__LK_ASTYPE:
        rc = tsr_astype(x, d->dtype, &a);
        break;
    case TSR__LK_TENSORDOT:
        rc = tsr_tensordot(x, y, d->td_lists ? d->td_a : NULL, d->td_lists ? d->td_b : NULL,
                           d->td_n, &a);
        break;
    case TSR__LK_NORMAL:
        rc = tsr_normal(c, d->ndim, d->shape, chp, d->dtype, d->seed, d->loc, d->scale, &a);
        break;
    case TSR__LK_EYE:
        rc = tsr_eye(c, d->eye_n, d->eye_m < 0 ? d->eye_n : d->eye_m, d->eye_k, chp, d->dtype, &a);
        break;
    case TSR__LK_MAP_BLOCKS:
        rc = tsr__loader_build_map_blocks(L, d, chp, &a);
        break;
    default:
        return tsr__loader_build_shape_def(L, d, x, y);
    }
    return tsr__loader_built(L, d, rc, a);
}

/* ---- Top level ---- */

/* Checks the top level and parses every definition; builds the name index. */
static int parse_program(tsr__loader *L) {
    char b[64];
    json_t *root = L->root;
    if (!json_is_object(root))
        return tsr__loader_fail(L, NULL, TSR_EPROGRAM, "a program must be a JSON object, got %s",
                                tsr__loader_show(root, b, sizeof b));
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "tessera") && strcmp(key, "arrays") && strcmp(key, "outputs"))
            return tsr__loader_fail(
                L, NULL, TSR_EPROGRAM,
                "unknown top-level key \"%s\" (expected \"tessera\", \"arrays\" and "
                "\"outputs\")",
                key);
    }
    json_t *ver = json_object_get(root, "tessera");
    if (!ver)
        return tsr__loader_fail(L, NULL, TSR_EPROGRAM, "missing the format version \"tessera\": 1");
    if (!json_is_integer(ver) || json_integer_value(ver) != 1)
        return tsr__loader_fail(L, NULL, TSR_EPROGRAM,
                                "unsupported format version %s (expected \"tessera\": 1)",
                                tsr__loader_show(ver, b, sizeof b));
    L->arrays = json_object_get(root, "arrays");
    if (!L->arrays) return tsr__loader_fail(L, NULL, TSR_EPROGRAM, "missing \"arrays\"");
    if (!json_is_object(L->arrays))
        return tsr__loader_fail(L, NULL, TSR_EPROGRAM, "\"arrays\" must be an object, got %s",
                                tsr__loader_show(L->arrays, b, sizeof b));
    json_t *outs = json_object_get(root, "outputs");
    if (!outs)
        return tsr__loader_fail(L, NULL, TSR_EPROGRAM, "missing \"outputs\" (use {} for none)");

    size_t n = json_object_size(L->arrays);
    L->defs = calloc(n ? n : 1, sizeof *L->defs);
    L->index = json_object();
    if (!L->defs || !L->index) return tsr__loader_fail(L, NULL, -ENOMEM, "out of memory");
    json_object_foreach(L->arrays, key, v) {
        tsr__loader_def *d = &L->defs[L->ndefs];
        d->name = key;
        d->obj = v;
        if (!is_identifier(key))
            return tsr__loader_fail(
                L, NULL, TSR_EPROGRAM,
                "invalid array name \"%s\" (names are identifiers: a letter or '_', then "
                "letters, digits or '_')",
                key);
        if (strlen(key) > NAME_MAX_LEN)
            return tsr__loader_fail(L, NULL, TSR_EPROGRAM,
                                    "array name \"%.40s...\" is longer than %d characters", key,
                                    NAME_MAX_LEN);
        if (json_object_set_new(L->index, key, json_integer((json_int_t)L->ndefs)))
            return tsr__loader_fail(L, NULL, -ENOMEM, "out of memory");
        L->ndefs++;
    }
    for (size_t i = 0; i < L->ndefs; i++) {
        int rc = parse_def(L, &L->defs[i]);
        if (rc) return rc;
    }
    return tsr__loader_check_outputs(L, outs);
}

static int load_root(tsr__loader *L, tsr_program **out) {
    int rc = parse_program(L);
    if (!rc) rc = toposort(L);
    tsr_program *p = NULL;
    if (!rc) {
        p = calloc(1, sizeof *p);
        if (p) p->arrays = calloc(L->ndefs ? L->ndefs : 1, sizeof *p->arrays);
        if (p) p->name = strdup(L->file);
        if (!p || !p->arrays || !p->name) rc = tsr__loader_fail(L, NULL, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; !rc && i < L->ndefs; i++) {
        tsr__loader_def *d = &L->defs[L->order[i]];
        rc = build_def(L, d);
        if (!rc) {
            tsr_scope_keep(d->array); /* the program frees its arrays, scope or not */
            p->arrays[p->narrays++] = d->array;
        }
    }
    if (!rc) rc = tsr__loader_add_outputs(L, p, json_object_get(L->root, "outputs"));
    if (!rc) rc = tsr__loader_check_paths(L, p);
    if (p) p->client = L->c;
    if (rc) {
        tsr_program_free(p);
        p = NULL;
    }
    json_decref(L->index);
    for (size_t i = 0; L->defs && i < L->ndefs; i++) {
        tsr__loader_def *d = &L->defs[i];
        if (d->arg != d->argbuf) free(d->arg);
        if (d->scalar != d->scalarbuf) free(d->scalar);
    }
    free(L->defs);
    free(L->order);
    *out = p;
    return rc;
}

/* text (len bytes) is the program's text when at hand, to name the array a number too large
 * for JSON belongs to. */
static int syntax_error(tsr__loader *L, const json_error_t *e, const char *text, size_t len) {
    if (json_error_code(e) == json_error_numeric_overflow) {
        char array[128], key[64], where[256] = "";
        if (text) {
            tsr__json_where(text, len, (size_t)e->position, array, sizeof array, key, sizeof key);
            if (array[0] && key[0])
                snprintf(where, sizeof where, " array \"%s\": \"%s\":", array, key);
            else if (array[0])
                snprintf(where, sizeof where, " array \"%s\":", array);
        }
        return tsr__fail(L->c, TSR_EPROGRAM,
                         "%s:%d:%d:%s number out of range: %s (JSON numbers must be finite "
                         "doubles, integers between -2^63 and 2^63-1; write a larger seed as a "
                         "string of digits)",
                         L->file, e->line, e->column, where, e->text);
    }
    return tsr__fail(L->c, TSR_EPROGRAM, "%s:%d:%d: JSON syntax error: %s", L->file, e->line,
                     e->column, e->text);
}

int tsr_program_load_string(tsr_client *c, const char *json, const char *name, tsr_program **out) {
    if (out) *out = NULL;
    if (!c || !json || !out)
        return tsr__fail(c, TSR_EINVALID, "tsr_program_load_string: NULL argument");
    tsr__loader L = {.c = c, .file = name ? name : "<string>"};
    json_error_t e;
    L.root = json_loads(json, JSON_REJECT_DUPLICATES, &e);
    if (!L.root) return syntax_error(&L, &e, json, strlen(json));
    int rc = load_root(&L, out);
    json_decref(L.root);
    return rc;
}

int tsr_program_load(tsr_client *c, const char *path, tsr_program **out) {
    if (out) *out = NULL;
    if (!c || !path || !out) return tsr__fail(c, TSR_EINVALID, "tsr_program_load: NULL argument");
    tsr__loader L = {.c = c, .file = path, .file_path = path};
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f) {
        int e = errno;
        return tsr__fail(c, -e, "%s: cannot open: %s", path, strerror(e));
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return tsr__fail(c, -EISDIR, "%s: cannot open: %s", path, strerror(EISDIR));
    }
    json_error_t e;
    L.root = json_loadf(f, JSON_REJECT_DUPLICATES, &e);
    if (!L.root) {
        /* The text again, for naming the array in the message (programs are small). */
        char *text = NULL;
        size_t len = 0;
        if (json_error_code(&e) == json_error_numeric_overflow && fseek(f, 0, SEEK_END) == 0) {
            long n = ftell(f);
            if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)n + 1)))
                len = fread(text, 1, (size_t)n, f);
        }
        fclose(f);
        int rc = syntax_error(&L, &e, text, len);
        free(text);
        return rc;
    }
    fclose(f);
    int rc = load_root(&L, out);
    json_decref(L.root);
    return rc;
}
