/* SPDX-License-Identifier: Apache-2.0 */
/* Exit records: the shim writes one file per process (`exit` for the init,
 * `exec-<id>.exit` for an exec) before it reports the exit to anyone, so a
 * runtime plugin that was down, or that finds the shim gone, still learns the
 * real status. Text, one line: "pid=N status=N exited_at=NS published=0|1". */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "berth/error.h"

typedef struct {
    int pid;
    int status;        /* exit code, or 128 + signal */
    int64_t exited_at; /* ns since the epoch */
    bool published;    /* the runtime's /tasks/exit event was acknowledged */
} shim_exit_t;

/** File name of a process's exit record inside the bundle: "exit" for the
 * init (exec_id NULL or ""), else "exec-<exec_id>.exit". Writes into buf. */
void shim_exit_name(const char *exec_id, char *buf, size_t n);

/** Writes the record atomically (temp file, rename; no fsync: runtime state
 * outlives processes, not reboots). dirfd is the bundle directory. */
int shim_exit_write(int dirfd, const char *exec_id, const shim_exit_t *e, berth_error_t **err);

/** Reads a record. Returns 0, 1 if there is none, -1 if it is malformed. */
int shim_exit_read(int dirfd, const char *exec_id, shim_exit_t *e, berth_error_t **err);

/** Converts a wait(2) status into the reported exit status (code, or 128+sig). */
int shim_exit_status(int wstatus);
