/* The broker's own S3 requests, signed in the Authorization header (SigV4, sigv4.h) and
 * sent with libcurl: HEAD, DELETE, DeleteObjects, ListObjectsV2, multipart
 * create/complete/abort.
 *
 * Transient failures (connection refused/reset, DNS, timeouts, 5xx, 429) are retried with
 * exponential backoff and jitter; 4xx answers are not. Error codes (struct afs_error):
 *   EHOSTUNREACH  S3 could not be reached (connect/DNS/timeout/reset), after retries
 *   EAGAIN        S3 answered 5xx/429 on every attempt
 *   EACCES        403 (bad credentials, clock skew, policy)
 *   ENOENT        404 (no such key / upload / bucket) where that is an error
 *   EINVAL        bad arguments (empty key, too many keys, …)
 *   EIO           any other answer; S3's error code and message are in err->msg
 * afs_s3_error_transient() tells which of them are worth retrying later.
 *
 * Threads: a struct afs_s3_client is read-only once initialised and may be shared by
 * every thread. Each thread keeps its own curl easy handle (thread-local, for keep-alive),
 * so no request shares mutable state; call afs_s3_thread_cleanup() before a thread that
 * used these functions exits. Nothing here logs a signature or secret: only method, key
 * and status reach the debug log.
 */
#ifndef ASSETFS_S3_H
#define ASSETFS_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assetfs/config.h"
#include "assetfs/error.h"
#include "assetfs/sigv4.h"

#define AFS_S3_DELETE_BATCH 1000 /* S3's limit on keys per DeleteObjects request */

struct afs_s3_client {
  struct afs_s3_target target; /* strings borrowed: they must outlive the client */
  int max_attempts;            /* tries per request, >= 1; default 5 */
  long backoff_ms;             /* first retry delay, doubled each time (jittered); default 200 */
  long max_backoff_ms;         /* cap on one delay; default 5000 */
  long connect_timeout_s;      /* default 10 */
  long timeout_s;              /* whole request; default 60 */
};

/* Fills defaults around TARGET (copied by value; its strings are borrowed). */
void afs_s3_client_init(struct afs_s3_client *c, const struct afs_s3_target *target);
/* Target from the broker's config (strings borrowed from cfg). */
void afs_s3_target_from_config(struct afs_s3_target *t, const struct afs_config *cfg);

/* Frees the calling thread's curl handle (before the thread exits). */
void afs_s3_thread_cleanup(void);

bool afs_s3_error_transient(const struct afs_error *err);

struct afs_s3_object_info {
  bool exists;
  int64_t size;
  char etag[130]; /* without the surrounding quotes */
  char content_type[256];
  int64_t last_modified; /* Unix time, 0 if the server did not say */
};

/* HEAD KEY. A missing object is not an error: true with exists = false. */
bool afs_s3_head_object(const struct afs_s3_client *c, const char *key,
                        struct afs_s3_object_info *out, struct afs_error *err);

/* DELETE KEY. Deleting a missing key succeeds (S3 semantics). */
bool afs_s3_delete_object(const struct afs_s3_client *c, const char *key, struct afs_error *err);

/* Deletes N keys with DeleteObjects, in batches of AFS_S3_DELETE_BATCH (Content-MD5 set
 * as S3 requires); keys that XML cannot carry are deleted one by one. Missing keys count
 * as deleted. *n_failed (may be NULL) gets how many keys S3 refused; false if any failed,
 * with the first failure in err. */
bool afs_s3_delete_objects(const struct afs_s3_client *c, const char *const *keys, size_t n,
                           size_t *n_failed, struct afs_error *err);

struct afs_s3_listed {
  const char *key; /* decoded */
  int64_t size;
  const char *etag; /* without quotes */
};

/* Called for each listed object; return false to stop listing (afs_s3_list_objects then
 * returns true). */
typedef bool (*afs_s3_list_fn)(void *ud, const struct afs_s3_listed *obj);

/* ListObjectsV2 of every key under PREFIX ("" or NULL = whole bucket), following
 * continuation tokens. page_size 0 = S3's default (1000). */
bool afs_s3_list_objects(const struct afs_s3_client *c, const char *prefix, int page_size,
                         afs_s3_list_fn fn, void *ud, struct afs_error *err);

/* CreateMultipartUpload; *upload_id is malloc'd (caller frees). content_type may be NULL. */
bool afs_s3_multipart_create(const struct afs_s3_client *c, const char *key,
                             const char *content_type, char **upload_id, struct afs_error *err);

struct afs_s3_part {
  int number;       /* 1..10000, ascending */
  const char *etag; /* as returned by the part's PUT, quotes optional */
};

/* CompleteMultipartUpload. etag_out (may be NULL, 130 bytes) gets the object's ETag. */
bool afs_s3_multipart_complete(const struct afs_s3_client *c, const char *key,
                               const char *upload_id, const struct afs_s3_part *parts, size_t n,
                               char *etag_out, struct afs_error *err);

/* UploadPartCopy: part `number` of upload_id at key becomes bytes [off, off + len) of the
 * object src_key in the same bucket, copied by S3 itself (nothing goes through the
 * caller). etag_out (130 bytes) gets the part's ETag. */
bool afs_s3_upload_part_copy(const struct afs_s3_client *c, const char *key, const char *upload_id,
                             int number, const char *src_key, int64_t off, int64_t len,
                             char *etag_out, struct afs_error *err);

struct afs_s3_mp_listed {
  const char *key; /* decoded */
  const char *upload_id;
  int64_t initiated_ms; /* ms since the epoch; 0 when S3 did not say */
};
typedef bool (*afs_s3_mp_list_fn)(void *ud, const struct afs_s3_mp_listed *u);

/* ListMultipartUploads of the bucket's uploads under PREFIX ("" or NULL: all), following
 * the markers; fn as for afs_s3_list_objects. */
bool afs_s3_multipart_list(const struct afs_s3_client *c, const char *prefix, afs_s3_mp_list_fn fn,
                           void *ud, struct afs_error *err);

/* AbortMultipartUpload. An upload that is already gone counts as aborted. */
bool afs_s3_multipart_abort(const struct afs_s3_client *c, const char *key, const char *upload_id,
                            struct afs_error *err);

#endif
