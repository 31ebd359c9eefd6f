/* SPDX-License-Identifier: Apache-2.0 */
/* Mark and sweep over every namespace's records in one write transaction
 * (docs/gc.md). The gc plugin asks for it (meta.gc_collect), deletes the
 * returned blobs and backend snapshots, then confirms (meta.gc_done). */
#pragma once

#include "db.h"

typedef struct {
    size_t nodes;                /* records seen */
    size_t marked;               /* records kept */
    size_t content_removed;      /* content records swept (all namespaces) */
    size_t snapshots_removed;    /* snapshot records swept */
    size_t blobs_tombstoned;     /* new blob tombstones */
    size_t snapshots_tombstoned; /* new backend snapshot tombstones */
    size_t replays_pruned;
    uint64_t mark_us, sweep_us;
} meta_gc_stats_t;

/** Runs a collection in tx (a write transaction). Result packed into
 * tx->out: {content: [digest], snapshots: [backend id], started_at, stats:
 * {mark_ns, lock_ns, next_expire, nodes, marked, ...}}.
 * `content`/`snapshots` are every tombstone not yet confirmed, so a gc that
 * crashed before gc_done gets them again. Replay records older than
 * replay_before are pruned. */
int meta_gc_collect(meta_tx_t *tx, int64_t replay_before, meta_gc_stats_t *st, berth_error_t **err);
/** Drops tombstones the backends confirmed deleted. Result {}. */
int meta_gc_done(meta_tx_t *tx, const msgpack_object *content, const msgpack_object *snapshots,
                 berth_error_t **err);
/** Of the given on-disk blobs / backend ids, those with no record anywhere
 * (and not expected by an ingest) are tombstoned in tx (a write
 * transaction, so a racing commit fails `aborted`) and returned:
 * {content: [...], snapshots: [...]}. */
int meta_gc_orphans(meta_tx_t *tx, const msgpack_object *content, const msgpack_object *snapshots,
                    berth_error_t **err);
