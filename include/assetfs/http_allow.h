/* Where the filesystem's HTTP transfers may go (DESIGN.md §4: "the filesystem fetches
 * only http/https URLs on the bucket's own endpoint, or the public base URL").
 *
 * A URL in a record is data anyone with write access to the database can set, so every
 * GET and PUT of src/http checks it here first: its origin (origin.h) must be one of
 * the allowed origins, which are the mount's fixed list (-o url_hosts) plus the list
 * the broker publishes (src/broker/endpoints.c), reloaded through a callback when a URL
 * names an origin not known yet: a broker started after the mount, or one whose
 * settings changed, is picked up at the first URL it signed. Reloads are single-flight
 * and at least min_reload_ms apart, and a reload always starts after the miss that asks
 * for it (a URL signed by a broker that published first is never refused for being
 * early); an origin still refused after such a reload is refused at once, without a
 * pause, until min_reload_ms have passed since the last reload. Until
 * afs_http_allow_install is called (unit tests, the broker) only the scheme and the URL's
 * shape are checked.
 *
 * Thread-safe; the lists are copied in.
 */
#ifndef ASSETFS_HTTP_ALLOW_H
#define ASSETFS_HTTP_ALLOW_H

#include <stdbool.h>
#include <stddef.h>

#include "assetfs/error.h"
#include "assetfs/origin.h"

/* Fills *out (malloc'd, caller frees) with the published origins; *n = 0 when there is
 * no list. false with err when the source cannot be read (the previous list stays). */
typedef bool (*afs_http_allow_reload_fn)(void *ctx, struct afs_origin **out, size_t *n,
                                         struct afs_error *err);

/* Turns confinement on: fixed origins (may be none), the loaded list's first value
 * (may be none), and where to reload it from (NULL: never). */
void afs_http_allow_install(const struct afs_origin *fixed, size_t nfixed,
                            const struct afs_origin *loaded, size_t nloaded,
                            afs_http_allow_reload_fn reload, void *ctx, long min_reload_ms);

/* Back to "not confined" (tests). */
void afs_http_allow_reset(void);

/* true when url may be fetched or uploaded to. false with EACCES and a message naming
 * the refused origin (never the query) otherwise. */
bool afs_http_allow_check(const char *url, struct afs_error *err);

/* Reloads started and URLs refused since install (tests, diagnostics). */
void afs_http_allow_stats(unsigned long *reloads, unsigned long *refused);

#endif
