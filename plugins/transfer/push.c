/* SPDX-License-Identifier: Apache-2.0 */
/* images.push: upload the blobs of a local image that the registry lacks
 * (HEAD check, cross-repo mount from the repository a blob was pulled from
 * on the same registry, else POST + monolithic PUT ?digest= from the content
 * file), then the platform manifests and the index (or the manifest) by tag.
 * The content files are read by path under a lease that holds the image's
 * blobs for the duration of the push (content.path requires it; the gc
 * keeps them even if the image is removed meanwhile). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "berth/log.h"
#include "local.h"

typedef struct push_s push_t;

typedef struct {
    push_t *ps;
    xfer_desc_t desc;
    int state; /* 0 waiting, 1 active, 2 done */
    size_t item;
    char *mount_from;
    char *path;
    char *location;
} pblob_t;

struct push_s {
    berth_req_t *req;
    char *ns;
    xfer_ref_t ref;
    char *name, *local;
    bool has_want;
    xfer_platform_t want;
    bool plain, skip;
    char *user, *password;
    char *lease; /* holds the blobs read by path; deleted before the reply */
    xfer_reg_t *reg;
    xfer_limage_t *img;
    pblob_t **blobs;
    size_t n_blobs;
    unsigned active, max;
    int pending;
    bool failed, manifests_started, replied;
    berth_error_t *err;
    size_t next_doc; /* manifests are pushed one by one, the root last */
    char *source_label;
    uint64_t t0;
    struct {
        char *ref;
        const char *status;
        uint64_t offset, total;
    } * items;
    size_t n_items;
};

static void ps_check(push_t *ps);
static void ps_pump(push_t *ps);

static size_t item_add(push_t *ps, const char *kind, const char *digest, uint64_t total)
{
    ps->items = realloc(ps->items, (ps->n_items + 1) * sizeof(*ps->items));
    if (asprintf(&ps->items[ps->n_items].ref, "%s-%s", kind, digest) < 0)
        ps->items[ps->n_items].ref = strdup(kind);
    ps->items[ps->n_items].status = "waiting";
    ps->items[ps->n_items].offset = 0;
    ps->items[ps->n_items].total = total;
    return ps->n_items++;
}

static void progress(push_t *ps, size_t i, const char *status)
{
    if (i < ps->n_items) {
        ps->items[i].status = status;
        if (strcmp(status, "done") == 0 || strcmp(status, "exists") == 0)
            ps->items[i].offset = ps->items[i].total;
    }
    if (!ps->req || ps->replied || berth_req_stream_credit(ps->req) == 0)
        return;
    msgpack_packer *pk = berth_req_stream_begin(ps->req);
    msgpack_pack_map(pk, 2);
    berth_mp_pack_str(pk, "items");
    msgpack_pack_array(pk, ps->n_items);
    for (size_t k = 0; k < ps->n_items; k++) {
        msgpack_pack_map(pk, 4);
        berth_mp_kv_str(pk, "ref", ps->items[k].ref);
        berth_mp_kv_str(pk, "status", ps->items[k].status);
        berth_mp_kv_u64(pk, "offset", ps->items[k].offset);
        berth_mp_kv_u64(pk, "total", ps->items[k].total);
    }
    berth_mp_kv_i64(pk, "elapsed_ns", (int64_t)(berth_mono_ms() - ps->t0) * 1000000);
    berth_req_stream_end_chunk(ps->req);
}

static void ps_free(push_t *ps)
{
    free(ps->ns);
    xfer_ref_clear(&ps->ref);
    free(ps->name);
    free(ps->local);
    free(ps->user);
    free(ps->lease);
    if (ps->password) {
        explicit_bzero(ps->password, strlen(ps->password));
        free(ps->password);
    }
    xfer_reg_unref(ps->reg);
    xfer_limage_free(ps->img);
    for (size_t i = 0; i < ps->n_blobs; i++) {
        xfer_desc_clear(&ps->blobs[i]->desc);
        free(ps->blobs[i]->mount_from);
        free(ps->blobs[i]->path);
        free(ps->blobs[i]->location);
        free(ps->blobs[i]);
    }
    free(ps->blobs);
    for (size_t i = 0; i < ps->n_items; i++)
        free(ps->items[i].ref);
    free(ps->items);
    free(ps->source_label);
    berth_error_free(&ps->err);
    free(ps);
    xfer_release_memory();
}

static void ps_fail(push_t *ps, berth_code_t code, const char *fmt, ...) BERTH_PRINTF(3, 4);
static void ps_fail(push_t *ps, berth_code_t code, const char *fmt, ...)
{
    ps->failed = true;
    if (ps->err)
        return;
    ps->err = calloc(1, sizeof(*ps->err));
    ps->err->code = code;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&ps->err->message, fmt, ap) < 0)
        ps->err->message = NULL;
    va_end(ap);
}

static void ps_reply(push_t *ps);

static void ps_lease_deleted(void *ud)
{
    ps_reply(ud);
}

static void ps_reply(push_t *ps)
{
    if (ps->lease) {
        /* The blobs are no longer read: let the gc have them again. */
        ps->replied = true; /* no progress chunks meanwhile */
        char *lease = ps->lease;
        ps->lease = NULL;
        xfer_lease_delete(ps->ns, lease, ps_lease_deleted, ps);
        free(lease);
        return;
    }
    ps->replied = true;
    if (ps->err) {
        berth_req_fail(ps->req, &ps->err);
    } else {
        msgpack_packer *pk = berth_req_reply_begin(ps->req);
        msgpack_pack_map(pk, 2);
        berth_mp_kv_str(pk, "name", ps->name);
        berth_mp_kv_str(pk, "digest", ps->img->target.digest);
        berth_req_reply_end(ps->req);
    }
    ps_free(ps);
}

/* ---- manifests ---------------------------------------------------------------- */

static void push_next_doc(push_t *ps);

static void doc_put(xfer_rreq_t *q, const berth_error_t *err, void *ud)
{
    push_t *ps = ud;
    ps->pending--;
    if (err)
        ps_fail(ps, err->code, "%s", err->message);
    else
        push_next_doc(ps);
    ps_check(ps);
}

/* Docs were read children-first? No: target first, then children. Push in
 * reverse so that an index only goes up after its manifests. */
static void push_next_doc(push_t *ps)
{
    if (ps->failed)
        return;
    if (ps->next_doc >= ps->img->n_docs)
        return;
    size_t k = ps->img->n_docs - 1 - ps->next_doc++;
    xfer_ldoc_t *d = &ps->img->docs[k];
    bool root = k == 0;
    char path[600], what[200];
    snprintf(path, sizeof(path), "/v2/%s/manifests/%s", ps->ref.path,
             root && ps->ref.tag ? ps->ref.tag : d->desc.digest);
    snprintf(what, sizeof(what), "manifest %s", d->desc.digest);
    xfer_rreq_opts_t o = {.method = "PUT",
                          .path = path,
                          .content_type = d->desc.media_type,
                          .body = d->bytes,
                          .body_len = d->len,
                          .what = what,
                          .no_fallback = true};
    xfer_rreq_cbs_t cbs = {.on_done = doc_put};
    berth_error_t *e = NULL;
    if (xfer_rreq_start(ps->reg, &o, &cbs, ps, &e))
        ps->pending++;
    else {
        ps_fail(ps, e->code, "%s", e->message);
        berth_error_free(&e);
    }
}

static void ps_check(push_t *ps)
{
    if (ps->pending > 0)
        return;
    if (ps->failed) {
        ps_reply(ps);
        return;
    }
    for (size_t i = 0; i < ps->n_blobs; i++)
        if (ps->blobs[i]->state != 2)
            return;
    if (!ps->manifests_started) {
        ps->manifests_started = true;
        push_next_doc(ps);
        ps_check(ps);
        return;
    }
    if (ps->next_doc >= ps->img->n_docs) {
        for (size_t i = 0; i < ps->n_items; i++)
            ps->items[i].status = "done";
        progress(ps, SIZE_MAX, "done");
        ps_reply(ps);
    }
}

/* ---- blobs ------------------------------------------------------------------- */

static void blob_done(pblob_t *b, const berth_error_t *err, const char *status)
{
    push_t *ps = b->ps;
    b->state = 2;
    ps->active--;
    if (err)
        ps_fail(ps, err->code, "%s", err->message);
    else
        progress(ps, b->item, status);
    ps_pump(ps);
}

static void put_done(xfer_rreq_t *q, const berth_error_t *err, void *ud)
{
    pblob_t *b = ud;
    b->ps->pending--;
    blob_done(b, err, "done");
    ps_check(b->ps);
}

static void start_put(pblob_t *b)
{
    push_t *ps = b->ps;
    char *url = NULL;
    if (asprintf(&url, "%s%sdigest=%s", b->location, strchr(b->location, '?') ? "&" : "?",
                 b->desc.digest) < 0)
        url = NULL;
    char what[100];
    snprintf(what, sizeof(what), "upload of blob %s", b->desc.digest);
    xfer_rreq_opts_t o = {.method = "PUT",
                          .url = url,
                          .content_type = "application/octet-stream",
                          .upload_path = b->path,
                          .upload_size = b->desc.size,
                          .what = what};
    xfer_rreq_cbs_t cbs = {.on_done = put_done};
    berth_error_t *e = NULL;
    progress(ps, b->item, "uploading");
    if (xfer_rreq_start(ps->reg, &o, &cbs, b, &e))
        ps->pending++;
    else {
        blob_done(b, e, NULL);
        berth_error_free(&e);
    }
    free(url);
}

static void got_path(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    pblob_t *b = ud;
    push_t *ps = b->ps;
    ps->pending--;
    if (err) {
        berth_error_t e = {.code = err->code};
        if (asprintf(&e.message, "blob %s of %s is not available locally: %s", b->desc.digest,
                     ps->local, err->message) < 0)
            e.message = NULL;
        blob_done(b, &e, NULL);
        free(e.message);
    } else if (!ps->failed) {
        b->path = berth_mp_strdup(berth_mp_get(res, "path"));
        start_put(b);
    } else {
        blob_done(b, ps->err, NULL);
    }
    ps_check(ps);
}

static void post_done(xfer_rreq_t *q, const berth_error_t *err, void *ud)
{
    pblob_t *b = ud;
    push_t *ps = b->ps;
    ps->pending--;
    long st = xfer_rreq_status(q);
    const char *loc = xfer_rreq_header(q, "location");
    if (err) {
        blob_done(b, err, NULL);
    } else if (st == 201 && b->mount_from) {
        blob_done(b, NULL, "mounted");
    } else if (!loc) {
        berth_error_t e = {.code = BERTH_E_UNAVAILABLE,
                           .message = "registry gave no upload location"};
        blob_done(b, &e, NULL);
    } else {
        b->location = xfer_url_resolve(xfer_rreq_url(q), loc);
        berth_mpbuf_t pb;
        xfer_params_begin(&pb, 1, ps->ns, ps->lease);
        berth_mp_kv_str(&pb.pk, "digest", b->desc.digest);
        berth_error_t *e = NULL;
        if (xfer_call("content.path", &pb, got_path, b, &e) == 0)
            ps->pending++;
        else {
            blob_done(b, e, NULL);
            berth_error_free(&e);
        }
        berth_mpbuf_destroy(&pb);
    }
    ps_check(ps);
}

static void start_post(pblob_t *b)
{
    push_t *ps = b->ps;
    char path[800];
    if (b->mount_from) {
        char *f = xfer_url_escape(b->mount_from);
        snprintf(path, sizeof(path), "/v2/%s/blobs/uploads/?mount=%s&from=%s", ps->ref.path,
                 b->desc.digest, f);
        free(f);
    } else {
        snprintf(path, sizeof(path), "/v2/%s/blobs/uploads/", ps->ref.path);
    }
    xfer_rreq_opts_t o = {
        .method = "POST", .path = path, .what = "start upload", .no_fallback = true};
    xfer_rreq_cbs_t cbs = {.on_done = post_done};
    berth_error_t *e = NULL;
    if (xfer_rreq_start(ps->reg, &o, &cbs, b, &e))
        ps->pending++;
    else {
        blob_done(b, e, NULL);
        berth_error_free(&e);
    }
}

static void got_info(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    pblob_t *b = ud;
    push_t *ps = b->ps;
    ps->pending--;
    if (!err && ps->source_label) {
        const msgpack_object *labels = berth_mp_get(berth_mp_get(res, "info"), "labels");
        char *from = berth_mp_strdup(berth_mp_get(labels, ps->source_label));
        if (from && strcmp(from, ps->ref.path) != 0) {
            b->mount_from = from;
            char *scope = NULL;
            if (asprintf(&scope, "repository:%s:pull", from) >= 0) {
                xfer_reg_add_scope(ps->reg, scope);
                free(scope);
            }
        } else {
            free(from);
        }
    }
    if (ps->failed)
        blob_done(b, ps->err, NULL);
    else
        start_post(b);
    ps_check(ps);
}

static void head_done(xfer_rreq_t *q, const berth_error_t *err, void *ud)
{
    pblob_t *b = ud;
    push_t *ps = b->ps;
    ps->pending--;
    if (!err) {
        blob_done(b, NULL, "exists");
    } else if (err->code != BERTH_E_NOT_FOUND) {
        blob_done(b, err, NULL);
    } else if (!ps->failed) {
        progress(ps, b->item, "uploading");
        berth_mpbuf_t pb;
        xfer_params_begin(&pb, 1, ps->ns, NULL);
        berth_mp_kv_str(&pb.pk, "digest", b->desc.digest);
        berth_error_t *e = NULL;
        if (xfer_call("content.info", &pb, got_info, b, &e) == 0)
            ps->pending++;
        else {
            blob_done(b, e, NULL);
            berth_error_free(&e);
        }
        berth_mpbuf_destroy(&pb);
    } else {
        blob_done(b, ps->err, NULL);
    }
    ps_check(ps);
}

static void blob_start(pblob_t *b)
{
    push_t *ps = b->ps;
    b->state = 1;
    ps->active++;
    char path[600], what[100];
    snprintf(path, sizeof(path), "/v2/%s/blobs/%s", ps->ref.path, b->desc.digest);
    snprintf(what, sizeof(what), "blob %s", b->desc.digest);
    xfer_rreq_opts_t o = {.method = "HEAD", .path = path, .what = what, .no_fallback = true};
    xfer_rreq_cbs_t cbs = {.on_done = head_done};
    berth_error_t *e = NULL;
    if (xfer_rreq_start(ps->reg, &o, &cbs, b, &e))
        ps->pending++;
    else {
        blob_done(b, e, NULL);
        berth_error_free(&e);
    }
}

static void ps_pump(push_t *ps)
{
    for (size_t i = 0; i < ps->n_blobs && ps->active < ps->max && !ps->failed; i++)
        if (ps->blobs[i]->state == 0)
            blob_start(ps->blobs[i]);
}

static void add_blob(push_t *ps, const xfer_desc_t *d, const char *kind)
{
    for (size_t i = 0; i < ps->n_blobs; i++)
        if (strcmp(ps->blobs[i]->desc.digest, d->digest) == 0)
            return;
    pblob_t *b = calloc(1, sizeof(*b));
    b->ps = ps;
    xfer_desc_copy(&b->desc, d);
    b->item = item_add(ps, kind, d->digest, d->size);
    ps->blobs = realloc(ps->blobs, (ps->n_blobs + 1) * sizeof(pblob_t *));
    ps->blobs[ps->n_blobs++] = b;
}

static void ps_loaded(const berth_error_t *err, xfer_limage_t *img, void *ud);

static void ps_held(const berth_error_t *err, void *ud)
{
    push_t *ps = ud;
    ps->pending--;
    if (err)
        ps_fail(ps, err->code, "push: hold the blobs to read: %s", err->message);
    else
        ps_pump(ps);
    ps_check(ps);
}

static void ps_lease_created(const berth_error_t *err, char *lease, void *ud)
{
    push_t *ps = ud;
    ps->lease = lease;
    if (err) {
        ps->pending--;
        ps_fail(ps, err->code, "push: create a lease to read the blobs: %s", err->message);
        ps_check(ps);
        return;
    }
    char **digests = calloc(ps->n_blobs ? ps->n_blobs : 1, sizeof(char *));
    for (size_t i = 0; digests && i < ps->n_blobs; i++)
        digests[i] = ps->blobs[i]->desc.digest;
    berth_error_t *e = NULL;
    int rc = digests ? xfer_lease_add_blobs(ps->ns, lease, digests, ps->n_blobs, ps_held, ps, &e)
                     : berth_error_set(&e, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    free(digests);
    if (rc == 0)
        return;
    ps->pending--;
    if (rc < 0)
        ps_fail(ps, e->code, "push: hold the blobs to read: %s", e->message);
    else
        ps_pump(ps);
    berth_error_free(&e);
    ps_check(ps);
}

static void ps_loaded(const berth_error_t *err, xfer_limage_t *img, void *ud)
{
    push_t *ps = ud;
    if (err) {
        ps_fail(ps, err->code, "%s", err->message);
        ps_reply(ps);
        return;
    }
    if (img->missing_docs > 0 && !ps->has_want) {
        /* A single-platform pull of a multi-platform image: push what we have
         * for the host platform, as the tag's manifest. */
        berth_log(BERTH_LOG_INFO,
                  "msg=\"index incomplete locally, pushing the host platform\" "
                  "image=\"%s\"",
                  ps->local);
        xfer_desc_t t;
        xfer_desc_copy(&t, &img->target);
        xfer_limage_free(img);
        ps->has_want = true;
        ps->want = xfer_ctx->host;
        berth_error_t *e = NULL;
        if (xfer_limage_load(ps->ns, ps->local, &t, &ps->want, false, false, ps_loaded, ps, &e) <
            0) {
            ps_fail(ps, e->code, "%s", e->message);
            berth_error_free(&e);
            ps_reply(ps);
        }
        xfer_desc_clear(&t);
        return;
    }
    if (ps->has_want && img->docs[0].is_index) {
        /* Only the platform's manifest goes up, under the tag. */
        size_t keep = 0;
        for (size_t i = 0; i < img->n_docs; i++)
            if (!img->docs[i].is_index)
                keep = i;
        xfer_ldoc_t d = img->docs[keep];
        for (size_t i = 0; i < img->n_docs; i++)
            if (i != keep) {
                xfer_desc_clear(&img->docs[i].desc);
                free(img->docs[i].bytes);
            }
        img->docs[0] = d;
        img->n_docs = 1;
        xfer_desc_clear(&img->target);
        xfer_desc_copy(&img->target, &d.desc);
    }
    ps->img = img;
    for (size_t i = 0; i < img->n_docs; i++)
        item_add(ps, img->docs[i].is_index ? "index" : "manifest", img->docs[i].desc.digest,
                 img->docs[i].desc.size);
    for (size_t k = 0; k < img->n_mans; k++) {
        add_blob(ps, &img->mans[k].doc.config, "config");
        for (size_t l = 0; l < img->mans[k].doc.n_layers; l++)
            add_blob(ps, &img->mans[k].doc.layers[l], "layer");
    }
    /* A lease that holds every blob the push may read, before any HEAD. */
    berth_error_t *e = NULL;
    if (xfer_lease_create(ps->ns, XFER_READ_LEASE_TTL_NS, ps_lease_created, ps, &e) < 0) {
        ps_fail(ps, e->code, "push: create a lease to read the blobs: %s", e->message);
        berth_error_free(&e);
        ps_reply(ps);
        return;
    }
    ps->pending++;
}

static void ps_got(const berth_error_t *err, const msgpack_object *image, const xfer_desc_t *target,
                   void *ud)
{
    push_t *ps = ud;
    berth_error_t *e = NULL;
    if (err) {
        ps_fail(ps, err->code, "%s", err->message);
        ps_reply(ps);
        return;
    }
    if (xfer_limage_load(ps->ns, ps->local, target, ps->has_want ? &ps->want : NULL, false,
                         !ps->has_want, ps_loaded, ps, &e) < 0) {
        ps_fail(ps, e->code, "%s", e->message);
        berth_error_free(&e);
        ps_reply(ps);
    }
}

void xfer_handle_push(berth_req_t *r, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    char *ref = NULL, *local = NULL, *platform = NULL;
    push_t *ps = calloc(1, sizeof(*ps));
    ps->req = r;
    ps->t0 = berth_mono_ms();
    if (berth_mp_get_strdup(params, "ref", &ref, &err) < 0 ||
        berth_mp_get_strdup(params, "local", &local, &err) < 0 ||
        berth_mp_get_strdup(params, "platform", &platform, &err) < 0 ||
        berth_mp_get_strdup(params, "user", &ps->user, &err) < 0 ||
        berth_mp_get_strdup(params, "password", &ps->password, &err) < 0 ||
        berth_mp_get_bool(params, "plain_http", &ps->plain, &err) < 0 ||
        berth_mp_get_bool(params, "skip_verify", &ps->skip, &err) < 0)
        goto bad;
    if (!ref) {
        berth_error_set(&err, BERTH_E_INVALID_ARGUMENT, "images.push needs a ref");
        goto bad;
    }
    if (xfer_ref_parse(ref, &ps->ref, &err) < 0)
        goto bad;
    if (!ps->ref.tag && ps->ref.digest) {
        /* Push by digest: manifests go up by digest only. */
    }
    ps->name = xfer_ref_name(&ps->ref);
    if (local) {
        xfer_ref_t lr;
        if (xfer_ref_parse(local, &lr, NULL) == 0) {
            ps->local = xfer_ref_name(&lr);
            xfer_ref_clear(&lr);
        } else {
            ps->local = strdup(local);
        }
    } else {
        ps->local = strdup(ps->name);
    }
    if (platform) {
        if (xfer_platform_parse(platform, &ps->want, &err) < 0)
            goto bad;
        ps->has_want = true;
    }
    ps->ns = strdup(berth_req_namespace(r));
    ps->max = xfer_ctx->settings.max_concurrent_uploads;
    if (asprintf(&ps->source_label, "berth.io/distribution.source.%s", ps->ref.domain) < 0)
        ps->source_label = NULL;
    ps->reg = xfer_reg_new(xfer_ctx->http, &xfer_ctx->settings, ps->ref.domain, ps->ref.path,
                           XFER_CAP_PUSH, ps->plain, ps->skip, ps->user, ps->password, &err);
    if (!ps->reg)
        goto bad;
    if (xfer_image_get(ps->ns, ps->local, ps_got, ps, &err) < 0)
        goto bad;
    free(ref);
    free(local);
    free(platform);
    return;
bad:
    free(ref);
    free(local);
    free(platform);
    ps_free(ps);
    berth_req_fail(r, &err);
}
