/* The read-side namespace of the filesystem: partitions, directories and files as
 * CosyncAsset records say, with a short-lived metadata cache and read-URL refresh.
 *
 * Source of truth is MongoDB, never S3 listing. Listing a directory costs one indexed
 * query ({_partition, status:"active", filePath prefix}); the answer fills the cache for
 * the whole subtree, so `ls -l`, `find` and file managers then run from memory. Lookups
 * answer from the cache while it is fresh (attr_ttl for files, list_ttl for listings and
 * for files learnt from a listing, so `ls -l` of 10,000 files costs one query); changes
 * by other clients therefore show within those TTLs. A listing's list_ttl counts from
 * when its answer arrived (on FerretDB a 10,000-record listing takes longer than
 * list_ttl), so a change made while it was asked shows at most list_ttl plus that
 * query's duration later. A name not in the cache is absent
 * while a listing that covers it (the parent's or an ancestor's; or a remembered empty
 * listing) is fresh, so creating many new files costs a listing per directory per
 * list_ttl, not a query per name. In directories of 64 entries or
 * more, a stale entry (file or subdirectory; a directory with 64 entries or more itself)
 * is served at once while the directory is re-listed in the background, one re-listing
 * at a time (stale-while-revalidate, at most list_ttl + 30 s old), so a slow MongoDB
 * never turns `ls -l` into one query per entry, nor into listings in the foreground while
 * the kernel revalidates the directory. When MongoDB cannot be
 * reached, whatever is cached (however old) is still served; anything else is EIO.
 *
 * Paths: `partition` is the MongoDB _partition value (not the encoded directory name);
 * `path` is relative to the partition directory, without leading '/', "" for its root.
 * Assets without filePath (written by other Cosync clients) appear under a name derived
 * from their S3 key (afs_naming_display_name); when two names clash, the newest asset
 * keeps the clean name only if it has a real filePath, otherwise the oldest keeps it and
 * the others get " (<last 6 hex of _id>)" before the extension, which stays stable.
 *
 * Cuts: `<path>` = ".cuts/{small,medium,large,preview}/<filePath>" resolves to the cut
 * (a video's preview and its cuts: "<filePath>.png"). ".cuts" is not shown in listings
 * of the partition root (so find, cp -r and rsync do not copy cuts twice) but can be
 * looked up, listed and read. A cut's size is not in the record: it is learned once with
 * a 1-byte ranged GET on its URL and cached.
 *
 * Threads: every function is safe to call from any thread. Locks (see catalog_int.h):
 * cat->mu (tree, partitions) and cat->ref_mu (URL refresh table, cut sizes); a thread
 * never holds both, and no lock is held during MongoDB or HTTP round trips or callbacks.
 */
#ifndef ASSETFS_CATALOG_H
#define ASSETFS_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assetfs/cosync.h"
#include "assetfs/db.h"
#include "assetfs/error.h"
#include "assetfs/naming.h"

/* A copy of one CosyncAsset's fields; strings are owned (never NULL: "" when absent).
 * Free the fields with afs_asset_free (the struct itself is the caller's). */
struct afs_asset {
  char id[AFS_OID_HEX]; /* _id as 24 hex digits */
  char *partition;      /* _partition */
  char *file_path;      /* filePath, or the derived name (see derived_name) */
  char *path;           /* S3 key of the original */
  char *uid;
  char *session_id;
  char *content_type;
  char *url_part[AFS_PART_COUNT]; /* read URLs indexed by enum afs_part: the record's
                                   * url, urlSmall, urlMedium, urlLarge, urlVideoPreview */
  char *caption;
  char *color;
  char *status; /* "active" for everything the catalog returns */
  char *etag;
  int64_t size;            /* bytes of the part (`part` below); -1 if unknown */
  int64_t mtime_ms;        /* mtime, else updatedAt, else createdAt (ms since epoch) */
  int64_t created_ms;      /* createdAt */
  int64_t expiration_ms;   /* expiration; 0 when none (public or never set) */
  double expiration_hours; /* 0 = public, URLs never expire */
  int32_t x_res, y_res;
  double duration;
  bool derived_name;  /* file_path derived from `path` (no filePath in record) */
  enum afs_part part; /* which part a lookup under .cuts/ resolved to */
};

void afs_asset_free(struct afs_asset *a);
/* Deep copy; dst is overwritten (not freed first). */
void afs_asset_copy(struct afs_asset *dst, const struct afs_asset *src);
/* URL of the part a lookup resolved to ("" if the record has none). */
const char *afs_asset_part_url(const struct afs_asset *a);

/* Extended attributes "user.assetfs.<field>": id, url, urlSmall, urlMedium, urlLarge,
 * urlVideoPreview, expiration (ISO 8601 UTC), expirationHours, contentType, size, xRes,
 * yRes, duration, caption, color, status, etag, path, filePath, uid, partition.
 * Returns false (ENODATA) when the name is not one of them or the field is empty.
 * *value: caller frees. */
bool afs_asset_xattr_get(const struct afs_asset *a, const char *name, char **value,
                         struct afs_error *err);
/* listxattr format (names, each NUL-terminated) into buf of size; returns the bytes
 * needed (call with size 0 to learn it); only non-empty fields are listed. */
size_t afs_asset_xattr_list(const struct afs_asset *a, char *buf, size_t size);

struct afs_catalog_opts {
  const char *upload_partition;  /* always listed among the partitions; may be NULL */
  const char *const *partitions; /* NULL-terminated explicit list; NULL = every partition
                                  * with active assets (+ upload_partition) */
  const char *uid;               /* for CosyncFunctionCall records */
  const char *session_id;
  const struct evp_pkey_st *key; /* key_file: calls are signed and captions are calls */
  const uint8_t *broker_pub;     /* broker_key (32 bytes): only assets it sealed; NULL = any */
  double attr_ttl;               /* seconds a file's attributes are trusted; default 1 */
  double list_ttl;               /* seconds a listing is trusted; default 3 */
  double refresh_margin;         /* refresh a URL expiring within this many seconds
                                  * (capped at 10 % of the URL's lifetime); default 60 */
  double refresh_timeout;        /* seconds to wait for the broker's refresh; default 15 */
};

/* Fills the defaults above (pointers NULL). */
void afs_catalog_opts_default(struct afs_catalog_opts *o);

struct afs_catalog;

/* db stays owned by the caller and must outlive the catalog; opts strings are copied. */
struct afs_catalog *afs_catalog_new(struct afs_db *db, const struct afs_catalog_opts *o,
                                    struct afs_error *err);
void afs_catalog_free(struct afs_catalog *cat);

/* Partitions to show as top-level directories. Calls cb(ctx, partition) for each (no
 * lock held); cb returns non-zero to stop. Discovery is one `distinct` query, cached for
 * list_ttl; on MongoDB failure the last known list is used (false + err if none). */
typedef int (*afs_catalog_partition_cb)(void *ctx, const char *partition);
bool afs_catalog_partitions(struct afs_catalog *cat, afs_catalog_partition_cb cb, void *ctx,
                            struct afs_error *err);

/* Directory names for partitions (DESIGN.md §7): '%' -> "%25", '/' -> "%2F".
 * Caller frees. decode returns NULL for a malformed name (a bad %-escape, or not
 * UTF-8: partitions are strings of Cosync records). */
char *afs_partition_to_dirname(const char *partition);
char *afs_partition_from_dirname(const char *dirname);

enum afs_cat_kind { AFS_CAT_NOENT = 0, AFS_CAT_FILE = 1, AFS_CAT_DIR = 2 };

/* Resolves partition/path. Returns AFS_CAT_FILE (out filled: caller frees with
 * afs_asset_free), AFS_CAT_DIR (out untouched), AFS_CAT_NOENT, or -1 with err (EIO when
 * MongoDB is unreachable and nothing is cached). out may be NULL. A partition root ("")
 * is a directory when the partition exists or is configured. */
int afs_catalog_lookup(struct afs_catalog *cat, const char *partition, const char *path,
                       struct afs_asset *out, struct afs_error *err);

/* For the write path once the upload of partition/path completed as asset id: fetches
 * that asset by _id (the one filter every backend answers from its index) and, if it is
 * active at that path, installs it and answers AFS_CAT_FILE with it (out: caller frees;
 * may be NULL) without asking for the path. Otherwise (renamed since, superseded, not
 * yet active) it answers as afs_catalog_lookup. -1 with err when MongoDB failed. */
int afs_catalog_confirm(struct afs_catalog *cat, const char *partition, const char *path,
                        const char *id, struct afs_asset *out, struct afs_error *err);

/* Lists the entries of directory partition/dirpath: cb(ctx, name, asset) where asset is
 * NULL for a subdirectory; the asset is valid only during the call. Called with no lock
 * held; cb returns non-zero to stop. False with err: ENOENT if it is not a directory (a
 * partition root is never ENOENT), EIO if MongoDB failed and nothing is cached. */
typedef int (*afs_catalog_list_cb)(void *ctx, const char *name, const struct afs_asset *asset);
bool afs_catalog_list(struct afs_catalog *cat, const char *partition, const char *dirpath,
                      afs_catalog_list_cb cb, void *ctx, struct afs_error *err);

/* Invalidation, for the write path after it changed records (upload completed, rename,
 * unlink, caption). They only drop cached state; the next lookup/list asks MongoDB. */
void afs_catalog_invalidate_path(struct afs_catalog *cat, const char *partition,
                                 const char *path); /* the entry and its parent listing */
void afs_catalog_invalidate_dir(struct afs_catalog *cat, const char *partition,
                                const char *dirpath); /* the subtree and its parent */
void afs_catalog_invalidate_partition(struct afs_catalog *cat, const char *partition);
/* mkdir made partition/dirpath here after a lookup found nothing there: nothing is under
 * it either, so lookups of new names in it answer without a query for list_ttl. */
void afs_catalog_note_new_dir(struct afs_catalog *cat, const char *partition, const char *dirpath);
void afs_catalog_invalidate_all(struct afs_catalog *cat); /* also the partition list */

/* A usable read URL for asset id's part: the cached one when it does not expire within
 * the margin (or never: public), else the broker refreshes it (CosyncRefreshAsset via
 * CosyncFunctionCall, polled until done/error or refresh_timeout). failed_url: a URL
 * that S3 just refused (403); forces a refresh unless a newer URL is already known.
 * Concurrent callers for one asset share one refresh. *url: caller frees; *expires_ms
 * (may be NULL) gets the expiration, 0 = never. Errors: ESTALE when the asset is gone
 * or no longer active, ETIMEDOUT when the broker did not answer (logged with the reason),
 * EIO otherwise. */
bool afs_catalog_fresh_url(struct afs_catalog *cat, const char *id, enum afs_part part,
                           const char *failed_url, char **url, int64_t *expires_ms,
                           struct afs_error *err);

/* Seconds before expiration at which a URL of that lifetime is refreshed: refresh_margin,
 * capped at 10 % of the lifetime (so short-lived URLs are not refreshed on every read). */
double afs_catalog_url_margin(const struct afs_catalog *cat, double expiration_hours);

/* Sets the caption of asset id (writes `caption` and `updatedAt` in CosyncAsset, by _id
 * alone), then invalidates what is cached for it. ENOENT when there is no asset with that
 * id. */
bool afs_catalog_set_caption(struct afs_catalog *cat, const char *id, const char *caption,
                             struct afs_error *err);

/* Queries the catalog made, by kind, so the cost of a workload can be measured (the
 * mount logs them at exit; getxattr user.assetfs.catalogQueries on the mount root). */
enum afs_catq {
  AFS_CATQ_FILE,      /* one file by (partition, filePath) */
  AFS_CATQ_LIST,      /* a directory's subtree */
  AFS_CATQ_ID,        /* one asset by _id */
  AFS_CATQ_PARTITION, /* does a partition exist */
  AFS_CATQ_DISTINCT,  /* partition discovery */
  AFS_CATQ_CALL,      /* CosyncFunctionCall insert/poll (URL refresh) */
  AFS_CATQ_COUNT
};
/* "total=N file=N list=N id=N partition=N distinct=N call=N"; caller frees. */
char *afs_catalog_query_stats(struct afs_catalog *cat);

/* A caption for a file whose upload record `id` went past `uploaded` (the broker copies
 * the record's caption into the asset when it completes it, which may be under way):
 * sets it on the CosyncAssetUpload record, then on the asset (same _id) if it exists;
 * if not, waits at most wait_s for the broker's completion and writes it there, so the
 * caption is never lost to the broker having read the record just before. */
bool afs_catalog_set_upload_caption(struct afs_catalog *cat, const char *id, const char *caption,
                                    double wait_s, struct afs_error *err);

#endif
