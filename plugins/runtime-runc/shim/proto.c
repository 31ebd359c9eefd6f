/* SPDX-License-Identifier: Apache-2.0 */
/* Frame buffers, message packing and a blocking client for the shim
 * protocol (see proto.h). No event loop. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "berth/common.h"
#include "proto.h"

void shim_buf_free(shim_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

int shim_buf_put(shim_buf_t *b, const void *p, size_t n)
{
    if (b->off && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + n > b->cap) {
        /* Compact before growing. */
        if (b->off) {
            memmove(b->data, b->data + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t nc = b->cap ? b->cap : 512;
            while (nc < b->len + n)
                nc *= 2;
            uint8_t *d = realloc(b->data, nc);
            if (!d)
                return -1;
            b->data = d;
            b->cap = nc;
        }
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void shim_buf_consume(shim_buf_t *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) {
        b->off = b->len = 0;
        /* Idle connections give their memory back. */
        if (b->cap > 4096) {
            free(b->data);
            b->data = NULL;
            b->cap = 0;
        }
    }
}

int shim_buf_put_frame(shim_buf_t *b, const void *body, size_t len)
{
    uint8_t h[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    if (shim_buf_put(b, h, 4) < 0 || shim_buf_put(b, body, len) < 0)
        return -1;
    return 0;
}

int shim_buf_take_frame(shim_buf_t *b, uint32_t max, uint8_t **payload, size_t *len,
                        berth_error_t **err)
{
    size_t avail = shim_buf_avail(b);
    if (avail < 4)
        return 0;
    const uint8_t *h = shim_buf_head(b);
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (n == 0 || n > max)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "frame length %u out of range", n);
    if (avail < 4 + (size_t)n)
        return 0;
    uint8_t *p = malloc(n);
    if (!p)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(p, h + 4, n);
    shim_buf_consume(b, 4 + (size_t)n);
    *payload = p;
    *len = n;
    return 1;
}

void shim_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 0);
    msgpack_pack_uint32(pk, msgid);
    berth_mp_pack_str(pk, method);
}

void shim_pack_response_ok_head(msgpack_packer *pk, uint32_t msgid)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 1);
    msgpack_pack_uint32(pk, msgid);
    msgpack_pack_nil(pk);
}

void shim_pack_response_err(msgpack_packer *pk, uint32_t msgid, berth_code_t code, const char *msg)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 1);
    msgpack_pack_uint32(pk, msgid);
    msgpack_pack_map(pk, 2);
    berth_mp_kv_str(pk, "code", berth_code_name(code));
    berth_mp_kv_str(pk, "message", msg);
    msgpack_pack_nil(pk);
}

void shim_pack_stream_head(msgpack_packer *pk, uint32_t id)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_int(pk, 2);
    berth_mp_pack_str(pk, "$stream");
    msgpack_pack_map(pk, 3);
    berth_mp_kv_u64(pk, "id", id);
    berth_mp_kv_str(pk, "side", "server");
    berth_mp_pack_str(pk, "data");
}

/* ---- blocking client ------------------------------------------------------- */

int shim_client_connect(shim_client_t *c, const char *path, berth_error_t **err)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->next_id = 1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "socket path %s is too long", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return berth_error_errno(err, errno, "socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return berth_error_set(
            err, e == ENOENT || e == ECONNREFUSED ? BERTH_E_UNAVAILABLE : berth_code_from_errno(e),
            "connect %s: %s", path, strerror(e));
    }
    c->fd = fd;
    return 0;
}

static void drop_msg(shim_client_t *c)
{
    if (c->zone)
        msgpack_zone_free(c->zone);
    free(c->raw);
    c->zone = NULL;
    c->raw = NULL;
}

void shim_client_close(shim_client_t *c)
{
    drop_msg(c);
    shim_buf_free(&c->in);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int shim_client_send(shim_client_t *c, const char *method, const void *params, size_t len,
                     uint32_t *msgid, berth_error_t **err)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint32_t id = c->next_id++;
    shim_pack_request_head(&pk, id, method);
    if (params && len)
        msgpack_sbuffer_write(&sb, params, len);
    else
        msgpack_pack_map(&pk, 0);
    uint8_t h[4] = {(uint8_t)(sb.size >> 24), (uint8_t)(sb.size >> 16), (uint8_t)(sb.size >> 8),
                    (uint8_t)sb.size};
    int r = write_all(c->fd, h, 4) < 0 || write_all(c->fd, (uint8_t *)sb.data, sb.size) < 0;
    int e = errno;
    msgpack_sbuffer_destroy(&sb);
    if (r)
        return berth_error_errno(err, e, "send %s to the shim", method);
    if (msgid)
        *msgid = id;
    return 0;
}

/* Reads the next message into c->msg. */
static int next_msg(shim_client_t *c, int timeout_ms, berth_error_t **err)
{
    drop_msg(c);
    for (;;) {
        size_t len = 0;
        int r = shim_buf_take_frame(&c->in, SHIM_MAX_FRAME, &c->raw, &len, err);
        if (r < 0)
            return -1;
        if (r == 1) {
            if (berth_mp_unpack(c->raw, len, &berth_mp_default_limits, &c->zone, &c->msg, err) < 0)
                return -1;
            if (c->msg.type != MSGPACK_OBJECT_ARRAY || c->msg.via.array.size < 3)
                return berth_error_set(err, BERTH_E_INTERNAL, "malformed message from the shim");
            return 0;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            return berth_error_set(err, BERTH_E_DEADLINE_EXCEEDED,
                                   "the shim did not answer in time");
        uint8_t buf[16384];
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return berth_error_set(err, BERTH_E_UNAVAILABLE, "the shim closed the connection");
        if (shim_buf_put(&c->in, buf, (size_t)n) < 0)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
}

int shim_client_wait(shim_client_t *c, uint32_t msgid, int timeout_ms,
                     const msgpack_object **result, const msgpack_object **stream,
                     berth_error_t **err)
{
    for (;;) {
        if (next_msg(c, timeout_ms, err) < 0)
            return -1;
        const msgpack_object *a = c->msg.via.array.ptr;
        if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            continue;
        if (a[0].via.u64 == 2 && stream && berth_mp_str_eq(&a[1], "$stream")) {
            uint64_t id = 0;
            if (berth_mp_get_u64(&a[2], "id", &id, NULL) == 0 && id == msgid) {
                *stream = berth_mp_get(&a[2], "data");
                return 1;
            }
            continue;
        }
        if (a[0].via.u64 != 1 || c->msg.via.array.size != 4 ||
            a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[1].via.u64 != msgid)
            continue;
        if (a[2].type != MSGPACK_OBJECT_NIL) {
            const char *code = "internal", *m = "error";
            size_t cl = 8, ml = 5;
            berth_mp_get_str(&a[2], "code", &code, &cl, NULL);
            berth_mp_get_str(&a[2], "message", &m, &ml, NULL);
            return berth_error_set(err, berth_code_parse(code, cl), "%.*s", (int)ml, m);
        }
        if (result)
            *result = &a[3];
        return 0;
    }
}

int shim_client_call(shim_client_t *c, const char *method, const void *params, size_t len,
                     int timeout_ms, const msgpack_object **result, berth_error_t **err)
{
    uint32_t id;
    if (shim_client_send(c, method, params, len, &id, err) < 0)
        return -1;
    return shim_client_wait(c, id, timeout_ms, result, NULL, err);
}
