/* Callable functions through CosyncFunctionCall: a client inserts {_id, name, args, uid,
 * sessionId, status: "pending", createdAt}; the broker answers with status "done" and
 * `result`, or "error" and `error`.
 *   CosyncRefreshAsset(id | "id1,id2,...")  new read URLs; public assets unchanged.
 *                                           One id: result is the asset; a list: an array.
 *   CosyncRemoveAsset(id)                   owner only; the asset becomes "deleted" and
 *                                           the janitor removes its objects and record.
 *   CosyncArchiveAsset(id)                  owner only; status "archived".
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/calls.h"
#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"
#include "bstore.h"

#define MAX_IDS 100

/* Parses one id as written by a client: a 24-hex string becomes an ObjectId. */
static bool parse_id(const char *s, size_t len, bson_value_t *out) {
  while (len && isspace((unsigned char)*s))
    s++, len--;
  while (len && isspace((unsigned char)s[len - 1]))
    len--;
  if (len == 0 || len > 128)
    return false;
  char buf[129];
  memcpy(buf, s, len);
  buf[len] = '\0';
  memset(out, 0, sizeof *out);
  if (len == 24 && bson_oid_is_valid(buf, len)) {
    out->value_type = BSON_TYPE_OID;
    bson_oid_init_from_string(&out->value.v_oid, buf);
    return true;
  }
  bson_value_t tmp = {.value_type = BSON_TYPE_UTF8};
  tmp.value.v_utf8.str = buf;
  tmp.value.v_utf8.len = (uint32_t)len;
  bson_value_copy(&tmp, out);
  return true;
}

/* Collects the ids from one argument value. *list tells whether the caller asked for a
 * list (comma-separated or array). */
static bool collect_ids(const bson_value_t *v, bson_value_t *ids, size_t *n, bool *list,
                        struct afs_error *err) {
  if (v->value_type == BSON_TYPE_OID) {
    bson_value_copy(v, &ids[(*n)++]);
    return true;
  }
  if (v->value_type == BSON_TYPE_UTF8) {
    const char *s = v->value.v_utf8.str;
    size_t len = v->value.v_utf8.len;
    if (memchr(s, '\0', len) || !afs_utf8_valid(s, len))
      return afs_error_set(err, EINVAL, "asset id is not a valid string");
    if (memchr(s, ',', len))
      *list = true;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
      if (i < len && s[i] != ',')
        continue;
      if (i > start) {
        if (*n >= MAX_IDS)
          return afs_error_set(err, E2BIG, "more than %d asset ids", MAX_IDS);
        if (!parse_id(s + start, i - start, &ids[*n]))
          return afs_error_set(err, EINVAL, "invalid asset id");
        (*n)++;
      }
      start = i + 1;
    }
    return true;
  }
  return afs_error_set(err, EINVAL, "asset id must be a string or an ObjectId");
}

/* The asset `id` (caller destroys), or NULL with err: ENOENT when there is none. To act on
 * (not for_result), as afs_bstore_asset_get gives it: restored first if tampered. */
static bson_t *get_asset(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *id,
                         bool for_result, struct afs_error *err) {
  bson_t *a = NULL;
  char ids[80];
  bool ok = for_result ? st->ops->get(st->ctx, AFS_BC_ASSET, id, true, &a, err)
                       : afs_bstore_asset_get(b, st, id, &a, err);
  if (ok && !a)
    afs_error_set(err, ENOENT, "asset %s not found", afs_rec_id_str(id, ids, sizeof ids));
  return a;
}

/* What a refresh answers with: the asset (Cosync's answer); with auth=required only its
 * _id, read URLs and expiration, since the call record is readable by whoever reads the
 * collection. Takes a (may be NULL). */
static bson_t *answer(struct afs_broker *b, bson_t *a) {
  if (!a || !b->authz)
    return a;
  bson_t *out = bson_new();
  bson_iter_t it;
  if (bson_iter_init(&it, a))
    while (bson_iter_next(&it)) {
      const char *k = bson_iter_key(&it);
      bool keep = !strcmp(k, AFS_F_ID) || !strcmp(k, AFS_F_EXPIRATION);
      for (int p = 0; p < AFS_PART_COUNT && !keep; p++)
        keep = !strcmp(k, afs_read_url_field[p]);
      if (keep)
        bson_append_iter(out, k, -1, &it);
    }
  bson_destroy(a);
  return out;
}

/* Re-signs an active, expiring asset's read URLs. Returns the asset as now stored
 * (caller destroys), or NULL with err. */
static bson_t *refresh_one(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *id,
                           const char *caller, struct afs_error *err) {
  char ids[80];
  afs_rec_id_str(id, ids, sizeof ids);
  bson_t *a = get_asset(b, st, id, false, err);
  if (!a)
    return NULL;
  struct afs_record r;
  const char *path = NULL;
  afs_record_read(a, &r);
  bson_t set = BSON_INITIALIZER;
  struct afs_keys k = {0};
  bool ok = true;
  double hours = r.hours.has && r.hours.v >= 0 ? r.hours.v : AFS_READ_HOURS_DEFAULT;
  if (!r.status || strcmp(r.status, AFS_ASSET_ACTIVE)) {
    ok = afs_error_set(err, ENOENT, "asset %s is not active", ids);
  } else if (!afs_authz_may_change(b, caller, &r, err)) {
    ok = false;
  } else if (b->authz && !r.has_seal) {
    ok = afs_error_set(err, AFS_E_UNTRUSTED,
                       "asset %s was not made by this broker (no seal): auth=required signs "
                       "nothing for it",
                       ids);
  } else if (hours == 0) { /* public: nothing expires */
    afs_record_done(&r);
    bson_destroy(&set);
    bson_destroy(a);
    return answer(b, get_asset(b, st, id, true, err));
  } else if (!afs_broker_path_trusted(b, &r)) {
    /* Otherwise a client could point its asset at someone else's key and have it signed. */
    ok = afs_error_set(err, AFS_E_UNTRUSTED,
                       "asset %s: path, uid or contentType were changed after the "
                       "broker set them; refusing to sign",
                       ids);
  } else if (afs_broker_record_path(&r, &path) != 1) {
    ok = afs_error_set(err, EINVAL, "asset %s has no path", ids);
  } else {
    afs_broker_asset_keys(b, &r, &k);
  }
  for (int p = 0; p < AFS_PART_COUNT && ok; p++) {
    const char *old = r.read_url[p];
    if (!k.key[p] || (p != AFS_PART_ORIGINAL && (!old || !*old)))
      continue; /* a part that was never uploaded stays without a URL */
    char *u = afs_broker_read_url(b, k.key[p], hours, err);
    if (!u)
      ok = false;
    else
      BSON_APPEND_UTF8(&set, afs_read_url_field[p], u);
    free(u);
  }
  afs_keys_free(&k);
  afs_record_done(&r);
  bson_destroy(a);
  a = NULL;
  if (ok) {
    int64_t now = afs_now_ms();
    BSON_APPEND_DATE_TIME(&set, AFS_F_EXPIRATION, now + afs_broker_read_seconds(hours) * 1000);
    BSON_APPEND_DATE_TIME(&set, AFS_F_UPDATED, now);
    bool matched;
    ok = st->ops->asset_set(st->ctx, id, &(struct afs_bcond){.status_is = AFS_ASSET_ACTIVE}, &set,
                            &matched, err);
  }
  bson_destroy(&set);
  if (ok && !(a = get_asset(b, st, id, true, err)) && err->code == ENOENT)
    afs_error_set(err, ENOENT, "asset %s vanished while being refreshed", ids);
  return answer(b, a);
}

/* Owner-only status change for Remove/Archive. */
static bool owner_set_status(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *id,
                             const char *caller, const char *fn, const char *status,
                             const char *expect_path, const char *expect_part,
                             struct afs_error *err) {
  char ids[80];
  afs_rec_id_str(id, ids, sizeof ids);
  bson_t *a = get_asset(b, st, id, false, err);
  if (!a)
    return false;
  struct afs_record r;
  afs_record_read(a, &r);
  const char *owner = r.uid, *cur = r.status;
  bool ok = true;
  if (b->authz) {
    ok = afs_authz_may_change(b, caller, &r, err); /* a signed caller of its partition */
  } else if (!caller || !owner || strcmp(caller, owner)) {
    ok = afs_error_set(err, EPERM,
                       "%s: permission denied: only the asset's owner may %s it; "
                       "the caller's uid is not the asset's uid",
                       fn, !strcmp(status, AFS_ASSET_DELETED) ? "remove" : "archive");
  }
  if (!ok) {
  } else if ((expect_path && (!r.file_path || strcmp(r.file_path, expect_path))) ||
             (expect_part && (!r.partition || strcmp(r.partition, expect_part)))) {
    ok = afs_error_set(err, ESTALE, "asset %s is not at '%s' in '%s' any more", ids,
                       expect_path ? expect_path : "", expect_part ? expect_part : "");
  } else if (cur && !strcmp(cur, AFS_ASSET_DELETED)) {
    ok = afs_error_set(err, ENOENT, "asset %s is already deleted", ids);
  } else {
    bson_t *set =
        BCON_NEW(AFS_F_STATUS, BCON_UTF8(status), AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
    if (!strcmp(status, AFS_ASSET_DELETED))
      afs_broker_append_deletion_mark(b, id, set);
    bool matched;
    ok = st->ops->asset_set(st->ctx, id, &(struct afs_bcond){.status_not = AFS_ASSET_DELETED}, set,
                            &matched, err);
    bson_destroy(set);
  }
  afs_record_done(&r);
  bson_destroy(a);
  return ok;
}

/* The asset ids a valid call names (one, or for a refresh a list: "a,b" or an array). */
static bool call_ids(const struct afs_call_rec *call, bson_value_t *ids, size_t *nids, bool *list,
                     struct afs_error *err) {
  if (call->bad & (AFS_CALL_BAD_NAME | AFS_CALL_BAD_UID)) {
    *err = call->err;
    return false;
  }
  const char *name = call->name;
  if (strcmp(name, "CosyncRefreshAsset") && strcmp(name, "CosyncRemoveAsset") &&
      strcmp(name, "CosyncArchiveAsset"))
    return afs_error_set(err, ENOSYS, "unknown function '%.64s'", name);
  if (call->bad & AFS_CALL_BAD_ARGS) {
    *err = call->err;
    return false;
  }
  const bson_value_t *arg = &call->arg;
  if (arg->value_type == BSON_TYPE_ARRAY && !strcmp(name, "CosyncRefreshAsset")) {
    bson_t arr;
    bson_iter_t it;
    *list = true;
    if (bson_init_static(&arr, arg->value.v_doc.data, arg->value.v_doc.data_len) &&
        bson_iter_init(&it, &arr)) {
      while (bson_iter_next(&it))
        if (!collect_ids(bson_iter_value(&it), ids, nids, list, err))
          return false;
    }
  } else if (!collect_ids(arg, ids, nids, list, err)) {
    return false;
  }
  return *nids > 0 || afs_error_set(err, EINVAL, "no asset id given");
}

/* True for an error that is MongoDB's, not the call's: the call is tried again later. */
static bool store_trouble(const struct afs_error *err) {
  return ((err->code == AFS_E_UNREACHABLE || err->code == EIO) && strstr(err->msg, "MongoDB")) ||
         afs_s3_error_transient(err); /* AssetfsSignParts starts an upload in S3 */
}

/* CosyncRefreshAsset of a list: the refreshed assets, in order; missing or inactive ids
 * are left out, as Cosync did. false only when MongoDB failed (err). */
static bool refresh_list(struct afs_broker *b, struct afs_bstore *st, const char *caller,
                         const bson_value_t *ids, size_t nids, bson_t *set, struct afs_error *err) {
  bson_t arr;
  BSON_APPEND_ARRAY_BEGIN(set, AFS_F_CALL_RESULT, &arr);
  size_t k = 0;
  bool ok = true;
  for (size_t i = 0; i < nids && ok; i++) {
    struct afs_error e1 = {0};
    bson_t *a = refresh_one(b, st, &ids[i], caller, &e1);
    if (!a && store_trouble(&e1)) { /* a partial answer would be final: retry it all */
      *err = e1;
      ok = false;
    }
    if (!a)
      continue;
    char key[16];
    snprintf(key, sizeof key, "%zu", k++);
    BSON_APPEND_DOCUMENT(&arr, key, a);
    bson_destroy(a);
  }
  bson_append_array_end(set, &arr);
  return ok;
}

/* Remove and Archive may name where the caller saw the asset (an assetfs extension:
 * args[1] its filePath, args[2] its partition): the call then applies only while the
 * asset is still there, so it removes what its caller meant even if the records were
 * changed in between. args[i] as a string; NULL when there is none. */
static const char *arg_str_at(const bson_t *doc, int i) {
  bson_iter_t it, sub;
  if (!bson_iter_init_find(&it, doc, AFS_F_CALL_ARGS) || !BSON_ITER_HOLDS_ARRAY(&it) ||
      !bson_iter_recurse(&it, &sub))
    return NULL;
  for (int k = 0; k <= i; k++)
    if (!bson_iter_next(&sub))
      return NULL;
  return BSON_ITER_HOLDS_UTF8(&sub) ? bson_iter_utf8(&sub, NULL) : NULL;
}

/* Runs the call's function on its ids; the result goes into set. */
static bool run_call(struct afs_broker *b, struct afs_bstore *st, const struct afs_call_rec *call,
                     const bson_value_t *ids, size_t nids, bool list, const char *expect_path,
                     const char *expect_part, bson_t *set, struct afs_error *err) {
  const char *name = call->name, *caller = call->uid;
  if (!strcmp(name, "CosyncRefreshAsset") && list)
    return refresh_list(b, st, caller, ids, nids, set, err);
  if (!strcmp(name, "CosyncRefreshAsset")) {
    bson_t *a = refresh_one(b, st, &ids[0], caller, err);
    if (a) {
      BSON_APPEND_DOCUMENT(set, AFS_F_CALL_RESULT, a);
      bson_destroy(a);
    }
    return a != NULL;
  }
  if (nids != 1)
    return afs_error_set(err, EINVAL, "%s takes one asset id", name);
  bool remove = !strcmp(name, "CosyncRemoveAsset");
  if (!owner_set_status(b, st, &ids[0], caller, name,
                        remove ? AFS_ASSET_DELETED : AFS_ASSET_ARCHIVED, expect_path, expect_part,
                        err))
    return false;
  char s[80];
  if (remove)
    BSON_APPEND_UTF8(set, AFS_F_CALL_RESULT, afs_rec_id_str(&ids[0], s, sizeof s));
  else
    BSON_APPEND_BOOL(set, AFS_F_CALL_RESULT, true);
  return true;
}

enum afs_outcome afs_function_call(struct afs_broker *b, struct afs_bstore *st, const bson_t *doc,
                                   const char *token) {
  struct afs_error err = {0};
  struct afs_call_rec call;
  bson_value_t ids[MAX_IDS];
  size_t nids = 0;
  bool list = false;
  char cids[80];
  bson_t set = BSON_INITIALIZER;
  enum afs_outcome out = AFS_DONE;
  afs_call_read(doc, &call);
  if (call.id.value_type == BSON_TYPE_EOD) {
    afs_call_done(&call);
    bson_destroy(&set);
    return AFS_DONE;
  }
  afs_rec_id_str(&call.id, cids, sizeof cids);
  bool ok;
  if (!afs_authz_check(b, AFS_REQ_CALL, doc, call.uid, NULL, 0, &err))
    ok = false; /* auth=required: carried out only when signed by a key of its uid */
  else if (call.name && !(call.bad & (AFS_CALL_BAD_NAME | AFS_CALL_BAD_UID)) &&
           !strcmp(call.name, AFS_CALL_SIGN_PARTS))
    ok = afs_mp_sign_call(b, st, doc, call.uid, &set, &err);
  else if (call.name && !(call.bad & (AFS_CALL_BAD_NAME | AFS_CALL_BAD_UID)) &&
           !strcmp(call.name, AFS_CALL_COPY_PARTS))
    ok = afs_mp_copy_call(b, st, doc, call.uid, &set, &err);
  else if (call.name && !(call.bad & (AFS_CALL_BAD_NAME | AFS_CALL_BAD_UID)) &&
           afs_asset_call_known(call.name))
    ok = afs_asset_call(b, st, doc, call.name, call.uid, &set, &err);
  else
    ok =
        call_ids(&call, ids, &nids, &list, &err) &&
        run_call(b, st, &call, ids, nids, list, arg_str_at(doc, 1), arg_str_at(doc, 2), &set, &err);
  if (!ok && store_trouble(&err)) {
    st->ops->release(st->ctx, AFS_BC_CALL, &call.id, token, NULL, AFS_RETRY_MS);
    out = AFS_RETRY;
  } else {
    if (ok) {
      BSON_APPEND_UTF8(&set, AFS_F_STATUS, AFS_CALL_DONE);
    } else {
      bson_reinit(&set);
      BSON_APPEND_UTF8(&set, AFS_F_STATUS, AFS_CALL_ERROR);
      BSON_APPEND_UTF8(&set, AFS_F_ERROR, err.msg);
      BSON_APPEND_UTF8(&set, "errorCode", afs_errno_name(err.code));
    }
    BSON_APPEND_DATE_TIME(&set, AFS_F_UPDATED, afs_now_ms());
    struct afs_error e2 = {0};
    if (st->ops->finish(st->ctx, AFS_BC_CALL, &call.id, token, NULL, &set, NULL, NULL, &e2) < 0)
      out = AFS_RETRY;
    afs_info("call %s %s: %s%s", cids, call.name ? call.name : "(no name)",
             ok ? "done" : "error: ", ok ? "" : err.msg);
  }
  for (size_t i = 0; i < nids; i++)
    bson_value_destroy(&ids[i]);
  afs_call_done(&call);
  bson_destroy(&set);
  return out;
}
