/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: image references as users and archives give them
 * (plugins/transfer/reference.c) and platform strings (platform.c). Besides
 * memory errors it checks that the canonical name of a parsed reference
 * parses again to the same reference (names are stored and re-parsed). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/transfer/internal.h"

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void fail(const char *what, const char *in, const char *canon)
{
    fprintf(stderr, "fuzz_reference: %s\n  input:     \"%s\"\n  canonical: \"%s\"\n", what, in,
            canon ? canon : "(null)");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;

    xfer_digest_valid_n((const char *)data, size);

    xfer_ref_t r;
    berth_error_t *err = NULL;
    if (xfer_ref_parse(s, &r, &err) == 0) {
        if (!r.domain || !r.path || (!r.tag && !r.digest))
            fail("parsed reference lacks domain, path or tag/digest", s, NULL);
        if (r.digest && !xfer_digest_valid(r.digest))
            fail("parsed digest is not valid", s, r.digest);
        char *name = xfer_ref_name(&r);
        char *repo = xfer_ref_repo(&r);
        xfer_ref_t r2;
        berth_error_t *err2 = NULL;
        if (xfer_ref_parse(name, &r2, &err2) < 0) {
            fprintf(stderr, "reparse error: %s\n", err2->message);
            fail("canonical name does not parse", s, name);
        }
        if (!same(r.domain, r2.domain) || !same(r.path, r2.path) || !same(r.tag, r2.tag) ||
            !same(r.digest, r2.digest))
            fail("canonical name parses to a different reference", s, name);
        char *name2 = xfer_ref_name(&r2);
        if (strcmp(name, name2) != 0)
            fail("canonical name is not stable", s, name2);
        if (strncmp(name, repo, strlen(repo)) != 0)
            fail("repo is not a prefix of the name", s, repo);
        free(name2);
        xfer_ref_clear(&r2);
        free(name);
        free(repo);
        xfer_ref_clear(&r);
    } else {
        if (!err || !err->message || err->code != BERTH_E_INVALID_ARGUMENT)
            fail("parse failed without an invalid_argument error", s, NULL);
        if (r.domain || r.path || r.tag || r.digest)
            fail("failed parse left fields set", s, NULL);
    }
    berth_error_free(&err);

    xfer_platform_t p;
    if (xfer_platform_parse(s, &p, &err) == 0) {
        char buf[128];
        xfer_platform_format(&p, buf, sizeof(buf));
        xfer_platform_t host;
        xfer_platform_host(&host);
        xfer_platform_score(&host, &p);
        xfer_platform_score(&p, &host);
    }
    berth_error_free(&err);
    free(s);
    return 0;
}
