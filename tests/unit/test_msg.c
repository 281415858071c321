/* The message layer (wire/msg.h): encodings checked byte for byte against msgpack packed by
 * hand in the layout of docs/PROTOCOL.md, decoding of hand-packed headers and of bad ones, the
 * protocol document against the table, and seeded random and mutated bytes through the decoder
 * (no crash, no assert: run under ASan too). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/msg.h"
#include "wire/wire.h"

static void pk_str(msgpack_packer *pk, const char *s) {
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void expect_same(const msgpack_sbuffer *a, const msgpack_sbuffer *b) {
    cr_assert_eq(a->size, b->size, "encoded %zu bytes, reference %zu", a->size, b->size);
    cr_assert(memcmp(a->data, b->data, a->size) == 0, "encoding differs from the reference");
}

static int decode(const msgpack_sbuffer *b, tsr__msg *m, msgpack_zone *z, char *err) {
    return tsr__msg_decode_bytes(b->data, b->size, z, m, err, 200);
}

/* ---- compute: the hot message, from generators, against PROTOCOL.md's layout ---- */

static const uint8_t KD[3] = {1, 2, 3};

static void gen_input(void *ctx, uint32_t i, void *elem) {
    (void)ctx;
    tsr__m_input *in = elem;
    in->id = 10 + i;
    if (i == 0) return; /* [10, nil] */
    if (i == 1) {
        in->addr = tsr__str_of("127.0.0.1:5");
        in->has |= TSR__M_BIT(input, addr);
        return;
    }
    in->flags = 2;
    in->kdesc = (tsr__str){(const char *)KD, 3};
    in->has |= TSR__M_BIT(input, flags) | TSR__M_BIT(input, kdesc);
}

static void gen_task(void *ctx, uint32_t i, void *elem) {
    tsr__m_task *t = elem;
    t->id = 100 + i;
    t->kdesc = (tsr__str){(const char *)KD, 3};
    t->inputs = (tsr__list){.n = i == 0 ? 3 : 0, .gen = gen_input, .ctx = ctx};
}

Test(msg, compute_matches_protocol_layout) {
    msgpack_sbuffer a, b;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    tsr__msg_compute c = {.job = 7, .trace = 1, .tasks = {.n = 2, .gen = gen_task}};
    TSR__MSG_SET(compute, &c, trace);
    tsr__msg_pack_compute(&a, &c);

    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "t"), pk_str(&pk, "compute");
    pk_str(&pk, "job"), msgpack_pack_uint32(&pk, 7);
    pk_str(&pk, "trace"), msgpack_pack_true(&pk);
    pk_str(&pk, "tasks"), msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, 3), msgpack_pack_uint32(&pk, 100);
    msgpack_pack_bin(&pk, 3), msgpack_pack_bin_body(&pk, KD, 3);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_array(&pk, 2), msgpack_pack_uint32(&pk, 10), msgpack_pack_nil(&pk);
    msgpack_pack_array(&pk, 2), msgpack_pack_uint32(&pk, 11), pk_str(&pk, "127.0.0.1:5");
    msgpack_pack_array(&pk, 4), msgpack_pack_uint32(&pk, 12), msgpack_pack_nil(&pk);
    msgpack_pack_uint64(&pk, 2), msgpack_pack_bin(&pk, 3), msgpack_pack_bin_body(&pk, KD, 3);
    msgpack_pack_array(&pk, 3), msgpack_pack_uint32(&pk, 101);
    msgpack_pack_bin(&pk, 3), msgpack_pack_bin_body(&pk, KD, 3);
    msgpack_pack_array(&pk, 0);
    expect_same(&a, &b);

    /* And back: the typed view of what was sent. */
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    tsr__msg m;
    char err[200];
    cr_assert_eq(decode(&a, &m, &z, err), 0, "%s", err);
    cr_assert_eq(m.type, TSR__MSG_compute);
    cr_assert_eq(m.u.compute.job, 7);
    cr_assert(TSR__MSG_HAS(compute, &m.u.compute, trace) && m.u.compute.trace);
    cr_assert_eq(m.u.compute.tasks.n, 2);
    tsr__m_task t;
    TSR__LIST_GET(&m.u.compute.tasks, task, 0, &t);
    cr_assert_eq(t.id, 100);
    cr_assert(t.kdesc.n == 3 && memcmp(t.kdesc.p, KD, 3) == 0);
    cr_assert_eq(t.inputs.n, 3);
    tsr__m_input in;
    TSR__LIST_GET(&t.inputs, input, 0, &in);
    cr_assert(in.id == 10 && !TSR__M_HAS(input, &in, addr) && !TSR__M_HAS(input, &in, flags));
    TSR__LIST_GET(&t.inputs, input, 1, &in);
    cr_assert(in.id == 11 && tsr__str_eq(in.addr, "127.0.0.1:5"));
    TSR__LIST_GET(&t.inputs, input, 2, &in);
    cr_assert(in.id == 12 && !TSR__M_HAS(input, &in, addr) && in.flags == 2);
    cr_assert(TSR__M_HAS(input, &in, kdesc) && in.kdesc.n == 3);
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

/* compute's tasks and their inputs are LAZY lists: a malformed element (here a task's third
 * input, whose id is a string) leaves the message decodable and is refused when it is read. */
Test(msg, lazy_list_element_refused_at_read) {
    msgpack_sbuffer a;
    msgpack_sbuffer_init(&a);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &a, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "t"), pk_str(&pk, "compute");
    pk_str(&pk, "job"), msgpack_pack_uint32(&pk, 7);
    pk_str(&pk, "tasks"), msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, 3), msgpack_pack_uint32(&pk, 100);
    msgpack_pack_bin(&pk, 3), msgpack_pack_bin_body(&pk, KD, 3);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_array(&pk, 2), msgpack_pack_uint32(&pk, 10), msgpack_pack_nil(&pk);
    msgpack_pack_array(&pk, 2), msgpack_pack_uint32(&pk, 11), msgpack_pack_nil(&pk);
    msgpack_pack_array(&pk, 2), pk_str(&pk, "12"), msgpack_pack_nil(&pk);
    msgpack_pack_str(&pk, 3), msgpack_pack_str_body(&pk, "bad", 3); /* task 1: not a tuple */

    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    tsr__msg m;
    char err[200];
    cr_assert_eq(decode(&a, &m, &z, err), 0, "%s", err);
    cr_assert_eq(m.u.compute.tasks.n, 2);
    tsr__m_task t;
    cr_assert_eq(TSR__LIST_GET(&m.u.compute.tasks, task, 0, &t), 0);
    cr_assert_eq(t.inputs.n, 3);
    tsr__m_input in;
    cr_assert_eq(TSR__LIST_GET(&t.inputs, input, 0, &in), 0);
    cr_assert_eq(in.id, 10);
    cr_assert_eq(TSR__LIST_GET(&t.inputs, input, 1, &in), 0);
    cr_assert_eq(TSR__LIST_GET(&t.inputs, input, 2, &in), TSR_EPROTOCOL);
    cr_assert(in.has == 0 && in.id == 0, "a refused element is zeroed");
    cr_assert_eq(TSR__LIST_GET(&m.u.compute.tasks, task, 1, &t), TSR_EPROTOCOL);
    msgpack_zone_destroy(&z);

    /* The list itself must still be an array: that is checked when the message is decoded. */
    msgpack_sbuffer_clear(&a);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "t"), pk_str(&pk, "free");
    pk_str(&pk, "keys"), msgpack_pack_map(&pk, 0);
    msgpack_zone_init(&z, 1024);
    cr_assert_eq(decode(&a, &m, &z, err), TSR_EPROTOCOL);
    cr_assert(strstr(err, "free.keys") != NULL, "%s", err);
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&a);
}

/* ---- done, as a worker packs it by hand today: [job, id, nbytes, seconds(, start, thread)] ----
 */

Test(msg, done_decodes_hand_packed) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "st"), msgpack_pack_map(&pk, 2);
    pk_str(&pk, "rss"), msgpack_pack_uint64(&pk, 4096);
    pk_str(&pk, "busy_s"), msgpack_pack_double(&pk, 1.5);
    pk_str(&pk, "items"), msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, 4), msgpack_pack_uint64(&pk, 1), msgpack_pack_uint64(&pk, 2);
    msgpack_pack_uint64(&pk, 800), msgpack_pack_double(&pk, 0.25);
    msgpack_pack_array(&pk, 6), msgpack_pack_uint64(&pk, 1), msgpack_pack_uint64(&pk, 3);
    msgpack_pack_uint64(&pk, 8), msgpack_pack_double(&pk, 0.5), msgpack_pack_double(&pk, 99.0);
    msgpack_pack_uint16(&pk, 4);
    pk_str(&pk, "t"), pk_str(&pk, "done"); /* "t" need not come first */
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    tsr__msg m;
    char err[200];
    cr_assert_eq(decode(&b, &m, &z, err), 0, "%s", err);
    cr_assert_eq(m.type, TSR__MSG_done);
    const tsr__msg_done *d = &m.u.done;
    cr_assert(!TSR__MSG_HAS(done, d, tr) && TSR__MSG_HAS(done, d, st));
    cr_assert(TSR__M_HAS(wstats, &d->st, rss) && d->st.rss == 4096 && d->st.busy_s == 1.5);
    cr_assert(!TSR__M_HAS(wstats, &d->st, tasks));
    tsr__m_done_item it;
    TSR__LIST_GET(&d->items, done_item, 0, &it);
    cr_assert(it.job == 1 && it.id == 2 && it.nbytes == 800 && it.seconds == 0.25);
    cr_assert(!TSR__M_HAS(done_item, &it, start));
    TSR__LIST_GET(&d->items, done_item, 1, &it);
    cr_assert(TSR__M_HAS(done_item, &it, thread) && it.thread == 4 && it.start == 99.0);
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&b);
}

/* ---- bad headers: each an error with a reason, never a crash ---- */

static int decode_fields(const char *type, void (*fields)(msgpack_packer *), int nfields,
                         char *err) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)nfields + 1);
    pk_str(&pk, "t"), pk_str(&pk, type);
    fields(&pk);
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    tsr__msg m;
    int rc = decode(&b, &m, &z, err);
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&b);
    return rc;
}

static void get_big_job(msgpack_packer *pk) {
    pk_str(pk, "job"), msgpack_pack_uint64(pk, (uint64_t)1 << 32);
    pk_str(pk, "id"), msgpack_pack_uint64(pk, 1);
}
static void get_no_id(msgpack_packer *pk) {
    pk_str(pk, "job"), msgpack_pack_uint64(pk, 1);
}
static void get_str_id(msgpack_packer *pk) {
    pk_str(pk, "job"), msgpack_pack_uint64(pk, 1);
    pk_str(pk, "id"), pk_str(pk, "1");
}
static void free_bad_key(msgpack_packer *pk) {
    pk_str(pk, "keys"), msgpack_pack_array(pk, 2);
    msgpack_pack_array(pk, 2), msgpack_pack_uint64(pk, 1), msgpack_pack_uint64(pk, 2);
    msgpack_pack_array(pk, 1), msgpack_pack_uint64(pk, 1);
}
static void finished_bad_output(msgpack_packer *pk) {
    pk_str(pk, "job"), msgpack_pack_uint64(pk, 1);
    pk_str(pk, "outputs"), msgpack_pack_array(pk, 2);
    msgpack_pack_array(pk, 3), msgpack_pack_uint64(pk, 1), msgpack_pack_nil(pk);
    msgpack_pack_uint64(pk, 8);
    msgpack_pack_array(pk, 2), msgpack_pack_uint64(pk, 2), msgpack_pack_nil(pk);
}
static void nothing(msgpack_packer *pk) {
    (void)pk;
}

Test(msg, bad_headers_are_errors) {
    char err[200];
    cr_assert_eq(decode_fields("get", get_big_job, 2, err), TSR_EPROTOCOL);
    cr_assert_str_eq(err, "get.job: not an unsigned 32-bit integer");
    cr_assert_eq(decode_fields("get", get_no_id, 1, err), TSR_EPROTOCOL);
    cr_assert_str_eq(err, "get.id: missing");
    cr_assert_eq(decode_fields("get", get_str_id, 2, err), TSR_EPROTOCOL);
    cr_assert_str_eq(err, "get.id: not an unsigned 32-bit integer");
    /* A LIST's elements are checked with the message; a LAZY list's (free's keys) when they are
     * read (lazy_list_element_refused_at_read), so its message decodes. */
    cr_assert_eq(decode_fields("finished", finished_bad_output, 2, err), TSR_EPROTOCOL);
    cr_assert_str_eq(err, "output.nbytes: missing");
    cr_assert_eq(decode_fields("free", free_bad_key, 1, err), 0);
    cr_assert_eq(decode_fields("teleport", nothing, 0, err), TSR_EPROTOCOL);
    cr_assert_str_eq(err, "unknown message type \"teleport\"");
    cr_assert_eq(decode_fields("shutdown", nothing, 0, err), 0);
}

/* A hello of another version is recognised by "v" alone, whatever else it carries. */
Test(msg, hello_version_is_read_first) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "t"), pk_str(&pk, "hello");
    pk_str(&pk, "v"), msgpack_pack_int(&pk, TSR_PROTOCOL_VERSION + 1);
    pk_str(&pk, "role"), msgpack_pack_int(&pk, 3); /* a shape this version does not know */
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object o;
    size_t off = 0;
    cr_assert_eq(msgpack_unpack(b.data, b.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
    int64_t v = 0;
    cr_assert_eq(tsr__msg_hello_version(&o, &v), 0);
    cr_assert_eq(v, TSR_PROTOCOL_VERSION + 1);
    tsr__msg m;
    char err[200];
    cr_assert_eq(tsr__msg_decode(&o, &m, err, sizeof err), TSR_EPROTOCOL);
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&b);
}

/* ---- PROTOCOL.md against the table ---- */

static char *read_doc(void) {
    FILE *f = fopen(TSR_SOURCE_ROOT "/docs/PROTOCOL.md", "rb");
    cr_assert(f, "cannot open docs/PROTOCOL.md");
    static char buf[1 << 18];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

/* Does the doc hold key as a word (bounded by non-identifier characters)? */
static int has_word(const char *doc, const char *key, size_t n) {
    for (const char *p = doc; (p = strstr(p, key)) != NULL; p++) {
        char before = p == doc ? ' ' : p[-1], after = p[n];
        int idb = before == '_' || (before >= 'a' && before <= 'z');
        int ida = after == '_' || (after >= 'a' && after <= 'z');
        if (!idb && !ida && strncmp(p, key, n) == 0) return 1;
    }
    return 0;
}

static void check_keys(const char *doc, const tsr__schema *s) {
    if (s->shape != TSR__SH_MAP) return;
    for (uint8_t i = 0; i < s->nf; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s", s->f[i].key);
        size_t n = strlen(key);
        if (n && key[n - 1] == '_') key[--n] = 0;
        cr_expect(has_word(doc, key, n), "PROTOCOL.md does not mention %s's key \"%s\"", s->name,
                  key);
    }
}

Test(msg, protocol_doc_matches_table) {
    const char *doc = read_doc();
    for (int t = 1; t < TSR__MSG_COUNT; t++) {
        char want[64];
        snprintf(want, sizeof want, "t:\"%s\"", tsr__msg_name((tsr__msg_type)t));
        cr_expect(strstr(doc, want), "PROTOCOL.md does not list %s", want);
        check_keys(doc, tsr__msg_schemas[t]);
    }
#define CHECK_REC(rec, shape) check_keys(doc, &tsr__schema_##rec);
    TSR__RECORD_MAP(CHECK_REC)
#undef CHECK_REC
    /* Every type the document names is in the table. */
    for (const char *p = doc; (p = strstr(p, "t:\"")) != NULL;) {
        p += 3;
        const char *q = strchr(p, '"');
        cr_assert(q);
        cr_expect(tsr__msg_type_of(p, (size_t)(q - p)) != TSR__MSG_NONE,
                  "PROTOCOL.md lists t:\"%.*s\", which the table lacks", (int)(q - p), p);
        p = q;
    }
}

/* ---- fuzz: every message, filled, then mutated; and random bytes ---- */

static void fill(const tsr__schema *s, void *m);

static void gen_fill(void *ctx, uint32_t i, void *elem) {
    const tsr__schema *es = ctx;
    if (es == &tsr__schema_kv) {
        tsr__m_kv *kv = elem;
        static const char *const names[] = {"ready", "memory"};
        kv->k = tsr__str_of(names[i % 2]);
        kv->v = i;
        return;
    }
    fill(es, elem);
}

/* Every field present with a small value, every list of two elements. */
static void fill(const tsr__schema *s, void *m) {
    memset(m, 0, s->size);
    *(uint64_t *)m = ~(uint64_t)0 >> (64 - (s->nf ? s->nf : 1));
    for (uint8_t i = 0; i < s->nf; i++) {
        unsigned char *p = (unsigned char *)m + s->f[i].off;
        switch (s->f[i].kind) {
        case TSR__K_U32:
            *(uint32_t *)p = 3;
            break;
        case TSR__K_U64:
            *(uint64_t *)p = 300;
            break;
        case TSR__K_I64:
            *(int64_t *)p = -2;
            break;
        case TSR__K_DTYPE:
            *(int64_t *)p = TSR_FLOAT64;
            break;
        case TSR__K_F64:
            *(double *)p = 0.5;
            break;
        case TSR__K_BOOL:
            *(int *)p = 1;
            break;
        case TSR__K_STR:
        case TSR__K_BIN:
            *(tsr__str *)p = tsr__str_of("ab");
            break;
        case TSR__K_REC:
            fill(s->f[i].sub, p);
            break;
        default:
            *(tsr__list *)p = (tsr__list){.n = 2, .gen = gen_fill, .ctx = (void *)s->f[i].sub};
        }
    }
}

/* LAZY elements the fuzzer saw refused at read: the test checks that path was exercised. */
static int lazy_refused;

/* Reads every element of every list of a decoded record, as a user would. A LAZY list's
 * element may fail to decode (and is then zeroed); any other list's never does. */
static void walk(const tsr__schema *s, const void *m) {
    for (uint8_t i = 0; i < s->nf; i++) {
        const unsigned char *p = (const unsigned char *)m + s->f[i].off;
        int kind = s->f[i].kind;
        if (kind == TSR__K_REC) walk(s->f[i].sub, p);
        if (kind != TSR__K_LIST && kind != TSR__K_LAZY && kind != TSR__K_KV) continue;
        const tsr__list *l = (const tsr__list *)p;
        for (uint32_t k = 0; k < l->n; k++) {
            _Alignas(max_align_t) unsigned char e[512];
            memset(e, 0xa5, sizeof e);
            int rc = tsr__list_get(l, s->f[i].sub, k, e);
            cr_assert(rc == 0 || (kind == TSR__K_LAZY && rc == TSR_EPROTOCOL));
            if (rc != 0) {
                lazy_refused++;
                for (size_t j = 0; j < s->f[i].sub->size; j++)
                    cr_assert_eq(e[j], 0, "a refused element is zeroed");
                continue;
            }
            if (kind != TSR__K_KV) walk(s->f[i].sub, e);
        }
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void try_bytes(const uint8_t *p, size_t n, int *ok) {
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    tsr__msg m;
    char err[200];
    int rc = tsr__msg_decode_bytes(p, n, &z, &m, err, sizeof err);
    cr_assert(rc == 0 || rc == TSR_EPROTOCOL);
    if (rc == 0) {
        (*ok)++;
        walk(tsr__msg_schemas[m.type], &m.u);
    } else {
        cr_assert(err[0], "an error without a reason");
    }
    msgpack_zone_destroy(&z);
}

Test(msg, fuzz_every_decoder, .timeout = 60) {
    int ok = 0, rounds = 0;
    for (int t = 1; t < TSR__MSG_COUNT; t++) {
        const tsr__schema *s = tsr__msg_schemas[t];
        _Alignas(max_align_t) unsigned char m[sizeof(tsr__msg)];
        fill(s, m);
        msgpack_sbuffer b;
        msgpack_sbuffer_init(&b);
        tsr__msg_pack(&b, (tsr__msg_type)t, m);
        /* The filled message itself decodes to its type. */
        msgpack_zone z;
        msgpack_zone_init(&z, 256);
        tsr__msg d;
        char err[200];
        cr_assert_eq(tsr__msg_decode_bytes(b.data, b.size, &z, &d, err, sizeof err), 0, "%s: %s",
                     s->name, err);
        cr_assert_eq((int)d.type, t);
        msgpack_zone_destroy(&z);
        uint8_t *buf = malloc(b.size + 16);
        for (int r = 0; r < 2000; r++, rounds++) {
            size_t n = b.size;
            memcpy(buf, b.data, n);
            int edits = 1 + (int)(next() % 4);
            for (int k = 0; k < edits; k++) {
                uint64_t x = next();
                switch (x % 4) {
                case 0: /* flip a byte */
                    buf[(x >> 8) % n] ^= (uint8_t)(1 + (x >> 32) % 255);
                    break;
                case 1: /* truncate */
                    n = 1 + (x >> 8) % n;
                    break;
                case 2: /* a byte set to an interesting value (container headers, nil) */
                    buf[(x >> 8) % n] =
                        (uint8_t[]){0xc0, 0xdd, 0xdf, 0x90, 0x80, 0xcf, 0xff, 0x00}[(x >> 32) % 8];
                    break;
                default: /* a big count after a 32-bit array or map header */
                    if (n > 5) {
                        size_t at = (x >> 8) % (n - 5);
                        buf[at] = (x >> 40) & 1 ? 0xdd : 0xdf;
                        memset(buf + at + 1, 0xff, 4);
                    }
                }
            }
            try_bytes(buf, n, &ok);
        }
        free(buf);
        msgpack_sbuffer_destroy(&b);
    }
    uint8_t rnd[64];
    for (int r = 0; r < 20000; r++, rounds++) {
        size_t n = next() % sizeof rnd;
        for (size_t k = 0; k < n; k++) rnd[k] = (uint8_t)next();
        if (n) rnd[0] = (uint8_t)(0x80 | (rnd[0] & 0x0f)); /* mostly a map */
        try_bytes(rnd, n, &ok);
    }
    cr_assert(ok > 0 && ok < rounds, "%d of %d decoded: the mutations were not mixed", ok, rounds);
    cr_assert(lazy_refused > 0, "no LAZY list element was refused at read");
}

/* ---- a GPU worker's optional fields (issue 10): new peers send them, old ones do not ---- */

Test(msg, gpu_fields_round_trip_and_are_optional) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    tsr__msg m;
    char err[200];

    /* hello with the device, and without (an older worker or a CPU one) */
    tsr__msg_hello h = {.v = TSR_PROTOCOL_VERSION,
                        .role = tsr__str_of("worker"),
                        .kind = tsr__str_of("gpu"),
                        .dev_name = tsr__str_of("NVIDIA H100 80GB HBM3"),
                        .dev_limit = 80ull << 30};
    h.has |=
        TSR__MSG_BIT(hello, kind) | TSR__MSG_BIT(hello, dev_name) | TSR__MSG_BIT(hello, dev_limit);
    tsr__msg_pack_hello(&b, &h);
    cr_assert_eq(decode(&b, &m, &z, err), 0, "%s", err);
    cr_assert(TSR__MSG_HAS(hello, &m.u.hello, dev_name) &&
              TSR__MSG_HAS(hello, &m.u.hello, dev_limit));
    cr_assert(tsr__str_eq(m.u.hello.dev_name, "NVIDIA H100 80GB HBM3"));
    cr_assert_eq(m.u.hello.dev_limit, 80ull << 30);
    msgpack_sbuffer_clear(&b);
    h.has &= ~(TSR__MSG_BIT(hello, dev_name) | TSR__MSG_BIT(hello, dev_limit));
    tsr__msg_pack_hello(&b, &h);
    cr_assert_eq(decode(&b, &m, &z, err), 0, "%s", err);
    cr_assert_not(TSR__MSG_HAS(hello, &m.u.hello, dev_name));
    cr_assert_not(TSR__MSG_HAS(hello, &m.u.hello, dev_limit));

    /* done's st with the device cache's figures */
    tsr__msg_done d = {.items = {.n = 0}};
    d.st = (tsr__m_wstats){.tasks = 7,
                           .dev_used = 1u << 30,
                           .dev_limit = 4ull << 30,
                           .h2d_bytes = 5u << 20,
                           .d2h_bytes = 3u << 20,
                           .dev_evicted = 9};
    d.st.has = TSR__M_BIT(wstats, tasks) | TSR__M_BIT(wstats, dev_used) |
               TSR__M_BIT(wstats, dev_limit) | TSR__M_BIT(wstats, h2d_bytes) |
               TSR__M_BIT(wstats, d2h_bytes) | TSR__M_BIT(wstats, dev_evicted);
    d.has |= TSR__MSG_BIT(done, st);
    msgpack_sbuffer_clear(&b);
    tsr__msg_pack_done(&b, &d);
    cr_assert_eq(decode(&b, &m, &z, err), 0, "%s", err);
    const tsr__m_wstats *st = &m.u.done.st;
    cr_assert_eq(st->has, d.st.has);
    cr_assert(st->dev_used == 1u << 30 && st->dev_limit == 4ull << 30 &&
              st->h2d_bytes == 5u << 20 && st->d2h_bytes == 3u << 20 && st->dev_evicted == 9 &&
              st->tasks == 7);

    /* an info wlist entry from an older scheduler: the required fields only */
    msgpack_sbuffer_clear(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "t"), pk_str(&pk, "info");
    pk_str(&pk, "wlist"), msgpack_pack_array(&pk, 1);
    static const char *const strs[] = {"name", "addr", "kind", "cpus"};
    static const char *const nums[] = {"threads",   "running",   "queued",      "tasks",
                                       "rss",       "mem_limit", "chunk_bytes", "in_bytes",
                                       "out_bytes", "busy_s",    "speed"};
    msgpack_pack_map(&pk, 4 + 11);
    for (int k = 0; k < 4; k++) pk_str(&pk, strs[k]), pk_str(&pk, k == 2 ? "gpu" : "x");
    for (int k = 0; k < 11; k++) pk_str(&pk, nums[k]), msgpack_pack_uint64(&pk, 1);
    cr_assert_eq(decode(&b, &m, &z, err), 0, "%s", err);
    tsr__m_winfo wi;
    cr_assert_eq(TSR__LIST_GET(&m.u.info.wlist, winfo, 0, &wi), 0);
    cr_assert(tsr__str_eq(wi.kind, "gpu"));
    cr_assert_not(TSR__M_HAS(winfo, &wi, dev_name) || TSR__M_HAS(winfo, &wi, dev_used) ||
                  TSR__M_HAS(winfo, &wi, h2d_bytes));
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&b);
}

/* ---- a worker's disk tier (issue 11): optional in st, winfo and worker_stat ---- */

/* done {items: [], st: {spilled_bytes, unspilled_bytes, disk_bytes, paused}}: the report a
 * worker sends at once when its pause changes, against the layout packed by hand. */
Test(msg, spill_fields_in_st_match_the_layout) {
    msgpack_sbuffer b, ref;
    msgpack_sbuffer_init(&b);
    msgpack_sbuffer_init(&ref);
    tsr__msg_done d = {.items = {.n = 0}};
    d.st = (tsr__m_wstats){.spilled_bytes = 3ull << 30,
                           .unspilled_bytes = 1ull << 30,
                           .disk_bytes = 2ull << 30,
                           .paused = 1};
    d.st.has = TSR__M_BIT(wstats, spilled_bytes) | TSR__M_BIT(wstats, unspilled_bytes) |
               TSR__M_BIT(wstats, disk_bytes) | TSR__M_BIT(wstats, paused);
    TSR__MSG_SET(done, &d, st);
    tsr__msg_pack_done(&b, &d);

    msgpack_packer pk;
    msgpack_packer_init(&pk, &ref, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "t"), pk_str(&pk, "done");
    pk_str(&pk, "items"), msgpack_pack_array(&pk, 0);
    pk_str(&pk, "st"), msgpack_pack_map(&pk, 4);
    pk_str(&pk, "spilled_bytes"), msgpack_pack_uint64(&pk, 3ull << 30);
    pk_str(&pk, "unspilled_bytes"), msgpack_pack_uint64(&pk, 1ull << 30);
    pk_str(&pk, "disk_bytes"), msgpack_pack_uint64(&pk, 2ull << 30);
    pk_str(&pk, "paused"), msgpack_pack_true(&pk);
    expect_same(&b, &ref);

    /* Decoded back: the four fields, and nothing else of st. */
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    tsr__msg m;
    char err[200];
    cr_assert_eq(decode(&ref, &m, &z, err), 0, "%s", err);
    cr_assert_eq(m.type, TSR__MSG_done);
    cr_assert_eq(m.u.done.items.n, 0, "a done with no items is a done");
    const tsr__m_wstats *st = &m.u.done.st;
    cr_assert_eq(st->has, d.st.has);
    cr_assert(st->spilled_bytes == 3ull << 30 && st->unspilled_bytes == 1ull << 30 &&
              st->disk_bytes == 2ull << 30 && st->paused == 1);

    /* paused: false is a value, not an absence. */
    msgpack_sbuffer_clear(&ref);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "t"), pk_str(&pk, "done");
    pk_str(&pk, "items"), msgpack_pack_array(&pk, 0);
    pk_str(&pk, "st"), msgpack_pack_map(&pk, 1);
    pk_str(&pk, "paused"), msgpack_pack_false(&pk);
    cr_assert_eq(decode(&ref, &m, &z, err), 0, "%s", err);
    cr_assert(TSR__M_HAS(wstats, &m.u.done.st, paused) && m.u.done.st.paused == 0);

    /* An older worker's st (no disk tier) decodes, without them. paused must be a boolean: a
     * number is refused, as any field of the wrong type is. */
    msgpack_sbuffer_clear(&ref);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "t"), pk_str(&pk, "done");
    pk_str(&pk, "items"), msgpack_pack_array(&pk, 0);
    pk_str(&pk, "st"), msgpack_pack_map(&pk, 2);
    pk_str(&pk, "rss"), msgpack_pack_uint64(&pk, 5);
    pk_str(&pk, "chunk_bytes"), msgpack_pack_uint64(&pk, 7);
    cr_assert_eq(decode(&ref, &m, &z, err), 0, "%s", err);
    cr_assert_eq(m.u.done.st.has, TSR__M_BIT(wstats, rss) | TSR__M_BIT(wstats, chunk_bytes));
    msgpack_sbuffer_clear(&ref);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "t"), pk_str(&pk, "done");
    pk_str(&pk, "items"), msgpack_pack_array(&pk, 0);
    pk_str(&pk, "st"), msgpack_pack_map(&pk, 1);
    pk_str(&pk, "paused"), msgpack_pack_uint64(&pk, 1);
    cr_assert_eq(decode(&ref, &m, &z, err), TSR_EPROTOCOL);
    cr_assert(strstr(err, "paused"), "%s", err);

    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&ref);
    msgpack_sbuffer_destroy(&b);
}

/* The monitor's wlist entry and finished's worker entry carry the same four, optional both
 * ways: a new scheduler's entries round-trip, an old scheduler's decode without them. */
Test(msg, spill_fields_in_info_and_finished_round_trip) {
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    msgpack_zone z;
    msgpack_zone_init(&z, 4096);
    tsr__msg m;
    char err[200];

    tsr__m_winfo w[2] = {{.name = tsr__str_of("w0"), .kind = tsr__str_of("cpu")},
                         {.name = tsr__str_of("w1"), .kind = tsr__str_of("cpu")}};
    w[1].spilled_bytes = 11, w[1].unspilled_bytes = 7, w[1].disk_bytes = 4, w[1].paused = 1;
    w[1].has = TSR__M_BIT(winfo, spilled_bytes) | TSR__M_BIT(winfo, unspilled_bytes) |
               TSR__M_BIT(winfo, disk_bytes) | TSR__M_BIT(winfo, paused);
    tsr__msg_info info = {.wlist = {.n = 2, .v = w}};
    TSR__MSG_SET(info, &info, wlist);
    tsr__msg_pack_info(&b, &info);
    cr_assert_eq(decode(&b, &m, &z, err), 0, "%s", err);
    tsr__m_winfo got;
    cr_assert_eq(TSR__LIST_GET(&m.u.info.wlist, winfo, 0, &got), 0);
    cr_assert_not(TSR__M_HAS(winfo, &got, spilled_bytes) || TSR__M_HAS(winfo, &got, paused));
    cr_assert_eq(TSR__LIST_GET(&m.u.info.wlist, winfo, 1, &got), 0);
    cr_assert(TSR__M_HAS(winfo, &got, paused) && got.paused == 1 && got.spilled_bytes == 11 &&
              got.unspilled_bytes == 7 && got.disk_bytes == 4);

    tsr__m_worker_stat ws[2] = {{.name = tsr__str_of("w0"), .addr = tsr__str_of("a:1")},
                                {.name = tsr__str_of("w1"), .addr = tsr__str_of("a:2")}};
    ws[1].spilled_bytes = 1ull << 40, ws[1].unspilled_bytes = 3, ws[1].disk_bytes = 0;
    ws[1].has = TSR__M_BIT(worker_stat, spilled_bytes) | TSR__M_BIT(worker_stat, unspilled_bytes) |
                TSR__M_BIT(worker_stat, disk_bytes) | TSR__M_BIT(worker_stat, paused);
    tsr__msg_finished f = {.job = 1, .stats = {.workers = {.n = 2, .v = ws}}};
    TSR__MSG_SET(finished, &f, stats);
    msgpack_sbuffer_clear(&b);
    tsr__msg_pack_finished(&b, &f);
    cr_assert_eq(decode(&b, &m, &z, err), 0, "%s", err);
    tsr__m_worker_stat gs;
    cr_assert_eq(TSR__LIST_GET(&m.u.finished.stats.workers, worker_stat, 0, &gs), 0);
    cr_assert_not(TSR__M_HAS(worker_stat, &gs, spilled_bytes) ||
                  TSR__M_HAS(worker_stat, &gs, paused));
    cr_assert_eq(TSR__LIST_GET(&m.u.finished.stats.workers, worker_stat, 1, &gs), 0);
    cr_assert(TSR__M_HAS(worker_stat, &gs, paused) && gs.paused == 0 &&
              gs.spilled_bytes == 1ull << 40 && gs.unspilled_bytes == 3 && gs.disk_bytes == 0);

    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&b);
}
