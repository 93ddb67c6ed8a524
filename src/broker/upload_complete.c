/* uploaded -> completed: verify every part with HEAD, create the CosyncAsset (upsert with
 * the upload's _id, so a retry after a crash is harmless), supersede older versions of
 * the same file, then mark the upload completed.
 *
 * Renames race with this (the filesystem updates filePath by _id on the upload, and on
 * the asset once it exists). The asset takes the claimed filePath only when it is new;
 * superseding happens only at a path our asset still holds and, when it would change
 * something, only after the upload was read again; the finish returns the record, so a
 * rename up to the completion moves the asset too. MongoDB round trips in the usual
 * case: upsert, supersede query, finish. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/broker.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"

#define META_STR_MAX 65536

static const char *const meta_strings[] = {"caption", "color", "extra", "containerId", "title",
                                           "transactionId"};
static const char *const meta_numbers[] = {"duration", "xRes", "yRes"};

/* Copies the metadata fields a Cosync asset carries, with Cosync's defaults. */
static bool copy_metadata(const bson_t *doc, bson_t *set, struct afs_error *err) {
  for (size_t i = 0; i < sizeof meta_strings / sizeof meta_strings[0]; i++) {
    const char *v;
    if (!afs_rec_str(doc, meta_strings[i], META_STR_MAX, &v, err))
      return false;
    if (v)
      BSON_APPEND_UTF8(set, meta_strings[i], v);
    else if (!strcmp(meta_strings[i], "caption"))
      BSON_APPEND_UTF8(set, "caption", "");
    else if (!strcmp(meta_strings[i], "color"))
      BSON_APPEND_UTF8(set, "color", "#000000");
  }
  for (size_t i = 0; i < sizeof meta_numbers / sizeof meta_numbers[0]; i++) {
    double v;
    bool has;
    if (!afs_rec_num(doc, meta_numbers[i], &v, &has, err))
      return false;
    bson_iter_t it;
    if (has && bson_iter_init_find(&it, doc, meta_numbers[i]))
      bson_append_value(set, meta_numbers[i], -1, bson_iter_value(&it));
    else if (strcmp(meta_numbers[i], "duration"))
      BSON_APPEND_INT32(set, meta_numbers[i], 0);
  }
  return true;
}

static bool same_id(const bson_value_t *a, const bson_value_t *b) {
  if (a->value_type != b->value_type)
    return false;
  if (a->value_type == BSON_TYPE_OID)
    return bson_oid_equal(&a->value.v_oid, &b->value.v_oid);
  if (a->value_type == BSON_TYPE_UTF8)
    return a->value.v_utf8.len == b->value.v_utf8.len &&
           !memcmp(a->value.v_utf8.str, b->value.v_utf8.str, a->value.v_utf8.len);
  if (a->value_type == BSON_TYPE_INT32)
    return a->value.v_int32 == b->value.v_int32;
  if (a->value_type == BSON_TYPE_INT64)
    return a->value.v_int64 == b->value.v_int64;
  return false;
}

/* What supersede found at one path: the older active assets there, and whether ours is
 * there and older than another one. */
struct sup {
  bson_value_t olds[64];
  size_t n;
  bool self_here, self_old;
};

static void sup_free(struct sup *s) {
  for (size_t i = 0; i < s->n; i++)
    bson_value_destroy(&s->olds[i]);
  s->n = 0;
}

/* true if superseding at this path would change something (the caller then makes sure
 * the path is still the file's before sup_apply). One query. Only a path our asset still
 * holds counts: the query shows whether our asset is there (a client may have renamed or
 * removed it since), at no extra round trip. */
static bool sup_find(mongoc_collection_t *assets, const bson_value_t *id, const char *partition,
                     const char *file_path, struct sup *s) {
  memset(s, 0, sizeof *s);
  bson_t *q = BCON_NEW("_partition", BCON_UTF8(partition), "filePath", BCON_UTF8(file_path),
                       "status", "active");
  bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}");
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(assets, q, opts, NULL);
  const bson_t *d;
  while (mongoc_cursor_next(cur, &d)) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, d, "_id"))
      continue;
    const bson_value_t *o = bson_iter_value(&it);
    if (same_id(o, id)) {
      s->self_here = true;
      continue;
    }
    bool newer = o->value_type == BSON_TYPE_OID && id->value_type == BSON_TYPE_OID &&
                 bson_oid_compare(&o->value.v_oid, &id->value.v_oid) > 0;
    if (newer)
      s->self_old = true;
    else if (s->n < sizeof s->olds / sizeof s->olds[0])
      bson_value_copy(o, &s->olds[s->n++]);
  }
  bson_error_t berr;
  if (mongoc_cursor_error(cur, &berr))
    afs_warn("supersede %s: %s", file_path, berr.message);
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(q);
  if (!s->self_here) {
    /* Whatever a client moved to a path we no longer hold stays (the client that
     * renamed over it drops the target itself). */
    if (s->n || s->self_old)
      afs_info("supersede %s: the asset is no longer active there; nothing superseded",
               file_path);
    sup_free(s);
    s->self_old = false;
  }
  return s->n > 0 || s->self_old;
}

/* Marks the older active assets found superseded, or ours if a newer one is already
 * there. Both brokers of a race run this after their upsert, so at least one of them
 * sees the other. Failures are logged: the next completion retries. Frees s. */
static void sup_apply(struct afs_broker *b, mongoc_collection_t *assets, const bson_value_t *id,
                      const char *file_path, struct sup *s) {
  const char *target = b->cfg.keep_versions ? "archived" : "deleted";
  if (s->self_old && s->n < sizeof s->olds / sizeof s->olds[0])
    bson_value_copy(id, &s->olds[s->n++]);
  for (size_t i = 0; i < s->n; i++) {
    bson_t sel = BSON_INITIALIZER;
    bson_append_value(&sel, "_id", 3, &s->olds[i]);
    BSON_APPEND_UTF8(&sel, "status", "active");
    bson_t *upd = BCON_NEW("$set", "{", "status", BCON_UTF8(target), "updatedAt",
                           BCON_DATE_TIME(afs_now_ms()), "}");
    char ids[80];
    bson_error_t berr;
    if (!mongoc_collection_update_one(assets, &sel, upd, NULL, NULL, &berr))
      afs_warn("supersede %s: %s", file_path, berr.message);
    else
      afs_info("asset %s (%s) superseded: %s", afs_rec_id_str(&s->olds[i], ids, sizeof ids),
               file_path, target);
    bson_destroy(upd);
    bson_destroy(&sel);
  }
  sup_free(s);
}

static void supersede(struct afs_broker *b, mongoc_collection_t *assets, const bson_value_t *id,
                      const char *partition, const char *file_path) {
  struct sup s;
  if (sup_find(assets, id, partition, file_path, &s))
    sup_apply(b, assets, id, file_path, &s);
  sup_free(&s);
}

/* Deletes what a failed upload left at its keys, unless another asset record uses them
 * (then they are its objects, not leftovers). Failures are logged. */
static void delete_leftovers(struct afs_broker *b, mongoc_collection_t *assets,
                             const bson_value_t *id, const struct afs_keys *keys,
                             const char *ids) {
  struct afs_error err = {0};
  const char *orig = keys->key[AFS_PART_ORIGINAL];
  if (orig && afs_broker_path_shared(assets, id, orig)) {
    afs_warn("upload %s: another asset uses %s; keeping its objects", ids, orig);
    return;
  }
  if (!afs_broker_delete_keys(b, keys, NULL, &err))
    afs_warn("upload %s: %s", ids, err.msg);
}

/* Re-reads the upload's filePath by _id (the one filter every backend answers from its
 * index). 1 with *now (caller frees) when it changed to another valid path since
 * `claimed`, 0 when unchanged (or unusable: the claimed one stands), -1 on a MongoDB
 * error. */
static int current_file_path(mongoc_collection_t *uploads, const bson_value_t *id,
                             const char *claimed, char **now) {
  *now = NULL;
  bson_t q = BSON_INITIALIZER;
  bson_append_value(&q, "_id", 3, id);
  bson_t *opts = BCON_NEW("projection", "{", "filePath", BCON_INT32(1), "}", "limit",
                          BCON_INT64(1));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(uploads, &q, opts, NULL);
  const bson_t *d;
  int rc = 0;
  if (mongoc_cursor_next(cur, &d)) {
    const char *fp = NULL;
    if (afs_rec_str(d, "filePath", AFS_FILEPATH_MAX, &fp, NULL) && fp && *fp &&
        strcmp(fp, claimed) && afs_filepath_check(fp, strlen(fp), NULL)) {
      *now = strdup(fp);
      rc = *now ? 1 : -1;
    }
  }
  bson_error_t berr;
  if (mongoc_cursor_error(cur, &berr)) {
    afs_warn("re-reading an upload: %s", berr.message);
    free(*now);
    *now = NULL;
    rc = -1;
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(&q);
  return rc;
}

/* Moves asset `id` from filePath `from` (what we wrote) to `to`, only if it still has
 * `from`: a different value was written by its client after us and is newer. 1 moved,
 * 0 left alone, -1 MongoDB error. */
static int move_asset(mongoc_collection_t *assets, const bson_value_t *id, const char *from,
                      const char *to, const char *ids) {
  bson_t q = BSON_INITIALIZER, reply;
  bson_append_value(&q, "_id", 3, id);
  BSON_APPEND_UTF8(&q, "filePath", from);
  bson_t *upd = BCON_NEW("$set", "{", "filePath", BCON_UTF8(to), "updatedAt",
                         BCON_DATE_TIME(afs_now_ms()), "}");
  bson_error_t berr;
  int rc;
  if (!mongoc_collection_update_one(assets, &q, upd, NULL, &reply, &berr)) {
    afs_transient("upload %s: cannot move the asset to '%s': %s; will retry", ids, to,
                  berr.message);
    rc = -1;
  } else {
    bson_iter_t it;
    rc = bson_iter_init_find(&it, &reply, "matchedCount") && bson_iter_as_int64(&it) > 0;
    afs_info("upload %s: renamed to '%s' while completing; %s", ids, to,
             rc ? "the asset follows" : "its client already moved the asset");
  }
  bson_destroy(&reply);
  bson_destroy(upd);
  bson_destroy(&q);
  return rc;
}

enum afs_outcome afs_upload_complete(struct afs_broker *b, mongoc_client_t *c,
                                     const bson_t *doc, const char *token) {
  enum afs_outcome out = AFS_DONE;
  struct afs_error err = {0};
  bson_value_t id;
  struct afs_keys keys;
  struct afs_s3_object_info head[AFS_PART_COUNT];
  bson_t set = BSON_INITIALIZER, unset = BSON_INITIALIZER, *sel = NULL, *upd = NULL;
  const char *uid = NULL, *path = NULL, *ct = NULL, *part = NULL, *apart = NULL, *fp = NULL,
             *sess = NULL, *seal = NULL;
  char ids[80], fresh_seal[65];
  const char *cur_fp = NULL;
  char *moved = NULL;
  int at = 0;
  struct afs_upload_plan plan;
  memset(&plan, 0, sizeof plan);
  memset(&keys, 0, sizeof keys);
  memset(head, 0, sizeof head);
  if (!afs_rec_id(doc, &id)) {
    bson_destroy(&set);
    bson_destroy(&unset);
    return AFS_DONE;
  }
  afs_rec_id_str(&id, ids, sizeof ids);
  afs_broker_test_pause("complete_claimed", &id);
  mongoc_collection_t *uploads = afs_broker_coll(b, c, AFS_COLL_UPLOAD);
  mongoc_collection_t *assets = afs_broker_coll(b, c, AFS_COLL_ASSET);

  afs_broker_record_path(doc, &path);
  bson_iter_t sit;
  if (!path || !*path || !bson_iter_init_find(&sit, doc, "brokerSeal")) {
    /* Never initialized, or the initialization was lost (see key_timestamp in
     * upload_init.c): plan it now. Keys are deterministic, so objects uploaded through
     * URLs of a lost initialization are found; anything else finds nothing under the
     * uploader's own prefix and fails below. */
    if (!afs_upload_plan(doc, &plan, &err)) {
      out = afs_upload_fail(uploads, &id, token, err.msg);
      goto done;
    }
    path = plan.keys.key[AFS_PART_ORIGINAL];
    if (afs_broker_path_shared(assets, &id, path)) {
      /* A key timestamp comes from the client-chosen _id: an unsealed record can be aimed
       * at another asset's objects. Never adopt (or later delete) those. */
      char why[AFS_ERROR_MSG_MAX];
      snprintf(why, sizeof why, "another asset already uses %s; refusing to complete a "
               "record that was never initialized for it", path);
      out = afs_upload_fail(uploads, &id, token, why);
      goto done;
    }
    afs_broker_seal(b, &id, plan.uid, path, plan.content_type, plan.hours, fresh_seal);
    seal = fresh_seal;
    afs_info("upload %s: uploaded without a (kept) initialization; checking %s", ids, path);
  } else if (!afs_broker_seal_ok(b, doc)) {
    out = afs_upload_fail(uploads, &id, token,
                      "path, uid, contentType or expirationHours changed after the broker "
                      "initialized the record; refusing to complete it");
    goto done;
  }
  double hours = AFS_READ_HOURS_DEFAULT;
  bool has_hours;
  afs_rec_str(doc, "uid", AFS_UID_MAX, &uid, NULL);
  afs_rec_str(doc, "contentType", 255, &ct, NULL);
  afs_rec_num(doc, "expirationHours", &hours, &has_hours, NULL);
  if (!has_hours)
    hours = AFS_READ_HOURS_DEFAULT;
  if (!afs_rec_str(doc, "_partition", 1024, &part, &err) ||
      !afs_rec_str(doc, "assetPartition", 1024, &apart, &err) ||
      !afs_rec_str(doc, "sessionId", 256, &sess, &err) ||
      !afs_rec_str_req(doc, "filePath", AFS_FILEPATH_MAX, &fp, &err) ||
      !afs_filepath_check(fp, strlen(fp), &err) || !copy_metadata(doc, &set, &err)) {
    out = afs_upload_fail(uploads, &id, token, err.msg);
    goto done;
  }
  const char *target = apart && *apart ? apart : part;
  if (!target || !*target) {
    out = afs_upload_fail(uploads, &id, token, "neither _partition nor assetPartition is set");
    goto done;
  }
  int64_t t_head = afs_now_ms();
  afs_naming_keys_from_path(path, ct, &keys);
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    if (!keys.key[p])
      continue;
    if (!afs_s3_head_object(&b->s3c, keys.key[p], &head[p], &err)) {
      /* Never the upload's fault: an outage, or a refusal (credentials, policy) that
       * the operator has to fix; either way the record waits. */
      if (afs_s3_error_transient(&err))
        afs_transient("upload %s: cannot check %s: %s; will retry", ids, keys.key[p], err.msg);
      else
        afs_err("upload %s: S3 refused to check %s: %s; will retry", ids, keys.key[p], err.msg);
      afs_lease_release(uploads, &id, token, AFS_RETRY_MS, NULL);
      out = AFS_RETRY;
      goto done;
    }
    if (p == AFS_PART_ORIGINAL && !head[p].exists) {
      char why[AFS_ERROR_MSG_MAX];
      snprintf(why, sizeof why, "the original was not uploaded (no object at %s)", keys.key[p]);
      delete_leftovers(b, assets, &id, &keys, ids);
      out = afs_upload_fail(uploads, &id, token, why);
      goto done;
    }
    if (p == AFS_PART_ORIGINAL && head[p].size > b->cfg.max_object_size) {
      char why[AFS_ERROR_MSG_MAX];
      snprintf(why, sizeof why, "the object is %lld bytes, over the limit of %ld",
               (long long)head[p].size, b->cfg.max_object_size);
      delete_leftovers(b, assets, &id, &keys, ids);
      out = afs_upload_fail(uploads, &id, token, why);
      goto done;
    }
    if (!head[p].exists) {
      afs_info("upload %s: %s %s was not uploaded; its URL stays empty", ids,
               afs_part_name((enum afs_part)p), keys.key[p]);
      BSON_APPEND_UTF8(&unset, afs_read_url_field[p], "");
      continue;
    }
    /* Read URLs are signed now, so the lifetime starts at completion, not at
     * initialization (cosync-storage.md §4.3). */
    char *u = afs_broker_read_url(b, keys.key[p], hours, &err);
    if (!u) {
      afs_err("upload %s: signing failed: %s", ids, err.msg);
      afs_lease_release(uploads, &id, token, AFS_RETRY_MS, NULL);
      out = AFS_RETRY;
      goto done;
    }
    BSON_APPEND_UTF8(&set, afs_read_url_field[p], u);
    free(u);
  }
  for (int p = 0; p < AFS_PART_COUNT; p++)
    if (!keys.key[p])
      BSON_APPEND_UTF8(&unset, afs_read_url_field[p], "");

  int64_t now = afs_now_ms(), mtime;
  bool has_mtime;
  afs_rec_date(doc, "mtime", &mtime, &has_mtime);
  if (!seal)
    afs_rec_str(doc, "brokerSeal", 64, &seal, NULL);
  BSON_APPEND_UTF8(&set, "_partition", target);
  BSON_APPEND_UTF8(&set, "uid", uid);
  if (sess)
    BSON_APPEND_UTF8(&set, "sessionId", sess);
  BSON_APPEND_UTF8(&set, "path", path);
  BSON_APPEND_DOUBLE(&set, "expirationHours", hours);
  if (hours > 0)
    BSON_APPEND_DATE_TIME(&set, "expiration", now + afs_broker_read_seconds(hours) * 1000);
  else
    BSON_APPEND_UTF8(&unset, "expiration", "");
  if (ct)
    BSON_APPEND_UTF8(&set, "contentType", ct);
  BSON_APPEND_INT64(&set, "size", head[AFS_PART_ORIGINAL].size);
  BSON_APPEND_UTF8(&set, "etag", head[AFS_PART_ORIGINAL].etag);
  BSON_APPEND_DATE_TIME(&set, "mtime", has_mtime ? mtime : now);
  BSON_APPEND_UTF8(&set, "status", "active");
  BSON_APPEND_UTF8(&set, "brokerSeal", seal);
  BSON_APPEND_DATE_TIME(&set, "updatedAt", now);

  sel = bson_new();
  bson_append_value(sel, "_id", 3, &id);
  upd = bson_new();
  BSON_APPEND_DOCUMENT(upd, "$set", &set);
  if (!bson_empty(&unset))
    BSON_APPEND_DOCUMENT(upd, "$unset", &unset);
  bson_t soi;
  BSON_APPEND_DOCUMENT_BEGIN(upd, "$setOnInsert", &soi);
  BSON_APPEND_DATE_TIME(&soi, "createdAt", now);
  /* Only a new asset takes the claimed filePath: an existing one (a retry, or a second
   * broker after a lost update) may have been renamed by its client since. */
  BSON_APPEND_UTF8(&soi, "filePath", fp);
  bson_append_document_end(upd, &soi);
  int64_t t_upsert = afs_now_ms();
  bson_t *uopts = BCON_NEW("upsert", BCON_BOOL(true));
  bson_error_t berr;
  bool ok = mongoc_collection_update_one(assets, sel, upd, uopts, NULL, &berr);
  bson_destroy(uopts);
  if (!ok) {
    afs_transient("upload %s: cannot write the asset: %s; will retry", ids, berr.message);
    afs_lease_release(uploads, &id, token, AFS_RETRY_MS, NULL);
    out = AFS_RETRY;
    goto done;
  }
  afs_broker_test_pause("complete_upserted", &id);
  /* The client may have renamed the file since we claimed the record (a filePath update
   * of the upload by _id, and of the asset once it exists). Superseding at the claimed
   * path would then remove whatever was moved there: when there is something to
   * supersede, read the upload again first (by _id); a rename up to the completion is
   * also seen in the record the finish returns, and later ones find the asset. */
  struct sup found;
  int64_t t_sup = afs_now_ms();
  cur_fp = fp;
  if (sup_find(assets, &id, target, fp, &found)) {
    switch (current_file_path(uploads, &id, fp, &moved)) {
    case -1:
      sup_free(&found);
      afs_transient("upload %s: cannot re-read the record; will retry", ids);
      afs_lease_release(uploads, &id, token, AFS_RETRY_MS, NULL);
      out = AFS_RETRY;
      goto done;
    case 1:
      sup_free(&found);
      at = move_asset(assets, &id, fp, moved, ids);
      if (at < 0) {
        afs_lease_release(uploads, &id, token, AFS_RETRY_MS, NULL);
        out = AFS_RETRY;
        goto done;
      }
      cur_fp = at ? moved : NULL;
      if (cur_fp)
        supersede(b, assets, &id, target, cur_fp);
      break;
    default:
      sup_apply(b, assets, &id, fp, &found);
    }
  }
  sup_free(&found);

  bson_t *done_set = BCON_NEW("status", "completed", "updatedAt", BCON_DATE_TIME(afs_now_ms()));
  /* The write URLs are spent: dropping them keeps old upload records small (every
   * query scans the collection on FerretDB's SQLite backend). */
  bson_t *spent = bson_new();
  for (int p = 0; p < AFS_PART_COUNT; p++)
    BSON_APPEND_UTF8(spent, afs_write_url_field[p], "");
  bson_t after;
  int64_t t_finish = afs_now_ms();
  int rc = afs_lease_finish_doc(uploads, &id, token, done_set, spent, &after, &err);
  afs_debug("upload %s complete: head %lld ms, upsert %lld ms, supersede %lld ms, finish %lld ms",
            ids, (long long)(t_upsert - t_head), (long long)(t_sup - t_upsert),
            (long long)(t_finish - t_sup), (long long)(afs_now_ms() - t_finish));
  bson_destroy(spent);
  bson_destroy(done_set);
  if (rc == 1 && cur_fp) {
    /* A rename before the completion: follow it (a later one finds the asset and
     * updates it itself). */
    const char *last = NULL;
    afs_rec_str(&after, "filePath", AFS_FILEPATH_MAX, &last, NULL);
    if (last && *last && strcmp(last, cur_fp) && afs_filepath_check(last, strlen(last), NULL) &&
        move_asset(assets, &id, cur_fp, last, ids) == 1)
      supersede(b, assets, &id, target, last);
  }
  bson_destroy(&after);
  if (rc < 0) {
    afs_warn("upload %s: asset written but the upload not marked completed: %s", ids, err.msg);
    out = AFS_RETRY;
  } else if (rc == 0) {
    afs_warn("upload %s: lease lost while completing; the asset write is idempotent", ids);
  } else {
    afs_info("upload %s completed: asset in partition '%s' at '%s' (%lld bytes)", ids, target,
             cur_fp ? cur_fp : fp, (long long)head[AFS_PART_ORIGINAL].size);
  }
done:
  free(moved);
  afs_upload_plan_free(&plan);
  if (sel)
    bson_destroy(sel);
  if (upd)
    bson_destroy(upd);
  afs_keys_free(&keys);
  bson_destroy(&set);
  bson_destroy(&unset);
  bson_value_destroy(&id);
  mongoc_collection_destroy(uploads);
  mongoc_collection_destroy(assets);
  return out;
}
