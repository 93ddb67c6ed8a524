/* auth=required in the broker's handlers, on the fake store (tests/unit/fake_bstore.h):
 * signed upload records and `uploaded` changes, partitions, replays, changes a client made
 * after the broker claimed a record (signed again, or not), the janitor's rule for
 * `deleted`, and the function calls that change assets (rename over a file, stale
 * renames, captions) with who may make them. Keys are made in a temporary folder; the
 * clients file is read by the broker's own code (authz.c). */
#include <stdlib.h>
#include <sys/stat.h>

#include "afs_test.h"
#include "fake_bstore.h"

static struct afs_broker B;
static struct fake_bstore F;
static struct afs_bstore ST;
static struct afs_bstore_sealed SEALED; /* ST: the fake, sealing assets as the broker does */
static afs_auth_key *K_ALICE, *K_MALLORY;
static char DIR_[64], CLIENTS[128];

static void reset(void) {
  fb_free(&F);
  struct afs_bstore inner = fake_bstore(&F);
  afs_bstore_sealed(&ST, &SEALED, &inner, &B);
}

static afs_auth_key *make_key(const char *name, char pub[AFS_AUTH_PUB_B64]) {
  char path[160];
  struct afs_error err = {0};
  snprintf(path, sizeof path, "%s/%s.key", DIR_, name);
  CHECK(afs_auth_keygen(path, pub, &err));
  afs_auth_key *k = afs_auth_key_load(path, &err);
  CHECK(k != NULL);
  return k;
}

static void write_clients(const char *text) {
  FILE *f = fopen(CLIENTS, "w");
  fputs(text, f);
  fclose(f);
  chmod(CLIENTS, 0644);
}

/* A signed request: signs doc as `kind` with k and appends the signature. */
static void sign(afs_auth_key *k, enum afs_auth_req kind, bson_t *doc) {
  char sig[AFS_AUTH_SIG_B64];
  struct afs_error err = {0};
  CHECK(afs_auth_req_sign(k, kind, doc, sig, &err));
  BSON_APPEND_UTF8(doc, afs_auth_req_sig_field(kind), sig);
}

struct up {
  bson_oid_t oid;
  bson_value_t id;
};

/* An upload record of uid in partition user_id=<uid> (assetPartition apart), signed with
 * k (NULL: unsigned). */
static void up_new(struct up *u, const char *uid, const char *apart, const char *fp,
                   afs_auth_key *k) {
  bson_oid_init(&u->oid, NULL);
  u->id = (bson_value_t){.value_type = BSON_TYPE_OID};
  bson_oid_copy(&u->oid, &u->id.value.v_oid);
  char part[64];
  snprintf(part, sizeof part, "user_id=%s", uid);
  bson_t *d =
      BCON_NEW("_id", BCON_OID(&u->oid), "_partition", BCON_UTF8(part), "uid", BCON_UTF8(uid),
               "sessionId", "s1", "assetPartition", BCON_UTF8(apart), "filePath", BCON_UTF8(fp),
               "contentType", "text/plain", "expirationHours", BCON_DOUBLE(24), "status", "pending",
               "createdAt", BCON_DATE_TIME(afs_now_ms()));
  if (k)
    sign(k, AFS_REQ_UPLOAD, d);
  fb_add(&F, AFS_BC_UPLOAD, d);
  bson_destroy(d);
}

static const char *up_str(struct up *u, const char *field) {
  const bson_t *d = fb_rec(&F, AFS_BC_UPLOAD, &u->id);
  return d ? fb_str(d, field) : NULL;
}

static void up_set(struct up *u, const bson_t *set) {
  fb_edit(&F, AFS_BC_UPLOAD, &u->id, set, NULL);
}

/* A handler on the stored record, claimed under a lease as the dispatcher would. */
static enum afs_outcome run(enum fb_handler h, enum afs_bcoll coll, const bson_value_t *id) {
  return fb_run(&F, &B, &ST, h, coll, id, true);
}

/* The client's `uploaded`, signed by k (NULL: unsigned), over `size` bytes whose ETag is
 * the fake's ("etag-<size>") unless etag says otherwise. */
static void uploaded(struct up *u, const char *uid, afs_auth_key *k, int64_t size,
                     const char *etag) {
  char e[32];
  snprintf(e, sizeof e, "etag-%lld", (long long)size);
  fb_put(&F, up_str(u, "path"), size);
  bson_t *set =
      BCON_NEW("status", "uploaded", "size", BCON_INT64(size), "etag", BCON_UTF8(etag ? etag : e));
  if (k) {
    bson_t *m = BCON_NEW("_id", BCON_OID(&u->oid), "uid", BCON_UTF8(uid));
    bson_concat(m, set);
    char sig[AFS_AUTH_SIG_B64];
    struct afs_error err = {0};
    CHECK(afs_auth_req_sign(k, AFS_REQ_UPLOADED, m, sig, &err));
    BSON_APPEND_UTF8(set, AFS_F_AUTH_UPLOADED_SIG, sig);
    bson_destroy(m);
  }
  up_set(u, set);
  bson_destroy(set);
}

static bool error_has(struct up *u, const char *what) {
  const char *e = up_str(u, "error");
  if (!e || !strstr(e, what))
    fprintf(stderr, "error '%s', want '%s'\n", e ? e : "(none)", what);
  return e && strstr(e, what);
}

static void test_init(void) {
  struct up u;
  reset();
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id) == AFS_DONE);
  CHECK_STREQ(up_str(&u, "status"), "initialized");

  reset(); /* unsigned */
  up_new(&u, "alice", "", "a.txt", NULL);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "not signed (no assetfsSig)"));
  CHECK(up_str(&u, "writeUrl") == NULL && F.nclaims == 0);

  reset(); /* a forged uid */
  up_new(&u, "alice", "", "a.txt", K_MALLORY);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "not a valid signature by a key of uid 'alice'"));

  reset(); /* an uid nobody listed */
  up_new(&u, "eve", "", "a.txt", K_MALLORY);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "not a valid signature"));

  reset(); /* a partition its uid may not use: the asset's, then the record's */
  up_new(&u, "mallory", "user_id=alice", "a.txt", K_MALLORY);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "uid 'mallory' may not use partition 'user_id=alice'"));
  up_new(&u, "alice", "team-x", "t.txt", K_ALICE); /* a pattern allows it */
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK_STREQ(up_str(&u, "status"), "initialized");

  reset(); /* a field changed under the signature */
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  bson_t *set = BCON_NEW("filePath", "b.txt");
  up_set(&u, set);
  bson_destroy(set);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "not a valid signature"));

  reset(); /* a replay: its asset exists already */
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  bson_t *a = BCON_NEW("_id", BCON_OID(&u.oid), "status", "deleted");
  fb_add(&F, AFS_BC_ASSET, a);
  bson_destroy(a);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "exists already"));
  F.down[FB_GET] = true; /* and when that cannot be read, later */
  up_new(&u, "alice", "", "b.txt", K_ALICE);
  CHECK(run(FB_H_INIT, AFS_BC_UPLOAD, &u.id) == AFS_RETRY);
  CHECK_STREQ(up_str(&u, "status"), "pending");
  F.down[FB_GET] = false;
}

static void test_complete(void) {
  struct up u;
  reset();
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  uploaded(&u, "alice", K_ALICE, 10, NULL);
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id) == AFS_DONE);
  CHECK_STREQ(up_str(&u, "status"), "completed");
  CHECK(fb_rec(&F, AFS_BC_ASSET, &u.id) != NULL);

  reset(); /* `uploaded` unsigned, or signed by another key */
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  uploaded(&u, "alice", NULL, 10, NULL);
  run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "not signed (no assetfsUploadedSig)"));
  up_new(&u, "alice", "", "b.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  uploaded(&u, "alice", K_MALLORY, 10, NULL);
  run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "assetfsUploadedSig is not a valid signature"));
  CHECK(fb_rec(&F, AFS_BC_ASSET, &u.id) == NULL);

  reset(); /* other bytes than the ones signed for */
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  uploaded(&u, "alice", K_ALICE, 10, "etag-9");
  run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "is not the one uid 'alice' signed for"));
  CHECK(fb_rec(&F, AFS_BC_ASSET, &u.id) == NULL);

  reset(); /* the assetPartition changed after initialization */
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  uploaded(&u, "alice", K_ALICE, 10, NULL);
  bson_t *set = BCON_NEW("assetPartition", "user_id=mallory");
  up_set(&u, set);
  bson_destroy(set);
  run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "not a valid signature"));
  CHECK(fb_rec(&F, AFS_BC_ASSET, &u.id) == NULL);
}

/* A client that changes its record while the broker checks its objects (the fake's hook
 * before the renewal). */
static bson_t *g_change;
static struct up *g_up;
static void change_before_renew(struct fake_bstore *f, enum fb_op op) {
  (void)f;
  if (op == FB_RENEW && g_change) {
    up_set(g_up, g_change);
    bson_destroy(g_change);
    g_change = NULL;
  }
}

static const char *asset_str(struct up *u, const char *field) {
  const bson_t *d = fb_rec(&F, AFS_BC_ASSET, &u->id);
  return d ? fb_str(d, field) : NULL;
}

static void test_changes_in_flight(void) {
  struct up u;
  /* An unsigned rename and an unsigned abandonment are not followed. */
  reset();
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  uploaded(&u, "alice", K_ALICE, 10, NULL);
  g_up = &u;
  g_change = BCON_NEW("filePath", "moved.txt", "abandoned", BCON_BOOL(true));
  F.before = change_before_renew;
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id) == AFS_DONE);
  CHECK_STREQ(asset_str(&u, "filePath"), "a.txt");
  CHECK_STREQ(asset_str(&u, "status"), "active");

  /* Its client's rename (signed again) and abandonment (signed) are. */
  reset();
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  uploaded(&u, "alice", K_ALICE, 10, NULL);
  bson_t *now = bson_copy(fb_rec(&F, AFS_BC_UPLOAD, &u.id));
  bson_t *renamed = bson_new();
  bson_copy_to_excluding_noinit(now, renamed, "filePath", AFS_F_AUTH_SIG, NULL);
  BSON_APPEND_UTF8(renamed, "filePath", "moved.txt");
  sign(K_ALICE, AFS_REQ_UPLOAD, renamed);
  bson_iter_t it;
  bson_iter_init_find(&it, renamed, AFS_F_AUTH_SIG);
  g_change =
      BCON_NEW("filePath", "moved.txt", AFS_F_AUTH_SIG, BCON_UTF8(bson_iter_utf8(&it, NULL)));
  F.before = change_before_renew; /* reset() cleared it */
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id) == AFS_DONE);
  CHECK_STREQ(asset_str(&u, "filePath"), "moved.txt");
  bson_destroy(renamed);
  bson_destroy(now);

  reset();
  up_new(&u, "alice", "", "gone.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  uploaded(&u, "alice", K_ALICE, 10, NULL);
  g_change = BCON_NEW("abandoned", BCON_BOOL(true));
  bson_t *m = BCON_NEW("_id", BCON_OID(&u.oid), "uid", "alice", "abandoned", BCON_BOOL(true));
  sign(K_ALICE, AFS_REQ_ABANDON, m);
  bson_iter_init_find(&it, m, AFS_F_AUTH_ABANDON_SIG);
  BSON_APPEND_UTF8(g_change, AFS_F_AUTH_ABANDON_SIG, bson_iter_utf8(&it, NULL));
  bson_destroy(m);
  F.before = change_before_renew;
  CHECK(run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id) == AFS_DONE);
  CHECK_STREQ(asset_str(&u, "status"), "deleted");
  F.before = NULL;
}

/* Changes asset u's stored record as a database writer would. */
static void asset_edit(struct up *u, const bson_t *set) {
  fb_edit(&F, AFS_BC_ASSET, &u->id, set, NULL);
}

static bool asset_sealed(struct up *u) {
  const bson_t *d = fb_rec(&F, AFS_BC_ASSET, &u->id);
  return d && afs_auth_doc_signed_by(B.sign_pub, AFS_REQ_ASSET, d);
}

static void test_janitor(void) {
  struct up u;
  reset();
  up_new(&u, "alice", "", "a.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  uploaded(&u, "alice", K_ALICE, 10, NULL);
  run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u.id);
  const char *key = asset_str(&u, "path");
  char *k = afs_xstrdup(key);
  /* someone writes `deleted`: restored, nothing purged */
  bson_t *set = BCON_NEW("status", "deleted");
  fb_edit(&F, AFS_BC_ASSET, &u.id, set, NULL);
  bson_destroy(set);
  CHECK(!asset_sealed(&u));
  CHECK(run(FB_H_PURGE, AFS_BC_ASSET, &u.id) == AFS_DONE);
  CHECK_STREQ(asset_str(&u, "status"), "active");
  CHECK(asset_sealed(&u));
  CHECK(fb_has_obj(&F, k));
  /* a mark copied from another asset does not help */
  char other_mark[65];
  bson_value_t other = {.value_type = BSON_TYPE_UTF8, .value.v_utf8 = {"x", 1}};
  afs_broker_deletion_mark(&B, &other, other_mark);
  set = BCON_NEW("status", "deleted", AFS_F_DELETED_BY, BCON_UTF8(other_mark));
  fb_edit(&F, AFS_BC_ASSET, &u.id, set, NULL);
  bson_destroy(set);
  run(FB_H_PURGE, AFS_BC_ASSET, &u.id);
  CHECK_STREQ(asset_str(&u, "status"), "active");
  CHECK(fb_has_obj(&F, k));
  free(k);
}

/* Runs a call (signed by k unless NULL) by uid; its stored answer. */
static const bson_t *call(afs_auth_key *k, const char *uid, const char *name, const bson_t *args) {
  bson_oid_t oid;
  bson_oid_init(&oid, NULL);
  bson_t *d =
      BCON_NEW("_id", BCON_OID(&oid), "name", BCON_UTF8(name), "uid", BCON_UTF8(uid), "sessionId",
               "s1", "status", "pending", "createdAt", BCON_DATE_TIME(afs_now_ms()));
  BSON_APPEND_ARRAY(d, "args", args);
  if (k)
    sign(k, AFS_REQ_CALL, d);
  fb_add(&F, AFS_BC_CALL, d);
  bson_value_t id = {.value_type = BSON_TYPE_OID};
  bson_oid_copy(&oid, &id.value.v_oid);
  afs_function_call(&B, &ST, d, NULL);
  bson_destroy(d);
  return fb_rec(&F, AFS_BC_CALL, &id);
}

static bool answered(const bson_t *c, const char *status, const char *code) {
  const char *s = fb_str(c, "status"), *e = fb_str(c, "errorCode");
  bool ok = s && !strcmp(s, status) && (!code || (e && !strcmp(e, code)));
  if (!ok)
    fprintf(stderr, "call: %s %s (%s), want %s %s\n", s ? s : "-", e ? e : "-",
            fb_str(c, "error") ? fb_str(c, "error") : "", status, code ? code : "");
  return ok;
}

static void complete_as_alice(struct up *u, const char *fp) {
  up_new(u, "alice", "", fp, K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u->id);
  uploaded(u, "alice", K_ALICE, 10, NULL);
  run(FB_H_COMPLETE, AFS_BC_UPLOAD, &u->id);
}

static void test_calls(void) {
  struct up a, b;
  char ida[25], idb[25];
  reset();
  complete_as_alice(&a, "a.txt");
  complete_as_alice(&b, "b.txt");
  bson_oid_to_string(&a.oid, ida);
  bson_oid_to_string(&b.oid, idb);

  /* a rename over b, as alice saw it */
  bson_t *args = BCON_NEW("0", BCON_UTF8(ida), "1", "a.txt", "2", "b.txt", "3", BCON_UTF8(idb));
  CHECK(answered(call(K_ALICE, "alice", "AssetfsRenameAsset", args), "done", NULL));
  CHECK_STREQ(asset_str(&a, "filePath"), "b.txt");
  CHECK_STREQ(asset_str(&b, "status"), "deleted");
  /* b's removal carries the broker's mark: the janitor purges it */
  run(FB_H_PURGE, AFS_BC_ASSET, &b.id);
  CHECK(fb_rec(&F, AFS_BC_ASSET, &b.id) == NULL);
  /* the same request again: a is not at a.txt any more */
  CHECK(answered(call(K_ALICE, "alice", "AssetfsRenameAsset", args), "error", "ESTALE"));
  bson_destroy(args);
  /* a rename over a file the client did not see */
  struct up c;
  complete_as_alice(&c, "c.txt");
  args = BCON_NEW("0", BCON_UTF8(ida), "1", "b.txt", "2", "c.txt", "3", "");
  CHECK(answered(call(K_ALICE, "alice", "AssetfsRenameAsset", args), "error", "EEXIST"));
  CHECK_STREQ(asset_str(&c, "status"), "active");
  bson_destroy(args);
  /* unsigned, signed by another, by a uid not allowed on the partition */
  args = BCON_NEW("0", BCON_UTF8(ida), "1", "b.txt", "2", "d.txt", "3", "");
  CHECK(answered(call(NULL, "alice", "AssetfsRenameAsset", args), "error", "EACCES"));
  CHECK(answered(call(K_MALLORY, "alice", "AssetfsRenameAsset", args), "error", "EACCES"));
  CHECK(answered(call(K_MALLORY, "mallory", "AssetfsRenameAsset", args), "error", "EPERM"));
  CHECK_STREQ(asset_str(&a, "filePath"), "b.txt");
  bson_destroy(args);
  args = BCON_NEW("0", BCON_UTF8(ida));
  CHECK(answered(call(K_MALLORY, "mallory", "CosyncRemoveAsset", args), "error", "EPERM"));
  CHECK(answered(call(K_MALLORY, "mallory", "CosyncRefreshAsset", args), "error", "EPERM"));
  CHECK(answered(call(K_MALLORY, "mallory", "CosyncArchiveAsset", args), "error", "EPERM"));
  CHECK_STREQ(asset_str(&a, "status"), "active");
  /* a refresh by alice answers the URLs only */
  const bson_t *r = call(K_ALICE, "alice", "CosyncRefreshAsset", args);
  CHECK(answered(r, "done", NULL));
  bson_iter_t it, sub;
  CHECK(bson_iter_init_find(&it, r, "result") && bson_iter_recurse(&it, &sub));
  while (bson_iter_next(&sub)) {
    const char *key = bson_iter_key(&sub);
    CHECK(!strcmp(key, "_id") || !strcmp(key, "expiration") || !strncmp(key, "url", 3));
  }
  bson_destroy(args);
  /* caption: text only */
  args = BCON_NEW("0", BCON_UTF8(ida), "1", "sea");
  CHECK(answered(call(K_ALICE, "alice", "AssetfsSetCaption", args), "done", NULL));
  CHECK_STREQ(asset_str(&a, "caption"), "sea");
  bson_destroy(args);
  args = BCON_NEW("0", BCON_UTF8(ida), "1", BCON_INT32(5));
  CHECK(answered(call(K_ALICE, "alice", "AssetfsSetCaption", args), "error", "EINVAL"));
  bson_destroy(args);
  /* a removal bound to the path its caller saw: not once the asset moved */
  args = BCON_NEW("0", BCON_UTF8(ida), "1", "a.txt", "2", "user_id=alice");
  CHECK(answered(call(K_ALICE, "alice", "CosyncRemoveAsset", args), "error", "ESTALE"));
  bson_destroy(args);
  args = BCON_NEW("0", BCON_UTF8(ida), "1", "b.txt", "2", "team-x");
  CHECK(answered(call(K_ALICE, "alice", "CosyncRemoveAsset", args), "error", "ESTALE"));
  CHECK_STREQ(asset_str(&a, "status"), "active");
  bson_destroy(args);
  /* remove by alice: marked, then purged */
  args = BCON_NEW("0", BCON_UTF8(ida), "1", "b.txt", "2", "user_id=alice");
  CHECK(answered(call(K_ALICE, "alice", "CosyncRemoveAsset", args), "done", NULL));
  run(FB_H_PURGE, AFS_BC_ASSET, &a.id);
  CHECK(fb_rec(&F, AFS_BC_ASSET, &a.id) == NULL);
  bson_destroy(args);
}

static void test_seals(void) {
  struct up a;
  char ida[25];
  reset();
  complete_as_alice(&a, "a.txt");
  bson_oid_to_string(&a.oid, ida);
  CHECK(asset_sealed(&a));
  CHECK(bson_has_field(fb_rec(&F, AFS_BC_ASSET, &a.id), AFS_F_SEALED_COPY));
  char *url = afs_xstrdup(asset_str(&a, "url"));
  /* each change the broker makes is sealed */
  bson_t *args = BCON_NEW("0", BCON_UTF8(ida), "1", "a.txt", "2", "b.txt", "3", "");
  CHECK(answered(call(K_ALICE, "alice", "AssetfsRenameAsset", args), "done", NULL));
  CHECK(asset_sealed(&a));
  bson_destroy(args);
  /* someone points its URL elsewhere: the next change restores it first */
  bson_t *set = BCON_NEW("url", "http://127.0.0.1:9/b/mallory/x.txt", "filePath", "c.txt");
  asset_edit(&a, set);
  bson_destroy(set);
  CHECK(!asset_sealed(&a));
  args = BCON_NEW("0", BCON_UTF8(ida), "1", "b.txt", "2", "d.txt", "3", "");
  CHECK(answered(call(K_ALICE, "alice", "AssetfsRenameAsset", args), "done", NULL));
  CHECK(asset_sealed(&a));
  CHECK_STREQ(asset_str(&a, "url"), url);
  CHECK_STREQ(asset_str(&a, "filePath"), "d.txt");
  bson_destroy(args);
  /* and when the sealed copy was changed too, nothing is done with it */
  bson_t *copy = BCON_NEW("url", "http://127.0.0.1:9/b/mallory/x.txt", "filePath", "c.txt");
  set = BCON_NEW("url", "http://127.0.0.1:9/b/mallory/x.txt");
  BSON_APPEND_DOCUMENT(set, AFS_F_SEALED_COPY, copy);
  asset_edit(&a, set);
  bson_destroy(set);
  bson_destroy(copy);
  args = BCON_NEW("0", BCON_UTF8(ida));
  const bson_t *c = call(K_ALICE, "alice", "CosyncRemoveAsset", args);
  CHECK(answered(c, "error", NULL) && strstr(fb_str(c, "error"), "seal does not verify"));
  c = call(K_ALICE, "alice", "CosyncRefreshAsset", args);
  CHECK(answered(c, "error", NULL));
  CHECK_STREQ(asset_str(&a, "status"), "active");
  bson_destroy(args);
  free(url);

  /* an asset from before auth=required (no seal) is not acted on */
  reset();
  complete_as_alice(&a, "old.txt");
  set = bson_new();
  bson_t *un = BCON_NEW(AFS_F_AUTH_SEAL, "", AFS_F_SEALED_COPY, "");
  fb_edit(&F, AFS_BC_ASSET, &a.id, set, un);
  bson_destroy(un);
  bson_destroy(set);
  args = BCON_NEW("0", BCON_UTF8(ida), "1", "x");
  bson_oid_to_string(&a.oid, ida);
  bson_destroy(args);
  args = BCON_NEW("0", BCON_UTF8(ida), "1", "x");
  c = call(K_ALICE, "alice", "AssetfsSetCaption", args);
  CHECK(answered(c, "error", NULL));
  bson_destroy(args);
}

/* Attacks a reviewer found: each one write to the database, none may cost an object. */
static void test_review_attacks(void) {
  struct up a, b;
  /* A completed upload put back to `initialized` (the stale janitor): its asset's
   * objects stay. */
  reset();
  complete_as_alice(&a, "a.txt");
  char *key = afs_xstrdup(asset_str(&a, "path"));
  bson_t *set = BCON_NEW("status", "initialized", "createdAt", BCON_DATE_TIME(1000));
  up_set(&a, set);
  bson_destroy(set);
  run(FB_H_STALE, AFS_BC_UPLOAD, &a.id);
  CHECK(fb_has_obj(&F, key));
  set = BCON_NEW("status", "initialized"); /* createdAt as signed: still an asset of it */
  bson_t *old = bson_copy(fb_rec(&F, AFS_BC_UPLOAD, &a.id));
  fb_free(&F); /* keep only the objects and the asset? rebuild: record with its signature */
  reset();
  complete_as_alice(&a, "a.txt");
  free(key);
  key = afs_xstrdup(asset_str(&a, "path"));
  up_set(&a, set);
  bson_destroy(set);
  bson_destroy(old);
  run(FB_H_STALE, AFS_BC_UPLOAD, &a.id);
  CHECK(fb_has_obj(&F, key));
  /* An unsealed record naming alice's objects in its URLs */
  bson_oid_t o;
  bson_oid_init(&o, NULL);
  char url[400];
  snprintf(url, sizeof url, "http://127.0.0.1:9/b/%s", key);
  bson_t *d = BCON_NEW("_id", BCON_OID(&o), "uid", "alice", "path", "alice/x-1.txt", "urlSmall",
                       BCON_UTF8(url), "contentType", "text/plain", "status", "initialized");
  fb_add(&F, AFS_BC_UPLOAD, d);
  bson_destroy(d);
  bson_value_t oid = {.value_type = BSON_TYPE_OID};
  bson_oid_copy(&o, &oid.value.v_oid);
  run(FB_H_STALE, AFS_BC_UPLOAD, &oid);
  CHECK(fb_has_obj(&F, key));
  free(key);

  /* A record anyone inserted, newer than any save, at the path: a new save still wins. */
  reset();
  complete_as_alice(&a, "v.txt");
  bson_oid_init(&o, NULL);
  d = BCON_NEW("_id", BCON_OID(&o), "_partition", "user_id=alice", "filePath", "v.txt", "status",
               "active", "versionAt", BCON_DATE_TIME(4102444800000LL));
  fb_add(&F, AFS_BC_ASSET, d);
  bson_destroy(d);
  complete_as_alice(&b, "v.txt");
  CHECK_STREQ(asset_str(&b, "status"), "active");
  CHECK_STREQ(asset_str(&a, "status"), "deleted"); /* the older real version went */
  /* initializedAt made old on a new save: not believed (no broker mark) */
  reset();
  complete_as_alice(&a, "w.txt");
  up_new(&b, "alice", "", "w.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &b.id);
  uploaded(&b, "alice", K_ALICE, 10, NULL);
  set = BCON_NEW("initializedAt", BCON_DATE_TIME(1));
  up_set(&b, set);
  bson_destroy(set);
  run(FB_H_COMPLETE, AFS_BC_UPLOAD, &b.id);
  CHECK_STREQ(asset_str(&b, "status"), "active");
  CHECK_STREQ(asset_str(&a, "status"), "deleted");

  /* An unsigned `abandoned` on an overwrite (the supersede path re-reads the upload) */
  reset();
  complete_as_alice(&a, "o.txt");
  up_new(&b, "alice", "", "o.txt", K_ALICE);
  run(FB_H_INIT, AFS_BC_UPLOAD, &b.id);
  uploaded(&b, "alice", K_ALICE, 10, NULL);
  g_up = &b;
  g_change = BCON_NEW("abandoned", BCON_BOOL(true), "filePath", "elsewhere.txt");
  F.before = change_before_renew;
  run(FB_H_COMPLETE, AFS_BC_UPLOAD, &b.id);
  F.before = NULL;
  CHECK_STREQ(asset_str(&b, "status"), "active");
  CHECK_STREQ(asset_str(&b, "filePath"), "o.txt");

  /* A completed upload marked `uploaded` again: its asset is left as it is */
  bson_t *cap = BCON_NEW("0", "x", "1", "kept");
  char idb[25];
  bson_oid_to_string(&b.oid, idb);
  bson_destroy(cap);
  cap = BCON_NEW("0", BCON_UTF8(idb), "1", "kept");
  CHECK(answered(call(K_ALICE, "alice", "AssetfsSetCaption", cap), "done", NULL));
  bson_destroy(cap);
  set = BCON_NEW("status", "uploaded", "filePath", "o.txt", "abandoned", BCON_BOOL(false));
  up_set(&b, set);
  bson_destroy(set);
  run(FB_H_COMPLETE, AFS_BC_UPLOAD, &b.id);
  CHECK_STREQ(up_str(&b, "status"), "completed");
  CHECK_STREQ(asset_str(&b, "caption"), "kept");

  /* An asset planted with the upload's _id before it completes: nothing of it is sealed */
  reset();
  up_new(&a, "alice", "", "p.txt", K_ALICE);
  d = BCON_NEW("_id", BCON_OID(&a.oid), "status", "active", "urlVideoPreview",
               "http://127.0.0.1:9/b/mallory/x.png", "contentType", "text/html");
  fb_add(&F, AFS_BC_ASSET, d);
  bson_destroy(d);
  run(FB_H_INIT, AFS_BC_UPLOAD, &a.id);
  CHECK(error_has(&a, "exists already")); /* refused at initialization already */
}

static void test_clients_reload(void) {
  struct up u;
  char pub[AFS_AUTH_PUB_B64];
  afs_auth_key *carol = make_key("carol", pub);
  reset();
  up_new(&u, "carol", "", "c.txt", carol);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK(error_has(&u, "not a valid signature"));
  FILE *f = fopen(CLIENTS, "a");
  fprintf(f, "carol %s user_id=carol\n", pub);
  fclose(f);
  afs_authz_reload(&B, true);
  up_new(&u, "carol", "", "c2.txt", carol);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK_STREQ(up_str(&u, "status"), "initialized");
  f = fopen(CLIENTS, "a"); /* a broken file is not applied */
  fputs("carol notakey user_id=carol\n", f);
  fclose(f);
  afs_authz_reload(&B, true);
  up_new(&u, "carol", "", "c3.txt", carol);
  run(FB_H_INIT, AFS_BC_UPLOAD, &u.id);
  CHECK_STREQ(up_str(&u, "status"), "initialized");
  afs_auth_key_free(carol);
}

int main(void) {
  struct afs_error err = {0};
  char pa[AFS_AUTH_PUB_B64], pm[AFS_AUTH_PUB_B64], text[512];
  snprintf(DIR_, sizeof DIR_, "/tmp/afs-auth-%d", (int)getpid());
  CHECK(mkdir(DIR_, 0700) == 0);
  snprintf(CLIENTS, sizeof CLIENTS, "%s/clients", DIR_);
  K_ALICE = make_key("alice", pa);
  K_MALLORY = make_key("mallory", pm);

  snprintf(text, sizeof text, "alice %s user_id=alice,team-*\nmallory %s user_id=mallory\n", pa,
           pm);
  write_clients(text);
  CHECK(fake_broker_init(&B));
  B.cfg.auth_required = true;
  B.cfg.clients_file = afs_xstrdup(CLIENTS);
  CHECK(afs_authz_open(&B, &err));
  char pb[AFS_AUTH_PUB_B64];
  B.sign_key = make_key("broker", pb);
  afs_auth_key_public(B.sign_key, B.sign_pub);
  test_init();
  test_complete();
  test_changes_in_flight();
  test_janitor();
  test_calls();
  test_seals();
  test_review_attacks();
  test_clients_reload();
  afs_authz_close(&B);
  fb_free(&F);
  afs_config_free(&B.cfg);
  afs_auth_key_free(K_ALICE);
  afs_auth_key_free(K_MALLORY);
  afs_auth_key_free(B.sign_key);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", DIR_);
  CHECK(system(cmd) == 0);
  TEST_MAIN_END();
}
