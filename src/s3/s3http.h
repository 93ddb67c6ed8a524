/* Private to src/s3: one signed S3 request with retries (s3http.c), used by the
 * operations in s3client.c. */
#ifndef ASSETFS_S3HTTP_H
#define ASSETFS_S3HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "assetfs/s3.h"

struct afs_s3_req {
  const char *method;
  const char *key; /* NULL: bucket-level */
  const struct afs_sigv4_param *params;
  size_t nparams;
  const struct afs_sigv4_header *headers; /* signed and sent */
  size_t nheaders;
  const char *body;
  size_t body_len;
  bool error_in_200; /* CompleteMultipartUpload may answer 200 with an <Error> body */
};

struct afs_s3_resp {
  long status;
  char *body;
  size_t len;
  bool too_big;
  struct afs_s3_object_info info;
};

void afs_s3_resp_free(struct afs_s3_resp *r);

/* Signs and sends REQ, retrying transient failures (connection errors, timeouts, 5xx,
 * 429) with backoff. true: *resp holds S3's definite answer, any status, for the caller
 * to interpret (free with afs_s3_resp_free, also after false). false: err is set. */
bool afs_s3_perform(const struct afs_s3_client *c, const struct afs_s3_req *req,
                    struct afs_s3_resp *resp, struct afs_error *err);

/* Maps a definite non-success answer to err (403 EACCES, 404 ENOENT, else EIO, with S3's
 * <Code> and <Message>); returns false. */
bool afs_s3_status_error(const struct afs_s3_resp *r, const char *method, const char *what,
                         struct afs_error *err);

/* Copies a header value (or XML ETag) trimmed and without surrounding quotes. */
void afs_s3_copy_header_value(char *dst, size_t n, const char *v, size_t vl);

#endif
