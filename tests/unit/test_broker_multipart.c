/* Multipart uploads in the broker on the fake store (tests/unit/fake_bstore.h): the
 * AssetfsSignParts call (who may ask, for which records, one upload id per record, the
 * URLs), and completion (the parts assembled from the ETags the client reported, a bad
 * part list, S3 refusing or away, a Complete done by a broker that stopped, a record that
 * went back to one PUT). */
#include <stdio.h>
#include <stdlib.h>

#include "afs_test.h"
#include "fake_bstore.h"

static struct afs_broker B;
static struct fake_bstore F;
static struct afs_bstore ST;

static bson_oid_t OID;
static bson_value_t ID;

/* An upload of u1's, initialized by the broker (its key, seal and URLs). */
static void initialized_upload(void) {
  fb_free(&F);
  ST = fake_bstore(&F);
  bson_oid_init(&OID, NULL);
  ID = (bson_value_t){.value_type = BSON_TYPE_OID};
  bson_oid_copy(&OID, &ID.value.v_oid);
  bson_t *d =
      BCON_NEW("_id", BCON_OID(&OID), "_partition", "user_id=u1", "uid", "u1", "sessionId", "s1",
               "filePath", "big.mov", "contentType", "video/quicktime", "expirationHours",
               BCON_DOUBLE(24), "status", "pending", "createdAt", BCON_DATE_TIME(afs_now_ms()));
  fb_add(&F, AFS_BC_UPLOAD, d);
  bson_destroy(d);
  CHECK(fb_run(&F, &B, &ST, FB_H_INIT, AFS_BC_UPLOAD, &ID, false) == AFS_DONE);
  CHECK(fb_str_is(fb_rec(&F, AFS_BC_UPLOAD, &ID), "status", "initialized"));
}

static const char *rec_str(const char *field) {
  return fb_str(fb_rec(&F, AFS_BC_UPLOAD, &ID), field);
}

/* Runs call document d (its _id the string cid) on the broker; the call as answered
 * (caller destroys). Destroys d. */
static bson_t *answered(bson_t *d, const char *cid_str) {
  bson_value_t cid = {.value_type = BSON_TYPE_UTF8,
                      .value.v_utf8 = {(char *)cid_str, (uint32_t)strlen(cid_str)}};
  struct afs_error err = {0};
  ST.ops->remove(ST.ctx, AFS_BC_CALL, &cid, NULL, &err);
  fb_add(&F, AFS_BC_CALL, d);
  afs_function_call(&B, &ST, d, "token");
  bson_destroy(d);
  return bson_copy(fb_rec(&F, AFS_BC_CALL, &cid));
}

/* AssetfsSignParts [ID, first, count] as uid; the call as answered (caller destroys). */
static bson_t *sign_parts(const char *uid, int first, int count) {
  char hex[AFS_OID_HEX];
  bson_oid_to_string(&OID, hex);
  bson_t *d =
      BCON_NEW("_id", "call-1", "name", AFS_CALL_SIGN_PARTS, "uid", BCON_UTF8(uid), "status",
               "pending", "leaseOwner", "token", "leaseUntil", BCON_DATE_TIME(afs_now_ms() + 60000),
               "args", "[", BCON_UTF8(hex), BCON_INT32(first), BCON_INT32(count), "]");
  return answered(d, "call-1");
}

static int32_t urls_in(const bson_t *call, const char *want_sub) {
  bson_iter_t it, res, urls;
  int32_t n = 0;
  if (!bson_iter_init_find(&it, call, "result") || !bson_iter_recurse(&it, &res) ||
      !bson_iter_find(&res, "urls") || !bson_iter_recurse(&res, &urls))
    return -1;
  while (bson_iter_next(&urls))
    n += BSON_ITER_HOLDS_UTF8(&urls) && strstr(bson_iter_utf8(&urls, NULL), want_sub) != NULL;
  return n;
}

static void test_sign_parts(void) {
  initialized_upload();
  bson_t *c = sign_parts("u1", 3, 5);
  CHECK(fb_str_is(c, "status", "done"));
  CHECK(F.nmpu == 1 && rec_str(AFS_F_MP_UPLOAD_ID) &&
        !strcmp(rec_str(AFS_F_MP_UPLOAD_ID), "mpu-1"));
  CHECK(urls_in(c, "uploadId=mpu-1") == 5 && urls_in(c, "partNumber=3&") == 1 &&
        urls_in(c, "partNumber=7&") == 1 && urls_in(c, "X-Amz-Signature=") == 5);
  bson_destroy(c);
  /* the next batch: the same upload, none started again */
  c = sign_parts("u1", 8, 200);
  CHECK(fb_str_is(c, "status", "error") && strstr(fb_str(c, "error"), "count (1..128)"));
  bson_destroy(c);
  c = sign_parts("u1", 9999, 128); /* clipped at part 10000 */
  CHECK(fb_str_is(c, "status", "done") && urls_in(c, "partNumber=") == 2 && F.nmpu == 1);
  bson_destroy(c);
  /* someone else's upload */
  c = sign_parts("u2", 1, 1);
  CHECK(fb_str_is(c, "status", "error") && fb_str_is(c, "errorCode", "EPERM"));
  bson_destroy(c);
  /* S3 away: retried later, nothing recorded */
  initialized_upload();
  F.down[FB_MP_CREATE] = true;
  c = sign_parts("u1", 1, 1);
  CHECK(fb_str_is(c, "status", "pending") && !rec_str(AFS_F_MP_UPLOAD_ID));
  bson_destroy(c);
  F.down[FB_MP_CREATE] = false;
  /* a record that is past initialized, or abandoned */
  bson_t *set = BCON_NEW("abandoned", BCON_BOOL(true));
  fb_edit(&F, AFS_BC_UPLOAD, &ID, set, NULL);
  bson_destroy(set);
  c = sign_parts("u1", 1, 1);
  CHECK(fb_str_is(c, "status", "error") && fb_str_is(c, "errorCode", "ESTALE") && F.nmpu == 0);
  bson_destroy(c);
  /* a tampered key (the seal no longer matches): nothing started for it */
  initialized_upload();
  set = BCON_NEW("path", "u2/their-1.mov");
  fb_edit(&F, AFS_BC_UPLOAD, &ID, set, NULL);
  bson_destroy(set);
  c = sign_parts("u1", 1, 1);
  CHECK(fb_str_is(c, "status", "error") && F.nmpu == 0);
  bson_destroy(c);
}

/* The client's `uploaded` with n part ETags (n 0: none; bad: a list S3 cannot take). */
static void client_uploaded(int n, bool bad) {
  bson_t *set = BCON_NEW("status", "uploaded", "size", BCON_INT64(n * 100));
  if (n > 0 || bad) {
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(set, AFS_F_MP_PARTS, &arr);
    for (int i = 0; i < n; i++) {
      char k[8], e[16];
      snprintf(k, sizeof k, "%d", i);
      snprintf(e, sizeof e, "etag%d", i + 1);
      BSON_APPEND_UTF8(&arr, k, e);
    }
    if (bad)
      BSON_APPEND_INT32(&arr, "0", 7);
    bson_append_array_end(set, &arr);
  }
  fb_edit(&F, AFS_BC_UPLOAD, &ID, set, NULL);
  bson_destroy(set);
}

static enum afs_outcome complete(void) {
  return fb_run(&F, &B, &ST, FB_H_COMPLETE, AFS_BC_UPLOAD, &ID, true);
}

/* A completion whose Complete finds no upload (NoSuchUpload): a broker completed it and
 * stopped. found_etag: the object then at the key (NULL: none). md5_part: the client
 * reported one part with an MD5 ETag (else two others). */
static bool completed_before(const char *found_etag, bool md5_part) {
  initialized_upload();
  bson_destroy(sign_parts("u1", 1, md5_part ? 1 : 2));
  if (md5_part) {
    bson_t *set = BCON_NEW("status", "uploaded", "size", BCON_INT64(100), AFS_F_MP_PARTS, "[",
                           "0123456789abcdef0123456789abcdef", "]");
    fb_edit(&F, AFS_BC_UPLOAD, &ID, set, NULL);
    bson_destroy(set);
  } else {
    client_uploaded(2, false);
  }
  if (found_etag) {
    fb_put(&F, rec_str("path"), md5_part ? 100 : 200);
    snprintf(F.obj[F.nobj - 1].etag, sizeof F.obj[0].etag, "%s", found_etag);
  }
  F.complete_fails = ENOENT;
  bool done = complete() == AFS_DONE;
  F.complete_fails = 0;
  return done;
}

static void test_complete(void) {
  /* the parts the client reported become the original */
  initialized_upload();
  bson_destroy(sign_parts("u1", 1, 3));
  char *key = afs_xstrdup(rec_str("path"));
  client_uploaded(3, false);
  CHECK(complete() == AFS_DONE);
  CHECK(fb_str_is(fb_rec(&F, AFS_BC_UPLOAD, &ID), "status", "completed"));
  CHECK(F.mpu[0].completed && F.mpu[0].nparts == 3 && !strcmp(F.mpu[0].etags[2], "etag3"));
  CHECK(fb_has_obj(&F, key) && fb_rec(&F, AFS_BC_ASSET, &ID) != NULL);
  free(key);

  /* S3 away at the Complete: given back, tried again, done */
  initialized_upload();
  bson_destroy(sign_parts("u1", 1, 2));
  client_uploaded(2, false);
  F.complete_fails = AFS_E_TRANSIENT;
  CHECK(complete() == AFS_RETRY && !F.mpu[0].aborted);
  CHECK(fb_str_is(fb_rec(&F, AFS_BC_UPLOAD, &ID), "status", "uploaded"));
  F.complete_fails = 0;
  CHECK(complete() == AFS_DONE && F.mpu[0].completed);

  /* a broker that completed it and stopped: the next finds the object and goes on */
  CHECK(completed_before("abc-2", false) &&
        fb_str_is(fb_rec(&F, AFS_BC_UPLOAD, &ID), "status", "completed"));
  /* ... but not an object that is not that assembly */
  CHECK(completed_before(NULL, false) && F.mpu[0].aborted);
  CHECK(fb_str_is(fb_rec(&F, AFS_BC_UPLOAD, &ID), "status", "error"));
  /* ... with MD5 part ETags, the object's ETag must be their assembly's: the MD5 of the
   * part MD5s (of the 16 bytes 0123456789abcdef0123456789abcdef, by md5sum(1)), "-1" */
  CHECK(completed_before("ffffffffffffffffffffffffffffffff-1", true));
  CHECK(fb_str_is(fb_rec(&F, AFS_BC_UPLOAD, &ID), "status", "error"));
  CHECK(completed_before("4662bdea8654776d486072ff7074945e-1", true));
  CHECK(fb_str_is(fb_rec(&F, AFS_BC_UPLOAD, &ID), "status", "completed"));

  /* parts that make another size than the upload says */
  initialized_upload();
  bson_destroy(sign_parts("u1", 1, 2));
  client_uploaded(2, false);
  bson_t *set = BCON_NEW("size", BCON_INT64(999));
  fb_edit(&F, AFS_BC_UPLOAD, &ID, set, NULL);
  bson_destroy(set);
  CHECK(complete() == AFS_DONE);
  CHECK(rec_str("error") && strstr(rec_str("error"), "the parts make 200 bytes"));

  /* parts S3 refuses (a wrong ETag): error with the reason, upload aborted */
  initialized_upload();
  bson_destroy(sign_parts("u1", 1, 2));
  client_uploaded(2, false);
  F.complete_fails = EIO;
  CHECK(complete() == AFS_DONE);
  const char *why = rec_str("error");
  CHECK(why && strstr(why, "could not be assembled") && strstr(why, "InvalidPart"));
  CHECK(F.mpu[0].aborted && fb_rec(&F, AFS_BC_ASSET, &ID) == NULL);
  F.complete_fails = 0;

  /* a part list that is not one */
  initialized_upload();
  bson_destroy(sign_parts("u1", 1, 2));
  client_uploaded(0, true);
  CHECK(complete() == AFS_DONE);
  why = rec_str("error");
  CHECK(why && strstr(why, "assetfsParts must be") && F.mpu[0].aborted);

  /* started, then sent in one PUT after all (it shrank): the upload is aborted, the PUT
   * object completes the record */
  initialized_upload();
  bson_destroy(sign_parts("u1", 1, 1));
  fb_put(&F, rec_str("path"), 50);
  client_uploaded(0, false);
  CHECK(complete() == AFS_DONE);
  CHECK(fb_str_is(fb_rec(&F, AFS_BC_UPLOAD, &ID), "status", "completed"));
  CHECK(F.mpu[0].aborted && !F.mpu[0].completed);
}

/* AssetfsCopyParts [ID, src, {part, offset, length} x n] as uid, part i at i * 8 MiB
 * (length len each); the call as answered (caller destroys). */
static bson_t *copy_parts(const char *uid, const bson_oid_t *src, int n, int64_t len) {
  char hex[AFS_OID_HEX], shex[AFS_OID_HEX];
  bson_oid_to_string(&OID, hex);
  bson_oid_to_string(src, shex);
  bson_t *d = BCON_NEW("_id", "call-2", "name", AFS_CALL_COPY_PARTS, "uid", BCON_UTF8(uid),
                       "status", "pending", "leaseOwner", "token", "leaseUntil",
                       BCON_DATE_TIME(afs_now_ms() + 60000));
  bson_t args, one;
  BSON_APPEND_ARRAY_BEGIN(d, "args", &args);
  BSON_APPEND_UTF8(&args, "0", hex);
  BSON_APPEND_UTF8(&args, "1", shex);
  for (int i = 0; i < n; i++) {
    char ix[16];
    snprintf(ix, sizeof ix, "%d", i + 2);
    BSON_APPEND_DOCUMENT_BEGIN(&args, ix, &one);
    BSON_APPEND_INT32(&one, "part", i + 1);
    BSON_APPEND_INT64(&one, "offset", (int64_t)i << 23);
    BSON_APPEND_INT64(&one, "length", len);
    bson_append_document_end(&args, &one);
  }
  bson_append_array_end(d, &args);
  return answered(d, "call-2");
}

/* An asset of u1's of size bytes (status as given), its original (at key) in the bucket. */
static void add_asset_at(bson_oid_t *oid, const char *status, int64_t size, const char *key) {
  bson_oid_init(oid, NULL);
  bson_t *d = BCON_NEW("_id", BCON_OID(oid), "_partition", "user_id=u1", "uid", "u1", "path",
                       BCON_UTF8(key), "status", BCON_UTF8(status), "size", BCON_INT64(size));
  fb_add(&F, AFS_BC_ASSET, d);
  bson_destroy(d);
  fb_put(&F, key, size);
}

static void add_asset(bson_oid_t *oid, const char *status, int64_t size) {
  add_asset_at(oid, status, size, "u1/old.img");
}

static void test_copy_parts(void) {
  initialized_upload();
  bson_oid_t src, archived, missing;
  add_asset(&src, "active", 20LL << 20);
  bson_t *c = copy_parts("u1", &src, 2, 8 << 20);
  CHECK(fb_str_is(c, "status", "done"));
  CHECK(F.nmpu == 1 && F.mpu[0].ncopies == 2 && !strcmp(F.mpu[0].copy_src, "u1/old.img"));
  CHECK(F.mpu[0].copy_off == 8 << 20 && F.mpu[0].copy_len == 8 << 20);
  bson_iter_t it, et;
  CHECK(bson_iter_init(&it, c) && bson_iter_find_descendant(&it, "result.etags.1", &et) &&
        !strcmp(bson_iter_utf8(&et, NULL), "copy-2"));
  CHECK(rec_str(AFS_F_MP_UPLOAD_ID) && !strcmp(rec_str(AFS_F_MP_UPLOAD_ID), F.mpu[0].id));
  bson_destroy(c);

  /* Bytes past the asset's end, too many parts, someone else's upload. */
  c = copy_parts("u1", &src, 3, 8 << 20);
  CHECK(fb_str_is(c, "status", "error") && fb_str_is(c, "errorCode", "EINVAL"));
  bson_destroy(c);
  c = copy_parts("u1", &src, AFS_MP_COPY_BATCH + 1, 1 << 20);
  CHECK(fb_str_is(c, "status", "error") && fb_str_is(c, "errorCode", "EINVAL"));
  bson_destroy(c);
  c = copy_parts("u2", &src, 1, 8 << 20);
  CHECK(fb_str_is(c, "status", "error") && fb_str_is(c, "errorCode", "EPERM"));
  bson_destroy(c);
  /* A source that is not an active asset: EXDEV, which the mount tells apart from its
   * own upload going stale. */
  add_asset(&archived, "archived", 20LL << 20);
  c = copy_parts("u1", &archived, 1, 8 << 20);
  CHECK(fb_str_is(c, "status", "error") && fb_str_is(c, "errorCode", "EXDEV"));
  bson_destroy(c);
  bson_oid_init(&missing, NULL);
  c = copy_parts("u1", &missing, 1, 8 << 20);
  CHECK(fb_str_is(c, "status", "error") && fb_str_is(c, "errorCode", "EXDEV"));
  bson_destroy(c);
  /* An asset pointed at a key of another uid's (not set by the broker): not copied. */
  bson_oid_t foreign;
  add_asset_at(&foreign, "active", 20LL << 20, "u2/secret.img");
  c = copy_parts("u1", &foreign, 1, 8 << 20);
  CHECK(fb_str_is(c, "status", "error") && fb_str_is(c, "errorCode", "EPERM"));
  bson_destroy(c);
  CHECK(F.mpu[0].ncopies == 2);
}

int main(void) {
  CHECK(fake_broker_init(&B));
  test_sign_parts();
  test_complete();
  test_copy_parts();
  fb_free(&F);
  afs_config_free(&B.cfg);
  TEST_MAIN_END();
}
