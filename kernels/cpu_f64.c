/* The float64 instance of the CPU kernels (see cpu_tmpl.c). */
#define T double
#define T_DTYPE TSR_FLOAT64
#define T_FLOAT 1
#define M(fn) fn
#define GEMM tsr__gemm_f64
#define GEMV cblas_dgemv
#define RANDOM_VALUE tsr__random_f64
#define RANDOM_ROW_PICK tsr__random_row_f64_pick
#define CPU_TABLE tsr__cpu_kernels_f64
#include "kernels/cpu_tmpl.c"
