/* The competing process of the imbalance section: pins itself to one core and spins until
 * killed, so an executor thread pinned to the same core gets about half of it.
 * Usage: spin CORE */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: spin CORE\n");
        return 2;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(argv[1]), &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        return 1;
    }
    volatile unsigned long x = 0;
    for (;;) x++;
}
