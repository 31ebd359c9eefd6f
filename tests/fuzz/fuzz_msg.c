/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: the frame decoder and message decoder on arbitrary bytes,
 * plus the stream-control field reader on whatever decodes. */
#include <stdint.h>
#include <string.h>

#include "frame.h"
#include "msg.h"

static int on_frame(uint8_t *payload, size_t len, void *data)
{
    ipc_msg_t *m = NULL;
    uint32_t id;
    bool have;
    berth_error_t *err = NULL;
    if (ipc_msg_decode(payload, len, NULL, &m, &id, &have, &err) == 0) {
        if (m->type == IPC_NOTIFY && m->method[0] == '$') {
            uint32_t sid, n;
            bool srv;
            const msgpack_object *d;
            ipc_stream_fields(m, &sid, &srv, &n, &d, &err);
        }
        ipc_msg_free(m);
    }
    berth_error_free(&err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* As frames: */
    ipc_framer_t f;
    ipc_framer_init(&f, 1 << 20);
    berth_error_t *err = NULL;
    ipc_framer_feed(&f, data, size, on_frame, NULL, &err);
    berth_error_free(&err);
    ipc_framer_destroy(&f);
    /* As a bare payload: */
    if (size > 0) {
        uint8_t *copy = malloc(size);
        memcpy(copy, data, size);
        on_frame(copy, size, NULL);
    }
    return 0;
}
