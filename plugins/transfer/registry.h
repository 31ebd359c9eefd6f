/* SPDX-License-Identifier: Apache-2.0 */
/* The registry HTTP client: libcurl's multi interface driven by the plugin's
 * libuv loop (uv_poll per socket, one uv_timer), and registry requests on top
 * with host fallback, token/basic auth, manual redirects (≤ 10, credentials
 * only to the registry host), retries with backoff and Range resume.
 * Loop-thread only. */
#pragma once

#include <curl/curl.h>
#include <uv.h>

#include "internal.h"

typedef struct xfer_http_s xfer_http_t;
typedef struct xfer_reg_s xfer_reg_t;
typedef struct xfer_rreq_s xfer_rreq_t;

xfer_http_t *xfer_http_new(uv_loop_t *loop, const xfer_settings_t *s, berth_error_t **err);
/** Stops every transfer and frees the client (handles close asynchronously). */
void xfer_http_free(xfer_http_t *h);

/** A session with one repository of one registry, for one capability. The
 * strings are copied. Reference counted: requests hold a reference. */
xfer_reg_t *xfer_reg_new(xfer_http_t *h, const xfer_settings_t *s, const char *domain,
                         const char *repo, unsigned cap, bool plain_http, bool skip_verify,
                         const char *user, const char *password, berth_error_t **err);
void xfer_reg_unref(xfer_reg_t *r);
const char *xfer_reg_repo(const xfer_reg_t *r);
const char *xfer_reg_domain(const xfer_reg_t *r);
/** The base URL of the host that last answered successfully (for pushes and
 * to keep blob fetches on the host that resolved). */
void xfer_reg_prefer_host(xfer_reg_t *r, size_t i);
size_t xfer_reg_host_index(const xfer_reg_t *r);
/** Adds "repository:<repo>:pull" for cross-repo mounts. */
void xfer_reg_add_scope(xfer_reg_t *r, const char *scope);

typedef struct {
    /** Final 2xx response headers are known; before any body byte. Return 0
     * or -1 with *err to abort the request. */
    int (*on_start)(xfer_rreq_t *q, long status, void *ud, berth_error_t **err);
    /** Body bytes of a 2xx response. Return n, CURL_WRITEFUNC_PAUSE, or call
     * xfer_rreq_abort() and return 0. */
    size_t (*on_data)(xfer_rreq_t *q, const char *p, size_t n, void *ud);
    /** Before each new attempt: the offset to resume from (Range). NULL = 0. */
    uint64_t (*resume_offset)(xfer_rreq_t *q, void *ud);
    /** Exactly once; err NULL on success. The request is freed after. */
    void (*on_done)(xfer_rreq_t *q, const berth_error_t *err, void *ud);
} xfer_rreq_cbs_t;

typedef struct {
    const char *method; /* "GET" (default), "HEAD", "PUT", "POST", "PATCH" */
    const char *path;   /* "/v2/<repo>/..." relative to the registry host */
    const char *url;    /* or an absolute URL (upload locations) */
    const char *accept;
    const char *content_type;
    const void *body; /* PUT/POST body from memory (borrowed until done) */
    size_t body_len;
    const char *upload_path; /* or the body from a file (content.path) */
    uint64_t upload_size;
    bool no_fallback;     /* do not try the next host on 404/errors */
    bool no_retry_status; /* treat 5xx as final (uploads that are not idempotent) */
    const char *what;     /* for messages: "manifest sha256:..." */
} xfer_rreq_opts_t;

/** Starts a request. Returns NULL with *err only on immediate failure
 * (callbacks then never run). */
xfer_rreq_t *xfer_rreq_start(xfer_reg_t *r, const xfer_rreq_opts_t *o, const xfer_rreq_cbs_t *cbs,
                             void *ud, berth_error_t **err);
/** Cancels: on_done runs later with `canceled`. */
void xfer_rreq_cancel(xfer_rreq_t *q);
/** From on_data/on_start: fail the request with err (taken). */
void xfer_rreq_abort(xfer_rreq_t *q, berth_error_t **err);
void xfer_rreq_unpause(xfer_rreq_t *q);
long xfer_rreq_status(const xfer_rreq_t *q);
/** Response header (lower-case name) of the final attempt, or NULL:
 * "content-type", "docker-content-digest", "location", "content-length". */
const char *xfer_rreq_header(const xfer_rreq_t *q, const char *name);
/** The URL of the final attempt (after redirects). */
const char *xfer_rreq_url(const xfer_rreq_t *q);

/** GET into memory, capped at max bytes. */
typedef void (*xfer_mem_cb)(const berth_error_t *err, const char *data, size_t len,
                            const char *content_type, const char *docker_digest, void *ud);
xfer_rreq_t *xfer_reg_get_mem(xfer_reg_t *r, const char *path, const char *accept, size_t max,
                              const char *what, bool no_fallback, xfer_mem_cb cb, void *ud,
                              berth_error_t **err);
