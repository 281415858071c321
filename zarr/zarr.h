/* Zarr v2 (https://zarr.readthedocs.io/en/stable/spec/v2.html) as Tessera reads and writes it:
 * an array's .zarray metadata (parsed and written with jansson), chunk keys, and the chunk
 * codecs (blosc through libblosc, zlib through zlib). Shared by the client (reading metadata at
 * `load`, writing stores) and the worker's LOAD kernel (reading chunk files). Pure functions on
 * buffers and files: no global state (blosc's *_ctx calls keep none), safe from any thread. */
#ifndef TSR_ZARR_H
#define TSR_ZARR_H

#include <stddef.h>
#include <stdint.h>

#include "tessera/tessera.h"

/* Chunk codecs: "compressor" null, {"id": "zlib"}, {"id": "blosc"}. Their numbers travel in
 * kernel descriptors: add at the end. */
enum { TSR__ZC_NONE = 0, TSR__ZC_ZLIB = 1, TSR__ZC_BLOSC = 2, TSR__ZC_COUNT };

typedef struct tsr__zarr_codec {
    int id;        /* TSR__ZC_* */
    int level;     /* zlib's level, blosc's clevel */
    int shuffle;   /* blosc: 0 none, 1 byte, 2 bit */
    int blocksize; /* blosc: 0 = automatic */
    char cname[16];
} tsr__zarr_codec;

typedef struct tsr__zarr_meta {
    int ndim;
    int64_t shape[TSR_MAX_NDIM];
    int64_t chunks[TSR_MAX_NDIM];
    tsr_dtype dtype;
    tsr__zarr_codec codec;
    double fill; /* fill_value; null reads as 0 */
    char sep;    /* dimension_separator: '.' (the default) or '/' */
} tsr__zarr_meta;

/* Parses the text of a .zarray. 0, or TSR_EZARR with what is wrong in err (a JSON error, a
 * missing or malformed key, an unsupported dtype, order, filter or compressor). */
int tsr__zarr_parse_meta(const char *text, size_t len, tsr__zarr_meta *m, char *err, size_t errlen);
/* Reads DIR/.zarray and parses it. 0, -errno when it cannot be read (err says so), or
 * TSR_EZARR. */
int tsr__zarr_read_meta(const char *dir, tsr__zarr_meta *m, char *err, size_t errlen);
/* The .zarray text of m (zarr_format 2, order "C", filters null), malloc'd and NUL-terminated;
 * NULL when out of memory. */
char *tsr__zarr_format_meta(const tsr__zarr_meta *m);

/* The key of the chunk at grid index idx (ndim entries; "0" for a 0-d array), e.g. "2.0". Its
 * length; a key that does not fit size is cut (size >= 24 * TSR_MAX_NDIM always fits). */
size_t tsr__zarr_chunk_key(int ndim, const int64_t *idx, char sep, char *buf, size_t size);

/* The codec tessera_compressor names (a tsr_compressor): blosc lz4 level 5 with byte shuffle
 * for DEFAULT and BLOSC (zarr's own default), zlib level 1, or none. */
tsr__zarr_codec tsr__zarr_codec_of(int compressor);

/* The most bytes encoding n bytes may take. */
size_t tsr__zarr_encode_bound(const tsr__zarr_codec *c, size_t n);
/* Encodes n bytes of elements of typesize bytes into dst (cap bytes, at least the bound).
 * 0 with *outlen set, or a negative code with err (a chunk too large for blosc). */
int tsr__zarr_encode(const tsr__zarr_codec *c, size_t typesize, const void *src, size_t n,
                     void *dst, size_t cap, size_t *outlen, char *err, size_t errlen);
/* Decodes len bytes into exactly n bytes at dst. 0, or TSR_EZARR with err (corrupt data, a
 * size that is not the chunk's). */
int tsr__zarr_decode(int codec, const void *src, size_t len, void *dst, size_t n, char *err,
                     size_t errlen);

/* Reads and decodes chunk idx of the store at dir into dst (n bytes: the whole chunk). 0, 1 when
 * the chunk file does not exist (the caller fills with fill_value), -errno when it cannot be
 * read, TSR_EZARR when it does not decode; err names the file. */
int tsr__zarr_read_chunk(const char *dir, int ndim, const int64_t *idx, char sep, int codec,
                         void *dst, size_t n, char *err, size_t errlen);

#endif
