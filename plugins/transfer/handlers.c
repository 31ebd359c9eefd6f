/* SPDX-License-Identifier: Apache-2.0 */
/* images.check (completeness, sizes, platforms, unpacked) and images.unpack
 * (unpack a local image's layers for a platform). Pull, push, import and
 * export live in their own files. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "berth/log.h"
#include "local.h"

/* ---- images.check ---------------------------------------------------------- */

typedef struct {
    berth_req_t *req;
    char *ns;
    msgpack_zone *zone;
    const msgpack_object *images; /* array of image records */
    uint32_t i;
    berth_mpbuf_t out;
    /* current image */
    xfer_limage_t *img;
    int pending;
    uint32_t present, total;
    uint64_t size, total_size, doc_size;
    bool unpacked, img_failed;
    char *img_err;
} chk_t;

static void chk_next(chk_t *c);

static void chk_free(chk_t *c)
{
    free(c->ns);
    if (c->zone)
        msgpack_zone_free(c->zone);
    berth_mpbuf_destroy(&c->out);
    xfer_limage_free(c->img);
    free(c->img_err);
    free(c);
}

static void chk_pack(chk_t *c)
{
    const msgpack_object *rec = &c->images->via.array.ptr[c->i];
    msgpack_packer *pk = &c->out.pk;
    xfer_limage_t *img = c->img;
    bool complete = img && !c->img_failed && img->missing_docs == 0 && c->present == c->total &&
                    img->n_mans > 0;
    msgpack_pack_map(pk, 16);
    berth_mp_pack_str(pk, "name");
    const msgpack_object *name = berth_mp_get(rec, "name");
    if (name)
        msgpack_pack_object(pk, *name);
    else
        msgpack_pack_nil(pk);
    berth_mp_pack_str(pk, "target");
    const msgpack_object *target = berth_mp_get(rec, "target");
    if (target)
        msgpack_pack_object(pk, *target);
    else
        msgpack_pack_nil(pk);
    const char *keys[] = {"labels", "created_at", "updated_at"};
    for (size_t k = 0; k < 3; k++) {
        berth_mp_pack_str(pk, keys[k]);
        const msgpack_object *v = berth_mp_get(rec, keys[k]);
        if (v)
            msgpack_pack_object(pk, *v);
        else
            msgpack_pack_nil(pk);
    }
    berth_mp_pack_str(pk, "platforms");
    msgpack_pack_array(pk, img ? img->n_platforms : 0);
    for (size_t k = 0; img && k < img->n_platforms; k++)
        berth_mp_pack_str(pk, img->platforms[k]);
    berth_mp_kv_str(pk, "status", complete ? "complete" : "incomplete");
    berth_mp_kv_u64(pk, "complete", c->present);
    berth_mp_kv_u64(pk, "total", c->total);
    berth_mp_kv_u64(pk, "size", c->size);
    berth_mp_kv_u64(pk, "total_size", c->total_size);
    berth_mp_kv_u64(pk, "image_size", c->total_size + c->doc_size);
    berth_mp_kv_bool(pk, "unpacked", c->unpacked);
    const char *chain = NULL;
    for (size_t k = 0; img && k < img->n_mans; k++)
        if (img->mans[k].chain_id)
            chain = img->mans[k].chain_id;
    berth_mp_kv_str(pk, "chain_id", chain);
    berth_mp_kv_str(pk, "error", c->img_err);
    const char *mt = NULL;
    if (img)
        mt = img->target.media_type;
    berth_mp_kv_str(pk, "media_type", mt);
}

static void chk_image_done(chk_t *c)
{
    chk_pack(c);
    xfer_limage_free(c->img);
    c->img = NULL;
    free(c->img_err);
    c->img_err = NULL;
    c->i++;
    chk_next(c);
}

static void chk_stat(berth_call_t *call, const berth_error_t *err, const msgpack_object *res,
                     void *ud)
{
    chk_t *c = ud;
    c->unpacked = err == NULL;
    chk_image_done(c);
}

static void chk_after_infos(chk_t *c)
{
    const char *chain = NULL;
    for (size_t k = 0; c->img && k < c->img->n_mans; k++)
        if (c->img->mans[k].chain_id)
            chain = c->img->mans[k].chain_id;
    if (chain) {
        berth_mpbuf_t b;
        xfer_params_begin(&b, 1, c->ns, NULL);
        berth_mp_kv_str(&b.pk, "key", chain);
        int rc = xfer_call("snapshots.stat", &b, chk_stat, c, NULL);
        berth_mpbuf_destroy(&b);
        if (rc == 0)
            return;
    }
    chk_image_done(c);
}

typedef struct {
    chk_t *c;
    uint64_t size;
} info_t;

static void chk_info(berth_call_t *call, const berth_error_t *err, const msgpack_object *res,
                     void *ud)
{
    info_t *in = ud;
    chk_t *c = in->c;
    if (!err) {
        c->present++;
        c->size += in->size;
    }
    free(in);
    if (--c->pending == 0)
        chk_after_infos(c);
}

static void chk_loaded(const berth_error_t *err, xfer_limage_t *img, void *ud)
{
    chk_t *c = ud;
    c->img = img;
    c->present = c->total = 0;
    c->size = c->total_size = c->doc_size = 0;
    c->unpacked = false;
    c->img_failed = err != NULL;
    if (err) {
        c->img_err = strdup(err->message);
        chk_image_done(c);
        return;
    }
    for (size_t k = 0; k < img->n_docs; k++)
        c->doc_size += img->docs[k].desc.size;
    c->pending = 1;
    for (size_t k = 0; k < img->n_mans; k++) {
        xfer_lman_t *m = &img->mans[k];
        for (size_t l = 0; l <= m->doc.n_layers; l++) {
            const xfer_desc_t *d = l == 0 ? &m->doc.config : &m->doc.layers[l - 1];
            c->total++;
            c->total_size += d->size;
            info_t *in = calloc(1, sizeof(*in));
            in->c = c;
            in->size = d->size;
            berth_mpbuf_t b;
            xfer_params_begin(&b, 1, c->ns, NULL);
            berth_mp_kv_str(&b.pk, "digest", d->digest);
            if (xfer_call("content.info", &b, chk_info, in, NULL) == 0)
                c->pending++;
            else
                free(in);
            berth_mpbuf_destroy(&b);
        }
    }
    if (--c->pending == 0)
        chk_after_infos(c);
}

static void chk_next(chk_t *c)
{
    while (c->i < c->images->via.array.size) {
        const msgpack_object *rec = &c->images->via.array.ptr[c->i];
        xfer_desc_t d;
        berth_error_t *e = NULL;
        char *name = berth_mp_strdup(berth_mp_get(rec, "name"));
        if (xfer_desc_unpack(berth_mp_get(rec, "target"), &d, &e) < 0) {
            c->img_err = strdup(e->message);
            berth_error_free(&e);
            free(name);
            chk_pack(c);
            free(c->img_err);
            c->img_err = NULL;
            c->i++;
            continue;
        }
        int rc = xfer_limage_load(c->ns, name, &d, &xfer_ctx->host, true, true, chk_loaded, c, &e);
        xfer_desc_clear(&d);
        free(name);
        if (rc == 0)
            return;
        c->img_err = strdup(e->message);
        berth_error_free(&e);
        chk_pack(c);
        free(c->img_err);
        c->img_err = NULL;
        c->i++;
    }
    berth_req_reply_raw(c->req, c->out.buf.data, c->out.buf.size);
    chk_free(c);
}

static void chk_start(chk_t *c, const msgpack_object *images)
{
    c->images = berth_mp_clone(images, &c->zone);
    berth_mpbuf_init(&c->out);
    msgpack_pack_map(&c->out.pk, 1);
    berth_mp_pack_str(&c->out.pk, "images");
    msgpack_pack_array(&c->out.pk, c->images->via.array.size);
    chk_next(c);
}

static void chk_got(berth_call_t *call, const berth_error_t *err, const msgpack_object *res,
                    void *ud)
{
    chk_t *c = ud;
    if (err) {
        berth_req_failf(c->req, err->code, "%s", err->message);
        free(c->ns);
        free(c);
        return;
    }
    const msgpack_object *images = berth_mp_get(res, "images");
    msgpack_object one_arr;
    if (!images) {
        /* images.get: wrap the single record in an array */
        const msgpack_object *img = berth_mp_get(res, "image");
        one_arr.type = MSGPACK_OBJECT_ARRAY;
        one_arr.via.array.size = img ? 1 : 0;
        one_arr.via.array.ptr = (msgpack_object *)img;
        images = &one_arr;
    }
    if (images->type != MSGPACK_OBJECT_ARRAY) {
        berth_req_failf(c->req, BERTH_E_INTERNAL, "images.list answered without images");
        free(c->ns);
        free(c);
        return;
    }
    chk_start(c, images);
}

void xfer_handle_check(berth_req_t *r, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    char *name = NULL;
    if (berth_mp_get_strdup(params, "name", &name, &err) < 0) {
        berth_req_fail(r, &err);
        return;
    }
    chk_t *c = calloc(1, sizeof(*c));
    c->req = r;
    c->ns = strdup(berth_req_namespace(r));
    berth_mpbuf_t b;
    xfer_params_begin(&b, name ? 1 : 0, c->ns, NULL);
    if (name)
        berth_mp_kv_str(&b.pk, "name", name);
    int rc = xfer_call(name ? "images.get" : "images.list", &b, chk_got, c, &err);
    berth_mpbuf_destroy(&b);
    free(name);
    if (rc < 0) {
        free(c->ns);
        free(c);
        berth_req_fail(r, &err);
    }
}

/* ---- images.unpack ------------------------------------------------------------ */

typedef struct {
    berth_req_t *req;
    char *ns;
    char *name;
    bool has_want;
    xfer_platform_t want;
    xfer_limage_t *img;
    char *lease;
    char *chain;
    berth_error_t *err;
    bool did_work;
} unp_t;

static void unp_end(unp_t *u)
{
    if (u->err) {
        berth_req_fail(u->req, &u->err);
    } else {
        msgpack_packer *pk = berth_req_reply_begin(u->req);
        msgpack_pack_map(pk, 2);
        berth_mp_kv_str(pk, "chain_id", u->chain);
        berth_mp_kv_bool(pk, "unpacked", u->did_work);
        berth_req_reply_end(u->req);
    }
    xfer_limage_free(u->img);
    free(u->ns);
    free(u->name);
    free(u->lease);
    free(u->chain);
    free(u);
}

static void unp_lease_deleted(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                              void *ud)
{
    unp_end(ud);
}

static void unp_cleanup(unp_t *u)
{
    if (!u->lease) {
        unp_end(u);
        return;
    }
    berth_mpbuf_t b;
    xfer_params_begin(&b, 1, u->ns, NULL);
    berth_mp_kv_str(&b.pk, "id", u->lease);
    int rc = xfer_call("leases.delete", &b, unp_lease_deleted, u, NULL);
    berth_mpbuf_destroy(&b);
    if (rc < 0)
        unp_end(u);
}

static void unp_labeled(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                        void *ud)
{
    unp_t *u = ud;
    if (err && !u->err)
        berth_error_set(&u->err, err->code, "label config with its snapshot: %s", err->message);
    unp_cleanup(u);
}

static void unp_progress(size_t layer, const char *status, void *ud)
{
    unp_t *u = ud;
    if (strcmp(status, "unpacking") == 0)
        u->did_work = true;
}

static void unp_done(const berth_error_t *err, const char *chain, void *ud)
{
    unp_t *u = ud;
    if (err) {
        berth_error_set(&u->err, err->code, "%s", err->message);
        unp_cleanup(u);
        return;
    }
    u->chain = chain ? strdup(chain) : NULL;
    xfer_lman_t *m = &u->img->mans[0];
    if (!chain) {
        unp_cleanup(u);
        return;
    }
    /* The config keeps the snapshot chain alive for GC. */
    berth_mpbuf_t b;
    xfer_params_begin(&b, 3, u->ns, NULL);
    berth_mp_kv_str(&b.pk, "digest", m->doc.config.digest);
    berth_mp_pack_str(&b.pk, "labels");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, XFER_LABEL_REF_SNAPSHOT, chain);
    berth_mp_pack_str(&b.pk, "fields");
    msgpack_pack_array(&b.pk, 1);
    berth_mp_pack_str(&b.pk, "labels." XFER_LABEL_REF_SNAPSHOT);
    int rc = xfer_call("content.update", &b, unp_labeled, u, NULL);
    berth_mpbuf_destroy(&b);
    if (rc < 0)
        unp_cleanup(u);
}

static void unp_start(unp_t *u)
{
    xfer_lman_t *m = &u->img->mans[0];
    xfer_unpack_t *up = xfer_unpack_new(u->ns, u->lease, m->doc.layers, m->cfg.diff_ids,
                                        m->cfg.n_diff_ids, unp_progress, unp_done, u);
    for (size_t i = 0; i < m->doc.n_layers; i++)
        xfer_unpack_layer_ready(up, i);
    xfer_unpack_start(up);
}

static void unp_held(const berth_error_t *err, void *ud)
{
    unp_t *u = ud;
    if (err) {
        berth_error_set(&u->err, err->code, "%s", err->message);
        unp_cleanup(u);
        return;
    }
    unp_start(u);
}

static void unp_lease(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                      void *ud)
{
    unp_t *u = ud;
    if (err) {
        berth_error_set(&u->err, err->code, "create lease: %s", err->message);
        unp_end(u);
        return;
    }
    u->lease = berth_mp_strdup(berth_mp_get(berth_mp_get(res, "lease"), "id"));
    if (!u->lease) {
        berth_error_set(&u->err, BERTH_E_INTERNAL, "leases.create answered without an id");
        unp_end(u);
        return;
    }
    /* The layers were in the store before: the lease must hold them for
     * diff.apply to get their paths (content.path), and keeps them from the
     * gc meanwhile. */
    xfer_lman_t *m = &u->img->mans[0];
    char **digests = calloc(m->doc.n_layers ? m->doc.n_layers : 1, sizeof(char *));
    for (size_t i = 0; digests && i < m->doc.n_layers; i++)
        digests[i] = m->doc.layers[i].digest;
    int rc = digests ? xfer_lease_add_blobs(u->ns, u->lease, digests, m->doc.n_layers, unp_held, u,
                                            &u->err)
                     : berth_error_set(&u->err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    free(digests);
    if (rc < 0)
        unp_cleanup(u);
    else if (rc == 1)
        unp_start(u);
}

static void unp_loaded(const berth_error_t *err, xfer_limage_t *img, void *ud)
{
    unp_t *u = ud;
    if (err) {
        berth_error_set(&u->err, err->code, "%s", err->message);
        unp_end(u);
        return;
    }
    u->img = img;
    if (img->n_mans == 0 || !img->mans[0].have_cfg) {
        berth_error_set(&u->err, BERTH_E_NOT_FOUND, "image %s has no manifest to unpack", u->name);
        unp_end(u);
        return;
    }
    xfer_lman_t *m = &img->mans[0];
    if (m->cfg.n_diff_ids != m->doc.n_layers) {
        berth_error_set(&u->err, BERTH_E_INVALID_ARGUMENT,
                        "image %s: config has %zu diff ids for %zu layers", u->name,
                        m->cfg.n_diff_ids, m->doc.n_layers);
        unp_end(u);
        return;
    }
    berth_mpbuf_t b;
    xfer_params_begin(&b, 1, u->ns, NULL);
    berth_mp_kv_i64(&b.pk, "expire", berth_now_ns() + 3600LL * 1000000000LL);
    int rc = xfer_call("leases.create", &b, unp_lease, u, &u->err);
    berth_mpbuf_destroy(&b);
    if (rc < 0)
        unp_end(u);
}

static void unp_got(const berth_error_t *err, const msgpack_object *image,
                    const xfer_desc_t *target, void *ud)
{
    unp_t *u = ud;
    if (err) {
        berth_error_set(&u->err, err->code, "%s", err->message);
        unp_end(u);
        return;
    }
    if (xfer_limage_load(u->ns, u->name, target, &u->want, true, false, unp_loaded, u, &u->err) < 0)
        unp_end(u);
}

void xfer_handle_unpack(berth_req_t *r, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    char *name = NULL, *platform = NULL;
    if (berth_mp_get_strdup(params, "name", &name, &err) < 0 ||
        berth_mp_get_strdup(params, "platform", &platform, &err) < 0) {
        free(name);
        berth_req_fail(r, &err);
        return;
    }
    if (!name) {
        free(platform);
        berth_req_failf(r, BERTH_E_INVALID_ARGUMENT, "images.unpack needs a name");
        return;
    }
    unp_t *u = calloc(1, sizeof(*u));
    u->req = r;
    u->ns = strdup(berth_req_namespace(r));
    u->name = name;
    u->want = xfer_ctx->host;
    if (platform && xfer_platform_parse(platform, &u->want, &u->err) < 0) {
        free(platform);
        unp_end(u);
        return;
    }
    free(platform);
    if (xfer_image_get(u->ns, name, unp_got, u, &u->err) < 0)
        unp_end(u);
}
