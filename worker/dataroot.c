/* Data roots (docs/security.md): where a worker's `load` tasks may read, and its own writes may
 * go. Paths are compared by real path, so `..` and symlinks cannot lead out of a root, and a
 * file is read only when its header matches the task (so a crafted task cannot make the worker
 * return the bytes of a file that is not the array it claims). It never opens a file for the
 * kernel: k_load does that (a file swapped between the check and the read by someone who can
 * write under a root is outside what this guards). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "array/array.h"
#include "kernels/kernels.h"
#include "worker/worker.h"
#include "zarr/zarr.h"

static int add_root(tsr__worker *w, const char *dir) {
    char *real = realpath(dir, NULL);
    if (!real) {
        tsr__log(&w->log, TSR_LOG_ERROR, "data root %s: %s", dir, strerror(errno));
        return TSR_EINVALID;
    }
    char **r = realloc(w->roots, ((size_t)w->nroots + 1) * sizeof *r);
    if (!r) {
        free(real);
        return -ENOMEM;
    }
    w->roots = r;
    w->roots[w->nroots++] = real;
    return 0;
}

int tsr__roots_init(tsr__worker *w) {
    const tsr_worker_options *o = w->opts;
    for (int k = 0; k < o->n_data_roots; k++) {
        if (!o->data_roots || !o->data_roots[k] || !o->data_roots[k][0]) {
            tsr__log(&w->log, TSR_LOG_ERROR, "data root %d is empty", k);
            return TSR_EINVALID;
        }
        int rc = add_root(w, o->data_roots[k]);
        if (rc) return rc;
    }
    if (w->nroots > 0) return 0;
    if (!o->token || !o->token[0]) {
        /* No token: every local user may submit work anyway (SPEC §4), so paths are not
         * limited; the header check still holds. */
        w->roots_any = 1;
        return 0;
    }
    return add_root(w, ".");
}

void tsr__roots_free(tsr__worker *w) {
    for (int k = 0; k < w->nroots; k++) free(w->roots[k]);
    free(w->roots);
    w->roots = NULL;
    w->nroots = 0;
    w->roots_any = 0;
}

static int under(const char *root, const char *path) {
    size_t n = strlen(root);
    if (strcmp(root, "/") == 0) return path[0] == '/';
    return strncmp(root, path, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* The real path of path in real (PATH_MAX), checked against the roots. */
static int resolve_under(const tsr__worker *w, const char *path, char *real, char *msg,
                         size_t msglen) {
    if (!realpath(path, real)) {
        int e = errno;
        snprintf(msg, msglen, "%s: %s", path, strerror(e));
        return -e;
    }
    if (w->roots_any) return 0;
    for (int k = 0; k < w->nroots; k++)
        if (under(w->roots[k], real)) return 0;
    snprintf(msg, msglen,
             "%s is outside this worker's data roots (start it with --data-root DIR to allow "
             "reading there)",
             path);
    return TSR_EINVALID;
}

int tsr__roots_check_load(const tsr__worker *w, const tsr_kdesc *d, char *msg, size_t msglen) {
    char real[PATH_MAX];
    if (!d->s || !d->s[0]) {
        snprintf(msg, msglen, "load without a path");
        return TSR_EINVALID;
    }
    int rc = resolve_under(w, d->s, real, msg, msglen);
    if (rc) return rc;
    int nd = d->ndim;
    if (d->fn == TSR__LOAD_ZARR) {
        tsr__zarr_meta m;
        char err[200];
        if ((rc = tsr__zarr_read_meta(real, &m, err, sizeof err)) != 0) {
            snprintf(msg, msglen, "%s: %s", d->s, err);
            return rc;
        }
        const int64_t *gshape = d->i + 3, *zch = d->i + 3 + nd;
        int ok = m.ndim == nd && (int64_t)m.dtype == d->i[0] && m.codec.id == d->i[1] &&
                 m.sep == (char)d->i[2];
        for (int a = 0; ok && a < nd; a++) ok = m.shape[a] == gshape[a] && m.chunks[a] == zch[a];
        if (!ok) {
            snprintf(msg, msglen, "%s: the store's metadata does not match the load task", d->s);
            return TSR_EZARR;
        }
        return 0;
    }
    tsr__npy_header h;
    char err[200];
    if ((rc = tsr__npy_read_header(real, &h, err, sizeof err)) != 0) {
        snprintf(msg, msglen, "%s: %s", d->s, rc == TSR_ENPY ? err : strerror(-rc));
        return rc == TSR_ENPY ? rc : rc < 0 ? rc : TSR_ENPY;
    }
    const int64_t *gshape = d->i + 2;
    int ok = h.ndim == nd && (int64_t)h.dtype == d->i[1] && h.data_offset == d->i[0];
    for (int a = 0; ok && a < nd; a++) ok = h.shape[a] == gshape[a];
    if (!ok) {
        snprintf(msg, msglen, "%s: the .npy header does not match the load task", d->s);
        return TSR_ENPY;
    }
    return 0;
}

int tsr__roots_check_write(const tsr__worker *w, const char *path, char *msg, size_t msglen) {
    char dir[PATH_MAX], real[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    return resolve_under(w, dir, real, msg, msglen);
}
