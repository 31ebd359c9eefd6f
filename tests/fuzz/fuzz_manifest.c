/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: OCI/Docker manifests, indexes and image configs as a
 * registry or an archive sends them (plugins/transfer/manifest.c). The first
 * byte picks the media type the referrer "announced" (none, one of the four
 * manifest/index types, or a bogus one); the rest is the document. Checks the
 * parser's promises: kind and media type agree (CVE-2021-41190), every
 * descriptor digest is valid, counts within the limits, and an index we
 * export from parsed descriptors parses again to the same descriptors. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/transfer/internal.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_manifest: check failed: %s (line %d)\n", #cond, __LINE__);       \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *const announced[] = {
    NULL,
    XFER_MT_OCI_MANIFEST,
    XFER_MT_OCI_INDEX,
    XFER_MT_DOCKER_MANIFEST,
    XFER_MT_DOCKER_LIST,
    XFER_MT_OCI_CONFIG,
    "application/octet-stream",
    NULL,
};

static void check_desc(const xfer_desc_t *d)
{
    CHECK(d->media_type && *d->media_type);
    CHECK(xfer_digest_valid(d->digest));
    CHECK(d->size <= XFER_MAX_BLOB_SIZE);
    CHECK(!d->ref_name || strlen(d->ref_name) <= 4096);
    CHECK(!d->image_name || strlen(d->image_name) <= 4096);
}

static void check_export(const xfer_doc_t *doc)
{
    /* images export writes an index over descriptors we parsed: it must be
     * importable again, unchanged. */
    size_t len = 0;
    char *js = xfer_index_json(doc->manifests, doc->n_manifests, &len);
    CHECK(js);
    xfer_doc_t again;
    berth_error_t *err = NULL;
    if (xfer_doc_parse(js, len, XFER_MT_OCI_INDEX, &again, &err) < 0) {
        fprintf(stderr, "fuzz_manifest: exported index does not parse: %s\n%s\n", err->message, js);
        abort();
    }
    CHECK(again.kind == XFER_DOC_INDEX);
    CHECK(again.n_manifests == doc->n_manifests);
    for (size_t i = 0; i < again.n_manifests; i++) {
        const xfer_desc_t *a = &doc->manifests[i], *b = &again.manifests[i];
        CHECK(strcmp(a->digest, b->digest) == 0);
        CHECK(strcmp(a->media_type, b->media_type) == 0);
        CHECK(a->size == b->size);
        CHECK(a->has_platform == b->has_platform);
        if (a->has_platform) {
            CHECK(strcmp(a->platform.os, b->platform.os) == 0);
            CHECK(strcmp(a->platform.arch, b->platform.arch) == 0);
            CHECK(strcmp(a->platform.variant, b->platform.variant) == 0);
        }
        CHECK((a->ref_name == NULL) == (b->ref_name == NULL));
        CHECK((a->image_name == NULL) == (b->image_name == NULL));
    }
    xfer_doc_clear(&again);
    free(js);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *mt = announced[data[0] & 7];
    const uint8_t *doc_bytes = data + 1;
    size_t len = size - 1;

    xfer_doc_t doc;
    berth_error_t *err = NULL;
    if (xfer_doc_parse(doc_bytes, len, mt, &doc, &err) == 0) {
        CHECK(doc.media_type);
        if (doc.kind == XFER_DOC_INDEX) {
            CHECK(xfer_mt_is_index(doc.media_type));
            CHECK(doc.n_layers == 0 && !doc.config.digest);
            CHECK(doc.n_manifests <= XFER_MAX_MANIFESTS);
            for (size_t i = 0; i < doc.n_manifests; i++)
                check_desc(&doc.manifests[i]);
            xfer_platform_t want;
            xfer_platform_host(&want);
            ssize_t sel = xfer_index_select(&doc, &want);
            CHECK(sel < (ssize_t)doc.n_manifests);
            check_export(&doc);
        } else {
            CHECK(doc.kind == XFER_DOC_MANIFEST);
            CHECK(xfer_mt_is_manifest(doc.media_type));
            CHECK(doc.n_manifests == 0);
            check_desc(&doc.config);
            CHECK(doc.config.size <= XFER_MAX_CONFIG);
            CHECK(doc.n_layers <= XFER_MAX_LAYERS);
            for (size_t i = 0; i < doc.n_layers; i++) {
                check_desc(&doc.layers[i]);
                xfer_mt_is_layer(doc.layers[i].media_type);
            }
        }
        if (mt && (xfer_mt_is_index(mt) || xfer_mt_is_manifest(mt)))
            CHECK(strcmp(mt, doc.media_type) == 0);
        xfer_doc_clear(&doc);
    } else {
        CHECK(err && err->message);
    }
    berth_error_free(&err);

    xfer_config_t cfg;
    if (xfer_config_parse(doc_bytes, len, &cfg, &err) == 0) {
        CHECK(cfg.n_diff_ids <= XFER_MAX_LAYERS);
        for (size_t i = 0; i < cfg.n_diff_ids; i++)
            CHECK(xfer_digest_valid(cfg.diff_ids[i]));
        char **chain = NULL;
        if (xfer_chain_ids(cfg.diff_ids, cfg.n_diff_ids, &chain, &err) == 0) {
            for (size_t i = 0; i < cfg.n_diff_ids; i++)
                CHECK(xfer_digest_valid(chain[i]));
            xfer_strv_free(chain, cfg.n_diff_ids);
        }
        xfer_config_clear(&cfg);
    } else {
        CHECK(err && err->message);
    }
    berth_error_free(&err);
    return 0;
}
