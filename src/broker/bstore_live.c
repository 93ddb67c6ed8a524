/* The broker's live store (bstore.h): records in MongoDB through the worker's client
 * (leases by store/lease.c, key claims by key_claims.c), objects in S3 through the
 * broker's client. Each operation is one command, except where lease.c says otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/cosync.h"
#include "assetfs/db.h"
#include "assetfs/lease.h"
#include "broker.h"
#include "bstore.h"

static const char *const coll_names[AFS_BC_COUNT] = {AFS_COLL_UPLOAD, AFS_COLL_ASSET,
                                                     AFS_COLL_CALL};

const char *afs_bcoll_name(enum afs_bcoll coll) {
  return coll_names[coll];
}

static mongoc_collection_t *coll_of(struct afs_bstore *st, enum afs_bcoll coll) {
  return afs_broker_coll(st->b, st->mc, coll_names[coll]);
}

/* ---- leases ---- */

static int l_finish(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                    const char *from_status, const bson_t *set, const bson_t *unset, bson_t *after,
                    struct afs_error *err) {
  mongoc_collection_t *c = coll_of(ctx, coll);
  int rc;
  if (after && !from_status) {
    rc = afs_lease_finish_doc(c, id, token, set, unset, after, err);
  } else {
    if (after)
      bson_init(after); /* not asked for with from_status: nobody needs it yet */
    rc = from_status ? afs_lease_finish_from(c, id, token, from_status, set, unset, err)
                     : afs_lease_finish(c, id, token, set, unset, err);
  }
  mongoc_collection_destroy(c);
  return rc;
}

static int l_renew(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                   const char *status, long lease_ms, bson_t *after, struct afs_error *err) {
  mongoc_collection_t *c = coll_of(ctx, coll);
  int rc = afs_lease_renew_doc(c, id, token, status, lease_ms, after, err);
  mongoc_collection_destroy(c);
  return rc;
}

static void l_release(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                      const char *status, long delay_ms) {
  mongoc_collection_t *c = coll_of(ctx, coll);
  if (token)
    afs_lease_release(c, id, token, delay_ms, NULL);
  else if (status) /* unclaimed: only while it is still in that status */
    afs_lease_defer(c, id, status, delay_ms, NULL);
  mongoc_collection_destroy(c);
}

static int l_remove(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                    struct afs_error *err) {
  mongoc_collection_t *c = coll_of(ctx, coll);
  int rc;
  if (token) {
    rc = afs_lease_delete(c, id, token, err);
  } else {
    bson_t q = BSON_INITIALIZER, reply;
    bson_error_t berr;
    bson_append_value(&q, AFS_F_ID, 3, id);
    rc = mongoc_collection_delete_one(c, &q, NULL, &reply, &berr) ? 1 : -1;
    if (rc < 0)
      afs_db_error(err, &berr, "MongoDB: deleting a record");
    bson_destroy(&reply);
    bson_destroy(&q);
  }
  mongoc_collection_destroy(c);
  return rc;
}

static bool l_get(void *ctx, enum afs_bcoll coll, const bson_value_t *id, bool for_result,
                  bson_t **out, struct afs_error *err) {
  *out = NULL;
  mongoc_collection_t *c = coll_of(ctx, coll);
  bson_t q = BSON_INITIALIZER;
  bson_append_value(&q, AFS_F_ID, 3, id);
  bson_t *opts = for_result ? BCON_NEW("limit", BCON_INT64(1), "projection", "{", AFS_F_LEASE_OWNER,
                                       BCON_INT32(0), AFS_F_LEASE_UNTIL, BCON_INT32(0), AFS_F_SEAL,
                                       BCON_INT32(0), "}")
                            : BCON_NEW("limit", BCON_INT64(1));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &q, opts, NULL);
  const bson_t *d;
  bson_error_t berr;
  bool ok = true;
  if (mongoc_cursor_next(cur, &d))
    *out = bson_copy(d);
  else if (mongoc_cursor_error(cur, &berr))
    ok = afs_db_error(err, &berr, "MongoDB: reading a record");
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(&q);
  mongoc_collection_destroy(c);
  return ok;
}

/* ---- assets ---- */

static bool set_where(void *ctx, enum afs_bcoll coll, const bson_value_t *id,
                      const struct afs_bcond *cond, const bson_t *set, bool *matched,
                      struct afs_error *err) {
  mongoc_collection_t *c = coll_of(ctx, coll);
  bson_t q = BSON_INITIALIZER, upd = BSON_INITIALIZER, reply, ne;
  bson_append_value(&q, AFS_F_ID, 3, id);
  if (cond && cond->status_is)
    BSON_APPEND_UTF8(&q, AFS_F_STATUS, cond->status_is);
  if (cond && cond->status_not) {
    BSON_APPEND_DOCUMENT_BEGIN(&q, AFS_F_STATUS, &ne);
    BSON_APPEND_UTF8(&ne, "$ne", cond->status_not);
    bson_append_document_end(&q, &ne);
  }
  if (cond && cond->file_path_is)
    BSON_APPEND_UTF8(&q, AFS_F_FILE_PATH, cond->file_path_is);
  if (cond && cond->match)
    bson_concat(&q, cond->match);
  BSON_APPEND_DOCUMENT(&upd, "$set", set);
  bson_error_t berr;
  bool ok = mongoc_collection_update_one(c, &q, &upd, NULL, &reply, &berr);
  bson_iter_t it;
  *matched = ok && bson_iter_init_find(&it, &reply, "matchedCount") && bson_iter_as_int64(&it) > 0;
  if (!ok)
    afs_db_error(err, &berr,
                 coll == AFS_BC_ASSET ? "MongoDB: updating an asset"
                                      : "MongoDB: updating an upload record");
  bson_destroy(&reply);
  bson_destroy(&upd);
  bson_destroy(&q);
  mongoc_collection_destroy(c);
  return ok;
}

static bool a_set(void *ctx, const bson_value_t *id, const struct afs_bcond *cond,
                  const bson_t *set, bool *matched, struct afs_error *err) {
  return set_where(ctx, AFS_BC_ASSET, id, cond, set, matched, err);
}

static bool u_set(void *ctx, const bson_value_t *id, const struct afs_bcond *cond,
                  const bson_t *set, bool *matched, struct afs_error *err) {
  return set_where(ctx, AFS_BC_UPLOAD, id, cond, set, matched, err);
}

/* An upsert by _id that never matches a `deleted` asset, so a retry never revives one its
 * owner removed meanwhile: the insert then collides on _id. */
static int a_upsert(void *ctx, const bson_value_t *id, const bson_t *set, const bson_t *unset,
                    const bson_t *on_insert, struct afs_error *err) {
  mongoc_collection_t *c = coll_of(ctx, AFS_BC_ASSET);
  bson_t sel = BSON_INITIALIZER, ne, upd = BSON_INITIALIZER;
  bson_append_value(&sel, AFS_F_ID, 3, id);
  BSON_APPEND_DOCUMENT_BEGIN(&sel, AFS_F_STATUS, &ne);
  BSON_APPEND_UTF8(&ne, "$ne", AFS_ASSET_DELETED);
  bson_append_document_end(&sel, &ne);
  BSON_APPEND_DOCUMENT(&upd, "$set", set);
  if (unset && !bson_empty(unset))
    BSON_APPEND_DOCUMENT(&upd, "$unset", unset);
  if (on_insert && !bson_empty(on_insert))
    BSON_APPEND_DOCUMENT(&upd, "$setOnInsert", on_insert);
  bson_t *uopts = BCON_NEW("upsert", BCON_BOOL(true));
  bson_error_t berr;
  int rc = mongoc_collection_update_one(c, &sel, &upd, uopts, NULL, &berr) ? 1 : -1;
  if (rc < 0 && berr.code == AFS_DB_DUPLICATE_KEY)
    rc = 0;
  else if (rc < 0)
    afs_db_error(err, &berr, "MongoDB: writing the asset");
  bson_destroy(uopts);
  bson_destroy(&upd);
  bson_destroy(&sel);
  mongoc_collection_destroy(c);
  return rc;
}

static bool a_at(void *ctx, const char *partition, const char *file_path, bson_t ***docs, size_t *n,
                 struct afs_error *err) {
  *docs = NULL;
  *n = 0;
  mongoc_collection_t *c = coll_of(ctx, AFS_BC_ASSET);
  bson_t *q = BCON_NEW(AFS_F_PARTITION, BCON_UTF8(partition), AFS_F_FILE_PATH, BCON_UTF8(file_path),
                       AFS_F_STATUS, AFS_ASSET_ACTIVE);
  bson_t *opts =
      BCON_NEW("projection", "{", AFS_F_ID, BCON_INT32(1), AFS_F_VERSION_AT, BCON_INT32(1), "}");
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, q, opts, NULL);
  const bson_t *d;
  size_t cap = 0;
  while (mongoc_cursor_next(cur, &d)) {
    if (*n == cap)
      *docs = afs_xrealloc(*docs, (cap = cap ? 2 * cap : 8) * sizeof **docs);
    (*docs)[(*n)++] = bson_copy(d);
  }
  bson_error_t berr;
  bool ok = true;
  if (mongoc_cursor_error(cur, &berr))
    ok = afs_db_error(err, &berr, "MongoDB: finding the versions of a file");
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(q);
  mongoc_collection_destroy(c);
  return ok;
}

/* Regex matching s literally. Caller frees. */
static char *regex_quote(const char *s) {
  char *out = afs_xmalloc(2 * strlen(s) + 1), *w = out;
  for (; *s; s++) {
    if (strchr("\\^$.|?*+()[]{}", *s))
      *w++ = '\\';
    *w++ = *s;
  }
  *w = '\0';
  return out;
}

/* 1 if a record of coll matches q, 0 if none, -1 (err); destroys q. */
static int count_used(void *ctx, enum afs_bcoll coll, bson_t *q, struct afs_error *err) {
  bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
  mongoc_collection_t *c = coll_of(ctx, coll);
  bson_error_t berr;
  int64_t cnt = mongoc_collection_count_documents(c, q, opts, NULL, NULL, &berr);
  int rc = cnt > 0 ? 1 : 0;
  if (cnt < 0) {
    afs_db_error(err, &berr, "MongoDB: asking who uses a key");
    rc = -1;
  }
  mongoc_collection_destroy(c);
  bson_destroy(opts);
  bson_destroy(q);
  return rc;
}

/* One path (is an asset's object shared?) is a plain equality; the keys of a plan
 * (asked only when an object already lies at one of them) an $or that FerretDB does not
 * push down, which is rare. */
static int a_path_used(void *ctx, enum afs_bcoll coll, const bson_value_t *id,
                       const char *const *paths, size_t n, const char *parent,
                       struct afs_error *err) {
  bson_t q = BSON_INITIALIZER, alts, alt, in, ne, arr;
  if (id) {
    BSON_APPEND_DOCUMENT_BEGIN(&q, AFS_F_ID, &ne);
    bson_append_value(&ne, "$ne", 3, id);
    bson_append_document_end(&q, &ne);
  }
  if (!parent && n == 1) {
    /* A top-level equality: the one form FerretDB answers from its index. */
    BSON_APPEND_UTF8(&q, AFS_F_PATH, paths[0]);
    return count_used(ctx, coll, &q, err);
  }
  BSON_APPEND_ARRAY_BEGIN(&q, "$or", &alts);
  BSON_APPEND_DOCUMENT_BEGIN(&alts, "0", &alt);
  BSON_APPEND_DOCUMENT_BEGIN(&alt, AFS_F_PATH, &in);
  BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
  for (size_t i = 0; i < n; i++) {
    char key[16];
    snprintf(key, sizeof key, "%zu", i);
    BSON_APPEND_UTF8(&arr, key, paths[i]);
  }
  bson_append_array_end(&in, &arr);
  bson_append_document_end(&alt, &in);
  bson_append_document_end(&alts, &alt);
  if (parent) {
    char *quoted = regex_quote(parent), *re;
    afs_xasprintf(&re, "^%s(\\.[^/]*)?$", quoted);
    BSON_APPEND_DOCUMENT_BEGIN(&alts, "1", &alt);
    BSON_APPEND_REGEX(&alt, AFS_F_PATH, re, "");
    bson_append_document_end(&alts, &alt);
    free(re);
    free(quoted);
  }
  bson_append_array_end(&q, &alts);
  return count_used(ctx, coll, &q, err);
}

/* ---- key claims (key_claims.c) ---- */

static int k_take(void *ctx, const bson_value_t *rec, const char *const *keys, size_t n,
                  struct afs_error *err) {
  struct afs_bstore *st = ctx;
  return afs_live_claims_take(st->b, st->mc, rec, keys, n, err);
}

static void k_release(void *ctx, const bson_value_t *rec, const char *const *keys, size_t n) {
  struct afs_bstore *st = ctx;
  afs_live_claims_release(st->b, st->mc, rec, keys, n);
}

static int k_held(void *ctx, const bson_value_t *rec, char ***keys, size_t *n,
                  struct afs_error *err) {
  struct afs_bstore *st = ctx;
  return afs_live_claims_held(st->b, st->mc, rec, keys, n, err);
}

/* ---- objects ---- */

static bool o_head(void *ctx, const char *key, struct afs_s3_object_info *info,
                   struct afs_error *err) {
  struct afs_bstore *st = ctx;
  return afs_s3_head_object(&st->b->s3c, key, info, err);
}

static bool o_delete(void *ctx, const char *const *keys, size_t n, struct afs_error *err) {
  struct afs_bstore *st = ctx;
  return afs_s3_delete_objects(&st->b->s3c, keys, n, NULL, err);
}

static bool o_mp_create(void *ctx, const char *key, const char *content_type, char **upload_id,
                        struct afs_error *err) {
  struct afs_bstore *st = ctx;
  return afs_s3_multipart_create(&st->b->s3c, key, content_type, upload_id, err);
}

static bool o_mp_complete(void *ctx, const char *key, const char *upload_id,
                          const struct afs_s3_part *parts, size_t n, char *etag_out,
                          struct afs_error *err) {
  struct afs_bstore *st = ctx;
  return afs_s3_multipart_complete(&st->b->s3c, key, upload_id, parts, n, etag_out, err);
}

static bool o_mp_abort(void *ctx, const char *key, const char *upload_id, struct afs_error *err) {
  struct afs_bstore *st = ctx;
  return afs_s3_multipart_abort(&st->b->s3c, key, upload_id, err);
}

static bool o_mp_copy(void *ctx, const char *key, const char *upload_id, int number,
                      const char *src_key, int64_t off, int64_t len, char *etag_out,
                      struct afs_error *err) {
  struct afs_bstore *st = ctx;
  return afs_s3_upload_part_copy(&st->b->s3c, key, upload_id, number, src_key, off, len, etag_out,
                                 err);
}

static const struct afs_bstore_ops live_ops = {
    .finish = l_finish,
    .renew = l_renew,
    .release = l_release,
    .remove = l_remove,
    .get = l_get,
    .asset_set = a_set,
    .asset_upsert = a_upsert,
    .assets_at = a_at,
    .path_used = a_path_used,
    .claims_take = k_take,
    .claims_release = k_release,
    .claims_held = k_held,
    .obj_head = o_head,
    .obj_delete = o_delete,
    .upload_set = u_set,
    .mp_create = o_mp_create,
    .mp_complete = o_mp_complete,
    .mp_abort = o_mp_abort,
    .mp_copy = o_mp_copy,
};

void afs_bstore_live(struct afs_bstore *st, struct afs_broker *b, mongoc_client_t *c) {
  memset(st, 0, sizeof *st);
  st->ops = &live_ops;
  st->ctx = st;
  st->b = b;
  st->mc = c;
}
