/* SPDX-License-Identifier: Apache-2.0 */
/* berth-content: the content store plugin process. Registers the content.*
 * methods, opens the store under <root>/content at init (recovering from a
 * crash: leftovers swept, ingests kept resumable), confines itself with a
 * seccomp allowlist and runs the SDK loop. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static content_plugin_t g_content = {.lock_fd = -1};

int content_config_parse(content_plugin_t *cp, const msgpack_object *cfg, berth_error_t **err)
{
    cp->sync_bytes = CONTENT_DEFAULT_SYNC_BYTES;
    cp->direct_io = true;
    if (!cfg || cfg->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (cfg->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config section \"content\" must be a map");
    for (uint32_t i = 0; i < cfg->via.map.size; i++) {
        const msgpack_object *k = &cfg->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "config section \"content\" has a key that is not a string");
        if (berth_mp_str_eq(k, "sync_bytes") || berth_mp_str_eq(k, "direct_io"))
            continue;
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "unknown key \"plugins.content.config.%.*s\" (known: sync_bytes, "
                               "direct_io)",
                               (int)k->via.str.size, k->via.str.ptr);
    }
    if (berth_mp_get_bool(cfg, "direct_io", &cp->direct_io, err) < 0)
        return berth_error_wrap(err, "config plugins.content.config.direct_io");
    uint64_t v = cp->sync_bytes;
    if (berth_mp_get_u64(cfg, "sync_bytes", &v, err) < 0)
        return berth_error_wrap(err, "config plugins.content.config.sync_bytes");
    if (v < 4096)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "config plugins.content.config.sync_bytes must be at least 4096 "
                               "(got %llu)",
                               (unsigned long long)v);
    cp->sync_bytes = v;
    return 0;
}

/* Two instances on one root would fight over ingests: take <root>/LOCK,
 * waiting a little for a previous instance that is still exiting. */
static int take_root_lock(content_plugin_t *cp, const char *root, berth_error_t **err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/LOCK", root);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return berth_error_errno(err, errno, "open %s", path);
    for (int i = 0; i < 100; i++) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            cp->lock_fd = fd;
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
                           "another berth-content holds %s; stop it first", path);
}

/* The sandbox (docs/security.md, "Plugin sandboxes"). This process reads and
 * writes files under its root, hashes, and talks to the core over the fd it
 * was given: it never runs a program, mounts, traces, opens a socket or
 * signals another process. Two stacked filters, because the kernel applies
 * the strictest verdict of all: a denylist of what the SDK's base set allows
 * but we never use, then the SDK's allowlist (its base set plus `extra`;
 * anything else kills the process). Applied after the store is open, before
 * the first request; the libuv pool threads are started later and inherit
 * both filters. */
static int content_sandbox(berth_plugin_t *p, berth_error_t **err)
{
    return berth_plugin_confine(p, 0, NULL, NULL, err);
}

static int content_init(berth_plugin_t *p, berth_error_t **err)
{
    content_plugin_t *cp = berth_plugin_data(p);
    cp->p = p;
    if (content_config_parse(cp, berth_plugin_config(p), err) < 0)
        return -1;
    const char *root = berth_plugin_root(p);
    if (take_root_lock(cp, root, err) < 0)
        return -1;
    cp->store = content_store_open(root, cp->sync_bytes, err);
    if (!cp->store)
        return berth_error_wrap(err, "open content store in %s", root);
    content_store_set_direct_io(cp->store, cp->direct_io);
    if (content_sandbox(p, err) < 0)
        return -1;
    berth_log(BERTH_LOG_INFO, "msg=\"content store open\" root=%s sync_bytes=%llu direct_io=%s",
              root, (unsigned long long)cp->sync_bytes, cp->direct_io ? "true" : "false");
    return 0;
}

static void content_fini(berth_plugin_t *p)
{
    content_plugin_t *cp = berth_plugin_data(p);
    /* Pending work still completes after this (the SDK drains the loop);
     * the store is freed in main() once it has. */
    cp->stopping = true;
}

static const char *const requires[] = {"metadata", NULL};

int main(int argc, char **argv)
{
    berth_plugin_desc_t desc = {
        .id = "content",
        .type = "io.berth.content.v1",
        .version = "0.1.0",
        .methods = content_methods,
        .n_methods = content_n_methods,
        .requires = requires,
        .init = content_init,
        .fini = content_fini,
        .data = &g_content,
    };
    int rc = berth_plugin_main(&desc, argc, argv);
    content_store_free(g_content.store);
    if (g_content.lock_fd >= 0)
        close(g_content.lock_fd);
    return rc;
}
