/* SPDX-License-Identifier: Apache-2.0 */
/* Shared between main.c and handlers.c of berth-content: the plugin state and
 * the method table. */
#pragma once

#include "berth/plugin.h"
#include "store.h"

typedef struct {
    berth_plugin_t *p;
    content_store_t *store; /* used from worker threads; thread-safe */
    uint64_t sync_bytes;
    bool direct_io;
    int lock_fd; /* flock on <root>/content/LOCK */
    bool stopping;
} content_plugin_t;

extern const berth_method_t content_methods[];
extern const size_t content_n_methods;

/** Parses and validates the plugin's config section (unknown keys are an
 * error naming the key). */
int content_config_parse(content_plugin_t *cp, const msgpack_object *cfg, berth_error_t **err);
