/* Zarr chunk codecs and chunk files. blosc through libblosc's context calls (no blosc_init, no
 * global state, one internal thread: the callers' threads are the parallelism), zlib through
 * compress2/uncompress (numcodecs' Zlib is the zlib format, not gzip). Every decoded size is
 * checked against the chunk's before anything is written: a corrupt or hostile chunk file is an
 * error, never an overrun. */
#include <blosc.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/common.h"
#include "zarr/zarr.h"

size_t tsr__zarr_encode_bound(const tsr__zarr_codec *c, size_t n) {
    switch (c->id) {
    case TSR__ZC_ZLIB:
        return (size_t)compressBound((uLong)n);
    case TSR__ZC_BLOSC:
        return n + BLOSC_MAX_OVERHEAD;
    default:
        return n;
    }
}

int tsr__zarr_encode(const tsr__zarr_codec *c, size_t typesize, const void *src, size_t n,
                     void *dst, size_t cap, size_t *outlen, char *err, size_t errlen) {
    switch (c->id) {
    case TSR__ZC_ZLIB: {
        uLongf len = (uLongf)cap;
        if (n > ULONG_MAX) goto too_large;
        int zr = compress2(dst, &len, src, (uLong)n, c->level);
        if (zr != Z_OK) {
            tsr__fmt(err, errlen, "zlib compression failed (%d)", zr);
            return zr == Z_MEM_ERROR ? -ENOMEM : TSR_EZARR;
        }
        *outlen = len;
        return 0;
    }
    case TSR__ZC_BLOSC: {
        if (n > BLOSC_MAX_BUFFERSIZE) goto too_large;
        int r = blosc_compress_ctx(c->level, c->shuffle, typesize, n, src, dst, cap, c->cname,
                                   (size_t)c->blocksize, 1);
        if (r <= 0) {
            tsr__fmt(err, errlen, "blosc compression with \"%s\" failed (%d)", c->cname, r);
            return TSR_EZARR;
        }
        *outlen = (size_t)r;
        return 0;
    }
    default:
        if (cap < n) goto too_large;
        memcpy(dst, src, n);
        *outlen = n;
        return 0;
    }
too_large:
    tsr__fmt(err, errlen, "a chunk of %zu bytes is too large for this compressor", n);
    return TSR_EZARR;
}

int tsr__zarr_decode(int codec, const void *src, size_t len, void *dst, size_t n, char *err,
                     size_t errlen) {
    switch (codec) {
    case TSR__ZC_ZLIB: {
        uLongf out = (uLongf)n;
        int zr = len > ULONG_MAX ? Z_DATA_ERROR : uncompress(dst, &out, src, (uLong)len);
        if (zr == Z_MEM_ERROR) return -ENOMEM;
        if (zr != Z_OK || out != n) {
            tsr__fmt(err, errlen,
                     zr == Z_BUF_ERROR || (zr == Z_OK && out != n)
                         ? "zlib data does not hold the chunk's %zu bytes"
                         : "corrupt zlib data (chunk of %zu bytes)",
                     n);
            return TSR_EZARR;
        }
        return 0;
    }
    case TSR__ZC_BLOSC: {
        size_t nbytes = 0;
        if (blosc_cbuffer_validate(src, len, &nbytes) != 0) {
            tsr__fmt(err, errlen, "corrupt blosc data");
            return TSR_EZARR;
        }
        if (nbytes != n) {
            tsr__fmt(err, errlen, "blosc data holds %zu bytes, the chunk %zu", nbytes, n);
            return TSR_EZARR;
        }
        if (n > 0 && blosc_decompress_ctx(src, dst, n, 1) != (int)n) {
            tsr__fmt(err, errlen, "corrupt blosc data");
            return TSR_EZARR;
        }
        return 0;
    }
    case TSR__ZC_NONE:
        if (len != n) {
            tsr__fmt(err, errlen, "holds %zu bytes, the chunk %zu", len, n);
            return TSR_EZARR;
        }
        memcpy(dst, src, n);
        return 0;
    default:
        tsr__fmt(err, errlen, "unknown codec %d", codec);
        return TSR_EZARR;
    }
}

int tsr__zarr_read_chunk(const char *dir, int ndim, const int64_t *idx, char sep, int codec,
                         void *dst, size_t n, char *err, size_t errlen) {
    char key[24 * TSR_MAX_NDIM + 2];
    tsr__zarr_chunk_key(ndim, idx, sep, key, sizeof key);
    size_t dl = strlen(dir);
    char *path = malloc(dl + strlen(key) + 2);
    if (!path) return -ENOMEM;
    memcpy(path, dir, dl);
    path[dl] = '/';
    strcpy(path + dl + 1, key);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(path);
        if (e == ENOENT) return 1; /* never written: fill_value */
        tsr__fmt(err, errlen, "%s/%s: %s", dir, key, strerror(e));
        return -e;
    }
    free(path);
    struct stat st;
    int rc = 0;
    void *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
    } else if (codec == TSR__ZC_NONE && (uint64_t)st.st_size != n) {
        tsr__fmt(err, errlen, "%s/%s: holds %lld bytes, the chunk %zu", dir, key,
                 (long long)st.st_size, n);
        close(fd);
        return TSR_EZARR;
    } else if ((uint64_t)st.st_size > (uint64_t)n + n / 2 + (1u << 20)) {
        /* No codec of ours makes a chunk much larger than its data. */
        tsr__fmt(err, errlen, "%s/%s: %lld bytes is too large for a chunk of %zu", dir, key,
                 (long long)st.st_size, n);
        close(fd);
        return TSR_EZARR;
    } else {
        size_t len = (size_t)st.st_size;
        buf = codec == TSR__ZC_NONE ? dst : malloc(len ? len : 1);
        if (!buf) rc = -ENOMEM;
        for (size_t got = 0; !rc && got < len;) {
            ssize_t r = read(fd, (char *)buf + got, len - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) rc = r < 0 ? -errno : -EIO;
            got += r > 0 ? (size_t)r : 0;
        }
        if (!rc && codec != TSR__ZC_NONE) {
            char why[200];
            rc = tsr__zarr_decode(codec, buf, len, dst, n, why, sizeof why);
            if (rc) tsr__fmt(err, errlen, "%s/%s: %s", dir, key, why);
            free(buf);
            close(fd);
            return rc;
        }
        if (buf != dst) free(buf);
    }
    close(fd);
    if (rc) tsr__fmt(err, errlen, "%s/%s: %s", dir, key, strerror(-rc));
    return rc;
}
