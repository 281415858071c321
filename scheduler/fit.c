/* Admission by memory: a task whose inputs and output together are larger than every connected
 * worker's memory limit can never run (a worker would spill and pause without end, or be killed
 * by the system and have the task placed again), so its job fails up front, naming the array,
 * the task and the sizes. Pure: reads the state, changes nothing (state.c fails the task). */
#include <stdio.h>

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
        if (ts->state != TSR__TS_WAITING && ts->state != TSR__TS_READY &&
            ts->state != TSR__TS_QUEUED)
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
