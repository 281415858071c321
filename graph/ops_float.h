/* The E_* helpers of the operations table's expressions (graph/ops.h) for floating element types:
 * included where a float kernel expands the table (kernels/cpu_tmpl.c's float instances, the CUDA
 * kernels, tests). The expanding code defines T (the element type) and M(fn) (the libm function
 * for T) first. The int64 and bool definitions are in kernels/cpu_tmpl.c. */
#ifndef TSR_GRAPH_OPS_FLOAT_H
#define TSR_GRAPH_OPS_FLOAT_H

#define E_NEG(x) (-(x))
#define E_ADD(x, y) ((x) + (y))
#define E_SUB(x, y) ((x) - (y))
#define E_MUL(x, y) ((x) * (y))
#define E_ABS(x) M(fabs)(x)
#define E_RND(fn, x) M(fn)(x)
/* x ** 2 is x * x, as NumPy's power of an array (graph/ops.h, issue 13). */
#define E_POW(x, y) ((y) == 2 ? (x) * (x) : M(pow)(x, y))
#define E_ISNAN(x) ((x) != (x))
/* numpy.sign: NaN stays NaN, -0 gives 0. */
#define E_SIGN(x) ((x) > 0 ? 1 : (x) < 0 ? -1 : (x) == 0 ? 0 : (x))
#define E_NOT(x) ((x) == 0)
#define E_ISFINITE(x) (!E_ISNAN((x) - (x)))

#endif
