/* SPDX-License-Identifier: Apache-2.0 */
/* The router: every message of every peer comes through core_on_message.
 * Requests are forwarded to the plugin that registered their method under a
 * new msgid (mapped back on the response), with `caller` stamped into params;
 * stream-control notifications are forwarded with their ids rewritten; while
 * a plugin (re)starts its requests wait in a bounded queue; deadlines are kept
 * in one heap driven by one timer. Core methods (version, info, plugins.*,
 * events.*, plugin.*) are dispatched from here. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core.h"

/* Pause reading a client once the plugin it sends to has this much queued. */
#define BACKPRESSURE_HIGH (8u * 1024 * 1024)
/* Stream frames a caller may send before its queued request is forwarded
 * (the protocol window is 8; allow a little slack). */
#define MAX_NOTES 16

static void expire_routes(uv_timer_t *t);

/* ===================== method table ===================================== */

static size_t str_hash(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

core_method_t *core_method_lookup(core_t *c, const char *name)
{
    if (!c->methods.cap)
        return NULL;
    size_t mask = c->methods.cap - 1, i = str_hash(name) & mask;
    while (c->methods.slots[i]) {
        if (strcmp(c->methods.slots[i]->name, name) == 0)
            return c->methods.slots[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

static int methods_insert_slot(core_method_t **slots, size_t cap, core_method_t *m)
{
    size_t mask = cap - 1, i = str_hash(m->name) & mask;
    while (slots[i]) {
        if (strcmp(slots[i]->name, m->name) == 0) {
            slots[i] = m;
            return 0;
        }
        i = (i + 1) & mask;
    }
    slots[i] = m;
    return 1;
}

int core_method_install(core_t *c, core_method_t *m)
{
    if ((c->methods.count + 1) * 2 > c->methods.cap) {
        size_t ncap = c->methods.cap ? c->methods.cap * 2 : 64;
        core_method_t **ns = calloc(ncap, sizeof(*ns));
        if (!ns)
            return -1;
        for (size_t i = 0; i < c->methods.cap; i++)
            if (c->methods.slots[i])
                methods_insert_slot(ns, ncap, c->methods.slots[i]);
        free(c->methods.slots);
        c->methods.slots = ns;
        c->methods.cap = ncap;
    }
    c->methods.count += (size_t)methods_insert_slot(c->methods.slots, c->methods.cap, m);
    return 0;
}

void core_method_remove(core_t *c, core_method_t *m)
{
    if (!c->methods.cap)
        return;
    size_t mask = c->methods.cap - 1, i = str_hash(m->name) & mask;
    while (c->methods.slots[i] && c->methods.slots[i] != m)
        i = (i + 1) & mask;
    if (!c->methods.slots[i])
        return;
    c->methods.slots[i] = NULL;
    c->methods.count--;
    /* Re-insert the rest of the cluster so lookups never stop early. */
    for (size_t j = (i + 1) & mask; c->methods.slots[j]; j = (j + 1) & mask) {
        core_method_t *x = c->methods.slots[j];
        c->methods.slots[j] = NULL;
        methods_insert_slot(c->methods.slots, c->methods.cap, x);
    }
}

/* ===================== deadline heap ===================================== */

static void heap_swap(core_t *c, size_t a, size_t b)
{
    core_route_t *t = c->heap[a];
    c->heap[a] = c->heap[b];
    c->heap[b] = t;
    c->heap[a]->heap_idx = a + 1;
    c->heap[b]->heap_idx = b + 1;
}

static void heap_up(core_t *c, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (c->heap[p]->deadline <= c->heap[i]->deadline)
            break;
        heap_swap(c, p, i);
        i = p;
    }
}

static void heap_down(core_t *c, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->heap_len && c->heap[l]->deadline < c->heap[m]->deadline)
            m = l;
        if (r < c->heap_len && c->heap[r]->deadline < c->heap[m]->deadline)
            m = r;
        if (m == i)
            break;
        heap_swap(c, i, m);
        i = m;
    }
}

static void heap_arm(core_t *c)
{
    if (!c->heap_len)
        return;
    uint64_t d = c->heap[0]->deadline;
    if (c->deadline_armed && c->deadline_armed <= d)
        return;
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&c->deadline_timer, expire_routes, d > now ? d - now : 0, 0);
    c->deadline_armed = d;
}

static void heap_push(core_t *c, core_route_t *r)
{
    if (r->heap_idx || !r->deadline)
        return;
    if (c->heap_len == c->heap_cap) {
        size_t ncap = c->heap_cap ? c->heap_cap * 2 : 256;
        core_route_t **nh = realloc(c->heap, ncap * sizeof(*nh));
        if (!nh)
            return; /* no deadline then; the request still ends with its response */
        c->heap = nh;
        c->heap_cap = ncap;
    }
    c->heap[c->heap_len] = r;
    r->heap_idx = ++c->heap_len;
    heap_up(c, c->heap_len - 1);
    heap_arm(c);
}

static void heap_remove(core_t *c, core_route_t *r)
{
    if (!r->heap_idx)
        return;
    size_t i = r->heap_idx - 1;
    r->heap_idx = 0;
    c->heap_len--;
    if (i != c->heap_len) {
        c->heap[i] = c->heap[c->heap_len];
        c->heap[i]->heap_idx = i + 1;
        heap_down(c, i);
        heap_up(c, i);
    }
}

/* ===================== queues ============================================ */

static void queue_push(core_queue_t *q, core_route_t *r, bool front)
{
    r->qnext = r->qprev = NULL;
    if (front) {
        r->qnext = q->head;
        if (q->head)
            q->head->qprev = r;
        else
            q->tail = r;
        q->head = r;
    } else {
        r->qprev = q->tail;
        if (q->tail)
            q->tail->qnext = r;
        else
            q->head = r;
        q->tail = r;
    }
    q->len++;
}

static void queue_unlink(core_queue_t *q, core_route_t *r)
{
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        q->head = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        q->tail = r->qprev;
    r->qnext = r->qprev = NULL;
    q->len--;
}

static core_queue_t *route_queue(core_route_t *r)
{
    return r->plugin ? &r->plugin->queue : &r->core->unresolved;
}

/* ===================== sending helpers =================================== */

static void scratch_reset(core_t *c)
{
    c->scratch.buf.size = 0;
}

static int send_scratch(core_peer_t *p, bool urgent)
{
    if (!p || p->closed)
        return -1;
    return ipc_conn_send_sbuf(p->conn, &p->core->scratch.buf, urgent);
}

msgpack_packer *core_reply_begin(core_t *c, uint32_t msgid)
{
    scratch_reset(c);
    ipc_pack_response_ok_head(&c->scratch.pk, msgid);
    return &c->scratch.pk;
}

void core_reply_end(core_peer_t *p)
{
    send_scratch(p, false);
}

static void reply_errorv(core_peer_t *p, uint32_t msgid, berth_code_t code, const char *fmt,
                         va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (!p || p->closed)
        return;
    core_t *c = p->core;
    scratch_reset(c);
    ipc_pack_response_error(&c->scratch.pk, msgid, code, msg);
    send_scratch(p, false);
}

void core_reply_error(core_peer_t *p, uint32_t msgid, berth_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_errorv(p, msgid, code, fmt, ap);
    va_end(ap);
}

void core_reply_empty(core_peer_t *p, uint32_t msgid)
{
    msgpack_packer *pk = core_reply_begin(p->core, msgid);
    msgpack_pack_map(pk, 0);
    core_reply_end(p);
}

static void send_cancel(core_route_t *r)
{
    if (!r->server || r->server->closed)
        return;
    core_t *c = r->core;
    scratch_reset(c);
    ipc_pack_cancel(&c->scratch.pk, r->server_id);
    /* In order, not urgent: an urgent $cancel could overtake the request it
     * cancels while that still sits in the write queue, and the plugin would
     * then drop the cancel and run the request. */
    send_scratch(r->server, false);
}

/* ===================== routes ============================================ */

static core_route_t *route_new(core_t *c)
{
    core_route_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->core = c;
    r->seq = ++c->route_seq;
    r->started_ms = uv_now(c->loop);
    return r;
}

static void detach_caller(core_route_t *r)
{
    if (r->caller) {
        if (ipc_idmap_get(&r->caller->calls, r->caller_id) == r)
            ipc_idmap_del(&r->caller->calls, r->caller_id);
        r->caller = NULL;
    }
}

static void free_notes(core_route_t *r)
{
    for (core_note_t *n = r->notes; n;) {
        core_note_t *x = n->next;
        free(n);
        n = x;
    }
    r->notes = r->notes_tail = NULL;
    r->n_notes = 0;
}

void core_route_free(core_route_t *r)
{
    core_t *c = r->core;
    detach_caller(r);
    heap_remove(c, r);
    if (r->state == CORE_ROUTE_QUEUED)
        queue_unlink(route_queue(r), r);
    if (r->state == CORE_ROUTE_INFLIGHT && r->server &&
        ipc_idmap_get(&r->server->serving, r->server_id) == r)
        ipc_idmap_del(&r->server->serving, r->server_id);
    if (r->state == CORE_ROUTE_LOCAL && r->on_local_end) {
        void (*fn)(core_route_t *) = r->on_local_end;
        r->on_local_end = NULL;
        fn(r);
    }
    free_notes(r);
    free(r->payload);
    free(r->method);
    free(r);
}

/* The caller has its answer (or is gone): release the route. An in-flight
 * request stays reserved on the server's connection (orphaned) until the
 * server's final response, after a $cancel. */
static void route_retire(core_route_t *r)
{
    detach_caller(r);
    heap_remove(r->core, r);
    if (r->state == CORE_ROUTE_INFLIGHT && r->server && !r->server->closed) {
        if (!r->canceled) {
            r->canceled = true;
            send_cancel(r);
        }
        bool drain = r->counts_for_drain;
        r->counts_for_drain = false;
        free(r->payload);
        r->payload = NULL;
        if (drain && r->server->inst)
            core_supervisor_drained(r->server->inst);
        return;
    }
    core_route_free(r);
}

static void route_failv(core_route_t *r, berth_code_t code, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (r->caller)
        core_reply_error(r->caller, r->caller_id, code, "%s", msg);
    if (r->on_response) {
        berth_error_t e = {.code = code, .message = msg};
        void (*cb)(core_route_t *, const ipc_msg_t *, const berth_error_t *) = r->on_response;
        r->on_response = NULL;
        cb(r, NULL, &e);
    }
    route_retire(r);
}

static void route_fail(core_route_t *r, berth_code_t code, const char *fmt, ...) BERTH_PRINTF(3, 4);
static void route_fail(core_route_t *r, berth_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    route_failv(r, code, fmt, ap);
    va_end(ap);
}

core_route_t *core_route_local(core_peer_t *caller, const ipc_msg_t *m)
{
    core_t *c = caller->core;
    core_route_t *r = route_new(c);
    if (!r) {
        core_reply_error(caller, m->msgid, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    r->state = CORE_ROUTE_LOCAL;
    r->caller = caller;
    r->caller_id = m->msgid;
    r->method = strdup(m->method);
    ipc_idmap_put(&caller->calls, m->msgid, r);
    uint64_t t = 0;
    if (berth_mp_get_u64(m->params, "timeout_ms", &t, NULL) == 0 && t > 0) {
        r->deadline = uv_now(c->loop) + t;
        r->explicit_deadline = true;
        heap_push(c, r);
    }
    return r;
}

msgpack_packer *core_route_reply_begin(core_route_t *r)
{
    return core_reply_begin(r->core, r->caller_id);
}

void core_route_reply_end(core_route_t *r)
{
    if (r->caller)
        send_scratch(r->caller, false);
    core_route_free(r);
}

void core_route_reply_error(core_route_t *r, berth_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r->caller)
        core_reply_error(r->caller, r->caller_id, code, "%s", msg);
    core_route_free(r);
}

/* ===================== forwarding ======================================== */

static uint32_t alloc_id(core_peer_t *s)
{
    do {
        s->next_id++;
    } while (ipc_idmap_get(&s->serving, s->next_id));
    return s->next_id;
}

static void patch_id(uint8_t *payload, uint32_t id)
{
    payload[3] = (uint8_t)(id >> 24);
    payload[4] = (uint8_t)(id >> 16);
    payload[5] = (uint8_t)(id >> 8);
    payload[6] = (uint8_t)id;
}

static const uint8_t REQ_HEAD[7] = {0x94, 0x00, 0xce, 0, 0, 0, 0};

/* Re-encodes a request for forwarding: [0, <msgid slot>, method, params]
 * with `caller` stamped (any caller-supplied one is dropped). */
static int build_payload(core_route_t *r, core_peer_t *caller, const ipc_msg_t *m)
{
    core_t *c = r->core;
    scratch_reset(c);
    msgpack_packer *pk = &c->scratch.pk;
    msgpack_sbuffer_write(&c->scratch.buf, (const char *)REQ_HEAD, sizeof(REQ_HEAD));
    berth_mp_pack_str(pk, m->method);
    const msgpack_object *params = m->params;
    uint32_t keep = 0;
    for (uint32_t i = 0; i < params->via.map.size; i++)
        if (!berth_mp_str_eq(&params->via.map.ptr[i].key, "caller"))
            keep++;
    msgpack_pack_map(pk, keep + 1);
    for (uint32_t i = 0; i < params->via.map.size; i++) {
        if (berth_mp_str_eq(&params->via.map.ptr[i].key, "caller"))
            continue;
        msgpack_pack_object(pk, params->via.map.ptr[i].key);
        msgpack_pack_object(pk, params->via.map.ptr[i].val);
    }
    berth_mp_pack_str(pk, "caller");
    msgpack_pack_map(pk, 3);
    bool plugin = caller->kind != CORE_PEER_CLIENT && caller->inst;
    berth_mp_kv_str(pk, "kind", plugin ? "plugin" : "client");
    berth_mp_kv_str(pk, "id", plugin ? caller->inst->plugin->id : "");
    berth_mp_kv_u64(pk, "uid", caller->uid);
    r->payload = malloc(c->scratch.buf.size);
    if (!r->payload)
        return -1;
    memcpy(r->payload, c->scratch.buf.data, c->scratch.buf.size);
    r->payload_len = c->scratch.buf.size;
    return 0;
}

static void send_note_to_server(core_route_t *r, int kind, uint32_t n, const msgpack_object *data,
                                const uint8_t *packed, size_t packed_len)
{
    core_t *c = r->core;
    scratch_reset(c);
    msgpack_packer *pk = &c->scratch.pk;
    bool urgent = false;
    switch (kind) {
    case 0:
        ipc_pack_stream_head(pk, r->server_id, false);
        if (data)
            msgpack_pack_object(pk, *data);
        else
            msgpack_sbuffer_write(&c->scratch.buf, (const char *)packed, packed_len);
        break;
    case 1:
        ipc_pack_stream_end(pk, r->server_id, false);
        break;
    default:
        ipc_pack_ack(pk, r->server_id, n, false);
        urgent = true;
        break;
    }
    send_scratch(r->server, urgent);
}

/* Sends a route to a plugin peer under a fresh msgid. */
static void route_send(core_route_t *r, core_peer_t *s)
{
    core_t *c = r->core;
    r->server = s;
    r->server_id = alloc_id(s);
    r->state = CORE_ROUTE_INFLIGHT;
    r->counts_for_drain = !r->resumable && !r->on_response;
    ipc_idmap_put(&s->serving, r->server_id, r);
    patch_id(r->payload, r->server_id);
    ipc_conn_send(s->conn, r->payload, r->payload_len, r->on_response != NULL);
    if (!r->retry_ok && !r->resumable) {
        free(r->payload);
        r->payload = NULL;
    }
    for (core_note_t *n = r->notes; n; n = n->next)
        send_note_to_server(r, n->kind, n->n, NULL, n->data, n->len);
    free_notes(r);
    if (r->caller && r->caller->kind == CORE_PEER_CLIENT && !s->closed &&
        ipc_conn_write_queue(s->conn) > BACKPRESSURE_HIGH)
        core_peer_block_on(r->caller, s);
    (void)c;
}

bool core_plugin_routable(const core_plugin_t *pl)
{
    return pl && pl->inst && pl->inst->state == CORE_IS_READY && pl->inst->peer &&
           !pl->inst->peer->closed && !pl->inst->stopping && !pl->draining;
}

static bool caller_allowed(const core_peer_t *p, const core_method_t *me)
{
    if (!me->internal)
        return true;
    if (p->kind == CORE_PEER_CLIENT || !p->inst)
        return false;
    for (char **id = me->callers; id && *id; id++)
        if (strcmp(*id, p->inst->plugin->id) == 0)
            return true;
    return false;
}

static void apply_method(core_route_t *r, const core_method_t *me)
{
    r->plugin = me->plugin;
    /* A request_id makes a re-send safe only where the owner deduplicates
     * by it (registered `replay`); elsewhere it would apply twice. */
    r->retry_ok = me->idempotent || (r->has_request_id && me->replay);
    r->resumable = me->resumable;
    /* The default deadline covers the unary phase only: long-lived streams
     * (resumable) have none unless the caller asked for one. */
    if (!r->explicit_deadline && r->resumable && r->deadline) {
        heap_remove(r->core, r);
        r->deadline = 0;
    }
}

/* A declared external plugin whose method prefixes cover `method`. */
static core_plugin_t *external_for(core_t *c, const char *method)
{
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next) {
        if (!pl->external || !pl->ext)
            continue;
        for (char **pfx = pl->ext->prefixes; *pfx; pfx++)
            if (strncmp(method, *pfx, strlen(*pfx)) == 0)
                return pl;
    }
    return NULL;
}

/* Some supervised plugin has not registered yet: an unknown method may
 * still appear. */
static bool plugins_pending(core_t *c)
{
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next)
        if (!pl->external && !pl->ever_registered &&
            (pl->status == CORE_PS_STARTING || pl->status == CORE_PS_RESTARTING))
            return true;
    return false;
}

static void fail_unavailable_plugin(core_route_t *r)
{
    core_plugin_t *pl = r->plugin;
    route_fail(r, BERTH_E_UNAVAILABLE,
               "plugin %s is failing (it crashed %u times; last: %s); it is retried every %u s, "
               "see the berthd log",
               pl->id, pl->restarts, pl->last_exit ? pl->last_exit : "unknown",
               r->core->cfg->failed_retry_ms / 1000);
}

/* Delivers a route whose method is resolved: now, or into its plugin queue. */
static void route_dispatch(core_route_t *r, bool front)
{
    core_t *c = r->core;
    core_plugin_t *pl = r->plugin;
    if (core_plugin_routable(pl)) {
        route_send(r, pl->inst->peer);
        return;
    }
    if (pl->status == CORE_PS_FAILED && !pl->op) {
        fail_unavailable_plugin(r);
        return;
    }
    if (!front && pl->queue.len >= c->cfg->queue_limit) {
        route_fail(r, BERTH_E_RESOURCE_EXHAUSTED,
                   "plugin %s is %s and %zu requests are already waiting for it (queue_limit); "
                   "retry later",
                   pl->id, core_plugin_status_name(pl->status), pl->queue.len);
        return;
    }
    r->state = CORE_ROUTE_QUEUED;
    queue_push(&pl->queue, r, front);
}

static bool has_request_id(const msgpack_object *params)
{
    const msgpack_object *v = berth_mp_get(params, "request_id");
    return v && v->type == MSGPACK_OBJECT_STR && v->via.str.size > 0;
}

static void forward_request(core_peer_t *p, const ipc_msg_t *m)
{
    core_t *c = p->core;
    core_method_t *me = core_method_lookup(c, m->method);
    core_plugin_t *ext = me ? NULL : external_for(c, m->method);
    if (!me && !ext && !plugins_pending(c)) {
        core_reply_error(p, m->msgid, BERTH_E_UNIMPLEMENTED, "no plugin serves method %s",
                         m->method);
        return;
    }
    if (me && !caller_allowed(p, me)) {
        core_reply_error(p, m->msgid, BERTH_E_PERMISSION_DENIED,
                         "method %s is internal to plugin %s and cannot be called by %s", m->method,
                         me->plugin->id, p->inst ? p->inst->plugin->id : "clients");
        return;
    }
    uint64_t tmo = 0;
    berth_error_t *err = NULL;
    int tr = berth_mp_get_u64(m->params, "timeout_ms", &tmo, &err);
    if (tr < 0) {
        core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT, "%s", err->message);
        berth_error_free(&err);
        return;
    }
    core_route_t *r = route_new(c);
    if (!r || !(r->method = strdup(m->method)) || build_payload(r, p, m) < 0) {
        if (r)
            core_route_free(r);
        core_reply_error(p, m->msgid, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    r->caller = p;
    r->caller_id = m->msgid;
    ipc_idmap_put(&p->calls, m->msgid, r);
    if (tr == 0 && tmo > 0) {
        r->deadline = r->started_ms + tmo;
        r->explicit_deadline = true;
    } else {
        r->deadline = r->started_ms + c->cfg->request_timeout_ms;
    }
    r->has_request_id = has_request_id(m->params);
    if (me) {
        apply_method(r, me);
    } else {
        r->plugin = ext;     /* NULL: unresolved until a plugin registers it */
        r->retry_ok = false; /* decided by apply_method once the method is known */
    }
    heap_push(c, r);
    if (!r->plugin) {
        r->state = CORE_ROUTE_QUEUED;
        queue_push(&c->unresolved, r, false);
        return;
    }
    route_dispatch(r, false);
}

void core_router_drain_queue(core_plugin_t *pl)
{
    core_t *c = pl->core;
    while (pl->queue.head && core_plugin_routable(pl)) {
        core_route_t *r = pl->queue.head;
        queue_unlink(&pl->queue, r);
        r->state = 0;
        core_method_t *me = core_method_lookup(c, r->method);
        if (!me || me->plugin != pl) {
            route_fail(r, BERTH_E_UNIMPLEMENTED, "method %s is no longer served by plugin %s",
                       r->method, pl->id);
            continue;
        }
        if (r->caller && !caller_allowed(r->caller, me)) {
            route_fail(r, BERTH_E_PERMISSION_DENIED, "method %s is internal to plugin %s",
                       r->method, pl->id);
            continue;
        }
        bool keep_retry = r->retry_ok;
        apply_method(r, me);
        r->retry_ok = r->retry_ok || keep_retry;
        route_send(r, pl->inst->peer);
    }
}

void core_router_fail_queue(core_plugin_t *pl, berth_code_t code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    while (pl->queue.head)
        route_fail(pl->queue.head, code, "%s", msg);
}

void core_router_fail_queue_unresolved(core_t *c)
{
    while (c->unresolved.head)
        route_fail(c->unresolved.head, BERTH_E_UNAVAILABLE, "berthd is shutting down");
}

void core_router_resolve_pending(core_t *c)
{
    core_queue_t q = c->unresolved;
    c->unresolved.head = c->unresolved.tail = NULL;
    c->unresolved.len = 0;
    bool pending = plugins_pending(c);
    for (core_route_t *r = q.head; r;) {
        core_route_t *next = r->qnext;
        r->qnext = r->qprev = NULL;
        r->state = 0;
        core_method_t *me = core_method_lookup(c, r->method);
        if (me) {
            if (r->caller && !caller_allowed(r->caller, me)) {
                route_fail(r, BERTH_E_PERMISSION_DENIED, "method %s is internal to plugin %s",
                           r->method, me->plugin->id);
            } else {
                apply_method(r, me);
                route_dispatch(r, false);
            }
        } else if ((r->plugin = external_for(c, r->method))) {
            route_dispatch(r, false);
        } else if (pending) {
            r->state = CORE_ROUTE_QUEUED;
            queue_push(&c->unresolved, r, false);
        } else {
            route_fail(r, BERTH_E_UNIMPLEMENTED, "no plugin serves method %s", r->method);
        }
        r = next;
    }
}

core_route_t *
core_request(core_peer_t *server, const char *method,
             void (*cb)(core_route_t *r, const ipc_msg_t *m, const berth_error_t *err), void *data)
{
    core_t *c = server->core;
    if (server->closed)
        return NULL;
    core_route_t *r = route_new(c);
    if (!r)
        return NULL;
    r->method = strdup(method);
    r->on_response = cb;
    r->data = data;
    scratch_reset(c);
    msgpack_sbuffer_write(&c->scratch.buf, (const char *)REQ_HEAD, sizeof(REQ_HEAD));
    berth_mp_pack_str(&c->scratch.pk, method);
    msgpack_pack_map(&c->scratch.pk, 0);
    r->payload = malloc(c->scratch.buf.size);
    if (!r->payload || !r->method) {
        free(r->payload);
        free(r->method);
        free(r);
        return NULL;
    }
    memcpy(r->payload, c->scratch.buf.data, c->scratch.buf.size);
    r->payload_len = c->scratch.buf.size;
    route_send(r, server);
    r->counts_for_drain = false;
    return r;
}

/* ===================== responses ========================================= */

static size_t mp_array_hdr(const uint8_t *p, size_t n)
{
    if (n >= 1 && p[0] == 0x94)
        return 1;
    if (n >= 3 && p[0] == 0xdc && p[1] == 0 && p[2] == 4)
        return 3;
    if (n >= 5 && p[0] == 0xdd && p[1] == 0 && p[2] == 0 && p[3] == 0 && p[4] == 4)
        return 5;
    return 0;
}

static size_t mp_uint_len(const uint8_t *p, size_t n)
{
    if (n < 1)
        return 0;
    size_t l = p[0] <= 0x7f   ? 1
               : p[0] == 0xcc ? 2
               : p[0] == 0xcd ? 3
               : p[0] == 0xce ? 5
               : p[0] == 0xcf ? 9
                              : 0;
    return l <= n ? l : 0;
}

/* Forwards a response to the route's caller under the caller's msgid. The
 * error and result bytes are copied verbatim (no re-encoding). */
static void forward_response(core_route_t *r, const ipc_msg_t *m)
{
    core_t *c = r->core;
    scratch_reset(c);
    const uint8_t *raw = m->raw;
    size_t off = mp_array_hdr(raw, m->raw_len), l1 = 0, l2 = 0;
    if (off)
        l1 = mp_uint_len(raw + off, m->raw_len - off);
    if (l1)
        l2 = mp_uint_len(raw + off + l1, m->raw_len - off - l1);
    if (off && l1 && l2) {
        uint8_t head[7] = {0x94, 0x01, 0xce};
        patch_id(head, r->caller_id);
        msgpack_sbuffer_write(&c->scratch.buf, (const char *)head, 7);
        off += l1 + l2;
        msgpack_sbuffer_write(&c->scratch.buf, (const char *)raw + off, m->raw_len - off);
    } else {
        msgpack_packer *pk = &c->scratch.pk;
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint8(pk, 1);
        msgpack_pack_uint32(pk, r->caller_id);
        if (m->error)
            msgpack_pack_object(pk, *m->error);
        else
            msgpack_pack_nil(pk);
        msgpack_pack_object(pk, *m->result);
    }
    send_scratch(r->caller, false);
}

static void on_response(core_peer_t *p, const ipc_msg_t *m)
{
    core_route_t *r = ipc_idmap_del(&p->serving, m->msgid);
    if (!r) {
        berth_log(BERTH_LOG_DEBUG,
                  "msg=\"response for an unknown or retired msgid dropped\" %s msgid=%u",
                  core_peer_desc(p), m->msgid);
        return;
    }
    r->server = NULL;
    bool drain = r->counts_for_drain;
    r->state = 0;
    if (r->on_response) {
        void (*cb)(core_route_t *, const ipc_msg_t *, const berth_error_t *) = r->on_response;
        r->on_response = NULL;
        if (m->error) {
            berth_error_t e = {.code = m->code, .message = (char *)m->message};
            cb(r, m, &e);
        } else {
            cb(r, m, NULL);
        }
    } else if (r->caller) {
        forward_response(r, m);
    }
    core_route_free(r);
    if (drain && p->inst)
        core_supervisor_drained(p->inst);
}

/* ===================== stream control ==================================== */

static void mark_stream_started(core_route_t *r)
{
    if (r->stream_started)
        return;
    r->stream_started = true;
    /* Once data flows the request is in its stream phase: the default
     * (unary) deadline no longer applies, only the caller's own. */
    if (!r->explicit_deadline && r->deadline) {
        heap_remove(r->core, r);
        r->deadline = 0;
    }
}

static void buffer_note(core_route_t *r, int kind, uint32_t n, const msgpack_object *data)
{
    if (r->n_notes >= MAX_NOTES) {
        route_fail(r, BERTH_E_RESOURCE_EXHAUSTED,
                   "too many stream chunks sent for %s before its plugin was ready (window is 8)",
                   r->method);
        return;
    }
    core_t *c = r->core;
    scratch_reset(c);
    if (data)
        msgpack_pack_object(&c->scratch.pk, *data);
    core_note_t *note = malloc(sizeof(*note) + c->scratch.buf.size);
    if (!note) {
        route_fail(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    note->next = NULL;
    note->kind = kind;
    note->n = n;
    note->len = c->scratch.buf.size;
    memcpy(note->data, c->scratch.buf.data, note->len);
    if (r->notes_tail)
        r->notes_tail->next = note;
    else
        r->notes = note;
    r->notes_tail = note;
    r->n_notes++;
}

static void from_caller(core_route_t *r, const char *what, uint32_t n, const msgpack_object *data)
{
    if (strcmp(what, "$cancel") == 0) {
        if (r->state == CORE_ROUTE_INFLIGHT) {
            /* The server answers `canceled`; that response is forwarded. */
            if (!r->canceled) {
                r->canceled = true;
                send_cancel(r);
            }
        } else {
            route_fail(r, BERTH_E_CANCELED, "%s canceled by the caller", r->method);
        }
        return;
    }
    int kind = strcmp(what, "$stream") == 0 ? 0 : strcmp(what, "$stream.end") == 0 ? 1 : 2;
    if (r->state == CORE_ROUTE_LOCAL) {
        if (kind == 2 && strcmp(r->method, "events.subscribe") == 0)
            core_events_ack(r, n);
        return;
    }
    if (kind == 0)
        mark_stream_started(r);
    if (r->state == CORE_ROUTE_QUEUED) {
        if (kind != 2)
            buffer_note(r, kind, n, data);
        return;
    }
    if (r->state == CORE_ROUTE_INFLIGHT && !r->canceled)
        send_note_to_server(r, kind, n, data, NULL, 0);
}

static void from_server(core_route_t *r, const char *what, uint32_t n, const msgpack_object *data)
{
    if (strcmp(what, "$cancel") == 0)
        return; /* only callers cancel */
    bool is_stream = strcmp(what, "$stream") == 0;
    if (is_stream)
        mark_stream_started(r);
    if (!r->caller)
        return; /* orphaned or core-originated: nobody to forward to */
    core_t *c = r->core;
    scratch_reset(c);
    msgpack_packer *pk = &c->scratch.pk;
    bool urgent = false;
    if (is_stream) {
        ipc_pack_stream_head(pk, r->caller_id, true);
        msgpack_pack_object(pk, *data);
    } else if (strcmp(what, "$stream.end") == 0) {
        ipc_pack_stream_end(pk, r->caller_id, true);
    } else {
        ipc_pack_ack(pk, r->caller_id, n, true);
        urgent = true;
    }
    send_scratch(r->caller, urgent);
}

static void on_stream_control(core_peer_t *p, const ipc_msg_t *m)
{
    uint32_t id = 0, n = 0;
    bool srv = false;
    const msgpack_object *data = NULL;
    berth_error_t *err = NULL;
    if (ipc_stream_fields(m, &id, &srv, &n, &data, &err) < 0) {
        berth_log(BERTH_LOG_DEBUG, "msg=\"malformed stream control dropped\" %s err=\"%s\"",
                  core_peer_desc(p), err->message);
        berth_error_free(&err);
        return;
    }
    if (strcmp(m->method, "$stream") && strcmp(m->method, "$stream.end") &&
        strcmp(m->method, "$ack") && strcmp(m->method, "$cancel")) {
        berth_log(BERTH_LOG_DEBUG, "msg=\"unknown protocol notification dropped\" %s method=%s",
                  core_peer_desc(p), m->method);
        return;
    }
    if (!srv) {
        core_route_t *r = ipc_idmap_get(&p->calls, id);
        if (r)
            from_caller(r, m->method, n, data);
    } else {
        core_route_t *r = ipc_idmap_get(&p->serving, id);
        if (r)
            from_server(r, m->method, n, data);
    }
    /* Frames for retired ids are dropped silently (PROTOCOL.md). */
}

/* ===================== core methods ====================================== */

static void h_version(core_peer_t *p, const ipc_msg_t *m)
{
    core_t *c = p->core;
    msgpack_packer *pk = core_reply_begin(c, m->msgid);
    msgpack_pack_map(pk, 4);
    berth_mp_kv_str(pk, "version", BERTH_VERSION);
    berth_mp_kv_str(pk, "revision", BERTH_REVISION);
    berth_mp_kv_str(pk, "boot_id", c->boot_id);
    berth_mp_kv_u64(pk, "pid", (uint64_t)c->pid);
    core_reply_end(p);
}

static void h_info(core_peer_t *p, const ipc_msg_t *m)
{
    core_t *c = p->core;
    const core_config_t *cfg = c->cfg;
    char *not_ready = core_supervisor_not_ready(c);
    size_t running = 0;
    for (core_plugin_t *pl = c->plugins; pl; pl = pl->next)
        if (pl->status != CORE_PS_SKIP)
            running++;
    msgpack_packer *pk = core_reply_begin(c, m->msgid);
    msgpack_pack_map(pk, 14);
    berth_mp_kv_str(pk, "version", BERTH_VERSION);
    berth_mp_kv_str(pk, "revision", BERTH_REVISION);
    berth_mp_kv_str(pk, "boot_id", c->boot_id);
    berth_mp_kv_u64(pk, "pid", (uint64_t)c->pid);
    berth_mp_kv_str(pk, "root", cfg->root);
    berth_mp_kv_str(pk, "state", cfg->state);
    berth_mp_kv_str(pk, "address", cfg->address);
    berth_mp_kv_str(pk, "plugins_address", cfg->plugins_address);
    berth_mp_kv_u64(pk, "plugins", running);
    berth_mp_kv_i64(pk, "uptime_ns", berth_now_ns() - c->started_ns);
    berth_mp_kv_bool(pk, "ready", c->notified_ready);
    berth_mp_pack_str(pk, "not_ready");
    /* comma list → array */
    size_t nn = 0;
    for (char *s = not_ready; s && *s; s++)
        nn += *s == ',';
    msgpack_pack_array(pk, not_ready && *not_ready ? nn + 1 : 0);
    for (char *s = not_ready; s && *s;) {
        char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        berth_mp_pack_strn(pk, s, len);
        s = e ? e + 2 : NULL;
    }
    berth_mp_kv_u64(pk, "methods", c->methods.count);
    berth_mp_pack_str(pk, "config");
    msgpack_pack_map(pk, 10);
    berth_mp_kv_str(pk, "group", cfg->group);
    berth_mp_kv_str(pk, "plugin_dir", cfg->plugin_dir);
    berth_mp_kv_str(pk, "log_level",
                    berth_log_level_current == 0   ? "error"
                    : berth_log_level_current == 1 ? "warn"
                    : berth_log_level_current == 2 ? "info"
                    : berth_log_level_current == 3 ? "debug"
                                                   : "trace");
    berth_mp_kv_str(pk, "log_format", cfg->log_json ? "json" : "logfmt");
    berth_mp_kv_u64(pk, "max_frame", cfg->max_frame);
    berth_mp_kv_u64(pk, "max_write_queue", cfg->max_write_queue);
    berth_mp_kv_u64(pk, "request_timeout_ms", cfg->request_timeout_ms);
    berth_mp_kv_u64(pk, "queue_limit", cfg->queue_limit);
    berth_mp_kv_u64(pk, "health_interval_ms", cfg->health_interval_ms);
    berth_mp_kv_u64(pk, "ready_timeout_ms", cfg->ready_timeout_ms);
    free(not_ready);
    core_reply_end(p);
}

typedef void (*core_method_fn)(core_peer_t *p, const ipc_msg_t *m);

static void h_publish(core_peer_t *p, const ipc_msg_t *m)
{
    core_events_publish_req(p, m, false);
}

static const struct {
    const char *name;
    core_method_fn fn;
} core_methods[] = {
    {"version", h_version},
    {"info", h_info},
    {"plugins.list", core_methods_plugins},
    {"plugins.restart", core_methods_plugins},
    {"plugins.replace", core_methods_plugins},
    {"events.subscribe", core_events_subscribe},
    {"events.publish", h_publish},
    {"plugin.register", core_plugin_register},
    {"plugin.ready", core_plugin_ready},
    {"plugin.recycle", core_plugin_recycle},
};

static bool reserved_name(const char *m)
{
    return strncmp(m, "plugins.", 8) == 0 || strncmp(m, "plugin.", 7) == 0 ||
           strncmp(m, "events.", 7) == 0;
}

static void on_request(core_peer_t *p, const ipc_msg_t *m)
{
    core_t *c = p->core;
    if (!p->authorized) {
        core_reply_error(p, m->msgid, BERTH_E_PERMISSION_DENIED,
                         "permission denied: uid %u may not use %s (it needs uid 0 or membership "
                         "of the group set by the `group` config key)",
                         (unsigned)p->uid, c->cfg->address);
        core_peer_close(p, true);
        return;
    }
    if (ipc_idmap_get(&p->calls, m->msgid)) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"protocol violation: msgid reused while outstanding; closing\" %s msgid=%u",
                  core_peer_desc(p), m->msgid);
        core_peer_close(p, true);
        return;
    }
    const char *meth = m->method;
    if (meth[0] == '$') {
        core_reply_error(p, m->msgid, BERTH_E_INVALID_ARGUMENT,
                         "%s is a protocol notification, not a method", meth);
        return;
    }
    bool is_plugin = p->kind != CORE_PEER_CLIENT;
    if (is_plugin && (!p->inst || p->inst->state == CORE_IS_SPAWNED)) {
        if (strcmp(meth, "plugin.register") == 0)
            core_plugin_register(p, m);
        else
            core_reply_error(p, m->msgid, BERTH_E_FAILED_PRECONDITION,
                             "a plugin must register (plugin.register) before calling %s", meth);
        return;
    }
    if (c->shutting_down) {
        core_reply_error(p, m->msgid, BERTH_E_UNAVAILABLE, "berthd is shutting down");
        return;
    }
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(core_methods); i++) {
        if (strcmp(core_methods[i].name, meth) == 0) {
            if (strncmp(meth, "plugin.", 7) == 0 && !is_plugin) {
                core_reply_error(p, m->msgid, BERTH_E_PERMISSION_DENIED,
                                 "%s is only accepted from plugin connections", meth);
                return;
            }
            core_methods[i].fn(p, m);
            return;
        }
    }
    if (reserved_name(meth)) {
        core_reply_error(p, m->msgid, BERTH_E_UNIMPLEMENTED, "berthd has no method %s", meth);
        return;
    }
    forward_request(p, m);
}

static void on_notify(core_peer_t *p, const ipc_msg_t *m)
{
    if (!p->authorized)
        return;
    if (m->method[0] == '$') {
        on_stream_control(p, m);
        return;
    }
    bool registered = p->kind != CORE_PEER_CLIENT && p->inst && p->inst->state != CORE_IS_SPAWNED;
    if (strcmp(m->method, "events.publish") == 0 && registered) {
        core_events_publish_req(p, m, true);
    } else if (strcmp(m->method, "plugin.ready") == 0 && registered) {
        core_plugin_ready(p, NULL);
    } else {
        berth_log(BERTH_LOG_DEBUG, "msg=\"notification ignored\" %s method=%s", core_peer_desc(p),
                  m->method);
    }
}

void core_on_message(core_peer_t *p, ipc_msg_t *m)
{
    switch (m->type) {
    case IPC_REQUEST:
        on_request(p, m);
        break;
    case IPC_RESPONSE:
        if (p->authorized)
            on_response(p, m);
        break;
    case IPC_NOTIFY:
        on_notify(p, m);
        break;
    }
    ipc_msg_free(m);
}

/* ===================== deadlines ========================================= */

static void expire_routes(uv_timer_t *t)
{
    core_t *c = t->data;
    c->deadline_armed = 0;
    uint64_t now = uv_now(c->loop);
    while (c->heap_len && c->heap[0]->deadline <= now) {
        core_route_t *r = c->heap[0];
        heap_remove(c, r);
        uint64_t waited = now - r->started_ms;
        if (r->state == CORE_ROUTE_QUEUED) {
            if (r->plugin)
                route_fail(r, BERTH_E_DEADLINE_EXCEEDED,
                           "%s: deadline exceeded after %llu ms waiting for plugin %s (%s)",
                           r->method, (unsigned long long)waited, r->plugin->id,
                           core_plugin_status_name(r->plugin->status));
            else
                route_fail(r, BERTH_E_DEADLINE_EXCEEDED,
                           "%s: deadline exceeded after %llu ms waiting for a plugin serving it",
                           r->method, (unsigned long long)waited);
        } else if (r->state == CORE_ROUTE_INFLIGHT) {
            route_fail(r, BERTH_E_DEADLINE_EXCEEDED,
                       "%s: deadline exceeded after %llu ms waiting for plugin %s", r->method,
                       (unsigned long long)waited, r->plugin ? r->plugin->id : "?");
        } else {
            route_fail(r, BERTH_E_DEADLINE_EXCEEDED, "%s: deadline exceeded after %llu ms",
                       r->method, (unsigned long long)waited);
        }
    }
    heap_arm(c);
}

/* ===================== peers going away ================================== */

static int by_seq(const void *a, const void *b)
{
    const core_route_t *x = *(core_route_t *const *)a, *y = *(core_route_t *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

size_t core_router_drain_count(core_peer_t *p)
{
    size_t n = 0;
    size_t cnt = 0;
    void **vals = ipc_idmap_values(&p->serving, &cnt);
    for (size_t i = 0; vals && i < cnt; i++)
        if (((core_route_t *)vals[i])->counts_for_drain)
            n++;
    free(vals);
    return n;
}

void core_router_peer_closed(core_peer_t *p)
{
    core_t *c = p->core;
    /* 1. Requests this peer made: cancel them where they run. */
    size_t n = 0;
    void **vals = ipc_idmap_values(&p->calls, &n);
    for (size_t i = 0; vals && i < n; i++) {
        core_route_t *r = vals[i];
        r->caller = NULL;
        if (r->state == CORE_ROUTE_INFLIGHT && r->server == p)
            continue; /* served by the same peer: handled below */
        if (r->state == CORE_ROUTE_INFLIGHT) {
            route_retire(r);
        } else {
            core_route_free(r);
        }
    }
    free(vals);
    ipc_idmap_destroy(&p->calls);

    /* 2. Requests this peer was serving: re-send the safe ones to the next
     * instance, answer `unavailable` to the rest. */
    vals = ipc_idmap_values(&p->serving, &n);
    ipc_idmap_destroy(&p->serving);
    if (vals && n > 1)
        qsort(vals, n, sizeof(*vals), by_seq);
    core_plugin_t *pl = p->inst ? p->inst->plugin : NULL;
    bool comes_back = pl && !c->shutting_down && pl->status != CORE_PS_FAILED;
    core_route_t *requeue_head = NULL, *requeue_tail = NULL;
    for (size_t i = 0; vals && i < n; i++) {
        core_route_t *r = vals[i];
        r->server = NULL;
        r->state = 0;
        r->counts_for_drain = false;
        if (r->on_response) {
            void (*cb)(core_route_t *, const ipc_msg_t *, const berth_error_t *) = r->on_response;
            r->on_response = NULL;
            berth_error_t e = {.code = BERTH_E_UNAVAILABLE, .message = "plugin connection closed"};
            cb(r, NULL, &e);
            core_route_free(r);
            continue;
        }
        if (!r->caller) {
            core_route_free(r);
            continue;
        }
        bool resend = comes_back && r->payload && !r->canceled &&
                      ((r->retry_ok && !r->stream_started) || r->resumable);
        if (resend) {
            berth_log(BERTH_LOG_DEBUG,
                      "msg=\"re-sending request to the next instance\" plugin=%s method=%s", pl->id,
                      r->method);
            r->qnext = NULL;
            r->qprev = requeue_tail;
            if (requeue_tail)
                requeue_tail->qnext = r;
            else
                requeue_head = r;
            requeue_tail = r;
            continue;
        }
        const char *what = !pl                         ? "went away"
                           : c->shutting_down          ? "stopped (berthd is shutting down)"
                           : pl->op && pl->op->replace ? "was replaced"
                           : pl->external              ? "disconnected"
                                                       : "restarted";
        route_fail(r, BERTH_E_UNAVAILABLE,
                   "plugin %s %s while handling %s; it may have been partly applied",
                   pl ? pl->id : "?", what, r->method);
    }
    free(vals);
    /* Prepend the re-sent ones in their original order. */
    if (requeue_head) {
        for (core_route_t *r = requeue_tail; r;) {
            core_route_t *prev = r->qprev;
            r->state = CORE_ROUTE_QUEUED;
            queue_push(&pl->queue, r, true);
            r = prev;
        }
    }
}

void core_router_init(core_t *c)
{
    berth_mpbuf_init(&c->scratch);
    uv_timer_init(c->loop, &c->deadline_timer);
    c->deadline_timer.data = c;
}

void core_router_fini(core_t *c)
{
    berth_mpbuf_destroy(&c->scratch);
    free(c->heap);
    c->heap = NULL;
    for (size_t i = 0; i < c->methods.cap; i++) {
        core_method_t *m = c->methods.slots[i];
        (void)m; /* owned by their plugins */
    }
    free(c->methods.slots);
    c->methods.slots = NULL;
}
