/* The one temp-then-rename writer: every file the library saves (.npy arrays, traces, stats) is
 * written under PATH.tmp-XXXXXX and renamed onto PATH once complete, and every Zarr store under
 * a temporary directory beside it, so that a reader never sees a partial output and a failure
 * leaves nothing behind. The `tessera` command reaches it through the save functions of the API;
 * it keeps no copy of its own. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/client.h"

int tsr__fill_bytes(int fd, void *user, int *recorded) {
    const tsr__bytes *b = user;
    const char *p = b->data;
    size_t left = b->len;
    (void)recorded;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        left -= (size_t)w;
    }
    return 0;
}

/* " (what)" for messages, or "" without one. */
static const char *label(const tsr__tmpout *t, char *buf, size_t size) {
    if (!*t->what) return "";
    snprintf(buf, size, " (%s)", t->what);
    return buf;
}

/* PATH + suffix + "XXXXXX", malloc'd. */
static char *tmp_name(const char *path, const char *suffix) {
    size_t plen = strlen(path), slen = strlen(suffix);
    char *tmp = malloc(plen + slen + 7);
    if (!tmp) return NULL;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, suffix, slen);
    memcpy(tmp + plen + slen, "XXXXXX", 7);
    return tmp;
}

int tsr__tmpout_open(tsr_client *c, tsr__tmpout *t, const char *path, const char *what, int dir) {
    char lb[400];
    memset(t, 0, sizeof *t);
    t->fd = -1;
    t->dir = dir;
    snprintf(t->what, sizeof t->what, "%s", what ? what : "");
    struct stat st;
    if (!dir && stat(path, &st) == 0) {
        const char *kind = tsr__unwritable_kind(st.st_mode);
        if (kind)
            return tsr__fail(c, -EINVAL,
                             "cannot write \"%s\"%s: it is %s; outputs are written to files (at "
                             "offsets, in any order) or to character devices such as /dev/null",
                             path, label(t, lb, sizeof lb), kind);
        if (S_ISCHR(st.st_mode)) { /* /dev/null: written where it is (see client.h) */
            t->direct = 1;
            if (!(t->path = strdup(path))) return tsr__fail(c, -ENOMEM, "out of memory");
            if ((t->fd = open(path, O_WRONLY | O_CLOEXEC)) < 0) {
                int e = errno;
                tsr__tmpout_abort(t);
                return tsr__fail(c, -e, "cannot open \"%s\"%s: %s", path, label(t, lb, sizeof lb),
                                 strerror(e));
            }
            return 0;
        }
    }
    t->path = strdup(path);
    t->tmp = tmp_name(path, ".tmp-");
    if (!t->path || !t->tmp) {
        tsr__tmpout_abort(t);
        return tsr__fail(c, -ENOMEM, "out of memory");
    }
    /* mkdtemp/mkstemp make 0700/0600; a saved store or file is meant to be read by others. */
    int made = dir ? mkdtemp(t->tmp) != NULL : (t->fd = mkostemp(t->tmp, O_CLOEXEC)) >= 0;
    if (!made) {
        int e = errno;
        free(t->tmp);
        t->tmp = NULL;
        tsr__tmpout_abort(t);
        return tsr__fail(c, -e, "cannot create \"%s\"%s: %s", path, label(t, lb, sizeof lb),
                         strerror(e));
    }
    if (dir) {
        chmod(t->tmp, 0755);
        t->fd = open(t->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } else {
        fchmod(t->fd, 0644);
    }
    if (t->fd < 0) {
        int e = errno;
        tsr__tmpout_abort(t);
        return tsr__fail(c, -e, "cannot create \"%s\"%s: %s", path, label(t, lb, sizeof lb),
                         strerror(e));
    }
    return 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(p) : unlink(p);
}

/* Removes a directory and everything in it, not following links. */
static int remove_tree(const char *dir) {
    return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int tsr__dir_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -errno;
    int empty = 1;
    for (struct dirent *e; empty && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

/* ---- putting outputs in place, one or several as one ---------------------------------------- */

/* How to undo putting one temporary in place: what was at its path before is kept under `old`
 * (a hard link to the old file, the old store's directory) until every output is in place. */
typedef struct placed {
    char *old;     /* the previous file or store, kept aside; NULL when there was none */
    int link;      /* old is a hard link to the old file (path never went missing) */
    int exchanged; /* a store swapped in with RENAME_EXCHANGE: old is the temporary's name */
    int empty;     /* a store put onto an empty directory, which undoing makes again */
} placed;

/* A fresh name beside path for keeping the old output aside, not yet existing (the name mkstemp
 * reserved, removed again). NULL on failure. */
static char *aside_name(const char *path) {
    char *old = tmp_name(path, ".old-");
    if (!old) return NULL;
    int fd = mkstemp(old);
    if (fd < 0) {
        free(old);
        return NULL;
    }
    close(fd);
    unlink(old);
    return old;
}

/* Puts t's temporary in place, recording in *pl how to undo it; a file's old version is kept
 * aside only when `keep` (several outputs: there may be something to undo). 0 or a negative
 * errno, with nothing changed at t->path on failure. A store replaces the old one in one step
 * (renameat2's RENAME_EXCHANGE: a reader sees the old store or the new one, never neither);
 * where the file system cannot exchange, the old one is renamed aside first, which leaves a
 * moment without a store at the path but never a mixture of both. */
static int place(tsr__tmpout *t, placed *pl, int keep) {
    memset(pl, 0, sizeof *pl);
    if (t->direct) return 0; /* written in place: nothing to rename, nothing to undo */
    struct stat st;
    int had = lstat(t->path, &st) == 0;
    if (!t->dir) {
        if (keep && had && !S_ISDIR(st.st_mode)) { /* onto a directory the rename fails */
            /* A hard link keeps the old file while the rename replaces it in one step; where
             * links are refused, the old file is moved aside (a moment with no file). */
            if (!(pl->old = aside_name(t->path))) return -ENOMEM;
            if (link(t->path, pl->old) == 0) {
                pl->link = 1;
            } else if (rename(t->path, pl->old) != 0) {
                int e = errno;
                free(pl->old);
                pl->old = NULL;
                return -e;
            }
        }
        if (rename(t->tmp, t->path) != 0) {
            int e = errno;
            if (pl->old && !pl->link) rename(pl->old, t->path);
            if (pl->old && pl->link) unlink(pl->old);
            free(pl->old);
            pl->old = NULL;
            return -e;
        }
        return 0;
    }
    if (rename(t->tmp, t->path) == 0) { /* nothing there, or an empty directory */
        pl->empty = had;
        return 0;
    }
    if (errno != ENOTEMPTY && errno != EEXIST) return -errno;
    if (renameat2(AT_FDCWD, t->tmp, AT_FDCWD, t->path, RENAME_EXCHANGE) == 0) {
        if (!(pl->old = strdup(t->tmp))) { /* the old store, now under the temporary's name */
            renameat2(AT_FDCWD, t->tmp, AT_FDCWD, t->path, RENAME_EXCHANGE); /* back */
            return -ENOMEM;
        }
        pl->exchanged = 1;
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS) return -errno;
    char *old = tmp_name(t->path, ".old-");
    if (!old) return -ENOMEM;
    if (!mkdtemp(old)) {
        int e = errno;
        free(old);
        return -e;
    }
    if (rename(t->path, old) != 0 || rename(t->tmp, t->path) != 0) {
        int e = errno;
        if (access(t->path, F_OK) != 0) rename(old, t->path);
        rmdir(old);
        free(old);
        return -e;
    }
    pl->old = old;
    return 0;
}

/* Puts back what was at t->path before place(): the old file or store, or nothing. (Bytes
 * written to a device in place cannot be taken back, and need not be.) */
static void unplace(tsr__tmpout *t, placed *pl) {
    if (t->direct) return;
    if (!t->dir) {
        if (pl->old)
            rename(pl->old, t->path); /* onto the new file, in one step */
        else
            unlink(t->path);
    } else if (pl->exchanged) {
        if (renameat2(AT_FDCWD, pl->old, AT_FDCWD, t->path, RENAME_EXCHANGE) == 0)
            remove_tree(pl->old);
    } else {
        remove_tree(t->path);
        if (pl->old)
            rename(pl->old, t->path);
        else if (pl->empty)
            mkdir(t->path, 0755);
    }
    free(pl->old);
    pl->old = NULL;
}

/* Removes p, a file or (dir) a directory with everything in it. */
static void remove_path(const char *p, int dir) {
    if (dir)
        remove_tree(p);
    else
        unlink(p);
}

/* What place() kept aside is not needed any more. */
static void unkeep(tsr__tmpout *t, placed *pl) {
    if (pl->old) remove_path(pl->old, t->dir);
    free(pl->old);
    pl->old = NULL;
}

int tsr__tmpout_commit_all(tsr_client *c, tsr__tmpout *const *t, size_t n) {
    char lb[400];
    int rc = 0;
    size_t bad = n;
    for (size_t k = 0; k < n; k++) {
        if (t[k]->fd >= 0 && close(t[k]->fd) != 0 && rc == 0) {
            rc = -errno;
            bad = k;
        }
        t[k]->fd = -1;
    }
    if (rc) {
        tsr__fail(c, rc, "cannot write \"%s\"%s: %s%s", t[bad]->path, label(t[bad], lb, sizeof lb),
                  strerror(-rc), n > 1 ? "; no output was written" : "");
        for (size_t k = 0; k < n; k++) tsr__tmpout_abort(t[k]);
        return rc;
    }
    placed *pl = calloc(n, sizeof *pl);
    if (!pl) {
        for (size_t k = 0; k < n; k++) tsr__tmpout_abort(t[k]);
        return tsr__fail(c, -ENOMEM, "out of memory");
    }
    size_t k = 0;
    for (; k < n; k++)
        if ((rc = place(t[k], &pl[k], n > 1)) != 0) break;
    if (rc) {
        tsr__fail(c, rc, "cannot write \"%s\"%s: renaming \"%s\" onto it failed: %s%s", t[k]->path,
                  label(t[k], lb, sizeof lb), t[k]->tmp, strerror(-rc),
                  n > 1 ? "; the other outputs were left as they were" : "");
        while (k-- > 0) {
            unplace(t[k], &pl[k]);
            free(t[k]->tmp); /* renamed onto the path, and taken back out */
            t[k]->tmp = NULL;
        }
    } else {
        for (k = 0; k < n; k++) {
            unkeep(t[k], &pl[k]);
            free(t[k]->tmp);
            t[k]->tmp = NULL;
        }
    }
    free(pl);
    for (k = 0; k < n; k++) tsr__tmpout_abort(t[k]);
    return rc;
}

int tsr__tmpout_length(int fd, off_t len) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    if (!S_ISREG(st.st_mode)) return 0;
    return ftruncate(fd, len) == 0 ? 0 : -errno;
}

int tsr__tmpout_commit(tsr_client *c, tsr__tmpout *t) {
    return tsr__tmpout_commit_all(c, &t, 1);
}

void tsr__tmpout_abort(tsr__tmpout *t) {
    if (t->fd >= 0) close(t->fd);
    t->fd = -1;
    if (t->tmp) remove_path(t->tmp, t->dir);
    free(t->tmp);
    free(t->path);
    t->tmp = t->path = NULL;
}

int tsr__write_file(tsr_client *c, const char *path, const char *what,
                    int (*fill)(int fd, void *user, int *recorded), void *user) {
    tsr__tmpout t;
    int rc = tsr__tmpout_open(c, &t, path, what, 0);
    if (rc) return rc;
    int recorded = 0;
    rc = fill(t.fd, user, &recorded);
    if (rc) {
        if (!recorded) {
            char lb[400];
            tsr__fail(c, rc, "cannot write \"%s\"%s: %s", path, label(&t, lb, sizeof lb),
                      tsr_strerror(rc));
        }
        tsr__tmpout_abort(&t);
        return rc;
    }
    return tsr__tmpout_commit(c, &t);
}
