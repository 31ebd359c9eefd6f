/* SPDX-License-Identifier: Apache-2.0 */
/* Durable exit records (see exitfile.h). Shared by the shim, which writes
 * them, and the runtime plugin, which reads them when a shim is gone. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exitfile.h"

void shim_exit_name(const char *exec_id, char *buf, size_t n)
{
    if (!exec_id || !exec_id[0])
        snprintf(buf, n, "exit");
    else
        snprintf(buf, n, "exec-%s.exit", exec_id);
}

int shim_exit_status(int wstatus)
{
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus))
        return 128 + WTERMSIG(wstatus);
    return 255;
}

int shim_exit_write(int dirfd, const char *exec_id, const shim_exit_t *e, berth_error_t **err)
{
    char name[128], tmp[140];
    shim_exit_name(exec_id, name, sizeof(name));
    snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
    char line[160];
    int n = snprintf(line, sizeof(line), "pid=%d status=%d exited_at=%" PRId64 " published=%d\n",
                     e->pid, e->status, e->exited_at, e->published ? 1 : 0);
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return berth_error_errno(err, errno, "create exit record %s", tmp);
    /* Written to a temp file and renamed: a reader never sees half a record.
     * No fsync: the records are runtime state (the state dir, normally a
     * tmpfs); they must outlive the runtime plugin, not a reboot, which
     * ends every container anyway. */
    ssize_t w = write(fd, line, (size_t)n);
    if (w != n) {
        int e2 = w < 0 ? errno : EIO;
        close(fd);
        unlinkat(dirfd, tmp, 0);
        return berth_error_errno(err, e2, "write exit record %s", name);
    }
    close(fd);
    if (renameat(dirfd, tmp, dirfd, name) < 0) {
        int e2 = errno;
        unlinkat(dirfd, tmp, 0);
        return berth_error_errno(err, e2, "rename exit record %s", name);
    }
    return 0;
}

int shim_exit_read(int dirfd, const char *exec_id, shim_exit_t *e, berth_error_t **err)
{
    char name[128];
    shim_exit_name(exec_id, name, sizeof(name));
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        return berth_error_errno(err, errno, "open exit record %s", name);
    }
    char buf[256];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return berth_error_set(err, BERTH_E_INTERNAL, "exit record %s is empty", name);
    buf[n] = 0;
    int pub = 0;
    memset(e, 0, sizeof(*e));
    if (sscanf(buf, "pid=%d status=%d exited_at=%" SCNd64 " published=%d", &e->pid, &e->status,
               &e->exited_at, &pub) != 4 ||
        e->status < 0 || e->status > 255)
        return berth_error_set(err, BERTH_E_INTERNAL, "exit record %s is malformed", name);
    e->published = pub != 0;
    return 0;
}
