/* What the program-file loader's files share: the loaded program. The loader is a client of the
 * public API (tessera.h) only; it reaches into no array internals. */
#ifndef TSR_LOADER_H
#define TSR_LOADER_H

#include "tessera/tessera.h"

typedef struct tsr__output {
    tsr_array *array; /* borrowed from the program's arrays */
    char *path;       /* owned; "-" prints on stdout */
    int format;       /* tsr_format: AUTO for a plain path, ZARR for an object entry */
    int compressor;   /* tsr_compressor (object entries) */
} tsr__output;

struct tsr_program {
    tsr_client *client;
    char *name;         /* owned: the file name used in messages */
    tsr_array **arrays; /* owned handles, in dependency order */
    size_t narrays;
    tsr__output *outputs; /* in file order */
    size_t noutputs;
};

#endif
