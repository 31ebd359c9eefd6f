/* SPDX-License-Identifier: Apache-2.0 */
/* Calls from transfer to content and metadata: unary calls, reading a small
 * blob with content.read, writing bytes held in memory with content.write
 * (flow-controlled stream, resumable offset, "existed" short-cut), and the
 * leases that let an operation read blobs by path (content.path). */
#include <stdio.h>
#include <string.h>

#include "berth/log.h"
#include "xfer.h"

#define CHUNK (512 * 1024)

int xfer_call(const char *method, berth_mpbuf_t *params, berth_call_cb cb, void *ud,
              berth_error_t **err)
{
    berth_call_t *c =
        berth_call(xfer_ctx->p, method, params->buf.data, params->buf.size, 0, cb, NULL, ud, err);
    return c ? 0 : -1;
}

void xfer_params_begin(berth_mpbuf_t *b, uint32_t n, const char *ns, const char *lease)
{
    berth_mpbuf_init(b);
    msgpack_pack_map(&b->pk, n + 1 + (lease ? 1 : 0));
    berth_mp_kv_str(&b->pk, "namespace", ns);
    if (lease)
        berth_mp_kv_str(&b->pk, "lease", lease);
}

bool xfer_req_can_send(berth_req_t *r)
{
    return berth_req_stream_credit(r) > 0;
}

/* ---- content.read into memory ------------------------------------------ */

typedef struct {
    xfer_read_cb cb;
    void *ud;
    size_t max;
    char *buf;
    size_t len;
    bool over;
} rd_t;

static void rd_stream(berth_call_t *c, const msgpack_object *data, void *ud)
{
    rd_t *r = ud;
    if (!data || r->over)
        return;
    const char *p = NULL;
    size_t n = 0;
    if (data->type == MSGPACK_OBJECT_BIN) {
        p = data->via.bin.ptr;
        n = data->via.bin.size;
    } else if (data->type == MSGPACK_OBJECT_STR) {
        p = data->via.str.ptr;
        n = data->via.str.size;
    } else {
        return;
    }
    if (r->len + n > r->max) {
        r->over = true;
        berth_call_cancel(c);
        return;
    }
    r->buf = realloc(r->buf, r->len + n + 1);
    memcpy(r->buf + r->len, p, n);
    r->len += n;
}

static void rd_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    rd_t *r = ud;
    berth_error_t *e = NULL;
    if (r->over) {
        berth_error_set(&e, BERTH_E_RESOURCE_EXHAUSTED,
                        "blob is larger than the limit of %zu bytes", r->max);
        err = e;
    }
    if (r->buf)
        r->buf[r->len] = 0;
    r->cb(err, err ? NULL : (r->buf ? r->buf : ""), err ? 0 : r->len, r->ud);
    berth_error_free(&e);
    free(r->buf);
    free(r);
}

int xfer_blob_read(const char *ns, const char *digest, size_t max, xfer_read_cb cb, void *ud,
                   berth_error_t **err)
{
    rd_t *r = calloc(1, sizeof(*r));
    r->cb = cb;
    r->ud = ud;
    r->max = max;
    berth_mpbuf_t b;
    xfer_params_begin(&b, 1, ns, NULL);
    berth_mp_kv_str(&b.pk, "digest", digest);
    berth_call_t *c = berth_call(xfer_ctx->p, "content.read", b.buf.data, b.buf.size, 0, rd_done,
                                 rd_stream, r, err);
    berth_mpbuf_destroy(&b);
    if (!c) {
        free(r);
        return -1;
    }
    return 0;
}

/* ---- content.write from memory ----------------------------------------- */

typedef struct {
    xfer_write_cb cb;
    void *ud;
    char *data;
    size_t len;
    size_t off;
    bool got_offset, closed, existed;
    berth_call_t *c;
} wm_t;

static void wm_pump(wm_t *w)
{
    if (!w->c || !w->got_offset || w->closed || w->existed)
        return;
    while (w->off < w->len && berth_call_stream_credit(w->c) > 0) {
        size_t n = w->len - w->off < CHUNK ? w->len - w->off : CHUNK;
        berth_mp_pack_bin(berth_call_stream_begin(w->c), w->data + w->off, n);
        berth_call_stream_end_chunk(w->c);
        w->off += n;
    }
    if (w->off >= w->len) {
        w->closed = true;
        berth_call_stream_close(w->c);
    }
}

static void wm_writable(berth_call_t *c, void *ud)
{
    wm_pump(ud);
}

static void wm_stream(berth_call_t *c, const msgpack_object *data, void *ud)
{
    wm_t *w = ud;
    if (!data || w->got_offset || data->type != MSGPACK_OBJECT_MAP)
        return;
    w->got_offset = true;
    uint64_t off = 0;
    bool existed = false;
    berth_mp_get_u64(data, "offset", &off, NULL);
    berth_mp_get_bool(data, "existed", &existed, NULL);
    if (existed) {
        w->existed = true;
        return; /* content answers on its own */
    }
    w->off = off > w->len ? w->len : (size_t)off;
    wm_pump(w);
}

static void wm_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    wm_t *w = ud;
    w->c = NULL;
    bool existed = false;
    if (!err)
        berth_mp_get_bool(res, "existed", &existed, NULL);
    w->cb(err, existed, w->ud);
    free(w->data);
    free(w);
}

int xfer_blob_write_mem(const char *ns, const char *lease, const char *ref, const char *digest,
                        const void *data, size_t len, char *const *labels, size_t n_labels,
                        xfer_write_cb cb, void *ud, berth_error_t **err)
{
    wm_t *w = calloc(1, sizeof(*w));
    w->cb = cb;
    w->ud = ud;
    w->data = malloc(len ? len : 1);
    memcpy(w->data, data, len);
    w->len = len;
    berth_mpbuf_t b;
    xfer_params_begin(&b, 3 + (n_labels ? 1 : 0), ns, lease);
    berth_mp_kv_str(&b.pk, "ref", ref);
    berth_mp_kv_str(&b.pk, "expected", digest);
    berth_mp_kv_u64(&b.pk, "total", len);
    if (n_labels) {
        berth_mp_pack_str(&b.pk, "labels");
        msgpack_pack_map(&b.pk, n_labels);
        for (size_t i = 0; i < n_labels; i++) {
            berth_mp_pack_str(&b.pk, labels[2 * i]);
            berth_mp_pack_str(&b.pk, labels[2 * i + 1]);
        }
    }
    w->c = berth_call(xfer_ctx->p, "content.write", b.buf.data, b.buf.size, 0, wm_done, wm_stream,
                      w, err);
    berth_mpbuf_destroy(&b);
    if (!w->c) {
        free(w->data);
        free(w);
        return -1;
    }
    berth_call_set_writable_cb(w->c, wm_writable);
    return 0;
}

/* ---- leases for content.path ------------------------------------------- */

#define LEASE_ADD_WINDOW 32 /* leases.add_resource calls in flight */

typedef struct {
    xfer_lease_created_cb cb;
    void *ud;
} lc_t;

static void lc_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    lc_t *l = ud;
    char *id = err ? NULL : berth_mp_strdup(berth_mp_get(berth_mp_get(res, "lease"), "id"));
    berth_error_t *e = NULL;
    if (!err && !id)
        berth_error_set(&e, BERTH_E_INTERNAL, "leases.create answered without an id");
    l->cb(err ? err : e, id, l->ud);
    berth_error_free(&e);
    free(l);
}

int xfer_lease_create(const char *ns, int64_t ttl_ns, xfer_lease_created_cb cb, void *ud,
                      berth_error_t **err)
{
    lc_t *l = calloc(1, sizeof(*l));
    if (!l)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    l->cb = cb;
    l->ud = ud;
    berth_mpbuf_t b;
    xfer_params_begin(&b, 1, ns, NULL);
    berth_mp_kv_i64(&b.pk, "expire", berth_now_ns() + ttl_ns);
    int rc = xfer_call("leases.create", &b, lc_done, l, err);
    berth_mpbuf_destroy(&b);
    if (rc < 0)
        free(l);
    return rc;
}

typedef struct {
    char *ns, *lease;
    char **digests;
    size_t n, next;
    unsigned inflight;
    bool started; /* the first calls are out: errors go to cb */
    xfer_lease_done_cb cb;
    void *ud;
    berth_error_t *err;
} la_t;

static void la_free(la_t *a)
{
    free(a->ns);
    free(a->lease);
    xfer_strv_free(a->digests, a->n);
    berth_error_free(&a->err);
    free(a);
}

static void la_pump(la_t *a);

static void la_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    la_t *a = ud;
    a->inflight--;
    if (err && !a->err)
        berth_error_set(&a->err, err->code, "add blob to lease %s: %s", a->lease, err->message);
    la_pump(a);
}

/* All calls are sent from the loop in one go (up to the window), so they
 * reach metadata together and share its next write transaction. */
static void la_pump(la_t *a)
{
    while (!a->err && a->next < a->n && a->inflight < LEASE_ADD_WINDOW) {
        berth_mpbuf_t b;
        xfer_params_begin(&b, 2, a->ns, NULL);
        berth_mp_kv_str(&b.pk, "id", a->lease);
        berth_mp_pack_str(&b.pk, "resource");
        msgpack_pack_map(&b.pk, 2);
        berth_mp_kv_str(&b.pk, "type", "content");
        berth_mp_kv_str(&b.pk, "id", a->digests[a->next]);
        berth_error_t *e = NULL;
        int rc = xfer_call("leases.add_resource", &b, la_done, a, &e);
        berth_mpbuf_destroy(&b);
        if (rc < 0) {
            a->err = e;
            break;
        }
        a->next++;
        a->inflight++;
    }
    if (!a->started || a->inflight > 0 || (!a->err && a->next < a->n))
        return;
    a->cb(a->err, a->ud);
    la_free(a);
}

int xfer_lease_add_blobs(const char *ns, const char *lease, char *const *digests, size_t n,
                         xfer_lease_done_cb cb, void *ud, berth_error_t **err)
{
    la_t *a = calloc(1, sizeof(*a));
    if (!a)
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    a->ns = strdup(ns);
    a->lease = strdup(lease);
    a->digests = calloc(n ? n : 1, sizeof(char *));
    if (!a->ns || !a->lease || !a->digests) {
        la_free(a);
        return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t k = 0; k < a->n && !dup; k++)
            dup = strcmp(a->digests[k], digests[i]) == 0;
        if (dup)
            continue;
        if (!(a->digests[a->n] = strdup(digests[i]))) {
            la_free(a);
            return berth_error_set(err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        }
        a->n++;
    }
    a->cb = cb;
    a->ud = ud;
    if (a->n == 0) {
        la_free(a);
        return 1;
    }
    la_pump(a);
    if (a->inflight == 0) { /* not even the first call could be sent */
        *err = a->err;
        a->err = NULL;
        la_free(a);
        return -1;
    }
    a->started = true;
    return 0;
}

typedef struct {
    char *lease;
    void (*cb)(void *ud);
    void *ud;
} ld_t;

static void ld_done(berth_call_t *c, const berth_error_t *err, const msgpack_object *res, void *ud)
{
    ld_t *d = ud;
    if (err && err->code != BERTH_E_NOT_FOUND)
        berth_log(BERTH_LOG_WARN,
                  "msg=\"cannot delete lease; it expires by itself\" lease=%s error=\"%s\"",
                  d->lease, err->message);
    if (d->cb)
        d->cb(d->ud);
    free(d->lease);
    free(d);
}

void xfer_lease_delete(const char *ns, const char *lease, void (*cb)(void *ud), void *ud)
{
    ld_t *d = calloc(1, sizeof(*d));
    char *id = lease ? strdup(lease) : NULL;
    if (d && id) {
        d->lease = id;
        d->cb = cb;
        d->ud = ud;
        berth_mpbuf_t b;
        xfer_params_begin(&b, 1, ns, NULL);
        berth_mp_kv_str(&b.pk, "id", lease);
        int rc = xfer_call("leases.delete", &b, ld_done, d, NULL);
        berth_mpbuf_destroy(&b);
        if (rc == 0)
            return;
    }
    free(id);
    free(d);
    if (cb)
        cb(ud);
}
