/* SPDX-License-Identifier: Apache-2.0 */
/* Frames and messages: every shape of docs/protocol.md and every malformed
 * input class (truncated, over limit, not an array, wrong types, deep
 * nesting, unknown type, lying counts, trailing bytes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* cmocka.h needs the headers above first: its own block keeps the order. */
#include <cmocka.h>

#include "frame.h"
#include "idmap.h"
#include "msg.h"

static ipc_msg_t *decode_buf(const void *data, size_t len, berth_error_t **err, bool *have,
                             uint32_t *id)
{
    uint8_t *raw = malloc(len ? len : 1);
    memcpy(raw, data, len);
    ipc_msg_t *m = NULL;
    *have = false;
    if (ipc_msg_decode(raw, len, NULL, &m, id, have, err) < 0)
        return NULL;
    return m;
}

static ipc_msg_t *decode_sb(berth_mpbuf_t *b, berth_error_t **err)
{
    bool have;
    uint32_t id;
    return decode_buf(b->buf.data, b->buf.size, err, &have, &id);
}

static void test_request_roundtrip(void **state)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_request_head(&b.pk, 42, "content.write");
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "namespace", "ns1");
    berth_mp_kv_u64(&b.pk, "total", 7);
    berth_error_t *err = NULL;
    ipc_msg_t *m = decode_sb(&b, &err);
    assert_non_null(m);
    assert_int_equal(m->type, IPC_REQUEST);
    assert_int_equal(m->msgid, 42);
    assert_string_equal(m->method, "content.write");
    uint64_t total = 0;
    assert_int_equal(berth_mp_get_u64(m->params, "total", &total, &err), 0);
    assert_int_equal(total, 7);
    const char *ns;
    size_t nl;
    assert_int_equal(berth_mp_get_str(m->params, "namespace", &ns, &nl, &err), 0);
    assert_int_equal(nl, 3);
    assert_memory_equal(ns, "ns1", 3);
    /* wrong type for a typed getter */
    assert_int_equal(berth_mp_get_str(m->params, "total", &ns, &nl, &err), -1);
    assert_non_null(err);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    assert_non_null(strstr(err->message, "total"));
    berth_error_free(&err);
    ipc_msg_free(m);
    berth_mpbuf_destroy(&b);
}

static void test_response_shapes(void **state)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_response_ok_head(&b.pk, 7);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "digest", "sha256:00");
    berth_error_t *err = NULL;
    ipc_msg_t *m = decode_sb(&b, &err);
    assert_non_null(m);
    assert_int_equal(m->type, IPC_RESPONSE);
    assert_int_equal(m->msgid, 7);
    assert_null(m->error);
    assert_true(berth_mp_str_eq(berth_mp_get(m->result, "digest"), "sha256:00"));
    ipc_msg_free(m);
    berth_mpbuf_destroy(&b);

    berth_mpbuf_init(&b);
    ipc_pack_response_error(&b.pk, 8, BERTH_E_NOT_FOUND, "image x not found");
    m = decode_sb(&b, &err);
    assert_non_null(m);
    assert_non_null(m->error);
    assert_int_equal(m->code, BERTH_E_NOT_FOUND);
    assert_string_equal(m->message, "image x not found");
    ipc_msg_free(m);
    berth_mpbuf_destroy(&b);
}

static void test_notify_and_stream_fields(void **state)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_stream_head(&b.pk, 9, true);
    berth_mp_pack_bin(&b.pk, "abc", 3);
    berth_error_t *err = NULL;
    ipc_msg_t *m = decode_sb(&b, &err);
    assert_non_null(m);
    assert_int_equal(m->type, IPC_NOTIFY);
    assert_string_equal(m->method, "$stream");
    uint32_t id, n;
    bool srv;
    const msgpack_object *data;
    assert_int_equal(ipc_stream_fields(m, &id, &srv, &n, &data, &err), 0);
    assert_int_equal(id, 9);
    assert_true(srv);
    assert_int_equal(data->type, MSGPACK_OBJECT_BIN);
    assert_int_equal(data->via.bin.size, 3);
    ipc_msg_free(m);
    berth_mpbuf_destroy(&b);

    berth_mpbuf_init(&b);
    ipc_pack_ack(&b.pk, 5, 3, false);
    m = decode_sb(&b, &err);
    assert_int_equal(ipc_stream_fields(m, &id, &srv, &n, &data, &err), 0);
    assert_int_equal(id, 5);
    assert_false(srv);
    assert_int_equal(n, 3);
    assert_null(data);
    ipc_msg_free(m);
    berth_mpbuf_destroy(&b);

    berth_mpbuf_init(&b);
    ipc_pack_cancel(&b.pk, 11);
    m = decode_sb(&b, &err);
    assert_int_equal(ipc_stream_fields(m, &id, &srv, &n, &data, &err), 0);
    assert_int_equal(id, 11);
    assert_false(srv);
    ipc_msg_free(m);
    berth_mpbuf_destroy(&b);

    /* stream control without a side is refused */
    berth_mpbuf_init(&b);
    ipc_pack_notify_head(&b.pk, "$ack");
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_u64(&b.pk, "id", 1);
    berth_mp_kv_u64(&b.pk, "n", 1);
    m = decode_sb(&b, &err);
    assert_non_null(m);
    assert_int_equal(ipc_stream_fields(m, &id, &srv, &n, &data, &err), -1);
    assert_non_null(strstr(err->message, "side"));
    berth_error_free(&err);
    ipc_msg_free(m);
    berth_mpbuf_destroy(&b);
}

static void expect_bad(const void *data, size_t len, const char *needle, bool want_id, uint32_t id)
{
    berth_error_t *err = NULL;
    bool have;
    uint32_t got = 0;
    ipc_msg_t *m = decode_buf(data, len, &err, &have, &got);
    assert_null(m);
    assert_non_null(err);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    if (!strstr(err->message, needle))
        fail_msg("error '%s' does not mention '%s'", err->message, needle);
    assert_int_equal(have, want_id);
    if (want_id)
        assert_int_equal(got, id);
    berth_error_free(&err);
}

static void test_malformed(void **state)
{
    /* not an array */
    const uint8_t not_array[] = {0x81, 0xa1, 'a', 0x01};
    expect_bad(not_array, sizeof(not_array), "not an array", false, 0);
    /* truncated: array of 4 with only 2 elements */
    const uint8_t trunc[] = {0x94, 0x00, 0x05};
    expect_bad(trunc, sizeof(trunc), "truncated", true, 5);
    /* unknown message type */
    const uint8_t unk[] = {0x93, 0x07, 0xa1, 'x', 0x80};
    expect_bad(unk, sizeof(unk), "unknown message type", false, 0);
    /* request with params not a map: msgid is still reported */
    const uint8_t badparams[] = {0x94, 0x00, 0x09, 0xa1, 'x', 0x01};
    expect_bad(badparams, sizeof(badparams), "params must be a map", true, 9);
    /* method not a string */
    const uint8_t badmethod[] = {0x94, 0x00, 0x03, 0x05, 0x80};
    expect_bad(badmethod, sizeof(badmethod), "method", true, 3);
    /* msgid too large (uint64) */
    const uint8_t bigid[] = {0x94, 0x00, 0xcf, 1, 0, 0, 0, 0, 0, 0, 0, 0xa1, 'x', 0x80};
    expect_bad(bigid, sizeof(bigid), "msgid", false, 0);
    /* lying count: array32 claiming 4 billion elements in 6 bytes */
    const uint8_t liar[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
    expect_bad(liar, sizeof(liar), "too many elements", false, 0);
    /* trailing bytes after one object */
    const uint8_t trailing[] = {0x93, 0x02, 0xa1, 'x', 0x80, 0x00};
    expect_bad(trailing, sizeof(trailing), "trailing", false, 0);
    /* reserved byte */
    const uint8_t reserved[] = {0xc1};
    expect_bad(reserved, sizeof(reserved), "0xc1", false, 0);
    /* deep nesting: 100 nested arrays */
    uint8_t deep[101];
    memset(deep, 0x91, 100);
    deep[100] = 0x00;
    expect_bad(deep, sizeof(deep), "nesting too deep", false, 0);
    /* a request whose params nest too deep is still answered by msgid */
    uint8_t deepreq[6 + 100];
    const uint8_t head[] = {0x94, 0x00, 0xcd, 0x01, 0x02, 0x91};
    memcpy(deepreq, head, sizeof(head));
    memset(deepreq + 5, 0x91, 100);
    deepreq[sizeof(deepreq) - 1] = 0x00;
    expect_bad(deepreq, sizeof(deepreq), "nesting too deep", true, 0x0102);
    /* response with an error that has no code */
    const uint8_t nocode[] = {0x94, 0x01, 0x01, 0x80, 0xc0};
    expect_bad(nocode, sizeof(nocode), "code", false, 0);
    /* empty */
    expect_bad("", 0, "empty", false, 0);
}

static int collect(uint8_t *p, size_t n, void *data)
{
    size_t *count = data;
    (*count)++;
    free(p);
    return 0;
}

static void test_framer(void **state)
{
    ipc_framer_t f;
    ipc_framer_init(&f, 1024);
    uint8_t buf[3 * 8];
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        ipc_frame_header(buf + off, 4);
        memcpy(buf + off + 4, "abcd", 4);
        off += 8;
    }
    size_t count = 0;
    berth_error_t *err = NULL;
    /* feed byte by byte: frames survive any split */
    for (size_t i = 0; i < off; i++)
        assert_int_equal(ipc_framer_feed(&f, buf + i, 1, collect, &count, &err), 0);
    assert_int_equal(count, 3);
    /* length over the limit: error before any allocation of that size */
    uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(ipc_framer_feed(&f, huge, 4, collect, &count, &err), -1);
    assert_non_null(strstr(err->message, "exceeds the limit"));
    berth_error_free(&err);
    ipc_framer_destroy(&f);
    ipc_framer_init(&f, 1024);
    uint8_t zero[4] = {0, 0, 0, 0};
    assert_int_equal(ipc_framer_feed(&f, zero, 4, collect, &count, &err), -1);
    assert_non_null(strstr(err->message, "zero length"));
    berth_error_free(&err);
    ipc_framer_destroy(&f);
}

static void test_idmap(void **state)
{
    ipc_idmap_t m;
    ipc_idmap_init(&m);
    static int vals[5000];
    for (uint32_t i = 0; i < 5000; i++)
        assert_int_equal(ipc_idmap_put(&m, i * 7919u, &vals[i]), 0);
    for (uint32_t i = 0; i < 5000; i += 2)
        assert_ptr_equal(ipc_idmap_del(&m, i * 7919u), &vals[i]);
    for (uint32_t i = 0; i < 5000; i++)
        assert_ptr_equal(ipc_idmap_get(&m, i * 7919u), (i % 2) ? &vals[i] : NULL);
    assert_int_equal(m.count, 2500);
    size_t n;
    void **all = ipc_idmap_values(&m, &n);
    assert_int_equal(n, 2500);
    free(all);
    ipc_idmap_destroy(&m);
}

static void test_clone(void **state)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "k", "value");
    msgpack_zone *z = NULL;
    msgpack_object o;
    berth_error_t *err = NULL;
    assert_int_equal(berth_mp_unpack(b.buf.data, b.buf.size, NULL, &z, &o, &err), 0);
    msgpack_zone *z2 = NULL;
    msgpack_object *c = berth_mp_clone(&o, &z2);
    msgpack_zone_free(z);
    memset(b.buf.data, 0, b.buf.size); /* the clone must not point into the source */
    berth_mpbuf_destroy(&b);
    assert_true(berth_mp_str_eq(berth_mp_get(c, "k"), "value"));
    msgpack_zone_free(z2);
}

static void test_errors(void **state)
{
    berth_error_t *err = NULL;
    assert_int_equal(berth_error_set(&err, BERTH_E_NOT_FOUND, "image %s not found", "x"), -1);
    berth_error_wrap(&err, "pull %s", "x");
    assert_string_equal(err->message, "pull x: image x not found");
    assert_string_equal(berth_code_name(err->code), "not_found");
    assert_int_equal(berth_code_parse("deadline_exceeded", 17), BERTH_E_DEADLINE_EXCEEDED);
    berth_error_free(&err);
    assert_null(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_roundtrip),
        cmocka_unit_test(test_response_shapes),
        cmocka_unit_test(test_notify_and_stream_fields),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_framer),
        cmocka_unit_test(test_idmap),
        cmocka_unit_test(test_clone),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
