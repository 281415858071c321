/* MAP_BLOCKS: a user kernel (include/tessera/plugin.h) applied to one output block, and the rules
 * for naming one ("LIBRARY:SYMBOL"), shared by the client's checks and the worker's loader. The
 * kernel never looks a plugin up: it calls the function the worker resolved into the descriptor
 * (tsr_kdesc.plugin), so the kernel table stays free of global state and of file access. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/kernels_priv.h"

static int lib_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '+' || ch == '.';
}

static int sym_char(char ch, int first) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
           (!first && ch >= '0' && ch <= '9');
}

int tsr__plugin_parse_name(const char *spec, char *lib, size_t libsize, char *sym, size_t symsize,
                           char *err, size_t errlen) {
    if (errlen) err[0] = '\0';
    if (!spec || !spec[0]) {
        tsr__fmt(err, errlen, "no kernel named (expected \"LIBRARY:SYMBOL\")");
        return TSR_EINVALID;
    }
    const char *colon = strchr(spec, ':');
    if (!colon) {
        tsr__fmt(err, errlen, "kernel \"%.80s\" is not \"LIBRARY:SYMBOL\"", spec);
        return TSR_EINVALID;
    }
    size_t nl = (size_t)(colon - spec), ns = strlen(colon + 1);
    if (nl == 0 || nl >= TSR__PLUGIN_NAME_MAX || nl >= libsize) {
        tsr__fmt(err, errlen, "kernel \"%.80s\": the library name must have 1 to %d characters",
                 spec, TSR__PLUGIN_NAME_MAX - 1);
        return TSR_EINVALID;
    }
    /* A bare name: workers look for it only in their own plugin directories, so nothing a
     * client sends may walk out of them (no '/', no "..", no leading '.'). */
    int bad = spec[0] == '.';
    for (size_t k = 0; k < nl && !bad; k++) bad = !lib_char(spec[k]);
    for (size_t k = 0; k + 1 < nl && !bad; k++) bad = spec[k] == '.' && spec[k + 1] == '.';
    if (bad) {
        tsr__fmt(err, errlen,
                 "kernel \"%.80s\": the library must be a bare name (letters, digits, '_', '-', "
                 "'+', '.'; no '/', no \"..\"), found in the workers' --plugin-dir directories",
                 spec);
        return TSR_EINVALID;
    }
    bad = ns == 0 || ns >= TSR__PLUGIN_NAME_MAX || ns >= symsize;
    for (size_t k = 0; k < ns && !bad; k++) bad = !sym_char(colon[1 + k], k == 0);
    if (bad) {
        tsr__fmt(err, errlen,
                 "kernel \"%.80s\": the symbol must be a C identifier of 1 to %d "
                 "characters",
                 spec, TSR__PLUGIN_NAME_MAX - 1);
        return TSR_EINVALID;
    }
    memcpy(lib, spec, nl);
    lib[nl] = '\0';
    memcpy(sym, colon + 1, ns + 1);
    return 0;
}

static void fill_block(tsr_plugin_block *b, void *data, int dtype, int ndim, const int64_t *shape) {
    memset(b, 0, sizeof *b);
    b->data = data;
    b->dtype = dtype;
    b->ndim = ndim;
    for (int a = 0; a < ndim; a++) b->shape[a] = shape[a];
    tsr__shape_strides(ndim, shape, b->strides);
}

int tsr__k_map_blocks(const tsr_kdesc *d, const tsr_chunkview *in, int nin, tsr_chunkview *out,
                      char *err, size_t errlen) {
    if (!d->plugin) {
        tsr__fmt(err, errlen, "map_blocks kernel: %s was not resolved to a plugin function",
                 d->s ? d->s : "(no kernel)");
        return TSR_EUNSUPPORTED;
    }
    tsr_plugin_block small[8], *blocks = small, ob;
    if ((size_t)nin > TSR__ARRAY_LEN(small) && !(blocks = malloc((size_t)nin * sizeof *blocks))) {
        tsr__fmt(err, errlen, "no memory for %d input blocks", nin);
        return -ENOMEM;
    }
    for (int k = 0; k < nin; k++)
        fill_block(&blocks[k], in[k].data, in[k].dtype, in[k].ndim, in[k].shape);
    fill_block(&ob, out->data, out->dtype, out->ndim, out->shape);
    int nd = d->ndim;
    tsr_plugin_info info = {
        .abi = TSR_PLUGIN_ABI,
        .ndim = nd,
        .gshape = d->i,
        .block_index = d->i + nd,
        .offset = d->i + 2 * nd,
        .scalars = d->nf ? d->f : NULL,
        .nscalars = (int32_t)d->nf,
        .kernel = d->s,
    };
    char msg[256];
    msg[0] = '\0';
    int rc = d->plugin(blocks, nin, &ob, &info, msg, sizeof msg);
    if (blocks != small) free(blocks);
    if (rc == 0) return 0;
    msg[sizeof msg - 1] = '\0';
    tsr__fmt(err, errlen, "plugin kernel %s failed (returned %d): %s", d->s, rc,
             msg[0] ? msg : "no message");
    return TSR_ECOMPUTE;
}
