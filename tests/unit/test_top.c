/* `tessera top`'s view and screen (python-free-cli/top_view.c, top_draw.c) from a scheduler's
 * real `info` snapshots, without processes: the scheduler's state with a CPU and a GPU worker,
 * packed as the scheduler sends it, decoded and turned into JSON as the client does, then drawn.
 * A GPU worker gets a second row for its device; CPU rows keep their layout; a snapshot without
 * device figures (an older scheduler) shows no device row. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "client/client.h"
#include "scheduler/sched.h"
#include "top.h"
#include "wire/msg.h"

static tsr__logger quiet = {"top-test", TSR_LOG_ERROR};

/* The info snapshot of s as a monitor client holds it (tsr_client_info_json's object). */
static json_t *snapshot(const tsr__sched *s, double uptime) {
    tsr__events ev = {0};
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tsr__proto_info(&b, s, &ev, uptime, "127.0.0.1:8786");
    msgpack_zone z;
    msgpack_zone_init(&z, 4096);
    tsr__msg m;
    char err[200];
    cr_assert_eq(tsr__msg_decode_bytes(b.data, b.size, &z, &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.type, TSR__MSG_info);
    json_t *j = tsr__rec_to_json(&tsr__schema_msg_info, &m.u.info);
    cr_assert_not_null(j);
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&b);
    return j;
}

/* The screen as text, rows joined by newlines (caller frees). */
static char *draw(const json_t *view, int cols) {
    top_canvas cv;
    cr_assert_eq(top_canvas_init(&cv, top_rows_needed(view), cols), 0);
    top_draw(view, &cv);
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    top_canvas_print(&cv, f);
    fclose(f);
    top_canvas_free(&cv);
    return text;
}

/* The line of text that starts with prefix (a copy in out), or 0. */
static int line_of(const char *text, const char *prefix, char *out, size_t size) {
    for (const char *p = text; p && *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (strncmp(p, prefix, strlen(prefix)) == 0) {
            snprintf(out, size, "%.*s", (int)n, p);
            return 1;
        }
        p = e ? e + 1 : NULL;
    }
    return 0;
}

static void stats(tsr__sched *s, uint32_t wid, uint64_t used, uint64_t h2d, uint64_t d2h,
                  double busy) {
    tsr__wstats st = s->w[wid].st;
    st.dev_used = used;
    st.h2d_bytes = h2d;
    st.d2h_bytes = d2h;
    st.dev_evicted = 12;
    st.tasks = 100;
    st.busy_s = busy;
    st.rss = 300u << 20;
    tsr__sched_worker_stats(s, wid, &st);
}

Test(top, gpu_worker_gets_a_device_row) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    tsr__sched_add_worker(&s, 1, 2, TSR__KIND_CPU, "127.0.0.1:9001", "cpu-a");
    snprintf(s.w[0].cpus, sizeof s.w[0].cpus, "0-1");
    uint32_t g = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_GPU, "127.0.0.1:9002", "gpu-0");
    s.w[g].dev = 1; /* as conn.c marks a worker whose hello said kind "gpu" */
    snprintf(s.w[g].dev_name, sizeof s.w[g].dev_name, "NVIDIA H100 80GB HBM3");
    s.w[g].st.dev_limit = 79ull << 30;

    top_hist h = {0};
    stats(&s, g, 1ull << 30, 2ull << 30, 512u << 20, 1.0);
    top_hist_push(&h, snapshot(&s, 10.0), 1.0);
    stats(&s, g, 12ull << 30, 4ull << 30, 1ull << 30, 2.0);
    top_hist_push(&h, snapshot(&s, 12.0), 3.0);
    json_t *v = top_view(&h);
    cr_assert_not_null(v);

    /* --json: the device's figures, and copy rates over the 2 s between snapshots */
    const json_t *gw = json_array_get(json_object_get(v, "wlist"), 1);
    cr_assert_str_eq(json_string_value(json_object_get(gw, "dev_name")), "NVIDIA H100 80GB HBM3");
    cr_assert_eq(json_integer_value(json_object_get(gw, "dev_used")), 12ll << 30);
    cr_assert_eq(json_integer_value(json_object_get(gw, "dev_limit")), 79ll << 30);
    cr_assert_eq(json_integer_value(json_object_get(gw, "dev_evicted")), 12);
    cr_assert_float_eq(json_number_value(json_object_get(gw, "h2d_per_s")), (double)(1ull << 30),
                       1);
    cr_assert_float_eq(json_number_value(json_object_get(gw, "d2h_per_s")), (double)(256u << 20),
                       1);
    const json_t *cw = json_array_get(json_object_get(v, "wlist"), 0);
    cr_assert_null(json_object_get(cw, "dev_used"), "nothing of a device for a CPU worker");
    cr_assert_null(json_object_get(cw, "h2d_per_s"));
    cr_assert_eq(json_integer_value(json_object_get(v, "gpu_workers")), 1);

    char *text = draw(v, 100);
    cr_log_info("\n%s", text);
    char row[256];
    cr_assert(line_of(text, " cpu-a", row, sizeof row), "%s", text);
    cr_assert(strstr(row, "0-1") && strstr(row, "0/-"), "the CPU row as before: %s", row);
    cr_assert(line_of(text, " gpu-0", row, sizeof row), "%s", text);
    cr_assert(strstr(row, " gpu "), "its CPUS column says gpu: %s", row);
    cr_assert(line_of(text, "   NVIDIA H100 80GB HBM3  dev", row, sizeof row), "%s", text);
    cr_assert(strstr(row, "dev 12G/79G"), "%s", row);
    cr_assert(strstr(row, "h2d 4.0G 1.0G/s") && strstr(row, "d2h 1.0G 256M/s"), "%s", row);
    cr_assert(strstr(row, "evicted 12"), "%s", row);
    /* The device row sits right under its worker's. */
    const char *at = strstr(text, " gpu-0");
    cr_assert(strncmp(strchr(at, '\n') + 1, "   NVIDIA", 9) == 0);
    free(text);
    /* At 80 columns the figures stay whole; the name gives way. */
    text = draw(v, 80);
    cr_log_info("\n%s", text);
    cr_assert(line_of(text, "   NVIDIA H100", row, sizeof row), "%s", text);
    cr_assert(strlen(row) <= 80 && strstr(row, "evicted 12"), "%s", row);
    free(text);

    /* 80x10: the worker table gets three rows, its heading and two more: the CPU worker's row
     * and a summary line, as the GPU worker's two rows do not fit beside it. It is summarised
     * whole, never cut in half. */
    top_canvas cv;
    cr_assert_eq(top_canvas_init(&cv, 10, 80), 0);
    top_draw(v, &cv);
    char *small = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&small, &n);
    top_canvas_print(&cv, f);
    fclose(f);
    top_canvas_free(&cv);
    cr_assert(strstr(small, " cpu-a") && strstr(small, "+1 more workers") && !strstr(small, "H100"),
              "%s", small);
    free(small);

    json_decref(v);
    top_hist_clear(&h);
    tsr__sched_free(&s);
}

Test(top, no_device_figures_no_device_row) {
    /* A GPU worker in a snapshot without device figures (an older scheduler): its row only. */
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    tsr__sched_add_worker(&s, 1, 1, TSR__KIND_GPU, "127.0.0.1:9002", "gpu-0");
    top_hist h = {0};
    top_hist_push(&h, snapshot(&s, 1.0), 1.0);
    json_t *v = top_view(&h);
    cr_assert_null(json_object_get(json_array_get(json_object_get(v, "wlist"), 0), "dev_used"));
    char *text = draw(v, 80);
    char row[256];
    cr_assert(line_of(text, " gpu-0", row, sizeof row), "%s", text);
    cr_assert_not(strstr(text, " dev "), "%s", text);
    free(text);
    json_decref(v);
    top_hist_clear(&h);
    tsr__sched_free(&s);
}

/* ---- the disk tier (issue 11) ---- */

static void disk_stats(tsr__sched *s, uint32_t wid, uint64_t spilled, uint64_t unspilled,
                       uint64_t on_disk, int paused) {
    s->w[wid].spill = 1; /* as conn.c marks a worker whose st reported its disk tier */
    tsr__wstats st = s->w[wid].st;
    st.spilled_bytes = spilled;
    st.unspilled_bytes = unspilled;
    st.disk_bytes = on_disk;
    st.paused = paused;
    tsr__sched_worker_stats(s, wid, &st);
}

/* A worker that spills gets a second row (disk now, spilled and read back, in all and per
 * second), PAUSED leading it while it is paused; a worker with a disk tier that has spilled
 * nothing keeps its one row; a worker without one has none of the fields. */
Test(top, spilling_worker_gets_a_disk_row_and_paused_is_marked) {
    tsr__sched s;
    tsr__sched_init(&s, &quiet);
    uint32_t a = tsr__sched_add_worker(&s, 1, 1, TSR__KIND_CPU, "127.0.0.1:9001", "spiller");
    uint32_t b = tsr__sched_add_worker(&s, 2, 1, TSR__KIND_CPU, "127.0.0.1:9002", "calm");
    tsr__sched_add_worker(&s, 3, 1, TSR__KIND_CPU, "127.0.0.1:9003", "nolimit");
    s.w[a].mem_limit = s.w[b].mem_limit = 4ull << 30;

    top_hist h = {0};
    disk_stats(&s, a, 1ull << 30, 256u << 20, 768u << 20, 0);
    disk_stats(&s, b, 0, 0, 0, 0);
    top_hist_push(&h, snapshot(&s, 10.0), 1.0);
    disk_stats(&s, a, 2ull << 30, 512u << 20, 1536u << 20, 1);
    top_hist_push(&h, snapshot(&s, 12.0), 3.0);
    json_t *v = top_view(&h);
    cr_assert_not_null(v);

    /* --json: the figures as reported, rates over the 2 s between snapshots, and totals. */
    const json_t *wl = json_object_get(v, "wlist");
    const json_t *wa = json_array_get(wl, 0), *wb = json_array_get(wl, 1),
                 *wc = json_array_get(wl, 2);
    cr_assert(json_is_true(json_object_get(wa, "paused")));
    cr_assert_eq(json_integer_value(json_object_get(wa, "spilled_bytes")), 2ll << 30);
    cr_assert_eq(json_integer_value(json_object_get(wa, "unspilled_bytes")), 512ll << 20);
    cr_assert_eq(json_integer_value(json_object_get(wa, "disk_bytes")), 1536ll << 20);
    cr_assert_float_eq(json_number_value(json_object_get(wa, "spilled_per_s")),
                       (double)(512u << 20), 1);
    cr_assert_float_eq(json_number_value(json_object_get(wa, "unspilled_per_s")),
                       (double)(128u << 20), 1);
    cr_assert(json_is_false(json_object_get(wb, "paused")));
    cr_assert_eq(json_integer_value(json_object_get(wb, "spilled_bytes")), 0);
    cr_assert_null(json_object_get(wc, "paused"), "no disk tier, no fields");
    cr_assert_null(json_object_get(wc, "spilled_per_s"));
    cr_assert_eq(json_integer_value(json_object_get(v, "disk_bytes")), 1536ll << 20);
    cr_assert_eq(json_integer_value(json_object_get(v, "paused_workers")), 1);

    char *text = draw(v, 80);
    cr_log_info("\n%s", text);
    char row[256];
    cr_assert(line_of(text, " spiller", row, sizeof row), "%s", text);
    cr_assert(line_of(text, "   PAUSED  disk 1.5G", row, sizeof row), "%s", text);
    cr_assert(strstr(row, "spilled 2.0G 512M/s") && strstr(row, "read back 512M 128M/s"), "%s",
              row);
    /* Right under its worker's row; the others keep one row each. */
    const char *at = strstr(text, " spiller");
    cr_assert(strncmp(strchr(at, '\n') + 1, "   PAUSED", 9) == 0, "%s", text);
    at = strstr(text, " calm");
    cr_assert(strncmp(strchr(at, '\n') + 1, " nolimit", 8) == 0, "%s", text);
    cr_assert_null(strstr(strstr(text, "disk ") + 1, "disk "), "one disk row: %s", text);
    free(text);
    json_decref(v);

    /* Resumed: the row stays (it has spilled), without the flag. */
    disk_stats(&s, a, 2ull << 30, 512u << 20, 1024u << 20, 0);
    top_hist_push(&h, snapshot(&s, 13.0), 4.0);
    v = top_view(&h);
    text = draw(v, 80);
    cr_assert(line_of(text, "   disk 1.0G  spilled 2.0G", row, sizeof row), "%s", text);
    cr_assert_not(strstr(text, "PAUSED"), "%s", text);
    cr_assert_eq(json_integer_value(json_object_get(v, "paused_workers")), 0);
    free(text);
    json_decref(v);
    top_hist_clear(&h);
    tsr__sched_free(&s);
}
