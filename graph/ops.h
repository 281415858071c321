/* The operations table: every operation Tessera knows, listed once as X-macro rows (libuv's
 * UV_ERRNO_MAP style). Enums, name tables, descriptor checks, aliasing rules, the cost model,
 * the kernel tables and the program-file parser are all expanded from these rows; nothing else
 * may list operations. Pure declarations: no I/O, no state. docs/ARCHITECTURE.md ("Operations
 * table") says which files a new operation touches.
 *
 * Two levels: elementwise and reduction sub-operations (the `fn` of a descriptor, and the public
 * tsr_unary_op / tsr_binary_op / tsr_reduce_op), and kernel families (tsr_kop, the `kop` of a
 * descriptor). The array-level operations that lowering turns into families are in
 * array/array.h (TSR__AOP_MAP). Row order is wire format: a row's position is its number in
 * kernel descriptors and in the public enums, so new rows go at the end. */
#ifndef TSR_GRAPH_OPS_H
#define TSR_GRAPH_OPS_H

#include <math.h>
#include <stdint.h>

/* The public header only (dtypes, sub-operation enums): the CUDA kernels (kernels/cuda/, C++)
 * expand these maps too, and common.h's C11 atomics do not compile as C++. */
#include "tessera/tessera.h"

/* ---- dtypes ----------------------------------------------------------------------------------
 * A kernel family's dtype column is a bit set over tsr_dtype: the output dtypes it has a kernel
 * for: float64, float32, int64 and bool (TSR__DT_NUM: the first three; TSR__DT_ALL: all four). */
#define TSR__DT(dtype) (1u << (unsigned)(dtype))
#define TSR__DT_FLOAT (TSR__DT(TSR_FLOAT64) | TSR__DT(TSR_FLOAT32))
#define TSR__DT_INT TSR__DT(TSR_INT64)
#define TSR__DT_BOOL TSR__DT(TSR_BOOL)
#define TSR__DT_NUM (TSR__DT_FLOAT | TSR__DT_INT)
#define TSR__DT_ALL (TSR__DT_NUM | TSR__DT_BOOL)

/* ---- elementwise sub-operations ---------------------------------------------------------------
 * XX(ENUM, name, dtypes, expr): dtypes is the bit set of dtypes the operation is defined on (a
 * descriptor asking for another is refused before its kernel runs; issue 10's integer and bool
 * ops declare theirs here). expr is the value of one output element, a pure expression of the
 * element(s) x (and y) of type T, where M(fn) names the libm function for T (fabs, or fabsf for
 * float32) and the E_* helpers are what differs between float, int64 and bool element types (each
 * kernel instance defines them: kernels/cpu_tmpl.c; int64 wraps through uint64_t, bool add is or,
 * bool mul is and). The dtypes column is the output dtypes the sub-operation has a kernel for. The
 * CPU kernels expand these expressions inside their loops (kernels/cpu_tmpl.c); they are also the
 * hook for fused elementwise chains (issues 6 and 10): a fused loop expands a chain's expressions
 * one after the other on a register, with no per-element call. ENUM is the public enum's suffix
 * (TSR_NEG); name is what program files and tsr_unary_name() say. Commas inside expr must sit
 * inside parentheses. */
#define TSR__UNARY_MAP(XX)                                                                         \
    XX(NEG, neg, TSR__DT_NUM, E_NEG(x))                                                            \
    XX(ABS, abs, TSR__DT_ALL, E_ABS(x))                                                            \
    XX(EXP, exp, TSR__DT_FLOAT, M(exp)(x))                                                         \
    XX(LOG, log, TSR__DT_FLOAT, M(log)(x))                                                         \
    XX(SQRT, sqrt, TSR__DT_FLOAT, M(sqrt)(x))                                                      \
    XX(SIN, sin, TSR__DT_FLOAT, M(sin)(x))                                                         \
    XX(COS, cos, TSR__DT_FLOAT, M(cos)(x))                                                         \
    XX(TANH, tanh, TSR__DT_FLOAT, M(tanh)(x))                                                      \
    XX(FLOOR, floor, TSR__DT_NUM, E_RND(floor, x))                                                 \
    XX(CEIL, ceil, TSR__DT_NUM, E_RND(ceil, x))                                                    \
    XX(ROUND, round, TSR__DT_NUM, E_RND(nearbyint, x))                                             \
    XX(TAN, tan, TSR__DT_FLOAT, M(tan)(x))                                                         \
    XX(ARCSIN, arcsin, TSR__DT_FLOAT, M(asin)(x))                                                  \
    XX(ARCCOS, arccos, TSR__DT_FLOAT, M(acos)(x))                                                  \
    XX(ARCTAN, arctan, TSR__DT_FLOAT, M(atan)(x))                                                  \
    XX(LOG1P, log1p, TSR__DT_FLOAT, M(log1p)(x))                                                   \
    XX(EXPM1, expm1, TSR__DT_FLOAT, M(expm1)(x))                                                   \
    XX(SIGN, sign, TSR__DT_NUM, E_SIGN(x))                                                         \
    XX(SQUARE, square, TSR__DT_NUM, E_MUL(x, x))                                                   \
    XX(LOGICAL_NOT, logical_not, 0, E_NOT(x))                                                      \
    XX(ISNAN, isnan, 0, E_ISNAN(x))                                                                \
    XX(ISFINITE, isfinite, 0, E_ISFINITE(x))

/* maximum/minimum return a NaN operand when there is one, as NumPy does. The comparisons and
 * logical operations (dtype column 0: no BINARY kernel) give bool and run in the COMPARE family,
 * which computes in the operands' promoted dtype. A float pow with an exponent of exactly 2 is
 * x * x (E_POW, graph/ops_float.h), as NumPy's power of an array is (its square fast path), and
 * several times cheaper than libm's pow, which dominated an elementwise chain (issue 13). */
#define TSR__BINARY_MAP(XX)                                                                        \
    XX(ADD, add, TSR__DT_ALL, E_ADD(x, y))                                                         \
    XX(SUB, sub, TSR__DT_NUM, E_SUB(x, y))                                                         \
    XX(MUL, mul, TSR__DT_ALL, E_MUL(x, y))                                                         \
    XX(DIV, div, TSR__DT_FLOAT, x / y)                                                             \
    XX(POW, pow, TSR__DT_NUM, E_POW(x, y))                                                         \
    XX(MAXIMUM, maximum, TSR__DT_ALL, (x >= y || E_ISNAN(x)) ? x : y)                              \
    XX(MINIMUM, minimum, TSR__DT_ALL, (x <= y || E_ISNAN(x)) ? x : y)                              \
    XX(LESS, less, 0, x < y)                                                                       \
    XX(LESS_EQUAL, less_equal, 0, x <= y)                                                          \
    XX(GREATER, greater, 0, x > y)                                                                 \
    XX(GREATER_EQUAL, greater_equal, 0, x >= y)                                                    \
    XX(EQUAL, equal, 0, x == y)                                                                    \
    XX(NOT_EQUAL, not_equal, 0, x != y)                                                            \
    XX(LOGICAL_AND, logical_and, 0, E_NOT(E_NOT(x)) & E_NOT(E_NOT(y)))                             \
    XX(LOGICAL_OR, logical_or, 0, E_NOT(E_NOT(x)) | E_NOT(E_NOT(y)))

/* ---- reductions -------------------------------------------------------------------------------
 * XX(ENUM, name, init, fold, identity, ufunc, scale)
 *   init      the accumulator's start (a double); fold(s, x) folds one element x into the double
 *             accumulator s. Once an accumulator is NaN, the max/min folds keep it NaN.
 *   identity  1 when reducing nothing has a value (init); 0 when it is an error, as in NumPy.
 *   ufunc     NumPy's ufunc the reduction folds with, for NumPy's messages.
 *   scale     1 when the result is divided by the number of elements folded (the last COMBINE
 *             applies it; the partials fold like SUM). */
#define TSR__FOLD_SUM(s, x) ((s) + (double)(x))
#define TSR__FOLD_MAX(s, x) (((double)(x) > (s) || (x) != (x)) ? (double)(x) : (s))
#define TSR__FOLD_MIN(s, x) (((double)(x) < (s) || (x) != (x)) ? (double)(x) : (s))

#define TSR__REDUCE_MAP(XX)                                                                        \
    XX(SUM, sum, 0.0, TSR__FOLD_SUM, 1, add, 0)                                                    \
    XX(MEAN, mean, 0.0, TSR__FOLD_SUM, 1, add, 1)                                                  \
    XX(MAX, max, -INFINITY, TSR__FOLD_MAX, 0, maximum, 0)                                          \
    XX(MIN, min, INFINITY, TSR__FOLD_MIN, 0, minimum, 0)

/* The second reductions (issue 13), kernels in kernels/reduce2.c: XX(ENUM, name, fields, identity)
 *   fields    values per output element in a partial (kernels/kernels.h: prod/any/all keep the
 *             running value, var/std (count, mean, M2), argmax/argmin (value, index)).
 *   identity  1 when reducing nothing has a value (prod 1, any false, all true, var/std NaN);
 *             0 when it is an error, as in NumPy (argmax of an empty sequence).
 * Their public values (tsr_reduce_op) follow TSR__REDUCE_MAP's: TSR_PROD is TSR__REDUCE_COUNT.
 * The cumulative scans, XX(ENUM, name): kernels/reduce2.c's k_scan. */
#define TSR__REDUCE2_MAP(XX)                                                                       \
    XX(PROD, prod, 1, 1)                                                                           \
    XX(ANY, any, 1, 1)                                                                             \
    XX(ALL, all, 1, 1)                                                                             \
    XX(VAR, var, 3, 1)                                                                             \
    XX(STD, std, 3, 1)                                                                             \
    XX(ARGMAX, argmax, 2, 0)                                                                       \
    XX(ARGMIN, argmin, 2, 0)

#define TSR__SCAN_MAP(XX)                                                                          \
    XX(CUMSUM, cumsum)                                                                             \
    XX(CUMPROD, cumprod)

#define TSR__COUNT_ROW(E, ...) +1
enum {
    TSR__UNARY_COUNT = 0 TSR__UNARY_MAP(TSR__COUNT_ROW),
    TSR__BINARY_COUNT = 0 TSR__BINARY_MAP(TSR__COUNT_ROW),
    TSR__REDUCE_COUNT = 0 TSR__REDUCE_MAP(TSR__COUNT_ROW),
    TSR__REDUCE2_COUNT = 0 TSR__REDUCE2_MAP(TSR__COUNT_ROW),
    TSR__SCAN_COUNT = 0 TSR__SCAN_MAP(TSR__COUNT_ROW),
};
/* Sub-operation numbers of the REDUCE2/COMBINE2 families (TSR__R2_PROD == 0) and SCAN's. */
enum {
#define TSR__R2_ENUM_ROW(E, ...) TSR__R2_##E,
    TSR__REDUCE2_MAP(TSR__R2_ENUM_ROW)
#undef TSR__R2_ENUM_ROW
};

/* ---- kernel families --------------------------------------------------------------------------
 * XX(ENUM, name, min_in, max_in, nfn, dtypes, alias, flops, traits)
 *   ENUM, name  TSR_KOP_ENUM; "name" for messages and traces. The CPU kernel is k_<name> in
 *               kernels/cpu_tmpl.c; the descriptor's parameter layout is documented in
 *               kernels/kernels.h; family-specific checks are in kernels/table.c.
 *   min_in, max_in  how many inputs (TSR__ANY: no upper bound); checked before any kernel runs.
 *   nfn         how many sub-operations `fn` may name (0: fn is unused and any byte passes).
 *   dtypes      output dtypes with a kernel (TSR__DT bit set).
 *   alias       which input the output may reuse in place (tsr__kernel_may_alias), given that
 *               input has the output's shape and dtype and the caller owns it: NONE; ANY input
 *               (each output element reads only the same element of it before writing, or the
 *               kernel works block by block); LAST (only the last input, when it is the family's
 *               running sum: matmul's Cprev, given when the input count is odd); BYTES (input 0
 *               whatever its shape, when the descriptor copies its bytes unchanged: a STRIDED
 *               reshape of a chunk, whose output is the input's buffer as it is); SIZE (input 0,
 *               when it has the output's dtype and byte count: the kernel copies it aside and
 *               writes the output over it, as PACK lays a tile out in its own buffer).
 *   flops       cost family (tsr__kop_flops): OUT (one per output element: elementwise, and
 *               sources and copies, which are memory-bound but must not look free), MATMUL
 *               (2mnk), IN0 (one per element of input 0: a reduction's partial), INPUTS (one per
 *               output element per input: a combine folds and scales). Bytes are not per family:
 *               the scheduler's model (scheduler/cost.c) counts output bytes times (1 + inputs).
 *   traits      a bit set: RECOMPUTE (a cheap source, made wherever it is needed instead of being
 *               run once and moved), LONG (may run long whatever its size: BLAS, file reads),
 *               HOST (no device kernel: a GPU worker runs it on its host thread, so the cost
 *               model's GPU prior is the CPU one; LOAD is the older such family, named there).
 *               The scheduler (state.c: inline sources) and the worker (task.c: what may be
 *               recomputed; exec.c: what may run long) ask tsr__kop_has(), never a family. */
#define TSR__ANY 255
/* LOAD's sub-operations: what the file is (kernels/kernels.h gives each one's parameters). */
enum { TSR__LOAD_NPY = 0, TSR__LOAD_ZARR = 1, TSR__LOAD_COUNT };
/* The most k-steps one MATMUL task may take (kernels/kernels.h): 2g + 1 inputs at most. */
#define TSR__MATMUL_MAX_GROUP 32
/* FUSED (issue 13): the most steps one program may have (kernels/kernels.h gives the layout), and
 * its sub-operations: fn 0 writes the last step's values, fn 1 + r folds them into the partials
 * of reduction r (a REDUCE prologue). */
#define TSR__FUSED_MAX_STEPS 64
#define TSR__FUSED_NFN (1 + TSR__REDUCE_COUNT)
/* FUSED step kinds (kernels/kernels.h). Wire format: new kinds go at the end. */
enum {
    TSR__FS_UNARY = 0,
    TSR__FS_BINARY = 1,
    TSR__FS_SCALAR_R = 2,
    TSR__FS_SCALAR_L = 3,
    TSR__FS_ASTYPE = 4,
    TSR__FS_RANDOM = 5,
    TSR__FS_FILL = 6,
    TSR__FS_KINDS
};
/* Integers per FUSED step, and where the steps start in i[] for a domain of d axes. */
#define TSR__FS_STEP_INTS 5
#define TSR__FS_STEPS_AT(d) (2 + (d))
#define TSR__KOP_RECOMPUTE 1u
#define TSR__KOP_LONG 2u
#define TSR__KOP_HOST 4u

#define TSR__KOP_MAP(XX)                                                                           \
    XX(FILL, fill, 0, 0, 0, TSR__DT_ALL, NONE, OUT, TSR__KOP_RECOMPUTE)                            \
    XX(RANDOM, random, 0, 0, 0, TSR__DT_FLOAT, NONE, OUT, TSR__KOP_RECOMPUTE)                      \
    XX(ARANGE, arange, 0, 0, 0, TSR__DT_NUM, NONE, OUT, TSR__KOP_RECOMPUTE)                        \
    XX(LOAD, load, 0, 0, TSR__LOAD_COUNT, TSR__DT_ALL, NONE, OUT, TSR__KOP_LONG)                   \
    XX(UNARY, unary, 1, 1, TSR__UNARY_COUNT, TSR__DT_ALL, ANY, OUT, 0)                             \
    XX(BINARY, binary, 2, 2, TSR__BINARY_COUNT, TSR__DT_ALL, ANY, OUT, 0)                          \
    XX(BINARY_SCALAR, binary_scalar, 1, 1, TSR__BINARY_COUNT, TSR__DT_ALL, ANY, OUT, 0)            \
    XX(MATMUL, matmul, 2, TSR__ANY, 0, TSR__DT_ALL, LAST, MATMUL, TSR__KOP_LONG)                   \
    XX(TRANSPOSE, transpose, 1, 1, 0, TSR__DT_ALL, NONE, OUT, 0)                                   \
    XX(REDUCE, reduce, 1, 1, TSR__REDUCE_COUNT, TSR__DT_ALL, NONE, IN0, 0)                         \
    XX(COMBINE, combine, 1, TSR__ANY, TSR__REDUCE_COUNT, TSR__DT_ALL, ANY, INPUTS, 0)              \
    XX(ASSEMBLE, assemble, 1, TSR__ANY, 0, TSR__DT_ALL, NONE, OUT, 0)                              \
    XX(ASTYPE, astype, 1, 1, 0, TSR__DT_ALL, ANY, OUT, 0)                                          \
    XX(COMPARE, compare, 1, 2, TSR__BINARY_COUNT, TSR__DT_BOOL, NONE, OUT, 0)                      \
    XX(PREDICATE, predicate, 1, 1, TSR__UNARY_COUNT, TSR__DT_BOOL, NONE, OUT, 0)                   \
    XX(WHERE, where, 1, 3, 0, TSR__DT_ALL, NONE, OUT, 0)                                           \
    XX(NORMAL, normal, 0, 0, 0, TSR__DT_FLOAT, NONE, OUT, TSR__KOP_RECOMPUTE | TSR__KOP_HOST)      \
    XX(EYE, eye, 0, 0, 0, TSR__DT_FLOAT, NONE, OUT, TSR__KOP_RECOMPUTE | TSR__KOP_HOST)            \
    XX(CONTRACT, contract, 2, TSR__ANY, 0, TSR__DT_FLOAT | TSR__DT(TSR_INT64) | TSR__DT(TSR_BOOL), \
       LAST, MATMUL, TSR__KOP_LONG | TSR__KOP_HOST)                                                \
    XX(DATA, data, 0, 0, 0, TSR__DT_ALL, NONE, OUT, 0)                                             \
    XX(HELD, held, 0, 1, 0, TSR__DT_ALL, ANY, OUT, 0)                                              \
    XX(REDUCE2, reduce2, 1, 2, TSR__REDUCE2_COUNT, TSR__DT_ALL, NONE, IN0, 0)                      \
    XX(COMBINE2, combine2, 1, TSR__ANY, TSR__REDUCE2_COUNT, TSR__DT_ALL, NONE, INPUTS, 0)          \
    XX(SCAN, scan, 1, 2, TSR__SCAN_COUNT, TSR__DT_ALL, NONE, OUT, 0)                               \
    XX(STRIDED, strided, 1, 1, 0, TSR__DT_ALL, BYTES, OUT, TSR__KOP_HOST)                          \
    XX(TAKE, take, 2, TSR__ANY, 0, TSR__DT_ALL, NONE, OUT, TSR__KOP_HOST)                          \
    XX(MAP_BLOCKS, map_blocks, 1, TSR__ANY, 0, TSR__DT_ALL, NONE, OUT,                             \
       TSR__KOP_LONG | TSR__KOP_HOST)                                                              \
    XX(FUSED, fused, 0, TSR__ANY, TSR__FUSED_NFN, TSR__DT_FLOAT, NONE, IN0, 0)                     \
    XX(PACK, pack, 1, 1, 0, TSR__DT_FLOAT, SIZE, OUT, TSR__KOP_HOST)                               \
    XX(MATMUL_PACKED, matmul_packed, 2, TSR__ANY, 0, TSR__DT_FLOAT, LAST, MATMUL, TSR__KOP_LONG)   \
    XX(PACK_SOURCE, pack_source, 0, 0, 0, TSR__DT_FLOAT, NONE, OUT,                                \
       TSR__KOP_RECOMPUTE | TSR__KOP_HOST)

/* Kernel families. The meaning of each descriptor's i[] / f[] / s is documented in
 * kernels/kernels.h next to the family; lowering (array/) and kernels (kernels/) share it. */
typedef enum tsr_kop {
#define TSR__KOP_ENUM_ROW(E, ...) TSR_KOP_##E,
    TSR__KOP_MAP(TSR__KOP_ENUM_ROW)
#undef TSR__KOP_ENUM_ROW
        TSR_KOP_COUNT
} tsr_kop;

typedef enum tsr__alias {
    TSR__ALIAS_NONE,
    TSR__ALIAS_ANY,
    TSR__ALIAS_LAST,
    TSR__ALIAS_BYTES,
    TSR__ALIAS_SIZE
} tsr__alias;
typedef enum tsr__flops {
    TSR__FLOPS_OUT,
    TSR__FLOPS_MATMUL,
    TSR__FLOPS_IN0,
    TSR__FLOPS_INPUTS
} tsr__flops;

/* One family's row, as data (ops.c expands the table into an array of these). */
typedef struct tsr__kop_info {
    const char *name;
    uint8_t min_in, max_in; /* max_in TSR__ANY: unbounded */
    uint8_t nfn;            /* 0: fn unused */
    uint32_t dtypes;        /* TSR__DT bit set */
    tsr__alias alias;
    tsr__flops flops;
    unsigned traits; /* TSR__KOP_RECOMPUTE, TSR__KOP_LONG */
} tsr__kop_info;

/* The row of family kop, or NULL when kop is out of range. */
const tsr__kop_info *tsr__kop_info_of(int kop);
const char *tsr__kop_name(int kop); /* "fill", "random", ...; "?" when out of range */
/* Whether family kop has every trait in `traits` (0 when kop is out of range). */
int tsr__kop_has(int kop, unsigned traits);

/* The dtypes (TSR__DT bit set) a descriptor of family kop with sub-operation fn may produce: the
 * family's column, narrowed by the sub-operation's own where the family has sub-operations. 0
 * when kop or fn is out of range. */
uint32_t tsr__kop_fn_dtypes(int kop, int fn);

/* Names of the sub-operations (NULL when out of range) and the reverse lookups (-1 when
 * unknown). */
const char *tsr__unary_name(int fn);
const char *tsr__binary_name(int fn);
const char *tsr__reduce_name(int fn);
/* The second reductions' names (fn: TSR__R2_PROD ...) and columns, and the scans' names. */
const char *tsr__reduce2_name(int fn);
int tsr__reduce2_fields(int fn);
int tsr__reduce2_has_identity(int fn);
const char *tsr__scan_name(int fn);
/* The dtype of a REDUCE2 partial of sub-operation fn over an input of dtype xdtype
 * (kernels/kernels.h), and of a scan's result (floats keep theirs; int64 and bool give int64). */
int tsr__reduce2_partial_dtype(int fn, int xdtype);
int tsr__scan_dtype(int xdtype);
/* A reduction's columns (0 / NULL when fn is out of range). */
int tsr__reduce_has_identity(int fn);
const char *tsr__reduce_ufunc(int fn);
int tsr__reduce_scales(int fn);

/* The cost model: floating-point operations of one task of family kop making an output chunk of
 * shape[ndim] from nin inputs, where in0 (in0_ndim axes; NULL when unknown) is the shape of the
 * first input. The one place flops are computed: lowering calls it for the estimate the
 * scheduler receives (and its per-op GFLOP/s reports); nothing else computes flops. */
double tsr__kop_flops(int kop, int ndim, const int64_t *shape, int nin, int in0_ndim,
                      const int64_t *in0);

#endif
