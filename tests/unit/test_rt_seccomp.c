/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of seccomp_default.c: the default profile's shape, capability
 * dependent rules, names unknown to libseccomp dropped, and the whole profile
 * compiling into a real libseccomp filter (what runc will do with it). */
#include <errno.h>
#include <seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static json_t *caps(const char *const *names)
{
    json_t *a = json_array();
    for (; *names; names++)
        rt_json_append_str(a, *names);
    return a;
}

/* Finds the first rule naming `sys`; NULL if none. */
static json_t *rule_for(json_t *prof, const char *sys, size_t from)
{
    json_t *sc = json_object_get(prof, "syscalls");
    for (size_t i = from; i < json_array_size(sc); i++) {
        json_t *r = json_array_get(sc, i);
        size_t k;
        json_t *n;
        json_array_foreach(json_object_get(r, "names"), k, n)
        {
            if (strcmp(json_string_value(n), sys) == 0)
                return r;
        }
    }
    return NULL;
}

static bool allowed_unconditionally(json_t *prof, const char *sys)
{
    json_t *sc = json_object_get(prof, "syscalls");
    for (size_t i = 0; i < json_array_size(sc); i++) {
        json_t *r = json_array_get(sc, i);
        if (json_object_get(r, "args") ||
            strcmp(json_string_value(json_object_get(r, "action")), "SCMP_ACT_ALLOW") != 0)
            continue;
        size_t k;
        json_t *n;
        json_array_foreach(json_object_get(r, "names"), k, n)
        {
            if (strcmp(json_string_value(n), sys) == 0)
                return true;
        }
    }
    return false;
}

static void test_default_shape(void **state)
{
    static const char *const def[] = {"CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", NULL};
    json_t *c = caps(def);
    json_t *p = rt_seccomp_default(c, false);
    assert_string_equal(json_string_value(json_object_get(p, "defaultAction")), "SCMP_ACT_ERRNO");
#if defined(__x86_64__)
    json_t *arches = json_object_get(p, "architectures");
    assert_string_equal(json_string_value(json_array_get(arches, 0)), "SCMP_ARCH_X86_64");
    assert_string_equal(json_string_value(json_array_get(arches, 1)), "SCMP_ARCH_X86");
    assert_int_equal(json_array_size(arches), 2);
    assert_true(allowed_unconditionally(p, "arch_prctl"));
    /* x32 only when the kernel runs x32 binaries */
    json_t *p32 = rt_seccomp_default(c, true);
    assert_string_equal(json_string_value(json_array_get(json_object_get(p32, "architectures"), 2)),
                        "SCMP_ARCH_X32");
    json_decref(p32);
#endif
    assert_true(allowed_unconditionally(p, "read"));
    assert_true(allowed_unconditionally(p, "execve"));
    assert_true(allowed_unconditionally(p, "ptrace")); /* kernel >= 4.8 rule */
    assert_false(allowed_unconditionally(p, "mount"));
    assert_false(allowed_unconditionally(p, "unshare"));
    assert_false(allowed_unconditionally(p, "reboot"));
    assert_false(allowed_unconditionally(p, "kexec_load"));
    assert_false(allowed_unconditionally(p, "clone"));
    assert_false(allowed_unconditionally(p, "socket"));
    assert_null(rule_for(p, "io_uring_setup", 0));

    /* clone allowed only without namespace flags */
    json_t *r = rule_for(p, "clone", 0);
    assert_non_null(r);
    json_t *a = json_array_get(json_object_get(r, "args"), 0);
    assert_string_equal(json_string_value(json_object_get(a, "op")), "SCMP_CMP_MASKED_EQ");
    assert_int_equal(json_integer_value(json_object_get(a, "valueTwo")), 0);
    assert_true(json_integer_value(json_object_get(a, "value")) & 0x00020000); /* CLONE_NEWNS */
    /* clone3 answers ENOSYS */
    r = rule_for(p, "clone3", 0);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "action")), "SCMP_ACT_ERRNO");
    assert_int_equal(json_integer_value(json_object_get(r, "errnoRet")), ENOSYS);
    /* socket: everything but AF_VSOCK */
    r = rule_for(p, "socket", 0);
    a = json_array_get(json_object_get(r, "args"), 0);
    assert_string_equal(json_string_value(json_object_get(a, "op")), "SCMP_CMP_NE");
    assert_int_equal(json_integer_value(json_object_get(a, "value")), 40);
    json_decref(p);
    json_decref(c);
    (void)state;
}

static void test_cap_rules(void **state)
{
    static const char *const adm[] = {"CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_SYS_TIME", NULL};
    json_t *c = caps(adm);
    json_t *p = rt_seccomp_default(c, false);
    assert_true(allowed_unconditionally(p, "mount"));
    assert_true(allowed_unconditionally(p, "clone"));
    assert_true(allowed_unconditionally(p, "chroot"));
    assert_true(allowed_unconditionally(p, "settimeofday"));
    assert_false(allowed_unconditionally(p, "reboot"));
    json_t *r = rule_for(p, "clone3", 0);
    assert_string_equal(json_string_value(json_object_get(r, "action")), "SCMP_ACT_ALLOW");
    json_decref(p);
    json_decref(c);
    (void)state;
}

/* Every name in the profile is known to the host's libseccomp, and names it
 * does not know (newer syscalls) are left out instead of failing. */
static void test_names_known(void **state)
{
    json_t *p = rt_seccomp_default(NULL, false);
    json_t *sc = json_object_get(p, "syscalls");
    size_t i, k;
    json_t *r, *n;
    size_t count = 0;
    json_array_foreach(sc, i, r)
    {
        json_array_foreach(json_object_get(r, "names"), k, n)
        {
            assert_int_not_equal(seccomp_syscall_resolve_name(json_string_value(n)),
                                 __NR_SCMP_ERROR);
            count++;
        }
    }
    assert_true(count > 300);
    bool cachestat_known = seccomp_syscall_resolve_name("cachestat") != __NR_SCMP_ERROR;
    assert_int_equal(rule_for(p, "cachestat", 0) != NULL, cachestat_known);
    json_decref(p);
    (void)state;
}

static enum scmp_compare op_of(const char *s)
{
    if (strcmp(s, "SCMP_CMP_NE") == 0)
        return SCMP_CMP_NE;
    if (strcmp(s, "SCMP_CMP_EQ") == 0)
        return SCMP_CMP_EQ;
    if (strcmp(s, "SCMP_CMP_MASKED_EQ") == 0)
        return SCMP_CMP_MASKED_EQ;
    fail_msg("unexpected op %s", s);
    return SCMP_CMP_EQ;
}

/* Builds the filter with libseccomp as runc would and exports the BPF. */
static void test_compiles(void **state)
{
    static const char *const def[] = {"CAP_CHOWN", "CAP_SETUID", NULL};
    json_t *c = caps(def);
    json_t *p = rt_seccomp_default(c, false);
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    assert_non_null(ctx);
    json_t *sc = json_object_get(p, "syscalls");
    size_t i, k;
    json_t *r, *n;
    json_array_foreach(sc, i, r)
    {
        const char *action = json_string_value(json_object_get(r, "action"));
        uint32_t act =
            strcmp(action, "SCMP_ACT_ALLOW") == 0
                ? SCMP_ACT_ALLOW
                : SCMP_ACT_ERRNO((uint32_t)json_integer_value(json_object_get(r, "errnoRet")));
        json_t *args = json_object_get(r, "args");
        json_array_foreach(json_object_get(r, "names"), k, n)
        {
            int nr = seccomp_syscall_resolve_name(json_string_value(n));
            if (nr < 0)
                continue; /* not on this arch: runc skips it too */
            struct scmp_arg_cmp cmp[6];
            unsigned na = 0;
            size_t ai;
            json_t *a;
            json_array_foreach(args, ai, a)
            {
                cmp[na].arg = (unsigned)json_integer_value(json_object_get(a, "index"));
                cmp[na].op = op_of(json_string_value(json_object_get(a, "op")));
                cmp[na].datum_a = (scmp_datum_t)json_integer_value(json_object_get(a, "value"));
                cmp[na].datum_b = (scmp_datum_t)json_integer_value(json_object_get(a, "valueTwo"));
                na++;
            }
            int rc = seccomp_rule_add_array(ctx, act, nr, na, cmp);
            if (rc != 0)
                fail_msg("rule for %s rejected: %d", json_string_value(n), rc);
        }
    }
    FILE *f = fopen("/dev/null", "w");
    assert_int_equal(seccomp_export_bpf(ctx, fileno(f)), 0);
    fclose(f);
    seccomp_release(ctx);
    json_decref(p);
    json_decref(c);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_shape),
        cmocka_unit_test(test_cap_rules),
        cmocka_unit_test(test_names_known),
        cmocka_unit_test(test_compiles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
