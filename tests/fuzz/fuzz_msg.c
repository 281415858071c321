/* libFuzzer target: every message of wire/msg.h's table. The first byte picks the message type
 * (modulo the table, so a new message is fuzzed with no change here); the rest is a msgpack map
 * of fields, to which "t" is added (replacing any "t" of its own). What decodes must walk and
 * re-encode stably (fuzz_msg.h). */
#include "fuzz_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    tsr__msg_type type = (tsr__msg_type)(1 + data[0] % (TSR__MSG_COUNT - 1));
    data++;
    size--;
    /* The frame layer's own check comes first, as on the wire. */
    if (tsr__mpr_check(data, size) != 0) return 0;
    msgpack_zone *zone = msgpack_zone_new(4096);
    msgpack_object obj;
    size_t off = 0;
    if (msgpack_unpack((const char *)data, size, &off, zone, &obj) == MSGPACK_UNPACK_SUCCESS &&
        off == size && obj.type == MSGPACK_OBJECT_MAP) {
        uint32_t n = obj.via.map.size;
        msgpack_object_kv *kv = msgpack_zone_malloc(zone, (n + 1) * sizeof *kv);
        const char *name = tsr__msg_name(type);
        kv[0].key =
            (msgpack_object){.type = MSGPACK_OBJECT_STR, .via.str = {(uint32_t)strlen("t"), "t"}};
        kv[0].val =
            (msgpack_object){.type = MSGPACK_OBJECT_STR, .via.str = {(uint32_t)strlen(name), name}};
        uint32_t k = 1;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *key = &obj.via.map.ptr[i].key;
            if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == 1 &&
                key->via.str.ptr[0] == 't')
                continue;
            kv[k++] = obj.via.map.ptr[i];
        }
        msgpack_object hdr = {.type = MSGPACK_OBJECT_MAP, .via.map = {k, kv}};
        fz_check_msg(&hdr);
    }
    msgpack_zone_free(zone);
    return 0;
}
