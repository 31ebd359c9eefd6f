/* SPDX-License-Identifier: Apache-2.0 */
/* Image references as users type them, normalized like docker/containerd do:
 * `busybox` → docker.io/library/busybox:latest. Follows the grammar of the
 * distribution reference package (domain, path components, tag, digest). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAX_NAME 255
#define MAX_TAG 128

static char *dupn(const char *s, size_t n)
{
    char *r = malloc(n + 1);
    if (!r)
        abort();
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

bool xfer_digest_valid_n(const char *s, size_t n)
{
    if (n != 7 + 64 || strncmp(s, "sha256:", 7) != 0)
        return false;
    for (size_t i = 7; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

bool xfer_digest_valid(const char *s)
{
    return s && xfer_digest_valid_n(s, strlen(s));
}

static bool lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )* */
static bool component_valid(const char *s, size_t n)
{
    if (n == 0 || !lower_alnum(s[0]) || !lower_alnum(s[n - 1]))
        return false;
    size_t i = 0;
    while (i < n) {
        if (lower_alnum(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        if (s[i] == '.') {
            j++;
        } else if (s[i] == '_') {
            j++;
            if (j < n && s[j] == '_')
                j++;
        } else if (s[i] == '-') {
            while (j < n && s[j] == '-')
                j++;
        } else {
            return false;
        }
        if (j >= n || !lower_alnum(s[j]))
            return false;
        i = j;
    }
    return true;
}

/* domain := label ("." label)* [":" port] | "[" ipv6 "]" [":" port] */
static bool domain_valid(const char *s, size_t n)
{
    if (n == 0)
        return false;
    size_t hostlen = n;
    const char *colon = NULL;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return false;
        for (const char *p = s + 1; p < close; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return false;
        hostlen = (size_t)(close - s) + 1;
        if (hostlen < n) {
            if (s[hostlen] != ':')
                return false;
            colon = s + hostlen;
        }
    } else {
        colon = memchr(s, ':', n);
        if (colon)
            hostlen = (size_t)(colon - s);
        /* labels of [a-zA-Z0-9-], not starting or ending with '-' */
        size_t start = 0;
        for (size_t i = 0; i <= hostlen; i++) {
            if (i == hostlen || s[i] == '.') {
                size_t l = i - start;
                if (l == 0 || s[start] == '-' || s[i - 1] == '-')
                    return false;
                start = i + 1;
                continue;
            }
            if (!isalnum((unsigned char)s[i]) && s[i] != '-')
                return false;
        }
    }
    if (colon) {
        size_t pl = n - (size_t)(colon - s) - 1;
        if (pl == 0 || pl > 5)
            return false;
        for (size_t i = 1; i <= pl; i++)
            if (!isdigit((unsigned char)colon[i]))
                return false;
    }
    return true;
}

static bool tag_valid(const char *s, size_t n)
{
    if (n == 0 || n > MAX_TAG)
        return false;
    if (!(isalnum((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-'))
            return false;
    return true;
}

void xfer_ref_clear(xfer_ref_t *r)
{
    free(r->domain);
    free(r->path);
    free(r->tag);
    free(r->digest);
    memset(r, 0, sizeof(*r));
}

#define BAD(...) berth_error_set(err, BERTH_E_INVALID_ARGUMENT, __VA_ARGS__)

int xfer_ref_parse(const char *s, xfer_ref_t *out, berth_error_t **err)
{
    memset(out, 0, sizeof(*out));
    if (!s || !*s)
        return BAD("invalid reference: empty");
    size_t len = strlen(s);
    if (len > 4096)
        return BAD("invalid reference: longer than 4096 bytes");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return BAD("invalid reference \"%.*s\": contains whitespace or control characters",
                       (int)(len > 200 ? 200 : len), s);

    const char *at = strchr(s, '@');
    size_t name_len = at ? (size_t)(at - s) : len;
    if (at) {
        const char *d = at + 1;
        if (strncmp(d, "sha256:", 7) != 0)
            return BAD("invalid reference \"%s\": unsupported digest algorithm (only sha256)", s);
        if (!xfer_digest_valid(d))
            return BAD(
                "invalid reference \"%s\": digest must be sha256: and 64 lowercase hex digits", s);
    }
    if (name_len == 0)
        return BAD("invalid reference \"%s\": missing repository name", s);

    /* Split the tag: a ':' after the last '/'. */
    const char *name = s;
    const char *last_slash = NULL;
    for (const char *p = name; p < name + name_len; p++)
        if (*p == '/')
            last_slash = p;
    const char *tag = NULL;
    for (const char *p = last_slash ? last_slash + 1 : name; p < name + name_len; p++)
        if (*p == ':') {
            tag = p;
            break;
        }
    size_t repo_len = tag ? (size_t)(tag - name) : name_len;
    if (tag && !tag_valid(tag + 1, name_len - repo_len - 1))
        return BAD("invalid reference \"%s\": tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", s);

    /* Split the domain: the first component is one if it has '.' or ':', is
     * localhost, or has upper case letters (docker's rule). */
    const char *slash = memchr(name, '/', repo_len);
    const char *dom = NULL;
    size_t dom_len = 0;
    const char *path = name;
    size_t path_len = repo_len;
    if (slash) {
        size_t fl = (size_t)(slash - name);
        bool is_domain = memchr(name, '.', fl) || memchr(name, ':', fl) ||
                         (fl == 9 && memcmp(name, "localhost", 9) == 0);
        for (size_t i = 0; !is_domain && i < fl; i++)
            if (isupper((unsigned char)name[i]))
                is_domain = true;
        if (is_domain) {
            dom = name;
            dom_len = fl;
            path = slash + 1;
            path_len = repo_len - fl - 1;
        }
    }
    if (dom && !domain_valid(dom, dom_len))
        return BAD("invalid reference \"%s\": invalid registry host \"%.*s\"", s, (int)dom_len,
                   dom);
    if (path_len == 0)
        return BAD("invalid reference \"%s\": missing repository name", s);
    for (size_t i = 0; i < path_len; i++)
        if (isupper((unsigned char)path[i]))
            return BAD("invalid reference \"%s\": repository name must be lowercase", s);
    size_t start = 0;
    for (size_t i = 0; i <= path_len; i++) {
        if (i == path_len || path[i] == '/') {
            if (!component_valid(path + start, i - start))
                return BAD("invalid reference \"%s\": invalid repository path component \"%.*s\" "
                           "(lowercase letters, digits and single separators . _ __ -)",
                           s, (int)(i - start), path + start);
            start = i + 1;
        }
    }

    if (!dom || (dom_len == 15 && memcmp(dom, "index.docker.io", 15) == 0)) {
        out->domain = strdup("docker.io");
    } else {
        out->domain = dupn(dom, dom_len);
    }
    if (strcmp(out->domain, "docker.io") == 0 && !memchr(path, '/', path_len)) {
        out->path = malloc(path_len + 9);
        memcpy(out->path, "library/", 8);
        memcpy(out->path + 8, path, path_len);
        out->path[path_len + 8] = 0;
    } else {
        out->path = dupn(path, path_len);
    }
    if (strlen(out->domain) + 1 + strlen(out->path) > MAX_NAME) {
        xfer_ref_clear(out);
        return BAD("invalid reference \"%s\": repository name longer than %d characters", s,
                   MAX_NAME);
    }
    if (tag)
        out->tag = dupn(tag + 1, name_len - repo_len - 1);
    if (at)
        out->digest = strdup(at + 1);
    if (!out->tag && !out->digest)
        out->tag = strdup("latest");
    return 0;
}

char *xfer_ref_repo(const xfer_ref_t *r)
{
    char *s = NULL;
    if (asprintf(&s, "%s/%s", r->domain, r->path) < 0)
        abort();
    return s;
}

char *xfer_ref_name(const xfer_ref_t *r)
{
    char *s = NULL;
    if (asprintf(&s, "%s/%s%s%s%s%s", r->domain, r->path, r->tag ? ":" : "", r->tag ? r->tag : "",
                 r->digest ? "@" : "", r->digest ? r->digest : "") < 0)
        abort();
    return s;
}
