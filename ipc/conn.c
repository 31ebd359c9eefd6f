/* SPDX-License-Identifier: Apache-2.0 */
/* Framed message connections on libuv pipes. Writes are batched: messages
 * queue as whole frames and go out in one uv_write per loop turn; urgent
 * (control) frames jump the queue. A peer that does not read makes the queue
 * grow up to max_write_queue, then the connection is closed and logged. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "berth/log.h"
#include "conn.h"

typedef struct wbuf_s {
    struct wbuf_s *next;
    size_t len;
    uint8_t data[]; /* header + payload */
} wbuf_t;

#define MAX_BATCH 256

static void start_write(ipc_conn_t *c);

struct ipc_conn_s {
    uv_pipe_t *pipe;
    /* Writes queued during a loop turn go out together from this prepare
     * handle, right before the loop polls: one writev for many messages. */
    uv_prepare_t flush;
    int open_handles;
    ipc_framer_t framer;
    ipc_conn_opts_t opts;
    ipc_conn_cbs_t cbs;
    void *data;
    void (*drain_cb)(ipc_conn_t *c, void *data);

    wbuf_t *urgent_head, *urgent_tail;
    wbuf_t *head, *tail;
    size_t queued;

    /* the batch being written */
    uv_write_t wreq;
    wbuf_t *inflight[MAX_BATCH];
    size_t n_inflight;
    bool writing;

    bool closing;
    bool close_after_flush;
    bool read_paused;
    /* The read buffer: malloc'd on the first read, not part of the struct,
     * so its pages become resident only as far as reads fill them (a
     * connection carrying small messages costs a page, not 64 KiB: a
     * runtime with hundreds of shim connections, a core with 1,000 idle
     * clients). */
    uint8_t *rbuf;
};

#define RBUF_SIZE 65536

void ipc_conn_opts_default(ipc_conn_opts_t *o)
{
    o->max_frame = IPC_DEFAULT_MAX_FRAME;
    o->max_write_queue = 64u * 1024 * 1024;
    o->limits = berth_mp_default_limits;
}

static void on_closed(uv_handle_t *h)
{
    ipc_conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    /* Queued buffers die with the connection. */
    for (size_t i = 0; i < c->n_inflight; i++)
        free(c->inflight[i]);
    wbuf_t *lists[2] = {c->urgent_head, c->head};
    for (int l = 0; l < 2; l++)
        for (wbuf_t *b = lists[l]; b;) {
            wbuf_t *n = b->next;
            free(b);
            b = n;
        }
    ipc_framer_destroy(&c->framer);
    if (c->cbs.on_close)
        c->cbs.on_close(c, c->data);
    free(c->rbuf);
    free(c->pipe);
    free(c);
}

static void do_close(ipc_conn_t *c)
{
    if (uv_is_closing((uv_handle_t *)c->pipe))
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->flush, on_closed);
    uv_close((uv_handle_t *)c->pipe, on_closed);
}

static void flush_cb(uv_prepare_t *h)
{
    ipc_conn_t *c = h->data;
    uv_prepare_stop(h);
    start_write(c);
}

void ipc_conn_close(ipc_conn_t *c, bool flush)
{
    if (!c || uv_is_closing((uv_handle_t *)c->pipe))
        return;
    c->closing = true;
    uv_read_stop((uv_stream_t *)c->pipe);
    if (flush && (c->writing || c->head || c->urgent_head)) {
        c->close_after_flush = true;
        return;
    }
    do_close(c);
}

bool ipc_conn_closing(const ipc_conn_t *c)
{
    return c->closing;
}
void *ipc_conn_data(const ipc_conn_t *c)
{
    return c->data;
}
void ipc_conn_set_data(ipc_conn_t *c, void *data)
{
    c->data = data;
}
size_t ipc_conn_write_queue(const ipc_conn_t *c)
{
    return c->queued;
}
void ipc_conn_set_drain_cb(ipc_conn_t *c, void (*cb)(ipc_conn_t *c, void *data))
{
    c->drain_cb = cb;
}

int ipc_conn_fd(const ipc_conn_t *c)
{
    uv_os_fd_t fd = -1;
    if (uv_fileno((const uv_handle_t *)c->pipe, &fd) != 0)
        return -1;
    return fd;
}

int ipc_conn_peercred(ipc_conn_t *c, pid_t *pid, uid_t *uid, gid_t *gid)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    int fd = ipc_conn_fd(c);
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
        return -1;
    if (pid)
        *pid = cr.pid;
    if (uid)
        *uid = cr.uid;
    if (gid)
        *gid = cr.gid;
    return 0;
}

static void on_written(uv_write_t *req, int status)
{
    ipc_conn_t *c = req->data;
    for (size_t i = 0; i < c->n_inflight; i++) {
        c->queued -= c->inflight[i]->len;
        free(c->inflight[i]);
    }
    c->n_inflight = 0;
    c->writing = false;
    if (status < 0) {
        if (status != UV_ECANCELED)
            berth_log(BERTH_LOG_DEBUG, "msg=\"write failed\" err=\"%s\"", uv_strerror(status));
        do_close(c);
        return;
    }
    if (uv_is_closing((uv_handle_t *)c->pipe))
        return;
    start_write(c);
    if (!c->writing) {
        if (c->close_after_flush) {
            do_close(c);
            return;
        }
        if (c->drain_cb)
            c->drain_cb(c, c->data);
    }
}

static wbuf_t *pop(ipc_conn_t *c)
{
    wbuf_t *b;
    if (c->urgent_head) {
        b = c->urgent_head;
        c->urgent_head = b->next;
        if (!c->urgent_head)
            c->urgent_tail = NULL;
    } else if (c->head) {
        b = c->head;
        c->head = b->next;
        if (!c->head)
            c->tail = NULL;
    } else {
        return NULL;
    }
    b->next = NULL;
    return b;
}

static void start_write(ipc_conn_t *c)
{
    if (c->writing || uv_is_closing((uv_handle_t *)c->pipe))
        return;
    uv_buf_t bufs[MAX_BATCH];
    size_t n = 0;
    wbuf_t *b;
    while (n < MAX_BATCH && (b = pop(c))) {
        c->inflight[n] = b;
        bufs[n] = uv_buf_init((char *)b->data, (unsigned)b->len);
        n++;
    }
    if (n == 0)
        return;
    c->n_inflight = n;
    c->writing = true;
    c->wreq.data = c;
    int r = uv_write(&c->wreq, (uv_stream_t *)c->pipe, bufs, (unsigned)n, on_written);
    if (r < 0) {
        c->writing = false;
        for (size_t i = 0; i < n; i++) {
            c->queued -= c->inflight[i]->len;
            free(c->inflight[i]);
        }
        c->n_inflight = 0;
        do_close(c);
    }
}

int ipc_conn_send(ipc_conn_t *c, const void *payload, size_t len, bool urgent)
{
    if (!c || c->closing || uv_is_closing((uv_handle_t *)c->pipe))
        return -1;
    if (len == 0 || len > c->opts.max_frame) {
        berth_log(BERTH_LOG_WARN, "msg=\"refusing to send a frame over the limit\" bytes=%zu", len);
        return -1;
    }
    if (c->queued + len + 4 > c->opts.max_write_queue) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"peer is not reading: write queue over its limit, closing connection\" "
                  "queued=%zu",
                  c->queued);
        do_close(c);
        return -1;
    }
    wbuf_t *b = malloc(sizeof(*b) + len + 4);
    if (!b)
        return -1;
    b->next = NULL;
    b->len = len + 4;
    ipc_frame_header(b->data, (uint32_t)len);
    memcpy(b->data + 4, payload, len);
    if (urgent) {
        if (c->urgent_tail)
            c->urgent_tail->next = b;
        else
            c->urgent_head = b;
        c->urgent_tail = b;
    } else {
        if (c->tail)
            c->tail->next = b;
        else
            c->head = b;
        c->tail = b;
    }
    c->queued += b->len;
    if (!c->writing)
        uv_prepare_start(&c->flush, flush_cb);
    return 0;
}

int ipc_conn_send_sbuf(ipc_conn_t *c, const msgpack_sbuffer *sb, bool urgent)
{
    return ipc_conn_send(c, sb->data, sb->size, urgent);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ipc_conn_t *c = h->data;
    (void)suggested;
    if (!c->rbuf && !(c->rbuf = malloc(RBUF_SIZE))) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS: the connection closes */
        return;
    }
    *buf = uv_buf_init((char *)c->rbuf, RBUF_SIZE);
}

static int on_frame(uint8_t *payload, size_t len, void *data)
{
    ipc_conn_t *c = data;
    if (c->closing) {
        free(payload);
        return 1;
    }
    ipc_msg_t *m = NULL;
    uint32_t msgid = 0;
    bool have = false;
    berth_error_t *err = NULL;
    if (ipc_msg_decode(payload, len, &c->opts.limits, &m, &msgid, &have, &err) < 0) {
        if (have) {
            berth_mpbuf_t b;
            berth_mpbuf_init(&b);
            ipc_pack_response_error(&b.pk, msgid, BERTH_E_INVALID_ARGUMENT, err->message);
            ipc_conn_send_sbuf(c, &b.buf, true);
            berth_mpbuf_destroy(&b);
        }
        if (c->cbs.on_protocol_error)
            c->cbs.on_protocol_error(c, err, c->data);
        berth_error_free(&err);
        ipc_conn_close(c, true);
        return 1;
    }
    c->cbs.on_message(c, m, c->data);
    return c->closing ? 1 : 0;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ipc_conn_t *c = s->data;
    if (nread < 0) {
        do_close(c);
        return;
    }
    if (nread == 0 || c->closing)
        return;
    berth_error_t *err = NULL;
    if (ipc_framer_feed(&c->framer, (const uint8_t *)buf->base, (size_t)nread, on_frame, c, &err) <
        0) {
        if (c->cbs.on_protocol_error)
            c->cbs.on_protocol_error(c, err, c->data);
        berth_error_free(&err);
        ipc_conn_close(c, true);
    }
}

ipc_conn_t *ipc_conn_wrap_pipe(uv_pipe_t *pipe, const ipc_conn_opts_t *opts,
                               const ipc_conn_cbs_t *cbs, void *data)
{
    ipc_conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (opts)
        c->opts = *opts;
    else
        ipc_conn_opts_default(&c->opts);
    c->cbs = *cbs;
    c->data = data;
    c->pipe = pipe;
    pipe->data = c;
    uv_prepare_init(pipe->loop, &c->flush);
    c->flush.data = c;
    c->open_handles = 2;
    ipc_framer_init(&c->framer, c->opts.max_frame);
    uv_read_start((uv_stream_t *)pipe, alloc_cb, read_cb);
    return c;
}

ipc_conn_t *ipc_conn_open_fd(uv_loop_t *loop, int fd, const ipc_conn_opts_t *opts,
                             const ipc_conn_cbs_t *cbs, void *data, berth_error_t **err)
{
    uv_pipe_t *p = malloc(sizeof(*p));
    if (!p) {
        close(fd);
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    int r = uv_pipe_init(loop, p, 0);
    if (r == 0)
        r = uv_pipe_open(p, fd);
    if (r < 0) {
        berth_error_set(err, BERTH_E_INTERNAL, "open connection on fd %d: %s", fd, uv_strerror(r));
        close(fd);
        /* p may have been initialised: close it properly */
        uv_close((uv_handle_t *)p, (uv_close_cb)free);
        return NULL;
    }
    ipc_conn_t *c = ipc_conn_wrap_pipe(p, opts, cbs, data);
    if (!c)
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    return c;
}

void ipc_conn_read_stop(ipc_conn_t *c)
{
    if (!c->closing) {
        uv_read_stop((uv_stream_t *)c->pipe);
        c->read_paused = true;
    }
}

void ipc_conn_read_start(ipc_conn_t *c)
{
    if (!c->closing && c->read_paused) {
        uv_read_start((uv_stream_t *)c->pipe, alloc_cb, read_cb);
        c->read_paused = false;
    }
}
