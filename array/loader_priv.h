/* What the program loader's files share (loader.c parses and builds, loader_shape.c the
 * structural operations and map_blocks, loader_outputs.c the "outputs" entries): the parsed
 * definitions, the loader's state and its error helpers. Private to the loader: nothing outside
 * array/loader*.c includes it. */
#ifndef TSR_LOADER_PRIV_H
#define TSR_LOADER_PRIV_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "array/loader.h"
#include "tessera/tessera.h"

/* What a program-file operation builds (TSR__LK_: "loader kind"), which selects its parsing and
 * its build in build_def. */
typedef enum tsr__loader_kind {
    TSR__LK_CONST,
    TSR__LK_FULL,
    TSR__LK_RANDOM,
    TSR__LK_ARANGE,
    TSR__LK_LOAD,
    TSR__LK_UNARY,
    TSR__LK_BINARY,
    TSR__LK_MATMUL,
    TSR__LK_TRANSPOSE,
    TSR__LK_REDUCE,
    TSR__LK_RECHUNK,
    TSR__LK_ASTYPE,
    TSR__LK_WHERE,
    TSR__LK_CLIP,
    TSR__LK_TENSORDOT,
    TSR__LK_NORMAL,
    TSR__LK_EYE,
    TSR__LK_SCAN,
    TSR__LK_SLICE,
    TSR__LK_TAKE,
    TSR__LK_CONCATENATE,
    TSR__LK_STACK,
    TSR__LK_RESHAPE,
    TSR__LK_SQUEEZE,
    TSR__LK_EXPAND_DIMS,
    TSR__LK_MAP_BLOCKS,
} tsr__loader_kind;

/* A tsr__loader_op.nargs for operations that take any number of operands, at least one
 * (concatenate, stack, map_blocks). */
#define TSR__LOADER_VARARGS (-1)

typedef struct tsr__loader_op {
    const char *name;
    tsr__loader_kind kind;
    int fn;           /* the tsr_unary_op / tsr_binary_op / tsr_reduce_op; 1 for "ones" */
    int nargs;        /* entries in "args" (0: no "args" key; TSR__LOADER_VARARGS: one or more) */
    const char *keys; /* allowed keys besides "op" and "args", comma-separated */
    const char *required; /* keys that must be present, comma-separated */
} tsr__loader_op;

/* One array definition, parsed and checked before anything is built. */
typedef struct tsr__loader_def {
    const char *name; /* borrowed from the JSON document */
    json_t *obj;
    const tsr__loader_op *op;
    int nargs;      /* entries in "args" */
    int *arg;       /* index of each operand's definition, or -1 for a scalar (argbuf or owned) */
    double *scalar; /* the scalar where arg[k] == -1 (scalarbuf or owned) */
    int argbuf[3];
    double scalarbuf[3];
    unsigned scalar_float; /* bit k: args[k] is a number written as a float (1.5, 1.0, 1e3) */
    int64_t iscalar[3];    /* args[k] (k < 3) written as an integer: its exact value */
    int has_min, has_max;  /* clip: "min" / "max" present and not null */
    double min, max;
    int64_t imin, imax; /* clip: "min" / "max" written as integers, exactly */
    int min_float, max_float;
    int ndim; /* sources with "shape" */
    int64_t shape[TSR_MAX_NDIM];
    int has_chunks, chunks_is_int, nchunks;
    int64_t chunks[TSR_MAX_NDIM];
    tsr_dtype dtype;
    double value, start, stop, step;
    uint64_t seed;
    int has_axes, naxes; /* has_axes == 0: "axis"/"axes" absent or null */
    int axes[TSR_MAX_NDIM];
    int axis_is_list; /* "axis" was a list (argmax/argmin and scans take an int or null) */
    int keepdims, ddof;
    const char *path;
    tsr_index index[TSR_MAX_NDIM]; /* slice */
    int nindex;
    double loc, scale;           /* normal */
    int64_t eye_n, eye_m, eye_k; /* eye; eye_m < 0: "m" absent (n) */
    int td_n, td_lists;          /* tensordot: pairs; td_lists 0 for the integer form */
    int td_a[TSR_MAX_NDIM], td_b[TSR_MAX_NDIM];
    const char *kernel; /* map_blocks: "LIBRARY:SYMBOL" (borrowed from the document) */
    /* Topological sort. */
    int color, next_arg;
    tsr_array *array;
} tsr__loader_def;

typedef struct tsr__loader {
    tsr_client *c;
    const char *file;      /* for messages */
    const char *file_path; /* the program file, to compare outputs with; NULL for a string */
    json_t *root, *arrays, *index;
    tsr__loader_def *defs;
    size_t ndefs;
    size_t *order;
} tsr__loader;

/* Records `FILE: array "NAME": message` (or `FILE: message` without a definition) and returns code.
 */
int tsr__loader_fail(tsr__loader *L, const tsr__loader_def *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A JSON value as it would be written, shortened for messages (in buf, or a fixed string). */
const char *tsr__loader_show(const json_t *v, char *buf, size_t size);
/* Names a built array after its definition: 0, or the failed call's code with a message. */
int tsr__loader_built(tsr__loader *L, tsr__loader_def *d, int rc, tsr_array *a);

/* The structural operations and map_blocks (loader_shape.c). */
int tsr__loader_parse_index(tsr__loader *L, tsr__loader_def *d, json_t *v);
int tsr__loader_parse_newshape(tsr__loader *L, tsr__loader_def *d, json_t *v);
int tsr__loader_build_shape_def(tsr__loader *L, tsr__loader_def *d, tsr_array *x, tsr_array *y);
int tsr__loader_build_map_blocks(tsr__loader *L, tsr__loader_def *d, const int64_t *chunks,
                                 tsr_array **out);

/* The "outputs" entries (loader_outputs.c). */
int tsr__loader_check_outputs(tsr__loader *L, json_t *outs);
int tsr__loader_add_outputs(tsr__loader *L, tsr_program *p, json_t *outs);
int tsr__loader_check_paths(tsr__loader *L, const tsr_program *p);

#endif
