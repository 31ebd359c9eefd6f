/* SPDX-License-Identifier: Apache-2.0 */
/* The shim's side of the berth protocol without libuv: frame buffers,
 * message packing, and a small blocking client (tests, recovery tools).
 * Same wire format as everywhere else: 4-byte big-endian length + one
 * msgpack message, [0,id,method,params] / [1,id,err,result] / [2,method,params]. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"
#include "berth/mp.h"

#define SHIM_MAX_FRAME (4u * 1024 * 1024)

typedef struct {
    uint8_t *data;
    size_t off; /* consumed prefix */
    size_t len; /* valid bytes (including the consumed prefix) */
    size_t cap;
} shim_buf_t;

void shim_buf_free(shim_buf_t *b);
int shim_buf_put(shim_buf_t *b, const void *p, size_t n);
static inline size_t shim_buf_avail(const shim_buf_t *b)
{
    return b->len - b->off;
}
static inline const uint8_t *shim_buf_head(const shim_buf_t *b)
{
    return b->data + b->off;
}
void shim_buf_consume(shim_buf_t *b, size_t n);
/** Appends a frame header and body. */
int shim_buf_put_frame(shim_buf_t *b, const void *body, size_t len);
/** Takes the next complete frame: 1 with *payload malloc'd (caller frees),
 * 0 if more bytes are needed, -1 on a bad length (error set). */
int shim_buf_take_frame(shim_buf_t *b, uint32_t max, uint8_t **payload, size_t *len,
                        berth_error_t **err);

/* Packing: each packs one complete message; the caller packs the tail. */
void shim_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method);
void shim_pack_response_ok_head(msgpack_packer *pk, uint32_t msgid);
void shim_pack_response_err(msgpack_packer *pk, uint32_t msgid, berth_code_t code, const char *msg);
/** [2, "$stream", {id, side: "server", data: <caller packs one object>}] */
void shim_pack_stream_head(msgpack_packer *pk, uint32_t id);

/* ---- blocking client ---------------------------------------------------- */

typedef struct {
    int fd;
    uint32_t next_id;
    shim_buf_t in;
    uint8_t *raw;       /* the last message's bytes */
    msgpack_zone *zone; /* and its objects */
    msgpack_object msg;
} shim_client_t;

/** Connects to a shim socket (a filesystem path). */
int shim_client_connect(shim_client_t *c, const char *path, berth_error_t **err);
void shim_client_close(shim_client_t *c);
/** Sends a request (params: one packed map, or NULL for {}) and returns its
 * msgid. */
int shim_client_send(shim_client_t *c, const char *method, const void *params, size_t len,
                     uint32_t *msgid, berth_error_t **err);
/** Waits for the response to msgid (stream notifications for it are
 * skipped unless `stream` is non-NULL, in which case the first one is
 * returned there with 1). *result borrows until the next call. Returns 0 on
 * success, 1 for a stream chunk, -1 with the server's or a transport error. */
int shim_client_wait(shim_client_t *c, uint32_t msgid, int timeout_ms,
                     const msgpack_object **result, const msgpack_object **stream,
                     berth_error_t **err);
/** send + wait. */
int shim_client_call(shim_client_t *c, const char *method, const void *params, size_t len,
                     int timeout_ms, const msgpack_object **result, berth_error_t **err);
