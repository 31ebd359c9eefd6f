/* SPDX-License-Identifier: Apache-2.0 */
/* berthd configuration: defaults, merging, overrides and the errors that
 * name the offending key (core/config.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core.h"

static json_t *J(const char *txt)
{
    json_error_t je;
    json_t *j = json_loads(txt, 0, &je);
    if (!j)
        fail_msg("test JSON does not parse: %s: %s", txt, je.text);
    return j;
}

/* Builds a config from JSON text; returns the error message (static) or NULL. */
static const char *build(core_config_t *cfg, const char *txt, const core_overrides_t *ov)
{
    static char msg[1024];
    json_t *u = txt ? J(txt) : NULL;
    berth_error_t *err = NULL;
    int r = core_config_build(cfg, u, ov, "/opt/berth/bin", &err);
    json_decref(u);
    if (r == 0) {
        assert_null(err);
        return NULL;
    }
    assert_non_null(err);
    snprintf(msg, sizeof(msg), "%s", err->message);
    berth_error_free(&err);
    return msg;
}

static void expect_error(const char *txt, const char *needle)
{
    core_config_t cfg;
    const char *msg = build(&cfg, txt, NULL);
    if (!msg)
        fail_msg("config %s was accepted; expected an error mentioning \"%s\"", txt, needle);
    if (!strstr(msg, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", msg, needle);
    core_config_free(&cfg);
}

static const core_plugin_conf_t *plugin(const core_config_t *cfg, const char *id)
{
    for (size_t i = 0; i < cfg->n_plugins; i++)
        if (strcmp(cfg->plugins[i].id, id) == 0)
            return &cfg->plugins[i];
    return NULL;
}

static void test_defaults(void **state)
{
    core_config_t cfg;
    assert_null(build(&cfg, NULL, NULL));
    assert_string_equal(cfg.root, "/var/lib/berth");
    assert_string_equal(cfg.state, "/run/berth");
    assert_string_equal(cfg.address, "/run/berth/berth.sock");
    assert_string_equal(cfg.plugins_address, "/run/berth/plugins.sock");
    assert_string_equal(cfg.lock_path, "/run/berth/berthd.lock");
    assert_null(cfg.group);
    assert_string_equal(cfg.plugin_dir, "/opt/berth/bin");
    assert_int_equal(cfg.max_frame, 16u * 1024 * 1024);
    assert_int_equal(cfg.max_write_queue, 64ull * 1024 * 1024);
    assert_int_equal(cfg.request_timeout_ms, 30000);
    assert_int_equal(cfg.queue_limit, 1024);
    assert_int_equal(cfg.restart_backoff_min_ms, 10);
    assert_int_equal(cfg.restart_backoff_max_ms, 5000);
    assert_int_equal(cfg.restart_limit, 10);
    assert_int_equal(cfg.failed_retry_ms, 30000);
    assert_int_equal(cfg.log_level, BERTH_LOG_INFO);
    assert_false(cfg.log_json);
    /* Every builtin plugin is present, enabled, next to berthd. */
    for (size_t i = 0; core_builtin_plugins[i]; i++) {
        const core_plugin_conf_t *pc = plugin(&cfg, core_builtin_plugins[i]);
        assert_non_null(pc);
        assert_true(pc->enabled);
        char want[256];
        snprintf(want, sizeof(want), "/opt/berth/bin/berth-%s", core_builtin_plugins[i]);
        assert_string_equal(pc->path, want);
        assert_int_equal(pc->n_args, 0);
        assert_true(json_is_object(pc->config));
    }
    assert_int_equal(cfg.n_externals, 0);
    core_config_free(&cfg);
}

/* `berthd config default` must hold a section for every builtin plugin, and
 * the embedded copies must be valid JSON objects equal to the files. */
static void test_defaults_embed_plugin_files(void **state)
{
    json_t *d = core_config_defaults();
    json_t *plugins = json_object_get(d, "plugins");
    for (size_t i = 0; core_builtin_plugins[i]; i++) {
        const char *id = core_builtin_plugins[i];
        json_t *e = json_object_get(plugins, id);
        assert_non_null(e);
        assert_true(json_is_object(json_object_get(e, "config")));
        const char *txt = core_embedded_plugin_default(id);
        assert_non_null(txt);
        json_t *emb = json_loads(txt, 0, NULL);
        if (!json_is_object(emb))
            fail_msg("embedded default of plugin %s is not a JSON object: %s", id, txt);
        char path[512];
        snprintf(path, sizeof(path), "%s/plugins/%s/config.default.json", BERTH_SRC, id);
        json_t *file = json_load_file(path, 0, NULL);
        if (file && !json_equal(file, emb))
            fail_msg("embedded default of plugin %s differs from %s (rebuild?)", id, path);
        if (file)
            assert_true(json_equal(file, json_object_get(e, "config")));
        json_decref(file);
        json_decref(emb);
    }
    assert_null(core_embedded_plugin_default("no-such-plugin"));
    /* The defaults themselves pass validation. */
    core_config_t cfg;
    berth_error_t *err = NULL;
    assert_int_equal(core_config_build(&cfg, d, NULL, "/x", &err), 0);
    core_config_free(&cfg);
    json_decref(d);
}

static void test_merge_and_derive(void **state)
{
    core_config_t cfg;
    assert_null(build(&cfg,
                      "{\"state\": \"/tmp/s\", \"root\": \"/tmp/r\", \"group\": \"berth\","
                      " \"log_level\": \"debug\", \"log_format\": \"json\","
                      " \"plugin_dir\": \"/usr/lib/berth\", \"queue_limit\": 7,"
                      " \"plugins\": {\"gc\": {\"enabled\": false},"
                      "   \"echo\": {\"args\": [\"--x\", \"y\"], \"config\": {\"k\": 1}},"
                      "   \"py\": {\"path\": \"/usr/share/echo.py\"},"
                      "   \"rel\": {\"path\": \"bin/rel\"}}}",
                      NULL));
    assert_string_equal(cfg.address, "/tmp/s/berth.sock");
    assert_string_equal(cfg.plugins_address, "/tmp/s/plugins.sock");
    assert_string_equal(cfg.group, "berth");
    assert_int_equal(cfg.log_level, BERTH_LOG_DEBUG);
    assert_true(cfg.log_json);
    assert_int_equal(cfg.queue_limit, 7);
    assert_false(plugin(&cfg, "gc")->enabled);
    assert_true(plugin(&cfg, "content")->enabled);
    assert_string_equal(plugin(&cfg, "content")->path, "/usr/lib/berth/berth-content");
    const core_plugin_conf_t *e = plugin(&cfg, "echo");
    assert_non_null(e);
    assert_true(e->enabled);
    assert_string_equal(e->path, "/usr/lib/berth/berth-echo");
    assert_int_equal(e->n_args, 2);
    assert_string_equal(e->args[0], "--x");
    assert_string_equal(e->args[1], "y");
    assert_null(e->args[2]);
    assert_int_equal(json_integer_value(json_object_get(e->config, "k")), 1);
    assert_string_equal(plugin(&cfg, "py")->path, "/usr/share/echo.py");
    assert_string_equal(plugin(&cfg, "rel")->path, "/usr/lib/berth/bin/rel");
    /* The effective config shows the resolved values. */
    assert_string_equal(json_string_value(json_object_get(cfg.effective, "address")),
                        "/tmp/s/berth.sock");
    assert_string_equal(json_string_value(json_object_get(cfg.effective, "plugin_dir")),
                        "/usr/lib/berth");
    core_config_free(&cfg);
}

static void test_plugin_config_merges_one_level(void **state)
{
    /* A user's plugin section is merged key by key onto the plugin's
     * defaults: untouched keys keep their default. */
    core_config_t cfg;
    assert_null(
        build(&cfg, "{\"plugins\": {\"x\": {\"config\": {\"a\": 1, \"m\": {\"p\": 1}}}}}", NULL));
    json_t *u = J("{\"plugins\": {\"x\": {\"config\": {\"b\": 2, \"m\": {\"q\": 2}}}}}");
    /* merge two user layers by building from the effective config */
    json_t *eff = json_deep_copy(cfg.effective);
    json_object_update_recursive(eff, u);
    core_config_free(&cfg);
    berth_error_t *err = NULL;
    assert_int_equal(core_config_build(&cfg, eff, NULL, "/x", &err), 0);
    const core_plugin_conf_t *x = plugin(&cfg, "x");
    assert_int_equal(json_integer_value(json_object_get(x->config, "a")), 1);
    assert_int_equal(json_integer_value(json_object_get(x->config, "b")), 2);
    core_config_free(&cfg);
    json_decref(eff);
    json_decref(u);
}

static void test_overrides_win(void **state)
{
    core_config_t cfg;
    core_overrides_t ov = {
        .root = "/o/root", .state = "/o/state", .log_level = "warn", .log_format = "json"};
    assert_null(build(&cfg, "{\"root\": \"/f/root\", \"state\": \"/f/state\"}", &ov));
    assert_string_equal(cfg.root, "/o/root");
    assert_string_equal(cfg.state, "/o/state");
    assert_string_equal(cfg.address, "/o/state/berth.sock");
    assert_int_equal(cfg.log_level, BERTH_LOG_WARN);
    assert_true(cfg.log_json);
    core_config_free(&cfg);
    core_overrides_t ov2 = {.address = "/o/x.sock"};
    assert_null(build(&cfg, NULL, &ov2));
    assert_string_equal(cfg.address, "/o/x.sock");
    core_config_free(&cfg);
    /* Overrides are validated like file values. */
    core_overrides_t bad = {.log_level = "loud"};
    const char *msg = build(&cfg, NULL, &bad);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "log_level"));
    core_config_free(&cfg);
    core_overrides_t rel = {.root = "relative/root"};
    msg = build(&cfg, NULL, &rel);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "config key root"));
    core_config_free(&cfg);
}

static void test_errors_name_the_key(void **state)
{
    expect_error("{\"bogus\": 1}", "\"bogus\"");
    expect_error("{\"version\": 2}", "config key version");
    expect_error("{\"root\": 5}", "config key root");
    expect_error("{\"root\": \"rel\"}", "config key root");
    expect_error("{\"state\": null}", "config key state");
    expect_error("{\"address\": \"x.sock\"}", "config key address");
    expect_error("{\"group\": 5}", "config key group");
    expect_error("{\"group\": \"\"}", "config key group");
    expect_error("{\"log_level\": \"loud\"}", "config key log_level");
    expect_error("{\"log_format\": \"xml\"}", "config key log_format");
    expect_error("{\"max_frame\": \"big\"}", "config key max_frame");
    expect_error("{\"max_frame\": 10}", "config key max_frame");
    expect_error("{\"max_frame\": 1048576, \"max_write_queue\": 65536}",
                 "config key max_write_queue");
    expect_error("{\"request_timeout_ms\": 0}", "config key request_timeout_ms");
    expect_error("{\"queue_limit\": -1}", "config key queue_limit");
    expect_error("{\"health_interval_ms\": 1.5}", "config key health_interval_ms");
    expect_error("{\"shutdown_timeout_ms\": 9000}", "config key shutdown_timeout_ms");
    expect_error("{\"restart_backoff_min_ms\": 100, \"restart_backoff_max_ms\": 50}",
                 "config key restart_backoff_max_ms");
    expect_error("{\"plugin_dir\": \"bin\"}", "config key plugin_dir");
    expect_error("{\"plugins\": []}", "config key plugins");
    expect_error("{\"plugins\": {\"Bad/Id\": {}}}", "plugins.Bad/Id");
    expect_error("{\"plugins\": {\"echo\": 3}}", "config key plugins.echo");
    expect_error("{\"plugins\": {\"echo\": {\"enable\": true}}}", "plugins.echo.enable");
    expect_error("{\"plugins\": {\"echo\": {\"enabled\": \"yes\"}}}", "plugins.echo.enabled");
    expect_error("{\"plugins\": {\"echo\": {\"path\": 1}}}", "plugins.echo.path");
    expect_error("{\"plugins\": {\"echo\": {\"args\": \"-v\"}}}", "plugins.echo.args");
    expect_error("{\"plugins\": {\"echo\": {\"args\": [1]}}}", "plugins.echo.args[0]");
    expect_error("{\"plugins\": {\"echo\": {\"config\": []}}}", "plugins.echo.config");
    expect_error("{\"plugins\": {\"content\": {\"config\": 1}}}", "plugins.content.config");
    expect_error("{\"external_plugins\": {\"x\": {}}}", "external_plugins.x.methods");
    expect_error("{\"external_plugins\": {\"x\": {\"methods\": []}}}",
                 "external_plugins.x.methods");
    expect_error("{\"external_plugins\": {\"x\": {\"methods\": [\"\"]}}}",
                 "external_plugins.x.methods[0]");
    expect_error("{\"external_plugins\": {\"x\": {\"methods\": [\"x.\"], \"extra\": 1}}}",
                 "external_plugins.x.extra");
    expect_error("{\"external_plugins\": {\"content\": {\"methods\": [\"c.\"]}}}",
                 "external_plugins.content");
    /* A long state dir makes the socket path too long for sockaddr_un. */
    char big[400];
    snprintf(big, sizeof(big), "{\"state\": \"/%0120d\"}", 0);
    expect_error(big, "config key address");
}

static void test_externals(void **state)
{
    core_config_t cfg;
    assert_null(build(&cfg,
                      "{\"external_plugins\": {\"ext\": {\"methods\": [\"ext.\", \"other.get\"],"
                      " \"config\": {\"a\": true}}}}",
                      NULL));
    assert_int_equal(cfg.n_externals, 1);
    assert_string_equal(cfg.externals[0].id, "ext");
    assert_int_equal(cfg.externals[0].n_prefixes, 2);
    assert_string_equal(cfg.externals[0].prefixes[1], "other.get");
    assert_null(cfg.externals[0].prefixes[2]);
    assert_true(json_is_true(json_object_get(cfg.externals[0].config, "a")));
    core_config_free(&cfg);
}

static void test_read_file(void **state)
{
    char path[] = "/tmp/berth-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *bad = "{\"root\": \"/x\",\n \"root\": \"/y\"}";
    assert_int_equal(write(fd, bad, strlen(bad)), (int)strlen(bad));
    close(fd);
    berth_error_t *err = NULL;
    assert_null(core_config_read_file(path, &err));
    assert_non_null(err);
    assert_non_null(strstr(err->message, path));
    berth_error_free(&err);
    FILE *f = fopen(path, "w");
    fputs("[1, 2]", f);
    fclose(f);
    assert_null(core_config_read_file(path, &err));
    assert_non_null(strstr(err->message, "JSON object"));
    berth_error_free(&err);
    f = fopen(path, "w");
    fputs("{\"log_level\": \"debug\"}", f);
    fclose(f);
    json_t *j = core_config_read_file(path, &err);
    assert_non_null(j);
    json_decref(j);
    unlink(path);
    assert_null(core_config_read_file("/nonexistent/berth.json", &err));
    assert_non_null(strstr(err->message, "/nonexistent/berth.json"));
    berth_error_free(&err);
}

static void test_json_pack(void **state)
{
    json_t *j =
        J("{\"s\": \"x\", \"i\": -3, \"f\": 1.5, \"t\": true, \"n\": null, \"a\": [1, {}]}");
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    core_json_pack(&b.pk, j);
    msgpack_zone *z = NULL;
    msgpack_object o;
    berth_error_t *err = NULL;
    assert_int_equal(berth_mp_unpack(b.buf.data, b.buf.size, NULL, &z, &o, &err), 0);
    assert_true(berth_mp_str_eq(berth_mp_get(&o, "s"), "x"));
    int64_t i = 0;
    assert_int_equal(berth_mp_get_i64(&o, "i", &i, &err), 0);
    assert_int_equal(i, -3);
    assert_int_equal(berth_mp_get(&o, "f")->type, MSGPACK_OBJECT_FLOAT64);
    bool t = false;
    assert_int_equal(berth_mp_get_bool(&o, "t", &t, &err), 0);
    assert_true(t);
    assert_int_equal(berth_mp_get(&o, "n")->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(berth_mp_get(&o, "a")->via.array.size, 2);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_defaults_embed_plugin_files),
        cmocka_unit_test(test_merge_and_derive),
        cmocka_unit_test(test_plugin_config_merges_one_level),
        cmocka_unit_test(test_overrides_win),
        cmocka_unit_test(test_errors_name_the_key),
        cmocka_unit_test(test_externals),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_json_pack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
