/* SPDX-License-Identifier: Apache-2.0 */
/* berth-transfer: registers the image transfer methods and validates its
 * config section at start, then loads its implementation library
 * (berth-transfer-impl.so: libcurl, jansson, libcrypto) on the first request
 * and forwards every request to it; image archives (libarchive) are a second
 * library, berth-transfer-archive.so, loaded for the first import or export. Until then the process
 * maps only the SDK, so an idle transfer plugin costs about 2 MiB of RSS
 * instead of 13.
 *
 * Once loaded, the libraries cannot all be unloaded again: libcrypto, libssl
 * and p11-kit are linked -z nodelete, libstdc++ (under libarchive's ICU) pins
 * itself with unique symbols, and OpenSSL's initialised state stays in the
 * heap; dlclose of both modules gives back only 5 of the 12 MiB. So after
 * `unload_idle_ms` without a request the plugin asks berthd to recycle it
 * (plugin.recycle, docs/protocol.md): the core accepts only while nothing is
 * in flight to or from this instance, queues new requests, stops it with
 * plugin.shutdown and starts a fresh one (2 MiB, libraries not loaded), which
 * loads them again on its first request. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "berth/failpoint.h"
#include "berth/log.h"
#include "impl.h"

static berth_plugin_t *g_plugin;
static xfer_settings_t g_settings;
static bool g_settings_set;
static xfer_platform_t g_host;
static char g_impl_path[PATH_MAX];
static char g_archive_path[PATH_MAX];
static const xfer_impl_t *g_impl;
static const xfer_archive_impl_t *g_archive;
/* The idle recycle (loop thread). */
static uv_timer_t g_idle_timer;
static bool g_idle_timer_init;
static bool g_recycle_asked; /* a plugin.recycle is outstanding or was accepted */
static bool g_recycle_off;   /* berthd does not know plugin.recycle: stop asking */
static bool g_stopping;

/* The libraries sit next to the executable (build tree, and the installed
 * libexec/berth), or in the libexec directory this build installs to. */
static int find_lib(const char *file, char *out, size_t outlen, berth_error_t **err)
{
    char exe[PATH_MAX - 64]; /* room for "/" and the file name in out */
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    struct stat st;
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(out, outlen, "%s/%s", exe, file);
            if (stat(out, &st) == 0)
                return 0;
        }
    }
#ifdef BERTH_XFER_IMPL_DIR
    snprintf(out, outlen, "%s/%s", BERTH_XFER_IMPL_DIR, file);
    if (stat(out, &st) == 0)
        return 0;
#endif
    return berth_error_set(err, BERTH_E_FAILED_PRECONDITION,
                           "%s not found next to berth-transfer (%s) or in the install directory; "
                           "reinstall berth",
                           file, n > 0 ? exe : "?");
}

/* Loads the implementation once, on the loop thread (a few ms, once). */
static const xfer_impl_t *impl_get(berth_req_t *r)
{
    if (g_impl)
        return g_impl;
    uint64_t t0 = berth_mono_ms();
    /* GLOBAL: the archive library resolves transfer functions against it. */
    void *h = dlopen(g_impl_path, RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        berth_req_failf(r, BERTH_E_INTERNAL, "berth-transfer cannot load %s: %s", g_impl_path,
                        dlerror());
        return NULL;
    }
    const xfer_impl_t *im = dlsym(h, XFER_IMPL_SYMBOL);
    if (!im || im->abi != XFER_IMPL_ABI) {
        berth_req_failf(r, BERTH_E_INTERNAL,
                        "%s does not match this berth-transfer (built from other sources); "
                        "reinstall berth",
                        g_impl_path);
        dlclose(h);
        return NULL;
    }
    berth_error_t *err = NULL;
    if (im->init(g_plugin, &g_settings, &g_host, &err) < 0) {
        berth_error_wrap(&err, "start the registry client");
        berth_req_fail(r, &err);
        dlclose(h);
        return NULL;
    }
    g_impl = im;
    berth_log(BERTH_LOG_DEBUG, "msg=\"implementation loaded\" path=%s ms=%llu", g_impl_path,
              (unsigned long long)(berth_mono_ms() - t0));
    return im;
}

static const xfer_archive_impl_t *archive_get(berth_req_t *r)
{
    if (g_archive)
        return g_archive;
    if (!impl_get(r))
        return NULL;
    uint64_t t0 = berth_mono_ms();
    void *h = dlopen(g_archive_path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        berth_req_failf(r, BERTH_E_INTERNAL, "berth-transfer cannot load %s: %s", g_archive_path,
                        dlerror());
        return NULL;
    }
    const xfer_archive_impl_t *a = dlsym(h, XFER_ARCHIVE_SYMBOL);
    if (!a || a->abi != XFER_IMPL_ABI) {
        berth_req_failf(r, BERTH_E_INTERNAL,
                        "%s does not match this berth-transfer (built from other sources); "
                        "reinstall berth",
                        g_archive_path);
        dlclose(h);
        return NULL;
    }
    g_archive = a;
    berth_log(BERTH_LOG_DEBUG, "msg=\"archive support loaded\" path=%s ms=%llu", g_archive_path,
              (unsigned long long)(berth_mono_ms() - t0));
    return a;
}

/* ---- idle recycle ---------------------------------------------------------- */

static void idle_arm(void);

static void recycle_answered(berth_call_t *c, const berth_error_t *err, const msgpack_object *res,
                             void *ud)
{
    (void)c, (void)res, (void)ud;
    if (g_stopping)
        return;
    if (!err) {
        /* plugin.shutdown follows (it may even have come first). */
        berth_log(BERTH_LOG_INFO,
                  "msg=\"idle with the transfer libraries loaded; berthd restarts this plugin to "
                  "release them\" unload_idle_ms=%u",
                  g_settings.unload_idle_ms);
        return;
    }
    g_recycle_asked = false;
    if (err->code == BERTH_E_UNIMPLEMENTED || err->code == BERTH_E_PERMISSION_DENIED) {
        /* An older berthd, or this plugin runs outside berthd's supervision. */
        g_recycle_off = true;
        berth_log(BERTH_LOG_INFO,
                  "msg=\"berthd cannot recycle plugins; libraries stay loaded\" "
                  "error=\"%s\"",
                  err->message);
        return;
    }
    /* Busy (a request crossed ours, or a call is still outstanding): later. */
    berth_log(BERTH_LOG_DEBUG, "msg=\"recycle refused; retrying when idle\" error=\"%s\"",
              err->message);
    idle_arm();
}

static void on_idle(uv_timer_t *t)
{
    (void)t;
    if (!g_impl || g_recycle_asked || g_recycle_off || g_stopping)
        return;
    /* The core decides: it accepts only when no request runs here and none of
     * ours is outstanding, so a pull that is still working (or waiting for
     * another plugin) is never cut short. */
    static const uint8_t empty_map = 0x80;
    berth_error_t *err = NULL;
    g_recycle_asked = true;
    if (!berth_call(g_plugin, "plugin.recycle", &empty_map, 1, 0, recycle_answered, NULL, NULL,
                    &err)) {
        g_recycle_asked = false;
        berth_error_free(&err);
    }
}

/* Every request restarts the idle period (loop thread). */
static void idle_arm(void)
{
    if (!g_idle_timer_init || g_settings.unload_idle_ms == 0 || g_recycle_asked || g_recycle_off ||
        g_stopping)
        return;
    uv_timer_start(&g_idle_timer, on_idle, g_settings.unload_idle_ms, 0);
}

#define FORWARD(name, get, field)                                                                  \
    static void name(berth_req_t *r, const msgpack_object *params)                                 \
    {                                                                                              \
        idle_arm();                                                                                \
        const void *im = get(r);                                                                   \
        if (im)                                                                                    \
            ((const __typeof__(*get(r)) *)im)->field(r, params);                                   \
    }
static void fwd_pull(berth_req_t *r, const msgpack_object *params)
{
    /* Test hook (BERTH_FAILPOINTS=transfer.sandbox_probe=error): `images.pull
     * {ref: "sandbox-probe-SYSCALL"}` (sent raw: the CLI would normalize the
     * ref) makes that forbidden syscall (tests/e2e/sandbox.bats).
     * images.pull is neither idempotent nor replay: not re-sent. */
    const msgpack_object *probe = berth_mp_get(params, "ref");
    if (probe && probe->type == MSGPACK_OBJECT_STR &&
        berth_req_sandbox_probe(r, probe->via.str.ptr, probe->via.str.size,
                                "transfer.sandbox_probe"))
        return;
    idle_arm();
    const xfer_impl_t *im = impl_get(r);
    if (im)
        im->pull(r, params);
}
FORWARD(fwd_fetch, impl_get, fetch)
FORWARD(fwd_push, impl_get, push)
FORWARD(fwd_import, archive_get, import)
FORWARD(fwd_export, archive_get, export_)
FORWARD(fwd_check, impl_get, check)
FORWARD(fwd_unpack, impl_get, unpack)

static const berth_method_t methods[] = {
    {"images.pull", fwd_pull, 0, NULL},
    {"content.fetch", fwd_fetch, 0, NULL},
    {"images.push", fwd_push, 0, NULL},
    {"images.import", fwd_import, 0, NULL},
    {"images.export", fwd_export, 0, NULL},
    {"images.check", fwd_check, BERTH_METHOD_IDEMPOTENT, NULL},
    {"images.unpack", fwd_unpack, 0, NULL},
};

static const char *const requires[] = {"content", "metadata", NULL};

/* The sandbox (docs/security.md, "Plugin sandboxes"). This process talks to
 * registries (libcurl: sockets, DNS through glibc's resolver, TLS), to the
 * core over the fd it was given, and reads its two libraries (dlopen'd on
 * the first request: openat, mmap and mprotect are in the base set, so the
 * lazy load that keeps an idle plugin small still works). It never runs a
 * program, forks, mounts, traces, signals another process or starts a
 * session. Two stacked filters, because the kernel applies the strictest
 * verdict of all: a denylist, then the SDK's allowlist (its base set plus
 * `extra`; anything else kills the process). Threads started later (the
 * libuv pool, curl's resolver threads) inherit both. */
static int xfer_sandbox(berth_plugin_t *p, berth_error_t **err)
{
    /* sendmmsg: glibc's resolver sends the A and AAAA queries in one call.
     * Sockets stay: registries and DNS. */
    static const char *const extra[] = {"sendmmsg", NULL};
    return berth_plugin_confine(p, BERTH_CONFINE_SOCKETS, extra, NULL, err);
}

static int xfer_init(berth_plugin_t *p, berth_error_t **err)
{
    g_plugin = p;
    if (xfer_settings_parse(berth_plugin_config(p), &g_settings, err) < 0)
        return -1;
    g_settings_set = true;
    if (find_lib(XFER_IMPL_FILE, g_impl_path, sizeof(g_impl_path), err) < 0 ||
        find_lib(XFER_ARCHIVE_FILE, g_archive_path, sizeof(g_archive_path), err) < 0)
        return -1;
    xfer_platform_host(&g_host);
    if (xfer_sandbox(p, err) < 0)
        return -1;
    uv_timer_init(berth_plugin_loop(p), &g_idle_timer);
    /* Never what keeps the loop running (the SDK closes it at exit). */
    uv_unref((uv_handle_t *)&g_idle_timer);
    g_idle_timer_init = true;
    char plat[100];
    berth_log(BERTH_LOG_INFO,
              "msg=\"transfer ready\" platform=%s max_concurrent_downloads=%u unload_idle_ms=%u",
              xfer_platform_format(&g_host, plat, sizeof(plat)),
              g_settings.max_concurrent_downloads, g_settings.unload_idle_ms);
    return 0;
}

static void xfer_fini(berth_plugin_t *p)
{
    g_stopping = true;
    if (g_idle_timer_init)
        uv_timer_stop(&g_idle_timer);
    /* Tests (BERTH_FAILPOINTS=transfer.fini=pause=MS, memory_idle.bats): a
     * slow stop, so that requests arrive while berthd recycles this plugin
     * and have to wait in its queue for the new instance. */
    (void)berth_failpoint("transfer.fini");
    if (g_impl)
        g_impl->fini();
    g_impl = NULL;
    if (g_settings_set)
        xfer_settings_clear(&g_settings);
    g_settings_set = false;
}

int main(int argc, char **argv)
{
    /* Staging buffers (1 MiB per download) come from mmap and go back to the
     * kernel when freed, instead of raising glibc's dynamic threshold and
     * staying in the heap of an idle plugin. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    berth_plugin_desc_t desc = {
        .id = "transfer",
        .type = "io.berth.transfer.v1",
        .version = "0.1.0",
        .methods = methods,
        .n_methods = BERTH_ARRAY_SIZE(methods),
        .requires = requires,
        .init = xfer_init,
        .fini = xfer_fini,
    };
    return berth_plugin_main(&desc, argc, argv);
}
