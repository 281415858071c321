/* Graceful retirement of a worker (PROTOCOL.md, "Retiring a worker"): a worker that sent retire
 * is paused for good, finishes what it was sent, and the chunks it holds that a job still needs
 * are copied to other live workers (replicate/replicated) before it is told to shut down, so
 * that its exit loses nothing and no task runs twice. The task state machine is state.c's: this
 * file only moves a chunk's holder, which state.c then treats as any other. */
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"
#include "wire/msg.h"

static tsr__peer *worker_peer(tsr__server *srv, uint32_t wid) {
    uint32_t id = srv->st.w[wid].peer;
    return id < srv->npeers ? srv->peers[id] : NULL;
}

static void send_shutdown(tsr__server *srv, uint32_t wid) {
    tsr__peer *p = worker_peer(srv, wid);
    if (!p) return;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    tsr__msg_shutdown m = {0};
    tsr__msg_pack_shutdown(&b, &m);
    tsr__peer_send(p, &b);
    msgpack_sbuffer_destroy(&b);
}

static void send_key(tsr__server *srv, uint32_t wid, int free_it, uint32_t job, uint32_t id,
                     const char *addr) {
    tsr__peer *p = worker_peer(srv, wid);
    if (!p) return;
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    if (free_it) {
        tsr__m_key k = {.job = job, .id = id};
        tsr__msg_free m = {.keys = {.n = 1, .v = &k}};
        tsr__msg_pack_free(&b, &m);
    } else {
        tsr__msg_replicate m = {.job = job, .id = id, .addr = tsr__str_of(addr)};
        tsr__msg_pack_replicate(&b, &m);
    }
    tsr__peer_send(p, &b);
    msgpack_sbuffer_destroy(&b);
}

static int takes_chunks(const tsr__sworker *w) {
    return w->alive && !w->retiring;
}

int tsr__retire_busy(const tsr__sched *s) {
    for (uint32_t i = 0; i < s->nw; i++)
        if (s->w[i].alive && s->w[i].retiring == TSR__RETIRING) return 1;
    return 0;
}

/* The next live, not retiring worker after `after` (round robin), or TSR__NONE. */
static uint32_t next_taker(const tsr__sched *s, uint32_t after) {
    for (uint32_t k = 1; k <= s->nw; k++) {
        uint32_t i = (uint32_t)((after + k) % s->nw);
        if (takes_chunks(&s->w[i])) return i;
    }
    return TSR__NONE;
}

/* The chunk's holder becomes `to` (held lists are position-tracked: state.c's list_add and
 * list_remove). The old holder is not told to free it: it is leaving. */
static void move_chunk(tsr__sched *s, tsr__stask *t, tsr__key k, uint32_t to) {
    tsr__sworker *o = &s->w[t->where], *n = &s->w[to];
    uint32_t pos = t->pos;
    o->held.n--;
    if (pos != o->held.n) {
        o->held.v[pos] = o->held.v[o->held.n];
        tsr__key_task(s, o->held.v[pos])->pos = pos;
    }
    o->held_bytes -= t->nbytes;
    if (TSR__GROW(n->held.v, n->held.cap, n->held.n + 1) != 0) abort(); /* as state.c does */
    t->pos = (uint32_t)n->held.n;
    n->held.v[n->held.n++] = k;
    n->held_bytes += t->nbytes;
    t->where = to;
    tsr__sched_job(s, k.job)->retire_moved++;
    o->handed++;
}

void tsr__retire_begin(tsr__peer *p) {
    tsr__server *srv = p->srv;
    tsr__sched *s = &srv->st;
    tsr__sworker *w = &s->w[p->wid];
    if (!w->alive || w->retiring) return;
    w->retiring = TSR__RETIRING;
    tsr__events_add(&srv->events, tsr__now() - srv->started, "worker %s retiring", p->name);
    tsr__log(s->log, TSR_LOG_INFO, "worker %s retiring: %zu queued, %zu running, %zu chunks held",
             w->name, w->backlog.n, w->inflight.n, w->held.n);
    /* Paused for good: nothing new is placed on it and idle workers steal its backlog first. */
    tsr__wstats st = w->st;
    st.paused = 1;
    tsr__sched_worker_stats(s, p->wid, &st);
    if (next_taker(s, p->wid) == TSR__NONE) {
        /* Nobody to hand anything to: it goes now, and what it held is made again when a worker
         * comes, as for a lost worker. */
        tsr__log(s->log, TSR_LOG_INFO, "worker %s retiring with no other worker: shutting it down",
                 w->name);
        w->retiring = TSR__RETIRED;
        send_shutdown(srv, p->wid);
        tsr__retire_gone(srv);
        return;
    }
    tsr__server_kick(srv); /* the next flush moves it on (tsr__retire_pass) */
}

/* Once no retirement is under way, every live job that finished is told where its outputs are
 * (again, for those told before: some moved). */
void tsr__retire_gone(tsr__server *srv) {
    tsr__sched *s = &srv->st;
    if (tsr__retire_busy(s)) return;
    uint64_t rss = 0, hwm = 0;
    tsr__proc_mem(&rss, &hwm);
    msgpack_sbuffer b;
    msgpack_sbuffer_init(&b);
    for (size_t i = 0; i < s->nlive; i++) {
        tsr__sjob *j = s->jobs[s->live[i]];
        if (!j || j->cancelled || !j->finished_sent || j->client >= srv->npeers ||
            !srv->peers[j->client])
            continue;
        tsr__proto_finished(&b, s, j, hwm);
        tsr__peer_send(srv->peers[j->client], &b);
    }
    msgpack_sbuffer_destroy(&b);
}

/* Moves on once the worker has nothing queued or running: a round of replicate for every chunk
 * it holds that is still needed, and once a round is answered with none left, shutdown. A chunk
 * made while a round was out waits for the next round. */
static void retire_check(tsr__server *srv, uint32_t wid) {
    tsr__sched *s = &srv->st;
    tsr__sworker *w = &s->w[wid];
    if (!w->alive || w->retiring != TSR__RETIRING || w->backlog.n || w->inflight.n || w->moving.n)
        return;
    uint32_t to = wid;
    for (size_t i = 0; i < w->held.n; i++) {
        tsr__key k = w->held.v[i];
        tsr__sjob *j = tsr__sched_job(s, k.job);
        if (!j || j->cancelled) continue;
        tsr__stask *t = &j->t[k.task];
        if (t->refs == 0 || (t->flags & TSR__TF_DONATED)) continue;
        to = next_taker(s, to);
        if (to == TSR__NONE) break; /* nobody to take it: it is lost with the worker, as today */
        if (w->moving.n == w->moving.cap) {
            size_t cap = w->moving.cap ? 2 * w->moving.cap : 16;
            tsr__key *v = realloc(w->moving.v, cap * sizeof *v);
            if (!v) break; /* the rest is made again after the worker's deadline */
            w->moving.v = v;
            w->moving.cap = cap;
        }
        w->moving.v[w->moving.n++] = k;
        send_key(srv, to, 0, k.job, k.task, w->addr);
    }
    if (w->moving.n) return;
    w->retiring = TSR__RETIRED;
    tsr__retire_gone(srv); /* the outputs' new holders, before the old one goes */
    tsr__log(s->log, TSR_LOG_INFO, "worker %s retired (%u chunks moved): shutting it down", w->name,
             w->handed);
    tsr__events_add(&srv->events, tsr__now() - srv->started, "worker %s retired: %u chunks moved",
                    w->name, w->handed);
    send_shutdown(srv, wid);
}

/* The worker p now holds (job, id), copied from a retiring worker: it becomes the chunk's holder,
 * unless the chunk was released meanwhile (then p's copy is freed at once). A copy that failed
 * ends the retirement: the worker is let go, and what it still holds is made again by the usual
 * recovery (asking again could fail forever). */
void tsr__retire_replicated(tsr__peer *p, const tsr__msg_replicated *m) {
    tsr__server *srv = p->srv;
    tsr__sched *s = &srv->st;
    uint32_t job = m->job, id = m->id;
    int failed = TSR__MSG_HAS(replicated, m, msg);
    uint32_t from = TSR__NONE;
    for (uint32_t i = 0; i < s->nw && from == TSR__NONE; i++) {
        tsr__keyvec *mv = &s->w[i].moving;
        for (size_t k = 0; k < mv->n; k++) {
            if (mv->v[k].job != job || mv->v[k].task != id) continue;
            mv->v[k] = mv->v[--mv->n];
            from = i;
            break;
        }
    }
    tsr__sjob *j = tsr__sched_job(s, job);
    tsr__stask *t = j && id < j->g.ntasks ? &j->t[id] : NULL;
    /* Whether the chunk is still the leaving worker's to hand over. Its last consumer may have
     * finished while the copy was out: the scheduler then told the holder to free it, and the
     * copy finds it gone. Nothing is lost then, and the retirement goes on. */
    int needed = from != TSR__NONE && t && !j->cancelled && t->state == TSR__TS_MEMORY &&
                 t->where == from && t->refs > 0 && !(t->flags & TSR__TF_DONATED);
    if (failed && !needed) {
        tsr__log(s->log, TSR_LOG_DEBUG,
                 "(%u,%u) was released while worker %s copied it off a retiring worker", job, id,
                 s->w[p->wid].name);
    } else if (failed) {
        char why[200];
        tsr__str_copy(why, sizeof why, m->msg);
        tsr__log(s->log, TSR_LOG_WARN, "worker %s could not copy (%u,%u) off a retiring worker: %s",
                 s->w[p->wid].name, job, id, why);
        if (from != TSR__NONE && s->w[from].alive && s->w[from].retiring == TSR__RETIRING) {
            s->w[from].retiring = TSR__RETIRED;
            send_shutdown(srv, from);
            tsr__retire_gone(srv);
        }
    } else if (from != TSR__NONE && t && !j->cancelled && t->state == TSR__TS_MEMORY &&
               t->where == from && s->w[p->wid].alive) {
        move_chunk(s, t, (tsr__key){job, id}, p->wid);
    } else {
        send_key(srv, p->wid, 1, job, id, NULL);
    }
    tsr__server_kick(srv);
}

void tsr__retire_pass(tsr__server *srv) {
    for (uint32_t i = 0; i < srv->st.nw; i++)
        if (srv->st.w[i].retiring == TSR__RETIRING) retire_check(srv, i);
}
