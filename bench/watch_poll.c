/* bench/watch_cost.sh's probe: asks a scheduler for N monitor snapshots back to back over one
 * connection (what `tessera top` does 4 times a second) and prints the seconds they took. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <tessera/tessera.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: watch_poll HOST:PORT N\n");
        return 2;
    }
    tsr_client *c;
    if (tsr_client_connect_monitor(argv[1], NULL, &c) != 0) {
        fprintf(stderr, "watch_poll: %s\n", tsr_last_error());
        return 1;
    }
    int n = atoi(argv[2]);
    size_t bytes = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        char *json;
        if (tsr_client_info_json(c, 10000, &json) != 0) {
            fprintf(stderr, "watch_poll: %s\n", tsr_last_error());
            return 1;
        }
        for (const char *p = json; *p; p++) bytes++;
        free(json);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.6f %zu\n", (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
           bytes / (size_t)(n > 0 ? n : 1));
    tsr_client_free(c);
    return 0;
}
