/* SPDX-License-Identifier: Apache-2.0 */
/* Connections over a real socketpair on one libuv loop: messages both ways,
 * large frames split across reads, malformed bytes answered then closed, and
 * the write-queue limit closing a peer that does not read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <sys/socket.h>

#include "conn.h"

typedef struct {
    int got;
    int closed;
    uint32_t last_id;
    size_t last_bin;
    berth_code_t last_code;
} side_t;

static void on_msg(ipc_conn_t *c, ipc_msg_t *m, void *data)
{
    side_t *s = data;
    s->got++;
    s->last_id = m->msgid;
    if (m->type == IPC_REQUEST) {
        const msgpack_object *b = berth_mp_get(m->params, "blob");
        s->last_bin = b ? b->via.bin.size : 0;
        berth_mpbuf_t out;
        berth_mpbuf_init(&out);
        ipc_pack_response_ok_head(&out.pk, m->msgid);
        msgpack_pack_map(&out.pk, 0);
        ipc_conn_send_sbuf(c, &out.buf, false);
        berth_mpbuf_destroy(&out);
    } else if (m->type == IPC_RESPONSE && m->error) {
        s->last_code = m->code;
    }
    ipc_msg_free(m);
}

static void on_close(ipc_conn_t *c, void *data) { ((side_t *)data)->closed++; }

static void test_roundtrip_and_big_frames(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    side_t a = {0}, b = {0};
    ipc_conn_cbs_t cbs = {.on_message = on_msg, .on_close = on_close};
    ipc_conn_t *ca = ipc_conn_open_fd(&loop, sv[0], NULL, &cbs, &a, NULL);
    ipc_conn_t *cb = ipc_conn_open_fd(&loop, sv[1], NULL, &cbs, &b, NULL);
    assert_non_null(ca);
    assert_non_null(cb);
    static uint8_t blob[3 * 1024 * 1024];
    for (uint32_t i = 1; i <= 100; i++) {
        berth_mpbuf_t out;
        berth_mpbuf_init(&out);
        ipc_pack_request_head(&out.pk, i, "echo.echo");
        msgpack_pack_map(&out.pk, 1);
        berth_mp_pack_str(&out.pk, "blob");
        berth_mp_pack_bin(&out.pk, blob, i == 50 ? sizeof(blob) : 10);
        assert_int_equal(ipc_conn_send_sbuf(ca, &out.buf, false), 0);
        berth_mpbuf_destroy(&out);
    }
    while (a.got < 100)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(b.got, 100);
    assert_int_equal(a.last_id, 100);
    ipc_conn_close(ca, true);
    ipc_conn_close(cb, true);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.closed, 1);
    assert_int_equal(b.closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_malformed_is_answered_and_closed(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    side_t a = {0}, b = {0};
    ipc_conn_cbs_t cbs = {.on_message = on_msg, .on_close = on_close};
    ipc_conn_t *cb = ipc_conn_open_fd(&loop, sv[1], NULL, &cbs, &b, NULL);
    /* A request whose params are not a map: the receiver answers
     * invalid_argument for msgid 9, then closes. */
    const uint8_t bad[] = {0, 0, 0, 6, 0x94, 0x00, 0x09, 0xa1, 'x', 0x01};
    assert_int_equal(write(sv[0], bad, sizeof(bad)), (ssize_t)sizeof(bad));
    ipc_conn_t *ca = ipc_conn_open_fd(&loop, sv[0], NULL, &cbs, &a, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    (void)ca;
    (void)cb;
    assert_int_equal(a.got, 1);
    assert_int_equal(a.last_id, 9);
    assert_int_equal(a.last_code, BERTH_E_INVALID_ARGUMENT);
    assert_int_equal(b.closed, 1);
    assert_int_equal(a.closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_write_queue_limit(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    side_t a = {0};
    ipc_conn_cbs_t cbs = {.on_message = on_msg, .on_close = on_close};
    ipc_conn_opts_t o;
    ipc_conn_opts_default(&o);
    o.max_write_queue = 1024 * 1024;
    ipc_conn_t *ca = ipc_conn_open_fd(&loop, sv[0], &o, &cbs, &a, NULL);
    /* nobody reads sv[1] */
    static uint8_t chunk[64 * 1024];
    int rc = 0, sent = 0;
    for (int i = 0; i < 200 && rc == 0; i++, sent++) {
        berth_mpbuf_t out;
        berth_mpbuf_init(&out);
        ipc_pack_notify_head(&out.pk, "x.y");
        msgpack_pack_map(&out.pk, 1);
        berth_mp_pack_str(&out.pk, "d");
        berth_mp_pack_bin(&out.pk, chunk, sizeof(chunk));
        rc = ipc_conn_send_sbuf(ca, &out.buf, false);
        berth_mpbuf_destroy(&out);
    }
    assert_int_equal(rc, -1);
    assert_true(sent < 200);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.closed, 1);
    close(sv[1]);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_big_frames),
        cmocka_unit_test(test_malformed_is_answered_and_closed),
        cmocka_unit_test(test_write_queue_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
