/* Versions of one file: when an upload completes, the older active assets at its
 * partition and filePath are superseded (archived with keep_versions, else deleted).
 *
 * "Older" is decided by the broker's clock, never by a client-chosen _id: every asset
 * the broker completes carries `versionAt` (when a broker initialized its upload, or
 * completed it when it was never initialized; see upload_complete.c). An asset without
 * one (written by another Cosync client, or by a broker before versionAt existed) is
 * older than any that has one; between two without, or at the same millisecond, the
 * _id decides. A far-future _id therefore never outranks a later save.
 *
 * Renames race with this (the filesystem updates filePath by _id on the upload, and on
 * the asset once it exists), and so does removal: a file removed or replaced through a
 * mount while its upload was in flight has its upload marked `abandoned` BEFORE the
 * client moves anything else to that path. So when superseding would change something,
 * the upload is read again first (by _id): a rename is followed, an abandoned upload
 * supersedes nothing and its own asset is removed instead. Whatever a client moved onto
 * the path after our query is left alone (the client that renamed over it drops the
 * target itself). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "bstore.h"
#include "complete_int.h"

/* Tie-break between two versions of the same millisecond (or both without versionAt):
 * the greater _id, as Cosync did. True if `o` ranks above `id`. */
static bool id_above(const bson_value_t *o, const bson_value_t *id) {
  return o->value_type == BSON_TYPE_OID && id->value_type == BSON_TYPE_OID &&
         bson_oid_compare(&o->value.v_oid, &id->value.v_oid) > 0;
}

/* True if the asset `a` (projection: _id, versionAt) is a newer version than ours. */
static bool newer_than(const struct afs_record *a, const struct afs_version *self) {
  if (!a->version_at.has)
    return false; /* not ordered by a broker: older than ours, which is */
  if (a->version_at.ms != self->at)
    return a->version_at.ms > self->at;
  return id_above(&a->id, self->id);
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
 * the path is still the file's, and the upload not abandoned, before sup_apply). One
 * query. Only a path our asset still holds counts: the query shows whether our asset is
 * there (a client may have renamed or removed it since), at no extra round trip. */
static bool sup_find(struct afs_bstore *st, const struct afs_version *self, const char *partition,
                     const char *file_path, struct sup *s) {
  struct afs_error err = {0};
  bson_t **docs = NULL;
  size_t n = 0;
  memset(s, 0, sizeof *s);
  if (!st->ops->assets_at(st->ctx, partition, file_path, &docs, &n, &err))
    afs_warn("supersede %s: %s", file_path, err.msg);
  for (size_t i = 0; i < n; i++) {
    struct afs_record a;
    afs_record_read(docs[i], &a);
    if (a.id.value_type == BSON_TYPE_EOD)
      ; /* no id: nothing to supersede by */
    else if (afs_rec_id_equal(&a.id, self->id))
      s->self_here = true;
    else if (newer_than(&a, self))
      s->self_old = true;
    else if (s->n < sizeof s->olds / sizeof s->olds[0])
      bson_value_copy(&a.id, &s->olds[s->n++]);
    afs_record_done(&a);
    bson_destroy(docs[i]);
  }
  free(docs);
  if (!s->self_here) {
    if (s->n || s->self_old)
      afs_info("supersede %s: the asset is no longer active there; nothing superseded", file_path);
    sup_free(s);
    s->self_old = false;
  }
  return s->n > 0 || s->self_old;
}

/* Marks the older active assets found superseded, or ours if a newer one is already
 * there. Both brokers of a race run this after their upsert, so at least one of them
 * sees the other. Failures are logged: the next completion retries. Frees s. */
static void sup_apply(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *id,
                      const char *file_path, struct sup *s) {
  const char *target = b->cfg.keep_versions ? AFS_ASSET_ARCHIVED : AFS_ASSET_DELETED;
  const struct afs_bcond active = {.status_is = AFS_ASSET_ACTIVE};
  if (s->self_old && s->n < sizeof s->olds / sizeof s->olds[0])
    bson_value_copy(id, &s->olds[s->n++]);
  for (size_t i = 0; i < s->n; i++) {
    bson_t *set =
        BCON_NEW(AFS_F_STATUS, BCON_UTF8(target), AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
    if (!b->cfg.keep_versions)
      afs_broker_append_deletion_mark(b, &s->olds[i], set);
    char ids[80];
    struct afs_error err = {0};
    bool matched;
    if (!st->ops->asset_set(st->ctx, &s->olds[i], &active, set, &matched, &err))
      afs_warn("supersede %s: %s", file_path, err.msg);
    else
      afs_info("asset %s (%s) superseded: %s", afs_rec_id_str(&s->olds[i], ids, sizeof ids),
               file_path, target);
    bson_destroy(set);
  }
  sup_free(s);
}

void afs_complete_supersede(struct afs_broker *b, struct afs_bstore *st,
                            const struct afs_version *self, const char *partition,
                            const char *file_path) {
  struct sup s;
  if (sup_find(st, self, partition, file_path, &s))
    sup_apply(b, st, self->id, file_path, &s);
  sup_free(&s);
}

/* The upload as it is now (by _id, the one filter every backend answers from its
 * index): *now (caller frees) gets its filePath when it changed to another valid path
 * since `claimed`, *abandoned whether its client gave it up. 0 read, -1 MongoDB error. */
static int reread_upload(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *id,
                         const char *claimed, char **now, bool *abandoned) {
  struct afs_error err = {0};
  bson_t *d = NULL;
  *now = NULL;
  *abandoned = false;
  if (!st->ops->get(st->ctx, AFS_BC_UPLOAD, id, false, &d, &err)) {
    afs_warn("re-reading an upload: %s", err.msg);
    return -1;
  }
  if (d) {
    struct afs_record u;
    afs_record_read(d, &u);
    const char *fp = u.file_path;
    /* auth=required: only what its client signed (complete_int.h) */
    *abandoned = u.abandoned && afs_complete_change_signed(b, st, &u, true);
    if (fp && *fp && strcmp(fp, claimed) && afs_filepath_check(fp, strlen(fp), NULL) &&
        afs_complete_change_signed(b, st, &u, false))
      *now = afs_xstrdup(fp);
    afs_record_done(&u);
    bson_destroy(d);
  }
  return 0;
}

int afs_complete_move_asset(struct afs_bstore *st, const bson_value_t *id, const char *from,
                            const char *to, const char *ids) {
  struct afs_error err = {0};
  const struct afs_bcond at_from = {.file_path_is = from};
  bson_t *set =
      BCON_NEW(AFS_F_FILE_PATH, BCON_UTF8(to), AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
  bool matched = false;
  int rc;
  if (!st->ops->asset_set(st->ctx, id, &at_from, set, &matched, &err)) {
    afs_transient("upload %s: cannot move the asset to '%s': %s; will retry", ids, to, err.msg);
    rc = -1;
  } else {
    rc = matched;
    afs_info("upload %s: renamed to '%s' while completing; %s", ids, to,
             rc ? "the asset follows" : "its client already moved the asset");
  }
  bson_destroy(set);
  return rc;
}

bool afs_complete_drop_abandoned(struct afs_broker *b, struct afs_bstore *st,
                                 const bson_value_t *id, const char *ids) {
  struct afs_error err = {0};
  const struct afs_bcond active = {.status_is = AFS_ASSET_ACTIVE};
  bson_t *set =
      BCON_NEW(AFS_F_STATUS, AFS_ASSET_DELETED, AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
  afs_broker_append_deletion_mark(b, id, set);
  bool matched;
  bool ok = st->ops->asset_set(st->ctx, id, &active, set, &matched, &err);
  if (!ok)
    afs_transient("upload %s: cannot remove the asset of an abandoned upload: %s; will retry", ids,
                  err.msg);
  else
    afs_info("upload %s: removed or replaced through its mount before it completed; its "
             "asset is deleted and supersedes nothing",
             ids);
  bson_destroy(set);
  return ok;
}

enum afs_sup_result afs_complete_supersede_claimed(struct afs_broker *b, struct afs_bstore *st,
                                                   const struct afs_version *self,
                                                   const char *partition, const char *fp,
                                                   const char *ids, const char **cur_fp,
                                                   char **moved) {
  struct sup found;
  *cur_fp = fp;
  *moved = NULL;
  if (!sup_find(st, self, partition, fp, &found))
    return AFS_SUP_DONE;
  bool abandoned;
  if (reread_upload(b, st, self->id, fp, moved, &abandoned) < 0) {
    sup_free(&found);
    afs_transient("upload %s: cannot re-read the record; will retry", ids);
    return AFS_SUP_RETRY;
  }
  if (abandoned) {
    sup_free(&found);
    *cur_fp = NULL;
    return afs_complete_drop_abandoned(b, st, self->id, ids) ? AFS_SUP_ABANDONED : AFS_SUP_RETRY;
  }
  if (!*moved) {
    sup_apply(b, st, self->id, fp, &found);
    return AFS_SUP_DONE;
  }
  sup_free(&found);
  int at = afs_complete_move_asset(st, self->id, fp, *moved, ids);
  if (at < 0)
    return AFS_SUP_RETRY;
  *cur_fp = at ? *moved : NULL;
  if (*cur_fp)
    afs_complete_supersede(b, st, self, partition, *cur_fp);
  return AFS_SUP_DONE;
}
