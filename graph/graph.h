/* The chunk-task DAG as the client builds it, and the msgpack forms it travels in.
 *
 * A task makes exactly one chunk. Its kernel descriptor (tsr_kdesc: operation, dtype, chunk
 * shape and operation-specific parameters) is opaque to the scheduler, which only sees the
 * dependencies, the cost and the size of the result. Task ids are dense, 0-based, and every
 * task's inputs have smaller ids than the task itself (topological order), which both the
 * validation and the static priorities (lower id first) rely on. */
#ifndef TSR_GRAPH_H
#define TSR_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "common/common.h"
#include "graph/ops.h"

/* What a kernel needs to make one chunk. The pointers are borrowed from whoever owns the
 * descriptor (the graph's pools, or a decoded msgpack zone). */
typedef struct tsr_kdesc {
    uint8_t kop;   /* tsr_kop */
    uint8_t fn;    /* sub-operation: tsr_unary_op, tsr_binary_op or tsr_reduce_op */
    uint8_t dtype; /* tsr_dtype of the output chunk */
    uint8_t ndim;  /* output chunk ndim (0..TSR_MAX_NDIM) */
    int64_t shape[TSR_MAX_NDIM];
    uint32_t ni, nf;
    const int64_t *i; /* ni integer parameters */
    const double *f;  /* nf float parameters */
    const char *s;    /* string parameter (a path, a plugin's "LIBRARY:SYMBOL") or NULL */
    /* MAP_BLOCKS only: the plugin function the worker resolved from s before running the task
     * (worker/plugins.c); never packed or sent, NULL everywhere else. Kernels stay pure: they
     * call what the descriptor hands them and look nothing up. */
    tsr_plugin_fn plugin;
} tsr_kdesc;

/* Output chunk bytes of a descriptor (product of shape * dtype size; 1 element when ndim 0). */
uint64_t tsr__kdesc_nbytes(const tsr_kdesc *d);

/* Encodes a descriptor as a msgpack array [kop, fn, dtype, [shape...], [i...], [f...], s|nil]. */
int tsr__kdesc_pack(msgpack_packer *pk, const tsr_kdesc *d);
/* Decodes one; pointers in *d borrow from the ibuf and fbuf it allocates and returns (the
 * NUL-terminated string is stored after the integers in *ibuf) and the caller releases with
 * tsr__kdesc_unpack_free, on failure too (both are NULL then). Returns 0, -ENOMEM, or
 * TSR_EPROTOCOL for anything malformed (never asserts on peer input). */
int tsr__kdesc_unpack(const msgpack_object *obj, tsr_kdesc *d, int64_t **ibuf, double **fbuf);
/* Frees the scratch returned by tsr__kdesc_unpack. */
void tsr__kdesc_unpack_free(int64_t *ibuf, double *fbuf);

/* One task in the client's graph. */
typedef struct tsr_gtask {
    tsr_kdesc d;       /* i/f/s point into the graph's pools (valid while the graph lives) */
    uint32_t array;    /* index into graph->arrays (for names, progress by op, errors) */
    uint32_t deps_off; /* into graph->deps */
    uint32_t ndeps;    /* inputs, in the order the kernel takes them */
    double flops;      /* cost estimate */
    int64_t chunk;     /* row-major index, in its array's chunk grid, of the chunk it makes or
                        * contributes to (a reduction's partials); -1 when not said. Not sent:
                        * the client names it when the task fails */
} tsr_gtask;

/* Per-array metadata carried with the graph (the scheduler uses it for messages and progress
 * per operation). */
typedef struct tsr_garray {
    char *name;   /* owned */
    char *op;     /* owned: "matmul", "random", ... */
    char *plugin; /* owned: the plugin library its tasks need (map_blocks), or NULL */
    int ndim;     /* its chunk grid, for messages (0 until set: tsr__graph_set_grid) */
    int64_t grid[TSR_MAX_NDIM];
} tsr_garray;

typedef struct tsr_graph {
    tsr_gtask *tasks;
    size_t ntasks, tasks_cap;
    uint32_t *deps;
    size_t ndeps, deps_cap;
    tsr_garray *arrays;
    size_t narrays, arrays_cap;
    uint32_t *outputs; /* task ids the client wants kept and reported */
    size_t noutputs, outputs_cap;
    /* Parameter pools. Pointers in descriptors are fixed up lazily: while building, tasks hold
     * offsets (see tsr__graph_add_task), resolved by tsr__graph_finish. */
    int64_t *ipool;
    size_t nipool, ipool_cap;
    double *fpool;
    size_t nfpool, fpool_cap;
    char **strings;
    size_t nstrings, strings_cap;
} tsr_graph;

void tsr__graph_init(tsr_graph *g);
void tsr__graph_free(tsr_graph *g); /* frees what the graph owns; g itself is the caller's */

/* Adds an array record; returns its index or a negative code. name/op copied. */
int64_t tsr__graph_add_array(tsr_graph *g, const char *name, const char *op);

/* Adds a task: d's i/f/s are copied into the pools, deps copied (each must be < the new id).
 * Returns the new task id (>= 0) or a negative code. */
int64_t tsr__graph_add_task(tsr_graph *g, const tsr_kdesc *d, uint32_t array, const uint32_t *deps,
                            uint32_t ndeps, double flops);
int tsr__graph_add_output(tsr_graph *g, uint32_t task);
/* Records array a's chunk grid (numchunks per axis) for messages. */
void tsr__graph_set_grid(tsr_graph *g, uint32_t a, int ndim, const int64_t *grid);
/* Records the plugin library array a's tasks need (copied; the first one set stays): the
 * scheduler sends them only to workers that can load it. 0 or -ENOMEM. */
int tsr__graph_set_plugin(tsr_graph *g, uint32_t a, const char *lib);
/* "(i, j)": the grid index of task t's chunk (tsr_gtask.chunk) in its array, or "" when
 * unknown. */
void tsr__graph_chunk_str(const tsr_graph *g, uint32_t t, char *buf, size_t size);

/* Makes every descriptor's i/f/s pointer valid (after the last add). */
void tsr__graph_finish(tsr_graph *g);

/* The submission payload:
 *   {"v":1,
 *    "arrays": [[name, op], ...]   ([name, op, plugin_library] for map_blocks arrays),
 *    "tasks": [[array_idx, [deps...], nbytes, flops, kdesc_bin], ...],
 *    "outputs": [task ids...]}
 * where kdesc_bin is a msgpack bin holding tsr__kdesc_pack's encoding (opaque to the scheduler,
 * forwarded to workers as is). */
int tsr__graph_pack(const tsr_graph *g, msgpack_sbuffer *out);

/* The payload is decoded once, by the scheduler's cursor-based tsr__proto_submit
 * (scheduler/proto.c), which validates what it relies on while copying it into its job. */

#endif
