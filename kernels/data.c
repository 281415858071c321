/* The kernels of chunks that come from elsewhere rather than being computed: DATA (a chunk the
 * client sent inside its descriptor, tsr_from_buffer) and HELD (a chunk an earlier job of the
 * same client keeps, tsr_persist, which the worker hands in as the task's one input). Both copy
 * bytes whatever the dtype, so they sit in the dtype-generic table (generic.c). */
#include <string.h>

#include "kernels/kernels_priv.h"

int tsr__k_data(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
                size_t errlen) {
    (void)in;
    (void)nin;
    (void)err;
    (void)errlen;
    /* i[] holds the bytes in memory order (table.c checked there are enough of them). */
    size_t n = (size_t)tsr__kdesc_nbytes(d);
    if (n) memcpy(out->data, d->i, n);
    return 0;
}

int tsr__k_held(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out, char *err,
                size_t errlen) {
    (void)nin;
    (void)err;
    (void)errlen;
    /* The worker passes the held buffer as the output when it may (alias ANY): nothing to do. */
    size_t n = (size_t)tsr__kdesc_nbytes(d);
    if (n && out->data != in[0].data) memcpy(out->data, in[0].data, n);
    return 0;
}
