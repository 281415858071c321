/* The handshake's pieces (wire/auth.c) and the worker's data roots (worker/dataroot.c), without
 * sockets: proofs made with one secret pass and any other secret, byte or role fails; the
 * capability key survives its mask; capabilities open their own job only; and a
 * load path that leaves a root through `..` or a symlink is refused, as is a file whose header
 * does not match its task. The same over real processes: tests/integration/test_auth.c. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sodium.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "array/array.h"
#include "graph/ops.h"
#include "kernels/kernels.h"
#include "wire/auth.h"
#include "worker/worker.h"
#include "zarr/zarr.h"

/* A client and a server connection's handshake state (only c->auth is used). */
static tsr__conn cli, srv;

static void handshake(const char *csecret, const char *role, tsr__msg_hello *h) {
    memset(&cli, 0, sizeof cli);
    memset(&srv, 0, sizeof srv);
    tsr__auth_random(srv.auth.snonce, 32); /* as tsr__auth_send_challenge does */
    srv.auth.have_snonce = 1;
    memcpy(cli.auth.snonce, srv.auth.snonce, 32);
    cli.auth.have_snonce = 1;
    cli.auth.secret = csecret;
    *h = (tsr__msg_hello){.v = TSR_PROTOCOL_VERSION, .role = tsr__str_of(role)};
    tsr__auth_sign_hello(&cli, h);
}

Test(auth, proofs_pass_only_with_the_same_secret_and_role) {
    tsr__msg_hello h;
    handshake("s3cret", "client", &h);
    cr_assert(TSR__MSG_HAS(hello, &h, mac) && TSR__MSG_HAS(hello, &h, cnonce));
    cr_assert_eq(tsr__auth_check_hello(&srv, "s3cret", &h), 0);
    handshake("s3cret", "client", &h);
    cr_assert_eq(tsr__auth_check_hello(&srv, "s3creT", &h), TSR_EAUTH);
    handshake("s3cret", "client", &h);
    cr_assert_eq(tsr__auth_check_hello(&srv, "s3cret-and-more", &h), TSR_EAUTH);
    /* The role is under the MAC. */
    handshake("s3cret", "client", &h);
    h.role = tsr__str_of("worker");
    cr_assert_eq(tsr__auth_check_hello(&srv, "s3cret", &h), TSR_EAUTH);
    /* Any flipped byte of the MAC or the client's nonce. */
    for (int k = 0; k < 64; k++) {
        handshake("s3cret", "peer", &h);
        uint8_t *p = (uint8_t *)(k < 32 ? h.mac.p : h.cnonce.p);
        p[k % 32] ^= 1;
        cr_assert_eq(tsr__auth_check_hello(&srv, "s3cret", &h), TSR_EAUTH, "byte %d", k);
    }
    /* A proof made for another challenge. */
    handshake("s3cret", "client", &h);
    srv.auth.snonce[0] ^= 0x80;
    cr_assert_eq(tsr__auth_check_hello(&srv, "s3cret", &h), TSR_EAUTH);
    /* No proof: refused by a server with a secret, fine for one without. */
    handshake(NULL, "client", &h);
    cr_assert(!TSR__MSG_HAS(hello, &h, mac));
    cr_assert_eq(tsr__auth_check_hello(&srv, "s3cret", &h), TSR_EAUTH);
    cr_assert_eq(tsr__auth_check_hello(&srv, NULL, &h), 0);
    cr_assert_eq(tsr__auth_check_hello(&srv, "", &h), 0);
}

Test(auth, the_server_proves_the_secret_and_unmasks_the_key) {
    tsr__msg_hello h;
    uint8_t ckey[32], got[32];
    for (int i = 0; i < 32; i++) ckey[i] = (uint8_t)(7 * i + 1);
    handshake("tok", "worker", &h);
    cr_assert_eq(tsr__auth_check_hello(&srv, "tok", &h), 0);
    tsr__msg_welcome w = {.v = TSR_PROTOCOL_VERSION, .id = 1};
    tsr__auth_sign_welcome(&srv, "tok", &w, ckey);
    cr_assert(TSR__MSG_HAS(welcome, &w, mac) && TSR__MSG_HAS(welcome, &w, ckey));
    cr_assert_neq(memcmp(w.ckey.p, ckey, 32), 0, "the key travels masked");
    int has = 0;
    cr_assert_eq(tsr__auth_check_welcome(&cli, &w, got, &has), 0);
    cr_assert(has && memcmp(got, ckey, 32) == 0);
    /* A server that does not hold the client's secret: no proof, or a wrong one. */
    tsr__msg_welcome none = {.v = TSR_PROTOCOL_VERSION, .id = 1};
    cr_assert_eq(tsr__auth_check_welcome(&cli, &none, NULL, NULL), TSR_EAUTH);
    tsr__msg_welcome bad = {.v = TSR_PROTOCOL_VERSION, .id = 1};
    tsr__auth_sign_welcome(&srv, "other", &bad, NULL);
    cr_assert_eq(tsr__auth_check_welcome(&cli, &bad, NULL, NULL), TSR_EAUTH);
    /* Without secrets on either side: no proof asked, the key travels plain. */
    handshake(NULL, "worker", &h);
    tsr__msg_welcome plain = {.v = TSR_PROTOCOL_VERSION, .id = 2};
    tsr__auth_sign_welcome(&srv, NULL, &plain, ckey);
    cr_assert(!TSR__MSG_HAS(welcome, &plain, mac));
    cr_assert_eq(tsr__auth_check_welcome(&cli, &plain, got, &has), 0);
    cr_assert_eq(memcmp(got, ckey, 32), 0);
}

Test(auth, capabilities_open_their_own_job_only) {
    uint8_t key[32], other[32], cap[32];
    tsr__auth_random(key, 32);
    tsr__auth_random(other, 32);
    tsr__auth_cap(key, 7, cap);
    cr_assert_eq(tsr__auth_check_cap(key, 7, (tsr__str){(const char *)cap, 32}), 0);
    cr_assert_eq(tsr__auth_check_cap(key, 8, (tsr__str){(const char *)cap, 32}), TSR_EAUTH);
    cr_assert_eq(tsr__auth_check_cap(other, 7, (tsr__str){(const char *)cap, 32}), TSR_EAUTH);
    cr_assert_eq(tsr__auth_check_cap(key, 7, (tsr__str){(const char *)cap, 31}), TSR_EAUTH);
    cap[31] ^= 1;
    cr_assert_eq(tsr__auth_check_cap(key, 7, (tsr__str){(const char *)cap, 32}), TSR_EAUTH);
}

/* HMAC-SHA256(key, "tessera-cap\0" || job as 4 big-endian bytes), straight from libsodium. */
static void ref_cap(const uint8_t *key, uint32_t job, uint8_t *out) {
    unsigned char msg[16] = "tessera-cap";
    for (int i = 0; i < 4; i++) msg[12 + i] = (unsigned char)(job >> (24 - 8 * i));
    crypto_auth_hmacsha256(out, msg, sizeof msg, key);
}

/* The cached capability is always the key's and the job's, across job and key changes. */
Test(auth, a_capkey_keeps_the_last_jobs_capability_only) {
    tsr__capkey k = {0};
    uint8_t want[32], other[32];
    tsr__auth_random(k.key, 32);
    const uint32_t jobs[] = {7, 7, 8, 7, 0xfffffffe, 0xfffffffe};
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        ref_cap(k.key, jobs[i], want);
        cr_assert_eq(memcmp(tsr__capkey_cap(&k, jobs[i]), want, 32), 0, "job %u", jobs[i]);
        cr_assert_eq(tsr__capkey_check(&k, jobs[i], (tsr__str){(const char *)want, 32}), 0);
        cr_assert_eq(tsr__capkey_check(&k, jobs[i] + 1, (tsr__str){(const char *)want, 32}),
                     TSR_EAUTH);
    }
    /* A new key (a new scheduler's welcome): have = 0, and the old capability is refused. */
    memcpy(other, tsr__capkey_cap(&k, 9), 32);
    tsr__auth_random(k.key, 32);
    k.have = 0;
    ref_cap(k.key, 9, want);
    cr_assert_eq(memcmp(tsr__capkey_cap(&k, 9), want, 32), 0);
    cr_assert_eq(tsr__capkey_check(&k, 9, (tsr__str){(const char *)other, 32}), TSR_EAUTH);
}

static char tmpl[64];

static const char *tmpdir(void) {
    snprintf(tmpl, sizeof tmpl, "/tmp/tsr-auth-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpl));
    return tmpl;
}

static void put(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    fwrite(data, 1, n, f);
    fclose(f);
}

/* A LOAD of a 1-d .npy of n float64 (data at offset off). */
static tsr_kdesc load_desc(const char *path, int64_t n, int64_t off, int64_t *iv) {
    iv[0] = off;
    iv[1] = TSR_FLOAT64;
    iv[2] = n; /* the file's shape */
    iv[3] = 0; /* this chunk's offset */
    tsr_kdesc d = {.kop = TSR_KOP_LOAD, .fn = TSR__LOAD_NPY, .dtype = TSR_FLOAT64, .ndim = 1};
    d.shape[0] = n;
    d.ni = 4;
    d.i = iv;
    d.s = path;
    return d;
}

Test(auth, load_paths_stay_under_the_roots) {
    const char *base = tmpdir();
    char root[128], out[128], p[256], link[256];
    snprintf(root, sizeof root, "%s/root", base);
    snprintf(out, sizeof out, "%s/out", base);
    cr_assert_eq(mkdir(root, 0700), 0);
    cr_assert_eq(mkdir(out, 0700), 0);
    snprintf(p, sizeof p, "%s/sub", root);
    cr_assert_eq(mkdir(p, 0700), 0);
    char hdr[128];
    int hl = tsr__npy_format_header(TSR_FLOAT64, 1, (int64_t[]){4}, hdr, sizeof hdr);
    char file[256];
    memcpy(file, hdr, (size_t)hl);
    memset(file + hl, 0, 32);
    snprintf(p, sizeof p, "%s/x.npy", root);
    put(p, file, (size_t)hl + 32);
    snprintf(p, sizeof p, "%s/z.npy", out);
    put(p, file, (size_t)hl + 32);
    snprintf(link, sizeof link, "%s/link.npy", root);
    cr_assert_eq(symlink(p, link), 0);

    tsr_worker_options o;
    tsr_worker_options_default(&o);
    const char *roots[] = {root};
    o.data_roots = roots;
    o.n_data_roots = 1;
    static tsr__worker w;
    memset(&w, 0, sizeof w);
    w.opts = &o;
    w.log = (tsr__logger){"test", TSR_LOG_WARN, NULL, NULL};
    cr_assert_eq(tsr__roots_init(&w), 0);

    int64_t iv[4];
    char msg[512];
    struct {
        const char *rel;
        int ok;
    } cases[] = {
        {"root/x.npy", 1},        {"root/sub/../x.npy", 1},
        {"root/../out/z.npy", 0}, {"root/sub/../../out/z.npy", 0},
        {"out/z.npy", 0},         {"root/link.npy", 0},
        {"root/missing.npy", 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        snprintf(p, sizeof p, "%s/%s", base, cases[k].rel);
        tsr_kdesc d = load_desc(p, 4, hl, iv);
        int rc = tsr__roots_check_load(&w, &d, msg, sizeof msg);
        if (cases[k].ok)
            cr_assert_eq(rc, 0, "%s: %s", cases[k].rel, msg);
        else
            cr_assert_neq(rc, 0, "%s was allowed", cases[k].rel);
    }
    /* Under the root, but the task does not describe the file: shape, offset, dtype. */
    snprintf(p, sizeof p, "%s/x.npy", root);
    tsr_kdesc d = load_desc(p, 5, hl, iv);
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), TSR_ENPY);
    d = load_desc(p, 4, 0, iv);
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), TSR_ENPY);
    d = load_desc(p, 4, hl, iv);
    iv[1] = TSR_FLOAT32;
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), TSR_ENPY);
    /* Writes: the directory must be under a root. */
    snprintf(p, sizeof p, "%s/new.npy", root);
    cr_assert_eq(tsr__roots_check_write(&w, p, msg, sizeof msg), 0, "%s", msg);
    snprintf(p, sizeof p, "%s/sub/../../out/new.npy", root);
    cr_assert_neq(tsr__roots_check_write(&w, p, msg, sizeof msg), 0);
    tsr__roots_free(&w);

    /* No roots and no token: any path, but /etc/passwd is still no .npy. */
    o.n_data_roots = 0;
    o.token = NULL;
    cr_assert_eq(tsr__roots_init(&w), 0);
    d = load_desc("/etc/passwd", 4, hl, iv);
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), TSR_ENPY);
    snprintf(p, sizeof p, "%s/z.npy", out);
    d = load_desc(p, 4, hl, iv);
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), 0, "%s", msg);
    tsr__roots_free(&w);
    /* No roots with a token: the working directory only. */
    o.token = "t";
    char cwd[PATH_MAX];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(root), 0);
    cr_assert_eq(tsr__roots_init(&w), 0);
    cr_assert_eq(chdir(cwd), 0);
    snprintf(p, sizeof p, "%s/x.npy", root);
    d = load_desc(p, 4, hl, iv);
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), 0, "%s", msg);
    snprintf(p, sizeof p, "%s/z.npy", out);
    d = load_desc(p, 4, hl, iv);
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), TSR_EINVALID);
    tsr__roots_free(&w);
    /* A root that does not exist is refused at start. */
    const char *missing[] = {"/nonexistent/tessera-root"};
    o.data_roots = missing;
    o.n_data_roots = 1;
    cr_assert_eq(tsr__roots_init(&w), TSR_EINVALID);
    tsr__roots_free(&w);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    cr_assert_eq(system(cmd), 0);
}

/* A Zarr store: its real path under a root and its .zarray matching the task. */
Test(auth, zarr_stores_match_their_task) {
    const char *base = tmpdir();
    char store[128], p[256], msg[512];
    snprintf(store, sizeof store, "%s/a.zarr", base);
    cr_assert_eq(mkdir(store, 0700), 0);
    snprintf(p, sizeof p, "%s/.zarray", store);
    const char *meta = "{\"zarr_format\": 2, \"shape\": [4], \"chunks\": [2], \"dtype\": \"<f8\", "
                       "\"compressor\": null, \"fill_value\": 0, \"order\": \"C\", "
                       "\"filters\": null}";
    put(p, meta, strlen(meta));
    tsr_worker_options o;
    tsr_worker_options_default(&o);
    const char *roots[] = {base};
    o.data_roots = roots;
    o.n_data_roots = 1;
    static tsr__worker w;
    memset(&w, 0, sizeof w);
    w.opts = &o;
    w.log = (tsr__logger){"test", TSR_LOG_WARN, NULL, NULL};
    cr_assert_eq(tsr__roots_init(&w), 0);
    /* i = [file_dtype, codec, separator, gshape, zchunks, offset], f = [fill] */
    int64_t iv[6] = {TSR_FLOAT64, TSR__ZC_NONE, '.', 4, 2, 0};
    double fv[1] = {0};
    tsr_kdesc d = {.kop = TSR_KOP_LOAD, .fn = TSR__LOAD_ZARR, .dtype = TSR_FLOAT64, .ndim = 1};
    d.shape[0] = 2;
    d.ni = 6;
    d.i = iv;
    d.nf = 1;
    d.f = fv;
    d.s = store;
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), 0, "%s", msg);
    iv[4] = 1; /* other chunks than the store's */
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), TSR_EZARR);
    iv[4] = 2;
    iv[3] = 8; /* another shape */
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), TSR_EZARR);
    iv[3] = 4;
    iv[1] = TSR__ZC_ZLIB; /* another codec */
    cr_assert_eq(tsr__roots_check_load(&w, &d, msg, sizeof msg), TSR_EZARR);
    iv[1] = TSR__ZC_NONE;
    d.s = "/etc"; /* not a store, and outside the root */
    cr_assert_neq(tsr__roots_check_load(&w, &d, msg, sizeof msg), 0);
    tsr__roots_free(&w);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    cr_assert_eq(system(cmd), 0);
}
