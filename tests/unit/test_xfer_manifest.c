/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for transfer's manifest/index/config parsing and validation,
 * chain ids, index selection and docker manifest.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/transfer/internal.h"

#define A64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define B64 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define C64 "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

#define DESC(mt, hex, size)                                                                        \
    "{\"mediaType\":\"" mt "\",\"digest\":\"sha256:" hex "\",\"size\":" #size "}"

static const char *oci_manifest =
    "{\"schemaVersion\":2,\"mediaType\":\"" XFER_MT_OCI_MANIFEST "\","
    "\"config\":" DESC(XFER_MT_OCI_CONFIG, A64,
                       100) ","
                            "\"layers\":[" DESC(XFER_MT_OCI_LAYER_GZ, B64, 2000) "," DESC(
                                XFER_MT_OCI_LAYER_GZ, C64, 3000) "]}";

static int parse(const char *s, const char *mt, xfer_doc_t *d, berth_error_t **err)
{
    return xfer_doc_parse(s, strlen(s), mt, d, err);
}

static void expect_fail(const char *doc, const char *mt, const char *why)
{
    xfer_doc_t d;
    berth_error_t *err = NULL;
    assert_int_equal(parse(doc, mt, &d, &err), -1);
    assert_non_null(err);
    if (!strstr(err->message, why))
        fail_msg("message \"%s\" lacks \"%s\"", err->message, why);
    berth_error_free(&err);
}

static void test_manifest_ok(void **s)
{
    xfer_doc_t d;
    berth_error_t *err = NULL;
    assert_int_equal(parse(oci_manifest, XFER_MT_OCI_MANIFEST, &d, &err), 0);
    assert_int_equal(d.kind, XFER_DOC_MANIFEST);
    assert_string_equal(d.media_type, XFER_MT_OCI_MANIFEST);
    assert_string_equal(d.config.digest, "sha256:" A64);
    assert_int_equal(d.config.size, 100);
    assert_int_equal(d.n_layers, 2);
    assert_int_equal(d.layers[1].size, 3000);
    assert_true(xfer_mt_is_layer(d.layers[0].media_type));
    xfer_doc_clear(&d);
    /* No mediaType in the document: shape decides, announced type agrees. */
    const char *nomt =
        "{\"schemaVersion\":2,\"config\":" DESC(XFER_MT_DOCKER_CONFIG, A64, 1) ",\"layers\":[]}";
    assert_int_equal(parse(nomt, XFER_MT_DOCKER_MANIFEST, &d, &err), 0);
    assert_string_equal(d.media_type, XFER_MT_DOCKER_MANIFEST);
    xfer_doc_clear(&d);
    assert_int_equal(parse(nomt, NULL, &d, &err), 0);
    assert_string_equal(d.media_type, XFER_MT_OCI_MANIFEST);
    xfer_doc_clear(&d);
}

static void test_index_ok(void **s)
{
    const char *idx =
        "{\"schemaVersion\":2,\"mediaType\":\"" XFER_MT_DOCKER_LIST "\",\"manifests\":["
        "{\"mediaType\":\"" XFER_MT_DOCKER_MANIFEST "\",\"digest\":\"sha256:" A64 "\",\"size\":10,"
        "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v6\"}},"
        "{\"mediaType\":\"" XFER_MT_DOCKER_MANIFEST "\",\"digest\":\"sha256:" B64 "\",\"size\":11,"
        "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v7\"}},"
        "{\"mediaType\":\"" XFER_MT_DOCKER_MANIFEST "\",\"digest\":\"sha256:" C64 "\",\"size\":12,"
        "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"},"
        "\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}}]}";
    xfer_doc_t d;
    berth_error_t *err = NULL;
    assert_int_equal(parse(idx, NULL, &d, &err), 0);
    assert_int_equal(d.kind, XFER_DOC_INDEX);
    assert_int_equal(d.n_manifests, 3);
    assert_string_equal(d.manifests[2].ref_name, "v1");
    xfer_platform_t want;
    xfer_platform_set(&want, "linux", "amd64", "");
    assert_int_equal(xfer_index_select(&d, &want), 2);
    xfer_platform_set(&want, "linux", "arm", "v7");
    assert_int_equal(xfer_index_select(&d, &want), 1);
    xfer_platform_set(&want, "linux", "arm", "v8");
    assert_int_equal(xfer_index_select(&d, &want), 1); /* closest lower variant */
    xfer_platform_set(&want, "linux", "s390x", "");
    assert_int_equal(xfer_index_select(&d, &want), -1);

    /* Round trip through the export index writer. */
    size_t len = 0;
    char *js = xfer_index_json(d.manifests, d.n_manifests, &len);
    xfer_doc_t d2;
    assert_int_equal(xfer_doc_parse(js, len, XFER_MT_OCI_INDEX, &d2, &err), 0);
    assert_int_equal(d2.n_manifests, 3);
    assert_string_equal(d2.manifests[1].digest, "sha256:" B64);
    assert_string_equal(d2.manifests[1].platform.variant, "v7");
    assert_string_equal(d2.manifests[2].ref_name, "v1");
    free(js);
    xfer_doc_clear(&d2);
    xfer_doc_clear(&d);
}

static void test_invalid_docs(void **s)
{
    /* CVE-2021-41190: both manifests and layers. */
    expect_fail("{\"schemaVersion\":2,\"manifests\":[],\"layers\":[]}", NULL, "ambiguous");
    expect_fail("{\"schemaVersion\":2,\"manifests\":[],\"config\":" DESC("a/b", A64, 1) "}", NULL,
                "ambiguous");
    /* Media type disagreeing with the shape or the announced type. */
    expect_fail("{\"schemaVersion\":2,\"mediaType\":\"" XFER_MT_OCI_INDEX
                "\",\"config\":" DESC("a/b", A64, 1) ",\"layers\":[]}",
                NULL, "does not match its content");
    expect_fail("{\"schemaVersion\":2,\"manifests\":[]}", XFER_MT_OCI_MANIFEST, "does not match");
    expect_fail(oci_manifest, XFER_MT_DOCKER_MANIFEST, "does not match the announced");
    expect_fail("{\"schemaVersion\":1,\"fsLayers\":[]}", NULL, "schema 1");
    expect_fail("{\"schemaVersion\":2}", NULL, "neither");
    expect_fail("[1,2]", NULL, "not a JSON object");
    expect_fail("{\"schemaVersion\":2,", NULL, "not valid JSON");
    expect_fail("{\"schemaVersion\":2,\"schemaVersion\":2,\"layers\":[]}", NULL, "not valid JSON");
    expect_fail("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"a/b\",\"digest\":\"sha256:xyz\","
                "\"size\":1},\"layers\":[]}",
                NULL, "digest");
    expect_fail("{\"schemaVersion\":2,\"config\":" DESC("a/b", A64, -1) ",\"layers\":[]}", NULL,
                "size");
    expect_fail("{\"schemaVersion\":2,\"config\":" DESC("bad type", A64, 1) ",\"layers\":[]}", NULL,
                "mediaType");
    expect_fail("{\"schemaVersion\":2,\"config\":" DESC("a/b", A64, 99999999) ",\"layers\":[]}",
                NULL, "exceeds the limit");
    /* Size cap before parsing. */
    size_t big = XFER_MAX_MANIFEST + 1;
    char *buf = malloc(big);
    memset(buf, ' ', big);
    xfer_doc_t d;
    berth_error_t *err = NULL;
    assert_int_equal(xfer_doc_parse(buf, big, NULL, &d, &err), -1);
    assert_int_equal(err->code, BERTH_E_RESOURCE_EXHAUSTED);
    berth_error_free(&err);
    free(buf);
    /* Too many layers. */
    size_t cap = 64 + (XFER_MAX_LAYERS + 1) * 120;
    char *many = malloc(cap);
    size_t off = (size_t)sprintf(
        many, "{\"schemaVersion\":2,\"config\":" DESC("a/b", A64, 1) ",\"layers\":[");
    for (int i = 0; i <= XFER_MAX_LAYERS; i++)
        off += (size_t)sprintf(many + off, "%s" DESC("a/b", B64, 1), i ? "," : "");
    sprintf(many + off, "]}");
    expect_fail(many, NULL, "more than the limit");
    free(many);
}

static void test_config(void **s)
{
    const char *cfg = "{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\",\"rootfs\":"
                      "{\"type\":\"layers\",\"diff_ids\":[\"sha256:" A64 "\",\"sha256:" B64
                      "\",\"sha256:" C64 "\"]},\"config\":{\"Env\":[\"A=b\"]}}";
    xfer_config_t c;
    berth_error_t *err = NULL;
    assert_int_equal(xfer_config_parse(cfg, strlen(cfg), &c, &err), 0);
    assert_int_equal(c.n_diff_ids, 3);
    assert_string_equal(c.platform.arch, "arm64");
    char **chain = NULL;
    assert_int_equal(xfer_chain_ids(c.diff_ids, c.n_diff_ids, &chain, &err), 0);
    assert_string_equal(chain[0], "sha256:" A64);
    assert_string_equal(chain[1],
                        "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c");
    assert_string_equal(chain[2],
                        "sha256:c1377126441fb2f5ec2c21ae2a60255331d639e830f0ee1b40a36e52d4c40588");
    xfer_strv_free(chain, 3);
    xfer_config_clear(&c);

    const char *bad = "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"md5:x\"]}}";
    assert_int_equal(xfer_config_parse(bad, strlen(bad), &c, &err), -1);
    assert_non_null(strstr(err->message, "diff_id 0"));
    berth_error_free(&err);
    const char *nofs = "{\"os\":\"linux\"}";
    assert_int_equal(xfer_config_parse(nofs, strlen(nofs), &c, &err), -1);
    assert_non_null(strstr(err->message, "rootfs"));
    berth_error_free(&err);
}

static void test_sha(void **s)
{
    char d[72];
    xfer_sha256_digest("hello", 5, d);
    assert_string_equal(d,
                        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
}

static void test_docker_manifest(void **s)
{
    const char *js = "[{\"Config\":\"abc.json\",\"RepoTags\":[\"busybox:latest\"],"
                     "\"Layers\":[\"l1/layer.tar\",\"blobs/sha256/" A64 "\"]}]";
    xfer_docker_entry_t *e = NULL;
    size_t n = 0;
    berth_error_t *err = NULL;
    assert_int_equal(xfer_docker_manifest_parse(js, strlen(js), &e, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].config, "abc.json");
    assert_int_equal(e[0].n_repo_tags, 1);
    assert_string_equal(e[0].repo_tags[0], "busybox:latest");
    assert_int_equal(e[0].n_layers, 2);
    xfer_docker_entries_free(e, n);
    const char *evil = "[{\"Config\":\"../../etc/passwd\",\"Layers\":[]}]";
    assert_int_equal(xfer_docker_manifest_parse(evil, strlen(evil), &e, &n, &err), -1);
    berth_error_free(&err);
    const char *evil2 = "[{\"Config\":\"a.json\",\"Layers\":[\"/abs\"]}]";
    assert_int_equal(xfer_docker_manifest_parse(evil2, strlen(evil2), &e, &n, &err), -1);
    berth_error_free(&err);
}

/* RepoTags become image names: each must be a valid NAME:TAG reference
 * (docker load's rule), else the whole manifest.json is refused naming the
 * entry and the tag. */
static void test_docker_repo_tags(void **s)
{
    static const char *const good[] = {
        "busybox:latest", "busybox", "registry.example:5000/team/app:v1.2", "a/b/c:x_y-z.1", NULL};
    static const struct {
        const char *tag, *want;
    } bad[] = {
        {"\"BAD TAG\"", "RepoTags[0] \"BAD TAG\" is not a valid image name"},
        {"\"\"", "RepoTags[0] \"\" is not a valid image name"},
        {"\"a\\u0001b:1\"", "is not a valid image name"},
        {"\"Upper/Case:1\"", "is not a valid image name"},
        {"\"busybox:bad tag\"", "is not a valid image name"},
        {"\"busybox@sha256:" A64 "\"", "must be NAME:TAG without a digest"},
        {"\"busybox:1@sha256:" A64 "\"", "must be NAME:TAG without a digest"},
        {"7", "RepoTags[0] is not a string"},
        {"null", "RepoTags[0] is not a string"},
        {"[\"x:1\"]", "RepoTags[0] is not a string"},
    };
    char js[512];
    xfer_docker_entry_t *e = NULL;
    size_t n = 0;
    berth_error_t *err = NULL;
    for (size_t i = 0; good[i]; i++) {
        snprintf(js, sizeof(js), "[{\"Config\":\"c.json\",\"RepoTags\":[\"%s\"],\"Layers\":[]}]",
                 good[i]);
        if (xfer_docker_manifest_parse(js, strlen(js), &e, &n, &err) != 0)
            fail_msg("%s refused: %s", good[i], err ? err->message : "?");
        assert_int_equal(e[0].n_repo_tags, 1);
        assert_string_equal(e[0].repo_tags[0], good[i]);
        xfer_docker_entries_free(e, n);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(js, sizeof(js),
                 "[{\"Config\":\"c.json\",\"Layers\":[]},"
                 "{\"Config\":\"c.json\",\"RepoTags\":[%s],\"Layers\":[]}]",
                 bad[i].tag);
        e = NULL;
        n = 0;
        if (xfer_docker_manifest_parse(js, strlen(js), &e, &n, &err) != -1)
            fail_msg("RepoTags [%s] accepted", bad[i].tag);
        assert_null(e);
        assert_int_equal(n, 0);
        assert_int_equal(err->code, BERTH_E_INVALID_ARGUMENT);
        if (!strstr(err->message, bad[i].want) || !strstr(err->message, "entry 1"))
            fail_msg("RepoTags [%s]: %s (want \"%s\")", bad[i].tag, err->message, bad[i].want);
        berth_error_free(&err);
    }
    /* The second tag is the bad one: its index is named. */
    const char *two = "[{\"Config\":\"c.json\",\"RepoTags\":[\"ok:1\",\"no good\"],\"Layers\":[]}]";
    assert_int_equal(xfer_docker_manifest_parse(two, strlen(two), &e, &n, &err), -1);
    assert_non_null(strstr(err->message, "entry 0: RepoTags[1] \"no good\""));
    berth_error_free(&err);
    /* More tags than the limit: refused, not silently cut. */
    size_t cap = 64 + (XFER_MAX_REPO_TAGS + 1) * 8;
    char *many = malloc(cap);
    size_t off =
        (size_t)snprintf(many, cap, "[{\"Config\":\"c.json\",\"Layers\":[],\"RepoTags\":[");
    for (int i = 0; i <= XFER_MAX_REPO_TAGS; i++)
        off += (size_t)snprintf(many + off, cap - off, "%s\"a:%d\"", i ? "," : "", i);
    off += (size_t)snprintf(many + off, cap - off, "]}]");
    assert_int_equal(xfer_docker_manifest_parse(many, off, &e, &n, &err), -1);
    assert_non_null(strstr(err->message, "RepoTags, at most"));
    berth_error_free(&err);
    free(many);
}

static void test_oci_layout(void **s)
{
    berth_error_t *err = NULL;
    const char *ok[] = {"{\"imageLayoutVersion\":\"1.0.0\"}",
                        " { \"imageLayoutVersion\" : \"1.0.0\", \"x-extra\": 1 }\n", NULL};
    for (size_t i = 0; ok[i]; i++)
        assert_int_equal(xfer_oci_layout_check(ok[i], strlen(ok[i]), NULL), 0);
    static const struct {
        const char *data;
        berth_code_t code;
        const char *want;
    } bad[] = {
        {NULL, BERTH_E_INVALID_ARGUMENT, "no oci-layout file"},
        {"", BERTH_E_INVALID_ARGUMENT, "not a JSON object"},
        {"not json", BERTH_E_INVALID_ARGUMENT, "not a JSON object"},
        {"[\"1.0.0\"]", BERTH_E_INVALID_ARGUMENT, "not a JSON object"},
        {"{}", BERTH_E_INVALID_ARGUMENT, "imageLayoutVersion string"},
        {"{\"imageLayoutVersion\":1}", BERTH_E_INVALID_ARGUMENT, "imageLayoutVersion string"},
        {"{\"imageLayoutVersion\":\"1.0.0\",\"imageLayoutVersion\":\"1.0.0\"}",
         BERTH_E_INVALID_ARGUMENT, "not a JSON object"},
        {"{\"imageLayoutVersion\":\"2.0.0\"}", BERTH_E_INVALID_ARGUMENT,
         "imageLayoutVersion \"2.0.0\"; only \"1.0.0\" is supported"},
        {"{\"imageLayoutVersion\":\"1.0\"}", BERTH_E_INVALID_ARGUMENT, "only \"1.0.0\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *d = bad[i].data;
        assert_int_equal(xfer_oci_layout_check(d, d ? strlen(d) : 0, &err), -1);
        assert_int_equal(err->code, bad[i].code);
        if (!strstr(err->message, bad[i].want))
            fail_msg("oci-layout %s: %s (want \"%s\")", d ? d : "(absent)", err->message,
                     bad[i].want);
        berth_error_free(&err);
    }
}

static void test_desc_msgpack(void **s)
{
    xfer_desc_t d = {.media_type = XFER_MT_OCI_MANIFEST, .digest = "sha256:" A64, .size = 42};
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    xfer_desc_pack(&b.pk, &d);
    msgpack_zone *z = NULL;
    msgpack_object o;
    berth_error_t *err = NULL;
    assert_int_equal(berth_mp_unpack(b.buf.data, b.buf.size, NULL, &z, &o, &err), 0);
    xfer_desc_t d2;
    assert_int_equal(xfer_desc_unpack(&o, &d2, &err), 0);
    assert_string_equal(d2.digest, d.digest);
    assert_int_equal(d2.size, 42);
    xfer_desc_clear(&d2);
    msgpack_zone_free(z);
    berth_mpbuf_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_ok),  cmocka_unit_test(test_index_ok),
        cmocka_unit_test(test_invalid_docs), cmocka_unit_test(test_config),
        cmocka_unit_test(test_sha),          cmocka_unit_test(test_docker_manifest),
        cmocka_unit_test(test_desc_msgpack), cmocka_unit_test(test_docker_repo_tags),
        cmocka_unit_test(test_oci_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
