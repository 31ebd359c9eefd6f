/* SPDX-License-Identifier: Apache-2.0 */
/* The boundary between the berth-transfer executable and its implementation
 * library (berth-transfer-impl.so). The executable holds the SDK, the config
 * section and the method table; everything that needs libcurl, libarchive,
 * jansson or libcrypto lives in the library, which main.c loads with dlopen
 * on the first request. An idle transfer plugin therefore never maps those
 * libraries (they made up 10 of its 13 MiB of RSS). */
#pragma once

#include "berth/plugin.h"
#include "internal.h"

/* Bumped whenever this struct or the meaning of its fields changes: the
 * executable refuses a library built from other sources. */
#define XFER_IMPL_ABI 0x62787402u /* "bxt" 2: xfer_settings_t.unload_idle_ms */
#define XFER_IMPL_SYMBOL "xfer_impl"
#define XFER_IMPL_FILE "berth-transfer-impl.so"
/* Image archives (libarchive: import, export) are a second library, loaded on
 * top of the first for the first import or export only: a pull does not pay
 * for loading libarchive and its dependencies (ICU, libxml2, libstdc++). */
#define XFER_ARCHIVE_SYMBOL "xfer_archive_impl"
#define XFER_ARCHIVE_FILE "berth-transfer-archive.so"

typedef struct {
    uint32_t abi;
    /** Sets up the HTTP client on the plugin's loop. `s` and `host` are owned
     * by the executable and stay valid until fini. */
    int (*init)(berth_plugin_t *p, const xfer_settings_t *s, const xfer_platform_t *host,
                berth_error_t **err);
    void (*fini)(void);
    /* Handlers. */
    berth_handler_cb pull, fetch, push, check, unpack;
} xfer_impl_t;

/** Exported by berth-transfer-archive.so, which resolves the transfer
 * functions it uses against berth-transfer-impl.so (loaded RTLD_GLOBAL). */
typedef struct {
    uint32_t abi;
    berth_handler_cb import, export_;
} xfer_archive_impl_t;
