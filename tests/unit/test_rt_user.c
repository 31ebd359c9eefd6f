/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of user.c: USER resolution against an image's /etc/passwd and
 * /etc/group, supplementary groups (CVE-2023-25173), range checks and
 * reading files confined to the image root. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

static char root[256];
static int rootfd = -1;

static void write_file(const char *rel, const char *content)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int setup(void **state)
{
    snprintf(root, sizeof(root), "/tmp/berth-test-user-XXXXXX");
    assert_non_null(mkdtemp(root));
    char p[512];
    snprintf(p, sizeof(p), "%s/etc", root);
    assert_int_equal(mkdir(p, 0755), 0);
    write_file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                             "# a comment\n"
                             "\n"
                             "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                             "alice:x:1000:1000:Alice:/home/alice:/bin/sh\r\n"
                             "evil:x:99999999999:0::/:/bin/sh\n"
                             "minus:x:4294967295:0::/:/bin/sh\n"
                             "short:x\n"
                             "bob:x:1001:100:Bob:/home/bob:/bin/sh\n");
    write_file("etc/group", "root:x:0:root\n"
                            "daemon:x:1:\n"
                            "wheel:x:10:root,alice\n"
                            "audio:x:29: alice , bob\n"
                            "users:x:100:\n"
                            "alice:x:1000:alice\n"
                            "staff:x:50:\n"
                            "huge:x:5000000000:alice\n");
    rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(rootfd >= 0);
    (void)state;
    return 0;
}

static int teardown(void **state)
{
    close(rootfd);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
    (void)state;
    return 0;
}

static void assert_gids(const rt_user_t *u, const uint32_t *want, size_t n)
{
    if (u->n_additional_gids != n) {
        fail_msg("additional gids: got %zu entries, want %zu", u->n_additional_gids, n);
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(u->additional_gids[i], want[i]);
}

static void test_default_root(void **state)
{
    rt_user_t u;
    berth_error_t *err = NULL;
    assert_int_equal(rt_user_resolve(rootfd, "", &u, &err), 0);
    assert_int_equal(u.uid, 0);
    assert_int_equal(u.gid, 0);
    /* primary 0 first, then wheel (root is a member); group "root" is skipped
     * as the user's own group. */
    const uint32_t want[] = {0, 10};
    assert_gids(&u, want, 2);
    rt_user_clear(&u);
    (void)state;
}

static void test_name(void **state)
{
    rt_user_t u;
    berth_error_t *err = NULL;
    assert_int_equal(rt_user_resolve(rootfd, "alice", &u, &err), 0);
    assert_int_equal(u.uid, 1000);
    assert_int_equal(u.gid, 1000);
    /* wheel and audio list alice; group "alice" is her own; "huge" has an
     * out-of-range gid and is ignored. */
    const uint32_t want[] = {1000, 10, 29};
    assert_gids(&u, want, 3);
    rt_user_clear(&u);
    (void)state;
}

/* The files read once (rt_etc_read, as the runtime's per-image cache keeps
 * them) resolve exactly as reading through the root does, and an image
 * without them behaves as "no rootfs" (numeric users only). */
static void test_etc_read_matches_root(void **state)
{
    rt_etc_t etc;
    berth_error_t *err = NULL;
    assert_int_equal(rt_etc_read(rootfd, &etc, &err), 0);
    assert_non_null(etc.data[0]);
    assert_non_null(etc.data[1]);
    const char *users[] = {"", "alice", "1001", "bob:staff", "alice:0", "4242"};
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
        rt_user_t a, b;
        assert_int_equal(rt_user_resolve(rootfd, users[i], &a, &err), 0);
        /* rootfd -1: only the files in `etc` are used. */
        assert_int_equal(rt_user_resolve_etc(-1, &etc, users[i], &b, &err), 0);
        assert_int_equal(a.uid, b.uid);
        assert_int_equal(a.gid, b.gid);
        assert_gids(&b, a.additional_gids, a.n_additional_gids);
        rt_user_clear(&a);
        rt_user_clear(&b);
    }
    rt_user_t u;
    assert_int_equal(rt_user_resolve_etc(-1, &etc, "nobody-here", &u, &err), -1);
    assert_non_null(strstr(err->message, "no matching entries"));
    berth_error_free(&err);
    rt_etc_clear(&etc);

    rt_etc_t none = {0};
    assert_int_equal(rt_user_resolve_etc(-1, &none, "alice", &u, &err), -1);
    assert_non_null(strstr(err->message, "no /etc/passwd"));
    berth_error_free(&err);
    assert_int_equal(rt_user_resolve_etc(-1, &none, "7:8", &u, &err), 0);
    assert_int_equal(u.uid, 7);
    assert_int_equal(u.gid, 8);
    rt_user_clear(&u);
    (void)state;
}

static void test_numeric_known_and_unknown(void **state)
{
    rt_user_t u;
    berth_error_t *err = NULL;
    assert_int_equal(rt_user_resolve(rootfd, "1001", &u, &err), 0);
    assert_int_equal(u.uid, 1001);
    assert_int_equal(u.gid, 100);
    const uint32_t want_bob[] = {100, 29};
    assert_gids(&u, want_bob, 2);
    rt_user_clear(&u);

    assert_int_equal(rt_user_resolve(rootfd, "4242", &u, &err), 0);
    assert_int_equal(u.uid, 4242);
    assert_int_equal(u.gid, 0);
    const uint32_t want[] = {0};
    assert_gids(&u, want, 1);
    rt_user_clear(&u);
    (void)state;
}

static void test_user_group(void **state)
{
    rt_user_t u;
    berth_error_t *err = NULL;
    assert_int_equal(rt_user_resolve(rootfd, "alice:staff", &u, &err), 0);
    assert_int_equal(u.uid, 1000);
    assert_int_equal(u.gid, 50);
    assert_int_equal(u.additional_gids[0], 50);
    rt_user_clear(&u);

    assert_int_equal(rt_user_resolve(rootfd, "1000:77", &u, &err), 0);
    assert_int_equal(u.uid, 1000);
    assert_int_equal(u.gid, 77);
    const uint32_t want[] = {77, 10, 29};
    assert_gids(&u, want, 3);
    rt_user_clear(&u);
    (void)state;
}

static void expect_error(const char *user, const char *needle, int fd)
{
    rt_user_t u;
    berth_error_t *err = NULL;
    assert_int_equal(rt_user_resolve(fd, user, &u, &err), -1);
    assert_non_null(err);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    if (!strstr(err->message, needle))
        fail_msg("user %s: message \"%s\" lacks \"%s\"", user, err->message, needle);
    assert_null(u.additional_gids);
    berth_error_free(&err);
}

static void test_errors(void **state)
{
    expect_error("nobody", "unable to find user nobody", rootfd);
    expect_error("alice:nogroup", "unable to find group nogroup", rootfd);
    expect_error("4294967295", "out of range", rootfd);
    expect_error("99999999999", "out of range", rootfd);
    expect_error("1:4294967296", "out of range", rootfd);
    expect_error("a:b:c", "invalid user", rootfd);
    expect_error(":10", "must not be empty", rootfd);
    expect_error("alice:", "must not be empty", rootfd);
    /* entries whose ids are out of range are skipped, never truncated */
    expect_error("evil", "unable to find user evil", rootfd);
    expect_error("minus", "unable to find user minus", rootfd);
    expect_error("short", "unable to find user short", rootfd);
    /* no rootfs: names cannot resolve */
    expect_error("alice", "no /etc/passwd", -1);
    (void)state;
}

static void test_no_rootfs_numeric(void **state)
{
    rt_user_t u;
    berth_error_t *err = NULL;
    assert_int_equal(rt_user_resolve(-1, "5:6", &u, &err), 0);
    assert_int_equal(u.uid, 5);
    assert_int_equal(u.gid, 6);
    const uint32_t want[] = {6};
    assert_gids(&u, want, 1);
    rt_user_clear(&u);
    (void)state;
}

/* /etc/passwd as an absolute symlink to a host file: RESOLVE_IN_ROOT keeps it
 * inside the image, where it does not exist. */
static void test_symlink_confined(void **state)
{
    char d[300], p[300];
    snprintf(d, sizeof(d), "%s/sub", root);
    assert_int_equal(mkdir(d, 0755), 0);
    snprintf(p, sizeof(p), "%s/sub/etc", root);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/sub/etc/passwd", root);
    assert_int_equal(symlink("/../../../../../etc/hostname", p), 0);
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    char *data = NULL;
    berth_error_t *err = NULL;
    /* The host has /etc/hostname; inside sub/ it does not exist. */
    assert_int_equal(rt_read_in_root(fd, "/etc/passwd", 1024, &data, NULL, &err), 1);
    assert_null(data);
    expect_error("root", "no /etc/passwd", fd);
    /* A link to itself (in-root) is an error, never the host file. */
    unlink(p);
    assert_int_equal(symlink("/../../etc/passwd", p), 0);
    assert_true(rt_read_in_root(fd, "/etc/passwd", 1024, &data, NULL, &err) < 0);
    assert_null(data);
    berth_error_free(&err);
    /* A relative link inside the image works. */
    unlink(p);
    snprintf(p, sizeof(p), "%s/sub/etc/real", root);
    FILE *f = fopen(p, "w");
    fputs("x:x:7:8::/:/bin/sh\n", f);
    fclose(f);
    snprintf(p, sizeof(p), "%s/sub/etc/passwd", root);
    assert_int_equal(symlink("real", p), 0);
    rt_user_t u;
    assert_int_equal(rt_user_resolve(fd, "x", &u, &err), 0);
    assert_int_equal(u.uid, 7);
    assert_int_equal(u.gid, 8);
    rt_user_clear(&u);
    close(fd);
    (void)state;
}

static void test_caps_and_types(void **state)
{
    char d[300], p[300];
    snprintf(d, sizeof(d), "%s/big", root);
    assert_int_equal(mkdir(d, 0755), 0);
    snprintf(p, sizeof(p), "%s/big/etc", root);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/big/etc/passwd", root);
    int f = open(p, O_WRONLY | O_CREAT, 0644);
    assert_true(f >= 0);
    assert_int_equal(ftruncate(f, RT_MAX_ETC_FILE + 1), 0);
    close(f);
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    expect_error("alice", "larger than", fd);
    unlink(p);
    assert_int_equal(mkfifo(p, 0644), 0);
    expect_error("alice", "not a regular file", fd);
    unlink(p);
    assert_int_equal(mkdir(p, 0755), 0);
    expect_error("alice", "not a regular file", fd);
    close(fd);
    (void)state;
}

static void test_parse_id(void **state)
{
    uint32_t v;
    assert_int_equal(rt_parse_id("0", 1, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(rt_parse_id("4294967294", 10, &v), 0);
    assert_int_equal(v, 4294967294u);
    assert_int_equal(rt_parse_id("4294967295", 10, &v), -1);
    assert_int_equal(rt_parse_id("-1", 2, &v), -1);
    assert_int_equal(rt_parse_id("+1", 2, &v), -1);
    assert_int_equal(rt_parse_id(" 1", 2, &v), -1);
    assert_int_equal(rt_parse_id("", 0, &v), -1);
    assert_int_equal(rt_parse_id("12345678901", 11, &v), -1);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_id),
        cmocka_unit_test(test_default_root),
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_numeric_known_and_unknown),
        cmocka_unit_test(test_etc_read_matches_root),
        cmocka_unit_test(test_user_group),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_no_rootfs_numeric),
        cmocka_unit_test(test_symlink_confined),
        cmocka_unit_test(test_caps_and_types),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
