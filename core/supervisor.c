/* SPDX-License-Identifier: Apache-2.0 */
/* The supervisor: spawns each configured plugin (uv_spawn, a socketpair end
 * as fd 3), re-logs its stdout/stderr line by line, runs the registration
 * handshake, restarts it with backoff when it exits, marks crash loops
 * `failed`, kills plugins that stop answering plugin.health, and carries out
 * plugins.restart / plugins.replace (drain → stop → start, with requests
 * queued meanwhile) and plugin.recycle (the same restart, asked for by an idle
 * plugin that wants to give back the memory of libraries it loaded). Only the
 * pids it spawned are ever signalled. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "core.h"

extern char **environ;

#define LINE_MAX_BYTES 4096
#define CRASH_WINDOW_MS 60000
#define STABLE_UPTIME_MS 30000
#define CONN_LOST_GRACE_MS 1000
#define PIPE_LINGER_MS 300

static void spawn(core_plugin_t *pl);
static void on_health_timer(uv_timer_t *t);

const char *core_plugin_status_name(core_plugin_status_t s)
{
    switch (s) {
    case CORE_PS_STARTING:
        return "starting";
    case CORE_PS_OK:
        return "ok";
    case CORE_PS_RESTARTING:
        return "restarting";
    case CORE_PS_FAILED:
        return "failed";
    case CORE_PS_SKIP:
        return "skip";
    }
    return "unknown";
}

core_plugin_t *core_plugin_find(core_t *c, const char *id)
{
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next)
        if (strcmp(pl->id, id) == 0)
            return pl;
    return NULL;
}

/* ---- events about plugins ------------------------------------------------ */

static void publish_plugin_event(core_t *c, const char *topic, core_plugin_t *pl, pid_t pid,
                                 const char *extra_key, const char *extra_val, int64_t num_key_v,
                                 const char *num_key)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2 + (extra_key ? 1 : 0) + (num_key ? 1 : 0));
    berth_mp_kv_str(&b.pk, "id", pl->id);
    berth_mp_kv_i64(&b.pk, "pid", pid);
    if (extra_key)
        berth_mp_kv_str(&b.pk, extra_key, extra_val);
    if (num_key)
        berth_mp_kv_i64(&b.pk, num_key, num_key_v);
    core_events_publish(c, topic, "", b.buf.data, b.buf.size, "core");
    berth_mpbuf_destroy(&b);
}

/* ---- sd_notify readiness --------------------------------------------------- */

char *core_supervisor_not_ready(core_t *c)
{
    size_t len = 0;
    char *out = NULL;
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next) {
        if (pl->external || pl->status == CORE_PS_SKIP || pl->status == CORE_PS_OK)
            continue;
        size_t n = strlen(pl->id);
        char *nb = realloc(out, len + n + 3);
        if (!nb)
            break;
        out = nb;
        if (len) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, pl->id, n);
        len += n;
        out[len] = 0;
    }
    return out;
}

void core_supervisor_check_ready(core_t *c)
{
    if (c->notified_ready || c->shutting_down)
        return;
    /* A `failed` plugin (crash loop, binary missing) does not hold readiness
     * back: waiting for ready_timeout_ms would change nothing. */
    bool any_failed = false;
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next) {
        if (pl->external || pl->status == CORE_PS_SKIP || pl->ever_ready)
            continue;
        if (pl->status != CORE_PS_FAILED)
            return;
        any_failed = true;
    }
    c->notified_ready = true;
    uv_timer_stop(&c->ready_timer);
    if (any_failed) {
        char *nr = core_supervisor_not_ready(c);
        berth_log(BERTH_LOG_WARN, "msg=\"serving; some plugins failed\" not_ready=\"%s\"",
                  nr ? nr : "");
        char msg[1200];
        snprintf(msg, sizeof(msg), "READY=1\nSTATUS=berthd ready; plugins failed: %s",
                 nr ? nr : "none");
        core_sd_notify(msg);
        free(nr);
        return;
    }
    berth_log(BERTH_LOG_INFO, "msg=\"all plugins ready\" boot_id=%s", c->boot_id);
    core_sd_notify("READY=1\nSTATUS=berthd ready; all plugins ready");
}

static void on_ready_timeout(uv_timer_t *t)
{
    core_t *c = t->data;
    if (c->notified_ready)
        return;
    c->notified_ready = true;
    char *nr = core_supervisor_not_ready(c);
    berth_log(BERTH_LOG_WARN, "msg=\"plugins not ready in time; serving anyway\" not_ready=\"%s\"",
              nr ? nr : "");
    char msg[1200];
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=berthd ready; plugins not ready: %s",
             nr ? nr : "none");
    core_sd_notify(msg);
    free(nr);
}

/* ---- instance lifetime ---------------------------------------------------- */

static void inst_maybe_free(core_inst_t *inst)
{
    if (inst->open_handles > 0 || !inst->conn_closed || !inst->exited)
        return;
    free(inst->linebuf[0]);
    free(inst->linebuf[1]);
    free(inst->path);
    free(inst);
}

static void on_handle_closed(uv_handle_t *h)
{
    core_inst_t *inst = h->data;
    inst->open_handles--;
    inst_maybe_free(inst);
}

static void close_handle(core_inst_t *inst, uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h)) {
        h->data = inst;
        uv_close(h, on_handle_closed);
    }
}

static void inst_kill(core_inst_t *inst, int sig)
{
    if (inst->exited || !inst->spawned)
        return;
    inst->killed = inst->killed || sig == SIGKILL;
    int r = uv_process_kill(&inst->proc, sig);
    if (r < 0 && r != UV_ESRCH)
        berth_log(BERTH_LOG_WARN,
                  "msg=\"cannot signal plugin\" plugin=%s pid=%d signal=%d err=\"%s\"",
                  inst->plugin->id, (int)inst->pid, sig, uv_strerror(r));
}

/* ---- output re-logging ------------------------------------------------------ */

static void relog_line(core_inst_t *inst, int idx, char *line, size_t len)
{
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        line[--len] = 0;
    if (!len)
        return;
    const char *id = inst->plugin->id;
    int pid = (int)inst->pid;
    if (strncmp(line, "time=", 5) == 0) {
        /* An SDK logfmt line: keep its level and body, drop its time and
         * component (our own line carries both). */
        int level = idx == 0 ? BERTH_LOG_INFO : BERTH_LOG_WARN;
        char *lv = strstr(line, " level=");
        if (lv) {
            char name[16] = {0};
            sscanf(lv + 7, "%15[a-z]", name);
            int l = berth_log_level_parse(name);
            if (l >= 0)
                level = l;
        }
        const char *body = line;
        char *comp = strstr(line, " component=");
        if (comp) {
            char *sp = strchr(comp + 1, ' ');
            body = sp ? sp + 1 : "";
        }
        berth_log(level, "plugin=%s pid=%d %s", id, pid, body);
        return;
    }
    if (line[0] == '{') {
        json_t *j = json_loadb(line, len, 0, NULL);
        const char *lvs = json_string_value(json_object_get(j, "level"));
        const char *msg = json_string_value(json_object_get(j, "msg"));
        if (j && lvs && msg) {
            int l = berth_log_level_parse(lvs);
            berth_log(l >= 0 ? l : BERTH_LOG_INFO, "plugin=%s pid=%d %s", id, pid, msg);
            json_decref(j);
            return;
        }
        json_decref(j);
    }
    /* Anything else (a traceback, a printf): quote it as one message. */
    int level = idx == 0 ? BERTH_LOG_INFO : BERTH_LOG_WARN;
    if ((int)level > berth_log_level_current)
        return;
    char esc[LINE_MAX_BYTES * 2 + 1];
    size_t j = 0;
    for (size_t i = 0; i < len && j + 2 < sizeof(esc); i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch == '"' || ch == '\\') {
            esc[j++] = '\\';
            esc[j++] = (char)ch;
        } else if (ch < 0x20) {
            esc[j++] = ' ';
        } else {
            esc[j++] = (char)ch;
        }
    }
    esc[j] = 0;
    berth_log(level, "plugin=%s pid=%d stream=%s msg=\"%s\"", id, pid,
              idx == 0 ? "stdout" : "stderr", esc);
}

static void output_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char rbuf[16384];
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_output(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    core_inst_t *inst = s->data;
    int idx = s == (uv_stream_t *)&inst->out ? 0 : 1;
    if (!inst->linebuf[idx]) {
        inst->linebuf[idx] = malloc(LINE_MAX_BYTES + 1);
        if (!inst->linebuf[idx])
            return;
    }
    char *lb = inst->linebuf[idx];
    if (n < 0) {
        if (inst->linelen[idx])
            relog_line(inst, idx, lb, inst->linelen[idx]);
        inst->linelen[idx] = 0;
        close_handle(inst, (uv_handle_t *)s);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf->base[i];
        if (ch == '\n' || inst->linelen[idx] == LINE_MAX_BYTES) {
            lb[inst->linelen[idx]] = 0;
            relog_line(inst, idx, lb, inst->linelen[idx]);
            inst->linelen[idx] = 0;
            if (ch == '\n')
                continue;
        }
        lb[inst->linelen[idx]++] = ch;
    }
}

/* ---- restarts ----------------------------------------------------------------- */

static void on_restart_timer(uv_timer_t *t)
{
    core_plugin_t *pl = t->data;
    if (pl->core->shutting_down || pl->inst)
        return;
    if (pl->status == CORE_PS_FAILED) {
        if (access(pl->path, X_OK) < 0) {
            /* Still not installed: wait again, quietly (logged once). */
            uv_timer_start(&pl->restart_timer, on_restart_timer, pl->core->cfg->failed_retry_ms, 0);
            return;
        }
        berth_log(BERTH_LOG_INFO, "msg=\"retrying failed plugin\" plugin=%s", pl->id);
    }
    spawn(pl);
}

static uint32_t recent_restarts(core_plugin_t *pl, uint64_t now)
{
    uint32_t n = 0;
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(pl->restart_times); i++)
        if (pl->restart_times[i] && now - pl->restart_times[i] < CRASH_WINDOW_MS)
            n++;
    return n;
}

static void op_finish_error(core_plugin_t *pl, berth_code_t code, const char *msg);

/* The process of the current instance is gone (exited, or never started):
 * decide what happens next. */
static void instance_gone(core_plugin_t *pl, core_inst_t *inst, const char *why)
{
    core_t *c = pl->core;
    const core_config_t *cfg = c->cfg;
    bool was_ready = inst->state == CORE_IS_READY;
    if (pl->inst == inst)
        pl->inst = NULL;
    free(pl->last_exit);
    pl->last_exit = strdup(why);
    if (c->shutting_down) {
        core_shutdown_check(c);
        return;
    }
    core_op_t *op = pl->op;
    if (op && op->phase == 1) {
        /* The old instance of a restart/replace stopped: start the new one. */
        op->phase = 2;
        free(pl->path);
        pl->path = strdup(op->new_path);
        pl->status = CORE_PS_RESTARTING;
        uv_timer_start(&pl->restart_timer, on_restart_timer, 0, 0);
        return;
    }
    if (op && op->phase == 2) {
        char msg[1024];
        if (op->replace && strcmp(op->new_path, op->old_path) != 0) {
            snprintf(msg, sizeof(msg),
                     "new binary %s of plugin %s exited before it was ready (%s); reverted to %s",
                     op->new_path, pl->id, why, op->old_path);
            free(pl->path);
            pl->path = strdup(op->old_path);
            op_finish_error(pl, BERTH_E_FAILED_PRECONDITION, msg);
        } else {
            snprintf(msg, sizeof(msg), "plugin %s exited before it was ready (%s)", pl->id, why);
            op_finish_error(pl, BERTH_E_UNAVAILABLE, msg);
        }
    }
    uint64_t now = uv_now(c->loop);
    if (was_ready && now - inst->started_ms >= STABLE_UPTIME_MS)
        pl->backoff_ms = cfg->restart_backoff_min_ms;
    if (!pl->backoff_ms)
        pl->backoff_ms = cfg->restart_backoff_min_ms;
    pl->restarts++;
    pl->restart_times[pl->restart_ring++ % BERTH_ARRAY_SIZE(pl->restart_times)] = now;
    uint32_t recent = recent_restarts(pl, now);
    if (recent > cfg->restart_limit) {
        pl->status = CORE_PS_FAILED;
        berth_log(BERTH_LOG_ERROR,
                  "msg=\"plugin keeps crashing; marked failed, retried every %u ms\" plugin=%s "
                  "restarts_last_minute=%u last_exit=\"%s\"",
                  cfg->failed_retry_ms, pl->id, recent, why);
        core_router_fail_queue(pl, BERTH_E_UNAVAILABLE,
                               "plugin %s is failing (it crashed %u times in a minute; last: %s); "
                               "see the berthd log",
                               pl->id, recent, why);
        uv_timer_start(&pl->restart_timer, on_restart_timer, cfg->failed_retry_ms, 0);
        core_supervisor_check_ready(c);
        core_router_resolve_pending(c);
        return;
    }
    uint32_t delay = pl->backoff_ms;
    pl->backoff_ms = pl->backoff_ms * 2 > cfg->restart_backoff_max_ms ? cfg->restart_backoff_max_ms
                                                                      : pl->backoff_ms * 2;
    pl->status = CORE_PS_RESTARTING;
    berth_log(
        BERTH_LOG_WARN,
        "msg=\"plugin exited; restarting\" plugin=%s pid=%d exit=\"%s\" delay_ms=%u restarts=%u",
        pl->id, (int)inst->pid, why, delay, pl->restarts);
    publish_plugin_event(c, "/plugins/restart", pl, inst->pid, NULL, NULL, delay, "delay_ms");
    uv_timer_start(&pl->restart_timer, on_restart_timer, delay, 0);
}

static void on_pipe_linger(uv_timer_t *t)
{
    core_inst_t *inst = t->data;
    close_handle(inst, (uv_handle_t *)&inst->out);
    close_handle(inst, (uv_handle_t *)&inst->err);
    close_handle(inst, (uv_handle_t *)&inst->kill_timer);
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
    core_inst_t *inst = proc->data;
    core_plugin_t *pl = inst->plugin;
    core_t *c = pl->core;
    inst->exited = true;
    inst->exit_status = status;
    inst->term_signal = sig;
    char why[96];
    if (sig)
        snprintf(why, sizeof(why), "killed by signal %d (%s)", sig, strsignal(sig));
    else
        snprintf(why, sizeof(why), "exit status %lld", (long long)status);
    bool expected = inst->stopping || c->shutting_down;
    berth_log(expected ? BERTH_LOG_INFO : BERTH_LOG_WARN,
              "msg=\"plugin exited\" plugin=%s pid=%d exit=\"%s\"", pl->id, (int)inst->pid, why);
    publish_plugin_event(c, "/plugins/exit", pl, inst->pid, "exit", why, 0, NULL);
    close_handle(inst, (uv_handle_t *)&inst->proc);
    close_handle(inst, (uv_handle_t *)&inst->timer);
    if (inst->peer)
        core_peer_close(inst->peer, false);
    /* Let the pipes deliver what the plugin wrote last, but do not wait for
     * a grandchild that inherited them. */
    uv_timer_stop(&inst->kill_timer);
    inst->kill_timer.data = inst;
    uv_timer_start(&inst->kill_timer, on_pipe_linger, PIPE_LINGER_MS, 0);
    instance_gone(pl, inst, why);
    inst_maybe_free(inst);
}

static void on_kill_timer(uv_timer_t *t)
{
    core_inst_t *inst = t->data;
    if (!inst->exited) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"plugin did not stop in time; sending SIGKILL\" plugin=%s pid=%d",
                  inst->plugin->id, (int)inst->pid);
        inst_kill(inst, SIGKILL);
    }
}

static void on_ready_deadline(uv_timer_t *t)
{
    core_inst_t *inst = t->data;
    if (inst->state == CORE_IS_READY || (inst->spawned && inst->exited) || !inst->peer)
        return;
    berth_log(BERTH_LOG_WARN,
              "msg=\"plugin did not become ready in time; killing it\" plugin=%s pid=%d "
              "ready_timeout_ms=%u",
              inst->plugin->id, (int)inst->pid, inst->plugin->core->cfg->ready_timeout_ms);
    if (inst->spawned)
        inst_kill(inst, SIGKILL);
    else if (inst->peer)
        core_peer_close(inst->peer, false);
}

static char **build_env(core_plugin_t *pl)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 5, sizeof(*env));
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i];
        if (strncmp(e, "BERTH_PLUGIN_FD=", 16) == 0 || strncmp(e, "NOTIFY_SOCKET=", 14) == 0 ||
            strncmp(e, "LISTEN_FDS=", 11) == 0 || strncmp(e, "LISTEN_PID=", 11) == 0 ||
            strncmp(e, "BERTH_PLUGINS_SOCK=", 19) == 0 ||
            strncmp(e, "BERTH_LOG_FORMAT=", 17) == 0 || strncmp(e, "BERTH_PLUGIN_ID=", 16) == 0)
            continue;
        env[k++] = (char *)e;
    }
    env[k++] = "BERTH_PLUGIN_FD=3";
    static char idbuf[96];
    snprintf(idbuf, sizeof(idbuf), "BERTH_PLUGIN_ID=%s", pl->id);
    env[k++] = idbuf;
    env[k++] = pl->core->cfg->log_json ? "BERTH_LOG_FORMAT=json" : "BERTH_LOG_FORMAT=logfmt";
    env[k] = NULL;
    return env;
}

static const char *level_name(int l)
{
    static const char *const names[] = {"error", "warn", "info", "debug", "trace"};
    return l >= 0 && l < 5 ? names[l] : "info";
}

static void spawn(core_plugin_t *pl)
{
    core_t *c = pl->core;
    uv_timer_stop(&pl->restart_timer);
    core_inst_t *inst = calloc(1, sizeof(*inst));
    if (!inst) {
        berth_log(BERTH_LOG_ERROR, "msg=\"out of memory starting plugin\" plugin=%s", pl->id);
        uv_timer_start(&pl->restart_timer, on_restart_timer, 1000, 0);
        return;
    }
    inst->plugin = pl;
    inst->path = strdup(pl->path);
    inst->started_ms = uv_now(c->loop);
    inst->started_ns = berth_now_ns();
    inst->state = CORE_IS_SPAWNED;
    if (pl->status != CORE_PS_FAILED && pl->status != CORE_PS_RESTARTING)
        pl->status = CORE_PS_STARTING;
    pl->inst = inst;

    uv_timer_init(c->loop, &inst->timer);
    uv_timer_init(c->loop, &inst->kill_timer);
    uv_pipe_init(c->loop, &inst->out, 0);
    uv_pipe_init(c->loop, &inst->err, 0);
    inst->timer.data = inst->kill_timer.data = inst->out.data = inst->err.data = inst;
    inst->open_handles = 5; /* timer, kill_timer, out, err, proc */

    int sv[2] = {-1, -1};
    int r = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ? -errno : 0;
    char **env = r == 0 ? build_env(pl) : NULL;
    size_t nargs = pl->conf ? pl->conf->n_args : 0;
    char **argv = calloc(nargs + 4, sizeof(*argv));
    if (r == 0 && (!env || !argv))
        r = -ENOMEM;
    if (r == 0) {
        argv[0] = inst->path;
        argv[1] = "--log-level";
        argv[2] = (char *)level_name(berth_log_level_current);
        for (size_t i = 0; i < nargs; i++)
            argv[3 + i] = pl->conf->args[i];
        uv_stdio_container_t stdio[4];
        stdio[0].flags = UV_IGNORE;
        stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
        stdio[1].data.stream = (uv_stream_t *)&inst->out;
        stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
        stdio[2].data.stream = (uv_stream_t *)&inst->err;
        stdio[3].flags = UV_INHERIT_FD;
        stdio[3].data.fd = sv[1];
        uv_process_options_t opts = {
            .exit_cb = on_exit_cb,
            .file = inst->path,
            .args = argv,
            .env = env,
            .stdio_count = 4,
            .stdio = stdio,
        };
        inst->proc.data = inst;
        r = uv_spawn(c->loop, &inst->proc, &opts);
        if (r == 0)
            inst->spawned = true;
        else
            inst->proc.data = inst; /* the handle is initialised: closed below */
    } else {
        /* uv_spawn not attempted: the process handle was never initialised. */
        inst->open_handles--;
    }
    free(env);
    free(argv);
    if (sv[1] >= 0)
        close(sv[1]);
    if (r < 0) {
        if (sv[0] >= 0)
            close(sv[0]);
        char why[256];
        snprintf(why, sizeof(why), "cannot start %s: %s", inst->path,
                 r > -4096 ? uv_strerror(r) : "error");
        berth_log(BERTH_LOG_ERROR, "msg=\"cannot start plugin\" plugin=%s path=%s err=\"%s\"",
                  pl->id, inst->path, uv_strerror(r));
        inst->exited = true;
        inst->conn_closed = true;
        if (inst->open_handles == 5)
            close_handle(inst, (uv_handle_t *)&inst->proc);
        close_handle(inst, (uv_handle_t *)&inst->timer);
        close_handle(inst, (uv_handle_t *)&inst->kill_timer);
        close_handle(inst, (uv_handle_t *)&inst->out);
        close_handle(inst, (uv_handle_t *)&inst->err);
        instance_gone(pl, inst, why);
        return;
    }
    inst->pid = inst->proc.pid;
    uv_read_start((uv_stream_t *)&inst->out, output_alloc, on_output);
    uv_read_start((uv_stream_t *)&inst->err, output_alloc, on_output);

    core_peer_t *p = core_peer_new(c, CORE_PEER_PLUGIN);
    berth_error_t *err = NULL;
    if (!p || core_peer_attach_fd(p, sv[0], &err) < 0) {
        berth_log(BERTH_LOG_ERROR, "msg=\"cannot open plugin connection\" plugin=%s err=\"%s\"",
                  pl->id, err ? err->message : "out of memory");
        berth_error_free(&err);
        if (p) {
            /* attach failed: the peer was never connected */
            if (p->prev)
                p->prev->next = p->next;
            else
                c->peers = p->next;
            if (p->next)
                p->next->prev = p->prev;
            free(p);
        } else {
            close(sv[0]);
        }
        inst->conn_closed = true;
        inst_kill(inst, SIGKILL);
        return;
    }
    p->inst = inst;
    p->pid = inst->pid;
    p->uid = getuid();
    p->authorized = true;
    inst->peer = p;
    uv_timer_start(&inst->timer, on_ready_deadline, c->cfg->ready_timeout_ms, 0);
    berth_log(BERTH_LOG_INFO, "msg=\"plugin started\" plugin=%s pid=%d path=%s", pl->id,
              (int)inst->pid, inst->path);
}

void core_supervisor_peer_closed(core_peer_t *p)
{
    core_inst_t *inst = p->inst;
    if (!inst)
        return;
    core_plugin_t *pl = inst->plugin;
    core_t *c = pl->core;
    inst->peer = NULL;
    inst->conn_closed = true;
    if (!inst->spawned) {
        /* An external plugin went away. */
        berth_log(c->shutting_down ? BERTH_LOG_INFO : BERTH_LOG_WARN,
                  "msg=\"external plugin disconnected\" plugin=%s pid=%d", pl->id, (int)inst->pid);
        if (pl->inst == inst)
            pl->inst = NULL;
        pl->status = CORE_PS_STARTING;
        inst->exited = true;
        close_handle(inst, (uv_handle_t *)&inst->timer);
        close_handle(inst, (uv_handle_t *)&inst->kill_timer);
        if (!c->shutting_down)
            publish_plugin_event(c, "/plugins/exit", pl, inst->pid, "exit", "disconnected", 0,
                                 NULL);
        inst_maybe_free(inst);
        return;
    }
    if (!inst->exited) {
        /* The plugin closed fd 3 (or broke the framing) but lives on: it
         * cannot serve; give it a moment to exit by itself. */
        if (!inst->stopping && !c->shutting_down)
            berth_log(BERTH_LOG_WARN,
                      "msg=\"plugin connection lost; stopping the plugin\" plugin=%s pid=%d",
                      pl->id, (int)inst->pid);
        if (pl->status == CORE_PS_OK)
            pl->status = CORE_PS_RESTARTING;
        if (!uv_is_active((uv_handle_t *)&inst->kill_timer))
            uv_timer_start(&inst->kill_timer, on_kill_timer,
                           c->shutting_down || inst->stopping ? c->cfg->shutdown_timeout_ms
                                                              : CONN_LOST_GRACE_MS,
                           0);
    }
    if (pl->op && pl->op->phase == 0 && pl->inst == inst)
        core_supervisor_drained(inst);
    inst_maybe_free(inst);
}

/* ---- health ---------------------------------------------------------------------- */

static void on_health_reply(core_route_t *r, const ipc_msg_t *m, const berth_error_t *err)
{
    core_inst_t *inst = r->data;
    if (err && err->code == BERTH_E_UNAVAILABLE &&
        strcmp(err->message, "plugin connection closed") == 0)
        return; /* the instance is going away; nothing to do */
    inst->health_pending = false;
    if ((inst->spawned && inst->exited) || !inst->peer || inst->state != CORE_IS_READY)
        return;
    uv_timer_start(&inst->timer, on_health_timer, inst->plugin->core->cfg->health_interval_ms, 0);
}

static void on_health_timer(uv_timer_t *t)
{
    core_inst_t *inst = t->data;
    core_t *c = inst->plugin->core;
    /* (External plugins have no process: `exited` is always set for them.) */
    if ((inst->spawned && inst->exited) || !inst->peer || c->shutting_down)
        return;
    if (inst->health_pending) {
        berth_log(BERTH_LOG_ERROR,
                  "msg=\"plugin did not answer plugin.health in time; killing it\" plugin=%s "
                  "pid=%d health_timeout_ms=%u",
                  inst->plugin->id, (int)inst->pid, c->cfg->health_timeout_ms);
        if (inst->spawned)
            inst_kill(inst, SIGKILL);
        else
            core_peer_close(inst->peer, false);
        return;
    }
    if (!core_request(inst->peer, "plugin.health", on_health_reply, inst))
        return;
    inst->health_pending = true;
    uv_timer_start(&inst->timer, on_health_timer, c->cfg->health_timeout_ms, 0);
}

/* ---- registration --------------------------------------------------------------- */

static void method_free(core_method_t *m)
{
    if (!m)
        return;
    free(m->name);
    if (m->callers)
        for (char **p = m->callers; *p; p++)
            free(*p);
    free(m->callers);
    free(m);
}

static bool valid_method_name(const char *s, size_t n)
{
    if (n == 0 || n > 128)
        return false;
    bool dot = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (i == 0 || i == n - 1 || s[i - 1] == '.')
                return false;
            dot = true;
        } else if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                     ch == '-')) {
            return false;
        }
    }
    return dot;
}

static bool reserved_method(const char *s)
{
    return strncmp(s, "plugin.", 7) == 0 || strncmp(s, "plugins.", 8) == 0 ||
           strncmp(s, "events.", 7) == 0 || strcmp(s, "version") == 0 || strcmp(s, "info") == 0;
}

static bool prefix_allowed(const core_plugin_t *pl, const char *name)
{
    if (!pl->external)
        return true;
    for (char **p = pl->ext->prefixes; *p; p++)
        if (strncmp(name, *p, strlen(*p)) == 0)
            return true;
    return false;
}

static void free_methods(core_method_t **ms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        method_free(ms[i]);
    free(ms);
}

/* Parses the `methods` array of a registration. */
static int parse_methods(core_t *c, core_plugin_t *pl, const msgpack_object *arr,
                         core_method_t ***out, size_t *n_out, berth_code_t *code, char *msg,
                         size_t msglen)
{
    size_t n = arr ? arr->via.array.size : 0;
    core_method_t **ms = calloc(n ? n : 1, sizeof(*ms));
    if (!ms) {
        *code = BERTH_E_RESOURCE_EXHAUSTED;
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    *code = BERTH_E_INVALID_ARGUMENT;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &arr->via.array.ptr[i];
        const msgpack_object *name = e->type == MSGPACK_OBJECT_STR ? e : berth_mp_get(e, "name");
        if (!name || name->type != MSGPACK_OBJECT_STR ||
            !valid_method_name(name->via.str.ptr, name->via.str.size)) {
            snprintf(msg, msglen,
                     "methods[%zu]: name must be \"<service>.<op>\" of a-z, 0-9, '_', '-'", i);
            goto fail;
        }
        core_method_t *m = calloc(1, sizeof(*m));
        if (!m)
            goto oom;
        ms[i] = m;
        m->name = berth_mp_strdup(name);
        if (!m->name)
            goto oom;
        m->plugin = pl;
        if (reserved_method(m->name)) {
            snprintf(msg, msglen, "method %s: this name is reserved for berthd", m->name);
            goto fail;
        }
        if (!prefix_allowed(pl, m->name)) {
            *code = BERTH_E_PERMISSION_DENIED;
            snprintf(msg, msglen,
                     "method %s: external plugin %s may only register the method prefixes "
                     "declared in external_plugins.%s.methods",
                     m->name, pl->id, pl->id);
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(ms[j]->name, m->name) == 0) {
                snprintf(msg, msglen, "method %s is listed twice", m->name);
                goto fail;
            }
        core_method_t *other = core_method_lookup(c, m->name);
        if (other && other->plugin != pl) {
            *code = BERTH_E_ALREADY_EXISTS;
            snprintf(msg, msglen, "method %s is already served by plugin %s", m->name,
                     other->plugin->id);
            goto fail;
        }
        if (e->type == MSGPACK_OBJECT_MAP) {
            berth_error_t *err = NULL;
            if (berth_mp_get_bool(e, "idempotent", &m->idempotent, &err) < 0 ||
                berth_mp_get_bool(e, "internal", &m->internal, &err) < 0 ||
                berth_mp_get_bool(e, "resumable", &m->resumable, &err) < 0 ||
                berth_mp_get_bool(e, "replay", &m->replay, &err) < 0) {
                snprintf(msg, msglen, "method %s: %s", m->name, err->message);
                berth_error_free(&err);
                goto fail;
            }
            const msgpack_object *callers = NULL;
            if (berth_mp_get_array(e, "callers", &callers, &err) < 0) {
                snprintf(msg, msglen, "method %s: %s", m->name, err->message);
                berth_error_free(&err);
                goto fail;
            }
            size_t nc = callers ? callers->via.array.size : 0;
            m->callers = calloc(nc + 1, sizeof(char *));
            if (!m->callers)
                goto oom;
            for (size_t k = 0; k < nc; k++) {
                m->callers[k] = berth_mp_strdup(&callers->via.array.ptr[k]);
                if (!m->callers[k]) {
                    snprintf(msg, msglen, "method %s: callers must be plugin ids (strings)",
                             m->name);
                    goto fail;
                }
            }
        }
    }
    *out = ms;
    *n_out = n;
    return 0;
oom:
    *code = BERTH_E_RESOURCE_EXHAUSTED;
    snprintf(msg, msglen, "out of memory");
fail:
    free_methods(ms, n);
    return -1;
}

static void reply_registration(core_peer_t *p, uint32_t msgid, core_plugin_t *pl)
{
    core_t *c = p->core;
    const json_t *section = pl->external ? pl->ext->config : pl->conf->config;
    msgpack_packer *pk = core_reply_begin(c, msgid);
    msgpack_pack_map(pk, 4);
    berth_mp_pack_str(pk, "config");
    core_json_pack(pk, section);
    berth_mp_kv_str(pk, "root", c->cfg->root);
    berth_mp_kv_str(pk, "state", c->cfg->state);
    berth_mp_pack_str(pk, "daemon");
    msgpack_pack_map(pk, 3);
    berth_mp_kv_str(pk, "version", BERTH_VERSION);
    berth_mp_kv_u64(pk, "pid", (uint64_t)c->pid);
    berth_mp_kv_str(pk, "boot_id", c->boot_id);
    core_reply_end(p);
}

void core_plugin_register(core_peer_t *p, const ipc_msg_t *m)
{
    core_t *c = p->core;
    if (p->kind == CORE_PEER_CLIENT) {
        core_reply_error(p, m->msgid, BERTH_E_PERMISSION_DENIED,
                         "plugin.register is only accepted from plugin connections");
        return;
    }
    if (p->inst && p->inst->state != CORE_IS_SPAWNED) {
        core_reply_error(p, m->msgid, BERTH_E_FAILED_PRECONDITION,
                         "this plugin is already registered");
        return;
    }
    const char *id = NULL;
    size_t idlen = 0;
    berth_error_t *err = NULL;
    if (berth_mp_get_str(m->params, "id", &id, &idlen, &err) != 0) {
        core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "plugin.register: %s",
                         err ? err->message : "id is required");
        berth_error_free(&err);
        return;
    }
    char idbuf[80];
    snprintf(idbuf, sizeof(idbuf), "%.*s", (int)(idlen < 70 ? idlen : 70), id);
    core_plugin_t *pl;
    if (p->kind == CORE_PEER_PLUGIN) {
        pl = p->inst->plugin;
        if (strlen(idbuf) != idlen || strcmp(idbuf, pl->id) != 0) {
            berth_log(BERTH_LOG_ERROR,
                      "msg=\"plugin registered under another id; stopping it\" plugin=%s "
                      "registered_as=%s",
                      pl->id, idbuf);
            core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT,
                             "this binary registered as \"%s\" but is configured as plugin \"%s\"",
                             idbuf, pl->id);
            core_peer_close(p, true);
            return;
        }
    } else {
        pl = core_plugin_find(c, idbuf);
        if (!pl || !pl->external || strlen(idbuf) != idlen) {
            core_reply_error(p, m->msgid, BERTH_E_PERMISSION_DENIED,
                             "plugin id \"%s\" is not declared in external_plugins of the berthd "
                             "config",
                             idbuf);
            return;
        }
        if (pl->inst) {
            core_reply_error(p, m->msgid, BERTH_E_ALREADY_EXISTS,
                             "plugin %s is already connected (pid %d)", pl->id, (int)pl->inst->pid);
            return;
        }
    }
    uint64_t api = 1;
    if (berth_mp_get_u64(m->params, "api", &api, NULL) < 0 || api != 1) {
        core_reply_error(p, m->msgid, BERTH_E_FAILED_PRECONDITION,
                         "plugin %s speaks protocol api %llu; this berthd speaks api 1", pl->id,
                         (unsigned long long)api);
        return;
    }
    const msgpack_object *marr = NULL;
    if (berth_mp_get_array(m->params, "methods", &marr, &err) < 0) {
        core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "plugin.register: %s",
                         err->message);
        berth_error_free(&err);
        return;
    }
    core_method_t **ms = NULL;
    size_t n = 0;
    berth_code_t code;
    char msg[512];
    if (parse_methods(c, pl, marr, &ms, &n, &code, msg, sizeof(msg)) < 0) {
        berth_log(BERTH_LOG_ERROR, "msg=\"plugin registration refused\" plugin=%s err=\"%s\"",
                  pl->id, msg);
        core_reply_error(p, m->msgid, code, "%s", msg);
        return;
    }
    for (size_t i = 0; i < pl->n_methods; i++)
        core_method_remove(c, pl->methods[i]);
    free_methods(pl->methods, pl->n_methods);
    pl->methods = ms;
    pl->n_methods = n;
    for (size_t i = 0; i < n; i++)
        core_method_install(c, ms[i]);
    char *s = NULL;
    if (berth_mp_get_strdup(m->params, "type", &s, NULL) == 0) {
        free(pl->type);
        pl->type = s;
    }
    s = NULL;
    if (berth_mp_get_strdup(m->params, "version", &s, NULL) == 0) {
        free(pl->version);
        pl->version = s;
    }
    core_inst_t *inst = p->inst;
    if (!inst) {
        /* External plugin: an instance without a process. */
        inst = calloc(1, sizeof(*inst));
        if (!inst) {
            core_reply_error(p, m->msgid, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        inst->plugin = pl;
        inst->peer = p;
        inst->pid = p->pid;
        inst->exited = true; /* no process of ours */
        inst->started_ms = uv_now(c->loop);
        inst->started_ns = berth_now_ns();
        inst->path = strdup("");
        uv_timer_init(c->loop, &inst->timer);
        uv_timer_init(c->loop, &inst->kill_timer);
        inst->timer.data = inst->kill_timer.data = inst;
        inst->open_handles = 2;
        uv_timer_start(&inst->timer, on_ready_deadline, c->cfg->ready_timeout_ms, 0);
        p->inst = inst;
        pl->inst = inst;
    }
    inst->state = CORE_IS_REGISTERED;
    pl->ever_registered = true;
    reply_registration(p, m->msgid, pl);
    berth_log(BERTH_LOG_INFO, "msg=\"plugin registered\" plugin=%s pid=%d version=%s methods=%zu",
              pl->id, (int)inst->pid, pl->version ? pl->version : "", n);
    core_router_resolve_pending(c);
}

/* ---- restart / replace operations ---------------------------------------------------- */

static const char *op_name(const core_op_t *op)
{
    return op->replace ? "replace" : op->recycle ? "recycle" : "restart";
}

static void op_free(core_plugin_t *pl)
{
    core_op_t *op = pl->op;
    if (!op)
        return;
    pl->op = NULL;
    pl->draining = false;
    if (op->route) {
        op->route->data = NULL;
        op->route->on_local_end = NULL;
    }
    if (op->timer)
        uv_close((uv_handle_t *)op->timer, (uv_close_cb)free);
    free(op->new_path);
    free(op->old_path);
    free(op);
}

static void op_finish_error(core_plugin_t *pl, berth_code_t code, const char *msg)
{
    core_op_t *op = pl->op;
    if (!op)
        return;
    core_route_t *r = op->route;
    op->route = NULL;
    if (r) {
        r->on_local_end = NULL;
        core_route_reply_error(r, code, "%s", msg);
    }
    op_free(pl);
}

static void op_route_end(core_route_t *r)
{
    core_plugin_t *pl = r->data;
    if (pl && pl->op && pl->op->route == r)
        pl->op->route = NULL; /* the caller left; the operation goes on */
}

static void op_stop(core_plugin_t *pl)
{
    core_op_t *op = pl->op;
    core_t *c = pl->core;
    core_inst_t *inst = pl->inst;
    op->phase = 1;
    if (op->timer)
        uv_timer_stop(op->timer);
    if (!inst) {
        /* Nothing running: start the new binary right away. */
        op->phase = 2;
        free(pl->path);
        pl->path = strdup(op->new_path);
        spawn(pl);
        return;
    }
    inst->stopping = true;
    op->old_pid = inst->pid;
    berth_log(BERTH_LOG_INFO, "msg=\"stopping plugin for %s\" plugin=%s pid=%d", op_name(op),
              pl->id, (int)inst->pid);
    if (inst->peer && !core_request(inst->peer, "plugin.shutdown", NULL, NULL))
        inst_kill(inst, SIGTERM);
    else if (!inst->peer)
        inst_kill(inst, SIGTERM);
    uv_timer_stop(&inst->kill_timer);
    inst->kill_timer.data = inst;
    uv_timer_start(&inst->kill_timer, on_kill_timer, c->cfg->shutdown_timeout_ms, 0);
}

static void on_drain_timeout(uv_timer_t *t)
{
    core_plugin_t *pl = t->data;
    if (!pl->op || pl->op->phase != 0)
        return;
    berth_log(BERTH_LOG_WARN,
              "msg=\"plugin did not drain in time; stopping it with requests in flight\" plugin=%s",
              pl->id);
    op_stop(pl);
}

void core_supervisor_drained(core_inst_t *inst)
{
    core_plugin_t *pl = inst->plugin;
    if (!pl->op || pl->op->phase != 0 || pl->inst != inst)
        return;
    if (inst->peer && core_router_drain_count(inst->peer) > 0)
        return;
    op_stop(pl);
}

/* `r` is the caller's request, answered when the new instance is ready; NULL
 * for a recycle (answered at once). */
static void start_op(core_plugin_t *pl, core_route_t *r, bool replace, bool recycle,
                     const char *new_path)
{
    core_t *c = pl->core;
    core_op_t *op = calloc(1, sizeof(*op));
    if (!op) {
        if (r)
            core_route_reply_error(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    op->route = r;
    op->replace = replace;
    op->recycle = recycle;
    op->old_path = strdup(pl->path);
    op->new_path = strdup(new_path);
    if (r) {
        r->data = pl;
        r->on_local_end = op_route_end;
    }
    pl->op = op;
    berth_log(BERTH_LOG_INFO, "msg=\"%s requested\" plugin=%s path=%s", op_name(op), pl->id,
              new_path);
    if (!pl->inst) {
        /* Not running (restarting or failed): start the new binary now. */
        uv_timer_stop(&pl->restart_timer);
        memset(pl->restart_times, 0, sizeof(pl->restart_times));
        pl->backoff_ms = 0;
        op->phase = 2;
        free(pl->path);
        pl->path = strdup(new_path);
        pl->status = CORE_PS_RESTARTING;
        spawn(pl);
        return;
    }
    op->phase = 0;
    pl->draining = true;
    pl->status = CORE_PS_RESTARTING;
    op->timer = malloc(sizeof(uv_timer_t));
    if (op->timer) {
        uv_timer_init(c->loop, op->timer);
        op->timer->data = pl;
        uv_timer_start(op->timer, on_drain_timeout, c->cfg->drain_timeout_ms, 0);
    }
    core_supervisor_drained(pl->inst);
}

static int check_replacement_path(core_t *c, const char *path, char **out, berth_code_t *code,
                                  char *msg, size_t msglen)
{
    char *real = realpath(path, NULL);
    if (!real) {
        *code = BERTH_E_NOT_FOUND;
        snprintf(msg, msglen, "replacement binary %s: %s", path, strerror(errno));
        return -1;
    }
    char *dir = realpath(c->cfg->plugin_dir, NULL);
    char *tmp = strdup(real);
    const char *rdir = tmp ? dirname(tmp) : "";
    struct stat st;
    int rc = 0;
    if (!dir || strcmp(rdir, dir) != 0) {
        *code = BERTH_E_PERMISSION_DENIED;
        snprintf(msg, msglen, "replacement binaries must be in the plugin directory %s (got %s)",
                 c->cfg->plugin_dir, real);
        rc = -1;
    } else if (stat(real, &st) < 0 || !S_ISREG(st.st_mode) || access(real, X_OK) < 0) {
        *code = BERTH_E_FAILED_PRECONDITION;
        snprintf(msg, msglen, "replacement binary %s is not an executable file", real);
        rc = -1;
    }
    free(dir);
    free(tmp);
    if (rc < 0) {
        free(real);
        return -1;
    }
    *out = real;
    return 0;
}

static void count_caller_routes(uint32_t key, void *val, void *data)
{
    (void)key;
    const core_route_t *r = val;
    if (r->caller)
        (*(size_t *)data)++;
}

static void pack_plugin(msgpack_packer *pk, core_t *c, core_plugin_t *pl)
{
    core_inst_t *inst = pl->inst;
    bool up = inst && inst->state == CORE_IS_READY;
    msgpack_pack_map(pk, 13);
    berth_mp_kv_str(pk, "id", pl->id);
    berth_mp_kv_str(pk, "type", pl->type ? pl->type : "");
    berth_mp_kv_str(pk, "version", pl->version ? pl->version : "");
    berth_mp_kv_i64(pk, "pid", inst ? inst->pid : 0);
    berth_mp_kv_str(pk, "status", core_plugin_status_name(pl->status));
    berth_mp_kv_u64(pk, "restarts", pl->restarts);
    berth_mp_kv_i64(pk, "uptime_ns", up ? berth_now_ns() - inst->started_ns : 0);
    berth_mp_kv_str(pk, "path", pl->external ? "" : pl->path);
    berth_mp_kv_bool(pk, "external", pl->external);
    berth_mp_kv_u64(pk, "queued", pl->queue.len);
    /* Requests of clients and plugins the running instance serves now (not
     * the core's own health checks). */
    size_t in_flight = 0;
    if (inst && inst->peer)
        ipc_idmap_each(&inst->peer->serving, count_caller_routes, &in_flight);
    berth_mp_kv_u64(pk, "in_flight", in_flight);
    berth_mp_kv_str(pk, "last_exit", pl->last_exit ? pl->last_exit : "");
    berth_mp_pack_str(pk, "methods");
    msgpack_pack_array(pk, pl->n_methods);
    for (size_t i = 0; i < pl->n_methods; i++)
        berth_mp_pack_str(pk, pl->methods[i]->name);
}

void core_methods_plugins(core_peer_t *p, const ipc_msg_t *m)
{
    core_t *c = p->core;
    const char *meth = m->method;
    char *id = NULL;
    berth_error_t *err = NULL;
    if (berth_mp_get_strdup(m->params, "id", &id, &err) < 0) {
        core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "%s: %s", meth, err->message);
        berth_error_free(&err);
        return;
    }
    if (strcmp(meth, "plugins.list") == 0) {
        size_t n = 0;
        for (core_plugin_t *pl = c->plugins; pl; pl = pl->next)
            if (!id || strcmp(id, pl->id) == 0)
                n++;
        if (id && n == 0) {
            core_reply_error(p, m->msgid, BERTH_E_NOT_FOUND, "no plugin %s", id);
            free(id);
            return;
        }
        msgpack_packer *pk = core_reply_begin(c, m->msgid);
        msgpack_pack_map(pk, 1);
        berth_mp_pack_str(pk, "plugins");
        msgpack_pack_array(pk, n);
        for (core_plugin_t *pl = c->plugins; pl; pl = pl->next)
            if (!id || strcmp(id, pl->id) == 0)
                pack_plugin(pk, c, pl);
        core_reply_end(p);
        free(id);
        return;
    }
    bool replace = strcmp(meth, "plugins.replace") == 0;
    if (p->kind != CORE_PEER_CLIENT || p->uid != 0) {
        core_reply_error(p, m->msgid, BERTH_E_PERMISSION_DENIED,
                         "%s is accepted only from uid 0 on %s", meth, c->cfg->address);
        free(id);
        return;
    }
    if (!id) {
        core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "%s: parameter id is required",
                         meth);
        return;
    }
    core_plugin_t *pl = core_plugin_find(c, id);
    if (!pl) {
        core_reply_error(p, m->msgid, BERTH_E_NOT_FOUND, "no plugin %s (see `berth plugins ls`)",
                         id);
        free(id);
        return;
    }
    free(id);
    if (pl->external) {
        core_reply_error(p, m->msgid, BERTH_E_FAILED_PRECONDITION,
                         "plugin %s is external: restart it where it runs; it reconnects to %s",
                         pl->id, c->cfg->plugins_address);
        return;
    }
    if (pl->status == CORE_PS_SKIP) {
        core_reply_error(p, m->msgid, BERTH_E_FAILED_PRECONDITION,
                         "plugin %s is not running (disabled or its binary %s is missing)", pl->id,
                         pl->path);
        return;
    }
    if (pl->op) {
        core_reply_error(p, m->msgid, BERTH_E_FAILED_PRECONDITION,
                         "a restart or replace of plugin %s is already in progress", pl->id);
        return;
    }
    char *path = NULL;
    if (berth_mp_get_strdup(m->params, "path", &path, &err) < 0) {
        core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "%s: %s", meth, err->message);
        berth_error_free(&err);
        return;
    }
    char *newp = NULL;
    if (replace && path && *path) {
        berth_code_t code;
        char msg[1024];
        if (check_replacement_path(c, path, &newp, &code, msg, sizeof(msg)) < 0) {
            core_reply_error(p, m->msgid, code, "%s", msg);
            free(path);
            return;
        }
    } else {
        newp = strdup(pl->path);
    }
    free(path);
    core_route_t *r = core_route_local(p, m);
    if (r && newp)
        start_op(pl, r, replace, false, newp);
    else if (r)
        core_route_reply_error(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    free(newp);
}

/* plugin.recycle {}: a supervised plugin that is idle asks to be restarted, to
 * give back the memory of the libraries it loaded for its last work (a
 * library that pins itself cannot be dlclose'd). Accepted only when the
 * instance serves no request and has no request of its own outstanding (this
 * one aside): the core then answers {}, stops routing to it (new requests
 * wait in its queue, as for plugins.restart), sends plugin.shutdown and starts
 * a new instance, which gets the queue once ready. Not counted in `restarts`,
 * not a crash. Refused with failed_precondition otherwise (the plugin tries
 * again later), with permission_denied for an external plugin (never). */
void core_plugin_recycle(core_peer_t *p, const ipc_msg_t *m)
{
    core_inst_t *inst = p->inst;
    core_plugin_t *pl = inst ? inst->plugin : NULL;
    if (!pl || p->kind != CORE_PEER_PLUGIN || !inst->spawned || pl->external) {
        core_reply_error(p, m->msgid, BERTH_E_PERMISSION_DENIED,
                         "plugin.recycle: only a plugin process started by berthd can be recycled");
        return;
    }
    if (inst->state != CORE_IS_READY || pl->inst != inst || inst->stopping || pl->op ||
        pl->draining || pl->status != CORE_PS_OK) {
        core_reply_error(p, m->msgid, BERTH_E_FAILED_PRECONDITION,
                         "plugin.recycle: plugin %s is starting, stopping or being restarted",
                         pl->id);
        return;
    }
    size_t serving = 0, n = 0;
    void **vals = ipc_idmap_values(&p->serving, &n);
    for (size_t i = 0; vals && i < n; i++)
        if (!((core_route_t *)vals[i])->on_response) /* plugin.health does not count */
            serving++;
    free(vals);
    /* This request is not in p->calls: local methods are answered directly. */
    size_t calls = p->calls.count;
    if (serving > 0 || calls > 0 || pl->queue.len > 0) {
        core_reply_error(p, m->msgid, BERTH_E_FAILED_PRECONDITION,
                         "plugin.recycle: plugin %s is busy (%zu requests to it, %zu of its own "
                         "in progress); try again when idle",
                         pl->id, serving, calls);
        return;
    }
    core_reply_empty(p, m->msgid);
    start_op(pl, NULL, false, true, pl->path);
}

/* ---- ready ---------------------------------------------------------------------------- */

void core_plugin_ready(core_peer_t *p, const ipc_msg_t *m)
{
    core_t *c = p->core;
    core_inst_t *inst = p->inst;
    if (!inst || inst->state != CORE_IS_REGISTERED) {
        if (m)
            core_reply_error(p, m->msgid, BERTH_E_FAILED_PRECONDITION,
                             inst ? "plugin.ready was already sent"
                                  : "register first (plugin.register)");
        return;
    }
    core_plugin_t *pl = inst->plugin;
    inst->state = CORE_IS_READY;
    pl->status = CORE_PS_OK;
    pl->ever_ready = true;
    if (m)
        core_reply_empty(p, m->msgid);
    uint64_t took = uv_now(c->loop) - inst->started_ms;
    berth_log(BERTH_LOG_INFO, "msg=\"plugin ready\" plugin=%s pid=%d startup_ms=%llu", pl->id,
              (int)inst->pid, (unsigned long long)took);
    inst->timer.data = inst;
    uv_timer_start(&inst->timer, on_health_timer, c->cfg->health_interval_ms, 0);
    publish_plugin_event(c, "/plugins/start", pl, inst->pid, "version",
                         pl->version ? pl->version : "", 0, NULL);
    core_op_t *op = pl->op;
    if (op && op->phase == 2) {
        if (op->replace)
            publish_plugin_event(c, "/plugins/replace", pl, inst->pid, "path", pl->path,
                                 op->old_pid, "old_pid");
        core_route_t *r = op->route;
        op->route = NULL;
        if (r) {
            r->on_local_end = NULL;
            msgpack_packer *pk = core_route_reply_begin(r);
            msgpack_pack_map(pk, 5);
            berth_mp_kv_str(pk, "id", pl->id);
            berth_mp_kv_i64(pk, "pid", inst->pid);
            berth_mp_kv_i64(pk, "old_pid", op->old_pid);
            berth_mp_kv_str(pk, "path", pl->path);
            berth_mp_kv_str(pk, "version", pl->version ? pl->version : "");
            core_route_reply_end(r);
        }
        berth_log(BERTH_LOG_INFO, "msg=\"%s done\" plugin=%s old_pid=%d pid=%d path=%s",
                  op_name(op), pl->id, (int)op->old_pid, (int)inst->pid, pl->path);
        if (!op->replace && !op->recycle)
            pl->restarts++;
        op_free(pl);
    }
    core_router_drain_queue(pl);
    core_supervisor_check_ready(c);
}

/* ---- start / stop ----------------------------------------------------------------------- */

static core_plugin_t *plugin_new(core_t *c, const char *id)
{
    core_plugin_t *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return NULL;
    pl->core = c;
    pl->id = strdup(id);
    uv_timer_init(c->loop, &pl->restart_timer);
    pl->restart_timer.data = pl;
    /* Keep configuration order in listings. */
    core_plugin_t **tail = &c->plugins;
    while (*tail)
        tail = &(*tail)->next;
    *tail = pl;
    c->n_plugins++;
    return pl;
}

int core_supervisor_start(core_t *c, berth_error_t **err)
{
    const core_config_t *cfg = c->cfg;
    uv_timer_init(c->loop, &c->ready_timer);
    c->ready_timer.data = c;
    uv_timer_init(c->loop, &c->trim_timer);
    uv_unref((uv_handle_t *)&c->trim_timer);
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        const core_plugin_conf_t *pc = &cfg->plugins[i];
        core_plugin_t *pl = plugin_new(c, pc->id);
        if (!pl)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        pl->conf = pc;
        pl->path = strdup(pc->path);
        if (!pc->enabled) {
            pl->status = CORE_PS_SKIP;
            berth_log(BERTH_LOG_INFO, "msg=\"plugin disabled in config\" plugin=%s", pl->id);
            continue;
        }
        if (access(pl->path, X_OK) < 0) {
            /* Enabled but not installed: `failed` (not `skip`, which means
             * disabled), retried every failed_retry_ms and by `berth plugins
             * restart ID`, so installing the binary brings it up. */
            char why[600];
            snprintf(why, sizeof(why), "binary not found: %s (%s)", pl->path, strerror(errno));
            pl->status = CORE_PS_FAILED;
            berth_log(BERTH_LOG_ERROR,
                      "msg=\"plugin binary not found; plugin not started (install it, set "
                      "plugin_dir or disable the plugin)\" plugin=%s path=%s err=\"%s\"",
                      pl->id, pl->path, strerror(errno));
            free(pl->last_exit);
            pl->last_exit = strdup(why);
            uv_timer_start(&pl->restart_timer, on_restart_timer, cfg->failed_retry_ms, 0);
            continue;
        }
    }
    for (size_t i = 0; i < cfg->n_externals; i++) {
        core_plugin_t *pl = plugin_new(c, cfg->externals[i].id);
        if (!pl)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        pl->external = true;
        pl->ext = &cfg->externals[i];
        pl->path = strdup("");
        pl->status = CORE_PS_STARTING;
    }
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next)
        if (!pl->external && pl->status != CORE_PS_SKIP && pl->status != CORE_PS_FAILED)
            spawn(pl);
    uv_timer_start(&c->ready_timer, on_ready_timeout, cfg->ready_timeout_ms, 0);
    core_supervisor_check_ready(c);
    return 0;
}

void core_supervisor_shutdown(core_t *c)
{
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next) {
        uv_timer_stop(&pl->restart_timer);
        op_finish_error(pl, BERTH_E_UNAVAILABLE, "berthd is shutting down");
        core_router_fail_queue(pl, BERTH_E_UNAVAILABLE, "berthd is shutting down");
        core_inst_t *inst = pl->inst;
        if (!inst)
            continue;
        inst->stopping = true;
        uv_timer_stop(&inst->timer);
        if (!inst->spawned) {
            if (inst->peer)
                core_peer_close(inst->peer, true);
            continue;
        }
        if (inst->exited)
            continue;
        if (!inst->peer || !core_request(inst->peer, "plugin.shutdown", NULL, NULL))
            inst_kill(inst, SIGTERM);
    }
}

void core_supervisor_kill_all(core_t *c)
{
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next)
        if (pl->inst && pl->inst->spawned && !pl->inst->exited) {
            berth_log(BERTH_LOG_WARN,
                      "msg=\"plugin did not stop in time; sending SIGKILL\" plugin=%s pid=%d",
                      pl->id, (int)pl->inst->pid);
            inst_kill(pl->inst, SIGKILL);
        }
}

bool core_supervisor_all_stopped(core_t *c)
{
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next)
        if (pl->inst && pl->inst->spawned && !pl->inst->exited)
            return false;
    return true;
}
