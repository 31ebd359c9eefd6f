/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: the linear-time regex engine behind `~=` filters
 * (plugins/metadata/re.c). Input: a pattern, then (after the first NUL, if
 * any) a text to search. Checks: a refused pattern gives invalid_argument
 * with a message; a match takes at most 2 x program size steps per byte (the
 * linear bound the engine promises) and the same answer twice (the scratch
 * space is reused); grouping the pattern, or adding an alternative that
 * cannot match, gives the same answer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/metadata/re.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_re: check failed: %s (line %d)\n", #cond, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Compiles pattern (with a prefix and a suffix around it) and matches. */
static int run(const char *pre, const uint8_t *pat, size_t plen, const char *post,
               const uint8_t *text, size_t tlen, bool *matched)
{
    size_t a = strlen(pre), b = strlen(post);
    char *p = malloc(a + plen + b + 1);
    memcpy(p, pre, a);
    memcpy(p + a, pat, plen);
    memcpy(p + a + plen, post, b);
    meta_re_t *re = NULL;
    berth_error_t *err = NULL;
    int rc = meta_re_compile(p, a + plen + b, &re, &err);
    free(p);
    if (rc < 0) {
        CHECK(!re && err && err->message[0]);
        CHECK(err->code == BERTH_E_INVALID_ARGUMENT || err->code == BERTH_E_RESOURCE_EXHAUSTED);
        berth_error_free(&err);
        return -1;
    }
    size_t steps = 0;
    *matched = meta_re_match(re, (const char *)text, tlen, &steps);
    CHECK(steps <= 2 * meta_re_size(re) * (tlen + 1));
    CHECK(meta_re_match(re, (const char *)text, tlen, NULL) == *matched);
    meta_re_free(re);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    const uint8_t *nul = memchr(data, 0, size);
    size_t plen = nul ? (size_t)(nul - data) : size;
    const uint8_t *text = nul ? nul + 1 : (const uint8_t *)"";
    size_t tlen = nul ? size - plen - 1 : 0;
    bool m = false, m2 = false;
    if (run("", data, plen, "", text, tlen, &m) < 0)
        return 0;
    /* A pattern that compiles still does inside a group (unless it now is
     * too large or too deep), with the same result; so does P|[^\x00-\x{10FFFF}].
     * Not after an unterminated \Q, which would quote what follows. */
    for (size_t i = 0; i + 1 < plen; i++)
        if (data[i] == '\\' && data[i + 1] == 'Q')
            return 0;
    if (run("(?:", data, plen, ")", text, tlen, &m2) == 0)
        CHECK(m2 == m);
    if (run("", data, plen, "|[^\\x00-\\x{10FFFF}]", text, tlen, &m2) == 0)
        CHECK(m2 == m);
    return 0;
}
