/* Writes the fuzzers' seed corpus (tests/fuzz/corpus/TARGET/NAME) from the library's own
 * encoders, so the seeds are what Tessera really sends and reads: every message of the table,
 * a few frame streams, the submit payloads and kernel descriptors of small programs, the
 * programs themselves, .npy headers and .zarray texts. Run by tests/fuzz/run-long --seeds;
 * its output is committed (a few hundred small files). Usage: make_corpus DIR */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "array/array.h"
#include "graph/graph.h"
#include "tessera/tessera.h"
#include "wire/msg.h"
#include "wire/wire.h"
#include "zarr/zarr.h"

static const char *root;

static void put(const char *target, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static const char *programs[] = {
    "{\"tessera\": 1, \"arrays\": {"
    "\"A\": {\"op\": \"random\", \"shape\": [64, 64], \"chunks\": 32, \"seed\": 1},"
    "\"B\": {\"op\": \"random\", \"shape\": [64, 64], \"chunks\": [32, 16], \"seed\": 2},"
    "\"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]},"
    "\"D\": {\"op\": \"add\", \"args\": [\"C\", 1.5]},"
    "\"t\": {\"op\": \"sum\", \"args\": [\"D\"], \"axis\": null}},"
    "\"outputs\": {\"t\": \"-\"}}",
    "{\"tessera\": 1, \"arrays\": {"
    "\"r\": {\"op\": \"arange\", \"start\": 0, \"stop\": 1, \"step\": 0.25},"
    "\"s\": {\"op\": \"sum\", \"args\": [\"r\"]}}, \"outputs\": {\"s\": \"-\"}}",
    "{\"tessera\": 1, \"arrays\": {"
    "\"z\": {\"op\": \"zeros\", \"shape\": [10, 6], \"chunks\": [5, 3], \"dtype\": \"float32\"},"
    "\"o\": {\"op\": \"ones\", \"shape\": [6, 10], \"chunks\": 5},"
    "\"f\": {\"op\": \"full\", \"shape\": [10], \"value\": 2.5, \"chunks\": 4},"
    "\"zt\": {\"op\": \"transpose\", \"args\": [\"z\"], \"axes\": [1, 0]},"
    "\"m\": {\"op\": \"mul\", \"args\": [\"zt\", \"o\"]},"
    "\"c\": {\"op\": \"astype\", \"args\": [\"m\"], \"dtype\": \"float64\"},"
    "\"k\": {\"op\": \"rechunk\", \"args\": [\"c\"], \"chunks\": [3, 7]},"
    "\"mx\": {\"op\": \"max\", \"args\": [\"k\"], \"axis\": 0},"
    "\"mean\": {\"op\": \"mean\", \"args\": [\"f\"]}},"
    "\"outputs\": {\"mx\": \"out.npy\", \"mean\": \"-\"}}",
};

static void programs_and_graphs(void) {
    tsr_client *c;
    if (tsr_client_new_offline(&c) != 0) exit(1);
    int nkd = 0;
    for (size_t k = 0; k < sizeof programs / sizeof programs[0]; k++) {
        char name[64];
        snprintf(name, sizeof name, "program-%zu.json", k);
        put("program", name, programs[k], strlen(programs[k]));
        tsr_program *p;
        if (tsr_program_load_string(c, programs[k], name, &p) != 0) {
            fprintf(stderr, "%s: %s\n", name, tsr_client_errmsg(c));
            exit(1);
        }
        size_t n = tsr_program_narrays(p);
        tsr_array **arrays = calloc(n, sizeof *arrays);
        for (size_t i = 0; i < n; i++) arrays[i] = tsr_program_array(p, i);
        tsr_graph g;
        tsr__graph_init(&g);
        if (tsr__lower(c, arrays, n, &g, 1) != 0) exit(1);
        tsr__graph_finish(&g);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        if (tsr__graph_pack(&g, &sb) != 0) exit(1);
        snprintf(name, sizeof name, "graph-%zu", k);
        put("submit", name, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        /* One descriptor per operation. */
        for (size_t t = 0; t < g.ntasks; t++) {
            if (t > 0 && g.tasks[t].array == g.tasks[t - 1].array) continue;
            msgpack_sbuffer kb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&kb);
            msgpack_packer_init(&pk, &kb, msgpack_sbuffer_write);
            if (tsr__kdesc_pack(&pk, &g.tasks[t].d) != 0) exit(1);
            snprintf(name, sizeof name, "kdesc-%d", nkd++);
            put("kdesc", name, kb.data, kb.size);
            msgpack_sbuffer_destroy(&kb);
        }
        tsr__graph_free(&g);
        free(arrays);
        tsr_program_free(p);
    }
    tsr_client_free(c);
}

/* Every field of a message marked present (zero values, empty lists): the fuzzer fills them. */
static void messages(void) {
    for (int t = 1; t < TSR__MSG_COUNT; t++) {
        tsr__msg m;
        memset(&m, 0, sizeof m);
        const tsr__schema *s = tsr__msg_schemas[t];
        *(uint64_t *)&m.u = s->nf >= 64 ? ~0ull : (1ull << s->nf) - 1;
        for (uint32_t k = 0; k < s->nf; k++)
            if (s->f[k].kind == TSR__K_REC) /* nested records: present, empty */
                *(uint64_t *)((char *)&m.u + s->f[k].off) = 0;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        uint8_t sel = (uint8_t)(t - 1);
        msgpack_sbuffer_write(&sb, (const char *)&sel, 1);
        tsr__msg_pack(&sb, (tsr__msg_type)t, &m.u);
        char name[64];
        snprintf(name, sizeof name, "msg-%s", tsr__msg_name((tsr__msg_type)t));
        put("msg", name, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
}

static void frame(msgpack_sbuffer *out, msgpack_sbuffer *hdr, const void *payload, size_t n) {
    uint8_t len[4] = {(uint8_t)(hdr->size >> 24), (uint8_t)(hdr->size >> 16),
                      (uint8_t)(hdr->size >> 8), (uint8_t)hdr->size};
    msgpack_sbuffer_write(out, (const char *)len, 4);
    msgpack_sbuffer_write(out, hdr->data, hdr->size);
    if (n) msgpack_sbuffer_write(out, payload, n);
    msgpack_sbuffer_clear(hdr);
}

static void frames(void) {
    for (int mode = 0; mode < 3; mode++) {
        msgpack_sbuffer out, hdr;
        msgpack_sbuffer_init(&out);
        msgpack_sbuffer_init(&hdr);
        uint8_t first = (uint8_t)(mode | (mode * 7) << 2);
        msgpack_sbuffer_write(&out, (const char *)&first, 1);
        tsr__msg_pack_hello(
            &hdr, &(tsr__msg_hello){.has = TSR__MSG_BIT(hello, v) | TSR__MSG_BIT(hello, role),
                                    .v = TSR_PROTOCOL_VERSION,
                                    .role = tsr__str_of("peer")});
        frame(&out, &hdr, NULL, 0);
        tsr__msg_pack_get(&hdr, &(tsr__msg_get){.has = 3, .job = 1, .id = 7});
        frame(&out, &hdr, NULL, 0);
        double v[6] = {1, 2, 3, 4, 5, 6};
        tsr__m_i64_item shape[2] = {{.has = 1, .v = 2}, {.has = 1, .v = 3}};
        tsr__msg_chunk ck = {
            .job = 1, .id = 7, .dtype = TSR_FLOAT64, .shape = {.n = 2, .v = shape}, .n = sizeof v};
        ck.has = (1ull << tsr__msg_chunk_nfields) - 1;
        tsr__msg_pack_chunk(&hdr, &ck);
        frame(&out, &hdr, v, sizeof v);
        tsr__msg_pack_heartbeat(&hdr, &(tsr__msg_heartbeat){0});
        frame(&out, &hdr, NULL, 0);
        char name[32];
        snprintf(name, sizeof name, "stream-%d", mode);
        put("frame", name, out.data, out.size);
        msgpack_sbuffer_destroy(&out);
        msgpack_sbuffer_destroy(&hdr);
    }
}

static void npy(void) {
    int64_t shapes[3][3] = {{0}, {5}, {2, 3}};
    int nd[3] = {0, 1, 2};
    for (int k = 0; k < 3; k++) {
        char buf[256];
        int n = tsr__npy_format_header(k == 1 ? TSR_FLOAT32 : TSR_FLOAT64, nd[k], shapes[k], buf,
                                       sizeof buf);
        if (n <= 0) exit(1);
        size_t data = (k == 0 ? 1 : k == 1 ? 5 : 6) * (k == 1 ? 4 : 8);
        char *f = calloc(1, (size_t)n + data);
        memcpy(f, buf, (size_t)n);
        char name[32];
        snprintf(name, sizeof name, "npy-%d", k);
        put("npy", name, f, (size_t)n + data);
        free(f);
    }
}

static void zarr(void) {
    tsr__zarr_meta m = {
        .ndim = 2, .shape = {100, 30}, .chunks = {10, 7}, .dtype = TSR_FLOAT64, .sep = '.'};
    for (int k = 0; k < 3; k++) {
        m.codec = tsr__zarr_codec_of(k);
        m.sep = k == 2 ? '/' : '.';
        m.fill = k == 1 ? 0.5 : 0;
        char *text = tsr__zarr_format_meta(&m);
        char name[32];
        snprintf(name, sizeof name, "zarray-%d", k);
        put("zarr", name, text, strlen(text));
        free(text);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR\n");
        return 2;
    }
    root = argv[1];
    mkdir(root, 0755);
    programs_and_graphs();
    messages();
    frames();
    npy();
    zarr();
    return 0;
}
