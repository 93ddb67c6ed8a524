/* What the broker's handlers read and change, behind one small table of operations: the
 * records (MongoDB) and the objects (S3). The broker's implementation is bstore_live.c;
 * the unit tests use an in-memory fake with injectable faults (tests/unit/fake_bstore.h),
 * so initialization, completion, supersede and the function calls run without a database
 * or a bucket.
 *
 * Leases (lease.h) are part of the records' contract: every write to an upload or call
 * record the handlers make is conditional on the lease token they claimed it with (or,
 * for a record read without a claim, on its status and on nobody holding a live lease).
 *
 * Errors: false (or -1) with err. A database that cannot be reached gives a message
 * starting with "MongoDB" and the code AFS_E_UNREACHABLE or EIO; S3 errors are as
 * afs_s3_error_transient tells. Either way the caller gives the record back for a retry. */
#ifndef ASSETFS_BROKER_BSTORE_H
#define ASSETFS_BROKER_BSTORE_H

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stdint.h>

#include "assetfs/error.h"
#include "assetfs/naming.h"
#include "assetfs/s3.h"

struct afs_broker;

/* The collections a lease operation applies to. */
enum afs_bcoll { AFS_BC_UPLOAD, AFS_BC_ASSET, AFS_BC_CALL, AFS_BC_COUNT };

/* Extra conditions of an asset update (NULL: none). */
struct afs_bcond {
  const char *status_is, *status_not, *file_path_is;
  const bson_t *match; /* each field equal to its value here (null: absent or null) */
};

struct afs_bstore_ops {
  /* ---- leases on one record of `coll` (lease.h) ---- */
  /* Ends the lease held under `token` with $set `set` and $unset `unset` (either may be
   * NULL). from_status: only while the status is still that (and if it moved on, the
   * lease is given back); token NULL: a record read without a claim, changed while
   * nobody holds a live lease on it. after (may be NULL; only without from_status): the
   * record as it is afterwards (caller destroys; initialized whatever the result, empty
   * unless applied). 1 applied, 0 not (lease lost, status moved on), -1 error. */
  int (*finish)(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                const char *from_status, const bson_t *set, const bson_t *unset, bson_t *after,
                struct afs_error *err);
  /* Extends the lease by lease_ms while the status is `status`; *after as finish. */
  int (*renew)(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
               const char *status, long lease_ms, bson_t *after, struct afs_error *err);
  /* Gives the record back; nobody claims it for delay_ms. token NULL: a record read without
   * a claim, deferred while it is in `status` (required then) and nobody holds it. Best
   * effort. */
  void (*release)(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                  const char *status, long delay_ms);
  /* Deletes the record while held under token (NULL: whatever holds it). Same returns. */
  int (*remove)(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                struct afs_error *err);
  /* The record `id`: *out (caller destroys) or NULL when there is none. for_result:
   * without the broker's bookkeeping (lease, seal), as returned to clients. */
  bool (*get)(void *ctx, enum afs_bcoll coll, const bson_value_t *id, bool for_result, bson_t **out,
              struct afs_error *err);

  /* ---- assets ---- */
  /* $set of `set` on asset `id` under `cond`; *matched whether it applied. */
  bool (*asset_set)(void *ctx, const bson_value_t *id, const struct afs_bcond *cond,
                    const bson_t *set, bool *matched, struct afs_error *err);
  /* The completion's write: asset `id` gets $set `set`, $unset `unset`, and on creation
   * also `on_insert`; never when the asset is `deleted` (its owner removed it: not
   * revived). 1 written, 0 left deleted, -1 error. */
  int (*asset_upsert)(void *ctx, const bson_value_t *id, const bson_t *set, const bson_t *unset,
                      const bson_t *on_insert, struct afs_error *err);
  /* The active assets at partition/file_path: *docs (caller destroys each and frees the
   * array) and *n. */
  bool (*assets_at)(void *ctx, const char *partition, const char *file_path, bson_t ***docs,
                    size_t *n, struct afs_error *err);
  /* 1 if a record of `coll` other than `id` (NULL: any) has `path` among paths[0..n), or
   * (parent, may be NULL) has the path `parent` or `parent` + an extension (".jpg"), 0 if
   * none, -1 error. */
  int (*path_used)(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *const *paths,
                   size_t n, const char *parent, struct afs_error *err);

  /* ---- key claims (key_claims.c) ---- */
  /* Claims keys[0..n) for record rec: 1 all held by rec, 0 one held by another record
   * (the claims this call made are released), -1 error. */
  int (*claims_take)(void *ctx, const bson_value_t *rec, const char *const *keys, size_t n,
                     struct afs_error *err);
  /* Releases rec's claims on keys[0..n). Best effort. */
  void (*claims_release)(void *ctx, const bson_value_t *rec, const char *const *keys, size_t n);
  /* The keys rec holds claims on: 1 with *keys (*n; free each and the array), 0 none, -1. */
  int (*claims_held)(void *ctx, const bson_value_t *rec, char ***keys, size_t *n,
                     struct afs_error *err);

  /* ---- objects (S3) ---- */
  bool (*obj_head)(void *ctx, const char *key, struct afs_s3_object_info *info,
                   struct afs_error *err);
  /* Deletes keys[0..n); missing objects count as deleted. */
  bool (*obj_delete)(void *ctx, const char *const *keys, size_t n, struct afs_error *err);

  /* ---- multipart uploads (multipart.c) ---- */
  /* $set of `set` on upload record `id` under `cond` (status_is and match only);
   * *matched whether it applied. */
  bool (*upload_set)(void *ctx, const bson_value_t *id, const struct afs_bcond *cond,
                     const bson_t *set, bool *matched, struct afs_error *err);
  /* CreateMultipartUpload, CompleteMultipartUpload, AbortMultipartUpload (s3.h). */
  bool (*mp_create)(void *ctx, const char *key, const char *content_type, char **upload_id,
                    struct afs_error *err);
  bool (*mp_complete)(void *ctx, const char *key, const char *upload_id,
                      const struct afs_s3_part *parts, size_t n, char *etag_out,
                      struct afs_error *err);
  bool (*mp_abort)(void *ctx, const char *key, const char *upload_id, struct afs_error *err);
  /* UploadPartCopy of bytes [off, off + len) of src_key as part `number` (s3.h). */
  bool (*mp_copy)(void *ctx, const char *key, const char *upload_id, int number,
                  const char *src_key, int64_t off, int64_t len, char *etag_out,
                  struct afs_error *err);
};

struct afs_bstore {
  const struct afs_bstore_ops *ops;
  void *ctx;
  /* Live: the broker and the worker's client (for the janitor's own queries too); NULL
   * in the fake. */
  struct afs_broker *b;
  mongoc_client_t *mc;
};

/* The live store of one worker: b's database through client c (popped by the caller,
 * which keeps it for the store's lifetime) and b's bucket. */
void afs_bstore_live(struct afs_bstore *st, struct afs_broker *b, mongoc_client_t *c);

/* The live key claims (key_claims.c), as the live store's claims_* operations. */
int afs_live_claims_take(struct afs_broker *b, mongoc_client_t *c, const bson_value_t *rec,
                         const char *const *keys, size_t n, struct afs_error *err);
void afs_live_claims_release(struct afs_broker *b, mongoc_client_t *c, const bson_value_t *rec,
                             const char *const *keys, size_t n);
int afs_live_claims_held(struct afs_broker *b, mongoc_client_t *c, const bson_value_t *rec,
                         char ***keys, size_t *n, struct afs_error *err);

/* auth=required (bstore_sealed.c): a store over `inner` whose asset writes seal the
 * asset (assetfsSeal and its sealed copy), and refuse (AFS_E_UNTRUSTED) to change an
 * asset whose seal does not verify. mem holds its state for out's lifetime. */
struct afs_bstore_sealed {
  struct afs_bstore inner;
  struct afs_broker *b;
};
void afs_bstore_sealed(struct afs_bstore *out, struct afs_bstore_sealed *mem,
                       const struct afs_bstore *inner, struct afs_broker *b);
/* doc, asset id as read, sealed as the broker sealed it: 1 yes (or put back so now from its
 * sealed copy), 0 no and it cannot be restored (or st is not a sealed store), -1 error. */
int afs_bstore_restore(struct afs_bstore *st, const bson_value_t *id, const bson_t *doc,
                       struct afs_error *err);
/* Asset id as the broker may act on it: *doc (caller destroys; NULL when there is none).
 * With auth=required a tampered asset is restored first, and one that cannot be is an
 * AFS_E_UNTRUSTED error. */
bool afs_bstore_asset_get(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *id,
                          bson_t **doc, struct afs_error *err);

/* The collection name of coll. */
const char *afs_bcoll_name(enum afs_bcoll coll);

#endif
