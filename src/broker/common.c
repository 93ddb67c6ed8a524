/* Helpers shared by the broker's handlers: URLs, the record seal, object removal. */
#include <errno.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/broker.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"

mongoc_collection_t *afs_broker_coll(struct afs_broker *b, mongoc_client_t *c,
                                     const char *name) {
  return afs_db_coll(&b->db, c, name);
}

enum afs_outcome afs_upload_fail(mongoc_collection_t *coll, const bson_value_t *id,
                                 const char *token, const char *why) {
  char ids[80];
  struct afs_error e = {0};
  afs_warn("upload %s: error: %s", afs_rec_id_str(id, ids, sizeof ids), why);
  bson_t *set = BCON_NEW("status", "error", "error", BCON_UTF8(why), "updatedAt",
                         BCON_DATE_TIME(afs_now_ms()));
  /* Unclaimed (token NULL): only a pending initialization fails this way, and only
   * while the record is still pending and nobody holds it. */
  int rc = token ? afs_lease_finish(coll, id, token, set, NULL, &e)
                 : afs_lease_finish_from(coll, id, NULL, "pending", set, NULL, &e);
  bson_destroy(set);
  if (rc < 0) {
    afs_warn("upload %s: cannot record the error: %s", ids, e.msg);
    return AFS_RETRY;
  }
  return AFS_DONE;
}

bool afs_broker_path_shared(mongoc_collection_t *assets, const bson_value_t *id,
                            const char *path) {
  bson_t q = BSON_INITIALIZER, ne;
  BSON_APPEND_UTF8(&q, "path", path);
  if (id) {
    BSON_APPEND_DOCUMENT_BEGIN(&q, "_id", &ne);
    bson_append_value(&ne, "$ne", 3, id);
    bson_append_document_end(&q, &ne);
  }
  bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
  int64_t n = mongoc_collection_count_documents(assets, &q, opts, NULL, NULL, NULL);
  bson_destroy(opts);
  bson_destroy(&q);
  return n != 0; /* -1 (error) counts as shared: keep the bytes */
}

int afs_broker_record_path(const bson_t *doc, const char **path) {
  *path = NULL;
  if (!afs_rec_str(doc, "path", AFS_KEY_MAX, path, NULL)) {
    *path = NULL;
    return -1;
  }
  return *path && **path ? 1 : 0;
}

/* point=ms pairs from ASSETFS_BROKER_TEST_PAUSE, parsed once. */
static struct {
  pthread_once_t once;
  char spec[256];
} g_pause = {PTHREAD_ONCE_INIT, ""};

static void pause_init(void) {
  const char *e = getenv("ASSETFS_BROKER_TEST_PAUSE");
  snprintf(g_pause.spec, sizeof g_pause.spec, "%s", e ? e : "");
  if (*g_pause.spec)
    afs_warn("ASSETFS_BROKER_TEST_PAUSE is set (%s): test-only pauses are active",
             g_pause.spec);
}

void afs_broker_test_pause(const char *point, const bson_value_t *id) {
  pthread_once(&g_pause.once, pause_init);
  if (!*g_pause.spec)
    return;
  size_t pl = strlen(point);
  for (const char *c = g_pause.spec; c && *c; c = strchr(c, ',') ? strchr(c, ',') + 1 : NULL) {
    if (strncmp(c, point, pl) || c[pl] != '=')
      continue;
    long ms = strtol(c + pl + 1, NULL, 10);
    char ids[80];
    afs_info("test pause: %s %s", point, afs_rec_id_str(id, ids, sizeof ids));
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (ms > 0 && nanosleep(&ts, &ts) && errno == EINTR)
      ;
    return;
  }
}

static atomic_llong g_last_transient_warn;

bool afs_broker_warn_due(void) {
  long long now = (long long)afs_now_ms(), last = atomic_load(&g_last_transient_warn);
  return now - last >= 10000 && atomic_compare_exchange_strong(&g_last_transient_warn, &last, now);
}

long afs_broker_read_seconds(double hours) {
  if (hours > AFS_READ_HOURS_CAP)
    hours = AFS_READ_HOURS_CAP;
  long s = (long)(hours * 3600.0 + 0.5);
  if (s < 1)
    s = 1;
  if (s > AFS_SIGV4_MAX_EXPIRES)
    s = AFS_SIGV4_MAX_EXPIRES;
  return s;
}

char *afs_broker_read_url(struct afs_broker *b, const char *key, double hours,
                          struct afs_error *err) {
  if (hours == 0) {
    char *u = NULL;
    if (b->cfg.public_base_url && *b->cfg.public_base_url)
      u = afs_s3_public_url(b->cfg.public_base_url, key);
    else
      u = afs_s3_object_url(&b->s3, key);
    if (!u)
      afs_error_set(err, EINVAL, "cannot build the public URL of %s", key);
    return u;
  }
  return afs_sigv4_presign(&b->s3, "GET", key, NULL, NULL, 0, afs_broker_read_seconds(hours),
                           time(NULL), err);
}

char *afs_broker_write_url(struct afs_broker *b, const char *key, const char *content_type,
                           struct afs_error *err) {
  struct afs_sigv4_header h = {"content-type", content_type};
  return afs_sigv4_presign(&b->s3, "PUT", key, NULL, content_type ? &h : NULL,
                           content_type ? 1 : 0, b->cfg.write_url_seconds, time(NULL), err);
}

static void feed(EVP_MAC_CTX *m, const char *s) {
  s = s ? s : "";
  EVP_MAC_update(m, (const unsigned char *)s, strlen(s) + 1); /* the NUL separates fields */
}

void afs_broker_seal(const struct afs_broker *b, const bson_value_t *id, const char *uid,
                     const char *path, const char *content_type, double hours, char hex[65]) {
  char idbuf[160], hbuf[64];
  if (id->value_type == BSON_TYPE_OID) {
    bson_oid_to_string(&id->value.v_oid, idbuf);
  } else {
    bson_t tmp = BSON_INITIALIZER;
    bson_append_value(&tmp, "_id", 3, id);
    char *j = bson_as_canonical_extended_json(&tmp, NULL);
    snprintf(idbuf, sizeof idbuf, "%s", j ? j : "");
    bson_free(j);
    bson_destroy(&tmp);
  }
  snprintf(hbuf, sizeof hbuf, "%.17g", hours);
  unsigned char mac[32];
  size_t maclen = 0;
  EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *m = EVP_MAC_CTX_new(alg);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                         OSSL_PARAM_construct_end()};
  EVP_MAC_init(m, b->seal_key, sizeof b->seal_key, params);
  feed(m, "assetfs-seal-v1");
  feed(m, idbuf);
  feed(m, uid);
  feed(m, path);
  feed(m, content_type);
  feed(m, hbuf);
  EVP_MAC_final(m, mac, &maclen, sizeof mac);
  EVP_MAC_CTX_free(m);
  EVP_MAC_free(alg);
  for (size_t i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

bool afs_broker_seal_ok(const struct afs_broker *b, const bson_t *doc) {
  const char *seal, *uid, *path, *ct;
  double hours = AFS_READ_HOURS_DEFAULT;
  bool has;
  bson_value_t id;
  if (!afs_rec_str(doc, "brokerSeal", 64, &seal, NULL) || !seal)
    return false;
  if (!afs_rec_str(doc, "uid", 4096, &uid, NULL) || afs_broker_record_path(doc, &path) < 0 ||
      !afs_rec_str(doc, "contentType", 4096, &ct, NULL) ||
      !afs_rec_num(doc, "expirationHours", &hours, &has, NULL) || !afs_rec_id(doc, &id))
    return false;
  char want[65];
  afs_broker_seal(b, &id, uid, path, ct, has ? hours : AFS_READ_HOURS_DEFAULT, want);
  bson_value_destroy(&id);
  return strlen(seal) == 64 && CRYPTO_memcmp(want, seal, 64) == 0;
}

/* "<uid>/..." or "public/<uid>/..." with no empty, "." or ".." component: a key that
 * names one object under the uid's prefix on any S3 and any HTTP client. */
bool afs_broker_key_confined(const char *key, const char *uid) {
  if (!key || !uid)
    return false;
  const char *k = key;
  if (!strncmp(k, "public/", 7))
    k += 7;
  size_t ul = strlen(uid);
  if (!*uid || strncmp(k, uid, ul) || k[ul] != '/' || !k[ul + 1])
    return false;
  for (const char *c = key; *c;) {
    const char *e = strchr(c, '/');
    size_t n = e ? (size_t)(e - c) : strlen(c);
    if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
      return false;
    c += n + (e ? 1 : 0);
    if (e && !*c)
      return false; /* trailing '/' */
  }
  return true;
}

static bool under_prefix(const char *path, const char *uid) {
  return afs_broker_key_confined(path, uid);
}

bool afs_broker_path_trusted(const struct afs_broker *b, const bson_t *doc) {
  const char *path = NULL, *uid = NULL;
  bson_iter_t it;
  if (bson_iter_init_find(&it, doc, "brokerSeal"))
    return afs_broker_seal_ok(b, doc);
  afs_broker_record_path(doc, &path);
  afs_rec_str(doc, "uid", 4096, &uid, NULL);
  return under_prefix(path, uid);
}

bool afs_broker_delete_objects(struct afs_broker *b, const bson_t *doc, const char *const *keep,
                               struct afs_error *err) {
  const char *path = NULL, *uid = NULL;
  int has_path = afs_broker_record_path(doc, &path);
  afs_rec_str(doc, "uid", 4096, &uid, NULL);
  if (has_path == 0)
    return true; /* nothing was ever signed */
  if (has_path < 0)
    return afs_error_set(err, EPERM,
                         "path is not a usable S3 key (not a string, or over %d bytes); no "
                         "object of ours can be there",
                         AFS_KEY_MAX);
  bson_iter_t it;
  bool has_seal = bson_iter_init_find(&it, doc, "brokerSeal");
  if (has_seal ? !afs_broker_seal_ok(b, doc) : !under_prefix(path, uid))
    return afs_error_set(err, EPERM,
                         "refusing to delete objects of a record whose path/uid/contentType "
                         "were changed after the broker set them");
  struct afs_keys k;
  afs_broker_asset_keys(b, doc, &k);
  bool ok = afs_broker_delete_keys(b, &k, keep, err);
  afs_keys_free(&k);
  return ok;
}

bool afs_broker_delete_keys(struct afs_broker *b, const struct afs_keys *k,
                            const char *const *keep, struct afs_error *err) {
  const char *keys[AFS_PART_COUNT];
  size_t n = 0;
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    if (!k->key[p])
      continue;
    bool skip = false;
    for (size_t i = 0; keep && keep[i]; i++)
      if (!strcmp(keep[i], k->key[p]))
        skip = true;
    if (!skip)
      keys[n++] = k->key[p];
  }
  return n == 0 || afs_s3_delete_objects(&b->s3c, keys, n, NULL, err);
}
