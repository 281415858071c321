/* Lowering: turns lazy arrays into one chunk-task graph (tsr_graph). Owns the per-op rules
 * (which inputs, which parameters; the kernel family and the lowering function of each operation
 * are its row of TSR__AOP_MAP, array/array.h, and flops come from tsr__kop_flops), memoization of
 * shared sub-graphs within one lowering epoch, task counts and the Graphviz view. Must not validate
 * user input (array.c did) nor talk to a cluster.
 *
 * Emission order: tasks are emitted depth-first, a chunk's inputs right before the task that
 * first needs them, so that "lower id first" (the scheduler's static priority) walks the graph
 * depth-first and frees memory early. Deep expression DAGs (more than MAX_DFS_DEPTH arrays on a
 * path) are emitted array by array instead, which needs no recursion. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "array/client.h"
#include "array/lower.h"
#include "kernels/kernels.h"
#include "array/lower_priv.h"

#define MAX_DFS_DEPTH 64
#define FAN_IN 8

static node *node_of(lctx *L, const tsr_array *a) {
    return &L->nodes[a->lower_tasks[tsr__array_nchunks(a)]];
}

static const int64_t *offsets(lctx *L, const tsr_array *a, int ax) {
    node *n = node_of(L, a);
    if (!n->off[ax]) {
        int64_t *o = malloc((size_t)(a->numchunks[ax] + 1) * sizeof *o);
        if (!o) return NULL;
        o[0] = 0;
        for (int64_t k = 0; k < a->numchunks[ax]; k++) o[k + 1] = o[k] + a->chunks[ax][k];
        n->off[ax] = o;
    }
    return n->off[ax];
}

/* Row-major chunk index <-> grid index. */
static void unravel(const tsr_array *a, int64_t ci, int64_t *idx) {
    for (int ax = a->ndim - 1; ax >= 0; ax--) {
        idx[ax] = ci % a->numchunks[ax];
        ci /= a->numchunks[ax];
    }
}

static int64_t ravel(const tsr_array *a, const int64_t *idx) {
    int64_t ci = 0;
    for (int ax = 0; ax < a->ndim; ax++) ci = ci * a->numchunks[ax] + idx[ax];
    return ci;
}

/* Offset and shape of the chunk at grid index idx. */
static int box(lctx *L, const tsr_array *a, const int64_t *idx, int64_t *off, int64_t *shape) {
    for (int ax = 0; ax < a->ndim; ax++) {
        const int64_t *o = offsets(L, a, ax);
        if (!o) return tsr__fail(L->c, -ENOMEM, "out of memory");
        off[ax] = o[idx[ax]];
        shape[ax] = a->chunks[ax][idx[ax]];
    }
    return 0;
}

static void desc_init(tsr_kdesc *d, int kop, int fn, tsr_dtype dtype, int ndim,
                      const int64_t *shape) {
    memset(d, 0, sizeof *d);
    d->kop = (uint8_t)kop;
    d->fn = (uint8_t)fn;
    d->dtype = (uint8_t)dtype;
    d->ndim = (uint8_t)ndim;
    for (int ax = 0; ax < ndim; ax++) d->shape[ax] = shape[ax];
}

/* Adds one task of array a (making chunk ci, or contributing to it). in0 (in0_ndim axes) is the
 * shape of the first input's chunk where the cost model needs it (matmul, reduce), else NULL. */
int64_t tsr__lower_add_flops(lctx *L, tsr_array *a, int64_t ci, const tsr_kdesc *d,
                             const uint32_t *deps, uint32_t ndeps, double flops) {
    node *n = node_of(L, a);
    if (n->garray < 0) {
        n->garray =
            tsr__graph_add_array(L->g, tsr_array_name(a), n->opname ? n->opname : tsr_array_op(a));
        if (n->garray < 0) return tsr__fail(L->c, (int)n->garray, "out of memory");
        tsr__graph_set_grid(L->g, (uint32_t)n->garray, a->ndim, a->numchunks);
    }
    if (L->g->ntasks >= NONE - 1)
        return tsr__fail(L->c, TSR_ETOOLARGE, "%s: the task graph is too large", tsr_array_name(a));
    int64_t t = tsr__graph_add_task(L->g, d, (uint32_t)n->garray, deps, ndeps, flops);
    if (t < 0) return tsr__fail(L->c, (int)t, "%s: could not add a task", tsr_array_name(a));
    L->g->tasks[t].chunk = ci;
    if (L->origin) {
        if (TSR__GROW(L->origin, L->origin_cap, (size_t)t + 1) < 0)
            return tsr__fail(L->c, -ENOMEM, "out of memory");
        L->origin[t] = (task_origin){a, ci};
    }
    return t;
}

static int64_t add(lctx *L, tsr_array *a, int64_t ci, const tsr_kdesc *d, const uint32_t *deps,
                   uint32_t ndeps, int in0_ndim, const int64_t *in0) {
    double flops = tsr__kop_flops(d->kop, d->ndim, d->shape, (int)ndeps, in0_ndim, in0);
    return tsr__lower_add_flops(L, a, ci, d, deps, ndeps, flops);
}

node *tsr__lower_node(lctx *L, const tsr_array *a) {
    return node_of(L, a);
}

static int64_t get_chunk(lctx *L, tsr_array *a, int64_t ci);

/* Fetches operand chunk ci into *dep (a task id). */
static int dep_of(lctx *L, tsr_array *x, int64_t ci, uint32_t *dep) {
    int64_t t = get_chunk(L, x, ci);
    if (t < 0) return (int)t;
    *dep = (uint32_t)t;
    return 0;
}

int64_t tsr__lower_add(lctx *L, tsr_array *a, int64_t ci, const tsr_kdesc *d, const uint32_t *deps,
                       uint32_t ndeps, int in0_ndim, const int64_t *in0) {
    return add(L, a, ci, d, deps, ndeps, in0_ndim, in0);
}

int tsr__lower_dep(lctx *L, tsr_array *x, int64_t ci, uint32_t *dep) {
    return dep_of(L, x, ci, dep);
}

/* ---- per-op emission ------------------------------------------------------------------------ */

/* Every per-op function below emits the task(s) of output chunk ci (grid index idx, shape
 * shape) of array a and returns the task that makes it; the operations table (TSR__AOP_MAP,
 * array/array.h) says which one an array uses and which kernel family its tasks run. */
#define LOWERING(name)                                                                             \
    static int64_t name(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx, const int64_t *shape)

/* The descriptor of a source's chunk at grid index idx; iv (3 + 3 * TSR_MAX_NDIM) and fv (2)
 * hold its parameters. */
static int source_desc(lctx *L, tsr_array *a, const int64_t *idx, tsr_kdesc *dp, int64_t *iv,
                       double *fv) {
    int64_t off[TSR_MAX_NDIM], bshape[TSR_MAX_NDIM];
    int rc = box(L, a, idx, off, bshape);
    if (rc < 0) return rc;
    tsr_kdesc d;
    int d_ = a->ndim;
    desc_init(&d, tsr__aop_kop(a->aop), 0, a->dtype, d_, bshape);
    switch (a->aop) {
    case TSR_A_FULL:
        fv[0] = a->value;
        d.f = fv;
        d.nf = 1;
        if (a->has_ivalue) { /* kernels.h: an int64 FILL may carry its exact value in i */
            iv[0] = a->ivalue;
            d.i = iv;
            d.ni = 1;
        }
        break;
    case TSR_A_RANDOM:
        memcpy(&iv[0], &a->seed, sizeof a->seed); /* the seed's uint64 bits */
        for (int ax = 0; ax < d_; ax++) {
            iv[1 + ax] = a->shape[ax];
            iv[1 + d_ + ax] = off[ax];
        }
        d.i = iv;
        d.ni = (uint32_t)(1 + 2 * d_);
        break;
    case TSR_A_NORMAL:
        memcpy(&iv[0], &a->seed, sizeof a->seed);
        for (int ax = 0; ax < d_; ax++) {
            iv[1 + ax] = a->shape[ax];
            iv[1 + d_ + ax] = off[ax];
        }
        fv[0] = a->value; /* loc */
        fv[1] = a->step;  /* scale */
        d.i = iv;
        d.ni = (uint32_t)(1 + 2 * d_);
        d.f = fv;
        d.nf = 2;
        break;
    case TSR_A_EYE:
        iv[0] = a->diag;
        iv[1] = off[0];
        iv[2] = off[1];
        d.i = iv;
        d.ni = 3;
        break;
    case TSR_A_ARANGE:
        fv[0] = a->value;
        fv[1] = a->step;
        iv[0] = off[0];
        d.f = fv;
        d.nf = 2;
        d.i = iv;
        d.ni = 1;
        break;
    default: /* TSR_A_LOAD */
        d.s = a->path;
        if (a->zarr) {
            d.fn = TSR__LOAD_ZARR;
            iv[0] = (int64_t)a->file_dtype;
            iv[1] = a->zcodec;
            iv[2] = a->zsep;
            for (int ax = 0; ax < d_; ax++) {
                iv[3 + ax] = a->shape[ax];
                iv[3 + d_ + ax] = a->zchunks[ax];
                iv[3 + 2 * d_ + ax] = off[ax];
            }
            fv[0] = a->zfill;
            d.i = iv;
            d.ni = (uint32_t)(3 + 3 * d_);
            d.f = fv;
            d.nf = 1;
            break;
        }
        iv[0] = a->data_offset;
        iv[1] = (int64_t)a->file_dtype;
        for (int ax = 0; ax < d_; ax++) {
            iv[2 + ax] = a->shape[ax];
            iv[2 + d_ + ax] = off[ax];
        }
        d.i = iv;
        d.ni = (uint32_t)(2 + 2 * d_);
        break;
    }
    *dp = d;
    return 0;
}

LOWERING(emit_source) {
    int64_t iv[3 + 3 * TSR_MAX_NDIM];
    double fv[2];
    tsr_kdesc d;
    (void)shape;
    int rc = source_desc(L, a, idx, &d, iv, fv);
    if (rc < 0) return rc;
    return add(L, a, ci, &d, NULL, 0, 0, NULL);
}

/* UNARY, ASTYPE, BINARY_SCALAR, COMPARE_SCALAR and PREDICATE: one task per chunk on the operand's
 * matching chunk. */
LOWERING(emit_map) {
    uint32_t dep;
    (void)idx;
    int rc = dep_of(L, a->args[0], ci, &dep);
    if (rc < 0) return rc;
    tsr_kdesc d;
    int64_t iv[3];
    double fv[1];
    desc_init(&d, tsr__aop_kop(a->aop), a->aop == TSR_A_ASTYPE ? 0 : a->fn, a->dtype, a->ndim,
              shape);
    if (a->aop == TSR_A_BINARY_SCALAR) { /* kernels.h: i = [scalar_first(, exact int)] */
        fv[0] = a->value;
        iv[0] = a->scalar_first;
        iv[1] = a->ivalue;
        d.f = fv;
        d.nf = 1;
        d.i = iv;
        d.ni = a->has_ivalue ? 2 : 1;
    } else if (a->aop == TSR_A_COMPARE_SCALAR) { /* i = [dtype, scalar_first(, exact int)] */
        fv[0] = a->value;
        iv[0] = a->cdtype;
        iv[1] = a->scalar_first;
        iv[2] = a->ivalue;
        d.f = fv;
        d.nf = 1;
        d.i = iv;
        d.ni = a->has_ivalue ? 3 : 2;
    }
    return add(L, a, ci, &d, &dep, 1, 0, NULL);
}

/* BINARY, COMPARE and WHERE: array.c aligned every operand to the output grid on every axis it
 * spans, so an operand's chunk index is the output's, or 0 where it is broadcast (a single
 * chunk). */
LOWERING(emit_broadcast) {
    uint32_t deps[3];
    int64_t iv[6];
    double fv[2];
    for (int k = 0; k < a->nargs && k < 3; k++) {
        tsr_array *x = a->args[k];
        int64_t xidx[TSR_MAX_NDIM];
        int o = a->ndim - x->ndim;
        for (int ax = 0; ax < x->ndim; ax++) xidx[ax] = x->numchunks[ax] == 1 ? 0 : idx[ax + o];
        int rc = dep_of(L, x, ravel(x, xidx), &deps[k]);
        if (rc < 0) return rc;
    }
    tsr_kdesc d;
    desc_init(&d, tsr__aop_kop(a->aop), a->aop == TSR_A_WHERE ? 0 : a->fn, a->dtype, a->ndim,
              shape);
    if (a->aop == TSR_A_COMPARE) { /* kernels.h: i = [dtype] */
        iv[0] = a->cdtype;
        d.i = iv;
        d.ni = 1;
    } else if (a->aop == TSR_A_WHERE) {
        /* i = [x is a scalar, y is a scalar] (+ [x exact, xi, y exact, yi] with an exact integer
         * number), f = [xs, ys] */
        iv[0] = a->scalar_mask & 1;
        iv[1] = (a->scalar_mask >> 1) & 1;
        iv[2] = a->has_ivalue;
        iv[3] = a->ivalue;
        iv[4] = a->has_ivalue2;
        iv[5] = a->ivalue2;
        fv[0] = a->value;
        fv[1] = a->value2;
        d.i = iv;
        d.ni = a->has_ivalue || a->has_ivalue2 ? 6 : 2;
        d.f = fv;
        d.nf = 2;
    }
    return add(L, a, ci, &d, deps, (uint32_t)TSR__MIN(a->nargs, 3), 0, NULL);
}

/* MAP_BLOCKS: one task per output chunk on each operand's block: the block with the output's
 * index (blockwise, or an operand array.c aligned to the output grid), or 0 on an axis where the
 * operand is broadcast (one chunk of extent 1). i = [gshape, block index, offset] (kernels.h). */
LOWERING(emit_map_blocks) {
    int nd = a->ndim;
    uint32_t small[8], *deps = small;
    int64_t off[TSR_MAX_NDIM], bshape[TSR_MAX_NDIM], iv[3 * TSR_MAX_NDIM];
    int rc = box(L, a, idx, off, bshape);
    if (rc < 0) return rc;
    if ((size_t)a->nargs > TSR__ARRAY_LEN(small) &&
        !(deps = malloc((size_t)a->nargs * sizeof *deps)))
        return tsr__fail(L->c, -ENOMEM, "out of memory");
    for (int k = 0; k < a->nargs && rc == 0; k++) {
        tsr_array *x = a->args[k];
        int64_t xidx[TSR_MAX_NDIM];
        int o = nd - x->ndim;
        for (int ax = 0; ax < x->ndim; ax++)
            xidx[ax] = a->blockwise || x->numchunks[ax] != 1 ? idx[ax + o] : 0;
        rc = dep_of(L, x, ravel(x, xidx), &deps[k]);
    }
    int64_t t = rc;
    if (rc == 0) {
        for (int ax = 0; ax < nd; ax++) {
            iv[ax] = a->shape[ax];
            iv[nd + ax] = idx[ax];
            iv[2 * nd + ax] = off[ax];
        }
        tsr_kdesc d;
        desc_init(&d, TSR_KOP_MAP_BLOCKS, 0, a->dtype, nd, shape);
        d.s = a->kernel;
        d.i = iv;
        d.ni = (uint32_t)(3 * nd);
        d.f = a->scalars;
        d.nf = (uint32_t)a->nscalars;
        t = add(L, a, ci, &d, deps, (uint32_t)a->nargs, 0, NULL);
    }
    if (t >= 0) {
        /* The scheduler places the tasks only on workers that announced the library. */
        char lib[TSR__PLUGIN_NAME_MAX], sym[TSR__PLUGIN_NAME_MAX], why[8];
        node *n = node_of(L, a);
        if (tsr__plugin_parse_name(a->kernel, lib, sizeof lib, sym, sizeof sym, why, sizeof why) ||
            tsr__graph_set_plugin(L->g, (uint32_t)n->garray, lib) < 0)
            t = tsr__fail(L->c, -ENOMEM, "%s: out of memory", tsr_array_name(a));
    }
    if (deps != small) free(deps);
    return t;
}

/* MATMUL: C[i,j] accumulates A[i,kk] @ B[kk,j] over kk in increasing order, one task per block
 * product, each taking the previous partial sum (a fixed order: SPEC determinism). */
/* How many k-steps one matmul task takes, from the step's flops and the chain's nk steps alone (so
 * the graph, and with it the order of every sum, never depends on placement):
 * - enough that a task is worth its per-task costs (a message each way, a dispatch, its inputs
 *   gathered), which at chunk 128 were about a third of the run: the fewest steps that reach
 *   MATMUL_GROUP_FLOPS (at most TSR__MATMUL_MAX_GROUP);
 * - and at most MATMUL_CHAIN_TASKS tasks a chain, while a task stays under MATMUL_TASK_FLOPS_MAX:
 *   a partial sum handed from task to task costs a new output buffer and a hop through the
 *   window each time;
 * then the chain's steps in groups of ceil(nk / tasks), the last taking what is left (32 steps
 * as 16 + 16, not 31 + 1). Measured against StarPU (bench/notes.md §22): at chunk 256 four steps
 * a task ran 3-10% faster than two, at 512 two or more faster than one (4096², and four at
 * 8192²), at 128 sixteen faster than 31 + 1 or 32, and at 1024 one faster than two or four. */
#define MATMUL_GROUP_FLOPS 128e6
#define MATMUL_CHAIN_TASKS 4
#define MATMUL_TASK_FLOPS_MAX 1.1e9

static int64_t group_steps(double step, int64_t nk) {
    if (nk <= 1) return 1;
    int64_t g = 1;
    if (step < MATMUL_GROUP_FLOPS) {
        double want = step > 0 ? MATMUL_GROUP_FLOPS / step + 1 : TSR__MATMUL_MAX_GROUP;
        g = want >= TSR__MATMUL_MAX_GROUP ? TSR__MATMUL_MAX_GROUP : (int64_t)want;
    }
    int64_t chain = (nk + MATMUL_CHAIN_TASKS - 1) / MATMUL_CHAIN_TASKS;
    double fit = step > 0 ? MATMUL_TASK_FLOPS_MAX / step : TSR__MATMUL_MAX_GROUP;
    if (fit < (double)chain) chain = fit >= 1 ? (int64_t)fit : 1;
    if (chain > g) g = TSR__MIN(chain, TSR__MATMUL_MAX_GROUP);
    int64_t ntasks = (nk + g - 1) / g;
    return (nk + ntasks - 1) / ntasks;
}

static int64_t matmul_group(const tsr_array *A, const int64_t *shape, int ndim, int64_t nk) {
    double step =
        2.0 * (double)shape[0] * (ndim == 2 ? (double)shape[1] : 1.0) * (double)A->chunks[1][0];
    return group_steps(step, nk);
}

/* Float 2-d products (operands of the output's dtype) whose chunks are all TSR__PACKED_MIN to
 * TSR__PACKED_MAX on every side, except that a side's last chunk of several may be smaller (the
 * edge of a shape the chunk size does not divide, as dask.array chunks it: 4100 in chunks of 512
 * ends in a chunk of 4, and the kernel pads such panels), run over packed tiles
 * (kernels/gemm_pack.c): each tile of A and B is laid out once by a PACK task, not once per
 * product by the BLAS. At 384 to 768 that ran 1-10% faster per product than OpenBLAS on the same
 * tiles (bench/notes.md §29), and the edge case 7.7% faster at 4100² (§32); with the 6 x 32
 * micro-kernel, whole runs at chunk 1024 and 256 were 2-4% faster than with OpenBLAS and libxsmm,
 * and at 128 the same (§32); with B read NC columns at a time, chunk 2048 ran 4-6% faster and
 * 4096 the same (§33), so libxsmm or OpenBLAS take the tiles below 256 and above 2048.
 * Decided from dtypes and chunk shapes alone. */
static int side_packs(const tsr_array *x, int ax) {
    int64_t n = x->numchunks[ax];
    for (int64_t k = 0; k < n; k++)
        if ((x->chunks[ax][k] < TSR__PACKED_MIN && (k < n - 1 || n == 1)) ||
            x->chunks[ax][k] > TSR__PACKED_MAX)
            return 0;
    return 1;
}

static int matmul_packs(const tsr_array *a, const tsr_array *A, const tsr_array *B) {
    return (a->dtype == TSR_FLOAT64 || a->dtype == TSR_FLOAT32) && A->dtype == a->dtype &&
           B->dtype == a->dtype && a->ndim == 2 && A->ndim == 2 && B->ndim == 2 &&
           side_packs(A, 0) && side_packs(A, 1) && side_packs(B, 1);
}

static int is_held(const lctx *L, const tsr_array *a);

/* A source made wherever it is needed (random, zeros, full, arange, normal, eye)? */
static int remade_source(const lctx *L, const tsr_array *x) {
    return (x->aop == TSR_A_FULL || x->aop == TSR_A_RANDOM || x->aop == TSR_A_ARANGE ||
            x->aop == TSR_A_NORMAL || x->aop == TSR_A_EYE) &&
           !is_held(L, x);
}

/* The PACK task of chunk ci of operand x (role 0: A, 1: B) of matmul a, emitted the first time
 * a product needs it. A source's chunk becomes a PACK_SOURCE task instead, which every worker
 * that needs the packed tile makes for itself as it would the source, rather than fetching it
 * (kernels.h). */
static int packed_dep(lctx *L, tsr_array *a, int64_t out_ci, tsr_array *x, int role, int64_t ci,
                      uint32_t *dep) {
    node *n = node_of(L, a);
    int64_t nch = tsr__array_nchunks(x);
    if (!n->packed[role]) {
        if (!(n->packed[role] = malloc((size_t)nch * sizeof *n->packed[role])))
            return tsr__fail(L->c, -ENOMEM, "out of memory");
        for (int64_t k = 0; k < nch; k++) n->packed[role][k] = -1;
    }
    if (n->packed[role][ci] < 0) {
        int64_t gi[2] = {ci / x->numchunks[1], ci % x->numchunks[1]};
        int64_t rows = x->chunks[0][gi[0]], cols = x->chunks[1][gi[1]];
        int64_t len = tsr__packed_len(role, rows, cols);
        if (len < 0)
            return tsr__fail(L->c, TSR_ETOOLARGE, "%s: chunk too large", tsr_array_name(a));
        tsr_kdesc d;
        int64_t r = role, iv[3 + 3 * TSR_MAX_NDIM], pi[4 + 3 + 3 * TSR_MAX_NDIM];
        double fv[2];
        uint32_t src, nsrc = 1;
        if (remade_source(L, x)) {
            tsr_kdesc s;
            int rc = source_desc(L, x, gi, &s, iv, fv);
            if (rc < 0) return rc;
            pi[0] = role;
            pi[1] = s.kop;
            pi[2] = rows;
            pi[3] = cols;
            for (uint32_t k = 0; k < s.ni; k++) pi[4 + k] = s.i[k];
            desc_init(&d, TSR_KOP_PACK_SOURCE, 0, x->dtype, 1, &len);
            d.i = pi;
            d.ni = 4 + s.ni;
            d.f = s.f;
            d.nf = s.nf;
            nsrc = 0;
        } else {
            int rc = dep_of(L, x, ci, &src);
            if (rc < 0) return rc;
            desc_init(&d, TSR_KOP_PACK, 0, x->dtype, 1, &len);
            d.i = &r;
            d.ni = 1;
        }
        int64_t t = add(L, a, out_ci, &d, nsrc ? &src : NULL, nsrc, 0, NULL);
        if (t < 0) return (int)t;
        n->packed[role][ci] = t;
    }
    *dep = (uint32_t)n->packed[role][ci];
    return 0;
}

LOWERING(emit_matmul) {
    tsr_array *A = a->args[0], *B = a->args[1];
    int64_t nk = A->numchunks[1], prev = -1;
    int64_t g = matmul_group(A, shape, a->ndim, nk);
    int packs = matmul_packs(a, A, B);
    for (int64_t k0 = 0; k0 < nk; k0 += g) {
        int64_t steps = TSR__MIN(g, nk - k0), ksum = 0;
        uint32_t deps[2 * TSR__MATMUL_MAX_GROUP + 1];
        for (int64_t s = 0; s < steps; s++) {
            int64_t kk = k0 + s, ai = idx[0] * nk + kk;
            int64_t bi = B->ndim == 2 ? kk * B->numchunks[1] + idx[1] : kk;
            int rc = packs ? packed_dep(L, a, ci, A, 0, ai, &deps[2 * s])
                           : dep_of(L, A, ai, &deps[2 * s]);
            if (rc == 0)
                rc = packs ? packed_dep(L, a, ci, B, 1, bi, &deps[2 * s + 1])
                           : dep_of(L, B, bi, &deps[2 * s + 1]);
            if (rc < 0) return rc;
            ksum += A->chunks[1][kk];
        }
        uint32_t n = (uint32_t)(2 * steps);
        if (prev >= 0) deps[n++] = (uint32_t)prev;
        tsr_kdesc d;
        desc_init(&d, packs ? TSR_KOP_MATMUL_PACKED : TSR_KOP_MATMUL, 0, a->dtype, a->ndim, shape);
        if (steps > 1) {
            d.i = &steps;
            d.ni = 1;
        }
        int64_t ashape[2] = {shape[0], ksum}; /* the flops of all its steps */
        prev = add(L, a, ci, &d, deps, n, 2, ashape);
        if (prev < 0) return prev;
    }
    return prev;
}

/* CONTRACT (tensordot, N-d matmul): the output chunk is a chain over every combination of the
 * contraction pairs' chunk indices, row-major (the last pair fastest), each step contracting one
 * A block with one B block and taking the previous partial last, as MATMUL's k-chain; steps are
 * grouped by the same flops rule. array/linalg.c gave B the chunks of A on every contracted axis
 * and on every batch axis they share, and the output the chunks of the operand axes it comes
 * from; an operand axis of extent 1 under a longer batch axis is broadcast (chunk 0). */
LOWERING(emit_contract) {
    tsr_array *op[2] = {a->args[0], a->args[1]};
    int nc = a->ncontract;
    int64_t nk[TSR_MAX_NDIM], kc[TSR_MAX_NDIM] = {0}, kax[TSR_MAX_NDIM], total = 1;
    double nout = 1, kfirst = 1;
    for (int ax = 0; ax < op[0]->ndim; ax++)
        if (a->role[0][ax] < 0) kax[-1 - a->role[0][ax]] = ax;
    for (int j = 0; j < nc; j++) {
        nk[j] = op[0]->numchunks[kax[j]];
        total *= nk[j];
        kfirst *= (double)op[0]->chunks[kax[j]][0];
    }
    for (int ax = 0; ax < a->ndim; ax++) nout *= (double)shape[ax];
    double step = 2.0 * nout * kfirst;
    int64_t g = group_steps(step, total);
    int64_t iv[5 + 2 * TSR_MAX_NDIM], prev = -1;
    iv[1] = a->nbatch;
    iv[2] = nc;
    iv[3] = op[0]->ndim;
    iv[4] = op[1]->ndim;
    for (int k = 0, n = 5; k < 2; k++)
        for (int ax = 0; ax < op[k]->ndim; ax++) iv[n++] = a->role[k][ax];
    for (int64_t k0 = 0; k0 < total; k0 += g) {
        int64_t steps = TSR__MIN(g, total - k0);
        double ksum = 0;
        uint32_t deps[2 * TSR__MATMUL_MAX_GROUP + 1];
        for (int64_t s = 0; s < steps; s++) {
            double kext = 1;
            for (int k = 0; k < 2; k++) {
                tsr_array *x = op[k];
                int64_t xidx[TSR_MAX_NDIM];
                for (int ax = 0; ax < x->ndim; ax++) {
                    int r = a->role[k][ax];
                    if (r < 0)
                        xidx[ax] = kc[-1 - r];
                    else
                        xidx[ax] = x->shape[ax] != a->shape[r] ? 0 : idx[r];
                    if (r < 0 && k == 0) kext *= (double)x->chunks[ax][xidx[ax]];
                }
                int rc = dep_of(L, x, ravel(x, xidx), &deps[2 * s + k]);
                if (rc < 0) return rc;
            }
            ksum += kext;
            for (int j = nc - 1; j >= 0; j--) { /* the next block pair, row-major */
                if (++kc[j] < nk[j]) break;
                kc[j] = 0;
            }
        }
        uint32_t n = (uint32_t)(2 * steps);
        if (prev >= 0) deps[n++] = (uint32_t)prev;
        iv[0] = steps;
        tsr_kdesc d;
        desc_init(&d, TSR_KOP_CONTRACT, 0, a->dtype, a->ndim, shape);
        d.i = iv;
        d.ni = (uint32_t)(5 + op[0]->ndim + op[1]->ndim);
        int64_t ashape[2] = {1, (int64_t)ksum}; /* the flops of all its steps: 2 * out * k */
        prev = add(L, a, ci, &d, deps, n, 2, ashape);
        if (prev < 0) return prev;
    }
    return prev;
}

LOWERING(emit_transpose) {
    tsr_array *x = a->args[0];
    int64_t xidx[TSR_MAX_NDIM], perm[TSR_MAX_NDIM];
    for (int ax = 0; ax < a->ndim; ax++) {
        xidx[a->axes[ax]] = idx[ax];
        perm[ax] = a->axes[ax];
    }
    uint32_t dep;
    int rc = dep_of(L, x, ravel(x, xidx), &dep);
    if (rc < 0) return rc;
    tsr_kdesc d;
    desc_init(&d, TSR_KOP_TRANSPOSE, 0, a->dtype, a->ndim, shape);
    d.i = perm;
    d.ni = (uint32_t)a->ndim;
    return add(L, a, ci, &d, &dep, 1, 0, NULL);
}

/* A reduction's output chunk: what the combine tree needs to know. */
typedef struct rctx {
    tsr_array *a, *x;
    int64_t ci;
    int64_t xidx[TSR_MAX_NDIM]; /* kept axes fixed by the output chunk */
    int64_t cnt[24];            /* items per tree level: cnt[0] partials, cnt[l] = ceil(/8) */
    int height;
    const int64_t *shape; /* output chunk shape */
} rctx;

/* The REDUCE partial of the p-th input chunk (row-major over the reduced axes' chunk indices). */
static int64_t partial(lctx *L, rctx *R, int64_t p) {
    tsr_array *a = R->a, *x = R->x;
    for (int k = a->naxes - 1; k >= 0; k--) {
        int ax = a->axes[k];
        R->xidx[ax] = p % x->numchunks[ax];
        p /= x->numchunks[ax];
    }
    if (node_of(L, a)->root) return tsr__fuse_partial(L, a, R->ci, R->xidx, R->shape);
    uint32_t dep;
    int rc = dep_of(L, x, ravel(x, R->xidx), &dep);
    if (rc < 0) return rc;
    int64_t axes[TSR_MAX_NDIM], xshape[TSR_MAX_NDIM];
    for (int k = 0; k < a->naxes; k++) axes[k] = a->axes[k];
    for (int ax = 0; ax < x->ndim; ax++) xshape[ax] = x->chunks[ax][R->xidx[ax]];
    tsr_kdesc d;
    desc_init(&d, TSR_KOP_REDUCE, a->fn, a->dtype, a->ndim, R->shape);
    d.i = axes;
    d.ni = (uint32_t)a->naxes;
    return add(L, a, R->ci, &d, &dep, 1, x->ndim, xshape);
}

static int64_t combine(lctx *L, rctx *R, const uint32_t *deps, uint32_t n, double scale) {
    tsr_kdesc d;
    desc_init(&d, TSR_KOP_COMBINE, R->a->fn, R->a->dtype, R->a->ndim, R->shape);
    d.f = &scale;
    d.nf = 1;
    return add(L, R->a, R->ci, &d, deps, n, 0, NULL);
}

/* Item j of tree level `level`: level 0 items are the partials; an item above combines up to
 * FAN_IN consecutive items of the level below (a lone child passes through unchanged). This is
 * the level-by-level grouping, built in post-order so partials are combined as soon as a group
 * is complete. */
static int64_t tree(lctx *L, rctx *R, int level, int64_t j, double root_scale) {
    if (level == 0) return partial(L, R, j);
    int64_t first = j * FAN_IN, last = TSR__MIN(first + FAN_IN, R->cnt[level - 1]);
    if (last - first == 1) return tree(L, R, level - 1, first, root_scale);
    uint32_t deps[FAN_IN];
    for (int64_t k = first; k < last; k++) {
        int64_t t = tree(L, R, level - 1, k, root_scale);
        if (t < 0) return t;
        deps[k - first] = (uint32_t)t;
    }
    return combine(L, R, deps, (uint32_t)(last - first), level == R->height ? root_scale : 1.0);
}

LOWERING(emit_reduce) {
    rctx R = {.a = a, .x = a->args[0], .ci = ci, .shape = shape};
    tsr_array *x = R.x;
    int reduced[TSR_MAX_NDIM] = {0};
    double count = 1;
    R.cnt[0] = 1;
    for (int k = 0; k < a->naxes; k++) {
        reduced[a->axes[k]] = 1;
        R.cnt[0] *= x->numchunks[a->axes[k]];
        count *= (double)x->shape[a->axes[k]];
    }
    for (int ax = 0, o = 0; ax < x->ndim; ax++) /* keepdims: a's grid has every axis */
        if (!reduced[ax]) R.xidx[ax] = idx[a->keepdims ? ax : o++];
    while (R.cnt[R.height] > 1) {
        R.cnt[R.height + 1] = (R.cnt[R.height] + FAN_IN - 1) / FAN_IN;
        R.height++;
    }
    int mean = tsr__reduce_scales(a->fn);
    /* NumPy's mean over nothing is NaN (0 * NaN keeps it so, without dividing by zero). */
    double scale = mean ? (count > 0 ? 1.0 / count : NAN) : 1.0;
    int64_t t = tree(L, &R, R.height, 0, scale);
    if (t < 0 || R.height > 0 || !mean) return t;
    uint32_t dep = (uint32_t)t; /* a lone partial of a mean still needs its scale */
    return combine(L, &R, &dep, 1, scale);
}

/* RECHUNK to a different grid: one ASSEMBLE per output chunk from the overlapping input chunks,
 * in row-major order. */
static int64_t emit_assemble(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                             const int64_t *shape) {
    tsr_array *x = a->args[0];
    int d_ = a->ndim;
    int64_t off[TSR_MAX_NDIM], sh[TSR_MAX_NDIM], lo[TSR_MAX_NDIM], hi[TSR_MAX_NDIM];
    int64_t cur[TSR_MAX_NDIM], nin = 1;
    int rc = box(L, a, idx, off, sh);
    if (rc < 0) return rc;
    for (int ax = 0; ax < d_; ax++) {
        const int64_t *o = offsets(L, x, ax);
        if (!o) return tsr__fail(L->c, -ENOMEM, "out of memory");
        lo[ax] = tsr__chunk_at(o, x->numchunks[ax], off[ax]);
        hi[ax] = sh[ax] > 0 ? tsr__chunk_at(o, x->numchunks[ax], off[ax] + sh[ax] - 1) : lo[ax];
        nin *= hi[ax] - lo[ax] + 1;
        cur[ax] = lo[ax];
    }
    uint32_t *deps = malloc((size_t)nin * sizeof *deps);
    int64_t *iv = malloc((size_t)(nin + 1) * (size_t)TSR__MAX(d_, 1) * sizeof *iv);
    int64_t t = 0;
    if (!deps || !iv) t = tsr__fail(L->c, -ENOMEM, "out of memory");
    for (int ax = 0; ax < d_ && t == 0; ax++) iv[ax] = off[ax];
    for (int64_t k = 0; k < nin && t == 0; k++) {
        int64_t xoff[TSR_MAX_NDIM], xsh[TSR_MAX_NDIM];
        rc = box(L, x, cur, xoff, xsh);
        if (rc == 0) rc = dep_of(L, x, ravel(x, cur), &deps[k]);
        if (rc < 0) t = rc;
        for (int ax = 0; ax < d_; ax++) iv[(k + 1) * d_ + ax] = xoff[ax];
        for (int ax = d_ - 1; ax >= 0; ax--) { /* next input, row-major */
            if (++cur[ax] <= hi[ax]) break;
            cur[ax] = lo[ax];
        }
    }
    if (t == 0) {
        tsr_kdesc d;
        desc_init(&d, TSR_KOP_ASSEMBLE, 0, a->dtype, d_, shape);
        d.i = iv;
        d.ni = (uint32_t)((nin + 1) * d_);
        t = add(L, a, ci, &d, deps, (uint32_t)nin, 0, NULL);
    }
    free(deps);
    free(iv);
    return t;
}

const int64_t *tsr__lower_offsets(lctx *L, const tsr_array *a, int ax) {
    const int64_t *o = offsets(L, a, ax);
    if (!o) tsr__fail(L->c, -ENOMEM, "out of memory");
    return o;
}

/* RECHUNK: to the operand's own grid it passes the operand's tasks through. */
LOWERING(emit_rechunk) {
    if (node_of(L, a)->same_grid) return get_chunk(L, a->args[0], ci);
    return emit_assemble(L, a, ci, idx, shape);
}

/* FROM_BUFFER: the chunk's elements travel in its descriptor, gathered from the array's C-order
 * copy into whole 64-bit words (kernels/kernels.h, DATA). */
LOWERING(emit_data) {
    int64_t off[TSR_MAX_NDIM], bshape[TSR_MAX_NDIM];
    (void)shape;
    int rc = box(L, a, idx, off, bshape);
    if (rc < 0) return rc;
    size_t es = tsr_dtype_size(a->dtype);
    int64_t nelem = 1;
    for (int ax = 0; ax < a->ndim; ax++) nelem *= bshape[ax];
    size_t nbytes = (size_t)nelem * es, words = (nbytes + 7) / 8;
    int64_t *iv = calloc(words ? words : 1, sizeof *iv);
    if (!iv) return tsr__fail(L->c, -ENOMEM, "out of memory");
    if (nelem > 0) {
        /* One run per index of the leading axes: the chunk's last axis is contiguous in both. */
        int d_ = a->ndim;
        int64_t run = d_ ? bshape[d_ - 1] : 1, cur[TSR_MAX_NDIM] = {0};
        char *dst = (char *)iv;
        for (;;) {
            int64_t src = 0;
            for (int ax = 0; ax < d_; ax++) src = src * a->shape[ax] + off[ax] + cur[ax];
            memcpy(dst, (const char *)a->data + (size_t)src * es, (size_t)run * es);
            dst += (size_t)run * es;
            int ax = d_ - 2;
            for (; ax >= 0; ax--) {
                if (++cur[ax] < bshape[ax]) break;
                cur[ax] = 0;
            }
            if (ax < 0) break;
        }
    }
    tsr_kdesc d;
    desc_init(&d, TSR_KOP_DATA, 0, a->dtype, a->ndim, bshape);
    d.i = iv;
    d.ni = (uint32_t)words;
    int64_t t = add(L, a, ci, &d, NULL, 0, 0, NULL);
    free(iv);
    return t;
}

/* ---- persisted arrays ------------------------------------------------------------------------ */

/* Does lowering take a's chunks from the job that holds them (tsr_persist)? Not on the retry
 * after a held chunk was lost (client/compute.c), which lowers every definition again. */
static int is_held(const lctx *L, const tsr_array *a) {
    return a->persisted && a->computed.task && !L->c->lower_no_held;
}

/* One HELD task per chunk: the worker takes the chunk of the earlier job as the task's input
 * (kernels/kernels.h, HELD); nothing of the array's definition is lowered. */
static int64_t emit_held(lctx *L, tsr_array *a, int64_t ci) {
    int64_t idx[TSR_MAX_NDIM], shape[TSR_MAX_NDIM];
    unravel(a, ci, idx);
    for (int ax = 0; ax < a->ndim; ax++) shape[ax] = a->chunks[ax][idx[ax]];
    tsr_kdesc d;
    desc_init(&d, TSR_KOP_HELD, 0, a->dtype, a->ndim, shape);
    int64_t iv[2] = {(int64_t)a->computed.job, (int64_t)a->computed.task[ci]};
    d.i = iv;
    d.ni = 2;
    d.s = a->computed.addr[ci];
    return add(L, a, ci, &d, NULL, 0, 0, NULL);
}

/* ---- the operations table ------------------------------------------------------------------- */

typedef int64_t (*lower_fn)(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                            const int64_t *shape);

static const struct aop_row {
    tsr_kop kop;
    tsr__dtype_rule dtype;
    lower_fn lower;
} aops[TSR__AOP_COUNT] = {
#define AOP_ROW(E, kop, nargs, dtype, lower)                                                       \
    [TSR_A_##E] = {TSR_KOP_##kop, TSR__DTYPE_##dtype, lower},
    TSR__AOP_MAP(AOP_ROW)
#undef AOP_ROW
};

tsr_kop tsr__aop_kop(tsr_aop aop) {
    return aops[aop].kop;
}

tsr_dtype tsr__aop_dtype(tsr_aop aop, tsr_dtype x, tsr_dtype y, tsr_dtype given) {
    switch (aops[aop].dtype) {
    case TSR__DTYPE_SAME:
        return x;
    case TSR__DTYPE_PROMOTE:
    case TSR__DTYPE_OP: /* the constructor applies the sub-operation's own rule (promote.c) */
        return tsr__promote(x, y);
    case TSR__DTYPE_BOOL:
        return TSR_BOOL;
    case TSR__DTYPE_GIVEN:
        break;
    }
    return given;
}

static int64_t emit(lctx *L, tsr_array *a, int64_t ci) {
    int64_t idx[TSR_MAX_NDIM], shape[TSR_MAX_NDIM];
    unravel(a, ci, idx);
    for (int ax = 0; ax < a->ndim; ax++) shape[ax] = a->chunks[ax][idx[ax]];
    if ((unsigned)a->aop >= TSR__AOP_COUNT)
        return tsr__fail(L->c, TSR_EINVALID, "%s: unknown operation", tsr_array_name(a));
    if (node_of(L, a)->root && a->aop != TSR_A_REDUCE) return tsr__fuse_emit(L, a, ci, idx, shape);
    return aops[a->aop].lower(L, a, ci, idx, shape);
}

static int64_t get_chunk(lctx *L, tsr_array *a, int64_t ci) {
    if (a->lower_tasks[ci] != NONE) return a->lower_tasks[ci];
    int64_t t = is_held(L, a) ? emit_held(L, a, ci) : emit(L, a, ci);
    if (t >= 0) a->lower_tasks[ci] = (uint32_t)t;
    return t;
}

/* ---- preparation: every reachable array gets this epoch's scratch ------------------------- */

static int same_grid(const tsr_array *a, const tsr_array *x) {
    for (int ax = 0; ax < a->ndim; ax++)
        if (a->numchunks[ax] != x->numchunks[ax] ||
            memcmp(a->chunks[ax], x->chunks[ax], (size_t)a->numchunks[ax] * sizeof(int64_t)))
            return 0;
    return 1;
}

static int prepare_one(lctx *L, tsr_array *a) {
    int64_t n = tsr__array_nchunks(a);
    if (!a->lower_tasks) {
        a->lower_tasks = malloc((size_t)(n + 1) * sizeof *a->lower_tasks);
        if (!a->lower_tasks) return tsr__fail(L->c, -ENOMEM, "out of memory");
    }
    for (int64_t k = 0; k < n; k++) a->lower_tasks[k] = NONE;
    if (TSR__GROW(L->nodes, L->nodes_cap, L->nnodes + 1) < 0)
        return tsr__fail(L->c, -ENOMEM, "out of memory");
    node *nd = &L->nodes[L->nnodes];
    memset(nd, 0, sizeof *nd);
    nd->a = a;
    nd->nchunks = n;
    nd->garray = -1;
    nd->same_grid = a->aop == TSR_A_RECHUNK && !is_held(L, a) && same_grid(a, a->args[0]);
    a->lower_tasks[n] = (uint32_t)L->nnodes++;
    a->lower_epoch = L->epoch;
    return 0;
}

/* Iterative post-order over the operands: nodes[] ends up in dependency order, and each node
 * knows its depth. */
static int prepare(lctx *L, tsr_array *root) {
    if (root->lower_epoch == L->epoch) return 0;
    struct frame {
        tsr_array *a;
        int next;
    } *stack = NULL;
    size_t n = 0, cap = 0;
    int rc = prepare_one(L, root);
    if (rc == 0 && TSR__GROW(stack, cap, 1) < 0) rc = tsr__fail(L->c, -ENOMEM, "out of memory");
    if (rc == 0) stack[n++] = (struct frame){root, 0};
    while (rc == 0 && n > 0) {
        struct frame *f = &stack[n - 1];
        /* A held array's operands are not lowered: its chunks exist. */
        int nargs = is_held(L, f->a) ? 0 : f->a->nargs;
        if (f->next < nargs) {
            tsr_array *x = f->a->args[f->next++];
            if (x->lower_epoch == L->epoch) continue;
            rc = prepare_one(L, x);
            if (rc == 0 && TSR__GROW(stack, cap, n + 1) < 0)
                rc = tsr__fail(L->c, -ENOMEM, "out of memory");
            if (rc == 0) stack[n++] = (struct frame){x, 0};
            continue;
        }
        int depth = 0;
        for (int k = 0; k < nargs; k++) depth = TSR__MAX(depth, node_of(L, f->a->args[k])->depth);
        node_of(L, f->a)->depth = depth + 1;
        if (TSR__GROW(L->order, L->order_cap, L->norder + 1) < 0)
            rc = tsr__fail(L->c, -ENOMEM, "out of memory");
        else
            L->order[L->norder++] = f->a->lower_tasks[tsr__array_nchunks(f->a)];
        n--;
    }
    free(stack);
    return rc;
}

static void lctx_free(lctx *L) {
    for (size_t k = 0; k < L->nnodes; k++) {
        for (int ax = 0; ax < TSR_MAX_NDIM; ax++) free(L->nodes[k].off[ax]);
        free(L->nodes[k].opname);
        free(L->nodes[k].packed[0]);
        free(L->nodes[k].packed[1]);
    }
    free(L->nodes);
    free(L->order);
    free(L->origin);
}

static int lower(lctx *L, tsr_array *const *arrays, size_t n) {
    tsr_client *c = L->c;
    for (size_t k = 0; k < n; k++) {
        if (!arrays[k]) return tsr__fail(c, TSR_EINVALID, "array %zu is NULL", k);
        if (arrays[k]->client != c)
            return tsr__fail(c, TSR_EINVALID, "%s belongs to a different client",
                             tsr_array_name(arrays[k]));
    }
    L->epoch = tsr__client_next_epoch(c);
    int depth = 0;
    for (size_t k = 0; k < n; k++) {
        int rc = prepare(L, arrays[k]);
        if (rc < 0) return rc;
        depth = TSR__MAX(depth, node_of(L, arrays[k])->depth);
    }
    if (L->fuse) {
        int rc = tsr__fuse_plan(L, arrays, n);
        if (rc < 0) return rc;
    }
    if (depth > MAX_DFS_DEPTH) {
        /* Array by array in dependency order: every operand chunk exists before it is asked
         * for, so get_chunk recurses at most one level (two through a pass-through rechunk). */
        for (size_t k = 0; k < L->norder; k++)
            for (int64_t ci = 0; ci < L->nodes[L->order[k]].nchunks; ci++) {
                /* Fused arrays are made inside their consumer's tasks; with fusion a random
                 * or constant source may be made inside groups only, so it is emitted on demand
                 * (a leaf: one level of recursion). */
                if (L->nodes[L->order[k]].fused) break;
                if (L->fuse && (L->nodes[L->order[k]].a->aop == TSR_A_RANDOM ||
                                L->nodes[L->order[k]].a->aop == TSR_A_FULL))
                    break;
                int64_t t = get_chunk(L, L->nodes[L->order[k]].a, ci);
                if (t < 0) return (int)t;
            }
    }
    /* Deepest arrays first: when one requested array is made from another (A and B = A + 1
     * both outputs), B's chunks pull in A's just before their use, A0 B0 A1 B1 ..., instead of
     * every chunk of A coming before the first of B, which would make the scheduler's
     * depth-first order hold all of A at once. Stable, so equal depths keep the caller's order. */
    size_t *ord = malloc((n ? n : 1) * sizeof *ord);
    if (!ord) return tsr__fail(c, -ENOMEM, "out of memory");
    for (size_t k = 0; k < n; k++) {
        size_t i = k;
        int dk = node_of(L, arrays[k])->depth;
        while (i > 0 && node_of(L, arrays[ord[i - 1]])->depth < dk) {
            ord[i] = ord[i - 1];
            i--;
        }
        ord[i] = k;
    }
    for (size_t o = 0; o < n; o++) {
        tsr_array *a = arrays[ord[o]];
        int64_t nc = tsr__array_nchunks(a);
        for (int64_t ci = 0; ci < nc; ci++) {
            int64_t t = get_chunk(L, a, ci);
            if (t < 0) {
                free(ord);
                return (int)t;
            }
        }
    }
    free(ord);
    for (size_t k = 0; k < n; k++) {
        int64_t nc = tsr__array_nchunks(arrays[k]);
        for (int64_t ci = 0; ci < nc; ci++) {
            int rc = tsr__graph_add_output(L->g, arrays[k]->lower_tasks[ci]);
            if (rc < 0) return tsr__fail(c, rc, "out of memory");
        }
    }
    return 0;
}

int tsr__lower(tsr_client *c, tsr_array *const *arrays, size_t n, tsr_graph *g, int fuse) {
    if (!c || !g || (n > 0 && !arrays))
        return tsr__fail(c, TSR_EINVALID, "lower: invalid arguments");
    lctx L = {.c = c, .g = g, .fuse = fuse};
    int rc = lower(&L, arrays, n);
    lctx_free(&L);
    return rc;
}

/* ---- task counts and Graphviz -----------------------------------------------------------------
 */

static tsr_client *client_of(tsr_array *const *arrays, size_t n) {
    return n > 0 && arrays && arrays[0] ? arrays[0]->client : NULL;
}

int64_t tsr_task_count(tsr_array *const *arrays, size_t n) {
    if (n == 0) return 0;
    tsr_client *c = client_of(arrays, n);
    if (!c) return tsr__fail(NULL, TSR_EINVALID, "task_count: array is NULL");
    tsr_graph g;
    tsr__graph_init(&g);
    int rc = tsr__lower(c, arrays, n, &g, !c->no_fuse);
    int64_t count = rc < 0 ? rc : (int64_t)g.ntasks;
    tsr__graph_free(&g);
    return count;
}

/* Writes s as a dot string body (quotes and backslashes escaped). */
static void dot_str(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
}

int tsr_write_dot(tsr_array *const *arrays, size_t n, FILE *f) {
    tsr_client *c = client_of(arrays, n);
    if (!f || (n > 0 && !c)) return tsr__fail(c, TSR_EINVALID, "write_dot: invalid arguments");
    tsr_graph g;
    tsr__graph_init(&g);
    lctx L = {.c = c, .g = &g, .fuse = !c->no_fuse};
    int rc = 0;
    if (n > 0) {
        /* Ask add() to remember each task's array and chunk for the labels. */
        rc = TSR__GROW(L.origin, L.origin_cap, 64) < 0 ? tsr__fail(c, -ENOMEM, "out of memory")
                                                       : lower(&L, arrays, n);
    }
    if (rc == 0) {
        fprintf(f, "digraph tessera {\n  node [shape=box, fontname=\"monospace\"];\n");
        for (size_t t = 0; t < g.ntasks; t++) {
            const tsr_gtask *gt = &g.tasks[t];
            task_origin *o = &L.origin[t];
            int64_t idx[TSR_MAX_NDIM];
            unravel(o->a, o->ci, idx);
            fprintf(f, "  t%zu [label=\"", t);
            dot_str(f, tsr_array_name(o->a));
            const char *fname = node_of(&L, o->a)->opname;
            fprintf(f, "\\n");
            if (fname && gt->d.kop == TSR_KOP_FUSED)
                dot_str(f, fname);
            else
                fprintf(f, "%s", tsr__kop_name(gt->d.kop));
            fprintf(f, " (");
            for (int ax = 0; ax < o->a->ndim; ax++)
                fprintf(f, ax ? ",%lld" : "%lld", (long long)idx[ax]);
            fprintf(f, ")\"];\n");
            for (uint32_t k = 0; k < gt->ndeps; k++)
                fprintf(f, "  t%u -> t%zu;\n", g.deps[gt->deps_off + k], t);
        }
        fprintf(f, "}\n");
        if (ferror(f)) rc = tsr__fail(c, -EIO, "write_dot: write error");
    }
    lctx_free(&L);
    tsr__graph_free(&g);
    return rc;
}
