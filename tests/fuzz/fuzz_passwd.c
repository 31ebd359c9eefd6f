/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: a container USER resolved against an image's /etc/passwd
 * and /etc/group (plugins/runtime-runc/user.c). Input: "USER\0PASSWD\0GROUP"
 * (missing parts: the file is absent). user.c has no entry point that takes
 * the file contents, so each run writes them into a scratch image root made
 * once per process (a detached tmpfs when running as root) and calls
 * rt_user_resolve() on it. Checks: no id is
 * (uint32_t)-1, the primary gid is the first supplementary group
 * (CVE-2023-25173), no group twice, at most 65536 groups. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../plugins/runtime-runc/internal.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_passwd: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static char root[64];
static int rootfd = -1, etcfd = -1;

static void cleanup(void)
{
    if (etcfd >= 0) {
        unlinkat(etcfd, "passwd", 0);
        unlinkat(etcfd, "group", 0);
    }
    if (rootfd >= 0)
        unlinkat(rootfd, "etc", AT_REMOVEDIR);
    if (root[0])
        rmdir(root);
}

/* The scratch image root: a detached tmpfs when we may mount (nothing on the
 * host to clean up, even when the fuzzer dies on a crash), else a temp dir
 * removed at exit. */
static void setup(void)
{
    int fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
    if (fs >= 0 && fsconfig(fs, FSCONFIG_SET_STRING, "size", "16m", 0) == 0 &&
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0) {
        int m = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
        if (m >= 0) {
            rootfd = openat(m, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            close(m);
        }
    }
    if (fs >= 0)
        close(fs);
    if (rootfd < 0) {
        snprintf(root, sizeof(root), "/tmp/berth-fuzz-passwd.XXXXXX");
        CHECK(mkdtemp(root));
        rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(rootfd >= 0);
        atexit(cleanup);
    }
    CHECK(mkdirat(rootfd, "etc", 0755) == 0);
    etcfd = openat(rootfd, "etc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(etcfd >= 0);
}

static void put(const char *name, const uint8_t *p, size_t n, bool present)
{
    unlinkat(etcfd, name, 0);
    if (!present)
        return;
    int fd = openat(etcfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK(n == 0 || write(fd, p, n) == (ssize_t)n);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (rootfd < 0)
        setup();
    const uint8_t *end = data + size;
    const uint8_t *z1 = memchr(data, 0, size);
    if (!z1 || z1 - data > 256)
        return 0;
    const uint8_t *pw = z1 + 1;
    const uint8_t *z2 = memchr(pw, 0, (size_t)(end - pw));
    const uint8_t *pw_end = z2 ? z2 : end;
    const uint8_t *gr = z2 ? z2 + 1 : end;
    put("passwd", pw, (size_t)(pw_end - pw), true);
    put("group", gr, (size_t)(end - gr), z2 != NULL);

    const char *user = (const char *)data; /* NUL-terminated at z1 */
    rt_user_t u;
    berth_error_t *err = NULL;
    if (rt_user_resolve(rootfd, user, &u, &err) == 0) {
        CHECK(u.uid != UINT32_MAX && u.gid != UINT32_MAX);
        CHECK(u.n_additional_gids >= 1 && u.n_additional_gids <= 65536);
        CHECK(u.additional_gids[0] == u.gid);
        for (size_t i = 0; i < u.n_additional_gids; i++) {
            CHECK(u.additional_gids[i] != UINT32_MAX);
            for (size_t j = 0; j < i && u.n_additional_gids < 2048; j++)
                CHECK(u.additional_gids[i] != u.additional_gids[j]);
        }
        rt_user_clear(&u);
    } else {
        CHECK(err && err->message);
        CHECK(u.additional_gids == NULL && u.n_additional_gids == 0);
    }
    berth_error_free(&err);

    uint32_t id;
    if (rt_parse_id(user, strlen(user), &id) == 0)
        CHECK(id != UINT32_MAX);
    /* No rootfs at all: only numeric users resolve. */
    if (rt_user_resolve(-1, user, &u, &err) == 0)
        rt_user_clear(&u);
    berth_error_free(&err);
    return 0;
}
