/* AWS Signature Version 4 for S3 (OpenSSL): presigned query-string URLs for clients,
 * and Authorization headers for the broker's own requests.
 *
 * Only the broker links this module (afs_s3): assetfs, the client, cannot sign.
 */
#ifndef ASSETFS_SIGV4_H
#define ASSETFS_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "assetfs/error.h"

#define AFS_SIGV4_MAX_EXPIRES 604800L /* S3 refuses presigned URLs valid longer than 7 days */

struct afs_s3_target {
  const char *endpoint;   /* scheme://host[:port], e.g. "http://127.0.0.1:7070"; NULL = AWS */
  const char *region;     /* e.g. "us-east-1" */
  const char *bucket;
  const char *access_key;
  const char *secret_key;
  bool path_style;        /* true: endpoint/bucket/key; false: bucket.host/key */
};

/* One extra header to sign (lower-case name). */
struct afs_sigv4_header {
  const char *name;
  const char *value;
};

/* Returns a presigned URL for METHOD on KEY (raw, unencoded object key), valid for
 * `expires` seconds (1..AFS_SIGV4_MAX_EXPIRES) from `now`. `subresource` is an extra,
 * already-encoded query string such as "partNumber=1&uploadId=abc" (or NULL).
 * `headers` (n of them) are signed too, e.g. content-type for a PUT, so S3 refuses a
 * request that does not send them. Caller frees. NULL with err set on bad input. */
char *afs_sigv4_presign(const struct afs_s3_target *t, const char *method, const char *key,
                        const char *subresource, const struct afs_sigv4_header *headers,
                        size_t n, long expires, time_t now, struct afs_error *err);

/* Plain unsigned URL of KEY (for public assets), with the same addressing rules. Caller frees. */
char *afs_s3_object_url(const struct afs_s3_target *t, const char *key);

#endif
