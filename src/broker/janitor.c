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

/* How long a tampered asset that cannot be restored waits before the janitor looks again. */
#define UNTRUSTED_RECHECK_MS (10 * 60 * 1000L)

/* auth=required: a `deleted` status is the broker's only with its seal and its deletion
 * mark. Anything else is someone's edit: the asset is put back as the broker sealed it (or,
 * sealed but unmarked, made active again), and nothing is purged. */
static enum afs_outcome not_purged(struct afs_broker *b, struct afs_bstore *st,
                                   const struct afs_record *rec, const char *token,
                                   const char *ids) {
  struct afs_error err = {0};
  const bson_value_t *id = &rec->id;
  bool sealed = afs_asset_seal_ok(b, rec->doc);
  int rc = sealed ? 1 : afs_bstore_restore(st, id, rec->doc, &err);
  bool matched = false;
  if (rc == 1 && sealed) {
    bson_t *set =
        BCON_NEW(AFS_F_STATUS, AFS_ASSET_ACTIVE, AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
    rc = st->ops->asset_set(st->ctx, id, &(struct afs_bcond){.status_is = AFS_ASSET_DELETED}, set,
                            &matched, &err)
             ? 1
             : -1;
    bson_destroy(set);
  }
  if (rc < 0) {
    afs_transient("asset %s: cannot restore it: %s; will retry", ids, err.msg);
    st->ops->release(st->ctx, AFS_BC_ASSET, id, token, NULL, AFS_RETRY_MS);
    return AFS_RETRY;
  }
  if (rc == 0)
    afs_warn("asset %s: marked deleted by someone other than the broker, and it cannot be "
             "restored (no valid seal or sealed copy); nothing purged",
             ids);
  else if (sealed)
    afs_warn("asset %s: marked deleted without a request the broker carried out (auth=required: "
             "deleting is a signed CosyncRemoveAsset); restored, nothing purged",
             ids);
  st->ops->release(st->ctx, AFS_BC_ASSET, id, token, NULL, rc == 0 ? UNTRUSTED_RECHECK_MS : 0);
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
  if (b->authz && (!afs_asset_seal_ok(b, rec->doc) || !afs_broker_deletion_mark_ok(b, rec->doc)))
    return not_purged(b, st, rec, token, ids);
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

/* auth=required: the objects a stale upload left are deleted only when the record is
 * signed by its client (its createdAt, and so its age, too), sealed by this broker, and no
 * asset was made of it (a completed upload put back to `initialized` with an old
 * createdAt must not take its asset's objects with it). 1 yes, 0 no (err says why), -1
 * MongoDB error. Always 1 with auth=off. */
static int leftovers_ours(struct afs_broker *b, struct afs_bstore *st, const struct afs_record *rec,
                          struct afs_error *err) {
  if (!b->authz)
    return 1;
  if (afs_authz_upload(b, st, rec, false, err) != 1)
    return 0;
  if (!rec->has_seal || !afs_broker_seal_ok(b, rec))
    return afs_error_set(err, AFS_E_UNTRUSTED, "not sealed by this broker"), 0;
  bson_t *asset = NULL;
  if (!st->ops->get(st->ctx, AFS_BC_ASSET, &rec->id, false, &asset, err))
    return -1;
  if (asset) {
    bson_destroy(asset);
    return afs_error_set(err, EEXIST, "an asset was made of it"), 0;
  }
  return 1;
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
  int mine = leftovers_ours(b, st, rec, &err);
  if (mine < 0) {
    afs_transient("upload %s: cannot check it: %s; will retry", ids, err.msg);
    st->ops->release(st->ctx, AFS_BC_UPLOAD, id, token, NULL, AFS_RETRY_MS);
    return AFS_RETRY;
  } else if (mine == 0)
    afs_warn("upload %s: %s; its record goes, no object is deleted", ids, err.msg);
  else if (afs_broker_record_path(rec, &path) == 1 && afs_broker_path_shared(st, id, path))
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

void afs_assets_scrub(struct afs_broker *b, mongoc_client_t *c, bson_value_t *from, int n) {
  struct afs_bstore live, st;
  struct afs_bstore_sealed mem;
  afs_bstore_live(&live, b, c);
  afs_bstore_sealed(&st, &mem, &live, b);
  bson_t q = BSON_INITIALIZER, gt;
  if (from->value_type != BSON_TYPE_EOD) {
    BSON_APPEND_DOCUMENT_BEGIN(&q, AFS_F_ID, &gt);
    bson_append_value(&gt, "$gt", 3, from);
    bson_append_document_end(&q, &gt);
  }
  bson_t *opts = BCON_NEW("sort", "{", AFS_F_ID, BCON_INT32(1), "}", "limit", BCON_INT64(n));
  mongoc_collection_t *coll = mongoc_client_get_collection(c, b->cfg.database, AFS_COLL_ASSET);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &q, opts, NULL);
  const bson_t *doc;
  int seen = 0, restored = 0, lost = 0;
  bson_value_t last = {0};
  while (mongoc_cursor_next(cur, &doc)) {
    bson_value_t id;
    if (!afs_rec_id(doc, &id))
      continue;
    seen++;
    if (last.value_type != BSON_TYPE_EOD)
      bson_value_destroy(&last);
    last = id;
    if (afs_asset_seal_ok(b, doc))
      continue;
    struct afs_error err = {0};
    char ids[80];
    int rc = afs_bstore_restore(&st, &id, doc, &err);
    if (rc == 1)
      restored++;
    else if (rc < 0)
      afs_transient("scrub: asset %s: %s", afs_rec_id_str(&id, ids, sizeof ids), err.msg);
    else if (lost++ < 3)
      afs_warn("asset %s: its seal does not verify and it has no sealed copy that does "
               "(changed by someone other than the broker, or made before auth=required); "
               "mounts with broker_key hide it, and the broker does not act on it",
               afs_rec_id_str(&id, ids, sizeof ids));
  }
  bson_error_t berr;
  if (mongoc_cursor_error(cur, &berr)) {
    afs_transient("scrub: cannot read assets: %s", berr.message);
  } else {
    if (from->value_type != BSON_TYPE_EOD)
      bson_value_destroy(from);
    *from = last; /* EOD at the end: the next round starts over */
    last.value_type = BSON_TYPE_EOD;
  }
  if (last.value_type != BSON_TYPE_EOD)
    bson_value_destroy(&last);
  if (restored || lost > 3)
    afs_info("scrub: %d assets checked, %d restored, %d that cannot be", seen, restored, lost);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  bson_destroy(opts);
  bson_destroy(&q);
}
