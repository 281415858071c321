/* libFuzzer target: a Zarr array's .zarray metadata (zarr/meta.c). What parses must format
 * back to text that parses to the same metadata. */
#include <stdlib.h>
#include <string.h>

#include "zarr/zarr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tsr__zarr_meta m, m2;
    char err[256];
    if (tsr__zarr_parse_meta((const char *)data, size, &m, err, sizeof err) != 0) return 0;
    if (m.ndim < 0 || m.ndim > TSR_MAX_NDIM) abort();
    char *text = tsr__zarr_format_meta(&m);
    if (!text) return 0;
    if (tsr__zarr_parse_meta(text, strlen(text), &m2, err, sizeof err) != 0) abort();
    if (m2.ndim != m.ndim || m2.dtype != m.dtype || m2.sep != m.sep ||
        memcmp(m2.shape, m.shape, sizeof m.shape) || memcmp(m2.chunks, m.chunks, sizeof m.chunks))
        abort();
    free(text);
    return 0;
}
