/* Changes to an asset that a client asks the broker for (function calls), so that with
 * `auth=required` no client needs to write CosyncAsset itself:
 *   AssetfsRenameAsset [id, from, to, replace]  the active asset id at filePath `from`
 *        moves to `to` in its partition. `replace` ("" for none) is the id of the asset
 *        the client saw at `to`: it is removed (a rename over a file); any other active
 *        asset there refuses the call. Both paths and the replaced id bind the request to
 *        the state it was made in, so a replayed rename cannot remove a later file.
 *   AssetfsSetCaption  [id, caption]             the caption (UTF-8, at most 4 KiB).
 *   AssetfsSetMtime    [id, mtime]               mtime: a date, or ms since the epoch.
 * The caller must be allowed on the asset's partition (authz.c; always with auth=off).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/naming.h"
#include "assetfs/records.h"
#include "assetfs/strutil.h"
#include "broker.h"
#include "bstore.h"

#define ARGS_MAX 4
#define CAPTION_MAX 4096

/* The call's arguments; values point into the call document (iterator values are
 * reused, so each is copied shallowly). */
struct call_args {
  bson_value_t val[ARGS_MAX];
  const bson_value_t *v[ARGS_MAX];
  size_t n;
};

static bool read_args(const bson_t *doc, struct call_args *a, size_t want, struct afs_error *err) {
  bson_iter_t it, sub;
  memset(a, 0, sizeof *a);
  if (!bson_iter_init_find(&it, doc, AFS_F_CALL_ARGS) || !BSON_ITER_HOLDS_ARRAY(&it) ||
      !bson_iter_recurse(&it, &sub))
    return afs_error_set(err, EINVAL, "args must be an array of %zu values", want);
  while (bson_iter_next(&sub)) {
    if (a->n == ARGS_MAX)
      return afs_error_set(err, EINVAL, "args must be an array of %zu values", want);
    a->val[a->n] = *bson_iter_value(&sub);
    a->v[a->n] = &a->val[a->n];
    a->n++;
  }
  if (a->n != want)
    return afs_error_set(err, EINVAL, "args must be an array of %zu values", want);
  return true;
}

static const char *arg_str(const bson_value_t *v) {
  if (v->value_type != BSON_TYPE_UTF8 || memchr(v->value.v_utf8.str, 0, v->value.v_utf8.len) ||
      !afs_utf8_valid(v->value.v_utf8.str, v->value.v_utf8.len))
    return NULL;
  return v->value.v_utf8.str;
}

static bool arg_id(const bson_value_t *v, bson_value_t *out, struct afs_error *err) {
  const char *s = arg_str(v);
  if (v->value_type == BSON_TYPE_OID) {
    bson_value_copy(v, out);
    return true;
  }
  if (!s || strlen(s) != 24 || !bson_oid_is_valid(s, 24))
    return afs_error_set(err, EINVAL, "the asset id must be an ObjectId or its 24 hex digits");
  out->value_type = BSON_TYPE_OID;
  bson_oid_init_from_string(&out->value.v_oid, s);
  return true;
}

/* The active asset id, which caller may change: *doc and *r (caller frees both). */
static bool load_asset(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *id,
                       const char *caller, bson_t **doc, struct afs_record *r,
                       struct afs_error *err) {
  char ids[80];
  *doc = NULL;
  memset(r, 0, sizeof *r);
  if (!afs_bstore_asset_get(b, st, id, doc, err))
    return false;
  if (!*doc)
    return afs_error_set(err, ENOENT, "asset %s not found", afs_rec_id_str(id, ids, sizeof ids));
  afs_record_read(*doc, r);
  if (!r->status || strcmp(r->status, AFS_ASSET_ACTIVE))
    return afs_error_set(err, ENOENT, "asset %s is not active",
                         afs_rec_id_str(id, ids, sizeof ids));
  return afs_authz_may_change(b, caller, r, err);
}

/* Removes `other`, the asset a rename goes over (it must still be at `to`). */
static bool remove_replaced(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *other,
                            const char *to, struct afs_error *err) {
  bson_t *set =
      BCON_NEW(AFS_F_STATUS, AFS_ASSET_DELETED, AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
  afs_broker_append_deletion_mark(b, other, set);
  bool matched = false;
  bool ok = st->ops->asset_set(
      st->ctx, other, &(struct afs_bcond){.status_is = AFS_ASSET_ACTIVE, .file_path_is = to}, set,
      &matched, err);
  bson_destroy(set);
  return ok;
}

/* The active assets at `to` other than id must be exactly `replace` (or none when ""). */
static bool target_as_seen(struct afs_bstore *st, const char *partition, const char *to,
                           const bson_value_t *id, const char *replace, bson_value_t *other,
                           bool *has_other, struct afs_error *err) {
  bson_t **docs = NULL;
  size_t n = 0;
  bool ok = st->ops->assets_at(st->ctx, partition, to, &docs, &n, err);
  *has_other = false;
  for (size_t i = 0; ok && i < n; i++) {
    bson_value_t oid;
    char hex[80];
    if (!afs_rec_id(docs[i], &oid))
      continue;
    if (afs_rec_id_equal(&oid, id)) {
      bson_value_destroy(&oid);
      continue;
    }
    afs_rec_id_str(&oid, hex, sizeof hex);
    if (*has_other || !replace || strcmp(hex, replace))
      ok = afs_error_set(err, EEXIST,
                         "another file (asset %s) is at '%s' now; the rename was asked over %s",
                         hex, to, replace && *replace ? replace : "nothing");
    else
      bson_value_copy(&oid, other), *has_other = true;
    bson_value_destroy(&oid);
  }
  for (size_t i = 0; i < n; i++)
    bson_destroy(docs[i]);
  free(docs);
  return ok;
}

static bool rename_asset(struct afs_broker *b, struct afs_bstore *st, const bson_t *call,
                         const char *caller, bson_t *result, struct afs_error *err) {
  struct call_args a;
  bson_value_t id = {0}, other = {0};
  bson_t *doc = NULL;
  struct afs_record r = {0};
  bool has_other = false;
  if (!read_args(call, &a, 4, err) || !arg_id(a.v[0], &id, err))
    return false;
  const char *from = arg_str(a.v[1]), *to = arg_str(a.v[2]), *replace = arg_str(a.v[3]);
  bool ok = false;
  if (!from || !to || !replace)
    afs_error_set(err, EINVAL, "from, to and replace must be strings");
  else if (!afs_filepath_check(to, strlen(to), err))
    ;
  else if (load_asset(b, st, &id, caller, &doc, &r, err) &&
           (r.file_path && !strcmp(r.file_path, from)
                ? true
                : afs_error_set(err, ESTALE, "the asset is not at '%s' any more", from)) &&
           target_as_seen(st, r.partition, to, &id, replace, &other, &has_other, err) &&
           (!has_other || remove_replaced(b, st, &other, to, err))) {
    bson_t *set =
        BCON_NEW(AFS_F_FILE_PATH, BCON_UTF8(to), AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
    bool matched = false;
    ok = st->ops->asset_set(
        st->ctx, &id, &(struct afs_bcond){.status_is = AFS_ASSET_ACTIVE, .file_path_is = from}, set,
        &matched, err);
    bson_destroy(set);
    if (ok && !matched)
      ok = afs_error_set(err, ESTALE, "the asset moved or was removed meanwhile");
  }
  if (ok)
    BSON_APPEND_UTF8(result, AFS_F_CALL_RESULT, to);
  if (has_other)
    bson_value_destroy(&other);
  afs_record_done(&r);
  if (doc)
    bson_destroy(doc);
  bson_value_destroy(&id);
  return ok;
}

/* AssetfsSetCaption and AssetfsSetMtime: one field of an asset the caller may change. */
static bool set_field(struct afs_broker *b, struct afs_bstore *st, const bson_t *call,
                      const char *caller, bool caption, bson_t *result, struct afs_error *err) {
  struct call_args a;
  bson_value_t id = {0};
  bson_t *doc = NULL;
  struct afs_record r = {0};
  if (!read_args(call, &a, 2, err) || !arg_id(a.v[0], &id, err))
    return false;
  bson_t *set = bson_new();
  const bson_value_t *v = a.v[1];
  const char *cap = caption ? arg_str(v) : NULL;
  bool ok = false;
  if (caption && (!cap || strlen(cap) > CAPTION_MAX))
    afs_error_set(err, EINVAL, "the caption must be UTF-8 text of at most %d bytes", CAPTION_MAX);
  else if (caption)
    ok = BSON_APPEND_UTF8(set, AFS_F_CAPTION, cap);
  else if (v->value_type == BSON_TYPE_DATE_TIME)
    ok = BSON_APPEND_DATE_TIME(set, AFS_F_MTIME, v->value.v_datetime);
  else if (v->value_type == BSON_TYPE_INT64 || v->value_type == BSON_TYPE_INT32)
    ok = BSON_APPEND_DATE_TIME(
        set, AFS_F_MTIME, v->value_type == BSON_TYPE_INT64 ? v->value.v_int64 : v->value.v_int32);
  else
    afs_error_set(err, EINVAL, "mtime must be a date or a number of ms");
  if (ok && (ok = load_asset(b, st, &id, caller, &doc, &r, err))) {
    BSON_APPEND_DATE_TIME(set, AFS_F_UPDATED, afs_now_ms());
    bool matched = false;
    ok = st->ops->asset_set(st->ctx, &id, &(struct afs_bcond){.status_is = AFS_ASSET_ACTIVE}, set,
                            &matched, err);
    if (ok && !matched)
      ok = afs_error_set(err, ENOENT, "the asset was removed meanwhile");
  }
  if (ok)
    BSON_APPEND_BOOL(result, AFS_F_CALL_RESULT, true);
  bson_destroy(set);
  afs_record_done(&r);
  if (doc)
    bson_destroy(doc);
  bson_value_destroy(&id);
  return ok;
}

bool afs_asset_call_known(const char *name) {
  return !strcmp(name, "AssetfsRenameAsset") || !strcmp(name, "AssetfsSetCaption") ||
         !strcmp(name, "AssetfsSetMtime");
}

bool afs_asset_call(struct afs_broker *b, struct afs_bstore *st, const bson_t *call,
                    const char *name, const char *caller, bson_t *result, struct afs_error *err) {
  if (!strcmp(name, "AssetfsRenameAsset"))
    return rename_asset(b, st, call, caller, result, err);
  return set_field(b, st, call, caller, !strcmp(name, "AssetfsSetCaption"), result, err);
}
