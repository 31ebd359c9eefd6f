/* SPDX-License-Identifier: Apache-2.0 */
/* berth-metadata handlers: decode params → call the domain (db.c,
 * records.c, gc.c) → reply. Reads run on the loop in a short LMDB read
 * transaction; writes go through one writer queue that runs batches of ops
 * on a libuv work thread in a single write transaction (one fsync per batch),
 * then replies and publishes events on the loop. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "berth/failpoint.h"
#include "gc.h"
#include "handlers.h"

/* ---- jobs ------------------------------------------------------------- */

meta_job_t *meta_job_new(meta_plugin_t *mp, berth_req_t *req)
{
    meta_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        if (req)
            berth_req_failf(req, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    j->mp = mp;
    j->req = req;
    berth_mpbuf_init(&j->extra);
    meta_wop_init(&j->op, NULL, j);
    if (req) {
        j->ns = strdup(berth_req_namespace(req));
        if (!j->ns) {
            berth_req_failf(req, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            meta_job_free(j);
            return NULL;
        }
    }
    return j;
}

void meta_job_free(meta_job_t *j)
{
    if (!j)
        return;
    free(j->ns);
    free(j->s1);
    free(j->s2);
    free(j->s3);
    meta_snap_plan_free(&j->plan);
    berth_mpbuf_destroy(&j->extra);
    berth_error_free(&j->backend_err);
    meta_wop_destroy(&j->op);
    free(j);
}

void meta_job_publish(meta_job_t *j)
{
    if (j->op.replayed)
        return;
    for (size_t i = 0; i < j->op.ev.n; i++) {
        meta_event_t *e = &j->op.ev.v[i];
        berth_publish(j->mp->p, e->topic, e->ns, e->data, e->len, NULL, NULL);
    }
    meta_events_clear(&j->op.ev);
}

void meta_job_finish(meta_job_t *j)
{
    if (j->req) {
        if (j->op.err)
            berth_req_fail(j->req, &j->op.err);
        else if (j->op.result.buf.size)
            berth_req_reply_raw(j->req, j->op.result.buf.data, j->op.result.buf.size);
        else
            berth_req_reply_empty(j->req);
        j->req = NULL;
    }
    meta_job_publish(j);
    meta_job_free(j);
}

/* ---- the writer ------------------------------------------------------------ */

static void kick(meta_plugin_t *mp);

static void work_cb(uv_work_t *w)
{
    meta_plugin_t *mp = w->data;
    meta_wop_t *ops[mp->batch_n];
    for (size_t i = 0; i < mp->batch_n; i++)
        ops[i] = &mp->batch[i]->op;
    mp->batch_held_ms = 0;
    meta_db_write_batch(mp->db, ops, mp->batch_n, &mp->batch_held_ms, NULL);
}

static void after_work_cb(uv_work_t *w, int status)
{
    meta_plugin_t *mp = w->data;
    size_t n = mp->batch_n;
    mp->batch_n = 0;
    mp->busy = false;
    mp->batches++;
    mp->writes += n;
    if (mp->batch_held_ms > 200)
        berth_log(BERTH_LOG_WARN, "msg=\"slow metadata write\" ops=%zu held_ms=%llu", n,
                  (unsigned long long)mp->batch_held_ms);
    /* Start the next batch before running callbacks: they may queue more. */
    meta_job_t **done = malloc(n * sizeof(*done));
    if (done)
        memcpy(done, mp->batch, n * sizeof(*done));
    kick(mp);
    for (size_t i = 0; done && i < n; i++) {
        meta_job_t *j = done[i];
        j->held_ms = mp->batch_held_ms;
        if (status == UV_ECANCELED && !j->op.err)
            berth_error_set(&j->op.err, BERTH_E_UNAVAILABLE, "metadata write cancelled");
        if (j->done)
            j->done(j);
        else
            meta_job_finish(j);
    }
    free(done);
}

static void kick(meta_plugin_t *mp)
{
    if (mp->busy || !mp->head)
        return;
    if (mp->batch_cap < mp->max_batch) {
        meta_job_t **nb = realloc(mp->batch, mp->max_batch * sizeof(*nb));
        if (!nb)
            return;
        mp->batch = nb;
        mp->batch_cap = mp->max_batch;
    }
    mp->batch_n = 0;
    while (mp->head && mp->batch_n < mp->max_batch) {
        meta_job_t *j = mp->head;
        /* A solo job (gc) runs in a batch of its own. */
        if (j->solo && mp->batch_n > 0)
            break;
        mp->head = j->next;
        if (!mp->head)
            mp->tail = NULL;
        j->next = NULL;
        mp->queued--;
        mp->batch[mp->batch_n++] = j;
        if (j->solo)
            break;
    }
    mp->busy = true;
    mp->work.data = mp;
    int rc = uv_queue_work(berth_plugin_loop(mp->p), &mp->work, work_cb, after_work_cb);
    if (rc < 0) {
        /* Cannot happen with a live loop; fail the batch rather than hang. */
        mp->busy = false;
        for (size_t i = 0; i < mp->batch_n; i++) {
            meta_job_t *j = mp->batch[i];
            berth_error_set(&j->op.err, BERTH_E_INTERNAL, "queue metadata write: %s",
                            uv_strerror(rc));
            if (j->done)
                j->done(j);
            else
                meta_job_finish(j);
        }
        mp->batch_n = 0;
    }
}

void meta_job_write(meta_job_t *j, meta_write_fn fn, meta_job_cb done)
{
    meta_plugin_t *mp = j->mp;
    /* The op may have run before (two-step snapshot flows): start clean. */
    meta_wop_destroy(&j->op);
    meta_wop_init(&j->op, fn, j);
    j->done = done;
    if (j->req) {
        j->op.lease = berth_req_lease(j->req);
        const char *rid = berth_req_request_id(j->req);
        if (rid && rid[0] && !j->no_replay) {
            j->op.replay_ns = j->ns;
            j->op.replay_method = berth_req_method(j->req);
            j->op.replay_id = rid;
            j->op.replay_mode = j->replay_mode;
        }
    }
    j->next = NULL;
    if (mp->tail)
        mp->tail->next = j;
    else
        mp->head = j;
    mp->tail = j;
    mp->queued++;
    kick(mp);
}

void meta_read_reply(meta_plugin_t *mp, berth_req_t *req, meta_write_fn fn, meta_job_t *args)
{
    berth_error_t *err = NULL;
    meta_tx_t tx;
    if (meta_tx_read(mp->db, &tx, &err) < 0) {
        berth_req_fail(req, &err);
        meta_job_free(args);
        return;
    }
    berth_mpbuf_t out;
    berth_mpbuf_init(&out);
    tx.out = &out;
    int rc = fn(&tx, args, &err);
    meta_tx_end(&tx);
    if (rc < 0)
        berth_req_fail(req, &err);
    else
        berth_req_reply_raw(req, out.buf.data, out.buf.size);
    berth_mpbuf_destroy(&out);
    args->req = NULL;
    meta_job_free(args);
}

typedef struct {
    uv_work_t w;
    meta_plugin_t *mp;
    berth_req_t *req;
    meta_write_fn fn;
    meta_job_t *args;
    berth_mpbuf_t out;
    berth_error_t *err;
    int rc;
} list_work_t;

static void list_work(uv_work_t *w)
{
    list_work_t *l = w->data;
    meta_tx_t tx;
    l->rc = meta_tx_read(l->mp->db, &tx, &l->err);
    if (l->rc < 0)
        return;
    tx.out = &l->out;
    l->rc = l->fn(&tx, l->args, &l->err);
    meta_tx_end(&tx);
}

static void list_done(uv_work_t *w, int status)
{
    list_work_t *l = w->data;
    (void)status;
    if (l->rc < 0) {
        if (!l->err)
            berth_error_set(&l->err, BERTH_E_INTERNAL, "metadata list failed");
        berth_req_fail(l->req, &l->err);
    } else {
        berth_req_reply_raw(l->req, l->out.buf.data, l->out.buf.size);
    }
    berth_mpbuf_destroy(&l->out);
    l->args->req = NULL;
    meta_job_free(l->args);
    free(l);
}

void meta_list_reply(meta_plugin_t *mp, berth_req_t *req, meta_write_fn fn, meta_job_t *args)
{
    list_work_t *l = calloc(1, sizeof(*l));
    if (!l) {
        meta_read_reply(mp, req, fn, args);
        return;
    }
    *l = (list_work_t){.mp = mp, .req = req, .fn = fn, .args = args};
    l->w.data = l;
    berth_mpbuf_init(&l->out);
    if (uv_queue_work(berth_plugin_loop(mp->p), &l->w, list_work, list_done) != 0) {
        berth_mpbuf_destroy(&l->out);
        free(l);
        meta_read_reply(mp, req, fn, args);
    }
}

int meta_param_str(berth_req_t *req, const msgpack_object *params, const char *key, bool required,
                   char **out)
{
    berth_error_t *err = NULL;
    *out = NULL;
    int rc = berth_mp_get_strdup(params, key, out, &err);
    if (rc < 0) {
        berth_req_fail(req, &err);
        return -1;
    }
    if (rc == 1 && required) {
        berth_req_failf(req, BERTH_E_INVALID_ARGUMENT, "parameter %s is required", key);
        return -1;
    }
    return 0;
}

/* Borrowed object params: type checks happen in the domain functions. */
static const msgpack_object *param_obj(const msgpack_object *params, const char *key)
{
    const msgpack_object *o = berth_mp_get(params, key);
    return o && o->type != MSGPACK_OBJECT_NIL ? o : NULL;
}

static int param_bool(berth_req_t *req, const msgpack_object *params, const char *key, bool *out)
{
    berth_error_t *err = NULL;
    if (berth_mp_get_bool(params, key, out, &err) < 0) {
        berth_req_fail(req, &err);
        return -1;
    }
    return 0;
}

/* Prepares a job with up to three string params (NULL key = unused). */
static meta_job_t *job3(berth_plugin_t *p, berth_req_t *req, const msgpack_object *params,
                        const char *k1, bool r1, const char *k2, bool r2, const char *k3, bool r3)
{
    meta_job_t *j = meta_job_new(meta_plugin_get(p), req);
    if (!j)
        return NULL;
    if ((k1 && meta_param_str(req, params, k1, r1, &j->s1) < 0) ||
        (k2 && meta_param_str(req, params, k2, r2, &j->s2) < 0) ||
        (k3 && meta_param_str(req, params, k3, r3, &j->s3) < 0)) {
        j->req = NULL;
        meta_job_free(j);
        return NULL;
    }
    return j;
}

#define FN(name, call)                                                                             \
    static int name(meta_tx_t *tx, void *a_, berth_error_t **err)                                  \
    {                                                                                              \
        meta_job_t *j = a_;                                                                        \
        (void)j;                                                                                   \
        return call;                                                                               \
    }

/* ---- gc --sync: deleting with sync waits for a collection ---------------- */

static void sync_gc_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                         void *data)
{
    meta_job_t *j = data;
    if (err && err->code != BERTH_E_UNIMPLEMENTED) {
        berth_error_free(&j->op.err);
        berth_error_set(&j->op.err, err->code,
                        "deleted, but the garbage collection it waited for failed: %s",
                        err->message);
    } else if (err) {
        berth_log(BERTH_LOG_INFO, "msg=\"no gc plugin: --sync has nothing to wait for\"");
    }
    meta_job_finish(j);
}

/* Completion of a delete with sync: publish, then run gc before replying. */
static void finish_maybe_sync(meta_job_t *j)
{
    if (j->op.err || !j->sync) {
        meta_job_finish(j);
        return;
    }
    meta_job_publish(j);
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "namespace", j->ns);
    berth_error_t *err = NULL;
    if (!berth_call(j->mp->p, "gc.sync", b.buf.data, b.buf.size, j->mp->backend_timeout_ms,
                    sync_gc_done, NULL, j, &err)) {
        berth_log(BERTH_LOG_WARN, "msg=\"cannot start gc for --sync\" err=\"%s\"", err->message);
        berth_error_free(&err);
        meta_job_finish(j);
    }
    berth_mpbuf_destroy(&b);
}

/* ---- namespaces ------------------------------------------------------------ */

FN(w_ns_create, meta_ns_create(tx, j->s1, j->o1, err))
FN(r_ns_get, meta_ns_get(tx, j->s1, err))
FN(r_ns_list, meta_ns_list(tx, err))
FN(w_ns_update, meta_ns_update(tx, j->s1, j->o1, j->o2, err))
FN(w_ns_delete, meta_ns_delete(tx, j->s1, err))

static void h_ns_create(berth_req_t *req, const msgpack_object *params)
{
    /* Test hook (BERTH_FAILPOINTS=metadata.sandbox_probe=error): a
     * namespace named sandbox-probe-SYSCALL makes that forbidden syscall
     * (tests/e2e/sandbox.bats). The test sends it without a request_id
     * (berth-rpctool, not the CLI): namespaces.create is replay, and a
     * re-sent probe would kill every restarted instance. */
    const msgpack_object *probe = berth_mp_get(params, "name");
    if (probe && probe->type == MSGPACK_OBJECT_STR &&
        berth_req_sandbox_probe(req, probe->via.str.ptr, probe->via.str.size,
                                "metadata.sandbox_probe"))
        return;
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "name", true, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, "labels");
    meta_job_write(j, w_ns_create, NULL);
}

static void h_ns_get(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "name", true, NULL, 0, NULL, 0);
    if (j)
        meta_read_reply(j->mp, req, r_ns_get, j);
}

static void h_ns_list(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, NULL, 0, NULL, 0, NULL, 0);
    if (j)
        meta_list_reply(j->mp, req, r_ns_list, j);
}

static void h_ns_update(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "name", true, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, "labels");
    j->o2 = param_obj(params, "fields");
    meta_job_write(j, w_ns_update, NULL);
}

static void h_ns_delete(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "name", true, NULL, 0, NULL, 0);
    if (j)
        meta_job_write(j, w_ns_delete, NULL);
}

/* ---- content records ---------------------------------------------------------- */

FN(r_content_info, meta_content_info(tx, j->ns, j->s1, err))
FN(r_content_list, meta_content_list(tx, j->ns, j->o1, err))
FN(w_content_update, meta_content_update(tx, j->ns, j->s1, j->o1, j->o2, err))
FN(w_content_delete, meta_content_delete(tx, j->ns, j->s1, err))
FN(w_content_commit, meta_content_commit(tx, j->ns, j->s1, j->u, j->o1, j->s2, err))
FN(r_content_exists, meta_content_exists(tx, j->ns, j->s1, err))

static void h_content_info(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "digest", true, NULL, 0, NULL, 0);
    if (j)
        meta_read_reply(j->mp, req, r_content_info, j);
}

static void h_content_list(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, NULL, 0, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, "filters");
    meta_list_reply(j->mp, req, r_content_list, j);
}

static void h_content_update(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "digest", true, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, "labels");
    j->o2 = param_obj(params, "fields");
    meta_job_write(j, w_content_update, NULL);
}

static void h_content_delete(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "digest", true, NULL, 0, NULL, 0);
    if (!j || param_bool(req, params, "sync", &j->sync) < 0) {
        if (j)
            j->req = NULL;
        meta_job_free(j);
        return;
    }
    meta_job_write(j, w_content_delete, finish_maybe_sync);
}

static void h_content_commit(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "digest", true, "ref", false, NULL, 0);
    if (!j)
        return;
    berth_error_t *err = NULL;
    int rc = berth_mp_get_u64(params, "size", &j->u, &err);
    if (rc != 0) {
        if (rc == 1)
            berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "parameter size is required");
        berth_req_fail(req, &err);
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    j->o1 = param_obj(params, "labels");
    meta_job_write(j, w_content_commit, NULL);
}

static void h_content_exists(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "digest", true, NULL, 0, NULL, 0);
    if (j)
        meta_read_reply(j->mp, req, r_content_exists, j);
}

/* ---- ingests ------------------------------------------------------------------ */

FN(w_ingest_begin, meta_ingest_begin(tx, j->ns, j->s1, j->s2, err))
FN(w_ingest_end, meta_ingest_end(tx, j->ns, j->s1, err))
FN(r_ingest_get, meta_ingest_get(tx, j->ns, j->s1, err))
FN(r_ingest_list, meta_ingest_list(tx, j->ns, err))

static void h_ingest_begin(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j =
        job3(berth_req_plugin(req), req, params, "ref", true, "expected", false, NULL, 0);
    if (j)
        meta_job_write(j, w_ingest_begin, NULL);
}

static void h_ingest_end(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "ref", true, NULL, 0, NULL, 0);
    if (j)
        meta_job_write(j, w_ingest_end, NULL);
}

static void h_ingest_get(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "ref", true, NULL, 0, NULL, 0);
    if (j)
        meta_read_reply(j->mp, req, r_ingest_get, j);
}

static void h_ingest_list(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, NULL, 0, NULL, 0, NULL, 0);
    if (j)
        meta_list_reply(j->mp, req, r_ingest_list, j);
}

/* ---- images ----------------------------------------------------------------------- */

FN(w_image_create, meta_image_create(tx, j->ns, j->o1, err))
FN(r_image_get, meta_image_get(tx, j->ns, j->s1, err))
FN(r_image_list, meta_image_list(tx, j->ns, j->o1, err))
FN(w_image_update, meta_image_update(tx, j->ns, j->o1, j->o2, err))
FN(w_image_delete, meta_image_delete(tx, j->ns, j->s1, err))

/* ---- containers ------------------------------------------------------------------ */

FN(w_ctr_create, meta_container_create(tx, j->ns, j->o1, err))
FN(r_ctr_get, meta_container_get(tx, j->ns, j->s1, err))
FN(r_ctr_list, meta_container_list(tx, j->ns, j->o1, err))
FN(w_ctr_update, meta_container_update(tx, j->ns, j->o1, j->o2, err))
FN(w_ctr_delete, meta_container_delete(tx, j->ns, j->s1, err))

/* ---- images, containers, leases: the same requests on three kinds -------------------- */

/* What differs between the kinds: the record's parameter name, its key's,
 * and the operations. The handlers find their kind from the method name. */
typedef struct {
    const char *obj; /* "image": {image: {...}} in create/update */
    const char *key; /* "name": {name} in get/delete */
    bool delete_sync;
    meta_write_fn create, get, list, update, del;
} rec_kind_t;

FN(w_lease_create, meta_lease_create(tx, j->ns, j->s1, j->o1, j->i, err))
FN(r_lease_list, meta_lease_list(tx, j->ns, j->o1, err))
FN(w_lease_delete, meta_lease_delete(tx, j->ns, j->s1, err))

static const rec_kind_t k_image = {"image",     "name",       true,           w_image_create,
                                   r_image_get, r_image_list, w_image_update, w_image_delete};
static const rec_kind_t k_ctr = {"container", "id",       false,        w_ctr_create,
                                 r_ctr_get,   r_ctr_list, w_ctr_update, w_ctr_delete};
static const rec_kind_t k_lease = {"lease", "id",         true, NULL,
                                   NULL,    r_lease_list, NULL, w_lease_delete};

static const rec_kind_t *kind_of(berth_req_t *req)
{
    const char *m = berth_req_method(req);
    if (strncmp(m, "images.", 7) == 0)
        return &k_image;
    if (strncmp(m, "leases.", 7) == 0)
        return &k_lease;
    return &k_ctr; /* containers.* and meta.containers_* */
}

static void h_rec_create(berth_req_t *req, const msgpack_object *params)
{
    const rec_kind_t *k = kind_of(req);
    meta_job_t *j = job3(berth_req_plugin(req), req, params, NULL, 0, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, k->obj);
    meta_job_write(j, k->create, NULL);
}

static void h_rec_get(berth_req_t *req, const msgpack_object *params)
{
    const rec_kind_t *k = kind_of(req);
    meta_job_t *j = job3(berth_req_plugin(req), req, params, k->key, true, NULL, 0, NULL, 0);
    if (j)
        meta_read_reply(j->mp, req, k->get, j);
}

static void h_rec_list(berth_req_t *req, const msgpack_object *params)
{
    const rec_kind_t *k = kind_of(req);
    meta_job_t *j = job3(berth_req_plugin(req), req, params, NULL, 0, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, "filters");
    meta_list_reply(j->mp, req, k->list, j);
}

static void h_rec_update(berth_req_t *req, const msgpack_object *params)
{
    const rec_kind_t *k = kind_of(req);
    meta_job_t *j = job3(berth_req_plugin(req), req, params, NULL, 0, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, k->obj);
    j->o2 = param_obj(params, "fields");
    meta_job_write(j, k->update, NULL);
}

/* images.delete and leases.delete take sync: wait for a collection. */
static void h_rec_delete(berth_req_t *req, const msgpack_object *params)
{
    const rec_kind_t *k = kind_of(req);
    meta_job_t *j = job3(berth_req_plugin(req), req, params, k->key, true, NULL, 0, NULL, 0);
    if (!j)
        return;
    if (k->delete_sync && param_bool(req, params, "sync", &j->sync) < 0) {
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    meta_job_write(j, k->del, k->delete_sync ? finish_maybe_sync : NULL);
}

/* ---- leases -------------------------------------------------------------------- */

FN(w_lease_add, meta_lease_add_resource(tx, j->ns, j->s1, j->s2, j->s3, err))
FN(w_lease_del_res, meta_lease_delete_resource(tx, j->ns, j->s1, j->s2, j->s3, err))
FN(r_lease_res, meta_lease_list_resources(tx, j->ns, j->s1, err))
FN(r_lease_check, meta_lease_check(tx, j->ns, j->s1, j->s2, j->s3, err))

static void h_lease_create(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "id", false, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, "labels");
    berth_error_t *err = NULL;
    if (berth_mp_get_i64(params, "expire", &j->i, &err) < 0) {
        berth_req_fail(req, &err);
        j->req = NULL;
        meta_job_free(j);
        return;
    }
    meta_job_write(j, w_lease_create, NULL);
}

/* Resource ops: {id, resource: {id, type}}. */
static meta_job_t *resource_job(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "id", true, NULL, 0, NULL, 0);
    if (!j)
        return NULL;
    const msgpack_object *r = berth_mp_get(params, "resource");
    if (!r || r->type != MSGPACK_OBJECT_MAP) {
        berth_req_failf(req, BERTH_E_INVALID_ARGUMENT, "parameter resource {id, type} is required");
        j->req = NULL;
        meta_job_free(j);
        return NULL;
    }
    if (meta_param_str(req, r, "type", true, &j->s2) < 0 ||
        meta_param_str(req, r, "id", true, &j->s3) < 0) {
        j->req = NULL;
        meta_job_free(j);
        return NULL;
    }
    return j;
}

static void h_lease_add(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = resource_job(req, params);
    if (j)
        meta_job_write(j, w_lease_add, NULL);
}

static void h_lease_del_res(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = resource_job(req, params);
    if (j)
        meta_job_write(j, w_lease_del_res, NULL);
}

static void h_lease_res(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, "id", true, NULL, 0, NULL, 0);
    if (j)
        meta_read_reply(j->mp, req, r_lease_res, j);
}

static void h_lease_check(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = resource_job(req, params);
    if (j)
        meta_read_reply(j->mp, req, r_lease_check, j);
}

/* ---- gc ----------------------------------------------------------------------- */

static int w_gc_collect(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    meta_job_t *j = a_;
    meta_gc_stats_t st;
    int64_t before = j->mp->replay_ttl_ns > 0 ? tx->now - j->mp->replay_ttl_ns : 0;
    return meta_gc_collect(tx, before, &st, err);
}

FN(w_gc_done, meta_gc_done(tx, j->o1, j->o2, err))
FN(w_gc_orphans, meta_gc_orphans(tx, j->o1, j->o2, err))

static void gc_collected(meta_job_t *j)
{
    if (!j->op.err)
        berth_log(BERTH_LOG_INFO, "msg=\"gc collected\" lock_ms=%llu",
                  (unsigned long long)j->held_ms);
    meta_job_finish(j);
}

static void h_gc_collect(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, NULL, 0, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->solo = true;
    /* A collection is not replayed: a repeat must see the current state. */
    j->no_replay = true;
    meta_job_write(j, w_gc_collect, gc_collected);
}

static void h_gc_done(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, NULL, 0, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, "content");
    j->o2 = param_obj(params, "snapshots");
    meta_job_write(j, w_gc_done, NULL);
}

static void gc_orphans_done(meta_job_t *j)
{
    berth_log(BERTH_LOG_DEBUG, "msg=\"gc orphans checked\" content=%u snapshots=%u err=\"%s\"",
              j->o1 && j->o1->type == MSGPACK_OBJECT_ARRAY ? j->o1->via.array.size : 0,
              j->o2 && j->o2->type == MSGPACK_OBJECT_ARRAY ? j->o2->via.array.size : 0,
              j->op.err ? j->op.err->message : "");
    meta_job_finish(j);
}

static void h_gc_orphans(berth_req_t *req, const msgpack_object *params)
{
    meta_job_t *j = job3(berth_req_plugin(req), req, params, NULL, 0, NULL, 0, NULL, 0);
    if (!j)
        return;
    j->o1 = param_obj(params, "content");
    j->o2 = param_obj(params, "snapshots");
    j->no_replay = true;
    meta_job_write(j, w_gc_orphans, gc_orphans_done);
}

/* ---- method table --------------------------------------------------------------- */

/* Mutations are `replay`: every write job records request_id → result in
 * its transaction (meta_job_write), so the core may re-send them after a
 * crash. gc's two calls are not (a repeat must see the current state). */
#define PUB(n, cb)                                                                                 \
    {                                                                                              \
        n, cb, BERTH_METHOD_REPLAY, NULL                                                           \
    }
#define PUB_IDEM(n, cb)                                                                            \
    {                                                                                              \
        n, cb, BERTH_METHOD_IDEMPOTENT, NULL                                                       \
    }
#define INT(n, cb, callers)                                                                        \
    {                                                                                              \
        n, cb, BERTH_METHOD_INTERNAL | BERTH_METHOD_REPLAY, callers                                \
    }
#define INT_NO_REPLAY(n, cb, callers)                                                              \
    {                                                                                              \
        n, cb, BERTH_METHOD_INTERNAL, callers                                                      \
    }
#define INT_IDEM(n, cb, callers)                                                                   \
    {                                                                                              \
        n, cb, BERTH_METHOD_INTERNAL | BERTH_METHOD_IDEMPOTENT, callers                            \
    }

const berth_method_t meta_methods[] = {
    PUB("namespaces.create", h_ns_create),
    PUB_IDEM("namespaces.get", h_ns_get),
    PUB_IDEM("namespaces.list", h_ns_list),
    PUB("namespaces.update", h_ns_update),
    PUB("namespaces.delete", h_ns_delete),
    PUB_IDEM("content.info", h_content_info),
    PUB_IDEM("content.list", h_content_list),
    PUB("content.update", h_content_update),
    PUB("content.delete", h_content_delete),
    PUB("images.create", h_rec_create),
    PUB_IDEM("images.get", h_rec_get),
    PUB_IDEM("images.list", h_rec_list),
    PUB("images.update", h_rec_update),
    PUB("images.delete", h_rec_delete),
    PUB_IDEM("containers.get", h_rec_get),
    PUB_IDEM("containers.list", h_rec_list),
    PUB("containers.update", h_rec_update),
    PUB("leases.create", h_lease_create),
    PUB_IDEM("leases.list", h_rec_list),
    PUB("leases.delete", h_rec_delete),
    PUB_IDEM("leases.add_resource", h_lease_add),
    PUB_IDEM("leases.delete_resource", h_lease_del_res),
    PUB_IDEM("leases.list_resources", h_lease_res),
    INT("meta.ingest_begin", h_ingest_begin, "content"),
    INT_IDEM("meta.ingest_end", h_ingest_end, "content"),
    INT_IDEM("meta.ingest_get", h_ingest_get, "content"),
    INT_IDEM("meta.ingest_list", h_ingest_list, "content"),
    INT("meta.content_commit", h_content_commit, "content"),
    INT_IDEM("meta.content_exists", h_content_exists,
             "content,transfer,runtime-runc,snapshot-overlay"),
    INT_IDEM("meta.lease_check", h_lease_check, "content"),
    INT("meta.containers_create", h_rec_create, "runtime-runc"),
    INT("meta.containers_delete", h_rec_delete, "runtime-runc"),
    INT_NO_REPLAY("meta.gc_collect", h_gc_collect, "gc"),
    INT_IDEM("meta.gc_done", h_gc_done, "gc"),
    INT_NO_REPLAY("meta.gc_orphans", h_gc_orphans, "gc"),
};
const size_t meta_n_methods = BERTH_ARRAY_SIZE(meta_methods);
