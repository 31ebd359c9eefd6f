/* SPDX-License-Identifier: Apache-2.0 */
/* berth-gc configuration: defaults (kept equal to config.default.json),
 * validation of the plugin's section and Go-style durations. No event loop. */
#include <math.h>
#include <string.h>

#include "internal.h"

void gc_config_defaults(gc_config_t *cfg)
{
    *cfg = (gc_config_t){
        .pause_threshold = 0.02,
        .deletion_threshold = 0,
        .mutation_threshold = 100,
        .schedule_delay_ns = 0,
        .startup_delay_ns = 100 * GC_NS_PER_MS,
        .orphan_scan = true,
        .orphan_grace_ns = 5 * 60 * GC_NS_PER_S,
        .max_concurrent_deletes = 4,
        .call_timeout_ns = 2 * 60 * GC_NS_PER_S,
    };
}

int gc_parse_duration(const char *s, size_t len, uint64_t *ns, berth_error_t **err)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        {"ns", 1},
        {"us", 1000},
        {"\xc2\xb5s", 1000}, /* µs */
        {"ms", GC_NS_PER_MS},
        {"s", GC_NS_PER_S},
        {"m", 60 * GC_NS_PER_S},
        {"h", 3600 * GC_NS_PER_S},
    };
    if (len == 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "empty duration");
    if (len == 1 && s[0] == '0') {
        *ns = 0;
        return 0;
    }
    double total = 0;
    size_t i = 0;
    while (i < len) {
        /* number: digits with an optional fraction */
        size_t start = i;
        double v = 0, scale = 0;
        bool digits = false;
        while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) {
            if (s[i] == '.') {
                if (scale != 0)
                    goto bad;
                scale = 1;
            } else {
                digits = true;
                if (scale != 0) {
                    scale /= 10;
                    v += (s[i] - '0') * scale;
                } else {
                    v = v * 10 + (s[i] - '0');
                }
            }
            i++;
        }
        if (!digits || i == start)
            goto bad;
        size_t us = i;
        while (i < len && !((s[i] >= '0' && s[i] <= '9') || s[i] == '.'))
            i++;
        size_t ulen = i - us;
        if (ulen == 0)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "duration \"%.*s\" lacks a unit (use ns, us, ms, s, m or h)",
                                   (int)len, s);
        bool found = false;
        for (size_t u = 0; u < BERTH_ARRAY_SIZE(units); u++) {
            if (strlen(units[u].name) == ulen && memcmp(units[u].name, s + us, ulen) == 0) {
                total += v * (double)units[u].mult;
                found = true;
                break;
            }
        }
        if (!found)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "duration \"%.*s\" has an unknown unit \"%.*s\" (use ns, us, "
                                   "ms, s, m or h)",
                                   (int)len, s, (int)ulen, s + us);
    }
    if (total > 1e18)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "duration \"%.*s\" is too long",
                               (int)len, s);
    *ns = (uint64_t)llround(total);
    return 0;
bad:
    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                           "invalid duration \"%.*s\" (examples: 100ms, 1m30s, 2h)", (int)len, s);
}

static int get_double(const msgpack_object *v, const char *key, double *out, berth_error_t **err)
{
    switch (v->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *out = v->via.f64;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = (double)v->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = (double)v->via.i64;
        return 0;
    default:
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "gc config: %s must be a number",
                               key);
    }
}

static int get_u32(const msgpack_object *v, const char *key, uint32_t min, uint32_t *out,
                   berth_error_t **err)
{
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > UINT32_MAX || v->via.u64 < min)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "gc config: %s must be an integer from %u to %u", key, min,
                               UINT32_MAX);
    *out = (uint32_t)v->via.u64;
    return 0;
}

static int get_duration(const msgpack_object *v, const char *key, uint64_t *out,
                        berth_error_t **err)
{
    if (v->type != MSGPACK_OBJECT_STR)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "gc config: %s must be a duration string such as \"100ms\"", key);
    if (gc_parse_duration(v->via.str.ptr, v->via.str.size, out, err) < 0)
        return berth_error_wrap(err, "gc config: %s", key);
    return 0;
}

int gc_config_parse(const msgpack_object *section, gc_config_t *cfg, berth_error_t **err)
{
    gc_config_defaults(cfg);
    if (!section || section->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (section->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "gc config must be a map");
    for (uint32_t i = 0; i < section->via.map.size; i++) {
        const msgpack_object *k = &section->via.map.ptr[i].key;
        const msgpack_object *v = &section->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "gc config: keys must be strings");
        char key[64];
        if (k->via.str.size >= sizeof(key))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "gc config: unknown key \"%.*s\"",
                                   (int)k->via.str.size, k->via.str.ptr);
        memcpy(key, k->via.str.ptr, k->via.str.size);
        key[k->via.str.size] = 0;
        if (v->type == MSGPACK_OBJECT_NIL)
            continue;
        int r;
        if (strcmp(key, "pause_threshold") == 0) {
            r = get_double(v, key, &cfg->pause_threshold, err);
            if (r == 0 && (!isfinite(cfg->pause_threshold) || cfg->pause_threshold < 0 ||
                           cfg->pause_threshold > 0.5))
                r = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                    "gc config: pause_threshold must be 0 (no budget) or within "
                                    "(0, 0.5], got %g",
                                    cfg->pause_threshold);
        } else if (strcmp(key, "deletion_threshold") == 0) {
            r = get_u32(v, key, 0, &cfg->deletion_threshold, err);
        } else if (strcmp(key, "mutation_threshold") == 0) {
            r = get_u32(v, key, 0, &cfg->mutation_threshold, err);
        } else if (strcmp(key, "schedule_delay") == 0) {
            r = get_duration(v, key, &cfg->schedule_delay_ns, err);
        } else if (strcmp(key, "startup_delay") == 0) {
            r = get_duration(v, key, &cfg->startup_delay_ns, err);
        } else if (strcmp(key, "orphan_grace") == 0) {
            r = get_duration(v, key, &cfg->orphan_grace_ns, err);
        } else if (strcmp(key, "orphan_scan") == 0) {
            if (v->type != MSGPACK_OBJECT_BOOLEAN)
                r = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                    "gc config: orphan_scan must be true or false");
            else
                cfg->orphan_scan = v->via.boolean, r = 0;
        } else if (strcmp(key, "max_concurrent_deletes") == 0) {
            r = get_u32(v, key, 1, &cfg->max_concurrent_deletes, err);
            if (r == 0 && cfg->max_concurrent_deletes > 256)
                r = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                    "gc config: max_concurrent_deletes must be at most 256");
        } else if (strcmp(key, "call_timeout") == 0) {
            r = get_duration(v, key, &cfg->call_timeout_ns, err);
            if (r == 0 &&
                (cfg->call_timeout_ns < GC_NS_PER_S || cfg->call_timeout_ns > 3600 * GC_NS_PER_S))
                r = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                    "gc config: call_timeout must be between 1s and 1h");
        } else {
            r = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                "gc config: unknown key \"%s\" (known: pause_threshold, "
                                "deletion_threshold, mutation_threshold, schedule_delay, "
                                "startup_delay, orphan_scan, orphan_grace, "
                                "max_concurrent_deletes, call_timeout)",
                                key);
        }
        if (r < 0)
            return -1;
    }
    return 0;
}
