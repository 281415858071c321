/* Frame I/O for the integration tests' fake schedulers (plain blocking sockets, the wire format
 * of docs/PROTOCOL.md): whole reads and writes, one frame in (type, optional trace flag,
 * payload skipped) and one frame out. */
#ifndef TSR_TEST_FAKE_WIRE_H
#define TSR_TEST_FAKE_WIRE_H

#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline int read_full(int fd, void *buf, size_t n) {
    for (char *p = buf; n;) {
        ssize_t k = read(fd, p, n);
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static inline int write_full(int fd, const void *buf, size_t n) {
    for (const char *p = buf; n;) {
        ssize_t k = write(fd, p, n);
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads one frame: its type ("" when it has none) and, when trace is not NULL, whether it says
 * trace: true; skips the payload. */
static inline int read_frame(int fd, char *type, size_t size, int *trace) {
    unsigned char len[4];
    type[0] = 0;
    if (trace) *trace = 0;
    if (read_full(fd, len, 4)) return -1;
    uint32_t hl = (uint32_t)len[0] << 24 | (uint32_t)len[1] << 16 | len[2] << 8 | len[3];
    char *h = malloc(hl ? hl : 1);
    if (!h || read_full(fd, h, hl)) {
        free(h);
        return -1;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    uint64_t plen = 0;
    if (msgpack_unpack_next(&u, h, hl, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            const msgpack_object_kv *kv = &u.data.via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) continue;
            const char *key = kv->key.via.str.ptr;
            uint32_t kl = kv->key.via.str.size;
            if (kl == 1 && key[0] == 't' && kv->val.type == MSGPACK_OBJECT_STR)
                snprintf(type, size, "%.*s", (int)kv->val.via.str.size, kv->val.via.str.ptr);
            if (kl == 1 && key[0] == 'n' && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                plen = kv->val.via.u64;
            if (trace && kl == 5 && !memcmp(key, "trace", 5) &&
                kv->val.type == MSGPACK_OBJECT_BOOLEAN)
                *trace = kv->val.via.boolean;
        }
    }
    msgpack_unpacked_destroy(&u);
    free(h);
    while (plen > 0) {
        char buf[4096];
        size_t k = plen < sizeof buf ? (size_t)plen : sizeof buf;
        if (read_full(fd, buf, k)) return -1;
        plen -= k;
    }
    return 0;
}

static inline int send_frame(int fd, msgpack_sbuffer *sb, const void *payload, size_t plen) {
    unsigned char len[4] = {(unsigned char)(sb->size >> 24), (unsigned char)(sb->size >> 16),
                            (unsigned char)(sb->size >> 8), (unsigned char)sb->size};
    int rc = write_full(fd, len, 4) || write_full(fd, sb->data, sb->size) ||
             (plen && write_full(fd, payload, plen));
    msgpack_sbuffer_clear(sb);
    return rc ? -1 : 0;
}

static inline void pstr(msgpack_packer *pk, const char *s) {
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

#endif
