/* Where tasks go: the choice of worker for a ready task, the per-worker backlog heaps and
 * work stealing. Simple on purpose (most input bytes, then least loaded); the load-aware
 * placement of DESIGN.md replaces tsr__place and nothing else. Pure: no sockets, no time. */
#include <stdio.h>
#include <stdlib.h>

#include "scheduler/sched.h"

/* ---- backlog: a binary min-heap on (job, task), so older jobs and lower ids go first ---- */

static int key_less(tsr__key a, tsr__key b) {
    return a.job != b.job ? a.job < b.job : a.task < b.task;
}

static void heap_set(tsr__sched *s, tsr__keyvec *h, size_t i, tsr__key k) {
    h->v[i] = k;
    tsr__key_task(s, k)->pos = (uint32_t)i;
}

static void sift_up(tsr__sched *s, tsr__keyvec *h, size_t i) {
    tsr__key k = h->v[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!key_less(k, h->v[p])) break;
        heap_set(s, h, i, h->v[p]);
        i = p;
    }
    heap_set(s, h, i, k);
}

static void sift_down(tsr__sched *s, tsr__keyvec *h, size_t i) {
    tsr__key k = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && key_less(h->v[c + 1], h->v[c])) c++;
        if (!key_less(h->v[c], k)) break;
        heap_set(s, h, i, h->v[c]);
        i = c;
    }
    heap_set(s, h, i, k);
}

void tsr__backlog_push(tsr__sched *s, uint32_t wid, tsr__key k) {
    tsr__keyvec *h = &s->w[wid].backlog;
    if (TSR__GROW(h->v, h->cap, h->n + 1) != 0) {
        fputs("tessera-scheduler: error: out of memory\n", stderr);
        abort();
    }
    h->v[h->n++] = k;
    sift_up(s, h, h->n - 1);
    s->backlog_total++;
}

void tsr__backlog_remove(tsr__sched *s, uint32_t wid, uint32_t pos) {
    tsr__keyvec *h = &s->w[wid].backlog;
    s->backlog_total--;
    h->n--;
    if (pos == h->n) return;
    h->v[pos] = h->v[h->n];
    tsr__key_task(s, h->v[pos])->pos = pos;
    if (pos > 0 && key_less(h->v[pos], h->v[(pos - 1) / 2]))
        sift_up(s, h, pos);
    else
        sift_down(s, h, pos);
}

tsr__key tsr__backlog_pop(tsr__sched *s, uint32_t wid) {
    tsr__key top = s->w[wid].backlog.v[0];
    tsr__backlog_remove(s, wid, 0);
    return top;
}

/* ---- placement ---- */

/* Is a less loaded than b? Loads are (in-flight + backlog) / threads, compared exactly. */
static int less_loaded(const tsr__sworker *a, const tsr__sworker *b) {
    uint64_t la = (uint64_t)(a->inflight.n + a->backlog.n) * b->threads;
    uint64_t lb = (uint64_t)(b->inflight.n + b->backlog.n) * a->threads;
    return la < lb;
}

/* The least loaded live worker; ties go round-robin from the cursor. */
static uint32_t least_loaded(tsr__sched *s) {
    uint32_t best = TSR__NONE;
    for (size_t n = 0; n < s->nw; n++) {
        uint32_t wid = (uint32_t)((s->rr + n) % s->nw);
        if (!s->w[wid].alive) continue;
        if (best == TSR__NONE || less_loaded(&s->w[wid], &s->w[best])) best = wid;
    }
    if (best != TSR__NONE) s->rr = (best + 1) % (uint32_t)s->nw;
    return best;
}

uint32_t tsr__place(tsr__sched *s, const tsr__sjob *j, uint32_t task) {
    if (s->nalive == 0) return TSR__NONE;
    uint32_t lo = j->g.dep_off[task], hi = j->g.dep_off[task + 1];
    /* Score each holder by the bytes of inputs it already has (score[] is all zero between
     * calls: it is reset below from the same inputs). */
    uint32_t best = TSR__NONE;
    for (uint32_t k = lo; k < hi; k++) {
        const tsr__stask *in = &j->t[j->g.deps[k]];
        if (in->state != TSR__TS_MEMORY || !s->w[in->where].alive) continue;
        s->score[in->where] += in->nbytes;
    }
    for (uint32_t k = lo; k < hi; k++) {
        const tsr__stask *in = &j->t[j->g.deps[k]];
        if (in->state != TSR__TS_MEMORY || !s->w[in->where].alive) continue;
        uint32_t h = in->where;
        if (best == TSR__NONE || s->score[h] > s->score[best] ||
            (s->score[h] == s->score[best] && less_loaded(&s->w[h], &s->w[best])))
            best = h;
    }
    for (uint32_t k = lo; k < hi; k++) {
        const tsr__stask *in = &j->t[j->g.deps[k]];
        if (in->state == TSR__TS_MEMORY) s->score[in->where] = 0;
    }
    return best != TSR__NONE ? best : least_loaded(s);
}

/* ---- stealing ---- */

uint32_t tsr__steal(tsr__sched *s, uint32_t thief) {
    tsr__sworker *t = &s->w[thief];
    if (t->inflight.n + t->backlog.n >= t->cap) return 0;
    uint32_t victim = TSR__NONE;
    for (uint32_t wid = 0; wid < s->nw; wid++) {
        if (wid == thief || !s->w[wid].alive || s->w[wid].backlog.n == 0) continue;
        if (victim == TSR__NONE || s->w[wid].backlog.n > s->w[victim].backlog.n) victim = wid;
    }
    if (victim == TSR__NONE) return 0;
    /* Only backlog entries move: they were never sent, so no worker is computing them. Take
     * up to what fills the thief's window, and at most half the victim's backlog (rounded up)
     * so two workers do not trade the same tasks back and forth. */
    size_t room = t->cap - (t->inflight.n + t->backlog.n);
    size_t half = (s->w[victim].backlog.n + 1) / 2;
    size_t n = room < half ? room : half;
    for (size_t i = 0; i < n; i++) {
        tsr__key k = tsr__backlog_pop(s, victim);
        tsr__key_task(s, k)->where = thief;
        tsr__backlog_push(s, thief, k);
    }
    tsr__log(s->log, TSR_LOG_DEBUG, "worker %s steals %zu tasks from %s", t->name, n,
             s->w[victim].name);
    return (uint32_t)n;
}
