/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: what a registry sends for authentication
 * (plugins/transfer/auth.c): the WWW-Authenticate header, the token realm it
 * names (http(s) only, never link-local), Location headers resolved against
 * it, and the token endpoint's JSON answer. The whole input is the header
 * and, separately, the token response. Checks: at most `max` challenges, each
 * with a lower-case scheme; a realm that passes the check has an http(s)
 * scheme and a host; a token holds only header-safe characters. */
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
