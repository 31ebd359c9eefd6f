/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: list filters as any local client sends them
 * (plugins/metadata/filter.c): `name==x`, `labels."k"~=/re/`, `,` and OR'd
 * strings. Input: up to 16 filter strings separated by '\n'; if the input
 * holds a NUL byte, what follows it is a msgpack record to match as well.
 * Every parsed filter is matched against a few stored-record shapes (image,
 * container, odd types) and the fuzzed record. The strings also go through
 * the msgpack entry point (meta_filter_parse_obj) the handlers use; both
 * must agree on success. Parsing and matching one input must take under
 * half a second of CPU: regexes that glibc's regcomp/regexec (used before
 * metadata/re.c) took seconds on (`a+++...`, `a??++++++++`, and
 * `(a|b)*a(a|b){30}c` on a long value: crashes/ and corpus/regex-linear)
 * fail here in `make test` if such a matcher comes back. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../plugins/metadata/filter.h"
#include "berth/mp.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_filter: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_STRS 16

static msgpack_zone *rec_zone;
static msgpack_object records[3];
static berth_mpbuf_t rec_buf;

static void build_records(void)
{
    berth_mpbuf_t *b = &rec_buf;
    berth_mpbuf_init(b);
    msgpack_packer *pk = &b->pk;
    /* An image. */
    msgpack_pack_map(pk, 5);
    berth_mp_kv_str(pk, "name", "docker.io/library/busybox:latest");
    berth_mp_pack_str(pk, "target");
    msgpack_pack_map(pk, 4);
    berth_mp_kv_str(pk, "media_type", "application/vnd.oci.image.index.v1+json");
    berth_mp_kv_str(pk, "digest",
                    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    berth_mp_kv_u64(pk, "size", 1234);
    berth_mp_pack_str(pk, "annotations");
    msgpack_pack_map(pk, 1);
    berth_mp_kv_str(pk, "org.opencontainers.image.ref.name", "latest");
    berth_mp_pack_str(pk, "labels");
    msgpack_pack_map(pk, 3);
    berth_mp_kv_str(pk, "berth.io/gc.root", "2024-01-01T00:00:00Z");
    berth_mp_kv_str(pk, "a.b", "");
    berth_mp_kv_str(pk, "x", "y,z");
    berth_mp_kv_i64(pk, "created_at", 1700000000000000000LL);
    berth_mp_kv_i64(pk, "updated_at", -5);
    /* A container. */
    msgpack_pack_map(pk, 5);
    berth_mp_kv_str(pk, "id", "c1");
    berth_mp_kv_str(pk, "image", "docker.io/library/busybox:latest");
    berth_mp_pack_str(pk, "runtime");
    msgpack_pack_map(pk, 1);
    berth_mp_kv_str(pk, "name", "io.containerd.runc.v2");
    berth_mp_kv_str(pk, "snapshot_key", "c1");
    berth_mp_pack_str(pk, "labels");
    msgpack_pack_map(pk, 0);
    /* Odd value types. */
    msgpack_pack_map(pk, 6);
    berth_mp_pack_str(pk, "bin");
    berth_mp_pack_bin(pk, "\0\1\2", 3);
    berth_mp_pack_str(pk, "arr");
    msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
    berth_mp_pack_str(pk, "neg");
    msgpack_pack_int64(pk, INT64_MIN);
    berth_mp_pack_str(pk, "big");
    msgpack_pack_uint64(pk, UINT64_MAX);
    berth_mp_pack_str(pk, "t");
    msgpack_pack_true(pk);
    berth_mp_pack_str(pk, "nil");
    msgpack_pack_nil(pk);

    rec_zone = msgpack_zone_new(4096);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        msgpack_unpack_return r =
            msgpack_unpack(b->buf.data, b->buf.size, &off, rec_zone, &records[i]);
        CHECK(r == MSGPACK_UNPACK_SUCCESS || r == MSGPACK_UNPACK_EXTRA_BYTES);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rec_zone)
        build_records();
    if (size > 16384)
        return 0;
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;

    /* Filter strings. */
    char *text = malloc(tlen + 1);
    memcpy(text, data, tlen);
    text[tlen] = 0;
    const char *strs[MAX_STRS];
    size_t n = 0;
    for (char *p = text; n < MAX_STRS;) {
        strs[n++] = p;
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        p = nl + 1;
    }

    /* The fuzzed record, if any. */
    msgpack_zone *z = NULL;
    msgpack_object rec;
    bool have_rec = false;
    if (nul) {
        berth_error_t *e = NULL;
        have_rec = berth_mp_unpack(nul + 1, size - tlen - 1, NULL, &z, &rec, &e) == 0;
        berth_error_free(&e);
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    meta_filter_t *f = NULL;
    berth_error_t *err = NULL;
    int rc = meta_filter_parse(strs, n, &f, &err);
    if (rc == 0) {
        for (int i = 0; i < 3; i++)
            meta_filter_match(f, &records[i]);
        if (have_rec)
            meta_filter_match(f, &rec);
        meta_filter_free(f);
    } else {
        CHECK(err && err->code == BERTH_E_INVALID_ARGUMENT && !f);
    }
    berth_error_free(&err);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    double cpu = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (cpu > 0.5) {
        fprintf(stderr, "fuzz_filter: parsing and matching took %.1f s of CPU\n", cpu);
        abort();
    }

    /* Same strings through the msgpack entry point. */
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_array(&b.pk, n);
    for (size_t i = 0; i < n; i++)
        berth_mp_pack_str(&b.pk, strs[i]);
    msgpack_zone *az = NULL;
    msgpack_object arr;
    berth_error_t *e2 = NULL;
    CHECK(berth_mp_unpack(b.buf.data, b.buf.size, NULL, &az, &arr, &e2) == 0);
    meta_filter_t *f2 = NULL;
    int rc2 = meta_filter_parse_obj(&arr, &f2, &e2);
    if (rc2 == 0) {
        for (int i = 0; i < 3; i++)
            meta_filter_match(f2, &records[i]);
        meta_filter_free(f2);
    }
    /* Empty strings are dropped by the msgpack entry point only; otherwise
     * both accept the same filters (strings over 4096 bytes aside). */
    bool any_empty = false, any_long = false;
    for (size_t i = 0; i < n; i++) {
        any_empty |= strs[i][0] == 0;
        any_long |= strlen(strs[i]) > 4096;
    }
    if (!any_empty && !any_long)
        CHECK((rc == 0) == (rc2 == 0));
    berth_error_free(&e2);
    msgpack_zone_free(az);
    berth_mpbuf_destroy(&b);
    if (z)
        msgpack_zone_free(z);
    free(text);
    return 0;
}
