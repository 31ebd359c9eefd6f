/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of libberth's blocking client (sdk/client.c) against a scripted
 * protocol peer in a child process: calls, server errors, download streams
 * with acks, uploads that must respect the window of 8, $cancel on interrupt,
 * stream callback and timeout, requests from the peer, pipelining, and the
 * errors a user sees when the daemon is absent or misbehaves. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "berth/client.h"

static char g_dir[64];
static char g_sock[100];
static pid_t g_server = -1;

/* --- the scripted peer ------------------------------------------------------- */

static int read_full(int fd, void *p, size_t n)
{
    size_t have = 0;
    while (have < n) {
        ssize_t r = read(fd, (char *)p + have, n - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = write(fd, (const char *)p + done, n - done);
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

typedef struct {
    uint8_t *raw;
    msgpack_zone *zone;
    msgpack_object o;
} frame_t;

static int srv_read(int fd, frame_t *f)
{
    uint8_t h[4];
    if (read_full(fd, h, 4) < 0)
        return -1;
    uint32_t n = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
    f->raw = malloc(n);
    if (!f->raw || read_full(fd, f->raw, n) < 0)
        return -1;
    berth_error_t *err = NULL;
    if (berth_mp_unpack(f->raw, n, NULL, &f->zone, &f->o, &err) < 0)
        return -1;
    return 0;
}

static void srv_free(frame_t *f)
{
    msgpack_zone_free(f->zone);
    free(f->raw);
}

static void srv_send(int fd, berth_mpbuf_t *b)
{
    uint8_t h[4] = {(uint8_t)(b->buf.size >> 24), (uint8_t)(b->buf.size >> 16),
                    (uint8_t)(b->buf.size >> 8), (uint8_t)b->buf.size};
    write_full(fd, h, 4);
    write_full(fd, b->buf.data, b->buf.size);
    berth_mpbuf_destroy(b);
}

static void srv_ok_head(berth_mpbuf_t *b, uint32_t id)
{
    berth_mpbuf_init(b);
    msgpack_pack_array(&b->pk, 4);
    msgpack_pack_uint8(&b->pk, 1);
    msgpack_pack_uint32(&b->pk, id);
    msgpack_pack_nil(&b->pk);
}

static void srv_error(int fd, uint32_t id, const char *code, const char *msg)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, 4);
    msgpack_pack_uint8(&b.pk, 1);
    msgpack_pack_uint32(&b.pk, id);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "code", code);
    berth_mp_kv_str(&b.pk, "message", msg);
    msgpack_pack_nil(&b.pk);
    srv_send(fd, &b);
}

static void srv_notify_head(berth_mpbuf_t *b, const char *method, uint32_t n)
{
    berth_mpbuf_init(b);
    msgpack_pack_array(&b->pk, 3);
    msgpack_pack_uint8(&b->pk, 2);
    berth_mp_pack_str(&b->pk, method);
    msgpack_pack_map(&b->pk, n);
}

static bool is_notify(const frame_t *f, const char *method, uint32_t id)
{
    const msgpack_object *a = f->o.via.array.ptr;
    if (f->o.via.array.size != 3 || a[0].via.u64 != 2 || !berth_mp_str_eq(&a[1], method))
        return false;
    uint64_t got = UINT64_MAX;
    berth_mp_get_u64(&a[2], "id", &got, NULL);
    /* Everything the client sends about its own request says side=caller. */
    return got == id && berth_mp_str_eq(berth_mp_get(&a[2], "side"), "caller");
}

/* Streams `n` chunks {i} honouring the client's acks, then waits for every
 * ack and answers {acked}. A $cancel ends it with `canceled`. */
static void srv_download(int fd, uint32_t id, uint64_t n)
{
    uint64_t sent = 0, acked = 0;
    while (acked < n) {
        while (sent < n && sent - acked < 8) {
            berth_mpbuf_t b;
            srv_notify_head(&b, "$stream", 3);
            berth_mp_kv_u64(&b.pk, "id", id);
            berth_mp_pack_str(&b.pk, "data");
            msgpack_pack_map(&b.pk, 1);
            berth_mp_kv_u64(&b.pk, "i", sent);
            berth_mp_kv_str(&b.pk, "side", "server");
            srv_send(fd, &b);
            sent++;
        }
        frame_t f;
        if (srv_read(fd, &f) < 0)
            _exit(3);
        if (is_notify(&f, "$ack", id)) {
            uint64_t k = 0;
            berth_mp_get_u64(&f.o.via.array.ptr[2], "n", &k, NULL);
            acked += k;
        } else if (is_notify(&f, "$cancel", id)) {
            srv_free(&f);
            srv_error(fd, id, "canceled", "download canceled by the caller");
            return;
        }
        srv_free(&f);
    }
    berth_mpbuf_t b;
    srv_notify_head(&b, "$stream.end", 2);
    berth_mp_kv_u64(&b.pk, "id", id);
    berth_mp_kv_str(&b.pk, "side", "server");
    srv_send(fd, &b);
    srv_ok_head(&b, id);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_u64(&b.pk, "acked", acked);
    srv_send(fd, &b);
}

/* Receives an upload; acks lazily (only when 8 are outstanding) so a client
 * that overruns the window is caught. With `offset`, first tells the client
 * where to start (like content.write). */
static void srv_upload(int fd, uint32_t id, bool offset)
{
    if (offset) {
        berth_mpbuf_t b;
        srv_notify_head(&b, "$stream", 3);
        berth_mp_kv_u64(&b.pk, "id", id);
        berth_mp_pack_str(&b.pk, "data");
        msgpack_pack_map(&b.pk, 1);
        berth_mp_kv_u64(&b.pk, "offset", 3);
        berth_mp_kv_str(&b.pk, "side", "server");
        /* Let the client try to upload first: it must wait for this. */
        usleep(50 * 1000);
        srv_send(fd, &b);
    }
    uint64_t chunks = 0, bytes = 0, unacked = 0, max_unacked = 0, first = UINT64_MAX;
    for (;;) {
        frame_t f;
        if (srv_read(fd, &f) < 0)
            _exit(3);
        if (is_notify(&f, "$stream", id)) {
            const msgpack_object *d = berth_mp_get(&f.o.via.array.ptr[2], "data");
            if (d && d->type == MSGPACK_OBJECT_BIN) {
                bytes += d->via.bin.size;
                if (first == UINT64_MAX && d->via.bin.size > 0)
                    first = (uint8_t)d->via.bin.ptr[0];
            }
            chunks++;
            if (++unacked > max_unacked)
                max_unacked = unacked;
            if (unacked == 8) {
                /* Slow consumer: the client must stall meanwhile. */
                usleep(2000);
                berth_mpbuf_t b;
                srv_notify_head(&b, "$ack", 3);
                berth_mp_kv_u64(&b.pk, "id", id);
                berth_mp_kv_u64(&b.pk, "n", unacked);
                berth_mp_kv_str(&b.pk, "side", "server");
                srv_send(fd, &b);
                unacked = 0;
            }
        } else if (is_notify(&f, "$stream.end", id)) {
            srv_free(&f);
            break;
        } else if (is_notify(&f, "$cancel", id)) {
            srv_free(&f);
            srv_error(fd, id, "canceled", "upload canceled by the caller");
            return;
        }
        srv_free(&f);
    }
    berth_mpbuf_t b;
    srv_ok_head(&b, id);
    msgpack_pack_map(&b.pk, 4);
    berth_mp_kv_u64(&b.pk, "chunks", chunks);
    berth_mp_kv_u64(&b.pk, "bytes", bytes);
    berth_mp_kv_u64(&b.pk, "max_unacked", max_unacked);
    berth_mp_kv_u64(&b.pk, "first", first);
    srv_send(fd, &b);
}

/* Returns false when the connection should close. */
static bool srv_handle(int fd, frame_t *f)
{
    const msgpack_object *a = f->o.via.array.ptr;
    if (f->o.via.array.size != 4 || a[0].via.u64 != 0)
        return true; /* stray notification (late $ack/$cancel): ignore */
    uint32_t id = (uint32_t)a[1].via.u64;
    const msgpack_object *m = &a[2], *params = &a[3];
    berth_mpbuf_t b;
    if (berth_mp_str_eq(m, "echo") || berth_mp_str_eq(m, "version")) {
        srv_ok_head(&b, id);
        msgpack_pack_object(&b.pk, *params);
        srv_send(fd, &b);
    } else if (berth_mp_str_eq(m, "fail")) {
        srv_error(fd, id, "not_found",
                  "image docker.io/library/nope:1 not found in namespace "
                  "default");
    } else if (berth_mp_str_eq(m, "download")) {
        uint64_t n = 0;
        berth_mp_get_u64(params, "n", &n, NULL);
        srv_download(fd, id, n);
    } else if (berth_mp_str_eq(m, "upload")) {
        srv_upload(fd, id, false);
    } else if (berth_mp_str_eq(m, "upload_offset")) {
        srv_upload(fd, id, true);
    } else if (berth_mp_str_eq(m, "hang")) {
        for (;;) {
            frame_t g;
            if (srv_read(fd, &g) < 0)
                return false;
            bool c = is_notify(&g, "$cancel", id);
            srv_free(&g);
            if (c)
                break;
        }
        srv_error(fd, id, "canceled", "hang canceled by the caller");
    } else if (berth_mp_str_eq(m, "reqback")) {
        berth_mpbuf_init(&b);
        msgpack_pack_array(&b.pk, 4);
        msgpack_pack_uint8(&b.pk, 0);
        msgpack_pack_uint32(&b.pk, 77);
        berth_mp_pack_str(&b.pk, "client.ping");
        msgpack_pack_map(&b.pk, 0);
        srv_send(fd, &b);
        frame_t g;
        if (srv_read(fd, &g) < 0)
            return false;
        const msgpack_object *ga = g.o.via.array.ptr;
        const char *code = "none";
        if (g.o.via.array.size == 4 && ga[0].via.u64 == 1 && ga[1].via.u64 == 77 &&
            berth_mp_str_eq(berth_mp_get(&ga[2], "code"), "unimplemented"))
            code = "unimplemented";
        srv_ok_head(&b, id);
        msgpack_pack_map(&b.pk, 1);
        berth_mp_kv_str(&b.pk, "code", code);
        srv_send(fd, &b);
        srv_free(&g);
    } else if (berth_mp_str_eq(m, "close")) {
        return false;
    } else if (berth_mp_str_eq(m, "bigframe")) {
        write_full(fd, "\xff\xff\xff\xff", 4);
        return false;
    } else if (berth_mp_str_eq(m, "garbage")) {
        /* A frame holding something that is not a message. */
        write_full(fd, "\0\0\0\1\x2a", 5);
        return false;
    } else {
        srv_error(fd, id, "unimplemented", "unknown method");
    }
    return true;
}

static void server_main(int lfd)
{
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(2);
        for (;;) {
            frame_t f;
            if (srv_read(fd, &f) < 0)
                break;
            bool keep = srv_handle(fd, &f);
            srv_free(&f);
            if (!keep)
                break;
        }
        /* Give the client a moment to read what was sent before the close. */
        usleep(20 * 1000);
        close(fd);
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/berth-cli-test.XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_sock, sizeof(g_sock), "%s/berth.sock", g_dir);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, g_sock, strlen(g_sock) + 1);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    g_server = fork();
    assert_true(g_server >= 0);
    if (g_server == 0) {
        server_main(lfd);
        _exit(0);
    }
    close(lfd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (g_server > 0) {
        kill(g_server, SIGKILL);
        waitpid(g_server, NULL, 0);
    }
    unlink(g_sock);
    rmdir(g_dir);
    return 0;
}

static berth_client_t *connect_ok(void)
{
    berth_error_t *err = NULL;
    berth_client_t *c = berth_client_connect(g_sock, 2000, &err);
    if (!c)
        fail_msg("connect: %s", err->message);
    return c;
}

/* --- tests ----------------------------------------------------------------------- */

static void test_connect_missing_daemon(void **state)
{
    (void)state;
    berth_error_t *err = NULL;
    berth_client_t *c = berth_client_connect("/tmp/berth-no-such-dir/berth.sock", 500, &err);
    assert_null(c);
    assert_non_null(err);
    assert_int_equal(err->code, BERTH_E_UNAVAILABLE);
    assert_string_equal(err->message,
                        "cannot connect to /tmp/berth-no-such-dir/berth.sock: no such file or "
                        "directory — is berthd running? start it with `systemctl start berth` "
                        "or `berthd`");
    berth_error_free(&err);

    /* A socket file nobody listens on: refused, same advice. */
    char path[100];
    snprintf(path, sizeof(path), "%s/stale.sock", g_dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    c = berth_client_connect(path, 500, &err);
    assert_null(c);
    assert_non_null(strstr(err->message, "connection refused — is berthd running?"));
    berth_error_free(&err);
    unlink(path);

    char longpath[200];
    memset(longpath, 'x', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = 0;
    c = berth_client_connect(longpath, 500, &err);
    assert_null(c);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    berth_error_free(&err);
}

static void test_call_and_result(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    berth_mpbuf_t p;
    berth_mpbuf_init(&p);
    msgpack_pack_map(&p.pk, 1);
    berth_mp_kv_str(&p.pk, "name", "x");
    berth_result_t r;
    assert_int_equal(
        berth_client_call(c, "echo", p.buf.data, p.buf.size, 0, NULL, NULL, NULL, &r, &err), 0);
    assert_true(berth_mp_str_eq(berth_mp_get(r.result, "name"), "x"));
    assert_null(berth_mp_get(r.result, "timeout_ms"));

    /* A timeout becomes the protocol's timeout_ms param. */
    assert_int_equal(
        berth_client_call(c, "echo", p.buf.data, p.buf.size, 5000, NULL, NULL, NULL, &r, &err), 0);
    uint64_t t = 0;
    assert_int_equal(berth_mp_get_u64(r.result, "timeout_ms", &t, NULL), 0);
    assert_int_equal(t, 5000);
    assert_true(berth_mp_str_eq(berth_mp_get(r.result, "name"), "x"));

    /* NULL params are {}. */
    assert_int_equal(berth_client_call(c, "echo", NULL, 0, 0, NULL, NULL, NULL, &r, &err), 0);
    assert_int_equal(r.result->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(r.result->via.map.size, 0);

    /* Params that are not a map are refused before anything is sent. */
    berth_mpbuf_t bad;
    berth_mpbuf_init(&bad);
    msgpack_pack_array(&bad.pk, 0);
    assert_int_equal(
        berth_client_call(c, "echo", bad.buf.data, bad.buf.size, 0, NULL, NULL, NULL, &r, &err),
        -1);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    berth_error_free(&err);
    berth_mpbuf_destroy(&bad);

    /* Many calls in a row on one connection. */
    for (int i = 0; i < 200; i++)
        assert_int_equal(
            berth_client_call(c, "echo", p.buf.data, p.buf.size, 0, NULL, NULL, NULL, &r, &err), 0);
    berth_mpbuf_destroy(&p);
    berth_client_free(c);
}

static void test_server_error(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    berth_result_t r;
    assert_int_equal(berth_client_call(c, "fail", NULL, 0, 0, NULL, NULL, NULL, &r, &err), -1);
    assert_null(r.result);
    assert_int_equal(err->code, BERTH_E_NOT_FOUND);
    assert_string_equal(err->message, "image docker.io/library/nope:1 not found in namespace "
                                      "default");
    berth_error_free(&err);
    /* The connection is still good. */
    assert_int_equal(berth_client_call(c, "echo", NULL, 0, 0, NULL, NULL, NULL, &r, &err), 0);
    berth_client_free(c);
}

typedef struct {
    uint64_t got;
    bool ended;
    bool in_order;
    uint64_t stop_after;
} dl_t;

static int dl_cb(const msgpack_object *data, void *user)
{
    dl_t *d = user;
    if (!data) {
        d->ended = true;
        return 0;
    }
    uint64_t i = UINT64_MAX;
    berth_mp_get_u64(data, "i", &i, NULL);
    if (i != d->got)
        d->in_order = false;
    d->got++;
    return d->stop_after && d->got >= d->stop_after;
}

static void test_download_acks(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    berth_mpbuf_t p;
    berth_mpbuf_init(&p);
    msgpack_pack_map(&p.pk, 1);
    berth_mp_kv_u64(&p.pk, "n", 1000);
    dl_t d = {.in_order = true};
    berth_result_t r;
    /* The peer never has more than 8 chunks out: finishing proves the acks. */
    assert_int_equal(
        berth_client_call(c, "download", p.buf.data, p.buf.size, 0, dl_cb, NULL, &d, &r, &err), 0);
    assert_int_equal(d.got, 1000);
    assert_true(d.in_order);
    assert_true(d.ended);
    uint64_t acked = 0;
    assert_int_equal(berth_mp_get_u64(r.result, "acked", &acked, NULL), 0);
    assert_int_equal(acked, 1000);
    berth_mpbuf_destroy(&p);
    berth_client_free(c);
}

static void test_stream_cb_cancels(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    berth_mpbuf_t p;
    berth_mpbuf_init(&p);
    msgpack_pack_map(&p.pk, 1);
    berth_mp_kv_u64(&p.pk, "n", 100000);
    dl_t d = {.in_order = true, .stop_after = 3};
    berth_result_t r;
    assert_int_equal(
        berth_client_call(c, "download", p.buf.data, p.buf.size, 0, dl_cb, NULL, &d, &r, &err), -1);
    assert_int_equal(err->code, BERTH_E_CANCELED);
    assert_string_equal(err->message, "download canceled by the caller");
    /* No chunk is delivered after the callback asked to stop. */
    assert_int_equal(d.got, 3);
    berth_error_free(&err);
    /* Late chunks of the cancelled call are dropped; the next call works. */
    assert_int_equal(berth_client_call(c, "echo", NULL, 0, 0, NULL, NULL, NULL, &r, &err), 0);
    berth_mpbuf_destroy(&p);
    berth_client_free(c);
}

typedef struct {
    size_t total; /* chunks to send */
    size_t next;
    size_t calls;
    bool offset_known;
    uint64_t offset;
    unsigned max_credit;
} up_t;

static int up_cb(berth_client_t *c, unsigned credit, void *user)
{
    up_t *u = user;
    u->calls++;
    if (credit > u->max_credit)
        u->max_credit = credit;
    if (!u->offset_known)
        return 0; /* wait for the server to say where to start */
    while (credit > 0 && u->next < u->total) {
        uint8_t buf[100];
        memset(buf, (int)(u->offset + u->next), sizeof(buf));
        if (berth_client_send_chunk(c, buf, sizeof(buf)) < 0)
            return -1;
        u->next++;
        credit--;
    }
    /* The window is full now: one more must be refused. */
    if (credit == 0 && u->next < u->total && berth_client_send_chunk(c, "x", 1) == 0)
        return -1;
    return u->next == u->total ? 1 : 0;
}

static int offset_cb(const msgpack_object *data, void *user)
{
    up_t *u = user;
    if (data && berth_mp_get_u64(data, "offset", &u->offset, NULL) == 0)
        u->offset_known = true;
    return 0;
}

static void test_upload_window(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    up_t u = {.total = 205, .offset_known = true};
    berth_result_t r;
    assert_int_equal(berth_client_call(c, "upload", NULL, 0, 0, NULL, up_cb, &u, &r, &err), 0);
    uint64_t chunks = 0, bytes = 0, max_unacked = 99;
    berth_mp_get_u64(r.result, "chunks", &chunks, NULL);
    berth_mp_get_u64(r.result, "bytes", &bytes, NULL);
    berth_mp_get_u64(r.result, "max_unacked", &max_unacked, NULL);
    assert_int_equal(chunks, 205);
    assert_int_equal(bytes, 205 * 100);
    /* Never more than the window of 8 unacknowledged chunks. */
    assert_int_equal(max_unacked, 8);
    assert_int_equal(u.max_credit, 8);
    /* Credit came back in rounds; the producer was called again each time. */
    assert_true(u.calls >= 205 / 8);
    /* Chunks outside a call are refused. */
    assert_int_equal(berth_client_send_chunk(c, "x", 1), -1);
    berth_client_free(c);
}

static void test_upload_waits_for_offset(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    up_t u = {.total = 20};
    berth_result_t r;
    assert_int_equal(
        berth_client_call(c, "upload_offset", NULL, 0, 0, offset_cb, up_cb, &u, &r, &err), 0);
    uint64_t chunks = 0, first = 0;
    berth_mp_get_u64(r.result, "chunks", &chunks, NULL);
    berth_mp_get_u64(r.result, "first", &first, NULL);
    assert_int_equal(chunks, 20);
    assert_int_equal(first, 3); /* started from the offset the server sent */
    /* A producer that made no progress is not spun: called once at the
     * start, then once per input event, then per credit round. */
    assert_true(u.calls < 20);
    berth_client_free(c);
}

static berth_client_t *g_alarm_client;
static void on_alarm(int sig)
{
    (void)sig;
    berth_client_interrupt(g_alarm_client);
}

static void test_interrupt_sends_cancel(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    g_alarm_client = c;
    struct sigaction sa = {.sa_handler = on_alarm};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_value = {0, 100 * 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    berth_error_t *err = NULL;
    berth_result_t r;
    uint64_t t0 = berth_mono_ms();
    assert_int_equal(berth_client_call(c, "hang", NULL, 0, 0, NULL, NULL, NULL, &r, &err), -1);
    uint64_t dt = berth_mono_ms() - t0;
    assert_int_equal(err->code, BERTH_E_CANCELED);
    /* The server's answer to our $cancel (not a local give-up). */
    assert_string_equal(err->message, "hang canceled by the caller");
    assert_true(dt >= 90 && dt < 1500);
    berth_error_free(&err);
    signal(SIGALRM, SIG_DFL);
    assert_int_equal(berth_client_call(c, "echo", NULL, 0, 0, NULL, NULL, NULL, &r, &err), 0);
    berth_client_free(c);
}

static void test_timeout(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    berth_result_t r;
    uint64_t t0 = berth_mono_ms();
    assert_int_equal(berth_client_call(c, "hang", NULL, 0, 200, NULL, NULL, NULL, &r, &err), -1);
    uint64_t dt = berth_mono_ms() - t0;
    assert_int_equal(err->code, BERTH_E_DEADLINE_EXCEEDED);
    assert_string_equal(err->message, "hang timed out after 200ms");
    assert_true(dt >= 190 && dt < 1500);
    berth_error_free(&err);
    berth_client_free(c);
}

static void test_request_from_peer(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    berth_result_t r;
    assert_int_equal(berth_client_call(c, "reqback", NULL, 0, 0, NULL, NULL, NULL, &r, &err), 0);
    assert_true(berth_mp_str_eq(berth_mp_get(r.result, "code"), "unimplemented"));
    berth_client_free(c);
}

static void test_peer_closes(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    berth_result_t r;
    assert_int_equal(berth_client_call(c, "close", NULL, 0, 0, NULL, NULL, NULL, &r, &err), -1);
    assert_int_equal(err->code, BERTH_E_UNAVAILABLE);
    assert_non_null(strstr(err->message, "closed while waiting for close"));
    berth_error_free(&err);
    /* Later calls fail fast. */
    assert_int_equal(berth_client_call(c, "echo", NULL, 0, 0, NULL, NULL, NULL, &r, &err), -1);
    assert_int_equal(err->code, BERTH_E_UNAVAILABLE);
    berth_error_free(&err);
    berth_client_free(c);
}

static void test_peer_protocol_errors(void **state)
{
    (void)state;
    berth_error_t *err = NULL;
    berth_result_t r;
    berth_client_t *c = connect_ok();
    assert_int_equal(berth_client_call(c, "bigframe", NULL, 0, 0, NULL, NULL, NULL, &r, &err), -1);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    assert_non_null(strstr(err->message, "protocol error"));
    berth_error_free(&err);
    berth_client_free(c);

    c = connect_ok();
    assert_int_equal(berth_client_call(c, "garbage", NULL, 0, 0, NULL, NULL, NULL, &r, &err), -1);
    assert_non_null(strstr(err->message, "protocol error"));
    berth_error_free(&err);
    berth_client_free(c);
}

static void test_pipeline(void **state)
{
    (void)state;
    berth_client_t *c = connect_ok();
    berth_error_t *err = NULL;
    assert_int_equal(berth_client_pipeline(c, "echo", NULL, 0, 5000, 64, &err), 0);
    assert_int_equal(berth_client_pipeline(c, "fail", NULL, 0, 100, 16, &err), 100);
    /* depth 1 is sequential; still works. */
    assert_int_equal(berth_client_pipeline(c, "echo", NULL, 0, 10, 1, &err), 0);
    /* The connection stays usable for ordinary calls. */
    berth_result_t r;
    assert_int_equal(berth_client_call(c, "echo", NULL, 0, 0, NULL, NULL, NULL, &r, &err), 0);
    berth_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_missing_daemon),
        cmocka_unit_test(test_call_and_result),
        cmocka_unit_test(test_server_error),
        cmocka_unit_test(test_download_acks),
        cmocka_unit_test(test_stream_cb_cancels),
        cmocka_unit_test(test_upload_window),
        cmocka_unit_test(test_upload_waits_for_offset),
        cmocka_unit_test(test_interrupt_sends_cancel),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_request_from_peer),
        cmocka_unit_test(test_peer_closes),
        cmocka_unit_test(test_peer_protocol_errors),
        cmocka_unit_test(test_pipeline),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
