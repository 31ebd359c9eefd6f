/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the shim's exit records (shim/exitfile.c) and the task
 * on-disk helpers (task.c): durable write/read, published flag, malformed
 * and hostile files, wait-status conversion, FIFOs, bundles, removal. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "exitfile.h"
#include "task.h"

static char dir[256];
static int dfd = -1;

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/berth-test-exit-XXXXXX");
    assert_non_null(mkdtemp(dir));
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    (void)state;
    return 0;
}

static int teardown(void **state)
{
    close(dfd);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    (void)state;
    return 0;
}

static void test_roundtrip(void **state)
{
    berth_error_t *err = NULL;
    shim_exit_t e = {.pid = 1234, .status = 143, .exited_at = 1700000000123456789LL};
    assert_int_equal(shim_exit_write(dfd, NULL, &e, &err), 0);
    shim_exit_t r;
    assert_int_equal(shim_exit_read(dfd, NULL, &r, &err), 0);
    assert_int_equal(r.pid, 1234);
    assert_int_equal(r.status, 143);
    assert_true(r.exited_at == 1700000000123456789LL);
    assert_false(r.published);
    /* published is rewritten in place, atomically */
    e.published = true;
    assert_int_equal(shim_exit_write(dfd, NULL, &e, &err), 0);
    assert_int_equal(shim_exit_read(dfd, NULL, &r, &err), 0);
    assert_true(r.published);
    /* no temp file left behind */
    assert_int_equal(faccessat(dfd, ".exit.tmp", F_OK, 0), -1);
    /* exec records have their own file */
    shim_exit_t x = {.pid = 77, .status = 7, .exited_at = 5};
    assert_int_equal(shim_exit_write(dfd, "ex1", &x, &err), 0);
    assert_int_equal(faccessat(dfd, "exec-ex1.exit", F_OK, 0), 0);
    assert_int_equal(shim_exit_read(dfd, "ex1", &r, &err), 0);
    assert_int_equal(r.status, 7);
    assert_int_equal(shim_exit_read(dfd, "nope", &r, &err), 1);
    (void)state;
}

static void put(const char *name, const char *content)
{
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
}

static void test_malformed(void **state)
{
    berth_error_t *err = NULL;
    shim_exit_t r;
    put("exec-bad.exit", "pid=1 status=nope\n");
    assert_int_equal(shim_exit_read(dfd, "bad", &r, &err), -1);
    berth_error_free(&err);
    put("exec-big.exit", "pid=1 status=999 exited_at=1 published=0\n");
    assert_int_equal(shim_exit_read(dfd, "big", &r, &err), -1);
    berth_error_free(&err);
    put("exec-empty.exit", "");
    assert_int_equal(shim_exit_read(dfd, "empty", &r, &err), -1);
    berth_error_free(&err);
    /* a symlink is never followed */
    assert_int_equal(symlinkat("/etc/passwd", dfd, "exec-link.exit"), 0);
    assert_true(shim_exit_read(dfd, "link", &r, &err) < 0);
    berth_error_free(&err);
    (void)state;
}

static void test_status(void **state)
{
    int st;
    pid_t p = fork();
    if (p == 0)
        _exit(7);
    waitpid(p, &st, 0);
    assert_int_equal(shim_exit_status(st), 7);
    p = fork();
    if (p == 0) {
        pause();
        _exit(0);
    }
    kill(p, SIGTERM);
    waitpid(p, &st, 0);
    assert_int_equal(shim_exit_status(st), 143);
    p = fork();
    if (p == 0) {
        pause();
        _exit(0);
    }
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
    assert_int_equal(shim_exit_status(st), 137);
    (void)state;
}

static void test_fifos_and_bundle(void **state)
{
    berth_error_t *err = NULL;
    char fd_dir[400], bundle[400], p[500];
    snprintf(fd_dir, sizeof(fd_dir), "%s/fifo/default/c1", dir);
    const bool want[3] = {true, true, false};
    char *paths[3];
    assert_int_equal(rt_fifos_create(fd_dir, "init", want, paths, &err), 0);
    assert_non_null(paths[0]);
    assert_non_null(paths[1]);
    assert_null(paths[2]);
    struct stat st;
    assert_int_equal(lstat(paths[0], &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(lstat(fd_dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    char keep[400];
    snprintf(keep, sizeof(keep), "%s", paths[1]);
    rt_fifos_remove(paths);
    assert_null(paths[1]);
    assert_int_equal(access(keep, F_OK), -1);

    snprintf(bundle, sizeof(bundle), "%s/runtime/default/c1", dir);
    assert_int_equal(rt_bundle_create(bundle, "{\"a\":1}", 7, &err), 0);
    snprintf(p, sizeof(p), "%s/config.json", bundle);
    FILE *f = fopen(p, "r");
    char buf[32] = "";
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    assert_string_equal(buf, "{\"a\":1}");
    snprintf(p, sizeof(p), "%s/rootfs", bundle);
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* a second create of the same bundle is refused */
    assert_int_equal(rt_bundle_create(bundle, "{}", 2, &err), -1);
    assert_int_equal(err->code, BERTH_E_ALREADY_EXISTS);
    berth_error_free(&err);
    assert_false(rt_is_mountpoint(p));
    assert_int_equal(rt_rootfs_unmount(p, &err), 0);
    assert_int_equal(rt_remove_tree(bundle, &err), 0);
    assert_int_equal(access(bundle, F_OK), -1);
    assert_int_equal(rt_remove_tree(bundle, &err), 0); /* absent is fine */
    (void)state;
}

/* The rootfs mount (real mounts: needs root) and a removal that must not
 * descend into a mount point that is still there. */
static void test_mounts(void **state)
{
    if (geteuid() != 0) {
        print_message("mounting needs root: skipped\n");
        skip();
    }
    berth_error_t *err = NULL;
    char l1[400], l2[400], up[400], wk[400], tgt[400], p[500];
    snprintf(l1, sizeof(l1), "%s/l1", dir);
    snprintf(l2, sizeof(l2), "%s/l2", dir);
    snprintf(up, sizeof(up), "%s/up", dir);
    snprintf(wk, sizeof(wk), "%s/wk", dir);
    snprintf(tgt, sizeof(tgt), "%s/b/rootfs", dir);
    mkdir(l1, 0755);
    mkdir(l2, 0755);
    mkdir(up, 0755);
    mkdir(wk, 0755);
    assert_int_equal(rt_mkdir_p(tgt, 0755, &err), 0);
    snprintf(p, sizeof(p), "%s/f1", l1);
    fclose(fopen(p, "w"));
    snprintf(p, sizeof(p), "%s/f2", l2);
    fclose(fopen(p, "w"));
    char o1[1024], o2[1024], o3[1024];
    snprintf(o1, sizeof(o1), "lowerdir=%s:%s", l1, l2);
    snprintf(o2, sizeof(o2), "upperdir=%s", up);
    snprintf(o3, sizeof(o3), "workdir=%s", wk);
    char *opts[] = {o2, o3, o1};
    rt_fsmount_t m = {.type = "overlay", .source = "overlay", .options = opts, .n_options = 3};
    assert_int_equal(rt_rootfs_mount(tgt, &m, 1, false, &err), 0);
    assert_true(rt_is_mountpoint(tgt));
    snprintf(p, sizeof(p), "%s/f1", tgt);
    assert_int_equal(access(p, F_OK), 0);
    snprintf(p, sizeof(p), "%s/new", tgt);
    fclose(fopen(p, "w"));
    /* removal refuses to descend into the mount */
    char b[400];
    snprintf(b, sizeof(b), "%s/b", dir);
    assert_int_equal(rt_remove_tree(b, &err), -1);
    berth_error_free(&err);
    snprintf(p, sizeof(p), "%s/f2", l2);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(rt_rootfs_unmount(tgt, &err), 0);
    assert_false(rt_is_mountpoint(tgt));
    snprintf(p, sizeof(p), "%s/new", up);
    assert_int_equal(access(p, F_OK), 0);

    /* read-only view: upper joins the lowers, writes fail */
    assert_int_equal(rt_rootfs_mount(tgt, &m, 1, true, &err), 0);
    snprintf(p, sizeof(p), "%s/new", tgt);
    assert_int_equal(access(p, F_OK), 0);
    snprintf(p, sizeof(p), "%s/nope", tgt);
    assert_null(fopen(p, "w"));
    assert_int_equal(rt_rootfs_unmount(tgt, &err), 0);
    /* single layer read-only: a bind mount */
    char one[1024];
    snprintf(one, sizeof(one), "lowerdir=%s", l1);
    char *opts1[] = {one};
    rt_fsmount_t m1 = {.type = "overlay", .source = "overlay", .options = opts1, .n_options = 1};
    assert_int_equal(rt_rootfs_mount(tgt, &m1, 1, true, &err), 0);
    snprintf(p, sizeof(p), "%s/f1", tgt);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(rt_rootfs_unmount(tgt, &err), 0);
    assert_int_equal(rt_remove_tree(b, &err), 0);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_status),    cmocka_unit_test(test_fifos_and_bundle),
        cmocka_unit_test(test_mounts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
