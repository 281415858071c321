/* tsr_strerror() and tsr_err_name(): names for every code a Tessera function returns. Tessera's
 * own codes come from TSR_ERRNO_MAP, -errno from glibc, and libuv's own codes (UV_EOF, UV_EAI_*,
 * ...) from libuv. It lives here rather than in common/, which must not depend on libuv. */
#include <string.h>
#include <uv.h>

#include "common/common.h"

/* True for a code of libuv's own that glibc does not know as an errno value (UV_EOF, UV_EAI_*,
 * UV_ECHARSET, ...). uv_strerror() and uv_err_name() are only called for these: for a code they
 * do not know, they allocate a string that is never freed. */
static int is_uv_own_code(int code) {
    if (strerrorname_np(-code)) return 0;
    switch (code) {
#define XX(name, msg) case UV_##name:
        UV_ERRNO_MAP(XX)
#undef XX
        return 1;
    default:
        return 0;
    }
}

const char *tsr_strerror(int code) {
    switch (code) {
    case 0:
        return "success";
#define XX(name, value, msg)                                                                       \
    case value:                                                                                    \
        return msg;
        TSR_ERRNO_MAP(XX)
#undef XX
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        if (is_uv_own_code(code)) return uv_strerror(code);
        /* strerror is not thread-safe in general; glibc's returns static strings for known
         * codes, which is all we pass here. */
        if (strerrorname_np(-code)) return strerror(-code);
    }
    return "unknown error";
}

const char *tsr_err_name(int code) {
    switch (code) {
    case 0:
        return "OK";
#define XX(name, value, msg)                                                                       \
    case value:                                                                                    \
        return "TSR_E" #name;
        TSR_ERRNO_MAP(XX)
#undef XX
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        if (is_uv_own_code(code)) return uv_err_name(code);
        const char *n = strerrorname_np(-code);
        if (n) return n;
    }
    return "UNKNOWN";
}
