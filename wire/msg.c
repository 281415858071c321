/* The message codec: the tables of msg.h as schemas, one encoder and one total decoder that
 * walk them. Decoding reads msgpack-c objects (what a connection hands over) and checks every
 * type and range against the schema (a LAZY list's elements when tsr__list_get reads them); it
 * recurses only along the schema, never along the input, so hostile nesting cannot exhaust the
 * stack. Nothing here allocates except the output sbuffer. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "wire/msg.h"
#include "wire/wire.h"

/* The largest element record: list elements are staged on the stack while encoding from a
 * generator or checking a decoded list. */
#define ELEM_MAX 512

enum { REQ_OPT = 0, REQ_REQ = 1, REQ_NIL = 2 };
#define TSR__REQ_REQ REQ_REQ
#define TSR__REQ_OPT REQ_OPT
#define TSR__REQ_NIL REQ_NIL
#define SUB_U32(sub) NULL
#define SUB_U64(sub) NULL
#define SUB_I64(sub) NULL
#define SUB_DTYPE(sub) NULL
#define SUB_F64(sub) NULL
#define SUB_BOOL(sub) NULL
#define SUB_STR(sub) NULL
#define SUB_BIN(sub) NULL
#define SUB_REC(sub) &tsr__schema_##sub
#define SUB_LIST(sub) &tsr__schema_##sub
#define SUB_LAZY(sub) &tsr__schema_##sub
#define SUB_KV(sub) &tsr__schema_##sub

#define FROW(X, kind, name, req, sub)                                                              \
    {#name, TSR__K_##kind, TSR__REQ_##req, offsetof(X, name), SUB_##kind(sub)},

/* Field rows of each record and message; a message without fields gets a dummy array. */
#define DEF_RFIELDS(rec, shape)                                                                    \
    static const tsr__field fields_##rec[] = {                                                     \
        TSR__R_##rec(FROW, tsr__m_##rec){NULL, 0, 0, 0, NULL}};                                    \
    _Static_assert(sizeof(tsr__m_##rec) <= ELEM_MAX, "element record too large");                  \
    _Static_assert(tsr__m_##rec##_nfields <= 64, "presence bits fit in has");
#define DEF_MFIELDS(name)                                                                          \
    static const tsr__field fields_msg_##name[] = {                                                \
        TSR__R_##name(FROW, tsr__msg_##name){NULL, 0, 0, 0, NULL}};
#define NF(arr) ((uint8_t)(sizeof arr / sizeof arr[0] - 1))

/* Schemas are referenced before their definition (a record names its sub-records). */
TSR__RECORD_MAP(DEF_RFIELDS)
TSR__MSG_MAP(DEF_MFIELDS)

#define DEF_RSCHEMA(rec, shape)                                                                    \
    const tsr__schema tsr__schema_##rec = {#rec, TSR__SH_##shape, NF(fields_##rec),                \
                                           sizeof(tsr__m_##rec), fields_##rec};
#define DEF_MSCHEMA(name)                                                                          \
    const tsr__schema tsr__schema_msg_##name = {#name, TSR__SH_MAP, NF(fields_msg_##name),         \
                                                sizeof(tsr__msg_##name), fields_msg_##name};
TSR__RECORD_MAP(DEF_RSCHEMA)
TSR__MSG_MAP(DEF_MSCHEMA)

#define MSCHEMA_PTR(name) &tsr__schema_msg_##name,
const tsr__schema *const tsr__msg_schemas[TSR__MSG_COUNT] = {NULL, TSR__MSG_MAP(MSCHEMA_PTR)};

_Static_assert(TSR__MSG_COUNT <= 64, "message types fit in a has-style bit set");

/* ---- helpers ---- */

/* The wire key of a row: its name less a trailing underscore (for C keywords). */
static size_t keylen(const tsr__field *f) {
    size_t n = strlen(f->key);
    return n && f->key[n - 1] == '_' ? n - 1 : n;
}

const char *tsr__msg_name(tsr__msg_type t) {
    return t > TSR__MSG_NONE && t < TSR__MSG_COUNT ? tsr__msg_schemas[t]->name : "?";
}

tsr__msg_type tsr__msg_type_of(const char *name, size_t len) {
    if (len == 0) return TSR__MSG_NONE;
    for (int t = 1; t < TSR__MSG_COUNT; t++) {
        const char *n = tsr__msg_schemas[t]->name;
        if (n[0] == name[0] && strlen(n) == len && memcmp(n, name, len) == 0)
            return (tsr__msg_type)t;
    }
    return TSR__MSG_NONE;
}

tsr__str tsr__str_of(const char *s) {
    return (tsr__str){s ? s : "", s ? (uint32_t)strlen(s) : 0};
}

int tsr__str_eq(tsr__str s, const char *c) {
    size_t n = strlen(c);
    return s.n == n && (n == 0 || memcmp(s.p, c, n) == 0);
}

int tsr__str_copy(char *dst, size_t size, tsr__str s) {
    if (size == 0) return TSR_EPROTOCOL;
    size_t n = s.n < size - 1 ? s.n : size - 1;
    if (n) memcpy(dst, s.p, n);
    dst[n] = 0;
    return s.n < size ? 0 : TSR_EPROTOCOL;
}

/* ---- encoding ---- */

static void pack_rec(msgpack_packer *pk, const tsr__schema *s, const void *m);

static void pack_strn(msgpack_packer *pk, const char *p, size_t n) {
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, p, n);
}

static void pack_list(msgpack_packer *pk, const tsr__field *f, const tsr__list *l) {
    const tsr__schema *es = f->sub;
    assert(l->n == 0 || l->v || l->gen);
    if (f->kind == TSR__K_KV)
        msgpack_pack_map(pk, l->n);
    else
        msgpack_pack_array(pk, l->n);
    _Alignas(max_align_t) unsigned char tmp[ELEM_MAX];
    for (uint32_t i = 0; i < l->n; i++) {
        const void *e;
        if (l->v) {
            e = (const unsigned char *)l->v + (size_t)i * es->size;
        } else {
            memset(tmp, 0, es->size);
            l->gen(l->ctx, i, tmp);
            e = tmp;
        }
        if (f->kind == TSR__K_KV) {
            const tsr__m_kv *kv = e;
            pack_strn(pk, kv->k.p, kv->k.n);
            msgpack_pack_uint64(pk, kv->v);
        } else {
            pack_rec(pk, es, e);
        }
    }
}

static void pack_value(msgpack_packer *pk, const tsr__field *f, const void *m) {
    const unsigned char *p = (const unsigned char *)m + f->off;
    switch (f->kind) {
    case TSR__K_U32:
        msgpack_pack_uint32(pk, *(const uint32_t *)p);
        break;
    case TSR__K_U64:
        msgpack_pack_uint64(pk, *(const uint64_t *)p);
        break;
    case TSR__K_I64:
    case TSR__K_DTYPE:
        msgpack_pack_int64(pk, *(const int64_t *)p);
        break;
    case TSR__K_F64:
        msgpack_pack_double(pk, *(const double *)p);
        break;
    case TSR__K_BOOL:
        if (*(const int *)p)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case TSR__K_STR: {
        const tsr__str *s = (const tsr__str *)p;
        pack_strn(pk, s->p, s->n);
        break;
    }
    case TSR__K_BIN: {
        const tsr__str *s = (const tsr__str *)p;
        msgpack_pack_bin(pk, s->n);
        msgpack_pack_bin_body(pk, s->p, s->n);
        break;
    }
    case TSR__K_REC:
        pack_rec(pk, f->sub, p);
        break;
    default: /* LIST, KV */
        pack_list(pk, f, (const tsr__list *)p);
        break;
    }
}

static int present(const tsr__field *f, uint8_t i, uint64_t has) {
    return f->req == REQ_REQ || (has >> i & 1);
}

/* The fields of a map record after its header (shared by records and messages). */
static void pack_fields(msgpack_packer *pk, const tsr__schema *s, const void *m) {
    uint64_t has = *(const uint64_t *)m;
    for (uint8_t i = 0; i < s->nf; i++) {
        if (!present(&s->f[i], i, has)) continue;
        pack_strn(pk, s->f[i].key, keylen(&s->f[i]));
        pack_value(pk, &s->f[i], m);
    }
}

static size_t count_present(const tsr__schema *s, uint64_t has) {
    size_t n = 0;
    for (uint8_t i = 0; i < s->nf; i++) n += present(&s->f[i], i, has);
    return n;
}

static void pack_rec(msgpack_packer *pk, const tsr__schema *s, const void *m) {
    uint64_t has = *(const uint64_t *)m;
    if (s->shape == TSR__SH_BARE) {
        pack_value(pk, &s->f[0], m);
    } else if (s->shape == TSR__SH_MAP) {
        msgpack_pack_map(pk, count_present(s, has));
        pack_fields(pk, s, m);
    } else {
        uint8_t len = 0; /* up to the last field present or always written (NIL) */
        for (uint8_t i = 0; i < s->nf; i++)
            if (present(&s->f[i], i, has) || s->f[i].req == REQ_NIL) len = (uint8_t)(i + 1);
        msgpack_pack_array(pk, len);
        for (uint8_t i = 0; i < len; i++) {
            if (present(&s->f[i], i, has))
                pack_value(pk, &s->f[i], m);
            else
                msgpack_pack_nil(pk);
        }
    }
}

void tsr__msg_pack(msgpack_sbuffer *b, tsr__msg_type type, const void *m) {
    assert(type > TSR__MSG_NONE && type < TSR__MSG_COUNT);
    const tsr__schema *s = tsr__msg_schemas[type];
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1 + count_present(s, *(const uint64_t *)m));
    pack_strn(&pk, "t", 1);
    pack_strn(&pk, s->name, strlen(s->name));
    pack_fields(&pk, s, m);
}

/* ---- decoding ---- */

typedef struct derr {
    char *buf;
    size_t len;
} derr;

static int fail(derr *e, const tsr__schema *s, const tsr__field *f, const char *fmt, ...) {
    if (e && e->buf && e->len) {
        int k = snprintf(e->buf, e->len, "%s%s%s: ", s->name, f ? "." : "", f ? f->key : "");
        if (k >= 0 && (size_t)k < e->len) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(e->buf + k, e->len - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return TSR_EPROTOCOL;
}

static int decode_rec(const tsr__schema *s, const msgpack_object *o, void *m, derr *e);

static const char *kind_name(int k) {
    static const char *const names[] = {"an unsigned 32-bit integer",
                                        "an unsigned integer",
                                        "an integer",
                                        "a number",
                                        "a boolean",
                                        "a string",
                                        "a bin",
                                        "a map or array",
                                        "an array",
                                        "a map",
                                        "a dtype (an integer or a name)",
                                        "an array"};
    _Static_assert(sizeof names / sizeof names[0] == TSR__K_LAZY + 1, "a name per kind");
    return names[k];
}

static int decode_list(const tsr__field *f, const msgpack_object *o, tsr__list *l, derr *e,
                       const tsr__schema *s) {
    const tsr__schema *es = f->sub;
    memset(l, 0, sizeof *l);
    if (f->kind == TSR__K_KV) {
        if (o->type != MSGPACK_OBJECT_MAP) return fail(e, s, f, "not %s", kind_name(f->kind));
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR ||
                kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return fail(e, s, f, "entry %u is not a string key with an unsigned value", i);
        }
        l->n = o->via.map.size;
        l->obj = o;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_ARRAY) return fail(e, s, f, "not an array");
    l->n = o->via.array.size;
    l->obj = o;
    if (f->kind == TSR__K_LAZY) return 0; /* elements are checked by tsr__list_get */
    _Alignas(max_align_t) unsigned char tmp[ELEM_MAX];
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        int rc = decode_rec(es, &o->via.array.ptr[i], tmp, e);
        if (rc) {
            memset(l, 0, sizeof *l);
            return rc;
        }
    }
    return 0;
}

static int decode_value(const tsr__schema *s, const tsr__field *f, const msgpack_object *o, void *m,
                        derr *e) {
    unsigned char *p = (unsigned char *)m + f->off;
    switch (f->kind) {
    case TSR__K_U32:
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > UINT32_MAX) break;
        *(uint32_t *)p = (uint32_t)o->via.u64;
        return 0;
    case TSR__K_U64:
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) break;
        *(uint64_t *)p = o->via.u64;
        return 0;
    case TSR__K_I64:
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX)
            *(int64_t *)p = (int64_t)o->via.u64;
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            *(int64_t *)p = o->via.i64;
        else
            break;
        return 0;
    case TSR__K_DTYPE: {
        /* The catalogue leaves dtype's form open: a tsr_dtype or its name. */
        char name[16];
        tsr_dtype d;
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT32_MAX) {
            *(int64_t *)p = (int64_t)o->via.u64;
            return 0;
        }
        if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof name) break;
        memcpy(name, o->via.str.ptr, o->via.str.size);
        name[o->via.str.size] = 0;
        if (tsr_dtype_parse(name, &d) != 0) break;
        *(int64_t *)p = d;
        return 0;
    }
    case TSR__K_F64:
        if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
            *(double *)p = o->via.f64;
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            *(double *)p = (double)o->via.u64;
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            *(double *)p = (double)o->via.i64;
        else
            break;
        return 0;
    case TSR__K_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN) break;
        *(int *)p = o->via.boolean ? 1 : 0;
        return 0;
    case TSR__K_STR:
        if (o->type != MSGPACK_OBJECT_STR) break;
        *(tsr__str *)p = (tsr__str){o->via.str.ptr, o->via.str.size};
        return 0;
    case TSR__K_BIN:
        if (o->type != MSGPACK_OBJECT_BIN) break;
        *(tsr__str *)p = (tsr__str){o->via.bin.ptr, o->via.bin.size};
        return 0;
    case TSR__K_REC:
        return decode_rec(f->sub, o, p, e);
    default:
        return decode_list(f, o, (tsr__list *)p, e, s);
    }
    return fail(e, s, f, "not %s", kind_name(f->kind));
}

static int check_required(const tsr__schema *s, uint64_t has, derr *e) {
    for (uint8_t i = 0; i < s->nf; i++)
        if (s->f[i].req == REQ_REQ && !(has >> i & 1)) return fail(e, s, &s->f[i], "missing");
    return 0;
}

/* soft (top-level messages only): an OPT field that does not decode counts as absent and its
 * bit goes into *soft instead of failing the record. */
static int decode_map_fields(const tsr__schema *s, const msgpack_object *o, void *m, derr *e,
                             uint64_t *soft) {
    uint64_t *has = m;
    if (o->type != MSGPACK_OBJECT_MAP) return fail(e, s, NULL, "not a map");
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) continue;
        /* No key is empty; comparing the first byte first spares most strlen calls. */
        if (kv->key.via.str.size == 0) continue;
        for (uint8_t k = 0; k < s->nf; k++) {
            const tsr__field *f = &s->f[k];
            if (f->key[0] != kv->key.via.str.ptr[0] || keylen(f) != kv->key.via.str.size ||
                memcmp(f->key, kv->key.via.str.ptr, kv->key.via.str.size) != 0)
                continue;
            if (kv->val.type == MSGPACK_OBJECT_NIL && f->req != REQ_REQ) break; /* absent */
            int rc = decode_value(s, f, &kv->val, m, e);
            if (rc && soft && f->req == REQ_OPT) {
                *soft |= (uint64_t)1 << k;
                break;
            }
            if (rc) return rc;
            *has |= (uint64_t)1 << k;
            break;
        }
    }
    return check_required(s, *has, e);
}

static int decode_rec(const tsr__schema *s, const msgpack_object *o, void *m, derr *e) {
    memset(m, 0, s->size);
    uint64_t *has = m;
    if (s->shape == TSR__SH_MAP) return decode_map_fields(s, o, m, e, NULL);
    if (s->shape == TSR__SH_BARE) {
        int rc = decode_value(s, &s->f[0], o, m, e);
        if (rc == 0) *has = 1;
        return rc;
    }
    if (o->type != MSGPACK_OBJECT_ARRAY) return fail(e, s, NULL, "not an array");
    uint32_t n = o->via.array.size < s->nf ? o->via.array.size : s->nf;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *v = &o->via.array.ptr[i];
        if (v->type == MSGPACK_OBJECT_NIL && s->f[i].req != REQ_REQ) continue;
        int rc = decode_value(s, &s->f[i], v, m, e);
        if (rc) return rc;
        *has |= (uint64_t)1 << i;
    }
    return check_required(s, *has, e);
}

tsr__msg_type tsr__msg_peek_type(const msgpack_object *hdr) {
    const msgpack_object *t = tsr__mp_get(hdr, "t");
    if (!t || t->type != MSGPACK_OBJECT_STR) return TSR__MSG_NONE;
    return tsr__msg_type_of(t->via.str.ptr, t->via.str.size);
}

static int decode_msg(const msgpack_object *hdr, tsr__msg *m, char *err, size_t errlen,
                      uint64_t *soft) {
    derr e = {err, errlen};
    memset(m, 0, sizeof *m);
    if (err && errlen) err[0] = 0;
    if (!hdr || hdr->type != MSGPACK_OBJECT_MAP) {
        tsr__fmt(err, errlen, "header is not a map");
        return TSR_EPROTOCOL;
    }
    const msgpack_object *t = tsr__mp_get(hdr, "t");
    if (!t || t->type != MSGPACK_OBJECT_STR) {
        tsr__fmt(err, errlen, "header without a type");
        return TSR_EPROTOCOL;
    }
    tsr__msg_type type = tsr__msg_type_of(t->via.str.ptr, t->via.str.size);
    if (type == TSR__MSG_NONE) {
        int n = t->via.str.size < 32 ? (int)t->via.str.size : 32;
        tsr__fmt(err, errlen, "unknown message type \"%.*s\"", n, t->via.str.ptr);
        return TSR_EPROTOCOL;
    }
    if (soft) *soft = 0;
    int rc = decode_map_fields(tsr__msg_schemas[type], hdr, &m->u, &e, soft);
    if (rc) {
        memset(m, 0, sizeof *m);
        return rc;
    }
    m->type = type;
    return 0;
}

int tsr__msg_decode(const msgpack_object *hdr, tsr__msg *m, char *err, size_t errlen) {
    return decode_msg(hdr, m, err, errlen, NULL);
}

int tsr__msg_decode_soft(const msgpack_object *hdr, tsr__msg *m, uint64_t *dropped, char *err,
                         size_t errlen) {
    return decode_msg(hdr, m, err, errlen, dropped);
}

int tsr__msg_decode_bytes(const void *data, size_t len, msgpack_zone *zone, tsr__msg *m, char *err,
                          size_t errlen) {
    memset(m, 0, sizeof *m);
    /* msgpack-c sizes containers by their declared count: refuse counts the bytes cannot hold
     * before it allocates for them. */
    if (tsr__mpr_check(data, len) != 0) {
        tsr__fmt(err, errlen, "not one well-formed msgpack value");
        return TSR_EPROTOCOL;
    }
    msgpack_object obj;
    size_t off = 0;
    if (msgpack_unpack(data, len, &off, zone, &obj) != MSGPACK_UNPACK_SUCCESS || off != len) {
        tsr__fmt(err, errlen, "not one well-formed msgpack value");
        return TSR_EPROTOCOL;
    }
    return tsr__msg_decode(&obj, m, err, errlen);
}

int tsr__msg_hello_version(const msgpack_object *hdr, int64_t *v) {
    const msgpack_object *o = tsr__mp_get(hdr, "v");
    if (!o) return TSR_EPROTOCOL;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX) {
        *v = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return 0;
    }
    return TSR_EPROTOCOL;
}

int tsr__list_get(const tsr__list *l, const tsr__schema *es, uint32_t i, void *elem) {
    assert(i < l->n);
    if (l->obj && l->obj->type == MSGPACK_OBJECT_MAP) {
        const msgpack_object_kv *kv = &l->obj->via.map.ptr[i];
        tsr__m_kv *k = elem;
        k->has = 3;
        k->k = (tsr__str){kv->key.via.str.ptr, kv->key.via.str.size};
        k->v = kv->val.via.u64;
    } else if (l->obj) {
        /* A LIST's elements were checked when the message was decoded, so this fails only for
         * a LAZY list's. */
        if (decode_rec(es, &l->obj->via.array.ptr[i], elem, NULL) != 0) {
            memset(elem, 0, es->size);
            return TSR_EPROTOCOL;
        }
    } else if (l->v) {
        memcpy(elem, (const unsigned char *)l->v + (size_t)i * es->size, es->size);
    } else {
        memset(elem, 0, es->size);
        l->gen(l->ctx, i, elem);
    }
    return 0;
}
