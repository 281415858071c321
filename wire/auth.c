/* The handshake and the per-job capabilities (wire/auth.h): HMAC-SHA256 from libsodium, nonces
 * from its CSPRNG, constant-time compares with sodium_memcmp. The secret itself never leaves
 * the process: only MACs over fresh nonces do. Nothing here decides roles or owns sockets. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "wire/auth.h"

_Static_assert(TSR__AUTH_BYTES == crypto_auth_hmacsha256_BYTES, "MAC size");

int tsr__auth_init(void) {
    return sodium_init() < 0 ? -1 : 0; /* 1 = already done: fine */
}

void tsr__auth_random(void *buf, size_t n) {
    if (tsr__auth_init() != 0) abort(); /* no CSPRNG: nothing secure can be done */
    randombytes_buf(buf, n);
}

static int has_secret(const char *s) {
    return s && s[0];
}

/* HMAC-SHA256 keyed by the secret's bytes (any length) over label, the two nonces and extra. */
static void mac_of(const char *secret, const char *label, const uint8_t *snonce,
                   const uint8_t *cnonce, const void *extra, size_t nextra, uint8_t *out) {
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)label, strlen(label) + 1);
    crypto_auth_hmacsha256_update(&st, snonce, TSR__AUTH_BYTES);
    crypto_auth_hmacsha256_update(&st, cnonce, TSR__AUTH_BYTES);
    if (nextra) crypto_auth_hmacsha256_update(&st, extra, nextra);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

static int bin_eq(tsr__str got, const uint8_t *want) {
    return got.n == TSR__AUTH_BYTES && sodium_memcmp(got.p, want, TSR__AUTH_BYTES) == 0;
}

int tsr__auth_send_challenge(tsr__conn *c) {
    tsr__auth_random(c->auth.snonce, TSR__AUTH_BYTES);
    c->auth.have_snonce = 1;
    tsr__msg_challenge m = {.v = TSR_PROTOCOL_VERSION,
                            .nonce = {(const char *)c->auth.snonce, TSR__AUTH_BYTES}};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    tsr__msg_pack_challenge(&sb, &m);
    int rc = tsr__conn_send(c, &sb, NULL, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int tsr__auth_take_challenge(tsr__conn *c, const msgpack_object *hdr, char *why, size_t whylen) {
    tsr__msg m;
    char err[160];
    if (tsr__msg_decode(hdr, &m, err, sizeof err) != 0 || m.type != TSR__MSG_challenge) {
        if (tsr__msg_peek_type(hdr) == TSR__MSG_challenge)
            snprintf(why, whylen, "malformed challenge: %s", err);
        else if (m.type == TSR__MSG_error)
            snprintf(why, whylen, "%.*s", (int)m.u.error.msg.n, m.u.error.msg.p);
        else
            snprintf(why, whylen, "the server sent no challenge (an older protocol version?)");
        return TSR_EPROTOCOL;
    }
    if (m.u.challenge.v != TSR_PROTOCOL_VERSION) {
        snprintf(why, whylen, "protocol version mismatch: server speaks %lld, want %d",
                 (long long)m.u.challenge.v, TSR_PROTOCOL_VERSION);
        return TSR_EVERSION;
    }
    if (m.u.challenge.nonce.n != TSR__AUTH_BYTES) {
        snprintf(why, whylen, "challenge nonce of %u bytes (want %d)", m.u.challenge.nonce.n,
                 TSR__AUTH_BYTES);
        return TSR_EPROTOCOL;
    }
    memcpy(c->auth.snonce, m.u.challenge.nonce.p, TSR__AUTH_BYTES);
    c->auth.have_snonce = 1;
    return 0;
}

void tsr__auth_sign_hello(tsr__conn *c, tsr__msg_hello *m) {
    if (!has_secret(c->auth.secret) || !c->auth.have_snonce) return;
    tsr__auth_random(c->auth.cnonce, TSR__AUTH_BYTES);
    c->auth.have_cnonce = 1;
    mac_of(c->auth.secret, "tessera client", c->auth.snonce, c->auth.cnonce, m->role.p, m->role.n,
           c->auth.mac);
    m->cnonce = (tsr__str){(const char *)c->auth.cnonce, TSR__AUTH_BYTES};
    m->mac = (tsr__str){(const char *)c->auth.mac, TSR__AUTH_BYTES};
    TSR__MSG_SET(hello, m, cnonce);
    TSR__MSG_SET(hello, m, mac);
}

int tsr__auth_check_proof(tsr__conn *c, const char *secret, const char *role, const uint8_t *cnonce,
                          const uint8_t *mac) {
    if (!has_secret(secret)) return 0;
    if (!c->auth.have_snonce || !cnonce || !mac) return TSR_EAUTH;
    memcpy(c->auth.cnonce, cnonce, TSR__AUTH_BYTES);
    c->auth.have_cnonce = 1;
    uint8_t want[TSR__AUTH_BYTES];
    mac_of(secret, "tessera client", c->auth.snonce, c->auth.cnonce, role, strlen(role), want);
    int ok = sodium_memcmp(mac, want, TSR__AUTH_BYTES) == 0;
    sodium_memzero(want, sizeof want);
    return ok ? 0 : TSR_EAUTH;
}

int tsr__auth_check_hello(tsr__conn *c, const char *secret, const tsr__msg_hello *m) {
    char role[16];
    if (!has_secret(secret)) return 0;
    if (!TSR__MSG_HAS(hello, m, cnonce) || !TSR__MSG_HAS(hello, m, mac) ||
        m->cnonce.n != TSR__AUTH_BYTES || m->mac.n != TSR__AUTH_BYTES || m->role.n >= sizeof role)
        return TSR_EAUTH;
    memcpy(role, m->role.p, m->role.n);
    role[m->role.n] = 0;
    return tsr__auth_check_proof(c, secret, role, (const uint8_t *)m->cnonce.p,
                                 (const uint8_t *)m->mac.p);
}

/* The pad that hides the capability key from anyone without the secret. */
static void ckey_pad(const char *secret, const uint8_t *snonce, const uint8_t *cnonce,
                     uint8_t *pad) {
    mac_of(secret, "tessera ckey", snonce, cnonce, NULL, 0, pad);
}

void tsr__auth_sign_welcome(tsr__conn *c, const char *secret, tsr__msg_welcome *m,
                            const uint8_t *ckey) {
    int sec = has_secret(secret) && c->auth.have_snonce && c->auth.have_cnonce;
    if (sec) {
        mac_of(secret, "tessera server", c->auth.snonce, c->auth.cnonce, NULL, 0, c->auth.mac);
        m->mac = (tsr__str){(const char *)c->auth.mac, TSR__AUTH_BYTES};
        TSR__MSG_SET(welcome, m, mac);
    }
    if (ckey) {
        uint8_t pad[TSR__AUTH_BYTES] = {0};
        if (sec) ckey_pad(secret, c->auth.snonce, c->auth.cnonce, pad);
        for (int i = 0; i < TSR__AUTH_BYTES; i++) c->auth.ckey[i] = ckey[i] ^ pad[i];
        sodium_memzero(pad, sizeof pad);
        m->ckey = (tsr__str){(const char *)c->auth.ckey, TSR__AUTH_BYTES};
        TSR__MSG_SET(welcome, m, ckey);
    }
}

int tsr__auth_check_welcome(tsr__conn *c, const tsr__msg_welcome *m, uint8_t *ckey, int *has_ckey) {
    int sec = has_secret(c->auth.secret);
    if (sec) {
        if (!c->auth.have_cnonce || !TSR__MSG_HAS(welcome, m, mac)) return TSR_EAUTH;
        uint8_t want[TSR__AUTH_BYTES];
        mac_of(c->auth.secret, "tessera server", c->auth.snonce, c->auth.cnonce, NULL, 0, want);
        int ok = bin_eq(m->mac, want);
        sodium_memzero(want, sizeof want);
        if (!ok) return TSR_EAUTH;
    }
    if (ckey && TSR__MSG_HAS(welcome, m, ckey) && m->ckey.n == TSR__AUTH_BYTES) {
        uint8_t pad[TSR__AUTH_BYTES] = {0};
        if (sec) ckey_pad(c->auth.secret, c->auth.snonce, c->auth.cnonce, pad);
        for (int i = 0; i < TSR__AUTH_BYTES; i++) ckey[i] = (uint8_t)m->ckey.p[i] ^ pad[i];
        sodium_memzero(pad, sizeof pad);
        if (has_ckey) *has_ckey = 1;
    }
    return 0;
}

void tsr__auth_cap(const uint8_t *ckey, uint32_t job, uint8_t *cap) {
    uint8_t msg[16] = "tessera-cap";
    msg[12] = (uint8_t)(job >> 24);
    msg[13] = (uint8_t)(job >> 16);
    msg[14] = (uint8_t)(job >> 8);
    msg[15] = (uint8_t)job;
    crypto_auth_hmacsha256(cap, msg, sizeof msg, ckey);
}

int tsr__auth_check_cap(const uint8_t *ckey, uint32_t job, tsr__str cap) {
    uint8_t want[TSR__AUTH_BYTES];
    tsr__auth_cap(ckey, job, want);
    return bin_eq(cap, want) ? 0 : TSR_EAUTH;
}

const uint8_t *tsr__capkey_cap(tsr__capkey *k, uint32_t job) {
    if (!k->have || k->job != job) {
        tsr__auth_cap(k->key, job, k->cap);
        k->job = job;
        k->have = 1;
    }
    return k->cap;
}

int tsr__capkey_check(tsr__capkey *k, uint32_t job, tsr__str cap) {
    return bin_eq(cap, tsr__capkey_cap(k, job)) ? 0 : TSR_EAUTH;
}
