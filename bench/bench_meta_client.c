/* SPDX-License-Identifier: Apache-2.0 */
/* bench-meta-client: images.create / images.list round trips against a
 * running berthd, without forking (one connection, libberth), for
 * bench/bench_metadata.sh.
 *   bench-meta-client SOCK create N [NAMESPACE]   N images.create, distinct names
 *   bench-meta-client SOCK get N [NAMESPACE]      N images.get of distinct images
 *   bench-meta-client SOCK filter N [NAMESPACE]   N images.list name==<one image> (a scan)
 *   bench-meta-client SOCK list N [NAMESPACE]     N full images.list
 * An optional 5th argument offsets the image numbers (parallel runs).
 * Prints "<op> n=N seconds=S rate=R/s median_us=.. p99_us=..". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "berth/client.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fputs("usage: bench-meta-client SOCK create|get|filter|list N [NAMESPACE]\n", stderr);
        return 2;
    }
    const char *sock = argv[1], *op = argv[2], *ns = argc > 4 ? argv[4] : "bench";
    size_t n = strtoull(argv[3], NULL, 10);
    size_t base = argc > 5 ? strtoull(argv[5], NULL, 10) : 0;
    berth_error_t *err = NULL;
    berth_client_t *c = berth_client_connect(sock, 0, &err);
    if (!c) {
        fprintf(stderr, "bench-meta-client: %s\n", err->message);
        return 1;
    }
    uint64_t *lat = calloc(n ? n : 1, sizeof(uint64_t));
    uint64_t t0 = now_ns();
    size_t items = 0;
    for (size_t i = 0; i < n; i++) {
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        char name[96];
        snprintf(name, sizeof(name), "registry.bench.local/app/img-%zu:latest", base + i);
        const char *method = "images.list";
        if (strcmp(op, "create") == 0) {
            method = "images.create";
            msgpack_pack_map(&b.pk, 2);
            berth_mp_kv_str(&b.pk, "namespace", ns);
            berth_mp_pack_str(&b.pk, "image");
            msgpack_pack_map(&b.pk, 3);
            berth_mp_kv_str(&b.pk, "name", name);
            berth_mp_pack_str(&b.pk, "target");
            msgpack_pack_map(&b.pk, 3);
            berth_mp_kv_str(&b.pk, "media_type", "application/vnd.oci.image.manifest.v1+json");
            char dg[80];
            snprintf(dg, sizeof(dg), "sha256:%064zx", base + i + 1);
            berth_mp_kv_str(&b.pk, "digest", dg);
            berth_mp_kv_u64(&b.pk, "size", 1234);
            berth_mp_pack_str(&b.pk, "labels");
            msgpack_pack_map(&b.pk, 1);
            berth_mp_kv_str(&b.pk, "bench", "1");
        } else if (strcmp(op, "get") == 0) {
            method = "images.get";
            msgpack_pack_map(&b.pk, 2);
            berth_mp_kv_str(&b.pk, "namespace", ns);
            berth_mp_kv_str(&b.pk, "name", name);
        } else if (strcmp(op, "filter") == 0) {
            msgpack_pack_map(&b.pk, 2);
            berth_mp_kv_str(&b.pk, "namespace", ns);
            berth_mp_pack_str(&b.pk, "filters");
            msgpack_pack_array(&b.pk, 1);
            char f[128];
            snprintf(f, sizeof(f), "name==%s", name);
            berth_mp_pack_str(&b.pk, f);
        } else if (strcmp(op, "list") == 0) {
            msgpack_pack_map(&b.pk, 1);
            berth_mp_kv_str(&b.pk, "namespace", ns);
        } else {
            fprintf(stderr, "bench-meta-client: unknown op %s\n", op);
            return 2;
        }
        uint64_t s = now_ns();
        berth_result_t res;
        if (berth_client_call(c, method, b.buf.data, b.buf.size, 0, NULL, NULL, NULL, &res, &err) <
            0) {
            fprintf(stderr, "bench-meta-client: %s #%zu: %s\n", method, i, err->message);
            return 1;
        }
        lat[i] = now_ns() - s;
        const msgpack_object *imgs = berth_mp_get(res.result, "images");
        if (imgs && imgs->type == MSGPACK_OBJECT_ARRAY)
            items += imgs->via.array.size;
        berth_mpbuf_destroy(&b);
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    qsort(lat, n, sizeof(*lat), cmp_u64);
    printf("%s n=%zu seconds=%.3f rate=%.0f/s median_us=%.1f p99_us=%.1f items=%zu\n", op, n, secs,
           n / secs, lat[n / 2] / 1e3, lat[n ? (n * 99) / 100 : 0] / 1e3, items);
    berth_client_free(c);
    free(lat);
    return 0;
}
