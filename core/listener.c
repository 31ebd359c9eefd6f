/* SPDX-License-Identifier: Apache-2.0 */
/* Sockets and peers: the public socket (<state>/berth.sock, 0660, uid 0 or
 * the configured group, checked with SO_PEERCRED/SO_PEERGROUPS), the socket
 * for external plugins (<state>/plugins.sock, 0600, uid 0), and the peer
 * object wrapped around every connection (clients, supervised plugins). */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "core.h"

/* A refused peer gets this long to send its first request (which is
 * answered with permission_denied) before it is disconnected. */
#define DENY_GRACE_MS 2000

const char *core_peer_desc(const core_peer_t *p)
{
    static char buf[160];
    if (p->inst)
        snprintf(buf, sizeof(buf), "plugin=%s pid=%d", p->inst->plugin->id, (int)p->pid);
    else
        snprintf(buf, sizeof(buf), "peer=%s pid=%d uid=%u",
                 p->kind == CORE_PEER_CLIENT ? "client" : "external", (int)p->pid,
                 (unsigned)p->uid);
    return buf;
}

/* Streams through the core (imports, exports, reads) leave freed buffers
 * in glibc's heap; two seconds after the last message they are given back,
 * so an idle berthd stays at its idle size. */
static void on_trim(uv_timer_t *t)
{
    (void)t;
    malloc_trim(0);
}

static void on_message(ipc_conn_t *conn, ipc_msg_t *m, void *data)
{
    core_peer_t *p = data;
    uv_timer_start(&p->core->trim_timer, on_trim, 2000, 0);
    core_on_message(p, m);
}

static void on_protocol_error(ipc_conn_t *conn, const berth_error_t *err, void *data)
{
    core_peer_t *p = data;
    berth_log(p->kind == CORE_PEER_CLIENT ? BERTH_LOG_INFO : BERTH_LOG_WARN,
              "msg=\"protocol error, closing connection\" %s err=\"%s\"", core_peer_desc(p),
              err && err->message ? err->message : "?");
}

static void free_timer(uv_handle_t *h)
{
    free(h);
}

static void unblock_all(core_peer_t *on)
{
    core_peer_t *b = on->blocked_head;
    on->blocked_head = NULL;
    while (b) {
        core_peer_t *next = b->blocked_next;
        b->blocked_next = NULL;
        b->blocked_on = NULL;
        if (!b->closed)
            ipc_conn_read_start(b->conn);
        b = next;
    }
}

static void on_drain(ipc_conn_t *conn, void *data)
{
    unblock_all(data);
}

void core_peer_block_on(core_peer_t *p, core_peer_t *on)
{
    if (p->blocked_on || p->closed || on->closed)
        return;
    p->blocked_on = on;
    p->blocked_next = on->blocked_head;
    on->blocked_head = p;
    ipc_conn_read_stop(p->conn);
}

static void unlink_blocked(core_peer_t *p)
{
    core_peer_t *on = p->blocked_on;
    if (!on)
        return;
    for (core_peer_t **pp = &on->blocked_head; *pp; pp = &(*pp)->blocked_next) {
        if (*pp == p) {
            *pp = p->blocked_next;
            break;
        }
    }
    p->blocked_on = NULL;
    p->blocked_next = NULL;
}

static void on_close(ipc_conn_t *conn, void *data)
{
    core_peer_t *p = data;
    core_t *c = p->core;
    p->closed = true;
    if (p->deny_timer) {
        uv_close((uv_handle_t *)p->deny_timer, free_timer);
        p->deny_timer = NULL;
    }
    unlink_blocked(p);
    unblock_all(p);
    core_router_peer_closed(p);
    if (p->kind != CORE_PEER_CLIENT)
        core_supervisor_peer_closed(p);
    if (p->prev)
        p->prev->next = p->next;
    else
        c->peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p);
    if (c->shutting_down)
        core_shutdown_check(c);
}

static const ipc_conn_cbs_t peer_cbs = {
    .on_message = on_message,
    .on_protocol_error = on_protocol_error,
    .on_close = on_close,
};

core_peer_t *core_peer_new(core_t *c, core_peer_kind_t kind)
{
    core_peer_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->core = c;
    p->kind = kind;
    ipc_idmap_init(&p->calls);
    ipc_idmap_init(&p->serving);
    p->next = c->peers;
    if (c->peers)
        c->peers->prev = p;
    c->peers = p;
    return p;
}

static void peer_unlink_free(core_peer_t *p)
{
    core_t *c = p->core;
    if (p->prev)
        p->prev->next = p->next;
    else
        c->peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p);
}

int core_peer_attach_fd(core_peer_t *p, int fd, berth_error_t **err)
{
    p->conn = ipc_conn_open_fd(p->core->loop, fd, &p->core->conn_opts, &peer_cbs, p, err);
    if (!p->conn)
        return -1;
    ipc_conn_set_drain_cb(p->conn, on_drain);
    return 0;
}

void core_peer_close(core_peer_t *p, bool flush)
{
    if (p && p->conn && !p->closed)
        ipc_conn_close(p->conn, flush);
}

/* ---- authorization --------------------------------------------------------- */

static bool in_group(int fd, gid_t primary, gid_t want)
{
    if (primary == want)
        return true;
    gid_t groups[256];
    socklen_t len = sizeof(groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
        return false;
    for (size_t i = 0; i < len / sizeof(gid_t); i++)
        if (groups[i] == want)
            return true;
    return false;
}

static void deny_timeout(uv_timer_t *t)
{
    core_peer_t *p = t->data;
    core_peer_close(p, true);
}

static void accept_peer(uv_stream_t *server, core_peer_kind_t kind)
{
    core_t *c = server->data;
    uv_pipe_t *pipe = malloc(sizeof(*pipe));
    if (!pipe)
        return;
    uv_pipe_init(c->loop, pipe, 0);
    if (uv_accept(server, (uv_stream_t *)pipe) < 0) {
        uv_close((uv_handle_t *)pipe, (uv_close_cb)free);
        return;
    }
    core_peer_t *p = core_peer_new(c, kind);
    if (!p) {
        uv_close((uv_handle_t *)pipe, (uv_close_cb)free);
        return;
    }
    p->conn = ipc_conn_wrap_pipe(pipe, &c->conn_opts, &peer_cbs, p);
    if (!p->conn) {
        uv_close((uv_handle_t *)pipe, (uv_close_cb)free);
        peer_unlink_free(p);
        return;
    }
    ipc_conn_set_drain_cb(p->conn, on_drain);
    pid_t pid = 0;
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    if (ipc_conn_peercred(p->conn, &pid, &uid, &gid) == 0) {
        p->pid = pid;
        p->uid = uid;
        p->gid = gid;
    }
    if (uid == 0 || uid == geteuid())
        p->authorized = true;
    else if (kind == CORE_PEER_CLIENT && c->have_group &&
             in_group(ipc_conn_fd(p->conn), gid, c->group_gid))
        p->authorized = true;
    if (c->shutting_down) {
        core_peer_close(p, false);
        return;
    }
    if (!p->authorized) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"connection refused: peer is not root and not in the configured group\" "
                  "socket=%s pid=%d uid=%u gid=%u",
                  kind == CORE_PEER_CLIENT ? c->cfg->address : c->cfg->plugins_address, (int)pid,
                  (unsigned)uid, (unsigned)gid);
        p->deny_timer = malloc(sizeof(uv_timer_t));
        if (p->deny_timer) {
            uv_timer_init(c->loop, p->deny_timer);
            p->deny_timer->data = p;
            uv_timer_start(p->deny_timer, deny_timeout, DENY_GRACE_MS, 0);
        } else {
            core_peer_close(p, false);
        }
        return;
    }
    berth_log(BERTH_LOG_TRACE, "msg=\"connection accepted\" %s", core_peer_desc(p));
}

static void on_public_conn(uv_stream_t *server, int status)
{
    if (status == 0)
        accept_peer(server, CORE_PEER_CLIENT);
}

static void on_plugins_conn(uv_stream_t *server, int status)
{
    if (status == 0)
        accept_peer(server, CORE_PEER_EXTERNAL);
}

/* ---- sockets ------------------------------------------------------------------ */

static int listen_on(core_t *c, const char *path, mode_t mode, gid_t gid, bool set_gid,
                     uv_connection_cb cb, uv_pipe_t **out, berth_error_t **err)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        /* We hold <state>/berthd.lock, so a socket here is stale. Anything
         * else is not ours to delete. */
        if (!S_ISSOCK(st.st_mode))
            return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                   "%s exists and is not a socket; remove it or change the address",
                                   path);
        if (unlink(path) < 0)
            return berth_error_errno(err, errno, "remove stale socket %s", path);
    }
    uv_pipe_t *p = malloc(sizeof(*p));
    if (!p)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    uv_pipe_init(c->loop, p, 0);
    p->data = c;
    /* The umask makes the socket appear with its final mode: no window in
     * which it is more open than intended. */
    mode_t old = umask(0777 & ~mode);
    int r = uv_pipe_bind(p, path);
    umask(old);
    if (r < 0) {
        uv_close((uv_handle_t *)p, (uv_close_cb)free);
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "bind %s: %s", path,
                               uv_strerror(r));
    }
    if ((set_gid && chown(path, 0, gid) < 0) || chmod(path, mode) < 0) {
        int e = errno;
        uv_close((uv_handle_t *)p, (uv_close_cb)free);
        unlink(path);
        return berth_error_errno(err, e, "set owner/mode of %s", path);
    }
    r = uv_listen((uv_stream_t *)p, 511, cb);
    if (r < 0) {
        uv_close((uv_handle_t *)p, (uv_close_cb)free);
        unlink(path);
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "listen on %s: %s", path,
                               uv_strerror(r));
    }
    *out = p;
    return 0;
}

int core_listen_all(core_t *c, berth_error_t **err)
{
    if (listen_on(c, c->cfg->address, 0660, c->group_gid, c->have_group, on_public_conn,
                  &c->listen_pub, err) < 0)
        return -1;
    if (listen_on(c, c->cfg->plugins_address, 0600, 0, false, on_plugins_conn, &c->listen_plugins,
                  err) < 0)
        return -1;
    berth_log(BERTH_LOG_INFO, "msg=\"serving\" address=%s plugins_address=%s", c->cfg->address,
              c->cfg->plugins_address);
    return 0;
}

void core_listen_close(core_t *c)
{
    if (c->listen_pub) {
        uv_close((uv_handle_t *)c->listen_pub, (uv_close_cb)free);
        c->listen_pub = NULL;
        unlink(c->cfg->address);
    }
    if (c->listen_plugins) {
        uv_close((uv_handle_t *)c->listen_plugins, (uv_close_cb)free);
        c->listen_plugins = NULL;
        unlink(c->cfg->plugins_address);
    }
}
