/* SPDX-License-Identifier: Apache-2.0 */
/* msgpack-c helpers: reading fields of a borrowed msgpack_object map and
 * packing common shapes. Every msgpack_object here is borrowed: valid until
 * the zone that holds it (the message being dispatched) is freed. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <string.h>

#include "berth/common.h"
#include "berth/error.h"

/** Returns the value for `key` in map `o`, or NULL (also when o is not a map). */
const msgpack_object *berth_mp_get(const msgpack_object *o, const char *key);

/** True if o is a str equal to s. */
bool berth_mp_str_eq(const msgpack_object *o, const char *s);

/* Typed getters. Each returns 0 on success, 1 if the key is absent or nil
 * (the out value is left untouched, so callers can pre-set defaults), and -1
 * with an invalid_argument error naming the key when the type is wrong. */
int berth_mp_get_str(const msgpack_object *map, const char *key, const char **out, size_t *len,
                     berth_error_t **err);
/** Like berth_mp_get_str but returns a malloc'd NUL-terminated copy; a string
 * holding a NUL byte is rejected. Caller frees *out. */
int berth_mp_get_strdup(const msgpack_object *map, const char *key, char **out,
                        berth_error_t **err);
int berth_mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out,
                     berth_error_t **err);
int berth_mp_get_i64(const msgpack_object *map, const char *key, int64_t *out,
                     berth_error_t **err);
int berth_mp_get_bool(const msgpack_object *map, const char *key, bool *out,
                      berth_error_t **err);
/** bin or str accepted. */
int berth_mp_get_bin(const msgpack_object *map, const char *key, berth_bytes_t *out,
                     berth_error_t **err);
/** The value must be a map (or absent/nil). */
int berth_mp_get_map(const msgpack_object *map, const char *key, const msgpack_object **out,
                     berth_error_t **err);
int berth_mp_get_array(const msgpack_object *map, const char *key, const msgpack_object **out,
                       berth_error_t **err);

/** malloc'd NUL-terminated copy of a str object; NULL if not a str or holds NUL. */
char *berth_mp_strdup(const msgpack_object *o);

/* Packing helpers. */
void berth_mp_pack_str(msgpack_packer *pk, const char *s);
void berth_mp_pack_strn(msgpack_packer *pk, const char *s, size_t n);
void berth_mp_pack_bin(msgpack_packer *pk, const void *p, size_t n);
/** Packs key then string value (NULL value → nil). */
void berth_mp_kv_str(msgpack_packer *pk, const char *k, const char *v);
void berth_mp_kv_u64(msgpack_packer *pk, const char *k, uint64_t v);
void berth_mp_kv_i64(msgpack_packer *pk, const char *k, int64_t v);
void berth_mp_kv_bool(msgpack_packer *pk, const char *k, bool v);

/** A growable buffer + packer pair, the usual way to build a message. */
typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} berth_mpbuf_t;
void berth_mpbuf_init(berth_mpbuf_t *b);
void berth_mpbuf_destroy(berth_mpbuf_t *b);

/** Deep-copies a msgpack_object into a new zone-backed object. The copy lives
 * in *zone (caller frees with msgpack_zone_free). Returns NULL on OOM. */
msgpack_object *berth_mp_clone(const msgpack_object *o, msgpack_zone **zone);

/** Unpacks one msgpack object from bytes after validating it with the limits
 * below (depth, element counts, and that it is exactly one object). On
 * success *out lives in *zone (caller frees it with msgpack_zone_free) and its
 * str/bin values point into `data`, which must outlive the object. */
typedef struct {
    size_t max_depth;     /* default 32 */
    size_t max_elements;  /* per container, default 1<<20 */
    size_t max_total;     /* total objects, default 1<<22 */
} berth_mp_limits_t;
extern const berth_mp_limits_t berth_mp_default_limits;
int berth_mp_unpack(const void *data, size_t len, const berth_mp_limits_t *lim,
                    msgpack_zone **zone, msgpack_object *out, berth_error_t **err);
