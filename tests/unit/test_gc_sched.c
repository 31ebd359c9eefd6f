/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of berth-gc's domain code: the scheduling policy (sched.c), the
 * configuration (config.c) and the sweep helpers (sweep.c). Times are fed
 * explicitly, so every case is exact and instant. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

#define MS (GC_NS_PER_MS)
#define S (GC_NS_PER_S)
/* Wall clock and monotonic clock offsets used by the tests. */
#define WALL0 ((int64_t)1700000000 * (int64_t)S)

static gc_config_t cfg_plain(void)
{
    gc_config_t c;
    gc_config_defaults(&c);
    c.pause_threshold = 0;
    c.deletion_threshold = 0;
    c.mutation_threshold = 0;
    c.schedule_delay_ns = 0;
    c.startup_delay_ns = 100 * MS;
    return c;
}

/* Runs one successful collection at `now` that held the lock `pause` ns. */
static void collect(gc_sched_t *s, uint64_t now, uint64_t pause)
{
    gc_sched_begin(s, WALL0 + (int64_t)now, now);
    gc_sched_end(s, true, pause, now + pause);
}

/* ---- scheduler ------------------------------------------------------------ */

static void test_startup_delay(void **state)
{
    gc_config_t c = cfg_plain();
    gc_sched_t s;
    gc_sched_init(&s, &c, 1000 * MS);
    assert_int_equal(s.next_mono, 1100 * MS);
    assert_false(gc_sched_due(&s, 1050 * MS)); /* early timer: nothing */
    assert_int_equal(s.next_mono, 1100 * MS);
    /* The first collection always runs, even with nothing dirty: it finishes
     * what a crashed predecessor left. */
    assert_true(gc_sched_due(&s, 1100 * MS));
    collect(&s, 1100 * MS, 1 * MS);
    assert_int_equal(s.collections, 1);
    /* Idle afterwards: no periodic wake-ups. */
    assert_int_equal(s.next_mono, 0);
    assert_false(gc_sched_due(&s, 5000 * MS));
}

static void test_startup_zero_delay(void **state)
{
    gc_config_t c = cfg_plain();
    c.startup_delay_ns = 0;
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_int_not_equal(s.next_mono, 0); /* 0 would mean "nothing scheduled" */
    assert_true(gc_sched_due(&s, 1));
}

static void test_deletions_before_startup_wait(void **state)
{
    gc_config_t c = cfg_plain();
    c.startup_delay_ns = 10 * S;
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    gc_sched_event(&s, GC_EV_DELETION, WALL0 + 1, 1 * S);
    assert_int_equal(s.next_mono, 10 * S); /* not earlier than the startup delay */
    /* An explicit request (gc.run) does not wait for it. */
    assert_true(gc_sched_request(&s, 0, 2 * S));
    assert_int_equal(s.next_mono, 2 * S);
    assert_true(gc_sched_due(&s, 2 * S));
}

static void test_any_deletion_schedules(void **state)
{
    gc_config_t c = cfg_plain();
    c.schedule_delay_ns = 50 * MS;
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    collect(&s, 100 * MS, 1 * MS);
    /* A mutation alone (threshold 0 = off) schedules nothing. */
    assert_false(gc_sched_event(&s, GC_EV_MUTATION, WALL0 + (int64_t)(200 * MS), 200 * MS));
    assert_int_equal(s.next_mono, 0);
    /* deletion_threshold 0: one deletion is enough, after schedule_delay. */
    assert_true(gc_sched_event(&s, GC_EV_DELETION, WALL0 + (int64_t)(300 * MS), 300 * MS));
    assert_int_equal(s.next_mono, 350 * MS);
    /* More deletions do not push it later. */
    assert_false(gc_sched_event(&s, GC_EV_DELETION, WALL0 + (int64_t)(320 * MS), 320 * MS));
    assert_int_equal(s.next_mono, 350 * MS);
    assert_false(gc_sched_due(&s, 349 * MS));
    assert_true(gc_sched_due(&s, 350 * MS));
    gc_sched_begin(&s, WALL0 + (int64_t)(350 * MS), 350 * MS);
    assert_int_equal(s.deletions, 0);
    assert_int_equal(s.run_deletions, 2);
    assert_int_equal(s.mutations, 0);
    assert_int_equal(s.run_mutations, 3);
}

static void test_deletion_threshold(void **state)
{
    gc_config_t c = cfg_plain();
    c.deletion_threshold = 3;
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    collect(&s, 100 * MS, 1 * MS);
    uint64_t t = 1 * S;
    assert_false(gc_sched_event(&s, GC_EV_DELETION, WALL0 + (int64_t)t, t));
    assert_false(gc_sched_event(&s, GC_EV_DELETION, WALL0 + (int64_t)t + 1, t + 1));
    assert_int_equal(s.next_mono, 0);
    assert_false(gc_sched_dirty(&s));
    assert_true(gc_sched_event(&s, GC_EV_DELETION, WALL0 + (int64_t)t + 2, t + 2));
    assert_int_equal(s.next_mono, t + 2);
    assert_true(gc_sched_dirty(&s));
}

static void test_mutation_threshold(void **state)
{
    gc_config_t c = cfg_plain();
    c.mutation_threshold = 100;
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    collect(&s, 100 * MS, 1 * MS);
    uint64_t t = 1 * S;
    for (int i = 0; i < 99; i++)
        assert_false(gc_sched_event(&s, GC_EV_MUTATION, WALL0 + (int64_t)t + i, t + i));
    assert_int_equal(s.next_mono, 0);
    assert_true(gc_sched_event(&s, GC_EV_MUTATION, WALL0 + (int64_t)t + 99, t + 99));
    assert_int_equal(s.next_mono, t + 99);
}

static void test_pause_threshold_budget(void **state)
{
    gc_config_t c = cfg_plain();
    c.pause_threshold = 0.02;
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    /* 10 ms of lock time at 2 %: the next budgeted run waits
     * 10 / 0.02 - 10 = 490 ms after the end of this one. */
    collect(&s, 100 * MS, 10 * MS);
    assert_int_equal(s.interval_ns, 490 * MS);
    uint64_t end = 110 * MS;
    assert_true(gc_sched_event(&s, GC_EV_DELETION, WALL0 + (int64_t)(120 * MS), 120 * MS));
    assert_int_equal(s.next_mono, end + 490 * MS);
    /* A timer that fires before the budget allows does not run. */
    assert_false(gc_sched_due(&s, 300 * MS));
    /* An explicit request (gc.sync / --sync) ignores the budget. */
    assert_true(gc_sched_request(&s, 0, 300 * MS));
    assert_int_equal(s.next_mono, 300 * MS);
    assert_true(gc_sched_due(&s, 300 * MS));
}

static void test_budget_blocks_early_timer(void **state)
{
    gc_config_t c = cfg_plain();
    c.pause_threshold = 0.5; /* interval = pause */
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    collect(&s, 100 * MS, 100 * MS); /* ends at 200 ms; interval 100 ms */
    assert_int_equal(s.interval_ns, 100 * MS);
    /* A stale earlier timer (e.g. from an expiry) must not bypass the
     * budget for a deletion-triggered run. */
    s.next_mono = 210 * MS;
    gc_sched_event(&s, GC_EV_DELETION, WALL0 + (int64_t)(205 * MS), 205 * MS);
    assert_false(gc_sched_due(&s, 210 * MS));
    assert_int_equal(s.next_mono, 300 * MS);
    assert_true(gc_sched_due(&s, 300 * MS));
}

static void test_pause_average_adapts(void **state)
{
    gc_config_t c = cfg_plain();
    c.pause_threshold = 0.1;
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    collect(&s, 100 * MS, 100 * MS);
    assert_int_equal(s.interval_ns, 900 * MS);
    /* Small collections afterwards shrink the interval (moving average). */
    uint64_t t = 2 * S;
    for (int i = 0; i < 20; i++, t += 2 * S)
        collect(&s, t, 1 * MS);
    assert_true(s.interval_ns < 20 * MS);
    assert_true(s.interval_ns >= 9 * MS);
}

static void test_schedule_delay_coalesces(void **state)
{
    gc_config_t c = cfg_plain();
    c.schedule_delay_ns = 1 * S;
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    collect(&s, 100 * MS, 1 * MS);
    gc_sched_event(&s, GC_EV_DELETION, WALL0 + (int64_t)(2 * S), 2 * S);
    assert_int_equal(s.next_mono, 3 * S);
    /* gc.sync honours the delay (its caller passes schedule_delay) but does
     * not move an earlier timer later. */
    assert_false(gc_sched_request(&s, 1 * S, 2500 * MS));
    assert_int_equal(s.next_mono, 3 * S);
    /* gc.run asks for now. */
    assert_true(gc_sched_request(&s, 0, 2600 * MS));
    assert_int_equal(s.next_mono, 2600 * MS);
}

static void test_events_covered_by_mark_are_ignored(void **state)
{
    gc_config_t c = cfg_plain();
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    int64_t start_wall = WALL0 + (int64_t)(100 * MS);
    gc_sched_begin(&s, start_wall, 100 * MS);
    /* Delivered during the run but happened before its mark: the run sees
     * it; nothing new is scheduled. */
    assert_false(gc_sched_event(&s, GC_EV_DELETION, start_wall - 5, 101 * MS));
    assert_int_equal(s.deletions, 0);
    assert_int_equal(s.run_deletions, 1);
    /* Happened after the mark started: the next run must look. */
    assert_false(gc_sched_event(&s, GC_EV_DELETION, start_wall + 5, 102 * MS));
    assert_int_equal(s.deletions, 1);
    assert_int_equal(s.next_mono, 0); /* not while running */
    gc_sched_end(&s, true, 1 * MS, 110 * MS);
    assert_int_equal(s.next_mono, 110 * MS); /* scheduled at the end */
    /* A late delivery of something older than the last mark: ignored. */
    collect(&s, 110 * MS, 1 * MS);
    assert_false(gc_sched_event(&s, GC_EV_DELETION, start_wall + 6, 200 * MS));
    assert_int_equal(s.deletions, 0);
}

static void test_request_during_run_waits_for_next(void **state)
{
    gc_config_t c = cfg_plain();
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    gc_sched_begin(&s, WALL0, 100 * MS);
    assert_false(gc_sched_request(&s, 0, 120 * MS));
    assert_false(gc_sched_due(&s, 130 * MS)); /* running */
    gc_sched_end(&s, true, 1 * MS, 150 * MS);
    assert_int_equal(s.next_mono, 150 * MS);
    assert_true(gc_sched_due(&s, 150 * MS));
}

static void test_failure_retries_with_backoff(void **state)
{
    gc_config_t c = cfg_plain();
    c.pause_threshold = 0.02;
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    gc_sched_event(&s, GC_EV_DELETION, WALL0 - 1, 50 * MS);
    gc_sched_begin(&s, WALL0, 100 * MS);
    gc_sched_end(&s, false, 0, 200 * MS);
    assert_int_equal(s.failures, 1);
    assert_false(s.collected_once);
    assert_int_equal(s.deletions, 1); /* given back */
    assert_int_equal(s.next_mono, 200 * MS + 1 * S);
    assert_false(gc_sched_due(&s, 700 * MS));
    assert_true(gc_sched_due(&s, 1200 * MS));
    gc_sched_begin(&s, WALL0 + 1, 1200 * MS);
    gc_sched_end(&s, false, 0, 1300 * MS);
    assert_int_equal(s.next_mono, 1300 * MS + 2 * S);
    /* A deletion during the backoff does not shorten it... */
    gc_sched_event(&s, GC_EV_DELETION, WALL0 + 2, 1400 * MS);
    assert_int_equal(s.next_mono, 1300 * MS + 2 * S);
    /* ...an explicit request does. */
    gc_sched_request(&s, 0, 1500 * MS);
    assert_int_equal(s.next_mono, 1500 * MS);
    assert_true(gc_sched_due(&s, 1500 * MS));
    gc_sched_begin(&s, WALL0 + 3, 1500 * MS);
    gc_sched_end(&s, true, 1 * MS, 1600 * MS);
    assert_int_equal(s.failures, 0);
    assert_true(s.collected_once);
    assert_false(s.retry);
    assert_int_equal(s.next_mono, 0);
}

static void test_backoff_caps(void **state)
{
    gc_config_t c = cfg_plain();
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    uint64_t t = 100 * MS;
    for (int i = 0; i < 20; i++) {
        assert_true(gc_sched_due(&s, s.next_mono));
        t = s.next_mono;
        gc_sched_begin(&s, WALL0 + i, t);
        gc_sched_end(&s, false, 0, t);
    }
    assert_int_equal(s.next_mono - t, 60 * S);
}

static void test_expiry(void **state)
{
    gc_config_t c = cfg_plain();
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    assert_true(gc_sched_due(&s, 100 * MS));
    collect(&s, 100 * MS, 1 * MS);
    assert_int_equal(s.next_mono, 0);
    /* A lease expires in 5 s (wall): collect then, nothing else dirty. */
    int64_t now_wall = WALL0 + 2 * (int64_t)S;
    assert_true(gc_sched_expiry(&s, now_wall + 5 * (int64_t)S, now_wall, 1 * S));
    assert_int_equal(s.next_mono, 6 * S + 100 * MS);
    assert_false(gc_sched_due(&s, 6 * S));
    assert_true(gc_sched_due(&s, 6 * S + 100 * MS));
    assert_int_equal(s.expire_mono, 0);
    /* Clearing works. */
    gc_sched_expiry(&s, now_wall + 50 * (int64_t)S, now_wall, 1 * S);
    gc_sched_expiry(&s, 0, 0, 0);
    assert_int_equal(s.expire_mono, 0);
}

static void test_saturating_counters(void **state)
{
    gc_config_t c = cfg_plain();
    gc_sched_t s;
    gc_sched_init(&s, &c, 0);
    s.deletions = UINT32_MAX;
    s.mutations = UINT32_MAX;
    gc_sched_event(&s, GC_EV_DELETION, WALL0, 1);
    assert_int_equal(s.deletions, UINT32_MAX);
    assert_int_equal(s.mutations, UINT32_MAX);
}

/* ---- config ---------------------------------------------------------------- */

static msgpack_zone *g_zone;

static const msgpack_object *unpack(berth_mpbuf_t *b)
{
    static msgpack_object o;
    berth_error_t *err = NULL;
    if (g_zone)
        msgpack_zone_free(g_zone);
    g_zone = NULL;
    if (berth_mp_unpack(b->buf.data, b->buf.size, NULL, &g_zone, &o, &err) < 0)
        fail_msg("unpack: %s", err->message);
    return &o;
}

static void test_config_defaults_and_overrides(void **state)
{
    gc_config_t cfg;
    berth_error_t *err = NULL;
    assert_int_equal(gc_config_parse(NULL, &cfg, &err), 0);
    assert_true(cfg.pause_threshold > 0.019 && cfg.pause_threshold < 0.021);
    assert_int_equal(cfg.mutation_threshold, 100);
    assert_int_equal(cfg.startup_delay_ns, 100 * MS);
    assert_int_equal(cfg.max_concurrent_deletes, 4);
    assert_true(cfg.orphan_scan);

    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 6);
    berth_mp_pack_str(&b.pk, "pause_threshold");
    msgpack_pack_double(&b.pk, 0.1);
    berth_mp_kv_u64(&b.pk, "deletion_threshold", 7);
    berth_mp_kv_str(&b.pk, "schedule_delay", "1m30s");
    berth_mp_kv_str(&b.pk, "startup_delay", "0");
    berth_mp_kv_bool(&b.pk, "orphan_scan", false);
    berth_mp_kv_str(&b.pk, "orphan_grace", "1.5s");
    assert_int_equal(gc_config_parse(unpack(&b), &cfg, &err), 0);
    berth_mpbuf_destroy(&b);
    assert_true(cfg.pause_threshold > 0.099 && cfg.pause_threshold < 0.101);
    assert_int_equal(cfg.deletion_threshold, 7);
    assert_int_equal(cfg.schedule_delay_ns, 90 * S);
    assert_int_equal(cfg.startup_delay_ns, 0);
    assert_false(cfg.orphan_scan);
    assert_int_equal(cfg.orphan_grace_ns, 1500 * MS);
}

static void expect_config_error(void (*pack)(msgpack_packer *pk), const char *needle)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    pack(&b.pk);
    gc_config_t cfg;
    berth_error_t *err = NULL;
    assert_int_equal(gc_config_parse(unpack(&b), &cfg, &err), -1);
    berth_mpbuf_destroy(&b);
    assert_non_null(err);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    if (!strstr(err->message, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err->message, needle);
    berth_error_free(&err);
}

static void pk_unknown(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    berth_mp_kv_u64(pk, "pause_treshold", 1);
}
static void pk_pause_range(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    berth_mp_pack_str(pk, "pause_threshold");
    msgpack_pack_double(pk, 0.9);
}
static void pk_duration_type(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    berth_mp_kv_u64(pk, "schedule_delay", 100);
}
static void pk_duration_unit(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    berth_mp_kv_str(pk, "startup_delay", "10 parsecs");
}
static void pk_neg_threshold(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    berth_mp_kv_i64(pk, "mutation_threshold", -1);
}
static void pk_zero_concurrency(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    berth_mp_kv_u64(pk, "max_concurrent_deletes", 0);
}
static void pk_bool_type(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    berth_mp_kv_str(pk, "orphan_scan", "yes");
}

static void test_config_errors(void **state)
{
    expect_config_error(pk_unknown, "pause_treshold");
    expect_config_error(pk_pause_range, "pause_threshold");
    expect_config_error(pk_duration_type, "schedule_delay");
    expect_config_error(pk_duration_unit, "startup_delay");
    expect_config_error(pk_neg_threshold, "mutation_threshold");
    expect_config_error(pk_zero_concurrency, "max_concurrent_deletes");
    expect_config_error(pk_bool_type, "orphan_scan");
}

/* The shipped config.default.json must hold every key with the built-in
 * default, so `berthd config default` tells the truth. */
static void test_config_default_json_matches(void **state)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/plugins/gc/config.default.json", BERTH_SRC);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    char text[4096];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = 0;
    /* Tiny flat-object JSON reader (strings, numbers, booleans): enough for
     * this file and no extra dependency. */
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    const char *keys[32], *vals[32];
    size_t klen[32], vlen[32], nk = 0;
    const char *p = strchr(text, '{');
    assert_non_null(p);
    p++;
    while (nk < 32) {
        while (*p && *p != '"' && *p != '}')
            p++;
        if (*p != '"')
            break;
        keys[nk] = ++p;
        while (*p && *p != '"')
            p++;
        klen[nk] = (size_t)(p - keys[nk]);
        p = strchr(p, ':');
        assert_non_null(p);
        p++;
        while (*p == ' ')
            p++;
        vals[nk] = p;
        if (*p == '"') {
            p++;
            while (*p && *p != '"')
                p++;
            p++;
        } else {
            while (*p && *p != ',' && *p != '\n' && *p != '}')
                p++;
        }
        vlen[nk] = (size_t)(p - vals[nk]);
        nk++;
    }
    assert_true(nk >= 9);
    msgpack_pack_map(&b.pk, nk);
    for (size_t i = 0; i < nk; i++) {
        berth_mp_pack_strn(&b.pk, keys[i], klen[i]);
        char v[64];
        snprintf(v, sizeof(v), "%.*s", (int)vlen[i], vals[i]);
        if (v[0] == '"')
            berth_mp_pack_strn(&b.pk, v + 1, strlen(v) - 2);
        else if (strcmp(v, "true") == 0)
            msgpack_pack_true(&b.pk);
        else if (strcmp(v, "false") == 0)
            msgpack_pack_false(&b.pk);
        else if (strchr(v, '.'))
            msgpack_pack_double(&b.pk, strtod(v, NULL));
        else
            msgpack_pack_uint64(&b.pk, strtoull(v, NULL, 10));
    }
    gc_config_t from_file, builtin;
    berth_error_t *err = NULL;
    if (gc_config_parse(unpack(&b), &from_file, &err) < 0)
        fail_msg("config.default.json: %s", err->message);
    berth_mpbuf_destroy(&b);
    gc_config_defaults(&builtin);
    assert_true(from_file.pause_threshold == builtin.pause_threshold);
    assert_int_equal(from_file.deletion_threshold, builtin.deletion_threshold);
    assert_int_equal(from_file.mutation_threshold, builtin.mutation_threshold);
    assert_int_equal(from_file.schedule_delay_ns, builtin.schedule_delay_ns);
    assert_int_equal(from_file.startup_delay_ns, builtin.startup_delay_ns);
    assert_int_equal(from_file.orphan_grace_ns, builtin.orphan_grace_ns);
    assert_int_equal(from_file.orphan_scan, builtin.orphan_scan);
    assert_int_equal(from_file.max_concurrent_deletes, builtin.max_concurrent_deletes);
    assert_int_equal(from_file.call_timeout_ns, builtin.call_timeout_ns);
}

static void test_durations(void **state)
{
    static const struct {
        const char *s;
        uint64_t ns;
    } ok[] = {
        {"0", 0},
        {"0s", 0},
        {"100ms", 100 * MS},
        {"1m30s", 90 * S},
        {"1.5s", 1500 * MS},
        {"2h", 7200 * S},
        {"10us", 10000},
        {"10\xc2\xb5s", 10000},
        {"7ns", 7},
        {"1h1m1s", 3661 * S},
        {".5s", 500 * MS},
    };
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(ok); i++) {
        uint64_t v = 1;
        berth_error_t *err = NULL;
        if (gc_parse_duration(ok[i].s, strlen(ok[i].s), &v, &err) < 0)
            fail_msg("\"%s\": %s", ok[i].s, err->message);
        if (v != ok[i].ns)
            fail_msg("\"%s\": got %llu, want %llu", ok[i].s, (unsigned long long)v,
                     (unsigned long long)ok[i].ns);
    }
    static const char *const bad[] = {"", "5", "-1s", "1x", "s", "1..5s", "1e3s", "ms"};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(bad); i++) {
        uint64_t v = 0;
        berth_error_t *err = NULL;
        if (gc_parse_duration(bad[i], strlen(bad[i]), &v, &err) == 0)
            fail_msg("\"%s\" was accepted as %llu ns", bad[i], (unsigned long long)v);
        berth_error_free(&err);
    }
}

/* ---- sweep helpers ------------------------------------------------------------ */

static void test_strv(void **state)
{
    gc_strv_t v = {0};
    const char *in[] = {"c", "a", "b", "a", "c"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(gc_strv_push(&v, in[i], 1), 0);
    gc_strv_sort_unique(&v);
    assert_int_equal(v.n, 3);
    assert_string_equal(v.v[0], "a");
    assert_string_equal(v.v[2], "c");
    assert_true(gc_strv_has(&v, "b"));
    assert_false(gc_strv_has(&v, "d"));
    gc_strv_free(&v);
    assert_false(gc_strv_has(&v, "a"));
}

#define D(c)                                                                                       \
    "sha256:" c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c  \
        c c c c c c c c c c c c c c c c c c c c c c

static void test_orphan_blobs(void **state)
{
    const char *da = D("a"), *db = D("b"), *dc = D("c"), *dd = D("d");
    gc_blob_t blobs[] = {
        {da, strlen(da), 10, 100}, /* old */
        {db, strlen(db), 20, 999}, /* changed after the cutoff */
        {dc, strlen(dc), 30, 50},  /* old but already being deleted */
        {dd, strlen(dd), 40, 500}, /* exactly at the cutoff: kept */
    };
    gc_strv_t exclude = {0}, out = {0};
    gc_strv_push(&exclude, dc, strlen(dc));
    gc_strv_sort_unique(&exclude);
    berth_error_t *err = NULL;
    assert_int_equal(gc_orphan_blobs(blobs, 4, 500, &exclude, &out, &err), 0);
    assert_int_equal(out.n, 1);
    assert_string_equal(out.v[0], da);
    gc_strv_free(&exclude);
    gc_strv_free(&out);
}

static void test_parse_blobs(void **state)
{
    const char *da = D("a"), *db = D("b");
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_pack_str(&b.pk, "blobs");
    msgpack_pack_array(&b.pk, 2);
    msgpack_pack_map(&b.pk, 3);
    berth_mp_kv_str(&b.pk, "digest", da);
    berth_mp_kv_u64(&b.pk, "size", 5);
    berth_mp_kv_i64(&b.pk, "mtime", 42);
    msgpack_pack_map(&b.pk, 2); /* no mtime: never an orphan */
    berth_mp_kv_str(&b.pk, "digest", db);
    berth_mp_kv_u64(&b.pk, "size", 6);
    gc_blob_t *blobs = NULL;
    size_t n = 0;
    berth_error_t *err = NULL;
    assert_int_equal(gc_parse_blobs(unpack(&b), &blobs, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(blobs[0].size, 5);
    assert_int_equal(blobs[0].mtime_wall, 42);
    assert_int_equal(blobs[1].mtime_wall, INT64_MAX);
    gc_strv_t out = {0};
    assert_int_equal(gc_orphan_blobs(blobs, n, INT64_MAX, NULL, &out, &err), 0);
    assert_int_equal(out.n, 1); /* only the one with a known mtime */
    gc_strv_free(&out);
    free(blobs);
    berth_mpbuf_destroy(&b); /* the entries borrowed its bytes */

    /* A malformed entry is an error, not a silent skip. */
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_pack_str(&b.pk, "blobs");
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_u64(&b.pk, "size", 5);
    assert_int_equal(gc_parse_blobs(unpack(&b), &blobs, &n, &err), -1);
    assert_non_null(err);
    berth_error_free(&err);
    berth_mpbuf_destroy(&b);
}

static void test_strv_from_array(void **state)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, 2);
    berth_mp_pack_str(&b.pk, "x");
    msgpack_pack_uint64(&b.pk, 3);
    gc_strv_t v = {0};
    berth_error_t *err = NULL;
    assert_int_equal(gc_strv_from_array(&v, unpack(&b), "test", &err), -1);
    assert_non_null(strstr(err->message, "element 1"));
    berth_error_free(&err);
    gc_strv_free(&v);
    berth_mpbuf_destroy(&b);
}

static void test_pack_stats(void **state)
{
    gc_stats_t st = {.content_deleted = 3,
                     .snapshots_deleted = 2,
                     .bytes_freed = 4096,
                     .duration_ns = 5,
                     .mark_ns = 1,
                     .lock_ns = 2,
                     .started_at = 10,
                     .finished_at = 20};
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    gc_pack_stats(&b.pk, &st, "boom");
    const msgpack_object *o = unpack(&b);
    uint64_t v = 0;
    berth_error_t *err = NULL;
    assert_int_equal(berth_mp_get_u64(o, "content_deleted", &v, &err), 0);
    assert_int_equal(v, 3);
    assert_int_equal(berth_mp_get_u64(o, "bytes_freed", &v, &err), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(berth_mp_get_u64(o, "duration_ns", &v, &err), 0);
    assert_int_equal(v, 5);
    assert_true(berth_mp_str_eq(berth_mp_get(o, "error"), "boom"));
    berth_mpbuf_destroy(&b);
    assert_int_equal(gc_chunks(0, 4096), 0);
    assert_int_equal(gc_chunks(4097, 4096), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup_delay),
        cmocka_unit_test(test_startup_zero_delay),
        cmocka_unit_test(test_deletions_before_startup_wait),
        cmocka_unit_test(test_any_deletion_schedules),
        cmocka_unit_test(test_deletion_threshold),
        cmocka_unit_test(test_mutation_threshold),
        cmocka_unit_test(test_pause_threshold_budget),
        cmocka_unit_test(test_budget_blocks_early_timer),
        cmocka_unit_test(test_pause_average_adapts),
        cmocka_unit_test(test_schedule_delay_coalesces),
        cmocka_unit_test(test_events_covered_by_mark_are_ignored),
        cmocka_unit_test(test_request_during_run_waits_for_next),
        cmocka_unit_test(test_failure_retries_with_backoff),
        cmocka_unit_test(test_backoff_caps),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_saturating_counters),
        cmocka_unit_test(test_config_defaults_and_overrides),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_default_json_matches),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_strv),
        cmocka_unit_test(test_orphan_blobs),
        cmocka_unit_test(test_parse_blobs),
        cmocka_unit_test(test_strv_from_array),
        cmocka_unit_test(test_pack_stats),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (g_zone)
        msgpack_zone_free(g_zone);
    return rc;
}
