/* SPDX-License-Identifier: Apache-2.0 */
/* OCI and Docker schema2 manifests, indexes and image configs, read from
 * untrusted bytes with jansson: size caps before parsing, duplicate keys
 * rejected, media type and shape must agree (CVE-2021-41190), descriptors
 * validated, entry counts bounded. Also chain ids and export JSON. */
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static char *xstrdup(const char *s)
{
    char *r = strdup(s ? s : "");
    if (!r)
        abort();
    return r;
}

void xfer_sha256_digest(const void *p, size_t n, char out[72])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL);
    memcpy(out, "sha256:", 7);
    for (int i = 0; i < 32; i++)
        snprintf(out + 7 + i * 2, 3, "%02x", md[i]);
}

void xfer_strv_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

bool xfer_mt_is_manifest(const char *mt)
{
    return mt &&
           (strcmp(mt, XFER_MT_OCI_MANIFEST) == 0 || strcmp(mt, XFER_MT_DOCKER_MANIFEST) == 0);
}

bool xfer_mt_is_index(const char *mt)
{
    return mt && (strcmp(mt, XFER_MT_OCI_INDEX) == 0 || strcmp(mt, XFER_MT_DOCKER_LIST) == 0);
}

bool xfer_mt_is_layer(const char *mt)
{
    return mt && (strncmp(mt, "application/vnd.oci.image.layer.", 32) == 0 ||
                  strncmp(mt, "application/vnd.docker.image.rootfs.", 36) == 0);
}

void xfer_desc_clear(xfer_desc_t *d)
{
    free(d->media_type);
    free(d->digest);
    free(d->ref_name);
    free(d->image_name);
    memset(d, 0, sizeof(*d));
}

int xfer_desc_copy(xfer_desc_t *dst, const xfer_desc_t *src)
{
    *dst = *src;
    dst->media_type = src->media_type ? xstrdup(src->media_type) : NULL;
    dst->digest = src->digest ? xstrdup(src->digest) : NULL;
    dst->ref_name = src->ref_name ? xstrdup(src->ref_name) : NULL;
    dst->image_name = src->image_name ? xstrdup(src->image_name) : NULL;
    return 0;
}

void xfer_doc_clear(xfer_doc_t *d)
{
    free(d->media_type);
    xfer_desc_clear(&d->config);
    for (size_t i = 0; i < d->n_layers; i++)
        xfer_desc_clear(&d->layers[i]);
    free(d->layers);
    for (size_t i = 0; i < d->n_manifests; i++)
        xfer_desc_clear(&d->manifests[i]);
    free(d->manifests);
    memset(d, 0, sizeof(*d));
}

static bool mt_valid(const char *s)
{
    /* type "/" subtype, restricted characters, bounded length (RFC 6838). */
    size_t n = strlen(s);
    if (n == 0 || n > 255)
        return false;
    int slashes = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '/')
            slashes++;
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   strchr("!#$&-^_.+", c)))
            return false;
    }
    return slashes == 1;
}

static const char *jstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int parse_desc(const json_t *o, const char *what, xfer_desc_t *d, berth_error_t **err)
{
    memset(d, 0, sizeof(*d));
    if (!json_is_object(o))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s: descriptor is not an object",
                               what);
    const json_t *mt = json_object_get(o, "mediaType");
    const json_t *dg = json_object_get(o, "digest");
    const json_t *sz = json_object_get(o, "size");
    if (!json_is_string(mt) || !mt_valid(json_string_value(mt)))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s: missing or invalid mediaType",
                               what);
    if (!json_is_string(dg))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s: missing digest", what);
    if (!xfer_digest_valid(json_string_value(dg)))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "%s: digest \"%.80s\" is not sha256 with 64 lowercase hex digits",
                               what, json_string_value(dg));
    if (!json_is_integer(sz) || json_integer_value(sz) < 0 ||
        (uint64_t)json_integer_value(sz) > XFER_MAX_BLOB_SIZE)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s %s: missing or invalid size",
                               what, json_string_value(dg));
    d->media_type = xstrdup(json_string_value(mt));
    d->digest = xstrdup(json_string_value(dg));
    d->size = (uint64_t)json_integer_value(sz);
    const json_t *pl = json_object_get(o, "platform");
    if (json_is_object(pl)) {
        const char *os = jstr(pl, "os"), *arch = jstr(pl, "architecture");
        if (os && arch && strlen(os) < 32 && strlen(arch) < 32) {
            const char *var = jstr(pl, "variant");
            xfer_platform_set(&d->platform, os, arch, var && strlen(var) < 32 ? var : "");
            d->has_platform = true;
        }
    }
    const json_t *ann = json_object_get(o, "annotations");
    if (ann && !json_is_object(ann)) {
        xfer_desc_clear(d);
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s: annotations is not an object",
                               what);
    }
    const char *rn = jstr(ann, "org.opencontainers.image.ref.name");
    const char *in = jstr(ann, "io.containerd.image.name");
    if (rn && strlen(rn) <= 4096)
        d->ref_name = xstrdup(rn);
    if (in && strlen(in) <= 4096)
        d->image_name = xstrdup(in);
    return 0;
}

static json_t *load(const void *buf, size_t len, size_t cap, const char *what, berth_error_t **err)
{
    if (len > cap) {
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "%s of %zu bytes exceeds the limit of %zu",
                        what, len, cap);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s is not valid JSON: %s (line %d)", what,
                        je.text, je.line);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "%s is not a JSON object", what);
        return NULL;
    }
    return root;
}

int xfer_doc_parse(const void *buf, size_t len, const char *expected_mt, xfer_doc_t *out,
                   berth_error_t **err)
{
    memset(out, 0, sizeof(*out));
    json_t *root = load(buf, len, XFER_MAX_MANIFEST, "manifest", err);
    if (!root)
        return -1;
    int rc = -1;
    const json_t *sv = json_object_get(root, "schemaVersion");
    const json_t *jmt = json_object_get(root, "mediaType");
    const json_t *manifests = json_object_get(root, "manifests");
    const json_t *layers = json_object_get(root, "layers");
    const json_t *config = json_object_get(root, "config");
    const char *doc_mt = json_is_string(jmt) ? json_string_value(jmt) : NULL;

    if (jmt && !doc_mt) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "manifest: mediaType is not a string");
        goto out;
    }
    if (json_is_integer(sv) && json_integer_value(sv) == 1) {
        berth_error_set(err, BERTH_E_UNIMPLEMENTED,
                        "Docker schema 1 manifests are not supported (deprecated format); "
                        "push the image again with a current client");
        goto out;
    }
    if (!json_is_integer(sv) || json_integer_value(sv) != 2) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "manifest: schemaVersion must be 2");
        goto out;
    }
    /* CVE-2021-41190: a document must be unambiguously a manifest or an index. */
    if (manifests && (layers || config)) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "ambiguous document: it has both \"manifests\" and \"layers\"/\"config\"");
        goto out;
    }
    xfer_doc_kind_t kind;
    if (manifests)
        kind = XFER_DOC_INDEX;
    else if (config || layers)
        kind = XFER_DOC_MANIFEST;
    else {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "document is neither a manifest (config, layers) nor an index (manifests)");
        goto out;
    }
    const char *eff = doc_mt;
    if (!eff && expected_mt && (xfer_mt_is_index(expected_mt) || xfer_mt_is_manifest(expected_mt)))
        eff = expected_mt;
    if (!eff)
        eff = kind == XFER_DOC_INDEX ? XFER_MT_OCI_INDEX : XFER_MT_OCI_MANIFEST;
    if ((kind == XFER_DOC_INDEX && !xfer_mt_is_index(eff)) ||
        (kind == XFER_DOC_MANIFEST && !xfer_mt_is_manifest(eff))) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "document media type %s does not match its content (%s)", eff,
                        kind == XFER_DOC_INDEX ? "an index" : "a manifest");
        goto out;
    }
    if (expected_mt && (xfer_mt_is_index(expected_mt) || xfer_mt_is_manifest(expected_mt)) &&
        strcmp(expected_mt, eff) != 0) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "document media type %s does not match the announced %s", eff, expected_mt);
        goto out;
    }
    out->kind = kind;
    out->media_type = xstrdup(eff);

    if (kind == XFER_DOC_INDEX) {
        if (!json_is_array(manifests)) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "index: manifests is not an array");
            goto out;
        }
        size_t n = json_array_size(manifests);
        if (n > XFER_MAX_MANIFESTS) {
            berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                            "index has %zu manifests, more than the limit of %d", n,
                            XFER_MAX_MANIFESTS);
            goto out;
        }
        out->manifests = calloc(n ? n : 1, sizeof(xfer_desc_t));
        for (size_t i = 0; i < n; i++) {
            char what[48];
            snprintf(what, sizeof(what), "index entry %zu", i);
            if (parse_desc(json_array_get(manifests, i), what, &out->manifests[i], err) < 0)
                goto out;
            out->n_manifests++;
        }
    } else {
        if (!json_is_array(layers)) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "manifest: layers is not an array");
            goto out;
        }
        if (parse_desc(config, "manifest config", &out->config, err) < 0)
            goto out;
        size_t n = json_array_size(layers);
        if (n > XFER_MAX_LAYERS) {
            berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                            "manifest has %zu layers, more than the limit of %d", n,
                            XFER_MAX_LAYERS);
            goto out;
        }
        if (out->config.size > XFER_MAX_CONFIG) {
            berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                            "image config %s of %" PRIu64 " bytes exceeds the limit of %u",
                            out->config.digest, out->config.size, XFER_MAX_CONFIG);
            goto out;
        }
        out->layers = calloc(n ? n : 1, sizeof(xfer_desc_t));
        for (size_t i = 0; i < n; i++) {
            char what[48];
            snprintf(what, sizeof(what), "layer %zu", i);
            if (parse_desc(json_array_get(layers, i), what, &out->layers[i], err) < 0)
                goto out;
            out->n_layers++;
        }
    }
    rc = 0;
out:
    json_decref(root);
    if (rc < 0)
        xfer_doc_clear(out);
    return rc;
}

void xfer_config_clear(xfer_config_t *c)
{
    xfer_strv_free(c->diff_ids, c->n_diff_ids);
    memset(c, 0, sizeof(*c));
}

int xfer_config_parse(const void *buf, size_t len, xfer_config_t *out, berth_error_t **err)
{
    memset(out, 0, sizeof(*out));
    json_t *root = load(buf, len, XFER_MAX_CONFIG, "image config", err);
    if (!root)
        return -1;
    int rc = -1;
    const char *os = jstr(root, "os"), *arch = jstr(root, "architecture");
    const char *var = jstr(root, "variant");
    xfer_platform_set(&out->platform, os && strlen(os) < 32 ? os : "linux",
                      arch && strlen(arch) < 32 ? arch : "", var && strlen(var) < 32 ? var : "");
    const json_t *rootfs = json_object_get(root, "rootfs");
    const json_t *ids = json_object_get(rootfs, "diff_ids");
    const char *type = jstr(rootfs, "type");
    if (!json_is_object(rootfs) || !json_is_array(ids) || !type || strcmp(type, "layers") != 0) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "image config: rootfs must be {type: \"layers\", diff_ids: [...]}");
        goto out;
    }
    size_t n = json_array_size(ids);
    if (n > XFER_MAX_LAYERS) {
        berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "image config has %zu diff ids", n);
        goto out;
    }
    out->diff_ids = calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const json_t *d = json_array_get(ids, i);
        if (!json_is_string(d) || !xfer_digest_valid(json_string_value(d))) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "image config: diff_id %zu is not a sha256 digest", i);
            goto out;
        }
        out->diff_ids[i] = xstrdup(json_string_value(d));
        out->n_diff_ids++;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc < 0)
        xfer_config_clear(out);
    return rc;
}

int xfer_chain_ids(char *const *diff_ids, size_t n, char ***out, berth_error_t **err)
{
    char **v = calloc(n ? n : 1, sizeof(char *));
    if (!v)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (i == 0) {
            v[i] = xstrdup(diff_ids[0]);
            continue;
        }
        char buf[160];
        int l = snprintf(buf, sizeof(buf), "%s %s", v[i - 1], diff_ids[i]);
        v[i] = malloc(72);
        xfer_sha256_digest(buf, (size_t)l, v[i]);
    }
    *out = v;
    return 0;
}

ssize_t xfer_index_select(const xfer_doc_t *idx, const xfer_platform_t *want)
{
    ssize_t best = -1;
    int best_score = -1;
    for (size_t i = 0; i < idx->n_manifests; i++) {
        const xfer_desc_t *d = &idx->manifests[i];
        if (!d->has_platform)
            continue;
        if (!xfer_mt_is_manifest(d->media_type) && !xfer_mt_is_index(d->media_type))
            continue;
        int s = xfer_platform_score(want, &d->platform);
        if (s > best_score) {
            best_score = s;
            best = (ssize_t)i;
        }
    }
    return best;
}

static json_t *desc_json(const xfer_desc_t *d)
{
    json_t *o = json_object();
    json_object_set_new(o, "mediaType", json_string(d->media_type));
    json_object_set_new(o, "digest", json_string(d->digest));
    json_object_set_new(o, "size", json_integer((json_int_t)d->size));
    if (d->ref_name || d->image_name) {
        json_t *a = json_object();
        if (d->image_name)
            json_object_set_new(a, "io.containerd.image.name", json_string(d->image_name));
        if (d->ref_name)
            json_object_set_new(a, "org.opencontainers.image.ref.name", json_string(d->ref_name));
        json_object_set_new(o, "annotations", a);
    }
    if (d->has_platform) {
        json_t *p = json_object();
        json_object_set_new(p, "architecture", json_string(d->platform.arch));
        json_object_set_new(p, "os", json_string(d->platform.os));
        if (d->platform.variant[0])
            json_object_set_new(p, "variant", json_string(d->platform.variant));
        json_object_set_new(o, "platform", p);
    }
    return o;
}

char *xfer_index_json(const xfer_desc_t *descs, size_t n, size_t *len)
{
    json_t *root = json_object();
    json_object_set_new(root, "schemaVersion", json_integer(2));
    json_object_set_new(root, "mediaType", json_string(XFER_MT_OCI_INDEX));
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, desc_json(&descs[i]));
    json_object_set_new(root, "manifests", arr);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    *len = s ? strlen(s) : 0;
    return s;
}

void xfer_docker_entries_free(xfer_docker_entry_t *e, size_t n)
{
    if (!e)
        return;
    for (size_t i = 0; i < n; i++) {
        free(e[i].config);
        xfer_strv_free(e[i].repo_tags, e[i].n_repo_tags);
        xfer_strv_free(e[i].layers, e[i].n_layers);
    }
    free(e);
}

static bool archive_path_ok(const char *p)
{
    /* Paths inside the archive we will look up: relative, no "..". */
    if (!p || !*p || p[0] == '/' || strlen(p) > 1024)
        return false;
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == 2 && s[0] == '.' && s[1] == '.')
            return false;
        s += l + (e ? 1 : 0);
        if (!e)
            break;
    }
    return true;
}

/* A RepoTags entry names an image the way `docker load` accepts it: a valid
 * reference with a tag and without a digest ("busybox:1.36",
 * "registry:5000/team/app:v1"). Anything else would become an image record
 * whose name no pull, push or run can use. */
static int repo_tag_check(const json_t *t, size_t i, size_t j, berth_error_t **err)
{
    if (!json_is_string(t))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "manifest.json entry %zu: RepoTags[%zu] is not a string", i, j);
    const char *s = json_string_value(t);
    xfer_ref_t r;
    berth_error_t *e = NULL;
    if (strlen(s) > XFER_MAX_REPO_TAG_LEN || xfer_ref_parse(s, &r, &e) < 0) {
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                        "manifest.json entry %zu: RepoTags[%zu] \"%.100s%s\" is not a valid "
                        "image name: %s",
                        i, j, s, strlen(s) > 100 ? "..." : "", e ? e->message : "too long");
        berth_error_free(&e);
        return -1;
    }
    bool tagged = r.tag && !r.digest;
    xfer_ref_clear(&r);
    if (!tagged)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "manifest.json entry %zu: RepoTags[%zu] \"%.100s\" must be "
                               "NAME:TAG without a digest",
                               i, j, s);
    return 0;
}

int xfer_oci_layout_check(const char *data, size_t len, berth_error_t **err)
{
    if (!data)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "the archive has an index.json but no oci-layout file: not an OCI "
                               "image layout (it must hold {\"imageLayoutVersion\": \"1.0.0\"})");
    if (len > XFER_MAX_SMALL_JSON)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                               "oci-layout of %zu bytes exceeds the limit", len);
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    const json_t *v = json_object_get(root, "imageLayoutVersion");
    int rc = 0;
    if (!json_is_object(root) || !json_is_string(v))
        rc = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                             "oci-layout is not a JSON object with an imageLayoutVersion string");
    else if (strcmp(json_string_value(v), "1.0.0") != 0)
        rc = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                             "oci-layout says imageLayoutVersion \"%.40s\"; only \"1.0.0\" is "
                             "supported",
                             json_string_value(v));
    json_decref(root);
    return rc;
}

int xfer_docker_manifest_parse(const void *buf, size_t len, xfer_docker_entry_t **out, size_t *n,
                               berth_error_t **err)
{
    *out = NULL;
    *n = 0;
    if (len > XFER_MAX_SMALL_JSON)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                               "manifest.json of %zu bytes exceeds the limit", len);
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_array(root)) {
        json_decref(root);
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "manifest.json is not a JSON array of images");
    }
    size_t cnt = json_array_size(root);
    if (cnt > XFER_MAX_MANIFESTS) {
        json_decref(root);
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "manifest.json lists %zu images",
                               cnt);
    }
    xfer_docker_entry_t *e = calloc(cnt ? cnt : 1, sizeof(*e));
    for (size_t i = 0; i < cnt; i++) {
        const json_t *it = json_array_get(root, i);
        const char *cfg = jstr(it, "Config");
        const json_t *tags = json_object_get(it, "RepoTags");
        const json_t *layers = json_object_get(it, "Layers");
        if (!archive_path_ok(cfg) || !json_is_array(layers) ||
            json_array_size(layers) > XFER_MAX_LAYERS ||
            (tags && !json_is_array(tags) && !json_is_null(tags))) {
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                            "manifest.json entry %zu: needs Config, Layers (and RepoTags)", i);
            goto fail;
        }
        e[i].config = xstrdup(cfg);
        size_t nt = json_is_array(tags) ? json_array_size(tags) : 0;
        if (nt > XFER_MAX_REPO_TAGS) {
            berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED,
                            "manifest.json entry %zu lists %zu RepoTags, at most %d", i, nt,
                            XFER_MAX_REPO_TAGS);
            goto fail;
        }
        e[i].repo_tags = calloc(nt ? nt : 1, sizeof(char *));
        for (size_t j = 0; j < nt; j++) {
            const json_t *t = json_array_get(tags, j);
            if (repo_tag_check(t, i, j, err) < 0)
                goto fail;
            e[i].repo_tags[e[i].n_repo_tags++] = xstrdup(json_string_value(t));
        }
        size_t nl = json_array_size(layers);
        e[i].layers = calloc(nl ? nl : 1, sizeof(char *));
        for (size_t j = 0; j < nl; j++) {
            const json_t *l = json_array_get(layers, j);
            if (!json_is_string(l) || !archive_path_ok(json_string_value(l))) {
                berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                "manifest.json entry %zu: layer %zu is not a relative path", i, j);
                goto fail;
            }
            e[i].layers[e[i].n_layers++] = xstrdup(json_string_value(l));
        }
    }
    json_decref(root);
    *out = e;
    *n = cnt;
    return 0;
fail:
    json_decref(root);
    xfer_docker_entries_free(e, cnt);
    return -1;
}

void xfer_desc_pack(msgpack_packer *pk, const xfer_desc_t *d)
{
    int n = 3 + (d->has_platform ? 1 : 0);
    msgpack_pack_map(pk, (size_t)n);
    berth_mp_kv_str(pk, "media_type", d->media_type);
    berth_mp_kv_str(pk, "digest", d->digest);
    berth_mp_kv_u64(pk, "size", d->size);
    if (d->has_platform) {
        berth_mp_pack_str(pk, "platform");
        msgpack_pack_map(pk, 3);
        berth_mp_kv_str(pk, "os", d->platform.os);
        berth_mp_kv_str(pk, "architecture", d->platform.arch);
        berth_mp_kv_str(pk, "variant", d->platform.variant);
    }
}

int xfer_desc_unpack(const msgpack_object *o, xfer_desc_t *out, berth_error_t **err)
{
    memset(out, 0, sizeof(*out));
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "descriptor is not a map");
    char *mt = NULL, *dg = NULL;
    uint64_t size = 0;
    if (berth_mp_get_strdup(o, "media_type", &mt, err) < 0 ||
        berth_mp_get_strdup(o, "digest", &dg, err) < 0 ||
        berth_mp_get_u64(o, "size", &size, err) < 0) {
        free(mt);
        free(dg);
        return -1;
    }
    if (!mt || !dg || !xfer_digest_valid(dg)) {
        free(mt);
        free(dg);
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "descriptor needs media_type and a sha256 digest");
    }
    out->media_type = mt;
    out->digest = dg;
    out->size = size;
    return 0;
}
