/* SPDX-License-Identifier: Apache-2.0 */
/* `berth tasks start|ls|exec|attach|kill|rm|pause|resume|ps|metrics` (like
 * `ctr tasks`, plus --format json). The stdio copy and wait live in
 * cmd_run.c (cli_run_attach). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int cli_run_attach(const char *id, const char *exec_id, bool tty, const char *fifos[3], bool start,
                   bool interactive);
int cli_parse_signal(const char *s);

static void id_params(berth_mpbuf_t *b, const char *id, uint32_t extra)
{
    cli_params_begin(b, 1 + extra);
    berth_mp_kv_str(&b->pk, "id", id);
}

static int t_start(int argc, char **argv)
{
    static const struct option opts[] = {{"detach", no_argument, NULL, 'd'}, {0}};
    bool detach = false;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":d", opts, NULL)) != -1) {
        if (o == 'd')
            detach = true;
        else
            cli_flag_error("tasks start", o, argv);
    }
    if (argc - optind != 1)
        cli_die("usage: berth tasks start [-d] ID");
    const char *id = argv[optind];
    /* The container's spec says whether it has a terminal. */
    berth_mpbuf_t b;
    id_params(&b, id, 0);
    const msgpack_object *res = cli_call("containers.get", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    berth_bytes_t spec = {0};
    berth_mp_get_bin(berth_mp_get(res, "container"), "spec", &spec, NULL);
    bool tty = spec.len && memmem(spec.ptr, spec.len, "\"terminal\":true", 15) != NULL;
    id_params(&b, id, 4);
    berth_mp_kv_bool(&b.pk, "terminal", tty);
    berth_mp_kv_bool(&b.pk, "stdin", !detach);
    berth_mp_kv_bool(&b.pk, "stdout", !detach);
    berth_mp_kv_bool(&b.pk, "stderr", !detach && !tty);
    res = cli_call("tasks.create", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    if (detach) {
        id_params(&b, id, 0);
        cli_call("tasks.start", &b, NULL, NULL, NULL);
        berth_mpbuf_destroy(&b);
        return 0;
    }
    char *f[3] = {cli_str(res, "stdin"), cli_str(res, "stdout"), cli_str(res, "stderr")};
    const char *cf[3] = {f[0], f[1], f[2]};
    int code = cli_run_attach(id, "", tty, cf, true, true);
    for (int i = 0; i < 3; i++)
        free(f[i]);
    return code;
}

static int t_list(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"format", required_argument, NULL, 'f'},
        {0},
    };
    bool quiet = false;
    const char *format = NULL;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":q", opts, NULL)) != -1) {
        if (o == 'q')
            quiet = true;
        else if (o == 'f')
            format = optarg;
        else
            cli_flag_error("tasks ls", o, argv);
    }
    const msgpack_object *res = cli_call("tasks.list", NULL, NULL, NULL, NULL);
    const msgpack_object *list = berth_mp_get(res, "tasks");
    if (cli_list_plain(list, cli_format_is_json(format), quiet, "id"))
        return 0;
    cli_table_t *t = cli_table_new(3, "TASK", "PID", "STATUS");
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const msgpack_object *x = &list->via.array.ptr[i];
        _cleanup_free_ char *id = cli_str(x, "id");
        _cleanup_free_ char *st = cli_str(x, "status");
        char pid[24];
        snprintf(pid, sizeof(pid), "%llu", (unsigned long long)cli_u64(x, "pid"));
        cli_table_row(t, id, pid, st);
    }
    cli_table_print(t, stdout);
    return 0;
}

static int t_exec(int argc, char **argv)
{
    enum { O_EXEC_ID = 256, O_CWD, O_ENV, O_USER };
    static const struct option opts[] = {
        {"exec-id", required_argument, NULL, O_EXEC_ID},
        {"tty", no_argument, NULL, 't'},
        {"detach", no_argument, NULL, 'd'},
        {"cwd", required_argument, NULL, O_CWD},
        {"env", required_argument, NULL, O_ENV},
        {"user", required_argument, NULL, O_USER},
        {0},
    };
    const char *exec_id = NULL, *cwd = NULL, *user = NULL;
    bool tty = false, detach = false;
    char *env[64];
    int n_env = 0, o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "+:td", opts, NULL)) != -1) {
        switch (o) {
        case O_EXEC_ID:
            exec_id = optarg;
            break;
        case 't':
            tty = true;
            break;
        case 'd':
            detach = true;
            break;
        case O_CWD:
            cwd = optarg;
            break;
        case O_USER:
            user = optarg;
            break;
        case O_ENV:
            if (n_env < 64)
                env[n_env++] = optarg;
            break;
        default:
            cli_flag_error("tasks exec", o, argv);
        }
    }
    if (!exec_id)
        cli_die("berth tasks exec needs --exec-id ID");
    if (argc - optind < 2)
        cli_die("usage: berth tasks exec --exec-id X [-t] [-d] ID CMD [ARG...]");
    const char *id = argv[optind];
    berth_mpbuf_t b;
    id_params(&b, id, 6 + (cwd != NULL) + (user != NULL) + (n_env > 0));
    berth_mp_kv_str(&b.pk, "exec_id", exec_id);
    berth_mp_kv_bool(&b.pk, "terminal", tty);
    berth_mp_kv_bool(&b.pk, "stdin", !detach);
    berth_mp_kv_bool(&b.pk, "stdout", !detach);
    berth_mp_kv_bool(&b.pk, "stderr", !detach && !tty);
    berth_mp_pack_str(&b.pk, "args");
    msgpack_pack_array(&b.pk, (uint32_t)(argc - optind - 1));
    for (int i = optind + 1; i < argc; i++)
        berth_mp_pack_str(&b.pk, argv[i]);
    if (cwd)
        berth_mp_kv_str(&b.pk, "cwd", cwd);
    if (user)
        berth_mp_kv_str(&b.pk, "user", user);
    if (n_env) {
        berth_mp_pack_str(&b.pk, "env");
        msgpack_pack_array(&b.pk, (uint32_t)n_env);
        for (int i = 0; i < n_env; i++)
            berth_mp_pack_str(&b.pk, env[i]);
    }
    const msgpack_object *res = cli_call("tasks.exec", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    if (detach) {
        id_params(&b, id, 1);
        berth_mp_kv_str(&b.pk, "exec_id", exec_id);
        cli_call("tasks.start", &b, NULL, NULL, NULL);
        berth_mpbuf_destroy(&b);
        return 0;
    }
    char *f[3] = {cli_str(res, "stdin"), cli_str(res, "stdout"), cli_str(res, "stderr")};
    const char *cf[3] = {f[0], f[1], f[2]};
    int code = cli_run_attach(id, exec_id, tty, cf, true, true);
    for (int i = 0; i < 3; i++)
        free(f[i]);
    /* Like ctr: the exec process is removed once it exited. */
    id_params(&b, id, 1);
    berth_mp_kv_str(&b.pk, "exec_id", exec_id);
    berth_error_t *err = NULL;
    cli_try_call("tasks.delete", &b, NULL, NULL, NULL, NULL, &err);
    berth_error_free(&err);
    berth_mpbuf_destroy(&b);
    return code;
}

static int t_attach(int argc, char **argv)
{
    if (argc != 2)
        cli_die("usage: berth tasks attach ID");
    const char *id = argv[1];
    berth_mpbuf_t b;
    id_params(&b, id, 0);
    const msgpack_object *res = cli_call("tasks.get", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *p = berth_mp_get(res, "process");
    bool tty = false;
    berth_mp_get_bool(p, "terminal", &tty, NULL);
    char *f[3] = {cli_str(p, "stdin"), cli_str(p, "stdout"), cli_str(p, "stderr")};
    if (!f[1][0] && !f[2][0])
        cli_die("task %s was started without stdio (detached); nothing to attach to", id);
    const char *cf[3] = {f[0], f[1], f[2]};
    int code = cli_run_attach(id, "", tty, cf, false, true);
    for (int i = 0; i < 3; i++)
        free(f[i]);
    return code;
}

static int t_kill(int argc, char **argv)
{
    enum { O_EXEC_ID = 256 };
    static const struct option opts[] = {
        {"signal", required_argument, NULL, 's'},
        {"all", no_argument, NULL, 'a'},
        {"exec-id", required_argument, NULL, O_EXEC_ID},
        {0},
    };
    const char *sig = NULL, *exec_id = "";
    bool all = false;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":s:a", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            sig = optarg;
            break;
        case 'a':
            all = true;
            break;
        case O_EXEC_ID:
            exec_id = optarg;
            break;
        default:
            cli_flag_error("tasks kill", o, argv);
        }
    }
    if (argc - optind != 1)
        cli_die("usage: berth tasks kill [-s SIGNAL] [-a] [--exec-id X] ID");
    const char *id = argv[optind];
    berth_mpbuf_t b;
    _cleanup_free_ char *stop = NULL;
    if (!sig) {
        /* The image's STOPSIGNAL, recorded as a label at create. */
        id_params(&b, id, 0);
        berth_error_t *err = NULL;
        const msgpack_object *res = NULL;
        if (cli_try_call("containers.get", &b, NULL, NULL, NULL, &res, &err) == 0)
            stop = cli_str(berth_mp_get(berth_mp_get(res, "container"), "labels"),
                           "berth.io/stop-signal");
        berth_error_free(&err);
        berth_mpbuf_destroy(&b);
        sig = stop && stop[0] ? stop : "SIGTERM";
    }
    int s = cli_parse_signal(sig);
    if (s < 0)
        cli_die("unknown signal \"%s\": use a name (TERM, SIGKILL) or a number", sig);
    id_params(&b, id, 3);
    berth_mp_kv_u64(&b.pk, "signal", (uint64_t)s);
    berth_mp_kv_bool(&b.pk, "all", all);
    berth_mp_kv_str(&b.pk, "exec_id", exec_id);
    cli_call("tasks.kill", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    return 0;
}

static int t_rm(int argc, char **argv)
{
    enum { O_EXEC_ID = 256 };
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'},
        {"exec-id", required_argument, NULL, O_EXEC_ID},
        {0},
    };
    bool force = false;
    const char *exec_id = "";
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":f", opts, NULL)) != -1) {
        if (o == 'f')
            force = true;
        else if (o == O_EXEC_ID)
            exec_id = optarg;
        else
            cli_flag_error("tasks rm", o, argv);
    }
    if (optind >= argc)
        cli_die("usage: berth tasks rm [-f] [--exec-id X] ID...");
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        berth_mpbuf_t b;
        id_params(&b, argv[i], 2);
        berth_mp_kv_bool(&b.pk, "force", force);
        berth_mp_kv_str(&b.pk, "exec_id", exec_id);
        berth_error_t *err = NULL;
        if (cli_try_call("tasks.delete", &b, NULL, NULL, NULL, NULL, &err) < 0) {
            fprintf(stderr, "berth: %s\n", err->message);
            berth_error_free(&err);
            rc = 1;
        }
        berth_mpbuf_destroy(&b);
    }
    return rc;
}

static int simple(int argc, char **argv, const char *method, const char *usage)
{
    if (argc != 2)
        cli_die("usage: berth tasks %s", usage);
    berth_mpbuf_t b;
    id_params(&b, argv[1], 0);
    cli_call(method, &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    return 0;
}

static int t_pause(int argc, char **argv)
{
    return simple(argc, argv, "tasks.pause", "pause ID");
}
static int t_resume(int argc, char **argv)
{
    return simple(argc, argv, "tasks.resume", "resume ID");
}

static int t_ps(int argc, char **argv)
{
    const char *format = NULL;
    static const struct option opts[] = {{"format", required_argument, NULL, 'f'}, {0}};
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (o == 'f')
            format = optarg;
        else
            cli_flag_error("tasks ps", o, argv);
    }
    if (argc - optind != 1)
        cli_die("usage: berth tasks ps [--format json] ID");
    berth_mpbuf_t b;
    id_params(&b, argv[optind], 0);
    const msgpack_object *res = cli_call("tasks.pids", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *list = berth_mp_get(res, "processes");
    if (cli_list_plain(list, cli_format_is_json(format), false, NULL))
        return 0;
    msgpack_object empty = {.type = MSGPACK_OBJECT_ARRAY};
    if (!list || list->type != MSGPACK_OBJECT_ARRAY)
        list = &empty;
    cli_table_t *t = cli_table_new(2, "PID", "INFO");
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const msgpack_object *p = &list->via.array.ptr[i];
        char pid[24];
        snprintf(pid, sizeof(pid), "%llu", (unsigned long long)cli_u64(p, "pid"));
        _cleanup_free_ char *x = cli_str(p, "exec_id");
        char info[160];
        snprintf(info, sizeof(info), "exec_id:%s", x);
        cli_table_row(t, pid, x[0] ? info : "-");
    }
    cli_table_print(t, stdout);
    return 0;
}

static int t_metrics(int argc, char **argv)
{
    const char *format = NULL;
    static const struct option opts[] = {{"format", required_argument, NULL, 'f'}, {0}};
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (o == 'f')
            format = optarg;
        else
            cli_flag_error("tasks metrics", o, argv);
    }
    if (argc - optind != 1)
        cli_die("usage: berth tasks metrics [--format table|json] ID");
    const char *id = argv[optind];
    berth_mpbuf_t b;
    id_params(&b, id, 0);
    const msgpack_object *res = cli_call("tasks.metrics", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *m = berth_mp_get(res, "metrics");
    if (cli_format_is_json(format)) {
        cli_print_json(m ? m : res, stdout);
        return 0;
    }
    int64_t ts = 0;
    berth_mp_get_i64(m, "timestamp", &ts, NULL);
    cli_table_t *t = cli_table_new(2, "ID", "TIMESTAMP");
    cli_table_row(t, id, cli_go_time(ts));
    cli_table_print(t, stdout);
    fputc('\n', stdout);
    bool v1 = cli_u64(m, "cgroup_version") == 1;
    const msgpack_object *mem = berth_mp_get(m, "memory");
    const msgpack_object *cpu = berth_mp_get(m, "cpu");
    const msgpack_object *pids = berth_mp_get(m, "pids");
    t = cli_table_new(2, "METRIC", "VALUE");
    char v[64][40];
    int k = 0;
#define ROW(name, val)                                                                             \
    do {                                                                                           \
        snprintf(v[k], sizeof(v[k]), "%llu", (unsigned long long)(val));                           \
        cli_table_row(t, name, v[k]);                                                              \
        k++;                                                                                       \
    } while (0)
    if (v1) {
        ROW("memory.usage_in_bytes", cli_u64(mem, "usage"));
        ROW("memory.limit_in_bytes", cli_u64(mem, "limit"));
        ROW("memory.stat.cache", cli_u64(mem, "cache"));
        ROW("cpuacct.usage", cli_u64(cpu, "usage_ns"));
        const msgpack_object *pc = berth_mp_get(cpu, "percpu_ns");
        char per[1024] = "[";
        size_t pl = 1;
        for (uint32_t i = 0; pc && pc->type == MSGPACK_OBJECT_ARRAY && i < pc->via.array.size; i++)
            pl += (size_t)snprintf(per + pl, sizeof(per) - pl, "%s%llu", i ? " " : "",
                                   (unsigned long long)pc->via.array.ptr[i].via.u64);
        snprintf(per + pl, sizeof(per) - pl, "]");
        cli_table_row(t, "cpuacct.usage_percpu", per);
        ROW("pids.current", cli_u64(pids, "current"));
        ROW("pids.limit", cli_u64(pids, "limit"));
    } else {
        /* ctr's names and order for cgroup v2 (the fields berth has). */
        ROW("pids.current", cli_u64(pids, "current"));
        ROW("pids.limit", cli_u64(pids, "limit"));
        ROW("cpu.usage_usec", cli_u64(cpu, "usage_ns") / 1000);
        ROW("cpu.user_usec", cli_u64(cpu, "user_ns") / 1000);
        ROW("cpu.system_usec", cli_u64(cpu, "system_ns") / 1000);
        ROW("memory.usage", cli_u64(mem, "usage"));
        ROW("memory.usage_limit", cli_u64(mem, "limit"));
    }
#undef ROW
    cli_table_print(t, stdout);
    return 0;
}

static const cli_subcmd_t tasks_cmds[] = {
    {"start", "[-d] ID", "Start a container's task",
     "Creates the task of container ID and starts it, attached to this terminal\n"
     "unless -d; exits with its exit code.\n",
     t_start, false},
    {"list|ls", "[-q] [--format json]", "List tasks", "Columns: TASK PID STATUS.\n", t_list, false},
    {"exec", "--exec-id X [-t] [-d] [--cwd D] [--env K=V] [--user UID[:GID]] ID CMD [ARG...]",
     "Run another process in a task", NULL, t_exec, true},
    {"attach", "ID", "Attach to the stdio of a running task", NULL, t_attach, false},
    {"kill", "[-s SIGNAL] [-a] [--exec-id X] ID", "Signal a task (default: its stop signal)",
     "Options:\n"
     "  -s, --signal SIG   signal name or number (default: the image's STOPSIGNAL or TERM)\n"
     "  -a, --all          send it to every process of the task\n"
     "  --exec-id X        signal an exec process\n",
     t_kill, false},
    {"delete|del|remove|rm", "[-f] [--exec-id X] ID...", "Delete stopped tasks",
     "Options:\n"
     "  -f, --force   kill a running task first\n",
     t_rm, false},
    {"pause", "ID", "Pause a task (freezer)", NULL, t_pause, false},
    {"resume", "ID", "Resume a paused task", NULL, t_resume, false},
    {"ps", "[--format json] ID", "List a task's processes", NULL, t_ps, false},
    {"metrics|metric", "[--format table|json] ID", "Show a task's cgroup metrics", NULL, t_metrics,
     false},
    {0},
};

int cmd_tasks(int argc, char **argv)
{
    return cli_dispatch(argc, argv, "tasks", "Manage tasks", tasks_cmds);
}
