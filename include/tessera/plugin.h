/* Tessera user kernels (plugins): what a `map_blocks` kernel sees and returns. Self-contained: a
 * plugin includes this header alone (it needs no library symbol) and is built as a shared
 * library, e.g.
 *
 *     cc -shared -fPIC -o libNAME.so NAME.c $(pkg-config --cflags tessera)
 *
 * docs/plugins.md gives the rules: where workers look for plugins (only in the directories they
 * were started with, `--plugin-dir`), how a program names one ("LIBRARY:SYMBOL"), and what a
 * kernel must and must not do.
 *
 * A plugin library declares the ABI it was built for with TSR_PLUGIN_DECLARE() (once, at file
 * scope, in one of its sources). A worker refuses a library whose tsr_plugin_abi is missing or
 * differs from its own TSR_PLUGIN_ABI, before calling anything in it. */
#ifndef TESSERA_PLUGIN_H
#define TESSERA_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The plugin ABI this header describes. It changes whenever a struct below or the kernel
 * signature changes; workers load only libraries built for their own. */
#define TSR_PLUGIN_ABI 1

/* The most axes a block may have (TSR_MAX_NDIM of tessera.h). */
#define TSR_PLUGIN_MAX_NDIM 8

/* Element types (the values of tsr_dtype in tessera.h): float64 is C's double, float32 float,
 * int64 int64_t, bool one byte holding 0 or 1. */
enum { TSR_PLUGIN_FLOAT64 = 0, TSR_PLUGIN_FLOAT32 = 1, TSR_PLUGIN_INT64 = 2, TSR_PLUGIN_BOOL = 3 };

/* One block: an input block (read only) or the output block (write every element). Blocks are
 * dense and in C order today; strides are given, in elements, so that a kernel that walks by
 * them keeps working if a later ABI passes views. shape[a] and strides[a] are valid for a <
 * ndim; a 0-d block has one element. */
typedef struct tsr_plugin_block {
    void *data;
    int32_t dtype; /* TSR_PLUGIN_FLOAT64, ... */
    int32_t ndim;
    int64_t shape[TSR_PLUGIN_MAX_NDIM];
    int64_t strides[TSR_PLUGIN_MAX_NDIM]; /* in elements, not bytes */
} tsr_plugin_block;

/* Where the output block sits, and the call's other arguments. All arrays have out->ndim
 * entries. */
typedef struct tsr_plugin_info {
    int32_t abi;                /* TSR_PLUGIN_ABI of the worker calling */
    int32_t ndim;               /* the output's */
    const int64_t *block_index; /* the output block's index in the result's chunk grid */
    const int64_t *offset;      /* its first element's index in the whole result */
    const int64_t *gshape;      /* the whole result's shape */
    const double *scalars;      /* the numbers among the program's "args", in their order */
    int32_t nscalars;
    const char *kernel; /* "LIBRARY:SYMBOL", as the program named it */
} tsr_plugin_info;

/* A map_blocks kernel: SYMBOL in the library. in[0..nin) are the array arguments' blocks, in
 * the order of "args" (numbers are in info->scalars, not here); out is the output block,
 * allocated by the worker and holding out->ndim / out->shape / out->dtype of the task; info says
 * where it is. Return 0 on success. Any other value fails the task and the computation (the
 * client exits 1): write a NUL-terminated reason into err (errlen bytes, at least 128), which
 * the client prints after the array's name and the chunk's index.
 *
 * A kernel must be a pure function of its arguments: it may be called on any worker, on any
 * executor thread, concurrently with itself, more than once for one block (a lost chunk is made
 * again), and must give the same bytes each time (Tessera's determinism rule, SPEC §2). It must
 * not keep pointers to the blocks after it returns, write to inputs, or call back into Tessera. */
typedef int (*tsr_plugin_fn)(const tsr_plugin_block *in, int nin, tsr_plugin_block *out,
                             const tsr_plugin_info *info, char *err, size_t errlen);

/* The symbol a worker checks before using a library. */
#define TSR_PLUGIN_ABI_SYMBOL "tsr_plugin_abi"

#if defined(__GNUC__) || defined(__clang__)
#define TSR_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define TSR_PLUGIN_EXPORT
#endif

/* Declares the library's ABI: write TSR_PLUGIN_DECLARE(); once at file scope. Kernels are
 * exported as ordinary functions: `TSR_PLUGIN_EXPORT int my_kernel(const tsr_plugin_block *in,
 * ...)` (the attribute matters when the library is built with -fvisibility=hidden). */
#ifdef __cplusplus
#define TSR_PLUGIN_DECLARE()                                                                       \
    extern "C" TSR_PLUGIN_EXPORT const int32_t tsr_plugin_abi = TSR_PLUGIN_ABI
#else
#define TSR_PLUGIN_DECLARE() TSR_PLUGIN_EXPORT const int32_t tsr_plugin_abi = TSR_PLUGIN_ABI
#endif

#ifdef __cplusplus
}
#endif

#endif
