/* SPDX-License-Identifier: Apache-2.0 */
/* `berth content ls|get|ingest|active|rm|label`: blobs and ingests of the
 * content store, like `ctr content`. Records and labels come from metadata
 * (content.list/update/delete), bytes from the content plugin
 * (content.read/write/active). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "main_table.h"

#define INGEST_CHUNK (1u << 20) /* the protocol's largest bin chunk */

static bool parse_u64_arg(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-')
        return false;
    *out = v;
    return true;
}

/* ---- ls ------------------------------------------------------------------ */

static int content_ls(int argc, char **argv)
{
    bool quiet = false, json = false;
    int first = cli_list_flags("content ls", argc, argv, &quiet, &json);
    const msgpack_object *res = cli_call_filtered("content.list", argv + first, argc - first);
    const msgpack_object *infos = NULL;
    _cleanup_error_ berth_error_t *err = NULL;
    if (berth_mp_get_array(res, "infos", &infos, &err) < 0)
        cli_die("berthd answered content.list without a list: %s", err->message);
    uint32_t n = infos ? infos->via.array.size : 0;
    if (cli_list_plain(infos, json, quiet, "digest"))
        return 0;
    /* ctr's layout: tab-padded, the LABELS column unpadded, sizes as
     * go-units prints them ("366B", "1.084MB"). */
    cli_table_t *t = cli_table_new(4, "DIGEST", "SIZE", "AGE", "LABELS");
    cli_table_style(t, CLI_TABLE_TABS | CLI_TABLE_OPEN_LAST);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *info = &infos->via.array.ptr[i];
        _cleanup_free_ char *d = cli_str(info, "digest");
        int64_t created = 0;
        berth_mp_get_i64(info, "created_at", &created, NULL);
        cli_table_row(t, d, cli_human_size_si(cli_u64(info, "size")),
                      created ? cli_human_age(created) : "-",
                      cli_labels_str(berth_mp_get(info, "labels")));
    }
    cli_table_print(t, stdout);
    return 0;
}

/* ---- fetch --------------------------------------------------------------- */

/* ctr has `content fetch`; berth's is `images fetch`: the same command. */
static int content_fetch(int argc, char **argv)
{
    if (!cmd_images)
        cli_die("command images is not available in this build");
    char **av = calloc((size_t)argc + 2, sizeof(char *));
    if (!av)
        cli_die("out of memory");
    av[0] = "images";
    av[1] = "fetch";
    for (int i = 1; i < argc; i++)
        av[i + 1] = argv[i];
    int rc = cmd_images(argc + 1, av);
    free(av);
    return rc;
}

/* ---- get ----------------------------------------------------------------- */

typedef struct {
    uint64_t written;
    int write_errno;
} get_state_t;

static int get_chunk(const msgpack_object *data, void *user)
{
    get_state_t *st = user;
    if (!data)
        return 0;
    if (data->type != MSGPACK_OBJECT_BIN && data->type != MSGPACK_OBJECT_STR)
        return 0;
    const char *p = data->type == MSGPACK_OBJECT_BIN ? data->via.bin.ptr : data->via.str.ptr;
    size_t n = data->type == MSGPACK_OBJECT_BIN ? data->via.bin.size : data->via.str.size;
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            st->write_errno = errno;
            return 1; /* stop the download */
        }
        p += w;
        n -= (size_t)w;
        st->written += (uint64_t)w;
    }
    return 0;
}

static int content_get(int argc, char **argv)
{
    static const struct option opts[] = {{0}};
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1)
        cli_flag_error("content get", o, argv);
    if (argc - optind != 1)
        cli_die("`berth content get` needs exactly one digest (see `berth content ls -q`)");
    berth_mpbuf_t b;
    cli_params_begin(&b, 1);
    berth_mp_kv_str(&b.pk, "digest", argv[optind]);
    get_state_t st = {0};
    _cleanup_error_ berth_error_t *err = NULL;
    const msgpack_object *res = NULL;
    int rc = cli_try_call("content.read", &b, get_chunk, NULL, &st, &res, &err);
    berth_mpbuf_destroy(&b);
    if (st.write_errno) {
        if (st.write_errno == EPIPE)
            return 0; /* the reader went away, like `cat | head` */
        cli_die("write to stdout: %s", strerror(st.write_errno));
    }
    if (rc < 0)
        cli_die_err(steal_pointer(&err));
    uint64_t size = cli_u64(res, "size");
    if (size != st.written)
        cli_die("content.read of %s reported %" PRIu64 " bytes but sent %" PRIu64, argv[optind],
                size, st.written);
    return 0;
}

/* ---- ingest -------------------------------------------------------------- */

typedef struct {
    const char *ref;
    bool have_offset; /* the server told us where to start */
    bool existed;
    uint64_t offset; /* where the server resumes */
    uint64_t sent;   /* bytes sent from offset on */
    uint64_t total;
    bool eof;
    uint8_t *buf;
    bool progress;
    uint64_t last_progress_ms;
    uint64_t t0;
    int err_errno;
    const char *err_what;
} ingest_state_t;

static void show_progress(ingest_state_t *st, bool final)
{
    if (!st->progress)
        return;
    uint64_t now = berth_mono_ms();
    if (!final && now - st->last_progress_ms < 100)
        return;
    st->last_progress_ms = now;
    uint64_t done = st->offset + st->sent;
    double secs = (double)(now - st->t0) / 1000.0;
    char total[64] = "";
    if (st->total)
        snprintf(total, sizeof(total), " / %s", cli_human_size(st->total));
    fprintf(stderr, "\r%s: %s%s  %s/s\033[K", st->ref, cli_human_size(done), total,
            cli_human_size(secs > 0 ? (uint64_t)((double)st->sent / secs) : 0));
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

/* Skips the bytes the server already has: by seeking when stdin is a file,
 * else by reading them (like ctr's seekReader). */
static int skip_input(ingest_state_t *st)
{
    if (st->offset == 0)
        return 0;
    if (lseek(STDIN_FILENO, (off_t)st->offset, SEEK_SET) == (off_t)st->offset)
        return 0;
    uint64_t left = st->offset;
    while (left > 0) {
        size_t want = left < INGEST_CHUNK ? (size_t)left : INGEST_CHUNK;
        ssize_t r = read(STDIN_FILENO, st->buf, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st->err_errno = errno;
            st->err_what = "read stdin";
            return -1;
        }
        if (r == 0) {
            st->err_errno = 0;
            st->err_what = "stdin ended before the resume offset";
            return -1;
        }
        left -= (uint64_t)r;
    }
    return 0;
}

static int ingest_stream(const msgpack_object *data, void *user)
{
    ingest_state_t *st = user;
    if (!data || data->type != MSGPACK_OBJECT_MAP || st->have_offset)
        return 0;
    uint64_t off = 0, total = 0;
    bool existed = false;
    berth_mp_get_u64(data, "offset", &off, NULL);
    berth_mp_get_u64(data, "total", &total, NULL);
    berth_mp_get_bool(data, "existed", &existed, NULL);
    st->offset = off;
    if (total)
        st->total = total;
    st->existed = existed;
    st->have_offset = true;
    if (!existed && skip_input(st) < 0)
        return 1; /* cancel: we cannot produce the right bytes */
    return 0;
}

static int ingest_upload(berth_client_t *c, unsigned credit, void *user)
{
    ingest_state_t *st = user;
    if (!st->have_offset)
        return 0; /* wait for the server to say where to start */
    if (st->existed || st->eof)
        return 1;
    for (unsigned i = 0; i < credit; i++) {
        size_t len = 0;
        while (len < INGEST_CHUNK) {
            ssize_t r = read(STDIN_FILENO, st->buf + len, INGEST_CHUNK - len);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                st->err_errno = errno;
                st->err_what = "read stdin";
                return -1;
            }
            if (r == 0) {
                st->eof = true;
                break;
            }
            len += (size_t)r;
        }
        if (len > 0) {
            if (berth_client_send_chunk(c, st->buf, len) < 0) {
                st->err_errno = ENOMEM;
                st->err_what = "queue a chunk";
                return -1;
            }
            st->sent += len;
        }
        show_progress(st, false);
        if (st->eof)
            return 1;
    }
    return 0;
}

static int content_ingest(int argc, char **argv)
{
    static const struct option opts[] = {
        {"expected-size", required_argument, NULL, 's'},
        {"expected-digest", required_argument, NULL, 'd'},
        {"label", required_argument, NULL, 'l'},
        {0},
    };
    uint64_t size = 0;
    const char *digest = NULL;
    char **labels = NULL;
    int nlabels = 0;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            if (!parse_u64_arg(optarg, &size))
                cli_die("--expected-size needs a number of bytes (got \"%s\")", optarg);
            break;
        case 'd':
            digest = optarg;
            break;
        case 'l':
            labels = realloc(labels, sizeof(*labels) * (size_t)(nlabels + 1));
            if (!labels)
                cli_die("out of memory");
            labels[nlabels++] = optarg;
            break;
        default:
            cli_flag_error("content ingest", o, argv);
        }
    }
    if (argc - optind != 1)
        cli_die("`berth content ingest` needs exactly one ref (a name for this upload, used to "
                "resume it), and reads the bytes from stdin");
    if (isatty(STDIN_FILENO))
        cli_die("`berth content ingest` reads the content from stdin; pipe or redirect a file");
    const char *ref = argv[optind];

    berth_mpbuf_t b;
    cli_params_begin(&b, 1 + (size ? 1 : 0) + (digest ? 1 : 0) + (nlabels ? 1 : 0));
    berth_mp_kv_str(&b.pk, "ref", ref);
    if (size)
        berth_mp_kv_u64(&b.pk, "total", size);
    if (digest)
        berth_mp_kv_str(&b.pk, "expected", digest);
    if (nlabels) {
        berth_mp_pack_str(&b.pk, "labels");
        cli_pack_labels(&b.pk, labels, nlabels);
    }
    free(labels);

    ingest_state_t st = {
        .ref = ref, .total = size, .progress = isatty(STDERR_FILENO), .t0 = berth_mono_ms()};
    st.buf = malloc(INGEST_CHUNK);
    if (!st.buf)
        cli_die("out of memory");
    _cleanup_error_ berth_error_t *err = NULL;
    const msgpack_object *res = NULL;
    int rc;
    /* A ref stays locked for a moment after its previous writer went away
     * (an interrupted run of this command, a restarted plugin): like ctr's
     * OpenWriter, retry for a while when the ingest could not be opened
     * (failed_precondition before the server named an offset). */
    for (unsigned delay_ms = 20, waited = 0;; waited += delay_ms, delay_ms *= 2) {
        rc = cli_try_call("content.write", &b, ingest_stream, ingest_upload, &st, &res, &err);
        if (rc == 0 || st.have_offset || err->code != BERTH_E_FAILED_PRECONDITION || waited >= 1500)
            break;
        berth_error_free(&err);
        usleep(delay_ms * 1000);
    }
    berth_mpbuf_destroy(&b);
    free(st.buf);
    if (st.err_what) {
        if (st.progress)
            fputc('\n', stderr);
        if (st.err_errno)
            cli_die("ingest %s: %s: %s (the ingest stays resumable: run the same command again)",
                    ref, st.err_what, strerror(st.err_errno));
        cli_die("ingest %s: %s (%" PRIu64 " bytes)", ref, st.err_what, st.offset);
    }
    if (rc < 0) {
        if (st.progress && st.sent)
            fputc('\n', stderr);
        cli_die_err(steal_pointer(&err));
    }
    show_progress(&st, true);
    _cleanup_free_ char *d = cli_str(res, "digest");
    puts(d);
    return 0;
}

/* ---- active -------------------------------------------------------------- */

static int content_active(int argc, char **argv)
{
    bool quiet = false, json = false;
    int first = cli_list_flags("content active", argc, argv, &quiet, &json);
    if (argc - first > 1)
        cli_die("`berth content active` takes at most one regular expression");
    const char *regex = argc - first == 1 ? argv[first] : NULL;
    berth_mpbuf_t b;
    cli_params_begin(&b, regex ? 1 : 0);
    if (regex)
        berth_mp_kv_str(&b.pk, "regex", regex);
    const msgpack_object *res = cli_call("content.active", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *sts = NULL;
    _cleanup_error_ berth_error_t *err = NULL;
    if (berth_mp_get_array(res, "statuses", &sts, &err) < 0)
        cli_die("berthd answered content.active without a list: %s", err->message);
    if (cli_list_plain(sts, json, quiet, "ref"))
        return 0;
    uint32_t n = sts ? sts->via.array.size : 0;
    /* Like ctr: tab-padded, sizes as go-units prints them. */
    cli_table_t *t = cli_table_new(3, "REF", "SIZE", "AGE");
    cli_table_style(t, CLI_TABLE_TABS);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *s = &sts->via.array.ptr[i];
        _cleanup_free_ char *ref = cli_str(s, "ref");
        int64_t started = 0;
        berth_mp_get_i64(s, "started_at", &started, NULL);
        cli_table_row(t, ref, cli_human_size_si(cli_u64(s, "offset")),
                      started ? cli_human_age(started) : "-");
    }
    cli_table_print(t, stdout);
    return 0;
}

/* ---- rm ------------------------------------------------------------------ */

static int content_rm(int argc, char **argv)
{
    bool sync = false;
    optind = cli_switch_flag("content rm", argc, argv, "sync", 0, &sync);
    if (optind >= argc)
        cli_die("`berth content rm` needs one or more digests (see `berth content ls -q`)");
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 2);
        berth_mp_kv_str(&b.pk, "digest", argv[i]);
        /* --sync: metadata answers after a collection that includes it. */
        berth_mp_kv_bool(&b.pk, "sync", sync && i == argc - 1);
        _cleanup_error_ berth_error_t *err = NULL;
        int r = cli_try_call("content.delete", &b, NULL, NULL, NULL, NULL, &err);
        berth_mpbuf_destroy(&b);
        if (r < 0) {
            /* Like ctr: something already gone is not a failure. */
            if (err->code == BERTH_E_NOT_FOUND)
                continue;
            fprintf(stderr, "berth: %s\n", err->message);
            rc = 1;
            continue;
        }
        puts(argv[i]);
    }
    return rc;
}

/* ---- abort --------------------------------------------------------------- */

static int content_abort(int argc, char **argv)
{
    static const struct option opts[] = {{0}};
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1)
        cli_flag_error("content abort", o, argv);
    if (optind >= argc)
        cli_die("`berth content abort` needs one or more ingest refs (see `berth content active`)");
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        berth_mpbuf_t b;
        cli_params_begin(&b, 1);
        berth_mp_kv_str(&b.pk, "ref", argv[i]);
        _cleanup_error_ berth_error_t *err = NULL;
        int r = cli_try_call("content.abort", &b, NULL, NULL, NULL, NULL, &err);
        berth_mpbuf_destroy(&b);
        if (r < 0) {
            fprintf(stderr, "berth: %s\n", err->message);
            rc = 1;
            continue;
        }
        puts(argv[i]);
    }
    return rc;
}

/* ---- label --------------------------------------------------------------- */

static int content_label(int argc, char **argv)
{
    static const struct option opts[] = {{0}};
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1)
        cli_flag_error("content label", o, argv);
    if (argc - optind < 1)
        cli_die("`berth content label` needs a digest and KEY=VALUE labels (KEY= removes one)");
    const char *digest = argv[optind];
    char **kv = argv + optind + 1;
    int n = argc - optind - 1;
    berth_mpbuf_t b;
    cli_params_begin(&b, 3);
    berth_mp_kv_str(&b.pk, "digest", digest);
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
        char *f = NULL;
        if (asprintf(&f, "labels.%.*s", (int)kl, kv[i]) < 0)
            cli_die("out of memory");
        berth_mp_pack_str(&b.pk, f);
        free(f);
    }
    const msgpack_object *res = cli_call("content.update", &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    const msgpack_object *info = berth_mp_get(res, "info");
    const char *s = cli_labels_str(berth_mp_get(info, "labels"));
    puts(strcmp(s, "-") ? s : "");
    return 0;
}

static const cli_subcmd_t content_cmds[] = {
    {"list|ls", "[-q] [--format json] [FILTER...]", "List committed content in the namespace",
     "Columns: DIGEST SIZE AGE LABELS, separated by tabs like ctr's (`cut -f` works);\n"
     "SIZE in decimal units (366B, 1.084MB).\n"
     "\n"
     "Options:\n"
     "  -q, --quiet       print only digests\n"
     "  --format FORMAT   table (default) or json: an array of {digest, size (bytes),\n"
     "                    created_at, updated_at (ns since the epoch), labels}\n"
     "\n"
     "Filters: labels.\"k\"==v, labels.k (presence), digest==sha256:...\n",
     content_ls, false},
    {"fetch", "REF [pull options]", "Fetch an image's content without unpacking it",
     "The same as `berth images fetch` (ctr has it in both places); see\n"
     "`berth images pull --help` for the options.\n",
     content_fetch, false},
    {"get", "DIGEST", "Write the bytes of a blob to stdout",
     "Examples:\n"
     "  berth content get sha256:... > blob\n"
     "  berth content get sha256:... | sha256sum\n",
     content_get, false},
    {"ingest", "REF [--expected-size N] [--expected-digest D] [--label K=V]...",
     "Store stdin as a blob, resumably, under the ingest ref REF",
     "The bytes are verified while they arrive and committed atomically; the digest\n"
     "is printed. If an ingest with this ref exists (an interrupted upload, even\n"
     "across a daemon crash), it resumes from its last durable offset: the bytes\n"
     "stdin has before that offset are skipped (seeked for a file, read otherwise).\n"
     "With --expected-digest, content that is already stored is not sent again.\n"
     "\n"
     "Options:\n"
     "  --expected-size N     refuse a different size\n"
     "  --expected-digest D   refuse different bytes (sha256:<hex>)\n"
     "  --label K=V           label the committed content (repeatable)\n"
     "\n"
     "Examples:\n"
     "  berth content ingest my-upload < layer.tar\n"
     "  curl -s URL | berth content ingest dl-1 --expected-digest sha256:...\n",
     content_ingest, false},
    {"active", "[-q] [--format json] [REGEX]", "List ingests in progress (or resumable)",
     "Columns: REF SIZE (bytes received) AGE, separated by tabs like ctr's. REGEX\n"
     "(POSIX extended) filters refs.\n"
     "\n"
     "Options:\n"
     "  -q, --quiet       print only refs\n"
     "  --format FORMAT   table (default) or json: exact offsets, totals, expected\n"
     "                    digests and start times of the ingests\n",
     content_active, false},
    {"abort", "REF...", "Remove unfinished ingests",
     "Removes the received bytes of ingests (see `berth content active`). An ingest a\n"
     "writer is using now is refused.\n",
     content_abort, false},
    {"rm|delete|del|remove", "DIGEST... [--sync]", "Remove content from the namespace",
     "The bytes are freed by garbage collection once no namespace references them;\n"
     "--sync waits until that collection has run.\n",
     content_rm, false},
    {"label", "DIGEST [KEY=VALUE...]", "Set or remove labels of content",
     "KEY= (empty value) removes the label; the resulting labels are printed.\n"
     "\n"
     "Example:\n"
     "  berth content label sha256:... containerd.io/gc.root=1\n",
     content_label, false},
    {0},
};

int cmd_content(int argc, char **argv)
{
    return cli_dispatch(argc, argv, "content", "Manage content", content_cmds);
}
