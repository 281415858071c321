/* The one writer of whole files: every file the library saves (.npy arrays, traces, stats) is
 * written under PATH.tmp-XXXXXX and renamed onto PATH once complete, so that a reader never sees
 * a partial file and a failure leaves no file behind. The `tessera` command reaches it through
 * the save functions of the API; it keeps no copy of its own. */
#include <errno.h>
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

int tsr__write_file(tsr_client *c, const char *path, const char *what,
                    int (*fill)(int fd, void *user, int *recorded), void *user) {
    char sep[8] = "", label[512] = "";
    if (what) {
        snprintf(sep, sizeof sep, " (");
        snprintf(label, sizeof label, "%s)", what);
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof ".tmp-XXXXXX");
    if (!tmp) return tsr__fail(c, -ENOMEM, "out of memory");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return tsr__fail(c, -e, "cannot create \"%s\"%s%s: %s", path, sep, label, strerror(e));
    }
    /* mkstemp makes the file 0600; a saved file is meant to be read by others too. */
    fchmod(fd, 0644);
    int recorded = 0;
    int rc = fill(fd, user, &recorded);
    if (rc && !recorded)
        tsr__fail(c, rc, "cannot write \"%s\"%s%s: %s", path, sep, label, tsr_strerror(rc));
    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
        tsr__fail(c, rc, "cannot write \"%s\"%s%s: %s", path, sep, label, strerror(-rc));
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
        tsr__fail(c, rc, "cannot write \"%s\"%s%s: renaming \"%s\" onto it failed: %s", path, sep,
                  label, tmp, strerror(-rc));
    }
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}
