/* SPDX-License-Identifier: Apache-2.0 */
/* The event bus: events.subscribe is a core-served stream (topic-prefix and
 * namespace filters), events.publish is a request from plugins that the core
 * acknowledges. Each subscriber has the protocol window of credit plus a
 * small backlog; a subscriber that falls further behind loses events, and the
 * next chunk it gets says how many (`dropped`). Nobody ever waits for a slow
 * subscriber. */
#include <string.h>

#include "core.h"

#define EV_WINDOW 8
#define EV_BACKLOG 256
/* A subscriber whose connection has this much unsent data gets no more. */
#define EV_WRITE_QUEUE_MAX (1u << 20)

static berth_mpbuf_t evbuf; /* events pack here, never in the router's scratch */
static bool evbuf_ready;

static berth_mpbuf_t *buf(void)
{
    if (!evbuf_ready) {
        berth_mpbuf_init(&evbuf);
        evbuf_ready = true;
    }
    evbuf.buf.size = 0;
    return &evbuf;
}

static void sub_unlink(core_t *c, core_sub_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static void sub_free(core_sub_t *s)
{
    for (size_t i = 0; i < s->n_filters; i++)
        free(s->filters[i]);
    free(s->filters);
    free(s->ns);
    for (size_t i = 0; i < s->p_count; i++)
        free(s->pending[(s->p_head + i) % EV_BACKLOG]);
    free(s->pending);
    free(s->pending_len);
    free(s);
}

static void on_sub_end(core_route_t *r)
{
    core_sub_t *s = r->data;
    if (!s)
        return;
    sub_unlink(r->core, s);
    sub_free(s);
    r->data = NULL;
}

void core_events_subscribe(core_peer_t *p, const ipc_msg_t *m)
{
    berth_error_t *err = NULL;
    const msgpack_object *filters = NULL;
    if (berth_mp_get_array(m->params, "filters", &filters, &err) < 0) {
        core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "events.subscribe: %s",
                         err->message);
        berth_error_free(&err);
        return;
    }
    char *ns = NULL;
    if (berth_mp_get_strdup(m->params, "namespace", &ns, &err) < 0) {
        core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "events.subscribe: %s",
                         err->message);
        berth_error_free(&err);
        return;
    }
    size_t nf = filters ? filters->via.array.size : 0;
    core_sub_t *s = calloc(1, sizeof(*s));
    if (s) {
        s->filters = calloc(nf ? nf : 1, sizeof(char *));
        s->pending = calloc(EV_BACKLOG, sizeof(uint8_t *));
        s->pending_len = calloc(EV_BACKLOG, sizeof(size_t));
    }
    if (!s || !s->filters || !s->pending || !s->pending_len) {
        if (s)
            sub_free(s);
        free(ns);
        core_reply_error(p, m->msgid, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < nf; i++) {
        char *f = berth_mp_strdup(&filters->via.array.ptr[i]);
        if (!f) {
            sub_free(s);
            free(ns);
            core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT,
                             "events.subscribe: filters[%zu] must be a topic prefix string", i);
            return;
        }
        if (*f)
            s->filters[s->n_filters++] = f;
        else
            free(f);
    }
    if (ns && *ns)
        s->ns = ns;
    else
        free(ns);
    s->credit = EV_WINDOW;
    core_route_t *r = core_route_local(p, m);
    if (!r) {
        sub_free(s);
        return;
    }
    r->data = s;
    r->on_local_end = on_sub_end;
    s->route = r;
    core_t *c = p->core;
    s->next = c->subs;
    if (c->subs)
        c->subs->prev = s;
    c->subs = s;
    berth_log(BERTH_LOG_DEBUG, "msg=\"events subscriber\" %s filters=%zu", core_peer_desc(p),
              s->n_filters);
}

static bool matches(const core_sub_t *s, const char *topic, const char *ns)
{
    if (s->ns && ns && *ns && strcmp(s->ns, ns) != 0)
        return false;
    if (!s->n_filters)
        return true;
    for (size_t i = 0; i < s->n_filters; i++)
        if (strncmp(topic, s->filters[i], strlen(s->filters[i])) == 0)
            return true;
    return false;
}

/* Sends one chunk: `kvs` holds the packed key/value pairs of the event. */
static void send_chunk(core_sub_t *s, const uint8_t *kvs, size_t len)
{
    core_route_t *r = s->route;
    if (!r->caller)
        return;
    berth_mpbuf_t *b = buf();
    ipc_pack_stream_head(&b->pk, r->caller_id, true);
    msgpack_pack_map(&b->pk, 7 + (s->dropped ? 1 : 0));
    msgpack_sbuffer_write(&b->buf, (const char *)kvs, len);
    if (s->dropped) {
        berth_mp_kv_u64(&b->pk, "dropped", s->dropped);
        s->dropped = 0;
    }
    ipc_conn_send_sbuf(r->caller->conn, &b->buf, false);
    s->credit--;
}

static bool can_send(const core_sub_t *s)
{
    const core_peer_t *p = s->route->caller;
    return s->credit > 0 && p && !p->closed && ipc_conn_write_queue(p->conn) < EV_WRITE_QUEUE_MAX;
}

static void flush(core_sub_t *s)
{
    while (s->p_count && can_send(s)) {
        size_t i = s->p_head;
        uint8_t *kvs = s->pending[i];
        size_t len = s->pending_len[i];
        s->pending[i] = NULL;
        s->p_head = (s->p_head + 1) % EV_BACKLOG;
        s->p_count--;
        send_chunk(s, kvs, len);
        free(kvs);
    }
}

static void deliver(core_sub_t *s, const uint8_t *kvs, size_t len)
{
    flush(s);
    if (!s->p_count && can_send(s)) {
        send_chunk(s, kvs, len);
        return;
    }
    if (s->p_count < EV_BACKLOG) {
        uint8_t *copy = malloc(len);
        if (copy) {
            memcpy(copy, kvs, len);
            size_t i = (s->p_head + s->p_count) % EV_BACKLOG;
            s->pending[i] = copy;
            s->pending_len[i] = len;
            s->p_count++;
            return;
        }
    }
    if (!s->dropped)
        berth_log(BERTH_LOG_WARN, "msg=\"events subscriber is not keeping up; dropping events\" %s",
                  s->route->caller ? core_peer_desc(s->route->caller) : "");
    s->dropped++;
}

void core_events_ack(core_route_t *r, uint32_t n)
{
    core_sub_t *s = r->data;
    if (!s)
        return;
    s->credit = s->credit + n > EV_WINDOW ? EV_WINDOW : s->credit + n;
    flush(s);
}

void core_events_publish(core_t *c, const char *topic, const char *ns, const void *event,
                         size_t event_len, const char *publisher)
{
    uint64_t seq = ++c->event_seq;
    berth_log(BERTH_LOG_DEBUG, "msg=\"event\" topic=%s ns=%s publisher=%s seq=%llu", topic,
              ns ? ns : "", publisher, (unsigned long long)seq);
    if (!c->subs)
        return;
    /* The key/value pairs are the same for every subscriber: pack once. */
    berth_mpbuf_t kv;
    berth_mpbuf_init(&kv);
    berth_mp_kv_str(&kv.pk, "topic", topic);
    berth_mp_kv_str(&kv.pk, "namespace", ns ? ns : "");
    berth_mp_kv_i64(&kv.pk, "timestamp", berth_now_ns());
    berth_mp_pack_str(&kv.pk, "event");
    if (event && event_len)
        msgpack_sbuffer_write(&kv.buf, event, event_len);
    else
        msgpack_pack_map(&kv.pk, 0);
    berth_mp_kv_u64(&kv.pk, "seq", seq);
    berth_mp_kv_str(&kv.pk, "boot_id", c->boot_id);
    berth_mp_kv_str(&kv.pk, "publisher", publisher);
    for (core_sub_t *s = c->subs; s;) {
        core_sub_t *next = s->next;
        if (matches(s, topic, ns))
            deliver(s, (const uint8_t *)kv.buf.data, kv.buf.size);
        s = next;
    }
    berth_mpbuf_destroy(&kv);
}

void core_events_publish_req(core_peer_t *p, const ipc_msg_t *m, bool notification)
{
    core_t *c = p->core;
    if (p->kind == CORE_PEER_CLIENT || !p->inst) {
        if (!notification)
            core_reply_error(p, m->msgid, BERTH_E_PERMISSION_DENIED,
                             "events.publish is accepted only from plugins");
        return;
    }
    berth_error_t *err = NULL;
    char *topic = NULL, *ns = NULL;
    const msgpack_object *event = NULL;
    const char *why = NULL;
    if (berth_mp_get_strdup(m->params, "topic", &topic, &err) != 0)
        why = err ? err->message : "parameter topic is required";
    else if (topic[0] != '/' || strlen(topic) > 256)
        why = "topic must start with '/' and be at most 256 bytes";
    else if (berth_mp_get_strdup(m->params, "namespace", &ns, &err) < 0 ||
             berth_mp_get_map(m->params, "event", &event, &err) < 0)
        why = err->message;
    if (why) {
        if (!notification)
            core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "events.publish: %s", why);
        else
            berth_log(BERTH_LOG_WARN, "msg=\"bad events.publish dropped\" %s err=\"%s\"",
                      core_peer_desc(p), why);
        berth_error_free(&err);
        free(topic);
        free(ns);
        return;
    }
    berth_mpbuf_t eb;
    berth_mpbuf_init(&eb);
    if (event)
        msgpack_pack_object(&eb.pk, *event);
    core_events_publish(c, topic, ns, eb.buf.data, eb.buf.size, p->inst->plugin->id);
    berth_mpbuf_destroy(&eb);
    free(topic);
    free(ns);
    if (!notification)
        core_reply_empty(p, m->msgid);
}

void core_events_fini(core_t *c)
{
    (void)c;
    if (evbuf_ready) {
        berth_mpbuf_destroy(&evbuf);
        evbuf_ready = false;
    }
}
