/* SPDX-License-Identifier: Apache-2.0 */
/* containers.create and containers.delete, run on worker threads with
 * blocking calls to metadata and content through the loop (sync.c):
 * image → manifest → config → snapshot on the image's chain → users from the
 * image's /etc files through a read-only temporary mount → OCI spec → record.
 * Any failure after the snapshot was prepared removes it again, so a failed
 * create leaves nothing behind. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "berth/log.h"
#include "rt.h"

#define CALL_TIMEOUT_MS 30000
#define MAX_MANIFEST (4u * 1024 * 1024)

static void params_begin(berth_mpbuf_t *b, const char *ns, uint32_t n)
{
    berth_mpbuf_init(b);
    msgpack_pack_map(&b->pk, n + 1);
    berth_mp_kv_str(&b->pk, "namespace", ns);
}

static int call(const char *method, berth_mpbuf_t *b, size_t collect, rt_result_t *r,
                berth_error_t **err)
{
    int rc = rt_sync_call(method, b->buf.data, b->buf.size, CALL_TIMEOUT_MS, collect, r, err);
    berth_mpbuf_destroy(b);
    return rc;
}

int rt_container_get(const char *ns, const char *id, rt_result_t *r,
                     const msgpack_object **container, berth_error_t **err)
{
    berth_mpbuf_t b;
    params_begin(&b, ns, 1);
    berth_mp_kv_str(&b.pk, "id", id);
    if (call("containers.get", &b, 0, r, err) < 0)
        return -1;
    *container = berth_mp_get(r->result, "container");
    if (!*container || (*container)->type != MSGPACK_OBJECT_MAP) {
        rt_result_free(r);
        return berth_error_set(err, BERTH_E_INTERNAL, "metadata returned no container for %s", id);
    }
    return 0;
}

/* Reads a blob fully (bounded) and parses it as a JSON object. */
static json_t *read_json_blob(const char *ns, const char *digest, size_t cap, const char *what,
                              berth_error_t **err)
{
    berth_mpbuf_t b;
    params_begin(&b, ns, 1);
    berth_mp_kv_str(&b.pk, "digest", digest);
    rt_result_t r;
    if (call("content.read", &b, cap, &r, err) < 0) {
        berth_error_wrap(err, "read %s %s", what, digest);
        return NULL;
    }
    json_error_t je;
    json_t *j =
        r.bin_len ? json_loadb((const char *)r.bin, r.bin_len, JSON_REJECT_DUPLICATES, &je) : NULL;
    rt_result_free(&r);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "the image's %s %s is not a JSON object",
                        what, digest);
        return NULL;
    }
    return j;
}

static const char *host_arch(void)
{
#if defined(__x86_64__)
    return "amd64";
#elif defined(__aarch64__)
    return "arm64";
#elif defined(__arm__)
    return "arm";
#elif defined(__s390x__)
    return "s390x";
#elif defined(__powerpc64__)
    return "ppc64le";
#elif defined(__riscv)
    return "riscv64";
#else
    return "unknown";
#endif
}

static bool is_index(const char *mt, const json_t *doc)
{
    if (mt && (strcmp(mt, "application/vnd.oci.image.index.v1+json") == 0 ||
               strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json") == 0))
        return true;
    return json_is_array(json_object_get(doc, "manifests")) && !json_object_get(doc, "layers");
}

/* Configs by the digest of the image's target (manifest or index): content
 * is immutable, so a second container of the same image skips reading the
 * manifest and the config (two calls to content). Small, shared by the
 * worker threads. */
#define CFG_CACHE 8
static struct {
    char *ns, *digest;
    json_t *cfg;
    uint64_t used;
} g_cfg_cache[CFG_CACHE];
static uint64_t g_cfg_clock;
static pthread_mutex_t g_cfg_mu = PTHREAD_MUTEX_INITIALIZER;

static json_t *cfg_cache_get(const char *ns, const char *digest)
{
    json_t *r = NULL;
    pthread_mutex_lock(&g_cfg_mu);
    for (int i = 0; i < CFG_CACHE; i++) {
        if (g_cfg_cache[i].cfg && strcmp(g_cfg_cache[i].ns, ns) == 0 &&
            strcmp(g_cfg_cache[i].digest, digest) == 0) {
            g_cfg_cache[i].used = ++g_cfg_clock;
            /* A copy: callers own and may change theirs. */
            r = json_deep_copy(g_cfg_cache[i].cfg);
            break;
        }
    }
    pthread_mutex_unlock(&g_cfg_mu);
    return r;
}

static void cfg_cache_put(const char *ns, const char *digest, const json_t *cfg)
{
    json_t *copy = json_deep_copy(cfg);
    char *n = strdup(ns), *d = strdup(digest);
    if (!copy || !n || !d) {
        json_decref(copy);
        free(n);
        free(d);
        return;
    }
    pthread_mutex_lock(&g_cfg_mu);
    /* Least recently used; a free slot has used 0. */
    int victim = 0;
    for (int i = 1; i < CFG_CACHE; i++)
        if (g_cfg_cache[i].used < g_cfg_cache[victim].used)
            victim = i;
    json_decref(g_cfg_cache[victim].cfg);
    free(g_cfg_cache[victim].ns);
    free(g_cfg_cache[victim].digest);
    g_cfg_cache[victim].cfg = copy;
    g_cfg_cache[victim].ns = n;
    g_cfg_cache[victim].digest = d;
    g_cfg_cache[victim].used = ++g_cfg_clock;
    pthread_mutex_unlock(&g_cfg_mu);
}

/* Image (the result of images.get) → its config document for this platform. */
static json_t *image_config(const char *ns, const char *image, const msgpack_object *img,
                            berth_error_t **err)
{
    const msgpack_object *target = berth_mp_get(berth_mp_get(img, "image"), "target");
    _cleanup_free_ char *digest = berth_mp_strdup(berth_mp_get(target, "digest"));
    _cleanup_free_ char *mt = berth_mp_strdup(berth_mp_get(target, "media_type"));
    if (!digest) {
        berth_error_set(err, BERTH_E_INTERNAL, "image %s has no target digest", image);
        return NULL;
    }
    json_t *cached = cfg_cache_get(ns, digest);
    if (cached)
        return cached;
    _cleanup_free_ char *target_digest = strdup(digest);
    json_t *doc = read_json_blob(ns, digest, MAX_MANIFEST, "manifest", err);
    for (int depth = 0; doc && is_index(mt, doc); depth++) {
        /* A document with both manifests and layers is ambiguous
         * (CVE-2021-41190) and refused. */
        if (json_object_get(doc, "layers") || depth >= 4) {
            json_decref(doc);
            berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "image %s has a malformed index", image);
            return NULL;
        }
        const char *pick = NULL;
        const char *pick_mt = NULL;
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(doc, "manifests"), i, m)
        {
            json_t *pl = json_object_get(m, "platform");
            const char *os = json_string_value(json_object_get(pl, "os"));
            const char *arch = json_string_value(json_object_get(pl, "architecture"));
            if ((!pl ||
                 (os && strcmp(os, "linux") == 0 && arch && strcmp(arch, host_arch()) == 0)) &&
                json_string_value(json_object_get(m, "digest"))) {
                pick = json_string_value(json_object_get(m, "digest"));
                pick_mt = json_string_value(json_object_get(m, "mediaType"));
                break;
            }
        }
        if (!pick) {
            json_decref(doc);
            berth_error_set(err, BERTH_E_NOT_FOUND, "image %s has no manifest for linux/%s", image,
                            host_arch());
            return NULL;
        }
        free(digest);
        free(mt);
        digest = strdup(pick);
        mt = pick_mt ? strdup(pick_mt) : NULL;
        json_decref(doc);
        doc = read_json_blob(ns, digest, MAX_MANIFEST, "manifest", err);
    }
    if (!doc)
        return NULL;
    json_t *cfgd = json_object_get(doc, "config");
    const char *cdig = json_string_value(json_object_get(cfgd, "digest"));
    if (!cdig || json_object_get(doc, "manifests") ||
        !json_is_array(json_object_get(doc, "layers"))) {
        json_decref(doc);
        berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "image %s has a malformed manifest", image);
        return NULL;
    }
    char *cd = strdup(cdig);
    json_decref(doc);
    json_t *cfg = read_json_blob(ns, cd, RT_MAX_IMAGE_CONFIG, "config", err);
    free(cd);
    if (cfg && target_digest)
        cfg_cache_put(ns, target_digest, cfg);
    return cfg;
}

/* The image's /etc/passwd and /etc/group by its layers (the lowerdir of the
 * container's overlay mount: committed snapshots never change and their ids
 * are never reused), so that a second container of an image is not mounted
 * read-only first just to read them. Small files only. */
#define ETC_CACHE 8
#define ETC_CACHE_MAX_FILE (64u * 1024)
static struct {
    char *key;
    rt_etc_t etc;
    uint64_t used;
} g_etc_cache[ETC_CACHE];
static uint64_t g_etc_clock;
static pthread_mutex_t g_etc_mu = PTHREAD_MUTEX_INITIALIZER;

/* The cache key of an image's root: "chdir|lowerdir" of its only overlay
 * mount, or NULL (a bind mount of an empty image, several mounts). */
static char *etc_cache_key(const rt_fsmount_t *fm, size_t nfm)
{
    if (nfm != 1 || !fm[0].type || strcmp(fm[0].type, "overlay") != 0)
        return NULL;
    for (size_t i = 0; i < fm[0].n_options; i++) {
        if (strncmp(fm[0].options[i], "lowerdir=", 9) == 0) {
            char *k = NULL;
            if (asprintf(&k, "%s|%s", fm[0].chdir ? fm[0].chdir : "", fm[0].options[i] + 9) < 0)
                return NULL;
            return k;
        }
    }
    return NULL;
}

static bool etc_cache_get(const char *key, rt_etc_t *out)
{
    bool hit = false;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&g_etc_mu);
    for (int i = 0; i < ETC_CACHE && !hit; i++) {
        if (!g_etc_cache[i].key || strcmp(g_etc_cache[i].key, key) != 0)
            continue;
        g_etc_cache[i].used = ++g_etc_clock;
        hit = true;
        for (int f = 0; f < 2; f++) {
            const rt_etc_t *e = &g_etc_cache[i].etc;
            if (!e->data[f])
                continue;
            if (!(out->data[f] = malloc(e->len[f] + 1))) {
                hit = false;
                break;
            }
            memcpy(out->data[f], e->data[f], e->len[f] + 1);
            out->len[f] = e->len[f];
        }
    }
    pthread_mutex_unlock(&g_etc_mu);
    if (!hit)
        rt_etc_clear(out);
    return hit;
}

/* Takes *e (cleared) when it is small enough to keep. */
static void etc_cache_put(const char *key, rt_etc_t *e)
{
    if (e->len[0] > ETC_CACHE_MAX_FILE || e->len[1] > ETC_CACHE_MAX_FILE)
        return;
    char *k = strdup(key);
    if (!k)
        return;
    pthread_mutex_lock(&g_etc_mu);
    /* Least recently used; a free slot has used 0. */
    int victim = 0;
    for (int i = 1; i < ETC_CACHE; i++)
        if (g_etc_cache[i].used < g_etc_cache[victim].used)
            victim = i;
    free(g_etc_cache[victim].key);
    rt_etc_clear(&g_etc_cache[victim].etc);
    g_etc_cache[victim].key = k;
    g_etc_cache[victim].etc = *e;
    g_etc_cache[victim].used = ++g_etc_clock;
    memset(e, 0, sizeof(*e));
    pthread_mutex_unlock(&g_etc_mu);
}

static void remove_snapshot(const char *ns, const char *key)
{
    berth_mpbuf_t b;
    params_begin(&b, ns, 1);
    berth_mp_kv_str(&b.pk, "key", key);
    rt_result_t r;
    berth_error_t *err = NULL;
    if (call("snapshots.remove", &b, 0, &r, &err) < 0) {
        if (err->code != BERTH_E_NOT_FOUND)
            berth_log(BERTH_LOG_WARN, "msg=\"remove snapshot\" ns=%s key=%s err=\"%s\"", ns, key,
                      err->message);
        berth_error_free(&err);
        return;
    }
    rt_result_free(&r);
}

/* Generates the spec with the image root mounted read-only for users. */
static json_t *build_spec(const char *ns, const char *id, const msgpack_object *params,
                          const json_t *cfg, const msgpack_object *mounts, berth_error_t **err)
{
    char *cg = rt_cgroups_path(ns, id);
    rt_spec_input_t in = {.id = id,
                          .ns = ns,
                          .image_config = cfg,
                          .rootfd = -1,
                          .host = &rt_g.host,
                          .cgroups_path = cg};
    berth_bytes_t user_spec = {0};
    if (berth_mp_get_bin(params, "spec", &user_spec, err) < 0) {
        free(cg);
        return NULL;
    }
    if (user_spec.ptr && user_spec.len) {
        json_t *s = rt_spec_from_user(user_spec.ptr, user_spec.len, &in, err);
        free(cg);
        return s;
    }
    rt_spec_opts_t o;
    if (rt_spec_opts_from_mp(params, &o, err) < 0) {
        free(cg);
        return NULL;
    }
    rt_host_t priv_host = {0};
    if (o.privileged) {
        rt_host_probe(&priv_host, true);
        in.host = &priv_host;
    }
    /* Users and groups come from the image: its /etc files from the cache,
     * or read with its root mounted read-only. */
    char tmp[4096] = "";
    rt_fsmount_t *fm = NULL;
    size_t nfm = 0;
    bool mounted = false;
    json_t *spec = NULL;
    rt_etc_t etc = {0};
    _cleanup_free_ char *key = NULL;
    if (rt_fsmounts_from_mp(mounts, &fm, &nfm, err) < 0)
        goto out;
    key = etc_cache_key(fm, nfm);
    if (key && etc_cache_get(key, &etc)) {
        in.etc = &etc;
        spec = rt_spec_generate(&in, &o, err);
        goto out;
    }
    snprintf(tmp, sizeof(tmp), "%s/%s-%s-XXXXXX", rt_g.tmp_dir, ns, id);
    if (rt_mkdir_p(rt_g.tmp_dir, 0700, err) < 0 || !mkdtemp(tmp)) {
        if (err && !*err)
            berth_error_errno(err, errno, "temporary mount point in %s", rt_g.tmp_dir);
        tmp[0] = 0;
        goto out;
    }
    if (rt_rootfs_mount(tmp, fm, nfm, true, err) < 0)
        goto out;
    mounted = true;
    in.rootfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (in.rootfd < 0) {
        berth_error_errno(err, errno, "open %s", tmp);
        goto out;
    }
    if (key) {
        /* Files that cannot be read (a directory, too large) are left to
         * the resolution itself, which says so when it needs them. */
        berth_error_t *ign = NULL;
        if (rt_etc_read(in.rootfd, &etc, &ign) == 0)
            in.etc = &etc;
        berth_error_free(&ign);
    }
    spec = rt_spec_generate(&in, &o, err);
    if (spec && in.etc)
        etc_cache_put(key, &etc);
out:
    if (in.rootfd >= 0)
        close(in.rootfd);
    if (mounted) {
        berth_error_t *e2 = NULL;
        if (rt_rootfs_unmount(tmp, &e2) < 0) {
            berth_log(BERTH_LOG_WARN, "msg=\"temporary unmount\" path=%s err=\"%s\"", tmp,
                      e2->message);
            berth_error_free(&e2);
        }
    }
    if (tmp[0])
        rmdir(tmp);
    rt_etc_clear(&etc);
    rt_fsmounts_free(fm, nfm);
    rt_spec_opts_free(&o);
    rt_host_clear(&priv_host);
    free(cg);
    return spec;
}

int rt_container_create(const char *ns, const msgpack_object *params, berth_mpbuf_t *out,
                        berth_error_t **err)
{
    _cleanup_free_ char *id = NULL;
    _cleanup_free_ char *image = NULL;
    _cleanup_free_ char *runtime_name = NULL;
    const msgpack_object *labels = NULL, *runtime = NULL, *runtime_opts = NULL;
    bool rm = false;
    if (berth_mp_get_strdup(params, "id", &id, err) < 0 ||
        berth_mp_get_strdup(params, "image", &image, err) < 0 ||
        berth_mp_get_map(params, "labels", &labels, err) < 0 ||
        berth_mp_get_bool(params, "rm", &rm, err) < 0)
        return -1;
    if (!id || !rt_valid_id(id))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "invalid container id \"%s\": use letters, digits, '_', '.' and '-' "
                               "(at most %d, starting with a letter or digit)",
                               id ? id : "", RT_MAX_ID);
    if (!image || !image[0])
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "containers.create needs an image");
    runtime = berth_mp_get(params, "runtime");
    if (runtime && runtime->type == MSGPACK_OBJECT_STR) {
        runtime_name = berth_mp_strdup(runtime);
    } else if (runtime && runtime->type == MSGPACK_OBJECT_MAP) {
        runtime_name = berth_mp_strdup(berth_mp_get(runtime, "name"));
        runtime_opts = berth_mp_get(runtime, "options");
    }
    if (!runtime_name || !runtime_name[0]) {
        free(runtime_name);
        runtime_name = strdup("io.containerd.runc.v2");
    }
    _cleanup_free_ char *bin = NULL;
    if (rt_runtime_binary(runtime_name, &bin, err) < 0)
        return -1;
    /* Check the options before anything is created. */
    berth_bytes_t user_spec = {0};
    if (berth_mp_get_bin(params, "spec", &user_spec, err) < 0)
        return -1;
    if (!user_spec.len) {
        rt_spec_opts_t o;
        if (rt_spec_opts_from_mp(params, &o, err) < 0)
            return -1;
        rt_spec_opts_free(&o);
    }

    uint64_t t0 = berth_mono_ms(), t_get, t_img, t_snap, t_spec;
    /* Duplicate ids fail before anything is touched; the image is looked up
     * at the same time (both only read). */
    berth_mpbuf_t gb, ib;
    params_begin(&gb, ns, 1);
    berth_mp_kv_str(&gb.pk, "id", id);
    params_begin(&ib, ns, 1);
    berth_mp_kv_str(&ib.pk, "name", image);
    rt_result_t gr, ir;
    rt_sync_req_t q[2] = {
        {"containers.get", gb.buf.data, gb.buf.size, CALL_TIMEOUT_MS, 0, &gr, NULL},
        {"images.get", ib.buf.data, ib.buf.size, CALL_TIMEOUT_MS, 0, &ir, NULL},
    };
    rt_sync_calls(q, 2);
    berth_mpbuf_destroy(&gb);
    berth_mpbuf_destroy(&ib);
    if (!q[0].err) {
        rt_result_free(&gr);
        rt_result_free(&ir);
        berth_error_free(&q[1].err);
        return berth_error_set(err, BERTH_E_ALREADY_EXISTS,
                               "container %s already exists in namespace %s", id, ns);
    }
    if (q[0].err->code != BERTH_E_NOT_FOUND) {
        *err = q[0].err;
        rt_result_free(&ir);
        berth_error_free(&q[1].err);
        return -1;
    }
    berth_error_free(&q[0].err);
    if (q[1].err) {
        *err = q[1].err;
        return -1;
    }
    t_get = berth_mono_ms();

    json_t *cfg = image_config(ns, image, ir.result, err);
    rt_result_free(&ir);
    if (!cfg)
        return -1;
    t_img = berth_mono_ms();
    _cleanup_free_ char *chain = NULL;
    if (rt_chain_id(cfg, &chain, err) < 0) {
        json_decref(cfg);
        return berth_error_wrap(err, "image %s", image);
    }

    berth_mpbuf_t b;
    params_begin(&b, ns, 2);
    berth_mp_kv_str(&b.pk, "key", id);
    berth_mp_kv_str(&b.pk, "parent", chain);
    rt_result_t snap;
    if (call("snapshots.prepare", &b, 0, &snap, err) < 0) {
        json_decref(cfg);
        if ((*err)->code == BERTH_E_NOT_FOUND)
            return berth_error_wrap(err,
                                    "image %s is not unpacked (no snapshot %s); pull or "
                                    "import it again to unpack",
                                    image, chain);
        if ((*err)->code == BERTH_E_ALREADY_EXISTS)
            return berth_error_wrap(err, "a snapshot named %s already exists", id);
        return berth_error_wrap(err, "prepare the rootfs snapshot of %s", id);
    }
    /* From here on a failure removes the snapshot. */
    t_snap = berth_mono_ms();
    json_t *spec = build_spec(ns, id, params, cfg, berth_mp_get(snap.result, "mounts"), err);
    t_spec = berth_mono_ms();
    rt_result_free(&snap);
    if (!spec) {
        json_decref(cfg);
        remove_snapshot(ns, id);
        return -1;
    }
    const char *stop = NULL;
    json_t *cc = json_object_get(cfg, "config");
    if (json_is_object(cc))
        stop = json_string_value(json_object_get(cc, "StopSignal"));
    char *js = json_dumps(spec, JSON_COMPACT);
    json_decref(spec);

    params_begin(&b, ns, 1);
    berth_mp_pack_str(&b.pk, "container");
    msgpack_pack_map(&b.pk, 8);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_mp_pack_str(&b.pk, "labels");
    {
        uint32_t n = labels ? labels->via.map.size : 0;
        /* Reserved labels are berth's to set. */
        uint32_t keep = 0;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *k = &labels->via.map.ptr[i].key;
            if (!(k->type == MSGPACK_OBJECT_STR && k->via.str.size >= 9 &&
                  memcmp(k->via.str.ptr, "berth.io/", 9) == 0))
                keep++;
        }
        msgpack_pack_map(&b.pk, keep + 1);
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *k = &labels->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR && k->via.str.size >= 9 &&
                memcmp(k->via.str.ptr, "berth.io/", 9) == 0)
                continue;
            msgpack_pack_object(&b.pk, *k);
            msgpack_pack_object(&b.pk, labels->via.map.ptr[i].val);
        }
        berth_mp_kv_str(&b.pk, "berth.io/stop-signal", stop && stop[0] ? stop : "SIGTERM");
    }
    berth_mp_kv_str(&b.pk, "image", image);
    berth_mp_pack_str(&b.pk, "runtime");
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "name", runtime_name);
    berth_mp_pack_str(&b.pk, "options");
    if (runtime_opts)
        msgpack_pack_object(&b.pk, *runtime_opts);
    else
        msgpack_pack_nil(&b.pk);
    berth_mp_pack_str(&b.pk, "spec");
    berth_mp_pack_bin(&b.pk, js, strlen(js));
    berth_mp_kv_str(&b.pk, "snapshotter", "overlayfs");
    berth_mp_kv_str(&b.pk, "snapshot_key", id);
    berth_mp_kv_bool(&b.pk, "rm", rm);
    free(js);
    json_decref(cfg);
    rt_result_t cr;
    if (call("meta.containers_create", &b, 0, &cr, err) < 0) {
        remove_snapshot(ns, id);
        return -1;
    }
    const msgpack_object *c = berth_mp_get(cr.result, "container");
    msgpack_pack_map(&out->pk, 1);
    berth_mp_pack_str(&out->pk, "container");
    if (c)
        msgpack_pack_object(&out->pk, *c);
    else
        msgpack_pack_nil(&out->pk);
    rt_result_free(&cr);
    berth_log(BERTH_LOG_INFO, "msg=\"container created\" ns=%s id=%s image=%s", ns, id, image);
    berth_log(BERTH_LOG_DEBUG,
              "msg=\"container create timing\" id=%s get_ms=%llu image_ms=%llu snapshot_ms=%llu "
              "spec_ms=%llu record_ms=%llu",
              id, (unsigned long long)(t_get - t0), (unsigned long long)(t_img - t_get),
              (unsigned long long)(t_snap - t_img), (unsigned long long)(t_spec - t_snap),
              (unsigned long long)(berth_mono_ms() - t_spec));
    return 0;
}

int rt_container_delete(const char *ns, const char *id, bool keep_snapshot, berth_error_t **err)
{
    rt_result_t r;
    const msgpack_object *c;
    if (rt_container_get(ns, id, &r, &c, err) < 0)
        return -1;
    _cleanup_free_ char *key = berth_mp_strdup(berth_mp_get(c, "snapshot_key"));
    rt_result_free(&r);
    return rt_container_delete_key(ns, id, keep_snapshot ? NULL : key, err);
}

int rt_container_delete_key(const char *ns, const char *id, const char *key, berth_error_t **err)
{
    /* The snapshot and the record at once: metadata commits both in one
     * write batch when they arrive together. A crash in between can only
     * leave a snapshot no container refers to, which gc collects. */
    berth_mpbuf_t sb, cb;
    /* async: the snapshot's record goes with the container's; its files
     * are deleted after the answer (a few ms per container, off `run
     * --rm`'s path), as containerd's gc deletes them later. */
    params_begin(&sb, ns, 2);
    berth_mp_kv_str(&sb.pk, "key", key ? key : "");
    berth_mp_kv_bool(&sb.pk, "async", true);
    params_begin(&cb, ns, 1);
    berth_mp_kv_str(&cb.pk, "id", id);
    rt_result_t sr, cr;
    rt_sync_req_t q[2] = {
        {"meta.containers_delete", cb.buf.data, cb.buf.size, CALL_TIMEOUT_MS, 0, &cr, NULL},
        {"snapshots.remove", sb.buf.data, sb.buf.size, CALL_TIMEOUT_MS, 0, &sr, NULL},
    };
    rt_sync_calls(q, key && key[0] ? 2 : 1);
    berth_mpbuf_destroy(&sb);
    berth_mpbuf_destroy(&cb);
    if (key && key[0]) {
        if (q[1].err) {
            if (q[1].err->code != BERTH_E_NOT_FOUND)
                berth_log(BERTH_LOG_WARN, "msg=\"remove snapshot\" ns=%s key=%s err=\"%s\"", ns,
                          key, q[1].err->message);
            berth_error_free(&q[1].err);
        } else {
            rt_result_free(&sr);
        }
    }
    if (q[0].err) {
        *err = q[0].err;
        return -1;
    }
    rt_result_free(&cr);
    berth_log(BERTH_LOG_INFO, "msg=\"container deleted\" ns=%s id=%s", ns, id);
    return 0;
}
