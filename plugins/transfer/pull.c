/* SPDX-License-Identifier: Apache-2.0 */
/* images.pull / content.fetch: resolve a reference, pick platform manifests,
 * fetch config and layers in parallel into content under a lease (streamed,
 * verified, resumable with Range), record gc.ref labels, unpack layers into
 * snapshots while later ones still download, then create the image record.
 *
 * Every asynchronous step (HTTP request, call to another plugin, unpack)
 * counts in `pending`; the pull ends when pending drops to zero, with the
 * first error if any (everything in flight is cancelled on failure). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "berth/failpoint.h"
#include "berth/log.h"
#include "local.h"
#include "xfer.h"

#define CHUNK (512 * 1024)
#define STAGE_CAP (1024 * 1024)
#define PROGRESS_MS 100
#define LOCK_RETRY_MS 200

typedef struct pull_s pull_t;

typedef enum { J_WAIT, J_ACTIVE, J_DONE } jstate_t;

typedef struct {
    char *ref;
    const char *status;
    uint64_t offset, total;
} item_t;

typedef struct job_s {
    pull_t *pl;
    xfer_desc_t desc;
    bool is_config;
    size_t item;
    jstate_t st;
    bool committed;
    /* streamed layer */
    berth_call_t *wc;
    xfer_rreq_t *hq;
    uint64_t recv; /* bytes of the blob accepted (content's offset + received) */
    char *buf;
    size_t blen;
    bool got_off, http_done, closed, paused, existed, resumed, restarted, early;
    unsigned refetches;
    uv_timer_t *timer;
    /* config */
    struct pman_s **owners;
    size_t n_owners;
    xfer_rreq_t *cfg_q;     /* registry GET, started with the local read on cold pulls */
    bool cfg_local_pending; /* content.read in flight */
    bool cfg_got;           /* one of the two delivered the bytes */
    berth_error_t *cfg_err; /* the GET's error, reported if the local read fails too */
} job_t;

typedef struct pman_s {
    pull_t *pl;
    xfer_desc_t desc;
    xfer_doc_t doc;
    job_t *config;
    job_t **layers;
    bool unpack;
    xfer_unpack_t *up;
    char *top_chain;
    xfer_config_t cfg;
    bool have_cfg;
} pman_t;

typedef enum { PH_LEASE, PH_WORK, PH_IMAGE, PH_END } phase_t;

struct pull_s {
    berth_req_t *req;
    char *ns;
    xfer_ref_t ref;
    char *name;
    xfer_platform_t want;
    bool all_platforms, unpack, platform_given;
    unsigned max_conc, active;
    xfer_reg_t *reg;
    char *lease;
    xfer_desc_t root;
    pman_t **mans;
    size_t n_mans;
    job_t **jobs;
    size_t n_jobs;
    item_t *items;
    size_t n_items;
    int pending;
    bool failed;
    berth_error_t *err;
    phase_t phase;
    uv_timer_t *prog_timer;
    uint64_t t0;
    bool dirty, replied;
    msgpack_zone *img_zone;
    msgpack_object *img;
    char *source_label;
    char *rs_data, *rs_ct, *rs_dd; /* resolved root, kept until the lease exists */
    size_t rs_len;
    bool rs_done;
    /* images.get of the name, asked while resolving: an image record that
     * already points at the resolved digest means the blobs are most likely
     * here ("warm": no speculative registry requests); otherwise ("cold")
     * every blob is fetched from the registry at once, in parallel with the
     * local checks. */
    bool img_checked;
    char *img_target;
    bool warm;
};

static void pl_check(pull_t *pl);
static void pump(pull_t *pl);
static void job_finish(job_t *j, const berth_error_t *err);

/* ---- progress ------------------------------------------------------------ */

static size_t item_add(pull_t *pl, const char *kind, const char *digest, uint64_t total,
                       const char *status)
{
    for (size_t i = 0; i < pl->n_items; i++) {
        size_t kl = strlen(kind);
        if (strncmp(pl->items[i].ref, kind, kl) == 0 &&
            strcmp(pl->items[i].ref + kl + 1, digest) == 0)
            return i;
    }
    pl->items = realloc(pl->items, (pl->n_items + 1) * sizeof(item_t));
    item_t *it = &pl->items[pl->n_items];
    if (asprintf(&it->ref, "%s-%s", kind, digest) < 0)
        it->ref = strdup(kind);
    it->status = status;
    it->offset = 0;
    it->total = total;
    pl->dirty = true;
    return pl->n_items++;
}

static void item_set(pull_t *pl, size_t i, const char *status, uint64_t offset)
{
    if (i >= pl->n_items)
        return;
    pl->items[i].status = status;
    pl->items[i].offset = offset;
    pl->dirty = true;
}

static void send_progress(pull_t *pl, bool force)
{
    if (!pl->req || pl->replied || (!pl->dirty && !force))
        return;
    if (berth_req_stream_credit(pl->req) == 0)
        return; /* keep only the latest state: send it when credit returns */
    msgpack_packer *pk = berth_req_stream_begin(pl->req);
    msgpack_pack_map(pk, 2);
    berth_mp_pack_str(pk, "items");
    msgpack_pack_array(pk, pl->n_items);
    for (size_t i = 0; i < pl->n_items; i++) {
        item_t *it = &pl->items[i];
        msgpack_pack_map(pk, 4);
        berth_mp_kv_str(pk, "ref", it->ref);
        berth_mp_kv_str(pk, "status", it->status);
        berth_mp_kv_u64(pk, "offset", it->offset);
        berth_mp_kv_u64(pk, "total", it->total);
    }
    berth_mp_kv_i64(pk, "elapsed_ns", (int64_t)(berth_mono_ms() - pl->t0) * 1000000);
    berth_req_stream_end_chunk(pl->req);
    pl->dirty = false;
}

static void prog_tick(uv_timer_t *t)
{
    send_progress(t->data, false);
}
static void prog_writable(berth_req_t *r)
{
    send_progress(berth_req_data(r), false);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void timer_free(uv_handle_t *h)
{
    free(h);
}

static void job_free(job_t *j)
{
    xfer_desc_clear(&j->desc);
    berth_error_free(&j->cfg_err);
    free(j->buf);
    free(j->owners);
    if (j->timer)
        uv_close((uv_handle_t *)j->timer, timer_free);
    free(j);
}

static void pl_free(pull_t *pl)
{
    free(pl->ns);
    xfer_ref_clear(&pl->ref);
    free(pl->name);
    free(pl->source_label);
    free(pl->rs_data);
    free(pl->rs_ct);
    free(pl->rs_dd);
    free(pl->img_target);
    xfer_reg_unref(pl->reg);
    free(pl->lease);
    xfer_desc_clear(&pl->root);
    for (size_t i = 0; i < pl->n_mans; i++) {
        pman_t *m = pl->mans[i];
        xfer_desc_clear(&m->desc);
        xfer_doc_clear(&m->doc);
        xfer_config_clear(&m->cfg);
        free(m->layers);
        free(m->top_chain);
        free(m);
    }
    free(pl->mans);
    for (size_t i = 0; i < pl->n_jobs; i++)
        job_free(pl->jobs[i]);
    free(pl->jobs);
    for (size_t i = 0; i < pl->n_items; i++)
        free(pl->items[i].ref);
    free(pl->items);
    berth_error_free(&pl->err);
    if (pl->img_zone)
        msgpack_zone_free(pl->img_zone);
    if (pl->prog_timer)
        uv_close((uv_handle_t *)pl->prog_timer, timer_free);
    free(pl);
}

static void fail(pull_t *pl, const berth_error_t *err)
{
    if (!pl->err)
        berth_error_set(&pl->err, err->code, "%s", err->message);
    if (pl->failed)
        return;
    pl->failed = true;
    berth_log(BERTH_LOG_INFO, "msg=\"pull failed\" ref=\"%s\" error=\"%s\"", pl->name,
              err->message);
    for (size_t i = 0; i < pl->n_jobs; i++) {
        job_t *j = pl->jobs[i];
        if (j->hq)
            xfer_rreq_cancel(j->hq);
        if (j->cfg_q)
            xfer_rreq_cancel(j->cfg_q);
        if (j->wc)
            berth_call_cancel(j->wc);
        if (j->timer && uv_is_active((uv_handle_t *)j->timer)) {
            uv_timer_stop(j->timer);
            pl->pending--;
        }
    }
    for (size_t i = 0; i < pl->n_mans; i++)
        if (pl->mans[i]->up)
            xfer_unpack_cancel(pl->mans[i]->up);
}

static void failf(pull_t *pl, berth_code_t code, const char *fmt, ...) BERTH_PRINTF(3, 4);
static void failf(pull_t *pl, berth_code_t code, const char *fmt, ...)
{
    berth_error_t e = {.code = code};
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&e.message, fmt, ap) < 0)
        e.message = NULL;
    va_end(ap);
    fail(pl, &e);
    free(e.message);
}

static void lease_deleted(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                          void *ud)
{
    pull_t *pl = ud;
    if (err)
        berth_log(BERTH_LOG_WARN, "msg=\"cannot delete pull lease\" lease=%s error=\"%s\"",
                  pl->lease, err->message);
    pl->pending--;
    pl_check(pl);
}

static void reply_and_free(pull_t *pl)
{
    if (pl->req && !pl->replied) {
        pl->replied = true;
        if (pl->err) {
            berth_req_fail(pl->req, &pl->err);
        } else {
            msgpack_packer *pk = berth_req_reply_begin(pl->req);
            msgpack_pack_map(pk, 1);
            berth_mp_pack_str(pk, "image");
            if (pl->img)
                msgpack_pack_object(pk, *pl->img);
            else
                msgpack_pack_nil(pk);
            berth_req_reply_end(pl->req);
        }
        pl->req = NULL;
    }
    pl_free(pl);
    xfer_release_memory();
}

static void end_pull(pull_t *pl)
{
    pl->phase = PH_END;
    if (pl->req && !pl->failed) {
        pl->dirty = true;
        send_progress(pl, true);
    }
    if (pl->lease) {
        berth_mpbuf_t b;
        xfer_params_begin(&b, 1, pl->ns, NULL);
        berth_mp_kv_str(&b.pk, "id", pl->lease);
        if (xfer_call("leases.delete", &b, lease_deleted, pl, NULL) == 0)
            pl->pending++;
        berth_mpbuf_destroy(&b);
        free(pl->lease);
        pl->lease = NULL;
    }
    pl_check(pl);
}

/* ---- image record --------------------------------------------------------- */

static void image_saved(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                        void *ud);
static void save_image(pull_t *pl);

static void pack_image(pull_t *pl, berth_mpbuf_t *b, bool update)
{
    xfer_params_begin(b, update ? 2 : 1, pl->ns, NULL);
    berth_mp_pack_str(&b->pk, "image");
    msgpack_pack_map(&b->pk, 2);
    berth_mp_kv_str(&b->pk, "name", pl->name);
    berth_mp_pack_str(&b->pk, "target");
    xfer_desc_t d = pl->root;
    d.has_platform = false;
    xfer_desc_pack(&b->pk, &d);
    if (update) {
        berth_mp_pack_str(&b->pk, "fields");
        msgpack_pack_array(&b->pk, 1);
        berth_mp_pack_str(&b->pk, "target");
    }
}

static void image_saved(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                        void *ud)
{
    pull_t *pl = ud;
    pl->pending--;
    if (err && err->code == BERTH_E_NOT_FOUND && pl->warm && !pl->failed) {
        /* Updated first because it was there; removed meanwhile: create. */
        pl->warm = false;
        save_image(pl);
        return;
    }
    if (err && err->code == BERTH_E_ALREADY_EXISTS && !pl->failed) {
        berth_mpbuf_t b;
        pack_image(pl, &b, true);
        berth_error_t *e = NULL;
        if (xfer_call("images.update", &b, image_saved, pl, &e) == 0)
            pl->pending++;
        else {
            fail(pl, e);
            berth_error_free(&e);
        }
        berth_mpbuf_destroy(&b);
        return;
    }
    if (err) {
        berth_error_t e = {.code = err->code};
        if (asprintf(&e.message, "record image %s: %s", pl->name, err->message) < 0)
            e.message = NULL;
        fail(pl, &e);
        free(e.message);
    } else {
        const msgpack_object *img = berth_mp_get(res, "image");
        if (img)
            pl->img = berth_mp_clone(img, &pl->img_zone);
    }
    end_pull(pl);
}

static void save_image(pull_t *pl)
{
    pl->phase = PH_IMAGE;
    /* Crash tests: every blob committed and every layer unpacked, the image
     * not recorded yet; `error` fails the pull here. */
    if (berth_failpoint("transfer.pull.before_image_create") < 0) {
        failf(pl, BERTH_E_INTERNAL,
              "failpoint transfer.pull.before_image_create: injected error before recording %s",
              pl->name);
        end_pull(pl);
        return;
    }
    berth_mpbuf_t b;
    /* An image that was there when the pull started is updated directly
     * (create would fail with already_exists first, a wasted round trip). */
    pack_image(pl, &b, pl->warm);
    berth_error_t *e = NULL;
    if (xfer_call(pl->warm ? "images.update" : "images.create", &b, image_saved, pl, &e) == 0) {
        pl->pending++;
    } else {
        fail(pl, e);
        berth_error_free(&e);
        end_pull(pl);
    }
    berth_mpbuf_destroy(&b);
}

static void pl_check(pull_t *pl)
{
    if (pl->pending > 0)
        return;
    if (pl->phase == PH_END) {
        reply_and_free(pl);
        return;
    }
    if (pl->failed) {
        end_pull(pl);
        return;
    }
    if (pl->phase != PH_WORK)
        return;
    for (size_t i = 0; i < pl->n_jobs; i++)
        if (pl->jobs[i]->st != J_DONE)
            return; /* pump() will start it */
    save_image(pl);
}

/* ---- jobs ------------------------------------------------------------------ */

static job_t *job_get(pull_t *pl, const xfer_desc_t *d, bool is_config, const char *kind)
{
    for (size_t i = 0; i < pl->n_jobs; i++)
        if (strcmp(pl->jobs[i]->desc.digest, d->digest) == 0 && pl->jobs[i]->is_config == is_config)
            return pl->jobs[i];
    job_t *j = calloc(1, sizeof(*j));
    j->pl = pl;
    xfer_desc_copy(&j->desc, d);
    j->is_config = is_config;
    j->item = item_add(pl, kind, d->digest, d->size, "waiting");
    pl->jobs = realloc(pl->jobs, (pl->n_jobs + 1) * sizeof(job_t *));
    pl->jobs[pl->n_jobs++] = j;
    return j;
}

static void job_add_owner(job_t *j, pman_t *m)
{
    for (size_t i = 0; i < j->n_owners; i++)
        if (j->owners[i] == m)
            return;
    j->owners = realloc(j->owners, (j->n_owners + 1) * sizeof(pman_t *));
    j->owners[j->n_owners++] = m;
}

static void layer_committed(pull_t *pl, job_t *j)
{
    for (size_t k = 0; k < j->n_owners; k++) {
        pman_t *m = j->owners[k];
        if (!m->up)
            continue;
        for (size_t i = 0; i < m->doc.n_layers; i++)
            if (m->layers[i] == j)
                xfer_unpack_layer_ready(m->up, i);
    }
}

static void job_finish(job_t *j, const berth_error_t *err)
{
    pull_t *pl = j->pl;
    if (j->st == J_DONE)
        return;
    j->st = J_DONE;
    pl->active--;
    if (err) {
        fail(pl, err);
        return;
    }
    j->committed = true;
    item_set(pl, j->item, j->existed ? "exists" : "done", j->desc.size);
    if (j->is_config)
        return;
    /* Crash tests (docs/security.md): a layer blob is committed under the
     * pull's lease, the image is not recorded; `error` fails the pull here. */
    if (berth_failpoint("transfer.pull.after_layer") < 0) {
        failf(pl, BERTH_E_INTERNAL, "failpoint transfer.pull.after_layer: injected error after %s",
              j->desc.digest);
        return;
    }
    layer_committed(pl, j);
}

/* -- streamed layer: HTTP body → content.write ------------------------------- */

static void stream_flush(job_t *j)
{
    /* Nothing goes to content before it said where to start. */
    if (!j->wc || j->closed || !j->got_off)
        return;
    while (j->blen > 0 && berth_call_stream_credit(j->wc) > 0) {
        size_t n = j->blen < CHUNK ? j->blen : CHUNK;
        berth_mp_pack_bin(berth_call_stream_begin(j->wc), j->buf, n);
        berth_call_stream_end_chunk(j->wc);
        memmove(j->buf, j->buf + n, j->blen - n);
        j->blen -= n;
    }
    if (j->http_done && j->blen == 0) {
        j->closed = true;
        berth_call_stream_close(j->wc);
    }
    if (j->paused && j->blen + CHUNK <= STAGE_CAP && j->hq) {
        j->paused = false;
        xfer_rreq_unpause(j->hq);
    }
}

static void wc_writable(berth_call_t *c, void *ud)
{
    stream_flush(ud);
}

static size_t hq_data(xfer_rreq_t *q, const char *p, size_t n, void *ud)
{
    job_t *j = ud;
    if (j->recv + n > j->desc.size) {
        berth_error_t *e = NULL;
        berth_error_set(&e, BERTH_E_FAILED_PRECONDITION,
                        "blob %s: the registry sent more than the %" PRIu64
                        " bytes of its descriptor",
                        j->desc.digest, j->desc.size);
        xfer_rreq_abort(q, &e);
        return 0;
    }
    if (j->blen + n > STAGE_CAP) {
        stream_flush(j);
        if (j->blen + n > STAGE_CAP) {
            j->paused = true;
            return CURL_WRITEFUNC_PAUSE;
        }
    }
    memcpy(j->buf + j->blen, p, n);
    j->blen += n;
    j->recv += n;
    item_set(j->pl, j->item, "downloading", j->recv);
    if (j->blen >= CHUNK)
        stream_flush(j);
    return n;
}

static uint64_t hq_resume(xfer_rreq_t *q, void *ud)
{
    job_t *j = ud;
    return j->recv;
}

static void start_http(job_t *j);

static void hq_done(xfer_rreq_t *q, const berth_error_t *err, void *ud)
{
    job_t *j = ud;
    pull_t *pl = j->pl;
    pl->pending--;
    if (q != j->hq) {
        /* An early GET we replaced (the ingest had an offset) or dropped. */
        pl_check(pl);
        return;
    }
    j->hq = NULL;
    if (err) {
        if (j->wc)
            berth_call_cancel(j->wc);
        fail(pl, err);
    } else if (j->recv < j->desc.size && !pl->failed) {
        /* The body ended early but cleanly (a short Content-Length): resume. */
        if (++j->refetches < xfer_ctx->settings.max_attempts) {
            berth_log(BERTH_LOG_INFO, "msg=\"short body, resuming\" digest=%s got=%" PRIu64,
                      j->desc.digest, j->recv);
            start_http(j);
        } else {
            berth_error_t e = {.code = BERTH_E_UNAVAILABLE};
            if (asprintf(&e.message,
                         "blob %s: the registry sent only %" PRIu64 " of %" PRIu64 " bytes",
                         j->desc.digest, j->recv, j->desc.size) < 0)
                e.message = NULL;
            if (j->wc)
                berth_call_cancel(j->wc);
            fail(pl, &e);
            free(e.message);
        }
    } else if (!pl->failed) {
        j->http_done = true;
        stream_flush(j);
    }
    pl_check(pl);
}

static void start_http(job_t *j)
{
    pull_t *pl = j->pl;
    char path[512];
    snprintf(path, sizeof(path), "/v2/%s/blobs/%s", xfer_reg_repo(pl->reg), j->desc.digest);
    char what[100];
    snprintf(what, sizeof(what), "blob %s", j->desc.digest);
    xfer_rreq_opts_t o = {.method = "GET", .path = path, .what = what};
    xfer_rreq_cbs_t cbs = {.on_data = hq_data, .resume_offset = hq_resume, .on_done = hq_done};
    berth_error_t *e = NULL;
    j->hq = xfer_rreq_start(pl->reg, &o, &cbs, j, &e);
    if (!j->hq) {
        if (j->wc)
            berth_call_cancel(j->wc);
        fail(pl, e);
        berth_error_free(&e);
        return;
    }
    pl->pending++;
}

static void wc_stream(berth_call_t *c, const msgpack_object *data, void *ud)
{
    job_t *j = ud;
    if (!data || j->got_off || data->type != MSGPACK_OBJECT_MAP)
        return;
    j->got_off = true;
    uint64_t off = 0;
    bool existed = false;
    berth_mp_get_u64(data, "offset", &off, NULL);
    berth_mp_get_bool(data, "existed", &existed, NULL);
    if (existed || j->pl->failed) {
        j->existed = existed;
        j->early = false;
        if (j->hq) {
            xfer_rreq_cancel(j->hq); /* the early GET is not needed */
            j->hq = NULL;
        }
        return;
    }
    if (off > j->desc.size)
        off = 0; /* cannot happen with an honest store: start over */
    j->resumed = off > 0;
    if (off == 0 && j->early) {
        /* The early GET from 0 is the right one (running or finished):
         * release what it buffered. */
        j->early = false;
        stream_flush(j);
        return;
    }
    if (j->early) {
        /* Resume from the ingest's offset instead: drop the early GET. */
        j->early = false;
        if (j->hq)
            xfer_rreq_cancel(j->hq);
        j->hq = NULL;
        j->blen = 0;
        j->paused = false;
        j->http_done = false;
    }
    j->recv = off;
    if (off == j->desc.size) {
        j->http_done = true;
        stream_flush(j);
        return;
    }
    item_set(j->pl, j->item, "downloading", off);
    start_http(j);
}

static void job_start(job_t *j);
static void start_layer(job_t *j);

static void lock_retry(uv_timer_t *t)
{
    job_t *j = t->data;
    j->pl->pending--;
    if (j->pl->failed) {
        pl_check(j->pl);
        return;
    }
    job_start(j);
}

static void wc_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    job_t *j = ud;
    pull_t *pl = j->pl;
    j->wc = NULL;
    pl->pending--;
    if (j->hq)
        xfer_rreq_cancel(j->hq); /* content answered early (error or existed) */
    if (err && !pl->failed && err->code == BERTH_E_FAILED_PRECONDITION &&
        strstr(err->message, "is locked")) {
        /* Another pull is writing the same blob: wait for it like containerd. */
        item_set(pl, j->item, "waiting", 0);
        if (!j->timer) {
            j->timer = malloc(sizeof(uv_timer_t));
            uv_timer_init(berth_plugin_loop(xfer_ctx->p), j->timer);
            j->timer->data = j;
        }
        j->got_off = j->http_done = j->closed = j->paused = false;
        j->blen = 0;
        uv_timer_start(j->timer, lock_retry, LOCK_RETRY_MS, 0);
        pl->pending++;
        return;
    }
    if (err && !pl->failed && j->resumed && !j->restarted &&
        err->code == BERTH_E_FAILED_PRECONDITION && strstr(err->message, "digest")) {
        /* We resumed an ingest whose earlier bytes were bad (a broken
         * registry or mirror): content dropped it; fetch it again from 0. */
        berth_log(BERTH_LOG_WARN, "msg=\"resumed blob failed verification, restarting\" digest=%s",
                  j->desc.digest);
        j->restarted = true;
        j->resumed = false;
        j->got_off = j->http_done = j->closed = j->paused = false;
        j->blen = 0;
        j->recv = 0;
        start_layer(j);
        pl_check(pl);
        return;
    }
    if (err) {
        berth_error_t e = {.code = err->code};
        if (asprintf(&e.message, "write blob %s: %s", j->desc.digest, err->message) < 0)
            e.message = NULL;
        job_finish(j, &e);
        free(e.message);
    } else if (pl->failed) {
        job_finish(j, pl->err);
    } else {
        if (!j->existed)
            berth_mp_get_bool(res, "existed", &j->existed, NULL);
        job_finish(j, NULL);
    }
    pump(pl);
    pl_check(pl);
}

static void start_layer(job_t *j)
{
    pull_t *pl = j->pl;
    if (!j->buf)
        j->buf = malloc(STAGE_CAP);
    char ref[100];
    snprintf(ref, sizeof(ref), "layer-%s", j->desc.digest);
    berth_mpbuf_t b;
    xfer_params_begin(&b, 4, pl->ns, pl->lease);
    berth_mp_kv_str(&b.pk, "ref", ref);
    berth_mp_kv_str(&b.pk, "expected", j->desc.digest);
    berth_mp_kv_u64(&b.pk, "total", j->desc.size);
    /* Where the blob came from, for cross-repository mounts on push. */
    berth_mp_pack_str(&b.pk, "labels");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, pl->source_label, pl->ref.path);
    berth_error_t *e = NULL;
    j->wc = berth_call(xfer_ctx->p, "content.write", b.buf.data, b.buf.size, 0, wc_done, wc_stream,
                       j, &e);
    berth_mpbuf_destroy(&b);
    if (!j->wc) {
        job_finish(j, e);
        berth_error_free(&e);
        return;
    }
    berth_call_set_writable_cb(j->wc, wc_writable);
    pl->pending++;
    /* On a cold pull, start the download while content opens the ingest (a
     * round trip with disk work); it is replaced if the ingest turns out to
     * have data. A warm pull asks content first. */
    if (!j->restarted && !pl->warm) {
        j->early = true;
        start_http(j);
    }
}

/* -- config: local copy or registry → parse → write with the snapshot label -- */

static void config_written(const berth_error_t *err, bool existed, void *ud)
{
    job_t *j = ud;
    pull_t *pl = j->pl;
    pl->pending--;
    j->existed = existed;
    if (err) {
        berth_error_t e = {.code = err->code};
        if (asprintf(&e.message, "write config %s: %s", j->desc.digest, err->message) < 0)
            e.message = NULL;
        job_finish(j, &e);
        free(e.message);
    } else {
        job_finish(j, NULL);
    }
    pump(pl);
    pl_check(pl);
}

static void unpack_progress(size_t layer, const char *status, void *ud)
{
    pman_t *m = ud;
    job_t *j = m->layers[layer];
    if (strcmp(status, "exists") == 0 && !j->committed)
        return;
    item_set(m->pl, j->item,
             strcmp(status, "exists") == 0 ? (j->existed ? "exists" : "done") : status,
             j->desc.size);
}

static void unpack_done(const berth_error_t *err, const char *chain, void *ud)
{
    pman_t *m = ud;
    pull_t *pl = m->pl;
    m->up = NULL;
    pl->pending--;
    if (err)
        fail(pl, err);
    pl_check(pl);
}

static void config_bytes(job_t *j, const char *data, size_t len)
{
    pull_t *pl = j->pl;
    char dg[72];
    xfer_sha256_digest(data, len, dg);
    if (len != j->desc.size || strcmp(dg, j->desc.digest) != 0) {
        berth_error_t e = {.code = BERTH_E_FAILED_PRECONDITION};
        if (asprintf(&e.message, "config %s: received %zu bytes with digest %s", j->desc.digest,
                     len, dg) < 0)
            e.message = NULL;
        job_finish(j, &e);
        free(e.message);
        return;
    }
    xfer_config_t cfg;
    berth_error_t *e = NULL;
    if (xfer_config_parse(data, len, &cfg, &e) < 0) {
        berth_error_wrap(&e, "config %s", j->desc.digest);
        job_finish(j, e);
        berth_error_free(&e);
        return;
    }
    char *labels[4] = {pl->source_label, pl->ref.path};
    size_t n_labels = 1;
    char *top = NULL;
    for (size_t k = 0; k < j->n_owners; k++) {
        pman_t *m = j->owners[k];
        if (m->have_cfg)
            continue;
        if (cfg.n_diff_ids != m->doc.n_layers) {
            berth_error_t e2 = {.code = BERTH_E_INVALID_ARGUMENT};
            if (asprintf(&e2.message,
                         "image %s: its config lists %zu diff ids but its manifest %zu layers",
                         pl->name, cfg.n_diff_ids, m->doc.n_layers) < 0)
                e2.message = NULL;
            xfer_config_clear(&cfg);
            job_finish(j, &e2);
            free(e2.message);
            return;
        }
        m->have_cfg = true;
        if (!m->unpack || m->doc.n_layers == 0)
            continue;
        m->up = xfer_unpack_new(pl->ns, pl->lease, m->doc.layers, cfg.diff_ids, cfg.n_diff_ids,
                                unpack_progress, unpack_done, m);
        pl->pending++;
        char **chain = NULL;
        xfer_chain_ids(cfg.diff_ids, cfg.n_diff_ids, &chain, NULL);
        m->top_chain = strdup(chain[cfg.n_diff_ids - 1]);
        xfer_strv_free(chain, cfg.n_diff_ids);
        top = m->top_chain;
        for (size_t i = 0; i < m->doc.n_layers; i++)
            if (m->layers[i]->committed)
                xfer_unpack_layer_ready(m->up, i);
        xfer_unpack_start(m->up);
    }
    xfer_config_clear(&cfg);
    if (top) {
        labels[2] = XFER_LABEL_REF_SNAPSHOT;
        labels[3] = top;
        n_labels = 2;
    }
    char ref[100];
    snprintf(ref, sizeof(ref), "config-%s", j->desc.digest);
    if (xfer_blob_write_mem(pl->ns, pl->lease, ref, j->desc.digest, data, len, labels, n_labels,
                            config_written, j, &e) < 0) {
        job_finish(j, e);
        berth_error_free(&e);
        return;
    }
    pl->pending++;
}

static void config_fetched(const berth_error_t *err, const char *data, size_t len, const char *ct,
                           const char *dd, void *ud)
{
    job_t *j = ud;
    pull_t *pl = j->pl;
    pl->pending--;
    j->cfg_q = NULL;
    if (j->cfg_got || j->st == J_DONE) {
        /* The local copy won (this GET was canceled) or the job ended. */
    } else if (pl->failed) {
        job_finish(j, pl->err);
    } else if (err && j->cfg_local_pending) {
        /* Maybe the local read still finds it. */
        berth_error_set(&j->cfg_err, err->code, "%s", err->message);
    } else if (err) {
        job_finish(j, err);
    } else {
        j->cfg_got = true;
        config_bytes(j, data, len);
    }
    pump(pl);
    pl_check(pl);
}

static int config_get_remote(job_t *j, berth_error_t **e)
{
    pull_t *pl = j->pl;
    char path[512], what[100];
    snprintf(path, sizeof(path), "/v2/%s/blobs/%s", xfer_reg_repo(pl->reg), j->desc.digest);
    snprintf(what, sizeof(what), "config %s", j->desc.digest);
    j->cfg_q =
        xfer_reg_get_mem(pl->reg, path, NULL, XFER_MAX_CONFIG, what, false, config_fetched, j, e);
    if (!j->cfg_q)
        return -1;
    pl->pending++;
    return 0;
}

static void config_local(const berth_error_t *err, const char *data, size_t len, void *ud)
{
    job_t *j = ud;
    pull_t *pl = j->pl;
    pl->pending--;
    j->cfg_local_pending = false;
    if (j->cfg_got || j->st == J_DONE) {
        pl_check(pl);
        return;
    }
    if (pl->failed) {
        job_finish(j, pl->err);
        pl_check(pl);
        return;
    }
    if (!err) {
        j->cfg_got = true;
        if (j->cfg_q)
            xfer_rreq_cancel(j->cfg_q); /* not needed after all */
        config_bytes(j, data, len);
    } else if (j->cfg_q) {
        /* The registry GET started with us is on its way. */
        item_set(pl, j->item, "downloading", 0);
    } else if (j->cfg_err) {
        berth_error_t *e = j->cfg_err;
        j->cfg_err = NULL;
        job_finish(j, e);
        berth_error_free(&e);
    } else {
        item_set(pl, j->item, "downloading", 0);
        berth_error_t *e = NULL;
        if (config_get_remote(j, &e) < 0) {
            job_finish(j, e);
            berth_error_free(&e);
        }
    }
    pump(pl);
    pl_check(pl);
}

static void job_start(job_t *j)
{
    pull_t *pl = j->pl;
    if (j->st == J_WAIT) {
        j->st = J_ACTIVE;
        pl->active++;
    }
    if (j->is_config) {
        berth_error_t *e = NULL;
        if (xfer_blob_read(pl->ns, j->desc.digest, XFER_MAX_CONFIG, config_local, j, &e) == 0) {
            pl->pending++;
            j->cfg_local_pending = true;
        } else {
            job_finish(j, e);
            berth_error_free(&e);
            return;
        }
        /* Cold pull: the config is on the critical path (it unlocks the
         * unpack), ask the registry at the same time as content. */
        if (!pl->warm && config_get_remote(j, &e) < 0)
            berth_error_free(&e); /* the local read's failure path retries */
        return;
    }
    start_layer(j);
}

static void pump(pull_t *pl)
{
    if (pl->failed || pl->phase != PH_WORK)
        return;
    /* Configs first: they unlock unpacking. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < pl->n_jobs && pl->active < pl->max_conc; i++) {
            job_t *j = pl->jobs[i];
            if (j->st == J_WAIT && j->is_config == (pass == 0))
                job_start(j);
        }
}

/* ---- documents: index → manifests → jobs ---------------------------------- */

static void doc_written(const berth_error_t *err, bool existed, void *ud)
{
    pull_t *pl = ud;
    pl->pending--;
    if (err)
        fail(pl, err);
    pl_check(pl);
}

static void write_doc(pull_t *pl, const char *kind, const xfer_desc_t *d, const char *data,
                      size_t len, char **labels, size_t n_labels, size_t item)
{
    char ref[100];
    snprintf(ref, sizeof(ref), "%s-%s", kind, d->digest);
    berth_error_t *e = NULL;
    if (xfer_blob_write_mem(pl->ns, pl->lease, ref, d->digest, data, len, labels, n_labels,
                            doc_written, pl, &e) < 0) {
        fail(pl, e);
        berth_error_free(&e);
        return;
    }
    pl->pending++;
    item_set(pl, item, "done", len);
}

static void process_doc(pull_t *pl, const xfer_desc_t *d, const char *data, size_t len, int depth,
                        bool unpack_this);

typedef struct {
    pull_t *pl;
    xfer_desc_t desc;
    int depth;
    bool unpack;
    size_t item;
} child_t;

static void child_bytes(child_t *ch, const berth_error_t *err, const char *data, size_t len)
{
    pull_t *pl = ch->pl;
    if (err) {
        fail(pl, err);
        return;
    }
    if (pl->failed)
        return;
    char dg[72];
    xfer_sha256_digest(data, len, dg);
    if (len != ch->desc.size || strcmp(dg, ch->desc.digest) != 0) {
        failf(pl, BERTH_E_FAILED_PRECONDITION,
              "manifest %s: received %zu bytes with digest %s (descriptor says %" PRIu64 " bytes)",
              ch->desc.digest, len, dg, ch->desc.size);
        return;
    }
    process_doc(pl, &ch->desc, data, len, ch->depth, ch->unpack);
}

static void child_remote(const berth_error_t *err, const char *data, size_t len, const char *ct,
                         const char *dd, void *ud)
{
    child_t *ch = ud;
    pull_t *pl = ch->pl;
    pl->pending--;
    child_bytes(ch, err, data, len);
    xfer_desc_clear(&ch->desc);
    free(ch);
    pump(pl);
    pl_check(pl);
}

static void child_local(const berth_error_t *err, const char *data, size_t len, void *ud)
{
    child_t *ch = ud;
    pull_t *pl = ch->pl;
    pl->pending--;
    if (err && !pl->failed) {
        char path[512], what[100];
        snprintf(path, sizeof(path), "/v2/%s/manifests/%s", xfer_reg_repo(pl->reg),
                 ch->desc.digest);
        snprintf(what, sizeof(what), "manifest %s", ch->desc.digest);
        berth_error_t *e = NULL;
        if (xfer_reg_get_mem(pl->reg, path, XFER_ACCEPT_MANIFESTS, XFER_MAX_MANIFEST, what, false,
                             child_remote, ch, &e)) {
            pl->pending++;
            return;
        }
        fail(pl, e);
        berth_error_free(&e);
    } else {
        child_bytes(ch, NULL, data, len);
    }
    xfer_desc_clear(&ch->desc);
    free(ch);
    pump(pl);
    pl_check(pl);
}

static void fetch_child(pull_t *pl, const xfer_desc_t *d, int depth, bool unpack)
{
    child_t *ch = calloc(1, sizeof(*ch));
    ch->pl = pl;
    xfer_desc_copy(&ch->desc, d);
    ch->depth = depth;
    ch->unpack = unpack;
    berth_error_t *e = NULL;
    if (xfer_blob_read(pl->ns, d->digest, XFER_MAX_MANIFEST, child_local, ch, &e) == 0) {
        pl->pending++;
        return;
    }
    fail(pl, e);
    berth_error_free(&e);
    xfer_desc_clear(&ch->desc);
    free(ch);
}

static void process_index(pull_t *pl, const xfer_desc_t *d, xfer_doc_t *doc, const char *data,
                          size_t len, int depth)
{
    if (depth >= XFER_MAX_INDEX_DEPTH) {
        failf(pl, BERTH_E_INVALID_ARGUMENT, "index %s: indexes nested deeper than %d", d->digest,
              XFER_MAX_INDEX_DEPTH);
        return;
    }
    size_t item = item_add(pl, "index", d->digest, d->size, "resolved");
    ssize_t best = xfer_index_select(doc, &pl->want);
    if (best < 0 && !pl->all_platforms) {
        char want[100], avail[512] = "";
        size_t off = 0;
        for (size_t i = 0; i < doc->n_manifests && off < sizeof(avail) - 40; i++) {
            char p[100];
            if (doc->manifests[i].has_platform)
                off += (size_t)snprintf(
                    avail + off, sizeof(avail) - off, "%s%s", off ? ", " : "",
                    xfer_platform_format(&doc->manifests[i].platform, p, sizeof(p)));
        }
        failf(pl, BERTH_E_NOT_FOUND, "%s has no image for platform %s (available: %s)", pl->name,
              xfer_platform_format(&pl->want, want, sizeof(want)), off ? avail : "none");
        return;
    }
    char **labels = calloc(2 * doc->n_manifests + 1, sizeof(char *));
    size_t nl = 0;
    for (size_t i = 0; i < doc->n_manifests; i++) {
        const xfer_desc_t *c = &doc->manifests[i];
        bool is_best = (ssize_t)i == best;
        if (!pl->all_platforms && !is_best)
            continue;
        if (!xfer_mt_is_manifest(c->media_type) && !xfer_mt_is_index(c->media_type))
            continue; /* attestations and other artifacts */
        /* BuildKit's attestation manifests say unknown/unknown: not images. */
        if (!is_best && c->has_platform && strcmp(c->platform.os, "unknown") == 0)
            continue;
        if (c->size > XFER_MAX_MANIFEST) {
            failf(pl, BERTH_E_RESOURCE_EXHAUSTED,
                  "manifest %s of %" PRIu64 " bytes is over the "
                  "limit of %u",
                  c->digest, c->size, XFER_MAX_MANIFEST);
            break;
        }
        char *k = NULL;
        if (asprintf(&k, XFER_LABEL_REF_MANIFEST "%zu", nl) < 0)
            break;
        labels[2 * nl] = k;
        labels[2 * nl + 1] = c->digest;
        nl++;
        /* With --all-platforms every Linux image is unpacked, as ctr does
         * (its layers are only files: running them needs the CPU, unpacking
         * does not); another OS's layers are fetched, not unpacked. */
        bool unpack_it = is_best || (c->has_platform && strcmp(c->platform.os, "linux") == 0);
        fetch_child(pl, c, depth + 1, unpack_it && pl->unpack);
    }
    if (!pl->failed)
        write_doc(pl, "index", d, data, len, labels, nl, item);
    for (size_t i = 0; i < nl; i++)
        free(labels[2 * i]);
    free(labels);
}

static void process_manifest(pull_t *pl, const xfer_desc_t *d, xfer_doc_t *doc, const char *data,
                             size_t len, bool unpack)
{
    pman_t *m = calloc(1, sizeof(*m));
    m->pl = pl;
    xfer_desc_copy(&m->desc, d);
    m->doc = *doc;
    memset(doc, 0, sizeof(*doc));
    m->unpack = unpack;
    pl->mans = realloc(pl->mans, (pl->n_mans + 1) * sizeof(pman_t *));
    pl->mans[pl->n_mans++] = m;
    size_t item = item_add(pl, "manifest", d->digest, d->size, "resolved");
    for (size_t i = 0; i < m->doc.n_layers; i++) {
        if (!xfer_mt_is_layer(m->doc.layers[i].media_type)) {
            failf(pl, BERTH_E_UNIMPLEMENTED, "layer %s has unsupported media type %s",
                  m->doc.layers[i].digest, m->doc.layers[i].media_type);
            return;
        }
    }
    m->config = job_get(pl, &m->doc.config, true, "config");
    job_add_owner(m->config, m);
    m->layers = calloc(m->doc.n_layers + 1, sizeof(job_t *));
    size_t nlab = 1 + m->doc.n_layers;
    char **labels = calloc(2 * nlab, sizeof(char *));
    labels[0] = strdup(XFER_LABEL_REF_CONFIG);
    labels[1] = m->doc.config.digest;
    for (size_t i = 0; i < m->doc.n_layers; i++) {
        m->layers[i] = job_get(pl, &m->doc.layers[i], false, "layer");
        job_add_owner(m->layers[i], m);
        if (asprintf(&labels[2 * (i + 1)], XFER_LABEL_REF_LAYER "%zu", i) < 0)
            labels[2 * (i + 1)] = NULL;
        labels[2 * (i + 1) + 1] = m->doc.layers[i].digest;
    }
    write_doc(pl, "manifest", d, data, len, labels, nlab, item);
    for (size_t i = 0; i < nlab; i++)
        free(labels[2 * i]);
    free(labels);
    pump(pl);
}

static void process_doc(pull_t *pl, const xfer_desc_t *d, const char *data, size_t len, int depth,
                        bool unpack_this)
{
    xfer_doc_t doc;
    berth_error_t *e = NULL;
    if (xfer_doc_parse(data, len, d->media_type, &doc, &e) < 0) {
        berth_error_wrap(&e, "%s %s", pl->name, d->digest);
        fail(pl, e);
        berth_error_free(&e);
        return;
    }
    xfer_desc_t dd = *d;
    dd.media_type = doc.media_type;
    if (doc.kind == XFER_DOC_INDEX)
        process_index(pl, &dd, &doc, data, len, depth);
    else
        process_manifest(pl, &dd, &doc, data, len, unpack_this);
    xfer_doc_clear(&doc);
}

/* ---- resolve --------------------------------------------------------------- */

/* Both the lease and the resolved manifest are needed before writing. */
static void process_root(pull_t *pl)
{
    if (!pl->lease || !pl->rs_data || !pl->img_checked || pl->rs_done || pl->failed)
        return;
    pl->rs_done = true;
    const char *data = pl->rs_data, *ct = pl->rs_ct, *dd = pl->rs_dd;
    size_t len = pl->rs_len;
    char dg[72];
    xfer_sha256_digest(data, len, dg);
    pl->warm = pl->img_target && strcmp(pl->img_target, dg) == 0;
    if (pl->ref.digest && strcmp(pl->ref.digest, dg) != 0) {
        failf(pl, BERTH_E_FAILED_PRECONDITION, "%s: the registry sent a manifest with digest %s",
              pl->name, dg);
        return;
    }
    if (dd && xfer_digest_valid(dd) && strcmp(dd, dg) != 0) {
        failf(pl, BERTH_E_FAILED_PRECONDITION,
              "%s: the registry says the manifest is %s but its bytes hash to %s", pl->name, dd,
              dg);
        return;
    }
    char mt[256] = "";
    if (ct)
        snprintf(mt, sizeof(mt), "%.*s", (int)strcspn(ct, "; "), ct);
    xfer_desc_t d = {.media_type = (xfer_mt_is_manifest(mt) || xfer_mt_is_index(mt)) ? mt : NULL,
                     .digest = dg,
                     .size = len};
    xfer_doc_t doc;
    berth_error_t *e = NULL;
    if (xfer_doc_parse(data, len, d.media_type, &doc, &e) < 0) {
        berth_error_wrap(&e, "%s", pl->name);
        fail(pl, e);
        berth_error_free(&e);
        return;
    }
    pl->root.media_type = strdup(doc.media_type);
    pl->root.digest = strdup(dg);
    pl->root.size = len;
    xfer_doc_clear(&doc);
    if (pl->n_items > 0)
        item_set(pl, 0, "resolved", 0);
    berth_log(BERTH_LOG_INFO, "msg=\"resolved\" ref=\"%s\" digest=%s type=%s", pl->name, dg,
              pl->root.media_type);
    process_doc(pl, &pl->root, data, len, 0, pl->unpack);
}

static void resolved(const berth_error_t *err, const char *data, size_t len, const char *ct,
                     const char *dd, void *ud)
{
    pull_t *pl = ud;
    pl->pending--;
    if (err) {
        fail(pl, err);
    } else if (!pl->failed) {
        pl->rs_data = malloc(len + 1);
        memcpy(pl->rs_data, data, len);
        pl->rs_len = len;
        pl->rs_ct = ct ? strdup(ct) : NULL;
        pl->rs_dd = dd ? strdup(dd) : NULL;
        process_root(pl);
    }
    pump(pl);
    pl_check(pl);
}

static void lease_created(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                          void *ud)
{
    pull_t *pl = ud;
    pl->pending--;
    pl->phase = PH_WORK;
    if (err) {
        berth_error_t e = {.code = err->code};
        if (asprintf(&e.message, "create a lease for the pull: %s", err->message) < 0)
            e.message = NULL;
        fail(pl, &e);
        free(e.message);
        pl_check(pl);
        return;
    }
    const msgpack_object *lease = berth_mp_get(res, "lease");
    const msgpack_object *id = berth_mp_get(lease, "id");
    pl->lease = berth_mp_strdup(id);
    if (!pl->lease)
        failf(pl, BERTH_E_INTERNAL, "leases.create answered without an id");
    process_root(pl);
    pump(pl);
    pl_check(pl);
}

static void image_checked(const berth_error_t *err, const msgpack_object *image,
                          const xfer_desc_t *target, void *ud)
{
    pull_t *pl = ud;
    pl->pending--;
    pl->img_checked = true;
    if (!err && target && target->digest)
        pl->img_target = strdup(target->digest);
    process_root(pl);
    pump(pl);
    pl_check(pl);
}

static void start_resolve(pull_t *pl)
{
    char path[600], what[300];
    snprintf(path, sizeof(path), "/v2/%s/manifests/%s", pl->ref.path,
             pl->ref.digest ? pl->ref.digest : pl->ref.tag);
    snprintf(what, sizeof(what), "manifest %s", pl->ref.digest ? pl->ref.digest : pl->ref.tag);
    pl->items = realloc(pl->items, (pl->n_items + 1) * sizeof(item_t));
    pl->items[pl->n_items++] = (item_t){.ref = strdup(pl->name), .status = "resolving"};
    pl->dirty = true;
    berth_error_t *e = NULL;
    if (xfer_reg_get_mem(pl->reg, path, XFER_ACCEPT_MANIFESTS, XFER_MAX_MANIFEST, what, false,
                         resolved, pl, &e))
        pl->pending++;
    else {
        fail(pl, e);
        berth_error_free(&e);
    }
}

static void pull_cancel(berth_req_t *r)
{
    pull_t *pl = berth_req_data(r);
    if (pl) {
        failf(pl, BERTH_E_CANCELED, "pull of %s canceled", pl->name);
        pl_check(pl);
    }
}

static void start_pull(berth_req_t *r, const msgpack_object *params, bool unpack_default)
{
    berth_error_t *err = NULL;
    char *ref = NULL, *platform = NULL, *user = NULL, *password = NULL;
    bool all = false, plain = false, skip = false, unpack = unpack_default;
    uint64_t maxc = 0;
    if (berth_mp_get_strdup(params, "ref", &ref, &err) < 0 ||
        berth_mp_get_strdup(params, "platform", &platform, &err) < 0 ||
        berth_mp_get_strdup(params, "user", &user, &err) < 0 ||
        berth_mp_get_strdup(params, "password", &password, &err) < 0 ||
        berth_mp_get_bool(params, "all_platforms", &all, &err) < 0 ||
        berth_mp_get_bool(params, "plain_http", &plain, &err) < 0 ||
        berth_mp_get_bool(params, "skip_verify", &skip, &err) < 0 ||
        berth_mp_get_bool(params, "unpack", &unpack, &err) < 0 ||
        berth_mp_get_u64(params, "max_concurrent", &maxc, &err) < 0)
        goto bad;
    if (!ref) {
        berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "images.pull needs a ref");
        goto bad;
    }
    pull_t *pl = calloc(1, sizeof(*pl));
    if (xfer_ref_parse(ref, &pl->ref, &err) < 0) {
        free(pl);
        goto bad;
    }
    pl->req = r;
    pl->ns = strdup(berth_req_namespace(r));
    pl->name = xfer_ref_name(&pl->ref);
    if (asprintf(&pl->source_label, "berth.io/distribution.source.%s", pl->ref.domain) < 0)
        pl->source_label = NULL;
    pl->all_platforms = all;
    pl->unpack = unpack;
    pl->t0 = berth_mono_ms();
    pl->max_conc =
        maxc ? (unsigned)(maxc > 64 ? 64 : maxc) : xfer_ctx->settings.max_concurrent_downloads;
    pl->want = xfer_ctx->host;
    if (platform) {
        if (xfer_platform_parse(platform, &pl->want, &err) < 0) {
            pl_free(pl);
            goto bad;
        }
        pl->platform_given = true;
    }
    char *repo_path = pl->ref.path;
    pl->reg = xfer_reg_new(xfer_ctx->http, &xfer_ctx->settings, pl->ref.domain, repo_path,
                           XFER_CAP_PULL | XFER_CAP_RESOLVE, plain, skip, user, password, &err);
    if (password) {
        explicit_bzero(password, strlen(password));
        free(password);
        password = NULL;
    }
    if (!pl->reg) {
        pl_free(pl);
        goto bad;
    }
    berth_req_set_data(r, pl);
    berth_req_set_cancel_cb(r, pull_cancel);
    berth_req_set_writable_cb(r, prog_writable);
    pl->prog_timer = malloc(sizeof(uv_timer_t));
    uv_timer_init(berth_plugin_loop(xfer_ctx->p), pl->prog_timer);
    pl->prog_timer->data = pl;
    uv_timer_start(pl->prog_timer, prog_tick, PROGRESS_MS, PROGRESS_MS);
    berth_log(BERTH_LOG_INFO, "msg=\"pull\" ref=\"%s\" ns=%s unpack=%s", pl->name, pl->ns,
              unpack ? "true" : "false");

    /* The lease keeps everything we write until the image record holds it. */
    berth_mpbuf_t b;
    xfer_params_begin(&b, 2, pl->ns, NULL);
    berth_mp_kv_i64(&b.pk, "expire", berth_now_ns() + 24LL * 3600 * 1000000000LL);
    berth_mp_pack_str(&b.pk, "labels");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "berth.io/transfer", pl->name);
    if (xfer_call("leases.create", &b, lease_created, pl, &err) == 0) {
        pl->pending++;
        /* Meanwhile: is this image here already (a read), and resolve
         * (nothing is written before the lease exists). */
        if (xfer_image_get(pl->ns, pl->name, image_checked, pl, NULL) == 0)
            pl->pending++;
        else
            pl->img_checked = true;
        start_resolve(pl);
    } else {
        fail(pl, err);
        berth_error_free(&err);
        pl->phase = PH_WORK;
        pl_check(pl);
    }
    berth_mpbuf_destroy(&b);
    free(ref);
    free(platform);
    free(user);
    return;
bad:
    free(ref);
    free(platform);
    free(user);
    if (password) {
        explicit_bzero(password, strlen(password));
        free(password);
    }
    berth_req_fail(r, &err);
}

void xfer_handle_pull(berth_req_t *r, const msgpack_object *params)
{
    start_pull(r, params, true);
}
void xfer_handle_fetch(berth_req_t *r, const msgpack_object *params)
{
    start_pull(r, params, false);
}
