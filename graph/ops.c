/* The operations table expanded into data: family rows, sub-operation names both ways, and the
 * one cost model. Pure functions of their arguments; the rows themselves live in graph/ops.h. */
#include <string.h>

#include "graph/ops.h"

/* The public enums (tessera.h) must number their values as the table orders its rows. */
#define UNARY_IDX(E, ...) UNARY_IDX_##E,
#define BINARY_IDX(E, ...) BINARY_IDX_##E,
#define REDUCE_IDX(E, ...) REDUCE_IDX_##E,
enum { TSR__UNARY_MAP(UNARY_IDX) };
enum { TSR__BINARY_MAP(BINARY_IDX) };
enum { TSR__REDUCE_MAP(REDUCE_IDX) };
#define UNARY_CHECK(E, ...) _Static_assert((int)TSR_##E == UNARY_IDX_##E, "tsr_unary_op order");
#define BINARY_CHECK(E, ...) _Static_assert((int)TSR_##E == BINARY_IDX_##E, "tsr_binary_op order");
#define REDUCE_CHECK(E, ...) _Static_assert((int)TSR_##E == REDUCE_IDX_##E, "tsr_reduce_op order");
TSR__UNARY_MAP(UNARY_CHECK)
TSR__BINARY_MAP(BINARY_CHECK)
TSR__REDUCE_MAP(REDUCE_CHECK)
#define REDUCE2_CHECK(E, ...)                                                                      \
    _Static_assert((int)TSR_##E == TSR__REDUCE_COUNT + TSR__R2_##E, "tsr_reduce_op order");
TSR__REDUCE2_MAP(REDUCE2_CHECK)
#define SCAN_IDX(E, ...) SCAN_IDX_##E,
enum { TSR__SCAN_MAP(SCAN_IDX) };
#define SCAN_CHECK(E, ...) _Static_assert((int)TSR_##E == SCAN_IDX_##E, "tsr_scan_op order");
TSR__SCAN_MAP(SCAN_CHECK)
_Static_assert(TSR_KOP_COUNT < 128, "a family must pack as a positive fixint (scheduler/cost.c)");

static const tsr__kop_info kops[TSR_KOP_COUNT] = {
#define KOP_ROW(E, name, min_in, max_in, nfn, dtypes, alias, flops, traits)                        \
    [TSR_KOP_##                                                                                    \
        E] = {#name, min_in, max_in, nfn, dtypes, TSR__ALIAS_##alias, TSR__FLOPS_##flops, traits},
    TSR__KOP_MAP(KOP_ROW)
#undef KOP_ROW
};

const tsr__kop_info *tsr__kop_info_of(int kop) {
    return kop >= 0 && kop < TSR_KOP_COUNT ? &kops[kop] : NULL;
}

const char *tsr__kop_name(int kop) {
    const tsr__kop_info *k = tsr__kop_info_of(kop);
    return k ? k->name : "?";
}

#define DTYPES_ROW(E, name, dtypes, ...) dtypes,
static const uint32_t unary_dtypes[] = {TSR__UNARY_MAP(DTYPES_ROW)};
static const uint32_t binary_dtypes[] = {TSR__BINARY_MAP(DTYPES_ROW)};
#undef DTYPES_ROW

uint32_t tsr__kop_fn_dtypes(int kop, int fn) {
    const tsr__kop_info *k = tsr__kop_info_of(kop);
    if (!k || fn < 0 || (k->nfn && fn >= k->nfn)) return 0;
    switch (kop) {
    case TSR_KOP_UNARY:
        return k->dtypes & unary_dtypes[fn];
    case TSR_KOP_BINARY:
    case TSR_KOP_BINARY_SCALAR:
        return k->dtypes & binary_dtypes[fn];
    default:
        return k->dtypes;
    }
}

int tsr__kop_has(int kop, unsigned traits) {
    const tsr__kop_info *k = tsr__kop_info_of(kop);
    return k && (k->traits & traits) == traits;
}

#define NAME_ROW(E, name, ...) #name,
static const char *const unary_names[] = {TSR__UNARY_MAP(NAME_ROW)};
static const char *const binary_names[] = {TSR__BINARY_MAP(NAME_ROW)};
static const char *const reduce_names[] = {TSR__REDUCE_MAP(NAME_ROW)};
static const char *const reduce2_names[] = {TSR__REDUCE2_MAP(NAME_ROW)};
static const char *const scan_names[] = {TSR__SCAN_MAP(NAME_ROW)};
#undef NAME_ROW

static const struct reduce_row {
    int identity, scale;
    const char *ufunc;
} reduce_rows[] = {
#define REDUCE_ROW(E, name, init, fold, identity, ufunc, scale) {identity, scale, #ufunc},
    TSR__REDUCE_MAP(REDUCE_ROW)
#undef REDUCE_ROW
};

int tsr__reduce_has_identity(int fn) {
    return fn >= 0 && fn < TSR__REDUCE_COUNT && reduce_rows[fn].identity;
}

const char *tsr__reduce_ufunc(int fn) {
    return fn >= 0 && fn < TSR__REDUCE_COUNT ? reduce_rows[fn].ufunc : NULL;
}

int tsr__reduce_scales(int fn) {
    return fn >= 0 && fn < TSR__REDUCE_COUNT && reduce_rows[fn].scale;
}

static const struct reduce2_row {
    int fields, identity;
} reduce2_rows[] = {
#define REDUCE2_ROW(E, name, fields, identity) {fields, identity},
    TSR__REDUCE2_MAP(REDUCE2_ROW)
#undef REDUCE2_ROW
};

int tsr__reduce2_fields(int fn) {
    return fn >= 0 && fn < TSR__REDUCE2_COUNT ? reduce2_rows[fn].fields : 0;
}

int tsr__reduce2_has_identity(int fn) {
    return fn >= 0 && fn < TSR__REDUCE2_COUNT && reduce2_rows[fn].identity;
}

int tsr__reduce2_partial_dtype(int fn, int xdtype) {
    int fl = xdtype == TSR_FLOAT64 || xdtype == TSR_FLOAT32;
    switch (fn) {
    case TSR__R2_PROD:
        return fl ? xdtype : TSR_INT64;
    case TSR__R2_ANY:
    case TSR__R2_ALL:
        return TSR_BOOL;
    case TSR__R2_VAR:
    case TSR__R2_STD:
        return TSR_FLOAT64;
    default:
        return TSR_INT64;
    }
}

int tsr__scan_dtype(int xdtype) {
    return xdtype == TSR_FLOAT64 || xdtype == TSR_FLOAT32 ? xdtype : TSR_INT64;
}

static const char *name_of(const char *const *names, int n, int fn) {
    return fn >= 0 && fn < n ? names[fn] : NULL;
}

const char *tsr__unary_name(int fn) {
    return name_of(unary_names, TSR__UNARY_COUNT, fn);
}
const char *tsr__binary_name(int fn) {
    return name_of(binary_names, TSR__BINARY_COUNT, fn);
}
const char *tsr__reduce_name(int fn) {
    return name_of(reduce_names, TSR__REDUCE_COUNT, fn);
}
const char *tsr__reduce2_name(int fn) {
    return name_of(reduce2_names, TSR__REDUCE2_COUNT, fn);
}
const char *tsr__scan_name(int fn) {
    return name_of(scan_names, TSR__SCAN_COUNT, fn);
}

static double nelem(int ndim, const int64_t *shape) {
    double n = 1;
    for (int a = 0; a < ndim; a++) n *= (double)shape[a];
    return n;
}

double tsr__kop_flops(int kop, int ndim, const int64_t *shape, int nin, int in0_ndim,
                      const int64_t *in0) {
    const tsr__kop_info *k = tsr__kop_info_of(kop);
    if (ndim < 0 || ndim > TSR_MAX_NDIM || in0_ndim < 0 || in0_ndim > TSR_MAX_NDIM) return 0;
    double nout = nelem(ndim, shape);
    switch (k ? k->flops : TSR__FLOPS_OUT) {
    case TSR__FLOPS_MATMUL:
        /* out (m x n, or m) = A (m x k) @ B: a multiply and an add per term. */
        return 2.0 * nout * (in0 && in0_ndim == 2 ? (double)in0[1] : 1);
    case TSR__FLOPS_IN0:
        return in0 ? nelem(in0_ndim, in0) : nout;
    case TSR__FLOPS_INPUTS:
        return nout * (nin > 1 ? nin : 1);
    case TSR__FLOPS_OUT:
        break;
    }
    return nout;
}
