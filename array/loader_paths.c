/* The program loader's checks on file paths, made before anything runs (so `tessera check`
 * makes them too): an output must not be the program file or a file some `load` reads, two
 * outputs must not be one file, and an output's directory must exist. Files are compared by
 * device and inode (stat), never by spelling: "./a.npy", "a.npy", a symbolic link and a hard
 * link to it are one file. Also where in the text a number too large for JSON lies, so that
 * its message can name the array. Reads files' metadata only; writes nothing. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "array/array.h"
#include "array/loader.h"

/* What a path names: an existing file (its device and inode), or a name not there yet in an
 * existing directory (the directory's device and inode, and the last component). */
typedef struct file_id {
    int exists;
    int is_dir;
    mode_t mode; /* an existing file's type (S_IFMT bits) */
    dev_t dev;
    ino_t ino;
    char base[256];
} file_id;

static int same_file(const file_id *a, const file_id *b) {
    if (a->exists != b->exists || a->dev != b->dev || a->ino != b->ino) return 0;
    return a->exists || strcmp(a->base, b->base) == 0;
}

/* The directory part of path ("." when there is none); buf must hold strlen(path) + 2. */
static void dir_of(const char *path, char *buf, const char **base) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--; /* "out.zarr/" names out.zarr */
    size_t cut = n;
    while (cut > 0 && path[cut - 1] != '/') cut--;
    *base = path + cut;
    if (cut == 0) {
        strcpy(buf, ".");
    } else {
        size_t dn = cut > 1 ? cut - 1 : 1; /* "/x" is in "/" */
        memcpy(buf, path, dn);
        buf[dn] = '\0';
    }
}

/* 0 with *id filled, or an errno value with *why saying which part failed. */
static int identify(const char *path, file_id *id, const char **why) {
    struct stat st;
    memset(id, 0, sizeof *id);
    if (stat(path, &st) == 0) {
        id->exists = 1;
        id->is_dir = S_ISDIR(st.st_mode);
        id->mode = st.st_mode & S_IFMT;
        id->dev = st.st_dev;
        id->ino = st.st_ino;
        return 0;
    }
    if (errno != ENOENT) {
        *why = "file";
        return errno;
    }
    char *dir = malloc(strlen(path) + 2);
    if (!dir) return ENOMEM;
    const char *base;
    dir_of(path, dir, &base);
    size_t bl = strcspn(base, "/");
    int rc = 0;
    *why = "directory";
    if (stat(dir, &st) != 0)
        rc = errno;
    else if (!S_ISDIR(st.st_mode))
        rc = ENOTDIR;
    else if (access(dir, W_OK | X_OK) != 0)
        rc = errno;
    free(dir);
    if (rc) return rc;
    id->dev = st.st_dev;
    id->ino = st.st_ino;
    snprintf(id->base, sizeof id->base, "%.*s", (int)(bl < 255 ? bl : 255), base);
    return 0;
}

static int is_store_path(const tsr__output *o) {
    if (o->format == TSR_FORMAT_ZARR) return 1;
    size_t n = strlen(o->path);
    while (n > 1 && o->path[n - 1] == '/') n--;
    return n >= 5 && memcmp(o->path + n - 5, ".zarr", 5) == 0;
}

int tsr__program_check_paths(tsr_client *c, const char *file, const char *file_path,
                             const tsr_program *p, const tsr__load_input *in, size_t nin) {
    size_t n = p->noutputs;
    file_id *ids = calloc(n + 1, sizeof *ids);
    if (!ids) return tsr__fail(c, -ENOMEM, "out of memory");
    file_id prog = {0}, load;
    int have_prog = 0;
    const char *why;
    if (file_path && identify(file_path, &prog, &why) == 0 && prog.exists) have_prog = 1;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const tsr__output *o = &p->outputs[i];
        const char *name = tsr_array_name(o->array);
        if (!strcmp(o->path, "-")) continue;
        int e = identify(o->path, &ids[i], &why);
        if (e) {
            char dir[1024];
            const char *base;
            if (strlen(o->path) + 2 <= sizeof dir)
                dir_of(o->path, dir, &base);
            else
                snprintf(dir, sizeof dir, "?");
            if (!strcmp(why, "directory"))
                rc = tsr__fail(c, TSR_EPROGRAM,
                               "%s: array \"%s\": cannot write output \"%s\": directory \"%s\": %s",
                               file, name, o->path, dir, strerror(e));
            else
                rc = tsr__fail(c, TSR_EPROGRAM, "%s: array \"%s\": cannot write output \"%s\": %s",
                               file, name, o->path, strerror(e));
            break;
        }
        const file_id *id = &ids[i];
        int store = is_store_path(o);
        if (id->exists && id->is_dir && !store) {
            rc = tsr__fail(c, TSR_EPROGRAM,
                           "%s: array \"%s\": output \"%s\" is a directory (a .npy output is a "
                           "file; a Zarr store's path ends in .zarr)",
                           file, name, o->path);
            break;
        }
        const char *kind = id->exists ? tsr__unwritable_kind(id->mode) : NULL;
        if (kind && !store) {
            rc = tsr__fail(c, TSR_EPROGRAM,
                           "%s: array \"%s\": output \"%s\" is %s (a .npy output is written at "
                           "offsets, in any order: write it to a file, to /dev/null, or print it "
                           "with \"-\")",
                           file, name, o->path, kind);
            break;
        }
        /* A character device (/dev/null) is written where it is, and any number of outputs may
         * go there: none of the checks below concern it. */
        if (id->exists && S_ISCHR(id->mode) && !store) continue;
        if (id->exists && !id->is_dir && store) {
            rc = tsr__fail(c, TSR_EPROGRAM,
                           "%s: array \"%s\": output \"%s\" is a Zarr store, but a file that is "
                           "not a directory is in its place",
                           file, name, o->path);
            break;
        }
        if (have_prog && same_file(id, &prog)) {
            rc = tsr__fail(c, TSR_EPROGRAM,
                           "%s: array \"%s\": output \"%s\" is the program file itself; writing "
                           "it would destroy the program",
                           file, name, o->path);
            break;
        }
        for (size_t k = 0; k < nin && !rc; k++) {
            if (identify(in[k].path, &load, &why) != 0 || !same_file(id, &load)) continue;
            rc = tsr__fail(c, TSR_EPROGRAM,
                           "%s: array \"%s\": output \"%s\" is the file array \"%s\" loads "
                           "(\"%s\"); writing it would destroy the input",
                           file, name, o->path, in[k].array, in[k].path);
        }
        for (size_t k = 0; k < i && !rc; k++) {
            if (!strcmp(p->outputs[k].path, "-") || !same_file(id, &ids[k])) continue;
            rc = tsr__fail(c, TSR_EPROGRAM,
                           "%s: outputs: arrays \"%s\" and \"%s\" both write one file (\"%s\" and "
                           "\"%s\")",
                           file, tsr_array_name(p->outputs[k].array), name, p->outputs[k].path,
                           o->path);
        }
    }
    free(ids);
    return rc;
}

/* ---- where a JSON number overflowed ---------------------------------------------------------- */

/* Walks the text up to byte pos (where jansson stopped) keeping the key of each enclosing
 * object member; copies the member under "arrays" (the array's name) and the key inside it. A
 * scan, not a parse: the text before pos parsed, so strings and nesting there are well formed. */
void tsr__json_where(const char *text, size_t len, size_t pos, char *array, size_t asize, char *key,
                     size_t ksize) {
    enum { DEPTH = 64 };
    struct level {
        size_t at, n; /* the current member's key: text[at .. at + n) */
        int obj;
    } st[DEPTH];
    int depth = 0;
    size_t last_at = 0, last_n = 0; /* the last string seen */
    if (asize) array[0] = '\0';
    if (ksize) key[0] = '\0';
    if (pos > len) pos = len;
    for (size_t i = 0; i < pos; i++) {
        char ch = text[i];
        if (ch == '"') {
            size_t s = ++i;
            while (i < pos && text[i] != '"') i += text[i] == '\\' ? 2 : 1;
            last_at = s;
            last_n = (i < pos ? i : pos) - s;
        } else if (ch == '{' || ch == '[') {
            if (depth < DEPTH) st[depth] = (struct level){0, 0, ch == '{'};
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (depth > 0) depth--;
        } else if (ch == ':' && depth > 0 && depth <= DEPTH && st[depth - 1].obj) {
            st[depth - 1].at = last_at;
            st[depth - 1].n = last_n;
        }
    }
    /* depth 1: the top-level object; its member "arrays" holds one object per array. */
    if (depth >= 2 && depth <= DEPTH && st[0].n == 6 && !memcmp(text + st[0].at, "arrays", 6)) {
        snprintf(array, asize, "%.*s", (int)st[1].n, text + st[1].at);
        if (depth >= 3) snprintf(key, ksize, "%.*s", (int)st[2].n, text + st[2].at);
    }
}
