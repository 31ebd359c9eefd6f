/* SPDX-License-Identifier: Apache-2.0 */
/* Message shapes of docs/protocol.md: decoding with validation, encoders. */
#include <string.h>

#include "msg.h"

void ipc_msg_free(ipc_msg_t *m)
{
    if (!m)
        return;
    if (m->zone)
        msgpack_zone_free(m->zone);
    free(m->raw);
    free(m);
}

static char *zone_strdup(msgpack_zone *z, const msgpack_object *o)
{
    char *s = msgpack_zone_malloc(z, o->via.str.size + 1);
    if (!s)
        return NULL;
    memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = 0;
    return s;
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, __VA_ARGS__);                               \
        goto fail;                                                                                 \
    } while (0)

int ipc_msg_decode(uint8_t *raw, size_t len, const berth_mp_limits_t *lim, ipc_msg_t **out,
                   uint32_t *msgid_out, bool *have_msgid, berth_error_t **err)
{
    *have_msgid = false;
    ipc_msg_t *m = calloc(1, sizeof(*m));
    if (!m) {
        free(raw);
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    m->raw = raw;
    m->raw_len = len;
    if (berth_mp_unpack(raw, len, lim, &m->zone, &m->root, err) < 0) {
        /* Still answer a request whose body broke the limits: peek its msgid
         * (fixarray of 4, type 0, then a uint of up to 32 bits). */
        if (len >= 3 && raw[0] == 0x94 && raw[1] == 0x00) {
            const uint8_t *q = raw + 2;
            size_t left = len - 2;
            if (q[0] <= 0x7f) {
                *msgid_out = q[0];
                *have_msgid = true;
            } else if (q[0] == 0xcc && left >= 2) {
                *msgid_out = q[1];
                *have_msgid = true;
            } else if (q[0] == 0xcd && left >= 3) {
                *msgid_out = (uint32_t)q[1] << 8 | q[2];
                *have_msgid = true;
            } else if (q[0] == 0xce && left >= 5) {
                *msgid_out =
                    (uint32_t)q[1] << 24 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 8 | q[4];
                *have_msgid = true;
            }
        }
        goto fail;
    }
    const msgpack_object *r = &m->root;
    if (r->type != MSGPACK_OBJECT_ARRAY)
        BAD("malformed message: not an array");
    const msgpack_object *a = r->via.array.ptr;
    uint32_t n = r->via.array.size;
    if (n < 1 || a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        BAD("malformed message: missing message type");
    switch (a[0].via.u64) {
    case IPC_REQUEST:
        if (n >= 2 && a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[1].via.u64 <= UINT32_MAX) {
            *msgid_out = (uint32_t)a[1].via.u64;
            *have_msgid = true;
        }
        if (n != 4)
            BAD("malformed request: expected 4 elements, got %u", n);
        if (!*have_msgid)
            BAD("malformed request: msgid must be a uint32");
        if (a[2].type != MSGPACK_OBJECT_STR || a[2].via.str.size == 0 || a[2].via.str.size > 256 ||
            memchr(a[2].via.str.ptr, 0, a[2].via.str.size))
            BAD("malformed request: method must be a non-empty string");
        if (a[3].type != MSGPACK_OBJECT_MAP)
            BAD("malformed request: params must be a map");
        m->type = IPC_REQUEST;
        m->msgid = *msgid_out;
        m->method = zone_strdup(m->zone, &a[2]);
        m->params = &a[3];
        break;
    case IPC_RESPONSE:
        if (n != 4 || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[1].via.u64 > UINT32_MAX)
            BAD("malformed response");
        m->type = IPC_RESPONSE;
        m->msgid = (uint32_t)a[1].via.u64;
        if (a[2].type == MSGPACK_OBJECT_NIL) {
            m->result = &a[3];
        } else if (a[2].type == MSGPACK_OBJECT_MAP) {
            m->error = &a[2];
            const msgpack_object *c = berth_mp_get(&a[2], "code");
            const msgpack_object *msg = berth_mp_get(&a[2], "message");
            if (!c || c->type != MSGPACK_OBJECT_STR)
                BAD("malformed response: error without a code");
            m->code = berth_code_parse(c->via.str.ptr, c->via.str.size);
            if (msg && msg->type == MSGPACK_OBJECT_STR)
                m->message = zone_strdup(m->zone, msg);
            else
                m->message = "";
            m->result = &a[3];
        } else {
            BAD("malformed response: error must be nil or a map");
        }
        break;
    case IPC_NOTIFY:
        if (n != 3)
            BAD("malformed notification: expected 3 elements, got %u", n);
        if (a[1].type != MSGPACK_OBJECT_STR || a[1].via.str.size == 0 || a[1].via.str.size > 256 ||
            memchr(a[1].via.str.ptr, 0, a[1].via.str.size))
            BAD("malformed notification: method must be a non-empty string");
        if (a[2].type != MSGPACK_OBJECT_MAP)
            BAD("malformed notification: params must be a map");
        m->type = IPC_NOTIFY;
        m->method = zone_strdup(m->zone, &a[1]);
        m->params = &a[2];
        break;
    default:
        BAD("malformed message: unknown message type %llu", (unsigned long long)a[0].via.u64);
    }
    if ((m->type != IPC_RESPONSE && !m->method))
        BAD("out of memory");
    *out = m;
    return 0;
fail:
    ipc_msg_free(m);
    return -1;
}

void ipc_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint8(pk, 0);
    msgpack_pack_uint32(pk, msgid);
    berth_mp_pack_str(pk, method);
}

void ipc_pack_response_ok_head(msgpack_packer *pk, uint32_t msgid)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint8(pk, 1);
    msgpack_pack_uint32(pk, msgid);
    msgpack_pack_nil(pk);
}

void ipc_pack_response_error(msgpack_packer *pk, uint32_t msgid, berth_code_t code,
                             const char *message)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint8(pk, 1);
    msgpack_pack_uint32(pk, msgid);
    msgpack_pack_map(pk, 2);
    berth_mp_kv_str(pk, "code", berth_code_name(code));
    berth_mp_kv_str(pk, "message", message ? message : "");
    msgpack_pack_nil(pk);
}

void ipc_pack_notify_head(msgpack_packer *pk, const char *method)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, 2);
    berth_mp_pack_str(pk, method);
}

static void side(msgpack_packer *pk, bool from_server)
{
    berth_mp_kv_str(pk, "side", from_server ? "server" : "caller");
}

void ipc_pack_stream_head(msgpack_packer *pk, uint32_t id, bool from_server)
{
    ipc_pack_notify_head(pk, "$stream");
    msgpack_pack_map(pk, 3);
    berth_mp_kv_u64(pk, "id", id);
    side(pk, from_server);
    berth_mp_pack_str(pk, "data");
}

void ipc_pack_stream_end(msgpack_packer *pk, uint32_t id, bool from_server)
{
    ipc_pack_notify_head(pk, "$stream.end");
    msgpack_pack_map(pk, 2);
    berth_mp_kv_u64(pk, "id", id);
    side(pk, from_server);
}

void ipc_pack_ack(msgpack_packer *pk, uint32_t id, uint32_t n, bool from_server)
{
    ipc_pack_notify_head(pk, "$ack");
    msgpack_pack_map(pk, 3);
    berth_mp_kv_u64(pk, "id", id);
    berth_mp_kv_u64(pk, "n", n);
    side(pk, from_server);
}

void ipc_pack_cancel(msgpack_packer *pk, uint32_t id)
{
    ipc_pack_notify_head(pk, "$cancel");
    msgpack_pack_map(pk, 2);
    berth_mp_kv_u64(pk, "id", id);
    side(pk, false);
}

int ipc_stream_fields(const ipc_msg_t *m, uint32_t *id, bool *from_server, uint32_t *n,
                      const msgpack_object **data, berth_error_t **err)
{
    uint64_t v = UINT64_MAX;
    if (berth_mp_get_u64(m->params, "id", &v, err) != 0 || v > UINT32_MAX)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s: id must be a uint32", m->method);
    *id = (uint32_t)v;
    const msgpack_object *s = berth_mp_get(m->params, "side");
    bool cancel = strcmp(m->method, "$cancel") == 0;
    if (cancel) {
        *from_server = false;
    } else if (berth_mp_str_eq(s, "server")) {
        *from_server = true;
    } else if (berth_mp_str_eq(s, "caller")) {
        *from_server = false;
    } else {
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "%s: side must be \"caller\" or \"server\"", m->method);
    }
    *n = 0;
    if (strcmp(m->method, "$ack") == 0) {
        uint64_t k = 0;
        if (berth_mp_get_u64(m->params, "n", &k, err) != 0 || k > UINT32_MAX || k == 0)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "$ack: n must be a positive uint32");
        *n = (uint32_t)k;
    }
    if (data) {
        *data = NULL;
        if (strcmp(m->method, "$stream") == 0) {
            *data = berth_mp_get(m->params, "data");
            if (!*data)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "$stream: missing data");
        }
    }
    return 0;
}
