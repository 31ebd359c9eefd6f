/* SPDX-License-Identifier: Apache-2.0 */
/* Entry point of berth-transfer-impl.so: the plugin context with the libcurl
 * multi client, created when main.c loads the library for the first request,
 * and the handler table main.c forwards to. */
#include <malloc.h>
#include <stdlib.h>

#include "berth/log.h"
#include "impl.h"
#include "xfer.h"

xfer_ctx_t *xfer_ctx;

static int impl_init(berth_plugin_t *p, const xfer_settings_t *s, const xfer_platform_t *host,
                     berth_error_t **err)
{
    xfer_ctx_t *x = calloc(1, sizeof(*x));
    if (!x)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    x->p = p;
    /* A shallow copy: the executable owns the strings and frees them. */
    x->settings = *s;
    x->host = *host;
    x->http = xfer_http_new(berth_plugin_loop(p), &x->settings, err);
    if (!x->http) {
        free(x);
        return -1;
    }
    xfer_ctx = x;
    return 0;
}

static void impl_fini(void)
{
    if (!xfer_ctx)
        return;
    xfer_http_free(xfer_ctx->http);
    free(xfer_ctx);
    xfer_ctx = NULL;
}

void xfer_release_memory(void)
{
    /* Operations allocate MiB-sized staging buffers and curl buffers; give
     * the pages back once they are freed, so an idle plugin stays small. */
    malloc_trim(0);
}

const xfer_impl_t xfer_impl = {
    .abi = XFER_IMPL_ABI,
    .init = impl_init,
    .fini = impl_fini,
    .pull = xfer_handle_pull,
    .fetch = xfer_handle_fetch,
    .push = xfer_handle_push,
    .check = xfer_handle_check,
    .unpack = xfer_handle_unpack,
};
