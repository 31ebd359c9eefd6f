/* SPDX-License-Identifier: Apache-2.0 */
/* Frames: a 4-byte big-endian length N (1 <= N <= max) then N bytes holding
 * one msgpack object. The decoder is incremental and allocation-bounded. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"

#define IPC_DEFAULT_MAX_FRAME (16u * 1024 * 1024)

typedef struct {
    uint32_t max_frame;
    uint8_t hdr[4];
    size_t hdr_have;
    uint8_t *body; /* malloc'd, size need */
    size_t need;
    size_t have;
} ipc_framer_t;

void ipc_framer_init(ipc_framer_t *f, uint32_t max_frame);
void ipc_framer_destroy(ipc_framer_t *f);

/** Feeds bytes. For each complete frame calls cb(payload, len, data), handing
 * over the malloc'd payload (cb frees it). Stops and returns -1 with an
 * invalid_argument error on a zero or oversized length; returns 1 if cb asked
 * to stop (cb returned non-zero), else 0. */
int ipc_framer_feed(ipc_framer_t *f, const uint8_t *buf, size_t len,
                    int (*cb)(uint8_t *payload, size_t len, void *data), void *data,
                    berth_error_t **err);

/** Writes the 4-byte header for a payload of len bytes. */
void ipc_frame_header(uint8_t out[4], uint32_t len);
