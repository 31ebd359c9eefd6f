/* SPDX-License-Identifier: Apache-2.0 */
/* A plugin exercising the SDK for test_plugin_sdk.py: unary echo, an upload
 * stream that counts bytes with held acks, a download stream respecting
 * credit, a call to another method through the core, and cancellation. */
#include <string.h>

#include "berth/plugin.h"

static void handle_echo(berth_req_t *r, const msgpack_object *params)
{
    msgpack_packer *pk = berth_req_reply_begin(r);
    msgpack_pack_map(pk, 3);
    berth_mp_pack_str(pk, "params");
    msgpack_pack_object(pk, *params);
    berth_mp_kv_str(pk, "ns", berth_req_namespace(r));
    berth_mp_kv_str(pk, "caller", berth_req_caller_id(r));
    berth_req_reply_end(r);
}

typedef struct {
    uint64_t bytes;
    uint32_t chunks;
} upload_t;

static void upload_chunk(berth_req_t *r, const msgpack_object *data)
{
    upload_t *u = berth_req_data(r);
    if (!data) {
        msgpack_packer *pk = berth_req_reply_begin(r);
        msgpack_pack_map(pk, 2);
        berth_mp_kv_u64(pk, "bytes", u->bytes);
        berth_mp_kv_u64(pk, "chunks", u->chunks);
        free(u);
        berth_req_reply_end(r);
        return;
    }
    if (data->type == MSGPACK_OBJECT_BIN)
        u->bytes += data->via.bin.size;
    u->chunks++;
    /* hold every other ack and release both together */
    if (u->chunks % 2 == 1)
        berth_req_hold_ack(r);
    else
        berth_req_ack(r, 1);
}

static void handle_upload(berth_req_t *r, const msgpack_object *params)
{
    berth_req_set_data(r, calloc(1, sizeof(upload_t)));
    berth_req_set_stream_cb(r, upload_chunk);
}

typedef struct {
    uint64_t left;
} dl_t;

static void dl_pump(berth_req_t *r)
{
    dl_t *d = berth_req_data(r);
    while (d->left > 0 && berth_req_stream_credit(r) > 0) {
        msgpack_packer *pk = berth_req_stream_begin(r);
        msgpack_pack_uint64(pk, d->left);
        berth_req_stream_end_chunk(r);
        d->left--;
    }
    if (d->left == 0) {
        free(d);
        berth_req_set_data(r, NULL);
        berth_req_stream_close(r);
        berth_req_reply_empty(r);
    }
}

static void handle_download(berth_req_t *r, const msgpack_object *params)
{
    dl_t *d = calloc(1, sizeof(*d));
    uint64_t n = 0;
    berth_mp_get_u64(params, "n", &n, NULL);
    d->left = n;
    berth_req_set_data(r, d);
    berth_req_set_writable_cb(r, dl_pump);
    dl_pump(r);
}

static void on_cancel(berth_req_t *r)
{
    berth_req_failf(r, BERTH_E_CANCELED, "hang canceled");
}

static void handle_hang(berth_req_t *r, const msgpack_object *params)
{
    berth_req_set_cancel_cb(r, on_cancel);
}

static void relay_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                       void *data)
{
    berth_req_t *r = data;
    if (err) {
        berth_req_failf(r, err->code, "relay: %s", err->message);
        return;
    }
    msgpack_packer *pk = berth_req_reply_begin(r);
    msgpack_pack_object(pk, *res);
    berth_req_reply_end(r);
}

static void handle_relay(berth_req_t *r, const msgpack_object *params)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "x", "relayed");
    berth_error_t *err = NULL;
    if (!berth_call(berth_req_plugin(r), "other.method", b.buf.data, b.buf.size, 0, relay_done,
                    NULL, r, &err))
        berth_req_fail(r, &err);
    berth_mpbuf_destroy(&b);
}

static int init(berth_plugin_t *p, berth_error_t **err)
{
    const msgpack_object *cfg = berth_plugin_config(p);
    bool fail = false;
    berth_mp_get_bool(cfg, "fail_init", &fail, err);
    if (fail)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "config key fail_init is set");
    return 0;
}

static const berth_method_t methods[] = {
    {"t.echo", handle_echo, BERTH_METHOD_IDEMPOTENT, NULL},
    {"t.upload", handle_upload, 0, NULL},
    {"t.download", handle_download, 0, NULL},
    {"t.hang", handle_hang, 0, NULL},
    {"t.relay", handle_relay, BERTH_METHOD_INTERNAL, "core,other"},
};

int main(int argc, char **argv)
{
    berth_plugin_desc_t d = {
        .id = "sdktest",
        .type = "io.berth.test.v1",
        .version = "0.1.0",
        .methods = methods,
        .n_methods = BERTH_ARRAY_SIZE(methods),
        .init = init,
    };
    return berth_plugin_main(&d, argc, argv);
}
