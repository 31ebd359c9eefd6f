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
    "Display events as they happen, one per line like ctr: TIMESTAMP NAMESPACE\n"
    "TOPIC EVENT-JSON. Runs until Ctrl-C. Without a prefix every topic is shown;\n"
    "with -n/--namespace (or $BERTH_NAMESPACE) only that namespace's events are.\n"
    "ctr's filters topic==TOPIC and namespace==NAME are understood too (topic==\n"
    "matches as a prefix).\n"
    "\n"
    "Options:\n"
    "  --format FORMAT   table (default) or json: one object per line, {topic,\n"
    "                    namespace, timestamp (ns since the epoch), event, seq,\n"
    "                    publisher, boot_id}\n"
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
    /* Topic prefixes, and the filters ctr users type: topic==T (shown as
     * the prefix T) and namespace==NS (like -n NS). */
    const char *ns = cli_ns_explicit ? cli_g.ns : NULL;
    char **prefixes = calloc((size_t)(argc - optind) + 1, sizeof(char *));
    if (!prefixes)
        cli_die("out of memory");
    int np = 0;
    for (int i = optind; i < argc; i++) {
        char *a = argv[i];
        if (!strncmp(a, "topic==", 7) || !strncmp(a, "namespace==", 11)) {
            bool topic = a[0] == 't';
            char *v = a + (topic ? 7 : 11);
            size_t vl = strlen(v);
            if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                v[vl - 1] = 0;
                v++;
            }
            if (!topic) {
                ns = v;
                continue;
            }
            a = v;
        } else if (a[0] != '/' && strpbrk(a, "=~!")) {
            cli_die("unsupported filter \"%s\": `berth events` takes topic prefixes (/tasks/), "
                    "topic==TOPIC and namespace==NAME",
                    a);
        }
        if (a[0] != '/')
            cli_die("topic prefix \"%s\" must start with /, e.g. /tasks/ or /images/create", a);
        prefixes[np++] = a;
    }

    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, ns ? 2 : 1);
    berth_mp_pack_str(&b.pk, "filters");
    msgpack_pack_array(&b.pk, (uint32_t)np);
    for (int i = 0; i < np; i++)
        berth_mp_pack_str(&b.pk, prefixes[i]);
    free(prefixes);
    if (ns)
        berth_mp_kv_str(&b.pk, "namespace", ns);
    cli_call("events.subscribe", &b, on_event, NULL, &ctx);
    berth_mpbuf_destroy(&b);
    return 0;
}
