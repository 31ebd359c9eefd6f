/* SPDX-License-Identifier: Apache-2.0 */
/* `berth containers create|ls|info|rm|label` (like `ctr containers`, plus
 * --format json). The OCI spec is generated daemon-side; `info` shows it
 * decoded. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_run_create(int argc, char **argv, const char *cmd, bool run_mode);

static int c_create(int argc, char **argv)
{
    return cli_run_create(argc, argv, "containers create", false);
}

static int c_list(int argc, char **argv)
{
    bool quiet = false, json = false;
    int first = cli_list_flags("containers ls", argc, argv, &quiet, &json);
    const msgpack_object *res = cli_call_filtered("containers.list", argv + first, argc - first);
    const msgpack_object *list = berth_mp_get(res, "containers");
    if (cli_list_plain(list, json, quiet, "id"))
        return 0;
    cli_table_t *t = cli_table_new(3, "CONTAINER", "IMAGE", "RUNTIME");
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const msgpack_object *c = &list->via.array.ptr[i];
        _cleanup_free_ char *id = cli_str(c, "id");
        _cleanup_free_ char *image = cli_str(c, "image");
        _cleanup_free_ char *rt = cli_str(berth_mp_get(c, "runtime"), "name");
        cli_table_row(t, id, *image ? image : "-", *rt ? rt : "-");
    }
    cli_table_print(t, stdout);
    return 0;
}

/* Re-indents JSON text (the spec is stored as JSON bytes) with 4 spaces,
 * starting at `level`. */
static void print_json_text(const char *s, size_t n, int level, FILE *out)
{
    bool in_str = false, esc = false;
    int depth = level;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            fputc(c, out);
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            continue;
        }
        switch (c) {
        case '"':
            in_str = true;
            fputc(c, out);
            break;
        case '{':
        case '[': {
            /* Keep empty containers on one line. */
            size_t j = i + 1;
            while (j < n && (s[j] == ' ' || s[j] == '\n' || s[j] == '\t' || s[j] == '\r'))
                j++;
            if (j < n && (s[j] == '}' || s[j] == ']')) {
                fputc(c, out);
                fputc(s[j], out);
                i = j;
                break;
            }
            fputc(c, out);
            depth++;
            fprintf(out, "\n%*s", depth * 4, "");
            break;
        }
        case '}':
        case ']':
            depth--;
            fprintf(out, "\n%*s%c", depth * 4, "", c);
            break;
        case ',':
            fprintf(out, ",\n%*s", depth * 4, "");
            break;
        case ':':
            fputs(": ", out);
            break;
        case ' ':
        case '\n':
        case '\t':
        case '\r':
            break;
        default:
            fputc(c, out);
        }
    }
}

static int c_info(int argc, char **argv)
{
    static const struct option opts[] = {{"spec", no_argument, NULL, 's'}, {0}};
    bool spec_only = false;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (o == 's')
            spec_only = true;
        else
            cli_flag_error("containers info", o, argv);
    }
    if (argc - optind != 1)
        cli_die("usage: berth containers info [--spec] ID");
    berth_mpbuf_t b;
    cli_params_begin(&b, 1);
    berth_mp_kv_str(&b.pk, "id", argv[optind]);
    const msgpack_object *res = cli_call("containers.get", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *c = berth_mp_get(res, "container");
    if (!c || c->type != MSGPACK_OBJECT_MAP)
        cli_die("berthd answered containers.get without a container");
    berth_bytes_t spec = {0};
    berth_mp_get_bin(c, "spec", &spec, NULL);
    if (spec_only) {
        if (!spec.len)
            cli_die("container %s has no spec", argv[optind]);
        print_json_text((const char *)spec.ptr, spec.len, 0, stdout);
        fputc('\n', stdout);
        return 0;
    }
    /* Everything but the spec as JSON, then the spec decoded. */
    msgpack_object copy = *c;
    msgpack_object_kv kv[64];
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->via.map.size && n < 64; i++)
        if (!berth_mp_str_eq(&c->via.map.ptr[i].key, "spec"))
            kv[n++] = c->via.map.ptr[i];
    copy.via.map.ptr = kv;
    copy.via.map.size = n;
    char *text = NULL;
    size_t tl = 0;
    FILE *mem = open_memstream(&text, &tl);
    cli_print_json(&copy, mem);
    fclose(mem);
    /* Drop the closing "}\n" and append the spec. */
    while (tl && (text[tl - 1] == '\n' || text[tl - 1] == ' '))
        tl--;
    if (tl && text[tl - 1] == '}')
        tl--;
    while (tl && (text[tl - 1] == '\n' || text[tl - 1] == ' '))
        tl--;
    fwrite(text, 1, tl, stdout);
    free(text);
    fputs(",\n    \"spec\": ", stdout);
    if (spec.len)
        print_json_text((const char *)spec.ptr, spec.len, 1, stdout);
    else
        fputs("null", stdout);
    fputs("\n}\n", stdout);
    return 0;
}

static int c_rm(int argc, char **argv)
{
    static const struct option opts[] = {{"keep-snapshot", no_argument, NULL, 'k'}, {0}};
    bool keep = false;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (o == 'k')
            keep = true;
        else
            cli_flag_error("containers rm", o, argv);
    }
    if (optind >= argc)
        cli_die("usage: berth containers rm [--keep-snapshot] ID...");
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 2);
        berth_mp_kv_str(&b.pk, "id", argv[i]);
        berth_mp_kv_bool(&b.pk, "keep_snapshot", keep);
        berth_error_t *err = NULL;
        if (cli_try_call("containers.delete", &b, NULL, NULL, NULL, NULL, &err) < 0) {
            fprintf(stderr, "berth: %s\n", err->message);
            berth_error_free(&err);
            rc = 1;
        }
        berth_mpbuf_destroy(&b);
    }
    return rc;
}

static int c_label(int argc, char **argv)
{
    if (argc < 2)
        cli_die("usage: berth containers label ID [KEY=VALUE...] (KEY= removes a label)");
    const char *id = argv[1];
    int n = argc - 2;
    if (n == 0) {
        /* Show the labels. */
        berth_mpbuf_t b;
        cli_params_begin(&b, 1);
        berth_mp_kv_str(&b.pk, "id", id);
        const msgpack_object *res = cli_call("containers.get", &b, NULL, NULL, NULL);
        berth_mpbuf_destroy(&b);
        puts(cli_labels_str(berth_mp_get(berth_mp_get(res, "container"), "labels")));
        return 0;
    }
    berth_mpbuf_t b;
    cli_params_begin(&b, 2);
    berth_mp_pack_str(&b.pk, "container");
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_mp_pack_str(&b.pk, "labels");
    /* Only set labels (value non-empty) go in the map; removed ones are
     * named in fields with no value. */
    int set = 0;
    for (int i = 0; i < n; i++) {
        size_t kl;
        const char *v;
        if (cli_label_split(argv[2 + i], &kl, &v) < 0)
            cli_die("invalid label \"%s\": use KEY=VALUE", argv[2 + i]);
        if (*v)
            set++;
    }
    msgpack_pack_map(&b.pk, (uint32_t)set);
    for (int i = 0; i < n; i++) {
        size_t kl;
        const char *v;
        cli_label_split(argv[2 + i], &kl, &v);
        if (!*v)
            continue;
        berth_mp_pack_strn(&b.pk, argv[2 + i], kl);
        berth_mp_pack_str(&b.pk, v);
    }
    berth_mp_pack_str(&b.pk, "fields");
    msgpack_pack_array(&b.pk, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        size_t kl;
        const char *v;
        cli_label_split(argv[2 + i], &kl, &v);
        char f[512];
        snprintf(f, sizeof(f), "labels.%.*s", (int)kl, argv[2 + i]);
        berth_mp_pack_str(&b.pk, f);
    }
    const msgpack_object *res = cli_call("containers.update", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    puts(cli_labels_str(berth_mp_get(berth_mp_get(res, "container"), "labels")));
    return 0;
}

static const cli_subcmd_t containers_cmds[] = {
    {"create", "[OPTIONS] IMAGE ID [CMD [ARG...]]", "Create a container",
     "Takes the options of `berth run` except --rm and -d. The OCI spec is built by\n"
     "the daemon from the image config and the options; see `berth run --help`.\n"
     "\n"
     "Example:\n"
     "  berth containers create --env A=1 busybox:latest c1 sleep 60\n",
     c_create, true},
    {"list|ls", "[-q] [--format json] [FILTER...]", "List containers",
     "Columns: CONTAINER IMAGE RUNTIME.\n"
     "\n"
     "Options:\n"
     "  -q, --quiet       print only ids\n"
     "  --format FORMAT   table (default) or json\n",
     c_list, false},
    {"info", "[--spec] ID", "Show a container (with its OCI spec decoded)",
     "Options:\n"
     "  --spec   print only the OCI runtime spec\n",
     c_info, false},
    {"delete|del|remove|rm", "[--keep-snapshot] ID...", "Delete containers",
     "A container with a task must have its task deleted first.\n"
     "\n"
     "Options:\n"
     "  --keep-snapshot   keep the container's rootfs snapshot\n",
     c_rm, false},
    {"label", "ID [KEY=VALUE...]", "Set or remove (KEY=) labels of a container", NULL, c_label,
     false},
    {0},
};

int cmd_containers(int argc, char **argv)
{
    return cli_dispatch(argc, argv, "containers", "Manage containers", containers_cmds);
}
