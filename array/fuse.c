/* Fusion (issue 13): a chain of elementwise operations on the same chunks, and a chain feeding a
 * reduction's partials, lowered to one FUSED task per chunk (kernels/kernels.h gives the program's
 * layout, kernels/fused.c runs it): one pass over memory, no intermediate chunks.
 *
 * What fuses is decided from the graph alone, before any task is emitted (tsr__fuse_plan), so the
 * graph, and with it every result bit, never depends on placement or timing:
 *   - an array is "elementwise" when it is a UNARY, BINARY, BINARY_SCALAR or ASTYPE of float
 *     operands giving a float;
 *   - an elementwise array X is fused into its consumer C when C is the only array of this
 *     lowering that uses X (C may use it twice: x * x), X is not requested (an output, or a
 *     stored array), C is elementwise with X's shape and chunk grid (a broadcast operand is not
 *     fused: it stays its own tasks and the program broadcasts its chunks), or C is a float
 *     reduction of X (the chain becomes the prologue of C's partials), and the group stays
 *     within TSR__FUSED_MAX_STEPS steps (operands are taken in argument order until it is full);
 *   - an array with fused operands is a group's root: its tasks (or its partials) run the group's
 *     program, whose steps are the members in post-order (operands first, in argument order).
 * Every step is the same per-element expression as the unfused kernel, rounded to the step's
 * dtype, so a fused graph gives the unfused graph's bits. */
#include <stdio.h>
#include <string.h>

#include "array/lower_priv.h"

/* Operation names in the graph are at most this long (the scheduler keeps 63 characters). */
#define NAME_MAX_LEN 63

static int is_float(tsr_dtype t) {
    return t == TSR_FLOAT64 || t == TSR_FLOAT32;
}

/* Whether a's own operation can be a step of a fused program. */
static int elementwise(const tsr_array *a) {
    int nargs;
    /* A persisted array's chunks are taken from its job (HELD tasks), never made again. */
    if (a->persisted && a->computed.task) return 0;
    switch (a->aop) {
    case TSR_A_UNARY:
    case TSR_A_BINARY_SCALAR:
    case TSR_A_ASTYPE:
        nargs = 1;
        break;
    case TSR_A_BINARY:
        nargs = 2;
        break;
    default:
        return 0;
    }
    if (a->nargs != nargs || !is_float(a->dtype)) return 0;
    for (int k = 0; k < a->nargs; k++)
        if (!is_float(a->args[k]->dtype)) return 0;
    if (a->aop == TSR_A_ASTYPE) return 1;
    int kop = a->aop == TSR_A_UNARY ? TSR_KOP_UNARY : TSR_KOP_BINARY;
    return (tsr__kop_fn_dtypes(kop, a->fn) & TSR__DT(a->dtype)) != 0;
}

/* Whether a can take fused operands: elementwise, or a float reduction keeping its dtype. */
static int consumer(const tsr_array *a) {
    if (a->persisted && a->computed.task) return 0;
    if (elementwise(a)) return 1;
    /* keepdims reductions keep their own partials (the fused partial's output has the
     * reduced axes dropped). */
    return a->aop == TSR_A_REDUCE && a->nargs == 1 && is_float(a->dtype) &&
           a->args[0]->dtype == a->dtype && !a->keepdims;
}

static int same_chunks(const tsr_array *a, const tsr_array *x) {
    if (a->ndim != x->ndim) return 0;
    for (int ax = 0; ax < a->ndim; ax++)
        if (a->shape[ax] != x->shape[ax] || a->numchunks[ax] != x->numchunks[ax] ||
            memcmp(a->chunks[ax], x->chunks[ax], (size_t)a->numchunks[ax] * sizeof(int64_t)))
            return 0;
    return 1;
}

/* Whether source x is made inside the programs of a group whose domain array is dom: a random or
 * constant float array with the domain's chunks. Such sources are cheap (RECOMPUTE): every group
 * that uses one makes its values in place, block by block, and it has tasks of its own only where
 * something outside a group uses it. */
static int inlined_source(const tsr_array *x, const tsr_array *dom) {
    return (x->aop == TSR_A_RANDOM || x->aop == TSR_A_FULL) && is_float(x->dtype) &&
           same_chunks(x, dom);
}

/* Whether args[k] of a already appeared among args[0..k) (a twice-used operand counts once). */
static int seen_before(const tsr_array *a, int k) {
    for (int j = 0; j < k; j++)
        if (a->args[j] == a->args[k]) return 1;
    return 0;
}

/* Appends the members of a's group below a, then a's own name, in step order. */
static void name_walk(lctx *L, const tsr_array *a, char *buf, size_t cap, size_t *len) {
    for (int k = 0; k < a->nargs; k++)
        if (!seen_before(a, k) && tsr__lower_node(L, a->args[k])->fused)
            name_walk(L, a->args[k], buf, cap, len);
    const char *op = tsr_array_op(a);
    int w = snprintf(buf + *len, cap - *len, "%s%s", *len > 6 ? "," : "", op ? op : "?");
    if (w > 0) *len = TSR__MIN(cap - 1, *len + (size_t)w);
}

static int name_group(lctx *L, node *n) {
    char buf[512] = "fused(";
    size_t len = 6;
    name_walk(L, n->a, buf, sizeof buf - 1, &len);
    if (len > NAME_MAX_LEN - 1) { /* "fused(a,b,c,...)" within the limit */
        len = NAME_MAX_LEN - 4;
        memcpy(buf + len, "...", 3);
        len += 3;
    }
    buf[len++] = ')';
    buf[len] = '\0';
    n->opname = strdup(buf);
    return n->opname ? 0 : tsr__fail(L->c, -ENOMEM, "out of memory");
}

int tsr__fuse_plan(lctx *L, tsr_array *const *outputs, size_t n) {
    for (size_t k = 0; k < L->nnodes; k++) {
        tsr_array *a = L->nodes[k].a;
        for (int j = 0; j < a->nargs; j++)
            if (!seen_before(a, j)) tsr__lower_node(L, a->args[j])->uses++;
    }
    for (size_t k = 0; k < n; k++) tsr__lower_node(L, outputs[k])->output = 1;
    /* Operands first: a member's group is complete before its consumer decides. */
    for (size_t k = 0; k < L->norder; k++) {
        node *c = &L->nodes[L->order[k]];
        tsr_array *a = c->a;
        c->steps = elementwise(a) ? 1 : 0;
        if (!consumer(a)) continue;
        const tsr_array *dom = a->aop == TSR_A_REDUCE ? a->args[0] : a;
        for (int j = 0; j < a->nargs; j++) {
            tsr_array *x = a->args[j];
            node *m = tsr__lower_node(L, x);
            if (seen_before(a, j)) continue;
            if (inlined_source(x, dom) && c->steps < TSR__FUSED_MAX_STEPS) {
                c->steps++;
                c->root = 1;
                continue;
            }
            if (!elementwise(x) || m->uses != 1 || m->output) continue;
            if (a->aop != TSR_A_REDUCE && !same_chunks(a, x)) continue;
            if (c->steps + m->steps > TSR__FUSED_MAX_STEPS) continue;
            m->fused = 1;
            m->root = 0;
            c->steps += m->steps;
            c->root = 1;
        }
    }
    for (size_t k = 0; k < L->nnodes; k++) {
        node *c = &L->nodes[k];
        if (c->root && !c->fused) {
            int rc = name_group(L, c);
            if (rc < 0) return rc;
        }
    }
    return 0;
}

/* ---- emission ------------------------------------------------------------------------------ */

#define MAX_INPUTS (2 * TSR__FUSED_MAX_STEPS)

/* One program being built: the domain (its chunk's grid index), the steps, the scalars, the
 * inputs (distinct tasks, in order of first use) and which member made which step. */
typedef struct fbuild {
    lctx *L;
    int dn;
    const int64_t *didx;
    const tsr_array *dom; /* the domain array (the group's top member, or an inlined source) */
    int64_t iv[TSR__FS_STEPS_AT(TSR_MAX_NDIM) + TSR__FS_STEP_INTS * TSR__FUSED_MAX_STEPS + 1 +
               TSR_MAX_NDIM + 2 * TSR_MAX_NDIM * TSR__FUSED_MAX_STEPS];
    int64_t boxes[2 * TSR_MAX_NDIM * TSR__FUSED_MAX_STEPS]; /* random steps' [gshape, offset] */
    int nboxes;
    double fv[TSR__FUSED_MAX_STEPS];
    int nsteps, nf;
    uint32_t deps[MAX_INPUTS];
    uint32_t ndeps;
    const tsr_array *made[TSR__FUSED_MAX_STEPS];
} fbuild;

static int64_t ravel(const tsr_array *a, const int64_t *idx) {
    int64_t ci = 0;
    for (int ax = 0; ax < a->ndim; ax++) ci = ci * a->numchunks[ax] + idx[ax];
    return ci;
}

/* The operand reference of x for a step of a member: an earlier step when x is a member,
 * else input (-1 - k) for x's chunk under the domain chunk (the chunk emit_binary would take:
 * the same grid index, 0 on axes where x has a single chunk). */
static int64_t operand(fbuild *B, tsr_array *x, int64_t *ref);

static int64_t build(fbuild *B, tsr_array *a) {
    int64_t refs[2] = {0, 0};
    for (int k = 0; k < a->nargs && k < 2; k++) {
        int64_t rc = operand(B, a->args[k], &refs[k]);
        if (rc < 0) return rc;
    }
    if (B->nsteps >= TSR__FUSED_MAX_STEPS)
        return tsr__fail(B->L->c, TSR_EINVALID, "%s: fused program too long", tsr_array_name(a));
    int s = B->nsteps++;
    int64_t *q = B->iv + TSR__FS_STEPS_AT(B->dn) + (size_t)s * TSR__FS_STEP_INTS;
    q[1] = a->fn;
    q[2] = a->dtype;
    q[3] = refs[0];
    q[4] = refs[1];
    switch (a->aop) {
    case TSR_A_UNARY:
        q[0] = TSR__FS_UNARY;
        q[4] = 0;
        break;
    case TSR_A_BINARY:
        q[0] = TSR__FS_BINARY;
        break;
    case TSR_A_BINARY_SCALAR:
        q[0] = a->scalar_first ? TSR__FS_SCALAR_L : TSR__FS_SCALAR_R;
        B->fv[B->nf] = a->value;
        q[4] = B->nf++;
        break;
    default: /* TSR_A_ASTYPE */
        q[0] = TSR__FS_ASTYPE;
        q[1] = 0;
        q[4] = 0;
        break;
    }
    B->made[s] = a;
    return s;
}

/* A step that makes source x's values in place (kernels.h: TSR__FS_RANDOM, TSR__FS_FILL). */
static int64_t source_step(fbuild *B, tsr_array *x) {
    for (int s = 0; s < B->nsteps; s++)
        if (B->made[s] == x) return s;
    if (B->nsteps >= TSR__FUSED_MAX_STEPS)
        return tsr__fail(B->L->c, TSR_EINVALID, "%s: fused program too long", tsr_array_name(x));
    int s = B->nsteps++;
    int64_t *q = B->iv + TSR__FS_STEPS_AT(B->dn) + (size_t)s * TSR__FS_STEP_INTS;
    q[1] = 0;
    q[2] = x->dtype;
    if (x->aop == TSR_A_RANDOM) {
        q[0] = TSR__FS_RANDOM;
        memcpy(&q[3], &x->seed, sizeof x->seed); /* the seed's uint64 bits */
        q[4] = B->nboxes;
        for (int ax = 0; ax < x->ndim; ax++) {
            int64_t off = 0;
            for (int64_t k = 0; k < B->didx[ax]; k++) off += x->chunks[ax][k];
            B->boxes[B->nboxes + ax] = x->shape[ax];
            B->boxes[B->nboxes + x->ndim + ax] = off;
        }
        B->nboxes += 2 * x->ndim;
    } else {
        q[0] = TSR__FS_FILL;
        q[3] = 0;
        B->fv[B->nf] = x->value;
        q[4] = B->nf++;
    }
    B->made[s] = x;
    return s;
}

static int64_t operand(fbuild *B, tsr_array *x, int64_t *ref) {
    if (inlined_source(x, B->dom)) {
        int64_t s = source_step(B, x);
        if (s < 0) return s;
        *ref = s;
        return 0;
    }
    if (tsr__lower_node(B->L, x)->fused) {
        for (int s = 0; s < B->nsteps; s++)
            if (B->made[s] == x) { /* a member its consumer uses twice */
                *ref = s;
                return 0;
            }
        int64_t s = build(B, x);
        if (s < 0) return s;
        *ref = s;
        return 0;
    }
    int64_t xidx[TSR_MAX_NDIM];
    int o = B->dn - x->ndim;
    for (int ax = 0; ax < x->ndim; ax++) xidx[ax] = x->numchunks[ax] == 1 ? 0 : B->didx[ax + o];
    uint32_t t;
    int rc = tsr__lower_dep(B->L, x, ravel(x, xidx), &t);
    if (rc < 0) return rc;
    uint32_t k = 0;
    while (k < B->ndeps && B->deps[k] != t) k++;
    if (k == B->ndeps) {
        if (B->ndeps == MAX_INPUTS)
            return tsr__fail(B->L->c, TSR_EINVALID, "%s: fused program has too many inputs",
                             tsr_array_name(x));
        B->deps[B->ndeps++] = t;
    }
    *ref = -1 - (int64_t)k;
    return 0;
}

/* Builds the program of domain array x's chunk didx (the group's top member is x) and adds its
 * task to array a's chunk ci: fn 0 writes the chunk, 1 + r makes reduction r's partial. */
static int64_t emit_program(lctx *L, tsr_array *a, int64_t ci, tsr_array *x, const int64_t *didx,
                            int fn, const int64_t *shape) {
    fbuild B;
    memset(&B, 0, sizeof B);
    B.L = L;
    B.dn = x->ndim;
    B.didx = didx;
    B.dom = x;
    int64_t dom[TSR_MAX_NDIM];
    for (int ax = 0; ax < x->ndim; ax++) dom[ax] = x->chunks[ax][didx[ax]];
    int64_t s = inlined_source(x, x) ? source_step(&B, x) : build(&B, x);
    if (s < 0) return s;
    B.iv[0] = B.nsteps;
    B.iv[1] = B.dn;
    for (int ax = 0; ax < B.dn; ax++) B.iv[2 + ax] = dom[ax];
    uint32_t ni = (uint32_t)(TSR__FS_STEPS_AT(B.dn) + B.nsteps * TSR__FS_STEP_INTS);
    B.iv[ni++] = fn > 0 ? a->naxes : 0;
    if (fn > 0)
        for (int k = 0; k < a->naxes; k++) B.iv[ni++] = a->axes[k];
    for (int k = 0; k < B.nboxes; k++) B.iv[ni++] = B.boxes[k];
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = TSR_KOP_FUSED;
    d.fn = (uint8_t)fn;
    d.dtype = (uint8_t)a->dtype;
    d.ndim = (uint8_t)a->ndim;
    for (int ax = 0; ax < a->ndim; ax++) d.shape[ax] = shape[ax];
    d.i = B.iv;
    d.ni = ni;
    d.f = B.nf ? B.fv : NULL;
    d.nf = (uint32_t)B.nf;
    /* One operation per element per step, and one per element for a reduction's fold. */
    double per = tsr__kop_flops(TSR_KOP_FUSED, B.dn, dom, (int)B.ndeps, B.dn, dom);
    double flops = per * (B.nsteps + (fn > 0));
    return tsr__lower_add_flops(L, a, ci, &d, B.deps, B.ndeps, flops);
}

int64_t tsr__fuse_emit(lctx *L, tsr_array *a, int64_t ci, const int64_t *idx,
                       const int64_t *shape) {
    return emit_program(L, a, ci, a, idx, 0, shape);
}

int64_t tsr__fuse_partial(lctx *L, tsr_array *a, int64_t ci, const int64_t *xidx,
                          const int64_t *shape) {
    return emit_program(L, a, ci, a->args[0], xidx, 1 + a->fn, shape);
}
