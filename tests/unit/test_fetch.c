/* The shared chunk-fetch pool (wire/fetch.h) against a fake peer server on the same loop, whose
 * replies are packed by hand (mp_ref.h): replies matched in order, missing chunks, a reply out
 * of order failing what the connection held, close_all, and cancellation, including a
 * cancelled request whose large payload is already arriving in a buffer its owner then frees
 * (ASan catches a write into it). Every test runs its own loop and checks it closes cleanly. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mp_ref.h"
#include "wire/fetch.h"
#include "wire/wire.h"

static tsr__logger quiet = {"fetch-test", TSR_LOG_ERROR, NULL, NULL};

enum { SRV_NORMAL, SRV_SWAP, SRV_SILENT };

#define BIG_ID 100
#define BIG_BYTES ((size_t)32 << 20)

typedef struct req {
    tsr__fetch_req r;
    uint8_t *buf;
    size_t size;
    int chunks, done, status;
    char why[256];
} req;

typedef struct fx {
    uv_loop_t loop;
    uv_tcp_t server;
    char bound[64];
    int mode;
    tsr__conn *srv;
    int gets;
    int held_id; /* SRV_SWAP: the first get, answered after the second */
    tsr__fetch_pool pool;
    int order[16], norder;
    uv_check_t check;
    req *cancel_when_receiving; /* cancelled (and its buffer freed) once its payload starts */
    int cancelled;
} fx;

/* ---- the fake peer ---- */

static void send_reply(fx *f, uint32_t job, uint32_t id) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (id % 2 == 0 && id != BIG_ID) { /* even ids are missing */
        tsr__mp_pack_type(&pk, 3, "missing");
        tsr__mp_pack_str(&pk, "job"), msgpack_pack_uint32(&pk, job);
        tsr__mp_pack_str(&pk, "id"), msgpack_pack_uint32(&pk, id);
        tsr__conn_send(f->srv, &sb, NULL, 0, NULL, NULL);
    } else {
        size_t n = id == BIG_ID ? BIG_BYTES : 8;
        uint8_t *p = malloc(n);
        cr_assert_not_null(p);
        memset(p, (int)id, n);
        tsr__mp_pack_type(&pk, 6, "chunk");
        tsr__mp_pack_str(&pk, "job"), msgpack_pack_uint32(&pk, job);
        tsr__mp_pack_str(&pk, "id"), msgpack_pack_uint32(&pk, id);
        tsr__mp_pack_str(&pk, "dtype"), msgpack_pack_int(&pk, TSR_FLOAT64);
        tsr__mp_pack_str(&pk, "shape"), msgpack_pack_array(&pk, 1);
        msgpack_pack_uint64(&pk, n / 8);
        tsr__mp_pack_str(&pk, "n"), msgpack_pack_uint64(&pk, n);
        tsr__conn_send(f->srv, &sb, p, n, free, p);
    }
    msgpack_sbuffer_destroy(&sb);
}

static void srv_on_frame(tsr__conn *c, const msgpack_object *hdr, void *payload, uint64_t plen) {
    fx *f = c->owner;
    (void)payload;
    (void)plen;
    char type[32];
    cr_assert_eq(tsr__mp_type(hdr, type, sizeof type), 0);
    if (strcmp(type, "hello") == 0) {
        cr_assert(tsr__mp_str_eq(tsr__mp_get(hdr, "role"), "peer"));
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        tsr__mp_pack_type(&pk, 3, "welcome");
        tsr__mp_pack_str(&pk, "v"), msgpack_pack_int(&pk, TSR_PROTOCOL_VERSION);
        tsr__mp_pack_str(&pk, "id"), msgpack_pack_int(&pk, 1);
        tsr__conn_send(c, &sb, NULL, 0, NULL, NULL);
        msgpack_sbuffer_destroy(&sb);
        return;
    }
    cr_assert_str_eq(type, "get");
    int64_t job, id;
    cr_assert_eq(tsr__mp_get_int(hdr, "job", &job), 0);
    cr_assert_eq(tsr__mp_get_int(hdr, "id", &id), 0);
    f->gets++;
    if (f->mode == SRV_SILENT) return;
    if (f->mode == SRV_SWAP && f->gets == 1) {
        f->held_id = (int)id;
        return;
    }
    send_reply(f, (uint32_t)job, (uint32_t)id);
    if (f->mode == SRV_SWAP && f->gets == 2) send_reply(f, (uint32_t)job, (uint32_t)f->held_id);
}

static void srv_on_close(tsr__conn *c, int status, const char *reason) {
    fx *f = c->owner;
    (void)status;
    (void)reason;
    f->srv = NULL;
}

static const tsr__conn_cbs srv_cbs = {.on_frame = srv_on_frame, .on_close = srv_on_close};

static void on_connection(uv_stream_t *s, int status) {
    fx *f = s->data;
    cr_assert_eq(status, 0);
    f->srv = tsr__conn_new(&f->loop, &srv_cbs, f, &quiet);
    cr_assert_not_null(f->srv);
    cr_assert_eq(tsr__conn_accept(f->srv, s), 0);
    uv_close((uv_handle_t *)s, NULL); /* one peer per test */
}

/* ---- the pool's owner ---- */

static const char *on_chunk(tsr__fetch_req *r, const tsr__msg_chunk *ck, uint64_t plen,
                            void **dest) {
    req *q = r->user;
    cr_assert_eq(ck->id, r->id);
    q->chunks++;
    if (plen != q->size) return "size mismatch";
    *dest = q->buf;
    return NULL;
}

static fx *the_fx;

static void on_done(tsr__fetch_req *r, int status, const char *why) {
    req *q = r->user;
    q->done++;
    q->status = status;
    snprintf(q->why, sizeof q->why, "%s", why ? why : "");
    the_fx->order[the_fx->norder++] = (int)r->id;
    cr_assert_str_eq(r->from, the_fx->bound);
}

static void pack_hello(void *user, tsr__conn *c, msgpack_sbuffer *sb) {
    (void)c;
    (void)user;
    tsr__msg_hello m = {.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of("peer")};
    tsr__msg_pack_hello(sb, &m);
}

static const tsr__fetch_cbs cbs = {
    .on_chunk = on_chunk, .on_done = on_done, .pack_hello = pack_hello};

static void setup(fx *f, int mode) {
    memset(f, 0, sizeof *f);
    the_fx = f;
    f->mode = mode;
    cr_assert_eq(uv_loop_init(&f->loop), 0);
    cr_assert_eq(uv_tcp_init(&f->loop, &f->server), 0);
    f->server.data = f;
    cr_assert_eq(tsr__listen(&f->server, "127.0.0.1:0", on_connection, f->bound, sizeof f->bound),
                 0);
    tsr__fetch_pool_init(&f->pool, &f->loop, &quiet, &cbs, f, 4);
}

static void req_init(req *q, uint32_t id, size_t size) {
    memset(q, 0, sizeof *q);
    q->r.job = 7;
    q->r.id = id;
    q->r.user = q;
    q->size = size;
    q->buf = malloc(size);
    cr_assert_not_null(q->buf);
    memset(q->buf, 0xee, size);
}

static void run_until_done(fx *f, req *const *qs, int n) {
    for (int guard = 0; guard < 100000; guard++) {
        int all = 1;
        for (int k = 0; k < n; k++) all &= qs[k]->done > 0;
        if (all) return;
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    cr_assert_fail("requests never finished");
}

static void walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void teardown(fx *f) {
    tsr__fetch_close_all(&f->pool);
    if (f->srv) tsr__conn_close(f->srv, "test over");
    uv_run(&f->loop, UV_RUN_DEFAULT);
    tsr__fetch_pool_free(&f->pool);
    uv_walk(&f->loop, walk_close, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&f->loop), 0);
}

static int all8(const uint8_t *p, uint8_t v) {
    for (int k = 0; k < 8; k++)
        if (p[k] != v) return 0;
    return 1;
}

Test(fetch, replies_matched_in_order_and_missing, .timeout = 30) {
    fx f;
    setup(&f, SRV_NORMAL);
    req a, b, c;
    req_init(&a, 1, 8), req_init(&b, 2, 8), req_init(&c, 3, 8);
    cr_assert_eq(tsr__fetch_get(&f.pool, &a.r, f.bound), 0);
    cr_assert_eq(tsr__fetch_get(&f.pool, &b.r, f.bound), 0);
    cr_assert_eq(tsr__fetch_get(&f.pool, &c.r, f.bound), 0);
    tsr__fetch_flush(&f.pool);
    run_until_done(&f, (req *const[]){&a, &b, &c}, 3);
    cr_assert_eq(a.status, TSR__FETCH_OK);
    cr_assert(all8(a.buf, 1), "payload not in the owner's buffer");
    cr_assert_eq(b.status, TSR__FETCH_MISSING);
    cr_assert(strstr(b.why, f.bound), "%s", b.why);
    cr_assert_eq(b.chunks, 0);
    cr_assert_eq(c.status, TSR__FETCH_OK);
    cr_assert(all8(c.buf, 3));
    cr_assert_eq(f.norder, 3);
    cr_assert(f.order[0] == 1 && f.order[1] == 2 && f.order[2] == 3);
    teardown(&f);
    free(a.buf), free(b.buf), free(c.buf);
}

Test(fetch, reply_out_of_order_fails_the_connection, .timeout = 30) {
    fx f;
    setup(&f, SRV_SWAP);
    req a, b;
    req_init(&a, 1, 8), req_init(&b, 3, 8);
    tsr__fetch_get(&f.pool, &a.r, f.bound);
    tsr__fetch_get(&f.pool, &b.r, f.bound);
    tsr__fetch_flush(&f.pool);
    run_until_done(&f, (req *const[]){&a, &b}, 2);
    cr_assert_eq(a.status, TSR__FETCH_ERROR);
    cr_assert_eq(b.status, TSR__FETCH_ERROR);
    cr_assert(strstr(a.why, "out of order"), "%s", a.why);
    cr_assert_eq(a.chunks + b.chunks, 0, "a reply to another request was delivered");
    teardown(&f);
    free(a.buf), free(b.buf);
}

Test(fetch, cancelled_before_the_reply_is_dropped, .timeout = 30) {
    fx f;
    setup(&f, SRV_NORMAL);
    req a, b, c;
    req_init(&a, 1, 8), req_init(&b, 3, 8), req_init(&c, 5, 8);
    tsr__fetch_get(&f.pool, &a.r, f.bound);
    tsr__fetch_get(&f.pool, &b.r, f.bound);
    tsr__fetch_get(&f.pool, &c.r, f.bound);
    tsr__fetch_cancel(&c.r); /* still queued: never asked */
    tsr__fetch_flush(&f.pool);
    /* Sent once the peer welcomes us; cancelled before its reply can arrive. */
    while (f.gets < 2) uv_run(&f.loop, UV_RUN_ONCE);
    tsr__fetch_cancel(&a.r);
    run_until_done(&f, (req *const[]){&b}, 1);
    cr_assert_eq(b.status, TSR__FETCH_OK);
    cr_assert(all8(b.buf, 3));
    cr_assert_eq(a.done + a.chunks, 0, "a cancelled request was called back");
    cr_assert(all8(a.buf, 0xee), "a cancelled request's buffer was written");
    cr_assert_eq(f.gets, 2, "a cancelled queued get was sent");
    cr_assert_eq(c.done, 0);
    teardown(&f);
    free(a.buf), free(b.buf), free(c.buf);
}

/* Cancels the big request once its payload has started arriving, and frees its buffer. */
static void cancel_check(uv_check_t *h) {
    fx *f = h->data;
    req *q = f->cancel_when_receiving;
    if (q && q->chunks && !q->done && !f->cancelled) {
        tsr__fetch_cancel(&q->r);
        free(q->buf);
        q->buf = NULL;
        f->cancelled = 1;
    }
}

Test(fetch, cancelled_while_its_payload_arrives, .timeout = 60) {
    fx f;
    setup(&f, SRV_NORMAL);
    req big, after;
    req_init(&big, BIG_ID, BIG_BYTES), req_init(&after, 3, 8);
    uv_check_init(&f.loop, &f.check);
    f.check.data = &f;
    uv_check_start(&f.check, cancel_check);
    f.cancel_when_receiving = &big;
    tsr__fetch_get(&f.pool, &big.r, f.bound);
    tsr__fetch_get(&f.pool, &after.r, f.bound);
    tsr__fetch_flush(&f.pool);
    run_until_done(&f, (req *const[]){&after}, 1);
    cr_assert(f.cancelled, "the payload arrived in one read: nothing was cancelled mid-way");
    cr_assert_eq(big.done, 0);
    cr_assert_eq(after.status, TSR__FETCH_OK, "the connection lost its place: %s", after.why);
    cr_assert(all8(after.buf, 3));
    uv_check_stop(&f.check);
    teardown(&f);
    free(big.buf), free(after.buf);
}

Test(fetch, close_all_ends_what_is_outstanding, .timeout = 30) {
    fx f;
    setup(&f, SRV_SILENT);
    req a, b;
    req_init(&a, 1, 8), req_init(&b, 3, 8);
    tsr__fetch_get(&f.pool, &a.r, f.bound);
    tsr__fetch_get(&f.pool, &b.r, f.bound);
    tsr__fetch_flush(&f.pool);
    while (f.gets < 2) uv_run(&f.loop, UV_RUN_ONCE);
    tsr__fetch_close_all(&f.pool);
    run_until_done(&f, (req *const[]){&a, &b}, 2);
    cr_assert_eq(a.status, TSR__FETCH_ERROR);
    cr_assert_eq(b.status, TSR__FETCH_ERROR);
    cr_assert(f.order[0] == 1 && f.order[1] == 3, "ended out of order");
    teardown(&f);
    free(a.buf), free(b.buf);
}
