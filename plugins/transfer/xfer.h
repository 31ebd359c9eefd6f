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

/* Leases for reading blobs by path: content.path answers only a caller whose
 * request `lease` holds the digest (the gc keeps what a lease holds, so the
 * file stays while it is read). Pull and import write their blobs under
 * their lease (content.write joins it, also for a blob that was there);
 * push, export and images.unpack read blobs they did not write, so they add
 * them to a lease first. */

/** Lifetime of the leases push and export create: long enough for a slow
 * transfer; if transfer dies, the lease expires and gc drops it. */
#define XFER_READ_LEASE_TTL_NS (24LL * 3600 * 1000000000LL)

/** leases.create {expire: now + ttl_ns} in ns. cb gets the new lease id
 * (malloc'd, the caller's) or an error. Returns 0, or -1 with *err (cb never
 * runs). */
typedef void (*xfer_lease_created_cb)(const berth_error_t *err, char *lease, void *ud);
int xfer_lease_create(const char *ns, int64_t ttl_ns, xfer_lease_created_cb cb, void *ud,
                      berth_error_t **err);
/** Adds the blobs (duplicates skipped) to the lease with leases.add_resource
 * (idempotent), up to 32 calls in flight: they reach metadata together and
 * share its write transactions (one or two commits for an image). cb gets
 * the first error. Returns 0 (cb runs later), 1 when there is nothing to add
 * (cb never runs), or -1 with *err (cb never runs). */
typedef void (*xfer_lease_done_cb)(const berth_error_t *err, void *ud);
int xfer_lease_add_blobs(const char *ns, const char *lease, char *const *digests, size_t n,
                         xfer_lease_done_cb cb, void *ud, berth_error_t **err);
/** leases.delete; cb (may be NULL) runs when it is done, failed (logged) or
 * could not be sent (then before this returns). */
void xfer_lease_delete(const char *ns, const char *lease, void (*cb)(void *ud), void *ud);

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
