/* SPDX-License-Identifier: Apache-2.0 */
/* berth-metadata's plugin side: the writer queue (all LMDB write
 * transactions run on one libuv work thread, batched into group commits),
 * request jobs, and the method tables of handlers.c and handlers_snap.c.
 * Threading: everything here runs on the loop thread except the batch's
 * meta_db_write_batch(), which runs on a threadpool thread and touches only
 * the ops of its batch. */
#pragma once

#include "berth/plugin.h"
#include "db.h"

typedef struct meta_plugin_s meta_plugin_t;
typedef struct meta_job_s meta_job_t;

typedef void (*meta_job_cb)(meta_job_t *j);

/* One request's work: arguments (strings owned, objects borrowed from the
 * request params, valid until the request is answered), the write op, and
 * what to do on the loop after the transaction committed. */
struct meta_job_s {
    meta_plugin_t *mp;
    berth_req_t *req; /* NULL for internal jobs */
    char *ns, *s1, *s2, *s3;
    const msgpack_object *o1, *o2;
    int64_t i;
    uint64_t u;
    bool b, sync;
    meta_snap_plan_t plan;
    berth_mpbuf_t extra; /* e.g. the backend's result to record */
    berth_error_t *backend_err;
    meta_wop_t op;
    meta_job_cb done;     /* runs on the loop after commit; NULL = reply + publish */
    bool solo;            /* run in a batch of its own (gc: measure the lock) */
    bool no_replay;       /* never answered from / recorded in the replay table */
    unsigned replay_mode; /* META_REPLAY_* for the next write (0 = both) */
    uint64_t held_ms;
    meta_job_t *next;
};

struct meta_plugin_s {
    berth_plugin_t *p;
    meta_db_t *db;
    /* writer queue */
    meta_job_t *head, *tail;
    size_t queued;
    bool busy;
    uv_work_t work;
    meta_job_t **batch;
    size_t batch_n, batch_cap;
    uint64_t batch_held_ms;
    /* config */
    uint64_t map_size, max_map_size;
    int64_t replay_ttl_ns;
    uint32_t backend_timeout_ms;
    size_t max_batch;
    bool no_sync;
    /* counters */
    uint64_t writes, batches;
};

meta_job_t *meta_job_new(meta_plugin_t *mp, berth_req_t *req);
void meta_job_free(meta_job_t *j);
/** Queues j's op (fn/arg set by the caller) for the writer. Mutations from
 * requests carry the request_id for replays. */
void meta_job_write(meta_job_t *j, meta_write_fn fn, meta_job_cb done);
/** Default completion: reply with the result or the error, publish events. */
void meta_job_finish(meta_job_t *j);
/** Publishes the events of j's op (unless it was a replay). */
void meta_job_publish(meta_job_t *j);

/** Runs fn in a read transaction on the loop and replies. */
void meta_read_reply(meta_plugin_t *mp, berth_req_t *req, meta_write_fn fn, meta_job_t *args);
/** meta_read_reply for listings: fn runs in the thread pool (its own read
 * transaction), so that a long list — a filter regex over every record —
 * never holds the loop that answers plugin.health and dispatches writes. */
void meta_list_reply(meta_plugin_t *mp, berth_req_t *req, meta_write_fn fn, meta_job_t *args);

/** Copies a string param; required → invalid_argument when absent. Returns
 * -1 (request failed) on error. */
int meta_param_str(berth_req_t *req, const msgpack_object *params, const char *key, bool required,
                   char **out);

/** Asks the backend to remove a tombstoned snapshot id, then drops the
 * tombstone; `then` (may be NULL) runs on the loop when done either way. */
void meta_backend_remove(meta_plugin_t *mp, const char *id, void (*then)(void *data), void *data);

extern const berth_method_t meta_methods[];
extern const size_t meta_n_methods;
extern const berth_method_t meta_snap_methods[];
extern const size_t meta_n_snap_methods;
meta_plugin_t *meta_plugin_get(berth_plugin_t *p);
