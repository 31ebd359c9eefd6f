/* SPDX-License-Identifier: Apache-2.0 */
/* snapshots.* and diff.apply: the client-facing snapshotter, backed by the
 * overlayfs.* methods of berth-snapshot-overlay. Never holds a write
 * transaction across a backend call: write the intent, call, then finish or
 * roll back in a second transaction (meta_snap_* in snapshots.c); a crash in
 * between is settled by meta_snap_reconcile() at start. */
#include <string.h>

#include "handlers.h"

static uint32_t call_timeout(meta_job_t *j, uint32_t dflt)
{
    uint64_t dl = j->req ? berth_req_deadline(j->req) : 0;
    if (!dl)
        return dflt;
    uint64_t now = berth_mono_ms();
    return dl > now ? (uint32_t)(dl - now) : 1;
}

/* Calls a backend method with {id, parents?, readonly?, ...extra}. */
static int backend_call(meta_job_t *j, const char *method, bool with_chain, uint32_t timeout,
                        const msgpack_object *desc, berth_call_cb cb)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1 + (with_chain ? 2 : 0) + (desc ? 2 : 0) +
                                (desc && j->req && berth_req_lease(j->req) ? 1 : 0));
    berth_mp_kv_str(&b.pk, "id", j->plan.id);
    if (with_chain) {
        berth_mp_pack_str(&b.pk, "parents");
        msgpack_pack_array(&b.pk, (uint32_t)j->plan.n_parents);
        for (size_t i = 0; i < j->plan.n_parents; i++)
            berth_mp_pack_str(&b.pk, j->plan.parents[i]);
        berth_mp_kv_bool(&b.pk, "readonly", j->plan.readonly);
    }
    if (desc) {
        berth_mp_pack_str(&b.pk, "desc");
        msgpack_pack_object(&b.pk, *desc);
        berth_mp_kv_str(&b.pk, "namespace", j->ns);
        if (j->req && berth_req_lease(j->req))
            berth_mp_kv_str(&b.pk, "lease", berth_req_lease(j->req));
    }
    berth_error_t *err = NULL;
    berth_call_t *c =
        berth_call(j->mp->p, method, b.buf.data, b.buf.size, timeout, cb, NULL, j, &err);
    berth_mpbuf_destroy(&b);
    if (!c) {
        j->backend_err = err;
        return -1;
    }
    return 0;
}

static void copy_err(meta_job_t *j, const berth_error_t *err, const char *what)
{
    berth_error_free(&j->backend_err);
    berth_error_set(&j->backend_err, err->code, "%s %s: %s", what, j->s1 ? j->s1 : "",
                    err->message ? err->message : "");
}

/* Fails the request with the backend's error (or the op's, if any). */
static void fail_backend(meta_job_t *j)
{
    if (j->req) {
        if (j->op.err)
            berth_req_fail(j->req, &j->op.err);
        else if (j->backend_err)
            berth_req_fail(j->req, &j->backend_err);
        else
            berth_req_failf(j->req, BERTH_E_INTERNAL, "snapshot backend failed");
        j->req = NULL;
    }
    meta_job_publish(j);
    meta_job_free(j);
}

/* ---- backend removal of tombstoned ids ---------------------------------------- */

typedef struct {
    meta_plugin_t *mp;
    char *id;
    void (*then)(void *);
    void *data;
} rm_t;

static int w_tomb_done(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    return meta_snap_tomb_done(tx, j->s1, err);
}

static void removed_cb(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                       void *data)
{
    rm_t *r = data;
    if (err && err->code != BERTH_E_NOT_FOUND) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"backend did not remove snapshot; gc will retry\" id=%s code=%s err=\"%s\"",
                  r->id, berth_code_name(err->code), err->message);
    } else {
        meta_job_t *j = meta_job_new(r->mp, NULL);
        if (j) {
            j->s1 = r->id;
            r->id = NULL;
            meta_job_write(j, w_tomb_done, NULL);
        }
    }
    if (r->then)
        r->then(r->data);
    free(r->id);
    free(r);
}

void meta_backend_remove(meta_plugin_t *mp, const char *id, void (*then)(void *data), void *data)
{
    rm_t *r = calloc(1, sizeof(*r));
    char *copy = strdup(id);
    if (!r || !copy) {
        free(r);
        free(copy);
        if (then)
            then(data);
        return;
    }
    *r = (rm_t){mp, copy, then, data};
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_error_t *err = NULL;
    if (!berth_call(mp->p, "overlayfs.remove", b.buf.data, b.buf.size, mp->backend_timeout_ms,
                    removed_cb, NULL, r, &err)) {
        berth_log(BERTH_LOG_WARN,
                  "msg=\"cannot ask the backend to remove a snapshot\" id=%s err=\"%s\"", id,
                  err ? err->message : "");
        berth_error_free(&err);
        free(r->id);
        free(r);
        if (then)
            then(data);
    }
    berth_mpbuf_destroy(&b);
}

/* ---- prepare / view ----------------------------------------------------------------- */

static int w_prep_begin(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    return meta_snap_prepare_begin(tx, j->ns, j->s1, j->s2, j->o1, j->b, &j->plan, err);
}

static int w_prep_end(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    bool ok = !j->backend_err;
    if (meta_snap_prepare_end(tx, j->ns, j->s1, ok, err) < 0)
        return -1;
    /* The reply (recorded for replays) is the backend's {mounts}. */
    if (ok && tx->out)
        msgpack_sbuffer_write(&tx->out->buf, j->extra.buf.data, j->extra.buf.size);
    return 0;
}

static void prep_ended(meta_job_t *j)
{
    if (j->backend_err) {
        /* prepare_end tombstoned the id: have the backend drop what it made. */
        if (!j->op.err)
            meta_backend_remove(j->mp, j->plan.id, NULL, NULL);
        fail_backend(j);
        return;
    }
    meta_job_finish(j);
}

static void prep_called(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                        void *data)
{
    meta_job_t *j = data;
    if (err) {
        copy_err(j, err, "prepare snapshot");
        j->no_replay = true;
    } else {
        /* Keep only {mounts}: the backend may add fields of its own. */
        const msgpack_object *m = berth_mp_get(res, "mounts");
        msgpack_pack_map(&j->extra.pk, 1);
        berth_mp_pack_str(&j->extra.pk, "mounts");
        if (m)
            msgpack_pack_object(&j->extra.pk, *m);
        else
            msgpack_pack_array(&j->extra.pk, 0);
    }
    j->replay_mode = META_REPLAY_RECORD;
    meta_job_write(j, w_prep_end, prep_ended);
}

static void prep_begun(meta_job_t *j)
{
    if (j->op.err || j->op.replayed) {
        meta_job_finish(j);
        return;
    }
    if (j->plan.exists) {
        /* snapshot.ref names a committed snapshot (maybe just shared into
         * this namespace): the caller skips its apply, like containerd. */
        meta_job_publish(j);
        const msgpack_object *ref = berth_mp_get(j->o1, META_LABEL_SNAPSHOT_REF);
        if (!ref)
            ref = berth_mp_get(j->o1, "containerd.io/snapshot.ref");
        berth_req_failf(j->req, BERTH_E_ALREADY_EXISTS,
                        "snapshot %.*s already exists in namespace %s",
                        ref ? (int)ref->via.str.size : 0, ref ? ref->via.str.ptr : "", j->ns);
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    if (backend_call(j, "overlayfs.prepare", true, call_timeout(j, j->mp->backend_timeout_ms), NULL,
                     prep_called) < 0) {
        j->no_replay = true;
        meta_job_write(j, w_prep_end, prep_ended);
    }
}

static void prepare_common(berth_req_t *req, const msgpack_object *params, bool view)
{
    meta_job_t *j = meta_job_new(meta_plugin_get(berth_req_plugin(req)), req);
    if (!j)
        return;
    if (meta_param_str(req, params, "key", true, &j->s1) < 0 ||
        meta_param_str(req, params, "parent", false, &j->s2) < 0) {
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    const msgpack_object *l = berth_mp_get(params, "labels");
    j->o1 = l && l->type != MSGPACK_OBJECT_NIL ? l : NULL;
    j->b = view;
    j->replay_mode = META_REPLAY_LOOKUP;
    meta_job_write(j, w_prep_begin, prep_begun);
}

static void h_prepare(berth_req_t *req, const msgpack_object *params)
{
    prepare_common(req, params, false);
}

static void h_view(berth_req_t *req, const msgpack_object *params)
{
    prepare_common(req, params, true);
}

/* ---- commit -------------------------------------------------------------------------- */

static int w_commit_begin(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    return meta_snap_commit_begin(tx, j->ns, j->s1, j->s2, &j->plan, err);
}

static int w_commit_end(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    bool ok = !j->backend_err;
    if (meta_snap_commit_end(tx, j->ns, j->s1, j->s2, j->o1, ok, &j->plan, err) < 0)
        return -1;
    if (ok && tx->out)
        msgpack_pack_map(&tx->out->pk, 0);
    return 0;
}

static void commit_ended(meta_job_t *j)
{
    if (!j->op.err && j->plan.tomb)
        meta_backend_remove(j->mp, j->plan.tomb, NULL, NULL);
    if (j->backend_err || j->op.err) {
        fail_backend(j);
        return;
    }
    meta_job_finish(j);
}

static void commit_called(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                          void *data)
{
    meta_job_t *j = data;
    if (err) {
        copy_err(j, err, "commit snapshot");
        j->no_replay = true;
    }
    j->replay_mode = META_REPLAY_RECORD;
    meta_job_write(j, w_commit_end, commit_ended);
}

static void commit_begun(meta_job_t *j)
{
    if (j->op.err || j->op.replayed) {
        meta_job_finish(j);
        return;
    }
    /* The intent's id is where the backend commits; keep it (plan is reset
     * by commit_end). */
    if (backend_call(j, "overlayfs.commit", false, call_timeout(j, j->mp->backend_timeout_ms), NULL,
                     commit_called) < 0) {
        j->no_replay = true;
        meta_job_write(j, w_commit_end, commit_ended);
    }
}

static void h_commit(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = meta_job_new(meta_plugin_get(berth_req_plugin(req)), req);
    if (!j)
        return;
    if (meta_param_str(req, params, "name", true, &j->s1) < 0 ||
        meta_param_str(req, params, "key", true, &j->s2) < 0) {
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    const msgpack_object *l = berth_mp_get(params, "labels");
    j->o1 = l && l->type != MSGPACK_OBJECT_NIL ? l : NULL;
    j->replay_mode = META_REPLAY_LOOKUP;
    meta_job_write(j, w_commit_begin, commit_begun);
}

/* ---- remove --------------------------------------------------------------------------- */

static int w_remove(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    return meta_snap_remove(tx, j->ns, j->s1, &j->plan, err);
}

static void remove_finished(void *data)
{
    meta_job_finish(data);
}

static void removed(meta_job_t *j)
{
    if (j->op.err || !j->plan.tomb) {
        meta_job_finish(j);
        return;
    }
    if (j->b) {
        /* async: the record is gone (the id is free again, the snapshot no
         * longer listed); the directory goes in the background, as
         * containerd's gc removes a deleted snapshot's files later. A
         * failure leaves the tombstone for gc. */
        meta_backend_remove(j->mp, j->plan.tomb, NULL, NULL);
        meta_job_finish(j);
        return;
    }
    /* Reply once the backend removed the directory (or failed to: the
     * tombstone stays for gc), so `snapshots rm` frees the disk now. */
    meta_job_publish(j);
    meta_backend_remove(j->mp, j->plan.tomb, remove_finished, j);
}

static void h_remove(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = meta_job_new(meta_plugin_get(berth_req_plugin(req)), req);
    if (!j)
        return;
    if (meta_param_str(req, params, "key", true, &j->s1) < 0) {
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    berth_mp_get_bool(params, "async", &j->b, NULL);
    meta_job_write(j, w_remove, removed);
}

/* ---- reads and backend reads ------------------------------------------------------------ */

static int r_stat(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    return meta_snap_stat(tx, j->ns, j->s1, err);
}

static int w_update(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    return meta_snap_update(tx, j->ns, j->s1, j->o1, j->o2, err);
}

static int r_list(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    return meta_snap_list(tx, j->ns, j->o1, err);
}

static void h_stat(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = meta_job_new(meta_plugin_get(berth_req_plugin(req)), req);
    if (!j)
        return;
    if (meta_param_str(req, params, "key", true, &j->s1) < 0) {
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    meta_read_reply(j->mp, req, r_stat, j);
}

static void h_update(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = meta_job_new(meta_plugin_get(berth_req_plugin(req)), req);
    if (!j)
        return;
    if (meta_param_str(req, params, "key", true, &j->s1) < 0) {
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    j->o1 = berth_mp_get(params, "labels");
    j->o2 = berth_mp_get(params, "fields");
    meta_job_write(j, w_update, NULL);
}

static void h_list(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = meta_job_new(meta_plugin_get(berth_req_plugin(req)), req);
    if (!j)
        return;
    j->o1 = berth_mp_get(params, "filters");
    meta_list_reply(j->mp, req, r_list, j);
}

/* Resolves key to its backend id and chain in a read txn. For diff.apply
 * the digest must be visible in the namespace too. */
static int resolve(meta_job_t *j, const char *digest)
{
    berth_error_t *err = NULL;
    meta_tx_t tx;
    if (meta_tx_read(j->mp->db, &tx, &err) < 0)
        goto fail;
    int rc = meta_snap_resolve(&tx, j->ns, j->s1, &j->plan, &err);
    if (rc == 0 && digest) {
        berth_mpbuf_t out;
        berth_mpbuf_init(&out);
        tx.out = &out;
        rc = meta_content_exists(&tx, j->ns, digest, &err);
        tx.out = NULL;
        if (rc == 0) {
            /* {exists: bool, size} — check without a full decode. */
            msgpack_zone *z = msgpack_zone_new(256);
            msgpack_object o;
            size_t off = 0;
            bool exists = false;
            if (z &&
                msgpack_unpack(out.buf.data, out.buf.size, &off, z, &o) == MSGPACK_UNPACK_SUCCESS)
                berth_mp_get_bool(&o, "exists", &exists, NULL);
            if (z)
                msgpack_zone_free(z);
            if (!exists)
                rc = berth_error_set(&err, BERTH_E_NOT_FOUND,
                                     "content %s not found in namespace %s", digest, j->ns);
        }
        berth_mpbuf_destroy(&out);
    }
    meta_tx_end(&tx);
    if (rc == 0)
        return 0;
fail:
    berth_req_fail(j->req, &err);
    j->req = NULL;
    meta_job_free(j);
    return -1;
}

static void backend_reply(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                          void *data)
{
    meta_job_t *j = data;
    if (err) {
        copy_err(j, err, berth_req_method(j->req));
        fail_backend(j);
        return;
    }
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_object(&b.pk, *res);
    berth_req_reply_raw(j->req, b.buf.data, b.buf.size);
    berth_mpbuf_destroy(&b);
    j->req = NULL;
    meta_job_free(j);
}

static void backend_read(berth_req_t *req, const msgpack_object *params, const char *method,
                         bool with_chain, bool active_only, bool mountable)
{
    meta_job_t *j = meta_job_new(meta_plugin_get(berth_req_plugin(req)), req);
    if (!j)
        return;
    if (meta_param_str(req, params, "key", true, &j->s1) < 0) {
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    if (resolve(j, NULL) < 0)
        return;
    if ((mountable && strcmp(j->plan.kind, "committed") == 0) ||
        (active_only && strcmp(j->plan.kind, "active") != 0)) {
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION,
                        "snapshot %s is %s: %s needs an active snapshot", j->s1, j->plan.kind,
                        method);
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    if (backend_call(j, method, with_chain, call_timeout(j, j->mp->backend_timeout_ms), NULL,
                     backend_reply) < 0)
        fail_backend(j);
}

static void h_mounts(berth_req_t *req, const msgpack_object *params)
{
    backend_read(req, params, "overlayfs.mounts", true, false, true);
}

static void h_usage(berth_req_t *req, const msgpack_object *params)
{
    backend_read(req, params, "overlayfs.usage", false, false, false);
}

static void h_apply(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = meta_job_new(meta_plugin_get(berth_req_plugin(req)), req);
    if (!j)
        return;
    char *digest = NULL;
    const msgpack_object *desc = berth_mp_get(params, "desc");
    if (meta_param_str(req, params, "key", true, &j->s1) < 0) {
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    if (!desc || desc->type != MSGPACK_OBJECT_MAP ||
        meta_param_str(req, desc, "digest", true, &digest) < 0) {
        if (!desc || desc->type != MSGPACK_OBJECT_MAP)
            berth_req_failf(req, BERTH_E_INVALID_ARGUMENT,
                            "parameter desc {media_type, digest, size} is required");
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    int rc = resolve(j, digest);
    free(digest);
    if (rc < 0)
        return;
    if (strcmp(j->plan.kind, "active") != 0) {
        berth_req_failf(req, BERTH_E_FAILED_PRECONDITION,
                        "snapshot %s is %s: layers apply only to active snapshots", j->s1,
                        j->plan.kind);
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    /* Applying a big layer takes a while: the caller's deadline, or an hour. */
    if (backend_call(j, "overlayfs.apply", false, call_timeout(j, 3600 * 1000), desc,
                     backend_reply) < 0)
        fail_backend(j);
}

#define PUB(n, cb)                                                                                 \
    {                                                                                              \
        n, cb, 0, NULL                                                                             \
    }
#define PUB_IDEM(n, cb)                                                                            \
    {                                                                                              \
        n, cb, BERTH_METHOD_IDEMPOTENT, NULL                                                       \
    }

const berth_method_t meta_snap_methods[] = {
    PUB("snapshots.prepare", h_prepare), PUB("snapshots.view", h_view),
    PUB("snapshots.commit", h_commit),   PUB_IDEM("snapshots.mounts", h_mounts),
    PUB_IDEM("snapshots.stat", h_stat),  PUB("snapshots.update", h_update),
    PUB_IDEM("snapshots.list", h_list),  PUB_IDEM("snapshots.usage", h_usage),
    PUB("snapshots.remove", h_remove),   PUB("diff.apply", h_apply),
};
const size_t meta_n_snap_methods = BERTH_ARRAY_SIZE(meta_snap_methods);
