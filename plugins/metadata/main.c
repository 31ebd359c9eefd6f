/* SPDX-License-Identifier: Apache-2.0 */
/* berth-metadata: LMDB records of every namespace (namespaces, content,
 * images, containers, leases, ingests, snapshots) and the gc mark & sweep.
 * main: config, opening the database, settling intents left by a crash,
 * the seccomp sandbox, registering the methods of handlers.c and
 * handlers_snap.c. */
#include <stdio.h>
#include <string.h>

#include "handlers.h"

static meta_plugin_t g_meta;

meta_plugin_t *meta_plugin_get(berth_plugin_t *p)
{
    return berth_plugin_data(p);
}

static const struct {
    const char *key;
    uint64_t min, max;
} config_keys[] = {
    {"map_size_mb", 1, 1u << 20},
    {"max_map_size_mb", 1, 1u << 24},
    {"replay_ttl_s", 0, 365ull * 86400},
    {"backend_timeout_ms", 100, 24ull * 3600 * 1000},
    {"max_batch", 1, 4096},
};

static int load_config(meta_plugin_t *mp, const msgpack_object *cfg, berth_error_t **err)
{
    uint64_t v[BERTH_ARRAY_SIZE(config_keys)] = {64, 65536, 86400, 60000, 256};
    if (cfg && cfg->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < cfg->via.map.size; i++) {
            const msgpack_object *k = &cfg->via.map.ptr[i].key;
            size_t at = BERTH_ARRAY_SIZE(config_keys);
            for (size_t j = 0; j < BERTH_ARRAY_SIZE(config_keys); j++)
                if (berth_mp_str_eq(k, config_keys[j].key))
                    at = j;
            if (at == BERTH_ARRAY_SIZE(config_keys))
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "unknown key \"%.*s\" in the metadata config section",
                                       k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
                                       k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?");
            if (berth_mp_get_u64(cfg, config_keys[at].key, &v[at], err) < 0)
                return berth_error_wrap(err, "metadata config");
            if (v[at] < config_keys[at].min || v[at] > config_keys[at].max)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "metadata config %s must be between %llu and %llu",
                                       config_keys[at].key, (unsigned long long)config_keys[at].min,
                                       (unsigned long long)config_keys[at].max);
        }
    }
    mp->map_size = v[0] << 20;
    mp->max_map_size = v[1] << 20;
    mp->replay_ttl_ns = (int64_t)v[2] * 1000000000LL;
    mp->backend_timeout_ms = (uint32_t)v[3];
    mp->max_batch = (size_t)v[4];
    if (mp->max_map_size < mp->map_size)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "metadata config max_map_size_mb is smaller than map_size_mb");
    return 0;
}

typedef struct {
    size_t settled, pruned;
    int64_t before;
} start_t;

static int w_start(meta_tx_t *tx, void *a, berth_error_t **err)
{
    start_t *s = a;
    if (meta_snap_reconcile(tx, &s->settled, err) < 0)
        return -1;
    s->pruned = s->before > 0 ? meta_replay_prune(tx, s->before) : 0;
    return 0;
}

/* The sandbox (docs/security.md, "Plugin sandboxes"). This process reads
 * and writes its LMDB file and talks to the core over the fd it was given:
 * after init it never runs a program, forks, mounts, traces, opens a socket
 * or signals another process. The fork that reads every page of an existing
 * database (db.c, walk_in_child) happens in meta_db_open, before this. Two
 * stacked filters, because the kernel applies the strictest verdict of all:
 * a denylist of what the SDK's base set allows but we never use, then the
 * SDK's allowlist (its base set plus `extra`; anything else kills the
 * process). The writer's libuv pool thread starts later and inherits both
 * (and the SDK loads them with TSYNC anyway). */
static int meta_sandbox(berth_plugin_t *p, berth_error_t **err)
{
    return berth_plugin_confine(p, 0, NULL, NULL, err);
}

static int meta_init(berth_plugin_t *p, berth_error_t **err)
{
    meta_plugin_t *mp = &g_meta;
    mp->p = p;
    if (load_config(mp, berth_plugin_config(p), err) < 0)
        return -1;
    char path[4096];
    snprintf(path, sizeof(path), "%s/meta.lmdb", berth_plugin_root(p));
    meta_db_opts_t o = {.map_size = mp->map_size, .max_map_size = mp->max_map_size};
    if (meta_db_open(path, &o, &mp->db, err) < 0)
        return -1;
    /* Settle what a crash left between a record and a backend call. */
    start_t s = {.before = mp->replay_ttl_ns ? berth_now_ns() - mp->replay_ttl_ns : 0};
    if (meta_db_write(mp->db, w_start, &s, NULL, NULL, err) < 0)
        return berth_error_wrap(err, "recover metadata");
    if (s.settled)
        berth_log(BERTH_LOG_INFO, "msg=\"settled snapshot intents left by a crash\" count=%zu",
                  s.settled);
    /* Backend snapshots tombstoned but not yet removed: ask again (calls to
     * an absent backend wait in its queue; failures leave them to gc). */
    meta_tx_t tx;
    if (meta_tx_read(mp->db, &tx, err) < 0)
        return -1;
    char **ids = NULL;
    size_t n = 0;
    int rc = meta_snap_tombstones(&tx, &ids, &n, err);
    meta_tx_end(&tx);
    if (rc < 0)
        return -1;
    for (size_t i = 0; i < n && i < 64; i++)
        meta_backend_remove(mp, ids[i], NULL, NULL);
    meta_strv_free(ids, n);
    if (meta_sandbox(p, err) < 0)
        return -1;
    /* From here on writes serve requests: crash tests may stop them. */
    meta_db_arm_failpoints(mp->db);
    berth_log(BERTH_LOG_INFO,
              "msg=\"metadata ready\" path=%s map_mb=%llu replays_pruned=%zu "
              "pending_snapshot_removals=%zu",
              path, (unsigned long long)(meta_db_map_size(mp->db) >> 20), s.pruned, n);
    return 0;
}

static void meta_fini(berth_plugin_t *p)
{
    meta_plugin_t *mp = &g_meta;
    /* A batch still running owns the env: leave it to process exit (its
     * transaction either committed or never happened). */
    if (mp->db && !mp->busy) {
        meta_db_close(mp->db);
        mp->db = NULL;
    }
    berth_log(BERTH_LOG_INFO, "msg=\"metadata stopped\" writes=%llu batches=%llu",
              (unsigned long long)mp->writes, (unsigned long long)mp->batches);
}

int main(int argc, char **argv)
{
    size_t n = meta_n_methods + meta_n_snap_methods;
    berth_method_t *methods = calloc(n, sizeof(*methods));
    if (!methods)
        return 1;
    memcpy(methods, meta_methods, meta_n_methods * sizeof(*methods));
    memcpy(methods + meta_n_methods, meta_snap_methods, meta_n_snap_methods * sizeof(*methods));
    static const char *const requires[] = {"snapshot-overlay", NULL};
    berth_plugin_desc_t desc = {
        .id = "metadata",
        .type = "io.berth.metadata.v1",
        .version = "0.1.0",
        .methods = methods,
        .n_methods = n,
        .requires = requires,
        .init = meta_init,
        .fini = meta_fini,
        .data = &g_meta,
    };
    int rc = berth_plugin_main(&desc, argc, argv);
    free(methods);
    return rc;
}
