/* SPDX-License-Identifier: Apache-2.0 */
/* The content store on disk: blobs/sha256/<hex> (immutable, 0444) and
 * ingest/<sha256(ns "\0" ref)>/ {ref, namespace, total, expected, startedat,
 * updatedat, offset, data}. No event loop here; everything blocks. The
 * durability rule: `offset` only ever names bytes of `data` that were
 * fdatasync()ed before it was written, so after a crash resuming from it never
 * trusts a torn tail. See docs/content.md. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "berth/failpoint.h"
#include "berth/log.h"
#include "berth/sha256.h"
#include "store.h"

#define HASH_BUF (1u << 20)
/* O_DIRECT alignment (offsets, lengths, memory): 4096 covers 512- and
 * 4096-byte logical blocks. */
#define BLK 4096u
/* Bytes staged before one direct write. */
#define STAGE_CAP (4u << 20)

struct content_store_s {
    char *root;
    char *blobs; /* <root>/blobs/sha256 */
    int blobs_fd;
    int ingest_fd;
    uint64_t sync_bytes;
    bool direct_io;
    pthread_mutex_t mu; /* guards `locked` and the status fields of its entries */
    content_ingest_t *locked;
    unsigned rm_counter;
};

struct content_ingest_s {
    content_store_t *s;
    content_ingest_t *next; /* in s->locked */
    char key[65];
    bool ready;       /* opened: the fields below may be reported by status */
    bool placeholder; /* an abort holding the key, not a writer */
    char *ref;
    char *ns;
    char *expected;
    uint64_t total;
    int64_t started_at;
    int dirfd; /* flock'ed */
    int datafd;
    /* O_DIRECT writing (see stage_flush): an aligned staging buffer whose
     * first byte is at file offset stage_off (a multiple of BLK). */
    int directfd; /* -1 when the filesystem does not support O_DIRECT */
    uint8_t *stage;
    size_t stage_len;
    uint64_t stage_off;
    /* data lane (content_ingest_write_data and sync) */
    uint64_t written; /* atomic: read by status under s->mu */
    uint64_t synced;
    int64_t updated_at; /* atomic */
    /* hash lane (content_ingest_hash) */
    berth_sha256_t md;
    uint64_t hashed;
    bool removed;
    bool committed; /* data is linked as a blob: never written again */
};

/* ---- small helpers ------------------------------------------------------- */

static void hex_encode(const unsigned char *p, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[p[i] >> 4];
        out[2 * i + 1] = hx[p[i] & 15];
    }
    out[2 * n] = 0;
}

int content_digest_parse(const char *digest, char hex_out[65], berth_error_t **err)
{
    if (!digest)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "digest is missing");
    const char *colon = strchr(digest, ':');
    if (!colon)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "invalid digest \"%.100s\": expected sha256:<64 hex digits>",
                               digest);
    if ((size_t)(colon - digest) != 6 || memcmp(digest, "sha256", 6) != 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "unsupported digest algorithm \"%.*s\" in %.100s: only sha256 "
                               "is supported",
                               (int)((colon - digest) > 32 ? 32 : (colon - digest)), digest,
                               digest);
    const char *h = colon + 1;
    size_t n = strlen(h);
    bool ok = n == 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = (h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f');
    if (!ok)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "invalid digest \"%.100s\": expected sha256: followed by 64 "
                               "lowercase hex digits",
                               digest);
    if (hex_out)
        memcpy(hex_out, h, 65);
    return 0;
}

static int check_name(const char *what, const char *v, size_t max, berth_error_t **err)
{
    if (!v || !*v)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s must not be empty", what);
    if (strlen(v) > max)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s is longer than %zu bytes", what,
                               max);
    return 0;
}

static void ingest_key(const char *ns, const char *ref, char key[65])
{
    unsigned char md[32];
    berth_sha256_t c;
    berth_sha256_init(&c);
    berth_sha256_update(&c, ns, strlen(ns) + 1); /* namespace, then its NUL */
    berth_sha256_update(&c, ref, strlen(ref));
    berth_sha256_final(&c, md);
    hex_encode(md, 32, key);
}

static bool is_hex64(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == 64;
}

static int write_all_at(int fd, const void *p, size_t n, uint64_t off)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, c, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Writes a small file in dirfd: to name.tmp, optionally fsynced, renamed over
 * name. */
static int put_file(int dirfd, const char *name, const char *content, bool durable)
{
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "%s.tmp", name);
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    size_t n = strlen(content);
    if (write_all_at(fd, content, n, 0) < 0 || (durable && fsync(fd) < 0)) {
        int e = errno;
        close(fd);
        unlinkat(dirfd, tmp, 0);
        errno = e;
        return -1;
    }
    close(fd);
    if (renameat(dirfd, tmp, dirfd, name) < 0) {
        int e = errno;
        unlinkat(dirfd, tmp, 0);
        errno = e;
        return -1;
    }
    return 0;
}

static int put_u64(int dirfd, const char *name, uint64_t v, bool durable)
{
    char b[32];
    snprintf(b, sizeof(b), "%" PRIu64 "\n", v);
    return put_file(dirfd, name, b, durable);
}

static int put_i64(int dirfd, const char *name, int64_t v)
{
    char b[32];
    snprintf(b, sizeof(b), "%" PRId64 "\n", v);
    return put_file(dirfd, name, b, false);
}

/* Reads a small file (at most max bytes) as a NUL-terminated string, with one
 * trailing newline stripped. NULL with errno on failure (EFBIG if too long,
 * EINVAL if it holds a NUL). */
static char *get_file(int dirfd, const char *name, size_t max)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    char *buf = malloc(max + 2);
    size_t len = 0;
    while (buf && len < max + 1) {
        ssize_t r = read(fd, buf + len, max + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            errno = e;
            return NULL;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (!buf) {
        errno = ENOMEM;
        return NULL;
    }
    if (len > max) {
        free(buf);
        errno = EFBIG;
        return NULL;
    }
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    buf[len] = 0;
    if (memchr(buf, 0, len)) {
        free(buf);
        errno = EINVAL;
        return NULL;
    }
    return buf;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return -1;
    uint64_t v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*c - '0');
    }
    *out = v;
    return 0;
}

static uint64_t get_u64(int dirfd, const char *name, uint64_t dflt, bool *ok)
{
    _cleanup_free_ char *s = get_file(dirfd, name, 32);
    uint64_t v;
    if (parse_u64(s, &v) < 0) {
        if (ok)
            *ok = false;
        return dflt;
    }
    return v;
}

static int64_t get_i64(int dirfd, const char *name)
{
    uint64_t v = get_u64(dirfd, name, 0, NULL);
    return v > INT64_MAX ? 0 : (int64_t)v;
}

/* Unlinks every entry of the directory dirfd (files only; one level of
 * subdirectory is removed too, defensively). */
static void clear_dir(int dirfd)
{
    int d = dup(dirfd);
    if (d < 0)
        return;
    DIR *dir = fdopendir(d);
    if (!dir) {
        close(d);
        return;
    }
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (unlinkat(dirfd, e->d_name, 0) < 0 && errno == EISDIR) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
            if (sub >= 0) {
                clear_dir(sub);
                close(sub);
            }
            unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
        }
    }
    closedir(dir);
}

/* Removes ingest/<name>: first renamed to a dot name so that a crash half way
 * leaves nothing that looks like an ingest (leftovers are swept at open). */
static int remove_ingest_dir(content_store_t *s, const char *name)
{
    char gone[128];
    pthread_mutex_lock(&s->mu);
    unsigned n = s->rm_counter++;
    pthread_mutex_unlock(&s->mu);
    snprintf(gone, sizeof(gone), ".rm-%.64s-%d-%u", name, (int)getpid(), n);
    const char *victim = name;
    if (renameat(s->ingest_fd, name, s->ingest_fd, gone) == 0)
        victim = gone;
    else if (errno == ENOENT)
        return -1;
    int fd = openat(s->ingest_fd, victim, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        clear_dir(fd);
        close(fd);
    }
    return unlinkat(s->ingest_fd, victim, AT_REMOVEDIR);
}

static int mkdir_p(const char *path, berth_error_t **err)
{
    _cleanup_free_ char *p = strdup(path);
    if (!p)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    for (char *c = p + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = 0;
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            return berth_error_errno(err, errno, "create directory %s", p);
        *c = '/';
    }
    if (mkdir(p, 0700) < 0 && errno != EEXIST)
        return berth_error_errno(err, errno, "create directory %s", p);
    return 0;
}

/* ---- store --------------------------------------------------------------- */

content_store_t *content_store_open(const char *root, uint64_t sync_bytes, berth_error_t **err)
{
    content_store_t *s = calloc(1, sizeof(*s));
    if (!s) {
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    s->blobs_fd = s->ingest_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    s->sync_bytes = sync_bytes ? sync_bytes : CONTENT_DEFAULT_SYNC_BYTES;
    s->direct_io = true;
    _cleanup_free_ char *ingest = NULL;
    s->root = strdup(root);
    if (!s->root || asprintf(&s->blobs, "%s/blobs/sha256", root) < 0 ||
        asprintf(&ingest, "%s/ingest", root) < 0) {
        s->blobs = NULL;
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    if (mkdir_p(s->blobs, err) < 0 || mkdir_p(ingest, err) < 0)
        goto fail;
    s->blobs_fd = open(s->blobs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->blobs_fd < 0) {
        berth_error_errno(err, errno, "open %s", s->blobs);
        goto fail;
    }
    s->ingest_fd = open(ingest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->ingest_fd < 0) {
        berth_error_errno(err, errno, "open %s", ingest);
        goto fail;
    }
    /* Sweep what a crash left half made or half removed. */
    int d = dup(s->ingest_fd);
    DIR *dir = d >= 0 ? fdopendir(d) : NULL;
    if (!dir && d >= 0)
        close(d);
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        if (strncmp(e->d_name, ".tmp-", 5) && strncmp(e->d_name, ".rm-", 4))
            continue;
        int fd = openat(s->ingest_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            /* A .tmp- dir being filled by another live instance is not ours to
             * take; instances are exclusive (LOCK file), so this is a crash
             * leftover. */
            clear_dir(fd);
            close(fd);
        }
        unlinkat(s->ingest_fd, e->d_name, AT_REMOVEDIR);
        berth_log(BERTH_LOG_INFO, "msg=\"removed crash leftover\" path=ingest/%s", e->d_name);
    }
    if (dir)
        closedir(dir);
    return s;
fail:
    content_store_free(s);
    return NULL;
}

void content_store_free(content_store_t *s)
{
    if (!s)
        return;
    if (s->blobs_fd >= 0)
        close(s->blobs_fd);
    if (s->ingest_fd >= 0)
        close(s->ingest_fd);
    pthread_mutex_destroy(&s->mu);
    free(s->root);
    free(s->blobs);
    free(s);
}

const char *content_store_root(content_store_t *s)
{
    return s->root;
}

void content_store_set_direct_io(content_store_t *s, bool on)
{
    s->direct_io = on;
}

/* ---- blobs --------------------------------------------------------------- */

int content_blob_path(content_store_t *s, const char *digest, char **path_out, uint64_t *size,
                      berth_error_t **err)
{
    char hex[65];
    if (content_digest_parse(digest, hex, err) < 0)
        return -1;
    struct stat st;
    if (fstatat(s->blobs_fd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return berth_error_set(err, BERTH_E_NOT_FOUND, "content %s not found", digest);
        return berth_error_errno(err, errno, "stat blob %s", digest);
    }
    if (asprintf(path_out, "%s/%s", s->blobs, hex) < 0)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    if (size)
        *size = (uint64_t)st.st_size;
    return 0;
}

int content_blob_open(content_store_t *s, const char *digest, int *fd, uint64_t *size,
                      berth_error_t **err)
{
    char hex[65];
    if (content_digest_parse(digest, hex, err) < 0)
        return -1;
    int f = openat(s->blobs_fd, hex, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0) {
        if (errno == ENOENT)
            return berth_error_set(err, BERTH_E_NOT_FOUND, "content %s not found", digest);
        return berth_error_errno(err, errno, "open blob %s", digest);
    }
    struct stat st;
    if (fstat(f, &st) < 0) {
        int e = errno;
        close(f);
        return berth_error_errno(err, e, "stat blob %s", digest);
    }
    *fd = f;
    if (size)
        *size = (uint64_t)st.st_size;
    return 0;
}

bool content_blob_exists(content_store_t *s, const char *digest, uint64_t *size)
{
    char hex[65];
    if (content_digest_parse(digest, hex, NULL) < 0)
        return false;
    struct stat st;
    if (fstatat(s->blobs_fd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
        return false;
    if (size)
        *size = (uint64_t)st.st_size;
    return true;
}

int content_blob_delete(content_store_t *s, const char *digest, uint64_t *freed,
                        berth_error_t **err)
{
    char hex[65];
    if (content_digest_parse(digest, hex, err) < 0)
        return -1;
    struct stat st;
    if (fstatat(s->blobs_fd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
        unlinkat(s->blobs_fd, hex, 0) < 0) {
        if (errno == ENOENT)
            return berth_error_set(err, BERTH_E_NOT_FOUND, "content %s not found", digest);
        return berth_error_errno(err, errno, "delete blob %s", digest);
    }
    if (fsync(s->blobs_fd) < 0)
        return berth_error_errno(err, errno, "sync %s", s->blobs);
    if (freed)
        *freed = (uint64_t)st.st_size;
    return 0;
}

int content_blob_list(content_store_t *s, content_blob_info_t **out, size_t *n, berth_error_t **err)
{
    int d = dup(s->blobs_fd);
    DIR *dir = d >= 0 ? fdopendir(d) : NULL;
    if (!dir) {
        int e = errno;
        if (d >= 0)
            close(d);
        return berth_error_errno(err, e, "list %s", s->blobs);
    }
    /* The dup shares the offset with blobs_fd: start from the beginning. */
    rewinddir(dir);
    content_blob_info_t *v = NULL;
    size_t len = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (!is_hex64(e->d_name))
            continue;
        struct stat st;
        if (fstatat(s->blobs_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (len == cap) {
            cap = cap ? cap * 2 : 64;
            content_blob_info_t *nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                free(v);
                closedir(dir);
                return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            }
            v = nv;
        }
        snprintf(v[len].digest, sizeof(v[len].digest), "sha256:%.64s", e->d_name);
        v[len].size = (uint64_t)st.st_size;
        /* The later of mtime and ctime: a blob hard-linked into place from an
         * old file is new to the store even if its data is old (gc's orphan
         * age check relies on this). */
        int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        int64_t ct = (int64_t)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
        v[len].mtime = ct > mt ? ct : mt;
        len++;
    }
    closedir(dir);
    *out = v;
    *n = len;
    return 0;
}

/* ---- the lock table ------------------------------------------------------ */

static content_ingest_t *find_locked(content_store_t *s, const char *key)
{
    for (content_ingest_t *i = s->locked; i; i = i->next)
        if (!strcmp(i->key, key))
            return i;
    return NULL;
}

/* Adds ing to the table unless its key is taken. */
static int lock_key(content_store_t *s, content_ingest_t *ing, const char *ref, berth_error_t **err)
{
    pthread_mutex_lock(&s->mu);
    if (find_locked(s, ing->key)) {
        pthread_mutex_unlock(&s->mu);
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "ref %s is locked", ref);
    }
    ing->next = s->locked;
    s->locked = ing;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void unlock_key(content_store_t *s, content_ingest_t *ing)
{
    pthread_mutex_lock(&s->mu);
    for (content_ingest_t **p = &s->locked; *p; p = &(*p)->next) {
        if (*p == ing) {
            *p = ing->next;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- ingests ------------------------------------------------------------- */

static void ingest_free(content_ingest_t *ing)
{
    if (ing->datafd >= 0)
        close(ing->datafd);
    if (ing->directfd >= 0)
        close(ing->directfd);
    free(ing->stage);
    /* Closing the directory releases the flock. */
    if (ing->dirfd >= 0)
        close(ing->dirfd);
    unlock_key(ing->s, ing);
    free(ing->ref);
    free(ing->ns);
    free(ing->expected);
    free(ing);
}

/* Creates ingest/<key> atomically: filled as a .tmp- dir, then renamed.
 * Returns 0, 1 if someone else created it meanwhile, -1 on error. */
static int create_ingest_dir(content_ingest_t *ing, berth_error_t **err)
{
    content_store_t *s = ing->s;
    char tmp[128];
    pthread_mutex_lock(&s->mu);
    unsigned n = s->rm_counter++;
    pthread_mutex_unlock(&s->mu);
    snprintf(tmp, sizeof(tmp), ".tmp-%s-%d-%u", ing->key, (int)getpid(), n);
    if (mkdirat(s->ingest_fd, tmp, 0700) < 0)
        return berth_error_errno(err, errno, "create ingest directory for ref %s", ing->ref);
    int fd = openat(s->ingest_fd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        berth_error_errno(err, errno, "open ingest directory for ref %s", ing->ref);
        unlinkat(s->ingest_fd, tmp, AT_REMOVEDIR);
        return -1;
    }
    int64_t now = berth_now_ns();
    int datafd = -1;
    /* The metadata files are not fsynced one by one: resume treats an ingest
     * whose ref or namespace file is missing as absent and starts it again,
     * which is always safe. */
    if (put_file(fd, "ref", ing->ref, false) < 0 || put_file(fd, "namespace", ing->ns, false) < 0 ||
        put_u64(fd, "total", ing->total, false) < 0 ||
        (ing->expected && put_file(fd, "expected", ing->expected, false) < 0) ||
        put_i64(fd, "startedat", now) < 0 || put_i64(fd, "updatedat", now) < 0 ||
        put_u64(fd, "offset", 0, false) < 0 ||
        (datafd = openat(fd, "data", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
        berth_error_errno(err, errno, "write ingest files for ref %s", ing->ref);
        goto fail;
    }
    close(datafd);
    if (renameat(s->ingest_fd, tmp, s->ingest_fd, ing->key) < 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) {
            clear_dir(fd);
            close(fd);
            unlinkat(s->ingest_fd, tmp, AT_REMOVEDIR);
            return 1;
        }
        berth_error_errno(err, errno, "create ingest for ref %s", ing->ref);
        goto fail;
    }
    close(fd);
    fsync(s->ingest_fd);
    return 0;
fail:
    clear_dir(fd);
    close(fd);
    unlinkat(s->ingest_fd, tmp, AT_REMOVEDIR);
    return -1;
}

/* Opens and flocks ingest/<key>. Returns 0, 1 if it does not exist, -1 on error. */
static int lock_ingest_dir(content_ingest_t *ing, berth_error_t **err)
{
    content_store_t *s = ing->s;
    for (int attempt = 0; attempt < 3; attempt++) {
        int fd = openat(s->ingest_fd, ing->key, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            if (errno == ENOENT)
                return 1;
            return berth_error_errno(err, errno, "open ingest of ref %s", ing->ref);
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            int e = errno;
            close(fd);
            if (e == EWOULDBLOCK)
                return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                                       "ref %s is locked by another process", ing->ref);
            return berth_error_errno(err, e, "lock ingest of ref %s", ing->ref);
        }
        /* Someone may have removed (aborted) it between open and flock. */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && fstatat(s->ingest_fd, ing->key, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
            a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            ing->dirfd = fd;
            return 0;
        }
        close(fd);
    }
    return berth_error_set(err, BERTH_E_ABORTED,
                           "ingest of ref %s was removed while opening it; retry", ing->ref);
}

/* Writing through the page cache costs a kernel copy per byte that, on
 * some machines (VMs), is slower than the disk; O_DIRECT writes go from our
 * buffer to the device. Chunks arrive at any size, so they are staged in an
 * aligned buffer and written in aligned blocks; the unaligned tail is written
 * through the page cache only when a sync needs it on disk (and rewritten by
 * the next direct write, which the kernel keeps coherent). Filesystems
 * without O_DIRECT (tmpfs) use plain writes. */
static int setup_direct(content_ingest_t *ing, berth_error_t **err)
{
    if (!ing->s->direct_io)
        return 0;
    ing->directfd = openat(ing->dirfd, "data", O_WRONLY | O_DIRECT | O_CLOEXEC | O_NOFOLLOW);
    if (ing->directfd < 0)
        return 0; /* EINVAL: not supported here; plain writes */
    void *buf = NULL;
    if (posix_memalign(&buf, BLK, STAGE_CAP) != 0) {
        close(ing->directfd);
        ing->directfd = -1;
        return 0;
    }
    ing->stage = buf;
    ing->stage_off = ing->written & ~(uint64_t)(BLK - 1);
    ing->stage_len = (size_t)(ing->written - ing->stage_off);
    size_t got = 0;
    while (got < ing->stage_len) {
        ssize_t r = pread(ing->datafd, ing->stage + got, ing->stage_len - got,
                          (off_t)(ing->stage_off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return berth_error_errno(err, r < 0 ? errno : EIO, "read data of ref %s", ing->ref);
        got += (size_t)r;
    }
    return 0;
}

/* Falls back to plain writes for good (after O_DIRECT turned out to be
 * refused for a write). */
static void drop_direct(content_ingest_t *ing)
{
    berth_log(BERTH_LOG_INFO, "msg=\"O_DIRECT write refused, using buffered writes\" ref=\"%s\"",
              ing->ref);
    close(ing->directfd);
    ing->directfd = -1;
}

/* Writes the staged bytes: the aligned part with O_DIRECT (then dropped from
 * the stage), and with `tail` also the unaligned rest through the page cache
 * (kept staged: the next direct write covers its block again). */
static int stage_flush(content_ingest_t *ing, bool tail, berth_error_t **err)
{
    size_t aligned = ing->stage_len & ~(size_t)(BLK - 1);
    if (aligned && ing->directfd >= 0) {
        if (write_all_at(ing->directfd, ing->stage, aligned, ing->stage_off) < 0) {
            if (errno != EINVAL)
                return berth_error_errno(err, errno, "write data of ref %s", ing->ref);
            drop_direct(ing);
        }
    }
    if (aligned && ing->directfd < 0 &&
        write_all_at(ing->datafd, ing->stage, aligned, ing->stage_off) < 0)
        return berth_error_errno(err, errno, "write data of ref %s", ing->ref);
    if (aligned) {
        memmove(ing->stage, ing->stage + aligned, ing->stage_len - aligned);
        ing->stage_len -= aligned;
        ing->stage_off += aligned;
    }
    if (tail && ing->stage_len &&
        write_all_at(ing->datafd, ing->stage, ing->stage_len, ing->stage_off) < 0)
        return berth_error_errno(err, errno, "write data of ref %s", ing->ref);
    return 0;
}

/* Loads a locked, existing ingest: checks its identity, reconciles total and
 * expected, truncates data to the durable offset and re-hashes it. Returns 0,
 * 1 if the directory is unusable (missing identity files, or data that is
 * already a committed blob) and must be recreated, -1 on error. */
static int resume_ingest(content_ingest_t *ing, uint64_t total, const char *expected,
                         berth_error_t **err)
{
    _cleanup_free_ char *ref = get_file(ing->dirfd, "ref", CONTENT_REF_MAX);
    _cleanup_free_ char *ns = get_file(ing->dirfd, "namespace", CONTENT_NS_MAX);
    bool ok = true;
    int64_t started = (int64_t)get_u64(ing->dirfd, "startedat", 0, &ok);
    if (!ref || !ns || !ok)
        return 1;
    if (strcmp(ref, ing->ref) || strcmp(ns, ing->ns))
        return berth_error_set(err, BERTH_E_INTERNAL,
                               "ingest directory %s holds ref %s in namespace %s, not ref %s",
                               ing->key, ref, ns, ing->ref);
    ing->started_at = started;
    ing->updated_at = get_i64(ing->dirfd, "updatedat");
    ing->total = get_u64(ing->dirfd, "total", 0, NULL);
    ing->expected = get_file(ing->dirfd, "expected", CONTENT_DIGEST_MAX);
    if (ing->expected && (!*ing->expected || content_digest_parse(ing->expected, NULL, NULL) < 0)) {
        free(ing->expected);
        ing->expected = NULL;
    }
    if (total) {
        if (ing->total && ing->total != total)
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "ref %s: size %" PRIu64 " differs from the size %" PRIu64
                                   " of the ingest in progress; abort it to start over",
                                   ing->ref, total, ing->total);
        if (!ing->total) {
            ing->total = total;
            if (put_u64(ing->dirfd, "total", total, false) < 0)
                return berth_error_errno(err, errno, "record size of ref %s", ing->ref);
        }
    }
    if (expected) {
        if (ing->expected && strcmp(ing->expected, expected))
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "ref %s: expected digest %s differs from %s of the ingest in "
                                   "progress; abort it to start over",
                                   ing->ref, expected, ing->expected);
        if (!ing->expected) {
            ing->expected = strdup(expected);
            if (!ing->expected || put_file(ing->dirfd, "expected", expected, false) < 0)
                return berth_error_errno(err, errno ? errno : ENOMEM,
                                         "record expected digest of ref %s", ing->ref);
        }
    }

    ing->datafd = openat(ing->dirfd, "data", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (ing->datafd < 0) {
        if (errno != ENOENT)
            return berth_error_errno(err, errno, "open data of ref %s", ing->ref);
        ing->datafd = openat(ing->dirfd, "data", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (ing->datafd < 0)
            return berth_error_errno(err, errno, "create data of ref %s", ing->ref);
    }
    struct stat st;
    if (fstat(ing->datafd, &st) < 0)
        return berth_error_errno(err, errno, "stat data of ref %s", ing->ref);
    /* A crash between linking the data into blobs/ and removing the ingest
     * leaves data as a second name of a committed blob: writing to it would
     * change the blob, so this ingest starts over. */
    if (st.st_nlink > 1)
        return 1;
    uint64_t size = (uint64_t)st.st_size;
    /* An unreadable offset file counts as 0: never claim more than we know. */
    uint64_t durable = get_u64(ing->dirfd, "offset", 0, NULL);
    if (size > durable) {
        berth_log(BERTH_LOG_INFO,
                  "msg=\"truncating torn tail of ingest\" ref=\"%s\" ns=%s size=%" PRIu64
                  " durable_offset=%" PRIu64,
                  ing->ref, ing->ns, size, durable);
        if (ftruncate(ing->datafd, (off_t)durable) < 0)
            return berth_error_errno(err, errno, "truncate data of ref %s", ing->ref);
        if (fdatasync(ing->datafd) < 0)
            return berth_error_errno(err, errno, "sync data of ref %s", ing->ref);
    } else if (size < durable) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"ingest data shorter than its recorded offset\" ref=\"%s\" ns=%s "
                  "size=%" PRIu64 " recorded_offset=%" PRIu64,
                  ing->ref, ing->ns, size, durable);
        durable = size;
        if (put_u64(ing->dirfd, "offset", durable, true) < 0)
            return berth_error_errno(err, errno, "record offset of ref %s", ing->ref);
    }
    /* The hash state cannot be saved portably, so hash the data again. */
    _cleanup_free_ uint8_t *buf = malloc(HASH_BUF);
    if (!buf)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    uint64_t off = 0;
    while (off < durable) {
        size_t want = durable - off < HASH_BUF ? (size_t)(durable - off) : HASH_BUF;
        ssize_t r = pread(ing->datafd, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return berth_error_errno(err, r < 0 ? errno : EIO, "re-hash data of ref %s", ing->ref);
        berth_sha256_update(&ing->md, buf, (size_t)r);
        off += (uint64_t)r;
    }
    ing->written = ing->synced = ing->hashed = durable;
    return setup_direct(ing, err);
}

content_ingest_t *content_ingest_open(content_store_t *s, const char *ns, const char *ref,
                                      uint64_t total, const char *expected, berth_error_t **err)
{
    if (check_name("ref", ref, CONTENT_REF_MAX, err) < 0 ||
        check_name("namespace", ns, CONTENT_NS_MAX, err) < 0)
        return NULL;
    if (expected && content_digest_parse(expected, NULL, err) < 0)
        return NULL;
    content_ingest_t *ing = calloc(1, sizeof(*ing));
    if (!ing) {
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    ing->s = s;
    ing->dirfd = ing->datafd = ing->directfd = -1;
    ingest_key(ns, ref, ing->key);
    ing->ref = strdup(ref);
    ing->ns = strdup(ns);
    if (!ing->ref || !ing->ns) {
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        goto fail_unlisted;
    }
    if (lock_key(s, ing, ref, err) < 0)
        goto fail_unlisted;

    for (int attempt = 0;; attempt++) {
        if (attempt == 3) {
            berth_error_set(err, BERTH_E_ABORTED, "ingest of ref %s keeps changing; retry", ref);
            goto fail;
        }
        berth_sha256_init(&ing->md);
        free(ing->expected);
        ing->expected = NULL;
        if (ing->datafd >= 0)
            close(ing->datafd);
        ing->datafd = -1;
        if (ing->directfd >= 0)
            close(ing->directfd);
        ing->directfd = -1;
        free(ing->stage);
        ing->stage = NULL;
        int r = lock_ingest_dir(ing, err);
        if (r < 0)
            goto fail;
        if (r == 1) {
            ing->total = total;
            ing->expected = expected ? strdup(expected) : NULL;
            if (expected && !ing->expected) {
                berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
                goto fail;
            }
            if (create_ingest_dir(ing, err) < 0)
                goto fail;
            continue; /* lock it (or the one that won the race) */
        }
        r = resume_ingest(ing, total, expected, err);
        if (r < 0)
            goto fail;
        if (r == 1) {
            berth_log(BERTH_LOG_WARN,
                      "msg=\"ingest incomplete or already committed, starting over\" "
                      "ref=\"%s\" ns=%s",
                      ref, ns);
            remove_ingest_dir(s, ing->key);
            close(ing->dirfd);
            ing->dirfd = -1;
            continue;
        }
        break;
    }
    pthread_mutex_lock(&s->mu);
    ing->ready = true;
    pthread_mutex_unlock(&s->mu);
    return ing;
fail:
    ingest_free(ing);
    return NULL;
fail_unlisted:
    free(ing->ref);
    free(ing->ns);
    free(ing);
    return NULL;
}

uint64_t content_ingest_offset(content_ingest_t *ing)
{
    return __atomic_load_n(&ing->written, __ATOMIC_ACQUIRE);
}
uint64_t content_ingest_total(content_ingest_t *ing)
{
    return ing->total;
}
const char *content_ingest_expected(content_ingest_t *ing)
{
    return ing->expected;
}
const char *content_ingest_ref(content_ingest_t *ing)
{
    return ing->ref;
}
bool content_ingest_removed(content_ingest_t *ing)
{
    return ing->removed;
}

int content_ingest_sync(content_ingest_t *ing, berth_error_t **err)
{
    if (ing->removed)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "ingest of ref %s was removed",
                               ing->ref);
    uint64_t w = ing->written;
    if (ing->stage && stage_flush(ing, true, err) < 0)
        return -1;
    if (fdatasync(ing->datafd) < 0)
        return berth_error_errno(err, errno, "sync data of ref %s", ing->ref);
    if (put_u64(ing->dirfd, "offset", w, true) < 0)
        return berth_error_errno(err, errno, "record offset of ref %s", ing->ref);
    /* Crash tests: dies (or pauses) right after a durable offset was
     * recorded, i.e. in the middle of a write. */
    if (berth_failpoint("content.ingest.after_sync") < 0)
        return berth_error_errno(err, EIO, "sync data of ref %s (failpoint)", ing->ref);
    int64_t now = berth_now_ns();
    __atomic_store_n(&ing->updated_at, now, __ATOMIC_RELEASE);
    put_i64(ing->dirfd, "updatedat", now); /* informational: not fsynced */
    ing->synced = w;
    return 0;
}

int content_ingest_write_data(content_ingest_t *ing, uint64_t offset, const void *p, size_t n,
                              berth_error_t **err)
{
    if (ing->committed)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "ref %s was committed; start a new ingest", ing->ref);
    if (ing->removed)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "ingest of ref %s was removed",
                               ing->ref);
    if (offset != ing->written)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "write offset %" PRIu64 " does not match offset %" PRIu64
                               " of ref %s",
                               offset, ing->written, ing->ref);
    if (ing->total && ing->written + n > ing->total)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "ref %s: writing %zu bytes at offset %" PRIu64
                               " exceeds the expected size %" PRIu64,
                               ing->ref, n, offset, ing->total);
    if (n == 0)
        return 0;
    /* Fault tests: "error" is an I/O error on the data file (the ingest stays
     * resumable from its durable offset), "crash" a kill -9 mid-write. */
    if (berth_failpoint("content.ingest.write") < 0)
        return berth_error_errno(err, EIO, "write data of ref %s (failpoint)", ing->ref);
    if (ing->stage) {
        const uint8_t *c = p;
        size_t left = n;
        while (left > 0) {
            size_t take = STAGE_CAP - ing->stage_len;
            if (take > left)
                take = left;
            memcpy(ing->stage + ing->stage_len, c, take);
            ing->stage_len += take;
            c += take;
            left -= take;
            if (ing->stage_len == STAGE_CAP && stage_flush(ing, false, err) < 0)
                return -1;
        }
    } else {
        if (write_all_at(ing->datafd, p, n, offset) < 0)
            return berth_error_errno(err, errno, "write data of ref %s", ing->ref);
        /* Start writeback now, without waiting for it: the periodic
         * fdatasync() then finds most pages already on their way to the disk
         * instead of stalling the stream while sync_bytes are written. */
        sync_file_range(ing->datafd, (off64_t)offset, (off64_t)n, SYNC_FILE_RANGE_WRITE);
    }
    __atomic_store_n(&ing->written, offset + n, __ATOMIC_RELEASE);
    if (ing->written - ing->synced >= ing->s->sync_bytes)
        return content_ingest_sync(ing, err);
    return 0;
}

void content_ingest_hash(content_ingest_t *ing, const void *p, size_t n)
{
    berth_sha256_update(&ing->md, p, n);
    ing->hashed += n;
}

int content_ingest_write(content_ingest_t *ing, uint64_t offset, const void *p, size_t n,
                         berth_error_t **err)
{
    if (content_ingest_write_data(ing, offset, p, n, err) < 0)
        return -1;
    content_ingest_hash(ing, p, n);
    return 0;
}

/* Removes the ingest directory of a locked ingest (it stays locked in the
 * table until freed). */
static void ingest_remove(content_ingest_t *ing)
{
    if (ing->removed)
        return;
    if (remove_ingest_dir(ing->s, ing->key) < 0 && errno != ENOENT)
        berth_log(BERTH_LOG_WARN, "msg=\"cannot remove ingest\" ref=\"%s\" ns=%s error=\"%s\"",
                  ing->ref, ing->ns, strerror(errno));
    ing->removed = true;
}

int content_ingest_commit(content_ingest_t *ing, uint64_t size, const char *expected,
                          content_commit_t *out, berth_error_t **err)
{
    content_store_t *s = ing->s;
    if (ing->removed)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "ingest of ref %s was removed",
                               ing->ref);
    if (ing->committed)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "ref %s was committed already",
                               ing->ref);
    if (ing->hashed != ing->written)
        return berth_error_set(err, BERTH_E_INTERNAL,
                               "commit of ref %s before all bytes were hashed", ing->ref);
    if (expected && content_digest_parse(expected, NULL, err) < 0)
        return -1;
    if (!size)
        size = ing->total;
    if (!expected)
        expected = ing->expected;
    if (size && ing->written < size)
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "unexpected commit size %" PRIu64 ", expected %" PRIu64
                               " (ref %s stays resumable from offset %" PRIu64 ")",
                               ing->written, size, ing->ref, ing->written);
    unsigned char md[BERTH_SHA256_LEN];
    berth_sha256_t c = ing->md; /* a copy: the ingest stays resumable */
    berth_sha256_final(&c, md);
    char hex[65];
    hex_encode(md, 32, hex);
    snprintf(out->digest, sizeof(out->digest), "sha256:%s", hex);
    out->size = ing->written;
    out->existed = false;
    if (size && ing->written > size) {
        ingest_remove(ing);
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "unexpected commit size %" PRIu64 ", expected %" PRIu64
                               " (ingest of ref %s removed)",
                               ing->written, size, ing->ref);
    }
    if (expected && strcmp(expected, out->digest)) {
        ingest_remove(ing);
        return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                               "unexpected commit digest %s, expected %s (ingest of ref %s "
                               "removed, no blob written)",
                               out->digest, expected, ing->ref);
    }
    if (ing->stage && stage_flush(ing, true, err) < 0)
        return -1;
    if (fdatasync(ing->datafd) < 0)
        return berth_error_errno(err, errno, "sync data of ref %s", ing->ref);
    if (fchmod(ing->datafd, 0444) < 0)
        return berth_error_errno(err, errno, "make data of ref %s read-only", ing->ref);
    /* Crash tests: the data is durable and verified but not yet a blob. */
    if (berth_failpoint("content.commit.before_link") < 0)
        return berth_error_errno(err, EIO, "commit %s of ref %s (failpoint)", out->digest,
                                 ing->ref);
    /* link(), not rename(): it fails with EEXIST instead of replacing, which
     * is how two writers of the same bytes learn who was first. The ingest
     * keeps its data until content_ingest_discard(). */
    if (linkat(ing->dirfd, "data", s->blobs_fd, hex, 0) < 0) {
        if (errno != EEXIST)
            return berth_error_errno(err, errno, "commit %s of ref %s", out->digest, ing->ref);
        out->existed = true;
        ing->committed = true;
        return 0;
    }
    ing->committed = true;
    if (fsync(s->blobs_fd) < 0)
        return berth_error_errno(err, errno, "sync %s", s->blobs);
    /* Crash tests: the blob exists on disk, metadata has not recorded it and
     * the ingest directory still holds a second name of it. */
    if (berth_failpoint("content.commit.after_link") < 0)
        return berth_error_errno(err, EIO, "commit %s of ref %s (failpoint)", out->digest,
                                 ing->ref);
    return 0;
}

void content_ingest_close(content_ingest_t *ing)
{
    if (!ing)
        return;
    if (ing->committed) {
        /* Its data is the blob now; an ingest left behind would only be
         * started over. */
        ingest_remove(ing);
    } else if (!ing->removed && ing->written != ing->synced) {
        berth_error_t *e = NULL;
        if (content_ingest_sync(ing, &e) < 0) {
            berth_log(BERTH_LOG_WARN, "msg=\"cannot sync ingest on close\" ref=\"%s\" error=\"%s\"",
                      ing->ref, e->message);
            berth_error_free(&e);
        }
    }
    ingest_free(ing);
}

void content_ingest_discard(content_ingest_t *ing)
{
    if (!ing)
        return;
    ingest_remove(ing);
    ingest_free(ing);
}

/* ---- status -------------------------------------------------------------- */

void content_status_clear(content_status_t *st)
{
    free(st->ref);
    free(st->ns);
    free(st->expected);
    memset(st, 0, sizeof(*st));
}

void content_status_free_array(content_status_t *sts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        content_status_clear(&sts[i]);
    free(sts);
}

/* Fills st from a live writer if the key is held by one; returns true then. */
static bool status_live(content_store_t *s, const char *key, content_status_t *st)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    content_ingest_t *i = find_locked(s, key);
    if (i && i->ready && !i->placeholder && !i->removed) {
        st->ref = strdup(i->ref);
        st->ns = strdup(i->ns);
        st->expected = i->expected ? strdup(i->expected) : NULL;
        st->offset = __atomic_load_n(&i->written, __ATOMIC_ACQUIRE);
        st->total = i->total;
        st->started_at = i->started_at;
        st->updated_at = __atomic_load_n(&i->updated_at, __ATOMIC_ACQUIRE);
        st->active = true;
        found = true;
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* Reads ingest/<key>; returns 0, 1 if absent or not (yet) a whole ingest. */
static int status_disk(content_store_t *s, const char *key, content_status_t *st)
{
    _cleanup_close_ int fd =
        openat(s->ingest_fd, key, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 1;
    st->ref = get_file(fd, "ref", CONTENT_REF_MAX);
    st->ns = get_file(fd, "namespace", CONTENT_NS_MAX);
    if (!st->ref || !st->ns) {
        content_status_clear(st);
        return 1;
    }
    st->expected = get_file(fd, "expected", CONTENT_DIGEST_MAX);
    if (st->expected && !*st->expected) {
        free(st->expected);
        st->expected = NULL;
    }
    st->offset = get_u64(fd, "offset", 0, NULL);
    st->total = get_u64(fd, "total", 0, NULL);
    st->started_at = get_i64(fd, "startedat");
    st->updated_at = get_i64(fd, "updatedat");
    /* Someone else may hold it (another instance, or a writer that is not in
     * our table yet): report it as active if the flock is taken. */
    if (flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK)
        st->active = true;
    return 0;
}

int content_ingest_status(content_store_t *s, const char *ns, const char *ref,
                          content_status_t *out, berth_error_t **err)
{
    if (check_name("ref", ref, CONTENT_REF_MAX, err) < 0 ||
        check_name("namespace", ns, CONTENT_NS_MAX, err) < 0)
        return -1;
    char key[65];
    ingest_key(ns, ref, key);
    memset(out, 0, sizeof(*out));
    if (status_live(s, key, out))
        return 0;
    if (status_disk(s, key, out) == 0 && !strcmp(out->ref, ref) && !strcmp(out->ns, ns))
        return 0;
    content_status_clear(out);
    return berth_error_set(err, BERTH_E_NOT_FOUND, "no ingest with ref %s in namespace %s", ref,
                           ns);
}

static int cmp_status(const void *a, const void *b)
{
    return strcmp(((const content_status_t *)a)->ref, ((const content_status_t *)b)->ref);
}

int content_ingest_list(content_store_t *s, const char *ns, const regex_t *re,
                        content_status_t **out, size_t *n, berth_error_t **err)
{
    int d = dup(s->ingest_fd);
    DIR *dir = d >= 0 ? fdopendir(d) : NULL;
    if (!dir) {
        int e = errno;
        if (d >= 0)
            close(d);
        return berth_error_errno(err, e, "list ingests");
    }
    rewinddir(dir);
    content_status_t *v = NULL;
    size_t len = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (!is_hex64(e->d_name))
            continue;
        content_status_t st = {0};
        if (!status_live(s, e->d_name, &st) && status_disk(s, e->d_name, &st) != 0)
            continue;
        if (!st.ref || !st.ns || strcmp(st.ns, ns) ||
            (re && regexec(re, st.ref, 0, NULL, 0) != 0)) {
            content_status_clear(&st);
            continue;
        }
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            content_status_t *nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                content_status_clear(&st);
                content_status_free_array(v, len);
                closedir(dir);
                return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            }
            v = nv;
        }
        v[len++] = st;
    }
    closedir(dir);
    if (len)
        qsort(v, len, sizeof(*v), cmp_status);
    *out = v;
    *n = len;
    return 0;
}

int content_ingest_abort(content_store_t *s, const char *ns, const char *ref, berth_error_t **err)
{
    if (check_name("ref", ref, CONTENT_REF_MAX, err) < 0 ||
        check_name("namespace", ns, CONTENT_NS_MAX, err) < 0)
        return -1;
    content_ingest_t hold = {
        .s = s, .placeholder = true, .dirfd = -1, .datafd = -1, .directfd = -1};
    ingest_key(ns, ref, hold.key);
    hold.ref = (char *)ref;
    if (lock_key(s, &hold, ref, err) < 0)
        return -1;
    int rc = 0;
    int r = lock_ingest_dir(&hold, err);
    if (r == 1) {
        rc = berth_error_set(err, BERTH_E_NOT_FOUND, "no ingest with ref %s in namespace %s", ref,
                             ns);
    } else if (r == 0) {
        _cleanup_free_ char *have = get_file(hold.dirfd, "namespace", CONTENT_NS_MAX);
        if (have && strcmp(have, ns))
            rc = berth_error_set(err, BERTH_E_NOT_FOUND, "no ingest with ref %s in namespace %s",
                                 ref, ns);
        else if (remove_ingest_dir(s, hold.key) < 0 && errno != ENOENT)
            rc = berth_error_errno(err, errno, "remove ingest of ref %s", ref);
        close(hold.dirfd);
    } else {
        rc = -1;
    }
    unlock_key(s, &hold);
    return rc;
}
