/* SPDX-License-Identifier: Apache-2.0 */
/* `berth run` (and the flag parsing of `berth containers create`): creates
 * the container (spec built daemon-side), the task with daemon-made FIFOs,
 * sends tasks.wait on a second connection alongside tasks.start, copies stdio
 * between the terminal and the FIFOs, forwards signals (raw terminal and
 * SIGWINCH resizes with -t) and exits with the container's exit code.
 * The attach loop is shared with `berth tasks start|exec|attach`. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"

/* Shared with cmd_containers.c and cmd_tasks.c (declared there). */
int cli_run_create(int argc, char **argv, const char *cmd, bool run_mode);
int cli_run_attach(const char *id, const char *exec_id, bool tty, const char *fifos[3], bool start,
                   bool interactive);
int cli_parse_signal(const char *s);

/* ---- flag parsing --------------------------------------------------------- */

static uint64_t parse_bytes(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || d < 0)
        cli_die("invalid size \"%s\" for %s: use bytes, or a number with k, m or g", v, flag);
    uint64_t mult = 1;
    switch (*end) {
    case 0:
        break;
    case 'k':
    case 'K':
        mult = 1024;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1024 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1024ull * 1024 * 1024;
        end++;
        break;
    default:
        cli_die("invalid size \"%s\" for %s: use bytes, or a number with k, m or g", v, flag);
    }
    if (*end == 'b' || *end == 'B' || *end == 'i')
        end++;
    if (*end == 'B')
        end++;
    if (*end)
        cli_die("invalid size \"%s\" for %s", v, flag);
    return (uint64_t)(d * (double)mult);
}

typedef struct {
    char *type, *src, *dst;
    char *opts; /* "rbind:ro" */
} mount_flag_t;

static void parse_mount(const char *v, mount_flag_t *m)
{
    memset(m, 0, sizeof(*m));
    char *copy = strdup(v), *save = NULL;
    for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            cli_die("invalid --mount \"%s\": use type=bind,src=PATH,dst=PATH[,options=rbind:ro]",
                    v);
        *eq = 0;
        const char *k = kv, *val = eq + 1;
        if (strcmp(k, "type") == 0)
            m->type = strdup(val);
        else if (strcmp(k, "src") == 0 || strcmp(k, "source") == 0)
            m->src = strdup(val);
        else if (strcmp(k, "dst") == 0 || strcmp(k, "destination") == 0 || strcmp(k, "target") == 0)
            m->dst = strdup(val);
        else if (strcmp(k, "options") == 0)
            m->opts = strdup(val);
        else
            cli_die("invalid --mount \"%s\": unknown key %s (known: type, src, dst, options)", v,
                    k);
    }
    free(copy);
    if (!m->dst)
        cli_die("invalid --mount \"%s\": dst= is required", v);
    if (!m->type)
        m->type = strdup("bind");
}

static void read_env_file(const char *path, char ***env, int *n)
{
    FILE *f = fopen(path, "re");
    if (!f)
        cli_die("cannot read --env-file %s: %s", path, strerror(errno));
    char line[8192];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#')
            continue;
        if (!strchr(s, '=')) {
            /* Like docker: a bare name takes the value from our environment. */
            const char *v = getenv(s);
            if (!v)
                continue;
            char *kv = NULL;
            if (asprintf(&kv, "%s=%s", s, v) < 0)
                cli_die("out of memory");
            (*env)[(*n)++] = kv;
        } else {
            (*env)[(*n)++] = strdup(s);
        }
        if (*n % 64 == 0)
            *env = realloc(*env, (size_t)(*n + 64) * sizeof(char *));
    }
    fclose(f);
}

static const char run_usage[] = "IMAGE ID [CMD [ARG...]]";

int cli_run_create(int argc, char **argv, const char *cmd, bool run_mode)
{
    enum {
        O_ENV = 256,
        O_ENV_FILE,
        O_CWD,
        O_USER,
        O_MOUNT,
        O_NET_HOST,
        O_PRIV,
        O_RO,
        O_HOSTNAME,
        O_MEM,
        O_CPUS,
        O_CPU_SHARES,
        O_CPUSET,
        O_LABEL,
        O_RUNTIME,
        O_RM,
        O_CAP_ADD,
        O_CAP_DROP,
        O_SECCOMP,
        O_PIDS,
        O_ANNOT,
        O_NNP_OFF,
    };
    static const struct option opts[] = {
        {"rm", no_argument, NULL, O_RM},
        {"detach", no_argument, NULL, 'd'},
        {"tty", no_argument, NULL, 't'},
        {"env", required_argument, NULL, O_ENV},
        {"env-file", required_argument, NULL, O_ENV_FILE},
        {"cwd", required_argument, NULL, O_CWD},
        {"user", required_argument, NULL, O_USER},
        {"mount", required_argument, NULL, O_MOUNT},
        {"net-host", no_argument, NULL, O_NET_HOST},
        {"privileged", no_argument, NULL, O_PRIV},
        {"read-only", no_argument, NULL, O_RO},
        {"hostname", required_argument, NULL, O_HOSTNAME},
        {"memory-limit", required_argument, NULL, O_MEM},
        {"cpus", required_argument, NULL, O_CPUS},
        {"cpu-shares", required_argument, NULL, O_CPU_SHARES},
        {"cpuset-cpus", required_argument, NULL, O_CPUSET},
        {"pids-limit", required_argument, NULL, O_PIDS},
        {"label", required_argument, NULL, O_LABEL},
        {"annotation", required_argument, NULL, O_ANNOT},
        {"runtime", required_argument, NULL, O_RUNTIME},
        {"cap-add", required_argument, NULL, O_CAP_ADD},
        {"cap-drop", required_argument, NULL, O_CAP_DROP},
        {"seccomp", required_argument, NULL, O_SECCOMP},
        {"no-new-privileges=false", no_argument, NULL, O_NNP_OFF},
        {0},
    };
    bool rm = false, detach = false, tty = false, net_host = false, priv = false, ro = false;
    bool nnp_off = false;
    int n_env = 0, n_mounts = 0, n_labels = 0, n_caps_add = 0, n_caps_drop = 0, n_annot = 0;
    char **env = calloc(64, sizeof(char *));
    mount_flag_t mounts[64];
    char *labels[64], *caps_add[64], *caps_drop[64], *annots[64];
    const char *cwd = NULL, *user = NULL, *hostname = NULL, *runtime = NULL, *cpuset = NULL;
    const char *seccomp = NULL;
    uint64_t mem = 0, shares = 0, pids = 0;
    double cpus = 0;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "+:dt", opts, NULL)) != -1) {
        switch (o) {
        case O_RM:
            rm = true;
            break;
        case 'd':
            detach = true;
            break;
        case 't':
            tty = true;
            break;
        case O_ENV:
            if (!strchr(optarg, '='))
                cli_die("--env %s: use KEY=VALUE", optarg);
            env[n_env++] = strdup(optarg);
            if (n_env % 64 == 0)
                env = realloc(env, (size_t)(n_env + 64) * sizeof(char *));
            break;
        case O_ENV_FILE:
            read_env_file(optarg, &env, &n_env);
            break;
        case O_CWD:
            cwd = optarg;
            break;
        case O_USER:
            user = optarg;
            break;
        case O_MOUNT:
            if (n_mounts == 64)
                cli_die("too many --mount flags");
            parse_mount(optarg, &mounts[n_mounts++]);
            break;
        case O_NET_HOST:
            net_host = true;
            break;
        case O_PRIV:
            priv = true;
            break;
        case O_RO:
            ro = true;
            break;
        case O_HOSTNAME:
            hostname = optarg;
            break;
        case O_MEM:
            mem = parse_bytes("--memory-limit", optarg);
            break;
        case O_CPUS: {
            char *end;
            cpus = strtod(optarg, &end);
            if (*end || cpus <= 0)
                cli_die("invalid --cpus \"%s\": a positive number such as 0.5 or 2", optarg);
            break;
        }
        case O_CPU_SHARES:
            shares = strtoull(optarg, NULL, 10);
            break;
        case O_CPUSET:
            cpuset = optarg;
            break;
        case O_PIDS:
            pids = strtoull(optarg, NULL, 10);
            break;
        case O_LABEL:
            if (n_labels == 64)
                cli_die("too many --label flags");
            labels[n_labels++] = optarg;
            break;
        case O_ANNOT:
            if (n_annot == 64 || !strchr(optarg, '='))
                cli_die("--annotation %s: use KEY=VALUE", optarg);
            annots[n_annot++] = optarg;
            break;
        case O_RUNTIME:
            runtime = optarg;
            break;
        case O_CAP_ADD:
            if (n_caps_add < 64)
                caps_add[n_caps_add++] = optarg;
            break;
        case O_CAP_DROP:
            if (n_caps_drop < 64)
                caps_drop[n_caps_drop++] = optarg;
            break;
        case O_SECCOMP:
            seccomp = optarg;
            break;
        case O_NNP_OFF:
            nnp_off = true;
            break;
        default:
            cli_flag_error(cmd, o, argv);
        }
    }
    if (argc - optind < 2)
        cli_die("usage: berth %s [OPTIONS] %s", cmd, run_usage);
    const char *image = argv[optind];
    const char *id = argv[optind + 1];
    char **args = argv + optind + 2;
    int n_args = argc - optind - 2;
    if (!run_mode && (rm || detach))
        cli_die("--rm and -d are flags of `berth run`, not of `berth %s`", cmd);
    if (rm && detach)
        cli_die("flags --detach and --rm cannot be specified together");

    /* containers.create */
    uint32_t n = 3; /* id, image, tty */
    n += n_args > 0;
    n += n_env > 0;
    n += cwd != NULL;
    n += user != NULL;
    n += n_mounts > 0;
    n += hostname != NULL;
    n += n_labels > 0;
    n += runtime != NULL;
    n += ro + net_host + priv + rm + nnp_off;
    n += mem > 0;
    n += cpus > 0;
    n += shares > 0;
    n += cpuset != NULL;
    n += pids > 0;
    n += n_caps_add > 0;
    n += n_caps_drop > 0;
    n += seccomp != NULL;
    n += n_annot > 0;
    berth_mpbuf_t b;
    cli_params_begin(&b, n);
    msgpack_packer *pk = &b.pk;
    berth_mp_kv_str(pk, "id", id);
    berth_mp_kv_str(pk, "image", image);
    berth_mp_kv_bool(pk, "tty", tty);
    if (n_args > 0) {
        berth_mp_pack_str(pk, "args");
        msgpack_pack_array(pk, (uint32_t)n_args);
        for (int i = 0; i < n_args; i++)
            berth_mp_pack_str(pk, args[i]);
    }
    if (n_env > 0) {
        berth_mp_pack_str(pk, "env");
        msgpack_pack_array(pk, (uint32_t)n_env);
        for (int i = 0; i < n_env; i++)
            berth_mp_pack_str(pk, env[i]);
    }
    if (cwd)
        berth_mp_kv_str(pk, "cwd", cwd);
    if (user)
        berth_mp_kv_str(pk, "user", user);
    if (n_mounts > 0) {
        berth_mp_pack_str(pk, "mounts");
        msgpack_pack_array(pk, (uint32_t)n_mounts);
        for (int i = 0; i < n_mounts; i++) {
            mount_flag_t *m = &mounts[i];
            msgpack_pack_map(pk, 4);
            berth_mp_kv_str(pk, "type", m->type);
            berth_mp_kv_str(pk, "source", m->src);
            berth_mp_kv_str(pk, "destination", m->dst);
            berth_mp_pack_str(pk, "options");
            int no = 0;
            char *ov[32];
            if (m->opts) {
                char *save = NULL;
                for (char *x = strtok_r(m->opts, ":", &save); x && no < 32;
                     x = strtok_r(NULL, ":", &save))
                    ov[no++] = x;
            }
            msgpack_pack_array(pk, (uint32_t)no);
            for (int k = 0; k < no; k++)
                berth_mp_pack_str(pk, ov[k]);
        }
    }
    if (hostname)
        berth_mp_kv_str(pk, "hostname", hostname);
    if (n_labels > 0) {
        berth_mp_pack_str(pk, "labels");
        cli_pack_labels(pk, labels, n_labels);
    }
    if (runtime) {
        berth_mp_pack_str(pk, "runtime");
        msgpack_pack_map(pk, 1);
        berth_mp_kv_str(pk, "name", runtime);
    }
    if (ro)
        berth_mp_kv_bool(pk, "readonly_rootfs", true);
    if (net_host)
        berth_mp_kv_bool(pk, "net_host", true);
    if (priv)
        berth_mp_kv_bool(pk, "privileged", true);
    if (rm)
        berth_mp_kv_bool(pk, "rm", true);
    if (nnp_off)
        berth_mp_kv_bool(pk, "no_new_privileges", false);
    if (mem > 0)
        berth_mp_kv_i64(pk, "memory_limit", (int64_t)mem);
    if (cpus > 0) {
        berth_mp_pack_str(pk, "cpus");
        msgpack_pack_double(pk, cpus);
    }
    if (shares > 0)
        berth_mp_kv_u64(pk, "cpu_shares", shares);
    if (cpuset)
        berth_mp_kv_str(pk, "cpuset_cpus", cpuset);
    if (pids > 0)
        berth_mp_kv_i64(pk, "pids_limit", (int64_t)pids);
    if (n_caps_add > 0) {
        berth_mp_pack_str(pk, "cap_add");
        msgpack_pack_array(pk, (uint32_t)n_caps_add);
        for (int i = 0; i < n_caps_add; i++)
            berth_mp_pack_str(pk, caps_add[i]);
    }
    if (n_caps_drop > 0) {
        berth_mp_pack_str(pk, "cap_drop");
        msgpack_pack_array(pk, (uint32_t)n_caps_drop);
        for (int i = 0; i < n_caps_drop; i++)
            berth_mp_pack_str(pk, caps_drop[i]);
    }
    if (seccomp)
        berth_mp_kv_str(pk, "seccomp", seccomp);
    if (n_annot > 0) {
        berth_mp_pack_str(pk, "annotations");
        msgpack_pack_map(pk, (uint32_t)n_annot);
        for (int i = 0; i < n_annot; i++) {
            char *eq = strchr(annots[i], '=');
            berth_mp_pack_strn(pk, annots[i], (size_t)(eq - annots[i]));
            berth_mp_pack_str(pk, eq + 1);
        }
    }
    cli_call("containers.create", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    for (int i = 0; i < n_env; i++)
        free(env[i]);
    free(env);
    if (!run_mode)
        return 0;

    /* tasks.create: FIFOs made by the daemon, opened here. */
    bool interactive = !detach;
    cli_params_begin(&b, 5);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_mp_kv_bool(&b.pk, "terminal", tty);
    berth_mp_kv_bool(&b.pk, "stdin", interactive);
    berth_mp_kv_bool(&b.pk, "stdout", interactive);
    berth_mp_kv_bool(&b.pk, "stderr", interactive && !tty);
    _cleanup_error_ berth_error_t *err = NULL;
    const msgpack_object *res = NULL;
    if (cli_try_call("tasks.create", &b, NULL, NULL, NULL, &res, &err) < 0) {
        berth_mpbuf_destroy(&b);
        if (rm) {
            /* Nothing ran: remove the container we just made. */
            berth_mpbuf_t d;
            cli_params_begin(&d, 1);
            berth_mp_kv_str(&d.pk, "id", id);
            berth_error_t *e2 = NULL;
            cli_try_call("containers.delete", &d, NULL, NULL, NULL, NULL, &e2);
            berth_error_free(&e2);
            berth_mpbuf_destroy(&d);
        }
        cli_die_err(err);
    }
    berth_mpbuf_destroy(&b);
    char *fifos[3] = {cli_str(res, "stdin"), cli_str(res, "stdout"), cli_str(res, "stderr")};
    int code;
    if (detach) {
        cli_params_begin(&b, 1);
        berth_mp_kv_str(&b.pk, "id", id);
        cli_call("tasks.start", &b, NULL, NULL, NULL);
        berth_mpbuf_destroy(&b);
        code = 0;
    } else {
        const char *f[3] = {fifos[0], fifos[1], fifos[2]};
        code = cli_run_attach(id, "", tty, f, true, true);
        if (!rm) {
            /* Like ctr: the task goes, the container stays. */
            cli_params_begin(&b, 1);
            berth_mp_kv_str(&b.pk, "id", id);
            berth_error_t *e2 = NULL;
            cli_try_call("tasks.delete", &b, NULL, NULL, NULL, NULL, &e2);
            berth_error_free(&e2);
            berth_mpbuf_destroy(&b);
        }
    }
    for (int i = 0; i < 3; i++)
        free(fifos[i]);
    return code;
}

/* ---- signals -------------------------------------------------------------------- */

static const struct {
    const char *name;
    int num;
} sigs[] = {
    {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"ILL", SIGILL},
    {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"BUS", SIGBUS},     {"FPE", SIGFPE},
    {"KILL", SIGKILL},     {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},   {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE},     {"ALRM", SIGALRM}, {"TERM", SIGTERM},   {"CHLD", SIGCHLD},
    {"CONT", SIGCONT},     {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},   {"TTIN", SIGTTIN},
    {"TTOU", SIGTTOU},     {"URG", SIGURG},   {"XCPU", SIGXCPU},   {"XFSZ", SIGXFSZ},
    {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"PWR", SIGPWR},       {"SYS", SIGSYS},
};

int cli_parse_signal(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end)
        return v > 0 && v < 65 ? (int)v : -1;
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(sigs); i++)
        if (strcasecmp(s, sigs[i].name) == 0)
            return sigs[i].num;
    return -1;
}

/* ---- attach: stdio copy, wait, signal forwarding --------------------------------- */

typedef struct {
    char id[128], exec_id[128];
    int notify[2]; /* wait thread → main: 'r' registered, 'd' done */
    int status;
    bool ok;
    berth_error_t *err;
} waiter_t;

static int g_sigpipe[2] = {-1, -1};

static void on_signal(int sig)
{
    unsigned char c = (unsigned char)sig;
    int e = errno;
    if (write(g_sigpipe[1], &c, 1) < 0) {
    }
    errno = e;
}

static int wait_stream(const msgpack_object *data, void *user)
{
    waiter_t *w = user;
    (void)data;
    char c = 'r';
    if (write(w->notify[1], &c, 1) < 0) {
    }
    return 0;
}

static void *wait_thread(void *arg)
{
    waiter_t *w = arg;
    /* A connection of its own: the main one stays free for kill/resize.
     * A connection that drops is opened again and the wait re-sent. */
    for (int attempt = 0; attempt < 20; attempt++) {
        berth_error_t *err = NULL;
        berth_client_t *c = berth_client_connect(cli_g.address, cli_g.connect_timeout_ms, &err);
        if (!c) {
            berth_error_free(&err);
            usleep(200000);
            continue;
        }
        berth_mpbuf_t b;
        cli_params_begin(&b, 2);
        berth_mp_kv_str(&b.pk, "id", w->id);
        berth_mp_kv_str(&b.pk, "exec_id", w->exec_id);
        berth_result_t res = {0};
        int r = berth_client_call(c, "tasks.wait", b.buf.data, b.buf.size, 0, wait_stream, NULL, w,
                                  &res, &err);
        berth_mpbuf_destroy(&b);
        if (r == 0) {
            w->status = (int)cli_u64(res.result, "exit_status");
            w->ok = true;
            berth_client_free(c);
            break;
        }
        berth_client_free(c);
        if (err->code != BERTH_E_UNAVAILABLE && err->code != BERTH_E_INTERNAL) {
            w->err = err;
            break;
        }
        berth_error_free(&err);
        usleep(200000);
    }
    char d = 'd';
    if (write(w->notify[1], &d, 1) < 0) {
    }
    return NULL;
}

static struct termios g_saved_tio;
static bool g_raw;

static void restore_tty(void)
{
    if (g_raw) {
        tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_tio);
        g_raw = false;
    }
}

static void resize(const char *id, const char *exec_id)
{
    struct winsize ws;
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0 || ws.ws_col == 0)
        return;
    berth_mpbuf_t b;
    cli_params_begin(&b, 4);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_mp_kv_str(&b.pk, "exec_id", exec_id);
    berth_mp_kv_u64(&b.pk, "width", ws.ws_col);
    berth_mp_kv_u64(&b.pk, "height", ws.ws_row);
    berth_error_t *err = NULL;
    cli_try_call("tasks.resize", &b, NULL, NULL, NULL, NULL, &err);
    berth_error_free(&err);
    berth_mpbuf_destroy(&b);
}

static void forward(const char *id, const char *exec_id, int sig)
{
    berth_mpbuf_t b;
    cli_params_begin(&b, 3);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_mp_kv_str(&b.pk, "exec_id", exec_id);
    berth_mp_kv_u64(&b.pk, "signal", (uint64_t)sig);
    berth_error_t *err = NULL;
    cli_try_call("tasks.kill", &b, NULL, NULL, NULL, NULL, &err);
    berth_error_free(&err);
    berth_mpbuf_destroy(&b);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, 1000);
            continue;
        }
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int cli_run_attach(const char *id, const char *exec_id, bool tty, const char *fifos[3], bool start,
                   bool interactive)
{
    /* Open the FIFOs first: the shim holds their other ends. */
    int in = -1, out = -1, err_fd = -1;
    if (fifos[1] && fifos[1][0] && (out = open(fifos[1], O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
        cli_die("open %s: %s", fifos[1], strerror(errno));
    if (fifos[2] && fifos[2][0] && (err_fd = open(fifos[2], O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
        cli_die("open %s: %s", fifos[2], strerror(errno));
    if (interactive && fifos[0] && fifos[0][0] &&
        (in = open(fifos[0], O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
        cli_die("open %s: %s", fifos[0], strerror(errno));

    waiter_t w = {0};
    snprintf(w.id, sizeof(w.id), "%s", id);
    snprintf(w.exec_id, sizeof(w.exec_id), "%s", exec_id ? exec_id : "");
    if (pipe2(w.notify, O_CLOEXEC) < 0 || pipe2(g_sigpipe, O_CLOEXEC | O_NONBLOCK) < 0)
        cli_die("pipe: %s", strerror(errno));
    pthread_t th;
    if (pthread_create(&th, NULL, wait_thread, &w) != 0)
        cli_die("cannot start a thread");
    /* The wait goes out on its own connection while the task starts: no
     * round trip in between. A wait that arrives after the exit still gets
     * the status (the runtime answers from the stopped task, or for --rm
     * after the removal, from its record of removed tasks). */
    bool done = false;

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    int fwd[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(fwd); i++)
        sigaction(fwd[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &g_saved_tio) == 0) {
        struct termios raw = g_saved_tio;
        /* Raw both ways: the container's pty does the output processing. */
        cfmakeraw(&raw);
        if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) {
            g_raw = true;
            atexit(restore_tty);
        }
    }
    if (tty)
        resize(id, w.exec_id);

    if (start && !done) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 2);
        berth_mp_kv_str(&b.pk, "id", id);
        berth_mp_kv_str(&b.pk, "exec_id", w.exec_id);
        berth_error_t *e = NULL;
        int r = cli_try_call("tasks.start", &b, NULL, NULL, NULL, NULL, &e);
        berth_mpbuf_destroy(&b);
        if (r < 0) {
            restore_tty();
            cli_die_err(e);
        }
    }

    bool stdin_open = in >= 0;
    char buf[32768];
    uint64_t drain_until = 0;
    for (;;) {
        struct pollfd p[5];
        int np = 0, i_notify = -1, i_sig, i_out = -1, i_err = -1, i_in = -1;
        p[np] = (struct pollfd){.fd = g_sigpipe[0], .events = POLLIN};
        i_sig = np++;
        if (!done) {
            p[np] = (struct pollfd){.fd = w.notify[0], .events = POLLIN};
            i_notify = np++;
        }
        if (out >= 0) {
            p[np] = (struct pollfd){.fd = out, .events = POLLIN};
            i_out = np++;
        }
        if (err_fd >= 0) {
            p[np] = (struct pollfd){.fd = err_fd, .events = POLLIN};
            i_err = np++;
        }
        if (stdin_open && !done) {
            p[np] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
            i_in = np++;
        }
        if (done && out < 0 && err_fd < 0)
            break;
        int timeout = -1;
        if (done) {
            uint64_t now = berth_mono_ms();
            if (now >= drain_until)
                break;
            timeout = (int)(drain_until - now);
        }
        int r = poll(p, (nfds_t)np, timeout);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        if (p[i_sig].revents & POLLIN) {
            unsigned char s;
            while (read(g_sigpipe[0], &s, 1) == 1) {
                if (s == SIGWINCH) {
                    if (tty)
                        resize(id, w.exec_id);
                } else if (!done) {
                    forward(id, w.exec_id, s);
                }
            }
        }
        if (i_notify >= 0 && (p[i_notify].revents & (POLLIN | POLLHUP))) {
            /* One byte per wakeup ('r' registered, 'd' done): the pipe
             * blocks, and 'd' only comes once the process has exited. */
            char x = 0;
            if (read(w.notify[0], &x, 1) == 1 && x == 'd') {
                done = true;
                /* The shim reported the exit after the output reached EOF;
                 * what is left is in the FIFOs: read it to EOF (bounded). */
                drain_until = berth_mono_ms() + 5000;
                if (in >= 0) {
                    close(in);
                    in = -1;
                }
            }
        }
        int srcs[2] = {i_out, i_err};
        for (int k = 0; k < 2; k++) {
            if (srcs[k] < 0 || !(p[srcs[k]].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            int *fd = k == 0 ? &out : &err_fd;
            ssize_t n = read(*fd, buf, sizeof(buf));
            if (n > 0) {
                write_all(k == 0 ? STDOUT_FILENO : STDERR_FILENO, buf, (size_t)n);
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(*fd);
                *fd = -1;
            }
        }
        if (i_in >= 0 && (p[i_in].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
            if (n > 0) {
                if (in >= 0 && write_all(in, buf, (size_t)n) < 0) {
                    close(in);
                    in = -1;
                }
            } else if (n == 0 || errno != EINTR) {
                /* EOF on our stdin: closing the FIFO closes the process's
                 * stdin (the shim sees the hang-up). */
                stdin_open = false;
                if (in >= 0) {
                    close(in);
                    in = -1;
                }
            }
        }
    }
    restore_tty();
    pthread_join(th, NULL);
    if (out >= 0)
        close(out);
    if (err_fd >= 0)
        close(err_fd);
    if (in >= 0)
        close(in);
    if (!w.ok) {
        if (w.err)
            cli_die_err(w.err);
        cli_die("lost the connection to berthd while waiting for %s", id);
    }
    return w.status;
}

static int run_main(int argc, char **argv)
{
    return cli_run_create(argc, argv, "run", true);
}

static const char run_details[] =
    "Creates a container from IMAGE (its entrypoint and cmd unless CMD is given),\n"
    "starts it and copies its stdin/stdout/stderr; berth exits with the\n"
    "container's exit code. Signals (Ctrl-C, TERM) are forwarded to it.\n"
    "\n"
    "Options:\n"
    "  --rm                 remove the task and the container when it exits (done by\n"
    "                       the daemon, even if this client dies)\n"
    "  -d, --detach         start it and return\n"
    "  -t, --tty            allocate a terminal (raw mode here, resized with the window)\n"
    "  --env K=V            set an environment variable (repeatable)\n"
    "  --env-file F         read K=V lines from F\n"
    "  --cwd DIR            working directory\n"
    "  --user U             USER, UID, USER:GROUP or UID:GID (from the image's /etc files)\n"
    "  --mount SPEC         type=bind,src=HOST,dst=CTR[,options=rbind:ro] (repeatable)\n"
    "  --net-host           use the host's network namespace\n"
    "  --privileged         all capabilities and devices, no seccomp\n"
    "  --read-only          read-only root filesystem\n"
    "  --hostname H         hostname\n"
    "  --memory-limit B     memory limit in bytes (k, m, g suffixes)\n"
    "  --cpus N             CPU quota (e.g. 0.5)\n"
    "  --cpu-shares N       CPU shares\n"
    "  --cpuset-cpus LIST   CPUs to run on\n"
    "  --pids-limit N       maximum number of processes\n"
    "  --cap-add CAP        add a capability (repeatable; ALL)\n"
    "  --cap-drop CAP       drop a capability (repeatable; ALL)\n"
    "  --seccomp PROFILE    default or unconfined\n"
    "  --label K=V          container label (repeatable)\n"
    "  --annotation K=V     OCI annotation (repeatable)\n"
    "  --runtime NAME       OCI runtime (runc by default, e.g. crun)\n"
    "\n"
    "Examples:\n"
    "  berth run --rm docker.io/library/busybox:latest hello echo hello\n"
    "  berth run -d busybox:latest web sleep 3600\n"
    "  berth run --rm -t busybox:latest shell sh\n";

int cmd_run(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("Usage: berth run [OPTIONS] %s\n\nRun a container\n\n%s", run_usage, run_details);
        return 0;
    }
    return run_main(argc, argv);
}
