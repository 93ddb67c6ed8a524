/* A mount with key_file (a broker with auth=required, DESIGN.md §4): what it writes is
 * signed, and changes to assets are function calls the broker carries out, never
 * writes of CosyncAsset. The record store (upload_records.c) calls these in place of its
 * direct writes when the mount has a key. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
