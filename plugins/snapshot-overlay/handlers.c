/* SPDX-License-Identifier: Apache-2.0 */
/* berth-snapshot-overlay handlers: decode params, run the store operation in
 * uv_queue_work (all of them touch the disk), encode the result. The loop
 * thread owns the busy set that keeps apply, commit and remove of one
 * snapshot from overlapping. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "berth/failpoint.h"
#include "berth/log.h"
#include "handlers.h"
#include "module.h"

typedef enum {
    JOB_PREPARE,
    JOB_MOUNTS,
    JOB_COMMIT,
    JOB_REMOVE,
    JOB_USAGE,
    JOB_APPLY,
    JOB_LIST,
} job_kind_t;

typedef struct {
    uv_work_t work;
    berth_req_t *req;
    overlay_plugin_t *op;
    job_kind_t kind;
    char *id;
    char **parents;
    size_t n_parents;
    bool have_parents;
    int readonly; /* -1 = stored */
    char *media_type, *digest, *blob_path, *expected_diff_id;
    uint64_t size;
    atomic_int cancel;
    bool busy;
    bool module_held; /* an apply: holds the extraction library (module_hold) */
    berth_error_t *err;
    berth_mpbuf_t out;
} job_t;

/* ---- the extraction library (module.h) -------------------------------------- */

int overlay_module_find(overlay_plugin_t *op, berth_error_t **err)
{
    char exe[PATH_MAX - 64]; /* room for "/" OVERLAY_APPLY_FILE */
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    struct stat st;
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(op->module_path, sizeof(op->module_path), "%s/%s", exe, OVERLAY_APPLY_FILE);
            if (stat(op->module_path, &st) == 0)
                return 0;
        }
    }
#ifdef BERTH_OVERLAY_MODULE_DIR
    snprintf(op->module_path, sizeof(op->module_path), "%s/%s", BERTH_OVERLAY_MODULE_DIR,
             OVERLAY_APPLY_FILE);
    if (stat(op->module_path, &st) == 0)
        return 0;
#endif
    return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                           "%s not found next to berth-snapshot-overlay (%s) or in the install "
                           "directory; reinstall berth",
                           OVERLAY_APPLY_FILE, n > 0 ? exe : "?");
}

/* Loaded on demand (the first prepare or apply), unloaded once no apply has
 * run for unload_idle_ms: dlclose gives back libarchive, ICU, libxml2, isa-l,
 * zstd and the rest (6.5 -> 4 MiB of RSS); libstdc++, which ICU pulls in and
 * which pins itself (unique symbols), stays with libm and libgcc_s (the
 * 1.5 MiB over a fresh plugin's 2.4).
 * Only pool threads call into the library (an apply's job_work, the preload),
 * and only between a module_hold() and the module_release() of the loop
 * thread, which unloads when nothing holds it: no thread is inside the
 * library then and no pointer into it survives (apply_snapshot joins its
 * producer thread and frees its archive before returning; global_init only
 * sets the umask and statics of the library itself). g_module_mu orders
 * loads in the pool against the unload on the loop. */
static pthread_mutex_t g_module_mu = PTHREAD_MUTEX_INITIALIZER;
static void *g_module_handle;                  /* g_module_mu */
static const overlay_apply_module_t *g_module; /* g_module_mu */
static unsigned g_module_holds;                /* loop thread */
static uv_timer_t g_unload_timer;              /* loop thread */
static bool g_unload_timer_init;

/* g_module_mu held. */
static void module_load(overlay_plugin_t *op, berth_error_t **err)
{
    uint64_t t0 = berth_mono_ms();
    void *h = dlopen(op->module_path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        berth_error_set(err, BERTH_E_INTERNAL, "cannot load %s: %s", op->module_path, dlerror());
        return;
    }
    const overlay_apply_module_t *m = dlsym(h, OVERLAY_APPLY_SYMBOL);
    if (!m || m->abi != OVERLAY_APPLY_ABI) {
        berth_error_set(err, BERTH_E_INTERNAL,
                        "%s does not match this berth-snapshot-overlay (built from other "
                        "sources); reinstall berth",
                        op->module_path);
        dlclose(h);
        return;
    }
    m->global_init();
    g_module_handle = h;
    g_module = m;
    berth_log(BERTH_LOG_DEBUG, "msg=\"extraction library loaded\" path=%s ms=%llu", op->module_path,
              (unsigned long long)(berth_mono_ms() - t0));
}

/* Any thread, between module_hold() and module_release(): loads the library
 * if needed. NULL with *err if it is unusable. */
static const overlay_apply_module_t *module_get(overlay_plugin_t *op, berth_error_t **err)
{
    berth_error_t *e = NULL;
    pthread_mutex_lock(&g_module_mu);
    if (!g_module)
        module_load(op, &e);
    const overlay_apply_module_t *m = g_module;
    pthread_mutex_unlock(&g_module_mu);
    if (e) {
        if (err)
            *err = e;
        else
            berth_error_free(&e);
    }
    return m;
}

static void on_unload_timer(uv_timer_t *t)
{
    overlay_plugin_t *op = t->data;
    if (g_module_holds > 0)
        return;
    pthread_mutex_lock(&g_module_mu);
    void *h = g_module_handle;
    g_module_handle = NULL;
    g_module = NULL;
    pthread_mutex_unlock(&g_module_mu);
    if (!h)
        return;
    uint64_t t0 = berth_mono_ms();
    int rc = dlclose(h);
    /* The next prepare preloads it again. */
    op->module_preload_started = false;
    malloc_trim(0);
    berth_log(BERTH_LOG_DEBUG, "msg=\"extraction library unloaded\" idle_ms=%llu ms=%llu%s%s",
              (unsigned long long)op->unload_idle_ms, (unsigned long long)(berth_mono_ms() - t0),
              rc == 0 ? "" : " error=", rc == 0 ? "" : dlerror());
}

/* Loop thread: the library must stay loaded until the matching release. */
static void module_hold(overlay_plugin_t *op)
{
    g_module_holds++;
    if (g_unload_timer_init)
        uv_timer_stop(&g_unload_timer);
}

static void module_release(overlay_plugin_t *op)
{
    if (--g_module_holds > 0 || op->unload_idle_ms == 0)
        return;
    if (!g_unload_timer_init) {
        uv_timer_init(berth_plugin_loop(op->p), &g_unload_timer);
        /* Never what keeps the loop running (the SDK closes it at exit). */
        uv_unref((uv_handle_t *)&g_unload_timer);
        g_unload_timer_init = true;
    }
    g_unload_timer.data = op;
    uv_timer_start(&g_unload_timer, on_unload_timer, op->unload_idle_ms, 0);
}

static void preload_work(uv_work_t *w)
{
    module_get(w->data, NULL);
}

static void preload_done(uv_work_t *w, int status)
{
    module_release(w->data);
    free(w);
}

/* Loads the library in the pool while the caller's first prepare or the
 * content.path round trip of its first apply runs, so that the apply does
 * not wait for dlopen (a few ms). Loop thread. */
static void module_preload(overlay_plugin_t *op)
{
    if (op->module_preload_started)
        return;
    op->module_preload_started = true;
    uv_work_t *w = calloc(1, sizeof(*w));
    if (!w)
        return;
    w->data = op;
    module_hold(op);
    if (uv_queue_work(berth_plugin_loop(op->p), w, preload_work, preload_done) < 0) {
        module_release(op);
        free(w);
    }
}

/* ---- busy set (loop thread) ---------------------------------------------- */

static bool busy_has(overlay_plugin_t *op, const char *id)
{
    for (size_t i = 0; i < op->n_busy; i++)
        if (strcmp(op->busy[i], id) == 0)
            return true;
    return false;
}

static int busy_add(overlay_plugin_t *op, const char *id)
{
    if (op->n_busy == op->cap_busy) {
        size_t nc = op->cap_busy ? op->cap_busy * 2 : 16;
        char **nv = realloc(op->busy, nc * sizeof(char *));
        if (!nv)
            return -1;
        op->busy = nv;
        op->cap_busy = nc;
    }
    if (!(op->busy[op->n_busy] = strdup(id)))
        return -1;
    op->n_busy++;
    return 0;
}

static void busy_del(overlay_plugin_t *op, const char *id)
{
    for (size_t i = 0; i < op->n_busy; i++)
        if (strcmp(op->busy[i], id) == 0) {
            free(op->busy[i]);
            op->busy[i] = op->busy[--op->n_busy];
            return;
        }
}

/* ---- jobs ------------------------------------------------------------------ */

static void job_free(job_t *j)
{
    if (j->busy)
        busy_del(j->op, j->id);
    if (j->module_held)
        module_release(j->op);
    free(j->id);
    overlay_strv_free(j->parents, j->n_parents);
    free(j->media_type);
    free(j->digest);
    free(j->blob_path);
    free(j->expected_diff_id);
    berth_error_free(&j->err);
    berth_mpbuf_destroy(&j->out);
    free(j);
}

static void pack_mounts(msgpack_packer *pk, const overlay_mounts_t *ms)
{
    msgpack_pack_array(pk, (uint32_t)ms->n);
    for (size_t i = 0; i < ms->n; i++) {
        const overlay_mount_t *m = &ms->v[i];
        msgpack_pack_map(pk, m->chdir ? 4 : 3);
        berth_mp_kv_str(pk, "type", m->type);
        berth_mp_kv_str(pk, "source", m->source);
        berth_mp_pack_str(pk, "options");
        msgpack_pack_array(pk, (uint32_t)m->n_options);
        for (size_t k = 0; k < m->n_options; k++)
            berth_mp_pack_str(pk, m->options[k]);
        if (m->chdir)
            berth_mp_kv_str(pk, "chdir", m->chdir);
    }
}

static void pack_strv(msgpack_packer *pk, const char *key, char **v, size_t n)
{
    berth_mp_pack_str(pk, key);
    msgpack_pack_array(pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        berth_mp_pack_str(pk, v[i]);
}

static void job_work(uv_work_t *w)
{
    job_t *j = w->data;
    overlay_store_t *s = j->op->store;
    msgpack_packer *pk = &j->out.pk;
    overlay_mounts_t ms = {0};
    overlay_usage_t u;
    const char *const *parents = (const char *const *)j->parents;
    switch (j->kind) {
    case JOB_PREPARE:
        if (overlay_prepare(s, j->id, parents, j->n_parents, j->readonly > 0, &ms, &j->err) < 0)
            return;
        /* Crash tests: the snapshot exists on disk, its caller does not know. */
        if (berth_failpoint("overlay.prepare.after") < 0) {
            overlay_mounts_free(&ms);
            berth_error_set(&j->err, BERTH_E_INTERNAL, "prepare snapshot %s: failpoint", j->id);
            return;
        }
        msgpack_pack_map(pk, 1);
        berth_mp_pack_str(pk, "mounts");
        pack_mounts(pk, &ms);
        overlay_mounts_free(&ms);
        return;
    case JOB_MOUNTS:
        if (overlay_mounts(s, j->id, j->have_parents ? parents : NULL, j->n_parents, j->readonly,
                           &ms, &j->err) < 0)
            return;
        msgpack_pack_map(pk, 1);
        berth_mp_pack_str(pk, "mounts");
        pack_mounts(pk, &ms);
        overlay_mounts_free(&ms);
        return;
    case JOB_COMMIT:
    case JOB_USAGE:
        /* Crash tests: between prepare/apply and commit. */
        if (j->kind == JOB_COMMIT && berth_failpoint("overlay.commit.before") < 0) {
            berth_error_set(&j->err, BERTH_E_INTERNAL, "commit snapshot %s: failpoint", j->id);
            return;
        }
        if (j->kind == JOB_COMMIT) {
            /* No usage walk on a pull's critical path (15-20 ms for a
             * 6,400-file layer): overlayfs.usage computes it on first use
             * and records it in the committed marker. */
            if (overlay_commit(s, j->id, NULL, &j->err) < 0)
                return;
            msgpack_pack_map(pk, 0);
            return;
        }
        if (overlay_usage(s, j->id, &u, &j->err) < 0)
            return;
        msgpack_pack_map(pk, 2);
        berth_mp_kv_u64(pk, "size", u.size);
        berth_mp_kv_u64(pk, "inodes", u.inodes);
        return;
    case JOB_REMOVE:
        if (overlay_remove(s, j->id, &j->err) < 0)
            return;
        msgpack_pack_map(pk, 0);
        return;
    case JOB_LIST: {
        char **ids = NULL, **intr = NULL;
        size_t n = 0, ni = 0;
        if (overlay_list(s, &ids, &n, &intr, &ni, &j->err) < 0)
            return;
        msgpack_pack_map(pk, 2);
        pack_strv(pk, "ids", ids, n);
        pack_strv(pk, "interrupted", intr, ni);
        overlay_strv_free(ids, n);
        overlay_strv_free(intr, ni);
        return;
    }
    case JOB_APPLY: {
        overlay_apply_opts_t o = {
            .max_uncompressed = j->op->max_uncompressed,
            .min_free_bytes = j->op->reserve,
            .cancel = &j->cancel,
            .expected_diff_id = j->expected_diff_id,
            .expected_size = j->size,
        };
        overlay_apply_result_t res;
        uint64_t t0 = berth_mono_ms();
        const overlay_apply_module_t *m = module_get(j->op, &j->err);
        if (!m || m->apply_snapshot(s, j->id, j->blob_path, j->media_type, &o, &res, &j->err) < 0) {
            berth_error_wrap(&j->err, "apply layer %s to snapshot %s", j->digest, j->id);
            return;
        }
        /* Crash tests: the layer is extracted and marked done, the caller
         * has not heard (overlayfs.apply is not re-sent: it fails
         * `unavailable` and the caller starts over). */
        if (berth_failpoint("overlay.apply.after_done") < 0) {
            berth_error_set(&j->err, BERTH_E_INTERNAL, "apply layer %s: failpoint", j->digest);
            return;
        }
        uint64_t ms_ = berth_mono_ms() - t0;
        berth_log(BERTH_LOG_INFO,
                  "msg=\"layer applied\" id=%s layer=%s diff_id=%s size=%llu entries=%llu "
                  "whiteouts=%llu dropped_xattrs=%llu ms=%llu",
                  j->id, j->digest, res.diff_id, (unsigned long long)res.size,
                  (unsigned long long)res.entries, (unsigned long long)res.whiteouts,
                  (unsigned long long)res.skipped_xattrs, (unsigned long long)ms_);
        msgpack_pack_map(pk, 2);
        berth_mp_kv_str(pk, "diff_id", res.diff_id);
        berth_mp_kv_u64(pk, "size", res.size);
        return;
    }
    }
}

static void job_after(uv_work_t *w, int status)
{
    job_t *j = w->data;
    if (status == UV_ECANCELED && !j->err)
        berth_error_set(&j->err, BERTH_E_CANCELED, "%s was cancelled", berth_req_method(j->req));
    if (j->err)
        berth_req_fail(j->req, &j->err);
    else
        berth_req_reply_raw(j->req, j->out.buf.data, j->out.buf.size);
    bool trim = j->kind == JOB_APPLY;
    job_free(j);
    if (trim)
        malloc_trim(0); /* the apply's buffers (9 MiB) were freed in a pool thread's arena */
}

static void job_start(job_t *j)
{
    j->work.data = j;
    int rc = uv_queue_work(berth_plugin_loop(j->op->p), &j->work, job_work, job_after);
    if (rc < 0) {
        berth_req_failf(j->req, BERTH_E_INTERNAL, "cannot queue work: %s", uv_strerror(rc));
        job_free(j);
    }
}

/* ---- decoding -------------------------------------------------------------- */

static job_t *job_new(berth_req_t *r, const msgpack_object *params, job_kind_t kind, bool need_id)
{
    job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    j->req = r;
    j->op = berth_plugin_data(berth_req_plugin(r));
    j->kind = kind;
    j->readonly = -1;
    berth_mpbuf_init(&j->out);
    if (!need_id)
        return j;
    berth_error_t *err = NULL;
    int rc = berth_mp_get_strdup(params, "id", &j->id, &err);
    if (rc == 0 && !overlay_id_valid(j->id))
        rc = berth_error_set(&err, BERTH_E_INVALID_ARGUMENT,
                             "%s: id \"%.40s\" is not a snapshot id (decimal digits)",
                             berth_req_method(r), j->id);
    else if (rc == 1)
        rc = berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "%s: parameter id is required",
                             berth_req_method(r));
    if (rc < 0) {
        berth_req_fail(r, &err);
        job_free(j);
        return NULL;
    }
    return j;
}

/* parents: [str] (nearest first) and readonly: bool; both optional. */
static int decode_parents(job_t *j, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    const msgpack_object *arr = NULL;
    int rc = berth_mp_get_array(params, "parents", &arr, &err);
    if (rc == 0) {
        j->have_parents = true;
        j->parents = calloc(arr->via.array.size + 1, sizeof(char *));
        if (!j->parents)
            rc = berth_error_set(&err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        for (uint32_t i = 0; rc == 0 && i < arr->via.array.size; i++) {
            char *s = berth_mp_strdup(&arr->via.array.ptr[i]);
            if (!s || !overlay_id_valid(s)) {
                free(s);
                rc = berth_error_set(&err, BERTH_E_INVALID_ARGUMENT,
                                     "%s: parents[%u] is not a snapshot id",
                                     berth_req_method(j->req), i);
                break;
            }
            j->parents[j->n_parents++] = s;
        }
    }
    bool ro = false;
    int r2 = rc < 0 ? 0 : berth_mp_get_bool(params, "readonly", &ro, &err);
    if (r2 == 0 && rc >= 0)
        j->readonly = ro ? 1 : 0;
    if (rc < 0 || r2 < 0) {
        berth_req_fail(j->req, &err);
        job_free(j);
        return -1;
    }
    return 0;
}

/* Claims the snapshot for a mutating job; fails the request if taken. */
static int claim(job_t *j)
{
    if (busy_has(j->op, j->id)) {
        berth_req_failf(j->req, BERTH_E_FAILED_PRECONDITION,
                        "snapshot %s is busy (a layer apply, commit or remove is running); retry "
                        "when it has finished",
                        j->id);
        job_free(j);
        return -1;
    }
    if (busy_add(j->op, j->id) < 0) {
        berth_req_failf(j->req, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        job_free(j);
        return -1;
    }
    j->busy = true;
    return 0;
}

static void handle_prepare(berth_req_t *r, const msgpack_object *params)
{
    job_t *j = job_new(r, params, JOB_PREPARE, true);
    if (!j || decode_parents(j, params) < 0)
        return;
    if (j->readonly <= 0)
        module_preload(j->op); /* a layer apply usually follows */
    job_start(j);
}

static void handle_mounts(berth_req_t *r, const msgpack_object *params)
{
    job_t *j = job_new(r, params, JOB_MOUNTS, true);
    if (!j || decode_parents(j, params) < 0)
        return;
    job_start(j);
}

static void handle_commit(berth_req_t *r, const msgpack_object *params)
{
    job_t *j = job_new(r, params, JOB_COMMIT, true);
    if (j && claim(j) == 0)
        job_start(j);
}

static void handle_remove(berth_req_t *r, const msgpack_object *params)
{
    job_t *j = job_new(r, params, JOB_REMOVE, true);
    if (j && claim(j) == 0)
        job_start(j);
}

static void handle_usage(berth_req_t *r, const msgpack_object *params)
{
    job_t *j = job_new(r, params, JOB_USAGE, true);
    if (j)
        job_start(j);
}

static void handle_list(berth_req_t *r, const msgpack_object *params)
{
    job_t *j = job_new(r, params, JOB_LIST, false);
    if (j)
        job_start(j);
}

/* ---- apply: content.path first, then extraction in the pool ---------------- */

static void apply_cancel_cb(berth_req_t *r)
{
    job_t *j = berth_req_data(r);
    if (j)
        atomic_store(&j->cancel, 1);
}

static void path_cb(berth_call_t *c, const berth_error_t *err, const msgpack_object *result,
                    void *data)
{
    (void)c;
    job_t *j = data;
    if (err) {
        berth_error_set(&j->err, err->code, "apply layer %s to snapshot %s: get blob path: %s",
                        j->digest, j->id, err->message);
        berth_req_set_data(j->req, NULL);
        berth_req_fail(j->req, &j->err);
        job_free(j);
        return;
    }
    if (berth_req_canceled(j->req) || atomic_load(&j->cancel)) {
        berth_req_set_data(j->req, NULL);
        berth_req_failf(j->req, BERTH_E_CANCELED, "apply to snapshot %s canceled", j->id);
        job_free(j);
        return;
    }
    berth_error_t *e = NULL;
    if (berth_mp_get_strdup(result, "path", &j->blob_path, &e) != 0 || !j->blob_path ||
        j->blob_path[0] != '/') {
        if (!e)
            berth_error_set(&e, BERTH_E_INTERNAL, "content.path returned no absolute path");
        berth_req_set_data(j->req, NULL);
        berth_req_fail(j->req, &e);
        job_free(j);
        return;
    }
    job_start(j);
}

static void handle_apply(berth_req_t *r, const msgpack_object *params)
{
    job_t *j = job_new(r, params, JOB_APPLY, true);
    if (!j)
        return;
    berth_error_t *err = NULL;
    const msgpack_object *desc = NULL;
    overlay_comp_t comp;
    int rc = berth_mp_get_map(params, "desc", &desc, &err);
    if (rc == 1)
        rc = berth_error_set(&err, BERTH_E_INVALID_ARGUMENT,
                             "overlayfs.apply: parameter desc is required");
    if (rc == 0 && berth_mp_get_strdup(desc, "media_type", &j->media_type, &err) != 0 && !err)
        berth_error_set(&err, BERTH_E_INVALID_ARGUMENT,
                        "overlayfs.apply: desc.media_type is "
                        "required");
    if (!err && berth_mp_get_strdup(desc, "digest", &j->digest, &err) != 0 && !err)
        berth_error_set(&err, BERTH_E_INVALID_ARGUMENT,
                        "overlayfs.apply: desc.digest is "
                        "required");
    if (!err && (strncmp(j->digest, "sha256:", 7) != 0 || strlen(j->digest) != 71))
        berth_error_set(&err, BERTH_E_INVALID_ARGUMENT,
                        "overlayfs.apply: desc.digest \"%.80s\" is not a sha256 digest", j->digest);
    if (!err)
        berth_mp_get_u64(desc, "size", &j->size, &err);
    if (!err)
        berth_mp_get_strdup(params, "expected_diff_id", &j->expected_diff_id, &err);
    if (!err)
        overlay_media_type_parse(j->media_type, &comp, &err);
    if (err) {
        berth_req_fail(r, &err);
        job_free(j);
        return;
    }
    if (claim(j) < 0)
        return;
    module_hold(j->op);
    j->module_held = true;
    module_preload(j->op);
    berth_req_set_data(r, j);
    berth_req_set_cancel_cb(r, apply_cancel_cb);

    berth_mpbuf_t pb;
    berth_mpbuf_init(&pb);
    const char *lease = berth_req_lease(r);
    msgpack_pack_map(&pb.pk, lease ? 3 : 2);
    berth_mp_kv_str(&pb.pk, "namespace", berth_req_namespace(r));
    berth_mp_kv_str(&pb.pk, "digest", j->digest);
    if (lease)
        berth_mp_kv_str(&pb.pk, "lease", lease);
    berth_call_t *c =
        berth_call(j->op->p, "content.path", pb.buf.data, pb.buf.size, 0, path_cb, NULL, j, &err);
    berth_mpbuf_destroy(&pb);
    if (!c) {
        berth_req_set_data(r, NULL);
        berth_error_wrap(&err, "apply layer %s: content plugin unreachable", j->digest);
        berth_req_fail(r, &err);
        job_free(j);
    }
}

#define CALLERS "metadata"
const berth_method_t overlay_methods[] = {
    {"overlayfs.prepare", handle_prepare, BERTH_METHOD_IDEMPOTENT | BERTH_METHOD_INTERNAL, CALLERS},
    {"overlayfs.mounts", handle_mounts, BERTH_METHOD_IDEMPOTENT | BERTH_METHOD_INTERNAL, CALLERS},
    {"overlayfs.commit", handle_commit, BERTH_METHOD_IDEMPOTENT | BERTH_METHOD_INTERNAL, CALLERS},
    {"overlayfs.remove", handle_remove, BERTH_METHOD_INTERNAL, "metadata,gc"},
    {"overlayfs.usage", handle_usage, BERTH_METHOD_IDEMPOTENT | BERTH_METHOD_INTERNAL, CALLERS},
    /* Not idempotent: a re-sent apply would run into a snapshot that already
     * holds part of the layer; the caller discards and retries instead. */
    {"overlayfs.apply", handle_apply, BERTH_METHOD_INTERNAL, CALLERS},
    {"overlayfs.list", handle_list, BERTH_METHOD_IDEMPOTENT | BERTH_METHOD_INTERNAL, "metadata,gc"},
};
const size_t overlay_n_methods = BERTH_ARRAY_SIZE(overlay_methods);
