/* SPDX-License-Identifier: Apache-2.0 */
/* The overlayfs snapshot store: snapshot directories, their mounts, commit,
 * remove, usage and crash reconciliation. No event loop here; handlers.c runs
 * these in uv_queue_work. Layout: <root>/snapshots/<id>/{fs,work,meta,apply,
 * committed}; temp names "new-<id>-<rand>" (prepare) and "rm-<id>-<rand>"
 * (remove) make every change a single rename. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "berth/log.h"
#include "internal.h"

#define META_FILE "meta"
#define APPLY_FILE "apply"
#define COMMITTED_FILE "committed"

bool overlay_id_valid(const char *id)
{
    if (!id || !*id)
        return false;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++)
        if (*p < '0' || *p > '9')
            return false;
    return n <= OVERLAY_ID_MAX;
}

static int check_id(const char *id, berth_error_t **err)
{
    if (overlay_id_valid(id))
        return 0;
    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                           "invalid snapshot id \"%.40s\": expected 1 to %d decimal digits",
                           id ? id : "", OVERLAY_ID_MAX);
}

void overlay_strv_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int overlay_media_type_parse(const char *mt, overlay_comp_t *out, berth_error_t **err)
{
    static const struct {
        const char *name;
        overlay_comp_t comp;
    } types[] = {
        {"application/vnd.oci.image.layer.v1.tar", OVERLAY_COMP_NONE},
        {"application/vnd.oci.image.layer.v1.tar+gzip", OVERLAY_COMP_GZIP},
        {"application/vnd.oci.image.layer.v1.tar+zstd", OVERLAY_COMP_ZSTD},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar", OVERLAY_COMP_NONE},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", OVERLAY_COMP_GZIP},
        {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", OVERLAY_COMP_ZSTD},
        {"application/vnd.docker.image.rootfs.diff.tar", OVERLAY_COMP_NONE},
        {"application/vnd.docker.image.rootfs.diff.tar.gzip", OVERLAY_COMP_GZIP},
        {"application/vnd.docker.image.rootfs.diff.tar.zstd", OVERLAY_COMP_ZSTD},
        {"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", OVERLAY_COMP_GZIP},
    };
    for (size_t i = 0; mt && i < BERTH_ARRAY_SIZE(types); i++)
        if (strcmp(mt, types[i].name) == 0) {
            *out = types[i].comp;
            return 0;
        }
    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                           "unsupported layer media type \"%.100s\" (expected an OCI or Docker "
                           "tar, tar+gzip or tar+zstd layer)",
                           mt ? mt : "");
}

/* ---- small file helpers ---------------------------------------------------- */

/* Reads a small file in dirfd into buf (NUL-terminated). Returns length or -errno. */
static ssize_t read_small(int dirfd, const char *name, char *buf, size_t sz)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sz - 1);
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    buf[n] = 0;
    return n;
}

/* Writes `content` to dirfd/name atomically (temp file, optional fsync,
 * rename, optional fsync of the directory). */
static int write_atomic(int dirfd, const char *name, const char *content, bool sync,
                        berth_error_t **err)
{
    char tmp[64];
    snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return berth_error_errno(err, errno, "create %s", tmp);
    size_t len = strlen(content);
    ssize_t w = write(fd, content, len);
    if (w != (ssize_t)len || (sync && fsync(fd) < 0)) {
        int e = w < 0 || w == (ssize_t)len ? errno : EIO;
        close(fd);
        unlinkat(dirfd, tmp, 0);
        return berth_error_errno(err, e, "write %s", tmp);
    }
    close(fd);
    if (renameat(dirfd, tmp, dirfd, name) < 0) {
        int e = errno;
        unlinkat(dirfd, tmp, 0);
        return berth_error_errno(err, e, "rename %s", tmp);
    }
    if (sync && fsync(dirfd) < 0)
        return berth_error_errno(err, errno, "fsync after writing %s", name);
    return 0;
}

static void rand_hex(char *out, size_t nbytes)
{
    uint8_t b[16];
    if (nbytes > sizeof(b))
        nbytes = sizeof(b);
    if (getrandom(b, nbytes, 0) != (ssize_t)nbytes) {
        uint64_t x = (uint64_t)berth_now_ns() ^ ((uint64_t)getpid() << 32);
        memcpy(b, &x, nbytes < 8 ? nbytes : 8);
    }
    for (size_t i = 0; i < nbytes; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

/* ---- iterative tree walk --------------------------------------------------- */

/* A depth-first walk that holds one directory fd at a time: each level keeps
 * only the names of its pending subdirectories, and we climb back with ".."
 * (verified by device and inode). So trees of any depth (a hostile layer can
 * nest thousands of levels) neither exhaust fds nor overflow the stack, and
 * we never cross into another filesystem. */
typedef struct {
    char **subdirs;
    size_t n, i, cap;
    dev_t dev;
    ino_t ino;
} walk_frame_t;

typedef struct {
    /* Called for each non-directory entry; st is filled if want_stat. */
    int (*entry)(void *ud, int dirfd, const char *name, const struct stat *st, unsigned char dtype);
    /* Called for each directory (including the top) before descending. */
    int (*dir_pre)(void *ud, int fd, const struct stat *st);
    /* Called after a subdirectory's contents were visited, with its parent fd. */
    int (*dir_post)(void *ud, int parentfd, const char *name);
    bool want_stat;
    void *ud;
} walk_ops_t;

static void frame_clear(walk_frame_t *f)
{
    overlay_strv_free(f->subdirs, f->n);
    memset(f, 0, sizeof(*f));
}

/* Reads the entries of `fd`: directories go to f->subdirs, the rest to ops->entry. */
static int walk_read_dir(int fd, walk_frame_t *f, const walk_ops_t *ops, berth_error_t **err)
{
    int dfd = dup(fd);
    if (dfd < 0)
        return berth_error_errno(err, errno, "dup");
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = errno;
        close(dfd);
        return berth_error_errno(err, e, "opendir");
    }
    rewinddir(d);
    struct dirent *de;
    int rc = 0;
    errno = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        unsigned char t = de->d_type;
        bool have_st = false;
        if (t == DT_UNKNOWN || ops->want_stat) {
            if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                    continue;
                rc = berth_error_errno(err, errno, "stat %s", de->d_name);
                break;
            }
            have_st = true;
            t = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
        }
        if (t == DT_DIR) {
            if (f->n == f->cap) {
                size_t nc = f->cap ? f->cap * 2 : 8;
                char **nv = realloc(f->subdirs, nc * sizeof(char *));
                if (!nv) {
                    rc = berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
                    break;
                }
                f->subdirs = nv;
                f->cap = nc;
            }
            if (!(f->subdirs[f->n] = strdup(de->d_name))) {
                rc = berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
                break;
            }
            f->n++;
        } else if (ops->entry) {
            rc = ops->entry(ops->ud, fd, de->d_name, have_st ? &st : NULL, de->d_type);
            if (rc < 0) {
                rc = berth_error_errno(err, -rc, "%s", de->d_name);
                break;
            }
        }
        errno = 0;
    }
    if (!rc && errno)
        rc = berth_error_errno(err, errno, "readdir");
    closedir(d);
    return rc;
}

/* Walks the directory `name` in `dirfd`. */
static int tree_walk(int dirfd, const char *name, const walk_ops_t *ops, berth_error_t **err)
{
    int cur = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (cur < 0)
        return berth_error_errno(err, errno, "open %s", name);
    struct stat st;
    if (fstat(cur, &st) < 0) {
        close(cur);
        return berth_error_errno(err, errno, "stat %s", name);
    }
    const dev_t dev = st.st_dev;
    walk_frame_t *fr = NULL;
    size_t depth = 0, cap = 0;
    int rc = 0;

#define PUSH_FRAME()                                                                               \
    do {                                                                                           \
        if (depth == cap) {                                                                        \
            size_t nc = cap ? cap * 2 : 16;                                                        \
            walk_frame_t *nf = realloc(fr, nc * sizeof(*fr));                                      \
            if (!nf) {                                                                             \
                rc = berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");            \
                goto out;                                                                          \
            }                                                                                      \
            fr = nf;                                                                               \
            cap = nc;                                                                              \
        }                                                                                          \
        memset(&fr[depth], 0, sizeof(fr[depth]));                                                  \
        fr[depth].dev = st.st_dev;                                                                 \
        fr[depth].ino = st.st_ino;                                                                 \
        depth++;                                                                                   \
        if (ops->dir_pre && (rc = ops->dir_pre(ops->ud, cur, &st)) < 0) {                          \
            rc = berth_error_errno(err, -rc, "directory");                                         \
            goto out;                                                                              \
        }                                                                                          \
        if ((rc = walk_read_dir(cur, &fr[depth - 1], ops, err)) < 0)                               \
            goto out;                                                                              \
    } while (0)

    PUSH_FRAME();
    while (depth > 0) {
        walk_frame_t *top = &fr[depth - 1];
        if (top->i < top->n) {
            const char *sub = top->subdirs[top->i++];
            int fd = openat(cur, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) {
                if (errno == ENOENT)
                    continue;
                rc = berth_error_errno(err, errno, "open %s", sub);
                goto out;
            }
            if (fstat(fd, &st) < 0) {
                rc = berth_error_errno(err, errno, "stat %s", sub);
                close(fd);
                goto out;
            }
            if (st.st_dev != dev) {
                close(fd);
                rc = berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                     "%s is a mount point; unmount it first", sub);
                goto out;
            }
            close(cur);
            cur = fd;
            PUSH_FRAME();
            continue;
        }
        /* Done with this directory: climb back to its parent. */
        if (depth == 1) {
            frame_clear(top);
            depth--;
            if (ops->dir_post && (rc = ops->dir_post(ops->ud, dirfd, name)) < 0) {
                rc = berth_error_errno(err, -rc, "%s", name);
                goto out;
            }
            break;
        }
        int up = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (up < 0) {
            rc = berth_error_errno(err, errno, "open ..");
            goto out;
        }
        walk_frame_t *parent = &fr[depth - 2];
        if (fstat(up, &st) < 0 || st.st_dev != parent->dev || st.st_ino != parent->ino) {
            close(up);
            rc = berth_error_set(err, BERTH_E_ABORTED, "directory moved during the walk");
            goto out;
        }
        close(cur);
        cur = up;
        const char *done = parent->subdirs[parent->i - 1];
        frame_clear(top);
        depth--;
        if (ops->dir_post && (rc = ops->dir_post(ops->ud, cur, done)) < 0) {
            rc = berth_error_errno(err, -rc, "%s", done);
            goto out;
        }
    }
#undef PUSH_FRAME
out:
    for (size_t i = 0; i < depth; i++)
        frame_clear(&fr[i]);
    free(fr);
    if (cur >= 0)
        close(cur);
    return rc < 0 ? -1 : 0;
}

static int rm_entry(void *ud, int dirfd, const char *name, const struct stat *st, unsigned char t)
{
    (void)ud, (void)st, (void)t;
    if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

static int rm_dir_post(void *ud, int parentfd, const char *name)
{
    (void)ud;
    if (unlinkat(parentfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int overlay_rm_rf_at(int dirfd, const char *name, berth_error_t **err)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0;
        return berth_error_errno(err, errno, "remove %s", name);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
            return berth_error_errno(err, errno, "remove %s", name);
        return 0;
    }
    walk_ops_t ops = {.entry = rm_entry, .dir_post = rm_dir_post};
    /* A directory can gain entries only from us, but readdir while unlinking
     * is allowed to skip some: try a few times. */
    for (int attempt = 0; attempt < 3; attempt++) {
        berth_error_t *e = NULL;
        if (tree_walk(dirfd, name, &ops, &e) == 0)
            return 0;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
            berth_error_free(&e);
            return 0;
        }
        if (attempt == 2 || !strstr(e->message, "Directory not empty")) {
            if (err && !*err)
                *err = e;
            else
                berth_error_free(&e);
            return berth_error_wrap(err, "remove %s", name);
        }
        berth_error_free(&e);
    }
    return 0;
}

/* ---- usage ----------------------------------------------------------------- */

typedef struct {
    overlay_usage_t u;
    /* (dev, ino) of multiply-linked inodes already counted: open addressing. */
    struct ino_key {
        dev_t dev;
        ino_t ino;
    } * seen;
    size_t nseen, capseen;
} usage_ctx_t;

static bool seen_add(usage_ctx_t *c, dev_t dev, ino_t ino)
{
    if ((c->nseen + 1) * 2 > c->capseen) {
        size_t nc = c->capseen ? c->capseen * 2 : 256;
        struct ino_key *nv = calloc(nc, sizeof(*nv));
        if (!nv)
            return true; /* count it twice rather than fail */
        for (size_t i = 0; i < c->capseen; i++) {
            if (!c->seen[i].ino)
                continue;
            size_t h = (size_t)(c->seen[i].ino * 0x9E3779B97F4A7C15ULL) & (nc - 1);
            while (nv[h].ino)
                h = (h + 1) & (nc - 1);
            nv[h] = c->seen[i];
        }
        free(c->seen);
        c->seen = nv;
        c->capseen = nc;
    }
    size_t h = (size_t)(ino * 0x9E3779B97F4A7C15ULL) & (c->capseen - 1);
    while (c->seen[h].ino) {
        if (c->seen[h].ino == ino && c->seen[h].dev == dev)
            return false;
        h = (h + 1) & (c->capseen - 1);
    }
    c->seen[h].dev = dev;
    c->seen[h].ino = ino;
    c->nseen++;
    return true;
}

static void usage_count(usage_ctx_t *c, const struct stat *st)
{
    if (st->st_nlink > 1 && !S_ISDIR(st->st_mode) && !seen_add(c, st->st_dev, st->st_ino))
        return;
    c->u.inodes++;
    c->u.size += (uint64_t)st->st_blocks * 512;
}

static int usage_entry(void *ud, int dirfd, const char *name, const struct stat *st,
                       unsigned char t)
{
    (void)dirfd, (void)name, (void)t;
    usage_count(ud, st);
    return 0;
}

static int usage_dir_pre(void *ud, int fd, const struct stat *st)
{
    (void)fd;
    usage_count(ud, st);
    return 0;
}

static int usage_of(int snapdirfd, overlay_usage_t *u, berth_error_t **err)
{
    usage_ctx_t c = {0};
    walk_ops_t ops = {.entry = usage_entry, .dir_pre = usage_dir_pre, .want_stat = true, .ud = &c};
    int rc = tree_walk(snapdirfd, "fs", &ops, err);
    free(c.seen);
    if (rc < 0)
        return -1;
    *u = c.u;
    return 0;
}

/* ---- store ----------------------------------------------------------------- */

/* Marks the snapshots directory as the top of independent trees (ext2/3/4's
 * FS_TOPDIR_FL, `chattr +T`), so that the Orlov allocator places each new
 * snapshot directory in its own, emptiest block group instead of next to its
 * siblings. Each snapshot then allocates its inodes and blocks in a group
 * where nothing was recently deleted. Why it matters: ext4 skips inodes freed
 * in the last minute or more when it allocates a new one (on filesystems
 * without a journal it scans past every such inode from the start of the
 * group, reading its inode table block): after a big `rm -rf` near the
 * allocation goal, creating a file cost us 0.7-1 ms instead of 25 us, and a
 * 6,400-file layer took 6 s to apply instead of 0.8 s. Prepare creates
 * snapshots under random temporary names, so the group each one starts in is
 * random too. Filesystems without the flag (xfs, btrfs, tmpfs) refuse the
 * ioctl; that is fine. */
static void spread_snapshots(int dirfd, const char *path)
{
    int flags = 0;
    if (ioctl(dirfd, FS_IOC_GETFLAGS, &flags) < 0)
        return;
    if (flags & FS_TOPDIR_FL)
        return;
    flags |= FS_TOPDIR_FL;
    if (ioctl(dirfd, FS_IOC_SETFLAGS, &flags) < 0)
        berth_log(BERTH_LOG_DEBUG,
                  "msg=\"cannot mark snapshot dir as a top directory\" dir=%s "
                  "error=\"%s\"",
                  path, strerror(errno));
}

int overlay_store_open(const char *root, const overlay_store_opts_t *opts, overlay_store_t **out,
                       berth_error_t **err)
{
    overlay_store_t *s = calloc(1, sizeof(*s));
    if (!s)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    s->snapfd = -1;
    s->opts = *opts;
    if (!(s->root = strdup(root)) || asprintf(&s->snapdir, "%s/snapshots", root) < 0) {
        s->snapdir = NULL;
        overlay_store_free(s);
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (mkdir(root, 0700) < 0 && errno != EEXIST) {
        berth_error_errno(err, errno, "create %s", root);
        overlay_store_free(s);
        return -1;
    }
    if (mkdir(s->snapdir, 0700) < 0 && errno != EEXIST) {
        berth_error_errno(err, errno, "create %s", s->snapdir);
        overlay_store_free(s);
        return -1;
    }
    s->snapfd = open(s->snapdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s->snapfd < 0) {
        berth_error_errno(err, errno, "open %s", s->snapdir);
        overlay_store_free(s);
        return -1;
    }
    /* Snapshot contents hold setuid binaries and device nodes: only root may
     * reach them. */
    if (fchmod(s->snapfd, 0700) < 0) {
        berth_error_errno(err, errno, "chmod %s", s->snapdir);
        overlay_store_free(s);
        return -1;
    }
    spread_snapshots(s->snapfd, s->snapdir);
    if (s->opts.index_off && access("/sys/module/overlay/parameters/index", F_OK) < 0)
        s->opts.index_off = false;
    *out = s;
    return 0;
}

void overlay_store_free(overlay_store_t *s)
{
    if (!s)
        return;
    if (s->snapfd >= 0)
        close(s->snapfd);
    free(s->root);
    free(s->snapdir);
    free(s);
}

static int open_snap(overlay_store_t *s, const char *id, berth_error_t **err)
{
    if (check_id(id, err) < 0)
        return -1;
    int fd = openat(s->snapfd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return berth_error_set(err, BERTH_E_NOT_FOUND, "snapshot %s not found", id);
        return berth_error_errno(err, errno, "open snapshot %s", id);
    }
    return fd;
}

static bool has_entry(int dirfd, const char *name)
{
    struct stat st;
    return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Apply marker states. */
typedef enum { APPLY_NONE, APPLY_RUNNING, APPLY_DONE, APPLY_FAILED } apply_state_t;

static apply_state_t apply_state(int snapfd)
{
    char buf[256];
    ssize_t n = read_small(snapfd, APPLY_FILE, buf, sizeof(buf));
    if (n < 0)
        return n == -ENOENT ? APPLY_NONE : APPLY_FAILED;
    if (strncmp(buf, "done ", 5) == 0)
        return APPLY_DONE;
    if (strncmp(buf, "running", 7) == 0)
        return APPLY_RUNNING;
    return APPLY_FAILED;
}

/* meta: "readonly=0|1\nparents=a,b,c\n" */
typedef struct {
    bool readonly;
    char **parents;
    size_t n_parents;
} snap_meta_t;

static void meta_free(snap_meta_t *m)
{
    overlay_strv_free(m->parents, m->n_parents);
    m->parents = NULL;
    m->n_parents = 0;
}

static int meta_read(int snapfd, const char *id, snap_meta_t *m, berth_error_t **err)
{
    char buf[8192];
    memset(m, 0, sizeof(*m));
    ssize_t n = read_small(snapfd, META_FILE, buf, sizeof(buf));
    if (n < 0)
        return berth_error_errno(err, (int)-n, "read metadata of snapshot %s", id);
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "readonly=", 9) == 0) {
            m->readonly = line[9] == '1';
        } else if (strncmp(line, "parents=", 8) == 0 && line[8]) {
            size_t cnt = 1;
            for (char *p = line + 8; *p; p++)
                cnt += *p == ',';
            m->parents = calloc(cnt, sizeof(char *));
            if (!m->parents)
                return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            char *s2 = NULL;
            for (char *t = strtok_r(line + 8, ",", &s2); t; t = strtok_r(NULL, ",", &s2)) {
                if (!overlay_id_valid(t) || m->n_parents == cnt) {
                    meta_free(m);
                    return berth_error_set(err, BERTH_E_INTERNAL,
                                           "metadata of snapshot %s is corrupt", id);
                }
                m->parents[m->n_parents++] = strdup(t);
            }
        }
    }
    return 0;
}

/* ---- mounts ---------------------------------------------------------------- */

static int mount_add_opt(overlay_mount_t *m, char *opt)
{
    if (!opt)
        return -1;
    char **nv = realloc(m->options, (m->n_options + 1) * sizeof(char *));
    if (!nv) {
        free(opt);
        return -1;
    }
    m->options = nv;
    m->options[m->n_options++] = opt;
    return 0;
}

void overlay_mounts_free(overlay_mounts_t *ms)
{
    if (!ms || !ms->v)
        return;
    for (size_t i = 0; i < ms->n; i++) {
        overlay_mount_t *m = &ms->v[i];
        free(m->type);
        free(m->source);
        free(m->chdir);
        overlay_strv_free(m->options, m->n_options);
    }
    free(ms->v);
    ms->v = NULL;
    ms->n = 0;
}

static char *path_of(overlay_store_t *s, const char *id, const char *leaf)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s/%s", s->snapdir, id, leaf) < 0)
        return NULL;
    return p;
}

/* Joins the parents' fs dirs with ':' either absolute or relative to snapdir. */
static char *lowerdir_opt(overlay_store_t *s, const char *const *parents, size_t n, bool rel)
{
    size_t len = strlen("lowerdir=") + 1;
    for (size_t i = 0; i < n; i++)
        len += (rel ? 0 : strlen(s->snapdir) + 1) + strlen(parents[i]) + 4;
    char *o = malloc(len);
    if (!o)
        return NULL;
    char *p = stpcpy(o, "lowerdir=");
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = ':';
        if (!rel) {
            p = stpcpy(p, s->snapdir);
            *p++ = '/';
        }
        p = stpcpy(p, parents[i]);
        p = stpcpy(p, "/fs");
    }
    return o;
}

static int build_mounts(overlay_store_t *s, const char *id, const char *const *parents, size_t n,
                        bool readonly, overlay_mounts_t *out, berth_error_t **err)
{
    memset(out, 0, sizeof(*out));
    overlay_mount_t *m = calloc(1, sizeof(*m));
    if (!m)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    out->v = m;
    out->n = 1;
    int rc = 0;
    if (n == 0 || (readonly && n == 1)) {
        /* A bind mount, like containerd: the snapshot's own fs when it has no
         * parent, or the single parent's fs for a read-only view. */
        m->type = strdup("bind");
        m->source = n == 0 ? path_of(s, id, "fs") : path_of(s, parents[0], "fs");
        rc |= mount_add_opt(m, strdup(readonly ? "ro" : "rw"));
        rc |= mount_add_opt(m, strdup("rbind"));
    } else {
        m->type = strdup("overlay");
        m->source = strdup("overlay");
        if (s->opts.index_off)
            rc |= mount_add_opt(m, strdup("index=off"));
        if (!readonly) {
            char *w = path_of(s, id, "work"), *u = path_of(s, id, "fs");
            char *wo = NULL, *uo = NULL;
            if (w && u && asprintf(&wo, "workdir=%s", w) >= 0 &&
                asprintf(&uo, "upperdir=%s", u) >= 0) {
                rc |= mount_add_opt(m, wo);
                rc |= mount_add_opt(m, uo);
            } else {
                rc = -1;
            }
            free(w);
            free(u);
        }
        char *lo = lowerdir_opt(s, parents, n, false);
        size_t data = lo ? strlen(lo) : 0;
        for (size_t i = 0; i < m->n_options; i++)
            data += strlen(m->options[i]) + 1;
        if (lo && data > OVERLAY_MOUNT_DATA_MAX) {
            /* Too long for one page of mount data: use paths relative to
             * the snapshots dir ("12/fs:11/fs") and tell the mounter to
             * chdir there first (what docker's overlay2 does with its l/
             * links). 128 layers then take about 1 KiB. */
            free(lo);
            lo = lowerdir_opt(s, parents, n, true);
            m->chdir = strdup(s->snapdir);
            if (!m->chdir)
                rc = -1;
        }
        rc |= mount_add_opt(m, lo);
    }
    if (rc || !m->type || !m->source) {
        overlay_mounts_free(out);
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    return 0;
}

static int check_parents(overlay_store_t *s, const char *const *parents, size_t n,
                         berth_error_t **err)
{
    for (size_t i = 0; i < n; i++) {
        if (check_id(parents[i], err) < 0)
            return -1;
        int fd = openat(s->snapfd, parents[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                return berth_error_set(err, BERTH_E_NOT_FOUND, "parent snapshot %s not found",
                                       parents[i]);
            return berth_error_errno(err, errno, "open parent snapshot %s", parents[i]);
        }
        bool committed = has_entry(fd, COMMITTED_FILE);
        close(fd);
        if (!committed)
            return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                   "parent snapshot %s is not committed", parents[i]);
    }
    return 0;
}

int overlay_prepare(overlay_store_t *s, const char *id, const char *const *parents,
                    size_t n_parents, bool readonly, overlay_mounts_t *out, berth_error_t **err)
{
    if (check_id(id, err) < 0 || check_parents(s, parents, n_parents, err) < 0)
        return -1;
    for (size_t i = 0; i < n_parents; i++)
        if (strcmp(parents[i], id) == 0)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "snapshot %s cannot be its own parent", id);

    int fd = openat(s->snapfd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        bool committed = has_entry(fd, COMMITTED_FILE);
        close(fd);
        if (committed)
            return berth_error_set(err, BERTH_E_ALREADY_EXISTS,
                                   "snapshot %s already exists and is committed", id);
        /* A retry of a prepare that already happened. */
        return build_mounts(s, id, parents, n_parents, readonly, out, err);
    }

    char tmp[OVERLAY_ID_MAX + 32], rnd[17];
    rand_hex(rnd, 8);
    snprintf(tmp, sizeof(tmp), "new-%s-%s", id, rnd);
    if (mkdirat(s->snapfd, tmp, 0700) < 0)
        return berth_error_errno(err, errno, "prepare snapshot %s: create %s", id, tmp);
    int tfd = openat(s->snapfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (tfd < 0) {
        berth_error_errno(err, errno, "prepare snapshot %s: open %s", id, tmp);
        goto fail;
    }
    if (fchmod(tfd, 0700) < 0 || mkdirat(tfd, "fs", 0755) < 0 || fchmodat(tfd, "fs", 0755, 0) < 0 ||
        (!readonly && (mkdirat(tfd, "work", 0711) < 0 || fchmodat(tfd, "work", 0711, 0) < 0))) {
        berth_error_errno(err, errno, "prepare snapshot %s: create its directories", id);
        goto fail;
    }
    {
        size_t len = 64;
        for (size_t i = 0; i < n_parents; i++)
            len += strlen(parents[i]) + 1;
        char *meta = malloc(len);
        if (!meta) {
            berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            goto fail;
        }
        char *p = meta + sprintf(meta, "readonly=%d\nparents=", readonly ? 1 : 0);
        for (size_t i = 0; i < n_parents; i++)
            p += sprintf(p, "%s%s", i ? "," : "", parents[i]);
        strcpy(p, "\n");
        int rc = write_atomic(tfd, META_FILE, meta, s->opts.sync_on_commit, err);
        free(meta);
        if (rc < 0)
            goto fail;
    }
    if (s->opts.sync_on_commit && fsync(tfd) < 0) {
        berth_error_errno(err, errno, "prepare snapshot %s: fsync", id);
        goto fail;
    }
    close(tfd);
    tfd = -1;
    if (renameat2(s->snapfd, tmp, s->snapfd, id, RENAME_NOREPLACE) < 0) {
        int e = errno;
        berth_error_t *ign = NULL;
        overlay_rm_rf_at(s->snapfd, tmp, &ign);
        berth_error_free(&ign);
        if (e == EEXIST) /* a concurrent prepare of the same id won */
            return build_mounts(s, id, parents, n_parents, readonly, out, err);
        return berth_error_errno(err, e, "prepare snapshot %s: rename", id);
    }
    if (s->opts.sync_on_commit)
        fsync(s->snapfd);
    return build_mounts(s, id, parents, n_parents, readonly, out, err);

fail:
    if (tfd >= 0)
        close(tfd);
    {
        berth_error_t *ign = NULL;
        overlay_rm_rf_at(s->snapfd, tmp, &ign);
        berth_error_free(&ign);
    }
    return -1;
}

int overlay_mounts(overlay_store_t *s, const char *id, const char *const *parents, size_t n_parents,
                   int readonly, overlay_mounts_t *out, berth_error_t **err)
{
    int fd = open_snap(s, id, err);
    if (fd < 0)
        return -1;
    snap_meta_t meta = {0};
    int rc = 0;
    if (!parents || readonly < 0) {
        if (meta_read(fd, id, &meta, err) < 0) {
            close(fd);
            return -1;
        }
        if (!parents) {
            parents = (const char *const *)meta.parents;
            n_parents = meta.n_parents;
        }
        if (readonly < 0)
            readonly = meta.readonly;
    }
    close(fd);
    rc = check_parents(s, parents, n_parents, err);
    if (rc == 0)
        rc = build_mounts(s, id, parents, n_parents, readonly > 0, out, err);
    meta_free(&meta);
    return rc;
}

/* Usage of a committed (immutable) snapshot: recorded in its "committed"
 * marker, computed once and recorded there if the commit left it out. */
static int committed_usage(int snapfd, overlay_usage_t *u, berth_error_t **err)
{
    char buf[64];
    unsigned long long size, inodes;
    if (read_small(snapfd, COMMITTED_FILE, buf, sizeof(buf)) > 0 &&
        sscanf(buf, "%llu %llu", &size, &inodes) == 2) {
        u->size = size;
        u->inodes = inodes;
        return 0;
    }
    if (usage_of(snapfd, u, err) < 0)
        return -1;
    /* A cache: not fsynced; a torn rename leaves either form, both valid. */
    snprintf(buf, sizeof(buf), "%llu %llu\n", (unsigned long long)u->size,
             (unsigned long long)u->inodes);
    berth_error_t *ign = NULL;
    write_atomic(snapfd, COMMITTED_FILE, buf, false, &ign);
    berth_error_free(&ign);
    return 0;
}

int overlay_commit(overlay_store_t *s, const char *id, overlay_usage_t *u, berth_error_t **err)
{
    int fd = open_snap(s, id, err);
    if (fd < 0)
        return -1;
    int rc = -1;
    if (has_entry(fd, COMMITTED_FILE)) { /* retry of a commit that happened */
        rc = u ? committed_usage(fd, u, err) : 0;
        goto out;
    }
    if (!has_entry(fd, "work")) {
        berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                        "snapshot %s is a read-only view; only active snapshots can be committed",
                        id);
        goto out;
    }
    switch (apply_state(fd)) {
    case APPLY_RUNNING:
        berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                        "snapshot %s: its layer apply did not finish (interrupted); remove the "
                        "snapshot and apply the layer again",
                        id);
        goto out;
    case APPLY_FAILED:
        berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                        "snapshot %s: its layer apply failed; remove the snapshot", id);
        goto out;
    default:
        break;
    }
    if (u && usage_of(fd, u, err) < 0) {
        berth_error_wrap(err, "commit snapshot %s", id);
        goto out;
    }
    if (s->opts.sync_on_commit && syncfs(fd) < 0) {
        berth_error_errno(err, errno, "commit snapshot %s: syncfs", id);
        goto out;
    }
    char buf[64] = "\n"; /* usage not computed yet: overlay_usage() fills it in */
    if (u)
        snprintf(buf, sizeof(buf), "%llu %llu\n", (unsigned long long)u->size,
                 (unsigned long long)u->inodes);
    rc = write_atomic(fd, COMMITTED_FILE, buf, s->opts.sync_on_commit, err);
    if (rc < 0)
        berth_error_wrap(err, "commit snapshot %s", id);
out:
    close(fd);
    return rc;
}

int overlay_remove(overlay_store_t *s, const char *id, berth_error_t **err)
{
    if (check_id(id, err) < 0)
        return -1;
    char tmp[OVERLAY_ID_MAX + 32], rnd[17];
    rand_hex(rnd, 8);
    snprintf(tmp, sizeof(tmp), "rm-%s-%s", id, rnd);
    if (renameat2(s->snapfd, id, s->snapfd, tmp, RENAME_NOREPLACE) < 0) {
        if (errno == ENOENT)
            return berth_error_set(err, BERTH_E_NOT_FOUND, "snapshot %s not found", id);
        return berth_error_errno(err, errno, "remove snapshot %s", id);
    }
    if (s->opts.sync_on_commit)
        fsync(s->snapfd);
    if (overlay_rm_rf_at(s->snapfd, tmp, err) < 0)
        return berth_error_wrap(err,
                                "remove snapshot %s (its files stay in %s/%s and are "
                                "retried at the next start)",
                                id, s->snapdir, tmp);
    return 0;
}

int overlay_usage(overlay_store_t *s, const char *id, overlay_usage_t *u, berth_error_t **err)
{
    int fd = open_snap(s, id, err);
    if (fd < 0)
        return -1;
    int rc = has_entry(fd, COMMITTED_FILE) ? committed_usage(fd, u, err) : usage_of(fd, u, err);
    close(fd);
    if (rc < 0)
        berth_error_wrap(err, "usage of snapshot %s", id);
    return rc;
}

static int strv_push(char ***v, size_t *n, const char *s)
{
    char **nv = realloc(*v, (*n + 1) * sizeof(char *));
    if (!nv)
        return -1;
    *v = nv;
    if (!(nv[*n] = strdup(s)))
        return -1;
    (*n)++;
    return 0;
}

static int cmp_ids(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    size_t lx = strlen(x), ly = strlen(y);
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return strcmp(x, y);
}

/* Calls fn for each entry of the snapshots dir. */
static int scan_snapdir(overlay_store_t *s, int (*fn)(overlay_store_t *, const char *, void *),
                        void *ud, berth_error_t **err)
{
    int dfd = dup(s->snapfd);
    if (dfd < 0)
        return berth_error_errno(err, errno, "dup");
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return berth_error_errno(err, errno, "opendir %s", s->snapdir);
    }
    rewinddir(d);
    /* Collect names first: fn may rename or delete entries. */
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' &&
            (de->d_name[1] == 0 || (de->d_name[1] == '.' && de->d_name[2] == 0)))
            continue;
        if (strv_push(&names, &n, de->d_name) < 0) {
            rc = berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
    }
    closedir(d);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = fn(s, names[i], ud);
    overlay_strv_free(names, n);
    return rc;
}

typedef struct {
    char **ids, **intr;
    size_t n, ni;
    int oom;
} list_ctx_t;

static int list_one(overlay_store_t *s, const char *name, void *ud)
{
    list_ctx_t *c = ud;
    if (!overlay_id_valid(name))
        return 0;
    if (strv_push(&c->ids, &c->n, name) < 0)
        c->oom = 1;
    int fd = openat(s->snapfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        apply_state_t st = apply_state(fd);
        if ((st == APPLY_RUNNING || st == APPLY_FAILED) && !has_entry(fd, COMMITTED_FILE) &&
            strv_push(&c->intr, &c->ni, name) < 0)
            c->oom = 1;
        close(fd);
    }
    return 0;
}

int overlay_list(overlay_store_t *s, char ***ids, size_t *n, char ***interrupted, size_t *ni,
                 berth_error_t **err)
{
    list_ctx_t c = {0};
    if (scan_snapdir(s, list_one, &c, err) < 0 || c.oom) {
        overlay_strv_free(c.ids, c.n);
        overlay_strv_free(c.intr, c.ni);
        return c.oom ? berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory") : -1;
    }
    if (c.n)
        qsort(c.ids, c.n, sizeof(char *), cmp_ids);
    if (c.ni)
        qsort(c.intr, c.ni, sizeof(char *), cmp_ids);
    *ids = c.ids;
    *n = c.n;
    if (interrupted) {
        *interrupted = c.intr;
        *ni = c.ni;
    } else {
        overlay_strv_free(c.intr, c.ni);
    }
    return 0;
}

static int reconcile_one(overlay_store_t *s, const char *name, void *ud)
{
    overlay_reconcile_t *r = ud;
    if (strncmp(name, "new-", 4) == 0 || strncmp(name, "rm-", 3) == 0) {
        berth_error_t *e = NULL;
        if (overlay_rm_rf_at(s->snapfd, name, &e) < 0) {
            berth_log(BERTH_LOG_WARN,
                      "msg=\"cannot remove leftover snapshot dir\" dir=%s err=\"%s\"", name,
                      e->message);
            berth_error_free(&e);
        } else {
            berth_log(BERTH_LOG_INFO, "msg=\"removed leftover of an interrupted %s\" dir=%s",
                      name[0] == 'n' ? "prepare" : "remove", name);
            r->removed_tmp++;
        }
        return 0;
    }
    if (!overlay_id_valid(name)) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"unknown entry in snapshots dir left alone\" name=\"%.64s\"", name);
        r->unknown++;
        return 0;
    }
    int fd = openat(s->snapfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        berth_log(BERTH_LOG_WARN, "msg=\"snapshot entry is not a directory\" id=%s", name);
        r->unknown++;
        return 0;
    }
    static const char *const temps[] = {"." META_FILE ".tmp", "." APPLY_FILE ".tmp",
                                        "." COMMITTED_FILE ".tmp"};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(temps); i++)
        if (unlinkat(fd, temps[i], 0) == 0)
            berth_log(BERTH_LOG_INFO,
                      "msg=\"removed temp file of an interrupted write\" id=%s "
                      "file=%s",
                      name, temps[i]);
    if (!has_entry(fd, "fs"))
        berth_log(BERTH_LOG_WARN, "msg=\"snapshot has no fs directory\" id=%s", name);
    apply_state_t st = apply_state(fd);
    if ((st == APPLY_RUNNING || st == APPLY_FAILED) && !has_entry(fd, COMMITTED_FILE)) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"snapshot holds an unfinished layer apply; it cannot be committed and "
                  "should be removed\" id=%s",
                  name);
        r->interrupted++;
    }
    close(fd);
    return 0;
}

int overlay_reconcile(overlay_store_t *s, overlay_reconcile_t *rep, berth_error_t **err)
{
    overlay_reconcile_t r = {0};
    if (scan_snapdir(s, reconcile_one, &r, err) < 0)
        return -1;
    berth_log(BERTH_LOG_INFO,
              "msg=\"snapshot store reconciled\" cleaned=%zu interrupted_applies=%zu unknown=%zu",
              r.removed_tmp, r.interrupted, r.unknown);
    if (rep)
        *rep = r;
    return 0;
}

/* ---- apply into a snapshot ------------------------------------------------- */

/* ---- layer apply: the store's side -------------------------------------------
 * overlay_apply_snapshot() (apply.c) brackets the extraction with these two,
 * so that this file never links the extraction code (libarchive): the plugin
 * loads that part only when it applies its first layer. */

int overlay__apply_begin(overlay_store_t *s, const char *id, const char *blob_path,
                         overlay_apply_target_t *t, berth_error_t **err)
{
    memset(t, 0, sizeof(*t));
    t->snapfd = t->fsfd = t->blobfd = -1;
    int fd = open_snap(s, id, err);
    if (fd < 0)
        return -1;
    t->snapfd = fd;
    snap_meta_t meta = {0};
    if (has_entry(fd, COMMITTED_FILE)) {
        berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                        "snapshot %s is committed; apply a layer into an active snapshot", id);
        goto fail;
    }
    if (!has_entry(fd, "work")) {
        berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                        "snapshot %s is a read-only view; apply a layer into an active snapshot",
                        id);
        goto fail;
    }
    if (meta_read(fd, id, &meta, err) < 0)
        goto fail;
    t->lowers = calloc(meta.n_parents + 1, sizeof(int));
    if (!t->lowers) {
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    for (; t->n_lowers < meta.n_parents; t->n_lowers++) {
        char rel[OVERLAY_ID_MAX + 8];
        snprintf(rel, sizeof(rel), "%s/fs", meta.parents[t->n_lowers]);
        t->lowers[t->n_lowers] =
            openat(s->snapfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (t->lowers[t->n_lowers] < 0) {
            berth_error_errno(err, errno, "open parent snapshot %s", meta.parents[t->n_lowers]);
            goto fail;
        }
    }
    t->fsfd = openat(fd, "fs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (t->fsfd < 0) {
        berth_error_errno(err, errno, "open snapshot %s", id);
        goto fail;
    }
    t->blobfd = open(blob_path, O_RDONLY | O_CLOEXEC);
    if (t->blobfd < 0) {
        berth_error_errno(err, errno, "open layer blob %s", blob_path);
        goto fail;
    }
    /* Durable before we write a single entry: a crash from here on leaves a
     * snapshot that commit refuses. */
    if (write_atomic(fd, APPLY_FILE, "running\n", true, err) < 0)
        goto fail;
    meta_free(&meta);
    return 0;
fail:
    meta_free(&meta);
    overlay__apply_end(s, t, NULL, NULL);
    return -1;
}

int overlay__apply_end(overlay_store_t *s, overlay_apply_target_t *t,
                       const overlay_apply_result_t *res, berth_error_t **err)
{
    int rc = 0;
    if (t->snapfd >= 0 && t->blobfd >= 0) { /* begin got as far as the marker */
        if (!res) {
            berth_error_t *ign = NULL;
            write_atomic(t->snapfd, APPLY_FILE, "failed\n", false, &ign);
            berth_error_free(&ign);
        } else {
            /* Not fsynced: until commit, losing "done" in a crash only makes
             * the snapshot look interrupted (it is discarded and applied
             * again), and commit's syncfs makes it durable before the
             * "committed" marker is written. */
            char done[128];
            snprintf(done, sizeof(done), "done %s\n", res->diff_id);
            rc = write_atomic(t->snapfd, APPLY_FILE, done, false, err);
        }
    }
    for (size_t i = 0; i < t->n_lowers; i++)
        close(t->lowers[i]);
    free(t->lowers);
    t->lowers = NULL;
    t->n_lowers = 0;
    if (t->fsfd >= 0)
        close(t->fsfd);
    if (t->blobfd >= 0)
        close(t->blobfd);
    if (t->snapfd >= 0)
        close(t->snapfd);
    t->snapfd = t->fsfd = t->blobfd = -1;
    return rc;
}
