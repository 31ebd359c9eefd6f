/* SPDX-License-Identifier: Apache-2.0 */
/* BERTH_FAILPOINTS parsing and actions (see berth/failpoint.h). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "berth/failpoint.h"
#include "berth/log.h"

static int state = -1; /* -1 unknown, 0 none, 1 some */
static const char *spec;
static char fired[16][128];
static int nfired;

static int already_fired(const char *name)
{
    for (int i = 0; i < nfired; i++)
        if (strcmp(fired[i], name) == 0)
            return 1;
    if (nfired < 16)
        snprintf(fired[nfired++], sizeof(fired[0]), "%s", name);
    return 0;
}

int berth_failpoint(const char *name)
{
    if (state == 0)
        return 0;
    if (state < 0) {
        spec = getenv("BERTH_FAILPOINTS");
        state = spec && *spec;
        if (!state)
            return 0;
    }
    size_t nl = strlen(name);
    for (const char *p = spec; p && *p;) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            char act[64];
            snprintf(act, sizeof(act), "%.*s", (int)(len - nl - 1), p + nl + 1);
            char *a = act;
            if (strncmp(a, "once:", 5) == 0) {
                if (already_fired(name))
                    return 0;
                a += 5;
            }
            berth_log(BERTH_LOG_WARN, "msg=\"failpoint hit\" failpoint=%s action=%s", name, a);
            if (strcmp(a, "crash") == 0) {
                raise(SIGKILL);
            } else if (strcmp(a, "error") == 0) {
                return -1;
            } else if (strncmp(a, "pause=", 6) == 0) {
                long ms = atol(a + 6);
                struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
            return 0;
        }
        p = end ? end + 1 : NULL;
    }
    return 0;
}
