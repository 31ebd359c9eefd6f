/* SPDX-License-Identifier: Apache-2.0 */
/* Open addressing with linear probing and tombstones. */
#include <stdlib.h>

#include "idmap.h"

static char tomb_;
#define TOMB ((void *)&tomb_)

void ipc_idmap_init(ipc_idmap_t *m)
{
    m->keys = NULL;
    m->vals = NULL;
    m->cap = m->count = m->used = 0;
}

void ipc_idmap_destroy(ipc_idmap_t *m)
{
    free(m->keys);
    free(m->vals);
    ipc_idmap_init(m);
}

static inline size_t hash(uint32_t k) { return (size_t)(k * 2654435761u); }

static int grow(ipc_idmap_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    if (m->count * 4 < m->cap) /* mostly tombstones: rehash at same size */
        ncap = m->cap;
    uint32_t *nk = calloc(ncap, sizeof(*nk));
    void **nv = calloc(ncap, sizeof(*nv));
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->vals[i] && m->vals[i] != TOMB) {
            size_t j = hash(m->keys[i]) & (ncap - 1);
            while (nv[j])
                j = (j + 1) & (ncap - 1);
            nk[j] = m->keys[i];
            nv[j] = m->vals[i];
        }
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
    m->used = m->count;
    return 0;
}

int ipc_idmap_put(ipc_idmap_t *m, uint32_t key, void *val)
{
    if ((m->used + 1) * 4 >= m->cap * 3 && grow(m) < 0)
        return -1;
    size_t mask = m->cap - 1, i = hash(key) & mask, tomb = (size_t)-1;
    while (m->vals[i]) {
        if (m->vals[i] == TOMB) {
            if (tomb == (size_t)-1)
                tomb = i;
        } else if (m->keys[i] == key) {
            m->vals[i] = val;
            return 0;
        }
        i = (i + 1) & mask;
    }
    if (tomb != (size_t)-1)
        i = tomb;
    else
        m->used++;
    m->keys[i] = key;
    m->vals[i] = val;
    m->count++;
    return 0;
}

static size_t find(const ipc_idmap_t *m, uint32_t key)
{
    if (!m->cap)
        return (size_t)-1;
    size_t mask = m->cap - 1, i = hash(key) & mask;
    while (m->vals[i]) {
        if (m->vals[i] != TOMB && m->keys[i] == key)
            return i;
        i = (i + 1) & mask;
    }
    return (size_t)-1;
}

void *ipc_idmap_get(const ipc_idmap_t *m, uint32_t key)
{
    size_t i = find(m, key);
    return i == (size_t)-1 ? NULL : m->vals[i];
}

void *ipc_idmap_del(ipc_idmap_t *m, uint32_t key)
{
    size_t i = find(m, key);
    if (i == (size_t)-1)
        return NULL;
    void *v = m->vals[i];
    m->vals[i] = TOMB;
    m->count--;
    return v;
}

void ipc_idmap_each(const ipc_idmap_t *m, void (*fn)(uint32_t key, void *val, void *data), void *data)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->vals[i] && m->vals[i] != TOMB)
            fn(m->keys[i], m->vals[i], data);
}

void **ipc_idmap_values(const ipc_idmap_t *m, size_t *n)
{
    void **out = malloc((m->count ? m->count : 1) * sizeof(*out));
    size_t k = 0;
    if (out)
        for (size_t i = 0; i < m->cap; i++)
            if (m->vals[i] && m->vals[i] != TOMB)
                out[k++] = m->vals[i];
    *n = k;
    return out;
}
