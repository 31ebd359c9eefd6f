/* SPDX-License-Identifier: Apache-2.0 */
/* The content.* methods: decode params, ask metadata where namespaces are
 * involved, run the store (store.c) on libuv's thread pool, encode results.
 * The loop thread only moves messages; every file operation and all hashing
 * happens in uv_queue_work callbacks. content.write keeps at most one batch
 * of chunks in flight, written and hashed on two pool threads at once, and
 * holds the caller's acks until its chunks are on disk, so a fast caller
 * cannot make us buffer more than its window. */
#include <errno.h>
#include <inttypes.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "berth/failpoint.h"
#include "internal.h"

#define READ_CHUNK (1u << 20) /* protocol limit for a bin chunk */
#define BATCH_MAX 4           /* chunks per write batch: half the window */
/* Bytes all reads together may have read ahead but not yet handed to the
 * connection. Each stream's credit bounds it alone; this bounds the sum, so
 * that 100 concurrent reads can neither push the connection to the core past
 * its limit (the SDK's high-water mark is checked when a batch is planned,
 * not when it lands) nor hold 4 MiB of buffers each. */
#define READ_AHEAD_BUDGET (32u << 20)

static content_plugin_t *plugin_of(berth_req_t *r)
{
    return berth_plugin_data(berth_req_plugin(r));
}

static berth_error_t *error_copy(const berth_error_t *e, const char *ctx)
{
    berth_error_t *out = NULL;
    berth_error_set(&out, e->code, "%s: %s", ctx, e->message ? e->message : "error");
    return out;
}

/* ---- calls to metadata --------------------------------------------------- */

typedef void (*meta_done_fn)(void *ctx, const berth_error_t *err, const msgpack_object *res);

/* One call to metadata, embedded in the context that makes it (each context
 * has at most one in flight), so making a call cannot fail for memory. */
typedef struct {
    meta_done_fn done;
    void *ctx;
    uv_work_t work; /* delivers a failure to send, see meta_call */
    berth_error_t *err;
} meta_call_t;

static void meta_cb(berth_call_t *c, const berth_error_t *err, const msgpack_object *result,
                    void *data)
{
    meta_call_t *m = data;
    m->done(m->ctx, err, result);
}

static void meta_noop(uv_work_t *w)
{
    (void)w;
}

static void meta_failed_after(uv_work_t *w, int status)
{
    meta_call_t *m = w->data;
    berth_error_t *e = m->err;
    m->err = NULL;
    m->done(m->ctx, e, NULL);
    berth_error_free(&e);
}

/* Calls a metadata method; done runs exactly once, and never before this
 * returns: a call that cannot be sent (the core connection is gone) fails
 * from a later loop iteration, so callers need not expect re-entrance. */
static void meta_call(content_plugin_t *cp, meta_call_t *m, const char *method,
                      berth_mpbuf_t *params, meta_done_fn done, void *ctx)
{
    m->done = done;
    m->ctx = ctx;
    m->work.data = m;
    m->err = NULL;
    if (berth_call(cp->p, method, params->buf.data, params->buf.size, 0, meta_cb, NULL, m, &m->err))
        return;
    if (!m->err)
        berth_error_set(&m->err, BERTH_E_UNAVAILABLE, "cannot call %s", method);
    if (uv_queue_work(berth_plugin_loop(cp->p), &m->work, meta_noop, meta_failed_after) < 0) {
        /* The loop refuses work only when it is being torn down. */
        berth_error_t *e = m->err;
        m->err = NULL;
        done(ctx, e, NULL);
        berth_error_free(&e);
    }
}

/* ---- simple jobs: run in the pool, reply with a packed result ----------- */

typedef struct simple_job_s simple_job_t;
typedef int (*simple_run_fn)(simple_job_t *j, berth_error_t **err);

struct simple_job_s {
    uv_work_t work;
    berth_req_t *req;
    content_plugin_t *cp;
    simple_run_fn run;
    char *ns;
    char *s1;    /* ref or digest */
    char *lease; /* content.path: the caller's lease */
    regex_t re;
    bool have_re;
    berth_mpbuf_t out; /* the packed result */
    berth_error_t *err;
    /* follow-up on the loop after success (NULL: reply out) */
    void (*then)(simple_job_t *j);
    meta_call_t meta;
};

static void simple_job_free(simple_job_t *j)
{
    free(j->ns);
    free(j->s1);
    free(j->lease);
    if (j->have_re)
        regfree(&j->re);
    berth_mpbuf_destroy(&j->out);
    berth_error_free(&j->err);
    free(j);
}

static void simple_work(uv_work_t *w)
{
    simple_job_t *j = w->data;
    j->run(j, &j->err);
}

static void simple_after(uv_work_t *w, int status)
{
    simple_job_t *j = w->data;
    if (status == UV_ECANCELED)
        berth_error_set(&j->err, BERTH_E_CANCELED, "%s was cancelled", berth_req_method(j->req));
    if (j->err) {
        berth_req_fail(j->req, &j->err);
    } else if (j->then) {
        j->then(j);
        return; /* then() owns j now */
    } else {
        berth_req_reply_raw(j->req, j->out.buf.data, j->out.buf.size);
    }
    simple_job_free(j);
}

static simple_job_t *simple_job_new(berth_req_t *r, simple_run_fn run)
{
    simple_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    j->req = r;
    j->cp = plugin_of(r);
    j->run = run;
    j->work.data = j;
    berth_mpbuf_init(&j->out);
    j->ns = strdup(berth_req_namespace(r));
    if (!j->ns) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        simple_job_free(j);
        return NULL;
    }
    return j;
}

static void simple_job_start(simple_job_t *j)
{
    int rc = uv_queue_work(berth_plugin_loop(j->cp->p), &j->work, simple_work, simple_after);
    if (rc < 0) {
        berth_req_failf(j->req, BERTH_E_INTERNAL, "cannot queue work: %s", uv_strerror(rc));
        simple_job_free(j);
    }
}

/* Reads a required string param into *out (malloc'd). Fails the request. */
static int req_str(berth_req_t *r, const msgpack_object *params, const char *key, char **out)
{
    berth_error_t *err = NULL;
    int rc = berth_mp_get_strdup(params, key, out, &err);
    if (rc < 0) {
        berth_req_fail(r, &err);
        return -1;
    }
    if (rc == 1 || !**out) {
        free(*out);
        *out = NULL;
        berth_req_failf(r, BERTH_E_INVALID_ARGUMENT, "%s: parameter %s is required",
                        berth_req_method(r), key);
        return -1;
    }
    return 0;
}

static int req_digest(berth_req_t *r, const msgpack_object *params, char **out)
{
    if (req_str(r, params, "digest", out) < 0)
        return -1;
    berth_error_t *err = NULL;
    if (content_digest_parse(*out, NULL, &err) < 0) {
        free(*out);
        *out = NULL;
        berth_req_fail(r, &err);
        return -1;
    }
    return 0;
}

static void pack_status(msgpack_packer *pk, const content_status_t *st)
{
    msgpack_pack_map(pk, 7);
    berth_mp_kv_str(pk, "ref", st->ref);
    berth_mp_kv_u64(pk, "offset", st->offset);
    berth_mp_kv_u64(pk, "total", st->total);
    berth_mp_kv_str(pk, "expected", st->expected);
    berth_mp_kv_i64(pk, "started_at", st->started_at);
    berth_mp_kv_i64(pk, "updated_at", st->updated_at);
    berth_mp_kv_bool(pk, "active", st->active);
}

/* The reserved `lease` param travels with the calls made on behalf of a
 * request, so metadata can add what we record to the caller's lease. */
static void pack_lease(msgpack_packer *pk, const char *lease)
{
    if (lease)
        berth_mp_kv_str(pk, "lease", lease);
}

/* ---- content.status / active / abort ------------------------------------- */

static int run_status(simple_job_t *j, berth_error_t **err)
{
    content_status_t st;
    if (content_ingest_status(j->cp->store, j->ns, j->s1, &st, err) < 0)
        return -1;
    msgpack_pack_map(&j->out.pk, 1);
    berth_mp_pack_str(&j->out.pk, "status");
    pack_status(&j->out.pk, &st);
    content_status_clear(&st);
    return 0;
}

static void handle_status(berth_req_t *r, const msgpack_object *params)
{
    char *ref = NULL;
    if (req_str(r, params, "ref", &ref) < 0)
        return;
    simple_job_t *j = simple_job_new(r, run_status);
    if (!j) {
        free(ref);
        return;
    }
    j->s1 = ref;
    simple_job_start(j);
}

static int run_active(simple_job_t *j, berth_error_t **err)
{
    content_status_t *v = NULL;
    size_t n = 0;
    if (content_ingest_list(j->cp->store, j->ns, j->have_re ? &j->re : NULL, &v, &n, err) < 0)
        return -1;
    msgpack_pack_map(&j->out.pk, 1);
    berth_mp_pack_str(&j->out.pk, "statuses");
    msgpack_pack_array(&j->out.pk, n);
    for (size_t i = 0; i < n; i++)
        pack_status(&j->out.pk, &v[i]);
    content_status_free_array(v, n);
    return 0;
}

static void handle_active(berth_req_t *r, const msgpack_object *params)
{
    berth_error_t *err = NULL;
    char *regex = NULL;
    if (berth_mp_get_strdup(params, "regex", &regex, &err) < 0) {
        berth_req_fail(r, &err);
        return;
    }
    simple_job_t *j = simple_job_new(r, run_active);
    if (!j) {
        free(regex);
        return;
    }
    if (regex && *regex) {
        int rc = regcomp(&j->re, regex, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char msg[256];
            regerror(rc, &j->re, msg, sizeof(msg));
            berth_req_failf(r, BERTH_E_INVALID_ARGUMENT, "invalid regular expression \"%s\": %s",
                            regex, msg);
            free(regex);
            simple_job_free(j);
            return;
        }
        j->have_re = true;
    }
    free(regex);
    simple_job_start(j);
}

static void abort_meta_done(void *ctx, const berth_error_t *err, const msgpack_object *res)
{
    simple_job_t *j = ctx;
    if (err) {
        berth_error_t *e =
            error_copy(err, "ingest removed, but recording its end in metadata failed");
        berth_req_fail(j->req, &e);
    } else {
        berth_req_reply_empty(j->req);
    }
    simple_job_free(j);
}

static void abort_then(simple_job_t *j)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "namespace", j->ns);
    berth_mp_kv_str(&b.pk, "ref", j->s1);
    meta_call(j->cp, &j->meta, "meta.ingest_end", &b, abort_meta_done, j);
    berth_mpbuf_destroy(&b);
}

static int run_abort(simple_job_t *j, berth_error_t **err)
{
    return content_ingest_abort(j->cp->store, j->ns, j->s1, err);
}

static void handle_abort(berth_req_t *r, const msgpack_object *params)
{
    char *ref = NULL;
    if (req_str(r, params, "ref", &ref) < 0)
        return;
    /* Test hook (BERTH_FAILPOINTS=content.sandbox_probe=error): `content
     * abort sandbox-probe-SYSCALL` makes that forbidden syscall, so
     * tests/e2e/sandbox.bats can prove that seccomp kills this process and
     * the core restarts it. content.abort is neither idempotent nor replay:
     * the core does not re-send the fatal request. */
    if (berth_req_sandbox_probe(r, ref, strlen(ref), "content.sandbox_probe")) {
        free(ref);
        return;
    }
    simple_job_t *j = simple_job_new(r, run_abort);
    if (!j) {
        free(ref);
        return;
    }
    j->s1 = ref;
    j->then = abort_then;
    simple_job_start(j);
}

/* ---- content.path / delete_blob / list_blobs ----------------------------- */

static int run_path(simple_job_t *j, berth_error_t **err)
{
    _cleanup_free_ char *path = NULL;
    uint64_t size = 0;
    if (content_blob_path(j->cp->store, j->s1, &path, &size, err) < 0)
        return -1;
    msgpack_pack_map(&j->out.pk, 2);
    berth_mp_kv_str(&j->out.pk, "path", path);
    berth_mp_kv_u64(&j->out.pk, "size", size);
    return 0;
}

static void lease_checked(void *ctx, const berth_error_t *err, const msgpack_object *res)
{
    simple_job_t *j = ctx;
    if (err) {
        berth_error_t *e = error_copy(err, "check the lease in metadata");
        berth_req_fail(j->req, &e);
        simple_job_free(j);
        return;
    }
    bool held = false, exists = false;
    berth_mp_get_bool(res, "held", &held, NULL);
    berth_mp_get_bool(res, "exists", &exists, NULL);
    if (!exists) {
        berth_req_failf(j->req, BERTH_E_NOT_FOUND, "content %s not found in namespace %s", j->s1,
                        j->ns);
    } else if (!held) {
        berth_req_failf(j->req, BERTH_E_PERMISSION_DENIED,
                        "content.path needs the lease that holds %s (leases.add_resource): "
                        "lease %s of namespace %s is unknown, expired or does not hold it",
                        j->s1, j->lease, j->ns);
    } else {
        simple_job_start(j);
        return;
    }
    simple_job_free(j);
}

/* A path lets the caller read the blob outside any request, so it is given
 * only to a caller whose lease holds the digest (ARCHITECTURE.md: gc keeps
 * what a lease holds, so the file stays while the caller reads it), and
 * only for content its namespace has: one meta.lease_check read for both. */
static void handle_path(berth_req_t *r, const msgpack_object *params)
{
    char *digest = NULL;
    if (req_digest(r, params, &digest) < 0)
        return;
    const char *lease = berth_req_lease(r);
    if (!lease || !*lease) {
        berth_req_failf(r, BERTH_E_PERMISSION_DENIED,
                        "content.path needs the lease that holds %s (leases.add_resource): the "
                        "request has no lease",
                        digest);
        free(digest);
        return;
    }
    simple_job_t *j = simple_job_new(r, run_path);
    if (!j) {
        free(digest);
        return;
    }
    j->s1 = digest;
    j->lease = strdup(lease);
    if (!j->lease) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        simple_job_free(j);
        return;
    }
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 3);
    berth_mp_kv_str(&b.pk, "namespace", j->ns);
    berth_mp_kv_str(&b.pk, "id", j->lease);
    berth_mp_pack_str(&b.pk, "resource");
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "type", "content");
    berth_mp_kv_str(&b.pk, "id", j->s1);
    meta_call(j->cp, &j->meta, "meta.lease_check", &b, lease_checked, j);
    berth_mpbuf_destroy(&b);
}

static int run_delete_blob(simple_job_t *j, berth_error_t **err)
{
    uint64_t freed = 0;
    if (content_blob_delete(j->cp->store, j->s1, &freed, err) < 0)
        return -1;
    berth_log(BERTH_LOG_INFO, "msg=\"blob deleted\" digest=%s freed=%" PRIu64, j->s1, freed);
    msgpack_pack_map(&j->out.pk, 1);
    berth_mp_kv_u64(&j->out.pk, "freed", freed);
    return 0;
}

static void handle_delete_blob(berth_req_t *r, const msgpack_object *params)
{
    char *digest = NULL;
    if (req_digest(r, params, &digest) < 0)
        return;
    simple_job_t *j = simple_job_new(r, run_delete_blob);
    if (!j) {
        free(digest);
        return;
    }
    j->s1 = digest;
    simple_job_start(j);
}

static int run_list_blobs(simple_job_t *j, berth_error_t **err)
{
    content_blob_info_t *v = NULL;
    size_t n = 0;
    if (content_blob_list(j->cp->store, &v, &n, err) < 0)
        return -1;
    msgpack_pack_map(&j->out.pk, 1);
    berth_mp_pack_str(&j->out.pk, "blobs");
    msgpack_pack_array(&j->out.pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_map(&j->out.pk, 3);
        berth_mp_kv_str(&j->out.pk, "digest", v[i].digest);
        berth_mp_kv_u64(&j->out.pk, "size", v[i].size);
        berth_mp_kv_i64(&j->out.pk, "mtime", v[i].mtime);
    }
    free(v);
    return 0;
}

static void handle_list_blobs(berth_req_t *r, const msgpack_object *params)
{
    simple_job_t *j = simple_job_new(r, run_list_blobs);
    if (j)
        simple_job_start(j);
}

/* ---- content.read --------------------------------------------------------- */

typedef struct {
    uint8_t *buf;
    size_t len;
} rchunk_t;

typedef struct rctx_s {
    berth_req_t *req;
    content_plugin_t *cp;
    char *ns, *digest;
    uint64_t offset, size; /* requested */
    /* waiting for read-ahead budget (g_read_waiters) */
    struct rctx_s *wnext, *wprev;
    bool waiting;
    uint64_t reserved; /* budget held by the running batch */
    int fd;
    uint64_t pos, end; /* next byte to read, end of range */
    uint64_t sent;
    bool opened;
    /* read-ahead job */
    uv_work_t work;
    bool busy;
    rchunk_t chunks[BATCH_MAX];
    unsigned nchunks;
    berth_error_t *err;
    bool done;
    meta_call_t meta;
} rctx_t;

/* Read-ahead budget shared by all reads of this process (loop thread). */
static uint64_t g_read_reserved;
static rctx_t *g_read_waiters, *g_read_waiters_tail;

static void waiter_unlink(rctx_t *c)
{
    if (!c->waiting)
        return;
    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        g_read_waiters = c->wnext;
    if (c->wnext)
        c->wnext->wprev = c->wprev;
    else
        g_read_waiters_tail = c->wprev;
    c->wnext = c->wprev = NULL;
    c->waiting = false;
}

static void waiter_push(rctx_t *c)
{
    if (c->waiting)
        return;
    c->waiting = true;
    c->wnext = NULL;
    c->wprev = g_read_waiters_tail;
    if (g_read_waiters_tail)
        g_read_waiters_tail->wnext = c;
    else
        g_read_waiters = c;
    g_read_waiters_tail = c;
}

static void rctx_free(rctx_t *c)
{
    waiter_unlink(c);
    if (c->fd >= 0)
        close(c->fd);
    for (unsigned i = 0; i < BATCH_MAX; i++)
        free(c->chunks[i].buf);
    berth_error_free(&c->err);
    free(c->ns);
    free(c->digest);
    free(c);
}

/* Answers the request once no job is running; frees the context. */
static void read_finish(rctx_t *c)
{
    if (c->busy)
        return;
    if (!c->done) {
        c->done = true;
        if (c->err) {
            berth_req_fail(c->req, &c->err);
        } else if (berth_req_canceled(c->req)) {
            berth_req_failf(c->req, BERTH_E_CANCELED, "read of %s cancelled", c->digest);
        } else {
            berth_req_stream_close(c->req);
            msgpack_packer *pk = berth_req_reply_begin(c->req);
            msgpack_pack_map(pk, 1);
            berth_mp_kv_u64(pk, "size", c->sent);
            berth_req_reply_end(c->req);
        }
    }
    rctx_free(c);
}

static void read_work(uv_work_t *w)
{
    rctx_t *c = w->data;
    if (!c->opened) {
        uint64_t size = 0;
        if (content_blob_open(c->cp->store, c->digest, &c->fd, &size, &c->err) < 0)
            return;
        c->opened = true;
        if (c->offset > size) {
            berth_error_set(&c->err, BERTH_E_INVALID_ARGUMENT,
                            "offset %" PRIu64 " is beyond the end of %s (%" PRIu64 " bytes)",
                            c->offset, c->digest, size);
            return;
        }
        c->pos = c->offset;
        c->end = (c->size && c->size < size - c->offset) ? c->offset + c->size : size;
        return;
    }
    for (unsigned i = 0; i < c->nchunks; i++) {
        rchunk_t *ch = &c->chunks[i];
        uint64_t left = c->end - c->pos;
        size_t want = left < READ_CHUNK ? (size_t)left : READ_CHUNK;
        if (!ch->buf && !(ch->buf = malloc(READ_CHUNK))) {
            berth_error_set(&c->err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        size_t got = 0;
        while (got < want) {
            ssize_t r = pread(c->fd, ch->buf + got, want - got, (off_t)(c->pos + got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                berth_error_errno(&c->err, errno, "read %s", c->digest);
                return;
            }
            if (r == 0) {
                berth_error_set(&c->err, BERTH_E_INTERNAL, "%s is shorter than expected",
                                c->digest);
                return;
            }
            got += (size_t)r;
        }
        ch->len = got;
        c->pos += got;
    }
}

static void read_pump(rctx_t *c);

/* Returns the batch's budget and lets waiting reads go on, oldest first. */
static void read_release(rctx_t *c)
{
    g_read_reserved -= c->reserved;
    c->reserved = 0;
    while (g_read_waiters && g_read_reserved + READ_CHUNK <= READ_AHEAD_BUDGET) {
        rctx_t *w = g_read_waiters;
        waiter_unlink(w);
        read_pump(w);
    }
}

static void read_after(uv_work_t *w, int status)
{
    rctx_t *c = w->data;
    c->busy = false;
    if (status == UV_ECANCELED && !c->err)
        berth_error_set(&c->err, BERTH_E_CANCELED, "read of %s cancelled", c->digest);
    if (c->err || berth_req_canceled(c->req)) {
        read_release(c);
        read_finish(c);
        return;
    }
    for (unsigned i = 0; i < c->nchunks; i++) {
        berth_req_stream_send_bin(c->req, c->chunks[i].buf, c->chunks[i].len);
        c->sent += c->chunks[i].len;
        /* the connection has its copy: give the memory back */
        free(c->chunks[i].buf);
        c->chunks[i].buf = NULL;
    }
    c->nchunks = 0;
    read_release(c);
    read_pump(c);
}

static void read_pump(rctx_t *c)
{
    if (c->busy || c->done)
        return;
    if (c->err || berth_req_canceled(c->req) || (c->opened && c->pos >= c->end)) {
        read_finish(c);
        return;
    }
    if (c->opened) {
        unsigned credit = berth_req_stream_credit(c->req);
        if (credit == 0)
            return; /* the writable callback brings us back */
        uint64_t left_chunks = (c->end - c->pos + READ_CHUNK - 1) / READ_CHUNK;
        unsigned n = credit < BATCH_MAX ? credit : BATCH_MAX;
        uint64_t budget = (READ_AHEAD_BUDGET - g_read_reserved) / READ_CHUNK;
        if (budget == 0) {
            waiter_push(c); /* read_release brings us back */
            return;
        }
        waiter_unlink(c);
        if (n > budget)
            n = (unsigned)budget;
        c->nchunks = left_chunks < n ? (unsigned)left_chunks : n;
        c->reserved = (uint64_t)c->nchunks * READ_CHUNK;
        g_read_reserved += c->reserved;
    }
    c->busy = true;
    int rc = uv_queue_work(berth_plugin_loop(c->cp->p), &c->work, read_work, read_after);
    if (rc < 0) {
        c->busy = false;
        berth_error_set(&c->err, BERTH_E_INTERNAL, "cannot queue work: %s", uv_strerror(rc));
        read_release(c);
        read_finish(c);
    }
}

static void read_writable(berth_req_t *r)
{
    read_pump(berth_req_data(r));
}
static void read_cancel(berth_req_t *r)
{
    read_pump(berth_req_data(r));
}

static void read_exists_done(void *ctx, const berth_error_t *err, const msgpack_object *res)
{
    rctx_t *c = ctx;
    c->busy = false;
    if (err) {
        c->err = error_copy(err, "check content in metadata");
    } else {
        bool exists = false;
        berth_mp_get_bool(res, "exists", &exists, NULL);
        if (!exists)
            berth_error_set(&c->err, BERTH_E_NOT_FOUND, "content %s not found in namespace %s",
                            c->digest, c->ns);
    }
    read_pump(c);
}

static void handle_read(berth_req_t *r, const msgpack_object *params)
{
    char *digest = NULL;
    if (req_digest(r, params, &digest) < 0)
        return;
    berth_error_t *err = NULL;
    uint64_t offset = 0, size = 0;
    if (berth_mp_get_u64(params, "offset", &offset, &err) < 0 ||
        berth_mp_get_u64(params, "size", &size, &err) < 0) {
        free(digest);
        berth_req_fail(r, &err);
        return;
    }
    rctx_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->ns = strdup(berth_req_namespace(r)))) {
        free(c);
        free(digest);
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    c->req = r;
    c->cp = plugin_of(r);
    c->digest = digest;
    c->offset = offset;
    c->size = size;
    c->fd = -1;
    c->work.data = c;
    berth_req_set_data(r, c);
    berth_req_set_writable_cb(r, read_writable);
    berth_req_set_cancel_cb(r, read_cancel);
    /* busy while metadata answers, so a cancel meanwhile waits for it */
    c->busy = true;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "namespace", c->ns);
    berth_mp_kv_str(&b.pk, "digest", c->digest);
    meta_call(c->cp, &c->meta, "meta.content_exists", &b, read_exists_done, c);
    berth_mpbuf_destroy(&b);
}

/* ---- content.write -------------------------------------------------------- */

typedef struct wchunk_s {
    struct wchunk_s *next;
    size_t len;
    uint64_t off;
    uint8_t buf[];
} wchunk_t;

typedef enum {
    W_BEGIN,  /* meta.ingest_begin in flight */
    W_OPEN,   /* opening or resuming the ingest in the pool */
    W_STREAM, /* receiving and writing chunks */
    W_COMMIT, /* verifying and linking the blob in the pool */
    W_META,   /* meta.content_commit in flight */
    W_FINISH, /* removing the ingest in the pool */
    W_DONE,   /* ready to answer */
} wstate_t;

typedef struct {
    berth_req_t *req; /* NULL once answered */
    content_plugin_t *cp;
    char *ns, *ref, *expected, *lease;
    uint64_t total;
    bool commit;
    berth_mpbuf_t labels; /* one packed map, if have_labels */
    bool have_labels;
    wstate_t state;
    content_ingest_t *ing;
    bool existed_early; /* the expected digest was committed already */
    uint64_t early_size;
    bool linked;       /* the ingest's data is now the blob: never write it again */
    uint64_t next_off; /* offset of the next chunk to be queued */
    bool ended;        /* the caller sent $stream.end */
    wchunk_t *qhead, *qtail;
    /* the batch in flight: written and hashed in parallel */
    wchunk_t *batch;
    unsigned nbatch;
    int lanes;
    uv_work_t wdata, whash;
    int busy; /* pool jobs and metadata calls in flight */
    berth_error_t *err;
    berth_error_t *job_err;  /* set by a pool job, moved to err on the loop */
    berth_error_t *lane_err; /* set by the data lane */
    /* The disk filled up (ENOSPC/EDQUOT) while writing: the partial ingest is
     * removed instead of kept resumable, since its bytes are what filled the
     * disk, and metadata is told the ingest ended. */
    bool discard;
    bool discarded, meta_ended;
    content_commit_t result;
    meta_call_t meta;
    unsigned begin_tries; /* meta.ingest_begin answered `aborted` (tombstone) */
} wctx_t;

static void w_drive(wctx_t *w);

static void chunks_free(wchunk_t *c)
{
    while (c) {
        wchunk_t *n = c->next;
        free(c);
        c = n;
    }
}

static void w_free(wctx_t *w)
{
    chunks_free(w->qhead);
    chunks_free(w->batch);
    if (w->have_labels)
        berth_mpbuf_destroy(&w->labels);
    berth_error_free(&w->err);
    berth_error_free(&w->job_err);
    berth_error_free(&w->lane_err);
    free(w->ns);
    free(w->ref);
    free(w->expected);
    free(w->lease);
    free(w);
}

/* A write or sync of the ingest failed for lack of space: remember to drop
 * the partial ingest and say so in the error. */
static void w_note_full(wctx_t *w, berth_error_t *e)
{
    if (e->code != BERTH_E_RESOURCE_EXHAUSTED || w->discard || w->linked)
        return;
    w->discard = true;
    char *msg = NULL;
    if (asprintf(&msg,
                 "%s (the partial ingest of ref %s was removed to free its space; write it again "
                 "once there is room)",
                 e->message ? e->message : "no space left", w->ref) >= 0) {
        free(e->message);
        e->message = msg;
    }
}

static void w_set_err(wctx_t *w, berth_error_t **e)
{
    if (!w->err)
        w->err = *e;
    else
        berth_error_free(e);
    *e = NULL;
}

/* A pool job of the write: run() in the pool, done() back on the loop. One
 * at a time, except the two lanes of a batch. */
typedef struct {
    uv_work_t work;
    wctx_t *w;
    void (*run)(wctx_t *w);
    void (*done)(wctx_t *w);
} wjob_t;

static void wjob_work(uv_work_t *u)
{
    wjob_t *j = u->data;
    j->run(j->w);
}

static void wjob_after(uv_work_t *u, int status)
{
    wjob_t *j = u->data;
    wctx_t *w = j->w;
    void (*done)(wctx_t *) = j->done;
    free(j);
    w->busy--;
    if (w->job_err && w->ing)
        w_note_full(w, w->job_err);
    if (w->job_err)
        w_set_err(w, &w->job_err);
    if (status == UV_ECANCELED && !w->err)
        berth_error_set(&w->err, BERTH_E_CANCELED, "write of ref %s cancelled", w->ref);
    if (done)
        done(w);
    w_drive(w);
}

static void w_queue(wctx_t *w, void (*run)(wctx_t *), void (*done)(wctx_t *))
{
    wjob_t *j = calloc(1, sizeof(*j));
    int rc = j ? 0 : UV_ENOMEM;
    if (j) {
        j->w = w;
        j->run = run;
        j->done = done;
        j->work.data = j;
        rc = uv_queue_work(berth_plugin_loop(w->cp->p), &j->work, wjob_work, wjob_after);
    }
    if (rc < 0) {
        free(j);
        berth_error_set(&w->err, BERTH_E_INTERNAL, "cannot queue work: %s", uv_strerror(rc));
        return;
    }
    w->busy++;
}

/* Ends the ingest handle: discarded if its bytes are useless (commit refused
 * them) or already the blob, else closed and kept resumable. */
static void run_release(wctx_t *w)
{
    if (w->discard && !w->linked) {
        content_ingest_discard(w->ing);
        w->discarded = true;
    } else if (content_ingest_removed(w->ing) || w->linked) {
        content_ingest_discard(w->ing);
    } else {
        content_ingest_close(w->ing);
    }
}

static void done_release(wctx_t *w)
{
    w->ing = NULL;
}

static void run_open(wctx_t *w)
{
    w->ing = content_ingest_open(w->cp->store, w->ns, w->ref, w->total, w->expected, &w->job_err);
    if (!w->ing)
        return;
    /* containerd's Writer answers already_exists for a committed digest; we
     * turn that into success with existed = true, without the bytes. */
    const char *exp = content_ingest_expected(w->ing);
    if (exp && content_blob_exists(w->cp->store, exp, &w->early_size)) {
        w->existed_early = true;
        snprintf(w->result.digest, sizeof(w->result.digest), "%s", exp);
        w->result.size = w->early_size;
        w->result.existed = true;
        content_ingest_discard(w->ing);
        w->ing = NULL;
    }
}

static void meta_commit(wctx_t *w);

static void done_open(wctx_t *w)
{
    if (w->err || !w->req)
        return;
    /* Tell the caller where to start (or that nothing needs sending). */
    msgpack_packer *pk = berth_req_stream_begin(w->req);
    if (w->existed_early) {
        msgpack_pack_map(pk, 2);
        berth_mp_kv_u64(pk, "offset", w->early_size);
        berth_mp_kv_bool(pk, "existed", true);
        berth_req_stream_end_chunk(w->req);
        w->state = W_META;
        meta_commit(w);
        return;
    }
    uint64_t off = content_ingest_offset(w->ing);
    if (w->qhead && off != 0) {
        /* Chunks sent before we named the offset assume 0: unusable here. */
        berth_error_set(&w->err, BERTH_E_INVALID_ARGUMENT,
                        "content.write: data arrived before the server named the offset; ref %s "
                        "resumes at %" PRIu64 ", wait for the offset chunk",
                        w->ref, off);
        msgpack_pack_map(pk, 2);
        berth_mp_kv_u64(pk, "offset", off);
        berth_mp_kv_u64(pk, "total", content_ingest_total(w->ing));
        berth_req_stream_end_chunk(w->req);
        return;
    }
    w->next_off = off;
    for (wchunk_t *c = w->qhead; c; c = c->next) {
        c->off = w->next_off;
        w->next_off += c->len;
    }
    msgpack_pack_map(pk, 2);
    berth_mp_kv_u64(pk, "offset", off);
    berth_mp_kv_u64(pk, "total", content_ingest_total(w->ing));
    berth_req_stream_end_chunk(w->req);
    berth_log(BERTH_LOG_DEBUG, "msg=\"ingest open\" ref=\"%s\" ns=%s offset=%" PRIu64, w->ref,
              w->ns, off);
    w->state = W_STREAM;
}

static void run_commit(wctx_t *w)
{
    if (content_ingest_commit(w->ing, w->total, w->expected, &w->result, &w->job_err) == 0)
        w->linked = true;
}

static void done_commit(wctx_t *w)
{
    if (w->err)
        return;
    berth_log(BERTH_LOG_INFO,
              "msg=\"committed\" ref=\"%s\" ns=%s digest=%s size=%" PRIu64 " existed=%s", w->ref,
              w->ns, w->result.digest, w->result.size, w->result.existed ? "true" : "false");
    w->state = W_META;
    meta_commit(w);
}

static void done_finish(wctx_t *w)
{
    w->ing = NULL;
    if (!w->err)
        w->state = W_DONE;
}

static void meta_commit_done(void *ctx, const berth_error_t *err, const msgpack_object *res)
{
    wctx_t *w = ctx;
    w->busy--;
    if (err) {
        berth_error_t *e = error_copy(err, "record the commit in metadata");
        w_set_err(w, &e);
    } else if (w->ing) {
        w->state = W_FINISH;
        w_queue(w, run_release, done_finish);
    } else {
        w->state = W_DONE;
    }
    w_drive(w);
}

/* Before answering a commit, the blob is recorded in the caller's namespace
 * (metadata publishes /content/commit). */
static void meta_commit(wctx_t *w)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 4 + (w->have_labels ? 1 : 0) + (w->lease ? 1 : 0));
    berth_mp_kv_str(&b.pk, "namespace", w->ns);
    berth_mp_kv_str(&b.pk, "digest", w->result.digest);
    berth_mp_kv_u64(&b.pk, "size", w->result.size);
    berth_mp_kv_str(&b.pk, "ref", w->ref);
    if (w->have_labels) {
        berth_mp_pack_str(&b.pk, "labels");
        msgpack_sbuffer_write(&b.buf, w->labels.buf.data, w->labels.buf.size);
    }
    pack_lease(&b.pk, w->lease);
    w->busy++;
    meta_call(w->cp, &w->meta, "meta.content_commit", &b, meta_commit_done, w);
    berth_mpbuf_destroy(&b);
}

/* ---- the batch: data lane and hash lane ---------------------------------- */

static void lane_data(uv_work_t *u)
{
    wctx_t *w = u->data;
    for (wchunk_t *c = w->batch; c; c = c->next)
        if (content_ingest_write_data(w->ing, c->off, c->buf, c->len, &w->lane_err) < 0)
            return;
}

static void lane_hash(uv_work_t *u)
{
    wctx_t *w = u->data;
    for (wchunk_t *c = w->batch; c; c = c->next)
        content_ingest_hash(w->ing, c->buf, c->len);
}

static void lane_after(uv_work_t *u, int status)
{
    wctx_t *w = u->data;
    w->busy--;
    if (--w->lanes > 0)
        return;
    if (w->lane_err)
        w_note_full(w, w->lane_err);
    if (w->lane_err)
        w_set_err(w, &w->lane_err);
    if (status == UV_ECANCELED && !w->err)
        berth_error_set(&w->err, BERTH_E_CANCELED, "write of ref %s cancelled", w->ref);
    /* Those chunks are on disk (or failed): the caller may send more. */
    if (w->req && !w->err)
        berth_req_ack(w->req, w->nbatch);
    chunks_free(w->batch);
    w->batch = NULL;
    w->nbatch = 0;
    w_drive(w);
}

static void start_batch(wctx_t *w)
{
    unsigned n = 0;
    wchunk_t **tail = &w->batch;
    while (w->qhead && n < BATCH_MAX) {
        wchunk_t *c = w->qhead;
        w->qhead = c->next;
        c->next = NULL;
        *tail = c;
        tail = &c->next;
        n++;
    }
    if (!w->qhead)
        w->qtail = NULL;
    w->nbatch = n;
    uv_loop_t *loop = berth_plugin_loop(w->cp->p);
    w->wdata.data = w->whash.data = w;
    int rc = uv_queue_work(loop, &w->wdata, lane_data, lane_after);
    if (rc < 0) {
        berth_error_set(&w->err, BERTH_E_INTERNAL, "cannot queue work: %s", uv_strerror(rc));
        return;
    }
    w->busy++;
    w->lanes = 1;
    rc = uv_queue_work(loop, &w->whash, lane_hash, lane_after);
    if (rc < 0) {
        /* The data lane runs; fail once it is back (hash state is stale). */
        berth_error_set(&w->err, BERTH_E_INTERNAL, "cannot queue work: %s", uv_strerror(rc));
        return;
    }
    w->busy++;
    w->lanes = 2;
}

/* ---- the state machine ---------------------------------------------------- */

static void w_answer(wctx_t *w)
{
    berth_req_t *r = w->req;
    w->req = NULL;
    if (!r)
        return;
    if (w->err) {
        berth_req_fail(r, &w->err);
        return;
    }
    if (berth_req_canceled(r)) {
        berth_req_failf(r, BERTH_E_CANCELED, "write of ref %s cancelled", w->ref);
        return;
    }
    msgpack_packer *pk = berth_req_reply_begin(r);
    if (w->commit || w->existed_early) {
        msgpack_pack_map(pk, 3);
        berth_mp_kv_str(pk, "digest", w->result.digest);
        berth_mp_kv_u64(pk, "size", w->result.size);
        berth_mp_kv_bool(pk, "existed", w->result.existed);
    } else {
        msgpack_pack_map(pk, 4);
        berth_mp_kv_str(pk, "digest", NULL);
        berth_mp_kv_u64(pk, "size", w->next_off);
        berth_mp_kv_bool(pk, "existed", false);
        berth_mp_kv_bool(pk, "committed", false);
    }
    berth_req_reply_end(r);
}

static void ingest_end_done(void *ctx, const berth_error_t *err, const msgpack_object *res)
{
    wctx_t *w = ctx;
    w->busy--;
    if (err)
        berth_log(BERTH_LOG_WARN,
                  "msg=\"ingest removed, but recording its end in metadata failed\" ref=\"%s\" "
                  "ns=%s err=\"%s\"",
                  w->ref, w->ns, err->message ? err->message : "");
    w_drive(w);
}

/* The ingest was discarded after a failure: metadata drops its record (a GC
 * root) as it does for content.abort. */
static void w_ingest_end(wctx_t *w)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "namespace", w->ns);
    berth_mp_kv_str(&b.pk, "ref", w->ref);
    w->busy++;
    meta_call(w->cp, &w->meta, "meta.ingest_end", &b, ingest_end_done, w);
    berth_mpbuf_destroy(&b);
}

/* Advances the write by one step when nothing is in flight. Every event
 * (a job back, a chunk, the end of the stream, a cancel) calls it. */
static void w_drive(wctx_t *w)
{
    if (w->busy > 0)
        return;
    bool canceled = w->req && berth_req_canceled(w->req);
    if (w->err || canceled || !w->req) {
        if (w->ing) {
            w_queue(w, run_release, done_release);
            if (w->busy > 0)
                return;
            /* Could not even queue the release: leak the handle, it is
             * unlocked when the process exits. */
            w->ing = NULL;
        }
        if (w->discarded && !w->meta_ended) {
            w->meta_ended = true;
            w_ingest_end(w);
            return;
        }
        w_answer(w);
        w_free(w);
        return;
    }
    switch (w->state) {
    case W_STREAM:
        if (w->qhead) {
            start_batch(w);
            if (w->busy == 0)
                w_drive(w);
            return;
        }
        if (!w->ended)
            return;
        if (!w->commit) {
            w->state = W_DONE;
            w_queue(w, run_release, done_release);
            if (w->busy == 0)
                w_drive(w);
            return;
        }
        w->state = W_COMMIT;
        w_queue(w, run_commit, done_commit);
        if (w->busy == 0)
            w_drive(w);
        return;
    case W_DONE:
        if (w->ing) {
            w_queue(w, run_release, done_release);
            if (w->busy == 0)
                w_drive(w);
            return;
        }
        w_answer(w);
        w_free(w);
        return;
    default:
        return; /* waiting for something that is not in flight cannot happen */
    }
}

static void w_stream(berth_req_t *r, const msgpack_object *data)
{
    wctx_t *w = berth_req_data(r);
    if (!data) {
        w->ended = true;
        w_drive(w);
        return;
    }
    /* Late chunks after a failure, or for a blob that existed: dropped (and
     * acked by the SDK). */
    if (w->err || w->existed_early || w->ended || w->state > W_STREAM)
        return;
    const void *p;
    size_t n;
    if (data->type == MSGPACK_OBJECT_BIN) {
        p = data->via.bin.ptr;
        n = data->via.bin.size;
    } else if (data->type == MSGPACK_OBJECT_STR) {
        p = data->via.str.ptr;
        n = data->via.str.size;
    } else {
        berth_error_set(&w->err, BERTH_E_INVALID_ARGUMENT,
                        "content.write: stream chunks must be bytes");
        w_drive(w);
        return;
    }
    if (n == 0)
        return;
    wchunk_t *c = malloc(sizeof(*c) + n);
    if (!c) {
        berth_error_set(&w->err, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        w_drive(w);
        return;
    }
    /* The message is freed when we return: copy, and ack only once written. */
    memcpy(c->buf, p, n);
    c->len = n;
    c->next = NULL;
    c->off = w->next_off;
    w->next_off += n;
    if (w->qtail)
        w->qtail->next = c;
    else
        w->qhead = c;
    w->qtail = c;
    berth_req_hold_ack(r);
    w_drive(w);
}

static void w_cancel(berth_req_t *r)
{
    w_drive(berth_req_data(r));
}

static void w_begin(wctx_t *w);

/* The expected digest is tombstoned: a collection is deleting that blob
 * right now (ARCHITECTURE.md: "a new reference to a tombstoned object fails
 * with aborted; the caller retries after the backend deletion"). Content is
 * that caller for every writer, so a pull or an import racing a collection
 * waits for the deletion (milliseconds) instead of failing. */
#define BEGIN_TRIES_MAX 8 /* 10 ms doubling: 2.5 s at most */

typedef struct {
    uv_timer_t timer;
    wctx_t *w;
} begin_retry_t;

static void begin_retry_closed(uv_handle_t *h)
{
    begin_retry_t *br = h->data;
    wctx_t *w = br->w;
    free(br);
    w->busy--;
    if (w->req && !berth_req_canceled(w->req) && !w->err) {
        w_begin(w);
        return;
    }
    w_drive(w);
}

static void begin_retry_fire(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, begin_retry_closed);
}

static bool begin_retry(wctx_t *w, const berth_error_t *err)
{
    if (err->code != BERTH_E_ABORTED || w->begin_tries >= BEGIN_TRIES_MAX || !w->req ||
        berth_req_canceled(w->req))
        return false;
    begin_retry_t *br = calloc(1, sizeof(*br));
    if (!br)
        return false;
    br->w = w;
    uv_timer_init(berth_plugin_loop(w->cp->p), &br->timer);
    br->timer.data = br;
    uint64_t ms = 10u << w->begin_tries++;
    berth_log(BERTH_LOG_DEBUG,
              "msg=\"blob is being collected; ingest retried\" ref=\"%s\" expected=%s "
              "try=%u delay_ms=%" PRIu64,
              w->ref, w->expected ? w->expected : "", w->begin_tries, ms);
    w->busy++;
    uv_timer_start(&br->timer, begin_retry_fire, ms, 0);
    return true;
}

static void begin_done(void *ctx, const berth_error_t *err, const msgpack_object *res)
{
    wctx_t *w = ctx;
    w->busy--;
    if (err && begin_retry(w, err))
        return;
    if (err) {
        berth_error_t *e = error_copy(err, "record the ingest in metadata");
        w_set_err(w, &e);
    } else if (w->req && !berth_req_canceled(w->req)) {
        w->state = W_OPEN;
        w_queue(w, run_open, done_open);
    }
    w_drive(w);
}

static void handle_write(berth_req_t *r, const msgpack_object *params)
{
    content_plugin_t *cp = plugin_of(r);
    berth_error_t *err = NULL;
    wctx_t *w = calloc(1, sizeof(*w));
    if (!w) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->cp = cp;
    w->commit = true;
    const msgpack_object *labels = NULL;
    if (req_str(r, params, "ref", &w->ref) < 0) {
        w_free(w);
        return;
    }
    if (berth_mp_get_strdup(params, "expected", &w->expected, &err) < 0 ||
        berth_mp_get_u64(params, "total", &w->total, &err) < 0 ||
        berth_mp_get_bool(params, "commit", &w->commit, &err) < 0 ||
        berth_mp_get_map(params, "labels", &labels, &err) < 0) {
        berth_req_fail(r, &err);
        w_free(w);
        return;
    }
    if (w->expected && !*w->expected) { /* "" means no expectation */
        free(w->expected);
        w->expected = NULL;
    }
    if (w->expected && content_digest_parse(w->expected, NULL, &err) < 0) {
        berth_req_fail(r, &err);
        w_free(w);
        return;
    }
    w->ns = strdup(berth_req_namespace(r));
    const char *lease = berth_req_lease(r);
    w->lease = lease ? strdup(lease) : NULL;
    if (!w->ns || (lease && !w->lease)) {
        berth_req_failf(r, BERTH_E_RESOURCE_EXHAUSTED, "out of memory");
        w_free(w);
        return;
    }
    if (labels) {
        berth_mpbuf_init(&w->labels);
        w->have_labels = true;
        msgpack_pack_object(&w->labels.pk, *labels);
    }
    w->req = r;
    w->state = W_BEGIN;
    berth_req_set_data(r, w);
    berth_req_set_stream_cb(r, w_stream);
    berth_req_set_cancel_cb(r, w_cancel);
    w_begin(w);
}

/* Ingests are GC roots: metadata knows about this one before any byte
 * lands, so a collection cannot race the commit. */
static void w_begin(wctx_t *w)
{
    content_plugin_t *cp = w->cp;
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2 + (w->expected ? 1 : 0) + (w->lease ? 1 : 0));
    berth_mp_kv_str(&b.pk, "namespace", w->ns);
    berth_mp_kv_str(&b.pk, "ref", w->ref);
    if (w->expected)
        berth_mp_kv_str(&b.pk, "expected", w->expected);
    pack_lease(&b.pk, w->lease);
    w->busy++;
    meta_call(cp, &w->meta, "meta.ingest_begin", &b, begin_done, w);
    berth_mpbuf_destroy(&b);
}

/* ---- the method table ----------------------------------------------------- */

const berth_method_t content_methods[] = {
    {"content.write", handle_write, 0, NULL},
    {"content.status", handle_status, BERTH_METHOD_IDEMPOTENT, NULL},
    {"content.active", handle_active, BERTH_METHOD_IDEMPOTENT, NULL},
    {"content.abort", handle_abort, 0, NULL},
    {"content.read", handle_read, BERTH_METHOD_IDEMPOTENT, NULL},
    {"content.path", handle_path, BERTH_METHOD_IDEMPOTENT | BERTH_METHOD_INTERNAL,
     "transfer,snapshot-overlay"},
    {"content.delete_blob", handle_delete_blob, BERTH_METHOD_IDEMPOTENT | BERTH_METHOD_INTERNAL,
     "gc"},
    {"content.list_blobs", handle_list_blobs, BERTH_METHOD_IDEMPOTENT | BERTH_METHOD_INTERNAL,
     "gc"},
};
const size_t content_n_methods = BERTH_ARRAY_SIZE(content_methods);
