/* SPDX-License-Identifier: Apache-2.0 */
/* Platforms ("linux/arm64/v8"): parsing, normalization like containerd's
 * platforms package, the host default and matching for index selection. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

#include "internal.h"

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
    for (char *p = dst; *p; p++)
        *p = (char)tolower((unsigned char)*p);
}

void xfer_platform_normalize(xfer_platform_t *p)
{
    static const struct {
        const char *from, *arch, *variant;
    } arch_map[] = {
        {"x86_64", "amd64", ""}, {"x86-64", "amd64", ""},    {"i386", "386", ""},
        {"i686", "386", ""},     {"aarch64", "arm64", NULL}, {"armhf", "arm", "v7"},
        {"armel", "arm", "v6"},
    };
    if (!p->os[0])
        copy(p->os, sizeof(p->os), "linux");
    if (strcmp(p->os, "macos") == 0)
        copy(p->os, sizeof(p->os), "darwin");
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(arch_map); i++) {
        if (strcmp(p->arch, arch_map[i].from) == 0) {
            copy(p->arch, sizeof(p->arch), arch_map[i].arch);
            if (arch_map[i].variant)
                copy(p->variant, sizeof(p->variant), arch_map[i].variant);
            break;
        }
    }
    if (strcmp(p->arch, "arm64") == 0) {
        /* arm64 has only v8 in practice: the empty variant means v8. */
        if (strcmp(p->variant, "8") == 0 || strcmp(p->variant, "v8") == 0)
            p->variant[0] = 0;
    } else if (strcmp(p->arch, "arm") == 0) {
        if (!p->variant[0])
            copy(p->variant, sizeof(p->variant), "v7");
        else if (isdigit((unsigned char)p->variant[0]) && !p->variant[1]) {
            char v[4] = {'v', p->variant[0], 0, 0};
            copy(p->variant, sizeof(p->variant), v);
        }
    }
}

void xfer_platform_set(xfer_platform_t *p, const char *os, const char *arch, const char *variant)
{
    copy(p->os, sizeof(p->os), os);
    copy(p->arch, sizeof(p->arch), arch);
    copy(p->variant, sizeof(p->variant), variant);
    xfer_platform_normalize(p);
}

static bool part_valid(const char *s, size_t n)
{
    if (n == 0 || n >= 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

int xfer_platform_parse(const char *s, xfer_platform_t *out, berth_error_t **err)
{
    memset(out, 0, sizeof(*out));
    const char *parts[4];
    size_t lens[4];
    size_t n = 0;
    const char *p = s;
    while (1) {
        const char *sl = strchr(p, '/');
        size_t l = sl ? (size_t)(sl - p) : strlen(p);
        if (n == 3 || !part_valid(p, l))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "invalid platform \"%s\": expected os/arch[/variant]", s);
        parts[n] = p;
        lens[n++] = l;
        if (!sl)
            break;
        p = sl + 1;
    }
    char os[32] = "", arch[32] = "", variant[32] = "";
    if (n == 1) {
        /* A single part is an os if we know it as one, else an arch. */
        snprintf(arch, sizeof(arch), "%.*s", (int)lens[0], parts[0]);
        if (strcmp(arch, "linux") == 0 || strcmp(arch, "windows") == 0 ||
            strcmp(arch, "darwin") == 0 || strcmp(arch, "freebsd") == 0) {
            memcpy(os, arch, sizeof(os));
            xfer_platform_t host;
            xfer_platform_host(&host);
            memcpy(arch, host.arch, sizeof(arch));
            memcpy(variant, host.variant, sizeof(variant));
        }
    } else {
        snprintf(os, sizeof(os), "%.*s", (int)lens[0], parts[0]);
        snprintf(arch, sizeof(arch), "%.*s", (int)lens[1], parts[1]);
        if (n == 3)
            snprintf(variant, sizeof(variant), "%.*s", (int)lens[2], parts[2]);
    }
    xfer_platform_set(out, os, arch, variant);
    return 0;
}

void xfer_platform_host(xfer_platform_t *out)
{
    struct utsname u;
    const char *m = "x86_64";
    if (uname(&u) == 0)
        m = u.machine;
    char arch[32];
    snprintf(arch, sizeof(arch), "%.31s", m);
    const char *variant = "";
    if (strncmp(arch, "armv7", 5) == 0) {
        snprintf(arch, sizeof(arch), "arm");
        variant = "v7";
    } else if (strncmp(arch, "armv6", 5) == 0) {
        snprintf(arch, sizeof(arch), "arm");
        variant = "v6";
    }
    xfer_platform_set(out, "linux", arch, variant);
}

int xfer_platform_score(const xfer_platform_t *want, const xfer_platform_t *have)
{
    if (strcmp(want->os, have->os) != 0 || strcmp(want->arch, have->arch) != 0)
        return -1;
    if (strcmp(want->variant, have->variant) == 0)
        return 100;
    if (strcmp(want->arch, "arm") == 0) {
        /* A v7 host runs v6 and v5 images: prefer the closest. */
        int w = want->variant[0] == 'v' ? atoi(want->variant + 1) : 0;
        int h = have->variant[0] == 'v' ? atoi(have->variant + 1) : 0;
        if (h > 0 && h < w)
            return 50 - (w - h);
        return -1;
    }
    if (strcmp(want->arch, "amd64") == 0) {
        /* amd64 microarchitecture levels: v1 (= empty) runs everywhere. */
        if (!have->variant[0] || strcmp(have->variant, "v1") == 0)
            return 90;
        if (!want->variant[0])
            return -1;
        int w = atoi(want->variant + 1), h = atoi(have->variant + 1);
        return h > 0 && h < w ? 50 - (w - h) : -1;
    }
    /* An unspecified wanted variant accepts any. */
    if (!want->variant[0])
        return 10;
    return -1;
}

const char *xfer_platform_format(const xfer_platform_t *p, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s%s%s", p->os, p->arch, p->variant[0] ? "/" : "", p->variant);
    return buf;
}
