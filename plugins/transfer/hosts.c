/* SPDX-License-Identifier: Apache-2.0 */
/* The transfer plugin's config section: download concurrency, retry policy
 * and per-registry hosts in the spirit of containerd's hosts.toml (ordered
 * mirrors with pull/resolve/push capabilities tried before the upstream
 * server, and a "_default" entry for registries without their own). */
#include <stdio.h>
#include <string.h>

#include "internal.h"

void xfer_settings_default(xfer_settings_t *s)
{
    memset(s, 0, sizeof(*s));
    s->max_concurrent_downloads = 3;
    s->max_concurrent_uploads = 3;
    s->max_attempts = 4;
    s->connect_timeout_ms = 30000;
    s->idle_timeout_ms = 60000;
    s->max_retry_after_ms = 10000;
    s->unload_idle_ms = 30000;
}

static void reg_clear(xfer_registry_cfg_t *r)
{
    free(r->name);
    free(r->server);
    xfer_hosts_free(r->hosts, r->n_hosts);
    memset(r, 0, sizeof(*r));
}

void xfer_settings_clear(xfer_settings_t *s)
{
    for (size_t i = 0; i < s->n_regs; i++)
        reg_clear(&s->regs[i]);
    free(s->regs);
    s->regs = NULL;
    s->n_regs = 0;
}

void xfer_hosts_free(xfer_host_t *h, size_t n)
{
    if (!h)
        return;
    for (size_t i = 0; i < n; i++)
        free(h[i].url);
    free(h);
}

static bool key_is(const msgpack_object *k, const char *s)
{
    return berth_mp_str_eq(k, s);
}

static int url_ok(const char *u, const char *what, berth_error_t **err)
{
    if ((strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0) || strlen(u) > 1024 ||
        strchr(u, ' '))
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "transfer config: %s \"%s\" must be an http:// or https:// URL",
                               what, u);
    return 0;
}

static char *trim_slash(char *u)
{
    size_t l = strlen(u);
    while (l > 0 && u[l - 1] == '/')
        u[--l] = 0;
    return u;
}

static int parse_u32(const msgpack_object *v, const char *key, uint32_t min, uint32_t *out,
                     berth_error_t **err)
{
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 < min || v->via.u64 > 1u << 30)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "transfer config: %s must be an integer >= %u", key, min);
    *out = (uint32_t)v->via.u64;
    return 0;
}

static int parse_host(const msgpack_object *o, const char *reg, xfer_host_t *h, berth_error_t **err)
{
    memset(h, 0, sizeof(*h));
    h->caps = XFER_CAP_PULL | XFER_CAP_RESOLVE;
    if (o->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "transfer config: registries.%s.hosts entries must be maps", reg);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (key_is(k, "url")) {
            char *u = berth_mp_strdup(v);
            if (!u || url_ok(u, "host url", err) < 0) {
                free(u);
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "transfer config: registries.%s.hosts[].url must be a URL",
                                       reg);
            }
            free(h->url);
            h->url = trim_slash(u);
        } else if (key_is(k, "skip_verify") && v->type == MSGPACK_OBJECT_BOOLEAN) {
            h->skip_verify = v->via.boolean;
        } else if (key_is(k, "capabilities") && v->type == MSGPACK_OBJECT_ARRAY) {
            h->caps = 0;
            for (uint32_t j = 0; j < v->via.array.size; j++) {
                const msgpack_object *c = &v->via.array.ptr[j];
                if (berth_mp_str_eq(c, "pull"))
                    h->caps |= XFER_CAP_PULL;
                else if (berth_mp_str_eq(c, "resolve"))
                    h->caps |= XFER_CAP_RESOLVE;
                else if (berth_mp_str_eq(c, "push"))
                    h->caps |= XFER_CAP_PUSH;
                else
                    return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                           "transfer config: registries.%s.hosts[].capabilities: "
                                           "unknown capability (pull, resolve, push)",
                                           reg);
            }
        } else {
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "transfer config: unknown or mistyped key \"%.*s\" in "
                                   "registries.%s.hosts[] (url, capabilities, skip_verify)",
                                   k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
                                   k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?", reg);
        }
    }
    if (!h->url)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "transfer config: registries.%s.hosts[] entry needs a url", reg);
    return 0;
}

static int parse_registry(const msgpack_object *name, const msgpack_object *o,
                          xfer_registry_cfg_t *r, berth_error_t **err)
{
    memset(r, 0, sizeof(*r));
    r->name = berth_mp_strdup(name);
    if (!r->name || !*r->name || strlen(r->name) > 255)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "transfer config: registries keys must be registry names");
    if (o->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "transfer config: registries.%s must be a map", r->name);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (key_is(k, "server") &&
            (v->type == MSGPACK_OBJECT_STR || v->type == MSGPACK_OBJECT_NIL)) {
            free(r->server);
            r->server = NULL;
            if (v->type == MSGPACK_OBJECT_STR && v->via.str.size) {
                r->server = berth_mp_strdup(v);
                if (!r->server || url_ok(r->server, "server", err) < 0)
                    return -1;
                trim_slash(r->server);
            }
        } else if (key_is(k, "plain_http") && v->type == MSGPACK_OBJECT_BOOLEAN) {
            r->plain_http = v->via.boolean;
        } else if (key_is(k, "skip_verify") && v->type == MSGPACK_OBJECT_BOOLEAN) {
            r->skip_verify = v->via.boolean;
        } else if (key_is(k, "hosts") && v->type == MSGPACK_OBJECT_ARRAY) {
            if (v->via.array.size > 64)
                return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                       "transfer config: registries.%s.hosts: at most 64", r->name);
            r->hosts = calloc(v->via.array.size + 1, sizeof(xfer_host_t));
            for (uint32_t j = 0; j < v->via.array.size; j++) {
                r->n_hosts++;
                if (parse_host(&v->via.array.ptr[j], r->name, &r->hosts[j], err) < 0)
                    return -1;
            }
        } else {
            return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                   "transfer config: unknown or mistyped key \"%.*s\" in "
                                   "registries.%s (server, plain_http, skip_verify, hosts)",
                                   k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
                                   k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?", r->name);
        }
    }
    return 0;
}

int xfer_settings_parse(const msgpack_object *cfg, xfer_settings_t *s, berth_error_t **err)
{
    xfer_settings_default(s);
    if (!cfg || cfg->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (cfg->type != MSGPACK_OBJECT_MAP)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "transfer config must be a map");
    for (uint32_t i = 0; i < cfg->via.map.size; i++) {
        const msgpack_object *k = &cfg->via.map.ptr[i].key, *v = &cfg->via.map.ptr[i].val;
        int rc = 0;
        if (key_is(k, "max_concurrent_downloads"))
            rc = parse_u32(v, "max_concurrent_downloads", 1, &s->max_concurrent_downloads, err);
        else if (key_is(k, "max_concurrent_uploads"))
            rc = parse_u32(v, "max_concurrent_uploads", 1, &s->max_concurrent_uploads, err);
        else if (key_is(k, "max_attempts"))
            rc = parse_u32(v, "max_attempts", 1, &s->max_attempts, err);
        else if (key_is(k, "connect_timeout_ms"))
            rc = parse_u32(v, "connect_timeout_ms", 1, &s->connect_timeout_ms, err);
        else if (key_is(k, "idle_timeout_ms"))
            rc = parse_u32(v, "idle_timeout_ms", 1, &s->idle_timeout_ms, err);
        else if (key_is(k, "max_retry_after_ms"))
            rc = parse_u32(v, "max_retry_after_ms", 0, &s->max_retry_after_ms, err);
        else if (key_is(k, "unload_idle_ms"))
            rc = parse_u32(v, "unload_idle_ms", 0, &s->unload_idle_ms, err);
        else if (key_is(k, "registries")) {
            if (v->type != MSGPACK_OBJECT_MAP) {
                rc = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                     "transfer config: registries must be a map");
            } else {
                s->regs = calloc(v->via.map.size + 1, sizeof(xfer_registry_cfg_t));
                for (uint32_t j = 0; j < v->via.map.size && rc == 0; j++) {
                    s->n_regs++;
                    rc = parse_registry(&v->via.map.ptr[j].key, &v->via.map.ptr[j].val, &s->regs[j],
                                        err);
                }
            }
        } else {
            rc = berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                                 "transfer config: unknown key \"%.*s\"",
                                 k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
                                 k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?");
        }
        if (rc < 0) {
            xfer_settings_clear(s);
            return -1;
        }
    }
    return 0;
}

int xfer_hosts_for(const xfer_settings_t *s, const char *registry, unsigned cap, bool plain_http,
                   bool skip_verify, xfer_host_t **out, size_t *n, berth_error_t **err)
{
    const xfer_registry_cfg_t *r = NULL, *def = NULL;
    for (size_t i = 0; i < s->n_regs; i++) {
        if (strcmp(s->regs[i].name, registry) == 0)
            r = &s->regs[i];
        else if (strcmp(s->regs[i].name, "_default") == 0)
            def = &s->regs[i];
    }
    if (!r)
        r = def;
    size_t cnt = 0;
    xfer_host_t *h = calloc((r ? r->n_hosts : 0) + 1, sizeof(*h));
    if (r) {
        for (size_t i = 0; i < r->n_hosts; i++) {
            if (!(r->hosts[i].caps & cap))
                continue;
            h[cnt] = r->hosts[i];
            h[cnt].url = strdup(r->hosts[i].url);
            h[cnt].skip_verify = r->hosts[i].skip_verify || skip_verify;
            cnt++;
        }
    }
    /* The upstream server comes last; it has every capability. */
    bool plain = plain_http || (r && r->plain_http);
    char *server = NULL;
    if (r && r->server && r != def) {
        server = strdup(r->server);
    } else if (strcmp(registry, "docker.io") == 0) {
        server = strdup("https://registry-1.docker.io");
    } else if (asprintf(&server, "%s://%s", plain ? "http" : "https", registry) < 0) {
        server = NULL;
    }
    if (!server) {
        xfer_hosts_free(h, cnt);
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (plain && strncmp(server, "https://", 8) == 0 && strcmp(registry, "docker.io") != 0) {
        char *p = NULL;
        if (asprintf(&p, "http://%s", server + 8) >= 0) {
            free(server);
            server = p;
        }
    }
    h[cnt].url = server;
    h[cnt].caps = XFER_CAP_PULL | XFER_CAP_RESOLVE | XFER_CAP_PUSH;
    h[cnt].skip_verify = skip_verify || (r && r->skip_verify);
    cnt++;
    *out = h;
    *n = cnt;
    return 0;
}
