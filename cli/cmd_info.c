/* SPDX-License-Identifier: Apache-2.0 */
/* `berth info`: the daemon's `info` result (paths, config summary, plugins)
 * as indented JSON. */
#include <getopt.h>

#include "cli.h"

static const char info_help[] =
    "Usage: berth info\n"
    "\n"
    "Show daemon information (root and state directories, configuration summary)\n"
    "as JSON.\n"
    "\n"
    "Examples:\n"
    "  berth info\n"
    "  berth info | jq .root\n";

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
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
        cli_flag_error("info", o, argv);
    }
    if (optind < argc)
        cli_die("`berth info` takes no arguments (got \"%s\")", argv[optind]);
    const msgpack_object *res = cli_call("info", NULL, NULL, NULL, NULL);
    cli_print_json(res, stdout);
    return 0;
}
