/* Key claims: the database's word on which record an S3 key belongs to.
 *
 * Keys embed a timestamp derived from the record (so planning one record twice gives the
 * same keys), which does not by itself keep two records apart: names that the key rule
 * makes alike, or two records of one filePath whose ids share a second and a hash
 * residue, would get one key. So a key is handed out only with a claim, a document in
 * AFS_COLL_KEY_CLAIM whose _id IS the key and whose recordId names the upload. _id
 * uniqueness is the one constraint every MongoDB and FerretDB enforces (a unique index
 * on another field is weaker on FerretDB, and documents missing the field collide); a
 * lost duplicate-key race therefore means another record has the key, and the planner
 * (afs_naming_plan_unique) moves to the next timestamp. Claims are released, best effort,
 * when the objects are deleted; a leftover one keeps only that key out of use. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"
#include "bstore.h"

/* 1 when the claim on key is rec's, 0 when another record's or gone (released since:
 * taken by someone for all we know), -1 on a MongoDB error. By _id alone: the one filter
 * every backend answers from its index. */
static int claim_is_ours(mongoc_collection_t *coll, const bson_value_t *rec, const char *key,
                         struct afs_error *err) {
  bson_t *q = BCON_NEW(AFS_F_ID, BCON_UTF8(key));
  bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, q, opts, NULL);
  const bson_t *d;
  int rc = 0;
  if (mongoc_cursor_next(cur, &d)) {
    bson_iter_t it;
    rc = bson_iter_init_find(&it, d, "recordId") && afs_rec_id_equal(bson_iter_value(&it), rec);
  }
  bson_error_t berr;
  if (mongoc_cursor_error(cur, &berr)) {
    afs_db_error(err, &berr, "reading a key claim");
    rc = -1;
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(q);
  return rc;
}

int afs_live_claims_take(struct afs_broker *b, mongoc_client_t *c, const bson_value_t *rec,
                         const char *const *keys, size_t n, struct afs_error *err) {
  bson_t docs[AFS_PART_COUNT];
  const bson_t *ptrs[AFS_PART_COUNT];
  bool dup[AFS_PART_COUNT] = {false};
  int64_t now = afs_now_ms();
  if (n > AFS_PART_COUNT)
    return afs_error_set(err, EINVAL, "more keys than parts"), -1;
  for (size_t i = 0; i < n; i++) {
    bson_init(&docs[i]);
    BSON_APPEND_UTF8(&docs[i], AFS_F_ID, keys[i]);
    bson_append_value(&docs[i], "recordId", 8, rec);
    BSON_APPEND_DATE_TIME(&docs[i], AFS_F_CREATED, now);
    ptrs[i] = &docs[i];
  }
  mongoc_collection_t *coll = afs_broker_coll(b, c, AFS_COLL_KEY_CLAIM);
  bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
  bson_t reply;
  bson_error_t berr;
  int rc = 1;
  size_t ndup = 0;
  if (!mongoc_collection_insert_many(coll, ptrs, n, opts, &reply, &berr)) {
    /* Duplicates are expected (ours from an earlier planning, or another record's);
     * anything else, or a failure without write errors (network), is transient. */
    bson_iter_t it, we;
    bool other = !bson_iter_init_find(&it, &reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) ||
                 !bson_iter_recurse(&it, &we);
    while (!other && bson_iter_next(&we)) {
      int64_t idx = -1, code = 0;
      bson_iter_t e;
      if (!BSON_ITER_HOLDS_DOCUMENT(&we) || !bson_iter_recurse(&we, &e)) {
        other = true;
        break;
      }
      while (bson_iter_next(&e)) {
        if (!strcmp(bson_iter_key(&e), "index"))
          idx = bson_iter_as_int64(&e);
        else if (!strcmp(bson_iter_key(&e), "code"))
          code = bson_iter_as_int64(&e);
      }
      if (code != AFS_DB_DUPLICATE_KEY || idx < 0 || (size_t)idx >= n)
        other = true;
      else if (!dup[idx])
        dup[idx] = true, ndup++;
    }
    if (other || ndup == 0) {
      afs_db_error(err, &berr, "claiming keys");
      rc = -1;
    }
  }
  bson_destroy(&reply);
  for (size_t i = 0; rc == 1 && i < n; i++) {
    if (!dup[i])
      continue;
    int r = claim_is_ours(coll, rec, keys[i], err);
    if (r <= 0)
      rc = r;
  }
  if (rc == 0) {
    /* Give back what this call took: another record has one of the keys, so the planner
     * moves on and these must not keep the candidate's other keys from anyone. */
    const char *mine[AFS_PART_COUNT];
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
      if (!dup[i])
        mine[m++] = keys[i];
    if (m)
      afs_live_claims_release(b, c, rec, mine, m);
    afs_error_set(err, EEXIST, "a key is claimed by another record");
  }
  for (size_t i = 0; i < n; i++)
    bson_destroy(&docs[i]);
  bson_destroy(opts);
  mongoc_collection_destroy(coll);
  return rc;
}

void afs_live_claims_release(struct afs_broker *b, mongoc_client_t *c, const bson_value_t *rec,
                             const char *const *keys, size_t n) {
  if (n == 0)
    return;
  mongoc_collection_t *coll = afs_broker_coll(b, c, AFS_COLL_KEY_CLAIM);
  bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
  mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, opts);
  for (size_t i = 0; i < n; i++) {
    /* Two top-level equalities (index-served everywhere); only rec's claim goes. */
    bson_t q = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&q, AFS_F_ID, keys[i]);
    bson_append_value(&q, "recordId", 8, rec);
    mongoc_bulk_operation_remove_one_with_opts(bulk, &q, NULL, NULL);
    bson_destroy(&q);
  }
  bson_error_t berr;
  bson_t reply;
  if (!mongoc_bulk_operation_execute(bulk, &reply, &berr)) {
    char ids[80];
    afs_warn("record %s: releasing its key claims failed (%s); they stay",
             afs_rec_id_str(rec, ids, sizeof ids), berr.message);
  }
  bson_destroy(&reply);
  mongoc_bulk_operation_destroy(bulk);
  bson_destroy(opts);
  mongoc_collection_destroy(coll);
}

int afs_live_claims_held(struct afs_broker *b, mongoc_client_t *c, const bson_value_t *rec,
                         char ***keys, size_t *n, struct afs_error *err) {
  *keys = NULL;
  *n = 0;
  mongoc_collection_t *coll = afs_broker_coll(b, c, AFS_COLL_KEY_CLAIM);
  bson_t q = BSON_INITIALIZER;
  bson_append_value(&q, "recordId", 8, rec);
  /* A record holds one candidate's keys (at most AFS_PART_COUNT), a few more when a
   * release was lost; the limit only bounds a pathological record. */
  bson_t *opts = BCON_NEW("limit", BCON_INT64(8 * AFS_PART_COUNT), "projection", "{", AFS_F_ID,
                          BCON_INT32(1), "}");
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &q, opts, NULL);
  const bson_t *d;
  size_t cap = 0;
  int rc = 0;
  while (mongoc_cursor_next(cur, &d)) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, d, AFS_F_ID) || !BSON_ITER_HOLDS_UTF8(&it))
      continue;
    if (*n == cap) {
      cap = cap ? 2 * cap : 8;
      char **nk = realloc(*keys, cap * sizeof *nk);
      if (!nk) {
        rc = -1;
        afs_error_set(err, ENOMEM, "out of memory");
        break;
      }
      *keys = nk;
    }
    if (!((*keys)[*n] = strdup(bson_iter_utf8(&it, NULL)))) {
      rc = -1;
      afs_error_set(err, ENOMEM, "out of memory");
      break;
    }
    (*n)++;
  }
  bson_error_t berr;
  if (rc == 0 && mongoc_cursor_error(cur, &berr)) {
    afs_db_error(err, &berr, "reading a record's key claims");
    rc = -1;
  }
  if (rc == 0 && *n)
    rc = 1;
  if (rc < 0) {
    afs_key_claims_free(*keys, *n);
    *keys = NULL;
    *n = 0;
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(&q);
  mongoc_collection_destroy(coll);
  return rc;
}

void afs_key_claims_free(char **keys, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(keys[i]);
  free(keys);
}

/* ---- what the handlers call (through the store) ---- */

/* The keys of k except those in keep, as an array: their count. */
static size_t key_list(const struct afs_keys *k, const char *const *keep,
                       const char *out[AFS_PART_COUNT]) {
  size_t n = 0;
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    bool skip = !k->key[p];
    for (size_t i = 0; !skip && keep && keep[i]; i++)
      skip = !strcmp(keep[i], k->key[p]);
    if (!skip)
      out[n++] = k->key[p];
  }
  return n;
}

int afs_key_claims_take(struct afs_bstore *st, const bson_value_t *rec, const struct afs_keys *k,
                        struct afs_error *err) {
  const char *keys[AFS_PART_COUNT];
  size_t n = key_list(k, NULL, keys);
  return n ? st->ops->claims_take(st->ctx, rec, keys, n, err) : 1;
}

void afs_key_claims_release(struct afs_bstore *st, const bson_value_t *rec,
                            const struct afs_keys *k, const char *const *keep) {
  const char *keys[AFS_PART_COUNT];
  size_t n = key_list(k, keep, keys);
  if (n)
    st->ops->claims_release(st->ctx, rec, keys, n);
}

int afs_key_claims_held(struct afs_bstore *st, const bson_value_t *rec, char ***keys, size_t *n,
                        struct afs_error *err) {
  return st->ops->claims_held(st->ctx, rec, keys, n, err);
}

void afs_broker_release_claims(struct afs_broker *b, struct afs_bstore *st,
                               const struct afs_record *r) {
  struct afs_keys k;
  if (r->id.value_type == BSON_TYPE_EOD)
    return;
  if (afs_broker_asset_keys(b, r, &k))
    afs_key_claims_release(st, &r->id, &k, NULL);
  afs_keys_free(&k);
}
