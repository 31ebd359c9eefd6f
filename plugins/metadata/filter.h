/* SPDX-License-Identifier: Apache-2.0 */
/* List filters in containerd's syntax: `name==x`, `labels."k"==v`,
 * `labels.k` (presence), `!=`, `~=` (a Go/RE2 regexp, unanchored, matched in
 * linear time: re.h), `,` as AND; several filter strings are OR'd. Matched
 * against a stored msgpack record. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>

#include "berth/error.h"

typedef struct meta_filter_s meta_filter_t;

/** Parses a list of filter strings (OR'd). A malformed one fails with
 * invalid_argument naming the filter and the 1-based position. */
int meta_filter_parse(const char *const *strs, size_t n, meta_filter_t **out, berth_error_t **err);
/** Same from a msgpack value: nil/absent → matches everything (*out NULL);
 * otherwise an array of str. */
int meta_filter_parse_obj(const msgpack_object *filters, meta_filter_t **out, berth_error_t **err);
/** True if the record (a msgpack map) matches. NULL filter matches all.
 * Field names match the record's keys exactly or ignoring '_' (so
 * `target.mediatype` finds `target.media_type`); under `labels` and
 * `annotations` keys match exactly. */
bool meta_filter_match(const meta_filter_t *f, const msgpack_object *record);
void meta_filter_free(meta_filter_t *f);
