/* `tessera scheduler` and `tessera worker`: thin wrappers over the server handles. Each prints
 * one line on stdout once it is ready, which the local cluster and the tests read to learn the
 * port picked with port 0. The process-wide settings the library leaves to its caller are made
 * here: SIGINT/SIGTERM handlers that call *_stop (a worker's first SIGTERM retires it, with a
 * SIGALRM deadline), the malloc policy and OpenBLAS's threads (a
 * worker), and the environment ($TESSERA_TOKEN, $TESSERA_SCHEDULER, $TESSERA_PLACEMENT).
 * SIGPIPE is ignored in main() for every command. The hidden --watch-fd N (given by the
 * embedded local cluster) stops the process when its creator dies. */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* The server the signal handlers stop. Set before the handlers are installed. */
static tsr_scheduler *the_scheduler;
static tsr_worker *the_worker;
/* A worker's --retire-timeout in seconds (0: SIGTERM stops at once), and whether a SIGTERM came. */
static unsigned retire_timeout_s = 30;
static volatile sig_atomic_t retiring;

static void on_stop_signal(int sig) {
    /* All async-signal-safe (uv_async_send, alarm). */
    if (the_scheduler) tsr_scheduler_stop(the_scheduler);
    if (!the_worker) return;
    if (sig == SIGTERM && !retiring && retire_timeout_s > 0) {
        /* The first SIGTERM retires (docs/cli/worker.md); a second one, SIGINT or the deadline
         * (SIGALRM) stops at once. */
        retiring = 1;
        tsr_worker_retire(the_worker);
        alarm(retire_timeout_s);
    } else {
        tsr_worker_stop(the_worker);
    }
}

static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
}

/* The servers' log lines, as "tessera-WHO: LEVEL: message" on stderr; cookie is WHO. One
 * fprintf per line, so lines from several processes do not interleave mid-line. */
static void log_to_stderr(void *cookie, int level, const char *msg) {
    fprintf(stderr, "tessera-%s: %s: %s\n", (const char *)cookie, tsr_log_level_name(level), msg);
}

/* Blocks on the read end of a pipe whose write end only the creating process holds: when it
 * ends (the creator exited, crashed or was killed, whatever thread started us), the process
 * stops the way SIGINT stops it (at once: a worker's SIGTERM would retire it). PR_SET_PDEATHSIG
 * would follow the creating thread instead. */
static void *watch_main(void *arg) {
    int fd = (int)(intptr_t)arg;
    char buf[64];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0 || (n < 0 && errno == EINTR)) continue;
        break; /* end of file, or the descriptor is unusable: the creator cannot be watched */
    }
    kill(getpid(), SIGINT);
    /* Stays until the process exits: a thread that ends while the process is exiting races the
     * exit-time leak check of ASan builds, whose tracer then hung with the process half gone
     * (client::local_cluster_dies_with_its_creator, 1 run in 10 with three suites in parallel).
     * Every signal is blocked here, so nothing wakes it. */
    for (;;) pause();
    return NULL;
}

/* Starts the watch of --watch-fd's descriptor on a thread of its own with every signal
 * blocked, so that signals keep going to the thread that handles them. 0, or an exit status. */
static int start_watch(const char *arg) {
    int fd = cli_parse_int("--watch-fd", arg, 0, 1 << 20);
    if (fd < 0) return EXIT_INVALID;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        cli_error("--watch-fd %d: %s", fd, strerror(errno));
        return EXIT_INVALID;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t th;
    int rc = pthread_create(&th, NULL, watch_main, (void *)(intptr_t)fd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        cli_error("--watch-fd: cannot start a thread: %s", strerror(rc));
        return EXIT_FAILED;
    }
    pthread_detach(th);
    return 0;
}

static const char scheduler_usage[] =
    "usage: tessera scheduler [OPTIONS]\n"
    "\n"
    "Runs a scheduler until SIGINT/SIGTERM or a client's shutdown request. Prints\n"
    "\"tessera scheduler listening on HOST:PORT\" once listening.\n"
    "\n"
    "options:\n"
    "  --listen HOST:PORT  address to listen on (default 127.0.0.1:8786; port 0 picks one)\n"
    "  --token TOKEN       shared token required from every client and worker; mandatory off\n"
    "                      loopback (default: $TESSERA_TOKEN)\n"
    "  --token-file FILE   the token is FILE's first line (keeps it off the command line)\n"
    "  --heartbeat MS      send every worker, client and monitor a heartbeat this often\n"
    "                      (default 1000)\n"
    "  --worker-timeout MS a worker silent this long is lost: its tasks go elsewhere and its\n"
    "                      connection closes (default 10000)\n"
    "  --allowed-failures N\n"
    "                      a task that was running on N workers when each of them died is\n"
    "                      marked erred and fails its job instead of being retried (default 3)\n"
    "  --verbose           log connections and jobs\n"
    "  --help              this text\n";

int cmd_scheduler(int argc, char **argv) {
    static const struct option longopts[] = {
        {"listen", required_argument, 0, 'l'},
        {"token", required_argument, 0, 'k'},
        {"token-file", required_argument, 0, 'K'},
        {"heartbeat", required_argument, 0, 'H'},
        {"worker-timeout", required_argument, 0, 'T'},
        {"allowed-failures", required_argument, 0, 'F'},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {"watch-fd", required_argument, 0, 'W'}, /* hidden: the local cluster's creator */
        {0, 0, 0, 0},
    };
    tsr_scheduler_options o;
    tsr_scheduler_options_default(&o);
    o.token = getenv("TESSERA_TOKEN");
    /* A baseline for benchmarks only (bench/, docs/ARCHITECTURE.md). */
    const char *pl = getenv("TESSERA_PLACEMENT");
    if (pl && strcmp(pl, "roundrobin") == 0) o.placement = TSR_PLACEMENT_ROUNDROBIN;
    o.logger.callback = log_to_stderr;
    o.logger.cookie = (void *)"scheduler";
    const char *watch = NULL;
    static char token_buf[256];
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "l:vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l':
            o.listen = optarg;
            break;
        case 'k':
            o.token = optarg;
            break;
        case 'K':
            if (cli_token_file(optarg, token_buf, sizeof token_buf)) return EXIT_INVALID;
            o.token = token_buf;
            break;
        case 'H':
            if ((o.heartbeat_ms = cli_parse_int("--heartbeat", optarg, 1, 3600000)) < 0)
                return EXIT_INVALID;
            break;
        case 'T':
            if ((o.worker_timeout_ms = cli_parse_int("--worker-timeout", optarg, 1, 86400000)) < 0)
                return EXIT_INVALID;
            break;
        case 'F':
            if ((o.allowed_failures = cli_parse_int("--allowed-failures", optarg, 1, 255)) < 0)
                return EXIT_INVALID;
            break;
        case 'v':
            o.log_level = TSR_LOG_INFO;
            break;
        case 'W':
            watch = optarg;
            break;
        case 'h':
            fputs(scheduler_usage, stdout);
            return EXIT_OK;
        default:
            fputs(scheduler_usage, stderr);
            return EXIT_INVALID;
        }
    }
    if (optind != argc) {
        cli_error("scheduler takes no arguments (see tessera scheduler --help)");
        return EXIT_INVALID;
    }
    int st = watch ? start_watch(watch) : 0;
    if (st) return st;
    tsr_scheduler *s;
    int rc = tsr_scheduler_new(&o, &s);
    if (rc == 0) {
        /* Handlers first: whoever reads the line below may signal us at once. */
        the_scheduler = s;
        install_stop_handlers();
        printf("tessera scheduler listening on %s\n", tsr_scheduler_address(s));
        fflush(stdout);
        rc = tsr_scheduler_run(s);
        tsr_scheduler_free(s);
    }
    if (rc) {
        cli_error("scheduler: %s", tsr_strerror(rc));
        return rc == TSR_EINVALID ? EXIT_INVALID : EXIT_FAILED;
    }
    return EXIT_OK;
}

static void worker_ready(const char *address, void *user) {
    printf("tessera worker %s ready on %s\n", (const char *)user, address);
    fflush(stdout);
}

static const char worker_usage[] =
    "usage: tessera worker [OPTIONS]\n"
    "\n"
    "Runs a worker until its scheduler goes away, SIGINT or a shutdown request. SIGTERM\n"
    "retires it: the scheduler moves the chunks only it holds to other workers, then stops\n"
    "it; a second SIGTERM, SIGINT or --retire-timeout stops it at once.\n"
    "\n"
    "options:\n"
    "  --scheduler HOST:PORT  the scheduler (default: $TESSERA_SCHEDULER)\n"
    "  --threads T            executor threads, each pinned to one core (default 1)\n"
    "  --cpus LIST            cores to pin to, e.g. 0-3,6 (default: all)\n"
    "  --gpu ID               run as a GPU worker on that device: one GPU executor, on a\n"
    "                         core near the device within --cpus (docs/gpu.md)\n"
    "  --device-memory-limit BYTES  device memory for chunks, e.g. 20GiB (default: the\n"
    "                         device's free memory less a tenth)\n"
    "  --name NAME            worker name (default HOST-PID)\n"
    "  --listen-host HOST     address peers reach this worker on (default 127.0.0.1)\n"
    "  --memory-limit SIZE    chunk memory limit: 4GiB, 512MB, or 0.5 of the machine's\n"
    "                         memory; none for no limit (default: the machine's memory);\n"
    "                         chunks spill to disk above 70% of it\n"
    "  --spill-dir DIR        where chunks spill (default: $TMPDIR, else /tmp)\n"
    "  --blas-threads N       threads one BLAS call may use (default 1)\n"
    "  --token TOKEN          shared token (default: $TESSERA_TOKEN)\n"
    "  --token-file FILE      the token is FILE's first line (keeps it off the command line)\n"
    "  --data-root DIR        `load` reads only .npy files and Zarr stores under DIR\n"
    "                         (repeatable; default: the working directory with a token, any\n"
    "                         path without one; docs/security.md)\n"
    "  --plugin-dir DIR       load user kernels (map_blocks) from DIR only, as\n"
    "                         DIR/libNAME.so or DIR/NAME.so (repeatable; default: none;\n"
    "                         docs/plugins.md)\n"
    "  --heartbeat MS         send the scheduler a heartbeat this often (default 1000)\n"
    "  --timeout MS           stop when the scheduler sends nothing this long, and fail a\n"
    "                         fetch from a peer that sends nothing this long (default 30000)\n"
    "  --retire-timeout S     after SIGTERM, stop at once if not retired within S seconds\n"
    "                         (default 30; 0: SIGTERM stops at once)\n"
    "  --verbose              log tasks and transfers\n"
    "  --help                 this text\n";

int cmd_worker(int argc, char **argv) {
    static const struct option longopts[] = {
        {"scheduler", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'},
        {"cpus", required_argument, 0, 'c'},
        {"gpu", required_argument, 0, 'g'},
        {"name", required_argument, 0, 'n'},
        {"listen-host", required_argument, 0, 'L'},
        {"memory-limit", required_argument, 0, 'm'},
        {"device-memory-limit", required_argument, 0, 'D'},
        {"spill-dir", required_argument, 0, 'S'},
        {"blas-threads", required_argument, 0, 'b'},
        {"token", required_argument, 0, 'k'},
        {"token-file", required_argument, 0, 'K'},
        {"data-root", required_argument, 0, 'R'},
        {"plugin-dir", required_argument, 0, 'X'},
        {"heartbeat", required_argument, 0, 'H'},
        {"timeout", required_argument, 0, 'T'},
        {"retire-timeout", required_argument, 0, 'r'},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {"watch-fd", required_argument, 0, 'W'}, /* hidden: the local cluster's creator */
        {0, 0, 0, 0},
    };
    tsr_worker_options o;
    tsr_worker_options_default(&o);
    o.scheduler = getenv("TESSERA_SCHEDULER");
    o.token = getenv("TESSERA_TOKEN");
    /* Test-only fault injection (docs/cli/worker.md): tasks of this kernel family kill us. */
    o.fault_kill_kernel = getenv("TESSERA_FAULT_KILL_KERNEL");
    /* Which pages chunk buffers use (docs/cli/worker.md): measured at start unless this says. */
    if ((o.huge_pages = cli_huge_pages_env()) < -1) return EXIT_INVALID;
    const char *watch = NULL;
    static char token_buf[256];
    static const char *roots[64], *pdirs[64];
    int nroots = 0, npdirs = 0;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "s:t:c:g:n:vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            o.scheduler = optarg;
            break;
        case 't':
            if ((o.threads = cli_parse_int("--threads", optarg, 1, 1024)) < 0) return 2;
            break;
        case 'c':
            o.cpus = optarg;
            break;
        case 'g':
            if ((o.gpu = cli_parse_int("--gpu", optarg, 0, 1024)) < 0) return 2;
            break;
        case 'n':
            o.name = optarg;
            break;
        case 'L':
            o.listen_host = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "none") == 0) {
                o.memory_limit = -1;
            } else if ((o.memory_limit = cli_parse_memory("--memory-limit", optarg)) <= 0) {
                if (o.memory_limit == 0) cli_error("--memory-limit must be more than 0 bytes");
                return EXIT_INVALID;
            }
            break;
        case 'S':
            o.spill_dir = optarg;
            break;
        case 'D':
            if ((o.device_memory_limit = cli_parse_bytes("--device-memory-limit", optarg)) <= 0) {
                if (o.device_memory_limit == 0)
                    cli_error("--device-memory-limit must be more than 0 bytes");
                return EXIT_INVALID;
            }
            break;
        case 'b':
            if ((o.blas_threads = cli_parse_int("--blas-threads", optarg, 1, 1024)) < 0)
                return EXIT_INVALID;
            break;
        case 'k':
            o.token = optarg;
            break;
        case 'K':
            if (cli_token_file(optarg, token_buf, sizeof token_buf)) return EXIT_INVALID;
            o.token = token_buf;
            break;
        case 'R':
            if (nroots == (int)(sizeof roots / sizeof *roots)) {
                cli_error("at most %d --data-root options", nroots);
                return EXIT_INVALID;
            }
            roots[nroots++] = optarg;
            o.data_roots = roots;
            o.n_data_roots = nroots;
            break;
        case 'X':
            if (cli_plugin_dir(optarg, pdirs, (int)(sizeof pdirs / sizeof *pdirs), &npdirs))
                return EXIT_INVALID;
            o.plugin_dirs = pdirs;
            o.n_plugin_dirs = npdirs;
            break;
        case 'H':
            if ((o.heartbeat_ms = cli_parse_int("--heartbeat", optarg, 1, 3600000)) < 0)
                return EXIT_INVALID;
            break;
        case 'T':
            if ((o.timeout_ms = cli_parse_int("--timeout", optarg, 1, 86400000)) < 0)
                return EXIT_INVALID;
            break;
        case 'v':
            o.log_level = TSR_LOG_INFO;
            break;
        case 'r': {
            int t = cli_parse_int("--retire-timeout", optarg, 0, 86400);
            if (t < 0) return EXIT_INVALID;
            retire_timeout_s = (unsigned)t;
            break;
        }
        case 'W':
            watch = optarg;
            break;
        case 'h':
            fputs(worker_usage, stdout);
            return EXIT_OK;
        default:
            fputs(worker_usage, stderr);
            return EXIT_INVALID;
        }
    }
    if (optind != argc) {
        cli_error("worker takes no arguments (see tessera worker --help)");
        return EXIT_INVALID;
    }
    if (!o.scheduler || !*o.scheduler) {
        cli_error("no scheduler given: use --scheduler HOST:PORT or set TESSERA_SCHEDULER");
        return EXIT_INVALID;
    }
    int st = watch ? start_watch(watch) : 0;
    if (st) return st;
    /* The library's default name, made here so that the log lines can carry it from the
     * first one on. */
    char name[64], who[96];
    /* The ready line names the worker as given, or "worker" (docs/cli/worker.md). */
    o.user = (void *)(o.name && *o.name ? o.name : "worker");
    if (!o.name || !*o.name) {
        char host[48] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(name, sizeof name, "%s-%ld", host, (long)getpid());
        o.name = name;
    }
    snprintf(who, sizeof who, "worker %s", o.name);
    o.logger.callback = log_to_stderr;
    o.logger.cookie = who;
    o.on_ready = worker_ready;
    /* Chunk buffers of 64 KiB and more come from the worker's buffer pool, never from malloc;
     * what stays on the heap and can be large is message buffers and task arrays. glibc's
     * dynamic mmap threshold rises to the largest size freed so far, after which such blocks
     * come from the heap and freed ones stay resident (only the top of the heap is trimmed). A
     * fixed threshold keeps every large block in its own mapping, returned when freed. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024);
    /* Executors use one core each: one BLAS call must not spread over the others. */
    openblas_set_num_threads(o.blas_threads);
    tsr_worker *w;
    int rc = tsr_worker_new(&o, &w);
    if (rc == 0) {
        the_worker = w;
        install_stop_handlers();
        rc = tsr_worker_run(w);
        tsr_worker_free(w);
    }
    if (rc) {
        cli_error("worker: %s", tsr_strerror(rc));
        return rc == TSR_EINVALID ? EXIT_INVALID : EXIT_FAILED;
    }
    return EXIT_OK;
}
