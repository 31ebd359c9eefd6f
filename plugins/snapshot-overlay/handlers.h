/* SPDX-License-Identifier: Apache-2.0 */
/* Shared between main.c and handlers.c of berth-snapshot-overlay: the plugin
 * state (owned by the loop thread) and the method table. */
#pragma once

#include "berth/plugin.h"
#include "internal.h"

#define OVERLAY_DEFAULT_MAX_UNCOMPRESSED (64ull << 30)
#define OVERLAY_DEFAULT_RESERVE (256ull << 20)
#define OVERLAY_DEFAULT_UNLOAD_IDLE_MS 30000

typedef struct {
    berth_plugin_t *p;
    overlay_store_t *store; /* used from worker threads: every call is independent */
    uint64_t max_uncompressed;
    uint64_t reserve;
    bool sandbox;
    int lock_fd;
    /* Snapshot ids with an apply, commit or remove in flight (loop thread). */
    char **busy;
    size_t n_busy, cap_busy;
    /* The extraction library (module.h): found at init, loaded on demand. */
    char module_path[4096];
    bool module_preload_started; /* loop thread */
    /* Unload the library after this long without an apply (0 = never). */
    uint64_t unload_idle_ms;
} overlay_plugin_t;

extern const berth_method_t overlay_methods[];

/** Finds berth-snapshot-overlay-apply.so next to the executable or in the
 * install directory; fails (naming the paths) when it is missing. */
int overlay_module_find(overlay_plugin_t *op, berth_error_t **err);
extern const size_t overlay_n_methods;

/** Parses and validates the plugin's config section into op (unknown keys
 * are an error naming the key). */
int overlay_config_parse(overlay_plugin_t *op, overlay_store_opts_t *so, const msgpack_object *cfg,
                         berth_error_t **err);
