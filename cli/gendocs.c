/* SPDX-License-Identifier: Apache-2.0 */
/* `berth __gen-docs`: the manual pages (berth.1, berth-GROUP.1) and the
 * Markdown reference (docs/cli.md) generated from the very text that
 * `--help` prints, so there is no second copy to drift. Each help text is
 * produced by running the command's own code in a child process with its
 * stdout captured; subcommands are read from the "Commands:" section that
 * cli_dispatch prints, so groups and subcommands added later appear by
 * themselves. Hidden: not listed in `berth --help` or completion. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_priv.h"

/* A help invocation that takes longer than this is hung (waiting for a
 * daemon it should not need). */
#define HELP_TIMEOUT_S 10

static const char gendocs_help[] =
    "Usage: berth __gen-docs [--man DIR] [--markdown FILE] [--berthd PATH --man8 DIR]\n"
    "                        [--lenient]\n"
    "\n"
    "Writes the manual pages (DIR/berth.1 and DIR/berth-GROUP.1) and the Markdown\n"
    "command reference (FILE, e.g. docs/cli.md) from the text that `--help` prints,\n"
    "and DIR8/berthd.8 from `PATH --help` (PATH: a berthd binary).\n"
    "Fails when a command's --help fails or needs the daemon; --lenient writes what\n"
    "it can and only warns (the build uses it; the docs test does not).\n";

typedef struct {
    char *text; /* captured stdout, NUL-terminated */
    char *errs; /* captured stderr */
    int rc;     /* exit code, or 128+signal */
} capture_t;

typedef struct {
    char *name;     /* canonical subcommand name */
    capture_t help; /* `berth GROUP SUB --help` */
} sub_doc_t;

typedef struct {
    const cli_group_t *g;
    capture_t help; /* `berth GROUP --help` */
    sub_doc_t *subs;
    size_t nsubs;
} group_doc_t;

static int g_problems;
static bool g_lenient;

static void problem(const char *fmt, ...) BERTH_PRINTF(1, 2);
static void problem(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "berth __gen-docs: %s", g_lenient ? "warning: " : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    g_problems++;
}

static char *read_all(FILE *f)
{
    fflush(f);
    if (fseek(f, 0, SEEK_END) < 0)
        cli_die("gen-docs: cannot seek a temporary file: %s", strerror(errno));
    long n = ftell(f);
    rewind(f);
    char *b = malloc((size_t)n + 1);
    if (!b)
        cli_die("out of memory");
    size_t got = fread(b, 1, (size_t)n, f);
    b[got] = 0;
    return b;
}

/* Runs fn(argc, argv) — a command's own entry point — in a child whose
 * stdout and stderr go to temporary files, with no daemon reachable. */
static capture_t run_captured(cli_cmd_fn fn, void (*print)(FILE *), int argc, char **argv)
{
    capture_t c = {0};
    FILE *out = tmpfile(), *err = tmpfile();
    if (!out || !err)
        cli_die("gen-docs: cannot create a temporary file: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        cli_die("gen-docs: fork: %s", strerror(errno));
    if (pid == 0) {
        if (dup2(fileno(out), STDOUT_FILENO) < 0 || dup2(fileno(err), STDERR_FILENO) < 0)
            _exit(125);
        /* A help text must never need the daemon: make any attempt fail
         * fast instead of printing a live listing into the manual. */
        cli_g.address = "/nonexistent/berth-gen-docs.sock";
        cli_g.connect_timeout_ms = 1;
        alarm(HELP_TIMEOUT_S);
        int rc = fn ? fn(argc, argv) : (print(stdout), 0);
        fflush(stdout);
        fflush(stderr);
        _exit(rc & 0xff);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    c.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    c.text = read_all(out);
    c.errs = read_all(err);
    fclose(out);
    fclose(err);
    return c;
}

static bool capture_ok(const capture_t *c, const char *what)
{
    if (c->rc == 0 && strncmp(c->text, "Usage: ", 7) == 0)
        return true;
    if (c->rc == 128 + SIGALRM)
        problem("`%s` did not finish in %d s (does it wait for the daemon?)", what, HELP_TIMEOUT_S);
    else if (c->rc != 0)
        problem("`%s` exited with %d: %s", what, c->rc, *c->errs ? c->errs : "(no message)\n");
    else
        problem("`%s` does not start with \"Usage: \" (every help text must)", what);
    return false;
}

/* ---- reading help texts ---------------------------------------------------- */

/* Borrowed line iteration over a NUL-terminated text: sets *len to the line
 * length (without '\n') and returns the next line or NULL at the end. */
static const char *next_line(const char *p, size_t *len)
{
    const char *nl = strchr(p, '\n');
    *len = nl ? (size_t)(nl - p) : strlen(p);
    return nl ? nl + 1 : (p[*len] ? p + *len : NULL);
}

static bool line_blank(const char *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (l[i] != ' ' && l[i] != '\t')
            return false;
    return true;
}

static size_t line_indent(const char *l, size_t n)
{
    size_t i = 0;
    while (i < n && l[i] == ' ')
        i++;
    return i;
}

/* "Options:", "Global options:", "Examples:", "Commands:" — a heading line. */
static bool line_heading(const char *l, size_t n)
{
    if (n < 2 || l[n - 1] != ':' || !(l[0] >= 'A' && l[0] <= 'Z'))
        return false;
    for (size_t i = 1; i + 1 < n; i++)
        if (!((l[i] >= 'a' && l[i] <= 'z') || (l[i] >= 'A' && l[i] <= 'Z') || l[i] == ' '))
            return false;
    return true;
}

/* Canonical subcommand names from the "Commands:" section of a group help
 * ("  list, ls  List ..." → "list"). */
static size_t parse_subcommands(const char *text, char ***out)
{
    char **names = NULL;
    size_t n = 0;
    bool in = false;
    size_t len;
    for (const char *p = text, *nx; p; p = nx) {
        nx = next_line(p, &len);
        if (!in) {
            in = len == 9 && memcmp(p, "Commands:", 9) == 0;
            continue;
        }
        if (line_blank(p, len))
            break;
        size_t ind = line_indent(p, len);
        if (ind != 2)
            continue;
        size_t e = ind;
        while (e < len && p[e] != ',' && p[e] != ' ')
            e++;
        if (e == ind)
            continue;
        char **nn = realloc(names, (n + 1) * sizeof(*names));
        if (!nn)
            cli_die("out of memory");
        names = nn;
        names[n] = strndup(p + ind, e - ind);
        if (!names[n])
            cli_die("out of memory");
        n++;
    }
    *out = names;
    return n;
}

/* ---- roff ---------------------------------------------------------------- */

/* Text escaped for roff: backslashes, hyphens (so options can be copied and
 * searched), and a leading dot or quote that would start a request. */
static void roff_text(FILE *f, const char *s, size_t n)
{
    if (n && (s[0] == '.' || s[0] == '\''))
        fputs("\\&", f);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\')
            fputs("\\e", f);
        else if (s[i] == '-')
            fputs("\\-", f);
        else
            fputc(s[i], f);
    }
}

static void roff_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputs("\\(dq", f);
        else if (*s == '\\')
            fputs("\\e", f);
        else if (*s == '-')
            fputs("\\-", f);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void upper(char *dst, const char *s, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        dst[i] = (s[i] >= 'a' && s[i] <= 'z') ? (char)(s[i] - 32) : s[i];
    dst[i] = 0;
}

typedef enum { SEC_TEXT, SEC_TERMS, SEC_EXAMPLES } sec_kind_t;

static sec_kind_t section_kind(const char *l, size_t n)
{
    if ((n >= 8 && memcmp(l + n - 8, "options:", 8) == 0) ||
        (n >= 8 && memcmp(l + n - 8, "Options:", 8) == 0) ||
        (n == 9 && memcmp(l, "Commands:", 9) == 0))
        return SEC_TERMS;
    if (n == 12 && memcmp(l, "Exit status:", 12) == 0)
        return SEC_TERMS;
    if (n >= 8 && memcmp(l, "Example", 7) == 0)
        return SEC_EXAMPLES;
    return SEC_TEXT;
}

/* Writes "TERM   description" as a .TP entry; in the top-level command
 * list a group's entry points to its page. */
static void roff_term(FILE *f, const char *l, size_t n, bool link_groups)
{
    size_t ind = line_indent(l, n);
    size_t e = ind;
    /* The term ends at the first run of two spaces. */
    while (e < n && !(l[e] == ' ' && e + 1 < n && l[e + 1] == ' '))
        e++;
    size_t d = e;
    while (d < n && l[d] == ' ')
        d++;
    fputs(".TP\n\\fB", f);
    roff_text(f, l + ind, e - ind);
    fputs("\\fR\n", f);
    if (d < n) {
        roff_text(f, l + d, n - d);
        fputc('\n', f);
    }
    if (link_groups) {
        size_t w = ind;
        while (w < e && l[w] != ',' && l[w] != ' ')
            w++;
        for (size_t i = 0; i < cli_ngroups; i++)
            if (cli_groups[i].fn && strlen(cli_groups[i].fn_name) == w - ind &&
                memcmp(cli_groups[i].fn_name, l + ind, w - ind) == 0) {
                fprintf(f, ".br\nSee \\fBberth\\-%s\\fR(1).\n", cli_groups[i].fn_name);
                break;
            }
    }
}

/* Renders a help text (after its Usage line, which the caller renders).
 * top: headings become .SH; otherwise they are bold lines inside the
 * current .SS. The first paragraph is skipped when skip_first (it is the
 * NAME line of the page). */
static void roff_body(FILE *f, const char *text, bool top, bool skip_usage, bool link_groups)
{
    sec_kind_t kind = SEC_TEXT;
    bool in_pre = false, in_para = false, need_pp = false;
    size_t len;
    const char *p = text;
    if (skip_usage && strncmp(p, "Usage: ", 7) == 0) {
        /* The usage may wrap onto indented continuation lines. */
        p = next_line(p, &len);
        while (p && *p == ' ')
            p = next_line(p, &len);
    }
    for (const char *nx; p; p = nx) {
        nx = next_line(p, &len);
        if (line_blank(p, len)) {
            if (in_pre) {
                fputs(".fi\n.RE\n", f);
                in_pre = false;
            }
            need_pp = true;
            in_para = false;
            continue;
        }
        size_t ind = line_indent(p, len);
        if (ind == 0 && line_heading(p, len)) {
            if (in_pre) {
                fputs(".fi\n.RE\n", f);
                in_pre = false;
            }
            kind = section_kind(p, len);
            if (top) {
                char h[64];
                char tmp[64];
                snprintf(tmp, sizeof(tmp), "%.*s", (int)(len - 1), p);
                upper(h, tmp, sizeof(h));
                fputs(".SH ", f);
                roff_quoted(f, h);
                fputc('\n', f);
            } else {
                fputs(".PP\n\\fB", f);
                roff_text(f, p, len);
                fputs("\\fR\n", f);
            }
            in_para = need_pp = false;
            continue;
        }
        if (ind > 0 && kind == SEC_TERMS) {
            if (in_pre) {
                fputs(".fi\n.RE\n", f);
                in_pre = false;
            }
            /* A deeper line continues the previous term's description. */
            if (ind > 8) {
                roff_text(f, p + ind, len - ind);
                fputc('\n', f);
            } else {
                roff_term(f, p, len, link_groups);
            }
            in_para = need_pp = false;
            continue;
        }
        if (ind > 0) {
            /* Examples and any other indented block: verbatim. */
            if (!in_pre) {
                if (need_pp || in_para)
                    fputs(".PP\n", f);
                fputs(".RS 4\n.nf\n", f);
                in_pre = true;
                in_para = need_pp = false;
            }
            size_t cut = ind < 2 ? ind : 2;
            roff_text(f, p + cut, len - cut);
            fputc('\n', f);
            continue;
        }
        if (in_pre) {
            fputs(".fi\n.RE\n", f);
            in_pre = false;
        }
        if (need_pp) {
            fputs(".PP\n", f);
            need_pp = false;
        }
        roff_text(f, p, len);
        fputc('\n', f);
        in_para = true;
    }
    if (in_pre)
        fputs(".fi\n.RE\n", f);
}

/* The Usage line of a help text without "Usage: " (joined if it wraps). */
static char *usage_of(const char *text)
{
    size_t len;
    if (strncmp(text, "Usage: ", 7) != 0)
        return strdup("");
    const char *nx = next_line(text, &len);
    char *u = strndup(text + 7, len - 7);
    while (u && nx && *nx == ' ') {
        const char *l = nx;
        nx = next_line(l, &len);
        size_t ind = line_indent(l, len);
        char *j = NULL;
        if (asprintf(&j, "%s %.*s", u, (int)(len - ind), l + ind) < 0)
            j = NULL;
        free(u);
        u = j;
    }
    if (!u)
        cli_die("out of memory");
    return u;
}

/* "berth images pull REF [...]" → .B "berth images pull" + the rest. */
static void roff_synopsis(FILE *f, const char *usage, size_t cmd_words)
{
    const char *p = usage;
    for (size_t w = 0; w < cmd_words && *p; w++) {
        while (*p && *p != ' ')
            p++;
        if (w + 1 < cmd_words)
            while (*p == ' ')
                p++;
    }
    char *cmd = strndup(usage, (size_t)(p - usage));
    if (!cmd)
        cli_die("out of memory");
    fputs(".B ", f);
    roff_quoted(f, cmd);
    fputc('\n', f);
    while (*p == ' ')
        p++;
    if (*p) {
        roff_text(f, p, strlen(p));
        fputc('\n', f);
    }
    free(cmd);
}

static const char *man_date(void)
{
    /* Reproducible: the date only when SOURCE_DATE_EPOCH says which. */
    static char b[32];
    const char *e = getenv("SOURCE_DATE_EPOCH");
    if (!e || !*e)
        return "";
    time_t t = (time_t)strtoll(e, NULL, 10);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(b, sizeof(b), "%Y-%m-%d", &tm);
    return b;
}

static void roff_header(FILE *f, const char *title, const char *name, const char *summary)
{
    char up[96];
    upper(up, title, sizeof(up));
    fprintf(f,
            ".\\\" Generated by `berth __gen-docs` from the text of `berth --help`; do not edit.\n"
            ".TH %s 1 \"%s\" \"berth %s\" \"berth manual\"\n"
            ".SH NAME\n",
            up, man_date(), BERTH_VERSION);
    roff_text(f, name, strlen(name));
    fputs(" \\- ", f);
    roff_text(f, summary, strlen(summary));
    fputc('\n', f);
}

static FILE *open_out(const char *dir, const char *name, char **path)
{
    if (asprintf(path, "%s/%s", dir, name) < 0)
        cli_die("out of memory");
    FILE *f = fopen(*path, "w");
    if (!f)
        cli_die("cannot write %s: %s", *path, strerror(errno));
    return f;
}

static void close_out(FILE *f, char *path)
{
    if (fflush(f) != 0 || ferror(f) || fclose(f) != 0)
        cli_die("cannot write %s: %s", path, strerror(errno));
    free(path);
}

static void write_man_top(const char *dir, const capture_t *top, const group_doc_t *gd, size_t ng)
{
    char *path;
    FILE *f = open_out(dir, "berth.1", &path);
    /* The first line of `berth --help` is "berth - <what it is>". */
    const char *dash = strstr(top->text, " - ");
    const char *nl = strchr(top->text, '\n');
    char *summary = dash && nl && dash < nl ? strndup(dash + 3, (size_t)(nl - dash - 3))
                                            : strdup("the berth command line client");
    roff_header(f, "berth", "berth", summary);
    free(summary);
    const char *u = strstr(top->text, "\nUsage: ");
    if (u) {
        char *usage = usage_of(u + 1);
        fputs(".SH SYNOPSIS\n", f);
        roff_synopsis(f, usage, 1);
        free(usage);
    }
    /* Everything after the first paragraph (name line, Usage line). */
    fputs(".SH DESCRIPTION\n", f);
    const char *rest = u ? strchr(u + 1, '\n') : NULL;
    if (rest)
        roff_body(f, rest + 1, true, false, true);
    fputs(".SH \"SEE ALSO\"\n", f);
    bool first = true;
    for (size_t i = 0; i < ng; i++) {
        fprintf(f, "%s\\fBberth\\-%s\\fR(1)", first ? "" : ",\n", gd[i].g->fn_name);
        first = false;
    }
    fputs(first ? "" : ",\n", f);
    fputs("\\fBberthd\\fR(8)\n", f);
    close_out(f, path);
}

static void write_man_group(const char *dir, const group_doc_t *gd)
{
    char *name = NULL, *title = NULL, *path = NULL;
    if (asprintf(&name, "berth-%s.1", gd->g->fn_name) < 0 ||
        asprintf(&title, "berth-%s", gd->g->fn_name) < 0)
        cli_die("out of memory");
    FILE *f = open_out(dir, name, &path);
    roff_header(f, title, title, gd->g->help);
    char *usage = usage_of(gd->help.text);
    fputs(".SH SYNOPSIS\n", f);
    roff_synopsis(f, usage, 2);
    free(usage);
    if (strchr(gd->g->names, '|')) {
        fputs(".PP\nAliases: ", f);
        for (const char *p = gd->g->names; *p; p++)
            fputs(*p == '|' ? ", " : (char[]){*p, 0}, f);
        fputc('\n', f);
    }
    fputs(".SH DESCRIPTION\n", f);
    roff_body(f, gd->help.text, true, true, false);
    if (gd->nsubs) {
        fputs(".SH \"COMMAND DETAILS\"\n", f);
        for (size_t i = 0; i < gd->nsubs; i++) {
            const sub_doc_t *s = &gd->subs[i];
            char *su = usage_of(s->help.text);
            fputs(".SS ", f);
            char *h = NULL;
            if (asprintf(&h, "berth %s %s", gd->g->fn_name, s->name) < 0)
                cli_die("out of memory");
            roff_quoted(f, h);
            free(h);
            fputs("\n.PP\n", f);
            roff_synopsis(f, su, 3);
            free(su);
            roff_body(f, s->help.text, false, true, false);
        }
    }
    fputs(".SH \"SEE ALSO\"\n\\fBberth\\fR(1)\n", f);
    close_out(f, path);
    free(name);
    free(title);
}

/* Removes berth*.1 pages of a previous run (a group may have gone). */
static void clean_man_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "berth", 5) == 0 && n > 2 && strcmp(e->d_name + n - 2, ".1") == 0) {
            char *p = NULL;
            if (asprintf(&p, "%s/%s", dir, e->d_name) >= 0) {
                unlink(p);
                free(p);
            }
        }
    }
    closedir(d);
}

static void mkdir_p(const char *dir)
{
    char *d = strdup(dir);
    if (!d)
        cli_die("out of memory");
    for (char *s = d + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(d, 0755);
            *s = '/';
        }
    if (mkdir(d, 0755) < 0 && errno != EEXIST)
        cli_die("cannot create %s: %s", d, strerror(errno));
    free(d);
}

/* Runs another program (argv[0], a path) with the capture of run_captured. */
static int exec_fn(int argc, char **argv)
{
    (void)argc;
    execv(argv[0], argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    return 127;
}

/* berthd.8 from `berthd --help`: its first paragraph (the usage lines) is the
 * synopsis, the rest (flags) is shown as it prints it. */
static void write_man_berthd(const char *dir, const char *help)
{
    char *path;
    FILE *f = open_out(dir, "berthd.8", &path);
    fprintf(f,
            ".\\\" Generated by `berth __gen-docs` from the text of `berthd --help`; do not edit.\n"
            ".TH BERTHD 8 \"%s\" \"berth %s\" \"berth manual\"\n"
            ".SH NAME\n"
            "berthd \\- the berth container daemon\n",
            man_date(), BERTH_VERSION);
    const char *para = strstr(help, "\n\n");
    size_t head = para ? (size_t)(para - help) : strlen(help);
    fputs(".SH SYNOPSIS\n.nf\n", f);
    roff_text(f, help, head);
    fputs("\n.fi\n", f);
    fputs(".SH DESCRIPTION\n"
          "berthd is the core of berth: it listens on its unix socket, starts and\n"
          "supervises the plugin processes named in its configuration and routes\n"
          "requests between clients (such as \\fBberth\\fR(1)) and plugins. It sends\n"
          "READY=1 to systemd once every plugin is ready.\n",
          f);
    if (para) {
        fputs(".SH OPTIONS\n.nf\n", f);
        const char *rest = para + 2;
        size_t n = strlen(rest);
        while (n && rest[n - 1] == '\n')
            n--;
        size_t len;
        for (const char *l = rest, *nx; l && l < rest + n; l = nx) {
            nx = next_line(l, &len);
            if (l + len > rest + n)
                len = (size_t)(rest + n - l);
            roff_text(f, l, len);
            fputc('\n', f);
        }
        fputs(".fi\n", f);
    }
    fputs(".SH \"SEE ALSO\"\n\\fBberth\\fR(1); docs/operations.md and docs/configuration.md\n"
          "in the documentation directory\n",
          f);
    close_out(f, path);
}

/* ---- Markdown -------------------------------------------------------------- */

/* GitHub's heading anchor: lower case, spaces to '-', other punctuation
 * dropped. */
static void md_anchor(FILE *f, const char *h)
{
    for (; *h; h++) {
        char c = *h;
        if (c >= 'A' && c <= 'Z')
            fputc(c + 32, f);
        else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')
            fputc(c, f);
        else if (c == ' ')
            fputc('-', f);
    }
}

static void md_block(FILE *f, const char *text)
{
    fputs("```text\n", f);
    fputs(text, f);
    if (*text && text[strlen(text) - 1] != '\n')
        fputc('\n', f);
    fputs("```\n", f);
}

static void write_markdown(const char *path, const capture_t *top, const capture_t *completion,
                           const group_doc_t *gd, size_t ng)
{
    const char *slash = strrchr(path, '/');
    if (slash && slash != path) {
        char *dir = strndup(path, (size_t)(slash - path));
        if (!dir)
            cli_die("out of memory");
        mkdir_p(dir);
        free(dir);
    }
    FILE *f = fopen(path, "w");
    if (!f)
        cli_die("cannot write %s: %s", path, strerror(errno));
    fputs("# berth command reference\n"
          "\n"
          "<!-- Generated by `berth __gen-docs` from the text that `berth --help` prints; do not\n"
          "     edit. Regenerate with `cmake --build build --target cli-docs`. -->\n"
          "\n"
          "This page is the output of `berth --help`, `berth COMMAND --help` and\n"
          "`berth COMMAND SUBCOMMAND --help`, which is also what the manual pages\n"
          "(`man berth`, `man berth-COMMAND`) show. A test fails when it differs from what\n"
          "the binary prints.\n"
          "\n"
          "- [berth](#berth): global options\n",
          f);
    for (size_t i = 0; i < ng; i++) {
        char h[64];
        snprintf(h, sizeof(h), "berth %s", gd[i].g->fn_name);
        fprintf(f, "- [%s](#", h);
        md_anchor(f, h);
        fprintf(f, "): %s\n", gd[i].g->help);
        for (size_t j = 0; j < gd[i].nsubs; j++) {
            char hs[128];
            snprintf(hs, sizeof(hs), "berth %s %s", gd[i].g->fn_name, gd[i].subs[j].name);
            fprintf(f, "  - [%s](#", gd[i].subs[j].name);
            md_anchor(f, hs);
            fputs(")\n", f);
        }
    }
    fputs("- [berth completion](#berth-completion): Print a shell completion script\n", f);
    fputs("\n## berth\n\n", f);
    md_block(f, top->text);
    for (size_t i = 0; i < ng; i++) {
        fprintf(f, "\n## berth %s\n\n", gd[i].g->fn_name);
        md_block(f, gd[i].help.text);
        for (size_t j = 0; j < gd[i].nsubs; j++) {
            fprintf(f, "\n### berth %s %s\n\n", gd[i].g->fn_name, gd[i].subs[j].name);
            md_block(f, gd[i].subs[j].help.text);
        }
    }
    fputs("\n## berth completion\n\n", f);
    md_block(f, completion->text);
    if (fflush(f) != 0 || ferror(f) || fclose(f) != 0)
        cli_die("cannot write %s: %s", path, strerror(errno));
}

/* ---- the command ------------------------------------------------------------- */

int cli_gen_docs(int argc, char **argv)
{
    const char *man_dir = NULL, *md_path = NULL, *berthd = NULL, *man8_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--man") == 0 && i + 1 < argc) {
            man_dir = argv[++i];
        } else if (strcmp(argv[i], "--markdown") == 0 && i + 1 < argc) {
            md_path = argv[++i];
        } else if (strcmp(argv[i], "--berthd") == 0 && i + 1 < argc) {
            berthd = argv[++i];
        } else if (strcmp(argv[i], "--man8") == 0 && i + 1 < argc) {
            man8_dir = argv[++i];
        } else if (strcmp(argv[i], "--lenient") == 0) {
            g_lenient = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(gendocs_help, stdout);
            return 0;
        } else {
            cli_die("unknown argument %s of `berth __gen-docs`; run `berth __gen-docs --help`",
                    argv[i]);
        }
    }
    if (!man_dir && !md_path && !berthd)
        cli_die(
            "nothing to do: give --man DIR and/or --markdown FILE (or --berthd PATH --man8 DIR)");
    if (!berthd != !man8_dir)
        cli_die("--berthd PATH and --man8 DIR go together");
    if (berthd) {
        char *av[] = {(char *)berthd, "--help", NULL};
        capture_t c = run_captured(exec_fn, NULL, 2, av);
        if (c.rc != 0 || !*c.text) {
            problem("`%s --help` exited with %d: %s", berthd, c.rc, c.errs);
        } else {
            mkdir_p(man8_dir);
            write_man_berthd(man8_dir, c.text);
        }
        if (!man_dir && !md_path)
            return g_problems && !g_lenient ? 1 : 0;
    }

    capture_t top = run_captured(NULL, cli_usage, 0, NULL);
    if (!strstr(top.text, "\nUsage: ") || !strstr(top.text, "\nExamples:\n"))
        problem("`berth --help` has no Usage line or no Examples section");
    capture_t completion = run_captured(NULL, cli_completion_usage, 0, NULL);

    group_doc_t *gd = calloc(cli_ngroups, sizeof(*gd));
    if (!gd)
        cli_die("out of memory");
    size_t ng = 0;
    for (size_t i = 0; i < cli_ngroups; i++) {
        const cli_group_t *g = &cli_groups[i];
        if (!g->fn) {
            /* Not an error here: a partial tree documents what it has
             * (the cli_docs test compares with the committed page). */
            fprintf(stderr,
                    "berth __gen-docs: note: command group %s is not in this build "
                    "(cli/cmd_%s.c missing); not documented\n",
                    g->fn_name, g->fn_name);
            continue;
        }
        char what[96];
        snprintf(what, sizeof(what), "berth %s --help", g->fn_name);
        char *av[] = {(char *)g->fn_name, "--help", NULL};
        group_doc_t *d = &gd[ng];
        d->g = g;
        d->help = run_captured(g->fn, NULL, 2, av);
        if (!capture_ok(&d->help, what))
            continue;
        ng++;
        char **names;
        size_t n = parse_subcommands(d->help.text, &names);
        d->subs = calloc(n ? n : 1, sizeof(*d->subs));
        if (!d->subs)
            cli_die("out of memory");
        for (size_t j = 0; j < n; j++) {
            char swhat[160];
            snprintf(swhat, sizeof(swhat), "berth %s %s --help", g->fn_name, names[j]);
            char *sav[] = {(char *)g->fn_name, names[j], "--help", NULL};
            capture_t c = run_captured(g->fn, NULL, 3, sav);
            if (!capture_ok(&c, swhat)) {
                free(names[j]);
                continue;
            }
            d->subs[d->nsubs].name = names[j];
            d->subs[d->nsubs].help = c;
            d->nsubs++;
        }
        free(names);
    }

    if (man_dir) {
        mkdir_p(man_dir);
        clean_man_dir(man_dir);
        write_man_top(man_dir, &top, gd, ng);
        for (size_t i = 0; i < ng; i++)
            write_man_group(man_dir, &gd[i]);
    }
    if (md_path)
        write_markdown(md_path, &top, &completion, gd, ng);
    /* Freed so that a leak checker (ASan builds run this at build time)
     * has nothing to say. */
    capture_t *caps[] = {&top, &completion};
    for (size_t i = 0; i < 2; i++) {
        free(caps[i]->text);
        free(caps[i]->errs);
    }
    for (size_t i = 0; i < ng; i++) {
        free(gd[i].help.text);
        free(gd[i].help.errs);
        for (size_t j = 0; j < gd[i].nsubs; j++) {
            free(gd[i].subs[j].name);
            free(gd[i].subs[j].help.text);
            free(gd[i].subs[j].help.errs);
        }
        free(gd[i].subs);
    }
    free(gd);
    if (g_problems && !g_lenient) {
        fprintf(stderr, "berth __gen-docs: %d problem(s); fix the help texts above\n", g_problems);
        return 1;
    }
    return 0;
}
