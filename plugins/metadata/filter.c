/* SPDX-License-Identifier: Apache-2.0 */
/* containerd-style list filters: parser and matcher.
 *
 *   filters   := selector ("," selector)*
 *   selector  := fieldpath [op value]
 *   fieldpath := field ("." field)*
 *   field     := [A-Za-z0-9_]+ | "quoted"
 *   op        := "==" | "!=" | "~="
 *   value     := "quoted" | /quoted/ | run of chars other than ',' and space
 *
 * Whitespace between tokens is ignored. `~=` values are Go regexp (RE2)
 * syntax, as containerd compiles them, matched in linear time by re.c. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "filter.h"
#include "re.h"

enum op { OP_PRESENT, OP_EQ, OP_NE, OP_MATCH };

typedef struct {
    char **path;
    size_t n_path;
    enum op op;
    char *value;
    meta_re_t *re; /* OP_MATCH */
} selector_t;

typedef struct {
    selector_t *sel;
    size_t n;
} conj_t;

struct meta_filter_s {
    conj_t *alt;
    size_t n;
};

typedef struct {
    const char *s;
    size_t pos, len;
    const char *why;
    char detail[256]; /* appended after the position when set */
    size_t *re_insts; /* regex instructions so far in this filter list */
} parser_t;

/* Matching costs up to (instructions x value length) per regex and record
 * (re.h); META_RE_MAX_INST bounds one regex, this all of a request's. */
enum { FILTER_MAX_RE_INSTS = 5 * META_RE_MAX_INST };

static void sel_free(selector_t *s)
{
    for (size_t i = 0; i < s->n_path; i++)
        free(s->path[i]);
    free(s->path);
    free(s->value);
    meta_re_free(s->re);
}

void meta_filter_free(meta_filter_t *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++) {
        for (size_t j = 0; j < f->alt[i].n; j++)
            sel_free(&f->alt[i].sel[j]);
        free(f->alt[i].sel);
    }
    free(f->alt);
    free(f);
}

static void skip_ws(parser_t *p)
{
    while (p->pos < p->len && isspace((unsigned char)p->s[p->pos]))
        p->pos++;
}

static bool is_field_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* Reads a quoted string starting at p->pos (the quote char q); handles \q,
 * \\ and the usual escapes. */
static char *scan_quoted(parser_t *p, char q)
{
    p->pos++; /* opening quote */
    char *out = malloc(p->len - p->pos + 1);
    if (!out) {
        p->why = "out of memory";
        return NULL;
    }
    size_t o = 0;
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == q) {
            p->pos++;
            out[o] = 0;
            return out;
        }
        if (c == '\\' && p->pos + 1 < p->len) {
            char e = p->s[p->pos + 1];
            p->pos += 2;
            switch (e) {
            case 'n':
                out[o++] = '\n';
                break;
            case 't':
                out[o++] = '\t';
                break;
            case 'r':
                out[o++] = '\r';
                break;
            default:
                /* In a /regex/ keep escapes other than \/ for the regex. */
                if (q == '/' && e != '/')
                    out[o++] = '\\';
                out[o++] = e;
            }
            continue;
        }
        out[o++] = c;
        p->pos++;
    }
    free(out);
    p->why = "unterminated quoted string";
    return NULL;
}

static char *scan_field(parser_t *p)
{
    skip_ws(p);
    if (p->pos >= p->len) {
        p->why = "expected field name";
        return NULL;
    }
    if (p->s[p->pos] == '"') {
        char *f = scan_quoted(p, '"');
        if (f && !*f) {
            free(f);
            p->why = "empty field name";
            return NULL;
        }
        return f;
    }
    size_t start = p->pos;
    while (p->pos < p->len && is_field_char(p->s[p->pos]))
        p->pos++;
    if (p->pos == start) {
        p->why = "expected field name";
        return NULL;
    }
    return strndup(p->s + start, p->pos - start);
}

static char *scan_value(parser_t *p, bool *quoted)
{
    skip_ws(p);
    *quoted = false;
    if (p->pos >= p->len) {
        p->why = "expected value";
        return NULL;
    }
    char c = p->s[p->pos];
    if (c == '"' || c == '/') {
        *quoted = true;
        return scan_quoted(p, c);
    }
    size_t start = p->pos;
    while (p->pos < p->len && p->s[p->pos] != ',' && !isspace((unsigned char)p->s[p->pos]))
        p->pos++;
    if (p->pos == start) {
        p->why = "expected value";
        return NULL;
    }
    return strndup(p->s + start, p->pos - start);
}

static int parse_selector(parser_t *p, selector_t *sel)
{
    memset(sel, 0, sizeof(*sel));
    for (;;) {
        char *f = scan_field(p);
        if (!f)
            return -1;
        char **np = realloc(sel->path, (sel->n_path + 1) * sizeof(char *));
        if (!np) {
            free(f);
            p->why = "out of memory";
            return -1;
        }
        sel->path = np;
        sel->path[sel->n_path++] = f;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == '.') {
            p->pos++;
            continue;
        }
        break;
    }
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] == ',') {
        sel->op = OP_PRESENT;
        return 0;
    }
    if (p->pos + 1 < p->len && p->s[p->pos + 1] == '=') {
        switch (p->s[p->pos]) {
        case '=':
            sel->op = OP_EQ;
            break;
        case '!':
            sel->op = OP_NE;
            break;
        case '~':
            sel->op = OP_MATCH;
            break;
        default:
            p->why = "expected operator ==, != or ~=";
            return -1;
        }
        p->pos += 2;
    } else {
        p->why = "expected operator ==, != or ~=";
        return -1;
    }
    bool quoted;
    size_t vpos = p->pos;
    sel->value = scan_value(p, &quoted);
    if (!sel->value)
        return -1;
    if (sel->op == OP_MATCH) {
        berth_error_t *rerr = NULL;
        if (meta_re_compile(sel->value, strlen(sel->value), &sel->re, &rerr) < 0) {
            p->pos = vpos;
            p->why = "invalid regular expression";
            snprintf(p->detail, sizeof(p->detail), "%s", rerr ? rerr->message : "");
            berth_error_free(&rerr);
            return -1;
        }
        *p->re_insts += meta_re_size(sel->re);
        if (*p->re_insts > FILTER_MAX_RE_INSTS) {
            p->pos = vpos;
            p->why = "regular expressions too large in total";
            snprintf(p->detail, sizeof(p->detail),
                     "the filters' regular expressions compile to more than %d instructions",
                     FILTER_MAX_RE_INSTS);
            return -1;
        }
    }
    return 0;
}

static int parse_one(const char *s, conj_t *c, size_t *re_insts, berth_error_t **err)
{
    parser_t p = {.s = s, .len = strlen(s), .re_insts = re_insts};
    memset(c, 0, sizeof(*c));
    for (;;) {
        selector_t sel;
        if (parse_selector(&p, &sel) < 0) {
            sel_free(&sel);
            goto fail;
        }
        selector_t *ns = realloc(c->sel, (c->n + 1) * sizeof(*ns));
        if (!ns) {
            sel_free(&sel);
            p.why = "out of memory";
            goto fail;
        }
        c->sel = ns;
        c->sel[c->n++] = sel;
        skip_ws(&p);
        if (p.pos >= p.len)
            return 0;
        if (p.s[p.pos] != ',') {
            p.why = "expected ',' or end of filter";
            goto fail;
        }
        p.pos++;
    }
fail:
    for (size_t i = 0; i < c->n; i++)
        sel_free(&c->sel[i]);
    free(c->sel);
    c->sel = NULL;
    c->n = 0;
    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                           "invalid filter \"%s\": %s at position %zu%s%s", s, p.why, p.pos + 1,
                           p.detail[0] ? ": " : "", p.detail);
}

int meta_filter_parse(const char *const *strs, size_t n, meta_filter_t **out, berth_error_t **err)
{
    *out = NULL;
    if (n == 0)
        return 0;
    meta_filter_t *f = calloc(1, sizeof(*f));
    if (!f)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    f->alt = calloc(n, sizeof(conj_t));
    if (!f->alt) {
        free(f);
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    size_t re_insts = 0;
    for (size_t i = 0; i < n; i++) {
        if (parse_one(strs[i], &f->alt[i], &re_insts, err) < 0) {
            meta_filter_free(f);
            return -1;
        }
        f->n++;
    }
    *out = f;
    return 0;
}

int meta_filter_parse_obj(const msgpack_object *filters, meta_filter_t **out, berth_error_t **err)
{
    *out = NULL;
    if (!filters || filters->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (filters->type != MSGPACK_OBJECT_ARRAY)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "parameter filters must be an array of strings");
    size_t n = filters->via.array.size;
    if (n > 256)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "too many filters (%zu, at most 256)",
                               n);
    char **strs = calloc(n ? n : 1, sizeof(char *));
    if (!strs)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    int rc = 0;
    size_t got = 0;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *o = &filters->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > 4096 ||
            (o->via.str.size && memchr(o->via.str.ptr, 0, o->via.str.size))) {
            rc = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                 "filter %zu must be a string of at most 4096 bytes", i + 1);
            break;
        }
        strs[i] = o->via.str.size ? strndup(o->via.str.ptr, o->via.str.size) : strdup("");
        got++;
        if (!strs[i]) {
            rc = berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
    }
    if (rc != 0) {
        for (size_t i = 0; i < got; i++)
            free(strs[i]);
        free(strs);
        return rc;
    }
    /* An empty filter string (ctr passes none, but a client may) matches all.
     * After this compaction only strs[0..m) are live (a double free here was
     * found by fuzz_filter). */
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (strs[i][0])
            strs[m++] = strs[i];
        else
            free(strs[i]);
    rc = meta_filter_parse((const char *const *)strs, m, out, err);
    for (size_t i = 0; i < m; i++)
        free(strs[i]);
    free(strs);
    return rc;
}

/* Key comparison: exact, or (when loose) ignoring '_' and case. */
static bool key_eq(const msgpack_object *k, const char *want, bool loose)
{
    if (k->type != MSGPACK_OBJECT_STR)
        return false;
    const char *s = k->via.str.ptr;
    size_t n = k->via.str.size, wl = strlen(want);
    if (n == wl && memcmp(s, want, n) == 0)
        return true;
    if (!loose)
        return false;
    size_t i = 0, j = 0;
    for (;;) {
        while (i < n && s[i] == '_')
            i++;
        while (j < wl && want[j] == '_')
            j++;
        if (i == n || j == wl)
            return i == n && j == wl;
        if (tolower((unsigned char)s[i]) != tolower((unsigned char)want[j]))
            return false;
        i++;
        j++;
    }
}

/* Resolves a field path to a string value. Returns true when present. */
static bool lookup(const msgpack_object *rec, char **path, size_t n, char *buf, size_t bufsz,
                   const char **val, size_t *vlen)
{
    const msgpack_object *cur = rec;
    bool loose = true;
    for (size_t i = 0; i < n; i++) {
        if (cur->type != MSGPACK_OBJECT_MAP)
            return false;
        const msgpack_object *next = NULL;
        for (uint32_t j = 0; j < cur->via.map.size; j++)
            if (key_eq(&cur->via.map.ptr[j].key, path[i], loose)) {
                next = &cur->via.map.ptr[j].val;
                break;
            }
        if (!next)
            return false;
        loose = !(strcmp(path[i], "labels") == 0 || strcmp(path[i], "annotations") == 0);
        cur = next;
    }
    switch (cur->type) {
    case MSGPACK_OBJECT_STR:
        *val = cur->via.str.ptr;
        *vlen = cur->via.str.size;
        return true;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *vlen = (size_t)snprintf(buf, bufsz, "%llu", (unsigned long long)cur->via.u64);
        *val = buf;
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *vlen = (size_t)snprintf(buf, bufsz, "%lld", (long long)cur->via.i64);
        *val = buf;
        return true;
    case MSGPACK_OBJECT_BOOLEAN:
        *val = cur->via.boolean ? "true" : "false";
        *vlen = strlen(*val);
        return true;
    case MSGPACK_OBJECT_NIL:
        return false;
    default:
        /* Maps, arrays, bins: present, no comparable value. */
        *val = "";
        *vlen = 0;
        return true;
    }
}

static bool sel_match(const selector_t *s, const msgpack_object *rec)
{
    char buf[32];
    const char *v = "";
    size_t vl = 0;
    bool present = lookup(rec, s->path, s->n_path, buf, sizeof(buf), &v, &vl);
    switch (s->op) {
    case OP_PRESENT:
        return present;
    case OP_EQ:
        return present && vl == strlen(s->value) && memcmp(v, s->value, vl) == 0;
    case OP_NE:
        /* Like containerd: an absent field compares as "". */
        if (!present)
            vl = 0;
        return !(vl == strlen(s->value) && memcmp(v, s->value, vl) == 0);
    case OP_MATCH: {
        /* The whole value, NULs included (re.c, linear in its length). */
        return present && meta_re_match(s->re, v, vl, NULL);
    }
    }
    return false;
}

bool meta_filter_match(const meta_filter_t *f, const msgpack_object *record)
{
    if (!f || f->n == 0)
        return true;
    for (size_t i = 0; i < f->n; i++) {
        bool all = true;
        for (size_t j = 0; j < f->alt[i].n && all; j++)
            all = sel_match(&f->alt[i].sel[j], record);
        if (all)
            return true;
    }
    return false;
}
