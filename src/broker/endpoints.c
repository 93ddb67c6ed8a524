/* Publishes the URL origins this broker signs for (see endpoints.h): once at startup,
 * from main.c, so a mount can tell the bucket's URLs from anything else a record may
 * name. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/cosync.h"
#include "assetfs/endpoints.h"
#include "assetfs/log.h"
#include "assetfs/sigv4.h"

/* Adds url's origin to list (no duplicates). */
static void add_origin(const char *url, const char *what, char list[][300], int *n, int max) {
  struct afs_origin o;
  struct afs_error err = {0};
  if (!url)
    return;
  if (!afs_origin_parse(url, &o, &err)) {
    char shown[300];
    afs_origin_describe(url, shown, sizeof shown);
    afs_warn("%s %s is not a URL mounts can use: %s", what, shown, err.msg);
    return;
  }
  char s[300];
  afs_origin_format(&o, s, sizeof s);
  for (int i = 0; i < *n; i++)
    if (!strcmp(list[i], s))
      return;
  if (*n < max)
    snprintf(list[(*n)++], 300, "%s", s);
}

bool afs_endpoints_publish(struct afs_db *db, const struct afs_config *cfg,
                           const struct afs_s3_target *t) {
  char list[4][300];
  int n = 0;
  /* What the broker puts in records: signed object URLs (any key has the same origin)
   * and, for public assets, URLs under public_base_url. */
  char *obj = afs_s3_object_url(t, "k");
  add_origin(obj, "the S3 object URL", list, &n, 4);
  free(obj);
  if (cfg->public_base_url && *cfg->public_base_url)
    add_origin(cfg->public_base_url, "public_base_url", list, &n, 4);
  if (n == 0) {
    afs_warn("no URL origin to publish: mounts will refuse this broker's URLs unless given "
             "-o url_hosts");
    return false;
  }
  bson_t *sel = BCON_NEW(AFS_F_ID, BCON_UTF8(AFS_ENDPOINTS_ID));
  /* origins only grows: records keep URLs signed before a change of endpoint until they
   * expire, and a mount must still read them (an operator removes a retired origin by
   * hand). current: what this broker signs now. */
  bson_t upd = BSON_INITIALIZER, set, add, each, cur, arr;
  BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
  BSON_APPEND_ARRAY_BEGIN(&set, "current", &cur);
  for (int i = 0; i < n; i++) {
    char k[16];
    snprintf(k, sizeof k, "%d", i);
    BSON_APPEND_UTF8(&cur, k, list[i]);
  }
  bson_append_array_end(&set, &cur);
  BSON_APPEND_DATE_TIME(&set, AFS_F_UPDATED, (int64_t)time(NULL) * 1000);
  BSON_APPEND_UTF8(&set, "broker", "assetfs-broker " ASSETFS_VERSION);
  bson_append_document_end(&upd, &set);
  BSON_APPEND_DOCUMENT_BEGIN(&upd, "$addToSet", &add);
  BSON_APPEND_DOCUMENT_BEGIN(&add, "origins", &each);
  BSON_APPEND_ARRAY_BEGIN(&each, "$each", &arr);
  for (int i = 0; i < n; i++) {
    char k[16];
    snprintf(k, sizeof k, "%d", i);
    BSON_APPEND_UTF8(&arr, k, list[i]);
  }
  bson_append_array_end(&each, &arr);
  bson_append_document_end(&add, &each);
  bson_append_document_end(&upd, &add);
  bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));
  bson_error_t berr;
  mongoc_client_t *c = afs_db_pop(db);
  mongoc_collection_t *coll = afs_db_coll(db, c, AFS_COLL_CONFIG);
  bool ok = mongoc_collection_update_one(coll, sel, &upd, opts, NULL, &berr);
  mongoc_collection_destroy(coll);
  afs_db_push(db, c);
  bson_destroy(sel);
  bson_destroy(&upd);
  bson_destroy(opts);
  char shown[1300] = "";
  size_t k = 0;
  for (int i = 0; i < n; i++)
    k += (size_t)snprintf(shown + k, sizeof shown - k, "%s%s", i ? " " : "", list[i]);
  if (!ok) {
    afs_warn("cannot publish the URL origins (%s) in %s: %s; mounts will refuse this "
             "broker's URLs unless given -o url_hosts",
             shown, AFS_COLL_CONFIG, berr.message);
    return false;
  }
  afs_info("URL origins for mounts: %s", shown);
  return true;
}
