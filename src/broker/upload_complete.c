/* uploaded -> completed: verify every part with HEAD, renew the lease, create the
 * CosyncAsset (upsert with the upload's _id, so a retry after a crash is harmless),
 * supersede older versions of the same file (upload_supersede.c), then mark the upload
 * completed.
 *
 * The asset is written only while the upload is still ours and still `uploaded`: the
 * HEADs can take long on a slow S3 (several at up to 2x20 s against a 60 s lease), and
 * a broker whose lease ran out meanwhile may find the work done by another, the file
 * removed and its objects purged; an upsert then would bring the asset back with dead
 * keys. So the lease is renewed (a findAndModify that also returns the record as it is
 * now) right before the upsert, and the upsert never turns a `deleted` asset active.
 *
 * Renames race with this (the filesystem updates filePath by _id on the upload, and on
 * the asset once it exists). The asset takes the filePath of the renewed record only
 * when it is new; the finish returns the record, so a rename up to the completion moves
 * the asset too. An upload its client abandoned (removed or replaced in flight) makes a
 * `deleted` asset that the janitor purges, and supersedes nothing. MongoDB round trips
 * in the usual case: renew, upsert, supersede query, finish. */
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
#include "complete_int.h"

/* Copies the metadata fields a Cosync asset carries, with Cosync's defaults; numbers
 * keep the BSON type their client gave them. */
static void copy_metadata(const struct afs_record *r, bson_t *set) {
  for (int m = 0; m < AFS_META_STRINGS; m++) {
    const char *v = r->meta[m];
    if (v)
      BSON_APPEND_UTF8(set, afs_meta_field[m], v);
    else if (m == AFS_META_CAPTION)
      BSON_APPEND_UTF8(set, afs_meta_field[m], "");
    else if (m == AFS_META_COLOR)
      BSON_APPEND_UTF8(set, afs_meta_field[m], "#000000");
  }
  for (int m = AFS_META_STRINGS; m < AFS_META_COUNT; m++) {
    const struct afs_rec_number *n = afs_record_meta_num(r, (enum afs_meta)m);
    if (n->has)
      bson_append_value(set, afs_meta_field[m], -1, &n->raw);
    else if (m != AFS_META_DURATION)
      BSON_APPEND_INT32(set, afs_meta_field[m], 0);
  }
}

/* One completion in progress: what its phases share. */
struct completion {
  struct afs_broker *b;
  struct afs_bstore *st;
  const struct afs_record *rec; /* the claimed record */
  const char *token;
  bson_value_t id;
  char ids[80];
  struct afs_upload_plan plan; /* keys planned now, for a record never initialized */
  const char *path, *seal, *uid, *ct, *sess, *fp, *target;
  char fresh_seal[65];
  double hours;
  struct afs_keys keys;
  struct afs_s3_object_info head[AFS_PART_COUNT];
  bson_t set, unset;         /* the asset's fields */
  bson_t now;                /* the record as the renewal returned it */
  struct afs_record now_rec; /* ... as read */
  bool abandoned;            /* its client removed it in flight: the asset is made deleted */
  bool kept_deleted;         /* the asset was removed meanwhile: not revived, nothing superseded */
  bool multipart;            /* the original was assembled from parts (multipart.c) */
  char mp_etag[130];         /* ... and the ETag S3 gave the object */
  struct afs_version version;
  enum afs_outcome out;
};

/* A transient failure: give the record back for a later try. Returns false (stop). */
static bool retry(struct completion *c) {
  c->st->ops->release(c->st->ctx, AFS_BC_UPLOAD, &c->id, c->token, NULL, AFS_RETRY_MS);
  c->out = AFS_RETRY;
  return false;
}

/* The record's fault: status error with the reason. Returns false (stop). */
static bool fail(struct completion *c, const char *why) {
  c->out = afs_upload_fail(c->st, &c->id, c->token, why);
  return false;
}

/* Deletes what a failed upload left at its keys, unless another asset record uses them
 * (then they are its objects, not leftovers). Failures are logged. */
static void delete_leftovers(struct completion *c) {
  struct afs_error err = {0};
  const char *orig = c->keys.key[AFS_PART_ORIGINAL];
  if (orig && afs_broker_path_shared(c->st, &c->id, orig)) {
    afs_warn("upload %s: another asset uses %s; keeping its objects", c->ids, orig);
    return;
  }
  if (!afs_broker_delete_keys(c->st, &c->keys, NULL, &err))
    afs_warn("upload %s: %s", c->ids, err.msg);
  else
    afs_key_claims_release(c->st, &c->id, &c->keys, NULL); /* the keys are free again */
}

/* The key of the original and the seal the asset gets: the record's own when the broker
 * initialized it, else planned now. */
static bool resolve_path(struct completion *c) {
  struct afs_error err = {0};
  afs_broker_record_path(c->rec, &c->path);
  if (c->path && *c->path && c->rec->has_seal) {
    if (!afs_broker_seal_ok(c->b, c->rec))
      return fail(c, "path, uid, contentType or expirationHours changed after the broker "
                     "initialized the record; refusing to complete it");
    c->seal = c->rec->seal;
    return true;
  }
  /* Never initialized, or the initialization was lost (see key_timestamp in
   * upload_init.c): plan it now, on the keys this record holds claims on (those a lost
   * initialization handed to the client), so its objects are found; anything else finds
   * nothing under the uploader's own prefix and fails below. */
  switch (afs_upload_plan_claimed(c->b, c->st, c->rec, &c->plan, &err)) {
  case 0:
    return fail(c, err.msg);
  case -1:
    afs_transient("upload %s: cannot plan its keys: %s; will retry", c->ids, err.msg);
    return retry(c);
  }
  c->path = c->plan.keys.key[AFS_PART_ORIGINAL];
  if (afs_broker_path_shared(c->st, &c->id, c->path)) {
    /* A key timestamp comes from the client-chosen _id: an unsealed record can be aimed
     * at another asset's objects. Never adopt (or later delete) those. */
    char why[AFS_ERROR_MSG_MAX];
    snprintf(why, sizeof why,
             "another asset already uses %s; refusing to complete a record that was never "
             "initialized for it",
             c->path);
    return fail(c, why);
  }
  afs_broker_seal(c->b, &c->id, c->plan.uid, c->path, c->plan.content_type, c->plan.hours,
                  c->fresh_seal);
  c->seal = c->fresh_seal;
  afs_info("upload %s: uploaded without a (kept) initialization; checking %s", c->ids, c->path);
  return true;
}

/* auth=required: the upload as its client signed it (its fields, partitions and the
 * change to `uploaded` with the metadata the asset copies). */
static bool authorized(struct completion *c) {
  struct afs_error err = {0};
  int rc = afs_authz_upload(c->b, c->st, c->rec, false, &err);
  if (rc == 1 && !afs_authz_check(c->b, AFS_REQ_UPLOADED, c->rec->doc, c->rec->uid, NULL, 0, &err))
    rc = 0;
  return rc == 1 ? true : fail(c, err.msg);
}

/* auth=required: an upload whose asset was completed before (its status put back to
 * `uploaded` by someone, or a broker that died before marking it) only gets marked
 * completed: its asset is not written again (that would revive an archived version or
 * undo its client's later changes). Returns false when done with the record. */
static bool not_done_before(struct completion *c) {
  struct afs_error err = {0};
  bson_t *asset = NULL;
  if (!c->b->authz)
    return true;
  if (!afs_bstore_asset_get(c->b, c->st, &c->id, &asset, &err) && err.code != AFS_E_UNTRUSTED) {
    afs_transient("upload %s: cannot read its asset: %s; will retry", c->ids, err.msg);
    return retry(c);
  }
  bool done = asset && bson_has_field(asset, AFS_F_COMPLETED_AT);
  if (asset)
    bson_destroy(asset);
  if (!done && err.code != AFS_E_UNTRUSTED)
    return true;
  bson_t *set =
      BCON_NEW(AFS_F_STATUS, AFS_UPLOAD_COMPLETED, AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
  if (c->st->ops->finish(c->st->ctx, AFS_BC_UPLOAD, &c->id, c->token, NULL, set, NULL, NULL, &err) <
      0)
    c->out = AFS_RETRY;
  bson_destroy(set);
  afs_warn("upload %s: its asset was completed before; marked completed, the asset left as "
           "it is",
           c->ids);
  return false;
}

/* auth=required: the original in the bucket is the one its client signed for (the
 * ETag its PUT returned), not bytes someone else put at the write URL meanwhile. */
static bool original_signed(struct completion *c) {
  if (!c->b->authz)
    return true;
  /* Multipart: the signed part list is what was assembled (S3 checked each part's ETag);
   * the object must still be that assembly. */
  const char *want = c->multipart ? c->mp_etag : c->rec->etag;
  const char *got = c->head[AFS_PART_ORIGINAL].etag;
  size_t wl = want ? strlen(want) : 0;
  if (wl >= 2 && want[0] == '"' && want[wl - 1] == '"')
    want++, wl -= 2;
  if (want && strlen(got) == wl && !strncmp(want, got, wl))
    return true;
  char why[AFS_ERROR_MSG_MAX];
  snprintf(why, sizeof why,
           "the original in S3 (ETag %s) is not the one uid '%s' signed for (ETag %.*s)", got,
           c->rec->uid, (int)(want ? wl : 6), want ? want : "(none)");
  return fail(c, why);
}

bool afs_complete_change_signed(struct afs_broker *b, struct afs_bstore *st,
                                const struct afs_record *now, bool abandoned) {
  struct afs_error err = {0};
  char ids[80];
  if (!b->authz)
    return true;
  if (abandoned ? afs_authz_check(b, AFS_REQ_ABANDON, now->doc, now->uid, NULL, 0, &err)
                : afs_authz_upload(b, st, now, false, &err) == 1)
    return true;
  afs_warn("upload %s: %s changed without its client's signature, ignored: %s",
           afs_rec_id_str(&now->id, ids, sizeof ids), abandoned ? "abandoned" : "filePath",
           err.msg);
  return false;
}

static bool later_change_ok(struct completion *c, const struct afs_record *now, const char *what) {
  return afs_complete_change_signed(c->b, c->st, now, !strcmp(what, "abandoned"));
}

/* The record's fields the asset copies, checked again (a client may have changed them). */
static bool read_fields(struct completion *c) {
  struct afs_error err = {0};
  const struct afs_record *r = c->rec;
  c->uid = r->uid;
  c->ct = r->content_type;
  c->hours = r->hours.has ? r->hours.v : AFS_READ_HOURS_DEFAULT;
  c->sess = r->session;
  c->fp = r->file_path;
  if (!afs_record_check(r, AFS_UPLOAD_FIELDS, &err))
    return fail(c, err.msg);
  if (!c->fp || !*c->fp)
    return fail(c, "filePath is missing");
  if (!afs_filepath_check(c->fp, strlen(c->fp), &err))
    return fail(c, err.msg);
  copy_metadata(r, &c->set);
  const char *part = r->partition, *apart = r->asset_partition;
  c->target = apart && *apart ? apart : part;
  if (!c->target || !*c->target)
    return fail(c, "neither _partition nor assetPartition is set");
  return true;
}

/* A multipart upload: its parts become the original now (multipart.c). */
static bool assemble(struct completion *c) {
  char why[AFS_ERROR_MSG_MAX] = "";
  switch (afs_mp_assemble(c->st, c->rec, c->path, c->ids, c->mp_etag, why, sizeof why)) {
  case AFS_MP_NONE:
    return true;
  case AFS_MP_DONE:
    c->multipart = true;
    return true;
  case AFS_MP_RETRY:
    return retry(c);
  case AFS_MP_FAILED:
    break;
  }
  return fail(c, why);
}

/* HEADs every part: the original must be there and within the size limit; the read URL
 * of each part that is there is signed now, so its lifetime starts at completion, not at
 * initialization (cosync-storage.md §4.3). */
static bool check_parts(struct completion *c) {
  struct afs_error err = {0};
  afs_naming_keys_from_path(c->path, c->ct, &c->keys);
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    const char *key = c->keys.key[p];
    if (!key) {
      BSON_APPEND_UTF8(&c->unset, afs_read_url_field[p], "");
      continue;
    }
    if (!c->st->ops->obj_head(c->st->ctx, key, &c->head[p], &err)) {
      /* Never the upload's fault: an outage, or a refusal (credentials, policy) that
       * the operator has to fix; either way the record waits. */
      if (afs_s3_error_transient(&err))
        afs_transient("upload %s: cannot check %s: %s; will retry", c->ids, key, err.msg);
      else
        afs_err("upload %s: S3 refused to check %s: %s; will retry", c->ids, key, err.msg);
      return retry(c);
    }
    char why[AFS_ERROR_MSG_MAX] = "";
    if (p == AFS_PART_ORIGINAL && !c->head[p].exists)
      snprintf(why, sizeof why, "the original was not uploaded (no object at %s)", key);
    else if (p == AFS_PART_ORIGINAL && c->head[p].size > c->b->cfg.max_object_size)
      snprintf(why, sizeof why, "the object is %lld bytes, over the limit of %ld",
               (long long)c->head[p].size, c->b->cfg.max_object_size);
    else if (p == AFS_PART_ORIGINAL && c->multipart && c->rec->size.has &&
             (double)c->head[p].size != c->rec->size.v)
      snprintf(why, sizeof why, "the parts make %lld bytes, the upload says %.0f",
               (long long)c->head[p].size, c->rec->size.v);
    if (why[0]) {
      delete_leftovers(c);
      return fail(c, why);
    }
    if (!c->head[p].exists) {
      afs_info("upload %s: %s %s was not uploaded; its URL stays empty", c->ids,
               afs_part_name((enum afs_part)p), key);
      BSON_APPEND_UTF8(&c->unset, afs_read_url_field[p], "");
      continue;
    }
    char *u = afs_broker_read_url(c->b, key, c->hours, &err);
    if (!u) {
      afs_err("upload %s: signing failed: %s", c->ids, err.msg);
      return retry(c);
    }
    BSON_APPEND_UTF8(&c->set, afs_read_url_field[p], u);
    free(u);
  }
  return true;
}

/* Renews the lease while the record is still ours and `uploaded`, and takes from the
 * record as it is now what a client may have changed during the HEADs: its filePath and
 * whether it was abandoned. Also fixes the version's place in time: when a broker
 * initialized the upload (never later than now: a client can only make its own version
 * older), or now for a record never initialized. */
static bool renew(struct completion *c) {
  struct afs_error err = {0};
  int rc = c->st->ops->renew(c->st->ctx, AFS_BC_UPLOAD, &c->id, c->token, AFS_UPLOAD_UPLOADED,
                             c->b->cfg.lease_seconds * 1000L, &c->now, &err);
  if (rc < 0) {
    afs_transient("upload %s: cannot renew its lease: %s; will retry", c->ids, err.msg);
    return retry(c);
  }
  if (rc == 0) {
    afs_warn("upload %s: its lease ran out while its objects were checked and another broker "
             "took it (or it left `uploaded`); the asset is not written",
             c->ids);
    c->out = AFS_DONE;
    return false;
  }
  afs_record_read(&c->now, &c->now_rec);
  const struct afs_record *r = &c->now_rec;
  c->abandoned = r->abandoned && later_change_ok(c, r, "abandoned");
  if (r->file_path && *r->file_path &&
      afs_filepath_check(r->file_path, strlen(r->file_path), NULL) &&
      (!strcmp(r->file_path, c->fp) || later_change_ok(c, r, "filePath")))
    c->fp = r->file_path;
  int64_t now = afs_now_ms(), init_at = r->initialized_at.ms;
  bool init_known = r->initialized_at.has && (!c->b->authz || afs_broker_init_mark_ok(c->b, r));
  c->version.id = &c->id;
  c->version.at = init_known && init_at > 0 && init_at <= now ? init_at : now;
  return true;
}

/* The asset's fields besides the metadata and read URLs check_parts set. */
static void asset_fields(struct completion *c, int64_t now) {
  int64_t mtime = c->rec->mtime.ms;
  bool has_mtime = c->rec->mtime.has;
  BSON_APPEND_UTF8(&c->set, AFS_F_PARTITION, c->target);
  BSON_APPEND_UTF8(&c->set, AFS_F_UID, c->uid);
  if (c->sess)
    BSON_APPEND_UTF8(&c->set, AFS_F_SESSION, c->sess);
  BSON_APPEND_UTF8(&c->set, AFS_F_PATH, c->path);
  BSON_APPEND_DOUBLE(&c->set, AFS_F_HOURS, c->hours);
  if (c->hours > 0)
    BSON_APPEND_DATE_TIME(&c->set, AFS_F_EXPIRATION,
                          now + afs_broker_read_seconds(c->hours) * 1000);
  else
    BSON_APPEND_UTF8(&c->unset, AFS_F_EXPIRATION, "");
  if (c->ct)
    BSON_APPEND_UTF8(&c->set, AFS_F_CONTENT_TYPE, c->ct);
  BSON_APPEND_INT64(&c->set, AFS_F_SIZE, c->head[AFS_PART_ORIGINAL].size);
  BSON_APPEND_UTF8(&c->set, AFS_F_ETAG, c->head[AFS_PART_ORIGINAL].etag);
  BSON_APPEND_DATE_TIME(&c->set, AFS_F_MTIME, has_mtime ? mtime : now);
  BSON_APPEND_UTF8(&c->set, AFS_F_STATUS, c->abandoned ? AFS_ASSET_DELETED : AFS_ASSET_ACTIVE);
  if (c->abandoned)
    afs_broker_append_deletion_mark(c->b, &c->id, &c->set);
  BSON_APPEND_UTF8(&c->set, AFS_F_SEAL, c->seal);
  BSON_APPEND_DATE_TIME(&c->set, AFS_F_VERSION_AT, c->version.at);
  BSON_APPEND_DATE_TIME(&c->set, AFS_F_COMPLETED_AT, now);
  BSON_APPEND_DATE_TIME(&c->set, AFS_F_UPDATED, now);
}

/* Writes the asset; never revives one its owner removed meanwhile (the store's
 * asset_upsert). */
static bool upsert_asset(struct completion *c) {
  struct afs_error err = {0};
  int64_t now = afs_now_ms();
  asset_fields(c, now);
  bson_t soi = BSON_INITIALIZER;
  BSON_APPEND_DATE_TIME(&soi, AFS_F_CREATED, now);
  /* Only a new asset takes the record's filePath: an existing one (a retry, or a second
   * broker after a lost update) may have been renamed by its client since. */
  BSON_APPEND_UTF8(&soi, AFS_F_FILE_PATH, c->fp);
  int rc = c->st->ops->asset_upsert(c->st->ctx, &c->id, &c->set, &c->unset, &soi, &err);
  bson_destroy(&soi);
  if (rc == 0) {
    afs_info("upload %s: its asset was removed meanwhile; not revived", c->ids);
    c->kept_deleted = true;
    return true;
  }
  if (rc < 0) {
    afs_transient("upload %s: cannot write the asset: %s; will retry", c->ids, err.msg);
    return retry(c);
  }
  return true;
}

/* Marks the upload completed (the write URLs are spent: dropping them keeps old upload
 * records small) and follows what its client did up to then: a rename moves the asset,
 * an abandonment seen only now removes it. */
static void finish(struct completion *c, const char *cur_fp) {
  struct afs_error err = {0};
  bson_t *done_set =
      BCON_NEW(AFS_F_STATUS, AFS_UPLOAD_COMPLETED, AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
  bson_t *spent = bson_new();
  for (int p = 0; p < AFS_PART_COUNT; p++)
    BSON_APPEND_UTF8(spent, afs_write_url_field[p], "");
  bson_t after;
  int rc = c->st->ops->finish(c->st->ctx, AFS_BC_UPLOAD, &c->id, c->token, NULL, done_set, spent,
                              &after, &err);
  bson_destroy(spent);
  bson_destroy(done_set);
  bool live = !c->abandoned && !c->kept_deleted;
  struct afs_record ar;
  afs_record_read(&after, &ar);
  if (rc == 1 && live && ar.abandoned && later_change_ok(c, &ar, "abandoned")) {
    afs_complete_drop_abandoned(c->b, c->st, &c->id, c->ids);
    cur_fp = NULL;
  } else if (rc == 1 && live && cur_fp) {
    const char *last = ar.file_path;
    if (last && *last && strcmp(last, cur_fp) && afs_filepath_check(last, strlen(last), NULL) &&
        later_change_ok(c, &ar, "filePath") &&
        afs_complete_move_asset(c->st, &c->id, cur_fp, last, c->ids) == 1) {
      afs_complete_supersede(c->b, c->st, &c->version, c->target, last);
      cur_fp = last;
    }
  }
  if (rc < 0) {
    afs_warn("upload %s: asset written but the upload not marked completed: %s", c->ids, err.msg);
    c->out = AFS_RETRY;
  } else if (rc == 0) {
    afs_warn("upload %s: lease lost while completing; the asset write is idempotent", c->ids);
  } else if (live) {
    afs_info("upload %s completed: asset in partition '%s' at '%s' (%lld bytes)", c->ids, c->target,
             cur_fp ? cur_fp : c->fp, (long long)c->head[AFS_PART_ORIGINAL].size);
  } else {
    afs_info("upload %s completed without an active asset (%s)", c->ids,
             c->abandoned ? "abandoned by its client" : "its asset was removed");
  }
  afs_record_done(&ar);
  bson_destroy(&after);
}

/* Supersedes at the claimed path, then finishes. */
static void supersede_and_finish(struct completion *c) {
  const char *cur_fp = c->fp;
  char *moved = NULL;
  if (!c->abandoned && !c->kept_deleted) {
    switch (afs_complete_supersede_claimed(c->b, c->st, &c->version, c->target, c->fp, c->ids,
                                           &cur_fp, &moved)) {
    case AFS_SUP_RETRY:
      retry(c);
      free(moved);
      return;
    case AFS_SUP_ABANDONED:
      c->abandoned = true;
      break;
    case AFS_SUP_DONE:
      break;
    }
  }
  finish(c, cur_fp);
  free(moved);
}

enum afs_outcome afs_upload_complete(struct afs_broker *b, struct afs_bstore *st,
                                     const struct afs_record *rec, const char *token) {
  struct completion c;
  memset(&c, 0, sizeof c);
  if (rec->id.value_type == BSON_TYPE_EOD)
    return AFS_DONE;
  bson_value_copy(&rec->id, &c.id);
  c.rec = rec;
  c.b = b;
  c.st = st;
  c.token = token;
  c.out = AFS_DONE;
  bson_init(&c.set);
  bson_init(&c.unset);
  bson_init(&c.now);
  afs_rec_id_str(&c.id, c.ids, sizeof c.ids);
  afs_broker_test_pause("complete_claimed", &c.id);
  /* Each phase returns false when the record is done with (c.out says how). */
  int64_t t0 = afs_now_ms(), t_renew = 0, t_upsert = 0, t_sup = 0;
  if (!authorized(&c) || !not_done_before(&c) || !resolve_path(&c) || !read_fields(&c) ||
      !assemble(&c) || !check_parts(&c) || !original_signed(&c))
    goto done;
  afs_broker_test_pause("complete_checked", &c.id);
  t_renew = afs_now_ms();
  bson_destroy(&c.now);
  if (!renew(&c))
    goto done;
  t_upsert = afs_now_ms();
  if (!upsert_asset(&c))
    goto done;
  afs_broker_test_pause("complete_upserted", &c.id);
  t_sup = afs_now_ms();
  supersede_and_finish(&c);
  afs_debug("upload %s complete: checks %lld ms, renew %lld ms, upsert %lld ms, "
            "supersede+finish %lld ms",
            c.ids, (long long)(t_renew - t0), (long long)(t_upsert - t_renew),
            (long long)(t_sup - t_upsert), (long long)(afs_now_ms() - t_sup));
done:
  afs_upload_plan_free(&c.plan);
  afs_record_done(&c.now_rec);
  afs_keys_free(&c.keys);
  bson_destroy(&c.set);
  bson_destroy(&c.unset);
  bson_destroy(&c.now);
  bson_value_destroy(&c.id);
  return c.out;
}
