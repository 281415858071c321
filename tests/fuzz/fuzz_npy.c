/* libFuzzer target: a .npy file's header (array/npy.c), read from a memory file exactly as a
 * `load` reads one from disk. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "array/array.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz.npy", 0);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) abort();
    tsr__npy_header h;
    char err[256];
    if (tsr__npy_read_header(path, &h, err, sizeof err) == 0) {
        if (h.ndim < 0 || h.ndim > TSR_MAX_NDIM || h.data_offset > (int64_t)size) abort();
        int64_t count = 1;
        for (int i = 0; i < h.ndim; i++) {
            if (h.shape[i] < 0) abort();
            count *= h.shape[i];
        }
        /* The header promised no more data than the file holds. */
        if (count * (int64_t)tsr_dtype_size(h.dtype) > (int64_t)size - h.data_offset) abort();
    }
    return 0;
}
