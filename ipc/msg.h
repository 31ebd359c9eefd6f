/* SPDX-License-Identifier: Apache-2.0 */
/* Protocol messages (docs/protocol.md): decode a frame payload into a
 * validated message, and encode requests, responses and notifications. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>

#include "berth/error.h"
#include "berth/mp.h"

typedef enum {
    IPC_REQUEST = 0,
    IPC_RESPONSE = 1,
    IPC_NOTIFY = 2,
} ipc_msg_type_t;

/** A decoded message. Objects point into `raw` and `zone`, both owned by the
 * message: valid until ipc_msg_free(). */
typedef struct ipc_msg_s {
    ipc_msg_type_t type;
    uint32_t msgid;              /* request, response */
    const char *method;          /* request, notify: NUL-terminated copy in zone */
    const msgpack_object *params; /* request, notify: always a map */
    const msgpack_object *error; /* response: NULL when the response succeeded */
    const msgpack_object *result; /* response: the result (nil when error) */
    berth_code_t code;           /* response with error: parsed code */
    const char *message;         /* response with error: NUL-terminated */
    msgpack_zone *zone;
    uint8_t *raw;
    size_t raw_len;
    msgpack_object root;
} ipc_msg_t;

/** Decodes one frame payload (taking ownership of `raw`, malloc'd, also on
 * failure). Checks the shapes of PROTOCOL.md. On error *msgid_out is set to the
 * request msgid when one could be read (else UINT32_MAX... callers check
 * *have_msgid). */
int ipc_msg_decode(uint8_t *raw, size_t len, const berth_mp_limits_t *lim, ipc_msg_t **out,
                   uint32_t *msgid_out, bool *have_msgid, berth_error_t **err);
void ipc_msg_free(ipc_msg_t *m);

/* Encoders: each appends one complete message (no frame header) to pk. */
/** Request header: packs [0, msgid, method, then the caller packs params (a map). */
void ipc_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method);
void ipc_pack_response_ok_head(msgpack_packer *pk, uint32_t msgid); /* caller packs result */
void ipc_pack_response_error(msgpack_packer *pk, uint32_t msgid, berth_code_t code,
                             const char *message);
void ipc_pack_notify_head(msgpack_packer *pk, const char *method); /* caller packs params */

/* Stream control notifications. `side` is who sends: "caller" (the id is the
 * sender's own msgid) or "server" (the id is the receiver's msgid). */
void ipc_pack_stream_head(msgpack_packer *pk, uint32_t id, bool from_server); /* caller packs data */
void ipc_pack_stream_end(msgpack_packer *pk, uint32_t id, bool from_server);
void ipc_pack_ack(msgpack_packer *pk, uint32_t id, uint32_t n, bool from_server);
void ipc_pack_cancel(msgpack_packer *pk, uint32_t id);

/** Reads the stream-control fields of a `$stream`, `$stream.end`, `$ack` or
 * `$cancel` notification: id, side (true = sent by the request's server),
 * n (for $ack, else 0) and data (for $stream, else NULL). */
int ipc_stream_fields(const ipc_msg_t *m, uint32_t *id, bool *from_server, uint32_t *n,
                      const msgpack_object **data, berth_error_t **err);
