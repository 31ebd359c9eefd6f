/* SPDX-License-Identifier: Apache-2.0 */
/* Blocking calls to other plugins from worker threads. The SDK must be used
 * from the loop thread, so a worker queues the call, wakes the loop with a
 * uv_async, and sleeps on a condition variable until the answer (copied out
 * of the message) is there. This keeps multi-step orchestration such as
 * containers.create sequential and readable without blocking the loop. */
#include <stdlib.h>
#include <string.h>

#include "berth/log.h"
#include "rt.h"

struct sync_call_s {
    sync_call_t *next;
    const char *method;
    const void *params;
    size_t len;
    uint32_t timeout_ms;
    size_t collect_max;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    berth_error_t *err;
    rt_result_t *r;
    size_t bin_cap;
    bool overflow;
};

void rt_result_free(rt_result_t *r)
{
    if (r->zone)
        msgpack_zone_free(r->zone);
    free(r->bin);
    memset(r, 0, sizeof(*r));
}

static void finish(sync_call_t *sc)
{
    pthread_mutex_lock(&sc->mu);
    sc->done = true;
    pthread_cond_signal(&sc->cv);
    pthread_mutex_unlock(&sc->mu);
}

static void on_result(berth_call_t *c, const berth_error_t *err, const msgpack_object *result,
                      void *data)
{
    sync_call_t *sc = data;
    (void)c;
    if (sc->overflow) {
        berth_error_set(&sc->err, BERTH_E_RESOURCE_EXHAUSTED, "%s returned more than %zu bytes",
                        sc->method, sc->collect_max);
    } else if (err) {
        berth_error_set(&sc->err, err->code, "%s", err->message ? err->message : "error");
    } else {
        msgpack_zone *z = NULL;
        msgpack_object *copy = result ? berth_mp_clone(result, &z) : NULL;
        if (result && !copy)
            berth_error_set(&sc->err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        sc->r->zone = z;
        sc->r->result = copy;
    }
    finish(sc);
}

static void on_stream(berth_call_t *c, const msgpack_object *data, void *d)
{
    sync_call_t *sc = d;
    if (!data || sc->overflow)
        return;
    const void *p = NULL;
    size_t n = 0;
    if (data->type == MSGPACK_OBJECT_BIN) {
        p = data->via.bin.ptr;
        n = data->via.bin.size;
    } else if (data->type == MSGPACK_OBJECT_STR) {
        p = data->via.str.ptr;
        n = data->via.str.size;
    } else {
        return; /* progress records etc. */
    }
    rt_result_t *r = sc->r;
    if (r->bin_len + n > sc->collect_max) {
        sc->overflow = true;
        berth_call_cancel(c);
        return;
    }
    if (r->bin_len + n > sc->bin_cap) {
        size_t nc = sc->bin_cap ? sc->bin_cap : 65536;
        while (nc < r->bin_len + n)
            nc *= 2;
        uint8_t *b = realloc(r->bin, nc);
        if (!b) {
            sc->overflow = true;
            berth_call_cancel(c);
            return;
        }
        r->bin = b;
        sc->bin_cap = nc;
    }
    memcpy(r->bin + r->bin_len, p, n);
    r->bin_len += n;
}

static void on_async(uv_async_t *h)
{
    (void)h;
    pthread_mutex_lock(&rt_g.mu);
    sync_call_t *list = rt_g.pending;
    rt_g.pending = NULL;
    pthread_mutex_unlock(&rt_g.mu);
    while (list) {
        sync_call_t *sc = list;
        list = sc->next;
        berth_error_t *err = NULL;
        berth_call_t *c = berth_call(rt_g.p, sc->method, sc->params, sc->len, sc->timeout_ms,
                                     on_result, sc->collect_max ? on_stream : NULL, sc, &err);
        if (!c) {
            sc->err = err ? err : NULL;
            if (!sc->err)
                berth_error_set(&sc->err, BERTH_E_UNAVAILABLE, "the core connection is gone");
            finish(sc);
        }
    }
}

int rt_sync_init(uv_loop_t *loop)
{
    pthread_mutex_init(&rt_g.mu, NULL);
    int r = uv_async_init(loop, &rt_g.async, on_async);
    if (r == 0)
        uv_unref((uv_handle_t *)&rt_g.async);
    return r;
}

void rt_sync_close(void)
{
    if (!uv_is_closing((uv_handle_t *)&rt_g.async))
        uv_close((uv_handle_t *)&rt_g.async, NULL);
}

int rt_sync_calls(rt_sync_req_t *reqs, size_t n)
{
    sync_call_t sc[4];
    if (n == 0 || n > BERTH_ARRAY_SIZE(sc))
        return -1;
    for (size_t i = 0; i < n; i++) {
        memset(reqs[i].r, 0, sizeof(*reqs[i].r));
        sc[i] = (sync_call_t){.method = reqs[i].method,
                              .params = reqs[i].params,
                              .len = reqs[i].len,
                              .timeout_ms = reqs[i].timeout_ms,
                              .collect_max = reqs[i].collect_max,
                              .r = reqs[i].r};
        pthread_mutex_init(&sc[i].mu, NULL);
        pthread_cond_init(&sc[i].cv, NULL);
    }
    pthread_mutex_lock(&rt_g.mu);
    bool stopping = rt_g.stopping;
    if (!stopping) {
        /* Issued in order: the loop takes the list LIFO. */
        for (size_t i = n; i-- > 0;) {
            sc[i].next = rt_g.pending;
            rt_g.pending = &sc[i];
        }
    }
    pthread_mutex_unlock(&rt_g.mu);
    if (!stopping)
        uv_async_send(&rt_g.async);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (stopping) {
            berth_error_set(&sc[i].err, BERTH_E_UNAVAILABLE, "the runtime plugin is stopping");
        } else {
            pthread_mutex_lock(&sc[i].mu);
            while (!sc[i].done)
                pthread_cond_wait(&sc[i].cv, &sc[i].mu);
            pthread_mutex_unlock(&sc[i].mu);
        }
        pthread_mutex_destroy(&sc[i].mu);
        pthread_cond_destroy(&sc[i].cv);
        if (sc[i].err) {
            rt_result_free(reqs[i].r);
            reqs[i].err = sc[i].err;
            rc = -1;
        }
    }
    return rc;
}

int rt_sync_call(const char *method, const void *params, size_t len, uint32_t timeout_ms,
                 size_t collect_max, rt_result_t *r, berth_error_t **err)
{
    rt_sync_req_t q = {.method = method,
                       .params = params,
                       .len = len,
                       .timeout_ms = timeout_ms,
                       .collect_max = collect_max,
                       .r = r};
    if (rt_sync_calls(&q, 1) < 0) {
        if (err && !*err)
            *err = q.err;
        else
            berth_error_free(&q.err);
        return -1;
    }
    return 0;
}
