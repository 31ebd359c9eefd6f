/* SPDX-License-Identifier: Apache-2.0 */
/* berth-transfer: registers the image transfer methods, reads its config
 * section, sets up the libcurl multi client on the plugin's loop. */
#include <string.h>

#include "berth/log.h"
#include "xfer.h"

xfer_ctx_t *xfer_ctx;

static const berth_method_t methods[] = {
    {"images.pull", xfer_handle_pull, 0, NULL},
    {"content.fetch", xfer_handle_fetch, 0, NULL},
    {"images.push", xfer_handle_push, 0, NULL},
    {"images.import", xfer_handle_import, 0, NULL},
    {"images.export", xfer_handle_export, 0, NULL},
    {"images.check", xfer_handle_check, BERTH_METHOD_IDEMPOTENT, NULL},
    {"images.unpack", xfer_handle_unpack, 0, NULL},
};

static const char *const requires[] = {"content", "metadata", NULL};

static int xfer_init(berth_plugin_t *p, berth_error_t **err)
{
    xfer_ctx_t *x = calloc(1, sizeof(*x));
    x->p = p;
    if (xfer_settings_parse(berth_plugin_config(p), &x->settings, err) < 0) {
        free(x);
        return -1;
    }
    xfer_platform_host(&x->host);
    x->http = xfer_http_new(berth_plugin_loop(p), &x->settings, err);
    if (!x->http) {
        xfer_settings_clear(&x->settings);
        free(x);
        return -1;
    }
    xfer_ctx = x;
    char plat[100];
    berth_log(BERTH_LOG_INFO, "msg=\"transfer ready\" platform=%s max_concurrent_downloads=%u",
              xfer_platform_format(&x->host, plat, sizeof(plat)),
              x->settings.max_concurrent_downloads);
    return 0;
}

static void xfer_fini(berth_plugin_t *p)
{
    if (!xfer_ctx)
        return;
    xfer_http_free(xfer_ctx->http);
    xfer_settings_clear(&xfer_ctx->settings);
    free(xfer_ctx);
    xfer_ctx = NULL;
}

int main(int argc, char **argv)
{
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
