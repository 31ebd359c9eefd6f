/* SPDX-License-Identifier: Apache-2.0 */
/* `berth events [TOPIC-PREFIX...]`: streams events.subscribe and prints one
 * line per event like `ctr events` (TIMESTAMP NAMESPACE TOPIC EVENT-JSON)
 * until Ctrl-C. */
#include <getopt.h>
#include <string.h>

#include "cli.h"

static const char events_help[] =
    "Usage: berth events [--format json] [TOPIC-PREFIX...]\n"
    "\n"
    "Display events as they happen, one per line: TIMESTAMP NAMESPACE TOPIC EVENT.\n"
    "Runs until Ctrl-C. Without a prefix every topic is shown; with -n/--namespace\n"
    "(or $BERTH_NAMESPACE) only that namespace's events are.\n"
    "\n"
    "Options:\n"
    "  --format FORMAT   table (default) or json (one JSON object per line)\n"
    "\n"
    "Examples:\n"
    "  berth events\n"
    "  berth events /tasks/ /containers/\n"
    "  berth events --format json /plugins/ | jq -c .\n";

typedef struct {
    bool json;
} events_ctx_t;

static int on_event(const msgpack_object *data, void *user)
{
    events_ctx_t *ctx = user;
    if (!data)
        return 0;
    if (data->type != MSGPACK_OBJECT_MAP)
        return 0;
    uint64_t dropped = cli_u64(data, "dropped");
    if (dropped)
        fprintf(stderr, "berth: %llu events were dropped because this subscriber fell behind\n",
                (unsigned long long)dropped);
    if (!berth_mp_get(data, "topic"))
        return 0;
    if (ctx->json) {
        cli_print_json_compact(data, stdout);
        fputc('\n', stdout);
    } else {
        int64_t ts = 0;
        berth_mp_get_i64(data, "timestamp", &ts, NULL);
        _cleanup_free_ char *ns = cli_str(data, "namespace");
        _cleanup_free_ char *topic = cli_str(data, "topic");
        const msgpack_object *ev = berth_mp_get(data, "event");
        msgpack_object empty = {.type = MSGPACK_OBJECT_MAP};
        printf("%s %s %s ", cli_go_time(ts), *ns ? ns : "-", topic);
        cli_print_json_compact(ev ? ev : &empty, stdout);
        fputc('\n', stdout);
    }
    /* Lines go out as they come, also into a pipe. */
    fflush(stdout);
    return 0;
}

int cmd_events(int argc, char **argv)
{
    static const struct option opts[] = {
        {"format", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *format = NULL;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'f':
            format = optarg;
            break;
        case 'h':
            fputs(events_help, stdout);
            return 0;
        default:
            cli_flag_error("events", o, argv);
        }
    }
    events_ctx_t ctx = {.json = cli_format_is_json(format)};
    for (int i = optind; i < argc; i++)
        if (argv[i][0] != '/')
            cli_die("topic prefix \"%s\" must start with /, e.g. /tasks/ or /images/create",
                    argv[i]);

    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, cli_ns_explicit ? 2 : 1);
    berth_mp_pack_str(&b.pk, "filters");
    msgpack_pack_array(&b.pk, (uint32_t)(argc - optind));
    for (int i = optind; i < argc; i++)
        berth_mp_pack_str(&b.pk, argv[i]);
    if (cli_ns_explicit)
        berth_mp_kv_str(&b.pk, "namespace", cli_g.ns);
    cli_call("events.subscribe", &b, on_event, NULL, &ctx);
    berth_mpbuf_destroy(&b);
    return 0;
}
