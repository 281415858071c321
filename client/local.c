/* The embedded local cluster (`tessera run`, tsr_client_start_local): spawns the scheduler and
 * the workers as real processes of the `tessera` executable, each worker pinned to its own
 * cores, and stops and reaps them all when the client is freed — on success, failure or
 * interruption alike. If the creating process dies without freeing the client, the processes
 * see the end of a pipe whose write end only the creator holds (`--watch-fd`), and stop. */
#include <errno.h>
#include <fcntl.h>
#include <hwloc.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/mman.h>

#include "client/client.h"
#include "wire/auth.h"
#include "tsr_config.h"

extern char **environ;

typedef struct tsr__local {
    pid_t *pids; /* [0] is the scheduler */
    int npids;
    /* The write end of the watch pipe, held (close-on-exec, so no other program inherits it)
     * until the cluster is reaped: its end is the creator's death. */
    int watch_fd;
} tsr__local;

/* The cluster processes get the watch pipe's read end as this descriptor, and the cluster's
 * secret (a memfd holding it) as the next: `--token-file /dev/fd/4`, so that the secret never
 * appears in a command line, which every local user can read (docs/security.md). */
#define WATCH_FD 3
#define SECRET_FD 4
#define SECRET_ARG "/dev/fd/4"
/* The most data roots a local cluster passes its workers. */
#define TSR__LOCAL_MAX_ROOTS 64

int tsr__physical_cores(int **cores) {
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0) return -ENOMEM;
    if (hwloc_topology_load(topo) != 0) {
        hwloc_topology_destroy(topo);
        return -EIO;
    }
    int type = HWLOC_OBJ_CORE;
    int n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
    if (n <= 0) {
        type = HWLOC_OBJ_PU;
        n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
    }
    if (n <= 0) n = 0;
    int *out = malloc(sizeof *out * (size_t)(n ? n : 1));
    if (!out) {
        hwloc_topology_destroy(topo);
        return -ENOMEM;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(topo, (hwloc_obj_type_t)type, (unsigned)i);
        int pu = o && o->cpuset ? hwloc_bitmap_first(o->cpuset) : -1;
        if (pu >= 0) out[k++] = pu;
    }
    hwloc_topology_destroy(topo);
    if (k == 0) {
        out[0] = 0;
        k = 1;
    }
    *cores = out;
    return k;
}

void tsr__local_cpus(const int *cores, int ncores, int w, int threads, char *out, size_t size) {
    size_t len = 0;
    out[0] = 0;
    for (int t = 0; t < threads; t++) {
        int core = cores[(w * threads + t) % ncores];
        int dup = 0;
        for (int u = 0; u < t; u++)
            if (cores[(w * threads + u) % ncores] == core) dup = 1;
        if (dup) continue;
        int n = snprintf(out + len, size - len, "%s%d", len ? "," : "", core);
        if (n < 0 || (size_t)n >= size - len) break;
        len += (size_t)n;
    }
}

/* The environment of the cluster's processes: the caller's, with OPENBLAS_NUM_THREADS=1. Every
 * process links OpenBLAS, whose constructor otherwise starts a thread per core that spins in
 * sched_yield for its first ~0.1 s: in the scheduler and beside each worker's executors, during
 * the first job (4-5% of the 4096² float32 matmul's samples; bench/notes.md, issue 9 §13). The
 * scheduler makes no BLAS call and a worker's executors call it one thread each (the worker's
 * blas_threads, 1 here, which it sets itself). NULL on ENOMEM. */
static char **cluster_env(void) {
    static const char blas[] = "OPENBLAS_NUM_THREADS=";
    size_t n = 0;
    while (environ[n]) n++;
    char **env = malloc((n + 2) * sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], blas, sizeof blas - 1) != 0) env[k++] = environ[i];
    env[k++] = (char *)"OPENBLAS_NUM_THREADS=1";
    env[k] = NULL;
    return env;
}

/* Starts a cluster process with the watch pipe's read end on WATCH_FD, stdin and (unless out_fd is
 * given) stdout on /dev/null, so its ready line never mixes with the program's printed outputs;
 * stderr stays shared for errors. */
static int spawn(const char *exe, char *const argv[], int out_fd, int watch_rd, int secret_fd,
                 pid_t *pid) {
    char **env = cluster_env();
    if (!env) return -ENOMEM;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    /* dup2 onto WATCH_FD clears close-on-exec there (also when watch_rd is WATCH_FD itself).
     * secret_fd is above both (make_secret), so the first dup2 cannot overwrite it. */
    posix_spawn_file_actions_adddup2(&fa, watch_rd, WATCH_FD);
    posix_spawn_file_actions_adddup2(&fa, secret_fd, SECRET_FD);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    else
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(pid, exe, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    return rc ? -rc : 0;
}

/* A random secret for the cluster (hex, NUL-terminated in secret[65]) and a close-on-exec
 * memfd holding it, numbered above SECRET_FD. The fd, or a negative code. */
static int make_secret(char secret[65]) {
    uint8_t raw[32];
    if (tsr__auth_init() != 0) return TSR_EUNSUPPORTED;
    tsr__auth_random(raw, sizeof raw);
    for (int i = 0; i < 32; i++) snprintf(secret + 2 * i, 3, "%02x", raw[i]);
    memset(raw, 0, sizeof raw);
    int fd = memfd_create("tessera-token", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    int hi = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    if (hi < 0) return -errno;
    if (write(hi, secret, 64) != 64 || write(hi, "\n", 1) != 1) {
        int e = errno ? errno : EIO;
        close(hi);
        return -e;
    }
    return hi;
}

/* Reads the scheduler's "... listening on ADDR" line from fd, within timeout_ms. */
static int read_listen_line(int fd, char *addr, size_t size, int timeout_ms) {
    char line[512];
    size_t len = 0;
    double deadline = tsr__now() + timeout_ms / 1000.0;
    while (len < sizeof line - 1) {
        int left = (int)((deadline - tsr__now()) * 1000);
        if (left <= 0) return -ETIMEDOUT;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -ETIMEDOUT;
        ssize_t n = read(fd, line + len, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return TSR_ESPAWN;
        if (line[len] == '\n') {
            line[len] = 0;
            const char *at = strstr(line, "listening on ");
            if (!at) {
                len = 0;
                continue;
            }
            snprintf(addr, size, "%s", at + strlen("listening on "));
            return 0;
        }
        len++;
    }
    return TSR_ESPAWN;
}

static void reap_all(tsr__local *l, double grace) {
    double deadline = tsr__now() + grace;
    int sent_term = 0;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < l->npids; i++) {
            if (l->pids[i] <= 0) continue;
            pid_t r = waitpid(l->pids[i], NULL, WNOHANG);
            if (r == l->pids[i] || (r < 0 && errno == ECHILD))
                l->pids[i] = 0;
            else
                alive++;
        }
        if (!alive) return;
        if (tsr__now() > deadline) {
            /* SIGINT, not SIGTERM: a worker's SIGTERM retires it (moves its chunks first). */
            int sig = sent_term ? SIGKILL : SIGINT;
            for (int i = 0; i < l->npids; i++)
                if (l->pids[i] > 0) kill(l->pids[i], sig);
            if (sent_term) {
                for (int i = 0; i < l->npids; i++)
                    if (l->pids[i] > 0) waitpid(l->pids[i], NULL, 0);
                return;
            }
            sent_term = 1;
            deadline = tsr__now() + 2.0;
        }
        usleep(5000);
    }
}

/* "0,2" into ids; the count, or -1 when malformed, repeated or too many. NULL or "": 0. */
static int parse_gpus(const char *list, int *ids, int max) {
    int n = 0;
    if (!list || !*list) return 0;
    const char *p = list;
    for (;;) {
        char *end;
        if (*p < '0' || *p > '9') return -1;
        long v = strtol(p, &end, 10);
        if (v > 1024 || n == max) return -1;
        for (int k = 0; k < n; k++)
            if (ids[k] == (int)v) return -1;
        ids[n++] = (int)v;
        if (*end == '\0') return n;
        if (*end != ',') return -1;
        p = end + 1;
    }
}

const char *tsr__local_dead(tsr_client *c) {
    tsr__local *l = c->local;
    if (!l || l->npids < 2) return NULL;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (l->pids[0] > 0 && waitid(P_PID, (id_t)l->pids[0], &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        si.si_pid)
        return "the local cluster's scheduler has exited";
    for (int k = 1; k < l->npids; k++) {
        memset(&si, 0, sizeof si);
        if (l->pids[k] <= 0 ||
            waitid(P_PID, (id_t)l->pids[k], &si, WEXITED | WNOHANG | WNOWAIT) != 0 || !si.si_pid)
            return NULL; /* this one is alive */
    }
    return "every worker of the local cluster has died (killed, or crashed: their messages, if "
           "any, are above); nothing is left to compute with";
}

/* Has a cluster process exited? Looked at without reaping it (reap_all does that). */
static const char *exited_early(void *arg) {
    tsr__local *l = arg;
    for (int k = 0; k < l->npids; k++) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)l->pids[k], &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid)
            return k == 0 ? "the scheduler exited during start-up"
                          : "a worker exited during start-up (its message is above)";
    }
    return NULL;
}

void tsr_local_options_default(tsr_local_options *o) {
    memset(o, 0, sizeof *o);
    o->log_level = TSR_LOG_WARN;
}

int tsr_client_start_local(const tsr_local_options *opts, tsr_client **out) {
    *out = NULL;
    tsr_local_options def;
    if (!opts) {
        tsr_local_options_default(&def);
        opts = &def;
    }
    int *cores = NULL;
    int ncores = tsr__physical_cores(&cores);
    if (ncores < 0) return tsr__fail_thread(ncores, "cannot read the machine's topology");
    int gpus[64], ngpu = parse_gpus(opts->gpus, gpus, 64);
    if (ngpu < 0) {
        free(cores);
        return tsr__fail_thread(TSR_EINVALID,
                                "bad GPU list \"%s\": want device ids such as 0 or 0,1 (at most "
                                "64, each once)",
                                opts->gpus);
    }
    if (opts->workers < 0 && ngpu == 0) {
        free(cores);
        return tsr__fail_thread(TSR_EINVALID, "no workers: no CPU workers and no GPUs asked for");
    }
    /* Each GPU worker's thread gets a core of its own, the last ones, when there are more cores
     * than GPUs; the CPU workers share the rest. */
    int cpu_cores = ncores > ngpu ? ncores - ngpu : ncores;
    /* tessera.h, tsr_local_options: one worker with a thread per core unless told otherwise. */
    int workers = opts->workers, threads = opts->threads;
    if (workers < 0) {
        workers = 0;
        threads = 1;
    } else if (workers == 0 && threads <= 0) {
        workers = 1;
        threads = cpu_cores;
    } else if (threads <= 0) {
        threads = 1;
    } else if (workers == 0) {
        workers = cpu_cores / threads > 0 ? cpu_cores / threads : 1;
    }
    if (workers > 1024) {
        free(cores);
        return tsr__fail_thread(TSR_EINVALID, "too many workers: %d", workers);
    }
    if (opts->n_data_roots < 0 || opts->n_data_roots > TSR__LOCAL_MAX_ROOTS ||
        (opts->n_data_roots > 0 && !opts->data_roots)) {
        free(cores);
        return tsr__fail_thread(TSR_EINVALID, "data roots: between 0 and %d directories",
                                TSR__LOCAL_MAX_ROOTS);
    }
    if (opts->n_plugin_dirs < 0 || opts->n_plugin_dirs > TSR__LOCAL_MAX_ROOTS ||
        (opts->n_plugin_dirs > 0 && !opts->plugin_dirs)) {
        free(cores);
        return tsr__fail_thread(TSR_EINVALID, "plugin directories: between 0 and %d",
                                TSR__LOCAL_MAX_ROOTS);
    }
    for (int k = 0; k < opts->n_plugin_dirs; k++)
        if (!opts->plugin_dirs[k] || !opts->plugin_dirs[k][0]) {
            free(cores);
            return tsr__fail_thread(TSR_EINVALID, "plugin directory %d is empty", k);
        }
    for (int k = 0; k < opts->n_data_roots; k++)
        if (!opts->data_roots[k] || !opts->data_roots[k][0]) {
            free(cores);
            return tsr__fail_thread(TSR_EINVALID, "data root %d is empty", k);
        }
    char secret[65] = "";
    int secret_fd = -1;
    const char *exe = opts->tessera_path;
    int installed = access(TSR_INSTALLED_EXE, X_OK) == 0;
    if (!exe) exe = installed ? TSR_INSTALLED_EXE : "tessera";
    /* Where it looked, for the message when the executable cannot be started. */
    char looked[1200];
    if (opts->tessera_path)
        snprintf(looked, sizeof looked, "tsr_local_options.tessera_path is \"%s\"",
                 opts->tessera_path);
    else
        snprintf(looked, sizeof looked,
                 "looked for the installed \"%s\" (%s), else \"tessera\" on PATH; set "
                 "tsr_local_options.tessera_path to the `tessera` executable",
                 TSR_INSTALLED_EXE, installed ? "found" : "absent");

    tsr_client *c;
    int rc = tsr_client_new_offline(&c);
    if (rc) {
        free(cores);
        return rc;
    }
    tsr__client_set_logger(c, &opts->logger, opts->log_level);
    tsr__local *l = calloc(1, sizeof *l);
    pid_t *pids = calloc((size_t)workers + (size_t)ngpu + 1, sizeof *pids);
    if (!l || !pids) {
        free(l);
        free(pids);
        free(cores);
        tsr_client_free(c);
        return tsr__fail_thread(-ENOMEM, "out of memory");
    }
    l->pids = pids;
    l->watch_fd = -1;
    c->local = l;

    if ((secret_fd = make_secret(secret)) < 0) {
        rc = secret_fd;
        tsr__fail_thread(rc, "cannot make the cluster's secret: %s", tsr_strerror(rc));
        goto fail;
    }

    int wfd[2];
    if (pipe2(wfd, O_CLOEXEC) != 0) {
        rc = -errno;
        tsr__fail_thread(rc, "pipe: %s", strerror(-rc));
        goto fail;
    }
    l->watch_fd = wfd[1];
    char watch_arg[16];
    snprintf(watch_arg, sizeof watch_arg, "%d", WATCH_FD);

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        rc = -errno;
        close(wfd[0]);
        tsr__fail_thread(rc, "pipe: %s", strerror(-rc));
        goto fail;
    }
    /* A cluster of fewer workers than the allowed failures could never reach the count: a task
     * that killed every one of them would leave the job waiting for workers that never come.
     * Here nobody else joins, so every worker is the limit. */
    int allowed =
        opts->allowed_failures > 0 ? opts->allowed_failures : TSR_ALLOWED_FAILURES_DEFAULT;
    if (workers + ngpu < allowed) allowed = workers + ngpu;
    char failures[16];
    snprintf(failures, sizeof failures, "%d", allowed);
    char *sargv[12] = {(char *)exe,  "scheduler", "--listen",     "127.0.0.1:0",
                       "--watch-fd", watch_arg,   "--token-file", SECRET_ARG};
    size_t na = 8;
    if (allowed != TSR_ALLOWED_FAILURES_DEFAULT) {
        sargv[na++] = "--allowed-failures";
        sargv[na++] = failures;
    }
    if (opts->verbose) sargv[na++] = "--verbose";
    sargv[na] = NULL;
    rc = spawn(exe, sargv, pfd[1], wfd[0], secret_fd, &l->pids[0]);
    close(pfd[1]);
    if (rc) {
        close(pfd[0]);
        close(wfd[0]);
        tsr__fail_thread(TSR_ESPAWN, "cannot start \"%s scheduler\": %s (%s)", exe, strerror(-rc),
                         looked);
        rc = TSR_ESPAWN;
        goto fail;
    }
    l->npids = 1;
    char addr[128];
    rc = read_listen_line(pfd[0], addr, sizeof addr, 20000);
    close(pfd[0]);
    if (rc) {
        close(wfd[0]);
        tsr__fail_thread(TSR_ESPAWN, "the scheduler (\"%s scheduler\") did not start: %s", exe,
                         rc == -ETIMEDOUT ? "no listening address within 20 s" : "it exited");
        rc = TSR_ESPAWN;
        goto fail;
    }
    /* tessera.h, tsr_local_options.memory_limit: each worker's share of the machine. */
    char memlim[32] = "none";
    if (opts->memory_limit > 0) {
        snprintf(memlim, sizeof memlim, "%lld", (long long)opts->memory_limit);
    } else if (opts->memory_limit == 0) {
        uint64_t total = tsr__system_memory(), margin = total / 10;
        if (margin < ((uint64_t)512 << 20)) margin = (uint64_t)512 << 20;
        uint64_t share = total > 2 * margin ? (total - margin) / (uint64_t)(workers + ngpu) : 0;
        if (share) snprintf(memlim, sizeof memlim, "%llu", (unsigned long long)share);
    }
    for (int w = 0; w < workers + ngpu; w++) {
        int g = w - workers; /* a GPU worker's index in gpus, or negative */
        char cpus[256], name[32], nthreads[16], id[16], dml[32];
        if (g < 0) {
            tsr__local_cpus(cores, cpu_cores, w, threads, cpus, sizeof cpus);
            snprintf(name, sizeof name, "local-%d", w);
        } else {
            snprintf(cpus, sizeof cpus, "%d", cores[ncores > ngpu ? ncores - 1 - g : g % ncores]);
            snprintf(name, sizeof name, "local-gpu-%d", gpus[g]);
            snprintf(id, sizeof id, "%d", gpus[g]);
            snprintf(dml, sizeof dml, "%lld", (long long)opts->device_memory_limit);
        }
        snprintf(nthreads, sizeof nthreads, "%d", threads);
        char *wargv[26 + 2 * TSR__LOCAL_MAX_ROOTS + 2 * TSR__LOCAL_MAX_ROOTS];
        int a = 0;
        char *fixed[] = {(char *)exe,    "worker",  "--scheduler",    addr,
                         "--cpus",       cpus,      "--name",         name,
                         "--watch-fd",   watch_arg, "--memory-limit", memlim,
                         "--token-file", SECRET_ARG};
        for (size_t k = 0; k < TSR__ARRAY_LEN(fixed); k++) wargv[a++] = fixed[k];
        if (g < 0) {
            wargv[a++] = "--threads";
            wargv[a++] = nthreads;
        } else {
            wargv[a++] = "--gpu";
            wargv[a++] = id;
            if (opts->device_memory_limit > 0) {
                wargv[a++] = "--device-memory-limit";
                wargv[a++] = dml;
            }
        }
        if (opts->spill_dir && *opts->spill_dir) {
            wargv[a++] = "--spill-dir";
            wargv[a++] = (char *)opts->spill_dir;
        }
        for (int k = 0; k < opts->n_data_roots; k++) {
            wargv[a++] = "--data-root";
            wargv[a++] = (char *)opts->data_roots[k];
        }
        for (int k = 0; k < opts->n_plugin_dirs; k++) {
            wargv[a++] = "--plugin-dir";
            wargv[a++] = (char *)opts->plugin_dirs[k];
        }
        if (opts->verbose) wargv[a++] = "--verbose";
        wargv[a] = NULL;
        rc = spawn(exe, wargv, -1, wfd[0], secret_fd, &l->pids[l->npids]);
        if (rc) {
            close(wfd[0]);
            if (g < 0)
                tsr__fail_thread(TSR_ESPAWN, "cannot start \"%s worker\": %s (%s)", exe,
                                 strerror(-rc), looked);
            else
                tsr__fail_thread(TSR_ESPAWN, "cannot start \"%s worker --gpu %d\": %s (%s)", exe,
                                 gpus[g], strerror(-rc), looked);
            rc = TSR_ESPAWN;
            goto fail;
        }
        l->npids++;
    }
    close(wfd[0]); /* only the cluster processes hold the read end */
    close(secret_fd);
    secret_fd = -1;
    rc = tsr__client_open(c, addr, secret, 10000);
    memset(secret, 0, sizeof secret);
    if (rc == 0) rc = tsr__client_wait_workers(c, workers + ngpu, 30000, exited_early, l);
    if (rc) {
        tsr__fail_thread(rc, "cannot start the local cluster: %s", c->errmsg);
        goto fail;
    }
    free(cores);
    *out = c;
    return 0;
fail:
    free(cores);
    if (secret_fd >= 0) close(secret_fd);
    memset(secret, 0, sizeof secret);
    {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", tsr_last_error());
        tsr_client_free(c);
        tsr__fail_thread(rc, "%s", keep);
    }
    return rc;
}

int tsr__local_pids(const tsr_client *c, const pid_t **pids) {
    if (!c->local) return 0;
    *pids = c->local->pids;
    return c->local->npids;
}

void tsr__local_free(tsr_client *c) {
    tsr__local *l = c->local;
    if (!l) return;
    /* A clean shutdown takes milliseconds; past the grace period the stragglers are
     * terminated, then killed. */
    reap_all(l, 5.0);
    if (l->watch_fd >= 0) close(l->watch_fd);
    free(l->pids);
    free(l);
    c->local = NULL;
}
