/* SPDX-License-Identifier: Apache-2.0 */
/* berth-runtime-runc process internals: the plugin state, the task table
 * (loop thread only), blocking helpers for worker threads (calls to other
 * plugins through the loop, calls to shims, the launcher). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

#include "berth/plugin.h"
#include "conn.h"
#include "internal.h"
#include "proto.h"
#include "task.h"

typedef enum {
    RT_CREATED = 0,
    RT_RUNNING,
    RT_PAUSED,
    RT_STOPPED,
} rt_status_t;

const char *rt_status_name(rt_status_t s); /* "RUNNING", ... */
rt_status_t rt_status_parse(const msgpack_object *o);

typedef struct rt_waiter_s {
    struct rt_waiter_s *next;
    berth_req_t *req;
} rt_waiter_t;

typedef struct rt_proc_s {
    struct rt_proc_s *next;
    char *exec_id; /* "" for the init */
    int pid;
    rt_status_t status;
    bool exited;
    int exit_status;
    int64_t exited_at;
    bool exit_publishing; /* /tasks/exit sent (once) */
    bool starting;        /* a start is in flight: /tasks/exit waits for /tasks/start */
    bool exit_deferred;
    bool exit_published; /* ... and acknowledged */
    bool terminal;
    char *fifos[3];
    rt_waiter_t *waiters;
} rt_proc_t;

typedef struct rt_task_s {
    struct rt_task_s *next;
    char *ns, *id;
    char *bundle;   /* <state>/runtime/<ns>/<id> */
    char *fifo_dir; /* <state>/fifo/<ns>/<id> */
    rt_proc_t init;
    rt_proc_t *execs;
    bool creating; /* tasks.create in flight (the id is reserved) */
    bool deleting;
    bool shim_alive;
    int shim_pid;
    ipc_conn_t *events; /* subscription to the shim's exits */
    uint32_t next_msgid;
    bool rm; /* run --rm: delete task and container once the task exits */
    bool autorm_deferred;
    char *runtime;      /* OCI runtime binary of this task */
    char *snapshot_key; /* of its container, when known (--rm skips a lookup) */
    int refs;           /* work items in flight holding this task */
    bool freed_pending;
} rt_task_t;

/* Exit statuses of tasks deleted by --rm, kept briefly so a re-sent
 * tasks.wait still learns the status. */
typedef struct rt_gone_s {
    struct rt_gone_s *next;
    char *ns, *id;
    int exit_status;
    int64_t exited_at;
    uint64_t expires;
} rt_gone_t;

typedef struct {
    char *runtime;       /* OCI runtime binary ("runc") */
    char *cgroup_driver; /* "cgroupfs" | "systemd" */
    char *cgroup_parent; /* "/berth" */
    char *shim_path;     /* berth-shim; default: next to this binary */
    char *shim_log_level;
    uint64_t exit_wait_ms;
} rt_config_t;

typedef struct sync_call_s sync_call_t;

typedef struct {
    berth_plugin_t *p;
    rt_config_t cfg;
    char *state;       /* daemon state dir */
    char *runtime_dir; /* <state>/runtime */
    char *fifo_root;   /* <state>/fifo */
    char *runc_root;   /* <state>/runc */
    char *tmp_dir;     /* <state>/runtime-tmp */
    rt_task_t *tasks;
    rt_gone_t *gone;
    rt_host_t host;
    int lock_fd;
    /* calls from worker threads, run on the loop */
    uv_async_t async;
    pthread_mutex_t mu;
    sync_call_t *pending;
    bool stopping;
} rt_plugin_t;

extern rt_plugin_t rt_g;
extern const berth_method_t rt_methods[];
extern const size_t rt_n_methods;

/* ---- main.c ------------------------------------------------------------- */
int rt_config_parse(rt_config_t *c, const msgpack_object *cfg, berth_error_t **err);
void rt_config_free(rt_config_t *c);
/** "--systemd-cgroup" aware cgroups path for a container. */
char *rt_cgroups_path(const char *ns, const char *id);
/** Resolves a container runtime name to a binary (NULL → config.runtime). */
int rt_runtime_binary(const char *name, char **bin, berth_error_t **err);

/* ---- launcher.c: a process forked before any sandbox ---------------------- */
/** Forks the launcher; call first thing in main(). */
int rt_launcher_start(void);
/** Starts a daemonizing program (the shim) with `--sync-fd N` appended and
 * waits for its "ok <pid>" line. Thread-safe, blocking. */
int rt_launcher_spawn(const char *const *argv, int *pid, berth_error_t **err);
/** Runs a program to completion; returns its exit code. Thread-safe, blocking. */
int rt_launcher_run(const char *const *argv, int *status, berth_error_t **err);

/* ---- sync.c: calls to other plugins from worker threads ----------------- */
typedef struct {
    msgpack_zone *zone;
    const msgpack_object *result;
    uint8_t *bin; /* concatenated bin stream chunks (collect mode) */
    size_t bin_len;
} rt_result_t;
void rt_result_free(rt_result_t *r);
int rt_sync_init(uv_loop_t *loop);
void rt_sync_close(void);
/** Calls `method` through the loop and blocks until the answer. params is
 * one packed map (with namespace). collect_max > 0 collects bin stream
 * chunks into r->bin (a bigger stream is cancelled with an error). */
int rt_sync_call(const char *method, const void *params, size_t len, uint32_t timeout_ms,
                 size_t collect_max, rt_result_t *r, berth_error_t **err);
/** Several independent calls at once (at most 4): one wait for all, instead
 * of one round trip after the other. Each gets its result in *r or its error
 * in err (set the fields before, err NULL). Returns 0 if all succeeded. */
typedef struct {
    const char *method;
    const void *params;
    size_t len;
    uint32_t timeout_ms;
    size_t collect_max;
    rt_result_t *r;
    berth_error_t *err;
} rt_sync_req_t;
int rt_sync_calls(rt_sync_req_t *reqs, size_t n);

/* ---- shim calls (worker threads, blocking) ---------------------------------- */
/** Connects to a bundle's shim.sock (paths of any length). */
int rt_shim_connect(shim_client_t *c, const char *bundle, berth_error_t **err);
/** One call on a fresh connection; *c stays open for the result (close it). */
int rt_shim_call(shim_client_t *c, const char *bundle, const char *method, const void *params,
                 size_t len, int timeout_ms, const msgpack_object **result, berth_error_t **err);

/* ---- tasks.c: the task table (loop thread) ------------------------------ */
rt_task_t *rt_task_find(const char *ns, const char *id);
rt_task_t *rt_task_new(const char *ns, const char *id);
void rt_task_remove(rt_task_t *t);
rt_proc_t *rt_task_proc(rt_task_t *t, const char *exec_id);
void rt_proc_clear(rt_proc_t *p);
/** Scans the state dir, reconnects to shims, collects missed exits and
 * publishes them (init, before plugin.ready). */
int rt_recover(berth_error_t **err);
/** Opens the exit subscription to a task's shim (loop). */
int rt_task_subscribe(rt_task_t *t, berth_error_t **err);
/** Closes every subscription (the plugin is stopping). */
void rt_tasks_unsubscribe_all(void);
/** Answers a tasks.wait: {exit_status, exited_at}. */
void rt_reply_wait(berth_req_t *req, int status, int64_t at);
/** Records an exit and publishes /tasks/exit once; wakes waiters. */
void rt_proc_exited(rt_task_t *t, rt_proc_t *p, int status, int64_t exited_at, bool published);
/** Publishes a pending exit (if any) then calls cb (tasks.delete ordering). */
void rt_publish_pending_exit(rt_task_t *t, rt_proc_t *p, void (*cb)(void *), void *data);
/** Publishes an event: packed map (copied). */
void rt_publish(const char *topic, const char *ns, berth_mpbuf_t *event);
void rt_task_unref(rt_task_t *t);
/** A start answer arrived: publishes an exit that waited for it. */
void rt_proc_started(rt_task_t *t, rt_proc_t *p);
/** Reads a one-line file of a bundle (malloc'd, NULL if absent). */
char *rt_read_small_file(const char *dir, const char *name);

typedef struct {
    bool have;
    int pid, status;
    int64_t exited_at;
} rt_exit_info_t;
/** Worker: stops the shim (delete), cleans a dead shim's container, unmounts
 * the rootfs and removes the bundle and FIFOs. */
int rt_task_teardown(const char *bundle, const char *fifo_dir, const char *runtime, bool shim_alive,
                     bool force, const char *ns, const char *id, rt_exit_info_t *ex,
                     berth_error_t **err);
void rt_gone_add(const char *ns, const char *id, int status, int64_t at);
rt_gone_t *rt_gone_find(const char *ns, const char *id);
/** Deletes a stopped --rm task and its container (loop). */
void rt_task_auto_remove(rt_task_t *t);
/** A tasks.wait for a --rm task whose container is being removed: joins the
 * waiters answered once it is gone. False if no such removal is running. */
bool rt_autorm_add_waiter(const char *ns, const char *id, berth_req_t *req);

/* ---- containers.c (worker bodies) ------------------------------------------- */
/** containers.create: validates, prepares the snapshot, builds the spec and
 * stores the record. *out is the packed {container} result. */
int rt_container_create(const char *ns, const msgpack_object *params, berth_mpbuf_t *out,
                        berth_error_t **err);
/** containers.delete body (the loop checked there is no task). */
int rt_container_delete(const char *ns, const char *id, bool keep_snapshot, berth_error_t **err);
/** The same when the container's snapshot key is known (NULL: none). */
int rt_container_delete_key(const char *ns, const char *id, const char *key, berth_error_t **err);
/** Fetches the container record; the result lives in r. */
int rt_container_get(const char *ns, const char *id, rt_result_t *r,
                     const msgpack_object **container, berth_error_t **err);
