/* What the `tessera` subcommands share: exit statuses, error printing and the progress bar.
 * The CLI is a client of the public API only (tessera/tessera.h); it is the one place that reads
 * the environment ($TESSERA_SCHEDULER, $TESSERA_TOKEN). */
#ifndef TSR_CLI_H
#define TSR_CLI_H

#include "tessera/tessera.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_INVALID = 2, EXIT_INTERRUPTED = 130 };

int cmd_run(int argc, char **argv);
int cmd_submit(int argc, char **argv);
int cmd_scheduler(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_top(int argc, char **argv);

/* Prints "tessera: <msg>" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The client library's log lines, as "tessera: LEVEL: message" on stderr (a tsr_logger). */
void cli_log(void *cookie, int level, const char *msg);

/* Exit status for a failed API call: invalid program/arguments -> 2, interrupted -> 130,
 * everything else -> 1. */
int cli_status(int code);

/* --progress / --no-progress / neither. */
enum { CLI_PROGRESS_AUTO, CLI_PROGRESS_OFF, CLI_PROGRESS_FORCE };
/* What is drawn: nothing, the bar (stderr is a terminal), or plain lines (forced, not one). */
enum { CLI_QUIET, CLI_BAR, CLI_LINES };

/* Progress on stderr (docs/cli/run.md "What it prints"). */
typedef struct cli_progress {
    int style;    /* CLI_QUIET, CLI_BAR or CLI_LINES */
    int drawn;    /* something is on the bar's line */
    double last;  /* time of the last draw */
    int finished; /* the 100% line was drawn and ended */
} cli_progress;

/* Picks the style for a CLI_PROGRESS_* mode and whether stderr is a terminal. */
void cli_progress_init(cli_progress *bar, int mode);
void cli_progress_cb(const tsr_progress *p, void *user);
void cli_progress_end(cli_progress *bar);
/* The summary line of the computation c last finished (tasks, wall time, GFLOP/s, bytes moved
 * between workers), and the --report table per operation (then a line with the bytes spilled
 * to disk and read back, when its workers spilled any), both on stderr. Nothing when c has no
 * statistics (a program with no outputs). */
void cli_summary(tsr_client *c);
void cli_report(tsr_client *c);

/* --token-file FILE: the token is the file's first line (without its line end). Prints an error
 * and returns EXIT_INVALID when the file cannot be read, is empty, or the line does not fit in
 * size - 1 bytes; else 0. The CLI takes tokens from files (or $TESSERA_TOKEN) so that they
 * need not appear in the command line, which every local user can read (/proc/PID/cmdline). */
int cli_token_file(const char *path, char *buf, size_t size);

/* --plugin-dir DIR: appends dir to dirs[*n], which has room for max. Prints an error and returns
 * EXIT_INVALID when dirs is full or dir is empty; else 0. dir is borrowed (an argv string). */
int cli_plugin_dir(const char *dir, const char **dirs, int max, int *n);

/* Parses a positive int option value; prints an error and returns -1 when invalid. */
int cli_parse_int(const char *opt, const char *value, int min, int max);
/* Parses a byte count: digits with an optional unit, B, KB/MB/GB/TB (powers of 1000, as Dask) or
 * KiB/MiB/GiB/TiB (powers of 1024); "4GiB", "512MB", "1000000". Prints an error and returns -1
 * when invalid. */
long long cli_parse_bytes(const char *opt, const char *value);
/* A memory limit: a byte count as cli_parse_bytes takes it, or a fraction of the machine's (or
 * its cgroup's) memory written with a point ("0.5", at most 1); -1 (an error printed) when
 * invalid. */
long long cli_parse_memory(const char *opt, const char *value);
/* $TESSERA_HUGE_PAGES as tsr_worker_options.huge_pages takes it (docs/cli/worker.md): unset or
 * empty 0, "1"/"on" 1, "0"/"off" -1; anything else is printed as an error and gives -2. */
int cli_huge_pages_env(void);

#endif
