/* The catalog against the stack's MongoDB (FerretDB): partitions, listings, lookups,
 * derived names and clashes, TTLs and invalidation, cuts (sizes probed on a local HTTP
 * server), xattrs, captions, and URL refresh through CosyncFunctionCall with a fake
 * broker thread: one flight for 16 concurrent callers, timeout without a broker, ESTALE
 * for a deleted asset. Needs ASSETFS_MONGO_URI; exit 77 (skip) without it. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "afs_httpd.h"
#include "afs_test.h"
#include "catalog/catalog.h"

static struct httpd H;
static struct afs_db DB;
static mongoc_collection_t *ASSETS, *CALLS;
static mongoc_client_t *CLIENT;

static int64_t now_ms(void) {
  return (int64_t)time(NULL) * 1000;
}

/* Inserts an active asset; returns its id (static buffer per call site is fine). */
static void put_asset(const char *part, const char *file_path, const char *path, const char *ct,
                      int64_t size, int64_t created, double hours, int64_t exp, const char *url,
                      const char *url_small, const char *url_preview, char id_out[AFS_OID_HEX]) {
  bson_oid_t oid;
  bson_oid_init(&oid, NULL);
  bson_t *d = BCON_NEW("_id", BCON_OID(&oid), "_partition", BCON_UTF8(part), "uid",
                       BCON_UTF8("uid1"), "path", BCON_UTF8(path), "contentType", BCON_UTF8(ct),
                       "size", BCON_INT64(size), "status", BCON_UTF8("active"), "createdAt",
                       BCON_DATE_TIME(created), "expirationHours", BCON_DOUBLE(hours), "url",
                       BCON_UTF8(url), "urlSmall", BCON_UTF8(url_small ? url_small : ""),
                       "urlVideoPreview", BCON_UTF8(url_preview ? url_preview : ""), "xRes",
                       BCON_INT32(640), "yRes", BCON_INT32(480));
  if (file_path)
    BSON_APPEND_UTF8(d, "filePath", file_path);
  if (exp)
    BSON_APPEND_DATE_TIME(d, "expiration", exp);
  bson_error_t e;
  CHECK(mongoc_collection_insert_one(ASSETS, d, NULL, NULL, &e));
  bson_destroy(d);
  if (id_out)
    bson_oid_to_string(&oid, id_out);
}

static void set_field(const char *id, const char *key, const char *val) {
  bson_oid_t oid;
  bson_oid_init_from_string(&oid, id);
  bson_t *s = BCON_NEW("_id", BCON_OID(&oid));
  bson_t *u = BCON_NEW("$set", "{", key, BCON_UTF8(val), "}");
  bson_error_t e;
  CHECK(mongoc_collection_update_one(ASSETS, s, u, NULL, NULL, &e));
  bson_destroy(s);
  bson_destroy(u);
}

struct names {
  char buf[4096];
  int n;
};

static int collect_name(void *ctx, const char *name, const struct afs_asset *a) {
  struct names *nm = ctx;
  size_t l = strlen(nm->buf);
  snprintf(nm->buf + l, sizeof nm->buf - l, "%s%s%s", l ? "," : "", name, a ? "" : "/");
  nm->n++;
  return 0;
}

/* Listing as a sorted comma-separated string ("dir/" for directories). */
static char *listing(struct afs_catalog *cat, const char *part, const char *dir) {
  static char out[4096];
  struct names nm = {{0}, 0};
  struct afs_error err = {0};
  if (!afs_catalog_list(cat, part, dir, collect_name, &nm, &err)) {
    snprintf(out, sizeof out, "ERR %d", err.code);
    return out;
  }
  /* sort the comma list */
  char *items[256];
  int n = 0;
  for (char *s = strtok(nm.buf, ","); s && n < 256; s = strtok(NULL, ","))
    items[n++] = s;
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
      char *t = items[j];
      items[j] = items[j - 1];
      items[j - 1] = t;
    }
  out[0] = 0;
  for (int i = 0; i < n; i++) {
    strcat(out, i ? "," : "");
    strcat(out, items[i]);
  }
  return out;
}

static int part_cb(void *ctx, const char *p) {
  strcat(ctx, p);
  strcat(ctx, ";");
  return 0;
}

/* ---- fake broker: answers CosyncRefreshAsset by setting a new url ---- */
static volatile int broker_stop, broker_calls;

static void *fake_broker(void *arg) {
  (void)arg;
  mongoc_client_t *c = afs_db_pop(&DB);
  mongoc_collection_t *calls = afs_db_coll(&DB, c, AFS_COLL_CALL);
  mongoc_collection_t *assets = afs_db_coll(&DB, c, AFS_COLL_ASSET);
  while (!broker_stop) {
    bson_t *q = BCON_NEW("status", BCON_UTF8("pending"));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(calls, q, NULL, NULL);
    const bson_t *doc;
    while (mongoc_cursor_next(cur, &doc)) {
      bson_iter_t it, arr;
      bson_oid_t call_id;
      bson_iter_init_find(&it, doc, "_id");
      bson_oid_copy(bson_iter_oid(&it), &call_id);
      char id[AFS_OID_HEX] = "";
      if (bson_iter_init_find(&it, doc, "args") && bson_iter_recurse(&it, &arr) &&
          bson_iter_next(&arr))
        snprintf(id, sizeof id, "%s", bson_iter_utf8(&arr, NULL));
      usleep(200000); /* a slow broker, so concurrent callers overlap */
      bson_oid_t aid;
      bson_oid_init_from_string(&aid, id);
      char url[256];
      httpd_url(&H, url, sizeof url, 1000, 2);
      bson_t *s = BCON_NEW("_id", BCON_OID(&aid));
      bson_t *u = BCON_NEW("$set", "{", "url", BCON_UTF8(url), "expiration",
                           BCON_DATE_TIME(now_ms() + 3600000), "}");
      mongoc_collection_update_one(assets, s, u, NULL, NULL, NULL);
      bson_destroy(s);
      bson_destroy(u);
      s = BCON_NEW("_id", BCON_OID(&call_id));
      u = BCON_NEW("$set", "{", "status", BCON_UTF8("done"), "}");
      mongoc_collection_update_one(calls, s, u, NULL, NULL, NULL);
      bson_destroy(s);
      bson_destroy(u);
      broker_calls++;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(q);
    usleep(20000);
  }
  mongoc_collection_destroy(calls);
  mongoc_collection_destroy(assets);
  afs_db_push(&DB, c);
  return NULL;
}

struct flight {
  struct afs_catalog *cat;
  const char *id;
  char *url;
  bool ok;
};

static void *flight_main(void *arg) {
  struct flight *f = arg;
  struct afs_error err = {0};
  f->ok = afs_catalog_fresh_url(f->cat, f->id, AFS_PART_ORIGINAL, NULL, &f->url, NULL, &err);
  return NULL;
}

/* One counter of afs_catalog_query_stats ("file", "list", "id", ...). */
static long qcount(struct afs_catalog *cat, const char *kind) {
  char *st = afs_catalog_query_stats(cat), key[32];
  snprintf(key, sizeof key, " %s=", kind);
  char *at = strstr(st, key);
  long v = at ? strtol(at + strlen(key), NULL, 10) : -1;
  free(st);
  return v;
}

static long qnames(struct afs_catalog *cat) {
  return qcount(cat, "file") + qcount(cat, "list");
}

/* New names cost no query while a listing covers them; an empty directory's listing is
 * remembered; invalidated names and other clients' files show (the latter within
 * list_ttl); afs_catalog_confirm answers by _id. Partition p3 only. */
static void test_negative(const char *url) {
  struct afs_error err = {0};
  struct afs_catalog_opts o;
  afs_catalog_opts_default(&o);
  o.uid = "uid1";
  o.session_id = "test";
  /* Long enough that a loaded machine (ASan, parallel suites) stays within them
   * between the steps that count queries. */
  o.attr_ttl = 2.0;
  o.list_ttl = 2.0;
  struct afs_catalog *cat = afs_catalog_new(&DB, &o, &err);
  CHECK(cat != NULL);
  int64_t t = now_ms();
  char id[AFS_OID_HEX], id2[AFS_OID_HEX];
  put_asset("p3", "seed.txt", "uid1/seed-1.txt", "text/plain", 1, t, 24, 0, url, NULL, NULL, NULL);
  CHECK_STREQ(listing(cat, "p3", ""), "seed.txt");
  long q0 = qnames(cat);
  char name[64];
  for (int i = 0; i < 100; i++) {
    snprintf(name, sizeof name, i % 2 ? "n%d.txt" : "new/sub/n%d.txt", i);
    CHECK(afs_catalog_lookup(cat, "p3", name, NULL, &err) == AFS_CAT_NOENT);
  }
  CHECK(qnames(cat) == q0); /* the partition's listing answered all of them */

  /* The listing expired: a directory nobody has is listed once, then remembered. */
  usleep(2100000);
  q0 = qnames(cat);
  CHECK(afs_catalog_lookup(cat, "p3", "d1/a.txt", NULL, &err) == AFS_CAT_NOENT);
  for (int i = 0; i < 50; i++) {
    snprintf(name, sizeof name, "d1/f%d.txt", i);
    CHECK(afs_catalog_lookup(cat, "p3", name, NULL, &err) == AFS_CAT_NOENT);
  }
  CHECK(qnames(cat) - q0 <= 2);
  CHECK_STREQ(listing(cat, "p3", "d1"), "ERR 2");

  /* This mount's upload completes there: the invalidated name is asked for, its
   * siblings still answer from the cache. */
  put_asset("p3", "d1/a.txt", "uid1/d1/a-1.txt", "text/plain", 5, t, 24, 0, url, NULL, NULL, id);
  afs_catalog_invalidate_path(cat, "p3", "d1/a.txt");
  CHECK(afs_catalog_lookup(cat, "p3", "d1/a.txt", NULL, &err) == AFS_CAT_FILE);
  q0 = qnames(cat);
  CHECK(afs_catalog_lookup(cat, "p3", "d1/b.txt", NULL, &err) == AFS_CAT_NOENT);
  CHECK(qnames(cat) == q0);
  CHECK_STREQ(listing(cat, "p3", "d1"), "a.txt");

  /* Confirmation by _id: no query by path. */
  put_asset("p3", "d1/c.txt", "uid1/d1/c-1.txt", "text/plain", 7, t, 24, 0, url, NULL, NULL, id2);
  afs_catalog_invalidate_path(cat, "p3", "d1/c.txt");
  q0 = qnames(cat);
  long ids = qcount(cat, "id");
  struct afs_asset a;
  CHECK(afs_catalog_confirm(cat, "p3", "d1/c.txt", id2, &a, &err) == AFS_CAT_FILE);
  CHECK_STREQ(a.id, id2);
  CHECK(a.size == 7);
  afs_asset_free(&a);
  CHECK(qnames(cat) == q0 && qcount(cat, "id") == ids + 1);
  CHECK(afs_catalog_lookup(cat, "p3", "d1/c.txt", NULL, &err) == AFS_CAT_FILE);
  CHECK(qnames(cat) == q0);
  /* An id that is not at that path: answered as a lookup. */
  CHECK(afs_catalog_confirm(cat, "p3", "d1/zz.txt", id2, NULL, &err) == AFS_CAT_NOENT);

  /* Another client's file: hidden at most list_ttl by the negative answer. */
  CHECK(afs_catalog_lookup(cat, "p3", "d1/other.txt", NULL, &err) == AFS_CAT_NOENT);
  put_asset("p3", "d1/other.txt", "uid1/d1/o-1.txt", "text/plain", 3, t, 24, 0, url, NULL, NULL,
            NULL);
  usleep(2100000);
  CHECK(afs_catalog_lookup(cat, "p3", "d1/other.txt", NULL, &err) == AFS_CAT_FILE);

  /* A directory made here: names in it cost nothing, even with the parent stale. */
  usleep(2100000);
  afs_catalog_note_new_dir(cat, "p3", "made/here");
  q0 = qnames(cat);
  CHECK(afs_catalog_lookup(cat, "p3", "made/here/x.txt", NULL, &err) == AFS_CAT_NOENT);
  CHECK(afs_catalog_lookup(cat, "p3", "made/here/y/z.txt", NULL, &err) == AFS_CAT_NOENT);
  CHECK(qnames(cat) == q0);

  /* A directory renamed here: no listing above it answers for its new place. */
  CHECK_STREQ(listing(cat, "p3", ""), "d1/,seed.txt");
  CHECK(afs_catalog_lookup(cat, "p3", "moved/x.txt", NULL, &err) == AFS_CAT_NOENT);
  put_asset("p3", "moved/x.txt", "uid1/m-1.txt", "text/plain", 3, t, 24, 0, url, NULL, NULL, NULL);
  afs_catalog_invalidate_dir(cat, "p3", "moved");
  CHECK(afs_catalog_lookup(cat, "p3", "moved/x.txt", NULL, &err) == AFS_CAT_FILE);
  afs_catalog_free(cat);
}

int main(void) {
  char dbname[64];
  const char *uri = afs_test_live_db("afs_cat", dbname, sizeof dbname);
  struct afs_error err = {0};
  CHECK(afs_db_open(&DB, uri, dbname, "test_catalog", &err));
  CHECK(httpd_start(&H) == 0);
  CLIENT = afs_db_pop(&DB);
  ASSETS = afs_db_coll(&DB, CLIENT, AFS_COLL_ASSET);
  CALLS = afs_db_coll(&DB, CLIENT, AFS_COLL_CALL);

  char small_url[256], prev_url[256], url1[256];
  httpd_url(&H, small_url, sizeof small_url, 1234, 1);
  httpd_url(&H, prev_url, sizeof prev_url, 777, 1);
  httpd_url(&H, url1, sizeof url1, 1000, 1);
  int64_t t = now_ms();
  char id_a[AFS_OID_HEX], id_b[AFS_OID_HEX], id_v[AFS_OID_HEX], id_d1[AFS_OID_HEX],
      id_d2[AFS_OID_HEX], id_pub[AFS_OID_HEX], id_exp[AFS_OID_HEX], id_exp2[AFS_OID_HEX];
  put_asset("p1", "a.txt", "uid1/a-1.txt", "text/plain", 11, t, 24, t + 86400000, url1, NULL, NULL,
            id_a);
  put_asset("p1", "dir/b.jpg", "uid1/dir/b-1.jpg", "image/jpeg", 5000, t, 24, t + 86400000, url1,
            small_url, NULL, id_b);
  put_asset("p1", "dir/sub/c.bin", "uid1/dir/sub/c-1.bin", "application/octet-stream", 1, t, 24,
            t + 86400000, url1, NULL, NULL, NULL);
  put_asset("p1", "v.mp4", "uid1/v-1.mp4", "video/mp4", 99, t, 24, t + 86400000, url1, small_url,
            prev_url, id_v);
  /* Two Cosync-app assets (no filePath) whose derived names clash. */
  put_asset("p1", NULL, "uid1/photos/cat-1700000000000.jpg", "image/jpeg", 10, t - 5000, 24,
            t + 86400000, url1, NULL, NULL, id_d1);
  put_asset("p1", NULL, "uid1/photos/cat-1700000000999.jpg", "image/jpeg", 20, t, 24, t + 86400000,
            url1, NULL, NULL, id_d2);
  put_asset("p2", "x.txt", "uid1/x-1.txt", "text/plain", 1, t, 0, 0, url1, NULL, NULL, id_pub);
  put_asset("p2", "exp.txt", "uid1/exp-1.txt", "text/plain", 1000, t, 1, t + 5000, url1, NULL, NULL,
            id_exp);
  put_asset("p2", "exp2.txt", "uid1/exp2-1.txt", "text/plain", 1000, t, 1, t - 1000, url1, NULL,
            NULL, id_exp2);
  {
    char dead[AFS_OID_HEX];
    put_asset("p1", "dir/dead.txt", "uid1/dir/dead-1.txt", "text/plain", 1, t, 24, 0, url1, NULL,
              NULL, dead);
    set_field(dead, "status", "deleted");
  }

  struct afs_catalog_opts o;
  afs_catalog_opts_default(&o);
  o.upload_partition = "user_id=uid1";
  o.uid = "uid1";
  o.session_id = "test";
  o.attr_ttl = 0.3;
  o.list_ttl = 0.6;
  o.refresh_timeout = 1.0;
  struct afs_catalog *cat = afs_catalog_new(&DB, &o, &err);
  CHECK(cat != NULL);

  /* Partitions: discovered plus the upload partition. */
  char parts[256] = "";
  CHECK(afs_catalog_partitions(cat, part_cb, parts, &err));
  CHECK(strstr(parts, "p1;") && strstr(parts, "p2;") && strstr(parts, "user_id=uid1;"));
  char *dn = afs_partition_to_dirname("user/a%b");
  CHECK_STREQ(dn, "user%2Fa%25b");
  char *back = afs_partition_from_dirname(dn);
  CHECK_STREQ(back, "user/a%b");
  free(dn);
  free(back);

  /* Listings, derived names and their clash suffix. */
  CHECK_STREQ(listing(cat, "p1", ""), "a.txt,dir/,photos/,v.mp4");
  CHECK_STREQ(listing(cat, "p1", "dir"), "b.jpg,sub/");
  char clash[64];
  snprintf(clash, sizeof clash, "cat (%s).jpg,cat.jpg", id_d2 + 18);
  CHECK_STREQ(listing(cat, "p1", "photos"), clash);
  CHECK_STREQ(listing(cat, "p1", "nodir"), "ERR 2");
  CHECK_STREQ(listing(cat, "p1", "a.txt"), "ERR 2");

  struct afs_asset a;
  CHECK(afs_catalog_lookup(cat, "p1", "dir/b.jpg", &a, &err) == AFS_CAT_FILE);
  CHECK_STREQ(a.id, id_b);
  CHECK(a.size == 5000 && a.x_res == 640 && !a.derived_name && a.part == AFS_PART_ORIGINAL);
  CHECK_STREQ(a.content_type, "image/jpeg");
  char *v = NULL;
  CHECK(afs_asset_xattr_get(&a, "user.assetfs.contentType", &v, &err));
  CHECK_STREQ(v, "image/jpeg");
  free(v);
  CHECK(!afs_asset_xattr_get(&a, "user.assetfs.nope", &v, &err) && err.code == ENODATA);
  size_t need = afs_asset_xattr_list(&a, NULL, 0);
  char *xl = malloc(need);
  CHECK(afs_asset_xattr_list(&a, xl, need) == need);
  CHECK(memmem(xl, need, "user.assetfs.urlSmall", 22) != NULL);
  free(xl);
  afs_asset_free(&a);
  CHECK(afs_catalog_lookup(cat, "p1", "dir", NULL, &err) == AFS_CAT_DIR);
  CHECK(afs_catalog_lookup(cat, "p1", "dir/sub", NULL, &err) == AFS_CAT_DIR);
  CHECK(afs_catalog_lookup(cat, "p1", "nope", NULL, &err) == AFS_CAT_NOENT);
  CHECK(afs_catalog_lookup(cat, "p1", "dir/dead.txt", NULL, &err) == AFS_CAT_NOENT);
  CHECK(afs_catalog_lookup(cat, "p1", "", NULL, &err) == AFS_CAT_DIR);
  CHECK(afs_catalog_lookup(cat, "nopart", "", NULL, &err) == AFS_CAT_NOENT);
  CHECK(afs_catalog_lookup(cat, "p1", "photos/cat.jpg", &a, &err) == AFS_CAT_FILE);
  CHECK_STREQ(a.id, id_d1);
  CHECK(a.derived_name);
  afs_asset_free(&a);

  /* Another client's new file shows after the listing TTL, not before... */
  put_asset("p1", "new.txt", "uid1/new-1.txt", "text/plain", 3, t, 24, 0, url1, NULL, NULL, NULL);
  CHECK(afs_catalog_lookup(cat, "p1", "new.txt", NULL, &err) == AFS_CAT_NOENT);
  usleep(700000);
  CHECK(afs_catalog_lookup(cat, "p1", "new.txt", NULL, &err) == AFS_CAT_FILE);
  /* ...unless the writer invalidates it. */
  CHECK_STREQ(listing(cat, "p1", ""), "a.txt,dir/,new.txt,photos/,v.mp4");
  put_asset("p1", "inv.txt", "uid1/inv-1.txt", "text/plain", 3, t, 24, 0, url1, NULL, NULL, NULL);
  CHECK(afs_catalog_lookup(cat, "p1", "inv.txt", NULL, &err) == AFS_CAT_NOENT);
  afs_catalog_invalidate_path(cat, "p1", "inv.txt");
  CHECK(afs_catalog_lookup(cat, "p1", "inv.txt", NULL, &err) == AFS_CAT_FILE);
  CHECK_STREQ(listing(cat, "p1", ""), "a.txt,dir/,inv.txt,new.txt,photos/,v.mp4");
  /* A changed size shows after the TTL. */
  set_field(id_a, "filePath", "a.txt"); /* no-op, keeps the record */
  {
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, id_a);
    bson_t *s = BCON_NEW("_id", BCON_OID(&oid));
    bson_t *u = BCON_NEW("$set", "{", "size", BCON_INT64(22), "}");
    CHECK(mongoc_collection_update_one(ASSETS, s, u, NULL, NULL, NULL));
    bson_destroy(s);
    bson_destroy(u);
  }
  /* Learnt from a listing: trusted for list_ttl; then re-read (after that, attr_ttl). */
  usleep(700000);
  CHECK(afs_catalog_lookup(cat, "p1", "a.txt", &a, &err) == AFS_CAT_FILE);
  CHECK(a.size == 22);
  afs_asset_free(&a);
  /* Caption. */
  CHECK(afs_catalog_set_caption(cat, id_a, "hello", &err));
  CHECK(afs_catalog_lookup(cat, "p1", "a.txt", &a, &err) == AFS_CAT_FILE);
  CHECK_STREQ(a.caption, "hello");
  afs_asset_free(&a);

  /* Cuts. */
  CHECK(afs_catalog_lookup(cat, "p1", ".cuts", NULL, &err) == AFS_CAT_DIR);
  CHECK(afs_catalog_lookup(cat, "p1", ".cuts/small", NULL, &err) == AFS_CAT_DIR);
  CHECK(afs_catalog_lookup(cat, "p1", ".cuts/huge", NULL, &err) == AFS_CAT_NOENT);
  CHECK_STREQ(listing(cat, "p1", ".cuts"), "large/,medium/,preview/,small/");
  CHECK(afs_catalog_lookup(cat, "p1", ".cuts/small/dir/b.jpg", &a, &err) == AFS_CAT_FILE);
  CHECK(a.part == AFS_PART_SMALL && a.size == 1234);
  CHECK_STREQ(afs_asset_part_url(&a), small_url);
  afs_asset_free(&a);
  CHECK(afs_catalog_lookup(cat, "p1", ".cuts/medium/dir/b.jpg", NULL, &err) == AFS_CAT_NOENT);
  CHECK(afs_catalog_lookup(cat, "p1", ".cuts/preview/v.mp4.png", &a, &err) == AFS_CAT_FILE);
  CHECK(a.part == AFS_PART_PREVIEW && a.size == 777);
  afs_asset_free(&a);
  CHECK(afs_catalog_lookup(cat, "p1", ".cuts/preview/v.mp4", NULL, &err) == AFS_CAT_NOENT);
  CHECK_STREQ(listing(cat, "p1", ".cuts/small"), "dir/,photos/,v.mp4.png");
  CHECK_STREQ(listing(cat, "p1", ".cuts/small/dir"), "b.jpg,sub/");

  /* URL refresh: public needs none; an expiring one gets ONE refresh for 16 callers. */
  char *url = NULL;
  int64_t exp = -1;
  CHECK(afs_catalog_fresh_url(cat, id_pub, AFS_PART_ORIGINAL, NULL, &url, &exp, &err));
  CHECK_STREQ(url, url1);
  CHECK(exp == 0);
  free(url);
  pthread_t bt;
  pthread_create(&bt, NULL, fake_broker, NULL);
  pthread_t th[16];
  struct flight f[16];
  for (int i = 0; i < 16; i++) {
    f[i] = (struct flight){cat, id_exp, NULL, false};
    pthread_create(&th[i], NULL, flight_main, &f[i]);
  }
  char url2[256];
  httpd_url(&H, url2, sizeof url2, 1000, 2);
  bool all = true;
  for (int i = 0; i < 16; i++) {
    pthread_join(th[i], NULL);
    all = all && f[i].ok && f[i].url && !strcmp(f[i].url, url2);
    free(f[i].url);
  }
  CHECK(all);
  CHECK(broker_calls == 1);
  CHECK(mongoc_collection_count_documents(CALLS, &(bson_t)BSON_INITIALIZER, NULL, NULL, NULL,
                                          NULL) == 1);
  /* S3 refused the new URL: forced refresh (the broker gives the same one here). */
  CHECK(afs_catalog_fresh_url(cat, id_exp, AFS_PART_ORIGINAL, url1, &url, NULL, &err));
  CHECK_STREQ(url, url2); /* already newer than the failed one: no call */
  free(url);
  CHECK(broker_calls == 1);
  broker_stop = 1;
  pthread_join(bt, NULL);

  /* No broker: an expired URL cannot be refreshed -> ETIMEDOUT, bounded. */
  time_t t0 = time(NULL);
  afs_error_clear(&err);
  CHECK(!afs_catalog_fresh_url(cat, id_exp2, AFS_PART_ORIGINAL, NULL, &url, NULL, &err));
  CHECK(err.code == ETIMEDOUT);
  CHECK(strstr(err.msg, "broker") != NULL);
  CHECK(time(NULL) - t0 <= 3);
  /* Deleted: ESTALE. */
  set_field(id_d2, "status", "deleted");
  afs_error_clear(&err);
  CHECK(!afs_catalog_fresh_url(cat, id_d2, AFS_PART_ORIGINAL, url1, &url, NULL, &err));
  CHECK(err.code == ESTALE);

  /* A big directory: a stale entry is served at once and re-listed in the background. */
  char big_id[AFS_OID_HEX] = "";
  for (int i = 0; i < 70; i++) {
    char fp[64];
    snprintf(fp, sizeof fp, "bigdir/f%02d.txt", i);
    put_asset("p1", fp, "uid1/bigdir/f-1.txt", "text/plain", 5, t, 24, 0, url1, NULL, NULL,
              i == 7 ? big_id : NULL);
  }
  CHECK(strlen(listing(cat, "p1", "bigdir")) > 0);
  {
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, big_id);
    bson_t *s = BCON_NEW("_id", BCON_OID(&oid));
    bson_t *u = BCON_NEW("$set", "{", "size", BCON_INT64(77), "}");
    CHECK(mongoc_collection_update_one(ASSETS, s, u, NULL, NULL, NULL));
    bson_destroy(s);
    bson_destroy(u);
  }
  usleep(700000);
  CHECK(afs_catalog_lookup(cat, "p1", "bigdir/f07.txt", &a, &err) == AFS_CAT_FILE);
  CHECK(a.size == 5); /* stale, served at once */
  afs_asset_free(&a);
  bool updated = false;
  for (int i = 0; i < 50 && !updated; i++) {
    usleep(100000);
    CHECK(afs_catalog_lookup(cat, "p1", "bigdir/f07.txt", &a, &err) == AFS_CAT_FILE);
    updated = a.size == 77;
    afs_asset_free(&a);
  }
  CHECK(updated);

  afs_catalog_invalidate_all(cat);
  CHECK_STREQ(listing(cat, "p1", "photos"), "cat.jpg");
  afs_catalog_free(cat);
  test_negative(url1);

  mongoc_database_t *d = mongoc_client_get_database(CLIENT, dbname);
  mongoc_database_drop(d, NULL);
  mongoc_database_destroy(d);
  mongoc_collection_destroy(ASSETS);
  mongoc_collection_destroy(CALLS);
  afs_db_push(&DB, CLIENT);
  afs_db_close(&DB);
  httpd_stop(&H);
  TEST_MAIN_END();
}
