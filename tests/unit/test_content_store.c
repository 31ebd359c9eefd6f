/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the content store (plugins/content/store.c): ingest, resume,
 * torn tails, commit checks, locking and digests, on a temporary directory
 * and without a daemon. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "store.h"

/* sha256("hello world") */
#define HELLO_DIGEST "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
/* sha256("") */
#define EMPTY_DIGEST "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct {
    char dir[64];
    content_store_t *s;
} fixture;

static void rm_rf(const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "chmod -R u+w '%s' 2>/dev/null; rm -rf '%s'", path, path);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
}

static int setup_sync(void **state, uint64_t sync_bytes)
{
    fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/berth-test-content-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    berth_error_t *err = NULL;
    f->s = content_store_open(f->dir, sync_bytes, &err);
    if (!f->s) {
        fprintf(stderr, "open store: %s\n", err->message);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_sync(state, 0);
}
/* Plain (page cache) writes instead of O_DIRECT. */
static int setup_buffered(void **state)
{
    if (setup_sync(state, 0) < 0)
        return -1;
    content_store_set_direct_io(((fixture *)*state)->s, false);
    return 0;
}
static int setup_nosync_buffered(void **state)
{
    if (setup_sync(state, 1ull << 40) < 0)
        return -1;
    content_store_set_direct_io(((fixture *)*state)->s, false);
    return 0;
}
/* A store on tmpfs, which refuses O_DIRECT: the fallback path. */
static int setup_tmpfs(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/dev/shm/berth-test-content-XXXXXX");
    if (!mkdtemp(f->dir)) {
        strcpy(f->dir, "/tmp/berth-test-content-XXXXXX");
        if (!mkdtemp(f->dir))
            return -1;
    }
    berth_error_t *err = NULL;
    f->s = content_store_open(f->dir, 0, &err);
    if (!f->s)
        return -1;
    *state = f;
    return 0;
}
/* A huge sync interval: nothing is synced unless a test asks for it. */
static int setup_nosync(void **state)
{
    return setup_sync(state, 1ull << 40);
}

static int teardown(void **state)
{
    fixture *f = *state;
    content_store_free(f->s);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static void expect_ok(int rc, berth_error_t **err)
{
    if (rc < 0)
        fail_msg("unexpected error: %s", (*err)->message);
}

static void expect_err(berth_error_t **err, berth_code_t code, const char *needle1,
                       const char *needle2)
{
    if (!*err)
        fail_msg("expected error %s, got success", berth_code_name(code));
    if ((*err)->code != code)
        fail_msg("expected code %s, got %s: %s", berth_code_name(code),
                 berth_code_name((*err)->code), (*err)->message);
    if (needle1 && !strstr((*err)->message, needle1))
        fail_msg("error \"%s\" does not mention \"%s\"", (*err)->message, needle1);
    if (needle2 && !strstr((*err)->message, needle2))
        fail_msg("error \"%s\" does not mention \"%s\"", (*err)->message, needle2);
    berth_error_free(err);
}

static char *read_path(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, fp);
    fclose(fp);
    return buf;
}

static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* The path of the only ingest directory's file `name`. */
static void only_ingest_file(fixture *f, const char *name, char *out, size_t outlen)
{
    char ing[128];
    snprintf(ing, sizeof(ing), "%s/ingest", f->dir);
    DIR *d = opendir(ing);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(out, outlen, "%.100s/%.64s/%.16s", ing, e->d_name, name);
        n++;
    }
    closedir(d);
    assert_int_equal(n, 1);
}

static void test_digest_parse(void **state)
{
    (void)state;
    berth_error_t *err = NULL;
    char hex[65];
    expect_ok(content_digest_parse(HELLO_DIGEST, hex, &err), &err);
    assert_string_equal(hex, &HELLO_DIGEST[7]);

    assert_int_equal(content_digest_parse("sha512:abcd", NULL, &err), -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, "sha512", "only sha256");
    assert_int_equal(content_digest_parse("sha256:../../../etc/passwd", NULL, &err), -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, "64", NULL);
    assert_int_equal(
        content_digest_parse(
            "sha256:B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9", NULL, &err),
        -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, "lowercase", NULL);
    assert_int_equal(content_digest_parse(HELLO_DIGEST "0", NULL, &err), -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, NULL, NULL);
    assert_int_equal(
        content_digest_parse("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
                             NULL, &err),
        -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, NULL, NULL);
    assert_int_equal(content_digest_parse("", NULL, &err), -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, NULL, NULL);
}

static void test_write_commit(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    content_ingest_t *ing = content_ingest_open(f->s, "default", "ref1", 11, HELLO_DIGEST, &err);
    assert_non_null(ing);
    assert_int_equal(content_ingest_offset(ing), 0);
    expect_ok(content_ingest_write(ing, 0, "hello ", 6, &err), &err);
    expect_ok(content_ingest_write(ing, 6, "world", 5, &err), &err);
    assert_int_equal(content_ingest_offset(ing), 11);
    content_commit_t c;
    expect_ok(content_ingest_commit(ing, 0, NULL, &c, &err), &err);
    assert_string_equal(c.digest, HELLO_DIGEST);
    assert_int_equal(c.size, 11);
    assert_false(c.existed);
    /* The data is the blob now: no more writes, no second commit. */
    assert_int_equal(content_ingest_write(ing, 11, "!", 1, &err), -1);
    expect_err(&err, BERTH_E_FAILED_PRECONDITION, "committed", NULL);
    assert_int_equal(content_ingest_commit(ing, 0, NULL, &c, &err), -1);
    expect_err(&err, BERTH_E_FAILED_PRECONDITION, "committed", NULL);
    content_ingest_discard(ing);

    char path[256];
    snprintf(path, sizeof(path), "%s/blobs/sha256/%s", f->dir, &HELLO_DIGEST[7]);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0444);
    size_t len;
    char *buf = read_path(path, &len);
    assert_int_equal(len, 11);
    assert_memory_equal(buf, "hello world", 11);
    free(buf);

    char ingdir[128];
    snprintf(ingdir, sizeof(ingdir), "%s/ingest", f->dir);
    assert_int_equal(count_entries(ingdir), 0);
    content_status_t s;
    assert_int_equal(content_ingest_status(f->s, "default", "ref1", &s, &err), -1);
    expect_err(&err, BERTH_E_NOT_FOUND, "ref1", NULL);

    char *p = NULL;
    uint64_t size = 0;
    expect_ok(content_blob_path(f->s, HELLO_DIGEST, &p, &size, &err), &err);
    assert_string_equal(p, path);
    assert_int_equal(size, 11);
    free(p);
    assert_true(content_blob_exists(f->s, HELLO_DIGEST, NULL));
    assert_false(content_blob_exists(f->s, EMPTY_DIGEST, NULL));
}

static void test_empty_blob(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    content_ingest_t *ing = content_ingest_open(f->s, "default", "empty", 0, NULL, &err);
    assert_non_null(ing);
    content_commit_t c;
    expect_ok(content_ingest_commit(ing, 0, EMPTY_DIGEST, &c, &err), &err);
    assert_string_equal(c.digest, EMPTY_DIGEST);
    assert_int_equal(c.size, 0);
    content_ingest_discard(ing);
}

static void test_offset_mismatch(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    content_ingest_t *ing = content_ingest_open(f->s, "default", "r", 0, NULL, &err);
    assert_non_null(ing);
    expect_ok(content_ingest_write(ing, 0, "abc", 3, &err), &err);
    assert_int_equal(content_ingest_write(ing, 7, "def", 3, &err), -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, "offset 7", "offset 3");
    assert_int_equal(content_ingest_write(ing, 0, "def", 3, &err), -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, "offset 0", "offset 3");
    content_ingest_close(ing);
}

static void test_resume_after_close(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    content_ingest_t *ing = content_ingest_open(f->s, "default", "res", 11, NULL, &err);
    assert_non_null(ing);
    expect_ok(content_ingest_write(ing, 0, "hello", 5, &err), &err);
    content_ingest_close(ing); /* syncs: the whole prefix is durable */

    content_status_t s;
    expect_ok(content_ingest_status(f->s, "default", "res", &s, &err), &err);
    assert_string_equal(s.ref, "res");
    assert_int_equal(s.offset, 5);
    assert_int_equal(s.total, 11);
    assert_false(s.active);
    assert_true(s.started_at > 0);
    content_status_clear(&s);

    ing = content_ingest_open(f->s, "default", "res", 0, HELLO_DIGEST, &err);
    assert_non_null(ing);
    assert_int_equal(content_ingest_offset(ing), 5);
    assert_int_equal(content_ingest_total(ing), 11);
    assert_string_equal(content_ingest_expected(ing), HELLO_DIGEST);
    expect_ok(content_ingest_status(f->s, "default", "res", &s, &err), &err);
    assert_true(s.active);
    assert_int_equal(s.offset, 5);
    content_status_clear(&s);
    expect_ok(content_ingest_write(ing, 5, " world", 6, &err), &err);
    content_commit_t c;
    expect_ok(content_ingest_commit(ing, 0, NULL, &c, &err), &err);
    assert_string_equal(c.digest, HELLO_DIGEST);
    content_ingest_discard(ing);
}

/* A writer dies (kill -9 equivalent: _exit without closing) after bytes it
 * never synced: they are a possible torn tail, truncated on resume. */
static void test_torn_tail_after_crash(void **state)
{
    fixture *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        berth_error_t *err = NULL;
        content_ingest_t *ing = content_ingest_open(f->s, "default", "crash", 0, NULL, &err);
        if (!ing || content_ingest_write(ing, 0, "hello", 5, &err) < 0 ||
            content_ingest_sync(ing, &err) < 0 || content_ingest_write(ing, 5, " wor", 4, &err) < 0)
            _exit(1);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);

    char data[256];
    only_ingest_file(f, "data", data, sizeof(data));
    struct stat st;
    assert_int_equal(stat(data, &st), 0);
    /* What the crashed writer wrote after its sync may or may not have
     * reached the file (it stages writes for O_DIRECT). */
    assert_true(st.st_size >= 5 && st.st_size <= 9);
    /* Make the tail really torn: garbage after the durable offset. */
    int fd = open(data, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\xff\xfe\xfd", 3), 3);
    close(fd);

    berth_error_t *err = NULL;
    content_status_t s;
    expect_ok(content_ingest_status(f->s, "default", "crash", &s, &err), &err);
    assert_int_equal(s.offset, 5); /* durable offset, not the file size */
    content_status_clear(&s);

    content_ingest_t *ing = content_ingest_open(f->s, "default", "crash", 0, NULL, &err);
    assert_non_null(ing);
    assert_int_equal(content_ingest_offset(ing), 5);
    assert_int_equal(stat(data, &st), 0);
    assert_int_equal(st.st_size, 5);
    expect_ok(content_ingest_write(ing, 5, " world", 6, &err), &err);
    content_commit_t c;
    expect_ok(content_ingest_commit(ing, 11, HELLO_DIGEST, &c, &err), &err);
    assert_string_equal(c.digest, HELLO_DIGEST);
    content_ingest_discard(ing);
}

/* With a small sync interval the durable offset follows the writes. */
static void test_periodic_sync(void **state)
{
    fixture *f = *state;
    content_store_free(f->s);
    berth_error_t *err = NULL;
    f->s = content_store_open(f->dir, 4, &err);
    assert_non_null(f->s);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        content_ingest_t *ing = content_ingest_open(f->s, "default", "p", 0, NULL, &err);
        if (!ing || content_ingest_write(ing, 0, "hel", 3, &err) < 0 ||
            content_ingest_write(ing, 3, "lo w", 4, &err) < 0 ||
            content_ingest_write(ing, 7, "o", 1, &err) < 0)
            _exit(1);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);
    content_ingest_t *ing = content_ingest_open(f->s, "default", "p", 0, NULL, &err);
    assert_non_null(ing);
    assert_int_equal(content_ingest_offset(ing), 7); /* synced after 7 >= 4 bytes, not after 8 */
    content_ingest_close(ing);
}

static void test_digest_mismatch(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    content_ingest_t *ing = content_ingest_open(f->s, "default", "bad", 0, EMPTY_DIGEST, &err);
    assert_non_null(ing);
    expect_ok(content_ingest_write(ing, 0, "hello world", 11, &err), &err);
    content_commit_t c;
    assert_int_equal(content_ingest_commit(ing, 0, NULL, &c, &err), -1);
    expect_err(&err, BERTH_E_FAILED_PRECONDITION, "unexpected commit digest " HELLO_DIGEST,
               "expected " EMPTY_DIGEST);
    assert_true(content_ingest_removed(ing));
    content_ingest_discard(ing);
    assert_false(content_blob_exists(f->s, HELLO_DIGEST, NULL));
    char blobs[128];
    snprintf(blobs, sizeof(blobs), "%s/blobs/sha256", f->dir);
    assert_int_equal(count_entries(blobs), 0);
    content_status_t s;
    assert_int_equal(content_ingest_status(f->s, "default", "bad", &s, &err), -1);
    expect_err(&err, BERTH_E_NOT_FOUND, NULL, NULL);
}

static void test_size_mismatch(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    content_ingest_t *ing = content_ingest_open(f->s, "default", "short", 0, NULL, &err);
    assert_non_null(ing);
    expect_ok(content_ingest_write(ing, 0, "hello", 5, &err), &err);
    content_commit_t c;
    /* Short: stays resumable. */
    assert_int_equal(content_ingest_commit(ing, 11, HELLO_DIGEST, &c, &err), -1);
    expect_err(&err, BERTH_E_FAILED_PRECONDITION, "unexpected commit size 5, expected 11", NULL);
    assert_false(content_ingest_removed(ing));
    expect_ok(content_ingest_write(ing, 5, " world", 6, &err), &err);
    /* Long: removed. */
    assert_int_equal(content_ingest_commit(ing, 10, NULL, &c, &err), -1);
    expect_err(&err, BERTH_E_FAILED_PRECONDITION, "unexpected commit size 11, expected 10", NULL);
    assert_true(content_ingest_removed(ing));
    content_ingest_discard(ing);
    assert_false(content_blob_exists(f->s, HELLO_DIGEST, NULL));

    /* Writing past a declared total is refused before it happens. */
    ing = content_ingest_open(f->s, "default", "over", 3, NULL, &err);
    assert_non_null(ing);
    assert_int_equal(content_ingest_write(ing, 0, "hello", 5, &err), -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, "exceeds the expected size 3", NULL);
    content_ingest_close(ing);
    /* A different total on resume is refused. */
    assert_null(content_ingest_open(f->s, "default", "over", 7, NULL, &err));
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, "size 7", "size 3");
    assert_null(content_ingest_open(f->s, "default", "res2", 0, "sha1:abc", &err));
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, "sha1", NULL);
}

static void test_existing_blob(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    content_ingest_t *a = content_ingest_open(f->s, "default", "a", 0, NULL, &err);
    content_ingest_t *b = content_ingest_open(f->s, "other", "b", 0, NULL, &err);
    assert_non_null(a);
    assert_non_null(b);
    expect_ok(content_ingest_write(a, 0, "hello world", 11, &err), &err);
    expect_ok(content_ingest_write(b, 0, "hello world", 11, &err), &err);
    content_commit_t ca, cb;
    expect_ok(content_ingest_commit(a, 11, HELLO_DIGEST, &ca, &err), &err);
    expect_ok(content_ingest_commit(b, 11, HELLO_DIGEST, &cb, &err), &err);
    assert_false(ca.existed);
    assert_true(cb.existed);
    assert_string_equal(cb.digest, HELLO_DIGEST);
    content_ingest_discard(a);
    content_ingest_discard(b);
    char blobs[128], ingest[128];
    snprintf(blobs, sizeof(blobs), "%s/blobs/sha256", f->dir);
    snprintf(ingest, sizeof(ingest), "%s/ingest", f->dir);
    assert_int_equal(count_entries(blobs), 1);
    assert_int_equal(count_entries(ingest), 0);

    content_blob_info_t *list = NULL;
    size_t n = 0;
    expect_ok(content_blob_list(f->s, &list, &n, &err), &err);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].digest, HELLO_DIGEST);
    assert_int_equal(list[0].size, 11);
    assert_true(list[0].mtime > 0);
    free(list);

    uint64_t freed = 0;
    expect_ok(content_blob_delete(f->s, HELLO_DIGEST, &freed, &err), &err);
    assert_int_equal(freed, 11);
    assert_int_equal(content_blob_delete(f->s, HELLO_DIGEST, &freed, &err), -1);
    expect_err(&err, BERTH_E_NOT_FOUND, HELLO_DIGEST, NULL);
    int fd = -1;
    assert_int_equal(content_blob_open(f->s, HELLO_DIGEST, &fd, NULL, &err), -1);
    expect_err(&err, BERTH_E_NOT_FOUND, NULL, NULL);
    assert_int_equal(content_blob_open(f->s, "sha256:../x", &fd, NULL, &err), -1);
    expect_err(&err, BERTH_E_INVALID_ARGUMENT, NULL, NULL);
}

static void test_locking(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    content_ingest_t *a = content_ingest_open(f->s, "default", "lk", 0, NULL, &err);
    assert_non_null(a);
    assert_null(content_ingest_open(f->s, "default", "lk", 0, NULL, &err));
    expect_err(&err, BERTH_E_FAILED_PRECONDITION, "ref lk is locked", NULL);
    /* The same ref in another namespace is another ingest. */
    content_ingest_t *b = content_ingest_open(f->s, "ns2", "lk", 0, NULL, &err);
    assert_non_null(b);
    content_ingest_close(b);
    assert_int_equal(content_ingest_abort(f->s, "default", "lk", &err), -1);
    expect_err(&err, BERTH_E_FAILED_PRECONDITION, "locked", NULL);

    /* Another process (a second plugin instance) is refused by the flock. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        content_store_t *s2 = content_store_open(f->dir, 0, &err);
        if (!s2)
            _exit(2);
        content_ingest_t *x = content_ingest_open(s2, "default", "lk", 0, NULL, &err);
        if (x)
            _exit(3);
        if (err->code != BERTH_E_FAILED_PRECONDITION || !strstr(err->message, "locked"))
            _exit(4);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);

    content_ingest_close(a);
    a = content_ingest_open(f->s, "default", "lk", 0, NULL, &err);
    assert_non_null(a);
    content_ingest_close(a);
    expect_ok(content_ingest_abort(f->s, "default", "lk", &err), &err);
    assert_int_equal(content_ingest_abort(f->s, "default", "lk", &err), -1);
    expect_err(&err, BERTH_E_NOT_FOUND, "lk", "default");
    expect_ok(content_ingest_abort(f->s, "ns2", "lk", &err), &err);
}

static void test_list_and_regex(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    const char *refs[] = {"layer-2", "config-1", "layer-1"};
    content_ingest_t *held = NULL;
    for (size_t i = 0; i < 3; i++) {
        content_ingest_t *ing = content_ingest_open(f->s, "default", refs[i], 100, NULL, &err);
        assert_non_null(ing);
        expect_ok(content_ingest_write(ing, 0, "abc", 3, &err), &err);
        if (i == 2)
            held = ing;
        else
            content_ingest_close(ing);
    }
    content_ingest_t *o = content_ingest_open(f->s, "ns2", "layer-9", 0, NULL, &err);
    assert_non_null(o);
    content_ingest_close(o);

    content_status_t *v = NULL;
    size_t n = 0;
    expect_ok(content_ingest_list(f->s, "default", NULL, &v, &n, &err), &err);
    assert_int_equal(n, 3);
    assert_string_equal(v[0].ref, "config-1");
    assert_string_equal(v[1].ref, "layer-1");
    assert_string_equal(v[2].ref, "layer-2");
    assert_true(v[1].active);
    assert_false(v[2].active);
    assert_int_equal(v[1].offset, 3);
    assert_int_equal(v[1].total, 100);
    content_status_free_array(v, n);

    regex_t re;
    assert_int_equal(regcomp(&re, "^layer", REG_EXTENDED | REG_NOSUB), 0);
    expect_ok(content_ingest_list(f->s, "default", &re, &v, &n, &err), &err);
    assert_int_equal(n, 2);
    content_status_free_array(v, n);
    expect_ok(content_ingest_list(f->s, "ns2", &re, &v, &n, &err), &err);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].ref, "layer-9");
    assert_string_equal(v[0].ns, "ns2");
    content_status_free_array(v, n);
    expect_ok(content_ingest_list(f->s, "ns3", &re, &v, &n, &err), &err);
    assert_int_equal(n, 0);
    content_status_free_array(v, n);
    regfree(&re);
    content_ingest_close(held);
}

static void test_sweeps_leftovers(void **state)
{
    fixture *f = *state;
    char p[256];
    snprintf(p, sizeof(p), "%s/ingest/.tmp-abc-1-1", f->dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/ingest/.tmp-abc-1-1/ref", f->dir);
    FILE *fp = fopen(p, "w");
    fputs("x", fp);
    fclose(fp);
    snprintf(p, sizeof(p), "%s/ingest/.rm-abc-1-2", f->dir);
    assert_int_equal(mkdir(p, 0700), 0);
    content_store_free(f->s);
    berth_error_t *err = NULL;
    f->s = content_store_open(f->dir, 0, &err);
    assert_non_null(f->s);
    DIR *d;
    snprintf(p, sizeof(p), "%s/ingest", f->dir);
    d = opendir(p);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    assert_int_equal(n, 0);
}

/* An ingest directory whose identity files are gone (crash while creating on
 * a filesystem that reorders) is started over, never trusted. */
static void test_incomplete_ingest_restarts(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    content_ingest_t *ing = content_ingest_open(f->s, "default", "inc", 0, NULL, &err);
    assert_non_null(ing);
    expect_ok(content_ingest_write(ing, 0, "abc", 3, &err), &err);
    content_ingest_close(ing);
    char p[256];
    only_ingest_file(f, "ref", p, sizeof(p));
    assert_int_equal(unlink(p), 0);
    ing = content_ingest_open(f->s, "default", "inc", 0, NULL, &err);
    assert_non_null(ing);
    assert_int_equal(content_ingest_offset(ing), 0);
    content_ingest_close(ing);
}

/* A crash after the commit linked the blob but before the ingest was removed:
 * the ingest's data is the blob itself, so resuming must not write to it. */
static void test_committed_ingest_not_reused(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        content_ingest_t *ing = content_ingest_open(f->s, "default", "lnk", 0, NULL, &err);
        content_commit_t c;
        if (!ing || content_ingest_write(ing, 0, "hello world", 11, &err) < 0 ||
            content_ingest_commit(ing, 11, HELLO_DIGEST, &c, &err) < 0)
            _exit(1);
        _exit(0); /* dies before content_ingest_discard() */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(content_blob_exists(f->s, HELLO_DIGEST, NULL));
    content_ingest_t *ing = content_ingest_open(f->s, "default", "lnk", 0, NULL, &err);
    assert_non_null(ing);
    assert_int_equal(content_ingest_offset(ing), 0);
    expect_ok(content_ingest_write(ing, 0, "XXXX", 4, &err), &err);
    content_ingest_close(ing);
    char *p = NULL;
    expect_ok(content_blob_path(f->s, HELLO_DIGEST, &p, NULL, &err), &err);
    size_t len = 0;
    char *buf = read_path(p, &len);
    assert_int_equal(len, 11);
    assert_memory_equal(buf, "hello world", 11);
    free(buf);
    free(p);
}

/* Odd chunk sizes across the O_DIRECT staging buffer, a stop at an unaligned
 * offset and a resume: the blob must be exactly the bytes written. */
static void test_large_unaligned_resume(void **state)
{
    fixture *f = *state;
    berth_error_t *err = NULL;
    size_t size = (10u << 20) + 12345;
    uint8_t *data = malloc(size);
    for (size_t i = 0; i < size; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, size, md, &mdlen, EVP_sha256(), NULL);
    char want[CONTENT_DIGEST_MAX] = "sha256:";
    for (int i = 0; i < 32; i++)
        sprintf(want + 7 + 2 * i, "%02x", md[i]);

    content_ingest_t *ing = content_ingest_open(f->s, "default", "big", size, want, &err);
    assert_non_null(ing);
    size_t off = 0, stop = (5u << 20) + 777;
    while (off < stop) {
        size_t n = 333333 < stop - off ? 333333 : stop - off;
        expect_ok(content_ingest_write(ing, off, data + off, n, &err), &err);
        off += n;
    }
    content_ingest_close(ing);
    ing = content_ingest_open(f->s, "default", "big", 0, NULL, &err);
    assert_non_null(ing);
    assert_int_equal(content_ingest_offset(ing), stop);
    while (off < size) {
        size_t n = 1000003 < size - off ? 1000003 : size - off;
        expect_ok(content_ingest_write(ing, off, data + off, n, &err), &err);
        off += n;
    }
    content_commit_t c;
    expect_ok(content_ingest_commit(ing, 0, NULL, &c, &err), &err);
    assert_string_equal(c.digest, want);
    content_ingest_discard(ing);
    int fd = -1;
    uint64_t bsize = 0;
    expect_ok(content_blob_open(f->s, want, &fd, &bsize, &err), &err);
    assert_int_equal(bsize, size);
    uint8_t *back = malloc(size);
    assert_int_equal(pread(fd, back, size, 0), (ssize_t)size);
    assert_memory_equal(back, data, size);
    close(fd);
    free(back);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_parse),
        cmocka_unit_test_setup_teardown(test_write_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offset_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_after_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_after_crash, setup_nosync, teardown),
        cmocka_unit_test_setup_teardown(test_periodic_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_existing_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_and_regex, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweeps_leftovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incomplete_ingest_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_committed_ingest_not_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_unaligned_resume, setup, teardown),
        /* The same with plain writes, and on a filesystem without O_DIRECT. */
        cmocka_unit_test_setup_teardown(test_large_unaligned_resume, setup_buffered, teardown),
        cmocka_unit_test_setup_teardown(test_large_unaligned_resume, setup_tmpfs, teardown),
        cmocka_unit_test_setup_teardown(test_write_commit, setup_buffered, teardown),
        cmocka_unit_test_setup_teardown(test_resume_after_close, setup_buffered, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_after_crash, setup_nosync_buffered,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_periodic_sync, setup_tmpfs, teardown),
        cmocka_unit_test_setup_teardown(test_write_commit, setup_tmpfs, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
