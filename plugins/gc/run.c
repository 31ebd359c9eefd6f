/* SPDX-License-Identifier: Apache-2.0 */
/* One collection, driven on the loop as a chain of calls through the core:
 *
 *   meta.gc_collect          mark & sweep in one metadata write transaction;
 *                            returns every tombstoned blob and snapshot (new
 *                            ones and those left by an interrupted run)
 *   content.list_blobs  ┐    optional orphan scan: files with no record whose
 *   overlayfs.list      ├─   last change is older than this mark's start
 *   meta.gc_orphans     ┘    (minus orphan_grace) are tombstoned by metadata
 *   content.delete_blob ┐    backend deletions, max_concurrent_deletes at a
 *   overlayfs.remove    ┘    time; not_found counts as done (idempotent)
 *   meta.gc_done             drops the tombstones of what is gone
 *
 * Anything not confirmed gone keeps its tombstone, so the next collection
 * (retried with backoff, and always at startup) finishes the job: a crash of
 * berth-gc or of a backend mid-sweep loses nothing and leaks nothing. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth/failpoint.h"
#include "internal.h"

/* Items per meta.gc_orphans / meta.gc_done call (keeps frames small). */
#define BATCH 4096

struct gc_run_s {
    gc_t *g;
    gc_stats_t st;
    uint64_t start_mono;
    int64_t mark_started_at; /* wall ns: orphans must be older */
    uint32_t timeout_ms;
    gc_strv_t del_content, del_snaps; /* tombstoned: to delete */
    size_t content_orphans_from;      /* indexes >= this in del_content are orphans */
    size_t snaps_orphans_from;
    gc_strv_t cand_content, cand_snaps; /* orphan candidates */
    size_t cand_c, cand_s;              /* sent to meta.gc_orphans so far */
    gc_strv_t done_content, done_snaps; /* confirmed gone */
    size_t done_c, done_s;              /* sent to meta.gc_done so far */
    size_t batch, confirmed;            /* the gc_done in flight; those it confirmed */
    size_t next_c, next_s, inflight;
    bool pumping;          /* pump() is on the stack */
    bool warned_absent[2]; /* content, snapshots backend absent */
    char *first_error;     /* first backend failure */
    bool failed;           /* the collection as a whole failed */
};

typedef struct {
    gc_run_t *run;
    bool snapshot;
    size_t index;
} del_ctx_t;

static void run_finish(gc_run_t *run);
static void phase_list_blobs(gc_run_t *run);
static void phase_list_snaps(gc_run_t *run);
static void phase_orphans(gc_run_t *run);
static void phase_delete(gc_run_t *run);
static void phase_done(gc_run_t *run);

static void note_error(gc_run_t *run, const char *fmt, ...) BERTH_PRINTF(2, 3);
static void note_error(gc_run_t *run, const char *fmt, ...)
{
    if (run->first_error)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&run->first_error, fmt, ap) < 0)
        run->first_error = NULL;
    va_end(ap);
}

/* Sends a call; on immediate failure (core gone) runs `cb` with the error so
 * every phase has one way out. */
static void call(gc_run_t *run, const char *method, berth_mpbuf_t *params, berth_call_cb cb,
                 void *data)
{
    berth_error_t *err = NULL;
    berth_call_t *c =
        berth_call(run->g->p, method, params ? params->buf.data : NULL,
                   params ? params->buf.size : 0, run->timeout_ms, cb, NULL, data, &err);
    if (!c) {
        cb(NULL, err, NULL, data);
        berth_error_free(&err);
    }
}

static bool missing_method(const berth_error_t *err)
{
    return err->code == BERTH_E_UNIMPLEMENTED;
}

/* ---- meta.gc_collect ------------------------------------------------------ */

static void on_collect(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                       void *data)
{
    gc_run_t *run = data;
    if (err) {
        note_error(run, "meta.gc_collect: %s", err->message);
        run->failed = true;
        run_finish(run);
        return;
    }
    berth_error_t *perr = NULL;
    if (gc_strv_from_array(&run->del_content, berth_mp_get(res, "content"),
                           "meta.gc_collect content", &perr) < 0 ||
        gc_strv_from_array(&run->del_snaps, berth_mp_get(res, "snapshots"),
                           "meta.gc_collect snapshots", &perr) < 0) {
        note_error(run, "%s", perr->message);
        berth_error_free(&perr);
        run->failed = true;
        run_finish(run);
        return;
    }
    const msgpack_object *stats = berth_mp_get(res, "stats");
    /* Times: mark_ns / lock_ns (ns), else mark_us / sweep_us (µs) — the lock
     * is held for at least mark + sweep. */
    uint64_t mark_ns = 0, lock_ns = 0, mark_us = 0, sweep_us = 0;
    bool have_mark = berth_mp_get_u64(stats, "mark_ns", &mark_ns, &perr) == 0;
    bool have_lock = berth_mp_get_u64(stats, "lock_ns", &lock_ns, &perr) == 0;
    berth_mp_get_u64(stats, "mark_us", &mark_us, &perr);
    berth_mp_get_u64(stats, "sweep_us", &sweep_us, &perr);
    berth_error_free(&perr);
    run->st.mark_ns = have_mark ? mark_ns : mark_us * 1000;
    run->st.lock_ns = have_lock ? lock_ns : (mark_us + sweep_us) * 1000;
    if (run->st.lock_ns < run->st.mark_ns)
        run->st.lock_ns = run->st.mark_ns;
    int64_t exp = 0;
    if (berth_mp_get_i64(stats, "next_expire", &exp, &perr) == 0 ||
        berth_mp_get_i64(res, "next_expire", &exp, &perr) == 0)
        run->g->next_expire_wall = exp > 0 ? exp : 0;
    berth_error_free(&perr);
    /* The mark's own start (metadata's clock) bounds what it saw. */
    int64_t mark_start = 0;
    if (berth_mp_get_i64(res, "started_at", &mark_start, &perr) == 0 && mark_start > 0)
        run->mark_started_at = mark_start;
    berth_error_free(&perr);
    gc_strv_sort_unique(&run->del_content);
    gc_strv_sort_unique(&run->del_snaps);
    run->content_orphans_from = run->del_content.n;
    run->snaps_orphans_from = run->del_snaps.n;
    berth_log(BERTH_LOG_DEBUG, "msg=\"marked\" content=%zu snapshots=%zu mark_ms=%.3f lock_ms=%.3f",
              run->del_content.n, run->del_snaps.n, run->st.mark_ns / 1e6, run->st.lock_ns / 1e6);
    if (run->g->cfg.orphan_scan)
        phase_list_blobs(run);
    else
        phase_delete(run);
}

/* ---- orphan scan ------------------------------------------------------------ */

static void on_list_blobs(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                          void *data)
{
    gc_run_t *run = data;
    if (err) {
        /* Not fatal: tombstoned objects are still deleted; orphans wait. */
        berth_log(missing_method(err) ? BERTH_LOG_DEBUG : BERTH_LOG_WARN,
                  "msg=\"orphan scan skipped\" backend=content err=\"%s\"", err->message);
        phase_list_snaps(run);
        return;
    }
    gc_blob_t *blobs = NULL;
    size_t n = 0;
    berth_error_t *perr = NULL;
    /* "Older than the start of the last completed mark" (ARCHITECTURE.md),
     * minus a grace for slow commits and clock steps. */
    int64_t cutoff = run->mark_started_at - (int64_t)run->g->cfg.orphan_grace_ns;
    if (gc_parse_blobs(res, &blobs, &n, &perr) < 0 ||
        gc_orphan_blobs(blobs, n, cutoff, &run->del_content, &run->cand_content, &perr) < 0) {
        berth_log(BERTH_LOG_WARN, "msg=\"orphan scan skipped\" backend=content err=\"%s\"",
                  perr->message);
        berth_error_free(&perr);
        gc_strv_free(&run->cand_content);
    }
    free(blobs);
    phase_list_snaps(run);
}

static void phase_list_blobs(gc_run_t *run)
{
    call(run, "content.list_blobs", NULL, on_list_blobs, run);
}

static void on_list_snaps(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                          void *data)
{
    gc_run_t *run = data;
    if (err) {
        berth_log(missing_method(err) ? BERTH_LOG_DEBUG : BERTH_LOG_WARN,
                  "msg=\"orphan scan skipped\" backend=overlayfs err=\"%s\"", err->message);
        phase_orphans(run);
        return;
    }
    /* Snapshot directories are created only after metadata recorded their
     * id, and ids are never reused, so an id on disk that metadata does not
     * know is an orphan whatever its age. */
    gc_strv_t ids = {0};
    berth_error_t *perr = NULL;
    if (gc_strv_from_array(&ids, berth_mp_get(res, "ids"), "overlayfs.list ids", &perr) < 0) {
        berth_log(BERTH_LOG_WARN, "msg=\"orphan scan skipped\" backend=overlayfs err=\"%s\"",
                  perr->message);
        berth_error_free(&perr);
    } else {
        for (size_t i = 0; i < ids.n; i++)
            if (!gc_strv_has(&run->del_snaps, ids.v[i]) &&
                gc_strv_push(&run->cand_snaps, ids.v[i], strlen(ids.v[i])) < 0)
                break;
    }
    gc_strv_free(&ids);
    phase_orphans(run);
}

static void phase_list_snaps(gc_run_t *run)
{
    call(run, "overlayfs.list", NULL, on_list_snaps, run);
}

static void on_orphans(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                       void *data)
{
    gc_run_t *run = data;
    if (err) {
        if (missing_method(err)) {
            if (!run->g->warned_no_orphans)
                berth_log(BERTH_LOG_WARN, "msg=\"metadata does not serve meta.gc_orphans: "
                                          "orphan files are not collected\"");
            run->g->warned_no_orphans = true;
        } else {
            berth_log(BERTH_LOG_WARN, "msg=\"orphan check failed\" err=\"%s\"", err->message);
        }
        phase_delete(run);
        return;
    }
    /* What metadata returns is tombstoned now: delete it like the rest. */
    berth_error_t *perr = NULL;
    if (gc_strv_from_array(&run->del_content, berth_mp_get(res, "content"),
                           "meta.gc_orphans content", &perr) < 0 ||
        gc_strv_from_array(&run->del_snaps, berth_mp_get(res, "snapshots"),
                           "meta.gc_orphans snapshots", &perr) < 0) {
        berth_log(BERTH_LOG_WARN, "msg=\"orphan check failed\" err=\"%s\"", perr->message);
        berth_error_free(&perr);
        phase_delete(run);
        return;
    }
    phase_orphans(run);
}

static void phase_orphans(gc_run_t *run)
{
    size_t nc = run->cand_content.n - run->cand_c;
    size_t ns = run->cand_snaps.n - run->cand_s;
    if (nc == 0 && ns == 0) {
        phase_delete(run);
        return;
    }
    if (nc > BATCH)
        nc = BATCH;
    if (ns > BATCH)
        ns = BATCH;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_pack_str(&b.pk, "content");
    gc_pack_strv(&b.pk, run->cand_content.v + run->cand_c, nc);
    berth_mp_pack_str(&b.pk, "snapshots");
    gc_pack_strv(&b.pk, run->cand_snaps.v + run->cand_s, ns);
    run->cand_c += nc;
    run->cand_s += ns;
    call(run, "meta.gc_orphans", &b, on_orphans, run);
    berth_mpbuf_destroy(&b);
}

/* ---- backend deletions ----------------------------------------------------- */

static void pump(gc_run_t *run);

static void on_deleted(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                       void *data)
{
    del_ctx_t *d = data;
    gc_run_t *run = d->run;
    const char *id = d->snapshot ? run->del_snaps.v[d->index] : run->del_content.v[d->index];
    gc_strv_t *done = d->snapshot ? &run->done_snaps : &run->done_content;
    run->inflight--;
    if (err && err->code == BERTH_E_UNIMPLEMENTED) {
        /* The backend is not configured (or not up): nothing can be
         * deleted there now. The tombstone stays for when it is back; that
         * is not a failure of this collection. */
        if (!run->warned_absent[d->snapshot])
            berth_log(BERTH_LOG_WARN,
                      "msg=\"backend absent, its deletions stay pending\" err=\"%s\"",
                      err->message);
        run->warned_absent[d->snapshot] = true;
    } else if (err && err->code != BERTH_E_NOT_FOUND) {
        run->st.failed++;
        note_error(run, "%s %s: %s", d->snapshot ? "overlayfs.remove" : "content.delete_blob", id,
                   err->message);
        berth_log(BERTH_LOG_WARN, "msg=\"backend deletion failed, will retry\" %s=%s err=\"%s\"",
                  d->snapshot ? "snapshot" : "digest", id, err->message);
    } else {
        if (!err) {
            uint64_t freed = 0;
            berth_error_t *perr = NULL;
            if (berth_mp_get_u64(res, "freed", &freed, &perr) == 1)
                berth_mp_get_u64(res, "size", &freed, &perr);
            berth_error_free(&perr);
            run->st.bytes_freed += freed;
            if (d->snapshot) {
                run->st.snapshots_deleted++;
                if (d->index >= run->snaps_orphans_from)
                    run->st.orphans_deleted++;
            } else {
                run->st.content_deleted++;
                if (d->index >= run->content_orphans_from)
                    run->st.orphans_deleted++;
            }
        }
        /* Crash tests (docs/security.md): the first object this run really
         * deleted is gone from its backend, its tombstone is not dropped yet
         * (meta.gc_done comes after the sweep). `error` counts it as failed:
         * the tombstone stays and the next run finds it not_found. */
        bool first = !err && run->done_content.n + run->done_snaps.n == 0;
        if (first && berth_failpoint("gc.sweep.after_first_delete") < 0) {
            run->st.failed++;
            note_error(run, "failpoint gc.sweep.after_first_delete after %s", id);
        } else if (gc_strv_push(done, id, strlen(id)) < 0) {
            run->st.failed++; /* stays tombstoned: retried next time */
        }
    }
    free(d);
    pump(run);
}

/* Keeps max_concurrent_deletes calls in flight. A call that fails at once
 * (core gone) completes synchronously; the guard turns that recursion into
 * the loop below. */
static void pump(gc_run_t *run)
{
    gc_t *g = run->g;
    if (run->pumping)
        return;
    run->pumping = true;
    while (run->inflight < g->cfg.max_concurrent_deletes &&
           (run->next_c < run->del_content.n || run->next_s < run->del_snaps.n)) {
        del_ctx_t *d = calloc(1, sizeof(*d));
        if (!d) {
            /* Give up on the rest for this run: they stay tombstoned. */
            note_error(run, "out of memory");
            run->st.failed += (run->del_content.n - run->next_c) + (run->del_snaps.n - run->next_s);
            run->next_c = run->del_content.n;
            run->next_s = run->del_snaps.n;
            break;
        }
        d->run = run;
        const char *method;
        if (run->next_c < run->del_content.n) {
            d->index = run->next_c++;
            method = "content.delete_blob";
        } else {
            d->snapshot = true;
            d->index = run->next_s++;
            method = "overlayfs.remove";
        }
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        msgpack_pack_map(&b.pk, 1);
        berth_mp_kv_str(&b.pk, d->snapshot ? "id" : "digest",
                        d->snapshot ? run->del_snaps.v[d->index] : run->del_content.v[d->index]);
        run->inflight++;
        call(run, method, &b, on_deleted, d);
        berth_mpbuf_destroy(&b);
    }
    run->pumping = false;
    if (run->inflight == 0 && run->next_c >= run->del_content.n && run->next_s >= run->del_snaps.n)
        phase_done(run);
}

static void phase_delete(gc_run_t *run)
{
    gc_strv_free(&run->cand_content);
    gc_strv_free(&run->cand_snaps);
    pump(run);
}

/* ---- meta.gc_done ---------------------------------------------------------- */

static void on_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                    void *data)
{
    gc_run_t *run = data;
    if (err) {
        /* The files are gone but their tombstones stay: the next run gets
         * them again, finds them not_found and reports them again. */
        note_error(run, "meta.gc_done: %s", err->message);
        run->failed = true;
        run_finish(run);
        return;
    }
    run->confirmed += run->batch;
    phase_done(run);
}

static void phase_done(gc_run_t *run)
{
    size_t nc = run->done_content.n - run->done_c;
    size_t ns = run->done_snaps.n - run->done_s;
    if (nc == 0 && ns == 0) {
        run_finish(run);
        return;
    }
    if (nc > BATCH)
        nc = BATCH;
    if (ns > BATCH)
        ns = BATCH;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_pack_str(&b.pk, "content");
    gc_pack_strv(&b.pk, run->done_content.v + run->done_c, nc);
    berth_mp_pack_str(&b.pk, "snapshots");
    gc_pack_strv(&b.pk, run->done_snaps.v + run->done_s, ns);
    run->done_c += nc;
    run->done_s += ns;
    run->batch = nc + ns;
    call(run, "meta.gc_done", &b, on_done, run);
    berth_mpbuf_destroy(&b);
}

/* ---- start and finish ------------------------------------------------------ */

static void run_free(gc_run_t *run)
{
    gc_strv_free(&run->del_content);
    gc_strv_free(&run->del_snaps);
    gc_strv_free(&run->cand_content);
    gc_strv_free(&run->cand_snaps);
    gc_strv_free(&run->done_content);
    gc_strv_free(&run->done_snaps);
    free(run->first_error);
    free(run);
}

static void run_finish(gc_run_t *run)
{
    gc_t *g = run->g;
    run->st.finished_at = berth_now_ns();
    run->st.duration_ns = uv_hrtime() - run->start_mono;
    size_t total = run->del_content.n + run->del_snaps.n;
    /* Pending: tombstones metadata still holds (not confirmed gone). */
    run->st.pending = total > run->confirmed ? total - run->confirmed : 0;
    bool ok = !run->failed && run->st.failed == 0;
    char *error = NULL;
    if (!ok && run->st.failed && !run->failed) {
        if (asprintf(&error,
                     "gc deleted %" PRIu64 " blobs and %" PRIu64 " snapshots, but %" PRIu64
                     " backend deletions failed and will be retried (first: %s)",
                     run->st.content_deleted, run->st.snapshots_deleted, run->st.failed,
                     run->first_error ? run->first_error : "unknown error") < 0)
            error = NULL;
    } else if (!ok) {
        if (asprintf(&error, "gc failed: %s",
                     run->first_error ? run->first_error : "unknown error") < 0)
            error = NULL;
    }
    gc_stats_t st = run->st;
    g->run = NULL;
    run_free(run);
    gc_run_finished(g, &st, ok, error ? error : (ok ? NULL : "gc failed"));
    free(error);
}

void gc_run_start(gc_t *g)
{
    if (g->run || g->stopping)
        return;
    gc_run_t *run = calloc(1, sizeof(*run));
    if (!run) {
        berth_log(BERTH_LOG_ERROR, "msg=\"out of memory starting a collection\"");
        return;
    }
    run->g = g;
    run->start_mono = uv_hrtime();
    run->st.started_at = berth_now_ns();
    run->mark_started_at = run->st.started_at;
    uint64_t t = g->cfg.call_timeout_ns / GC_NS_PER_MS;
    run->timeout_ms = t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
    g->run = run;
    gc_sched_begin(&g->sched, run->st.started_at, run->start_mono);
    /* Waiters that arrived before this start are served by this run. */
    g->current = g->pending;
    g->pending = NULL;
    for (gc_waiter_t *w = g->current; w; w = w->next)
        w->list = &g->current;
    berth_log(BERTH_LOG_DEBUG, "msg=\"collection started\"");
    call(run, "meta.gc_collect", NULL, on_collect, run);
}
