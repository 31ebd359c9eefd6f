/* SPDX-License-Identifier: Apache-2.0 */
/* `berth snapshots|snapshot prepare|view|commit|mounts|rm|ls|info|usage|tree|
 * label`, like `ctr snapshots`. Records live in metadata (snapshots.*), which
 * calls the overlayfs backend for the filesystem work. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* ---- helpers --------------------------------------------------------------- */

/* The flags of the snapshot commands; each command accepts only those in
 * the mask it passes (F_*), anything else is an unknown flag. */
typedef struct {
    const char *target;
    bool mounts_json;
    char **labels;
    int nlabels;
    bool json;
    bool bytes;
    bool quiet;
} snap_flags_t;

enum {
    F_TARGET = 1u << 0, /* --target DIR, -t DIR */
    F_MOUNTS = 1u << 1, /* --mounts */
    F_LABEL = 1u << 2,  /* --label K=V */
    F_FORMAT = 1u << 3, /* --format table|json */
    F_BYTES = 1u << 4,  /* -b */
    F_QUIET = 1u << 5,  /* -q, --quiet */
};

static int parse_flags(const char *cmd, int argc, char **argv, snap_flags_t *f, unsigned allowed)
{
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'}, {"mounts", no_argument, NULL, 'm'},
        {"label", required_argument, NULL, 'l'},  {"format", required_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},        {0},
    };
    static const struct {
        int opt;
        unsigned flag;
        const char *name;
    } need[] = {{'t', F_TARGET, "--target"}, {'m', F_MOUNTS, "--mounts"},
                {'l', F_LABEL, "--label"},   {'f', F_FORMAT, "--format"},
                {'b', F_BYTES, "-b"},        {'q', F_QUIET, "--quiet"}};
    memset(f, 0, sizeof(*f));
    int o;
    optind = 0;
    opterr = 0;
    /* "-b" is a short flag (ctr spells it so); "--b" still works. */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--b") == 0)
            argv[i] = "-b";
    while ((o = getopt_long(argc, argv, ":t:bq", opts, NULL)) != -1) {
        for (size_t k = 0; k < BERTH_ARRAY_SIZE(need); k++)
            if (need[k].opt == o && !(allowed & need[k].flag))
                cli_die("unknown flag %s for `berth %s`; run `berth %s --help`", need[k].name, cmd,
                        cmd);
        switch (o) {
        case 't':
            f->target = optarg;
            break;
        case 'm':
            f->mounts_json = true;
            break;
        case 'l':
            f->labels = realloc(f->labels, sizeof(char *) * (size_t)(f->nlabels + 1));
            if (!f->labels)
                cli_die("out of memory");
            f->labels[f->nlabels++] = optarg;
            break;
        case 'f':
            f->json = cli_format_is_json(optarg);
            break;
        case 'b':
            f->bytes = true;
            break;
        case 'q':
            f->quiet = true;
            break;
        default:
            cli_flag_error(cmd, o, argv);
        }
    }
    return optind;
}

static const char *kind_name(const msgpack_object *info)
{
    const msgpack_object *k = berth_mp_get(info, "kind");
    if (berth_mp_str_eq(k, "committed"))
        return "Committed";
    if (berth_mp_str_eq(k, "view"))
        return "View";
    if (berth_mp_str_eq(k, "active"))
        return "Active";
    static char buf[32];
    if (k && k->type == MSGPACK_OBJECT_STR) {
        snprintf(buf, sizeof(buf), "%.*s", (int)k->via.str.size, k->via.str.ptr);
        return buf;
    }
    return "Unknown";
}

/* Prints mounts as shell commands, like ctr's printMounts. A mount with a
 * `chdir` (relative lowerdirs of a long parent chain) is run from there. */
static void print_mounts(const char *target, const msgpack_object *mounts)
{
    if (!mounts || mounts->type != MSGPACK_OBJECT_ARRAY)
        return;
    char abs[PATH_MAX];
    for (uint32_t i = 0; i < mounts->via.array.size; i++) {
        const msgpack_object *m = &mounts->via.array.ptr[i];
        char *type = cli_str(m, "type"), *source = cli_str(m, "source"),
             *chdir_ = cli_str(m, "chdir");
        const msgpack_object *opts = berth_mp_get(m, "options");
        const char *t = target;
        if (*chdir_ && target[0] != '/') {
            char cwd[PATH_MAX];
            if (getcwd(cwd, sizeof(cwd)) &&
                snprintf(abs, sizeof(abs), "%s/%s", cwd, target) < (int)sizeof(abs))
                t = abs;
        }
        if (*chdir_)
            printf("(cd %s && ", chdir_);
        printf("mount -t %s %s %s -o ", type, source, t);
        for (uint32_t k = 0; opts && opts->type == MSGPACK_OBJECT_ARRAY && k < opts->via.array.size;
             k++) {
            const msgpack_object *s = &opts->via.array.ptr[k];
            if (s->type == MSGPACK_OBJECT_STR)
                printf("%s%.*s", k ? "," : "", (int)s->via.str.size, s->via.str.ptr);
        }
        printf("%s\n", *chdir_ ? ")" : "");
        free(type);
        free(source);
        free(chdir_);
    }
}

static void pack_labels_opt(berth_mpbuf_t *b, const snap_flags_t *f)
{
    if (!f->nlabels)
        return;
    berth_mp_pack_str(&b->pk, "labels");
    cli_pack_labels(&b->pk, f->labels, f->nlabels);
}

/* ---- prepare / view ------------------------------------------------------- */

static int prepare_or_view(int argc, char **argv, const char *method, const char *cmd)
{
    snap_flags_t f;
    int first = parse_flags(cmd, argc, argv, &f, F_TARGET | F_MOUNTS | F_LABEL);
    int n = argc - first;
    if (n < 1 || n > 2)
        cli_die("`berth %s` needs KEY [PARENT]", cmd);
    berth_mpbuf_t b;
    cli_params_begin(&b, 1 + (n == 2) + (f.nlabels > 0));
    berth_mp_kv_str(&b.pk, "key", argv[first]);
    if (n == 2)
        berth_mp_kv_str(&b.pk, "parent", argv[first + 1]);
    pack_labels_opt(&b, &f);
    const msgpack_object *res = cli_call(method, &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *mounts = berth_mp_get(res, "mounts");
    if (f.target)
        print_mounts(f.target, mounts);
    if (f.mounts_json && mounts)
        cli_print_json(mounts, stdout);
    free(f.labels);
    return 0;
}

static int snap_prepare(int argc, char **argv)
{
    return prepare_or_view(argc, argv, "snapshots.prepare", "snapshots prepare");
}

static int snap_view(int argc, char **argv)
{
    return prepare_or_view(argc, argv, "snapshots.view", "snapshots view");
}

/* ---- commit / mounts / rm ------------------------------------------------- */

static int snap_commit(int argc, char **argv)
{
    snap_flags_t f;
    int first = parse_flags("snapshots commit", argc, argv, &f, F_LABEL);
    if (argc - first != 2)
        cli_die("`berth snapshots commit` needs NAME KEY");
    berth_mpbuf_t b;
    cli_params_begin(&b, 2 + (f.nlabels > 0));
    berth_mp_kv_str(&b.pk, "name", argv[first]);
    berth_mp_kv_str(&b.pk, "key", argv[first + 1]);
    pack_labels_opt(&b, &f);
    cli_call("snapshots.commit", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    free(f.labels);
    return 0;
}

static int snap_mounts(int argc, char **argv)
{
    snap_flags_t f;
    int first = parse_flags("snapshots mounts", argc, argv, &f, 0);
    if (argc - first != 2)
        cli_die("`berth snapshots mounts` needs TARGET KEY");
    berth_mpbuf_t b;
    cli_params_begin(&b, 1);
    berth_mp_kv_str(&b.pk, "key", argv[first + 1]);
    const msgpack_object *res = cli_call("snapshots.mounts", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    print_mounts(argv[first], berth_mp_get(res, "mounts"));
    return 0;
}

static int snap_rm(int argc, char **argv)
{
    snap_flags_t f;
    int first = parse_flags("snapshots rm", argc, argv, &f, 0);
    if (first >= argc)
        cli_die("`berth snapshots rm` needs one or more keys (see `berth snapshots ls`)");
    int rc = 0;
    for (int i = first; i < argc; i++) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 1);
        berth_mp_kv_str(&b.pk, "key", argv[i]);
        _cleanup_error_ berth_error_t *err = NULL;
        int r = cli_try_call("snapshots.remove", &b, NULL, NULL, NULL, NULL, &err);
        berth_mpbuf_destroy(&b);
        if (r < 0) {
            fprintf(stderr, "berth: failed to remove snapshot %s: %s\n", argv[i], err->message);
            rc = 1;
        }
    }
    return rc;
}

/* ---- ls / info / tree / usage / label ------------------------------------ */

/* snapshots.list; returns the borrowed infos array (valid until the next call). */
static const msgpack_object *list_infos(char **filters, int nf)
{
    const msgpack_object *res = cli_call_filtered("snapshots.list", filters, nf);
    const msgpack_object *infos = berth_mp_get(res, "infos");
    if (infos && infos->type != MSGPACK_OBJECT_ARRAY)
        cli_die("berthd answered snapshots.list without a list");
    return infos;
}

static int snap_ls(int argc, char **argv)
{
    snap_flags_t f;
    int first = parse_flags("snapshots ls", argc, argv, &f, F_FORMAT | F_QUIET);
    const msgpack_object *infos = list_infos(argv + first, argc - first);
    if (cli_list_plain(infos, f.json, f.quiet, "name"))
        return 0;
    cli_table_t *t = cli_table_new(3, "KEY", "PARENT", "KIND");
    for (uint32_t i = 0; infos && i < infos->via.array.size; i++) {
        const msgpack_object *in = &infos->via.array.ptr[i];
        char *name = cli_str(in, "name"), *parent = cli_str(in, "parent");
        cli_table_row(t, name, parent, kind_name(in));
        free(name);
        free(parent);
    }
    cli_table_print(t, stdout);
    return 0;
}

static int snap_info(int argc, char **argv)
{
    snap_flags_t f;
    int first = parse_flags("snapshots info", argc, argv, &f, F_FORMAT);
    if (argc - first != 1)
        cli_die("`berth snapshots info` needs KEY");
    berth_mpbuf_t b;
    cli_params_begin(&b, 1);
    berth_mp_kv_str(&b.pk, "key", argv[first]);
    const msgpack_object *res = cli_call("snapshots.stat", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *info = berth_mp_get(res, "info");
    if (!info)
        cli_die("berthd answered snapshots.stat without info");
    if (f.json) {
        cli_print_json(info, stdout);
        return 0;
    }
    /* ctr's shape (json.MarshalIndent of snapshots.Info): Kind, Name,
     * Parent and Labels when set, Created, Updated in RFC3339Nano. */
    _cleanup_free_ char *name = cli_str(info, "name");
    _cleanup_free_ char *parent = cli_str(info, "parent");
    const msgpack_object *labels = berth_mp_get(info, "labels");
    bool has_labels = labels && labels->type == MSGPACK_OBJECT_MAP && labels->via.map.size;
    int64_t cn = 0, un = 0;
    berth_mp_get_i64(info, "created_at", &cn, NULL);
    berth_mp_get_i64(info, "updated_at", &un, NULL);
    berth_mpbuf_t o;
    berth_mpbuf_init(&o);
    msgpack_pack_map(&o.pk, 4 + (*parent ? 1 : 0) + (has_labels ? 1 : 0));
    berth_mp_kv_str(&o.pk, "Kind", kind_name(info));
    berth_mp_kv_str(&o.pk, "Name", name);
    if (*parent)
        berth_mp_kv_str(&o.pk, "Parent", parent);
    if (has_labels) {
        berth_mp_pack_str(&o.pk, "Labels");
        msgpack_pack_object(&o.pk, *labels);
    }
    berth_mp_kv_str(&o.pk, "Created", cli_rfc3339_nano(cn));
    berth_mp_kv_str(&o.pk, "Updated", cli_rfc3339_nano(un));
    cli_print_packed_json(o.buf.data, o.buf.size);
    berth_mpbuf_destroy(&o);
    return 0;
}

static void print_node(const msgpack_object *infos, uint32_t idx, int level, int depth_guard)
{
    const msgpack_object *in = &infos->via.array.ptr[idx];
    char *name = cli_str(in, "name");
    for (int i = 0; i < level; i++)
        fputs("  ", stdout);
    printf("%s %s\n", level > 0 ? "\\_" : "", name);
    if (depth_guard > 4096) {
        free(name);
        return;
    }
    for (uint32_t k = 0; k < infos->via.array.size; k++) {
        char *p = cli_str(&infos->via.array.ptr[k], "parent");
        if (*p && strcmp(p, name) == 0)
            print_node(infos, k, level + 1, depth_guard + 1);
        free(p);
    }
    free(name);
}

static int snap_tree(int argc, char **argv)
{
    snap_flags_t f;
    int first = parse_flags("snapshots tree", argc, argv, &f, 0);
    if (argc != first)
        cli_die("`berth snapshots tree` takes no arguments");
    const msgpack_object *infos = list_infos(NULL, 0);
    for (uint32_t i = 0; infos && i < infos->via.array.size; i++) {
        char *p = cli_str(&infos->via.array.ptr[i], "parent");
        if (!*p)
            print_node(infos, i, 0, 0);
        free(p);
    }
    return 0;
}

static int snap_usage(int argc, char **argv)
{
    snap_flags_t f;
    int first = parse_flags("snapshots usage", argc, argv, &f, F_BYTES | F_FORMAT);
    char **keys = NULL;
    int nk = argc - first;
    if (nk == 0) {
        const msgpack_object *infos = list_infos(NULL, 0);
        uint32_t n = infos ? infos->via.array.size : 0;
        keys = calloc(n + 1, sizeof(char *));
        for (uint32_t i = 0; i < n; i++)
            keys[i] = cli_str(&infos->via.array.ptr[i], "name");
        nk = (int)n;
    } else {
        keys = calloc((size_t)nk + 1, sizeof(char *));
        for (int i = 0; i < nk; i++)
            keys[i] = strdup(argv[first + i]);
    }
    cli_table_t *t = cli_table_new(3, "KEY", "SIZE", "INODES");
    /* --format json: [{key, size, inodes}], sizes in bytes. */
    berth_mpbuf_t js;
    berth_mpbuf_init(&js);
    int rc = 0, rows = 0;
    for (int i = 0; i < nk; i++) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 1);
        berth_mp_kv_str(&b.pk, "key", keys[i]);
        const msgpack_object *res = NULL;
        _cleanup_error_ berth_error_t *err = NULL;
        int r = cli_try_call("snapshots.usage", &b, NULL, NULL, NULL, &res, &err);
        berth_mpbuf_destroy(&b);
        if (r < 0) {
            fprintf(stderr, "berth: usage of %s: %s\n", keys[i], err->message);
            rc = 1;
            continue;
        }
        uint64_t size = cli_u64(res, "size"), inodes = cli_u64(res, "inodes");
        rows++;
        msgpack_pack_map(&js.pk, 3);
        berth_mp_kv_str(&js.pk, "key", keys[i]);
        berth_mp_kv_u64(&js.pk, "size", size);
        berth_mp_kv_u64(&js.pk, "inodes", inodes);
        char sz[32], in[32];
        /* ctr prints progress.Bytes ("4.0 KiB"), or bytes with -b. */
        if (f.bytes)
            snprintf(sz, sizeof(sz), "%llu", (unsigned long long)size);
        else
            snprintf(sz, sizeof(sz), "%s", cli_bytes(size));
        snprintf(in, sizeof(in), "%llu", (unsigned long long)inodes);
        cli_table_row(t, keys[i], sz, in);
    }
    if (f.json) /* the rows were packed one after another */
        cli_print_packed_array(&js, (uint32_t)rows);
    berth_mpbuf_destroy(&js);
    /* Nothing to show when every key failed (the errors said why). */
    if (!f.json && (rows || !rc))
        cli_table_print(t, stdout);
    else
        cli_table_free(t);
    for (int i = 0; i < nk; i++)
        free(keys[i]);
    free(keys);
    return rc;
}

static int snap_label(int argc, char **argv)
{
    snap_flags_t f;
    int first = parse_flags("snapshots label", argc, argv, &f, 0);
    if (argc - first < 1)
        cli_die("`berth snapshots label` needs KEY and KEY=VALUE labels (KEY= removes one)");
    char **kv = argv + first + 1;
    int n = argc - first - 1;
    berth_mpbuf_t b;
    cli_params_begin(&b, 3);
    berth_mp_kv_str(&b.pk, "key", argv[first]);
    berth_mp_pack_str(&b.pk, "labels");
    cli_pack_labels(&b.pk, kv, n);
    /* Only the labels named here change (an empty value removes one). */
    berth_mp_pack_str(&b.pk, "fields");
    msgpack_pack_array(&b.pk, (uint32_t)(n ? n : 1));
    if (n == 0)
        berth_mp_pack_str(&b.pk, "labels");
    for (int i = 0; i < n; i++) {
        size_t kl;
        const char *v;
        cli_label_split(kv[i], &kl, &v);
        char *fl = NULL;
        if (asprintf(&fl, "labels.%.*s", (int)kl, kv[i]) < 0)
            cli_die("out of memory");
        berth_mp_pack_str(&b.pk, fl);
        free(fl);
    }
    const msgpack_object *res = cli_call("snapshots.update", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const char *s = cli_labels_str(berth_mp_get(berth_mp_get(res, "info"), "labels"));
    puts(strcmp(s, "-") ? s : "");
    return 0;
}

static const cli_subcmd_t snap_cmds[] = {
    {"prepare", "[--target DIR] [--mounts] [--label K=V]... KEY [PARENT]",
     "Prepare an active (read-write) snapshot",
     "Options:\n"
     "  --target DIR     print the mount commands for DIR\n"
     "  --mounts         print the mounts as JSON\n"
     "  --label K=V      label the snapshot (repeatable)\n"
     "\n"
     "Mounts of long parent chains may carry a directory to run mount(8) from\n"
     "(relative lowerdir paths keep the options within one page): the printed\n"
     "command then starts with `(cd DIR && ...)`.\n",
     snap_prepare, false},
    {"view", "[--target DIR] [--mounts] [--label K=V]... KEY [PARENT]",
     "Create a read-only snapshot of a committed one", NULL, snap_view, false},
    {"commit", "[--label K=V]... NAME KEY", "Commit an active snapshot as NAME",
     "A snapshot whose layer apply was interrupted or failed cannot be committed.\n", snap_commit,
     false},
    {"mounts|m|mount", "TARGET KEY", "Print the mount commands of a snapshot",
     "Example:\n  berth snapshots mounts /mnt/x my-key | sh\n", snap_mounts, false},
    {"rm|remove|delete|del", "KEY...", "Remove snapshots",
     "A snapshot that has children cannot be removed.\n", snap_rm, false},
    {"list|ls", "[-q] [--format json] [FILTER...]", "List snapshots",
     "Columns: KEY PARENT KIND (Committed, Active or View), like ctr.\n"
     "\n"
     "Options:\n"
     "  -q, --quiet       print only keys\n"
     "  --format FORMAT   table (default) or json: an array of {name, parent, kind\n"
     "                    (committed, active or view), labels, created_at,\n"
     "                    updated_at (ns since the epoch), id, state}\n"
     "\n"
     "Filters: name==KEY, parent==KEY, kind==committed, labels.\"k\"==v, labels.k.\n",
     snap_ls, false},
    {"info", "[--format json] KEY", "Show a snapshot's details",
     "Prints the snapshot as ctr does: a JSON object with Kind, Name, Parent and\n"
     "Labels (when set), Created and Updated (RFC 3339, UTC). --format json prints\n"
     "berth's record instead (the fields of `berth snapshots ls --format json`).\n",
     snap_info, false},
    {"usage", "[-b] [--format json] [KEY...]", "Show disk usage (all snapshots when no KEY)",
     "Columns: KEY SIZE INODES. SIZE is what the snapshot's own directory uses.\n"
     "\n"
     "Options:\n"
     "  -b                sizes in bytes\n"
     "  --format FORMAT   table (default) or json: an array of {key, size (bytes),\n"
     "                    inodes}\n",
     snap_usage, false},
    {"tree", "", "Show snapshots as a tree of parents and children", NULL, snap_tree, false},
    {"label", "KEY [KEY=VALUE...]", "Set or remove labels of a snapshot",
     "KEY= (empty value) removes the label; the resulting labels are printed.\n", snap_label,
     false},
    {0},
};

int cmd_snapshots(int argc, char **argv)
{
    /* `--snapshotter NAME` (global to the group, like ctr): only overlayfs. */
    int w = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;
        if (strcmp(a, "--snapshotter") == 0 || strcmp(a, "-snapshotter") == 0) {
            if (i + 1 >= argc)
                cli_die("--snapshotter needs a value (overlayfs)");
            v = argv[++i];
        } else if (strncmp(a, "--snapshotter=", 14) == 0) {
            v = a + 14;
        } else {
            argv[w++] = argv[i];
            continue;
        }
        if (strcmp(v, "overlayfs") != 0)
            cli_die("snapshotter \"%s\" is not available (this daemon has: overlayfs)", v);
    }
    argc = w;
    argv[argc] = NULL;
    return cli_dispatch(argc, argv, "snapshots",
                        "Manage snapshots (global option: --snapshotter overlayfs)", snap_cmds);
}
