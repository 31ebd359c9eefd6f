/* SPDX-License-Identifier: Apache-2.0 */
/* berth: global flags (like ctr's), then dispatch to the command group named
 * in main_table.h. Groups whose cmd_<group>.c is not built say so. */
#include <errno.h>
#include <string.h>

#include "berth/log.h"
#include "cli.h"
#include "cli_priv.h"
#include "main_table.h"

const cli_group_t cli_groups[] = {
#define X(fn_, names_, help_) {#fn_, names_, help_, cmd_##fn_},
    CLI_GROUPS(X)
#undef X
};
const size_t cli_ngroups = BERTH_ARRAY_SIZE(cli_groups);

void cli_usage(FILE *out)
{
    fputs("berth - the client of berthd, a microkernel container daemon (ctr-style commands)\n"
          "\n"
          "Usage: berth [GLOBAL OPTIONS] COMMAND [ARGS...]\n"
          "\n"
          "berth sends each command as a request to berthd over its unix socket; berthd\n"
          "routes it to the plugin process that does the work. Listings take -q (ids\n"
          "only) and --format json. Run `berth COMMAND --help` for a command's options\n"
          "and examples, `man berth-COMMAND` for its manual page.\n"
          "\n"
          "Commands:\n",
          out);
    char disp[96];
    for (size_t i = 0; i < cli_ngroups; i++) {
        size_t j = 0;
        for (const char *p = cli_groups[i].names; *p && j + 3 < sizeof(disp); p++) {
            if (*p == '|') {
                disp[j++] = ',';
                disp[j++] = ' ';
            } else {
                disp[j++] = *p;
            }
        }
        disp[j] = 0;
        fprintf(out, "  %-28s %s%s\n", disp, cli_groups[i].help,
                cli_groups[i].fn ? "" : " (not available in this build)");
    }
    fprintf(out, "  %-28s %s\n", "completion", "Print a shell completion script (bash)");
    fprintf(out, "  %-28s %s\n", "help", "Show help for a command");
    fputs("\n"
          "Global options:\n"
          "  -a, --address PATH           berthd's socket (env BERTH_ADDRESS, default "
          "/run/berth/berth.sock)\n"
          "  -n, --namespace NAME         namespace to work in (env BERTH_NAMESPACE, default "
          "\"default\")\n"
          "      --timeout DURATION       deadline for each request, e.g. 30s, 2m (default:\n"
          "                               berthd's request_timeout_ms, 30s)\n"
          "      --connect-timeout DURATION\n"
          "                               how long to wait for the socket (default 5s)\n"
          "      --debug                  log every request to stderr\n"
          "  -h, --help                   show this help\n"
          "  -v, --version                print the client version\n"
          "\n"
          "Examples:\n"
          "  # Is the daemon up, and are all its plugins ok?\n"
          "  berth version\n"
          "  berth plugins ls\n"
          "  # Get an image from a registry, or from an OCI/docker tar file\n"
          "  berth images pull docker.io/library/busybox:latest\n"
          "  berth images import --base-name demo/busybox busybox.tar\n"
          "  # Run a container, then a second process in it\n"
          "  berth run -d docker.io/library/busybox:latest web sleep 600\n"
          "  berth tasks exec --exec-id sh1 -t web sh\n"
          "  # Follow what happens (Ctrl-C stops)\n"
          "  berth events /tasks/ /images/\n"
          "  # Another daemon, another namespace, JSON output\n"
          "  berth -a /tmp/b/state/berth.sock -n prod containers ls --format json\n"
          "\n"
          "Exit status:\n"
          "  0    success\n"
          "  1    an error, printed as `berth: MESSAGE` with what to do next\n"
          "  130  interrupted by Ctrl-C (the request is cancelled in the daemon)\n",
          out);
}

static bool names_match(const char *names, const char *word)
{
    size_t wl = strlen(word);
    for (const char *p = names; *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == wl && memcmp(p, word, l) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

static const cli_group_t *find_group(const char *word)
{
    for (size_t i = 0; i < cli_ngroups; i++)
        if (names_match(cli_groups[i].names, word))
            return &cli_groups[i];
    return NULL;
}

/* Returns the value of a flag given as "--flag VALUE" or "--flag=VALUE"
 * (advancing *i), or NULL when argv[*i] is not this flag. */
static const char *flag_value(int argc, char **argv, int *i, const char *shortf, const char *longf)
{
    const char *a = argv[*i];
    size_t ll = strlen(longf);
    if (strncmp(a, longf, ll) == 0 && a[ll] == '=')
        return a + ll + 1;
    if (strcmp(a, longf) == 0 || (shortf && strcmp(a, shortf) == 0)) {
        if (*i + 1 >= argc)
            cli_die("flag %s needs a value; run `berth --help`", a);
        (*i)++;
        return argv[*i];
    }
    return NULL;
}

static uint32_t duration_flag(const char *flag, const char *v)
{
    uint32_t ms;
    if (cli_parse_duration_ms(v, &ms) < 0)
        cli_die("invalid duration \"%s\" for %s: use a number with a unit, e.g. 500ms, 30s, 2m", v,
                flag);
    return ms;
}

static int run_group(const cli_group_t *g, int argc, char **argv)
{
    if (!g->fn)
        cli_die("command %s is not available in this build", g->fn_name);
    return g->fn(argc, argv);
}

void cli_completion_usage(FILE *out)
{
    fputs("Usage: berth completion bash\n"
          "\n"
          "Print a bash completion script: commands, subcommands and flags come from\n"
          "`--help`, live names (containers, images, namespaces) from the daemon.\n"
          "\n"
          "Examples:\n"
          "  berth completion bash > /etc/bash_completion.d/berth\n"
          "  source <(berth completion bash)\n",
          out);
}

static int help_cmd(int argc, char **argv)
{
    if (argc < 2) {
        cli_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "completion") == 0) {
        cli_completion_usage(stdout);
        return 0;
    }
    const cli_group_t *g = find_group(argv[1]);
    if (!g)
        cli_die("unknown command \"%s\"; run `berth --help` for the list of commands", argv[1]);
    /* `help GROUP [SUB]` is `GROUP --help` / `GROUP help SUB`. */
    char *args[4] = {argv[1], argc > 2 ? "help" : "--help", argc > 2 ? argv[2] : NULL, NULL};
    return run_group(g, argc > 2 ? 3 : 2, args);
}

int main(int argc, char **argv)
{
    const char *env = getenv("BERTH_ADDRESS");
    if (env && *env)
        cli_g.address = env;
    env = getenv("BERTH_NAMESPACE");
    if (env && *env) {
        cli_g.ns = env;
        cli_ns_explicit = true;
    }
    berth_log_init("berth", BERTH_LOG_WARN);

    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        const char *v;
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if ((v = flag_value(argc, argv, &i, "-a", "--address"))) {
            cli_g.address = v;
        } else if ((v = flag_value(argc, argv, &i, "-n", "--namespace"))) {
            if (!*v)
                cli_die("the namespace must not be empty: give -n NAME (e.g. -n default)");
            cli_g.ns = v;
            cli_ns_explicit = true;
        } else if ((v = flag_value(argc, argv, &i, NULL, "--timeout"))) {
            cli_g.timeout_ms = duration_flag("--timeout", v);
        } else if ((v = flag_value(argc, argv, &i, NULL, "--connect-timeout"))) {
            cli_g.connect_timeout_ms = duration_flag("--connect-timeout", v);
            if (cli_g.connect_timeout_ms == 0)
                cli_g.connect_timeout_ms = 1;
        } else if (strcmp(a, "--debug") == 0) {
            cli_g.debug = true;
            berth_log_init("berth", BERTH_LOG_DEBUG);
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli_usage(stdout);
            return 0;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
            printf("berth version %s (revision %s)\n", BERTH_VERSION, BERTH_REVISION);
            return 0;
        } else {
            cli_die("unknown global flag %s; run `berth --help` for the list", a);
        }
    }
    if (i >= argc) {
        cli_usage(stdout);
        return 0;
    }
    const char *cmd = argv[i];
    int rc;
    cli_setup_signals();
    if (strcmp(cmd, "help") == 0) {
        rc = help_cmd(argc - i, argv + i);
    } else if (strcmp(cmd, "__gen-docs") == 0) {
        /* Hidden: writes the manual pages and docs/cli.md (gendocs.c). */
        rc = cli_gen_docs(argc - i, argv + i);
    } else if (strcmp(cmd, "completion") == 0) {
        if (i + 1 < argc &&
            (strcmp(argv[i + 1], "-h") == 0 || strcmp(argv[i + 1], "--help") == 0)) {
            char *h[] = {"help", "completion", NULL};
            return help_cmd(2, h);
        }
        if (i + 1 >= argc || strcmp(argv[i + 1], "bash") != 0)
            cli_die("usage: berth completion bash (only bash is supported); run `berth completion "
                    "--help`");
        cli_completion_bash(stdout);
        rc = 0;
    } else {
        const cli_group_t *g = find_group(cmd);
        if (!g)
            cli_die("unknown command \"%s\"; run `berth --help` for the list of commands", cmd);
        rc = run_group(g, argc - i, argv + i);
    }
    cli_cleanup();
    if (fflush(stdout) != 0 || ferror(stdout))
        cli_die("cannot write the output: %s", strerror(errno));
    return rc;
}
