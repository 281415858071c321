/* The offline core of the client object: its error message, name sequence, lowering epochs
 * and the jobs freed arrays leave to release. Everything that talks to a cluster lives in
 * client/; nothing here blocks, runs a loop or sends a message. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array/array.h"
#include "array/client.h"

static _Thread_local char last_error[1024];

int tsr__fail(tsr_client *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (c)
        vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    else
        vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

int tsr__fail_thread(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

const char *tsr_last_error(void) {
    return last_error;
}

const char *tsr_client_errmsg(const tsr_client *c) {
    return c ? c->errmsg : last_error;
}

uint64_t tsr__client_next_seq(tsr_client *c) {
    return ++c->seq;
}

uint64_t tsr__client_next_epoch(tsr_client *c) {
    return ++c->epoch;
}

int tsr_client_new_offline(tsr_client **out) {
    *out = NULL;
    tsr_client *c = calloc(1, sizeof *c);
    if (!c) return tsr__fail_thread(-ENOMEM, "out of memory");
    c->log.who = "client";
    c->log.level = TSR_LOG_WARN;
    *out = c;
    return 0;
}

int tsr_client_set_fusion(tsr_client *c, int on) {
    if (!c) return TSR_EINVALID;
    c->no_fuse = !on;
    return 0;
}

const char *tsr_client_address(const tsr_client *c) {
    return c && c->connected ? c->address : NULL;
}

const char *tsr_client_token(const tsr_client *c) {
    return c && c->token[0] ? c->token : NULL;
}

int tsr__client_note_release(tsr_client *c, uint64_t job) {
    for (size_t k = 0; k < c->ncaps; k++)
        if (c->caps[k].job == job) c->caps[k--] = c->caps[--c->ncaps];
    if (TSR__GROW(c->releases, c->releases_cap, c->nreleases + 1)) return -ENOMEM;
    c->releases[c->nreleases++] = job;
    return 0;
}
