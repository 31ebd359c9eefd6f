/* SPDX-License-Identifier: Apache-2.0 */
/* libberth: a small blocking client for berth.sock (the CLI, scripts,
 * benchmarks). One outstanding call at a time per client; for concurrency
 * open several clients or use the pipelined API. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>

#include "berth/common.h"
#include "berth/error.h"
#include "berth/mp.h"

typedef struct berth_client_s berth_client_t;

/** Connects to a berth socket; connect_timeout_ms 0 = 5 s. Caller frees with
 * berth_client_free(). The error says what to do when the daemon is absent. */
berth_client_t *berth_client_connect(const char *path, uint32_t connect_timeout_ms,
                                     berth_error_t **err);
void berth_client_free(berth_client_t *c);
int berth_client_fd(berth_client_t *c);

/** A result borrowed from the client: valid until the next call on the same
 * client or berth_client_free. */
typedef struct {
    const msgpack_object *result;
} berth_result_t;

/** Called for each `$stream` chunk the server sends; data NULL at
 * `$stream.end`. Return non-zero to cancel the call (a `$cancel` is sent and
 * the call ends with `canceled`). */
typedef int (*berth_client_stream_cb)(const msgpack_object *data, void *user);
/** Called when the client may send upload chunks (streams from caller to
 * server): pack at most `credit` chunks with berth_client_send_chunk();
 * return 1 when the upload is finished (the client sends `$stream.end`), 0 to
 * be called again when credit returns, -1 to cancel. */
typedef int (*berth_client_upload_cb)(berth_client_t *c, unsigned credit, void *user);

/** Sends a request and waits for its response. `params` is one packed map
 * (may be NULL for {}). timeout_ms 0 = none. On success *out borrows the
 * result. Returns 0 or -1 with *err (the server's error, or a transport
 * error). Streams: stream_cb gets downloads, upload_cb produces uploads. */
int berth_client_call(berth_client_t *c, const char *method, const void *params,
                      size_t params_len, uint32_t timeout_ms, berth_client_stream_cb stream_cb,
                      berth_client_upload_cb upload_cb, void *user, berth_result_t *out,
                      berth_error_t **err);
/** Inside an upload_cb: queue one chunk of bytes. */
int berth_client_send_chunk(berth_client_t *c, const void *p, size_t n);
/** Inside an upload_cb or stream_cb: queue one chunk of any packed object. */
int berth_client_send_chunk_obj(berth_client_t *c, const void *packed, size_t n);

/** Asks the running call to be cancelled (e.g. from a SIGINT handler flag
 * checked by the caller: safe to call from a signal handler). */
void berth_client_interrupt(berth_client_t *c);

/** Pipelined unary calls for benchmarks: sends `n` requests back to back and
 * waits for all responses. Returns the number that failed. */
int berth_client_pipeline(berth_client_t *c, const char *method, const void *params,
                          size_t params_len, size_t n, size_t depth, berth_error_t **err);
