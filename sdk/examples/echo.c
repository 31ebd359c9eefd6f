/* SPDX-License-Identifier: Apache-2.0 */
/* berth-echo: the example plugin of the SDK, and the plugin the core's e2e
 * tests and benchmarks drive. It serves:
 *   echo.echo    {data?, delay_ms?} → {data, pid, namespace, caller}   idempotent
 *   echo.pid     {} → {pid}                                            idempotent
 *   echo.sleep   {ms} → {slept_ms}            (cancellable; not idempotent)
 *   echo.stream  {n, size?} → streams n chunks to the caller → {n}
 *   echo.upload  caller streams chunks → {chunks, bytes}
 *   echo.call    {method, params?} → {result} (calls through the core)
 *   echo.publish {topic, event?} → {}
 *   echo.crash   {} → the process aborts
 *   echo.freeze  {ms} → blocks its own loop (to exercise the health watchdog)
 *   echo.internal {} → {}   internal: callable by plugin "echo" only
 *   echo.watch   {} → streams one chunk {pid} then stays open until
 *                canceled; resumable (re-sent to a replacement instance)
 *   echo.record  {key, delay_ms?, after_ms?} → {records, replayed}
 *                a mutation with replay: stores one record per request in
 *                <root>/records, named by its request_id when it has one, so
 *                a repeat of that request_id answers from the record instead
 *                of adding a second one. delay_ms waits before the change,
 *                after_ms after it (before the answer): tests kill the plugin
 *                in either window and see the core re-send the request.
 * Flags: --crash-at-start (exit 1 before connecting; for crash-loop tests). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "berth/plugin.h"

static void pack_caller(msgpack_packer *pk, berth_req_t *r)
{
    msgpack_pack_map(pk, 3);
    berth_mp_kv_str(pk, "kind", berth_req_caller_kind(r));
    berth_mp_kv_str(pk, "id", berth_req_caller_id(r));
    berth_mp_kv_u64(pk, "uid", berth_req_caller_uid(r));
}

/* ---- echo.echo ----------------------------------------------------------- */

typedef struct {
    uv_timer_t timer;
    berth_req_t *req;
    msgpack_sbuffer data; /* the packed `data` param */
} delayed_t;

static void reply_echo(berth_req_t *r, const void *data, size_t len)
{
    msgpack_packer *pk = berth_req_reply_begin(r);
    msgpack_pack_map(pk, 4);
    berth_mp_pack_str(pk, "data");
    if (len)
        pk->callback(pk->data, (const char *)data, len); /* already packed */
    else
        msgpack_pack_nil(pk);
    berth_mp_kv_i64(pk, "pid", getpid());
    berth_mp_kv_str(pk, "namespace", berth_req_namespace(r));
    berth_mp_pack_str(pk, "caller");
    pack_caller(pk, r);
    berth_req_reply_end(r);
}

static void delayed_closed(uv_handle_t *h)
{
    delayed_t *d = h->data;
    msgpack_sbuffer_destroy(&d->data);
    free(d);
}

static void delayed_fire(uv_timer_t *t)
{
    delayed_t *d = t->data;
    if (d->req) {
        reply_echo(d->req, d->data.data, d->data.size);
        d->req = NULL;
    }
    uv_close((uv_handle_t *)&d->timer, delayed_closed);
}

static void delayed_cancel(berth_req_t *r)
{
    delayed_t *d = berth_req_data(r);
    if (!d || !d->req)
        return;
    d->req = NULL;
    berth_log(BERTH_LOG_INFO, "msg=\"request canceled\" method=%s", berth_req_method(r));
    berth_req_failf(r, BERTH_E_CANCELED, "echo canceled");
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, delayed_closed);
}

static void handle_echo(berth_req_t *r, const msgpack_object *params)
{
    const msgpack_object *data = berth_mp_get(params, "data");
    uint64_t delay = 0;
    berth_error_t *err = NULL;
    if (berth_mp_get_u64(params, "delay_ms", &delay, &err) < 0) {
        berth_req_fail(r, &err);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (data) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, *data);
    }
    if (!delay) {
        reply_echo(r, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return;
    }
    delayed_t *d = calloc(1, sizeof(*d));
    if (!d) {
        msgpack_sbuffer_destroy(&sb);
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    d->req = r;
    d->data = sb;
    uv_timer_init(berth_plugin_loop(berth_req_plugin(r)), &d->timer);
    d->timer.data = d;
    berth_req_set_data(r, d);
    berth_req_set_cancel_cb(r, delayed_cancel);
    uv_timer_start(&d->timer, delayed_fire, delay, 0);
}

static void handle_pid(berth_req_t *r, const msgpack_object *params)
{
    msgpack_packer *pk = berth_req_reply_begin(r);
    msgpack_pack_map(pk, 1);
    berth_mp_kv_i64(pk, "pid", getpid());
    berth_req_reply_end(r);
}

/* ---- echo.sleep -------------------------------------------------------------- */

static void handle_sleep(berth_req_t *r, const msgpack_object *params)
{
    uint64_t ms = 0;
    berth_error_t *err = NULL;
    if (berth_mp_get_u64(params, "ms", &ms, &err) != 0) {
        if (!err)
            berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "parameter ms is required");
        berth_req_fail(r, &err);
        return;
    }
    delayed_t *d = calloc(1, sizeof(*d));
    if (!d) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    d->req = r;
    msgpack_sbuffer_init(&d->data);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &d->data, msgpack_sbuffer_write);
    msgpack_pack_uint64(&pk, ms);
    uv_timer_init(berth_plugin_loop(berth_req_plugin(r)), &d->timer);
    d->timer.data = d;
    berth_req_set_data(r, d);
    berth_req_set_cancel_cb(r, delayed_cancel);
    uv_timer_start(&d->timer, delayed_fire, ms, 0);
    /* Tests wait for this line before killing the plugin under a request. */
    berth_log(BERTH_LOG_INFO, "msg=\"request started\" method=echo.sleep");
}

/* ---- echo.stream: server → caller, with flow control --------------------------- */

typedef struct {
    uint64_t n, sent, size;
} stream_t;

static void stream_more(berth_req_t *r)
{
    stream_t *s = berth_req_data(r);
    if (berth_req_canceled(r)) {
        free(s);
        berth_req_set_data(r, NULL);
        berth_req_failf(r, BERTH_E_CANCELED, "echo.stream canceled");
        return;
    }
    while (s->sent < s->n && berth_req_stream_credit(r) > 0) {
        msgpack_packer *pk = berth_req_stream_begin(r);
        msgpack_pack_map(pk, 2);
        berth_mp_kv_u64(pk, "i", s->sent);
        berth_mp_pack_str(pk, "bytes");
        msgpack_pack_bin(pk, s->size);
        static const char zeros[4096];
        for (uint64_t left = s->size; left;) {
            size_t k = left > sizeof(zeros) ? sizeof(zeros) : left;
            msgpack_pack_bin_body(pk, zeros, k);
            left -= k;
        }
        berth_req_stream_end_chunk(r);
        s->sent++;
    }
    if (s->sent == s->n) {
        uint64_t n = s->n;
        free(s);
        berth_req_set_data(r, NULL);
        berth_req_stream_close(r);
        msgpack_packer *pk = berth_req_reply_begin(r);
        msgpack_pack_map(pk, 1);
        berth_mp_kv_u64(pk, "n", n);
        berth_req_reply_end(r);
    }
}

static void stream_cancel(berth_req_t *r)
{
    stream_more(r);
}

static void handle_stream(berth_req_t *r, const msgpack_object *params)
{
    stream_t *s = calloc(1, sizeof(*s));
    berth_error_t *err = NULL;
    if (!s) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (berth_mp_get_u64(params, "n", &s->n, &err) < 0 ||
        berth_mp_get_u64(params, "size", &s->size, &err) < 0) {
        free(s);
        berth_req_fail(r, &err);
        return;
    }
    if (s->size > 1024 * 1024) {
        free(s);
        berth_req_failf(r, BERTH_E_INVALID_ARGUMENT, "size must be at most 1 MiB");
        return;
    }
    berth_req_set_data(r, s);
    berth_req_set_writable_cb(r, stream_more);
    berth_req_set_cancel_cb(r, stream_cancel);
    stream_more(r);
}

/* ---- echo.upload: caller → server ------------------------------------------------ */

typedef struct {
    uint64_t chunks, bytes;
} upload_t;

static void upload_chunk(berth_req_t *r, const msgpack_object *data)
{
    upload_t *u = berth_req_data(r);
    if (!data) {
        msgpack_packer *pk = berth_req_reply_begin(r);
        msgpack_pack_map(pk, 2);
        berth_mp_kv_u64(pk, "chunks", u->chunks);
        berth_mp_kv_u64(pk, "bytes", u->bytes);
        free(u);
        berth_req_set_data(r, NULL);
        berth_req_reply_end(r);
        return;
    }
    u->chunks++;
    if (data->type == MSGPACK_OBJECT_BIN)
        u->bytes += data->via.bin.size;
    else if (data->type == MSGPACK_OBJECT_STR)
        u->bytes += data->via.str.size;
}

static void upload_cancel(berth_req_t *r)
{
    free(berth_req_data(r));
    berth_req_set_data(r, NULL);
    berth_req_failf(r, BERTH_E_CANCELED, "echo.upload canceled");
}

static void handle_upload(berth_req_t *r, const msgpack_object *params)
{
    upload_t *u = calloc(1, sizeof(*u));
    if (!u) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    berth_req_set_data(r, u);
    berth_req_set_stream_cb(r, upload_chunk);
    berth_req_set_cancel_cb(r, upload_cancel);
}

/* ---- echo.call: plugin → core → plugin ------------------------------------------ */

static void call_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *result,
                      void *data)
{
    berth_req_t *r = data;
    if (err) {
        berth_req_failf(r, err->code, "%s", err->message);
        return;
    }
    msgpack_packer *pk = berth_req_reply_begin(r);
    msgpack_pack_map(pk, 1);
    berth_mp_pack_str(pk, "result");
    msgpack_pack_object(pk, *result);
    berth_req_reply_end(r);
}

static void handle_call(berth_req_t *r, const msgpack_object *params)
{
    char *method = NULL;
    berth_error_t *err = NULL;
    if (berth_mp_get_strdup(params, "method", &method, &err) != 0) {
        if (!err)
            berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "parameter method is required");
        berth_req_fail(r, &err);
        return;
    }
    const msgpack_object *p = NULL;
    if (berth_mp_get_map(params, "params", &p, &err) < 0) {
        free(method);
        berth_req_fail(r, &err);
        return;
    }
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    if (p)
        msgpack_pack_object(&b.pk, *p);
    else
        msgpack_pack_map(&b.pk, 0);
    if (!berth_call(berth_req_plugin(r), method, b.buf.data, b.buf.size, 0, call_done, NULL, r,
                    &err))
        berth_req_fail(r, &err);
    berth_mpbuf_destroy(&b);
    free(method);
}

/* ---- echo.publish -------------------------------------------------------------- */

static void publish_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *result,
                         void *data)
{
    berth_req_t *r = data;
    if (err)
        berth_req_failf(r, err->code, "publish: %s", err->message);
    else
        berth_req_reply_empty(r);
}

static void handle_publish(berth_req_t *r, const msgpack_object *params)
{
    char *topic = NULL;
    berth_error_t *err = NULL;
    if (berth_mp_get_strdup(params, "topic", &topic, &err) != 0) {
        if (!err)
            berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "parameter topic is required");
        berth_req_fail(r, &err);
        return;
    }
    const msgpack_object *ev = NULL;
    if (berth_mp_get_map(params, "event", &ev, &err) < 0) {
        free(topic);
        berth_req_fail(r, &err);
        return;
    }
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    if (ev)
        msgpack_pack_object(&b.pk, *ev);
    else
        msgpack_pack_map(&b.pk, 0);
    if (berth_publish(berth_req_plugin(r), topic, berth_req_namespace(r), b.buf.data, b.buf.size,
                      publish_done, r) < 0)
        berth_req_failf(r, BERTH_E_UNAVAILABLE, "publish failed: not connected");
    berth_mpbuf_destroy(&b);
    free(topic);
}

/* ---- misbehaviour on request ------------------------------------------------------ */

static void handle_crash(berth_req_t *r, const msgpack_object *params)
{
    berth_log(BERTH_LOG_WARN, "msg=\"crashing on request\"");
    abort();
}

static void freeze_now(uv_timer_t *t)
{
    uint64_t ms = *(uint64_t *)t->data;
    free(t->data);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    /* Deliberately blocks the loop: nothing, not even plugin.health, is
     * answered meanwhile. */
    usleep((useconds_t)(ms > 600000 ? 600000 : ms) * 1000);
}

static void handle_freeze(berth_req_t *r, const msgpack_object *params)
{
    uint64_t ms = 1000;
    berth_mp_get_u64(params, "ms", &ms, NULL);
    /* Replies go out when the loop is about to poll (writes are batched per
     * loop turn), so block a little later, after the reply has left. */
    uv_timer_t *t = malloc(sizeof(*t));
    uint64_t *arg = malloc(sizeof(*arg));
    *arg = ms;
    uv_timer_init(berth_plugin_loop(berth_req_plugin(r)), t);
    t->data = arg;
    uv_timer_start(t, freeze_now, 20, 0);
    berth_req_reply_empty(r);
}

static void handle_internal(berth_req_t *r, const msgpack_object *params)
{
    msgpack_packer *pk = berth_req_reply_begin(r);
    msgpack_pack_map(pk, 1);
    berth_mp_pack_str(pk, "caller");
    pack_caller(pk, r);
    berth_req_reply_end(r);
}

/* ---- echo.watch: a long-lived, resumable stream ------------------------------- */

static void watch_cancel(berth_req_t *r)
{
    berth_log(BERTH_LOG_INFO, "msg=\"request canceled\" method=echo.watch");
    berth_req_failf(r, BERTH_E_CANCELED, "echo.watch canceled");
}

static void handle_watch(berth_req_t *r, const msgpack_object *params)
{
    berth_req_set_cancel_cb(r, watch_cancel);
    msgpack_packer *pk = berth_req_stream_begin(r);
    msgpack_pack_map(pk, 1);
    berth_mp_kv_i64(pk, "pid", getpid());
    berth_req_stream_end_chunk(r);
}

/* ---- echo.record: a replayable mutation ------------------------------------ */

typedef struct {
    berth_req_t *req;
    uv_timer_t timer;
    uv_work_t work;
    char key[65];
    char name[80]; /* file name of the record */
    uint64_t delay_ms, after_ms;
    bool applied;
    uint64_t records; /* result */
    bool replayed;
    int err; /* errno of the change, 0 on success */
} record_t;

static char g_records_dir[4096];

static bool valid_token(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
            return false;
    return true;
}

static uint64_t count_records(void)
{
    uint64_t n = 0;
    DIR *d = opendir(g_records_dir);
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.' && strncmp(e->d_name, "tmp-", 4) != 0)
            n++;
    closedir(d);
    return n;
}

/* Pool thread: the record and its request_id are one file, made by rename,
 * so the change and the replay record can never be apart. */
static void record_work(uv_work_t *w)
{
    record_t *rc = w->data;
    char path[4200], tmp[4200];
    snprintf(path, sizeof(path), "%s/%s", g_records_dir, rc->name);
    if (access(path, F_OK) == 0) {
        rc->replayed = true;
        rc->records = count_records();
        return;
    }
    snprintf(tmp, sizeof(tmp), "%s/tmp-%s", g_records_dir, rc->name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, rc->key, strlen(rc->key)) < 0 || fsync(fd) < 0 ||
        rename(tmp, path) < 0) {
        rc->err = errno;
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return;
    }
    close(fd);
    rc->records = count_records();
}

static void record_closed(uv_handle_t *h)
{
    free(h->data);
}

static void record_reply(record_t *rc)
{
    berth_req_t *r = rc->req;
    if (rc->err) {
        berth_req_failf(r, BERTH_E_INTERNAL, "store record in %s: %s", g_records_dir,
                        strerror(rc->err));
    } else {
        msgpack_packer *pk = berth_req_reply_begin(r);
        msgpack_pack_map(pk, 2);
        berth_mp_kv_u64(pk, "records", rc->records);
        berth_mp_kv_bool(pk, "replayed", rc->replayed);
        berth_req_reply_end(r);
    }
    uv_close((uv_handle_t *)&rc->timer, record_closed);
}

static void record_timer(uv_timer_t *t);

static void record_done(uv_work_t *w, int status)
{
    record_t *rc = w->data;
    rc->applied = true;
    if (status < 0)
        rc->err = ECANCELED;
    if (rc->after_ms && !rc->err) {
        berth_log(BERTH_LOG_INFO, "msg=\"record stored; waiting before the answer\" name=%s",
                  rc->name);
        uv_timer_start(&rc->timer, record_timer, rc->after_ms, 0);
        return;
    }
    record_reply(rc);
}

static void record_timer(uv_timer_t *t)
{
    record_t *rc = t->data;
    if (rc->applied) {
        record_reply(rc);
        return;
    }
    uv_queue_work(t->loop, &rc->work, record_work, record_done);
}

static void handle_record(berth_req_t *r, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    _cleanup_free_ char *key = NULL;
    record_t *rc = calloc(1, sizeof(*rc));
    if (!rc) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (berth_mp_get_strdup(params, "key", &key, &err) < 0 ||
        berth_mp_get_u64(params, "delay_ms", &rc->delay_ms, &err) < 0 ||
        berth_mp_get_u64(params, "after_ms", &rc->after_ms, &err) < 0) {
        free(rc);
        berth_req_fail(r, &err);
        return;
    }
    if (!key || !valid_token(key, 64)) {
        free(rc);
        berth_req_failf(r, BERTH_E_INVALID_ARGUMENT,
                        "key is required: 1-64 characters of a-z, A-Z, 0-9, - and _");
        return;
    }
    snprintf(rc->key, sizeof(rc->key), "%s", key);
    const char *rid = berth_req_request_id(r);
    if (rid && *rid) {
        if (!valid_token(rid, 64)) {
            free(rc);
            berth_req_failf(r, BERTH_E_INVALID_ARGUMENT,
                            "request_id must be 1-64 characters of a-z, A-Z, 0-9, - and _");
            return;
        }
        snprintf(rc->name, sizeof(rc->name), "rid-%s", rid);
    } else {
        /* No request_id: every request is a new record. */
        static unsigned seq;
        snprintf(rc->name, sizeof(rc->name), "pid%d-%u-%llu", (int)getpid(), ++seq,
                 (unsigned long long)berth_mono_ms());
    }
    rc->req = r;
    rc->work.data = rc;
    uv_timer_init(berth_plugin_loop(berth_req_plugin(r)), &rc->timer);
    rc->timer.data = rc;
    uv_timer_start(&rc->timer, record_timer, rc->delay_ms, 0);
    berth_log(BERTH_LOG_INFO, "msg=\"request started\" method=echo.record key=%s name=%s", rc->key,
              rc->name);
}

static const berth_method_t methods[] = {
    {"echo.echo", handle_echo, BERTH_METHOD_IDEMPOTENT, NULL},
    {"echo.pid", handle_pid, BERTH_METHOD_IDEMPOTENT, NULL},
    {"echo.sleep", handle_sleep, 0, NULL},
    {"echo.stream", handle_stream, 0, NULL},
    {"echo.upload", handle_upload, 0, NULL},
    {"echo.call", handle_call, 0, NULL},
    {"echo.publish", handle_publish, 0, NULL},
    {"echo.crash", handle_crash, 0, NULL},
    {"echo.freeze", handle_freeze, 0, NULL},
    {"echo.internal", handle_internal, BERTH_METHOD_INTERNAL, "echo"},
    {"echo.watch", handle_watch, BERTH_METHOD_RESUMABLE, NULL},
    {"echo.record", handle_record, BERTH_METHOD_REPLAY, NULL},
};

static int echo_init(berth_plugin_t *p, berth_error_t **err)
{
    const msgpack_object *cfg = berth_plugin_config(p);
    bool fail = false;
    if (berth_mp_get_bool(cfg, "fail_init", &fail, err) < 0)
        return -1;
    if (fail)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "fail_init is set in the config");
    snprintf(g_records_dir, sizeof(g_records_dir), "%s/records", berth_plugin_root(p));
    if (mkdir(g_records_dir, 0700) < 0 && errno != EEXIST)
        return berth_error_errno(err, errno, "create %s", g_records_dir);
    berth_log(BERTH_LOG_INFO, "msg=\"echo plugin initialised\"");
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--crash-at-start") == 0) {
            fprintf(stderr, "berth-echo: --crash-at-start given, exiting\n");
            return 1;
        }
    static const berth_plugin_desc_t desc = {
        .id = "echo",
        .type = "io.berth.example.echo.v1",
        .version = "0.1.0",
        .methods = methods,
        .n_methods = BERTH_ARRAY_SIZE(methods),
        .init = echo_init,
    };
    return berth_plugin_main(&desc, argc, argv);
}
