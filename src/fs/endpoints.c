/* The mount's allowed URL origins (see endpoints.h): the broker's published record plus
 * -o url_hosts, installed into src/http (http_allow.h) before the mount, and reloaded
 * from MongoDB when a URL names an origin not known yet. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/cosync.h"
#include "assetfs/endpoints.h"
#include "assetfs/http_allow.h"
#include "assetfs/log.h"

/* A record naming an unknown origin costs at most one read of this record a second. */
#define RELOAD_MIN_MS 1000

void afs_endpoints_parse_doc(const bson_t *doc, struct afs_origin **out, size_t *n) {
  bson_iter_t it, arr;
  *out = NULL;
  *n = 0;
  if (!doc || !bson_iter_init_find(&it, doc, "origins") || !BSON_ITER_HOLDS_ARRAY(&it) ||
      !bson_iter_recurse(&it, &arr))
    return;
  size_t cap = 0;
  while (bson_iter_next(&arr)) {
    struct afs_origin o;
    struct afs_error err = {0};
    const char *s = BSON_ITER_HOLDS_UTF8(&arr) ? bson_iter_utf8(&arr, NULL) : NULL;
    if (!s || !afs_origin_parse(s, &o, &err)) {
      char shown[300];
      afs_origin_describe(s ? s : "(not a string)", shown, sizeof shown);
      afs_warn("%s record: origin %s skipped: %s", AFS_COLL_CONFIG, shown,
               s ? err.msg : "not a string");
      continue;
    }
    if (*n == cap) {
      cap = cap ? 2 * cap : 4;
      struct afs_origin *bigger = afs_xrealloc(*out, cap * sizeof *bigger);
      *out = bigger;
    }
    (*out)[(*n)++] = o;
  }
}

/* Reads the record with client c. false with err when MongoDB did not answer. */
static bool load(mongoc_client_t *c, const char *dbname, struct afs_origin **out, size_t *n,
                 struct afs_error *err) {
  *out = NULL;
  *n = 0;
  mongoc_collection_t *coll = mongoc_client_get_collection(c, dbname, AFS_COLL_CONFIG);
  bson_t *filter = BCON_NEW(AFS_F_ID, BCON_UTF8(AFS_ENDPOINTS_ID));
  bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
  const bson_t *doc;
  bson_error_t berr;
  bool ok = true;
  if (mongoc_cursor_next(cur, &doc))
    afs_endpoints_parse_doc(doc, out, n);
  if (mongoc_cursor_error(cur, &berr))
    ok = afs_db_error(err, &berr, "cannot read the broker's URL origins");
  mongoc_cursor_destroy(cur);
  bson_destroy(filter);
  bson_destroy(opts);
  mongoc_collection_destroy(coll);
  return ok;
}

static bool reload(void *ctx, struct afs_origin **out, size_t *n, struct afs_error *err) {
  struct afs_db *db = ctx;
  mongoc_client_t *c = afs_db_pop(db);
  bool ok = load(c, db->dbname, out, n, err);
  afs_db_push(db, c);
  if (ok) {
    char one[300];
    for (size_t i = 0; i < *n; i++) {
      afs_origin_format(&(*out)[i], one, sizeof one);
      afs_debug("allowed URL origin (reloaded): %s", one);
    }
  }
  return ok;
}

static void list_text(const struct afs_origin *l, size_t n, char *out, size_t cap) {
  size_t k = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n && k < cap - 1; i++) {
    char one[300];
    afs_origin_format(&l[i], one, sizeof one);
    k += (size_t)snprintf(out + k, cap - k, "%s%s", k ? " " : "", one);
  }
}

bool afs_fs_endpoints_init(struct afs_db *db, const char *mongo_uri, const char *const *url_hosts,
                           bool url_hosts_only, struct afs_error *err) {
  size_t nfixed = 0;
  for (const char *const *p = url_hosts; p && *p; p++)
    nfixed++;
  struct afs_origin *fixed = nfixed ? calloc(nfixed, sizeof *fixed) : NULL;
  for (size_t i = 0; i < nfixed; i++) {
    struct afs_error perr = {0};
    if (!afs_origin_parse(url_hosts[i], &fixed[i], &perr)) {
      char shown[300];
      afs_origin_describe(url_hosts[i], shown, sizeof shown);
      free(fixed);
      return afs_error_set(err, EINVAL, "url_hosts: %s is not an http(s) origin: %s", shown,
                           perr.msg);
    }
  }
  struct afs_origin *loaded = NULL;
  size_t nloaded = 0;
  struct afs_error lerr = {0};
  bool read_ok = true;
  if (!url_hosts_only) {
    bson_error_t berr;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(mongo_uri, &berr);
    mongoc_client_t *c = NULL;
    if (uri) {
      mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
      c = mongoc_client_new_from_uri(uri);
      mongoc_uri_destroy(uri);
    }
    if (!c)
      read_ok = afs_error_set(&lerr, EINVAL, "invalid MongoDB URI");
    else
      read_ok = load(c, db->dbname, &loaded, &nloaded, &lerr);
    if (c)
      mongoc_client_destroy(c);
  }
  char fixed_s[1024], loaded_s[1024];
  list_text(fixed, nfixed, fixed_s, sizeof fixed_s);
  list_text(loaded, nloaded, loaded_s, sizeof loaded_s);
  if (nfixed + nloaded == 0)
    afs_warn("no allowed URL origins: the broker has not published its %s record in "
             "database %s%s%s (an older broker, or none started yet) and no -o url_hosts "
             "was given; reads and uploads are refused (EACCES) until a broker publishes it",
             AFS_COLL_CONFIG, db->dbname, read_ok ? "" : ": ", read_ok ? "" : lerr.msg);
  else if (url_hosts_only)
    afs_info("URLs allowed only on %s (url_hosts_only)", fixed_s);
  else
    afs_info("URLs allowed on: %s%s%s%s", loaded_s, *loaded_s && *fixed_s ? " " : "",
             *fixed_s ? "and url_hosts " : "", fixed_s);
  afs_http_allow_install(fixed, nfixed, loaded, nloaded, url_hosts_only ? NULL : reload, db,
                         RELOAD_MIN_MS);
  free(fixed);
  free(loaded);
  return true;
}
