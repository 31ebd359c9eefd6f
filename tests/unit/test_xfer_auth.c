/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for transfer's WWW-Authenticate parsing, realm checks, token
 * responses, URL helpers and the hosts configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/transfer/internal.h"

static void test_challenges(void **s)
{
    xfer_challenge_t c[4];
    berth_error_t *err = NULL;
    int n = xfer_auth_parse(
        "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
        "scope=\"repository:library/busybox:pull\"",
        c, 4, &err);
    assert_int_equal(n, 1);
    assert_string_equal(c[0].scheme, "bearer");
    assert_string_equal(c[0].realm, "https://auth.docker.io/token");
    assert_string_equal(c[0].service, "registry.docker.io");
    assert_string_equal(c[0].scope, "repository:library/busybox:pull");
    xfer_challenge_clear(&c[0]);

    n = xfer_auth_parse("Basic realm=\"Registry \\\"x\\\" Realm\", Bearer realm=http://a/t, "
                        "service=s",
                        c, 4, &err);
    assert_int_equal(n, 2);
    assert_string_equal(c[0].scheme, "basic");
    assert_string_equal(c[0].realm, "Registry \"x\" Realm");
    assert_string_equal(c[1].scheme, "bearer");
    assert_string_equal(c[1].realm, "http://a/t");
    assert_string_equal(c[1].service, "s");
    assert_null(c[1].scope);
    xfer_challenge_clear(&c[0]);
    xfer_challenge_clear(&c[1]);

    n = xfer_auth_parse("Basic", c, 4, &err);
    assert_int_equal(n, 1);
    assert_string_equal(c[0].scheme, "basic");
    xfer_challenge_clear(&c[0]);

    assert_int_equal(xfer_auth_parse("Bearer realm=\"unterminated", c, 4, &err), -1);
    berth_error_free(&err);
    assert_int_equal(xfer_auth_parse("realm=x", c, 4, &err), -1);
    berth_error_free(&err);
    assert_int_equal(xfer_auth_parse("Bearer realm=\"a\" junk=", c, 4, &err), -1);
    berth_error_free(&err);
}

static void test_realm(void **s)
{
    berth_error_t *err = NULL;
    assert_int_equal(xfer_realm_check("https://auth.example.com/token", &err), 0);
    assert_int_equal(xfer_realm_check("http://127.0.0.1:5000/token", &err), 0);
    assert_int_equal(xfer_realm_check("file:///etc/passwd", &err), -1);
    assert_non_null(strstr(err->message, "http(s)"));
    berth_error_free(&err);
    assert_int_equal(xfer_realm_check("http://169.254.169.254/latest/meta-data", &err), -1);
    assert_non_null(strstr(err->message, "link-local"));
    berth_error_free(&err);
    assert_int_equal(xfer_realm_check("http://[fe80::1]:80/x", &err), -1);
    berth_error_free(&err);
    assert_int_equal(xfer_realm_check("http://user@169.254.1.1/x", &err), -1);
    berth_error_free(&err);
    assert_int_equal(xfer_realm_check("gopher://x", &err), -1);
    berth_error_free(&err);
    assert_true(xfer_ip_link_local("::ffff:169.254.1.2"));
    assert_false(xfer_ip_link_local("10.0.0.1"));
}

static void test_token(void **s)
{
    char *tok = NULL;
    uint64_t exp = 0;
    berth_error_t *err = NULL;
    const char *a = "{\"token\":\"abc.def\",\"expires_in\":300}";
    assert_int_equal(xfer_token_parse(a, strlen(a), &tok, &exp, &err), 0);
    assert_string_equal(tok, "abc.def");
    assert_int_equal(exp, 300);
    free(tok);
    const char *b = "{\"access_token\":\"zz\"}";
    assert_int_equal(xfer_token_parse(b, strlen(b), &tok, &exp, &err), 0);
    assert_string_equal(tok, "zz");
    assert_int_equal(exp, 60);
    free(tok);
    const char *c = "{\"token\":\"a\\r\\nX-Evil: 1\"}";
    assert_int_equal(xfer_token_parse(c, strlen(c), &tok, &exp, &err), -1);
    berth_error_free(&err);
    assert_int_equal(xfer_token_parse("nope", 4, &tok, &exp, &err), -1);
    berth_error_free(&err);
}

static void test_urls(void **s)
{
    char *r;
    r = xfer_url_hostport("https://User@Registry.example:5000/v2/x");
    assert_string_equal(r, "registry.example:5000");
    free(r);
    assert_null(xfer_url_hostport("nope"));
    r = xfer_url_resolve("http://a:1/v2/x/blobs/uploads/", "/v2/x/blobs/uploads/123?s=1");
    assert_string_equal(r, "http://a:1/v2/x/blobs/uploads/123?s=1");
    free(r);
    r = xfer_url_resolve("http://a:1/v2/x", "https://b/y");
    assert_string_equal(r, "https://b/y");
    free(r);
    r = xfer_url_resolve("https://a/v2/x/y", "z");
    assert_string_equal(r, "https://a/v2/x/z");
    free(r);
    r = xfer_url_resolve("https://a/v2/x", "//cdn/b");
    assert_string_equal(r, "https://cdn/b");
    free(r);
    r = xfer_base64("user:pass", 9);
    assert_string_equal(r, "dXNlcjpwYXNz");
    free(r);
    r = xfer_url_escape("repository:a/b:pull,push");
    assert_string_equal(r, "repository%3Aa%2Fb%3Apull%2Cpush");
    free(r);
}

static msgpack_object *unpack_json_like(berth_mpbuf_t *b, msgpack_zone **z)
{
    static msgpack_object o;
    berth_error_t *err = NULL;
    if (berth_mp_unpack(b->buf.data, b->buf.size, NULL, z, &o, &err) < 0)
        fail_msg("unpack");
    return &o;
}

static void test_hosts(void **s)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_packer *pk = &b.pk;
    msgpack_pack_map(pk, 2);
    berth_mp_kv_u64(pk, "max_concurrent_downloads", 5);
    berth_mp_pack_str(pk, "registries");
    msgpack_pack_map(pk, 2);
    berth_mp_pack_str(pk, "docker.io");
    msgpack_pack_map(pk, 1);
    berth_mp_pack_str(pk, "hosts");
    msgpack_pack_array(pk, 2);
    msgpack_pack_map(pk, 2);
    berth_mp_kv_str(pk, "url", "https://mirror.local/");
    berth_mp_pack_str(pk, "capabilities");
    msgpack_pack_array(pk, 1);
    berth_mp_pack_str(pk, "pull");
    msgpack_pack_map(pk, 3);
    berth_mp_kv_str(pk, "url", "http://push.local:5000");
    berth_mp_kv_bool(pk, "skip_verify", true);
    berth_mp_pack_str(pk, "capabilities");
    msgpack_pack_array(pk, 2);
    berth_mp_pack_str(pk, "push");
    berth_mp_pack_str(pk, "resolve");
    berth_mp_pack_str(pk, "_default");
    msgpack_pack_map(pk, 1);
    berth_mp_kv_bool(pk, "plain_http", true);

    msgpack_zone *z = NULL;
    const msgpack_object *cfg = unpack_json_like(&b, &z);
    xfer_settings_t st;
    berth_error_t *err = NULL;
    if (xfer_settings_parse(cfg, &st, &err) < 0)
        fail_msg("parse: %s", err->message);
    assert_int_equal(st.max_concurrent_downloads, 5);
    assert_int_equal(st.max_attempts, 4);

    xfer_host_t *h = NULL;
    size_t n = 0;
    assert_int_equal(xfer_hosts_for(&st, "docker.io", XFER_CAP_PULL, false, false, &h, &n, &err),
                     0);
    assert_int_equal(n, 2);
    assert_string_equal(h[0].url, "https://mirror.local");
    assert_string_equal(h[1].url, "https://registry-1.docker.io");
    xfer_hosts_free(h, n);
    assert_int_equal(xfer_hosts_for(&st, "docker.io", XFER_CAP_PUSH, false, false, &h, &n, &err),
                     0);
    assert_int_equal(n, 2);
    assert_string_equal(h[0].url, "http://push.local:5000");
    assert_true(h[0].skip_verify);
    xfer_hosts_free(h, n);
    /* _default applies to others: plain_http. */
    assert_int_equal(
        xfer_hosts_for(&st, "reg.local:5000", XFER_CAP_PULL, false, false, &h, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(h[0].url, "http://reg.local:5000");
    xfer_hosts_free(h, n);
    xfer_settings_clear(&st);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);

    /* Defaults and request flags. */
    xfer_settings_default(&st);
    assert_int_equal(xfer_hosts_for(&st, "127.0.0.1:5000", XFER_CAP_PULL, true, true, &h, &n, &err),
                     0);
    assert_int_equal(n, 1);
    assert_string_equal(h[0].url, "http://127.0.0.1:5000");
    assert_true(h[0].skip_verify);
    xfer_hosts_free(h, n);
    assert_int_equal(xfer_hosts_for(&st, "quay.io", XFER_CAP_PULL, false, false, &h, &n, &err), 0);
    assert_string_equal(h[0].url, "https://quay.io");
    assert_false(h[0].skip_verify);
    xfer_hosts_free(h, n);

    /* Unknown keys name the key. */
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_u64(&b.pk, "max_concurent_downloads", 5);
    cfg = unpack_json_like(&b, &z);
    assert_int_equal(xfer_settings_parse(cfg, &st, &err), -1);
    assert_non_null(strstr(err->message, "max_concurent_downloads"));
    berth_error_free(&err);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);

    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_pack_str(&b.pk, "registries");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_pack_str(&b.pk, "x.io");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "server", "ftp://x");
    cfg = unpack_json_like(&b, &z);
    assert_int_equal(xfer_settings_parse(cfg, &st, &err), -1);
    assert_non_null(strstr(err->message, "URL"));
    berth_error_free(&err);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_challenges), cmocka_unit_test(test_realm),
        cmocka_unit_test(test_token),      cmocka_unit_test(test_urls),
        cmocka_unit_test(test_hosts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
