/* The Cosync Storage schema as both programs use it: collections, field names and
 * statuses (DESIGN.md §2; cosync-storage.md for the history of each field). One spelling
 * of each name, so a typo is a compile error and a grep finds every user.
 *
 * Collections and statuses:
 *   CosyncAssetUpload   pending -> initialized -> uploaded -> completed, or error
 *                       (written by a client, driven by the broker)
 *   CosyncAsset         active -> deleted (purged) | archived
 *   CosyncFunctionCall  pending -> done | error
 * assetfs additions are marked below; Cosync clients ignore them. */
#ifndef ASSETFS_COSYNC_H
#define ASSETFS_COSYNC_H

/* Record ids the filesystem makes are ObjectIds, handled as 24 hex digits: a buffer of
 * this size holds one and its NUL. */
#define AFS_OID_HEX 25

#define AFS_COLL_UPLOAD "CosyncAssetUpload"
#define AFS_COLL_ASSET "CosyncAsset"
#define AFS_COLL_CALL "CosyncFunctionCall"
/* assetfs: the broker's key claims (broker/key_claims.c), one document per S3 key handed
 * to a record, {_id: key, recordId: <upload _id>, createdAt}. */
#define AFS_COLL_KEY_CLAIM "AssetfsKeyClaim"

/* Upload statuses. */
#define AFS_UPLOAD_PENDING "pending"
#define AFS_UPLOAD_INITIALIZED "initialized"
#define AFS_UPLOAD_UPLOADED "uploaded"
#define AFS_UPLOAD_COMPLETED "completed"
#define AFS_UPLOAD_ERROR "error"

/* Asset statuses. */
#define AFS_ASSET_ACTIVE "active"
#define AFS_ASSET_ARCHIVED "archived"
#define AFS_ASSET_DELETED "deleted"

/* Function call statuses. */
#define AFS_CALL_PENDING "pending"
#define AFS_CALL_DONE "done"
#define AFS_CALL_ERROR "error"

/* Fields every record kind has. */
#define AFS_F_ID "_id"
#define AFS_F_PARTITION "_partition"
#define AFS_F_UID "uid"
#define AFS_F_SESSION "sessionId"
#define AFS_F_STATUS "status"
#define AFS_F_ERROR "error" /* assetfs: why a record is in error, for people */
#define AFS_F_CREATED "createdAt"
#define AFS_F_UPDATED "updatedAt"

/* Uploads and assets. */
#define AFS_F_ASSET_PARTITION "assetPartition"
#define AFS_F_FILE_PATH "filePath" /* assetfs on assets: the path inside the partition */
#define AFS_F_PATH "path"          /* the S3 key of the original */
#define AFS_F_HOURS "expirationHours"
#define AFS_F_EXPIRATION "expiration"
#define AFS_F_CONTENT_TYPE "contentType"
#define AFS_F_SIZE "size"
#define AFS_F_CAPTION "caption"
#define AFS_F_MTIME "mtime" /* assetfs */
#define AFS_F_ETAG "etag"   /* assetfs */

/* assetfs: the broker's bookkeeping on records. */
#define AFS_F_SEAL "brokerSeal"              /* HMAC over what decides a record's objects */
#define AFS_F_LEASE_OWNER "leaseOwner"       /* store/lease.c */
#define AFS_F_LEASE_UNTIL "leaseUntil"       /* store/lease.c */
#define AFS_F_ABANDONED "abandoned"          /* upload removed in flight by its mount */
#define AFS_F_INITIALIZED_AT "initializedAt" /* broker clock, at initialization */
#define AFS_F_VERSION_AT "versionAt"         /* asset: its place among versions of a path */
#define AFS_F_COMPLETED_AT "completedAt"     /* asset: broker clock, at completion */

/* assetfs: multipart uploads (docs/internals/multipart.md). */
#define AFS_F_MP_UPLOAD_ID "assetfsUploadId" /* upload: the S3 multipart upload id (broker) */
#define AFS_F_MP_PARTS "assetfsParts"        /* upload: part i+1's ETag at [i] (client) */
#define AFS_CALL_SIGN_PARTS "AssetfsSignParts"
#define AFS_MP_MAX_PARTS 10000 /* S3's limit */
#define AFS_MP_SIGN_BATCH 128  /* part URLs one AssetfsSignParts call returns at most */
/* AssetfsCopyParts [uploadId, assetId, {part, offset, length}, ...]: parts of the
 * upload copied by S3 from the original of an asset (an append or a small edit to a big
 * asset sends only what changed). */
#define AFS_CALL_COPY_PARTS "AssetfsCopyParts"
#define AFS_MP_COPY_BATCH 16 /* parts one AssetfsCopyParts call copies at most */

/* Function calls. */
#define AFS_F_CALL_NAME "name"
#define AFS_F_CALL_ARGS "args"
#define AFS_F_CALL_RESULT "result"

#endif
