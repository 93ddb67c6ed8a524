/* Signed requests (auth.h): which fields each kind of client request covers, and where
 * its signature is kept. The mount signs with these lists and the broker checks with the
 * same ones, so the two can never disagree on what a signature means. */
#include <errno.h>
#include <openssl/evp.h>
#include <string.h>

#include "assetfs/auth.h"
#include "assetfs/cosync.h"

struct req_kind {
  const char *purpose, *sig_field;
  const char *const *fields;
};

static const char *const upload_fields[] = {
    AFS_F_ID,      AFS_F_UID,   AFS_F_PARTITION,    AFS_F_ASSET_PARTITION, AFS_F_FILE_PATH,
    AFS_F_SESSION, AFS_F_HOURS, AFS_F_CONTENT_TYPE, AFS_F_CREATED,         NULL};
static const char *const uploaded_fields[] = {
    AFS_F_ID, AFS_F_UID,  AFS_F_STATUS,  AFS_F_SIZE,  AFS_F_ETAG,     "xRes", "yRes",
    "color",  "duration", AFS_F_CAPTION, AFS_F_MTIME, AFS_F_MP_PARTS, NULL};
static const char *const abandon_fields[] = {AFS_F_ID, AFS_F_UID, AFS_F_ABANDONED, NULL};
static const char *const call_fields[] = {
    AFS_F_ID, AFS_F_UID, AFS_F_CALL_NAME, AFS_F_CALL_ARGS, AFS_F_SESSION, AFS_F_CREATED, NULL};

static const char *const asset_fields[] = {AFS_F_ID,         AFS_F_PARTITION,
                                           AFS_F_UID,        AFS_F_PATH,
                                           AFS_F_FILE_PATH,  "url",
                                           "urlSmall",       "urlMedium",
                                           "urlLarge",       "urlVideoPreview",
                                           AFS_F_EXPIRATION, AFS_F_STATUS,
                                           AFS_F_SIZE,       AFS_F_CONTENT_TYPE,
                                           AFS_F_VERSION_AT, NULL};

static const struct req_kind kinds[AFS_REQ_COUNT] = {
    [AFS_REQ_UPLOAD] = {"assetfs-upload-v1", AFS_F_AUTH_SIG, upload_fields},
    [AFS_REQ_UPLOADED] = {"assetfs-uploaded-v1", AFS_F_AUTH_UPLOADED_SIG, uploaded_fields},
    [AFS_REQ_ABANDON] = {"assetfs-abandon-v1", AFS_F_AUTH_ABANDON_SIG, abandon_fields},
    [AFS_REQ_CALL] = {"assetfs-call-v1", AFS_F_AUTH_SIG, call_fields},
    [AFS_REQ_ASSET] = {"assetfs-asset-v1", AFS_F_AUTH_SEAL, asset_fields},
};

const char *const *afs_auth_req_fields(enum afs_auth_req kind) {
  return kinds[kind].fields;
}

const char *afs_auth_req_sig_field(enum afs_auth_req kind) {
  return kinds[kind].sig_field;
}

void afs_auth_req_canon(enum afs_auth_req kind, const bson_t *doc, struct afs_canon *c) {
  afs_canon_init(c, kinds[kind].purpose);
  afs_canon_fields(c, doc, kinds[kind].fields);
}

bool afs_auth_req_sign(const afs_auth_key *k, enum afs_auth_req kind, const bson_t *doc,
                       char sig[AFS_AUTH_SIG_B64], struct afs_error *err) {
  struct afs_canon c;
  afs_auth_req_canon(kind, doc, &c);
  bool ok = !c.bad ? afs_auth_sign(k, c.buf, c.len, sig, err)
                   : afs_error_set(err, EINVAL, "a field of the %s request cannot be signed",
                                   kinds[kind].purpose);
  afs_canon_free(&c);
  return ok;
}

bool afs_auth_req_verify(const struct afs_clients *cl, enum afs_auth_req kind, const bson_t *doc,
                         const char *uid, struct afs_error *err) {
  bson_iter_t it;
  const char *field = kinds[kind].sig_field;
  if (!bson_iter_init_find(&it, doc, field) || !BSON_ITER_HOLDS_UTF8(&it))
    return afs_error_set(err, EACCES, "not signed (no %s): auth=required", field);
  if (!uid)
    return afs_error_set(err, EACCES, "signed, but names no uid");
  struct afs_canon c;
  afs_auth_req_canon(kind, doc, &c);
  bool ok;
  if (c.bad)
    ok = afs_error_set(err, EACCES, "%s covers a field that cannot be signed", field);
  else if (!afs_clients_verify(cl, uid, c.buf, c.len, bson_iter_utf8(&it, NULL)))
    ok = afs_error_set(err, EACCES, "%s is not a valid signature by a key of uid '%s'", field, uid);
  else
    ok = true;
  afs_canon_free(&c);
  return ok;
}

bool afs_auth_doc_signed_by(const uint8_t pub[AFS_AUTH_PUB_LEN], enum afs_auth_req kind,
                            const bson_t *doc) {
  bson_iter_t it;
  if (!bson_iter_init_find(&it, doc, kinds[kind].sig_field) || !BSON_ITER_HOLDS_UTF8(&it))
    return false;
  struct afs_canon c;
  afs_auth_req_canon(kind, doc, &c);
  bool ok = !c.bad && afs_auth_verify(pub, c.buf, c.len, bson_iter_utf8(&it, NULL));
  afs_canon_free(&c);
  return ok;
}

bool afs_auth_doc_digest(enum afs_auth_req kind, const bson_t *doc, uint8_t out[32]) {
  bson_iter_t it;
  uint32_t len;
  if (!bson_iter_init_find(&it, doc, kinds[kind].sig_field) || !BSON_ITER_HOLDS_UTF8(&it))
    return false;
  const char *sig = bson_iter_utf8(&it, &len);
  struct afs_canon c;
  afs_auth_req_canon(kind, doc, &c);
  bool ok = !c.bad;
  unsigned int n = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  ok = ok && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
       EVP_DigestUpdate(md, c.buf, c.len + 1) && EVP_DigestUpdate(md, sig, len) &&
       EVP_DigestFinal_ex(md, out, &n) && n == 32;
  EVP_MD_CTX_free(md);
  afs_canon_free(&c);
  return ok;
}
