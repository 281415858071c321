/* A cursor over msgpack bytes that decodes values in place, without building msgpack-c's object
 * tree. The scheduler reads graph submissions with it: a million-task graph unpacked as a tree
 * costs some 250 bytes per task in msgpack zones, more than the scheduler keeps per task, and
 * takes several times longer than walking the bytes once. Every read is bounds-checked; the
 * first error sticks (r->err) and later reads fail, so callers can check once at the end. */
#include <string.h>

#include "wire/wire.h"

static int skip_value(tsr__mpr *r, int strict);

static int fail(tsr__mpr *r) {
    r->err = 1;
    return -1;
}

static int need(tsr__mpr *r, size_t n) {
    if (r->err || (size_t)(r->end - r->p) < n) return fail(r);
    return 0;
}

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Reads a big-endian length of n bytes following the type byte. */
static int len_of(tsr__mpr *r, int n, uint32_t *out) {
    if (need(r, (size_t)n)) return -1;
    *out = (uint32_t)be(r->p, n);
    r->p += n;
    return 0;
}

void tsr__mpr_init(tsr__mpr *r, const void *data, size_t len) {
    r->p = data;
    r->end = r->p + len;
    r->err = 0;
}

int tsr__mpr_array(tsr__mpr *r, uint32_t *n) {
    if (need(r, 1)) return -1;
    uint8_t b = *r->p++;
    if ((b & 0xf0) == 0x90) {
        *n = b & 0x0f;
        return 0;
    }
    if (b == 0xdc) return len_of(r, 2, n);
    if (b == 0xdd) return len_of(r, 4, n);
    return fail(r);
}

int tsr__mpr_map(tsr__mpr *r, uint32_t *n) {
    if (need(r, 1)) return -1;
    uint8_t b = *r->p++;
    if ((b & 0xf0) == 0x80) {
        *n = b & 0x0f;
        return 0;
    }
    if (b == 0xde) return len_of(r, 2, n);
    if (b == 0xdf) return len_of(r, 4, n);
    return fail(r);
}

int tsr__mpr_uint(tsr__mpr *r, uint64_t *v) {
    if (need(r, 1)) return -1;
    uint8_t b = *r->p++;
    if (b < 0x80) {
        *v = b;
        return 0;
    }
    int n = b == 0xcc ? 1 : b == 0xcd ? 2 : b == 0xce ? 4 : b == 0xcf ? 8 : 0;
    if (n == 0 || need(r, (size_t)n)) return fail(r);
    *v = be(r->p, n);
    r->p += n;
    return 0;
}

int tsr__mpr_double(tsr__mpr *r, double *v) {
    if (need(r, 1)) return -1;
    uint8_t b = *r->p;
    if (b == 0xcb || b == 0xca) {
        int n = b == 0xcb ? 8 : 4;
        r->p++;
        if (need(r, (size_t)n)) return -1;
        uint64_t bits = be(r->p, n);
        r->p += n;
        if (n == 8) {
            memcpy(v, &bits, 8);
        } else {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            *v = f;
        }
        return 0;
    }
    if (b >= 0xe0 || (b >= 0xd0 && b <= 0xd3)) { /* negative ints */
        r->p++;
        int n = b >= 0xe0 ? 0 : 1 << (b - 0xd0);
        if (need(r, (size_t)n)) return -1;
        int64_t x = n == 0 ? (int8_t)b : (int64_t)(be(r->p, n) << (64 - 8 * n)) >> (64 - 8 * n);
        r->p += n;
        *v = (double)x;
        return 0;
    }
    uint64_t u;
    if (tsr__mpr_uint(r, &u)) return -1;
    *v = (double)u;
    return 0;
}

static int raw(tsr__mpr *r, uint8_t b8, uint8_t b16, uint8_t b32, const uint8_t **p, uint32_t *n) {
    if (need(r, 1)) return -1;
    uint8_t b = *r->p++;
    int w = b == b8 ? 1 : b == b16 ? 2 : b == b32 ? 4 : 0;
    if (w == 0) return fail(r);
    if (len_of(r, w, n) || need(r, *n)) return fail(r);
    *p = r->p;
    r->p += *n;
    return 0;
}

int tsr__mpr_bin(tsr__mpr *r, const uint8_t **p, uint32_t *n) {
    return raw(r, 0xc4, 0xc5, 0xc6, p, n);
}

int tsr__mpr_str(tsr__mpr *r, const char **s, uint32_t *n) {
    if (need(r, 1)) return -1;
    uint8_t b = *r->p;
    if ((b & 0xe0) == 0xa0) {
        *n = b & 0x1f;
        r->p++;
        if (need(r, *n)) return -1;
        *s = (const char *)r->p;
        r->p += *n;
        return 0;
    }
    const uint8_t *p;
    if (raw(r, 0xd9, 0xda, 0xdb, &p, n)) return -1;
    *s = (const char *)p;
    return 0;
}

int tsr__mpr_skip(tsr__mpr *r) {
    return skip_value(r, 0);
}

int tsr__mpr_check(const void *data, size_t len) {
    tsr__mpr r;
    tsr__mpr_init(&r, data, len);
    return skip_value(&r, 1) == 0 && r.p == r.end ? 0 : -1;
}

/* strict: a container's count must fit in the bytes left (every value takes one at least). */
static int skip_value(tsr__mpr *r, int strict) {
    /* Containers are skipped with an explicit count of values still to skip (no recursion, so
     * hostile nesting cannot exhaust the stack). */
    uint64_t todo = 1;
    while (todo > 0) {
        if (strict && todo > (uint64_t)(r->end - r->p)) return fail(r);
        todo--;
        if (need(r, 1)) return -1;
        uint8_t b = *r->p++;
        uint32_t n = 0;
        if (b < 0x80 || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) continue;
        if ((b & 0xf0) == 0x80) {
            todo += 2u * (b & 0x0f);
        } else if ((b & 0xf0) == 0x90) {
            todo += b & 0x0f;
        } else if ((b & 0xe0) == 0xa0) {
            n = b & 0x1f;
            if (need(r, n)) return -1;
            r->p += n;
        } else {
            switch (b) {
            case 0xcc:
            case 0xd0:
                n = 1;
                break;
            case 0xcd:
            case 0xd1:
                n = 2;
                break;
            case 0xce:
            case 0xd2:
            case 0xca:
                n = 4;
                break;
            case 0xcf:
            case 0xd3:
            case 0xcb:
                n = 8;
                break;
            case 0xd4:
                n = 2;
                break;
            case 0xd5:
                n = 3;
                break;
            case 0xd6:
                n = 5;
                break;
            case 0xd7:
                n = 9;
                break;
            case 0xd8:
                n = 17;
                break;
            case 0xc4:
            case 0xd9:
                if (len_of(r, 1, &n)) return -1;
                break;
            case 0xc5:
            case 0xda:
                if (len_of(r, 2, &n)) return -1;
                break;
            case 0xc6:
            case 0xdb:
                if (len_of(r, 4, &n)) return -1;
                break;
            case 0xc7:
                if (len_of(r, 1, &n)) return -1;
                n++;
                break;
            case 0xc8:
                if (len_of(r, 2, &n)) return -1;
                n++;
                break;
            case 0xc9:
                if (len_of(r, 4, &n)) return -1;
                n++;
                break;
            case 0xdc:
                if (len_of(r, 2, &n)) return -1;
                todo += n;
                n = 0;
                break;
            case 0xdd:
                if (len_of(r, 4, &n)) return -1;
                todo += n;
                n = 0;
                break;
            case 0xde:
                if (len_of(r, 2, &n)) return -1;
                todo += 2ull * n;
                n = 0;
                break;
            case 0xdf:
                if (len_of(r, 4, &n)) return -1;
                todo += 2ull * n;
                n = 0;
                break;
            default:
                return fail(r);
            }
            if (need(r, n)) return -1;
            r->p += n;
        }
    }
    return 0;
}
