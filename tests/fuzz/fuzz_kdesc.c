/* libFuzzer target: a kernel descriptor as the worker decodes one from a compute message's task
 * (worker/task.c wkd_get: the count check, msgpack-c, tsr__kdesc_unpack). */
#include <stdlib.h>

#include "graph/graph.h"
#include "wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0 || tsr__mpr_check(data, size) != 0) return 0;
    msgpack_zone *zone = msgpack_zone_new(4096);
    msgpack_object obj;
    size_t off = 0;
    if (msgpack_unpack((const char *)data, size, &off, zone, &obj) == MSGPACK_UNPACK_SUCCESS &&
        off == size) {
        tsr_kdesc d = {0};
        int64_t *ib = NULL;
        double *fb = NULL;
        if (tsr__kdesc_unpack(&obj, &d, &ib, &fb) == 0) {
            /* What the worker reads of an accepted descriptor. */
            volatile uint64_t sink = tsr__kdesc_nbytes(&d);
            for (uint32_t k = 0; k < d.ni; k++) sink += (uint64_t)d.i[k];
            for (uint32_t k = 0; k < d.nf; k++) sink += (uint64_t)(d.f[k] == d.f[k]);
            if (d.s)
                for (const char *p = d.s; *p; p++) sink += (uint64_t)*p;
            (void)sink;
        }
        tsr__kdesc_unpack_free(ib, fb);
    }
    msgpack_zone_free(zone);
    return 0;
}
