/* SPDX-License-Identifier: Apache-2.0 */
/* The content store on disk, without an event loop: content-addressed blobs
 * and resumable ingests under <root>/content (docs/content.md). Every function
 * here may block on file I/O or hashing: call them from a worker thread
 * (uv_queue_work), never from the plugin's loop. */
#pragma once

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>

#include "berth/common.h"
#include "berth/error.h"

/** "sha256:" + 64 hex + NUL. */
#define CONTENT_DIGEST_MAX 72
/** Default interval between fdatasync()s of an ingest's data (8 MiB). */
#define CONTENT_DEFAULT_SYNC_BYTES (8u << 20)
/** Longest ingest ref and namespace we accept. */
#define CONTENT_REF_MAX 1024
#define CONTENT_NS_MAX 256

typedef struct content_store_s content_store_t;
typedef struct content_ingest_s content_ingest_t;

/** The status of one ingest. Strings are owned: free with content_status_clear(). */
typedef struct {
    char *ref;
    char *ns;
    uint64_t offset; /* bytes durably received (on disk) or written (active) */
    uint64_t total;  /* expected size, 0 = unknown */
    char *expected;  /* expected digest or NULL */
    int64_t started_at;
    int64_t updated_at;
    bool active; /* a writer holds it now */
} content_status_t;

void content_status_clear(content_status_t *st);
/** Frees an array of n statuses (and the array). */
void content_status_free_array(content_status_t *sts, size_t n);

typedef struct {
    char digest[CONTENT_DIGEST_MAX];
    uint64_t size;
    int64_t mtime; /* ns since the epoch */
} content_blob_info_t;

/** Checks that `digest` is exactly "sha256:" followed by 64 lowercase hex
 * digits and copies the hex part (NUL-terminated) to hex_out if non-NULL.
 * Another algorithm or a malformed digest is invalid_argument. */
int content_digest_parse(const char *digest, char hex_out[65], berth_error_t **err);

/** Opens (creating 0700 dirs as needed) the store in `root` (the plugin's
 * `<root>/content`). sync_bytes: how often an ingest fdatasync()s its data and
 * records the durable offset (0 = default). Removes temp leftovers of a
 * previous crash. Caller frees with content_store_free(). */
content_store_t *content_store_open(const char *root, uint64_t sync_bytes, berth_error_t **err);
/** Frees the store; every ingest must have been closed before. */
void content_store_free(content_store_t *s);
const char *content_store_root(content_store_t *s);
/** Whether ingests write with O_DIRECT where the filesystem supports it
 * (default true; set before any ingest is opened). */
void content_store_set_direct_io(content_store_t *s, bool on);

/* ---- blobs --------------------------------------------------------------- */

/** Path of the committed blob (malloc'd, caller frees) and its size;
 * not_found if absent. */
int content_blob_path(content_store_t *s, const char *digest, char **path_out, uint64_t *size,
                      berth_error_t **err);
/** Opens the blob read-only (O_CLOEXEC); caller closes *fd. not_found if absent. */
int content_blob_open(content_store_t *s, const char *digest, int *fd, uint64_t *size,
                      berth_error_t **err);
/** True if the blob exists (size in *size if non-NULL). digest must be valid. */
bool content_blob_exists(content_store_t *s, const char *digest, uint64_t *size);
/** Deletes a blob (fsyncs the directory); *freed = its size. not_found if absent. */
int content_blob_delete(content_store_t *s, const char *digest, uint64_t *freed,
                        berth_error_t **err);
/** Lists committed blobs; caller frees *out with free(). */
int content_blob_list(content_store_t *s, content_blob_info_t **out, size_t *n,
                      berth_error_t **err);

/* ---- ingests ------------------------------------------------------------- */

/** Opens or resumes the ingest of (ns, ref) and locks it, in this process
 * (a second open of the same (ns, ref) fails with failed_precondition "ref X is
 * locked") and across processes (flock on the ingest directory).
 * A new ingest is created atomically. A resumed one is truncated to its
 * durable offset (anything after it may be a torn tail) and its data is
 * re-hashed up to there. total (0 = unknown) and expected (NULL = unknown) are
 * recorded if the ingest did not know them yet; values that differ from the
 * recorded ones are invalid_argument. Caller ends with content_ingest_close()
 * or content_ingest_discard(). */
content_ingest_t *content_ingest_open(content_store_t *s, const char *ns, const char *ref,
                                      uint64_t total, const char *expected, berth_error_t **err);
/** Bytes written so far (where the next write must start). */
uint64_t content_ingest_offset(content_ingest_t *ing);
uint64_t content_ingest_total(content_ingest_t *ing);
/** The expected digest recorded for the ingest, or NULL. Borrowed. */
const char *content_ingest_expected(content_ingest_t *ing);
const char *content_ingest_ref(content_ingest_t *ing);

/** Writes n bytes at `offset` (which must equal content_ingest_offset(),
 * else invalid_argument naming both) and hashes them. Equivalent to
 * content_ingest_write_data() then content_ingest_hash(). */
int content_ingest_write(content_ingest_t *ing, uint64_t offset, const void *p, size_t n,
                         berth_error_t **err);
/** The two halves of content_ingest_write, so that writing and hashing can
 * run on two threads at once: each must be called in stream order, and the
 * two may run concurrently with each other (they touch disjoint state).
 * write_data fdatasync()s and records the durable offset every sync_bytes. */
int content_ingest_write_data(content_ingest_t *ing, uint64_t offset, const void *p, size_t n,
                              berth_error_t **err);
void content_ingest_hash(content_ingest_t *ing, const void *p, size_t n);

/** Makes what was written so far durable and records it as the resume
 * offset. */
int content_ingest_sync(content_ingest_t *ing, berth_error_t **err);

typedef struct {
    char digest[CONTENT_DIGEST_MAX];
    uint64_t size;
    bool existed; /* the blob was already committed (containerd's already_exists) */
} content_commit_t;

/** Commits: checks the size (size 0 = use the recorded total, if any) and the
 * digest (expected NULL = use the recorded one, if any), fdatasync()s the data
 * and links it into blobs/sha256/<hex> (0444), fsyncing the directory.
 *  - fewer bytes than the expected size: failed_precondition
 *    "unexpected commit size A, expected B"; the ingest stays resumable;
 *  - more bytes than expected, or a digest mismatch: failed_precondition
 *    "unexpected commit digest sha256:A, expected sha256:B"; the ingest is
 *    removed (its bytes can never match), no blob is left;
 *  - a blob with that digest exists already: success, existed = true.
 * On success the ingest directory is still there (so a caller that must
 * record the commit elsewhere first can retry): finish with
 * content_ingest_discard(). Requires every write to be hashed. */
int content_ingest_commit(content_ingest_t *ing, uint64_t size, const char *expected,
                          content_commit_t *out, berth_error_t **err);
/** True once the ingest directory was removed (by commit failure or discard). */
bool content_ingest_removed(content_ingest_t *ing);

/** Unlocks and frees the ingest, keeping it on disk (resumable). Syncs first
 * so the next open resumes from everything written. NULL is a no-op. */
void content_ingest_close(content_ingest_t *ing);
/** Removes the ingest directory, unlocks and frees. NULL is a no-op. */
void content_ingest_discard(content_ingest_t *ing);

/** Status of the ingest (ns, ref): from the live writer when it is active,
 * else from disk (durable offset). not_found if there is none. */
int content_ingest_status(content_store_t *s, const char *ns, const char *ref,
                          content_status_t *out, berth_error_t **err);
/** Every ingest of namespace ns whose ref matches re (NULL = all), sorted by
 * ref. Caller frees with content_status_free_array(). */
int content_ingest_list(content_store_t *s, const char *ns, const regex_t *re,
                        content_status_t **out, size_t *n, berth_error_t **err);
/** Removes the ingest (ns, ref): not_found if absent, failed_precondition if a
 * writer holds it. */
int content_ingest_abort(content_store_t *s, const char *ns, const char *ref, berth_error_t **err);
