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

typedef enum op_kind {
    K_CONST,
    K_FULL,
    K_RANDOM,
    K_ARANGE,
    K_LOAD,
    K_UNARY,
    K_BINARY,
    K_MATMUL,
    K_TRANSPOSE,
    K_REDUCE,
    K_RECHUNK,
    K_ASTYPE,
    K_WHERE,
    K_CLIP,
    K_TENSORDOT,
    K_NORMAL,
    K_EYE,
    K_SCAN,
    K_SLICE,
    K_TAKE,
    K_CONCATENATE,
    K_STACK,
    K_RESHAPE,
    K_SQUEEZE,
    K_EXPAND_DIMS,
    K_MAP_BLOCKS,
} op_kind;

/* An op_info.nargs for operations that take any number of operands, at least one
 * (concatenate, stack, map_blocks). */
#define VARARGS (-1)

typedef struct op_info {
    const char *name;
    op_kind kind;
    int fn;               /* the tsr_unary_op / tsr_binary_op / tsr_reduce_op; 1 for "ones" */
    int nargs;            /* entries in "args" (0: no "args" key; VARARGS: one or more) */
    const char *keys;     /* allowed keys besides "op" and "args", comma-separated */
    const char *required; /* keys that must be present, comma-separated */
} op_info;

/* One array definition, parsed and checked before anything is built. */
typedef struct def {
    const char *name; /* borrowed from the JSON document */
    json_t *obj;
    const op_info *op;
    int nargs;      /* entries in "args" */
    int *arg;       /* index of each operand's definition, or -1 for a scalar (argbuf or owned) */
    double *scalar; /* the scalar where arg[k] == -1 (scalarbuf or owned) */
    int argbuf[3];
    double scalarbuf[3];
    unsigned scalar_float; /* bit k: args[k] is a number written as a float (1.5, 1.0, 1e3) */
    int64_t iscalar[3];    /* args[k] (k < 3) written as an integer: its exact value */
    int has_min, has_max;  /* clip: "min" / "max" present and not null */
    double min, max;
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
} def;

typedef struct loader {
    tsr_client *c;
    const char *file;      /* for messages */
    const char *file_path; /* the program file, to compare outputs with; NULL for a string */
    json_t *root, *arrays, *index;
    def *defs;
    size_t ndefs;
    size_t *order;
} loader;

/* Records `FILE: array "NAME": message` (or `FILE: message` without a def) and returns code. */
int tsr__loader_fail(loader *L, const def *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A JSON value as it would be written, shortened for messages (in buf, or a fixed string). */
const char *tsr__loader_show(const json_t *v, char *buf, size_t size);
/* Names a built array after its definition: 0, or the failed call's code with a message. */
int tsr__loader_built(loader *L, def *d, int rc, tsr_array *a);

/* The structural operations and map_blocks (loader_shape.c). */
int tsr__loader_parse_index(loader *L, def *d, json_t *v);
int tsr__loader_parse_newshape(loader *L, def *d, json_t *v);
int tsr__loader_build_shape_def(loader *L, def *d, tsr_array *x, tsr_array *y);
int tsr__loader_build_map_blocks(loader *L, def *d, const int64_t *chunks, tsr_array **out);

/* The "outputs" entries (loader_outputs.c). */
int tsr__loader_check_outputs(loader *L, json_t *outs);
int tsr__loader_add_outputs(loader *L, tsr_program *p, json_t *outs);
int tsr__loader_check_paths(loader *L, const tsr_program *p);

#endif
