/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the linear-time regex matcher (plugins/metadata/re.c). The
 * match and error tables were produced by Go 1.19's regexp (MatchString and
 * Compile, as containerd uses them) on the same patterns and texts; the only
 * intended differences are listed in test_unsupported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "re.h"

typedef struct {
    const char *pattern, *text;
    size_t len; /* of text (it may hold NULs) */
    bool want;
} match_case_t;

static const match_case_t matches[] = {
    {"a.c", "xabcx", 5, true},
    {"a.c", "ac", 2, false},
    {"a.c", "a\nc", 3, false},
    {"(?s)a.c", "a\nc", 3, true},
    {"^$", "", 0, true},
    {"^$", "x", 1, false},
    {"^$", "\n", 1, false},
    {"$", "abc", 3, true},
    {"", "", 0, true},
    {"", "abc", 3, true},
    {"^abc", "abcd", 4, true},
    {"^abc", "xabc", 4, false},
    {"abc$", "xabc", 4, true},
    {"abc$", "abc\n", 4, false},
    {"(?m)abc$", "abc\nx", 5, true},
    {"(?m)^x", "abc\nx", 5, true},
    {"^x", "abc\nx", 5, false},
    {"\\Aab", "ab", 2, true},
    {"ab\\z", "cab", 3, true},
    {"ab\\z", "ab\n", 3, false},
    {"(?i)ABC", "xabcx", 5, true},
    {"(?i)a[b-d]E", "ACe", 3, true},
    {"ABC", "abc", 3, false},
    {"(?i:a)b", "Ab", 2, true},
    {"(?i:a)b", "AB", 2, false},
    {"a(?i)b|c", "AC", 2, true},
    {"a(?i)b|c", "C", 1, true},
    {"(a(?i)b)c", "aBc", 3, true},
    {"(a(?i)b)c", "aBC", 3, false},
    {"(?i)k", "\xe2\x84\xaa", 3, true},
    {"(?i)[k]", "\xe2\x84\xaa", 3, true},
    {"(?i)\\w", "\xe2\x84\xaa", 3, true},
    {"(?i)\\W", "\xe2\x84\xaa", 3, false},
    {"(?i)[^k]", "K", 1, false},
    {"(?i)\xc5\xbf", "S", 1, true},
    {"(?i)\xc3\xa9", "\xc3\x89", 2, true},
    {"(?i)\xcf\x83", "\xcf\x82", 2, true},
    {"(?i)\xd0\xaf", "\xd1\x8f", 2, true},
    {"(?i)\xc3\x9f", "ss", 2, false},
    {"(?i)[a-z]+$", "HeLLo", 5, true},
    {"(?-i)a", "A", 1, false},
    {"(?i)(?-i)a", "A", 1, false},
    {"(?i-s).", "\n", 1, false},
    {"(?is).", "\n", 1, true},
    {"[^a]", "a", 1, false},
    {"[^a]", "b", 1, true},
    {"[^a]", "\n", 1, true},
    {"[]a]", "]", 1, true},
    {"[a-]", "-", 1, true},
    {"[\\d]", "5", 1, true},
    {"[^\\d]", "5", 1, false},
    {"[\\D]", "x", 1, true},
    {"[[:alpha:]]+$", "abc1", 4, false},
    {"^[[:alpha:]]+$", "abc", 3, true},
    {"[[:^alpha:]]", "abc", 3, false},
    {"[[:digit:][:upper:]]", "aX", 2, true},
    {"[[:space:]]", "\x0b", 1, true},
    {"\\s", "\x0b", 1, false},
    {"\\s", "\x0c", 1, true},
    {"[[:punct:]]", "a~", 2, true},
    {"[[:word:]]", "-_", 2, true},
    {"[[:xdigit:]]+$", "0fA", 3, true},
    {"[a-c[:digit:]]", "9", 1, true},
    {"[\\]]", "]", 1, true},
    {"[\\-a]", "-", 1, true},
    {"[\\\\]", "\\", 1, true},
    {"[.]", "a", 1, false},
    {"[.]", ".", 1, true},
    {"\\d+", "abc123", 6, true},
    {"\\D", "123", 3, false},
    {"\\w+", "!!", 2, false},
    {"\\W", "a_1", 3, false},
    {"\\S", " \t", 2, false},
    {"\\.", "a", 1, false},
    {"\\.", ".", 1, true},
    {"\\\\", "\\", 1, true},
    {"\\t", "\t", 1, true},
    {"\\n", "\n", 1, true},
    {"\\x41", "A", 1, true},
    {"\\x{263a}", "\xe2\x98\xba", 3, true},
    {"\\101", "A", 1, true},
    {"\\0", "\x00", 1, true},
    {"\\a\\f\\v\\r", "\x07\x0c\x0b\x0d", 4, true},
    {"\\Q.*\\E", ".*", 2, true},
    {"\\Q.*\\E", "ab", 2, false},
    {"\\Qab", "ab", 2, true},
    {"a\\Q\\E*", "aaa", 3, true},
    {"\\bfoo\\b", "a foo b", 7, true},
    {"\\bfoo\\b", "afoo", 4, false},
    {"\\Bfoo", "afoo", 4, true},
    {"\\Bfoo", "foo", 3, false},
    {"\\b", "", 0, false},
    {"\\B", "", 0, true},
    {"\\b", "a", 1, true},
    {"(a|b)*c", "ababc", 5, true},
    {"(a|b)*c", "abab", 4, false},
    {"a|b|", "x", 1, true},
    {"x(a|)y", "xy", 2, true},
    {"(?:ab)+$", "ababab", 6, true},
    {"^(?:ab)+$", "ababa", 5, false},
    {"(?P<x>a)b", "ab", 2, true},
    {"a*", "b", 1, true},
    {"a+", "b", 1, false},
    {"a?b", "b", 1, true},
    {"a*?b", "aab", 3, true},
    {"a+?", "a", 1, true},
    {"a??", "", 0, true},
    {"a{2}", "a", 1, false},
    {"a{2}", "aa", 2, true},
    {"^a{2}$", "aaa", 3, false},
    {"^a{2,}$", "aaaa", 4, true},
    {"^a{2,3}$", "aaaa", 4, false},
    {"^a{0}$", "", 0, true},
    {"^a{0,1}$", "a", 1, true},
    {"^(ab){1,2}$", "ababab", 6, false},
    {"a{,2}", "a{,2}", 5, true},
    {"a{", "a{", 2, true},
    {"{", "{", 1, true},
    {"a{01}", "a{01}", 5, true},
    {"^a{2}?$", "aa", 2, true},
    {"x{1000}", "x", 1, false},
    {"^(a{2}){3}$", "aaaaaa", 6, true},
    {"^(a{2}){3}$", "aaaaa", 5, false},
    {"(|a)*b", "aab", 3, true},
    {"(a*)*$", "b", 1, true},
    {"(a*)+b", "xb", 2, true},
    {"^*a", "a", 1, true},
    {"\\b+a", "a", 1, true},
    {".", "\xff", 1, true},
    {"^.$", "\xff", 1, true},
    {"^.$", "\xc3\xa9", 2, true},
    {"^..$", "\xc3\xa9", 2, false},
    {"^\\x{fffd}$", "\xff", 1, true},
    {"^[^a]$", "\xc3\xa9", 2, true},
    {"^[\xc3\xa0-\xc3\xbf]$", "\xc3\xa9", 2, true},
    {"^[^\xc3\xa0-\xc3\xbf]$", "\xc3\xa9", 2, false},
    {"^.$", "\xe2\x98", 2, false},
    {"^..$", "\xe2\x98", 2, true},
    {"^.$", "\xed\xa0\x80", 3, false},
    {"^...$", "\xed\xa0\x80", 3, true},
    {"^.$", "\xf0\x9f\x98\x80", 4, true},
    {"\xc3\xa9", "caf\xc3\xa9", 5, true},
    {"^caf.$", "caf\xc3\xa9", 5, true},
    {"nginx|busybox", "docker.io/library/busybox:1", 27, true},
    {"^docker\\.io/", "docker.io/x", 11, true},
    {"busybox:[0-9]+$", "docker.io/library/busybox:1", 27, true},
    {"a\\x00b",
     "a\x00"
     "b",
     3, true},
};

typedef struct {
    const char *pattern, *error;
} error_case_t;

/* Go's messages without the "error parsing regexp: " prefix. */
static const error_case_t errors[] = {
    {"(", "missing closing ): `(`"},
    {")", "unexpected ): `)`"},
    {"a)", "unexpected ): `a)`"},
    {"(a", "missing closing ): `(a`"},
    {"[a", "missing closing ]: `[a`"},
    {"[a-", "missing closing ]: `[a-`"},
    {"[]", "missing closing ]: `[]`"},
    {"[z-a]", "invalid character class range: `z-a`"},
    {"*", "missing argument to repetition operator: `*`"},
    {"a**", "invalid nested repetition operator: `**`"},
    {"a*+", "invalid nested repetition operator: `*+`"},
    {"a{2}{3}", "invalid nested repetition operator: `{2}{3}`"},
    {"a*?*", "invalid nested repetition operator: `*?*`"},
    {"+a", "missing argument to repetition operator: `+`"},
    {"(*)", "missing argument to repetition operator: `*`"},
    {"a|*", "missing argument to repetition operator: `*`"},
    {"(?i)*", "missing argument to repetition operator: `*`"},
    {"\\1", "invalid escape sequence: `\\1`"},
    {"(a)\\1", "invalid escape sequence: `\\1`"},
    {"\\8", "invalid escape sequence: `\\8`"},
    {"\\", "trailing backslash at end of expression"},
    {"a\\", "trailing backslash at end of expression"},
    {"\\C", "invalid escape sequence: `\\C`"},
    {"\\Z", "invalid escape sequence: `\\Z`"},
    {"\\e", "invalid escape sequence: `\\e`"},
    {"\\x", "invalid escape sequence: `\\x`"},
    {"\\x{}", "invalid escape sequence: `\\x{}`"},
    {"\\x{110000}", "invalid escape sequence: `\\x{110000`"},
    {"\\xg0", "invalid escape sequence: `\\xg0`"},
    {"(?=a)", "invalid or unsupported Perl syntax: `(?=`"},
    {"(?!a)", "invalid or unsupported Perl syntax: `(?!`"},
    {"(?<=a)", "invalid or unsupported Perl syntax: `(?<`"},
    {"(?<!a)", "invalid or unsupported Perl syntax: `(?<`"},
    {"(?P=n)", "invalid or unsupported Perl syntax: `(?P`"},
    {"(?x)", "invalid or unsupported Perl syntax: `(?x`"},
    {"(?", "invalid or unsupported Perl syntax: `(?`"},
    {"(?-)", "invalid or unsupported Perl syntax: `(?-)`"},
    {"(?i-)", "invalid or unsupported Perl syntax: `(?i-)`"},
    {"(?P<>a)", "invalid named capture: `(?P<>`"},
    {"(?P<a-b>a)", "invalid named capture: `(?P<a-b>`"},
    {"(?P<a", "invalid named capture: `(?P<a`"},
    {"a{1001}", "invalid repeat count: `{1001}`"},
    {"a{2,1}", "invalid repeat count: `{2,1}`"},
    {"(a{2}){501}", "invalid repeat count: `{501}`"},
    {"(a{999}){999}", "invalid repeat count: `{999}`"},
    {"a{1000}{2}", "invalid nested repetition operator: `{1000}{2}`"},
    {"[[:foo:]]", "invalid character class range: `[:foo:]`"},
    {"\xff", "invalid UTF-8: `\xff`"},
    {"a++", "invalid nested repetition operator: `++`"},
    {"x{100000000000}", "invalid repeat count: `{100000000000}`"},
    {"(?i)(?", "invalid or unsupported Perl syntax: `(?`"},
    {"[a-\\d]", "invalid escape sequence: `\\d`"},
};

static meta_re_t *compile_ok(const char *pattern)
{
    meta_re_t *re = NULL;
    berth_error_t *err = NULL;
    if (meta_re_compile(pattern, strlen(pattern), &re, &err) < 0)
        fail_msg("compile \"%s\": %s", pattern, err->message);
    return re;
}

static void test_match_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(matches) / sizeof(matches[0]); i++) {
        const match_case_t *c = &matches[i];
        meta_re_t *re = compile_ok(c->pattern);
        size_t steps = 0;
        bool got = meta_re_match(re, c->text, c->len, &steps);
        if (got != c->want)
            fail_msg("case %zu: /%s/ on \"%.*s\": got %s, want %s (as Go)", i, c->pattern,
                     (int)c->len, c->text, got ? "match" : "no match",
                     c->want ? "match" : "no match");
        /* The linear bound: at most 2 steps per instruction and position. */
        assert_true(steps <= 2 * meta_re_size(re) * (c->len + 1));
        /* Scratch reuse: a second run gives the same answer. */
        assert_int_equal(meta_re_match(re, c->text, c->len, NULL), got);
        meta_re_free(re);
    }
}

static void test_error_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        const error_case_t *c = &errors[i];
        meta_re_t *re = NULL;
        berth_error_t *err = NULL;
        if (meta_re_compile(c->pattern, strlen(c->pattern), &re, &err) == 0)
            fail_msg("/%s/ compiled; Go says: %s", c->pattern, c->error);
        assert_null(re);
        assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
        if (strcmp(err->message, c->error) != 0)
            fail_msg("/%s/: error \"%s\", Go says \"%s\"", c->pattern, err->message, c->error);
        berth_error_free(&err);
    }
}

static void expect_error(const char *pattern, size_t len, const char *substr)
{
    meta_re_t *re = NULL;
    berth_error_t *err = NULL;
    if (meta_re_compile(pattern, len, &re, &err) == 0)
        fail_msg("/%s/ compiled, expected an error with \"%s\"", pattern, substr);
    if (!strstr(err->message, substr))
        fail_msg("/%s/: error \"%s\" lacks \"%s\"", pattern, err->message, substr);
    berth_error_free(&err);
}

/* What Go accepts and we refuse, or limits of ours. */
static void test_unsupported(void **state)
{
    (void)state;
    expect_error("\\pL", 3, "Unicode character classes (\\p, \\P) are not supported: `\\pL`");
    expect_error("[\\p{Greek}]", 11, "not supported: `\\p{Greek}`");
    expect_error("\\PN", 3, "not supported");
    /* Program size: [a-z]{1000} is 1000 instructions, the final MATCH 1
     * more (Go allows more). */
    expect_error("[a-z]{1000}[a-z]{1000}", 22, "expression too large (more than 2000 instructions");
    expect_error("(?:(?:a{10}){10}){10}(?:(?:a{10}){10}){10}", 42, "expression too large");
    meta_re_t *ok = compile_ok("[a-z]{1000}[a-z]{999}");
    assert_int_equal(meta_re_size(ok), META_RE_MAX_INST);
    meta_re_free(ok);
    /* A folded, negated class 1000 times (the copies share one table). */
    ok = compile_ok("(?i)[^\\x{100}-\\x{17f}]{1000}");
    assert_true(meta_re_match(ok, "", 0, NULL) == false);
    meta_re_free(ok);
    /* Nesting. */
    char deep[2 * META_RE_MAX_DEPTH + 8];
    size_t n = 0;
    for (int i = 0; i < META_RE_MAX_DEPTH + 1; i++)
        deep[n++] = '(';
    for (int i = 0; i < META_RE_MAX_DEPTH + 1; i++)
        deep[n++] = ')';
    deep[n] = 0;
    expect_error(deep, n, "expression nests too deeply");
    meta_re_free(compile_ok("((((((((((((((((((((a))))))))))))))))))))"));
    /* A NUL in the pattern is a literal (the length is explicit). */
    meta_re_t *re = NULL;
    berth_error_t *err = NULL;
    assert_int_equal(meta_re_compile("a\0b", 3, &re, &err), 0);
    assert_true(meta_re_match(re, "xa\0b", 4, NULL));
    assert_false(meta_re_match(re, "ab", 2, NULL));
    meta_re_free(re);
    /* Long offending parts are cut in messages. */
    char big[201];
    memset(big, 'a', sizeof(big) - 1);
    big[0] = '(';
    big[200] = 0;
    expect_error(big, 200, "missing closing ): `(aaaaaaaa");
    expect_error(big, 200, "aaa...`");
}

/* Deterministic pseudo-random a/b text (xorshift). */
static void random_ab(char *t, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        t[i] = (seed >> 7) & 1 ? 'a' : 'b';
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* glibc's regexec took 1.6-2 s for this one on a 4 KiB text (its lazy DFA
 * has 2^31 states here); a Pike VM is bounded by text x program. */
static void test_pathological_linear(void **state)
{
    (void)state;
    static const char *const pats[] = {
        "(a|b)*a(a|b){30}c", "(a|b)*a(a|b){30}$", /* matches: the 31st byte from the end is an 'a'
                                                   */
        "(a*)*b(a*)*c",      "(?:a?){500}a{500}c", "(x+x+)+y", "^(a|aa)+$", "(.*){20}c",
    };
    enum { LEN = 4096 };
    static char text[LEN];
    random_ab(text, LEN, 12345);
    text[LEN - 31] = 'a';
    for (size_t i = 0; i < sizeof(pats) / sizeof(pats[0]); i++) {
        meta_re_t *re = compile_ok(pats[i]);
        size_t steps = 0;
        double t0 = now();
        bool m = meta_re_match(re, text, LEN, &steps);
        double dt = now() - t0;
        size_t bound = 2 * meta_re_size(re) * (LEN + 1);
        if (steps > bound)
            fail_msg("/%s/: %zu steps, bound %zu", pats[i], steps, bound);
        /* Generous: ~10 ms on a laptop, allow for sanitizers and load. */
        if (dt > 1.0)
            fail_msg("/%s/ on 4 KiB took %.3f s", pats[i], dt);
        assert_int_equal(m, i == 1);
        meta_re_free(re);
    }
    /* The first one, timed over 16 KiB: steps grow linearly with the text. */
    meta_re_t *re = compile_ok("(a|b)*a(a|b){30}c");
    static char big[4 * LEN];
    random_ab(big, sizeof(big), 777);
    size_t s1 = 0, s4 = 0;
    meta_re_match(re, big, LEN, &s1);
    meta_re_match(re, big, sizeof(big), &s4);
    if (s4 > 5 * s1)
        fail_msg("4x the text took %zu steps, 1x took %zu: not linear", s4, s1);
    meta_re_free(re);
}

/* The anchored shortcut stops at the first position; an unanchored one
 * tries every position. */
static void test_anchored(void **state)
{
    (void)state;
    static char text[10000];
    memset(text, 'x', sizeof(text));
    meta_re_t *re = compile_ok("^ab|\\Acd");
    size_t steps = 0;
    assert_false(meta_re_match(re, text, sizeof(text), &steps));
    assert_true(steps < 20);
    meta_re_free(re);
    re = compile_ok("(?m)^ab");
    assert_false(meta_re_match(re, text, sizeof(text), &steps));
    assert_true(steps >= sizeof(text));
    memcpy(text + 500, "\nab", 3);
    assert_true(meta_re_match(re, text, sizeof(text), NULL));
    meta_re_free(re);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_table), cmocka_unit_test(test_error_table),
        cmocka_unit_test(test_unsupported), cmocka_unit_test(test_pathological_linear),
        cmocka_unit_test(test_anchored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
