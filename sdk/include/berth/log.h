/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: one macro, logfmt lines on stderr, level checked before any
 * formatting so filtered lines cost nothing. */
#pragma once

#include "berth/common.h"

typedef enum {
    BERTH_LOG_ERROR = 0,
    BERTH_LOG_WARN,
    BERTH_LOG_INFO,
    BERTH_LOG_DEBUG,
    BERTH_LOG_TRACE,
} berth_log_level_t;

extern int berth_log_level_current;

/** Sets the component name printed in every line (e.g. "core", "content"). */
void berth_log_init(const char *component, berth_log_level_t level);
/** Parses "error|warn|info|debug|trace"; returns -1 on unknown names. */
int berth_log_level_parse(const char *s);
/** Selects logfmt (0) or JSON lines (1). */
void berth_log_set_json(int json);
void berth__log(berth_log_level_t level, const char *fmt, ...) BERTH_PRINTF(2, 3);

/** Logs one line: `berth_log(BERTH_LOG_INFO, "msg=\"started\" ref=%s", ref)`.
 * The format is the logfmt body after time/level/component. */
#define berth_log(level, ...)                                                                      \
    do {                                                                                           \
        if ((int)(level) <= berth_log_level_current)                                               \
            berth__log((level), __VA_ARGS__);                                                      \
    } while (0)
