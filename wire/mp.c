/* The one msgpack lookup the wire itself needs: a header's value by key, for the frame's payload
 * length (conn.c) and the message type (msg.c). Everything else reads messages through the
 * message layer (msg.h); tests keep their own by-hand reader (tests/unit/mp_ref.h). */
#include <string.h>

#include "wire/wire.h"

const msgpack_object *tsr__mp_get(const msgpack_object *obj, const char *key) {
    if (!obj || obj->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < obj->via.map.size; i++) {
        const msgpack_object_kv *kv = &obj->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == klen &&
            memcmp(kv->key.via.str.ptr, key, klen) == 0)
            return &kv->val;
    }
    return NULL;
}
