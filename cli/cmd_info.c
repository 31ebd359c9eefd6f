/* SPDX-License-Identifier: Apache-2.0 */
/* `berth info`: the daemon's `info` result (paths, config summary, plugins)
 * as indented JSON. */
#include <getopt.h>
#include <string.h>

#include "cli.h"

static const char info_help[] =
    "Usage: berth info [--format json]\n"
    "\n"
    "Show daemon information (root and state directories, configuration summary)\n"
    "as JSON (ctr 1.6 has no info command; --format json is accepted like\n"
    "everywhere else and changes nothing).\n"
    "\n"
    "Examples:\n"
    "  berth info\n"
    "  berth info | jq .root\n";

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {0},
    };
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (o == 'h') {
            fputs(info_help, stdout);
            return 0;
        }
        if (o == 'f') {
            if (strcmp(optarg, "json") != 0)
                cli_die("`berth info` prints JSON only: use --format json or no --format");
            continue;
        }
        cli_flag_error("info", o, argv);
    }
    if (optind < argc)
        cli_die("`berth info` takes no arguments (got \"%s\")", argv[optind]);
    const msgpack_object *res = cli_call("info", NULL, NULL, NULL, NULL);
    cli_print_json(res, stdout);
    return 0;
}
