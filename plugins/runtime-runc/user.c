/* SPDX-License-Identifier: Apache-2.0 */
/* Resolves a container USER against the image's /etc/passwd and /etc/group,
 * the way containerd's oci.WithUser + WithAdditionalGIDs do (including the
 * CVE-2023-25173 fix: the primary gid is always among the supplementary
 * groups). The files come from an untrusted image: they are opened inside the
 * image root (RESOLVE_IN_ROOT, so a symlink to the host's /etc/shadow resolves
 * inside the image), size-capped, and every id is range-checked. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "berth/log.h"
#include "internal.h"

/* The kernel's limit on supplementary groups. */
#define RT_MAX_GROUPS 65536

void rt_user_clear(rt_user_t *u)
{
    free(u->additional_gids);
    memset(u, 0, sizeof(*u));
}

int rt_parse_id(const char *s, size_t len, uint32_t *out)
{
    if (len == 0 || len > 10)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    /* (uint32_t)-1 means "no id" to the kernel (setresuid keeps the old one):
     * never hand it to a container. */
    if (v >= UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int open_in_root(int rootfd, const char *path)
{
    struct open_how how = {
        .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
    if (fd >= 0 || errno != ENOSYS)
        return fd;
    /* Kernels before 5.6: walk component by component refusing symlinks,
     * which is stricter than RESOLVE_IN_ROOT but never escapes. */
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(buf, path);
    int dfd = dup(rootfd);
    if (dfd < 0)
        return -1;
    char *save = NULL;
    char *comp = strtok_r(buf, "/", &save);
    while (comp) {
        char *next = strtok_r(NULL, "/", &save);
        if (strcmp(comp, "..") == 0 || strcmp(comp, ".") == 0) {
            close(dfd);
            errno = EINVAL;
            return -1;
        }
        int flags = O_NOFOLLOW | O_CLOEXEC | (next ? O_DIRECTORY | O_PATH : O_RDONLY | O_NONBLOCK);
        int nfd = openat(dfd, comp, flags);
        int e = errno;
        close(dfd);
        if (nfd < 0) {
            errno = e;
            return -1;
        }
        dfd = nfd;
        comp = next;
    }
    return dfd;
}

int rt_read_in_root(int rootfd, const char *path, size_t cap, char **out, size_t *len,
                    berth_error_t **err)
{
    _cleanup_close_ int fd = open_in_root(rootfd, path);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        return berth_error_errno(err, errno, "open %s in the image", path);
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return berth_error_errno(err, errno, "stat %s in the image", path);
    if (!S_ISREG(st.st_mode))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "%s in the image is not a regular file", path);
    if ((uint64_t)st.st_size > cap)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "%s in the image is larger than %zu bytes", path, cap);
    size_t want = (size_t)st.st_size;
    char *buf = malloc(want + 1);
    if (!buf)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    size_t have = 0;
    /* The file could grow between fstat and read; read at most cap + 1. */
    while (have < want) {
        ssize_t n = read(fd, buf + have, want - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            return berth_error_errno(err, e, "read %s in the image", path);
        }
        if (n == 0)
            break;
        have += (size_t)n;
    }
    buf[have] = 0;
    *out = buf;
    if (len)
        *len = have;
    return 0;
}

/* ---- passwd / group parsing ---------------------------------------------- */

/* Splits line [p, end) into at most max fields on ':'. Returns the count. */
static size_t split_fields(const char *p, const char *end, const char **f, size_t *fl, size_t max)
{
    size_t n = 0;
    const char *start = p;
    for (;; p++) {
        if (p == end || *p == ':') {
            if (n < max) {
                f[n] = start;
                fl[n] = (size_t)(p - start);
            }
            n++;
            if (p == end)
                break;
            start = p + 1;
        }
    }
    return n;
}

typedef struct {
    const char *data;
    const char *pos;
    const char *end;
} line_iter_t;

static bool next_line(line_iter_t *it, const char **ls, const char **le)
{
    while (it->pos < it->end) {
        const char *s = it->pos;
        const char *e = memchr(s, '\n', (size_t)(it->end - s));
        if (!e)
            e = it->end;
        it->pos = e < it->end ? e + 1 : e;
        /* Trim trailing \r and surrounding blanks like libcontainer does. */
        while (e > s && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            e--;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        if (s == e || *s == '#')
            continue;
        *ls = s;
        *le = e;
        return true;
    }
    return false;
}

typedef struct {
    const char *name;
    size_t name_len;
    uint32_t uid, gid;
} pw_entry_t;

/* Finds a passwd entry by name (name != NULL) or by uid. Lines with bad ids
 * are skipped (logged), never truncated into another id. */
static bool passwd_find(const char *data, size_t len, const char *name, uint32_t uid,
                        pw_entry_t *out)
{
    line_iter_t it = {data, data, data + len};
    const char *ls, *le;
    while (next_line(&it, &ls, &le)) {
        const char *f[7];
        size_t fl[7];
        size_t n = split_fields(ls, le, f, fl, 7);
        if (n < 4)
            continue;
        pw_entry_t e = {.name = f[0], .name_len = fl[0]};
        if (rt_parse_id(f[2], fl[2], &e.uid) < 0 || rt_parse_id(f[3], fl[3], &e.gid) < 0) {
            berth_log(BERTH_LOG_DEBUG, "msg=\"skipping passwd entry with an invalid id\" user=%.*s",
                      (int)(fl[0] > 64 ? 64 : fl[0]), f[0]);
            continue;
        }
        if (name ? (strlen(name) == e.name_len && memcmp(name, e.name, e.name_len) == 0)
                 : e.uid == uid) {
            *out = e;
            return true;
        }
    }
    return false;
}

/* Finds a group gid by name. */
static bool group_find(const char *data, size_t len, const char *name, uint32_t *gid)
{
    line_iter_t it = {data, data, data + len};
    const char *ls, *le;
    size_t nl = strlen(name);
    while (next_line(&it, &ls, &le)) {
        const char *f[4];
        size_t fl[4];
        if (split_fields(ls, le, f, fl, 4) < 3)
            continue;
        uint32_t g;
        if (rt_parse_id(f[2], fl[2], &g) < 0)
            continue;
        if (fl[0] == nl && memcmp(f[0], name, nl) == 0) {
            *gid = g;
            return true;
        }
    }
    return false;
}

static int add_gid(rt_user_t *u, uint32_t gid, bool front, berth_error_t **err)
{
    for (size_t i = 0; i < u->n_additional_gids; i++)
        if (u->additional_gids[i] == gid) {
            /* Already listed: move it first when asked, so the primary gid
             * always leads (found by fuzz_passwd). */
            if (front && i > 0) {
                memmove(u->additional_gids + 1, u->additional_gids, i * sizeof(gid));
                u->additional_gids[0] = gid;
            }
            return 0;
        }
    if (u->n_additional_gids >= RT_MAX_GROUPS)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "the user belongs to more than %d groups", RT_MAX_GROUPS);
    uint32_t *n = realloc(u->additional_gids, (u->n_additional_gids + 1) * sizeof(*n));
    if (!n)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    u->additional_gids = n;
    if (front) {
        memmove(n + 1, n, u->n_additional_gids * sizeof(*n));
        n[0] = gid;
    } else {
        n[u->n_additional_gids] = gid;
    }
    u->n_additional_gids++;
    return 0;
}

/* Groups listing `username` as a member, except the group named like the
 * user (that one is its primary group by convention). */
static int supplementary(const char *data, size_t len, const char *username, size_t ulen,
                         rt_user_t *u, berth_error_t **err)
{
    line_iter_t it = {data, data, data + len};
    const char *ls, *le;
    while (next_line(&it, &ls, &le)) {
        const char *f[4];
        size_t fl[4];
        if (split_fields(ls, le, f, fl, 4) < 4)
            continue;
        if (fl[0] == ulen && memcmp(f[0], username, ulen) == 0)
            continue;
        uint32_t g;
        if (rt_parse_id(f[2], fl[2], &g) < 0)
            continue;
        const char *m = f[3], *mend = f[3] + fl[3];
        while (m < mend) {
            const char *c = memchr(m, ',', (size_t)(mend - m));
            if (!c)
                c = mend;
            const char *ms = m, *me = c;
            while (ms < me && *ms == ' ')
                ms++;
            while (me > ms && me[-1] == ' ')
                me--;
            if ((size_t)(me - ms) == ulen && memcmp(ms, username, ulen) == 0) {
                if (add_gid(u, g, false, err) < 0)
                    return -1;
                break;
            }
            m = c + 1;
        }
    }
    return 0;
}

static int load(int rootfd, const rt_etc_t *etc, const char *path, char **data, size_t *len,
                bool *absent, berth_error_t **err)
{
    if (*data || *absent)
        return 0;
    if (etc) {
        int i = strcmp(path, "/etc/passwd") == 0 ? 0 : 1;
        if (!etc->data[i]) {
            *absent = true;
            return 0;
        }
        if (!(*data = malloc(etc->len[i] + 1)))
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        memcpy(*data, etc->data[i], etc->len[i]);
        (*data)[etc->len[i]] = 0;
        *len = etc->len[i];
        return 0;
    }
    if (rootfd < 0) {
        *absent = true;
        return 0;
    }
    int r = rt_read_in_root(rootfd, path, RT_MAX_ETC_FILE, data, len, err);
    if (r < 0)
        return -1;
    if (r == 1)
        *absent = true;
    return 0;
}

int rt_etc_read(int rootfd, rt_etc_t *out, berth_error_t **err)
{
    static const char *const paths[2] = {"/etc/passwd", "/etc/group"};
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < 2; i++) {
        int r =
            rt_read_in_root(rootfd, paths[i], RT_MAX_ETC_FILE, &out->data[i], &out->len[i], err);
        if (r < 0) {
            rt_etc_clear(out);
            return -1;
        }
    }
    return 0;
}

void rt_etc_clear(rt_etc_t *e)
{
    free(e->data[0]);
    free(e->data[1]);
    memset(e, 0, sizeof(*e));
}

int rt_user_resolve(int rootfd, const char *user, rt_user_t *out, berth_error_t **err)
{
    return rt_user_resolve_etc(rootfd, NULL, user, out, err);
}

int rt_user_resolve_etc(int rootfd, const rt_etc_t *etc, const char *user, rt_user_t *out,
                        berth_error_t **err)
{
    memset(out, 0, sizeof(*out));
    if (!user)
        user = "";
    const char *colon = strchr(user, ':');
    if (colon && strchr(colon + 1, ':'))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "invalid user \"%s\": use USER, UID, USER:GROUP or UID:GID", user);
    size_t ulen = colon ? (size_t)(colon - user) : strlen(user);
    const char *group = colon ? colon + 1 : NULL;
    if (colon && (ulen == 0 || *group == 0))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "invalid user \"%s\": the user and group parts must not be empty",
                               user);

    _cleanup_free_ char *passwd = NULL;
    _cleanup_free_ char *groupf = NULL;
    size_t plen = 0, glen = 0;
    bool pabsent = false, gabsent = false;
    _cleanup_free_ char *uname = strndup(user, ulen);
    if (!uname)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    _cleanup_free_ char *username = NULL; /* name used for supplementary groups */
    pw_entry_t pw;

    if (ulen == 0) {
        /* No USER: root, and root's supplementary groups. */
        out->uid = 0;
        out->gid = 0;
        if (load(rootfd, etc, "/etc/passwd", &passwd, &plen, &pabsent, err) < 0)
            goto fail;
        if (passwd && passwd_find(passwd, plen, NULL, 0, &pw))
            username = strndup(pw.name, pw.name_len);
        else
            username = strdup("root");
    } else if (rt_parse_id(uname, ulen, &out->uid) == 0) {
        if (load(rootfd, etc, "/etc/passwd", &passwd, &plen, &pabsent, err) < 0)
            goto fail;
        /* A uid missing from passwd is allowed (gid 0), like containerd. */
        if (passwd && passwd_find(passwd, plen, NULL, out->uid, &pw)) {
            out->gid = pw.gid;
            username = strndup(pw.name, pw.name_len);
        } else {
            out->gid = 0;
        }
    } else {
        if (uname[0] >= '0' && uname[0] <= '9' && strspn(uname, "0123456789") == ulen) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "invalid user \"%s\": uid out of range (0 to 4294967294)", user);
            goto fail;
        }
        if (load(rootfd, etc, "/etc/passwd", &passwd, &plen, &pabsent, err) < 0)
            goto fail;
        if (!passwd) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "unable to find user %s: the image has no /etc/passwd", uname);
            goto fail;
        }
        if (!passwd_find(passwd, plen, uname, 0, &pw)) {
            berth_error_set(
                err, BERTH_E_INVALID_ARGUMENT,
                "unable to find user %s: no matching entries in the image's /etc/passwd", uname);
            goto fail;
        }
        out->uid = pw.uid;
        out->gid = pw.gid;
        username = strdup(uname);
    }

    if (group) {
        if (rt_parse_id(group, strlen(group), &out->gid) < 0) {
            if (strspn(group, "0123456789") == strlen(group)) {
                berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                "invalid user \"%s\": gid out of range (0 to 4294967294)", user);
                goto fail;
            }
            if (load(rootfd, etc, "/etc/group", &groupf, &glen, &gabsent, err) < 0)
                goto fail;
            if (!groupf) {
                berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                "unable to find group %s: the image has no /etc/group", group);
                goto fail;
            }
            if (!group_find(groupf, glen, group, &out->gid)) {
                berth_error_set(
                    err, BERTH_E_INVALID_ARGUMENT,
                    "unable to find group %s: no matching entries in the image's /etc/group",
                    group);
                goto fail;
            }
        }
    }

    if (username) {
        if (load(rootfd, etc, "/etc/group", &groupf, &glen, &gabsent, err) < 0)
            goto fail;
        if (groupf && supplementary(groupf, glen, username, strlen(username), out, err) < 0)
            goto fail;
    }
    /* CVE-2023-25173: the supplementary groups are always set explicitly
     * (never inherited from runc) and include the primary gid, as containerd
     * does since its fix. */
    if (add_gid(out, out->gid, true, err) < 0)
        goto fail;
    return 0;
fail:
    rt_user_clear(out);
    return -1;
}
