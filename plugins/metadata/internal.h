/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by db.c, records.c, snapshots.c and gc.c: the named
 * databases, key building, raw get/put helpers. Not for handlers. */
#pragma once

#include <pthread.h>

#include "db.h"

enum {
    DBI_META,          /* "schema_version", "next_snapshot_id" */
    DBI_NS,            /* name → {name, labels, created_at, updated_at} */
    DBI_CONTENT,       /* ns\0digest → info */
    DBI_BLOBS,         /* digest → {size, created_at}: every blob ever recorded */
    DBI_IMAGES,        /* ns\0name → image */
    DBI_CONTAINERS,    /* ns\0id → container */
    DBI_LEASES,        /* ns\0id → lease */
    DBI_LEASE_RES,     /* ns\0lease\0type\0id → nil */
    DBI_INGESTS,       /* ns\0ref → {ref, expected, lease, started_at} */
    DBI_SNAPS,         /* ns\0key → snapshot record */
    DBI_SNAP_CHILDREN, /* ns\0parent\0child → nil */
    DBI_SNAP_BACKEND,  /* backend id → {id, parent, kind, name, created_at} */
    DBI_SNAP_REFS,     /* backend id\0ns\0key → nil */
    DBI_SNAP_SHARED,   /* parent backend id\0name → backend id (committed, digest names) */
    DBI_TOMBS,         /* "content\0<digest>" | "snapshot\0<id>" → {at} */
    DBI_REPLAY,        /* ns\0method\0request_id → {at, result: bin} */
    DBI_COUNT
};

extern const char *const meta_dbi_names[DBI_COUNT];

struct meta_db_s {
    MDB_env *env;
    char *path;
    int lock_fd;
    MDB_dbi dbi[DBI_COUNT];
    /* Readers hold it shared around their transactions; the writer takes it
     * exclusively only to grow the map (mdb_env_set_mapsize requires that no
     * transaction is active in the process). */
    pthread_rwlock_t resize_lock;
    pthread_mutex_t write_lock; /* one writer at a time */
    uint64_t map_size, max_map_size;
    unsigned growths;
    bool failpoints; /* metadata.txn.* armed (requests only, not startup) */
};

/* Counters for gc (optional via tx->stat). */
struct meta_txstat_s {
    size_t decoded;
};

/* Composite key: parts joined by NUL. */
typedef struct {
    char *p;
    size_t len;
    char small[512];
} meta_key_t;

/** Builds a key from n NUL-separated parts (NULL parts are ""). Returns -1
 * with invalid_argument when longer than LMDB's key limit. */
int meta_key(meta_key_t *k, berth_error_t **err, size_t n, ...);
void meta_key_free(meta_key_t *k);
#define _cleanup_key_ __attribute__((cleanup(meta_key_free)))

/** Raw get: 0 found (*v valid until txn end), 1 absent, -1 error. */
int meta_get(meta_tx_t *tx, int dbi, const meta_key_t *k, MDB_val *v, berth_error_t **err);
int meta_put(meta_tx_t *tx, int dbi, const meta_key_t *k, const void *data, size_t len,
             unsigned flags, berth_error_t **err);
/** 0 deleted, 1 absent, -1 error. */
int meta_del(meta_tx_t *tx, int dbi, const meta_key_t *k, berth_error_t **err);
/** Stores an LMDB failure in tx (for MAP_FULL retry) and the error. */
int meta_mdb_fail(meta_tx_t *tx, int rc, const char *what, berth_error_t **err);
/** Decodes a stored msgpack value into tx's zone. */
int meta_decode(meta_tx_t *tx, const MDB_val *v, msgpack_object *o, berth_error_t **err);
/** True if there is any key starting with prefix (len bytes) in dbi. */
int meta_has_prefix(meta_tx_t *tx, int dbi, const char *prefix, size_t len, bool *has,
                    berth_error_t **err);

/** Appends raw stored bytes as one object to tx->out. */
void meta_out_raw(meta_tx_t *tx, const MDB_val *v);

/** Packs a validated labels map (nil → {}). */
void meta_pack_labels(msgpack_packer *pk, const msgpack_object *labels);
/** Computes new labels from old + update, honouring fields ("labels" or
 * "labels.<k>"; NULL fields = replace all) and packs them. Validates the
 * result. `prefix` is "labels" (or "annotations"). Returns 0, or -1 on
 * invalid input. *touched says whether any field named the prefix. */
int meta_pack_labels_update(msgpack_packer *pk, const msgpack_object *old,
                            const msgpack_object *upd, const msgpack_object *fields,
                            const char *prefix, bool *touched, berth_error_t **err);
/** Field list helper: true if `fields` is nil (= all) or holds `name`. */
bool meta_fields_has(const msgpack_object *fields, const char *name);
/** Validates `fields` (array of str). */
int meta_fields_validate(const msgpack_object *fields, berth_error_t **err);

/** Packs a copy of map `o` replacing the value of `key` by the object
 * produced by cb (or dropping it when cb is NULL). Used for small edits. */
const msgpack_object *meta_map_get(const msgpack_object *map, const char *key);
bool meta_str_eq(const msgpack_object *o, const char *s);
/** Copies a str object into buf (NUL-terminated); false if too long/not str. */
bool meta_str_copy(const msgpack_object *o, char *buf, size_t size);
int64_t meta_obj_i64(const msgpack_object *o);

/** Tombstones. kind is "content" or "snapshot". */
int meta_tomb_add(meta_tx_t *tx, const char *kind, const char *id, berth_error_t **err);
int meta_tomb_has(meta_tx_t *tx, const char *kind, const char *id, bool *has, berth_error_t **err);
int meta_tomb_del(meta_tx_t *tx, const char *kind, const char *id, berth_error_t **err);

/** Adds a resource to tx->lease in ns (no-op when tx->lease is NULL). */
int meta_lease_join(meta_tx_t *tx, const char *ns, const char *rtype, const char *rid,
                    berth_error_t **err);
/** Whether a lease record (decoded) is expired at `now`. */
bool meta_lease_expired(const msgpack_object *lease, int64_t now);

/** Key helpers: splits "a\0b" style keys. Returns part i (borrowed) or NULL. */
const char *meta_key_part(const MDB_val *k, size_t i, size_t *len);
