/* SPDX-License-Identifier: Apache-2.0 */
/* berthd internals: configuration, peers (client and plugin connections),
 * routes (one forwarded request each), plugins and their instances, events.
 * Everything except config.c runs on the single libuv loop of berthd. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "berth/error.h"
#include "berth/log.h"
#include "berth/mp.h"
#include "conn.h"
#include "idmap.h"
#include "msg.h"

#ifndef BERTH_VERSION
#define BERTH_VERSION "0.0.0"
#endif
#ifndef BERTH_REVISION
#define BERTH_REVISION "unknown"
#endif

/* ===================== config.c (no event loop) ========================= */

/** One supervised plugin section: `plugins.<id>`. */
typedef struct {
    char *id;
    bool enabled;
    char *path;  /* absolute path of the binary (resolved against plugin_dir) */
    char **args; /* extra arguments, NULL-terminated */
    size_t n_args;
    json_t *config; /* the plugin's own section, handed over at registration */
} core_plugin_conf_t;

/** One external plugin allowed on plugins.sock: `external_plugins.<id>`. */
typedef struct {
    char *id;
    char **prefixes; /* method-name prefixes it may register, NULL-terminated */
    size_t n_prefixes;
    json_t *config;
} core_ext_conf_t;

typedef struct {
    char *root, *state, *address, *plugins_address, *lock_path;
    char *group; /* NULL = none */
    char *plugin_dir;
    int log_level;
    bool log_json;
    uint32_t max_frame;
    uint64_t max_write_queue;
    uint32_t request_timeout_ms, queue_limit;
    uint32_t health_interval_ms, health_timeout_ms, ready_timeout_ms;
    uint32_t shutdown_timeout_ms, drain_timeout_ms;
    uint32_t restart_backoff_min_ms, restart_backoff_max_ms;
    uint32_t restart_limit, failed_retry_ms;
    core_plugin_conf_t *plugins;
    size_t n_plugins;
    core_ext_conf_t *externals;
    size_t n_externals;
    json_t *effective; /* the merged config (what `berthd config dump` prints) */
} core_config_t;

/** Command-line values that override the file (NULL = not given). */
typedef struct {
    const char *root, *state, *address, *log_level, *log_format;
} core_overrides_t;

/** Plugin ids that berthd knows about by default (their config sections are
 * embedded from plugins/<id>/config.default.json at build time). */
extern const char *const core_builtin_plugins[];
/** The embedded default section of a builtin plugin as JSON text ("{}" when
 * the plugin had no config.default.json at build time). Never NULL for a
 * builtin id; NULL for others. */
const char *core_embedded_plugin_default(const char *id);

/** The complete default configuration. Caller frees with json_decref. */
json_t *core_config_defaults(void);
/** Reads and parses a JSON config file (blocking: call before the loop). */
json_t *core_config_read_file(const char *path, berth_error_t **err);
/** Merges `user` (may be NULL) and the overrides onto the defaults, checks
 * every key and value, resolves derived values (address, plugin paths).
 * exe_dir is the directory of berthd (default plugin_dir). On error *err names
 * the offending key. cfg is zeroed first; free with core_config_free. */
int core_config_build(core_config_t *cfg, const json_t *user, const core_overrides_t *ov,
                      const char *exe_dir, berth_error_t **err);
void core_config_free(core_config_t *cfg);
/** Packs a JSON value as msgpack (objects → maps, integers → ints, ...). */
void core_json_pack(msgpack_packer *pk, const json_t *j);

/* ===================== runtime structures =============================== */

typedef struct core_s core_t;
typedef struct core_peer_s core_peer_t;
typedef struct core_route_s core_route_t;
typedef struct core_plugin_s core_plugin_t;
typedef struct core_inst_s core_inst_t;
typedef struct core_method_s core_method_t;
typedef struct core_sub_s core_sub_t;
typedef struct core_op_s core_op_t;

typedef enum {
    CORE_PEER_CLIENT,   /* berth.sock */
    CORE_PEER_PLUGIN,   /* a supervised plugin's socketpair */
    CORE_PEER_EXTERNAL, /* plugins.sock */
} core_peer_kind_t;

struct core_peer_s {
    core_t *core;
    ipc_conn_t *conn;
    core_peer_kind_t kind;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    bool authorized;
    bool closed;
    core_inst_t *inst;   /* plugin peers: the instance (external: after register) */
    ipc_idmap_t calls;   /* peer's msgid → route: requests the peer made */
    ipc_idmap_t serving; /* core msgid → route: requests this peer serves */
    uint32_t next_id;
    uv_timer_t *deny_timer;
    /* Back-pressure: clients whose reading is paused until this peer's
     * write queue drains (only clients are ever paused). */
    core_peer_t *blocked_head;
    core_peer_t *blocked_next;
    core_peer_t *blocked_on;
    core_peer_t *prev, *next; /* core->peers */
};

enum {
    CORE_ROUTE_QUEUED = 1,   /* waiting in a plugin's queue or the unresolved queue */
    CORE_ROUTE_INFLIGHT = 2, /* sent to route->server */
    CORE_ROUTE_LOCAL = 3,    /* served by the core itself (streams, pending ops) */
};

/** A stream-control notification buffered while its request is queued. */
typedef struct core_note_s {
    struct core_note_s *next;
    int kind; /* 0 $stream, 1 $stream.end, 2 $ack */
    uint32_t n;
    size_t len;
    uint8_t data[]; /* packed data object for $stream */
} core_note_t;

struct core_route_s {
    core_t *core;
    uint64_t seq;
    int state;
    core_peer_t *caller; /* NULL: orphaned, or core-originated (on_response set) */
    uint32_t caller_id;
    core_peer_t *server;
    uint32_t server_id;
    core_plugin_t *plugin; /* target plugin of a forwarded request */
    char *method;
    uint8_t *payload; /* forwarded request; the msgid lives at bytes 3..6 */
    size_t payload_len;
    uint64_t deadline; /* berth_mono_ms, 0 = none */
    size_t heap_idx;   /* index in the deadline heap + 1, 0 = not in it */
    uint64_t started_ms;
    bool explicit_deadline;
    bool retry_ok;       /* may be re-sent to a new instance before its stream started */
    bool has_request_id; /* params carry a request_id (retry-safe where the method is `replay`) */
    bool resumable;      /* re-sent to a new instance even after its stream started */
    bool stream_started;
    bool canceled;
    bool counts_for_drain; /* in-flight work a replace waits for */
    core_note_t *notes, *notes_tail;
    size_t n_notes;
    core_route_t *qprev, *qnext; /* queue links */
    /* Core-originated requests (plugin.health, plugin.shutdown). */
    void (*on_response)(core_route_t *r, const ipc_msg_t *m, const berth_error_t *err);
    void *data;
    /* Local (core-served) requests: called when the caller cancels, times out
     * or goes away; the route is freed afterwards. */
    void (*on_local_end)(core_route_t *r);
};

typedef struct {
    core_route_t *head, *tail;
    size_t len;
} core_queue_t;

struct core_method_s {
    char *name;
    core_plugin_t *plugin;
    bool idempotent, internal, resumable, replay;
    char **callers; /* NULL-terminated plugin ids allowed to call an internal method */
};

typedef enum {
    CORE_PS_STARTING,
    CORE_PS_OK,
    CORE_PS_RESTARTING,
    CORE_PS_FAILED,
    CORE_PS_SKIP, /* configured but its binary is missing (or disabled) */
} core_plugin_status_t;

typedef enum {
    CORE_IS_SPAWNED,
    CORE_IS_REGISTERED,
    CORE_IS_READY,
} core_inst_state_t;

struct core_inst_s {
    core_plugin_t *plugin;
    core_peer_t *peer;
    uv_process_t proc;
    uv_pipe_t out, err;
    uv_timer_t timer;      /* ready timeout, then health watchdog */
    uv_timer_t kill_timer; /* grace before SIGKILL / pipe close after exit */
    int open_handles;
    bool spawned, exited, conn_closed, killed, stopping;
    core_inst_state_t state;
    pid_t pid;
    int64_t exit_status;
    int term_signal;
    uint64_t started_ms;
    int64_t started_ns;
    bool health_pending;
    char *linebuf[2];
    size_t linelen[2];
    char *path; /* the binary this instance runs */
};

struct core_op_s {
    core_route_t *route; /* the caller's plugins.restart/replace (LOCAL), may be NULL */
    bool replace;
    bool recycle; /* plugin.recycle: the plugin asked, idle; not counted as a restart */
    char *new_path, *old_path;
    pid_t old_pid;
    int phase; /* 0 drain, 1 stop, 2 start */
    uv_timer_t *timer;
};

struct core_plugin_s {
    core_t *core;
    char *id;
    bool external;
    const core_plugin_conf_t *conf;
    const core_ext_conf_t *ext;
    char *path;
    char *type, *version;
    core_method_t **methods;
    size_t n_methods;
    core_plugin_status_t status;
    bool ever_registered, ever_ready;
    uint32_t restarts;
    uint64_t restart_times[32]; /* ring of restart times (mono ms) */
    uint32_t restart_ring;
    uint32_t backoff_ms;
    core_inst_t *inst; /* the current instance */
    uv_timer_t restart_timer;
    core_queue_t queue;
    core_op_t *op;
    bool draining; /* routing paused for a replace */
    char *last_exit;
    core_plugin_t *next;
};

struct core_sub_s {
    core_route_t *route;
    char **filters;
    size_t n_filters;
    char *ns;
    uint32_t credit;
    uint8_t **pending; /* ring of packed event data objects */
    size_t *pending_len;
    size_t p_head, p_count;
    uint64_t dropped;
    core_sub_t *prev, *next;
};

struct core_s {
    uv_loop_t *loop;
    core_config_t *cfg;
    char boot_id[33];
    pid_t pid;
    int64_t started_ns;
    gid_t group_gid;
    bool have_group;
    ipc_conn_opts_t conn_opts;
    uv_pipe_t *listen_pub, *listen_plugins;
    core_peer_t *peers;
    core_plugin_t *plugins;
    size_t n_plugins;
    /* method name → core_method_t */
    struct {
        core_method_t **slots;
        size_t cap, count;
    } methods;
    core_queue_t unresolved;
    /* deadline heap */
    core_route_t **heap;
    size_t heap_len, heap_cap;
    uv_timer_t deadline_timer;
    uint64_t deadline_armed; /* 0 = not armed */
    uint64_t route_seq;
    berth_mpbuf_t scratch;
    /* events */
    core_sub_t *subs;
    uint64_t event_seq;
    /* readiness */
    bool notified_ready;
    uv_timer_t ready_timer;
    uv_timer_t trim_timer; /* malloc_trim once idle (listener.c) */
    /* shutdown */
    bool shutting_down;
    uv_timer_t shutdown_timer;
    int shutdown_phase;
    uv_signal_t sig_term, sig_int, sig_hup;
    int exit_code;
};

/* ---- router.c ---------------------------------------------------------- */
void core_router_init(core_t *c);
void core_router_fini(core_t *c);
/** Entry point for every decoded message of every peer (takes m). */
void core_on_message(core_peer_t *p, ipc_msg_t *m);
/** A peer's connection is gone: cancels its calls, requeues or fails what it
 * was serving. */
void core_router_peer_closed(core_peer_t *p);
/** Sends the queued requests of a plugin that just became routable. */
void core_router_drain_queue(core_plugin_t *pl);
/** Answers every queued request of a plugin with an error. */
void core_router_fail_queue(core_plugin_t *pl, berth_code_t code, const char *fmt, ...)
    BERTH_PRINTF(3, 4);
/** Re-examines the unresolved queue (methods appeared, or no plugin is
 * still coming up for the first time). */
void core_router_resolve_pending(core_t *c);
/** Requests served by `p` that a replace waits for. */
size_t core_router_drain_count(core_peer_t *p);
bool core_plugin_routable(const core_plugin_t *pl);
/** Shutdown: answers every request still waiting for an unknown method. */
void core_router_fail_queue_unresolved(core_t *c);

/** Sends a request originated by the core to a plugin peer. */
core_route_t *
core_request(core_peer_t *server, const char *method,
             void (*cb)(core_route_t *r, const ipc_msg_t *m, const berth_error_t *err), void *data);

/* Replies: the scratch packer is shared, never nest. */
msgpack_packer *core_reply_begin(core_t *c, uint32_t msgid);
void core_reply_end(core_peer_t *p);
void core_reply_error(core_peer_t *p, uint32_t msgid, berth_code_t code, const char *fmt, ...)
    BERTH_PRINTF(4, 5);
void core_reply_empty(core_peer_t *p, uint32_t msgid);
/** Replies on a LOCAL route and frees it. */
msgpack_packer *core_route_reply_begin(core_route_t *r);
void core_route_reply_end(core_route_t *r);
void core_route_reply_error(core_route_t *r, berth_code_t code, const char *fmt, ...)
    BERTH_PRINTF(3, 4);
/** Turns a request into a LOCAL route kept until answered (streams, ops). */
core_route_t *core_route_local(core_peer_t *caller, const ipc_msg_t *m);
/** Frees a route that is in no structure but the caller map / heap. */
void core_route_free(core_route_t *r);

core_method_t *core_method_lookup(core_t *c, const char *name);
int core_method_install(core_t *c, core_method_t *m);
void core_method_remove(core_t *c, core_method_t *m);

/* ---- supervisor.c ------------------------------------------------------ */
int core_supervisor_start(core_t *c, berth_error_t **err);
/** plugin.register / plugin.ready from a plugin peer. */
void core_plugin_register(core_peer_t *p, const ipc_msg_t *m);
void core_plugin_ready(core_peer_t *p, const ipc_msg_t *m);
/** plugin.recycle {} from a supervised plugin about itself (docs/protocol.md). */
void core_plugin_recycle(core_peer_t *p, const ipc_msg_t *m);
/** A plugin peer's connection closed (after the router handled its routes). */
void core_supervisor_peer_closed(core_peer_t *p);
/** The last drain-relevant request of an instance finished. */
void core_supervisor_drained(core_inst_t *inst);
void core_methods_plugins(core_peer_t *p, const ipc_msg_t *m); /* plugins.* */
void core_supervisor_shutdown(core_t *c);
/** SIGKILL to every plugin process still running (shutdown stragglers). */
void core_supervisor_kill_all(core_t *c);
bool core_supervisor_all_stopped(core_t *c);
core_plugin_t *core_plugin_find(core_t *c, const char *id);
const char *core_plugin_status_name(core_plugin_status_t s);
/** Plugins not (yet) ready, for readiness reporting: malloc'd ", "-joined, or NULL. */
char *core_supervisor_not_ready(core_t *c);
void core_supervisor_check_ready(core_t *c);

/* ---- listener.c -------------------------------------------------------- */
int core_listen_all(core_t *c, berth_error_t **err);
void core_listen_close(core_t *c);
core_peer_t *core_peer_new(core_t *c, core_peer_kind_t kind);
/** Wraps a connected fd as a peer (supervised plugins). */
int core_peer_attach_fd(core_peer_t *p, int fd, berth_error_t **err);
void core_peer_close(core_peer_t *p, bool flush);
/** Pauses reading from client `p` until `on`'s write queue drains. */
void core_peer_block_on(core_peer_t *p, core_peer_t *on);
const char *core_peer_desc(const core_peer_t *p); /* "client pid=12 uid=0" (static) */

/* ---- events.c ---------------------------------------------------------- */
void core_events_subscribe(core_peer_t *p, const ipc_msg_t *m);
void core_events_publish_req(core_peer_t *p, const ipc_msg_t *m, bool notification);
/** Publishes an event; `event` is one packed msgpack map (or NULL for {}). */
void core_events_publish(core_t *c, const char *topic, const char *ns, const void *event,
                         size_t event_len, const char *publisher);
/** $ack from a subscriber. */
void core_events_ack(core_route_t *r, uint32_t n);
void core_events_fini(core_t *c);

/* ---- main.c ------------------------------------------------------------ */
void core_sd_notify(const char *msg);
void core_shutdown_check(core_t *c);
