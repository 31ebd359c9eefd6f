/* SPDX-License-Identifier: Apache-2.0 */
/* Incremental frame decoder: 4-byte big-endian length, then the payload.
 * The payload buffer is allocated only once the length passed its limit. */
#include <string.h>

#include "frame.h"

void ipc_framer_init(ipc_framer_t *f, uint32_t max_frame)
{
    memset(f, 0, sizeof(*f));
    f->max_frame = max_frame ? max_frame : IPC_DEFAULT_MAX_FRAME;
}

void ipc_framer_destroy(ipc_framer_t *f)
{
    free(f->body);
    f->body = NULL;
}

void ipc_frame_header(uint8_t out[4], uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
}

int ipc_framer_feed(ipc_framer_t *f, const uint8_t *buf, size_t len,
                    int (*cb)(uint8_t *payload, size_t len, void *data), void *data,
                    berth_error_t **err)
{
    while (len > 0) {
        if (!f->body) {
            size_t take = 4 - f->hdr_have;
            if (take > len)
                take = len;
            memcpy(f->hdr + f->hdr_have, buf, take);
            f->hdr_have += take;
            buf += take;
            len -= take;
            if (f->hdr_have < 4)
                return 0;
            uint32_t n = ((uint32_t)f->hdr[0] << 24) | ((uint32_t)f->hdr[1] << 16) |
                         ((uint32_t)f->hdr[2] << 8) | f->hdr[3];
            if (n == 0)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "malformed frame: zero length");
            if (n > f->max_frame)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "frame of %u bytes exceeds the limit of %u bytes", n,
                                       f->max_frame);
            f->body = malloc(n);
            if (!f->body)
                return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory for a %u-byte frame", n);
            f->need = n;
            f->have = 0;
        }
        size_t take = f->need - f->have;
        if (take > len)
            take = len;
        memcpy(f->body + f->have, buf, take);
        f->have += take;
        buf += take;
        len -= take;
        if (f->have == f->need) {
            uint8_t *p = f->body;
            size_t n = f->need;
            f->body = NULL;
            f->hdr_have = 0;
            f->need = f->have = 0;
            if (cb(p, n, data))
                return 1;
        }
    }
    return 0;
}
