/* SPDX-License-Identifier: Apache-2.0 */
/* cgroup v1 / v2 statistics, OOM watches and removal (see cgroup.h). Paths
 * come from /proc/<pid>/cgroup and /proc/self/mountinfo; the cgroup files
 * are small and read into fixed buffers (this runs in the shim, which stays
 * small). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "cgroup.h"

/* ---- reading files ------------------------------------------------------------------ */

/* Reads a whole file into buf (NUL-terminated, truncated to n - 1). */
static int read_buf(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len < n - 1) {
        ssize_t r = read(fd, buf + len, n - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    return 0;
}

static int read_in(const char *dir, const char *file, char *buf, size_t n)
{
    char p[PATH_MAX];
    if (!dir || snprintf(p, sizeof(p), "%s/%s", dir, file) >= (int)sizeof(p))
        return -1;
    return read_buf(p, buf, n);
}

/* A /proc file of unknown size (mountinfo can be long), malloc'd. */
static char *read_proc(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            char *nb = cap < (16u << 20) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(buf);
            buf = NULL;
            break;
        }
        if (r == 0) {
            buf[len] = 0;
            break;
        }
        len += (size_t)r;
    }
    close(fd);
    return buf;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    *out = v;
    return 0;
}

/* "key value" lines (memory.stat, cpu.stat, memory.events, cpuacct.stat,
 * memory.oom_control): the value of the line that is exactly `key`. */
static int kv_find(const char *text, const char *key, uint64_t *out)
{
    size_t kl = strlen(key);
    for (const char *l = text; l && *l;) {
        if (strncmp(l, key, kl) == 0 && l[kl] == ' ')
            return parse_u64(l + kl + 1, out);
        l = strchr(l, '\n');
        if (l)
            l++;
    }
    return -1;
}

static int read_key(const char *dir, const char *file, const char *key, uint64_t *out)
{
    char buf[8192];
    if (read_in(dir, file, buf, sizeof(buf)) < 0)
        return -1;
    return kv_find(buf, key, out);
}

/* A one-value file: 0 and the number, 1 for "max" (no limit), -1. */
static int read_value(const char *dir, const char *file, uint64_t *out)
{
    char buf[64];
    if (read_in(dir, file, buf, sizeof(buf)) < 0)
        return -1;
    if (strncmp(buf, "max", 3) == 0 && (buf[3] == '\n' || buf[3] == 0))
        return 1;
    return parse_u64(buf, out);
}

/* ---- finding the cgroup directory ---------------------------------------------------- */

/* Whether the comma-separated list [s, s + len) holds `name`. */
static bool list_has(const char *s, size_t len, const char *name)
{
    size_t nl = strlen(name);
    const char *end = s + len;
    while (s < end) {
        const char *c = memchr(s, ',', (size_t)(end - s));
        size_t tl = c ? (size_t)(c - s) : (size_t)(end - s);
        if (tl == nl && memcmp(s, name, nl) == 0)
            return true;
        s += tl + 1;
    }
    return false;
}

/* A mountinfo field [s, s + len) with its octal escapes (\040 for a space)
 * decoded. */
static int unescape(const char *s, size_t len, char *out, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\\' && i + 3 < len && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
            s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
            c = (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        }
        if (j + 1 >= n)
            return -1;
        out[j++] = c;
    }
    out[j] = 0;
    return 0;
}

/* The path of `ctrl` (NULL: the v2 "0::" line) in /proc/<pid>/cgroup. */
static int proc_cgroup_path(const char *text, const char *ctrl, char *rel, size_t n)
{
    for (const char *l = text; l && *l;) {
        const char *eol = strchr(l, '\n');
        size_t ll = eol ? (size_t)(eol - l) : strlen(l);
        const char *c1 = memchr(l, ':', ll);
        const char *c2 = c1 ? memchr(c1 + 1, ':', ll - (size_t)(c1 + 1 - l)) : NULL;
        if (c2) {
            bool match;
            if (!ctrl)
                match = c1 - l == 1 && l[0] == '0' && c2 == c1 + 1;
            else
                match = c2 > c1 + 1 && list_has(c1 + 1, (size_t)(c2 - c1 - 1), ctrl);
            if (match) {
                size_t pl = ll - (size_t)(c2 + 1 - l);
                if (pl == 0 || pl >= n || c2[1] != '/')
                    return -1;
                memcpy(rel, c2 + 1, pl);
                rel[pl] = 0;
                /* Outside the reader's cgroup namespace: "/../.." — no
                 * mount of ours can hold it. */
                if (strcmp(rel, "/..") == 0 || strncmp(rel, "/../", 4) == 0 ||
                    strstr(rel, "/../") || (pl >= 3 && strcmp(rel + pl - 3, "/..") == 0))
                    return -1;
                return 0;
            }
        }
        l = eol ? eol + 1 : NULL;
    }
    return -1;
}

/* Splits a mountinfo line into its space-separated fields. */
static int mi_fields(const char *l, size_t ll, const char **f, size_t *fl, int max)
{
    int nf = 0;
    for (const char *p = l, *end = l + ll; p < end && nf < max;) {
        while (p < end && *p == ' ')
            p++;
        if (p == end)
            break;
        const char *s = p;
        while (p < end && *p != ' ')
            p++;
        f[nf] = s;
        fl[nf++] = (size_t)(p - s);
    }
    return nf;
}

/* Whether a mount listed after `from` (mountinfo lists a mount after the
 * one it covers) sits at `mnt` or at a directory above it: then the
 * hierarchy at `mnt` is hidden, as when a cgroup2 file system is mounted
 * over a hybrid host's /sys/fs/cgroup. */
static bool mi_shadowed(const char *from, const char *mnt)
{
    size_t ml = strlen(mnt);
    for (const char *l = from; l && *l;) {
        const char *eol = strchr(l, '\n');
        size_t ll = eol ? (size_t)(eol - l) : strlen(l);
        const char *f[6];
        size_t fl[6];
        char m[PATH_MAX];
        if (mi_fields(l, ll, f, fl, 6) >= 5 && unescape(f[4], fl[4], m, sizeof(m)) == 0) {
            size_t n = strlen(m);
            while (n > 1 && m[n - 1] == '/')
                m[--n] = 0;
            /* (A later "/" is not taken to cover everything.) */
            if (strcmp(m, "/") != 0 && n <= ml && memcmp(m, mnt, n) == 0 &&
                (mnt[n] == 0 || mnt[n] == '/'))
                return true;
        }
        l = eol ? eol + 1 : NULL;
    }
    return false;
}

int shim_cgroup_dir_from(const char *proc_cgroup, const char *mountinfo, const char *ctrl,
                         char *out, size_t n)
{
    char rel[PATH_MAX];
    if (!proc_cgroup || !mountinfo || proc_cgroup_path(proc_cgroup, ctrl, rel, sizeof(rel)) < 0)
        return -1;
    for (const char *l = mountinfo; l && *l;) {
        const char *eol = strchr(l, '\n');
        size_t ll = eol ? (size_t)(eol - l) : strlen(l);
        /* id parent maj:min root mountpoint options [optional...] - fstype
         * source superoptions */
        const char *f[24];
        size_t fl[24];
        int nf = mi_fields(l, ll, f, fl, 24);
        l = eol ? eol + 1 : NULL;
        int dash = -1;
        for (int i = 6; i < nf; i++)
            if (fl[i] == 1 && f[i][0] == '-') {
                dash = i;
                break;
            }
        if (dash < 0 || dash + 1 >= nf)
            continue;
        const char *fstype = f[dash + 1];
        size_t ftl = fl[dash + 1];
        bool match;
        if (!ctrl)
            match = ftl == 7 && memcmp(fstype, "cgroup2", 7) == 0;
        else
            match = ftl == 6 && memcmp(fstype, "cgroup", 6) == 0 && dash + 3 < nf &&
                    list_has(f[dash + 3], fl[dash + 3], ctrl);
        if (!match)
            continue;
        char root[PATH_MAX], mnt[PATH_MAX];
        if (unescape(f[3], fl[3], root, sizeof(root)) < 0 ||
            unescape(f[4], fl[4], mnt, sizeof(mnt)) < 0)
            continue;
        /* The cgroup must be at or below the root of this mount. */
        const char *suffix;
        size_t rl = strlen(root);
        if (strcmp(root, "/") == 0)
            suffix = rel;
        else if (strncmp(rel, root, rl) == 0 && (rel[rl] == 0 || rel[rl] == '/'))
            suffix = rel + rl;
        else
            continue;
        if (strcmp(suffix, "/") == 0)
            suffix = "";
        size_t ml = strlen(mnt);
        if (ml > 1 && mnt[ml - 1] == '/')
            mnt[--ml] = 0;
        if (mi_shadowed(l, mnt))
            continue;
        int w = snprintf(out, n, "%s%s", strcmp(mnt, "/") == 0 && *suffix ? "" : mnt, suffix);
        if (w < 0 || (size_t)w >= n)
            return -1;
        return 0;
    }
    return -1;
}

/* ---- statistics --------------------------------------------------------------------- */

int shim_cgroup_stats_v1(const char *memory_dir, const char *cpuacct_dir, const char *pids_dir,
                         shim_cgstats_t *s)
{
    memset(s, 0, sizeof(*s));
    s->version = 1;
    if (memory_dir) {
        s->has_memory = read_value(memory_dir, "memory.usage_in_bytes", &s->mem_usage) == 0;
        if (read_value(memory_dir, "memory.limit_in_bytes", &s->mem_limit) == 1)
            s->mem_limit = UINT64_MAX;
        read_value(memory_dir, "memory.max_usage_in_bytes", &s->mem_max_usage);
        char buf[8192];
        if (read_in(memory_dir, "memory.stat", buf, sizeof(buf)) == 0) {
            kv_find(buf, "cache", &s->mem_cache);
            kv_find(buf, "rss", &s->mem_rss);
        }
        /* oom_kill is there from kernel 4.13. */
        read_key(memory_dir, "memory.oom_control", "oom_kill", &s->oom_kills);
    }
    if (cpuacct_dir) {
        s->has_cpu = read_value(cpuacct_dir, "cpuacct.usage", &s->cpu_usage_ns) == 0;
        /* cpuacct.stat counts USER_HZ ticks. */
        long hz = sysconf(_SC_CLK_TCK);
        if (hz <= 0)
            hz = 100;
        uint64_t tick = 1000000000ull / (uint64_t)hz, u = 0, sy = 0;
        char buf[2048];
        if (read_in(cpuacct_dir, "cpuacct.stat", buf, sizeof(buf)) == 0) {
            if (kv_find(buf, "user", &u) == 0)
                s->cpu_user_ns = u * tick;
            if (kv_find(buf, "system", &sy) == 0)
                s->cpu_system_ns = sy * tick;
        }
        /* "123 456 \n": 64 numbers of up to 20 digits fit in the buffer. */
        if (read_in(cpuacct_dir, "cpuacct.usage_percpu", buf, sizeof(buf)) == 0) {
            char *q = buf, *end;
            while (s->n_percpu < BERTH_ARRAY_SIZE(s->percpu)) {
                while (*q == ' ')
                    q++;
                if (*q < '0' || *q > '9')
                    break;
                s->percpu[s->n_percpu++] = strtoull(q, &end, 10);
                q = end;
            }
        }
    }
    if (pids_dir) {
        s->has_pids = read_value(pids_dir, "pids.current", &s->pids_current) == 0;
        if (read_value(pids_dir, "pids.max", &s->pids_limit) != 0)
            s->pids_limit = 0;
    }
    return s->has_memory || s->has_cpu || s->has_pids ? 0 : -1;
}

int shim_cgroup_stats_v2(const char *dir, shim_cgstats_t *s)
{
    memset(s, 0, sizeof(*s));
    s->version = 2;
    s->has_memory = read_value(dir, "memory.current", &s->mem_usage) == 0;
    if (s->has_memory) {
        if (read_value(dir, "memory.max", &s->mem_limit) == 1)
            s->mem_limit = UINT64_MAX;
        /* memory.peak: kernel 5.19 and later. */
        read_value(dir, "memory.peak", &s->mem_max_usage);
        char buf[8192];
        if (read_in(dir, "memory.stat", buf, sizeof(buf)) == 0) {
            kv_find(buf, "file", &s->mem_cache);
            kv_find(buf, "anon", &s->mem_rss);
        }
        read_key(dir, "memory.events", "oom_kill", &s->oom_kills);
    }
    char buf[2048];
    uint64_t us = 0;
    if (read_in(dir, "cpu.stat", buf, sizeof(buf)) == 0) {
        if (kv_find(buf, "usage_usec", &us) == 0) {
            s->has_cpu = true;
            s->cpu_usage_ns = us * 1000;
        }
        if (kv_find(buf, "user_usec", &us) == 0)
            s->cpu_user_ns = us * 1000;
        if (kv_find(buf, "system_usec", &us) == 0)
            s->cpu_system_ns = us * 1000;
    }
    s->has_pids = read_value(dir, "pids.current", &s->pids_current) == 0;
    if (s->has_pids && read_value(dir, "pids.max", &s->pids_limit) != 0)
        s->pids_limit = 0;
    return s->has_memory || s->has_cpu || s->has_pids ? 0 : -1;
}

bool shim_cgroup_unified_mode(void)
{
    struct statfs st;
    return statfs("/sys/fs/cgroup", &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC;
}

int shim_cgroup_stats_from(const char *proc_cgroup, const char *mountinfo, bool unified,
                           shim_cgstats_t *s, berth_error_t **err)
{
    char mem[PATH_MAX], cpu[PATH_MAX], pids[PATH_MAX];
    bool hm =
        !unified && shim_cgroup_dir_from(proc_cgroup, mountinfo, "memory", mem, sizeof(mem)) == 0;
    bool hc =
        !unified && shim_cgroup_dir_from(proc_cgroup, mountinfo, "cpuacct", cpu, sizeof(cpu)) == 0;
    bool hp =
        !unified && shim_cgroup_dir_from(proc_cgroup, mountinfo, "pids", pids, sizeof(pids)) == 0;
    if (hm || hc || hp) {
        if (shim_cgroup_stats_v1(hm ? mem : NULL, hc ? cpu : NULL, hp ? pids : NULL, s) == 0)
            return 0;
        return berth_error_set(err, BERTH_E_NOT_FOUND, "cannot read cgroup v1 statistics in %s",
                               hm   ? mem
                               : hc ? cpu
                                    : pids);
    }
    if (shim_cgroup_dir_from(proc_cgroup, mountinfo, NULL, mem, sizeof(mem)) == 0) {
        if (shim_cgroup_stats_v2(mem, s) == 0)
            return 0;
        return berth_error_set(err, BERTH_E_NOT_FOUND, "cannot read cgroup v2 statistics in %s",
                               mem);
    }
    memset(s, 0, sizeof(*s));
    return berth_error_set(err, BERTH_E_NOT_FOUND,
                           "no mounted cgroup v1 memory, cpuacct or pids hierarchy nor cgroup v2");
}

/* The texts of /proc/<pid>/cgroup and /proc/self/mountinfo. */
static int proc_texts(pid_t pid, char **cg, char **mi, berth_error_t **err)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/cgroup", (int)pid);
    *mi = NULL;
    *cg = read_proc(p);
    if (!*cg)
        return berth_error_errno(err, errno, "read %s", p);
    *mi = read_proc("/proc/self/mountinfo");
    if (!*mi) {
        int e = errno;
        free(*cg);
        *cg = NULL;
        return berth_error_errno(err, e, "read /proc/self/mountinfo");
    }
    return 0;
}

int shim_cgroup_stats(pid_t pid, shim_cgstats_t *s, berth_error_t **err)
{
    char *cg, *mi;
    memset(s, 0, sizeof(*s));
    if (proc_texts(pid, &cg, &mi, err) < 0)
        return -1;
    int r = shim_cgroup_stats_from(cg, mi, shim_cgroup_unified_mode(), s, err);
    free(cg);
    free(mi);
    if (r < 0)
        berth_error_wrap(err, "cgroup of pid %d", (int)pid);
    return r;
}

/* ---- OOM ---------------------------------------------------------------------------- */

int shim_cgroup_oom_watch_dir(const char *dir, bool v2, char **events_path, berth_error_t **err)
{
    char p[PATH_MAX + 32];
    *events_path = NULL;
    if (!v2) {
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
        /* The eventfd also fires when the cgroup goes away, and on every
         * OOM (not only kills): the oom_kill counter in oom_control tells
         * a real OOM kill apart. */
        snprintf(p, sizeof(p), "%s/memory.oom_control", dir);
        *events_path = strdup(p);
        return efd;
    }
    /* The kernel notifies memory.events (IN_MODIFY) when a counter in it
     * changes. */
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

int shim_cgroup_oom_watch(pid_t pid, bool *v2, char **events_path, berth_error_t **err)
{
    char *cg, *mi, dir[PATH_MAX];
    *events_path = NULL;
    if (proc_texts(pid, &cg, &mi, err) < 0)
        return -1;
    int r = -1;
    if (!shim_cgroup_unified_mode() &&
        shim_cgroup_dir_from(cg, mi, "memory", dir, sizeof(dir)) == 0) {
        *v2 = false;
        r = shim_cgroup_oom_watch_dir(dir, false, events_path, err);
    } else if (shim_cgroup_dir_from(cg, mi, NULL, dir, sizeof(dir)) == 0) {
        *v2 = true;
        r = shim_cgroup_oom_watch_dir(dir, true, events_path, err);
    } else {
        berth_error_set(err, BERTH_E_NOT_FOUND, "no memory cgroup for pid %d", (int)pid);
    }
    free(cg);
    free(mi);
    return r;
}

bool shim_cgroup_oom_check(int fd, bool v2, const char *events_path, uint64_t *last)
{
    char buf[4096];
    while (fd >= 0 && read(fd, buf, sizeof(buf)) > 0) {
    }
    if (!events_path)
        return false;
    (void)v2;
    uint64_t v;
    if (read_buf(events_path, buf, sizeof(buf)) < 0 || kv_find(buf, "oom_kill", &v) < 0)
        return false;
    if (v <= *last)
        return false;
    *last = v;
    return true;
}

/* ---- runc's state.json and removal ------------------------------------------------- */

static void jws(const char **p)
{
    while (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r')
        (*p)++;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A JSON string at *p: decoded into out, or skipped when out is NULL.
 * Decoded strings are ASCII without NUL (Go writes \u003c for '<', \u0026
 * for '&'); anything else is refused, a path with it is not runc's. */
static int jstr(const char **p, char *out, size_t n)
{
    const char *q = *p;
    size_t j = 0;
    if (*q++ != '"')
        return -1;
    for (;;) {
        unsigned char c = (unsigned char)*q++;
        if (c == 0 || c < 0x20)
            return -1;
        if (c == '"')
            break;
        if (c == '\\') {
            char e = *q++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                c = (unsigned char)e;
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                int v = 0;
                for (int i = 0; i < 4; i++) {
                    int h = hexval(q[i]);
                    if (h < 0)
                        return -1;
                    v = v * 16 + h;
                }
                q += 4;
                if (out && (v == 0 || v > 0x7f))
                    return -1;
                c = (unsigned char)v;
                break;
            }
            default:
                return -1;
            }
        }
        if (out) {
            if (j + 1 >= n)
                return -1;
            out[j++] = (char)c;
        }
    }
    if (out)
        out[j] = 0;
    *p = q;
    return 0;
}

/* Skips one JSON value. */
static int jskip(const char **p, int depth)
{
    jws(p);
    if (**p == '"')
        return jstr(p, NULL, 0);
    if (**p == '{' || **p == '[') {
        char close = **p == '{' ? '}' : ']';
        if (depth > 64)
            return -1;
        (*p)++;
        jws(p);
        if (**p == close) {
            (*p)++;
            return 0;
        }
        for (;;) {
            if (close == '}') {
                jws(p);
                if (jstr(p, NULL, 0) < 0)
                    return -1;
                jws(p);
                if (*(*p)++ != ':')
                    return -1;
            }
            if (jskip(p, depth + 1) < 0)
                return -1;
            jws(p);
            if (**p == ',') {
                (*p)++;
                continue;
            }
            if (**p != close)
                return -1;
            (*p)++;
            return 0;
        }
    }
    size_t k = strspn(*p, "0123456789+-.eEtruefalsn");
    if (k == 0)
        return -1;
    *p += k;
    return 0;
}

/* An absolute, normalized path below /sys/fs/cgroup/ (no "." or ".."
 * component, no "//", no trailing "/", printable). */
static bool cgroup_path_ok(const char *p)
{
    if (strncmp(p, "/sys/fs/cgroup/", 15) != 0 || p[15] == 0)
        return false;
    for (const char *c = p; *c; c++)
        if (!isprint((unsigned char)*c))
            return false;
    for (const char *c = p; c; c = strchr(c + 1, '/')) {
        const char *s = c + 1;
        size_t l = strcspn(s, "/");
        if (l == 0 || (l == 1 && s[0] == '.') || (l == 2 && s[0] == '.' && s[1] == '.'))
            return false;
    }
    return true;
}

int shim_cgroup_state_paths(const char *js, char (*paths)[PATH_MAX], int max)
{
    const char *p = js;
    char key[256];
    jws(&p);
    if (*p++ != '{')
        return -1;
    jws(&p);
    if (*p == '}')
        return -1;
    for (;;) {
        jws(&p);
        if (jstr(&p, key, sizeof(key)) < 0)
            return -1;
        jws(&p);
        if (*p++ != ':')
            return -1;
        jws(&p);
        if (strcmp(key, "cgroup_paths") == 0) {
            if (*p++ != '{')
                return -1; /* null: nothing runc knows of */
            int n = 0;
            jws(&p);
            if (*p == '}')
                return 0;
            for (;;) {
                char ctrl[256];
                jws(&p);
                if (jstr(&p, ctrl, sizeof(ctrl)) < 0)
                    return -1;
                jws(&p);
                if (*p++ != ':')
                    return -1;
                jws(&p);
                if (n == max || jstr(&p, paths[n], PATH_MAX) < 0 || !cgroup_path_ok(paths[n]))
                    return -1;
                n++;
                jws(&p);
                if (*p == '}')
                    return n;
                if (*p++ != ',')
                    return -1;
            }
        }
        if (jskip(&p, 0) < 0)
            return -1;
        jws(&p);
        if (*p == ',') {
            p++;
            continue;
        }
        return -1; /* '}' or garbage: no cgroup_paths */
    }
}

/* Removes the child cgroups (directories) below dfd, deepest first. Files
 * are the cgroup's own interface and go with it. */
static int remove_children(int dfd, dev_t dev, int depth)
{
    if (depth > 32) {
        errno = ELOOP;
        return -1;
    }
    int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        return -1;
    }
    int first = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
            continue;
        if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
            continue;
        struct stat st;
        if (fstatat(dfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            continue;
        if (st.st_dev != dev) {
            first = first ? first : EXDEV;
            continue;
        }
        if (unlinkat(dfd, n, AT_REMOVEDIR) == 0)
            continue;
        int sub = openat(dfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            first = first ? first : errno;
            continue;
        }
        int r = remove_children(sub, dev, depth + 1);
        if (r < 0)
            first = first ? first : errno;
        close(sub);
        if (r == 0 && unlinkat(dfd, n, AT_REMOVEDIR) < 0)
            first = first ? first : errno;
    }
    closedir(d);
    errno = first;
    return first ? -1 : 0;
}

int shim_cgroup_remove(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    /* The root of a mount (a whole hierarchy, or a sub-cgroup mounted into
     * a container) has another device than its parent directory. */
    char parent[PATH_MAX];
    const char *slash = strrchr(path, '/');
    struct stat st, pst;
    size_t pl = slash ? (size_t)(slash - path) : 0;
    if (pl == 0 || pl >= sizeof(parent)) {
        close(fd);
        errno = EXDEV;
        return -1;
    }
    memcpy(parent, path, pl);
    parent[pl] = 0;
    if (fstat(fd, &st) < 0 || stat(parent, &pst) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (st.st_dev != pst.st_dev) {
        close(fd);
        errno = EXDEV;
        return -1;
    }
    int r = rmdir(path);
    if (r < 0 && (errno == EBUSY || errno == ENOTEMPTY || errno == EEXIST)) {
        /* Child cgroups (made in the container, or nested by the runtime):
         * remove them, then the cgroup itself. */
        int ce = remove_children(fd, st.st_dev, 0) < 0 ? errno : 0;
        r = rmdir(path);
        if (r < 0 && errno != ENOENT && (ce == EXDEV || ce == ELOOP))
            errno = ce;
    }
    if (r < 0 && errno == ENOENT)
        r = 0;
    int e = errno;
    close(fd);
    errno = e;
    return r;
}
