/* The bool instance of the CPU kernels (see cpu_tmpl.c): one byte per element, 0 or 1; add is
 * logical or, mul logical and; no random, arange or matmul. */
#define T uint8_t
#define T_DTYPE TSR_BOOL
#define T_BOOL 1
#define CPU_TABLE tsr__cpu_kernels_bool
#include "kernels/cpu_tmpl.c"
