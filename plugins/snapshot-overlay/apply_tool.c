/* SPDX-License-Identifier: Apache-2.0 */
/* berth-apply-test: drives the snapshot store and layer apply without the
 * daemon, for the security corpus, the umoci cross-check and the unpack
 * benchmark. Not installed; not a user interface. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "berth/log.h"
#include "internal.h"

static void usage(void)
{
    fprintf(stderr,
            "usage: berth-apply-test COMMAND ...\n"
            "  apply [--media-type MT] [--max-size N] [--reserve N] [--expect DIFFID] [--walk]\n"
            "        [--lower DIR]... DIR BLOB      extract one layer into DIR\n"
            "  chain [--no-sync] ROOT BLOB...       snapshots 1..N in store ROOT, one per layer\n"
            "  prepare [--ro] ROOT ID [PARENT...]   print the mounts of a new snapshot\n"
            "  commit ROOT ID | remove ROOT ID | usage ROOT ID | list ROOT | reconcile ROOT\n"
            "  apply-snap ROOT ID BLOB [MEDIA]      apply a layer into an active snapshot\n"
            "  mount ROOT ID TARGET                 mount snapshot ID on TARGET\n");
    exit(2);
}

static int die_err(berth_error_t *e)
{
    fprintf(stderr, "berth-apply-test: %s (%s)\n", e ? e->message : "failed",
            e ? berth_code_name(e->code) : "internal");
    berth_error_free(&e);
    return 1;
}

static const char *sniff_media(const char *blob)
{
    unsigned char m[4] = {0};
    int fd = open(blob, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, m, 4) < 0)
            m[0] = 0;
        close(fd);
    }
    if (m[0] == 0x1f && m[1] == 0x8b)
        return "application/vnd.oci.image.layer.v1.tar+gzip";
    if (m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd)
        return "application/vnd.oci.image.layer.v1.tar+zstd";
    return "application/vnd.oci.image.layer.v1.tar";
}

static void print_mounts(const overlay_mounts_t *ms)
{
    for (size_t i = 0; i < ms->n; i++) {
        const overlay_mount_t *m = &ms->v[i];
        printf("type=%s source=%s", m->type, m->source);
        if (m->chdir)
            printf(" chdir=%s", m->chdir);
        printf(" options=");
        for (size_t j = 0; j < m->n_options; j++)
            printf("%s%s", j ? "," : "", m->options[j]);
        printf("\n");
    }
}

/* What a mounter does with our mounts (the runtime plugin does the same). */
static int do_mount(const overlay_mounts_t *ms, const char *target, berth_error_t **err)
{
    char abs[PATH_MAX];
    if (!realpath(target, abs))
        return berth_error_errno(err, errno, "target %s", target);
    for (size_t i = 0; i < ms->n; i++) {
        const overlay_mount_t *m = &ms->v[i];
        unsigned long flags = 0;
        char data[8192] = "";
        size_t dl = 0;
        for (size_t j = 0; j < m->n_options; j++) {
            const char *o = m->options[j];
            if (strcmp(o, "ro") == 0)
                flags |= MS_RDONLY;
            else if (strcmp(o, "rw") == 0)
                ;
            else if (strcmp(o, "rbind") == 0)
                flags |= MS_BIND | MS_REC;
            else if (strcmp(o, "bind") == 0)
                flags |= MS_BIND;
            else
                dl += (size_t)snprintf(data + dl, sizeof(data) - dl, "%s%s", dl ? "," : "", o);
        }
        int cwd = -1;
        if (m->chdir) {
            cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (chdir(m->chdir) < 0)
                return berth_error_errno(err, errno, "chdir %s", m->chdir);
        }
        int r = mount(m->source, abs, strcmp(m->type, "bind") == 0 ? NULL : m->type,
                      flags & ~(unsigned long)(flags & MS_BIND ? MS_RDONLY : 0), dl ? data : NULL);
        int e = errno;
        if (cwd >= 0) {
            if (fchdir(cwd) < 0)
                e = e ? e : errno;
            close(cwd);
        }
        if (r < 0)
            return berth_error_errno(err, e, "mount %s on %s (data %zu bytes)", m->type, abs, dl);
        if ((flags & MS_BIND) && (flags & MS_RDONLY) &&
            mount(NULL, abs, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
            return berth_error_errno(err, errno, "remount %s read-only", abs);
    }
    return 0;
}

static overlay_store_t *open_store(const char *root, bool sync)
{
    overlay_store_opts_t so = {.sync_on_commit = sync, .index_off = true};
    overlay_store_t *s = NULL;
    berth_error_t *e = NULL;
    if (overlay_store_open(root, &so, &s, &e) < 0)
        exit(die_err(e));
    return s;
}

int main(int argc, char **argv)
{
    setlocale(LC_CTYPE, "C.UTF-8");
    berth_log_init("apply-test", BERTH_LOG_WARN);
    const char *lv = getenv("BERTH_LOG_LEVEL");
    if (lv && berth_log_level_parse(lv) >= 0)
        berth_log_level_current = berth_log_level_parse(lv);
    overlay_apply_global_init();
    if (argc < 2)
        usage();
    const char *cmd = argv[1];
    berth_error_t *e = NULL;

    if (strcmp(cmd, "apply") == 0) {
        const char *mt = NULL;
        overlay_apply_opts_t o = {.max_uncompressed = 64ull << 30};
        int lowers[64];
        size_t nl = 0;
        int i = 2;
        for (; i < argc && argv[i][0] == '-'; i++) {
            if (strcmp(argv[i], "--media-type") == 0 && i + 1 < argc)
                mt = argv[++i];
            else if (strcmp(argv[i], "--max-size") == 0 && i + 1 < argc)
                o.max_uncompressed = strtoull(argv[++i], NULL, 10);
            else if (strcmp(argv[i], "--reserve") == 0 && i + 1 < argc)
                o.min_free_bytes = strtoull(argv[++i], NULL, 10);
            else if (strcmp(argv[i], "--expect") == 0 && i + 1 < argc)
                o.expected_diff_id = argv[++i];
            else if (strcmp(argv[i], "--walk") == 0)
                overlay_apply_force_walk = true;
            else if (strcmp(argv[i], "--lower") == 0 && i + 1 < argc && nl < 64) {
                lowers[nl] = open(argv[++i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (lowers[nl] < 0) {
                    perror(argv[i]);
                    return 1;
                }
                nl++;
            } else
                usage();
        }
        if (argc - i != 2)
            usage();
        const char *dir = argv[i], *blob = argv[i + 1];
        if (!mt)
            mt = sniff_media(blob);
        overlay_comp_t comp;
        if (overlay_media_type_parse(mt, &comp, &e) < 0)
            return die_err(e);
        int rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int blobfd = open(blob, O_RDONLY | O_CLOEXEC);
        if (rootfd < 0 || blobfd < 0) {
            perror(rootfd < 0 ? dir : blob);
            return 1;
        }
        o.lower_fds = lowers;
        o.n_lowers = nl;
        overlay_apply_result_t res;
        if (overlay_apply_fd(rootfd, blobfd, comp, &o, &res, &e) < 0)
            return die_err(e);
        printf("%s %llu\n", res.diff_id, (unsigned long long)res.size);
        return 0;
    }

    if (strcmp(cmd, "chain") == 0) {
        bool sync = true;
        int i = 2;
        if (i < argc && strcmp(argv[i], "--no-sync") == 0) {
            sync = false;
            i++;
        }
        if (argc - i < 2)
            usage();
        overlay_store_t *s = open_store(argv[i], sync);
        int nblobs = argc - i - 1;
        char **ids = calloc((size_t)nblobs + 1, sizeof(char *));
        for (int k = 0; k < nblobs; k++) {
            const char *blob = argv[i + 1 + k];
            char id[24];
            snprintf(id, sizeof(id), "%d", k + 1);
            ids[k] = strdup(id);
            /* parents nearest first */
            const char **parents = calloc((size_t)k + 1, sizeof(char *));
            for (int j = 0; j < k; j++)
                parents[j] = ids[k - 1 - j];
            overlay_mounts_t ms;
            if (overlay_prepare(s, id, parents, (size_t)k, false, &ms, &e) < 0)
                return die_err(e);
            overlay_mounts_free(&ms);
            overlay_apply_opts_t o = {.max_uncompressed = 64ull << 30};
            overlay_apply_result_t res;
            if (overlay_apply_snapshot(s, id, blob, sniff_media(blob), &o, &res, &e) < 0)
                return die_err(e);
            overlay_usage_t u;
            if (overlay_commit(s, id, &u, &e) < 0)
                return die_err(e);
            printf("%s %s %llu\n", id, res.diff_id, (unsigned long long)res.size);
            free(parents);
        }
        overlay_strv_free(ids, (size_t)nblobs);
        overlay_store_free(s);
        return 0;
    }

    int i = 2;
    bool ro = strcmp(cmd, "view") == 0;
    if (strcmp(cmd, "prepare") == 0 && i < argc && strcmp(argv[i], "--ro") == 0) {
        ro = true;
        i++;
    }
    if (argc - i < 1)
        usage();
    /* Shift so that argv[2] is ROOT for every command below. */
    argv += i - 2;
    argc -= i - 2;
    overlay_store_t *s = open_store(argv[2], true);
    int rc = 0;
    if (strcmp(cmd, "prepare") == 0 || strcmp(cmd, "view") == 0) {
        if (argc < 4)
            usage();
        overlay_mounts_t ms;
        if (overlay_prepare(s, argv[3], (const char *const *)argv + 4, (size_t)(argc - 4), ro, &ms,
                            &e) < 0)
            return die_err(e);
        print_mounts(&ms);
        overlay_mounts_free(&ms);
    } else if (strcmp(cmd, "commit") == 0 && argc == 4) {
        overlay_usage_t u;
        if (overlay_commit(s, argv[3], &u, &e) < 0)
            return die_err(e);
        printf("%llu %llu\n", (unsigned long long)u.size, (unsigned long long)u.inodes);
    } else if (strcmp(cmd, "remove") == 0 && argc == 4) {
        if (overlay_remove(s, argv[3], &e) < 0)
            return die_err(e);
    } else if (strcmp(cmd, "usage") == 0 && argc == 4) {
        overlay_usage_t u;
        if (overlay_usage(s, argv[3], &u, &e) < 0)
            return die_err(e);
        printf("%llu %llu\n", (unsigned long long)u.size, (unsigned long long)u.inodes);
    } else if (strcmp(cmd, "list") == 0 && argc == 3) {
        char **ids, **intr;
        size_t n, ni;
        if (overlay_list(s, &ids, &n, &intr, &ni, &e) < 0)
            return die_err(e);
        for (size_t i = 0; i < n; i++)
            printf("%s\n", ids[i]);
        for (size_t i = 0; i < ni; i++)
            printf("interrupted %s\n", intr[i]);
        overlay_strv_free(ids, n);
        overlay_strv_free(intr, ni);
    } else if (strcmp(cmd, "reconcile") == 0 && argc == 3) {
        overlay_reconcile_t r;
        berth_log_level_current = BERTH_LOG_INFO;
        if (overlay_reconcile(s, &r, &e) < 0)
            return die_err(e);
        printf("cleaned=%zu interrupted=%zu unknown=%zu\n", r.removed_tmp, r.interrupted,
               r.unknown);
    } else if (strcmp(cmd, "apply-snap") == 0 && (argc == 5 || argc == 6)) {
        overlay_apply_opts_t o = {.max_uncompressed = 64ull << 30};
        overlay_apply_result_t res;
        const char *mt = argc == 6 ? argv[5] : sniff_media(argv[4]);
        if (overlay_apply_snapshot(s, argv[3], argv[4], mt, &o, &res, &e) < 0)
            return die_err(e);
        printf("%s %llu\n", res.diff_id, (unsigned long long)res.size);
    } else if (strcmp(cmd, "mount") == 0 && argc == 5) {
        overlay_mounts_t ms;
        if (overlay_mounts(s, argv[3], NULL, 0, -1, &ms, &e) < 0)
            return die_err(e);
        if (do_mount(&ms, argv[4], &e) < 0)
            rc = die_err(e);
        overlay_mounts_free(&ms);
    } else {
        usage();
    }
    overlay_store_free(s);
    return rc;
}
