/* The dtype-generic CPU kernel table (kernels_priv.h): one entry per family whose kernel handles
 * every dtype its row declares by itself, looked up before the per-dtype tables of cpu_tmpl.c.
 * Such kernels live in their own files and are listed here by family. */
#include "kernels/kernels_priv.h"

const tsr_kernel_fn tsr__cpu_kernels_any[TSR_KOP_COUNT] = {
    NULL, /* none yet: entries are [TSR_KOP_<FAMILY>] = k_<name> */
};
