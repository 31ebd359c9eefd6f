/* SPDX-License-Identifier: Apache-2.0 */
/* The error contract: functions return 0 or a negative value and take
 * `berth_error_t **err` last; codes map 1:1 to the protocol's error codes. */
#pragma once

#include "berth/common.h"

typedef enum {
    BERTH_E_OK = 0,
    BERTH_E_INVALID_ARGUMENT,
    BERTH_E_NOT_FOUND,
    BERTH_E_ALREADY_EXISTS,
    BERTH_E_FAILED_PRECONDITION,
    BERTH_E_PERMISSION_DENIED,
    BERTH_E_RESOURCE_EXHAUSTED,
    BERTH_E_UNAVAILABLE,
    BERTH_E_DEADLINE_EXCEEDED,
    BERTH_E_CANCELED,
    BERTH_E_ABORTED,
    BERTH_E_UNIMPLEMENTED,
    BERTH_E_INTERNAL,
} berth_code_t;

typedef struct berth_error_s {
    berth_code_t code;
    char *message; /* owned */
} berth_error_t;

/** Protocol name of a code ("not_found"); never NULL. */
const char *berth_code_name(berth_code_t code);
/** Parses a protocol code name; unknown names give BERTH_E_INTERNAL. */
berth_code_t berth_code_parse(const char *name, size_t len);

/** Creates an error in *err (if err is non-NULL and *err is NULL; an existing
 * error is kept) and returns -1 so callers can `return berth_error_set(...)`. */
int berth_error_set(berth_error_t **err, berth_code_t code, const char *fmt, ...)
    BERTH_PRINTF(3, 4);
/** Like berth_error_set, appending ": strerror(errnum)". Returns -errnum or -1. */
int berth_error_errno(berth_error_t **err, int errnum, const char *fmt, ...) BERTH_PRINTF(3, 4);
/** Prefixes context to an existing error: "ctx: old message". Returns -1. */
int berth_error_wrap(berth_error_t **err, const char *fmt, ...) BERTH_PRINTF(2, 3);
/** Frees *err and sets it to NULL. */
void berth_error_free(berth_error_t **err);
/** Maps an errno value to the closest code (ENOENT → not_found, ...). */
berth_code_t berth_code_from_errno(int errnum);

static inline void berth__error_freep(berth_error_t **e) { berth_error_free(e); }
#define _cleanup_error_ __attribute__((cleanup(berth__error_freep)))
