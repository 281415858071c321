/* The program loader's "outputs": checking the entries before anything is built (known arrays,
 * store entries, no path written twice), recording them in the built program (a printed output
 * must be small), and checking their paths against the files (loader_paths.c). Builds and writes
 * nothing. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "array/loader_priv.h"

/* The largest array a "-" output may print. */
#define PRINT_MAX 1000

static void shape_str(const tsr_array *a, char *buf, size_t size) {
    int nd = tsr_array_ndim(a);
    const int64_t *sh = tsr_array_shape(a);
    size_t len = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < nd && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%" PRId64, i ? "," : "", sh[i]);
    if (len < size) snprintf(buf + len, size - len, "%s)", nd == 1 ? "," : "");
}

/* Printable shapes: 0-d, 1-d, or every axis but at most one of extent 1 (a keepdims result). */
static int one_long_axis(const tsr_array *a) {
    int nd = tsr_array_ndim(a), long_axes = 0;
    const int64_t *sh = tsr_array_shape(a);
    for (int i = 0; i < nd; i++) long_axes += sh[i] != 1;
    return nd <= 1 || long_axes <= 1;
}

/* An output entry's path: the string, or an object's "path" (NULL when it has none). */
static const char *out_path(const json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    const json_t *p = json_object_get(v, "path");
    return json_is_string(p) ? json_string_value(p) : NULL;
}

/* An object entry: {"path": "c.zarr", "compressor": "blosc" | "zlib" | null}, a Zarr store. */
static int check_store_entry(tsr__loader *L, const tsr__loader_def *d, json_t *v, int *compressor) {
    char b[64];
    const char *key;
    json_t *x;
    *compressor = TSR_COMPRESSOR_DEFAULT;
    json_object_foreach(v, key, x) {
        if (strcmp(key, "path") && strcmp(key, "compressor"))
            return tsr__loader_fail(
                L, d, TSR_EPROGRAM,
                "output: unknown key \"%s\" (a store output takes path, compressor)", key);
    }
    x = json_object_get(v, "path");
    if (!x) return tsr__loader_fail(L, d, TSR_EPROGRAM, "output: a store output needs \"path\"");
    if (!json_is_string(x) || !*json_string_value(x) || !strcmp(json_string_value(x), "-"))
        return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                "output: \"path\" must be the store's path, got %s",
                                tsr__loader_show(x, b, sizeof b));
    x = json_object_get(v, "compressor");
    if (!x) return 0;
    if (json_is_null(x))
        *compressor = TSR_COMPRESSOR_NONE;
    else if (json_is_string(x) && !strcmp(json_string_value(x), "blosc"))
        *compressor = TSR_COMPRESSOR_BLOSC;
    else if (json_is_string(x) && !strcmp(json_string_value(x), "zlib"))
        *compressor = TSR_COMPRESSOR_ZLIB;
    else
        return tsr__loader_fail(
            L, d, TSR_EPROGRAM,
            "output: unknown compressor %s (expected \"blosc\", \"zlib\" or null)",
            tsr__loader_show(x, b, sizeof b));
    return 0;
}

/* Checks the outputs before anything is built: known names, paths, no file written twice. */
int tsr__loader_check_outputs(tsr__loader *L, json_t *outs) {
    char b[64];
    if (!json_is_object(outs))
        return tsr__loader_fail(
            L, NULL, TSR_EPROGRAM,
            "\"outputs\" must be an object mapping array names to paths, got %s",
            tsr__loader_show(outs, b, sizeof b));
    const char *key, *key2;
    json_t *v, *v2;
    json_object_foreach(outs, key, v) {
        json_t *ix = json_object_get(L->index, key);
        if (!ix)
            return tsr__loader_fail(L, NULL, TSR_EPROGRAM, "outputs: unknown array \"%s\"", key);
        int compressor;
        if (json_is_object(v)) {
            int rc = check_store_entry(L, &L->defs[json_integer_value(ix)], v, &compressor);
            if (rc) return rc;
        } else if (!json_is_string(v) || !*json_string_value(v)) {
            return tsr__loader_fail(L, NULL, TSR_EPROGRAM,
                                    "outputs: \"%s\" must map to a .npy or .zarr path, \"-\" or "
                                    "{\"path\": ..., \"compressor\": ...}, got %s",
                                    key, tsr__loader_show(v, b, sizeof b));
        }
        const char *path = out_path(v);
        if (!strcmp(path, "-") || tsr__is_char_device(path)) continue; /* /dev/null: any number */
        json_object_foreach(outs, key2, v2) {
            if (v2 == v) break;
            const char *p2 = out_path(v2);
            if (p2 && !strcmp(p2, path))
                return tsr__loader_fail(L, NULL, TSR_EPROGRAM,
                                        "outputs: \"%s\" and \"%s\" both write \"%s\"", key2, key,
                                        path);
        }
    }
    return 0;
}

/* Records the outputs of a built program; a "-" output must be small enough to print. */
int tsr__loader_add_outputs(tsr__loader *L, tsr_program *p, json_t *outs) {
    p->outputs = calloc(json_object_size(outs) + 1, sizeof *p->outputs);
    if (!p->outputs) return tsr__loader_fail(L, NULL, -ENOMEM, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(outs, key, v) {
        const tsr__loader_def *d = &L->defs[json_integer_value(json_object_get(L->index, key))];
        tsr__output *o = &p->outputs[p->noutputs];
        o->path = strdup(out_path(v));
        if (!o->path) return tsr__loader_fail(L, NULL, -ENOMEM, "out of memory");
        o->array = d->array;
        o->format = TSR_FORMAT_AUTO;
        o->compressor = TSR_COMPRESSOR_DEFAULT;
        if (json_is_object(v)) {
            o->format = TSR_FORMAT_ZARR;
            check_store_entry(L, d, v, &o->compressor); /* checked before: cannot fail */
        }
        p->noutputs++;
        if (!strcmp(o->path, "-") &&
            (!one_long_axis(o->array) || tsr_array_size(o->array) > PRINT_MAX)) {
            char sh[256];
            shape_str(o->array, sh, sizeof sh);
            return tsr__loader_fail(L, d, TSR_EPROGRAM,
                                    "cannot print an array of shape %s; give a .npy path", sh);
        }
    }
    return 0;
}

/* Outputs against the program file, the loaded files and each other (loader_paths.c). */
int tsr__loader_check_paths(tsr__loader *L, const tsr_program *p) {
    tsr__load_input *in = calloc(L->ndefs + 1, sizeof *in);
    if (!in) return tsr__loader_fail(L, NULL, -ENOMEM, "out of memory");
    size_t nin = 0;
    for (size_t i = 0; i < L->ndefs; i++)
        if (L->defs[i].op->kind == TSR__LK_LOAD)
            in[nin++] = (tsr__load_input){L->defs[i].name, L->defs[i].path};
    int rc = tsr__program_check_paths(L->c, L->file, L->file_path, p, in, nin);
    free(in);
    return rc;
}
