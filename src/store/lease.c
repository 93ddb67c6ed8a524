#include "assetfs/lease.h"
#include "assetfs/cosync.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/db.h"

static char g_owner[64] = "assetfs";
static atomic_uint_fast64_t g_seq;

void afs_lease_set_owner(const char *owner) {
  snprintf(g_owner, sizeof g_owner, "%s", owner);
}

const char *afs_lease_owner(void) {
  return g_owner;
}

void afs_lease_append_claimable(bson_t *filter, int64_t now_ms) {
  bson_t alts, c0, c1, in0, not0, in1;
  BSON_APPEND_ARRAY_BEGIN(filter, "$or", &alts);
  BSON_APPEND_DOCUMENT_BEGIN(&alts, "0", &c0);
  BSON_APPEND_DOCUMENT_BEGIN(&c0, AFS_F_LEASE_UNTIL, &in0);
  BSON_APPEND_DOCUMENT_BEGIN(&in0, "$not", &not0);
  BSON_APPEND_UTF8(&not0, "$type", "date");
  bson_append_document_end(&in0, &not0);
  bson_append_document_end(&c0, &in0);
  bson_append_document_end(&alts, &c0);
  BSON_APPEND_DOCUMENT_BEGIN(&alts, "1", &c1);
  BSON_APPEND_DOCUMENT_BEGIN(&c1, AFS_F_LEASE_UNTIL, &in1);
  BSON_APPEND_DATE_TIME(&in1, "$lt", now_ms);
  bson_append_document_end(&c1, &in1);
  bson_append_document_end(&alts, &c1);
  bson_append_array_end(filter, &alts);
}

static void append_ids_in(bson_t *q, bson_value_t *ids, size_t n) {
  bson_t id, arr;
  BSON_APPEND_DOCUMENT_BEGIN(q, AFS_F_ID, &id);
  BSON_APPEND_ARRAY_BEGIN(&id, "$in", &arr);
  for (size_t i = 0; i < n; i++) {
    char k[16];
    snprintf(k, sizeof k, "%zu", i);
    bson_append_value(&arr, k, -1, &ids[i]);
  }
  bson_append_array_end(&id, &arr);
  bson_append_document_end(q, &id);
}

/* Takes the document of a findAndModify reply (none: out->n stays 0). */
static bool take_value(const bson_t *reply, struct afs_lease_batch *out, struct afs_error *err) {
  bson_iter_t it;
  out->docs = calloc(1, sizeof *out->docs);
  if (!out->docs)
    return afs_error_set(err, ENOMEM, "out of memory");
  if (bson_iter_init_find(&it, reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&it, &len, &data);
    out->docs[0] = bson_new_from_data(data, len);
    out->n = out->docs[0] ? 1 : 0;
  }
  return true;
}

bool afs_lease_claim(mongoc_collection_t *coll, const bson_t *filter, int limit, long lease_ms,
                     struct afs_lease_batch *out, struct afs_error *err) {
  bool ok = false;
  bson_error_t berr;
  bson_value_t *ids = NULL;
  bson_t **cands = NULL;
  size_t nids = 0;
  const bson_t *doc;
  mongoc_cursor_t *cur = NULL;
  bson_t *q = NULL, *opts = NULL, *upd = NULL, reply = BSON_INITIALIZER;
  memset(out, 0, sizeof *out);
  snprintf(out->token, sizeof out->token, "%s:%llu", g_owner,
           (unsigned long long)atomic_fetch_add(&g_seq, 1));
  if (limit <= 0)
    return true;
  int64_t now = afs_now_ms();

  if (limit == 1) {
    /* One record wanted (the dispatcher's idle polls): claim and read it in one
     * findAndModify, oldest first; nothing claimable costs that one round trip too. */
    q = bson_copy(filter);
    afs_lease_append_claimable(q, now);
    upd = BCON_NEW("$set", "{", AFS_F_LEASE_OWNER, BCON_UTF8(out->token), AFS_F_LEASE_UNTIL,
                   BCON_DATE_TIME(now + lease_ms), "}");
    bson_t *sort = BCON_NEW(AFS_F_ID, BCON_INT32(1));
    bson_t fam;
    bool fok = mongoc_collection_find_and_modify(coll, q, sort, upd, NULL, false, false, true, &fam,
                                                 &berr);
    bson_destroy(sort);
    if (!fok) {
      bson_destroy(&fam);
      afs_db_error(err, &berr, "claiming a record");
      goto done;
    }
    ok = take_value(&fam, out, err);
    bson_destroy(&fam);
    goto done;
  }

  /* 1. candidates, whole: when the claim gets every one of them, they are what the
   * caller works on and need no second read. */
  q = bson_copy(filter);
  afs_lease_append_claimable(q, now);
  opts = BCON_NEW("sort", "{", AFS_F_ID, BCON_INT32(1), "}", "limit", BCON_INT64(limit));
  cur = mongoc_collection_find_with_opts(coll, q, opts, NULL);
  ids = calloc((size_t)limit, sizeof *ids);
  cands = calloc((size_t)limit, sizeof *cands);
  if (!ids || !cands) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  while (nids < (size_t)limit && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, AFS_F_ID)) {
      cands[nids] = bson_copy(doc);
      bson_value_copy(bson_iter_value(&it), &ids[nids++]);
    }
  }
  if (mongoc_cursor_error(cur, &berr)) {
    afs_db_error(err, &berr, "finding claimable records");
    goto done;
  }
  mongoc_cursor_destroy(cur);
  cur = NULL;
  if (nids == 0) {
    ok = true;
    goto done;
  }

  if (nids == 1) {
    /* One record (the usual case when load is light): findAndModify claims and reads it
     * in one round trip. */
    bson_destroy(q);
    q = bson_copy(filter);
    bson_append_value(q, AFS_F_ID, 3, &ids[0]);
    afs_lease_append_claimable(q, now);
    upd = BCON_NEW("$set", "{", AFS_F_LEASE_OWNER, BCON_UTF8(out->token), AFS_F_LEASE_UNTIL,
                   BCON_DATE_TIME(now + lease_ms), "}");
    bson_t fam;
    if (!mongoc_collection_find_and_modify(coll, q, NULL, upd, NULL, false, false, true, &fam,
                                           &berr)) {
      bson_destroy(&fam);
      afs_db_error(err, &berr, "claiming a record");
      goto done;
    }
    ok = take_value(&fam, out, err);
    bson_destroy(&fam);
    goto done;
  }

  /* 2. claim those still claimable: the filter repeats, so a record another broker
   * claimed or moved on in between is left alone. */
  bson_destroy(q);
  q = bson_copy(filter);
  append_ids_in(q, ids, nids);
  afs_lease_append_claimable(q, now);
  upd = BCON_NEW("$set", "{", AFS_F_LEASE_OWNER, BCON_UTF8(out->token), AFS_F_LEASE_UNTIL,
                 BCON_DATE_TIME(now + lease_ms), "}");
  if (!mongoc_collection_update_many(coll, q, upd, NULL, &reply, &berr)) {
    afs_db_error(err, &berr, "claiming records");
    goto done;
  }
  bson_iter_t mit;
  if (bson_iter_init_find(&mit, &reply, "matchedCount") && BSON_ITER_HOLDS_NUMBER(&mit) &&
      bson_iter_as_int64(&mit) == (int64_t)nids) {
    /* All claimed, and each still matched the filter when it was: the candidates are
     * current enough (a concurrent claim that a server let "succeed" twice is caught
     * when the loser's token-conditional finish matches nothing). */
    out->docs = cands;
    out->n = nids;
    cands = NULL;
    ok = true;
    goto done;
  }

  /* 3. read what we own */
  bson_destroy(q);
  q = bson_new();
  append_ids_in(q, ids, nids);
  BSON_APPEND_UTF8(q, AFS_F_LEASE_OWNER, out->token);
  bson_destroy(opts);
  opts = BCON_NEW("sort", "{", AFS_F_ID, BCON_INT32(1), "}");
  cur = mongoc_collection_find_with_opts(coll, q, opts, NULL);
  out->docs = calloc(nids, sizeof *out->docs);
  if (!out->docs) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  while (out->n < nids && mongoc_cursor_next(cur, &doc))
    out->docs[out->n++] = bson_copy(doc);
  if (mongoc_cursor_error(cur, &berr)) {
    /* The claimed records come back when their leases expire. */
    afs_db_error(err, &berr, "reading claimed records");
    goto done;
  }
  ok = true;
done:
  if (cur)
    mongoc_cursor_destroy(cur);
  for (size_t i = 0; i < nids; i++) {
    bson_value_destroy(&ids[i]);
    if (cands && cands[i])
      bson_destroy(cands[i]);
  }
  free(ids);
  free(cands);
  if (q)
    bson_destroy(q);
  if (opts)
    bson_destroy(opts);
  if (upd)
    bson_destroy(upd);
  bson_destroy(&reply);
  if (!ok)
    afs_lease_batch_free(out);
  return ok;
}

bool afs_lease_candidates(mongoc_collection_t *coll, const bson_t *filter, int limit,
                          bson_value_t **ids, size_t *n, struct afs_error *err) {
  *ids = NULL;
  *n = 0;
  if (limit <= 0)
    return true;
  bson_t *q = bson_copy(filter);
  afs_lease_append_claimable(q, afs_now_ms());
  /* No sort: FerretDB would read, decode and sort every match before applying the limit
   * (measured in docs/internals/broker.md#polling). The natural order is about insertion
   * order, and every record comes up as those before it are done. */
  bson_t *opts =
      BCON_NEW("limit", BCON_INT64(limit), "projection", "{", AFS_F_ID, BCON_INT32(1), "}");
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, q, opts, NULL);
  bool ok = true;
  *ids = calloc((size_t)limit, sizeof **ids);
  if (!*ids) {
    ok = afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  const bson_t *doc;
  while (*n < (size_t)limit && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, AFS_F_ID))
      bson_value_copy(bson_iter_value(&it), &(*ids)[(*n)++]);
  }
  bson_error_t berr;
  if (mongoc_cursor_error(cur, &berr))
    ok = afs_db_error(err, &berr, "finding claimable records");
done:
  if (!ok) {
    afs_lease_ids_free(*ids, *n);
    *ids = NULL;
    *n = 0;
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(q);
  return ok;
}

bool afs_lease_peek(mongoc_collection_t *coll, const bson_t *filter, int limit, bson_t ***docs,
                    size_t *n, struct afs_error *err) {
  *docs = NULL;
  *n = 0;
  if (limit <= 0)
    return true;
  bson_t *q = bson_copy(filter);
  afs_lease_append_claimable(q, afs_now_ms());
  bson_t *opts = BCON_NEW("limit", BCON_INT64(limit)); /* no sort: see afs_lease_candidates */
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, q, opts, NULL);
  bool ok = true;
  *docs = calloc((size_t)limit, sizeof **docs);
  if (!*docs) {
    ok = afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  const bson_t *doc;
  while (*n < (size_t)limit && mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, AFS_F_ID) && ((*docs)[*n] = bson_copy(doc)))
      (*n)++;
  }
  bson_error_t berr;
  if (mongoc_cursor_error(cur, &berr))
    ok = afs_db_error(err, &berr, "finding claimable records");
done:
  if (!ok) {
    afs_lease_docs_free(*docs, *n);
    *docs = NULL;
    *n = 0;
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(q);
  return ok;
}

void afs_lease_docs_free(bson_t **docs, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (docs[i])
      bson_destroy(docs[i]);
  free(docs);
}

void afs_lease_ids_free(bson_value_t *ids, size_t n) {
  for (size_t i = 0; i < n; i++)
    bson_value_destroy(&ids[i]);
  free(ids);
}

bool afs_lease_claim_id(mongoc_collection_t *coll, const bson_t *filter, const bson_value_t *id,
                        long lease_ms, struct afs_lease_batch *out, struct afs_error *err) {
  memset(out, 0, sizeof *out);
  snprintf(out->token, sizeof out->token, "%s:%llu", g_owner,
           (unsigned long long)atomic_fetch_add(&g_seq, 1));
  int64_t now = afs_now_ms();
  bson_t *q = bson_copy(filter);
  bson_append_value(q, AFS_F_ID, 3, id);
  afs_lease_append_claimable(q, now);
  bson_t *upd = BCON_NEW("$set", "{", AFS_F_LEASE_OWNER, BCON_UTF8(out->token), AFS_F_LEASE_UNTIL,
                         BCON_DATE_TIME(now + lease_ms), "}");
  bson_t fam;
  bson_error_t berr;
  bool ok;
  if (!mongoc_collection_find_and_modify(coll, q, NULL, upd, NULL, false, false, true, &fam, &berr))
    ok = afs_db_error(err, &berr, "claiming a record");
  else
    ok = take_value(&fam, out, err);
  bson_destroy(&fam);
  bson_destroy(upd);
  bson_destroy(q);
  if (!ok)
    afs_lease_batch_free(out);
  return ok;
}

void afs_lease_batch_free(struct afs_lease_batch *b) {
  for (size_t i = 0; i < b->n; i++)
    bson_destroy(b->docs[i]);
  free(b->docs);
  b->docs = NULL;
  b->n = 0;
}

static int matched(const bson_t *reply) {
  bson_iter_t it;
  if (bson_iter_init_find(&it, reply, "matchedCount") && BSON_ITER_HOLDS_NUMBER(&it))
    return bson_iter_as_int64(&it) > 0;
  if (bson_iter_init_find(&it, reply, "deletedCount") && BSON_ITER_HOLDS_NUMBER(&it))
    return bson_iter_as_int64(&it) > 0;
  return 0;
}

/* The record while we hold it: under our lease token, or, without a token (work done
 * on a record read without a claim), while nobody's lease on it is live. */
static bson_t *owned(const bson_value_t *id, const char *token) {
  bson_t *q = bson_new();
  bson_append_value(q, AFS_F_ID, 3, id);
  if (token)
    BSON_APPEND_UTF8(q, AFS_F_LEASE_OWNER, token);
  else
    afs_lease_append_claimable(q, afs_now_ms());
  return q;
}

/* The update that ends a lease: $set `set`, $unset the lease fields and `unset`. */
static void finish_update(bson_t *upd, const bson_t *set, const bson_t *unset) {
  bson_t u;
  if (set && !bson_empty(set))
    BSON_APPEND_DOCUMENT(upd, "$set", set);
  BSON_APPEND_DOCUMENT_BEGIN(upd, "$unset", &u);
  BSON_APPEND_UTF8(&u, AFS_F_LEASE_OWNER, "");
  BSON_APPEND_UTF8(&u, AFS_F_LEASE_UNTIL, "");
  if (unset) {
    bson_iter_t it;
    if (bson_iter_init(&it, unset))
      while (bson_iter_next(&it))
        BSON_APPEND_UTF8(&u, bson_iter_key(&it), "");
  }
  bson_append_document_end(upd, &u);
}

/* The finish update, on a record we still own (and, when status is set, still in that
 * status). Returns matched count, -1 on error. */
static int finish_where(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                        const char *status, const bson_t *set, const bson_t *unset,
                        struct afs_error *err) {
  bson_error_t berr;
  bson_t reply, upd = BSON_INITIALIZER;
  bson_t *q = owned(id, token);
  if (status)
    BSON_APPEND_UTF8(q, AFS_F_STATUS, status);
  finish_update(&upd, set, unset);
  int rc;
  if (!mongoc_collection_update_one(coll, q, &upd, NULL, &reply, &berr)) {
    afs_db_error(err, &berr, "finishing a state change");
    rc = -1;
  } else {
    rc = matched(&reply);
  }
  bson_destroy(&reply);
  bson_destroy(&upd);
  bson_destroy(q);
  return rc;
}

int afs_lease_finish(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                     const bson_t *set, const bson_t *unset, struct afs_error *err) {
  return finish_where(coll, id, token, NULL, set, unset, err);
}

int afs_lease_finish_from(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                          const char *status, const bson_t *set, const bson_t *unset,
                          struct afs_error *err) {
  int rc = finish_where(coll, id, token, status, set, unset, err);
  if (rc == 0 && token)
    afs_lease_release(coll, id, token, 0, NULL); /* no-op when the lease was lost */
  return rc;
}

/* One findAndModify of the record matching q, returning it as it is after upd in *after
 * (initialized here; left empty unless 1). 1 matched, 0 not, -1 on error. */
static int modify_doc(mongoc_collection_t *coll, const bson_t *q, const bson_t *upd, bson_t *after,
                      const char *what, struct afs_error *err) {
  bson_error_t berr;
  bson_t reply;
  bson_init(after);
  int rc = 0;
  if (!mongoc_collection_find_and_modify(coll, q, NULL, upd, NULL, false, false, true, &reply,
                                         &berr)) {
    afs_db_error(err, &berr, what);
    rc = -1;
  } else {
    bson_iter_t it;
    if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
      uint32_t len;
      const uint8_t *data;
      bson_iter_document(&it, &len, &data);
      bson_t view;
      if (bson_init_static(&view, data, len)) {
        bson_destroy(after);
        bson_copy_to(&view, after);
        rc = 1;
      }
    }
  }
  bson_destroy(&reply);
  return rc;
}

int afs_lease_finish_doc(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                         const bson_t *set, const bson_t *unset, bson_t *after,
                         struct afs_error *err) {
  bson_t upd = BSON_INITIALIZER;
  bson_t *q = owned(id, token);
  finish_update(&upd, set, unset);
  int rc = modify_doc(coll, q, &upd, after, "finishing a state change", err);
  bson_destroy(&upd);
  bson_destroy(q);
  return rc;
}

int afs_lease_renew_doc(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                        const char *status, long lease_ms, bson_t *after, struct afs_error *err) {
  if (!token) {
    bson_init(after);
    return 0; /* nothing held, nothing to renew */
  }
  bson_t *q = owned(id, token);
  if (status)
    BSON_APPEND_UTF8(q, AFS_F_STATUS, status);
  bson_t *upd =
      BCON_NEW("$set", "{", AFS_F_LEASE_UNTIL, BCON_DATE_TIME(afs_now_ms() + lease_ms), "}");
  int rc = modify_doc(coll, q, upd, after, "renewing a lease", err);
  bson_destroy(upd);
  bson_destroy(q);
  return rc;
}

int afs_lease_release(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                      long retry_ms, struct afs_error *err) {
  if (!token)
    return 0; /* never claimed: nothing to give back */
  bson_error_t berr;
  bson_t reply;
  bson_t *q = owned(id, token);
  bson_t *upd;
  if (retry_ms > 0)
    upd = BCON_NEW("$set", "{", AFS_F_LEASE_UNTIL, BCON_DATE_TIME(afs_now_ms() + retry_ms), "}",
                   "$unset", "{", AFS_F_LEASE_OWNER, "", "}");
  else
    upd = BCON_NEW("$unset", "{", AFS_F_LEASE_OWNER, "", AFS_F_LEASE_UNTIL, "", "}");
  int rc;
  if (!mongoc_collection_update_one(coll, q, upd, NULL, &reply, &berr)) {
    afs_db_error(err, &berr, "releasing a lease");
    rc = -1;
  } else {
    rc = matched(&reply);
  }
  bson_destroy(&reply);
  bson_destroy(upd);
  bson_destroy(q);
  return rc;
}

int afs_lease_defer(mongoc_collection_t *coll, const bson_value_t *id, const char *status,
                    long retry_ms, struct afs_error *err) {
  bson_error_t berr;
  bson_t reply;
  bson_t *q = owned(id, NULL);
  BSON_APPEND_UTF8(q, AFS_F_STATUS, status);
  bson_t *upd =
      BCON_NEW("$set", "{", AFS_F_LEASE_UNTIL, BCON_DATE_TIME(afs_now_ms() + retry_ms), "}");
  int rc;
  if (!mongoc_collection_update_one(coll, q, upd, NULL, &reply, &berr)) {
    afs_db_error(err, &berr, "deferring a record");
    rc = -1;
  } else {
    rc = matched(&reply);
  }
  bson_destroy(&reply);
  bson_destroy(upd);
  bson_destroy(q);
  return rc;
}

int afs_lease_delete(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                     struct afs_error *err) {
  bson_error_t berr;
  bson_t reply;
  bson_t *q = owned(id, token);
  int rc;
  if (!mongoc_collection_delete_one(coll, q, NULL, &reply, &berr)) {
    afs_db_error(err, &berr, "deleting a record");
    rc = -1;
  } else {
    rc = matched(&reply);
  }
  bson_destroy(&reply);
  bson_destroy(q);
  return rc;
}
