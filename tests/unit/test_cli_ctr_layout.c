/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the ctr-compatible layouts of the CLI (cli.h): tab-padded
 * and open-ended tables (ctr's content ls, images check), progress.Bytes and
 * go-units sizes, RFC3339Nano times. Expected strings are what ctr 1.6
 * printed for the same values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"

static char *print_table(cli_table_t *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    cli_table_print(t, f);
    fclose(f);
    return buf;
}

#define DG1 "sha256:9d69fcb61c7d9dd316fd410ee8de62111af4b4147f099e9824abcf1774cb5511"
#define DG2 "sha256:a7b56f5931be99d0cf6d57bbc48d213de572934bfec78735d93561e7a6affaea"

static void test_tabs_open_last_like_content_ls(void **state)
{
    (void)state;
    cli_table_t *t = cli_table_new(4, "DIGEST", "SIZE", "AGE", "LABELS");
    cli_table_style(t, CLI_TABLE_TABS | CLI_TABLE_OPEN_LAST);
    cli_table_row(t, DG1, "1.084MB", "5 seconds", "a=b");
    cli_table_row(t, DG2, "366B", "Less than a second", "-");
    char *out = print_table(t);
    /* Byte for byte what `ctr content ls` printed (9 tabs after DIGEST:
     * 71 + 1 rounds up to 72 = 9 stops; AGE: 18 + 1 → 24 = 3 stops). */
    assert_string_equal(out, "DIGEST\t\t\t\t\t\t\t\t\tSIZE\tAGE\t\t\tLABELS\n" DG1
                             "\t1.084MB\t5 seconds\t\ta=b\n" DG2 "\t366B\tLess than a second\t-\n");
    free(out);
}

static void test_tabs_header_only_like_content_active(void **state)
{
    (void)state;
    cli_table_t *t = cli_table_new(3, "REF", "SIZE", "AGE");
    cli_table_style(t, CLI_TABLE_TABS);
    char *out = print_table(t);
    assert_string_equal(out, "REF\tSIZE\tAGE\t\n");
    free(out);
}

static void test_open_last_rows_like_images_check(void **state)
{
    (void)state;
    cli_table_t *t = cli_table_new(3, "REF", "SIZE", "UNPACKED");
    cli_table_style(t, CLI_TABLE_OPEN_LAST_ROWS);
    cli_table_row(t, "demo/bb:t", "1.0 MiB/1.0 MiB", "true");
    cli_table_row(t, "a", "1.0 MiB/1.0 MiB", "false");
    char *out = print_table(t);
    assert_string_equal(out, "REF       SIZE            UNPACKED \n"
                             "demo/bb:t 1.0 MiB/1.0 MiB true\n"
                             "a         1.0 MiB/1.0 MiB false\n");
    free(out);
}

static void test_table_free_unprinted(void **state)
{
    (void)state;
    cli_table_t *t = cli_table_new(2, "A", "B");
    cli_table_row(t, "x", NULL);
    cli_table_free(t); /* no leak under ASan/valgrind */
    cli_table_free(NULL);
}

static void test_bytes_like_progress_bytes(void **state)
{
    (void)state;
    assert_string_equal(cli_bytes(0), "0.0 B");
    assert_string_equal(cli_bytes(727), "727.0 B"); /* ctr images ls of a tiny image */
    assert_string_equal(cli_bytes(1023), "1023.0 B");
    assert_string_equal(cli_bytes(1024), "1.0 KiB");
    assert_string_equal(cli_bytes(61440), "60.0 KiB"); /* ctr snapshots usage */
    assert_string_equal(cli_bytes(2027520), "1.9 MiB");
    assert_string_equal(cli_bytes(381786726ull), "364.1 MiB");
}

static void test_human_size_si_like_go_units(void **state)
{
    (void)state;
    assert_string_equal(cli_human_size_si(0), "0B");
    assert_string_equal(cli_human_size_si(6), "6B");
    assert_string_equal(cli_human_size_si(366), "366B");
    assert_string_equal(cli_human_size_si(999), "999B");
    assert_string_equal(cli_human_size_si(1000), "1kB");
    assert_string_equal(cli_human_size_si(1500), "1.5kB");
    assert_string_equal(cli_human_size_si(1084000), "1.084MB"); /* ctr content ls */
    assert_string_equal(cli_human_size_si(3000000), "3MB");
    assert_string_equal(cli_human_size_si(123456789), "123.5MB");
    assert_string_equal(cli_human_size_si(5000000000ull), "5GB");
}

static void test_rfc3339_nano(void **state)
{
    (void)state;
    /* 2026-11-28T19:44:00.038703054Z, as ctr snapshots info showed it. */
    int64_t ts = 1795895040LL * 1000000000LL + 38703054;
    assert_string_equal(cli_rfc3339_nano(ts), "2026-11-28T19:44:00.038703054Z");
    assert_string_equal(cli_rfc3339_nano(1795895040LL * 1000000000LL + 500000000),
                        "2026-11-28T19:44:00.5Z");
    assert_string_equal(cli_rfc3339_nano(1795895040LL * 1000000000LL), "2026-11-28T19:44:00Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tabs_open_last_like_content_ls),
        cmocka_unit_test(test_tabs_header_only_like_content_active),
        cmocka_unit_test(test_open_last_rows_like_images_check),
        cmocka_unit_test(test_table_free_unprinted),
        cmocka_unit_test(test_bytes_like_progress_bytes),
        cmocka_unit_test(test_human_size_si_like_go_units),
        cmocka_unit_test(test_rfc3339_nano),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
