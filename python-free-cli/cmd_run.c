/* `tessera run` and `tessera submit`: validate a program file, run it on an embedded local
 * cluster or a running scheduler, write its outputs and, with --stats and --trace, the run's
 * statistics and its trace; progress, the summary line and --report on stderr (progress.c).
 * The program is validated on an offline client first, so an invalid file never starts a
 * cluster and never creates an output. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* The client a SIGINT handler interrupts (the CLI's one piece of process-wide state: signal
 * handlers have no other way to reach it). */
static tsr_client *volatile interrupt_target;
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
    if (interrupt_target) tsr_client_interrupt(interrupt_target);
}

static void install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Writes the statistics of the computation c just finished to path (the library writes it
 * under a temporary name and renames it). A program with no outputs computes nothing: its file
 * says so with zero tasks. 0, or the exit status after printing the error. */
static int write_stats(tsr_client *c, const char *path) {
    if (tsr_client_save_stats(c, path) != 0) {
        cli_error("%s", tsr_client_errmsg(c));
        return EXIT_FAILED;
    }
    return EXIT_OK;
}

/* Writes the trace of the computation c just finished (run with tracing) to path, the same way.
 * A program with no outputs computes nothing: its trace has no events. Events the scheduler
 * could not keep are said on stderr. 0, or the exit status. */
static int write_trace(tsr_client *c, const char *path) {
    uint64_t dropped = 0;
    if (tsr_client_save_trace(c, path, &dropped) != 0) {
        cli_error("%s", tsr_client_errmsg(c));
        return EXIT_FAILED;
    }
    if (dropped)
        cli_error("warning: the trace in \"%s\" misses %llu events (the scheduler keeps at most "
                  "1,000,000 per computation)",
                  path, (unsigned long long)dropped);
    return EXIT_OK;
}

/* The options run and submit share. */
typedef struct run_opts {
    int progress;      /* CLI_PROGRESS_* */
    int report;        /* --report */
    const char *stats; /* --stats FILE, or NULL */
    const char *trace; /* --trace FILE, or NULL */
    int no_fuse;       /* --no-fuse */
} run_opts;

/* Parses an option run and submit share: 1 if it was one, 0 if not, -1 after an error. */
static int shared_option(int ch, run_opts *o) {
    switch (ch) {
    case 'P':
        o->progress = CLI_PROGRESS_OFF;
        return 1;
    case 'p':
        o->progress = CLI_PROGRESS_FORCE;
        return 1;
    case 'r':
        o->report = 1;
        return 1;
    case 'U':
        o->no_fuse = 1;
        return 1;
    case 'S':
        if (!*optarg) {
            cli_error("--stats needs a file name");
            return -1;
        }
        o->stats = optarg;
        return 1;
    case 'T':
        if (!*optarg) {
            cli_error("--trace needs a file name");
            return -1;
        }
        o->trace = optarg;
        return 1;
    default:
        return 0;
    }
}

/* A file's identity for comparing paths: an existing file's device and inode, or for a name
 * not there yet its directory's and the last component (as the program loader compares
 * outputs). 0 when neither can be found. */
typedef struct path_key {
    dev_t dev;
    ino_t ino;
    char base[256];
} path_key;

static int path_key_of(const char *path, path_key *k) {
    struct stat st;
    memset(k, 0, sizeof *k);
    if (stat(path, &st) == 0) {
        k->dev = st.st_dev;
        k->ino = st.st_ino;
        return 1;
    }
    char dir[4096];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1,
             slash ? path : ".");
    snprintf(k->base, sizeof k->base, "%s", slash ? slash + 1 : path);
    if (stat(dir, &st) != 0) return 0;
    k->dev = st.st_dev;
    k->ino = st.st_ino;
    return 1;
}

/* Two spellings of one file; never for a character device, which any number of outputs may
 * share (/dev/null). */
static int same_path(const char *a, const char *b) {
    struct stat st;
    if (stat(a, &st) == 0 && S_ISCHR(st.st_mode)) return 0;
    path_key x, y;
    return path_key_of(a, &x) && path_key_of(b, &y) && x.dev == y.dev && x.ino == y.ino &&
           strcmp(x.base, y.base) == 0;
}

/* --stats and --trace must not overwrite the program, an output or each other: 0, or an error
 * printed and EXIT_INVALID. */
static int check_run_files(const char *path, const tsr_program *p, const run_opts *ro) {
    const char *opt[2] = {"--stats", "--trace"}, *file[2] = {ro->stats, ro->trace};
    for (int k = 0; k < 2; k++) {
        if (!file[k]) continue;
        if (same_path(file[k], path)) {
            cli_error("%s \"%s\" is the program file %s", opt[k], file[k], path);
            return EXIT_INVALID;
        }
        if (k == 1 && file[0] && same_path(file[0], file[1])) {
            cli_error("--stats and --trace both write \"%s\"", file[1]);
            return EXIT_INVALID;
        }
        for (size_t i = 0; i < tsr_program_noutputs(p); i++) {
            const char *out = NULL;
            tsr_array *a = tsr_program_output(p, i, &out);
            if (!out || !strcmp(out, "-") || !same_path(file[k], out)) continue;
            cli_error("%s \"%s\" is the output of array \"%s\" (\"%s\")", opt[k], file[k],
                      tsr_array_name(a), out);
            return EXIT_INVALID;
        }
    }
    return 0;
}

/* Loads the program on an offline client and checks the files the run writes: 0, or the exit
 * status after printing the error. */
static int validate(const char *path, const run_opts *ro) {
    tsr_client *off;
    int rc = tsr_client_new_offline(&off);
    if (rc) {
        cli_error("%s", tsr_last_error());
        return EXIT_FAILED;
    }
    tsr_program *p;
    rc = tsr_program_load(off, path, &p);
    if (rc) {
        cli_error("%s", tsr_client_errmsg(off));
        tsr_client_free(off);
        return cli_status(rc) == EXIT_FAILED ? EXIT_INVALID : cli_status(rc);
    }
    rc = check_run_files(path, p, ro);
    tsr_program_free(p);
    tsr_client_free(off);
    return rc;
}

static int run_on(tsr_client *c, const char *path, const run_opts *ro) {
    tsr_program *p;
    int rc = tsr_program_load(c, path, &p);
    if (rc) {
        cli_error("%s", tsr_client_errmsg(c));
        return EXIT_INVALID;
    }
    cli_progress bar;
    cli_progress_init(&bar, ro->progress);
    tsr_compute_options co;
    tsr_compute_options_default(&co);
    co.progress = cli_progress_cb;
    co.user = &bar;
    co.trace = ro->trace != NULL;
    co.no_fuse = (uint8_t)ro->no_fuse;
    rc = tsr_program_run(p, &co, stdout);
    cli_progress_end(&bar);
    fflush(stdout);
    int status = EXIT_OK;
    if (rc) {
        if (interrupted || rc == TSR_EINTERRUPTED) {
            cli_error("interrupted");
            status = EXIT_INTERRUPTED;
        } else {
            cli_error("%s", tsr_client_errmsg(c));
            status = cli_status(rc) == EXIT_INVALID ? EXIT_INVALID : EXIT_FAILED;
        }
    } else {
        /* The summary goes wherever progress went: after the bar or the lines, never alone. */
        if (bar.style != CLI_QUIET) cli_summary(c);
        if (ro->report) cli_report(c);
        if (ro->stats) status = write_stats(c, ro->stats);
        if (ro->trace && status == EXIT_OK) status = write_trace(c, ro->trace);
    }
    tsr_program_free(p);
    return status;
}

static const char run_usage[] =
    "usage: tessera run [OPTIONS] FILE\n"
    "\n"
    "Starts a local cluster (one scheduler and workers on 127.0.0.1, one pinned executor\n"
    "thread per physical core), runs the program file, writes its outputs and stops the\n"
    "cluster. By default one worker runs a thread per core (it measured faster than a worker\n"
    "per core: docs/cli/run.md).\n"
    "\n"
    "options:\n"
    "  --workers N      CPU worker processes (default 1; with --threads T alone: cores / T;\n"
    "                   0 with --gpus: GPU workers only)\n"
    "  --threads T      executor threads per worker (default: one per core with 1 worker,\n"
    "                   else 1)\n"
    "  --gpus LIST      also a GPU worker per device id, e.g. 0 or 0,1, each on a core of its\n"
    "                   own when there are enough; CPU workers get the other cores\n"
    "  --memory-limit SIZE  each worker's chunk memory: 4GiB, 512MB, 0.5 (of the machine's),\n"
    "                   or none (default: the machine's memory less a tenth, divided among\n"
    "                   the workers); chunks spill to disk above 70% of it\n"
    "  --spill-dir DIR  where workers spill chunks (default: $TMPDIR, else /tmp)\n"
    "  --data-root DIR  also let `load` read under DIR (repeatable; the program file's\n"
    "                   directory and the working directory always are: docs/security.md)\n"
    "  --plugin-dir DIR  the workers load user kernels (map_blocks) from DIR only\n"
    "                   (repeatable; default: none; docs/plugins.md)\n"
    "  --device-memory-limit BYTES  device memory each GPU worker keeps chunks in, e.g. 20GiB\n"
    "                   (default: most of the device)\n"
    "  --allowed-failures N  a task running on N workers when each died fails the run\n"
    "                   instead of being retried (default 3; tessera scheduler's option)\n"
    "  --no-progress    no progress bar and no summary line\n"
    "  --progress       progress even when stderr is not a terminal (a plain line a second)\n"
    "  --report         print a table per operation on stderr: tasks, kernel time, GFLOP/s,\n"
    "                   bytes moved\n"
    "  --stats FILE     write the run's statistics (tasks, seconds, bytes moved, memory,\n"
    "                   per-operation and per-worker counters) to FILE as JSON\n"
    "  --trace FILE     write every task's run per worker thread and every chunk transfer to\n"
    "                   FILE in the Chrome trace-event format (open it in ui.perfetto.dev)\n"
    "  --no-fuse        run every elementwise operation as its own tasks instead of fusing\n"
    "                   chains into one task per chunk (same results; docs/arrays.md)\n"
    "  --verbose        show the cluster processes' logs\n"
    "  --help           this text\n"
    "\n"
    "exit status: 0 success, 1 the computation failed, 2 invalid program or arguments,\n"
    "130 interrupted.\n";

int cmd_run(int argc, char **argv) {
    static const struct option longopts[] = {
        {"workers", required_argument, 0, 'w'},
        {"threads", required_argument, 0, 't'},
        {"no-progress", no_argument, 0, 'P'},
        {"progress", no_argument, 0, 'p'},
        {"report", no_argument, 0, 'r'},
        {"no-fuse", no_argument, 0, 'U'},
        {"verbose", no_argument, 0, 'v'},
        {"stats", required_argument, 0, 'S'},
        {"trace", required_argument, 0, 'T'},
        {"gpus", required_argument, 0, 'g'},
        {"device-memory-limit", required_argument, 0, 'D'},
        {"memory-limit", required_argument, 0, 'm'},
        {"spill-dir", required_argument, 0, 'L'},
        {"data-root", required_argument, 0, 'R'},
        {"plugin-dir", required_argument, 0, 'X'},
        {"allowed-failures", required_argument, 0, 'F'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    run_opts ro = {CLI_PROGRESS_AUTO, 0, NULL, NULL};
    /* The workers' data roots: the program file's directory and the working directory, then
     * any --data-root (docs/security.md). */
    static const char *roots[66], *pdirs[64];
    int npdirs = 0;
    static char progdir[4096];
    int nroots = 2;
    tsr_local_options lo;
    tsr_local_options_default(&lo);
    lo.logger.callback = cli_log;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "w:t:vh", longopts, NULL)) != -1) {
        int shared = shared_option(ch, &ro);
        if (shared < 0) return EXIT_INVALID;
        if (shared) continue;
        switch (ch) {
        case 'w':
            if ((lo.workers = cli_parse_int("--workers", optarg, 0, 1024)) < 0) return 2;
            if (lo.workers == 0) lo.workers = -1; /* tsr_local_options: none */
            break;
        case 'g':
            lo.gpus = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "none") == 0) {
                lo.memory_limit = -1;
            } else if ((lo.memory_limit = cli_parse_memory("--memory-limit", optarg)) <= 0) {
                if (lo.memory_limit == 0) cli_error("--memory-limit must be more than 0 bytes");
                return EXIT_INVALID;
            }
            break;
        case 'L':
            lo.spill_dir = optarg;
            break;
        case 'R':
            if (nroots == (int)(sizeof roots / sizeof *roots)) {
                cli_error("at most %d --data-root options", nroots - 2);
                return EXIT_INVALID;
            }
            roots[nroots++] = optarg;
            break;
        case 'X':
            if (cli_plugin_dir(optarg, pdirs, (int)(sizeof pdirs / sizeof *pdirs), &npdirs))
                return EXIT_INVALID;
            lo.plugin_dirs = pdirs;
            lo.n_plugin_dirs = npdirs;
            break;
        case 'F':
            if ((lo.allowed_failures = cli_parse_int("--allowed-failures", optarg, 1, 255)) < 0)
                return EXIT_INVALID;
            break;
        case 'D':
            if ((lo.device_memory_limit = cli_parse_bytes("--device-memory-limit", optarg)) <= 0) {
                if (lo.device_memory_limit == 0)
                    cli_error("--device-memory-limit must be more than 0 bytes");
                return EXIT_INVALID;
            }
            break;
        case 't':
            if ((lo.threads = cli_parse_int("--threads", optarg, 1, 1024)) < 0) return 2;
            break;
        case 'v':
            lo.verbose = 1;
            break;
        case 'h':
            fputs(run_usage, stdout);
            return EXIT_OK;
        default:
            fputs(run_usage, stderr);
            return EXIT_INVALID;
        }
    }
    if (optind != argc - 1) {
        cli_error("run needs exactly one program file (see tessera run --help)");
        return EXIT_INVALID;
    }
    if (lo.workers < 0 && (!lo.gpus || !*lo.gpus)) {
        cli_error("--workers 0 leaves no workers: give --gpus too, or at least one worker");
        return EXIT_INVALID;
    }
    /* The local cluster's workers read it (docs/cli/run.md, "Environment"): checked here first. */
    if (cli_huge_pages_env() < -1) return EXIT_INVALID;
    const char *path = argv[optind];
    int status = validate(path, &ro);
    if (status) return status;
    snprintf(progdir, sizeof progdir, "%s", path);
    char *slash = strrchr(progdir, '/');
    if (!slash)
        snprintf(progdir, sizeof progdir, ".");
    else if (slash == progdir)
        progdir[1] = '\0';
    else
        *slash = '\0';
    roots[0] = progdir;
    roots[1] = ".";
    lo.data_roots = roots;
    lo.n_data_roots = nroots;

    /* The cluster runs the `tessera` that is running now, not whatever PATH finds. */
    static char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        lo.tessera_path = self;
    }
    install_sigint();
    tsr_client *c;
    int rc = tsr_client_start_local(&lo, &c);
    if (rc) {
        cli_error("%s", tsr_last_error());
        return interrupted ? EXIT_INTERRUPTED : EXIT_FAILED;
    }
    interrupt_target = c;
    status = interrupted ? EXIT_INTERRUPTED : run_on(c, path, &ro);
    interrupt_target = NULL;
    tsr_client_free(c);
    return status;
}

static const char submit_usage[] =
    "usage: tessera submit [OPTIONS] FILE\n"
    "\n"
    "Sends a program file to a running scheduler, waits for it and writes its outputs.\n"
    "\n"
    "options:\n"
    "  --scheduler HOST:PORT  the scheduler (default: $TESSERA_SCHEDULER)\n"
    "  --token TOKEN          shared token (default: $TESSERA_TOKEN)\n"
    "  --token-file FILE      the token is FILE's first line (keeps it off the command line)\n"
    "  --no-progress          no progress bar and no summary line\n"
    "  --progress             progress even when stderr is not a terminal (a plain line a\n"
    "                         second)\n"
    "  --report               print a table per operation on stderr: tasks, kernel time,\n"
    "                         GFLOP/s, bytes moved\n"
    "  --stats FILE           write the run's statistics (tasks, seconds, bytes moved, memory,\n"
    "                         per-operation and per-worker counters) to FILE as JSON\n"
    "  --trace FILE           write every task's run per worker thread and every chunk\n"
    "                         transfer to FILE in the Chrome trace-event format (open it in\n"
    "                         ui.perfetto.dev)\n"
    "  --no-fuse              run every elementwise operation as its own tasks instead of\n"
    "                         fusing chains into one task per chunk (same results)\n"
    "  --help                 this text\n"
    "\n"
    "exit status: 0 success, 1 the computation failed, 2 invalid program or arguments,\n"
    "130 interrupted.\n";

int cmd_submit(int argc, char **argv) {
    static const struct option longopts[] = {
        {"scheduler", required_argument, 0, 's'},
        {"token", required_argument, 0, 'k'},
        {"token-file", required_argument, 0, 'K'},
        {"no-progress", no_argument, 0, 'P'},
        {"progress", no_argument, 0, 'p'},
        {"report", no_argument, 0, 'r'},
        {"no-fuse", no_argument, 0, 'U'},
        {"stats", required_argument, 0, 'S'},
        {"trace", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    run_opts ro = {CLI_PROGRESS_AUTO, 0, NULL, NULL};
    const char *addr = getenv("TESSERA_SCHEDULER");
    const char *token = getenv("TESSERA_TOKEN");
    static char token_buf[256];
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
        int shared = shared_option(ch, &ro);
        if (shared < 0) return EXIT_INVALID;
        if (shared) continue;
        switch (ch) {
        case 's':
            addr = optarg;
            break;
        case 'k':
            token = optarg;
            break;
        case 'K':
            if (cli_token_file(optarg, token_buf, sizeof token_buf)) return EXIT_INVALID;
            token = token_buf;
            break;
        case 'h':
            fputs(submit_usage, stdout);
            return EXIT_OK;
        default:
            fputs(submit_usage, stderr);
            return EXIT_INVALID;
        }
    }
    if (optind != argc - 1) {
        cli_error("submit needs exactly one program file (see tessera submit --help)");
        return EXIT_INVALID;
    }
    if (!addr || !*addr) {
        cli_error("no scheduler given: use --scheduler HOST:PORT or set TESSERA_SCHEDULER");
        return EXIT_INVALID;
    }
    const char *path = argv[optind];
    int status = validate(path, &ro);
    if (status) return status;
    install_sigint();
    tsr_client_options co;
    tsr_client_options_default(&co);
    co.token = token;
    co.logger.callback = cli_log;
    tsr_client *c;
    int rc = tsr_client_connect(addr, &co, &c);
    if (rc) {
        cli_error("%s", tsr_last_error());
        return rc == TSR_EINVALID ? EXIT_INVALID : EXIT_FAILED;
    }
    interrupt_target = c;
    status = run_on(c, path, &ro);
    interrupt_target = NULL;
    tsr_client_free(c);
    return status;
}
