/* SPDX-License-Identifier: Apache-2.0 */
/* libberth-plugin: connection to the core, registration, request dispatch,
 * outgoing calls, streams with flow control, events. One loop thread. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "berth/plugin.h"
#include "conn.h"
#include "idmap.h"

#define STREAM_WINDOW 8
/* Above this many queued bytes on the core connection every stream's credit
 * is 0 until the queue drains: many concurrent streams (each within its own
 * window of 8 MiB-sized chunks) must not add up past the queue limit. */
#define QUEUE_HIGH_WATER (16u * 1024 * 1024)

struct berth_plugin_s {
    const berth_plugin_desc_t *desc;
    uv_loop_t loop;
    ipc_conn_t *conn;
    ipc_idmap_t reqs;  /* peer msgid -> berth_req_t (requests we serve) */
    ipc_idmap_t calls; /* our msgid -> berth_call_t (requests we made) */
    uint32_t next_msgid;
    msgpack_zone *cfg_zone; /* owns config */
    const msgpack_object *config;
    msgpack_object empty_map;
    char *root, *state, *daemon_root;
    uint64_t event_seq;
    uv_signal_t sig_term, sig_int;
    uv_timer_t trim_timer; /* gives freed heap back once the plugin is idle */
    bool ready, stopping;
    bool starved; /* a stream was refused credit because of the queue */
    int exit_code;
};

struct berth_req_s {
    berth_plugin_t *p;
    uint32_t msgid;
    ipc_msg_t *msg;
    const char *ns;
    const char *caller_kind, *caller_id;
    uint32_t caller_uid;
    const char *request_id, *lease;
    uint64_t deadline;
    void *data;
    berth_mpbuf_t out;
    bool out_open;
    /* server -> caller stream */
    unsigned unacked;
    void (*writable_cb)(berth_req_t *r);
    bool out_stream_closed;
    /* caller -> server stream */
    berth_req_stream_cb stream_cb;
    bool hold;
    /* lifecycle */
    void (*cancel_cb)(berth_req_t *r);
    bool canceled;
    bool answered;
    int busy; /* >0 while a callback runs: free is deferred */
};

struct berth_call_s {
    berth_plugin_t *p;
    uint32_t msgid;
    berth_call_cb cb;
    berth_call_stream_cb stream_cb;
    void *data;
    unsigned unacked;
    void (*writable_cb)(berth_call_t *c, void *data);
    berth_mpbuf_t out;
    bool out_open;
};

/* ---------------------------------------------------------------------- */

uv_loop_t *berth_plugin_loop(berth_plugin_t *p)
{
    return &p->loop;
}
void *berth_plugin_data(berth_plugin_t *p)
{
    return p->desc->data;
}
const char *berth_plugin_id(berth_plugin_t *p)
{
    return p->desc->id;
}
const msgpack_object *berth_plugin_config(berth_plugin_t *p)
{
    return p->config;
}
const char *berth_plugin_root(berth_plugin_t *p)
{
    return p->root;
}
const char *berth_plugin_state(berth_plugin_t *p)
{
    return p->state;
}
const char *berth_plugin_daemon_root(berth_plugin_t *p)
{
    return p->daemon_root;
}

void berth_plugin_stop(berth_plugin_t *p)
{
    if (p->stopping)
        return;
    p->stopping = true;
    if (p->conn)
        ipc_conn_close(p->conn, true);
    else
        uv_stop(&p->loop);
}

static int send_buf(berth_plugin_t *p, berth_mpbuf_t *b, bool urgent)
{
    if (!p->conn)
        return -1;
    return ipc_conn_send_sbuf(p->conn, &b->buf, urgent);
}

/* ---- requests we serve ------------------------------------------------- */

berth_plugin_t *berth_req_plugin(berth_req_t *r)
{
    return r->p;
}
const char *berth_req_method(berth_req_t *r)
{
    return r->msg->method;
}
const char *berth_req_namespace(berth_req_t *r)
{
    return r->ns;
}
const char *berth_req_caller_kind(berth_req_t *r)
{
    return r->caller_kind;
}
const char *berth_req_caller_id(berth_req_t *r)
{
    return r->caller_id;
}
uint32_t berth_req_caller_uid(berth_req_t *r)
{
    return r->caller_uid;
}
const char *berth_req_request_id(berth_req_t *r)
{
    return r->request_id;
}
uint64_t berth_req_deadline(berth_req_t *r)
{
    return r->deadline;
}
const char *berth_req_lease(berth_req_t *r)
{
    return r->lease;
}
void berth_req_set_data(berth_req_t *r, void *data)
{
    r->data = data;
}
void *berth_req_data(berth_req_t *r)
{
    return r->data;
}
bool berth_req_canceled(berth_req_t *r)
{
    return r->canceled;
}
void berth_req_set_cancel_cb(berth_req_t *r, void (*cb)(berth_req_t *r))
{
    r->cancel_cb = cb;
}
void berth_req_set_stream_cb(berth_req_t *r, berth_req_stream_cb cb)
{
    r->stream_cb = cb;
}
void berth_req_set_writable_cb(berth_req_t *r, void (*cb)(berth_req_t *r))
{
    r->writable_cb = cb;
}
void berth_req_hold_ack(berth_req_t *r)
{
    r->hold = true;
}

static void req_free(berth_req_t *r)
{
    if (r->out_open)
        berth_mpbuf_destroy(&r->out);
    ipc_msg_free(r->msg);
    free(r);
}

/* Marks the request answered and frees it unless a callback is running. */
static void req_finish(berth_req_t *r)
{
    r->answered = true;
    if (ipc_idmap_get(&r->p->reqs, r->msgid) == r)
        ipc_idmap_del(&r->p->reqs, r->msgid);
    if (r->busy == 0)
        req_free(r);
}

static void req_enter(berth_req_t *r)
{
    r->busy++;
}
/* Returns false if the request was freed. */
static bool req_leave(berth_req_t *r)
{
    if (--r->busy == 0 && r->answered) {
        req_free(r);
        return false;
    }
    return !r->answered;
}

msgpack_packer *berth_req_reply_begin(berth_req_t *r)
{
    if (r->out_open)
        berth_mpbuf_destroy(&r->out);
    berth_mpbuf_init(&r->out);
    r->out_open = true;
    ipc_pack_response_ok_head(&r->out.pk, r->msgid);
    return &r->out.pk;
}

void berth_req_reply_end(berth_req_t *r)
{
    if (r->answered)
        return;
    send_buf(r->p, &r->out, false);
    berth_mpbuf_destroy(&r->out);
    r->out_open = false;
    req_finish(r);
}

void berth_req_reply_empty(berth_req_t *r)
{
    msgpack_pack_map(berth_req_reply_begin(r), 0);
    berth_req_reply_end(r);
}

void berth_req_reply_raw(berth_req_t *r, const void *packed, size_t len)
{
    berth_req_reply_begin(r);
    msgpack_sbuffer_write(&r->out.buf, packed, len);
    berth_req_reply_end(r);
}

void berth_req_fail(berth_req_t *r, berth_error_t **err)
{
    if (r->answered) {
        berth_error_free(err);
        return;
    }
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    berth_code_t code = (err && *err) ? (*err)->code : BERTH_E_INTERNAL;
    const char *msg = (err && *err && (*err)->message) ? (*err)->message : "internal error";
    if (code == BERTH_E_OK)
        code = BERTH_E_INTERNAL;
    berth_log(code == BERTH_E_INTERNAL ? BERTH_LOG_WARN : BERTH_LOG_DEBUG,
              "msg=\"request failed\" method=%s ns=%s code=%s err=\"%s\"", r->msg->method, r->ns,
              berth_code_name(code), msg);
    ipc_pack_response_error(&b.pk, r->msgid, code, msg);
    send_buf(r->p, &b, false);
    berth_mpbuf_destroy(&b);
    berth_error_free(err);
    req_finish(r);
}

void berth_req_failf(berth_req_t *r, berth_code_t code, const char *fmt, ...)
{
    berth_error_t *e = calloc(1, sizeof(*e));
    if (!e)
        return;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&e->message, fmt, ap) < 0)
        e->message = NULL;
    va_end(ap);
    berth_req_fail(r, &e);
}

msgpack_packer *berth_req_stream_begin(berth_req_t *r)
{
    if (r->out_open)
        berth_mpbuf_destroy(&r->out);
    berth_mpbuf_init(&r->out);
    r->out_open = true;
    ipc_pack_stream_head(&r->out.pk, r->msgid, true);
    return &r->out.pk;
}

int berth_req_stream_end_chunk(berth_req_t *r)
{
    if (!r->out_open)
        return -1;
    int rc = send_buf(r->p, &r->out, false);
    berth_mpbuf_destroy(&r->out);
    r->out_open = false;
    r->unacked++;
    return rc;
}

int berth_req_stream_send_bin(berth_req_t *r, const void *ptr, size_t n)
{
    berth_mp_pack_bin(berth_req_stream_begin(r), ptr, n);
    return berth_req_stream_end_chunk(r);
}

static bool queue_full(berth_plugin_t *p)
{
    if (p->conn && ipc_conn_write_queue(p->conn) > QUEUE_HIGH_WATER) {
        p->starved = true;
        return true;
    }
    return false;
}

unsigned berth_req_stream_credit(berth_req_t *r)
{
    if (queue_full(r->p))
        return 0;
    return r->unacked >= STREAM_WINDOW ? 0 : STREAM_WINDOW - r->unacked;
}

void berth_req_stream_close(berth_req_t *r)
{
    if (r->out_stream_closed || r->answered)
        return;
    r->out_stream_closed = true;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_stream_end(&b.pk, r->msgid, true);
    send_buf(r->p, &b, false);
    berth_mpbuf_destroy(&b);
}

static void send_ack(berth_plugin_t *p, uint32_t id, uint32_t n, bool from_server)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_ack(&b.pk, id, n, from_server);
    send_buf(p, &b, true);
    berth_mpbuf_destroy(&b);
}

void berth_req_ack(berth_req_t *r, uint32_t n)
{
    if (!r->answered && n > 0)
        send_ack(r->p, r->msgid, n, true);
}

/* ---- calls we make ----------------------------------------------------- */

static uint32_t next_id(berth_plugin_t *p)
{
    do {
        p->next_msgid++;
    } while (p->next_msgid == 0 || ipc_idmap_get(&p->calls, p->next_msgid));
    return p->next_msgid;
}

/* A request_id for a call to another plugin: a random prefix drawn once per
 * process (a restarted instance must never repeat an id its predecessor
 * used) and a counter. */
static void call_request_id(char out[41])
{
    static char prefix[25];
    static uint64_t seq;
    if (!prefix[0]) {
        uint8_t r[12];
        if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
            uint64_t v[2] = {(uint64_t)berth_now_ns(), (uint64_t)getpid()};
            memcpy(r, v, sizeof(r));
        }
        for (int i = 0; i < 12; i++)
            snprintf(prefix + 2 * i, 3, "%02x", r[i]);
    }
    snprintf(out, 41, "%s-%" PRIx64, prefix, ++seq);
}

/* The core's own methods take no request_id. */
static bool is_core_method(const char *m)
{
    return strncmp(m, "plugin.", 7) == 0 || strncmp(m, "plugins.", 8) == 0 ||
           strncmp(m, "events.", 7) == 0 || strcmp(m, "version") == 0 || strcmp(m, "info") == 0;
}

berth_call_t *berth_call(berth_plugin_t *p, const char *method, const void *params,
                         size_t params_len, uint32_t timeout_ms, berth_call_cb cb,
                         berth_call_stream_cb stream_cb, void *data, berth_error_t **err)
{
    if (!p->conn || p->stopping) {
        berth_error_set(err, BERTH_E_UNAVAILABLE, "not connected to berthd");
        return NULL;
    }
    berth_call_t *c = calloc(1, sizeof(*c));
    if (!c) {
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    c->p = p;
    c->msgid = next_id(p);
    c->cb = cb;
    c->stream_cb = stream_cb;
    c->data = data;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_request_head(&b.pk, c->msgid, method);
    /* Every call to another plugin carries a request_id (docs/protocol.md,
     * "Replays"): if the callee crashes while serving a mutation that it
     * deduplicates (`replay`), the core re-sends it and it applies once. */
    char rid[41] = "";
    if (!is_core_method(method))
        call_request_id(rid);
    if (!params || params_len == 0) {
        msgpack_pack_map(&b.pk, (timeout_ms ? 1 : 0) + (rid[0] ? 1 : 0));
        if (timeout_ms)
            berth_mp_kv_u64(&b.pk, "timeout_ms", timeout_ms);
        if (rid[0])
            berth_mp_kv_str(&b.pk, "request_id", rid);
    } else if (timeout_ms || rid[0]) {
        msgpack_zone *z = NULL;
        msgpack_object o;
        if (berth_mp_unpack(params, params_len, NULL, &z, &o, err) < 0 ||
            o.type != MSGPACK_OBJECT_MAP) {
            if (z)
                msgpack_zone_free(z);
            berth_mpbuf_destroy(&b);
            free(c);
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "call %s: params must be a map", method);
            return NULL;
        }
        if (berth_mp_get(&o, "request_id"))
            rid[0] = '\0'; /* the caller chose one */
        msgpack_pack_map(&b.pk, o.via.map.size + (timeout_ms ? 1 : 0) + (rid[0] ? 1 : 0));
        for (uint32_t i = 0; i < o.via.map.size; i++) {
            msgpack_pack_object(&b.pk, o.via.map.ptr[i].key);
            msgpack_pack_object(&b.pk, o.via.map.ptr[i].val);
        }
        if (timeout_ms)
            berth_mp_kv_u64(&b.pk, "timeout_ms", timeout_ms);
        if (rid[0])
            berth_mp_kv_str(&b.pk, "request_id", rid);
        msgpack_zone_free(z);
    } else {
        msgpack_sbuffer_write(&b.buf, params, params_len);
    }
    if (ipc_idmap_put(&p->calls, c->msgid, c) < 0 || send_buf(p, &b, false) < 0) {
        ipc_idmap_del(&p->calls, c->msgid);
        berth_mpbuf_destroy(&b);
        free(c);
        berth_error_set(err, BERTH_E_UNAVAILABLE, "call %s: connection to berthd lost", method);
        return NULL;
    }
    berth_mpbuf_destroy(&b);
    return c;
}

msgpack_packer *berth_call_stream_begin(berth_call_t *c)
{
    if (c->out_open)
        berth_mpbuf_destroy(&c->out);
    berth_mpbuf_init(&c->out);
    c->out_open = true;
    ipc_pack_stream_head(&c->out.pk, c->msgid, false);
    return &c->out.pk;
}

int berth_call_stream_end_chunk(berth_call_t *c)
{
    if (!c->out_open)
        return -1;
    int rc = send_buf(c->p, &c->out, false);
    berth_mpbuf_destroy(&c->out);
    c->out_open = false;
    c->unacked++;
    return rc;
}

unsigned berth_call_stream_credit(berth_call_t *c)
{
    if (queue_full(c->p))
        return 0;
    return c->unacked >= STREAM_WINDOW ? 0 : STREAM_WINDOW - c->unacked;
}

void berth_call_set_writable_cb(berth_call_t *c, void (*cb)(berth_call_t *c, void *data))
{
    c->writable_cb = cb;
}

void berth_call_stream_close(berth_call_t *c)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_stream_end(&b.pk, c->msgid, false);
    send_buf(c->p, &b, false);
    berth_mpbuf_destroy(&b);
}

void berth_call_cancel(berth_call_t *c)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_cancel(&b.pk, c->msgid);
    /* In order, never urgent: a cancel must not overtake its own request. */
    send_buf(c->p, &b, false);
    berth_mpbuf_destroy(&b);
}

static void call_free(berth_call_t *c)
{
    if (c->out_open)
        berth_mpbuf_destroy(&c->out);
    free(c);
}

static void call_complete(berth_call_t *c, const berth_error_t *err, const msgpack_object *res)
{
    if (c->cb)
        c->cb(c, err, res, c->data);
    call_free(c);
}

/* ---- events ------------------------------------------------------------ */

int berth_publish(berth_plugin_t *p, const char *topic, const char *ns, const void *event,
                  size_t event_len, berth_call_cb cb, void *data)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 4);
    berth_mp_kv_str(&b.pk, "topic", topic);
    berth_mp_kv_str(&b.pk, "namespace", ns ? ns : "");
    berth_mp_kv_u64(&b.pk, "seq", ++p->event_seq);
    berth_mp_pack_str(&b.pk, "event");
    if (event && event_len)
        msgpack_sbuffer_write(&b.buf, event, event_len);
    else
        msgpack_pack_map(&b.pk, 0);
    berth_error_t *err = NULL;
    berth_call_t *c =
        berth_call(p, "events.publish", b.buf.data, b.buf.size, 0, cb, NULL, data, &err);
    berth_mpbuf_destroy(&b);
    if (!c) {
        berth_log(BERTH_LOG_WARN, "msg=\"publish failed\" topic=%s err=\"%s\"", topic,
                  err ? err->message : "");
        berth_error_free(&err);
        return -1;
    }
    return 0;
}

/* ---- dispatch ---------------------------------------------------------- */

static void reply_error_raw(berth_plugin_t *p, uint32_t msgid, berth_code_t code, const char *msg)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_response_error(&b.pk, msgid, code, msg);
    send_buf(p, &b, false);
    berth_mpbuf_destroy(&b);
}

static void reply_empty_raw(berth_plugin_t *p, uint32_t msgid)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    ipc_pack_response_ok_head(&b.pk, msgid);
    msgpack_pack_map(&b.pk, 0);
    send_buf(p, &b, true);
    berth_mpbuf_destroy(&b);
}

static const char *str_or(berth_req_t *r, const msgpack_object *map, const char *key,
                          const char *dflt)
{
    const msgpack_object *v = berth_mp_get(map, key);
    if (!v || v->type != MSGPACK_OBJECT_STR)
        return dflt;
    char *s = msgpack_zone_malloc(r->msg->zone, v->via.str.size + 1);
    if (!s)
        return dflt;
    memcpy(s, v->via.str.ptr, v->via.str.size);
    s[v->via.str.size] = 0;
    if (strlen(s) != v->via.str.size)
        return dflt;
    return s;
}

static void handle_request(berth_plugin_t *p, ipc_msg_t *m)
{
    if (strcmp(m->method, "plugin.health") == 0) {
        reply_empty_raw(p, m->msgid);
        ipc_msg_free(m);
        return;
    }
    if (strcmp(m->method, "plugin.shutdown") == 0) {
        berth_log(BERTH_LOG_INFO, "msg=\"shutdown requested by berthd\"");
        reply_empty_raw(p, m->msgid);
        ipc_msg_free(m);
        berth_plugin_stop(p);
        return;
    }
    const berth_method_t *meth = NULL;
    for (size_t i = 0; i < p->desc->n_methods; i++)
        if (strcmp(p->desc->methods[i].name, m->method) == 0)
            meth = &p->desc->methods[i];
    if (!meth) {
        char msg[320];
        snprintf(msg, sizeof(msg), "method %s is not served by plugin %s", m->method, p->desc->id);
        reply_error_raw(p, m->msgid, BERTH_E_UNIMPLEMENTED, msg);
        ipc_msg_free(m);
        return;
    }
    if (ipc_idmap_get(&p->reqs, m->msgid)) {
        reply_error_raw(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "msgid already in use");
        ipc_msg_free(m);
        return;
    }
    berth_req_t *r = calloc(1, sizeof(*r));
    if (!r) {
        reply_error_raw(p, m->msgid, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        ipc_msg_free(m);
        return;
    }
    r->p = p;
    r->msgid = m->msgid;
    r->msg = m;
    r->ns = str_or(r, m->params, "namespace", "default");
    const msgpack_object *caller = berth_mp_get(m->params, "caller");
    r->caller_kind = str_or(r, caller, "kind", "client");
    r->caller_id = str_or(r, caller, "id", "");
    uint64_t uid = 0;
    const msgpack_object *u = berth_mp_get(caller, "uid");
    if (u && u->type == MSGPACK_OBJECT_POSITIVE_INTEGER && u->via.u64 <= UINT32_MAX)
        uid = u->via.u64;
    r->caller_uid = (uint32_t)uid;
    r->request_id = str_or(r, m->params, "request_id", NULL);
    r->lease = str_or(r, m->params, "lease", NULL);
    const msgpack_object *t = berth_mp_get(m->params, "timeout_ms");
    if (t && t->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        r->deadline = berth_mono_ms() + t->via.u64;
    ipc_idmap_put(&p->reqs, r->msgid, r);
    req_enter(r);
    meth->cb(r, m->params);
    req_leave(r);
}

static void handle_response(berth_plugin_t *p, ipc_msg_t *m)
{
    berth_call_t *c = ipc_idmap_del(&p->calls, m->msgid);
    if (!c) {
        ipc_msg_free(m); /* a retired id: dropped silently */
        return;
    }
    if (m->error) {
        berth_error_t e = {.code = m->code, .message = (char *)m->message};
        call_complete(c, &e, NULL);
    } else {
        call_complete(c, NULL, m->result);
    }
    ipc_msg_free(m);
}

static void handle_stream_ctl(berth_plugin_t *p, ipc_msg_t *m)
{
    uint32_t id, n;
    bool from_server;
    const msgpack_object *data;
    berth_error_t *err = NULL;
    if (ipc_stream_fields(m, &id, &from_server, &n, &data, &err) < 0) {
        berth_log(BERTH_LOG_WARN, "msg=\"bad stream control\" err=\"%s\"", err->message);
        berth_error_free(&err);
        return;
    }
    const char *what = m->method;
    if (!from_server) {
        /* The peer is the caller: id is the msgid of a request we serve. */
        berth_req_t *r = ipc_idmap_get(&p->reqs, id);
        if (!r)
            return;
        if (strcmp(what, "$cancel") == 0) {
            if (!r->canceled) {
                r->canceled = true;
                if (r->cancel_cb) {
                    req_enter(r);
                    r->cancel_cb(r);
                    req_leave(r);
                }
            }
        } else if (strcmp(what, "$ack") == 0) {
            r->unacked = r->unacked > n ? r->unacked - n : 0;
            if (r->writable_cb && !r->answered) {
                req_enter(r);
                r->writable_cb(r);
                req_leave(r);
            }
        } else if (strcmp(what, "$stream") == 0 || strcmp(what, "$stream.end") == 0) {
            bool end = data == NULL;
            if (!r->stream_cb) {
                if (!end)
                    send_ack(p, id, 1, true);
                return;
            }
            r->hold = false;
            req_enter(r);
            r->stream_cb(r, data);
            bool alive = req_leave(r);
            if (alive && !end && !r->hold)
                send_ack(p, id, 1, true);
        }
        return;
    }
    /* The peer is the server of a call we made. */
    berth_call_t *c = ipc_idmap_get(&p->calls, id);
    if (!c)
        return;
    if (strcmp(what, "$ack") == 0) {
        c->unacked = c->unacked > n ? c->unacked - n : 0;
        if (c->writable_cb)
            c->writable_cb(c, c->data);
    } else if (strcmp(what, "$stream") == 0 || strcmp(what, "$stream.end") == 0) {
        if (c->stream_cb)
            c->stream_cb(c, data, c->data);
        /* The callback may not free the call (only responses do), so ack. */
        if (data && ipc_idmap_get(&p->calls, id) == c)
            send_ack(p, id, 1, false);
    }
}

/* A burst of work (a pull, 20 container starts) leaves freed memory in
 * glibc's heaps and in the arenas of the pool threads; glibc returns only
 * the top of the main heap by itself. Two seconds after the last message,
 * give it all back: an idle plugin stays at its idle size. */
#define TRIM_AFTER_MS 2000

static void on_trim(uv_timer_t *t)
{
    (void)t;
    malloc_trim(0);
}

static void on_message(ipc_conn_t *conn, ipc_msg_t *m, void *data)
{
    berth_plugin_t *p = data;
    uv_timer_start(&p->trim_timer, on_trim, TRIM_AFTER_MS, 0);
    switch (m->type) {
    case IPC_REQUEST:
        handle_request(p, m);
        return;
    case IPC_RESPONSE:
        handle_response(p, m);
        return;
    case IPC_NOTIFY:
        if (m->method[0] == '$')
            handle_stream_ctl(p, m);
        ipc_msg_free(m);
        return;
    }
    ipc_msg_free(m);
}

static void on_close(ipc_conn_t *conn, void *data)
{
    berth_plugin_t *p = data;
    p->conn = NULL;
    if (!p->stopping)
        berth_log(BERTH_LOG_INFO, "msg=\"connection to berthd closed, exiting\"");
    p->stopping = true;
    /* Outstanding calls fail with unavailable so their owners can clean up. */
    size_t n = 0;
    void **calls = ipc_idmap_values(&p->calls, &n);
    ipc_idmap_destroy(&p->calls);
    berth_error_t e = {.code = BERTH_E_UNAVAILABLE, .message = "connection to berthd closed"};
    for (size_t i = 0; i < n; i++)
        call_complete(calls[i], &e, NULL);
    free(calls);
    size_t nr = 0;
    void **reqs = ipc_idmap_values(&p->reqs, &nr);
    ipc_idmap_destroy(&p->reqs);
    for (size_t i = 0; i < nr; i++) {
        berth_req_t *r = reqs[i];
        r->canceled = true;
        if (r->cancel_cb)
            r->cancel_cb(r);
    }
    free(reqs);
    uv_stop(&p->loop);
}

/* The queue drained: give starved streams their turn again. */
static void on_drain(ipc_conn_t *conn, void *data)
{
    berth_plugin_t *p = data;
    if (!p->starved)
        return;
    p->starved = false;
    size_t n = 0;
    void **reqs = ipc_idmap_values(&p->reqs, &n);
    uint32_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    for (size_t i = 0; ids && i < n; i++)
        ids[i] = ((berth_req_t *)reqs[i])->msgid;
    for (size_t i = 0; ids && i < n; i++) {
        /* a callback may answer (free) other requests: look each up again */
        berth_req_t *r = ipc_idmap_get(&p->reqs, ids[i]);
        if (r && r->writable_cb && !r->answered) {
            req_enter(r);
            r->writable_cb(r);
            req_leave(r);
        }
    }
    free(ids);
    free(reqs);
    size_t nc = 0;
    void **calls = ipc_idmap_values(&p->calls, &nc);
    uint32_t *cids = malloc((nc ? nc : 1) * sizeof(*cids));
    for (size_t i = 0; cids && i < nc; i++)
        cids[i] = ((berth_call_t *)calls[i])->msgid;
    for (size_t i = 0; cids && i < nc; i++) {
        berth_call_t *c = ipc_idmap_get(&p->calls, cids[i]);
        if (c && c->writable_cb)
            c->writable_cb(c, c->data);
    }
    free(cids);
    free(calls);
}

static void on_protocol_error(ipc_conn_t *c, const berth_error_t *err, void *data)
{
    berth_log(BERTH_LOG_ERROR, "msg=\"protocol error from berthd\" err=\"%s\"", err->message);
}

/* ---- startup ----------------------------------------------------------- */

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *s = buf + 1; *s; s++) {
        if (*s == '/') {
            *s = 0;
            if (mkdir(buf, 0711) < 0 && errno != EEXIST)
                return -errno;
            *s = '/';
        }
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static void on_ready_ack(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                         void *data)
{
    berth_plugin_t *p = data;
    if (err) {
        berth_log(BERTH_LOG_ERROR, "msg=\"berthd refused plugin.ready\" err=\"%s\"", err->message);
        p->exit_code = 1;
        berth_plugin_stop(p);
        return;
    }
    p->ready = true;
    berth_log(BERTH_LOG_DEBUG, "msg=\"ready\"");
}

static void on_registered(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                          void *data)
{
    berth_plugin_t *p = data;
    if (err) {
        berth_log(BERTH_LOG_ERROR, "msg=\"registration refused\" code=%s err=\"%s\"",
                  berth_code_name(err->code), err->message);
        p->exit_code = 1;
        berth_plugin_stop(p);
        return;
    }
    /* Keep the config alive for the plugin's lifetime: clone it. */
    msgpack_zone *z = NULL;
    const msgpack_object *cfg = berth_mp_get(res, "config");
    if (cfg && cfg->type == MSGPACK_OBJECT_MAP) {
        msgpack_object *copy = berth_mp_clone(cfg, &z);
        if (copy) {
            p->config = copy;
            p->cfg_zone = z;
        }
    }
    char *root = berth_mp_strdup(berth_mp_get(res, "root"));
    char *state = berth_mp_strdup(berth_mp_get(res, "state"));
    if (!root || !state) {
        berth_log(BERTH_LOG_ERROR, "msg=\"registration result lacks root/state\"");
        free(root);
        free(state);
        p->exit_code = 1;
        berth_plugin_stop(p);
        return;
    }
    p->daemon_root = root;
    p->state = state;
    if (asprintf(&p->root, "%s/%s", root, p->desc->id) < 0) {
        p->root = NULL;
        p->exit_code = 1;
        berth_plugin_stop(p);
        return;
    }
    int r = mkdir_p(p->root, 0700);
    if (r < 0) {
        berth_log(BERTH_LOG_ERROR, "msg=\"cannot create plugin root\" path=%s err=\"%s\"", p->root,
                  strerror(-r));
        p->exit_code = 1;
        berth_plugin_stop(p);
        return;
    }
    if (p->desc->init) {
        berth_error_t *ierr = NULL;
        if (p->desc->init(p, &ierr) < 0) {
            berth_log(BERTH_LOG_ERROR, "msg=\"init failed\" err=\"%s\"",
                      ierr && ierr->message ? ierr->message : "unknown error");
            berth_error_free(&ierr);
            p->exit_code = 1;
            berth_plugin_stop(p);
            return;
        }
    }
    berth_error_t *cerr = NULL;
    if (!berth_call(p, "plugin.ready", NULL, 0, 0, on_ready_ack, NULL, p, &cerr))
        berth_error_free(&cerr);
}

static int send_register(berth_plugin_t *p)
{
    const berth_plugin_desc_t *d = p->desc;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    size_t nreq = 0;
    if (d->requires)
        while (d->requires[nreq])
            nreq++;
    msgpack_pack_map(&b.pk, 7);
    berth_mp_kv_str(&b.pk, "id", d->id);
    berth_mp_kv_str(&b.pk, "type", d->type ? d->type : "");
    berth_mp_kv_str(&b.pk, "version", d->version ? d->version : "0.0.0");
    berth_mp_kv_u64(&b.pk, "api", 1);
    berth_mp_kv_u64(&b.pk, "pid", (uint64_t)getpid());
    berth_mp_pack_str(&b.pk, "methods");
    msgpack_pack_array(&b.pk, d->n_methods);
    for (size_t i = 0; i < d->n_methods; i++) {
        const berth_method_t *m = &d->methods[i];
        msgpack_pack_map(&b.pk, 6);
        berth_mp_kv_str(&b.pk, "name", m->name);
        berth_mp_kv_bool(&b.pk, "idempotent", m->flags & BERTH_METHOD_IDEMPOTENT);
        berth_mp_kv_bool(&b.pk, "replay", m->flags & BERTH_METHOD_REPLAY);
        berth_mp_kv_bool(&b.pk, "internal", m->flags & BERTH_METHOD_INTERNAL);
        berth_mp_kv_bool(&b.pk, "resumable", m->flags & BERTH_METHOD_RESUMABLE);
        berth_mp_pack_str(&b.pk, "callers");
        /* comma-separated list → array */
        size_t nc = 0;
        const char *s = m->callers;
        if (s && *s) {
            nc = 1;
            for (const char *q = s; *q; q++)
                nc += *q == ',';
        }
        msgpack_pack_array(&b.pk, nc);
        while (s && *s) {
            const char *e = strchr(s, ',');
            size_t len = e ? (size_t)(e - s) : strlen(s);
            berth_mp_pack_strn(&b.pk, s, len);
            s = e ? e + 1 : NULL;
        }
    }
    berth_mp_pack_str(&b.pk, "requires");
    msgpack_pack_array(&b.pk, nreq);
    for (size_t i = 0; i < nreq; i++)
        berth_mp_pack_str(&b.pk, d->requires[i]);
    berth_error_t *err = NULL;
    berth_call_t *c =
        berth_call(p, "plugin.register", b.buf.data, b.buf.size, 0, on_registered, NULL, p, &err);
    berth_mpbuf_destroy(&b);
    if (!c) {
        berth_log(BERTH_LOG_ERROR, "msg=\"cannot register\" err=\"%s\"", err->message);
        berth_error_free(&err);
        return -1;
    }
    return 0;
}

static int connect_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        close(fd);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static void on_signal(uv_signal_t *h, int signum)
{
    berth_plugin_t *p = h->data;
    berth_log(BERTH_LOG_INFO, "msg=\"signal received, stopping\" signal=%d", signum);
    berth_plugin_stop(p);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int berth_plugin_main(const berth_plugin_desc_t *desc, int argc, char **argv)
{
    const char *sock = getenv("BERTH_PLUGINS_SOCK");
    const char *level = getenv("BERTH_LOG_LEVEL");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
            sock = argv[++i];
        else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc)
            level = argv[++i];
    }
    int lv = level ? berth_log_level_parse(level) : BERTH_LOG_INFO;
    berth_log_init(desc->id, lv < 0 ? BERTH_LOG_INFO : (berth_log_level_t)lv);
    const char *lf = getenv("BERTH_LOG_FORMAT");
    if (lf && strcmp(lf, "json") == 0)
        berth_log_set_json(1);

    signal(SIGPIPE, SIG_IGN);
    /* Exit with the core (PROTOCOL.md: plugins set PR_SET_PDEATHSIG). */
    prctl(PR_SET_PDEATHSIG, SIGTERM);

    int fd = -1;
    const char *fdenv = getenv("BERTH_PLUGIN_FD");
    if (fdenv && *fdenv) {
        fd = atoi(fdenv);
        unsetenv("BERTH_PLUGIN_FD");
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    } else if (sock) {
        fd = connect_socket(sock);
        if (fd < 0) {
            fprintf(stderr, "%s: cannot connect to %s: %s\n", desc->id, sock, strerror(-fd));
            return 1;
        }
    } else {
        fprintf(stderr,
                "%s: this is a berth plugin; berthd starts it (BERTH_PLUGIN_FD), or run it with "
                "--socket <state>/plugins.sock as an external plugin\n",
                desc->id);
        return 2;
    }

    berth_plugin_t *p = calloc(1, sizeof(*p));
    if (!p)
        return 1;
    p->desc = desc;
    p->empty_map.type = MSGPACK_OBJECT_MAP;
    p->config = &p->empty_map;
    uv_loop_init(&p->loop);
    ipc_idmap_init(&p->reqs);
    ipc_idmap_init(&p->calls);

    ipc_conn_cbs_t cbs = {
        .on_message = on_message, .on_close = on_close, .on_protocol_error = on_protocol_error};
    berth_error_t *err = NULL;
    /* The core never stops reading a plugin, and streams stop at the high
     * water mark above: the plugin's own queue limit is a last resort. */
    ipc_conn_opts_t opts;
    ipc_conn_opts_default(&opts);
    opts.max_write_queue = 256u * 1024 * 1024;
    p->conn = ipc_conn_open_fd(&p->loop, fd, &opts, &cbs, p, &err);
    if (!p->conn) {
        fprintf(stderr, "%s: %s\n", desc->id, err->message);
        berth_error_free(&err);
        return 1;
    }
    ipc_conn_set_drain_cb(p->conn, on_drain);
    uv_signal_init(&p->loop, &p->sig_term);
    p->sig_term.data = p;
    uv_signal_start(&p->sig_term, on_signal, SIGTERM);
    uv_signal_init(&p->loop, &p->sig_int);
    p->sig_int.data = p;
    uv_signal_start(&p->sig_int, on_signal, SIGINT);
    uv_unref((uv_handle_t *)&p->sig_term);
    uv_unref((uv_handle_t *)&p->sig_int);
    uv_timer_init(&p->loop, &p->trim_timer);
    uv_unref((uv_handle_t *)&p->trim_timer);

    if (send_register(p) < 0)
        return 1;
    uv_run(&p->loop, UV_RUN_DEFAULT);
    if (desc->fini)
        desc->fini(p);
    /* Let pending work finish and close every handle so the loop ends cleanly. */
    uv_walk(&p->loop, close_walk, NULL);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    int code = p->exit_code;
    uv_loop_close(&p->loop);
    /* Free what the plugin owned so leak checkers see a clean exit. */
    ipc_idmap_destroy(&p->reqs);
    ipc_idmap_destroy(&p->calls);
    if (p->cfg_zone)
        msgpack_zone_free(p->cfg_zone);
    free(p->root);
    free(p->state);
    free(p->daemon_root);
    free(p);
    return code;
}
