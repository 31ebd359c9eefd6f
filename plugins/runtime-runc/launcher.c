/* SPDX-License-Identifier: Apache-2.0 */
/* The launcher: a tiny process forked at the very start of main(), before
 * the SDK connects or any seccomp filter exists, that starts shims (and the
 * shim's cleanup mode) on request. Containers therefore never have the
 * runtime plugin in their ancestry: the plugin may sandbox itself (no
 * execve, NO_NEW_PRIVS) without setuid binaries in containers breaking.
 *
 * Protocol on a SOCK_SEQPACKET pair, one request and one reply at a time:
 *   request  "S\0arg0\0arg1\0..."  spawn a daemonizing program, wait for its
 *            "ok <pid>" line on --sync-fd        → reply "ok <pid>" | "err <msg>"
 *   request  "R\0arg0\0..."         run to completion → "ok <exit code>" | "err <msg>"
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "berth/log.h"
#include "rt.h"

#define MAX_MSG 65536

static int g_fd = -1;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static void close_from(int lowfd)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0u, 0) == 0)
        return;
#endif
    for (int fd = lowfd; fd < 4096; fd++)
        close(fd);
}

static int parse_argv(char *buf, size_t n, char **argv, size_t max)
{
    size_t k = 0;
    size_t i = 2; /* after "X\0" */
    while (i < n && k < max - 1) {
        argv[k++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[k] = NULL;
    return (int)k;
}

static void reply(int fd, const char *fmt, ...) BERTH_PRINTF(2, 3);
static void reply(int fd, const char *fmt, ...)
{
    char b[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof(b), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(b))
        n = (int)sizeof(b) - 1;
    if (send(fd, b, (size_t)n, MSG_NOSIGNAL) < 0)
        _exit(0);
}

static void child_exec(char **argv, int sync_fd)
{
    /* The sync pipe becomes fd 3; nothing else of ours leaks. */
    if (sync_fd >= 0) {
        if (dup2(sync_fd, 3) < 0)
            _exit(126);
        close_from(4);
    } else {
        close_from(3);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    execv(argv[0], argv);
    _exit(127);
}

static void do_spawn(int fd, char **argv, int argc)
{
    char *full[80];
    if (argc > 74) {
        reply(fd, "err too many arguments");
        return;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        reply(fd, "err pipe: %s", strerror(errno));
        return;
    }
    for (int i = 0; i < argc; i++)
        full[i] = argv[i];
    full[argc] = (char *)"--sync-fd";
    full[argc + 1] = (char *)"3";
    full[argc + 2] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        reply(fd, "err fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return;
    }
    if (pid == 0)
        child_exec(full, p[1]);
    close(p[1]);
    /* The shim forks twice and its first process exits at once. */
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    char line[1024];
    size_t have = 0;
    uint64_t deadline_ms = 10000;
    while (have < sizeof(line) - 1) {
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        int r = poll(&pf, 1, (int)deadline_ms);
        if (r <= 0)
            break;
        ssize_t n = read(p[0], line + have, sizeof(line) - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        if (memchr(line, '\n', have))
            break;
    }
    close(p[0]);
    line[have] = 0;
    line[strcspn(line, "\n")] = 0;
    if (have == 0) {
        if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
            reply(fd, "err cannot execute %s", argv[0]);
        else
            reply(fd, "err %s exited without reporting (status %d)", argv[0], st);
        return;
    }
    reply(fd, "%s", line);
}

static void do_run(int fd, char **argv)
{
    pid_t pid = fork();
    if (pid < 0) {
        reply(fd, "err fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        child_exec(argv, -1);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    reply(fd, "ok %d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

static void launcher_main(int fd)
{
    prctl(PR_SET_NAME, "berth-launcher");
    /* Die with the plugin; a new plugin instance forks a new launcher. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(0);
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1)
        berth_log(BERTH_LOG_WARN,
                  "msg=\"NO_NEW_PRIVS is set on the launcher: setuid binaries in "
                  "containers will not gain privileges; check how berthd starts plugins\"");
    signal(SIGPIPE, SIG_IGN);
    static char buf[MAX_MSG + 1];
    char *argv[72];
    for (;;) {
        ssize_t n = recv(fd, buf, MAX_MSG, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0);
        buf[n] = 0;
        if (n < 3 || buf[1] != 0) {
            reply(fd, "err bad request");
            continue;
        }
        int argc = parse_argv(buf, (size_t)n, argv, BERTH_ARRAY_SIZE(argv));
        if (argc == 0 || argv[0][0] != '/') {
            reply(fd, "err the program must be an absolute path");
            continue;
        }
        if (buf[0] == 'S')
            do_spawn(fd, argv, argc);
        else if (buf[0] == 'R')
            do_run(fd, argv);
        else
            reply(fd, "err unknown request");
    }
}

int rt_launcher_start(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(sv[0]);
        /* Keep stderr (logs); everything else closed. */
        if (sv[1] != 3) {
            dup2(sv[1], 3);
            close(sv[1]);
        }
        int keep = 3;
        fcntl(keep, F_SETFD, FD_CLOEXEC);
        close_from(4);
        launcher_main(keep);
        _exit(0);
    }
    close(sv[1]);
    g_fd = sv[0];
    return 0;
}

static int request(char kind, const char *const *argv, char *out, size_t outn, berth_error_t **err)
{
    char buf[MAX_MSG];
    const char *prog = argv[0] ? argv[0] : "?";
    size_t n = 0;
    buf[n++] = kind;
    buf[n++] = 0;
    for (; *argv; argv++) {
        size_t l = strlen(*argv) + 1;
        if (n + l > sizeof(buf))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "launcher request too long");
        memcpy(buf + n, *argv, l);
        n += l;
    }
    pthread_mutex_lock(&g_mu);
    if (g_fd < 0) {
        pthread_mutex_unlock(&g_mu);
        return berth_error_set(err, BERTH_E_UNAVAILABLE, "the shim launcher is not running");
    }
    ssize_t r = send(g_fd, buf, n, MSG_NOSIGNAL);
    ssize_t m = r < 0 ? -1 : recv(g_fd, out, outn - 1, 0);
    int e = errno;
    pthread_mutex_unlock(&g_mu);
    if (r < 0 || m <= 0)
        return berth_error_set(err, BERTH_E_UNAVAILABLE, "the shim launcher is gone: %s",
                               m == 0 ? "closed" : strerror(e));
    out[m] = 0;
    if (strncmp(out, "ok ", 3) != 0)
        return berth_error_set(err, BERTH_E_INTERNAL, "start %s: %s", prog,
                               strncmp(out, "err ", 4) == 0 ? out + 4 : out);
    return 0;
}

int rt_launcher_spawn(const char *const *argv, int *pid, berth_error_t **err)
{
    char out[1024];
    if (request('S', argv, out, sizeof(out), err) < 0)
        return -1;
    *pid = atoi(out + 3);
    return 0;
}

int rt_launcher_run(const char *const *argv, int *status, berth_error_t **err)
{
    char out[1024];
    if (request('R', argv, out, sizeof(out), err) < 0)
        return -1;
    *status = atoi(out + 3);
    return 0;
}
