/* SPDX-License-Identifier: Apache-2.0 */
/* `berth leases|lease create|ls|rm`, like `ctr leases`: leases keep content,
 * snapshots and ingests from garbage collection until they are removed or
 * expire (leases.* of berth-metadata). */
#include <getopt.h>
#include <string.h>

#include "cli.h"

static int lease_create(int argc, char **argv)
{
    static const struct option opts[] = {
        {"id", required_argument, NULL, 'i'},
        {"expires", required_argument, NULL, 'x'},
        {0},
    };
    const char *id = NULL, *expires = "24h";
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":x:", opts, NULL)) != -1) {
        if (o == 'i')
            id = optarg;
        else if (o == 'x')
            expires = optarg;
        else
            cli_flag_error("leases create", o, argv);
    }
    uint32_t ms = 0;
    if (cli_parse_duration_ms(expires, &ms) < 0)
        cli_die("invalid --expires \"%s\": expected a duration like 24h, 90m or 30s (0 = never)",
                expires);
    int nl = argc - optind;
    berth_mpbuf_t b;
    cli_params_begin(&b, (id ? 1 : 0) + (ms ? 1 : 0) + 1);
    if (id)
        berth_mp_kv_str(&b.pk, "id", id);
    if (ms)
        berth_mp_kv_i64(&b.pk, "expire", berth_now_ns() + (int64_t)ms * 1000000LL);
    berth_mp_pack_str(&b.pk, "labels");
    cli_pack_labels(&b.pk, argv + optind, nl);
    const msgpack_object *res = cli_call("leases.create", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    _cleanup_free_ char *got = cli_str(berth_mp_get(res, "lease"), "id");
    puts(got);
    return 0;
}

static int lease_ls(int argc, char **argv)
{
    bool quiet = false, json = false;
    int first = cli_list_flags("leases ls", argc, argv, &quiet, &json);
    const msgpack_object *res = cli_call_filtered("leases.list", argv + first, argc - first);
    const msgpack_object *list = NULL;
    _cleanup_error_ berth_error_t *err = NULL;
    if (berth_mp_get_array(res, "leases", &list, &err) < 0 || !list)
        cli_die("berthd answered leases.list without a list");
    if (json) {
        cli_print_json(list, stdout);
        return 0;
    }
    uint32_t n = list->via.array.size;
    if (quiet) {
        for (uint32_t i = 0; i < n; i++) {
            _cleanup_free_ char *id = cli_str(&list->via.array.ptr[i], "id");
            puts(id);
        }
        return 0;
    }
    cli_table_t *t = cli_table_new(3, "ID", "CREATED AT", "LABELS");
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *l = &list->via.array.ptr[i];
        _cleanup_free_ char *id = cli_str(l, "id");
        int64_t created = 0;
        berth_mp_get_i64(l, "created_at", &created, NULL);
        const char *labels = cli_labels_str(berth_mp_get(l, "labels"));
        cli_table_row(t, id, cli_rfc3339(created), strcmp(labels, "-") ? labels : "");
    }
    cli_table_print(t, stdout);
    return 0;
}

static int lease_rm(int argc, char **argv)
{
    static const struct option opts[] = {
        {"sync", no_argument, NULL, 's'},
        {0},
    };
    bool sync = false;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (o == 's')
            sync = true;
        else
            cli_flag_error("leases rm", o, argv);
    }
    if (argc - optind < 1)
        cli_die("`berth leases rm` needs at least one lease ID (see `berth leases ls -q`)");
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 2);
        berth_mp_kv_str(&b.pk, "id", argv[i]);
        berth_mp_kv_bool(&b.pk, "sync", sync);
        _cleanup_error_ berth_error_t *err = NULL;
        const msgpack_object *res;
        int r = cli_try_call("leases.delete", &b, NULL, NULL, NULL, &res, &err);
        berth_mpbuf_destroy(&b);
        if (r < 0) {
            fprintf(stderr, "berth: unable to delete lease %s: %s\n", argv[i], err->message);
            rc = 1;
            continue;
        }
        puts(argv[i]);
    }
    return rc;
}

static const cli_subcmd_t lease_cmds[] = {
    {"create", "[--id ID] [-x|--expires DURATION] [KEY=VALUE...]",
     "Create a lease and print its id",
     "The lease keeps what is added to it (content, snapshots, ingests) from garbage\n"
     "collection until it is removed or expires. Requests that carry the lease add\n"
     "what they create to it.\n"
     "\n"
     "Options:\n"
     "  --id ID               the lease id (default: generated)\n"
     "  -x, --expires DUR     expiry, e.g. 24h (the default), 90m; 0 = never\n"
     "\n"
     "The expiry is shown as the label berth.io/gc.expire.\n",
     lease_create, false},
    {"list|ls", "[-q] [--format json] [FILTER...]", "List leases",
     "Columns: ID, CREATED AT (RFC 3339, UTC), LABELS, like ctr.\n"
     "\n"
     "Options:\n"
     "  -q, --quiet       print only ids\n"
     "  --format FORMAT   table (default) or json: an array of {id, labels,\n"
     "                    created_at, expire (ns since the epoch; absent: never)}\n"
     "\n"
     "Filters: id==ID, labels.\"k\"==v, labels.k (presence).\n",
     lease_ls, false},
    {"remove|rm|delete|del", "ID... [--sync]", "Remove leases",
     "What the leases held becomes collectable. With --sync, wait for a garbage\n"
     "collection that includes them.\n",
     lease_rm, false},
    {0},
};

int cmd_leases(int argc, char **argv)
{
    return cli_dispatch(argc, argv, "leases", "Manage leases", lease_cmds);
}
