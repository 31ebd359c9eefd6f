/* SPDX-License-Identifier: Apache-2.0 */
/* `berth images|image|i`: pull, fetch, push, ls, check, tag, rm, label,
 * mount/unmount, export, import, unpack — like `ctr images`. The work happens
 * daemon-side (berth-transfer, metadata); this file parses flags, streams
 * archives, draws progress and prints tables. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define CHUNK (1u << 20)

/* Names as users type them ("busybox") are stored normalized
 * ("docker.io/library/busybox:latest"), like pull records them. Only the
 * spelling is completed here; validation happens daemon-side. */
static char *norm(const char *s)
{
    if (!strncmp(s, "index.docker.io/", 16))
        s += 6;
    const char *slash = strchr(s, '/');
    bool has_domain = false;
    if (slash) {
        size_t fl = (size_t)(slash - s);
        has_domain = memchr(s, '.', fl) || memchr(s, ':', fl) ||
                     (fl == 9 && strncmp(s, "localhost", 9) == 0);
    }
    const char *last = strrchr(s, '/');
    const char *tail = last ? last + 1 : s;
    bool tagged = strchr(tail, ':') || strchr(s, '@');
    const char *prefix = has_domain ? "" : (slash ? "docker.io/" : "docker.io/library/");
    if (!strncmp(s, "docker.io/", 10) && !strchr(s + 10, '/')) {
        prefix = "docker.io/library/";
        s += 10;
    }
    char *out = NULL;
    if (asprintf(&out, "%s%s%s", prefix, s, tagged ? "" : ":latest") < 0)
        cli_die("out of memory");
    return out;
}

static bool parse_uint(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || errno || *end || s[0] == '-')
        return false;
    *out = v;
    return true;
}

/* ---- progress ------------------------------------------------------------ */

typedef struct {
    bool tty, json;
    int drawn;
    char **seen; /* non-tty: "ref\tstatus" already printed */
    size_t n_seen;
    uint64_t total, elapsed_ns;
    uint64_t t0_ms;
} progress_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void bar(char *out, size_t w, uint64_t off, uint64_t total, bool full)
{
    size_t fill = full ? w : (total ? (size_t)((double)off / (double)total * (double)w) : 0);
    if (fill > w)
        fill = w;
    for (size_t i = 0; i < w; i++)
        out[i] = i < fill ? '+' : '-';
    out[w] = 0;
}

static int progress_cb(const msgpack_object *data, void *user)
{
    progress_t *p = user;
    if (!data || data->type != MSGPACK_OBJECT_MAP)
        return 0;
    const msgpack_object *items = berth_mp_get(data, "items");
    p->elapsed_ns = cli_u64(data, "elapsed_ns");
    if (!items || items->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    if (p->json) {
        cli_print_json_compact(data, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        return 0;
    }
    size_t width = 0;
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        char *ref = cli_str(&items->via.array.ptr[i], "ref");
        if (strlen(ref) > width)
            width = strlen(ref);
        free(ref);
    }
    if (p->tty && p->drawn > 0)
        fprintf(stderr, "\033[%dA", p->drawn);
    int lines = 0;
    uint64_t total = 0;
    double secs = (double)p->elapsed_ns / 1e9;
    for (uint32_t i = 0; i < items->via.array.size; i++) {
        const msgpack_object *it = &items->via.array.ptr[i];
        char *ref = cli_str(it, "ref");
        char *st = cli_str(it, "status");
        uint64_t off = cli_u64(it, "offset"), tot = cli_u64(it, "total");
        bool fin = !strcmp(st, "done") || !strcmp(st, "exists") || !strcmp(st, "resolved");
        if (!strncmp(ref, "layer-", 6) || !strncmp(ref, "config-", 7))
            total += fin ? tot : off;
        if (p->tty) {
            char b[41];
            bar(b, 40, off, tot, fin);
            char sizes[64] = "";
            if (tot && !strcmp(st, "downloading"))
                snprintf(sizes, sizeof(sizes), "%s/%s", cli_human_size(off), cli_human_size(tot));
            else if (tot)
                snprintf(sizes, sizeof(sizes), "%s", cli_human_size(tot));
            fprintf(stderr, "\033[2K%-*s  %-12s |%s| %s\n", (int)width + 1, ref, st, b, sizes);
            lines++;
        } else {
            char *key = NULL;
            if (asprintf(&key, "%s\t%s", ref, st) >= 0) {
                bool seen = false;
                for (size_t k = 0; k < p->n_seen; k++)
                    if (!strcmp(p->seen[k], key))
                        seen = true;
                if (!seen && strcmp(st, "downloading") && strcmp(st, "uploading")) {
                    p->seen = realloc(p->seen, (p->n_seen + 1) * sizeof(char *));
                    p->seen[p->n_seen++] = key;
                    key = NULL;
                    fprintf(stderr, "%s: %s%s%s\n", ref, st, tot ? " " : "",
                            tot ? cli_human_size(tot) : "");
                }
                free(key);
            }
        }
        free(ref);
        free(st);
    }
    p->total = total;
    if (p->tty) {
        fprintf(stderr, "\033[2Kelapsed: %.1fs  total: %s (%s/s)\n", secs, cli_human_size(total),
                cli_human_size(secs > 0 ? (uint64_t)((double)total / secs) : 0));
        lines++;
        p->drawn = lines;
    }
    fflush(stderr);
    return 0;
}

static void progress_end(progress_t *p)
{
    if (!p->tty && !p->json) {
        double secs = (double)(now_ms() - p->t0_ms) / 1000.0;
        fprintf(stderr, "elapsed: %.1fs  total: %s\n", secs, cli_human_size(p->total));
    }
    for (size_t i = 0; i < p->n_seen; i++)
        free(p->seen[i]);
    free(p->seen);
}

/* ---- shared flags for registry operations ---------------------------------- */

typedef struct {
    const char *platform, *user;
    bool all, plain, skip, no_unpack, json;
    uint64_t max_conc;
} rflags_t;

static int parse_rflags(const char *cmd, int argc, char **argv, rflags_t *f)
{
    static const struct option opts[] = {
        {"platform", required_argument, NULL, 'p'},
        {"all-platforms", no_argument, NULL, 'a'},
        {"plain-http", no_argument, NULL, 'H'},
        {"skip-verify", no_argument, NULL, 'k'},
        {"user", required_argument, NULL, 'u'},
        {"max-concurrent-downloads", required_argument, NULL, 'm'},
        {"no-unpack", no_argument, NULL, 'n'},
        {"format", required_argument, NULL, 'f'},
        {0},
    };
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":u:k", opts, NULL)) != -1) {
        switch (o) {
        case 'p':
            f->platform = optarg;
            break;
        case 'a':
            f->all = true;
            break;
        case 'H':
            f->plain = true;
            break;
        case 'k':
            f->skip = true;
            break;
        case 'u':
            f->user = optarg;
            break;
        case 'n':
            f->no_unpack = true;
            break;
        case 'f':
            f->json = cli_format_is_json(optarg);
            break;
        case 'm':
            if (!parse_uint(optarg, &f->max_conc) || f->max_conc == 0)
                cli_die("--max-concurrent-downloads needs a positive number");
            break;
        default:
            cli_flag_error(cmd, o, argv);
        }
    }
    return optind;
}

/* Packs user and password (prompted when absent and stdin is a terminal). */
static int auth_fields(const rflags_t *f, char **user, char **pass)
{
    *user = *pass = NULL;
    if (!f->user)
        return 0;
    const char *colon = strchr(f->user, ':');
    if (colon) {
        *user = strndup(f->user, (size_t)(colon - f->user));
        *pass = strdup(colon + 1);
    } else {
        *user = strdup(f->user);
        if (isatty(STDIN_FILENO)) {
            char *pw = getpass("Password: ");
            *pass = strdup(pw ? pw : "");
        } else {
            *pass = strdup("");
        }
    }
    return 2;
}

static int do_pull(const char *method, const char *cmd, int argc, char **argv)
{
    rflags_t f = {0};
    int first = parse_rflags(cmd, argc, argv, &f);
    if (argc - first < 1)
        cli_die("`berth %s` needs an image REF to pull (e.g. docker.io/library/busybox:latest); "
                "run `berth %s --help`",
                cmd, cmd);
    if (argc - first > 1)
        cli_die("`berth %s` takes one image REF (got %d arguments); run `berth %s --help`", cmd,
                argc - first, cmd);
    char *user, *pass;
    int na = auth_fields(&f, &user, &pass);
    berth_mpbuf_t b;
    cli_params_begin(&b, 1 + (f.platform ? 1 : 0) + 3 + (uint32_t)na + (f.max_conc ? 1 : 0) +
                             (f.no_unpack ? 1 : 0));
    berth_mp_kv_str(&b.pk, "ref", argv[first]);
    if (f.platform)
        berth_mp_kv_str(&b.pk, "platform", f.platform);
    berth_mp_kv_bool(&b.pk, "all_platforms", f.all);
    berth_mp_kv_bool(&b.pk, "plain_http", f.plain);
    berth_mp_kv_bool(&b.pk, "skip_verify", f.skip);
    if (na) {
        berth_mp_kv_str(&b.pk, "user", user);
        berth_mp_kv_str(&b.pk, "password", pass);
        explicit_bzero(pass, strlen(pass));
    }
    if (f.max_conc)
        berth_mp_kv_u64(&b.pk, "max_concurrent", f.max_conc);
    if (f.no_unpack)
        berth_mp_kv_bool(&b.pk, "unpack", false);
    free(user);
    free(pass);
    progress_t p = {.tty = isatty(STDERR_FILENO), .json = f.json, .t0_ms = now_ms()};
    const msgpack_object *res = cli_call(method, &b, progress_cb, NULL, &p);
    berth_mpbuf_destroy(&b);
    progress_end(&p);
    const msgpack_object *img = berth_mp_get(res, "image");
    if (f.json) {
        cli_print_json(res, stdout);
    } else if (img) {
        char *name = cli_str(img, "name");
        char *dg = cli_str(berth_mp_get(img, "target"), "digest");
        printf("%s %s\n", name, dg);
        free(name);
        free(dg);
    }
    return 0;
}

static int images_pull(int argc, char **argv)
{
    return do_pull("images.pull", "images pull", argc, argv);
}
static int images_fetch(int argc, char **argv)
{
    return do_pull("content.fetch", "images fetch", argc, argv);
}

static int images_push(int argc, char **argv)
{
    rflags_t f = {0};
    int first = parse_rflags("images push", argc, argv, &f);
    int n = argc - first;
    if (n < 1 || n > 2)
        cli_die("`berth images push` needs the remote REF and optionally the LOCAL image; run "
                "`berth images push --help`");
    char *user, *pass;
    int na = auth_fields(&f, &user, &pass);
    char *local = n == 2 ? norm(argv[first + 1]) : NULL;
    berth_mpbuf_t b;
    cli_params_begin(&b, 3 + (local ? 1 : 0) + (f.platform ? 1 : 0) + (uint32_t)na);
    berth_mp_kv_str(&b.pk, "ref", argv[first]);
    if (local)
        berth_mp_kv_str(&b.pk, "local", local);
    if (f.platform)
        berth_mp_kv_str(&b.pk, "platform", f.platform);
    berth_mp_kv_bool(&b.pk, "plain_http", f.plain);
    berth_mp_kv_bool(&b.pk, "skip_verify", f.skip);
    if (na) {
        berth_mp_kv_str(&b.pk, "user", user);
        berth_mp_kv_str(&b.pk, "password", pass);
        explicit_bzero(pass, strlen(pass));
    }
    free(user);
    free(pass);
    free(local);
    progress_t p = {.tty = isatty(STDERR_FILENO), .json = f.json, .t0_ms = now_ms()};
    const msgpack_object *res = cli_call("images.push", &b, progress_cb, NULL, &p);
    berth_mpbuf_destroy(&b);
    progress_end(&p);
    if (f.json) {
        cli_print_json(res, stdout);
    } else {
        char *name = cli_str(res, "name"), *dg = cli_str(res, "digest");
        printf("%s %s\n", name, dg);
        free(name);
        free(dg);
    }
    return 0;
}

/* ---- ls / check ----------------------------------------------------------- */

static const msgpack_object *check_call(const char *name)
{
    berth_mpbuf_t b;
    cli_params_begin(&b, name ? 1 : 0);
    if (name)
        berth_mp_kv_str(&b.pk, "name", name);
    const msgpack_object *res = cli_call("images.check", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *imgs = berth_mp_get(res, "images");
    if (!imgs || imgs->type != MSGPACK_OBJECT_ARRAY)
        cli_die("berthd answered images.check without images");
    return imgs;
}

static void join_platforms(const msgpack_object *img, char *buf, size_t n)
{
    const msgpack_object *pl = berth_mp_get(img, "platforms");
    size_t off = 0;
    buf[0] = 0;
    for (uint32_t i = 0; pl && pl->type == MSGPACK_OBJECT_ARRAY && i < pl->via.array.size; i++) {
        const msgpack_object *s = &pl->via.array.ptr[i];
        if (s->type != MSGPACK_OBJECT_STR)
            continue;
        off += (size_t)snprintf(buf + off, n > off ? n - off : 0, "%s%.*s", off ? "," : "",
                                (int)s->via.str.size, s->via.str.ptr);
        if (off >= n)
            break;
    }
    if (!buf[0])
        snprintf(buf, n, "-");
}

/* Names of the images that match ctr-style filters (images.list), as a
 * malloc'd NULL-terminated array. */
static char **filtered_names(char **filters, int nf)
{
    const msgpack_object *res = cli_call_filtered("images.list", filters, nf);
    const msgpack_object *imgs = berth_mp_get(res, "images");
    uint32_t n = imgs && imgs->type == MSGPACK_OBJECT_ARRAY ? imgs->via.array.size : 0;
    char **names = calloc(n + 1, sizeof(char *));
    if (!names)
        cli_die("out of memory");
    for (uint32_t i = 0; i < n; i++)
        names[i] = cli_str(&imgs->via.array.ptr[i], "name");
    return names;
}

static bool in_names(char **names, const msgpack_object *img)
{
    const msgpack_object *n = berth_mp_get(img, "name");
    for (size_t i = 0; names[i]; i++)
        if (berth_mp_str_eq(n, names[i]))
            return true;
    return false;
}

static void free_names(char **names)
{
    for (size_t i = 0; names && names[i]; i++)
        free(names[i]);
    free(names);
}

static int images_ls(int argc, char **argv)
{
    bool quiet = false, json = false;
    int first = cli_list_flags("images ls", argc, argv, &quiet, &json);
    int nf = argc - first;
    /* images.list resolves the filters (and is all -q needs). */
    char **names = nf || quiet ? filtered_names(argv + first, nf) : NULL;
    if (quiet) {
        for (size_t i = 0; names[i]; i++)
            printf("%s\n", names[i]);
        free_names(names);
        return 0;
    }
    /* The sizes and platforms come from images.check (one call for all). */
    const msgpack_object *imgs = check_call(NULL);
    berth_mpbuf_t items;
    berth_mpbuf_init(&items);
    uint32_t nitems = 0;
    cli_table_t *t = cli_table_new(6, "REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS");
    for (uint32_t i = 0; i < imgs->via.array.size; i++) {
        const msgpack_object *img = &imgs->via.array.ptr[i];
        if (nf && !in_names(names, img))
            continue;
        if (json) {
            msgpack_pack_object(&items.pk, *img);
            nitems++;
            continue;
        }
        char *name = cli_str(img, "name");
        const msgpack_object *target = berth_mp_get(img, "target");
        char *mt = cli_str(target, "media_type"), *dg = cli_str(target, "digest");
        char plats[512];
        join_platforms(img, plats, sizeof(plats));
        cli_table_row(t, name, mt, dg, cli_bytes(cli_u64(img, "image_size")), plats,
                      cli_labels_str(berth_mp_get(img, "labels")));
        free(name);
        free(mt);
        free(dg);
    }
    if (json) {
        cli_print_packed_array(&items, nitems);
        cli_table_free(t);
    } else {
        cli_table_print(t, stdout);
    }
    berth_mpbuf_destroy(&items);
    free_names(names);
    return 0;
}

static int images_check(int argc, char **argv)
{
    bool quiet = false, json = false;
    int first = cli_list_flags("images check", argc, argv, &quiet, &json);
    /* ctr's layout: the rows' UNPACKED cell is not padded. */
    cli_table_t *t = cli_table_new(6, "REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED");
    cli_table_style(t, CLI_TABLE_OPEN_LAST_ROWS);
    berth_mpbuf_t items;
    berth_mpbuf_init(&items);
    uint32_t nitems = 0;
    int n = argc - first;
    for (int k = 0; k < (n ? n : 1); k++) {
        char *name = n ? norm(argv[first + k]) : NULL;
        const msgpack_object *imgs = check_call(name);
        free(name);
        for (uint32_t i = 0; i < imgs->via.array.size; i++) {
            const msgpack_object *img = &imgs->via.array.ptr[i];
            char *nm = cli_str(img, "name"), *st = cli_str(img, "status");
            bool unpacked = false;
            berth_mp_get_bool(img, "unpacked", &unpacked, NULL);
            if (json) {
                msgpack_pack_object(&items.pk, *img);
                nitems++;
            } else if (quiet) {
                /* Like ctr: only the images that are ready to run. */
                if (!strcmp(st, "complete") && unpacked)
                    printf("%s\n", nm);
            } else {
                const msgpack_object *target = berth_mp_get(img, "target");
                char *mt = cli_str(target, "media_type"), *dg = cli_str(target, "digest");
                char status[64], size[64];
                snprintf(status, sizeof(status), "%s (%" PRIu64 "/%" PRIu64 ")", st,
                         cli_u64(img, "complete"), cli_u64(img, "total"));
                snprintf(size, sizeof(size), "%s/%s", cli_bytes(cli_u64(img, "size")),
                         cli_bytes(cli_u64(img, "total_size")));
                cli_table_row(t, nm, mt, dg, status, size, unpacked ? "true" : "false");
                free(mt);
                free(dg);
            }
            free(nm);
            free(st);
        }
    }
    /* Like ctr: check reports what is missing, it does not fail on it. */
    if (json)
        cli_print_packed_array(&items, nitems);
    if (json || quiet)
        cli_table_free(t);
    else
        cli_table_print(t, stdout);
    berth_mpbuf_destroy(&items);
    return 0;
}

/* ---- tag / rm / label ------------------------------------------------------- */

static int images_tag(int argc, char **argv)
{
    bool force = false;
    optind = cli_switch_flag("images tag", argc, argv, "force", 'f', &force);
    if (argc - optind < 2)
        cli_die("`berth images tag` needs the SRC image and at least one DST name; run `berth "
                "images tag --help`");
    char *src = norm(argv[optind]);
    berth_mpbuf_t b;
    cli_params_begin(&b, 1);
    berth_mp_kv_str(&b.pk, "name", src);
    const msgpack_object *res = cli_call("images.get", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    msgpack_zone *z = NULL;
    msgpack_object *target = berth_mp_clone(berth_mp_get(berth_mp_get(res, "image"), "target"), &z);
    if (!target)
        cli_die("image %s has no target", src);
    for (int i = optind + 1; i < argc; i++) {
        char *dst = norm(argv[i]);
        for (int attempt = 0; attempt < 2; attempt++) {
            bool update = attempt == 1;
            cli_params_begin(&b, update ? 2 : 1);
            berth_mp_pack_str(&b.pk, "image");
            msgpack_pack_map(&b.pk, 2);
            berth_mp_kv_str(&b.pk, "name", dst);
            berth_mp_pack_str(&b.pk, "target");
            msgpack_pack_object(&b.pk, *target);
            if (update) {
                berth_mp_pack_str(&b.pk, "fields");
                msgpack_pack_array(&b.pk, 1);
                berth_mp_pack_str(&b.pk, "target");
            }
            berth_error_t *err = NULL;
            const msgpack_object *r2 = NULL;
            int rc = cli_try_call(update ? "images.update" : "images.create", &b, NULL, NULL, NULL,
                                  &r2, &err);
            berth_mpbuf_destroy(&b);
            if (rc == 0)
                break;
            if (err->code == BERTH_E_ALREADY_EXISTS && !update) {
                if (!force)
                    cli_die("image %s already exists; use --force to retag it", dst);
                berth_error_free(&err);
                continue;
            }
            cli_die_err(err);
        }
        printf("%s\n", dst);
        free(dst);
    }
    msgpack_zone_free(z);
    free(src);
    return 0;
}

static int images_rm(int argc, char **argv)
{
    bool sync = false;
    optind = cli_switch_flag("images rm", argc, argv, "sync", 0, &sync);
    if (optind >= argc)
        cli_die("`berth images rm` needs one or more image REFs (see `berth images ls -q`)");
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        char *name = norm(argv[i]);
        berth_mpbuf_t b;
        cli_params_begin(&b, 2);
        berth_mp_kv_str(&b.pk, "name", name);
        berth_mp_kv_bool(&b.pk, "sync", sync);
        berth_error_t *err = NULL;
        const msgpack_object *res = NULL;
        if (cli_try_call("images.delete", &b, NULL, NULL, NULL, &res, &err) < 0) {
            fprintf(stderr, "berth: %s\n", err->message);
            berth_error_free(&err);
            rc = 1;
        } else {
            printf("%s\n", name);
        }
        berth_mpbuf_destroy(&b);
        free(name);
    }
    return rc;
}

static int images_label(int argc, char **argv)
{
    static const struct option opts[] = {{"replace-all", no_argument, NULL, 'r'}, {0}};
    bool replace = false;
    int o;
    optind = 0;
    opterr = 0;
    /* "+": flags come before REF, so label values may start with '-'. */
    while ((o = getopt_long(argc, argv, "+:r", opts, NULL)) != -1) {
        if (o == 'r')
            replace = true;
        else
            cli_flag_error("images label", o, argv);
    }
    if (optind >= argc)
        cli_die("`berth images label` needs an image REF and KEY=VALUE labels (KEY= removes "
                "one); run `berth images label --help`");
    char *name = norm(argv[optind]);
    char **kv = argv + optind + 1;
    int n = argc - optind - 1;
    berth_mpbuf_t b;
    if (n == 0 && !replace) {
        /* Nothing to change: show the labels. */
        cli_params_begin(&b, 1);
        berth_mp_kv_str(&b.pk, "name", name);
        const msgpack_object *res = cli_call("images.get", &b, NULL, NULL, NULL);
        berth_mpbuf_destroy(&b);
        const char *l = cli_labels_str(berth_mp_get(berth_mp_get(res, "image"), "labels"));
        printf("%s\n", strcmp(l, "-") ? l : "");
        free(name);
        return 0;
    }
    cli_params_begin(&b, 2);
    berth_mp_pack_str(&b.pk, "image");
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "name", name);
    berth_mp_pack_str(&b.pk, "labels");
    cli_pack_labels(&b.pk, kv, n);
    /* Only the labels named here change (an empty value removes one), or
     * with --replace-all the whole set. */
    berth_mp_pack_str(&b.pk, "fields");
    msgpack_pack_array(&b.pk, (uint32_t)(replace ? 1 : n));
    if (replace)
        berth_mp_pack_str(&b.pk, "labels");
    for (int i = 0; !replace && i < n; i++) {
        size_t kl;
        const char *v;
        cli_label_split(kv[i], &kl, &v);
        char *f = NULL;
        if (asprintf(&f, "labels.%.*s", (int)kl, kv[i]) < 0)
            cli_die("out of memory");
        berth_mp_pack_str(&b.pk, f);
        free(f);
    }
    const msgpack_object *res = cli_call("images.update", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    /* The resulting labels, like ctr (an empty line when there are none). */
    const char *l = cli_labels_str(berth_mp_get(berth_mp_get(res, "image"), "labels"));
    printf("%s\n", strcmp(l, "-") ? l : "");
    free(name);
    return 0;
}

/* ---- mount / unmount ------------------------------------------------------------ */

static void do_mounts(const msgpack_object *mounts, const char *target)
{
    if (!mounts || mounts->type != MSGPACK_OBJECT_ARRAY || mounts->via.array.size == 0)
        cli_die("berthd returned no mounts");
    for (uint32_t i = 0; i < mounts->via.array.size; i++) {
        const msgpack_object *m = &mounts->via.array.ptr[i];
        char *type = cli_str(m, "type"), *src = cli_str(m, "source");
        const msgpack_object *opts = berth_mp_get(m, "options");
        unsigned long flags = 0;
        char data[8192] = "";
        size_t off = 0;
        for (uint32_t k = 0; opts && opts->type == MSGPACK_OBJECT_ARRAY && k < opts->via.array.size;
             k++) {
            char *o = berth_mp_strdup(&opts->via.array.ptr[k]);
            if (!o)
                continue;
            if (!strcmp(o, "ro"))
                flags |= MS_RDONLY;
            else if (!strcmp(o, "rw"))
                ;
            else if (!strcmp(o, "bind"))
                flags |= MS_BIND;
            else if (!strcmp(o, "rbind"))
                flags |= MS_BIND | MS_REC;
            else if (!strcmp(o, "nosuid"))
                flags |= MS_NOSUID;
            else if (!strcmp(o, "nodev"))
                flags |= MS_NODEV;
            else
                off += (size_t)snprintf(data + off, off < sizeof(data) ? sizeof(data) - off : 0,
                                        "%s%s", off ? "," : "", o);
            free(o);
        }
        const char *fstype = (flags & MS_BIND) ? NULL : type;
        if (mount(src, target, fstype, flags, data[0] ? data : NULL) < 0)
            cli_die("mount %s on %s: %s", type, target, strerror(errno));
        if ((flags & MS_BIND) && (flags & MS_RDONLY) &&
            mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
            cli_die("remount %s read-only: %s", target, strerror(errno));
        free(type);
        free(src);
    }
}

static int images_mount(int argc, char **argv)
{
    static const struct option opts[] = {
        {"rw", no_argument, NULL, 'w'}, {"platform", required_argument, NULL, 'p'}, {0}};
    bool rw = false;
    const char *platform = NULL;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (o == 'w')
            rw = true;
        else if (o == 'p')
            platform = optarg;
        else
            cli_flag_error("images mount", o, argv);
    }
    if (argc - optind != 2)
        cli_die("`berth images mount` needs an image REF and a TARGET directory; run `berth "
                "images mount --help`");
    char *name = norm(argv[optind]);
    char target[PATH_MAX];
    if (!realpath(argv[optind + 1], target))
        cli_die("mount target %s: %s", argv[optind + 1], strerror(errno));
    berth_mpbuf_t b;
    cli_params_begin(&b, platform ? 2 : 1);
    berth_mp_kv_str(&b.pk, "name", name);
    if (platform)
        berth_mp_kv_str(&b.pk, "platform", platform);
    const msgpack_object *res = cli_call("images.unpack", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    char *chain = cli_str(res, "chain_id");
    cli_params_begin(&b, chain[0] ? 2 : 1);
    berth_mp_kv_str(&b.pk, "key", target);
    if (chain[0])
        berth_mp_kv_str(&b.pk, "parent", chain);
    res = cli_call(rw ? "snapshots.prepare" : "snapshots.view", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    do_mounts(berth_mp_get(res, "mounts"), target);
    printf("%s\n", target);
    free(chain);
    free(name);
    return 0;
}

static int images_unmount(int argc, char **argv)
{
    bool rm = false;
    optind = cli_switch_flag("images unmount", argc, argv, "rm", 0, &rm);
    if (argc - optind != 1)
        cli_die("`berth images unmount` needs the TARGET directory; run `berth images unmount "
                "--help`");
    char target[PATH_MAX];
    if (!realpath(argv[optind], target))
        cli_die("unmount target %s: %s", argv[optind], strerror(errno));
    int n = 0;
    while (umount2(target, 0) == 0)
        n++;
    if (n == 0 && errno != EINVAL)
        cli_die("unmount %s: %s", target, strerror(errno));
    if (rm) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 1);
        berth_mp_kv_str(&b.pk, "key", target);
        cli_call("snapshots.remove", &b, NULL, NULL, NULL);
        berth_mpbuf_destroy(&b);
    }
    printf("%s\n", target);
    return 0;
}

/* ---- export / import ------------------------------------------------------------ */

typedef struct {
    int fd;
    uint64_t bytes;
    int err;
    bool eof;
    char *buf;
} xio_t;

static int export_cb(const msgpack_object *data, void *user)
{
    xio_t *x = user;
    if (!data)
        return 0;
    const char *p = NULL;
    size_t n = 0;
    if (data->type == MSGPACK_OBJECT_BIN) {
        p = data->via.bin.ptr;
        n = data->via.bin.size;
    } else {
        return 0;
    }
    while (n > 0) {
        ssize_t w = write(x->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            x->err = errno;
            return 1;
        }
        p += w;
        n -= (size_t)w;
        x->bytes += (uint64_t)w;
    }
    return 0;
}

static int images_export(int argc, char **argv)
{
    rflags_t f = {0};
    int first = parse_rflags("images export", argc, argv, &f);
    if (argc - first < 2)
        cli_die("`berth images export` needs an output FILE (- for stdout) and one or more "
                "image REFs; run `berth images export --help`");
    const char *file = argv[first];
    bool to_stdout = !strcmp(file, "-");
    xio_t x = {.fd = to_stdout ? STDOUT_FILENO
                               : open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    if (x.fd < 0)
        cli_die("create %s: %s", file, strerror(errno));
    berth_mpbuf_t b;
    cli_params_begin(&b, 2 + (f.platform ? 1 : 0));
    berth_mp_pack_str(&b.pk, "refs");
    msgpack_pack_array(&b.pk, (uint32_t)(argc - first - 1));
    for (int i = first + 1; i < argc; i++) {
        char *n = norm(argv[i]);
        berth_mp_pack_str(&b.pk, n);
        free(n);
    }
    berth_mp_kv_bool(&b.pk, "all_platforms", f.all);
    if (f.platform)
        berth_mp_kv_str(&b.pk, "platform", f.platform);
    berth_error_t *err = NULL;
    const msgpack_object *res = NULL;
    int rc = cli_try_call("images.export", &b, export_cb, NULL, &x, &res, &err);
    berth_mpbuf_destroy(&b);
    if (rc < 0 || x.err) {
        if (!to_stdout)
            unlink(file);
        if (x.err)
            cli_die("write %s: %s", file, strerror(x.err));
        cli_die_err(err);
    }
    if (!to_stdout && (fsync(x.fd) < 0 || close(x.fd) < 0))
        cli_die("write %s: %s", file, strerror(errno));
    return 0;
}

static int import_upload(berth_client_t *c, unsigned credit, void *user)
{
    xio_t *x = user;
    for (unsigned i = 0; i < credit && !x->eof; i++) {
        size_t len = 0;
        while (len < CHUNK) {
            ssize_t r = read(x->fd, x->buf + len, CHUNK - len);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                x->err = errno;
                return -1;
            }
            if (r == 0) {
                x->eof = true;
                break;
            }
            len += (size_t)r;
        }
        if (len > 0 && berth_client_send_chunk(c, x->buf, len) < 0) {
            x->err = ENOMEM;
            return -1;
        }
        x->bytes += len;
    }
    return x->eof ? 1 : 0;
}

static int images_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"base-name", required_argument, NULL, 'b'},
        {"digests", no_argument, NULL, 'd'},
        {"all-platforms", no_argument, NULL, 'a'},
        {"no-unpack", no_argument, NULL, 'n'},
        {"platform", required_argument, NULL, 'p'},
        {"format", required_argument, NULL, 'f'},
        {0},
    };
    const char *base = NULL, *platform = NULL;
    bool digests = false, all = false, no_unpack = false, json = false;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (o) {
        case 'b':
            base = optarg;
            break;
        case 'd':
            digests = true;
            break;
        case 'a':
            all = true;
            break;
        case 'n':
            no_unpack = true;
            break;
        case 'p':
            platform = optarg;
            break;
        case 'f':
            json = cli_format_is_json(optarg);
            break;
        default:
            cli_flag_error("images import", o, argv);
        }
    }
    if (argc - optind != 1)
        cli_die("`berth images import` needs one FILE (- for stdin); run `berth images import "
                "--help`");
    const char *file = argv[optind];
    xio_t x = {.fd = strcmp(file, "-") ? open(file, O_RDONLY | O_CLOEXEC) : STDIN_FILENO};
    if (x.fd < 0)
        cli_die("open %s: %s", file, strerror(errno));
    x.buf = malloc(CHUNK);
    berth_mpbuf_t b;
    cli_params_begin(&b, 3 + (base ? 1 : 0) + (platform ? 1 : 0));
    berth_mp_kv_bool(&b.pk, "digests", digests);
    berth_mp_kv_bool(&b.pk, "all_platforms", all);
    berth_mp_kv_bool(&b.pk, "no_unpack", no_unpack);
    if (base)
        berth_mp_kv_str(&b.pk, "base_name", base);
    if (platform)
        berth_mp_kv_str(&b.pk, "platform", platform);
    berth_error_t *err = NULL;
    const msgpack_object *res = NULL;
    int rc = cli_try_call("images.import", &b, NULL, import_upload, &x, &res, &err);
    berth_mpbuf_destroy(&b);
    free(x.buf);
    if (x.err)
        cli_die("read %s: %s", file, strerror(x.err));
    if (rc < 0)
        cli_die_err(err);
    const msgpack_object *imgs = berth_mp_get(res, "images");
    if (json) {
        cli_print_json(res, stdout);
        return 0;
    }
    for (uint32_t i = 0; imgs && imgs->type == MSGPACK_OBJECT_ARRAY && i < imgs->via.array.size;
         i++) {
        char *n = cli_str(&imgs->via.array.ptr[i], "name");
        char *dg = cli_str(berth_mp_get(&imgs->via.array.ptr[i], "target"), "digest");
        /* ctr's line; with --no-unpack ctr prints nothing, berth still names
         * what it imported. */
        if (no_unpack)
            printf("imported %s (%s)\n", n, dg);
        else
            printf("unpacking %s (%s)...done\n", n, dg);
        free(n);
        free(dg);
    }
    return 0;
}

static int images_unpack(int argc, char **argv)
{
    rflags_t f = {0};
    int first = parse_rflags("images unpack", argc, argv, &f);
    if (argc - first != 1)
        cli_die("`berth images unpack` needs one image REF; run `berth images unpack --help`");
    char *name = norm(argv[first]);
    berth_mpbuf_t b;
    cli_params_begin(&b, f.platform ? 2 : 1);
    berth_mp_kv_str(&b.pk, "name", name);
    if (f.platform)
        berth_mp_kv_str(&b.pk, "platform", f.platform);
    const msgpack_object *res = cli_call("images.unpack", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    char *chain = cli_str(res, "chain_id");
    printf("%s %s\n", name, chain);
    free(chain);
    free(name);
    return 0;
}

static const cli_subcmd_t images_cmds[] = {
    {"pull",
     "REF [--platform P] [--all-platforms] [--plain-http] [--skip-verify] [--user U[:P]] "
     "[--max-concurrent-downloads N]",
     "Pull an image from a registry and unpack it",
     "REF as you would type it: busybox, host:5000/repo:tag, repo@sha256:...\n"
     "\n"
     "Options:\n"
     "  --platform P                  os/arch[/variant] (default: this host)\n"
     "  --all-platforms               fetch every platform of an index\n"
     "  --plain-http                  talk HTTP to the registry\n"
     "  --skip-verify, -k             do not verify the registry's TLS certificate\n"
     "  --user, -u USER[:PASSWORD]    basic credentials (password prompted if absent)\n"
     "  --max-concurrent-downloads N  parallel blob downloads (default 3)\n"
     "  --no-unpack                   fetch only\n"
     "  --format json                 progress and result as JSON lines\n",
     images_pull, false},
    {"fetch", "REF [pull options]", "Fetch an image's content without unpacking it",
     "Same as pull without the unpack (content.fetch).\n", images_fetch, false},
    {"push", "REF [LOCAL] [--platform P] [--plain-http] [--skip-verify] [--user U[:P]]",
     "Push an image to a registry",
     "LOCAL is the local image to push (default REF). Blobs the registry has are skipped;\n"
     "blobs pulled from another repository of the same registry are mounted.\n",
     images_push, false},
    {"list|ls", "[-q] [--format json] [FILTER...]", "List images",
     "Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS, like ctr. SIZE is the\n"
     "manifest, config and layers (compressed).\n"
     "\n"
     "Options:\n"
     "  -q, --quiet       print only image names\n"
     "  --format FORMAT   table (default) or json: an array of {name, target:\n"
     "                    {media_type, digest, size}, labels, created_at, updated_at\n"
     "                    (ns since the epoch), platforms, image_size, status,\n"
     "                    unpacked, ...} (the fields of `berth images check`)\n"
     "\n"
     "Filters (an image is shown if it matches any): name==REF, name~=REGEX,\n"
     "target.digest==sha256:..., labels.\"k\"==v, labels.k (presence).\n"
     "\n"
     "Examples:\n"
     "  berth images ls\n"
     "  berth images ls -q 'name~=busybox'\n",
     images_ls, false},
    {"check", "[-q] [--format json] [REF...]", "Check that images are complete and unpacked",
     "Columns: REF TYPE DIGEST STATUS SIZE UNPACKED, like ctr: STATUS is complete or\n"
     "incomplete (blobs present/required), SIZE bytes present/required. Missing\n"
     "content is reported, not an error (exit 0); an unknown REF is an error.\n"
     "\n"
     "Options:\n"
     "  -q, --quiet       print only the names of ready images (complete and unpacked)\n"
     "  --format FORMAT   table (default) or json: an array of {name, target, labels,\n"
     "                    platforms, status, complete, total, size, total_size,\n"
     "                    image_size, unpacked, chain_id, error, ...}\n",
     images_check, false},
    {"tag", "SRC DST... [--force]", "Give an image more names",
     "Each new name is printed. A name that exists already is an error unless\n"
     "--force (-f) points it at SRC's target.\n"
     "\n"
     "Example:\n"
     "  berth images tag busybox registry.local/busybox:1\n",
     images_tag, false},
    {"remove|rm|delete|del", "REF... [--sync]", "Remove images",
     "--sync waits until garbage collection freed the space.\n", images_rm, false},
    {"label", "[-r] REF [KEY=VALUE...]", "Set or remove (KEY=) labels of an image",
     "The resulting labels are printed (without KEY=VALUE: the current ones).\n"
     "\n"
     "Options:\n"
     "  -r, --replace-all   replace all labels with the ones given\n"
     "\n"
     "Example:\n"
     "  berth images label busybox team=web\n",
     images_label, false},
    {"mount", "REF TARGET [--rw] [--platform P]", "Mount an image's filesystem on TARGET",
     "Unpacks the image if needed and mounts a view (or with --rw a writable snapshot)\n"
     "keyed by TARGET. Undo with `berth images unmount TARGET --rm`.\n",
     images_mount, false},
    {"unmount", "TARGET [--rm]", "Unmount TARGET (and --rm remove its snapshot)", NULL,
     images_unmount, false},
    {"export", "FILE REF... [--platform P] [--all-platforms]",
     "Export images to an OCI layout tar (also readable by docker load)",
     "FILE - writes to stdout.\n", images_export, false},
    {"import",
     "FILE [--base-name NAME] [--digests] [--all-platforms] [--platform P] [--no-unpack] "
     "[--format json]",
     "Import images from an OCI layout or docker save tar (gzip or not)",
     "FILE - reads stdin. Prints `unpacking NAME (DIGEST)...done` per image, like ctr\n"
     "(with --no-unpack: `imported NAME (DIGEST)`).\n"
     "\n"
     "Options:\n"
     "  --base-name NAME   name images NAME:REF where the tar names them only by a ref\n"
     "                     annotation (a tag), instead of import@DIGEST\n"
     "  --digests          also create NAME@DIGEST images\n"
     "  --all-platforms    import every platform of an index\n"
     "  --platform P       import this platform (default: this host)\n"
     "  --no-unpack        do not unpack the layers into snapshots\n"
     "  --format json      print the imported images as JSON\n",
     images_import, false},
    {"unpack", "REF [--platform P]", "Unpack an image's layers into snapshots", NULL, images_unpack,
     false},
    {0},
};

int cmd_images(int argc, char **argv)
{
    return cli_dispatch(argc, argv, "images", "Manage images", images_cmds);
}
