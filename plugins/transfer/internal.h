/* SPDX-License-Identifier: Apache-2.0 */
/* berth-transfer internals: image references, OCI/Docker documents,
 * platforms, registry auth and host configuration (pure code, unit tested),
 * then the libcurl-on-libuv HTTP client, pull/push orchestration and
 * archives (event-loop code). */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "berth/common.h"
#include "berth/error.h"
#include "berth/mp.h"

/* ---- limits for untrusted documents (issue 9) ---------------------------- */
#define XFER_MAX_MANIFEST (4u << 20) /* manifest or index */
#define XFER_MAX_CONFIG (8u << 20)   /* image config */
#define XFER_MAX_INDEX_DEPTH 4       /* index → index → ... → manifest */
#define XFER_MAX_LAYERS 512
#define XFER_MAX_MANIFESTS 1024
#define XFER_MAX_SMALL_JSON (1u << 20) /* oci-layout, token responses, manifest.json */
#define XFER_MAX_BLOB_SIZE (1ULL << 40)

/* ---- media types -------------------------------------------------------- */
#define XFER_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define XFER_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define XFER_MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define XFER_MT_OCI_LAYER "application/vnd.oci.image.layer.v1.tar"
#define XFER_MT_OCI_LAYER_GZ "application/vnd.oci.image.layer.v1.tar+gzip"
#define XFER_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define XFER_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define XFER_MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define XFER_MT_DOCKER_LAYER "application/vnd.docker.image.rootfs.diff.tar"
#define XFER_MT_DOCKER_LAYER_GZ "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define XFER_ACCEPT_MANIFESTS                                                                      \
    XFER_MT_OCI_MANIFEST ", " XFER_MT_OCI_INDEX ", " XFER_MT_DOCKER_MANIFEST                       \
                         ", " XFER_MT_DOCKER_LIST

/* gc.ref labels recorded on blobs so GC keeps exactly what an image needs. */
#define XFER_LABEL_REF_CONFIG "berth.io/gc.ref.content.config"
#define XFER_LABEL_REF_LAYER "berth.io/gc.ref.content.l."    /* + index */
#define XFER_LABEL_REF_MANIFEST "berth.io/gc.ref.content.m." /* + index */
#define XFER_LABEL_REF_SNAPSHOT "berth.io/gc.ref.snapshot.overlayfs"

/* ---- reference.c -------------------------------------------------------- */

/** A parsed, normalized image reference. All fields malloc'd (NULL when
 * absent); free with xfer_ref_clear(). */
typedef struct {
    char *domain; /* "docker.io", "127.0.0.1:5000" */
    char *path;   /* "library/busybox" */
    char *tag;    /* "latest"; NULL when only a digest was given */
    char *digest; /* "sha256:<hex>" or NULL */
} xfer_ref_t;

/** Parses a reference as users type it: `busybox` → docker.io/library/busybox:latest,
 * `host:port/repo:tag`, `repo@sha256:...`. Errors are invalid_argument with
 * the reason. */
int xfer_ref_parse(const char *s, xfer_ref_t *out, berth_error_t **err);
/** The canonical name: domain/path[:tag][@digest]. Caller frees. */
char *xfer_ref_name(const xfer_ref_t *r);
/** "domain/path" only. Caller frees. */
char *xfer_ref_repo(const xfer_ref_t *r);
void xfer_ref_clear(xfer_ref_t *r);
/** True when s is "sha256:" and 64 lowercase hex digits. */
bool xfer_digest_valid(const char *s);
bool xfer_digest_valid_n(const char *s, size_t n);

/* ---- platform.c --------------------------------------------------------- */

typedef struct {
    char os[32];
    char arch[32];
    char variant[32];
} xfer_platform_t;

/** Parses "os/arch[/variant]" (or just "arch"; os defaults to linux) and
 * normalizes it (x86_64 → amd64, aarch64 → arm64, ...). */
int xfer_platform_parse(const char *s, xfer_platform_t *out, berth_error_t **err);
/** Fills with normalized values (lengths capped); unknown stays as given. */
void xfer_platform_set(xfer_platform_t *p, const char *os, const char *arch, const char *variant);
void xfer_platform_normalize(xfer_platform_t *p);
/** The host's platform (linux/<uname arch>). */
void xfer_platform_host(xfer_platform_t *out);
/** How well `have` satisfies `want`: -1 no match, higher is better. */
int xfer_platform_score(const xfer_platform_t *want, const xfer_platform_t *have);
/** "os/arch[/variant]" into buf. */
const char *xfer_platform_format(const xfer_platform_t *p, char *buf, size_t n);

/* ---- manifest.c --------------------------------------------------------- */

/** A content descriptor. Strings malloc'd; free with xfer_desc_clear(). */
typedef struct {
    char *media_type;
    char *digest;
    uint64_t size;
    bool has_platform;
    xfer_platform_t platform;
    char *ref_name;   /* annotation org.opencontainers.image.ref.name */
    char *image_name; /* annotation io.containerd.image.name */
} xfer_desc_t;

void xfer_desc_clear(xfer_desc_t *d);
int xfer_desc_copy(xfer_desc_t *dst, const xfer_desc_t *src);

typedef enum {
    XFER_DOC_MANIFEST = 1,
    XFER_DOC_INDEX = 2,
} xfer_doc_kind_t;

/** A parsed manifest or index. */
typedef struct {
    xfer_doc_kind_t kind;
    char *media_type; /* effective media type */
    xfer_desc_t config;
    xfer_desc_t *layers;
    size_t n_layers;
    xfer_desc_t *manifests;
    size_t n_manifests;
} xfer_doc_t;

bool xfer_mt_is_manifest(const char *mt);
bool xfer_mt_is_index(const char *mt);
bool xfer_mt_is_layer(const char *mt);

/** Parses a manifest or index (bytes from a registry or archive). `expected_mt`
 * is the media type the referrer announced (descriptor, Content-Type), or NULL.
 * Enforces the size cap, the shape/media-type agreement (CVE-2021-41190),
 * descriptor validity and entry-count bounds. */
int xfer_doc_parse(const void *buf, size_t len, const char *expected_mt, xfer_doc_t *out,
                   berth_error_t **err);
void xfer_doc_clear(xfer_doc_t *d);

/** The parts of an image config transfer needs. */
typedef struct {
    xfer_platform_t platform;
    char **diff_ids;
    size_t n_diff_ids;
} xfer_config_t;

int xfer_config_parse(const void *buf, size_t len, xfer_config_t *out, berth_error_t **err);
void xfer_config_clear(xfer_config_t *c);

/** Chain ids from diff ids: chain[0] = diff[0], chain[i] = sha256(chain[i-1] + " " + diff[i]).
 * *out is an array of n malloc'd strings; free with xfer_strv_free(). */
int xfer_chain_ids(char *const *diff_ids, size_t n, char ***out, berth_error_t **err);
void xfer_strv_free(char **v, size_t n);

/** "sha256:<hex>" of bytes into out (72 bytes). */
void xfer_sha256_digest(const void *p, size_t n, char out[72]);

/** Picks the best manifest of an index for `want`; returns its index or -1. */
ssize_t xfer_index_select(const xfer_doc_t *idx, const xfer_platform_t *want);

/** Builds JSON for export: an OCI index over `descs` (each with ref_name /
 * image_name annotations), returned malloc'd with *len. */
char *xfer_index_json(const xfer_desc_t *descs, size_t n, size_t *len);

/* Docker `docker save` manifest.json entries. */
typedef struct {
    char *config; /* path in the archive */
    char **repo_tags;
    size_t n_repo_tags;
    char **layers; /* paths in the archive */
    size_t n_layers;
} xfer_docker_entry_t;
/** Parses manifest.json. Paths must be relative and stay inside the
 * archive; every RepoTags entry must be a valid NAME:TAG reference without a
 * digest (at most XFER_MAX_REPO_TAGS of them): invalid_argument naming the
 * entry otherwise. */
int xfer_docker_manifest_parse(const void *buf, size_t len, xfer_docker_entry_t **out, size_t *n,
                               berth_error_t **err);
#define XFER_MAX_REPO_TAGS 256
#define XFER_MAX_REPO_TAG_LEN 1023
/** Checks the `oci-layout` file of an OCI image layout archive (`data` NULL:
 * absent): it must be a JSON object with imageLayoutVersion "1.0.0";
 * invalid_argument naming what is wrong otherwise. */
int xfer_oci_layout_check(const char *data, size_t len, berth_error_t **err);
void xfer_docker_entries_free(xfer_docker_entry_t *e, size_t n);

/** Encodes a descriptor as a msgpack map {media_type, digest, size[, platform]}. */
void xfer_desc_pack(msgpack_packer *pk, const xfer_desc_t *d);
/** Decodes a msgpack descriptor map (validating the digest). */
int xfer_desc_unpack(const msgpack_object *o, xfer_desc_t *out, berth_error_t **err);

/* ---- auth.c ------------------------------------------------------------- */

typedef struct {
    char *scheme; /* lower-case: "bearer", "basic" */
    char *realm;
    char *service;
    char *scope;
} xfer_challenge_t;

/** Parses a WWW-Authenticate header value holding one or more challenges.
 * Returns the number parsed (≤ max) or -1 on a malformed header. */
int xfer_auth_parse(const char *header, xfer_challenge_t *out, size_t max, berth_error_t **err);
void xfer_challenge_clear(xfer_challenge_t *c);
/** A token realm must be http(s) and not a link-local address. */
int xfer_realm_check(const char *url, berth_error_t **err);
/** True for 169.254.0.0/16, fe80::/10 and the v4-mapped forms. */
bool xfer_ip_link_local(const char *ip);
/** Extracts token (or access_token) and expires_in (s, default 60) from a
 * token endpoint response. */
int xfer_token_parse(const void *buf, size_t len, char **token, uint64_t *expires_in,
                     berth_error_t **err);
/** Base64 of bytes (malloc'd). */
char *xfer_base64(const void *p, size_t n);
/** Appends a URL-encoded copy of s to a malloc'd string (realloc). */
char *xfer_url_escape(const char *s);
/** Splits "scheme://host[:port]/..." into the host:port part (malloc'd),
 * lower-cased; NULL when malformed. */
char *xfer_url_hostport(const char *url);
/** Resolves a Location header against a base URL. Caller frees. */
char *xfer_url_resolve(const char *base, const char *loc);
/** The delay before a retry: a Retry-After header value (RFC 9110
 * delay-seconds, digits only; NULL, 0, an HTTP-date or garbage keep
 * fallback_ms), saturated at cap_ms without overflowing. */
uint64_t xfer_retry_after_ms(const char *value, uint64_t fallback_ms, uint64_t cap_ms);

/* ---- hosts.c: registry hosts, like containerd's hosts.toml ------------- */

enum {
    XFER_CAP_PULL = 1u << 0,
    XFER_CAP_RESOLVE = 1u << 1,
    XFER_CAP_PUSH = 1u << 2,
};

typedef struct {
    char *url; /* "https://mirror:5000" without trailing slash */
    unsigned caps;
    bool skip_verify;
} xfer_host_t;

typedef struct {
    char *name;   /* registry ("docker.io", "127.0.0.1:5000") or "_default" */
    char *server; /* upstream URL or NULL for the default */
    bool plain_http;
    bool skip_verify;
    xfer_host_t *hosts;
    size_t n_hosts;
} xfer_registry_cfg_t;

typedef struct {
    uint32_t max_concurrent_downloads;
    uint32_t max_concurrent_uploads;
    uint32_t max_attempts;
    uint32_t connect_timeout_ms;
    uint32_t idle_timeout_ms;
    uint32_t max_retry_after_ms;
    /* Idle this long with the libraries loaded: the plugin asks berthd to
     * recycle it (main.c). 0 = never. */
    uint32_t unload_idle_ms;
    xfer_registry_cfg_t *regs;
    size_t n_regs;
} xfer_settings_t;

void xfer_settings_default(xfer_settings_t *s);
/** Parses the plugin's config section (a msgpack map); unknown keys fail
 * with a message naming the key. */
int xfer_settings_parse(const msgpack_object *cfg, xfer_settings_t *s, berth_error_t **err);
void xfer_settings_clear(xfer_settings_t *s);
/** The ordered hosts to use for `cap` on `registry`: configured hosts with
 * that capability, then the upstream server. plain_http/skip_verify from the
 * request apply to the upstream. *out malloc'd array of n entries whose
 * strings are malloc'd; free with xfer_hosts_free(). */
int xfer_hosts_for(const xfer_settings_t *s, const char *registry, unsigned cap, bool plain_http,
                   bool skip_verify, xfer_host_t **out, size_t *n, berth_error_t **err);
void xfer_hosts_free(xfer_host_t *h, size_t n);
