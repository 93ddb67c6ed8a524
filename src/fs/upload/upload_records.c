/* The uploader's record store on MongoDB (store.h's operations): upload records (create,
 * read, mark uploaded, abandon, drop) and the asset updates that completion, rename,
 * unlink and utimens make. ctx is the uploader (its database, options, counters).
 * Filters are on _id alone wherever possible: the one filter every MongoDB-compatible
 * server answers from its primary key, whatever indexes an operator made. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/cosync.h"
#include "assetfs/http_put.h"
#include "assetfs/lease.h" /* afs_now_ms */
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "assetfs/strutil.h"
#include "upload/upload_int.h"

/* ---------------------------------------------------------------- MongoDB helpers */

struct dbh {
  mongoc_client_t *client;
  mongoc_collection_t *coll;
  struct afs_db *db;
};

static void dbh_open(struct afs_uploader *up, struct dbh *h, const char *coll) {
  __atomic_add_fetch(&up->n_commands, 1, __ATOMIC_RELAXED);
  h->db = up->db;
  h->client = afs_db_pop(h->db);
  h->coll = afs_db_coll(h->db, h->client, coll);
}

static void dbh_close(struct dbh *h) {
  mongoc_collection_destroy(h->coll);
  afs_db_push(h->db, h->client);
}

static bool oid_from_hex(const char *hex, bson_oid_t *oid) {
  if (!bson_oid_is_valid(hex, strlen(hex)))
    return false;
  bson_oid_init_from_string(oid, hex);
  return true;
}

/* The document with _id oid in h's collection, copied into *doc (caller destroys; empty
 * when there is none, *found false). A bare _id filter (the primary key). */
static bool find_by_id(struct dbh *h, const bson_oid_t *oid, const bson_t *opts, bson_t *doc,
                       bool *found, bson_error_t *berr) {
  bson_t *filter = BCON_NEW(AFS_F_ID, BCON_OID(oid));
  const bson_t *d;
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(h->coll, filter, opts, NULL);
  *found = mongoc_cursor_next(cur, &d);
  if (*found)
    bson_copy_to(d, doc);
  else
    bson_init(doc);
  bool ok = !mongoc_cursor_error(cur, berr);
  mongoc_cursor_destroy(cur);
  bson_destroy(filter);
  return ok;
}

/* Projection of the status field alone, one document. Caller destroys. */
static bson_t *status_opts(void) {
  return BCON_NEW("projection", "{", AFS_F_STATUS, BCON_INT32(1), "}", "limit", BCON_INT64(1));
}

/* update_one on coll; *matched (may be NULL) gets the matched count. */
static bool update_one(struct afs_uploader *up, const char *coll, const bson_t *filter,
                       const bson_t *update, int64_t *matched, struct afs_error *err) {
  struct dbh h;
  bson_t reply;
  bson_error_t berr;
  dbh_open(up, &h, coll);
  bool ok = mongoc_collection_update_one(h.coll, filter, update, NULL, &reply, &berr);
  if (ok && matched) {
    bson_iter_t it;
    *matched = bson_iter_init_find(&it, &reply, "matchedCount") ? bson_iter_as_int64(&it) : 0;
  }
  bson_destroy(&reply);
  dbh_close(&h);
  if (!ok)
    return afs_db_error(err, &berr, coll);
  return true;
}

/* The pending record of one file (caller destroys); its _id in *oid. */
static bson_t *pending_doc(struct afs_uploader *up, const struct afs_pending_rec *r,
                           bson_oid_t *oid) {
  const struct afs_fs_options *o = up->opt;
  bson_oid_init(oid, NULL);
  int64_t t = afs_now_ms();
  const char *partition = r->partition, *file_path = r->file_path;
  const char *content_type = r->content_type;
  bson_t *doc =
      BCON_NEW(AFS_F_ID, BCON_OID(oid), AFS_F_PARTITION, BCON_UTF8(o->upload_partition), AFS_F_UID,
               BCON_UTF8(o->uid), AFS_F_SESSION, BCON_UTF8(o->session_id), "extra", BCON_UTF8(""),
               AFS_F_ASSET_PARTITION, BCON_UTF8(partition), AFS_F_FILE_PATH, BCON_UTF8(file_path),
               AFS_F_CONTENT_TYPE, BCON_UTF8(content_type), AFS_F_HOURS,
               BCON_DOUBLE(o->expiration_hours), AFS_F_STATUS, BCON_UTF8(AFS_UPLOAD_PENDING),
               AFS_F_CREATED, BCON_DATE_TIME(t), AFS_F_UPDATED, BCON_DATE_TIME(t));
  struct afs_error err = {0};
  if (afs_up_signed(up) && !afs_up_sign(up, AFS_REQ_UPLOAD, doc, &err))
    afs_err("cannot sign the upload record of %s: %s", file_path, err.msg); /* refused */
  return doc;
}

static bool m_insert_pending(void *ctx, const struct afs_pending_rec *recs, int n,
                             char (*ids)[AFS_OID_HEX], struct afs_error *err) {
  struct afs_uploader *up = ctx;
  bson_oid_t *oids = afs_xcalloc(n, sizeof *oids);
  bson_t **docs = afs_xcalloc(n, sizeof *docs);
  for (int i = 0; i < n; i++)
    docs[i] = pending_doc(up, &recs[i], &oids[i]);
  struct dbh h;
  bson_error_t berr;
  dbh_open(up, &h, AFS_COLL_UPLOAD);
  bool ok = n == 1 ? mongoc_collection_insert_one(h.coll, docs[0], NULL, NULL, &berr)
                   : mongoc_collection_insert_many(h.coll, (const bson_t **)docs, (size_t)n, NULL,
                                                   NULL, &berr);
  dbh_close(&h);
  for (int i = 0; i < n; i++)
    bson_destroy(docs[i]);
  free(docs);
  if (!ok) {
    /* An ordered insert stops at the first failure; the files keep no id and each
     * worker makes its own record (a record inserted before the failure is left to
     * the broker's stale-upload sweep). */
    free(oids);
    return afs_db_error(err, &berr, "cannot create the upload record");
  }
  for (int i = 0; i < n; i++)
    bson_oid_to_string(&oids[i], ids[i]);
  free(oids);
  return true;
}

/* Deletes the upload record if nobody uploaded to it yet. *gone: true if deleted (or it
 * did not exist). */
static bool m_delete_unused(void *ctx, const char *id, bool *gone, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  bson_oid_t oid;
  *gone = true;
  if (!oid_from_hex(id, &oid))
    return true;
  bson_t *filter = BCON_NEW(AFS_F_ID, BCON_OID(&oid), AFS_F_STATUS, "{", "$in", "[",
                            BCON_UTF8(AFS_UPLOAD_PENDING), BCON_UTF8(AFS_UPLOAD_INITIALIZED),
                            BCON_UTF8(AFS_UPLOAD_ERROR), "]", "}");
  struct dbh h;
  bson_t reply;
  bson_error_t berr;
  dbh_open(up, &h, AFS_COLL_UPLOAD);
  bool ok = mongoc_collection_delete_one(h.coll, filter, NULL, &reply, &berr);
  if (ok) {
    bson_iter_t it;
    *gone = bson_iter_init_find(&it, &reply, "deletedCount") && bson_iter_as_int64(&it) > 0;
    if (!*gone) {
      /* Not deletable: either it does not exist (fine) or it is past pending. */
      bson_t *f2 = BCON_NEW(AFS_F_ID, BCON_OID(&oid));
      int64_t n = mongoc_collection_count_documents(h.coll, f2, NULL, NULL, NULL, &berr);
      *gone = n == 0;
      bson_destroy(f2);
    }
  }
  bson_destroy(&reply);
  dbh_close(&h);
  bson_destroy(filter);
  if (!ok)
    return afs_db_error(err, &berr, "cannot delete the upload record");
  return true;
}

/* What the mount needs of its upload record: status, error and write URLs. */
static void state_read(const bson_t *doc, struct record_state *rs) {
  struct afs_record r;
  afs_record_read(doc, &r);
  rs->exists = true;
  rs->status = afs_upload_status_of(r.status);
  if (r.error)
    snprintf(rs->error, sizeof rs->error, "%s", r.error);
  for (int i = 0; i < AFS_PART_COUNT; i++)
    if (r.write_url[i] && r.write_url[i][0])
      rs->write_url[i] = afs_xstrdup(r.write_url[i]);
  afs_record_done(&r);
}

static bool m_fetch(void *ctx, const char *id, struct record_state *rs, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  bson_oid_t oid;
  memset(rs, 0, sizeof *rs);
  if (!oid_from_hex(id, &oid))
    return afs_error_set(err, EINVAL, "bad record id %s", id);
  bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
  struct dbh h;
  bson_error_t berr;
  bson_t doc;
  bool found;
  dbh_open(up, &h, AFS_COLL_UPLOAD);
  bool ok = find_by_id(&h, &oid, opts, &doc, &found, &berr);
  if (found)
    state_read(&doc, rs);
  bson_destroy(&doc);
  dbh_close(&h);
  bson_destroy(opts);
  if (!ok)
    return afs_db_error(err, &berr, "cannot read the upload record");
  return true;
}

static bool m_set_uploaded(void *ctx, const char *id, const struct meta *m, const char *caption,
                           int64_t mtime, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  bson_oid_t oid;
  if (!oid_from_hex(id, &oid))
    return afs_error_set(err, EINVAL, "bad record id");
  /* Filter on _id alone (the primary key, on any server). The status guard is kept by
   * the caller: the record
   * was just read as "initialized", and only this mount moves it on from there (the
   * broker waits for "uploaded"; its janitor only touches records a day old). */
  bson_t *filter = BCON_NEW(AFS_F_ID, BCON_OID(&oid));
  bson_t update = BSON_INITIALIZER, set = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&set, AFS_F_STATUS, AFS_UPLOAD_UPLOADED);
  BSON_APPEND_INT64(&set, AFS_F_SIZE, m->size);
  if (m->has_dims) {
    BSON_APPEND_INT32(&set, "xRes", m->x_res);
    BSON_APPEND_INT32(&set, "yRes", m->y_res);
  }
  if (m->color[0])
    BSON_APPEND_UTF8(&set, "color", m->color);
  if (m->has_duration)
    BSON_APPEND_DOUBLE(&set, "duration", m->duration);
  if (caption)
    BSON_APPEND_UTF8(&set, AFS_F_CAPTION, caption);
  if (mtime)
    BSON_APPEND_DATE_TIME(&set, AFS_F_MTIME, mtime);
  if (m->etag[0])
    BSON_APPEND_UTF8(&set, AFS_F_ETAG, m->etag);
  if (m->mp_n > 0) {
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(&set, AFS_F_MP_PARTS, &arr);
    for (int i = 0; i < m->mp_n; i++) {
      char k[16];
      snprintf(k, sizeof k, "%d", i);
      BSON_APPEND_UTF8(&arr, k, m->mp_etags[i]);
    }
    bson_append_array_end(&set, &arr);
  }
  bool ok = !afs_up_signed(up) || afs_up_sign_into(up, AFS_REQ_UPLOADED, &oid, &set, &set, err);
  BSON_APPEND_DATE_TIME(&set, AFS_F_UPDATED, afs_now_ms());
  BSON_APPEND_DOCUMENT(&update, "$set", &set);
  bson_destroy(&set);
  int64_t matched = 0;
  ok = ok && update_one(up, AFS_COLL_UPLOAD, filter, &update, &matched, err);
  bson_destroy(filter);
  bson_destroy(&update);
  if (ok && matched == 0)
    return afs_error_set(err, AFS_E_RECORD_GONE, "upload record %s changed while uploading", id);
  return ok;
}

/* ---------------------------------------------------------------- namespace records */

bool afs_up_set_by_id(struct afs_uploader *up, const char *coll, const char *id, const bson_t *set,
                      int64_t *matched, struct afs_error *err) {
  bson_oid_t oid;
  if (!oid_from_hex(id, &oid))
    return afs_error_set(err, EINVAL, "bad asset id %s", id);
  bson_t *filter = BCON_NEW(AFS_F_ID, BCON_OID(&oid));
  bson_t update = BSON_INITIALIZER;
  BSON_APPEND_DOCUMENT(&update, "$set", set);
  bool ok = update_one(up, coll, filter, &update, matched, err);
  bson_destroy(filter);
  bson_destroy(&update);
  return ok;
}

bool afs_up_read_by_id(struct afs_uploader *up, const char *coll, const char *id, bson_t *doc,
                       bool *found, struct afs_error *err) {
  bson_oid_t oid;
  struct dbh h;
  bson_error_t berr;
  bson_init(doc);
  *found = false;
  if (!oid_from_hex(id, &oid))
    return afs_error_set(err, EINVAL, "bad record id %s", id);
  bson_destroy(doc);
  dbh_open(up, &h, coll);
  bool ok = find_by_id(&h, &oid, NULL, doc, found, &berr);
  dbh_close(&h);
  return ok || afs_db_error(err, &berr, coll);
}

bool afs_up_find_ids(struct afs_uploader *up, const char *coll, const bson_t *filter,
                     char (**ids)[AFS_OID_HEX], size_t *n, struct afs_error *err) {
  bson_t *opts = BCON_NEW("projection", "{", AFS_F_ID, BCON_INT32(1), "}");
  struct dbh h;
  bson_error_t berr;
  const bson_t *doc;
  size_t cap = 0;
  *ids = NULL;
  *n = 0;
  dbh_open(up, &h, coll);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(h.coll, filter, opts, NULL);
  while (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, AFS_F_ID) || !BSON_ITER_HOLDS_OID(&it))
      continue;
    if (*n == cap)
      *ids = afs_xrealloc(*ids, (cap = cap ? cap * 2 : 4) * sizeof **ids);
    bson_oid_to_string(bson_iter_oid(&it), (*ids)[(*n)++]);
  }
  bool ok = !mongoc_cursor_error(cur, &berr);
  mongoc_cursor_destroy(cur);
  dbh_close(&h);
  bson_destroy(opts);
  return ok || afs_db_error(err, &berr, coll);
}

static bool m_set_file_path(void *ctx, const char *id, const char *file_path, bool upload,
                            bool asset, struct afs_error *err) {
  if (afs_up_signed(ctx))
    return afs_up_signed_set_file_path(ctx, id, file_path, upload, asset, err);
  bson_t *set =
      BCON_NEW(AFS_F_FILE_PATH, BCON_UTF8(file_path), AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
  bool ok = !upload || afs_up_set_by_id(ctx, AFS_COLL_UPLOAD, id, set, NULL, err);
  if (ok && asset)
    ok = afs_up_set_by_id(ctx, AFS_COLL_ASSET, id, set, NULL, err);
  bson_destroy(set);
  return ok;
}

static bool m_asset_mark_deleted(void *ctx, const char *id, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  if (afs_up_signed(up))
    return afs_up_call_remove(up, id, NULL, NULL, err);
  bson_t *set = BCON_NEW(AFS_F_STATUS, BCON_UTF8(AFS_ASSET_DELETED), AFS_F_UPDATED,
                         BCON_DATE_TIME(afs_now_ms()));
  bool ok = afs_up_set_by_id(up, AFS_COLL_ASSET, id, set, NULL, err);
  bson_destroy(set);
  return ok;
}

static bool m_asset_delete_at(void *ctx, const char *partition, const char *file_path,
                              const char *keep_id, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  bson_t *filter = BCON_NEW(AFS_F_PARTITION, BCON_UTF8(partition), AFS_F_FILE_PATH,
                            BCON_UTF8(file_path), AFS_F_STATUS, BCON_UTF8(AFS_ASSET_ACTIVE));
  bson_oid_t keep;
  if (keep_id && oid_from_hex(keep_id, &keep)) {
    bson_t ne;
    BSON_APPEND_DOCUMENT_BEGIN(filter, AFS_F_ID, &ne);
    BSON_APPEND_OID(&ne, "$ne", &keep);
    bson_append_document_end(filter, &ne);
  }
  if (afs_up_signed(up)) {
    bool ok = afs_up_signed_delete_matching(up, filter, partition, file_path, err);
    bson_destroy(filter);
    return ok;
  }
  bson_t *upd = BCON_NEW("$set", "{", AFS_F_STATUS, BCON_UTF8(AFS_ASSET_DELETED), AFS_F_UPDATED,
                         BCON_DATE_TIME(afs_now_ms()), "}");
  struct dbh h;
  bson_error_t berr;
  dbh_open(up, &h, AFS_COLL_ASSET);
  bool ok = mongoc_collection_update_many(h.coll, filter, upd, NULL, NULL, &berr);
  dbh_close(&h);
  bson_destroy(upd);
  bson_destroy(filter);
  if (!ok)
    return afs_db_error(err, &berr, AFS_COLL_ASSET);
  return true;
}

static bool m_abandon(void *ctx, const char *id, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  bson_t *set = BCON_NEW(AFS_F_ABANDONED, BCON_BOOL(true));
  bson_oid_t oid;
  bool ok = true;
  if (afs_up_signed(up))
    ok = oid_from_hex(id, &oid) ? afs_up_sign_into(up, AFS_REQ_ABANDON, &oid, set, set, err)
                                : afs_error_set(err, EINVAL, "bad record id %s", id);
  BSON_APPEND_DATE_TIME(set, AFS_F_UPDATED, afs_now_ms());
  ok = ok && afs_up_set_by_id(up, AFS_COLL_UPLOAD, id, set, NULL, err);
  bson_destroy(set);
  return ok;
}

static bool m_asset_set_mtime(void *ctx, const char *id, int64_t mtime_ms, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  if (afs_up_signed(up))
    return afs_up_call_mtime(up, id, mtime_ms, err);
  bson_t *set =
      BCON_NEW(AFS_F_MTIME, BCON_DATE_TIME(mtime_ms), AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
  bool ok = afs_up_set_by_id(up, AFS_COLL_ASSET, id, set, NULL, err);
  bson_destroy(set);
  return ok;
}

static int m_asset_rename_dir(void *ctx, const char *partition, const char *from_dir,
                              const char *to_dir, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  char *q = afs_regex_quote(from_dir), *re;
  afs_xasprintf(&re, "^%s/", q);
  free(q);
  bson_t *filter =
      BCON_NEW(AFS_F_PARTITION, BCON_UTF8(partition), AFS_F_STATUS, BCON_UTF8(AFS_ASSET_ACTIVE),
               AFS_F_FILE_PATH, "{", "$regex", BCON_UTF8(re), "}");
  bson_t *opts = BCON_NEW("projection", "{", AFS_F_FILE_PATH, BCON_INT32(1), "}");
  struct dbh h;
  bson_error_t berr;
  const bson_t *doc;
  int n = 0;
  size_t cap = 0, cnt = 0;
  struct item {
    char id[AFS_OID_HEX];
    char *fp;
  } *items = NULL;
  dbh_open(up, &h, AFS_COLL_ASSET);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(h.coll, filter, opts, NULL);
  while (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, AFS_F_ID) || !BSON_ITER_HOLDS_OID(&it))
      continue;
    bson_oid_t oid;
    bson_oid_copy(bson_iter_oid(&it), &oid);
    /* Any client can write CosyncAsset: a filePath that is not a string under from_dir
     * (an array matches the regex too) is not ours to move. */
    const char *old_fp;
    size_t fl = strlen(from_dir);
    if (!bson_iter_init_find(&it, doc, AFS_F_FILE_PATH) || !BSON_ITER_HOLDS_UTF8(&it) ||
        strncmp(old_fp = bson_iter_utf8(&it, NULL), from_dir, fl) || old_fp[fl] != '/')
      continue;
    if (cnt == cap) {
      items = afs_xrealloc(items, (cap = cap ? cap * 2 : 64) * sizeof *items);
    }
    bson_oid_to_string(&oid, items[cnt].id);
    afs_xasprintf(&items[cnt].fp, "%s/%s", to_dir, old_fp + fl + 1);
    cnt++;
  }
  bool ok = !mongoc_cursor_error(cur, &berr);
  mongoc_cursor_destroy(cur);
  dbh_close(&h);
  bson_destroy(filter);
  bson_destroy(opts);
  free(re);
  if (!ok)
    afs_db_error(err, &berr, "cannot list the directory's assets");
  for (size_t i = 0; i < cnt; i++) {
    if (ok && m_set_file_path(up, items[i].id, items[i].fp, false, true, err))
      n++;
    else
      ok = false;
    free(items[i].fp);
  }
  free(items);
  return ok ? n : -1;
}

/* Statuses of the given upload ids: out[i] is "" when not found. One find by _id per
 * record, each from the primary key: some MongoDB-compatible servers scan the whole
 * collection for an $in over _id. */
static bool m_batch_status(void *ctx, char (*ids)[AFS_OID_HEX], int n,
                           enum afs_upload_status *out) {
  struct afs_uploader *up = ctx;
  bson_t *opts = status_opts();
  struct dbh h;
  bson_error_t berr;
  bool ok = true;
  dbh_open(up, &h, AFS_COLL_UPLOAD);
  for (int i = 0; i < n && ok; i++) {
    bson_oid_t oid;
    bson_t doc;
    bool found;
    out[i] = AFS_US_NONE;
    if (!oid_from_hex(ids[i], &oid))
      continue;
    if (!find_by_id(&h, &oid, opts, &doc, &found, &berr)) {
      afs_debug("polling upload records: %s", berr.message);
      ok = false;
    }
    if (found) { /* a record without a (known) status is there all the same */
      bson_iter_t it;
      out[i] = afs_upload_status_of(bson_iter_init_find(&it, &doc, AFS_F_STATUS) &&
                                            BSON_ITER_HOLDS_UTF8(&it)
                                        ? bson_iter_utf8(&it, NULL)
                                        : NULL);
      if (out[i] == AFS_US_NONE)
        out[i] = AFS_US_OTHER;
    }
    bson_destroy(&doc);
  }
  dbh_close(&h);
  bson_destroy(opts);
  return ok;
}

static bool m_asset_active(void *ctx, const char *id, bool *active, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  bson_oid_t oid;
  *active = false;
  if (!oid_from_hex(id, &oid))
    return true;
  bson_t *opts = status_opts();
  struct dbh h;
  bson_error_t berr;
  bson_t doc;
  bool found;
  dbh_open(up, &h, AFS_COLL_ASSET);
  bool ok = find_by_id(&h, &oid, opts, &doc, &found, &berr);
  if (found) {
    bson_iter_t it;
    *active = bson_iter_init_find(&it, &doc, AFS_F_STATUS) && BSON_ITER_HOLDS_UTF8(&it) &&
              !strcmp(bson_iter_utf8(&it, NULL), AFS_ASSET_ACTIVE);
  }
  bson_destroy(&doc);
  dbh_close(&h);
  bson_destroy(opts);
  if (!ok)
    return afs_db_error(err, &berr, "cannot read the asset record");
  return true;
}

static bool m_session_scan(void *ctx, const char *status, void (*fn)(void *fctx, const char *id),
                           void *fctx, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  bson_t *filter =
      BCON_NEW(AFS_F_SESSION, BCON_UTF8(up->opt->session_id), AFS_F_STATUS, BCON_UTF8(status));
  bson_t opts = BSON_INITIALIZER, proj;
  BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
  BSON_APPEND_INT32(&proj, AFS_F_ID, 1);
  bson_append_document_end(&opts, &proj);
  struct dbh h;
  bson_error_t berr;
  const bson_t *doc;
  dbh_open(up, &h, AFS_COLL_UPLOAD);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(h.coll, filter, &opts, NULL);
  __atomic_add_fetch(&up->n_scans, 1, __ATOMIC_RELAXED);
  while (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    char id[AFS_OID_HEX];
    __atomic_add_fetch(&up->n_scan_docs, 1, __ATOMIC_RELAXED);
    if (!bson_iter_init_find(&it, doc, AFS_F_ID) || !BSON_ITER_HOLDS_OID(&it))
      continue;
    bson_oid_to_string(bson_iter_oid(&it), id);
    fn(fctx, id);
  }
  bool ok = !mongoc_cursor_error(cur, &berr);
  mongoc_cursor_destroy(cur);
  dbh_close(&h);
  bson_destroy(filter);
  bson_destroy(&opts);
  if (!ok)
    return afs_db_error(err, &berr, "cannot read this session's upload records");
  return true;
}

const struct afs_upload_store_ops afs_upload_store_mongo = {
    .insert_pending = m_insert_pending,
    .delete_unused = m_delete_unused,
    .abandon = m_abandon,
    .fetch = m_fetch,
    .batch_status = m_batch_status,
    .session_scan = m_session_scan,
    .set_uploaded = m_set_uploaded,
    .set_file_path = m_set_file_path,
    .asset_active = m_asset_active,
    .asset_mark_deleted = m_asset_mark_deleted,
    .asset_delete_at = m_asset_delete_at,
    .asset_set_mtime = m_asset_set_mtime,
    .asset_rename_dir = m_asset_rename_dir,
    .sign_parts = afs_up_call_sign_parts,
    .copy_parts = afs_up_call_copy_parts,
};
