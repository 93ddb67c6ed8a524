/* The list of URL origins the broker signs for, shared through MongoDB so that a mount
 * knows which URLs in records are the bucket's (DESIGN.md §4).
 *
 * The broker writes, at startup, one document in the AssetfsConfig collection:
 *   {_id: "endpoints", origins: ["http://127.0.0.1:7070", ...], current: [...],
 *    updatedAt, broker}
 * current: the origin of its S3 object URLs (path-style: the endpoint; virtual-hosted:
 * the bucket's host) and of public_base_url when set; origins: every origin any broker
 * of this database published ($addToSet: records keep URLs signed before a change of
 * endpoint until they expire; remove a retired origin by hand). The record is as
 * trustworthy as the database's access control: writes to AssetfsConfig belong to the
 * broker's role only (a mount that must not trust it pins its list with
 * -o url_hosts=...,url_hosts_only).
 *
 * The mount (src/fs/endpoints.c) reads it before mounting, adds -o url_hosts, installs
 * the result as src/http's allowed origins (http_allow.h), and reloads the record when
 * a URL names an origin it does not know (at most once a second).
 */
#ifndef ASSETFS_ENDPOINTS_H
#define ASSETFS_ENDPOINTS_H

#include <stdbool.h>
#include <stddef.h>

#include "assetfs/config.h"
#include "assetfs/db.h"
#include "assetfs/origin.h"

#define AFS_COLL_CONFIG "AssetfsConfig"
#define AFS_ENDPOINTS_ID "endpoints"

struct afs_s3_target;

/* Broker (src/broker/endpoints.c): derives the origins from cfg and t and upserts the
 * record. Logs what it published, or a warning when it cannot (mounts then refuse the
 * broker's URLs unless told with url_hosts). */
bool afs_endpoints_publish(struct afs_db *db, const struct afs_config *cfg,
                           const struct afs_s3_target *t);

/* Mount (src/fs/endpoints.c): reads the record through a single-threaded client on
 * mongo_uri (before libfuse forks: the pool must not start threads yet), adds
 * url_hosts (NULL-terminated, may be NULL), installs the allowed origins and a reload
 * through db's pool. With url_hosts_only the record is not read at all. Logs the list,
 * and a warning when it is empty (every URL is then refused with EACCES until a broker
 * publishes its record). false only for an invalid url_hosts entry (err). */
bool afs_fs_endpoints_init(struct afs_db *db, const char *mongo_uri, const char *const *url_hosts,
                           bool url_hosts_only, struct afs_error *err);

/* The "origins" array of an endpoints record: each valid entry parsed (invalid ones are
 * skipped with a warning). *out malloc'd (caller frees); *n = 0 when none. Shared by the
 * mount and the tests. */
void afs_endpoints_parse_doc(const bson_t *doc, struct afs_origin **out, size_t *n);

#endif
