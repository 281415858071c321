/* `tessera`: the command-line entry point. Dispatches to one subcommand per file; every
 * subcommand takes --help. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char usage[] =
    "usage: tessera COMMAND [OPTIONS]\n"
    "\n"
    "Task-graph scheduler for chunked array compute.\n"
    "\n"
    "commands:\n"
    "  run FILE        run a program file on an embedded local cluster\n"
    "  submit FILE     run a program file on a running scheduler\n"
    "  scheduler       run a scheduler\n"
    "  worker          run a worker\n"
    "  check FILE      validate a program file and describe its arrays and task graph\n"
    "  top             live dashboard of a running scheduler (workers, jobs, throughput)\n"
    "\n"
    "`tessera COMMAND --help` describes each command.\n";

void cli_error(const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "tessera: %s\n", msg);
}

void cli_log(void *cookie, int level, const char *msg) {
    (void)cookie;
    fprintf(stderr, "tessera: %s: %s\n", tsr_log_level_name(level), msg);
}

int cli_status(int code) {
    switch (code) {
    case 0:
        return EXIT_OK;
    case TSR_EPROGRAM:
    case TSR_EINVALID:
    case TSR_ESHAPE:
    case TSR_ENPY:
        return EXIT_INVALID;
    case TSR_EINTERRUPTED:
        return EXIT_INTERRUPTED;
    default:
        return EXIT_FAILED;
    }
}

int cli_parse_int(const char *opt, const char *value, int min, int max) {
    char *end;
    long v = strtol(value, &end, 10);
    if (!*value || *end || v < min || v > max) {
        cli_error("%s needs an integer between %d and %d, got \"%s\"", opt, min, max, value);
        return -1;
    }
    return (int)v;
}

int cli_plugin_dir(const char *dir, const char **dirs, int max, int *n) {
    if (*n == max) {
        cli_error("at most %d --plugin-dir options", max);
        return EXIT_INVALID;
    }
    if (!*dir) {
        cli_error("--plugin-dir needs a directory");
        return EXIT_INVALID;
    }
    dirs[(*n)++] = dir;
    return 0;
}

long long cli_parse_bytes(const char *opt, const char *value) {
    static const struct {
        const char *unit;
        long long scale;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"KB", 1000LL},
                 {"MB", 1000LL * 1000},
                 {"GB", 1000LL * 1000 * 1000},
                 {"TB", 1000LL * 1000 * 1000 * 1000},
                 {"KiB", 1LL << 10},
                 {"MiB", 1LL << 20},
                 {"GiB", 1LL << 30},
                 {"TiB", 1LL << 40}};
    char *end;
    long long v = *value >= '0' && *value <= '9' ? strtoll(value, &end, 10) : -1;
    if (v >= 0) {
        for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
            if (strcmp(end, units[k].unit) != 0) continue;
            if (v > LLONG_MAX / units[k].scale) break;
            return v * units[k].scale;
        }
    }
    cli_error("%s needs a byte count such as 4GiB, 512MB or 1000000, got \"%s\"", opt, value);
    return -1;
}

int cli_huge_pages_env(void) {
    const char *v = getenv("TESSERA_HUGE_PAGES");
    if (!v || !*v) return 0;
    if (!strcmp(v, "1") || !strcmp(v, "on")) return 1;
    if (!strcmp(v, "0") || !strcmp(v, "off")) return -1;
    cli_error("TESSERA_HUGE_PAGES=%s: want 1 or on (huge pages), 0 or off (4 KiB pages), or leave "
              "it unset (measured at start)",
              v);
    return -2;
}

long long cli_parse_memory(const char *opt, const char *value) {
    if (strchr(value, '.')) {
        char *end;
        double f = strtod(value, &end);
        uint64_t total = tsr_system_memory();
        if (*end || !(f > 0 && f <= 1) || !total) {
            cli_error("%s needs a byte count such as 4GiB or 512MB, or a fraction of the "
                      "machine's memory such as 0.5, got \"%s\"",
                      opt, value);
            return -1;
        }
        return (long long)((double)total * f);
    }
    return cli_parse_bytes(opt, value);
}

/* OpenBLAS's constructor runs before main and, unless OPENBLAS_NUM_THREADS (or GOTO_ or
 * OMP_NUM_THREADS) says otherwise, starts a thread per core that spins in sched_yield for its
 * first ~0.1 s. No command but `worker` makes a BLAS call in its own process, and in `tessera
 * run` that thread took 0.1 s of CPU from the cluster it was starting and from the job's first
 * tasks (bench/notes.md, issue 9 §31). So such a command, started with none of the three set,
 * sets OPENBLAS_NUM_THREADS=1 and executes itself again: the new image starts no thread. If the
 * exec fails it goes on as it is. The cluster's processes get the variable anyway (client/local.c,
 * cluster_env); a worker sets its BLAS threads itself (--blas-threads), so it is left alone. */
static void quiet_blas(char **argv) {
    if (getenv("OPENBLAS_NUM_THREADS") || getenv("GOTO_NUM_THREADS") || getenv("OMP_NUM_THREADS"))
        return;
    if (setenv("OPENBLAS_NUM_THREADS", "1", 1) != 0) return;
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "worker") != 0) quiet_blas(argv);
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_INVALID;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "--version")) {
        printf("tessera %s\n", tsr_version());
        return EXIT_OK;
    }
    /* The library keeps its own socket writes from raising SIGPIPE (tessera.h, "Servers as
     * handles"); what is left is stdout or stderr on a closed pipe, where an error beats death. */
    signal(SIGPIPE, SIG_IGN);
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"run", cmd_run},       {"submit", cmd_submit}, {"scheduler", cmd_scheduler},
        {"worker", cmd_worker}, {"check", cmd_check},   {"top", cmd_top},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(cmd, cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    cli_error("unknown command \"%s\" (see tessera --help)", cmd);
    return EXIT_INVALID;
}

int cli_token_file(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_error("--token-file %s: %s", path, strerror(errno));
        return EXIT_INVALID;
    }
    size_t n = fread(buf, 1, size, f);
    int bad = ferror(f);
    fclose(f);
    /* A descriptor handed down for the token (the local cluster's /dev/fd/4) is done with. */
    int fdno;
    char end;
    if (sscanf(path, "/dev/fd/%d%c", &fdno, &end) == 1 && fdno > 2) close(fdno);
    size_t len = 0;
    while (len < n && buf[len] != '\n' && buf[len] != '\r') len++;
    if (bad || len >= size || len == 0 || memchr(buf, 0, len)) {
        cli_error("--token-file %s: %s", path,
                  bad           ? "read error"
                  : len >= size ? "the token is too long"
                  : len == 0    ? "no token in it (the first line is empty)"
                                : "the token contains a NUL byte");
        memset(buf, 0, size);
        return EXIT_INVALID;
    }
    buf[len] = 0;
    return 0;
}
