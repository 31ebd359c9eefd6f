/* SPDX-License-Identifier: Apache-2.0 */
/* Internals of the CLI shared by main.c, cli.c and completion.c (not for
 * command groups: they use cli.h). */
#pragma once

#include <stdio.h>

#include "cli.h"

#ifndef BERTH_VERSION
#define BERTH_VERSION "0.0.0"
#endif
#ifndef BERTH_REVISION
#define BERTH_REVISION "unknown"
#endif

/** One command group of main_table.h; fn is NULL when the group's file is
 * not in this build (weak symbol). */
typedef struct {
    const char *fn_name; /* canonical name, e.g. "containers" */
    const char *names;   /* "containers|container|c" */
    const char *help;
    cli_cmd_fn fn;
} cli_group_t;

extern const cli_group_t cli_groups[];
extern const size_t cli_ngroups;

/** Prints `berth --help` (the global usage). */
void cli_usage(FILE *out);
/** Prints `berth completion --help`. */
void cli_completion_usage(FILE *out);
/** `berth __gen-docs`: manual pages and docs/cli.md from the help texts
 * (gendocs.c). Returns the exit code. */
int cli_gen_docs(int argc, char **argv);

/** Installs the SIGINT handler: during a call Ctrl-C sends `$cancel` and the
 * CLI exits 130; outside a call it exits 130 at once. */
void cli_setup_signals(void);
/** Closes the connection. */
void cli_cleanup(void);
/** Prints the bash completion script (generated from cli_groups). */
void cli_completion_bash(FILE *out);
