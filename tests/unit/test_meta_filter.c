/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the containerd-style list filters (plugins/metadata/filter.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "berth/mp.h"
#include "filter.h"

static msgpack_zone *zone;
static msgpack_object rec;
static berth_mpbuf_t buf;

/* {name: "docker.io/library/busybox:1", target: {media_type, digest, size: 42},
 *  labels: {app: "web", "berth.io/gc.root": "", "a.b": "dotted", empty: ""},
 *  rm: true, spec: bin} */
static int setup(void **state)
{
    berth_mpbuf_init(&buf);
    msgpack_packer *pk = &buf.pk;
    msgpack_pack_map(pk, 5);
    berth_mp_kv_str(pk, "name", "docker.io/library/busybox:1");
    berth_mp_pack_str(pk, "target");
    msgpack_pack_map(pk, 3);
    berth_mp_kv_str(pk, "media_type", "application/vnd.oci.image.manifest.v1+json");
    berth_mp_kv_str(pk, "digest", "sha256:abc");
    berth_mp_kv_u64(pk, "size", 42);
    berth_mp_pack_str(pk, "labels");
    msgpack_pack_map(pk, 4);
    berth_mp_kv_str(pk, "app", "web");
    berth_mp_kv_str(pk, "berth.io/gc.root", "");
    berth_mp_kv_str(pk, "a.b", "dotted");
    berth_mp_kv_str(pk, "empty", "");
    berth_mp_kv_bool(pk, "rm", true);
    berth_mp_pack_str(pk, "spec");
    berth_mp_pack_bin(pk, "{}", 2);
    zone = msgpack_zone_new(4096);
    size_t off = 0;
    assert_int_equal(msgpack_unpack(buf.buf.data, buf.buf.size, &off, zone, &rec),
                     MSGPACK_UNPACK_SUCCESS);
    return 0;
}

static int teardown(void **state)
{
    msgpack_zone_free(zone);
    berth_mpbuf_destroy(&buf);
    return 0;
}

static bool match_n(size_t n, const char *const *f)
{
    meta_filter_t *flt = NULL;
    berth_error_t *err = NULL;
    if (meta_filter_parse(f, n, &flt, &err) < 0)
        fail_msg("parse \"%s\": %s", f[0], err->message);
    bool m = meta_filter_match(flt, &rec);
    meta_filter_free(flt);
    return m;
}

static bool match(const char *f)
{
    return match_n(1, &f);
}

static void expect(const char *f, bool want)
{
    if (match(f) != want)
        fail_msg("filter %s: got %s, want %s", f, want ? "no match" : "match",
                 want ? "match" : "no match");
}

static void expect_error(const char *f, const char *substr)
{
    meta_filter_t *flt = NULL;
    berth_error_t *err = NULL;
    if (meta_filter_parse(&f, 1, &flt, &err) == 0)
        fail_msg("filter %s parsed, expected an error", f);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    if (!strstr(err->message, substr))
        fail_msg("filter %s: error \"%s\" lacks \"%s\"", f, err->message, substr);
    berth_error_free(&err);
}

static void test_equality(void **state)
{
    expect("name==docker.io/library/busybox:1", true);
    expect("name==docker.io/library/busybox:2", false);
    expect("name!=docker.io/library/busybox:2", true);
    expect("name!=docker.io/library/busybox:1", false);
    expect("name==\"docker.io/library/busybox:1\"", true);
    expect(" name == docker.io/library/busybox:1 ", true);
    expect("target.digest==sha256:abc", true);
    expect("target.size==42", true);
    expect("target.size==43", false);
    expect("rm==true", true);
}

static void test_loose_field_names(void **state)
{
    /* containerd spells it mediatype; we store media_type. */
    expect("target.mediatype==application/vnd.oci.image.manifest.v1+json", true);
    expect("target.mediaType~=manifest", true);
    /* ...but label keys match exactly. */
    expect("labels.APP", false);
    expect("labels.app==web", true);
}

static void test_labels(void **state)
{
    expect("labels.app", true);
    expect("labels.missing", false);
    expect("labels.\"berth.io/gc.root\"", true);
    expect("labels.\"a.b\"==dotted", true);
    expect("labels.a.b", false); /* a path labels→a→b, not the key "a.b" */
    expect("labels.empty", true);
    expect("labels.empty==\"\"", true);
    /* containerd: != on an absent field compares with "" */
    expect("labels.missing!=x", true);
    expect("labels.missing!=\"\"", false);
}

static void test_and_or(void **state)
{
    expect("labels.app==web,name~=busybox", true);
    expect("labels.app==web,name~=nginx", false);
    const char *alts[] = {"name==nope", "labels.app==web"};
    assert_true(match_n(2, alts));
    const char *none[] = {"name==nope", "labels.app==db"};
    assert_false(match_n(2, none));
    assert_true(meta_filter_match(NULL, &rec));
}

static void test_regex(void **state)
{
    expect("name~=^docker\\.io/", true);
    expect("name~=/busybox:[0-9]+$/", true);
    expect("name~=\"nginx|busybox\"", true);
    expect("name~=^nginx", false);
    expect("labels.missing~=.*", false);
}

/* `~=` takes Go regexp (RE2) syntax, as containerd does (re.c). */
static void test_regex_go_syntax(void **state)
{
    expect("name~=(?i)BUSYBOX", true);
    expect("name~=\\bbusybox\\b", true);
    expect("name~=^busybox", false); /* unanchored, but ^ is the start */
    expect("name~=/^[[:alpha:]]+\\.io\\/\\w+/", true);
    expect("name~=:\\d$", true);
    expect("name~=(?P<repo>library)/", true);
    expect("labels.app~=^(?:web|db)$", true);
    expect("labels.empty~=^$", true);
    expect("target.size~=^4[0-9]$", true);
    expect("name~=/a{,2}/", false); /* a literal "{,2}" in Go, not a repeat */
    expect_error("name~=(a)\\1",
                 "invalid regular expression at position 7: invalid escape sequence: `\\1`");
    expect_error("name~=(?=x)", "invalid or unsupported Perl syntax: `(?=`");
    expect_error("name~=a**", "invalid nested repetition operator: `**`");
    expect_error("name~=a{1001}", "invalid repeat count: `{1001}`");
    expect_error("name~=/(a{999}){999}/", "invalid repeat count");
    expect_error("name~=[z-a]", "invalid character class range: `z-a`");
    expect_error("labels.x==1,name~=[[:foo:]]", "at position 19");
    /* All regexes of one filter list compile to at most 10,000 instructions. */
    char many[256] = "name~=/.{0,999}/";
    for (int i = 0; i < 4; i++)
        strcat(many, ",name~=/.{0,999}/");
    expect(many, true);
    strcat(many, ",name~=/.{0,999}/");
    expect_error(many, "regular expressions too large in total");
}

static void test_spec_bin_is_present(void **state)
{
    expect("spec", true);
    expect("spec==x", false);
}

static void test_errors(void **state)
{
    expect_error("", "expected field name at position 1");
    expect_error("name==", "expected value at position 7");
    expect_error("labels.==x", "expected field name at position 8");
    expect_error("name=x", "expected operator");
    expect_error("name==a b", "expected ',' or end of filter at position 9");
    expect_error("name==\"open", "unterminated quoted string");
    expect_error("name~=(", "invalid regular expression at position 7");
    expect_error("a,,b", "position 3");
    expect_error("labels.\"\"==x", "empty field name");
}

static void test_parse_obj(void **state)
{
    meta_filter_t *f = NULL;
    berth_error_t *err = NULL;
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    assert_int_equal(meta_filter_parse_obj(&nil, &f, &err), 0);
    assert_null(f);
    assert_int_equal(meta_filter_parse_obj(NULL, &f, &err), 0);

    msgpack_object notarr = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = 1};
    assert_int_equal(meta_filter_parse_obj(&notarr, &f, &err), -1);
    berth_error_free(&err);

    msgpack_object items[2] = {
        {.type = MSGPACK_OBJECT_STR, .via.str = {.size = 10, .ptr = "name==nope"}},
        {.type = MSGPACK_OBJECT_STR, .via.str = {.size = 10, .ptr = "labels.app"}},
    };
    msgpack_object arr = {.type = MSGPACK_OBJECT_ARRAY, .via.array = {.size = 2, .ptr = items}};
    assert_int_equal(meta_filter_parse_obj(&arr, &f, &err), 0);
    assert_true(meta_filter_match(f, &rec));
    meta_filter_free(f);

    /* empty strings are ignored (ctr passes none; some clients send "") */
    msgpack_object empty[1] = {{.type = MSGPACK_OBJECT_STR, .via.str = {.size = 0, .ptr = ""}}};
    msgpack_object arr2 = {.type = MSGPACK_OBJECT_ARRAY, .via.array = {.size = 1, .ptr = empty}};
    assert_int_equal(meta_filter_parse_obj(&arr2, &f, &err), 0);
    assert_null(f);

    msgpack_object bad[1] = {{.type = MSGPACK_OBJECT_STR, .via.str = {.size = 6, .ptr = "name=="}}};
    msgpack_object arr3 = {.type = MSGPACK_OBJECT_ARRAY, .via.array = {.size = 1, .ptr = bad}};
    assert_int_equal(meta_filter_parse_obj(&arr3, &f, &err), -1);
    assert_non_null(strstr(err->message, "invalid filter \"name==\""));
    berth_error_free(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equality),        cmocka_unit_test(test_loose_field_names),
        cmocka_unit_test(test_labels),          cmocka_unit_test(test_and_or),
        cmocka_unit_test(test_regex),           cmocka_unit_test(test_spec_bin_is_present),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_parse_obj),
        cmocka_unit_test(test_regex_go_syntax),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
