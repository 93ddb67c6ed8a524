/* The S3 keys of an existing asset/upload record, for refreshing and deleting it.
 *
 * Records the broker made (sealed) follow our naming, so their keys are rebuilt from
 * `path`. Records made by Cosync itself (no seal, path under the uid's prefix) may not:
 * Cosync's video preview key ends in "-.png", and its refresh/remove rebuilt preview keys
 * as "uid//dir/..." (cosync-storage.md §2.4-2.6, §4 items 5-6). For those, each cut's and
 * the preview's key is taken from the path of its stored URL (query, endpoint and bucket
 * dropped, URL-decoded), and kept only when it lies under the same uid prefix; otherwise,
 * or without a URL, the naming rules give it. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/records.h"
#include "broker.h"

/* Removes empty components ("a//b" -> "a/b") in place: Cosync's rebuilt preview URLs
 * name "uid//dir/..." while the object lies at "uid/dir/...". */
static void squeeze_slashes(char *s) {
  char *o = s;
  for (const char *c = s; *c; c++)
    if (!(*c == '/' && (o == s || o[-1] == '/')))
      *o++ = *c;
  *o = '\0';
}

/* Key behind URL under uid's prefix, malloc'd; NULL if it has none. Both path-style
 * ("/<bucket>/<key>") and virtual-hosted ("/<key>") URLs are understood. */
static char *key_from_url(const char *url, const char *bucket, const char *uid) {
  char *path = NULL, *key = NULL;
  CURLU *h = curl_url();
  if (!h)
    return NULL;
  if (curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
      curl_url_get(h, CURLUPART_PATH, &path, CURLU_URLDECODE) != CURLUE_OK || !path)
    goto done;
  squeeze_slashes(path);
  const char *p = path[0] == '/' ? path + 1 : path;
  size_t bl = bucket ? strlen(bucket) : 0;
  if (!afs_broker_key_confined(p, uid) && bl && !strncmp(p, bucket, bl) && p[bl] == '/')
    p += bl + 1;
  if (afs_broker_key_confined(p, uid) && strlen(p) <= AFS_KEY_MAX)
    key = strdup(p);
done:
  curl_free(path);
  curl_url_cleanup(h);
  return key;
}

bool afs_broker_asset_keys(const struct afs_broker *b, const struct afs_record *r,
                           struct afs_keys *out) {
  const char *path = NULL, *uid = r->uid;
  memset(out, 0, sizeof *out);
  if (afs_broker_record_path(r, &path) != 1)
    return false;
  afs_naming_keys_from_path(path, r->content_type, out);
  /* A cut's key is longer than its original's: near the limit (possible only in records
   * Cosync made) it can pass S3's limit, and no object can live there. */
  for (int p = 0; p < AFS_PART_COUNT; p++)
    if (out->key[p] && strlen(out->key[p]) > AFS_KEY_MAX) {
      free(out->key[p]);
      out->key[p] = NULL;
    }
  if (r->has_seal || !uid || !afs_broker_key_confined(path, uid))
    return true;
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    const char *url = r->read_url[p];
    if (p == AFS_PART_ORIGINAL || !out->key[p] || !url || !*url)
      continue;
    char *k = key_from_url(url, b->cfg.s3_bucket, uid);
    if (k) {
      free(out->key[p]);
      out->key[p] = k;
    }
  }
  return true;
}
