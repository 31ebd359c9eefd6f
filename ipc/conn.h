/* SPDX-License-Identifier: Apache-2.0 */
/* A framed message connection on a libuv stream (unix socket or socketpair).
 * It decodes frames into messages and queues writes with a byte limit; it
 * knows nothing about request correlation (the core routes raw messages; the
 * SDK builds calls and streams on top). Single-threaded: use from its loop. */
#pragma once

#include <stdbool.h>
#include <uv.h>

#include "frame.h"
#include "msg.h"

typedef struct ipc_conn_s ipc_conn_t;

typedef struct {
    /** A decoded message; the callee owns `m` (free with ipc_msg_free). */
    void (*on_message)(ipc_conn_t *c, ipc_msg_t *m, void *data);
    /** A frame that did not decode: by protocol the conn answers
     * invalid_argument when it knows the msgid, then closes. Optional hook for
     * logging. */
    void (*on_protocol_error)(ipc_conn_t *c, const berth_error_t *err, void *data);
    /** The connection is closed (peer EOF, error, or ipc_conn_close). Called
     * once; the conn is freed right after this returns. */
    void (*on_close)(ipc_conn_t *c, void *data);
} ipc_conn_cbs_t;

typedef struct {
    uint32_t max_frame;       /* default 16 MiB */
    size_t max_write_queue;   /* default 64 MiB; over it the conn is closed */
    berth_mp_limits_t limits; /* decoding limits */
} ipc_conn_opts_t;

void ipc_conn_opts_default(ipc_conn_opts_t *o);

/** Wraps an fd (socket) into a connection and starts reading. Takes the fd. */
ipc_conn_t *ipc_conn_open_fd(uv_loop_t *loop, int fd, const ipc_conn_opts_t *opts,
                             const ipc_conn_cbs_t *cbs, void *data, berth_error_t **err);
/** Wraps an already-initialised, connected uv_pipe_t (e.g. from accept). The
 * conn takes the handle (it must have been malloc'd) and closes/frees it. */
ipc_conn_t *ipc_conn_wrap_pipe(uv_pipe_t *pipe, const ipc_conn_opts_t *opts,
                               const ipc_conn_cbs_t *cbs, void *data);

/** Queues one message (payload without frame header). Copies the bytes.
 * `urgent` puts it before queued bulk data (control frames). Returns 0, or
 * -1 if the conn is closing or the queue limit was passed (the conn is then
 * being closed). */
int ipc_conn_send(ipc_conn_t *c, const void *payload, size_t len, bool urgent);
/** Convenience: sends the contents of an sbuffer. */
int ipc_conn_send_sbuf(ipc_conn_t *c, const msgpack_sbuffer *sb, bool urgent);

/** Bytes queued and not yet written. */
size_t ipc_conn_write_queue(const ipc_conn_t *c);
/** Called whenever the write queue drains to empty (optional). */
void ipc_conn_set_drain_cb(ipc_conn_t *c, void (*cb)(ipc_conn_t *c, void *data));

/** Starts closing: pending writes are flushed first when `flush` is true.
 * on_close runs later from the loop. Safe to call more than once. */
void ipc_conn_close(ipc_conn_t *c, bool flush);
bool ipc_conn_closing(const ipc_conn_t *c);

void *ipc_conn_data(const ipc_conn_t *c);
void ipc_conn_set_data(ipc_conn_t *c, void *data);
/** Pauses/resumes reading (never used by the core on plugin conns). */
void ipc_conn_read_stop(ipc_conn_t *c);
void ipc_conn_read_start(ipc_conn_t *c);
/** The peer's credentials (SO_PEERCRED); -1 if unavailable. */
int ipc_conn_peercred(ipc_conn_t *c, pid_t *pid, uid_t *uid, gid_t *gid);
int ipc_conn_fd(const ipc_conn_t *c);
