/* SPDX-License-Identifier: Apache-2.0 */
/* Loop-side declarations of berth-transfer: the plugin context, helpers for
 * calls to content/metadata, and the entry points of each operation. */
#pragma once

#include "berth/plugin.h"
#include "internal.h"
#include "registry.h"

typedef struct {
    berth_plugin_t *p;
    xfer_settings_t settings;
    xfer_http_t *http;
    xfer_platform_t host;
} xfer_ctx_t;

extern xfer_ctx_t *xfer_ctx;

/* ---- blob.c: calls to other plugins ------------------------------------- */

/** A unary call; params must be a complete packed map. The callback is the
 * SDK's. Returns 0 or -1 with *err (callback then never runs). */
int xfer_call(const char *method, berth_mpbuf_t *params, berth_call_cb cb, void *ud,
              berth_error_t **err);
/** Starts a params map with n own fields plus namespace and (if lease) lease. */
void xfer_params_begin(berth_mpbuf_t *b, uint32_t n, const char *ns, const char *lease);

/** Reads a whole blob (≤ max bytes) from the content store with content.read.
 * cb gets the bytes (borrowed for the callback) or an error. */
typedef void (*xfer_read_cb)(const berth_error_t *err, const char *data, size_t len, void *ud);
int xfer_blob_read(const char *ns, const char *digest, size_t max, xfer_read_cb cb, void *ud,
                   berth_error_t **err);

/** Writes bytes held in memory into content (content.write with expected
 * digest and size, labels k/v pairs). The bytes are copied. cb: err or
 * existed. */
typedef void (*xfer_write_cb)(const berth_error_t *err, bool existed, void *ud);
int xfer_blob_write_mem(const char *ns, const char *lease, const char *ref, const char *digest,
                        const void *data, size_t len, char *const *labels, size_t n_labels,
                        xfer_write_cb cb, void *ud, berth_error_t **err);

/** Returns freed heap pages to the kernel (malloc_trim) after a big job. */
void xfer_release_memory(void);

/** Sends a progress chunk on a request when credit allows. */
bool xfer_req_can_send(berth_req_t *r);

/* ---- operations ---------------------------------------------------------- */
void xfer_handle_pull(berth_req_t *r, const msgpack_object *params);
void xfer_handle_fetch(berth_req_t *r, const msgpack_object *params);
void xfer_handle_push(berth_req_t *r, const msgpack_object *params);
void xfer_handle_import(berth_req_t *r, const msgpack_object *params);
void xfer_handle_export(berth_req_t *r, const msgpack_object *params);
void xfer_handle_check(berth_req_t *r, const msgpack_object *params);
void xfer_handle_unpack(berth_req_t *r, const msgpack_object *params);

/* ---- unpack.c: layers → snapshots (shared by pull, import, images.unpack) */

typedef struct xfer_unpack_s xfer_unpack_t;
typedef void (*xfer_unpack_progress_cb)(size_t layer, const char *status, void *ud);
typedef void (*xfer_unpack_done_cb)(const berth_error_t *err, const char *chain_id, void *ud);
/** Unpacks the layers of a manifest (layers[i] with diff_ids[i]) into
 * snapshots named by chain id. Layers become available with
 * xfer_unpack_layer_ready(); layers already marked ready may be applied at
 * once. Takes copies. */
xfer_unpack_t *xfer_unpack_new(const char *ns, const char *lease, const xfer_desc_t *layers,
                               char *const *diff_ids, size_t n, xfer_unpack_progress_cb pcb,
                               xfer_unpack_done_cb dcb, void *ud);
void xfer_unpack_layer_ready(xfer_unpack_t *u, size_t i);
void xfer_unpack_start(xfer_unpack_t *u);
/** Stops at the next step; done_cb runs with canceled. */
void xfer_unpack_cancel(xfer_unpack_t *u);
