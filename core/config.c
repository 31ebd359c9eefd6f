/* SPDX-License-Identifier: Apache-2.0 */
/* berthd configuration: the complete defaults (with every builtin plugin's
 * section embedded at build time), merging a JSON file and command-line
 * overrides onto them, and strict validation that names the offending key.
 * No event loop here: unit tested directly (tests/unit/test_core_config.c). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "core.h"

const char *const core_builtin_plugins[] = {
    "content", "metadata", "snapshot-overlay", "transfer", "runtime-runc", "gc", NULL,
};

typedef struct {
    const char *key;
    json_int_t dflt, min, max;
} int_key_t;

/* Integer keys with their defaults and accepted ranges. */
/* Where plugins live when the config does not say: an installed berthd
 * (<prefix>/bin/berthd) finds them in <prefix>/libexec/berth; in a build tree
 * they sit next to berthd. */
static char *default_plugin_dir(const char *exe_dir)
{
    if (!exe_dir)
        return strdup("/usr/libexec/berth");
    char *cand = NULL;
    if (asprintf(&cand, "%s/../libexec/berth", exe_dir) < 0)
        return strdup(exe_dir);
    char *real = realpath(cand, NULL);
    free(cand);
    struct stat st;
    if (real && stat(real, &st) == 0 && S_ISDIR(st.st_mode))
        return real;
    free(real);
    return strdup(exe_dir);
}

static const int_key_t int_keys[] = {
    {"max_frame", 16 * 1024 * 1024, 4096, 1 << 30},
    {"max_write_queue", 64 * 1024 * 1024, 65536, (json_int_t)1 << 36},
    {"request_timeout_ms", 30000, 1, 24 * 3600 * 1000},
    {"queue_limit", 1024, 1, 1 << 20},
    {"health_interval_ms", 5000, 10, 3600 * 1000},
    {"health_timeout_ms", 5000, 10, 3600 * 1000},
    {"ready_timeout_ms", 30000, 10, 3600 * 1000},
    /* Shutdown must finish within 10 s: plugins get at most 8 s. */
    {"shutdown_timeout_ms", 5000, 10, 8000},
    {"drain_timeout_ms", 10000, 0, 3600 * 1000},
    {"restart_backoff_min_ms", 10, 1, 60000},
    {"restart_backoff_max_ms", 5000, 1, 3600 * 1000},
    {"restart_limit", 10, 1, 30},
    {"failed_retry_ms", 30000, 10, 24 * 3600 * 1000},
};

static const char *const str_keys[] = {
    "root",       "state",      "address", "plugins_address",  "group",  "log_level",
    "log_format", "plugin_dir", "plugins", "external_plugins", "version"};

static bool known_top_key(const char *k)
{
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(int_keys); i++)
        if (strcmp(k, int_keys[i].key) == 0)
            return true;
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(str_keys); i++)
        if (strcmp(k, str_keys[i]) == 0)
            return true;
    return false;
}

static json_t *plugin_default_entry(const char *id)
{
    json_t *cfg = NULL;
    const char *txt = core_embedded_plugin_default(id);
    if (txt) {
        json_error_t je;
        cfg = json_loads(txt, 0, &je);
        if (!cfg || !json_is_object(cfg)) {
            berth_log(BERTH_LOG_WARN,
                      "msg=\"embedded default config of plugin is not a JSON object; using {}\" "
                      "plugin=%s",
                      id);
            json_decref(cfg);
            cfg = NULL;
        }
    }
    if (!cfg)
        cfg = json_object();
    return json_pack("{s:b, s:n, s:[], s:o}", "enabled", 1, "path", "args", "config", cfg);
}

json_t *core_config_defaults(void)
{
    json_t *d = json_object();
    json_object_set_new(d, "version", json_integer(1));
    json_object_set_new(d, "root", json_string("/var/lib/berth"));
    json_object_set_new(d, "state", json_string("/run/berth"));
    json_object_set_new(d, "address", json_null());
    json_object_set_new(d, "plugins_address", json_null());
    json_object_set_new(d, "group", json_null());
    json_object_set_new(d, "log_level", json_string("info"));
    json_object_set_new(d, "log_format", json_string("logfmt"));
    json_object_set_new(d, "plugin_dir", json_null());
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(int_keys); i++)
        json_object_set_new(d, int_keys[i].key, json_integer(int_keys[i].dflt));
    json_t *plugins = json_object();
    for (size_t i = 0; core_builtin_plugins[i]; i++)
        json_object_set_new(plugins, core_builtin_plugins[i],
                            plugin_default_entry(core_builtin_plugins[i]));
    json_object_set_new(d, "plugins", plugins);
    json_object_set_new(d, "external_plugins", json_object());
    return d;
}

json_t *core_config_read_file(const char *path, berth_error_t **err)
{
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        if (je.line <= 0 && access(path, R_OK) < 0)
            berth_error_errno(err, errno, "config file %s", path);
        else
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "config file %s:%d:%d: %s", path,
                            je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "config file %s: the top level must be a JSON object", path);
        return NULL;
    }
    return j;
}

/* ---- helpers ------------------------------------------------------------ */

/* "config key <key>: <message>" */
static int keyerr(berth_error_t **err, const char *key, const char *fmt, ...) BERTH_PRINTF(3, 4);
static int keyerr(berth_error_t **err, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "config key %s: %s", key, msg);
}

/* Formats a compound key name (static buffer, one at a time). */
static const char *kf(const char *fmt, ...) BERTH_PRINTF(1, 2);
static const char *kf(const char *fmt, ...)
{
    static char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return buf;
}

static int valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

/* An absolute path without NUL, "..", or trailing garbage; optionally a
 * socket path that must fit sockaddr_un. */
static int check_path(const char *key, const json_t *v, bool nullable, bool socket,
                      berth_error_t **err)
{
    if (json_is_null(v)) {
        if (nullable)
            return 0;
        return keyerr(err, key, "must be an absolute path, not null");
    }
    if (!json_is_string(v))
        return keyerr(err, key, "must be a string (an absolute path)");
    const char *s = json_string_value(v);
    if (json_string_length(v) != strlen(s) || s[0] != '/')
        return keyerr(err, key, "must be an absolute path (got \"%s\")", s);
    if (strlen(s) >= PATH_MAX)
        return keyerr(err, key, "path is too long");
    if (socket && strlen(s) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return keyerr(err, key, "socket path is longer than 107 bytes (\"%s\")", s);
    return 0;
}

static char **strv_from_array(const json_t *a, size_t *n)
{
    size_t cnt = json_array_size(a);
    char **v = calloc(cnt + 1, sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < cnt; i++)
        v[i] = strdup(json_string_value(json_array_get(a, i)));
    *n = cnt;
    return v;
}

static void strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static int check_strv(const char *key, const json_t *a, bool nonempty_items, berth_error_t **err)
{
    if (!json_is_array(a))
        return keyerr(err, key, "must be an array of strings");
    size_t i;
    json_t *it;
    json_array_foreach(a, i, it)
    {
        if (!json_is_string(it) || json_string_length(it) != strlen(json_string_value(it)))
            return keyerr(err, kf("%s[%zu]", key, i), "must be a string");
        if (nonempty_items && json_string_length(it) == 0)
            return keyerr(err, kf("%s[%zu]", key, i), "must not be empty");
    }
    return 0;
}

/* Merges `src` onto `dst` (both objects): plugin entries are merged key by
 * key (and their `config` one level deep), everything else is replaced. */
static int merge_user(json_t *dst, const json_t *src, berth_error_t **err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)src, k, v)
    {
        if (!known_top_key(k))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "config: unknown key \"%s\" (see `berthd config default`)", k);
        if (strcmp(k, "plugins") == 0 && json_is_object(v)) {
            json_t *dp = json_object_get(dst, "plugins");
            const char *id;
            json_t *entry;
            json_object_foreach(v, id, entry)
            {
                char key[160];
                snprintf(key, sizeof(key), "plugins.%s", id);
                if (!valid_id(id))
                    return keyerr(err, key,
                                  "plugin ids are 1-64 characters of a-z, 0-9, '-' and '_'");
                if (!json_is_object(entry))
                    return keyerr(err, key, "must be an object {enabled, path, args, config}");
                json_t *de = json_object_get(dp, id);
                if (!de) {
                    de = plugin_default_entry(id);
                    json_object_set_new(dp, id, de);
                }
                const char *ek;
                json_t *ev;
                json_object_foreach(entry, ek, ev)
                {
                    if (strcmp(ek, "config") == 0 && json_is_object(ev) &&
                        json_is_object(json_object_get(de, "config"))) {
                        json_object_update(json_object_get(de, "config"), ev);
                    } else {
                        json_object_set(de, ek, ev);
                    }
                }
            }
        } else {
            json_object_set(dst, k, v);
        }
    }
    return 0;
}

static int get_int(const json_t *root, const int_key_t *ik, json_int_t *out, berth_error_t **err)
{
    const json_t *v = json_object_get(root, ik->key);
    if (!json_is_integer(v))
        return keyerr(err, ik->key, "must be an integer");
    json_int_t n = json_integer_value(v);
    if (n < ik->min || n > ik->max)
        return keyerr(err, ik->key, "must be between %lld and %lld (got %lld)", (long long)ik->min,
                      (long long)ik->max, (long long)n);
    *out = n;
    return 0;
}

static int build_plugins(core_config_t *cfg, const json_t *plugins, berth_error_t **err)
{
    if (!json_is_object(plugins))
        return keyerr(err, "plugins",
                      "must be an object of plugin id → {enabled, path, args, config}");
    size_t n = json_object_size(plugins);
    cfg->plugins = calloc(n ? n : 1, sizeof(*cfg->plugins));
    if (!cfg->plugins)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    const char *id;
    json_t *e;
    json_object_foreach((json_t *)plugins, id, e)
    {
        char key[192];
        snprintf(key, sizeof(key), "plugins.%s", id);
        if (!valid_id(id))
            return keyerr(err, key, "plugin ids are 1-64 characters of a-z, 0-9, '-' and '_'");
        if (!json_is_object(e))
            return keyerr(err, key, "must be an object {enabled, path, args, config}");
        const char *ek;
        json_t *ev;
        json_object_foreach(e, ek, ev)
        {
            if (strcmp(ek, "enabled") && strcmp(ek, "path") && strcmp(ek, "args") &&
                strcmp(ek, "config"))
                return keyerr(err, kf("%s.%s", key, ek),
                              "unknown key (known: enabled, path, args, config)");
        }
        core_plugin_conf_t *pc = &cfg->plugins[cfg->n_plugins++];
        pc->id = strdup(id);
        json_t *en = json_object_get(e, "enabled");
        if (en && !json_is_boolean(en))
            return keyerr(err, kf("%s.enabled", key), "must be true or false");
        pc->enabled = en ? json_is_true(en) : true;
        json_t *path = json_object_get(e, "path");
        char pk[224];
        snprintf(pk, sizeof(pk), "%s.path", key);
        if (path && !json_is_null(path)) {
            if (!json_is_string(path) || json_string_length(path) == 0 ||
                json_string_length(path) != strlen(json_string_value(path)))
                return keyerr(err, pk, "must be null or a path to the plugin binary");
            const char *ps = json_string_value(path);
            if (ps[0] == '/') {
                pc->path = strdup(ps);
            } else if (asprintf(&pc->path, "%s/%s", cfg->plugin_dir, ps) < 0) {
                pc->path = NULL;
            }
        } else if (asprintf(&pc->path, "%s/berth-%s", cfg->plugin_dir, id) < 0) {
            pc->path = NULL;
        }
        json_t *args = json_object_get(e, "args");
        char ak[224];
        snprintf(ak, sizeof(ak), "%s.args", key);
        if (args && !json_is_null(args)) {
            if (check_strv(ak, args, false, err) < 0)
                return -1;
            pc->args = strv_from_array(args, &pc->n_args);
        } else {
            pc->args = calloc(1, sizeof(char *));
        }
        json_t *pcfg = json_object_get(e, "config");
        if (pcfg && !json_is_null(pcfg) && !json_is_object(pcfg))
            return keyerr(err, kf("%s.config", key),
                          "must be an object (the plugin's own settings)");
        pc->config = pcfg && json_is_object(pcfg) ? json_incref(pcfg) : json_object();
        if (!pc->id || !pc->path || !pc->args)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    return 0;
}

static int build_externals(core_config_t *cfg, const json_t *ext, berth_error_t **err)
{
    if (!json_is_object(ext))
        return keyerr(err, "external_plugins",
                      "must be an object of plugin id → {methods: [prefixes]}");
    size_t n = json_object_size(ext);
    cfg->externals = calloc(n ? n : 1, sizeof(*cfg->externals));
    if (!cfg->externals)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    const char *id;
    json_t *e;
    json_object_foreach((json_t *)ext, id, e)
    {
        char key[192];
        snprintf(key, sizeof(key), "external_plugins.%s", id);
        if (!valid_id(id))
            return keyerr(err, key, "plugin ids are 1-64 characters of a-z, 0-9, '-' and '_'");
        for (size_t i = 0; i < cfg->n_plugins; i++)
            if (strcmp(cfg->plugins[i].id, id) == 0)
                return keyerr(err, key,
                              "the id is already used by a supervised plugin (plugins.%s)", id);
        if (!json_is_object(e))
            return keyerr(err, key, "must be an object {methods: [prefixes], config?}");
        const char *ek;
        json_t *ev;
        json_object_foreach(e, ek, ev)
        {
            if (strcmp(ek, "methods") && strcmp(ek, "config"))
                return keyerr(err, kf("%s.%s", key, ek), "unknown key (known: methods, config)");
        }
        json_t *m = json_object_get(e, "methods");
        char mk[224];
        snprintf(mk, sizeof(mk), "%s.methods", key);
        if (!m || json_array_size(m) == 0)
            return keyerr(err, mk, "must list the method-name prefixes the plugin may register");
        if (check_strv(mk, m, true, err) < 0)
            return -1;
        json_t *pcfg = json_object_get(e, "config");
        if (pcfg && !json_is_null(pcfg) && !json_is_object(pcfg))
            return keyerr(err, kf("%s.config", key), "must be an object");
        core_ext_conf_t *xc = &cfg->externals[cfg->n_externals++];
        xc->id = strdup(id);
        xc->prefixes = strv_from_array(m, &xc->n_prefixes);
        xc->config = pcfg && json_is_object(pcfg) ? json_incref(pcfg) : json_object();
        if (!xc->id || !xc->prefixes)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    return 0;
}

static int set_override(json_t *eff, const char *key, const char *val)
{
    if (val)
        return json_object_set_new(eff, key, json_string(val));
    return 0;
}

int core_config_build(core_config_t *cfg, const json_t *user, const core_overrides_t *ov,
                      const char *exe_dir, berth_error_t **err)
{
    memset(cfg, 0, sizeof(*cfg));
    json_t *eff = core_config_defaults();
    cfg->effective = eff;
    if (user && merge_user(eff, user, err) < 0)
        return -1;
    if (ov) {
        set_override(eff, "root", ov->root);
        set_override(eff, "state", ov->state);
        set_override(eff, "address", ov->address);
        set_override(eff, "log_level", ov->log_level);
        set_override(eff, "log_format", ov->log_format);
    }

    json_t *v = json_object_get(eff, "version");
    if (!json_is_integer(v) || json_integer_value(v) != 1)
        return keyerr(err, "version", "must be 1 (the only config version this berthd reads)");

    if (check_path("root", json_object_get(eff, "root"), false, false, err) < 0 ||
        check_path("state", json_object_get(eff, "state"), false, false, err) < 0 ||
        check_path("address", json_object_get(eff, "address"), true, true, err) < 0 ||
        check_path("plugins_address", json_object_get(eff, "plugins_address"), true, true, err) <
            0 ||
        check_path("plugin_dir", json_object_get(eff, "plugin_dir"), true, false, err) < 0)
        return -1;
    cfg->root = strdup(json_string_value(json_object_get(eff, "root")));
    cfg->state = strdup(json_string_value(json_object_get(eff, "state")));

    const json_t *a = json_object_get(eff, "address");
    if (json_is_string(a))
        cfg->address = strdup(json_string_value(a));
    else if (asprintf(&cfg->address, "%s/berth.sock", cfg->state) < 0)
        cfg->address = NULL;
    a = json_object_get(eff, "plugins_address");
    if (json_is_string(a))
        cfg->plugins_address = strdup(json_string_value(a));
    else if (asprintf(&cfg->plugins_address, "%s/plugins.sock", cfg->state) < 0)
        cfg->plugins_address = NULL;
    if (asprintf(&cfg->lock_path, "%s/berthd.lock", cfg->state) < 0)
        cfg->lock_path = NULL;
    if (!cfg->address || !cfg->plugins_address || !cfg->lock_path || !cfg->root || !cfg->state)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    struct sockaddr_un sun;
    if (strlen(cfg->address) >= sizeof(sun.sun_path))
        return keyerr(err, "address",
                      "socket path is longer than 107 bytes (\"%s\"); shorten state", cfg->address);
    if (strlen(cfg->plugins_address) >= sizeof(sun.sun_path))
        return keyerr(err, "plugins_address",
                      "socket path is longer than 107 bytes (\"%s\"); shorten state",
                      cfg->plugins_address);
    if (strcmp(cfg->address, cfg->plugins_address) == 0)
        return keyerr(err, "plugins_address", "must differ from address");
    json_object_set_new(eff, "address", json_string(cfg->address));
    json_object_set_new(eff, "plugins_address", json_string(cfg->plugins_address));

    const json_t *g = json_object_get(eff, "group");
    if (!json_is_null(g)) {
        if (!json_is_string(g) || json_string_length(g) == 0 ||
            json_string_length(g) != strlen(json_string_value(g)))
            return keyerr(err, "group", "must be null or a group name (or numeric gid)");
        cfg->group = strdup(json_string_value(g));
    }

    const json_t *ll = json_object_get(eff, "log_level");
    int lv = json_is_string(ll) ? berth_log_level_parse(json_string_value(ll)) : -1;
    if (lv < 0)
        return keyerr(err, "log_level", "must be one of error, warn, info, debug, trace");
    cfg->log_level = lv;
    const json_t *lf = json_object_get(eff, "log_format");
    if (!json_is_string(lf) || (strcmp(json_string_value(lf), "logfmt") != 0 &&
                                strcmp(json_string_value(lf), "json") != 0))
        return keyerr(err, "log_format", "must be \"logfmt\" or \"json\"");
    cfg->log_json = strcmp(json_string_value(lf), "json") == 0;

    json_int_t iv[BERTH_ARRAY_SIZE(int_keys)];
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(int_keys); i++)
        if (get_int(eff, &int_keys[i], &iv[i], err) < 0)
            return -1;
    cfg->max_frame = (uint32_t)iv[0];
    cfg->max_write_queue = (uint64_t)iv[1];
    cfg->request_timeout_ms = (uint32_t)iv[2];
    cfg->queue_limit = (uint32_t)iv[3];
    cfg->health_interval_ms = (uint32_t)iv[4];
    cfg->health_timeout_ms = (uint32_t)iv[5];
    cfg->ready_timeout_ms = (uint32_t)iv[6];
    cfg->shutdown_timeout_ms = (uint32_t)iv[7];
    cfg->drain_timeout_ms = (uint32_t)iv[8];
    cfg->restart_backoff_min_ms = (uint32_t)iv[9];
    cfg->restart_backoff_max_ms = (uint32_t)iv[10];
    cfg->restart_limit = (uint32_t)iv[11];
    cfg->failed_retry_ms = (uint32_t)iv[12];
    if (cfg->max_write_queue < cfg->max_frame)
        return keyerr(err, "max_write_queue", "must be at least max_frame");
    if (cfg->restart_backoff_max_ms < cfg->restart_backoff_min_ms)
        return keyerr(err, "restart_backoff_max_ms", "must be at least restart_backoff_min_ms");

    const json_t *pd = json_object_get(eff, "plugin_dir");
    if (json_is_string(pd))
        cfg->plugin_dir = strdup(json_string_value(pd));
    else
        cfg->plugin_dir = default_plugin_dir(exe_dir);
    if (!cfg->plugin_dir)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    json_object_set_new(eff, "plugin_dir", json_string(cfg->plugin_dir));

    if (build_plugins(cfg, json_object_get(eff, "plugins"), err) < 0)
        return -1;
    if (build_externals(cfg, json_object_get(eff, "external_plugins"), err) < 0)
        return -1;
    return 0;
}

void core_config_free(core_config_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->root);
    free(cfg->state);
    free(cfg->address);
    free(cfg->plugins_address);
    free(cfg->lock_path);
    free(cfg->group);
    free(cfg->plugin_dir);
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        free(cfg->plugins[i].id);
        free(cfg->plugins[i].path);
        strv_free(cfg->plugins[i].args);
        json_decref(cfg->plugins[i].config);
    }
    free(cfg->plugins);
    for (size_t i = 0; i < cfg->n_externals; i++) {
        free(cfg->externals[i].id);
        strv_free(cfg->externals[i].prefixes);
        json_decref(cfg->externals[i].config);
    }
    free(cfg->externals);
    json_decref(cfg->effective);
    memset(cfg, 0, sizeof(*cfg));
}

void core_json_pack(msgpack_packer *pk, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            berth_mp_pack_str(pk, k);
            core_json_pack(pk, v);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(j));
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) core_json_pack(pk, v);
        break;
    }
    case JSON_STRING:
        berth_mp_pack_strn(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(j));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(j));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    default:
        msgpack_pack_nil(pk);
        break;
    }
}
