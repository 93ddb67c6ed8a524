/* Clean-up: assets whose status became "deleted" lose their objects, then their record
 * (and the upload record with the same _id); uploads stuck in pending/initialized for
 * longer than stale_upload_seconds become "error" and lose whatever they uploaded;
 * answered function calls older than call_keep_seconds are deleted. Deleted objects'
 * key claims are released (key_claims.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"
#include "bstore.h"

/* auth=required: a `deleted` status the broker did not write (no valid deletion mark) is
 * someone's edit: the asset is made active again and nothing is purged. */
static enum afs_outcome restore_unmarked(struct afs_bstore *st, const bson_value_t *id,
                                         const char *token, const char *ids) {
  struct afs_error err = {0};
  bson_t *set =
      BCON_NEW(AFS_F_STATUS, AFS_ASSET_ACTIVE, AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
  int rc =
      st->ops->finish(st->ctx, AFS_BC_ASSET, id, token, AFS_ASSET_DELETED, set, NULL, NULL, &err);
  bson_destroy(set);
  if (rc < 0) {
    afs_transient("asset %s: cannot restore it: %s; will retry", ids, err.msg);
    return AFS_RETRY;
  }
  afs_warn("asset %s: marked deleted without a request the broker carried out (auth=required: "
           "deleting is a signed CosyncRemoveAsset); restored, nothing purged",
           ids);
  return AFS_DONE;
}

enum afs_outcome afs_asset_purge(struct afs_broker *b, struct afs_bstore *st,
                                 const struct afs_record *rec, const char *token) {
  enum afs_outcome out = AFS_DONE;
  struct afs_error err = {0};
  char ids[80];
  const bson_value_t *id = &rec->id;
  if (id->value_type == BSON_TYPE_EOD)
    return AFS_DONE;
  afs_rec_id_str(id, ids, sizeof ids);
  if (b->authz && !afs_broker_deletion_mark_ok(b, rec->doc))
    return restore_unmarked(st, id, token, ids);
  const char *path = NULL;
  if (afs_broker_record_path(rec, &path) == 1 && afs_broker_path_shared(st, id, path)) {
    afs_warn("asset %s: another record uses %s; keeping the objects", ids, path);
  } else if (!afs_broker_delete_objects(b, st, rec, NULL, &err)) {
    if (err.code == AFS_E_UNTRUSTED) {
      afs_warn("asset %s: %s; removing only the record", ids, err.msg);
    } else {
      afs_transient("asset %s: cannot delete objects: %s; will retry", ids, err.msg);
      st->ops->release(st->ctx, AFS_BC_ASSET, id, token, NULL, AFS_RETRY_MS);
      return AFS_RETRY;
    }
  } else {
    /* The objects are gone: their keys may go to other records. */
    afs_broker_release_claims(b, st, rec);
  }
  if (st->ops->remove(st->ctx, AFS_BC_ASSET, id, token, &err) < 0) {
    afs_transient("asset %s: objects deleted, record not: %s; will retry", ids, err.msg);
    return AFS_RETRY;
  }
  st->ops->remove(st->ctx, AFS_BC_UPLOAD, id, NULL, &err); /* best effort */
  afs_info("asset %s deleted (%s)", ids, path ? path : "no objects");
  return out;
}

enum afs_outcome afs_upload_stale(struct afs_broker *b, struct afs_bstore *st,
                                  const struct afs_record *rec, const char *token) {
  enum afs_outcome out = AFS_DONE;
  struct afs_error err = {0};
  char ids[80], why[160];
  const bson_value_t *id = &rec->id;
  if (id->value_type == BSON_TYPE_EOD)
    return AFS_DONE;
  afs_rec_id_str(id, ids, sizeof ids);
  const char *path = NULL;
  if (afs_broker_record_path(rec, &path) == 1 && afs_broker_path_shared(st, id, path))
    afs_warn("upload %s: another asset uses %s; keeping its objects", ids, path);
  else if (!afs_broker_delete_objects(b, st, rec, NULL, &err)) {
    if (err.code != AFS_E_UNTRUSTED) {
      afs_transient("upload %s: cannot delete leftovers: %s; will retry", ids, err.msg);
      st->ops->release(st->ctx, AFS_BC_UPLOAD, id, token, NULL, AFS_RETRY_MS);
      return AFS_RETRY;
    }
  } else {
    afs_broker_release_claims(b, st, rec);
  }
  snprintf(why, sizeof why, "upload not finished within %ld s; abandoned",
           b->cfg.stale_upload_seconds);
  bson_t *set = BCON_NEW(AFS_F_STATUS, AFS_UPLOAD_ERROR, AFS_F_ERROR, BCON_UTF8(why), AFS_F_UPDATED,
                         BCON_DATE_TIME(afs_now_ms()));
  if (st->ops->finish(st->ctx, AFS_BC_UPLOAD, id, token, NULL, set, NULL, NULL, &err) < 0)
    out = AFS_RETRY;
  else
    afs_info("upload %s: %s", ids, why);
  bson_destroy(set);
  return out;
}

void afs_calls_purge(struct afs_broker *b, mongoc_client_t *c) {
  int64_t cutoff = afs_now_ms() - b->cfg.call_keep_seconds * 1000L;
  bson_oid_t oid;
  afs_rec_oid_at(cutoff, &oid);
  /* Age from updatedAt (set when answered), else createdAt, else the ObjectId's time, so
   * calls answered by Cosync or written without dates still go. Pending calls stay. */
  bson_t *q = BCON_NEW(
      AFS_F_STATUS, "{", "$in", "[", AFS_CALL_DONE, AFS_CALL_ERROR, "]", "}", "$or", "[", "{",
      AFS_F_UPDATED, "{", "$lt", BCON_DATE_TIME(cutoff), "}", "}", "{", AFS_F_UPDATED, "{", "$not",
      "{", "$type", "date", "}", "}", AFS_F_CREATED, "{", "$lt", BCON_DATE_TIME(cutoff), "}", "}",
      "{", AFS_F_UPDATED, "{", "$not", "{", "$type", "date", "}", "}", AFS_F_CREATED, "{", "$not",
      "{", "$type", "date", "}", "}", AFS_F_ID, "{", "$lt", BCON_OID(&oid), "}", "}", "]");
  mongoc_collection_t *calls = afs_broker_coll(b, c, AFS_COLL_CALL);
  bson_t reply;
  bson_error_t berr;
  if (!mongoc_collection_delete_many(calls, q, NULL, &reply, &berr)) {
    afs_transient("cannot delete old function calls: %s; will retry", berr.message);
  } else {
    bson_iter_t it;
    int64_t n = 0;
    if (bson_iter_init_find(&it, &reply, "deletedCount"))
      n = bson_iter_as_int64(&it);
    if (n > 0)
      afs_info("deleted %lld answered function call(s) older than %ld s", (long long)n,
               b->cfg.call_keep_seconds);
  }
  bson_destroy(&reply);
  mongoc_collection_destroy(calls);
  bson_destroy(q);
}
