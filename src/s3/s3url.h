/* Private to src/s3: S3 addressing shared by the signer and the URL builders. */
#ifndef ASSETFS_S3URL_H
#define ASSETFS_S3URL_H

#include <stdbool.h>

#include "assetfs/error.h"
#include "assetfs/sigv4.h"

struct afs_s3_endpoint {
  char *base; /* scheme://host[:port] for URLs (virtual-hosted: bucket.host) */
  char *host; /* Host header value: default ports dropped, as clients send it */
  char *path; /* canonical URI, encoded */
};

/* Base URL, Host and canonical URI of KEY (NULL = the bucket itself) on T's endpoint, with
 * T's addressing (path-style or virtual-hosted). Free with afs_s3_endpoint_free. */
bool afs_s3_endpoint_build(const struct afs_s3_target *t, const char *key,
                           struct afs_s3_endpoint *e, struct afs_error *err);
void afs_s3_endpoint_free(struct afs_s3_endpoint *e);

#endif
