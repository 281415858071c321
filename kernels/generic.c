/* The dtype-generic CPU kernel table (kernels_priv.h): one entry per family whose kernel handles
 * every dtype its row declares by itself, looked up before the per-dtype tables of cpu_tmpl.c.
 * Such kernels live in their own files and are listed here by family. */
#include "kernels/kernels_priv.h"

const tsr_kernel_fn tsr__cpu_kernels_any[TSR_KOP_COUNT] = {
    [TSR_KOP_COMPARE] = tsr__k_compare,
    [TSR_KOP_PREDICATE] = tsr__k_predicate,
    [TSR_KOP_WHERE] = tsr__k_where,
    /* entries are [TSR_KOP_<FAMILY>] = k_<name> */
    [TSR_KOP_NORMAL] = k_normal,
    [TSR_KOP_EYE] = k_eye,
    [TSR_KOP_CONTRACT] = k_contract,
    [TSR_KOP_DATA] = tsr__k_data, /* data.c */
    [TSR_KOP_HELD] = tsr__k_held, /* data.c */
    [TSR_KOP_REDUCE2] = k_reduce2,
    [TSR_KOP_COMBINE2] = k_combine2,
    [TSR_KOP_SCAN] = k_scan,
    [TSR_KOP_STRIDED] = k_strided,
    [TSR_KOP_TAKE] = k_take,
    [TSR_KOP_MAP_BLOCKS] = tsr__k_map_blocks,
    [TSR_KOP_FUSED] = tsr__k_fused,
    [TSR_KOP_PACK] = k_pack,                   /* gemm_pack.c */
    [TSR_KOP_MATMUL_PACKED] = k_matmul_packed, /* gemm_pack.c */
    [TSR_KOP_PACK_SOURCE] = k_pack_source,     /* gemm_pack.c */
};
