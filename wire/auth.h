/* The challenge-response handshake every connection starts with, and the per-job capabilities
 * of workers' peer ports (docs/security.md, docs/PROTOCOL.md "Handshake"). It owns the HMACs,
 * nonces and constant-time compares; it never sends a secret, and never decides who may do
 * what beyond "holds the secret" and "holds the job's capability". */
#ifndef TSR_WIRE_AUTH_H
#define TSR_WIRE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "wire/msg.h"
#include "wire/wire.h"

#define TSR__AUTH_BYTES 32 /* nonces, MACs, the capability key and capabilities */

/* One-time set-up of libsodium (idempotent, thread-safe). 0, or -1 when it cannot start. */
int tsr__auth_init(void);

/* Fills n random bytes from the system's CSPRNG. */
void tsr__auth_random(void *buf, size_t n);

/* Server side: sends the challenge (a fresh nonce) on an accepted connection. The connection
 * keeps the nonce (c->auth). 0 or a negative code. */
int tsr__auth_send_challenge(tsr__conn *c);

/* Client side: the challenge arrived (conn.c calls this for the first frame of a connection
 * that waits for one). 0, or a negative code with why (a wrong version, no nonce). */
int tsr__auth_take_challenge(tsr__conn *c, const msgpack_object *hdr, char *why, size_t whylen);

/* Client side: adds cnonce and mac to hello m when c has a secret (c->auth.secret); the bytes
 * live in c until the connection is freed. Nothing when it has none. */
void tsr__auth_sign_hello(tsr__conn *c, tsr__msg_hello *m);

/* Server side: 0 when the hello proves the secret the server holds (secret NULL or "": no
 * proof needed), else TSR_EAUTH. Compares in constant time. Remembers the client's nonce for
 * the welcome. */
int tsr__auth_check_hello(tsr__conn *c, const char *secret, const tsr__msg_hello *m);

/* The same from the hello's parts: role as sent, cnonce and mac of TSR__AUTH_BYTES each (NULL
 * when the hello had none). */
int tsr__auth_check_proof(tsr__conn *c, const char *secret, const char *role, const uint8_t *cnonce,
                          const uint8_t *mac);

/* Server side: adds the server's proof to welcome m when secret is set, and (ckey not NULL)
 * the capability key, masked with a pad only holders of the secret can compute (plain when
 * there is no secret). The bytes live in c. */
void tsr__auth_sign_welcome(tsr__conn *c, const char *secret, tsr__msg_welcome *m,
                            const uint8_t *ckey);

/* Client side: 0 when the welcome proves that the server holds c's secret (or c has none),
 * else TSR_EAUTH. When ckey is not NULL and the welcome carries one, it is unmasked into ckey
 * and *has_ckey set. */
int tsr__auth_check_welcome(tsr__conn *c, const tsr__msg_welcome *m, uint8_t *ckey, int *has_ckey);

/* The capability of a job under key ckey: HMAC-SHA256(ckey, "tessera-cap" || job). */
void tsr__auth_cap(const uint8_t *ckey, uint32_t job, uint8_t *cap);

/* 0 when cap (a bin from the wire) is job's capability under ckey, compared in constant
 * time; else TSR_EAUTH. */
int tsr__auth_check_cap(const uint8_t *ckey, uint32_t job, tsr__str cap);

/* A capability key that keeps its last job's capability: a worker computes or checks one for
 * every peer get, a job's gets all carry the same one, and an HMAC per get (~1 us) was 3% of
 * the workers' time on a graph of tiny tasks (bench/notes.md, issue 9 §15). Set key, then have
 * = 0, whenever the key changes. */
typedef struct tsr__capkey {
    uint8_t key[TSR__AUTH_BYTES];
    uint8_t cap[TSR__AUTH_BYTES]; /* job's capability, when have */
    uint32_t job;
    int have;
} tsr__capkey;

/* job's capability under k->key (TSR__AUTH_BYTES bytes, valid until the next call). */
const uint8_t *tsr__capkey_cap(tsr__capkey *k, uint32_t job);

/* tsr__auth_check_cap with k's key. */
int tsr__capkey_check(tsr__capkey *k, uint32_t job, tsr__str cap);

#endif
