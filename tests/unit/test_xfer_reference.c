/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for transfer's reference parsing and platform matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/transfer/internal.h"

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void check_ok(const char *in, const char *name)
{
    xfer_ref_t r;
    berth_error_t *err = NULL;
    int rc = xfer_ref_parse(in, &r, &err);
    if (rc != 0)
        fail_msg("parse %s: %s", in, err->message);
    char *n = xfer_ref_name(&r);
    assert_string_equal(n, name);
    free(n);
    xfer_ref_clear(&r);
}

static void check_bad(const char *in, const char *why)
{
    xfer_ref_t r;
    berth_error_t *err = NULL;
    assert_int_equal(xfer_ref_parse(in, &r, &err), -1);
    assert_non_null(err);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    if (!strstr(err->message, why))
        fail_msg("%s: message \"%s\" lacks \"%s\"", in, err->message, why);
    berth_error_free(&err);
}

static void test_normalize(void **s)
{
    check_ok("busybox", "docker.io/library/busybox:latest");
    check_ok("busybox:1.36", "docker.io/library/busybox:1.36");
    check_ok("library/busybox", "docker.io/library/busybox:latest");
    check_ok("user/app", "docker.io/user/app:latest");
    check_ok("index.docker.io/user/app:v1", "docker.io/user/app:v1");
    check_ok("docker.io/nginx", "docker.io/library/nginx:latest");
    check_ok("127.0.0.1:5000/busybox:1", "127.0.0.1:5000/busybox:1");
    check_ok("localhost/foo", "localhost/foo:latest");
    check_ok("localhost:5000/a/b/c:tag", "localhost:5000/a/b/c:tag");
    check_ok("quay.io/org/repo-name_x.y__z:1.0-rc", "quay.io/org/repo-name_x.y__z:1.0-rc");
    check_ok("busybox@sha256:" D64, "docker.io/library/busybox@sha256:" D64);
    check_ok("busybox:1@sha256:" D64, "docker.io/library/busybox:1@sha256:" D64);
    check_ok("[::1]:5000/img:t", "[::1]:5000/img:t");
    check_ok("a--b/c", "docker.io/a--b/c:latest");
}

static void test_parts(void **s)
{
    xfer_ref_t r;
    berth_error_t *err = NULL;
    assert_int_equal(xfer_ref_parse("host:5000/ns/repo@sha256:" D64, &r, &err), 0);
    assert_string_equal(r.domain, "host:5000");
    assert_string_equal(r.path, "ns/repo");
    assert_null(r.tag);
    assert_string_equal(r.digest, "sha256:" D64);
    char *repo = xfer_ref_repo(&r);
    assert_string_equal(repo, "host:5000/ns/repo");
    free(repo);
    xfer_ref_clear(&r);
}

static void test_invalid(void **s)
{
    check_bad("", "empty");
    check_bad("Busybox", "lowercase");
    check_bad("docker.io/Library/x", "lowercase");
    check_bad("busybox:", "tag");
    check_bad("busybox:-x", "tag");
    check_bad("bu sy", "whitespace");
    check_bad("busybox@sha256:abc", "64 lowercase hex");
    check_bad("busybox@md5:" D64, "unsupported digest algorithm");
    check_bad("a//b", "path component");
    check_bad("a/b_", "path component");
    check_bad("-host.com/x", "registry host");
    check_bad("host.com:99999999/x", "registry host");
    check_bad("host.com/", "missing repository");
    check_bad("@sha256:" D64, "missing repository");
    check_bad("a/..", "path component");
    char tag[200];
    memset(tag, 'a', sizeof(tag));
    tag[199] = 0;
    char ref[260];
    snprintf(ref, sizeof(ref), "x:%s", tag);
    check_bad(ref, "tag");
    char longname[300];
    memset(longname, 'a', sizeof(longname));
    longname[299] = 0;
    check_bad(longname, "longer than");
}

static void test_digest_valid(void **s)
{
    assert_true(xfer_digest_valid("sha256:" D64));
    assert_false(
        xfer_digest_valid("sha256:"
                          "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"));
    assert_false(xfer_digest_valid("sha512:" D64));
    assert_false(xfer_digest_valid("sha256:" D64 "0"));
    assert_false(xfer_digest_valid(NULL));
}

static void test_platform(void **s)
{
    xfer_platform_t p, h;
    berth_error_t *err = NULL;
    char buf[100];
    assert_int_equal(xfer_platform_parse("linux/x86_64", &p, &err), 0);
    assert_string_equal(xfer_platform_format(&p, buf, sizeof(buf)), "linux/amd64");
    assert_int_equal(xfer_platform_parse("linux/aarch64/v8", &p, &err), 0);
    assert_string_equal(xfer_platform_format(&p, buf, sizeof(buf)), "linux/arm64");
    assert_int_equal(xfer_platform_parse("linux/arm", &p, &err), 0);
    assert_string_equal(xfer_platform_format(&p, buf, sizeof(buf)), "linux/arm/v7");
    assert_int_equal(xfer_platform_parse("arm64", &p, &err), 0);
    assert_string_equal(xfer_platform_format(&p, buf, sizeof(buf)), "linux/arm64");
    assert_int_equal(xfer_platform_parse("a/b/c/d", &p, &err), -1);
    assert_non_null(strstr(err->message, "os/arch"));
    berth_error_free(&err);
    assert_int_equal(xfer_platform_parse("linux/$x", &p, &err), -1);
    berth_error_free(&err);

    xfer_platform_t want, have;
    xfer_platform_set(&want, "linux", "arm", "v7");
    xfer_platform_set(&have, "linux", "arm", "v6");
    assert_true(xfer_platform_score(&want, &have) > 0);
    xfer_platform_set(&have, "linux", "arm", "v7");
    assert_int_equal(xfer_platform_score(&want, &have), 100);
    xfer_platform_set(&have, "linux", "arm64", "");
    assert_int_equal(xfer_platform_score(&want, &have), -1);
    xfer_platform_set(&want, "linux", "amd64", "");
    xfer_platform_set(&have, "windows", "amd64", "");
    assert_int_equal(xfer_platform_score(&want, &have), -1);
    xfer_platform_set(&have, "linux", "amd64", "v3");
    assert_int_equal(xfer_platform_score(&want, &have), -1);

    xfer_platform_host(&h);
    assert_string_equal(h.os, "linux");
    assert_true(h.arch[0] != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize), cmocka_unit_test(test_parts),
        cmocka_unit_test(test_invalid),   cmocka_unit_test(test_digest_valid),
        cmocka_unit_test(test_platform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
