/* SPDX-License-Identifier: Apache-2.0 */
/* logfmt (or JSON) lines on stderr: time, level, component, then the body. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "berth/log.h"

int berth_log_level_current = BERTH_LOG_INFO;
static char log_component[32] = "berth";
static int log_json;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

void berth_log_init(const char *component, berth_log_level_t level)
{
    snprintf(log_component, sizeof(log_component), "%s", component);
    berth_log_level_current = (int)level;
}

void berth_log_set_json(int json) { log_json = json; }

int berth_log_level_parse(const char *s)
{
    for (size_t i = 0; i < BERTH_ARRAY_SIZE(level_names); i++)
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    if (strcmp(s, "warning") == 0)
        return BERTH_LOG_WARN;
    return -1;
}

void berth__log(berth_log_level_t level, const char *fmt, ...)
{
    char body[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tbuf[64];
    size_t n = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof(tbuf) - n, ".%06ldZ", ts.tv_nsec / 1000);
    const char *lv = level_names[(unsigned)level < 5 ? level : 4];

    char line[4352];
    int len;
    if (log_json) {
        /* The body stays a logfmt string inside the JSON object; escape it. */
        char esc[8192];
        size_t j = 0;
        for (size_t i = 0; body[i] && j + 7 < sizeof(esc); i++) {
            unsigned char c = (unsigned char)body[i];
            if (c == '"' || c == '\\') {
                esc[j++] = '\\';
                esc[j++] = (char)c;
            } else if (c < 0x20) {
                j += (size_t)snprintf(esc + j, sizeof(esc) - j, "\\u%04x", c);
            } else {
                esc[j++] = (char)c;
            }
        }
        esc[j] = 0;
        len = snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\",\"component\":\"%s\",\"msg\":\"%s\"}\n",
                       tbuf, lv, log_component, esc);
    } else {
        len = snprintf(line, sizeof(line), "time=%s level=%s component=%s %s\n", tbuf, lv,
                       log_component, body);
    }
    if (len > (int)sizeof(line) - 1) {
        len = (int)sizeof(line) - 1;
        line[len - 1] = '\n';
    }
    /* One write per line so lines from several processes never interleave. */
    ssize_t w = write(2, line, (size_t)len);
    (void)w;
}
