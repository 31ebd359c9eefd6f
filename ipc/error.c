/* SPDX-License-Identifier: Apache-2.0 */
/* berth_error_t: creation, context wrapping, protocol code names. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "berth/error.h"

static const char *const code_names[] = {
    [BERTH_E_OK] = "ok",
    [BERTH_E_INVALID_ARGUMENT] = "invalid_argument",
    [BERTH_E_NOT_FOUND] = "not_found",
    [BERTH_E_ALREADY_EXISTS] = "already_exists",
    [BERTH_E_FAILED_PRECONDITION] = "failed_precondition",
    [BERTH_E_PERMISSION_DENIED] = "permission_denied",
    [BERTH_E_RESOURCE_EXHAUSTED] = "resource_exhausted",
    [BERTH_E_UNAVAILABLE] = "unavailable",
    [BERTH_E_DEADLINE_EXCEEDED] = "deadline_exceeded",
    [BERTH_E_CANCELED] = "canceled",
    [BERTH_E_ABORTED] = "aborted",
    [BERTH_E_UNIMPLEMENTED] = "unimplemented",
    [BERTH_E_INTERNAL] = "internal",
};

const char *berth_code_name(berth_code_t code)
{
    if ((unsigned)code >= BERTH_ARRAY_SIZE(code_names))
        return "internal";
    return code_names[code];
}

berth_code_t berth_code_parse(const char *name, size_t len)
{
    for (size_t i = 1; i < BERTH_ARRAY_SIZE(code_names); i++)
        if (strlen(code_names[i]) == len && memcmp(code_names[i], name, len) == 0)
            return (berth_code_t)i;
    return BERTH_E_INTERNAL;
}

static int vset(berth_error_t **err, berth_code_t code, const char *suffix, const char *fmt,
                va_list ap)
{
    if (!err || *err)
        return -1;
    berth_error_t *e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    e->code = code;
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    if (msg && suffix) {
        char *full = NULL;
        if (asprintf(&full, "%s: %s", msg, suffix) >= 0) {
            free(msg);
            msg = full;
        }
    }
    e->message = msg ? msg : strdup("out of memory formatting error");
    *err = e;
    return -1;
}

int berth_error_set(berth_error_t **err, berth_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, NULL, fmt, ap);
    va_end(ap);
    return -1;
}

berth_code_t berth_code_from_errno(int e)
{
    switch (e) {
    case ENOENT:
        return BERTH_E_NOT_FOUND;
    case EEXIST:
        return BERTH_E_ALREADY_EXISTS;
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
    case EXDEV:
        return BERTH_E_INVALID_ARGUMENT;
    case EACCES:
    case EPERM:
        return BERTH_E_PERMISSION_DENIED;
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EDQUOT:
        return BERTH_E_RESOURCE_EXHAUSTED;
    case ETIMEDOUT:
        return BERTH_E_DEADLINE_EXCEEDED;
    case ECANCELED:
        return BERTH_E_CANCELED;
    case EBUSY:
    case ENOTEMPTY:
        return BERTH_E_FAILED_PRECONDITION;
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case EAGAIN:
        return BERTH_E_UNAVAILABLE;
    default:
        return BERTH_E_INTERNAL;
    }
}

int berth_error_errno(berth_error_t **err, int errnum, const char *fmt, ...)
{
    if (errnum < 0)
        errnum = -errnum;
    va_list ap;
    va_start(ap, fmt);
    vset(err, berth_code_from_errno(errnum), strerror(errnum), fmt, ap);
    va_end(ap);
    return errnum ? -errnum : -1;
}

int berth_error_wrap(berth_error_t **err, const char *fmt, ...)
{
    if (!err || !*err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    char *ctx = NULL;
    if (vasprintf(&ctx, fmt, ap) < 0)
        ctx = NULL;
    va_end(ap);
    if (!ctx)
        return -1;
    char *full = NULL;
    if (asprintf(&full, "%s: %s", ctx, (*err)->message ? (*err)->message : "") >= 0) {
        free((*err)->message);
        (*err)->message = full;
    }
    free(ctx);
    return -1;
}

void berth_error_free(berth_error_t **err)
{
    if (!err || !*err)
        return;
    free((*err)->message);
    free(*err);
    *err = NULL;
}
