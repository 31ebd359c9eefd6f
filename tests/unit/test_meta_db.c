/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of berth-metadata's LMDB store (plugins/metadata/db.c,
 * records.c): opening and integrity checks, schema, map growth, batches and
 * replays, and every record kind except snapshots (test_meta_snapshots.c). */
#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>

#include "test_meta_util.h"

typedef struct {
    const char *ns, *name, *s2, *s3;
    const msgpack_object *o1, *o2;
    int64_t i;
    uint64_t u;
} A;

#define WRAP(fname, call)                                                                          \
    static int fname(meta_tx_t *tx, void *a_, berth_error_t **err)                                 \
    {                                                                                              \
        A *a = a_;                                                                                 \
        (void)a;                                                                                   \
        return call;                                                                               \
    }

WRAP(f_ns_create, meta_ns_create(tx, a->name, a->o1, err))
WRAP(f_ns_get, meta_ns_get(tx, a->name, err))
WRAP(f_ns_list, meta_ns_list(tx, err))
WRAP(f_ns_update, meta_ns_update(tx, a->name, a->o1, a->o2, err))
WRAP(f_ns_delete, meta_ns_delete(tx, a->name, err))
WRAP(f_content_commit, meta_content_commit(tx, a->ns, a->name, a->u, a->o1, a->s2, err))
WRAP(f_content_info, meta_content_info(tx, a->ns, a->name, err))
WRAP(f_content_list, meta_content_list(tx, a->ns, a->o1, err))
WRAP(f_content_update, meta_content_update(tx, a->ns, a->name, a->o1, a->o2, err))
WRAP(f_content_delete, meta_content_delete(tx, a->ns, a->name, err))
WRAP(f_content_exists, meta_content_exists(tx, a->ns, a->name, err))
WRAP(f_ingest_begin, meta_ingest_begin(tx, a->ns, a->name, a->s2, err))
WRAP(f_ingest_end, meta_ingest_end(tx, a->ns, a->name, err))
WRAP(f_ingest_get, meta_ingest_get(tx, a->ns, a->name, err))
WRAP(f_ingest_list, meta_ingest_list(tx, a->ns, err))
WRAP(f_image_create, meta_image_create(tx, a->ns, a->o1, err))
WRAP(f_image_get, meta_image_get(tx, a->ns, a->name, err))
WRAP(f_image_list, meta_image_list(tx, a->ns, a->o1, err))
WRAP(f_image_update, meta_image_update(tx, a->ns, a->o1, a->o2, err))
WRAP(f_image_delete, meta_image_delete(tx, a->ns, a->name, err))
WRAP(f_ctr_create, meta_container_create(tx, a->ns, a->o1, err))
WRAP(f_ctr_get, meta_container_get(tx, a->ns, a->name, err))
WRAP(f_ctr_list, meta_container_list(tx, a->ns, a->o1, err))
WRAP(f_ctr_update, meta_container_update(tx, a->ns, a->o1, a->o2, err))
WRAP(f_ctr_delete, meta_container_delete(tx, a->ns, a->name, err))
WRAP(f_lease_create, meta_lease_create(tx, a->ns, a->name, a->o1, a->i, err))
WRAP(f_lease_list, meta_lease_list(tx, a->ns, a->o1, err))
WRAP(f_lease_delete, meta_lease_delete(tx, a->ns, a->name, err))
WRAP(f_lease_add, meta_lease_add_resource(tx, a->ns, a->name, a->s2, a->s3, err))
WRAP(f_lease_del_res, meta_lease_delete_resource(tx, a->ns, a->name, a->s2, a->s3, err))
WRAP(f_lease_res, meta_lease_list_resources(tx, a->ns, a->name, err))
WRAP(f_lease_check, meta_lease_check(tx, a->ns, a->name, a->s2, a->s3, err))

static int f_prune(meta_tx_t *tx, void *a, berth_error_t **err)
{
    *(size_t *)a = meta_replay_prune(tx, tx->now + 1);
    return 0;
}

static int f_tomb66(meta_tx_t *tx, void *a, berth_error_t **err)
{
    return meta_tomb_add(tx, "content", tdigest(66), err);
}

/* ---- open, integrity, schema -------------------------------------------------- */

static void test_open_fresh_has_default(void **state)
{
    tenv_t *t = *state;
    T_OK(tread(t, f_ns_list, &(A){0}));
    assert_int_equal(tlen(&t->res, "namespaces"), 1);
    assert_str(tstr(&t->res, "namespaces.0.name"), "default");
}

static void test_open_twice_is_refused(void **state)
{
    tenv_t *t = *state;
    meta_db_t *db2 = NULL;
    berth_error_t *err = NULL;
    assert_int_equal(meta_db_open(t->path, NULL, &db2, &err), -1);
    assert_non_null(strstr(err->message, "in use by another berth-metadata"));
    berth_error_free(&err);
}

static void reopen(tenv_t *t)
{
    meta_db_close(t->db);
    t->db = NULL;
    berth_error_t *err = NULL;
    if (meta_db_open(t->path, NULL, &t->db, &err) < 0)
        fail_msg("reopen: %s", err->message);
}

static void test_reopen_keeps_records(void **state)
{
    tenv_t *t = *state;
    T_OK(twrite(t, f_ns_create, &(A){.name = "keep", .o1 = tlabels(t, 1, "a", "b")}));
    reopen(t);
    T_OK(tread(t, f_ns_get, &(A){.name = "keep"}));
    assert_str(tstr(&t->res, "namespace.labels.a"), "b");
}

static void expect_open_error(tenv_t *t, const char *substr)
{
    meta_db_t *db = NULL;
    berth_error_t *err = NULL;
    assert_int_equal(meta_db_open(t->path, NULL, &db, &err), -1);
    if (!strstr(err->message, substr))
        fail_msg("open error \"%s\" lacks \"%s\"", err->message, substr);
    /* Never recreated silently: the file is still there, unchanged size. */
    struct stat sb;
    assert_int_equal(stat(t->path, &sb), 0);
    berth_error_free(&err);
}

static void test_truncated_file_refused(void **state)
{
    tenv_t *t = *state;
    for (int i = 0; i < 200; i++) {
        char name[32];
        snprintf(name, sizeof(name), "ns%d", i);
        T_OK(twrite(
            t, f_ns_create,
            &(A){.name = name,
                 .o1 = tlabels(
                     t, 1, "pad",
                     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")}));
    }
    meta_db_close(t->db);
    t->db = NULL;
    struct stat sb;
    assert_int_equal(stat(t->path, &sb), 0);
    assert_true(sb.st_size > 3 * 4096);
    assert_int_equal(truncate(t->path, sb.st_size / 2), 0);
    expect_open_error(t, "truncated");
    assert_int_equal(truncate(t->path, 100), 0);
    expect_open_error(t, "truncated");
    assert_int_equal(truncate(t->path, 0), 0);
    expect_open_error(t, "truncated");
}

static void test_garbage_file_refused(void **state)
{
    tenv_t *t = *state;
    meta_db_close(t->db);
    t->db = NULL;
    int fd = open(t->path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    char junk[16384];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 7 + 3);
    assert_int_equal(write(fd, junk, sizeof(junk)), (int)sizeof(junk));
    close(fd);
    expect_open_error(t, "corrupted");
    expect_open_error(t, "refuses to start");
}

static void set_schema(tenv_t *t, uint64_t v)
{
    meta_db_close(t->db);
    t->db = NULL;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 32);
    assert_int_equal(mdb_env_open(env, t->path, MDB_NOSUBDIR, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val k = {.mv_size = 14, .mv_data = "schema_version"}, val = {.mv_size = 8, .mv_data = &v};
    assert_int_equal(mdb_put(txn, dbi, &k, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void test_newer_schema_refused(void **state)
{
    tenv_t *t = *state;
    set_schema(t, META_SCHEMA_VERSION + 1);
    expect_open_error(t, "newer than this berth-metadata");
    set_schema(t, META_SCHEMA_VERSION);
    reopen(t);
}

static void test_map_grows(void **state)
{
    tenv_t *t = *state;
    meta_db_close(t->db);
    t->db = NULL;
    unlink(t->path);
    char lock[160];
    snprintf(lock, sizeof(lock), "%s-lock", t->path);
    unlink(lock);
    berth_error_t *err = NULL;
    meta_db_opts_t o = {.map_size = 256 * 1024, .no_sync = true};
    assert_int_equal(meta_db_open(t->path, &o, &t->db, &err), 0);
    char big[3000];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    for (int i = 0; i < 400; i++) {
        char name[64];
        snprintf(name, sizeof(name), "img-%d", i);
        T_OK(twrite(
            t, f_image_create,
            &(A){.ns = "default", .o1 = timage(t, name, tdigest(i), tlabels(t, 1, "big", big))}));
    }
    assert_true(meta_db_growths(t->db) > 0);
    assert_true(meta_db_map_size(t->db) > 256 * 1024);
    T_OK(tread(t, f_image_list, &(A){.ns = "default"}));
    assert_int_equal(tlen(&t->res, "images"), 400);
    reopen(t);
    T_OK(tread(t, f_image_list, &(A){.ns = "default"}));
    assert_int_equal(tlen(&t->res, "images"), 400);
}

/* ---- batches and replays -------------------------------------------------------- */

static void test_batch_isolates_failures(void **state)
{
    tenv_t *t = *state;
    A a1 = {.name = "b1"}, a2 = {.name = "Bad Name"}, a3 = {.name = "b3"};
    meta_wop_t ops[3];
    meta_wop_init(&ops[0], f_ns_create, &a1);
    meta_wop_init(&ops[1], f_ns_create, &a2);
    meta_wop_init(&ops[2], f_ns_create, &a3);
    assert_int_equal(
        meta_db_write_batch(t->db, (meta_wop_t *[]){&ops[0], &ops[1], &ops[2]}, 3, NULL, NULL), 0);
    assert_null(ops[0].err);
    assert_non_null(ops[1].err);
    assert_int_equal(ops[1].err->code, BERTH_E_INVALID_ARGUMENT);
    assert_null(ops[2].err);
    assert_int_equal(ops[0].ev.n, 1);
    assert_str(ops[0].ev.v[0].topic, "/namespaces/create");
    for (int i = 0; i < 3; i++)
        meta_wop_destroy(&ops[i]);
    T_OK(tread(t, f_ns_get, &(A){.name = "b1"}));
    T_OK(tread(t, f_ns_get, &(A){.name = "b3"}));
}

static void test_replay_returns_recorded_result(void **state)
{
    tenv_t *t = *state;
    A a = {.ns = "default", .o1 = timage(t, "replayed", tdigest(1), NULL)};
    meta_wop_t op;
    meta_wop_init(&op, f_image_create, &a);
    op.replay_ns = "default";
    op.replay_method = "images.create";
    op.replay_id = "req-1";
    meta_db_write_batch(t->db, (meta_wop_t *[]){&op}, 1, NULL, NULL);
    assert_null(op.err);
    assert_false(op.replayed);
    berth_mpbuf_t first;
    berth_mpbuf_init(&first);
    msgpack_sbuffer_write(&first.buf, op.result.buf.data, op.result.buf.size);
    meta_wop_destroy(&op);

    /* The same request again: recorded result, not already_exists, no event. */
    meta_wop_init(&op, f_image_create, &a);
    op.replay_ns = "default";
    op.replay_method = "images.create";
    op.replay_id = "req-1";
    meta_db_write_batch(t->db, (meta_wop_t *[]){&op}, 1, NULL, NULL);
    assert_null(op.err);
    assert_true(op.replayed);
    assert_int_equal(op.ev.n, 0);
    assert_int_equal(op.result.buf.size, first.buf.size);
    assert_memory_equal(op.result.buf.data, first.buf.data, first.buf.size);
    meta_wop_destroy(&op);

    /* Another request id runs for real. */
    meta_wop_init(&op, f_image_create, &a);
    op.replay_ns = "default";
    op.replay_method = "images.create";
    op.replay_id = "req-2";
    meta_db_write_batch(t->db, (meta_wop_t *[]){&op}, 1, NULL, NULL);
    assert_non_null(op.err);
    assert_int_equal(op.err->code, BERTH_E_ALREADY_EXISTS);
    meta_wop_destroy(&op);
    berth_mpbuf_destroy(&first);

    /* Pruning drops old records. */
    meta_tx_t tx;
    assert_int_equal(meta_tx_read(t->db, &tx, NULL), 0);
    meta_tx_end(&tx);
    size_t pruned = 0;
    T_OK(twrite(t, f_prune, &pruned));
    assert_int_equal(pruned, 1);
}

/* ---- validation -------------------------------------------------------------- */

static void test_validation(void **state)
{
    (void)state;
    berth_error_t *err = NULL;
    const char *good[] = {"default", "a", "k8s.io", "a-b_c.d", "0", NULL};
    const char *bad[] = {"", "A", "-a", "a-", "a b", "a/b", ".a", "a.", NULL};
    for (int i = 0; good[i]; i++)
        assert_int_equal(meta_validate_namespace(good[i], NULL), 0);
    for (int i = 0; bad[i]; i++) {
        assert_int_equal(meta_validate_namespace(bad[i], &err), -1);
        berth_error_free(&err);
    }
    char n76[77], n77[78];
    memset(n76, 'a', 76);
    n76[76] = 0;
    memset(n77, 'a', 77);
    n77[77] = 0;
    assert_int_equal(meta_validate_namespace(n76, NULL), 0);
    assert_int_equal(meta_validate_namespace(n77, &err), -1);
    assert_non_null(strstr(err->message, "76"));
    berth_error_free(&err);

    assert_int_equal(meta_validate_digest(tdigest(5), NULL), 0);
    assert_int_equal(meta_validate_digest("sha512:abcd", &err), -1);
    assert_non_null(strstr(err->message, "only sha256"));
    berth_error_free(&err);
    assert_int_equal(meta_validate_digest("sha256:ABC", &err), -1);
    berth_error_free(&err);

    assert_int_equal(meta_validate_name("container id", "web-1.a_b", NULL), 0);
    assert_int_equal(meta_validate_name("container id", "web--1", &err), -1);
    berth_error_free(&err);
    assert_int_equal(meta_validate_name("lease id", "has space", &err), -1);
    berth_error_free(&err);
    assert_int_equal(meta_validate_name("image name", "docker.io/library/busybox:1.36", NULL), 0);
    assert_int_equal(meta_validate_name("image name", "bad\nname", &err), -1);
    berth_error_free(&err);

    int64_t ts;
    assert_int_equal(meta_parse_rfc3339("2026-11-29T16:11:20Z", 20, &ts), 0);
    assert_int_equal(ts, 1795968680LL * 1000000000LL);
    assert_int_equal(meta_parse_rfc3339("2026-11-29T17:11:20.5+01:00", 27, &ts), 0);
    assert_int_equal(ts, 1795968680LL * 1000000000LL + 500000000LL);
    assert_int_equal(meta_parse_rfc3339("2026-11-29 junk", 15, &ts), -1);
    /* Days that do not exist in their month are refused (timegm would carry
     * them into the next month); Feb 29 only in leap years. */
    static const struct {
        const char *s;
        int ok;
    } days[] = {
        {"2026-02-31T00:00:00Z", -1}, {"2026-02-30T00:00:00Z", -1}, {"2026-02-29T00:00:00Z", -1},
        {"2026-02-28T23:59:59Z", 0},  {"2024-02-29T12:00:00Z", 0},  {"2024-02-30T12:00:00Z", -1},
        {"2000-02-29T00:00:00Z", 0},  {"1900-02-29T00:00:00Z", -1}, {"2100-02-29T00:00:00Z", -1},
        {"2026-04-31T00:00:00Z", -1}, {"2026-04-30T00:00:00Z", 0},  {"2026-06-31T00:00:00Z", -1},
        {"2026-09-31T00:00:00Z", -1}, {"2026-11-31T00:00:00Z", -1}, {"2026-12-31T00:00:00Z", 0},
        {"2026-01-31T00:00:00Z", 0},  {"2026-01-32T00:00:00Z", -1}, {"2026-01-00T00:00:00Z", -1},
        {"2026-13-01T00:00:00Z", -1}, {"2026-00-01T00:00:00Z", -1},
    };
    for (size_t i = 0; i < sizeof(days) / sizeof(days[0]); i++) {
        int rc = meta_parse_rfc3339(days[i].s, strlen(days[i].s), &ts);
        if (rc != days[i].ok)
            fail_msg("meta_parse_rfc3339(%s) = %d, want %d", days[i].s, rc, days[i].ok);
    }
    assert_int_equal(meta_parse_rfc3339("2024-02-29T00:00:00Z", 20, &ts), 0);
    assert_int_equal(ts, 1709164800LL * 1000000000LL);
    char buf[32];
    meta_format_rfc3339(1795968680LL * 1000000000LL, buf);
    assert_str(buf, "2026-11-29T16:11:20Z");
}

static void test_label_limits(void **state)
{
    tenv_t *t = *state;
    char v4090[4091];
    memset(v4090, 'x', 4090);
    v4090[4090] = 0;
    /* key "ab" + 4090 = 4092 ≤ 4096 */
    T_OK(twrite(t, f_ns_create, &(A){.name = "l1", .o1 = tlabels(t, 1, "ab", v4090)}));
    /* key "abcdefg" + 4090 = 4097 */
    T_FAIL(twrite(t, f_ns_create, &(A){.name = "l2", .o1 = tlabels(t, 1, "abcdefg", v4090)}),
           BERTH_E_INVALID_ARGUMENT, "at most 4096");
    /* 17 labels of ~4 KiB: over 64 KiB in total */
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 17);
    for (int i = 0; i < 17; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%02d", i);
        berth_mp_kv_str(&b.pk, k, v4090);
    }
    T_FAIL(twrite(t, f_ns_create, &(A){.name = "l3", .o1 = tobj(t, &b)}), BERTH_E_INVALID_ARGUMENT,
           "in total");
    berth_mpbuf_destroy(&b);
    /* non-string value, empty key, duplicate key */
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_u64(&b.pk, "n", 1);
    T_FAIL(twrite(t, f_ns_create, &(A){.name = "l4", .o1 = tobj(t, &b)}), BERTH_E_INVALID_ARGUMENT,
           "strings");
    berth_mpbuf_destroy(&b);
    T_FAIL(twrite(t, f_ns_create, &(A){.name = "l5", .o1 = tlabels(t, 1, "", "v")}),
           BERTH_E_INVALID_ARGUMENT, "empty");
    T_FAIL(twrite(t, f_ns_create, &(A){.name = "l6", .o1 = tlabels(t, 2, "a", "1", "a", "2")}),
           BERTH_E_INVALID_ARGUMENT, "twice");
}

/* Duplicate keys are found wherever they are, also in maps of more than 512
 * labels (the check used to stop comparing after index 65 there). */
static void test_label_duplicates_anywhere(void **state)
{
    tenv_t *t = *state;
    static const struct {
        int n, a, b; /* n labels; key b repeats key a (b < 0: no duplicate) */
    } cases[] = {
        {3, 0, 2},       {33, 31, 32},       {600, 3, 599}, {600, 70, 71}, {600, 100, 400},
        {2000, 0, 1999}, {2000, 1500, 1998}, {600, 0, -1},  {2000, 0, -1}, {40, 0, -1},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        berth_mpbuf_t b;
        berth_mpbuf_init(&b);
        msgpack_pack_map(&b.pk, (uint32_t)cases[c].n);
        for (int i = 0; i < cases[c].n; i++) {
            char k[16];
            snprintf(k, sizeof(k), "k%d", i == cases[c].b ? cases[c].a : i);
            berth_mp_kv_str(&b.pk, k, "v");
        }
        berth_error_t *err = NULL;
        int rc = meta_validate_labels(tobj(t, &b), &err);
        berth_mpbuf_destroy(&b);
        if (cases[c].b < 0) {
            if (rc != 0)
                fail_msg("case %zu: %s", c, err ? err->message : "?");
        } else {
            char want[32];
            snprintf(want, sizeof(want), "label k%d appears twice", cases[c].a);
            if (rc != -1 || !err || strcmp(err->message, want) != 0)
                fail_msg("case %zu (%d labels, k%d twice): rc=%d err=%s", c, cases[c].n, cases[c].a,
                         rc, err ? err->message : "(none)");
        }
        berth_error_free(&err);
    }
    /* Through a write: a 700-label namespace with one late duplicate. */
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 700);
    for (int i = 0; i < 700; i++) {
        char k[16];
        snprintf(k, sizeof(k), "key-%d", i == 650 ? 80 : i);
        berth_mp_kv_str(&b.pk, k, "x");
    }
    T_FAIL(twrite(t, f_ns_create, &(A){.name = "ldup", .o1 = tobj(t, &b)}),
           BERTH_E_INVALID_ARGUMENT, "key-80 appears twice");
    berth_mpbuf_destroy(&b);
}

/* ---- namespaces -------------------------------------------------------------- */

static void test_namespaces(void **state)
{
    tenv_t *t = *state;
    T_OK(
        twrite(t, f_ns_create, &(A){.name = "dev", .o1 = tlabels(t, 2, "team", "a", "tier", "1")}));
    assert_int_equal(t->ev.n, 1);
    assert_str(t->ev.v[0].topic, "/namespaces/create");
    assert_str(tstr(&t->res, "namespace.name"), "dev");
    T_FAIL(twrite(t, f_ns_create, &(A){.name = "dev"}), BERTH_E_ALREADY_EXISTS, "dev");
    T_FAIL(twrite(t, f_ns_create, &(A){.name = "Dev"}), BERTH_E_INVALID_ARGUMENT, "[a-z0-9]");
    T_FAIL(tread(t, f_ns_get, &(A){.name = "nope"}), BERTH_E_NOT_FOUND, "namespace nope not found");

    /* Update one label by field path: others stay. */
    T_OK(twrite(
        t, f_ns_update,
        &(A){.name = "dev", .o1 = tlabels(t, 1, "team", "b"), .o2 = tstrs(t, 1, "labels.team")}));
    assert_str(tstr(&t->res, "namespace.labels.team"), "b");
    assert_str(tstr(&t->res, "namespace.labels.tier"), "1");
    assert_str(t->ev.v[0].topic, "/namespaces/update");
    /* A field path whose key is absent from labels deletes it. */
    T_OK(twrite(t, f_ns_update,
                &(A){.name = "dev", .o1 = tlabels(t, 0), .o2 = tstrs(t, 1, "labels.tier")}));
    assert_null(tget(&t->res, "namespace.labels.tier"));
    assert_str(tstr(&t->res, "namespace.labels.team"), "b");
    /* No fields: replace all labels. */
    T_OK(twrite(t, f_ns_update, &(A){.name = "dev", .o1 = tlabels(t, 1, "x", "y")}));
    assert_int_equal(tlen(&t->res, "namespace.labels"), 1);
    T_FAIL(
        twrite(t, f_ns_update, &(A){.name = "dev", .o1 = tlabels(t, 0), .o2 = tstrs(t, 1, "name")}),
        BERTH_E_INVALID_ARGUMENT, "cannot update field name");
    T_FAIL(twrite(t, f_ns_update, &(A){.name = "ghost", .o1 = tlabels(t, 0)}), BERTH_E_NOT_FOUND,
           NULL);

    T_OK(tread(t, f_ns_list, &(A){0}));
    assert_int_equal(tlen(&t->res, "namespaces"), 2);

    T_OK(twrite(t, f_ns_delete, &(A){.name = "dev"}));
    assert_str(t->ev.v[0].topic, "/namespaces/delete");
    T_FAIL(twrite(t, f_ns_delete, &(A){.name = "dev"}), BERTH_E_NOT_FOUND, NULL);
}

static void test_namespace_delete_lists_what_remains(void **state)
{
    tenv_t *t = *state;
    T_OK(twrite(t, f_ns_create, &(A){.name = "full"}));
    T_OK(twrite(t, f_image_create, &(A){.ns = "full", .o1 = timage(t, "img", tdigest(1), NULL)}));
    T_OK(twrite(t, f_content_commit, &(A){.ns = "full", .name = tdigest(1), .u = 10}));
    T_OK(twrite(t, f_lease_create, &(A){.ns = "full", .name = "l1"}));
    T_FAIL(twrite(t, f_ns_delete, &(A){.name = "full"}), BERTH_E_FAILED_PRECONDITION,
           "namespace full must be empty, but it still has images, content, leases");
    T_OK(twrite(t, f_ctr_create, &(A){.ns = "full", .o1 = tcontainer(t, "c1", "img", NULL, NULL)}));
    T_FAIL(twrite(t, f_ns_delete, &(A){.name = "full"}), BERTH_E_FAILED_PRECONDITION, "containers");
    T_OK(twrite(t, f_image_delete, &(A){.ns = "full", .name = "img"}));
    T_OK(twrite(t, f_content_delete, &(A){.ns = "full", .name = tdigest(1)}));
    T_OK(twrite(t, f_lease_delete, &(A){.ns = "full", .name = "l1"}));
    T_OK(twrite(t, f_ctr_delete, &(A){.ns = "full", .name = "c1"}));
    /* A namespace whose name is a prefix of another is not confused with it. */
    T_OK(twrite(t, f_image_create, &(A){.ns = "full2", .o1 = timage(t, "img", tdigest(1), NULL)}));
    T_OK(twrite(t, f_ns_delete, &(A){.name = "full"}));
}

/* ---- content ------------------------------------------------------------------ */

static void test_content(void **state)
{
    tenv_t *t = *state;
    const char *d = tdigest(42);
    T_OK(twrite(t, f_ingest_begin, &(A){.ns = "default", .name = "ref-1", .s2 = d}));
    T_OK(tread(t, f_ingest_get, &(A){.ns = "default", .name = "ref-1"}));
    assert_str(tstr(&t->res, "ingest.expected"), d);
    T_OK(twrite(
        t, f_content_commit,
        &(A){.ns = "default", .name = d, .u = 1234, .o1 = tlabels(t, 1, "a", "1"), .s2 = "ref-1"}));
    assert_false(tget(&t->res, "existed")->via.boolean);
    assert_str(t->ev.v[0].topic, "/content/commit");
    /* the commit ended the ingest */
    T_FAIL(tread(t, f_ingest_get, &(A){.ns = "default", .name = "ref-1"}), BERTH_E_NOT_FOUND, NULL);
    T_OK(twrite(t, f_content_commit, &(A){.ns = "default", .name = d, .u = 1234}));
    assert_true(tget(&t->res, "existed")->via.boolean);
    T_FAIL(twrite(t, f_content_commit, &(A){.ns = "default", .name = d, .u = 99}),
           BERTH_E_FAILED_PRECONDITION, "size 1234");

    T_OK(tread(t, f_content_info, &(A){.ns = "default", .name = d}));
    assert_int_equal(tget(&t->res, "info.size")->via.u64, 1234);
    assert_str(tstr(&t->res, "info.labels.a"), "1");
    T_OK(tread(t, f_content_exists, &(A){.ns = "default", .name = d}));
    assert_true(tget(&t->res, "exists")->via.boolean);
    /* other namespace: not visible */
    T_FAIL(tread(t, f_content_info, &(A){.ns = "other", .name = d}), BERTH_E_NOT_FOUND,
           "not found in namespace other");
    T_OK(tread(t, f_content_exists, &(A){.ns = "other", .name = d}));
    assert_false(tget(&t->res, "exists")->via.boolean);

    T_OK(twrite(t, f_content_update,
                &(A){.ns = "default",
                     .name = d,
                     .o1 = tlabels(t, 1, "b", "2"),
                     .o2 = tstrs(t, 1, "labels.b")}));
    assert_str(tstr(&t->res, "info.labels.a"), "1");
    assert_str(tstr(&t->res, "info.labels.b"), "2");
    T_FAIL(twrite(t, f_content_update,
                  &(A){.ns = "default", .name = d, .o1 = tlabels(t, 0), .o2 = tstrs(t, 1, "size")}),
           BERTH_E_INVALID_ARGUMENT, "cannot update field size");

    T_OK(twrite(t, f_content_commit, &(A){.ns = "default", .name = tdigest(43), .u = 1}));
    T_OK(tread(t, f_content_list, &(A){.ns = "default"}));
    assert_int_equal(tlen(&t->res, "infos"), 2);
    T_OK(tread(t, f_content_list, &(A){.ns = "default", .o1 = tstrs(t, 1, "labels.b==2")}));
    assert_int_equal(tlen(&t->res, "infos"), 1);
    assert_str(tstr(&t->res, "infos.0.digest"), d);
    T_FAIL(tread(t, f_content_list, &(A){.ns = "default", .o1 = tstrs(t, 1, "labels.==2")}),
           BERTH_E_INVALID_ARGUMENT, "position 8");

    T_OK(twrite(t, f_content_delete, &(A){.ns = "default", .name = d}));
    assert_str(t->ev.v[0].topic, "/content/delete");
    T_FAIL(twrite(t, f_content_delete, &(A){.ns = "default", .name = d}), BERTH_E_NOT_FOUND, NULL);
    T_FAIL(twrite(t, f_content_commit, &(A){.ns = "default", .name = "sha256:xyz", .u = 1}),
           BERTH_E_INVALID_ARGUMENT, "sha256");
}

static void test_ingests(void **state)
{
    tenv_t *t = *state;
    T_OK(twrite(t, f_ingest_begin, &(A){.ns = "default", .name = "a"}));
    T_OK(twrite(t, f_ingest_begin, &(A){.ns = "default", .name = "b", .s2 = tdigest(1)}));
    T_OK(twrite(t, f_ingest_begin, &(A){.ns = "other", .name = "c"}));
    T_OK(tread(t, f_ingest_list, &(A){.ns = "default"}));
    assert_int_equal(tlen(&t->res, "ingests"), 2);
    T_OK(twrite(t, f_ingest_end, &(A){.ns = "default", .name = "a"}));
    T_OK(twrite(t, f_ingest_end, &(A){.ns = "default", .name = "a"})); /* idempotent */
    T_OK(tread(t, f_ingest_list, &(A){.ns = "default"}));
    assert_int_equal(tlen(&t->res, "ingests"), 1);
    /* ingest with a lease joins it; unknown lease fails */
    T_FAIL(twrite_lease(t, "nolease", f_ingest_begin, &(A){.ns = "default", .name = "d"}),
           BERTH_E_NOT_FOUND, "lease nolease");
    T_OK(twrite(t, f_lease_create, &(A){.ns = "default", .name = "L"}));
    T_OK(twrite_lease(t, "L", f_ingest_begin, &(A){.ns = "default", .name = "d"}));
    T_OK(tread(t, f_lease_res, &(A){.ns = "default", .name = "L"}));
    assert_int_equal(tlen(&t->res, "resources"), 1);
    assert_str(tstr(&t->res, "resources.0.type"), "ingests");
    assert_str(tstr(&t->res, "resources.0.id"), "d");
}

/* ---- images ------------------------------------------------------------------- */

static void test_images(void **state)
{
    tenv_t *t = *state;
    T_OK(twrite(t, f_image_create,
                &(A){.ns = "default",
                     .o1 = timage(t, "docker.io/library/busybox:1", tdigest(1),
                                  tlabels(t, 1, "app", "bb"))}));
    assert_str(tstr(&t->res, "image.name"), "docker.io/library/busybox:1");
    assert_str(tstr(&t->res, "image.target.digest"), tdigest(1));
    assert_str(t->ev.v[0].topic, "/images/create");
    T_FAIL(twrite(t, f_image_create,
                  &(A){.ns = "default",
                       .o1 = timage(t, "docker.io/library/busybox:1", tdigest(1), NULL)}),
           BERTH_E_ALREADY_EXISTS, "already exists");
    T_FAIL(
        twrite(t, f_image_create, &(A){.ns = "default", .o1 = timage(t, "x", "sha256:bad", NULL)}),
        BERTH_E_INVALID_ARGUMENT, "image target");
    T_OK(twrite(t, f_image_create,
                &(A){.ns = "default", .o1 = timage(t, "nginx:1", tdigest(2), NULL)}));
    T_OK(tread(t, f_image_list, &(A){.ns = "default"}));
    assert_int_equal(tlen(&t->res, "images"), 2);
    T_OK(tread(t, f_image_list, &(A){.ns = "default", .o1 = tstrs(t, 1, "name==nginx:1")}));
    assert_int_equal(tlen(&t->res, "images"), 1);
    T_OK(tread(t, f_image_list,
               &(A){.ns = "default", .o1 = tstrs(t, 2, "name==nginx:1", "labels.app")}));
    assert_int_equal(tlen(&t->res, "images"), 2);
    T_OK(tread(
        t, f_image_list,
        &(A){.ns = "default", .o1 = tstrs(t, 1, "target.mediatype~=manifest,labels.\"app\"==bb")}));
    assert_int_equal(tlen(&t->res, "images"), 1);
    T_OK(tread(t, f_image_list, &(A){.ns = "other"}));
    assert_int_equal(tlen(&t->res, "images"), 0);

    /* update: target only (labels stay) */
    T_OK(twrite(t, f_image_update,
                &(A){.ns = "default",
                     .o1 = timage(t, "docker.io/library/busybox:1", tdigest(3), NULL),
                     .o2 = tstrs(t, 1, "target")}));
    assert_str(tstr(&t->res, "image.target.digest"), tdigest(3));
    assert_str(tstr(&t->res, "image.labels.app"), "bb");
    assert_str(t->ev.v[0].topic, "/images/update");
    /* update: one label */
    T_OK(twrite(
        t, f_image_update,
        &(A){.ns = "default",
             .o1 = timage(t, "docker.io/library/busybox:1", tdigest(9), tlabels(t, 1, "v", "2")),
             .o2 = tstrs(t, 1, "labels.v")}));
    assert_str(tstr(&t->res, "image.target.digest"), tdigest(3));
    assert_str(tstr(&t->res, "image.labels.v"), "2");
    assert_str(tstr(&t->res, "image.labels.app"), "bb");
    /* update: annotations of the target */
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "name", "nginx:1");
    berth_mp_pack_str(&b.pk, "target");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_pack_str(&b.pk, "annotations");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "org.opencontainers.image.ref.name", "1");
    T_OK(twrite(t, f_image_update,
                &(A){.ns = "default",
                     .o1 = tobj(t, &b),
                     .o2 = tstrs(t, 1, "annotations.org.opencontainers.image.ref.name")}));
    berth_mpbuf_destroy(&b);
    assert_str(tstr(&t->res, "image.target.digest"), tdigest(2));
    assert_non_null(tget(&t->res, "image.target.annotations"));
    T_FAIL(twrite(t, f_image_update,
                  &(A){.ns = "default", .o1 = timage(t, "ghost", tdigest(1), NULL)}),
           BERTH_E_NOT_FOUND, NULL);
    T_FAIL(twrite(t, f_image_update,
                  &(A){.ns = "default",
                       .o1 = timage(t, "nginx:1", tdigest(1), NULL),
                       .o2 = tstrs(t, 1, "created_at")}),
           BERTH_E_INVALID_ARGUMENT, "cannot update");

    T_OK(twrite(t, f_image_delete, &(A){.ns = "default", .name = "nginx:1"}));
    assert_str(t->ev.v[0].topic, "/images/delete");
    T_FAIL(tread(t, f_image_get, &(A){.ns = "default", .name = "nginx:1"}), BERTH_E_NOT_FOUND,
           "image nginx:1 not found in namespace default");
}

/* ---- containers ----------------------------------------------------------------- */

static void test_containers(void **state)
{
    tenv_t *t = *state;
    T_OK(twrite(t, f_ctr_create,
                &(A){.ns = "default",
                     .o1 = tcontainer(t, "web", "nginx:1", "web-snap", tlabels(t, 1, "a", "1"))}));
    assert_str(tstr(&t->res, "container.runtime.name"), "io.berth.runc.v1");
    assert_str(tstr(&t->res, "container.snapshot_key"), "web-snap");
    assert_int_equal(tget(&t->res, "container.spec")->type, MSGPACK_OBJECT_BIN);
    assert_false(tget(&t->res, "container.rm")->via.boolean);
    assert_str(t->ev.v[0].topic, "/containers/create");
    T_FAIL(
        twrite(t, f_ctr_create, &(A){.ns = "default", .o1 = tcontainer(t, "web", "x", NULL, NULL)}),
        BERTH_E_ALREADY_EXISTS, NULL);
    T_FAIL(twrite(t, f_ctr_create,
                  &(A){.ns = "default", .o1 = tcontainer(t, "bad id", "x", NULL, NULL)}),
           BERTH_E_INVALID_ARGUMENT, "container id");

    /* labels by field; image by field */
    T_OK(twrite(t, f_ctr_update,
                &(A){.ns = "default",
                     .o1 = tcontainer(t, "web", "nginx:2", "web-snap", tlabels(t, 1, "b", "2")),
                     .o2 = tstrs(t, 2, "labels.b", "image")}));
    assert_str(tstr(&t->res, "container.image"), "nginx:2");
    assert_str(tstr(&t->res, "container.labels.a"), "1");
    assert_str(tstr(&t->res, "container.labels.b"), "2");
    assert_str(t->ev.v[0].topic, "/containers/update");
    /* runtime is immutable */
    berth_mpbuf_t b;
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "id", "web");
    berth_mp_pack_str(&b.pk, "runtime");
    msgpack_pack_map(&b.pk, 1);
    berth_mp_kv_str(&b.pk, "name", "other");
    T_FAIL(twrite(t, f_ctr_update, &(A){.ns = "default", .o1 = tobj(t, &b)}),
           BERTH_E_INVALID_ARGUMENT, "runtime cannot be changed");
    berth_mpbuf_destroy(&b);
    T_FAIL(twrite(t, f_ctr_update,
                  &(A){.ns = "default",
                       .o1 = tcontainer(t, "web", "x", "k", NULL),
                       .o2 = tstrs(t, 1, "runtime")}),
           BERTH_E_INVALID_ARGUMENT, "cannot update field runtime");
    /* rm flag */
    berth_mpbuf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    berth_mp_kv_str(&b.pk, "id", "web");
    berth_mp_kv_bool(&b.pk, "rm", true);
    T_OK(
        twrite(t, f_ctr_update, &(A){.ns = "default", .o1 = tobj(t, &b), .o2 = tstrs(t, 1, "rm")}));
    berth_mpbuf_destroy(&b);
    assert_true(tget(&t->res, "container.rm")->via.boolean);
    assert_str(tstr(&t->res, "container.image"), "nginx:2");

    T_OK(tread(t, f_ctr_list, &(A){.ns = "default", .o1 = tstrs(t, 1, "image==nginx:2")}));
    assert_int_equal(tlen(&t->res, "containers"), 1);
    T_OK(tread(t, f_ctr_list,
               &(A){.ns = "default", .o1 = tstrs(t, 1, "runtime.name==io.berth.runc.v1")}));
    assert_int_equal(tlen(&t->res, "containers"), 1);
    T_OK(tread(t, f_ctr_list, &(A){.ns = "other"}));
    assert_int_equal(tlen(&t->res, "containers"), 0);

    T_OK(twrite(t, f_ctr_delete, &(A){.ns = "default", .name = "web"}));
    assert_str(tstr(&t->res, "container.id"), "web");
    assert_str(tstr(&t->res, "container.snapshot_key"), "web-snap");
    assert_str(t->ev.v[0].topic, "/containers/delete");
    T_FAIL(tread(t, f_ctr_get, &(A){.ns = "default", .name = "web"}), BERTH_E_NOT_FOUND, NULL);
}

/* ---- leases ------------------------------------------------------------------ */

static void test_leases(void **state)
{
    tenv_t *t = *state;
    int64_t exp = 1795968680LL * 1000000000LL;
    T_OK(twrite(t, f_lease_create, &(A){.ns = "default", .name = "demo", .i = exp}));
    assert_str(tstr(&t->res, "lease.id"), "demo");
    const msgpack_object *labels = tget(&t->res, "lease.labels");
    const msgpack_object *e = berth_mp_get(labels, "berth.io/gc.expire");
    assert_non_null(e);
    assert_int_equal(e->via.str.size, 20);
    assert_memory_equal(e->via.str.ptr, "2026-11-29T16:11:20Z", 20);
    assert_str(t->ev.v[0].topic, "/leases/create");
    T_FAIL(twrite(t, f_lease_create, &(A){.ns = "default", .name = "demo"}), BERTH_E_ALREADY_EXISTS,
           NULL);

    /* generated id */
    T_OK(twrite(t, f_lease_create, &(A){.ns = "default", .o1 = tlabels(t, 1, "k", "v")}));
    char gen[64];
    snprintf(gen, sizeof(gen), "%s", tstr(&t->res, "lease.id"));
    assert_true(strlen(gen) > 10);
    assert_int_equal(meta_validate_name("lease id", gen, NULL), 0);

    T_OK(tread(t, f_lease_list, &(A){.ns = "default"}));
    assert_int_equal(tlen(&t->res, "leases"), 2);
    T_OK(tread(t, f_lease_list, &(A){.ns = "default", .o1 = tstrs(t, 1, "labels.k==v")}));
    assert_int_equal(tlen(&t->res, "leases"), 1);
    T_OK(tread(t, f_lease_list, &(A){.ns = "default", .o1 = tstrs(t, 1, "id==demo")}));
    assert_int_equal(tlen(&t->res, "leases"), 1);
    /* namespace isolation */
    T_OK(tread(t, f_lease_list, &(A){.ns = "other"}));
    assert_int_equal(tlen(&t->res, "leases"), 0);
    T_FAIL(twrite(t, f_lease_delete, &(A){.ns = "other", .name = "demo"}), BERTH_E_NOT_FOUND, NULL);

    /* resources */
    T_OK(twrite(t, f_lease_add,
                &(A){.ns = "default", .name = "demo", .s2 = "content", .s3 = tdigest(1)}));
    T_OK(twrite(t, f_lease_add,
                &(A){.ns = "default", .name = "demo", .s2 = "snapshots/overlayfs", .s3 = "k1"}));
    T_OK(twrite(t, f_lease_add,
                &(A){.ns = "default", .name = "demo", .s2 = "content", .s3 = tdigest(1)}));
    T_FAIL(twrite(t, f_lease_add, &(A){.ns = "default", .name = "demo", .s2 = "bogus", .s3 = "x"}),
           BERTH_E_INVALID_ARGUMENT, "unknown resource type");
    T_FAIL(twrite(t, f_lease_add,
                  &(A){.ns = "default", .name = "nope", .s2 = "content", .s3 = tdigest(1)}),
           BERTH_E_NOT_FOUND, NULL);
    T_OK(tread(t, f_lease_res, &(A){.ns = "default", .name = "demo"}));
    assert_int_equal(tlen(&t->res, "resources"), 2);
    T_OK(tread(t, f_lease_check,
               &(A){.ns = "default", .name = "demo", .s2 = "content", .s3 = tdigest(1)}));
    assert_true(tget(&t->res, "held")->via.boolean);
    /* held, but not content of this namespace: content.path refuses that */
    assert_false(tget(&t->res, "exists")->via.boolean);
    T_OK(tread(t, f_lease_check,
               &(A){.ns = "default", .name = "demo", .s2 = "content", .s3 = tdigest(2)}));
    assert_false(tget(&t->res, "held")->via.boolean);
    /* a snapshot resource: no `exists` */
    T_OK(tread(t, f_lease_check,
               &(A){.ns = "default", .name = "demo", .s2 = "snapshots/overlayfs", .s3 = "k1"}));
    assert_true(tget(&t->res, "held")->via.boolean);
    assert_null(tget(&t->res, "exists"));
    /* an unknown lease holds nothing (no error: content.path says why) */
    T_OK(tread(t, f_lease_check,
               &(A){.ns = "default", .name = "nope", .s2 = "content", .s3 = tdigest(1)}));
    assert_false(tget(&t->res, "held")->via.boolean);
    T_OK(twrite(t, f_lease_del_res,
                &(A){.ns = "default", .name = "demo", .s2 = "content", .s3 = tdigest(1)}));
    T_OK(tread(t, f_lease_res, &(A){.ns = "default", .name = "demo"}));
    assert_int_equal(tlen(&t->res, "resources"), 1);
    assert_str(tstr(&t->res, "resources.0.id"), "k1");

    /* commit with a lease adds the digest to it */
    T_OK(twrite_lease(t, "demo", f_content_commit,
                      &(A){.ns = "default", .name = tdigest(7), .u = 5}));
    T_OK(tread(t, f_lease_check,
               &(A){.ns = "default", .name = "demo", .s2 = "content", .s3 = tdigest(7)}));
    assert_true(tget(&t->res, "held")->via.boolean);
    assert_true(tget(&t->res, "exists")->via.boolean);
    /* committing content that was already there joins the lease too (a
     * pull of a layer the store had: its apply may then ask content.path) */
    T_OK(twrite(t, f_lease_create, &(A){.ns = "default", .name = "again"}));
    T_OK(twrite_lease(t, "again", f_content_commit,
                      &(A){.ns = "default", .name = tdigest(7), .u = 5}));
    assert_true(tget(&t->res, "existed")->via.boolean);
    T_OK(tread(t, f_lease_check,
               &(A){.ns = "default", .name = "again", .s2 = "content", .s3 = tdigest(7)}));
    assert_true(tget(&t->res, "held")->via.boolean);
    /* the same digest seen from another namespace: held by no lease there */
    T_OK(tread(t, f_lease_check,
               &(A){.ns = "other", .name = "again", .s2 = "content", .s3 = tdigest(7)}));
    assert_false(tget(&t->res, "held")->via.boolean);
    assert_false(tget(&t->res, "exists")->via.boolean);

    T_OK(twrite(t, f_lease_delete, &(A){.ns = "default", .name = "demo"}));
    assert_str(t->ev.v[0].topic, "/leases/delete");
    T_FAIL(tread(t, f_lease_res, &(A){.ns = "default", .name = "demo"}), BERTH_E_NOT_FOUND, NULL);
    /* resources went with it: a new lease of the same id starts empty */
    T_OK(twrite(t, f_lease_create, &(A){.ns = "default", .name = "demo"}));
    T_OK(tread(t, f_lease_res, &(A){.ns = "default", .name = "demo"}));
    assert_int_equal(tlen(&t->res, "resources"), 0);
}

static void test_lease_expiry(void **state)
{
    tenv_t *t = *state;
    int64_t past = 1000000000LL; /* 1970 */
    T_OK(twrite(t, f_lease_create, &(A){.ns = "default", .name = "old", .i = past}));
    T_OK(twrite(t, f_lease_add,
                &(A){.ns = "default", .name = "old", .s2 = "content", .s3 = tdigest(1)}));
    T_OK(tread(t, f_lease_check,
               &(A){.ns = "default", .name = "old", .s2 = "content", .s3 = tdigest(1)}));
    assert_false(tget(&t->res, "held")->via.boolean);
    /* a label alone sets the expiry, like containerd */
    T_OK(twrite(t, f_lease_create,
                &(A){.ns = "default",
                     .name = "lbl",
                     .o1 = tlabels(t, 1, "containerd.io/gc.expire", "1999-01-01T00:00:00Z")}));
    assert_non_null(tget(&t->res, "lease.expire"));
    T_FAIL(twrite(t, f_lease_create,
                  &(A){.ns = "default",
                       .name = "bad",
                       .o1 = tlabels(t, 1, "berth.io/gc.expire", "tomorrow")}),
           BERTH_E_INVALID_ARGUMENT, "RFC3339");
    /* A day that does not exist is refused, also next to an explicit expire
     * (the CLI sends both); Feb 29 of a leap year is a day. */
    T_FAIL(twrite(t, f_lease_create,
                  &(A){.ns = "default",
                       .name = "feb31",
                       .o1 = tlabels(t, 1, "berth.io/gc.expire", "2026-02-31T00:00:00Z")}),
           BERTH_E_INVALID_ARGUMENT, "RFC3339");
    T_FAIL(twrite(t, f_lease_create,
                  &(A){.ns = "default",
                       .name = "feb31b",
                       .i = past,
                       .o1 = tlabels(t, 1, "berth.io/gc.expire", "2026-02-31T00:00:00Z")}),
           BERTH_E_INVALID_ARGUMENT, "a date that exists");
    T_OK(twrite(t, f_lease_create,
                &(A){.ns = "default",
                     .name = "leap",
                     .o1 = tlabels(t, 1, "berth.io/gc.expire", "2028-02-29T00:00:00Z")}));
    assert_int_equal(tget(&t->res, "lease.expire")->via.i64, 1835395200LL * 1000000000LL);
}

static void test_tombstone_blocks_new_references(void **state)
{
    tenv_t *t = *state;
    T_OK(twrite(t, f_tomb66, NULL));
    T_FAIL(twrite(t, f_content_commit, &(A){.ns = "default", .name = tdigest(66), .u = 1}),
           BERTH_E_ABORTED, "garbage collection");
    T_FAIL(
        twrite(t, f_image_create, &(A){.ns = "default", .o1 = timage(t, "i", tdigest(66), NULL)}),
        BERTH_E_ABORTED, NULL);
    T_FAIL(twrite(t, f_ingest_begin, &(A){.ns = "default", .name = "r", .s2 = tdigest(66)}),
           BERTH_E_ABORTED, NULL);
    T_OK(twrite(t, f_lease_create, &(A){.ns = "default", .name = "L"}));
    T_FAIL(twrite(t, f_lease_add,
                  &(A){.ns = "default", .name = "L", .s2 = "content", .s3 = tdigest(66)}),
           BERTH_E_ABORTED, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
        T(test_open_fresh_has_default),
        T(test_open_twice_is_refused),
        T(test_reopen_keeps_records),
        T(test_truncated_file_refused),
        T(test_garbage_file_refused),
        T(test_newer_schema_refused),
        T(test_map_grows),
        T(test_batch_isolates_failures),
        T(test_replay_returns_recorded_result),
        T(test_validation),
        T(test_label_limits),
        T(test_label_duplicates_anywhere),
        T(test_namespaces),
        T(test_namespace_delete_lists_what_remains),
        T(test_content),
        T(test_ingests),
        T(test_images),
        T(test_containers),
        T(test_leases),
        T(test_lease_expiry),
        T(test_tombstone_blocks_new_references),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
