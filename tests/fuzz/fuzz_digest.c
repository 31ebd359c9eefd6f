/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: content digests, checked by three plugins with three
 * implementations — content's content_digest_parse (store.c, which turns a
 * digest into a blob path), transfer's xfer_digest_valid (reference.c) and
 * metadata's meta_validate_digest (db.c). A digest one accepts and another
 * refuses is a bug (e.g. metadata records what content cannot store), so they
 * must agree on every input; content's hex output must be the digest's hex
 * part. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/content/store.h"
#include "../../plugins/metadata/db.h"
#include "../../plugins/transfer/internal.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_digest: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    bool has_nul = memchr(data, 0, size) != NULL;

    char hex[65];
    memset(hex, 'X', sizeof(hex));
    berth_error_t *err = NULL;
    bool c_ok = content_digest_parse(s, hex, &err) == 0;
    if (c_ok)
        CHECK(strlen(hex) == 64 && strcmp(hex, s + 7) == 0);
    else
        CHECK(err && err->code == BERTH_E_INVALID_ARGUMENT);
    berth_error_free(&err);

    bool x_ok = xfer_digest_valid(s);
    bool m_ok = meta_validate_digest(s, &err) == 0;
    berth_error_free(&err);
    if (c_ok != x_ok || c_ok != m_ok) {
        fprintf(stderr,
                "fuzz_digest: implementations disagree on \"%s\": content %d, transfer %d, "
                "metadata %d\n",
                s, c_ok, x_ok, m_ok);
        abort();
    }
    /* The length-bounded variant on the raw bytes agrees when there is no NUL. */
    if (!has_nul)
        CHECK(xfer_digest_valid_n((const char *)data, size) == x_ok);

    free(s);
    return 0;
}
