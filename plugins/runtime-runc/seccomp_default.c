/* SPDX-License-Identifier: Apache-2.0 */
/* The default seccomp profile for containers: the allowlist docker and
 * containerd ship (default action EPERM, everything a normal program needs
 * allowed, privileged syscalls allowed only with the matching capability,
 * namespace-creating clone flags refused without CAP_SYS_ADMIN). Each name is
 * checked with the host's libseccomp: a name it does not know (a syscall newer
 * than the library) is dropped with a debug log instead of making runc fail. */
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "berth/log.h"
#include "internal.h"

/* Allowed for every container. */
static const char *const base_allow[] = {
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    /* Since Linux 4.8 ptrace cannot be used to bypass seccomp, so docker and
     * containerd allow it (the kernel still requires CAP_SYS_PTRACE for
     * foreign processes). */
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    NULL,
};

/* Architecture extras. */
#if defined(__x86_64__)
static const char *const arch_allow[] = {"arch_prctl", "modify_ldt", NULL};
/* SCMP_ARCH_X32 is added only on kernels that run x32 binaries: a third ABI
 * makes runc compile another filter (about 15 ms per container here) for
 * calls that can never come. */
static const char *const arch_names[] = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", NULL};
#elif defined(__i386__)
static const char *const arch_allow[] = {"modify_ldt", NULL};
static const char *const arch_names[] = {"SCMP_ARCH_X86", NULL};
#elif defined(__aarch64__) || defined(__arm__)
static const char *const arch_allow[] = {"arm_fadvise64_64",
                                         "arm_sync_file_range",
                                         "sync_file_range2",
                                         "breakpoint",
                                         "cacheflush",
                                         "set_tls",
                                         NULL};
static const char *const arch_names[] = {"SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64", NULL};
#elif defined(__s390x__)
static const char *const arch_allow[] = {"s390_pci_mmio_read", "s390_pci_mmio_write",
                                         "s390_runtime_instr", NULL};
static const char *const arch_names[] = {"SCMP_ARCH_S390", "SCMP_ARCH_S390X", NULL};
#elif defined(__powerpc64__)
static const char *const arch_allow[] = {"sync_file_range2", "swapcontext", NULL};
static const char *const arch_names[] = {"SCMP_ARCH_PPC64LE", NULL};
#elif defined(__riscv)
static const char *const arch_allow[] = {"riscv_flush_icache", NULL};
static const char *const arch_names[] = {"SCMP_ARCH_RISCV64", NULL};
#else
static const char *const arch_allow[] = {NULL};
static const char *const arch_names[] = {NULL};
#endif

/* Syscalls a capability makes safe to allow. */
typedef struct {
    const char *cap;
    const char *names[24];
} cap_rule_t;

static const cap_rule_t cap_rules[] = {
    {"CAP_DAC_READ_SEARCH", {"open_by_handle_at", NULL}},
    {"CAP_SYS_ADMIN", {"bpf",           "clone",           "clone3",
                       "fanotify_init", "fsconfig",        "fsmount",
                       "fsopen",        "fspick",          "lookup_dcookie",
                       "mount",         "mount_setattr",   "move_mount",
                       "open_tree",     "perf_event_open", "quotactl",
                       "quotactl_fd",   "setdomainname",   "sethostname",
                       "setns",         "syslog",          "umount",
                       "umount2",       "unshare",         NULL}},
    {"CAP_SYS_BOOT", {"reboot", NULL}},
    {"CAP_SYS_CHROOT", {"chroot", NULL}},
    {"CAP_SYS_MODULE", {"delete_module", "init_module", "finit_module", NULL}},
    {"CAP_SYS_PACCT", {"acct", NULL}},
    {"CAP_SYS_PTRACE",
     {"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace",
      NULL}},
    {"CAP_SYS_RAWIO", {"iopl", "ioperm", NULL}},
    {"CAP_SYS_TIME", {"settimeofday", "stime", "clock_settime", "clock_settime64", NULL}},
    {"CAP_SYS_TTY_CONFIG", {"vhangup", NULL}},
    {"CAP_SYS_NICE", {"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node", NULL}},
    {"CAP_SYSLOG", {"syslog", NULL}},
    {"CAP_BPF", {"bpf", NULL}},
    {"CAP_PERFMON", {"perf_event_open", NULL}},
};

/* Adds the names libseccomp knows to `arr`; returns how many were added. */
static size_t add_known(json_t *arr, const char *const *names)
{
    size_t n = 0;
    for (; *names; names++) {
        if (seccomp_syscall_resolve_name(*names) == __NR_SCMP_ERROR) {
            berth_log(BERTH_LOG_DEBUG,
                      "msg=\"seccomp: syscall unknown to this libseccomp, dropped\" syscall=%s",
                      *names);
            continue;
        }
        rt_json_append_str(arr, *names);
        n++;
    }
    return n;
}

static void add_rule(json_t *syscalls, const char *const *names, json_t *args)
{
    json_t *arr = json_array();
    if (add_known(arr, names) == 0) {
        json_decref(arr);
        json_decref(args);
        return;
    }
    json_t *r = json_object();
    json_object_set_new(r, "names", arr);
    json_object_set_new(r, "action", json_string("SCMP_ACT_ALLOW"));
    if (args)
        json_object_set_new(r, "args", args);
    json_array_append_new(syscalls, r);
}

static json_t *arg(unsigned index, uint64_t value, uint64_t value2, const char *op)
{
    json_t *a = json_object();
    json_object_set_new(a, "index", json_integer(index));
    json_object_set_new(a, "value", json_integer((json_int_t)value));
    json_object_set_new(a, "valueTwo", json_integer((json_int_t)value2));
    json_object_set_new(a, "op", json_string(op));
    json_t *arr = json_array();
    json_array_append_new(arr, a);
    return arr;
}

static bool has_cap(const json_t *caps, const char *cap)
{
    size_t i;
    json_t *v;
    json_array_foreach(caps, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), cap) == 0)
            return true;
    }
    return false;
}

bool rt_kernel_has_x32(void)
{
#if defined(__x86_64__)
    /* getpid through the x32 entry: ENOSYS when the ABI is off. */
    errno = 0;
    long r = syscall(0x40000000L | SYS_getpid);
    return r > 0;
#else
    return false;
#endif
}

json_t *rt_seccomp_default(const json_t *bounding_caps, bool with_x32)
{
    json_t *prof = json_object();
    json_object_set_new(prof, "defaultAction", json_string("SCMP_ACT_ERRNO"));
    json_t *arches = json_array();
    for (const char *const *a = arch_names; *a; a++)
        rt_json_append_str(arches, *a);
#if defined(__x86_64__)
    if (with_x32)
        rt_json_append_str(arches, "SCMP_ARCH_X32");
#else
    (void)with_x32;
#endif
    json_object_set_new(prof, "architectures", arches);
    json_t *sc = json_array();

    add_rule(sc, base_allow, NULL);
    /* socket: everything but AF_VSOCK (host communication channel). */
    static const char *const sock[] = {"socket", NULL};
    add_rule(sc, sock, arg(0, AF_VSOCK, 0, "SCMP_CMP_NE"));
    /* personality: only the harmless personas (linux, unused/uname26 and
     * the query value 0xffffffff). */
    static const char *const pers[] = {"personality", NULL};
    static const uint64_t pvals[] = {0x0, 0x0008, 0x20000, 0x20008, 0xffffffff};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(pvals); i++)
        add_rule(sc, pers, arg(0, pvals[i], 0, "SCMP_CMP_EQ"));
    add_rule(sc, arch_allow, NULL);

    for (size_t i = 0; i < BERTH_ARRAY_SIZE(cap_rules); i++)
        if (bounding_caps && has_cap(bounding_caps, cap_rules[i].cap))
            add_rule(sc, cap_rules[i].names, NULL);

    if (!bounding_caps || !has_cap(bounding_caps, "CAP_SYS_ADMIN")) {
        /* clone without namespace flags. */
        const uint64_t ns_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                  CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;
        static const char *const clone[] = {"clone", NULL};
#if defined(__s390x__)
        add_rule(sc, clone, arg(1, ns_flags, 0, "SCMP_CMP_MASKED_EQ"));
#else
        add_rule(sc, clone, arg(0, ns_flags, 0, "SCMP_CMP_MASKED_EQ"));
#endif
        /* clone3 passes its flags in memory seccomp cannot read: answer ENOSYS
         * so libcs fall back to clone (moby/moby#42681). */
        if (seccomp_syscall_resolve_name("clone3") != __NR_SCMP_ERROR) {
            json_t *r = json_object();
            json_t *names = json_array();
            rt_json_append_str(names, "clone3");
            json_object_set_new(r, "names", names);
            json_object_set_new(r, "action", json_string("SCMP_ACT_ERRNO"));
            json_object_set_new(r, "errnoRet", json_integer(ENOSYS));
            json_array_append_new(sc, r);
        }
    }
    json_object_set_new(prof, "syscalls", sc);
    return prof;
}
