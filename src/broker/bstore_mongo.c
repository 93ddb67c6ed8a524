/* The broker's record store on MongoDB (bstore.h): each operation one command on the
 * worker's client. */
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/db.h"
#include "assetfs/lease.h"
#include "broker.h"
#include "bstore.h"

static bool m_asset_get(void *ctx, const bson_value_t *id, bool for_result, bson_t **out,
                        struct afs_error *err) {
  struct afs_bstore *st = ctx;
  *out = NULL;
  mongoc_collection_t *assets = afs_broker_coll(st->b, st->mc, AFS_COLL_ASSET);
  bson_t q = BSON_INITIALIZER;
  bson_append_value(&q, AFS_F_ID, 3, id);
  bson_t *opts = for_result ? BCON_NEW("limit", BCON_INT64(1), "projection", "{", AFS_F_LEASE_OWNER,
                                       BCON_INT32(0), AFS_F_LEASE_UNTIL, BCON_INT32(0), AFS_F_SEAL,
                                       BCON_INT32(0), "}")
                            : BCON_NEW("limit", BCON_INT64(1));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(assets, &q, opts, NULL);
  const bson_t *d;
  bson_error_t berr;
  bool ok = true;
  if (mongoc_cursor_next(cur, &d))
    *out = bson_copy(d);
  else if (mongoc_cursor_error(cur, &berr))
    ok = afs_db_error(err, &berr, "MongoDB: reading an asset");
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(&q);
  mongoc_collection_destroy(assets);
  return ok;
}

static bool m_asset_set(void *ctx, const bson_value_t *id, const char *status_is,
                        const char *status_not, const bson_t *set, bool *matched,
                        struct afs_error *err) {
  struct afs_bstore *st = ctx;
  mongoc_collection_t *assets = afs_broker_coll(st->b, st->mc, AFS_COLL_ASSET);
  bson_t q = BSON_INITIALIZER, upd = BSON_INITIALIZER, reply, ne;
  bson_append_value(&q, AFS_F_ID, 3, id);
  if (status_is)
    BSON_APPEND_UTF8(&q, AFS_F_STATUS, status_is);
  if (status_not) {
    BSON_APPEND_DOCUMENT_BEGIN(&q, AFS_F_STATUS, &ne);
    BSON_APPEND_UTF8(&ne, "$ne", status_not);
    bson_append_document_end(&q, &ne);
  }
  BSON_APPEND_DOCUMENT(&upd, "$set", set);
  bson_error_t berr;
  bool ok = mongoc_collection_update_one(assets, &q, &upd, NULL, &reply, &berr);
  bson_iter_t it;
  *matched = ok && bson_iter_init_find(&it, &reply, "matchedCount") && bson_iter_as_int64(&it) > 0;
  if (!ok)
    afs_db_error(err, &berr, "MongoDB: updating an asset");
  bson_destroy(&reply);
  bson_destroy(&upd);
  bson_destroy(&q);
  mongoc_collection_destroy(assets);
  return ok;
}

static int m_call_finish(void *ctx, const bson_value_t *id, const char *token, const bson_t *set,
                         struct afs_error *err) {
  struct afs_bstore *st = ctx;
  mongoc_collection_t *calls = afs_broker_coll(st->b, st->mc, AFS_COLL_CALL);
  int rc = afs_lease_finish(calls, id, token, set, NULL, err);
  mongoc_collection_destroy(calls);
  return rc;
}

static void m_call_release(void *ctx, const bson_value_t *id, const char *token, long delay_ms) {
  struct afs_bstore *st = ctx;
  mongoc_collection_t *calls = afs_broker_coll(st->b, st->mc, AFS_COLL_CALL);
  afs_lease_release(calls, id, token, delay_ms, NULL);
  mongoc_collection_destroy(calls);
}

static const struct afs_bstore_ops mongo_ops = {
    .asset_get = m_asset_get,
    .asset_set = m_asset_set,
    .call_finish = m_call_finish,
    .call_release = m_call_release,
};

void afs_bstore_mongo(struct afs_bstore *st, struct afs_broker *b, mongoc_client_t *c) {
  memset(st, 0, sizeof *st);
  st->ops = &mongo_ops;
  st->ctx = st;
  st->b = b;
  st->mc = c;
}
