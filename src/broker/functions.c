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

#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"

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

static bool first_arg(const bson_t *call, bson_value_t *out, struct afs_error *err) {
  bson_iter_t it, sub;
  if (!bson_iter_init_find(&it, call, AFS_F_CALL_ARGS))
    return afs_error_set(err, EINVAL, "args is missing");
  if (BSON_ITER_HOLDS_ARRAY(&it)) {
    if (!bson_iter_recurse(&it, &sub) || !bson_iter_next(&sub))
      return afs_error_set(err, EINVAL, "args is empty");
    bson_value_copy(bson_iter_value(&sub), out);
    return true;
  }
  /* Tolerate a bare value instead of an array. */
  bson_value_copy(bson_iter_value(&it), out);
  return true;
}

/* for_result: without the broker's bookkeeping fields, as returned to clients. */
static bson_t *find_asset(mongoc_collection_t *assets, const bson_value_t *id, bool for_result) {
  bson_t q = BSON_INITIALIZER;
  bson_append_value(&q, AFS_F_ID, 3, id);
  bson_t *opts = for_result ? BCON_NEW("limit", BCON_INT64(1), "projection", "{", AFS_F_LEASE_OWNER,
                                       BCON_INT32(0), AFS_F_LEASE_UNTIL, BCON_INT32(0), AFS_F_SEAL,
                                       BCON_INT32(0), "}")
                            : BCON_NEW("limit", BCON_INT64(1));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(assets, &q, opts, NULL);
  const bson_t *d;
  bson_t *res = NULL;
  if (mongoc_cursor_next(cur, &d))
    res = bson_copy(d);
  mongoc_cursor_destroy(cur);
  bson_destroy(opts);
  bson_destroy(&q);
  return res;
}

/* Re-signs an active, expiring asset's read URLs. Returns the asset as now stored
 * (caller destroys), or NULL with err. */
static bson_t *refresh_one(struct afs_broker *b, mongoc_collection_t *assets,
                           const bson_value_t *id, struct afs_error *err) {
  char ids[80];
  afs_rec_id_str(id, ids, sizeof ids);
  bson_t *a = find_asset(assets, id, false);
  if (!a) {
    afs_error_set(err, ENOENT, "asset %s not found", ids);
    return NULL;
  }
  const char *status = NULL, *path = NULL;
  afs_rec_str(a, AFS_F_STATUS, 64, &status, NULL);
  if (!status || strcmp(status, AFS_ASSET_ACTIVE)) {
    afs_error_set(err, ENOENT, "asset %s is not active", ids);
    bson_destroy(a);
    return NULL;
  }
  double hours = AFS_READ_HOURS_DEFAULT;
  bool has;
  if (!afs_rec_num(a, AFS_F_HOURS, &hours, &has, NULL))
    hours = AFS_READ_HOURS_DEFAULT;
  else if (!has)
    hours = AFS_READ_HOURS_DEFAULT;
  if (hours == 0) { /* public: nothing expires */
    bson_destroy(a);
    if (!(a = find_asset(assets, id, true)))
      afs_error_set(err, ENOENT, "asset %s not found", ids);
    return a;
  }
  if (hours < 0)
    hours = AFS_READ_HOURS_DEFAULT;
  if (!afs_broker_path_trusted(b, a)) {
    /* Otherwise a client could point its asset at someone else's key and have it signed. */
    afs_error_set(err, AFS_E_UNTRUSTED,
                  "asset %s: path, uid or contentType were changed after the "
                  "broker set them; refusing to sign",
                  ids);
    bson_destroy(a);
    return NULL;
  }
  if (!afs_rec_str(a, AFS_F_PATH, AFS_KEY_MAX, &path, NULL) || !path || !*path) {
    afs_error_set(err, EINVAL, "asset %s has no path", ids);
    bson_destroy(a);
    return NULL;
  }
  struct afs_keys k;
  afs_broker_asset_keys(b, a, &k);
  bson_t set = BSON_INITIALIZER;
  bool ok = true;
  for (int p = 0; p < AFS_PART_COUNT && ok; p++) {
    const char *old = NULL;
    afs_rec_str(a, afs_read_url_field[p], 1 << 16, &old, NULL);
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
  bson_destroy(a);
  a = NULL;
  if (ok) {
    int64_t now = afs_now_ms();
    BSON_APPEND_DATE_TIME(&set, AFS_F_EXPIRATION, now + afs_broker_read_seconds(hours) * 1000);
    BSON_APPEND_DATE_TIME(&set, AFS_F_UPDATED, now);
    bson_t q = BSON_INITIALIZER, upd = BSON_INITIALIZER;
    bson_append_value(&q, AFS_F_ID, 3, id);
    BSON_APPEND_UTF8(&q, AFS_F_STATUS, AFS_ASSET_ACTIVE);
    BSON_APPEND_DOCUMENT(&upd, "$set", &set);
    bson_error_t berr;
    if (!mongoc_collection_update_one(assets, &q, &upd, NULL, NULL, &berr))
      ok = afs_db_error(err, &berr, "refreshing URLs");
    bson_destroy(&q);
    bson_destroy(&upd);
  }
  bson_destroy(&set);
  if (ok && !(a = find_asset(assets, id, true)))
    afs_error_set(err, ENOENT, "asset %s vanished while being refreshed", ids);
  return a;
}

/* Owner-only status change for Remove/Archive. */
static bool owner_set_status(mongoc_collection_t *assets, const bson_value_t *id,
                             const char *caller, const char *fn, const char *status,
                             struct afs_error *err) {
  char ids[80];
  afs_rec_id_str(id, ids, sizeof ids);
  bson_t *a = find_asset(assets, id, false);
  if (!a)
    return afs_error_set(err, ENOENT, "asset %s not found", ids);
  const char *owner = NULL, *cur = NULL;
  afs_rec_str(a, AFS_F_UID, AFS_UID_MAX, &owner, NULL);
  afs_rec_str(a, AFS_F_STATUS, 64, &cur, NULL);
  bool ok = true;
  if (!caller || !owner || strcmp(caller, owner)) {
    ok = afs_error_set(err, EPERM,
                       "%s: permission denied: only the asset's owner may %s it; "
                       "the caller's uid is not the asset's uid",
                       fn, !strcmp(status, AFS_ASSET_DELETED) ? "remove" : "archive");
  } else if (cur && !strcmp(cur, AFS_ASSET_DELETED)) {
    ok = afs_error_set(err, ENOENT, "asset %s is already deleted", ids);
  } else {
    bson_t q = BSON_INITIALIZER, ne;
    bson_append_value(&q, AFS_F_ID, 3, id);
    BSON_APPEND_DOCUMENT_BEGIN(&q, AFS_F_STATUS, &ne);
    BSON_APPEND_UTF8(&ne, "$ne", AFS_ASSET_DELETED);
    bson_append_document_end(&q, &ne);
    bson_t *upd = BCON_NEW("$set", "{", AFS_F_STATUS, BCON_UTF8(status), AFS_F_UPDATED,
                           BCON_DATE_TIME(afs_now_ms()), "}");
    bson_error_t berr;
    if (!mongoc_collection_update_one(assets, &q, upd, NULL, NULL, &berr))
      ok = afs_db_error(err, &berr, fn);
    bson_destroy(upd);
    bson_destroy(&q);
  }
  bson_destroy(a);
  return ok;
}

enum afs_outcome afs_function_call(struct afs_broker *b, mongoc_client_t *c, const bson_t *doc,
                                   const char *token) {
  struct afs_error err = {0};
  bson_value_t callid, arg;
  bson_value_t ids[MAX_IDS];
  size_t nids = 0;
  bool list = false, ok = false, have_arg = false;
  const char *name = NULL, *caller = NULL;
  char cids[80];
  bson_t set = BSON_INITIALIZER;
  enum afs_outcome out = AFS_DONE;
  if (!afs_rec_id(doc, &callid)) {
    bson_destroy(&set);
    return AFS_DONE;
  }
  afs_rec_id_str(&callid, cids, sizeof cids);
  mongoc_collection_t *calls = afs_broker_coll(b, c, AFS_COLL_CALL);
  mongoc_collection_t *assets = afs_broker_coll(b, c, AFS_COLL_ASSET);
  if (!afs_rec_str_req(doc, AFS_F_CALL_NAME, 128, &name, &err) ||
      !afs_rec_str(doc, AFS_F_UID, AFS_UID_MAX, &caller, &err))
    goto finish;
  if (strcmp(name, "CosyncRefreshAsset") && strcmp(name, "CosyncRemoveAsset") &&
      strcmp(name, "CosyncArchiveAsset")) {
    afs_error_set(&err, ENOSYS, "unknown function '%.64s'", name);
    goto finish;
  }
  if (!first_arg(doc, &arg, &err))
    goto finish;
  have_arg = true;
  if (arg.value_type == BSON_TYPE_ARRAY && !strcmp(name, "CosyncRefreshAsset")) {
    bson_t arr;
    bson_iter_t it;
    list = true;
    if (bson_init_static(&arr, arg.value.v_doc.data, arg.value.v_doc.data_len) &&
        bson_iter_init(&it, &arr)) {
      while (bson_iter_next(&it))
        if (!collect_ids(bson_iter_value(&it), ids, &nids, &list, &err))
          goto finish;
    }
  } else if (!collect_ids(&arg, ids, &nids, &list, &err)) {
    goto finish;
  }
  if (nids == 0) {
    afs_error_set(&err, EINVAL, "no asset id given");
    goto finish;
  }
  if (!strcmp(name, "CosyncRefreshAsset")) {
    if (!list) {
      bson_t *a = refresh_one(b, assets, &ids[0], &err);
      if (a) {
        BSON_APPEND_DOCUMENT(&set, AFS_F_CALL_RESULT, a);
        bson_destroy(a);
        ok = true;
      }
    } else {
      bson_t arr;
      BSON_APPEND_ARRAY_BEGIN(&set, AFS_F_CALL_RESULT, &arr);
      size_t k = 0;
      for (size_t i = 0; i < nids; i++) {
        struct afs_error e1 = {0};
        bson_t *a = refresh_one(b, assets, &ids[i], &e1);
        if (!a)
          continue; /* like Cosync: missing or inactive ids are left out */
        char key[16];
        snprintf(key, sizeof key, "%zu", k++);
        BSON_APPEND_DOCUMENT(&arr, key, a);
        bson_destroy(a);
      }
      bson_append_array_end(&set, &arr);
      ok = true;
    }
  } else if (nids != 1) {
    afs_error_set(&err, EINVAL, "%s takes one asset id", name);
  } else if (!strcmp(name, "CosyncRemoveAsset")) {
    if ((ok = owner_set_status(assets, &ids[0], caller, name, AFS_ASSET_DELETED, &err))) {
      char s[80];
      BSON_APPEND_UTF8(&set, AFS_F_CALL_RESULT, afs_rec_id_str(&ids[0], s, sizeof s));
    }
  } else {
    if ((ok = owner_set_status(assets, &ids[0], caller, name, AFS_ASSET_ARCHIVED, &err)))
      BSON_APPEND_BOOL(&set, AFS_F_CALL_RESULT, true);
  }
finish:
  if (!ok && (err.code == AFS_E_UNREACHABLE || err.code == EIO) && strstr(err.msg, "MongoDB")) {
    afs_lease_release(calls, &callid, token, AFS_RETRY_MS, NULL);
    out = AFS_RETRY;
  } else {
    if (ok) {
      BSON_APPEND_UTF8(&set, AFS_F_STATUS, AFS_CALL_DONE);
    } else {
      bson_reinit(&set);
      BSON_APPEND_UTF8(&set, AFS_F_STATUS, AFS_CALL_ERROR);
      BSON_APPEND_UTF8(&set, AFS_F_ERROR, err.msg);
    }
    BSON_APPEND_DATE_TIME(&set, AFS_F_UPDATED, afs_now_ms());
    struct afs_error e2 = {0};
    if (afs_lease_finish(calls, &callid, token, &set, NULL, &e2) < 0)
      out = AFS_RETRY;
    afs_info("call %s %s: %s%s", cids, name ? name : "(no name)",
             ok ? "done" : "error: ", ok ? "" : err.msg);
  }
  for (size_t i = 0; i < nids; i++)
    bson_value_destroy(&ids[i]);
  if (have_arg)
    bson_value_destroy(&arg);
  bson_value_destroy(&callid);
  bson_destroy(&set);
  mongoc_collection_destroy(calls);
  mongoc_collection_destroy(assets);
  return out;
}
