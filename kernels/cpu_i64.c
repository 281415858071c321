/* The int64 instance of the CPU kernels (see cpu_tmpl.c): arithmetic wraps around through
 * uint64_t, reductions accumulate in int64, matmul is blocked loops (no BLAS for integers), and
 * the float-only families (random) have no kernel here. */
#define T int64_t
#define T_DTYPE TSR_INT64
#define T_INT 1
#define CPU_TABLE tsr__cpu_kernels_i64
#include "kernels/cpu_tmpl.c"
