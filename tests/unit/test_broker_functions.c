/* The broker's callable functions (src/broker/functions.c) on the fake record store:
 * CosyncRefreshAsset (one id, a list, public, untrusted, inactive), CosyncRemoveAsset and
 * CosyncArchiveAsset (owner only), bad calls, and MongoDB outages (the call is given back
 * for a retry, never answered with a wrong error). No database, no S3: URLs are signed
 * locally. */
#include <stdlib.h>

#include "afs_test.h"
#include "assetfs/lease.h" /* afs_now_ms */
#include "fake_bstore.h"

static struct afs_broker B;
static struct fake_bstore F;
static struct afs_bstore ST;
static bson_oid_t OID[6];

#define A_SEALED 0   /* u1's photo, sealed by the broker */
#define A_PUBLIC 1   /* u1's public asset (expirationHours 0) */
#define A_TAMPERED 2 /* sealed, then its path pointed at u2's object */
#define A_COSYNC 3   /* made by Cosync itself: no seal, path under its uid */
#define A_ARCHIVED 4 /* not active */

static void add_asset(int i, const char *uid, const char *path, double hours, const char *status,
                      bool seal, const char *seal_path) {
  bson_oid_init(&OID[i], NULL);
  bson_value_t id = {.value_type = BSON_TYPE_OID};
  bson_oid_copy(&OID[i], &id.value.v_oid);
  bson_t *d = BCON_NEW("_id", BCON_OID(&OID[i]), "_partition", "user_id=u", "uid", BCON_UTF8(uid),
                       "path", BCON_UTF8(path), "contentType", "image/jpeg", "expirationHours",
                       BCON_DOUBLE(hours), "status", BCON_UTF8(status), "url", "old", "urlSmall",
                       "old-small", "leaseOwner", "broker-x");
  if (seal) {
    char hex[65];
    afs_broker_seal(&B, &id, uid, seal_path, "image/jpeg", hours, hex);
    BSON_APPEND_UTF8(d, "brokerSeal", hex);
  }
  fb_add(&F, AFS_BC_ASSET, d);
  bson_destroy(d);
}

static void setup(void) {
  fb_free(&F);
  ST = fake_bstore(&F);
  add_asset(A_SEALED, "u1", "u1/photo-1.jpg", 24, "active", true, "u1/photo-1.jpg");
  add_asset(A_PUBLIC, "u1", "public/u1/p-1.jpg", 0, "active", true, "public/u1/p-1.jpg");
  add_asset(A_TAMPERED, "u1", "u2/secret-1.jpg", 24, "active", true, "u1/mine-1.jpg");
  add_asset(A_COSYNC, "u3", "u3/a-1.jpg", 24, "active", false, NULL);
  add_asset(A_ARCHIVED, "u1", "u1/old-1.jpg", 24, "archived", true, "u1/old-1.jpg");
}

static char *hex(int i) {
  static char buf[6][AFS_OID_HEX];
  bson_oid_to_string(&OID[i], buf[i]);
  return buf[i];
}

static bson_value_t CALL_ID = {.value_type = BSON_TYPE_UTF8, .value.v_utf8 = {"call-1", 6}};

/* Runs the call {name, uid, args: [arg]}, claimed under lease "token", and returns its
 * outcome; the answer is then the stored call record. */
static enum afs_outcome call(const char *name, const char *uid, const char *arg) {
  struct afs_error err = {0};
  F.down[FB_REMOVE] = false;
  ST.ops->remove(ST.ctx, AFS_BC_CALL, &CALL_ID, NULL, &err);
  bson_t *d = BCON_NEW("_id", "call-1", "name", BCON_UTF8(name), "status", "pending", "leaseOwner",
                       "token", "leaseUntil", BCON_DATE_TIME(afs_now_ms() + 60000));
  if (uid)
    BSON_APPEND_UTF8(d, "uid", uid);
  if (arg) {
    bson_t args;
    BSON_APPEND_ARRAY_BEGIN(d, "args", &args);
    BSON_APPEND_UTF8(&args, "0", arg);
    bson_append_array_end(d, &args);
  }
  fb_add(&F, AFS_BC_CALL, d);
  enum afs_outcome out = afs_function_call(&B, &ST, d, "token");
  bson_destroy(d);
  return out;
}

/* The call record as stored now. */
static const bson_t *answered(void) {
  return fb_rec(&F, AFS_BC_CALL, &CALL_ID);
}

/* A string field of the stored call (NULL when absent). */
static const char *answer(const char *field) {
  bson_iter_t it;
  const bson_t *d = answered();
  if (!d || !bson_iter_init_find(&it, d, field) || !BSON_ITER_HOLDS_UTF8(&it))
    return NULL;
  return bson_iter_utf8(&it, NULL);
}

/* The stored call still leased to us: not answered. */
static bool unanswered(void) {
  return answered() && !strcmp(answer("status"), "pending") && answer("leaseOwner") == NULL;
}

/* The asset i as stored now, read once. Caller: afs_record_done and bson_destroy. */
static struct afs_record stored(int i, bson_t **doc) {
  struct afs_record r;
  bson_value_t id = {.value_type = BSON_TYPE_OID};
  bson_oid_copy(&OID[i], &id.value.v_oid);
  *doc = bson_copy(fb_rec(&F, AFS_BC_ASSET, &id));
  afs_record_read(*doc, &r);
  return r;
}

static void test_refresh_one(void) {
  setup();
  CHECK(call("CosyncRefreshAsset", "u1", hex(A_SEALED)) == AFS_DONE);
  CHECK_STREQ(answer("status"), "done");
  bson_iter_t it, sub;
  CHECK(bson_iter_init_find(&it, answered(), "result") && BSON_ITER_HOLDS_DOCUMENT(&it));
  CHECK(bson_iter_recurse(&it, &sub) && bson_iter_find(&sub, "url") &&
        strstr(bson_iter_utf8(&sub, NULL), "/b/u1/photo-1.jpg?X-Amz-Algorithm="));
  /* The result is the asset as stored, without the broker's bookkeeping. */
  CHECK(bson_iter_recurse(&it, &sub) && !bson_iter_find(&sub, "brokerSeal"));
  CHECK(bson_iter_recurse(&it, &sub) && !bson_iter_find(&sub, "leaseOwner"));
  bson_t *d;
  struct afs_record r = stored(A_SEALED, &d);
  CHECK(r.expiration.has && r.expiration.ms > afs_now_ms() + 23 * 3600 * 1000LL);
  CHECK(strstr(r.read_url[AFS_PART_SMALL], "u1/photo-small-1.jpg?"));
  CHECK(r.read_url[AFS_PART_MEDIUM] == NULL); /* never uploaded: stays without a URL */
  CHECK(r.has_seal);                          /* the stored record keeps its seal */
  afs_record_done(&r);
  bson_destroy(d);
}

static void test_refresh_list_public_and_refusals(void) {
  setup();
  char list[200];
  snprintf(list, sizeof list, "%s, %s,ffffffffffffffffffffffff,%s", hex(A_SEALED), hex(A_PUBLIC),
           hex(A_TAMPERED));
  CHECK(call("CosyncRefreshAsset", "u1", list) == AFS_DONE);
  CHECK_STREQ(answer("status"), "done");
  bson_iter_t it, sub;
  int n = 0;
  CHECK(bson_iter_init_find(&it, answered(), "result") && BSON_ITER_HOLDS_ARRAY(&it));
  CHECK(bson_iter_recurse(&it, &sub));
  while (bson_iter_next(&sub))
    n++;
  CHECK(n == 2); /* missing and refused ids are left out, as Cosync did */

  /* A public asset is returned as it is: nothing expires. */
  CHECK(call("CosyncRefreshAsset", "u1", hex(A_PUBLIC)) == AFS_DONE);
  bson_t *d;
  struct afs_record r = stored(A_PUBLIC, &d);
  CHECK_STREQ(r.read_url[AFS_PART_ORIGINAL], "old");
  afs_record_done(&r);
  bson_destroy(d);

  /* A record pointed at someone else's object after it was sealed: never signed. */
  CHECK(call("CosyncRefreshAsset", "u1", hex(A_TAMPERED)) == AFS_DONE);
  CHECK_STREQ(answer("status"), "error");
  CHECK(strstr(answer("error"), "refusing to sign"));
  r = stored(A_TAMPERED, &d);
  CHECK_STREQ(r.read_url[AFS_PART_ORIGINAL], "old");
  afs_record_done(&r);
  bson_destroy(d);

  /* A record Cosync made (no seal) under its uid's prefix is signed. */
  CHECK(call("CosyncRefreshAsset", "u3", hex(A_COSYNC)) == AFS_DONE);
  CHECK_STREQ(answer("status"), "done");

  CHECK(call("CosyncRefreshAsset", "u1", hex(A_ARCHIVED)) == AFS_DONE);
  CHECK(strstr(answer("error"), "is not active"));
  CHECK(call("CosyncRefreshAsset", "u1", "ffffffffffffffffffffffff") == AFS_DONE);
  CHECK(strstr(answer("error"), "not found"));
}

static void test_remove_and_archive(void) {
  setup();
  /* Only the owner. */
  CHECK(call("CosyncRemoveAsset", "u2", hex(A_SEALED)) == AFS_DONE);
  CHECK_STREQ(answer("status"), "error");
  CHECK(strstr(answer("error"), "permission denied"));
  CHECK(call("CosyncRemoveAsset", NULL, hex(A_SEALED)) == AFS_DONE);
  CHECK(strstr(answer("error"), "permission denied"));
  bson_t *d;
  struct afs_record r = stored(A_SEALED, &d);
  CHECK_STREQ(r.status, "active");
  afs_record_done(&r);
  bson_destroy(d);

  CHECK(call("CosyncRemoveAsset", "u1", hex(A_SEALED)) == AFS_DONE);
  CHECK_STREQ(answer("status"), "done");
  CHECK_STREQ(answer("result"), hex(A_SEALED));
  r = stored(A_SEALED, &d);
  CHECK_STREQ(r.status, "deleted"); /* the janitor removes its objects and record */
  afs_record_done(&r);
  bson_destroy(d);
  CHECK(call("CosyncRemoveAsset", "u1", hex(A_SEALED)) == AFS_DONE);
  CHECK(strstr(answer("error"), "already deleted"));
  CHECK(call("CosyncArchiveAsset", "u1", hex(A_SEALED)) == AFS_DONE);
  r = stored(A_SEALED, &d);
  CHECK_STREQ(r.status, "deleted"); /* a deleted asset is never archived back */
  afs_record_done(&r);
  bson_destroy(d);

  CHECK(call("CosyncArchiveAsset", "u3", hex(A_COSYNC)) == AFS_DONE);
  CHECK_STREQ(answer("status"), "done");
  bson_iter_t it;
  CHECK(bson_iter_init_find(&it, answered(), "result") && BSON_ITER_HOLDS_BOOL(&it));
  r = stored(A_COSYNC, &d);
  CHECK_STREQ(r.status, "archived");
  afs_record_done(&r);
  bson_destroy(d);

  char two[60];
  snprintf(two, sizeof two, "%s,%s", hex(A_PUBLIC), hex(A_ARCHIVED));
  CHECK(call("CosyncRemoveAsset", "u1", two) == AFS_DONE);
  CHECK(strstr(answer("error"), "takes one asset id"));
}

static void test_bad_calls(void) {
  setup();
  CHECK(call("CosyncEraseEverything", "u1", hex(A_SEALED)) == AFS_DONE);
  CHECK(strstr(answer("error"), "unknown function 'CosyncEraseEverything'"));
  CHECK(call("CosyncRefreshAsset", "u1", NULL) == AFS_DONE);
  CHECK(strstr(answer("error"), "args is missing"));
  CHECK(call("CosyncRefreshAsset", "u1", ",,") == AFS_DONE);
  CHECK(strstr(answer("error"), "no asset id given"));
  CHECK(F.calls[FB_GET] == 0); /* refused before any read */
}

static void test_outages(void) {
  setup();
  /* MongoDB away while reading the asset: the call goes back for a retry, unanswered
   * (an answer "not found" would be wrong and final). */
  F.down[FB_GET] = true;
  CHECK(call("CosyncRemoveAsset", "u1", hex(A_SEALED)) == AFS_RETRY);
  CHECK(F.calls[FB_RELEASE] == 1 && unanswered());
  CHECK(call("CosyncRefreshAsset", "u1", hex(A_SEALED)) == AFS_RETRY);
  CHECK(F.calls[FB_RELEASE] == 2 && unanswered());
  char two[60]; /* a list too: a partial answer would be final */
  snprintf(two, sizeof two, "%s,%s", hex(A_SEALED), hex(A_PUBLIC));
  CHECK(call("CosyncRefreshAsset", "u1", two) == AFS_RETRY);
  CHECK(F.calls[FB_RELEASE] == 3 && unanswered());
  F.down[FB_GET] = false;

  F.down[FB_ASSET_SET] = true;
  CHECK(call("CosyncArchiveAsset", "u1", hex(A_SEALED)) == AFS_RETRY);
  CHECK(F.calls[FB_RELEASE] == 4 && unanswered());
  F.down[FB_ASSET_SET] = false;

  /* The answer cannot be written: retried too. */
  F.down[FB_FINISH] = true;
  CHECK(call("CosyncArchiveAsset", "u1", hex(A_SEALED)) == AFS_RETRY);
  F.down[FB_FINISH] = false;
  CHECK(call("CosyncArchiveAsset", "u1", hex(A_SEALED)) == AFS_DONE);
  CHECK_STREQ(answer("status"), "done");
}

int main(void) {
  CHECK(fake_broker_init(&B));
  test_refresh_one();
  test_refresh_list_public_and_refusals();
  test_remove_and_archive();
  test_bad_calls();
  test_outages();
  fb_free(&F);
  afs_config_free(&B.cfg);
  TEST_MAIN_END();
}
