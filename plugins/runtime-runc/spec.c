/* SPDX-License-Identifier: Apache-2.0 */
/* OCI runtime spec generation, daemon-side, like containerd's oci package:
 * defaults (mounts, capabilities, masked and read-only paths, namespaces,
 * rlimits, seccomp), the image config (entrypoint, cmd, env, workdir, user)
 * and the options of containers.create. No event loop: unit tested directly. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "berth/log.h"
#include "berth/mp.h"
#include "berth/sha256.h"
#include "internal.h"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const char *const rt_cap_names[] = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};
const size_t rt_n_cap_names = BERTH_ARRAY_SIZE(rt_cap_names);

/* containerd's defaultUnixCaps. */
static const char *const default_caps[] = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
    NULL,
};

static const char *const masked_paths[] = {
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/sys/devices/virtual/powercap",
    NULL,
};

static const char *const readonly_paths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL,
};

static const char *const rlimit_names[] = {
    "RLIMIT_CPU",      "RLIMIT_FSIZE", "RLIMIT_DATA",   "RLIMIT_STACK",
    "RLIMIT_CORE",     "RLIMIT_RSS",   "RLIMIT_NPROC",  "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",  "RLIMIT_AS",    "RLIMIT_LOCKS",  "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE", "RLIMIT_NICE",  "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
};
#define N_RLIMITS BERTH_ARRAY_SIZE(rlimit_names)

/* ---- small helpers --------------------------------------------------------- */

void rt_json_append_str(json_t *arr, const char *s)
{
    json_array_append_new(arr, json_string(s));
}

static json_t *str_array(const char *const *v)
{
    json_t *a = json_array();
    for (; *v; v++)
        rt_json_append_str(a, *v);
    return a;
}

bool rt_valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > RT_MAX_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
            return false;
    }
    return true;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void rt_spec_opts_free(rt_spec_opts_t *o)
{
    free_strv(o->args, o->n_args);
    free_strv(o->env, o->n_env);
    free(o->cwd);
    free(o->user);
    free(o->hostname);
    for (size_t i = 0; i < o->n_mounts; i++) {
        free(o->mounts[i].type);
        free(o->mounts[i].source);
        free(o->mounts[i].destination);
        free_strv(o->mounts[i].options, o->mounts[i].n_options);
    }
    free(o->mounts);
    free(o->cpuset_cpus);
    free(o->cpuset_mems);
    free_strv(o->cap_add, o->n_cap_add);
    free_strv(o->cap_drop, o->n_cap_drop);
    for (size_t i = 0; i < o->n_annotations; i++) {
        free(o->annotations[i].key);
        free(o->annotations[i].value);
    }
    free(o->annotations);
    free(o->seccomp);
    free(o->seccomp_profile);
    for (size_t i = 0; i < o->n_rlimits; i++)
        free(o->rlimits[i].type);
    free(o->rlimits);
    memset(o, 0, sizeof(*o));
}

/* Reads an array of strings under key; absent leaves *out NULL. */
static int get_strv(const msgpack_object *map, const char *key, char ***out, size_t *n,
                    berth_error_t **err)
{
    const msgpack_object *arr = NULL;
    int r = berth_mp_get_array(map, key, &arr, err);
    if (r != 0)
        return r < 0 ? -1 : 0;
    char **v = calloc(arr->via.array.size + 1, sizeof(char *));
    if (!v)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        v[i] = berth_mp_strdup(&arr->via.array.ptr[i]);
        if (!v[i]) {
            free_strv(v, i);
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "parameter %s[%u] must be a string without NUL bytes", key, i);
        }
    }
    *out = v;
    *n = arr->via.array.size;
    return 0;
}

/* Normalises "net_admin" / "CAP_NET_ADMIN" / "ALL" and checks the name. */
static int norm_cap(char **cap, berth_error_t **err)
{
    char buf[64];
    const char *c = *cap;
    if (strlen(c) > 40)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "unknown capability %s", c);
    size_t off = 0;
    if (strncasecmp(c, "CAP_", 4) != 0) {
        memcpy(buf, "CAP_", 4);
        off = 4;
    }
    size_t i;
    for (i = 0; c[i]; i++)
        buf[off + i] = (char)((c[i] >= 'a' && c[i] <= 'z') ? c[i] - 32 : c[i]);
    buf[off + i] = 0;
    if (strcmp(buf, "CAP_ALL") == 0) {
        free(*cap);
        *cap = strdup("ALL");
        return 0;
    }
    for (size_t k = 0; k < rt_n_cap_names; k++) {
        if (strcmp(rt_cap_names[k], buf) == 0) {
            free(*cap);
            *cap = strdup(buf);
            return 0;
        }
    }
    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "unknown capability %s", c);
}

static bool clean_abs_path(const char *p)
{
    if (!p || p[0] != '/' || strlen(p) >= PATH_MAX)
        return false;
    /* No "." or ".." components, no "//". */
    const char *s = p;
    while (*s) {
        while (*s == '/')
            s++;
        const char *e = strchrnul(s, '/');
        size_t n = (size_t)(e - s);
        if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return false;
        s = e;
    }
    return strstr(p, "//") == NULL;
}

int rt_resolve_bind_source(const char *src, char **resolved, berth_error_t **err)
{
    if (!src || src[0] != '/')
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "bind mount source \"%s\" must be an absolute path", src ? src : "");
    if (strlen(src) >= PATH_MAX)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "bind mount source is too long");
    /* Walk the path: the resolved prefix grows one component at a time; at a
     * symlink the target replaces it, and must stay under the directory that
     * holds the link. */
    char cur[PATH_MAX] = "";
    char rest[PATH_MAX];
    snprintf(rest, sizeof(rest), "%s", src);
    int links = 0;
    char *p = rest;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        char *e = strchrnul(p, '/');
        size_t n = (size_t)(e - p);
        char comp[NAME_MAX + 1];
        if (n > NAME_MAX)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "bind mount source %s: a path component is too long", src);
        memcpy(comp, p, n);
        comp[n] = 0;
        p = e;
        if (strcmp(comp, ".") == 0)
            continue;
        if (strcmp(comp, "..") == 0) {
            char *slash = strrchr(cur, '/');
            if (slash)
                *slash = 0;
            continue;
        }
        char next[PATH_MAX];
        if ((size_t)snprintf(next, sizeof(next), "%s/%s", cur, comp) >= sizeof(next))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "bind mount source is too long");
        struct stat st;
        if (lstat(next, &st) < 0) {
            if (errno == ENOENT || errno == ENOTDIR)
                return berth_error_set(err, BERTH_E_NOT_FOUND,
                                       "bind mount source %s does not exist", src);
            return berth_error_errno(err, errno, "bind mount source %s", src);
        }
        if (!S_ISLNK(st.st_mode)) {
            memcpy(cur, next, strlen(next) + 1);
            continue;
        }
        if (++links > 40)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "bind mount source %s: too many levels of symbolic links", src);
        char target[PATH_MAX];
        ssize_t tl = readlink(next, target, sizeof(target) - 1);
        if (tl < 0)
            return berth_error_errno(err, errno, "bind mount source %s: readlink %s", src, next);
        target[tl] = 0;
        /* Resolve the link target fully, then check containment. */
        char linkpath[PATH_MAX];
        if (target[0] == '/')
            snprintf(linkpath, sizeof(linkpath), "%s", target);
        else if ((size_t)snprintf(linkpath, sizeof(linkpath), "%s/%s", cur, target) >=
                 sizeof(linkpath))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "bind mount source is too long");
        char real[PATH_MAX];
        if (!realpath(linkpath, real)) {
            if (errno == ENOENT || errno == ENOTDIR)
                return berth_error_set(
                    err, BERTH_E_NOT_FOUND,
                    "bind mount source %s does not exist (%s is a dangling symlink)", src, next);
            return berth_error_errno(err, errno, "bind mount source %s: resolve %s", src, next);
        }
        char base[PATH_MAX];
        if (!realpath(cur[0] ? cur : "/", base))
            return berth_error_errno(err, errno, "bind mount source %s", src);
        size_t bl = strlen(base);
        bool inside = strcmp(base, "/") == 0
                          ? true
                          : (strncmp(real, base, bl) == 0 && (real[bl] == '/' || real[bl] == 0) &&
                             strcmp(real, base) != 0);
        if (!inside) {
            char full[PATH_MAX];
            const char *shown = realpath(src, full) ? full : real;
            return berth_error_set(
                err, BERTH_E_INVALID_ARGUMENT,
                "bind mount source %s escapes through the symlink %s -> %s "
                "(it leads outside %s); give the real path %s if that is intended",
                src, next, target, base, shown);
        }
        memcpy(cur, real, strlen(real) + 1);
        if (strcmp(cur, "/") == 0)
            cur[0] = 0;
    }
    *resolved = strdup(cur[0] ? cur : "/");
    return *resolved ? 0 : berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
}

static int decode_mounts(const msgpack_object *params, rt_spec_opts_t *o, berth_error_t **err)
{
    const msgpack_object *arr = NULL;
    int r = berth_mp_get_array(params, "mounts", &arr, err);
    if (r != 0)
        return r < 0 ? -1 : 0;
    if (arr->via.array.size > 1024)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "too many mounts (max 1024)");
    o->mounts = calloc(arr->via.array.size ? arr->via.array.size : 1, sizeof(rt_mount_t));
    if (!o->mounts)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *m = &arr->via.array.ptr[i];
        rt_mount_t *mt = &o->mounts[o->n_mounts++];
        if (m->type != MSGPACK_OBJECT_MAP)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "mounts[%u] must be a map", i);
        _cleanup_free_ char *src = NULL;
        if (berth_mp_get_strdup(m, "type", &mt->type, err) < 0 ||
            berth_mp_get_strdup(m, "source", &src, err) < 0 ||
            berth_mp_get_strdup(m, "destination", &mt->destination, err) < 0 ||
            get_strv(m, "options", &mt->options, &mt->n_options, err) < 0)
            return berth_error_wrap(err, "mounts[%u]", i);
        if (!mt->type)
            mt->type = strdup("bind");
        if (!mt->destination || !clean_abs_path(mt->destination) ||
            strcmp(mt->destination, "/") == 0)
            return berth_error_set(
                err, BERTH_E_INVALID_ARGUMENT,
                "mount destination \"%s\" must be a clean absolute path other than /",
                mt->destination ? mt->destination : "");
        bool is_bind = strcmp(mt->type, "bind") == 0;
        for (size_t k = 0; k < mt->n_options; k++)
            if (strcmp(mt->options[k], "bind") == 0 || strcmp(mt->options[k], "rbind") == 0)
                is_bind = true;
        if (is_bind) {
            if (!src)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "bind mount to %s needs a source", mt->destination);
            if (rt_resolve_bind_source(src, &mt->source, err) < 0)
                return -1;
            bool has = false;
            for (size_t k = 0; k < mt->n_options; k++)
                if (strcmp(mt->options[k], "bind") == 0 || strcmp(mt->options[k], "rbind") == 0)
                    has = true;
            if (!has) {
                char **n = realloc(mt->options, (mt->n_options + 1) * sizeof(char *));
                if (!n)
                    return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
                mt->options = n;
                mt->options[mt->n_options++] = strdup("rbind");
            }
        } else {
            mt->source = src ? steal_pointer(&src) : strdup(mt->type);
        }
    }
    return 0;
}

static int decode_map_kv(const msgpack_object *params, const char *key, rt_kv_t **out, size_t *n,
                         berth_error_t **err)
{
    const msgpack_object *m = NULL;
    int r = berth_mp_get_map(params, key, &m, err);
    if (r != 0)
        return r < 0 ? -1 : 0;
    *out = calloc(m->via.map.size ? m->via.map.size : 1, sizeof(rt_kv_t));
    if (!*out)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        rt_kv_t *kv = &(*out)[(*n)++];
        kv->key = berth_mp_strdup(&m->via.map.ptr[i].key);
        kv->value = berth_mp_strdup(&m->via.map.ptr[i].val);
        if (!kv->key || !kv->value)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s must map strings to strings",
                                   key);
    }
    return 0;
}

int rt_spec_opts_from_mp(const msgpack_object *p, rt_spec_opts_t *o, berth_error_t **err)
{
    memset(o, 0, sizeof(*o));
    o->no_new_privileges = -1;
    bool nnp = true;
    int nnp_r;
    if (get_strv(p, "args", &o->args, &o->n_args, err) < 0 ||
        get_strv(p, "env", &o->env, &o->n_env, err) < 0 ||
        berth_mp_get_strdup(p, "cwd", &o->cwd, err) < 0 ||
        berth_mp_get_strdup(p, "user", &o->user, err) < 0 ||
        berth_mp_get_strdup(p, "hostname", &o->hostname, err) < 0 ||
        berth_mp_get_bool(p, "tty", &o->tty, err) < 0 ||
        berth_mp_get_bool(p, "readonly_rootfs", &o->readonly_rootfs, err) < 0 ||
        berth_mp_get_bool(p, "privileged", &o->privileged, err) < 0 ||
        berth_mp_get_bool(p, "net_host", &o->net_host, err) < 0 ||
        (nnp_r = berth_mp_get_bool(p, "no_new_privileges", &nnp, err)) < 0 ||
        berth_mp_get_i64(p, "memory_limit", &o->memory_limit, err) < 0 ||
        berth_mp_get_u64(p, "cpu_shares", &o->cpu_shares, err) < 0 ||
        berth_mp_get_strdup(p, "cpuset_cpus", &o->cpuset_cpus, err) < 0 ||
        berth_mp_get_strdup(p, "cpuset_mems", &o->cpuset_mems, err) < 0 ||
        berth_mp_get_i64(p, "pids_limit", &o->pids_limit, err) < 0 ||
        get_strv(p, "cap_add", &o->cap_add, &o->n_cap_add, err) < 0 ||
        get_strv(p, "cap_drop", &o->cap_drop, &o->n_cap_drop, err) < 0 ||
        berth_mp_get_strdup(p, "seccomp", &o->seccomp, err) < 0 ||
        decode_map_kv(p, "annotations", &o->annotations, &o->n_annotations, err) < 0)
        goto fail;
    if (nnp_r == 0)
        o->no_new_privileges = nnp;

    const msgpack_object *cpus = berth_mp_get(p, "cpus");
    if (cpus && cpus->type != MSGPACK_OBJECT_NIL) {
        if (cpus->type == MSGPACK_OBJECT_FLOAT32 || cpus->type == MSGPACK_OBJECT_FLOAT64)
            o->cpus = cpus->via.f64;
        else if (cpus->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            o->cpus = (double)cpus->via.u64;
        else {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "parameter cpus must be a number");
            goto fail;
        }
        if (!(o->cpus > 0 && o->cpus <= 4096)) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "cpus must be between 0 and 4096");
            goto fail;
        }
    }
    if (o->memory_limit < 0) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "memory_limit must not be negative");
        goto fail;
    }
    if (o->pids_limit < 0) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "pids_limit must not be negative");
        goto fail;
    }
    if (o->args && o->n_args == 0) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "args must not be empty when given");
        goto fail;
    }
    for (size_t i = 0; i < o->n_env; i++) {
        const char *eq = strchr(o->env[i], '=');
        if (!eq || eq == o->env[i]) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "environment entry \"%s\" must look like KEY=VALUE", o->env[i]);
            goto fail;
        }
    }
    if (o->cwd && !clean_abs_path(o->cwd) && strcmp(o->cwd, "/") != 0) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "working directory \"%s\" must be a clean absolute path", o->cwd);
        goto fail;
    }
    if (o->hostname && (strlen(o->hostname) > 64 || strchr(o->hostname, '/'))) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "invalid hostname \"%s\"", o->hostname);
        goto fail;
    }
    for (size_t i = 0; i < o->n_cap_add; i++)
        if (norm_cap(&o->cap_add[i], err) < 0)
            goto fail;
    for (size_t i = 0; i < o->n_cap_drop; i++)
        if (norm_cap(&o->cap_drop[i], err) < 0)
            goto fail;
    if (o->seccomp && strcmp(o->seccomp, "default") != 0 && strcmp(o->seccomp, "unconfined") != 0) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "seccomp must be \"default\" or \"unconfined\" (or pass seccomp_profile)");
        goto fail;
    }
    berth_bytes_t prof = {0};
    int pr = berth_mp_get_bin(p, "seccomp_profile", &prof, err);
    if (pr < 0)
        goto fail;
    if (pr == 0) {
        if (prof.len > RT_MAX_SPEC) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "seccomp_profile is too large");
            goto fail;
        }
        o->seccomp_profile = strndup((const char *)prof.ptr, prof.len);
    }

    const msgpack_object *rl = NULL;
    int rr = berth_mp_get_array(p, "rlimits", &rl, err);
    if (rr < 0)
        goto fail;
    if (rr == 0) {
        o->rlimits = calloc(rl->via.array.size ? rl->via.array.size : 1, sizeof(rt_rlimit_t));
        for (uint32_t i = 0; i < rl->via.array.size; i++) {
            rt_rlimit_t *r = &o->rlimits[o->n_rlimits++];
            const msgpack_object *e = &rl->via.array.ptr[i];
            if (berth_mp_get_strdup(e, "type", &r->type, err) < 0 ||
                berth_mp_get_u64(e, "soft", &r->soft, err) < 0 ||
                berth_mp_get_u64(e, "hard", &r->hard, err) < 0)
                goto fail;
            bool known = false;
            for (size_t k = 0; r->type && k < N_RLIMITS; k++)
                known |= strcmp(rlimit_names[k], r->type) == 0;
            if (!known) {
                berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "unknown rlimit type %s",
                                r->type ? r->type : "(none)");
                goto fail;
            }
            if (r->soft > r->hard) {
                berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "rlimit %s: soft limit above hard",
                                r->type);
                goto fail;
            }
        }
    }
    if (decode_mounts(p, o, err) < 0)
        goto fail;
    return 0;
fail:
    rt_spec_opts_free(o);
    return -1;
}

/* ---- host facts ------------------------------------------------------------ */

static void add_host_devices(json_t *arr, const char *dir, int depth)
{
    if (depth > 4)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, n);
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (strcmp(n, "pts") == 0 || strcmp(n, "shm") == 0 || strcmp(n, "fd") == 0 ||
                strcmp(n, "mqueue") == 0 || strcmp(n, ".lxc") == 0 ||
                strcmp(n, ".lxd-mounts") == 0 || strcmp(n, ".udev") == 0)
                continue;
            add_host_devices(arr, path, depth + 1);
            continue;
        }
        if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
            continue;
        if (strcmp(path, "/dev/console") == 0)
            continue;
        json_t *dev = json_object();
        json_object_set_new(dev, "path", json_string(path));
        json_object_set_new(dev, "type", json_string(S_ISCHR(st.st_mode) ? "c" : "b"));
        json_object_set_new(dev, "major", json_integer(major(st.st_rdev)));
        json_object_set_new(dev, "minor", json_integer(minor(st.st_rdev)));
        json_object_set_new(dev, "fileMode", json_integer(st.st_mode & 07777));
        json_object_set_new(dev, "uid", json_integer(st.st_uid));
        json_object_set_new(dev, "gid", json_integer(st.st_gid));
        json_array_append_new(arr, dev);
    }
    closedir(d);
}

void rt_host_probe(rt_host_t *h, bool with_devices)
{
    memset(h, 0, sizeof(*h));
    struct rlimit rl;
    h->nofile_hard = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_max : 1024;
    h->cap_last_cap = 40;
    FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
    if (f) {
        int v;
        if (fscanf(f, "%d", &v) == 1 && v > 0 && v < 64)
            h->cap_last_cap = v;
        fclose(f);
    }
    f = fopen("/proc/self/status", "re");
    if (f) {
        char line[256];
        unsigned long long v;
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "CapBnd: %llx", &v) == 1)
                h->cap_bounding = v;
        fclose(f);
    }
    /* Probed once, at init: after the sandbox an x32 system call would be
     * outside the allowlist. */
    static int x32 = -1;
    if (x32 < 0)
        x32 = rt_kernel_has_x32();
    h->x32 = x32 == 1;
    if (with_devices) {
        h->devices = json_array();
        add_host_devices(h->devices, "/dev", 0);
    }
}

void rt_host_clear(rt_host_t *h)
{
    json_decref(h->devices);
    memset(h, 0, sizeof(*h));
}

/* ---- generation ------------------------------------------------------------ */

static json_t *mount_obj(const char *dst, const char *type, const char *src,
                         const char *const *opts)
{
    json_t *m = json_object();
    json_object_set_new(m, "destination", json_string(dst));
    json_object_set_new(m, "type", json_string(type));
    json_object_set_new(m, "source", json_string(src));
    json_object_set_new(m, "options", str_array(opts));
    return m;
}

static json_t *default_mounts(bool privileged)
{
    json_t *a = json_array();
    static const char *const proc[] = {"nosuid", "noexec", "nodev", NULL};
    static const char *const dev[] = {"nosuid", "strictatime", "mode=755", "size=65536k", NULL};
    static const char *const pts[] = {"nosuid",    "noexec", "newinstance", "ptmxmode=0666",
                                      "mode=0620", "gid=5",  NULL};
    static const char *const shm[] = {"nosuid",    "noexec",      "nodev",
                                      "mode=1777", "size=65536k", NULL};
    static const char *const mq[] = {"nosuid", "noexec", "nodev", NULL};
    static const char *const sys_ro[] = {"nosuid", "noexec", "nodev", "ro", NULL};
    static const char *const sys_rw[] = {"nosuid", "noexec", "nodev", NULL};
    static const char *const run[] = {"nosuid", "strictatime", "mode=755", "size=65536k", NULL};
    static const char *const cg_ro[] = {"nosuid", "noexec", "nodev", "relatime", "ro", NULL};
    static const char *const cg_rw[] = {"nosuid", "noexec", "nodev", "relatime", NULL};
    json_array_append_new(a, mount_obj("/proc", "proc", "proc", proc));
    json_array_append_new(a, mount_obj("/dev", "tmpfs", "tmpfs", dev));
    json_array_append_new(a, mount_obj("/dev/pts", "devpts", "devpts", pts));
    json_array_append_new(a, mount_obj("/dev/shm", "tmpfs", "shm", shm));
    json_array_append_new(a, mount_obj("/dev/mqueue", "mqueue", "mqueue", mq));
    json_array_append_new(a, mount_obj("/sys", "sysfs", "sysfs", privileged ? sys_rw : sys_ro));
    json_array_append_new(a, mount_obj("/run", "tmpfs", "tmpfs", run));
    json_array_append_new(
        a, mount_obj("/sys/fs/cgroup", "cgroup", "cgroup", privileged ? cg_rw : cg_ro));
    return a;
}

/* Replaces an existing mount with the same destination or appends. */
static void put_mount(json_t *mounts, json_t *m)
{
    const char *dst = json_string_value(json_object_get(m, "destination"));
    size_t i;
    json_t *v;
    json_array_foreach(mounts, i, v)
    {
        const char *d = json_string_value(json_object_get(v, "destination"));
        if (d && dst && strcmp(d, dst) == 0) {
            json_array_set_new(mounts, i, m);
            return;
        }
    }
    json_array_append_new(mounts, m);
}

/* Sets KEY=VALUE in env (array), replacing an entry with the same key. */
static void env_put(json_t *env, const char *kv)
{
    const char *eq = strchr(kv, '=');
    size_t kl = eq ? (size_t)(eq - kv) : strlen(kv);
    size_t i;
    json_t *v;
    json_array_foreach(env, i, v)
    {
        const char *s = json_string_value(v);
        if (s && strncmp(s, kv, kl) == 0 && (s[kl] == '=' || s[kl] == 0)) {
            json_array_set_new(env, i, json_string(kv));
            return;
        }
    }
    rt_json_append_str(env, kv);
}

static bool env_has(const json_t *env, const char *key)
{
    size_t kl = strlen(key), i;
    json_t *v;
    json_array_foreach(env, i, v)
    {
        const char *s = json_string_value(v);
        if (s && strncmp(s, key, kl) == 0 && s[kl] == '=')
            return true;
    }
    return false;
}

static bool arr_has(const json_t *a, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

static void arr_remove(json_t *a, const char *s)
{
    for (size_t i = 0; i < json_array_size(a);) {
        const char *v = json_string_value(json_array_get(a, i));
        if (v && strcmp(v, s) == 0)
            json_array_remove(a, i);
        else
            i++;
    }
}

/* Copies the string elements of an image config array (Entrypoint, Cmd, Env). */
static int append_img_strings(json_t *dst, const json_t *src, const char *what, berth_error_t **err)
{
    if (!src || json_is_null(src))
        return 0;
    if (!json_is_array(src))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "image config %s must be an array of strings", what);
    size_t i;
    json_t *v;
    json_array_foreach(src, i, v)
    {
        if (!json_is_string(v))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "image config %s must be an array of strings", what);
        rt_json_append_str(dst, json_string_value(v));
    }
    return 0;
}

static json_t *caps_for(const rt_spec_input_t *in, const rt_spec_opts_t *o)
{
    json_t *caps = json_array();
    int last = in->host ? in->host->cap_last_cap : 40;
    if (last >= (int)rt_n_cap_names)
        last = (int)rt_n_cap_names - 1;
#define HOST_HAS(i) (!in->host || !in->host->cap_bounding || (in->host->cap_bounding >> (i)) & 1)
    if (o->privileged) {
        for (int i = 0; i <= last; i++)
            if (HOST_HAS(i))
                rt_json_append_str(caps, rt_cap_names[i]);
    } else {
        for (const char *const *c = default_caps; *c; c++)
            rt_json_append_str(caps, *c);
    }
    /* Drops first, then adds: --cap-drop ALL --cap-add X gives exactly X. */
    for (size_t i = 0; i < o->n_cap_drop; i++) {
        if (strcmp(o->cap_drop[i], "ALL") == 0)
            json_array_clear(caps);
        else
            arr_remove(caps, o->cap_drop[i]);
    }
    for (size_t i = 0; i < o->n_cap_add; i++) {
        if (strcmp(o->cap_add[i], "ALL") == 0) {
            for (int k = 0; k <= last; k++)
                if (HOST_HAS(k) && !arr_has(caps, rt_cap_names[k]))
                    rt_json_append_str(caps, rt_cap_names[k]);
        } else if (!arr_has(caps, o->cap_add[i])) {
            rt_json_append_str(caps, o->cap_add[i]);
        }
    }
#undef HOST_HAS
    return caps;
}

static json_t *user_obj(const rt_user_t *u)
{
    json_t *uo = json_object();
    json_object_set_new(uo, "uid", json_integer(u->uid));
    json_object_set_new(uo, "gid", json_integer(u->gid));
    if (u->n_additional_gids) {
        json_t *g = json_array();
        for (size_t i = 0; i < u->n_additional_gids; i++)
            json_array_append_new(g, json_integer(u->additional_gids[i]));
        json_object_set_new(uo, "additionalGids", g);
    }
    return uo;
}

static json_t *rlimits_for(const rt_spec_input_t *in, const rt_spec_opts_t *o)
{
    json_t *rl = json_array();
    uint64_t cap = in->host ? in->host->nofile_hard : 1024;
    bool have_nofile = false;
    for (size_t i = 0; i < o->n_rlimits; i++)
        have_nofile |= strcmp(o->rlimits[i].type, "RLIMIT_NOFILE") == 0;
    if (!have_nofile) {
        uint64_t v = 1024 < cap ? 1024 : cap;
        json_t *r = json_object();
        json_object_set_new(r, "type", json_string("RLIMIT_NOFILE"));
        json_object_set_new(r, "hard", json_integer((json_int_t)v));
        json_object_set_new(r, "soft", json_integer((json_int_t)v));
        json_array_append_new(rl, r);
    }
    for (size_t i = 0; i < o->n_rlimits; i++) {
        uint64_t hard = o->rlimits[i].hard, soft = o->rlimits[i].soft;
        /* Only RLIMIT_NOFILE's host hard limit is known here; the others are
         * the daemon's own limits, which runc (as root) could exceed. */
        if (strcmp(o->rlimits[i].type, "RLIMIT_NOFILE") == 0 && hard > cap) {
            berth_log(BERTH_LOG_INFO,
                      "msg=\"rlimit above the host hard limit, lowered\" type=RLIMIT_NOFILE "
                      "asked=%llu host=%llu",
                      (unsigned long long)hard, (unsigned long long)cap);
            hard = cap;
        }
        if (soft > hard)
            soft = hard;
        json_t *r = json_object();
        json_object_set_new(r, "type", json_string(o->rlimits[i].type));
        json_object_set_new(r, "hard",
                            json_integer((json_int_t)(hard > INT64_MAX ? INT64_MAX : hard)));
        json_object_set_new(r, "soft",
                            json_integer((json_int_t)(soft > INT64_MAX ? INT64_MAX : soft)));
        json_array_append_new(rl, r);
    }
    return rl;
}

json_t *rt_spec_generate(const rt_spec_input_t *in, const rt_spec_opts_t *o, berth_error_t **err)
{
    const json_t *cfg = in->image_config ? json_object_get(in->image_config, "config") : NULL;
    if (cfg && !json_is_object(cfg))
        cfg = NULL;

    json_t *spec = json_object();
    json_object_set_new(spec, "ociVersion", json_string("1.0.2-dev"));

    /* process */
    json_t *proc = json_object();
    json_object_set_new(spec, "process", proc);
    json_object_set_new(proc, "terminal", json_boolean(o->tty));

    const char *user = o->user;
    if (!user && cfg)
        user = json_string_value(json_object_get(cfg, "User"));
    rt_user_t u;
    if (rt_user_resolve_etc(in->rootfd, in->etc, user, &u, err) < 0)
        goto fail;
    json_object_set_new(proc, "user", user_obj(&u));
    rt_user_clear(&u);

    json_t *args = json_array();
    json_object_set_new(proc, "args", args);
    if (o->args) {
        for (size_t i = 0; i < o->n_args; i++)
            rt_json_append_str(args, o->args[i]);
    } else if (cfg) {
        if (append_img_strings(args, json_object_get(cfg, "Entrypoint"), "Entrypoint", err) < 0 ||
            append_img_strings(args, json_object_get(cfg, "Cmd"), "Cmd", err) < 0)
            goto fail;
    }
    if (json_array_size(args) == 0) {
        berth_error_set(
            err, BERTH_E_INVALID_ARGUMENT,
            "no command: the image has no entrypoint or cmd, give one after the container id");
        goto fail;
    }

    json_t *env = json_array();
    json_object_set_new(proc, "env", env);
    rt_json_append_str(env, DEFAULT_PATH);
    if (cfg) {
        json_t *img_env = json_array();
        if (append_img_strings(img_env, json_object_get(cfg, "Env"), "Env", err) < 0) {
            json_decref(img_env);
            goto fail;
        }
        size_t i;
        json_t *v;
        json_array_foreach(img_env, i, v) env_put(env, json_string_value(v));
        json_decref(img_env);
    }
    if (o->tty && !env_has(env, "TERM"))
        rt_json_append_str(env, "TERM=xterm");
    if (o->net_host) {
        char hn[256] = "";
        if (gethostname(hn, sizeof(hn) - 1) == 0) {
            char kv[300];
            snprintf(kv, sizeof(kv), "HOSTNAME=%s", hn);
            env_put(env, kv);
        }
    }
    for (size_t i = 0; i < o->n_env; i++)
        env_put(env, o->env[i]);

    const char *cwd = o->cwd;
    if (!cwd && cfg) {
        const char *wd = json_string_value(json_object_get(cfg, "WorkingDir"));
        if (wd && wd[0])
            cwd = wd;
    }
    if (cwd && cwd[0] != '/') {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "working directory \"%s\" must be absolute",
                        cwd);
        goto fail;
    }
    json_object_set_new(proc, "cwd", json_string(cwd ? cwd : "/"));

    json_t *caps = caps_for(in, o);
    json_t *capo = json_object();
    json_object_set(capo, "bounding", caps);
    json_object_set(capo, "effective", caps);
    json_object_set(capo, "permitted", caps);
    json_object_set_new(proc, "capabilities", capo);
    json_object_set_new(proc, "rlimits", rlimits_for(in, o));
    bool nnp = o->no_new_privileges >= 0 ? o->no_new_privileges != 0 : !o->privileged;
    json_object_set_new(proc, "noNewPrivileges", json_boolean(nnp));

    /* root, hostname */
    json_t *root = json_object();
    json_object_set_new(root, "path", json_string("rootfs"));
    json_object_set_new(root, "readonly", json_boolean(o->readonly_rootfs));
    json_object_set_new(spec, "root", root);
    if (o->hostname && o->hostname[0])
        json_object_set_new(spec, "hostname", json_string(o->hostname));

    /* mounts */
    json_t *mounts = default_mounts(o->privileged);
    json_object_set_new(spec, "mounts", mounts);
    if (o->net_host) {
        static const char *const ro_bind[] = {"rbind", "ro", NULL};
        if (access("/etc/hosts", F_OK) == 0)
            put_mount(mounts, mount_obj("/etc/hosts", "bind", "/etc/hosts", ro_bind));
        if (access("/etc/resolv.conf", F_OK) == 0)
            put_mount(mounts, mount_obj("/etc/resolv.conf", "bind", "/etc/resolv.conf", ro_bind));
    }
    for (size_t i = 0; i < o->n_mounts; i++) {
        const rt_mount_t *m = &o->mounts[i];
        json_t *mo = json_object();
        json_object_set_new(mo, "destination", json_string(m->destination));
        json_object_set_new(mo, "type", json_string(m->type));
        json_object_set_new(mo, "source", json_string(m->source));
        json_t *op = json_array();
        for (size_t k = 0; k < m->n_options; k++)
            rt_json_append_str(op, m->options[k]);
        json_object_set_new(mo, "options", op);
        put_mount(mounts, mo);
    }

    if (o->n_annotations) {
        json_t *an = json_object();
        for (size_t i = 0; i < o->n_annotations; i++)
            json_object_set_new(an, o->annotations[i].key, json_string(o->annotations[i].value));
        json_object_set_new(spec, "annotations", an);
    }

    /* linux */
    json_t *lx = json_object();
    json_object_set_new(spec, "linux", lx);
    json_t *res = json_object();
    json_object_set_new(lx, "resources", res);
    json_t *devs = json_array();
    json_t *d = json_object();
    json_object_set_new(d, "allow", json_boolean(o->privileged));
    json_object_set_new(d, "access", json_string("rwm"));
    json_array_append_new(devs, d);
    json_object_set_new(res, "devices", devs);
    if (o->memory_limit > 0) {
        json_t *mem = json_object();
        json_object_set_new(mem, "limit", json_integer(o->memory_limit));
        json_object_set_new(res, "memory", mem);
    }
    if (o->cpus > 0 || o->cpu_shares || o->cpuset_cpus || o->cpuset_mems) {
        json_t *cpu = json_object();
        if (o->cpu_shares)
            json_object_set_new(cpu, "shares", json_integer((json_int_t)o->cpu_shares));
        if (o->cpus > 0) {
            const int64_t period = 100000;
            json_object_set_new(cpu, "quota", json_integer((json_int_t)(o->cpus * (double)period)));
            json_object_set_new(cpu, "period", json_integer(period));
        }
        if (o->cpuset_cpus)
            json_object_set_new(cpu, "cpus", json_string(o->cpuset_cpus));
        if (o->cpuset_mems)
            json_object_set_new(cpu, "mems", json_string(o->cpuset_mems));
        json_object_set_new(res, "cpu", cpu);
    }
    if (o->pids_limit > 0) {
        json_t *pids = json_object();
        json_object_set_new(pids, "limit", json_integer(o->pids_limit));
        json_object_set_new(res, "pids", pids);
    }
    if (in->cgroups_path)
        json_object_set_new(lx, "cgroupsPath", json_string(in->cgroups_path));
    json_t *nss = json_array();
    static const char *const ns_types[] = {"pid", "ipc", "uts", "mount", "network"};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(ns_types); i++) {
        if (o->net_host && strcmp(ns_types[i], "network") == 0)
            continue;
        json_t *n = json_object();
        json_object_set_new(n, "type", json_string(ns_types[i]));
        json_array_append_new(nss, n);
    }
    json_object_set_new(lx, "namespaces", nss);
    if (!o->privileged) {
        json_object_set_new(lx, "maskedPaths", str_array(masked_paths));
        json_object_set_new(lx, "readonlyPaths", str_array(readonly_paths));
    } else if (in->host && in->host->devices) {
        json_object_set(lx, "devices", in->host->devices);
    }
    bool unconfined = o->privileged || (o->seccomp && strcmp(o->seccomp, "unconfined") == 0);
    if (o->seccomp_profile) {
        json_error_t je;
        json_t *prof = json_loads(o->seccomp_profile, JSON_REJECT_DUPLICATES, &je);
        if (!prof || !json_is_object(prof) ||
            !json_is_string(json_object_get(prof, "defaultAction"))) {
            json_decref(prof);
            json_decref(caps);
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "seccomp_profile is not an OCI seccomp object with a defaultAction%s%s",
                            prof ? "" : ": ", prof ? "" : je.text);
            goto fail;
        }
        json_object_set_new(lx, "seccomp", prof);
    } else if (!unconfined) {
        json_object_set_new(lx, "seccomp", rt_seccomp_default(caps, in->host && in->host->x32));
    }
    json_decref(caps);
    return spec;
fail:
    json_decref(spec);
    return NULL;
}

json_t *rt_spec_from_user(const void *data, size_t len, const rt_spec_input_t *in,
                          berth_error_t **err)
{
    if (len > RT_MAX_SPEC) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "spec is larger than %u bytes", RT_MAX_SPEC);
        return NULL;
    }
    json_error_t je;
    json_t *spec = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (!spec || !json_is_object(spec)) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "spec is not a JSON object%s%s",
                        spec ? "" : ": ", spec ? "" : je.text);
        json_decref(spec);
        return NULL;
    }
    json_t *proc = json_object_get(spec, "process");
    json_t *args = proc ? json_object_get(proc, "args") : NULL;
    if (!json_is_string(json_object_get(spec, "ociVersion")) || !json_is_object(proc) ||
        !json_is_array(args) || json_array_size(args) == 0 ||
        !json_is_string(json_object_get(proc, "cwd"))) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "spec needs ociVersion and a process with args and cwd");
        json_decref(spec);
        return NULL;
    }
    /* The rootfs is always the snapshot berth mounts into the bundle. */
    json_t *root = json_object_get(spec, "root");
    if (!json_is_object(root)) {
        root = json_object();
        json_object_set_new(spec, "root", root);
    }
    json_object_set_new(root, "path", json_string("rootfs"));
    json_t *lx = json_object_get(spec, "linux");
    if (!json_is_object(lx)) {
        lx = json_object();
        json_object_set_new(spec, "linux", lx);
    }
    if (!json_object_get(lx, "cgroupsPath") && in->cgroups_path)
        json_object_set_new(lx, "cgroupsPath", json_string(in->cgroups_path));
    return spec;
}

json_t *rt_spec_exec_process(const json_t *spec, const msgpack_object *p, berth_error_t **err)
{
    const json_t *base = json_object_get(spec, "process");
    if (!json_is_object(base)) {
        berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "the container spec has no process");
        return NULL;
    }
    json_t *proc = json_deep_copy(base);
    char **args = NULL, **env = NULL;
    size_t n_args = 0, n_env = 0;
    _cleanup_free_ char *cwd = NULL;
    _cleanup_free_ char *user = NULL;
    bool tty = false;
    if (get_strv(p, "args", &args, &n_args, err) < 0 || get_strv(p, "env", &env, &n_env, err) < 0 ||
        berth_mp_get_strdup(p, "cwd", &cwd, err) < 0 ||
        berth_mp_get_strdup(p, "user", &user, err) < 0 ||
        berth_mp_get_bool(p, "terminal", &tty, err) < 0)
        goto fail;
    if (!args || n_args == 0) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "exec needs a command (args)");
        goto fail;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < n_args; i++)
        rt_json_append_str(a, args[i]);
    json_object_set_new(proc, "args", a);
    json_t *e = json_object_get(proc, "env");
    if (!json_is_array(e)) {
        e = json_array();
        json_object_set_new(proc, "env", e);
    }
    for (size_t i = 0; i < n_env; i++) {
        if (!strchr(env[i], '=') || env[i][0] == '=') {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "environment entry \"%s\" must look like KEY=VALUE", env[i]);
            goto fail;
        }
        env_put(e, env[i]);
    }
    if (tty && !env_has(e, "TERM"))
        rt_json_append_str(e, "TERM=xterm");
    if (cwd) {
        if (cwd[0] != '/') {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "exec cwd must be absolute");
            goto fail;
        }
        json_object_set_new(proc, "cwd", json_string(cwd));
    }
    if (user) {
        /* Exec users are numeric: names would need the live rootfs. */
        const char *c = strchr(user, ':');
        uint32_t uid, gid = 0;
        if (rt_parse_id(user, c ? (size_t)(c - user) : strlen(user), &uid) < 0 ||
            (c && rt_parse_id(c + 1, strlen(c + 1), &gid) < 0)) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "exec user must be UID or UID:GID (got \"%s\")", user);
            goto fail;
        }
        rt_user_t u = {.uid = uid, .gid = gid};
        uint32_t g = gid;
        u.additional_gids = &g;
        u.n_additional_gids = 1;
        json_object_set_new(proc, "user", user_obj(&u));
    }
    json_object_set_new(proc, "terminal", json_boolean(tty));
    free_strv(args, n_args);
    free_strv(env, n_env);
    return proc;
fail:
    free_strv(args, n_args);
    free_strv(env, n_env);
    json_decref(proc);
    return NULL;
}

static bool valid_digest(const char *d)
{
    if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != 71)
        return false;
    for (const char *p = d + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

int rt_chain_id(const json_t *cfg, char **out, berth_error_t **err)
{
    const json_t *rootfs = json_object_get(cfg, "rootfs");
    const json_t *ids = rootfs ? json_object_get(rootfs, "diff_ids") : NULL;
    if (!json_is_array(ids) || json_array_size(ids) == 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "image config has no rootfs.diff_ids: the image has no layers");
    char chain[72];
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
    {
        const char *d = json_string_value(v);
        if (!valid_digest(d))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "image config rootfs.diff_ids[%zu] is not a sha256 digest", i);
        if (i == 0) {
            memcpy(chain, d, 72);
            continue;
        }
        /* chainID(n) = sha256(chainID(n-1) + " " + diffID(n)) */
        char buf[72 + 1 + 72];
        int n = snprintf(buf, sizeof(buf), "%s %s", chain, d);
        berth_sha256_digest_string(buf, (size_t)n, chain);
    }
    *out = strdup(chain);
    return *out ? 0 : berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
}

bool rt_spec_fast_lifecycle(const json_t *spec)
{
    json_t *hooks = json_object_get(spec, "hooks");
    if (hooks && !json_is_null(hooks)) {
        if (!json_is_object(hooks))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach(hooks, k, v)
        {
            if (!json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
                return false;
        }
    }
    json_t *lx = json_object_get(spec, "linux");
    if (!json_is_object(lx) || json_object_get(lx, "intelRdt"))
        return false;
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(lx, "namespaces"), i, n)
    {
        const char *type = json_string_value(json_object_get(n, "type"));
        if (type && strcmp(type, "pid") == 0) {
            const char *p = json_string_value(json_object_get(n, "path"));
            return !p || !p[0];
        }
    }
    return false;
}
