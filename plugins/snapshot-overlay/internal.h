/* SPDX-License-Identifier: Apache-2.0 */
/* berth-snapshot-overlay internals: the snapshot store (overlay.c: directories,
 * mounts, commit, remove, usage, reconcile) and confined OCI layer extraction
 * (apply.c). Neither file touches the event loop; handlers.c calls them from
 * uv_queue_work. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "berth/common.h"
#include "berth/error.h"

/* ---- store (overlay.c) --------------------------------------------------- */

/** Longest snapshot id we accept (decimal digits only). */
#define OVERLAY_ID_MAX 20
/** Kernel limit for mount(2) option data: one page. We switch to
 * relative lowerdirs once the absolute form would not fit. */
#define OVERLAY_MOUNT_DATA_MAX 4095

typedef struct {
    bool sync_on_commit; /* syncfs() the snapshot's filesystem at commit */
    bool index_off;      /* add "index=off" (when the kernel supports the knob) */
} overlay_store_opts_t;

typedef struct overlay_store_s {
    char *root;    /* <root>/snapshot-overlay (owned) */
    char *snapdir; /* <root>/snapshot-overlay/snapshots (owned) */
    int snapfd;    /* O_DIRECTORY fd of snapdir */
    overlay_store_opts_t opts;
} overlay_store_t;

/** One mount, like containerd's: type, source, options. `chdir` (may be
 * NULL) names the directory the mounter must chdir into before mount(2): set
 * only when lowerdir paths are relative because the absolute form would pass
 * the one-page limit of mount data (long parent chains). */
typedef struct {
    char *type;
    char *source;
    char **options;
    size_t n_options;
    char *chdir;
} overlay_mount_t;

typedef struct {
    overlay_mount_t *v;
    size_t n;
} overlay_mounts_t;

typedef struct {
    uint64_t size;   /* bytes in use (st_blocks * 512, hardlinks once) */
    uint64_t inodes; /* distinct inodes */
} overlay_usage_t;

typedef struct {
    size_t removed_tmp; /* interrupted prepares/removes cleaned */
    size_t interrupted; /* snapshots whose layer apply never finished */
    size_t unknown;     /* entries we do not recognise (left alone) */
} overlay_reconcile_t;

/** True if `id` is 1..OVERLAY_ID_MAX decimal digits. */
bool overlay_id_valid(const char *id);

/** Opens (creating 0700) <root>/snapshots. `root` is the plugin's folder
 * (<daemon root>/snapshot-overlay). Caller frees with overlay_store_free(). */
int overlay_store_open(const char *root, const overlay_store_opts_t *opts, overlay_store_t **out,
                       berth_error_t **err);
void overlay_store_free(overlay_store_t *s);

/** Cleans what a crash left behind (temp dirs of prepare/remove, temp marker
 * files) and logs every action; reports counts in *rep (may be NULL). */
int overlay_reconcile(overlay_store_t *s, overlay_reconcile_t *rep, berth_error_t **err);

/** Creates snapshot `id` with the given parents (nearest first, ids of
 * committed snapshots). Atomic: built under a temp name, then renamed.
 * An existing active snapshot with the same id is returned as is (retry
 * after a crash); a committed one gives already_exists. */
int overlay_prepare(overlay_store_t *s, const char *id, const char *const *parents,
                    size_t n_parents, bool readonly, overlay_mounts_t *out, berth_error_t **err);

/** Mounts of an existing snapshot. parents == NULL uses the parents stored at
 * prepare; readonly < 0 uses the stored kind. */
int overlay_mounts(overlay_store_t *s, const char *id, const char *const *parents, size_t n_parents,
                   int readonly, overlay_mounts_t *out, berth_error_t **err);
void overlay_mounts_free(overlay_mounts_t *m);

/** Marks snapshot `id` committed (immutable) and, if u is not NULL, returns
 * its usage (a walk of the whole tree; with u NULL, overlay_usage() computes
 * it on first use and records it). Refuses a view and a snapshot whose layer
 * apply was interrupted or failed (failed_precondition). Committing twice
 * succeeds. */
int overlay_commit(overlay_store_t *s, const char *id, overlay_usage_t *u, berth_error_t **err);

/** Removes snapshot `id` (renamed away atomically, then deleted). not_found
 * if it does not exist. */
int overlay_remove(overlay_store_t *s, const char *id, berth_error_t **err);

/** Usage of snapshot `id`: a tree walk for an active snapshot; for a
 * committed one the recorded value (computed and recorded on first use). */
int overlay_usage(overlay_store_t *s, const char *id, overlay_usage_t *u, berth_error_t **err);

/** Lists snapshot ids (sorted numerically). *interrupted lists those whose
 * layer apply never completed. Caller frees both with overlay_strv_free(). */
int overlay_list(overlay_store_t *s, char ***ids, size_t *n, char ***interrupted, size_t *ni,
                 berth_error_t **err);
void overlay_strv_free(char **v, size_t n);

/** Deletes `name` in `dirfd` and everything below it without following
 * symlinks and without crossing into another filesystem (EBUSY). Iterative:
 * any depth, few fds. A missing entry is not an error. */
int overlay_rm_rf_at(int dirfd, const char *name, berth_error_t **err);

/* ---- layer apply (apply.c) ---------------------------------------------- */

typedef enum {
    OVERLAY_COMP_NONE = 0,
    OVERLAY_COMP_GZIP,
    OVERLAY_COMP_ZSTD,
} overlay_comp_t;

/** Maps an OCI or Docker layer media type to its compression; unknown types
 * give invalid_argument. */
int overlay_media_type_parse(const char *media_type, overlay_comp_t *out, berth_error_t **err);

typedef struct {
    /** Stop once the uncompressed stream passes this many bytes (0 = no cap). */
    uint64_t max_uncompressed;
    /** Stop once free space on the target filesystem drops below this. */
    uint64_t min_free_bytes;
    /** fds (O_RDONLY|O_DIRECTORY) of the parents' fs dirs, nearest first:
     * attributes of parent directories missing from the layer are copied
     * from them, like containerd's mkparent. Borrowed. */
    const int *lower_fds;
    size_t n_lowers;
    /** Set non-zero from another thread to stop with `canceled`. */
    atomic_int *cancel;
    /** When set ("sha256:..."), a different diff ID fails the apply. */
    const char *expected_diff_id;
    /** Size of the blob as described; 0 = unknown. A different file size
     * fails before extraction starts. */
    uint64_t expected_size;
} overlay_apply_opts_t;

typedef struct {
    char diff_id[7 + 64 + 1]; /* "sha256:<hex>" */
    uint64_t size;            /* bytes of the uncompressed tar stream */
    uint64_t entries;         /* tar entries read */
    uint64_t whiteouts;
    uint64_t skipped_xattrs; /* trusted.overlay.* and friends dropped */
} overlay_apply_result_t;

/** Process-wide setup for apply: sets umask 0 so files are created with their
 * final permission bits in one syscall. Call once at start. */
void overlay_apply_global_init(void);

/** Extracts the layer in `blobfd` (read from its current offset to EOF) into
 * the directory `rootfd` (an overlay upper dir), converting OCI whiteouts to
 * overlay whiteouts. Every write is confined to rootfd. On error the tree is
 * left partial: the caller discards the snapshot. */
int overlay_apply_fd(int rootfd, int blobfd, overlay_comp_t comp, const overlay_apply_opts_t *o,
                     overlay_apply_result_t *res, berth_error_t **err);

/** Applies a layer blob into snapshot `id` of the store: checks that the
 * snapshot is active, records an fsynced "apply running" marker, extracts,
 * then atomically records "done <diff_id>". A snapshot with a running or
 * failed marker cannot be committed. (apply.c, on overlay__apply_begin/end.) */
int overlay_apply_snapshot(overlay_store_t *s, const char *id, const char *blob_path,
                           const char *media_type, const overlay_apply_opts_t *o,
                           overlay_apply_result_t *res, berth_error_t **err);

/** What overlay__apply_begin() opened for an apply (overlay.c). */
typedef struct {
    int snapfd, fsfd, blobfd;
    int *lowers; /* the parents' fs dirs, nearest first */
    size_t n_lowers;
} overlay_apply_target_t;

/** Store side of an apply: checks that snapshot `id` is active, opens its fs
 * dir, its parents' and the blob, and records the fsynced "running" marker.
 * On error everything is closed. */
int overlay__apply_begin(overlay_store_t *s, const char *id, const char *blob_path,
                         overlay_apply_target_t *t, berth_error_t **err);
/** Records "done <diff_id>" (res != NULL) or "failed" (res == NULL, err
 * ignored) and closes what begin opened. */
int overlay__apply_end(overlay_store_t *s, overlay_apply_target_t *t,
                       const overlay_apply_result_t *res, berth_error_t **err);

/** Test hook: force the component-by-component resolver instead of openat2. */
extern bool overlay_apply_force_walk;
