/* SPDX-License-Identifier: Apache-2.0 */
/* Pure helpers of a collection: string sets, picking orphan candidates from a
 * backend listing, decoding content.list_blobs, packing statistics. No event
 * loop; run.c drives the calls. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int gc_strv_push(gc_strv_t *sv, const char *s, size_t len)
{
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 16;
        char **v = realloc(sv->v, cap * sizeof(*v));
        if (!v)
            return -1;
        sv->v = v;
        sv->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c)
        return -1;
    memcpy(c, s, len);
    c[len] = 0;
    sv->v[sv->n++] = c;
    return 0;
}

void gc_strv_free(gc_strv_t *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    *sv = (gc_strv_t){0};
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void gc_strv_sort_unique(gc_strv_t *sv)
{
    if (sv->n < 2)
        return;
    qsort(sv->v, sv->n, sizeof(*sv->v), cmp_str);
    size_t w = 1;
    for (size_t i = 1; i < sv->n; i++) {
        if (strcmp(sv->v[i], sv->v[w - 1]) == 0)
            free(sv->v[i]);
        else
            sv->v[w++] = sv->v[i];
    }
    sv->n = w;
}

bool gc_strv_has(const gc_strv_t *sv, const char *s)
{
    if (sv->n == 0)
        return false;
    return bsearch(&s, sv->v, sv->n, sizeof(*sv->v), cmp_str) != NULL;
}

int gc_strv_from_array(gc_strv_t *sv, const msgpack_object *arr, const char *what,
                       berth_error_t **err)
{
    if (!arr || arr->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (arr->type != MSGPACK_OBJECT_ARRAY)
        return berth_error_set(err, BERTH_E_INTERNAL, "%s: expected an array", what);
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *o = &arr->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
            memchr(o->via.str.ptr, 0, o->via.str.size))
            return berth_error_set(err, BERTH_E_INTERNAL,
                                   "%s: element %u is not a non-empty string", what, i);
        if (gc_strv_push(sv, o->via.str.ptr, o->via.str.size) < 0)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    return 0;
}

void gc_pack_strv(msgpack_packer *pk, char *const *v, size_t n)
{
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        berth_mp_pack_str(pk, v[i]);
}

int gc_orphan_blobs(const gc_blob_t *blobs, size_t n, int64_t cutoff_wall, const gc_strv_t *exclude,
                    gc_strv_t *out, berth_error_t **err)
{
    char buf[128];
    for (size_t i = 0; i < n; i++) {
        const gc_blob_t *b = &blobs[i];
        /* A file changed at or after the cutoff may belong to a commit whose
         * record is being written right now: leave it for a later run. */
        if (b->mtime_wall >= cutoff_wall)
            continue;
        if (b->digest_len == 0 || b->digest_len >= sizeof(buf))
            continue;
        memcpy(buf, b->digest, b->digest_len);
        buf[b->digest_len] = 0;
        if (exclude && gc_strv_has(exclude, buf))
            continue;
        if (gc_strv_push(out, b->digest, b->digest_len) < 0)
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    return 0;
}

int gc_parse_blobs(const msgpack_object *result, gc_blob_t **out, size_t *n, berth_error_t **err)
{
    *out = NULL;
    *n = 0;
    const msgpack_object *arr = NULL;
    if (berth_mp_get_array(result, "blobs", &arr, err) < 0)
        return berth_error_wrap(err, "content.list_blobs result");
    if (!arr || arr->via.array.size == 0)
        return 0;
    gc_blob_t *v = calloc(arr->via.array.size, sizeof(*v));
    if (!v)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    size_t k = 0;
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *e = &arr->via.array.ptr[i];
        const char *d = NULL;
        size_t dl = 0;
        uint64_t size = 0;
        int64_t mtime = 0;
        if (e->type != MSGPACK_OBJECT_MAP || berth_mp_get_str(e, "digest", &d, &dl, err) != 0 ||
            berth_mp_get_u64(e, "size", &size, err) < 0 ||
            berth_mp_get_i64(e, "mtime", &mtime, err) < 0) {
            free(v);
            berth_error_set(err, BERTH_E_INTERNAL, "content.list_blobs: malformed entry %u", i);
            return -1;
        }
        /* No mtime means "unknown": never an orphan candidate. */
        if (!berth_mp_get(e, "mtime"))
            mtime = INT64_MAX;
        v[k++] = (gc_blob_t){.digest = d, .digest_len = dl, .size = size, .mtime_wall = mtime};
    }
    *out = v;
    *n = k;
    return 0;
}

void gc_pack_stats(msgpack_packer *pk, const gc_stats_t *st, const char *error)
{
    msgpack_pack_map(pk, error ? 12 : 11);
    berth_mp_kv_u64(pk, "content_deleted", st->content_deleted);
    berth_mp_kv_u64(pk, "snapshots_deleted", st->snapshots_deleted);
    berth_mp_kv_u64(pk, "orphans_deleted", st->orphans_deleted);
    berth_mp_kv_u64(pk, "bytes_freed", st->bytes_freed);
    berth_mp_kv_u64(pk, "failed", st->failed);
    berth_mp_kv_u64(pk, "pending", st->pending);
    berth_mp_kv_u64(pk, "duration_ns", st->duration_ns);
    berth_mp_kv_u64(pk, "mark_ns", st->mark_ns);
    berth_mp_kv_u64(pk, "lock_ns", st->lock_ns);
    berth_mp_kv_i64(pk, "started_at", st->started_at);
    berth_mp_kv_i64(pk, "finished_at", st->finished_at);
    if (error)
        berth_mp_kv_str(pk, "error", error);
}
