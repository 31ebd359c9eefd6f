/* SPDX-License-Identifier: Apache-2.0 */
/* Container cgroup statistics and OOM notification, cgroup v1 (this host:
 * v1 controllers with the unified hierarchy beside) and v2. The cgroup is
 * found from /proc/<pid>/cgroup of the task's init, so it works whichever
 * cgroup driver placed it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "berth/error.h"

typedef struct {
    int version; /* 1 or 2 */
    bool has_memory, has_cpu, has_pids;
    uint64_t mem_usage, mem_limit, mem_max_usage, mem_cache, mem_rss;
    uint64_t cpu_usage_ns, cpu_user_ns, cpu_system_ns;
    uint64_t percpu[64]; /* v1 cpuacct.usage_percpu */
    unsigned n_percpu;
    uint64_t pids_current, pids_limit; /* limit 0 = unlimited */
    uint64_t oom_kills;
} shim_cgstats_t;

/** Reads the stats of the cgroup `pid` lives in. */
int shim_cgroup_stats(pid_t pid, shim_cgstats_t *out, berth_error_t **err);

/** Arms an OOM notification for the cgroup of `pid`: returns an fd that
 * polls readable on an OOM event (v1: eventfd on memory.oom_control; v2:
 * inotify on memory.events). *v2 tells which and *events_path (malloc'd) is
 * the counter file; call shim_cgroup_oom_check() when the fd fires. Returns
 * -1 when the memory controller is unavailable. */
int shim_cgroup_oom_watch(pid_t pid, bool *v2, char **events_path, berth_error_t **err);

/** Drains the watch fd; returns true if the cgroup's oom_kill counter
 * (memory.oom_control on v1, memory.events on v2) went past *last. */
bool shim_cgroup_oom_check(int fd, bool v2, const char *events_path, uint64_t *last);
