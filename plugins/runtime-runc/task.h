/* SPDX-License-Identifier: Apache-2.0 */
/* Task state on disk, for the runtime plugin (no event loop, no JSON):
 * stdio FIFOs under <state>/fifo/<ns>/<id>/, bundles under
 * <state>/runtime/<ns>/<id>/, rootfs mounts from snapshot mounts, and
 * removal that never crosses a mount point. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <msgpack.h>

#include "berth/error.h"

/** A mount as the snapshotter describes it. */
typedef struct {
    char *type; /* "overlay" | "bind" */
    char *source;
    char **options;
    size_t n_options;
    char *chdir; /* relative lowerdirs: mount from this directory */
} rt_fsmount_t;

void rt_fsmounts_free(rt_fsmount_t *m, size_t n);
/** Decodes the snapshotter's mounts array [{type, source, options, chdir?}]. */
int rt_fsmounts_from_mp(const msgpack_object *arr, rt_fsmount_t **out, size_t *n,
                        berth_error_t **err);

/** mkdir -p with `mode` for the created components. */
int rt_mkdir_p(const char *path, mode_t mode, berth_error_t **err);

/** Creates the FIFOs a client asked for in dir (made 0700): "<prefix>-stdin",
 * "-stdout", "-stderr" (prefix "init" or the exec id). paths[i] is set
 * (malloc'd) for each requested stream, NULL otherwise. */
int rt_fifos_create(const char *dir, const char *prefix, const bool want[3], char *paths[3],
                    berth_error_t **err);
/** Removes the FIFOs (ignores missing ones). */
void rt_fifos_remove(char *paths[3]);

/** Writes `config.json` into the bundle (temp + rename) and makes
 * the rootfs mount point. The bundle directory is created 0700. */
int rt_bundle_create(const char *bundle, const void *config, size_t len, berth_error_t **err);

/** Adds `opt` to every overlay mount that has an upperdir (e.g. "volatile"
 * for a --rm container's rootfs, whose upper layer is thrown away). */
int rt_fsmounts_add_overlay_option(rt_fsmount_t *m, size_t n, const char *opt, berth_error_t **err);

/** Mounts the snapshot mounts on target. readonly turns an rw overlay into
 * a read-only view (upper becomes the top lower layer) the way containerd's
 * ReadonlyMounts does. */
int rt_rootfs_mount(const char *target, const rt_fsmount_t *mounts, size_t n, bool readonly,
                    berth_error_t **err);
/** Unmounts target (lazily if busy); a target that is not mounted is fine. */
int rt_rootfs_unmount(const char *target, berth_error_t **err);
/** True if path is a mount point. */
bool rt_is_mountpoint(const char *path);

/** rm -rf of path that refuses to descend into mount points (so a rootfs
 * left mounted is never emptied). Returns 0 when path is gone or absent. */
int rt_remove_tree(const char *path, berth_error_t **err);
