/* SPDX-License-Identifier: Apache-2.0 */
/* Task state on disk (see task.h): FIFOs, bundles, rootfs mounts, removal.
 * Runs on worker threads of the runtime plugin, never on its loop. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "berth/log.h"
#include "berth/mp.h"
#include "task.h"

void rt_fsmounts_free(rt_fsmount_t *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].type);
        free(m[i].source);
        for (size_t k = 0; k < m[i].n_options; k++)
            free(m[i].options[k]);
        free(m[i].options);
        free(m[i].chdir);
    }
    free(m);
}

int rt_fsmounts_from_mp(const msgpack_object *arr, rt_fsmount_t **out, size_t *n,
                        berth_error_t **err)
{
    *out = NULL;
    *n = 0;
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY || arr->via.array.size == 0 ||
        arr->via.array.size > 16)
        return berth_error_set(err, BERTH_E_INTERNAL, "the snapshotter returned no usable mounts");
    rt_fsmount_t *m = calloc(arr->via.array.size, sizeof(*m));
    if (!m)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *o = &arr->via.array.ptr[i];
        rt_fsmount_t *x = &m[i];
        const msgpack_object *opts = NULL;
        if (berth_mp_get_strdup(o, "type", &x->type, err) < 0 ||
            berth_mp_get_strdup(o, "source", &x->source, err) < 0 ||
            berth_mp_get_strdup(o, "chdir", &x->chdir, err) < 0 ||
            berth_mp_get_array(o, "options", &opts, err) < 0 || !x->type) {
            rt_fsmounts_free(m, arr->via.array.size);
            return berth_error_set(err, BERTH_E_INTERNAL, "malformed mount from the snapshotter");
        }
        if (opts && opts->via.array.size) {
            x->options = calloc(opts->via.array.size, sizeof(char *));
            for (uint32_t k = 0; x->options && k < opts->via.array.size; k++) {
                x->options[k] = berth_mp_strdup(&opts->via.array.ptr[k]);
                if (x->options[k])
                    x->n_options++;
            }
        }
    }
    *out = m;
    *n = arr->via.array.size;
    return 0;
}

int rt_mkdir_p(const char *path, mode_t mode, berth_error_t **err)
{
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof(buf))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "path too long: %s", path);
    strcpy(buf, path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return berth_error_errno(err, errno, "mkdir %s", buf);
            *p = c;
            if (!c)
                break;
        }
    }
    return 0;
}

int rt_fifos_create(const char *dir, const char *prefix, const bool want[3], char *paths[3],
                    berth_error_t **err)
{
    static const char *const names[3] = {"stdin", "stdout", "stderr"};
    paths[0] = paths[1] = paths[2] = NULL;
    if (rt_mkdir_p(dir, 0700, err) < 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        if (!want[i])
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s-%s", dir, prefix, names[i]);
        unlink(p);
        if (mkfifo(p, 0600) < 0) {
            berth_error_errno(err, errno, "mkfifo %s", p);
            rt_fifos_remove(paths);
            return -1;
        }
        paths[i] = strdup(p);
    }
    return 0;
}

void rt_fifos_remove(char *paths[3])
{
    for (int i = 0; i < 3; i++) {
        if (paths[i]) {
            unlink(paths[i]);
            free(paths[i]);
            paths[i] = NULL;
        }
    }
}

int rt_bundle_create(const char *bundle, const void *config, size_t len, berth_error_t **err)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", bundle);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        if (rt_mkdir_p(parent, 0700, err) < 0)
            return -1;
    }
    if (mkdir(bundle, 0700) < 0)
        return berth_error_set(err, errno == EEXIST ? BERTH_E_ALREADY_EXISTS : BERTH_E_INTERNAL,
                               "create bundle %s: %s", bundle, strerror(errno));
    char p[PATH_MAX], tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/.config.json.tmp", bundle);
    snprintf(p, sizeof(p), "%s/config.json", bundle);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return berth_error_errno(err, errno, "create %s", tmp);
    const char *d = config;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, d + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            return berth_error_errno(err, e, "write %s", tmp);
        }
        off += (size_t)w;
    }
    /* No fsync: the bundle is runtime state (see shim/exitfile.h). */
    if (close(fd) < 0)
        return berth_error_errno(err, errno, "write %s", tmp);
    if (rename(tmp, p) < 0)
        return berth_error_errno(err, errno, "rename %s", p);
    snprintf(p, sizeof(p), "%s/rootfs", bundle);
    if (mkdir(p, 0755) < 0 && errno != EEXIST)
        return berth_error_errno(err, errno, "mkdir %s", p);
    return 0;
}

typedef struct {
    const char *name;
    unsigned long flag;
    bool clear;
} mflag_t;

static const mflag_t mflags[] = {
    {"ro", MS_RDONLY, false},        {"rw", MS_RDONLY, true},
    {"nosuid", MS_NOSUID, false},    {"suid", MS_NOSUID, true},
    {"nodev", MS_NODEV, false},      {"dev", MS_NODEV, true},
    {"noexec", MS_NOEXEC, false},    {"exec", MS_NOEXEC, true},
    {"bind", MS_BIND, false},        {"rbind", MS_BIND | MS_REC, false},
    {"noatime", MS_NOATIME, false},  {"relatime", MS_RELATIME, false},
    {"sync", MS_SYNCHRONOUS, false}, {"async", MS_SYNCHRONOUS, true},
    {"defaults", 0, false},
};

/* Splits options into mount flags and the data string. */
static int split_options(char *const *opts, size_t n, unsigned long *flags, char *data, size_t dl)
{
    size_t used = 0;
    data[0] = 0;
    *flags = 0;
    for (size_t i = 0; i < n; i++) {
        bool known = false;
        for (size_t k = 0; k < sizeof(mflags) / sizeof(mflags[0]); k++) {
            if (strcmp(opts[i], mflags[k].name) == 0) {
                if (mflags[k].clear)
                    *flags &= ~mflags[k].flag;
                else
                    *flags |= mflags[k].flag;
                known = true;
                break;
            }
        }
        if (known)
            continue;
        size_t l = strlen(opts[i]);
        if (used + l + 2 > dl)
            return -1;
        if (used)
            data[used++] = ',';
        memcpy(data + used, opts[i], l + 1);
        used += l;
    }
    return 0;
}

/* Overlay options can exceed a page with many layers; mount from the
 * layers' common parent with relative paths, in a child process so the
 * chdir does not affect the plugin's other threads. */
static int mount_overlay_relative(const char *target, unsigned long flags, const char *data,
                                  berth_error_t **err)
{
    /* Find the longest common directory prefix of every path in data. */
    char prefix[PATH_MAX] = "";
    bool first = true;
    const char *p = data;
    while (*p) {
        const char *eq = strchr(p, '=');
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        if (eq && eq < end) {
            const char *v = eq + 1;
            while (v < end) {
                const char *c = memchr(v, ':', (size_t)(end - v));
                if (!c)
                    c = end;
                size_t l = (size_t)(c - v);
                if (l && v[0] == '/') {
                    if (first) {
                        snprintf(prefix, sizeof(prefix), "%.*s", (int)l, v);
                        first = false;
                    } else {
                        size_t k = 0;
                        while (prefix[k] && k < l && prefix[k] == v[k])
                            k++;
                        prefix[k] = 0;
                    }
                }
                v = c + (c < end);
            }
        }
        p = *end ? end + 1 : end;
    }
    char *slash = strrchr(prefix, '/');
    if (!slash || slash == prefix)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "overlay options too long and the layers share no directory");
    slash[1] = 0;
    size_t pl = strlen(prefix);
    /* Rewrite with the prefix removed. */
    size_t dl = strlen(data);
    char *rel = malloc(dl + 1);
    if (!rel)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    size_t j = 0;
    for (size_t i = 0; i < dl;) {
        bool start = i == 0 || data[i - 1] == '=' || data[i - 1] == ':';
        if (start && strncmp(data + i, prefix, pl) == 0)
            i += pl;
        else
            rel[j++] = data[i++];
    }
    rel[j] = 0;
    if (j > 4000) {
        free(rel);
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "overlay mount options are too long even with relative paths");
    }
    pid_t pid = fork();
    if (pid < 0) {
        free(rel);
        return berth_error_errno(err, errno, "fork");
    }
    if (pid == 0) {
        if (chdir(prefix) < 0)
            _exit(100 + errno % 100);
        if (mount("overlay", target, "overlay", flags, rel) < 0)
            _exit(errno & 0xff);
        _exit(0);
    }
    free(rel);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return berth_error_set(err, BERTH_E_INTERNAL, "mount overlay on %s: %s", target,
                               WIFEXITED(st) ? strerror(WEXITSTATUS(st) % 100) : "killed");
    return 0;
}

static int mount_one(const char *target, const rt_fsmount_t *m, bool readonly, berth_error_t **err)
{
    char data[8192];
    unsigned long flags;
    /* Read-only view of an overlay: upper (if any) becomes the top lower,
     * no workdir. */
    char *opts_ro[64];
    size_t n_ro = 0;
    char lower[8192];
    char lowopt[8192 + 16];
    char *const *opts = m->options;
    size_t n = m->n_options;
    bool is_overlay = strcmp(m->type, "overlay") == 0;
    if (readonly && is_overlay) {
        const char *upper = NULL, *low = NULL;
        for (size_t i = 0; i < m->n_options; i++) {
            if (strncmp(m->options[i], "upperdir=", 9) == 0)
                upper = m->options[i] + 9;
            else if (strncmp(m->options[i], "lowerdir=", 9) == 0)
                low = m->options[i] + 9;
            else if (strncmp(m->options[i], "workdir=", 8) != 0 && n_ro < 60)
                opts_ro[n_ro++] = m->options[i];
        }
        if (!low && !upper)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "overlay mount without layers");
        snprintf(lower, sizeof(lower), "%s%s%s", upper ? upper : "", upper && low ? ":" : "",
                 low ? low : "");
        if (!strchr(lower, ':')) {
            /* A single layer: a read-only bind mount of it. */
            if (lower[0] != '/' && m->chdir) {
                char abs[16400];
                int an = snprintf(abs, sizeof(abs), "%s/%s", m->chdir, lower);
                if (an < 0 || (size_t)an >= sizeof(lower))
                    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "layer path too long");
                memcpy(lower, abs, (size_t)an + 1);
            }
            if (mount(lower, target, NULL, MS_BIND | MS_REC, NULL) < 0)
                return berth_error_errno(err, errno, "bind %s on %s", lower, target);
            if (mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, NULL) < 0) {
                int e = errno;
                umount2(target, MNT_DETACH);
                return berth_error_errno(err, e, "remount %s read-only", target);
            }
            return 0;
        }
        snprintf(lowopt, sizeof(lowopt), "lowerdir=%s", lower);
        opts_ro[n_ro++] = lowopt;
        opts_ro[n_ro++] = (char *)"ro";
        opts = opts_ro;
        n = n_ro;
    }
    if (split_options(opts, n, &flags, data, sizeof(data)) < 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "mount options too long");
    if (readonly)
        flags |= MS_RDONLY;
    if (strcmp(m->type, "bind") == 0 || (flags & MS_BIND)) {
        if (mount(m->source, target, NULL, MS_BIND | (flags & MS_REC), NULL) < 0)
            return berth_error_errno(err, errno, "bind %s on %s", m->source, target);
        if (flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)) {
            if (mount(NULL, target, NULL,
                      MS_BIND | MS_REMOUNT |
                          (flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)),
                      NULL) < 0) {
                int e = errno;
                umount2(target, MNT_DETACH);
                return berth_error_errno(err, e, "remount %s", target);
            }
        }
        return 0;
    }
    if (m->chdir && m->chdir[0] == '/') {
        /* Relative layer paths: mount from that directory, in a child so
         * the plugin's other threads keep their cwd. */
        pid_t pid = fork();
        if (pid < 0)
            return berth_error_errno(err, errno, "fork");
        if (pid == 0) {
            if (chdir(m->chdir) < 0)
                _exit(errno & 0xff);
            if (mount(m->source ? m->source : m->type, target, m->type, flags, data) < 0)
                _exit(errno & 0xff);
            _exit(0);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return berth_error_set(err, BERTH_E_INTERNAL, "mount %s on %s: %s", m->type, target,
                                   WIFEXITED(st) ? strerror(WEXITSTATUS(st)) : "killed");
        return 0;
    }
    if (is_overlay && strlen(data) > 4000)
        return mount_overlay_relative(target, flags, data, err);
    if (mount(m->source ? m->source : m->type, target, m->type, flags, data) < 0)
        return berth_error_errno(err, errno, "mount %s on %s", m->type, target);
    return 0;
}

int rt_fsmounts_add_overlay_option(rt_fsmount_t *m, size_t n, const char *opt, berth_error_t **err)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(m[i].type, "overlay") != 0)
            continue;
        bool upper = false;
        for (size_t k = 0; k < m[i].n_options; k++)
            upper |= strncmp(m[i].options[k], "upperdir=", 9) == 0;
        if (!upper)
            continue;
        char **o = realloc(m[i].options, (m[i].n_options + 1) * sizeof(char *));
        if (!o)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        m[i].options = o;
        if (!(o[m[i].n_options] = strdup(opt)))
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        m[i].n_options++;
    }
    return 0;
}

int rt_rootfs_mount(const char *target, const rt_fsmount_t *mounts, size_t n, bool readonly,
                    berth_error_t **err)
{
    if (n == 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "the snapshot has no mounts");
    for (size_t i = 0; i < n; i++) {
        if (mount_one(target, &mounts[i], readonly, err) < 0) {
            for (size_t k = 0; k < i; k++)
                umount2(target, MNT_DETACH);
            return -1;
        }
    }
    return 0;
}

bool rt_is_mountpoint(const char *path)
{
    struct stat a, b;
    char parent[PATH_MAX];
#ifdef STATX_ATTR_MOUNT_ROOT
    /* Linux 5.8+: one call, bind mounts included, no walk of mountinfo
     * (whose size grows with every running container). */
    struct statx sx;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE, &sx) == 0 &&
        (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT))
        return S_ISDIR(sx.stx_mode) && (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
#endif
    if (lstat(path, &a) < 0 || !S_ISDIR(a.st_mode))
        return false;
    snprintf(parent, sizeof(parent), "%s/..", path);
    if (stat(parent, &b) < 0)
        return false;
    if (a.st_dev != b.st_dev)
        return true;
    /* A bind mount of a directory on the same fs: look in mountinfo. */
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return false;
    char line[8192];
    char real[PATH_MAX];
    if (!realpath(path, real))
        snprintf(real, sizeof(real), "%s", path);
    bool found = false;
    while (!found && fgets(line, sizeof(line), f)) {
        char mnt[PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) == 1 && strcmp(mnt, real) == 0)
            found = true;
    }
    fclose(f);
    return found;
}

int rt_rootfs_unmount(const char *target, berth_error_t **err)
{
    for (int i = 0; i < 16 && rt_is_mountpoint(target); i++) {
        if (umount2(target, 0) == 0)
            continue;
        if (errno == EBUSY) {
            if (umount2(target, MNT_DETACH) == 0)
                continue;
        }
        if (errno == EINVAL || errno == ENOENT)
            return 0;
        return berth_error_errno(err, errno, "unmount %s", target);
    }
    return 0;
}

static int remove_at(int dirfd, dev_t dev, int depth)
{
    if (depth > 64)
        return -1;
    int fd = dup(dirfd);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
            continue;
        struct stat st;
        if (fstatat(dirfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (st.st_dev != dev) {
                rc = -1;
                continue;
            }
            int sub = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                if (remove_at(sub, dev, depth + 1) < 0)
                    rc = -1;
                close(sub);
            }
            if (unlinkat(dirfd, n, AT_REMOVEDIR) < 0 && errno != ENOENT)
                rc = -1;
        } else if (unlinkat(dirfd, n, 0) < 0 && errno != ENOENT) {
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

int rt_remove_tree(const char *path, berth_error_t **err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return berth_error_errno(err, errno, "open %s", path);
    }
    struct stat st;
    fstat(fd, &st);
    int r = remove_at(fd, st.st_dev, 0);
    close(fd);
    if (r < 0)
        return berth_error_set(err, BERTH_E_INTERNAL,
                               "could not empty %s (a mount point inside is left alone)", path);
    if (rmdir(path) < 0 && errno != ENOENT)
        return berth_error_errno(err, errno, "rmdir %s", path);
    return 0;
}
