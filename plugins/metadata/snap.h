/* SPDX-License-Identifier: Apache-2.0 */
/* Internal snapshot record access shared by snapshots.c and gc.c. */
#pragma once

#include "internal.h"

/** A decoded snapshot record (borrowed from the txn). */
typedef struct {
    MDB_val raw;
    msgpack_object obj;
    char id[24];
    char kind[16];
    char parent[256];
    char state[16];   /* "", "preparing", "committing" */
    char target[256]; /* commit target while committing */
    const msgpack_object *labels;
    int64_t created_at;
} meta_snap_rec_t;

/** 0 found, 1 absent, -1 error. */
int meta_snap_get(meta_tx_t *tx, const char *ns, const char *key, meta_snap_rec_t *r,
                  berth_error_t **err);
/** Deletes a record and its index entries; tombstones its backend id when no
 * namespace references it any more (*tomb, if given, gets the id). */
int meta_snap_drop(meta_tx_t *tx, const char *ns, const char *key, const meta_snap_rec_t *r,
                   char **tomb, berth_error_t **err);
/** Ids tombstoned under kind ("content" or "snapshot"). */
int meta_tombstones(meta_tx_t *tx, const char *kind, char ***ids, size_t *n, berth_error_t **err);
