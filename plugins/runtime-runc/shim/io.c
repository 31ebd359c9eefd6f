/* SPDX-License-Identifier: Apache-2.0 */
/* Container stdio in the shim: the client's FIFOs (daemon-made, opened with
 * O_NOFOLLOW|O_NONBLOCK and checked to be FIFOs) on one side, pipes or the
 * pty master on the other, moved by bounded pumps so a slow reader slows the
 * container instead of growing the shim. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "berth/log.h"
#include "shim.h"

#define PUMP_BUF 16384

void shim_pump_init(shim_pump_t *p)
{
    memset(p, 0, sizeof(*p));
    p->src = p->dst = -1;
    p->done = true;
}

void shim_pump_close(shim_pump_t *p)
{
    if (p->src_owned && p->src >= 0)
        close(p->src);
    if (p->dst_owned && p->dst >= 0)
        close(p->dst);
    free(p->buf);
    shim_pump_init(p);
}

static void finish(shim_pump_t *p)
{
    p->done = true;
    free(p->buf);
    p->buf = NULL;
    p->off = p->len = 0;
    if (p->src_owned && p->src >= 0)
        close(p->src);
    p->src = -1;
    if (p->eof_closes_dst && p->dst_owned && p->dst >= 0) {
        close(p->dst);
        p->dst = -1;
    }
}

void shim_pump_run(shim_pump_t *p, bool src_ready)
{
    if (p->done)
        return;
    for (int rounds = 0; rounds < 16; rounds++) {
        /* Flush what we hold. */
        while (p->off < p->len) {
            if (p->dst_dead || p->dst < 0) {
                p->off = p->len = 0;
                break;
            }
            ssize_t w = write(p->dst, p->buf + p->off, p->len - p->off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN)
                return;
            if (w <= 0) {
                /* The reader is gone (EPIPE, EIO): keep draining the
                 * source so the container never blocks on its output. */
                p->dst_dead = true;
                p->off = p->len = 0;
                break;
            }
            p->off += (size_t)w;
        }
        p->off = p->len = 0;
        if (p->src_eof) {
            finish(p);
            return;
        }
        /* Never read a source poll did not report: a stdin FIFO that no
         * client opened yet reads as EOF. */
        if (!src_ready)
            return;
        if (!p->buf) {
            p->buf = malloc(PUMP_BUF);
            if (!p->buf)
                return;
        }
        ssize_t n = read(p->src, p->buf, PUMP_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            /* Idle: give the buffer back (shims stay small). */
            free(p->buf);
            p->buf = NULL;
            return;
        }
        if (n <= 0) {
            /* 0 = EOF; EIO = the pty's last slave closed. */
            p->src_eof = true;
            continue;
        }
        p->len = (size_t)n;
    }
}

bool shim_proc_io_done(const shim_proc_t *p)
{
    return p->out.done && p->err.done;
}

int shim_open_fifo(const char *path, bool for_write, berth_error_t **err)
{
    /* O_RDWR for outputs: opening never blocks waiting for a reader and
     * writes never fail with EPIPE when the client is away; data waits in
     * the FIFO (and the pump) until someone reads. */
    int flags = (for_write ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;
    int fd = open(path, flags);
    if (fd < 0)
        return berth_error_errno(err, errno, "open stdio fifo %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
        close(fd);
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "stdio path %s is not a FIFO", path);
    }
    return fd;
}

int shim_proc_open_fifos(shim_proc_t *p, berth_error_t **err)
{
    const char *paths[3] = {p->stdin_path, p->stdout_path, p->stderr_path};
    for (int i = 0; i < 3; i++) {
        if (p->fifo_fd[i] >= 0 || !paths[i] || !paths[i][0])
            continue;
        p->fifo_fd[i] = shim_open_fifo(paths[i], i != 0, err);
        if (p->fifo_fd[i] < 0)
            return -1;
    }
    return 0;
}

/* The FIFO for stream i: already opened, or opened now. Ownership moves to
 * the caller. */
static int take_fifo(shim_proc_t *p, int i, const char *path, berth_error_t **err)
{
    if (p->fifo_fd[i] >= 0) {
        int fd = p->fifo_fd[i];
        p->fifo_fd[i] = -1;
        return fd;
    }
    return shim_open_fifo(path, i != 0, err);
}

int shim_proc_stdio(shim_proc_t *p, int fds[3], berth_error_t **err)
{
    fds[0] = fds[1] = fds[2] = -1;
    int pfd[2];
    const char *paths[3] = {p->stdin_path, p->stdout_path, p->stderr_path};
    shim_pump_t *pumps[3] = {&p->in, &p->out, &p->err};
    for (int i = 0; i < 3; i++) {
        shim_pump_init(pumps[i]);
        if (!paths[i] || !paths[i][0])
            continue; /* /dev/null for the container */
        int fifo = take_fifo(p, i, paths[i], err);
        if (fifo < 0)
            goto fail;
        if (pipe2(pfd, O_CLOEXEC) < 0) {
            close(fifo);
            berth_error_errno(err, errno, "pipe");
            goto fail;
        }
        shim_pump_t *pp = pumps[i];
        pp->done = false;
        pp->eof_closes_dst = true;
        pp->src_owned = pp->dst_owned = true;
        if (i == 0) {
            /* FIFO → pipe → container stdin */
            pp->src = fifo;
            pp->dst = pfd[1];
            fcntl(pfd[1], F_SETFL, O_NONBLOCK);
            fds[0] = pfd[0];
        } else {
            /* container → pipe → FIFO */
            pp->src = pfd[0];
            pp->dst = fifo;
            fcntl(pfd[0], F_SETFL, O_NONBLOCK);
            fds[i] = pfd[1];
        }
    }
    return 0;
fail:
    for (int i = 0; i < 3; i++) {
        shim_pump_close(pumps[i]);
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
    return -1;
}

int shim_proc_console(shim_proc_t *p, int master, berth_error_t **err)
{
    p->console = master;
    fcntl(master, F_SETFL, O_NONBLOCK);
    shim_pump_init(&p->in);
    shim_pump_init(&p->out);
    shim_pump_init(&p->err);
    if (p->stdin_path && p->stdin_path[0]) {
        int fd = take_fifo(p, 0, p->stdin_path, err);
        if (fd < 0)
            return -1;
        p->in = (shim_pump_t){.src = fd, .dst = master, .src_owned = true, .done = false};
    }
    if (p->stdout_path && p->stdout_path[0]) {
        int fd = take_fifo(p, 1, p->stdout_path, err);
        if (fd < 0)
            return -1;
        p->out = (shim_pump_t){
            .src = master, .dst = fd, .dst_owned = true, .done = false, .eof_closes_dst = true};
    } else {
        /* Nobody reads the terminal: drain it so the container never blocks. */
        p->out = (shim_pump_t){.src = master, .dst = -1, .dst_dead = true, .done = false};
    }
    return 0;
}

int shim_console_listen(const char *name, berth_error_t **err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(name) >= sizeof(sa.sun_path))
        return berth_error_set(err, BERTH_E_INTERNAL, "console socket name too long");
    strcpy(sa.sun_path, name);
    unlink(name);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return berth_error_errno(err, errno, "socket");
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
        int e = errno;
        close(fd);
        return berth_error_errno(err, e, "listen on console socket %s", name);
    }
    return fd;
}

int shim_console_recv(int lfd, berth_error_t **err)
{
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return berth_error_errno(err, errno, "accept the console from runc");
    char data[256];
    struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n = recvmsg(c, &msg, MSG_CMSG_CLOEXEC);
    close(c);
    if (n < 0)
        return berth_error_errno(err, errno, "receive the console from runc");
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
        cm->cmsg_len != CMSG_LEN(sizeof(int)))
        return berth_error_set(err, BERTH_E_INTERNAL, "runc sent no console fd");
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    return fd;
}
