/* The records the uploader reads and writes (CosyncAssetUpload, and the CosyncAsset
 * changes that completion, rename, unlink and utimens make), behind one small table of
 * operations: the MongoDB implementation in a mount (upload_records.c) and an in-memory
 * fake with injectable faults in unit tests (tests/unit/fake_store.h), so that the
 * pipeline, the poller and the namespace changes run without a database or FUSE.
 *
 * Every slot may be called from any thread at once. Ids are ObjectIds in hex (24
 * characters); a malformed id is "not found". Each slot returns false with *err (the
 * store's trouble: retried or reported by the caller) unless it says otherwise.
 */
#ifndef ASSETFS_UPLOAD_STORE_H
#define ASSETFS_UPLOAD_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "assetfs/cosync.h"
#include "assetfs/error.h"
#include "assetfs/naming.h"
#include "assetfs/records.h" /* enum afs_part: the original, its cuts, a video's preview */

/* What an upload record says, as the pipeline needs it. */
struct record_state {
  enum afs_upload_status status;
  char error[400];
  char *write_url[AFS_PART_COUNT]; /* owned; afs_rec_state_free */
  bool exists;
};
void afs_rec_state_free(struct record_state *rs);

/* The metadata `uploaded` carries. */
struct meta {
  int64_t size;
  int x_res, y_res;
  char color[8];
  double duration;
  bool has_dims, has_duration;
  char etag[130];                  /* the original's, as its PUT answered (signed with key_file) */
  char (*mp_etags)[130];           /* multipart: part i+1's ETag at [i] (not owned) */
  int mp_n;                        /* ... how many parts; 0: the original went in one PUT */
  char *part_file[AFS_PART_COUNT]; /* local files of cuts/preview (owned; deleted after) */
  const char *part_type[AFS_PART_COUNT];
};

/* One pending record to make: the file's place and type (the store adds who asks). */
struct afs_pending_rec {
  const char *partition, *file_path, *content_type;
};

struct afs_upload_store_ops {
  /* Makes n pending records in one command; ids[i] gets recs[i]'s _id. All or none. */
  bool (*insert_pending)(void *ctx, const struct afs_pending_rec *recs, int n,
                         char (*ids)[AFS_OID_HEX], struct afs_error *err);
  /* Deletes upload record id if nobody uploaded to it (pending, initialized, error);
   * *gone: it is not there any more (deleted now, or never was). */
  bool (*delete_unused)(void *ctx, const char *id, bool *gone, struct afs_error *err);
  /* Marks upload record id abandoned (its file was removed while in flight). */
  bool (*abandon)(void *ctx, const char *id, struct afs_error *err);
  /* Upload record id's state (rs->exists false when there is none). */
  bool (*fetch)(void *ctx, const char *id, struct record_state *rs, struct afs_error *err);
  /* Statuses of n upload records: out[i] AFS_US_NONE when not found. false: some could
   * not be read (those are AFS_US_NONE). */
  bool (*batch_status)(void *ctx, char (*ids)[AFS_OID_HEX], int n, enum afs_upload_status *out);
  /* fn(fctx, id) for every upload record of this mount's session in status. */
  bool (*session_scan)(void *ctx, const char *status, void (*fn)(void *fctx, const char *id),
                       void *fctx, struct afs_error *err);
  /* Upload record id becomes `uploaded` with the metadata (caption may be NULL, mtime 0 =
   * none). AFS_E_RECORD_GONE when there is no such record. */
  bool (*set_uploaded)(void *ctx, const char *id, const struct meta *m, const char *caption,
                       int64_t mtime_ms, struct afs_error *err);
  /* filePath of upload record id, and of asset id when `asset` (a rename). */
  bool (*set_file_path)(void *ctx, const char *id, const char *file_path, bool upload, bool asset,
                        struct afs_error *err);
  /* Whether asset id exists and is active. */
  bool (*asset_active)(void *ctx, const char *id, bool *active, struct afs_error *err);
  /* Asset id becomes `deleted` (the broker purges it). */
  bool (*asset_mark_deleted)(void *ctx, const char *id, struct afs_error *err);
  /* Every active asset at partition/file_path but keep_id (may be NULL) becomes `deleted`. */
  bool (*asset_delete_at)(void *ctx, const char *partition, const char *file_path,
                          const char *keep_id, struct afs_error *err);
  /* mtime of asset id. */
  bool (*asset_set_mtime)(void *ctx, const char *id, int64_t mtime_ms, struct afs_error *err);
  /* Every active asset of partition under from_dir/ moves under to_dir/ (one update each,
   * not atomic). Returns how many, -1 with *err on failure. */
  int (*asset_rename_dir)(void *ctx, const char *partition, const char *from_dir,
                          const char *to_dir, struct afs_error *err);
  /* AssetfsSignParts: PUT URLs of parts first..first+count-1 of upload record id's
   * multipart upload (the broker starts it at the first call). *upload_id and *urls
   * (each, and the array) are the caller's to free; *n how many; *expires_s their
   * lifetime. */
  bool (*sign_parts)(void *ctx, const char *id, int first, int count, char **upload_id,
                     char ***urls, int *n, long *expires_s, struct afs_error *err);
  /* AssetfsCopyParts: parts part[i] of record id's multipart upload become bytes
   * [off[i], off[i] + len[i]) of asset src's original, copied by S3; etag[i] (130 bytes
   * each) their ETags. n <= AFS_MP_COPY_BATCH. */
  bool (*copy_parts)(void *ctx, const char *id, const char *src, const int *part,
                     const int64_t *off, const int64_t *len, int n, char (*etag)[130],
                     struct afs_error *err);
};

struct afs_upload_store {
  const struct afs_upload_store_ops *ops;
  void *ctx;
};

#endif
