/* SPDX-License-Identifier: Apache-2.0 */
/* berth-gc methods: gc.run (collect now, return the stats), gc.sync (wait for
 * a collection that starts after the call; what `images rm --sync` and
 * friends use) and gc.status (the last collection and the scheduler's
 * state). Waiters are kept in two lists: `pending` (served by the next
 * collection to start) and `current` (attached to the running one). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A failed collection (a backend down) is retried with backoff; gc.sync
 * waits through this many failed runs before it gives up. */
#define SYNC_MAX_FAILED_RUNS 3

static gc_t *gc_of(berth_req_t *r)
{
    return berth_plugin_data(berth_req_plugin(r));
}

static void waiter_unlink(gc_waiter_t *w)
{
    for (gc_waiter_t **pp = w->list; pp && *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    w->next = NULL;
    w->list = NULL;
}

static void waiter_append(gc_waiter_t **list, gc_waiter_t *w)
{
    gc_waiter_t **pp = list;
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
    w->next = NULL;
    w->list = list;
}

static void on_waiter_cancel(berth_req_t *r)
{
    gc_waiter_t *w = berth_req_data(r);
    if (!w)
        return;
    waiter_unlink(w);
    berth_req_set_data(r, NULL);
    bool sync = w->sync;
    free(w);
    /* The collection itself goes on: others may wait for it. */
    berth_req_failf(r, BERTH_E_CANCELED, "%s canceled before the collection finished",
                    sync ? "gc.sync" : "gc.run");
}

static void add_waiter(berth_req_t *r, bool sync)
{
    gc_t *g = gc_of(r);
    if (g->stopping) {
        berth_req_failf(r, BERTH_E_UNAVAILABLE, "berth-gc is shutting down");
        return;
    }
    gc_waiter_t *w = calloc(1, sizeof(*w));
    if (!w) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->req = r;
    w->g = g;
    w->sync = sync;
    waiter_append(&g->pending, w);
    berth_req_set_data(r, w);
    berth_req_set_cancel_cb(r, on_waiter_cancel);
    /* gc.run means now; gc.sync honours schedule_delay so that a burst of
     * `rm --sync` calls shares one collection, like containerd. Neither waits
     * for the pause budget. */
    if (gc_sched_request(&g->sched, sync ? g->cfg.schedule_delay_ns : 0, uv_hrtime()))
        gc_arm(g);
}

void gc_handle_run(berth_req_t *r, const msgpack_object *params)
{
    (void)params;
    add_waiter(r, false);
}

void gc_handle_sync(berth_req_t *r, const msgpack_object *params)
{
    (void)params;
    add_waiter(r, true);
}

static void reply_stats(berth_req_t *r, const gc_stats_t *st)
{
    msgpack_packer *pk = berth_req_reply_begin(r);
    msgpack_pack_map(pk, 1);
    berth_mp_pack_str(pk, "stats");
    gc_pack_stats(pk, st, NULL);
    berth_req_reply_end(r);
}

void gc_waiters_finish(gc_t *g, const gc_stats_t *st, bool ok, const char *error)
{
    gc_waiter_t *list = g->current;
    g->current = NULL;
    while (list) {
        gc_waiter_t *w = list;
        list = w->next;
        w->next = NULL;
        w->list = NULL;
        if (!ok && w->sync && ++w->failed_runs < SYNC_MAX_FAILED_RUNS) {
            /* Wait for the retry the policy scheduled with backoff. */
            waiter_append(&g->pending, w);
            continue;
        }
        berth_req_t *r = w->req;
        berth_req_set_data(r, NULL);
        berth_req_set_cancel_cb(r, NULL);
        free(w);
        if (ok)
            reply_stats(r, st);
        else
            berth_req_failf(r, BERTH_E_UNAVAILABLE, "%s", error ? error : "gc failed");
    }
}

void gc_waiters_abort(gc_t *g, const char *why)
{
    gc_waiter_t **lists[] = {&g->pending, &g->current};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(lists); i++) {
        while (*lists[i]) {
            gc_waiter_t *w = *lists[i];
            *lists[i] = w->next;
            berth_req_t *r = w->req;
            berth_req_set_data(r, NULL);
            berth_req_set_cancel_cb(r, NULL);
            free(w);
            berth_req_failf(r, BERTH_E_UNAVAILABLE, "%s", why);
        }
    }
}

static size_t count(const gc_waiter_t *w)
{
    size_t n = 0;
    for (; w; w = w->next)
        n++;
    return n;
}

void gc_handle_status(berth_req_t *r, const msgpack_object *params)
{
    (void)params;
    gc_t *g = gc_of(r);
    const gc_sched_t *s = &g->sched;
    uint64_t now = uv_hrtime();
    msgpack_packer *pk = berth_req_reply_begin(r);
    msgpack_pack_map(pk, 10);
    berth_mp_kv_bool(pk, "running", g->run != NULL);
    berth_mp_kv_u64(pk, "collections", g->runs);
    berth_mp_kv_u64(pk, "failed_collections", g->runs_failed);
    berth_mp_pack_str(pk, "last");
    if (g->have_last)
        gc_pack_stats(pk, &g->last, g->last_error);
    else
        msgpack_pack_nil(pk);
    berth_mp_pack_str(pk, "next_in_ns");
    if (s->next_mono)
        msgpack_pack_uint64(pk, s->next_mono > now ? s->next_mono - now : 0);
    else
        msgpack_pack_nil(pk);
    berth_mp_kv_bool(pk, "dirty", gc_sched_dirty(s));
    berth_mp_kv_u64(pk, "deletions", s->deletions);
    berth_mp_kv_u64(pk, "mutations", s->mutations);
    berth_mp_kv_u64(pk, "interval_ns", s->interval_ns);
    berth_mp_kv_u64(pk, "waiters", count(g->pending) + count(g->current));
    berth_req_reply_end(r);
}
