/* The write path's records and transfers: CosyncAssetUpload records for files written
 * through the mount, the PUTs of their parts, and a background worker.
 *
 * Per written file (struct afs_wfile): at create, a `pending` record (so the broker
 * signs while data is written); at flush, the pipeline: probe metadata, make cuts (and
 * a video's preview), wait for `initialized`, PUT every part in parallel, set `uploaded`
 * with the metadata. A flush waits at most close_timeout for the broker and for retries;
 * past that, or on a transient failure, it reports the error and the worker keeps
 * retrying from the staging file (state "retrying"), so nothing written is lost. The
 * worker also watches `uploaded` records until the broker marks them `completed`, then
 * drops the staging copy (the catalog serves the file from then on).
 *
 * Namespace changes are record updates: rename changes filePath (the S3 key stays),
 * unlink removes a pending record or marks the asset `deleted`.
 *
 * Write-back mode (-o writeback): close() only makes the staged copy durable (journal
 * and data fsync'd) and queues the file; fsync() waits for its upload.
 *
 * Threads: any function may be called from any FUSE thread. The worker is one thread
 * (record polling, completions); a pool of upload_workers threads uploads QUEUED files
 * and retries; flushes in the default mode upload on the thread that flushes.
 */
#ifndef ASSETFS_UPLOAD_H
#define ASSETFS_UPLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "assetfs/db.h"
#include "assetfs/error.h"
#include "catalog/catalog.h"
#include "fs_options.h"
#include "staging/staging.h"

/* An uploader over its parts, not the FUSE context: the staging table whose files it
 * uploads (and resumes), the catalog it confirms completions with and tells about
 * renames and captions, the mount's options, and the database of the records. All four
 * outlive the uploader (afs_uploader_free first). */
struct afs_uploader *afs_uploader_new(struct afs_staging *st, struct afs_catalog *cat,
                                      const struct afs_fs_options *opt, struct afs_db *db,
                                      struct afs_error *err);
/* The same over another record store (store.h; unit tests' fake): db is not used. */
struct afs_upload_store;
struct afs_uploader *afs_uploader_new_on(struct afs_staging *st, struct afs_catalog *cat,
                                         const struct afs_fs_options *opt,
                                         const struct afs_upload_store *store,
                                         struct afs_error *err);
/* Waits (at most timeout_s) for uploads in flight and retries, then stops the worker. */
void afs_uploader_free(struct afs_uploader *up, double timeout_s);

/* Inserts the `pending` record for wf (new _id in wf->id). */
bool afs_upload_begin(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err);
/* The same for n files in one insert (each gets its id; on failure none does). */
bool afs_upload_begin_many(struct afs_uploader *up, struct afs_wfile **wfs, int n,
                           struct afs_error *err);

/* Uploads wf if dirty (flush/fsync/close). Waits at most close_timeout; on failure
 * returns false with err and leaves the retry to the worker. */
bool afs_upload_flush(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err);

/* Hands a dirty wf to the worker (release without flush, truncate of a closed file). */
void afs_upload_queue(struct afs_uploader *up, struct afs_wfile *wf);
/* wf's bytes [off, off + len) were written (len < 0: truncated to off). A file past
 * multipart_threshold streams its finished parts now, and the writer may wait here
 * while the uploads catch up (multipart.c). Call it before afs_wf_written: an upload
 * attempt that starts in between then sees the file dirty or its parts changed, never
 * clean parts with a clean file. */
void afs_upload_wrote(struct afs_uploader *up, struct afs_wfile *wf, int64_t off, int64_t len);

/* The user removed wf: drops its pending record, or marks its asset deleted (now, or
 * once the broker completes it). False (with *err) when an upload in flight could not
 * be marked abandoned: its completion could then supersede whatever is put at its path
 * next, so a rename over it must not go on. err may be NULL. */
bool afs_upload_unlinked(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err);

/* wf moved to its current partition/file_path: updates its records. */
bool afs_upload_renamed(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err);

/* Records of completed assets (no staging entry), by _id. */
bool afs_asset_set_file_path(struct afs_uploader *up, const char *id, const char *file_path,
                             struct afs_error *err);
bool afs_asset_mark_deleted(struct afs_uploader *up, const char *id, struct afs_error *err);
/* Marks every active asset at partition/file_path deleted, but keep_id (may be NULL):
 * what a path held before a file is moved over it or it is removed. All of them, not one
 * the catalog knows: while a completion runs, a new version and the one it is about to
 * supersede are both active there. */
bool afs_asset_delete_at(struct afs_uploader *up, const char *partition, const char *file_path,
                         const char *keep_id, struct afs_error *err);
bool afs_asset_set_mtime(struct afs_uploader *up, const char *id, int64_t mtime_ms,
                         struct afs_error *err);

/* Renames every active asset of partition under from_dir to to_dir (one update per
 * asset, not atomic). Returns the number renamed, -1 on error. */
int afs_asset_rename_dir(struct afs_uploader *up, const char *partition, const char *from_dir,
                         const char *to_dir, struct afs_error *err);

/* A write waits for room in cache_max: completed files leave staging, so look for
 * completions now rather than at the next poll. */
void afs_upload_need_room(struct afs_uploader *up);

/* Uploads in flight or waiting for retry (for unmount and tests). */
int afs_upload_busy_count(struct afs_uploader *up);
/* Bytes (and *files, may be NULL) of files that still have to go up. */
int64_t afs_upload_pending_bytes(struct afs_uploader *up, int *files);
/* Files completed since the mount; files adopted from an earlier mount. */
void afs_upload_counters(struct afs_uploader *up, int64_t *completed, int64_t *resumed);

#endif
