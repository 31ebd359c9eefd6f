/* SPDX-License-Identifier: Apache-2.0 */
/* A small open-addressing hash map from uint32 ids (msgids) to pointers.
 * Used for request/response correlation on every connection. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t *keys;
    void **vals; /* NULL = empty; IPC_IDMAP_TOMB = deleted */
    size_t cap;  /* power of two */
    size_t count;
    size_t used; /* count + tombstones */
} ipc_idmap_t;

void ipc_idmap_init(ipc_idmap_t *m);
void ipc_idmap_destroy(ipc_idmap_t *m);
/** Inserts or replaces; val must not be NULL. Returns 0 or -1 (OOM). */
int ipc_idmap_put(ipc_idmap_t *m, uint32_t key, void *val);
void *ipc_idmap_get(const ipc_idmap_t *m, uint32_t key);
/** Removes and returns the value (NULL if absent). */
void *ipc_idmap_del(ipc_idmap_t *m, uint32_t key);
/** Iterates: calls fn for every entry; fn may not modify the map. */
void ipc_idmap_each(const ipc_idmap_t *m, void (*fn)(uint32_t key, void *val, void *data), void *data);
/** Collects all values into a malloc'd array (caller frees); *n gets the count.
 * Use this to iterate when the callback modifies the map. */
void **ipc_idmap_values(const ipc_idmap_t *m, size_t *n);
