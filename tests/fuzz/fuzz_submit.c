/* libFuzzer target: the scheduler's decoder of a submit's graph payload (scheduler/proto.c),
 * then the checks it runs on an accepted graph. */
#include <stdlib.h>

#include "scheduler/sched.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tsr__jobspec spec;
    char err[256];
    if (tsr__proto_submit(data, size, &spec, err, sizeof err) == 0) {
        (void)tsr__jobspec_check(&spec, err, sizeof err);
        tsr__jobspec_free(&spec);
    }
    return 0;
}
