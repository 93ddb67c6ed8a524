/* pending -> initialized: validate the client's record, build the Cosync keys, presign
 * the write and read URLs. Anything wrong with the record becomes status "error" with a
 * reason; nothing is signed for a record that fails a check. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/broker.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"

#define PARTITION_MAX 1024
#define SESSION_MAX 256
#define CONTENT_TYPE_MAX 255

static bool check_content_type(const char *ct, struct afs_error *err) {
  if (!ct)
    return true;
  size_t n = strlen(ct);
  if (n == 0 || n > CONTENT_TYPE_MAX)
    return afs_error_set(err, EINVAL, "contentType must be 1..%d bytes", CONTENT_TYPE_MAX);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)ct[i] < 0x20 || (unsigned char)ct[i] > 0x7e)
      return afs_error_set(err, EINVAL, "contentType has a character outside printable ASCII");
  if (!strchr(ct, '/'))
    return afs_error_set(err, EINVAL, "contentType is not of the form type/subtype");
  return true;
}

/* Validates expirationHours; *hours gets the value to use, *defaulted whether the field
 * was missing. */
static bool check_hours(const bson_t *doc, double *hours, bool *defaulted,
                        struct afs_error *err) {
  bool has;
  double h = 0;
  if (!afs_rec_num(doc, "expirationHours", &h, &has, err))
    return false;
  *defaulted = !has;
  if (!has) {
    *hours = AFS_READ_HOURS_DEFAULT;
    return true;
  }
  if (h < 0)
    return afs_error_set(err, EINVAL, "expirationHours is negative");
  if (h > AFS_READ_HOURS_ABSURD)
    return afs_error_set(err, EINVAL, "expirationHours %.0f is absurd (URLs last at most %.0f h)",
                         h, AFS_READ_HOURS_CAP);
  *hours = h;
  return true;
}

static enum afs_outcome fail_record(mongoc_collection_t *coll, const bson_value_t *id,
                                    const char *token, const char *why) {
  char ids[80];
  struct afs_error e = {0};
  afs_warn("upload %s: error: %s", afs_rec_id_str(id, ids, sizeof ids), why);
  bson_t *set = BCON_NEW("status", "error", "error", BCON_UTF8(why), "updatedAt",
                         BCON_DATE_TIME(afs_now_ms()));
  int rc = afs_lease_finish(coll, id, token, set, NULL, &e);
  bson_destroy(set);
  if (rc < 0) {
    afs_warn("upload %s: cannot record the error: %s", ids, e.msg);
    return AFS_RETRY;
  }
  return AFS_DONE;
}

enum afs_outcome afs_upload_init(struct afs_broker *b, mongoc_client_t *c, const bson_t *doc,
                                 const char *token) {
  enum afs_outcome out = AFS_DONE;
  struct afs_error err = {0};
  bson_value_t id;
  struct afs_keys keys;
  char *wurl[AFS_PART_COUNT] = {0}, *rurl[AFS_PART_COUNT] = {0};
  bson_t set = BSON_INITIALIZER, unset = BSON_INITIALIZER;
  const char *uid, *fp, *ct, *part, *apart, *sess;
  double hours = AFS_READ_HOURS_DEFAULT;
  bool defaulted = false;
  char ids[80];
  memset(&keys, 0, sizeof keys);
  if (!afs_rec_id(doc, &id)) {
    bson_destroy(&set);
    bson_destroy(&unset);
    return AFS_DONE; /* cannot be: every stored document has an _id */
  }
  afs_rec_id_str(&id, ids, sizeof ids);
  mongoc_collection_t *coll = afs_broker_coll(b, c, AFS_COLL_UPLOAD);

  if (!afs_rec_str_req(doc, "uid", AFS_UID_MAX, &uid, &err) ||
      !afs_uid_check(uid, strlen(uid), &err) ||
      !afs_rec_str_req(doc, "filePath", AFS_FILEPATH_MAX, &fp, &err) ||
      !afs_filepath_check(fp, strlen(fp), &err) ||
      !afs_rec_str(doc, "contentType", CONTENT_TYPE_MAX, &ct, &err) ||
      !check_content_type(ct, &err) ||
      !afs_rec_str(doc, "_partition", PARTITION_MAX, &part, &err) ||
      !afs_rec_str(doc, "assetPartition", PARTITION_MAX, &apart, &err) ||
      !afs_rec_str(doc, "sessionId", SESSION_MAX, &sess, &err) ||
      !check_hours(doc, &hours, &defaulted, &err)) {
    out = fail_record(coll, &id, token, err.msg);
    goto done;
  }
  if ((!part || !*part) && (!apart || !*apart)) {
    out = fail_record(coll, &id, token, "neither _partition nor assetPartition is set");
    goto done;
  }
  bool is_public = hours == 0;
  enum afs_kind kind = afs_content_kind(ct);
  if (!afs_naming_make_keys(uid, fp, ct, is_public, afs_naming_now_ms(), &keys, &err)) {
    out = fail_record(coll, &id, token, err.msg);
    goto done;
  }
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    if (!keys.key[p]) {
      BSON_APPEND_UTF8(&unset, afs_write_url_field[p], "");
      BSON_APPEND_UTF8(&unset, afs_read_url_field[p], "");
      continue;
    }
    const char *pct = ct ? afs_part_content_type(kind, (enum afs_part)p, ct) : NULL;
    wurl[p] = afs_broker_write_url(b, keys.key[p], pct, &err);
    rurl[p] = wurl[p] ? afs_broker_read_url(b, keys.key[p], hours, &err) : NULL;
    if (!wurl[p] || !rurl[p]) {
      afs_err("upload %s: signing failed: %s", ids, err.msg);
      out = fail_record(coll, &id, token, "the broker could not sign the URLs");
      goto done;
    }
    BSON_APPEND_UTF8(&set, afs_write_url_field[p], wurl[p]);
    BSON_APPEND_UTF8(&set, afs_read_url_field[p], rurl[p]);
  }
  int64_t now = afs_now_ms();
  char seal[65];
  afs_broker_seal(b, &id, uid, keys.key[AFS_PART_ORIGINAL], ct, hours, seal);
  BSON_APPEND_UTF8(&set, "status", "initialized");
  BSON_APPEND_UTF8(&set, "path", keys.key[AFS_PART_ORIGINAL]);
  BSON_APPEND_UTF8(&set, "brokerSeal", seal);
  if (defaulted)
    BSON_APPEND_DOUBLE(&set, "expirationHours", hours);
  if (is_public)
    BSON_APPEND_UTF8(&unset, "expiration", "");
  else
    BSON_APPEND_DATE_TIME(&set, "expiration", now + afs_broker_read_seconds(hours) * 1000);
  BSON_APPEND_DATE_TIME(&set, "updatedAt", now);
  BSON_APPEND_UTF8(&unset, "error", "");
  int rc = afs_lease_finish(coll, &id, token, &set, &unset, &err);
  if (rc < 0) {
    afs_warn("upload %s: %s", ids, err.msg);
    out = AFS_RETRY;
  } else if (rc == 0) {
    afs_warn("upload %s: lease lost before it was initialized; another broker has it", ids);
  } else {
    afs_info("upload %s initialized: %s (%s)", ids, keys.key[AFS_PART_ORIGINAL],
             ct ? ct : "no content type");
  }
done:
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    free(wurl[p]);
    free(rurl[p]);
  }
  afs_keys_free(&keys);
  bson_destroy(&set);
  bson_destroy(&unset);
  bson_value_destroy(&id);
  mongoc_collection_destroy(coll);
  return out;
}
