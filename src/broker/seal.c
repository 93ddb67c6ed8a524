/* The broker's seal on a record: an HMAC over the fields that decide which objects a
 * record may touch (_id, uid, path, contentType, expirationHours), so a client cannot move
 * a record the broker initialized onto someone else's keys. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"

static void feed(EVP_MAC_CTX *m, const char *s) {
  s = s ? s : "";
  EVP_MAC_update(m, (const unsigned char *)s, strlen(s) + 1); /* the NUL separates fields */
}

static void id_text(const bson_value_t *id, char idbuf[160]) {
  if (id->value_type == BSON_TYPE_OID) {
    bson_oid_to_string(&id->value.v_oid, idbuf);
  } else {
    bson_t tmp = BSON_INITIALIZER;
    bson_append_value(&tmp, AFS_F_ID, 3, id);
    char *j = bson_as_canonical_extended_json(&tmp, NULL);
    snprintf(idbuf, 160, "%s", j ? j : "");
    bson_free(j);
    bson_destroy(&tmp);
  }
}

/* HMAC-SHA256 under the seal key of the NUL-separated fields, as 64 hex digits. */
static void mac_hex(const struct afs_broker *b, const char *const *fields, size_t n, char hex[65]) {
  unsigned char mac[32];
  size_t maclen = 0;
  EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *m = EVP_MAC_CTX_new(alg);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                         OSSL_PARAM_construct_end()};
  EVP_MAC_init(m, b->seal_key, sizeof b->seal_key, params);
  for (size_t i = 0; i < n; i++)
    feed(m, fields[i]);
  EVP_MAC_final(m, mac, &maclen, sizeof mac);
  EVP_MAC_CTX_free(m);
  EVP_MAC_free(alg);
  for (size_t i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

void afs_broker_seal(const struct afs_broker *b, const bson_value_t *id, const char *uid,
                     const char *path, const char *content_type, double hours, char hex[65]) {
  char idbuf[160], hbuf[64];
  id_text(id, idbuf);
  snprintf(hbuf, sizeof hbuf, "%.17g", hours);
  const char *fields[] = {"assetfs-seal-v1", idbuf, uid, path, content_type, hbuf};
  mac_hex(b, fields, 6, hex);
}

bool afs_broker_seal_ok(const struct afs_broker *b, const struct afs_record *r) {
  const uint64_t sealed = AFS_RF_BIT(AFS_RF_SEAL) | AFS_RF_BIT(AFS_RF_UID) |
                          AFS_RF_BIT(AFS_RF_PATH) | AFS_RF_BIT(AFS_RF_CONTENT_TYPE) |
                          AFS_RF_BIT(AFS_RF_HOURS);
  if (!r->seal || (r->bad & sealed) || r->id.value_type == BSON_TYPE_EOD)
    return false;
  char want[65];
  afs_broker_seal(b, &r->id, r->uid, r->path, r->content_type,
                  r->hours.has ? r->hours.v : AFS_READ_HOURS_DEFAULT, want);
  return strlen(r->seal) == 64 && CRYPTO_memcmp(want, r->seal, 64) == 0;
}

void afs_broker_deletion_mark(const struct afs_broker *b, const bson_value_t *id, char hex[65]) {
  char idbuf[160];
  id_text(id, idbuf);
  const char *fields[] = {"assetfs-deleted-v1", idbuf};
  mac_hex(b, fields, 2, hex);
}

bool afs_broker_deletion_mark_ok(const struct afs_broker *b, const bson_t *doc) {
  bson_iter_t it;
  bson_value_t id;
  if (!afs_rec_id(doc, &id))
    return false;
  char want[65];
  afs_broker_deletion_mark(b, &id, want);
  bson_value_destroy(&id);
  if (!bson_iter_init_find(&it, doc, AFS_F_DELETED_BY) || !BSON_ITER_HOLDS_UTF8(&it))
    return false;
  uint32_t len;
  const char *v = bson_iter_utf8(&it, &len);
  return len == 64 && CRYPTO_memcmp(want, v, 64) == 0;
}

void afs_broker_append_deletion_mark(const struct afs_broker *b, const bson_value_t *id,
                                     bson_t *set) {
  char mark[65];
  afs_broker_deletion_mark(b, id, mark);
  BSON_APPEND_UTF8(set, AFS_F_DELETED_BY, mark);
}

void afs_broker_init_mark(const struct afs_broker *b, const bson_value_t *id, int64_t at_ms,
                          char hex[65]) {
  char idbuf[160], at[32];
  id_text(id, idbuf);
  snprintf(at, sizeof at, "%lld", (long long)at_ms);
  const char *fields[] = {"assetfs-initialized-v1", idbuf, at};
  mac_hex(b, fields, 3, hex);
}

bool afs_broker_init_mark_ok(const struct afs_broker *b, const struct afs_record *r) {
  bson_iter_t it;
  char want[65];
  if (!r->doc || !r->initialized_at.has || r->initialized_at.from_number ||
      !bson_iter_init_find(&it, r->doc, AFS_F_INIT_MARK) || !BSON_ITER_HOLDS_UTF8(&it))
    return false;
  uint32_t len;
  const char *v = bson_iter_utf8(&it, &len);
  afs_broker_init_mark(b, &r->id, r->initialized_at.ms, want);
  return len == 64 && CRYPTO_memcmp(want, v, 64) == 0;
}
