/* SPDX-License-Identifier: Apache-2.0 */
/* When berth-gc collects: the scheduling policy, modelled on containerd's gc
 * scheduler (deletion threshold, mutation threshold, schedule delay, pause
 * threshold, startup delay) but as a pure state machine driven by the caller
 * with explicit times, so that it unit-tests without a loop or a clock.
 *
 * Differences from containerd, on purpose:
 *  - an idle daemon does not wake up periodically: only a change, an expiry or
 *    a request schedules a collection;
 *  - the pause budget uses a moving average of the metadata lock time, so it
 *    adapts when the store shrinks or grows;
 *  - events that happened before the start of the last successful collection
 *    are ignored (containerd compares with the end of the collection and can
 *    miss events delivered during it);
 *  - a failed collection is retried with backoff and keeps its counters. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define RETRY_MIN_NS (1 * GC_NS_PER_S)
#define RETRY_MAX_NS (60 * GC_NS_PER_S)
/* Expiry times come from the metadata plugin's clock: run a little after, so
 * the lease is expired when the mark looks at it. */
#define EXPIRY_SLACK_NS (100 * GC_NS_PER_MS)
/* Weight of the newest pause in the moving average. */
#define PAUSE_EWMA_ALPHA 0.3

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static void inc(uint32_t *v)
{
    if (*v < UINT32_MAX)
        (*v)++;
}

static uint32_t add_sat(uint32_t a, uint32_t b)
{
    return a > UINT32_MAX - b ? UINT32_MAX : a + b;
}

bool gc_sched_dirty(const gc_sched_t *s)
{
    if (s->triggered || s->retry)
        return true;
    if (s->cfg.deletion_threshold == 0 ? s->deletions > 0
                                       : s->deletions >= s->cfg.deletion_threshold)
        return true;
    return s->cfg.mutation_threshold > 0 && s->mutations >= s->cfg.mutation_threshold;
}

/* The time before which the startup delay, the retry backoff or the pause
 * budget forbid a collection; an explicit request ignores all three (0). */
static uint64_t floor_of(const gc_sched_t *s)
{
    if (s->triggered)
        return 0;
    uint64_t t = 0;
    if (!s->collected_once)
        t = s->startup_mono;
    if (s->retry)
        return max_u64(t, s->retry_mono);
    if (s->collected_once && s->interval_ns)
        t = max_u64(t, s->last_end_mono + s->interval_ns);
    return t;
}

/* When a collection wanted now should start. */
static uint64_t earliest(const gc_sched_t *s, uint64_t now)
{
    if (s->triggered)
        return now + s->trigger_delay_ns;
    /* The startup collection waits for startup_delay only; a change waits
     * for schedule_delay too. */
    uint64_t base = gc_sched_dirty(s) ? now + s->cfg.schedule_delay_ns : now;
    return max_u64(base, floor_of(s));
}

/* Moves next_mono earlier when something wants a collection sooner (it never
 * moves it later: gc_sched_due() re-checks when the timer fires). */
static bool schedule(gc_sched_t *s, uint64_t now)
{
    if (s->running)
        return false; /* gc_sched_end() schedules */
    uint64_t want = 0;
    bool have = false;
    if (!s->collected_once || gc_sched_dirty(s)) {
        want = earliest(s, now);
        have = true;
    }
    if (s->expire_mono) {
        uint64_t e = s->expire_mono;
        if (s->collected_once && s->interval_ns)
            e = max_u64(e, s->last_end_mono + s->interval_ns);
        if (!have || e < want)
            want = e;
        have = true;
    }
    if (!have)
        return false;
    if (want == 0)
        want = 1; /* 0 means "nothing scheduled" */
    if (s->next_mono == 0 || want < s->next_mono) {
        s->next_mono = want;
        return true;
    }
    return false;
}

void gc_sched_init(gc_sched_t *s, const gc_config_t *cfg, uint64_t now_mono)
{
    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    s->startup_mono = now_mono + cfg->startup_delay_ns;
    schedule(s, now_mono); /* the startup collection */
}

bool gc_sched_event(gc_sched_t *s, gc_ev_kind_t kind, int64_t ts_wall, uint64_t now_mono)
{
    if (ts_wall < s->covered_wall)
        return false; /* the last successful mark already saw it */
    if (s->running && ts_wall < s->run_start_wall) {
        /* The running mark sees it; count it with the run so that a failed
         * run gives it back. */
        if (kind == GC_EV_DELETION)
            inc(&s->run_deletions);
        inc(&s->run_mutations);
        return false;
    }
    if (kind == GC_EV_DELETION)
        inc(&s->deletions);
    inc(&s->mutations); /* a deletion is a mutation too */
    return schedule(s, now_mono);
}

bool gc_sched_request(gc_sched_t *s, uint64_t delay_ns, uint64_t now_mono)
{
    if (!s->triggered || delay_ns < s->trigger_delay_ns)
        s->trigger_delay_ns = delay_ns;
    s->triggered = true;
    return schedule(s, now_mono);
}

bool gc_sched_expiry(gc_sched_t *s, int64_t at_wall, int64_t now_wall, uint64_t now_mono)
{
    if (at_wall <= 0) {
        s->expire_mono = 0;
        return false;
    }
    uint64_t d = at_wall > now_wall ? (uint64_t)(at_wall - now_wall) : 0;
    s->expire_mono = now_mono + d + EXPIRY_SLACK_NS;
    return schedule(s, now_mono);
}

bool gc_sched_due(gc_sched_t *s, uint64_t now_mono)
{
    if (s->running || s->next_mono == 0 || now_mono < s->next_mono)
        return false;
    s->next_mono = 0;
    bool expired = false;
    if (s->expire_mono && now_mono >= s->expire_mono) {
        s->expire_mono = 0;
        expired = true;
    }
    if (!s->collected_once || gc_sched_dirty(s) || expired) {
        /* Something wants a run, but it may not be allowed yet (an event
         * moved the timer earlier than the budget allows for another one). */
        uint64_t t = floor_of(s);
        if (!expired && t > now_mono) {
            s->next_mono = t;
            return false;
        }
        return true;
    }
    schedule(s, now_mono); /* e.g. a later expiry */
    return false;
}

void gc_sched_begin(gc_sched_t *s, int64_t now_wall, uint64_t now_mono)
{
    (void)now_mono;
    s->running = true;
    s->next_mono = 0;
    s->run_deletions = s->deletions;
    s->run_mutations = s->mutations;
    s->run_triggered = s->triggered;
    s->deletions = s->mutations = 0;
    s->triggered = false;
    s->trigger_delay_ns = 0;
    s->retry = false;
    s->run_start_wall = now_wall;
}

void gc_sched_end(gc_sched_t *s, bool ok, uint64_t pause_ns, uint64_t now_mono)
{
    s->running = false;
    if (!ok) {
        s->failures = s->failures < 63 ? s->failures + 1 : 63;
        s->deletions = add_sat(s->deletions, s->run_deletions);
        s->mutations = add_sat(s->mutations, s->run_mutations);
        s->run_deletions = s->run_mutations = 0;
        s->retry = true;
        uint64_t backoff = RETRY_MIN_NS;
        for (uint32_t i = 1; i < s->failures && backoff < RETRY_MAX_NS; i++)
            backoff *= 2;
        if (backoff > RETRY_MAX_NS)
            backoff = RETRY_MAX_NS;
        s->retry_mono = now_mono + backoff;
        schedule(s, now_mono);
        return;
    }
    s->failures = 0;
    s->collections++;
    s->collected_once = true;
    s->covered_wall = s->run_start_wall;
    s->run_deletions = s->run_mutations = 0;
    if (s->collections == 1)
        s->avg_pause_ns = (double)pause_ns;
    else
        s->avg_pause_ns =
            s->avg_pause_ns * (1 - PAUSE_EWMA_ALPHA) + (double)pause_ns * PAUSE_EWMA_ALPHA;
    /* Spacing so that pause / (pause + interval) stays under the threshold:
     * interval = avg / threshold - avg (containerd's formula). */
    if (s->cfg.pause_threshold > 0)
        s->interval_ns =
            (uint64_t)llround(s->avg_pause_ns / s->cfg.pause_threshold - s->avg_pause_ns);
    else
        s->interval_ns = 0;
    s->last_end_mono = now_mono;
    schedule(s, now_mono); /* changes that arrived during the run */
}
