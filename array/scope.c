/* Scopes: auto-release of the handles made between tsr_scope_begin and tsr_scope_end on one
 * client, so that a long expression needs no tsr_array_free per intermediate. The client keeps
 * one list of scoped handles with a mark where each open scope starts; a handle freed or kept
 * meanwhile leaves a NULL in its slot (tsr__scope_forget), so the list never points at freed
 * memory. Must not talk to a cluster. */
#include <stdlib.h>

#include "array/array.h"
#include "array/client.h"

int tsr_scope_begin(tsr_client *c) {
    if (!c) return tsr__fail(NULL, TSR_EINVALID, "tsr_scope_begin: client is NULL");
    if (TSR__GROW(c->marks, c->marks_cap, c->nmarks + 1) < 0)
        return tsr__fail(c, -ENOMEM, "out of memory");
    c->marks[c->nmarks++] = c->nscoped;
    return 0;
}

void tsr__scope_add(tsr_array *a) {
    tsr_client *c = a->client;
    if (!c || c->nmarks == 0) return;
    /* Without memory for the slot the handle is simply not scoped: the caller's to free. */
    if (TSR__GROW(c->scoped, c->scoped_cap, c->nscoped + 1) < 0) return;
    a->scope_slot = (int64_t)c->nscoped;
    c->scoped[c->nscoped++] = a;
}

void tsr__scope_forget(tsr_array *a) {
    if (a->scope_slot < 0) return;
    if (a->client && (size_t)a->scope_slot < a->client->nscoped &&
        a->client->scoped[a->scope_slot] == a)
        a->client->scoped[a->scope_slot] = NULL;
    a->scope_slot = -1;
}

void tsr_scope_keep(tsr_array *a) {
    if (a) tsr__scope_forget(a);
}

int tsr_scope_end(tsr_client *c) {
    if (!c) return tsr__fail(NULL, TSR_EINVALID, "tsr_scope_end: client is NULL");
    if (c->nmarks == 0)
        return tsr__fail(c, TSR_EINVALID, "tsr_scope_end: no scope is open on this client");
    size_t mark = c->marks[--c->nmarks];
    /* Newest first. A handle's slot is cleared before it is freed; freeing it frees only
     * arrays whose handles are gone already, whose slots are NULL. */
    while (c->nscoped > mark) {
        tsr_array *a = c->scoped[--c->nscoped];
        if (!a) continue;
        a->scope_slot = -1;
        tsr_array_free(a);
    }
    return 0;
}

void tsr__scope_drop_all(tsr_client *c) {
    for (size_t k = 0; k < c->nscoped; k++)
        if (c->scoped[k]) c->scoped[k]->scope_slot = -1;
    free(c->scoped);
    free(c->marks);
    c->scoped = NULL;
    c->marks = NULL;
    c->nscoped = c->scoped_cap = c->nmarks = c->marks_cap = 0;
}
