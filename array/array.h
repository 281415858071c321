/* Lazy chunked arrays and the client side of the API: what array/ files share.
 *
 * An array is a node of the user's expression DAG: a definition (operation, operands,
 * parameters), a shape, a dtype and a chunk grid. Nothing runs until tsr_compute(), which lowers
 * the requested arrays to one chunk-task graph (lower.c), submits it (client.c) and records where
 * each output chunk now lives (tsr_array.computed). */
#ifndef TSR_ARRAY_H
#define TSR_ARRAY_H

#include <stdint.h>
#include <uv.h>

#include "common/common.h"
#include "graph/graph.h"

/* Array-level operations: the nodes of the user's expression DAG, and how each is lowered. One
 * row per operation (the kernel families and the elementwise/reduction sub-operations they use
 * are in graph/ops.h): XX(ENUM, kop, nargs, dtype, lower)
 *   kop    the kernel family its tasks run (a RECHUNK to the operand's own grid runs none; a
 *          REDUCE also emits COMBINE tasks).
 *   nargs  array operands (-1: any number, at least one).
 *   dtype  the result's dtype rule (tsr__aop_dtype): GIVEN (the constructor's argument, or the
 *          file's), SAME (operand 0's), PROMOTE (numpy.result_type of the operands), OP (the
 *          sub-operation's rule on the promoted dtype, promote.c: div of integers gives float64,
 *          sum of bools int64; the constructor applies it), BOOL (comparisons, predicates).
 *   lower  the lower.c function that emits the tasks of one output chunk. */
#define TSR__AOP_MAP(XX)                                                                           \
    XX(FULL, FILL, 0, GIVEN, emit_source) /* zeros, ones and full: value */                        \
    XX(RANDOM, RANDOM, 0, GIVEN, emit_source)                                                      \
    XX(ARANGE, ARANGE, 0, GIVEN, emit_source)                                                      \
    XX(LOAD, LOAD, 0, GIVEN, emit_source)                                                          \
    XX(UNARY, UNARY, 1, OP, emit_map)                                                              \
    XX(BINARY, BINARY, 2, OP, emit_broadcast)                                                      \
    XX(BINARY_SCALAR, BINARY_SCALAR, 1, OP, emit_map)                                              \
    XX(MATMUL, MATMUL, 2, PROMOTE, emit_matmul)                                                    \
    XX(TRANSPOSE, TRANSPOSE, 1, SAME, emit_transpose)                                              \
    XX(REDUCE, REDUCE, 1, OP, emit_reduce)                                                         \
    XX(RECHUNK, ASSEMBLE, 1, SAME, emit_rechunk)                                                   \
    XX(ASTYPE, ASTYPE, 1, GIVEN, emit_map)                                                         \
    XX(COMPARE, COMPARE, 2, BOOL, emit_broadcast)  /* less, ..., logical_or of two arrays */       \
    XX(COMPARE_SCALAR, COMPARE, 1, BOOL, emit_map) /* ... of an array and a number */              \
    XX(PREDICATE, PREDICATE, 1, BOOL, emit_map)    /* logical_not, isnan, isfinite */              \
    XX(WHERE, WHERE, 3, PROMOTE, emit_broadcast)   /* X and Y may be numbers: fewer operands */    \
    XX(NORMAL, NORMAL, 0, GIVEN, emit_source)                                                      \
    XX(EYE, EYE, 0, GIVEN, emit_source)                                                            \
    XX(CONTRACT, CONTRACT, 2, GIVEN, emit_contract)   /* tensordot, N-d matmul: linalg.c */        \
    XX(FROM_BUFFER, DATA, 0, GIVEN, emit_data)        /* tsr_from_buffer: data, a C-order copy */  \
    XX(REDUCE2, REDUCE2, 1, GIVEN, tsr__emit_reduce2) /* prod ... argmin: array/lower_reduce.c */  \
    XX(SCAN, SCAN, 1, GIVEN, tsr__emit_scan)          /* cumsum, cumprod */                        \
    XX(SLICE, STRIDED, 1, SAME, tsr__emit_slice)                                                   \
    XX(TAKE, TAKE, 2, SAME, tsr__emit_take)                                                        \
    XX(CONCATENATE, STRIDED, -1, SAME, tsr__emit_concatenate)                                      \
    XX(RESHAPE, STRIDED, 1, SAME, tsr__emit_reshape)                                               \
    XX(MAP_BLOCKS, MAP_BLOCKS, -1, GIVEN, emit_map_blocks) /* -1: one or more (map_blocks.c) */

typedef enum tsr_aop {
#define TSR__AOP_ENUM_ROW(E, ...) TSR_A_##E,
    TSR__AOP_MAP(TSR__AOP_ENUM_ROW)
#undef TSR__AOP_ENUM_ROW
        TSR__AOP_COUNT
} tsr_aop;

/* Operand counts as constants (TSR__AOP_NARGS_UNARY == 1), for static tables such as the
 * program-file parser's. */
enum {
#define TSR__AOP_NARGS_ROW(E, kop, nargs, ...) TSR__AOP_NARGS_##E = nargs,
    TSR__AOP_MAP(TSR__AOP_NARGS_ROW)
#undef TSR__AOP_NARGS_ROW
};

typedef enum tsr__dtype_rule {
    TSR__DTYPE_GIVEN,
    TSR__DTYPE_SAME,
    TSR__DTYPE_PROMOTE,
    TSR__DTYPE_OP,
    TSR__DTYPE_BOOL
} tsr__dtype_rule;

/* The kernel family, operand count and dtype rule of an array-level operation. */
tsr_kop tsr__aop_kop(tsr_aop aop);
/* The result dtype of aop on operands of dtypes x and y (y ignored unless the rule needs two),
 * or `given` for GIVEN. */
tsr_dtype tsr__aop_dtype(tsr_aop aop, tsr_dtype x, tsr_dtype y, tsr_dtype given);

/* ---- promote.c: NumPy 2 (NEP 50) result dtypes ---- */

/* numpy.result_type of two arrays' dtypes (int64 with float32 gives float64). */
tsr_dtype tsr__promote(tsr_dtype x, tsr_dtype y);
/* An array of dtype x with a weak scalar (a program-file number): a float scalar keeps a float x
 * and makes int64/bool float64; an integer scalar keeps x, but makes bool int64. */
tsr_dtype tsr__promote_weak(tsr_dtype x, int scalar_is_float);
/* The result of unary op fn on dtype x (sqrt of int64 gives float64, isnan bool): 0, or
 * TSR_EINVALID where NumPy has no such loop (neg or sign of bool). */
int tsr__unary_dtype(int fn, tsr_dtype x, tsr_dtype *out);
/* The result of binary op fn on operands that promote to r (div of integers gives float64,
 * comparisons bool): 0, or TSR_EINVALID (sub of bools). */
int tsr__binary_dtype(int fn, tsr_dtype r, tsr_dtype *out);
/* The result of reduction fn of dtype x (sum of bool or int64 gives int64, mean float64). */
tsr_dtype tsr__reduce_dtype(int fn, tsr_dtype x);

/* Where a computed array's chunks live. */
typedef struct tsr__computed {
    uint64_t job;               /* scheduler job holding the chunks */
    int64_t nchunks;            /* product of numchunks over axes */
    uint32_t *task;             /* per chunk (row-major in the chunk grid): task id in the job */
    char **addr;                /* per chunk: owned "HOST:PORT" of the worker holding it */
    struct tsr__jobref *jobref; /* shared by the arrays computed in one submission */
} tsr__computed;

/* A job whose outputs some arrays still hold: released on the scheduler when the last of them
 * is freed. */
typedef struct tsr__jobref {
    int refs;
    uint64_t job;
    tsr_client *client;
} tsr__jobref;

struct tsr_array {
    int refs;       /* 1 for the user's handle (while user_alive) + 1 per array using it */
    int user_alive; /* the user's handle has not been freed */
    tsr_client *client;
    char *name;         /* owned; generated ("matmul-7") unless set */
    int named;          /* name is final (generated or set), not the provisional one */
    const char *opname; /* static: "random", "matmul", "zeros", ... */
    tsr_dtype dtype;
    int ndim;
    int64_t shape[TSR_MAX_NDIM];
    int64_t numchunks[TSR_MAX_NDIM];
    int64_t *chunks[TSR_MAX_NDIM]; /* owned: numchunks[ax] sizes along each axis */

    /* Definition. */
    tsr_aop aop;
    int fn;           /* unary/binary/reduce op */
    tsr_array **args; /* operands (each holds a ref): args_small, or owned beyond three */
    int nargs, args_cap;
    tsr_array *args_small[3];
    double value;   /* FULL value; BINARY_SCALAR scalar; ARANGE start */
    int64_t ivalue; /* FULL of int64, BINARY_SCALAR, COMPARE_SCALAR when has_ivalue: exact */
    int has_ivalue;
    double step;      /* ARANGE step */
    int scalar_first; /* BINARY_SCALAR, COMPARE_SCALAR */
    tsr_dtype cdtype; /* COMPARE, COMPARE_SCALAR: the dtype the operands are compared in */
    int scalar_mask;  /* WHERE: bit 0, X is `value`; bit 1, Y is `value2` (not operands) */
    double value2;    /* WHERE */
    int64_t ivalue2;  /* WHERE: Y exactly, when has_ivalue2 (X: ivalue, has_ivalue) */
    int has_ivalue2;
    uint64_t seed;          /* RANDOM */
    int axes[TSR_MAX_NDIM]; /* TRANSPOSE perm; REDUCE axes (normalised, ascending) */
    int naxes;
    int keepdims;         /* REDUCE, REDUCE2: reduced axes kept with extent 1 */
    int ddof;             /* REDUCE2 var/std */
    char *path;           /* LOAD: absolute path (owned) */
    int64_t data_offset;  /* LOAD: bytes to the data */
    tsr_dtype file_dtype; /* LOAD */
    /* LOAD of a Zarr store (zarr != 0, path its directory): the store's chunk grid, codec
     * (TSR__ZC_*), dimension separator and fill value. */
    int zarr;
    int zcodec;
    char zsep;
    double zfill;
    int64_t zchunks[TSR_MAX_NDIM];
    /* CONTRACT (tensordot, N-d matmul; array/linalg.c): the first nbatch output axes are batch
     * axes, which both operands may have (an operand's extent 1 there broadcasts); role[k][ax]
     * says what axis ax of operand k is: r >= 0 output axis r, r < 0 contraction pair -1 - r (of
     * ncontract). Output axes after the batch ones are operand 0's free axes, then operand 1's. */
    int nbatch, ncontract;
    int8_t role[2][TSR_MAX_NDIM];
    int64_t diag; /* EYE: the diagonal k; NORMAL keeps loc in value and scale in step */
    /* FROM_BUFFER: the caller's elements copied at construction (C order, owned), kept until the
     * array is freed so that a chunk lost with its worker is sent again (array/from_buffer.c). */
    void *data;
    /* tsr_persist'd: while computed.task is set, lowering takes its chunks from the job that holds
     * them (HELD tasks) instead of lowering its definition again. */
    int persisted;
    /* The client's list of every array not yet freed (tsr_client_free detaches them). */
    struct tsr_array *live_prev, *live_next;
    /* Its slot in the client's open scopes (scope.c), or -1: made in a scope, not kept. */
    int64_t scope_slot;
    /* SLICE: per operand axis, the first index taken and the step (0: an integer index, the
     * axis dropped). TAKE and CONCATENATE: the axis is axes[0]. RESHAPE: axes[k] for operand
     * axis k is the output axis whose chunks are its chunks, or -1 (one chunk) (shape_ops.c). */
    int64_t sl_start[TSR_MAX_NDIM], sl_step[TSR_MAX_NDIM];
    /* MAP_BLOCKS (array/map_blocks.c): the plugin kernel "LIBRARY:SYMBOL" (owned), the numbers
     * passed to each call (owned), and whether output block i takes each operand's block i as it
     * is (an explicit result shape) rather than operands aligned to the result's grid. */
    char *kernel;
    double *scalars;
    int nscalars;
    int blockwise;

    /* Lowering scratch (lower.c): valid while lower_epoch == the current lowering's epoch. */
    uint64_t lower_epoch;
    uint32_t *lower_tasks; /* per chunk: task id in the graph being built (owned) */

    tsr__computed computed; /* computed.task == NULL until computed */
};

/* ---- client.c ---- */

/* Records a failure message on the client (printf-style) and returns code, so call sites can
 * `return tsr__fail(c, TSR_ESHAPE, "...")`. */
int tsr__fail(tsr_client *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A fresh sequence number for generated array names. */
uint64_t tsr__client_next_seq(tsr_client *c);
/* A fresh lowering epoch. */
uint64_t tsr__client_next_epoch(tsr_client *c);

/* ---- array.c ---- */

/* Allocates an array with refs = 1 (the user's handle), a generated name "<opname>-<seq>", and
 * the given shape; chunks are filled by tsr__array_set_chunks. NULL on ENOMEM. */
tsr_array *tsr__array_new(tsr_client *c, const char *opname, tsr_dtype dtype, int ndim,
                          const int64_t *shape);
/* A source array named after opname (static) with a checked shape and the given grid (NULL: the
 * default chunks); the caller sets its aop and parameters. 0, or a negative code with the
 * message recorded. */
int tsr__array_source(tsr_client *c, const char *opname, int ndim, const int64_t *shape,
                      const int64_t *chunks, tsr_dtype dtype, tsr_array **out);
/* Sets a regular chunk grid from one size per axis (each > 0; the last chunk may be smaller). */
int tsr__array_set_chunks(tsr_array *a, const int64_t *chunks);
/* Sets an explicit grid: sizes[ax] has n[ax] entries summing to shape[ax] (copied). */
int tsr__array_set_chunk_sizes(tsr_array *a, int64_t *const *sizes, const int64_t *n);
/* Total chunks (product over axes; 1 for 0-d). */
int64_t tsr__array_nchunks(const tsr_array *a);
/* The chunk of an axis with n chunks and cumulative offsets o[0..n] that holds position pos, by
 * binary search; clamped to [0, n - 1], so the end of an axis maps to its last chunk. */
int64_t tsr__chunk_at(const int64_t *o, int64_t n, int64_t pos);
/* Global offset of chunk (row-major index ci) along each axis, and its shape. */
void tsr__array_chunk_box(const tsr_array *a, int64_t ci, int64_t *offset, int64_t *shape);
/* Adds operand arg (taking a reference): 0, or -ENOMEM (message recorded) with nothing added.
 * Until the array is named, messages call it after its operands ("add of x and y"). */
int tsr__array_add_arg(tsr_array *a, tsr_array *arg);
/* Gives a successfully built array its generated name "<opname>-<seq>": returns a, or NULL
 * (the array discarded, -ENOMEM recorded) when out of memory. */
tsr_array *tsr__array_named(tsr_array *a);
/* An elementwise array over nops operands broadcast together (NumPy's rules; TSR_ESHAPE naming
 * the operands otherwise), of dtype `dtype`, with aop and fn set: operands whose chunks differ are
 * wrapped in hidden rechunks to the union of their boundaries, so that each operand's chunk index
 * is the output's (or 0 on a broadcast axis). opname names the result ("add", "where"). */
int tsr__array_broadcast(tsr_client *c, const char *opname, tsr_aop aop, int fn,
                         tsr_array *const *ops, int nops, tsr_dtype dtype, tsr_array **out);
/* A hidden rechunk of x to the explicit grid sizes/n[ndim]; *out receives its one reference (it
 * is no user's handle). */
int tsr__array_hidden_rechunk(tsr_array *x, int64_t *const *sizes, const int64_t *n,
                              tsr_array **out);
/* Frees an array whose construction failed (it holds only its operand references); returns
 * rc, so that constructors can `return tsr__array_discard(a, rc)`. */
int tsr__array_discard(tsr_array *a, int rc);
/* Drops one reference (structural). */
void tsr__array_unref(tsr_array *a);
/* Releases what a computed array holds on the cluster. */
void tsr__array_release_computed(tsr_array *a);
/* tsr_client_free: releases what every live array of c holds on the cluster, frees their
 * client-side copies and detaches them (client NULL), so that a later tsr_array_free of a handle
 * only frees its memory. */
void tsr__client_detach_arrays(tsr_client *c);

/* make_source and align of array.c, for the constructors in other files: a source array of the
 * given shape, chunks (NULL: the default) and dtype; *x wrapped in a hidden rechunk to the grid
 * sizes/n unless it has it (*owned then holds the new array's reference, else NULL). */
int tsr__array_source(tsr_client *c, const char *opname, int ndim, const int64_t *shape,
                      const int64_t *chunks, tsr_dtype dtype, tsr_array **out);
int tsr__array_align(tsr_array **x, int64_t *const *sizes, const int64_t *n, tsr_array **owned);

/* ---- linalg.c ---- */

/* tsr_matmul for the operands the MATMUL family does not take (either operand N-d, or a 1-d
 * first operand): a CONTRACT array, with numpy's batch broadcasting. */
int tsr__matmul_nd(tsr_array *a, tsr_array *b, tsr_array **out);
/* ---- scope.c ---- */

/* A user handle just made (named) on a client with an open scope joins the innermost one. */
void tsr__scope_add(tsr_array *a);
/* The array's handle is freed or the array goes: it leaves its scope. */
void tsr__scope_forget(tsr_array *a);
/* tsr_client_free: the open scopes are dropped (the handles stay the caller's). */
void tsr__scope_drop_all(tsr_client *c);
/* The union of two chunkings' boundaries along one axis: at most na + nb sizes into out; returns
 * their count. */
int64_t tsr__union_chunks(const int64_t *a, int64_t na, const int64_t *b, int64_t nb, int64_t *out);

/* ---- lower.c ---- */

/* Lowers arrays to one chunk-task graph g (initialised by the caller); shared sub-graphs are
 * lowered once. fuse: elementwise chains run as one FUSED task per chunk (fuse.c,
 * docs/arrays.md). On success each arrays[k]->lower_tasks lists the task of each of its chunks,
 * and those tasks are added as the graph's outputs (in arrays order, row-major). */
int tsr__lower(tsr_client *c, tsr_array *const *arrays, size_t n, tsr_graph *g, int fuse);

/* ---- npy.c ---- */

typedef struct tsr__npy_header {
    tsr_dtype dtype;
    int ndim;
    int64_t shape[TSR_MAX_NDIM];
    int64_t data_offset; /* bytes from file start to the data */
} tsr__npy_header;

/* Reads and validates a .npy header (<f8 or <f4, C order, version 1.0/2.0/3.0). Errors:
 * -errno for I/O, TSR_ENPY with a message in err for anything malformed or unsupported; checks
 * that the file is long enough for the data. */
int tsr__npy_read_header(const char *path, tsr__npy_header *h, char *err, size_t errlen);
/* Formats a version-1.0 header (padded so the data starts at a multiple of 64) into buf;
 * returns its length, or a negative code if buf is too small. */
int tsr__npy_format_header(tsr_dtype dtype, int ndim, const int64_t *shape, char *buf, size_t size);

#endif
