/* A loaded program: its accessors, running it (one submission for all outputs, then the .npy
 * writes and the printed outputs in file order) and freeing it. A client of tessera.h only. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "array/loader.h"

size_t tsr_program_narrays(const tsr_program *p) {
    return p ? p->narrays : 0;
}

tsr_array *tsr_program_array(const tsr_program *p, size_t i) {
    return p && i < p->narrays ? p->arrays[i] : NULL;
}

tsr_array *tsr_program_find(const tsr_program *p, const char *name) {
    if (!p || !name) return NULL;
    for (size_t i = 0; i < p->narrays; i++)
        if (!strcmp(tsr_array_name(p->arrays[i]), name)) return p->arrays[i];
    return NULL;
}

size_t tsr_program_noutputs(const tsr_program *p) {
    return p ? p->noutputs : 0;
}

tsr_array *tsr_program_output(const tsr_program *p, size_t i, const char **path) {
    if (!p || i >= p->noutputs) {
        if (path) *path = NULL;
        return NULL;
    }
    if (path) *path = p->outputs[i].path;
    return p->outputs[i].array;
}

int tsr_program_output_target(const tsr_program *p, size_t i, tsr_store_target *t) {
    if (!p || !t || i >= p->noutputs || !strcmp(p->outputs[i].path, "-")) return TSR_EINVALID;
    const tsr__output *o = &p->outputs[i];
    tsr_store_target_init(t, o->array, o->path);
    t->format = o->format;
    t->compressor = o->compressor;
    return 0;
}

/* Prints `NAME: v1 v2 ...` (%.17g, float32 widened to double) on one line. */
static int print_output(tsr_program *p, const tsr__output *o, FILE *out) {
    tsr_array *a = o->array;
    tsr_dtype dt = tsr_array_dtype(a);
    size_t n = (size_t)tsr_array_size(a), esz = tsr_dtype_size(dt);
    void *buf = malloc(n ? n * esz : 1);
    if (!buf) return tsr__fail(p->client, -ENOMEM, "out of memory");
    int rc = tsr_array_read(a, buf, n * esz);
    if (rc) {
        free(buf);
        return rc;
    }
    fprintf(out, "%s:", tsr_array_name(a));
    /* Floats as %.17g; int64 and bool as integers (bool 0 or 1), SPEC §2. */
    for (size_t i = 0; i < n; i++) {
        if (dt == TSR_INT64)
            fprintf(out, " %" PRId64, ((const int64_t *)buf)[i]);
        else if (dt == TSR_BOOL)
            fprintf(out, " %d", ((const uint8_t *)buf)[i] ? 1 : 0);
        else
            fprintf(out, " %.17g",
                    dt == TSR_FLOAT32 ? (double)((float *)buf)[i] : ((double *)buf)[i]);
    }
    fputc('\n', out);
    free(buf);
    errno = 0;
    if (fflush(out) != 0 || ferror(out)) {
        int e = errno ? errno : EIO;
        return tsr__fail(p->client, -e, "%s: array \"%s\": cannot print: %s", p->name,
                         tsr_array_name(a), strerror(e));
    }
    return 0;
}

int tsr_program_run(tsr_program *p, const tsr_compute_options *opts, FILE *out) {
    if (!p) return tsr__fail(NULL, TSR_EINVALID, "tsr_program_run: NULL program");
    if (!out) out = stdout;
    /* Printed outputs are computed and kept (read after); file outputs are written as their
     * chunks are computed, in the same submission, together with any targets opts names. */
    size_t nextra = opts ? opts->nstore : 0;
    tsr_array **arrays = calloc(p->noutputs ? p->noutputs : 1, sizeof *arrays);
    tsr_store_target *targets = calloc(p->noutputs + nextra + 1, sizeof *targets);
    if (!arrays || !targets) {
        free(arrays);
        free(targets);
        return tsr__fail(p->client, -ENOMEM, "out of memory");
    }
    size_t n = 0, nt = 0;
    for (size_t i = 0; i < p->noutputs; i++) {
        const tsr__output *o = &p->outputs[i];
        if (tsr_program_output_target(p, i, &targets[nt]) == 0) {
            nt++;
            continue;
        }
        /* Output names are unique keys, but two names never share an array either:
         * deduplicating keeps that true if it ever changes. */
        size_t k = 0;
        while (k < n && arrays[k] != o->array) k++;
        if (k == n) arrays[n++] = o->array;
    }
    for (size_t i = 0; i < nextra; i++) targets[nt++] = opts->store[i];
    tsr_compute_options co;
    if (opts)
        co = *opts;
    else
        tsr_compute_options_default(&co);
    co.store = targets;
    co.nstore = nt;
    /* A connected client computes even no outputs, so that its statistics and trace describe
     * this run (of zero tasks); an offline one can only run a program without outputs. */
    int rc = n || nt || tsr_client_address(p->client) ? tsr_compute(p->client, arrays, n, &co) : 0;
    free(arrays);
    free(targets);
    if (rc) return rc;
    for (size_t i = 0; i < p->noutputs; i++) {
        const tsr__output *o = &p->outputs[i];
        if (!strcmp(o->path, "-")) rc = print_output(p, o, out);
        if (rc) return rc;
    }
    return 0;
}

void tsr_program_free(tsr_program *p) {
    if (!p) return;
    /* Users before their operands: each handle dropped is then the last reference to its array,
     * so nothing cascades (forward order would free a long chain recursively at the end). */
    for (size_t i = p->narrays; i-- > 0;) tsr_array_free(p->arrays[i]);
    for (size_t i = 0; i < p->noutputs; i++) free(p->outputs[i].path);
    free(p->arrays);
    free(p->outputs);
    free(p->name);
    free(p);
}
