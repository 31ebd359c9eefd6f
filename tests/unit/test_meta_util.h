/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers for the berth-metadata unit tests: a temporary LMDB environment,
 * msgpack object builders, and running domain functions in read or write
 * transactions with their results decoded. Header-only (static). */
#pragma once

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

/* ---- temp env ------------------------------------------------------------ */

typedef struct {
    char dir[64];
    char path[128];
    meta_db_t *db;
    msgpack_zone *zone; /* objects built by the helpers live here */
    berth_mpbuf_t last; /* last result bytes */
    msgpack_object res; /* last result decoded */
    meta_events_t ev;   /* events of the last write */
    berth_error_t *err; /* error of the last call */
} tenv_t;

static inline int tenv_setup(void **state)
{
    tenv_t *t = calloc(1, sizeof(*t));
    snprintf(t->dir, sizeof(t->dir), "/tmp/berth-meta-test-XXXXXX");
    if (!mkdtemp(t->dir))
        return -1;
    snprintf(t->path, sizeof(t->path), "%s/meta.lmdb", t->dir);
    berth_error_t *err = NULL;
    meta_db_opts_t o = {.no_sync = true};
    if (meta_db_open(t->path, &o, &t->db, &err) < 0) {
        fprintf(stderr, "open: %s\n", err->message);
        return -1;
    }
    t->zone = msgpack_zone_new(4096);
    berth_mpbuf_init(&t->last);
    *state = t;
    return 0;
}

static inline int tenv_teardown(void **state)
{
    tenv_t *t = *state;
    if (t->db)
        meta_db_close(t->db);
    msgpack_zone_free(t->zone);
    berth_mpbuf_destroy(&t->last);
    meta_events_clear(&t->ev);
    berth_error_free(&t->err);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", t->dir);
    free(t);
    return 0;
}

/* ---- object builders ---------------------------------------------------- */

/* Unpacks a packed buffer into the env's zone. The bytes are copied into the
 * zone too so that the object outlives the buffer. */
static inline msgpack_object *tobj(tenv_t *t, const berth_mpbuf_t *b)
{
    char *copy = msgpack_zone_malloc(t->zone, b->buf.size ? b->buf.size : 1);
    memcpy(copy, b->buf.data, b->buf.size);
    msgpack_object *o = msgpack_zone_malloc(t->zone, sizeof(*o));
    size_t off = 0;
    assert_int_equal(msgpack_unpack(copy, b->buf.size, &off, t->zone, o), MSGPACK_UNPACK_SUCCESS);
    return o;
}

/* A map of n string pairs: tlabels(t, 2, "a", "1", "b", "2"). */
static inline msgpack_object *tlabels(tenv_t *t, int n, ...)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    va_list ap;
    va_start(ap, n);
    msgpack_pack_map(&b.pk, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        berth_mp_pack_str(&b.pk, va_arg(ap, const char *));
        berth_mp_pack_str(&b.pk, va_arg(ap, const char *));
    }
    va_end(ap);
    msgpack_object *o = tobj(t, &b);
    berth_mpbuf_destroy(&b);
    return o;
}

/* An array of n strings. */
static inline msgpack_object *tstrs(tenv_t *t, int n, ...)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    va_list ap;
    va_start(ap, n);
    msgpack_pack_array(&b.pk, (uint32_t)n);
    for (int i = 0; i < n; i++)
        berth_mp_pack_str(&b.pk, va_arg(ap, const char *));
    va_end(ap);
    msgpack_object *o = tobj(t, &b);
    berth_mpbuf_destroy(&b);
    return o;
}

static inline const char *tdigest(int i)
{
    static char bufs[8][80];
    static int slot;
    char *b = bufs[slot++ % 8];
    snprintf(b, 80, "sha256:%064x", i);
    return b;
}

/* {name, target: {media_type, digest, size}, labels} */
static inline msgpack_object *timage(tenv_t *t, const char *name, const char *digest,
                                     const msgpack_object *labels)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, labels ? 3 : 2);
    berth_mp_kv_str(&b.pk, "name", name);
    berth_mp_pack_str(&b.pk, "target");
    msgpack_pack_map(&b.pk, 3);
    berth_mp_kv_str(&b.pk, "media_type", "application/vnd.oci.image.manifest.v1+json");
    berth_mp_kv_str(&b.pk, "digest", digest);
    berth_mp_kv_u64(&b.pk, "size", 123);
    if (labels) {
        berth_mp_pack_str(&b.pk, "labels");
        msgpack_pack_object(&b.pk, *labels);
    }
    msgpack_object *o = tobj(t, &b);
    berth_mpbuf_destroy(&b);
    return o;
}

static inline msgpack_object *tcontainer(tenv_t *t, const char *id, const char *image,
                                         const char *snap_key, const msgpack_object *labels)
{
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 7);
    berth_mp_kv_str(&b.pk, "id", id);
    berth_mp_kv_str(&b.pk, "image", image);
    berth_mp_pack_str(&b.pk, "runtime");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "name", "io.berth.runc.v1");
    berth_mp_pack_str(&b.pk, "spec");
    berth_mp_pack_bin(&b.pk, "{\"ociVersion\":\"1.0.2\"}", 22);
    berth_mp_kv_str(&b.pk, "snapshotter", snap_key ? "overlayfs" : "");
    berth_mp_kv_str(&b.pk, "snapshot_key", snap_key ? snap_key : "");
    berth_mp_pack_str(&b.pk, "labels");
    if (labels)
        msgpack_pack_object(&b.pk, *labels);
    else
        msgpack_pack_map(&b.pk, 0);
    msgpack_object *o = tobj(t, &b);
    berth_mpbuf_destroy(&b);
    return o;
}

/* ---- running domain code ---------------------------------------------------- */

typedef int (*tbody_fn)(meta_tx_t *tx, void *a, berth_error_t **err);

static inline void tdecode(tenv_t *t)
{
    t->res.type = MSGPACK_OBJECT_NIL;
    if (t->last.buf.size == 0)
        return;
    berth_mpbuf_t copy;
    berth_mpbuf_init(&copy);
    msgpack_sbuffer_write(&copy.buf, t->last.buf.data, t->last.buf.size);
    t->res = *tobj(t, &copy);
    berth_mpbuf_destroy(&copy);
}

/* Runs fn in a write transaction; returns 0 or -1 (t->err holds the error). */
static inline int twrite_lease(tenv_t *t, const char *lease, tbody_fn fn, void *a)
{
    berth_error_free(&t->err);
    meta_events_clear(&t->ev);
    msgpack_sbuffer_clear(&t->last.buf);
    meta_wop_t op;
    meta_wop_init(&op, fn, a);
    op.lease = lease;
    meta_db_write_batch(t->db, (meta_wop_t *[]){&op}, 1, NULL, NULL);
    int rc = 0;
    if (op.err) {
        t->err = op.err;
        op.err = NULL;
        rc = -1;
    } else {
        msgpack_sbuffer_write(&t->last.buf, op.result.buf.data, op.result.buf.size);
        t->ev = op.ev;
        memset(&op.ev, 0, sizeof(op.ev));
    }
    meta_wop_destroy(&op);
    tdecode(t);
    return rc;
}

static inline int twrite(tenv_t *t, tbody_fn fn, void *a)
{
    return twrite_lease(t, NULL, fn, a);
}

static inline int tread(tenv_t *t, tbody_fn fn, void *a)
{
    berth_error_free(&t->err);
    msgpack_sbuffer_clear(&t->last.buf);
    meta_tx_t tx;
    assert_int_equal(meta_tx_read(t->db, &tx, &t->err), 0);
    tx.out = &t->last;
    int rc = fn(&tx, a, &t->err);
    meta_tx_end(&tx);
    if (rc < 0)
        msgpack_sbuffer_clear(&t->last.buf);
    tdecode(t);
    return rc;
}

/* Asserts success, printing the error if any. */
#define T_OK(expr)                                                                                 \
    do {                                                                                           \
        if ((expr) != 0)                                                                           \
            fail_msg("%s failed: %s", #expr, t->err ? t->err->message : "(no error)");             \
    } while (0)

static inline void tcheck_msg(const char *expr, const char *msg, const char *substr)
{
    if (substr && !strstr(msg, substr))
        fail_msg("%s: message \"%s\" lacks \"%s\"", expr, msg, substr);
}

/* Asserts failure with a code and (optionally) a message substring. */
#define T_FAIL(expr, ecode, substr)                                                                \
    do {                                                                                           \
        if ((expr) == 0)                                                                           \
            fail_msg("%s succeeded, expected %s", #expr, berth_code_name(ecode));                  \
        if (t->err->code != (ecode))                                                               \
            fail_msg("%s: code %s, expected %s (%s)", #expr, berth_code_name(t->err->code),        \
                     berth_code_name(ecode), t->err->message);                                     \
        tcheck_msg(#expr, t->err->message, (substr));                                              \
    } while (0)

/* Navigation in results. */
static inline const msgpack_object *tget(const msgpack_object *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    const msgpack_object *cur = o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, ".")) {
        if (cur->type == MSGPACK_OBJECT_ARRAY) {
            size_t i = (size_t)atoi(tok);
            cur = i < cur->via.array.size ? &cur->via.array.ptr[i] : NULL;
        } else {
            cur = berth_mp_get(cur, tok);
        }
    }
    return cur;
}

static inline char *tstr(const msgpack_object *o, const char *path)
{
    static char bufs[8][512];
    static int slot;
    char *b = bufs[slot++ % 8];
    const msgpack_object *v = tget(o, path);
    if (!v || v->type != MSGPACK_OBJECT_STR)
        return NULL;
    snprintf(b, 512, "%.*s", (int)v->via.str.size, v->via.str.ptr);
    return b;
}

static inline long tlen(const msgpack_object *o, const char *path)
{
    const msgpack_object *v = tget(o, path);
    if (!v)
        return -1;
    if (v->type == MSGPACK_OBJECT_ARRAY)
        return v->via.array.size;
    if (v->type == MSGPACK_OBJECT_MAP)
        return v->via.map.size;
    return -1;
}

#define assert_str(a, b)                                                                           \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || strcmp(a_, b_) != 0)                                                            \
            fail_msg("%s is \"%s\", expected \"%s\"", #a, a_ ? a_ : "(null)", b_);                 \
    } while (0)
