/* SPDX-License-Identifier: Apache-2.0 */
/* `berth plugins ls|restart|replace`: the plugin processes berthd
 * supervises (like `ctr plugins ls`, plus PID, RESTARTS and UPTIME). */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static int plugins_ls(int argc, char **argv)
{
    bool quiet = false, json = false;
    optind = cli_list_flags("plugins ls", argc, argv, &quiet, &json);
    if (optind < argc)
        cli_die("`berth plugins ls` takes no arguments (got \"%s\")", argv[optind]);

    const msgpack_object *res = cli_call("plugins.list", NULL, NULL, NULL, NULL);
    const msgpack_object *list = NULL;
    _cleanup_error_ berth_error_t *err = NULL;
    if (berth_mp_get_array(res, "plugins", &list, &err) < 0)
        cli_die("berthd answered plugins.list without a list of plugins: %s", err->message);
    if (cli_list_plain(list, json, quiet, "id"))
        return 0;
    uint32_t n = list ? list->via.array.size : 0;
    cli_table_t *t =
        cli_table_new(7, "TYPE", "ID", "VERSION", "PID", "STATUS", "RESTARTS", "UPTIME");
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *p = &list->via.array.ptr[i];
        _cleanup_free_ char *type = cli_str(p, "type");
        _cleanup_free_ char *id = cli_str(p, "id");
        _cleanup_free_ char *version = cli_str(p, "version");
        _cleanup_free_ char *status = cli_str(p, "status");
        uint64_t pid = cli_u64(p, "pid");
        uint64_t uptime = cli_u64(p, "uptime_ns");
        char pidb[24], rb[24];
        snprintf(pidb, sizeof(pidb), "%llu", (unsigned long long)pid);
        snprintf(rb, sizeof(rb), "%llu", (unsigned long long)cli_u64(p, "restarts"));
        cli_table_row(t, *type ? type : "-", *id ? id : "-", *version ? version : "-",
                      pid ? pidb : "-", *status ? status : "-", rb,
                      pid && uptime ? cli_human_duration(uptime) : "-");
    }
    cli_table_print(t, stdout);
    return 0;
}

static int plugins_restart(int argc, char **argv)
{
    static const struct option opts[] = {{0}};
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1)
        cli_flag_error("plugins restart", o, argv);
    if (optind >= argc)
        cli_die("`berth plugins restart` needs a plugin id; see `berth plugins ls -q`");
    for (int i = optind; i < argc; i++) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 1);
        berth_mp_kv_str(&b.pk, "id", argv[i]);
        cli_call("plugins.restart", &b, NULL, NULL, NULL);
        berth_mpbuf_destroy(&b);
    }
    return 0;
}

static int plugins_replace(int argc, char **argv)
{
    static const struct option opts[] = {
        {"path", required_argument, NULL, 'p'},
        {0},
    };
    const char *path = NULL;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (o == 'p')
            path = optarg;
        else
            cli_flag_error("plugins replace", o, argv);
    }
    if (optind >= argc)
        cli_die("`berth plugins replace` needs a plugin id; see `berth plugins ls -q`");
    if (argc - optind > 1)
        cli_die("`berth plugins replace` takes one plugin id (got %d)", argc - optind);
    /* berthd resolves paths itself, from its own working directory: send
     * an absolute path when the binary is here. */
    char abs[PATH_MAX];
    if (path && path[0] != '/' && realpath(path, abs))
        path = abs;
    berth_mpbuf_t b;
    cli_params_begin(&b, path ? 2 : 1);
    berth_mp_kv_str(&b.pk, "id", argv[optind]);
    if (path)
        berth_mp_kv_str(&b.pk, "path", path);
    cli_call("plugins.replace", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    return 0;
}

static const cli_subcmd_t plugins_cmds[] = {
    {"list|ls", "[-q] [--format json]", "List plugins with their process and restart state",
     "Columns: TYPE ID VERSION PID STATUS RESTARTS UPTIME (ctr shows TYPE ID\n"
     "PLATFORMS STATUS; berth's plugins are processes, so it shows those instead).\n"
     "STATUS is starting, ok, restarting, failed (crash loop: retried every 30 s)\n"
     "or skip (disabled in the configuration).\n"
     "\n"
     "Options:\n"
     "  -q, --quiet       print only plugin ids\n"
     "  --format FORMAT   table (default) or json: an array of {id, type, version,\n"
     "                    pid, status, restarts, uptime_ns, path, queued (requests\n"
     "                    waiting for the plugin), in_flight (requests it is\n"
     "                    serving), last_exit, methods, ...}\n"
     "\n"
     "Examples:\n"
     "  berth plugins ls\n"
     "  berth plugins ls --format json | jq -r '.[] | select(.status != \"ok\") | .id'\n",
     plugins_ls, false},
    {"restart", "ID...", "Restart plugin processes",
     "Stops the plugin and starts it again; requests for its methods wait meanwhile.\n"
     "Needs root.\n"
     "\n"
     "Example:\n"
     "  berth plugins restart content\n",
     plugins_restart, false},
    {"replace", "ID [--path BIN]", "Replace a plugin with a new binary",
     "Starts the new binary, switches requests to it once it has registered, and\n"
     "drains and stops the old process. Without --path the configured binary is\n"
     "started again. BIN must be in berthd's plugin directory. Needs root.\n"
     "\n"
     "Options:\n"
     "  --path BIN   the new plugin executable\n"
     "\n"
     "Example:\n"
     "  berth plugins replace content --path /usr/libexec/berth/berth-content\n",
     plugins_replace, false},
    {0},
};

int cmd_plugins(int argc, char **argv)
{
    return cli_dispatch(argc, argv, "plugins", "List and manage plugins", plugins_cmds);
}
