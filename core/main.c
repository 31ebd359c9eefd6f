/* SPDX-License-Identifier: Apache-2.0 */
/* berthd: flags and subcommands, directories, the state lock, the loop,
 * signals, graceful shutdown and sd_notify. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "core.h"

#define DEFAULT_CONFIG_FILE "/etc/berth/config.json"
/* After SIGKILL to stragglers, how long until berthd exits regardless. */
#define FINAL_GRACE_MS 1500

static void usage(FILE *out)
{
    fprintf(out,
            "usage: berthd [flags]                run the daemon\n"
            "       berthd config default         print the complete default config (JSON)\n"
            "       berthd config dump [flags]    print the effective config\n"
            "       berthd --version\n"
            "\n"
            "flags:\n"
            "  --config FILE       config file (default " DEFAULT_CONFIG_FILE " if it exists)\n"
            "  --root DIR          persistent state (default /var/lib/berth)\n"
            "  --state DIR         volatile state and sockets (default /run/berth)\n"
            "  --address PATH      public socket (default <state>/berth.sock)\n"
            "  --log-level LEVEL   error|warn|info|debug|trace\n"
            "  --log-format FMT    logfmt|json\n");
}

void core_sd_notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    /* Only filesystem sockets: berth never uses the abstract namespace. */
    if (path[0] != '/' || n >= sizeof(sa.sun_path))
        return;
    memcpy(sa.sun_path, path, n);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1)) < 0)
        berth_log(BERTH_LOG_WARN, "msg=\"sd_notify failed\" socket=%s err=\"%s\"", path,
                  strerror(errno));
    close(fd);
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *s = buf + 1; *s; s++) {
        if (*s == '/') {
            *s = 0;
            if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                return -errno;
            *s = '/';
        }
    }
    if (mkdir(buf, mode) < 0) {
        if (errno != EEXIST)
            return -errno;
        struct stat st;
        if (stat(buf, &st) < 0)
            return -errno;
        if (!S_ISDIR(st.st_mode))
            return -ENOTDIR;
        return 0;
    }
    chmod(buf, mode); /* mkdir's mode went through the umask */
    return 0;
}

static void make_boot_id(char out[33])
{
    uint8_t b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        uint64_t t = (uint64_t)berth_now_ns() ^ ((uint64_t)getpid() << 32);
        for (size_t i = 0; i < sizeof(b); i++)
            b[i] = (uint8_t)(t >> ((i % 8) * 8)) ^ (uint8_t)(i * 37);
    }
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static char *exe_dir(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0)
        return NULL;
    buf[n] = 0;
    return strdup(dirname(buf));
}

static void final_stop(uv_timer_t *t)
{
    core_t *c = t->data;
    if (c->shutdown_phase == 1) {
        core_supervisor_kill_all(c);
        c->shutdown_phase = 2;
        uv_timer_start(&c->shutdown_timer, final_stop, FINAL_GRACE_MS, 0);
        return;
    }
    berth_log(BERTH_LOG_ERROR, "msg=\"plugins still running after SIGKILL; exiting anyway\"");
    uv_stop(c->loop);
}

void core_shutdown_check(core_t *c)
{
    if (!c->shutting_down || c->shutdown_phase == 3)
        return;
    if (!core_supervisor_all_stopped(c))
        return;
    c->shutdown_phase = 3;
    uv_timer_stop(&c->shutdown_timer);
    berth_log(BERTH_LOG_INFO, "msg=\"all plugins stopped; exiting\"");
    uv_stop(c->loop);
}

static void begin_shutdown(core_t *c, int signum)
{
    if (c->shutting_down) {
        if (signum == SIGINT || signum == SIGTERM) {
            berth_log(BERTH_LOG_WARN, "msg=\"second signal: killing plugins now\"");
            core_supervisor_kill_all(c);
        }
        return;
    }
    c->shutting_down = true;
    c->shutdown_phase = 1;
    berth_log(BERTH_LOG_INFO, "msg=\"shutting down\" signal=%s", strsignal(signum));
    core_sd_notify("STOPPING=1");
    core_listen_close(c);
    core_router_fail_queue_unresolved(c);
    core_supervisor_shutdown(c);
    /* Clients get their pending replies, then EOF. */
    for (core_peer_t *p = c->peers; p; p = p->next)
        if (p->kind == CORE_PEER_CLIENT)
            core_peer_close(p, true);
    uv_timer_init(c->loop, &c->shutdown_timer);
    c->shutdown_timer.data = c;
    uv_timer_start(&c->shutdown_timer, final_stop, c->cfg->shutdown_timeout_ms, 0);
    core_shutdown_check(c);
}

/* What SIGHUP needs to rebuild the config as at start. */
static const char *reload_file;
static core_overrides_t reload_ov;

/* SIGHUP: re-reads the config file. The log level and format apply at once
 * (unless given on the command line); every other changed key is named with
 * what it takes to apply it. A config that does not parse or validate is
 * refused and the running one kept. (Blocking read of a small local file:
 * acceptable on the loop, once per signal.) */
static void reload_config(core_t *c)
{
    berth_error_t *err = NULL;
    json_t *user = NULL;
    const char *path = reload_file;
    if (!path && access(DEFAULT_CONFIG_FILE, F_OK) == 0)
        path = DEFAULT_CONFIG_FILE;
    if (path && !(user = core_config_read_file(path, &err))) {
        berth_log(BERTH_LOG_ERROR,
                  "msg=\"SIGHUP: config not reloaded, keeping the running one\" err=\"%s\"",
                  err->message);
        berth_error_free(&err);
        return;
    }
    char *xdir = exe_dir();
    core_config_t ncfg;
    int r = core_config_build(&ncfg, user, &reload_ov, xdir, &err);
    free(xdir);
    json_decref(user);
    if (r < 0) {
        berth_log(BERTH_LOG_ERROR,
                  "msg=\"SIGHUP: config not reloaded, keeping the running one\" err=\"%s\"",
                  err->message);
        berth_error_free(&err);
        return;
    }
    const char *key;
    json_t *nv;
    int applied = 0, pending = 0;
    json_object_foreach(ncfg.effective, key, nv)
    {
        json_t *ov = json_object_get(c->cfg->effective, key);
        if (ov && json_equal(ov, nv))
            continue;
        if (strcmp(key, "log_level") == 0) {
            berth_log_level_current = ncfg.log_level;
            json_object_set(c->cfg->effective, key, nv);
            c->cfg->log_level = ncfg.log_level;
            applied++;
            berth_log(BERTH_LOG_INFO, "msg=\"SIGHUP: applied\" key=log_level value=%s",
                      json_string_value(nv));
        } else if (strcmp(key, "log_format") == 0) {
            berth_log_set_json(ncfg.log_json);
            c->cfg->log_json = ncfg.log_json;
            json_object_set(c->cfg->effective, key, nv);
            applied++;
            berth_log(BERTH_LOG_INFO, "msg=\"SIGHUP: applied\" key=log_format value=%s",
                      json_string_value(nv));
        } else if (strcmp(key, "plugins") == 0) {
            const char *id;
            json_t *pv;
            json_object_foreach(nv, id, pv)
            {
                json_t *old = json_object_get(ov, id);
                if (old && json_equal(old, pv))
                    continue;
                pending++;
                /* Only the plugin's own `config` changed: hand the new one to
                 * its next instance. enabled/path/args need a berthd restart. */
                core_plugin_conf_t *pc = NULL, *npc = NULL;
                for (size_t i = 0; i < c->cfg->n_plugins; i++)
                    if (strcmp(c->cfg->plugins[i].id, id) == 0)
                        pc = &c->cfg->plugins[i];
                for (size_t i = 0; i < ncfg.n_plugins; i++)
                    if (strcmp(ncfg.plugins[i].id, id) == 0)
                        npc = &ncfg.plugins[i];
                bool only_config =
                    pc && npc && pc->enabled == npc->enabled && strcmp(pc->path, npc->path) == 0;
                if (only_config) {
                    json_t *nc = npc->config;
                    json_incref(nc);
                    json_decref(pc->config);
                    pc->config = nc;
                    berth_log(BERTH_LOG_WARN,
                              "msg=\"SIGHUP: plugin config changed; apply it with `berth plugins "
                              "restart %s`\" plugin=%s",
                              id, id);
                } else {
                    berth_log(BERTH_LOG_WARN,
                              "msg=\"SIGHUP: plugin added, removed, enabled or moved: needs a "
                              "berthd restart\" plugin=%s",
                              id);
                }
            }
        } else {
            pending++;
            berth_log(BERTH_LOG_WARN,
                      "msg=\"SIGHUP: changed key needs a berthd restart to apply\" key=%s", key);
        }
    }
    berth_log(BERTH_LOG_INFO, "msg=\"SIGHUP: config reloaded\" file=%s applied=%d need_restart=%d",
              path ? path : "(defaults)", applied, pending);
    core_config_free(&ncfg);
}

static void on_signal(uv_signal_t *h, int signum)
{
    core_t *c = h->data;
    if (signum == SIGHUP) {
        reload_config(c);
        return;
    }
    begin_shutdown(c, signum);
}

static int resolve_group(core_t *c, const char *group, berth_error_t **err)
{
    if (!group)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(group, &end, 10);
    if (*group && end && !*end && errno == 0) {
        c->group_gid = (gid_t)v;
        c->have_group = true;
        return 0;
    }
    struct group *g = getgrnam(group);
    if (!g)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config key group: no such group \"%s\"", group);
    c->group_gid = g->gr_gid;
    c->have_group = true;
    return 0;
}

static int take_lock(const char *path, berth_error_t **err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return berth_error_errno(err, errno, "open lock file %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                   "another berthd is running with this state directory (%s is "
                                   "locked)",
                                   path);
        return berth_error_errno(err, e, "lock %s", path);
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) == 0 && write(fd, pid, (size_t)n) < 0) {
        /* informational only */
    }
    return fd;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"root", required_argument, NULL, 'r'},
        {"state", required_argument, NULL, 's'},
        {"address", required_argument, NULL, 'a'},
        {"log-level", required_argument, NULL, 'l'},
        {"log-format", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_file = NULL;
    core_overrides_t ov = {0};
    int o;
    while ((o = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            config_file = optarg;
            break;
        case 'r':
            ov.root = optarg;
            break;
        case 's':
            ov.state = optarg;
            break;
        case 'a':
            ov.address = optarg;
            break;
        case 'l':
            ov.log_level = optarg;
            break;
        case 'f':
            ov.log_format = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("berthd %s (revision %s)\n", BERTH_VERSION, BERTH_REVISION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    const char *sub = optind < argc ? argv[optind] : NULL;
    const char *subsub = optind + 1 < argc ? argv[optind + 1] : NULL;
    if (sub &&
        (strcmp(sub, "config") != 0 || !subsub ||
         (strcmp(subsub, "default") != 0 && strcmp(subsub, "dump") != 0) || optind + 2 != argc)) {
        fprintf(stderr, "berthd: unknown command \"%s%s%s\"\n", sub, subsub ? " " : "",
                subsub ? subsub : "");
        usage(stderr);
        return 2;
    }
    berth_log_init("berthd", BERTH_LOG_INFO);

    if (sub && strcmp(subsub, "default") == 0) {
        json_t *d = core_config_defaults();
        char *s = json_dumps(d, JSON_INDENT(2));
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(d);
        return 0;
    }

    berth_error_t *err = NULL;
    json_t *user = NULL;
    if (config_file) {
        user = core_config_read_file(config_file, &err);
        if (!user)
            goto fail;
    } else if (access(DEFAULT_CONFIG_FILE, F_OK) == 0) {
        user = core_config_read_file(DEFAULT_CONFIG_FILE, &err);
        if (!user)
            goto fail;
    }
    char *xdir = exe_dir();
    static core_config_t cfg;
    int r = core_config_build(&cfg, user, &ov, xdir, &err);
    free(xdir);
    json_decref(user);
    if (r < 0)
        goto fail;
    if (sub) {
        char *s = json_dumps(cfg.effective, JSON_INDENT(2));
        printf("%s\n", s ? s : "{}");
        free(s);
        core_config_free(&cfg);
        return 0;
    }

    berth_log_init("berthd", (berth_log_level_t)cfg.log_level);
    berth_log_set_json(cfg.log_json);
    reload_file = config_file;
    reload_ov = ov;
    signal(SIGPIPE, SIG_IGN);

    static core_t core;
    core_t *c = &core;
    c->cfg = &cfg;
    c->pid = getpid();
    c->started_ns = berth_now_ns();
    make_boot_id(c->boot_id);
    if (resolve_group(c, cfg.group, &err) < 0)
        goto fail;
    ipc_conn_opts_default(&c->conn_opts);
    c->conn_opts.max_frame = cfg.max_frame;
    c->conn_opts.max_write_queue = (size_t)cfg.max_write_queue;

    int e;
    if ((e = mkdir_p(cfg.root, 0711)) < 0) {
        berth_error_errno(&err, -e, "create root directory %s", cfg.root);
        goto fail;
    }
    if ((e = mkdir_p(cfg.state, 0711)) < 0) {
        berth_error_errno(&err, -e, "create state directory %s", cfg.state);
        goto fail;
    }
    int lock_fd = take_lock(cfg.lock_path, &err);
    if (lock_fd < 0)
        goto fail;

    c->loop = uv_default_loop();
    core_router_init(c);
    if (core_listen_all(c, &err) < 0)
        goto fail;
    uv_signal_init(c->loop, &c->sig_term);
    uv_signal_init(c->loop, &c->sig_int);
    uv_signal_init(c->loop, &c->sig_hup);
    c->sig_term.data = c->sig_int.data = c->sig_hup.data = c;
    uv_signal_start(&c->sig_term, on_signal, SIGTERM);
    uv_signal_start(&c->sig_int, on_signal, SIGINT);
    uv_signal_start(&c->sig_hup, on_signal, SIGHUP);

    berth_log(BERTH_LOG_INFO,
              "msg=\"berthd starting\" version=%s revision=%s pid=%d boot_id=%s root=%s state=%s",
              BERTH_VERSION, BERTH_REVISION, (int)c->pid, c->boot_id, cfg.root, cfg.state);
    if (core_supervisor_start(c, &err) < 0)
        goto fail;

    uv_run(c->loop, UV_RUN_DEFAULT);

    /* Give replies still queued to clients a moment to go out. */
    for (int i = 0; i < 20 && uv_run(c->loop, UV_RUN_NOWAIT); i++)
        usleep(2000);
    core_listen_close(c);
    berth_log(BERTH_LOG_INFO, "msg=\"berthd stopped\"");
    core_events_fini(c);
    close(lock_fd);
    /* Handles of connections and plugins still closing are reclaimed by the
     * process exit; nothing on disk depends on them. */
    return c->exit_code;

fail:
    fprintf(stderr, "berthd: %s\n", err && err->message ? err->message : "failed");
    if (core.listen_pub || core.listen_plugins)
        core_listen_close(&core);
    berth_error_free(&err);
    return 1;
}
