/* SPDX-License-Identifier: Apache-2.0 */
/* Running the OCI runtime (runc) from the shim. The child gets exactly the
 * stdio we choose and nothing else: every other fd is closed before exec
 * (the CVE-2024-21626 class of leaks a container could use to reach the
 * host), signals are unblocked and SIGPIPE restored. While runc runs, other
 * children that exit are reaped and recorded, never lost. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "berth/log.h"
#include "cgroup.h"
#include "shim.h"

#define RUNC_TIMEOUT_MS 60000
#define RUNC_LOG "runc.log"

static void close_from(int lowfd)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0u, 0) == 0)
        return;
#endif
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        for (int fd = lowfd; fd < 65536; fd++)
            close(fd);
        return;
    }
    int dfd = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        int fd = atoi(de->d_name);
        if (fd >= lowfd && fd != dfd)
            close(fd);
    }
    closedir(d);
}

/* In the child: fds[i] → i, /dev/null for -1. */
static void child_stdio(const int fds[3])
{
    int tmp[3];
    int null = open("/dev/null", O_RDWR);
    for (int i = 0; i < 3; i++) {
        int src = fds[i] >= 0 ? fds[i] : null;
        /* Move out of the 0..2 range first so dup2 never clobbers a source. */
        tmp[i] = fcntl(src, F_DUPFD, 10);
    }
    for (int i = 0; i < 3; i++) {
        if (tmp[i] < 0 || dup2(tmp[i], i) < 0)
            _exit(126);
    }
    close_from(3);
}

/* The last "error" message in runc's JSON log (or the last line). */
static char *runc_log_error(int bundle_fd)
{
    int fd = openat(bundle_fd, RUNC_LOG, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    char buf[16384];
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n <= 0)
        return NULL;
    buf[n] = 0;
    char *best = NULL;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strstr(line, "\"level\":\"error\"") || strstr(line, "\"level\":\"fatal\""))
            best = line;
    }
    if (!best)
        return NULL;
    char *m = strstr(best, "\"msg\":\"");
    if (!m)
        return strdup(best);
    m += 7;
    char *out = malloc(strlen(m) + 1);
    if (!out)
        return NULL;
    size_t j = 0;
    for (char *p = m; *p && *p != '"'; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            out[j++] = *p == 'n' ? ' ' : *p == 't' ? ' ' : *p;
        } else {
            out[j++] = *p;
        }
    }
    out[j] = 0;
    return out;
}

/* Waits for `pid` while recording any other child that exits. */
static int wait_for(shim_t *s, pid_t pid, int *wstatus, int timeout_ms, int out_fd, shim_buf_t *out)
{
    uint64_t deadline = shim_now_ms() + (uint64_t)timeout_ms;
    bool killed = false;
    for (;;) {
        int st;
        pid_t r;
        bool done = false;
        /* Reap everything: runc's own orphans (an exec that already exited)
         * are reparented to us before runc itself can be reaped, and their
         * SIGCHLD may already have been read below. */
        while ((r = waitpid(-1, &st, WNOHANG)) > 0) {
            if (r == pid) {
                *wstatus = st;
                done = true;
            } else {
                shim_on_reaped(s, r, st);
            }
        }
        if (done) {
            /* Drain what is left of its stdout. */
            if (out_fd >= 0) {
                char b[4096];
                ssize_t n;
                while ((n = read(out_fd, b, sizeof(b))) > 0)
                    if (out->len < (1u << 20))
                        shim_buf_put(out, b, (size_t)n);
            }
            return 0;
        }
        if (r < 0 && errno == ECHILD)
            return -1;
        uint64_t now = shim_now_ms();
        if (now >= deadline && !killed) {
            berth_log(BERTH_LOG_ERROR, "msg=\"runc timed out, killing it\" pid=%d", (int)pid);
            kill(pid, SIGKILL);
            killed = true;
            deadline = now + 5000;
        }
        struct pollfd pfd[2] = {{.fd = s->sigfd, .events = POLLIN},
                                {.fd = out_fd, .events = POLLIN}};
        int n = poll(pfd, out_fd >= 0 ? 2 : 1, deadline > now ? (int)(deadline - now) : 10);
        if (n < 0 && errno != EINTR)
            return -1;
        if (n > 0 && (pfd[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            while (read(s->sigfd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
                    berth_log(BERTH_LOG_INFO, "msg=\"ignoring signal while runc runs\" signal=%u",
                              si.ssi_signo);
            }
        }
        if (out_fd >= 0 && n > 0 && (pfd[1].revents & (POLLIN | POLLHUP))) {
            char b[4096];
            ssize_t m = read(out_fd, b, sizeof(b));
            if (m > 0 && out->len < (1u << 20))
                shim_buf_put(out, b, (size_t)m);
        }
    }
}

int shim_runc(shim_t *s, const char *const *args, const int fds[3], char **out, berth_error_t **err)
{
    const char *argv[48];
    const char *what = args[0] ? args[0] : "?";
    const char *rname = strrchr(s->runtime, '/') ? strrchr(s->runtime, '/') + 1 : s->runtime;
    size_t n = 0;
    argv[n++] = s->runtime;
    argv[n++] = "--root";
    argv[n++] = s->runtime_root;
    argv[n++] = "--log";
    argv[n++] = RUNC_LOG;
    argv[n++] = "--log-format";
    argv[n++] = "json";
    if (s->systemd_cgroup)
        argv[n++] = "--systemd-cgroup";
    for (; *args && n < BERTH_ARRAY_SIZE(argv) - 1; args++)
        argv[n++] = *args;
    argv[n] = NULL;

    /* One runc at a time: its log only holds this command's messages. */
    int lfd =
        openat(s->bundle_fd, RUNC_LOG, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd >= 0)
        close(lfd);

    int pipefd[2] = {-1, -1};
    if (out && pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
        return berth_error_errno(err, errno, "pipe");
    int cfds[3] = {fds[0], out ? pipefd[1] : fds[1], fds[2]};

    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        if (out) {
            close(pipefd[0]);
            close(pipefd[1]);
        }
        return berth_error_errno(err, e, "fork runc");
    }
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        child_stdio(cfds);
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (out)
        close(pipefd[1]);
    shim_buf_t ob = {0};
    int st = 0;
    int r = wait_for(s, pid, &st, RUNC_TIMEOUT_MS, out ? pipefd[0] : -1, &ob);
    if (out)
        close(pipefd[0]);
    if (r < 0) {
        shim_buf_free(&ob);
        return berth_error_set(err, BERTH_E_INTERNAL, "lost track of %s %s", rname, what);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        shim_buf_free(&ob);
        char *msg = runc_log_error(s->bundle_fd);
        /* runc refuses what it was given (the spec, the process, the
         * container's state): the caller can act on that. */
        berth_code_t code = BERTH_E_FAILED_PRECONDITION;
        if (msg && (strstr(msg, "not running") || strstr(msg, "process already finished") ||
                    strstr(msg, "no such process")))
            code = BERTH_E_NOT_FOUND;
        else if (msg && strstr(msg, "does not exist"))
            code = BERTH_E_NOT_FOUND;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
            berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                            "cannot run the OCI runtime %s: is it installed?", s->runtime);
        else if (msg && strncmp(msg, rname, strlen(rname)) == 0 && msg[strlen(rname)] == ' ')
            berth_error_set(err, code, "%s", msg);
        else
            berth_error_set(err, code, "%s %s: %s", rname, what,
                            msg ? msg : (WIFSIGNALED(st) ? "killed" : "failed"));
        free(msg);
        return -1;
    }
    if (out) {
        shim_buf_put(&ob, "", 1);
        *out = (char *)ob.data;
    } else {
        shim_buf_free(&ob);
    }
    return 0;
}

int shim_read_pidfile(shim_t *s, const char *name, pid_t *pid, berth_error_t **err)
{
    int fd = openat(s->bundle_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return berth_error_errno(err, errno, "open pid file %s", name);
    char buf[32];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return berth_error_set(err, BERTH_E_INTERNAL, "empty pid file %s", name);
    buf[n] = 0;
    long v = strtol(buf, NULL, 10);
    if (v <= 1 || v > 4194304)
        return berth_error_set(err, BERTH_E_INTERNAL, "bad pid in %s", name);
    *pid = (pid_t)v;
    return 0;
}

static void remove_at(int dirfd, dev_t dev)
{
    int fd = dup(dirfd);
    if (fd < 0)
        return;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
            continue;
        struct stat st;
        if (fstatat(dirfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (st.st_dev != dev) {
                /* A mount point (rootfs still mounted): never descend. */
                berth_log(BERTH_LOG_WARN, "msg=\"not removing a mount point\" name=%s", n);
                continue;
            }
            int sub = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                remove_at(sub, dev);
                close(sub);
            }
            unlinkat(dirfd, n, AT_REMOVEDIR);
        } else {
            unlinkat(dirfd, n, 0);
        }
    }
    closedir(d);
}

void shim_remove_tree(int dirfd)
{
    struct stat st;
    if (fstat(dirfd, &st) == 0)
        remove_at(dirfd, st.st_dev);
}

/* ---- fast paths for runc (no hooks, private pid namespace, cgroupfs) ----------- */

/* runc's state directory of this container: <runtime-root>/<id>. */
static int state_dir(shim_t *s, char *buf, size_t n)
{
    int r = snprintf(buf, n, "%s/%s", s->runtime_root, s->id);
    return r > 0 && (size_t)r < n ? 0 : -1;
}

int shim_fast_start(shim_t *s, shim_proc_t *p, berth_error_t **err)
{
    /* What `runc start` does for a created container (runc 1.1 and 1.2
     * without hooks): open the exec FIFO that `runc init` is blocked on,
     * read its one byte (the init then execs the user's process), remove
     * the FIFO (runc's "running" state is "init alive, no exec.fifo"). One
     * Go process less per start. */
    char path[PATH_MAX];
    if (state_dir(s, path, sizeof(path) - 16) < 0)
        return 1;
    strcat(path, "/exec.fifo");
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return 1; /* not runc's layout: let runc start say what is wrong */
    }
    uint64_t deadline = shim_now_ms() + 10000;
    int rc = 0;
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int n = poll(&pf, 1, 20);
        if (n > 0) {
            char c;
            ssize_t r = read(fd, &c, 1);
            if (r == 1)
                break;
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            /* Opened and closed without a byte: the init failed. */
        }
        if (n < 0 && errno != EINTR) {
            rc = berth_error_errno(err, errno, "poll the exec fifo");
            break;
        }
        shim_reap_all(s);
        if (p->reaped || shim_now_ms() >= deadline) {
            char c;
            if (read(fd, &c, 1) == 1)
                break; /* it started and already finished */
            rc = berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "%s",
                                 p->reaped ? "container process is already dead"
                                           : "the container's init did not start in time");
            break;
        }
    }
    close(fd);
    if (rc == 0) {
        unlink(path);
        berth_log(BERTH_LOG_DEBUG, "msg=\"started without runc\" id=%s", s->id);
    }
    return rc;
}

/* runc's cgroup paths of this container end in its id: berth's cgroupsPath
 * is <cgroup_parent>/<namespace>/<id>. A spec of the user's own with
 * another cgroupsPath (or none) goes through runc delete. */
static bool own_cgroup(const shim_t *s, const char *path)
{
    const char *base = strrchr(path, '/');
    return base && strcmp(base + 1, s->id) == 0;
}

int shim_fast_delete(shim_t *s)
{
    /* What `runc delete` does for a stopped container whose pid namespace
     * was its own (the kernel killed everything in it with the init) and
     * whose spec has no hooks: remove its cgroups and runc's state. Any
     * surprise returns 1 and runc delete does the whole job. */
    char dir[PATH_MAX];
    if (state_dir(s, dir, sizeof(dir)) < 0)
        return 1;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return errno == ENOENT ? 0 : 1;
    int fd = openat(dfd, "state.json", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size > (4 << 20)) {
        if (fd >= 0)
            close(fd);
        close(dfd);
        return 1;
    }
    char *js = malloc((size_t)st.st_size + 1);
    ssize_t got = js ? read(fd, js, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
        free(js);
        close(dfd);
        return 1;
    }
    js[got] = 0;
    /* v1: one path per controller (several controllers can share one
     * directory, cpu,cpuacct); v2 and the unified hierarchy of a hybrid
     * host: the key "". */
    static char paths[32][PATH_MAX];
    int n = shim_cgroup_state_paths(js, paths, 32);
    free(js);
    bool own = n > 0;
    for (int i = 0; i < n; i++)
        own = own && own_cgroup(s, paths[i]);
    if (!own) {
        close(dfd);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        /* Child cgroups go too (runc's RemovePath does the same); a
         * process still in one, a mount root: runc delete. */
        if (shim_cgroup_remove(paths[i]) < 0) {
            berth_log(BERTH_LOG_INFO,
                      "msg=\"cgroup not removed, using runc delete\" path=%s err=\"%s\"", paths[i],
                      strerror(errno));
            close(dfd);
            return 1;
        }
    }
    shim_remove_tree(dfd);
    close(dfd);
    if (rmdir(dir) < 0 && errno != ENOENT) {
        berth_log(BERTH_LOG_WARN, "msg=\"remove runc state\" dir=%s err=\"%s\"", dir,
                  strerror(errno));
        return 1;
    }
    berth_log(BERTH_LOG_DEBUG, "msg=\"deleted without runc\" id=%s cgroups=%d", s->id, n);
    return 0;
}
