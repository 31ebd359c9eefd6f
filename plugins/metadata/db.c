/* SPDX-License-Identifier: Apache-2.0 */
/* LMDB environment of berth-metadata: open with integrity checks, schema
 * version and migrations, map growth, read transactions, batched write
 * transactions with replay records, and the helpers every record uses
 * (keys, labels, validation, tombstones, events). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "berth/failpoint.h"
#include "berth/log.h"
#include "internal.h"

const char *const meta_dbi_names[DBI_COUNT] = {
    [DBI_META] = "meta",
    [DBI_NS] = "namespaces",
    [DBI_CONTENT] = "content",
    [DBI_BLOBS] = "blobs",
    [DBI_IMAGES] = "images",
    [DBI_CONTAINERS] = "containers",
    [DBI_LEASES] = "leases",
    [DBI_LEASE_RES] = "lease_resources",
    [DBI_INGESTS] = "ingests",
    [DBI_SNAPS] = "snapshots",
    [DBI_SNAP_CHILDREN] = "snapshot_children",
    [DBI_SNAP_BACKEND] = "snapshot_backend",
    [DBI_SNAP_REFS] = "snapshot_refs",
    [DBI_SNAP_SHARED] = "snapshot_shared",
    [DBI_TOMBS] = "tombstones",
    [DBI_REPLAY] = "replay",
};

/* ---- schema migrations ------------------------------------------------ */

/* migrations[v] upgrades a database at schema v to v+1 inside the open
 * write transaction. Version 1 is the first; add entries here (and bump
 * META_SCHEMA_VERSION) when the layout changes, never rewrite old ones. */
typedef int (*meta_migration_fn)(meta_tx_t *tx, berth_error_t **err);

/* 0 → 1: a fresh database. Like containerd, "default" exists from the start. */
static int migrate_init(meta_tx_t *tx, berth_error_t **err)
{
    return meta_ns_ensure(tx, "default", err);
}

static const meta_migration_fn migrations[META_SCHEMA_VERSION] = {
    [0] = migrate_init,
};

/* ---- keys --------------------------------------------------------------- */

int meta_key(meta_key_t *k, berth_error_t **err, size_t n, ...)
{
    va_list ap;
    size_t len = 0;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        const char *s = va_arg(ap, const char *);
        len += (s ? strlen(s) : 0) + (i ? 1 : 0);
    }
    va_end(ap);
    k->p = k->small;
    k->len = 0;
    /* LMDB's default key limit is 511 bytes. Names are validated shorter
     * (docs/metadata.md), so this only trips on an internal mistake. */
    if (len > 511)
        return berth_error_set(
            err, BERTH_E_INVALID_ARGUMENT,
            "name too long for a metadata key (%zu bytes, at most 511 with its namespace)", len);
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        const char *s = va_arg(ap, const char *);
        if (i)
            k->p[k->len++] = 0;
        size_t l = s ? strlen(s) : 0;
        memcpy(k->p + k->len, s ? s : "", l);
        k->len += l;
    }
    va_end(ap);
    return 0;
}

void meta_key_free(meta_key_t *k)
{
    if (k->p && k->p != k->small)
        free(k->p);
    k->p = NULL;
}

const char *meta_key_part(const MDB_val *k, size_t i, size_t *len)
{
    const char *p = k->mv_data, *end = p + k->mv_size;
    for (size_t j = 0; j < i; j++) {
        const char *z = memchr(p, 0, (size_t)(end - p));
        if (!z)
            return NULL;
        p = z + 1;
    }
    const char *z = memchr(p, 0, (size_t)(end - p));
    *len = z ? (size_t)(z - p) : (size_t)(end - p);
    return p;
}

/* ---- raw access -------------------------------------------------------- */

int meta_mdb_fail(meta_tx_t *tx, int rc, const char *what, berth_error_t **err)
{
    tx->mdb_rc = rc;
    if (rc == MDB_MAP_FULL)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "%s: metadata database full", what);
    if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND)
        return berth_error_set(err, BERTH_E_INTERNAL, "%s: metadata database corrupted: %s", what,
                               mdb_strerror(rc));
    return berth_error_set(err, rc > 0 ? berth_code_from_errno(rc) : BERTH_E_INTERNAL, "%s: %s",
                           what, mdb_strerror(rc));
}

int meta_get(meta_tx_t *tx, int dbi, const meta_key_t *k, MDB_val *v, berth_error_t **err)
{
    MDB_val key = {.mv_size = k->len, .mv_data = k->p};
    int rc = mdb_get(tx->txn, tx->db->dbi[dbi], &key, v);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    return 0;
}

int meta_put(meta_tx_t *tx, int dbi, const meta_key_t *k, const void *data, size_t len,
             unsigned flags, berth_error_t **err)
{
    MDB_val key = {.mv_size = k->len, .mv_data = k->p};
    MDB_val val = {.mv_size = len, .mv_data = (void *)data};
    int rc = mdb_put(tx->txn, tx->db->dbi[dbi], &key, &val, flags);
    if (rc)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    return 0;
}

int meta_del(meta_tx_t *tx, int dbi, const meta_key_t *k, berth_error_t **err)
{
    MDB_val key = {.mv_size = k->len, .mv_data = k->p};
    int rc = mdb_del(tx->txn, tx->db->dbi[dbi], &key, NULL);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    return 0;
}

int meta_decode(meta_tx_t *tx, const MDB_val *v, msgpack_object *o, berth_error_t **err)
{
    if (!tx->zone) {
        tx->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
        if (!tx->zone)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack(v->mv_data, v->mv_size, &off, tx->zone, o);
    if (r != MSGPACK_UNPACK_SUCCESS || off != v->mv_size || o->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(
            err, BERTH_E_INTERNAL,
            "metadata record is corrupted (%zu bytes do not hold one msgpack map)", v->mv_size);
    if (tx->stat)
        tx->stat->decoded++;
    return 0;
}

int meta_has_prefix(meta_tx_t *tx, int dbi, const char *prefix, size_t len, bool *has,
                    berth_error_t **err)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(tx->txn, tx->db->dbi[dbi], &c);
    if (rc)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    MDB_val k = {.mv_size = len, .mv_data = (void *)prefix}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) {
        *has = false;
        return 0;
    }
    if (rc)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    *has = k.mv_size >= len && memcmp(k.mv_data, prefix, len) == 0;
    return 0;
}

void meta_out_raw(meta_tx_t *tx, const MDB_val *v)
{
    if (tx->out)
        msgpack_sbuffer_write(&tx->out->buf, v->mv_data, v->mv_size);
}

/* ---- msgpack helpers ------------------------------------------------- */

const msgpack_object *meta_map_get(const msgpack_object *map, const char *key)
{
    return berth_mp_get(map, key);
}

bool meta_str_eq(const msgpack_object *o, const char *s)
{
    return berth_mp_str_eq(o, s);
}

bool meta_str_copy(const msgpack_object *o, char *buf, size_t size)
{
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= size)
        return false;
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = 0;
    return true;
}

int64_t meta_obj_i64(const msgpack_object *o)
{
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64;
    return 0;
}

/* ---- validation ------------------------------------------------------- */

int meta_validate_namespace(const char *name, berth_error_t **err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "namespace name must not be empty");
    if (n > META_NS_MAX)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "namespace name \"%.80s...\" is longer than %d characters", name,
                               META_NS_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        bool mid = c == '.' || c == '_' || c == '-';
        if (alnum || (mid && i > 0 && i < n - 1))
            continue;
        return berth_error_set(
            err, BERTH_E_INVALID_ARGUMENT,
            "invalid namespace name \"%s\": must match [a-z0-9]([a-z0-9._-]*[a-z0-9])?", name);
    }
    return 0;
}

int meta_validate_digest(const char *d, berth_error_t **err)
{
    if (!d || strncmp(d, "sha256:", 7) != 0) {
        const char *colon = d ? strchr(d, ':') : NULL;
        if (colon && colon != d)
            return berth_error_set(
                err, BERTH_E_INVALID_ARGUMENT,
                "unsupported digest algorithm in \"%.100s\": only sha256 is supported", d);
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "invalid digest \"%.100s\": expected sha256:<64 hex digits>",
                               d ? d : "");
    }
    const char *h = d + 7;
    size_t n = strlen(h);
    bool ok = n == 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = (h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f');
    if (!ok)
        return berth_error_set(
            err, BERTH_E_INVALID_ARGUMENT,
            "invalid digest \"%.100s\": expected sha256:<64 lowercase hex digits>", d);
    return 0;
}

int meta_validate_name(const char *what, const char *s, berth_error_t **err)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s must not be empty", what);
    size_t max = META_NAME_MAX;
    if (strcmp(what, "snapshot key") == 0 || strcmp(what, "snapshot name") == 0 ||
        strcmp(what, "snapshot parent") == 0)
        max = 200;
    else if (strcmp(what, "ingest ref") == 0)
        max = 255;
    else if (strcmp(what, "image name") == 0)
        max = 400;
    else if (strcmp(what, "container id") == 0 || strcmp(what, "lease id") == 0)
        max = 76;
    if (n > max)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "%s is too long (%zu bytes, at most %zu)", what, n, max);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "%s \"%.100s\" holds a control character", what, s);
    if (strcmp(what, "container id") == 0 || strcmp(what, "lease id") == 0) {
        /* containerd's identifier rule: [A-Za-z0-9]+([._-][A-Za-z0-9]+)* */
        bool prev_sep = true;
        for (size_t i = 0; i < n; i++) {
            bool sep = s[i] == '.' || s[i] == '_' || s[i] == '-';
            if (!sep && !isalnum((unsigned char)s[i]))
                goto bad;
            if (sep && prev_sep)
                goto bad;
            prev_sep = sep;
        }
        if (prev_sep)
            goto bad;
    }
    return 0;
bad:
    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                           "invalid %s \"%s\": must match [A-Za-z0-9]+([._-][A-Za-z0-9]+)*", what,
                           s);
}

static int str_cmp(const msgpack_object *x, const msgpack_object *y)
{
    uint32_t n = x->via.str.size < y->via.str.size ? x->via.str.size : y->via.str.size;
    int c = memcmp(x->via.str.ptr, y->via.str.ptr, n);
    if (c)
        return c;
    return x->via.str.size < y->via.str.size ? -1 : x->via.str.size > y->via.str.size;
}

static int key_cmp(const void *a, const void *b)
{
    return str_cmp(*(const msgpack_object *const *)a, *(const msgpack_object *const *)b);
}

/* Sets *dup to a key that appears more than once in `labels` (a map whose
 * keys are all strings), or NULL. Every key is compared: a few pairwise, many
 * (up to 64 KiB of one-byte labels) sorted, so the check stays O(n log n). */
static int labels_duplicate(const msgpack_object *labels, const msgpack_object **dup,
                            berth_error_t **err)
{
    uint32_t n = labels->via.map.size;
    *dup = NULL;
    if (n <= 32) {
        for (uint32_t i = 1; i < n; i++)
            for (uint32_t j = 0; j < i; j++)
                if (str_cmp(&labels->via.map.ptr[i].key, &labels->via.map.ptr[j].key) == 0) {
                    *dup = &labels->via.map.ptr[i].key;
                    return 0;
                }
        return 0;
    }
    const msgpack_object **keys = malloc(n * sizeof(*keys));
    if (!keys)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    for (uint32_t i = 0; i < n; i++)
        keys[i] = &labels->via.map.ptr[i].key;
    qsort(keys, n, sizeof(*keys), key_cmp);
    for (uint32_t i = 1; i < n && !*dup; i++)
        if (key_cmp(&keys[i - 1], &keys[i]) == 0)
            *dup = keys[i];
    free(keys);
    return 0;
}

int meta_validate_labels(const msgpack_object *labels, berth_error_t **err)
{
    if (!labels || labels->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (labels->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "labels must be a map of strings");
    size_t total = 0;
    for (uint32_t i = 0; i < labels->via.map.size; i++) {
        const msgpack_object *k = &labels->via.map.ptr[i].key, *v = &labels->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_STR)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "labels must be a map of strings to strings");
        if (k->via.str.size == 0)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "label keys must not be empty");
        if (memchr(k->via.str.ptr, 0, k->via.str.size) ||
            memchr(v->via.str.ptr, 0, v->via.str.size))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "label %.*s holds a NUL byte",
                                   (int)(k->via.str.size > 100 ? 100 : k->via.str.size),
                                   k->via.str.ptr);
        size_t l = k->via.str.size + v->via.str.size;
        if (l > META_LABEL_MAX)
            return berth_error_set(
                err, BERTH_E_INVALID_ARGUMENT,
                "label %.*s is too long: key and value hold %zu bytes, at most %d",
                (int)(k->via.str.size > 100 ? 100 : k->via.str.size), k->via.str.ptr, l,
                META_LABEL_MAX);
        total += l;
    }
    if (total > META_LABELS_TOTAL)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "labels hold %zu bytes in total, at most %d", total,
                               META_LABELS_TOTAL);
    const msgpack_object *dup = NULL;
    if (labels_duplicate(labels, &dup, err) < 0)
        return -1;
    if (dup)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "label %.*s appears twice",
                               (int)(dup->via.str.size > 100 ? 100 : dup->via.str.size),
                               dup->via.str.ptr);
    return 0;
}

const msgpack_object *meta_label(const msgpack_object *labels, const char *key)
{
    return berth_mp_get(labels, key);
}

const msgpack_object *meta_label_gc(const msgpack_object *labels, const char *berth_key)
{
    const msgpack_object *v = berth_mp_get(labels, berth_key);
    if (v || strncmp(berth_key, "berth.io/", 9) != 0)
        return v;
    char alt[256];
    snprintf(alt, sizeof(alt), "containerd.io/%s", berth_key + 9);
    return berth_mp_get(labels, alt);
}

static int parse_digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int meta_parse_rfc3339(const char *s, size_t len, int64_t *out)
{
    /* YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM) */
    if (len < 20)
        return -1;
    int Y, M, D, h, m, sec;
    if (parse_digits(s, 4, &Y) || s[4] != '-' || parse_digits(s + 5, 2, &M) || s[7] != '-' ||
        parse_digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        parse_digits(s + 11, 2, &h) || s[13] != ':' || parse_digits(s + 14, 2, &m) ||
        s[16] != ':' || parse_digits(s + 17, 2, &sec))
        return -1;
    /* Day of month per month and leap year (timegm would carry Feb 31 into
     * March 3 without a word). */
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (M < 1 || M > 12 || D < 1 || h > 23 || m > 59 || sec > 60)
        return -1;
    bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (D > mdays[M - 1] + (M == 2 && leap))
        return -1;
    size_t i = 19;
    int64_t frac = 0;
    if (i < len && s[i] == '.') {
        i++;
        int digits = 0;
        while (i < len && isdigit((unsigned char)s[i])) {
            if (digits < 9) {
                frac = frac * 10 + (s[i] - '0');
                digits++;
            }
            i++;
        }
        if (digits == 0)
            return -1;
        while (digits++ < 9)
            frac *= 10;
    }
    int64_t off = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        /* RFC 3339 time-numoffset: hour 00-23, minute 00-59 (+99:99 is no
         * zone; Go's time.Parse, which containerd uses, refuses it too). */
        if (parse_digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || parse_digits(s + i + 4, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
        off = (int64_t)(oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return -1;
    }
    if (i != len)
        return -1;
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = sec};
    int64_t secs = (int64_t)timegm(&tm) - off;
    /* int64 ns reach years 1678..2262: later times saturate (never expire),
     * earlier ones saturate to the far past (already expired) instead of
     * overflowing into the future (found by fuzz_labels). */
    if (secs >= INT64_MAX / 1000000000LL)
        *out = INT64_MAX;
    else if (secs <= INT64_MIN / 1000000000LL)
        *out = INT64_MIN;
    else
        *out = secs * 1000000000LL + frac;
    return 0;
}

void meta_format_rfc3339(int64_t ns, char buf[32])
{
    time_t t = (time_t)(ns / 1000000000LL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- labels ----------------------------------------------------------- */

void meta_pack_labels(msgpack_packer *pk, const msgpack_object *labels)
{
    if (!labels || labels->type != MSGPACK_OBJECT_MAP) {
        msgpack_pack_map(pk, 0);
        return;
    }
    msgpack_pack_object(pk, *labels);
}

int meta_fields_validate(const msgpack_object *fields, berth_error_t **err)
{
    if (!fields || fields->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (fields->type != MSGPACK_OBJECT_ARRAY)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "parameter fields must be an array of strings");
    for (uint32_t i = 0; i < fields->via.array.size; i++)
        if (fields->via.array.ptr[i].type != MSGPACK_OBJECT_STR)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "parameter fields must be an array of strings");
    return 0;
}

bool meta_fields_has(const msgpack_object *fields, const char *name)
{
    if (!fields || fields->type != MSGPACK_OBJECT_ARRAY)
        return true;
    for (uint32_t i = 0; i < fields->via.array.size; i++)
        if (berth_mp_str_eq(&fields->via.array.ptr[i], name))
            return true;
    return false;
}

typedef struct {
    const char *k, *v;
    uint32_t kl, vl;
} kv_t;

static int kv_find(kv_t *a, size_t n, const char *k, uint32_t kl)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].kl == kl && memcmp(a[i].k, k, kl) == 0)
            return (int)i;
    return -1;
}

int meta_pack_labels_update(msgpack_packer *pk, const msgpack_object *old,
                            const msgpack_object *upd, const msgpack_object *fields,
                            const char *prefix, bool *touched, berth_error_t **err)
{
    if (meta_validate_labels(upd, err) < 0)
        return -1;
    size_t pl = strlen(prefix);
    bool all = !fields || fields->type != MSGPACK_OBJECT_ARRAY || meta_fields_has(fields, prefix);
    bool any = all;
    if (!all)
        for (uint32_t i = 0; i < fields->via.array.size; i++) {
            const msgpack_object *f = &fields->via.array.ptr[i];
            if (f->via.str.size > pl + 1 && memcmp(f->via.str.ptr, prefix, pl) == 0 &&
                f->via.str.ptr[pl] == '.')
                any = true;
        }
    if (touched)
        *touched = any;
    const msgpack_object *src = all ? upd : old;
    size_t cap = (src && src->type == MSGPACK_OBJECT_MAP ? src->via.map.size : 0) +
                 (!all && fields ? fields->via.array.size : 0) + 1;
    kv_t *a = calloc(cap, sizeof(kv_t));
    if (!a)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    size_t n = 0;
    if (src && src->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < src->via.map.size; i++) {
            const msgpack_object *k = &src->via.map.ptr[i].key, *v = &src->via.map.ptr[i].val;
            if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_STR)
                continue;
            a[n++] = (kv_t){k->via.str.ptr, v->via.str.ptr, k->via.str.size, v->via.str.size};
        }
    if (!all) {
        for (uint32_t i = 0; i < fields->via.array.size; i++) {
            const msgpack_object *f = &fields->via.array.ptr[i];
            if (!(f->via.str.size > pl + 1 && memcmp(f->via.str.ptr, prefix, pl) == 0 &&
                  f->via.str.ptr[pl] == '.'))
                continue;
            const char *key = f->via.str.ptr + pl + 1;
            uint32_t kl = f->via.str.size - (uint32_t)pl - 1;
            int at = kv_find(a, n, key, kl);
            const msgpack_object *nv = NULL;
            if (upd && upd->type == MSGPACK_OBJECT_MAP)
                for (uint32_t j = 0; j < upd->via.map.size; j++) {
                    const msgpack_object *k = &upd->via.map.ptr[j].key;
                    if (k->via.str.size == kl && memcmp(k->via.str.ptr, key, kl) == 0)
                        nv = &upd->via.map.ptr[j].val;
                }
            /* Absent (or empty, like containerd) in the update: delete. */
            if (!nv || nv->via.str.size == 0) {
                if (at >= 0)
                    a[at] = a[--n];
                continue;
            }
            kv_t e = {key, nv->via.str.ptr, kl, nv->via.str.size};
            if (at >= 0)
                a[at] = e;
            else
                a[n++] = e;
        }
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += a[i].kl + a[i].vl;
    if (total > META_LABELS_TOTAL) {
        free(a);
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "labels would hold %zu bytes in total, at most %d", total,
                               META_LABELS_TOTAL);
    }
    msgpack_pack_map(pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        berth_mp_pack_strn(pk, a[i].k, a[i].kl);
        berth_mp_pack_strn(pk, a[i].v, a[i].vl);
    }
    free(a);
    return 0;
}

/* ---- events ----------------------------------------------------------- */

void meta_events_clear(meta_events_t *ev)
{
    for (size_t i = 0; i < ev->n; i++) {
        free(ev->v[i].topic);
        free(ev->v[i].ns);
        free(ev->v[i].data);
    }
    free(ev->v);
    memset(ev, 0, sizeof(*ev));
}

void meta_events_add(meta_events_t *ev, const char *topic, const char *ns,
                     const berth_mpbuf_t *packed)
{
    if (!ev)
        return;
    if (ev->n == ev->cap) {
        size_t nc = ev->cap ? ev->cap * 2 : 4;
        meta_event_t *nv = realloc(ev->v, nc * sizeof(*nv));
        if (!nv)
            return;
        ev->v = nv;
        ev->cap = nc;
    }
    meta_event_t *e = &ev->v[ev->n];
    e->topic = strdup(topic);
    e->ns = strdup(ns ? ns : "");
    e->data = malloc(packed->buf.size ? packed->buf.size : 1);
    if (!e->topic || !e->ns || !e->data) {
        free(e->topic);
        free(e->ns);
        free(e->data);
        return;
    }
    memcpy(e->data, packed->buf.data, packed->buf.size);
    e->len = packed->buf.size;
    ev->n++;
}

/* ---- tombstones ---------------------------------------------------------- */

int meta_tomb_add(meta_tx_t *tx, const char *kind, const char *id, berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 2, kind, id) < 0)
        return -1;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_i64(&b.pk, "at", tx->now);
    int rc = meta_put(tx, DBI_TOMBS, &k, b.buf.data, b.buf.size, 0, err);
    berth_mpbuf_destroy(&b);
    return rc;
}

int meta_tomb_has(meta_tx_t *tx, const char *kind, const char *id, bool *has, berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 2, kind, id) < 0)
        return -1;
    MDB_val v;
    int rc = meta_get(tx, DBI_TOMBS, &k, &v, err);
    if (rc < 0)
        return -1;
    *has = rc == 0;
    return 0;
}

int meta_tomb_del(meta_tx_t *tx, const char *kind, const char *id, berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 2, kind, id) < 0)
        return -1;
    return meta_del(tx, DBI_TOMBS, &k, err) < 0 ? -1 : 0;
}

/* ---- environment ------------------------------------------------------- */

static const char corrupt_advice[] =
    "berth-metadata refuses to start rather than lose records: restore the file from a backup, "
    "or move it away to start with an empty database";

static int check_size(meta_db_t *db, berth_error_t **err)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat sb;
    if (mdb_env_info(db->env, &info) || mdb_env_stat(db->env, &st) || stat(db->path, &sb) < 0)
        return berth_error_errno(err, errno, "inspect %s", db->path);
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if ((uint64_t)sb.st_size < need)
        return berth_error_set(
            err, BERTH_E_INTERNAL,
            "metadata database %s is truncated (%llu bytes, its pages need %llu); %s", db->path,
            (unsigned long long)sb.st_size, (unsigned long long)need, corrupt_advice);
    return 0;
}

/* Walks every entry of every database so that a broken B-tree is found now
 * rather than in the middle of a request. */
static int walk_all(meta_db_t *db, berth_error_t **err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return berth_error_set(err, BERTH_E_INTERNAL, "read %s: %s", db->path, mdb_strerror(rc));
    size_t total = 0;
    for (int i = 0; i < DBI_COUNT; i++) {
        MDB_cursor *c;
        rc = mdb_cursor_open(txn, db->dbi[i], &c);
        if (rc)
            break;
        MDB_val k, v;
        size_t n = 0;
        while ((rc = mdb_cursor_get(c, &k, &v, n ? MDB_NEXT : MDB_FIRST)) == 0)
            n++;
        mdb_cursor_close(c);
        if (rc != MDB_NOTFOUND)
            break;
        rc = 0;
        total += n;
    }
    mdb_txn_abort(txn);
    if (rc)
        return berth_error_set(err, BERTH_E_INTERNAL, "metadata database %s is corrupted (%s); %s",
                               db->path, mdb_strerror(rc), corrupt_advice);
    berth_log(BERTH_LOG_DEBUG, "msg=\"database checked\" path=%s records=%zu", db->path, total);
    return 0;
}

static int open_schema(meta_db_t *db, bool fresh, berth_error_t **err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(db->env, NULL, 0, &txn);
    if (rc)
        return berth_error_set(err, BERTH_E_INTERNAL, "begin %s: %s", db->path, mdb_strerror(rc));
    /* A database that has named sub-databases but no schema version is not
     * ours (or lost its meta records): refuse it. */
    MDB_dbi main_dbi;
    MDB_stat st;
    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (!rc)
        rc = mdb_stat(txn, main_dbi, &st);
    if (rc) {
        mdb_txn_abort(txn);
        return berth_error_set(err, BERTH_E_INTERNAL, "metadata database %s: %s; %s", db->path,
                               mdb_strerror(rc), corrupt_advice);
    }
    bool empty = st.ms_entries == 0;
    for (int i = 0; i < DBI_COUNT; i++) {
        rc = mdb_dbi_open(txn, meta_dbi_names[i], MDB_CREATE, &db->dbi[i]);
        if (rc) {
            mdb_txn_abort(txn);
            return berth_error_set(err, BERTH_E_INTERNAL, "open table %s in %s: %s; %s",
                                   meta_dbi_names[i], db->path, mdb_strerror(rc), corrupt_advice);
        }
    }
    meta_tx_t tx = {.db = db, .txn = txn, .write = true, .now = berth_now_ns()};
    MDB_val k = {.mv_size = 14, .mv_data = "schema_version"}, v;
    rc = mdb_get(txn, db->dbi[DBI_META], &k, &v);
    uint64_t version = 0;
    if (rc == 0) {
        if (v.mv_size != 8) {
            mdb_txn_abort(txn);
            return berth_error_set(err, BERTH_E_INTERNAL,
                                   "metadata database %s has a malformed schema version; %s",
                                   db->path, corrupt_advice);
        }
        memcpy(&version, v.mv_data, 8);
    } else if (rc == MDB_NOTFOUND) {
        if (!empty && !fresh) {
            mdb_txn_abort(txn);
            return berth_error_set(err, BERTH_E_INTERNAL,
                                   "metadata database %s has tables but no schema version; %s",
                                   db->path, corrupt_advice);
        }
        version = 0;
    } else {
        mdb_txn_abort(txn);
        return berth_error_set(err, BERTH_E_INTERNAL, "read schema version of %s: %s; %s", db->path,
                               mdb_strerror(rc), corrupt_advice);
    }
    if (version > META_SCHEMA_VERSION) {
        mdb_txn_abort(txn);
        return berth_error_set(
            err, BERTH_E_FAILED_PRECONDITION,
            "metadata database %s has schema version %llu, newer than this berth-metadata "
            "understands (%d): run a newer berth",
            db->path, (unsigned long long)version, META_SCHEMA_VERSION);
    }
    for (uint64_t vv = version; vv < META_SCHEMA_VERSION; vv++) {
        if (migrations[vv] && migrations[vv](&tx, err) < 0) {
            mdb_txn_abort(txn);
            if (tx.zone)
                msgpack_zone_free(tx.zone);
            return berth_error_wrap(err, "migrate %s from schema %llu to %llu", db->path,
                                    (unsigned long long)vv, (unsigned long long)vv + 1);
        }
        if (vv > 0)
            berth_log(BERTH_LOG_INFO, "msg=\"schema migrated\" from=%llu to=%llu",
                      (unsigned long long)vv, (unsigned long long)vv + 1);
    }
    if (tx.zone)
        msgpack_zone_free(tx.zone);
    uint64_t cur = META_SCHEMA_VERSION;
    v.mv_size = 8;
    v.mv_data = &cur;
    if (version != cur)
        rc = mdb_put(txn, db->dbi[DBI_META], &k, &v, 0);
    if (!rc)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc)
        return berth_error_set(err, BERTH_E_INTERNAL, "write schema version to %s: %s", db->path,
                               mdb_strerror(rc));
    return 0;
}

/* Reads every page of an existing database in a forked child: garbage in a
 * data page can make LMDB fault (SIGBUS/SIGSEGV) instead of returning
 * MDB_CORRUPTED, and a plugin that crashes at every start is a crash loop,
 * not an answer. The child opens its own read-only environment (an LMDB env
 * must not be used across fork). Returns 0 when the walk finished or found a
 * reportable error (the caller's own checks report it), -1 if it crashed. */
static int walk_in_child(const char *path, berth_error_t **err)
{
    pid_t pid = fork();
    if (pid < 0)
        return 0; /* cannot check this way: the in-process checks still run */
    if (pid == 0) {
        /* Die of the fault (no inherited handler may catch it). */
        signal(SIGBUS, SIG_DFL);
        signal(SIGSEGV, SIG_DFL);
        MDB_env *env;
        MDB_txn *txn;
        MDB_cursor *c, *c2;
        MDB_dbi main_dbi, sub;
        MDB_val k, v, k2, v2;
        /* exit 2: could not even open it (the parent's checks say why,
         * e.g. truncated); exit 1: the walk met an LMDB error. */
        if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 64) ||
            mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600) ||
            mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) || mdb_dbi_open(txn, NULL, 0, &main_dbi) ||
            mdb_cursor_open(txn, main_dbi, &c))
            _exit(2);
        int rc;
        while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
            char name[512];
            if (k.mv_size == 0 || k.mv_size >= sizeof(name))
                continue;
            memcpy(name, k.mv_data, k.mv_size);
            name[k.mv_size] = 0;
            if (mdb_dbi_open(txn, name, 0, &sub) || mdb_cursor_open(txn, sub, &c2))
                continue;
            while (mdb_cursor_get(c2, &k2, &v2, MDB_NEXT) == 0) {
                /* touch every byte of the value */
                volatile unsigned char sum = 0;
                for (size_t i = 0; i < v2.mv_size; i++)
                    sum ^= ((unsigned char *)v2.mv_data)[i];
                (void)sum;
            }
            mdb_cursor_close(c2);
        }
        _exit(rc == MDB_NOTFOUND ? 0 : 1);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status))
        return berth_error_set(err, BERTH_E_INTERNAL,
                               "metadata database %s is corrupted (reading it crashed with %s); %s",
                               path, strsignal(WTERMSIG(status)), corrupt_advice);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1)
        return berth_error_set(err, BERTH_E_INTERNAL,
                               "metadata database %s is corrupted (a full read of it failed); %s",
                               path, corrupt_advice);
    return 0;
}

int meta_db_open(const char *path, const meta_db_opts_t *opts, meta_db_t **out, berth_error_t **err)
{
    meta_db_opts_t o = opts ? *opts : (meta_db_opts_t){0};
    if (!o.map_size)
        o.map_size = 64ull << 20;
    if (!o.max_map_size)
        o.max_map_size = 64ull << 30;
    if (!o.max_readers)
        o.max_readers = 126;
    meta_db_t *db = calloc(1, sizeof(*db));
    if (!db)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    db->lock_fd = -1;
    pthread_rwlock_init(&db->resize_lock, NULL);
    pthread_mutex_init(&db->write_lock, NULL);
    db->path = strdup(path);
    char *dircopy = strdup(path);
    if (!db->path || !dircopy) {
        free(dircopy);
        meta_db_close(db);
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    /* The directory lock keeps a second berth-metadata (another daemon on the
     * same root, or a replacement started too early) out of this file. */
    db->lock_fd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (db->lock_fd < 0) {
        int e = errno;
        berth_error_errno(err, e, "open directory of %s", path);
        free(dircopy);
        meta_db_close(db);
        return -1;
    }
    free(dircopy);
    if (flock(db->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        meta_db_close(db);
        if (e == EWOULDBLOCK)
            return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                   "%s is in use by another berth-metadata process", path);
        return berth_error_errno(err, e, "lock directory of %s", path);
    }
    struct stat sb;
    bool fresh = stat(path, &sb) < 0 && errno == ENOENT;
    if (!fresh && sb.st_size < 8192) {
        meta_db_close(db);
        return berth_error_set(err, BERTH_E_INTERNAL,
                               "metadata database %s is truncated (%lld bytes); %s", path,
                               (long long)sb.st_size, corrupt_advice);
    }
    int rc = mdb_env_create(&db->env);
    if (rc) {
        meta_db_close(db);
        return berth_error_set(err, BERTH_E_INTERNAL, "mdb_env_create: %s", mdb_strerror(rc));
    }
    uint64_t size = o.map_size;
    if (!fresh && (uint64_t)sb.st_size > size)
        size = (uint64_t)sb.st_size;
    db->map_size = size;
    db->max_map_size = o.max_map_size > size ? o.max_map_size : size;
    mdb_env_set_maxdbs(db->env, DBI_COUNT + 4);
    mdb_env_set_mapsize(db->env, size);
    mdb_env_set_maxreaders(db->env, o.max_readers);
    unsigned flags = MDB_NOSUBDIR | MDB_NOTLS | (o.no_sync ? MDB_NOSYNC : 0);
    rc = mdb_env_open(db->env, path, flags, 0600);
    if (rc) {
        if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED ||
            rc == MDB_PAGE_NOTFOUND)
            berth_error_set(err, BERTH_E_INTERNAL,
                            "metadata database %s is corrupted or not an LMDB file (%s); %s", path,
                            mdb_strerror(rc), corrupt_advice);
        else
            berth_error_set(err, rc > 0 ? berth_code_from_errno(rc) : BERTH_E_INTERNAL,
                            "open metadata database %s: %s", path, mdb_strerror(rc));
        meta_db_close(db);
        return -1;
    }
    if (mdb_env_get_maxkeysize(db->env) < 511) {
        meta_db_close(db);
        return berth_error_set(err, BERTH_E_INTERNAL,
                               "LMDB was built with keys shorter than 511 bytes");
    }
    int dead = 0;
    mdb_reader_check(db->env, &dead);
    if (dead)
        berth_log(BERTH_LOG_INFO, "msg=\"cleared stale LMDB readers\" count=%d", dead);
    if (!fresh && (check_size(db, err) < 0 || walk_in_child(path, err) < 0)) {
        meta_db_close(db);
        return -1;
    }
    if (open_schema(db, fresh, err) < 0 || walk_all(db, err) < 0) {
        meta_db_close(db);
        return -1;
    }
    *out = db;
    return 0;
}

void meta_db_close(meta_db_t *db)
{
    if (!db)
        return;
    if (db->env)
        mdb_env_close(db->env);
    if (db->lock_fd >= 0)
        close(db->lock_fd);
    pthread_rwlock_destroy(&db->resize_lock);
    pthread_mutex_destroy(&db->write_lock);
    free(db->path);
    free(db);
}

uint64_t meta_db_map_size(meta_db_t *db)
{
    return db->map_size;
}
unsigned meta_db_growths(meta_db_t *db)
{
    return db->growths;
}

void meta_db_arm_failpoints(meta_db_t *db)
{
    db->failpoints = true;
}

/* ---- transactions ------------------------------------------------------- */

int meta_tx_read(meta_db_t *db, meta_tx_t *tx, berth_error_t **err)
{
    memset(tx, 0, sizeof(*tx));
    tx->db = db;
    tx->now = berth_now_ns();
    pthread_rwlock_rdlock(&db->resize_lock);
    int rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &tx->txn);
    if (rc) {
        pthread_rwlock_unlock(&db->resize_lock);
        tx->txn = NULL;
        if (rc == MDB_READERS_FULL)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                                   "too many concurrent metadata readers");
        return berth_error_set(err, BERTH_E_INTERNAL, "begin read: %s", mdb_strerror(rc));
    }
    return 0;
}

void meta_tx_end(meta_tx_t *tx)
{
    if (tx->txn && !tx->write) {
        mdb_txn_abort(tx->txn);
        pthread_rwlock_unlock(&tx->db->resize_lock);
    }
    tx->txn = NULL;
    if (tx->zone)
        msgpack_zone_free(tx->zone);
    tx->zone = NULL;
}

void meta_wop_init(meta_wop_t *op, meta_write_fn fn, void *arg)
{
    memset(op, 0, sizeof(*op));
    op->fn = fn;
    op->arg = arg;
    berth_mpbuf_init(&op->result);
}

void meta_wop_destroy(meta_wop_t *op)
{
    berth_mpbuf_destroy(&op->result);
    meta_events_clear(&op->ev);
    berth_error_free(&op->err);
}

static void wop_reset(meta_wop_t *op)
{
    msgpack_sbuffer_clear(&op->result.buf);
    meta_events_clear(&op->ev);
    berth_error_free(&op->err);
    op->replayed = false;
}

static int grow(meta_db_t *db, berth_error_t **err)
{
    uint64_t next = db->map_size * 2;
    if (db->map_size >= db->max_map_size)
        return berth_error_set(
            err, BERTH_E_RESOURCE_EXHAUSTED,
            "metadata database reached its maximum size (%llu MiB, config max_map_size_mb)",
            (unsigned long long)(db->max_map_size >> 20));
    if (next > db->max_map_size)
        next = db->max_map_size;
    pthread_rwlock_wrlock(&db->resize_lock);
    int rc = mdb_env_set_mapsize(db->env, next);
    pthread_rwlock_unlock(&db->resize_lock);
    if (rc)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "grow metadata map to %llu MiB: %s",
                               (unsigned long long)(next >> 20), mdb_strerror(rc));
    berth_log(BERTH_LOG_INFO, "msg=\"metadata map grown\" from_kib=%llu to_kib=%llu",
              (unsigned long long)(db->map_size >> 10), (unsigned long long)(next >> 10));
    db->map_size = next;
    db->growths++;
    return 0;
}

static int replay_lookup(meta_tx_t *tx, meta_wop_t *op, bool *found, berth_error_t **err)
{
    *found = false;
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 3, op->replay_ns, op->replay_method, op->replay_id) < 0)
        return -1;
    MDB_val v;
    int rc = meta_get(tx, DBI_REPLAY, &k, &v, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return 0;
    msgpack_object o;
    if (meta_decode(tx, &v, &o, err) < 0)
        return -1;
    const msgpack_object *r = berth_mp_get(&o, "result");
    if (!r || r->type != MSGPACK_OBJECT_BIN)
        return berth_error_set(err, BERTH_E_INTERNAL, "replay record for %s is corrupted",
                               op->replay_id);
    msgpack_sbuffer_write(&op->result.buf, r->via.bin.ptr, r->via.bin.size);
    *found = true;
    return 0;
}

static int replay_record(meta_tx_t *tx, meta_wop_t *op, berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 3, op->replay_ns, op->replay_method, op->replay_id) < 0)
        return -1;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_i64(&b.pk, "at", tx->now);
    berth_mp_pack_str(&b.pk, "result");
    berth_mp_pack_bin(&b.pk, op->result.buf.data, op->result.buf.size);
    int rc = meta_put(tx, DBI_REPLAY, &k, b.buf.data, b.buf.size, 0, err);
    berth_mpbuf_destroy(&b);
    return rc;
}

/* Runs one op in a nested txn of parent. Returns 0 (op done, maybe with
 * op->err) or MDB_MAP_FULL / another LMDB code for a batch-level failure. */
static int run_op(meta_db_t *db, MDB_txn *parent, int64_t now, meta_wop_t *op)
{
    MDB_txn *child;
    int rc = mdb_txn_begin(db->env, parent, 0, &child);
    if (rc)
        return rc;
    meta_tx_t tx = {.db = db,
                    .txn = child,
                    .write = true,
                    .now = now,
                    .out = &op->result,
                    .ev = &op->ev,
                    .lease = op->lease};
    bool found = false;
    int r = 0;
    unsigned mode = op->replay_mode ? op->replay_mode : (META_REPLAY_LOOKUP | META_REPLAY_RECORD);
    bool replay = op->replay_id && op->replay_id[0] && op->replay_ns && op->replay_method;
    if (replay && (mode & META_REPLAY_LOOKUP)) {
        r = replay_lookup(&tx, op, &found, &op->err);
        if (r == 0 && found) {
            op->replayed = true;
            mdb_txn_abort(child);
            if (tx.zone)
                msgpack_zone_free(tx.zone);
            return 0;
        }
    }
    if (r == 0)
        r = op->fn(&tx, op->arg, &op->err);
    if (r == 0 && replay && (mode & META_REPLAY_RECORD))
        r = replay_record(&tx, op, &op->err);
    if (tx.zone)
        msgpack_zone_free(tx.zone);
    if (r < 0) {
        mdb_txn_abort(child);
        if (!op->err)
            berth_error_set(&op->err, BERTH_E_INTERNAL, "metadata operation failed");
        msgpack_sbuffer_clear(&op->result.buf);
        meta_events_clear(&op->ev);
        return tx.mdb_rc == MDB_MAP_FULL ? MDB_MAP_FULL : 0;
    }
    rc = mdb_txn_commit(child);
    if (rc)
        return rc;
    return 0;
}

int meta_db_write_batch(meta_db_t *db, meta_wop_t *const *ops, size_t n, uint64_t *held_ms,
                        berth_error_t **err)
{
    pthread_mutex_lock(&db->write_lock);
    uint64_t t0 = berth_mono_ms();
    int rc = 0;
    for (int attempt = 0; attempt < 40; attempt++) {
        for (size_t i = 0; i < n; i++)
            wop_reset(ops[i]);
        MDB_txn *txn;
        rc = mdb_txn_begin(db->env, NULL, 0, &txn);
        if (rc)
            break;
        int64_t now = berth_now_ns();
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = run_op(db, txn, now, ops[i]);
        /* Crash tests (docs/security.md): a kill here loses the whole
         * batch, none of it acknowledged; `error` fails it like an I/O
         * error at commit. */
        if (rc == 0 && db->failpoints && berth_failpoint("metadata.txn.before_commit") < 0)
            rc = EIO;
        if (rc == 0) {
            rc = mdb_txn_commit(txn);
            /* A kill here keeps the batch, none of it acknowledged yet. */
            if (rc == 0 && db->failpoints)
                (void)berth_failpoint("metadata.txn.after_commit");
        } else {
            mdb_txn_abort(txn);
        }
        if (rc != MDB_MAP_FULL)
            break;
        berth_error_t *gerr = NULL;
        if (grow(db, &gerr) < 0) {
            for (size_t i = 0; i < n; i++) {
                wop_reset(ops[i]);
                berth_error_set(&ops[i]->err, gerr->code, "%s", gerr->message);
            }
            berth_error_set(err, gerr->code, "%s", gerr->message);
            berth_error_free(&gerr);
            pthread_mutex_unlock(&db->write_lock);
            return -1;
        }
    }
    if (held_ms)
        *held_ms = berth_mono_ms() - t0;
    pthread_mutex_unlock(&db->write_lock);
    if (rc) {
        for (size_t i = 0; i < n; i++) {
            wop_reset(ops[i]);
            berth_error_set(&ops[i]->err, BERTH_E_INTERNAL, "metadata write failed: %s",
                            mdb_strerror(rc));
        }
        return berth_error_set(err, BERTH_E_INTERNAL, "metadata write failed: %s",
                               mdb_strerror(rc));
    }
    return 0;
}

int meta_db_write(meta_db_t *db, meta_write_fn fn, void *arg, berth_mpbuf_t *result,
                  meta_events_t *ev, berth_error_t **err)
{
    meta_wop_t op;
    meta_wop_init(&op, fn, arg);
    meta_wop_t *opp = &op;
    meta_db_write_batch(db, &opp, 1, NULL, NULL);
    int rc = 0;
    if (op.err) {
        if (err && !*err)
            *err = steal_pointer(&op.err);
        rc = -1;
    } else {
        if (result)
            msgpack_sbuffer_write(&result->buf, op.result.buf.data, op.result.buf.size);
        if (ev) {
            *ev = op.ev;
            memset(&op.ev, 0, sizeof(op.ev));
        }
    }
    meta_wop_destroy(&op);
    return rc;
}
