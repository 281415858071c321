/* Issue 13's linear algebra at the array level: tensordot and N-d matmul (both CONTRACT arrays,
 * lowered by lower.c's emit_contract) and the normal and eye sources. Shape, dtype and chunk
 * inference and argument checks only: every user mistake is a negative code and a message that
 * names the arrays, never a crash; nothing here builds tasks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"

static const char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, size, "(");
    for (int ax = 0; ax < ndim && n < size; ax++)
        n += (size_t)snprintf(buf + n, size - n, ax ? ",%lld" : "%lld", (long long)shape[ax]);
    if (n < size) snprintf(buf + n, size - n, ndim == 1 ? ",)" : ")");
    return buf;
}

/* A CONTRACT array of A and B (operand roles as in tsr_array.role, output shape oshape[ndim]);
 * checks dtypes and paired extents, rechunks B to A where they meet. */
static int make_contract(const char *opname, tsr_array *A, tsr_array *B, int nbatch, int nc,
                         const int8_t *roleA, const int8_t *roleB, int ndim, const int64_t *oshape,
                         tsr_array **out) {
    tsr_client *c = A->client;
    tsr_dtype dt = tsr__promote(A->dtype, B->dtype); /* numpy.result_type */
    /* B takes A's chunks on every contracted axis and every batch axis of equal extent. */
    int64_t *sizes[TSR_MAX_NDIM], n[TSR_MAX_NDIM];
    int aax_of_out[TSR_MAX_NDIM], bax_of_out[TSR_MAX_NDIM], aax_of_pair[TSR_MAX_NDIM];
    for (int r = 0; r < TSR_MAX_NDIM; r++) aax_of_out[r] = bax_of_out[r] = -1;
    for (int ax = 0; ax < A->ndim; ax++) {
        if (roleA[ax] >= 0)
            aax_of_out[roleA[ax]] = ax;
        else
            aax_of_pair[-1 - roleA[ax]] = ax;
    }
    for (int ax = 0; ax < B->ndim; ax++) {
        int r = roleB[ax], src = -1;
        if (r < 0)
            src = aax_of_pair[-1 - r];
        else if (r < nbatch && aax_of_out[r] >= 0 && A->shape[aax_of_out[r]] == B->shape[ax])
            src = aax_of_out[r];
        if (r >= 0) bax_of_out[r] = ax;
        sizes[ax] = src >= 0 ? A->chunks[src] : B->chunks[ax];
        n[ax] = src >= 0 ? A->numchunks[src] : B->numchunks[ax];
    }
    tsr_array *owned = NULL;
    int rc = tsr__array_align(&B, sizes, n, &owned);
    if (rc < 0) return rc;
    /* The output's chunks are those of the operand axis it comes from (A's where both have it
     * at full extent). */
    int64_t *osizes[TSR_MAX_NDIM], on[TSR_MAX_NDIM];
    for (int r = 0; r < ndim; r++) {
        int ax = aax_of_out[r];
        tsr_array *src = A;
        if (ax < 0 || A->shape[ax] != oshape[r]) {
            ax = bax_of_out[r];
            src = B;
        }
        osizes[r] = src->chunks[ax];
        on[r] = src->numchunks[ax];
    }
    tsr_array *m = tsr__array_new(c, opname, dt, ndim, oshape);
    if (!m) {
        tsr__array_unref(owned);
        return tsr__fail(c, -ENOMEM, "out of memory");
    }
    m->aop = TSR_A_CONTRACT;
    m->nbatch = nbatch;
    m->ncontract = nc;
    memcpy(m->role[0], roleA, (size_t)A->ndim);
    memcpy(m->role[1], roleB, (size_t)B->ndim);
    rc = tsr__array_add_arg(m, A);
    if (rc == 0) rc = tsr__array_add_arg(m, B);
    tsr__array_unref(owned); /* m holds its own reference */
    if (rc == 0) rc = tsr__array_set_chunk_sizes(m, osizes, on);
    if (rc < 0) return tsr__array_discard(m, rc);
    if (!tsr__array_named(m)) return -ENOMEM;
    *out = m;
    return 0;
}

int tsr_tensordot(tsr_array *a, tsr_array *b, const int *axes_a, const int *axes_b, int naxes,
                  tsr_array **out) {
    if (!a || !b)
        return tsr__fail(a ? a->client : NULL, TSR_EINVALID, "tensordot: operand is NULL");
    tsr_client *c = a->client;
    if (!out) return tsr__fail(c, TSR_EINVALID, "tensordot: out is NULL");
    *out = NULL;
    if (a->client != b->client)
        return tsr__fail(c, TSR_EINVALID, "%s and %s belong to different clients",
                         tsr_array_name(a), tsr_array_name(b));
    const char *an = tsr_array_name(a), *bn = tsr_array_name(b);
    if (naxes < 0 || (!axes_a) != (!axes_b))
        return tsr__fail(c, TSR_EINVALID,
                         "tensordot of %s and %s: give both axis lists or neither, and naxes >= 0",
                         an, bn);
    if (naxes > a->ndim || naxes > b->ndim)
        return tsr__fail(c, TSR_ESHAPE,
                         "tensordot of %s and %s: %d axes to contract, but they have %d and %d", an,
                         bn, naxes, a->ndim, b->ndim);
    int8_t role[2][TSR_MAX_NDIM];
    memset(role, 0x7f, sizeof role);
    tsr_array *op[2] = {a, b};
    for (int j = 0; j < naxes; j++) {
        int ax[2] = {axes_a ? axes_a[j] : a->ndim - naxes + j, axes_b ? axes_b[j] : j};
        for (int k = 0; k < 2; k++) {
            int nd = op[k]->ndim, x = ax[k] < 0 ? ax[k] + nd : ax[k];
            if (x < 0 || x >= nd)
                return tsr__fail(c, TSR_ESHAPE,
                                 "tensordot of %s and %s: axis %d is out of range for %s, which "
                                 "has %d axes",
                                 an, bn, ax[k], tsr_array_name(op[k]), nd);
            if (role[k][x] != 0x7f)
                return tsr__fail(c, TSR_ESHAPE, "tensordot of %s and %s: axis %d of %s is repeated",
                                 an, bn, ax[k], tsr_array_name(op[k]));
            role[k][x] = (int8_t)(-1 - j);
            ax[k] = x;
        }
        if (a->shape[ax[0]] != b->shape[ax[1]])
            return tsr__fail(
                c, TSR_ESHAPE, "tensordot needs %s.shape[%d] == %s.shape[%d], got %lld and %lld",
                an, ax[0], bn, ax[1], (long long)a->shape[ax[0]], (long long)b->shape[ax[1]]);
    }
    int ndim = a->ndim + b->ndim - 2 * naxes;
    if (ndim > TSR_MAX_NDIM)
        return tsr__fail(c, TSR_ESHAPE,
                         "tensordot of %s and %s: the result would have %d axes; at most %d are "
                         "supported",
                         an, bn, ndim, TSR_MAX_NDIM);
    int64_t oshape[TSR_MAX_NDIM];
    int r = 0;
    for (int k = 0; k < 2; k++)
        for (int ax = 0; ax < op[k]->ndim; ax++)
            if (role[k][ax] == 0x7f) {
                role[k][ax] = (int8_t)r;
                oshape[r++] = op[k]->shape[ax];
            }
    return make_contract("tensordot", a, b, 0, naxes, role[0], role[1], ndim, oshape, out);
}

int tsr__matmul_nd(tsr_array *a, tsr_array *b, tsr_array **out) {
    tsr_client *c = a->client;
    char sa[256], sb[256];
    const char *an = tsr_array_name(a), *bn = tsr_array_name(b);
    if (a->ndim == 0 || b->ndim == 0)
        return tsr__fail(c, TSR_ESHAPE, "matmul of %s and %s: a 0-d operand (%s has shape ())", an,
                         bn, a->ndim == 0 ? an : bn);
    int ka = a->ndim - 1, kb = b->ndim == 1 ? 0 : b->ndim - 2;
    if (a->shape[ka] != b->shape[kb])
        return tsr__fail(c, TSR_ESHAPE,
                         "matmul needs %s.shape[%d] == %s.shape[%d], got %lld and %lld", an, ka, bn,
                         kb, (long long)a->shape[ka], (long long)b->shape[kb]);
    int ba = a->ndim >= 2 ? a->ndim - 2 : 0, bb = b->ndim >= 2 ? b->ndim - 2 : 0;
    int nbatch = ba > bb ? ba : bb;
    int ndim = nbatch + (a->ndim >= 2) + (b->ndim >= 2);
    int64_t oshape[TSR_MAX_NDIM];
    int8_t role[2][TSR_MAX_NDIM];
    for (int r = 0; r < nbatch; r++) {
        int xa = r - (nbatch - ba), xb = r - (nbatch - bb);
        int64_t ea = xa >= 0 ? a->shape[xa] : 1, eb = xb >= 0 ? b->shape[xb] : 1;
        if (ea != eb && ea != 1 && eb != 1)
            return tsr__fail(
                c, TSR_ESHAPE,
                "matmul of %s and %s: batch shapes do not broadcast (shapes %s and %s)", an, bn,
                shape_str(sa, sizeof sa, a->ndim, a->shape),
                shape_str(sb, sizeof sb, b->ndim, b->shape));
        oshape[r] = ea == 1 ? eb : ea;
        if (xa >= 0) role[0][xa] = (int8_t)r;
        if (xb >= 0) role[1][xb] = (int8_t)r;
    }
    int r = nbatch;
    if (a->ndim >= 2) {
        role[0][a->ndim - 2] = (int8_t)r;
        oshape[r++] = a->shape[a->ndim - 2];
    }
    role[0][ka] = -1;
    role[1][kb] = -1;
    if (b->ndim >= 2) {
        role[1][b->ndim - 1] = (int8_t)r;
        oshape[r++] = b->shape[b->ndim - 1];
    }
    return make_contract("matmul", a, b, nbatch, 1, role[0], role[1], ndim, oshape, out);
}

/* ---- sources -------------------------------------------------------------------------------- */

static int float_only(tsr_client *c, const char *what, tsr_dtype dtype) {
    if (!c) return tsr__fail(NULL, TSR_EINVALID, "%s: client is NULL", what);
    if (dtype == TSR_FLOAT64 || dtype == TSR_FLOAT32) return 0;
    const char *name = tsr_dtype_name(dtype);
    return tsr__fail(c, TSR_EINVALID, "%s makes float64 or float32 arrays only, not %s", what,
                     name ? name : "an unknown dtype");
}

int tsr_normal(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks,
               tsr_dtype dtype, uint64_t seed, double loc, double scale, tsr_array **out) {
    int rc = float_only(c, "normal", dtype);
    if (rc == 0) rc = tsr__array_source(c, "normal", ndim, shape, chunks, dtype, out);
    if (rc < 0) return rc;
    (*out)->aop = TSR_A_NORMAL;
    (*out)->seed = seed;
    (*out)->value = loc;
    (*out)->step = scale;
    return 0;
}

int tsr_eye(tsr_client *c, int64_t n, int64_t m, int64_t k, const int64_t *chunks, tsr_dtype dtype,
            tsr_array **out) {
    int rc = float_only(c, "eye", dtype);
    if (rc < 0) return rc;
    if (n < 0 || m < 0)
        return tsr__fail(c, TSR_ESHAPE, "eye: n and m must be >= 0, got %lld and %lld",
                         (long long)n, (long long)m);
    int64_t shape[2] = {n, m};
    rc = tsr__array_source(c, "eye", 2, shape, chunks, dtype, out);
    if (rc < 0) return rc;
    (*out)->aop = TSR_A_EYE;
    (*out)->diag = k;
    return 0;
}
