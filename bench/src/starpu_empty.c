/* StarPU's task overhead, the peer of the small-tasks section: NTASKS independent empty CPU
 * tasks with no data, submitted then waited for; one untimed round first. Adapted from the peer
 * measurements' starpu_empty_tasks.c. Workers and scheduler come from STARPU_NCPU and
 * STARPU_SCHED. Usage: starpu_empty NTASKS   prints "seconds tasks_per_s". */
#include <starpu.h>
#include <stdio.h>
#include <stdlib.h>

static void empty_func(void *descr[], void *arg) {
    (void)descr;
    (void)arg;
}

static struct starpu_codelet cl = {.cpu_funcs = {empty_func}, .nbuffers = 0, .name = "empty"};

int main(int argc, char **argv) {
    if (argc != 2 || atoi(argv[1]) <= 0) {
        fprintf(stderr, "usage: starpu_empty NTASKS\n");
        return 2;
    }
    unsigned n = (unsigned)atoi(argv[1]);
    if (starpu_init(NULL) != 0) {
        fprintf(stderr, "starpu_init failed\n");
        return 1;
    }
    double t = 0;
    for (int rep = 0; rep < 2; rep++) {
        double t0 = starpu_timing_now();
        for (unsigned i = 0; i < n; i++) {
            struct starpu_task *task = starpu_task_create();
            task->cl = &cl; /* detached: StarPU frees it */
            if (starpu_task_submit(task)) {
                fprintf(stderr, "starpu_task_submit failed\n");
                return 1;
            }
        }
        starpu_task_wait_for_all();
        t = (starpu_timing_now() - t0) * 1e-6;
    }
    printf("%.6f %.0f\n", t, n / t);
    starpu_shutdown();
    return 0;
}
