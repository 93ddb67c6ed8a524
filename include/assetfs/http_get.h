/* Ranged HTTP GETs on presigned read URLs (libcurl), for the filesystem's read path.
 *
 * A struct afs_http_conn wraps one curl easy handle that is reused transfer after
 * transfer, so its connection stays alive (one conn per thread; never shared between
 * threads at the same time). No retries here: the caller decides (it knows whether a
 * 403 means "refresh the URL" and how long it may wait). Only URLs that
 * afs_http_allow_check accepts are fetched. Nothing secret is logged: messages name a
 * URL's origin, never its query.
 */
#ifndef ASSETFS_HTTP_GET_H
#define ASSETFS_HTTP_GET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assetfs/error.h"

struct afs_http_conn;

/* Calls curl_global_init once per process (thread-safe, idempotent). */
void afs_http_global_init(void);

/* connect_timeout_s: TCP/TLS connect limit; stall_timeout_s: abort when fewer than
 * 1 KiB/s arrive for that long (a dead server never hangs a read forever). */
struct afs_http_conn *afs_http_conn_new(long connect_timeout_s, long stall_timeout_s);
void afs_http_conn_free(struct afs_http_conn *c);

/* Receives body bytes in order; return false to abort the transfer. */
typedef bool (*afs_http_sink)(void *ctx, const void *data, size_t len);

/* GET url with "Range: bytes=off-(off+len-1)". The URL must pass afs_http_allow_check
 * (http_allow.h: http/https on an allowed origin; redirects are never followed). The
 * answer is judged at its headers, before the sink sees a byte: a 206 whose
 * Content-Range starts at off, or a 200 at off 0 whose whole object fits in len, is
 * data; nothing else is (the sink never sees it). Returns true when the transfer ran to
 * the end with data (*status set); the sink saw the bytes. Returns false with *status =
 * HTTP status (403, 404, 5xx…) or 0 when no response arrived (connection refused,
 * timeout, URL refused before any connection), and err: EACCES for a refused URL
 * (*status 0), a 403 or a redirect (3xx, not followed); ENOENT for 404; EAGAIN for
 * 5xx/429 and network errors (worth retrying); EIO otherwise (incl. a 200 that ignored
 * the range, a 206 for other bytes, or an aborting sink). *total (may be NULL) gets the
 * object size from Content-Range when the server sent one, else -1. */
bool afs_http_get_range(struct afs_http_conn *c, const char *url, int64_t off, int64_t len,
                        afs_http_sink sink, void *ctx, long *status, int64_t *total,
                        struct afs_error *err);

/* Size of the object behind a read URL, with a 1-byte ranged GET (a presigned GET URL
 * does not allow HEAD); a 200 (Range ignored) gives its Content-Length without reading
 * the body. Errors as afs_http_get_range. */
bool afs_http_probe_size(struct afs_http_conn *c, const char *url, int64_t *size, long *status,
                         struct afs_error *err);

#endif
