/* SPDX-License-Identifier: Apache-2.0 */
/* bench-meta-gc: the metadata mark & sweep on a synthetic data set (no
 * daemon): 1,000 images sharing 5,000 layer blobs (each image: its manifest,
 * its config and 5 layers from the shared pool) plus 500 unreferenced blobs,
 * in a temporary LMDB environment with fsync on, like the plugin.
 *   bench-meta-gc [IMAGES] [BLOBS] [RUNS]
 * Prints the write-lock hold time (whole transaction including commit and
 * fsync) and the mark/sweep split per run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "gc.h"

static int images = 1000, blobs = 5000;

static const char *dg(int i)
{
    static char b[4][80];
    static int s;
    char *o = b[s++ % 4];
    snprintf(o, 80, "sha256:%064x", i);
    return o;
}

static int build(meta_tx_t *tx, void *a, berth_error_t **err)
{
    tx->out = NULL;
    for (int i = 0; i < blobs + 500; i++)
        if (meta_content_commit(tx, "default", dg(100000000 + i), 1000, NULL, NULL, err) < 0)
            return -1;
    for (int im = 0; im < images; im++) {
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        msgpack_pack_map(&b.pk, 6);
        for (int l = 0; l < 5; l++) {
            char k[48];
            snprintf(k, sizeof(k), "berth.io/gc.ref.content.l.%d", l);
            berth_mp_kv_str(&b.pk, k, dg(100000000 + (im * 7 + l * 991) % blobs));
        }
        char cfg[80];
        snprintf(cfg, sizeof(cfg), "%s", dg(200000000 + im));
        berth_mp_kv_str(&b.pk, "berth.io/gc.ref.content.config", cfg);
        msgpack_zone *z = msgpack_zone_new(4096);
        msgpack_object labels, img;
        size_t off = 0;
        msgpack_unpack(b.buf.data, b.buf.size, &off, z, &labels);
        int rc = meta_content_commit(tx, "default", cfg, 300, NULL, NULL, err);
        if (rc == 0)
            rc = meta_content_commit(tx, "default", dg(300000000 + im), 500, &labels, NULL, err);
        berth_mpbuf_t ib;
        berth_mpbuf_init(&ib);
        msgpack_pack_map(&ib.pk, 2);
        char name[64];
        snprintf(name, sizeof(name), "registry.local/app%d:latest", im);
        berth_mp_kv_str(&ib.pk, "name", name);
        berth_mp_pack_str(&ib.pk, "target");
        msgpack_pack_map(&ib.pk, 3);
        berth_mp_kv_str(&ib.pk, "media_type", "application/vnd.oci.image.manifest.v1+json");
        berth_mp_kv_str(&ib.pk, "digest", dg(300000000 + im));
        berth_mp_kv_u64(&ib.pk, "size", 500);
        off = 0;
        msgpack_unpack(ib.buf.data, ib.buf.size, &off, z, &img);
        if (rc == 0)
            rc = meta_image_create(tx, "default", &img, err);
        msgpack_zone_free(z);
        berth_mpbuf_destroy(&b);
        berth_mpbuf_destroy(&ib);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static meta_gc_stats_t st;

static int collect(meta_tx_t *tx, void *a, berth_error_t **err)
{
    return meta_gc_collect(tx, 0, &st, err);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        images = atoi(argv[1]);
    if (argc > 2)
        blobs = atoi(argv[2]);
    int runs = argc > 3 ? atoi(argv[3]) : 3;
    char dir[] = "/tmp/bench-meta-gc-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char path[128];
    snprintf(path, sizeof(path), "%s/meta.lmdb", dir);
    meta_db_t *db;
    berth_error_t *err = NULL;
    if (meta_db_open(path, NULL, &db, &err) < 0) {
        fprintf(stderr, "%s\n", err->message);
        return 1;
    }
    if (meta_db_write(db, build, NULL, NULL, NULL, &err) < 0) {
        fprintf(stderr, "build: %s\n", err->message);
        return 1;
    }
    printf("data set: %d images, %d shared blobs (+500 unreferenced, %d manifests, %d configs)\n",
           images, blobs, images, images);
    for (int r = 0; r < runs; r++) {
        meta_wop_t op;
        meta_wop_init(&op, collect, NULL);
        uint64_t held = 0, t0 = berth_mono_ms();
        meta_wop_t *ops[1] = {&op};
        meta_db_write_batch(db, ops, 1, &held, NULL);
        uint64_t total = berth_mono_ms() - t0;
        if (op.err) {
            fprintf(stderr, "collect: %s\n", op.err->message);
            return 1;
        }
        printf("run %d: lock_held_ms=%llu total_ms=%llu mark_ms=%.1f sweep_ms=%.1f nodes=%zu "
               "swept=%zu tombstoned=%zu\n",
               r + 1, (unsigned long long)held, (unsigned long long)total, st.mark_us / 1000.0,
               st.sweep_us / 1000.0, st.nodes, st.content_removed, st.blobs_tombstoned);
        meta_wop_destroy(&op);
    }
    meta_db_close(db);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
