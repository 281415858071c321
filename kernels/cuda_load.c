/* Which device backends there are (kernels/device.h), and the one place besides the build that
 * tests TSR_HAVE_CUDA. The CUDA backend is a module (libtessera_cuda.so, kernels/cuda/) loaded
 * the first time a GPU worker asks for it: linking the CUDA runtime and cuBLAS into libtessera
 * made every process (`tessera --help` included) take ~0.8 s and ~220 MB to start.
 *
 * Where the module is looked for, first found wins:
 *   $TESSERA_CUDA_MODULE (a path to the file; when set, only there);
 *   beside the library or program that holds this code (a build tree), or in its folder's
 *   tessera/ (an installed libdir);
 *   the build tree it was built in, then the install prefix's libdir/tessera. */
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/device.h"
#include "kernels/kernels_priv.h"
#include "tsr_config.h"

#if TSR_HAVE_CUDA
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

typedef const tsr__devops *(*entry_fn)(void (*)(const tsr_kernel_fn *));

static const tsr__devops *cuda_ops;
static char load_err[512];

static void *try_open(const char *path) {
    if (access(path, R_OK) != 0) return NULL;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) tsr__fmt(load_err, sizeof load_err, "%s", dlerror());
    return h;
}

static void load(void) {
    void *h = NULL;
    const char *env = getenv("TESSERA_CUDA_MODULE");
    Dl_info info;
    if (env && *env) { /* named: that file or nothing */
        if (!(h = try_open(env)) && !load_err[0])
            tsr__fmt(load_err, sizeof load_err, "TESSERA_CUDA_MODULE=%s: no such module", env);
        if (!h) return;
    } else if (dladdr((void *)tsr__devops_cuda, &info) && info.dli_fname) {
        char dir[4096];
        tsr__fmt(dir, sizeof dir, "%s", info.dli_fname);
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = '\0';
            const char *rel[] = {"libtessera_cuda.so", "tessera/libtessera_cuda.so"};
            for (size_t k = 0; !h && k < 2; k++) {
                char path[4200];
                tsr__fmt(path, sizeof path, "%s/%s", dir, rel[k]);
                h = try_open(path);
            }
        }
    }
    if (!h) h = try_open(TSR_CUDA_MODULE_BUILD);
    if (!h) h = try_open(TSR_CUDA_MODULE_INSTALLED);
    if (!h) {
        if (!load_err[0])
            tsr__fmt(load_err, sizeof load_err,
                     "the CUDA module (libtessera_cuda.so) was not found: set TESSERA_CUDA_MODULE");
        return;
    }
    entry_fn entry = (entry_fn)dlsym(h, "tsr_cuda_module_entry");
    if (!entry) {
        tsr__fmt(load_err, sizeof load_err, "libtessera_cuda.so has no entry point");
        return;
    }
    cuda_ops = entry(tsr__kernels_set_gpu);
}

const tsr__devops *tsr__devops_cuda(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, load);
    return cuda_ops;
}

const char *tsr__devops_cuda_error(void) {
    tsr__devops_cuda();
    return load_err;
}
#else
const tsr__devops *tsr__devops_cuda(void) {
    return NULL;
}

const char *tsr__devops_cuda_error(void) {
    return "this build of Tessera has no GPU backend (built without CUDA: meson -Dcuda=enabled "
           "needs nvcc and cuBLAS)";
}
#endif

const tsr__devops *tsr__devops_pick(void) {
    const char *fake = getenv("TESSERA_FAKE_GPU");
    if (fake && strcmp(fake, "1") == 0) return tsr__devops_fake();
    return tsr__devops_cuda();
}
