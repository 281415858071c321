/* The client's side of `stats` against a fake scheduler that speaks the wire protocol itself:
 * whatever the `stats` map of a `finished` message holds (nothing, not a map, wrong types, NaN,
 * invalid UTF-8, non-map workers), `tessera submit --stats` still succeeds and writes valid JSON.
 * A record that decodes (wire/msg.h's job_stats) keeps every field under its documented name,
 * less what JSON cannot hold (NaN, invalid UTF-8); one that does not is left out whole, since the
 * message layer decodes a record or refuses it. The fake also
 * serves the output chunk as the "worker" named in `finished`, so the real client runs its
 * whole path (hello, submit, finished, peer fetch, release). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "fake_wire.h"

typedef void (*stats_fn)(msgpack_packer *pk); /* packs the value of "stats" */

typedef struct fake {
    int lfd;
    char addr[64];
    stats_fn stats; /* NULL: `finished` has no stats key */
    pthread_t th;
    int ok; /* the client did what the protocol says */
} fake;

static void *fake_main(void *arg) {
    fake *f = arg;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char type[32];
    int c = accept(f->lfd, NULL, NULL); /* the client's scheduler connection */
    if (c < 0 || read_frame(c, type, sizeof type, NULL) || strcmp(type, "hello")) goto out;
    msgpack_pack_map(&pk, 3);
    pstr(&pk, "t"), pstr(&pk, "welcome"), pstr(&pk, "v"), msgpack_pack_int(&pk, 1);
    pstr(&pk, "id"), msgpack_pack_int(&pk, 1);
    if (send_frame(c, &sb, NULL, 0)) goto out;
    if (read_frame(c, type, sizeof type, NULL) || strcmp(type, "submit")) goto out;
    msgpack_pack_map(&pk, 3);
    pstr(&pk, "t"), pstr(&pk, "accepted"), pstr(&pk, "job"), msgpack_pack_int(&pk, 1);
    pstr(&pk, "tasks"), msgpack_pack_int(&pk, 1);
    if (send_frame(c, &sb, NULL, 0)) goto out;
    msgpack_pack_map(&pk, f->stats ? 4 : 3);
    pstr(&pk, "t"), pstr(&pk, "finished"), pstr(&pk, "job"), msgpack_pack_int(&pk, 1);
    pstr(&pk, "outputs"), msgpack_pack_array(&pk, 1), msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, 0), pstr(&pk, f->addr), msgpack_pack_int(&pk, 8);
    if (f->stats) pstr(&pk, "stats"), f->stats(&pk);
    if (send_frame(c, &sb, NULL, 0)) goto out;
    /* The client now fetches the output chunk from the "worker" at our own address. */
    int p = accept(f->lfd, NULL, NULL);
    if (p < 0) goto out;
    if (read_frame(p, type, sizeof type, NULL) == 0 && !strcmp(type, "hello")) {
        msgpack_pack_map(&pk, 3);
        pstr(&pk, "t"), pstr(&pk, "welcome"), pstr(&pk, "v"), msgpack_pack_int(&pk, 1);
        pstr(&pk, "id"), msgpack_pack_int(&pk, 2);
        send_frame(p, &sb, NULL, 0);
        if (read_frame(p, type, sizeof type, NULL) == 0 && !strcmp(type, "get")) {
            double v = 3.0;
            msgpack_pack_map(&pk, 6);
            pstr(&pk, "t"), pstr(&pk, "chunk"), pstr(&pk, "job"), msgpack_pack_int(&pk, 1);
            pstr(&pk, "id"), msgpack_pack_int(&pk, 0), pstr(&pk, "dtype"), pstr(&pk, "float64");
            pstr(&pk, "shape"), msgpack_pack_array(&pk, 0), pstr(&pk, "n"),
                msgpack_pack_int(&pk, 8);
            if (send_frame(p, &sb, &v, sizeof v) == 0) f->ok = 1;
        }
    }
    /* Drain until the client hangs up (it releases the job, then closes). */
    while (read_frame(c, type, sizeof type, NULL) == 0) {
    }
    close(p);
out:
    if (c >= 0) close(c);
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

static void fake_start(fake *f, stats_fn stats) {
    memset(f, 0, sizeof *f);
    f->stats = stats;
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t al = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(f->lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(f->lfd, 4) == 0 &&
              getsockname(f->lfd, (struct sockaddr *)&a, &al) == 0);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", ntohs(a.sin_port));
    cr_assert(pthread_create(&f->th, NULL, fake_main, f) == 0);
}

static void fake_join(fake *f) {
    shutdown(f->lfd, SHUT_RDWR); /* wakes an accept() that will never be answered */
    pthread_join(f->th, NULL);
    close(f->lfd);
}

static const char *prog = "{\"tessera\": 1, \"arrays\": {\"s\": {\"op\": \"full\", \"shape\": [], "
                          "\"value\": 3}}, \"outputs\": {\"s\": \"-\"}}";

/* What the last submit_to_fake's command wrote on stderr. */
static char last_err[8192];

/* Submits prog to a fake whose `finished` carries stats() (with --report when report is set);
 * returns the stats file's JSON. */
static json_t *submit_to_fake_report(stats_fn stats, int report) {
    fake f;
    fake_start(&f, stats);
    char *dir = make_tmpdir();
    write_file(dir, "p.json", prog);
    const char *argv[] = {"tessera", "submit",  "--scheduler", f.addr, "--no-progress",
                          "--stats", "st.json", "p.json",      NULL,   NULL};
    if (report) argv[7] = "--report", argv[8] = "p.json";
    proc_result r = run_cmd(dir, argv, 60);
    fake_join(&f);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    cr_assert(f.ok, "the client did not fetch its output from the fake worker");
    cr_assert_str_eq(r.out, "s: 3\n");
    snprintf(last_err, sizeof last_err, "%s", r.err ? r.err : "");
    proc_result_free(&r);
    char path[512];
    snprintf(path, sizeof path, "%s/st.json", dir);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    cr_assert(json_is_object(j), "st.json is not a JSON object: %s", err.text);
    remove_tmpdir(dir);
    /* Always there: the client's own count and clock. */
    cr_assert(json_is_integer(json_object_get(j, "tasks")));
    cr_assert_eq(json_integer_value(json_object_get(j, "tasks")), 1);
    cr_assert(json_is_real(json_object_get(j, "seconds")));
    cr_assert(json_real_value(json_object_get(j, "seconds")) >= 0);
    return j;
}

static json_t *submit_to_fake(stats_fn stats) {
    return submit_to_fake_report(stats, 0);
}

Test(stats_wire, no_stats_key, .timeout = 60) {
    json_t *j = submit_to_fake(NULL);
    cr_assert(!strstr(last_err, "warning"), "a warning without cause:\n%s", last_err);
    cr_assert_eq(json_object_size(j), 2, "%zu keys", json_object_size(j));
    json_decref(j);
}

static void stats_not_a_map(msgpack_packer *pk) {
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 1);
    msgpack_pack_nil(pk);
}

Test(stats_wire, stats_not_a_map, .timeout = 60) {
    json_t *j = submit_to_fake(stats_not_a_map);
    cr_assert_eq(json_object_size(j), 2, "%zu keys", json_object_size(j));
    json_decref(j);
}

static void stats_malformed(msgpack_packer *pk) {
    msgpack_pack_map(pk, 5);
    pstr(pk, "tasks"), pstr(pk, "many");           /* wrong type: the client's count stays */
    pstr(pk, "moved_bytes"), msgpack_pack_nil(pk); /* dropped */
    pstr(pk, "sched_rss_base"), msgpack_pack_int(pk, 1000);
    pstr(pk, "sched_rss_peak"), msgpack_pack_double(pk, NAN); /* dropped */
    pstr(pk, "workers"), msgpack_pack_array(pk, 3);
    msgpack_pack_int(pk, 7); /* not a map: skipped */
    msgpack_pack_map(pk, 6);
    pstr(pk, "name"), msgpack_pack_int(pk, 5); /* dropped */
    pstr(pk, "addr"), pstr(pk, "127.0.0.1:9");
    pstr(pk, "tasks"), msgpack_pack_int(pk, 1);
    pstr(pk, "busy_s"), msgpack_pack_double(pk, INFINITY); /* dropped */
    pstr(pk, "in_s"), msgpack_pack_double(pk, 0.5);
    pstr(pk, "rss"), msgpack_pack_array(pk, 0); /* dropped */
    msgpack_pack_map(pk, 2);
    pstr(pk, "name"), msgpack_pack_str(pk, 2), msgpack_pack_str_body(pk, "\xff\xfe", 2);
    pstr(pk, "rss_peak"), msgpack_pack_uint64(pk, UINT64_MAX); /* beyond JSON's integers */
}

Test(stats_wire, malformed_record_dropped, .timeout = 60) {
    json_t *j = submit_to_fake(stats_malformed);
    json_object_set_new(j, "seconds", json_integer(0)); /* the clock's value varies */
    char *text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    cr_assert_str_eq(text, "{\"seconds\":0,\"tasks\":1}");
    /* Said through the client's logger, which the command prints. */
    cr_assert(strstr(last_err, "warning: left out a malformed part of 'finished'") &&
                  strstr(last_err, "job_stats"),
              "no warning on stderr:\n%s", last_err);
    free(text);
    json_decref(j);
}

static void stats_good(msgpack_packer *pk) {
    msgpack_pack_map(pk, 7);
    pstr(pk, "tasks"), msgpack_pack_int(pk, 1);
    pstr(pk, "sources_inline"), msgpack_pack_int(pk, 0);
    pstr(pk, "moved_bytes"), msgpack_pack_uint64(pk, 1ull << 40);
    pstr(pk, "sched_rss_base"), msgpack_pack_int(pk, 1000);
    pstr(pk, "sched_rss_peak"), msgpack_pack_int(pk, 2000);
    pstr(pk, "ops"), msgpack_pack_array(pk, 1), msgpack_pack_map(pk, 6);
    pstr(pk, "op"), pstr(pk, "add"), pstr(pk, "tasks"), msgpack_pack_int(pk, 1);
    pstr(pk, "inline"), msgpack_pack_int(pk, 0), pstr(pk, "seconds"), msgpack_pack_double(pk, NAN);
    pstr(pk, "flops"), msgpack_pack_double(pk, 8), pstr(pk, "moved_bytes"), msgpack_pack_int(pk, 0);
    pstr(pk, "workers"), msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 10);
    pstr(pk, "name"), msgpack_pack_str(pk, 2), msgpack_pack_str_body(pk, "\xff\xfe", 2);
    pstr(pk, "addr"), pstr(pk, "127.0.0.1:9");
    const char *ints[] = {"tasks", "rss_peak", "rss", "chunk_peak", "in_bytes", "out_bytes"};
    for (int k = 0; k < 6; k++) pstr(pk, ints[k]), msgpack_pack_int(pk, k + 1);

    pstr(pk, "busy_s"), msgpack_pack_float(pk, 0.25f);
    pstr(pk, "in_s"), msgpack_pack_double(pk, 0.125);
}

Test(stats_wire, well_formed_fields_kept, .timeout = 60) {
    json_t *j = submit_to_fake(stats_good);
    json_object_set_new(j, "seconds", json_integer(0));
    char *text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    cr_assert_str_eq(
        text,
        "{\"moved_bytes\":1099511627776,\"ops\":[{\"flops\":8.0,\"inline\":0,\"moved_bytes\":0,"
        "\"op\":\"add\",\"tasks\":1}],\"scheduler\":{\"rss_base\":1000,\"rss_peak\":2000},"
        "\"seconds\":0,\"sources_inline\":0,\"tasks\":1,\"workers\":[{\"addr\":\"127.0.0.1:9\","
        "\"busy_s\":0.25,\"chunk_peak\":4,\"in_bytes\":5,\"in_s\":0.125,"
        "\"out_bytes\":6,\"rss\":3,\"rss_peak\":2,\"tasks\":1}]}");
    free(text);
    json_decref(j);
}

/* Two workers with a disk tier (issue 11): one spilled and is paused, one did not; an older
 * worker entry without the fields beside them. */
static void stats_spill(msgpack_packer *pk) {
    msgpack_pack_map(pk, 7);
    pstr(pk, "tasks"), msgpack_pack_int(pk, 1);
    pstr(pk, "sources_inline"), msgpack_pack_int(pk, 0);
    pstr(pk, "moved_bytes"), msgpack_pack_int(pk, 0);
    pstr(pk, "sched_rss_base"), msgpack_pack_int(pk, 1000);
    pstr(pk, "sched_rss_peak"), msgpack_pack_int(pk, 2000);
    pstr(pk, "ops"), msgpack_pack_array(pk, 0);
    pstr(pk, "workers"), msgpack_pack_array(pk, 3);
    const char *ints[] = {"tasks", "rss_peak", "rss", "chunk_peak", "in_bytes", "out_bytes"};
    for (int w = 0; w < 3; w++) {
        msgpack_pack_map(pk, w < 2 ? 14 : 10);
        char name[8];
        snprintf(name, sizeof name, "w%d", w);
        pstr(pk, "name"), pstr(pk, name);
        pstr(pk, "addr"), pstr(pk, "127.0.0.1:9");
        for (int k = 0; k < 6; k++) pstr(pk, ints[k]), msgpack_pack_int(pk, k + 1);
        pstr(pk, "busy_s"), msgpack_pack_double(pk, 0.5);
        pstr(pk, "in_s"), msgpack_pack_double(pk, 0.25);
        if (w == 0) {
            pstr(pk, "spilled_bytes"), msgpack_pack_uint64(pk, 3ull << 30);
            pstr(pk, "unspilled_bytes"), msgpack_pack_uint64(pk, 1ull << 29);
            pstr(pk, "disk_bytes"), msgpack_pack_uint64(pk, 1ull << 30);
            pstr(pk, "paused"), msgpack_pack_true(pk);
        } else if (w == 1) {
            pstr(pk, "spilled_bytes"), msgpack_pack_uint64(pk, 0);
            pstr(pk, "unspilled_bytes"), msgpack_pack_uint64(pk, 0);
            pstr(pk, "disk_bytes"), msgpack_pack_uint64(pk, 0);
            pstr(pk, "paused"), msgpack_pack_false(pk);
        }
    }
}

Test(stats_wire, spill_fields_reach_stats_and_report, .timeout = 60) {
    json_t *j = submit_to_fake_report(stats_spill, 1);
    const json_t *ws = json_object_get(j, "workers");
    cr_assert_eq(json_array_size(ws), 3);
    const json_t *w0 = json_array_get(ws, 0), *w1 = json_array_get(ws, 1),
                 *w2 = json_array_get(ws, 2);
    cr_assert_eq(json_integer_value(json_object_get(w0, "spilled_bytes")), 3ll << 30);
    cr_assert_eq(json_integer_value(json_object_get(w0, "unspilled_bytes")), 1ll << 29);
    cr_assert_eq(json_integer_value(json_object_get(w0, "disk_bytes")), 1ll << 30);
    cr_assert(json_is_true(json_object_get(w0, "paused")));
    cr_assert_eq(json_integer_value(json_object_get(w1, "spilled_bytes")), 0);
    cr_assert(json_is_false(json_object_get(w1, "paused")));
    cr_assert_null(json_object_get(w2, "spilled_bytes"), "an older worker's entry has none");
    cr_assert_null(json_object_get(w2, "paused"));
    cr_assert_eq(json_integer_value(json_object_get(w2, "out_bytes")), 6);
    /* --report ends with the disk line: 3 GiB written, 512 MiB read back, by one worker. */
    cr_assert(
        strstr(last_err, "spilled to disk: 3.0 GiB written, 512.0 MiB read back, by 1 worker\n"),
        "no spill line in the report:\n%s", last_err);
    cr_assert(!strstr(last_err, "warning"), "%s", last_err);
    json_decref(j);
}

Test(stats_wire, no_spill_no_report_line, .timeout = 60) {
    json_t *j = submit_to_fake_report(stats_good, 1);
    cr_assert(strstr(last_err, "total"), "the report is there:\n%s", last_err);
    cr_assert(!strstr(last_err, "spilled"), "%s", last_err);
    json_decref(j);
}
