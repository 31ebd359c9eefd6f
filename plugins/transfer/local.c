/* SPDX-License-Identifier: Apache-2.0 */
/* Loads a local image from the content store: its target document, the
 * nested indexes, the platform manifests selected and their configs. Used by
 * images.check, images.unpack, push and export. Missing blobs are recorded
 * (lenient mode, for check) or reported with the platform and digest. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "berth/log.h"
#include "local.h"

typedef struct {
    xfer_limage_t *img;
    xfer_limage_cb cb;
    void *ud;
    char *ns;
    bool has_want;
    xfer_platform_t want;
    bool need_config, lenient;
    int pending;
    berth_error_t *err;
} ld_t;

static void ld_check(ld_t *l)
{
    if (l->pending > 0)
        return;
    l->cb(l->err, l->err ? NULL : l->img, l->ud);
    if (l->err)
        xfer_limage_free(l->img);
    berth_error_free(&l->err);
    free(l->ns);
    free(l);
}

static void ld_fail(ld_t *l, berth_code_t code, const char *fmt, ...) BERTH_PRINTF(3, 4);
static void ld_fail(ld_t *l, berth_code_t code, const char *fmt, ...)
{
    if (l->err)
        return;
    l->err = calloc(1, sizeof(berth_error_t));
    l->err->code = code;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&l->err->message, fmt, ap) < 0)
        l->err->message = NULL;
    va_end(ap);
}

void xfer_limage_free(xfer_limage_t *img)
{
    if (!img)
        return;
    free(img->name);
    xfer_desc_clear(&img->target);
    for (size_t i = 0; i < img->n_docs; i++) {
        xfer_desc_clear(&img->docs[i].desc);
        free(img->docs[i].bytes);
    }
    free(img->docs);
    for (size_t i = 0; i < img->n_mans; i++) {
        xfer_lman_t *m = &img->mans[i];
        xfer_desc_clear(&m->desc);
        xfer_doc_clear(&m->doc);
        free(m->config);
        xfer_config_clear(&m->cfg);
        free(m->chain_id);
    }
    free(img->mans);
    xfer_strv_free(img->platforms, img->n_platforms);
    free(img);
}

typedef struct {
    ld_t *l;
    xfer_desc_t desc;
    int depth;
    size_t man; /* for configs: index into mans */
    bool is_config;
} ldreq_t;

static void load_doc(ld_t *l, const xfer_desc_t *d, int depth);

static void add_platform(xfer_limage_t *img, const xfer_platform_t *p)
{
    char buf[100];
    xfer_platform_format(p, buf, sizeof(buf));
    for (size_t i = 0; i < img->n_platforms; i++)
        if (strcmp(img->platforms[i], buf) == 0)
            return;
    img->platforms = realloc(img->platforms, (img->n_platforms + 1) * sizeof(char *));
    img->platforms[img->n_platforms++] = strdup(buf);
}

static void config_read(const berth_error_t *err, const char *data, size_t len, void *ud)
{
    ldreq_t *q = ud;
    ld_t *l = q->l;
    l->pending--;
    xfer_lman_t *m = &l->img->mans[q->man];
    if (err) {
        if (!l->lenient) {
            char p[100] = "";
            if (m->desc.has_platform)
                xfer_platform_format(&m->desc.platform, p, sizeof(p));
            ld_fail(l, err->code == BERTH_E_NOT_FOUND ? BERTH_E_NOT_FOUND : err->code,
                    "image %s%s%s: config %s is missing (%s)", l->img->name, p[0] ? " for " : "", p,
                    q->desc.digest, err->message);
        }
    } else {
        berth_error_t *e = NULL;
        char dg[72];
        xfer_sha256_digest(data, len, dg);
        if (strcmp(dg, q->desc.digest) != 0) {
            ld_fail(l, BERTH_E_INTERNAL, "config %s: stored bytes hash to %s", q->desc.digest, dg);
        } else if (xfer_config_parse(data, len, &m->cfg, &e) < 0) {
            ld_fail(l, e->code, "config %s: %s", q->desc.digest, e->message);
            berth_error_free(&e);
        } else {
            m->config = malloc(len + 1);
            memcpy(m->config, data, len);
            m->config_len = len;
            m->have_cfg = true;
            if (!m->desc.has_platform)
                add_platform(l->img, &m->cfg.platform);
            if (m->cfg.n_diff_ids > 0) {
                char **chain = NULL;
                xfer_chain_ids(m->cfg.diff_ids, m->cfg.n_diff_ids, &chain, NULL);
                m->chain_id = strdup(chain[m->cfg.n_diff_ids - 1]);
                xfer_strv_free(chain, m->cfg.n_diff_ids);
            }
        }
    }
    xfer_desc_clear(&q->desc);
    free(q);
    ld_check(l);
}

static void doc_read(const berth_error_t *err, const char *data, size_t len, void *ud)
{
    ldreq_t *q = ud;
    ld_t *l = q->l;
    l->pending--;
    xfer_limage_t *img = l->img;
    if (err) {
        if (l->lenient) {
            img->missing_docs++;
        } else {
            char p[100] = "";
            if (q->desc.has_platform)
                xfer_platform_format(&q->desc.platform, p, sizeof(p));
            ld_fail(l, err->code, "image %s%s%s: manifest %s is missing (%s)", img->name,
                    p[0] ? " for " : "", p, q->desc.digest, err->message);
        }
        goto out;
    }
    char dg[72];
    xfer_sha256_digest(data, len, dg);
    if (strcmp(dg, q->desc.digest) != 0) {
        ld_fail(l, BERTH_E_INTERNAL, "blob %s: stored bytes hash to %s", q->desc.digest, dg);
        goto out;
    }
    xfer_doc_t doc;
    berth_error_t *e = NULL;
    if (xfer_doc_parse(data, len, q->desc.media_type, &doc, &e) < 0) {
        ld_fail(l, e->code, "image %s: %s: %s", img->name, q->desc.digest, e->message);
        berth_error_free(&e);
        goto out;
    }
    img->docs = realloc(img->docs, (img->n_docs + 1) * sizeof(*img->docs));
    xfer_ldoc_t *ld = &img->docs[img->n_docs++];
    xfer_desc_copy(&ld->desc, &q->desc);
    free(ld->desc.media_type);
    ld->desc.media_type = strdup(doc.media_type);
    ld->bytes = malloc(len + 1);
    memcpy(ld->bytes, data, len);
    ld->len = len;
    ld->is_index = doc.kind == XFER_DOC_INDEX;
    if (doc.kind == XFER_DOC_INDEX) {
        if (q->depth + 1 >= XFER_MAX_INDEX_DEPTH) {
            ld_fail(l, BERTH_E_INVALID_ARGUMENT, "index %s nested too deep", q->desc.digest);
            xfer_doc_clear(&doc);
            goto out;
        }
        for (size_t i = 0; i < doc.n_manifests; i++)
            if (doc.manifests[i].has_platform && xfer_mt_is_manifest(doc.manifests[i].media_type))
                add_platform(img, &doc.manifests[i].platform);
        ssize_t best = l->has_want ? xfer_index_select(&doc, &l->want) : -1;
        if (l->has_want && best < 0) {
            char w[100];
            ld_fail(l, BERTH_E_NOT_FOUND, "image %s has no manifest for platform %s", img->name,
                    xfer_platform_format(&l->want, w, sizeof(w)));
        }
        for (size_t i = 0; i < doc.n_manifests && !l->err; i++) {
            const xfer_desc_t *c = &doc.manifests[i];
            if (l->has_want && (ssize_t)i != best)
                continue;
            if (!xfer_mt_is_manifest(c->media_type) && !xfer_mt_is_index(c->media_type))
                continue;
            load_doc(l, c, q->depth + 1);
        }
    } else {
        img->mans = realloc(img->mans, (img->n_mans + 1) * sizeof(xfer_lman_t));
        size_t mi = img->n_mans++;
        xfer_lman_t *m = &img->mans[mi];
        memset(m, 0, sizeof(*m));
        xfer_desc_copy(&m->desc, &ld->desc);
        m->doc = doc;
        memset(&doc, 0, sizeof(doc));
        if (l->need_config) {
            ldreq_t *cq = calloc(1, sizeof(*cq));
            cq->l = l;
            xfer_desc_copy(&cq->desc, &m->doc.config);
            cq->man = mi;
            cq->is_config = true;
            berth_error_t *e2 = NULL;
            if (xfer_blob_read(l->ns, cq->desc.digest, XFER_MAX_CONFIG, config_read, cq, &e2) ==
                0) {
                l->pending++;
            } else {
                ld_fail(l, e2->code, "%s", e2->message);
                berth_error_free(&e2);
                xfer_desc_clear(&cq->desc);
                free(cq);
            }
        }
    }
    xfer_doc_clear(&doc);
out:
    xfer_desc_clear(&q->desc);
    free(q);
    ld_check(l);
}

static void load_doc(ld_t *l, const xfer_desc_t *d, int depth)
{
    ldreq_t *q = calloc(1, sizeof(*q));
    q->l = l;
    xfer_desc_copy(&q->desc, d);
    q->depth = depth;
    berth_error_t *e = NULL;
    if (xfer_blob_read(l->ns, d->digest, XFER_MAX_MANIFEST, doc_read, q, &e) == 0) {
        l->pending++;
        return;
    }
    ld_fail(l, e->code, "%s", e->message);
    berth_error_free(&e);
    xfer_desc_clear(&q->desc);
    free(q);
}

int xfer_limage_load(const char *ns, const char *name, const xfer_desc_t *target,
                     const xfer_platform_t *want, bool need_config, bool lenient, xfer_limage_cb cb,
                     void *ud, berth_error_t **err)
{
    ld_t *l = calloc(1, sizeof(*l));
    l->img = calloc(1, sizeof(xfer_limage_t));
    l->img->name = strdup(name ? name : target->digest);
    xfer_desc_copy(&l->img->target, target);
    l->cb = cb;
    l->ud = ud;
    l->ns = strdup(ns);
    if (want) {
        l->has_want = true;
        l->want = *want;
    }
    l->need_config = need_config;
    l->lenient = lenient;
    l->pending = 1; /* held while starting */
    load_doc(l, target, 0);
    l->pending--;
    ld_check(l);
    return 0;
}

/* ---- images.get → target ----------------------------------------------------- */

typedef struct {
    xfer_image_get_cb cb;
    void *ud;
} ig_t;

static void got_image(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                      void *ud)
{
    ig_t *g = ud;
    xfer_desc_t d = {0};
    berth_error_t *e = NULL;
    const msgpack_object *img = NULL;
    if (!err) {
        img = berth_mp_get(res, "image");
        if (xfer_desc_unpack(berth_mp_get(img, "target"), &d, &e) < 0)
            err = e;
    }
    g->cb(err, err ? NULL : img, err ? NULL : &d, g->ud);
    xfer_desc_clear(&d);
    berth_error_free(&e);
    free(g);
}

int xfer_image_get(const char *ns, const char *name, xfer_image_get_cb cb, void *ud,
                   berth_error_t **err)
{
    ig_t *g = calloc(1, sizeof(*g));
    g->cb = cb;
    g->ud = ud;
    berth_mpbuf_t b;
    xfer_params_begin(&b, 1, ns, NULL);
    berth_mp_kv_str(&b.pk, "name", name);
    int rc = xfer_call("images.get", &b, got_image, g, err);
    berth_mpbuf_destroy(&b);
    if (rc < 0)
        free(g);
    return rc;
}
