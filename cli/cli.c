/* SPDX-License-Identifier: Apache-2.0 */
/* Shared helpers of the berth CLI (cli.h): the connection, calls with
 * Ctrl-C → $cancel, errors, ctr-style tables, JSON output, human sizes and
 * durations, labels, and the subcommand dispatcher used by every group. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "berth/log.h"
#include "cli.h"
#include "cli_priv.h"

cli_globals_t cli_g = {
    .address = "/run/berth/berth.sock",
    .ns = "default",
};
bool cli_ns_explicit;

static berth_client_t *g_client;
static volatile sig_atomic_t g_in_call;
static volatile sig_atomic_t g_sigint;

/* --- errors --------------------------------------------------------------- */

void cli_die(const char *fmt, ...)
{
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fputs("berth: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* What to do next, for errors whose message does not already say it (the
 * convention for a message that does: a `command` in backquotes or an
 * " — " clause). */
static const char *next_step(const berth_error_t *err)
{
    const char *m = err->message ? err->message : "";
    if (strchr(m, '`') || strstr(m, " \xe2\x80\x94 "))
        return "";
    switch (err->code) {
    case BERTH_E_DEADLINE_EXCEEDED:
        if (strstr(m, "--timeout") || strstr(m, "--connect-timeout"))
            return "";
        return cli_g.timeout_ms ? " \xe2\x80\x94 allow more time with a larger --timeout"
                                : " \xe2\x80\x94 allow more time with --timeout, e.g. --timeout 5m";
    case BERTH_E_UNAVAILABLE:
        return " \xe2\x80\x94 check `berth plugins ls` and berthd's log (journalctl -u berth), "
               "then retry";
    case BERTH_E_UNIMPLEMENTED:
        return " \xe2\x80\x94 the plugin serving it is not running or not configured; check "
               "`berth plugins ls`";
    case BERTH_E_PERMISSION_DENIED:
        return " \xe2\x80\x94 run as root or as a member of the group set in berthd's config";
    case BERTH_E_INTERNAL:
        return " \xe2\x80\x94 this is a bug in berth; berthd's log has the details "
               "(journalctl -u berth)";
    default:
        return "";
    }
}

void cli_die_err(berth_error_t *err)
{
    if (!err)
        cli_die("unknown error");
    if (cli_g.debug)
        cli_die("%s%s (%s)", err->message, next_step(err), berth_code_name(err->code));
    cli_die("%s%s", err->message, next_step(err));
}

/* --- connection and calls ------------------------------------------------ */

static void on_sigint(int sig)
{
    (void)sig;
    /* A second Ctrl-C does not wait for the daemon to confirm the cancel. */
    if (g_sigint)
        _exit(130);
    g_sigint = 1;
    if (g_in_call && g_client)
        berth_client_interrupt(g_client);
    else
        _exit(130);
}

void cli_setup_signals(void)
{
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

void cli_cleanup(void)
{
    berth_client_free(g_client);
    g_client = NULL;
}

berth_client_t *cli_client(void)
{
    if (g_client)
        return g_client;
    _cleanup_error_ berth_error_t *err = NULL;
    g_client = berth_client_connect(cli_g.address, cli_g.connect_timeout_ms, &err);
    if (!g_client)
        cli_die_err(err);
    return g_client;
}

/* Every request carries a fresh request_id (docs/protocol.md, "Replays"):
 * where its owner deduplicates by it (methods registered `replay`), berthd
 * re-sends a mutation that was in flight when the owner crashed, and the
 * owner applies it once. Elsewhere it is ignored. */
static void new_request_id(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t r[16];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        /* No entropy: still unique enough within this process and boot. */
        static unsigned seq;
        uint64_t t = (uint64_t)berth_now_ns();
        uint64_t v[2] = {t, ((uint64_t)getpid() << 32) | ++seq};
        memcpy(r, v, sizeof(r));
    }
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[r[i] >> 4];
        out[2 * i + 1] = hex[r[i] & 15];
    }
    out[32] = '\0';
}

void cli_params_begin(berth_mpbuf_t *b, uint32_t n)
{
    char rid[33];
    new_request_id(rid);
    berth_mpbuf_init(b);
    msgpack_pack_map(&b->pk, n + 2);
    berth_mp_kv_str(&b->pk, "namespace", cli_g.ns);
    berth_mp_kv_str(&b->pk, "request_id", rid);
}

int cli_try_call(const char *method, berth_mpbuf_t *params, berth_client_stream_cb stream_cb,
                 berth_client_upload_cb upload_cb, void *user, const msgpack_object **out,
                 berth_error_t **err)
{
    berth_client_t *c = cli_client();
    berth_mpbuf_t empty;
    bool own = false;
    if (!params) {
        cli_params_begin(&empty, 0);
        params = &empty;
        own = true;
    }
    berth_result_t res = {0};
    g_in_call = 1;
    int r = berth_client_call(c, method, params->buf.data, params->buf.size, cli_g.timeout_ms,
                              stream_cb, upload_cb, user, &res, err);
    g_in_call = 0;
    if (own)
        berth_mpbuf_destroy(&empty);
    if (g_sigint) {
        /* Ctrl-C: the call was cancelled; leave like a shell job does. */
        fflush(stdout);
        exit(130);
    }
    if (r < 0)
        return -1;
    if (out)
        *out = res.result;
    return 0;
}

const msgpack_object *cli_call(const char *method, berth_mpbuf_t *params,
                               berth_client_stream_cb stream_cb, berth_client_upload_cb upload_cb,
                               void *user)
{
    _cleanup_error_ berth_error_t *err = NULL;
    const msgpack_object *res = NULL;
    if (cli_try_call(method, params, stream_cb, upload_cb, user, &res, &err) < 0)
        cli_die_err(err);
    return res;
}

/* --- tables ------------------------------------------------------------------ */

struct cli_table_s {
    int ncols;
    unsigned style; /* CLI_TABLE_* */
    size_t nrows, cap;
    char **cells; /* nrows * ncols, row 0 = headers */
};

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        cli_die("out of memory");
    return d;
}

static void table_add(cli_table_t *t, va_list ap)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = realloc(t->cells, t->cap * (size_t)t->ncols * sizeof(char *));
        if (!t->cells)
            cli_die("out of memory");
    }
    for (int i = 0; i < t->ncols; i++) {
        const char *s = va_arg(ap, const char *);
        t->cells[t->nrows * (size_t)t->ncols + (size_t)i] = xstrdup(s ? s : "-");
    }
    t->nrows++;
}

cli_table_t *cli_table_new(int ncols, ...)
{
    cli_table_t *t = calloc(1, sizeof(*t));
    if (!t)
        cli_die("out of memory");
    t->ncols = ncols;
    va_list ap;
    va_start(ap, ncols);
    table_add(t, ap);
    va_end(ap);
    return t;
}

void cli_table_row(cli_table_t *t, ...)
{
    va_list ap;
    va_start(ap, t);
    table_add(t, ap);
    va_end(ap);
}

/* Display width in runes, as Go's tabwriter counts it. */
static size_t text_width(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

void cli_table_style(cli_table_t *t, unsigned flags)
{
    t->style = flags;
}

void cli_table_free(cli_table_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

/* Like ctr's tabwriter.NewWriter(w, 1, 8, 1, ' ', 0) with every cell
 * terminated by a tab: each column is as wide as its widest cell plus one
 * space, the last one included. CLI_TABLE_TABS pads with tabs instead
 * (padchar '\t': the column width rounded up to a multiple of 8), and the
 * OPEN_LAST styles leave the last cell unterminated, so it is printed as
 * it is and does not count for the column's width. */
void cli_table_print(cli_table_t *t, FILE *out)
{
    size_t *w = calloc((size_t)t->ncols, sizeof(size_t));
    if (!w)
        cli_die("out of memory");
    int last = t->ncols - 1;
    for (size_t r = 0; r < t->nrows; r++)
        for (int c = 0; c < t->ncols; c++) {
            bool open = c == last && ((t->style & CLI_TABLE_OPEN_LAST) ||
                                      (r > 0 && (t->style & CLI_TABLE_OPEN_LAST_ROWS)));
            if (open)
                continue;
            size_t tw = text_width(t->cells[r * (size_t)t->ncols + (size_t)c]);
            if (tw > w[c])
                w[c] = tw;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * (size_t)t->ncols + (size_t)c];
            bool open = c == last && ((t->style & CLI_TABLE_OPEN_LAST) ||
                                      (r > 0 && (t->style & CLI_TABLE_OPEN_LAST_ROWS)));
            fputs(s, out);
            if (!open) {
                size_t cellw = w[c] + 1, textw = text_width(s);
                if (t->style & CLI_TABLE_TABS) {
                    cellw = (cellw + 7) / 8 * 8;
                    for (size_t n = (cellw - textw + 7) / 8; n > 0; n--)
                        fputc('\t', out);
                } else {
                    for (size_t pad = cellw - textw; pad > 0; pad--)
                        fputc(' ', out);
                }
            }
            free(t->cells[r * (size_t)t->ncols + (size_t)c]);
        }
        fputc('\n', out);
    }
    free(w);
    free(t->cells);
    free(t);
}

/* --- JSON ------------------------------------------------------------------- */

static void put_base64(const uint8_t *p, size_t n, FILE *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', out);
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        fputc(tbl[v >> 18], out);
        fputc(tbl[(v >> 12) & 63], out);
        fputc(tbl[(v >> 6) & 63], out);
        fputc(tbl[v & 63], out);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        fputc(tbl[v >> 18], out);
        fputc(tbl[(v >> 12) & 63], out);
        fputs("==", out);
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        fputc(tbl[v >> 18], out);
        fputc(tbl[(v >> 12) & 63], out);
        fputc(tbl[(v >> 6) & 63], out);
        fputc('=', out);
    }
    fputc('"', out);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A JSON string; bytes that are not valid UTF-8 become U+FFFD so that the
 * output always parses. */
static void put_json_str(const char *s, size_t n, FILE *out)
{
    const uint8_t *p = (const uint8_t *)s;
    fputc('"', out);
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        switch (c) {
        case '"':
            fputs("\\\"", out);
            i++;
            continue;
        case '\\':
            fputs("\\\\", out);
            i++;
            continue;
        case '\n':
            fputs("\\n", out);
            i++;
            continue;
        case '\r':
            fputs("\\r", out);
            i++;
            continue;
        case '\t':
            fputs("\\t", out);
            i++;
            continue;
        case '\b':
            fputs("\\b", out);
            i++;
            continue;
        case '\f':
            fputs("\\f", out);
            i++;
            continue;
        }
        if (c < 0x20 || c == 0x7f) {
            fprintf(out, "\\u%04x", c);
            i++;
            continue;
        }
        size_t l = utf8_len(p + i, n - i);
        if (l == 0) {
            fputs("\\ufffd", out);
            i++;
            continue;
        }
        fwrite(p + i, 1, l, out);
        i += l;
    }
    fputc('"', out);
}

static void put_indent(int indent, int level, FILE *out)
{
    fputc('\n', out);
    for (int i = 0; i < indent * level; i++)
        fputc(' ', out);
}

static void put_double(double d, FILE *out)
{
    if (isnan(d) || isinf(d)) {
        fputs("null", out);
        return;
    }
    char b[40];
    snprintf(b, sizeof(b), "%.15g", d);
    if (strtod(b, NULL) != d)
        snprintf(b, sizeof(b), "%.17g", d);
    fputs(b, out);
}

/* A map key: strings as they are, anything else as its JSON text quoted. */
static void put_json_key(const msgpack_object *k, FILE *out)
{
    char b[48];
    switch (k->type) {
    case MSGPACK_OBJECT_STR:
        put_json_str(k->via.str.ptr, k->via.str.size, out);
        return;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(b, sizeof(b), "%" PRIu64, k->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(b, sizeof(b), "%" PRId64, k->via.i64);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        snprintf(b, sizeof(b), "%s", k->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_NIL:
        snprintf(b, sizeof(b), "null");
        break;
    case MSGPACK_OBJECT_BIN:
        put_base64((const uint8_t *)k->via.bin.ptr, k->via.bin.size, out);
        return;
    default:
        snprintf(b, sizeof(b), "?");
        break;
    }
    put_json_str(b, strlen(b), out);
}

static void put_json(const msgpack_object *o, int indent, int level, FILE *out)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        fputs("null", out);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        fputs(o->via.boolean ? "true" : "false", out);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        fprintf(out, "%" PRIu64, o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        fprintf(out, "%" PRId64, o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        put_double(o->via.f64, out);
        break;
    case MSGPACK_OBJECT_STR:
        put_json_str(o->via.str.ptr, o->via.str.size, out);
        break;
    case MSGPACK_OBJECT_BIN:
        put_base64((const uint8_t *)o->via.bin.ptr, o->via.bin.size, out);
        break;
    case MSGPACK_OBJECT_EXT:
        put_base64((const uint8_t *)o->via.ext.ptr, o->via.ext.size, out);
        break;
    case MSGPACK_OBJECT_ARRAY:
        if (o->via.array.size == 0) {
            fputs("[]", out);
            break;
        }
        fputc('[', out);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                fputc(',', out);
            if (indent)
                put_indent(indent, level + 1, out);
            put_json(&o->via.array.ptr[i], indent, level + 1, out);
        }
        if (indent)
            put_indent(indent, level, out);
        fputc(']', out);
        break;
    case MSGPACK_OBJECT_MAP:
        if (o->via.map.size == 0) {
            fputs("{}", out);
            break;
        }
        fputc('{', out);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i)
                fputc(',', out);
            if (indent)
                put_indent(indent, level + 1, out);
            put_json_key(&o->via.map.ptr[i].key, out);
            fputs(indent ? ": " : ":", out);
            put_json(&o->via.map.ptr[i].val, indent, level + 1, out);
        }
        if (indent)
            put_indent(indent, level, out);
        fputc('}', out);
        break;
    default:
        fputs("null", out);
        break;
    }
}

void cli_print_json(const msgpack_object *o, FILE *out)
{
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    put_json(o ? o : &nil, 4, 0, out);
    fputc('\n', out);
}

void cli_print_json_compact(const msgpack_object *o, FILE *out)
{
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    put_json(o ? o : &nil, 0, 0, out);
}

void cli_print_packed_json(const void *data, size_t len)
{
    msgpack_zone *z = NULL;
    msgpack_object o;
    berth_error_t *err = NULL;
    if (berth_mp_unpack(data, len, NULL, &z, &o, &err) < 0)
        cli_die_err(err);
    cli_print_json(&o, stdout);
    msgpack_zone_free(z);
}

void cli_print_packed_array(const berth_mpbuf_t *items, uint32_t n)
{
    berth_mpbuf_t arr;
    berth_mpbuf_init(&arr);
    msgpack_pack_array(&arr.pk, n);
    msgpack_sbuffer_write(&arr.buf, items->buf.data, items->buf.size);
    cli_print_packed_json(arr.buf.data, arr.buf.size);
    berth_mpbuf_destroy(&arr);
}

const msgpack_object *cli_call_filtered(const char *method, char *const *filters, int nf)
{
    berth_mpbuf_t b;
    cli_params_begin(&b, nf ? 1 : 0);
    if (nf) {
        berth_mp_pack_str(&b.pk, "filters");
        msgpack_pack_array(&b.pk, (uint32_t)nf);
        for (int i = 0; i < nf; i++)
            berth_mp_pack_str(&b.pk, filters[i]);
    }
    const msgpack_object *res = cli_call(method, &b, NULL, NULL, NULL);
    berth_mpbuf_destroy(&b);
    return res;
}

bool cli_list_plain(const msgpack_object *list, bool json, bool quiet, const char *key)
{
    msgpack_object empty = {.type = MSGPACK_OBJECT_ARRAY};
    if (!list || list->type != MSGPACK_OBJECT_ARRAY)
        list = &empty;
    if (json) {
        cli_print_json(list, stdout);
        return true;
    }
    if (!quiet)
        return false;
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        _cleanup_free_ char *v = cli_str(&list->via.array.ptr[i], key);
        puts(v);
    }
    return true;
}

bool cli_format_is_json(const char *fmt)
{
    if (!fmt || !*fmt || strcmp(fmt, "table") == 0)
        return false;
    if (strcmp(fmt, "json") == 0)
        return true;
    cli_die("unknown --format %s: use table or json", fmt);
}

int cli_list_flags(const char *cmd, int argc, char **argv, bool *quiet, bool *json)
{
    static const struct option opts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"format", required_argument, NULL, 'f'},
        {0},
    };
    const char *format = NULL;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, quiet ? ":q" : ":", opts, NULL)) != -1) {
        if (o == 'q' && quiet)
            *quiet = true;
        else if (o == 'f')
            format = optarg;
        else
            cli_flag_error(cmd, o, argv);
    }
    *json = cli_format_is_json(format);
    return optind;
}

int cli_switch_flag(const char *cmd, int argc, char **argv, const char *name, char shortopt,
                    bool *on)
{
    const struct option opts[] = {{name, no_argument, NULL, 1}, {0}};
    const char shortopts[] = {':', shortopt, '\0'};
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
        if (o == 1 || (shortopt && o == shortopt))
            *on = true;
        else
            cli_flag_error(cmd, o, argv);
    }
    return optind;
}

/* --- human formats ----------------------------------------------------------- */

static char *rot_buf(void)
{
    static char bufs[8][64];
    static unsigned next;
    return bufs[next++ % 8];
}

/* n divided by base until below it, printed with fmt ("%.1f %s"). */
static const char *scaled(uint64_t n, double base, const char *const units[7], const char *fmt)
{
    char *b = rot_buf();
    double v = (double)n;
    size_t i = 0;
    while (v >= base && i < 6) {
        v /= base;
        i++;
    }
    snprintf(b, 64, fmt, v, units[i]);
    return b;
}

static const char *const iec_units[7] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};

const char *cli_human_size(uint64_t n)
{
    /* ctr's progress.Bytes ("%02.1f %s", base 1024) above 1 KiB; bytes as
     * "301B" like go-units HumanSize prints them in `content ls`. */
    if (n < 1024) {
        char *b = rot_buf();
        snprintf(b, 64, "%" PRIu64 "B", n);
        return b;
    }
    return cli_bytes(n);
}

const char *cli_bytes(uint64_t n)
{
    /* containerd's progress.Bytes: units.CustomSize("%02.1f %s", size,
     * 1024, {B, KiB, ...}). */
    return scaled(n, 1024.0, iec_units, "%.1f %s");
}

const char *cli_human_size_si(uint64_t n)
{
    /* go-units HumanSize: HumanSizeWithPrecision(size, 4), i.e. "%.4g%s"
     * in base 1000 (Go's %g trims trailing zeros, like C's). */
    static const char *const units[7] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    return scaled(n, 1000.0, units, "%.4g%s");
}

const char *cli_human_duration(uint64_t ns)
{
    /* docker/go-units HumanDuration, which ctr prints for ages. */
    char *b = rot_buf();
    uint64_t seconds = ns / 1000000000ull;
    uint64_t minutes = seconds / 60;
    uint64_t hours = (ns + 1800000000000ull) / 3600000000000ull; /* rounded */
    if (seconds < 1)
        snprintf(b, 64, "Less than a second");
    else if (seconds == 1)
        snprintf(b, 64, "1 second");
    else if (seconds < 60)
        snprintf(b, 64, "%" PRIu64 " seconds", seconds);
    else if (minutes == 1)
        snprintf(b, 64, "About a minute");
    else if (minutes < 60)
        snprintf(b, 64, "%" PRIu64 " minutes", minutes);
    else if (hours == 1)
        snprintf(b, 64, "About an hour");
    else if (hours < 48)
        snprintf(b, 64, "%" PRIu64 " hours", hours);
    else if (hours < 24 * 7 * 2)
        snprintf(b, 64, "%" PRIu64 " days", hours / 24);
    else if (hours < 24 * 30 * 2)
        snprintf(b, 64, "%" PRIu64 " weeks", hours / 24 / 7);
    else if (hours < 24 * 365 * 2)
        snprintf(b, 64, "%" PRIu64 " months", hours / 24 / 30);
    else
        snprintf(b, 64, "%" PRIu64 " years", (uint64_t)(ns / 3600000000000ull / 24 / 365));
    return b;
}

const char *cli_human_age(int64_t ts_ns)
{
    int64_t now = berth_now_ns();
    return cli_human_duration(now > ts_ns ? (uint64_t)(now - ts_ns) : 0);
}

static void split_ns(int64_t ts_ns, time_t *sec, long *nsec)
{
    int64_t s = ts_ns / 1000000000LL, r = ts_ns % 1000000000LL;
    if (r < 0) {
        r += 1000000000LL;
        s--;
    }
    *sec = (time_t)s;
    *nsec = (long)r;
}

const char *cli_rfc3339(int64_t ts_ns)
{
    char *b = rot_buf();
    time_t s;
    long nsec;
    split_ns(ts_ns, &s, &nsec);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(b, 64, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

/* ts_ns as `date_fmt` (strftime, UTC), then Go's ".999999999" (trailing
 * zeros trimmed, nothing for whole seconds), then `suffix`. */
static const char *format_ns(int64_t ts_ns, const char *date_fmt, const char *suffix)
{
    char *b = rot_buf();
    time_t s;
    long nsec;
    split_ns(ts_ns, &s, &nsec);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(b, 64, date_fmt, &tm);
    if (nsec) {
        char frac[16];
        snprintf(frac, sizeof(frac), "%09ld", nsec);
        for (int i = 8; i > 0 && frac[i] == '0'; i--)
            frac[i] = 0;
        n += (size_t)snprintf(b + n, 64 - n, ".%s", frac);
    }
    snprintf(b + n, 64 - n, "%s", suffix);
    return b;
}

const char *cli_rfc3339_nano(int64_t ts_ns)
{
    return format_ns(ts_ns, "%Y-%m-%dT%H:%M:%S", "Z");
}

const char *cli_go_time(int64_t ts_ns)
{
    return format_ns(ts_ns, "%Y-%m-%d %H:%M:%S", " +0000 UTC");
}

int cli_parse_duration_ms(const char *s, uint32_t *out_ms)
{
    if (!s || !*s)
        return -1;
    char *end;
    /* A bare number is seconds. */
    double v = strtod(s, &end);
    if (end != s && *end == 0) {
        if (v < 0 || v * 1000.0 > UINT32_MAX || isnan(v))
            return -1;
        *out_ms = (uint32_t)(v * 1000.0 + 0.5);
        return 0;
    }
    double total = 0;
    const char *p = s;
    while (*p) {
        double x = strtod(p, &end);
        if (end == p || x < 0 || isnan(x))
            return -1;
        p = end;
        double mul;
        if (strncmp(p, "ns", 2) == 0) {
            mul = 1e-6;
            p += 2;
        } else if (strncmp(p, "us", 2) == 0 || strncmp(p, "\xc2\xb5s", 3) == 0) {
            mul = 1e-3;
            p += (*p == 'u') ? 2 : 3;
        } else if (strncmp(p, "ms", 2) == 0) {
            mul = 1;
            p += 2;
        } else if (*p == 's') {
            mul = 1000;
            p++;
        } else if (*p == 'm') {
            mul = 60000;
            p++;
        } else if (*p == 'h') {
            mul = 3600000;
            p++;
        } else {
            return -1;
        }
        total += x * mul;
    }
    if (total > UINT32_MAX)
        return -1;
    *out_ms = (uint32_t)(total + 0.5);
    if (*out_ms == 0 && total > 0)
        *out_ms = 1;
    return 0;
}

/* --- labels and fields ---------------------------------------------------------- */

int cli_label_split(const char *kv, size_t *klen, const char **val)
{
    const char *eq = strchr(kv, '=');
    if (eq) {
        *klen = (size_t)(eq - kv);
        *val = eq + 1;
    } else {
        *klen = strlen(kv);
        *val = "true";
    }
    return *klen ? 0 : -1;
}

void cli_pack_labels(msgpack_packer *pk, char **kv, int n)
{
    /* A later label overrides an earlier one with the same key (a msgpack
     * map must not hold a key twice). */
    uint32_t count = 0;
    for (int i = 0; i < n; i++) {
        size_t kl;
        const char *v;
        if (cli_label_split(kv[i], &kl, &v) < 0)
            cli_die("invalid label \"%s\": expected KEY=VALUE with a non-empty key", kv[i]);
        bool dup = false;
        for (int j = i + 1; j < n && !dup; j++) {
            size_t kl2;
            const char *v2;
            if (cli_label_split(kv[j], &kl2, &v2) == 0 && kl2 == kl &&
                memcmp(kv[i], kv[j], kl) == 0)
                dup = true;
        }
        if (!dup)
            count++;
    }
    msgpack_pack_map(pk, count);
    for (int i = 0; i < n; i++) {
        size_t kl;
        const char *v;
        cli_label_split(kv[i], &kl, &v);
        bool dup = false;
        for (int j = i + 1; j < n && !dup; j++) {
            size_t kl2;
            const char *v2;
            if (cli_label_split(kv[j], &kl2, &v2) == 0 && kl2 == kl &&
                memcmp(kv[i], kv[j], kl) == 0)
                dup = true;
        }
        if (dup)
            continue;
        berth_mp_pack_strn(pk, kv[i], kl);
        berth_mp_pack_str(pk, v);
    }
}

static int cmp_kv(const void *a, const void *b)
{
    const msgpack_object_kv *x = *(const msgpack_object_kv *const *)a;
    const msgpack_object_kv *y = *(const msgpack_object_kv *const *)b;
    uint32_t xl = x->key.type == MSGPACK_OBJECT_STR ? x->key.via.str.size : 0;
    uint32_t yl = y->key.type == MSGPACK_OBJECT_STR ? y->key.via.str.size : 0;
    int c = memcmp(x->key.via.str.ptr, y->key.via.str.ptr, xl < yl ? xl : yl);
    return c ? c : (xl > yl) - (xl < yl);
}

const char *cli_labels_str(const msgpack_object *labels)
{
    static char *buf;
    if (!labels || labels->type != MSGPACK_OBJECT_MAP || labels->via.map.size == 0)
        return "-";
    uint32_t n = labels->via.map.size;
    const msgpack_object_kv **kvs = calloc(n, sizeof(*kvs));
    if (!kvs)
        cli_die("out of memory");
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        if (labels->via.map.ptr[i].key.type == MSGPACK_OBJECT_STR)
            kvs[m++] = &labels->via.map.ptr[i];
    qsort(kvs, m, sizeof(*kvs), cmp_kv);
    free(buf);
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        cli_die("out of memory");
    for (uint32_t i = 0; i < m; i++) {
        if (i)
            fputc(',', f);
        fwrite(kvs[i]->key.via.str.ptr, 1, kvs[i]->key.via.str.size, f);
        fputc('=', f);
        const msgpack_object *v = &kvs[i]->val;
        if (v->type == MSGPACK_OBJECT_STR)
            fwrite(v->via.str.ptr, 1, v->via.str.size, f);
        else
            cli_print_json_compact(v, f);
    }
    fclose(f);
    free(kvs);
    return m ? buf : "-";
}

char *cli_str(const msgpack_object *map, const char *key)
{
    const msgpack_object *v = berth_mp_get(map, key);
    if (!v || v->type != MSGPACK_OBJECT_STR)
        return xstrdup("");
    char *s = malloc(v->via.str.size + 1);
    if (!s)
        cli_die("out of memory");
    memcpy(s, v->via.str.ptr, v->via.str.size);
    s[v->via.str.size] = 0;
    return s;
}

uint64_t cli_u64(const msgpack_object *map, const char *key)
{
    const msgpack_object *v = berth_mp_get(map, key);
    if (!v)
        return 0;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return v->via.u64;
    if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
        return v->via.f64 > 0 ? (uint64_t)v->via.f64 : 0;
    return 0;
}

/* --- subcommand dispatch --------------------------------------------------------- */

static bool name_matches(const char *names, const char *word)
{
    size_t wl = strlen(word);
    const char *p = names;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == wl && memcmp(p, word, l) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

/* "list|ls" → "list, ls" */
static void names_display(const char *names, char *out, size_t n)
{
    size_t j = 0;
    for (const char *p = names; *p && j + 3 < n; p++) {
        if (*p == '|') {
            out[j++] = ',';
            out[j++] = ' ';
        } else {
            out[j++] = *p;
        }
    }
    out[j] = 0;
}

static size_t first_name_len(const char *names)
{
    const char *bar = strchr(names, '|');
    return bar ? (size_t)(bar - names) : strlen(names);
}

static void group_help(FILE *out, const char *group, const char *help, const cli_subcmd_t *subs)
{
    fprintf(out, "Usage: berth %s COMMAND [OPTIONS] [ARGS...]\n\n%s\n\nCommands:\n", group, help);
    size_t w = 0;
    char disp[128];
    for (const cli_subcmd_t *s = subs; s->names; s++) {
        names_display(s->names, disp, sizeof(disp));
        if (strlen(disp) > w)
            w = strlen(disp);
    }
    for (const cli_subcmd_t *s = subs; s->names; s++) {
        names_display(s->names, disp, sizeof(disp));
        fprintf(out, "  %-*s  %s\n", (int)w, disp, s->help);
    }
    fprintf(out, "\nRun `berth %s COMMAND --help` for the options of a command.\n", group);
}

static void sub_help(FILE *out, const char *group, const cli_subcmd_t *s)
{
    fprintf(out, "Usage: berth %s %.*s%s%s\n\n%s\n", group, (int)first_name_len(s->names), s->names,
            s->args && *s->args ? " " : "", s->args ? s->args : "", s->help);
    if (strchr(s->names, '|')) {
        char disp[128];
        names_display(s->names, disp, sizeof(disp));
        fprintf(out, "\nAliases: %s\n", disp);
    }
    if (s->details && *s->details)
        fprintf(out, "\n%s%s", s->details, s->details[strlen(s->details) - 1] == '\n' ? "" : "\n");
}

static bool is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

int cli_dispatch(int argc, char **argv, const char *group, const char *help,
                 const cli_subcmd_t *subs)
{
    if (argc < 2 || is_help(argv[1])) {
        group_help(stdout, group, help, subs);
        return 0;
    }
    if (strcmp(argv[1], "help") == 0) {
        if (argc < 3) {
            group_help(stdout, group, help, subs);
            return 0;
        }
        for (const cli_subcmd_t *s = subs; s->names; s++)
            if (name_matches(s->names, argv[2])) {
                sub_help(stdout, group, s);
                return 0;
            }
        cli_die("unknown command \"%s %s\"; run `berth %s --help` for the list", group, argv[2],
                group);
    }
    for (const cli_subcmd_t *s = subs; s->names; s++) {
        if (!name_matches(s->names, argv[1]))
            continue;
        int limit = s->raw_args ? (argc > 2 ? 3 : argc) : argc;
        for (int i = 2; i < limit; i++) {
            if (strcmp(argv[i], "--") == 0)
                break;
            if (is_help(argv[i])) {
                sub_help(stdout, group, s);
                return 0;
            }
        }
        return s->fn(argc - 1, argv + 1);
    }
    cli_die("unknown command \"%s %s\"; run `berth %s --help` for the list", group, argv[1], group);
}

void cli_flag_error(const char *cmd, int ret, char **argv)
{
    const char *bad = optind > 0 ? argv[optind - 1] : "?";
    if (ret == ':')
        cli_die("flag %s of `berth %s` needs a value; run `berth %s --help`", bad, cmd, cmd);
    if (optopt && optopt != '?' && optopt != ':')
        cli_die("unknown flag -%c for `berth %s`; run `berth %s --help`", optopt, cmd, cmd);
    cli_die("unknown flag %s for `berth %s`; run `berth %s --help`", bad, cmd, cmd);
}
