/* SPDX-License-Identifier: Apache-2.0 */
/* SHA-256 (FIPS 180-4) without OpenSSL: a portable implementation and, where
 * the CPU has the SHA extensions (x86-64 SHA-NI), one that uses them, chosen
 * once at run time. berth's plugins that only need digests (content,
 * runtime-runc) use this instead of libcrypto, whose relocations and
 * initialisation alone cost about 1.4 MiB of resident memory per process. */
#ifndef BERTH_SHA256_H
#define BERTH_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define BERTH_SHA256_LEN 32

typedef struct berth_sha256 {
    uint32_t h[8];
    uint64_t bytes; /* total length so far */
    uint8_t buf[64];
    size_t nbuf; /* bytes held in buf */
} berth_sha256_t;

void berth_sha256_init(berth_sha256_t *c);
void berth_sha256_update(berth_sha256_t *c, const void *data, size_t n);
/* Writes the digest; `c` is left finished (init it again to reuse it). The
 * context is a plain value: copy it to finish a digest of a prefix while
 * going on with the stream. */
void berth_sha256_final(berth_sha256_t *c, uint8_t out[BERTH_SHA256_LEN]);
void berth_sha256(const void *data, size_t n, uint8_t out[BERTH_SHA256_LEN]);
/* "sha256:" + 64 lowercase hex digits + NUL: out must hold 72 bytes. */
void berth_sha256_digest_string(const void *data, size_t n, char out[72]);
/* "sha-ni" or "portable": the implementation in use (for logs and tests). */
const char *berth_sha256_impl(void);
/* Tests: force the portable implementation (true) or the best one (false). */
void berth_sha256_force_portable(int on);

#endif
