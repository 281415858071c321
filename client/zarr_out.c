/* Writing a Zarr v2 directory store (docs/zarr.md) as chunks stream in (store.c): .zarray and
 * .zattrs first, then one file per chunk, named by its grid index ("2.0"), C order, compressed
 * with the target's codec. The store's chunks are the array's (store.c made the grid regular);
 * a chunk at the array's edge is padded to the full chunk shape with the fill value, as zarr
 * does. Everything is written into the target's temporary directory (atomic_file.c renames it
 * into place). Runs on the client's thread. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/client.h"
#include "zarr/zarr.h"

int tsr__zarr_out_check(tsr_client *c, const tsr_array *a, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0; /* nothing there (or unreachable: creating will say) */
    if (!S_ISDIR(st.st_mode))
        return tsr__fail(c, -EEXIST,
                         "cannot write \"%s\" (array \"%s\"): it exists and is not a directory "
                         "(a Zarr store is one); not replacing it",
                         path, a->name);
    char *za = malloc(strlen(path) + sizeof "/.zarray");
    if (!za) return tsr__fail(c, -ENOMEM, "out of memory");
    sprintf(za, "%s/.zarray", path);
    int store = access(za, F_OK) == 0;
    free(za);
    if (store) return 0;
    if (tsr__dir_empty(path) == 1) return 0;
    return tsr__fail(c, -EEXIST,
                     "cannot write \"%s\" (array \"%s\"): it is a directory but not a Zarr "
                     "array store (no .zarray); not replacing it",
                     path, a->name);
}

/* Writes len bytes as the file `name` in the target's temporary directory. */
static int put(tsr_client *c, tsr__target *t, const char *name, const void *data, size_t len) {
    int fd = openat(t->out.fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = fd < 0 ? -errno : 0;
    for (const char *p = data; !rc && len > 0;) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            rc = -errno;
            break;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fd >= 0 && close(fd) != 0 && !rc) rc = -errno;
    if (rc)
        tsr__fail(c, rc, "cannot write \"%s\" (array \"%s\"): %s: %s", t->out.path,
                  tsr_array_name(t->a), name, strerror(-rc));
    return rc;
}

/* The store's metadata for the target's array. */
static void meta_of(const tsr__target *t, tsr__zarr_meta *m) {
    const tsr_array *a = t->a;
    memset(m, 0, sizeof *m);
    m->ndim = a->ndim;
    for (int ax = 0; ax < a->ndim; ax++) {
        m->shape[ax] = a->shape[ax];
        m->chunks[ax] = a->chunks[ax][0] > 0 ? a->chunks[ax][0] : 1;
    }
    m->dtype = a->dtype;
    m->codec = tsr__zarr_codec_of(t->compressor);
    m->fill = 0;
    m->sep = '.';
}

int tsr__zarr_out_begin(tsr_client *c, tsr__target *t) {
    tsr__zarr_meta m;
    meta_of(t, &m);
    char *text = tsr__zarr_format_meta(&m);
    if (!text) return tsr__fail(c, -ENOMEM, "out of memory");
    int rc = put(c, t, ".zarray", text, strlen(text));
    free(text);
    if (!rc) rc = put(c, t, ".zattrs", "{}", 2);
    return rc;
}

int tsr__zarr_out_chunk(tsr_client *c, tsr__target *t, int64_t ci, const void *data) {
    const tsr_array *a = t->a;
    tsr__zarr_meta m;
    meta_of(t, &m);
    int nd = a->ndim;
    int64_t off[TSR_MAX_NDIM], shp[TSR_MAX_NDIM], idx[TSR_MAX_NDIM];
    tsr__array_chunk_box(a, ci, off, shp);
    int full = 1;
    for (int ax = 0; ax < nd; ax++) {
        if (shp[ax] == 0) return 0; /* an empty array has no chunk files */
        idx[ax] = off[ax] / m.chunks[ax];
        full &= shp[ax] == m.chunks[ax];
    }
    size_t es = tsr_dtype_size(a->dtype), n = es;
    for (int ax = 0; ax < nd; ax++) n *= (size_t)m.chunks[ax];
    const char *src = data;
    if (!full) {
        /* An edge chunk: zarr stores the whole chunk shape, the part outside the array holding
         * the fill value (0, all zero bytes). */
        if (!t->pad && !(t->pad = malloc(n))) return tsr__fail(c, -ENOMEM, "out of memory");
        memset(t->pad, 0, n);
        int64_t r[TSR_MAX_NDIM] = {0}, zstride[TSR_MAX_NDIM];
        int64_t s = 1;
        for (int ax = nd - 1; ax >= 0; ax--) {
            zstride[ax] = s;
            s *= m.chunks[ax];
        }
        size_t run = (size_t)shp[nd - 1] * es;
        for (const char *p = data;; p += run) {
            int64_t dst = 0;
            for (int ax = 0; ax < nd - 1; ax++) dst += r[ax] * zstride[ax];
            memcpy((char *)t->pad + (size_t)dst * es, p, run);
            int ax = nd - 2;
            while (ax >= 0 && ++r[ax] == shp[ax]) r[ax--] = 0;
            if (ax < 0) break;
        }
        src = t->pad;
    }
    size_t cap = tsr__zarr_encode_bound(&m.codec, n), len = n;
    if (m.codec.id != TSR__ZC_NONE) {
        if (t->packed_cap < cap) {
            free(t->packed);
            t->packed_cap = 0;
            if (!(t->packed = malloc(cap))) return tsr__fail(c, -ENOMEM, "out of memory");
            t->packed_cap = cap;
        }
        char why[200];
        int rc = tsr__zarr_encode(&m.codec, es, src, n, t->packed, cap, &len, why, sizeof why);
        if (rc)
            return tsr__fail(c, rc, "cannot write \"%s\" (array \"%s\"): %s", t->out.path, a->name,
                             why);
        src = t->packed;
    }
    char key[24 * TSR_MAX_NDIM + 2];
    tsr__zarr_chunk_key(nd, idx, m.sep, key, sizeof key);
    return put(c, t, key, src, len);
}
