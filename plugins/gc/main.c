/* SPDX-License-Identifier: Apache-2.0 */
/* berth-gc: decides when to collect garbage (sched.c), drives a collection
 * through metadata and the backends (run.c) and serves gc.run, gc.sync and
 * gc.status (handlers.c). It owns no data: metadata marks and tombstones,
 * content and snapshot-overlay delete, so this process can crash or be
 * replaced at any point and the next collection picks up where it stopped.
 * After init it confines itself with seccomp (gc_sandbox). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "berth/failpoint.h"
#include "internal.h"

/* Topics that may leave garbage behind (a deletion) or change what is
 * referenced (a mutation). Prefixes, as events.subscribe takes them. */
static const char *const sub_filters[] = {
    "/images/", "/content/", "/snapshots/", "/containers/", "/leases/", "/namespaces/delete",
};
static const char *const deletion_topics[] = {
    "/images/delete", "/content/delete",    "/snapshots/remove",
    "/leases/delete", "/containers/delete", "/namespaces/delete",
};

static gc_t g_gc;

/* ---- scheduler timer --------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    gc_t *g = t->data;
    if (gc_sched_due(&g->sched, uv_hrtime()))
        gc_run_start(g);
    else
        gc_arm(g);
}

void gc_arm(gc_t *g)
{
    if (g->stopping || !g->timers_init)
        return;
    uint64_t next = g->sched.next_mono;
    if (next == 0 || g->run) {
        uv_timer_stop(&g->timer);
        return;
    }
    uv_loop_t *loop = berth_plugin_loop(g->p);
    uv_update_time(loop); /* libuv timers count from the cached loop time */
    uint64_t now = uv_hrtime();
    uint64_t ms = next > now ? (next - now + GC_NS_PER_MS - 1) / GC_NS_PER_MS : 0;
    uv_timer_start(&g->timer, on_timer, ms, 0);
}

/* ---- end of a collection ----------------------------------------------------- */

static void note_expiry(gc_t *g, int64_t at_wall)
{
    if (at_wall <= 0)
        return;
    if (g->next_expire_wall == 0 || at_wall < g->next_expire_wall) {
        g->next_expire_wall = at_wall;
        if (gc_sched_expiry(&g->sched, at_wall, berth_now_ns(), uv_hrtime()))
            gc_arm(g);
    }
}

void gc_run_finished(gc_t *g, const gc_stats_t *st, bool ok, const char *error)
{
    g->have_last = true;
    g->last = *st;
    free(g->last_error);
    g->last_error = error ? strdup(error) : NULL;
    g->runs++;
    if (!ok)
        g->runs_failed++;
    if (ok)
        berth_log(BERTH_LOG_INFO,
                  "msg=\"collected\" content=%" PRIu64 " snapshots=%" PRIu64 " orphans=%" PRIu64
                  " bytes_freed=%" PRIu64 " duration_ms=%.3f lock_ms=%.3f",
                  st->content_deleted, st->snapshots_deleted, st->orphans_deleted, st->bytes_freed,
                  st->duration_ns / 1e6, st->lock_ns / 1e6);
    else
        berth_log(BERTH_LOG_WARN, "msg=\"collection incomplete, will retry\" err=\"%s\"",
                  error ? error : "");

    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    gc_pack_stats(&b.pk, st, ok ? NULL : error);
    berth_publish(g->p, "/gc/run", "", b.buf.data, b.buf.size, NULL, NULL);
    berth_mpbuf_destroy(&b);

    gc_sched_end(&g->sched, ok, st->lock_ns, uv_hrtime());
    /* The mark told us the next lease / gc.expire expiry (0 = none); an
     * expiry at or before this collection's start was handled by it. */
    int64_t exp = g->next_expire_wall;
    g->next_expire_wall = 0;
    gc_sched_expiry(&g->sched, 0, 0, 0);
    if (exp > st->started_at)
        note_expiry(g, exp);
    gc_waiters_finish(g, st, ok, error);
    gc_arm(g);
}

/* ---- events ------------------------------------------------------------------- */

/* Test hook (BERTH_FAILPOINTS=gc.sandbox_probe=error): the next event makes
 * gc call execve, which its sandbox must answer by killing the process
 * (SIGSYS; tests/e2e/sandbox.bats). Harmless without a sandbox. */
static void sandbox_probe(void)
{
    if (berth_failpoint("gc.sandbox_probe") == 0)
        return;
    berth_sandbox_probe_syscall("execve");
    berth_log(BERTH_LOG_ERROR,
              "msg=\"sandbox probe execve was not stopped by the sandbox\" err=\"%s\"",
              strerror(errno));
}

static void on_event(berth_call_t *c, const msgpack_object *data, void *ud)
{
    gc_t *g = ud;
    if (!data || data->type != MSGPACK_OBJECT_MAP)
        return;
    sandbox_probe();
    berth_error_t *err = NULL;
    const char *topic = NULL;
    size_t tlen = 0;
    int64_t ts = 0;
    uint64_t dropped = 0;
    const msgpack_object *ev = NULL;
    if (berth_mp_get_str(data, "topic", &topic, &tlen, &err) != 0)
        topic = "", tlen = 0;
    if (berth_mp_get_i64(data, "timestamp", &ts, &err) != 0)
        ts = berth_now_ns();
    berth_mp_get_u64(data, "dropped", &dropped, &err);
    berth_mp_get_map(data, "event", &ev, &err);
    berth_error_free(&err);
    bool own = false;
    /* Deletions done by a collection itself are marked gc: true by metadata;
     * counting them would schedule a collection after every collection. */
    if (berth_mp_get_bool(ev, "gc", &own, &err) == 0 && own)
        return;
    berth_error_free(&err);
    gc_ev_kind_t kind = GC_EV_MUTATION;
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(deletion_topics); i++)
        if (strlen(deletion_topics[i]) == tlen && memcmp(deletion_topics[i], topic, tlen) == 0)
            kind = GC_EV_DELETION;
    if (dropped)
        kind = GC_EV_DELETION; /* we may have missed one */
    if (tlen == strlen("/leases/create") && memcmp(topic, "/leases/create", tlen) == 0) {
        int64_t exp = 0;
        if (berth_mp_get_i64(ev, "expire", &exp, &err) == 0)
            note_expiry(g, exp);
        berth_error_free(&err);
    }
    berth_log(BERTH_LOG_TRACE, "msg=\"event\" topic=%.*s kind=%s", (int)tlen, topic,
              kind == GC_EV_DELETION ? "deletion" : "mutation");
    if (gc_sched_event(&g->sched, kind, ts, uv_hrtime()))
        gc_arm(g);
}

static void on_resubscribe(uv_timer_t *t)
{
    gc_subscribe(t->data);
}

static void on_sub_end(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                       void *ud)
{
    gc_t *g = ud;
    g->sub = NULL;
    if (g->stopping)
        return;
    /* unavailable: the core is going away (the plugin stops with it). */
    berth_log(err && err->code == BERTH_E_UNAVAILABLE ? BERTH_LOG_DEBUG : BERTH_LOG_WARN,
              "msg=\"event subscription ended, re-subscribing in 1s\" err=\"%s\"",
              err ? err->message : "stream ended");
    if (g->timers_init)
        uv_timer_start(&g->sub_timer, on_resubscribe, 1000, 0);
}

void gc_subscribe(gc_t *g)
{
    if (g->stopping || g->sub)
        return;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_pack_str(&b.pk, "filters");
    msgpack_pack_array(&b.pk, BERTH_ARRAY_SIZE(sub_filters));
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(sub_filters); i++)
        berth_mp_pack_str(&b.pk, sub_filters[i]);
    berth_error_t *err = NULL;
    g->sub = berth_call(g->p, "events.subscribe", b.buf.data, b.buf.size, 0, on_sub_end, on_event,
                        g, &err);
    berth_mpbuf_destroy(&b);
    if (!g->sub) {
        berth_log(BERTH_LOG_WARN, "msg=\"cannot subscribe to events\" err=\"%s\"",
                  err ? err->message : "");
        berth_error_free(&err);
        if (g->timers_init && !g->stopping)
            uv_timer_start(&g->sub_timer, on_resubscribe, 1000, 0);
        return;
    }
    /* Events published while we were not subscribed are lost: count one
     * deletion so that the next collection looks (after the startup one this
     * costs at most one extra collection per lost subscription). */
    if (g->sched.collected_once &&
        gc_sched_event(&g->sched, GC_EV_DELETION, berth_now_ns(), uv_hrtime()))
        gc_arm(g);
}

/* ---- plugin ------------------------------------------------------------------- */

/* The sandbox (docs/security.md, "Plugin sandboxes"). gc owns no data: after
 * init it only talks to the core over its inherited fd and keeps timers. It
 * never runs programs, mounts, traces, opens sockets, signals others, nor
 * changes files (deleting is content's and snapshot-overlay's job, asked
 * through the core). Two stacked filters: a denylist of the SDK base set's
 * calls we never make, then the SDK's allowlist (base set plus `extra`,
 * anything else kills); the kernel applies the strictest verdict. */
static int gc_sandbox(berth_plugin_t *p, berth_error_t **err)
{
    /* no file changes: deletion is asked of content and snapshot-overlay */
    static const char *const denied[] = {
        "unlink",   "unlinkat", "rename",    "renameat",  "renameat2", "mkdir",
        "mkdirat",  "rmdir",    "link",      "linkat",    "symlink",   "symlinkat",
        "chmod",    "fchmod",   "fchmodat",  "chown",     "fchown",    "fchownat",
        "lchown",   "truncate", "ftruncate", "fallocate", "utimensat", "copy_file_range",
        "sendfile", "splice",   NULL};
    return berth_plugin_confine(p, 0, NULL, denied, err);
}

static int gc_init(berth_plugin_t *p, berth_error_t **err)
{
    gc_t *g = berth_plugin_data(p);
    g->p = p;
    if (gc_config_parse(berth_plugin_config(p), &g->cfg, err) < 0)
        return -1;
    uv_loop_t *loop = berth_plugin_loop(p);
    uv_timer_init(loop, &g->timer);
    uv_timer_init(loop, &g->sub_timer);
    g->timer.data = g;
    g->sub_timer.data = g;
    g->timers_init = true;
    gc_sched_init(&g->sched, &g->cfg, uv_hrtime());
    gc_subscribe(g);
    gc_arm(g);
    if (gc_sandbox(p, err) < 0)
        return -1;
    berth_log(BERTH_LOG_INFO,
              "msg=\"gc ready\" pause_threshold=%g deletion_threshold=%u mutation_threshold=%u "
              "schedule_delay_ms=%.1f startup_delay_ms=%.1f orphan_scan=%s",
              g->cfg.pause_threshold, g->cfg.deletion_threshold, g->cfg.mutation_threshold,
              g->cfg.schedule_delay_ns / 1e6, g->cfg.startup_delay_ns / 1e6,
              g->cfg.orphan_scan ? "true" : "false");
    return 0;
}

static void gc_fini(berth_plugin_t *p)
{
    gc_t *g = berth_plugin_data(p);
    g->stopping = true;
    if (g->timers_init) {
        uv_timer_stop(&g->timer);
        uv_timer_stop(&g->sub_timer);
    }
    gc_waiters_abort(g, "berth-gc stopped before the collection finished");
    free(g->last_error);
    g->last_error = NULL;
}

static const berth_method_t methods[] = {
    /* Re-sent to a restarted instance: running a collection twice is harmless
     * and the caller still gets one that includes its deletions. */
    {"gc.run", gc_handle_run, BERTH_METHOD_IDEMPOTENT, NULL},
    {"gc.sync", gc_handle_sync, BERTH_METHOD_IDEMPOTENT, NULL},
    {"gc.status", gc_handle_status, BERTH_METHOD_IDEMPOTENT, NULL},
};

static const char *const requires[] = {"metadata", "content", "snapshot-overlay", NULL};

int main(int argc, char **argv)
{
    berth_plugin_desc_t desc = {
        .id = "gc",
        .type = "io.berth.gc.v1",
        .version = "0.1.0",
        .methods = methods,
        .n_methods = BERTH_ARRAY_SIZE(methods),
        .requires = requires,
        .init = gc_init,
        .fini = gc_fini,
        .data = &g_gc,
    };
    return berth_plugin_main(&desc, argc, argv);
}
