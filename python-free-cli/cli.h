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

/* Prints "tessera: <msg>" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Exit status for a failed API call: invalid program/arguments -> 2, interrupted -> 130,
 * everything else -> 1. */
int cli_status(int code);

/* The progress bar: draws on stderr when `enabled`. */
typedef struct cli_progress {
    int enabled;  /* stderr is a terminal and --no-progress was not given */
    int drawn;    /* something is on the line */
    double last;  /* time of the last draw */
    int finished; /* the 100% line was drawn and ended */
} cli_progress;

void cli_progress_cb(const tsr_progress *p, void *user);
void cli_progress_end(cli_progress *bar);

/* Parses a positive int option value; prints an error and returns -1 when invalid. */
int cli_parse_int(const char *opt, const char *value, int min, int max);

#endif
