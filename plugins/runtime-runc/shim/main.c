/* SPDX-License-Identifier: Apache-2.0 */
/* berth-shim: one per container. Daemonizes away from berthd's process tree,
 * becomes the container's subreaper, serves the berth protocol on
 * <bundle>/shim.sock and runs runc. The poll() loop here multiplexes the
 * signalfd, the socket and its connections, the stdio pumps and the OOM
 * watch; shim.c holds the request handlers.
 *
 *   berth-shim --id ID --namespace NS --bundle DIR [--runtime runc]
 *              [--runtime-root DIR] [--systemd-cgroup] [--sync-fd N]
 *              [--foreground] [--exit-wait-ms N] [--log-level L]
 *   berth-shim cleanup --id ID --bundle DIR [--runtime runc] [--runtime-root DIR]
 *       (the runtime's janitor for a shim that died: runc delete --force,
 *        unmount the rootfs, record exit 137 if no exit was recorded) */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "berth/log.h"
#include "berth/mp.h"
#include "shim.h"

uint64_t shim_now_ms(void)
{
    return berth_mono_ms();
}

/* ---- connections ------------------------------------------------------------ */

void shim_conn_send(shim_t *s, shim_conn_t *c, msgpack_sbuffer *sb)
{
    (void)s;
    if (!c || c->dead)
        return;
    if (shim_buf_avail(&c->out) > (16u << 20) ||
        shim_buf_put_frame(&c->out, sb->data, sb->size) < 0) {
        berth_log(BERTH_LOG_WARN, "msg=\"client not reading, dropping it\"");
        c->dead = true;
        return;
    }
    /* Try now; poll() handles the rest. */
    while (shim_buf_avail(&c->out)) {
        ssize_t w = send(c->fd, shim_buf_head(&c->out), shim_buf_avail(&c->out),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            break;
        if (w <= 0) {
            c->dead = true;
            break;
        }
        shim_buf_consume(&c->out, (size_t)w);
    }
}

void shim_reply_ok_empty(shim_t *s, shim_conn_t *c, uint32_t msgid)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    shim_pack_response_ok_head(&b.pk, msgid);
    msgpack_pack_map(&b.pk, 0);
    shim_conn_send(s, c, &b.buf);
    berth_mpbuf_destroy(&b);
}

void shim_reply_err(shim_t *s, shim_conn_t *c, uint32_t msgid, berth_error_t **err)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    berth_code_t code = *err ? (*err)->code : BERTH_E_INTERNAL;
    const char *m = *err && (*err)->message ? (*err)->message : "internal error";
    shim_pack_response_err(&b.pk, msgid, code, m);
    shim_conn_send(s, c, &b.buf);
    berth_mpbuf_destroy(&b);
    berth_error_free(err);
}

static void conn_read(shim_t *s, shim_conn_t *c)
{
    uint8_t buf[16384];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            c->dead = true;
            return;
        }
        if (shim_buf_put(&c->in, buf, (size_t)n) < 0) {
            c->dead = true;
            return;
        }
        if ((size_t)n < sizeof(buf))
            break;
    }
    for (;;) {
        uint8_t *payload = NULL;
        size_t len = 0;
        berth_error_t *err = NULL;
        int r = shim_buf_take_frame(&c->in, SHIM_MAX_FRAME, &payload, &len, &err);
        if (r < 0) {
            berth_log(BERTH_LOG_WARN, "msg=\"bad frame, closing connection\" err=\"%s\"",
                      err->message);
            berth_error_free(&err);
            c->dead = true;
            return;
        }
        if (r == 0)
            return;
        msgpack_zone *zone = NULL;
        msgpack_object m;
        if (berth_mp_unpack(payload, len, &berth_mp_default_limits, &zone, &m, &err) < 0) {
            berth_log(BERTH_LOG_WARN, "msg=\"bad message, closing connection\" err=\"%s\"",
                      err->message);
            berth_error_free(&err);
            free(payload);
            c->dead = true;
            return;
        }
        const msgpack_object *a = m.type == MSGPACK_OBJECT_ARRAY ? m.via.array.ptr : NULL;
        if (a && m.via.array.size == 4 && a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
            a[0].via.u64 == 0 && a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
            a[1].via.u64 <= UINT32_MAX && a[2].type == MSGPACK_OBJECT_STR &&
            a[3].type == MSGPACK_OBJECT_MAP) {
            shim_dispatch(s, c, (uint32_t)a[1].via.u64, a[2].via.str.ptr, a[2].via.str.size, &a[3]);
        } else if (a && m.via.array.size >= 1 && a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                   a[0].via.u64 == 2) {
            /* $ack / $cancel notifications: nothing to do for a shim. */
        } else {
            berth_log(BERTH_LOG_WARN, "msg=\"unexpected message shape, closing connection\"");
            c->dead = true;
        }
        msgpack_zone_free(zone);
        free(payload);
        if (c->dead || s->exiting)
            return;
    }
}

static void conn_write(shim_conn_t *c)
{
    while (shim_buf_avail(&c->out)) {
        ssize_t w = send(c->fd, shim_buf_head(&c->out), shim_buf_avail(&c->out),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return;
        if (w <= 0) {
            c->dead = true;
            return;
        }
        shim_buf_consume(&c->out, (size_t)w);
    }
}

static void accept_conns(shim_t *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        /* Only root (the runtime) talks to a shim; the socket is 0600 in a
         * private directory, this is a second lock. */
        struct ucred cr;
        socklen_t cl = sizeof(cr);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 || cr.uid != geteuid()) {
            close(fd);
            continue;
        }
        shim_conn_t *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        c->fd = fd;
        c->next = s->conns;
        s->conns = c;
    }
}

static void reap_dead_conns(shim_t *s)
{
    shim_conn_t **pp = &s->conns;
    while (*pp) {
        shim_conn_t *c = *pp;
        if (!c->dead) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        shim_conn_gone(s, c);
        close(c->fd);
        shim_buf_free(&c->in);
        shim_buf_free(&c->out);
        free(c);
    }
}

/* ---- the loop ---------------------------------------------------------------- */

enum { K_SIG, K_LISTEN, K_CONN, K_SRC, K_DST, K_OOM };

typedef struct {
    int kind;
    void *ptr;
} slot_t;

static void handle_signals(shim_t *s)
{
    struct signalfd_siginfo si;
    while (read(s->sigfd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            /* A shim with a live container keeps running: the container
             * must survive daemon restarts and `systemctl stop`. */
            shim_proc_t *init = shim_init_proc(s);
            if (!s->created) {
                berth_log(BERTH_LOG_INFO, "msg=\"signal before create, rolling back\"");
                s->rollback = true;
            } else if (!init || init->reported) {
                berth_log(BERTH_LOG_INFO, "msg=\"terminating on signal\" signal=%u", si.ssi_signo);
                s->exiting = true;
            } else {
                berth_log(BERTH_LOG_INFO,
                          "msg=\"ignoring signal: the container is alive\" signal=%u",
                          si.ssi_signo);
            }
        }
    }
    shim_reap_all(s);
}

static int run_loop(shim_t *s)
{
    size_t cap = 64;
    struct pollfd *pfds = malloc(cap * sizeof(*pfds));
    slot_t *slots = malloc(cap * sizeof(*slots));
    if (!pfds || !slots)
        return 1;
    for (;;) {
        reap_dead_conns(s);
        /* Cheap, and catches children whose SIGCHLD was consumed while a
         * runc command was being waited for. */
        shim_reap_all(s);
        shim_tick(s);
        if (s->rollback) {
            shim_do_rollback(s, "rollback requested");
            break;
        }
        if (s->exiting) {
            /* Flush replies (bounded), then leave. */
            uint64_t until = shim_now_ms() + 1000;
            for (shim_conn_t *c = s->conns; c; c = c->next) {
                while (!c->dead && shim_buf_avail(&c->out) && shim_now_ms() < until) {
                    struct pollfd p = {.fd = c->fd, .events = POLLOUT};
                    poll(&p, 1, 100);
                    conn_write(c);
                }
            }
            break;
        }
        size_t n = 0;
#define ADD(fd_, ev_, kind_, ptr_)                                                                 \
    do {                                                                                           \
        if (n == cap) {                                                                            \
            cap *= 2;                                                                              \
            pfds = realloc(pfds, cap * sizeof(*pfds));                                             \
            slots = realloc(slots, cap * sizeof(*slots));                                          \
        }                                                                                          \
        pfds[n] = (struct pollfd){.fd = (fd_), .events = (short)(ev_)};                            \
        slots[n] = (slot_t){(kind_), (ptr_)};                                                      \
        n++;                                                                                       \
    } while (0)
        ADD(s->sigfd, POLLIN, K_SIG, NULL);
        ADD(s->listen_fd, POLLIN, K_LISTEN, NULL);
        for (shim_conn_t *c = s->conns; c; c = c->next)
            ADD(c->fd, POLLIN | (shim_buf_avail(&c->out) ? POLLOUT : 0), K_CONN, c);
        for (shim_proc_t *p = s->procs; p; p = p->next) {
            shim_pump_t *pumps[3] = {&p->in, &p->out, &p->err};
            for (int i = 0; i < 3; i++) {
                shim_pump_t *pp = pumps[i];
                if (pp->done)
                    continue;
                if (pp->len > pp->off && !pp->dst_dead && pp->dst >= 0)
                    ADD(pp->dst, POLLOUT, K_DST, pp);
                else if (pp->src >= 0)
                    ADD(pp->src, POLLIN, K_SRC, pp);
            }
        }
        if (s->oom_fd >= 0)
            ADD(s->oom_fd, POLLIN, K_OOM, NULL);
#undef ADD
        uint64_t dl = shim_next_deadline(s);
        uint64_t now = shim_now_ms();
        int timeout = dl == 0 ? -1 : (dl <= now ? 0 : (int)(dl - now));
        int r = poll(pfds, n, timeout);
        if (r < 0 && errno != EINTR) {
            berth_log(BERTH_LOG_ERROR, "msg=\"poll failed\" err=\"%s\"", strerror(errno));
            break;
        }
        if (r <= 0)
            continue;
        for (size_t i = 0; i < n; i++) {
            short re = pfds[i].revents;
            if (!re)
                continue;
            switch (slots[i].kind) {
            case K_SIG:
                handle_signals(s);
                break;
            case K_LISTEN:
                accept_conns(s);
                break;
            case K_CONN: {
                shim_conn_t *c = slots[i].ptr;
                if (re & POLLOUT)
                    conn_write(c);
                if (re & (POLLIN | POLLHUP | POLLERR))
                    conn_read(s, c);
                break;
            }
            case K_SRC:
            case K_DST: {
                shim_pump_t *pp = slots[i].ptr;
                if (slots[i].kind == K_DST && (re & (POLLERR | POLLHUP)) && !(re & POLLOUT))
                    pp->dst_dead = true;
                shim_pump_run(pp, slots[i].kind == K_SRC);
                break;
            }
            case K_OOM:
                shim_oom_fired(s);
                break;
            }
            if (s->exiting)
                break;
        }
        for (shim_proc_t *p = s->procs; p; p = p->next)
            shim_check_report(s, p);
    }
    free(pfds);
    free(slots);
    return 0;
}

/* ---- startup ----------------------------------------------------------------- */

static int listen_sock(berth_error_t **err)
{
    /* Relative to the bundle (our cwd): bundle paths can be longer than
     * sun_path. A filesystem socket, never abstract (CVE-2020-15257). */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, "shim.sock");
    unlink("shim.sock");
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return berth_error_errno(err, errno, "socket");
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0 || chmod("shim.sock", 0600) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        close(fd);
        return berth_error_errno(err, e, "listen on shim.sock");
    }
    return fd;
}

static void sync_report(int fd, const char *fmt, ...) BERTH_PRINTF(2, 3);
static void sync_report(int fd, const char *fmt, ...)
{
    if (fd < 0)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 1)
        n = (int)sizeof(buf) - 1;
    ssize_t w = write(fd, buf, (size_t)n);
    (void)w;
    close(fd);
}

static void usage(void)
{
    fprintf(stderr, "usage: berth-shim [cleanup] --id ID --bundle DIR [--namespace NS] "
                    "[--runtime runc] [--runtime-root DIR] [--systemd-cgroup] [--sync-fd N] "
                    "[--foreground] [--exit-wait-ms N] [--log-level L]\n");
}

static int cleanup_mode(shim_t *s)
{
    /* The shim of this bundle is gone: make sure nothing of the container is
     * left and that an exit is on record. */
    shim_exit_t e;
    berth_error_t *err = NULL;
    const char *del[] = {"delete", "--force", s->id, NULL};
    const int nofds[3] = {-1, -1, -1};
    if (shim_runc(s, del, nofds, NULL, &err) < 0) {
        berth_log(BERTH_LOG_INFO, "msg=\"runc delete --force\" err=\"%s\"", err->message);
        berth_error_free(&err);
    }
    if (umount2("rootfs", MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        berth_log(BERTH_LOG_WARN, "msg=\"unmount rootfs\" err=\"%s\"", strerror(errno));
    int r = shim_exit_read(s->bundle_fd, NULL, &e, &err);
    berth_error_free(&err);
    if (r != 0) {
        e = (shim_exit_t){.pid = 0, .status = 137, .exited_at = berth_now_ns()};
        if (shim_exit_write(s->bundle_fd, NULL, &e, &err) < 0) {
            fprintf(stderr, "berth-shim cleanup: %s\n", err->message);
            berth_error_free(&err);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    shim_t s = {.ns = "default",
                .runtime = "runc",
                .exit_wait_ms = 2000,
                .listen_fd = -1,
                .sigfd = -1,
                .oom_fd = -1,
                .bundle_fd = -1};
    int sync_fd = -1;
    bool foreground = false, cleanup = false;
    const char *level = "info";
    int i = 1;
    if (argc > 1 && strcmp(argv[1], "cleanup") == 0) {
        cleanup = true;
        i = 2;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--foreground") == 0) {
            foreground = true;
            continue;
        }
        if (strcmp(a, "--systemd-cgroup") == 0) {
            s.systemd_cgroup = true;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (strcmp(a, "--id") == 0)
            s.id = v;
        else if (strcmp(a, "--namespace") == 0)
            s.ns = v;
        else if (strcmp(a, "--bundle") == 0)
            s.bundle = v;
        else if (strcmp(a, "--runtime") == 0)
            s.runtime = v;
        else if (strcmp(a, "--runtime-root") == 0)
            s.runtime_root = v;
        else if (strcmp(a, "--sync-fd") == 0)
            sync_fd = atoi(v);
        else if (strcmp(a, "--exit-wait-ms") == 0)
            s.exit_wait_ms = atoi(v);
        else if (strcmp(a, "--log-level") == 0)
            level = v;
        else {
            usage();
            return 2;
        }
    }
    if (!s.id || !s.bundle || s.bundle[0] != '/') {
        usage();
        sync_report(sync_fd, "err --id and an absolute --bundle are required\n");
        return 2;
    }
    char rootbuf[4096];
    if (!s.runtime_root) {
        snprintf(rootbuf, sizeof(rootbuf), "/run/berth/runc/%s", s.ns);
        s.runtime_root = rootbuf;
    }
    int lv = berth_log_level_parse(level);
    berth_log_init("shim", lv < 0 ? BERTH_LOG_INFO : (berth_log_level_t)lv);
    if (sync_fd >= 0)
        fcntl(sync_fd, F_SETFD, FD_CLOEXEC);

    if (chdir(s.bundle) < 0) {
        sync_report(sync_fd, "err bundle %s: %s\n", s.bundle, strerror(errno));
        return 1;
    }
    s.bundle_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s.bundle_fd < 0) {
        sync_report(sync_fd, "err open bundle: %s\n", strerror(errno));
        return 1;
    }

    /* Signals arrive through the loop; children get a clean mask (runc.c). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (cleanup) {
        s.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
        int logfd = open("shim.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (logfd >= 0) {
            dup2(logfd, 2);
            close(logfd);
        }
        return cleanup_mode(&s);
    }

    if (!foreground) {
        /* Leave the caller's session and process tree: fork, setsid, fork
         * again so we are not a session leader, and let the intermediate
         * exit (the launcher reaps it). */
        pid_t p = fork();
        if (p < 0) {
            sync_report(sync_fd, "err fork: %s\n", strerror(errno));
            return 1;
        }
        if (p > 0)
            _exit(0);
        setsid();
        p = fork();
        if (p < 0) {
            sync_report(sync_fd, "err fork: %s\n", strerror(errno));
            _exit(1);
        }
        if (p > 0)
            _exit(0);
    }
    umask(0077);
    /* Become the subreaper: the container init, orphaned when runc exits,
     * is reparented to us, and so are its orphans. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_PDEATHSIG, 0);
    prctl(PR_SET_NAME, "berth-shim");

    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    int logfd = open("shim.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(logfd >= 0 ? logfd : null, 2);
        close(null);
    }
    if (logfd >= 0)
        close(logfd);

    s.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    berth_error_t *err = NULL;
    s.listen_fd = listen_sock(&err);
    if (s.sigfd < 0 || s.listen_fd < 0) {
        sync_report(sync_fd, "err %s\n", err ? err->message : "signalfd failed");
        berth_error_free(&err);
        return 1;
    }
    /* No create within this time: the runtime went away before using us. */
    s.confirm_deadline = shim_now_ms() + 30000;
    berth_log(BERTH_LOG_INFO, "msg=\"shim started\" id=%s ns=%s pid=%d", s.id, s.ns, (int)getpid());
    sync_report(sync_fd, "ok %d\n", (int)getpid());

    int rc = run_loop(&s);
    berth_log(BERTH_LOG_INFO, "msg=\"shim exiting\" id=%s", s.id);
    unlinkat(s.bundle_fd, "shim.sock", 0);
    return rc;
}
