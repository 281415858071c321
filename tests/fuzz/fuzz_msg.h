/* What the message and frame fuzzers share: walking a decoded message through its schema (every
 * list element read, as a reader would, so a LAZY list's bad element counts as a refusal) and
 * re-encoding it. Table-driven: a message added to wire/msg.h is covered with no change here. */
#ifndef TSR_FUZZ_MSG_H
#define TSR_FUZZ_MSG_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/msg.h"
#include "wire/wire.h"

/* A decoded list re-encoded: gen reads element i back through tsr__list_get. */
typedef struct fz_src {
    tsr__list src;
    const tsr__schema *es;
} fz_src;

typedef struct fz_arena {
    void **p;
    size_t n, cap;
} fz_arena;

static void *fz_alloc(fz_arena *a, size_t size) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        void **q = realloc(a->p, cap * sizeof *q);
        if (!q) abort();
        a->p = q;
        a->cap = cap;
    }
    void *m = calloc(1, size ? size : 1);
    if (!m) abort();
    return a->p[a->n++] = m;
}

static void fz_arena_free(fz_arena *a) {
    for (size_t i = 0; i < a->n; i++) free(a->p[i]);
    free(a->p);
    memset(a, 0, sizeof *a);
}

static fz_arena fz_gen_arena; /* the contexts of one encoding */

static void fz_fix(const tsr__schema *s, void *m, fz_arena *a);

static void fz_gen(void *ctx, uint32_t i, void *elem) {
    fz_src *g = ctx;
    /* Every element was read once by fz_walk before, so this cannot fail. */
    if (tsr__list_get(&g->src, g->es, i, elem) != 0) abort();
    fz_fix(g->es, elem, &fz_gen_arena);
}

/* Points every decoded list of m (a record of schema s) at fz_gen, so tsr__msg_pack can encode
 * it. */
static void fz_fix(const tsr__schema *s, void *m, fz_arena *a) {
    uint64_t has = *(uint64_t *)m;
    for (uint32_t k = 0; k < s->nf; k++) {
        const tsr__field *f = &s->f[k];
        if (!(has >> k & 1)) continue;
        unsigned char *v = (unsigned char *)m + f->off;
        if (f->kind == TSR__K_REC) {
            fz_fix(f->sub, v, a);
        } else if (f->kind == TSR__K_LIST || f->kind == TSR__K_LAZY || f->kind == TSR__K_KV) {
            tsr__list *l = (tsr__list *)v;
            if (!l->obj) continue;
            fz_src *g = fz_alloc(a, sizeof *g);
            g->src = *l;
            g->es = f->kind == TSR__K_KV ? &tsr__schema_kv : f->sub;
            l->v = NULL;
            l->gen = fz_gen;
            l->ctx = g;
            l->obj = NULL;
        }
    }
}

/* Reads every field and list element of m as a reader would. 0, or -1 when an element is
 * refused (a LAZY list's: the reader refuses the whole message). */
static int fz_walk(const tsr__schema *s, const void *m, unsigned *sink, int depth) {
    uint64_t has = *(const uint64_t *)m;
    if (depth > 8) abort(); /* the tables nest three deep at most */
    for (uint32_t k = 0; k < s->nf; k++) {
        const tsr__field *f = &s->f[k];
        if (!(has >> k & 1)) continue;
        const unsigned char *v = (const unsigned char *)m + f->off;
        if (f->kind == TSR__K_STR || f->kind == TSR__K_BIN) {
            const tsr__str *str = (const tsr__str *)v;
            for (uint32_t j = 0; j < str->n; j++) *sink += (unsigned char)str->p[j];
        } else if (f->kind == TSR__K_REC) {
            if (fz_walk(f->sub, v, sink, depth + 1)) return -1;
        } else if (f->kind == TSR__K_LIST || f->kind == TSR__K_LAZY || f->kind == TSR__K_KV) {
            const tsr__list *l = (const tsr__list *)v;
            const tsr__schema *es = f->kind == TSR__K_KV ? &tsr__schema_kv : f->sub;
            void *elem = malloc(es->size);
            if (!elem) abort();
            for (uint32_t j = 0; j < l->n; j++) {
                if (tsr__list_get(l, es, j, elem) != 0 || fz_walk(es, elem, sink, depth + 1)) {
                    if (f->kind != TSR__K_LAZY) abort(); /* checked at decode time */
                    free(elem);
                    return -1;
                }
            }
            free(elem);
        }
    }
    return 0;
}

/* Encodes a decoded message into out (appended). */
static void fz_encode(msgpack_sbuffer *out, const tsr__msg *m) {
    tsr__msg copy = *m;
    fz_fix(tsr__msg_schemas[m->type], &copy.u, &fz_gen_arena);
    tsr__msg_pack(out, m->type, &copy.u);
    fz_arena_free(&fz_gen_arena);
}

/* The property every decoded message must have: it walks, and re-encoding it gives bytes that
 * decode again, to a message whose own encoding is the same bytes (decode and encode agree). */
static void fz_check_msg(const msgpack_object *hdr) {
    tsr__msg m;
    char err[200];
    unsigned sink = 0;
    uint64_t dropped = 0;
    tsr__msg soft;
    int rs = tsr__msg_decode_soft(hdr, &soft, &dropped, err, sizeof err);
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0) return;
    if (rs != 0 || dropped != 0 || soft.type != m.type) abort(); /* soft accepts what strict does */
    if (fz_walk(tsr__msg_schemas[m.type], &m.u, &sink, 0) != 0) return;
    msgpack_sbuffer a, b;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    fz_encode(&a, &m);
    msgpack_zone *zone = msgpack_zone_new(4096);
    tsr__msg m2;
    if (tsr__msg_decode_bytes(a.data, a.size, zone, &m2, err, sizeof err) != 0) {
        fprintf(stderr, "a re-encoded %s does not decode: %s\n", tsr__msg_name(m.type), err);
        abort();
    }
    if (m2.type != m.type || fz_walk(tsr__msg_schemas[m2.type], &m2.u, &sink, 0) != 0) abort();
    fz_encode(&b, &m2);
    if (a.size != b.size || memcmp(a.data, b.data, a.size) != 0) {
        fprintf(stderr, "%s: encode(decode(x)) is not stable\n", tsr__msg_name(m.type));
        abort();
    }
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

#endif
