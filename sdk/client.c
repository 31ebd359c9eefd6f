/* SPDX-License-Identifier: Apache-2.0 */
/* libberth: the blocking client of berth/client.h. One unix socket driven by
 * poll(), no event loop: frames are queued in an output buffer and read into
 * an input buffer, and a call runs until its response arrives. Used by the
 * CLI, scripts and the benchmarks. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "berth/client.h"
#include "berth/log.h"

#define CLIENT_MAX_FRAME (16u * 1024 * 1024)
#define CLIENT_WINDOW 8u
/* After a `$cancel` the server answers `canceled`; we wait this long for
 * that answer before giving up on it (the id stays retired). */
#define CANCEL_GRACE_MS 2000u
#define READ_CHUNK (256u * 1024)

typedef struct {
    uint8_t *p;
    size_t len; /* bytes held */
    size_t off; /* bytes already consumed (read side) or written (write side) */
    size_t cap;
} buf_t;

typedef enum {
    CANCEL_NONE = 0,
    CANCEL_INTERRUPT,
    CANCEL_TIMEOUT,
    CANCEL_STREAM_CB,
    CANCEL_UPLOAD_CB,
} cancel_reason_t;

struct berth_client_s {
    int fd;
    int intr[2]; /* self-pipe written by berth_client_interrupt() */
    volatile sig_atomic_t interrupted;
    char *path;
    uint32_t next_id;
    buf_t in;
    buf_t out;
    bool broken;

    /* Result of the last call, borrowed by the caller until the next call. */
    uint8_t *res_raw;
    msgpack_zone *res_zone;
    msgpack_object res_root;

    /* The call in progress. */
    bool in_call;
    uint32_t call_id;
    unsigned credit;
    bool cancel_sent;
};

/* --- buffers ------------------------------------------------------------ */

static int buf_reserve(buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    /* Reclaim consumed bytes before growing. */
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= extra)
            return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_append(buf_t *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static void buf_free(buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Appends one frame (header + the packed message in `sb`) to the output. */
static int queue_frame(berth_client_t *c, const msgpack_sbuffer *sb)
{
    uint8_t hdr[4];
    put_be32(hdr, (uint32_t)sb->size);
    if (buf_reserve(&c->out, 4 + sb->size) < 0)
        return -1;
    buf_append(&c->out, hdr, 4);
    buf_append(&c->out, sb->data, sb->size);
    return 0;
}

/* --- errors ---------------------------------------------------------------- */

/* strerror() with a lower-case first letter, to sit inside a sentence. */
static const char *lc_strerror(int e, char *buf, size_t n)
{
    snprintf(buf, n, "%s", strerror(e));
    if (buf[0] >= 'A' && buf[0] <= 'Z')
        buf[0] = (char)(buf[0] - 'A' + 'a');
    return buf;
}

static int connect_error(berth_error_t **err, const char *path, int e)
{
    char eb[128];
    lc_strerror(e, eb, sizeof(eb));
    switch (e) {
    case ENOENT:
    case ECONNREFUSED:
        return berth_error_set(err, BERTH_E_UNAVAILABLE,
                               "cannot connect to %s: %s — is berthd running? start it with "
                               "`systemctl start berth` or `berthd`",
                               path, eb);
    case EACCES:
    case EPERM:
        return berth_error_set(err, BERTH_E_PERMISSION_DENIED,
                               "cannot connect to %s: %s — the socket is open to root and to the "
                               "group set in berthd's config; run as root or join that group",
                               path, eb);
    case ENOTSOCK:
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "cannot connect to %s: not a socket — check --address or "
                               "$BERTH_ADDRESS",
                               path);
    default:
        return berth_error_set(err, berth_code_from_errno(e), "cannot connect to %s: %s", path, eb);
    }
}

/* The connection is unusable (EOF, I/O or framing error): later calls fail
 * fast with the same kind of error. */
static int broken(berth_client_t *c, berth_error_t **err, int e, const char *method)
{
    c->broken = true;
    if (e == 0)
        return berth_error_set(err, BERTH_E_UNAVAILABLE,
                               "connection to berthd at %s closed while waiting for %s — was "
                               "berthd stopped or restarted?",
                               c->path, method ? method : "a response");
    char eb[128];
    return berth_error_set(err, BERTH_E_UNAVAILABLE, "connection to berthd at %s failed: %s",
                           c->path, lc_strerror(e, eb, sizeof(eb)));
}

/* --- connect ----------------------------------------------------------------- */

static int wait_connected(int fd, uint64_t deadline)
{
    for (;;) {
        uint64_t now = berth_mono_ms();
        if (now >= deadline)
            return ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int r = poll(&p, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            return ETIMEDOUT;
        int so = 0;
        socklen_t sl = sizeof(so);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) < 0)
            return errno;
        return so;
    }
}

berth_client_t *berth_client_connect(const char *path, uint32_t connect_timeout_ms,
                                     berth_error_t **err)
{
    if (!path || !*path) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "no socket address given (-a/--address)");
        return NULL;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "socket path %s is too long (at most %zu bytes)", path,
                        sizeof(sa.sun_path) - 1);
        return NULL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);

    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        berth_error_errno(err, errno, "cannot create a socket");
        return NULL;
    }
    uint64_t deadline = berth_mono_ms() + (connect_timeout_ms ? connect_timeout_ms : 5000);
    for (;;) {
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        int e = errno;
        if (e == EINTR)
            continue;
        if (e == EINPROGRESS) {
            e = wait_connected(fd, deadline);
            if (e == 0)
                break;
        } else if (e == EAGAIN) {
            /* A unix socket's backlog is full: the daemon is alive but busy. */
            if (berth_mono_ms() < deadline) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
                continue;
            }
            e = ETIMEDOUT;
        }
        if (e == ETIMEDOUT) {
            berth_error_set(err, BERTH_E_DEADLINE_EXCEEDED,
                            "cannot connect to %s: timed out after %u ms — berthd is not "
                            "accepting connections; check its log or raise --connect-timeout",
                            path, connect_timeout_ms ? connect_timeout_ms : 5000);
            return NULL;
        }
        connect_error(err, path, e);
        return NULL;
    }

    berth_client_t *c = calloc(1, sizeof(*c));
    if (!c) {
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    c->path = strdup(path);
    if (!c->path || pipe2(c->intr, O_CLOEXEC | O_NONBLOCK) < 0) {
        free(c->path);
        free(c);
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory or file descriptors");
        return NULL;
    }
    c->fd = steal_fd(&fd);
    c->next_id = 1;
    berth_log(BERTH_LOG_DEBUG, "msg=\"connected\" address=%s", path);
    return c;
}

static void release_result(berth_client_t *c)
{
    if (c->res_zone)
        msgpack_zone_free(c->res_zone);
    free(c->res_raw);
    c->res_zone = NULL;
    c->res_raw = NULL;
}

void berth_client_free(berth_client_t *c)
{
    if (!c)
        return;
    release_result(c);
    if (c->fd >= 0)
        close(c->fd);
    close(c->intr[0]);
    close(c->intr[1]);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c->path);
    free(c);
}

int berth_client_fd(berth_client_t *c)
{
    return c ? c->fd : -1;
}

void berth_client_interrupt(berth_client_t *c)
{
    if (!c)
        return;
    int saved = errno;
    c->interrupted = 1;
    ssize_t r = write(c->intr[1], "x", 1);
    (void)r;
    errno = saved;
}

/* --- I/O ------------------------------------------------------------------ */

/* Writes what the socket takes now. Returns 0 or an errno value. */
static int flush_out(berth_client_t *c)
{
    while (c->out.off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return errno;
        }
        c->out.off += (size_t)n;
    }
    c->out.off = c->out.len = 0;
    return 0;
}

/* Reads what is there. Returns >0 bytes read, 0 at EOF, -errno on error,
 * -EAGAIN when nothing was ready. */
static ssize_t read_in(berth_client_t *c)
{
    if (buf_reserve(&c->in, READ_CHUNK) < 0)
        return -ENOMEM;
    for (;;) {
        ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        c->in.len += (size_t)n;
        return n;
    }
}

/* Takes the next complete frame out of the input buffer: 1 with the payload
 * (borrowed until the next read_in), 0 if none is complete, -1 on a framing
 * error. */
static int next_frame(berth_client_t *c, const uint8_t **payload, size_t *len, berth_error_t **err)
{
    size_t have = c->in.len - c->in.off;
    if (have < 4)
        return 0;
    uint32_t n = be32(c->in.p + c->in.off);
    if (n == 0 || n > CLIENT_MAX_FRAME) {
        c->broken = true;
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "berthd sent a frame of %u bytes (limit %u): protocol error", n,
                               CLIENT_MAX_FRAME);
    }
    if (have - 4 < n)
        return 0;
    *payload = c->in.p + c->in.off + 4;
    *len = n;
    c->in.off += 4 + (size_t)n;
    if (c->in.off == c->in.len)
        c->in.off = c->in.len = 0;
    return 1;
}

/* --- message shapes ------------------------------------------------------------ */

typedef struct {
    int type;
    uint32_t msgid;
    const msgpack_object *method; /* str (request, notification) */
    const msgpack_object *params; /* request, notification */
    const msgpack_object *error;  /* response: NULL when ok */
    const msgpack_object *result; /* response */
} msg_view_t;

static bool as_u32(const msgpack_object *o, uint32_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > UINT32_MAX)
        return false;
    *v = (uint32_t)o->via.u64;
    return true;
}

/* Checks that root is one of the three message shapes of PROTOCOL.md. */
static int view_msg(const msgpack_object *root, msg_view_t *m, berth_error_t **err)
{
    memset(m, 0, sizeof(*m));
    if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size < 3)
        goto bad;
    const msgpack_object *a = root->via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > 2)
        goto bad;
    m->type = (int)a[0].via.u64;
    switch (m->type) {
    case 0:
        if (root->via.array.size != 4 || !as_u32(&a[1], &m->msgid) ||
            a[2].type != MSGPACK_OBJECT_STR)
            goto bad;
        m->method = &a[2];
        m->params = &a[3];
        break;
    case 1:
        if (root->via.array.size != 4 || !as_u32(&a[1], &m->msgid))
            goto bad;
        if (a[2].type != MSGPACK_OBJECT_NIL) {
            if (a[2].type != MSGPACK_OBJECT_MAP)
                goto bad;
            m->error = &a[2];
        }
        m->result = &a[3];
        break;
    case 2:
        if (root->via.array.size != 3 || a[1].type != MSGPACK_OBJECT_STR ||
            a[2].type != MSGPACK_OBJECT_MAP)
            goto bad;
        m->method = &a[1];
        m->params = &a[2];
        break;
    }
    return 0;
bad:
    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                           "berthd sent a message that is not a request, response or "
                           "notification: protocol error");
}

static int error_from_response(const msgpack_object *e, const char *method, berth_error_t **err)
{
    const char *code = NULL, *msg = NULL;
    size_t codelen = 0, msglen = 0;
    berth_mp_get_str(e, "code", &code, &codelen, NULL);
    berth_mp_get_str(e, "message", &msg, &msglen, NULL);
    berth_code_t k = code ? berth_code_parse(code, codelen) : BERTH_E_INTERNAL;
    if (msg && msglen)
        return berth_error_set(err, k, "%.*s", (int)msglen, msg);
    return berth_error_set(err, k, "%s failed: %s", method, berth_code_name(k));
}

/* --- packing ----------------------------------------------------------------- */

static void pack_side(msgpack_packer *pk)
{
    berth_mp_kv_str(pk, "side", "caller");
}

static int queue_cancel(berth_client_t *c, uint32_t id)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, 3);
    msgpack_pack_uint8(&b.pk, 2);
    berth_mp_pack_str(&b.pk, "$cancel");
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_u64(&b.pk, "id", id);
    pack_side(&b.pk);
    int r = queue_frame(c, &b.buf);
    berth_mpbuf_destroy(&b);
    return r;
}

static int queue_ack(berth_client_t *c, uint32_t id, uint32_t n)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, 3);
    msgpack_pack_uint8(&b.pk, 2);
    berth_mp_pack_str(&b.pk, "$ack");
    msgpack_pack_map(&b.pk, 3);
    berth_mp_kv_u64(&b.pk, "id", id);
    berth_mp_kv_u64(&b.pk, "n", n);
    pack_side(&b.pk);
    int r = queue_frame(c, &b.buf);
    berth_mpbuf_destroy(&b);
    return r;
}

static int queue_stream_end(berth_client_t *c, uint32_t id)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, 3);
    msgpack_pack_uint8(&b.pk, 2);
    berth_mp_pack_str(&b.pk, "$stream.end");
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_u64(&b.pk, "id", id);
    pack_side(&b.pk);
    int r = queue_frame(c, &b.buf);
    berth_mpbuf_destroy(&b);
    return r;
}

/* We serve no methods: a request from the other end gets `unimplemented`
 * (every request must end with exactly one response). */
static int queue_unimplemented(berth_client_t *c, uint32_t msgid, const msgpack_object *method)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, 4);
    msgpack_pack_uint8(&b.pk, 1);
    msgpack_pack_uint32(&b.pk, msgid);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "code", "unimplemented");
    char msg[256];
    snprintf(msg, sizeof(msg), "this client serves no methods (asked for %.*s)",
             (int)(method->via.str.size > 128 ? 128 : method->via.str.size), method->via.str.ptr);
    berth_mp_kv_str(&b.pk, "message", msg);
    msgpack_pack_nil(&b.pk);
    int r = queue_frame(c, &b.buf);
    berth_mpbuf_destroy(&b);
    return r;
}

/* Reads a msgpack map header; returns its size and header length, or -1. */
static int map_header(const uint8_t *p, size_t n, uint32_t *count, size_t *hlen)
{
    if (n < 1)
        return -1;
    if ((p[0] & 0xf0) == 0x80) {
        *count = p[0] & 0x0f;
        *hlen = 1;
    } else if (p[0] == 0xde && n >= 3) {
        *count = ((uint32_t)p[1] << 8) | p[2];
        *hlen = 3;
    } else if (p[0] == 0xdf && n >= 5) {
        *count = be32(p + 1);
        *hlen = 5;
    } else {
        return -1;
    }
    return 0;
}

/* Packs the params map, adding `timeout_ms` (the protocol's reserved
 * deadline param) when the caller set a timeout and did not pack one. */
static int pack_params(msgpack_packer *pk, msgpack_sbuffer *sb, const void *params, size_t len,
                       uint32_t timeout_ms, berth_error_t **err)
{
    if (!params || len == 0) {
        msgpack_pack_map(pk, timeout_ms ? 1 : 0);
        if (timeout_ms)
            berth_mp_kv_u64(pk, "timeout_ms", timeout_ms);
        return 0;
    }
    uint32_t count;
    size_t hlen;
    if (map_header(params, len, &count, &hlen) < 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "request params must be a map");
    if (!timeout_ms || count == UINT32_MAX) {
        msgpack_sbuffer_write(sb, params, len);
        return 0;
    }
    /* Look for a caller-packed timeout_ms before adding ours. */
    msgpack_zone *z = NULL;
    msgpack_object o;
    bool has = false;
    if (berth_mp_unpack(params, len, NULL, &z, &o, NULL) == 0) {
        has = berth_mp_get(&o, "timeout_ms") != NULL;
        msgpack_zone_free(z);
    } else {
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "request params are not one "
                               "well-formed msgpack map");
    }
    if (has) {
        msgpack_sbuffer_write(sb, params, len);
        return 0;
    }
    msgpack_pack_map(pk, count + 1);
    msgpack_sbuffer_write(sb, (const char *)params + hlen, len - hlen);
    berth_mp_kv_u64(pk, "timeout_ms", timeout_ms);
    return 0;
}

/* --- chunks ------------------------------------------------------------------ */

static int send_chunk_common(berth_client_t *c, bool bin, const void *p, size_t n)
{
    if (!c || !c->in_call || c->credit == 0 || c->cancel_sent)
        return -1;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, 3);
    msgpack_pack_uint8(&b.pk, 2);
    berth_mp_pack_str(&b.pk, "$stream");
    msgpack_pack_map(&b.pk, 3);
    berth_mp_kv_u64(&b.pk, "id", c->call_id);
    berth_mp_pack_str(&b.pk, "data");
    if (bin)
        berth_mp_pack_bin(&b.pk, p, n);
    else
        msgpack_sbuffer_write(&b.buf, p, n);
    pack_side(&b.pk);
    int r = queue_frame(c, &b.buf);
    berth_mpbuf_destroy(&b);
    if (r == 0)
        c->credit--;
    return r;
}

int berth_client_send_chunk(berth_client_t *c, const void *p, size_t n)
{
    return send_chunk_common(c, true, p, n);
}

int berth_client_send_chunk_obj(berth_client_t *c, const void *packed, size_t n)
{
    if (!packed || n == 0)
        return -1;
    return send_chunk_common(c, false, packed, n);
}

/* --- calls ------------------------------------------------------------------- */

typedef struct {
    const char *method;
    berth_client_stream_cb stream_cb;
    void *user;
    bool done;        /* the response arrived */
    bool want_cancel; /* stream_cb asked to stop */
    bool got_input;   /* something arrived since the last upload_cb */
    uint32_t acks;    /* chunks received, to acknowledge */
} call_state_t;

/* Handles one frame during a call. */
static int handle_frame(berth_client_t *c, call_state_t *st, const uint8_t *payload, size_t len,
                        berth_error_t **err)
{
    /* A response ([1, ...] as a fixarray of 4) is unpacked from a copy so
     * that its result can outlive the input buffer. */
    uint8_t *copy = NULL;
    const uint8_t *src = payload;
    if (len >= 2 && payload[0] == 0x94 && payload[1] == 0x01) {
        copy = malloc(len);
        if (!copy)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        memcpy(copy, payload, len);
        src = copy;
    }
    msgpack_zone *z = NULL;
    msgpack_object root;
    if (berth_mp_unpack(src, len, NULL, &z, &root, err) < 0) {
        free(copy);
        c->broken = true;
        return berth_error_wrap(err, "berthd sent a malformed message");
    }
    msg_view_t m;
    if (view_msg(&root, &m, err) < 0) {
        msgpack_zone_free(z);
        free(copy);
        c->broken = true;
        return -1;
    }
    int ret = 0;
    st->got_input = true;
    if (m.type == 1) {
        if (m.msgid == c->call_id && !st->done && copy) {
            /* Keep the response: the result is borrowed by the caller. */
            c->res_raw = steal_pointer(&copy);
            c->res_zone = steal_pointer(&z);
            c->res_root = root;
            st->done = true;
        } else if (m.msgid == c->call_id && !st->done) {
            /* Not a fixarray header (a peer may pack array16): copy now. */
            c->res_raw = malloc(len);
            if (!c->res_raw) {
                msgpack_zone_free(z);
                return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            }
            memcpy(c->res_raw, payload, len);
            msgpack_zone_free(z);
            z = NULL;
            if (berth_mp_unpack(c->res_raw, len, NULL, &c->res_zone, &c->res_root, err) < 0)
                return -1;
            st->done = true;
        }
        /* Responses for retired ids (a call we gave up on) are dropped. */
    } else if (m.type == 0) {
        ret = queue_unimplemented(c, m.msgid, m.method);
    } else {
        const msgpack_object *p = m.params;
        uint64_t id = UINT64_MAX;
        berth_mp_get_u64(p, "id", &id, NULL);
        const msgpack_object *side = berth_mp_get(p, "side");
        /* Control frames for our calls come from the server side; "caller"
         * would mean the peer is the caller of one of our requests, which
         * cannot happen since we serve nothing. */
        bool from_server = !side || berth_mp_str_eq(side, "server");
        bool ours = from_server && id == c->call_id && c->in_call;
        if (berth_mp_str_eq(m.method, "$stream")) {
            if (ours) {
                st->acks++;
                const msgpack_object *data = berth_mp_get(p, "data");
                msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
                if (st->stream_cb && !c->cancel_sent && !st->want_cancel &&
                    st->stream_cb(data ? data : &nil, st->user) != 0)
                    st->want_cancel = true;
            }
        } else if (berth_mp_str_eq(m.method, "$stream.end")) {
            if (ours && st->stream_cb && !c->cancel_sent && !st->want_cancel &&
                st->stream_cb(NULL, st->user) != 0)
                st->want_cancel = true;
        } else if (berth_mp_str_eq(m.method, "$ack")) {
            uint64_t n = 0;
            berth_mp_get_u64(p, "n", &n, NULL);
            if (ours) {
                uint64_t credit = c->credit + n;
                c->credit = credit > CLIENT_WINDOW ? CLIENT_WINDOW : (unsigned)credit;
            }
        } else {
            berth_log(BERTH_LOG_DEBUG, "msg=\"ignored notification\" method=%.*s",
                      (int)m.method->via.str.size, m.method->via.str.ptr);
        }
    }
    if (z)
        msgpack_zone_free(z);
    free(copy);
    return ret;
}

/* Handles every complete frame in the input buffer, then acks the chunks. */
static int drain_frames(berth_client_t *c, call_state_t *st, berth_error_t **err)
{
    for (;;) {
        const uint8_t *payload = NULL;
        size_t len = 0;
        int r = next_frame(c, &payload, &len, err);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        if (handle_frame(c, st, payload, len, err) < 0)
            return -1;
        if (st->done)
            break;
    }
    if (st->acks && !st->done) {
        if (queue_ack(c, c->call_id, st->acks) < 0)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        st->acks = 0;
    }
    return 0;
}

static int timeout_error(berth_error_t **err, const char *method, uint32_t ms)
{
    if (ms % 1000 == 0)
        return berth_error_set(err, BERTH_E_DEADLINE_EXCEEDED, "%s timed out after %us", method,
                               ms / 1000);
    return berth_error_set(err, BERTH_E_DEADLINE_EXCEEDED, "%s timed out after %ums", method, ms);
}

static void drain_intr(berth_client_t *c)
{
    char b[64];
    while (read(c->intr[0], b, sizeof(b)) > 0)
        ;
}

int berth_client_call(berth_client_t *c, const char *method, const void *params, size_t params_len,
                      uint32_t timeout_ms, berth_client_stream_cb stream_cb,
                      berth_client_upload_cb upload_cb, void *user, berth_result_t *out,
                      berth_error_t **err)
{
    if (out)
        out->result = NULL;
    release_result(c);
    if (c->broken)
        return berth_error_set(err, BERTH_E_UNAVAILABLE,
                               "connection to berthd at %s is closed; reconnect", c->path);
    if (c->in_call)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "a call is already running on this client");

    uint32_t id = c->next_id++;
    if (c->next_id == 0)
        c->next_id = 1;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, 4);
    msgpack_pack_uint8(&b.pk, 0);
    msgpack_pack_uint32(&b.pk, id);
    berth_mp_pack_str(&b.pk, method);
    if (pack_params(&b.pk, &b.buf, params, params_len, timeout_ms, err) < 0) {
        berth_mpbuf_destroy(&b);
        return -1;
    }
    if (b.buf.size > CLIENT_MAX_FRAME) {
        berth_mpbuf_destroy(&b);
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "request %s is too large (%zu bytes, limit %u)", method, b.buf.size,
                               CLIENT_MAX_FRAME);
    }
    int qr = queue_frame(c, &b.buf);
    berth_mpbuf_destroy(&b);
    if (qr < 0)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");

    berth_log(BERTH_LOG_DEBUG, "msg=\"call\" method=%s id=%u timeout_ms=%u", method, id,
              timeout_ms);
    uint64_t t0 = berth_mono_ms();
    c->in_call = true;
    c->call_id = id;
    c->credit = CLIENT_WINDOW;
    c->cancel_sent = false;
    call_state_t st = {.method = method, .stream_cb = stream_cb, .user = user, .got_input = true};
    bool upload_done = upload_cb == NULL;
    cancel_reason_t reason = CANCEL_NONE;
    uint64_t deadline = timeout_ms ? t0 + timeout_ms : 0;
    uint64_t cancel_deadline = 0;
    int ret = -1;

    for (;;) {
        /* Produce upload chunks while there is credit and the producer makes
         * progress; a producer that made none waits for the next input. */
        while (!upload_done && !c->cancel_sent && reason == CANCEL_NONE && c->credit > 0 &&
               st.got_input) {
            unsigned before = c->credit;
            int r = upload_cb(c, c->credit, user);
            if (r < 0) {
                reason = CANCEL_UPLOAD_CB;
            } else if (r == 1) {
                if (queue_stream_end(c, id) < 0) {
                    berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
                    goto out;
                }
                upload_done = true;
            } else if (c->credit == before) {
                st.got_input = false;
            }
        }

        if (st.want_cancel && reason == CANCEL_NONE)
            reason = CANCEL_STREAM_CB;
        if (c->interrupted && reason == CANCEL_NONE) {
            c->interrupted = 0;
            reason = CANCEL_INTERRUPT;
        }
        uint64_t now = berth_mono_ms();
        if (deadline && now >= deadline && reason == CANCEL_NONE)
            reason = CANCEL_TIMEOUT;
        if (reason != CANCEL_NONE && !c->cancel_sent) {
            berth_log(BERTH_LOG_DEBUG, "msg=\"cancel\" method=%s id=%u reason=%d", method, id,
                      (int)reason);
            if (queue_cancel(c, id) < 0) {
                berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            c->cancel_sent = true;
            cancel_deadline = now + CANCEL_GRACE_MS;
        }

        int fe = flush_out(c);
        if (fe) {
            broken(c, err, fe, method);
            goto out;
        }
        if (drain_frames(c, &st, err) < 0)
            goto out;
        if (st.done)
            break;
        if (c->out.len > c->out.off) {
            fe = flush_out(c);
            if (fe) {
                broken(c, err, fe, method);
                goto out;
            }
        }
        if (c->cancel_sent && now >= cancel_deadline)
            break;

        /* Loop again right away if there is new work for the producer. */
        if (!upload_done && reason == CANCEL_NONE && c->credit > 0 && st.got_input)
            continue;
        if (st.want_cancel && !c->cancel_sent)
            continue;

        int wait = -1;
        now = berth_mono_ms();
        uint64_t until = c->cancel_sent ? cancel_deadline : deadline;
        if (until)
            wait = until > now ? (int)(until - now > INT32_MAX ? INT32_MAX : until - now) : 0;
        struct pollfd pf[2] = {
            {.fd = c->fd, .events = POLLIN | (c->out.len > c->out.off ? POLLOUT : 0)},
            {.fd = c->intr[0], .events = POLLIN},
        };
        int pr = poll(pf, 2, wait);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            berth_error_errno(err, errno, "poll");
            goto out;
        }
        if (pf[1].revents)
            drain_intr(c);
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read_in(c);
            if (n == 0) {
                broken(c, err, 0, method);
                goto out;
            }
            if (n < 0 && n != -EAGAIN && n != -EWOULDBLOCK) {
                broken(c, err, (int)-n, method);
                goto out;
            }
        }
    }

    if (st.done) {
        msg_view_t m;
        view_msg(&c->res_root, &m, NULL);
        if (m.error) {
            error_from_response(m.error, method, err);
            if (reason == CANCEL_TIMEOUT && (*err)->code == BERTH_E_CANCELED) {
                berth_error_free(err);
                timeout_error(err, method, timeout_ms);
            }
            release_result(c);
            goto out;
        }
        if (out)
            out->result = m.result;
        ret = 0;
    } else if (reason == CANCEL_TIMEOUT) {
        timeout_error(err, method, timeout_ms);
    } else {
        berth_error_set(err, BERTH_E_CANCELED, "%s canceled", method);
    }
out:
    berth_log(BERTH_LOG_DEBUG, "msg=\"call done\" method=%s id=%u ok=%d ms=%llu", method, id,
              ret == 0, (unsigned long long)(berth_mono_ms() - t0));
    c->in_call = false;
    c->cancel_sent = false;
    return ret;
}

/* --- pipeline ----------------------------------------------------------------- */

int berth_client_pipeline(berth_client_t *c, const char *method, const void *params,
                          size_t params_len, size_t n, size_t depth, berth_error_t **err)
{
    release_result(c);
    if (c->broken)
        return berth_error_set(err, BERTH_E_UNAVAILABLE,
                               "connection to berthd at %s is closed; reconnect", c->path);
    if (depth == 0)
        depth = 1;
    if (n == 0)
        return 0;
    if (n > UINT32_MAX / 2)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "too many requests");

    /* One frame template; the msgid is always packed as uint32 (0xce) so it
     * can be patched in place. */
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_sbuffer_write(&b.buf, "\0\0\0\0", 4);
    msgpack_pack_array(&b.pk, 4);
    msgpack_pack_uint8(&b.pk, 0);
    const size_t id_off = b.buf.size + 1;
    msgpack_sbuffer_write(&b.buf, "\xce\0\0\0\0", 5);
    berth_mp_pack_str(&b.pk, method);
    if (pack_params(&b.pk, &b.buf, params, params_len, 0, err) < 0) {
        berth_mpbuf_destroy(&b);
        return -1;
    }
    put_be32((uint8_t *)b.buf.data, (uint32_t)(b.buf.size - 4));
    const size_t flen = b.buf.size;

    /* Ids [base, base+n) are ours; skip past a wrap so they stay unique. */
    if ((uint64_t)c->next_id + n > UINT32_MAX)
        c->next_id = 1;
    const uint32_t base = c->next_id;
    c->next_id += (uint32_t)n;

    size_t sent = 0, done = 0;
    int failed = 0;
    int ret = -1;
    while (done < n) {
        /* Refill in batches (when half the window has drained) so that one
         * send carries many requests instead of one per response. */
        bool refill = sent - done <= depth / 2;
        while (refill && sent < n && sent - done < depth) {
            if (buf_reserve(&c->out, flen) < 0) {
                berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            put_be32((uint8_t *)b.buf.data + id_off, base + (uint32_t)sent);
            buf_append(&c->out, b.buf.data, flen);
            sent++;
        }
        int fe = flush_out(c);
        if (fe) {
            broken(c, err, fe, method);
            goto out;
        }
        bool progress = false;
        for (;;) {
            const uint8_t *payload = NULL;
            size_t len = 0;
            int r = next_frame(c, &payload, &len, err);
            if (r < 0)
                goto out;
            if (r == 0)
                break;
            msgpack_zone *z = NULL;
            msgpack_object root;
            msg_view_t m;
            if (berth_mp_unpack(payload, len, NULL, &z, &root, err) < 0) {
                c->broken = true;
                goto out;
            }
            if (view_msg(&root, &m, err) < 0) {
                msgpack_zone_free(z);
                c->broken = true;
                goto out;
            }
            if (m.type == 1 && m.msgid - base < sent) {
                done++;
                progress = true;
                if (m.error)
                    failed++;
            } else if (m.type == 0) {
                queue_unimplemented(c, m.msgid, m.method);
            }
            msgpack_zone_free(z);
        }
        if (progress)
            continue;
        /* Under load data is usually there already: read before polling. */
        if (c->out.off == c->out.len) {
            ssize_t r = read_in(c);
            if (r == 0) {
                broken(c, err, 0, method);
                goto out;
            }
            if (r > 0)
                continue;
            if (r != -EAGAIN && r != -EWOULDBLOCK) {
                broken(c, err, (int)-r, method);
                goto out;
            }
        }
        struct pollfd pf = {.fd = c->fd,
                            .events = POLLIN | (c->out.len > c->out.off ? POLLOUT : 0)};
        int pr = poll(&pf, 1, -1);
        if (pr < 0) {
            if (errno == EINTR) {
                if (c->interrupted) {
                    berth_error_set(err, BERTH_E_CANCELED, "pipeline interrupted");
                    goto out;
                }
                continue;
            }
            berth_error_errno(err, errno, "poll");
            goto out;
        }
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read_in(c);
            if (r == 0) {
                broken(c, err, 0, method);
                goto out;
            }
            if (r < 0 && r != -EAGAIN && r != -EWOULDBLOCK) {
                broken(c, err, (int)-r, method);
                goto out;
            }
        }
    }
    ret = failed;
out:
    berth_mpbuf_destroy(&b);
    return ret;
}
