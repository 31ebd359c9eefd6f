/* SPDX-License-Identifier: Apache-2.0 */
/* Garbage collection over the metadata records: build the reference graph
 * of every namespace in memory (one pass per table), mark from the roots,
 * sweep unmarked content and snapshot records, tombstone blobs and backend
 * snapshots that no namespace references any more. Runs in one write
 * transaction so nothing can add a reference halfway; kept short by never
 * decoding a record twice. Roots, edges and label names: docs/gc.md. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gc.h"
#include "internal.h"
#include "snap.h"

#define SEP '\x1f' /* never valid in namespaces, digests or keys */

typedef struct {
    char *key;
    uint32_t *edges;
    uint32_t n_edges, cap;
    uint8_t state; /* 0 unmarked, 1 marked flat, 2 marked and followed */
    bool exists;   /* a record backs this node */
} node_t;

typedef struct {
    node_t *v;
    size_t n, cap;
    uint32_t *slots; /* idx+1, 0 = empty */
    size_t nslots;
    uint32_t *queue;
    size_t qn, qcap;
    bool oom;
    int64_t next_expire; /* earliest future expiry seen (0 none) */
} graph_t;

static void note_expire(graph_t *g, int64_t t)
{
    if (t > 0 && (g->next_expire == 0 || t < g->next_expire))
        g->next_expire = t;
}

static uint32_t hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static void graph_free(graph_t *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->v[i].key);
        free(g->v[i].edges);
    }
    free(g->v);
    free(g->slots);
    free(g->queue);
}

static int rehash(graph_t *g)
{
    size_t ns = g->nslots ? g->nslots * 2 : 1024;
    uint32_t *s = calloc(ns, sizeof(uint32_t));
    if (!s)
        return -1;
    for (size_t i = 0; i < g->n; i++) {
        size_t m = hash(g->v[i].key, strlen(g->v[i].key)) & (ns - 1);
        while (s[m])
            m = (m + 1) & (ns - 1);
        s[m] = (uint32_t)i + 1;
    }
    free(g->slots);
    g->slots = s;
    g->nslots = ns;
    return 0;
}

/* Interns "kind SEP ns SEP id" and returns its index (or -1 on OOM). */
static int64_t intern(graph_t *g, char kind, const char *ns, size_t nsl, const char *id, size_t idl)
{
    char stack[600];
    size_t len = 1 + 1 + nsl + 1 + idl;
    char *key = len < sizeof(stack) ? stack : malloc(len + 1);
    if (!key) {
        g->oom = true;
        return -1;
    }
    key[0] = kind;
    key[1] = SEP;
    memcpy(key + 2, ns, nsl);
    key[2 + nsl] = SEP;
    memcpy(key + 3 + nsl, id, idl);
    key[len] = 0;
    if ((g->n + 1) * 2 > g->nslots && rehash(g) < 0) {
        g->oom = true;
        if (key != stack)
            free(key);
        return -1;
    }
    size_t m = hash(key, len) & (g->nslots - 1);
    while (g->slots[m]) {
        node_t *nd = &g->v[g->slots[m] - 1];
        if (strcmp(nd->key, key) == 0) {
            if (key != stack)
                free(key);
            return g->slots[m] - 1;
        }
        m = (m + 1) & (g->nslots - 1);
    }
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 1024;
        node_t *nv = realloc(g->v, nc * sizeof(node_t));
        if (!nv) {
            g->oom = true;
            if (key != stack)
                free(key);
            return -1;
        }
        g->v = nv;
        g->cap = nc;
    }
    node_t *nd = &g->v[g->n];
    memset(nd, 0, sizeof(*nd));
    nd->key = key == stack ? strdup(key) : key;
    if (!nd->key) {
        g->oom = true;
        return -1;
    }
    g->slots[m] = (uint32_t)g->n + 1;
    return (int64_t)g->n++;
}

static void add_edge(graph_t *g, int64_t from, int64_t to)
{
    if (from < 0 || to < 0)
        return;
    node_t *nd = &g->v[from];
    if (nd->n_edges == nd->cap) {
        uint32_t nc = nd->cap ? nd->cap * 2 : 4;
        uint32_t *ne = realloc(nd->edges, nc * sizeof(uint32_t));
        if (!ne) {
            g->oom = true;
            return;
        }
        nd->edges = ne;
        nd->cap = nc;
    }
    nd->edges[nd->n_edges++] = (uint32_t)to;
}

static void enqueue(graph_t *g, uint32_t i)
{
    if (g->qn == g->qcap) {
        size_t nc = g->qcap ? g->qcap * 2 : 1024;
        uint32_t *nq = realloc(g->queue, nc * sizeof(uint32_t));
        if (!nq) {
            g->oom = true;
            return;
        }
        g->queue = nq;
        g->qcap = nc;
    }
    g->queue[g->qn++] = i;
}

/* Marks a node; flat marks do not follow its edges. */
static void mark(graph_t *g, int64_t i, bool flat)
{
    if (i < 0)
        return;
    node_t *nd = &g->v[i];
    if (flat) {
        if (nd->state == 0)
            nd->state = 1;
        return;
    }
    if (nd->state == 2)
        return;
    nd->state = 2;
    enqueue(g, (uint32_t)i);
}

static void propagate(graph_t *g)
{
    while (g->qn) {
        uint32_t i = g->queue[--g->qn];
        node_t *nd = &g->v[i];
        for (uint32_t e = 0; e < nd->n_edges; e++)
            mark(g, nd->edges[e], false);
    }
}

/* "berth.io/<base>" or "containerd.io/<base>", exactly or followed by '.' or '/'. */
static bool label_is(const msgpack_object *k, const char *base)
{
    if (k->type != MSGPACK_OBJECT_STR)
        return false;
    static const char *const prefixes[] = {"berth.io/", "containerd.io/"};
    size_t bl = strlen(base);
    for (int p = 0; p < 2; p++) {
        size_t pl = strlen(prefixes[p]);
        if (k->via.str.size < pl + bl || memcmp(k->via.str.ptr, prefixes[p], pl) != 0 ||
            memcmp(k->via.str.ptr + pl, base, bl) != 0)
            continue;
        if (k->via.str.size == pl + bl)
            return true;
        char c = k->via.str.ptr[pl + bl];
        return c == '.' || c == '/';
    }
    return false;
}

/* Adds the label references of a record as edges from node `from` (or, when
 * from < 0, marks them as roots). Returns whether gc.root is set. */
static bool label_refs(graph_t *g, int64_t from, const char *ns, size_t nsl,
                       const msgpack_object *labels)
{
    bool root = false;
    if (!labels || labels->type != MSGPACK_OBJECT_MAP)
        return false;
    for (uint32_t i = 0; i < labels->via.map.size; i++) {
        const msgpack_object *k = &labels->via.map.ptr[i].key, *v = &labels->via.map.ptr[i].val;
        if (v->type != MSGPACK_OBJECT_STR || k->type != MSGPACK_OBJECT_STR)
            continue;
        /* Cheap reject: every gc label contains "/gc.". */
        if (k->via.str.size < 8 || !memmem(k->via.str.ptr, k->via.str.size, "/gc.", 4))
            continue;
        int64_t to = -1;
        if (label_is(k, "gc.ref.content"))
            to = intern(g, 'c', ns, nsl, v->via.str.ptr, v->via.str.size);
        else if (label_is(k, "gc.ref.snapshot.overlayfs"))
            to = intern(g, 's', ns, nsl, v->via.str.ptr, v->via.str.size);
        else if (label_is(k, "gc.root"))
            root = true;
        if (to >= 0) {
            if (from >= 0)
                add_edge(g, from, to);
            else
                mark(g, to, false);
        }
    }
    return root;
}

/* o is the decoded record, or NULL when the scan was asked not to decode
 * (the callback may then decode v itself, lazily). */
typedef int (*scan_cb)(meta_tx_t *tx, graph_t *g, const MDB_val *k, const MDB_val *v,
                       const msgpack_object *o, void *data);

static int scan(meta_tx_t *tx, int dbi, graph_t *g, scan_cb cb, void *data, bool decode,
                berth_error_t **err)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(tx->txn, tx->db->dbi[dbi], &c);
    if (rc)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    MDB_val k, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        msgpack_object o = {.type = MSGPACK_OBJECT_NIL};
        /* A record that does not decode is kept (and reported), never
         * collected: gc must not turn corruption into data loss. */
        if (!decode)
            cb(tx, g, &k, &v, NULL, data);
        else if (meta_decode(tx, &v, &o, NULL) == 0)
            cb(tx, g, &k, &v, &o, data);
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND)
        return meta_mdb_fail(tx, rc, meta_dbi_names[dbi], err);
    return g->oom ? berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory during gc") : 0;
}

/* Splits "ns\0rest" keys. */
static bool split2(const MDB_val *k, const char **ns, size_t *nsl, const char **id, size_t *idl)
{
    const char *p = k->mv_data;
    const char *z = memchr(p, 0, k->mv_size);
    if (!z)
        return false;
    *ns = p;
    *nsl = (size_t)(z - p);
    *id = z + 1;
    *idl = k->mv_size - *nsl - 1;
    return true;
}

static int content_cb(meta_tx_t *tx, graph_t *g, const MDB_val *k, const MDB_val *v,
                      const msgpack_object *unused, void *data)
{
    const char *ns, *id;
    size_t nsl, idl;
    if (!split2(k, &ns, &nsl, &id, &idl))
        return 0;
    int64_t n = intern(g, 'c', ns, nsl, id, idl);
    if (n < 0)
        return 0;
    g->v[n].exists = true;
    /* Most blobs (layers) carry no gc label: every gc label holds "/gc.",
     * so a record without those bytes needs no decoding at all. */
    if (!memmem(v->mv_data, v->mv_size, "/gc.", 4))
        return 0;
    msgpack_object o;
    if (meta_decode(tx, v, &o, NULL) < 0 || label_refs(g, n, ns, nsl, berth_mp_get(&o, "labels")))
        mark(g, n, false);
    return 0;
}

static int snap_cb(meta_tx_t *tx, graph_t *g, const MDB_val *k, const MDB_val *v,
                   const msgpack_object *o, void *data)
{
    const char *ns, *id;
    size_t nsl, idl;
    if (!split2(k, &ns, &nsl, &id, &idl))
        return 0;
    int64_t n = intern(g, 's', ns, nsl, id, idl);
    if (n < 0)
        return 0;
    g->v[n].exists = true;
    if (o->type != MSGPACK_OBJECT_MAP) {
        mark(g, n, false);
        return 0;
    }
    const msgpack_object *p = berth_mp_get(o, "parent");
    if (p && p->type == MSGPACK_OBJECT_STR && p->via.str.size)
        add_edge(g, n, intern(g, 's', ns, nsl, p->via.str.ptr, p->via.str.size));
    const msgpack_object *st = berth_mp_get(o, "state");
    bool busy = st && st->type == MSGPACK_OBJECT_STR && st->via.str.size;
    if (label_refs(g, n, ns, nsl, berth_mp_get(o, "labels")) || busy)
        mark(g, n, false);
    return 0;
}

static int image_cb(meta_tx_t *tx, graph_t *g, const MDB_val *k, const MDB_val *v,
                    const msgpack_object *o, void *data)
{
    const char *ns, *id;
    size_t nsl, idl;
    if (!split2(k, &ns, &nsl, &id, &idl) || o->type != MSGPACK_OBJECT_MAP)
        return 0;
    const msgpack_object *labels = berth_mp_get(o, "labels");
    const msgpack_object *exp = meta_label_gc(labels, META_LABEL_GC_EXPIRE);
    int64_t t;
    if (exp && exp->type == MSGPACK_OBJECT_STR &&
        meta_parse_rfc3339(exp->via.str.ptr, exp->via.str.size, &t) == 0) {
        if (t <= tx->now)
            return 0;
        note_expire(g, t);
    }
    const msgpack_object *d = berth_mp_get(berth_mp_get(o, "target"), "digest");
    if (d && d->type == MSGPACK_OBJECT_STR)
        mark(g, intern(g, 'c', ns, nsl, d->via.str.ptr, d->via.str.size), false);
    label_refs(g, -1, ns, nsl, labels);
    return 0;
}

static int container_cb(meta_tx_t *tx, graph_t *g, const MDB_val *k, const MDB_val *v,
                        const msgpack_object *o, void *data)
{
    const char *ns, *id;
    size_t nsl, idl;
    if (!split2(k, &ns, &nsl, &id, &idl) || o->type != MSGPACK_OBJECT_MAP)
        return 0;
    const msgpack_object *sk = berth_mp_get(o, "snapshot_key");
    if (sk && sk->type == MSGPACK_OBJECT_STR && sk->via.str.size)
        mark(g, intern(g, 's', ns, nsl, sk->via.str.ptr, sk->via.str.size), false);
    label_refs(g, -1, ns, nsl, berth_mp_get(o, "labels"));
    return 0;
}

/* Live leases: a set of "ns\0id" with a flat flag, found by binary search. */
typedef struct {
    char **keys; /* "ns SEP id", sorted as scanned (LMDB order = sorted) */
    bool *flat;
    size_t n, cap;
} leases_t;

static int lease_cb(meta_tx_t *tx, graph_t *g, const MDB_val *k, const MDB_val *v,
                    const msgpack_object *o, void *data)
{
    leases_t *l = data;
    if (o->type != MSGPACK_OBJECT_MAP || meta_lease_expired(o, tx->now))
        return 0;
    int64_t exp = meta_obj_i64(berth_mp_get(o, "expire"));
    if (exp <= 0) {
        const msgpack_object *lb = meta_label_gc(berth_mp_get(o, "labels"), META_LABEL_GC_EXPIRE);
        if (lb && lb->type == MSGPACK_OBJECT_STR)
            meta_parse_rfc3339(lb->via.str.ptr, lb->via.str.size, &exp);
    }
    note_expire(g, exp);
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        char **nk = realloc(l->keys, nc * sizeof(char *));
        bool *nf = nk ? realloc(l->flat, nc * sizeof(bool)) : NULL;
        if (nk)
            l->keys = nk;
        if (!nk || !nf) {
            g->oom = true;
            return 0;
        }
        l->flat = nf;
        l->cap = nc;
    }
    char *key = malloc(k->mv_size + 1);
    if (!key) {
        g->oom = true;
        return 0;
    }
    memcpy(key, k->mv_data, k->mv_size);
    key[k->mv_size] = 0;
    for (size_t i = 0; i < k->mv_size; i++)
        if (!key[i])
            key[i] = SEP;
    l->flat[l->n] = meta_label_gc(berth_mp_get(o, "labels"), META_LABEL_GC_FLAT) != NULL;
    l->keys[l->n++] = key;
    return 0;
}

static int lease_find(const leases_t *l, const char *key)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        /* SEP (0x1f) sorts below every character a namespace or id may
         * hold, like LMDB's NUL separator, so the scan order is sorted. */
        int c = strcmp(l->keys[mid], key);
        if (c == 0)
            return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static int lease_res_cb(meta_tx_t *tx, graph_t *g, const MDB_val *k, const MDB_val *v,
                        const msgpack_object *o, void *data)
{
    leases_t *l = data;
    size_t nsl, idl, tl;
    const char *ns = meta_key_part(k, 0, &nsl), *id = meta_key_part(k, 1, &idl);
    const char *type = meta_key_part(k, 2, &tl);
    if (!ns || !id || !type)
        return 0;
    const char *rid = type + tl + 1;
    if (rid > (const char *)k->mv_data + k->mv_size)
        return 0;
    size_t ridl = (size_t)((const char *)k->mv_data + k->mv_size - rid);
    char key[256];
    if (nsl + idl + 2 > sizeof(key))
        return 0;
    memcpy(key, ns, nsl);
    key[nsl] = SEP;
    memcpy(key + nsl + 1, id, idl);
    key[nsl + 1 + idl] = 0;
    int at = lease_find(l, key);
    if (at < 0)
        return 0;
    bool flat = l->flat[at];
    if (tl == 7 && memcmp(type, "content", 7) == 0)
        mark(g, intern(g, 'c', ns, nsl, rid, ridl), flat);
    else if (tl == 19 && memcmp(type, "snapshots/overlayfs", 19) == 0)
        mark(g, intern(g, 's', ns, nsl, rid, ridl), flat);
    return 0;
}

/* Digest set (blobs still referenced somewhere). */
typedef struct {
    char **v;
    size_t n, cap;
    uint32_t *slots;
    size_t nslots;
} strset_t;

static bool set_has(const strset_t *s, const char *k, size_t kl)
{
    if (!s->nslots)
        return false;
    size_t m = hash(k, kl) & (s->nslots - 1);
    while (s->slots[m]) {
        const char *e = s->v[s->slots[m] - 1];
        if (strlen(e) == kl && memcmp(e, k, kl) == 0)
            return true;
        m = (m + 1) & (s->nslots - 1);
    }
    return false;
}

static int set_add(strset_t *s, const char *k, size_t kl)
{
    if (set_has(s, k, kl))
        return 0;
    if ((s->n + 1) * 2 > s->nslots) {
        size_t ns = s->nslots ? s->nslots * 2 : 1024;
        uint32_t *sl = calloc(ns, sizeof(uint32_t));
        if (!sl)
            return -1;
        for (size_t i = 0; i < s->n; i++) {
            size_t m = hash(s->v[i], strlen(s->v[i])) & (ns - 1);
            while (sl[m])
                m = (m + 1) & (ns - 1);
            sl[m] = (uint32_t)i + 1;
        }
        free(s->slots);
        s->slots = sl;
        s->nslots = ns;
    }
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        char **nv = realloc(s->v, nc * sizeof(char *));
        if (!nv)
            return -1;
        s->v = nv;
        s->cap = nc;
    }
    char *c = strndup(k, kl);
    if (!c)
        return -1;
    size_t m = hash(k, kl) & (s->nslots - 1);
    while (s->slots[m])
        m = (m + 1) & (s->nslots - 1);
    s->v[s->n] = c;
    s->slots[m] = (uint32_t)s->n + 1;
    s->n++;
    return 0;
}

static void set_free(strset_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    free(s->slots);
}

static int ingest_cb(meta_tx_t *tx, graph_t *g, const MDB_val *k, const MDB_val *v,
                     const msgpack_object *o, void *data)
{
    strset_t *keep = data;
    const char *ns, *id;
    size_t nsl, idl;
    if (!split2(k, &ns, &nsl, &id, &idl) || o->type != MSGPACK_OBJECT_MAP)
        return 0;
    const msgpack_object *e = berth_mp_get(o, "expected");
    if (e && e->type == MSGPACK_OBJECT_STR && e->via.str.size) {
        mark(g, intern(g, 'c', ns, nsl, e->via.str.ptr, e->via.str.size), false);
        if (set_add(keep, e->via.str.ptr, e->via.str.size) < 0)
            g->oom = true;
    }
    return 0;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void pack_strv(msgpack_packer *pk, char **v, size_t n)
{
    msgpack_pack_array(pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        berth_mp_pack_str(pk, v[i]);
}

int meta_gc_collect(meta_tx_t *tx, int64_t replay_before, meta_gc_stats_t *st, berth_error_t **err)
{
    meta_gc_stats_t local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof(*st));
    if (!tx->write)
        return berth_error_set(err, BERTH_E_INTERNAL, "gc needs a write transaction");
    graph_t g = {0};
    leases_t leases = {0};
    strset_t keep = {0};
    int rc = 0;
    uint64_t t0 = now_us();

    /* Graph and roots. */
    if (scan(tx, DBI_CONTENT, &g, content_cb, NULL, false, err) < 0 ||
        scan(tx, DBI_SNAPS, &g, snap_cb, NULL, true, err) < 0 ||
        scan(tx, DBI_IMAGES, &g, image_cb, NULL, true, err) < 0 ||
        scan(tx, DBI_CONTAINERS, &g, container_cb, NULL, true, err) < 0 ||
        scan(tx, DBI_LEASES, &g, lease_cb, &leases, true, err) < 0 ||
        scan(tx, DBI_LEASE_RES, &g, lease_res_cb, &leases, false, err) < 0 ||
        scan(tx, DBI_INGESTS, &g, ingest_cb, &keep, true, err) < 0) {
        rc = -1;
        goto out;
    }
    propagate(&g);
    if (g.oom) {
        rc = berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory during gc");
        goto out;
    }
    st->nodes = g.n;
    uint64_t t1 = now_us();
    st->mark_us = t1 - t0;

    /* Sweep records. Node keys hold what we need to find them again. */
    for (size_t i = 0; i < g.n && rc == 0; i++) {
        node_t *nd = &g.v[i];
        if (!nd->exists)
            continue;
        char *ns = nd->key + 2;
        char *sep = strchr(ns, SEP);
        if (!sep)
            continue;
        *sep = 0;
        const char *id = sep + 1;
        if (nd->state) {
            st->marked++;
            if (nd->key[0] == 'c' && set_add(&keep, id, strlen(id)) < 0)
                rc = berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory during gc");
        } else if (nd->key[0] == 'c') {
            _cleanup_key_ meta_key_t k;
            if (meta_key(&k, err, 2, ns, id) < 0 || meta_del(tx, DBI_CONTENT, &k, err) < 0)
                rc = -1;
            else
                st->content_removed++;
        }
        *sep = SEP;
    }
    /* Snapshots: children before parents does not matter (no child check in
     * drop), but every drop must see the others' index updates: one by one. */
    for (size_t i = 0; i < g.n && rc == 0; i++) {
        node_t *nd = &g.v[i];
        if (!nd->exists || nd->state || nd->key[0] != 's')
            continue;
        char *ns = nd->key + 2;
        char *sep = strchr(ns, SEP);
        if (!sep)
            continue;
        *sep = 0;
        const char *key = sep + 1;
        meta_snap_rec_t r;
        int g1 = meta_snap_get(tx, ns, key, &r, err);
        if (g1 < 0) {
            rc = -1;
        } else if (g1 == 0) {
            char *tomb = NULL;
            if (meta_snap_drop(tx, ns, key, &r, &tomb, err) < 0)
                rc = -1;
            st->snapshots_removed++;
            if (tomb)
                st->snapshots_tombstoned++;
            free(tomb);
        }
        *sep = SEP;
    }
    if (rc < 0)
        goto out;

    /* Blobs nobody references any more. Collected first, changed after. */
    {
        MDB_cursor *c;
        int r = mdb_cursor_open(tx->txn, tx->db->dbi[DBI_BLOBS], &c);
        if (r) {
            rc = meta_mdb_fail(tx, r, "blobs", err);
            goto out;
        }
        strset_t gone = {0};
        MDB_val k, v;
        r = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        while (r == 0) {
            if (!set_has(&keep, k.mv_data, k.mv_size) && set_add(&gone, k.mv_data, k.mv_size) < 0) {
                r = ENOMEM;
                break;
            }
            r = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(c);
        if (r != MDB_NOTFOUND) {
            set_free(&gone);
            rc = meta_mdb_fail(tx, r, "blobs", err);
            goto out;
        }
        for (size_t i = 0; i < gone.n && rc == 0; i++) {
            _cleanup_key_ meta_key_t bk;
            if (meta_key(&bk, err, 1, gone.v[i]) < 0 || meta_del(tx, DBI_BLOBS, &bk, err) < 0 ||
                meta_tomb_add(tx, "content", gone.v[i], err) < 0)
                rc = -1;
            else
                st->blobs_tombstoned++;
        }
        set_free(&gone);
        if (rc < 0)
            goto out;
    }
    /* Backend snapshots without any reference (left by an older crash). */
    {
        MDB_cursor *c;
        int r = mdb_cursor_open(tx->txn, tx->db->dbi[DBI_SNAP_BACKEND], &c);
        if (r) {
            rc = meta_mdb_fail(tx, r, "snapshot_backend", err);
            goto out;
        }
        strset_t ids = {0};
        MDB_val k, v;
        r = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        while (r == 0) {
            if (set_add(&ids, k.mv_data, k.mv_size) < 0) {
                r = ENOMEM;
                break;
            }
            r = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(c);
        for (size_t i = 0; i < ids.n && rc == 0 && r == MDB_NOTFOUND; i++) {
            _cleanup_key_ meta_key_t pre;
            bool has;
            if (meta_key(&pre, err, 2, ids.v[i], "") < 0 ||
                meta_has_prefix(tx, DBI_SNAP_REFS, pre.p, pre.len, &has, err) < 0) {
                rc = -1;
                break;
            }
            if (has)
                continue;
            _cleanup_key_ meta_key_t bk;
            if (meta_key(&bk, err, 1, ids.v[i]) < 0 ||
                meta_del(tx, DBI_SNAP_BACKEND, &bk, err) < 0 ||
                meta_tomb_add(tx, "snapshot", ids.v[i], err) < 0)
                rc = -1;
            else
                st->snapshots_tombstoned++;
        }
        set_free(&ids);
        if (rc == 0 && r != MDB_NOTFOUND)
            rc = meta_mdb_fail(tx, r, "snapshot_backend", err);
        if (rc < 0)
            goto out;
    }
    st->replays_pruned = replay_before > 0 ? meta_replay_prune(tx, replay_before) : 0;
    st->sweep_us = now_us() - t1;

    if (tx->out) {
        char **cs = NULL, **ss = NULL;
        size_t nc = 0, nsn = 0;
        if (meta_tombstones(tx, "content", &cs, &nc, err) < 0 ||
            meta_tombstones(tx, "snapshot", &ss, &nsn, err) < 0) {
            meta_strv_free(cs, nc);
            rc = -1;
            goto out;
        }
        msgpack_packer *pk = &tx->out->pk;
        msgpack_pack_map(pk, 4);
        berth_mp_pack_str(pk, "content");
        pack_strv(pk, cs, nc);
        berth_mp_pack_str(pk, "snapshots");
        pack_strv(pk, ss, nsn);
        berth_mp_kv_i64(pk, "started_at", tx->now);
        berth_mp_pack_str(pk, "stats");
        msgpack_pack_map(pk, 12);
        berth_mp_kv_u64(pk, "mark_ns", st->mark_us * 1000);
        /* Time inside the write transaction up to here; the commit's fsync
         * comes on top (handlers log the full hold time). */
        berth_mp_kv_u64(pk, "lock_ns", (now_us() - t0) * 1000);
        berth_mp_kv_i64(pk, "next_expire", g.next_expire);
        berth_mp_kv_u64(pk, "nodes", st->nodes);
        berth_mp_kv_u64(pk, "marked", st->marked);
        berth_mp_kv_u64(pk, "content_removed", st->content_removed);
        berth_mp_kv_u64(pk, "snapshots_removed", st->snapshots_removed);
        berth_mp_kv_u64(pk, "blobs_tombstoned", st->blobs_tombstoned);
        berth_mp_kv_u64(pk, "snapshots_tombstoned", st->snapshots_tombstoned);
        berth_mp_kv_u64(pk, "replays_pruned", st->replays_pruned);
        berth_mp_kv_u64(pk, "mark_us", st->mark_us);
        berth_mp_kv_u64(pk, "sweep_us", st->sweep_us);
        meta_strv_free(cs, nc);
        meta_strv_free(ss, nsn);
    }
out:
    graph_free(&g);
    for (size_t i = 0; i < leases.n; i++)
        free(leases.keys[i]);
    free(leases.keys);
    free(leases.flat);
    set_free(&keep);
    return rc;
}

static int strs_each(const msgpack_object *arr, const char *what, berth_error_t **err)
{
    if (!arr || arr->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (arr->type != MSGPACK_OBJECT_ARRAY)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s must be an array of strings",
                               what);
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *o = &arr->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 || o->via.str.size > 255 ||
            memchr(o->via.str.ptr, 0, o->via.str.size))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s must be an array of strings",
                                   what);
    }
    return 0;
}

int meta_gc_done(meta_tx_t *tx, const msgpack_object *content, const msgpack_object *snapshots,
                 berth_error_t **err)
{
    if (strs_each(content, "content", err) < 0 || strs_each(snapshots, "snapshots", err) < 0)
        return -1;
    const msgpack_object *lists[2] = {content, snapshots};
    const char *kinds[2] = {"content", "snapshot"};
    for (int l = 0; l < 2; l++) {
        if (!lists[l] || lists[l]->type != MSGPACK_OBJECT_ARRAY)
            continue;
        for (uint32_t i = 0; i < lists[l]->via.array.size; i++) {
            char id[256];
            if (!meta_str_copy(&lists[l]->via.array.ptr[i], id, sizeof(id)))
                continue;
            if (meta_tomb_del(tx, kinds[l], id, err) < 0)
                return -1;
        }
    }
    if (tx->out)
        msgpack_pack_map(&tx->out->pk, 0);
    return 0;
}

int meta_gc_orphans(meta_tx_t *tx, const msgpack_object *content, const msgpack_object *snapshots,
                    berth_error_t **err)
{
    if (strs_each(content, "content", err) < 0 || strs_each(snapshots, "snapshots", err) < 0)
        return -1;
    if (!tx->write)
        return berth_error_set(err, BERTH_E_INTERNAL, "gc_orphans needs a write transaction");
    /* Digests expected by running ingests are not orphans. */
    graph_t g = {0};
    strset_t expected = {0};
    if (scan(tx, DBI_INGESTS, &g, ingest_cb, &expected, true, err) < 0) {
        graph_free(&g);
        set_free(&expected);
        return -1;
    }
    graph_free(&g);
    berth_mpbuf_t cs, ss;
    berth_mpbuf_init(&cs);
    berth_mpbuf_init(&ss);
    uint32_t nc = 0, nsn = 0;
    int rc = 0;
    if (content && content->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < content->via.array.size && rc == 0; i++) {
            char d[256];
            if (!meta_str_copy(&content->via.array.ptr[i], d, sizeof(d)))
                continue;
            _cleanup_key_ meta_key_t k;
            MDB_val v;
            if (meta_key(&k, err, 1, d) < 0) {
                rc = -1;
                break;
            }
            int r = meta_get(tx, DBI_BLOBS, &k, &v, err);
            if (r < 0)
                rc = -1;
            else if (r == 1 && !set_has(&expected, d, strlen(d))) {
                if (meta_tomb_add(tx, "content", d, err) < 0) {
                    rc = -1;
                    break;
                }
                berth_mp_pack_str(&cs.pk, d);
                nc++;
            }
        }
    if (snapshots && snapshots->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < snapshots->via.array.size && rc == 0; i++) {
            char id[256];
            if (!meta_str_copy(&snapshots->via.array.ptr[i], id, sizeof(id)))
                continue;
            _cleanup_key_ meta_key_t k;
            MDB_val v;
            if (meta_key(&k, err, 1, id) < 0) {
                rc = -1;
                break;
            }
            int r = meta_get(tx, DBI_SNAP_BACKEND, &k, &v, err);
            if (r < 0)
                rc = -1;
            else if (r == 1) {
                if (meta_tomb_add(tx, "snapshot", id, err) < 0) {
                    rc = -1;
                    break;
                }
                berth_mp_pack_str(&ss.pk, id);
                nsn++;
            }
        }
    if (rc == 0 && tx->out) {
        msgpack_packer *pk = &tx->out->pk;
        msgpack_pack_map(pk, 2);
        berth_mp_pack_str(pk, "content");
        msgpack_pack_array(pk, nc);
        msgpack_sbuffer_write(&tx->out->buf, cs.buf.data, cs.buf.size);
        berth_mp_pack_str(pk, "snapshots");
        msgpack_pack_array(pk, nsn);
        msgpack_sbuffer_write(&tx->out->buf, ss.buf.data, ss.buf.size);
    }
    berth_mpbuf_destroy(&cs);
    berth_mpbuf_destroy(&ss);
    set_free(&expected);
    return rc;
}
