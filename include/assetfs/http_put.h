/* Uploads of local files to presigned S3 PUT URLs (libcurl).
 *
 * One curl easy handle per transfer; several parts of one asset (original, cuts,
 * preview) go in parallel, one thread each. Transient failures (connection errors,
 * timeouts, HTTP 5xx, 408, 429) are retried with exponential backoff until the
 * attempt limit or the deadline; other 4xx are final, except that an expired
 * presigned URL (403 whose body says it expired) is reported as EKEYEXPIRED so the
 * caller can ask the broker for a new record. A URL that afs_http_allow_check refuses
 * (http_allow.h) is not sent at all, and a redirect is not followed: both EACCES, final.
 */
#ifndef ASSETFS_HTTP_PUT_H
#define ASSETFS_HTTP_PUT_H

#include <stdbool.h>
#include <stdint.h>

#include "assetfs/clock.h"
#include "assetfs/error.h"

/* S3's limit for a single PUT. */
#define AFS_PUT_MAX_SIZE (5LL * 1024 * 1024 * 1024)

struct afs_put_opts {
  int max_attempts;        /* default 6 */
  long connect_timeout_ms; /* default 10000 */
  long stall_seconds;      /* abort an attempt that moves no byte for this long; default 30 */
  int64_t deadline_ms;     /* CLOCK_MONOTONIC ms after which no new attempt starts; 0 = none */
  int parallel;            /* afs_http_put_all: transfers at once; 0 = one per job (at most 8) */
};

struct afs_put_job {
  const char *url;          /* presigned PUT URL (never logged unredacted) */
  const char *path;         /* local file to send */
  const char *content_type; /* sent as Content-Type (it is part of what the broker signed) */
  const char *what;         /* "original", "small", … for messages */
  int64_t offset, length;   /* length > 0: only these bytes of path (a multipart part) */
  /* results */
  bool ok;
  long http_status; /* last HTTP status, 0 if none */
  char etag[130];   /* the ETag S3 answered with, without quotes ("" if none) */
  struct afs_error err;
};

void afs_put_opts_default(struct afs_put_opts *o);

/* PUTs one file with retries. Fills job->ok/http_status/err; returns job->ok. */
bool afs_http_put(struct afs_put_job *job, const struct afs_put_opts *opts);

/* PUTs all jobs, opts->parallel at a time. Returns true if every job succeeded; otherwise
 * err gets the first failure (EKEYEXPIRED wins, so callers renew the URLs). */
bool afs_http_put_all(struct afs_put_job *jobs, int n, const struct afs_put_opts *opts,
                      struct afs_error *err);

#endif
