/* The broker's own signed S3 calls that it needs: HEAD and DELETE of one object
 * (Authorization-header SigV4 through afs_sigv4_sign_request, libcurl).
 *
 * Results separate a definite answer (object there / not there) from a transient failure
 * (S3 unreachable, 5xx, timeout), so callers can back off and retry instead of turning an
 * outage into a permanent error. One curl handle per thread, reused for keep-alive.
 */
#ifndef ASSETFS_S3OPS_H
#define ASSETFS_S3OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "assetfs/error.h"
#include "assetfs/sigv4.h"

struct afs_s3_head {
  bool found;
  int64_t size;
  char etag[130];          /* without quotes */
  char content_type[256];
};

/* true: definite answer in *out (found or 404). false: transient failure (err). */
bool afs_s3op_head(const struct afs_s3_target *t, const char *key, struct afs_s3_head *out,
                   struct afs_error *err);

/* true: object gone (deleted now or already missing). false: transient failure. */
bool afs_s3op_delete(const struct afs_s3_target *t, const char *key, struct afs_error *err);

/* Frees this thread's curl handle; call before a worker thread exits. */
void afs_s3op_thread_cleanup(void);

#endif
