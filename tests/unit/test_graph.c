/* The chunk-task graph: building, validation, msgpack round trips, and rejection of malformed
 * descriptors and payloads. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "graph_check.h"
#include "scheduler/sched.h"

/* Unpacks buf into *res (caller destroys it); returns the unpack status. */
static msgpack_unpack_return unpack(const msgpack_sbuffer *sb, msgpack_unpacked *res) {
    msgpack_unpacked_init(res);
    return msgpack_unpack_next(res, sb->data, sb->size, NULL);
}

static tsr_kdesc sample_desc(void) {
    static const int64_t ip[5] = {7, -3, INT64_MAX, INT64_MIN, 0};
    static const double fp[2] = {1.5, -0.25};
    tsr_kdesc d;
    memset(&d, 0, sizeof d);
    d.kop = TSR_KOP_LOAD;
    d.fn = 0;
    d.dtype = TSR_FLOAT32;
    d.ndim = 3;
    d.shape[0] = 4;
    d.shape[1] = 0;
    d.shape[2] = 9;
    d.ni = 5;
    d.i = ip;
    d.nf = 2;
    d.f = fp;
    d.s = "/data/x.npy";
    return d;
}

static void assert_desc_eq(const tsr_kdesc *a, const tsr_kdesc *b) {
    cr_assert_eq(a->kop, b->kop);
    cr_assert_eq(a->fn, b->fn);
    cr_assert_eq(a->dtype, b->dtype);
    cr_assert_eq(a->ndim, b->ndim);
    for (int k = 0; k < a->ndim; k++) cr_assert_eq(a->shape[k], b->shape[k]);
    cr_assert_eq(a->ni, b->ni);
    cr_assert_eq(a->nf, b->nf);
    for (uint32_t k = 0; k < a->ni; k++) cr_assert_eq(a->i[k], b->i[k]);
    for (uint32_t k = 0; k < a->nf; k++) cr_assert_eq(a->f[k], b->f[k]);
    if (a->s)
        cr_assert_str_eq(a->s, b->s);
    else
        cr_assert_null(b->s);
}

Test(graph, kop_names) {
    cr_assert_str_eq(tsr__kop_name(TSR_KOP_FILL), "fill");
    cr_assert_str_eq(tsr__kop_name(TSR_KOP_MATMUL), "matmul");
    cr_assert_str_eq(tsr__kop_name(TSR_KOP_ASTYPE), "astype");
    cr_assert_str_eq(tsr__kop_name(TSR_KOP_COUNT), "?");
    cr_assert_str_eq(tsr__kop_name(-1), "?");
}

Test(graph, kdesc_nbytes) {
    tsr_kdesc d = sample_desc();
    cr_assert_eq(tsr__kdesc_nbytes(&d), 0);
    d.shape[1] = 2;
    cr_assert_eq(tsr__kdesc_nbytes(&d), 4 * 2 * 9 * 4);
    d.ndim = 0;
    d.dtype = TSR_FLOAT64;
    cr_assert_eq(tsr__kdesc_nbytes(&d), 8);
}

static void roundtrip(const tsr_kdesc *d) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    cr_assert_eq(tsr__kdesc_pack(&pk, d), 0);
    msgpack_unpacked res;
    cr_assert_eq(unpack(&sb, &res), MSGPACK_UNPACK_SUCCESS);
    tsr_kdesc back;
    int64_t *ib;
    double *fb;
    cr_assert_eq(tsr__kdesc_unpack(&res.data, &back, &ib, &fb), 0);
    assert_desc_eq(d, &back);
    tsr__kdesc_unpack_free(ib, fb);
    msgpack_unpacked_destroy(&res);
    msgpack_sbuffer_destroy(&sb);
}

Test(graph, kdesc_roundtrip) {
    tsr_kdesc d = sample_desc();
    roundtrip(&d);
    d.s = NULL; /* nil string */
    roundtrip(&d);
    memset(&d, 0, sizeof d); /* 0-d, no parameters */
    d.kop = TSR_KOP_FILL;
    roundtrip(&d);
    d.kop = TSR_KOP_REDUCE;
    d.fn = TSR_MIN;
    d.ndim = TSR_MAX_NDIM;
    for (int a = 0; a < TSR_MAX_NDIM; a++) d.shape[a] = a + 1;
    roundtrip(&d);
}

/* Packs [kop, fn, dtype, shape, i, f, s] with the given pieces; each piece is packed by a
 * callback-free little script: negative field values select a malformed variant. */
typedef struct bad_case {
    const char *what;
    int nitems; /* outer array length (7 when well-formed) */
    int64_t kop, fn, dtype;
    int shape_kind; /* 0 ok, 1 not an array, 2 too many axes, 3 negative extent, 4 float extent */
    int i_kind;     /* 0 ok, 1 string element, 2 uint64 above INT64_MAX */
    int f_kind;     /* 0 ok, 1 string element */
    int s_kind;     /* 0 str, 1 nil, 2 int, 3 str with a NUL */
} bad_case;

static void pack_case(msgpack_packer *pk, const bad_case *c) {
    msgpack_pack_array(pk, (size_t)c->nitems);
    if (c->nitems < 1) return;
    msgpack_pack_int64(pk, c->kop);
    if (c->nitems < 2) return;
    msgpack_pack_int64(pk, c->fn);
    if (c->nitems < 3) return;
    msgpack_pack_int64(pk, c->dtype);
    if (c->nitems < 4) return;
    switch (c->shape_kind) {
    case 1:
        msgpack_pack_int(pk, 3);
        break;
    case 2:
        msgpack_pack_array(pk, TSR_MAX_NDIM + 1);
        for (int a = 0; a <= TSR_MAX_NDIM; a++) msgpack_pack_int(pk, 1);
        break;
    case 3:
        msgpack_pack_array(pk, 2);
        msgpack_pack_int(pk, 3);
        msgpack_pack_int(pk, -1);
        break;
    case 4:
        msgpack_pack_array(pk, 1);
        msgpack_pack_double(pk, 2.0);
        break;
    default:
        msgpack_pack_array(pk, 2);
        msgpack_pack_int(pk, 3);
        msgpack_pack_int(pk, 4);
    }
    if (c->nitems < 5) return;
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 1);
    if (c->i_kind == 1)
        msgpack_pack_str_with_body(pk, "x", 1);
    else if (c->i_kind == 2)
        msgpack_pack_uint64(pk, UINT64_MAX);
    else
        msgpack_pack_int(pk, -5);
    if (c->nitems < 6) return;
    msgpack_pack_array(pk, 1);
    if (c->f_kind == 1)
        msgpack_pack_str_with_body(pk, "x", 1);
    else
        msgpack_pack_double(pk, 0.5);
    if (c->nitems < 7) return;
    if (c->s_kind == 1)
        msgpack_pack_nil(pk);
    else if (c->s_kind == 2)
        msgpack_pack_int(pk, 1);
    else if (c->s_kind == 3)
        msgpack_pack_str_with_body(pk, "a\0b", 3);
    else
        msgpack_pack_str_with_body(pk, "/p", 2);
    for (int k = 7; k < c->nitems; k++) msgpack_pack_nil(pk);
}

static int try_case(const bad_case *c) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_case(&pk, c);
    msgpack_unpacked res;
    cr_assert_eq(unpack(&sb, &res), MSGPACK_UNPACK_SUCCESS, "%s", c->what);
    tsr_kdesc d;
    int64_t *ib = (int64_t *)1;
    double *fb = (double *)1;
    int rc = tsr__kdesc_unpack(&res.data, &d, &ib, &fb);
    tsr__kdesc_unpack_free(ib, fb); /* set to NULL on failure, so this is always safe */
    msgpack_unpacked_destroy(&res);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

Test(graph, kdesc_rejects_malformed) {
    bad_case ok = {"ok", 7, TSR_KOP_UNARY, TSR_TANH, TSR_FLOAT64, 0, 0, 0, 0};
    cr_assert_eq(try_case(&ok), 0);
    bad_case cases[] = {
        {"short array", 6, TSR_KOP_UNARY, 0, 0, 0, 0, 0, 0},
        {"long array", 8, TSR_KOP_UNARY, 0, 0, 0, 0, 0, 0},
        {"kop out of range", 7, TSR_KOP_COUNT, 0, 0, 0, 0, 0, 0},
        {"negative kop", 7, -1, 0, 0, 0, 0, 0, 0},
        {"unary fn out of range", 7, TSR_KOP_UNARY, TSR__UNARY_COUNT, 0, 0, 0, 0, 0},
        {"reduce fn out of range", 7, TSR_KOP_REDUCE, TSR_MIN + 1, 0, 0, 0, 0, 0},
        {"fn above a byte", 7, TSR_KOP_FILL, 256, 0, 0, 0, 0, 0},
        {"dtype 4", 7, TSR_KOP_FILL, 0, 4, 0, 0, 0, 0},
        {"shape not an array", 7, TSR_KOP_FILL, 0, 0, 1, 0, 0, 0},
        {"ndim > max", 7, TSR_KOP_FILL, 0, 0, 2, 0, 0, 0},
        {"negative extent", 7, TSR_KOP_FILL, 0, 0, 3, 0, 0, 0},
        {"float extent", 7, TSR_KOP_FILL, 0, 0, 4, 0, 0, 0},
        {"string in i", 7, TSR_KOP_FILL, 0, 0, 0, 1, 0, 0},
        {"uint64 in i", 7, TSR_KOP_FILL, 0, 0, 0, 2, 0, 0},
        {"string in f", 7, TSR_KOP_FILL, 0, 0, 0, 0, 1, 0},
        {"int as s", 7, TSR_KOP_FILL, 0, 0, 0, 0, 0, 2},
        {"NUL in s", 7, TSR_KOP_FILL, 0, 0, 0, 0, 0, 3},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        cr_assert_eq(try_case(&cases[k]), TSR_EPROTOCOL, "%s", cases[k].what);
    bad_case nil_s = ok;
    nil_s.s_kind = 1;
    cr_assert_eq(try_case(&nil_s), 0);
}

Test(graph, kdesc_rejects_huge_counts_and_non_arrays) {
    /* An object claiming 2^30 integer parameters: refused on the count, before any element is
     * read (the pointer below only has room for a few). */
    msgpack_object items[7], shape_items[1], small[1];
    memset(items, 0, sizeof items);
    for (int k = 0; k < 3; k++) items[k].type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    shape_items[0].type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    shape_items[0].via.u64 = 2;
    small[0] = shape_items[0];
    items[3].type = MSGPACK_OBJECT_ARRAY;
    items[3].via.array.size = 1;
    items[3].via.array.ptr = shape_items;
    items[4].type = MSGPACK_OBJECT_ARRAY;
    items[4].via.array.size = 1u << 30;
    items[4].via.array.ptr = small;
    items[5].type = MSGPACK_OBJECT_ARRAY;
    items[5].via.array.size = 0;
    items[6].type = MSGPACK_OBJECT_NIL;
    msgpack_object root = {.type = MSGPACK_OBJECT_ARRAY};
    root.via.array.size = 7;
    root.via.array.ptr = items;
    tsr_kdesc d;
    int64_t *ib;
    double *fb;
    cr_assert_eq(tsr__kdesc_unpack(&root, &d, &ib, &fb), TSR_EPROTOCOL);
    items[4].via.array.size = 1;
    cr_assert_eq(tsr__kdesc_unpack(&root, &d, &ib, &fb), 0);
    cr_assert_eq(d.ni, 1);
    cr_assert_eq(d.i[0], 2);
    tsr__kdesc_unpack_free(ib, fb);
    /* An extent product that overflows. */
    msgpack_object big[3];
    for (int k = 0; k < 3; k++) {
        big[k].type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        big[k].via.u64 = (uint64_t)1 << 30;
    }
    items[3].via.array.size = 3;
    items[3].via.array.ptr = big;
    cr_assert_eq(tsr__kdesc_unpack(&root, &d, &ib, &fb), TSR_EPROTOCOL);
    msgpack_object notarr = {.type = MSGPACK_OBJECT_MAP};
    cr_assert_eq(tsr__kdesc_unpack(&notarr, &d, &ib, &fb), TSR_EPROTOCOL);
}

/* A graph of five tasks on two arrays: 0, 1 sources; 2 = f(0, 1); 3 = g(2); 4 = h(0, 3). */
static void build(tsr_graph *g) {
    tsr__graph_init(g);
    cr_assert_eq(tsr__graph_add_array(g, "A", "random"), 0);
    cr_assert_eq(tsr__graph_add_array(g, "C", "matmul"), 1);
    tsr_kdesc d = sample_desc();
    uint32_t deps2[2] = {0, 1}, deps3[1] = {2}, deps4[2] = {0, 3};
    cr_assert_eq(tsr__graph_add_task(g, &d, 0, NULL, 0, 10), 0);
    d.s = NULL;
    d.ni = 2;
    cr_assert_eq(tsr__graph_add_task(g, &d, 0, NULL, 0, 11), 1);
    d.kop = TSR_KOP_MATMUL;
    d.ni = 0;
    d.nf = 1;
    cr_assert_eq(tsr__graph_add_task(g, &d, 1, deps2, 2, 12), 2);
    d.s = "second string";
    d.ni = 4;
    cr_assert_eq(tsr__graph_add_task(g, &d, 1, deps3, 1, 13), 3);
    d.s = NULL;
    d.nf = 0;
    cr_assert_eq(tsr__graph_add_task(g, &d, 1, deps4, 2, 14), 4);
    cr_assert_eq(tsr__graph_add_output(g, 4), 0);
    cr_assert_eq(tsr__graph_add_output(g, 2), 0);
    tsr__graph_finish(g);
}

Test(graph, build_and_validate) {
    tsr_graph g;
    build(&g);
    char err[256];
    cr_assert_eq(graph_check(&g, err, sizeof err), 0, "%s", err);
    cr_assert_eq(g.tasks[0].d.ni, 5);
    cr_assert_eq(g.tasks[0].d.i[2], INT64_MAX);
    cr_assert_str_eq(g.tasks[0].d.s, "/data/x.npy");
    cr_assert_eq(g.tasks[1].d.i[1], -3);
    cr_assert_null(g.tasks[2].d.i);
    cr_assert_eq(g.tasks[2].d.f[0], 1.5);
    cr_assert_eq(g.tasks[3].d.i[3], INT64_MIN);
    cr_assert_str_eq(g.tasks[3].d.s, "second string");
    cr_assert_eq(g.deps[g.tasks[4].deps_off + 1], 3);
    tsr__graph_finish(&g); /* idempotent */
    cr_assert_eq(g.tasks[3].d.i[3], INT64_MIN);

    /* Refused while building. */
    tsr_kdesc d = sample_desc();
    uint32_t self = 5;
    cr_assert_eq(tsr__graph_add_task(&g, &d, 0, &self, 1, 1), TSR_EINVALID);
    cr_assert_eq(tsr__graph_add_output(&g, 5), TSR_EINVALID);

    /* Corruptions validate catches. */
    g.tasks[3].d.shape[0] = -2;
    cr_assert_eq(graph_check(&g, err, sizeof err), TSR_EPROGRAM);
    cr_assert(strstr(err, "negative"), "%s", err);
    g.tasks[3].d.shape[0] = 4;
    g.tasks[3].d.kop = TSR_KOP_COUNT;
    cr_assert_eq(graph_check(&g, err, sizeof err), TSR_EPROGRAM);
    g.tasks[3].d.kop = TSR_KOP_MATMUL;
    g.deps[g.tasks[3].deps_off] = 3;
    cr_assert_eq(graph_check(&g, err, sizeof err), TSR_EPROGRAM);
    g.deps[g.tasks[3].deps_off] = 2;
    g.tasks[1].array = 9;
    cr_assert_eq(graph_check(&g, err, sizeof err), TSR_EPROGRAM);
    g.tasks[1].array = 0;
    g.outputs[0] = 77;
    cr_assert_eq(graph_check(&g, err, sizeof err), TSR_EPROGRAM);
    g.outputs[0] = 4;
    cr_assert_eq(graph_check(&g, err, sizeof err), 0, "%s", err);
    tsr__graph_free(&g);
    tsr__graph_free(&g); /* a freed graph is empty */
}

/* The payload through its one decoder, the scheduler's. */
Test(graph, pack_submit_roundtrip) {
    tsr_graph g;
    build(&g);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    cr_assert_eq(tsr__graph_pack(&g, &sb), 0);
    tsr__jobspec v;
    char err[256];
    cr_assert_eq(tsr__proto_submit(sb.data, sb.size, &v, err, sizeof err), 0, "%s", err);
    cr_assert_eq(v.ntasks, 5);
    cr_assert_eq(v.narrays, 2);
    cr_assert_eq(v.noutputs, 2);
    cr_assert_eq(v.outputs[0], 4);
    cr_assert_eq(v.outputs[1], 2);
    cr_assert_str_eq(v.ops[1], "matmul");
    for (size_t t = 0; t < v.ntasks; t++) {
        const tsr_gtask *gt = &g.tasks[t];
        cr_assert_eq(v.array[t], gt->array);
        cr_assert_eq(v.dep_off[t + 1] - v.dep_off[t], gt->ndeps);
        for (uint32_t k = 0; k < gt->ndeps; k++)
            cr_assert_eq(v.deps[v.dep_off[t] + k], g.deps[gt->deps_off + k]);
        cr_assert_eq(v.nbytes[t], tsr__kdesc_nbytes(&gt->d));
        cr_assert_eq(v.flops[t], (float)gt->flops);
        /* The bin decodes to the task's descriptor. */
        msgpack_unpacked kr;
        msgpack_unpacked_init(&kr);
        cr_assert_eq(msgpack_unpack_next(&kr, (const char *)v.arena + v.kd_off[t],
                                         v.kd_off[t + 1] - v.kd_off[t], NULL),
                     MSGPACK_UNPACK_SUCCESS);
        tsr_kdesc d;
        int64_t *ib;
        double *fb;
        cr_assert_eq(tsr__kdesc_unpack(&kr.data, &d, &ib, &fb), 0);
        assert_desc_eq(&gt->d, &d);
        tsr__kdesc_unpack_free(ib, fb);
        msgpack_unpacked_destroy(&kr);
    }
    tsr__jobspec_free(&v);

    /* Every truncation of the payload is refused. */
    for (size_t len = 0; len < sb.size; len++)
        cr_assert_eq(tsr__proto_submit(sb.data, len, &v, err, sizeof err), TSR_EPROGRAM,
                     "truncated to %zu bytes", len);
    msgpack_sbuffer_destroy(&sb);
    tsr__graph_free(&g);
}

/* Packs a payload whose parts are chosen by `variant` and returns the decoder's result. */
static int submit_variant(int variant) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (variant == 1) {
        msgpack_pack_array(&pk, 0); /* not a map */
    } else {
        msgpack_pack_map(&pk, variant == 2 ? 3 : 4);
        msgpack_pack_str_with_body(&pk, "v", 1);
        msgpack_pack_int(&pk, variant == 3 ? 2 : 1);
        msgpack_pack_str_with_body(&pk, "arrays", 6);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_str_with_body(&pk, "A", 1);
        if (variant == 4)
            msgpack_pack_int(&pk, 3);
        else
            msgpack_pack_str_with_body(&pk, "fill", 4);
        msgpack_pack_str_with_body(&pk, "tasks", 5);
        msgpack_pack_array(&pk, 2);
        for (int t = 0; t < 2; t++) {
            msgpack_pack_array(&pk, variant == 5 && t == 1 ? 4 : 5);
            msgpack_pack_int(&pk, variant == 6 && t == 1 ? 1 : 0); /* array index */
            if (t == 0) {
                msgpack_pack_array(&pk, 0);
            } else {
                msgpack_pack_array(&pk, 1);
                msgpack_pack_int(&pk, variant == 7 ? 1 : variant == 8 ? -1 : 0);
            }
            if (variant == 9)
                msgpack_pack_int(&pk, -8);
            else
                msgpack_pack_uint64(&pk, 8);
            if (variant == 10)
                msgpack_pack_double(&pk, -1.0);
            else
                msgpack_pack_double(&pk, 1.0);
            if (variant == 5 && t == 1) continue;
            if (variant == 11)
                msgpack_pack_str_with_body(&pk, "x", 1);
            else
                msgpack_pack_bin_with_body(&pk, "\x90", 1);
        }
        if (variant != 2) {
            msgpack_pack_str_with_body(&pk, "outputs", 7);
            msgpack_pack_array(&pk, 1);
            msgpack_pack_int(&pk, variant == 12 ? 2 : 1);
        }
    }
    tsr__jobspec v;
    char err[256] = "";
    int rc = tsr__proto_submit(sb.data, sb.size, &v, err, sizeof err);
    if (rc)
        cr_assert(strlen(err) > 0, "variant %d has no message", variant);
    else
        tsr__jobspec_free(&v);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

Test(graph, submit_rejects_malformed_payloads) {
    cr_assert_eq(submit_variant(0), 0);
    for (int variant = 1; variant <= 12; variant++)
        cr_assert_eq(submit_variant(variant), TSR_EPROGRAM, "variant %d", variant);
}

/* Seeded mutations of a valid payload through the decoder: each gives a job or an error with
 * a reason, never a crash (run under ASan too); a decoded job still holds its invariants. */
Test(graph, submit_decoder_survives_mutations, .timeout = 60) {
    tsr_graph g;
    build(&g);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    cr_assert_eq(tsr__graph_pack(&g, &sb), 0);
    uint8_t *buf = malloc(sb.size);
    uint64_t x = 0x2545f4914f6cdd1du;
    int ok = 0, rounds = 5000;
    for (int r = 0; r < rounds; r++) {
        size_t n = sb.size;
        memcpy(buf, sb.data, n);
        for (int k = 0; k < 1 + r % 3; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            if (x % 5 == 0)
                n = 1 + (x >> 8) % n;
            else
                buf[(x >> 8) % n] = (uint8_t)(x >> 40);
        }
        tsr__jobspec v;
        char err[256] = "";
        int rc = tsr__proto_submit(buf, n, &v, err, sizeof err);
        if (rc) {
            cr_assert_eq(rc, TSR_EPROGRAM);
            cr_assert(err[0], "an error without a reason");
            continue;
        }
        ok++;
        for (uint32_t t = 0; t < v.ntasks; t++) {
            cr_assert_lt(v.array[t], v.narrays);
            for (uint32_t k = v.dep_off[t]; k < v.dep_off[t + 1]; k++) cr_assert_lt(v.deps[k], t);
        }
        for (uint32_t o = 0; o < v.noutputs; o++) cr_assert_lt(v.outputs[o], v.ntasks);
        tsr__jobspec_free(&v);
    }
    cr_assert(ok < rounds, "no mutation was refused");
    free(buf);
    msgpack_sbuffer_destroy(&sb);
    tsr__graph_free(&g);
}
