/* URL origins (scheme, host, port): the one place that decides whether two URLs point
 * at the same server, for the filesystem's "fetch only from the bucket" rule
 * (DESIGN.md §4; src/http/allow.c applies it to every transfer).
 *
 * The parser is deliberately strict: an origin is what a careful reader of the URL
 * would connect to, and anything that parsers are known to read differently (user
 * info, backslashes, percent-encoded or non-ASCII hosts, empty or non-numeric ports,
 * control characters) is refused rather than guessed at. What denotes the same server
 * compares equal: scheme and host are case-insensitive, 80/443 equal an absent port,
 * a trailing dot of a host name is dropped, IPv4 numbers are canonical dotted quads
 * (127.1 is 127.0.0.1) and IPv6 literals are canonical (inet_ntop).
 */
#ifndef ASSETFS_ORIGIN_H
#define ASSETFS_ORIGIN_H

#include <stdbool.h>
#include <stddef.h>

#include "assetfs/error.h"

struct afs_origin {
  char scheme[6]; /* "http" or "https" */
  char host[256]; /* lower case; IPv6 without brackets */
  int port;       /* always set: 80/443 when the URL has none */
};

/* Origin of url (an absolute http/https URL; path, query and fragment are ignored but
 * must be printable ASCII). false with EINVAL and a message that never quotes the
 * query (it may carry a signature). */
bool afs_origin_parse(const char *url, struct afs_origin *o, struct afs_error *err);

bool afs_origin_equal(const struct afs_origin *a, const struct afs_origin *b);

/* "scheme://host[:port]" (the port only when not the scheme's default; IPv6 in
 * brackets). n >= 300 always fits. */
void afs_origin_format(const struct afs_origin *o, char *out, size_t n);

/* What to name in a log line for url: its origin when it parses, else its scheme and
 * authority, sanitised (user info replaced by "***@", non-printables by '?', cut at 120
 * characters), never its path or query. */
void afs_origin_describe(const char *url, char *out, size_t n);

#endif
