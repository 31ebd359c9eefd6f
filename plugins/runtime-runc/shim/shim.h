/* SPDX-License-Identifier: Apache-2.0 */
/* berth-shim internals. One shim per container: a single-threaded poll()
 * loop (signalfd for SIGCHLD/SIGTERM, the socket, the stdio pumps, an OOM
 * watch) that owns the container's processes as their subreaper. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "berth/error.h"
#include "exitfile.h"
#include "proto.h"

#define SHIM_MAX_ID 76

typedef enum {
    SHIM_CREATED = 0,
    SHIM_RUNNING,
    SHIM_PAUSED,
    SHIM_STOPPED,
} shim_pstate_t;

const char *shim_pstate_name(shim_pstate_t s);

/* Copies bytes from src to dst with one bounded buffer (backpressure: src is
 * read only when the buffer is empty). */
typedef struct {
    int src, dst;
    bool src_owned, dst_owned;
    bool src_eof;  /* no more input */
    bool dst_dead; /* output gone: drain and drop */
    bool done;     /* src EOF and everything written (dst closed if owned) */
    bool eof_closes_dst;
    uint8_t *buf;
    size_t off, len;
} shim_pump_t;

typedef struct shim_waiter_s {
    struct shim_waiter_s *next;
    struct shim_conn_s *conn;
    uint32_t msgid;
} shim_waiter_t;

typedef struct shim_proc_s {
    struct shim_proc_s *next;
    char exec_id[SHIM_MAX_ID + 1]; /* "" for the init */
    pid_t pid;
    shim_pstate_t state;
    bool reaped;
    int status;
    int64_t exited_at;
    bool reported;  /* sent to subscribers and waiters */
    bool published; /* the runtime acknowledged its /tasks/exit */
    uint64_t report_deadline;
    bool terminal;
    char *stdin_path, *stdout_path, *stderr_path;
    int console;
    int fifo_fd[3]; /* FIFOs opened when an exec is added, before it starts */
    shim_pump_t in, out, err;
    shim_waiter_t *waiters;
} shim_proc_t;

typedef struct shim_conn_s {
    struct shim_conn_s *next;
    int fd;
    shim_buf_t in, out;
    bool dead;
    bool subscribed;
    uint32_t events_id;
} shim_conn_t;

typedef struct {
    pid_t pid;
    int status;
    int64_t at;
} shim_reaped_t;

typedef struct {
    /* configuration */
    const char *id, *ns, *bundle, *runtime, *runtime_root;
    bool systemd_cgroup;
    int exit_wait_ms;
    bool fast; /* runc without hooks: start and delete without runc (runc.c) */
    /* state */
    int bundle_fd;
    int listen_fd;
    int sigfd;
    shim_conn_t *conns;
    shim_proc_t *procs; /* the init first, once created */
    bool created, confirmed;
    shim_conn_t *create_conn;
    uint64_t confirm_deadline;
    int oom_fd;
    bool oom_v2;
    char *oom_path;
    uint64_t oom_last;
    uint64_t oom_recheck_at, oom_recheck_until; /* v1: the kill not counted yet */
    shim_reaped_t cache[64];                    /* children reaped before we knew their pid */
    unsigned n_cache;
    bool exiting;  /* exit once outputs are flushed */
    bool rollback; /* tear everything down, then exit */
} shim_t;

/* main.c */
uint64_t shim_now_ms(void);
void shim_conn_send(shim_t *s, shim_conn_t *c, msgpack_sbuffer *sb);
void shim_reply_ok_empty(shim_t *s, shim_conn_t *c, uint32_t msgid);
void shim_reply_err(shim_t *s, shim_conn_t *c, uint32_t msgid, berth_error_t **err);

/* shim.c */
void shim_dispatch(shim_t *s, shim_conn_t *c, uint32_t msgid, const char *method, size_t mlen,
                   const msgpack_object *params);
void shim_on_reaped(shim_t *s, pid_t pid, int wstatus);
void shim_reap_all(shim_t *s);
void shim_conn_gone(shim_t *s, shim_conn_t *c);
void shim_tick(shim_t *s);
uint64_t shim_next_deadline(shim_t *s);
void shim_do_rollback(shim_t *s, const char *why);
shim_proc_t *shim_init_proc(shim_t *s);
void shim_check_report(shim_t *s, shim_proc_t *p);
void shim_oom_fired(shim_t *s);
void shim_proc_free(shim_proc_t *p);

/* io.c */
void shim_pump_init(shim_pump_t *p);
/** Moves bytes; call when dst is writable (src_ready false) or src is
 * readable (src_ready true). */
void shim_pump_run(shim_pump_t *p, bool src_ready);
void shim_pump_close(shim_pump_t *p);
bool shim_proc_io_done(const shim_proc_t *p);
/** Opens a client FIFO: O_NOFOLLOW|O_NONBLOCK, must be a FIFO;
 * `for_write` opens O_RDWR (never blocks, never EPIPE). */
int shim_open_fifo(const char *path, bool for_write, berth_error_t **err);
/** Listens on a console socket (path relative to the bundle cwd). */
int shim_console_listen(const char *name, berth_error_t **err);
/** Receives the pty master runc sent on the console socket. */
int shim_console_recv(int lfd, berth_error_t **err);
/** Wires a process's stdio: fills fds[3] for runc (caller closes them after
 * fork) and sets up the pumps. Non-tty only. */
int shim_proc_stdio(shim_proc_t *p, int fds[3], berth_error_t **err);
/** Opens the process's FIFOs now (into fifo_fd) so a client can open
 * its ends before the process starts. */
int shim_proc_open_fifos(shim_proc_t *p, berth_error_t **err);
/** After runc sent the console: pumps between pty and FIFOs. */
int shim_proc_console(shim_proc_t *p, int master, berth_error_t **err);

/* runc.c */
/** Runs `runtime --root R --log L --log-format json [--systemd-cgroup] args...`
 * with fds[0..2] as its stdio (-1 → /dev/null), waits (reaping other children
 * through shim_on_reaped) and returns 0, or -1 with runc's own error message.
 * out (optional) captures its stdout (fds[1] must then be -1). */
int shim_runc(shim_t *s, const char *const *args, const int fds[3], char **out,
              berth_error_t **err);
/** Reads a pid file written by runc. */
int shim_read_pidfile(shim_t *s, const char *name, pid_t *pid, berth_error_t **err);
/** `runc start` of the init without runc: reads runc's exec FIFO. Returns 0,
 * 1 when runc's state does not look as expected (use runc start), -1. */
int shim_fast_start(shim_t *s, shim_proc_t *p, berth_error_t **err);
/** `runc delete` of a stopped container without runc: its cgroups and runc's
 * state dir. Returns 0, or 1 when runc delete must do it. */
int shim_fast_delete(shim_t *s);
/** rm -rf of dir's contents without crossing mount points. */
void shim_remove_tree(int dirfd);
