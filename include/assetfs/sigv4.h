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
  const char *endpoint; /* scheme://host[:port], e.g. "http://127.0.0.1:7070"; NULL = AWS */
  const char *region;   /* e.g. "us-east-1" */
  const char *bucket;
  const char *access_key;
  const char *secret_key;
  bool path_style; /* true: endpoint/bucket/key; false: bucket.host/key */
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
                        const char *subresource, const struct afs_sigv4_header *headers, size_t n,
                        long expires, time_t now, struct afs_error *err);

/* Plain unsigned URL of KEY (for public assets), with the same addressing rules. Caller frees. */
char *afs_s3_object_url(const struct afs_s3_target *t, const char *key);

/* One query parameter, raw (unencoded): the module encodes and sorts. A NULL value is
 * sent as "name=" (S3 subresources such as "uploads" or "delete"). */
struct afs_sigv4_param {
  const char *name;
  const char *value;
};

/* What a header-signed request needs besides its body: the URL and the headers to send.
 * `authorization` holds a signature: never log it. */
struct afs_sigv4_signed {
  char *url;             /* full URL with the encoded query */
  char *host;            /* value of the Host header that was signed */
  char *authorization;   /* value of the Authorization header */
  char amz_date[17];     /* value of X-Amz-Date, YYYYMMDDTHHMMSSZ */
  char payload_hash[65]; /* value of X-Amz-Content-Sha256 */
};

/* Signs a request in the Authorization header (the broker's own calls). KEY is the raw
 * object key, or NULL for a bucket-level request (ListObjectsV2, DeleteObjects).
 * `params` are the query parameters (raw). `headers` (lower-case names) are signed in
 * addition to host, x-amz-date and x-amz-content-sha256; the caller must send them with
 * the same values. `payload_sha256_hex` is the hex SHA-256 of the body (NULL = empty
 * body). Fills *out (free with afs_sigv4_signed_free). */
bool afs_sigv4_sign_request(const struct afs_s3_target *t, const char *method, const char *key,
                            const struct afs_sigv4_param *params, size_t nparams,
                            const struct afs_sigv4_header *headers, size_t nheaders,
                            const char *payload_sha256_hex, time_t now,
                            struct afs_sigv4_signed *out, struct afs_error *err);
void afs_sigv4_signed_free(struct afs_sigv4_signed *s);

/* Same as afs_sigv4_presign with raw (unencoded) query parameters instead of an encoded
 * subresource string. */
char *afs_sigv4_presign_params(const struct afs_s3_target *t, const char *method, const char *key,
                               const struct afs_sigv4_param *params, size_t nparams,
                               const struct afs_sigv4_header *headers, size_t n, long expires,
                               time_t now, struct afs_error *err);

/* S3's URI encoding: every byte except A-Za-z0-9 - . _ ~ becomes %XX (upper-case hex);
 * '/' is kept when keep_slash. Caller frees; NULL only when out of memory. */
char *afs_s3_uri_encode(const char *s, bool keep_slash);

/* Hex SHA-256 of LEN bytes (out: 65 bytes) and base64 MD5 (out: 25 bytes), for bodies. */
void afs_sha256_hex(const void *data, size_t len, char out[65]);
void afs_md5_base64(const void *data, size_t len, char out[25]);

/* Formats NOW as YYYYMMDDTHHMMSSZ (out: 17 bytes); parses it back (false if malformed). */
void afs_sigv4_format_time(time_t now, char out[17]);
bool afs_sigv4_parse_time(const char *s, time_t *out);

/* Unsigned URL for a public asset under a configured public base URL (a CDN or the
 * bucket's website), e.g. base "https://cdn.example.com/assets" and key "public/a b.jpg"
 * give "https://cdn.example.com/assets/public/a%20b.jpg". NULL base or "" falls back to
 * nothing: the caller then uses afs_s3_object_url. Caller frees; NULL on bad base. */
char *afs_s3_public_url(const char *base, const char *key);

#endif
