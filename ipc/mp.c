/* SPDX-License-Identifier: Apache-2.0 */
/* msgpack helpers and a bounded unpacker: raw bytes are walked and checked
 * (depth, element counts, exact length) before msgpack-c allocates anything,
 * so a 10-byte frame cannot make us allocate a 4-billion-element array. */
#include <stdio.h>
#include <string.h>

#include "berth/mp.h"

const berth_mp_limits_t berth_mp_default_limits = {
    .max_depth = 32,
    .max_elements = 1u << 20,
    .max_total = 1u << 22,
};

const msgpack_object *berth_mp_get(const msgpack_object *o, const char *key)
{
    if (!o || o->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            memcmp(k->via.str.ptr, key, kl) == 0)
            return &o->via.map.ptr[i].val;
    }
    return NULL;
}

bool berth_mp_str_eq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

static int lookup(const msgpack_object *map, const char *key, const msgpack_object **v)
{
    *v = berth_mp_get(map, key);
    if (!*v || (*v)->type == MSGPACK_OBJECT_NIL)
        return 1;
    return 0;
}

#define WRONG(type)                                                                                \
    berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "parameter %s must be %s", key, type)

int berth_mp_get_str(const msgpack_object *map, const char *key, const char **out, size_t *len,
                     berth_error_t **err)
{
    const msgpack_object *v;
    if (lookup(map, key, &v))
        return 1;
    if (v->type != MSGPACK_OBJECT_STR)
        return WRONG("a string");
    *out = v->via.str.ptr;
    if (len)
        *len = v->via.str.size;
    return 0;
}

char *berth_mp_strdup(const msgpack_object *o)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return NULL;
    /* An empty msgpack string has a NULL pointer: no memchr/memcpy on it. */
    if (o->via.str.size && memchr(o->via.str.ptr, 0, o->via.str.size))
        return NULL;
    char *s = malloc(o->via.str.size + 1);
    if (!s)
        return NULL;
    if (o->via.str.size)
        memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = 0;
    return s;
}

int berth_mp_get_strdup(const msgpack_object *map, const char *key, char **out, berth_error_t **err)
{
    const msgpack_object *v;
    if (lookup(map, key, &v))
        return 1;
    if (v->type != MSGPACK_OBJECT_STR)
        return WRONG("a string");
    char *s = berth_mp_strdup(v);
    if (!s)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "parameter %s holds a NUL byte", key);
    *out = s;
    return 0;
}

int berth_mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out, berth_error_t **err)
{
    const msgpack_object *v;
    if (lookup(map, key, &v))
        return 1;
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return WRONG("a non-negative integer");
    *out = v->via.u64;
    return 0;
}

int berth_mp_get_i64(const msgpack_object *map, const char *key, int64_t *out, berth_error_t **err)
{
    const msgpack_object *v;
    if (lookup(map, key, &v))
        return 1;
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = v->via.i64;
    else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
        *out = (int64_t)v->via.u64;
    else
        return WRONG("an integer");
    return 0;
}

int berth_mp_get_bool(const msgpack_object *map, const char *key, bool *out, berth_error_t **err)
{
    const msgpack_object *v;
    if (lookup(map, key, &v))
        return 1;
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return WRONG("a boolean");
    *out = v->via.boolean;
    return 0;
}

int berth_mp_get_bin(const msgpack_object *map, const char *key, berth_bytes_t *out,
                     berth_error_t **err)
{
    const msgpack_object *v;
    if (lookup(map, key, &v))
        return 1;
    if (v->type == MSGPACK_OBJECT_BIN) {
        out->ptr = (const uint8_t *)v->via.bin.ptr;
        out->len = v->via.bin.size;
    } else if (v->type == MSGPACK_OBJECT_STR) {
        out->ptr = (const uint8_t *)v->via.str.ptr;
        out->len = v->via.str.size;
    } else {
        return WRONG("bytes");
    }
    return 0;
}

int berth_mp_get_map(const msgpack_object *map, const char *key, const msgpack_object **out,
                     berth_error_t **err)
{
    const msgpack_object *v;
    if (lookup(map, key, &v))
        return 1;
    if (v->type != MSGPACK_OBJECT_MAP)
        return WRONG("a map");
    *out = v;
    return 0;
}

int berth_mp_get_array(const msgpack_object *map, const char *key, const msgpack_object **out,
                       berth_error_t **err)
{
    const msgpack_object *v;
    if (lookup(map, key, &v))
        return 1;
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return WRONG("an array");
    *out = v;
    return 0;
}

void berth_mp_pack_str(msgpack_packer *pk, const char *s)
{
    if (!s) {
        msgpack_pack_nil(pk);
        return;
    }
    berth_mp_pack_strn(pk, s, strlen(s));
}

void berth_mp_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void berth_mp_pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, p, n);
}

void berth_mp_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    berth_mp_pack_str(pk, k);
    berth_mp_pack_str(pk, v);
}

void berth_mp_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    berth_mp_pack_str(pk, k);
    msgpack_pack_uint64(pk, v);
}

void berth_mp_kv_i64(msgpack_packer *pk, const char *k, int64_t v)
{
    berth_mp_pack_str(pk, k);
    msgpack_pack_int64(pk, v);
}

void berth_mp_kv_bool(msgpack_packer *pk, const char *k, bool v)
{
    berth_mp_pack_str(pk, k);
    if (v)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

void berth_mpbuf_init(berth_mpbuf_t *b)
{
    msgpack_sbuffer_init(&b->buf);
    msgpack_packer_init(&b->pk, &b->buf, msgpack_sbuffer_write);
}

void berth_mpbuf_destroy(berth_mpbuf_t *b)
{
    msgpack_sbuffer_destroy(&b->buf);
}

msgpack_object *berth_mp_clone(const msgpack_object *o, msgpack_zone **zone)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *o);
    /* msgpack-c's C unpacker makes str/bin point into the input buffer, so
     * the packed copy itself lives in the zone. */
    msgpack_zone *z = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object *res = z ? msgpack_zone_malloc(z, sizeof(*res)) : NULL;
    char *copy = res ? msgpack_zone_malloc(z, sb.size ? sb.size : 1) : NULL;
    if (copy)
        memcpy(copy, sb.data, sb.size);
    size_t off = 0;
    if (!copy || msgpack_unpack(copy, sb.size, &off, z, res) != MSGPACK_UNPACK_SUCCESS) {
        if (z)
            msgpack_zone_free(z);
        msgpack_sbuffer_destroy(&sb);
        return NULL;
    }
    msgpack_sbuffer_destroy(&sb);
    *zone = z;
    return res;
}

/* --- bounded validation ------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t len;
    size_t pos;
    size_t total;
    const berth_mp_limits_t *lim;
    const char *why;
} walker;

static int need(walker *w, size_t n)
{
    if (w->len - w->pos < n) {
        w->why = "truncated message";
        return -1;
    }
    return 0;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static int walk(walker *w, size_t depth);

static int walk_container(walker *w, size_t depth, uint64_t count, int per)
{
    if (depth + 1 > w->lim->max_depth) {
        w->why = "nesting too deep";
        return -1;
    }
    if (count > w->lim->max_elements) {
        w->why = "too many elements";
        return -1;
    }
    /* Every element takes at least one byte: a count larger than the bytes
     * left is a lie, reject it before anyone allocates for it. */
    if (count * (uint64_t)per > w->len - w->pos) {
        w->why = "truncated message";
        return -1;
    }
    for (uint64_t i = 0; i < count * (uint64_t)per; i++)
        if (walk(w, depth + 1) < 0)
            return -1;
    return 0;
}

static int skip(walker *w, uint64_t n)
{
    if (n > w->len - w->pos) {
        w->why = "truncated message";
        return -1;
    }
    w->pos += (size_t)n;
    return 0;
}

static int walk(walker *w, size_t depth)
{
    if (++w->total > w->lim->max_total) {
        w->why = "too many objects";
        return -1;
    }
    if (need(w, 1) < 0)
        return -1;
    uint8_t b = w->p[w->pos++];
    if (b <= 0x7f || b >= 0xe0)
        return 0;
    if (b >= 0x80 && b <= 0x8f)
        return walk_container(w, depth, b & 0x0f, 2);
    if (b >= 0x90 && b <= 0x9f)
        return walk_container(w, depth, b & 0x0f, 1);
    if (b >= 0xa0 && b <= 0xbf)
        return skip(w, b & 0x1f);
    switch (b) {
    case 0xc0:
    case 0xc2:
    case 0xc3:
        return 0;
    case 0xc1:
        w->why = "reserved byte 0xc1";
        return -1;
    case 0xc4:
    case 0xd9:
        if (need(w, 1) < 0)
            return -1;
        w->pos += 1;
        return skip(w, be(w->p + w->pos - 1, 1));
    case 0xc5:
    case 0xda:
        if (need(w, 2) < 0)
            return -1;
        w->pos += 2;
        return skip(w, be(w->p + w->pos - 2, 2));
    case 0xc6:
    case 0xdb:
        if (need(w, 4) < 0)
            return -1;
        w->pos += 4;
        return skip(w, be(w->p + w->pos - 4, 4));
    case 0xc7: /* ext 8 */
        if (need(w, 1) < 0)
            return -1;
        w->pos += 1;
        return skip(w, 1 + be(w->p + w->pos - 1, 1));
    case 0xc8:
        if (need(w, 2) < 0)
            return -1;
        w->pos += 2;
        return skip(w, 1 + be(w->p + w->pos - 2, 2));
    case 0xc9:
        if (need(w, 4) < 0)
            return -1;
        w->pos += 4;
        return skip(w, 1 + be(w->p + w->pos - 4, 4));
    case 0xca:
        return skip(w, 4);
    case 0xcb:
        return skip(w, 8);
    case 0xcc:
    case 0xd0:
        return skip(w, 1);
    case 0xcd:
    case 0xd1:
        return skip(w, 2);
    case 0xce:
    case 0xd2:
        return skip(w, 4);
    case 0xcf:
    case 0xd3:
        return skip(w, 8);
    case 0xd4:
        return skip(w, 2);
    case 0xd5:
        return skip(w, 3);
    case 0xd6:
        return skip(w, 5);
    case 0xd7:
        return skip(w, 9);
    case 0xd8:
        return skip(w, 17);
    case 0xdc:
        if (need(w, 2) < 0)
            return -1;
        w->pos += 2;
        return walk_container(w, depth, be(w->p + w->pos - 2, 2), 1);
    case 0xdd:
        if (need(w, 4) < 0)
            return -1;
        w->pos += 4;
        return walk_container(w, depth, be(w->p + w->pos - 4, 4), 1);
    case 0xde:
        if (need(w, 2) < 0)
            return -1;
        w->pos += 2;
        return walk_container(w, depth, be(w->p + w->pos - 2, 2), 2);
    case 0xdf:
        if (need(w, 4) < 0)
            return -1;
        w->pos += 4;
        return walk_container(w, depth, be(w->p + w->pos - 4, 4), 2);
    }
    w->why = "invalid byte";
    return -1;
}

int berth_mp_unpack(const void *data, size_t len, const berth_mp_limits_t *lim, msgpack_zone **zone,
                    msgpack_object *out, berth_error_t **err)
{
    if (!lim)
        lim = &berth_mp_default_limits;
    walker w = {.p = data, .len = len, .lim = lim};
    if (len == 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "malformed message: empty");
    if (walk(&w, 0) < 0)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT, "malformed message: %s at byte %zu",
                               w.why, w.pos);
    if (w.pos != len)
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "malformed message: %zu trailing bytes after one object",
                               len - w.pos);
    msgpack_zone *z = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (!z)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack(data, len, &off, z, out);
    if (r != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_zone_free(z);
        return berth_error_set(err, BERTH_E_INVALID_ARGUMENT,
                               "malformed message: unpack failed (%d)", r);
    }
    *zone = z;
    return 0;
}
