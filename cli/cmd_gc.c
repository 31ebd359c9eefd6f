/* SPDX-License-Identifier: Apache-2.0 */
/* `berth gc`: run a garbage collection now and print what it freed
 * (gc.run), or show the last collection and the scheduler's state
 * (`--status`, gc.status). */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "cli.h"

static const char gc_help[] =
    "Usage: berth gc [--status] [--format json]\n"
    "\n"
    "Run garbage collection now and print what it freed: blobs and snapshots that\n"
    "no namespace references any more (no image, container, lease, ingest or\n"
    "gc.root label keeps them) are deleted from the content store and the\n"
    "snapshotter. berth-gc also collects on its own after deletions; see\n"
    "docs/gc.md for what is kept and for the scheduler settings.\n"
    "\n"
    "Options:\n"
    "  --status          show the last collection and the scheduler's state\n"
    "                    instead of running a collection\n"
    "  --format FORMAT   table (default) or json\n"
    "\n"
    "Examples:\n"
    "  berth gc\n"
    "  berth gc --status\n"
    "  berth gc --format json | jq .stats.bytes_freed\n";

static const char *fmt_duration(uint64_t ns)
{
    static char bufs[4][32];
    static int slot;
    char *b = bufs[slot++ % 4];
    if (ns < 1000000)
        snprintf(b, 32, "%.0fµs", ns / 1e3);
    else if (ns < 1000000000)
        snprintf(b, 32, "%.1fms", ns / 1e6);
    else
        snprintf(b, 32, "%.2fs", ns / 1e9);
    return b;
}

static void print_stats(const msgpack_object *st)
{
    uint64_t content = cli_u64(st, "content_deleted");
    uint64_t snaps = cli_u64(st, "snapshots_deleted");
    uint64_t orphans = cli_u64(st, "orphans_deleted");
    uint64_t bytes = cli_u64(st, "bytes_freed");
    uint64_t failed = cli_u64(st, "failed");
    uint64_t pending = cli_u64(st, "pending");
    printf("content deleted:    %" PRIu64 "\n", content);
    printf("snapshots deleted:  %" PRIu64 "\n", snaps);
    if (orphans)
        printf("orphans deleted:    %" PRIu64 " (files without a record, counted above)\n",
               orphans);
    printf("bytes freed:        %s\n", cli_human_size(bytes));
    printf("duration:           %s (metadata lock held %s)\n",
           fmt_duration(cli_u64(st, "duration_ns")), fmt_duration(cli_u64(st, "lock_ns")));
    if (failed)
        printf("left for next run:  %" PRIu64 " (%" PRIu64 " deletions failed)\n", pending, failed);
    else if (pending)
        printf("left for next run:  %" PRIu64 " (their backend is not running)\n", pending);
}

static int gc_status(bool json)
{
    const msgpack_object *res = cli_call("gc.status", NULL, NULL, NULL, NULL);
    if (json) {
        cli_print_json(res, stdout);
        return 0;
    }
    const msgpack_object *last = berth_mp_get(res, "last");
    if (!last || last->type != MSGPACK_OBJECT_MAP) {
        printf("last collection:    none since berth-gc started\n");
    } else {
        int64_t fin = 0;
        berth_error_t *err = NULL;
        berth_mp_get_i64(last, "finished_at", &fin, &err);
        berth_error_free(&err);
        printf("last collection:    %s (%s ago)\n", cli_rfc3339(fin), cli_human_age(fin));
        _cleanup_free_ char *e = cli_str(last, "error");
        printf("result:             %s%s\n", *e ? "incomplete: " : "ok", e);
        print_stats(last);
    }
    bool running = false;
    berth_error_t *err = NULL;
    berth_mp_get_bool(res, "running", &running, &err);
    berth_error_free(&err);
    printf("collections:        %" PRIu64 " since start (%" PRIu64 " incomplete)\n",
           cli_u64(res, "collections"), cli_u64(res, "failed_collections"));
    if (running) {
        printf("next collection:    running now\n");
    } else {
        const msgpack_object *next = berth_mp_get(res, "next_in_ns");
        if (next && next->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            printf("next collection:    in %s\n", fmt_duration(next->via.u64));
        else
            printf("next collection:    when something is deleted\n");
    }
    printf("changes since last: %" PRIu64 " deletions, %" PRIu64 " other changes\n",
           cli_u64(res, "deletions"),
           cli_u64(res, "mutations") >= cli_u64(res, "deletions")
               ? cli_u64(res, "mutations") - cli_u64(res, "deletions")
               : 0);
    return 0;
}

int cmd_gc(int argc, char **argv)
{
    static const struct option opts[] = {
        {"status", no_argument, NULL, 's'},
        {"format", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *format = NULL;
    bool status = false;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            status = true;
            break;
        case 'f':
            format = optarg;
            break;
        case 'h':
            fputs(gc_help, stdout);
            return 0;
        default:
            cli_flag_error("gc", o, argv);
        }
    }
    if (optind < argc) {
        if (strcmp(argv[optind], "help") == 0) {
            fputs(gc_help, stdout);
            return 0;
        }
        cli_die("`berth gc` takes no arguments (got \"%s\"); run `berth gc --help`", argv[optind]);
    }
    bool json = cli_format_is_json(format);
    if (status)
        return gc_status(json);
    const msgpack_object *res = cli_call("gc.run", NULL, NULL, NULL, NULL);
    if (json) {
        cli_print_json(res, stdout);
        return 0;
    }
    const msgpack_object *st = berth_mp_get(res, "stats");
    if (!st || st->type != MSGPACK_OBJECT_MAP)
        cli_die("gc.run returned no stats; is berth-gc up to date?");
    print_stats(st);
    return 0;
}
