/* The float32 instance of the CPU kernels (see cpu_tmpl.c). */
#define T float
#define T_DTYPE TSR_FLOAT32
#define T_FLOAT 1
#define M(fn) fn##f
#define GEMM tsr__gemm_f32
#define GEMV cblas_sgemv
#define RANDOM_VALUE tsr__random_f32
#define RANDOM_ROW_PICK tsr__random_row_f32_pick
#define CPU_TABLE tsr__cpu_kernels_f32
#include "kernels/cpu_tmpl.c"
