/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of confined layer extraction (plugins/snapshot-overlay/apply.c):
 * layers are built in memory with libarchive's writer, applied into a temp
 * directory, and checked for attributes, whiteouts, diff IDs, limits and
 * every escape we know of. Needs root (owners, devices, trusted xattrs):
 * skipped with 77 otherwise. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

/* ---- layer builder ------------------------------------------------------ */

typedef struct {
    struct archive *a;
    char path[PATH_MAX];
} layer_t;

static void layer_begin(layer_t *l, const char *dir, const char *name, overlay_comp_t comp)
{
    snprintf(l->path, sizeof(l->path), "%s/%s", dir, name);
    l->a = archive_write_new();
    archive_write_set_format_pax_restricted(l->a);
    if (comp == OVERLAY_COMP_GZIP)
        archive_write_add_filter_gzip(l->a);
    else if (comp == OVERLAY_COMP_ZSTD)
        archive_write_add_filter_zstd(l->a);
    else
        archive_write_add_filter_none(l->a);
    archive_write_set_bytes_in_last_block(l->a, 1);
    assert_int_equal(archive_write_open_filename(l->a, l->path), ARCHIVE_OK);
}

typedef struct {
    const char *path;
    mode_t type; /* AE_IF* */
    mode_t perm;
    const char *data;
    const char *link;     /* symlink target */
    const char *hardlink; /* hardlink target */
    int64_t uid, gid;
    time_t mtime;
    unsigned devmaj, devmin;
    const char *xname; /* one xattr */
    const void *xval;
    size_t xlen;
    int64_t size; /* override size (0 = strlen(data)) */
} ent_t;

static void layer_add(layer_t *l, const ent_t *e)
{
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, e->path);
    size_t dlen = e->data ? strlen(e->data) : 0;
    if (e->hardlink) {
        archive_entry_set_hardlink(ae, e->hardlink);
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_size(ae, 0);
    } else {
        archive_entry_set_filetype(ae, e->type ? e->type : AE_IFREG);
        archive_entry_set_size(ae, (e->type ? e->type : AE_IFREG) == AE_IFREG
                                       ? (e->size ? e->size : (int64_t)dlen)
                                       : 0);
    }
    archive_entry_set_perm(ae, e->perm ? e->perm : (e->type == AE_IFDIR ? 0755 : 0644));
    archive_entry_set_uid(ae, e->uid);
    archive_entry_set_gid(ae, e->gid);
    archive_entry_set_mtime(ae, e->mtime ? e->mtime : 1600000000, 0);
    if (e->link)
        archive_entry_set_symlink(ae, e->link);
    if (e->type == AE_IFCHR || e->type == AE_IFBLK) {
        archive_entry_set_rdevmajor(ae, e->devmaj);
        archive_entry_set_rdevminor(ae, e->devmin);
    }
    if (e->xname)
        archive_entry_xattr_add_entry(ae, e->xname, e->xval, e->xlen);
    assert_true(archive_write_header(l->a, ae) >= ARCHIVE_WARN);
    if (dlen && !e->hardlink)
        archive_write_data(l->a, e->data, dlen);
    archive_entry_free(ae);
}

static void layer_end(layer_t *l)
{
    assert_int_equal(archive_write_close(l->a), ARCHIVE_OK);
    archive_write_free(l->a);
}

/* ---- fixture ------------------------------------------------------------ */

typedef struct {
    char dir[64];  /* temp dir */
    char root[96]; /* dir/root: the extraction root */
    char out[96];  /* dir/outside: a canary next to the root */
    int rootfd;
} fx_t;

static int setup(void **state)
{
    if (geteuid() != 0) {
        print_message("test_apply needs root (owners, device nodes, trusted xattrs)\n");
        exit(77);
    }
    fx_t *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/berth-test-apply-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->root, sizeof(f->root), "%s/root", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/outside", f->dir);
    assert_int_equal(mkdir(f->root, 0755), 0);
    assert_int_equal(mkdir(f->out, 0755), 0);
    char p[160];
    snprintf(p, sizeof(p), "%s/secret", f->out);
    FILE *fp = fopen(p, "w");
    fputs("canary\n", fp);
    fclose(fp);
    chmod(p, 0600);
    f->rootfd = open(f->root, O_RDONLY | O_DIRECTORY);
    assert_true(f->rootfd >= 0);
    overlay_apply_force_walk = false;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    close(f->rootfd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", f->dir);
    free(f);
    overlay_apply_force_walk = false;
    return 0;
}

static int apply_opts(fx_t *f, const char *blob, overlay_comp_t comp, overlay_apply_opts_t *o,
                      overlay_apply_result_t *res, berth_error_t **err)
{
    int fd = open(blob, O_RDONLY);
    assert_true(fd >= 0);
    int rc = overlay_apply_fd(f->rootfd, fd, comp, o, res, err);
    close(fd);
    return rc;
}

static int apply(fx_t *f, const char *blob, overlay_comp_t comp, overlay_apply_result_t *res,
                 berth_error_t **err)
{
    overlay_apply_opts_t o = {.max_uncompressed = 1ull << 30};
    return apply_opts(f, blob, comp, &o, res, err);
}

static void apply_ok(fx_t *f, const char *blob, overlay_comp_t comp, overlay_apply_result_t *res)
{
    berth_error_t *err = NULL;
    int rc = apply(f, blob, comp, res, &err);
    if (rc < 0)
        fail_msg("apply %s failed: %s", blob, err->message);
    berth_error_free(&err);
}

/* Applies and expects failure; returns the message (caller frees). */
static char *apply_fail(fx_t *f, const char *blob, berth_code_t code)
{
    berth_error_t *err = NULL;
    overlay_apply_result_t res;
    int rc = apply(f, blob, OVERLAY_COMP_NONE, &res, &err);
    if (rc == 0)
        fail_msg("apply %s succeeded but should have failed", blob);
    if (err->code != code)
        fail_msg("apply %s: code %s, want %s: %s", blob, berth_code_name(err->code),
                 berth_code_name(code), err->message);
    char *m = strdup(err->message);
    berth_error_free(&err);
    return m;
}

static void canary_intact(fx_t *f)
{
    char p[160], buf[32] = {0};
    snprintf(p, sizeof(p), "%s/secret", f->out);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_nlink, 1);
    int fd = open(p, O_RDONLY);
    assert_int_equal(read(fd, buf, sizeof(buf) - 1), 7);
    close(fd);
    assert_string_equal(buf, "canary\n");
    /* nothing new appeared next to it */
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "test $(ls -A '%s' | wc -l) -eq 1", f->out);
    assert_int_equal(system(cmd), 0);
}

static void rootpath(fx_t *f, char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", f->root, rel);
}

static struct stat lst(fx_t *f, const char *rel)
{
    char p[PATH_MAX];
    rootpath(f, p, sizeof(p), rel);
    struct stat st;
    if (lstat(p, &st) < 0)
        fail_msg("lstat %s: %s", p, strerror(errno));
    return st;
}

static bool exists(fx_t *f, const char *rel)
{
    char p[PATH_MAX];
    rootpath(f, p, sizeof(p), rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

static void sha256_file(const char *path, char out[72])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    int fd = open(path, O_RDONLY);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        EVP_DigestUpdate(c, buf, (size_t)n);
    close(fd);
    unsigned char md[32];
    unsigned int ml;
    EVP_DigestFinal_ex(c, md, &ml);
    EVP_MD_CTX_free(c);
    char *q = stpcpy(out, "sha256:");
    for (int i = 0; i < 32; i++)
        q += sprintf(q, "%02x", md[i]);
}

/* ---- tests -------------------------------------------------------------- */

static const unsigned char CAP[20] = {1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0,
                                      0, 0, 0, 0, 0, 0,    0, 0, 0, 0};

static void build_rich(layer_t *l)
{
    layer_add(l, &(ent_t){.path = "./", .type = AE_IFDIR, .perm = 0700});
    layer_add(l, &(ent_t){.path = "etc/", .type = AE_IFDIR, .mtime = 1000});
    layer_add(l, &(ent_t){.path = "etc/passwd", .data = "root:x:0:0\n", .mtime = 2000});
    layer_add(l, &(ent_t){.path = "bin", .type = AE_IFDIR, .uid = 5, .gid = 6, .perm = 0750});
    layer_add(l, &(ent_t){.path = "bin/su", .data = "su", .perm = 04755});
    layer_add(l, &(ent_t){.path = "bin/wall", .data = "w", .perm = 02755, .gid = 5});
    layer_add(l, &(ent_t){.path = "bin/ping",
                          .data = "ping",
                          .perm = 0755,
                          .xname = "security.capability",
                          .xval = CAP,
                          .xlen = sizeof(CAP)});
    layer_add(
        l, &(ent_t){.path = "bin/busybox", .data = "bbbb", .perm = 0755, .uid = 1000, .gid = 1001});
    layer_add(l, &(ent_t){.path = "bin/sh", .type = AE_IFLNK, .link = "busybox"});
    layer_add(l, &(ent_t){.path = "bin/ls", .hardlink = "bin/busybox"});
    layer_add(l, &(ent_t){.path = "tmp", .type = AE_IFDIR, .perm = 01777});
    layer_add(
        l, &(ent_t){.path = "dev/null", .type = AE_IFCHR, .perm = 0666, .devmaj = 1, .devmin = 3});
    layer_add(
        l,
        &(ent_t){
            .path = "dev/sda", .type = AE_IFBLK, .perm = 0660, .devmaj = 8, .devmin = 0, .gid = 6});
    layer_add(l, &(ent_t){.path = "run/fifo", .type = AE_IFIFO, .perm = 0620});
    layer_add(l, &(ent_t){.path = "/abs/file", .data = "abs"});
    layer_add(l, &(ent_t){.path = "x/u", .data = "u", .xname = "user.k", .xval = "v", .xlen = 1});
    layer_add(
        l,
        &(ent_t){
            .path = "x/o", .data = "o", .xname = "trusted.overlay.opaque", .xval = "y", .xlen = 1});
    layer_add(l, &(ent_t){.path = "x/lnk",
                          .type = AE_IFLNK,
                          .link = "/etc/passwd",
                          .uid = 7,
                          .gid = 8,
                          .mtime = 1234});
}

static void test_rich_layer(void **state)
{
    fx_t *f = *state;
    overlay_comp_t comps[] = {OVERLAY_COMP_NONE, OVERLAY_COMP_GZIP, OVERLAY_COMP_ZSTD};
    char want[72] = "";
    for (size_t c = 0; c < 3; c++) {
        layer_t l;
        char name[32];
        snprintf(name, sizeof(name), "rich%zu", c);
        layer_begin(&l, f->dir, name, comps[c]);
        build_rich(&l);
        layer_end(&l);
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'/* '%s'/.[!.]* 2>/dev/null; true", f->root, f->root);
        assert_int_equal(system(cmd), 0);
        overlay_apply_result_t res;
        apply_ok(f, l.path, comps[c], &res);
        if (c == 0)
            sha256_file(l.path, want);
        /* diff ID = sha256 of the uncompressed tar, whatever the compression */
        assert_string_equal(res.diff_id, want);
        assert_true(res.skipped_xattrs >= 1); /* libarchive writes SCHILY and LIBARCHIVE keys */

        struct stat st = lst(f, ".");
        assert_int_equal(st.st_mode & 07777, 0755); /* root entry ignored */
        st = lst(f, "etc/passwd");
        assert_int_equal(st.st_size, 11);
        assert_int_equal(st.st_mtime, 2000);
        st = lst(f, "etc");
        assert_int_equal(st.st_mtime, 1000); /* set after its contents */
        st = lst(f, "bin");
        assert_int_equal(st.st_mode & 07777, 0750);
        assert_int_equal(st.st_uid, 5);
        assert_int_equal(st.st_gid, 6);
        st = lst(f, "bin/su");
        assert_int_equal(st.st_mode & 07777, 04755);
        st = lst(f, "bin/wall");
        assert_int_equal(st.st_mode & 07777, 02755);
        assert_int_equal(st.st_gid, 5);
        char p[PATH_MAX], v[64];
        rootpath(f, p, sizeof(p), "bin/ping");
        assert_int_equal(lgetxattr(p, "security.capability", v, sizeof(v)), sizeof(CAP));
        assert_memory_equal(v, CAP, sizeof(CAP));
        st = lst(f, "bin/busybox");
        assert_int_equal(st.st_uid, 1000);
        assert_int_equal(st.st_gid, 1001);
        assert_int_equal(st.st_nlink, 2);
        struct stat st2 = lst(f, "bin/ls");
        assert_int_equal(st.st_ino, st2.st_ino);
        st = lst(f, "bin/sh");
        assert_true(S_ISLNK(st.st_mode));
        rootpath(f, p, sizeof(p), "bin/sh");
        ssize_t n = readlink(p, v, sizeof(v));
        assert_int_equal(n, 7);
        assert_memory_equal(v, "busybox", 7);
        st = lst(f, "tmp");
        assert_int_equal(st.st_mode & 07777, 01777);
        st = lst(f, "dev/null");
        assert_true(S_ISCHR(st.st_mode));
        assert_int_equal(major(st.st_rdev), 1);
        assert_int_equal(minor(st.st_rdev), 3);
        assert_int_equal(st.st_mode & 07777, 0666);
        st = lst(f, "dev/sda");
        assert_true(S_ISBLK(st.st_mode));
        assert_int_equal(st.st_gid, 6);
        st = lst(f, "run/fifo");
        assert_true(S_ISFIFO(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0620);
        assert_true(exists(f, "abs/file"));
        rootpath(f, p, sizeof(p), "x/u");
        assert_int_equal(lgetxattr(p, "user.k", v, sizeof(v)), 1);
        rootpath(f, p, sizeof(p), "x/o");
        assert_int_equal(lgetxattr(p, "trusted.overlay.opaque", v, sizeof(v)), -1);
        st = lst(f, "x/lnk");
        assert_int_equal(st.st_uid, 7);
        assert_int_equal(st.st_gid, 8);
        assert_int_equal(st.st_mtime, 1234);
        canary_intact(f);
    }
}

static void test_diff_id_hashes_trailing_bytes(void **state)
{
    fx_t *f = *state;
    layer_t l;
    layer_begin(&l, f->dir, "trail.tar", OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "a", .data = "a"});
    layer_end(&l);
    /* Bytes after the end-of-archive marker are part of the stream. */
    FILE *fp = fopen(l.path, "a");
    for (int i = 0; i < 5000; i++)
        fputc(i & 0xff, fp);
    fclose(fp);
    char want[72];
    sha256_file(l.path, want);
    overlay_apply_result_t res;
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res);
    assert_string_equal(res.diff_id, want);
    struct stat st;
    stat(l.path, &st);
    assert_int_equal(res.size, (uint64_t)st.st_size);
}

static void test_whiteouts(void **state)
{
    fx_t *f = *state;
    layer_t l;
    layer_begin(&l, f->dir, "wh.tar", OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "d/", .type = AE_IFDIR});
    layer_add(&l, &(ent_t){.path = "d/.wh..wh..opq"});
    layer_add(&l, &(ent_t){.path = "d/keep", .data = "k"});
    layer_add(&l, &(ent_t){.path = "e/.wh.gone"});
    layer_add(&l, &(ent_t){.path = "e/same", .data = "s"});
    layer_add(&l, &(ent_t){.path = "e/.wh.same"});   /* same layer: entry stays */
    layer_add(&l, &(ent_t){.path = ".wh..wh.plnk"}); /* AUFS metadata: ignored */
    layer_end(&l);
    overlay_apply_result_t res;
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res);
    char p[PATH_MAX], v[8];
    rootpath(f, p, sizeof(p), "d");
    assert_int_equal(lgetxattr(p, "trusted.overlay.opaque", v, sizeof(v)), 1);
    assert_int_equal(v[0], 'y');
    assert_true(exists(f, "d/keep"));
    assert_false(exists(f, "d/.wh..wh..opq"));
    struct stat st = lst(f, "e/gone");
    assert_true(S_ISCHR(st.st_mode));
    assert_int_equal(st.st_rdev, makedev(0, 0));
    st = lst(f, "e/same");
    assert_true(S_ISREG(st.st_mode));
    assert_false(exists(f, ".wh..wh.plnk"));
    assert_int_equal(res.whiteouts, 2);
}

static void test_bad_whiteouts(void **state)
{
    fx_t *f = *state;
    const char *bad[] = {"d/.wh..", "d/.wh...", ".wh."};
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(bad); i++) {
        layer_t l;
        char name[32];
        snprintf(name, sizeof(name), "badwh%zu.tar", i);
        layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
        layer_add(&l, &(ent_t){.path = bad[i]});
        layer_end(&l);
        char *m = apply_fail(f, l.path, BERTH_E_INVALID_ARGUMENT);
        assert_non_null(strstr(m, "whiteout"));
        free(m);
    }
    /* ".wh.." as a path component is refused too */
    layer_t l;
    layer_begin(&l, f->dir, "badwh-dotdot.tar", OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "../.wh.secret"});
    layer_end(&l);
    free(apply_fail(f, l.path, BERTH_E_INVALID_ARGUMENT));
    canary_intact(f);
    assert_true(exists(f, "../outside/secret"));
}

/* Every escape attempt, run with openat2 and with the fallback walker. */
static void escapes(fx_t *f, bool walk)
{
    overlay_apply_force_walk = walk;
    const char *w = walk ? "w" : "o";
    char name[64];
    layer_t l;

    /* 1. ".." path: refused, naming the entry. */
    snprintf(name, sizeof(name), "dotdot-%s.tar", w);
    layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "../outside/secret", .data = "pwned"});
    layer_end(&l);
    char *m = apply_fail(f, l.path, BERTH_E_INVALID_ARGUMENT);
    assert_non_null(strstr(m, "../outside/secret"));
    free(m);

    /* 2. Absolute symlink dir, then a file through it: lands inside root. */
    char target[160];
    snprintf(target, sizeof(target), "%s", f->out);
    snprintf(name, sizeof(name), "abslink-%s.tar", w);
    layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "evil", .type = AE_IFLNK, .link = target});
    layer_add(&l, &(ent_t){.path = "evil/secret", .data = "pwned", .perm = 0777});
    layer_add(&l, &(ent_t){.path = "rel", .type = AE_IFLNK, .link = "../../../../../../.."});
    layer_add(&l, &(ent_t){.path = "rel/tmp/relfile", .data = "pwned"});
    layer_add(&l, &(ent_t){.path = "chain1", .type = AE_IFLNK, .link = "chain2"});
    layer_add(&l, &(ent_t){.path = "chain2", .type = AE_IFLNK, .link = "/../../.."});
    layer_add(&l, &(ent_t){.path = "chain1/chained", .data = "pwned"});
    layer_end(&l);
    overlay_apply_result_t res;
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res);
    canary_intact(f);
    char inside[300];
    snprintf(inside, sizeof(inside), "%s/secret", f->out + 1); /* confined copy */
    assert_true(exists(f, inside));
    assert_true(exists(f, "tmp/relfile"));
    assert_true(exists(f, "chained"));

    /* 3. Hardlink to a host path and through a symlink: never a host inode;
     * CVE-2021-32760 pattern: hardlink to a symlink pointing outside, with a
     * mode that would chmod the target. */
    snprintf(name, sizeof(name), "hardlink-%s.tar", w);
    layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "s", .type = AE_IFLNK, .link = target});
    layer_add(&l, &(ent_t){.path = "s2", .type = AE_IFLNK, .link = "s/secret"});
    layer_add(&l, &(ent_t){.path = "h", .hardlink = "s2", .perm = 0777});
    layer_end(&l);
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res);
    struct stat st = lst(f, "h");
    assert_true(S_ISLNK(st.st_mode)); /* linked the symlink itself */
    canary_intact(f);
    snprintf(name, sizeof(name), "hardlink2-%s.tar", w);
    layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
    char abs[200];
    snprintf(abs, sizeof(abs), "%s/secret", f->out);
    layer_add(&l, &(ent_t){.path = "h2", .hardlink = abs});
    layer_end(&l);
    /* resolved inside the root: the confined copy from step 2, never the host file */
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res);
    canary_intact(f);
    snprintf(name, sizeof(name), "hardlink3-%s.tar", w);
    layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "h3", .hardlink = "../outside/secret"});
    layer_end(&l);
    free(apply_fail(f, l.path, BERTH_E_INVALID_ARGUMENT));
    snprintf(name, sizeof(name), "hardlink4-%s.tar", w);
    layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "h4", .hardlink = "s/secret"});
    layer_end(&l);
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res); /* s/secret is root/<out>/secret */
    canary_intact(f);

    /* 4. A directory replaced by a symlink between entries. */
    snprintf(name, sizeof(name), "dirswap-%s.tar", w);
    layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "swap/", .type = AE_IFDIR});
    layer_add(&l, &(ent_t){.path = "swap/a", .data = "a"});
    layer_add(&l, &(ent_t){.path = "swap", .type = AE_IFLNK, .link = target});
    layer_add(&l, &(ent_t){.path = "swap/secret", .data = "pwned", .perm = 0777});
    layer_end(&l);
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res);
    canary_intact(f);
    st = lst(f, "swap");
    assert_true(S_ISLNK(st.st_mode));

    /* 5. Root replacement: "." and "/" as symlinks are ignored. */
    snprintf(name, sizeof(name), "rootswap-%s.tar", w);
    layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = ".", .type = AE_IFLNK, .link = target});
    layer_add(&l, &(ent_t){.path = "/", .type = AE_IFLNK, .link = target});
    layer_add(&l, &(ent_t){.path = "secret", .data = "pwned", .perm = 0777});
    layer_end(&l);
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res);
    canary_intact(f);
    st = lst(f, ".");
    assert_true(S_ISDIR(st.st_mode));

    /* 6. A file replacing a directory symlink: the link is replaced, the
     * directory it points to is untouched. */
    snprintf(name, sizeof(name), "filelink-%s.tar", w);
    layer_begin(&l, f->dir, name, OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "dl", .type = AE_IFLNK, .link = target});
    layer_add(&l, &(ent_t){.path = "dl", .data = "now a file"});
    layer_end(&l);
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res);
    st = lst(f, "dl");
    assert_true(S_ISREG(st.st_mode));
    canary_intact(f);

    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/* 2>/dev/null; true", f->root);
    assert_int_equal(system(cmd), 0);
    overlay_apply_force_walk = false;
}

static void test_escapes_openat2(void **state)
{
    escapes(*state, false);
}
static void test_escapes_walker(void **state)
{
    escapes(*state, true);
}

static void test_limits(void **state)
{
    fx_t *f = *state;
    layer_t l;
    /* A decompression bomb: 64 MiB of zeros in a small gzip, cap 8 MiB. */
    layer_begin(&l, f->dir, "bomb.tgz", OVERLAY_COMP_GZIP);
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, "zeros");
    archive_entry_set_filetype(ae, AE_IFREG);
    archive_entry_set_perm(ae, 0644);
    archive_entry_set_size(ae, 64 << 20);
    archive_write_header(l.a, ae);
    static char zeros[1 << 20];
    for (int i = 0; i < 64; i++)
        archive_write_data(l.a, zeros, sizeof(zeros));
    archive_entry_free(ae);
    layer_end(&l);
    struct stat bst;
    stat(l.path, &bst);
    assert_true(bst.st_size < (1 << 20));
    overlay_apply_opts_t o = {.max_uncompressed = 8 << 20};
    overlay_apply_result_t res;
    berth_error_t *err = NULL;
    assert_int_equal(apply_opts(f, l.path, OVERLAY_COMP_GZIP, &o, &res, &err), -1);
    assert_int_equal(err->code, BERTH_E_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err->message, "decompression bomb"));
    berth_error_free(&err);

    /* Free-space reserve larger than the disk. */
    o = (overlay_apply_opts_t){.min_free_bytes = 1ull << 62};
    assert_int_equal(apply_opts(f, l.path, OVERLAY_COMP_GZIP, &o, &res, &err), -1);
    assert_int_equal(err->code, BERTH_E_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err->message, "reserve"));
    berth_error_free(&err);

    /* Wrong diff ID, wrong blob size, cancel. */
    o = (overlay_apply_opts_t){.expected_diff_id = "sha256:00"};
    assert_int_equal(apply_opts(f, l.path, OVERLAY_COMP_GZIP, &o, &res, &err), -1);
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    assert_non_null(strstr(err->message, "diff ID mismatch"));
    berth_error_free(&err);
    o = (overlay_apply_opts_t){.expected_size = 12345};
    assert_int_equal(apply_opts(f, l.path, OVERLAY_COMP_GZIP, &o, &res, &err), -1);
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    berth_error_free(&err);
    atomic_int cancel = 1;
    o = (overlay_apply_opts_t){.cancel = &cancel};
    assert_int_equal(apply_opts(f, l.path, OVERLAY_COMP_GZIP, &o, &res, &err), -1);
    assert_int_equal(err->code, BERTH_E_CANCELED);
    berth_error_free(&err);

    /* Truncated gzip and truncated tar. */
    char cmd[PATH_MAX + 200];
    snprintf(cmd, sizeof(cmd), "head -c 2000 '%s' > '%s/trunc.tgz'", l.path, f->dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "%s/trunc.tgz", f->dir);
    int fd = open(cmd, O_RDONLY);
    o = (overlay_apply_opts_t){0};
    assert_int_equal(overlay_apply_fd(f->rootfd, fd, OVERLAY_COMP_GZIP, &o, &res, &err), -1);
    close(fd);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    assert_non_null(strstr(err->message, "truncated"));
    berth_error_free(&err);
}

static void test_bad_headers(void **state)
{
    fx_t *f = *state;
    layer_t l;
    layer_begin(&l, f->dir, "dev.tar", OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "bigdev", .type = AE_IFCHR, .devmaj = 0x1000, .devmin = 1});
    layer_end(&l);
    char *m = apply_fail(f, l.path, BERTH_E_INVALID_ARGUMENT);
    assert_non_null(strstr(m, "bigdev"));
    assert_non_null(strstr(m, "out of range"));
    free(m);
    layer_begin(&l, f->dir, "uid.tar", OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "baduid", .data = "x", .uid = 4294967295LL});
    layer_end(&l);
    m = apply_fail(f, l.path, BERTH_E_INVALID_ARGUMENT);
    assert_non_null(strstr(m, "owner"));
    free(m);
    layer_begin(&l, f->dir, "notdir.tar", OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "file", .data = "x"});
    layer_add(&l, &(ent_t){.path = "file/child", .data = "x"});
    layer_end(&l);
    m = apply_fail(f, l.path, BERTH_E_INVALID_ARGUMENT);
    assert_non_null(strstr(m, "file/child"));
    free(m);
    overlay_comp_t c;
    berth_error_t *err = NULL;
    assert_int_equal(overlay_media_type_parse("application/x-rar", &c, &err), -1);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    berth_error_free(&err);
    assert_int_equal(
        overlay_media_type_parse("application/vnd.docker.image.rootfs.diff.tar.gzip", &c, &err), 0);
    assert_int_equal(c, OVERLAY_COMP_GZIP);
}

/* PAX paths longer than PATH_MAX: handled by the component walker, with no
 * check that a long name could bypass. */
static void test_long_paths(void **state)
{
    fx_t *f = *state;
    char *p = malloc(8192);
    size_t o = 0;
    while (o < 6000)
        o += (size_t)sprintf(p + o, "%s", "directory_level_xx/");
    strcpy(p + o, "leaf");
    layer_t l;
    layer_begin(&l, f->dir, "long.tar", OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = p, .data = "deep"});
    /* a long path through a symlink pointing outside: still confined */
    char target[160];
    snprintf(target, sizeof(target), "%s", f->out);
    layer_add(&l, &(ent_t){.path = "directory_level_xx/directory_level_xx/esc",
                           .type = AE_IFLNK,
                           .link = target});
    char *q = malloc(8192);
    int n = sprintf(q, "directory_level_xx/directory_level_xx/esc/");
    while (n < 5000)
        n += sprintf(q + n, "%s", "sub_dir_of_outside/");
    strcpy(q + n, "secret");
    layer_add(&l, &(ent_t){.path = q, .data = "pwned"});
    layer_end(&l);
    overlay_apply_result_t res;
    apply_ok(f, l.path, OVERLAY_COMP_NONE, &res);
    canary_intact(f);
    /* check the deep leaf by walking */
    int fd = dup(f->rootfd);
    for (size_t i = 0; i < o / 19; i++) {
        int nfd = openat(fd, "directory_level_xx", O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        assert_true(nfd >= 0);
        close(fd);
        fd = nfd;
    }
    struct stat st;
    assert_int_equal(fstatat(fd, "leaf", &st, AT_SYMLINK_NOFOLLOW), 0);
    assert_int_equal(st.st_size, 4);
    close(fd);
    free(p);
    free(q);
    /* removing such a tree works too (no fd or stack exhaustion) */
    berth_error_t *err = NULL;
    assert_int_equal(overlay_rm_rf_at(f->rootfd, "directory_level_xx", &err), 0);
}

/* Parent directories missing from the layer get the lower layer's attributes. */
static void test_mkparent_from_lower(void **state)
{
    fx_t *f = *state;
    char lower[160];
    snprintf(lower, sizeof(lower), "%s/lower", f->dir);
    assert_int_equal(mkdir(lower, 0755), 0);
    char p[200];
    snprintf(p, sizeof(p), "%s/tmp", lower);
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(chmod(p, 01777), 0);
    assert_int_equal(chown(p, 3, 4), 0);
    struct timespec ts[2] = {{1111, 0}, {2222, 0}};
    utimensat(AT_FDCWD, p, ts, 0);
    int lfd = open(lower, O_RDONLY | O_DIRECTORY);
    layer_t l;
    layer_begin(&l, f->dir, "mkparent.tar", OVERLAY_COMP_NONE);
    layer_add(&l, &(ent_t){.path = "tmp/newfile", .data = "x"});
    layer_add(&l, &(ent_t){.path = "other/newfile", .data = "x"});
    layer_end(&l);
    overlay_apply_opts_t o = {.lower_fds = &lfd, .n_lowers = 1};
    overlay_apply_result_t res;
    berth_error_t *err = NULL;
    assert_int_equal(apply_opts(f, l.path, OVERLAY_COMP_NONE, &o, &res, &err), 0);
    close(lfd);
    struct stat st = lst(f, "tmp");
    assert_int_equal(st.st_mode & 07777, 01777);
    assert_int_equal(st.st_uid, 3);
    assert_int_equal(st.st_gid, 4);
    assert_int_equal(st.st_mtime, 2222);
    st = lst(f, "other");
    assert_int_equal(st.st_mode & 07777, 0755);
}

int main(void)
{
    overlay_apply_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rich_layer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_diff_id_hashes_trailing_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whiteouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_whiteouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escapes_openat2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escapes_walker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mkparent_from_lower, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
