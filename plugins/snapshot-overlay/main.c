/* SPDX-License-Identifier: Apache-2.0 */
/* berth-snapshot-overlay: the overlayfs snapshotter plugin process. Validates
 * its config section, locks <root>/snapshot-overlay/LOCK, opens the store and
 * reconciles what a crash left behind, applies its seccomp sandbox, then
 * serves the overlayfs.* methods (callers: metadata, gc). */
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "handlers.h"

static overlay_plugin_t g_overlay = {.lock_fd = -1};

int overlay_config_parse(overlay_plugin_t *op, overlay_store_opts_t *so, const msgpack_object *cfg,
                         berth_error_t **err)
{
    static const char *const known[] = {"apply_max_uncompressed_bytes",
                                        "apply_reserve_bytes",
                                        "sync_on_commit",
                                        "index_off",
                                        "sandbox",
                                        "unload_idle_ms"};
    op->max_uncompressed = OVERLAY_DEFAULT_MAX_UNCOMPRESSED;
    op->reserve = OVERLAY_DEFAULT_RESERVE;
    op->unload_idle_ms = OVERLAY_DEFAULT_UNLOAD_IDLE_MS;
    op->sandbox = true;
    so->sync_on_commit = true;
    so->index_off = true;
    if (!cfg || cfg->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (cfg->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config section \"snapshot-overlay\" must be a map");
    for (uint32_t i = 0; i < cfg->via.map.size; i++) {
        const msgpack_object *k = &cfg->via.map.ptr[i].key;
        bool ok = false;
        for (size_t n = 0; k->type == MSGPACK_OBJECT_STR && n < BERTH_ARRAY_SIZE(known); n++)
            ok |= berth_mp_str_eq(k, known[n]);
        if (!ok)
            return berth_error_set(
                err, BERTH_E_INVALID_ARGUMENT,
                "unknown key \"plugins.snapshot-overlay.config.%.*s\" (known: "
                "apply_max_uncompressed_bytes, apply_reserve_bytes, sync_on_commit, index_off, "
                "sandbox, unload_idle_ms)",
                k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
                k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?");
    }
    if (berth_mp_get_u64(cfg, "apply_max_uncompressed_bytes", &op->max_uncompressed, err) < 0 ||
        berth_mp_get_u64(cfg, "apply_reserve_bytes", &op->reserve, err) < 0 ||
        berth_mp_get_bool(cfg, "sync_on_commit", &so->sync_on_commit, err) < 0 ||
        berth_mp_get_bool(cfg, "index_off", &so->index_off, err) < 0 ||
        berth_mp_get_bool(cfg, "sandbox", &op->sandbox, err) < 0 ||
        berth_mp_get_u64(cfg, "unload_idle_ms", &op->unload_idle_ms, err) < 0)
        return berth_error_wrap(err, "config snapshot-overlay");
    if (op->unload_idle_ms > (1ull << 30))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config snapshot-overlay.unload_idle_ms must be at most 1073741824 "
                               "(0 = never unload; got %llu)",
                               (unsigned long long)op->unload_idle_ms);
    if (op->max_uncompressed < (1u << 20))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config snapshot-overlay.apply_max_uncompressed_bytes must be at "
                               "least 1 MiB (got %llu)",
                               (unsigned long long)op->max_uncompressed);
    return 0;
}

/* Two instances on one root would race on the same directories. */
static int take_root_lock(overlay_plugin_t *op, const char *root, berth_error_t **err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/LOCK", root);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return berth_error_errno(err, errno, "open %s", path);
    for (int i = 0; i < 100; i++) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            op->lock_fd = fd;
            return 0;
        }
        if (errno != EWOULDBLOCK) {
            int e = errno;
            close(fd);
            return berth_error_errno(err, e, "lock %s", path);
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    close(fd);
    return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                           "another berth-snapshot-overlay holds %s; stop it first", path);
}

static int overlay_init(berth_plugin_t *p, berth_error_t **err)
{
    overlay_plugin_t *op = berth_plugin_data(p);
    op->p = p;
    overlay_store_opts_t so;
    if (overlay_config_parse(op, &so, berth_plugin_config(p), err) < 0)
        return -1;
    const char *root = berth_plugin_root(p);
    if (take_root_lock(op, root, err) < 0)
        return -1;
    if (overlay_module_find(op, err) < 0)
        return -1;
    if (overlay_store_open(root, &so, &op->store, err) < 0)
        return berth_error_wrap(err, "open snapshot store in %s", root);
    overlay_reconcile_t rep;
    if (overlay_reconcile(op->store, &rep, err) < 0)
        return berth_error_wrap(err, "reconcile snapshot store in %s", root);
    if (op->sandbox) {
        /* This plugin never runs programs and never mounts (mounts are
         * returned to the caller): deny both, and what else we never need. */
        static const char *const denied[] = {"execve",    "execveat",         "mount",
                                             "umount2",   "pivot_root",       "chroot",
                                             "ptrace",    "process_vm_readv", "process_vm_writev",
                                             "setns",     "unshare",          "fork",
                                             "vfork",     "move_mount",       "open_tree",
                                             "fsopen",    "fsmount",          "fsconfig",
                                             "fspick",    "mount_setattr",    "setuid",
                                             "setgid",    "setreuid",         "setregid",
                                             "setresuid", "setresgid",        "capset",
                                             NULL};
        if (berth_plugin_sandbox(p, NULL, denied, err) < 0)
            return -1;
    }
    berth_log(BERTH_LOG_INFO,
              "msg=\"snapshot store open\" root=%s max_uncompressed=%llu reserve=%llu sync=%d",
              root, (unsigned long long)op->max_uncompressed, (unsigned long long)op->reserve,
              so.sync_on_commit);
    return 0;
}

static const char *const requires[] = {"content", NULL};

int main(int argc, char **argv)
{
    /* Layer paths are bytes; a UTF-8 ctype lets libarchive hand PAX (UTF-8)
     * names through unchanged. */
    setlocale(LC_CTYPE, "C.UTF-8");
    /* Buffers of 256 KiB and more (an apply's ring) come from mmap and go back
     * to the kernel when freed: glibc's dynamic threshold would otherwise
     * move them into the heap after the first apply, where they stay. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    /* overlay_apply_global_init() runs when handlers.c loads the extraction
     * library (module.h). */
    berth_plugin_desc_t desc = {
        .id = "snapshot-overlay",
        .type = "io.berth.snapshotter.overlayfs.v1",
        .version = "0.1.0",
        .methods = overlay_methods,
        .n_methods = overlay_n_methods,
        .requires = requires,
        .init = overlay_init,
        .data = &g_overlay,
    };
    int rc = berth_plugin_main(&desc, argc, argv);
    overlay_store_free(g_overlay.store);
    overlay_strv_free(g_overlay.busy, g_overlay.n_busy);
    if (g_overlay.lock_fd >= 0)
        close(g_overlay.lock_fd);
    return rc;
}
