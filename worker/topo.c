/* Where executor threads run: parsing the worker's cpu set with hwloc and choosing one core
 * per executor. Pure functions of the topology; binding itself happens in the thread (exec.c). */
#include "worker/worker.h"

int tsr__worker_cpuset(hwloc_topology_t topo, const char *cpus, hwloc_bitmap_t set) {
    hwloc_const_bitmap_t allowed = hwloc_topology_get_allowed_cpuset(topo);
    if (cpus) {
        if (hwloc_bitmap_list_sscanf(set, cpus) < 0) return TSR_EINVALID;
    } else if (hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_THREAD) < 0 || hwloc_bitmap_iszero(set)) {
        /* The calling thread's affinity is what taskset or a parent's pinning left us; where
         * it cannot be read, every allowed PU will do. */
        hwloc_bitmap_copy(set, allowed);
    }
    hwloc_bitmap_and(set, set, allowed);
    return hwloc_bitmap_iszero(set) ? TSR_EINVALID : 0;
}

int tsr__worker_pick_core(hwloc_topology_t topo, hwloc_const_bitmap_t set, int k,
                          hwloc_bitmap_t out) {
    if (k < 0) return TSR_EINVALID;
    hwloc_obj_type_t type =
        hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
    int nobj = hwloc_get_nbobjs_by_type(topo, type);
    int n = 0;
    for (int i = 0; i < nobj; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(topo, type, (unsigned)i);
        if (o && o->cpuset && hwloc_bitmap_intersects(o->cpuset, set)) n++;
    }
    if (n == 0) return TSR_EINVALID;
    int want = k % n;
    for (int i = 0; i < nobj; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(topo, type, (unsigned)i);
        if (!o || !o->cpuset || !hwloc_bitmap_intersects(o->cpuset, set)) continue;
        if (want-- == 0) {
            /* Only the PUs of the core the user gave us: with cpus "0" on an SMT machine the
             * thread must not spill onto the core's sibling. */
            hwloc_bitmap_and(out, o->cpuset, set);
            return 0;
        }
    }
    return TSR_EINVALID; /* not reached */
}
