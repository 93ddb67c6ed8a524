/* auth=required: every asset the broker writes carries its seal (assetfsSeal, an Ed25519
 * signature by signing_key_file over the fields a mount acts on, auth.h) and a copy of
 * those fields as sealed (assetfsSealed), from which a tampered asset is restored.
 *
 * A store over another (live or fake) whose asset writes read the asset first, compute
 * the seal of the asset as it will be, and write only while its sealed fields are still as
 * read (a conditional update; a change in between is read again and retried). The
 * handlers do not know about it. An asset whose seal does not verify is not changed here:
 * that would seal someone else's edit; afs_asset_restore puts it back first. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"
#include "bstore.h"

#define ATTEMPTS 5

#define INNER(ctx) (&((struct afs_bstore_sealed *)(ctx))->inner)

/* doc with set's fields replaced or added and unset's removed: a new document. */
static bson_t *apply(const bson_t *doc, const bson_t *set, const bson_t *unset) {
  bson_t *o = bson_new();
  bson_iter_t it;
  if (doc && bson_iter_init(&it, doc))
    while (bson_iter_next(&it)) {
      const char *k = bson_iter_key(&it);
      if ((!set || !bson_has_field(set, k)) && (!unset || !bson_has_field(unset, k)))
        bson_append_iter(o, k, -1, &it);
    }
  if (set && bson_iter_init(&it, set))
    while (bson_iter_next(&it))
      bson_append_iter(o, bson_iter_key(&it), -1, &it);
  return o;
}

/* The sealed fields of doc (absent ones left out), and, when `nulls`, absent ones as null
 * (an equality filter on them). */
static bson_t *sealed_fields(const bson_t *doc, bool nulls) {
  bson_t *o = bson_new();
  const char *const *f = afs_auth_req_fields(AFS_REQ_ASSET);
  for (size_t i = 0; f[i]; i++) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, f[i]) && !BSON_ITER_HOLDS_NULL(&it))
      bson_append_iter(o, f[i], -1, &it);
    else if (nulls)
      BSON_APPEND_NULL(o, f[i]);
  }
  return o;
}

bool afs_asset_seal_into(struct afs_broker *b, const bson_t *after, bson_t *set,
                         struct afs_error *err) {
  char sig[AFS_AUTH_SIG_B64];
  if (!afs_auth_req_sign(b->sign_key, AFS_REQ_ASSET, after, sig, err))
    return false;
  bson_t *copy = sealed_fields(after, false);
  BSON_APPEND_UTF8(set, AFS_F_AUTH_SEAL, sig);
  BSON_APPEND_DOCUMENT(set, AFS_F_SEALED_COPY, copy);
  bson_destroy(copy);
  return true;
}

bool afs_asset_seal_ok(const struct afs_broker *b, const bson_t *doc) {
  return b->sign_key && afs_auth_doc_signed_by(b->sign_pub, AFS_REQ_ASSET, doc);
}

static bool cond_holds(const struct afs_bcond *c, const bson_t *doc) {
  bson_iter_t it;
  const char *status = bson_iter_init_find(&it, doc, AFS_F_STATUS) && BSON_ITER_HOLDS_UTF8(&it)
                           ? bson_iter_utf8(&it, NULL)
                           : NULL;
  const char *fp = bson_iter_init_find(&it, doc, AFS_F_FILE_PATH) && BSON_ITER_HOLDS_UTF8(&it)
                       ? bson_iter_utf8(&it, NULL)
                       : NULL;
  if (!c)
    return true;
  if (c->status_is && (!status || strcmp(status, c->status_is)))
    return false;
  if (c->status_not && status && !strcmp(status, c->status_not))
    return false;
  return !c->file_path_is || (fp && !strcmp(fp, c->file_path_is));
}

static bool untrusted(const bson_value_t *id, struct afs_error *err) {
  char ids[80];
  return afs_error_set(err, AFS_E_UNTRUSTED,
                       "asset %s: its seal does not verify (changed by someone other than the "
                       "broker); not acted on until it is restored",
                       afs_rec_id_str(id, ids, sizeof ids));
}

static bool s_asset_set(void *ctx, const bson_value_t *id, const struct afs_bcond *cond,
                        const bson_t *set, bool *matched, struct afs_error *err);
typedef bool (*asset_set_fn)(void *, const bson_value_t *, const struct afs_bcond *, const bson_t *,
                             bool *, struct afs_error *);
static asset_set_fn s_asset_set_fn(void) {
  return s_asset_set;
}

/* The sealed copy of doc as a $set: each sealed field its sealed value, or null where it
 * was absent (null and absent seal alike); NULL when doc has no copy. */
static bson_t *copy_as_set(const bson_t *doc) {
  bson_iter_t it, sub;
  if (!bson_iter_init_find(&it, doc, AFS_F_SEALED_COPY) || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
      !bson_iter_recurse(&it, &sub))
    return NULL;
  bson_t copy;
  uint32_t len;
  const uint8_t *data;
  bson_iter_document(&it, &len, &data);
  if (!bson_init_static(&copy, data, len))
    return NULL;
  bson_t *set = bson_new();
  const char *const *f = afs_auth_req_fields(AFS_REQ_ASSET);
  for (size_t i = 0; f[i]; i++) {
    if (!strcmp(f[i], AFS_F_ID))
      continue;
    if (bson_iter_init_find(&sub, &copy, f[i]))
      bson_append_iter(set, f[i], -1, &sub);
    else
      BSON_APPEND_NULL(set, f[i]);
  }
  return set;
}

/* Puts a tampered asset back as the broker sealed it (its sealed copy, if that verifies
 * against its seal), while it is still as read. 1 restored (or changed meanwhile: read it
 * again), 0 cannot be (no copy, or the copy is not what was sealed), -1 error. */
static int restore(struct afs_bstore_sealed *s, const bson_value_t *id, const bson_t *doc,
                   struct afs_error *err) {
  char ids[80];
  bson_t *set = copy_as_set(doc);
  if (!set)
    return 0;
  bson_t *candidate = apply(doc, set, NULL);
  int rc = 0;
  if (afs_asset_seal_ok(s->b, candidate)) {
    bson_t *match = sealed_fields(doc, true);
    struct afs_bcond c = {.match = match};
    bool matched = false;
    rc = s->inner.ops->asset_set(s->inner.ctx, id, &c, set, &matched, err) ? 1 : -1;
    if (matched)
      afs_warn("asset %s: changed by someone other than the broker (its seal did not verify); "
               "restored as the broker sealed it",
               afs_rec_id_str(id, ids, sizeof ids));
    bson_destroy(match);
  }
  bson_destroy(candidate);
  bson_destroy(set);
  return rc;
}

int afs_bstore_restore(struct afs_bstore *st, const bson_value_t *id, const bson_t *doc,
                       struct afs_error *err) {
  if (st->ops->asset_set != s_asset_set_fn())
    return 0;
  struct afs_bstore_sealed *s = st->ctx;
  if (afs_asset_seal_ok(s->b, doc))
    return 1;
  return restore(s, id, doc, err);
}

static bool s_asset_set(void *ctx, const bson_value_t *id, const struct afs_bcond *cond,
                        const bson_t *set, bool *matched, struct afs_error *err) {
  struct afs_bstore_sealed *s = ctx;
  *matched = false;
  for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
    bson_t *doc = NULL;
    if (!s->inner.ops->get(s->inner.ctx, AFS_BC_ASSET, id, false, &doc, err))
      return false;
    if (!doc || !cond_holds(cond, doc)) {
      if (doc)
        bson_destroy(doc);
      return true;
    }
    if (!afs_asset_seal_ok(s->b, doc)) {
      int rc = attempt + 1 < ATTEMPTS ? restore(s, id, doc, err) : 0;
      bson_destroy(doc);
      if (rc == 1)
        continue; /* restored: act on it as sealed */
      return rc < 0 ? false : untrusted(id, err);
    }
    bson_t *after = apply(doc, set, NULL), *set2 = bson_copy(set);
    bson_t *match = sealed_fields(doc, true);
    struct afs_bcond c2 = cond ? *cond : (struct afs_bcond){0};
    c2.match = match;
    bool ok = afs_asset_seal_into(s->b, after, set2, err) &&
              s->inner.ops->asset_set(s->inner.ctx, id, &c2, set2, matched, err);
    bson_destroy(match);
    bson_destroy(set2);
    bson_destroy(after);
    bson_destroy(doc);
    if (!ok || *matched)
      return ok;
    /* changed since it was read: read it again */
  }
  char ids[80];
  return afs_error_set(err, EAGAIN, "asset %s kept changing while it was sealed",
                       afs_rec_id_str(id, ids, sizeof ids));
}

/* The completion's write. An asset there already keeps its filePath when its seal
 * verifies (its client may have renamed it); one whose seal does not is written whole. */
static int s_asset_upsert(void *ctx, const bson_value_t *id, const bson_t *set, const bson_t *unset,
                          const bson_t *on_insert, struct afs_error *err) {
  struct afs_bstore_sealed *s = ctx;
  bson_t *doc = NULL;
  if (!s->inner.ops->get(s->inner.ctx, AFS_BC_ASSET, id, false, &doc, err))
    return -1;
  bson_t *set2 = bson_copy(set), *unset2 = unset ? bson_copy(unset) : bson_new();
  bson_t *after;
  if (doc && afs_asset_seal_ok(s->b, doc)) {
    after = apply(doc, set, unset);
  } else {
    /* New, or not as the broker sealed it: written whole, and every sealed field it does
     * not write goes (someone else's contentType must not end up sealed). */
    bson_concat(set2, on_insert);
    const char *const *f = afs_auth_req_fields(AFS_REQ_ASSET);
    for (size_t i = 0; doc && f[i]; i++)
      if (strcmp(f[i], AFS_F_ID) && bson_has_field(doc, f[i]) && !bson_has_field(set2, f[i]) &&
          !bson_has_field(unset2, f[i]))
        BSON_APPEND_UTF8(unset2, f[i], "");
    bson_t *base = bson_new();
    bson_append_value(base, AFS_F_ID, -1, id);
    after = apply(base, set2, NULL);
    bson_destroy(base);
  }
  /* on_insert is in set2 when it applies: none is given below */
  int rc = afs_asset_seal_into(s->b, after, set2, err)
               ? s->inner.ops->asset_upsert(s->inner.ctx, id, set2, unset2, NULL, err)
               : -1;
  bson_destroy(after);
  bson_destroy(set2);
  bson_destroy(unset2);
  if (doc)
    bson_destroy(doc);
  return rc;
}

/* ---- everything else goes to the inner store as it is ---- */

static int s_finish(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                    const char *from_status, const bson_t *set, const bson_t *unset, bson_t *after,
                    struct afs_error *err) {
  return INNER(ctx)->ops->finish(INNER(ctx)->ctx, coll, id, token, from_status, set, unset, after,
                                 err);
}
static int s_renew(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                   const char *status, long lease_ms, bson_t *after, struct afs_error *err) {
  return INNER(ctx)->ops->renew(INNER(ctx)->ctx, coll, id, token, status, lease_ms, after, err);
}
static void s_release(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                      const char *status, long delay_ms) {
  INNER(ctx)->ops->release(INNER(ctx)->ctx, coll, id, token, status, delay_ms);
}
static int s_remove(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                    struct afs_error *err) {
  return INNER(ctx)->ops->remove(INNER(ctx)->ctx, coll, id, token, err);
}
static bool s_get(void *ctx, enum afs_bcoll coll, const bson_value_t *id, bool for_result,
                  bson_t **out, struct afs_error *err) {
  return INNER(ctx)->ops->get(INNER(ctx)->ctx, coll, id, for_result, out, err);
}
/* Only assets the broker sealed count as versions at a path: a record anyone inserted
 * (or an asset whose versionAt was edited) must not make a new save look older and be
 * superseded. Each is read whole to check its seal. */
static bool s_assets_at(void *ctx, const char *partition, const char *file_path, bson_t ***docs,
                        size_t *n, struct afs_error *err) {
  struct afs_bstore_sealed *s = ctx;
  if (!s->inner.ops->assets_at(s->inner.ctx, partition, file_path, docs, n, err))
    return false;
  size_t kept = 0;
  bool ok = true;
  for (size_t i = 0; i < *n; i++) {
    bson_value_t id;
    bson_t *full = NULL;
    if (ok && afs_rec_id((*docs)[i], &id)) {
      ok = s->inner.ops->get(s->inner.ctx, AFS_BC_ASSET, &id, false, &full, err);
      bson_value_destroy(&id);
    }
    bson_destroy((*docs)[i]);
    if (full && afs_asset_seal_ok(s->b, full))
      (*docs)[kept++] = full;
    else if (full)
      bson_destroy(full);
  }
  *n = kept;
  return ok;
}
static int s_path_used(void *ctx, enum afs_bcoll coll, const bson_value_t *id,
                       const char *const *paths, size_t n, const char *parent,
                       struct afs_error *err) {
  return INNER(ctx)->ops->path_used(INNER(ctx)->ctx, coll, id, paths, n, parent, err);
}
static int s_claims_take(void *ctx, const bson_value_t *rec, const char *const *keys, size_t n,
                         struct afs_error *err) {
  return INNER(ctx)->ops->claims_take(INNER(ctx)->ctx, rec, keys, n, err);
}
static void s_claims_release(void *ctx, const bson_value_t *rec, const char *const *keys,
                             size_t n) {
  INNER(ctx)->ops->claims_release(INNER(ctx)->ctx, rec, keys, n);
}
static int s_claims_held(void *ctx, const bson_value_t *rec, char ***keys, size_t *n,
                         struct afs_error *err) {
  return INNER(ctx)->ops->claims_held(INNER(ctx)->ctx, rec, keys, n, err);
}
static bool s_obj_head(void *ctx, const char *key, struct afs_s3_object_info *info,
                       struct afs_error *err) {
  return INNER(ctx)->ops->obj_head(INNER(ctx)->ctx, key, info, err);
}
static bool s_obj_delete(void *ctx, const char *const *keys, size_t n, struct afs_error *err) {
  return INNER(ctx)->ops->obj_delete(INNER(ctx)->ctx, keys, n, err);
}

static bool s_upload_set(void *ctx, const bson_value_t *id, const struct afs_bcond *cond,
                         const bson_t *set, bool *matched, struct afs_error *err) {
  return INNER(ctx)->ops->upload_set(INNER(ctx)->ctx, id, cond, set, matched, err);
}
static bool s_mp_create(void *ctx, const char *key, const char *content_type, char **upload_id,
                        struct afs_error *err) {
  return INNER(ctx)->ops->mp_create(INNER(ctx)->ctx, key, content_type, upload_id, err);
}
static bool s_mp_complete(void *ctx, const char *key, const char *upload_id,
                          const struct afs_s3_part *parts, size_t n, char *etag_out,
                          struct afs_error *err) {
  return INNER(ctx)->ops->mp_complete(INNER(ctx)->ctx, key, upload_id, parts, n, etag_out, err);
}
static bool s_mp_abort(void *ctx, const char *key, const char *upload_id, struct afs_error *err) {
  return INNER(ctx)->ops->mp_abort(INNER(ctx)->ctx, key, upload_id, err);
}

static bool s_mp_copy(void *ctx, const char *key, const char *upload_id, int number,
                      const char *src_key, int64_t off, int64_t len, char *etag_out,
                      struct afs_error *err) {
  return INNER(ctx)->ops->mp_copy(INNER(ctx)->ctx, key, upload_id, number, src_key, off, len,
                                  etag_out, err);
}

static const struct afs_bstore_ops sealed_ops = {
    .finish = s_finish,
    .renew = s_renew,
    .release = s_release,
    .remove = s_remove,
    .get = s_get,
    .asset_set = s_asset_set,
    .asset_upsert = s_asset_upsert,
    .assets_at = s_assets_at,
    .path_used = s_path_used,
    .claims_take = s_claims_take,
    .claims_release = s_claims_release,
    .claims_held = s_claims_held,
    .obj_head = s_obj_head,
    .upload_set = s_upload_set,
    .mp_create = s_mp_create,
    .mp_complete = s_mp_complete,
    .mp_abort = s_mp_abort,
    .mp_copy = s_mp_copy,
    .obj_delete = s_obj_delete,
};

void afs_bstore_sealed(struct afs_bstore *out, struct afs_bstore_sealed *mem,
                       const struct afs_bstore *inner, struct afs_broker *b) {
  mem->inner = *inner;
  mem->b = b;
  *out = *inner; /* b and mc stay the live store's */
  out->ops = &sealed_ops;
  out->ctx = mem;
}

bool afs_bstore_asset_get(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *id,
                          bson_t **doc, struct afs_error *err) {
  *doc = NULL;
  if (!st->ops->get(st->ctx, AFS_BC_ASSET, id, false, doc, err))
    return false;
  if (!*doc || !b->sign_key || afs_asset_seal_ok(b, *doc))
    return true;
  int rc = afs_bstore_restore(st, id, *doc, err);
  bson_destroy(*doc);
  *doc = NULL;
  if (rc < 0)
    return false;
  if (rc == 0 || !st->ops->get(st->ctx, AFS_BC_ASSET, id, false, doc, err))
    return rc == 0 ? untrusted(id, err) : false;
  if (*doc && !afs_asset_seal_ok(b, *doc)) {
    bson_destroy(*doc);
    *doc = NULL;
    return untrusted(id, err);
  }
  return true;
}
