/* Reading and packing msgpack headers by key, by hand: the independent reference the tests
 * check the message layer (wire/msg.h) and the servers against. Production code never does
 * this (it goes through the message tables), so these live with the tests. */
#ifndef TSR_TEST_MP_REF_H
#define TSR_TEST_MP_REF_H

#include <string.h>

#include <msgpack.h>

#include "wire/wire.h"

static inline int tsr__mp_as_int(const msgpack_object *o, int64_t *out) {
    if (!o) return TSR_EPROTOCOL;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX) return TSR_EPROTOCOL;
        *out = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    return TSR_EPROTOCOL;
}

static inline int tsr__mp_as_double(const msgpack_object *o, double *out) {
    if (!o) return TSR_EPROTOCOL;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *out = o->via.f64;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = (double)o->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = (double)o->via.i64;
        return 0;
    default:
        return TSR_EPROTOCOL;
    }
}

static inline int tsr__mp_get_int(const msgpack_object *obj, const char *key, int64_t *out) {
    return tsr__mp_as_int(tsr__mp_get(obj, key), out);
}

static inline int tsr__mp_get_uint(const msgpack_object *obj, const char *key, uint64_t *out) {
    const msgpack_object *o = tsr__mp_get(obj, key);
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return TSR_EPROTOCOL;
    *out = o->via.u64;
    return 0;
}

static inline int tsr__mp_get_double(const msgpack_object *obj, const char *key, double *out) {
    return tsr__mp_as_double(tsr__mp_get(obj, key), out);
}

static inline int tsr__mp_get_str(const msgpack_object *obj, const char *key, char *dst,
                                  size_t size) {
    const msgpack_object *o = tsr__mp_get(obj, key);
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= size) return TSR_EPROTOCOL;
    memcpy(dst, o->via.str.ptr, o->via.str.size);
    dst[o->via.str.size] = 0;
    return 0;
}

static inline int tsr__mp_str_eq(const msgpack_object *o, const char *s) {
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

static inline int tsr__mp_type(const msgpack_object *hdr, char *dst, size_t size) {
    return tsr__mp_get_str(hdr, "t", dst, size);
}

static inline void tsr__mp_pack_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static inline void tsr__mp_pack_type(msgpack_packer *pk, size_t n, const char *type) {
    msgpack_pack_map(pk, n);
    tsr__mp_pack_str(pk, "t");
    tsr__mp_pack_str(pk, type);
}

#endif
