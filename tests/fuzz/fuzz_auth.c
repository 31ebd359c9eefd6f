/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: what a registry sends for authentication
 * (plugins/transfer/auth.c): the WWW-Authenticate header, the token realm it
 * names (http(s) only, never link-local), Location headers resolved against
 * it, the token endpoint's JSON answer and a Retry-After value. The whole
 * input is each of them in turn. Checks: at most `max` challenges, each
 * with a lower-case scheme; a realm that passes the check has an http(s)
 * scheme and a host; a token holds only header-safe characters; a
 * Retry-After delay is never above the cap and, for delay-seconds, is the
 * exact product (no wrap: "2305843009213693952" once became 0 ms). */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../plugins/transfer/internal.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_auth: check failed: %s (line %d)\n", #cond, __LINE__);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_CH 4

/* Retry-After against an independent 128-bit computation. */
static void retry_after(const char *s)
{
    const uint64_t fallback = 777;
    const uint64_t caps[] = {10000, UINT64_MAX};
    const char *p = s;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t nd = strspn(p, "0123456789");
    const char *e = p + nd;
    while (*e == ' ' || *e == '\t')
        e++;
    unsigned __int128 v = 0;
    bool plain = nd > 0 && !*e;
    for (size_t i = 0; plain && i < nd; i++) {
        v = v * 10 + (unsigned)(p[i] - '0');
        if (v > UINT64_MAX)
            v = (unsigned __int128)UINT64_MAX + 1; /* saturate: "too big" */
    }
    for (size_t c = 0; c < 2; c++) {
        uint64_t cap = caps[c];
        uint64_t got = xfer_retry_after_ms(s, fallback, cap);
        CHECK(got <= cap);
        unsigned __int128 want = plain && v > 0 ? v * 1000 : fallback;
        if (want > cap)
            want = cap;
        if (got != (uint64_t)want) {
            fprintf(stderr, "fuzz_auth: Retry-After \"%.60s\" cap %llu gave %llu ms, want %llu\n",
                    s, (unsigned long long)cap, (unsigned long long)got, (unsigned long long)want);
            abort();
        }
    }
}

static void realm_checks(const char *realm, const char *loc)
{
    berth_error_t *err = NULL;
    if (xfer_realm_check(realm, &err) == 0) {
        CHECK(strncasecmp(realm, "http://", 7) == 0 || strncasecmp(realm, "https://", 8) == 0);
        char *hp = xfer_url_hostport(realm);
        CHECK(hp && *hp);
        free(hp);
    } else {
        CHECK(err && err->code == BERTH_E_PERMISSION_DENIED);
    }
    berth_error_free(&err);
    char *u = xfer_url_resolve(realm, loc);
    free(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;

    xfer_challenge_t ch[MAX_CH];
    berth_error_t *err = NULL;
    int n = xfer_auth_parse(s, ch, MAX_CH, &err);
    if (n >= 0) {
        CHECK(n <= MAX_CH);
        for (int i = 0; i < n; i++) {
            CHECK(ch[i].scheme && *ch[i].scheme);
            for (const char *c = ch[i].scheme; *c; c++)
                CHECK(!isupper((unsigned char)*c));
            if (ch[i].realm) {
                realm_checks(ch[i].realm, ch[i].scope ? ch[i].scope : "/v2/");
                char *esc = xfer_url_escape(ch[i].realm);
                for (const char *c = esc; *c; c++)
                    CHECK(isalnum((unsigned char)*c) || strchr("-._~%", *c));
                free(esc);
            }
            xfer_challenge_clear(&ch[i]);
        }
    } else {
        CHECK(err && err->message);
    }
    berth_error_free(&err);

    /* The input as a URL on its own, and as a Location against a base. */
    realm_checks(s, "https://other.example/x");
    char *u = xfer_url_resolve("https://registry.example:5000/v2/a/b/blobs/uploads/?x=1", s);
    free(u);
    xfer_ip_link_local(s);
    retry_after(s);

    char *tok = NULL;
    uint64_t exp = 0;
    if (xfer_token_parse(data, size, &tok, &exp, &err) == 0) {
        CHECK(tok && *tok && exp > 0);
        for (const char *c = tok; *c; c++)
            CHECK((unsigned char)*c >= 0x21 && (unsigned char)*c <= 0x7e);
        free(tok);
    }
    berth_error_free(&err);

    char *b64 = xfer_base64(data, size < 4096 ? size : 4096);
    free(b64);
    free(s);
    return 0;
}
