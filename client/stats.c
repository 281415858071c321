/* Run statistics and monitor snapshots: the decoded `stats` record of a `finished` message turned
 * into the JSON of tsr_client_stats_json() / tsr_client_save_stats(), and a monitor's `info`
 * snapshots (tsr_client_info_json), walked by their schemas (wire/msg.h). Both come from the
 * network: the decoder checked types and ranges, and what JSON cannot hold is left out. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"

/* ---- records as JSON ---- */

/* An unsigned count as JSON: jansson's integers are signed 64-bit, a larger one becomes a real. */
static json_t *json_u64(uint64_t v) {
    return v > (uint64_t)INT64_MAX ? json_real((double)v) : json_integer((json_int_t)v);
}

/* A finite double as a JSON real; NaN and infinities, which JSON cannot hold, give NULL. */
static json_t *json_f64(double v) {
    return isfinite(v) ? json_real(v) : NULL;
}

static json_t *field_to_json(const tsr__field *f, const void *rec);

/* The elements of a decoded list (or KV map) of element schema es. */
static json_t *list_to_json(const tsr__field *f, const tsr__list *l) {
    const tsr__schema *es = f->sub;
    json_t *out = f->kind == TSR__K_KV ? json_object() : json_array();
    _Alignas(max_align_t) unsigned char elem[512];
    if (es->size > sizeof elem) return out;
    for (uint32_t k = 0; out && k < l->n; k++) {
        tsr__list_get(l, es, k, elem);
        if (f->kind == TSR__K_KV) {
            const tsr__m_kv *kv = (const tsr__m_kv *)elem;
            char key[256];
            /* A key JSON cannot name here (too long, a NUL inside) is left out. */
            if (kv->k.n >= sizeof key || memchr(kv->k.p, 0, kv->k.n)) continue;
            tsr__str_copy(key, sizeof key, kv->k);
            json_object_set_new(out, key, json_u64(kv->v));
        } else {
            json_t *v = tsr__rec_to_json(es, elem);
            if (v) json_array_append_new(out, v);
        }
    }
    return out;
}

static json_t *field_to_json(const tsr__field *f, const void *rec) {
    const char *p = (const char *)rec + f->off;
    switch (f->kind) {
    case TSR__K_U32:
        return json_integer((json_int_t) * (const uint32_t *)p);
    case TSR__K_U64:
        return json_u64(*(const uint64_t *)p);
    case TSR__K_I64:
    case TSR__K_DTYPE:
        return json_integer((json_int_t) * (const int64_t *)p);
    case TSR__K_F64:
        return json_f64(*(const double *)p);
    case TSR__K_BOOL:
        return json_boolean(*(const int *)p);
    case TSR__K_STR: {
        const tsr__str *str = (const tsr__str *)p;
        return json_stringn(str->n ? str->p : "", str->n);
    }
    case TSR__K_REC:
        return tsr__rec_to_json(f->sub, p);
    case TSR__K_LIST:
    case TSR__K_KV:
        return list_to_json(f, (const tsr__list *)p);
    default: /* BIN: nothing JSON can hold */
        return NULL;
    }
}

struct json_t *tsr__rec_to_json(const tsr__schema *s, const void *rec) {
    uint64_t has = *(const uint64_t *)rec;
    if (s->shape == TSR__SH_BARE) return s->nf ? field_to_json(&s->f[0], rec) : json_null();
    json_t *out = s->shape == TSR__SH_TUP ? json_array() : json_object();
    for (uint8_t i = 0; out && i < s->nf; i++) {
        const tsr__field *f = &s->f[i];
        if (!(has & ((uint64_t)1 << i))) {
            /* A tuple keeps its positions: an absent field in the middle is null. */
            if (s->shape == TSR__SH_TUP) {
                int later = (has >> i) != 0;
                if (later) json_array_append_new(out, json_null());
            }
            continue;
        }
        json_t *v = field_to_json(f, rec);
        if (s->shape == TSR__SH_TUP) {
            json_array_append_new(out, v ? v : json_null());
        } else if (v) {
            char key[64];
            size_t n = strlen(f->key);
            if (n && f->key[n - 1] == '_') n--; /* C keywords: inline_ is "inline" */
            snprintf(key, sizeof key, "%.*s", (int)n, f->key);
            json_object_set_new(out, key, v);
        }
    }
    return out;
}

/* ---- run statistics ---- */

static void set(json_t *o, const char *key, json_t *v) {
    if (v) json_object_set_new(o, key, v);
}

struct json_t *tsr__stats_json(const tsr__m_job_stats *st, double seconds, uint64_t tasks) {
    json_t *j = json_object();
    if (!j) return NULL;
    /* The scheduler's count wins where it sent one. */
    set(j, "tasks", json_u64(st ? st->tasks : tasks));
    set(j, "seconds", json_real(isfinite(seconds) ? seconds : 0.0));
    if (!st) return j;
    set(j, "sources_inline", json_u64(st->sources_inline));
    set(j, "moved_bytes", json_u64(st->moved_bytes));
    if (TSR__M_HAS(job_stats, st, retire_moved)) set(j, "retire_moved", json_u64(st->retire_moved));
    json_t *sched = json_object();
    if (sched) {
        set(sched, "rss_base", json_u64(st->sched_rss_base));
        set(sched, "rss_peak", json_u64(st->sched_rss_peak));
        json_object_set_new(j, "scheduler", sched);
    }
    json_t *ops = json_array();
    for (uint32_t k = 0; ops && k < st->ops.n; k++) {
        tsr__m_op_stat e;
        TSR__LIST_GET(&st->ops, op_stat, k, &e);
        json_t *o = tsr__rec_to_json(&tsr__schema_op_stat, &e);
        /* An entry that does not say which operation it is describes nothing. */
        if (o && json_object_get(o, "op"))
            json_array_append_new(ops, o);
        else
            json_decref(o);
    }
    set(j, "ops", ops);
    json_t *ws = json_array();
    for (uint32_t k = 0; ws && k < st->workers.n; k++) {
        tsr__m_worker_stat e;
        TSR__LIST_GET(&st->workers, worker_stat, k, &e);
        json_t *o = tsr__rec_to_json(&tsr__schema_worker_stat, &e);
        if (o) json_array_append_new(ws, o);
    }
    set(j, "workers", ws);
    return j;
}

/* ---- monitor snapshots ---- */

void tsr__info_on_message(tsr__rt *rt, const tsr__msg_info *m) {
    json_t *j = tsr__rec_to_json(&tsr__schema_msg_info, m);
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
    return tsr__client_connect_as(address, opts, 1, out);
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
    int rc = tsr__send_msg(c->sched, TSR__MSG_info, &(tsr__msg_info){0});
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
