/* Crafted kernel descriptors: whatever a peer sends in a descriptor (family, sub-operation,
 * dtype, shape, parameter counts and values, path), tsr__kernel_run either runs it or returns a
 * negative code with a message, and never reads or writes outside the buffers it was given (the
 * ASan build of this test is what checks that). Inputs are what a worker would pass: real
 * chunks, their buffers exactly their shape's bytes; the output buffer exactly the descriptor's
 * bytes. Plus the descriptor's wire form (any bytes decode to a descriptor or TSR_EPROTOCOL), and
 * the worker's check that every buffer holds its chunk (tsr__exec_check_buffers). */
#include <criterion/criterion.h>
#include <errno.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "kernels/kernels.h"
#include "wire/wire.h"
#include "worker/worker.h"

static uint64_t rng_state;

static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int64_t pick(const int64_t *v, size_t n) {
    return v[rnd() % n];
}

static const int64_t small[] = {0, 1, 1, 2, 2, 3, 4, 5};
static const int64_t params[] = {-3,        -1,       0,  0,         1,         1,
                                 2,         2,        3,  4,         5,         7,
                                 46,        47,       64, 1LL << 31, 1LL << 40, INT64_MAX / 4,
                                 INT64_MAX, INT64_MIN};

static int64_t nelem(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int a = 0; a < ndim; a++) n *= shape[a];
    return n;
}

/* A user kernel that fills its output block with zeros by its shape and dtype: what a worker
 * would have resolved for a MAP_BLOCKS descriptor. */
static int zero_kernel(const tsr_plugin_block *in, int nin, tsr_plugin_block *out,
                       const tsr_plugin_info *info, char *err, size_t errlen) {
    int64_t n = 1;
    for (int a = 0; a < out->ndim; a++) n *= out->shape[a];
    size_t esize = out->dtype == TSR_PLUGIN_FLOAT32 ? 4 : out->dtype == TSR_PLUGIN_BOOL ? 1 : 8;
    if (n) memset(out->data, 0, (size_t)n * esize);
    for (int k = 0; k < info->ndim; k++) (void)(info->offset[k] + info->gshape[k]);
    return 0;
}

/* A descriptor of random family and parameters, mostly near something valid. */
static void random_desc(tsr_kdesc *d, int64_t *ip, double *fp) {
    memset(d, 0, sizeof *d);
    d->kop = (uint8_t)(rnd() % (TSR_KOP_COUNT + 1));
    d->fn = (uint8_t)(rnd() % 24);
    d->dtype = (uint8_t)(rnd() % 8 ? rnd() % TSR_DTYPE_COUNT : rnd() % 6);
    d->ndim = (uint8_t)(rnd() % 4);
    for (int a = 0; a < d->ndim; a++) d->shape[a] = pick(small, 8);
    d->ni = (uint32_t)(rnd() % 14);
    for (uint32_t k = 0; k < d->ni; k++)
        ip[k] = rnd() % 3 ? pick(small, 8) : pick(params, sizeof params / sizeof params[0]);
    d->i = d->ni ? ip : NULL;
    d->nf = (uint32_t)(rnd() % 3);
    const double fv[] = {0, 1, -1, 0.5, 1e308, -1e308, 3};
    for (uint32_t k = 0; k < d->nf; k++) fp[k] = fv[rnd() % 7];
    d->f = d->nf ? fp : NULL;
    d->s = rnd() % 2 ? "/nonexistent/tessera-kcheck" : NULL;
    /* A user kernel's name, and the function a worker would have found for it. */
    if (d->kop == TSR_KOP_MAP_BLOCKS && rnd() % 2) {
        d->s = "lib:f";
        d->plugin = zero_kernel;
    }
}

/* Has every family run, but LOAD (no file to read) and CONTRACT (its role layout is never hit
 * at random; tests/unit/test_linalg.c mutates valid ones)? */
/* Families random descriptors almost never get right, tested by mutating valid ones instead:
 * CONTRACT's role layout (test_linalg.c), FUSED's programs (test_fuse.c), and the packed
 * lengths of PACK and MATMUL_PACKED (test_gemm_pack.c). LOAD has no file to read. */
static int runs_at_random(int k) {
    return k != TSR_KOP_LOAD && k != TSR_KOP_CONTRACT && k != TSR_KOP_FUSED && k != TSR_KOP_PACK &&
           k != TSR_KOP_MATMUL_PACKED;
}

static int all_ran(const int *ran_kop) {
    for (int k = 0; k < TSR_KOP_COUNT; k++)
        if (runs_at_random(k) && ran_kop[k] == 0) return 0;
    return 1;
}

Test(kcheck, crafted_descriptors_never_crash, .timeout = 240) {
    /* 200,000 descriptors, then more until every family that can run at random has run (the
     * stream moves with every row added to the table, so no fixed seed stays good). */
    rng_state = 13;
    int ran = 0, refused = 0, ran_kop[TSR_KOP_COUNT + 1] = {0};
    for (int it = 0; it < 200000 || (it < 4000000 && !all_ran(ran_kop)); it++) {
        tsr_kdesc d;
        int64_t ip[16];
        double fp[4];
        random_desc(&d, ip, fp);
        /* Inputs: real chunks (a dtype the worker has, a shape, exactly its bytes). Half of
         * the time shaped like the output, as most families want. */
        int nin = (int)(rnd() % 5);
        tsr_chunkview in[4];
        for (int k = 0; k < nin; k++) {
            memset(&in[k], 0, sizeof in[k]);
            in[k].dtype = (uint8_t)(rnd() % TSR_DTYPE_COUNT);
            if (rnd() % 2) {
                in[k].ndim = d.ndim;
                memcpy(in[k].shape, d.shape, sizeof d.shape);
            } else {
                in[k].ndim = (uint8_t)(rnd() % 4);
                for (int a = 0; a < in[k].ndim; a++) in[k].shape[a] = pick(small, 8);
            }
            size_t bytes =
                (size_t)nelem(in[k].ndim, in[k].shape) * tsr_dtype_size((tsr_dtype)in[k].dtype);
            in[k].data = bytes ? malloc(bytes) : NULL;
            if (bytes) memset(in[k].data, 0, bytes);
        }
        /* Half of TAKE's: the last input its indices, 1-d int64 as long as the output's axis. */
        if (d.kop == TSR_KOP_TAKE && nin > 0 && d.ni > 0 && d.i[0] >= 0 && d.i[0] < d.ndim &&
            rnd() % 2) {
            tsr_chunkview *v = &in[nin - 1];
            free(v->data);
            v->dtype = TSR_INT64;
            v->ndim = 1;
            v->shape[0] = d.shape[d.i[0]];
            v->data = v->shape[0] ? calloc((size_t)v->shape[0], 8) : NULL;
        }
        size_t obytes = d.dtype < TSR_DTYPE_COUNT ? (size_t)tsr__kdesc_nbytes(&d) : 0;
        tsr_chunkview out = {0};
        out.data = obytes ? malloc(obytes) : NULL;
        out.dtype = d.dtype;
        out.ndim = d.ndim;
        memcpy(out.shape, d.shape, sizeof d.shape);
        char err[256] = "";
        int rc = tsr__kernel_run(&d, nin ? in : NULL, nin, &out, TSR_DEVICE_CPU, err, sizeof err);
        cr_assert(rc <= 0, "rc %d", rc);
        if (rc) {
            cr_assert(err[0], "family %d fn %d: code %d without a message", d.kop, d.fn, rc);
            refused++;
        } else {
            ran++;
            ran_kop[d.kop]++;
        }
        for (int k = 0; k < nin; k++) free(in[k].data);
        free(out.data);
    }
    /* Both outcomes happen, and every family that can run at random (runs_at_random) runs, or
     * the generator tests nothing. */
    cr_assert(ran > 1000 && refused > 1000, "ran %d, refused %d", ran, refused);
    for (int k = 0; k < TSR_KOP_COUNT; k++)
        if (runs_at_random(k)) cr_expect(ran_kop[k] > 0, "family %s never ran", tsr__kop_name(k));
}

/* The wire form: random and mutated encodings decode to a descriptor or TSR_EPROTOCOL, and a
 * decoded one passes the first checks a worker makes (family, dtype, ndim, shape, bytes). The
 * kernel checks then see it as in the test above. */
Test(kcheck, wire_form_decodes_or_refuses, .timeout = 120) {
    rng_state = 99;
    int ok = 0;
    for (int it = 0; it < 50000; it++) {
        tsr_kdesc d;
        int64_t ip[16];
        double fp[4];
        random_desc(&d, ip, fp);
        if (d.kop >= TSR_KOP_COUNT) d.kop = 0;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        cr_assert_eq(tsr__kdesc_pack(&pk, &d), 0);
        for (int m = (int)(rnd() % 4); m > 0 && sb.size; m--) /* flip some bytes */
            sb.data[rnd() % sb.size] ^= (char)(1u << (rnd() % 8));
        msgpack_zone z;
        msgpack_zone_init(&z, 2048);
        msgpack_object obj;
        size_t off = 0;
        /* As the worker does (task.c): counts the bytes cannot back are refused first. */
        if (tsr__mpr_check(sb.data, sb.size) == 0 &&
            msgpack_unpack(sb.data, sb.size, &off, &z, &obj) == MSGPACK_UNPACK_SUCCESS) {
            tsr_kdesc e;
            int64_t *ib;
            double *fb;
            int rc = tsr__kdesc_unpack(&obj, &e, &ib, &fb);
            cr_assert(rc == 0 || rc == TSR_EPROTOCOL || rc == -ENOMEM, "rc %d", rc);
            if (rc == 0) {
                ok++;
                cr_assert(e.kop < TSR_KOP_COUNT && e.dtype < TSR_DTYPE_COUNT &&
                          e.ndim <= TSR_MAX_NDIM);
                for (int a = 0; a < e.ndim; a++) cr_assert(e.shape[a] >= 0);
                cr_assert(tsr__kdesc_nbytes(&e) <= (uint64_t)1 << 48);
            }
            tsr__kdesc_unpack_free(ib, fb);
        }
        msgpack_zone_destroy(&z);
        msgpack_sbuffer_destroy(&sb);
    }
    cr_assert(ok > 1000, "only %d decoded", ok);
}

/* The worker's last check before a kernel: a buffer that does not hold its chunk's shape and
 * dtype (one byte short, one too many) is refused with a message, and an output buffer smaller
 * than the descriptor's chunk too. */
Test(kcheck, worker_buffers_must_hold_their_chunks) {
    wtask *t = calloc(1, sizeof *t + 2 * sizeof(wtask_in));
    wkdesc kd = {0};
    kd.d.kop = TSR_KOP_BINARY;
    kd.d.dtype = TSR_FLOAT64;
    kd.d.ndim = 1;
    kd.d.shape[0] = 4;
    t->kd = &kd;
    t->nin = 2;
    for (int k = 0; k < 2; k++) {
        t->in[k].dtype = TSR_FLOAT32;
        t->in[k].ndim = 1;
        t->in[k].shape[0] = 4;
        t->in[k].buf = tsr__buf_new(16);
    }
    char msg[160] = "";
    cr_assert_eq(tsr__exec_check_buffers(t, msg, sizeof msg), 0, "%s", msg);
    t->out = tsr__buf_new(32);
    cr_assert_eq(tsr__exec_check_buffers(t, msg, sizeof msg), 0, "%s", msg);
    t->in[1].shape[0] = 5; /* 20 bytes claimed, 16 held */
    cr_assert_eq(tsr__exec_check_buffers(t, msg, sizeof msg), TSR_EINVALID);
    cr_assert(strstr(msg, "input 1"), "%s", msg);
    t->in[1].shape[0] = 3; /* 12 claimed, 16 held */
    cr_assert_eq(tsr__exec_check_buffers(t, msg, sizeof msg), TSR_EINVALID);
    t->in[1].shape[0] = 4;
    t->in[1].ndim = 2;
    t->in[1].shape[1] = INT64_MAX; /* a product that overflows */
    cr_assert_eq(tsr__exec_check_buffers(t, msg, sizeof msg), TSR_EINVALID);
    t->in[1].ndim = 1;
    kd.d.shape[0] = 5; /* the output needs 40 bytes, has 32 */
    msg[0] = '\0';
    cr_assert_eq(tsr__exec_check_buffers(t, msg, sizeof msg), TSR_EINVALID);
    cr_assert(strstr(msg, "output"), "%s", msg);
    for (int k = 0; k < 2; k++) tsr__buf_unref(t->in[k].buf);
    tsr__buf_unref(t->out);
    free(t);
}
