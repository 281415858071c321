/* The kernel table: one entry per (kernel family, dtype, device), filled from the operations
 * table (graph/ops.h): a family's row names its kernel (k_<name>) and the dtypes it has one for.
 * Kernels are pure functions of (descriptor, input chunks) -> output chunk; they never touch
 * the network, the event loop or global state, and must be deterministic (bitwise, for a given
 * build and machine) whatever thread runs them.
 *
 * Parameter layouts (d = output ndim, all offsets/shapes are in elements; "global" means in the
 * whole array's coordinates):
 *
 *  FILL          no inputs.  f = [value]; int64 may add i = [value] (exact past 2^53)
 *  RANDOM        no inputs.  i = [seed (uint64 bits), gshape[0..d), offset[0..d)]
 *                            element with global row-major index g gets SPEC §2's formula(seed, g)
 *  ARANGE        no inputs, d = 1.  f = [start, step], i = [offset]
 *                            element j = start + (offset + j) * step, computed in double (in
 *                            int64, wrapping, for an int64 output: start and step integral)
 *  LOAD          no inputs. fn = TSR__LOAD_NPY: s = absolute path of a .npy file,
 *                i = [data_offset, file_dtype, gshape[0..d), offset[0..d)]  (data_offset: bytes
 *                from file start to the data; file is C order).
 *                fn = TSR__LOAD_ZARR: s = absolute path of a Zarr v2 store, i = [file_dtype,
 *                codec (TSR__ZC_*), separator ('.' or '/'), gshape[0..d), zchunks[0..d),
 *                offset[0..d)], f = [fill_value]: reads every chunk file the output box meets
 *                (a missing one is fill_value) and copies its part.
 *  UNARY         1 input of the output's shape, any dtype (converted to the output's first:
 *                sqrt of int64 runs in float64). fn = tsr_unary_op
 *  BINARY        2 inputs; fn = tsr_binary_op. Each input has ndim <= d; its shape, aligned to the
 *                right, equals the output's on every axis or is 1 there (broadcast). Inputs may
 *                have any dtype; computation is in the output dtype (int64 wraps; a POW with
 *                a negative int64 exponent fails, as NumPy's does).
 *  BINARY_SCALAR 1 input of the output's shape. fn = tsr_binary_op, f = [scalar],
 *                i = [scalar_first]  (0: x OP s, 1: s OP x), or [scalar_first, s exactly as
 *                int64] (used by an int64 output instead of f[0]). The input and the scalar are
 *                converted to the output dtype (lowering picks it by NEP 50's weak scalars).
 *  MATMUL        g k-steps, i = [g] (no i: g = 1), 1 <= g <= TSR__MATMUL_MAX_GROUP: 2g inputs
 *                A_0, B_0, ..., A_(g-1), B_(g-1), with A_s (m x k_s) and B_s (k_s x n, or k_s
 *                when d = 1), and optionally Cprev (the output's shape) last:
 *                out = (((Cprev + A_0 @ B_0) + A_1 @ B_1) ...), one BLAS call per step with
 *                beta = 1 after the first, so a group gives bit for bit what a chain of
 *                one-step tasks gives (lowering groups the k-steps of small chunks:
 *                docs/arrays.md). Inputs of any dtype; computed in the output dtype (int64:
 *                blocked loops, wrapping, no BLAS; bool: an or of ands). If out->data ==
 *                Cprev's data the accumulation is in place (the worker passes Cprev's buffer
 *                when it holds the only reference; see tsr__kernel_may_alias).
 *  PACK          1 float input X (rows x cols), output of X's dtype, d = 1, rows * cols values
 *                (tsr__packed_len), holding X in the layout MATMUL_PACKED reads
 *                (kernels/gemm_pack.c): i = [0] lays X out as a left operand, panels of
 *                TSR__PACK_MR rows (the last one of the rows left), panel p of width w at
 *                p*MR*cols holding for s = 0 .. cols-1 the values X[p*MR + r][s], r < w, at
 *                s*w + r; i = [1] as a right operand, panels of TSR__PACK_NR(dtype) columns
 *                (32 float64, 64 float32: 256 bytes), panel q of width w at q*NR*rows holding
 *                for s = 0 .. rows-1 the values X[s][q*NR + c], c < w, at s*w + c. The output
 *                may be written over X (alias SIZE).
 *  MATMUL_PACKED MATMUL over packed operands of the output's float dtype: d = 2, output
 *                m x n, i = [g] as MATMUL's; inputs A_0, B_0, ... as PACK or PACK_SOURCE made
 *                them (A_s of an m x k_s tile with i = [0], m * k_s values; B_s of a k_s x n
 *                tile with i = [1]), optionally Cprev last. Each output element is the chain
 *                of fused multiply-adds over every step's k in order, from Cprev's element or
 *                0: the same bits on every CPU. Lowering uses it for float 2-d products (both
 *                operands of the output's dtype) whose chunks are all TSR__PACKED_MIN to
 *                TSR__PACKED_MAX on every side (array/lower.c).
 *  PACK_SOURCE   no inputs: a source's tile made and packed in one task, so that it can be made
 *                again wherever it is needed, as the source could (a PACK's output would be
 *                moved between workers instead). i = [role, kop, rows, cols, the source's
 *                i...], f = the source's f: the rows x cols chunk of output dtype that the
 *                source family kop (FILL, RANDOM, ARANGE, NORMAL or EYE; its fn 0) makes from
 *                those parameters, laid out as PACK with i = [role] would.
 *  TRANSPOSE     1 input. i = [perm[0..d)]: out axis j is input axis perm[j].
 *  REDUCE        1 input of ndim n. fn = tsr_reduce_op (MEAN reduces like SUM; the scale is
 *                applied by COMBINE). i = [axes...] (input axes to reduce, ascending, possibly
 *                none). Output shape = input shape without those axes. The input may have another
 *                dtype (sum of bool -> int64, mean of int64 -> float64): converted first. Float
 *                sums accumulate in double, int64 ones in int64 (wrapping). With keepdims the
 *                output may instead have the input's shape with extent 1 on the reduced axes.
 *  COMBINE       k >= 1 inputs of the output's shape; fn = tsr_reduce_op (MEAN combines like SUM).
 *                Inputs are combined strictly in order (((in0 op in1) op in2) ...), then
 *                f = [scale] multiplies the result (1 for all but MEAN's last combine).
 *                MAX/MIN propagate NaN as NumPy does.
 *  ASSEMBLE      k >= 1 inputs (rechunk, broadcast materialisation): i = [out_offset[0..d),
 *                in0_offset[0..d), in1_offset[0..d), ...] global offsets; each input has the
 *                output's ndim; every output element is covered by exactly one input, whose
 *                intersection with the output is copied (and converted to the output dtype).
 *  ASTYPE        1 input of the output's shape; converts to the output dtype (float ->
 *                int64: NaN, inf, out of range -> INT64_MIN; anything non-zero -> bool true).
 *  COMPARE       fn = LESS .. LOGICAL_OR (tsr_binary_op); bool output. 2 inputs broadcasting as
 *                BINARY's with i = [dtype], or 1 input with i = [dtype, scalar_first], f =
 *                [scalar] (or i = [dtype, scalar_first, scalar exactly as int64]): both
 *                operands are converted to `dtype` (their promotion), then compared (NaN
 *                compares unequal; logical ops test != 0).
 *  PREDICATE     1 input of the output's shape, any dtype; fn = LOGICAL_NOT, ISNAN or ISFINITE;
 *                bool output.
 *  WHERE         i = [x_scalar, y_scalar], f = [xs, ys]: inputs C, then X unless x_scalar, then
 *                Y unless y_scalar, each broadcasting to the output; out = C != 0 ? X : Y,
 *                converted to the output dtype. With i = [x_scalar, y_scalar, x_exact, xi,
 *                y_exact, yi], a scalar X with x_exact is the int64 xi exactly (Y likewise).
 *  NORMAL        no inputs.  i = RANDOM's [seed, gshape, offset], f = [loc, scale]: element with
 *                global index g is loc + scale * (sqrt(-2 ln(1 - u1)) * cos(2 pi u2)), u1 and u2
 *                SPEC's float64 random values of indices 2g and 2g + 1, computed in double and
 *                rounded to the output dtype at the end.
 *  EYE           no inputs, d = 2.  i = [k, offset0, offset1]: element (r, c) is 1 where
 *                (offset1 + c) - (offset0 + r) == k, else 0.
 *  CONTRACT      tensordot and N-d matmul blocks. i = [g, nbatch, nc, na, nb, roleA[na],
 *                roleB[nb]]; 2g inputs A_0, B_0, ..., A_(g-1), B_(g-1) (every A_s has na axes,
 *                every B_s nb) and optionally Cprev (the output's shape) last, accumulated like
 *                MATMUL: out = ((Cprev + A_0 . B_0) + A_1 . B_1) ..., one contraction per step,
 *                in order. role[ax] >= 0: the operand's axis ax is output axis role[ax]; < 0: it
 *                is contraction pair -1 - role[ax] (each pair is one axis of A and one of B, of
 *                equal extent). The first nbatch output axes are batch axes: A, B or both have
 *                them, an operand's extent 1 broadcasting; every later output axis is exactly one
 *                operand's, A's before B's. Per batch element the blocks are packed into an
 *                M x K and a K x N matrix (skipped when already laid out so) and multiplied with
 *                BLAS gemm for floats, naive wrapping loops for int64. Inputs of any dtype are
 *                converted to the output's.
 *  DATA          no inputs (tsr_from_buffer). i = the chunk's bytes in C order, 8 to an integer
 *                (memory order, so the bytes round-trip on one machine; the last one padded),
 *                at least ceil(nbytes / 8) of them. Any dtype.
 *  HELD          a chunk an earlier job of the same client holds (tsr_persist): i = [job, task]
 *                of that chunk, s = "HOST:PORT" of the worker that held it when lowered. The
 *                graph gives it no inputs; the worker hands it that chunk as its one input
 *                (worker/task.c), from its store or fetched from s, and the kernel copies it
 *                (or nothing, when the output shares the input's buffer). Any dtype.
 *  REDUCE2       (issue 13, kernels/reduce2.c) 1 input x of any dtype, ndim n (var/std: and
 *                optionally a second, the first pass's final partial); fn = TSR__R2_*
 *                (prod, any, all, var, std, argmax, argmin). i = [axes[0..r), gext[0..r),
 *                goff[0..r)]: the reduced axes (ascending), their global extents and this
 *                chunk's global offsets on them. Output: the chunk's partial, K = F * (elements
 *                of x over the kept axes) values in any shape (lowering uses 1-d), F = the row's
 *                fields, entry j's fields at [F*j, F*j + F), j row-major over the kept axes:
 *                  prod       F = 1, the product in the result dtype (float64/float32 as x,
 *                             folded in double; int64 for int64/bool x, wrapping)
 *                  any, all   F = 1, bool
 *                  var, std   F = 3, float64 (count, mean, M2): two passes over the chunk;
 *                             with a second input (K float64 values: (count, mean, M2) per
 *                             kept element), the mean is that input's and M2 the squared
 *                             deviations from it (var's second pass over the array)
 *                  argmax/min F = 2, int64 (value, index): the value as the bits of its
 *                             float64 (float x) or as the int64 (int64/bool x); the index is
 *                             row-major over the reduced axes' global extents (the flat index
 *                             when all are reduced). The first NaN wins, then the larger
 *                             (smaller) value, then the lower index, so candidates may meet in
 *                             any order.
 *  COMBINE2      k >= 1 partials of one dtype and size (REDUCE2's layout); i = [final, value
 *                kind (argmax/argmin: 1 when values are int64, 0 float64 bits)] or none (0, 0),
 *                f = [ddof] or none (0). Folded strictly in order (var/std with Chan's pairwise
 *                update). final 0: the output is a partial again; final 1: the result, K / F
 *                values in the result dtype (var/std float64 or float32, M2 / max(count -
 *                ddof, 0), NaN for count 0; argmax/argmin the index; prod/any/all the value).
 *  SCAN          cumsum/cumprod (fn = tsr_scan_op). 1 input x of any dtype, plus optionally the
 *                previous output chunk along the axis (the running value, in the output
 *                dtype). i = [axis]: axis >= 0: output shape = x's, the running value has x's
 *                shape but on axis (any extent >= 1: its last slice is used); axis = -1: x is
 *                scanned flat in C order, the output has x's size (any shape), the running
 *                value is the last element of the second input. Output dtype: x's for floats,
 *                int64 for int64/bool (wrapping). out[first] = run OP x[first] (x[first] with no
 *                running value), then out[l] = out[l-1] OP x[l] in the output dtype: NumPy's
 *                loop.
 *  ASTYPE        1 input of the output's shape; converts to the output dtype.
 *  STRIDED       1 input of the output's dtype, any shape. i = [offset, stride[0..d)] in input
 *                elements (strides may be negative or 0): output element j (a multi-index) is
 *                the input's element of flat C-order index offset + sum_k j[k] * stride[k]; all
 *                of them inside the input. Slices, and reshapes of a chunk (offset 0, the
 *                output's C strides). Any dtype (moves elements by size).
 *  TAKE          k >= 2 inputs: X_0 .. X_(k-2), the chunks of X along axis in order (the output's
 *                ndim and dtype; the output's extents but along axis), then a 1-d int64 index
 *                chunk as long as the output along axis. i = [axis]. With n the X_j's extents
 *                along axis summed, index v (-n <= v < n; v < 0 counts from the end) picks
 *                position v of their concatenation; any other v is an error naming it, and
 *                nothing is written. Any dtype.
 *  MAP_BLOCKS    k >= 1 inputs of any dtype, each with at most d axes. s = "LIBRARY:SYMBOL" (the
 *                user kernel, include/tessera/plugin.h), i = [gshape[0..d), block_index[0..d),
 *                offset[0..d)] of the output block, f = [scalars...] passed to the kernel. The
 *                kernel calls d->plugin, which the worker resolved from s in its plugin
 *                directories before the task ran (worker/plugins.c); with none it fails.
 *  FUSED         a chain of elementwise operations run as one pass (issue 13; kernels/fused.c,
 *                lowering in array/fuse.c). k >= 1 inputs; a program of S steps over a domain
 *                (the chunk the chain computes) of D axes:
 *                i = [S, D, dom[0..D), steps[0..S) as 5 integers each, naxes, axes[0..naxes),
 *                boxes...]
 *                step = [kind, fn, dtype, a, b]: kind TSR__FS_UNARY (fn = tsr_unary_op, operand
 *                a), TSR__FS_BINARY (fn = tsr_binary_op, a OP b), TSR__FS_SCALAR_R (a OP f[b]),
 *                TSR__FS_SCALAR_L (f[b] OP a), TSR__FS_ASTYPE (a converted), TSR__FS_RANDOM
 *                (RANDOM's values made in place: a = the seed's uint64 bits, boxes[b..b+2D) =
 *                [gshape[0..D), offset[0..D)] of the domain in the source array),
 *                TSR__FS_FILL ((T)f[b]); fn is 0 for the last three; dtype (float64 or
 *                float32) is the step's: its operands are converted to it and its result is
 *                rounded to it, as the unfused kernel of that step would. An operand a or b >= 0
 *                is an earlier step's result; < 0 is input (-1 - a), which broadcasts to the
 *                domain as a BINARY input does (right-aligned, extents equal or 1).
 *                fn = 0: the output is the domain (D == d, same extents) and takes the last
 *                step's values. fn = 1 + r (tsr_reduce_op r): the output is REDUCE r's partial
 *                of the last step's values over the ascending domain axes `axes` (naxes 0 when
 *                fn = 0), folded in row-major order exactly as REDUCE folds its input. The last
 *                step's dtype is the output's. f = the scalars. 1 <= S <= TSR__FUSED_MAX_STEPS.
 */
#ifndef TSR_KERNELS_H
#define TSR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "graph/graph.h"
#include "kernels/spec_random.h"

typedef enum tsr_device { TSR_DEVICE_CPU = 0, TSR_DEVICE_GPU = 1 } tsr_device;

/* A chunk as a kernel sees it: dense, C order. */
/* PACK's panels (rows of a left operand, columns of a right one), the chunk sides lowering
 * packs (array/lower.c; measured in bench/notes.md §29, §32, §33), and the length of a packed
 * rows x cols tile (role 0: left, 1: right; the tile's own), or -1 if it does not fit an int64
 * of bytes. */
#define TSR__PACK_MR 6
#define TSR__PACK_NR(dtype) ((dtype) == TSR_FLOAT32 ? 64 : 32)
#define TSR__PACKED_MIN 256
#define TSR__PACKED_MAX 2048
int64_t tsr__packed_len(int role, int64_t rows, int64_t cols);

typedef struct tsr_chunkview {
    void *data;
    uint8_t dtype; /* tsr_dtype */
    uint8_t ndim;
    int64_t shape[TSR_MAX_NDIM];
} tsr_chunkview;

/* Returns 0, or a negative code with a message in err (errlen bytes, NUL-terminated). out's
 * data is preallocated by the caller with tsr__kdesc_nbytes(d) bytes; its dtype/ndim/shape are
 * set from d by the caller. */
typedef int (*tsr_kernel_fn)(const tsr_kdesc *d, const tsr_chunkview *in, int nin,
                             tsr_chunkview *out, char *err, size_t errlen);

/* The kernel for (kop, dtype, device), or NULL. */
tsr_kernel_fn tsr__kernel_lookup(int kop, int dtype, tsr_device dev);

/* Checks the descriptor and the inputs' dtypes/shapes against the family's contract and runs
 * the kernel. Never crashes on a malformed descriptor: returns TSR_EINVALID with a message. */
int tsr__kernel_run(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                    tsr_device dev, char *err, size_t errlen);

/* May the output chunk share input k's buffer (out->data == in[k].data)? Input k must have the
 * output's shape and dtype, and the family's alias column (graph/ops.h) must allow it: UNARY,
 * BINARY_SCALAR, ASTYPE, BINARY and COMBINE read each element they need before writing the output
 * element at the same place (COMBINE folds block by block); MATMUL only for Cprev, the last input;
 * STRIDED, whatever the shapes, only when it copies its input's bytes unchanged (offset 0, the
 * output's C strides, as many elements: a reshape of a chunk), where it then does nothing.
 * The caller must own the buffer exclusively: nothing else may read it while the kernel runs. */
int tsr__kernel_may_alias(const tsr_kdesc *d, const tsr_chunkview *in, int nin, int k);

/* A plugin kernel's name, "LIBRARY:SYMBOL" (MAP_BLOCKS's s): LIBRARY a bare file name (letters,
 * digits, '_', '-', '+', '.', no "..", not starting with '.'), SYMBOL a C identifier, each shorter
 * than TSR__PLUGIN_NAME_MAX. Splits it into lib and sym (libsize/symsize bytes), or returns
 * TSR_EINVALID with a message naming what is wrong. The client checks a program's names with it
 * and the worker again before it looks in its plugin directories. */
#define TSR__PLUGIN_NAME_MAX 64
int tsr__plugin_parse_name(const char *spec, char *lib, size_t libsize, char *sym, size_t symsize,
                           char *err, size_t errlen);

/* The threads one OpenBLAS call may use now. OpenBLAS's setting is process-wide, so the library
 * only reads it (the worker warns when it exceeds blas_threads); the program sets it. */
int tsr__kernels_blas_threads(void);

#endif
