/* SPDX-License-Identifier: Apache-2.0 */
/* Unpacks an image's layers into snapshots named by chain id, in order:
 * snapshots.stat of the top chain id (the whole image is there), else for
 * each layer prepare a random "extract-" key on the parent chain with the
 * snapshot.ref label (already_exists = reuse that layer) as soon as the
 * parent is committed, even before the layer's blob has arrived; once it has,
 * diff.apply, check the diff id against the config, snapshots.commit
 * (already_exists = another pull won). */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "berth/log.h"
#include "xfer.h"

struct xfer_unpack_s {
    char *ns, *lease;
    xfer_desc_t *layers;
    char **diff_ids;
    char **chain;
    size_t n;
    bool *ready;
    size_t next;
    bool started, busy, canceled, finished;
    char *key;     /* the active extract snapshot, removed on failure */
    bool prepared; /* key is prepared for layer `next` (its blob may still be on its way) */
    xfer_unpack_progress_cb pcb;
    xfer_unpack_done_cb dcb;
    void *ud;
    berth_error_t *err;
};

static void step(xfer_unpack_t *u);

static void u_free(xfer_unpack_t *u)
{
    free(u->ns);
    free(u->lease);
    for (size_t i = 0; i < u->n; i++)
        xfer_desc_clear(&u->layers[i]);
    free(u->layers);
    xfer_strv_free(u->diff_ids, u->n);
    xfer_strv_free(u->chain, u->n);
    free(u->ready);
    free(u->key);
    berth_error_free(&u->err);
    free(u);
}

xfer_unpack_t *xfer_unpack_new(const char *ns, const char *lease, const xfer_desc_t *layers,
                               char *const *diff_ids, size_t n, xfer_unpack_progress_cb pcb,
                               xfer_unpack_done_cb dcb, void *ud)
{
    xfer_unpack_t *u = calloc(1, sizeof(*u));
    u->ns = strdup(ns);
    u->lease = lease ? strdup(lease) : NULL;
    u->n = n;
    u->layers = calloc(n ? n : 1, sizeof(xfer_desc_t));
    u->diff_ids = calloc(n ? n : 1, sizeof(char *));
    u->ready = calloc(n ? n : 1, sizeof(bool));
    for (size_t i = 0; i < n; i++) {
        xfer_desc_copy(&u->layers[i], &layers[i]);
        u->diff_ids[i] = strdup(diff_ids[i]);
    }
    xfer_chain_ids(u->diff_ids, n, &u->chain, NULL);
    u->pcb = pcb;
    u->dcb = dcb;
    u->ud = ud;
    return u;
}

static void finish_now(xfer_unpack_t *u)
{
    u->finished = true;
    const char *top = u->n ? u->chain[u->n - 1] : NULL;
    u->dcb(u->err, u->err ? NULL : top, u->ud);
    u_free(u);
}

/* Removes the active extract snapshot (if any) and then finishes. */
static void removed(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    xfer_unpack_t *u = ud;
    if (err)
        berth_log(BERTH_LOG_WARN, "msg=\"cannot remove extract snapshot\" key=%s error=\"%s\"",
                  u->key, err->message);
    free(u->key);
    u->key = NULL;
    finish_now(u);
}

static void fail(xfer_unpack_t *u, berth_error_t **err)
{
    if (!u->err && err && *err) {
        u->err = *err;
        *err = NULL;
    }
    berth_error_free(err);
    u->busy = true;
    if (u->key) {
        berth_mpbuf_t b;
        xfer_params_begin(&b, 1, u->ns, NULL);
        berth_mp_kv_str(&b.pk, "key", u->key);
        int rc = xfer_call("snapshots.remove", &b, removed, u, NULL);
        berth_mpbuf_destroy(&b);
        if (rc == 0)
            return;
    }
    finish_now(u);
}

static bool check_cancel(xfer_unpack_t *u)
{
    if (!u->canceled)
        return false;
    berth_error_t *e = NULL;
    berth_error_set(&e, BERTH_E_CANCELED, "unpack canceled");
    fail(u, &e);
    return true;
}

static void copy_err(berth_error_t **dst, const berth_error_t *src, const char *ctx, const char *d)
{
    berth_error_set(dst, src->code, "%s %s: %s", ctx, d, src->message);
}

static void committed(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                      void *ud)
{
    xfer_unpack_t *u = ud;
    size_t i = u->next;
    if (err && err->code != BERTH_E_ALREADY_EXISTS) {
        berth_error_t *e = NULL;
        copy_err(&e, err, "commit snapshot of layer", u->layers[i].digest);
        fail(u, &e);
        return;
    }
    if (err) {
        /* Another pull committed the same chain first: drop ours. */
        berth_mpbuf_t b;
        xfer_params_begin(&b, 1, u->ns, NULL);
        berth_mp_kv_str(&b.pk, "key", u->key);
        xfer_call("snapshots.remove", &b, NULL, NULL, NULL);
        berth_mpbuf_destroy(&b);
    }
    free(u->key);
    u->key = NULL;
    u->prepared = false;
    if (u->pcb)
        u->pcb(i, "done", u->ud);
    u->next++;
    u->busy = false;
    step(u);
}

static void applied(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    xfer_unpack_t *u = ud;
    size_t i = u->next;
    berth_error_t *e = NULL;
    if (check_cancel(u))
        return;
    if (err) {
        copy_err(&e, err, "apply layer", u->layers[i].digest);
        fail(u, &e);
        return;
    }
    const char *got = NULL;
    size_t gl = 0;
    berth_mp_get_str(res, "diff_id", &got, &gl, NULL);
    if (!got || gl != strlen(u->diff_ids[i]) || memcmp(got, u->diff_ids[i], gl) != 0) {
        berth_error_set(&e, BERTH_E_FAILED_PRECONDITION,
                        "layer %s: uncompressed digest %.*s does not match the diff id %s in the "
                        "image config",
                        u->layers[i].digest, (int)gl, got ? got : "", u->diff_ids[i]);
        fail(u, &e);
        return;
    }
    berth_mpbuf_t b;
    xfer_params_begin(&b, 2, u->ns, u->lease);
    berth_mp_kv_str(&b.pk, "name", u->chain[i]);
    berth_mp_kv_str(&b.pk, "key", u->key);
    if (xfer_call("snapshots.commit", &b, committed, u, &e) < 0)
        fail(u, &e);
    berth_mpbuf_destroy(&b);
}

static void apply_layer(xfer_unpack_t *u)
{
    size_t i = u->next;
    berth_error_t *e = NULL;
    u->busy = true;
    if (u->pcb)
        u->pcb(i, "unpacking", u->ud);
    berth_mpbuf_t b;
    xfer_params_begin(&b, 2, u->ns, u->lease);
    berth_mp_kv_str(&b.pk, "key", u->key);
    berth_mp_pack_str(&b.pk, "desc");
    xfer_desc_pack(&b.pk, &u->layers[i]);
    if (xfer_call("diff.apply", &b, applied, u, &e) < 0)
        fail(u, &e);
    berth_mpbuf_destroy(&b);
}

static void prepared(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    xfer_unpack_t *u = ud;
    size_t i = u->next;
    berth_error_t *e = NULL;
    u->busy = false;
    if (err && err->code == BERTH_E_ALREADY_EXISTS) {
        /* The label named a snapshot that is there (committed here, or
         * shared from another namespace): skip this layer, like containerd. */
        free(u->key);
        u->key = NULL;
        if (check_cancel(u))
            return;
        if (u->pcb)
            u->pcb(i, "exists", u->ud);
        u->next++;
        step(u);
        return;
    }
    if (err) {
        free(u->key);
        u->key = NULL;
        copy_err(&e, err, "prepare snapshot for layer", u->layers[i].digest);
        u->busy = true;
        fail(u, &e);
        return;
    }
    if (check_cancel(u))
        return;
    u->prepared = true;
    step(u);
}

/* Prepares the extract snapshot of layer `next` (its parent is committed),
 * possibly before its blob has arrived. The snapshot.ref label makes
 * metadata answer already_exists when that layer's snapshot exists, in one
 * round trip instead of a stat and a prepare. */
static void prepare_layer(xfer_unpack_t *u)
{
    size_t i = u->next;
    berth_error_t *e = NULL;
    uint8_t rnd[8];
    if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
        memset(rnd, 0x5a, sizeof(rnd));
    free(u->key);
    if (asprintf(&u->key, "extract-%02x%02x%02x%02x%02x%02x%02x%02x-%s", rnd[0], rnd[1], rnd[2],
                 rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], u->chain[i]) < 0)
        u->key = NULL;
    u->busy = true;
    berth_mpbuf_t b;
    xfer_params_begin(&b, i > 0 ? 3 : 2, u->ns, u->lease);
    berth_mp_kv_str(&b.pk, "key", u->key);
    if (i > 0)
        berth_mp_kv_str(&b.pk, "parent", u->chain[i - 1]);
    berth_mp_pack_str(&b.pk, "labels");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "berth.io/snapshot.ref", u->chain[i]);
    if (xfer_call("snapshots.prepare", &b, prepared, u, &e) < 0) {
        free(u->key);
        u->key = NULL;
        fail(u, &e);
    }
    berth_mpbuf_destroy(&b);
}

static void step(xfer_unpack_t *u)
{
    if (u->busy || u->finished || !u->started)
        return;
    if (check_cancel(u))
        return;
    if (u->next >= u->n) {
        finish_now(u);
        return;
    }
    if (!u->prepared) {
        prepare_layer(u);
        return;
    }
    if (u->ready[u->next])
        apply_layer(u);
}

static void stat_top(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    xfer_unpack_t *u = ud;
    u->busy = false;
    if (check_cancel(u))
        return;
    if (!err) {
        /* The whole chain is there: nothing to apply. */
        for (size_t i = 0; i < u->n; i++)
            if (u->pcb)
                u->pcb(i, "exists", u->ud);
        u->next = u->n;
    }
    step(u);
}

void xfer_unpack_start(xfer_unpack_t *u)
{
    if (u->started)
        return;
    u->started = true;
    if (u->n == 0) {
        finish_now(u);
        return;
    }
    u->busy = true;
    berth_mpbuf_t b;
    xfer_params_begin(&b, 1, u->ns, NULL);
    berth_mp_kv_str(&b.pk, "key", u->chain[u->n - 1]);
    berth_error_t *e = NULL;
    if (xfer_call("snapshots.stat", &b, stat_top, u, &e) < 0)
        fail(u, &e);
    berth_mpbuf_destroy(&b);
}

void xfer_unpack_layer_ready(xfer_unpack_t *u, size_t i)
{
    if (i < u->n)
        u->ready[i] = true;
    step(u);
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void cancel_fire(uv_timer_t *t)
{
    xfer_unpack_t *u = t->data;
    uv_close((uv_handle_t *)t, timer_closed);
    u->busy = false;
    u->started = true;
    check_cancel(u);
}

void xfer_unpack_cancel(xfer_unpack_t *u)
{
    if (u->finished || u->canceled)
        return;
    u->canceled = true;
    if (!u->busy) {
        /* Finish from the loop, never inside the caller's stack. */
        u->busy = true;
        uv_timer_t *t = malloc(sizeof(*t));
        uv_timer_init(berth_plugin_loop(xfer_ctx->p), t);
        t->data = u;
        uv_timer_start(t, cancel_fire, 0, 0);
    }
}
