/* SPDX-License-Identifier: Apache-2.0 */
/* Plugin sandboxes with libseccomp. Two modes:
 * - allowlist (extra_syscalls != NULL): a base set that libuv, glibc's malloc
 *   and the SDK need, plus the plugin's extras; anything else kills the process.
 * - denylist (extra_syscalls == NULL): everything is allowed except `denied`
 *   and a fixed set no plugin needs (kernel modules, kexec, reboot, ...).
 * Either way a violation kills only this plugin; the core restarts it. */
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "berth/failpoint.h"
#include "berth/plugin.h"

static bool listed(const char *const *list, const char *name)
{
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

/* Threads, not processes: clone is allowed only with CLONE_THREAD, so a
 * plugin that may not fork cannot get a process through clone either (glibc's
 * fork() is a clone without CLONE_THREAD, not the fork syscall); such a clone
 * kills the process. clone3 takes its flags in memory, which a filter cannot
 * read: it fails with ENOSYS and glibc falls back to clone for its threads.
 * `allowlist`: the filter's default is to kill, so threads need a rule. */
static int restrict_clone(scmp_filter_ctx ctx, bool allowlist)
{
    /* A rule whose action is the filter's default is refused (EACCES):
     * an allowlist kills other clones by default, a denylist allows threads. */
    int rc = allowlist ? seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD))
                       : seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(clone), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
    if (rc < 0)
        return rc;
    return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
}

static const char *const always_denied[] = {
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "iopl",
    "ioperm",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "lookup_dcookie",
    "quotactl",
    "add_key",
    "request_key",
    "keyctl",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "syslog",
    "vhangup",
    NULL,
};

static const char *const base_allowed[] = {
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "close",
    "fstat",
    "newfstatat",
    "statx",
    "lseek",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "ioctl",
    "poll",
    "ppoll",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "eventfd2",
    "pipe2",
    "socket",
    "connect",
    "accept4",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
    "socketpair",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "openat",
    "open",
    "getdents64",
    "getcwd",
    "futex",
    "set_robust_list",
    "get_robust_list",
    "exit",
    "exit_group",
    "getpid",
    "gettid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "tgkill",
    "kill",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "sched_yield",
    "sched_getaffinity",
    "getrandom",
    "prctl",
    "arch_prctl",
    "uname",
    "sysinfo",
    "getrlimit",
    "prlimit64",
    "rseq",
    "set_tid_address",
    "timerfd_create",
    "timerfd_settime",
    "signalfd4",
    "wait4",
    "waitid",
    "umask",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "ftruncate",
    "fallocate",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "flock",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "utimensat",
    "readlink",
    "readlinkat",
    "access",
    "faccessat",
    "faccessat2",
    "statfs",
    "fstatfs",
    "linkat",
    "symlinkat",
    "copy_file_range",
    "sendfile",
    "splice",
    "membarrier",
    "getpgrp",
    "setsid",
    "getgroups",
    "restart_syscall",
    NULL,
};

int berth_plugin_sandbox(berth_plugin_t *p, const char *const *extra_syscalls,
                         const char *const *denied, berth_error_t **err)
{
    bool allowlist = extra_syscalls != NULL;
    scmp_filter_ctx ctx = seccomp_init(allowlist ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_ALLOW);
    if (!ctx)
        return berth_error_set(err, BERTH_E_INTERNAL, "seccomp_init failed");
    /* Containers are never started below a sandboxed process (ARCHITECTURE.md),
     * so NO_NEW_PRIVS here does not reach them. */
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
    /* Every thread, also libuv pool threads started before init. */
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    int rc = 0;
    const char *bad = NULL;
    if (allowlist) {
        const char *const *lists[2] = {base_allowed, extra_syscalls};
        for (int l = 0; l < 2; l++)
            for (size_t i = 0; lists[l][i]; i++) {
                int nr = seccomp_syscall_resolve_name(lists[l][i]);
                if (nr == __NR_SCMP_ERROR)
                    continue; /* unknown on this arch/libseccomp: skip */
                if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)) < 0) {
                    bad = lists[l][i];
                    goto out;
                }
            }
        if (denied)
            for (size_t i = 0; denied[i]; i++) {
                int nr = seccomp_syscall_resolve_name(denied[i]);
                if (nr != __NR_SCMP_ERROR)
                    seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, nr, 0);
            }
        /* A plugin that lists fork among its extras may make processes. */
        bool may_fork = listed(extra_syscalls, "fork") || listed(extra_syscalls, "vfork") ||
                        listed(extra_syscalls, "clone");
        if (may_fork) {
            if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 0)) < 0 ||
                (rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone3), 0)) < 0) {
                bad = "clone";
                goto out;
            }
        } else if ((rc = restrict_clone(ctx, true)) < 0) {
            bad = "clone (threads only)";
            goto out;
        }
    } else {
        const char *const *lists[2] = {always_denied, denied};
        for (int l = 0; l < 2; l++) {
            if (!lists[l])
                continue;
            for (size_t i = 0; lists[l][i]; i++) {
                int nr = seccomp_syscall_resolve_name(lists[l][i]);
                if (nr == __NR_SCMP_ERROR)
                    continue;
                if ((rc = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, nr, 0)) < 0) {
                    bad = lists[l][i];
                    goto out;
                }
            }
        }
        /* Denying fork denies its clone form too (see restrict_clone). */
        if (listed(denied, "fork") && (rc = restrict_clone(ctx, false)) < 0) {
            bad = "clone (threads only)";
            goto out;
        }
    }
    rc = seccomp_load(ctx);
    if (rc < 0)
        bad = "(load)";
out:
    seccomp_release(ctx);
    if (rc < 0)
        return berth_error_set(err, BERTH_E_INTERNAL, "sandbox for %s: seccomp rule %s: %s",
                               berth_plugin_id(p), bad ? bad : "?", strerror(-rc));
    berth_log(BERTH_LOG_INFO, "msg=\"sandbox applied\" mode=%s",
              allowlist ? "allowlist" : "denylist");
    return 0;
}

/* ---- the common confinement and its test probe ---------------------------- */

int berth_plugin_confine(berth_plugin_t *p, unsigned flags, const char *const *extra_allowed,
                         const char *const *extra_denied, berth_error_t **err)
{
    static const char *const never[] = {"execve",
                                        "execveat",
                                        "mount",
                                        "umount2",
                                        "ptrace",
                                        "process_vm_readv",
                                        "process_vm_writev",
                                        "pivot_root",
                                        "chroot",
                                        "setns",
                                        "unshare",
                                        "fork",
                                        "vfork",
                                        "kill",
                                        "setsid"};
    static const char *const sockets[] = {"socket", "socketpair", "connect", "bind",
                                          "listen", "accept",     "accept4"};
    const char *denied[64], *allowed[64];
    size_t nd = 0, na = 0;
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(never); i++)
        denied[nd++] = never[i];
    if (!(flags & BERTH_CONFINE_SOCKETS))
        for (size_t i = 0; i < BERTH_ARRAY_SIZE(sockets); i++)
            denied[nd++] = sockets[i];
    for (size_t i = 0; extra_denied && extra_denied[i]; i++) {
        if (nd + 1 >= BERTH_ARRAY_SIZE(denied))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "sandbox: too many denied calls");
        denied[nd++] = extra_denied[i];
    }
    denied[nd] = NULL;
    /* The kernel's own resumption of an interrupted nanosleep/poll (after
     * SIGSTOP/SIGCONT: a debugger, an operator, a test). */
    allowed[na++] = "restart_syscall";
    for (size_t i = 0; extra_allowed && extra_allowed[i]; i++) {
        if (na + 1 >= BERTH_ARRAY_SIZE(allowed))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "sandbox: too many allowed calls");
        allowed[na++] = extra_allowed[i];
    }
    allowed[na] = NULL;
    /* Two stacked filters: the kernel applies the strictest verdict of all.
     * The denylist first, because loading a filter is itself a syscall
     * (seccomp) that the allowlist does not grant. */
    if (berth_plugin_sandbox(p, NULL, denied, err) < 0 ||
        berth_plugin_sandbox(p, allowed, NULL, err) < 0)
        return berth_error_wrap(err, "%s sandbox", berth_plugin_id(p));
    return 0;
}

long berth_sandbox_probe_syscall(const char *what)
{
    long rc = -1;
    errno = EINVAL;
    if (strcmp(what, "execve") == 0) {
        char *const argv[] = {"/nonexistent/berth-sandbox-probe", NULL};
        char *const envp[] = {NULL};
        rc = execve(argv[0], argv, envp);
    } else if (strcmp(what, "mount") == 0) {
        rc = mount("none", "/nonexistent/berth-sandbox-probe", "tmpfs", 0, NULL);
    } else if (strcmp(what, "ptrace") == 0) {
        rc = ptrace(PTRACE_PEEKDATA, 0, NULL, NULL);
    } else if (strcmp(what, "socket") == 0) {
        rc = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (rc >= 0)
            close((int)rc);
    } else if (strcmp(what, "fork") == 0) {
        /* glibc's fork() is clone(2) without CLONE_THREAD */
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        if (pid > 0)
            waitpid(pid, NULL, 0);
        rc = pid > 0 ? 0 : -1;
    }
    return rc;
}

bool berth_req_sandbox_probe(berth_req_t *req, const char *s, size_t len, const char *failpoint)
{
    static const char prefix[] = "sandbox-probe-";
    const size_t np = sizeof(prefix) - 1;
    if (!s || len <= np || len > np + 16 || memcmp(s, prefix, np) != 0 ||
        berth_failpoint(failpoint) == 0)
        return false;
    char what[17];
    snprintf(what, sizeof(what), "%.*s", (int)(len - np), s + np);
    long rc = berth_sandbox_probe_syscall(what);
    berth_req_failf(req, BERTH_E_FAILED_PRECONDITION,
                    "sandbox probe %s was not stopped by the sandbox (rc=%ld: %s)", what, rc,
                    strerror(errno));
    return true;
}
