/* The objects of a record: whose they are (a record's `path`, confinement to the uid's
 * prefix, trust in unsealed records, sharing between records) and their removal. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"
#include "bstore.h"

bool afs_broker_path_shared(struct afs_bstore *st, const bson_value_t *id, const char *path) {
  struct afs_error err = {0};
  int rc = st->ops->path_used(st->ctx, AFS_BC_ASSET, id, &path, 1, NULL, &err);
  return rc != 0; /* -1 (error) counts as shared: keep the bytes */
}

int afs_broker_record_path(const struct afs_record *r, const char **path) {
  *path = NULL;
  if (r->bad & AFS_RF_BIT(AFS_RF_PATH))
    return -1;
  *path = r->path;
  return r->path && *r->path ? 1 : 0;
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

bool afs_broker_path_trusted(const struct afs_broker *b, const struct afs_record *r) {
  const char *path = NULL;
  if (r->has_seal)
    return afs_broker_seal_ok(b, r);
  afs_broker_record_path(r, &path);
  return under_prefix(path, r->uid);
}

bool afs_broker_delete_objects(struct afs_broker *b, struct afs_bstore *st,
                               const struct afs_record *r, const char *const *keep,
                               struct afs_error *err) {
  const char *path = NULL;
  int has_path = afs_broker_record_path(r, &path);
  if (has_path == 0)
    return true; /* nothing was ever signed */
  if (has_path < 0)
    return afs_error_set(err, AFS_E_UNTRUSTED,
                         "path is not a usable S3 key (not a string, or over %d bytes); no "
                         "object of ours can be there",
                         AFS_KEY_MAX);
  if (r->has_seal ? !afs_broker_seal_ok(b, r) : !under_prefix(path, r->uid))
    return afs_error_set(err, AFS_E_UNTRUSTED,
                         "refusing to delete objects of a record whose path/uid/contentType "
                         "were changed after the broker set them");
  struct afs_keys k;
  afs_broker_asset_keys(b, r, &k);
  bool ok = afs_broker_delete_keys(st, &k, keep, err);
  afs_keys_free(&k);
  return ok;
}

bool afs_broker_delete_keys(struct afs_bstore *st, const struct afs_keys *k,
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
  return n == 0 || st->ops->obj_delete(st->ctx, keys, n, err);
}
