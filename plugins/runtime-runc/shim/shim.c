/* SPDX-License-Identifier: Apache-2.0 */
/* berth-shim request handlers and process lifecycle: create (runc create,
 * stdio, console), confirm, start, exec, kill, pause/resume, pids, stats,
 * resize, close_io, wait, events, exit_published, delete, shutdown and
 * state. Exits are written to the exit file before anyone hears of them,
 * and reported only when the process's output reached EOF (bounded). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "berth/failpoint.h"
#include "berth/log.h"
#include "berth/mp.h"
#include "cgroup.h"
#include "shim.h"

/* An unconfirmed create is rolled back after this long. */
#define CONFIRM_TIMEOUT_MS 30000

const char *shim_pstate_name(shim_pstate_t st)
{
    switch (st) {
    case SHIM_CREATED:
        return "created";
    case SHIM_RUNNING:
        return "running";
    case SHIM_PAUSED:
        return "paused";
    default:
        return "stopped";
    }
}

shim_proc_t *shim_init_proc(shim_t *s)
{
    return s->procs && s->procs->exec_id[0] == 0 ? s->procs : NULL;
}

static shim_proc_t *find_proc(shim_t *s, const char *exec_id)
{
    for (shim_proc_t *p = s->procs; p; p = p->next)
        if (strcmp(p->exec_id, exec_id ? exec_id : "") == 0)
            return p;
    return NULL;
}

void shim_proc_free(shim_proc_t *p)
{
    shim_pump_close(&p->in);
    shim_pump_close(&p->out);
    shim_pump_close(&p->err);
    if (p->console >= 0)
        close(p->console);
    for (int i = 0; i < 3; i++)
        if (p->fifo_fd[i] >= 0)
            close(p->fifo_fd[i]);
    free(p->stdin_path);
    free(p->stdout_path);
    free(p->stderr_path);
    while (p->waiters) {
        shim_waiter_t *w = p->waiters;
        p->waiters = w->next;
        free(w);
    }
    free(p);
}

/* ---- exits -------------------------------------------------------------------- */

static void pack_exit(msgpack_packer *pk, const shim_proc_t *p)
{
    msgpack_pack_map(pk, 5);
    berth_mp_kv_str(pk, "type", "exit");
    berth_mp_kv_str(pk, "exec_id", p->exec_id);
    berth_mp_kv_i64(pk, "pid", p->pid);
    berth_mp_kv_u64(pk, "exit_status", (uint64_t)p->status);
    berth_mp_kv_i64(pk, "exited_at", p->exited_at);
}

static void send_event_exit(shim_t *s, shim_conn_t *c, const shim_proc_t *p)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    shim_pack_stream_head(&b.pk, c->events_id);
    pack_exit(&b.pk, p);
    shim_conn_send(s, c, &b.buf);
    berth_mpbuf_destroy(&b);
}

static void reply_exit(shim_t *s, shim_conn_t *c, uint32_t msgid, const shim_proc_t *p)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    shim_pack_response_ok_head(&b.pk, msgid);
    msgpack_pack_map(&b.pk, 3);
    berth_mp_kv_i64(&b.pk, "pid", p->pid);
    berth_mp_kv_u64(&b.pk, "exit_status", (uint64_t)p->status);
    berth_mp_kv_i64(&b.pk, "exited_at", p->exited_at);
    shim_conn_send(s, c, &b.buf);
    berth_mpbuf_destroy(&b);
}

static void report(shim_t *s, shim_proc_t *p)
{
    if (p->reported)
        return;
    p->reported = true;
    p->report_deadline = 0;
    berth_log(BERTH_LOG_INFO, "msg=\"process exited\" id=%s exec_id=%s pid=%d status=%d", s->id,
              p->exec_id, (int)p->pid, p->status);
    for (shim_conn_t *c = s->conns; c; c = c->next)
        if (c->subscribed && !c->dead)
            send_event_exit(s, c, p);
    while (p->waiters) {
        shim_waiter_t *w = p->waiters;
        p->waiters = w->next;
        reply_exit(s, w->conn, w->msgid, p);
        free(w);
    }
}

void shim_check_report(shim_t *s, shim_proc_t *p)
{
    if (!p->reaped || p->reported)
        return;
    if (shim_proc_io_done(p) || (p->report_deadline && shim_now_ms() >= p->report_deadline))
        report(s, p);
}

static void proc_exited(shim_t *s, shim_proc_t *p, int wstatus, int64_t at)
{
    p->reaped = true;
    p->status = shim_exit_status(wstatus);
    p->exited_at = at;
    p->state = SHIM_STOPPED;
    /* Durable before anyone is told. */
    shim_exit_t e = {.pid = p->pid, .status = p->status, .exited_at = at};
    berth_error_t *err = NULL;
    if (shim_exit_write(s->bundle_fd, p->exec_id, &e, &err) < 0) {
        berth_log(BERTH_LOG_ERROR, "msg=\"cannot record exit\" err=\"%s\"", err->message);
        berth_error_free(&err);
    }
    /* Nobody writes to a dead process's stdin any more. */
    if (!p->in.done) {
        p->in.src_eof = true;
        p->in.dst_dead = true;
        shim_pump_run(&p->in, false);
    }
    p->report_deadline = shim_now_ms() + (uint64_t)s->exit_wait_ms;
    shim_check_report(s, p);
}

void shim_on_reaped(shim_t *s, pid_t pid, int wstatus)
{
    for (shim_proc_t *p = s->procs; p; p = p->next) {
        if (p->pid == pid && !p->reaped) {
            proc_exited(s, p, wstatus, berth_now_ns());
            return;
        }
    }
    /* Not known yet (runc has not told us its pid) or not ours to report
     * (a grandchild we adopted): keep it briefly. */
    shim_reaped_t *slot = &s->cache[s->n_cache % BERTH_ARRAY_SIZE(s->cache)];
    *slot = (shim_reaped_t){.pid = pid, .status = wstatus, .at = berth_now_ns()};
    s->n_cache++;
}

void shim_reap_all(shim_t *s)
{
    int st;
    pid_t r;
    while ((r = waitpid(-1, &st, WNOHANG)) > 0)
        shim_on_reaped(s, r, st);
}

/* A pid just learned from runc may already be dead. */
static void check_cache(shim_t *s, shim_proc_t *p)
{
    size_t n = s->n_cache < BERTH_ARRAY_SIZE(s->cache) ? s->n_cache : BERTH_ARRAY_SIZE(s->cache);
    for (size_t i = 0; i < n; i++) {
        if (s->cache[i].pid == p->pid) {
            s->cache[i].pid = 0;
            proc_exited(s, p, s->cache[i].status, s->cache[i].at);
            return;
        }
    }
}

/* ---- helpers -------------------------------------------------------------------- */

static int get_exec_id(const msgpack_object *params, char *out, berth_error_t **err)
{
    const char *v = NULL;
    size_t n = 0;
    if (berth_mp_get_str(params, "exec_id", &v, &n, err) < 0)
        return -1;
    out[0] = 0;
    if (!v || n == 0)
        return 0;
    if (n > SHIM_MAX_ID)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "exec id too long");
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (i > 0 && (c == '_' || c == '.' || c == '-'));
        if (!ok)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "invalid exec id %.*s", (int)n,
                                   v);
    }
    memcpy(out, v, n);
    out[n] = 0;
    return 0;
}

static shim_proc_t *need_proc(shim_t *s, const msgpack_object *params, berth_error_t **err)
{
    char exec_id[SHIM_MAX_ID + 1];
    if (get_exec_id(params, exec_id, err) < 0)
        return NULL;
    shim_proc_t *p = find_proc(s, exec_id);
    if (!p) {
        if (exec_id[0])
            berth_error_set(err, BERTH_E_NOT_FOUND, "exec %s not found in task %s", exec_id, s->id);
        else
            berth_error_set(err, BERTH_E_NOT_FOUND, "task %s is not created", s->id);
    }
    return p;
}

static int get_paths(shim_proc_t *p, const msgpack_object *params, berth_error_t **err)
{
    if (berth_mp_get_strdup(params, "stdin", &p->stdin_path, err) < 0 ||
        berth_mp_get_strdup(params, "stdout", &p->stdout_path, err) < 0 ||
        berth_mp_get_strdup(params, "stderr", &p->stderr_path, err) < 0 ||
        berth_mp_get_bool(params, "terminal", &p->terminal, err) < 0)
        return -1;
    const char *paths[3] = {p->stdin_path, p->stdout_path, p->stderr_path};
    for (int i = 0; i < 3; i++)
        if (paths[i] && paths[i][0] && paths[i][0] != '/')
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "stdio paths must be absolute");
    return 0;
}

static shim_proc_t *new_proc(const char *exec_id)
{
    shim_proc_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    snprintf(p->exec_id, sizeof(p->exec_id), "%s", exec_id ? exec_id : "");
    p->console = -1;
    p->fifo_fd[0] = p->fifo_fd[1] = p->fifo_fd[2] = -1;
    shim_pump_init(&p->in);
    shim_pump_init(&p->out);
    shim_pump_init(&p->err);
    return p;
}

/* Starts a process through runc (create for the init, exec for others). */
static int run_proc(shim_t *s, shim_proc_t *p, const char *const *args_no_console,
                    const char *pidfile, berth_error_t **err)
{
    int fds[3] = {-1, -1, -1};
    int lfd = -1;
    char console_name[SHIM_MAX_ID + 32];
    const char *args[24];
    size_t n = 0;
    for (; *args_no_console; args_no_console++)
        args[n++] = *args_no_console;
    if (p->terminal) {
        snprintf(console_name, sizeof(console_name), "console-%s.sock",
                 p->exec_id[0] ? p->exec_id : "init");
        lfd = shim_console_listen(console_name, err);
        if (lfd < 0)
            return -1;
        args[n++] = "--console-socket";
        args[n++] = console_name;
    } else if (shim_proc_stdio(p, fds, err) < 0) {
        return -1;
    }
    args[n++] = s->id;
    args[n] = NULL;
    int r = shim_runc(s, args, fds, NULL, err);
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (r == 0 && shim_read_pidfile(s, pidfile, &p->pid, err) < 0)
        r = -1;
    if (r == 0 && p->terminal) {
        int master = shim_console_recv(lfd, err);
        if (master < 0 || shim_proc_console(p, master, err) < 0)
            r = -1;
    }
    if (lfd >= 0) {
        close(lfd);
        unlink(console_name);
    }
    if (r < 0) {
        shim_pump_close(&p->in);
        shim_pump_close(&p->out);
        shim_pump_close(&p->err);
    }
    return r;
}

/* ---- handlers ------------------------------------------------------------------ */

static void h_create(shim_t *s, shim_conn_t *c, uint32_t id, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    if (s->created) {
        berth_error_set(&err, BERTH_E_ALREADY_EXISTS, "task %s is already created", s->id);
        shim_reply_err(s, c, id, &err);
        return;
    }
    shim_proc_t *p = new_proc(NULL);
    if (!p || get_paths(p, params, &err) < 0 ||
        berth_mp_get_bool(params, "fast", &s->fast, &err) < 0) {
        if (p)
            shim_proc_free(p);
        shim_reply_err(s, c, id, &err);
        return;
    }
    const char *args[] = {"create", "--bundle", s->bundle, "--pid-file", "init.pid", NULL};
    int rr = run_proc(s, p, args, "init.pid", &err);
    /* Crash point for tests/e2e/torture_runtime.bats: runc's container exists,
     * nobody has heard of it yet. */
    if (rr == 0 && berth_failpoint("shim.create.after_runc_create") < 0)
        berth_error_set(&err, BERTH_E_INTERNAL, "failpoint shim.create.after_runc_create");
    if (rr < 0 || err) {
        if (rr == 0) {
            /* Undo what runc made before reporting the failure. */
            const char *del[] = {"delete", "--force", s->id, NULL};
            const int nofds[3] = {-1, -1, -1};
            berth_error_t *e2 = NULL;
            if (shim_runc(s, del, nofds, NULL, &e2) < 0)
                berth_error_free(&e2);
            shim_reap_all(s);
        }
        berth_log(BERTH_LOG_ERROR, "msg=\"create failed\" id=%s err=\"%s\"", s->id, err->message);
        shim_proc_free(p);
        shim_reply_err(s, c, id, &err);
        /* The runtime cleans up the bundle it made; nothing of ours lives. */
        s->exiting = true;
        return;
    }
    p->state = SHIM_CREATED;
    p->next = s->procs;
    s->procs = p;
    s->created = true;
    s->create_conn = c;
    s->confirm_deadline = shim_now_ms() + CONFIRM_TIMEOUT_MS;
    check_cache(s, p);
    s->oom_fd = shim_cgroup_oom_watch(p->pid, &s->oom_v2, &s->oom_path, &err);
    if (s->oom_fd < 0) {
        berth_log(BERTH_LOG_INFO, "msg=\"no OOM notifications\" err=\"%s\"", err->message);
        berth_error_free(&err);
        s->oom_fd = -1;
    }
    berth_log(BERTH_LOG_INFO, "msg=\"created\" id=%s pid=%d", s->id, (int)p->pid);
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    shim_pack_response_ok_head(&b.pk, id);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_i64(&b.pk, "pid", p->pid);
    shim_conn_send(s, c, &b.buf);
    berth_mpbuf_destroy(&b);
}

static void reply_pid(shim_t *s, shim_conn_t *c, uint32_t id, pid_t pid)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    shim_pack_response_ok_head(&b.pk, id);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_i64(&b.pk, "pid", pid);
    shim_conn_send(s, c, &b.buf);
    berth_mpbuf_destroy(&b);
}

static void h_start(shim_t *s, shim_conn_t *c, uint32_t id, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    shim_proc_t *p = need_proc(s, params, &err);
    if (!p)
        goto fail;
    if (p->state != SHIM_CREATED || p->reaped) {
        berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "%s %s is %s, not created",
                        p->exec_id[0] ? "exec" : "task", p->exec_id[0] ? p->exec_id : s->id,
                        shim_pstate_name(p->state));
        goto fail;
    }
    if (!p->exec_id[0]) {
        const char *args[] = {"start", s->id, NULL};
        const int nofds[3] = {-1, -1, -1};
        int fr = s->fast ? shim_fast_start(s, p, &err) : 1;
        if (fr < 0 || (fr == 1 && shim_runc(s, args, nofds, NULL, &err) < 0))
            goto fail;
        if (!p->reaped)
            p->state = SHIM_RUNNING;
        reply_pid(s, c, id, p->pid);
        return;
    }
    shim_proc_t *init = shim_init_proc(s);
    if (!init || init->state != SHIM_RUNNING) {
        berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "task %s is not running", s->id);
        goto fail;
    }
    char pidfile[SHIM_MAX_ID + 16], procfile[SHIM_MAX_ID + 16];
    snprintf(pidfile, sizeof(pidfile), "exec-%s.pid", p->exec_id);
    snprintf(procfile, sizeof(procfile), "exec-%s.json", p->exec_id);
    const char *args[] = {"exec", "--detach", "--pid-file", pidfile, "--process", procfile, NULL};
    if (run_proc(s, p, args, pidfile, &err) < 0) {
        /* The exec never ran: it is stopped with status 255 (containerd
         * semantics), so that wait and delete still work. */
        p->state = SHIM_STOPPED;
        goto fail;
    }
    p->state = SHIM_RUNNING;
    check_cache(s, p);
    reply_pid(s, c, id, p->pid);
    return;
fail:
    shim_reply_err(s, c, id, &err);
}

static void h_exec(shim_t *s, shim_conn_t *c, uint32_t id, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    char exec_id[SHIM_MAX_ID + 1];
    berth_bytes_t proc = {0};
    shim_proc_t *p = NULL;
    if (get_exec_id(params, exec_id, &err) < 0)
        goto fail;
    if (!exec_id[0]) {
        berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "exec needs an exec id");
        goto fail;
    }
    shim_proc_t *init = shim_init_proc(s);
    if (!init || init->state != SHIM_RUNNING) {
        berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "task %s is not running", s->id);
        goto fail;
    }
    if (find_proc(s, exec_id)) {
        berth_error_set(&err, BERTH_E_ALREADY_EXISTS, "exec %s already exists in task %s", exec_id,
                        s->id);
        goto fail;
    }
    if (berth_mp_get_bin(params, "process", &proc, &err) != 0) {
        if (!err)
            berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "exec needs a process spec");
        goto fail;
    }
    p = new_proc(exec_id);
    if (!p || get_paths(p, params, &err) < 0 || shim_proc_open_fifos(p, &err) < 0)
        goto fail;
    char procfile[SHIM_MAX_ID + 16];
    snprintf(procfile, sizeof(procfile), "exec-%s.json", exec_id);
    int fd =
        openat(s->bundle_fd, procfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || write(fd, proc.ptr, proc.len) != (ssize_t)proc.len) {
        berth_error_errno(&err, errno, "write %s", procfile);
        if (fd >= 0)
            close(fd);
        goto fail;
    }
    close(fd);
    p->state = SHIM_CREATED;
    /* After the init, before the other execs. */
    p->next = init->next;
    init->next = p;
    shim_reply_ok_empty(s, c, id);
    return;
fail:
    if (p)
        shim_proc_free(p);
    shim_reply_err(s, c, id, &err);
}

static void h_kill(shim_t *s, shim_conn_t *c, uint32_t id, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    uint64_t sig = SIGTERM;
    bool all = false;
    shim_proc_t *p = need_proc(s, params, &err);
    if (!p || berth_mp_get_u64(params, "signal", &sig, &err) < 0 ||
        berth_mp_get_bool(params, "all", &all, &err) < 0)
        goto fail;
    if (sig == 0 || sig > 64) {
        berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "invalid signal %llu",
                        (unsigned long long)sig);
        goto fail;
    }
    if (p->reaped) {
        berth_error_set(&err, BERTH_E_NOT_FOUND, "process already finished");
        goto fail;
    }
    if (!p->exec_id[0]) {
        char sigs[8];
        snprintf(sigs, sizeof(sigs), "%u", (unsigned)sig);
        const char *args_all[] = {"kill", "--all", s->id, sigs, NULL};
        const char *args_one[] = {"kill", s->id, sigs, NULL};
        const int nofds[3] = {-1, -1, -1};
        if (shim_runc(s, all ? args_all : args_one, nofds, NULL, &err) < 0) {
            /* It may have died while runc looked: that is not an error. */
            shim_reap_all(s);
            if (p->reaped) {
                berth_error_free(&err);
                berth_error_set(&err, BERTH_E_NOT_FOUND, "process already finished");
            }
            goto fail;
        }
    } else {
        if (p->pid <= 0) {
            berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "exec %s is not started",
                            p->exec_id);
            goto fail;
        }
        if (kill(p->pid, (int)sig) < 0) {
            berth_error_set(&err, errno == ESRCH ? BERTH_E_NOT_FOUND : BERTH_E_INTERNAL,
                            "kill exec %s: %s", p->exec_id, strerror(errno));
            goto fail;
        }
    }
    shim_reply_ok_empty(s, c, id);
    return;
fail:
    shim_reply_err(s, c, id, &err);
}

static void h_pause_resume(shim_t *s, shim_conn_t *c, uint32_t id, bool pause)
{
    berth_error_t *err = NULL;
    shim_proc_t *p = shim_init_proc(s);
    shim_pstate_t want = pause ? SHIM_RUNNING : SHIM_PAUSED;
    if (!p || p->state != want || p->reaped) {
        berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "task %s is %s, not %s", s->id,
                        p ? shim_pstate_name(p->state) : "not created", shim_pstate_name(want));
        shim_reply_err(s, c, id, &err);
        return;
    }
    const char *args[] = {pause ? "pause" : "resume", s->id, NULL};
    const int nofds[3] = {-1, -1, -1};
    if (shim_runc(s, args, nofds, NULL, &err) < 0) {
        shim_reply_err(s, c, id, &err);
        return;
    }
    if (!p->reaped)
        p->state = pause ? SHIM_PAUSED : SHIM_RUNNING;
    shim_reply_ok_empty(s, c, id);
}

static void pack_proc(msgpack_packer *pk, const shim_proc_t *p)
{
    msgpack_pack_map(pk, 11);
    berth_mp_kv_str(pk, "exec_id", p->exec_id);
    berth_mp_kv_bool(pk, "exit_published", p->published);
    berth_mp_kv_i64(pk, "pid", p->pid);
    berth_mp_kv_str(pk, "status", shim_pstate_name(p->state));
    berth_mp_kv_u64(pk, "exit_status", (uint64_t)p->status);
    berth_mp_kv_i64(pk, "exited_at", p->exited_at);
    berth_mp_kv_bool(pk, "exit_reported", p->reported);
    berth_mp_kv_bool(pk, "terminal", p->terminal);
    berth_mp_kv_str(pk, "stdin", p->stdin_path ? p->stdin_path : "");
    berth_mp_kv_str(pk, "stdout", p->stdout_path ? p->stdout_path : "");
    berth_mp_kv_str(pk, "stderr", p->stderr_path ? p->stderr_path : "");
}

static void h_state(shim_t *s, shim_conn_t *c, uint32_t id)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    shim_pack_response_ok_head(&b.pk, id);
    msgpack_pack_map(&b.pk, 7);
    berth_mp_kv_str(&b.pk, "id", s->id);
    berth_mp_kv_str(&b.pk, "namespace", s->ns);
    berth_mp_kv_str(&b.pk, "bundle", s->bundle);
    berth_mp_kv_i64(&b.pk, "shim_pid", getpid());
    berth_mp_kv_bool(&b.pk, "confirmed", s->confirmed);
    shim_proc_t *init = shim_init_proc(s);
    berth_mp_pack_str(&b.pk, "init");
    if (init)
        pack_proc(&b.pk, init);
    else
        msgpack_pack_nil(&b.pk);
    size_t n = 0;
    for (shim_proc_t *p = s->procs; p; p = p->next)
        n += p->exec_id[0] != 0;
    berth_mp_pack_str(&b.pk, "execs");
    msgpack_pack_array(&b.pk, (uint32_t)n);
    for (shim_proc_t *p = s->procs; p; p = p->next)
        if (p->exec_id[0])
            pack_proc(&b.pk, p);
    shim_conn_send(s, c, &b.buf);
    berth_mpbuf_destroy(&b);
}

static void h_pids(shim_t *s, shim_conn_t *c, uint32_t id)
{
    berth_error_t *err = NULL;
    shim_proc_t *init = shim_init_proc(s);
    if (!init || init->reaped) {
        berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "task %s is not running", s->id);
        shim_reply_err(s, c, id, &err);
        return;
    }
    const char *args[] = {"ps", "--format", "json", s->id, NULL};
    const int nofds[3] = {-1, -1, -1};
    char *out = NULL;
    if (shim_runc(s, args, nofds, &out, &err) < 0) {
        shim_reply_err(s, c, id, &err);
        return;
    }
    /* runc prints a JSON array of integers. */
    long pids[4096];
    size_t n = 0;
    for (char *q = out; *q && n < BERTH_ARRAY_SIZE(pids);) {
        if (*q >= '0' && *q <= '9') {
            char *end;
            pids[n++] = strtol(q, &end, 10);
            q = end;
        } else {
            q++;
        }
    }
    free(out);
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    shim_pack_response_ok_head(&b.pk, id);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_pack_str(&b.pk, "pids");
    msgpack_pack_array(&b.pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const char *exec_id = "";
        for (shim_proc_t *p = s->procs; p; p = p->next)
            if (p->pid == pids[i] && p->exec_id[0])
                exec_id = p->exec_id;
        msgpack_pack_map(&b.pk, 2);
        berth_mp_kv_i64(&b.pk, "pid", pids[i]);
        berth_mp_kv_str(&b.pk, "exec_id", exec_id);
    }
    shim_conn_send(s, c, &b.buf);
    berth_mpbuf_destroy(&b);
}

static void h_stats(shim_t *s, shim_conn_t *c, uint32_t id)
{
    berth_error_t *err = NULL;
    shim_proc_t *init = shim_init_proc(s);
    shim_cgstats_t st;
    if (!init || init->reaped) {
        berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "task %s is not running", s->id);
        shim_reply_err(s, c, id, &err);
        return;
    }
    if (shim_cgroup_stats(init->pid, &st, &err) < 0) {
        shim_reply_err(s, c, id, &err);
        return;
    }
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_packer *pk = &b.pk;
    shim_pack_response_ok_head(pk, id);
    msgpack_pack_map(pk, 5);
    berth_mp_kv_u64(pk, "cgroup_version", (uint64_t)st.version);
    berth_mp_kv_i64(pk, "timestamp", berth_now_ns());
    berth_mp_pack_str(pk, "memory");
    msgpack_pack_map(pk, 6);
    berth_mp_kv_u64(pk, "usage", st.mem_usage);
    berth_mp_kv_u64(pk, "limit", st.mem_limit);
    berth_mp_kv_u64(pk, "max_usage", st.mem_max_usage);
    berth_mp_kv_u64(pk, "cache", st.mem_cache);
    berth_mp_kv_u64(pk, "rss", st.mem_rss);
    berth_mp_kv_u64(pk, "oom_kills", st.oom_kills);
    berth_mp_pack_str(pk, "cpu");
    msgpack_pack_map(pk, 4);
    berth_mp_kv_u64(pk, "usage_ns", st.cpu_usage_ns);
    berth_mp_kv_u64(pk, "user_ns", st.cpu_user_ns);
    berth_mp_kv_u64(pk, "system_ns", st.cpu_system_ns);
    berth_mp_pack_str(pk, "percpu_ns");
    msgpack_pack_array(pk, st.n_percpu);
    for (unsigned i = 0; i < st.n_percpu; i++)
        msgpack_pack_uint64(pk, st.percpu[i]);
    berth_mp_pack_str(pk, "pids");
    msgpack_pack_map(pk, 2);
    berth_mp_kv_u64(pk, "current", st.pids_current);
    berth_mp_kv_u64(pk, "limit", st.pids_limit);
    shim_conn_send(s, c, &b.buf);
    berth_mpbuf_destroy(&b);
}

static void h_resize(shim_t *s, shim_conn_t *c, uint32_t id, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    uint64_t w = 0, h = 0;
    shim_proc_t *p = need_proc(s, params, &err);
    if (!p || berth_mp_get_u64(params, "width", &w, &err) < 0 ||
        berth_mp_get_u64(params, "height", &h, &err) < 0)
        goto fail;
    if (p->console < 0) {
        berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "the process has no terminal");
        goto fail;
    }
    if (w == 0 || h == 0 || w > 65535 || h > 65535) {
        berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "invalid terminal size %llux%llu",
                        (unsigned long long)w, (unsigned long long)h);
        goto fail;
    }
    struct winsize ws = {.ws_row = (unsigned short)h, .ws_col = (unsigned short)w};
    if (ioctl(p->console, TIOCSWINSZ, &ws) < 0) {
        berth_error_errno(&err, errno, "resize the terminal");
        goto fail;
    }
    shim_reply_ok_empty(s, c, id);
    return;
fail:
    shim_reply_err(s, c, id, &err);
}

static void h_close_io(shim_t *s, shim_conn_t *c, uint32_t id, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    shim_proc_t *p = need_proc(s, params, &err);
    if (!p) {
        shim_reply_err(s, c, id, &err);
        return;
    }
    if (!p->in.done) {
        /* Deliver what is buffered, then close the container's stdin. */
        p->in.src_eof = true;
        shim_pump_run(&p->in, false);
    }
    shim_reply_ok_empty(s, c, id);
}

static void h_wait(shim_t *s, shim_conn_t *c, uint32_t id, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    shim_proc_t *p = need_proc(s, params, &err);
    if (!p) {
        shim_reply_err(s, c, id, &err);
        return;
    }
    if (p->reported) {
        reply_exit(s, c, id, p);
        return;
    }
    shim_waiter_t *w = calloc(1, sizeof(*w));
    if (!w) {
        berth_error_set(&err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        shim_reply_err(s, c, id, &err);
        return;
    }
    *w = (shim_waiter_t){.next = p->waiters, .conn = c, .msgid = id};
    p->waiters = w;
}

static void h_events(shim_t *s, shim_conn_t *c, uint32_t id)
{
    c->subscribed = true;
    c->events_id = id;
    /* A (re)connecting runtime hears every exit it has not acknowledged. */
    for (shim_proc_t *p = s->procs; p; p = p->next)
        if (p->reported && !p->published)
            send_event_exit(s, c, p);
}

static void h_exit_published(shim_t *s, shim_conn_t *c, uint32_t id, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    shim_proc_t *p = need_proc(s, params, &err);
    if (!p) {
        shim_reply_err(s, c, id, &err);
        return;
    }
    if (p->reported && !p->published) {
        p->published = true;
        shim_exit_t e = {
            .pid = p->pid, .status = p->status, .exited_at = p->exited_at, .published = true};
        if (shim_exit_write(s->bundle_fd, p->exec_id, &e, &err) < 0) {
            shim_reply_err(s, c, id, &err);
            return;
        }
    }
    shim_reply_ok_empty(s, c, id);
}

static void h_delete(shim_t *s, shim_conn_t *c, uint32_t id, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    bool force = false;
    shim_proc_t *p = need_proc(s, params, &err);
    if (!p || berth_mp_get_bool(params, "force", &force, &err) < 0)
        goto fail;
    bool live = !p->reaped && !(p->exec_id[0] && p->state == SHIM_CREATED);
    if (p->exec_id[0]) {
        if (live && p->state != SHIM_STOPPED) {
            berth_error_set(&err, BERTH_E_FAILED_PRECONDITION,
                            "exec %s is still running; kill it first", p->exec_id);
            goto fail;
        }
        report(s, p);
        reply_exit(s, c, id, p);
        char name[SHIM_MAX_ID + 16];
        snprintf(name, sizeof(name), "exec-%s.json", p->exec_id);
        unlinkat(s->bundle_fd, name, 0);
        snprintf(name, sizeof(name), "exec-%s.pid", p->exec_id);
        unlinkat(s->bundle_fd, name, 0);
        shim_exit_name(p->exec_id, name, sizeof(name));
        unlinkat(s->bundle_fd, name, 0);
        for (shim_proc_t **pp = &s->procs; *pp; pp = &(*pp)->next) {
            if (*pp == p) {
                *pp = p->next;
                break;
            }
        }
        shim_proc_free(p);
        return;
    }
    if (live && p->state != SHIM_CREATED && !force) {
        berth_error_set(&err, BERTH_E_FAILED_PRECONDITION,
                        "task %s is %s; kill it first or delete with force", s->id,
                        shim_pstate_name(p->state));
        goto fail;
    }
    const char *args_f[] = {"delete", "--force", s->id, NULL};
    const char *args[] = {"delete", s->id, NULL};
    const int nofds[3] = {-1, -1, -1};
    if ((live || !s->fast || shim_fast_delete(s) != 0) &&
        shim_runc(s, live ? args_f : args, nofds, NULL, &err) < 0) {
        berth_log(BERTH_LOG_WARN, "msg=\"runc delete\" err=\"%s\"", err->message);
        berth_error_free(&err);
    }
    if (!p->reaped) {
        /* delete --force killed it: collect that exit (bounded). */
        uint64_t until = shim_now_ms() + 5000;
        while (!p->reaped && shim_now_ms() < until) {
            shim_reap_all(s);
            if (!p->reaped)
                usleep(5000);
        }
        if (!p->reaped)
            proc_exited(s, p, SIGKILL, berth_now_ns());
    }
    report(s, p);
    reply_exit(s, c, id, p);
    s->exiting = true;
    return;
fail:
    shim_reply_err(s, c, id, &err);
}

static void h_shutdown(shim_t *s, shim_conn_t *c, uint32_t id)
{
    berth_error_t *err = NULL;
    shim_proc_t *init = shim_init_proc(s);
    if (init && !init->reaped) {
        berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "task %s is still alive", s->id);
        shim_reply_err(s, c, id, &err);
        return;
    }
    shim_reply_ok_empty(s, c, id);
    if (s->created)
        s->exiting = true;
    else
        s->rollback = true;
}

void shim_dispatch(shim_t *s, shim_conn_t *c, uint32_t id, const char *m, size_t ml,
                   const msgpack_object *params)
{
#define IS(name) (ml == sizeof(name) - 1 && memcmp(m, name, ml) == 0)
    berth_log(BERTH_LOG_DEBUG, "msg=\"request\" method=%.*s", (int)ml, m);
    if (IS("state"))
        h_state(s, c, id);
    else if (IS("create"))
        h_create(s, c, id, params);
    else if (IS("confirm")) {
        s->confirmed = true;
        s->confirm_deadline = 0;
        shim_reply_ok_empty(s, c, id);
    } else if (IS("start"))
        h_start(s, c, id, params);
    else if (IS("exec"))
        h_exec(s, c, id, params);
    else if (IS("kill"))
        h_kill(s, c, id, params);
    else if (IS("pause"))
        h_pause_resume(s, c, id, true);
    else if (IS("resume"))
        h_pause_resume(s, c, id, false);
    else if (IS("pids"))
        h_pids(s, c, id);
    else if (IS("stats"))
        h_stats(s, c, id);
    else if (IS("resize"))
        h_resize(s, c, id, params);
    else if (IS("close_io"))
        h_close_io(s, c, id, params);
    else if (IS("wait"))
        h_wait(s, c, id, params);
    else if (IS("events"))
        h_events(s, c, id);
    else if (IS("exit_published"))
        h_exit_published(s, c, id, params);
    else if (IS("delete"))
        h_delete(s, c, id, params);
    else if (IS("shutdown"))
        h_shutdown(s, c, id);
    else if (IS("abort")) {
        /* A restarted runtime found a task it never confirmed: undo it now
         * rather than when the confirmation times out. */
        if (s->confirmed) {
            berth_error_t *err = NULL;
            berth_error_set(&err, BERTH_E_FAILED_PRECONDITION, "task %s is confirmed", s->id);
            shim_reply_err(s, c, id, &err);
        } else {
            shim_reply_ok_empty(s, c, id);
            s->rollback = true;
        }
    } else {
        berth_error_t *err = NULL;
        berth_error_set(&err, BERTH_E_UNIMPLEMENTED, "the shim has no method %.*s", (int)ml, m);
        shim_reply_err(s, c, id, &err);
    }
#undef IS
}

/* ---- connection loss, timers, rollback ------------------------------------------ */

void shim_conn_gone(shim_t *s, shim_conn_t *c)
{
    for (shim_proc_t *p = s->procs; p; p = p->next) {
        shim_waiter_t **wp = &p->waiters;
        while (*wp) {
            if ((*wp)->conn == c) {
                shim_waiter_t *w = *wp;
                *wp = w->next;
                free(w);
            } else {
                wp = &(*wp)->next;
            }
        }
    }
    if (s->create_conn == c) {
        s->create_conn = NULL;
        if (s->created && !s->confirmed) {
            berth_log(
                BERTH_LOG_WARN,
                "msg=\"the runtime went away before confirming the task, rolling back\" id=%s",
                s->id);
            s->rollback = true;
        }
    }
}

/* v1: the counter is read again every 5 ms for 100 ms after the event. */
#define OOM_RECHECK_MS 5
#define OOM_RECHECK_FOR_MS 100

static void oom_publish(shim_t *s);

void shim_oom_fired(shim_t *s)
{
    if (shim_cgroup_oom_check(s->oom_fd, s->oom_v2, s->oom_path, &s->oom_last)) {
        s->oom_recheck_at = 0;
        oom_publish(s);
    } else if (!s->oom_v2 && s->oom_path) {
        uint64_t now = shim_now_ms();
        s->oom_recheck_at = now + OOM_RECHECK_MS;
        s->oom_recheck_until = now + OOM_RECHECK_FOR_MS;
    }
}

/* From shim_tick: the deadline set by shim_oom_fired has come. */
static void oom_recheck(shim_t *s, uint64_t now)
{
    if (!s->oom_recheck_at || now < s->oom_recheck_at)
        return;
    if (shim_cgroup_oom_check(-1, s->oom_v2, s->oom_path, &s->oom_last)) {
        s->oom_recheck_at = 0;
        oom_publish(s);
    } else {
        s->oom_recheck_at = now + OOM_RECHECK_MS < s->oom_recheck_until ? now + OOM_RECHECK_MS : 0;
    }
}

uint64_t shim_next_deadline(shim_t *s)
{
    uint64_t dl = s->confirmed ? 0 : s->confirm_deadline;
    for (shim_proc_t *p = s->procs; p; p = p->next)
        if (p->reaped && !p->reported && p->report_deadline && (dl == 0 || p->report_deadline < dl))
            dl = p->report_deadline;
    if (s->oom_recheck_at && (dl == 0 || s->oom_recheck_at < dl))
        dl = s->oom_recheck_at;
    return dl;
}

void shim_tick(shim_t *s)
{
    uint64_t now = shim_now_ms();
    if (!s->confirmed && s->confirm_deadline && now >= s->confirm_deadline) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"no confirmation from the runtime in time, rolling back\" id=%s", s->id);
        s->rollback = true;
    }
    oom_recheck(s, now);
    for (shim_proc_t *p = s->procs; p; p = p->next)
        shim_check_report(s, p);
}

static void oom_publish(shim_t *s)
{
    berth_log(BERTH_LOG_WARN, "msg=\"OOM kill in the container\" id=%s", s->id);
    for (shim_conn_t *c = s->conns; c; c = c->next) {
        if (!c->subscribed || c->dead)
            continue;
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        shim_pack_stream_head(&b.pk, c->events_id);
        msgpack_pack_map(&b.pk, 1);
        berth_mp_kv_str(&b.pk, "type", "oom");
        shim_conn_send(s, c, &b.buf);
        berth_mpbuf_destroy(&b);
    }
}

void shim_do_rollback(shim_t *s, const char *why)
{
    berth_log(BERTH_LOG_WARN, "msg=\"rolling back\" id=%s why=\"%s\"", s->id, why);
    berth_error_t *err = NULL;
    if (s->created) {
        const char *args[] = {"delete", "--force", s->id, NULL};
        const int nofds[3] = {-1, -1, -1};
        if (shim_runc(s, args, nofds, NULL, &err) < 0) {
            berth_log(BERTH_LOG_WARN, "msg=\"runc delete --force\" err=\"%s\"", err->message);
            berth_error_free(&err);
        }
        shim_reap_all(s);
    }
    for (shim_proc_t *p = s->procs; p; p = p->next) {
        shim_pump_close(&p->in);
        shim_pump_close(&p->out);
        shim_pump_close(&p->err);
        const char *paths[3] = {p->stdin_path, p->stdout_path, p->stderr_path};
        for (int i = 0; i < 3; i++) {
            struct stat st;
            /* Only FIFOs we were given; never follow a link. */
            if (paths[i] && paths[i][0] && lstat(paths[i], &st) == 0 && S_ISFIFO(st.st_mode))
                unlink(paths[i]);
        }
    }
    if (umount2("rootfs", MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        berth_log(BERTH_LOG_WARN, "msg=\"unmount rootfs\" err=\"%s\"", strerror(errno));
    shim_remove_tree(s->bundle_fd);
    if (rmdir(s->bundle) < 0)
        berth_log(BERTH_LOG_WARN, "msg=\"remove bundle\" err=\"%s\"", strerror(errno));
}
