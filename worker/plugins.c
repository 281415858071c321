/* Plugins (docs/plugins.md): the user kernels a worker may run, from the directories it was
 * started with (--plugin-dir) and nowhere else. A task names a kernel "LIBRARY:SYMBOL" where
 * LIBRARY is a bare name (tsr__plugin_parse_name refuses '/', "..", a leading '.'), looked up as
 * DIR/libLIBRARY.so or DIR/LIBRARY.so, so nothing a client sends can make the worker open a file
 * elsewhere. A library is opened on first use with RTLD_NOW | RTLD_LOCAL, refused unless it
 * declares this worker's plugin ABI, and kept open until the worker is freed; functions found are
 * cached. Executors resolve on their own threads, under plugins.mu. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/kernels.h"
#include "worker/worker.h"

/* The library name a directory entry provides ("libfoo.so" and "foo.so" both give "foo"), or 0
 * when it is not a plugin file or its name could not be named by a task. */
static int entry_name(const char *file, char *name, size_t size) {
    size_t n = strlen(file);
    if (n <= 3 || strcmp(file + n - 3, ".so") != 0) return 0;
    const char *p = file;
    n -= 3;
    if (n > 3 && strncmp(file, "lib", 3) == 0) {
        p += 3;
        n -= 3;
    }
    char spec[TSR__PLUGIN_NAME_MAX + 4], lib[TSR__PLUGIN_NAME_MAX], sym[4], err[8];
    if (n >= TSR__PLUGIN_NAME_MAX) return 0;
    snprintf(spec, sizeof spec, "%.*s:f", (int)n, p);
    if (tsr__plugin_parse_name(spec, lib, sizeof lib, sym, sizeof sym, err, sizeof err)) return 0;
    snprintf(name, size, "%s", lib);
    return 1;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((const char *)a, (const char *)b);
}

/* Adds the plugin libraries of directory dir to the names, once each. */
static int scan_dir(tsr__worker *w, const char *dir) {
    tsr__plugins *P = &w->plugins;
    DIR *dp = opendir(dir);
    if (!dp) {
        tsr__log(&w->log, TSR_LOG_ERROR, "plugin directory %s: %s", dir, strerror(errno));
        return TSR_EINVALID;
    }
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        char name[64];
        if (!entry_name(e->d_name, name, sizeof name)) continue;
        int seen = 0;
        for (int k = 0; k < P->nnames && !seen; k++) seen = strcmp(P->names[k], name) == 0;
        if (seen) continue;
        char(*grown)[64] = realloc(P->names, ((size_t)P->nnames + 1) * sizeof *grown);
        if (!grown) {
            closedir(dp);
            return -ENOMEM;
        }
        P->names = grown;
        snprintf(P->names[P->nnames++], sizeof *P->names, "%s", name);
    }
    closedir(dp);
    return 0;
}

int tsr__plugins_init(tsr__worker *w) {
    const tsr_worker_options *o = w->opts;
    tsr__plugins *P = &w->plugins;
    if (pthread_mutex_init(&P->mu, NULL) != 0) return -ENOMEM;
    P->mu_ok = 1;
    if (o->n_plugin_dirs < 0 || (o->n_plugin_dirs > 0 && !o->plugin_dirs)) {
        tsr__log(&w->log, TSR_LOG_ERROR, "plugin directories: invalid list");
        return TSR_EINVALID;
    }
    for (int k = 0; k < o->n_plugin_dirs; k++) {
        const char *dir = o->plugin_dirs[k];
        if (!dir || !dir[0]) {
            tsr__log(&w->log, TSR_LOG_ERROR, "plugin directory %d is empty", k);
            return TSR_EINVALID;
        }
        char *real = realpath(dir, NULL);
        struct stat st;
        if (!real || stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
            tsr__log(&w->log, TSR_LOG_ERROR, "plugin directory %s: %s", dir,
                     real ? "not a directory" : strerror(errno));
            free(real);
            return TSR_EINVALID;
        }
        /* Whoever can write here can run code in this worker (docs/security.md). */
        if (st.st_mode & S_IWOTH)
            tsr__log(&w->log, TSR_LOG_WARN,
                     "plugin directory %s is writable by every user: any of them can make this "
                     "worker run their code",
                     real);
        char **d = realloc(P->dirs, ((size_t)P->ndirs + 1) * sizeof *d);
        if (!d) {
            free(real);
            return -ENOMEM;
        }
        P->dirs = d;
        P->dirs[P->ndirs++] = real;
        int rc = scan_dir(w, real);
        if (rc) return rc;
    }
    if (P->nnames > 1) qsort(P->names, (size_t)P->nnames, sizeof *P->names, cmp_name);
    for (int k = 0; k < P->nnames; k++)
        tsr__log(&w->log, TSR_LOG_INFO, "plugin library %s", P->names[k]);
    return 0;
}

void tsr__plugins_free(tsr__worker *w) {
    tsr__plugins *P = &w->plugins;
    for (size_t k = 0; k < P->nlibs; k++) dlclose(P->libs[k].handle);
    for (int k = 0; k < P->ndirs; k++) free(P->dirs[k]);
    free(P->dirs);
    free(P->names);
    free(P->libs);
    free(P->syms);
    if (P->mu_ok) pthread_mutex_destroy(&P->mu);
    memset(P, 0, sizeof *P);
}

/* Opens library lib from the first directory that has it, and checks its ABI. Under mu. */
static int open_lib(tsr__worker *w, const char *lib, void **handle, char *msg, size_t msglen) {
    tsr__plugins *P = &w->plugins;
    for (int k = 0; k < P->ndirs; k++) {
        static const char *const forms[] = {"%s/lib%s.so", "%s/%s.so"};
        for (size_t f = 0; f < TSR__ARRAY_LEN(forms); f++) {
            char path[PATH_MAX];
            struct stat st;
            if (snprintf(path, sizeof path, forms[f], P->dirs[k], lib) >= (int)sizeof path)
                continue;
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
            void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (!h) {
                const char *why = dlerror();
                snprintf(msg, msglen, "plugin library %s: %s", path, why ? why : "cannot open");
                return TSR_EINVALID;
            }
            const int32_t *abi = dlsym(h, TSR_PLUGIN_ABI_SYMBOL);
            if (!abi || *abi != TSR_PLUGIN_ABI) {
                if (abi)
                    snprintf(msg, msglen,
                             "plugin library %s was built for plugin ABI %d; this worker runs "
                             "ABI %d (rebuild it against this Tessera's plugin.h)",
                             path, (int)*abi, TSR_PLUGIN_ABI);
                else
                    snprintf(msg, msglen,
                             "%s is not a Tessera plugin: it has no %s symbol (write "
                             "TSR_PLUGIN_DECLARE(); in one of its sources, tessera/plugin.h)",
                             path, TSR_PLUGIN_ABI_SYMBOL);
                dlclose(h);
                return TSR_EINVALID;
            }
            *handle = h;
            return 0;
        }
    }
    snprintf(msg, msglen,
             "plugin library \"%s\" is not in this worker's plugin directories (%d; start it with "
             "--plugin-dir DIR, DIR holding lib%s.so or %s.so)",
             lib, P->ndirs, lib, lib);
    return TSR_EINVALID;
}

static int resolve_locked(tsr__worker *w, const char *spec, tsr_plugin_fn *fn, char *msg,
                          size_t msglen) {
    tsr__plugins *P = &w->plugins;
    for (size_t k = 0; k < P->nsyms; k++)
        if (strcmp(P->syms[k].spec, spec) == 0) {
            *fn = P->syms[k].fn;
            return 0;
        }
    char lib[TSR__PLUGIN_NAME_MAX], sym[TSR__PLUGIN_NAME_MAX];
    int rc = tsr__plugin_parse_name(spec, lib, sizeof lib, sym, sizeof sym, msg, msglen);
    if (rc) return rc;
    void *h = NULL;
    for (size_t k = 0; k < P->nlibs && !h; k++)
        if (strcmp(P->libs[k].name, lib) == 0) h = P->libs[k].handle;
    if (!h) {
        if (TSR__GROW(P->libs, P->libs_cap, P->nlibs + 1) != 0) return -ENOMEM;
        if ((rc = open_lib(w, lib, &h, msg, msglen)) != 0) return rc;
        snprintf(P->libs[P->nlibs].name, sizeof P->libs[P->nlibs].name, "%s", lib);
        P->libs[P->nlibs++].handle = h;
    }
    /* A function pointer from dlsym's void *: POSIX guarantees the conversion. */
    void *p = dlsym(h, sym);
    if (!p) {
        snprintf(msg, msglen, "plugin library %s has no function %s", lib, sym);
        return TSR_EINVALID;
    }
    if (TSR__GROW(P->syms, P->syms_cap, P->nsyms + 1) != 0) return -ENOMEM;
    tsr__plugin_sym *s = &P->syms[P->nsyms++];
    snprintf(s->spec, sizeof s->spec, "%s", spec);
    memcpy(&s->fn, &p, sizeof s->fn);
    *fn = s->fn;
    return 0;
}

int tsr__plugins_resolve(tsr__worker *w, const char *spec, tsr_plugin_fn *fn, char *msg,
                         size_t msglen) {
    *fn = NULL;
    if (!spec) {
        snprintf(msg, msglen, "map_blocks task without a kernel name");
        return TSR_EINVALID;
    }
    pthread_mutex_lock(&w->plugins.mu);
    int rc = resolve_locked(w, spec, fn, msg, msglen);
    pthread_mutex_unlock(&w->plugins.mu);
    return rc;
}
