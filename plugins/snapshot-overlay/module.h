/* SPDX-License-Identifier: Apache-2.0 */
/* The boundary between the berth-snapshot-overlay executable (SDK, store,
 * handlers) and berth-snapshot-overlay-apply.so (layer extraction: libarchive,
 * libcrypto, zlib/isa-l, zstd). handlers.c loads the library with dlopen the
 * first time a snapshot is prepared or a layer applied, so an idle plugin
 * never maps those libraries. */
#pragma once

#include "internal.h"

/* Bumped whenever this struct or the meaning of its fields changes. */
#define OVERLAY_APPLY_ABI 0x62786f01u /* "bxo" 1 */
#define OVERLAY_APPLY_SYMBOL "overlay_apply_module"
#define OVERLAY_APPLY_FILE "berth-snapshot-overlay-apply.so"

typedef struct {
    uint32_t abi;
    /** overlay_apply_global_init(): once, right after loading. */
    void (*global_init)(void);
    /** overlay_apply_snapshot(). */
    int (*apply_snapshot)(overlay_store_t *s, const char *id, const char *blob_path,
                          const char *media_type, const overlay_apply_opts_t *o,
                          overlay_apply_result_t *res, berth_error_t **err);
} overlay_apply_module_t;
