/* Run statistics and monitor snapshots: the `stats` map of a `finished` message turned into the
 * JSON of tsr_client_stats_json() / tsr_client_save_stats(), and a monitor's `info` snapshots
 * (tsr_client_info_json). Both maps come from the network: nothing in them is trusted. */
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

/* ---- run statistics ---- */

/* Copies obj[key] into dst[name] when it is a number: integers stay integers, floats stay reals
 * (a NaN or infinity, which JSON cannot hold, is dropped like any other bad value). */
static void copy_number(json_t *dst, const char *name, const msgpack_object *obj, const char *key) {
    const msgpack_object *v = tsr__mp_get(obj, key);
    if (!v) return;
    int64_t i;
    double d;
    if (tsr__mp_as_int(v, &i) == 0) {
        json_object_set_new(dst, name, json_integer((json_int_t)i));
    } else if ((v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64) &&
               tsr__mp_as_double(v, &d) == 0 && isfinite(d)) {
        json_object_set_new(dst, name, json_real(d));
    }
}

/* Copies obj[key] into dst[name] when it is a valid UTF-8 string (json_stringn checks). */
static void copy_string(json_t *dst, const char *name, const msgpack_object *obj, const char *key) {
    const msgpack_object *v = tsr__mp_get(obj, key);
    if (!v || v->type != MSGPACK_OBJECT_STR) return;
    json_t *s = json_stringn(v->via.str.ptr, v->via.str.size);
    if (s) json_object_set_new(dst, name, s);
}

struct json_t *tsr__stats_json(const struct msgpack_object *stats, double seconds, uint64_t tasks) {
    static const char *const worker_numbers[] = {
        "tasks", "rss_peak", "rss", "chunk_peak", "busy_s", "in_bytes", "in_s", "out_bytes",
    };
    json_t *j = json_object();
    if (!j) return NULL;
    json_object_set_new(j, "tasks", json_integer((json_int_t)tasks));
    copy_number(j, "tasks", stats, "tasks"); /* the scheduler's count wins where it sent one */
    json_object_set_new(j, "seconds", json_real(isfinite(seconds) ? seconds : 0.0));
    if (!stats || stats->type != MSGPACK_OBJECT_MAP) return j;
    copy_number(j, "sources_inline", stats, "sources_inline");
    copy_number(j, "moved_bytes", stats, "moved_bytes");
    json_t *sched = json_object();
    if (sched) {
        copy_number(sched, "rss_base", stats, "sched_rss_base");
        copy_number(sched, "rss_peak", stats, "sched_rss_peak");
        if (json_object_size(sched))
            json_object_set_new(j, "scheduler", sched);
        else
            json_decref(sched);
    }
    static const char *const op_numbers[] = {"tasks", "inline", "seconds", "flops", "moved_bytes"};
    const msgpack_object *ops = tsr__mp_get(stats, "ops");
    json_t *oarr = ops && ops->type == MSGPACK_OBJECT_ARRAY ? json_array() : NULL;
    for (uint32_t k = 0; oarr && k < ops->via.array.size; k++) {
        const msgpack_object *op = &ops->via.array.ptr[k];
        if (op->type != MSGPACK_OBJECT_MAP) continue;
        json_t *o = json_object();
        if (!o) break;
        copy_string(o, "op", op, "op");
        for (size_t f = 0; f < sizeof op_numbers / sizeof *op_numbers; f++)
            copy_number(o, op_numbers[f], op, op_numbers[f]);
        /* An entry that does not say which operation it is describes nothing. */
        if (json_object_get(o, "op"))
            json_array_append_new(oarr, o);
        else
            json_decref(o);
    }
    if (oarr) json_object_set_new(j, "ops", oarr);
    const msgpack_object *ws = tsr__mp_get(stats, "workers");
    if (!ws || ws->type != MSGPACK_OBJECT_ARRAY) return j;
    json_t *arr = json_array();
    if (!arr) return j;
    for (uint32_t k = 0; k < ws->via.array.size; k++) {
        const msgpack_object *w = &ws->via.array.ptr[k];
        if (w->type != MSGPACK_OBJECT_MAP) continue;
        json_t *o = json_object();
        if (!o) break;
        copy_string(o, "name", w, "name");
        copy_string(o, "addr", w, "addr");
        for (size_t f = 0; f < sizeof worker_numbers / sizeof *worker_numbers; f++)
            copy_number(o, worker_numbers[f], w, worker_numbers[f]);
        json_array_append_new(arr, o);
    }
    json_object_set_new(j, "workers", arr);
    return j;
}

/* ---- msgpack to JSON (monitor snapshots) ---- */

static json_t *mp_to_json(const msgpack_object *o, const char *skip, int depth) {
    if (depth > 16) return NULL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* jansson's integers are signed 64-bit: a larger count becomes a real. */
        if (o->via.u64 > (uint64_t)INT64_MAX) return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(o->via.f64) ? json_real(o->via.f64) : NULL;
    case MSGPACK_OBJECT_STR:
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t k = 0; a && k < o->via.array.size; k++) {
            json_t *v = mp_to_json(&o->via.array.ptr[k], NULL, depth + 1);
            if (v) json_array_append_new(a, v);
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t k = 0; m && k < o->via.map.size; k++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[k];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size > 255) continue;
            char key[256];
            memcpy(key, kv->key.via.str.ptr, kv->key.via.str.size);
            key[kv->key.via.str.size] = 0;
            /* A key with a NUL inside is not one JSON can name here: leave it out. */
            if (strlen(key) != kv->key.via.str.size || (skip && strcmp(key, skip) == 0)) continue;
            json_t *v = mp_to_json(&kv->val, NULL, depth + 1);
            if (v) json_object_set_new(m, key, v);
        }
        return m;
    }
    default:
        return NULL;
    }
}

struct json_t *tsr__mp_to_json(const struct msgpack_object *obj, const char *skip) {
    return obj ? mp_to_json(obj, skip, 0) : NULL;
}

/* ---- monitor snapshots ---- */

void tsr__info_on_message(tsr__rt *rt, const struct msgpack_object *hdr) {
    json_t *j = tsr__mp_to_json(hdr, "t");
    if (j) {
        json_decref(rt->info);
        rt->info = j;
    }
    if (rt->hello_info) {
        /* The snapshot taken at hello: kept as the latest, but no answer to a request (the
         * replies to requests sent before it came all follow it on the connection). */
        rt->hello_info = 0;
        return;
    }
    if (rt->info_got < rt->info_asked) rt->info_got++;
    if (rt->info_got == rt->info_asked) {
        rt->info_ready = 1;
        uv_stop(&rt->c->loop);
    }
}

int tsr_client_connect_monitor(const char *address, const tsr_client_options *opts,
                               tsr_client **out) {
    *out = NULL;
    tsr_client_options def;
    if (!opts) {
        tsr_client_options_default(&def);
        opts = &def;
    }
    if (!address) return tsr__fail_thread(TSR_EINVALID, "no scheduler address given");
    tsr_client *c;
    int rc = tsr_client_new_offline(&c);
    if (rc) return rc;
    c->monitor = 1;
    rc = tsr__client_open(c, address, opts->token, opts->connect_timeout_ms);
    if (rc) {
        tsr__fail_thread(rc, "%s", c->errmsg);
        tsr_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* j as compact JSON in a malloc'd string (ours, not jansson's allocator, so that the caller's
 * free() is right even if the program gave jansson other allocators); NULL when out of memory. */
static char *dump(const json_t *j) {
    size_t n = j ? json_dumpb(j, NULL, 0, JSON_COMPACT) : 0;
    char *s = n ? malloc(n + 1) : NULL;
    if (!s || json_dumpb(j, s, n, JSON_COMPACT) != n) {
        free(s);
        return NULL;
    }
    s[n] = 0;
    return s;
}

int tsr_client_info_json(tsr_client *c, int timeout_ms, char **out) {
    if (!out)
        return c ? tsr__fail(c, TSR_EINVALID, "tsr_client_info_json: out is NULL") : TSR_EINVALID;
    *out = NULL;
    if (!c) return TSR_EINVALID;
    if (!c->monitor)
        return tsr__fail(c, TSR_EINVALID,
                         "tsr_client_info_json needs a client from tsr_client_connect_monitor");
    if (!c->connected || !c->rt || !c->sched)
        return tsr__fail(c, TSR_ENOTCONNECTED, "lost the connection to the scheduler at %s",
                         c->address);
    tsr__rt *rt = c->rt;
    int rc = tsr__send_simple(c->sched, "info", NULL, 0);
    if (rc) return tsr__fail(c, rc, "cannot talk to the scheduler: %s", tsr_strerror(rc));
    rt->info_asked++;
    rt->info_ready = 0;
    tsr__rt_begin(rt);
    rc = tsr__rt_run_until(rt, &rt->info_ready, timeout_ms);
    tsr__rt_end(rt);
    if (rc) return rc;
    char *s = dump(rt->info);
    if (!s) return tsr__fail(c, -ENOMEM, "out of memory");
    *out = s;
    return 0;
}

char *tsr_client_stats_json(tsr_client *c) {
    if (!c || !c->rt || !c->rt->stats) return NULL;
    return dump(c->rt->stats);
}

int tsr_client_save_stats(tsr_client *c, const char *path) {
    if (!c) return TSR_EINVALID;
    if (!path || !*path) return tsr__fail(c, TSR_EINVALID, "tsr_client_save_stats: empty path");
    if (!c->rt || !c->rt->stats)
        return tsr__fail(c, TSR_ENOTCOMPUTED, "no statistics to write: nothing has been computed");
    char *s = dump(c->rt->stats);
    size_t n = s ? strlen(s) : 0;
    char *line = s ? realloc(s, n + 2) : NULL;
    if (!line) {
        free(s);
        return tsr__fail(c, -ENOMEM, "out of memory");
    }
    line[n] = '\n';
    line[n + 1] = 0;
    tsr__bytes b = {line, n + 1};
    int rc = tsr__write_file(c, path, "statistics", tsr__fill_bytes, &b);
    free(line);
    return rc;
}
