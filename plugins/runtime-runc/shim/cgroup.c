/* SPDX-License-Identifier: Apache-2.0 */
/* cgroup v1 / v2 statistics and OOM watches (see cgroup.h). Paths come from
 * /proc/<pid>/cgroup and /proc/self/mountinfo; files are small and read with
 * fixed buffers (this runs in the shim, which stays small). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "cgroup.h"

/* Reads a small file into buf (NUL-terminated). */
static int read_small(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0)
        return -1;
    buf[r] = 0;
    return 0;
}

static int read_u64(const char *dir, const char *file, uint64_t *out)
{
    char p[PATH_MAX], buf[64];
    snprintf(p, sizeof(p), "%s/%s", dir, file);
    if (read_small(p, buf, sizeof(buf)) < 0)
        return -1;
    if (strncmp(buf, "max", 3) == 0) {
        *out = 0;
        return 0;
    }
    *out = strtoull(buf, NULL, 10);
    return 0;
}

/* Finds "key value" in a flat-keyed file (memory.stat, cpu.stat). */
static int read_key(const char *dir, const char *file, const char *key, uint64_t *out)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", dir, file);
    FILE *f = fopen(p, "re");
    if (!f)
        return -1;
    char line[256];
    size_t kl = strlen(key);
    int r = -1;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
            *out = strtoull(line + kl + 1, NULL, 10);
            r = 0;
            break;
        }
    }
    fclose(f);
    return r;
}

/* Path of the cgroup for a v1 controller ("memory") or v2 (ctrl NULL). */
static int cg_dir(pid_t pid, const char *ctrl, char *out, size_t n)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/cgroup", (int)pid);
    FILE *f = fopen(p, "re");
    if (!f)
        return -1;
    char line[1024], rel[PATH_MAX] = "";
    bool found = false;
    while (!found && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = 0;
        *c2 = 0;
        const char *ctrls = c1 + 1;
        if (!ctrl) {
            if (strcmp(line, "0") == 0 && ctrls[0] == 0) {
                snprintf(rel, sizeof(rel), "%s", c2 + 1);
                found = true;
            }
            continue;
        }
        char tmp[256];
        snprintf(tmp, sizeof(tmp), "%s", ctrls);
        char *save = NULL;
        for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (strcmp(t, ctrl) == 0) {
                snprintf(rel, sizeof(rel), "%s", c2 + 1);
                found = true;
            }
    }
    fclose(f);
    if (!found)
        return -1;
    /* The mount point of that hierarchy. */
    f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -1;
    int r = -1;
    while (fgets(line, sizeof(line), f)) {
        char *dash = strstr(line, " - ");
        if (!dash)
            continue;
        char fstype[32], src[64], opts[512];
        if (sscanf(dash + 3, "%31s %63s %511s", fstype, src, opts) != 3)
            continue;
        bool match = false;
        if (!ctrl) {
            match = strcmp(fstype, "cgroup2") == 0;
        } else if (strcmp(fstype, "cgroup") == 0) {
            char *save = NULL;
            for (char *t = strtok_r(opts, ",", &save); t; t = strtok_r(NULL, ",", &save))
                match |= strcmp(t, ctrl) == 0;
        }
        if (!match)
            continue;
        char root[PATH_MAX], mnt[PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", root, mnt) != 2)
            continue;
        const char *suffix = rel;
        size_t rl = strlen(root);
        if (strcmp(root, "/") != 0 && strncmp(rel, root, rl) == 0)
            suffix = rel + rl;
        snprintf(out, n, "%s%s", mnt, suffix);
        r = 0;
        break;
    }
    fclose(f);
    return r;
}

int shim_cgroup_stats(pid_t pid, shim_cgstats_t *s, berth_error_t **err)
{
    memset(s, 0, sizeof(*s));
    char dir[PATH_MAX];
    if (cg_dir(pid, "memory", dir, sizeof(dir)) == 0) {
        s->version = 1;
        s->has_memory = read_u64(dir, "memory.usage_in_bytes", &s->mem_usage) == 0;
        read_u64(dir, "memory.limit_in_bytes", &s->mem_limit);
        read_u64(dir, "memory.max_usage_in_bytes", &s->mem_max_usage);
        read_key(dir, "memory.stat", "cache", &s->mem_cache);
        read_key(dir, "memory.stat", "rss", &s->mem_rss);
        uint64_t oom = 0;
        char p[PATH_MAX + 32];
        snprintf(p, sizeof(p), "%s/memory.oom_control", dir);
        if (read_key(dir, "memory.oom_control", "oom_kill", &oom) == 0)
            s->oom_kills = oom;
        if (cg_dir(pid, "cpuacct", dir, sizeof(dir)) == 0) {
            s->has_cpu = read_u64(dir, "cpuacct.usage", &s->cpu_usage_ns) == 0;
            uint64_t u = 0, sy = 0;
            long hz = sysconf(_SC_CLK_TCK);
            if (hz <= 0)
                hz = 100;
            if (read_key(dir, "cpuacct.stat", "user", &u) == 0)
                s->cpu_user_ns = u * (1000000000ull / (uint64_t)hz);
            if (read_key(dir, "cpuacct.stat", "system", &sy) == 0)
                s->cpu_system_ns = sy * (1000000000ull / (uint64_t)hz);
            char pp[PATH_MAX + 32], buf[2048];
            snprintf(pp, sizeof(pp), "%s/cpuacct.usage_percpu", dir);
            if (read_small(pp, buf, sizeof(buf)) == 0) {
                char *q = buf, *end;
                while (s->n_percpu < 64) {
                    uint64_t v = strtoull(q, &end, 10);
                    if (end == q)
                        break;
                    s->percpu[s->n_percpu++] = v;
                    q = end;
                }
            }
        }
        if (cg_dir(pid, "pids", dir, sizeof(dir)) == 0) {
            s->has_pids = read_u64(dir, "pids.current", &s->pids_current) == 0;
            read_u64(dir, "pids.max", &s->pids_limit);
        }
        return 0;
    }
    if (cg_dir(pid, NULL, dir, sizeof(dir)) == 0) {
        s->version = 2;
        s->has_memory = read_u64(dir, "memory.current", &s->mem_usage) == 0;
        read_u64(dir, "memory.max", &s->mem_limit);
        read_u64(dir, "memory.peak", &s->mem_max_usage);
        read_key(dir, "memory.stat", "file", &s->mem_cache);
        read_key(dir, "memory.stat", "anon", &s->mem_rss);
        read_key(dir, "memory.events", "oom_kill", &s->oom_kills);
        uint64_t us = 0;
        if (read_key(dir, "cpu.stat", "usage_usec", &us) == 0) {
            s->has_cpu = true;
            s->cpu_usage_ns = us * 1000;
        }
        if (read_key(dir, "cpu.stat", "user_usec", &us) == 0)
            s->cpu_user_ns = us * 1000;
        if (read_key(dir, "cpu.stat", "system_usec", &us) == 0)
            s->cpu_system_ns = us * 1000;
        s->has_pids = read_u64(dir, "pids.current", &s->pids_current) == 0;
        read_u64(dir, "pids.max", &s->pids_limit);
        return 0;
    }
    return berth_error_set(err, BERTH_E_NOT_FOUND, "no cgroup found for pid %d", (int)pid);
}

int shim_cgroup_oom_watch(pid_t pid, bool *v2, char **events_path, berth_error_t **err)
{
    char dir[PATH_MAX], p[PATH_MAX + 32];
    *events_path = NULL;
    if (cg_dir(pid, "memory", dir, sizeof(dir)) == 0) {
        *v2 = false;
        snprintf(p, sizeof(p), "%s/memory.oom_control", dir);
        int ofd = open(p, O_RDONLY | O_CLOEXEC);
        if (ofd < 0)
            return berth_error_errno(err, errno, "open %s", p);
        int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (efd < 0) {
            int e = errno;
            close(ofd);
            return berth_error_errno(err, e, "eventfd");
        }
        snprintf(p, sizeof(p), "%s/cgroup.event_control", dir);
        int cfd = open(p, O_WRONLY | O_CLOEXEC);
        char line[32];
        int n = snprintf(line, sizeof(line), "%d %d", efd, ofd);
        int ok = cfd >= 0 && write(cfd, line, (size_t)n) == n;
        int e = errno;
        if (cfd >= 0)
            close(cfd);
        /* The kernel keeps its own reference to oom_control. */
        close(ofd);
        if (!ok) {
            close(efd);
            return berth_error_errno(err, e, "register an OOM event in %s", dir);
        }
        /* The eventfd also fires when the cgroup goes away: the oom_kill
         * counter in oom_control tells a real OOM kill apart. */
        snprintf(p, sizeof(p), "%s/memory.oom_control", dir);
        *events_path = strdup(p);
        return efd;
    }
    if (cg_dir(pid, NULL, dir, sizeof(dir)) == 0) {
        *v2 = true;
        snprintf(p, sizeof(p), "%s/memory.events", dir);
        int ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (ifd < 0)
            return berth_error_errno(err, errno, "inotify_init1");
        if (inotify_add_watch(ifd, p, IN_MODIFY) < 0) {
            int e = errno;
            close(ifd);
            return berth_error_errno(err, e, "watch %s", p);
        }
        *events_path = strdup(p);
        return ifd;
    }
    return berth_error_set(err, BERTH_E_NOT_FOUND, "no memory cgroup for pid %d", (int)pid);
}

bool shim_cgroup_oom_check(int fd, bool v2, const char *events_path, uint64_t *last)
{
    char buf[4096];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    (void)v2;
    if (!events_path)
        return false;
    char data[1024];
    if (read_small(events_path, data, sizeof(data)) < 0)
        return false;
    char *k = strstr(data, "oom_kill ");
    if (!k)
        return false;
    uint64_t v = strtoull(k + 9, NULL, 10);
    bool fired = v > *last;
    *last = v;
    return fired;
}
