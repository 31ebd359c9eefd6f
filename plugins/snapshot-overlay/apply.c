/* SPDX-License-Identifier: Apache-2.0 */
/* Confined OCI layer extraction. A producer thread reads the blob,
 * decompresses it (isa-l or zlib for gzip, libzstd), hashes the uncompressed
 * bytes (the diff ID) and hands 1 MiB buffers to the extracting thread through
 * a small ring. The extractor parses tar with libarchive but performs every
 * write itself, relative to directory fds resolved inside the snapshot root
 * (openat2 RESOLVE_IN_ROOT, or an O_NOFOLLOW component walk), never following
 * a symlink when it changes owner, mode, times or xattrs. No event loop here. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>
#ifdef BERTH_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#include "berth/log.h"
#include "berth/sha256.h"
#include "internal.h"

#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif

#define RING_N 8
#define RING_BUF (1u << 20)
#define IN_BUF (1u << 20)
/* The first chunks are small so that extraction starts (and the pipeline
 * fills) after 64 KiB instead of a whole MiB: a small layer such as busybox
 * (1 MiB compressed) is extracted while it is being inflated. Chunks double
 * up to the full size. */
#define FIRST_BUF (64u << 10)
#define SPACE_CHECK_BYTES (64ull << 20)
#define SPACE_CHECK_ENTRIES 4096
#define MAX_SYMLINKS 40
#define OPAQUE_XATTR "trusted.overlay.opaque"

bool overlay_apply_force_walk;
static bool umask_is_zero;
/* Test failpoint (BERTH_FAILPOINTS=overlay.apply.pause_after_entries=N):
 * extraction stalls after N entries so a test can kill -9 mid-apply. */
static uint64_t fp_pause_after;

void overlay_apply_global_init(void)
{
    umask(0);
    umask_is_zero = true;
    const char *fp = getenv("BERTH_FAILPOINTS");
    const char *k = fp ? strstr(fp, "overlay.apply.pause_after_entries=") : NULL;
    if (k) {
        fp_pause_after = strtoull(k + strlen("overlay.apply.pause_after_entries="), NULL, 10);
        berth_log(BERTH_LOG_WARN,
                  "msg=\"failpoint armed\" failpoint=overlay.apply.pause_after_"
                  "entries n=%llu",
                  (unsigned long long)fp_pause_after);
    }
}

/* ---- producer: read, decompress, hash ---------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint8_t *buf[RING_N];
    size_t len[RING_N];
    unsigned head, tail, count;
    bool held;          /* the consumer holds buf[tail] (libarchive's current block) */
    bool eof;           /* producer published everything */
    bool stop;          /* consumer gave up */
    berth_error_t *err; /* producer's error, read after join or under mu */

    /* Producer-only state. */
    int fd;
    overlay_comp_t comp;
    uint64_t cap;
    atomic_int *cancel;
    berth_sha256_t md;        /* berth's own (SHA-NI where the CPU has it): no libcrypto */
    size_t out_want, in_want; /* current chunk sizes (ramp up to RING_BUF/IN_BUF) */
    uint64_t total;
    uint8_t *in;
    size_t in_len, in_pos;
    bool in_eof;
    bool member; /* inside a gzip member / zstd frame */
    uint64_t members;
#ifdef BERTH_HAVE_ISAL
    struct inflate_state isal;
#endif
    z_stream z;
    bool z_init;
    ZSTD_DCtx *zd;
    size_t zret; /* last ZSTD_decompressStream hint: 0 = frame complete */
} pipe_t;

static bool use_isal(void)
{
#ifdef BERTH_HAVE_ISAL
    const char *v = getenv("BERTH_APPLY_INFLATE");
    return !(v && strcmp(v, "zlib") == 0);
#else
    return false;
#endif
}

static int fill_input(pipe_t *p, berth_error_t **err)
{
    if (p->in_pos < p->in_len || p->in_eof)
        return 0;
    ssize_t n;
    do
        n = read(p->fd, p->in, p->in_want);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return berth_error_errno(err, errno, "read layer blob");
    p->in_len = (size_t)n;
    p->in_pos = 0;
    if (p->in_want < IN_BUF)
        p->in_want *= 2;
    if (n == 0)
        p->in_eof = true;
    return 0;
}

/* Decompresses into out[0..cap): sets *produced; *done at the end of input. */
static int gzip_fill(pipe_t *p, uint8_t *out, size_t cap, size_t *produced, bool *done,
                     berth_error_t **err)
{
    size_t got = 0;
    bool isal = use_isal();
    while (got < cap) {
        if (fill_input(p, err) < 0)
            return -1;
        size_t avail = p->in_len - p->in_pos;
        if (!p->member) {
            if (avail == 0 && p->in_eof) {
                if (p->members == 0)
                    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                           "layer blob is empty: not a gzip stream");
                *done = true;
                break;
            }
            p->member = true;
            p->members++;
#ifdef BERTH_HAVE_ISAL
            if (isal) {
                isal_inflate_init(&p->isal);
                p->isal.crc_flag = ISAL_GZIP;
            }
#endif
            if (!isal) {
                if (!p->z_init) {
                    if (inflateInit2(&p->z, 16 + MAX_WBITS) != Z_OK)
                        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                                               "cannot initialise zlib");
                    p->z_init = true;
                } else {
                    inflateReset(&p->z);
                }
            }
        }
        size_t before_out = got, before_in = avail;
        bool finished = false;
#ifdef BERTH_HAVE_ISAL
        if (isal) {
            p->isal.next_in = p->in + p->in_pos;
            p->isal.avail_in = (uint32_t)avail;
            p->isal.next_out = out + got;
            p->isal.avail_out = (uint32_t)(cap - got);
            int r = isal_inflate(&p->isal);
            if (r < 0)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "layer is not valid gzip (%s, member %llu)",
                                       r == ISAL_INVALID_WRAPPER ? "bad gzip header or trailing "
                                                                   "garbage"
                                       : r == ISAL_INCORRECT_CHECKSUM ? "CRC mismatch"
                                                                      : "corrupt deflate data",
                                       (unsigned long long)p->members);
            got = cap - p->isal.avail_out;
            p->in_pos += avail - p->isal.avail_in;
            finished = p->isal.block_state == ISAL_BLOCK_FINISH;
        }
#endif
        if (!isal) {
            p->z.next_in = p->in + p->in_pos;
            p->z.avail_in = (uInt)avail;
            p->z.next_out = out + got;
            p->z.avail_out = (uInt)(cap - got);
            int r = inflate(&p->z, Z_NO_FLUSH);
            if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR)
                return berth_error_set(
                    err, BERTH_E_INVALID_ARGUMENT, "layer is not valid gzip (%s, member %llu)",
                    p->z.msg ? p->z.msg : "corrupt data", (unsigned long long)p->members);
            got = cap - p->z.avail_out;
            p->in_pos += avail - p->z.avail_in;
            finished = r == Z_STREAM_END;
        }
        if (finished) {
            p->member = false;
            continue;
        }
        size_t now_avail = p->in_len - p->in_pos;
        if (got == before_out && now_avail == before_in && p->in_eof)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "layer gzip stream is truncated (ends inside member %llu)",
                                   (unsigned long long)p->members);
    }
    *produced = got;
    return 0;
}

static int zstd_fill(pipe_t *p, uint8_t *out, size_t cap, size_t *produced, bool *done,
                     berth_error_t **err)
{
    size_t got = 0;
    if (!p->zd) {
        p->zd = ZSTD_createDCtx();
        if (!p->zd)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "cannot initialise zstd");
        /* 128 MiB window at most: a hostile frame cannot make us allocate more. */
        ZSTD_DCtx_setParameter(p->zd, ZSTD_d_windowLogMax, 27);
        p->zret = 1;
    }
    while (got < cap) {
        if (fill_input(p, err) < 0)
            return -1;
        size_t avail = p->in_len - p->in_pos;
        if (avail == 0 && p->in_eof) {
            if (p->members == 0)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "layer blob is empty: not a zstd stream");
            if (p->zret != 0)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "layer zstd stream is truncated");
            *done = true;
            break;
        }
        if (p->zret == 0 || p->members == 0)
            p->members++;
        ZSTD_inBuffer ib = {p->in + p->in_pos, avail, 0};
        ZSTD_outBuffer ob = {out + got, cap - got, 0};
        size_t r = ZSTD_decompressStream(p->zd, &ob, &ib);
        if (ZSTD_isError(r))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "layer is not valid zstd (%s)",
                                   ZSTD_getErrorName(r));
        p->zret = r;
        p->in_pos += ib.pos;
        got += ob.pos;
    }
    *produced = got;
    return 0;
}

static int plain_fill(pipe_t *p, uint8_t *out, size_t cap, size_t *produced, bool *done,
                      berth_error_t **err)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(p->fd, out + got, cap - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return berth_error_errno(err, errno, "read layer blob");
        }
        if (n == 0) {
            *done = true;
            break;
        }
        got += (size_t)n;
    }
    *produced = got;
    return 0;
}

static void *producer_main(void *arg)
{
    pipe_t *p = arg;
    berth_error_t *err = NULL;
    bool done = false;
    while (!done) {
        pthread_mutex_lock(&p->mu);
        while (p->count == RING_N && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        bool stop = p->stop;
        unsigned slot = p->head;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        if (p->cancel && atomic_load(p->cancel)) {
            berth_error_set(&err, BERTH_E_CANCELED, "layer apply canceled");
            break;
        }
        size_t n = 0;
        int rc;
        switch (p->comp) {
        case OVERLAY_COMP_GZIP:
            rc = gzip_fill(p, p->buf[slot], p->out_want, &n, &done, &err);
            break;
        case OVERLAY_COMP_ZSTD:
            rc = zstd_fill(p, p->buf[slot], p->out_want, &n, &done, &err);
            break;
        default:
            rc = plain_fill(p, p->buf[slot], p->out_want, &n, &done, &err);
            break;
        }
        if (rc < 0)
            break;
        if (n) {
            berth_sha256_update(&p->md, p->buf[slot], n);
            p->total += n;
            if (p->cap && p->total > p->cap) {
                berth_error_set(&err, BERTH_E_RESOURCE_EXHAUSTED,
                                "layer uncompressed size passes the configured limit of %llu "
                                "bytes (apply_max_uncompressed_bytes): stopped as a "
                                "decompression bomb",
                                (unsigned long long)p->cap);
                break;
            }
        }
        pthread_mutex_lock(&p->mu);
        if (n) {
            p->len[slot] = n;
            p->head = (p->head + 1) % RING_N;
            p->count++;
            if (p->out_want < RING_BUF)
                p->out_want *= 2;
        }
        if (done)
            p->eof = true;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    if (err) {
        pthread_mutex_lock(&p->mu);
        p->err = err;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

/* Next buffer for the consumer: releases the held one first. Returns the
 * length, 0 at the end, -1 when the producer failed. */
static ssize_t pipe_next(pipe_t *p, const void **buf)
{
    pthread_mutex_lock(&p->mu);
    if (p->held) {
        p->held = false;
        p->tail = (p->tail + 1) % RING_N;
        p->count--;
        pthread_cond_broadcast(&p->cv);
    }
    while (p->count == 0 && !p->eof && !p->err)
        pthread_cond_wait(&p->cv, &p->mu);
    ssize_t n;
    if (p->count > 0) {
        p->held = true;
        *buf = p->buf[p->tail];
        n = (ssize_t)p->len[p->tail];
    } else {
        n = p->err ? -1 : 0;
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

static la_ssize_t archive_read_cb(struct archive *a, void *ud, const void **buf)
{
    ssize_t n = pipe_next(ud, buf);
    if (n < 0)
        archive_set_error(a, EIO, "layer stream failed");
    return n;
}

/* ---- extraction context --------------------------------------------------- */

typedef struct {
    char *path;
    struct timespec ts[2];
} dirtime_t;

typedef struct {
    int rootfd;
    dev_t rootdev;
    const overlay_apply_opts_t *o;
    overlay_apply_result_t *res;

    /* Cleaned path of the current entry: "a/b/c", base at path+base_off. */
    char *path;
    size_t path_cap;

    /* One-entry cache of the last parent directory. */
    char *cpath;
    size_t cpath_len, cpath_cap;
    int cfd;
    bool cvalid;
    bool c_setgid;
    gid_t c_gid;

    dirtime_t *dirs;
    size_t ndirs, capdirs;

    uid_t euid;
    gid_t egid;
    uint64_t bytes_since_check;
    uint64_t entries_since_check;
    bool warned_xattr;
    char ename[224]; /* printable entry name for messages */
} ax_t;

static void set_ename(ax_t *x, const char *raw)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)raw; *p; p++) {
        if (o + 8 >= sizeof(x->ename)) {
            strcpy(x->ename + o, "...");
            return;
        }
        if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
            o += (size_t)sprintf(x->ename + o, "\\x%02x", *p);
        else
            x->ename[o++] = (char)*p;
    }
    x->ename[o] = 0;
}

static int entry_err(ax_t *x, berth_error_t **err, berth_code_t code, const char *fmt, ...)
    BERTH_PRINTF(4, 5);
static int entry_err(ax_t *x, berth_error_t **err, berth_code_t code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return berth_error_set(err, code, "layer entry \"%s\": %s", x->ename, msg);
}

static int entry_errno(ax_t *x, berth_error_t **err, int e, const char *what)
{
    berth_code_t code = berth_code_from_errno(e);
    if (e == ENOENT || e == ENOTDIR || e == ELOOP || e == EXDEV || e == EEXIST || e == EPERM)
        code = BERTH_E_INVALID_ARGUMENT; /* the layer is at fault, not our store */
    if (e == ENOSPC || e == EDQUOT)
        code = BERTH_E_RESOURCE_EXHAUSTED;
    return entry_err(x, err, code, "%s: %s", what, strerror(e));
}

/* Cleans a tar path into x->path: leading '/' dropped (paths are relative to
 * the layer root), "" and "." components dropped. Any ".." is refused: no
 * legitimate layer needs one, and refusing is simpler to trust than
 * clamping. Returns the cleaned length (0 = the root itself) and the offset
 * of the last component, or -1. */
static ssize_t clean_path(ax_t *x, const char *in, size_t *base_off)
{
    size_t n = strlen(in);
    if (n + 2 > x->path_cap) {
        size_t nc = n + 64;
        char *np = realloc(x->path, nc);
        if (!np)
            return -2;
        x->path = np;
        x->path_cap = nc;
    }
    size_t o = 0;
    *base_off = 0;
    const char *p = in;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t len = (size_t)(p - s);
        if (len == 1 && s[0] == '.')
            continue;
        if (len == 2 && s[0] == '.' && s[1] == '.')
            return -1;
        if (o)
            x->path[o++] = '/';
        *base_off = o;
        memcpy(x->path + o, s, len);
        o += len;
    }
    x->path[o] = 0;
    return (ssize_t)o;
}

static bool have_openat2 = true;

static int openat2_in_root(int rootfd, const char *path, uint64_t flags)
{
    struct open_how how = {
        .flags = flags | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    int fd = -1;
    for (int i = 0; i < 16; i++) {
        fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
        if (fd >= 0 || errno != EAGAIN)
            break;
    }
    if (fd < 0 && (errno == ENOSYS || errno == E2BIG))
        have_openat2 = false;
    return fd;
}

/* ---- attributes -------------------------------------------------------- */

static bool xattr_skipped(const char *name)
{
    /* Overlay's private xattrs would let a layer forge whiteouts, redirects
     * or metacopy in the merged view. */
    return strncmp(name, "trusted.overlay.", 16) == 0 || strncmp(name, "user.overlay.", 13) == 0;
}

/* Sets the entry's xattrs on fd, or (fd < 0) on pfd/base without following. */
static int apply_xattrs(ax_t *x, struct archive_entry *e, int fd, int pfd, const char *base,
                        berth_error_t **err)
{
    const char *name;
    const void *val;
    size_t sz;
    if (archive_entry_xattr_reset(e) == 0)
        return 0;
    char proc[64 + NAME_MAX];
    if (fd < 0)
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", pfd, base);
    while (archive_entry_xattr_next(e, &name, &val, &sz) == ARCHIVE_OK) {
        if (!name || !*name)
            continue;
        if (xattr_skipped(name)) {
            x->res->skipped_xattrs++;
            berth_log(BERTH_LOG_DEBUG,
                      "msg=\"overlay xattr from layer dropped\" entry=\"%s\" "
                      "xattr=%s",
                      x->ename, name);
            continue;
        }
        /* lsetxattr on "/proc/self/fd/<dir>/<base>": the magic link only
         * names the already-resolved parent; base itself is not followed. */
        int r = fd >= 0 ? fsetxattr(fd, name, val, sz, 0) : lsetxattr(proc, name, val, sz, 0);
        if (r < 0) {
            if (errno == ENOTSUP || errno == EOPNOTSUPP) {
                if (!x->warned_xattr)
                    berth_log(BERTH_LOG_WARN,
                              "msg=\"xattr not supported by the snapshot "
                              "filesystem, skipped\" entry=\"%s\" xattr=%s",
                              x->ename, name);
                x->warned_xattr = true;
                continue;
            }
            char what[300];
            snprintf(what, sizeof(what), "set xattr %.200s", name);
            return entry_errno(x, err, errno, what);
        }
    }
    return 0;
}

static int get_owner(ax_t *x, struct archive_entry *e, uid_t *uid, gid_t *gid, berth_error_t **err)
{
    la_int64_t u = archive_entry_uid(e), g = archive_entry_gid(e);
    /* (uid_t)-1 means "unchanged" to chown: never a valid owner. */
    if (u < 0 || u >= 0xFFFFFFFFLL || g < 0 || g >= 0xFFFFFFFFLL)
        return entry_err(x, err, BERTH_E_INVALID_ARGUMENT, "owner %lld:%lld out of range",
                         (long long)u, (long long)g);
    *uid = (uid_t)u;
    *gid = (gid_t)g;
    return 0;
}

static void get_times(struct archive_entry *e, struct timespec ts[2])
{
    ts[1].tv_sec = archive_entry_mtime(e);
    ts[1].tv_nsec = archive_entry_mtime_nsec(e);
    if (ts[1].tv_sec < 0 || ts[1].tv_nsec < 0 || ts[1].tv_nsec >= 1000000000L) {
        ts[1].tv_sec = 0;
        ts[1].tv_nsec = 0;
    }
    ts[0] = ts[1];
    if (archive_entry_atime_is_set(e)) {
        struct timespec a = {archive_entry_atime(e), archive_entry_atime_nsec(e)};
        if (a.tv_nsec >= 0 && a.tv_nsec < 1000000000L &&
            (a.tv_sec > ts[1].tv_sec || (a.tv_sec == ts[1].tv_sec && a.tv_nsec > ts[1].tv_nsec)))
            ts[0] = a;
    }
}

static int record_dir(ax_t *x, const char *path, const struct timespec ts[2], berth_error_t **err)
{
    if (x->ndirs == x->capdirs) {
        size_t nc = x->capdirs ? x->capdirs * 2 : 256;
        dirtime_t *nd = realloc(x->dirs, nc * sizeof(*nd));
        if (!nd)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        x->dirs = nd;
        x->capdirs = nc;
    }
    char *p = strdup(path);
    if (!p)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    x->dirs[x->ndirs].path = p;
    x->dirs[x->ndirs].ts[0] = ts[0];
    x->dirs[x->ndirs].ts[1] = ts[1];
    x->ndirs++;
    return 0;
}

/* A directory we had to create because the layer did not list it: copy owner,
 * mode, xattrs and times from the same path in the nearest parent that has it
 * (containerd's mkparent), so the merged view does not change. */
static int copy_dir_from_lowers(ax_t *x, int pfd, const char *name, const char *relpath,
                                berth_error_t **err)
{
    for (size_t i = 0; i < x->o->n_lowers; i++) {
        int lfd = openat2_in_root(x->o->lower_fds[i], relpath, O_RDONLY | O_NOFOLLOW | O_PATH);
        if (lfd < 0) {
            if (errno == ENOENT)
                continue;
            return 0; /* a non-directory component or similar: nothing to copy */
        }
        struct stat st;
        int r = fstat(lfd, &st);
        close(lfd);
        if (r < 0 || !S_ISDIR(st.st_mode))
            return 0; /* replaced in that layer: keep defaults */
        lfd = openat2_in_root(x->o->lower_fds[i], relpath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        int dfd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0) {
            if (lfd >= 0)
                close(lfd);
            return entry_errno(x, err, errno, "open created parent directory");
        }
        if (fchown(dfd, st.st_uid, st.st_gid) < 0 || fchmod(dfd, st.st_mode & 07777) < 0) {
            int e = errno;
            close(dfd);
            if (lfd >= 0)
                close(lfd);
            return entry_errno(x, err, e, "copy attributes of parent directory");
        }
        if (lfd >= 0) {
            char names[65536];
            ssize_t n = flistxattr(lfd, names, sizeof(names));
            for (ssize_t off = 0; n > 0 && off < n; off += (ssize_t)strlen(names + off) + 1) {
                const char *xn = names + off;
                if (xattr_skipped(xn))
                    continue;
                char val[65536];
                ssize_t vn = fgetxattr(lfd, xn, val, sizeof(val));
                if (vn >= 0)
                    fsetxattr(dfd, xn, val, (size_t)vn, 0);
            }
            close(lfd);
        }
        close(dfd);
        struct timespec ts[2] = {st.st_atim, st.st_mtim};
        return record_dir(x, relpath, ts, err);
    }
    return 0;
}

/* ---- resolution inside the root ------------------------------------------ */

/* Component walk from the root, the fallback when openat2 is missing and the
 * way to reach paths longer than PATH_MAX. Symlinks are read and resolved
 * against the root (absolute targets restart at the root, ".." stops at it),
 * like RESOLVE_IN_ROOT. Returns an owned O_RDONLY|O_DIRECTORY fd or -1 with
 * errno set. `create` makes missing directories. */
static int walk_resolve(ax_t *x, const char *path, bool create, berth_error_t **err)
{
    char *rest = strdup(path);
    char *real = malloc(strlen(path) + 2); /* the resolved path, for lower lookups */
    size_t real_cap = strlen(path) + 2, real_len = 0;
    int cur = rest && real ? dup(x->rootfd) : -1;
    int depth = 0, links = 0, e = 0;
    if (cur < 0) {
        e = rest && real ? errno : ENOMEM;
        goto fail;
    }
    real[0] = 0;
    size_t pos = 0;
    while (rest[pos]) {
        while (rest[pos] == '/')
            pos++;
        if (!rest[pos])
            break;
        size_t s = pos;
        while (rest[pos] && rest[pos] != '/')
            pos++;
        char save = rest[pos];
        rest[pos] = 0;
        const char *comp = rest + s;
        if (strcmp(comp, ".") == 0) {
            rest[pos] = save;
            continue;
        }
        if (strcmp(comp, "..") == 0) {
            rest[pos] = save;
            if (depth == 0)
                continue; /* ".." at the root stays at the root */
            int up = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (up < 0) {
                e = errno;
                goto fail;
            }
            close(cur);
            cur = up;
            depth--;
            char *sl = strrchr(real, '/');
            real_len = sl ? (size_t)(sl - real) : 0;
            real[real_len] = 0;
            continue;
        }
        int fd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && create) {
            if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST) {
                e = errno;
                goto fail;
            }
            char rel[PATH_MAX];
            int rn = real_len ? snprintf(rel, sizeof(rel), "%s/%s", real, comp)
                              : snprintf(rel, sizeof(rel), "%s", comp);
            if (rn > 0 && (size_t)rn < sizeof(rel) &&
                copy_dir_from_lowers(x, cur, comp, rel, err) < 0) {
                e = EIO;
                goto fail;
            }
            fd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
            struct stat st;
            if (fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
                if (++links > MAX_SYMLINKS) {
                    e = ELOOP;
                    goto fail;
                }
                char target[PATH_MAX];
                ssize_t tn = readlinkat(cur, comp, target, sizeof(target) - 1);
                if (tn <= 0) {
                    e = tn < 0 ? errno : ENOENT;
                    goto fail;
                }
                target[tn] = 0;
                rest[pos] = save;
                char *nr = NULL;
                if (asprintf(&nr, "%s/%s", target, rest + pos) < 0) {
                    e = ENOMEM;
                    goto fail;
                }
                free(rest);
                rest = nr;
                pos = 0;
                if (target[0] == '/') {
                    int r = dup(x->rootfd);
                    if (r < 0) {
                        e = errno;
                        goto fail;
                    }
                    close(cur);
                    cur = r;
                    depth = 0;
                    real_len = 0;
                    real[0] = 0;
                }
                continue;
            }
            e = ENOTDIR;
            goto fail;
        }
        if (fd < 0) {
            e = errno;
            goto fail;
        }
        struct stat st;
        int fr = fstat(fd, &st);
        if (fr < 0 || st.st_dev != x->rootdev) {
            e = fr < 0 ? errno : EXDEV;
            close(fd);
            goto fail;
        }
        close(cur);
        cur = fd;
        depth++;
        size_t cl = strlen(comp);
        if (real_len + cl + 2 > real_cap) {
            real_cap = (real_len + cl + 2) * 2;
            char *nr = realloc(real, real_cap);
            if (!nr) {
                e = ENOMEM;
                goto fail;
            }
            real = nr;
        }
        if (real_len)
            real[real_len++] = '/';
        memcpy(real + real_len, comp, cl + 1);
        real_len += cl;
        rest[pos] = save;
    }
    free(rest);
    free(real);
    return cur;
fail:
    if (cur >= 0)
        close(cur);
    free(rest);
    free(real);
    errno = e ? e : EIO;
    return -1;
}

/* openat2-based resolution. A missing component (rare: a layer that does not
 * list a parent directory) goes to the walker, which creates it where the
 * path really leads, through symlinks, inside the root. */
static int resolve_openat2(ax_t *x, const char *path, bool create, berth_error_t **err)
{
    int fd = openat2_in_root(x->rootfd, path, O_RDONLY | O_DIRECTORY);
    if (fd >= 0 || errno != ENOENT || !create)
        return fd;
    return walk_resolve(x, path, true, err);
}

static int resolve_any(ax_t *x, const char *path, bool create, berth_error_t **err)
{
    if (!*path)
        return dup(x->rootfd);
    if (have_openat2 && !overlay_apply_force_walk && strlen(path) < PATH_MAX - 1) {
        int fd = resolve_openat2(x, path, create, err);
        if (fd >= 0 || have_openat2)
            return fd;
    }
    return walk_resolve(x, path, create, err);
}

static void cache_drop(ax_t *x)
{
    if (x->cfd >= 0)
        close(x->cfd);
    x->cfd = -1;
    x->cvalid = false;
}

/* Returns the parent directory fd for path[0..len) (borrowed from the cache). */
static int parent_fd(ax_t *x, const char *ppath, size_t len, berth_error_t **err)
{
    if (x->cvalid && x->cpath_len == len && memcmp(x->cpath, ppath, len) == 0)
        return x->cfd;
    cache_drop(x);
    if (len + 1 > x->cpath_cap) {
        char *np = realloc(x->cpath, len + 64);
        if (!np)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        x->cpath = np;
        x->cpath_cap = len + 64;
    }
    memcpy(x->cpath, ppath, len);
    x->cpath[len] = 0;
    int fd = resolve_any(x, x->cpath, true, err);
    if (fd < 0) {
        if (err && *err)
            return -1;
        int e = errno;
        const char *why = e == ENOTDIR ? "a parent is not a directory"
                          : e == ELOOP ? "too many symlinks in its parent path"
                          : e == EXDEV ? "its parent path crosses a mount point"
                                       : "resolve its parent directory";
        return entry_errno(x, err, e, why);
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return entry_errno(x, err, e, "stat parent directory");
    }
    x->cfd = fd;
    x->cpath_len = len;
    x->cvalid = true;
    x->c_setgid = (st.st_mode & S_ISGID) != 0;
    x->c_gid = st.st_gid;
    return fd;
}

/* Removes what is at pfd/base unless both it and the new entry are
 * directories (*kept). Never follows a symlink. */
static int remove_existing(ax_t *x, int pfd, const char *base, bool new_is_dir, bool *kept,
                           berth_error_t **err)
{
    struct stat st;
    if (kept)
        *kept = false;
    if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0;
        return entry_errno(x, err, errno, "stat existing entry");
    }
    if (S_ISDIR(st.st_mode)) {
        if (new_is_dir) {
            if (kept)
                *kept = true;
            return 0;
        }
        if (overlay_rm_rf_at(pfd, base, err) < 0)
            return berth_error_wrap(err, "layer entry \"%s\": replace directory", x->ename);
    } else if (unlinkat(pfd, base, 0) < 0 && errno != ENOENT) {
        return entry_errno(x, err, errno, "remove existing entry");
    }
    /* Anything cached below a replaced path is stale; the cached fd itself
     * stays valid until the next lookup closes it. */
    x->cvalid = false;
    return 0;
}

static bool chown_needed(ax_t *x, uid_t uid, gid_t gid)
{
    gid_t created_gid = x->c_setgid ? x->c_gid : x->egid;
    return uid != x->euid || gid != created_gid;
}

static int check_space(ax_t *x, berth_error_t **err)
{
    x->bytes_since_check = 0;
    x->entries_since_check = 0;
    if (!x->o->min_free_bytes)
        return 0;
    struct statvfs sv;
    if (fstatvfs(x->rootfd, &sv) < 0)
        return 0;
    uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    if (avail < x->o->min_free_bytes)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                               "layer apply stopped: %llu MiB free on the snapshot filesystem, "
                               "below the configured reserve of %llu MiB (apply_reserve_bytes)",
                               (unsigned long long)(avail >> 20),
                               (unsigned long long)(x->o->min_free_bytes >> 20));
    return 0;
}

/* ---- entry writers --------------------------------------------------------- */

static int write_data(ax_t *x, struct archive *a, int fd, la_int64_t size, berth_error_t **err)
{
    const void *buf;
    size_t len;
    la_int64_t off, pos = 0;
    for (;;) {
        int r = archive_read_data_block(a, &buf, &len, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN)
            return -2; /* reported by the caller (stream error or truncation) */
        const char *p = buf;
        while (len > 0) {
            ssize_t w = off == pos ? write(fd, p, len) : pwrite(fd, p, len, off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return entry_errno(x, err, errno, "write file data");
            }
            p += w;
            len -= (size_t)w;
            off += w;
            pos = off;
            x->bytes_since_check += (uint64_t)w;
        }
    }
    if (size > pos && ftruncate(fd, size) < 0) /* sparse tail */
        return entry_errno(x, err, errno, "extend sparse file");
    return 0;
}

static int do_regular(ax_t *x, struct archive *a, struct archive_entry *e, int pfd,
                      const char *base, berth_error_t **err)
{
    uid_t uid = 0;
    gid_t gid = 0;
    if (get_owner(x, e, &uid, &gid, err) < 0)
        return -1;
    mode_t mode = archive_entry_perm(e) & 07777;
    int fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777);
    if (fd < 0 && errno == EEXIST) {
        if (remove_existing(x, pfd, base, false, NULL, err) < 0)
            return -1;
        fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777);
    }
    if (fd < 0)
        return entry_errno(x, err, errno, "create file");
    int rc = write_data(x, a, fd, archive_entry_size(e), err);
    if (rc < 0)
        goto out;
    rc = -1;
    /* Order matters: chown clears setuid/setgid and file capabilities, so
     * chown, then xattrs (security.capability), then the mode bits. */
    if (chown_needed(x, uid, gid) && fchown(fd, uid, gid) < 0) {
        entry_errno(x, err, errno, "chown");
        goto out;
    }
    if (apply_xattrs(x, e, fd, pfd, base, err) < 0)
        goto out;
    if (((mode & 07000) || !umask_is_zero) && fchmod(fd, mode) < 0) {
        entry_errno(x, err, errno, "chmod");
        goto out;
    }
    struct timespec ts[2];
    get_times(e, ts);
    if (futimens(fd, ts) < 0) {
        entry_errno(x, err, errno, "set times");
        goto out;
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

static int do_dir(ax_t *x, struct archive_entry *e, int pfd, const char *base, berth_error_t **err)
{
    uid_t uid = 0;
    gid_t gid = 0;
    if (get_owner(x, e, &uid, &gid, err) < 0)
        return -1;
    mode_t mode = archive_entry_perm(e) & 07777;
    bool existed = false;
    if (mkdirat(pfd, base, mode & 01777) < 0) {
        if (errno != EEXIST)
            return entry_errno(x, err, errno, "create directory");
        if (remove_existing(x, pfd, base, true, &existed, err) < 0)
            return -1;
        if (!existed && mkdirat(pfd, base, mode & 01777) < 0)
            return entry_errno(x, err, errno, "create directory");
    }
    mode_t got = (mode & 01777) | (x->c_setgid ? S_ISGID : 0);
    bool need_chown = existed || chown_needed(x, uid, gid);
    bool need_chmod = existed || !umask_is_zero || got != mode || need_chown;
    if (need_chown || need_chmod || archive_entry_xattr_count(e) > 0) {
        int dfd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
            return entry_errno(x, err, errno, "open directory");
        int rc = 0;
        if (need_chown && fchown(dfd, uid, gid) < 0)
            rc = entry_errno(x, err, errno, "chown");
        else if (apply_xattrs(x, e, dfd, pfd, base, err) < 0)
            rc = -1;
        else if (need_chmod && fchmod(dfd, mode) < 0)
            rc = entry_errno(x, err, errno, "chmod");
        close(dfd);
        if (rc < 0)
            return -1;
    }
    struct timespec ts[2];
    get_times(e, ts);
    return record_dir(x, x->path, ts, err);
}

/* Owner, xattrs, special mode bits and times of a node that has no fd of its
 * own (symlink, device, fifo): all by name in pfd, without following. */
static int finish_by_name(ax_t *x, struct archive_entry *e, int pfd, const char *base, bool symlink,
                          berth_error_t **err)
{
    uid_t uid = 0;
    gid_t gid = 0;
    if (get_owner(x, e, &uid, &gid, err) < 0)
        return -1;
    if (chown_needed(x, uid, gid) && fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
        return entry_errno(x, err, errno, "chown");
    if (apply_xattrs(x, e, -1, pfd, base, err) < 0)
        return -1;
    mode_t mode = archive_entry_perm(e) & 07777;
    if (!symlink && ((mode & 07000) || !umask_is_zero)) {
        if (syscall(__NR_fchmodat2, pfd, base, mode, AT_SYMLINK_NOFOLLOW) < 0) {
            /* Kernels before 6.6: fall back to fchmodat, safe because we
             * created base ourselves a moment ago and it is not a symlink. */
            if ((errno != ENOSYS && errno != EINVAL) || fchmodat(pfd, base, mode, 0) < 0)
                return entry_errno(x, err, errno, "chmod");
        }
    }
    struct timespec ts[2];
    get_times(e, ts);
    if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return entry_errno(x, err, errno, "set times");
    return 0;
}

static int do_symlink(ax_t *x, struct archive_entry *e, int pfd, const char *base,
                      berth_error_t **err)
{
    const char *target = archive_entry_symlink(e);
    if (!target)
        target = archive_entry_symlink_utf8(e);
    if (!target || !*target)
        return entry_err(x, err, BERTH_E_INVALID_ARGUMENT, "symlink has an empty target");
    if (symlinkat(target, pfd, base) < 0) {
        if (errno != EEXIST)
            return entry_errno(x, err, errno, "create symlink");
        if (remove_existing(x, pfd, base, false, NULL, err) < 0)
            return -1;
        if (symlinkat(target, pfd, base) < 0)
            return entry_errno(x, err, errno, "create symlink");
    }
    /* A new symlink can redirect later lookups through the cached parent. */
    x->cvalid = false;
    return finish_by_name(x, e, pfd, base, true, err);
}

static int do_node(ax_t *x, struct archive_entry *e, int pfd, const char *base, mode_t type,
                   berth_error_t **err)
{
    dev_t dev = 0;
    if (type == S_IFCHR || type == S_IFBLK) {
        unsigned long ma = (unsigned long)archive_entry_rdevmajor(e);
        unsigned long mi = (unsigned long)archive_entry_rdevminor(e);
        /* Linux dev_t: 12-bit major, 20-bit minor. */
        if (ma > 0xfff || mi > 0xfffff)
            return entry_err(x, err, BERTH_E_INVALID_ARGUMENT, "device number %lu:%lu out of range",
                             ma, mi);
        dev = makedev(ma, mi);
    }
    mode_t mode = archive_entry_perm(e) & 0777;
    if (mknodat(pfd, base, type | mode, dev) < 0) {
        if (errno != EEXIST)
            return entry_errno(x, err, errno, "create device node or fifo");
        if (remove_existing(x, pfd, base, false, NULL, err) < 0)
            return -1;
        if (mknodat(pfd, base, type | mode, dev) < 0)
            return entry_errno(x, err, errno, "create device node or fifo");
    }
    return finish_by_name(x, e, pfd, base, false, err);
}

static int do_hardlink(ax_t *x, const char *linkname, int pfd, const char *base,
                       berth_error_t **err)
{
    /* Clean the target into its own buffer (x->path holds the entry). */
    size_t tlen = strlen(linkname);
    char *t = malloc(tlen + 2);
    if (!t)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    size_t o = 0, tbase = 0;
    const char *p = linkname;
    int rc = -1;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t len = (size_t)(p - s);
        if (len == 1 && s[0] == '.')
            continue;
        if (len == 2 && s[0] == '.' && s[1] == '.') {
            entry_err(x, err, BERTH_E_INVALID_ARGUMENT, "hardlink target contains \"..\"");
            goto out;
        }
        if (o)
            t[o++] = '/';
        tbase = o;
        memcpy(t + o, s, len);
        o += len;
    }
    t[o] = 0;
    if (o == 0) {
        entry_err(x, err, BERTH_E_INVALID_ARGUMENT, "hardlink to the layer root");
        goto out;
    }
    if (strcmp(t, x->path) == 0) { /* a link to itself: nothing to do */
        rc = 0;
        goto out;
    }
    t[tbase ? tbase - 1 : 0] = tbase ? 0 : t[0];
    const char *tdir = tbase ? t : "";
    const char *tname = t + tbase;
    int tpfd = resolve_any(x, tdir, false, err);
    if (tpfd < 0) {
        if (!(err && *err))
            entry_errno(x, err, errno,
                        errno == ENOENT ? "hardlink target not found in this layer"
                                        : "resolve hardlink target");
        goto out;
    }
    /* flags 0: a symlink target is linked itself, never followed. */
    if (linkat(tpfd, tname, pfd, base, 0) < 0) {
        int e = errno;
        if (e == EEXIST) {
            struct stat a, b;
            if (fstatat(tpfd, tname, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
                fstatat(pfd, base, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino &&
                a.st_dev == b.st_dev) {
                close(tpfd);
                rc = 0;
                goto out;
            }
            if (remove_existing(x, pfd, base, false, NULL, err) < 0) {
                close(tpfd);
                goto out;
            }
            e = linkat(tpfd, tname, pfd, base, 0) < 0 ? errno : 0;
        }
        if (e) {
            close(tpfd);
            entry_errno(x, err, e,
                        e == ENOENT ? "hardlink target not found in this layer"
                                    : "create hardlink");
            goto out;
        }
    }
    close(tpfd);
    rc = 0;
out:
    free(t);
    return rc;
}

static int do_whiteout(ax_t *x, int pfd, const char *base, berth_error_t **err)
{
    if (strcmp(base, ".wh..wh..opq") == 0) {
        int dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            return entry_errno(x, err, errno, "open directory for opaque whiteout");
        int r = fsetxattr(dfd, OPAQUE_XATTR, "y", 1, 0);
        int e = errno;
        close(dfd);
        if (r < 0)
            return entry_errno(x, err, e, "mark directory opaque");
        x->res->whiteouts++;
        return 0;
    }
    if (strncmp(base, ".wh..wh.", 8) == 0)
        return 0; /* other AUFS metadata: ignored, like containerd */
    const char *name = base + 4;
    if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return entry_err(x, err, BERTH_E_INVALID_ARGUMENT,
                         "whiteout names \"%s\", not an entry of its directory", name);
    struct stat st;
    if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        /* OCI: a whiteout hides only lower layers; an entry of this same
         * layer stays (and already hides the lower one). */
        berth_log(BERTH_LOG_DEBUG,
                  "msg=\"whiteout of an entry of the same layer ignored\" "
                  "entry=\"%s\"",
                  x->ename);
        return 0;
    }
    if (mknodat(pfd, name, S_IFCHR, makedev(0, 0)) < 0)
        return entry_errno(x, err, errno, "create overlay whiteout");
    x->res->whiteouts++;
    return 0;
}

static int do_entry(ax_t *x, struct archive *a, struct archive_entry *e, berth_error_t **err)
{
    const char *raw = archive_entry_pathname(e);
    if (!raw)
        raw = archive_entry_pathname_utf8(e);
    if (!raw)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "layer entry %llu has no usable path",
                               (unsigned long long)x->res->entries);
    set_ename(x, raw);
    size_t boff;
    ssize_t n = clean_path(x, raw, &boff);
    if (n == -2)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    if (n < 0)
        return entry_err(x, err, BERTH_E_INVALID_ARGUMENT,
                         "path contains \"..\" (refused: it could leave the layer root)");
    if (n == 0)
        return 0; /* the root itself: its attributes belong to the snapshot */
    const char *base = x->path + boff;
    if (strlen(base) > NAME_MAX)
        return entry_errno(x, err, ENAMETOOLONG, "name");
    int pfd = parent_fd(x, x->path, boff ? boff - 1 : 0, err);
    if (pfd < 0)
        return -1;

    if (strncmp(base, ".wh.", 4) == 0)
        return do_whiteout(x, pfd, base, err);

    const char *hl = archive_entry_hardlink(e);
    if (!hl)
        hl = archive_entry_hardlink_utf8(e);
    if (hl)
        return do_hardlink(x, hl, pfd, base, err);

    mode_t type = archive_entry_filetype(e);
    switch (type) {
    case AE_IFREG:
        return do_regular(x, a, e, pfd, base, err);
    case AE_IFDIR:
        return do_dir(x, e, pfd, base, err);
    case AE_IFLNK:
        return do_symlink(x, e, pfd, base, err);
    case AE_IFCHR:
        return do_node(x, e, pfd, base, S_IFCHR, err);
    case AE_IFBLK:
        return do_node(x, e, pfd, base, S_IFBLK, err);
    case AE_IFIFO:
        return do_node(x, e, pfd, base, S_IFIFO, err);
    default:
        return entry_err(x, err, BERTH_E_INVALID_ARGUMENT, "unsupported entry type 0%o",
                         (unsigned)type);
    }
}

/* Directory times last: creating entries changed them. */
static void fix_dir_times(ax_t *x)
{
    for (size_t i = 0; i < x->ndirs; i++) {
        const char *p = x->dirs[i].path;
        int fd = -1;
        if (have_openat2 && !overlay_apply_force_walk && strlen(p) < PATH_MAX - 1) {
            fd = openat2_in_root(x->rootfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        } else {
            const char *sl = strrchr(p, '/');
            char *dir = sl ? strndup(p, (size_t)(sl - p)) : strdup("");
            int pfd = dir ? resolve_any(x, dir, false, NULL) : -1;
            free(dir);
            if (pfd >= 0) {
                fd = openat(pfd, sl ? sl + 1 : p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                close(pfd);
            }
        }
        if (fd < 0)
            continue; /* removed or replaced later in the layer */
        futimens(fd, x->dirs[i].ts);
        close(fd);
    }
}

int overlay_apply_fd(int rootfd, int blobfd, overlay_comp_t comp, const overlay_apply_opts_t *o,
                     overlay_apply_result_t *res, berth_error_t **err)
{
    memset(res, 0, sizeof(*res));
    struct stat rst;
    if (fstat(rootfd, &rst) < 0)
        return berth_error_errno(err, errno, "stat snapshot root");
    if (o->expected_size) {
        struct stat bst;
        if (fstat(blobfd, &bst) < 0)
            return berth_error_errno(err, errno, "stat layer blob");
        if ((uint64_t)bst.st_size != o->expected_size)
            return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                   "layer blob is %lld bytes but its descriptor says %llu",
                                   (long long)bst.st_size, (unsigned long long)o->expected_size);
    }

    ax_t x = {.rootfd = rootfd, .rootdev = rst.st_dev, .o = o, .res = res, .cfd = -1};
    x.euid = geteuid();
    x.egid = getegid();
    pipe_t p = {.fd = blobfd, .comp = comp, .cap = o->max_uncompressed, .cancel = o->cancel};
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    struct archive *a = NULL;
    bool started = false;
    pthread_t th;
    int rc = -1;

    p.out_want = FIRST_BUF;
    p.in_want = FIRST_BUF;
    berth_sha256_init(&p.md);
    for (int i = 0; i < RING_N; i++)
        if (!(p.buf[i] = malloc(RING_BUF)))
            goto oom;
    if (comp != OVERLAY_COMP_NONE && !(p.in = malloc(IN_BUF)))
        goto oom;
    if (check_space(&x, err) < 0)
        goto out;
    if (pthread_create(&th, NULL, producer_main, &p) != 0) {
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "cannot start the decompression thread");
        goto out;
    }
    started = true;

    a = archive_read_new();
    if (!a)
        goto oom;
    archive_read_support_format_tar(a);
    if (archive_read_open(a, &p, NULL, archive_read_cb, NULL) != ARCHIVE_OK) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "layer is not a tar archive: %s",
                        archive_error_string(a) ? archive_error_string(a) : "unreadable");
        goto out;
    }
    for (;;) {
        if (o->cancel && atomic_load(o->cancel)) {
            berth_error_set(err, BERTH_E_CANCELED, "layer apply canceled");
            goto out;
        }
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "layer tar is invalid after %llu entries: %s",
                            (unsigned long long)res->entries,
                            archive_error_string(a) ? archive_error_string(a) : "read error");
            goto out;
        }
        res->entries++;
        int er = do_entry(&x, a, e, err);
        if (er == -2) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "layer entry \"%s\": data unreadable (truncated or corrupt layer): %s",
                            x.ename,
                            archive_error_string(a) ? archive_error_string(a) : "read error");
            goto out;
        }
        if (er < 0)
            goto out;
        if (fp_pause_after && res->entries == fp_pause_after)
            for (int i = 0; i < 600 && !(o->cancel && atomic_load(o->cancel)); i++)
                usleep(100 * 1000);
        if (++x.entries_since_check >= SPACE_CHECK_ENTRIES ||
            x.bytes_since_check >= SPACE_CHECK_BYTES) {
            if (check_space(&x, err) < 0)
                goto out;
        }
    }
    /* Hash every byte up to the end of the stream, also after the tar's
     * end-of-archive marker: the diff ID covers the whole stream. */
    {
        const void *b;
        ssize_t n;
        while ((n = pipe_next(&p, &b)) > 0)
            ;
        if (n < 0)
            goto out;
    }
    fix_dir_times(&x);
    rc = 0;
    goto out;
oom:
    berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
out:
    if (started) {
        pthread_mutex_lock(&p.mu);
        p.stop = true;
        pthread_cond_broadcast(&p.cv);
        pthread_mutex_unlock(&p.mu);
        pthread_join(th, NULL);
    }
    if (p.err) {
        /* The producer's error explains a consumer failure (bomb, corrupt or
         * truncated stream, cancel): prefer it. */
        if (err && *err)
            berth_error_free(err);
        if (err)
            *err = p.err;
        else
            berth_error_free(&p.err);
        p.err = NULL;
        rc = -1;
    }
    if (rc == 0) {
        unsigned char md[BERTH_SHA256_LEN];
        unsigned int mdlen = BERTH_SHA256_LEN;
        berth_sha256_final(&p.md, md);
        char *q = stpcpy(res->diff_id, "sha256:");
        for (unsigned i = 0; i < mdlen && i < 32; i++)
            q += sprintf(q, "%02x", md[i]);
        res->size = p.total;
        if (o->expected_diff_id && strcmp(o->expected_diff_id, res->diff_id) != 0) {
            rc = berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                 "layer diff ID mismatch: got %s, expected %.80s", res->diff_id,
                                 o->expected_diff_id);
        }
    }
    if (a)
        archive_read_free(a);
    cache_drop(&x);
    for (size_t i = 0; i < x.ndirs; i++)
        free(x.dirs[i].path);
    free(x.dirs);
    free(x.path);
    free(x.cpath);
    for (int i = 0; i < RING_N; i++)
        free(p.buf[i]);
    free(p.in);
    if (p.z_init)
        inflateEnd(&p.z);
    if (p.zd)
        ZSTD_freeDCtx(p.zd);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
    return rc;
}

int overlay_apply_snapshot(overlay_store_t *s, const char *id, const char *blob_path,
                           const char *media_type, const overlay_apply_opts_t *o,
                           overlay_apply_result_t *res, berth_error_t **err)
{
    overlay_comp_t comp;
    if (overlay_media_type_parse(media_type, &comp, err) < 0)
        return -1;
    overlay_apply_target_t t;
    if (overlay__apply_begin(s, id, blob_path, &t, err) < 0)
        return -1;
    overlay_apply_opts_t opts = *o;
    opts.lower_fds = t.lowers;
    opts.n_lowers = t.n_lowers;
    if (overlay_apply_fd(t.fsfd, t.blobfd, comp, &opts, res, err) < 0) {
        overlay__apply_end(s, &t, NULL, NULL);
        return -1;
    }
    return overlay__apply_end(s, &t, res, err);
}
