/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the CLI's output helpers: ctr-style tables, human sizes and
 * durations, timestamps, label parsing and msgpack → JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli.h"

/* Captures what fn writes to a FILE. */
static char *capture(void (*fn)(FILE *, void *), void *arg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    fn(f, arg);
    fclose(f);
    return buf;
}

/* Unpacks a packed buffer into an object living in *zone. */
static msgpack_object unpack(berth_mpbuf_t *b, msgpack_zone **zone)
{
    msgpack_object o;
    berth_error_t *err = NULL;
    int r = berth_mp_unpack(b->buf.data, b->buf.size, NULL, zone, &o, &err);
    assert_int_equal(r, 0);
    return o;
}

/* --- tables --------------------------------------------------------------- */

static void print_images_table(FILE *f, void *arg)
{
    (void)arg;
    cli_table_t *t = cli_table_new(3, "REF", "SIZE", "LABELS");
    cli_table_row(t, "127.0.0.1:5077/big:1", "364.1 MiB", NULL);
    cli_table_row(t, "127.0.0.1:5077/busybox:1", "1.0 MiB", "-");
    cli_table_print(t, f);
}

static void test_table_like_ctr(void **state)
{
    (void)state;
    char *out = capture(print_images_table, NULL);
    /* Every column is its widest cell plus one space, the last included,
     * as ctr's tabwriter (padding 1, cells ending in \t) prints. */
    const char *want = "REF                      SIZE      LABELS \n"
                       "127.0.0.1:5077/big:1     364.1 MiB -      \n"
                       "127.0.0.1:5077/busybox:1 1.0 MiB   -      \n";
    assert_string_equal(out, want);
    free(out);
}

static void print_ns_table(FILE *f, void *arg)
{
    (void)arg;
    cli_table_t *t = cli_table_new(2, "NAME", "LABELS");
    cli_table_row(t, "default", "");
    cli_table_print(t, f);
}

static void test_table_namespaces_reference(void **state)
{
    (void)state;
    /* Byte for byte the `ctr namespaces ls` output of the reference file. */
    char *out = capture(print_ns_table, NULL);
    assert_string_equal(out, "NAME    LABELS \ndefault        \n");
    free(out);
}

static void print_utf8_table(FILE *f, void *arg)
{
    (void)arg;
    cli_table_t *t = cli_table_new(2, "K", "V");
    cli_table_row(t, "\xc3\xa9t\xc3\xa9", "x"); /* "été": 3 runes, 5 bytes */
    cli_table_row(t, "abcd", "y");
    cli_table_print(t, f);
}

static void test_table_counts_runes(void **state)
{
    (void)state;
    char *out = capture(print_utf8_table, NULL);
    assert_string_equal(out, "K    V \n\xc3\xa9t\xc3\xa9  x \nabcd y \n");
    free(out);
}

/* --- sizes and times --------------------------------------------------------- */

static void test_human_size(void **state)
{
    (void)state;
    assert_string_equal(cli_human_size(0), "0B");
    assert_string_equal(cli_human_size(301), "301B");
    assert_string_equal(cli_human_size(1023), "1023B");
    assert_string_equal(cli_human_size(1024), "1.0 KiB");
    assert_string_equal(cli_human_size(1536), "1.5 KiB");
    assert_string_equal(cli_human_size(1048576), "1.0 MiB");
    /* 364.1 MiB as in the ctr images ls reference. */
    assert_string_equal(cli_human_size(381786726ull), "364.1 MiB");
    assert_string_equal(cli_human_size(5ull << 30), "5.0 GiB");
    assert_string_equal(cli_human_size(UINT64_MAX), "16.0 EiB");
    /* Rotating static buffers: several values in one printf stay distinct. */
    const char *a = cli_human_size(1), *b = cli_human_size(2048);
    assert_string_equal(a, "1B");
    assert_string_equal(b, "2.0 KiB");
}

static void test_human_duration(void **state)
{
    (void)state;
    const uint64_t s = 1000000000ull;
    assert_string_equal(cli_human_duration(0), "Less than a second");
    assert_string_equal(cli_human_duration(1 * s), "1 second");
    assert_string_equal(cli_human_duration(59 * s), "59 seconds");
    assert_string_equal(cli_human_duration(60 * s), "About a minute");
    assert_string_equal(cli_human_duration(12 * 60 * s + 5 * s), "12 minutes");
    assert_string_equal(cli_human_duration(3600 * s), "About an hour");
    assert_string_equal(cli_human_duration(5 * 3600 * s), "5 hours");
    assert_string_equal(cli_human_duration(3 * 24 * 3600 * s), "3 days");
    assert_string_equal(cli_human_duration(21 * 24 * 3600 * s), "3 weeks");
    assert_string_equal(cli_human_duration(90 * 24 * 3600 * s), "3 months");
    assert_string_equal(cli_human_duration(800 * 24 * 3600 * s), "2 years");
}

static void test_age_and_timestamps(void **state)
{
    (void)state;
    int64_t ts = 1795882280319990851LL; /* 2026-11-28 16:11:20.319990851 UTC */
    assert_string_equal(cli_rfc3339(ts), "2026-11-28T16:11:20Z");
    assert_string_equal(cli_go_time(ts), "2026-11-28 16:11:20.319990851 +0000 UTC");
    /* Go trims trailing zeros of the fraction, and the dot when it is 0. */
    assert_string_equal(cli_go_time(1795882280100000000LL), "2026-11-28 16:11:20.1 +0000 UTC");
    assert_string_equal(cli_go_time(1795882280000000000LL), "2026-11-28 16:11:20 +0000 UTC");
    int64_t twelve_min_ago = berth_now_ns() - 12 * 60 * 1000000000LL - 1000000000LL;
    assert_string_equal(cli_human_age(twelve_min_ago), "12 minutes");
}

static void test_parse_duration(void **state)
{
    (void)state;
    uint32_t ms = 0;
    assert_int_equal(cli_parse_duration_ms("30s", &ms), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(cli_parse_duration_ms("500ms", &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(cli_parse_duration_ms("1m30s", &ms), 0);
    assert_int_equal(ms, 90000);
    assert_int_equal(cli_parse_duration_ms("1.5h", &ms), 0);
    assert_int_equal(ms, 5400000);
    assert_int_equal(cli_parse_duration_ms("10", &ms), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(cli_parse_duration_ms("0", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(cli_parse_duration_ms("1us", &ms), 0);
    assert_int_equal(ms, 1); /* rounded up, never to "no timeout" */
    assert_int_equal(cli_parse_duration_ms("", &ms), -1);
    assert_int_equal(cli_parse_duration_ms("abc", &ms), -1);
    assert_int_equal(cli_parse_duration_ms("10x", &ms), -1);
    assert_int_equal(cli_parse_duration_ms("-5s", &ms), -1);
    assert_int_equal(cli_parse_duration_ms("100000h", &ms), -1);
}

/* --- labels -------------------------------------------------------------------- */

static void test_label_split(void **state)
{
    (void)state;
    size_t kl;
    const char *v;
    assert_int_equal(cli_label_split("a=b", &kl, &v), 0);
    assert_int_equal(kl, 1);
    assert_string_equal(v, "b");
    assert_int_equal(cli_label_split("k=v=w", &kl, &v), 0);
    assert_int_equal(kl, 1);
    assert_string_equal(v, "v=w");
    assert_int_equal(cli_label_split("flag", &kl, &v), 0);
    assert_int_equal(kl, 4);
    assert_string_equal(v, "true"); /* like ctr's LabelArgs */
    assert_int_equal(cli_label_split("empty=", &kl, &v), 0);
    assert_string_equal(v, "");
    assert_int_equal(cli_label_split("=v", &kl, &v), -1);
}

static void test_pack_labels_and_str(void **state)
{
    (void)state;
    char *kv[] = {"zeta=1", "alpha=2", "flag", "alpha=3"};
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    cli_pack_labels(&b.pk, kv, 4);
    msgpack_zone *z = NULL;
    msgpack_object o = unpack(&b, &z);
    /* The later alpha wins; the map never holds a key twice. */
    assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(o.via.map.size, 3);
    assert_true(berth_mp_str_eq(berth_mp_get(&o, "alpha"), "3"));
    assert_true(berth_mp_str_eq(berth_mp_get(&o, "flag"), "true"));
    /* Printed sorted by key, like a stable `ctr ... ls` LABELS column. */
    assert_string_equal(cli_labels_str(&o), "alpha=3,flag=true,zeta=1");
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);

    msgpack_object empty = {.type = MSGPACK_OBJECT_MAP};
    assert_string_equal(cli_labels_str(&empty), "-");
    assert_string_equal(cli_labels_str(NULL), "-");
}

static void test_pack_labels_rejects_empty_key(void **state)
{
    (void)state;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pfd[1], 2);
        char *kv[] = {"ok=1", "=oops"};
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        cli_pack_labels(&b.pk, kv, 2);
        _exit(0); /* not reached: cli_pack_labels exits 1 */
    }
    close(pfd[1]);
    char msg[512] = {0};
    size_t n = 0;
    ssize_t r;
    while (n < sizeof(msg) - 1 && (r = read(pfd[0], msg + n, sizeof(msg) - 1 - n)) > 0)
        n += (size_t)r;
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    assert_string_equal(msg, "berth: invalid label \"=oops\": expected KEY=VALUE with a non-empty "
                             "key\n");
}

/* --- JSON ---------------------------------------------------------------------- */

static void print_pretty(FILE *f, void *arg)
{
    cli_print_json(arg, f);
}
static void print_compact(FILE *f, void *arg)
{
    cli_print_json_compact(arg, f);
}

static void test_json_pretty(void **state)
{
    (void)state;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 7);
    berth_mp_kv_str(&b.pk, "id", "demo1");
    berth_mp_kv_i64(&b.pk, "neg", -5);
    berth_mp_kv_u64(&b.pk, "big", UINT64_MAX);
    berth_mp_kv_bool(&b.pk, "rm", true);
    berth_mp_pack_str(&b.pk, "labels");
    msgpack_pack_map(&b.pk, 0);
    berth_mp_pack_str(&b.pk, "args");
    msgpack_pack_array(&b.pk, 2);
    berth_mp_pack_str(&b.pk, "sh");
    msgpack_pack_nil(&b.pk);
    berth_mp_pack_str(&b.pk, "empty");
    msgpack_pack_array(&b.pk, 0);
    msgpack_zone *z = NULL;
    msgpack_object o = unpack(&b, &z);
    char *out = capture(print_pretty, &o);
    /* Go's json.MarshalIndent(v, "", "    ") shape, as `ctr containers info`. */
    assert_string_equal(out, "{\n"
                             "    \"id\": \"demo1\",\n"
                             "    \"neg\": -5,\n"
                             "    \"big\": 18446744073709551615,\n"
                             "    \"rm\": true,\n"
                             "    \"labels\": {},\n"
                             "    \"args\": [\n"
                             "        \"sh\",\n"
                             "        null\n"
                             "    ],\n"
                             "    \"empty\": []\n"
                             "}\n");
    free(out);
    out = capture(print_compact, &o);
    assert_string_equal(out,
                        "{\"id\":\"demo1\",\"neg\":-5,\"big\":18446744073709551615,\"rm\":true,"
                        "\"labels\":{},\"args\":[\"sh\",null],\"empty\":[]}");
    free(out);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);
}

static void test_json_strings_and_bytes(void **state)
{
    (void)state;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, 6);
    berth_mp_pack_str(&b.pk, "q\"b\\n\n\t\x01\x7f");
    berth_mp_pack_strn(&b.pk, "bad\xff\xc3(", 6);     /* invalid UTF-8 */
    berth_mp_pack_str(&b.pk, "\xc3\xa9\xe2\x82\xac"); /* é € stay as they are */
    berth_mp_pack_bin(&b.pk, "hello", 5);
    msgpack_pack_double(&b.pk, 1.5);
    msgpack_pack_double(&b.pk, 0.1);
    msgpack_zone *z = NULL;
    msgpack_object o = unpack(&b, &z);
    char *out = capture(print_compact, &o);
    assert_string_equal(out, "[\"q\\\"b\\\\n\\n\\t\\u0001\\u007f\",\"bad\\ufffd\\ufffd(\","
                             "\"\xc3\xa9\xe2\x82\xac\",\"aGVsbG8=\",1.5,0.1]");
    free(out);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);
}

static void test_json_odd_keys(void **state)
{
    (void)state;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    msgpack_pack_uint32(&b.pk, 7);
    berth_mp_pack_str(&b.pk, "seven");
    msgpack_pack_true(&b.pk);
    msgpack_pack_int(&b.pk, -1);
    msgpack_zone *z = NULL;
    msgpack_object o = unpack(&b, &z);
    char *out = capture(print_compact, &o);
    assert_string_equal(out, "{\"7\":\"seven\",\"true\":-1}");
    free(out);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);
}

static void test_fields(void **state)
{
    (void)state;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 3);
    berth_mp_kv_str(&b.pk, "s", "x");
    berth_mp_kv_u64(&b.pk, "n", 42);
    berth_mp_kv_i64(&b.pk, "neg", -1);
    msgpack_zone *z = NULL;
    msgpack_object o = unpack(&b, &z);
    char *s = cli_str(&o, "s");
    assert_string_equal(s, "x");
    free(s);
    s = cli_str(&o, "missing");
    assert_string_equal(s, "");
    free(s);
    assert_int_equal(cli_u64(&o, "n"), 42);
    assert_int_equal(cli_u64(&o, "neg"), 0);
    assert_int_equal(cli_u64(&o, "missing"), 0);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);
}

static void test_params_begin_packs_namespace(void **state)
{
    (void)state;
    cli_g.ns = "prod";
    berth_mpbuf_t b;
    cli_params_begin(&b, 1);
    berth_mp_kv_str(&b.pk, "id", "c1");
    msgpack_zone *z = NULL;
    msgpack_object o = unpack(&b, &z);
    assert_int_equal(o.via.map.size, 3);
    assert_true(berth_mp_str_eq(&o.via.map.ptr[0].key, "namespace"));
    assert_true(berth_mp_str_eq(berth_mp_get(&o, "namespace"), "prod"));
    assert_true(berth_mp_str_eq(berth_mp_get(&o, "id"), "c1"));
    /* a fresh request_id each time: 32 hex digits */
    const msgpack_object *rid = berth_mp_get(&o, "request_id");
    assert_non_null(rid);
    assert_int_equal(rid->type, MSGPACK_OBJECT_STR);
    assert_int_equal(rid->via.str.size, 32);
    char first[33];
    memcpy(first, rid->via.str.ptr, 32);
    first[32] = '\0';
    assert_int_equal(strspn(first, "0123456789abcdef"), 32);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);
    cli_params_begin(&b, 0);
    o = unpack(&b, &z);
    rid = berth_mp_get(&o, "request_id");
    assert_non_null(rid);
    assert_false(rid->via.str.size == 32 && memcmp(rid->via.str.ptr, first, 32) == 0);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);
    cli_g.ns = "default";
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_like_ctr),
        cmocka_unit_test(test_table_namespaces_reference),
        cmocka_unit_test(test_table_counts_runes),
        cmocka_unit_test(test_human_size),
        cmocka_unit_test(test_human_duration),
        cmocka_unit_test(test_age_and_timestamps),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_label_split),
        cmocka_unit_test(test_pack_labels_and_str),
        cmocka_unit_test(test_pack_labels_rejects_empty_key),
        cmocka_unit_test(test_json_pretty),
        cmocka_unit_test(test_json_strings_and_bytes),
        cmocka_unit_test(test_json_odd_keys),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_params_begin_packs_namespace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
