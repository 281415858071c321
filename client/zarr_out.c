/* Writing a Zarr v2 directory store (docs/zarr.md). */
#include "client/client.h"

int tsr__zarr_out_check(tsr_client *c, const tsr_array *a, const char *path) {
    (void)path;
    return tsr__fail(c, TSR_EUNSUPPORTED, "array \"%s\": Zarr stores are not written yet", a->name);
}

int tsr__zarr_out_begin(tsr_client *c, tsr__target *t) {
    (void)t;
    return tsr__fail(c, TSR_EUNSUPPORTED, "Zarr stores are not written yet");
}

int tsr__zarr_out_chunk(tsr_client *c, tsr__target *t, int64_t ci, const void *data) {
    (void)t;
    (void)ci;
    (void)data;
    return tsr__fail(c, TSR_EUNSUPPORTED, "Zarr stores are not written yet");
}
