/* What lowering (lower.c) shares with fusion (fuse.c): the per-lowering state and the few helpers
 * fuse.c emits its tasks with. Private to array/. */
#ifndef TSR_LOWER_PRIV_H
#define TSR_LOWER_PRIV_H

#include "array/array.h"
#include "array/lower.h"

#define NONE UINT32_MAX

/* Per-array state of one lowering, found through the array's lower_tasks[nchunks] slot. */
typedef struct node {
    tsr_array *a;
    int64_t nchunks;
    int64_t *off[TSR_MAX_NDIM]; /* cumulative chunk offsets (numchunks + 1), made on demand */
    int64_t garray;             /* graph array record, added with the array's first task */
    int same_grid;              /* RECHUNK to the operand's own grid: pass its tasks through */
    int depth;                  /* longest operand path below (1 for sources) */
    /* Fusion (fuse.c): how many arrays use this one in this lowering (each counted once); it is
     * fused into its single consumer (no tasks of its own); or it is the root of a fused group
     * (its tasks, or a reduction's partials, run the group's program); steps: the group's
     * program length so far; opname: the root's operation name in the graph ("fused(add,sqrt)",
     * owned), NULL when not a root. */
    int uses;
    int fused;
    int root;
    int steps;
    int output;
    char *opname;
    /* A MATMUL over packed tiles (lower.c, emit_matmul): the PACK task of each chunk of its
     * left operand (packed[0]) and right operand (packed[1]), -1 until emitted. */
    int64_t *packed[2];
} node;

/* Where a task's chunk sits, for the dot labels. */
typedef struct task_origin {
    tsr_array *a;
    int64_t ci;
} task_origin;

struct lctx {
    tsr_client *c;
    tsr_graph *g;
    uint64_t epoch;
    int fuse;    /* fuse elementwise chains (tsr_compute_options.no_fuse clears it) */
    node *nodes; /* in discovery order */
    size_t nnodes, nodes_cap;
    uint32_t *order; /* node indices in dependency order (operands first) */
    size_t norder, order_cap;
    task_origin *origin; /* NULL unless the dot writer asked for it */
    size_t origin_cap;
};

/* lower.c */
node *tsr__lower_node(lctx *L, const tsr_array *a);
/* tsr__lower_add (lower.h) with the task's cost given rather than computed from its shapes. */
int64_t tsr__lower_add_flops(lctx *L, tsr_array *a, int64_t ci, const tsr_kdesc *d,
                             const uint32_t *deps, uint32_t ndeps, double flops);

/* fuse.c */
/* Decides, from the graph alone, which arrays are fused into their consumer (nodes' fused, root,
 * opname); outputs[n] are the requested arrays, never fused away. */
int tsr__fuse_plan(lctx *L, tsr_array *const *outputs, size_t n);
/* The FUSED task making chunk ci (grid index idx, shape shape) of a fused group's elementwise
 * root a. */
int64_t tsr__fuse_emit(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx, const int64_t *shape);
/* The FUSED task making the partial of reduction a's output chunk ci (shape) from chunk xidx of
 * its (fused) operand. */
int64_t tsr__fuse_partial(lctx *L, tsr_array *a, int64_t ci, const int64_t *xidx,
                          const int64_t *shape);

#endif
