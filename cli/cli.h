/* SPDX-License-Identifier: Apache-2.0 */
/* Shared helpers of the berth CLI: global flags, connecting, calling,
 * tables, JSON output, human sizes. One cmd_<group>.c file per command group;
 * main.c dispatches from a table. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "berth/client.h"
#include "berth/error.h"
#include "berth/mp.h"

typedef struct {
    const char *address; /* -a/--address, $BERTH_ADDRESS, /run/berth/berth.sock */
    const char *ns;      /* -n/--namespace, $BERTH_NAMESPACE, "default" */
    uint32_t timeout_ms; /* --timeout (0 = none) */
    uint32_t connect_timeout_ms;
    bool debug;
} cli_globals_t;
extern cli_globals_t cli_g;

/** A command group entry point: argv[0] is the group name as typed. Returns
 * the process exit code. */
typedef int (*cli_cmd_fn)(int argc, char **argv);

/** Connected client (connects on first use; exits with a helpful message if
 * the daemon is not there). */
berth_client_t *cli_client(void);

/** Starts a params map with `n` fields of your own plus "namespace" (packed
 * first, from cli_g.ns) and a fresh "request_id". */
void cli_params_begin(berth_mpbuf_t *b, uint32_t n);

/** Calls a method; on error prints `berth: <message>` and exits 1. The
 * result is borrowed until the next call. stream_cb/upload_cb as in
 * berth_client_call (may be NULL). Ctrl-C sends $cancel. */
const msgpack_object *cli_call(const char *method, berth_mpbuf_t *params,
                               berth_client_stream_cb stream_cb, berth_client_upload_cb upload_cb,
                               void *user);
/** Like cli_call but returns -1 and hands the error back instead of exiting. */
int cli_try_call(const char *method, berth_mpbuf_t *params, berth_client_stream_cb stream_cb,
                 berth_client_upload_cb upload_cb, void *user, const msgpack_object **out,
                 berth_error_t **err);

/** Prints `berth: <message>` and exits 1. */
void cli_die(const char *fmt, ...) BERTH_PRINTF(1, 2) __attribute__((noreturn));
void cli_die_err(berth_error_t *err) __attribute__((noreturn));

/** Aligned table printed like ctr (tabwriter, padding 1 or more spaces). */
typedef struct cli_table_s cli_table_t;
cli_table_t *cli_table_new(int ncols, ...);      /* headers */
void cli_table_row(cli_table_t *t, ...);         /* ncols strings (NULL → "-") */
void cli_table_print(cli_table_t *t, FILE *out); /* prints and frees */

/** Prints a msgpack object as JSON (bin → base64 string), pretty with a
 * trailing newline. */
void cli_print_json(const msgpack_object *o, FILE *out);

/** Output format chosen with --format (table|json); parsed by each command
 * with cli_parse_format() from its own argv. */
bool cli_format_is_json(const char *fmt);
/** Prints a packed msgpack object (bytes) as JSON, like cli_print_json. */
void cli_print_packed_json(const void *data, size_t len);
/** Prints `n` objects packed one after another in `items` as one JSON array. */
void cli_print_packed_array(const berth_mpbuf_t *items, uint32_t n);
/** Calls a listing METHOD with {filters: [...]} (none when nf is 0); the
 * result is borrowed until the next call. */
const msgpack_object *cli_call_filtered(const char *method, char *const *filters, int nf);
/** The two outputs every listing shares: with `json` the list (an empty
 * array when NULL) as JSON, with `quiet` each entry's `key` on a line.
 * Returns true when it printed (the caller's table is not wanted). */
bool cli_list_plain(const msgpack_object *list, bool json, bool quiet, const char *key);
/** Parses the flags every listing takes: -q/--quiet (when `quiet` is not
 * NULL) and --format table|json; anything else is a usage error naming
 * `cmd`. Returns the index of the first operand. */
int cli_list_flags(const char *cmd, int argc, char **argv, bool *quiet, bool *json);
/** Parses a command whose only flag is the switch --`name` (and -`shortopt`
 * unless it is 0), setting *on; anything else is a usage error naming `cmd`.
 * Returns the index of the first operand. */
int cli_switch_flag(const char *cmd, int argc, char **argv, const char *name, char shortopt,
                    bool *on);

/** "1.0 MiB", "301B" style like ctr (progress.Bytes). Returns static buffer
 * rotated among 8 slots. */
const char *cli_human_size(uint64_t n);
/** "12 minutes" style age from a ns timestamp. */
const char *cli_human_age(int64_t ts_ns);
/** RFC3339 UTC from a ns timestamp. */
const char *cli_rfc3339(int64_t ts_ns);

/** Packs "k=v" args as a msgpack map of n entries; exits with an error on a
 * malformed one. */
void cli_pack_labels(msgpack_packer *pk, char **kv, int n);
/** Formats a labels map as "k=v,k2=v2" ("-" when empty). Static buffer. */
const char *cli_labels_str(const msgpack_object *labels);

/** Returns a malloc'd copy of a str field of a map, "" if absent. */
char *cli_str(const msgpack_object *map, const char *key);
uint64_t cli_u64(const msgpack_object *map, const char *key);

/* ---- Additions by the CLI helper (additive; everything above is unchanged) ---- */

/** True when the namespace came from -n/--namespace or $BERTH_NAMESPACE
 * (not the default): commands that show all namespaces by default (events)
 * filter only then. */
extern bool cli_ns_explicit;

/** A subcommand of a group, for cli_dispatch(). */
typedef struct {
    const char *names;                /* "list|ls": the first is the canonical name */
    const char *args;                 /* usage after the name: "[-q] [--format json] [ID...]" */
    const char *help;                 /* one line, shown in the group help */
    const char *details;              /* options and examples for `--help` (may be NULL) */
    int (*fn)(int argc, char **argv); /* argv[0] is the subcommand as typed */
    bool raw_args;                    /* only argv[1] may be -h/--help (args are a command line) */
} cli_subcmd_t;

/** Runs a group's subcommand: `GROUP`, `GROUP --help` and `GROUP help [SUB]`
 * print the group help (the "Commands:" section is what bash completion
 * reads), `GROUP SUB --help` prints the subcommand help, an unknown
 * subcommand is an error. `subs` ends with a zeroed entry. argv[0] is the
 * group as typed; `group` is its canonical name. Returns the exit code. */
int cli_dispatch(int argc, char **argv, const char *group, const char *help,
                 const cli_subcmd_t *subs);

/** Parses a Go-style duration ("1m30s", "500ms", "2h"; a bare number is
 * seconds). Returns 0 or -1. */
int cli_parse_duration_ms(const char *s, uint32_t *out_ms);

/** "12 minutes" style (docker go-units HumanDuration) for a duration in ns. */
const char *cli_human_duration(uint64_t ns);
/** Go time.Time String() in UTC, as ctr prints event and metrics timestamps:
 * "2026-11-28 16:11:20.319990851 +0000 UTC". Static buffer rotated among 8. */
const char *cli_go_time(int64_t ts_ns);
/** Prints a msgpack object as one-line JSON (no trailing newline). */
void cli_print_json_compact(const msgpack_object *o, FILE *out);
/** Splits "k=v" ("k" alone means "k=true", like ctr). Returns -1 on an empty
 * key. The key is borrowed from kv with length *klen. */
int cli_label_split(const char *kv, size_t *klen, const char **val);
/** For getopt_long users (set opterr = 0): reports the flag getopt rejected
 * (it returned '?' or ':') as `berth: unknown flag --x for "berth CMD"; run
 * `berth CMD --help`` and exits 1. `cmd` is e.g. "plugins ls". */
void cli_flag_error(const char *cmd, int ret, char **argv) __attribute__((noreturn));

/* ---- Additions for ctr-compatible listings (additive) ---- */

/** Table layouts of ctr's tabwriters other than the default (spaces, every
 * cell padded, the last one included). */
enum {
    /** Pad with tabs to multiples of 8 columns, like ctr's
     * tabwriter.NewWriter(w, 1, 8, 1, '\t', 0) (`content ls`, `content
     * active`): `cut -f` works on the output. */
    CLI_TABLE_TABS = 1u << 0,
    /** The last column is printed as it is, unpadded, in every line (ctr
     * writes no tab after it: `content ls`). */
    CLI_TABLE_OPEN_LAST = 1u << 1,
    /** Only the rows' last cell is unpadded; the header's is padded (ctr's
     * `images check`). */
    CLI_TABLE_OPEN_LAST_ROWS = 1u << 2,
};
void cli_table_style(cli_table_t *t, unsigned flags);
/** Frees a table without printing it. */
void cli_table_free(cli_table_t *t);

/** Sizes as ctr's progress.Bytes prints them in `images ls`, `images check`
 * and `snapshots usage`: "%.1f UNIT" in base 1024, bytes included ("301.0 B",
 * "1.0 MiB"). Static buffer rotated among 8 slots. */
const char *cli_bytes(uint64_t n);
/** Sizes as go-units HumanSize prints them in ctr's `content ls` and
 * `content active`: 4 significant digits, base 1000 ("366B", "1.084MB").
 * Static buffer rotated among 8 slots. */
const char *cli_human_size_si(uint64_t n);
/** RFC3339 with nanoseconds, trailing zeros trimmed, UTC (Go's
 * RFC3339Nano, as ctr's JSON shows times). Static buffer rotated among 8. */
const char *cli_rfc3339_nano(int64_t ts_ns);
