/* The embedded local cluster: one scheduler and N worker processes on 127.0.0.1, started from
 * the `tessera` executable and reaped when the client that started them is freed. */
#ifndef TSR_LOCAL_H
#define TSR_LOCAL_H

#include "tessera/tessera.h"

int tsr__client_open(tsr_client *c, const char *address, const char *token, int timeout_ms);
void tsr__client_close(tsr_client *c);
int tsr__client_wait_workers(tsr_client *c, int n, int timeout_ms);
void tsr__client_shutdown_cluster(tsr_client *c);

/* The cores (one PU os-index per physical core) in hwloc order; returns the count or a negative
 * code. *cores is malloc'd. */
int tsr__physical_cores(int **cores);

/* The cpu list ("0,1") for worker w of a local cluster with `threads` threads per worker:
 * cores w*threads .. w*threads+threads-1, wrapping round the available cores. */
void tsr__local_cpus(const int *cores, int ncores, int w, int threads, char *out, size_t size);

#endif
