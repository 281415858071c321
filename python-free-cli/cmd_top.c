/* `tessera top`: watches a running scheduler through a monitor connection, polling its `info`
 * snapshot. Full screen with ncurses, or one plain-text (--once) or JSON (--json) snapshot.
 * The terminal is always given back: endwin() on `q`, on errors and on SIGINT/SIGTERM (the
 * handler only sets a flag and interrupts the wait; the loop leaves curses). */
#include <getopt.h>
#include <math.h>
#include <ncurses.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "top.h"

/* The CLI's process-wide state for signals, as in cmd_run.c: a handler has no other way in. */
static tsr_client *volatile top_target;
static volatile sig_atomic_t top_signal;

static void on_signal(int sig) {
    top_signal = sig;
    if (top_target) tsr_client_interrupt(top_target);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && !top_signal) {
    }
}

/* Waits for one snapshot (at most 5 s) and adds it to the history: 0, or the failure's exit
 * status after the message was printed (the caller has left curses first if it was in it). */
static int poll_info(tsr_client *c, top_hist *h, char *err, size_t errsize) {
    char *text;
    int rc = tsr_client_info_json(c, 5000, &text);
    if (rc) {
        if (top_signal || rc == TSR_EINTERRUPTED) return EXIT_INTERRUPTED;
        snprintf(err, errsize, "%s", tsr_client_errmsg(c));
        return EXIT_FAILED;
    }
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, errsize, "the scheduler at %s sent a snapshot that is not an object",
                 tsr_client_address(c));
        return EXIT_FAILED;
    }
    /* A scheduler that does not know its own address is named by the one we reached it at. */
    const char *addr = json_string_value(json_object_get(j, "addr"));
    if (!addr || !*addr) json_object_set_new(j, "addr", json_string(tsr_client_address(c)));
    top_hist_push(h, j, now_s());
    return 0;
}

/* --once and --json: two snapshots `interval` apart (the rates are measured between them). */
static int snapshot(tsr_client *c, double interval, int as_json) {
    top_hist h = {0};
    char err[1200];
    int status = poll_info(c, &h, err, sizeof err);
    if (!status) {
        sleep_s(interval);
        status = top_signal ? EXIT_INTERRUPTED : poll_info(c, &h, err, sizeof err);
    }
    json_t *v = status ? NULL : top_view(&h);
    if (!status && !v) {
        snprintf(err, sizeof err, "out of memory");
        status = EXIT_FAILED;
    }
    if (status == EXIT_FAILED) cli_error("%s", err);
    if (status == EXIT_INTERRUPTED) cli_error("interrupted");
    if (!status && as_json) {
        json_dumpf(v, stdout, JSON_COMPACT);
        putchar('\n');
    } else if (!status) {
        int cols = 80;
        struct winsize ws;
        if (isatty(1) && ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) cols = ws.ws_col;
        top_canvas cv;
        if (top_canvas_init(&cv, top_rows_needed(v), cols) == 0) {
            top_draw(v, &cv);
            top_canvas_print(&cv, stdout);
            top_canvas_free(&cv);
        } else {
            cli_error("out of memory");
            status = EXIT_FAILED;
        }
    }
    if (fflush(stdout) != 0 && !status) status = EXIT_FAILED;
    json_decref(v);
    top_hist_clear(&h);
    return status;
}

/* ---- full screen ---- */

static void init_colors(void) {
    if (!has_colors()) return;
    start_color();
    use_default_colors();
    init_pair(1, COLOR_GREEN, -1);
    init_pair(2, COLOR_YELLOW, -1);
    init_pair(3, COLOR_RED, -1);
    init_pair(4, COLOR_CYAN, -1);
}

static attr_t style_attr(int style) {
    int color = has_colors();
    switch (style) {
    case TS_TITLE:
        return A_REVERSE;
    case TS_HEAD:
        return A_BOLD;
    case TS_DONE:
        return color ? COLOR_PAIR(1) : A_BOLD;
    case TS_RUNNING:
        return color ? COLOR_PAIR(2) | A_BOLD : A_NORMAL;
    case TS_READY:
        return color ? COLOR_PAIR(4) : A_NORMAL;
    case TS_ERRED:
    case TS_ALERT:
        return color ? COLOR_PAIR(3) | A_BOLD : A_BOLD;
    case TS_WAITING:
        return A_DIM;
    default:
        return A_NORMAL;
    }
}

/* Draws the view on the whole screen, in runs of one style. */
static void render(const json_t *v) {
    top_canvas cv;
    if (top_canvas_init(&cv, LINES, COLS) != 0) return;
    if (v) {
        top_draw(v, &cv);
    } else {
        memcpy(cv.ch, "waiting for the scheduler...", (size_t)(COLS < 28 ? COLS : 28));
    }
    for (int r = 0; r < cv.rows; r++) {
        const char *line = cv.ch + (size_t)r * (size_t)cv.cols;
        const unsigned char *at = cv.attr + (size_t)r * (size_t)cv.cols;
        int c = 0;
        while (c < cv.cols) {
            int e = c;
            while (e < cv.cols && at[e] == at[c]) e++;
            attrset(style_attr(at[c]));
            mvaddnstr(r, c, line + c, e - c); /* the bottom-right cell's ERR is harmless */
            c = e;
        }
    }
    attrset(A_NORMAL);
    top_canvas_free(&cv);
    refresh();
}

static int dashboard(tsr_client *c, double interval) {
    top_hist h = {0};
    json_t *view = NULL;
    char err[1200] = "";
    int status = 0;
    initscr();
    cbreak();
    noecho();
    keypad(stdscr, TRUE);
    curs_set(0);
    init_colors();
    render(NULL);
    while (!status && !top_signal) {
        double next = now_s() + interval;
        status = poll_info(c, &h, err, sizeof err);
        if (status) break;
        json_decref(view);
        view = top_view(&h);
        render(view);
        for (;;) {
            double left = next - now_s();
            if (left <= 0 || top_signal) break;
            timeout((int)(left * 1000) + 1);
            int ch = getch();
            if (ch == 'q' || ch == 'Q') {
                status = -1;
                break;
            }
            if (ch == KEY_RESIZE) render(view);
        }
    }
    endwin();
    json_decref(view);
    top_hist_clear(&h);
    if (top_signal || status == EXIT_INTERRUPTED) return EXIT_INTERRUPTED;
    if (status == EXIT_FAILED) cli_error("%s", err);
    return status < 0 ? EXIT_OK : status;
}

static const char top_usage[] =
    "usage: tessera top [OPTIONS]\n"
    "\n"
    "Live dashboard of a running scheduler: workers, tasks by state and by operation,\n"
    "throughput, memory and transfers. `q` quits.\n"
    "\n"
    "options:\n"
    "  --scheduler HOST:PORT  the scheduler (default: $TESSERA_SCHEDULER)\n"
    "  --token TOKEN          shared token (default: $TESSERA_TOKEN)\n"
    "  --token-file FILE      the token is FILE's first line (keeps it off the command line)\n"
    "  --interval S           seconds between snapshots, 0.05 to 60 (default 0.25)\n"
    "  --once                 print one plain-text snapshot and exit (rates are measured\n"
    "                         over one interval)\n"
    "  --json                 the same snapshot as one JSON object\n"
    "  --help                 this text\n"
    "\n"
    "exit status: 0 success (or `q`), 1 cannot reach the scheduler or lost it, 2 invalid\n"
    "arguments or no terminal for the dashboard, 130 interrupted.\n";

int cmd_top(int argc, char **argv) {
    static const struct option longopts[] = {
        {"scheduler", required_argument, 0, 's'},
        {"token", required_argument, 0, 'k'},
        {"token-file", required_argument, 0, 'K'},
        {"interval", required_argument, 0, 'i'},
        {"once", no_argument, 0, '1'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *addr = getenv("TESSERA_SCHEDULER");
    const char *token = getenv("TESSERA_TOKEN");
    static char token_buf[256];
    double interval = 0.25;
    int once = 0, as_json = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
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
        case 'i': {
            char *end;
            interval = strtod(optarg, &end);
            if (!*optarg || *end || !(interval >= 0.05 && interval <= 60)) {
                cli_error("--interval needs seconds between 0.05 and 60, got \"%s\"", optarg);
                return EXIT_INVALID;
            }
            break;
        }
        case '1':
            once = 1;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'h':
            fputs(top_usage, stdout);
            return EXIT_OK;
        default:
            fputs(top_usage, stderr);
            return EXIT_INVALID;
        }
    }
    if (optind != argc) {
        cli_error("top takes no arguments (see tessera top --help)");
        return EXIT_INVALID;
    }
    if (!addr || !*addr) {
        cli_error("no scheduler given: use --scheduler HOST:PORT or set TESSERA_SCHEDULER");
        return EXIT_INVALID;
    }
    if (!once && !as_json && (!isatty(0) || !isatty(1))) {
        cli_error("the dashboard needs a terminal: use --once or --json for a snapshot");
        return EXIT_INVALID;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* Installed before initscr(), so ncurses leaves SIGINT and SIGTERM to us. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    tsr_client_options co;
    tsr_client_options_default(&co);
    co.token = token;
    co.connect_timeout_ms = 5000;
    tsr_client *c;
    int rc = tsr_client_connect_monitor(addr, &co, &c);
    if (rc) {
        if (top_signal) return EXIT_INTERRUPTED;
        cli_error("%s", tsr_last_error());
        return rc == TSR_EINVALID ? EXIT_INVALID : EXIT_FAILED;
    }
    top_target = c;
    int status = once || as_json ? snapshot(c, interval, as_json) : dashboard(c, interval);
    top_target = NULL;
    tsr_client_free(c);
    return status;
}
