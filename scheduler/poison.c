/* Tasks that no worker can run, told apart from bad luck. Poison tasks (Dask's allowed-failures):
 * a task that was running on a worker each time one died, allowed_failures times, is taken to be
 * what kills them and fails its job instead of going to the next worker. Admission by memory: a
 * task whose inputs and output together are larger than every connected worker's memory limit
 * can never run (a worker would spill and pause without end, or be killed by the system and have
 * the task placed again), so its job fails up front, naming the array, the task and the sizes.
 * Admission by plugin: a user kernel's task no connected worker can load likewise. state.c fails
 * the tasks; nothing here changes a task's state. */
#include <stdio.h>
#include <stdlib.h>

#include "scheduler/sched.h"

static double mib(uint64_t b) {
    return (double)b / (1024.0 * 1024.0);
}

uint32_t tsr__sched_unfit(const tsr__sched *s, const tsr__sjob *j, char *msg, size_t size) {
    if (s->nalive == 0 || j->cancelled) return TSR__NONE;
    uint64_t most = 0;
    const char *who = "";
    for (size_t k = 0; k < s->nw; k++) {
        const tsr__sworker *w = &s->w[k];
        if (!w->alive) continue;
        if (w->mem_limit == 0) return TSR__NONE; /* a worker without a limit takes anything */
        if (w->mem_limit > most) {
            most = w->mem_limit;
            who = w->name;
        }
    }
    for (uint32_t t = 0; t < j->g.ntasks; t++) {
        const tsr__stask *ts = &j->t[t];
        /* Not started: waiting, ready, queued, or in a window and not written yet (a worker
         * joining places tasks before its limit is known to the state machine). */
        int unsent = ts->state == TSR__TS_RUNNING && !(ts->flags & TSR__TF_SENT);
        if (ts->state != TSR__TS_WAITING && ts->state != TSR__TS_READY &&
            ts->state != TSR__TS_QUEUED && !unsent)
            continue;
        if (ts->flags & TSR__TF_VIRTUAL) continue; /* asked through its consumers */
        uint64_t in = 0;
        for (uint32_t k = j->g.dep_off[t]; k < j->g.dep_off[t + 1]; k++) {
            uint64_t b = j->t[j->g.deps[k]].nbytes;
            in = b > UINT64_MAX - in ? UINT64_MAX : in + b;
        }
        uint64_t need = ts->nbytes > UINT64_MAX - in ? UINT64_MAX : in + ts->nbytes;
        if (need <= most) continue;
        snprintf(msg, size,
                 "needs %.1f MiB in memory at once (inputs %.1f MiB, output %.1f MiB), more than "
                 "any connected worker's memory limit (the largest: %.1f MiB, worker %s); use "
                 "smaller chunks or give workers more memory (--memory-limit)",
                 mib(need), mib(in), mib(ts->nbytes), mib(most), who);
        return t;
    }
    return TSR__NONE;
}

/* Admission by plugin: a map_blocks task whose library no live worker announced (docs/plugins.md)
 * can never be placed. Only tasks not started are asked, as above. */
static int plugin_alive(const tsr__sched *s, const char *lib) {
    for (size_t k = 0; k < s->nw; k++)
        if (s->w[k].alive && tsr__worker_has_plugin(&s->w[k], lib)) return 1;
    return 0;
}

uint32_t tsr__sched_no_plugin(const tsr__sched *s, const tsr__sjob *j, char *msg, size_t size) {
    if (s->nalive == 0 || j->cancelled || !j->g.plugins) return TSR__NONE;
    for (uint32_t t = 0; t < j->g.ntasks; t++) {
        int st = j->t[t].state;
        if (st != TSR__TS_WAITING && st != TSR__TS_READY) continue;
        const char *lib = tsr__task_plugin(j, t);
        if (!lib || plugin_alive(s, lib)) continue;
        snprintf(msg, size,
                 "no connected worker can load the plugin library \"%s\" (start workers with "
                 "--plugin-dir DIR, DIR holding lib%s.so or %s.so)",
                 lib, lib, lib);
        return t;
    }
    return TSR__NONE;
}

/* ---- poison tasks ---------------------------------------------------------------------------- */

/* A task is counted when the worker that died had been sent it (in its in-flight window, the
 * compute message written: Dask's "processing"). A task only queued there, or not yet written,
 * was not on the worker and is not suspected. */
int tsr__sched_count_death(tsr__sched *s, tsr__sjob *j, uint32_t id) {
    if (!(j->t[id].flags & TSR__TF_SENT)) return 0;
    if (!j->deaths && !(j->deaths = calloc(j->g.ntasks, 1))) abort(); /* as state.c's oom() */
    if (j->deaths[id] < UINT8_MAX) j->deaths[id]++;
    return j->deaths[id] >= s->allowed_failures;
}

void tsr__sched_poison_msg(const tsr__sched *s, const tsr__sjob *j, uint32_t id, const char *last,
                           char *msg, size_t size) {
    snprintf(msg, size,
             "the worker running it died %u times (the last: %s); the task is taken to be what "
             "kills them and is not run again (--allowed-failures %u)",
             j->deaths ? (unsigned)j->deaths[id] : 0u, last, s->allowed_failures);
}

uint64_t tsr__sched_largest_limit(const tsr__sched *s) {
    uint64_t most = 0;
    for (size_t k = 0; k < s->nw; k++) {
        if (!s->w[k].alive) continue;
        if (s->w[k].mem_limit == 0) return UINT64_MAX;
        if (s->w[k].mem_limit > most) most = s->w[k].mem_limit;
    }
    return most;
}
