/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: labels and the small validators of berth-metadata
 * (plugins/metadata/db.c), as a local client sends them in create/update
 * requests. The input is one msgpack object: either a labels map, or an
 * array [labels, fields]. Checks: labels that pass meta_validate_labels, once
 * merged into a stored set by meta_pack_labels_update (the update path of
 * every record kind), still validate, and never hold a key twice. Label
 * values also go through the RFC3339 parser (lease and gc expiry labels:
 * only days that exist, a UTC time formats back to itself) and keys through
 * the name validators. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/metadata/internal.h" /* meta_pack_labels_update (db.c) */
#include "berth/mp.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_labels: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static msgpack_zone *old_zone;
static msgpack_object old_labels;
static berth_mpbuf_t old_buf;

static void build_old(void)
{
    berth_mpbuf_init(&old_buf);
    msgpack_pack_map(&old_buf.pk, 4);
    berth_mp_kv_str(&old_buf.pk, "berth.io/gc.root", "2024-01-01T00:00:00Z");
    berth_mp_kv_str(&old_buf.pk, "berth.io/gc.expire", "2030-01-01T00:00:00.5+02:00");
    berth_mp_kv_str(&old_buf.pk, "k", "v");
    berth_mp_kv_str(&old_buf.pk, "containerd.io/gc.ref.content.l.0",
                    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    berth_error_t *err = NULL;
    CHECK(berth_mp_unpack(old_buf.buf.data, old_buf.buf.size, NULL, &old_zone, &old_labels, &err) ==
          0);
}

static void rfc3339(const char *s, size_t n)
{
    int64_t t = 0;
    if (meta_parse_rfc3339(s, n, &t) == 0) {
        char buf[32];
        meta_format_rfc3339(t, buf);
        /* A time before 1970 is negative, one after it positive (offsets
         * move it by less than a day): an overflow that wraps a year-1000
         * expiry into year 2167 shows here even without UBSan. */
        int year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
        if ((year < 1969 && t >= 0) || (year > 1970 && t <= 0)) {
            fprintf(stderr, "fuzz_labels: \"%.*s\" parsed to %lld ns since 1970 (%s)\n", (int)n, s,
                    (long long)t, buf);
            abort();
        }
        /* A numeric offset is a real zone: hour 00-23, minute 00-59. */
        if (s[n - 1] != 'Z' && s[n - 1] != 'z') {
            CHECK(n >= 25 && (s[n - 6] == '+' || s[n - 6] == '-') && s[n - 3] == ':');
            CHECK((s[n - 5] - '0') * 10 + (s[n - 4] - '0') <= 23 && s[n - 2] <= '5');
        }
        /* A UTC time without fraction formats back to itself: a day that does
         * not exist (Feb 31) would come back as another date. */
        if (n == 20 && (s[19] == 'Z' || s[19] == 'z') && year >= 1700 && year <= 2200 &&
            s[17] < '6') {
            CHECK(memcmp(buf, s, 10) == 0 && memcmp(buf + 11, s + 11, 8) == 0);
        }
    }
}

/* Accepted labels have pairwise different keys (checked directly up to 2048
 * of them; the validator sorts above 32). */
static void no_duplicates(const msgpack_object *labels)
{
    if (labels->type != MSGPACK_OBJECT_MAP || labels->via.map.size > 2048)
        return;
    for (uint32_t i = 0; i < labels->via.map.size; i++)
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *a = &labels->via.map.ptr[i].key, *b = &labels->via.map.ptr[j].key;
            CHECK(a->via.str.size != b->via.str.size ||
                  memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) != 0);
        }
}

static void strings(const char *s, size_t n)
{
    if (n > 8192 || memchr(s, 0, n))
        return;
    char *c = strndup(s, n);
    berth_error_t *err = NULL;
    meta_validate_namespace(c, &err);
    berth_error_free(&err);
    meta_validate_name("container id", c, &err);
    berth_error_free(&err);
    meta_validate_name("image name", c, &err);
    berth_error_free(&err);
    meta_validate_digest(c, &err);
    berth_error_free(&err);
    free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!old_zone)
        build_old();
    rfc3339((const char *)data, size);
    strings((const char *)data, size);

    msgpack_zone *z = NULL;
    msgpack_object o;
    berth_error_t *err = NULL;
    if (berth_mp_unpack(data, size, NULL, &z, &o, &err) < 0) {
        berth_error_free(&err);
        return 0;
    }
    const msgpack_object *labels = &o, *fields = NULL;
    if (o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size >= 1) {
        labels = &o.via.array.ptr[0];
        if (o.via.array.size >= 2)
            fields = &o.via.array.ptr[1];
    }

    if (meta_validate_labels(labels, &err) == 0) {
        no_duplicates(labels);
        if (labels->type == MSGPACK_OBJECT_MAP)
            for (uint32_t i = 0; i < labels->via.map.size; i++) {
                const msgpack_object *k = &labels->via.map.ptr[i].key;
                const msgpack_object *v = &labels->via.map.ptr[i].val;
                rfc3339(v->via.str.ptr, v->via.str.size);
                strings(k->via.str.ptr, k->via.str.size);
            }
        meta_label_gc(labels, "berth.io/gc.expire");
        meta_label_gc(labels, "berth.io/gc.root");
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        meta_pack_labels(&b.pk, labels);
        berth_mpbuf_destroy(&b);

        if (meta_fields_validate(fields, &err) == 0) {
            const char *prefixes[] = {"labels", "annotations"};
            for (int p = 0; p < 2; p++) {
                berth_mpbuf_init(&b);
                bool touched = false;
                if (meta_pack_labels_update(&b.pk, &old_labels, labels, fields, prefixes[p],
                                            &touched, &err) == 0) {
                    msgpack_zone *rz = NULL;
                    msgpack_object res;
                    berth_error_t *e2 = NULL;
                    CHECK(berth_mp_unpack(b.buf.data, b.buf.size, NULL, &rz, &res, &e2) == 0);
                    CHECK(res.type == MSGPACK_OBJECT_MAP);
                    if (meta_validate_labels(&res, &e2) < 0) {
                        fprintf(stderr, "fuzz_labels: merged labels do not validate: %s\n",
                                e2->message);
                        abort();
                    }
                    msgpack_zone_free(rz);
                }
                berth_error_free(&err);
                berth_mpbuf_destroy(&b);
            }
        }
    }
    berth_error_free(&err);
    msgpack_zone_free(z);
    return 0;
}
