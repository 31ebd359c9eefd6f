/* SPDX-License-Identifier: Apache-2.0 */
/* `berth namespaces|namespace|ns create|ls|rm|label`, like `ctr namespaces`:
 * namespace records served by berth-metadata (namespaces.*). */
#include <getopt.h>
#include <string.h>

#include "cli.h"

static void no_flags(const char *cmd, int argc, char **argv)
{
    static const struct option opts[] = {{0}};
    int o;
    optind = 0;
    opterr = 0;
    /* "+": stop at the first non-flag, so label values may start with '-'. */
    while ((o = getopt_long(argc, argv, "+:", opts, NULL)) != -1)
        cli_flag_error(cmd, o, argv);
}

/* Labels as ctr prints them: k=v,k2=v2 sorted; nothing when there are none. */
static const char *labels_or_blank(const msgpack_object *labels)
{
    const char *s = cli_labels_str(labels);
    return strcmp(s, "-") ? s : "";
}

static int ns_create(int argc, char **argv)
{
    no_flags("namespaces create", argc, argv);
    if (argc - optind < 1)
        cli_die("`berth namespaces create` needs a NAME (and optional KEY=VALUE labels)");
    berth_mpbuf_t b;
    cli_params_begin(&b, 2);
    berth_mp_kv_str(&b.pk, "name", argv[optind]);
    berth_mp_pack_str(&b.pk, "labels");
    cli_pack_labels(&b.pk, argv + optind + 1, argc - optind - 1);
    cli_call("namespaces.create", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    return 0;
}

static int ns_ls(int argc, char **argv)
{
    bool quiet = false, json = false;
    optind = cli_list_flags("namespaces ls", argc, argv, &quiet, &json);
    if (optind < argc)
        cli_die("`berth namespaces ls` takes no arguments (got \"%s\")", argv[optind]);
    berth_mpbuf_t b;
    cli_params_begin(&b, 0);
    const msgpack_object *res = cli_call("namespaces.list", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *list = NULL;
    _cleanup_error_ berth_error_t *err = NULL;
    if (berth_mp_get_array(res, "namespaces", &list, &err) < 0 || !list)
        cli_die("berthd answered namespaces.list without a list");
    if (json) {
        cli_print_json(list, stdout);
        return 0;
    }
    uint32_t n = list->via.array.size;
    if (quiet) {
        for (uint32_t i = 0; i < n; i++) {
            _cleanup_free_ char *name = cli_str(&list->via.array.ptr[i], "name");
            puts(name);
        }
        return 0;
    }
    cli_table_t *t = cli_table_new(2, "NAME", "LABELS");
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *ns = &list->via.array.ptr[i];
        _cleanup_free_ char *name = cli_str(ns, "name");
        cli_table_row(t, name, labels_or_blank(berth_mp_get(ns, "labels")));
    }
    cli_table_print(t, stdout);
    return 0;
}

static int ns_rm(int argc, char **argv)
{
    no_flags("namespaces rm", argc, argv);
    if (argc - optind < 1)
        cli_die("`berth namespaces rm` needs at least one NAME");
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 1);
        berth_mp_kv_str(&b.pk, "name", argv[i]);
        _cleanup_error_ berth_error_t *err = NULL;
        const msgpack_object *res;
        int r = cli_try_call("namespaces.delete", &b, NULL, NULL, NULL, &res, &err);
        berth_mpbuf_destroy(&b);
        /* Like ctr: an absent namespace is already removed; other errors are
         * reported and the rest still go. */
        if (r < 0 && err->code != BERTH_E_NOT_FOUND) {
            fprintf(stderr, "berth: unable to delete %s: %s\n", argv[i], err->message);
            rc = 1;
            continue;
        }
        puts(argv[i]);
    }
    return rc;
}

static int ns_label(int argc, char **argv)
{
    no_flags("namespaces label", argc, argv);
    if (argc - optind < 1)
        cli_die("`berth namespaces label` needs a NAME and KEY=VALUE labels");
    int nl = argc - optind - 1;
    char **kv = argv + optind + 1;
    berth_mpbuf_t b;
    cli_params_begin(&b, 3);
    berth_mp_kv_str(&b.pk, "name", argv[optind]);
    berth_mp_pack_str(&b.pk, "labels");
    cli_pack_labels(&b.pk, kv, nl);
    /* Only the named labels change: field paths labels.<key>; an empty value
     * removes the label (like ctr). */
    berth_mp_pack_str(&b.pk, "fields");
    msgpack_pack_array(&b.pk, (uint32_t)nl);
    for (int i = 0; i < nl; i++) {
        size_t kl;
        const char *v;
        if (cli_label_split(kv[i], &kl, &v) < 0)
            cli_die("invalid label \"%s\": expected KEY=VALUE with a non-empty key", kv[i]);
        char field[4200];
        if (kl + 8 > sizeof(field))
            cli_die("label key too long (%zu bytes)", kl);
        memcpy(field, "labels.", 7);
        memcpy(field + 7, kv[i], kl);
        berth_mp_pack_strn(&b.pk, field, 7 + kl);
    }
    const msgpack_object *res = cli_call("namespaces.update", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const char *s = labels_or_blank(berth_mp_get(berth_mp_get(res, "namespace"), "labels"));
    if (*s)
        puts(s);
    return 0;
}

static const cli_subcmd_t ns_cmds[] = {
    {"create|c", "NAME [KEY=VALUE...]", "Create a namespace",
     "Names match [a-z0-9]([a-z0-9._-]*[a-z0-9])? and have at most 76 characters.\n"
     "Namespaces are also created by the first record made in them.\n"
     "\n"
     "Example:\n"
     "  berth namespaces create dev team=web\n",
     ns_create, false},
    {"list|ls", "[-q] [--format json]", "List namespaces",
     "Columns: NAME LABELS, like ctr.\n"
     "\n"
     "Options:\n"
     "  -q, --quiet       print only names\n"
     "  --format FORMAT   table (default) or json: an array of {name, labels,\n"
     "                    created_at, updated_at (ns since the epoch)}\n",
     ns_ls, false},
    {"remove|rm", "NAME...", "Remove empty namespaces",
     "A namespace that still has images, containers, content, snapshots, leases or\n"
     "ingests is refused with the list of what remains. An absent one counts as\n"
     "removed (like ctr). Each removed name is printed.\n",
     ns_rm, false},
    {"label", "NAME [KEY=VALUE...]", "Set or remove labels of a namespace",
     "KEY= (empty value) removes the label; other labels stay. The resulting labels\n"
     "are printed.\n",
     ns_label, false},
    {0},
};

int cmd_namespaces(int argc, char **argv)
{
    return cli_dispatch(argc, argv, "namespaces", "Manage namespaces", ns_cmds);
}
