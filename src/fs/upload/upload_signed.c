/* A mount with key_file (a broker with auth=required, DESIGN.md §4): what it writes is
 * signed, and changes to assets are function calls the broker carries out, never
 * writes of CosyncAsset. The record store (upload_records.c) calls these in place of its
 * direct writes when the mount has a key. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/calls.h"
#include "assetfs/cosync.h"
#include "assetfs/lease.h" /* afs_now_ms */
#include "assetfs/log.h"
#include "upload/upload_int.h"

/* Seconds an asset change waits for the broker: a rename or unlink blocks its caller. */
#define CALL_TIMEOUT_S 30.0

bool afs_up_signed(const struct afs_uploader *up) {
  return up->opt && up->opt->key;
}

bool afs_up_sign(struct afs_uploader *up, enum afs_auth_req kind, bson_t *doc,
                 struct afs_error *err) {
  char sig[AFS_AUTH_SIG_B64];
  if (!afs_auth_req_sign(up->opt->key, kind, doc, sig, err))
    return false;
  BSON_APPEND_UTF8(doc, afs_auth_req_sig_field(kind), sig);
  return true;
}

bool afs_up_sign_into(struct afs_uploader *up, enum afs_auth_req kind, const bson_oid_t *id,
                      const bson_t *fields, bson_t *set, struct afs_error *err) {
  char sig[AFS_AUTH_SIG_B64];
  bson_t *doc = BCON_NEW(AFS_F_ID, BCON_OID(id), AFS_F_UID, BCON_UTF8(up->opt->uid));
  bson_concat(doc, fields);
  bool ok = afs_auth_req_sign(up->opt->key, kind, doc, sig, err);
  if (ok)
    BSON_APPEND_UTF8(set, afs_auth_req_sig_field(kind), sig);
  bson_destroy(doc);
  return ok;
}

static bool call(struct afs_uploader *up, const char *name, const bson_t *args,
                 struct afs_error *err) {
  struct afs_caller cl = {
      .db = up->db, .key = up->opt->key, .uid = up->opt->uid, .session = up->opt->session_id};
  __atomic_add_fetch(&up->n_commands, 2, __ATOMIC_RELAXED);
  return afs_call_run(&cl, name, args, CALL_TIMEOUT_S, NULL, err);
}

static const char *doc_str(const bson_t *doc, const char *field) {
  bson_iter_t it;
  return bson_iter_init_find(&it, doc, field) && BSON_ITER_HOLDS_UTF8(&it)
             ? bson_iter_utf8(&it, NULL)
             : NULL;
}

bool afs_up_call_sign_parts(void *ctx, const char *id, int first, int count, char **upload_id,
                            char ***urls, int *n, long *expires_s, struct afs_error *err) {
  struct afs_uploader *up = ctx;
  struct afs_caller cl = {
      .db = up->db, .key = up->opt->key, .uid = up->opt->uid, .session = up->opt->session_id};
  bson_t *args = BCON_NEW("0", BCON_UTF8(id), "1", BCON_INT32(first), "2", BCON_INT32(count));
  bson_t res = BSON_INITIALIZER, doc, arr;
  bson_iter_t it, sub;
  *upload_id = NULL;
  *urls = NULL;
  *n = 0;
  __atomic_add_fetch(&up->n_commands, 2, __ATOMIC_RELAXED);
  bool ok = afs_call_run(&cl, AFS_CALL_SIGN_PARTS, args, CALL_TIMEOUT_S, &res, err);
  bson_destroy(args);
  if (ok && !(bson_iter_init_find(&it, &res, AFS_F_CALL_RESULT) && BSON_ITER_HOLDS_DOCUMENT(&it)))
    ok = afs_error_set(err, EIO, "AssetfsSignParts: the broker's answer has no result");
  if (ok) {
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&it, &len, &data);
    ok = bson_init_static(&doc, data, len);
  }
  const char *uid = ok ? doc_str(&doc, "uploadId") : NULL;
  if (ok && (!uid || !bson_iter_init_find(&it, &doc, "urls") || !BSON_ITER_HOLDS_ARRAY(&it) ||
             !bson_iter_recurse(&it, &sub)))
    ok = afs_error_set(err, EIO, "AssetfsSignParts: the broker's answer is malformed");
  if (ok) {
    *upload_id = afs_xstrdup(uid);
    *urls = afs_xcalloc((size_t)count, sizeof **urls);
    while (*n < count && bson_iter_next(&sub) && BSON_ITER_HOLDS_UTF8(&sub))
      (*urls)[(*n)++] = afs_xstrdup(bson_iter_utf8(&sub, NULL));
    *expires_s = bson_iter_init_find(&it, &doc, "expiresIn") ? bson_iter_as_int64(&it) : 3600;
    (void)arr;
  }
  bson_destroy(&res);
  return ok;
}

bool afs_up_call_copy_parts(void *ctx, const char *id, const char *src, const int *part,
                            const int64_t *off, const int64_t *len, int n, char (*etag)[130],
                            struct afs_error *err) {
  struct afs_uploader *up = ctx;
  struct afs_caller cl = {
      .db = up->db, .key = up->opt->key, .uid = up->opt->uid, .session = up->opt->session_id};
  bson_t *args = BCON_NEW("0", BCON_UTF8(id), "1", BCON_UTF8(src));
  bson_t one, res = BSON_INITIALIZER, doc;
  bson_iter_t it, sub;
  for (int i = 0; i < n; i++) {
    char ix[16];
    snprintf(ix, sizeof ix, "%d", i + 2);
    BSON_APPEND_DOCUMENT_BEGIN(args, ix, &one);
    BSON_APPEND_INT32(&one, "part", part[i]);
    BSON_APPEND_INT64(&one, "offset", off[i]);
    BSON_APPEND_INT64(&one, "length", len[i]);
    bson_append_document_end(args, &one);
  }
  __atomic_add_fetch(&up->n_commands, 2, __ATOMIC_RELAXED);
  bool ok = afs_call_run(&cl, AFS_CALL_COPY_PARTS, args, CALL_TIMEOUT_S, &res, err);
  bson_destroy(args);
  if (ok && !(bson_iter_init_find(&it, &res, AFS_F_CALL_RESULT) && BSON_ITER_HOLDS_DOCUMENT(&it)))
    ok = afs_error_set(err, EIO, "AssetfsCopyParts: the broker's answer has no result");
  if (ok) {
    uint32_t dlen;
    const uint8_t *data;
    bson_iter_document(&it, &dlen, &data);
    ok = bson_init_static(&doc, data, dlen);
  }
  if (ok && (!bson_iter_init_find(&it, &doc, "etags") || !BSON_ITER_HOLDS_ARRAY(&it) ||
             !bson_iter_recurse(&it, &sub)))
    ok = afs_error_set(err, EIO, "AssetfsCopyParts: the broker's answer is malformed");
  for (int i = 0; ok && i < n; i++) {
    if (!bson_iter_next(&sub) || !BSON_ITER_HOLDS_UTF8(&sub))
      ok = afs_error_set(err, EIO, "AssetfsCopyParts: the broker answered %d ETag(s) of %d", i, n);
    else
      snprintf(etag[i], 130, "%s", bson_iter_utf8(&sub, NULL));
  }
  bson_destroy(&res);
  return ok;
}

bool afs_up_call_remove(struct afs_uploader *up, const char *id, const char *partition,
                        const char *at, struct afs_error *err) {
  bson_t *args = BCON_NEW("0", BCON_UTF8(id));
  if (at) {
    BSON_APPEND_UTF8(args, "1", at);
    BSON_APPEND_UTF8(args, "2", partition);
  }
  bool ok = call(up, "CosyncRemoveAsset", args, err);
  bson_destroy(args);
  if (!ok && (err->code == ENOENT || (at && err->code == ESTALE)))
    return true; /* removed already (by us or another mount), or moved: not ours to remove */
  return ok;
}

bool afs_up_call_rename(struct afs_uploader *up, const char *id, const char *from, const char *to,
                        const char *replace, struct afs_error *err) {
  bson_t *args = BCON_NEW("0", BCON_UTF8(id), "1", BCON_UTF8(from), "2", BCON_UTF8(to), "3",
                          BCON_UTF8(replace ? replace : ""));
  bool ok = call(up, "AssetfsRenameAsset", args, err);
  bson_destroy(args);
  if (!ok && err->code == ENOENT) /* removed meanwhile (superseded, unlinked): nothing to move */
    return true;
  return ok;
}

bool afs_up_call_mtime(struct afs_uploader *up, const char *id, int64_t mtime_ms,
                       struct afs_error *err) {
  bson_t *args = BCON_NEW("0", BCON_UTF8(id), "1", BCON_DATE_TIME(mtime_ms));
  bool ok = call(up, "AssetfsSetMtime", args, err);
  bson_destroy(args);
  return ok;
}

/* A signed upload record renamed in flight: signed again over the new filePath. Only a
 * record still as this mount signed it: the mount must not sign what someone else wrote
 * into it (another partition, another type). */
static bool resign_file_path(struct afs_uploader *up, const char *id, const char *file_path,
                             struct afs_error *err) {
  bson_t doc, fresh = BSON_INITIALIZER;
  bool found;
  uint8_t pub[AFS_AUTH_PUB_LEN];
  bool ok = afs_up_read_by_id(up, AFS_COLL_UPLOAD, id, &doc, &found, err);
  if (ok && found &&
      (!afs_auth_key_public(up->opt->key, pub) ||
       !afs_auth_doc_signed_by(pub, AFS_REQ_UPLOAD, &doc))) {
    ok = afs_error_set(err, EACCES,
                       "upload record %s is not as this mount signed it (changed by someone "
                       "else); not signed again",
                       id);
    afs_warn("%s", err->msg);
  }
  bson_iter_t it;
  if (ok && found && bson_iter_init(&it, &doc))
    while (bson_iter_next(&it))
      if (strcmp(bson_iter_key(&it), AFS_F_FILE_PATH) &&
          strcmp(bson_iter_key(&it), afs_auth_req_sig_field(AFS_REQ_UPLOAD)))
        bson_append_iter(&fresh, NULL, 0, &it);
  BSON_APPEND_UTF8(&fresh, AFS_F_FILE_PATH, file_path);
  bson_t *set =
      BCON_NEW(AFS_F_FILE_PATH, BCON_UTF8(file_path), AFS_F_UPDATED, BCON_DATE_TIME(afs_now_ms()));
  char sig[AFS_AUTH_SIG_B64];
  if (ok && found && afs_auth_req_sign(up->opt->key, AFS_REQ_UPLOAD, &fresh, sig, err)) {
    BSON_APPEND_UTF8(set, afs_auth_req_sig_field(AFS_REQ_UPLOAD), sig);
    ok = afs_up_set_by_id(up, AFS_COLL_UPLOAD, id, set, NULL, err);
  } else if (ok && found) {
    ok = false;
  }
  bson_destroy(set);
  bson_destroy(&fresh);
  bson_destroy(&doc);
  return ok;
}

/* filePath of asset id (*fp owned, NULL when there is none). */
static bool asset_file_path(struct afs_uploader *up, const char *id, char **fp,
                            struct afs_error *err) {
  bson_t doc;
  bool found;
  *fp = NULL;
  bool ok = afs_up_read_by_id(up, AFS_COLL_ASSET, id, &doc, &found, err);
  bson_iter_t it;
  if (ok && found && bson_iter_init_find(&it, &doc, AFS_F_FILE_PATH) && BSON_ITER_HOLDS_UTF8(&it))
    *fp = afs_xstrdup(bson_iter_utf8(&it, NULL));
  bson_destroy(&doc);
  return ok;
}

bool afs_up_signed_set_file_path(struct afs_uploader *up, const char *id, const char *file_path,
                                 bool upload, bool asset, struct afs_error *err) {
  char *from = NULL;
  bool ok = !upload || resign_file_path(up, id, file_path, err);
  if (ok && asset)
    ok = asset_file_path(up, id, &from, err);
  if (ok && asset && from && strcmp(from, file_path)) {
    ok = afs_up_call_rename(up, id, from, file_path, "", err);
    /* Two moves of one file race (the rename itself, and the poller following it after a
     * completion): the one that finds it moved already is done if it is where asked. */
    free(from);
    from = NULL;
    if (!ok && err->code == ESTALE && asset_file_path(up, id, &from, err) && from &&
        !strcmp(from, file_path))
      ok = true;
  }
  free(from);
  return ok;
}

bool afs_up_signed_delete_matching(struct afs_uploader *up, const bson_t *filter,
                                   const char *partition, const char *file_path,
                                   struct afs_error *err) {
  char(*ids)[AFS_OID_HEX] = NULL;
  size_t n = 0;
  bool ok = afs_up_find_ids(up, AFS_COLL_ASSET, filter, &ids, &n, err);
  for (size_t i = 0; ok && i < n; i++)
    ok = afs_up_call_remove(up, ids[i], partition, file_path, err);
  free(ids);
  return ok;
}
