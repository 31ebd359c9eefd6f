/* SPDX-License-Identifier: Apache-2.0 */
/* Registry authentication helpers: WWW-Authenticate parsing (RFC 7235),
 * token realm checks (http(s) only, never link-local: a registry must not
 * send us to a cloud metadata endpoint), token responses, URL helpers,
 * Retry-After. */
#include <arpa/inet.h>
#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static bool tchar(char c)
{
    return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+.^_`|~-/", c));
}

static char *dupn(const char *s, size_t n)
{
    char *r = malloc(n + 1);
    if (!r)
        abort();
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

void xfer_challenge_clear(xfer_challenge_t *c)
{
    free(c->scheme);
    free(c->realm);
    free(c->service);
    free(c->scope);
    memset(c, 0, sizeof(*c));
}

static void skip_ws(const char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
}

int xfer_auth_parse(const char *header, xfer_challenge_t *out, size_t max, berth_error_t **err)
{
    const char *p = header;
    int n = 0;
    if (strlen(header) > 8192)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "WWW-Authenticate header too long");
    for (size_t i = 0; i < max; i++)
        memset(&out[i], 0, sizeof(out[i]));
    xfer_challenge_t *cur = NULL;
    while (*p) {
        skip_ws(&p);
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *tok = p;
        while (tchar(*p) && *p != '/')
            p++;
        size_t tl = (size_t)(p - tok);
        if (tl == 0)
            goto bad;
        const char *after = p;
        skip_ws(&p);
        if (*p != '=') {
            /* A new challenge: "Scheme" followed by params or nothing. */
            if ((size_t)n >= max) {
                cur = NULL; /* ignore extra challenges but keep parsing */
            } else {
                cur = &out[n++];
                cur->scheme = dupn(tok, tl);
                for (char *c = cur->scheme; *c; c++)
                    *c = (char)tolower((unsigned char)*c);
            }
            p = after;
            continue;
        }
        if (n == 0)
            goto bad;
        p++; /* '=' */
        skip_ws(&p);
        char *val = NULL;
        if (*p == '"') {
            p++;
            size_t cap = strlen(p) + 1, l = 0;
            val = malloc(cap);
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                val[l++] = *p++;
            }
            if (*p != '"') {
                free(val);
                goto bad;
            }
            p++;
            val[l] = 0;
        } else {
            const char *v = p;
            while (tchar(*p) || *p == '=' || *p == ':' || *p == '/')
                p++;
            val = dupn(v, (size_t)(p - v));
        }
        char **slot = NULL;
        if (cur) {
            if (tl == 5 && strncasecmp(tok, "realm", 5) == 0)
                slot = &cur->realm;
            else if (tl == 7 && strncasecmp(tok, "service", 7) == 0)
                slot = &cur->service;
            else if (tl == 5 && strncasecmp(tok, "scope", 5) == 0)
                slot = &cur->scope;
        }
        if (slot) {
            free(*slot);
            *slot = val;
        } else {
            free(val);
        }
        skip_ws(&p);
        if (*p && *p != ',')
            goto bad;
    }
    return n;
bad:
    for (int i = 0; i < n; i++)
        xfer_challenge_clear(&out[i]);
    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "malformed WWW-Authenticate header");
}

bool xfer_ip_link_local(const char *ip)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        uint32_t v = ntohl(a4.s_addr);
        return (v & 0xffff0000u) == 0xa9fe0000u; /* 169.254.0.0/16 */
    }
    if (inet_pton(AF_INET6, ip, &a6) == 1) {
        const uint8_t *b = a6.s6_addr;
        if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
            return true; /* fe80::/10 */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(b, mapped, 12) == 0 && b[12] == 169 && b[13] == 254)
            return true;
    }
    return false;
}

char *xfer_url_hostport(const char *url)
{
    const char *s = strstr(url, "://");
    if (!s)
        return NULL;
    s += 3;
    size_t n = strcspn(s, "/?#");
    const char *at = memchr(s, '@', n);
    if (at) {
        n -= (size_t)(at + 1 - s);
        s = at + 1;
    }
    if (n == 0)
        return NULL;
    char *h = dupn(s, n);
    for (char *c = h; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    return h;
}

/* The host of a "host[:port]" or "[v6]:port" string, without brackets. */
static char *host_only(const char *hp)
{
    if (hp[0] == '[') {
        const char *e = strchr(hp, ']');
        return e ? dupn(hp + 1, (size_t)(e - hp - 1)) : NULL;
    }
    const char *c = strrchr(hp, ':');
    return dupn(hp, c ? (size_t)(c - hp) : strlen(hp));
}

int xfer_realm_check(const char *url, berth_error_t **err)
{
    if (strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "http://", 7) != 0)
        return berth_error_set(err, BERTH_E_PERMISSION_DENIED,
                               "registry token realm \"%.200s\" is not an http(s) URL", url);
    char *hp = xfer_url_hostport(url);
    char *h = hp ? host_only(hp) : NULL;
    free(hp);
    if (!h || !*h) {
        free(h);
        return berth_error_set(err, BERTH_E_PERMISSION_DENIED,
                               "registry token realm \"%.200s\" has no host", url);
    }
    bool ll = xfer_ip_link_local(h);
    free(h);
    if (ll)
        return berth_error_set(err, BERTH_E_PERMISSION_DENIED,
                               "registry token realm \"%.200s\" points to a link-local address",
                               url);
    return 0;
}

int xfer_token_parse(const void *buf, size_t len, char **token, uint64_t *expires_in,
                     berth_error_t **err)
{
    if (len > XFER_MAX_SMALL_JSON)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "token response too large");
    json_error_t je;
    json_t *root = json_loadb(buf, len, 0, &je);
    if (!json_is_object(root)) {
        json_decref(root);
        return berth_error_set(err, BERTH_E_PERMISSION_DENIED,
                               "registry token endpoint did not answer with a JSON object");
    }
    const json_t *t = json_object_get(root, "token");
    if (!json_is_string(t) || !*json_string_value(t))
        t = json_object_get(root, "access_token");
    if (!json_is_string(t) || !*json_string_value(t) || strlen(json_string_value(t)) > 65536) {
        json_decref(root);
        return berth_error_set(err, BERTH_E_PERMISSION_DENIED,
                               "registry token endpoint returned no token");
    }
    for (const char *c = json_string_value(t); *c; c++)
        if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e) {
            json_decref(root);
            return berth_error_set(err, BERTH_E_PERMISSION_DENIED,
                                   "registry token holds characters not allowed in a header");
        }
    *token = strdup(json_string_value(t));
    const json_t *e = json_object_get(root, "expires_in");
    *expires_in =
        json_is_integer(e) && json_integer_value(e) > 0 ? (uint64_t)json_integer_value(e) : 60;
    json_decref(root);
    return 0;
}

char *xfer_base64(const void *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out)
        abort();
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

char *xfer_url_escape(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out)
        abort();
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (isalnum(*c) || strchr("-._~", *c))
            *o++ = (char)*c;
        else
            o += sprintf(o, "%%%02X", *c);
    }
    *o = 0;
    return out;
}

char *xfer_url_resolve(const char *base, const char *loc)
{
    char *r = NULL;
    if (strstr(loc, "://")) {
        r = strdup(loc);
    } else if (loc[0] == '/' && loc[1] == '/') {
        const char *e = strstr(base, "://");
        if (asprintf(&r, "%.*s:%s", e ? (int)(e - base) : 5, e ? base : "https", loc) < 0)
            r = NULL;
    } else if (loc[0] == '/') {
        const char *e = strstr(base, "://");
        size_t origin = e ? (size_t)(e - base) + 3 + strcspn(e + 3, "/?#") : strlen(base);
        if (asprintf(&r, "%.*s%s", (int)origin, base, loc) < 0)
            r = NULL;
    } else {
        const char *e = strstr(base, "://");
        size_t pathstart = e ? (size_t)(e - base) + 3 + strcspn(e + 3, "/?#") : 0;
        size_t q = pathstart + strcspn(base + pathstart, "?#");
        size_t slash = q;
        while (slash > pathstart && base[slash - 1] != '/')
            slash--;
        if (slash == pathstart) {
            if (asprintf(&r, "%.*s/%s", (int)pathstart, base, loc) < 0)
                r = NULL;
        } else if (asprintf(&r, "%.*s%s", (int)slash, base, loc) < 0) {
            r = NULL;
        }
    }
    return r;
}

uint64_t xfer_retry_after_ms(const char *value, uint64_t fallback_ms, uint64_t cap_ms)
{
    uint64_t d = fallback_ms;
    if (value) {
        const char *p = value;
        skip_ws(&p);
        /* Digits only: strtoul would take "-1" as ULONG_MAX, and s * 1000
         * wrapped for s >= 2^64/1000 (2^61 s became a 0 ms delay). */
        uint64_t s = 0;
        bool big = false;
        const char *q = p;
        for (; isdigit((unsigned char)*q); q++) {
            if (s > (UINT64_MAX - 9) / 10)
                big = true;
            else
                s = s * 10 + (uint64_t)(*q - '0');
        }
        const char *e = q;
        skip_ws(&e);
        if (q != p && !*e && (big || s > 0))
            d = big || s > UINT64_MAX / 1000 ? UINT64_MAX : s * 1000;
    }
    return d > cap_ms ? cap_ms : d;
}
