/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers shared by every berth component: cleanup attributes,
 * ownership hand-off, byte spans. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define BERTH_UNUSED __attribute__((unused))
#define BERTH_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define BERTH_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline void berth__freep(void *p) { free(*(void **)p); }
static inline void berth__closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

/** Frees the pointer when the variable goes out of scope. */
#define _cleanup_free_ __attribute__((cleanup(berth__freep)))
/** Closes the fd (if >= 0) when the variable goes out of scope. */
#define _cleanup_close_ __attribute__((cleanup(berth__closep)))

static inline void *berth__steal(void *pp)
{
    void **p = (void **)pp;
    void *v = *p;
    *p = NULL;
    return v;
}
/** Hands ownership out of a _cleanup_ variable: returns it and clears it. */
#define steal_pointer(pp) ((__typeof__(*(pp)))berth__steal(pp))

static inline int berth__steal_fd(int *fd)
{
    int v = *fd;
    *fd = -1;
    return v;
}
#define steal_fd(p) berth__steal_fd(p)

/** A borrowed byte span. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} berth_bytes_t;

/** Nanoseconds since the epoch (CLOCK_REALTIME). */
int64_t berth_now_ns(void);
/** Monotonic milliseconds. */
uint64_t berth_mono_ms(void);
