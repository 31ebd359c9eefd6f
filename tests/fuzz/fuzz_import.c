/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: the JSON files of an image archive given to `images
 * import` — docker save's manifest.json (xfer_docker_manifest_parse), an
 * OCI layout's index.json (xfer_doc_parse as an index) and its oci-layout
 * file (xfer_oci_layout_check), plus the image-name handling import applies
 * to their annotations and RepoTags. Each input is fed to every parser. The
 * archive walk itself (archive.c) runs on the plugin's loop and has no pure
 * entry point. Checks: archive paths stay relative without "..", counts stay
 * within the limits, every accepted RepoTag is a NAME:TAG reference. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/transfer/internal.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_import: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_path(const char *p)
{
    CHECK(p && *p && p[0] != '/' && strlen(p) <= 1024);
    for (const char *s = p; *s;) {
        size_t l = strcspn(s, "/");
        CHECK(!(l == 2 && s[0] == '.' && s[1] == '.'));
        s += l;
        if (*s)
            s++;
    }
}

/* What import does with a name it found: parse it as a reference and use
 * the canonical form. */
static void use_name(const char *name)
{
    xfer_ref_t r;
    if (xfer_ref_parse(name, &r, NULL) == 0) {
        free(xfer_ref_name(&r));
        xfer_ref_clear(&r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    xfer_docker_entry_t *ents = NULL;
    size_t n = 0;
    berth_error_t *err = NULL;
    if (xfer_docker_manifest_parse(data, size, &ents, &n, &err) == 0) {
        CHECK(n <= XFER_MAX_MANIFESTS);
        for (size_t i = 0; i < n; i++) {
            check_path(ents[i].config);
            CHECK(ents[i].n_layers <= XFER_MAX_LAYERS);
            for (size_t l = 0; l < ents[i].n_layers; l++)
                check_path(ents[i].layers[l]);
            CHECK(ents[i].n_repo_tags <= XFER_MAX_REPO_TAGS);
            for (size_t t = 0; t < ents[i].n_repo_tags; t++) {
                xfer_ref_t r;
                CHECK(ents[i].repo_tags[t]);
                CHECK(xfer_ref_parse(ents[i].repo_tags[t], &r, NULL) == 0);
                CHECK(r.tag && !r.digest);
                xfer_ref_clear(&r);
                use_name(ents[i].repo_tags[t]);
            }
        }
        xfer_docker_entries_free(ents, n);
    } else {
        CHECK(err && err->message && !ents && n == 0);
    }
    berth_error_free(&err);

    xfer_doc_t idx;
    if (xfer_doc_parse(data, size, XFER_MT_OCI_INDEX, &idx, &err) == 0) {
        CHECK(idx.kind == XFER_DOC_INDEX && xfer_mt_is_index(idx.media_type));
        for (size_t i = 0; i < idx.n_manifests; i++) {
            const xfer_desc_t *d = &idx.manifests[i];
            CHECK(xfer_digest_valid(d->digest));
            if (d->image_name)
                use_name(d->image_name);
            if (d->ref_name) {
                char *nm = NULL;
                if (asprintf(&nm, "import:%s", d->ref_name) >= 0) {
                    use_name(nm);
                    free(nm);
                }
                use_name(d->ref_name);
            }
        }
        xfer_doc_clear(&idx);
    }
    berth_error_free(&err);

    if (xfer_oci_layout_check((const char *)data, size, &err) == 0)
        CHECK(size >= 30 && memmem(data, size, "1.0.0", 5)); /* {"imageLayoutVersion":"1.0.0"} */
    else
        CHECK(err && err->message);
    berth_error_free(&err);
    return 0;
}
