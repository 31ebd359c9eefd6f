/* SPDX-License-Identifier: Apache-2.0 */
/* Local images read back from the content store (see local.c). */
#pragma once

#include "xfer.h"

typedef struct {
    xfer_desc_t desc; /* media type is the document's effective type */
    char *bytes;
    size_t len;
    bool is_index;
} xfer_ldoc_t;

typedef struct {
    xfer_desc_t desc; /* with platform when it came from an index */
    xfer_doc_t doc;
    char *config; /* NULL when not loaded or missing */
    size_t config_len;
    xfer_config_t cfg;
    bool have_cfg;
    char *chain_id; /* top chain id, when the config is known and has layers */
} xfer_lman_t;

typedef struct {
    char *name;
    xfer_desc_t target;
    xfer_ldoc_t *docs; /* every index and manifest read, target first */
    size_t n_docs;
    xfer_lman_t *mans;
    size_t n_mans;
    char **platforms; /* every platform the image lists */
    size_t n_platforms;
    size_t missing_docs; /* lenient mode: manifests not present */
} xfer_limage_t;

typedef void (*xfer_limage_cb)(const berth_error_t *err, xfer_limage_t *img, void *ud);
/** Loads an image: want NULL = all platforms of an index. The callback owns
 * img (free with xfer_limage_free) when err is NULL. */
int xfer_limage_load(const char *ns, const char *name, const xfer_desc_t *target,
                     const xfer_platform_t *want, bool need_config, bool lenient, xfer_limage_cb cb,
                     void *ud, berth_error_t **err);
void xfer_limage_free(xfer_limage_t *img);

/** images.get: cb gets the image record (borrowed) and its target. */
typedef void (*xfer_image_get_cb)(const berth_error_t *err, const msgpack_object *image,
                                  const xfer_desc_t *target, void *ud);
int xfer_image_get(const char *ns, const char *name, xfer_image_get_cb cb, void *ud,
                   berth_error_t **err);
