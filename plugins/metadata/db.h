/* SPDX-License-Identifier: Apache-2.0 */
/* berth-metadata's LMDB store: environment, schema, transactions and every
 * record kind (namespaces, content, images, containers, leases, ingests,
 * snapshots, replays, tombstones). No event loop here: handlers.c runs these
 * functions on a writer thread (writes) or the loop (reads), and the unit
 * tests call them directly against a temporary environment.
 *
 * Data model: every stored value is one msgpack map in the exact shape the
 * API returns (docs/metadata.md), so reads copy bytes instead of re-encoding.
 * Functions that produce a result pack exactly one object into `tx->out`. */
#pragma once

#include <lmdb.h>
#include <msgpack.h>
#include <stdbool.h>

#include "berth/common.h"
#include "berth/error.h"
#include "berth/mp.h"

#define META_SCHEMA_VERSION 1

/* Limits (docs/metadata.md). */
#define META_NS_MAX 76
#define META_LABEL_MAX 4096           /* key + value */
#define META_LABELS_TOTAL (64 * 1024) /* all labels of one object */
#define META_NAME_MAX 4096            /* image names, ids, keys, refs */

/* Label names understood by the gc (docs/gc.md); "containerd.io/" is accepted
 * as a synonym of "berth.io/" for each. */
#define META_LABEL_GC_EXPIRE "berth.io/gc.expire"
#define META_LABEL_GC_ROOT "berth.io/gc.root"
#define META_LABEL_GC_FLAT "berth.io/gc.flat"
#define META_LABEL_GC_REF_CONTENT "berth.io/gc.ref.content"
#define META_LABEL_GC_REF_SNAPSHOT "berth.io/gc.ref.snapshot.overlayfs"
/* On snapshots.prepare: "this prepare will be committed as NAME"; if NAME is
 * already committed (here or, shared, in another namespace) the prepare fails
 * already_exists and the caller skips its apply, like containerd's unpacker. */
#define META_LABEL_SNAPSHOT_REF "berth.io/snapshot.ref"

typedef struct meta_db_s meta_db_t;

typedef struct {
    uint64_t map_size;     /* initial map size in bytes (0 = 64 MiB) */
    uint64_t max_map_size; /* growth stops here (0 = 64 GiB) */
    unsigned max_readers;  /* 0 = 126 */
    bool no_sync;          /* tests and benches only: MDB_NOSYNC */
} meta_db_opts_t;

/** Opens (creating if absent) the environment at `path` (a single file,
 * MDB_NOSUBDIR; LMDB adds `path`-lock). Takes an exclusive flock so that two
 * instances never share it, runs mdb_reader_check, refuses a truncated or
 * corrupted file with a message saying what to do, checks the schema version
 * and runs migrations. Caller frees with meta_db_close(). */
int meta_db_open(const char *path, const meta_db_opts_t *opts, meta_db_t **out,
                 berth_error_t **err);
void meta_db_close(meta_db_t *db);
/** Current map size in bytes. */
uint64_t meta_db_map_size(meta_db_t *db);
/** Number of map growths since open (for tests and logs). */
unsigned meta_db_growths(meta_db_t *db);
/** Arms the failpoints metadata.txn.before_commit and .after_commit around
 * the commit of every later write batch (main.c, once startup writes are
 * done, so that a paused or crashing point never blocks the start itself). */
void meta_db_arm_failpoints(meta_db_t *db);

/* ---- events produced by mutations -------------------------------------- */

typedef struct {
    char *topic;
    char *ns;
    char *data; /* one packed msgpack map */
    size_t len;
} meta_event_t;

typedef struct {
    meta_event_t *v;
    size_t n, cap;
} meta_events_t;

void meta_events_clear(meta_events_t *ev);
/** Appends an event; `pk` callback packs its map. */
void meta_events_add(meta_events_t *ev, const char *topic, const char *ns,
                     const berth_mpbuf_t *packed);

/* ---- transactions ------------------------------------------------------- */

typedef struct {
    meta_db_t *db;
    MDB_txn *txn;
    bool write;
    int64_t now;                /* ns since epoch, fixed for the transaction */
    int mdb_rc;                 /* last LMDB error (MDB_MAP_FULL triggers a retry) */
    msgpack_zone *zone;         /* decoded values live here until the txn ends */
    berth_mpbuf_t *out;         /* where result objects are packed (may be NULL) */
    meta_events_t *ev;          /* where events are appended (may be NULL) */
    const char *lease;          /* the request's lease: new content/snapshots/ingests join it */
    struct meta_txstat_s *stat; /* optional counters (gc) */
} meta_tx_t;

/** Read transaction (safe on any thread; does not block writers). */
int meta_tx_read(meta_db_t *db, meta_tx_t *tx, berth_error_t **err);
void meta_tx_end(meta_tx_t *tx); /* aborts a read txn; frees the zone */

/** A write operation: runs inside a (nested) write transaction; must be
 * re-runnable (the batch is re-run from scratch after the map grows), so it
 * may not mutate `arg`. Packs its result into tx->out. */
typedef int (*meta_write_fn)(meta_tx_t *tx, void *arg, berth_error_t **err);

enum {
    META_REPLAY_LOOKUP = 1u << 0, /* answer from a recorded result */
    META_REPLAY_RECORD = 1u << 1, /* record a successful result */
};

typedef struct {
    meta_write_fn fn;
    void *arg;
    const char *lease;
    /* Replay: when set, a recorded result for this key is returned instead of
     * running fn, and a successful result is recorded in the same txn. */
    const char *replay_ns, *replay_method, *replay_id;
    unsigned replay_mode; /* META_REPLAY_* bits; 0 = both */
    /* outputs */
    berth_mpbuf_t result;
    meta_events_t ev;
    berth_error_t *err;
    bool replayed;
} meta_wop_t;

void meta_wop_init(meta_wop_t *op, meta_write_fn fn, void *arg);
void meta_wop_destroy(meta_wop_t *op);

/** Runs ops in one write transaction (group commit: one fsync), each in its
 * own nested transaction so one failing op does not undo the others. Grows
 * the map and re-runs the batch on MDB_MAP_FULL. Returns -1 only when the
 * whole transaction failed (every op then carries an error too). Blocking:
 * call from the writer thread. `held_ms` (optional) gets how long the write
 * lock was held. */
int meta_db_write_batch(meta_db_t *db, meta_wop_t *const *ops, size_t n, uint64_t *held_ms,
                        berth_error_t **err);
/** Convenience: one op. Result (if any) copied to *result (caller destroys). */
int meta_db_write(meta_db_t *db, meta_write_fn fn, void *arg, berth_mpbuf_t *result,
                  meta_events_t *ev, berth_error_t **err);

/* ---- validation --------------------------------------------------------- */

/** containerd's rule: [a-z0-9]([a-z0-9._-]*[a-z0-9])?, at most 76 chars. */
int meta_validate_namespace(const char *name, berth_error_t **err);
/** "sha256:<64 lowercase hex>" (the only algorithm for now). */
int meta_validate_digest(const char *d, berth_error_t **err);
/** Non-empty, no NUL/control chars, ≤ META_NAME_MAX. `what` names it. */
int meta_validate_name(const char *what, const char *s, berth_error_t **err);
/** labels: nil/absent or a map str → str, each key non-empty, key+value ≤
 * 4 KiB, total ≤ 64 KiB. */
int meta_validate_labels(const msgpack_object *labels, berth_error_t **err);
/** Parses RFC3339 ("2026-11-29T16:11:20Z", fractional seconds and offsets
 * accepted) into ns since epoch. */
int meta_parse_rfc3339(const char *s, size_t len, int64_t *out);
/** Formats ns since epoch as RFC3339 UTC with second precision. */
void meta_format_rfc3339(int64_t ns, char buf[32]);

/** Looks up a label in a labels map; returns the value object or NULL. */
const msgpack_object *meta_label(const msgpack_object *labels, const char *key);
/** Like meta_label, also trying "containerd.io/" for a "berth.io/" key. */
const msgpack_object *meta_label_gc(const msgpack_object *labels, const char *berth_key);

/* ---- namespaces --------------------------------------------------------- */
/* Results: {namespace: {name, labels, created_at, updated_at}}. */
int meta_ns_create(meta_tx_t *tx, const char *name, const msgpack_object *labels,
                   berth_error_t **err);
int meta_ns_get(meta_tx_t *tx, const char *name, berth_error_t **err);
int meta_ns_list(meta_tx_t *tx, berth_error_t **err); /* {namespaces: [...]} */
/** Replaces the labels (or, with fields ["labels.k"...], only those keys). */
int meta_ns_update(meta_tx_t *tx, const char *name, const msgpack_object *labels,
                   const msgpack_object *fields, berth_error_t **err);
/** failed_precondition listing what remains when not empty. Result {}. */
int meta_ns_delete(meta_tx_t *tx, const char *name, berth_error_t **err);
/** Creates the namespace if absent (any namespaced write does this). */
int meta_ns_ensure(meta_tx_t *tx, const char *name, berth_error_t **err);
bool meta_ns_exists(meta_tx_t *tx, const char *name);

/* ---- content records ---------------------------------------------------- */
/* info = {digest, size, created_at, updated_at, labels} */
/** Records a commit by the content plugin. Result {existed: bool}. Fails
 * `aborted` when the blob is tombstoned (being deleted by gc). Ends the
 * ingest `ref` (if given) and adds the digest to tx->lease (if set). */
int meta_content_commit(meta_tx_t *tx, const char *ns, const char *digest, uint64_t size,
                        const msgpack_object *labels, const char *ref, berth_error_t **err);
int meta_content_info(meta_tx_t *tx, const char *ns, const char *digest, berth_error_t **err);
/** {infos: [...]} matching the filters (array of str, OR'd; nil = all). */
int meta_content_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                      berth_error_t **err);
int meta_content_update(meta_tx_t *tx, const char *ns, const char *digest,
                        const msgpack_object *labels, const msgpack_object *fields,
                        berth_error_t **err);
int meta_content_delete(meta_tx_t *tx, const char *ns, const char *digest, berth_error_t **err);
/** {exists, size}. */
int meta_content_exists(meta_tx_t *tx, const char *ns, const char *digest, berth_error_t **err);

/* ---- ingests (gc roots) ------------------------------------------------- */
int meta_ingest_begin(meta_tx_t *tx, const char *ns, const char *ref, const char *expected,
                      berth_error_t **err);
int meta_ingest_end(meta_tx_t *tx, const char *ns, const char *ref, berth_error_t **err);
/** {ingest: {ref, expected, lease, started_at}} or not_found. */
int meta_ingest_get(meta_tx_t *tx, const char *ns, const char *ref, berth_error_t **err);
int meta_ingest_list(meta_tx_t *tx, const char *ns, berth_error_t **err); /* {ingests} */

/* ---- images ------------------------------------------------------------- */
/* image = {name, target: desc, labels, created_at, updated_at} */
int meta_image_create(meta_tx_t *tx, const char *ns, const msgpack_object *image,
                      berth_error_t **err);
int meta_image_get(meta_tx_t *tx, const char *ns, const char *name, berth_error_t **err);
int meta_image_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                    berth_error_t **err);
/** fields: nil = target and labels; else "target", "labels", "labels.k",
 * "annotations" (of the target). */
int meta_image_update(meta_tx_t *tx, const char *ns, const msgpack_object *image,
                      const msgpack_object *fields, berth_error_t **err);
int meta_image_delete(meta_tx_t *tx, const char *ns, const char *name, berth_error_t **err);

/* ---- containers --------------------------------------------------------- */
int meta_container_create(meta_tx_t *tx, const char *ns, const msgpack_object *c,
                          berth_error_t **err);
int meta_container_get(meta_tx_t *tx, const char *ns, const char *id, berth_error_t **err);
int meta_container_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                        berth_error_t **err);
/** fields: nil = labels, image, spec, snapshot_key, extensions, rm; runtime
 * and snapshotter are immutable. */
int meta_container_update(meta_tx_t *tx, const char *ns, const msgpack_object *c,
                          const msgpack_object *fields, berth_error_t **err);
/** Result {container} (the deleted record). */
int meta_container_delete(meta_tx_t *tx, const char *ns, const char *id, berth_error_t **err);

/* ---- leases ------------------------------------------------------------- */
/* lease = {id, labels, created_at, expire?} */
/** id NULL → generated. expire 0 = never; also recorded as the label
 * berth.io/gc.expire (RFC3339), like containerd. */
int meta_lease_create(meta_tx_t *tx, const char *ns, const char *id, const msgpack_object *labels,
                      int64_t expire, berth_error_t **err);
int meta_lease_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                    berth_error_t **err);
int meta_lease_delete(meta_tx_t *tx, const char *ns, const char *id, berth_error_t **err);
int meta_lease_add_resource(meta_tx_t *tx, const char *ns, const char *id, const char *rtype,
                            const char *rid, berth_error_t **err);
int meta_lease_delete_resource(meta_tx_t *tx, const char *ns, const char *id, const char *rtype,
                               const char *rid, berth_error_t **err);
int meta_lease_list_resources(meta_tx_t *tx, const char *ns, const char *id, berth_error_t **err);
/** {held: bool}: the lease exists, is unexpired and holds the resource; for
 * type content also {exists: bool}: the namespace has that content. */
int meta_lease_check(meta_tx_t *tx, const char *ns, const char *id, const char *rtype,
                     const char *rid, berth_error_t **err);
/** Validates a resource type/id pair. */
int meta_validate_resource(const char *rtype, const char *rid, berth_error_t **err);

/* ---- replays ------------------------------------------------------------ */
/** Deletes replay records older than `before` (ns). Returns how many. */
size_t meta_replay_prune(meta_tx_t *tx, int64_t before);

/* ---- snapshots (snapshots.c) -------------------------------------------- */
/* Snapshot operations that need the backend run in three steps: a write txn
 * records the intent (begin), the handler calls overlayfs.*, a second write
 * txn finishes or rolls back. meta_snap_reconcile() settles intents left by a
 * crash. */
typedef struct {
    char id[24];    /* backend id */
    char kind[16];  /* resolve: "active", "view" or "committed" */
    char **parents; /* backend ids, nearest first (malloc'd) */
    size_t n_parents;
    bool readonly;
    bool exists; /* prepare: shared/already committed → already_exists */
    char *tomb;  /* a backend id the caller should remove (then meta_snap_tomb_done) */
} meta_snap_plan_t;
void meta_snap_plan_free(meta_snap_plan_t *p);

/** prepare/view step 1. kind_view selects view. Fails already_exists when the
 * key exists. With label berth.io/snapshot.ref=NAME and NAME committed in
 * this namespace, or committed with the same parent in another namespace
 * (then shared into this one), fails already_exists without an intent. */
int meta_snap_prepare_begin(meta_tx_t *tx, const char *ns, const char *key, const char *parent,
                            const msgpack_object *labels, bool view, meta_snap_plan_t *plan,
                            berth_error_t **err);
/** prepare step 3: ok → record becomes usable (event /snapshots/prepare);
 * !ok → the intent is dropped and its backend id tombstoned (plan->tomb). */
int meta_snap_prepare_end(meta_tx_t *tx, const char *ns, const char *key, bool ok,
                          berth_error_t **err);
/** Resolves a usable snapshot to its backend id and parent chain. */
int meta_snap_resolve(meta_tx_t *tx, const char *ns, const char *key, meta_snap_plan_t *plan,
                      berth_error_t **err);
/** commit step 1: marks key as committing to `name`. */
int meta_snap_commit_begin(meta_tx_t *tx, const char *ns, const char *name, const char *key,
                           meta_snap_plan_t *plan, berth_error_t **err);
/** commit step 3. ok → key replaced by committed `name` (reusing an
 * identical committed snapshot shared from another namespace when there is
 * one; then plan->tomb names the now unused backend id); !ok → back to
 * active. labels (may be nil) become the committed snapshot's labels. */
int meta_snap_commit_end(meta_tx_t *tx, const char *ns, const char *name, const char *key,
                         const msgpack_object *labels, bool ok, meta_snap_plan_t *plan,
                         berth_error_t **err);
/** Removes the record (failed_precondition while it has children). When no
 * namespace references the backend id any more it is tombstoned and named in
 * plan->tomb for the caller to remove from the backend. */
int meta_snap_remove(meta_tx_t *tx, const char *ns, const char *key, meta_snap_plan_t *plan,
                     berth_error_t **err);
/** {info: {name, parent, kind, labels, created_at, updated_at}} */
int meta_snap_stat(meta_tx_t *tx, const char *ns, const char *key, berth_error_t **err);
int meta_snap_update(meta_tx_t *tx, const char *ns, const char *key, const msgpack_object *labels,
                     const msgpack_object *fields, berth_error_t **err);
int meta_snap_list(meta_tx_t *tx, const char *ns, const msgpack_object *filters,
                   berth_error_t **err);
/** Drops the tombstone of a backend snapshot id after the backend removed it. */
int meta_snap_tomb_done(meta_tx_t *tx, const char *id, berth_error_t **err);
/** After a crash: prepare intents are rolled back (ids tombstoned), commit
 * intents go back to active. Returns the number of intents settled. */
int meta_snap_reconcile(meta_tx_t *tx, size_t *settled, berth_error_t **err);
/** Backend ids currently tombstoned (malloc'd array of malloc'd strings). */
int meta_snap_tombstones(meta_tx_t *tx, char ***ids, size_t *n, berth_error_t **err);
void meta_strv_free(char **v, size_t n);
