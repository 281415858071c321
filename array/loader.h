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

/* A file a `load` of the program reads (loader_paths.c). */
typedef struct tsr__load_input {
    const char *array; /* the loading array's name */
    const char *path;  /* as the program wrote it */
} tsr__load_input;

/* The outputs' paths against the program file (file_path; NULL when the program is a string),
 * the inputs and each other, and their directories: 0, or TSR_EPROGRAM with a message naming
 * file and the array (loader_paths.c). */
int tsr__program_check_paths(tsr_client *c, const char *file, const char *file_path,
                             const tsr_program *p, const tsr__load_input *in, size_t nin);

/* The array (a member of "arrays") and its key that enclose byte pos of a program's text, or
 * empty strings when pos is elsewhere. */
void tsr__json_where(const char *text, size_t len, size_t pos, char *array, size_t asize, char *key,
                     size_t ksize);

#endif
