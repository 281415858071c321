/* A small valid submit payload (variant 0), and broken ones (1 and up), for the submit decoder
 * and the socket tests (test_sched.c, test_sched_socket.c). Needs mp_ref.h. */
#ifndef TSR_TEST_SCHED_GRAPH_H
#define TSR_TEST_SCHED_GRAPH_H

#include <msgpack.h>

static void pack_graph(msgpack_sbuffer *b, int variant) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    tsr__mp_pack_str(&pk, "v");
    msgpack_pack_int(&pk, 1);
    tsr__mp_pack_str(&pk, "arrays");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    tsr__mp_pack_str(&pk, "A");
    tsr__mp_pack_str(&pk, "random");
    tsr__mp_pack_str(&pk, "tasks");
    msgpack_pack_array(&pk, 2);
    for (int t = 0; t < 2; t++) {
        msgpack_pack_array(&pk, 5);
        msgpack_pack_uint32(&pk, variant == 1 && t == 1 ? 5 : 0);
        int nd = t == 1 ? 1 : 0;
        msgpack_pack_array(&pk, nd);
        if (nd) msgpack_pack_uint32(&pk, variant == 2 ? 1 : 0);
        msgpack_pack_uint64(&pk, 64);
        msgpack_pack_double(&pk, 1.0);
        if (variant == 3 && t == 1) {
            tsr__mp_pack_str(&pk, "kd");
        } else {
            msgpack_pack_bin(&pk, 3);
            msgpack_pack_bin_body(&pk, t ? "xyz" : "abc", 3);
        }
    }
    tsr__mp_pack_str(&pk, "outputs");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint32(&pk, variant == 4 ? 2 : 1);
}

#endif
