/* SPDX-License-Identifier: Apache-2.0 */
/* Snapshot records: per namespace, key → backend id, parent, kind, labels.
 * The backend (berth-snapshot-overlay) knows only global ids; this file
 * maps (namespace, key) to them, shares committed snapshots between
 * namespaces, and records intents around backend calls so that a crash
 * between "record" and "backend did it" is settled at start
 * (docs/metadata.md, "Snapshots"). */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "snap.h"

void meta_strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

void meta_snap_plan_free(meta_snap_plan_t *p)
{
    meta_strv_free(p->parents, p->n_parents);
    free(p->tomb);
    memset(p, 0, sizeof(*p));
}

static void plan_reset(meta_snap_plan_t *p)
{
    meta_snap_plan_free(p);
}

static int need_write(meta_tx_t *tx, berth_error_t **err)
{
    if (!tx->write)
        return berth_error_set(err, BERTH_E_INTERNAL, "write attempted in a read transaction");
    return 0;
}

static bool is_digest_name(const char *s)
{
    return meta_validate_digest(s, NULL) == 0;
}

/* ---- record access ------------------------------------------------------ */

int meta_snap_get(meta_tx_t *tx, const char *ns, const char *key, meta_snap_rec_t *r,
                  berth_error_t **err)
{
    memset(r, 0, sizeof(*r));
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 2, ns, key) < 0)
        return -1;
    int rc = meta_get(tx, DBI_SNAPS, &k, &r->raw, err);
    if (rc)
        return rc;
    if (meta_decode(tx, &r->raw, &r->obj, err) < 0)
        return -1;
    if (!meta_str_copy(berth_mp_get(&r->obj, "id"), r->id, sizeof(r->id)) ||
        !meta_str_copy(berth_mp_get(&r->obj, "kind"), r->kind, sizeof(r->kind)))
        return berth_error_set(err, BERTH_E_INTERNAL, "snapshot record %s is corrupted", key);
    meta_str_copy(berth_mp_get(&r->obj, "parent"), r->parent, sizeof(r->parent));
    meta_str_copy(berth_mp_get(&r->obj, "state"), r->state, sizeof(r->state));
    meta_str_copy(berth_mp_get(&r->obj, "target"), r->target, sizeof(r->target));
    r->labels = berth_mp_get(&r->obj, "labels");
    r->created_at = meta_obj_i64(berth_mp_get(&r->obj, "created_at"));
    return 0;
}

/* Packs and stores a record. */
static int snap_put(meta_tx_t *tx, const char *ns, const char *key, const char *parent,
                    const char *kind, const msgpack_object *labels, const berth_mpbuf_t *lb,
                    int64_t created, const char *id, const char *state, const char *target,
                    berth_mpbuf_t *copy, berth_error_t **err)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    bool has_target = target && target[0];
    msgpack_pack_map(&b.pk, 8 + (has_target ? 1 : 0));
    berth_mp_kv_str(&b.pk, "name", key);
    berth_mp_kv_str(&b.pk, "parent", parent ? parent : "");
    berth_mp_kv_str(&b.pk, "kind", kind);
    berth_mp_pack_str(&b.pk, "labels");
    if (lb)
        msgpack_sbuffer_write(&b.buf, lb->buf.data, lb->buf.size);
    else
        meta_pack_labels(&b.pk, labels);
    berth_mp_kv_i64(&b.pk, "created_at", created);
    berth_mp_kv_i64(&b.pk, "updated_at", tx->now);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_mp_kv_str(&b.pk, "state", state ? state : "");
    if (has_target)
        berth_mp_kv_str(&b.pk, "target", target);
    _cleanup_key_ meta_key_t k;
    int rc = meta_key(&k, err, 2, ns, key);
    if (rc == 0)
        rc = meta_put(tx, DBI_SNAPS, &k, b.buf.data, b.buf.size, 0, err);
    if (rc == 0 && copy)
        msgpack_sbuffer_write(&copy->buf, b.buf.data, b.buf.size);
    berth_mpbuf_destroy(&b);
    return rc;
}

static const uint8_t nil_val = 0xc0;

static int idx_put(meta_tx_t *tx, int dbi, const char *a, const char *b, const char *c,
                   berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 3, a, b, c) < 0)
        return -1;
    return meta_put(tx, dbi, &k, &nil_val, 1, 0, err);
}

static int idx_del(meta_tx_t *tx, int dbi, const char *a, const char *b, const char *c,
                   berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 3, a, b, c) < 0)
        return -1;
    return meta_del(tx, dbi, &k, err) < 0 ? -1 : 0;
}

static int backend_put(meta_tx_t *tx, const char *id, const char *pid, const char *kind,
                       const char *name, int64_t created, berth_error_t **err)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 5);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_mp_kv_str(&b.pk, "parent", pid ? pid : "");
    berth_mp_kv_str(&b.pk, "kind", kind);
    berth_mp_kv_str(&b.pk, "name", name ? name : "");
    berth_mp_kv_i64(&b.pk, "created_at", created);
    _cleanup_key_ meta_key_t k;
    int rc = meta_key(&k, err, 1, id);
    if (rc == 0)
        rc = meta_put(tx, DBI_SNAP_BACKEND, &k, b.buf.data, b.buf.size, 0, err);
    berth_mpbuf_destroy(&b);
    return rc;
}

/* Backend record: 0 found (fields copied), 1 absent. */
static int backend_get(meta_tx_t *tx, const char *id, char pid[24], char kind[16], char name[256],
                       berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 1, id) < 0)
        return -1;
    MDB_val v;
    int rc = meta_get(tx, DBI_SNAP_BACKEND, &k, &v, err);
    if (rc)
        return rc;
    msgpack_object o;
    if (meta_decode(tx, &v, &o, err) < 0)
        return -1;
    if (pid && !meta_str_copy(berth_mp_get(&o, "parent"), pid, 24))
        pid[0] = 0;
    if (kind && !meta_str_copy(berth_mp_get(&o, "kind"), kind, 16))
        kind[0] = 0;
    if (name && !meta_str_copy(berth_mp_get(&o, "name"), name, 256))
        name[0] = 0;
    return 0;
}

static int alloc_id(meta_tx_t *tx, char out[24], berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 1, "next_snapshot_id") < 0)
        return -1;
    MDB_val v;
    uint64_t next = 1;
    int rc = meta_get(tx, DBI_META, &k, &v, err);
    if (rc < 0)
        return -1;
    if (rc == 0 && v.mv_size == 8)
        memcpy(&next, v.mv_data, 8);
    snprintf(out, 24, "%llu", (unsigned long long)next);
    next++;
    return meta_put(tx, DBI_META, &k, &next, 8, 0, err);
}

/* Collects backend ids of key's parent chain, nearest first. */
static int parent_chain(meta_tx_t *tx, const char *ns, const char *parent, meta_snap_plan_t *p,
                        berth_error_t **err)
{
    char cur[256];
    snprintf(cur, sizeof(cur), "%s", parent ? parent : "");
    size_t guard = 0;
    while (cur[0]) {
        if (++guard > 4096)
            return berth_error_set(err, BERTH_E_INTERNAL, "snapshot parent chain of %s loops",
                                   parent);
        meta_snap_rec_t r;
        int rc = meta_snap_get(tx, ns, cur, &r, err);
        if (rc < 0)
            return -1;
        if (rc == 1)
            return berth_error_set(err, BERTH_E_INTERNAL,
                                   "snapshot %s in namespace %s names a missing parent", cur, ns);
        char **np = realloc(p->parents, (p->n_parents + 1) * sizeof(char *));
        if (!np)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        p->parents = np;
        p->parents[p->n_parents] = strdup(r.id);
        if (!p->parents[p->n_parents])
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        p->n_parents++;
        snprintf(cur, sizeof(cur), "%s", r.parent);
    }
    return 0;
}

static bool has_other_refs(meta_tx_t *tx, const char *id, berth_error_t **err, int *rcp)
{
    _cleanup_key_ meta_key_t pre;
    *rcp = meta_key(&pre, err, 2, id, "");
    if (*rcp < 0)
        return false;
    bool has = false;
    *rcp = meta_has_prefix(tx, DBI_SNAP_REFS, pre.p, pre.len, &has, err);
    return has;
}

/* Drops a backend id nobody references: backend record, shared index entry,
 * tombstone. *tomb gets a copy of the id. */
static int backend_release(meta_tx_t *tx, const char *id, char **tomb, berth_error_t **err)
{
    int rc;
    if (has_other_refs(tx, id, err, &rc) || rc < 0)
        return rc;
    char pid[24], kind[16], name[256];
    rc = backend_get(tx, id, pid, kind, name, err);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        if (name[0]) {
            _cleanup_key_ meta_key_t sk;
            if (meta_key(&sk, err, 2, pid, name) < 0)
                return -1;
            MDB_val v;
            rc = meta_get(tx, DBI_SNAP_SHARED, &sk, &v, err);
            if (rc < 0)
                return -1;
            if (rc == 0 && v.mv_size == strlen(id) && memcmp(v.mv_data, id, v.mv_size) == 0 &&
                meta_del(tx, DBI_SNAP_SHARED, &sk, err) < 0)
                return -1;
        }
        _cleanup_key_ meta_key_t bk;
        if (meta_key(&bk, err, 1, id) < 0 || meta_del(tx, DBI_SNAP_BACKEND, &bk, err) < 0)
            return -1;
    }
    if (meta_tomb_add(tx, "snapshot", id, err) < 0)
        return -1;
    if (tomb) {
        free(*tomb);
        *tomb = strdup(id);
    }
    return 0;
}

int meta_snap_drop(meta_tx_t *tx, const char *ns, const char *key, const meta_snap_rec_t *r,
                   char **tomb, berth_error_t **err)
{
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 2, ns, key) < 0 || meta_del(tx, DBI_SNAPS, &k, err) < 0)
        return -1;
    if (r->parent[0] && idx_del(tx, DBI_SNAP_CHILDREN, ns, r->parent, key, err) < 0)
        return -1;
    if (idx_del(tx, DBI_SNAP_REFS, r->id, ns, key, err) < 0)
        return -1;
    return backend_release(tx, r->id, tomb, err);
}

static void snap_event(meta_tx_t *tx, const char *topic, const char *ns, const char *k1,
                       const char *v1, const char *k2, const char *v2)
{
    if (!tx->ev)
        return;
    berth_mpbuf_t e;
    berth_mpbuf_init(&e);
    msgpack_pack_map(&e.pk, k2 ? 2 : 1);
    berth_mp_kv_str(&e.pk, k1, v1);
    if (k2)
        berth_mp_kv_str(&e.pk, k2, v2);
    meta_events_add(tx->ev, topic, ns, &e);
    berth_mpbuf_destroy(&e);
}

/* ---- prepare / view ------------------------------------------------------ */

/* Labels without berth.io/snapshot.ref (it describes the prepare, not the
 * committed result). */
static void pack_labels_without_ref(msgpack_packer *pk, const msgpack_object *labels)
{
    uint32_t n = 0;
    if (labels && labels->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < labels->via.map.size; i++)
            if (!berth_mp_str_eq(&labels->via.map.ptr[i].key, META_LABEL_SNAPSHOT_REF) &&
                !berth_mp_str_eq(&labels->via.map.ptr[i].key, "containerd.io/snapshot.ref"))
                n++;
    msgpack_pack_map(pk, n);
    if (!labels || labels->type != MSGPACK_OBJECT_MAP)
        return;
    for (uint32_t i = 0; i < labels->via.map.size; i++)
        if (!berth_mp_str_eq(&labels->via.map.ptr[i].key, META_LABEL_SNAPSHOT_REF) &&
            !berth_mp_str_eq(&labels->via.map.ptr[i].key, "containerd.io/snapshot.ref")) {
            msgpack_pack_object(pk, labels->via.map.ptr[i].key);
            msgpack_pack_object(pk, labels->via.map.ptr[i].val);
        }
}

/* A committed NAME already exists here, or can be shared from another
 * namespace: record it here and report exists. */
static int try_share(meta_tx_t *tx, const char *ns, const char *ref, const char *parent,
                     const char *pid, const msgpack_object *labels, meta_snap_plan_t *plan,
                     berth_error_t **err)
{
    meta_snap_rec_t r;
    int rc = meta_snap_get(tx, ns, ref, &r, err);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        plan->exists = true;
        return 1;
    }
    if (!is_digest_name(ref))
        return 0;
    _cleanup_key_ meta_key_t sk;
    if (meta_key(&sk, err, 2, pid, ref) < 0)
        return -1;
    MDB_val v;
    rc = meta_get(tx, DBI_SNAP_SHARED, &sk, &v, err);
    if (rc < 0)
        return -1;
    if (rc == 1 || v.mv_size == 0 || v.mv_size >= 24)
        return 0;
    char id[24];
    memcpy(id, v.mv_data, v.mv_size);
    id[v.mv_size] = 0;
    bool tomb;
    if (meta_tomb_has(tx, "snapshot", id, &tomb, err) < 0)
        return -1;
    if (tomb)
        return 0;
    berth_mpbuf_t lb;
    berth_mpbuf_init(&lb);
    pack_labels_without_ref(&lb.pk, labels);
    rc = snap_put(tx, ns, ref, parent, "committed", NULL, &lb, tx->now, id, "", NULL, NULL, err);
    berth_mpbuf_destroy(&lb);
    if (rc < 0 || idx_put(tx, DBI_SNAP_REFS, id, ns, ref, err) < 0 ||
        (parent && parent[0] && idx_put(tx, DBI_SNAP_CHILDREN, ns, parent, ref, err) < 0) ||
        meta_lease_join(tx, ns, "snapshots/overlayfs", ref, err) < 0)
        return -1;
    snap_event(tx, "/snapshots/commit", ns, "key", ref, "name", ref);
    snprintf(plan->id, sizeof(plan->id), "%s", id);
    plan->exists = true;
    return 1;
}

int meta_snap_prepare_begin(meta_tx_t *tx, const char *ns, const char *key, const char *parent,
                            const msgpack_object *labels, bool view, meta_snap_plan_t *plan,
                            berth_error_t **err)
{
    plan_reset(plan);
    if (parent && !parent[0])
        parent = NULL;
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("snapshot key", key, err) < 0 ||
        (parent && meta_validate_name("snapshot parent", parent, err) < 0) ||
        meta_validate_labels(labels, err) < 0 || need_write(tx, err) < 0 ||
        meta_ns_ensure(tx, ns, err) < 0)
        return -1;
    meta_snap_rec_t r;
    int rc = meta_snap_get(tx, ns, key, &r, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return berth_error_set(err, BERTH_E_ALREADY_EXISTS,
                               "snapshot %s already exists in namespace %s", key, ns);
    char pid[24] = "";
    if (parent) {
        meta_snap_rec_t pr;
        rc = meta_snap_get(tx, ns, parent, &pr, err);
        if (rc < 0)
            return -1;
        if (rc == 1)
            return berth_error_set(err, BERTH_E_NOT_FOUND,
                                   "parent snapshot %s not found in namespace %s", parent, ns);
        if (strcmp(pr.kind, "committed") != 0 || pr.state[0])
            return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                   "parent snapshot %s is not committed", parent);
        snprintf(pid, sizeof(pid), "%s", pr.id);
    }
    const msgpack_object *ref = berth_mp_get(labels, META_LABEL_SNAPSHOT_REF);
    if (!ref)
        ref = berth_mp_get(labels, "containerd.io/snapshot.ref");
    if (ref && !view) {
        char refname[256];
        if (!meta_str_copy(ref, refname, sizeof(refname)) ||
            meta_validate_name("snapshot name", refname, err) < 0)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "label %s must be a snapshot name", META_LABEL_SNAPSHOT_REF);
        rc = try_share(tx, ns, refname, parent, pid, labels, plan, err);
        if (rc < 0)
            return -1;
        if (rc == 1)
            return 0;
    }
    if (alloc_id(tx, plan->id, err) < 0)
        return -1;
    const char *kind = view ? "view" : "active";
    if (snap_put(tx, ns, key, parent, kind, labels, NULL, tx->now, plan->id, "preparing", NULL,
                 NULL, err) < 0 ||
        backend_put(tx, plan->id, pid, kind, "", tx->now, err) < 0 ||
        idx_put(tx, DBI_SNAP_REFS, plan->id, ns, key, err) < 0 ||
        (parent && idx_put(tx, DBI_SNAP_CHILDREN, ns, parent, key, err) < 0) ||
        meta_lease_join(tx, ns, "snapshots/overlayfs", key, err) < 0)
        return -1;
    plan->readonly = view;
    if (parent_chain(tx, ns, parent, plan, err) < 0)
        return -1;
    return 0;
}

int meta_snap_prepare_end(meta_tx_t *tx, const char *ns, const char *key, bool ok,
                          berth_error_t **err)
{
    if (need_write(tx, err) < 0)
        return -1;
    meta_snap_rec_t r;
    int rc = meta_snap_get(tx, ns, key, &r, err);
    if (rc < 0)
        return -1;
    if (rc == 1 || strcmp(r.state, "preparing") != 0)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "snapshot %s in namespace %s is not being prepared", key, ns);
    if (ok) {
        if (snap_put(tx, ns, key, r.parent, r.kind, r.labels, NULL, r.created_at, r.id, "", NULL,
                     NULL, err) < 0)
            return -1;
        snap_event(tx, "/snapshots/prepare", ns, "key", key, "parent", r.parent);
        return 0;
    }
    /* The tombstone tells the gc (and our own cleanup) to remove whatever the
     * backend may have created for this id. */
    return meta_snap_drop(tx, ns, key, &r, NULL, err);
}

int meta_snap_resolve(meta_tx_t *tx, const char *ns, const char *key, meta_snap_plan_t *plan,
                      berth_error_t **err)
{
    plan_reset(plan);
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("snapshot key", key, err) < 0)
        return -1;
    meta_snap_rec_t r;
    int rc = meta_snap_get(tx, ns, key, &r, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "snapshot %s not found in namespace %s", key,
                               ns);
    if (strcmp(r.state, "preparing") == 0)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "snapshot %s is still being prepared", key);
    snprintf(plan->id, sizeof(plan->id), "%s", r.id);
    snprintf(plan->kind, sizeof(plan->kind), "%s", r.kind);
    plan->readonly = strcmp(r.kind, "active") != 0;
    return parent_chain(tx, ns, r.parent, plan, err);
}

/* ---- commit ---------------------------------------------------------------- */

int meta_snap_commit_begin(meta_tx_t *tx, const char *ns, const char *name, const char *key,
                           meta_snap_plan_t *plan, berth_error_t **err)
{
    plan_reset(plan);
    if (meta_validate_namespace(ns, err) < 0 ||
        meta_validate_name("snapshot name", name, err) < 0 ||
        meta_validate_name("snapshot key", key, err) < 0 || need_write(tx, err) < 0)
        return -1;
    meta_snap_rec_t r;
    int rc = meta_snap_get(tx, ns, key, &r, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "snapshot %s not found in namespace %s", key,
                               ns);
    if (strcmp(r.kind, "active") != 0)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "snapshot %s is %s: only active snapshots can be committed", key,
                               strcmp(r.kind, "view") == 0 ? "a view" : "already committed");
    if (r.state[0])
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "snapshot %s is being %s", key,
                               strcmp(r.state, "preparing") == 0 ? "prepared" : "committed");
    meta_snap_rec_t nr;
    rc = meta_snap_get(tx, ns, name, &nr, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return berth_error_set(err, BERTH_E_ALREADY_EXISTS,
                               "snapshot %s already exists in namespace %s", name, ns);
    if (snap_put(tx, ns, key, r.parent, r.kind, r.labels, NULL, r.created_at, r.id, "committing",
                 name, NULL, err) < 0)
        return -1;
    snprintf(plan->id, sizeof(plan->id), "%s", r.id);
    snprintf(plan->kind, sizeof(plan->kind), "%s", r.kind);
    return 0;
}

int meta_snap_commit_end(meta_tx_t *tx, const char *ns, const char *name, const char *key,
                         const msgpack_object *labels, bool ok, meta_snap_plan_t *plan,
                         berth_error_t **err)
{
    plan_reset(plan);
    if (need_write(tx, err) < 0 || meta_validate_labels(labels, err) < 0)
        return -1;
    meta_snap_rec_t r;
    int rc = meta_snap_get(tx, ns, key, &r, err);
    if (rc < 0)
        return -1;
    if (rc == 1 || strcmp(r.state, "committing") != 0 || strcmp(r.target, name) != 0)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "snapshot %s in namespace %s is not being committed as %s", key, ns,
                               name);
    if (!ok)
        return snap_put(tx, ns, key, r.parent, r.kind, r.labels, NULL, r.created_at, r.id, "", NULL,
                        NULL, err);
    char pid[24] = "", bkind[16], bname[256];
    rc = backend_get(tx, r.id, pid, bkind, bname, err);
    if (rc < 0)
        return -1;
    char use[24];
    snprintf(use, sizeof(use), "%s", r.id);
    bool shared_hit = false;
    if (is_digest_name(name)) {
        _cleanup_key_ meta_key_t sk;
        if (meta_key(&sk, err, 2, pid, name) < 0)
            return -1;
        MDB_val v;
        rc = meta_get(tx, DBI_SNAP_SHARED, &sk, &v, err);
        if (rc < 0)
            return -1;
        if (rc == 0 && v.mv_size > 0 && v.mv_size < sizeof(use)) {
            char other[24];
            memcpy(other, v.mv_data, v.mv_size);
            other[v.mv_size] = 0;
            bool tomb;
            if (meta_tomb_has(tx, "snapshot", other, &tomb, err) < 0)
                return -1;
            if (!tomb && strcmp(other, r.id) != 0) {
                /* Another namespace committed the same chain first: share its
                 * snapshot and let ours go. */
                snprintf(use, sizeof(use), "%s", other);
                shared_hit = true;
            }
        }
        if (!shared_hit && meta_put(tx, DBI_SNAP_SHARED, &sk, r.id, strlen(r.id), 0, err) < 0)
            return -1;
    }
    /* Replace the active record by the committed one. */
    _cleanup_key_ meta_key_t k;
    if (meta_key(&k, err, 2, ns, key) < 0 || meta_del(tx, DBI_SNAPS, &k, err) < 0 ||
        idx_del(tx, DBI_SNAP_REFS, r.id, ns, key, err) < 0 ||
        (r.parent[0] && idx_del(tx, DBI_SNAP_CHILDREN, ns, r.parent, key, err) < 0))
        return -1;
    if (snap_put(tx, ns, name, r.parent, "committed", labels, NULL, tx->now, use, "", NULL, NULL,
                 err) < 0 ||
        idx_put(tx, DBI_SNAP_REFS, use, ns, name, err) < 0 ||
        (r.parent[0] && idx_put(tx, DBI_SNAP_CHILDREN, ns, r.parent, name, err) < 0) ||
        meta_lease_join(tx, ns, "snapshots/overlayfs", name, err) < 0)
        return -1;
    if (shared_hit) {
        if (backend_release(tx, r.id, &plan->tomb, err) < 0)
            return -1;
    } else if (backend_put(tx, r.id, pid, "committed", is_digest_name(name) ? name : "", tx->now,
                           err) < 0) {
        return -1;
    }
    snprintf(plan->id, sizeof(plan->id), "%s", use);
    snap_event(tx, "/snapshots/commit", ns, "key", key, "name", name);
    return 0;
}

/* ---- remove, stat, update, list ----------------------------------------------- */

int meta_snap_remove(meta_tx_t *tx, const char *ns, const char *key, meta_snap_plan_t *plan,
                     berth_error_t **err)
{
    plan_reset(plan);
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("snapshot key", key, err) < 0 ||
        need_write(tx, err) < 0)
        return -1;
    meta_snap_rec_t r;
    int rc = meta_snap_get(tx, ns, key, &r, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "snapshot %s not found in namespace %s", key,
                               ns);
    if (r.state[0])
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "snapshot %s is being %s; retry when that finished", key,
                               strcmp(r.state, "preparing") == 0 ? "prepared" : "committed");
    _cleanup_key_ meta_key_t pre;
    bool has;
    if (meta_key(&pre, err, 3, ns, key, "") < 0 ||
        meta_has_prefix(tx, DBI_SNAP_CHILDREN, pre.p, pre.len, &has, err) < 0)
        return -1;
    if (has)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "cannot remove snapshot %s: other snapshots use it as their parent",
                               key);
    if (meta_snap_drop(tx, ns, key, &r, &plan->tomb, err) < 0)
        return -1;
    snprintf(plan->id, sizeof(plan->id), "%s", r.id);
    snap_event(tx, "/snapshots/remove", ns, "key", key, NULL, NULL);
    if (tx->out)
        msgpack_pack_map(&tx->out->pk, 0);
    return 0;
}

int meta_snap_stat(meta_tx_t *tx, const char *ns, const char *key, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("snapshot key", key, err) < 0)
        return -1;
    meta_snap_rec_t r;
    int rc = meta_snap_get(tx, ns, key, &r, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "snapshot %s not found in namespace %s", key,
                               ns);
    if (tx->out) {
        msgpack_pack_map(&tx->out->pk, 1);
        berth_mp_pack_str(&tx->out->pk, "info");
        meta_out_raw(tx, &r.raw);
    }
    return 0;
}

int meta_snap_update(meta_tx_t *tx, const char *ns, const char *key, const msgpack_object *labels,
                     const msgpack_object *fields, berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0 || meta_validate_name("snapshot key", key, err) < 0 ||
        meta_fields_validate(fields, err) < 0 || need_write(tx, err) < 0)
        return -1;
    if (fields && fields->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < fields->via.array.size; i++) {
            const msgpack_object *f = &fields->via.array.ptr[i];
            if (!berth_mp_str_eq(f, "labels") &&
                !(f->via.str.size > 7 && memcmp(f->via.str.ptr, "labels.", 7) == 0))
                return berth_error_set(
                    err, BERTH_E_INVALID_ARGUMENT, "cannot update field %.*s of a snapshot",
                    (int)(f->via.str.size > 100 ? 100 : f->via.str.size), f->via.str.ptr);
        }
    meta_snap_rec_t r;
    int rc = meta_snap_get(tx, ns, key, &r, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return berth_error_set(err, BERTH_E_NOT_FOUND, "snapshot %s not found in namespace %s", key,
                               ns);
    berth_mpbuf_t lb, copy;
    berth_mpbuf_init(&lb);
    berth_mpbuf_init(&copy);
    rc = meta_pack_labels_update(&lb.pk, r.labels, labels, fields, "labels", NULL, err);
    if (rc == 0)
        rc = snap_put(tx, ns, key, r.parent, r.kind, NULL, &lb, r.created_at, r.id, r.state,
                      r.target, &copy, err);
    if (rc == 0 && tx->out) {
        msgpack_pack_map(&tx->out->pk, 1);
        berth_mp_pack_str(&tx->out->pk, "info");
        msgpack_sbuffer_write(&tx->out->buf, copy.buf.data, copy.buf.size);
    }
    berth_mpbuf_destroy(&lb);
    berth_mpbuf_destroy(&copy);
    return rc;
}

#include "filter.h"

int meta_snap_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                   berth_error_t **err)
{
    if (meta_validate_namespace(ns, err) < 0)
        return -1;
    meta_filter_t *f = NULL;
    if (meta_filter_parse_obj(filters, &f, err) < 0)
        return -1;
    _cleanup_key_ meta_key_t pre;
    if (meta_key(&pre, err, 2, ns, "") < 0) {
        meta_filter_free(f);
        return -1;
    }
    MDB_cursor *c;
    int rc = mdb_cursor_open(tx->txn, tx->db->dbi[DBI_SNAPS], &c);
    if (rc) {
        meta_filter_free(f);
        return meta_mdb_fail(tx, rc, "snapshots", err);
    }
    berth_mpbuf_t items;
    berth_mpbuf_init(&items);
    uint32_t n = 0;
    MDB_val k = {.mv_size = pre.len, .mv_data = pre.p}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    int res = 0;
    while (rc == 0 && k.mv_size >= pre.len && memcmp(k.mv_data, pre.p, pre.len) == 0) {
        msgpack_object o;
        if (meta_decode(tx, &v, &o, err) < 0) {
            res = -1;
            break;
        }
        /* Records in the middle of a prepare are not visible yet. */
        if (!berth_mp_str_eq(berth_mp_get(&o, "state"), "preparing") && meta_filter_match(f, &o)) {
            msgpack_sbuffer_write(&items.buf, v.mv_data, v.mv_size);
            n++;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    meta_filter_free(f);
    if (res == 0 && rc && rc != MDB_NOTFOUND)
        res = meta_mdb_fail(tx, rc, "snapshots", err);
    if (res == 0 && tx->out) {
        msgpack_pack_map(&tx->out->pk, 1);
        berth_mp_pack_str(&tx->out->pk, "infos");
        msgpack_pack_array(&tx->out->pk, n);
        msgpack_sbuffer_write(&tx->out->buf, items.buf.data, items.buf.size);
    }
    berth_mpbuf_destroy(&items);
    return res;
}

/* ---- tombstones and reconcile -------------------------------------------------- */

int meta_snap_tomb_done(meta_tx_t *tx, const char *id, berth_error_t **err)
{
    if (need_write(tx, err) < 0)
        return -1;
    /* A backend id is recreated only by allocation, never reused, so the
     * tombstone can go as soon as the backend confirmed the removal. */
    return meta_tomb_del(tx, "snapshot", id, err);
}

int meta_tombstones(meta_tx_t *tx, const char *kind, char ***ids, size_t *n, berth_error_t **err)
{
    *ids = NULL;
    *n = 0;
    _cleanup_key_ meta_key_t pre;
    if (meta_key(&pre, err, 2, kind, "") < 0)
        return -1;
    MDB_cursor *c;
    int rc = mdb_cursor_open(tx->txn, tx->db->dbi[DBI_TOMBS], &c);
    if (rc)
        return meta_mdb_fail(tx, rc, "tombstones", err);
    MDB_val k = {.mv_size = pre.len, .mv_data = pre.p}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    size_t cap = 0;
    while (rc == 0 && k.mv_size >= pre.len && memcmp(k.mv_data, pre.p, pre.len) == 0) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(*ids, cap * sizeof(char *));
            if (!nv)
                break;
            *ids = nv;
        }
        (*ids)[*n] = strndup((const char *)k.mv_data + pre.len, k.mv_size - pre.len);
        if (!(*ids)[*n])
            break;
        (*n)++;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return 0;
}

int meta_snap_tombstones(meta_tx_t *tx, char ***ids, size_t *n, berth_error_t **err)
{
    return meta_tombstones(tx, "snapshot", ids, n, err);
}

int meta_snap_reconcile(meta_tx_t *tx, size_t *settled, berth_error_t **err)
{
    *settled = 0;
    if (need_write(tx, err) < 0)
        return -1;
    /* Collect (ns, key, state) first; change records after the scan. */
    char **keys = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(tx->txn, tx->db->dbi[DBI_SNAPS], &c);
    if (rc)
        return meta_mdb_fail(tx, rc, "snapshots", err);
    MDB_val k, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        msgpack_object o;
        if (meta_decode(tx, &v, &o, NULL) == 0) {
            const msgpack_object *st = berth_mp_get(&o, "state");
            if (st && st->type == MSGPACK_OBJECT_STR && st->via.str.size > 0) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 16;
                    char **nk = realloc(keys, cap * sizeof(char *));
                    if (!nk)
                        break;
                    keys = nk;
                }
                /* "ns\0key" kept with its length in the first bytes. */
                char *copy = malloc(k.mv_size + 1 + sizeof(size_t));
                if (!copy)
                    break;
                memcpy(copy, &k.mv_size, sizeof(size_t));
                memcpy(copy + sizeof(size_t), k.mv_data, k.mv_size);
                copy[sizeof(size_t) + k.mv_size] = 0;
                keys[n++] = copy;
            }
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    int res = 0;
    for (size_t i = 0; i < n && res == 0; i++) {
        const char *ns = keys[i] + sizeof(size_t);
        const char *key = ns + strlen(ns) + 1;
        meta_snap_rec_t r;
        rc = meta_snap_get(tx, ns, key, &r, err);
        if (rc < 0) {
            res = -1;
            break;
        }
        if (rc == 1)
            continue;
        if (strcmp(r.state, "preparing") == 0) {
            /* The client never got an answer: roll back, the tombstone has
             * the backend remove whatever it may have created. */
            res = meta_snap_drop(tx, ns, key, &r, NULL, err);
        } else {
            /* The backend may or may not have committed; it stays active,
             * the client retries (overlayfs.commit is idempotent). */
            res = snap_put(tx, ns, key, r.parent, r.kind, r.labels, NULL, r.created_at, r.id, "",
                           NULL, NULL, err);
        }
        if (res == 0)
            (*settled)++;
    }
    meta_strv_free(keys, n);
    return res;
}
