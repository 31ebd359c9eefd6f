/* SPDX-License-Identifier: Apache-2.0 */
/* libberth-plugin: the API for plugin authors. A plugin declares its methods,
 * berth_plugin_main() connects to the core (fd 3 from BERTH_PLUGIN_FD, or
 * --socket PATH / BERTH_PLUGINS_SOCK for external plugins), registers, calls
 * your init, tells the core it is ready and runs the libuv loop until the core
 * goes away or asks it to shut down.
 *
 * Threading: every function here must be called from the plugin's loop
 * thread. Do blocking work with uv_queue_work() and reply from its after_work
 * callback. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <uv.h>

#include "berth/common.h"
#include "berth/error.h"
#include "berth/log.h"
#include "berth/mp.h"

typedef struct berth_plugin_s berth_plugin_t;
typedef struct berth_req_s berth_req_t;
typedef struct berth_call_s berth_call_t;

/** Method flags (docs/protocol.md, "Plugin registration"). */
enum {
    /** Safe to re-send to a restarted instance. */
    BERTH_METHOD_IDEMPOTENT = 1u << 0,
    /** Callable only by the plugin ids in `callers` (not by clients). */
    BERTH_METHOD_INTERNAL = 1u << 1,
    /** A long-lived stream the core re-sends to a replacement instance. */
    BERTH_METHOD_RESUMABLE = 1u << 2,
    /** A mutation whose owner stores request_id → result together with the
     * change and answers a repeat from that record (berth_req_request_id()):
     * the core re-sends such a request to a restarted instance when it
     * carries a `request_id`. Never set it on a method that does not
     * deduplicate: a re-send would apply the change twice. */
    BERTH_METHOD_REPLAY = 1u << 3,
};

/** Handles one request. `params` is borrowed until the request is answered
 * (the SDK keeps the message alive while the request is outstanding). The
 * handler must eventually answer with berth_req_reply_*() or berth_req_fail*(),
 * now or later. */
typedef void (*berth_handler_cb)(berth_req_t *req, const msgpack_object *params);

typedef struct {
    const char *name; /* "content.write" */
    berth_handler_cb cb;
    unsigned flags;      /* BERTH_METHOD_* */
    const char *callers; /* INTERNAL only: comma-separated plugin ids, e.g. "gc" */
} berth_method_t;

typedef struct {
    const char *id;      /* "content": also its folder under the root */
    const char *type;    /* "io.berth.content.v1" */
    const char *version; /* "0.1.0" */
    const berth_method_t *methods;
    size_t n_methods;
    const char *const *requires; /* NULL-terminated plugin ids, informational */
    /** Runs after registration (config, root and state are known, calls to
     * other plugins work) and before the core routes requests here: recover
     * from disk. Return 0, or -1 with *err set to exit the plugin. */
    int (*init)(berth_plugin_t *p, berth_error_t **err);
    /** Runs when the plugin stops (core gone or plugin.shutdown). */
    void (*fini)(berth_plugin_t *p);
    void *data;
} berth_plugin_desc_t;

/** Runs the plugin; returns the process exit code. Parses --socket PATH and
 * --log-level L from argv; other args are left to the plugin (argc/argv not
 * modified). */
int berth_plugin_main(const berth_plugin_desc_t *desc, int argc, char **argv);

uv_loop_t *berth_plugin_loop(berth_plugin_t *p);
void *berth_plugin_data(berth_plugin_t *p);
const char *berth_plugin_id(berth_plugin_t *p);
/** The plugin's config section (a map, possibly empty), from registration.
 * Borrowed, valid for the plugin's lifetime. */
const msgpack_object *berth_plugin_config(berth_plugin_t *p);
/** `<root>/<id>`, created 0700 by the SDK before init. */
const char *berth_plugin_root(berth_plugin_t *p);
/** The daemon's state dir (`/run/berth` or --state). */
const char *berth_plugin_state(berth_plugin_t *p);
/** The daemon's whole root dir. */
const char *berth_plugin_daemon_root(berth_plugin_t *p);
/** Asks the plugin to stop after the current loop iteration. */
void berth_plugin_stop(berth_plugin_t *p);

/** Installs a seccomp filter that allows only the listed syscall names (plus
 * a built-in base set needed by libuv, malloc and the SDK) and kills the
 * process on anything else. Call from init. NULL-terminated list. */
int berth_plugin_sandbox(berth_plugin_t *p, const char *const *extra_syscalls,
                         const char *const *denied, berth_error_t **err);

/** Flags of berth_plugin_confine(). */
enum {
    /** Keep socket, socketpair, connect, bind, listen, accept, accept4 (a
     * plugin that talks to registries); without it only the fd the core gave
     * and fds opened before can be used. */
    BERTH_CONFINE_SOCKETS = 1u << 0,
};

/** The sandbox of a plugin that runs no programs (docs/security.md): first a
 * denylist of what none needs — execve, execveat, fork, vfork and any clone
 * that is not a thread, mount, umount2, ptrace, process_vm_readv/writev,
 * pivot_root, chroot, setns, unshare, kill, setsid, the socket calls unless
 * BERTH_CONFINE_SOCKETS — plus `extra_denied`, then the allowlist: the SDK
 * base set, restart_syscall and `extra_allowed`. Both lists NULL-terminated
 * or NULL. Call it at the end of init. */
int berth_plugin_confine(berth_plugin_t *p, unsigned flags, const char *const *extra_allowed,
                         const char *const *extra_denied, berth_error_t **err);

/** Test hook for the sandbox tests: when `s` (`len` bytes) is
 * "sandbox-probe-SYSCALL" and the failpoint named `failpoint` is armed with
 * `error`, makes that syscall (execve, mount, ptrace, socket or fork) with
 * harmless arguments on the calling thread, answers `req` with
 * failed_precondition "sandbox probe SYSCALL was not stopped by the
 * sandbox" (reached only if the call was allowed) and returns true; else
 * returns false and does nothing. */
bool berth_req_sandbox_probe(berth_req_t *req, const char *s, size_t len, const char *failpoint);
/** The syscall part of the above, for probes not tied to a request: returns
 * the call's result (-1 and errno when it failed or `what` is unknown). */
long berth_sandbox_probe_syscall(const char *what);

/* ---- requests served by this plugin ------------------------------------ */

berth_plugin_t *berth_req_plugin(berth_req_t *r);
const char *berth_req_method(berth_req_t *r);
/** The request's namespace ("default" when absent). Borrowed, req lifetime. */
const char *berth_req_namespace(berth_req_t *r);
/** The core-stamped caller: kind "client" or "plugin", id (plugin id or ""),
 * uid. Never from the caller's own params. */
const char *berth_req_caller_kind(berth_req_t *r);
const char *berth_req_caller_id(berth_req_t *r);
uint32_t berth_req_caller_uid(berth_req_t *r);
/** The client-chosen request_id for replay protection, or NULL. */
const char *berth_req_request_id(berth_req_t *r);
/** Absolute deadline (berth_mono_ms clock) or 0 for none. */
uint64_t berth_req_deadline(berth_req_t *r);
/** The lease param, or NULL. */
const char *berth_req_lease(berth_req_t *r);
void berth_req_set_data(berth_req_t *r, void *data);
void *berth_req_data(berth_req_t *r);

/** Starts the response: returns a packer where the handler packs exactly one
 * object (the result), then calls berth_req_reply_end(). */
msgpack_packer *berth_req_reply_begin(berth_req_t *r);
/** Sends the response and frees the request. */
void berth_req_reply_end(berth_req_t *r);
/** Replies with an empty map. */
void berth_req_reply_empty(berth_req_t *r);
/** Replies with an already packed result object (bytes of one msgpack object). */
void berth_req_reply_raw(berth_req_t *r, const void *packed, size_t len);
/** Fails the request with `*err` (taken and freed) and frees the request. */
void berth_req_fail(berth_req_t *r, berth_error_t **err);
void berth_req_failf(berth_req_t *r, berth_code_t code, const char *fmt, ...) BERTH_PRINTF(3, 4);

/* Streams from the server to the caller. Flow control: at most `window` (8)
 * chunks unacknowledged; berth_req_stream_credit() says how many may be sent
 * now; the writable callback runs when credit returns. */
msgpack_packer *berth_req_stream_begin(berth_req_t *r); /* pack one data object */
int berth_req_stream_end_chunk(berth_req_t *r);         /* sends it */
int berth_req_stream_send_bin(berth_req_t *r, const void *p, size_t n);
unsigned berth_req_stream_credit(berth_req_t *r);
void berth_req_set_writable_cb(berth_req_t *r, void (*cb)(berth_req_t *r));
/** Sends `$stream.end` for the server's side. */
void berth_req_stream_close(berth_req_t *r);

/* Streams from the caller to the server. `data` is NULL at `$stream.end`. The
 * SDK acks each chunk when the callback returns, unless the callback called
 * berth_req_hold_ack(); then ack later with berth_req_ack(). */
typedef void (*berth_req_stream_cb)(berth_req_t *r, const msgpack_object *data);
void berth_req_set_stream_cb(berth_req_t *r, berth_req_stream_cb cb);
void berth_req_hold_ack(berth_req_t *r);
void berth_req_ack(berth_req_t *r, uint32_t n);

/** `$cancel` or the caller went away: cb runs once; the handler must still
 * answer (berth_req_failf(r, BERTH_E_CANCELED, ...)) and stop its work. */
void berth_req_set_cancel_cb(berth_req_t *r, void (*cb)(berth_req_t *r));
bool berth_req_canceled(berth_req_t *r);

/* ---- calls to other plugins (through the core) ------------------------- */

/** Result callback: exactly one of err/result is non-NULL. Both are borrowed
 * for the duration of the callback. The call is freed after it returns. */
typedef void (*berth_call_cb)(berth_call_t *c, const berth_error_t *err,
                              const msgpack_object *result, void *data);
/** Stream chunk callback (data NULL at the server's `$stream.end`). Chunks
 * are acked when it returns. */
typedef void (*berth_call_stream_cb)(berth_call_t *c, const msgpack_object *data, void *data_);

/** Calls `method` with `params` (one packed msgpack map, e.g. from a
 * berth_mpbuf_t; copied). Put `namespace` in params when the method is
 * namespaced. timeout_ms 0 = the core's default. Returns NULL (and calls
 * nothing) only if the core connection is gone, with *err set. */
berth_call_t *berth_call(berth_plugin_t *p, const char *method, const void *params,
                         size_t params_len, uint32_t timeout_ms, berth_call_cb cb,
                         berth_call_stream_cb stream_cb, void *data, berth_error_t **err);
/** Sends stream data to the server of an outstanding call. */
msgpack_packer *berth_call_stream_begin(berth_call_t *c);
int berth_call_stream_end_chunk(berth_call_t *c);
unsigned berth_call_stream_credit(berth_call_t *c);
void berth_call_set_writable_cb(berth_call_t *c, void (*cb)(berth_call_t *c, void *data));
void berth_call_stream_close(berth_call_t *c);
/** Abandons a call: sends `$cancel`; the result callback still runs once. */
void berth_call_cancel(berth_call_t *c);

/* ---- events ------------------------------------------------------------ */

/** Publishes an event: `event` is one packed msgpack map (copied). The core
 * acknowledges; `cb` (optional) runs with the ack or error. */
int berth_publish(berth_plugin_t *p, const char *topic, const char *ns, const void *event,
                  size_t event_len, berth_call_cb cb, void *data);
