/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the overlayfs snapshot store (plugins/snapshot-overlay/
 * overlay.c): layout and modes, mounts like containerd's, commit rules and
 * the apply marker, remove, usage, list, crash reconciliation and a real
 * mount of a 128-layer chain (root + overlayfs only; skipped otherwise). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

typedef struct {
    char dir[64];
    char root[96];
    overlay_store_t *s;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/berth-test-overlay-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->root, sizeof(f->root), "%s/snapshot-overlay", f->dir);
    overlay_store_opts_t o = {.sync_on_commit = false, .index_off = true};
    berth_error_t *err = NULL;
    if (overlay_store_open(f->root, &o, &f->s, &err) < 0)
        fail_msg("open: %s", err->message);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    overlay_store_free(f->s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", f->dir);
    free(f);
    return 0;
}

static void prep(fx_t *f, const char *id, const char *const *parents, size_t n, bool ro,
                 overlay_mounts_t *m)
{
    berth_error_t *err = NULL;
    if (overlay_prepare(f->s, id, parents, n, ro, m, &err) < 0)
        fail_msg("prepare %s: %s", id, err->message);
}

static void commit(fx_t *f, const char *id)
{
    overlay_usage_t u;
    berth_error_t *err = NULL;
    if (overlay_commit(f->s, id, &u, &err) < 0)
        fail_msg("commit %s: %s", id, err->message);
}

static void write_in(fx_t *f, const char *id, const char *rel, const char *content)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/snapshots/%s/fs/%s", f->root, id, rel);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static bool has_opt(const overlay_mount_t *m, const char *o)
{
    for (size_t i = 0; i < m->n_options; i++)
        if (strcmp(m->options[i], o) == 0)
            return true;
    return false;
}

static const char *opt_prefix(const overlay_mount_t *m, const char *pfx)
{
    for (size_t i = 0; i < m->n_options; i++)
        if (strncmp(m->options[i], pfx, strlen(pfx)) == 0)
            return m->options[i] + strlen(pfx);
    return NULL;
}

static void test_ids(void **state)
{
    (void)state;
    assert_true(overlay_id_valid("1"));
    assert_true(overlay_id_valid("12345678901234567890"));
    assert_false(overlay_id_valid("123456789012345678901"));
    assert_false(overlay_id_valid(""));
    assert_false(overlay_id_valid(NULL));
    assert_false(overlay_id_valid("../1"));
    assert_false(overlay_id_valid("1a"));
    assert_false(overlay_id_valid("-1"));
}

static void test_layout_and_mounts(void **state)
{
    fx_t *f = *state;
    overlay_mounts_t m;
    char want[PATH_MAX];

    /* No parent, read-write: bind of its own fs. */
    prep(f, "1", NULL, 0, false, &m);
    assert_int_equal(m.n, 1);
    assert_string_equal(m.v[0].type, "bind");
    snprintf(want, sizeof(want), "%s/snapshots/1/fs", f->root);
    assert_string_equal(m.v[0].source, want);
    assert_true(has_opt(&m.v[0], "rw"));
    assert_true(has_opt(&m.v[0], "rbind"));
    assert_null(m.v[0].chdir);
    overlay_mounts_free(&m);
    struct stat st;
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/snapshots", f->root);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    snprintf(p, sizeof(p), "%s/snapshots/1", f->root);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    snprintf(p, sizeof(p), "%s/snapshots/1/fs", f->root);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    snprintf(p, sizeof(p), "%s/snapshots/1/work", f->root);
    assert_int_equal(stat(p, &st), 0);

    /* A parent that is not committed is refused; a missing one is not found. */
    berth_error_t *err = NULL;
    const char *p1[] = {"1"};
    assert_int_equal(overlay_prepare(f->s, "2", p1, 1, false, &m, &err), -1);
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    berth_error_free(&err);
    const char *p9[] = {"9"};
    assert_int_equal(overlay_prepare(f->s, "2", p9, 1, false, &m, &err), -1);
    assert_int_equal(err->code, BERTH_E_NOT_FOUND);
    berth_error_free(&err);
    const char *bad[] = {"../x"};
    assert_int_equal(overlay_prepare(f->s, "2", bad, 1, false, &m, &err), -1);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    berth_error_free(&err);
    assert_int_equal(overlay_prepare(f->s, "x/..", NULL, 0, false, &m, &err), -1);
    assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
    berth_error_free(&err);

    commit(f, "1");
    /* Preparing a committed id again: already_exists. Re-preparing an
     * active one returns its mounts (retry after a crash). */
    assert_int_equal(overlay_prepare(f->s, "1", NULL, 0, false, &m, &err), -1);
    assert_int_equal(err->code, BERTH_E_ALREADY_EXISTS);
    berth_error_free(&err);

    /* Active on one parent: overlay with upper, work, one lower. */
    prep(f, "2", p1, 1, false, &m);
    assert_string_equal(m.v[0].type, "overlay");
    snprintf(want, sizeof(want), "%s/snapshots/1/fs", f->root);
    assert_string_equal(opt_prefix(&m.v[0], "lowerdir="), want);
    snprintf(want, sizeof(want), "%s/snapshots/2/fs", f->root);
    assert_string_equal(opt_prefix(&m.v[0], "upperdir="), want);
    snprintf(want, sizeof(want), "%s/snapshots/2/work", f->root);
    assert_string_equal(opt_prefix(&m.v[0], "workdir="), want);
    overlay_mounts_free(&m);
    prep(f, "2", p1, 1, false, &m); /* idempotent */
    overlay_mounts_free(&m);

    /* View on one parent: read-only bind of the parent's fs. */
    prep(f, "3", p1, 1, true, &m);
    assert_string_equal(m.v[0].type, "bind");
    snprintf(want, sizeof(want), "%s/snapshots/1/fs", f->root);
    assert_string_equal(m.v[0].source, want);
    assert_true(has_opt(&m.v[0], "ro"));
    overlay_mounts_free(&m);
    snprintf(p, sizeof(p), "%s/snapshots/3/work", f->root);
    assert_int_equal(stat(p, &st), -1); /* views have no work dir */

    /* View on two parents: overlay with lowerdirs only. */
    commit(f, "2");
    const char *p21[] = {"2", "1"};
    prep(f, "4", p21, 2, true, &m);
    assert_string_equal(m.v[0].type, "overlay");
    assert_null(opt_prefix(&m.v[0], "upperdir="));
    snprintf(want, sizeof(want), "%s/snapshots/2/fs:%s/snapshots/1/fs", f->root, f->root);
    assert_string_equal(opt_prefix(&m.v[0], "lowerdir="), want);
    overlay_mounts_free(&m);

    /* Stored parents/kind are used when the caller gives none. */
    assert_int_equal(overlay_mounts(f->s, "4", NULL, 0, -1, &m, &err), 0);
    assert_string_equal(opt_prefix(&m.v[0], "lowerdir="), want);
    assert_null(opt_prefix(&m.v[0], "upperdir="));
    overlay_mounts_free(&m);
    assert_int_equal(overlay_mounts(f->s, "77", NULL, 0, -1, &m, &err), -1);
    assert_int_equal(err->code, BERTH_E_NOT_FOUND);
    berth_error_free(&err);

    /* A view cannot be committed. */
    overlay_usage_t u;
    assert_int_equal(overlay_commit(f->s, "4", &u, &err), -1);
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    berth_error_free(&err);
}

static void test_commit_apply_marker(void **state)
{
    fx_t *f = *state;
    overlay_mounts_t m;
    berth_error_t *err = NULL;
    overlay_usage_t u;
    prep(f, "10", NULL, 0, false, &m);
    overlay_mounts_free(&m);
    char p[PATH_MAX];
    /* Interrupted apply: marker says running. */
    snprintf(p, sizeof(p), "%s/snapshots/10/apply", f->root);
    FILE *fp = fopen(p, "w");
    fputs("running\n", fp);
    fclose(fp);
    assert_int_equal(overlay_commit(f->s, "10", &u, &err), -1);
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    assert_non_null(strstr(err->message, "interrupted"));
    berth_error_free(&err);
    char **ids, **intr;
    size_t n, ni;
    assert_int_equal(overlay_list(f->s, &ids, &n, &intr, &ni, &err), 0);
    assert_int_equal(ni, 1);
    assert_string_equal(intr[0], "10");
    overlay_strv_free(ids, n);
    overlay_strv_free(intr, ni);
    /* Failed apply. */
    fp = fopen(p, "w");
    fputs("failed\n", fp);
    fclose(fp);
    assert_int_equal(overlay_commit(f->s, "10", &u, &err), -1);
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    berth_error_free(&err);
    /* Completed apply commits; by-hand snapshots (no marker) commit too. */
    fp = fopen(p, "w");
    fputs("done sha256:abc\n", fp);
    fclose(fp);
    write_in(f, "10", "file", "0123456789");
    assert_int_equal(overlay_commit(f->s, "10", &u, &err), 0);
    assert_true(u.inodes >= 2);
    assert_true(u.size >= 4096);
    assert_int_equal(overlay_commit(f->s, "10", &u, &err), 0); /* twice is fine */
    prep(f, "11", NULL, 0, false, &m);
    overlay_mounts_free(&m);
    commit(f, "11");

    /* Real apply into a committed snapshot is refused. */
    overlay_apply_opts_t o = {0};
    overlay_apply_result_t res;
    assert_int_equal(overlay_apply_snapshot(f->s, "11", "/dev/null",
                                            "application/vnd.oci.image.layer.v1.tar", &o, &res,
                                            &err),
                     -1);
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    berth_error_free(&err);
    /* A failing apply leaves a "failed" marker: commit refused. */
    prep(f, "12", NULL, 0, false, &m);
    overlay_mounts_free(&m);
    assert_int_equal(overlay_apply_snapshot(f->s, "12", "/dev/null",
                                            "application/vnd.oci.image.layer.v1.tar+gzip", &o, &res,
                                            &err),
                     -1);
    berth_error_free(&err);
    assert_int_equal(overlay_commit(f->s, "12", &u, &err), -1);
    assert_int_equal(err->code, BERTH_E_FAILED_PRECONDITION);
    berth_error_free(&err);
}

static void test_usage_hardlinks(void **state)
{
    fx_t *f = *state;
    overlay_mounts_t m;
    prep(f, "20", NULL, 0, false, &m);
    overlay_mounts_free(&m);
    char big[8192];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    write_in(f, "20", "a", big);
    char a[PATH_MAX], b[PATH_MAX];
    snprintf(a, sizeof(a), "%s/snapshots/20/fs/a", f->root);
    snprintf(b, sizeof(b), "%s/snapshots/20/fs/b", f->root);
    assert_int_equal(link(a, b), 0);
    overlay_usage_t u;
    berth_error_t *err = NULL;
    assert_int_equal(overlay_usage(f->s, "20", &u, &err), 0);
    assert_int_equal(u.inodes, 2); /* fs dir + one file */
    assert_true(u.size >= 8192 && u.size < 8192 + 3 * 4096);
}

/* Commit without usage (what the plugin does): the first usage query walks
 * the tree and records the result in the committed marker; later queries
 * read it back (the snapshot is immutable). */
static void test_usage_after_commit(void **state)
{
    fx_t *f = *state;
    overlay_mounts_t m;
    prep(f, "21", NULL, 0, false, &m);
    overlay_mounts_free(&m);
    write_in(f, "21", "a", "hello");
    write_in(f, "21", "b", "world");
    berth_error_t *err = NULL;
    assert_int_equal(overlay_commit(f->s, "21", NULL, &err), 0);
    char p[PATH_MAX], buf[128] = "";
    snprintf(p, sizeof(p), "%s/snapshots/21/committed", f->root);
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof(buf), fp));
    fclose(fp);
    assert_string_equal(buf, "\n"); /* not computed at commit */
    overlay_usage_t u;
    assert_int_equal(overlay_usage(f->s, "21", &u, &err), 0);
    assert_int_equal(u.inodes, 3); /* fs dir + two files */
    fp = fopen(p, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof(buf), fp));
    fclose(fp);
    unsigned long long size, inodes;
    assert_int_equal(sscanf(buf, "%llu %llu", &size, &inodes), 2);
    assert_int_equal(inodes, 3);
    assert_int_equal(size, u.size);
    /* Recorded: a file added behind our back (not allowed, but it shows
     * where the answer comes from) does not change it. */
    write_in(f, "21", "c", "later");
    overlay_usage_t u2;
    assert_int_equal(overlay_usage(f->s, "21", &u2, &err), 0);
    assert_int_equal(u2.inodes, 3);
    /* A retried commit with a usage request reads the recorded value. */
    assert_int_equal(overlay_commit(f->s, "21", &u2, &err), 0);
    assert_int_equal(u2.inodes, 3);
}

/* The snapshots directory spreads new snapshot trees over the filesystem
 * (FS_TOPDIR_FL) where the filesystem supports the flag (ext2/3/4). */
static void test_snapshots_topdir(void **state)
{
    fx_t *f = *state;
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/snapshots", f->root);
    int fd = open(p, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0) {
        close(fd);
        skip(); /* no inode flags here (tmpfs, ...) */
    }
    struct statfs sf;
    assert_int_equal(fstatfs(fd, &sf), 0);
    close(fd);
    if (sf.f_type != EXT4_SUPER_MAGIC)
        skip(); /* only ext2/3/4 know the flag */
    assert_true(flags & FS_TOPDIR_FL);
}

static void test_remove_list_reconcile(void **state)
{
    fx_t *f = *state;
    overlay_mounts_t m;
    berth_error_t *err = NULL;
    for (int i = 1; i <= 11; i++) {
        char id[8];
        snprintf(id, sizeof(id), "%d", i);
        prep(f, id, NULL, 0, false, &m);
        overlay_mounts_free(&m);
    }
    write_in(f, "5", "x", "x");
    assert_int_equal(overlay_remove(f->s, "5", &err), 0);
    assert_int_equal(overlay_remove(f->s, "5", &err), -1);
    assert_int_equal(err->code, BERTH_E_NOT_FOUND);
    berth_error_free(&err);
    char **ids;
    size_t n;
    assert_int_equal(overlay_list(f->s, &ids, &n, NULL, NULL, &err), 0);
    assert_int_equal(n, 10);
    assert_string_equal(ids[0], "1");
    assert_string_equal(ids[1], "2");
    assert_string_equal(ids[8], "10"); /* numeric order */
    overlay_strv_free(ids, n);

    /* What a kill -9 leaves: a half-built prepare, a half-done remove, a
     * torn marker write, and junk. */
    char p[PATH_MAX];
    snprintf(p, sizeof(p),
             "mkdir -p '%s/snapshots/new-30-aa/fs/x' '%s/snapshots/rm-6-bb/fs/y/z' "
             "&& touch '%s/snapshots/7/.apply.tmp' '%s/snapshots/junk'",
             f->root, f->root, f->root, f->root);
    assert_int_equal(system(p), 0);
    overlay_reconcile_t r;
    assert_int_equal(overlay_reconcile(f->s, &r, &err), 0);
    assert_int_equal(r.removed_tmp, 2);
    assert_int_equal(r.unknown, 1);
    snprintf(p, sizeof(p), "%s/snapshots/new-30-aa", f->root);
    struct stat st;
    assert_int_equal(lstat(p, &st), -1);
    snprintf(p, sizeof(p), "%s/snapshots/7/.apply.tmp", f->root);
    assert_int_equal(lstat(p, &st), -1);
    assert_int_equal(overlay_list(f->s, &ids, &n, NULL, NULL, &err), 0);
    assert_int_equal(n, 10);
    overlay_strv_free(ids, n);
}

/* Deep trees are removed with few fds (hostile layers nest deeply). */
static void test_rm_deep(void **state)
{
    fx_t *f = *state;
    overlay_mounts_t m;
    prep(f, "40", NULL, 0, false, &m);
    overlay_mounts_free(&m);
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/snapshots/40/fs", f->root);
    int fd = open(p, O_RDONLY | O_DIRECTORY);
    for (int i = 0; i < 3000; i++) {
        assert_int_equal(mkdirat(fd, "d", 0755), 0);
        int s = openat(fd, "f", O_CREAT | O_WRONLY, 0644);
        close(s);
        int n = openat(fd, "d", O_RDONLY | O_DIRECTORY);
        close(fd);
        fd = n;
    }
    close(fd);
    struct rlimit old, lim = {64, 64};
    getrlimit(RLIMIT_NOFILE, &old);
    lim.rlim_max = old.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
    berth_error_t *err = NULL;
    overlay_usage_t u;
    int rc = overlay_usage(f->s, "40", &u, &err);
    int rc2 = rc == 0 ? overlay_remove(f->s, "40", &err) : -1;
    setrlimit(RLIMIT_NOFILE, &old);
    if (rc < 0 || rc2 < 0)
        fail_msg("deep tree: %s", err->message);
    assert_int_equal(u.inodes, 6001);
}

/* 128 layers: the mount options fit one page (relative lowerdirs + chdir),
 * and the kernel really mounts it. */
static void test_chain_128(void **state)
{
    fx_t *f = *state;
    overlay_mounts_t m;
    char *ids[129];
    for (int i = 1; i <= 128; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%d", 1000 + i);
        ids[i] = strdup(id);
        const char *parents[128];
        for (int j = 0; j < i - 1; j++)
            parents[j] = ids[i - 1 - j];
        prep(f, id, parents, (size_t)(i - 1), false, &m);
        overlay_mounts_free(&m);
        char name[32], content[16];
        snprintf(name, sizeof(name), "layer%d", i);
        snprintf(content, sizeof(content), "%d", i);
        write_in(f, id, name, content);
        write_in(f, id, "top", content);
        commit(f, id);
    }
    const char *parents[128];
    for (int j = 0; j < 128; j++)
        parents[j] = ids[128 - j];
    prep(f, "2000", parents, 128, false, &m);
    assert_string_equal(m.v[0].type, "overlay");
    size_t data = 0;
    for (size_t i = 0; i < m.v[0].n_options; i++)
        data += strlen(m.v[0].options[i]) + 1;
    assert_true(data <= OVERLAY_MOUNT_DATA_MAX);
    assert_non_null(m.v[0].chdir);

    bool can_mount = geteuid() == 0;
    char target[PATH_MAX];
    snprintf(target, sizeof(target), "%s/mnt", f->dir);
    mkdir(target, 0755);
    if (can_mount) {
        char opts[8192] = "";
        for (size_t i = 0; i < m.v[0].n_options; i++) {
            if (i)
                strcat(opts, ",");
            strcat(opts, m.v[0].options[i]);
        }
        int cwd = open(".", O_RDONLY | O_DIRECTORY);
        assert_int_equal(chdir(m.v[0].chdir), 0);
        int r = mount("overlay", target, "overlay", 0, opts);
        int e = errno;
        assert_int_equal(fchdir(cwd), 0);
        close(cwd);
        if (r < 0 && (e == ENODEV || e == EPERM)) {
            print_message("overlayfs not available here (%s): mount part skipped\n", strerror(e));
            can_mount = false;
        } else if (r < 0) {
            fail_msg("mount 128-layer overlay: %s", strerror(e));
        }
    }
    if (can_mount) {
        char p[PATH_MAX + 32], buf[16] = {0};
        snprintf(p, sizeof(p), "%s/layer1", target);
        FILE *fp = fopen(p, "r");
        assert_non_null(fp);
        fclose(fp);
        snprintf(p, sizeof(p), "%s/layer128", target);
        assert_int_equal(access(p, F_OK), 0);
        snprintf(p, sizeof(p), "%s/top", target);
        fp = fopen(p, "r");
        assert_non_null(fp);
        assert_non_null(fgets(buf, sizeof(buf), fp));
        fclose(fp);
        assert_string_equal(buf, "128"); /* nearest parent wins */
        umount2(target, MNT_DETACH);
    }
    overlay_mounts_free(&m);
    for (int i = 1; i <= 128; i++)
        free(ids[i]);
}

int main(void)
{
    overlay_apply_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test_setup_teardown(test_layout_and_mounts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_apply_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_hardlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots_topdir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_list_reconcile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm_deep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_128, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
