/* SPDX-License-Identifier: Apache-2.0 */
/* A small linear-time regular expression matcher for list filters (`~=`):
 * the RE2 syntax of Go's regexp (what containerd uses), compiled to a
 * Thompson NFA and run as a Pike VM without captures, so a match costs at
 * most O(len(text) x program size) whatever the pattern. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "berth/error.h"

/* Limits. Repeat counts are Go's ({n,m} up to 1000; nested ones may
 * multiply to at most 1000). Go has no small bound on the program, we do:
 * a match costs up to (instructions x text length) steps of a few ns, and
 * list filters run on the metadata plugin's loop, so one regex compiles to
 * at most META_RE_MAX_INST instructions (about one per literal or class,
 * two per optional copy: `[a-z]{1000}` is 1001, `.{0,999}` 1999), which
 * bounds a match on a 4 KiB label value to roughly 40 ms. */
enum {
    META_RE_MAX_REPEAT = 1000,
    META_RE_MAX_DEPTH = 250,
    META_RE_MAX_INST = 2000,
};

typedef struct meta_re_s meta_re_t;

/** Compiles pattern[0..len) (Go regexp syntax; must be valid UTF-8). On a
 * syntax error or a limit: invalid_argument with Go's wording, e.g.
 * "missing closing ): `(ab`" or "invalid escape sequence: `\1`". The caller
 * frees *out with meta_re_free(). */
int meta_re_compile(const char *pattern, size_t len, meta_re_t **out, berth_error_t **err);

/** True if the regex matches anywhere in text[0..len) (unanchored, like
 * Go's MatchString; text is UTF-8, an invalid byte reads as U+FFFD). Does
 * not allocate: it uses scratch space sized by meta_re_compile, so one
 * compiled regex must not be matched from two threads at once. If steps is
 * non-NULL it receives the number of NFA thread steps taken (tests use it to
 * check the linear bound). */
bool meta_re_match(meta_re_t *re, const char *text, size_t len, size_t *steps);

/** Number of instructions in the compiled program. */
size_t meta_re_size(const meta_re_t *re);

void meta_re_free(meta_re_t *re);
