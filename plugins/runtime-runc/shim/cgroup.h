/* SPDX-License-Identifier: Apache-2.0 */
/* Container cgroup statistics, OOM notification and cgroup removal, cgroup
 * v1 (this host: v1 controllers with the unified hierarchy beside) and v2.
 * The cgroup is found from /proc/<pid>/cgroup of the task's init, so it
 * works whichever cgroup driver placed it. The parsers take texts and
 * directories so that tests/unit/test_shim_cgroup.c runs them on fixtures. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "berth/error.h"

typedef struct {
    int version; /* 1 or 2 */
    bool has_memory, has_cpu, has_pids;
    /* mem_limit: v1 as the kernel says (9223372036854771712 = none);
     * v2 "max" is UINT64_MAX, as containerd reports it. */
    uint64_t mem_usage, mem_limit, mem_max_usage, mem_cache, mem_rss;
    uint64_t cpu_usage_ns, cpu_user_ns, cpu_system_ns;
    uint64_t percpu[64]; /* v1 cpuacct.usage_percpu */
    unsigned n_percpu;
    uint64_t pids_current, pids_limit; /* limit 0 = unlimited ("max") */
    uint64_t oom_kills;
} shim_cgstats_t;

/** The directory of a cgroup, from the texts of /proc/<pid>/cgroup and of
 * the reader's /proc/self/mountinfo: `ctrl` is a v1 controller ("memory",
 * "cpuacct", "pids") or NULL for the v2 unified hierarchy ("0::/path"). The
 * mount whose root contains the cgroup's path is used (a mount of a
 * sub-cgroup, as in a container, has a root other than "/"). Returns 0 and
 * writes `out`, or -1: no such hierarchy, not mounted, or the cgroup is
 * outside every mount of it. */
int shim_cgroup_dir_from(const char *proc_cgroup, const char *mountinfo, const char *ctrl,
                         char *out, size_t n);

/** Reads v1 statistics from the cgroup directories of the memory, cpuacct
 * and pids controllers (each may be NULL). Missing files leave their fields
 * 0; returns -1 when not one of memory, cpuacct, pids could be read. */
int shim_cgroup_stats_v1(const char *memory_dir, const char *cpuacct_dir, const char *pids_dir,
                         shim_cgstats_t *out);

/** Reads v2 statistics from a unified cgroup directory (memory.peak exists
 * from kernel 5.19 only: mem_max_usage stays 0 without it). Returns -1
 * when none of memory.current, cpu.stat, pids.current could be read. */
int shim_cgroup_stats_v2(const char *dir, shim_cgstats_t *out);

/** Whether /sys/fs/cgroup is a cgroup2 file system: runc's test for
 * "unified mode", in which it puts containers in v2 cgroups only, even
 * where v1 hierarchies exist in the kernel (and in /proc/<pid>/cgroup). */
bool shim_cgroup_unified_mode(void);

/** Statistics of the cgroup described by the two texts: in unified mode
 * v2; else v1 when the memory, cpuacct or pids controller is on a mounted
 * v1 hierarchy (so v1 wins on a hybrid host), else v2. A hierarchy mounted
 * under a later mount (mountinfo order) is hidden and not used. */
int shim_cgroup_stats_from(const char *proc_cgroup, const char *mountinfo, bool unified,
                           shim_cgstats_t *out, berth_error_t **err);

/** Reads the stats of the cgroup `pid` lives in. */
int shim_cgroup_stats(pid_t pid, shim_cgstats_t *out, berth_error_t **err);

/** Arms an OOM notification for the cgroup of `pid`: returns an fd that
 * polls readable on an OOM event (v1: eventfd on memory.oom_control; v2:
 * inotify on memory.events). *v2 tells which and *events_path (malloc'd) is
 * the counter file; call shim_cgroup_oom_check() when the fd fires. Returns
 * -1 when the memory controller is unavailable. */
int shim_cgroup_oom_watch(pid_t pid, bool *v2, char **events_path, berth_error_t **err);

/** shim_cgroup_oom_watch() for a known cgroup directory. */
int shim_cgroup_oom_watch_dir(const char *dir, bool v2, char **events_path, berth_error_t **err);

/** Drains the watch fd (when >= 0); returns true if the cgroup's oom_kill
 * counter (memory.oom_control on v1, memory.events on v2) went past *last.
 * Never waits: v1 signals the eventfd when the OOM starts, before the
 * kernel has chosen, killed and counted the victim, so the shim calls it
 * again (fd -1) for a while (shim_oom_recheck); v2 notifies memory.events
 * again after the kill. */
bool shim_cgroup_oom_check(int fd, bool v2, const char *events_path, uint64_t *last);

/** The values of the top-level "cgroup_paths" map of runc's state.json (v1:
 * one per controller, several may share a directory; v2 and the unified
 * hierarchy of a hybrid host: key ""). JSON escapes are decoded. Returns
 * how many were written to paths[0..max), or -1 when the map is absent or
 * null, the JSON is malformed, there are more than `max`, or a path is not
 * an absolute, normalized path under /sys/fs/cgroup/. */
int shim_cgroup_state_paths(const char *state_json, char (*paths)[PATH_MAX], int max);

/** Removes the cgroup directory `path` and the child cgroups in it, deepest
 * first (what runc's RemovePath does), never following a symlink nor
 * leaving the path's filesystem. Refuses (-1, EXDEV) a path that is the
 * root of its mount: a hierarchy root is not a container's cgroup. Returns
 * 0, also when `path` is already gone, or -1 with errno (EBUSY: a process
 * is still in it). */
int shim_cgroup_remove(const char *path);
