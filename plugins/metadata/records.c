/* SPDX-License-Identifier: Apache-2.0 */
/* Records of berth-metadata: namespaces, content, ingests, images,
 * containers, leases and replays. Each function runs inside a meta_tx_t,
 * validates its input, reads or writes LMDB and packs its result (the API
 * shape, docs/dev/methods.md) into tx->out. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "filter.h"
#include "internal.h"

/* ---- small helpers ------------------------------------------------------ */

static int need_write(meta_tx_t *tx, berth_error_t **err)
{
    if (!tx->write)
        return berth_error_set(err, BERTH_E_INTERNAL, "write attempted in a read transaction");
    return 0;
}

/* A packed result: {key: <raw stored value>}. */
static void out_wrapped(meta_tx_t *tx, const char *key, const MDB_val *v)
{
    if (!tx->out)
        return;
    msgpack_pack_map(&tx->out->pk, 1);
    berth_mp_pack_str(&tx->out->pk, key);
    meta_out_raw(tx, v);
}

static void out_wrapped_buf(meta_tx_t *tx, const char *key, const berth_mpbuf_t *b)
{
    MDB_val v = {.mv_size = b->buf.size, .mv_data = b->buf.data};
    out_wrapped(tx, key, &v);
}

static void out_empty(meta_tx_t *tx)
{
    if (tx->out)
        msgpack_pack_map(&tx->out->pk, 0);
}

static void event1(meta_tx_t *tx, const char *topic, const char *ns, const char *k, const char *v)
{
    if (!tx->ev)
        return;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, k, v);
    meta_events_add(tx->ev, topic, ns, &b);
    berth_mpbuf_destroy(&b);
}

/* Iterates the records of one namespace in a table: calls cb for each. */
typedef int (*each_cb)(meta_tx_t *tx, const MDB_val *k, const MDB_val *v, void *data,
                       berth_error_t **err);

static int each_in_ns(meta_tx_t *tx, int dbi, const char *ns, each_cb cb, void *data,
                      berth_error_t **err)
{
    _cleanup_key_ meta_key_t pre;
    if (meta_key(&pre, err, 2, ns, "") < 0)
        return -1;
    MDB_cursor *c;
    int rc = mdb_cursor_open(tx->txn, tx->db->dbi[dbi], &c);
    if (rc)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    MDB_val k = {.mv_size = pre.len, .mv_data = pre.p}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    int res = 0;
    while (rc == 0) {
        if (k.mv_size < pre.len || memcmp(k.mv_data, pre.p, pre.len) != 0)
            break;
        if (cb(tx, &k, &v, data, err) < 0) {
            res = -1;
            break;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (res == 0 && rc != 0 && rc != MDB_NOTFOUND)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    return res;
}

/* Filtered list: {<key>: [records...]}. */
typedef struct {
    meta_filter_t *f;
    berth_mpbuf_t items;
    uint32_t n;
} list_t;

static int list_cb(meta_tx_t *tx, const MDB_val *k, const MDB_val *v, void *data,
                   berth_error_t **err)
{
    list_t *l = data;
    if (l->f) {
        msgpack_object o;
        if (meta_decode(tx, v, &o, err) < 0)
            return -1;
        if (!meta_filter_match(l->f, &o))
            return 0;
    }
    msgpack_sbuffer_write(&l->items.buf, v->mv_data, v->mv_size);
    l->n++;
    return 0;
}

static int list_records(meta_tx_t *tx, int dbi, const char *ns, const msgpack_object *filters,
                        const char *key, berth_error_t **err)
{
    list_t l = {0};
    if (meta_filter_parse_obj(filters, &l.f, err) < 0)
        return -1;
    berth_mpbuf_init(&l.items);
    int rc = each_in_ns(tx, dbi, ns, list_cb, &l, err);
    if (rc == 0 && tx->out) {
        msgpack_pack_map(&tx->out->pk, 1);
        berth_mp_pack_str(&tx->out->pk, key);
        msgpack_pack_array(&tx->out->pk, l.n);
        msgpack_sbuffer_write(&tx->out->buf, l.items.buf.data, l.items.buf.size);
    }
    berth_mpbuf_destroy(&l.items);
    meta_filter_free(l.f);
    return rc;
}

/* Reads and decodes one record: 0 found, 1 absent, -1 error. */
static int get_rec(meta_tx_t *tx, int dbi, const char *ns, const char *name, MDB_val *v,
                   msgpack_object *o, berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if ((ns ? meta_key(&k, err, 2, ns, name) : meta_key(&k, err, 1, name)) < 0)
        return -1;
    int rc = meta_get(tx, dbi, &k, v, err);
    if (rc != 0)
        return rc;
    if (o && meta_decode(tx, v, o, err) < 0)
        return -1;
    return 0;
}

static int put_rec(meta_tx_t *tx, int dbi, const char *ns, const char *name, const berth_mpbuf_t *b,
                   berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if ((ns ? meta_key(&k, err, 2, ns, name) : meta_key(&k, err, 1, name)) < 0)
        return -1;
    return meta_put(tx, dbi, &k, b->buf.data, b->buf.size, 0, err);
}

static int del_rec(meta_tx_t *tx, int dbi, const char *ns, const char *name, berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if ((ns ? meta_key(&k, err, 2, ns, name) : meta_key(&k, err, 1, name)) < 0)
        return -1;
    return meta_del(tx, dbi, &k, err);
}

static int64_t obj_created(const msgpack_object *o, int64_t def)
{
    const msgpack_object *c = berth_mp_get(o, "created_at");
    return c ? meta_obj_i64(c) : def;
}

/* Checks that every field path is one of the allowed ones (prefix.* entries
 * allow "prefix.<anything>"). */
static int fields_allowed(const msgpack_object *fields, const char *const *allowed,
                          const char *what, berth_error_t **err)
{
    if (meta_fields_validate(fields, err) < 0)
        return -1;
    if (!fields || fields->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    for (uint32_t i = 0; i < fields->via.array.size; i++) {
        const msgpack_object *f = &fields->via.array.ptr[i];
        bool ok = false;
        for (size_t j = 0; allowed[j] && !ok; j++) {
            size_t l = strlen(allowed[j]);
            if (l > 2 && allowed[j][l - 1] == '*')
                ok = f->via.str.size > l - 1 && memcmp(f->via.str.ptr, allowed[j], l - 1) == 0;
            else
                ok = berth_mp_str_eq(f, allowed[j]);
        }
        if (!ok)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "cannot update field %.*s of %s",
                                   (int)(f->via.str.size > 100 ? 100 : f->via.str.size),
                                   f->via.str.ptr, what);
    }
    return 0;
}

static bool fields_touch(const msgpack_object *fields, const char *prefix)
{
    if (!fields || fields->type != MSGPACK_OBJECT_ARRAY)
        return true;
    size_t pl = strlen(prefix);
    for (uint32_t i = 0; i < fields->via.array.size; i++) {
        const msgpack_object *f = &fields->via.array.ptr[i];
        if (berth_mp_str_eq(f, prefix) ||
            (f->via.str.size > pl && memcmp(f->via.str.ptr, prefix, pl) == 0 &&
             f->via.str.ptr[pl] == '.'))
            return true;
    }
    return false;
}

/* ---- namespaces ------------------------------------------------------- */

bool meta_ns_exists(meta_tx_t *tx, const char *name)
{
    MDB_val v;
    return get_rec(tx, DBI_NS, NULL, name, &v, NULL, NULL) == 0;
}

static void pack_ns(berth_mpbuf_t *b, const char *name, const msgpack_object *labels,
                    int64_t created, int64_t updated)
{
    msgpack_pack_map(&b->pk, 4);
    berth_mp_kv_str(&b->pk, "name", name);
    berth_mp_pack_str(&b->pk, "labels");
    meta_pack_labels(&b->pk, labels);
    berth_mp_kv_i64(&b->pk, "created_at", created);
    berth_mp_kv_i64(&b->pk, "updated_at", updated);
}

int meta_ns_ensure(meta_tx_t *tx, const char *name, berth_error_t **err)
{
    if (meta_validate_namespace(name, err) < 0 || need_write(tx, err) < 0)
        return -1;
    MDB_val v;
    int rc = get_rec(tx, DBI_NS, NULL, name, &v, NULL, err);
    if (rc <= 0)
        return rc;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    pack_ns(&b, name, NULL, tx->now, tx->now);
    rc = put_rec(tx, DBI_NS, NULL, name, &b, err);
    berth_mpbuf_destroy(&b);
    return rc;
}

int meta_ns_create(meta_tx_t *tx, const char *name, const msgpack_object *labels,
                   berth_error_t **err)
{
    if (meta_validate_namespace(name, err) < 0 || meta_validate_labels(labels, err) < 0 ||
        need_write(tx, err) < 0)
        return -1;
    MDB_val v;
    int rc = get_rec(tx, DBI_NS, NULL, name, &v, NULL, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return berth_error_set(err, BERTH_E_ALREADY_EXISTS, "namespace %s already exists", name);
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    pack_ns(&b, name, labels, tx->now, tx->now);
    rc = put_rec(tx, DBI_NS, NULL, name, &b, err);
    if (rc == 0) {
        out_wrapped_buf(tx, "namespace", &b);
        if (tx->ev)
            meta_events_add(tx->ev, "/namespaces/create", name, &b);
    }
    berth_mpbuf_destroy(&b);
    return rc;
}

int meta_ns_get(meta_tx_t *tx, const char *name, berth_error_t **err)
{
    if (meta_validate_namespace(name, err) < 0)
        return -1;
    MDB_val v;
    int rc = get_rec(tx, DBI_NS, NULL, name, &v, NULL, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "namespace %s not found", name);
    out_wrapped(tx, "namespace", &v);
    return 0;
}

int meta_ns_list(meta_tx_t *tx, berth_error_t **err)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(tx->txn, tx->db->dbi[DBI_NS], &c);
    if (rc)
        return meta_mdb_fail(tx, rc, "namespaces", err);
    berth_mpbuf_t items;
    berth_mpbuf_init(&items);
    uint32_t n = 0;
    MDB_val k, v;
    while ((rc = mdb_cursor_get(c, &k, &v, n ? MDB_NEXT : MDB_FIRST)) == 0) {
        msgpack_sbuffer_write(&items.buf, v.mv_data, v.mv_size);
        n++;
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND) {
        berth_mpbuf_destroy(&items);
        return meta_mdb_fail(tx, rc, "namespaces", err);
    }
    if (tx->out) {
        msgpack_pack_map(&tx->out->pk, 1);
        berth_mp_pack_str(&tx->out->pk, "namespaces");
        msgpack_pack_array(&tx->out->pk, n);
        msgpack_sbuffer_write(&tx->out->buf, items.buf.data, items.buf.size);
    }
    berth_mpbuf_destroy(&items);
    return 0;
}

int meta_ns_update(meta_tx_t *tx, const char *name, const msgpack_object *labels,
                   const msgpack_object *fields, berth_error_t **err)
{
    static const char *const allowed[] = {"labels", "labels.*", NULL};
    if (meta_validate_namespace(name, err) < 0 || need_write(tx, err) < 0 ||
        fields_allowed(fields, allowed, "a namespace", err) < 0)
        return -1;
    MDB_val v;
    msgpack_object old;
    int rc = get_rec(tx, DBI_NS, NULL, name, &v, &old, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "namespace %s not found", name);
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 4);
    berth_mp_kv_str(&b.pk, "name", name);
    berth_mp_pack_str(&b.pk, "labels");
    rc = meta_pack_labels_update(&b.pk, berth_mp_get(&old, "labels"), labels, fields, "labels",
                                 NULL, err);
    berth_mp_kv_i64(&b.pk, "created_at", obj_created(&old, tx->now));
    berth_mp_kv_i64(&b.pk, "updated_at", tx->now);
    if (rc == 0)
        rc = put_rec(tx, DBI_NS, NULL, name, &b, err);
    if (rc == 0) {
        out_wrapped_buf(tx, "namespace", &b);
        if (tx->ev)
            meta_events_add(tx->ev, "/namespaces/update", name, &b);
    }
    berth_mpbuf_destroy(&b);
    return rc;
}

int meta_ns_delete(meta_tx_t *tx, const char *name, berth_error_t **err)
{
    if (meta_validate_namespace(name, err) < 0 || need_write(tx, err) < 0)
        return -1;
    MDB_val v;
    int rc = get_rec(tx, DBI_NS, NULL, name, &v, NULL, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "namespace %s not found", name);
    static const struct {
        int dbi;
        const char *what;
    } kinds[] = {{DBI_IMAGES, "images"},   {DBI_CONTAINERS, "containers"},
                 {DBI_CONTENT, "content"}, {DBI_SNAPS, "snapshots"},
                 {DBI_LEASES, "leases"},   {DBI_INGESTS, "ingests"}};
    _cleanup_key_ meta_key_t pre;
    if (meta_key(&pre, err, 2, name, "") < 0)
        return -1;
    char left[128] = "";
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(kinds); i++) {
        bool has;
        if (meta_has_prefix(tx, kinds[i].dbi, pre.p, pre.len, &has, err) < 0)
            return -1;
        if (has) {
            if (left[0])
                strcat(left, ", ");
            strcat(left, kinds[i].what);
        }
    }
    if (left[0])
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "namespace %s must be empty, but it still has %s", name, left);
    if (del_rec(tx, DBI_NS, NULL, name, err) < 0)
        return -1;
    out_empty(tx);
    event1(tx, "/namespaces/delete", name, "name", name);
    return 0;
}

/* ---- leases ----------------------------------------------------------- */

int meta_validate_resource(const char *rtype, const char *rid, berth_error_t **err)
{
    if (!rtype || !rid)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "resource needs an id and a type");
    if (strcmp(rtype, "content") == 0)
        return meta_validate_digest(rid, err);
    if (strcmp(rtype, "snapshots/overlayfs") == 0)
        return meta_validate_name("snapshot key", rid, err);
    if (strcmp(rtype, "ingests") == 0)
        return meta_validate_name("ingest ref", rid, err);
    return berth_error_set(
        err, BERTH_E_INVALID_ARGUMENT,
        "unknown resource type \"%.60s\": expected content, snapshots/overlayfs or ingests", rtype);
}

bool meta_lease_expired(const msgpack_object *lease, int64_t now)
{
    int64_t exp = meta_obj_i64(berth_mp_get(lease, "expire"));
    if (exp > 0)
        return exp <= now;
    const msgpack_object *l = meta_label_gc(berth_mp_get(lease, "labels"), META_LABEL_GC_EXPIRE);
    int64_t t;
    if (l && l->type == MSGPACK_OBJECT_STR &&
        meta_parse_rfc3339(l->via.str.ptr, l->via.str.size, &t) == 0)
        return t <= now;
    return false;
}

static int lease_get(meta_tx_t *tx, const char *ns, const char *id, msgpack_object *o,
                     berth_error_t **err)
{
    MDB_val v;
    int rc = get_rec(tx, DBI_LEASES, ns, id, &v, o, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "lease %s not found in namespace %s", id,
                               ns);
    return 0;
}

static int res_put(meta_tx_t *tx, const char *ns, const char *id, const char *rtype,
                   const char *rid, berth_error_t **err)
{
    if (strcmp(rtype, "content") == 0) {
        bool tomb;
        if (meta_tomb_has(tx, "content", rid, &tomb, err) < 0)
            return -1;
        if (tomb)
            return berth_error_set(
                err, BERTH_E_ABORTED,
                "blob %s is being deleted by garbage collection; retry once it is gone", rid);
    }
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 4, ns, id, rtype, rid) < 0)
        return -1;
    static const uint8_t nil = 0xc0;
    return meta_put(tx, DBI_LEASE_RES, &k, &nil, 1, 0, err);
}

int meta_lease_join(meta_tx_t *tx, const char *ns, const char *rtype, const char *rid,
                    berth_error_t **err)
{
    if (!tx->lease || !tx->lease[0])
        return 0;
    msgpack_object o;
    if (lease_get(tx, ns, tx->lease, &o, err) < 0)
        return -1;
    return res_put(tx, ns, tx->lease, rtype, rid, err);
}

int meta_lease_create(meta_tx_t *tx, const char *ns, const char *id, const msgpack_object *labels,
                      int64_t expire, berth_error_t **err)
{
    char gen[40];
    if (id && meta_validate_name("lease id", id, err) < 0)
        return -1;
    if (meta_validate_labels(labels, err) < 0 || need_write(tx, err) < 0 ||
        meta_ns_ensure(tx, ns, err) < 0)
        return -1;
    if (expire < 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "expire must be a time after 1970");
    if (!id) {
        /* containerd-like: time and randomness, valid as an identifier. */
        uint8_t r[5] = {0};
        if (getrandom(r, sizeof(r), 0) < 0)
            return berth_error_errno(err, errno, "generate lease id");
        snprintf(gen, sizeof(gen), "%lld-%02x%02x%02x%02x%02x", (long long)(tx->now / 1000000000LL),
                 r[0], r[1], r[2], r[3], r[4]);
        id = gen;
    }
    MDB_val v;
    int rc = get_rec(tx, DBI_LEASES, ns, id, &v, NULL, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return berth_error_set(err, BERTH_E_ALREADY_EXISTS, "lease %s already exists", id);
    /* The expiry is also the label containerd uses, so `leases ls` shows it
     * and a lease created with only the label expires too. */
    const msgpack_object *lexp = meta_label_gc(labels, META_LABEL_GC_EXPIRE);
    if (lexp) {
        /* Checked even next to `expire`: gc reads the label too. */
        int64_t lt = 0;
        if (lexp->type != MSGPACK_OBJECT_STR ||
            meta_parse_rfc3339(lexp->via.str.ptr, lexp->via.str.size, &lt) < 0)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "label %s must be an RFC3339 time (a date that exists)",
                                   META_LABEL_GC_EXPIRE);
        if (!expire)
            expire = lt;
    }
    uint32_t nl = labels && labels->type == MSGPACK_OBJECT_MAP ? labels->via.map.size : 0;
    bool add_label = expire > 0 && !lexp;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, expire > 0 ? 4 : 3);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_mp_pack_str(&b.pk, "labels");
    msgpack_pack_map(&b.pk, nl + (add_label ? 1 : 0));
    for (uint32_t i = 0; i < nl; i++) {
        msgpack_pack_object(&b.pk, labels->via.map.ptr[i].key);
        msgpack_pack_object(&b.pk, labels->via.map.ptr[i].val);
    }
    if (add_label) {
        char ts[32];
        meta_format_rfc3339(expire, ts);
        berth_mp_kv_str(&b.pk, META_LABEL_GC_EXPIRE, ts);
    }
    berth_mp_kv_i64(&b.pk, "created_at", tx->now);
    if (expire > 0)
        berth_mp_kv_i64(&b.pk, "expire", expire);
    rc = put_rec(tx, DBI_LEASES, ns, id, &b, err);
    if (rc == 0) {
        out_wrapped_buf(tx, "lease", &b);
        event1(tx, "/leases/create", ns, "id", id);
    }
    berth_mpbuf_destroy(&b);
    return rc;
}

int meta_lease_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                    berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0)
        return -1;
    return list_records(tx, DBI_LEASES, ns, filters, "leases", err);
}

static int del_prefix(meta_tx_t *tx, int dbi, const meta_key_t *pre, size_t *count,
                      berth_error_t **err)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(tx->txn, tx->db->dbi[dbi], &c);
    if (rc)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    for (;;) {
        /* Re-seek after every delete: simpler than LMDB's cursor-after-delete
         * rules and O(log n) anyway. */
        MDB_val k = {.mv_size = pre->len, .mv_data = pre->p}, v;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc || k.mv_size < pre->len || memcmp(k.mv_data, pre->p, pre->len) != 0)
            break;
        rc = mdb_cursor_del(c, 0);
        if (rc)
            break;
        if (count)
            (*count)++;
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    return 0;
}

int meta_lease_delete(meta_tx_t *tx, const char *ns, const char *id, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("lease id", id, err) < 0 ||
        need_write(tx, err) < 0)
        return -1;
    msgpack_object o;
    if (lease_get(tx, ns, id, &o, err) < 0)
        return -1;
    if (del_rec(tx, DBI_LEASES, ns, id, err) < 0)
        return -1;
    _cleanup_key_ meta_key_t pre;
    if (meta_key(&pre, err, 3, ns, id, "") < 0 ||
        del_prefix(tx, DBI_LEASE_RES, &pre, NULL, err) < 0)
        return -1;
    out_empty(tx);
    event1(tx, "/leases/delete", ns, "id", id);
    return 0;
}

int meta_lease_add_resource(meta_tx_t *tx, const char *ns, const char *id, const char *rtype,
                            const char *rid, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("lease id", id, err) < 0 ||
        meta_validate_resource(rtype, rid, err) < 0 || need_write(tx, err) < 0)
        return -1;
    msgpack_object o;
    if (lease_get(tx, ns, id, &o, err) < 0 || res_put(tx, ns, id, rtype, rid, err) < 0)
        return -1;
    out_empty(tx);
    return 0;
}

int meta_lease_delete_resource(meta_tx_t *tx, const char *ns, const char *id, const char *rtype,
                               const char *rid, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("lease id", id, err) < 0 ||
        meta_validate_resource(rtype, rid, err) < 0 || need_write(tx, err) < 0)
        return -1;
    msgpack_object o;
    if (lease_get(tx, ns, id, &o, err) < 0)
        return -1;
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 4, ns, id, rtype, rid) < 0 || meta_del(tx, DBI_LEASE_RES, &k, err) < 0)
        return -1;
    out_empty(tx);
    return 0;
}

typedef struct {
    berth_mpbuf_t items;
    uint32_t n;
} res_list_t;

static int res_cb(meta_tx_t *tx, const MDB_val *k, const MDB_val *v, void *data,
                  berth_error_t **err)
{
    res_list_t *l = data;
    size_t tl, il;
    const char *t = meta_key_part(k, 2, &tl), *id = meta_key_part(k, 3, &il);
    if (!t || !id)
        return 0;
    /* The id is the rest of the key (snapshot keys have no NULs). */
    il = (size_t)((const char *)k->mv_data + k->mv_size - id);
    msgpack_pack_map(&l->items.pk, 2);
    berth_mp_pack_str(&l->items.pk, "id");
    berth_mp_pack_strn(&l->items.pk, id, il);
    berth_mp_pack_str(&l->items.pk, "type");
    berth_mp_pack_strn(&l->items.pk, t, tl);
    l->n++;
    return 0;
}

int meta_lease_list_resources(meta_tx_t *tx, const char *ns, const char *id, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("lease id", id, err) < 0)
        return -1;
    msgpack_object o;
    if (lease_get(tx, ns, id, &o, err) < 0)
        return -1;
    /* each_in_ns iterates "ns\0"; narrow to "ns\0id\0" by prefix key. */
    res_list_t l = {0};
    berth_mpbuf_init(&l.items);
    _cleanup_key_ meta_key_t pre;
    int rc = meta_key(&pre, err, 3, ns, id, "");
    MDB_cursor *c = NULL;
    if (rc == 0 && (rc = mdb_cursor_open(tx->txn, tx->db->dbi[DBI_LEASE_RES], &c)) != 0)
        rc = meta_mdb_fail(tx, rc, "lease_resources", err);
    if (rc == 0) {
        MDB_val k = {.mv_size = pre.len, .mv_data = pre.p}, v;
        int r = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        while (r == 0 && k.mv_size >= pre.len && memcmp(k.mv_data, pre.p, pre.len) == 0) {
            res_cb(tx, &k, &v, &l, err);
            r = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(c);
        if (r && r != MDB_NOTFOUND)
            rc = meta_mdb_fail(tx, r, "lease_resources", err);
    }
    if (rc == 0 && tx->out) {
        msgpack_pack_map(&tx->out->pk, 1);
        berth_mp_pack_str(&tx->out->pk, "resources");
        msgpack_pack_array(&tx->out->pk, l.n);
        msgpack_sbuffer_write(&tx->out->buf, l.items.buf.data, l.items.buf.size);
    }
    berth_mpbuf_destroy(&l.items);
    return rc;
}

int meta_lease_check(meta_tx_t *tx, const char *ns, const char *id, const char *rtype,
                     const char *rid, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("lease id", id, err) < 0 ||
        meta_validate_resource(rtype, rid, err) < 0)
        return -1;
    bool held = false;
    MDB_val v;
    msgpack_object o;
    int rc = get_rec(tx, DBI_LEASES, ns, id, &v, &o, err);
    if (rc < 0)
        return -1;
    if (rc == 0 && !meta_lease_expired(&o, tx->now)) {
        _cleanup_key_ meta_key_t k;
        if (meta_key(&k, err, 4, ns, id, rtype, rid) < 0)
            return -1;
        rc = meta_get(tx, DBI_LEASE_RES, &k, &v, err);
        if (rc < 0)
            return -1;
        held = rc == 0;
    }
    /* For content, also whether the namespace has it: content.path checks
     * both in this one read (a lease may hold a digest the namespace lacks). */
    bool content = strcmp(rtype, "content") == 0, exists = false;
    if (content) {
        rc = get_rec(tx, DBI_CONTENT, ns, rid, &v, NULL, err);
        if (rc < 0)
            return -1;
        exists = rc == 0;
    }
    if (tx->out) {
        msgpack_pack_map(&tx->out->pk, content ? 2 : 1);
        berth_mp_kv_bool(&tx->out->pk, "held", held);
        if (content)
            berth_mp_kv_bool(&tx->out->pk, "exists", exists);
    }
    return 0;
}

/* ---- content ---------------------------------------------------------- */

static void pack_info(berth_mpbuf_t *b, const char *digest, uint64_t size, int64_t created,
                      int64_t updated)
{
    msgpack_pack_map(&b->pk, 5);
    berth_mp_kv_str(&b->pk, "digest", digest);
    berth_mp_kv_u64(&b->pk, "size", size);
    berth_mp_kv_i64(&b->pk, "created_at", created);
    berth_mp_kv_i64(&b->pk, "updated_at", updated);
    berth_mp_pack_str(&b->pk, "labels");
}

int meta_content_commit(meta_tx_t *tx, const char *ns, const char *digest, uint64_t size,
                        const msgpack_object *labels, const char *ref, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_digest(digest, err) < 0 ||
        meta_validate_labels(labels, err) < 0 ||
        (ref && meta_validate_name("ingest ref", ref, err) < 0) || need_write(tx, err) < 0 ||
        meta_ns_ensure(tx, ns, err) < 0)
        return -1;
    bool tomb;
    if (meta_tomb_has(tx, "content", digest, &tomb, err) < 0)
        return -1;
    if (tomb)
        return berth_error_set(
            err, BERTH_E_ABORTED,
            "blob %s is being deleted by garbage collection; retry once it is gone", digest);
    MDB_val v;
    msgpack_object old;
    int rc = get_rec(tx, DBI_CONTENT, ns, digest, &v, &old, err);
    if (rc < 0)
        return -1;
    bool existed = rc == 0;
    if (existed) {
        uint64_t osize = 0;
        berth_mp_get_u64(&old, "size", &osize, NULL);
        if (osize != size)
            return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                   "content %s is recorded with size %llu, not %llu", digest,
                                   (unsigned long long)osize, (unsigned long long)size);
    } else {
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        pack_info(&b, digest, size, tx->now, tx->now);
        meta_pack_labels(&b.pk, labels);
        rc = put_rec(tx, DBI_CONTENT, ns, digest, &b, err);
        berth_mpbuf_destroy(&b);
        if (rc < 0)
            return -1;
        /* The global list of blobs the gc knows about. */
        MDB_val bv;
        rc = get_rec(tx, DBI_BLOBS, NULL, digest, &bv, NULL, err);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            berth_mpbuf_t g;
            berth_mpbuf_init(&g);
            msgpack_pack_map(&g.pk, 2);
            berth_mp_kv_u64(&g.pk, "size", size);
            berth_mp_kv_i64(&g.pk, "created_at", tx->now);
            rc = put_rec(tx, DBI_BLOBS, NULL, digest, &g, err);
            berth_mpbuf_destroy(&g);
            if (rc < 0)
                return -1;
        }
        if (tx->ev) {
            berth_mpbuf_t e;
            berth_mpbuf_init(&e);
            msgpack_pack_map(&e.pk, 2);
            berth_mp_kv_str(&e.pk, "digest", digest);
            berth_mp_kv_u64(&e.pk, "size", size);
            meta_events_add(tx->ev, "/content/commit", ns, &e);
            berth_mpbuf_destroy(&e);
        }
    }
    if (ref && del_rec(tx, DBI_INGESTS, ns, ref, err) < 0)
        return -1;
    if (meta_lease_join(tx, ns, "content", digest, err) < 0)
        return -1;
    if (tx->out) {
        msgpack_pack_map(&tx->out->pk, 1);
        berth_mp_kv_bool(&tx->out->pk, "existed", existed);
    }
    return 0;
}

int meta_content_info(meta_tx_t *tx, const char *ns, const char *digest, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_digest(digest, err) < 0)
        return -1;
    MDB_val v;
    int rc = get_rec(tx, DBI_CONTENT, ns, digest, &v, NULL, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "content %s not found in namespace %s",
                               digest, ns);
    out_wrapped(tx, "info", &v);
    return 0;
}

int meta_content_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                      berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0)
        return -1;
    return list_records(tx, DBI_CONTENT, ns, filters, "infos", err);
}

int meta_content_update(meta_tx_t *tx, const char *ns, const char *digest,
                        const msgpack_object *labels, const msgpack_object *fields,
                        berth_error_t **err)
{
    static const char *const allowed[] = {"labels", "labels.*", NULL};
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_digest(digest, err) < 0 ||
        fields_allowed(fields, allowed, "content", err) < 0 || need_write(tx, err) < 0)
        return -1;
    MDB_val v;
    msgpack_object old;
    int rc = get_rec(tx, DBI_CONTENT, ns, digest, &v, &old, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "content %s not found in namespace %s",
                               digest, ns);
    uint64_t size = 0;
    berth_mp_get_u64(&old, "size", &size, NULL);
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    pack_info(&b, digest, size, obj_created(&old, tx->now), tx->now);
    rc = meta_pack_labels_update(&b.pk, berth_mp_get(&old, "labels"), labels, fields, "labels",
                                 NULL, err);
    if (rc == 0)
        rc = put_rec(tx, DBI_CONTENT, ns, digest, &b, err);
    if (rc == 0)
        out_wrapped_buf(tx, "info", &b);
    berth_mpbuf_destroy(&b);
    return rc;
}

int meta_content_delete(meta_tx_t *tx, const char *ns, const char *digest, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_digest(digest, err) < 0 ||
        need_write(tx, err) < 0)
        return -1;
    int rc = del_rec(tx, DBI_CONTENT, ns, digest, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "content %s not found in namespace %s",
                               digest, ns);
    out_empty(tx);
    event1(tx, "/content/delete", ns, "digest", digest);
    return 0;
}

int meta_content_exists(meta_tx_t *tx, const char *ns, const char *digest, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_digest(digest, err) < 0)
        return -1;
    MDB_val v;
    msgpack_object o;
    int rc = get_rec(tx, DBI_CONTENT, ns, digest, &v, &o, err);
    if (rc < 0)
        return -1;
    uint64_t size = 0;
    if (rc == 0)
        berth_mp_get_u64(&o, "size", &size, NULL);
    if (tx->out) {
        msgpack_pack_map(&tx->out->pk, 2);
        berth_mp_kv_bool(&tx->out->pk, "exists", rc == 0);
        berth_mp_kv_u64(&tx->out->pk, "size", size);
    }
    return 0;
}

/* ---- ingests ---------------------------------------------------------- */

int meta_ingest_begin(meta_tx_t *tx, const char *ns, const char *ref, const char *expected,
                      berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("ingest ref", ref, err) < 0 ||
        (expected && meta_validate_digest(expected, err) < 0) || need_write(tx, err) < 0 ||
        meta_ns_ensure(tx, ns, err) < 0)
        return -1;
    if (expected) {
        bool tomb;
        if (meta_tomb_has(tx, "content", expected, &tomb, err) < 0)
            return -1;
        if (tomb)
            return berth_error_set(
                err, BERTH_E_ABORTED,
                "blob %s is being deleted by garbage collection; retry once it is gone", expected);
    }
    MDB_val v;
    msgpack_object old;
    int rc = get_rec(tx, DBI_INGESTS, ns, ref, &v, &old, err);
    if (rc < 0)
        return -1;
    int64_t started = rc == 0 ? meta_obj_i64(berth_mp_get(&old, "started_at")) : tx->now;
    const char *lease = tx->lease && tx->lease[0] ? tx->lease : NULL;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 5);
    berth_mp_kv_str(&b.pk, "ref", ref);
    berth_mp_kv_str(&b.pk, "expected", expected);
    berth_mp_kv_str(&b.pk, "lease", lease);
    berth_mp_kv_i64(&b.pk, "started_at", started);
    berth_mp_kv_i64(&b.pk, "updated_at", tx->now);
    rc = put_rec(tx, DBI_INGESTS, ns, ref, &b, err);
    berth_mpbuf_destroy(&b);
    if (rc < 0 || meta_lease_join(tx, ns, "ingests", ref, err) < 0)
        return -1;
    out_empty(tx);
    return 0;
}

int meta_ingest_end(meta_tx_t *tx, const char *ns, const char *ref, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("ingest ref", ref, err) < 0 ||
        need_write(tx, err) < 0)
        return -1;
    if (del_rec(tx, DBI_INGESTS, ns, ref, err) < 0)
        return -1;
    out_empty(tx);
    return 0;
}

int meta_ingest_get(meta_tx_t *tx, const char *ns, const char *ref, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("ingest ref", ref, err) < 0)
        return -1;
    MDB_val v;
    int rc = get_rec(tx, DBI_INGESTS, ns, ref, &v, NULL, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "ingest %s not found in namespace %s", ref,
                               ns);
    out_wrapped(tx, "ingest", &v);
    return 0;
}

int meta_ingest_list(meta_tx_t *tx, const char *ns, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0)
        return -1;
    return list_records(tx, DBI_INGESTS, ns, NULL, "ingests", err);
}

/* ---- images ----------------------------------------------------------- */

static const msgpack_object *nonnil(const msgpack_object *o)
{
    return o && o->type != MSGPACK_OBJECT_NIL ? o : NULL;
}

/* Validates and packs a descriptor {media_type, digest, size, annotations?,
 * platform?}. */
static int pack_desc(msgpack_packer *pk, const msgpack_object *d, const char *what,
                     berth_error_t **err)
{
    if (!d || d->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s must be a descriptor map", what);
    const char *mt = NULL, *dg = NULL;
    size_t mtl = 0, dgl = 0;
    uint64_t size = 0;
    if (berth_mp_get_str(d, "media_type", &mt, &mtl, err) < 0 ||
        berth_mp_get_str(d, "digest", &dg, &dgl, err) < 0 ||
        berth_mp_get_u64(d, "size", &size, err) < 0)
        return berth_error_wrap(err, "%s", what);
    if (!mt || mtl == 0 || mtl > 255)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s needs a media_type", what);
    if (!dg || dgl > 100)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s needs a digest", what);
    char dbuf[128];
    memcpy(dbuf, dg, dgl);
    dbuf[dgl] = 0;
    if (meta_validate_digest(dbuf, err) < 0)
        return berth_error_wrap(err, "%s", what);
    const msgpack_object *ann = berth_mp_get(d, "annotations");
    if (ann && ann->type == MSGPACK_OBJECT_NIL)
        ann = NULL;
    if (ann && meta_validate_labels(ann, err) < 0)
        return berth_error_wrap(err, "%s annotations", what);
    const msgpack_object *plat = berth_mp_get(d, "platform");
    if (plat && plat->type == MSGPACK_OBJECT_NIL)
        plat = NULL;
    if (plat && plat->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s platform must be a map", what);
    msgpack_pack_map(pk, 3 + (ann ? 1 : 0) + (plat ? 1 : 0));
    berth_mp_pack_str(pk, "media_type");
    berth_mp_pack_strn(pk, mt, mtl);
    berth_mp_pack_str(pk, "digest");
    berth_mp_pack_strn(pk, dg, dgl);
    berth_mp_kv_u64(pk, "size", size);
    if (ann) {
        berth_mp_pack_str(pk, "annotations");
        msgpack_pack_object(pk, *ann);
    }
    if (plat) {
        berth_mp_pack_str(pk, "platform");
        msgpack_pack_object(pk, *plat);
    }
    return 0;
}

static int target_not_tombstoned(meta_tx_t *tx, const msgpack_object *target, berth_error_t **err)
{
    char dg[128];
    if (!meta_str_copy(berth_mp_get(target, "digest"), dg, sizeof(dg)))
        return 0;
    bool tomb;
    if (meta_tomb_has(tx, "content", dg, &tomb, err) < 0)
        return -1;
    if (tomb)
        return berth_error_set(err, BERTH_E_ABORTED,
                               "blob %s is being deleted by garbage collection; pull it again", dg);
    return 0;
}

/* The key of a record parameter: KIND must be a map with a valid FIELD
 * ("image" / "name"); *out is malloc'd. */
static int record_key(const msgpack_object *rec, const char *kind, const char *field, char **out,
                      berth_error_t **err)
{
    if (!rec || rec->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "parameter %s must be a map", kind);
    *out = NULL;
    if (berth_mp_get_strdup(rec, field, out, err) < 0)
        return -1;
    if (!*out)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s needs a%s %s", kind,
                               field[0] == 'i' ? "n" : "", field);
    char what[64];
    snprintf(what, sizeof(what), "%s %s", kind, field);
    if (meta_validate_name(what, *out, err) < 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

static int image_name(const msgpack_object *image, char **name, berth_error_t **err)
{
    return record_key(image, "image", "name", name, err);
}

static void image_event(meta_tx_t *tx, const char *topic, const char *ns, const char *name,
                        const msgpack_object *labels_or_null, const berth_mpbuf_t *rec)
{
    if (!tx->ev)
        return;
    berth_mpbuf_t e;
    berth_mpbuf_init(&e);
    msgpack_pack_map(&e.pk, 2);
    berth_mp_kv_str(&e.pk, "name", name);
    berth_mp_pack_str(&e.pk, "labels");
    if (rec) {
        msgpack_object o;
        msgpack_zone *z = msgpack_zone_new(1024);
        size_t off = 0;
        if (z &&
            msgpack_unpack(rec->buf.data, rec->buf.size, &off, z, &o) == MSGPACK_UNPACK_SUCCESS)
            meta_pack_labels(&e.pk, berth_mp_get(&o, "labels"));
        else
            msgpack_pack_map(&e.pk, 0);
        if (z)
            msgpack_zone_free(z);
    } else {
        meta_pack_labels(&e.pk, labels_or_null);
    }
    meta_events_add(tx->ev, topic, ns, &e);
    berth_mpbuf_destroy(&e);
}

int meta_image_create(meta_tx_t *tx, const char *ns, const msgpack_object *image,
                      berth_error_t **err)
{
    _cleanup_free_ char *name = NULL;
    if (meta_validate_namespace(ns, err) < 0 || image_name(image, &name, err) < 0 ||
        need_write(tx, err) < 0)
        return -1;
    const msgpack_object *labels = berth_mp_get(image, "labels");
    const msgpack_object *target = berth_mp_get(image, "target");
    if (meta_validate_labels(labels, err) < 0)
        return -1;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 5);
    berth_mp_kv_str(&b.pk, "name", name);
    berth_mp_pack_str(&b.pk, "target");
    int rc = pack_desc(&b.pk, target, "image target", err);
    if (rc == 0)
        rc = target_not_tombstoned(tx, target, err);
    berth_mp_pack_str(&b.pk, "labels");
    meta_pack_labels(&b.pk, labels);
    berth_mp_kv_i64(&b.pk, "created_at", tx->now);
    berth_mp_kv_i64(&b.pk, "updated_at", tx->now);
    MDB_val v;
    if (rc == 0)
        rc = meta_ns_ensure(tx, ns, err);
    if (rc == 0) {
        rc = get_rec(tx, DBI_IMAGES, ns, name, &v, NULL, err);
        if (rc == 0)
            rc = berth_error_set(err, BERTH_E_ALREADY_EXISTS,
                                 "image %s already exists in namespace %s", name, ns);
        else if (rc == 1)
            rc = put_rec(tx, DBI_IMAGES, ns, name, &b, err);
    }
    if (rc == 0) {
        out_wrapped_buf(tx, "image", &b);
        image_event(tx, "/images/create", ns, name, labels, NULL);
    }
    berth_mpbuf_destroy(&b);
    return rc;
}

/* get of a namespaced record: {KIND: record}. what: "image name". */
static int get_wrapped(meta_tx_t *tx, int dbi, const char *kind, const char *what, const char *ns,
                       const char *key, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name(what, key, err) < 0)
        return -1;
    MDB_val v;
    int rc = get_rec(tx, dbi, ns, key, &v, NULL, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "%s %s not found in namespace %s", kind, key,
                               ns);
    out_wrapped(tx, kind, &v);
    return 0;
}

int meta_image_get(meta_tx_t *tx, const char *ns, const char *name, berth_error_t **err)
{
    return get_wrapped(tx, DBI_IMAGES, "image", "image name", ns, name, err);
}

int meta_image_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                    berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0)
        return -1;
    return list_records(tx, DBI_IMAGES, ns, filters, "images", err);
}

int meta_image_update(meta_tx_t *tx, const char *ns, const msgpack_object *image,
                      const msgpack_object *fields, berth_error_t **err)
{
    static const char *const allowed[] = {"labels",      "labels.*",      "target",
                                          "annotations", "annotations.*", NULL};
    _cleanup_free_ char *name = NULL;
    if (meta_validate_namespace(ns, err) < 0 || image_name(image, &name, err) < 0 ||
        fields_allowed(fields, allowed, "an image", err) < 0 || need_write(tx, err) < 0)
        return -1;
    MDB_val v;
    msgpack_object old;
    int rc = get_rec(tx, DBI_IMAGES, ns, name, &v, &old, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "image %s not found in namespace %s", name,
                               ns);
    const msgpack_object *ntarget = nonnil(berth_mp_get(image, "target"));
    const msgpack_object *otarget = berth_mp_get(&old, "target");
    const msgpack_object *nlabels = nonnil(berth_mp_get(image, "labels"));
    /* No fields: what the given image holds replaces the stored values.
     * With fields: exactly the named ones ("labels.k" absent = delete). */
    bool all = !fields || fields->type != MSGPACK_OBJECT_ARRAY;
    bool set_target = all ? ntarget != NULL : meta_fields_has(fields, "target");
    bool set_ann = !all && !set_target && fields_touch(fields, "annotations");
    bool set_labels = all ? nlabels != NULL : fields_touch(fields, "labels");
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 5);
    berth_mp_kv_str(&b.pk, "name", name);
    berth_mp_pack_str(&b.pk, "target");
    const msgpack_object *tsrc = set_target ? ntarget : otarget;
    if (set_ann) {
        /* Rebuild the old target with updated annotations. */
        msgpack_object t = *otarget;
        berth_mpbuf_t ann;
        berth_mpbuf_init(&ann);
        rc = meta_pack_labels_update(&ann.pk, berth_mp_get(otarget, "annotations"),
                                     berth_mp_get(ntarget, "annotations"), fields, "annotations",
                                     NULL, err);
        msgpack_object annobj;
        msgpack_zone *z = msgpack_zone_new(1024);
        size_t off = 0;
        if (rc == 0 && (!z || msgpack_unpack(ann.buf.data, ann.buf.size, &off, z, &annobj) !=
                                  MSGPACK_UNPACK_SUCCESS))
            rc = berth_error_set(err, BERTH_E_INTERNAL, "re-encode annotations");
        msgpack_object_kv *kv = NULL;
        if (rc == 0) {
            uint32_t n = t.via.map.size;
            kv = calloc(n + 1, sizeof(*kv));
            uint32_t m = 0;
            for (uint32_t i = 0; kv && i < n; i++)
                if (!berth_mp_str_eq(&t.via.map.ptr[i].key, "annotations"))
                    kv[m++] = t.via.map.ptr[i];
            if (kv) {
                kv[m].key = (msgpack_object){.type = MSGPACK_OBJECT_STR,
                                             .via.str = {.size = 11, .ptr = "annotations"}};
                kv[m].val = annobj;
                t.via.map.ptr = kv;
                t.via.map.size = m + 1;
                rc = pack_desc(&b.pk, &t, "image target", err);
            } else {
                rc = berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            }
        }
        free(kv);
        if (z)
            msgpack_zone_free(z);
        berth_mpbuf_destroy(&ann);
    } else {
        rc = pack_desc(&b.pk, tsrc, "image target", err);
        if (rc == 0 && set_target)
            rc = target_not_tombstoned(tx, tsrc, err);
    }
    berth_mp_pack_str(&b.pk, "labels");
    if (rc == 0) {
        if (!set_labels)
            meta_pack_labels(&b.pk, berth_mp_get(&old, "labels"));
        else
            rc = meta_pack_labels_update(&b.pk, berth_mp_get(&old, "labels"), nlabels,
                                         all ? NULL : fields, "labels", NULL, err);
    }
    berth_mp_kv_i64(&b.pk, "created_at", obj_created(&old, tx->now));
    berth_mp_kv_i64(&b.pk, "updated_at", tx->now);
    if (rc == 0)
        rc = put_rec(tx, DBI_IMAGES, ns, name, &b, err);
    if (rc == 0) {
        out_wrapped_buf(tx, "image", &b);
        image_event(tx, "/images/update", ns, name, NULL, &b);
    }
    berth_mpbuf_destroy(&b);
    return rc;
}

int meta_image_delete(meta_tx_t *tx, const char *ns, const char *name, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("image name", name, err) < 0 ||
        need_write(tx, err) < 0)
        return -1;
    int rc = del_rec(tx, DBI_IMAGES, ns, name, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "image %s not found in namespace %s", name,
                               ns);
    out_empty(tx);
    event1(tx, "/images/delete", ns, "name", name);
    return 0;
}

/* ---- containers ------------------------------------------------------- */

/* The container fields in their stored order. */
typedef struct {
    const msgpack_object *labels, *image, *runtime, *spec, *snapshotter, *snapshot_key, *extensions,
        *rm;
} cfields_t;

static void cfields_from(cfields_t *f, const msgpack_object *c)
{
    f->labels = nonnil(berth_mp_get(c, "labels"));
    f->image = nonnil(berth_mp_get(c, "image"));
    f->runtime = nonnil(berth_mp_get(c, "runtime"));
    f->spec = nonnil(berth_mp_get(c, "spec"));
    f->snapshotter = nonnil(berth_mp_get(c, "snapshotter"));
    f->snapshot_key = nonnil(berth_mp_get(c, "snapshot_key"));
    if (!f->snapshot_key)
        f->snapshot_key = nonnil(berth_mp_get(c, "snapshotkey"));
    f->extensions = nonnil(berth_mp_get(c, "extensions"));
    f->rm = nonnil(berth_mp_get(c, "rm"));
}

static int cfields_validate(const cfields_t *f, berth_error_t **err)
{
    if (meta_validate_labels(f->labels, err) < 0)
        return -1;
    if (f->image && (f->image->type != MSGPACK_OBJECT_STR || f->image->via.str.size > 400))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "container image must be a string of at most 400 bytes");
    if (!f->runtime || f->runtime->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "container needs a runtime {name, options}");
    const msgpack_object *rn = berth_mp_get(f->runtime, "name");
    if (!rn || rn->type != MSGPACK_OBJECT_STR || rn->via.str.size == 0 || rn->via.str.size > 255)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "container needs a runtime name");
    if (f->spec && f->spec->type != MSGPACK_OBJECT_BIN && f->spec->type != MSGPACK_OBJECT_STR)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "container spec must be bytes (JSON)");
    if (f->snapshotter &&
        (f->snapshotter->type != MSGPACK_OBJECT_STR || f->snapshotter->via.str.size > 64))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "container snapshotter must be a string");
    if (f->snapshot_key) {
        if (f->snapshot_key->type != MSGPACK_OBJECT_STR || f->snapshot_key->via.str.size > 200)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "container snapshot_key must be a string of at most 200 bytes");
        if (f->snapshot_key->via.str.size && (!f->snapshotter || f->snapshotter->via.str.size == 0))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "container with a snapshot_key needs a snapshotter");
    }
    if (f->extensions && f->extensions->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "container extensions must be a map");
    if (f->rm && f->rm->type != MSGPACK_OBJECT_BOOLEAN)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "container rm must be a boolean");
    return 0;
}

static void pack_opt_str(msgpack_packer *pk, const char *k, const msgpack_object *v)
{
    berth_mp_pack_str(pk, k);
    if (v && v->type == MSGPACK_OBJECT_STR)
        msgpack_pack_object(pk, *v);
    else
        berth_mp_pack_str(pk, "");
}

/* Packs a container; labels come from lb (already packed labels) when set. */
static void pack_container(msgpack_packer *pk, const char *id, const cfields_t *f,
                           const berth_mpbuf_t *lb, int64_t created, int64_t updated)
{
    msgpack_pack_map(pk, 11);
    berth_mp_kv_str(pk, "id", id);
    berth_mp_pack_str(pk, "labels");
    if (lb)
        msgpack_sbuffer_write(pk->data, lb->buf.data, lb->buf.size);
    else
        meta_pack_labels(pk, f->labels);
    pack_opt_str(pk, "image", f->image);
    berth_mp_pack_str(pk, "runtime");
    msgpack_pack_map(pk, 2);
    berth_mp_pack_str(pk, "name");
    msgpack_pack_object(pk, *berth_mp_get(f->runtime, "name"));
    berth_mp_pack_str(pk, "options");
    const msgpack_object *opt = berth_mp_get(f->runtime, "options");
    if (opt)
        msgpack_pack_object(pk, *opt);
    else
        msgpack_pack_nil(pk);
    berth_mp_pack_str(pk, "spec");
    if (f->spec && f->spec->type == MSGPACK_OBJECT_BIN)
        berth_mp_pack_bin(pk, f->spec->via.bin.ptr, f->spec->via.bin.size);
    else if (f->spec)
        berth_mp_pack_bin(pk, f->spec->via.str.ptr, f->spec->via.str.size);
    else
        berth_mp_pack_bin(pk, "", 0);
    pack_opt_str(pk, "snapshotter", f->snapshotter);
    pack_opt_str(pk, "snapshot_key", f->snapshot_key);
    berth_mp_kv_i64(pk, "created_at", created);
    berth_mp_kv_i64(pk, "updated_at", updated);
    berth_mp_pack_str(pk, "extensions");
    if (f->extensions)
        msgpack_pack_object(pk, *f->extensions);
    else
        msgpack_pack_map(pk, 0);
    berth_mp_kv_bool(pk, "rm", f->rm && f->rm->via.boolean);
}

static int container_id(const msgpack_object *c, char **id, berth_error_t **err)
{
    return record_key(c, "container", "id", id, err);
}

static void container_event(meta_tx_t *tx, const char *topic, const char *ns, const char *id,
                            const cfields_t *f)
{
    if (!tx->ev)
        return;
    berth_mpbuf_t e;
    berth_mpbuf_init(&e);
    msgpack_pack_map(&e.pk, 3);
    berth_mp_kv_str(&e.pk, "id", id);
    pack_opt_str(&e.pk, "image", f->image);
    berth_mp_pack_str(&e.pk, "runtime");
    msgpack_pack_map(&e.pk, 1);
    berth_mp_pack_str(&e.pk, "name");
    msgpack_pack_object(&e.pk, *berth_mp_get(f->runtime, "name"));
    meta_events_add(tx->ev, topic, ns, &e);
    berth_mpbuf_destroy(&e);
}

int meta_container_create(meta_tx_t *tx, const char *ns, const msgpack_object *c,
                          berth_error_t **err)
{
    _cleanup_free_ char *id = NULL;
    if (meta_validate_namespace(ns, err) < 0 || container_id(c, &id, err) < 0 ||
        need_write(tx, err) < 0)
        return -1;
    cfields_t f;
    cfields_from(&f, c);
    if (cfields_validate(&f, err) < 0 || meta_ns_ensure(tx, ns, err) < 0)
        return -1;
    MDB_val v;
    int rc = get_rec(tx, DBI_CONTAINERS, ns, id, &v, NULL, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return berth_error_set(err, BERTH_E_ALREADY_EXISTS,
                               "container %s already exists in namespace %s", id, ns);
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    pack_container(&b.pk, id, &f, NULL, tx->now, tx->now);
    rc = put_rec(tx, DBI_CONTAINERS, ns, id, &b, err);
    if (rc == 0) {
        out_wrapped_buf(tx, "container", &b);
        container_event(tx, "/containers/create", ns, id, &f);
    }
    berth_mpbuf_destroy(&b);
    return rc;
}

int meta_container_get(meta_tx_t *tx, const char *ns, const char *id, berth_error_t **err)
{
    return get_wrapped(tx, DBI_CONTAINERS, "container", "container id", ns, id, err);
}

int meta_container_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                        berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0)
        return -1;
    return list_records(tx, DBI_CONTAINERS, ns, filters, "containers", err);
}

static bool str_obj_eq(const msgpack_object *a, const msgpack_object *b)
{
    size_t al = a && a->type == MSGPACK_OBJECT_STR ? a->via.str.size : 0;
    size_t bl = b && b->type == MSGPACK_OBJECT_STR ? b->via.str.size : 0;
    return al == bl && (al == 0 || memcmp(a->via.str.ptr, b->via.str.ptr, al) == 0);
}

int meta_container_update(meta_tx_t *tx, const char *ns, const msgpack_object *c,
                          const msgpack_object *fields, berth_error_t **err)
{
    static const char *const allowed[] = {
        "labels",      "labels.*",   "image",        "spec", "snapshot_key",
        "snapshotkey", "extensions", "extensions.*", "rm",   NULL};
    _cleanup_free_ char *id = NULL;
    if (meta_validate_namespace(ns, err) < 0 || container_id(c, &id, err) < 0 ||
        fields_allowed(fields, allowed, "a container", err) < 0 || need_write(tx, err) < 0)
        return -1;
    MDB_val v;
    msgpack_object old;
    int rc = get_rec(tx, DBI_CONTAINERS, ns, id, &v, &old, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "container %s not found in namespace %s", id,
                               ns);
    cfields_t of, nf, res;
    cfields_from(&of, &old);
    cfields_from(&nf, c);
    bool all = !fields || fields->type != MSGPACK_OBJECT_ARRAY;
    /* runtime and snapshotter are immutable (containerd's rule). */
    if (nf.runtime && nf.runtime->type == MSGPACK_OBJECT_MAP &&
        !str_obj_eq(berth_mp_get(nf.runtime, "name"), berth_mp_get(of.runtime, "name")))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "container %s: runtime cannot be changed", id);
    if (nf.snapshotter && !str_obj_eq(nf.snapshotter, of.snapshotter))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "container %s: snapshotter cannot be changed", id);
    res = of;
    if ((all && nf.image) || (!all && meta_fields_has(fields, "image")))
        res.image = nf.image;
    if ((all && nf.spec) || (!all && meta_fields_has(fields, "spec")))
        res.spec = nf.spec;
    if ((all && nf.snapshot_key) || (!all && (meta_fields_has(fields, "snapshot_key") ||
                                              meta_fields_has(fields, "snapshotkey"))))
        res.snapshot_key = nf.snapshot_key;
    if ((all && nf.extensions) || (!all && fields_touch(fields, "extensions")))
        res.extensions = nf.extensions;
    if ((all && nf.rm) || (!all && meta_fields_has(fields, "rm")))
        res.rm = nf.rm;
    berth_mpbuf_t lb;
    berth_mpbuf_init(&lb);
    if ((all && nf.labels) || (!all && fields_touch(fields, "labels")))
        rc = meta_pack_labels_update(&lb.pk, of.labels, nf.labels, fields, "labels", NULL, err);
    else
        meta_pack_labels(&lb.pk, of.labels);
    if (rc == 0)
        rc = cfields_validate(&res, err);
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    if (rc == 0) {
        pack_container(&b.pk, id, &res, &lb, obj_created(&old, tx->now), tx->now);
        rc = put_rec(tx, DBI_CONTAINERS, ns, id, &b, err);
    }
    if (rc == 0) {
        out_wrapped_buf(tx, "container", &b);
        container_event(tx, "/containers/update", ns, id, &res);
    }
    berth_mpbuf_destroy(&b);
    berth_mpbuf_destroy(&lb);
    return rc;
}

int meta_container_delete(meta_tx_t *tx, const char *ns, const char *id, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("container id", id, err) < 0 ||
        need_write(tx, err) < 0)
        return -1;
    MDB_val v;
    int rc = get_rec(tx, DBI_CONTAINERS, ns, id, &v, NULL, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "container %s not found in namespace %s", id,
                               ns);
    /* Copy the record out before deleting: v points into the page. */
    out_wrapped(tx, "container", &v);
    if (del_rec(tx, DBI_CONTAINERS, ns, id, err) < 0)
        return -1;
    event1(tx, "/containers/delete", ns, "id", id);
    return 0;
}

/* ---- replays ---------------------------------------------------------- */

size_t meta_replay_prune(meta_tx_t *tx, int64_t before)
{
    MDB_cursor *c;
    if (mdb_cursor_open(tx->txn, tx->db->dbi[DBI_REPLAY], &c))
        return 0;
    /* Collect first, delete after: no deletes under an iterating cursor. */
    MDB_val *victims = NULL;
    size_t n = 0, cap = 0;
    MDB_val k, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        msgpack_object o;
        bool old = true;
        if (meta_decode(tx, &v, &o, NULL) == 0)
            old = meta_obj_i64(berth_mp_get(&o, "at")) < before;
        if (old) {
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                MDB_val *nv = realloc(victims, cap * sizeof(*nv));
                if (!nv)
                    break;
                victims = nv;
            }
            victims[n++] = k; /* valid until the txn writes */
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    /* Keys point into pages that deletes may change: copy them first. */
    char **copies = calloc(n ? n : 1, sizeof(char *));
    size_t m = 0;
    for (size_t i = 0; copies && i < n; i++) {
        copies[i] = malloc(victims[i].mv_size ? victims[i].mv_size : 1);
        if (!copies[i])
            break;
        memcpy(copies[i], victims[i].mv_data, victims[i].mv_size);
        m++;
    }
    size_t deleted = 0;
    for (size_t i = 0; i < m; i++) {
        MDB_val key = {.mv_size = victims[i].mv_size, .mv_data = copies[i]};
        if (mdb_del(tx->txn, tx->db->dbi[DBI_REPLAY], &key, NULL) == 0)
            deleted++;
        free(copies[i]);
    }
    free(copies);
    free(victims);
    return deleted;
}
