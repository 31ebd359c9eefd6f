/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of snapshot records (plugins/metadata/snapshots.c): intents
 * around backend calls, reconcile after a crash, sharing of committed
 * snapshots between namespaces, tombstones. */
#include "test_meta_util.h"

typedef struct {
    const char *ns, *key, *parent, *name;
    const msgpack_object *labels, *fields;
    bool flag;
    meta_snap_plan_t plan;
    size_t n;
} S;

#define WRAP(fname, call)                                                                          \
    static int fname(meta_tx_t *tx, void *a_, berth_error_t **err)                                 \
    {                                                                                              \
        S *a = a_;                                                                                 \
        return call;                                                                               \
    }

WRAP(f_prep_begin,
     meta_snap_prepare_begin(tx, a->ns, a->key, a->parent, a->labels, a->flag, &a->plan, err))
WRAP(f_prep_end, meta_snap_prepare_end(tx, a->ns, a->key, a->flag, err))
WRAP(f_resolve, meta_snap_resolve(tx, a->ns, a->key, &a->plan, err))
WRAP(f_commit_begin, meta_snap_commit_begin(tx, a->ns, a->name, a->key, &a->plan, err))
WRAP(f_commit_end,
     meta_snap_commit_end(tx, a->ns, a->name, a->key, a->labels, a->flag, &a->plan, err))
WRAP(f_remove, meta_snap_remove(tx, a->ns, a->key, &a->plan, err))
WRAP(f_stat, meta_snap_stat(tx, a->ns, a->key, err))
WRAP(f_update, meta_snap_update(tx, a->ns, a->key, a->labels, a->fields, err))
WRAP(f_list, meta_snap_list(tx, a->ns, a->labels, err))
WRAP(f_tomb_done, meta_snap_tomb_done(tx, a->key, err))
WRAP(f_reconcile, meta_snap_reconcile(tx, &a->n, err))

static int f_tombs(meta_tx_t *tx, void *a_, berth_error_t **err)
{
    S *a = a_;
    char **ids;
    size_t n;
    if (meta_snap_tombstones(tx, &ids, &n, err) < 0)
        return -1;
    a->n = n;
    meta_snap_plan_free(&a->plan);
    /* Hand the first one back in plan.tomb for the assertions. */
    if (n)
        a->plan.tomb = strdup(ids[0]);
    meta_strv_free(ids, n);
    return 0;
}

/* prepare (begin + end ok); returns the backend id. */
static char *prepare(tenv_t *t, const char *ns, const char *key, const char *parent, bool view)
{
    static char id[8][24];
    static int slot;
    S s = {.ns = ns, .key = key, .parent = parent, .flag = view};
    T_OK(twrite(t, f_prep_begin, &s));
    char *out = id[slot++ % 8];
    snprintf(out, 24, "%s", s.plan.id);
    meta_snap_plan_free(&s.plan);
    s.flag = true;
    T_OK(twrite(t, f_prep_end, &s));
    return out;
}

static void commit(tenv_t *t, const char *ns, const char *name, const char *key)
{
    S s = {.ns = ns, .name = name, .key = key};
    T_OK(twrite(t, f_commit_begin, &s));
    s.flag = true;
    T_OK(twrite(t, f_commit_end, &s));
    meta_snap_plan_free(&s.plan);
}

static size_t tomb_count(tenv_t *t)
{
    S s = {0};
    T_OK(tread(t, f_tombs, &s));
    meta_snap_plan_free(&s.plan);
    return s.n;
}

static void test_prepare_commit_chain(void **state)
{
    tenv_t *t = *state;
    S s = {.ns = "default", .key = "base-active"};
    T_OK(twrite(t, f_prep_begin, &s));
    assert_string_equal(s.plan.id, "1");
    assert_int_equal(s.plan.n_parents, 0);
    assert_false(s.plan.readonly);
    assert_int_equal(t->ev.n, 0); /* the event comes with the end */
    /* while preparing, the key is not usable and not listed */
    S r = {.ns = "default", .key = "base-active"};
    T_FAIL(tread(t, f_resolve, &r), BERTH_E_FAILED_PRECONDITION, "being prepared");
    T_OK(tread(t, f_list, &(S){.ns = "default"}));
    assert_int_equal(tlen(&t->res, "infos"), 0);
    s.flag = true;
    T_OK(twrite(t, f_prep_end, &s));
    assert_str(t->ev.v[0].topic, "/snapshots/prepare");
    meta_snap_plan_free(&s.plan);

    commit(t, "default", "base", "base-active");
    assert_str(t->ev.v[0].topic, "/snapshots/commit");
    T_OK(tread(t, f_stat, &(S){.ns = "default", .key = "base"}));
    assert_str(tstr(&t->res, "info.kind"), "committed");
    assert_str(tstr(&t->res, "info.id"), "1");
    T_FAIL(tread(t, f_stat, &(S){.ns = "default", .key = "base-active"}), BERTH_E_NOT_FOUND, NULL);

    prepare(t, "default", "l2-active", "base", false);
    commit(t, "default", "l2", "l2-active");
    char *cid = prepare(t, "default", "ctr-rw", "l2", false);
    assert_string_equal(cid, "3");
    r = (S){.ns = "default", .key = "ctr-rw"};
    T_OK(tread(t, f_resolve, &r));
    assert_int_equal(r.plan.n_parents, 2);
    assert_string_equal(r.plan.parents[0], "2"); /* nearest first */
    assert_string_equal(r.plan.parents[1], "1");
    assert_string_equal(r.plan.kind, "active");
    meta_snap_plan_free(&r.plan);

    /* views are read-only; commit of a view is refused */
    prepare(t, "default", "v", "l2", true);
    r = (S){.ns = "default", .key = "v"};
    T_OK(tread(t, f_resolve, &r));
    assert_true(r.plan.readonly);
    meta_snap_plan_free(&r.plan);
    T_FAIL(twrite(t, f_commit_begin, &(S){.ns = "default", .name = "x", .key = "v"}),
           BERTH_E_FAILED_PRECONDITION, "a view");
    T_FAIL(twrite(t, f_commit_begin, &(S){.ns = "default", .name = "x", .key = "l2"}),
           BERTH_E_FAILED_PRECONDITION, "already committed");

    /* errors */
    T_FAIL(twrite(t, f_prep_begin, &(S){.ns = "default", .key = "ctr-rw"}), BERTH_E_ALREADY_EXISTS,
           NULL);
    T_FAIL(twrite(t, f_prep_begin, &(S){.ns = "default", .key = "k", .parent = "ghost"}),
           BERTH_E_NOT_FOUND, "parent snapshot ghost");
    T_FAIL(twrite(t, f_prep_begin, &(S){.ns = "default", .key = "k", .parent = "ctr-rw"}),
           BERTH_E_FAILED_PRECONDITION, "not committed");
    T_FAIL(twrite(t, f_commit_begin, &(S){.ns = "default", .name = "l2", .key = "ctr-rw"}),
           BERTH_E_ALREADY_EXISTS, NULL);

    /* list with filters */
    T_OK(tread(t, f_list, &(S){.ns = "default"}));
    assert_int_equal(tlen(&t->res, "infos"), 4);
    T_OK(tread(t, f_list, &(S){.ns = "default", .labels = tstrs(t, 1, "kind==committed")}));
    assert_int_equal(tlen(&t->res, "infos"), 2);
    T_OK(tread(t, f_list, &(S){.ns = "default", .labels = tstrs(t, 1, "parent==l2")}));
    assert_int_equal(tlen(&t->res, "infos"), 2);
}

static void test_failed_prepare_tombstones(void **state)
{
    tenv_t *t = *state;
    S s = {.ns = "default", .key = "k"};
    T_OK(twrite(t, f_prep_begin, &s));
    char id[24];
    snprintf(id, sizeof(id), "%s", s.plan.id);
    meta_snap_plan_free(&s.plan);
    s.flag = false; /* the backend failed */
    T_OK(twrite(t, f_prep_end, &s));
    T_FAIL(tread(t, f_stat, &(S){.ns = "default", .key = "k"}), BERTH_E_NOT_FOUND, NULL);
    S tb = {0};
    T_OK(tread(t, f_tombs, &tb));
    assert_int_equal(tb.n, 1);
    assert_string_equal(tb.plan.tomb, id);
    meta_snap_plan_free(&tb.plan);
    T_OK(twrite(t, f_tomb_done, &(S){.key = id}));
    assert_int_equal(tomb_count(t), 0);
    /* the key can be prepared again, with a new id (ids are never reused) */
    char *id2 = prepare(t, "default", "k", NULL, false);
    assert_string_not_equal(id2, id);
}

static void test_failed_commit_returns_to_active(void **state)
{
    tenv_t *t = *state;
    prepare(t, "default", "k", NULL, false);
    S s = {.ns = "default", .name = "done", .key = "k"};
    T_OK(twrite(t, f_commit_begin, &s));
    T_FAIL(twrite(t, f_remove, &(S){.ns = "default", .key = "k"}), BERTH_E_FAILED_PRECONDITION,
           "being committed");
    T_FAIL(twrite(t, f_commit_begin, &(S){.ns = "default", .name = "other", .key = "k"}),
           BERTH_E_FAILED_PRECONDITION, "being committed");
    s.flag = false;
    T_OK(twrite(t, f_commit_end, &s));
    T_OK(tread(t, f_stat, &(S){.ns = "default", .key = "k"}));
    assert_str(tstr(&t->res, "info.kind"), "active");
    assert_str(tstr(&t->res, "info.state"), "");
    commit(t, "default", "done", "k");
}

static void test_reconcile(void **state)
{
    tenv_t *t = *state;
    prepare(t, "default", "base-a", NULL, false);
    commit(t, "default", "base", "base-a");
    /* a crash after the prepare intent, and one after the commit intent */
    S p = {.ns = "default", .key = "half", .parent = "base"};
    T_OK(twrite(t, f_prep_begin, &p));
    meta_snap_plan_free(&p.plan);
    prepare(t, "default", "c", "base", false);
    S c = {.ns = "default", .name = "c-done", .key = "c"};
    T_OK(twrite(t, f_commit_begin, &c));
    S r = {0};
    T_OK(twrite(t, f_reconcile, &r));
    assert_int_equal(r.n, 2);
    T_FAIL(tread(t, f_stat, &(S){.ns = "default", .key = "half"}), BERTH_E_NOT_FOUND, NULL);
    T_OK(tread(t, f_stat, &(S){.ns = "default", .key = "c"}));
    assert_str(tstr(&t->res, "info.state"), "");
    assert_int_equal(tomb_count(t), 1);
    /* base has no children left from the rolled back prepare except c */
    T_FAIL(twrite(t, f_remove, &(S){.ns = "default", .key = "base"}), BERTH_E_FAILED_PRECONDITION,
           "parent");
    S rm = {.ns = "default", .key = "c"};
    T_OK(twrite(t, f_remove, &rm));
    meta_snap_plan_free(&rm.plan);
    rm.key = "base";
    T_OK(twrite(t, f_remove, &rm));
    meta_snap_plan_free(&rm.plan);
    T_OK(twrite(t, f_reconcile, &r));
    assert_int_equal(r.n, 0);
}

static void test_remove(void **state)
{
    tenv_t *t = *state;
    char *bid = prepare(t, "default", "a", NULL, false);
    char saved[24];
    snprintf(saved, sizeof(saved), "%s", bid);
    commit(t, "default", "A", "a");
    prepare(t, "default", "child", "A", false);
    T_FAIL(twrite(t, f_remove, &(S){.ns = "default", .key = "A"}), BERTH_E_FAILED_PRECONDITION,
           "cannot remove snapshot A");
    S rm = {.ns = "default", .key = "child"};
    T_OK(twrite(t, f_remove, &rm));
    assert_str(t->ev.v[0].topic, "/snapshots/remove");
    assert_non_null(rm.plan.tomb);
    meta_snap_plan_free(&rm.plan);
    rm.key = "A";
    T_OK(twrite(t, f_remove, &rm));
    assert_string_equal(rm.plan.tomb, saved);
    meta_snap_plan_free(&rm.plan);
    assert_int_equal(tomb_count(t), 2);
    T_FAIL(twrite(t, f_remove, &(S){.ns = "default", .key = "A"}), BERTH_E_NOT_FOUND, NULL);
}

static void test_update_labels(void **state)
{
    tenv_t *t = *state;
    prepare(t, "default", "k", NULL, false);
    T_OK(twrite(t, f_update,
                &(S){.ns = "default", .key = "k", .labels = tlabels(t, 2, "a", "1", "b", "2")}));
    assert_str(tstr(&t->res, "info.labels.a"), "1");
    T_OK(twrite(t, f_update,
                &(S){.ns = "default",
                     .key = "k",
                     .labels = tlabels(t, 1, "a", "9"),
                     .fields = tstrs(t, 1, "labels.a")}));
    assert_str(tstr(&t->res, "info.labels.a"), "9");
    assert_str(tstr(&t->res, "info.labels.b"), "2");
    T_FAIL(twrite(t, f_update,
                  &(S){.ns = "default",
                       .key = "k",
                       .labels = tlabels(t, 0),
                       .fields = tstrs(t, 1, "kind")}),
           BERTH_E_INVALID_ARGUMENT, "cannot update field kind");
    T_OK(tread(t, f_list, &(S){.ns = "default", .labels = tstrs(t, 1, "labels.b==2")}));
    assert_int_equal(tlen(&t->res, "infos"), 1);
}

#define CHAIN1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define CHAIN2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

static void test_share_across_namespaces_on_prepare(void **state)
{
    tenv_t *t = *state;
    /* ns a unpacks layer 1 then 2, committed by chain id */
    char *a1 = prepare(t, "a", "extract-1", NULL, false);
    char id1[24];
    snprintf(id1, sizeof(id1), "%s", a1);
    commit(t, "a", CHAIN1, "extract-1");
    prepare(t, "a", "extract-2", CHAIN1, false);
    commit(t, "a", CHAIN2, "extract-2");

    /* ns b prepares with snapshot.ref = CHAIN1: shared, reported existing */
    S s = {
        .ns = "b", .key = "extract-b1", .labels = tlabels(t, 1, "berth.io/snapshot.ref", CHAIN1)};
    T_OK(twrite(t, f_prep_begin, &s));
    assert_true(s.plan.exists);
    assert_string_equal(s.plan.id, id1);
    meta_snap_plan_free(&s.plan);
    T_OK(tread(t, f_stat, &(S){.ns = "b", .key = CHAIN1}));
    assert_str(tstr(&t->res, "info.kind"), "committed");
    assert_str(tstr(&t->res, "info.id"), id1);
    assert_null(tget(&t->res, "info.labels.berth"));
    T_FAIL(tread(t, f_stat, &(S){.ns = "b", .key = "extract-b1"}), BERTH_E_NOT_FOUND, NULL);
    /* again in b: exists in b itself */
    T_OK(twrite(t, f_prep_begin, &s));
    assert_true(s.plan.exists);
    meta_snap_plan_free(&s.plan);
    /* layer 2 on top of the shared layer 1 */
    s = (S){.ns = "b",
            .key = "extract-b2",
            .parent = CHAIN1,
            .labels = tlabels(t, 1, "containerd.io/snapshot.ref", CHAIN2)};
    T_OK(twrite(t, f_prep_begin, &s));
    assert_true(s.plan.exists);
    meta_snap_plan_free(&s.plan);

    /* removing from a keeps the backend snapshots (b references them) */
    S rm = {.ns = "a", .key = CHAIN2};
    T_OK(twrite(t, f_remove, &rm));
    assert_null(rm.plan.tomb);
    rm.key = CHAIN1;
    T_OK(twrite(t, f_remove, &rm));
    assert_null(rm.plan.tomb);
    assert_int_equal(tomb_count(t), 0);
    /* removing from b too frees them */
    rm.ns = "b";
    rm.key = CHAIN2;
    T_OK(twrite(t, f_remove, &rm));
    assert_non_null(rm.plan.tomb);
    meta_snap_plan_free(&rm.plan);
    rm.key = CHAIN1;
    T_OK(twrite(t, f_remove, &rm));
    assert_string_equal(rm.plan.tomb, id1);
    meta_snap_plan_free(&rm.plan);
    assert_int_equal(tomb_count(t), 2);

    /* a tombstoned shared snapshot is not handed out: a fresh prepare */
    prepare(t, "c", "e1", NULL, false);
    commit(t, "c", CHAIN1, "e1");
    s = (S){.ns = "d", .key = "x", .labels = tlabels(t, 1, "berth.io/snapshot.ref", CHAIN1)};
    T_OK(twrite(t, f_prep_begin, &s));
    assert_true(s.plan.exists);
    assert_string_not_equal(s.plan.id, id1);
    meta_snap_plan_free(&s.plan);
}

static void test_non_digest_names_are_not_shared(void **state)
{
    tenv_t *t = *state;
    prepare(t, "a", "k", NULL, false);
    commit(t, "a", "mine", "k");
    S s = {.ns = "b", .key = "k", .labels = tlabels(t, 1, "berth.io/snapshot.ref", "mine")};
    T_OK(twrite(t, f_prep_begin, &s));
    assert_false(s.plan.exists); /* a normal prepare */
    meta_snap_plan_free(&s.plan);
}

static void test_commit_reuses_identical_snapshot(void **state)
{
    tenv_t *t = *state;
    /* Two namespaces unpack the same layer concurrently; a commits first. */
    char *ida = prepare(t, "a", "ea", NULL, false);
    char sa[24];
    snprintf(sa, sizeof(sa), "%s", ida);
    char *idb = prepare(t, "b", "eb", NULL, false);
    char sb[24];
    snprintf(sb, sizeof(sb), "%s", idb);
    commit(t, "a", CHAIN1, "ea");
    S c = {.ns = "b", .name = CHAIN1, .key = "eb"};
    T_OK(twrite(t, f_commit_begin, &c));
    c.flag = true;
    T_OK(twrite(t, f_commit_end, &c));
    assert_string_equal(c.plan.id, sa);   /* b now uses a's snapshot */
    assert_string_equal(c.plan.tomb, sb); /* and its own goes */
    meta_snap_plan_free(&c.plan);
    T_OK(tread(t, f_stat, &(S){.ns = "b", .key = CHAIN1}));
    assert_str(tstr(&t->res, "info.id"), sa);
}

static int f_lease_L(meta_tx_t *tx, void *a, berth_error_t **err)
{
    return meta_lease_create(tx, "default", "L", NULL, 0, err);
}

static int f_lease_res_L(meta_tx_t *tx, void *a, berth_error_t **err)
{
    return meta_lease_list_resources(tx, "default", "L", err);
}

static void test_lease_joins_snapshots(void **state)
{
    tenv_t *t = *state;
    S s = {.ns = "default", .key = "k"};
    T_FAIL(twrite_lease(t, "L", f_prep_begin, &s), BERTH_E_NOT_FOUND, "lease L");
    meta_snap_plan_free(&s.plan);
    T_OK(twrite(t, f_lease_L, NULL));
    T_OK(twrite_lease(t, "L", f_prep_begin, &s));
    meta_snap_plan_free(&s.plan);
    s.flag = true;
    T_OK(twrite(t, f_prep_end, &s));
    S c = {.ns = "default", .name = "done", .key = "k"};
    T_OK(twrite(t, f_commit_begin, &c));
    c.flag = true;
    T_OK(twrite_lease(t, "L", f_commit_end, &c));
    meta_snap_plan_free(&c.plan);
    T_OK(tread(t, f_lease_res_L, NULL));
    assert_int_equal(tlen(&t->res, "resources"), 2);
    assert_str(tstr(&t->res, "resources.0.type"), "snapshots/overlayfs");
    assert_str(tstr(&t->res, "resources.0.id"), "done");
    assert_str(tstr(&t->res, "resources.1.id"), "k");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)
        T(test_prepare_commit_chain),
        T(test_failed_prepare_tombstones),
        T(test_failed_commit_returns_to_active),
        T(test_reconcile),
        T(test_remove),
        T(test_update_labels),
        T(test_share_across_namespaces_on_prepare),
        T(test_non_digest_names_are_not_shared),
        T(test_commit_reuses_identical_snapshot),
        T(test_lease_joins_snapshots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
