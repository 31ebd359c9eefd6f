/* SPDX-License-Identifier: Apache-2.0 */
/* berth-gc internals: configuration (config.c), the scheduling policy
 * (sched.c), pure sweep helpers (sweep.c) — all without an event loop, unit
 * tested in tests/unit/test_gc_sched.c — and the loop-side driver (run.c,
 * handlers.c, main.c). Times named *_mono are CLOCK_MONOTONIC ns, *_wall are
 * ns since the epoch. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "berth/common.h"
#include "berth/error.h"
#include "berth/mp.h"

#define GC_NS_PER_MS 1000000ull
#define GC_NS_PER_S 1000000000ull

/* ---- config.c ------------------------------------------------------------ */

/** The plugin's config section (plugins/gc/config.default.json, docs/gc.md). */
typedef struct {
    /** Fraction of wall time gc may hold the metadata write lock, 0 (no
     * budget) or (0, 0.5]. Scheduled collections are spaced so that
     * average lock time / interval stays under it. */
    double pause_threshold;
    /** Deletions after which a collection is scheduled; 0 = any deletion. */
    uint32_t deletion_threshold;
    /** Mutations (any change, deletions included) after which a collection is
     * scheduled; 0 = never because of mutations. */
    uint32_t mutation_threshold;
    /** Delay between a trigger (deletion, threshold, sync) and the run. */
    uint64_t schedule_delay_ns;
    /** Delay after start before the first collection (which also finishes a
     * sweep interrupted by a crash). */
    uint64_t startup_delay_ns;
    /** Extra age a file must have beyond the last completed mark's start
     * before it is treated as an orphan. */
    uint64_t orphan_grace_ns;
    /** Scan backends for orphans (files with no metadata record). */
    bool orphan_scan;
    /** Backend deletions in flight at once. */
    uint32_t max_concurrent_deletes;
    /** Deadline for meta.gc_collect and each backend call. */
    uint64_t call_timeout_ns;
} gc_config_t;

/** Fills the defaults (the values in config.default.json). */
void gc_config_defaults(gc_config_t *cfg);
/** Parses the section (a map; nil/absent keys keep defaults). An unknown key,
 * a wrong type or an out-of-range value fails with invalid_argument naming
 * the key. */
int gc_config_parse(const msgpack_object *section, gc_config_t *cfg, berth_error_t **err);
/** Parses a Go-style duration: "0", "250ms", "1m30s", "1.5s", "10us", "2h".
 * Units ns, us (µs), ms, s, m, h; no sign. */
int gc_parse_duration(const char *s, size_t len, uint64_t *ns, berth_error_t **err);

/* ---- sched.c: when to collect (like containerd's gc scheduler) ------------ */

typedef enum {
    GC_EV_DELETION, /* something was deleted: a collection may free bytes */
    GC_EV_MUTATION, /* any other change (counts toward mutation_threshold) */
} gc_ev_kind_t;

typedef struct {
    gc_config_t cfg;
    uint64_t next_mono; /* when the timer should fire; 0 = nothing scheduled */
    bool running;
    bool collected_once;   /* a collection succeeded since start */
    bool triggered;        /* explicit request (gc.sync/--sync): budget ignored */
    bool retry;            /* last collection failed: run again at retry_mono */
    uint64_t startup_mono; /* the first collection waits until then */
    uint64_t retry_mono;
    uint64_t trigger_delay_ns; /* smallest delay asked by pending requests */
    uint32_t deletions, mutations;
    /* counters and flags of the running collection, restored if it fails */
    uint32_t run_deletions, run_mutations;
    bool run_triggered;
    int64_t run_start_wall; /* start of the running collection */
    int64_t covered_wall;   /* events before this were covered by a successful mark */
    uint64_t last_end_mono;
    double avg_pause_ns;  /* moving average of the metadata lock time */
    uint64_t interval_ns; /* min spacing of budgeted runs (from pause_threshold) */
    uint32_t failures;    /* consecutive failed collections */
    uint64_t expire_mono; /* a lease or gc.expire label expires then; 0 = none */
    uint64_t collections; /* successful collections since start */
} gc_sched_t;

/** Starts the policy at `now_mono`: the first collection is due after
 * startup_delay. */
void gc_sched_init(gc_sched_t *s, const gc_config_t *cfg, uint64_t now_mono);
/** Counts an event that happened at `ts_wall`; events before the start of the
 * last successful collection are ignored (that mark saw them). May move
 * next_mono earlier. Returns true if next_mono changed. */
bool gc_sched_event(gc_sched_t *s, gc_ev_kind_t kind, int64_t ts_wall, uint64_t now_mono);
/** An explicit request: run after `delay_ns` (gc.run uses 0, gc.sync uses
 * schedule_delay), ignoring the pause budget. If a collection is running, the
 * request is kept for the one after it. Returns true if next_mono changed. */
bool gc_sched_request(gc_sched_t *s, uint64_t delay_ns, uint64_t now_mono);
/** Tells the policy that something expires at `at_wall` (a lease, an image's
 * gc.expire label): a collection is scheduled then (0 clears). */
bool gc_sched_expiry(gc_sched_t *s, int64_t at_wall, int64_t now_wall, uint64_t now_mono);
/** The timer fired: returns true if a collection should start now, false if
 * there is nothing to do (next_mono is then recomputed or 0). */
bool gc_sched_due(gc_sched_t *s, uint64_t now_mono);
/** A collection starts (counters move to the run). */
void gc_sched_begin(gc_sched_t *s, int64_t now_wall, uint64_t now_mono);
/** The collection ended. pause_ns: how long it held the metadata write lock
 * (the budget's measure). On failure the counters are restored and a retry
 * is scheduled with backoff (1 s doubling to 60 s). */
void gc_sched_end(gc_sched_t *s, bool ok, uint64_t pause_ns, uint64_t now_mono);
/** Whether changes since the last collection make one due (for status). */
bool gc_sched_dirty(const gc_sched_t *s);

/* ---- sweep.c: pure helpers of a collection -------------------------------- */

/** A growable array of owned strings. */
typedef struct {
    char **v;
    size_t n, cap;
} gc_strv_t;

int gc_strv_push(gc_strv_t *sv, const char *s, size_t len);
void gc_strv_free(gc_strv_t *sv);
/** Sorts and removes duplicates (then gc_strv_has works). */
void gc_strv_sort_unique(gc_strv_t *sv);
/** Binary search in a sorted vector. */
bool gc_strv_has(const gc_strv_t *sv, const char *s);
/** Appends every str of a msgpack array (non-str elements are an error). */
int gc_strv_from_array(gc_strv_t *sv, const msgpack_object *arr, const char *what,
                       berth_error_t **err);
void gc_pack_strv(msgpack_packer *pk, char *const *v, size_t n);

/** A blob reported by content.list_blobs. */
typedef struct {
    const char *digest; /* borrowed */
    size_t digest_len;
    uint64_t size;
    int64_t mtime_wall;
} gc_blob_t;

/** Orphan candidates among the blobs on disk: files last changed before
 * `cutoff_wall` (the last completed mark's start minus the grace) that are
 * not already being deleted (`exclude`, sorted). Appended to *out. */
int gc_orphan_blobs(const gc_blob_t *blobs, size_t n, int64_t cutoff_wall, const gc_strv_t *exclude,
                    gc_strv_t *out, berth_error_t **err);
/** Parses a content.list_blobs result {blobs: [{digest, size, mtime}]} into
 * borrowed entries (caller frees *out). */
int gc_parse_blobs(const msgpack_object *result, gc_blob_t **out, size_t *n, berth_error_t **err);

/** Statistics of one collection (gc.run, gc.status, /gc/run). */
typedef struct {
    uint64_t content_deleted;
    uint64_t snapshots_deleted;
    uint64_t orphans_deleted; /* included in the two counts above */
    uint64_t bytes_freed;
    uint64_t failed;  /* backend deletions that failed (retried later) */
    uint64_t pending; /* tombstones left for the next run */
    uint64_t duration_ns;
    uint64_t mark_ns;   /* metadata's mark and sweep */
    uint64_t lock_ns;   /* metadata write lock hold time */
    int64_t started_at; /* wall ns */
    int64_t finished_at;
} gc_stats_t;

/** Packs the stats as a map (error: NULL or the failure message). */
void gc_pack_stats(msgpack_packer *pk, const gc_stats_t *st, const char *error);

/** Splits n items into chunks of at most `chunk`: number of chunks. */
static inline size_t gc_chunks(size_t n, size_t chunk)
{
    return (n + chunk - 1) / chunk;
}

/* ---- loop side: run.c, handlers.c, main.c ---------------------------------- */
/* Everything below runs on the plugin's loop thread only. */

#include "berth/plugin.h"

typedef struct gc_run_s gc_run_t;

/** A client waiting for a collection (gc.run, gc.sync). */
typedef struct gc_waiter_s {
    struct gc_waiter_s *next;
    struct gc_waiter_s **list; /* the list it is on, for unlinking */
    berth_req_t *req;
    struct gc_s *g;
    unsigned failed_runs; /* gc.sync retries failed runs a few times */
    bool sync;
} gc_waiter_t;

typedef struct gc_s {
    berth_plugin_t *p;
    gc_config_t cfg;
    gc_sched_t sched;
    uv_timer_t timer;     /* the scheduler's next collection */
    uv_timer_t sub_timer; /* re-subscribing to events */
    bool timers_init;
    bool stopping;
    berth_call_t *sub;    /* events.subscribe, while active */
    gc_waiter_t *pending; /* want a collection that starts after now */
    gc_waiter_t *current; /* attached to the running collection */
    gc_run_t *run;        /* the running collection or NULL */
    /* last collection */
    bool have_last;
    gc_stats_t last;
    char *last_error; /* NULL when the last collection succeeded */
    uint64_t runs, runs_failed;
    int64_t next_expire_wall; /* earliest known lease/gc.expire expiry, 0 none */
    bool warned_no_orphans;   /* meta.gc_orphans missing: logged once */
} gc_t;

/** Starts a collection now (the scheduler said so). */
void gc_run_start(gc_t *g);
/** (Re)arms the scheduler timer from g->sched.next_mono. */
void gc_arm(gc_t *g);
/** Called by run.c when a collection ends: stats, events, waiters, schedule. */
void gc_run_finished(gc_t *g, const gc_stats_t *st, bool ok, const char *error);
/** Subscribes to the deletion/mutation events (re-subscribes on loss). */
void gc_subscribe(gc_t *g);

/* handlers.c */
void gc_handle_run(berth_req_t *r, const msgpack_object *params);
void gc_handle_sync(berth_req_t *r, const msgpack_object *params);
void gc_handle_status(berth_req_t *r, const msgpack_object *params);
/** Answers the waiters of a finished collection. */
void gc_waiters_finish(gc_t *g, const gc_stats_t *st, bool ok, const char *error);
/** Fails every waiter (shutdown). */
void gc_waiters_abort(gc_t *g, const char *why);
