/* SPDX-License-Identifier: Apache-2.0 */
/* `berth version`: client and server versions, laid out like `ctr version`
 * (the server's UUID is berthd's boot id). */
#include <getopt.h>
#include <string.h>

#include "cli.h"
#include "cli_priv.h"

static const char version_help[] =
    "Usage: berth version [--format json]\n"
    "\n"
    "Print the client and server versions. The server's UUID is berthd's boot id:\n"
    "it changes each time berthd starts.\n"
    "\n"
    "Options:\n"
    "  --format FORMAT   table (default) or json\n"
    "\n"
    "Examples:\n"
    "  berth version\n"
    "  berth version --format json | jq -r .server.version\n";

int cmd_version(int argc, char **argv)
{
    static const struct option opts[] = {
        {"format", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *format = NULL;
    int o;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'f':
            format = optarg;
            break;
        case 'h':
            fputs(version_help, stdout);
            return 0;
        default:
            cli_flag_error("version", o, argv);
        }
    }
    if (optind < argc)
        cli_die("`berth version` takes no arguments (got \"%s\")", argv[optind]);
    bool json = cli_format_is_json(format);

    if (!json) {
        /* The client half is printed before connecting, as ctr does, so a
         * missing daemon still shows what the client is. */
        printf("Client:\n  Version:  %s\n  Revision: %s\n\n", BERTH_VERSION, BERTH_REVISION);
        fflush(stdout);
    }
    const msgpack_object *res = cli_call("version", NULL, NULL, NULL, NULL);
    if (json) {
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        msgpack_pack_map(&b.pk, 2);
        berth_mp_pack_str(&b.pk, "client");
        msgpack_pack_map(&b.pk, 2);
        berth_mp_kv_str(&b.pk, "version", BERTH_VERSION);
        berth_mp_kv_str(&b.pk, "revision", BERTH_REVISION);
        berth_mp_pack_str(&b.pk, "server");
        msgpack_pack_object(&b.pk, *res);
        cli_print_packed_json(b.buf.data, b.buf.size);
        berth_mpbuf_destroy(&b);
        return 0;
    }
    _cleanup_free_ char *ver = cli_str(res, "version");
    _cleanup_free_ char *rev = cli_str(res, "revision");
    _cleanup_free_ char *boot = cli_str(res, "boot_id");
    printf("Server:\n  Version:  %s\n  Revision: %s\n  UUID: %s\n", ver, rev, boot);
    return 0;
}
