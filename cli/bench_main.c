/* SPDX-License-Identifier: Apache-2.0 */
/* berth-bench: RPC latency and throughput against a running berthd, through
 * the same client library as the CLI.
 *   berth-bench [-a SOCK] version N                 N sequential round trips
 *   berth-bench [-a SOCK] connect N                 N x (connect, version, close)
 *   berth-bench [-a SOCK] pipeline METHOD N DEPTH   N pipelined calls, DEPTH in flight */
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

static void usage(void)
{
    fputs("usage: berth-bench [-a SOCK] version N\n"
          "       berth-bench [-a SOCK] connect N\n"
          "       berth-bench [-a SOCK] pipeline METHOD N DEPTH\n",
          stderr);
    exit(2);
}

static size_t parse_n(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || v == 0)
        usage();
    return (size_t)v;
}

static void die_err(berth_error_t *err)
{
    fprintf(stderr, "berth-bench: %s\n", err ? err->message : "error");
    exit(1);
}

static void report(const char *what, uint64_t *lat, size_t n)
{
    qsort(lat, n, sizeof(*lat), cmp_u64);
    long double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += lat[i];
    size_t p99 = (n * 99 + 99) / 100;
    if (p99 > 0)
        p99--;
    printf("%s: n=%zu median_us=%.1f p99_us=%.1f min_us=%.1f mean_us=%.1f\n", what, n,
           lat[n / 2] / 1000.0, lat[p99] / 1000.0, lat[0] / 1000.0, (double)(sum / n) / 1000.0);
}

int main(int argc, char **argv)
{
    const char *addr = getenv("BERTH_ADDRESS");
    if (!addr || !*addr)
        addr = "/run/berth/berth.sock";
    int i = 1;
    if (i + 1 < argc && (strcmp(argv[i], "-a") == 0 || strcmp(argv[i], "--address") == 0)) {
        addr = argv[i + 1];
        i += 2;
    }
    if (i >= argc)
        usage();
    const char *mode = argv[i++];
    berth_error_t *err = NULL;

    if (strcmp(mode, "version") == 0 || strcmp(mode, "connect") == 0) {
        if (i + 1 != argc)
            usage();
        size_t n = parse_n(argv[i]);
        bool reconnect = strcmp(mode, "connect") == 0;
        uint64_t *lat = calloc(n, sizeof(*lat));
        berth_client_t *c = NULL;
        if (!lat)
            return 1;
        if (!reconnect) {
            c = berth_client_connect(addr, 0, &err);
            if (!c)
                die_err(err);
            for (int w = 0; w < 20; w++) /* warm up */
                if (berth_client_call(c, "version", NULL, 0, 0, NULL, NULL, NULL, NULL, &err) < 0)
                    die_err(err);
        }
        for (size_t k = 0; k < n; k++) {
            uint64_t t0 = now_ns();
            if (reconnect) {
                c = berth_client_connect(addr, 0, &err);
                if (!c)
                    die_err(err);
            }
            berth_result_t r;
            if (berth_client_call(c, "version", NULL, 0, 0, NULL, NULL, NULL, &r, &err) < 0)
                die_err(err);
            if (reconnect) {
                berth_client_free(c);
                c = NULL;
            }
            lat[k] = now_ns() - t0;
        }
        berth_client_free(c);
        report(reconnect ? "connect+version" : "version", lat, n);
        free(lat);
        return 0;
    }
    if (strcmp(mode, "pipeline") == 0) {
        if (i + 3 != argc)
            usage();
        const char *method = argv[i];
        size_t n = parse_n(argv[i + 1]);
        size_t depth = parse_n(argv[i + 2]);
        berth_client_t *c = berth_client_connect(addr, 0, &err);
        if (!c)
            die_err(err);
        /* Warm up, then measure. */
        if (berth_client_pipeline(c, method, NULL, 0, depth, depth, &err) < 0)
            die_err(err);
        uint64_t t0 = now_ns();
        int failed = berth_client_pipeline(c, method, NULL, 0, n, depth, &err);
        uint64_t dt = now_ns() - t0;
        if (failed < 0)
            die_err(err);
        printf("pipeline %s: n=%zu depth=%zu failed=%d seconds=%.3f rate_per_s=%.0f\n", method, n,
               depth, failed, dt / 1e9, n / (dt / 1e9));
        berth_client_free(c);
        return failed ? 1 : 0;
    }
    usage();
}
