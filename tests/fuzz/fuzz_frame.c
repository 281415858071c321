/* libFuzzer target: the frame layer (wire/conn.c) reading a byte stream, through a real
 * connection on a socketpair. The first byte picks how the stream is cut into writes (so
 * headers and payloads arrive split at every place) and whether payloads go to a buffer of the
 * owner's, to the connection's own, or are dropped halfway; every frame's header is decoded as
 * a message (fuzz_msg.h). The connection must end closed, whatever the bytes. */
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz_owner {
    int mode, frames, closed;
    uint8_t *buf;
} fz_owner;

static int on_header(tsr__conn *c, const msgpack_object *hdr, uint64_t plen, void **dest) {
    fz_owner *o = c->owner;
    (void)hdr;
    if ((o->mode == 1 || o->mode == 2) && plen > 0 && plen <= (1 << 20)) {
        free(o->buf);
        o->buf = malloc(plen);
        *dest = o->buf;
    }
    return 0;
}

static void on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    fz_owner *o = c->owner;
    if (plen && !payload) abort();
    o->frames++;
    fz_check_msg(hdr);
}

static void on_close(tsr__conn *c, int status, const char *reason) {
    fz_owner *o = c->owner;
    (void)status;
    (void)reason;
    o->closed++;
}

static const tsr__conn_cbs cbs = {
    .on_header = on_header, .on_frame = on_frame, .on_close = on_close};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uv_loop_t loop;
    static int loop_ready;
    static const tsr__logger log = {0};
    if (!loop_ready) {
        uv_loop_init(&loop);
        loop_ready = 1;
    }
    if (size < 1 || size > 60000) return 0; /* stays within the socket's buffer */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) abort();
    fz_owner o = {.mode = data[0] & 3};
    /* 1 .. 64 bytes per write, but at most 16 writes. */
    size_t piece = 1 + (data[0] >> 2);
    if (piece < (size - 1) / 16) piece = (size - 1) / 16;
    data++;
    size--;
    tsr__conn *c = tsr__conn_new(&loop, &cbs, &o, &log);
    if (!c || tsr__conn_open(c, sv[0]) != 0) abort();
    c->max_header = 1 << 16;
    c->max_payload = 1 << 20;
    for (size_t at = 0; at < size && !o.closed; at += piece) {
        size_t n = size - at < piece ? size - at : piece;
        if (send(sv[1], data + at, n, MSG_NOSIGNAL) != (ssize_t)n) break; /* closed meanwhile */
        uv_run(&loop, UV_RUN_NOWAIT);
        if (o.mode == 2 && !o.closed && c->in_payload) tsr__conn_drop_payload(c);
    }
    if (!o.closed) {
        close(sv[1]);
        sv[1] = -1;
    }
    /* End of stream: the connection closes (cleanly or as a truncated frame). */
    uv_run(&loop, UV_RUN_DEFAULT);
    if (o.closed != 1) abort();
    if (sv[1] >= 0) close(sv[1]);
    free(o.buf);
    return 0;
}
