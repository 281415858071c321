/* Lazy chunked arrays: the public constructors and accessors, shape/dtype/chunk inference and
 * argument validation. Nothing here builds tasks (lower.c does) or talks to a cluster (client/);
 * every user mistake becomes a negative code and a message on the client, never a crash. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "array/array.h"
#include "zarr/zarr.h"
#include "array/client.h"

/* Default chunks keep every chunk at or under this many bytes (SPEC §2). */
#define DEFAULT_CHUNK_BYTES ((int64_t)64 << 20)
/* An array's total size in bytes must stay under this ("sane": far beyond any cluster, and
 * comfortably inside int64 for offset arithmetic). */
#define MAX_ARRAY_BYTES ((int64_t)1 << 60)
/* The most chunks one array may have: task ids are 32-bit and every chunk costs scratch. */
#define MAX_CHUNKS ((int64_t)1 << 24)

/* ---- small helpers ------------------------------------------------------------------------- */

/* NumPy's spelling of a shape: "(3,4)", "(5,)", "()". */
static const char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, size - n, "(");
    for (int ax = 0; ax < ndim && n < size; ax++)
        n += (size_t)snprintf(buf + n, size - n, ax ? ",%lld" : "%lld", (long long)shape[ax]);
    if (n < size) snprintf(buf + n, size - n, ndim == 1 ? ",)" : ")");
    return buf;
}

static int bad_dtype(tsr_dtype dtype) {
    return tsr_dtype_size(dtype) == 0;
}

/* Checks a user-given shape: ndim in range, every extent >= 0, total bytes sane. `what` names
 * the operation in the message. */
static int check_shape(tsr_client *c, const char *what, int ndim, const int64_t *shape,
                       tsr_dtype dtype) {
    if (ndim < 0 || ndim > TSR_MAX_NDIM)
        return tsr__fail(c, TSR_ESHAPE, "%s: ndim must be between 0 and %d, got %d", what,
                         TSR_MAX_NDIM, ndim);
    if (ndim > 0 && !shape) return tsr__fail(c, TSR_EINVALID, "%s: shape is NULL", what);
    if (bad_dtype(dtype)) return tsr__fail(c, TSR_EINVALID, "%s: invalid dtype %d", what, dtype);
    int64_t limit = MAX_ARRAY_BYTES / (int64_t)tsr_dtype_size(dtype), total = 1;
    int empty = 0;
    for (int ax = 0; ax < ndim; ax++) {
        if (shape[ax] < 0)
            return tsr__fail(c, TSR_ESHAPE, "%s: negative dimension %lld on axis %d", what,
                             (long long)shape[ax], ax);
        if (shape[ax] == 0) empty = 1;
    }
    for (int ax = 0; ax < ndim && !empty; ax++) {
        if (shape[ax] > limit / total) {
            char sb[256];
            return tsr__fail(c, TSR_ESHAPE, "%s: shape %s is too large (over %lld bytes)", what,
                             shape_str(sb, sizeof sb, ndim, shape), (long long)MAX_ARRAY_BYTES);
        }
        total *= shape[ax];
    }
    return 0;
}

/* The default chunking: start with the full shape and, while a chunk is over 64 MiB, halve
 * (rounding up) its largest dimension (the first such axis on ties). A zero-length axis gets a
 * single empty chunk, so its chunk is never halved. */
static void default_chunks(int ndim, const int64_t *shape, tsr_dtype dtype, int64_t *out) {
    int empty = 0;
    for (int ax = 0; ax < ndim; ax++) {
        out[ax] = shape[ax] > 0 ? shape[ax] : 1;
        if (shape[ax] == 0) empty = 1;
    }
    if (empty) return;
    for (;;) {
        int64_t bytes = (int64_t)tsr_dtype_size(dtype);
        int big = -1;
        for (int ax = 0; ax < ndim; ax++) {
            bytes *= out[ax];
            if (big < 0 || out[ax] > out[big]) big = ax;
        }
        if (bytes <= DEFAULT_CHUNK_BYTES || big < 0 || out[big] <= 1) return;
        out[big] = (out[big] + 1) / 2;
    }
}

static int same_client(tsr_client *c, const tsr_array *a, const tsr_array *b) {
    (void)c;
    return a->client == b->client;
}

/* ---- internal constructors ------------------------------------------------------------------ */

tsr_array *tsr__array_new(tsr_client *c, const char *opname, tsr_dtype dtype, int ndim,
                          const int64_t *shape) {
    tsr_array *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    /* A provisional name for the messages of a construction that may still fail: the
     * generated one is taken only when the array is made (tsr__array_named()). */
    a->name = strdup(opname);
    if (!a->name) {
        free(a);
        return NULL;
    }
    a->refs = 1;
    a->user_alive = 1;
    a->scope_slot = -1;
    a->client = c;
    if (c) { /* the client's list of live arrays (tsr_client_free detaches them) */
        a->live_next = c->live;
        if (c->live) c->live->live_prev = a;
        c->live = a;
    }
    a->args = a->args_small;
    a->args_cap = (int)TSR__ARRAY_LEN(a->args_small);
    a->opname = opname;
    a->dtype = dtype;
    a->ndim = ndim;
    for (int ax = 0; ax < ndim; ax++) a->shape[ax] = shape[ax];
    return a;
}

static void free_chunks(tsr_array *a) {
    for (int ax = 0; ax < TSR_MAX_NDIM; ax++) {
        free(a->chunks[ax]);
        a->chunks[ax] = NULL;
        a->numchunks[ax] = 0;
    }
}

static int check_nchunks(tsr_array *a, const int64_t *n) {
    int64_t total = 1;
    for (int ax = 0; ax < a->ndim; ax++) {
        if (n[ax] > MAX_CHUNKS / total) {
            char sb[256];
            return tsr__fail(a->client, TSR_EINVALID,
                             "%s: chunks too small for shape %s: more than %lld chunks",
                             tsr_array_name(a), shape_str(sb, sizeof sb, a->ndim, a->shape),
                             (long long)MAX_CHUNKS);
        }
        total *= n[ax];
    }
    return 0;
}

int tsr__array_set_chunks(tsr_array *a, const int64_t *chunks) {
    int64_t n[TSR_MAX_NDIM];
    for (int ax = 0; ax < a->ndim; ax++) {
        if (chunks[ax] <= 0)
            return tsr__fail(a->client, TSR_EINVALID,
                             "%s: chunk size must be positive, got %lld on axis %d",
                             tsr_array_name(a), (long long)chunks[ax], ax);
        n[ax] = a->shape[ax] == 0 ? 1 : (a->shape[ax] + chunks[ax] - 1) / chunks[ax];
    }
    int rc = check_nchunks(a, n);
    if (rc < 0) return rc;
    free_chunks(a);
    for (int ax = 0; ax < a->ndim; ax++) {
        a->chunks[ax] = malloc((size_t)n[ax] * sizeof(int64_t));
        if (!a->chunks[ax]) {
            free_chunks(a);
            return tsr__fail(a->client, -ENOMEM, "out of memory");
        }
        a->numchunks[ax] = n[ax];
        int64_t left = a->shape[ax];
        for (int64_t i = 0; i < n[ax]; i++) {
            a->chunks[ax][i] = TSR__MIN(chunks[ax], left);
            left -= a->chunks[ax][i];
        }
    }
    return 0;
}

int tsr__array_set_chunk_sizes(tsr_array *a, int64_t *const *sizes, const int64_t *n) {
    for (int ax = 0; ax < a->ndim; ax++) {
        int64_t sum = 0;
        if (n[ax] < 1)
            return tsr__fail(a->client, TSR_EINVALID, "%s: no chunks on axis %d", tsr_array_name(a),
                             ax);
        for (int64_t i = 0; i < n[ax]; i++) {
            /* Zero-size chunks only as the single chunk of a zero-length axis. */
            if (sizes[ax][i] < 0 || (sizes[ax][i] == 0 && n[ax] != 1) ||
                sizes[ax][i] > a->shape[ax] - sum)
                return tsr__fail(a->client, TSR_EINVALID, "%s: bad chunk sizes on axis %d",
                                 tsr_array_name(a), ax);
            sum += sizes[ax][i];
        }
        if (sum != a->shape[ax])
            return tsr__fail(a->client, TSR_EINVALID,
                             "%s: chunk sizes on axis %d sum to %lld, not %lld", tsr_array_name(a),
                             ax, (long long)sum, (long long)a->shape[ax]);
    }
    int rc = check_nchunks(a, n);
    if (rc < 0) return rc;
    free_chunks(a);
    for (int ax = 0; ax < a->ndim; ax++) {
        a->chunks[ax] = malloc((size_t)n[ax] * sizeof(int64_t));
        if (!a->chunks[ax]) {
            free_chunks(a);
            return tsr__fail(a->client, -ENOMEM, "out of memory");
        }
        memcpy(a->chunks[ax], sizes[ax], (size_t)n[ax] * sizeof(int64_t));
        a->numchunks[ax] = n[ax];
    }
    return 0;
}

int64_t tsr__array_nchunks(const tsr_array *a) {
    int64_t n = 1;
    for (int ax = 0; ax < a->ndim; ax++) n *= a->numchunks[ax];
    return n;
}

int64_t tsr__chunk_at(const int64_t *o, int64_t n, int64_t pos) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (o[mid] <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

void tsr__array_chunk_box(const tsr_array *a, int64_t ci, int64_t *offset, int64_t *shape) {
    for (int ax = a->ndim - 1; ax >= 0; ax--) {
        int64_t idx = ci % a->numchunks[ax];
        ci /= a->numchunks[ax];
        int64_t off = 0;
        for (int64_t k = 0; k < idx; k++) off += a->chunks[ax][k];
        offset[ax] = off;
        shape[ax] = a->chunks[ax][idx];
    }
}

static void live_unlink(tsr_array *a) {
    if (!a->client) return;
    if (a->live_prev)
        a->live_prev->live_next = a->live_next;
    else
        a->client->live = a->live_next;
    if (a->live_next) a->live_next->live_prev = a->live_prev;
    a->live_prev = a->live_next = NULL;
}

void tsr__client_detach_arrays(tsr_client *c) {
    tsr__scope_drop_all(c);
    while (c->live) {
        tsr_array *a = c->live;
        /* The jobs its chunks are in are released with the client's other jobs. */
        tsr__array_release_computed(a);
        live_unlink(a);
        a->client = NULL;
        free(a->data); /* nothing can lower it any more */
        a->data = NULL;
        free(a->lower_tasks);
        a->lower_tasks = NULL;
    }
}

/* Frees one array whose last reference is gone, and the operands it held: iterative, so a long
 * chain of operations does not recurse once per link. */
void tsr__array_unref(tsr_array *a) {
    tsr_array *stack[64];
    tsr_array **todo = stack;
    size_t n = 0, cap = TSR__ARRAY_LEN(stack);
    if (!a || --a->refs > 0) return;
    todo[n++] = a;
    while (n > 0) {
        tsr_array *x = todo[--n];
        for (int k = 0; k < x->nargs; k++) {
            tsr_array *arg = x->args[k];
            if (!arg || --arg->refs > 0) continue;
            if (n == cap) {
                size_t ncap = cap * 2;
                tsr_array **grown = todo == stack ? malloc(ncap * sizeof *grown)
                                                  : realloc(todo, ncap * sizeof *grown);
                if (!grown) continue; /* out of memory: leak the operand rather than crash */
                if (todo == stack) memcpy(grown, stack, sizeof stack);
                todo = grown;
                cap = ncap;
            }
            todo[n++] = arg;
        }
        tsr__scope_forget(x);
        live_unlink(x);
        free(x->data);
        free_chunks(x);
        if (x->args != x->args_small) free(x->args);
        free(x->name);
        free(x->path);
        free(x->kernel);
        free(x->scalars);
        free(x->lower_tasks);
        free(x);
    }
    if (todo != stack) free(todo);
}

/* Frees an array that failed construction (it holds only its own operand references). */
int tsr__array_discard(tsr_array *a, int rc) {
    a->user_alive = 0;
    tsr__array_unref(a);
    return rc;
}

/* Gives an array its generated name "<opname>-<seq>" once its construction has succeeded, so
 * that a failed constructor consumes no name; returns a, or NULL (and discards it) when out of
 * memory. */
tsr_array *tsr__array_named(tsr_array *a) {
    if (a->named) return a;
    if (!a->client) {
        tsr__fail(NULL, TSR_EINVALID, "%s: its client was freed", a->name);
        tsr__array_discard(a, TSR_EINVALID);
        return NULL;
    }
    char name[64];
    snprintf(name, sizeof name, "%s-%llu", a->opname,
             (unsigned long long)tsr__client_next_seq(a->client));
    char *copy = strdup(name);
    if (!copy) {
        tsr__fail(a->client, -ENOMEM, "out of memory");
        tsr__array_discard(a, -ENOMEM);
        return NULL;
    }
    free(a->name);
    a->name = copy;
    a->named = 1;
    if (a->user_alive) tsr__scope_add(a);
    return a;
}

/* Adds an operand. Until the array is named, messages call it after its operands ("rechunk of
 * zeros-1", "add of x and y"), never by a name it may not get. */
int tsr__array_add_arg(tsr_array *a, tsr_array *arg) {
    if (a->nargs == a->args_cap) {
        int ncap = a->args_cap * 2;
        tsr_array **grown = a->args == a->args_small
                                ? malloc((size_t)ncap * sizeof *grown)
                                : realloc(a->args, (size_t)ncap * sizeof *grown);
        if (!grown) return tsr__fail(a->client, -ENOMEM, "out of memory");
        if (a->args == a->args_small) memcpy(grown, a->args_small, sizeof a->args_small);
        a->args = grown;
        a->args_cap = ncap;
    }
    arg->refs++;
    a->args[a->nargs++] = arg;
    if (a->named) return 0;
    char label[300];
    if (a->nargs == 1)
        snprintf(label, sizeof label, "%s of %s", a->opname, arg->name);
    else
        snprintf(label, sizeof label, "%s of %s and %s", a->opname, a->args[0]->name, arg->name);
    char *copy = strdup(label);
    if (copy) {
        free(a->name);
        a->name = copy;
    }
    return 0;
}

int tsr__array_hidden_rechunk(tsr_array *x, int64_t *const *sizes, const int64_t *n,
                              tsr_array **out) {
    tsr_array *r = tsr__array_new(x->client, "rechunk", x->dtype, x->ndim, x->shape);
    if (!r) return tsr__fail(x->client, -ENOMEM, "out of memory");
    r->user_alive = 0;
    r->aop = TSR_A_RECHUNK;
    (void)tsr__array_add_arg(r, x);
    int rc = tsr__array_set_chunk_sizes(r, sizes, n);
    if (rc < 0) return tsr__array_discard(r, rc);
    if (!tsr__array_named(r)) return -ENOMEM;
    *out = r;
    return 0;
}

static int chunks_equal(const tsr_array *a, int ax, const int64_t *sizes, int64_t n) {
    return a->numchunks[ax] == n && memcmp(a->chunks[ax], sizes, (size_t)n * sizeof *sizes) == 0;
}

/* Copies x's grid onto a, axis perm[j] of x becoming axis j of a (perm NULL: identity). */
static int copy_grid(tsr_array *a, const tsr_array *x, const int *perm) {
    int64_t *sizes[TSR_MAX_NDIM], n[TSR_MAX_NDIM];
    for (int ax = 0; ax < a->ndim; ax++) {
        int src = perm ? perm[ax] : ax;
        sizes[ax] = x->chunks[src];
        n[ax] = x->numchunks[src];
    }
    return tsr__array_set_chunk_sizes(a, sizes, n);
}

#define CHECK_OUT(c, out)                                                                          \
    do {                                                                                           \
        if (!(out)) return tsr__fail((c), TSR_EINVALID, "%s: out is NULL", __func__);              \
        *(out) = NULL;                                                                             \
        if (!(c))                                                                                  \
            return tsr__fail(NULL, TSR_EINVALID,                                                   \
                             "%s: no client (NULL, or the operand's client was freed)", __func__); \
    } while (0)

/* ---- sources -------------------------------------------------------------------------------- */

static int make_source(tsr_client *c, const char *opname, int ndim, const int64_t *shape,
                       const int64_t *chunks, tsr_dtype dtype, tsr_array **out) {
    if (!c) return tsr__fail(NULL, TSR_EINVALID, "%s: client is NULL", opname);
    CHECK_OUT(c, out);
    int rc = check_shape(c, opname, ndim, shape, dtype);
    if (rc < 0) return rc;
    tsr_array *a = tsr__array_new(c, opname, dtype, ndim, shape);
    if (!a) return tsr__fail(c, -ENOMEM, "out of memory");
    int64_t def[TSR_MAX_NDIM];
    if (!chunks) {
        default_chunks(ndim, shape, dtype, def);
        chunks = def;
    }
    rc = tsr__array_set_chunks(a, chunks);
    if (rc < 0) return tsr__array_discard(a, rc);
    if (!tsr__array_named(a)) return -ENOMEM;
    *out = a;
    return 0;
}

int tsr__array_source(tsr_client *c, const char *opname, int ndim, const int64_t *shape,
                      const int64_t *chunks, tsr_dtype dtype, tsr_array **out) {
    return make_source(c, opname, ndim, shape, chunks, dtype, out);
}

static int make_full(tsr_client *c, const char *opname, int ndim, const int64_t *shape,
                     const int64_t *chunks, tsr_dtype dtype, double value, tsr_array **out) {
    int rc = make_source(c, opname, ndim, shape, chunks, dtype, out);
    if (rc < 0) return rc;
    (*out)->aop = TSR_A_FULL;
    (*out)->value = value;
    return 0;
}

int tsr_zeros(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks, tsr_dtype dtype,
              tsr_array **out) {
    return make_full(c, "zeros", ndim, shape, chunks, dtype, 0.0, out);
}

int tsr_ones(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks, tsr_dtype dtype,
             tsr_array **out) {
    return make_full(c, "ones", ndim, shape, chunks, dtype, 1.0, out);
}

int tsr_full(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks, tsr_dtype dtype,
             double value, tsr_array **out) {
    return make_full(c, "full", ndim, shape, chunks, dtype, value, out);
}

int tsr_full_int64(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks,
                   int64_t value, tsr_array **out) {
    int rc = make_full(c, "full", ndim, shape, chunks, TSR_INT64, (double)value, out);
    if (rc < 0) return rc;
    (*out)->ivalue = value;
    (*out)->has_ivalue = 1;
    return 0;
}

int tsr_random(tsr_client *c, int ndim, const int64_t *shape, const int64_t *chunks,
               tsr_dtype dtype, uint64_t seed, tsr_array **out) {
    if (c && dtype != TSR_FLOAT64 && dtype != TSR_FLOAT32 && !bad_dtype(dtype))
        return tsr__fail(c, TSR_EINVALID, "random makes float64 or float32, not %s",
                         tsr_dtype_name(dtype));
    int rc = make_source(c, "random", ndim, shape, chunks, dtype, out);
    if (rc < 0) return rc;
    (*out)->aop = TSR_A_RANDOM;
    (*out)->seed = seed;
    return 0;
}

int tsr_arange(tsr_client *c, double start, double stop, double step, int64_t chunk,
               tsr_dtype dtype, tsr_array **out) {
    if (!c) return tsr__fail(NULL, TSR_EINVALID, "arange: client is NULL");
    CHECK_OUT(c, out);
    if (!isfinite(start) || !isfinite(stop) || !isfinite(step))
        return tsr__fail(c, TSR_EINVALID, "arange: start, stop and step must be finite");
    if (step == 0) return tsr__fail(c, TSR_EINVALID, "arange: step must not be zero");
    if (dtype == TSR_BOOL) return tsr__fail(c, TSR_EINVALID, "arange: no bool arange");
    if (dtype == TSR_INT64 && (start != floor(start) || step != floor(step) ||
                               fabs(start) > 9007199254740992.0 || fabs(step) > 9007199254740992.0))
        return tsr__fail(c, TSR_EINVALID,
                         "arange: an int64 arange needs integral start and step below 2^53, got "
                         "start %.17g, step %.17g",
                         start, step);
    double len = ceil((stop - start) / step);
    if (!(len >= 0))
        return tsr__fail(c, TSR_ESHAPE,
                         "arange: negative length: start %.17g, stop %.17g, step %.17g", start,
                         stop, step);
    if (len > (double)(MAX_ARRAY_BYTES / 8))
        return tsr__fail(c, TSR_ESHAPE, "arange: length %.17g is too large", len);
    int64_t shape[1] = {(int64_t)len}, chunks[1] = {chunk};
    int rc = make_source(c, "arange", 1, shape, chunk > 0 ? chunks : NULL, dtype, out);
    if (rc < 0) return rc;
    (*out)->aop = TSR_A_ARANGE;
    (*out)->value = start;
    (*out)->step = step;
    return 0;
}

/* An absolute version of path (caller frees), without requiring every component to resolve. */
static char *absolute_path(const char *path) {
    char *r = realpath(path, NULL);
    if (r || path[0] == '/') return r ? r : strdup(path);
    char *cwd = getcwd(NULL, 0);
    if (!cwd) return NULL;
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *abs = malloc(n);
    if (abs) snprintf(abs, n, "%s/%s", cwd, path);
    free(cwd);
    return abs;
}

int tsr_load_npy(tsr_client *c, const char *path, const int64_t *chunks, tsr_array **out) {
    if (!c) return tsr__fail(NULL, TSR_EINVALID, "load: client is NULL");
    CHECK_OUT(c, out);
    if (!path) return tsr__fail(c, TSR_EINVALID, "load: path is NULL");
    tsr__npy_header h;
    char err[512] = "";
    int rc = tsr__npy_read_header(path, &h, err, sizeof err);
    if (rc < 0) {
        if (!err[0]) snprintf(err, sizeof err, "%s", tsr_strerror(rc));
        return tsr__fail(c, rc, "load %s: %s", path, err);
    }
    char *abs = absolute_path(path);
    if (!abs) return tsr__fail(c, -ENOMEM, "out of memory");
    rc = make_source(c, "load", h.ndim, h.shape, chunks, h.dtype, out);
    if (rc < 0) {
        free(abs);
        return rc;
    }
    (*out)->aop = TSR_A_LOAD;
    (*out)->path = abs;
    (*out)->data_offset = h.data_offset;
    (*out)->file_dtype = h.dtype;
    return 0;
}

int tsr_load_zarr(tsr_client *c, const char *path, const int64_t *chunks, tsr_array **out) {
    if (!c) return tsr__fail(NULL, TSR_EINVALID, "load: client is NULL");
    CHECK_OUT(c, out);
    if (!path) return tsr__fail(c, TSR_EINVALID, "load: path is NULL");
    tsr__zarr_meta m;
    char err[600] = "";
    int rc = tsr__zarr_read_meta(path, &m, err, sizeof err);
    if (rc < 0) {
        if (!err[0]) snprintf(err, sizeof err, "%s", tsr_strerror(rc));
        return tsr__fail(c, rc, "load %s: %s", path, err);
    }
    char *abs = absolute_path(path);
    if (!abs) return tsr__fail(c, -ENOMEM, "out of memory");
    /* By default a Tessera chunk is a store chunk: each task reads one chunk file. */
    rc = make_source(c, "load", m.ndim, m.shape, chunks ? chunks : m.chunks, m.dtype, out);
    if (rc < 0) {
        free(abs);
        return rc;
    }
    tsr_array *a = *out;
    a->aop = TSR_A_LOAD;
    a->path = abs;
    a->file_dtype = m.dtype;
    a->zarr = 1;
    a->zcodec = m.codec.id;
    a->zsep = m.sep;
    a->zfill = m.fill;
    memcpy(a->zchunks, m.chunks, sizeof a->zchunks);
    return 0;
}

/* ---- operations ----------------------------------------------------------------------------- */

/* The names are the operations table's (graph/ops.h). */
const char *tsr_unary_name(tsr_unary_op op) {
    return tsr__unary_name((int)op);
}

const char *tsr_binary_name(tsr_binary_op op) {
    return tsr__binary_name((int)op);
}

const char *tsr_reduce_name(tsr_reduce_op op) {
    if ((int)op >= TSR__REDUCE_COUNT) return tsr__reduce2_name((int)op - TSR__REDUCE_COUNT);
    return tsr__reduce_name((int)op);
}

/* The common preamble of operations on one array. */
#define CHECK_X(x, out, what)                                                                      \
    do {                                                                                           \
        if (!(x)) return tsr__fail(NULL, TSR_EINVALID, "%s: operand is NULL", (what));             \
        CHECK_OUT((x)->client, out);                                                               \
    } while (0)

/* An array of x's shape and grid and of dtype `dtype`, with x as its only operand. */
static int like(tsr_array *x, const char *opname, tsr_dtype dtype, tsr_aop aop, tsr_array **out) {
    tsr_array *a = tsr__array_new(x->client, opname, dtype, x->ndim, x->shape);
    if (!a) return tsr__fail(x->client, -ENOMEM, "out of memory");
    a->aop = aop;
    (void)tsr__array_add_arg(a, x);
    int rc = copy_grid(a, x, NULL);
    if (rc < 0) return tsr__array_discard(a, rc);
    if (!tsr__array_named(a)) return -ENOMEM;
    *out = a;
    return 0;
}

int tsr_unary(tsr_unary_op op, tsr_array *x, tsr_array **out) {
    CHECK_X(x, out, "unary");
    const char *name = tsr_unary_name(op);
    if (!name) return tsr__fail(x->client, TSR_EINVALID, "unknown unary operation %d", (int)op);
    tsr_dtype dtype;
    if (tsr__unary_dtype((int)op, x->dtype, &dtype) < 0)
        return tsr__fail(x->client, TSR_EINVALID, "%s of %s: not defined for %s", name,
                         tsr_array_name(x), tsr_dtype_name(x->dtype));
    int pred = op == TSR_LOGICAL_NOT || op == TSR_ISNAN || op == TSR_ISFINITE;
    int rc = like(x, name, dtype, pred ? TSR_A_PREDICATE : TSR_A_UNARY, out);
    if (rc == 0) (*out)->fn = (int)op;
    return rc;
}

int tsr_astype(tsr_array *x, tsr_dtype dtype, tsr_array **out) {
    CHECK_X(x, out, "astype");
    if (bad_dtype(dtype))
        return tsr__fail(x->client, TSR_EINVALID, "astype of %s: invalid dtype %d",
                         tsr_array_name(x), (int)dtype);
    return like(x, "astype", dtype, TSR_A_ASTYPE, out);
}

/* Is s what a Python int literal could be (integral, within int64)? */
static int integral(double s) {
    return isfinite(s) && s == floor(s) && fabs(s) < 9223372036854775808.0;
}

int tsr_binary_scalar(tsr_binary_op op, tsr_array *x, double s, int scalar_first, tsr_array **out) {
    return tsr_binary_scalar_kind(op, x, s, !integral(s), scalar_first, out);
}

/* is_int: s is exactly the integer is (a Python int); otherwise is_float says its kind. */
static int binary_scalar(tsr_binary_op op, tsr_array *x, double s, int is_float, int is_int,
                         int64_t is, int scalar_first, tsr_array **out) {
    CHECK_X(x, out, "binary");
    const char *name = tsr_binary_name(op);
    if (!name) return tsr__fail(x->client, TSR_EINVALID, "unknown binary operation %d", (int)op);
    if (!is_float && !is_int && !integral(s))
        return tsr__fail(x->client, TSR_EINVALID,
                         "%s of %s: the integer scalar %.17g is not an "
                         "int64",
                         name, tsr_array_name(x), s);
    tsr_dtype r = tsr__promote_weak(x->dtype, is_float), dtype;
    if (tsr__binary_dtype((int)op, r, &dtype) < 0)
        return tsr__fail(x->client, TSR_EINVALID, "%s of %s and %.17g: not defined for %s", name,
                         tsr_array_name(x), s, tsr_dtype_name(x->dtype));
    if (op == TSR_POW && dtype == TSR_INT64 && !scalar_first && s < 0)
        return tsr__fail(x->client, TSR_EINVALID,
                         "%s of %s and %.17g: Integers to negative integer powers are not allowed",
                         name, tsr_array_name(x), s);
    int cmp = op >= TSR_LESS;
    int rc = like(x, name, dtype, cmp ? TSR_A_COMPARE_SCALAR : TSR_A_BINARY_SCALAR, out);
    if (rc < 0) return rc;
    (*out)->cdtype = r;
    (*out)->fn = (int)op;
    (*out)->value = s;
    (*out)->scalar_first = scalar_first != 0;
    (*out)->ivalue = is;
    (*out)->has_ivalue = is_int;
    return 0;
}

int tsr_binary_scalar_kind(tsr_binary_op op, tsr_array *x, double s, int is_float, int scalar_first,
                           tsr_array **out) {
    return binary_scalar(op, x, s, is_float, 0, 0, scalar_first, out);
}

int tsr_binary_scalar_int64(tsr_binary_op op, tsr_array *x, int64_t s, int scalar_first,
                            tsr_array **out) {
    return binary_scalar(op, x, (double)s, 0, 1, s, scalar_first, out);
}

/* The union of two chunkings' boundaries along one axis (dask's unify_chunks). Writes at most
 * na + nb sizes to out and returns their count. */
static int64_t union_chunks(const int64_t *a, int64_t na, const int64_t *b, int64_t nb,
                            int64_t *out) {
    int64_t i = 0, j = 0, ea = 0, eb = 0, prev = 0, n = 0;
    if (na >= 1 && a[0] == 0) {
        out[0] = 0; /* a zero-length axis: both are the single empty chunk */
        return 1;
    }
    while (i < na || j < nb) {
        int64_t na_end = i < na ? ea + a[i] : INT64_MAX;
        int64_t nb_end = j < nb ? eb + b[j] : INT64_MAX;
        int64_t next = TSR__MIN(na_end, nb_end);
        if (next == na_end) {
            ea = na_end;
            i++;
        }
        if (next == nb_end) {
            eb = nb_end;
            j++;
        }
        out[n++] = next - prev;
        prev = next;
    }
    return n;
}

/* Wraps *x in a hidden rechunk to the grid sizes/n unless it already has it. On success *x is
 * either unchanged (borrowed) or a new array whose reference *owned receives. */
static int align(tsr_array **x, int64_t *const *sizes, const int64_t *n, tsr_array **owned) {
    *owned = NULL;
    for (int ax = 0; ax < (*x)->ndim; ax++) {
        if (!chunks_equal(*x, ax, sizes[ax], n[ax])) {
            int rc = tsr__array_hidden_rechunk(*x, sizes, n, owned);
            if (rc < 0) return rc;
            *x = *owned;
            return 0;
        }
    }
    return 0;
}

int tsr__array_align(tsr_array **x, int64_t *const *sizes, const int64_t *n, tsr_array **owned) {
    return align(x, sizes, n, owned);
}

int64_t tsr__union_chunks(const int64_t *a, int64_t na, const int64_t *b, int64_t nb,
                          int64_t *out) {
    return union_chunks(a, na, b, nb, out);
}

int tsr__array_broadcast(tsr_client *c, const char *name, tsr_aop aop, int fn,
                         tsr_array *const *ops_in, int nops, tsr_dtype dtype, tsr_array **out) {
    int d = 0;
    for (int k = 0; k < nops; k++) d = TSR__MAX(d, ops_in[k]->ndim);
    int64_t shape[TSR_MAX_NDIM];
    for (int ax = 0; ax < d; ax++) {
        shape[ax] = 1;
        for (int k = 0; k < nops; k++) {
            const tsr_array *x = ops_in[k];
            int o = d - x->ndim;
            int64_t sx = ax >= o ? x->shape[ax - o] : 1;
            if (sx == 1 || sx == shape[ax]) continue;
            if (shape[ax] != 1) {
                char msg[600];
                size_t len = 0;
                for (int j = 0; j < nops && len < sizeof msg; j++) {
                    char bx[128];
                    len += (size_t)snprintf(
                        msg + len, sizeof msg - len, "%s%s",
                        shape_str(bx, sizeof bx, ops_in[j]->ndim, ops_in[j]->shape),
                        j + 1 < nops ? " " : "");
                }
                char names[600];
                len = 0;
                for (int j = 0; j < nops && len < sizeof names; j++)
                    len += (size_t)snprintf(names + len, sizeof names - len, "%s%s",
                                            j ? (j + 1 < nops ? ", " : " and ") : "",
                                            tsr_array_name(ops_in[j]));
                return tsr__fail(c, TSR_ESHAPE,
                                 "operands could not be broadcast together with shapes %s "
                                 "(%s of %s)",
                                 msg, name, names);
            }
            shape[ax] = sx;
        }
    }

    /* Output grid: on each axis, the chunks of the operand(s) that span it (not broadcast);
     * where several do and disagree, the union of their boundaries. */
    int64_t *osizes[TSR_MAX_NDIM] = {0}, on[TSR_MAX_NDIM];
    int rc = 0;
    for (int ax = 0; ax < d && rc == 0; ax++) {
        int64_t cap = 0;
        for (int k = 0; k < nops; k++) {
            const tsr_array *x = ops_in[k];
            int o = d - x->ndim;
            if (ax >= o && x->shape[ax - o] == shape[ax]) cap += x->numchunks[ax - o];
        }
        osizes[ax] = malloc((size_t)(cap ? cap : 1) * sizeof(int64_t));
        int64_t *tmp = malloc((size_t)(cap ? cap : 1) * sizeof(int64_t));
        if (!osizes[ax] || !tmp) {
            free(tmp);
            rc = tsr__fail(c, -ENOMEM, "out of memory");
            break;
        }
        on[ax] = 0;
        for (int k = 0; k < nops; k++) {
            const tsr_array *x = ops_in[k];
            int o = d - x->ndim;
            if (!(ax >= o && x->shape[ax - o] == shape[ax])) continue;
            const int64_t *cx = x->chunks[ax - o];
            int64_t nx = x->numchunks[ax - o];
            if (on[ax] == 0) {
                memcpy(osizes[ax], cx, (size_t)nx * sizeof(int64_t));
                on[ax] = nx;
            } else {
                on[ax] = union_chunks(osizes[ax], on[ax], cx, nx, tmp);
                memcpy(osizes[ax], tmp, (size_t)on[ax] * sizeof(int64_t));
            }
        }
        free(tmp);
        if (on[ax] == 0) { /* every operand broadcasts here: extent 1, one chunk */
            osizes[ax][0] = 1;
            on[ax] = 1;
        }
    }

    tsr_array *ops[3], *owned[3] = {NULL, NULL, NULL};
    for (int k = 0; k < nops && rc == 0; k++) {
        ops[k] = ops_in[k];
        int off = d - ops[k]->ndim;
        int64_t *tsizes[TSR_MAX_NDIM], tn[TSR_MAX_NDIM], one = 1;
        for (int ax = 0; ax < ops[k]->ndim; ax++) {
            int broadcast = ops[k]->shape[ax] != shape[ax + off];
            tsizes[ax] = broadcast ? &one : osizes[ax + off];
            tn[ax] = broadcast ? 1 : on[ax + off];
        }
        rc = align(&ops[k], tsizes, tn, &owned[k]);
    }
    tsr_array *a = NULL;
    if (rc == 0) {
        a = tsr__array_new(c, name, dtype, d, shape);
        if (!a) rc = tsr__fail(c, -ENOMEM, "out of memory");
    }
    if (rc == 0) {
        a->aop = aop;
        a->fn = fn;
        for (int k = 0; k < nops; k++) (void)tsr__array_add_arg(a, ops[k]);
        rc = tsr__array_set_chunk_sizes(a, osizes, on);
        if (rc < 0)
            tsr__array_discard(a, rc);
        else if (!tsr__array_named(a))
            rc = -ENOMEM;
        else
            *out = a;
    }
    for (int k = 0; k < nops; k++) tsr__array_unref(owned[k]); /* the array holds its own refs */
    for (int ax = 0; ax < d; ax++) free(osizes[ax]);
    return rc;
}

int tsr_binary(tsr_binary_op op, tsr_array *x, tsr_array *y, tsr_array **out) {
    if (!x || !y) return tsr__fail(x ? x->client : NULL, TSR_EINVALID, "binary: operand is NULL");
    tsr_client *c = x->client;
    CHECK_OUT(c, out);
    if (!same_client(c, x, y))
        return tsr__fail(c, TSR_EINVALID, "%s and %s belong to different clients",
                         tsr_array_name(x), tsr_array_name(y));
    const char *name = tsr_binary_name(op);
    if (!name) return tsr__fail(c, TSR_EINVALID, "unknown binary operation %d", (int)op);
    tsr_dtype r = tsr__promote(x->dtype, y->dtype), dtype;
    if (tsr__binary_dtype((int)op, r, &dtype) < 0)
        return tsr__fail(c, TSR_EINVALID, "%s of %s and %s: not defined for %s and %s operands",
                         name, tsr_array_name(x), tsr_array_name(y), tsr_dtype_name(x->dtype),
                         tsr_dtype_name(y->dtype));
    int cmp = op >= TSR_LESS;
    tsr_array *ops[2] = {x, y};
    int rc = tsr__array_broadcast(c, name, cmp ? TSR_A_COMPARE : TSR_A_BINARY, (int)op, ops, 2,
                                  dtype, out);
    if (rc == 0 && cmp) (*out)->cdtype = r;
    return rc;
}

int tsr_matmul(tsr_array *a, tsr_array *b, tsr_array **out) {
    if (!a || !b) return tsr__fail(a ? a->client : NULL, TSR_EINVALID, "matmul: operand is NULL");
    tsr_client *c = a->client;
    CHECK_OUT(c, out);
    if (!same_client(c, a, b))
        return tsr__fail(c, TSR_EINVALID, "%s and %s belong to different clients",
                         tsr_array_name(a), tsr_array_name(b));
    /* Other shapes (batches, a 1-d first operand) are contractions (linalg.c); the 2-d @ 2-d and
     * 2-d @ 1-d products keep the MATMUL family. */
    if (a->ndim != 2 || (b->ndim != 1 && b->ndim != 2)) return tsr__matmul_nd(a, b, out);
    if (a->shape[1] != b->shape[0])
        return tsr__fail(
            c, TSR_ESHAPE, "matmul needs %s.shape[1] == %s.shape[0], got %lld and %lld",
            tsr_array_name(a), tsr_array_name(b), (long long)a->shape[1], (long long)b->shape[0]);

    /* B's row chunks must match A's column chunks so that block k of one meets block k of the
     * other. */
    tsr_array *owned = NULL;
    int64_t *sizes[2] = {a->chunks[1], b->ndim == 2 ? b->chunks[1] : NULL};
    int64_t n[2] = {a->numchunks[1], b->ndim == 2 ? b->numchunks[1] : 0};
    int rc = align(&b, sizes, n, &owned);
    if (rc < 0) return rc;

    int64_t shape[2] = {a->shape[0], b->ndim == 2 ? b->shape[1] : 0};
    tsr_dtype dtype = tsr__promote(a->dtype, b->dtype);
    tsr_array *m = tsr__array_new(c, "matmul", dtype, b->ndim, shape);
    if (!m) {
        tsr__array_unref(owned);
        return tsr__fail(c, -ENOMEM, "out of memory");
    }
    m->aop = TSR_A_MATMUL;
    (void)tsr__array_add_arg(m, a);
    (void)tsr__array_add_arg(m, b);
    tsr__array_unref(owned);
    int64_t *osizes[2] = {a->chunks[0], b->ndim == 2 ? b->chunks[1] : NULL};
    int64_t on[2] = {a->numchunks[0], b->ndim == 2 ? b->numchunks[1] : 0};
    rc = tsr__array_set_chunk_sizes(m, osizes, on);
    if (rc < 0) return tsr__array_discard(m, rc);
    if (!tsr__array_named(m)) return -ENOMEM;
    *out = m;
    return 0;
}

/* Normalises user axes (negative ones count from the end) into out; rejects out-of-range and
 * repeated axes. */
static int norm_axes(tsr_array *x, const char *what, const int *axes, int naxes, int *out) {
    char sb[256];
    int seen[TSR_MAX_NDIM] = {0};
    if (naxes < 0 || naxes > x->ndim)
        return tsr__fail(x->client, TSR_EINVALID, "%s of %s: %d axes for an array of shape %s",
                         what, tsr_array_name(x), naxes,
                         shape_str(sb, sizeof sb, x->ndim, x->shape));
    for (int k = 0; k < naxes; k++) {
        int ax = axes[k] < 0 ? axes[k] + x->ndim : axes[k];
        if (ax < 0 || ax >= x->ndim)
            return tsr__fail(x->client, TSR_EINVALID,
                             "%s of %s: axis %d is out of bounds for an array of shape %s", what,
                             tsr_array_name(x), axes[k],
                             shape_str(sb, sizeof sb, x->ndim, x->shape));
        if (seen[ax])
            return tsr__fail(x->client, TSR_EINVALID, "%s of %s: repeated axis %d", what,
                             tsr_array_name(x), axes[k]);
        seen[ax] = 1;
        out[k] = ax;
    }
    return 0;
}

int tsr_transpose(tsr_array *x, const int *axes, int naxes, tsr_array **out) {
    CHECK_X(x, out, "transpose");
    int perm[TSR_MAX_NDIM];
    if (!axes) {
        if (naxes != 0)
            return tsr__fail(x->client, TSR_EINVALID, "transpose of %s: axes is NULL",
                             tsr_array_name(x));
        for (int ax = 0; ax < x->ndim; ax++) perm[ax] = x->ndim - 1 - ax;
    } else {
        if (naxes != x->ndim) {
            char sb[256];
            return tsr__fail(x->client, TSR_EINVALID,
                             "transpose of %s: axes don't match array: %d axes for shape %s",
                             tsr_array_name(x), naxes, shape_str(sb, sizeof sb, x->ndim, x->shape));
        }
        int rc = norm_axes(x, "transpose", axes, naxes, perm);
        if (rc < 0) return rc;
    }
    int64_t shape[TSR_MAX_NDIM];
    for (int ax = 0; ax < x->ndim; ax++) shape[ax] = x->shape[perm[ax]];
    tsr_array *a = tsr__array_new(x->client, "transpose", x->dtype, x->ndim, shape);
    if (!a) return tsr__fail(x->client, -ENOMEM, "out of memory");
    a->aop = TSR_A_TRANSPOSE;
    (void)tsr__array_add_arg(a, x);
    memcpy(a->axes, perm, sizeof perm);
    a->naxes = x->ndim;
    int rc = copy_grid(a, x, perm);
    if (rc < 0) return tsr__array_discard(a, rc);
    if (!tsr__array_named(a)) return -ENOMEM;
    *out = a;
    return 0;
}

/* keepdims, var/std, argmax/argmin, cumsum/cumprod: array/reduce.c. */
int tsr_reduce(tsr_reduce_op op, tsr_array *x, const int *axes, int naxes, tsr_array **out) {
    return tsr_reduce_ex(op, x, axes, naxes, NULL, out);
}

int tsr_rechunk(tsr_array *x, const int64_t *chunks, tsr_array **out) {
    CHECK_X(x, out, "rechunk");
    tsr_array *a = tsr__array_new(x->client, "rechunk", x->dtype, x->ndim, x->shape);
    if (!a) return tsr__fail(x->client, -ENOMEM, "out of memory");
    a->aop = TSR_A_RECHUNK;
    (void)tsr__array_add_arg(a, x);
    int64_t def[TSR_MAX_NDIM];
    if (!chunks) {
        default_chunks(x->ndim, x->shape, x->dtype, def);
        chunks = def;
    }
    int rc = tsr__array_set_chunks(a, chunks);
    if (rc < 0) return tsr__array_discard(a, rc);
    if (!tsr__array_named(a)) return -ENOMEM;
    *out = a;
    return 0;
}

/* ---- accessors ------------------------------------------------------------------------------ */

int tsr_array_set_name(tsr_array *a, const char *name) {
    if (!a) return tsr__fail(NULL, TSR_EINVALID, "set_name: array is NULL");
    int ok = name && ((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z') ||
                      name[0] == '_');
    for (const char *p = name; ok && *p; p++)
        ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
             *p == '_';
    if (!ok)
        return tsr__fail(a->client, TSR_EINVALID,
                         "invalid array name \"%.200s\": names are identifiers "
                         "([A-Za-z_][A-Za-z0-9_]*)",
                         name ? name : "(null)");
    char *copy = strdup(name);
    if (!copy) return tsr__fail(a->client, -ENOMEM, "out of memory");
    free(a->name);
    a->name = copy;
    a->named = 1;
    return 0;
}

const char *tsr_array_name(const tsr_array *a) {
    return a ? a->name : "(null)";
}

int tsr_array_ndim(const tsr_array *a) {
    return a ? a->ndim : 0;
}

const int64_t *tsr_array_shape(const tsr_array *a) {
    return a ? a->shape : NULL;
}

tsr_dtype tsr_array_dtype(const tsr_array *a) {
    return a ? a->dtype : TSR_FLOAT64;
}

int64_t tsr_array_numchunks(const tsr_array *a, int axis) {
    return a && axis >= 0 && axis < a->ndim ? a->numchunks[axis] : 0;
}

const int64_t *tsr_array_chunks(const tsr_array *a, int axis) {
    return a && axis >= 0 && axis < a->ndim ? a->chunks[axis] : NULL;
}

const char *tsr_array_op(const tsr_array *a) {
    return a ? a->opname : NULL;
}

tsr_client *tsr_array_client(const tsr_array *a) {
    return a ? a->client : NULL;
}

int64_t tsr_array_size(const tsr_array *a) {
    int64_t n = 1;
    for (int ax = 0; a && ax < a->ndim; ax++) n *= a->shape[ax];
    return a ? n : 0;
}

void tsr__array_release_computed(tsr_array *a) {
    tsr__computed *cp = &a->computed;
    if (!cp->task) return;
    for (int64_t k = 0; k < cp->nchunks; k++) free(cp->addr[k]);
    free(cp->addr);
    free(cp->task);
    tsr__jobref *jr = cp->jobref;
    memset(cp, 0, sizeof *cp);
    if (jr && --jr->refs == 0) {
        /* The client sends the release at its next network operation: freeing an array must
         * not run the loop, where replies to calls that have returned could be delivered. */
        tsr__client_note_release(jr->client, jr->job);
        free(jr);
    }
}

void tsr_array_free(tsr_array *a) {
    if (!a || !a->user_alive) return;
    tsr__scope_forget(a);
    tsr__array_release_computed(a);
    a->user_alive = 0;
    tsr__array_unref(a);
}
