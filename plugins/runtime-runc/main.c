/* SPDX-License-Identifier: Apache-2.0 */
/* berth-runtime-runc: containers.create/delete (spec generation, rootfs
 * snapshot) and tasks.* on runc through one berth-shim per container.
 * main() forks the shim launcher before anything else, then runs the SDK;
 * init() reads the config, takes the root lock and recovers tasks from the
 * state dir (publishing exits missed while no runtime was running). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "berth/log.h"
#include "rt.h"

rt_plugin_t rt_g = {.lock_fd = -1};

static const char *const config_keys[] = {"runtime",   "cgroup_driver",  "cgroup_parent",
                                          "shim_path", "shim_log_level", "exit_wait_ms",
                                          NULL};

void rt_config_free(rt_config_t *c)
{
    free(c->runtime);
    free(c->cgroup_driver);
    free(c->cgroup_parent);
    free(c->shim_path);
    free(c->shim_log_level);
    memset(c, 0, sizeof(*c));
}

static char *self_dir(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0)
        return NULL;
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = 0;
    return strdup(buf);
}

int rt_config_parse(rt_config_t *c, const msgpack_object *cfg, berth_error_t **err)
{
    memset(c, 0, sizeof(*c));
    c->exit_wait_ms = 2000;
    if (cfg && cfg->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < cfg->via.map.size; i++) {
            const msgpack_object *k = &cfg->via.map.ptr[i].key;
            bool known = false;
            for (const char *const *kk = config_keys; *kk; kk++)
                known |= berth_mp_str_eq(k, *kk);
            if (!known)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "unknown key \"plugins.runtime-runc.config.%.*s\" (known: "
                                       "runtime, cgroup_driver, cgroup_parent, shim_path, "
                                       "shim_log_level, exit_wait_ms)",
                                       k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
                                       k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?");
        }
        if (berth_mp_get_strdup(cfg, "runtime", &c->runtime, err) < 0 ||
            berth_mp_get_strdup(cfg, "cgroup_driver", &c->cgroup_driver, err) < 0 ||
            berth_mp_get_strdup(cfg, "cgroup_parent", &c->cgroup_parent, err) < 0 ||
            berth_mp_get_strdup(cfg, "shim_path", &c->shim_path, err) < 0 ||
            berth_mp_get_strdup(cfg, "shim_log_level", &c->shim_log_level, err) < 0 ||
            berth_mp_get_u64(cfg, "exit_wait_ms", &c->exit_wait_ms, err) < 0)
            return berth_error_wrap(err, "config runtime-runc");
    }
#define DEF(f, v)                                                                                  \
    if (!c->f || !c->f[0]) {                                                                       \
        free(c->f);                                                                                \
        c->f = strdup(v);                                                                          \
    }
    DEF(runtime, "runc");
    DEF(cgroup_driver, "cgroupfs");
    DEF(cgroup_parent, "/berth");
    DEF(shim_log_level, "info");
#undef DEF
    if (!c->shim_path || !c->shim_path[0]) {
        free(c->shim_path);
        char *d = self_dir();
        if (!d || asprintf(&c->shim_path, "%s/berth-shim", d) < 0)
            c->shim_path = NULL;
        free(d);
    }
    if (strcmp(c->cgroup_driver, "cgroupfs") != 0 && strcmp(c->cgroup_driver, "systemd") != 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config runtime-runc.cgroup_driver must be \"cgroupfs\" or "
                               "\"systemd\" (got \"%s\")",
                               c->cgroup_driver);
    if (c->cgroup_parent[0] != '/' && strcmp(c->cgroup_driver, "cgroupfs") == 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config runtime-runc.cgroup_parent must be an absolute path");
    if (berth_log_level_parse(c->shim_log_level) < 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config runtime-runc.shim_log_level: unknown level \"%s\"",
                               c->shim_log_level);
    if (c->exit_wait_ms > 60000)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config runtime-runc.exit_wait_ms must be at most 60000");
    if (!c->shim_path || c->shim_path[0] != '/' || access(c->shim_path, X_OK) != 0)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "berth-shim not found at %s: install it next to "
                               "berth-runtime-runc or set runtime-runc.shim_path",
                               c->shim_path ? c->shim_path : "(unknown)");
    return 0;
}

char *rt_cgroups_path(const char *ns, const char *id)
{
    char *p = NULL;
    if (strcmp(rt_g.cfg.cgroup_driver, "systemd") == 0) {
        /* runc's systemd form "slice:prefix:name". */
        if (asprintf(&p, "system.slice:berth-%s:%s", ns, id) < 0)
            p = NULL;
    } else if (asprintf(&p, "%s/%s/%s", rt_g.cfg.cgroup_parent, ns, id) < 0) {
        p = NULL;
    }
    return p;
}

static bool executable_in_path(const char *name, char **out)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    char *copy = strdup(path), *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", d, name);
        if (access(p, X_OK) == 0) {
            *out = strdup(p);
            free(copy);
            return true;
        }
    }
    free(copy);
    return false;
}

int rt_runtime_binary(const char *name, char **bin, berth_error_t **err)
{
    const char *b = rt_g.cfg.runtime;
    if (name && name[0] && strcmp(name, "runc") != 0 &&
        strncmp(name, "io.containerd.runc.", 19) != 0)
        b = strncmp(name, "io.containerd.crun.", 19) == 0 ? "crun" : name;
    if (strspn(b, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/") !=
        strlen(b))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "invalid runtime name \"%s\"", name);
    if (b[0] == '/') {
        if (access(b, X_OK) != 0)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "runtime %s is not executable",
                                   b);
        *bin = strdup(b);
        return 0;
    }
    if (strchr(b, '/'))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "runtime \"%s\": give a name found in PATH or an absolute path", b);
    if (!executable_in_path(b, bin))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "runtime %s not found in PATH (install it, or choose another with "
                               "--runtime)",
                               b);
    return 0;
}

static int take_lock(const char *root, berth_error_t **err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/LOCK", root);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return berth_error_errno(err, errno, "open %s", path);
    for (int i = 0; i < 100; i++) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            rt_g.lock_fd = fd;
            return 0;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    close(fd);
    return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                           "another berth-runtime-runc holds %s; stop it first", path);
}

/* The sandbox (issue 9): the SDK's allowlist plus what tasks need — mount
 * and unmount rootfs, FIFOs (mknodat), users read with openat2 in the image
 * root, overlay mounts from a directory in a forked child (fork, chdir),
 * pidfd_open to wait for a shim. Programs are never executed here: shims and
 * `berth-shim cleanup` are started by the launcher, forked before any of this
 * and unconfined, so NO_NEW_PRIVS never reaches a container. Denied first,
 * explicitly, what a runtime plugin must never do itself. Loaded once
 * recovery is done (it runs nothing else). */
static int rt_sandbox(berth_plugin_t *p, berth_error_t **err)
{
    static const char *const extra[] = {
        "mount", "umount2", "mknodat",    "mknod", "openat2",         "chdir", "fchdir",
        "fork",  "kill",    "pidfd_open", "wait4", "restart_syscall", NULL};
    static const char *const denied[] = {
        "execve", "execveat", "ptrace",     "process_vm_readv", "process_vm_writev",
        "setns",  "unshare",  "pivot_root", "chroot",           "init_module",
        NULL};
    if (berth_plugin_sandbox(p, NULL, denied, err) < 0 ||
        berth_plugin_sandbox(p, extra, NULL, err) < 0)
        return berth_error_wrap(err, "runtime-runc sandbox");
    return 0;
}

static int rt_init(berth_plugin_t *p, berth_error_t **err)
{
    rt_g.p = p;
    if (rt_config_parse(&rt_g.cfg, berth_plugin_config(p), err) < 0)
        return -1;
    if (take_lock(berth_plugin_root(p), err) < 0)
        return -1;
    const char *state = berth_plugin_state(p);
    rt_g.state = strdup(state);
    if (asprintf(&rt_g.runtime_dir, "%s/runtime", state) < 0 ||
        asprintf(&rt_g.fifo_root, "%s/fifo", state) < 0 ||
        asprintf(&rt_g.runc_root, "%s/runc", state) < 0 ||
        asprintf(&rt_g.tmp_dir, "%s/runtime-tmp", state) < 0)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    if (rt_mkdir_p(rt_g.runtime_dir, 0700, err) < 0 || rt_mkdir_p(rt_g.fifo_root, 0700, err) < 0 ||
        rt_mkdir_p(rt_g.runc_root, 0700, err) < 0 || rt_mkdir_p(rt_g.tmp_dir, 0700, err) < 0)
        return -1;
    rt_host_probe(&rt_g.host, false);
    if (rt_sync_init(berth_plugin_loop(p)) != 0)
        return berth_error_set(err, BERTH_E_INTERNAL, "uv_async_init failed");
    _cleanup_free_ char *bin = NULL;
    if (rt_runtime_binary(NULL, &bin, err) < 0)
        return berth_error_wrap(err, "config runtime-runc.runtime");
    berth_log(BERTH_LOG_INFO, "msg=\"runtime ready\" runtime=%s cgroup_driver=%s shim=%s", bin,
              rt_g.cfg.cgroup_driver, rt_g.cfg.shim_path);
    /* Exits that happened while no runtime ran are published now, before
     * plugin.ready (PROTOCOL.md, "Start, ready, replace"). */
    if (rt_recover(err) < 0)
        return -1;
    return rt_sandbox(p, err);
}

static void rt_fini(berth_plugin_t *p)
{
    (void)p;
    pthread_mutex_lock(&rt_g.mu);
    rt_g.stopping = true;
    pthread_mutex_unlock(&rt_g.mu);
    rt_sync_close();
    rt_tasks_unsubscribe_all();
    /* Shims and containers keep running; a new instance reconnects. */
}

static const char *const requires[] = {"metadata", "content", NULL};

int main(int argc, char **argv)
{
    /* First: the launcher, before any thread, socket or sandbox exists. */
    if (rt_launcher_start() < 0) {
        fprintf(stderr, "runtime-runc: cannot start the shim launcher: %s\n", strerror(errno));
        return 1;
    }
    /* Worker threads block on shims and on other plugins: more than
     * libuv's default 4 keep concurrent starts flowing. */
    setenv("UV_THREADPOOL_SIZE", "16", 0);
    berth_plugin_desc_t desc = {
        .id = "runtime-runc",
        .type = "io.berth.runtime.v1",
        .version = "0.1.0",
        .methods = rt_methods,
        .n_methods = rt_n_methods,
        .requires = requires,
        .init = rt_init,
        .fini = rt_fini,
        .data = &rt_g,
    };
    int rc = berth_plugin_main(&desc, argc, argv);
    rt_config_free(&rt_g.cfg);
    rt_host_clear(&rt_g.host);
    if (rt_g.lock_fd >= 0)
        close(rt_g.lock_fd);
    return rc;
}
