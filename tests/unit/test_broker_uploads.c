/* The broker's upload handlers on the fake store (tests/unit/fake_bstore.h): initialization
 * (validation, key claims, keys taken by other records, outages), completion (HEADs, the
 * asset, a missing original, a tampered record, an asset removed meanwhile, a lost lease,
 * S3 away), versions of one file (supersede, keep_versions), a client that renames or
 * abandons its upload while it completes, and the janitor (stale uploads, purged assets).
 * No database, no bucket: the fake keeps records, claims and objects; URLs are signed
 * locally. */
#include <stdlib.h>

#include "afs_test.h"
#include "fake_bstore.h"

static struct afs_broker B;
static struct fake_bstore F;
static struct afs_bstore ST;

static void reset(void) {
  fb_free(&F);
  ST = fake_bstore(&F);
  B.cfg.keep_versions = false;
}

/* One upload as a client writes it. */
struct up {
  bson_oid_t oid;
  bson_value_t id;
};

static void up_new(struct up *u, const char *file_path, const char *extra_json) {
  bson_oid_init(&u->oid, NULL);
  u->id = (bson_value_t){.value_type = BSON_TYPE_OID};
  bson_oid_copy(&u->oid, &u->id.value.v_oid);
  bson_t *d =
      BCON_NEW("_id", BCON_OID(&u->oid), "_partition", "user_id=u1", "uid", "u1", "sessionId", "s1",
               "assetPartition", "photos", "filePath", BCON_UTF8(file_path), "contentType",
               "image/jpeg", "expirationHours", BCON_DOUBLE(24), "status", "pending", "createdAt",
               BCON_DATE_TIME(afs_now_ms()));
  if (extra_json) {
    bson_error_t berr;
    bson_t *x = bson_new_from_json((const uint8_t *)extra_json, -1, &berr);
    CHECK(x != NULL);
    if (x) {
      bson_t *m = bson_new();
      bson_copy_to_excluding_noinit(d, m, "_", NULL);
      bson_iter_t it;
      bson_iter_init(&it, x);
      while (bson_iter_next(&it)) { /* the extra fields replace the defaults */
        bson_t *n = bson_new();
        bson_copy_to_excluding_noinit(m, n, bson_iter_key(&it), NULL);
        bson_append_value(n, bson_iter_key(&it), -1, bson_iter_value(&it));
        bson_destroy(m);
        m = n;
      }
      bson_destroy(d);
      d = m;
      bson_destroy(x);
    }
  }
  fb_add(&F, AFS_BC_UPLOAD, d);
  bson_destroy(d);
}

static const bson_t *up_rec(struct up *u) {
  return fb_rec(&F, AFS_BC_UPLOAD, &u->id);
}

static const char *up_str(struct up *u, const char *field) {
  const bson_t *d = up_rec(u);
  return d ? fb_str(d, field) : NULL;
}

/* Changes the stored upload as its client (or another broker) would. */
static void up_set(struct up *u, const bson_t *set) {
  fb_edit(&F, AFS_BC_UPLOAD, &u->id, set, NULL);
}

/* Runs a handler on the stored record as the dispatcher would: read once, claimed under
 * "tok" when claim is set (NULL token: read without a claim). */
static enum afs_outcome run(enum fb_handler h, enum afs_bcoll coll, const bson_value_t *id,
                            bool claim) {
  return fb_run(&F, &B, &ST, h, coll, id, claim);
}

/* The client's part after initialization: PUT the original (size bytes) and mark the
 * upload uploaded. */
static void client_uploads(struct up *u, int64_t size) {
  fb_put(&F, up_str(u, "path"), size);
  bson_t *set = BCON_NEW("status", "uploaded", "size", BCON_INT64(size));
  up_set(u, set);
  bson_destroy(set);
}

static struct afs_record asset_of(struct up *u, bson_t **doc) {
  struct afs_record r;
  const bson_t *d = fb_rec(&F, AFS_BC_ASSET, &u->id);
  *doc = d ? bson_copy(d) : bson_new();
  afs_record_read(*doc, &r);
  return r;
}

/* The keys the first candidate of u gets. */
static void first_keys(struct up *u, const char *fp, struct afs_keys *k) {
  CHECK(afs_naming_make_keys("u1", fp, "image/jpeg", false, afs_naming_oid_ts(u->oid.bytes), k,
                             NULL));
}

static bool has_claim(const char *key, const bson_value_t *rec) {
  int i = fb_claim_of(&F, key);
  return i >= 0 && afs_rec_id_equal(&F.claim[i].rec, rec);
}

static void test_init(void) {
  reset();
  struct up u;
  up_new(&u, "trip/beach.jpg", NULL);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  CHECK_STREQ(up_str(&u, "status"), "initialized");
  struct afs_keys k;
  first_keys(&u, "trip/beach.jpg", &k);
  CHECK_STREQ(up_str(&u, "path"), k.key[AFS_PART_ORIGINAL]);
  CHECK(strstr(up_str(&u, "writeUrl"), "X-Amz-Signature="));
  CHECK(strstr(up_str(&u, "writeUrlSmall"), "X-Amz-Signature="));
  CHECK(up_str(&u, "writeUrlVideoPreview") == NULL); /* an image has no preview */
  for (int p = 0; p < AFS_PART_COUNT; p++)
    CHECK(!k.key[p] || has_claim(k.key[p], &u.id));
  struct afs_record r;
  bson_t *d = bson_copy(up_rec(&u));
  afs_record_read(d, &r);
  CHECK(afs_broker_seal_ok(&B, &r)); /* what decides its objects is sealed */
  afs_record_done(&r);
  bson_destroy(d);

  /* A lost update puts it back to pending: initializing again gives the same keys. */
  bson_t *set = BCON_NEW("status", "pending");
  up_set(&u, set);
  bson_destroy(set);
  fb_put(&F, k.key[AFS_PART_ORIGINAL], 10); /* its client had uploaded already */
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, true) == AFS_DONE);
  CHECK_STREQ(up_str(&u, "path"), k.key[AFS_PART_ORIGINAL]);
  afs_keys_free(&k);
}

static void test_init_refusals(void) {
  static const struct {
    const char *json, *why;
  } bad[] = {
      {"{\"uid\": 42}", "uid must be a string"},
      {"{\"filePath\": \"\"}", "filePath is missing"},
      {"{\"filePath\": \"a/../b.jpg\"}", "filePath"},
      {"{\"caption\": 5}", "caption must be a string"}, /* refused before anything is signed */
      {"{\"xRes\": \"640\"}", "xRes must be a number"},
      {"{\"expirationHours\": -1}", "expirationHours is negative"},
      {"{\"contentType\": \"jpeg\"}", "contentType is not of the form type/subtype"},
      {"{\"_partition\": null, \"assetPartition\": null}", "neither _partition nor"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    reset();
    struct up u;
    up_new(&u, "a.jpg", bad[i].json);
    CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
    CHECK_STREQ(up_str(&u, "status"), "error");
    const char *why = up_str(&u, "error");
    if (!why || !strstr(why, bad[i].why))
      fprintf(stderr, "case %zu: error '%s', want '%s'\n", i, why ? why : "(none)", bad[i].why);
    CHECK(why && strstr(why, bad[i].why));
    CHECK(up_str(&u, "writeUrl") == NULL && F.nclaims == 0);
  }

  /* An _id far in the future (a client clock that is wrong). */
  reset();
  struct up u;
  up_new(&u, "a.jpg", NULL);
  afs_rec_oid_at(afs_now_ms() + 3600 * 1000LL, &u.oid);
  bson_oid_copy(&u.oid, &u.id.value.v_oid);
  fb_free(&F);
  ST = fake_bstore(&F);
  bson_t *d = BCON_NEW("_id", BCON_OID(&u.oid), "_partition", "p", "uid", "u1", "filePath", "a.jpg",
                       "status", "pending");
  fb_add(&F, AFS_BC_UPLOAD, d);
  bson_destroy(d);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  CHECK(strstr(up_str(&u, "error"), "ahead of the broker's clock"));
}

static void test_init_taken_keys_and_outages(void) {
  /* Another record holds a claim on the first candidate's key: the next one is used. */
  reset();
  struct up u;
  up_new(&u, "x.jpg", NULL);
  struct afs_keys k;
  first_keys(&u, "x.jpg", &k);
  bson_value_t other = {.value_type = BSON_TYPE_UTF8, .value.v_utf8 = {"other", 5}};
  struct afs_error err = {0};
  const char *orig = k.key[AFS_PART_ORIGINAL];
  CHECK(ST.ops->claims_take(ST.ctx, &other, &orig, 1, &err) == 1);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  CHECK_STREQ(up_str(&u, "status"), "initialized");
  CHECK(strcmp(up_str(&u, "path"), orig) != 0 && has_claim(up_str(&u, "path"), &u.id));
  CHECK(has_claim(orig, &other)); /* theirs stays theirs */
  afs_keys_free(&k);

  /* An object of an older record (from before claims) lies at the first key: never a PUT
   * over it. */
  reset();
  up_new(&u, "y.jpg", NULL);
  first_keys(&u, "y.jpg", &k);
  fb_put(&F, k.key[AFS_PART_ORIGINAL], 5);
  bson_t *a =
      BCON_NEW("_id", "old-asset", "path", BCON_UTF8(k.key[AFS_PART_ORIGINAL]), "status", "active");
  fb_add(&F, AFS_BC_ASSET, a);
  bson_destroy(a);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  CHECK(strcmp(up_str(&u, "path"), k.key[AFS_PART_ORIGINAL]) != 0);
  CHECK(!has_claim(k.key[AFS_PART_ORIGINAL], &u.id)); /* the candidate's claims went back */
  afs_keys_free(&k);

  /* MongoDB or S3 away: retried later, the record untouched but deferred. */
  enum fb_op downs[] = {FB_CLAIMS_TAKE, FB_OBJ_HEAD};
  for (size_t i = 0; i < 2; i++) {
    reset();
    up_new(&u, "z.jpg", NULL);
    F.down[downs[i]] = true;
    CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_RETRY);
    CHECK_STREQ(up_str(&u, "status"), "pending");
    CHECK(fb_leased(up_rec(&u)) && F.calls[FB_RELEASE] == 1);
    F.down[downs[i]] = false;
  }
}

/* Initializes u, has its client upload `size` bytes and completes it under a lease. */
static enum afs_outcome init_upload_complete(struct up *u, int64_t size) {
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u->id, false) == AFS_DONE);
  client_uploads(u, size);
  return run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u->id, true);
}

static void test_complete(void) {
  reset();
  struct up u;
  up_new(&u, "trip/beach.jpg", "{\"caption\": \"sea\", \"xRes\": 640}");
  CHECK(init_upload_complete(&u, 1234) == AFS_DONE);
  CHECK_STREQ(up_str(&u, "status"), "completed");
  CHECK(up_str(&u, "writeUrl") == NULL && up_str(&u, "leaseOwner") == NULL);
  bson_t *d;
  struct afs_record a = asset_of(&u, &d);
  CHECK_STREQ(a.status, "active");
  CHECK_STREQ(a.partition, "photos"); /* assetPartition wins */
  CHECK_STREQ(a.file_path, "trip/beach.jpg");
  CHECK(a.size.has && a.size.v == 1234 && !strcmp(a.etag, "etag-1234"));
  CHECK(strstr(a.read_url[AFS_PART_ORIGINAL], "X-Amz-Signature="));
  CHECK(a.read_url[AFS_PART_SMALL] == NULL); /* not uploaded: no URL */
  CHECK_STREQ(a.meta[AFS_META_CAPTION], "sea");
  CHECK_STREQ(a.meta[AFS_META_COLOR], "#000000"); /* Cosync's default */
  CHECK(afs_record_meta_num(&a, AFS_META_XRES)->raw.value_type == BSON_TYPE_INT32);
  CHECK(a.version_at.has && afs_broker_seal_ok(&B, &a));
  afs_record_done(&a);
  bson_destroy(d);

  /* The original never arrived: an error, its claims released, no asset. */
  reset();
  up_new(&u, "lost.jpg", NULL);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  bson_t *set = BCON_NEW("status", "uploaded");
  up_set(&u, set);
  bson_destroy(set);
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id, true) == AFS_DONE);
  CHECK_STREQ(up_str(&u, "status"), "error");
  CHECK(strstr(up_str(&u, "error"), "the original was not uploaded"));
  CHECK(F.nclaims == 0 && fb_rec(&F, AFS_BC_ASSET, &u.id) == NULL);

  /* Over the size limit: an error, and the object goes. */
  reset();
  up_new(&u, "big.jpg", NULL);
  CHECK(init_upload_complete(&u, B.cfg.max_object_size + 1) == AFS_DONE);
  CHECK(strstr(up_str(&u, "error"), "over the limit"));
  CHECK(F.nobj == 0);

  /* Its path pointed at another user's object after initialization: refused. */
  reset();
  up_new(&u, "t.jpg", NULL);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  client_uploads(&u, 3);
  fb_put(&F, "u2/secret.jpg", 99);
  set = BCON_NEW("path", "u2/secret.jpg");
  up_set(&u, set);
  bson_destroy(set);
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id, true) == AFS_DONE);
  CHECK(strstr(up_str(&u, "error"), "changed after the broker initialized"));
  CHECK(fb_has_obj(&F, "u2/secret.jpg") && fb_rec(&F, AFS_BC_ASSET, &u.id) == NULL);
}

/* Hooks that act as a client between the broker's steps. */
static struct up *g_hook_up;
static bson_t *g_hook_set;
static enum fb_op g_hook_op;
static void hook_set(struct fake_bstore *f, enum fb_op op) {
  if (op != g_hook_op || !g_hook_set)
    return;
  (void)f;
  up_set(g_hook_up, g_hook_set);
  bson_destroy(g_hook_set);
  g_hook_set = NULL;
}

static void test_complete_races(void) {
  struct up u;
  /* S3 away while checking: retried, the record given back untouched. */
  reset();
  up_new(&u, "r.jpg", NULL);
  F.down[FB_OBJ_HEAD] = false;
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  client_uploads(&u, 7);
  F.down[FB_OBJ_HEAD] = true;
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id, true) == AFS_RETRY);
  CHECK_STREQ(up_str(&u, "status"), "uploaded");
  CHECK(up_str(&u, "leaseOwner") == NULL && fb_rec(&F, AFS_BC_ASSET, &u.id) == NULL);
  F.down[FB_OBJ_HEAD] = false;

  /* The lease passed to another broker during the checks: nothing written. */
  reset();
  up_new(&u, "l.jpg", NULL);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  client_uploads(&u, 7);
  g_hook_up = &u;
  g_hook_op = FB_RENEW;
  g_hook_set = BCON_NEW("leaseOwner", "another-broker");
  F.before = hook_set;
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id, true) == AFS_DONE);
  CHECK(fb_rec(&F, AFS_BC_ASSET, &u.id) == NULL && !strcmp(up_str(&u, "status"), "uploaded"));

  /* Renamed by its client while completing (after the asset was written): the asset
   * follows. */
  reset();
  up_new(&u, "old-name.jpg", NULL);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  client_uploads(&u, 7);
  g_hook_op = FB_FINISH;
  g_hook_set = BCON_NEW("filePath", "new-name.jpg");
  F.before = hook_set;
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id, true) == AFS_DONE);
  bson_t *d;
  struct afs_record a = asset_of(&u, &d);
  CHECK_STREQ(a.file_path, "new-name.jpg");
  CHECK_STREQ(a.status, "active");
  afs_record_done(&a);
  bson_destroy(d);

  /* Removed through its mount in flight (abandoned): its asset is made deleted. */
  reset();
  up_new(&u, "gone.jpg", NULL);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  client_uploads(&u, 7);
  g_hook_op = FB_RENEW;
  g_hook_set = BCON_NEW("abandoned", BCON_BOOL(true));
  F.before = hook_set;
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id, true) == AFS_DONE);
  a = asset_of(&u, &d);
  CHECK_STREQ(a.status, "deleted");
  afs_record_done(&a);
  bson_destroy(d);
  CHECK_STREQ(up_str(&u, "status"), "completed");

  /* Its asset was removed by its owner before a retry: not revived. */
  reset();
  up_new(&u, "kept.jpg", NULL);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  client_uploads(&u, 7);
  bson_t *del = BCON_NEW("_id", BCON_OID(&u.oid), "status", "deleted");
  fb_add(&F, AFS_BC_ASSET, del);
  bson_destroy(del);
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id, true) == AFS_DONE);
  a = asset_of(&u, &d);
  CHECK_STREQ(a.status, "deleted");
  afs_record_done(&a);
  bson_destroy(d);
  F.before = NULL;
}

static void test_versions(void) {
  for (int keep = 0; keep < 2; keep++) {
    reset();
    B.cfg.keep_versions = keep;
    struct up v1, v2;
    up_new(&v1, "doc.jpg", NULL);
    CHECK(init_upload_complete(&v1, 1) == AFS_DONE);
    up_new(&v2, "doc.jpg", NULL);
    CHECK(init_upload_complete(&v2, 2) == AFS_DONE);
    bson_t *d1, *d2;
    struct afs_record a1 = asset_of(&v1, &d1), a2 = asset_of(&v2, &d2);
    CHECK_STREQ(a1.status, keep ? "archived" : "deleted");
    CHECK_STREQ(a2.status, "active");
    afs_record_done(&a1);
    afs_record_done(&a2);
    bson_destroy(d1);
    bson_destroy(d2);
  }
  B.cfg.keep_versions = false;

  /* A save initialized earlier completes last: it supersedes nothing and is itself the
   * older version (the broker's clock decides, never the _id). */
  reset();
  struct up early, late;
  up_new(&early, "v.jpg", NULL);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &early.id, false) == AFS_DONE);
  bson_t *back = BCON_NEW("initializedAt", BCON_DATE_TIME(afs_now_ms() - 60000));
  up_set(&early, back);
  bson_destroy(back);
  up_new(&late, "v.jpg", NULL);
  CHECK(init_upload_complete(&late, 2) == AFS_DONE);
  client_uploads(&early, 1);
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &early.id, true) == AFS_DONE);
  bson_t *de, *dl;
  struct afs_record ae = asset_of(&early, &de), al = asset_of(&late, &dl);
  CHECK_STREQ(al.status, "active");
  CHECK_STREQ(ae.status, "deleted");
  afs_record_done(&ae);
  afs_record_done(&al);
  bson_destroy(de);
  bson_destroy(dl);
}

static void test_janitor(void) {
  /* A stale upload loses what it uploaded and its claims, and says why. */
  reset();
  struct up u;
  up_new(&u, "s.jpg", NULL);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id, false) == AFS_DONE);
  fb_put(&F, up_str(&u, "path"), 4);
  CHECK(run(FB_H_STALE, AFS_BC_UPLOAD, &u.id, true) == AFS_DONE);
  CHECK_STREQ(up_str(&u, "status"), "error");
  CHECK(strstr(up_str(&u, "error"), "abandoned") && F.nobj == 0 && F.nclaims == 0);

  /* A removed asset: objects, then its record and its upload. */
  reset();
  up_new(&u, "p.jpg", NULL);
  CHECK(init_upload_complete(&u, 5) == AFS_DONE);
  bool matched;
  struct afs_error err = {0};
  bson_t *set = BCON_NEW("status", "deleted");
  CHECK(ST.ops->asset_set(ST.ctx, &u.id, NULL, set, &matched, &err) && matched);
  bson_destroy(set);
  F.down[FB_OBJ_DELETE] = true; /* S3 away: retried, the record kept */
  CHECK(run(FB_H_PURGE, AFS_BC_ASSET, &u.id, true) == AFS_RETRY);
  CHECK(fb_rec(&F, AFS_BC_ASSET, &u.id) != NULL && F.nobj == 1);
  F.down[FB_OBJ_DELETE] = false;
  CHECK(run(FB_H_PURGE, AFS_BC_ASSET, &u.id, true) == AFS_DONE);
  CHECK(fb_rec(&F, AFS_BC_ASSET, &u.id) == NULL && up_rec(&u) == NULL);
  CHECK(F.nobj == 0 && F.nclaims == 0);

  /* A removed asset whose path another asset shares keeps the objects. */
  reset();
  up_new(&u, "q.jpg", NULL);
  CHECK(init_upload_complete(&u, 5) == AFS_DONE);
  bson_t *twin = BCON_NEW("_id", "twin", "path", BCON_UTF8(up_str(&u, "path")), "status", "active");
  fb_add(&F, AFS_BC_ASSET, twin);
  bson_destroy(twin);
  set = BCON_NEW("status", "deleted");
  CHECK(ST.ops->asset_set(ST.ctx, &u.id, NULL, set, &matched, &err) && matched);
  bson_destroy(set);
  CHECK(run(FB_H_PURGE, AFS_BC_ASSET, &u.id, true) == AFS_DONE);
  CHECK(F.nobj == 1 && fb_rec(&F, AFS_BC_ASSET, &u.id) == NULL);
}

int main(void) {
  CHECK(fake_broker_init(&B));
  test_init();
  test_init_refusals();
  test_init_taken_keys_and_outages();
  test_complete();
  test_complete_races();
  test_versions();
  test_janitor();
  fb_free(&F);
  afs_config_free(&B.cfg);
  TEST_MAIN_END();
}
