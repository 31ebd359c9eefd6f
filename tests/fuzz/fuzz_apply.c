/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: layer apply (plugins/snapshot-overlay/apply.c) of a
 * hostile layer into a scratch root. The input is the layer blob: gzip or
 * zstd when it starts with their magic, else a plain tar.
 *
 * Confinement is what matters here, so the target is built to catch escapes
 * and to make sure one cannot harm the machine running the fuzzer:
 *  - once per process (LLVMFuzzerInitialize) it enters a private mount
 *    namespace in which the whole host tree is read-only, except the
 *    directories libFuzzer writes to (corpus, artifacts, the working dir);
 *  - each run gets a fresh tmpfs that is never attached anywhere (fsmount), so
 *    it vanishes with its last fd: no cleanup walk, nothing left behind;
 *    it is nodev/nosuid, so device nodes a layer creates stay inert;
 *  - that tmpfs holds `root` (the snapshot being applied), a `canary`
 *    directory and a `lower` parent layer next to it. After the apply the
 *    tmpfs must hold exactly those three entries and canary/lower must be
 *    unchanged (names, types, modes, owners, sizes, contents, xattrs): a ".."
 *    or chmod/chown-through-a-link escape shows up there. An absolute escape
 *    hits the read-only host and fails with EROFS, which no in-root write can
 *    produce: an EROFS error is reported as an escape.
 *  - differential check: each layer is applied twice, with openat2
 *    (RESOLVE_IN_ROOT) and with the component-walk fallback
 *    (overlay_apply_force_walk); both must succeed or fail together and
 *    produce the same tree and result.
 * Needs root (CAP_SYS_ADMIN for the namespace and mounts, CAP_MKNOD for
 * whiteouts); otherwise it exits 77 (skipped).
 *
 * BERTH_FUZZ_APPLY_SELFTEST=1 proves the detectors work: it checks that a
 * host path is read-only (exit 0 with "selftest FAILED" if not), then after
 * the first apply the harness itself writes ../canary/file through the root
 * fd, which must abort as an ESCAPE (ctest runs it with WILL_FAIL). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../../plugins/snapshot-overlay/internal.h"

#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_apply: check failed: %s (line %d, errno %s)\n", #cond, __LINE__, \
                    strerror(errno));                                                              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_UNCOMPRESSED (16u << 20)
#define LIST_MAX_DEPTH 64

/* ---- once per process: read-only host in a private mount namespace ------- */

static bool selftest;

static void make_writable(const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real))
        return; /* not there: libFuzzer will complain itself if it needs it */
    struct stat st;
    if (stat(real, &st) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        char *sl = strrchr(real, '/');
        if (!sl || sl == real)
            return;
        *sl = 0;
    }
    if (strcmp(real, "/") == 0)
        return;
    CHECK(mount(real, real, NULL, MS_BIND, NULL) == 0);
    struct mount_attr a = {.attr_clr = MOUNT_ATTR_RDONLY};
    CHECK(mount_setattr(AT_FDCWD, real, 0, &a, sizeof(a)) == 0);
}

static void dir_of_prefix(const char *prefix, char *out, size_t n)
{
    snprintf(out, n, "%s", prefix);
    char *sl = strrchr(out, '/');
    if (sl)
        sl[1] = 0;
    else
        snprintf(out, n, ".");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (geteuid() != 0) {
        fprintf(stderr, "fuzz_apply: skipped: needs root (a private mount namespace and a "
                        "scratch tmpfs keep hostile layers away from the host)\n");
        exit(77);
    }
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        fprintf(stderr, "fuzz_apply: skipped: cannot create a private mount namespace: %s\n",
                strerror(errno));
        exit(77);
    }
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
    if (mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof(ro)) < 0) {
        fprintf(stderr, "fuzz_apply: skipped: cannot make the host read-only: %s\n",
                strerror(errno));
        exit(77);
    }
    /* Where libFuzzer writes: corpus dirs, artifact prefix, the cwd (default
     * artifacts, -minimize_crash output). */
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)))
        make_writable(cwd);
    for (int i = 1; i < *argc; i++) {
        const char *a = (*argv)[i];
        char d[PATH_MAX];
        if (strncmp(a, "-artifact_prefix=", 17) == 0) {
            dir_of_prefix(a + 17, d, sizeof(d));
            make_writable(d);
        } else if (strncmp(a, "-exact_artifact_path=", 21) == 0) {
            dir_of_prefix(a + 21, d, sizeof(d));
            make_writable(d);
        } else if (a[0] != '-') {
            make_writable(a);
        }
    }
    overlay_apply_global_init();
    if (getenv("BERTH_FUZZ_APPLY_SELFTEST")) {
        selftest = true;
        int fd = open("/etc/.berth-fuzz-apply-selftest", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EROFS) {
            fprintf(stderr, "fuzz_apply: selftest FAILED: the host is writable (%s)\n",
                    fd >= 0 ? "created a file in /etc" : strerror(errno));
            if (fd >= 0) {
                close(fd);
                unlink("/etc/.berth-fuzz-apply-selftest");
            }
            exit(0);
        }
        fprintf(stderr, "fuzz_apply: selftest: host read-only (EROFS), now escaping on purpose\n");
    }
    return 0;
}

/* ---- the per-run scratch filesystem -------------------------------------- */

static int new_tmpfs(void)
{
    int fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
    CHECK(fs >= 0);
    CHECK(fsconfig(fs, FSCONFIG_SET_STRING, "size", "64m", 0) == 0);
    CHECK(fsconfig(fs, FSCONFIG_SET_STRING, "nr_inodes", "20000", 0) == 0);
    CHECK(fsconfig(fs, FSCONFIG_SET_STRING, "mode", "0755", 0) == 0);
    CHECK(fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0);
    int m = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
    CHECK(m >= 0);
    close(fs);
    /* The fsmount fd is an O_PATH one (no readdir): use a real directory fd,
     * which keeps the detached mount alive just as well. */
    int r = openat(m, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(r >= 0);
    close(m);
    return r;
}

static void put_file(int dfd, const char *name, const char *content, mode_t mode)
{
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    CHECK(fd >= 0);
    CHECK(write(fd, content, strlen(content)) == (ssize_t)strlen(content));
    CHECK(fchmod(fd, mode) == 0);
    close(fd);
}

/* canary/ and lower/ (a parent layer whose directories apply copies when the
 * layer omits them), with odd owners, modes and an xattr. */
static void populate(int m)
{
    CHECK(mkdirat(m, "canary", 0755) == 0);
    int c = openat(m, "canary", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(c >= 0);
    put_file(c, "file", "canary\n", 0644);
    CHECK(symlinkat("file", c, "link") == 0);
    close(c);
    CHECK(mkdirat(m, "lower", 0755) == 0);
    int l = openat(m, "lower", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(l >= 0);
    CHECK(mkdirat(l, "etc", 0700) == 0);
    CHECK(fchownat(l, "etc", 5, 6, 0) == 0);
    CHECK(mkdirat(l, "usr", 0755) == 0);
    CHECK(mkdirat(l, "usr/lib", 02775) == 0);
    CHECK(fchmodat(l, "usr/lib", 02775, 0) == 0);
    CHECK(symlinkat("usr/lib", l, "lib") == 0);
    CHECK(symlinkat("/canary", l, "abs") == 0);
    put_file(l, "etc/passwd", "root:x:0:0::/:/bin/sh\n", 0644);
    int e = openat(l, "etc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(e >= 0);
    CHECK(fsetxattr(e, "trusted.berth-fuzz", "x", 1, 0) == 0);
    close(e);
    close(l);
    CHECK(mkdirat(m, "root", 0755) == 0);
}

/* ---- tree listings -------------------------------------------------------- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends one line per entry under dfd (sorted, not following symlinks,
 * never opening anything but directories): path, type, mode, owner, size or
 * target or device, link count, xattrs. Times are left out. */
static void list_tree(FILE *out, int dfd, const char *rel, int depth)
{
    if (depth > LIST_MAX_DEPTH) {
        fprintf(out, "%s/ (deeper levels not listed)\n", rel);
        return;
    }
    /* A new open file description: a dup() would share (and leave at EOF)
     * the directory offset of dfd. */
    int d2 = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(d2 >= 0);
    DIR *d = fdopendir(d2);
    CHECK(d);
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        names = realloc(names, (n + 1) * sizeof(*names));
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), cmp_name);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        CHECK(fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0);
        fprintf(out, "%s/%s %o %u:%u", rel, names[i], (unsigned)st.st_mode, (unsigned)st.st_uid,
                (unsigned)st.st_gid);
        if (S_ISREG(st.st_mode))
            fprintf(out, " size=%lld nlink=%lu", (long long)st.st_size, (unsigned long)st.st_nlink);
        else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
            fprintf(out, " dev=%u:%u", major(st.st_rdev), minor(st.st_rdev));
        if (S_ISLNK(st.st_mode)) {
            char t[PATH_MAX];
            ssize_t tn = readlinkat(dfd, names[i], t, sizeof(t) - 1);
            CHECK(tn >= 0);
            t[tn] = 0;
            fprintf(out, " -> %s", t);
        }
        /* xattrs by /proc path without following the last component. */
        char p[64 + NAME_MAX];
        snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dfd, names[i]);
        char xl[4096];
        ssize_t xn = llistxattr(p, xl, sizeof(xl));
        for (ssize_t o = 0; xn > 0 && o < xn; o += (ssize_t)strlen(xl + o) + 1) {
            char v[256];
            ssize_t vn = lgetxattr(p, xl + o, v, sizeof(v));
            fprintf(out, " xattr:%s=%.*s", xl + o, (int)(vn > 0 ? vn : 0), v);
        }
        fputc('\n', out);
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            CHECK(sub >= 0);
            char *r2 = NULL;
            CHECK(asprintf(&r2, "%s/%s", rel, names[i]) >= 0);
            list_tree(out, sub, r2, depth + 1);
            free(r2);
            close(sub);
        }
        free(names[i]);
    }
    free(names);
}

/* Listing of everything in the scratch fs except root/. */
static char *list_outside(int m)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    struct stat st;
    CHECK(fstat(m, &st) == 0);
    fprintf(out, "/ %o %u:%u\n", (unsigned)st.st_mode, (unsigned)st.st_uid, (unsigned)st.st_gid);
    DIR *d = fdopendir(openat(m, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    CHECK(d);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "root")) {
            names = realloc(names, (n + 1) * sizeof(*names));
            names[n++] = strdup(de->d_name);
        }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), cmp_name);
    for (size_t i = 0; i < n; i++) {
        CHECK(fstatat(m, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0);
        fprintf(out, "%s %o %u:%u\n", names[i], (unsigned)st.st_mode, (unsigned)st.st_uid,
                (unsigned)st.st_gid);
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(m, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            CHECK(sub >= 0);
            list_tree(out, sub, names[i], 1);
            /* Contents of the canary's regular files too. */
            if (strcmp(names[i], "canary") == 0) {
                int f = openat(sub, "file", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                char c[64] = "";
                if (f >= 0) {
                    ssize_t r = read(f, c, sizeof(c) - 1);
                    c[r > 0 ? r : 0] = 0;
                    close(f);
                }
                fprintf(out, "canary/file content=%s\n", c);
            }
            close(sub);
        }
        free(names[i]);
    }
    free(names);
    fclose(out);
    return buf;
}

/* ---- one apply ------------------------------------------------------------ */

typedef struct {
    int rc;
    berth_code_t code;
    char msg[512];
    overlay_apply_result_t res;
    char *tree;
} outcome_t;

static void apply_once(int blobfd, overlay_comp_t comp, bool walk, outcome_t *out)
{
    int m = new_tmpfs();
    populate(m);
    char *before = list_outside(m);
    int rootfd = openat(m, "root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(rootfd >= 0);
    int lower = openat(m, "lower", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(lower >= 0);

    overlay_apply_opts_t o = {
        .max_uncompressed = MAX_UNCOMPRESSED,
        .lower_fds = &lower,
        .n_lowers = 1,
    };
    berth_error_t *err = NULL;
    CHECK(lseek(blobfd, 0, SEEK_SET) == 0);
    overlay_apply_force_walk = walk;
    memset(out, 0, sizeof(*out));
    out->rc = overlay_apply_fd(rootfd, blobfd, comp, &o, &out->res, &err);
    overlay_apply_force_walk = false;
    if (out->rc < 0) {
        CHECK(err && err->message);
        out->code = err->code;
        snprintf(out->msg, sizeof(out->msg), "%s", err->message);
        if (strstr(err->message, strerror(EROFS))) {
            fprintf(stderr,
                    "fuzz_apply: ESCAPE: the apply (%s) tried to write outside its root "
                    "(into the read-only host): %s\n",
                    walk ? "walk" : "openat2", err->message);
            abort();
        }
    } else {
        CHECK(!err);
    }
    berth_error_free(&err);
    if (selftest) {
        int fd = openat(rootfd, "../canary/file", O_WRONLY | O_APPEND | O_CLOEXEC);
        CHECK(fd >= 0 && write(fd, "x", 1) == 1);
        close(fd);
    }

    char *after = list_outside(m);
    if (strcmp(before, after) != 0) {
        fprintf(stderr,
                "fuzz_apply: ESCAPE: the apply (%s) changed the scratch fs outside its root\n"
                "--- before\n%s--- after\n%s",
                walk ? "walk" : "openat2", before, after);
        abort();
    }
    free(before);
    free(after);

    size_t len = 0;
    FILE *f = open_memstream(&out->tree, &len);
    list_tree(f, rootfd, "", 1);
    fclose(f);
    close(lower);
    close(rootfd);
    close(m); /* the detached tmpfs goes away with its last fd */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    overlay_comp_t comp = OVERLAY_COMP_NONE;
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b)
        comp = OVERLAY_COMP_GZIP;
    else if (size >= 4 && data[0] == 0x28 && data[1] == 0xb5 && data[2] == 0x2f && data[3] == 0xfd)
        comp = OVERLAY_COMP_ZSTD;

    int blobfd = memfd_create("layer", MFD_CLOEXEC);
    CHECK(blobfd >= 0);
    CHECK(size == 0 || write(blobfd, data, size) == (ssize_t)size);

    outcome_t a, b;
    apply_once(blobfd, comp, false, &a);
    apply_once(blobfd, comp, true, &b);
    close(blobfd);

    if (a.rc == 0 && comp == OVERLAY_COMP_NONE) {
        /* The diff ID is the sha256 of the whole uncompressed stream. */
        unsigned char md[32];
        unsigned int ml = 0;
        EVP_Digest(data, size, md, &ml, EVP_sha256(), NULL);
        char want[72] = "sha256:";
        for (int i = 0; i < 32; i++)
            snprintf(want + 7 + 2 * i, 3, "%02x", md[i]);
        CHECK(strcmp(a.res.diff_id, want) == 0);
        CHECK(a.res.size == size);
    }
    if (a.rc != b.rc ||
        (a.rc == 0 && (strcmp(a.tree, b.tree) != 0 || strcmp(a.res.diff_id, b.res.diff_id) != 0 ||
                       a.res.entries != b.res.entries || a.res.whiteouts != b.res.whiteouts))) {
        fprintf(stderr,
                "fuzz_apply: openat2 and walk resolution disagree\n"
                "--- openat2: rc=%d %s\n%s--- walk: rc=%d %s\n%s",
                a.rc, a.rc ? a.msg : "", a.tree, b.rc, b.rc ? b.msg : "", b.tree);
        abort();
    }
    free(a.tree);
    free(b.tree);
    return 0;
}
