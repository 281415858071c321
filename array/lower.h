/* What lower.c shares with the lowering files of particular operations (lower_reduce.c,
 * lower_shape.c): the lowering context stays opaque; a lowering function adds tasks and asks for
 * operand chunks through these calls only. */
#ifndef TSR_ARRAY_LOWER_H
#define TSR_ARRAY_LOWER_H

#include "array/array.h"

typedef struct lctx lctx;

/* Adds one task of array a (making chunk ci, or contributing to it) with descriptor d (copied)
 * and dependencies deps[ndeps]; in0 (in0_ndim axes) is the first input chunk's shape where the
 * cost model needs it, else NULL. Returns the task id, or a negative code (message recorded). */
int64_t tsr__lower_add(lctx *L, tsr_array *a, int64_t ci, const tsr_kdesc *d, const uint32_t *deps,
                       uint32_t ndeps, int in0_ndim, const int64_t *in0);
/* The task making chunk ci (row-major) of operand x, emitting it first if needed: 0 with *dep
 * set, or a negative code. */
int tsr__lower_dep(lctx *L, tsr_array *x, int64_t ci, uint32_t *dep);

/* Lowering functions of TSR__AOP_MAP rows defined outside lower.c: the tasks of output chunk ci
 * (grid index idx, shape shape) of a; returns the task making it. */
int64_t tsr__emit_reduce2(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                          const int64_t *shape);
int64_t tsr__emit_scan(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx, const int64_t *shape);

/* a's cumulative chunk offsets along ax (numchunks + 1 entries, kept for the lowering), or NULL
 * (the failure recorded) when out of memory. */
const int64_t *tsr__lower_offsets(lctx *L, const tsr_array *a, int ax);

/* The structural operations (array/lower_shape.c): slice, take, concatenate, and reshape (with
 * squeeze and expand_dims). */
int64_t tsr__emit_slice(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                        const int64_t *shape);
int64_t tsr__emit_take(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx, const int64_t *shape);
int64_t tsr__emit_concatenate(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                              const int64_t *shape);
int64_t tsr__emit_reshape(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                          const int64_t *shape);

#endif
