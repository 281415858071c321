/* tsr_from_buffer: an array made from the caller's memory. The elements are copied at the call
 * into the array (so the caller may free its buffer at once) and each chunk travels to a worker
 * inside its task's descriptor (a DATA task, kernels/kernels.h), so the chunks follow the normal
 * path of every task: a chunk lost with its worker is simply sent again, from the array's copy,
 * which lives until the array is freed. Must not talk to a cluster. */
#include <stdlib.h>
#include <string.h>

#include "array/array.h"

/* A DATA chunk's bytes travel in a compute message's header (64 MiB at most, split by the
 * scheduler at 16 MiB of descriptors), so one chunk may hold at most this many bytes. */
#define MAX_DATA_CHUNK ((int64_t)16 << 20)
/* Default chunks: halve the largest axis until a chunk is under this. */
#define DEFAULT_DATA_CHUNK ((int64_t)4 << 20)

int tsr_from_buffer(tsr_client *c, const void *data, tsr_dtype dtype, int ndim,
                    const int64_t *shape, const int64_t *chunks, tsr_array **out) {
    if (out) *out = NULL;
    if (!c) return tsr__fail(NULL, TSR_EINVALID, "from_buffer: client is NULL");
    if (!out) return tsr__fail(c, TSR_EINVALID, "from_buffer: out is NULL");
    size_t es = tsr_dtype_size(dtype);
    if (es == 0) return tsr__fail(c, TSR_EINVALID, "from_buffer: invalid dtype %d", (int)dtype);
    if (ndim < 0 || ndim > TSR_MAX_NDIM || (ndim > 0 && !shape))
        return tsr__fail(c, TSR_ESHAPE, "from_buffer: ndim must be between 0 and %d with a shape",
                         TSR_MAX_NDIM);
    int64_t def[TSR_MAX_NDIM];
    if (!chunks) {
        for (int ax = 0; ax < ndim; ax++) def[ax] = shape[ax] > 0 ? shape[ax] : 1;
        for (;;) {
            int64_t bytes = (int64_t)es;
            int big = -1;
            for (int ax = 0; ax < ndim; ax++) {
                if (shape[ax] < 0) break; /* tsr__array_source says what is wrong */
                bytes = bytes > INT64_MAX / (def[ax] ? def[ax] : 1) ? INT64_MAX : bytes * def[ax];
                if (big < 0 || def[ax] > def[big]) big = ax;
            }
            if (bytes <= DEFAULT_DATA_CHUNK || big < 0 || def[big] <= 1) break;
            def[big] = (def[big] + 1) / 2;
        }
        chunks = def;
    }
    tsr_array *a;
    int rc = tsr__array_source(c, "from_buffer", ndim, shape, chunks, dtype, &a);
    if (rc < 0) return rc;
    int64_t nelem = tsr_array_size(a);
    int64_t cbytes = (int64_t)es;
    for (int ax = 0; ax < ndim; ax++) cbytes *= a->numchunks[ax] ? a->chunks[ax][0] : 1;
    if (cbytes > MAX_DATA_CHUNK) {
        tsr_array_free(a);
        return tsr__fail(c, TSR_EINVALID,
                         "from_buffer: a chunk of %lld bytes is over the %lld a buffer's chunk may "
                         "have (it travels in the task graph): give smaller chunks",
                         (long long)cbytes, (long long)MAX_DATA_CHUNK);
    }
    if (nelem > 0 && !data) {
        tsr_array_free(a);
        return tsr__fail(c, TSR_EINVALID, "from_buffer: data is NULL");
    }
    size_t nbytes = (size_t)nelem * es;
    a->data = malloc(nbytes ? nbytes : 1);
    if (!a->data) {
        tsr_array_free(a);
        return tsr__fail(c, -ENOMEM, "from_buffer: out of memory copying %zu bytes", nbytes);
    }
    if (nbytes) memcpy(a->data, data, nbytes);
    a->aop = TSR_A_FROM_BUFFER;
    *out = a;
    return 0;
}
