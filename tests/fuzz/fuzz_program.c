/* libFuzzer target: a program's JSON (array/loader.c), loaded and lowered as `tessera check`
 * does, on a client with no cluster. */
#include <stdlib.h>
#include <string.h>

#include "tessera/tessera.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tsr_client *c;
    if (!c && tsr_client_new_offline(&c) != 0) abort();
    char *json = malloc(size + 1);
    if (!json) return 0;
    memcpy(json, data, size);
    json[size] = 0;
    tsr_program *p = NULL;
    if (tsr_program_load_string(c, json, "fuzz.json", &p) == 0) {
        /* Lowered (as `tessera check` counts tasks) when the graph is small enough to be
         * quick: a few bytes can describe a billion chunks, which is not a decoder bug. */
        int64_t chunks = 0;
        size_t n = tsr_program_narrays(p);
        for (size_t i = 0; i < n; i++) {
            tsr_array *a = tsr_program_array(p, i);
            int64_t k = 1;
            for (int d = 0; d < tsr_array_ndim(a) && k <= 4096; d++) k *= tsr_array_numchunks(a, d);
            chunks += k;
        }
        if (chunks <= 4096) {
            tsr_array **arrays = malloc(n * sizeof *arrays);
            for (size_t i = 0; arrays && i < n; i++) arrays[i] = tsr_program_array(p, i);
            if (arrays) (void)tsr_task_count(arrays, n);
            free(arrays);
        }
        tsr_program_free(p);
    }
    free(json);
    return 0;
}
