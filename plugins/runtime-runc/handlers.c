/* SPDX-License-Identifier: Apache-2.0 */
/* berth-runtime-runc request handlers: decode params on the loop, check the
 * task table, run the blocking part (shim calls, mounts, files, calls to
 * metadata) on a worker, then update the table, publish events and answer
 * on the loop. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "berth/failpoint.h"
#include "berth/log.h"
#include "rt.h"

#define SHIM_TIMEOUT_MS 60000

static uv_loop_t *loop(void)
{
    return berth_plugin_loop(rt_g.p);
}

static bool get_id(berth_req_t *req, const msgpack_object *params, char **id)
{
    berth_error_t *err = NULL;
    *id = NULL;
    if (berth_mp_get_strdup(params, "id", id, &err) < 0) {
        berth_req_fail(req, &err);
        return false;
    }
    if (!*id || !rt_valid_id(*id)) {
        berth_req_failf(req, BERTH_E_INVALID_ARGUMENT, "invalid task id \"%s\"", *id ? *id : "");
        free(*id);
        *id = NULL;
        return false;
    }
    return true;
}

static bool get_exec_id(berth_req_t *req, const msgpack_object *params, char **exec_id)
{
    berth_error_t *err = NULL;
    *exec_id = NULL;
    if (berth_mp_get_strdup(params, "exec_id", exec_id, &err) < 0) {
        berth_req_fail(req, &err);
        return false;
    }
    if (*exec_id && (*exec_id)[0] && !rt_valid_id(*exec_id)) {
        berth_req_failf(req, BERTH_E_INVALID_ARGUMENT, "invalid exec id \"%s\"", *exec_id);
        free(*exec_id);
        *exec_id = NULL;
        return false;
    }
    if (!*exec_id)
        *exec_id = strdup("");
    return true;
}

/* The task (and process) a request names, or an answered not_found. */
static rt_task_t *need_task(berth_req_t *req, const char *id)
{
    rt_task_t *t = rt_task_find(berth_req_namespace(req), id);
    if (!t || t->creating) {
        berth_req_failf(req, BERTH_E_NOT_FOUND, "task %s not found in namespace %s", id,
                        berth_req_namespace(req));
        return NULL;
    }
    return t;
}

static rt_proc_t *need_proc(berth_req_t *req, rt_task_t *t, const char *exec_id)
{
    rt_proc_t *p = rt_task_proc(t, exec_id);
    if (!p)
        berth_req_failf(req, BERTH_E_NOT_FOUND, "exec %s not found in task %s", exec_id, t->id);
    return p;
}

/* {stdin, stdout, stderr} paths ("" for none); fifos may be NULL. */
static void pack_fifos(msgpack_packer *pk, char *const *fifos)
{
    static const char *const keys[3] = {"stdin", "stdout", "stderr"};
    for (int i = 0; i < 3; i++)
        berth_mp_kv_str(pk, keys[i], fifos && fifos[i] ? fifos[i] : "");
}

static void pack_proc(msgpack_packer *pk, const rt_task_t *t, const rt_proc_t *p)
{
    msgpack_pack_map(pk, 12);
    berth_mp_kv_str(pk, "id", p->exec_id[0] ? p->exec_id : t->id);
    berth_mp_kv_str(pk, "container_id", t->id);
    berth_mp_kv_str(pk, "exec_id", p->exec_id);
    berth_mp_kv_str(pk, "namespace", t->ns);
    berth_mp_kv_i64(pk, "pid", p->pid);
    berth_mp_kv_str(pk, "status", rt_status_name(p->status));
    berth_mp_kv_u64(pk, "exit_status", (uint64_t)p->exit_status);
    berth_mp_kv_i64(pk, "exited_at", p->exited_at);
    berth_mp_kv_bool(pk, "terminal", p->terminal);
    pack_fifos(pk, p->fifos);
}

/* ---- generic shim operation ---------------------------------------------------- */

typedef struct shimop_s shimop_t;
typedef void (*shimop_done_cb)(shimop_t *op);

struct shimop_s {
    uv_work_t w;
    berth_req_t *req;
    rt_task_t *t;
    char *bundle;
    const char *method;
    berth_mpbuf_t params;
    int timeout_ms;
    berth_error_t *err;
    msgpack_zone *zone;
    msgpack_object *result;
    char *exec_id;
    shimop_done_cb done;
    int64_t n;
};

static void shimop_work(uv_work_t *w)
{
    shimop_t *op = w->data;
    shim_client_t c;
    const msgpack_object *r = NULL;
    if (rt_shim_call(&c, op->bundle, op->method, op->params.buf.data, op->params.buf.size,
                     op->timeout_ms, &r, &op->err) == 0 &&
        r) {
        op->result = berth_mp_clone(r, &op->zone);
    }
    shim_client_close(&c);
}

static void shimop_free(shimop_t *op)
{
    if (op->zone)
        msgpack_zone_free(op->zone);
    berth_mpbuf_destroy(&op->params);
    free(op->bundle);
    free(op->exec_id);
    berth_error_free(&op->err);
    free(op);
}

static void shimop_after(uv_work_t *w, int status)
{
    shimop_t *op = w->data;
    (void)status;
    if (op->err && op->err->code == BERTH_E_UNAVAILABLE && op->t->init.exited) {
        berth_error_free(&op->err);
        berth_error_set(&op->err, BERTH_E_NOT_FOUND, "task %s is stopped", op->t->id);
    }
    op->done(op);
    rt_task_unref(op->t);
    shimop_free(op);
}

/* Starts a shim call for task t; `params` gets the caller's fields packed
 * into op->params by the caller after this returns (map header included). */
static shimop_t *shimop_new(berth_req_t *req, rt_task_t *t, const char *method, const char *exec_id,
                            shimop_done_cb done)
{
    shimop_t *op = calloc(1, sizeof(*op));
    op->req = req;
    op->t = t;
    op->bundle = strdup(t->bundle);
    op->method = method;
    op->exec_id = strdup(exec_id ? exec_id : "");
    op->done = done;
    op->timeout_ms = SHIM_TIMEOUT_MS;
    op->w.data = op;
    berth_mpbuf_init(&op->params);
    t->refs++;
    return op;
}

static void shimop_go(shimop_t *op)
{
    uv_queue_work(loop(), &op->w, shimop_work, shimop_after);
}

static bool fail_if_err(shimop_t *op)
{
    if (!op->err)
        return false;
    berth_req_fail(op->req, &op->err);
    return true;
}

static void done_empty(shimop_t *op)
{
    if (!fail_if_err(op))
        berth_req_reply_empty(op->req);
}

/* ---- containers ------------------------------------------------------------------ */

typedef struct {
    uv_work_t w;
    berth_req_t *req;
    char *ns, *id;
    const msgpack_object *params;
    bool keep_snapshot;
    berth_mpbuf_t out;
    berth_error_t *err;
} cwork_t;

static void ccreate_work(uv_work_t *w)
{
    cwork_t *c = w->data;
    rt_container_create(c->ns, c->params, &c->out, &c->err);
}

static void cdelete_work(uv_work_t *w)
{
    cwork_t *c = w->data;
    rt_container_delete(c->ns, c->id, c->keep_snapshot, &c->err);
}

static void cwork_after(uv_work_t *w, int status)
{
    cwork_t *c = w->data;
    (void)status;
    if (c->err)
        berth_req_fail(c->req, &c->err);
    else if (c->out.buf.size)
        berth_req_reply_raw(c->req, c->out.buf.data, c->out.buf.size);
    else
        berth_req_reply_empty(c->req);
    berth_mpbuf_destroy(&c->out);
    free(c->ns);
    free(c->id);
    free(c);
}

static void h_containers_create(berth_req_t *req, const msgpack_object *params)
{
    cwork_t *c = calloc(1, sizeof(*c));
    c->req = req;
    c->ns = strdup(berth_req_namespace(req));
    c->params = params;
    berth_mpbuf_init(&c->out);
    c->w.data = c;
    uv_queue_work(loop(), &c->w, ccreate_work, cwork_after);
}

static void h_containers_delete(berth_req_t *req, const msgpack_object *params)
{
    char *id;
    if (!get_id(req, params, &id))
        return;
    berth_error_t *err = NULL;
    bool keep = false;
    if (berth_mp_get_bool(params, "keep_snapshot", &keep, &err) < 0) {
        free(id);
        berth_req_fail(req, &err);
        return;
    }
    rt_task_t *t = rt_task_find(berth_req_namespace(req), id);
    if (t) {
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION,
                        "container %s has a task (%s); kill and delete the task first "
                        "(berth tasks kill %s; berth tasks rm %s)",
                        id, t->creating ? "CREATED" : rt_status_name(t->init.status), id, id);
        free(id);
        return;
    }
    cwork_t *c = calloc(1, sizeof(*c));
    c->req = req;
    c->ns = strdup(berth_req_namespace(req));
    c->id = id;
    c->keep_snapshot = keep;
    berth_mpbuf_init(&c->out);
    c->w.data = c;
    uv_queue_work(loop(), &c->w, cdelete_work, cwork_after);
}

/* ---- tasks.create ----------------------------------------------------------------- */

typedef struct {
    uv_work_t w;
    berth_req_t *req;
    rt_task_t *t;
    char *ns, *id, *bundle, *fifo_dir;
    bool terminal;
    bool want[3];
    char *fifos[3];
    char *runtime;
    bool rm;
    bool fast; /* the shim may skip runc start/delete */
    char *snapshot_key;
    int pid, shim_pid;
    berth_error_t *err;
} tcreate_t;

/* Waits (bounded) until process pid has exited. A pidfd polls readable
 * once the process is dead, even while it is an unreaped zombie (kill(pid, 0)
 * would still succeed then). */
static void wait_exit(int pid, int timeout_ms)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        poll(&pf, 1, timeout_ms);
        close(fd);
        return;
    }
    char p[64], st[256];
    snprintf(p, sizeof(p), "/proc/%d/stat", pid);
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        int f = open(p, O_RDONLY | O_CLOEXEC);
        if (f < 0)
            return;
        ssize_t n = read(f, st, sizeof(st) - 1);
        close(f);
        if (n <= 0)
            return;
        st[n] = 0;
        char *rp = strrchr(st, ')');
        if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
            return;
        usleep(10000);
    }
}

/* Cleared when the kernel refuses overlay's "volatile" option. */
static volatile bool g_volatile_ok = true;

static void tcreate_work(uv_work_t *w)
{
    tcreate_t *c = w->data;
    berth_error_t **err = &c->err;
    rt_result_t cr = {0}, mr = {0};
    const msgpack_object *ctr = NULL;
    rt_fsmount_t *fm = NULL;
    size_t nfm = 0;
    bool bundle_made = false, mounted = false, have_mounts = false;
    _cleanup_free_ char *key = NULL;
    _cleanup_free_ char *rname = NULL;
    char rootfs[4096];
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", c->bundle);
    uint64_t t0 = berth_mono_ms(), t_meta = 0, t_bundle = 0, t_mount = 0, t_spawn = 0;

    /* The record and the rootfs mounts at once: the snapshot key is the
     * container id unless the record says otherwise (then asked again). */
    {
        berth_mpbuf_t gb, mb;
        berth_mpbuf_init(&gb);
        msgpack_pack_map(&gb.pk, 2);
        berth_mp_kv_str(&gb.pk, "namespace", c->ns);
        berth_mp_kv_str(&gb.pk, "id", c->id);
        berth_mpbuf_init(&mb);
        msgpack_pack_map(&mb.pk, 2);
        berth_mp_kv_str(&mb.pk, "namespace", c->ns);
        berth_mp_kv_str(&mb.pk, "key", c->id);
        rt_sync_req_t q[2] = {
            {"containers.get", gb.buf.data, gb.buf.size, 30000, 0, &cr, NULL},
            {"snapshots.mounts", mb.buf.data, mb.buf.size, 30000, 0, &mr, NULL},
        };
        rt_sync_calls(q, 2);
        berth_mpbuf_destroy(&gb);
        berth_mpbuf_destroy(&mb);
        berth_error_t *merr = q[1].err;
        if (q[0].err) {
            *err = q[0].err;
            berth_error_free(&merr);
            goto fail;
        }
        ctr = berth_mp_get(cr.result, "container");
        if (!ctr || ctr->type != MSGPACK_OBJECT_MAP) {
            berth_error_free(&merr);
            berth_error_set(err, BERTH_E_INTERNAL, "metadata returned no container for %s", c->id);
            goto fail;
        }
        if (!berth_mp_str_eq(berth_mp_get(ctr, "snapshot_key"), c->id)) {
            rt_result_free(&mr);
            berth_error_free(&merr);
        } else if (merr) {
            *err = merr;
            berth_error_wrap(err, "rootfs snapshot %s of container %s", c->id, c->id);
            goto fail;
        } else {
            have_mounts = true;
        }
    }
    berth_bytes_t spec = {0};
    if (berth_mp_get_bin(ctr, "spec", &spec, err) != 0 || !spec.len) {
        if (!*err)
            berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "container %s has no spec", c->id);
        goto fail;
    }
    key = berth_mp_strdup(berth_mp_get(ctr, "snapshot_key"));
    c->snapshot_key = key ? strdup(key) : NULL;
    rname = berth_mp_strdup(berth_mp_get(berth_mp_get(ctr, "runtime"), "name"));
    berth_mp_get_bool(ctr, "rm", &c->rm, NULL);
    if (rt_runtime_binary(rname, &c->runtime, err) < 0)
        goto fail;
    {
        /* The shim starts and deletes the container without runc when runc
         * itself would do nothing more (shim/runc.c). */
        const char *base = strrchr(c->runtime, '/') ? strrchr(c->runtime, '/') + 1 : c->runtime;
        json_t *sj = json_loadb((const char *)spec.ptr, spec.len, 0, NULL);
        c->fast = sj && strcmp(base, "runc") == 0 &&
                  strcmp(rt_g.cfg.cgroup_driver, "cgroupfs") == 0 && rt_spec_fast_lifecycle(sj);
        json_decref(sj);
    }
    if (!key || !key[0]) {
        berth_error_set(err, BERTH_E_FAILED_PRECONDITION, "container %s has no rootfs snapshot",
                        c->id);
        goto fail;
    }
    berth_mpbuf_t b;
    int rc;
    if (!have_mounts) {
        berth_mpbuf_init(&b);
        msgpack_pack_map(&b.pk, 2);
        berth_mp_kv_str(&b.pk, "namespace", c->ns);
        berth_mp_kv_str(&b.pk, "key", key);
        rc = rt_sync_call("snapshots.mounts", b.buf.data, b.buf.size, 30000, 0, &mr, err);
        berth_mpbuf_destroy(&b);
        if (rc < 0) {
            berth_error_wrap(err, "rootfs snapshot %s of container %s", key, c->id);
            goto fail;
        }
    }
    if (rt_fsmounts_from_mp(berth_mp_get(mr.result, "mounts"), &fm, &nfm, err) < 0)
        goto fail;
    t_meta = berth_mono_ms();
    if (rt_bundle_create(c->bundle, spec.ptr, spec.len, err) < 0)
        goto fail;
    bundle_made = true;
    /* Markers read back by a restarted runtime. */
    char p[4200];
    snprintf(p, sizeof(p), "%s/runtime", c->bundle);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (write(fd, c->runtime, strlen(c->runtime)) < 0)
            berth_log(BERTH_LOG_WARN, "msg=\"write runtime marker\" err=\"%s\"", strerror(errno));
        close(fd);
    }
    if (c->rm) {
        snprintf(p, sizeof(p), "%s/rm", c->bundle);
        fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    }
    if (rt_fifos_create(c->fifo_dir, "init", c->want, c->fifos, err) < 0)
        goto fail;
    t_bundle = berth_mono_ms();
    if (c->rm && g_volatile_ok) {
        /* A --rm container's upper layer is thrown away with it: overlay's
         * "volatile" spares the syncfs of the whole upper filesystem (other
         * processes' dirty pages too) at unmount. Kernels before 5.10 refuse
         * the option: then never again. */
        rt_fsmount_t *vm = NULL;
        size_t nvm = 0;
        berth_error_t *e = NULL;
        int vr = rt_fsmounts_from_mp(berth_mp_get(mr.result, "mounts"), &vm, &nvm, &e);
        if (vr == 0)
            vr = rt_fsmounts_add_overlay_option(vm, nvm, "volatile", &e);
        if (vr == 0)
            vr = rt_rootfs_mount(rootfs, vm, nvm, false, &e);
        rt_fsmounts_free(vm, nvm);
        if (vr == 0) {
            mounted = true;
        } else {
            /* Without the option: if that works, the option was the problem. */
            if (rt_rootfs_mount(rootfs, fm, nfm, false, err) < 0) {
                berth_error_free(&e);
                goto fail;
            }
            mounted = true;
            berth_log(BERTH_LOG_INFO, "msg=\"no volatile overlay mounts\" err=\"%s\"",
                      e ? e->message : "?");
            berth_error_free(&e);
            g_volatile_ok = false;
        }
    }
    if (!mounted && rt_rootfs_mount(rootfs, fm, nfm, false, err) < 0)
        goto fail;
    mounted = true;
    t_mount = berth_mono_ms();

    char root[4200], wait_ms[24];
    snprintf(root, sizeof(root), "%s/%s", rt_g.runc_root, c->ns);
    snprintf(wait_ms, sizeof(wait_ms), "%llu", (unsigned long long)rt_g.cfg.exit_wait_ms);
    const char *argv[24];
    size_t n = 0;
    argv[n++] = rt_g.cfg.shim_path;
    argv[n++] = "--id";
    argv[n++] = c->id;
    argv[n++] = "--namespace";
    argv[n++] = c->ns;
    argv[n++] = "--bundle";
    argv[n++] = c->bundle;
    argv[n++] = "--runtime";
    argv[n++] = c->runtime;
    argv[n++] = "--runtime-root";
    argv[n++] = root;
    argv[n++] = "--exit-wait-ms";
    argv[n++] = wait_ms;
    argv[n++] = "--log-level";
    argv[n++] = rt_g.cfg.shim_log_level;
    if (strcmp(rt_g.cfg.cgroup_driver, "systemd") == 0)
        argv[n++] = "--systemd-cgroup";
    argv[n] = NULL;
    if (rt_launcher_spawn(argv, &c->shim_pid, err) < 0)
        goto fail;
    t_spawn = berth_mono_ms();

    shim_client_t sc;
    const msgpack_object *res = NULL;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 5);
    berth_mp_kv_bool(&b.pk, "terminal", c->terminal);
    berth_mp_kv_bool(&b.pk, "fast", c->fast);
    pack_fifos(&b.pk, c->fifos);
    rc = rt_shim_call(&sc, c->bundle, "create", b.buf.data, b.buf.size, SHIM_TIMEOUT_MS, &res, err);
    berth_mpbuf_destroy(&b);
    if (rc == 0) {
        int64_t pid = 0;
        berth_mp_get_i64(res, "pid", &pid, NULL);
        c->pid = (int)pid;
        /* Crash point for tests/e2e/torture_runtime.bats: the container is
         * created, the shim waits for our confirm. */
        if (berth_failpoint("runtime.tasks.create.after_shim") < 0)
            rc =
                berth_error_set(err, BERTH_E_INTERNAL, "failpoint runtime.tasks.create.after_shim");
    }
    if (rc == 0) {
        /* The core went away meanwhile: nobody will hear of this task, do
         * not make it durable (the shim rolls back when we close). */
        pthread_mutex_lock(&rt_g.mu);
        bool stopping = rt_g.stopping;
        pthread_mutex_unlock(&rt_g.mu);
        if (stopping)
            rc = berth_error_set(err, BERTH_E_UNAVAILABLE, "the runtime plugin is stopping");
    }
    if (rc == 0) {
        /* The bundle on disk is our record of the task: confirm, and the
         * shim keeps the container even if we die from here on. */
        rc = shim_client_call(&sc, "confirm", NULL, 0, 10000, &res, err);
    }
    shim_client_close(&sc);
    if (rc < 0) {
        /* A shim whose create failed exits, one that did not get "confirm"
         * rolls back: let it finish so it does not race our cleanup below. */
        wait_exit(c->shim_pid, 3000);
        /* A shim that died (killed) after runc create left the container
         * behind: its init waiting on the exec FIFO, cgroups, runc state.
         * The janitor removes them (nothing to do if the shim rolled back). */
        char root2[4200];
        snprintf(root2, sizeof(root2), "%s/%s", rt_g.runc_root, c->ns);
        const char *cargv[] = {rt_g.cfg.shim_path, "cleanup", "--id",      c->id,
                               "--bundle",         c->bundle, "--runtime", c->runtime,
                               "--runtime-root",   root2,     NULL};
        int cst = 0;
        berth_error_t *ce = NULL;
        if (access(c->bundle, F_OK) == 0 && rt_launcher_run(cargv, &cst, &ce) < 0) {
            berth_log(BERTH_LOG_WARN, "msg=\"cleanup after a failed create\" id=%s err=\"%s\"",
                      c->id, ce->message);
            berth_error_free(&ce);
        }
        goto fail;
    }
    rt_fsmounts_free(fm, nfm);
    rt_result_free(&cr);
    rt_result_free(&mr);
    berth_log(BERTH_LOG_DEBUG,
              "msg=\"task created\" id=%s metadata_ms=%llu bundle_ms=%llu mount_ms=%llu "
              "spawn_ms=%llu runc_create_ms=%llu",
              c->id, (unsigned long long)(t_meta - t0), (unsigned long long)(t_bundle - t_meta),
              (unsigned long long)(t_mount - t_bundle), (unsigned long long)(t_spawn - t_mount),
              (unsigned long long)(berth_mono_ms() - t_spawn));
    return;
fail:
    if (mounted) {
        berth_error_t *e = NULL;
        if (rt_rootfs_unmount(rootfs, &e) < 0)
            berth_error_free(&e);
    }
    if (bundle_made) {
        berth_error_t *e = NULL;
        if (rt_remove_tree(c->bundle, &e) < 0) {
            berth_log(BERTH_LOG_WARN, "msg=\"remove bundle\" err=\"%s\"", e->message);
            berth_error_free(&e);
        }
    }
    rt_fifos_remove(c->fifos);
    berth_error_t *e = NULL;
    rt_remove_tree(c->fifo_dir, &e);
    berth_error_free(&e);
    rt_fsmounts_free(fm, nfm);
    rt_result_free(&cr);
    rt_result_free(&mr);
}

static void tcreate_after(uv_work_t *w, int status)
{
    tcreate_t *c = w->data;
    (void)status;
    rt_task_t *t = c->t;
    if (c->err) {
        berth_log(BERTH_LOG_INFO, "msg=\"task create failed\" ns=%s id=%s err=\"%s\"", c->ns, c->id,
                  c->err->message);
        berth_req_fail(c->req, &c->err);
        rt_task_remove(t);
    } else {
        t->creating = false;
        t->init.pid = c->pid;
        t->init.status = RT_CREATED;
        t->init.terminal = c->terminal;
        t->shim_pid = c->shim_pid;
        t->rm = c->rm;
        t->runtime = c->runtime;
        c->runtime = NULL;
        t->snapshot_key = c->snapshot_key;
        c->snapshot_key = NULL;
        for (int i = 0; i < 3; i++) {
            t->init.fifos[i] = c->fifos[i];
            c->fifos[i] = NULL;
        }
        berth_error_t *err = NULL;
        if (rt_task_subscribe(t, &err) < 0) {
            berth_log(BERTH_LOG_ERROR, "msg=\"cannot subscribe to the new shim\" id=%s err=\"%s\"",
                      t->id, err->message);
            berth_error_free(&err);
        }
        berth_mpbuf_t ev;
        berth_mpbuf_init(&ev);
        msgpack_pack_map(&ev.pk, 4);
        berth_mp_kv_str(&ev.pk, "container_id", t->id);
        berth_mp_kv_str(&ev.pk, "bundle", t->bundle);
        berth_mp_kv_i64(&ev.pk, "pid", t->init.pid);
        berth_mp_pack_str(&ev.pk, "io");
        msgpack_pack_map(&ev.pk, 4);
        pack_fifos(&ev.pk, t->init.fifos);
        berth_mp_kv_bool(&ev.pk, "terminal", t->init.terminal);
        rt_publish("/tasks/create", t->ns, &ev);
        msgpack_packer *pk = berth_req_reply_begin(c->req);
        msgpack_pack_map(pk, 4);
        berth_mp_kv_i64(pk, "pid", t->init.pid);
        pack_fifos(pk, t->init.fifos);
        berth_req_reply_end(c->req);
    }
    for (int i = 0; i < 3; i++)
        free(c->fifos[i]);
    free(c->runtime);
    free(c->snapshot_key);
    free(c->ns);
    free(c->id);
    free(c->bundle);
    free(c->fifo_dir);
    rt_task_unref(t);
    free(c);
}

static void h_tasks_create(berth_req_t *req, const msgpack_object *params)
{
    char *id;
    if (!get_id(req, params, &id))
        return;
    tcreate_t *c = calloc(1, sizeof(*c));
    berth_error_t *err = NULL;
    if (berth_mp_get_bool(params, "terminal", &c->terminal, &err) < 0 ||
        berth_mp_get_bool(params, "stdin", &c->want[0], &err) < 0 ||
        berth_mp_get_bool(params, "stdout", &c->want[1], &err) < 0 ||
        berth_mp_get_bool(params, "stderr", &c->want[2], &err) < 0) {
        free(id);
        free(c);
        berth_req_fail(req, &err);
        return;
    }
    if (c->terminal)
        c->want[2] = false; /* a terminal merges stderr into stdout */
    const char *ns = berth_req_namespace(req);
    if (rt_task_find(ns, id)) {
        berth_req_failf(req, BERTH_E_ALREADY_EXISTS, "task %s already exists in namespace %s", id,
                        ns);
        free(id);
        free(c);
        return;
    }
    rt_task_t *t = rt_task_new(ns, id);
    t->creating = true;
    c->req = req;
    c->t = t;
    c->ns = strdup(ns);
    c->id = id;
    c->bundle = strdup(t->bundle);
    c->fifo_dir = strdup(t->fifo_dir);
    c->w.data = c;
    t->refs++;
    uv_queue_work(loop(), &c->w, tcreate_work, tcreate_after);
}

/* ---- start, kill, pause, resume ---------------------------------------------------- */

static void start_done(shimop_t *op)
{
    rt_task_t *t = op->t;
    rt_proc_t *p = rt_task_proc(t, op->exec_id);
    if (op->err) {
        if (p) {
            p->starting = false;
            if (p->exec_id[0] && !p->exited)
                rt_proc_exited(t, p, 255, berth_now_ns(), false);
            else
                rt_proc_started(t, p);
        }
        berth_req_fail(op->req, &op->err);
        return;
    }
    int64_t pid = 0;
    berth_mp_get_i64(op->result, "pid", &pid, NULL);
    if (p) {
        p->pid = (int)pid;
        if (!p->exited)
            p->status = RT_RUNNING;
        berth_mpbuf_t ev;
        berth_mpbuf_init(&ev);
        if (p->exec_id[0]) {
            msgpack_pack_map(&ev.pk, 3);
            berth_mp_kv_str(&ev.pk, "container_id", t->id);
            berth_mp_kv_str(&ev.pk, "exec_id", p->exec_id);
            berth_mp_kv_i64(&ev.pk, "pid", pid);
            rt_publish("/tasks/exec-started", t->ns, &ev);
        } else {
            msgpack_pack_map(&ev.pk, 2);
            berth_mp_kv_str(&ev.pk, "container_id", t->id);
            berth_mp_kv_i64(&ev.pk, "pid", pid);
            rt_publish("/tasks/start", t->ns, &ev);
        }
        rt_proc_started(t, p);
    }
    msgpack_packer *pk = berth_req_reply_begin(op->req);
    msgpack_pack_map(pk, 1);
    berth_mp_kv_i64(pk, "pid", pid);
    berth_req_reply_end(op->req);
}

static void h_tasks_start(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    _cleanup_free_ char *exec_id = NULL;
    if (!get_id(req, params, &id) || !get_exec_id(req, params, &exec_id))
        return;
    rt_task_t *t = need_task(req, id);
    if (!t)
        return;
    rt_proc_t *p = need_proc(req, t, exec_id);
    if (!p)
        return;
    if (p->status != RT_CREATED || p->exited || p->starting || t->deleting) {
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION,
                        "%s %s is %s, it can only be started once", exec_id[0] ? "exec" : "task",
                        exec_id[0] ? exec_id : id, rt_status_name(p->status));
        return;
    }
    p->starting = true;
    shimop_t *op = shimop_new(req, t, "start", exec_id, start_done);
    msgpack_pack_map(&op->params.pk, 1);
    berth_mp_kv_str(&op->params.pk, "exec_id", exec_id);
    shimop_go(op);
}

/* Test hook (BERTH_FAILPOINTS=runtime.sandbox_probe=error): `berth tasks
 * kill sandbox-probe-SYSCALL` makes that forbidden syscall (execve or ptrace
 * through the SDK's probe, unshare here) on the loop thread, so
 * tests/e2e/sandbox_runtime.bats can prove that the seccomp filter kills this
 * process with SIGSYS, that the core restarts it and that containers keep
 * running. Harmless arguments: without a sandbox the call fails and the
 * request says so. tasks.kill is not idempotent, so the core does not re-send
 * it to the restarted instance. */
static bool sandbox_probe(berth_req_t *req, const char *id)
{
    if (strcmp(id, "sandbox-probe-unshare") == 0 && berth_failpoint("runtime.sandbox_probe") < 0) {
        errno = EINVAL;
        long rc = syscall(SYS_unshare, 0);
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION,
                        "sandbox probe unshare was not stopped by the sandbox (rc=%ld: %s)", rc,
                        strerror(errno));
        return true;
    }
    return berth_req_sandbox_probe(req, id, strlen(id), "runtime.sandbox_probe");
}

static void h_tasks_kill(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    _cleanup_free_ char *exec_id = NULL;
    if (!get_id(req, params, &id) || !get_exec_id(req, params, &exec_id))
        return;
    if (sandbox_probe(req, id))
        return;
    rt_task_t *t = need_task(req, id);
    if (!t)
        return;
    rt_proc_t *p = need_proc(req, t, exec_id);
    if (!p)
        return;
    uint64_t sig = SIGTERM;
    bool all = false;
    berth_error_t *err = NULL;
    if (berth_mp_get_u64(params, "signal", &sig, &err) < 0 ||
        berth_mp_get_bool(params, "all", &all, &err) < 0) {
        berth_req_fail(req, &err);
        return;
    }
    if (sig == 0 || sig >= 65) {
        berth_req_failf(req, BERTH_E_INVALID_ARGUMENT, "invalid signal %llu",
                        (unsigned long long)sig);
        return;
    }
    if (p->exited || !t->shim_alive) {
        berth_req_failf(req, BERTH_E_NOT_FOUND, "process already finished");
        return;
    }
    shimop_t *op = shimop_new(req, t, "kill", exec_id, done_empty);
    msgpack_pack_map(&op->params.pk, 3);
    berth_mp_kv_str(&op->params.pk, "exec_id", exec_id);
    berth_mp_kv_u64(&op->params.pk, "signal", sig);
    berth_mp_kv_bool(&op->params.pk, "all", all);
    op->timeout_ms = 15000;
    shimop_go(op);
}

static void pause_done(shimop_t *op)
{
    if (fail_if_err(op))
        return;
    rt_task_t *t = op->t;
    bool pause = strcmp(op->method, "pause") == 0;
    if (!t->init.exited)
        t->init.status = pause ? RT_PAUSED : RT_RUNNING;
    berth_mpbuf_t ev;
    berth_mpbuf_init(&ev);
    msgpack_pack_map(&ev.pk, 1);
    berth_mp_kv_str(&ev.pk, "container_id", t->id);
    rt_publish(pause ? "/tasks/paused" : "/tasks/resumed", t->ns, &ev);
    berth_req_reply_empty(op->req);
}

static void pause_resume(berth_req_t *req, const msgpack_object *params, bool pause)
{
    _cleanup_free_ char *id = NULL;
    if (!get_id(req, params, &id))
        return;
    rt_task_t *t = need_task(req, id);
    if (!t)
        return;
    rt_status_t want = pause ? RT_RUNNING : RT_PAUSED;
    if (t->init.status != want || !t->shim_alive) {
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION, "task %s is %s, not %s", id,
                        rt_status_name(t->init.status), rt_status_name(want));
        return;
    }
    shimop_t *op = shimop_new(req, t, pause ? "pause" : "resume", "", pause_done);
    msgpack_pack_map(&op->params.pk, 0);
    shimop_go(op);
}

static void h_tasks_pause(berth_req_t *req, const msgpack_object *params)
{
    pause_resume(req, params, true);
}

static void h_tasks_resume(berth_req_t *req, const msgpack_object *params)
{
    pause_resume(req, params, false);
}

/* ---- pids, metrics, resize, close_io ------------------------------------------------- */

static void pids_done(shimop_t *op)
{
    if (fail_if_err(op))
        return;
    const msgpack_object *pids = berth_mp_get(op->result, "pids");
    msgpack_packer *pk = berth_req_reply_begin(op->req);
    msgpack_pack_map(pk, 1);
    berth_mp_pack_str(pk, "processes");
    if (pids)
        msgpack_pack_object(pk, *pids);
    else
        msgpack_pack_array(pk, 0);
    berth_req_reply_end(op->req);
}

static void metrics_done(shimop_t *op)
{
    if (fail_if_err(op))
        return;
    msgpack_packer *pk = berth_req_reply_begin(op->req);
    msgpack_pack_map(pk, 2);
    berth_mp_kv_str(pk, "id", op->t->id);
    berth_mp_pack_str(pk, "metrics");
    msgpack_pack_object(pk, *op->result);
    berth_req_reply_end(op->req);
}

static rt_task_t *live_task(berth_req_t *req, const msgpack_object *params, char **id)
{
    if (!get_id(req, params, id))
        return NULL;
    rt_task_t *t = need_task(req, *id);
    if (!t)
        return NULL;
    if (!t->shim_alive || t->init.exited) {
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION, "task %s is not running", *id);
        return NULL;
    }
    return t;
}

static void h_tasks_pids(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    rt_task_t *t = live_task(req, params, &id);
    if (!t)
        return;
    shimop_t *op = shimop_new(req, t, "pids", "", pids_done);
    msgpack_pack_map(&op->params.pk, 0);
    shimop_go(op);
}

static void h_tasks_metrics(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    rt_task_t *t = live_task(req, params, &id);
    if (!t)
        return;
    shimop_t *op = shimop_new(req, t, "stats", "", metrics_done);
    msgpack_pack_map(&op->params.pk, 0);
    shimop_go(op);
}

static void h_tasks_resize(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    _cleanup_free_ char *exec_id = NULL;
    rt_task_t *t = live_task(req, params, &id);
    if (!t || !get_exec_id(req, params, &exec_id))
        return;
    uint64_t w = 0, h = 0;
    berth_error_t *err = NULL;
    if (berth_mp_get_u64(params, "width", &w, &err) < 0 ||
        berth_mp_get_u64(params, "height", &h, &err) < 0) {
        berth_req_fail(req, &err);
        return;
    }
    if (!need_proc(req, t, exec_id))
        return;
    shimop_t *op = shimop_new(req, t, "resize", exec_id, done_empty);
    msgpack_pack_map(&op->params.pk, 3);
    berth_mp_kv_str(&op->params.pk, "exec_id", exec_id);
    berth_mp_kv_u64(&op->params.pk, "width", w);
    berth_mp_kv_u64(&op->params.pk, "height", h);
    op->timeout_ms = 5000;
    shimop_go(op);
}

static void h_tasks_close_io(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    _cleanup_free_ char *exec_id = NULL;
    if (!get_id(req, params, &id) || !get_exec_id(req, params, &exec_id))
        return;
    rt_task_t *t = need_task(req, id);
    if (!t || !need_proc(req, t, exec_id))
        return;
    if (!t->shim_alive) {
        berth_req_reply_empty(req);
        return;
    }
    shimop_t *op = shimop_new(req, t, "close_io", exec_id, done_empty);
    msgpack_pack_map(&op->params.pk, 1);
    berth_mp_kv_str(&op->params.pk, "exec_id", exec_id);
    op->timeout_ms = 5000;
    shimop_go(op);
}

/* ---- exec ----------------------------------------------------------------------- */

typedef struct {
    uv_work_t w;
    berth_req_t *req;
    rt_task_t *t;
    const msgpack_object *params;
    char *ns, *id, *exec_id, *bundle, *fifo_dir;
    bool terminal, want[3];
    char *fifos[3];
    berth_error_t *err;
} texec_t;

static void texec_work(uv_work_t *w)
{
    texec_t *x = w->data;
    rt_result_t cr;
    const msgpack_object *ctr;
    if (rt_container_get(x->ns, x->id, &cr, &ctr, &x->err) < 0)
        return;
    berth_bytes_t spec = {0};
    berth_mp_get_bin(ctr, "spec", &spec, NULL);
    json_error_t je;
    json_t *sj = spec.len ? json_loadb((const char *)spec.ptr, spec.len, 0, &je) : NULL;
    rt_result_free(&cr);
    if (!sj) {
        berth_error_set(&x->err, BERTH_E_FAILED_PRECONDITION, "container %s has no usable spec",
                        x->id);
        return;
    }
    json_t *proc = rt_spec_exec_process(sj, x->params, &x->err);
    json_decref(sj);
    if (!proc)
        return;
    char *pj = json_dumps(proc, JSON_COMPACT);
    json_decref(proc);
    if (rt_fifos_create(x->fifo_dir, x->exec_id, x->want, x->fifos, &x->err) < 0) {
        free(pj);
        return;
    }
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 6);
    berth_mp_kv_str(&b.pk, "exec_id", x->exec_id);
    berth_mp_pack_str(&b.pk, "process");
    berth_mp_pack_bin(&b.pk, pj, strlen(pj));
    berth_mp_kv_bool(&b.pk, "terminal", x->terminal);
    pack_fifos(&b.pk, x->fifos);
    free(pj);
    shim_client_t c;
    const msgpack_object *r;
    if (rt_shim_call(&c, x->bundle, "exec", b.buf.data, b.buf.size, 10000, &r, &x->err) < 0)
        rt_fifos_remove(x->fifos);
    shim_client_close(&c);
    berth_mpbuf_destroy(&b);
}

static void texec_after(uv_work_t *w, int status)
{
    texec_t *x = w->data;
    (void)status;
    rt_task_t *t = x->t;
    rt_proc_t *p = rt_task_proc(t, x->exec_id);
    if (x->err) {
        /* Forget the reserved exec. */
        for (rt_proc_t **pp = &t->execs; *pp; pp = &(*pp)->next) {
            if (*pp == p) {
                *pp = p->next;
                rt_proc_clear(p);
                free(p);
                break;
            }
        }
        berth_req_fail(x->req, &x->err);
    } else {
        if (p) {
            for (int i = 0; i < 3; i++) {
                p->fifos[i] = x->fifos[i];
                x->fifos[i] = NULL;
            }
        }
        berth_mpbuf_t ev;
        berth_mpbuf_init(&ev);
        msgpack_pack_map(&ev.pk, 2);
        berth_mp_kv_str(&ev.pk, "container_id", t->id);
        berth_mp_kv_str(&ev.pk, "exec_id", x->exec_id);
        rt_publish("/tasks/exec-added", t->ns, &ev);
        msgpack_packer *pk = berth_req_reply_begin(x->req);
        msgpack_pack_map(pk, 3);
        pack_fifos(pk, p ? p->fifos : NULL);
        berth_req_reply_end(x->req);
    }
    for (int i = 0; i < 3; i++)
        free(x->fifos[i]);
    free(x->ns);
    free(x->id);
    free(x->exec_id);
    free(x->bundle);
    free(x->fifo_dir);
    free(x);
    rt_task_unref(t);
}

static void h_tasks_exec(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    char *exec_id = NULL;
    rt_task_t *t = live_task(req, params, &id);
    if (!t || !get_exec_id(req, params, &exec_id))
        return;
    if (!exec_id[0]) {
        free(exec_id);
        berth_req_failf(req, BERTH_E_INVALID_ARGUMENT, "exec needs an exec id (--exec-id)");
        return;
    }
    if (rt_task_proc(t, exec_id)) {
        berth_req_failf(req, BERTH_E_ALREADY_EXISTS, "exec %s already exists in task %s", exec_id,
                        id);
        free(exec_id);
        return;
    }
    if (t->init.status != RT_RUNNING) {
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION, "task %s is %s, not RUNNING", id,
                        rt_status_name(t->init.status));
        free(exec_id);
        return;
    }
    texec_t *x = calloc(1, sizeof(*x));
    berth_error_t *err = NULL;
    if (berth_mp_get_bool(params, "terminal", &x->terminal, &err) < 0 ||
        berth_mp_get_bool(params, "stdin", &x->want[0], &err) < 0 ||
        berth_mp_get_bool(params, "stdout", &x->want[1], &err) < 0 ||
        berth_mp_get_bool(params, "stderr", &x->want[2], &err) < 0) {
        free(x);
        free(exec_id);
        berth_req_fail(req, &err);
        return;
    }
    if (x->terminal)
        x->want[2] = false;
    /* Reserve the exec id. */
    rt_proc_t *p = calloc(1, sizeof(*p));
    p->exec_id = strdup(exec_id);
    p->status = RT_CREATED;
    p->terminal = x->terminal;
    p->next = t->execs;
    t->execs = p;
    x->req = req;
    x->t = t;
    x->params = params;
    x->ns = strdup(t->ns);
    x->id = strdup(t->id);
    x->exec_id = exec_id;
    x->bundle = strdup(t->bundle);
    x->fifo_dir = strdup(t->fifo_dir);
    x->w.data = x;
    t->refs++;
    uv_queue_work(loop(), &x->w, texec_work, texec_after);
}

/* ---- delete ----------------------------------------------------------------------- */

typedef struct {
    uv_work_t w;
    berth_req_t *req;
    rt_task_t *t;
    char *bundle, *fifo_dir, *ns, *id, *runtime;
    bool shim_alive, force;
    rt_exit_info_t ex;
    berth_error_t *err;
} tdelete_t;

static void tdelete_work(uv_work_t *w)
{
    tdelete_t *d = w->data;
    rt_task_teardown(d->bundle, d->fifo_dir, d->runtime, d->shim_alive, d->force, d->ns, d->id,
                     &d->ex, &d->err);
}

static void reply_exit(berth_req_t *req, const rt_task_t *t, const rt_proc_t *p)
{
    msgpack_packer *pk = berth_req_reply_begin(req);
    msgpack_pack_map(pk, 4);
    berth_mp_kv_str(pk, "id", p->exec_id[0] ? p->exec_id : t->id);
    berth_mp_kv_i64(pk, "pid", p->pid);
    berth_mp_kv_u64(pk, "exit_status", (uint64_t)p->exit_status);
    berth_mp_kv_i64(pk, "exited_at", p->exited_at);
    berth_req_reply_end(req);
}

static void tdelete_after(uv_work_t *w, int status)
{
    tdelete_t *d = w->data;
    (void)status;
    rt_task_t *t = d->t;
    if (d->err) {
        t->deleting = false;
        berth_req_fail(d->req, &d->err);
    } else {
        rt_proc_t *p = &t->init;
        if (!p->exited) {
            if (!p->pid && d->ex.pid)
                p->pid = d->ex.pid;
            rt_proc_exited(t, p, d->ex.have ? d->ex.status : 255,
                           d->ex.have ? d->ex.exited_at : berth_now_ns(), false);
        }
        rt_publish_pending_exit(t, p, NULL, NULL);
        berth_mpbuf_t ev;
        berth_mpbuf_init(&ev);
        msgpack_pack_map(&ev.pk, 5);
        berth_mp_kv_str(&ev.pk, "container_id", t->id);
        berth_mp_kv_str(&ev.pk, "id", t->id);
        berth_mp_kv_i64(&ev.pk, "pid", p->pid);
        berth_mp_kv_u64(&ev.pk, "exit_status", (uint64_t)p->exit_status);
        berth_mp_kv_i64(&ev.pk, "exited_at", p->exited_at);
        rt_publish("/tasks/delete", t->ns, &ev);
        reply_exit(d->req, t, p);
        rt_task_remove(t);
    }
    free(d->bundle);
    free(d->fifo_dir);
    free(d->ns);
    free(d->id);
    free(d->runtime);
    free(d);
    rt_task_unref(t);
}

static void exec_delete_done(shimop_t *op)
{
    rt_task_t *t = op->t;
    rt_proc_t *p = rt_task_proc(t, op->exec_id);
    if (op->err && op->err->code != BERTH_E_NOT_FOUND && op->err->code != BERTH_E_UNAVAILABLE) {
        berth_req_fail(op->req, &op->err);
        return;
    }
    if (!p) {
        berth_req_failf(op->req, BERTH_E_NOT_FOUND, "exec %s not found", op->exec_id);
        return;
    }
    if (!p->exited) {
        int64_t at = berth_now_ns();
        uint64_t st = 255;
        berth_mp_get_u64(op->result, "exit_status", &st, NULL);
        berth_mp_get_i64(op->result, "exited_at", &at, NULL);
        rt_proc_exited(t, p, (int)st, at, false);
    }
    rt_publish_pending_exit(t, p, NULL, NULL);
    reply_exit(op->req, t, p);
    for (rt_proc_t **pp = &t->execs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    for (int i = 0; i < 3; i++)
        if (p->fifos[i])
            unlink(p->fifos[i]);
    rt_proc_clear(p);
    free(p);
}

static void h_tasks_delete(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    _cleanup_free_ char *exec_id = NULL;
    if (!get_id(req, params, &id) || !get_exec_id(req, params, &exec_id))
        return;
    bool force = false;
    berth_error_t *err = NULL;
    if (berth_mp_get_bool(params, "force", &force, &err) < 0) {
        berth_req_fail(req, &err);
        return;
    }
    rt_task_t *t = need_task(req, id);
    if (!t)
        return;
    if (t->deleting) {
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION, "task %s is being deleted", id);
        return;
    }
    if (exec_id[0]) {
        rt_proc_t *p = need_proc(req, t, exec_id);
        if (!p)
            return;
        if (!p->exited && p->status != RT_CREATED) {
            berth_req_failf(req, BERTH_E_FAILED_PRECONDITION,
                            "exec %s must be stopped before deletion: %s", exec_id,
                            rt_status_name(p->status));
            return;
        }
        if (!t->shim_alive) {
            shimop_t op = {.req = req, .t = t, .exec_id = exec_id};
            exec_delete_done(&op);
            return;
        }
        shimop_t *op = shimop_new(req, t, "delete", exec_id, exec_delete_done);
        msgpack_pack_map(&op->params.pk, 1);
        berth_mp_kv_str(&op->params.pk, "exec_id", exec_id);
        shimop_go(op);
        return;
    }
    rt_status_t st = t->init.status;
    if (!t->init.exited && st != RT_CREATED && !force) {
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION,
                        "task %s must be stopped before deletion: %s (kill it, or use --force)", id,
                        rt_status_name(st));
        return;
    }
    t->deleting = true;
    rt_publish_pending_exit(t, &t->init, NULL, NULL);
    tdelete_t *d = calloc(1, sizeof(*d));
    d->req = req;
    d->t = t;
    d->bundle = strdup(t->bundle);
    d->fifo_dir = strdup(t->fifo_dir);
    d->ns = strdup(t->ns);
    d->id = strdup(t->id);
    d->runtime = t->runtime ? strdup(t->runtime) : NULL;
    d->shim_alive = t->shim_alive;
    d->force = force;
    d->w.data = d;
    t->refs++;
    uv_queue_work(loop(), &d->w, tdelete_work, tdelete_after);
}

/* ---- get, list, wait ------------------------------------------------------------------ */

static void h_tasks_get(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    _cleanup_free_ char *exec_id = NULL;
    if (!get_id(req, params, &id) || !get_exec_id(req, params, &exec_id))
        return;
    rt_task_t *t = need_task(req, id);
    if (!t)
        return;
    rt_proc_t *p = need_proc(req, t, exec_id);
    if (!p)
        return;
    msgpack_packer *pk = berth_req_reply_begin(req);
    msgpack_pack_map(pk, 1);
    berth_mp_pack_str(pk, "process");
    pack_proc(pk, t, p);
    berth_req_reply_end(req);
}

static void h_tasks_list(berth_req_t *req, const msgpack_object *params)
{
    (void)params;
    const char *ns = berth_req_namespace(req);
    uint32_t n = 0;
    for (rt_task_t *t = rt_g.tasks; t; t = t->next)
        n += strcmp(t->ns, ns) == 0 && !t->creating;
    msgpack_packer *pk = berth_req_reply_begin(req);
    msgpack_pack_map(pk, 1);
    berth_mp_pack_str(pk, "tasks");
    msgpack_pack_array(pk, n);
    for (rt_task_t *t = rt_g.tasks; t; t = t->next)
        if (strcmp(t->ns, ns) == 0 && !t->creating)
            pack_proc(pk, t, &t->init);
    berth_req_reply_end(req);
}

static void wait_chunk(berth_req_t *req, const char *status)
{
    /* The first chunk tells the caller its wait is registered (`run` opens
     * the wait before it starts the task). */
    msgpack_packer *pk = berth_req_stream_begin(req);
    msgpack_pack_map(pk, 1);
    berth_mp_kv_str(pk, "status", status);
    berth_req_stream_end_chunk(req);
}

static void wait_cancel(berth_req_t *req)
{
    for (rt_task_t *t = rt_g.tasks; t; t = t->next) {
        rt_proc_t *procs[64];
        size_t n = 0;
        procs[n++] = &t->init;
        for (rt_proc_t *p = t->execs; p && n < 64; p = p->next)
            procs[n++] = p;
        for (size_t i = 0; i < n; i++) {
            for (rt_waiter_t **wp = &procs[i]->waiters; *wp; wp = &(*wp)->next) {
                if ((*wp)->req == req) {
                    rt_waiter_t *w = *wp;
                    *wp = w->next;
                    free(w);
                    berth_req_failf(req, BERTH_E_CANCELED, "wait canceled");
                    return;
                }
            }
        }
    }
}

static void h_tasks_wait(berth_req_t *req, const msgpack_object *params)
{
    _cleanup_free_ char *id = NULL;
    _cleanup_free_ char *exec_id = NULL;
    if (!get_id(req, params, &id) || !get_exec_id(req, params, &exec_id))
        return;
    const char *ns = berth_req_namespace(req);
    rt_task_t *t = rt_task_find(ns, id);
    if (!t && !exec_id[0] && rt_autorm_add_waiter(ns, id, req)) {
        wait_chunk(req, "STOPPED");
        return;
    }
    if (!t && !exec_id[0]) {
        rt_gone_t *g = rt_gone_find(ns, id);
        if (g) {
            wait_chunk(req, "STOPPED");
            rt_reply_wait(req, g->exit_status, g->exited_at);
            return;
        }
    }
    if (!t) {
        berth_req_failf(req, BERTH_E_NOT_FOUND, "task %s not found in namespace %s", id, ns);
        return;
    }
    rt_proc_t *p = need_proc(req, t, exec_id);
    if (!p)
        return;
    if (p->exited && !(p == &t->init && t->rm && t->deleting)) {
        wait_chunk(req, "STOPPED");
        rt_reply_wait(req, p->exit_status, p->exited_at);
        return;
    }
    rt_waiter_t *w = calloc(1, sizeof(*w));
    w->req = req;
    w->next = p->waiters;
    p->waiters = w;
    berth_req_set_cancel_cb(req, wait_cancel);
    wait_chunk(req, t->creating ? "CREATED" : rt_status_name(p->status));
}

/* ---- table ------------------------------------------------------------------------ */

#define PUB(name, fn, flags)                                                                       \
    {                                                                                              \
        name, fn, flags, NULL                                                                      \
    }

const berth_method_t rt_methods[] = {
    PUB("containers.create", h_containers_create, 0),
    PUB("containers.delete", h_containers_delete, 0),
    PUB("tasks.create", h_tasks_create, 0),
    PUB("tasks.start", h_tasks_start, 0),
    PUB("tasks.get", h_tasks_get, BERTH_METHOD_IDEMPOTENT),
    PUB("tasks.list", h_tasks_list, BERTH_METHOD_IDEMPOTENT),
    PUB("tasks.kill", h_tasks_kill, 0),
    PUB("tasks.delete", h_tasks_delete, 0),
    PUB("tasks.exec", h_tasks_exec, 0),
    PUB("tasks.resize", h_tasks_resize, BERTH_METHOD_IDEMPOTENT),
    PUB("tasks.close_io", h_tasks_close_io, BERTH_METHOD_IDEMPOTENT),
    PUB("tasks.pause", h_tasks_pause, 0),
    PUB("tasks.resume", h_tasks_resume, 0),
    PUB("tasks.pids", h_tasks_pids, BERTH_METHOD_IDEMPOTENT),
    PUB("tasks.metrics", h_tasks_metrics, BERTH_METHOD_IDEMPOTENT),
    PUB("tasks.wait", h_tasks_wait, BERTH_METHOD_IDEMPOTENT | BERTH_METHOD_RESUMABLE),
};
const size_t rt_n_methods = BERTH_ARRAY_SIZE(rt_methods);
