/* What the files of `tessera top` share: the history of snapshots and the view derived from it
 * (top_view.c), and the screen layout drawn onto a plain character canvas (top_draw.c) that
 * cmd_top.c either copies to ncurses or prints as text. Nothing here talks to the network or
 * the terminal. */
#ifndef TSR_CLI_TOP_H
#define TSR_CLI_TOP_H

#include <jansson.h>
#include <stdio.h>

/* Rates are measured over this span of recent snapshots (seconds). */
#define TOP_WINDOW_S 3.0
/* Snapshots kept: enough for the window at the fastest --interval (0.05 s). */
#define TOP_HIST 64

/* Recent `info` snapshots (tsr_client_info_json, parsed), oldest first. */
typedef struct top_hist {
    json_t *snap[TOP_HIST];
    double t[TOP_HIST]; /* when each arrived (monotonic seconds) */
    int n;
} top_hist;

/* Takes ownership of snap (a JSON object). */
void top_hist_push(top_hist *h, json_t *snap, double t);
void top_hist_clear(top_hist *h);

/* The view: the newest snapshot with what only two snapshots can tell (rates, busy fractions,
 * ETAs), as the JSON object `tessera top --json` prints (docs/cli/top.md lists its fields).
 * NULL when the history is empty or out of memory. Caller owns the reference. */
json_t *top_view(const top_hist *h);

/* A screen of rows x cols cells: a character and a style each. */
enum top_style {
    TS_NORMAL,
    TS_TITLE,   /* the title bar (reverse video) */
    TS_HEAD,    /* section and column headings (bold) */
    TS_DONE,    /* progress bar: tasks done (green) */
    TS_RUNNING, /* tasks running on a worker (yellow) */
    TS_READY,   /* tasks whose inputs are ready, waiting in a backlog (cyan) */
    TS_ERRED,   /* tasks that failed (red) */
    TS_WAITING, /* tasks not started (dim) */
    TS_ALERT,   /* error events (red) */
    TS_COUNT
};

typedef struct top_canvas {
    int rows, cols;
    char *ch;            /* rows * cols, row-major, spaces where nothing is drawn */
    unsigned char *attr; /* enum top_style per cell */
    int used;            /* rows holding something (for plain-text output) */
} top_canvas;

int top_canvas_init(top_canvas *cv, int rows, int cols);
void top_canvas_free(top_canvas *cv);

/* Lays the view out on the canvas: header, worker rows, a progress bar per operation of each
 * running job, the last events. Fits whatever size the canvas has (80x24 at least shows
 * everything of a small cluster); rows that do not fit are summarised ("+3 more workers"). */
void top_draw(const json_t *view, top_canvas *cv);

/* The rows top_draw needs to show everything in the view (for the plain-text snapshot). */
int top_rows_needed(const json_t *view);

/* Prints the canvas's used rows as plain text, trailing blanks trimmed. */
void top_canvas_print(const top_canvas *cv, FILE *f);

/* Formatting helpers shared by the layout and the plain-text summary lines. */
void top_fmt_bytes(double b, char *out, size_t size); /* "0", "512K", "1.5G" */
void top_fmt_clock(double s, char *out, size_t size); /* "02:03", "1:02:03", "--:--" */
void top_fmt_rate(double v, char *out, size_t size);  /* "0.8", "112", "12.3k" */

#endif
