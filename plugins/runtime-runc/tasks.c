/* SPDX-License-Identifier: Apache-2.0 */
/* The task table of the runtime plugin (loop thread only): tasks and their
 * processes, the exit subscription to each shim, exit publishing (once, and
 * always before /tasks/delete), --rm cleanup, and recovery at start: scan the
 * state dir, reconnect to live shims, and turn dead shims into STOPPED tasks
 * with their recorded exit status, never ghost RUNNING ones. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "berth/log.h"
#include "exitfile.h"
#include "msg.h"
#include "rt.h"

const char *rt_status_name(rt_status_t s)
{
    switch (s) {
    case RT_CREATED:
        return "CREATED";
    case RT_RUNNING:
        return "RUNNING";
    case RT_PAUSED:
        return "PAUSED";
    default:
        return "STOPPED";
    }
}

rt_status_t rt_status_parse(const msgpack_object *o)
{
    if (berth_mp_str_eq(o, "created"))
        return RT_CREATED;
    if (berth_mp_str_eq(o, "running"))
        return RT_RUNNING;
    if (berth_mp_str_eq(o, "paused"))
        return RT_PAUSED;
    return RT_STOPPED;
}

/* ---- table ------------------------------------------------------------------- */

rt_task_t *rt_task_find(const char *ns, const char *id)
{
    for (rt_task_t *t = rt_g.tasks; t; t = t->next)
        if (strcmp(t->ns, ns) == 0 && strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

rt_task_t *rt_task_new(const char *ns, const char *id)
{
    rt_task_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ns = strdup(ns);
    t->id = strdup(id);
    t->init.exec_id = strdup("");
    if (asprintf(&t->bundle, "%s/%s/%s", rt_g.runtime_dir, ns, id) < 0)
        t->bundle = NULL;
    if (asprintf(&t->fifo_dir, "%s/%s/%s", rt_g.fifo_root, ns, id) < 0)
        t->fifo_dir = NULL;
    t->next_msgid = 1;
    t->refs = 1; /* the table's */
    t->next = rt_g.tasks;
    rt_g.tasks = t;
    return t;
}

void rt_proc_clear(rt_proc_t *p)
{
    free(p->exec_id);
    for (int i = 0; i < 3; i++)
        free(p->fifos[i]);
    while (p->waiters) {
        rt_waiter_t *w = p->waiters;
        p->waiters = w->next;
        berth_req_failf(w->req, BERTH_E_NOT_FOUND, "the process was deleted");
        free(w);
    }
    memset(p, 0, sizeof(*p));
}

static void task_free(rt_task_t *t)
{
    rt_proc_clear(&t->init);
    while (t->execs) {
        rt_proc_t *p = t->execs;
        t->execs = p->next;
        rt_proc_clear(p);
        free(p);
    }
    free(t->ns);
    free(t->id);
    free(t->bundle);
    free(t->fifo_dir);
    free(t->runtime);
    free(t->snapshot_key);
    free(t);
}

char *rt_read_small_file(const char *dir, const char *name)
{
    char p[PATH_MAX], buf[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    buf[n] = 0;
    buf[strcspn(buf, "\n")] = 0;
    return strdup(buf);
}

void rt_task_unref(rt_task_t *t)
{
    if (--t->refs == 0)
        task_free(t);
}

void rt_task_remove(rt_task_t *t)
{
    for (rt_task_t **pp = &rt_g.tasks; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    t->next = NULL;
    t->deleting = true;
    if (t->events)
        ipc_conn_close(t->events, false);
    rt_task_unref(t);
}

rt_proc_t *rt_task_proc(rt_task_t *t, const char *exec_id)
{
    if (!exec_id || !exec_id[0])
        return &t->init;
    for (rt_proc_t *p = t->execs; p; p = p->next)
        if (strcmp(p->exec_id, exec_id) == 0)
            return p;
    return NULL;
}

/* ---- recently removed (--rm) ---------------------------------------------------- */

void rt_gone_add(const char *ns, const char *id, int status, int64_t at)
{
    rt_gone_t *g = calloc(1, sizeof(*g));
    if (!g)
        return;
    g->ns = strdup(ns);
    g->id = strdup(id);
    g->exit_status = status;
    g->exited_at = at;
    g->expires = berth_mono_ms() + 120000;
    g->next = rt_g.gone;
    rt_g.gone = g;
}

rt_gone_t *rt_gone_find(const char *ns, const char *id)
{
    uint64_t now = berth_mono_ms();
    rt_gone_t **pp = &rt_g.gone;
    rt_gone_t *found = NULL;
    while (*pp) {
        rt_gone_t *g = *pp;
        if (g->expires < now) {
            *pp = g->next;
            free(g->ns);
            free(g->id);
            free(g);
            continue;
        }
        if (!found && strcmp(g->ns, ns) == 0 && strcmp(g->id, id) == 0)
            found = g;
        pp = &g->next;
    }
    return found;
}

/* ---- events --------------------------------------------------------------------- */

void rt_publish(const char *topic, const char *ns, berth_mpbuf_t *ev)
{
    berth_publish(rt_g.p, topic, ns, ev->buf.data, ev->buf.size, NULL, NULL);
    berth_mpbuf_destroy(ev);
}

typedef struct {
    rt_task_t *t;
    char *exec_id;
} pub_ctx_t;

static void send_to_shim(rt_task_t *t, const char *method, const char *exec_id)
{
    if (!t->events || ipc_conn_closing(t->events))
        return;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_request_head(&b.pk, t->next_msgid++, method);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "exec_id", exec_id ? exec_id : "");
    ipc_conn_send_sbuf(t->events, &b.buf, false);
    berth_mpbuf_destroy(&b);
}

static void on_exit_published(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                              void *data)
{
    pub_ctx_t *pc = data;
    (void)c;
    (void)res;
    rt_task_t *t = pc->t;
    rt_proc_t *p = rt_task_proc(t, pc->exec_id);
    if (err) {
        berth_log(BERTH_LOG_WARN, "msg=\"publishing an exit failed\" ns=%s id=%s err=\"%s\"", t->ns,
                  t->id, err->message);
        /* Not acknowledged: a later recovery publishes it again. */
    } else if (p) {
        p->exit_published = true;
        if (t->shim_alive) {
            send_to_shim(t, "exit_published", pc->exec_id);
        } else if (!pc->exec_id[0] && !t->deleting) {
            /* No shim to remember it: note it in the exit record ourselves. */
            int dfd = open(t->bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                shim_exit_t e = {.pid = p->pid,
                                 .status = p->exit_status,
                                 .exited_at = p->exited_at,
                                 .published = true};
                berth_error_t *e2 = NULL;
                if (shim_exit_write(dfd, NULL, &e, &e2) < 0)
                    berth_error_free(&e2);
                close(dfd);
            }
        }
    }
    free(pc->exec_id);
    free(pc);
    rt_task_unref(t);
}

static void publish_exit(rt_task_t *t, rt_proc_t *p)
{
    if (p->exit_publishing)
        return;
    if (p->starting) {
        /* /tasks/start (or exec-started) goes first: published when the
         * start answer is processed (rt_proc_started). */
        p->exit_deferred = true;
        return;
    }
    p->exit_publishing = true;
    berth_mpbuf_t ev;
    berth_mpbuf_init(&ev);
    msgpack_pack_map(&ev.pk, 5);
    berth_mp_kv_str(&ev.pk, "container_id", t->id);
    berth_mp_kv_str(&ev.pk, "id", p->exec_id[0] ? p->exec_id : t->id);
    berth_mp_kv_i64(&ev.pk, "pid", p->pid);
    berth_mp_kv_u64(&ev.pk, "exit_status", (uint64_t)p->exit_status);
    berth_mp_kv_i64(&ev.pk, "exited_at", p->exited_at);
    pub_ctx_t *pc = calloc(1, sizeof(*pc));
    pc->t = t;
    pc->exec_id = strdup(p->exec_id);
    t->refs++;
    if (berth_publish(rt_g.p, "/tasks/exit", t->ns, ev.buf.data, ev.buf.size, on_exit_published,
                      pc) < 0) {
        free(pc->exec_id);
        free(pc);
        rt_task_unref(t);
    }
    berth_mpbuf_destroy(&ev);
}

void rt_publish_pending_exit(rt_task_t *t, rt_proc_t *p, void (*cb)(void *), void *data)
{
    /* Publishes go out on one connection in order: once /tasks/exit is sent,
     * anything published after it (the /tasks/delete) arrives after it. */
    if (p->exited && !p->exit_publishing)
        publish_exit(t, p);
    if (cb)
        cb(data);
}

void rt_reply_wait(berth_req_t *req, int status, int64_t at)
{
    msgpack_packer *pk = berth_req_reply_begin(req);
    msgpack_pack_map(pk, 2);
    berth_mp_kv_u64(pk, "exit_status", (uint64_t)status);
    berth_mp_kv_i64(pk, "exited_at", at);
    berth_req_reply_end(req);
}

void rt_proc_exited(rt_task_t *t, rt_proc_t *p, int status, int64_t exited_at, bool published)
{
    if (p->exited) {
        /* Already known (a reconnecting shim repeats unacknowledged exits). */
        if (p->exit_published && t->shim_alive && !published)
            send_to_shim(t, "exit_published", p->exec_id);
        return;
    }
    p->exited = true;
    p->status = RT_STOPPED;
    p->exit_status = status;
    p->exited_at = exited_at;
    if (published) {
        p->exit_publishing = p->exit_published = true;
    } else {
        publish_exit(t, p);
    }
    bool autorm = p == &t->init && t->rm && !t->deleting && !t->creating;
    /* With --rm, waiters hear the status once the task and the container
     * are gone, so `run --rm` leaves nothing behind when it returns. */
    while (p->waiters && !autorm) {
        rt_waiter_t *w = p->waiters;
        p->waiters = w->next;
        rt_reply_wait(w->req, status, exited_at);
        free(w);
    }
    berth_log(BERTH_LOG_INFO, "msg=\"process exited\" ns=%s id=%s exec_id=%s pid=%d status=%d",
              t->ns, t->id, p->exec_id, p->pid, status);
    if (autorm) {
        if (p->starting)
            t->autorm_deferred = true;
        else
            rt_task_auto_remove(t);
    }
}

void rt_proc_started(rt_task_t *t, rt_proc_t *p)
{
    p->starting = false;
    if (p->exit_deferred) {
        p->exit_deferred = false;
        publish_exit(t, p);
    }
    if (p == &t->init && t->autorm_deferred) {
        t->autorm_deferred = false;
        rt_task_auto_remove(t);
    }
}

static void on_shim_message(ipc_conn_t *conn, ipc_msg_t *m, void *data)
{
    rt_task_t *t = data;
    (void)conn;
    if (m->type == IPC_NOTIFY && strcmp(m->method, "$stream") == 0) {
        uint32_t id, n;
        bool from_server;
        const msgpack_object *d = NULL;
        berth_error_t *err = NULL;
        if (ipc_stream_fields(m, &id, &from_server, &n, &d, &err) < 0) {
            berth_error_free(&err);
        } else if (berth_mp_str_eq(berth_mp_get(d, "type"), "exit")) {
            _cleanup_free_ char *exec_id = berth_mp_strdup(berth_mp_get(d, "exec_id"));
            int64_t pid = 0, at = 0;
            uint64_t st = 255;
            berth_mp_get_i64(d, "pid", &pid, NULL);
            berth_mp_get_u64(d, "exit_status", &st, NULL);
            berth_mp_get_i64(d, "exited_at", &at, NULL);
            rt_proc_t *p = rt_task_proc(t, exec_id);
            if (p) {
                if (!p->pid)
                    p->pid = (int)pid;
                rt_proc_exited(t, p, (int)st, at, false);
            }
        } else if (berth_mp_str_eq(berth_mp_get(d, "type"), "oom")) {
            berth_mpbuf_t ev;
            berth_mpbuf_init(&ev);
            msgpack_pack_map(&ev.pk, 1);
            berth_mp_kv_str(&ev.pk, "container_id", t->id);
            rt_publish("/tasks/oom", t->ns, &ev);
        }
    }
    ipc_msg_free(m);
}

/* The shim is gone without a delete: collect what it recorded (or have the
 * container cleaned up and recorded as killed), off the loop. */
typedef struct {
    uv_work_t w;
    rt_task_t *t;
    char *bundle, *id, *ns, *runtime;
    shim_exit_t e;
    bool have;
} lost_t;

static void lost_work(uv_work_t *w)
{
    lost_t *l = w->data;
    int dfd = open(l->bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    berth_error_t *err = NULL;
    if (shim_exit_read(dfd, NULL, &l->e, &err) != 0) {
        berth_error_free(&err);
        char root[PATH_MAX];
        snprintf(root, sizeof(root), "%s/%s", rt_g.runc_root, l->ns);
        const char *argv[] = {
            rt_g.cfg.shim_path, "cleanup", "--id",      l->id,
            "--bundle",         l->bundle, "--runtime", l->runtime ? l->runtime : rt_g.cfg.runtime,
            "--runtime-root",   root,      NULL};
        int st = 0;
        if (rt_launcher_run(argv, &st, &err) < 0) {
            berth_log(BERTH_LOG_ERROR, "msg=\"shim cleanup failed\" id=%s err=\"%s\"", l->id,
                      err->message);
            berth_error_free(&err);
        }
        if (shim_exit_read(dfd, NULL, &l->e, &err) != 0)
            berth_error_free(&err);
        else
            l->have = true;
    } else {
        l->have = true;
    }
    close(dfd);
}

static void lost_after(uv_work_t *w, int status)
{
    lost_t *l = w->data;
    (void)status;
    rt_task_t *t = l->t;
    if (!t->deleting) {
        int st = l->have ? l->e.status : 255;
        int64_t at = l->have ? l->e.exited_at : berth_now_ns();
        rt_proc_exited(t, &t->init, st, at, l->have && l->e.published);
        for (rt_proc_t *p = t->execs; p; p = p->next)
            if (!p->exited)
                rt_proc_exited(t, p, 255, at, false);
    }
    free(l->bundle);
    free(l->id);
    free(l->ns);
    free(l->runtime);
    free(l);
    rt_task_unref(t);
}

static void on_shim_close(ipc_conn_t *conn, void *data)
{
    rt_task_t *t = data;
    (void)conn;
    t->events = NULL;
    bool was_alive = t->shim_alive;
    t->shim_alive = false;
    if (!t->deleting && was_alive && !t->init.exited && !rt_g.stopping) {
        berth_log(BERTH_LOG_WARN, "msg=\"shim connection lost\" ns=%s id=%s", t->ns, t->id);
        lost_t *l = calloc(1, sizeof(*l));
        l->t = t;
        l->bundle = strdup(t->bundle);
        l->id = strdup(t->id);
        l->ns = strdup(t->ns);
        l->runtime = t->runtime ? strdup(t->runtime) : NULL;
        l->w.data = l;
        t->refs++;
        uv_queue_work(berth_plugin_loop(rt_g.p), &l->w, lost_work, lost_after);
    }
    rt_task_unref(t); /* the connection's reference */
}

/* A connected socket to <bundle>/shim.sock, whatever the path length. */
static int shim_socket(const char *bundle, berth_error_t **err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int dfd = -1;
    if (strlen(bundle) + strlen("/shim.sock") < sizeof(sa.sun_path)) {
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/shim.sock", bundle);
    } else {
        dfd = open(bundle, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            return berth_error_errno(err, errno, "open bundle %s", bundle);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/shim.sock", dfd);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (dfd >= 0)
            close(dfd);
        return berth_error_errno(err, errno, "socket");
    }
    int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    if (dfd >= 0)
        close(dfd);
    if (r < 0) {
        close(fd);
        return berth_error_set(err, BERTH_E_UNAVAILABLE, "the shim of %s does not answer: %s",
                               bundle, strerror(e));
    }
    return fd;
}

int rt_shim_connect(shim_client_t *c, const char *bundle, berth_error_t **err)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    int fd = shim_socket(bundle, err);
    if (fd < 0)
        return -1;
    c->fd = fd;
    c->next_id = 1;
    return 0;
}

int rt_shim_call(shim_client_t *c, const char *bundle, const char *method, const void *params,
                 size_t len, int timeout_ms, const msgpack_object **result, berth_error_t **err)
{
    if (rt_shim_connect(c, bundle, err) < 0)
        return -1;
    return shim_client_call(c, method, params, len, timeout_ms, result, err);
}

void rt_tasks_unsubscribe_all(void)
{
    /* The plugin is stopping: its shims keep the containers; the next
     * instance subscribes again. Open connections would keep the loop, and
     * this process with its root lock, alive after the core went away. */
    for (rt_task_t *t = rt_g.tasks; t; t = t->next)
        if (t->events)
            ipc_conn_close(t->events, false);
}

int rt_task_subscribe(rt_task_t *t, berth_error_t **err)
{
    if (rt_g.stopping)
        return berth_error_set(err, BERTH_E_UNAVAILABLE, "the runtime plugin is stopping");
    int fd = shim_socket(t->bundle, err);
    if (fd < 0)
        return -1;
    ipc_conn_cbs_t cbs = {.on_message = on_shim_message, .on_close = on_shim_close};
    ipc_conn_t *c = ipc_conn_open_fd(berth_plugin_loop(rt_g.p), fd, NULL, &cbs, t, err);
    if (!c)
        return -1;
    t->events = c;
    t->shim_alive = true;
    t->refs++;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_request_head(&b.pk, t->next_msgid++, "events");
    msgpack_pack_map(&b.pk, 0);
    ipc_conn_send_sbuf(c, &b.buf, false);
    berth_mpbuf_destroy(&b);
    return 0;
}

/* ---- --rm ---------------------------------------------------------------------- */

typedef struct autorm_s {
    uv_work_t w;
    struct autorm_s *next; /* in g_autorms during the container stage */
    rt_task_t *t;
    char *ns, *id, *bundle, *fifo_dir, *runtime, *snapshot_key;
    bool shim_alive;
    berth_error_t *err;
    bool container_stage;
    rt_waiter_t *waiters; /* answered when everything is removed */
    int status;
    int64_t exited_at;
} autorm_t;

/* --rm removals in their container stage: the task is out of the table,
 * the container not yet gone. A tasks.wait arriving then joins their
 * waiters (answered once the container is gone), never the record of
 * removed tasks, which is only written at the end. */
static autorm_t *g_autorms;

bool rt_autorm_add_waiter(const char *ns, const char *id, berth_req_t *req)
{
    for (autorm_t *a = g_autorms; a; a = a->next) {
        if (strcmp(a->ns, ns) == 0 && strcmp(a->id, id) == 0) {
            rt_waiter_t *w = calloc(1, sizeof(*w));
            if (!w)
                return false;
            w->req = req;
            w->next = a->waiters;
            a->waiters = w;
            return true;
        }
    }
    return false;
}

static void autorm_work(uv_work_t *w)
{
    autorm_t *a = w->data;
    if (!a->container_stage) {
        rt_exit_info_t ex;
        rt_task_teardown(a->bundle, a->fifo_dir, a->runtime, a->shim_alive, true, a->ns, a->id, &ex,
                         &a->err);
    } else if (a->snapshot_key) {
        /* Known from tasks.create: no containers.get first. */
        rt_container_delete_key(a->ns, a->id, a->snapshot_key, &a->err);
    } else {
        rt_container_delete(a->ns, a->id, false, &a->err);
    }
}

static void autorm_after(uv_work_t *w, int status)
{
    autorm_t *a = w->data;
    (void)status;
    rt_task_t *t = a->t;
    if (a->err) {
        berth_log(BERTH_LOG_ERROR, "msg=\"--rm cleanup failed\" ns=%s id=%s stage=%s err=\"%s\"",
                  a->ns, a->id, a->container_stage ? "container" : "task", a->err->message);
        berth_error_free(&a->err);
        if (!a->container_stage) {
            t->deleting = false;
            goto done;
        }
    }
    if (!a->container_stage) {
        rt_proc_t *p = &t->init;
        berth_mpbuf_t ev;
        berth_mpbuf_init(&ev);
        msgpack_pack_map(&ev.pk, 5);
        berth_mp_kv_str(&ev.pk, "container_id", t->id);
        berth_mp_kv_str(&ev.pk, "id", t->id);
        berth_mp_kv_i64(&ev.pk, "pid", p->pid);
        berth_mp_kv_u64(&ev.pk, "exit_status", (uint64_t)p->exit_status);
        berth_mp_kv_i64(&ev.pk, "exited_at", p->exited_at);
        rt_publish("/tasks/delete", t->ns, &ev);
        a->status = p->exit_status;
        a->exited_at = p->exited_at;
        /* Waiters that came in meanwhile join the ones taken at the exit. */
        while (p->waiters) {
            rt_waiter_t *w = p->waiters;
            p->waiters = w->next;
            w->next = a->waiters;
            a->waiters = w;
        }
        rt_task_remove(t);
        /* Then the container and its snapshot. */
        a->container_stage = true;
        a->next = g_autorms;
        g_autorms = a;
        uv_queue_work(berth_plugin_loop(rt_g.p), &a->w, autorm_work, autorm_after);
        return;
    }
    for (autorm_t **pp = &g_autorms; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    }
    /* A tasks.wait re-sent after this (a dropped connection) still gets the
     * status for a while. */
    rt_gone_add(a->ns, a->id, a->status, a->exited_at);
done:
    while (a->waiters) {
        rt_waiter_t *w = a->waiters;
        a->waiters = w->next;
        rt_reply_wait(w->req, a->container_stage ? a->status : t->init.exit_status,
                      a->container_stage ? a->exited_at : t->init.exited_at);
        free(w);
    }
    free(a->ns);
    free(a->id);
    free(a->bundle);
    free(a->fifo_dir);
    free(a->runtime);
    free(a->snapshot_key);
    free(a);
    rt_task_unref(t);
}

void rt_task_auto_remove(rt_task_t *t)
{
    if (t->deleting)
        return;
    t->deleting = true;
    autorm_t *a = calloc(1, sizeof(*a));
    a->t = t;
    a->ns = strdup(t->ns);
    a->id = strdup(t->id);
    a->bundle = strdup(t->bundle);
    a->fifo_dir = strdup(t->fifo_dir);
    a->runtime = t->runtime ? strdup(t->runtime) : NULL;
    a->snapshot_key = t->snapshot_key ? strdup(t->snapshot_key) : NULL;
    a->shim_alive = t->shim_alive;
    a->w.data = a;
    a->waiters = t->init.waiters;
    t->init.waiters = NULL;
    t->refs++;
    rt_publish_pending_exit(t, &t->init, NULL, NULL);
    uv_queue_work(berth_plugin_loop(rt_g.p), &a->w, autorm_work, autorm_after);
}

/* ---- recovery -------------------------------------------------------------------- */

static void fifos_from(rt_proc_t *p, const msgpack_object *o)
{
    static const char *const keys[3] = {"stdin", "stdout", "stderr"};
    for (int i = 0; i < 3; i++) {
        char *s = berth_mp_strdup(berth_mp_get(o, keys[i]));
        if (s && !s[0]) {
            free(s);
            s = NULL;
        }
        p->fifos[i] = s;
    }
    bool tty = false;
    berth_mp_get_bool(o, "terminal", &tty, NULL);
    p->terminal = tty;
}

static void proc_from_state(rt_task_t *t, rt_proc_t *p, const msgpack_object *o)
{
    int64_t pid = 0, at = 0;
    uint64_t st = 0;
    bool reported = false, published = false;
    berth_mp_get_i64(o, "pid", &pid, NULL);
    berth_mp_get_u64(o, "exit_status", &st, NULL);
    berth_mp_get_i64(o, "exited_at", &at, NULL);
    berth_mp_get_bool(o, "exit_reported", &reported, NULL);
    berth_mp_get_bool(o, "exit_published", &published, NULL);
    p->pid = (int)pid;
    p->status = rt_status_parse(berth_mp_get(o, "status"));
    fifos_from(p, o);
    if (reported)
        rt_proc_exited(t, p, (int)st, at, published);
    else if (p->status == RT_STOPPED)
        p->status = RT_RUNNING; /* exited, output not drained yet: reported soon */
}

static void recover_one(const char *ns, const char *id)
{
    rt_task_t *t = rt_task_new(ns, id);
    if (!t || !t->bundle || !t->fifo_dir)
        return;
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/config.json", t->bundle);
    berth_error_t *err = NULL;
    if (access(p, F_OK) != 0) {
        /* Never finished: no shim was started for it. */
        berth_log(BERTH_LOG_INFO, "msg=\"removing an incomplete bundle\" ns=%s id=%s", ns, id);
        snprintf(p, sizeof(p), "%s/rootfs", t->bundle);
        rt_rootfs_unmount(p, &err);
        rt_remove_tree(t->bundle, &err);
        berth_error_free(&err);
        rt_task_remove(t);
        return;
    }
    snprintf(p, sizeof(p), "%s/rm", t->bundle);
    t->rm = access(p, F_OK) == 0;
    t->runtime = rt_read_small_file(t->bundle, "runtime");
    t->creating = true; /* no auto-remove while we rebuild */

    shim_client_t c;
    const msgpack_object *st = NULL;
    if (rt_shim_call(&c, t->bundle, "state", NULL, 0, 3000, &st, &err) == 0) {
        bool confirmed = false;
        berth_mp_get_bool(st, "confirmed", &confirmed, NULL);
        if (!confirmed) {
            /* The previous instance died between create and confirm. */
            berth_log(BERTH_LOG_INFO, "msg=\"aborting an unconfirmed task\" ns=%s id=%s", ns, id);
            const msgpack_object *r;
            shim_client_call(&c, "abort", NULL, 0, 3000, &r, &err);
            berth_error_free(&err);
            shim_client_close(&c);
            rt_task_remove(t);
            return;
        }
        int64_t spid = 0;
        berth_mp_get_i64(st, "shim_pid", &spid, NULL);
        t->shim_pid = (int)spid;
        t->shim_alive = true;
        const msgpack_object *init = berth_mp_get(st, "init");
        if (init && init->type == MSGPACK_OBJECT_MAP)
            proc_from_state(t, &t->init, init);
        const msgpack_object *execs = berth_mp_get(st, "execs");
        for (uint32_t i = 0;
             execs && execs->type == MSGPACK_OBJECT_ARRAY && i < execs->via.array.size; i++) {
            rt_proc_t *x = calloc(1, sizeof(*x));
            x->exec_id = berth_mp_strdup(berth_mp_get(&execs->via.array.ptr[i], "exec_id"));
            if (!x->exec_id) {
                free(x);
                continue;
            }
            x->next = t->execs;
            t->execs = x;
            proc_from_state(t, x, &execs->via.array.ptr[i]);
        }
        shim_client_close(&c);
        if (rt_task_subscribe(t, &err) < 0) {
            berth_log(BERTH_LOG_WARN, "msg=\"cannot subscribe to the shim\" id=%s err=\"%s\"", id,
                      err->message);
            berth_error_free(&err);
        }
        berth_log(BERTH_LOG_INFO, "msg=\"reconnected to shim\" ns=%s id=%s pid=%d status=%s", ns,
                  id, t->init.pid, rt_status_name(t->init.status));
    } else {
        berth_error_free(&err);
        shim_client_close(&c);
        /* The shim is gone: its exit record, or a cleanup that makes one. */
        int dfd = open(t->bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 && errno == ENOENT) {
            /* It rolled back an unconfirmed task while we looked. */
            berth_log(BERTH_LOG_INFO, "msg=\"task rolled back by its shim\" ns=%s id=%s", ns, id);
            rt_task_remove(t);
            return;
        }
        shim_exit_t e;
        bool have = dfd >= 0 && shim_exit_read(dfd, NULL, &e, &err) == 0;
        berth_error_free(&err);
        if (!have && dfd >= 0) {
            char root[PATH_MAX];
            snprintf(root, sizeof(root), "%s/%s", rt_g.runc_root, ns);
            const char *argv[] = {rt_g.cfg.shim_path,
                                  "cleanup",
                                  "--id",
                                  id,
                                  "--bundle",
                                  t->bundle,
                                  "--runtime",
                                  t->runtime ? t->runtime : rt_g.cfg.runtime,
                                  "--runtime-root",
                                  root,
                                  NULL};
            int status = 0;
            if (rt_launcher_run(argv, &status, &err) < 0) {
                berth_log(BERTH_LOG_ERROR, "msg=\"shim cleanup failed\" id=%s err=\"%s\"", id,
                          err->message);
                berth_error_free(&err);
            }
            have = shim_exit_read(dfd, NULL, &e, &err) == 0;
            berth_error_free(&err);
        }
        if (dfd >= 0)
            close(dfd);
        snprintf(p, sizeof(p), "%s/config.json", t->bundle);
        if (access(p, F_OK) != 0 && !have) {
            /* Its shim is removing the bundle (rolling back) meanwhile. */
            berth_log(BERTH_LOG_INFO, "msg=\"task rolled back by its shim\" ns=%s id=%s", ns, id);
            snprintf(p, sizeof(p), "%s/rootfs", t->bundle);
            berth_error_t *e2 = NULL;
            rt_rootfs_unmount(p, &e2);
            rt_remove_tree(t->bundle, &e2);
            berth_error_free(&e2);
            rt_task_remove(t);
            return;
        }
        /* Its stdio FIFOs, if the client asked for them. */
        static const char *const names[3] = {"stdin", "stdout", "stderr"};
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof(p), "%s/init-%s", t->fifo_dir, names[i]);
            if (access(p, F_OK) == 0)
                t->init.fifos[i] = strdup(p);
        }
        t->init.pid = have ? e.pid : 0;
        berth_log(BERTH_LOG_WARN, "msg=\"shim gone, task stopped\" ns=%s id=%s status=%d", ns, id,
                  have ? e.status : 255);
        rt_proc_exited(t, &t->init, have ? e.status : 255, have ? e.exited_at : berth_now_ns(),
                       have && e.published);
    }
    t->creating = false;
    if (t->rm && t->init.exited)
        rt_task_auto_remove(t);
}

static void clean_tmp(void)
{
    DIR *d = opendir(rt_g.tmp_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[PATH_MAX + 512];
        snprintf(p, sizeof(p), "%s/%s", rt_g.tmp_dir, de->d_name);
        berth_error_t *err = NULL;
        rt_rootfs_unmount(p, &err);
        berth_error_free(&err);
        rmdir(p);
    }
    closedir(d);
}

/* FIFO directories of tasks that no longer exist. */
static void clean_fifos(void)
{
    DIR *nd = opendir(rt_g.fifo_root);
    if (!nd)
        return;
    struct dirent *n;
    while ((n = readdir(nd))) {
        if (n->d_name[0] == '.')
            continue;
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/%s", rt_g.fifo_root, n->d_name);
        DIR *id = opendir(dir);
        if (!id)
            continue;
        struct dirent *e;
        while ((e = readdir(id))) {
            if (e->d_name[0] == '.')
                continue;
            if (rt_task_find(n->d_name, e->d_name))
                continue;
            char p[PATH_MAX + 512];
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            berth_error_t *err = NULL;
            rt_remove_tree(p, &err);
            berth_error_free(&err);
        }
        closedir(id);
    }
    closedir(nd);
}

int rt_recover(berth_error_t **err)
{
    (void)err;
    clean_tmp();
    DIR *nd = opendir(rt_g.runtime_dir);
    if (nd) {
        struct dirent *n;
        while ((n = readdir(nd))) {
            if (n->d_name[0] == '.' || !rt_valid_id(n->d_name))
                continue;
            char dir[PATH_MAX];
            snprintf(dir, sizeof(dir), "%s/%s", rt_g.runtime_dir, n->d_name);
            DIR *id = opendir(dir);
            if (!id)
                continue;
            struct dirent *e;
            while ((e = readdir(id))) {
                if (e->d_name[0] == '.' || !rt_valid_id(e->d_name))
                    continue;
                recover_one(n->d_name, e->d_name);
            }
            closedir(id);
        }
        closedir(nd);
    }
    clean_fifos();
    size_t n = 0;
    for (rt_task_t *t = rt_g.tasks; t; t = t->next)
        n++;
    berth_log(BERTH_LOG_INFO, "msg=\"recovered tasks\" count=%zu", n);
    return 0;
}

/* ---- teardown (worker thread) ----------------------------------------------------- */

int rt_task_teardown(const char *bundle, const char *fifo_dir, const char *runtime, bool shim_alive,
                     bool force, const char *ns, const char *id, rt_exit_info_t *ex,
                     berth_error_t **err)
{
    memset(ex, 0, sizeof(*ex));
    bool dead = !shim_alive;
    uint64_t t0 = berth_mono_ms(), t_shim, t_reply = 0;
    if (shim_alive) {
        shim_client_t c;
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        msgpack_pack_map(&b.pk, 1);
        berth_mp_kv_bool(&b.pk, "force", force);
        const msgpack_object *r = NULL;
        berth_error_t *e = NULL;
        int rc = rt_shim_call(&c, bundle, "delete", b.buf.data, b.buf.size, 30000, &r, &e);
        berth_mpbuf_destroy(&b);
        if (rc == 0) {
            int64_t pid = 0, at = 0;
            uint64_t st = 0;
            berth_mp_get_i64(r, "pid", &pid, NULL);
            berth_mp_get_u64(r, "exit_status", &st, NULL);
            berth_mp_get_i64(r, "exited_at", &at, NULL);
            ex->pid = (int)pid;
            ex->status = (int)st;
            ex->exited_at = at;
            ex->have = true;
            t_reply = berth_mono_ms();
            /* The shim exits right after answering: wait for it to close
             * (bounded) so nothing is still writing into the bundle. */
            uint8_t buf[256];
            uint64_t until = berth_mono_ms() + 3000;
            while (berth_mono_ms() < until) {
                struct pollfd pf = {.fd = c.fd, .events = POLLIN};
                if (poll(&pf, 1, 100) > 0 && read(c.fd, buf, sizeof(buf)) <= 0)
                    break;
            }
            shim_client_close(&c);
        } else {
            shim_client_close(&c);
            if (e->code != BERTH_E_UNAVAILABLE) {
                *err = e;
                return -1;
            }
            berth_error_free(&e);
            dead = true;
        }
    }
    int dfd = open(bundle, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dead && dfd >= 0) {
        /* Make sure runc forgot the container and the rootfs is unmounted. */
        char root[PATH_MAX];
        snprintf(root, sizeof(root), "%s/%s", rt_g.runc_root, ns);
        const char *argv[] = {
            rt_g.cfg.shim_path, "cleanup", "--id",      id,
            "--bundle",         bundle,    "--runtime", runtime ? runtime : rt_g.cfg.runtime,
            "--runtime-root",   root,      NULL};
        int st = 0;
        berth_error_t *e = NULL;
        if (rt_launcher_run(argv, &st, &e) < 0) {
            berth_log(BERTH_LOG_WARN, "msg=\"shim cleanup\" id=%s err=\"%s\"", id, e->message);
            berth_error_free(&e);
        }
        shim_exit_t xe;
        if (shim_exit_read(dfd, NULL, &xe, &e) == 0) {
            ex->pid = xe.pid;
            ex->status = xe.status;
            ex->exited_at = xe.exited_at;
            ex->have = true;
        }
        berth_error_free(&e);
    }
    if (dfd >= 0)
        close(dfd);
    t_shim = berth_mono_ms();
    char rootfs[PATH_MAX];
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", bundle);
    if (rt_rootfs_unmount(rootfs, err) < 0)
        return -1;
    if (rt_remove_tree(bundle, err) < 0)
        return -1;
    berth_log(BERTH_LOG_DEBUG,
              "msg=\"task torn down\" id=%s shim_delete_ms=%llu shim_exit_ms=%llu "
              "unmount_remove_ms=%llu",
              id, (unsigned long long)(t_reply ? t_reply - t0 : t_shim - t0),
              (unsigned long long)(t_reply ? t_shim - t_reply : 0),
              (unsigned long long)(berth_mono_ms() - t_shim));
    berth_error_t *e = NULL;
    if (rt_remove_tree(fifo_dir, &e) < 0) {
        berth_log(BERTH_LOG_WARN, "msg=\"remove fifos\" dir=%s err=\"%s\"", fifo_dir, e->message);
        berth_error_free(&e);
    }
    return 0;
}
