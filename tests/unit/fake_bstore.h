/* An in-memory broker store (src/broker/bstore.h) for unit tests: upload, asset and call
 * records as BSON documents with the lease rules of store/lease.c, key claims, objects
 * with sizes, injectable outages per operation and a hook that runs before each one (to
 * act as a client would between two of the broker's steps). Header only; one per test
 * program. */
#ifndef FAKE_BSTORE_H
#define FAKE_BSTORE_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/config.h"
#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/records.h"
#include "broker.h"
#include "bstore.h"

#define FB_MAX 64

enum fb_op {
  FB_FINISH,
  FB_RENEW,
  FB_RELEASE,
  FB_REMOVE,
  FB_GET,
  FB_ASSET_SET,
  FB_ASSET_UPSERT,
  FB_ASSETS_AT,
  FB_PATH_USED,
  FB_CLAIMS_TAKE,
  FB_CLAIMS_RELEASE,
  FB_CLAIMS_HELD,
  FB_OBJ_HEAD,
  FB_OBJ_DELETE,
  FB_UPLOAD_SET,
  FB_MP_CREATE,
  FB_MP_COMPLETE,
  FB_MP_ABORT,
  FB_MP_COPY,
  FB_OPS
};

struct fb_claim {
  char *key;
  bson_value_t rec;
};

struct fb_object {
  char *key;
  int64_t size;
  char etag[64]; /* "" : "etag-<size>" */
};

/* A multipart upload the broker started. */
struct fb_mpu {
  char *key, id[32];
  bool aborted, completed;
  size_t nparts;     /* of the Complete */
  char etags[8][32]; /* the first ones it listed */
  int ncopies;       /* UploadPartCopy calls */
  char copy_src[64]; /* the last one's source key and range */
  int64_t copy_off, copy_len;
};

struct fake_bstore {
  bson_t *rec[AFS_BC_COUNT][FB_MAX]; /* NULL slots are free */
  struct fb_claim claim[FB_MAX];
  int nclaims;
  struct fb_object obj[FB_MAX];
  int nobj;
  struct fb_mpu mpu[8];
  int nmpu;
  int complete_fails; /* mp_complete fails with this code (ENOENT: NoSuchUpload, EIO: a bad
                       * part, AFS_E_TRANSIENT) instead; 0: it assembles */
  bool down[FB_OPS];  /* this operation fails as an unreachable server would */
  int calls[FB_OPS];  /* how often each ran */
  void (*before)(struct fake_bstore *f, enum fb_op op); /* runs first in every operation */
  void *arg;                                            /* for `before` */
};

static bool fb_enter(struct fake_bstore *f, enum fb_op op, struct afs_error *err) {
  f->calls[op]++;
  if (f->before)
    f->before(f, op);
  if (!f->down[op])
    return true;
  if (op == FB_OBJ_HEAD || op == FB_OBJ_DELETE || op >= FB_MP_CREATE)
    afs_error_set(err, AFS_E_UNREACHABLE, "S3: connection refused (fake outage)");
  else
    afs_error_set(err, AFS_E_UNREACHABLE, "MongoDB: no suitable servers (fake outage)");
  return false;
}

static bool fb_id_is(const bson_t *d, const bson_value_t *id) {
  bson_iter_t it;
  return bson_iter_init_find(&it, d, AFS_F_ID) && afs_rec_id_equal(bson_iter_value(&it), id);
}

/* The slot of record id in coll, or -1. */
static int fb_slot(struct fake_bstore *f, enum afs_bcoll coll, const bson_value_t *id) {
  for (int i = 0; i < FB_MAX; i++)
    if (f->rec[coll][i] && fb_id_is(f->rec[coll][i], id))
      return i;
  return -1;
}

static const char *fb_str(const bson_t *d, const char *field) {
  bson_iter_t it;
  return bson_iter_init_find(&it, d, field) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL)
                                                                         : NULL;
}

static bool fb_str_is(const bson_t *d, const char *field, const char *want) {
  const char *v = fb_str(d, field);
  return v && want && !strcmp(v, want);
}

static bool fb_leased(const bson_t *d) {
  bson_iter_t it;
  return bson_iter_init_find(&it, d, AFS_F_LEASE_UNTIL) && BSON_ITER_HOLDS_DATE_TIME(&it) &&
         bson_iter_date_time(&it) > afs_now_ms();
}

/* d with the fields of set replaced or added and those of unset and drop (NULL-ended
 * names, may be NULL) removed: a new document; d is destroyed. */
static bson_t *fb_apply(bson_t *d, const bson_t *set, const bson_t *unset,
                        const char *const *drop) {
  bson_t *o = bson_new();
  bson_iter_t it;
  bson_iter_init(&it, d);
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    bool gone = (set && bson_has_field(set, k)) || (unset && bson_has_field(unset, k));
    for (size_t i = 0; drop && drop[i] && !gone; i++)
      gone = !strcmp(drop[i], k);
    if (!gone)
      bson_append_value(o, k, -1, bson_iter_value(&it));
  }
  if (set) {
    bson_iter_init(&it, set);
    while (bson_iter_next(&it))
      bson_append_value(o, bson_iter_key(&it), -1, bson_iter_value(&it));
  }
  bson_destroy(d);
  return o;
}

static const char *const fb_lease_fields[] = {AFS_F_LEASE_OWNER, AFS_F_LEASE_UNTIL, NULL};

/* A field both set and unset (or set on insert): MongoDB refuses such an update, so the
 * fake does too, and a handler that builds one fails its test. */
static bool fb_conflict(const bson_t *a, const bson_t *b, struct afs_error *err) {
  bson_iter_t it;
  if (!a || !b || !bson_iter_init(&it, a))
    return false;
  while (bson_iter_next(&it))
    if (bson_has_field(b, bson_iter_key(&it))) {
      afs_error_set(err, EINVAL, "MongoDB: conflicting update of '%s' (fake)", bson_iter_key(&it));
      return true;
    }
  return false;
}

/* ---- leases ---- */

static int fb_finish(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                     const char *from_status, const bson_t *set, const bson_t *unset, bson_t *after,
                     struct afs_error *err) {
  struct fake_bstore *f = ctx;
  if (after)
    bson_init(after);
  if (!fb_enter(f, FB_FINISH, err))
    return -1;
  if (fb_conflict(set, unset, err))
    return -1;
  int i = fb_slot(f, coll, id);
  if (i < 0)
    return 0;
  bson_t *d = f->rec[coll][i];
  if (token ? !fb_str_is(d, AFS_F_LEASE_OWNER, token) : fb_leased(d))
    return 0;
  if (from_status && !fb_str_is(d, AFS_F_STATUS, from_status)) {
    if (token) /* moved on: the lease goes back, as lease.c does */
      f->rec[coll][i] = fb_apply(d, NULL, NULL, fb_lease_fields);
    return 0;
  }
  f->rec[coll][i] = fb_apply(d, set, unset, fb_lease_fields);
  if (after && !from_status) {
    bson_destroy(after);
    bson_copy_to(f->rec[coll][i], after);
  }
  return 1;
}

static int fb_renew(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                    const char *status, long lease_ms, bson_t *after, struct afs_error *err) {
  struct fake_bstore *f = ctx;
  bson_init(after);
  if (!fb_enter(f, FB_RENEW, err))
    return -1;
  int i = fb_slot(f, coll, id);
  if (i < 0 || !token || !fb_str_is(f->rec[coll][i], AFS_F_LEASE_OWNER, token) ||
      (status && !fb_str_is(f->rec[coll][i], AFS_F_STATUS, status)))
    return 0;
  bson_t *set = BCON_NEW(AFS_F_LEASE_UNTIL, BCON_DATE_TIME(afs_now_ms() + lease_ms));
  f->rec[coll][i] = fb_apply(f->rec[coll][i], set, NULL, NULL);
  bson_destroy(set);
  bson_destroy(after);
  bson_copy_to(f->rec[coll][i], after);
  return 1;
}

static void fb_release(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                       const char *status, long delay_ms) {
  struct fake_bstore *f = ctx;
  struct afs_error err = {0};
  if (!fb_enter(f, FB_RELEASE, &err))
    return;
  int i = fb_slot(f, coll, id);
  if (i < 0)
    return;
  bson_t *d = f->rec[coll][i];
  if (token ? !fb_str_is(d, AFS_F_LEASE_OWNER, token)
            : (!status || fb_leased(d) || !fb_str_is(d, AFS_F_STATUS, status)))
    return;
  bson_t *set = BCON_NEW(AFS_F_LEASE_UNTIL, BCON_DATE_TIME(afs_now_ms() + delay_ms));
  static const char *const owner[] = {AFS_F_LEASE_OWNER, NULL};
  f->rec[coll][i] = fb_apply(d, set, NULL, owner);
  bson_destroy(set);
}

static int fb_remove(void *ctx, enum afs_bcoll coll, const bson_value_t *id, const char *token,
                     struct afs_error *err) {
  struct fake_bstore *f = ctx;
  if (!fb_enter(f, FB_REMOVE, err))
    return -1;
  int i = fb_slot(f, coll, id);
  if (i < 0 || (token && !fb_str_is(f->rec[coll][i], AFS_F_LEASE_OWNER, token)))
    return 0;
  bson_destroy(f->rec[coll][i]);
  f->rec[coll][i] = NULL;
  return 1;
}

static bool fb_get(void *ctx, enum afs_bcoll coll, const bson_value_t *id, bool for_result,
                   bson_t **out, struct afs_error *err) {
  struct fake_bstore *f = ctx;
  *out = NULL;
  if (!fb_enter(f, FB_GET, err))
    return false;
  int i = fb_slot(f, coll, id);
  if (i < 0)
    return true;
  *out = bson_new();
  if (for_result)
    bson_copy_to_excluding_noinit(f->rec[coll][i], *out, AFS_F_LEASE_OWNER, AFS_F_LEASE_UNTIL,
                                  AFS_F_SEAL, NULL);
  else
    bson_concat(*out, f->rec[coll][i]);
  return true;
}

/* ---- assets ---- */

/* Every field of match equal in d (null: absent or null), as a MongoDB equality filter. */
static bool fb_matches(const bson_t *d, const bson_t *match) {
  bson_iter_t m, f;
  bson_iter_init(&m, match);
  while (bson_iter_next(&m)) {
    bool has = bson_iter_init_find(&f, d, bson_iter_key(&m)) && !BSON_ITER_HOLDS_NULL(&f);
    if (BSON_ITER_HOLDS_NULL(&m)) {
      if (has)
        return false;
      continue;
    }
    if (!has)
      return false;
    const bson_value_t *a = bson_iter_value(&m);
    bson_value_t av;
    bson_value_copy(a, &av);
    const bson_value_t *b = bson_iter_value(&f);
    bool eq = av.value_type == b->value_type;
    if (eq && av.value_type == BSON_TYPE_UTF8)
      eq = av.value.v_utf8.len == b->value.v_utf8.len &&
           !memcmp(av.value.v_utf8.str, b->value.v_utf8.str, av.value.v_utf8.len);
    else if (eq && av.value_type == BSON_TYPE_DATE_TIME)
      eq = av.value.v_datetime == b->value.v_datetime;
    else if (eq && av.value_type == BSON_TYPE_INT64)
      eq = av.value.v_int64 == b->value.v_int64;
    else if (eq && av.value_type == BSON_TYPE_INT32)
      eq = av.value.v_int32 == b->value.v_int32;
    else if (eq && av.value_type == BSON_TYPE_DOUBLE)
      eq = av.value.v_double == b->value.v_double;
    else if (eq && av.value_type == BSON_TYPE_OID)
      eq = !bson_oid_compare(&av.value.v_oid, &b->value.v_oid);
    bson_value_destroy(&av);
    if (!eq)
      return false;
  }
  return true;
}

/* $set of `set` on record id of coll under cond, as the live store's set_where. */
static bool fb_set_where(struct fake_bstore *f, enum fb_op op, enum afs_bcoll coll,
                         const bson_value_t *id, const struct afs_bcond *cond, const bson_t *set,
                         bool *matched, struct afs_error *err) {
  *matched = false;
  if (!fb_enter(f, op, err))
    return false;
  int i = fb_slot(f, coll, id);
  if (i < 0)
    return true;
  bson_t *d = f->rec[coll][i];
  const char *status = fb_str(d, AFS_F_STATUS);
  if (cond && ((cond->status_is && !fb_str_is(d, AFS_F_STATUS, cond->status_is)) ||
               (cond->status_not && status && !strcmp(status, cond->status_not)) ||
               (cond->file_path_is && !fb_str_is(d, AFS_F_FILE_PATH, cond->file_path_is)) ||
               (cond->match && !fb_matches(d, cond->match))))
    return true;
  f->rec[coll][i] = fb_apply(d, set, NULL, NULL);
  *matched = true;
  return true;
}

static bool fb_asset_set(void *ctx, const bson_value_t *id, const struct afs_bcond *cond,
                         const bson_t *set, bool *matched, struct afs_error *err) {
  return fb_set_where(ctx, FB_ASSET_SET, AFS_BC_ASSET, id, cond, set, matched, err);
}

/* Adds a copy of doc to coll. */
static inline void fb_add(struct fake_bstore *f, enum afs_bcoll coll, const bson_t *doc) {
  for (int i = 0; i < FB_MAX; i++)
    if (!f->rec[coll][i]) {
      f->rec[coll][i] = bson_copy(doc);
      return;
    }
  abort(); /* a test with more records than FB_MAX */
}

static int fb_asset_upsert(void *ctx, const bson_value_t *id, const bson_t *set,
                           const bson_t *unset, const bson_t *on_insert, struct afs_error *err) {
  struct fake_bstore *f = ctx;
  if (!fb_enter(f, FB_ASSET_UPSERT, err))
    return -1;
  if (fb_conflict(set, unset, err) || fb_conflict(set, on_insert, err) ||
      fb_conflict(unset, on_insert, err))
    return -1;
  int i = fb_slot(f, AFS_BC_ASSET, id);
  if (i >= 0 && fb_str_is(f->rec[AFS_BC_ASSET][i], AFS_F_STATUS, AFS_ASSET_DELETED))
    return 0;
  if (i >= 0) {
    f->rec[AFS_BC_ASSET][i] = fb_apply(f->rec[AFS_BC_ASSET][i], set, unset, NULL);
    return 1;
  }
  bson_t *d = bson_new();
  bson_append_value(d, AFS_F_ID, 3, id);
  d = fb_apply(d, set, NULL, NULL);
  d = fb_apply(d, on_insert, NULL, NULL);
  fb_add(f, AFS_BC_ASSET, d);
  bson_destroy(d);
  return 1;
}

static bool fb_assets_at(void *ctx, const char *partition, const char *file_path, bson_t ***docs,
                         size_t *n, struct afs_error *err) {
  struct fake_bstore *f = ctx;
  *docs = NULL;
  *n = 0;
  if (!fb_enter(f, FB_ASSETS_AT, err))
    return false;
  *docs = afs_xcalloc(FB_MAX, sizeof **docs);
  for (int i = 0; i < FB_MAX; i++) {
    bson_t *d = f->rec[AFS_BC_ASSET][i];
    if (d && fb_str_is(d, AFS_F_PARTITION, partition) && fb_str_is(d, AFS_F_FILE_PATH, file_path) &&
        fb_str_is(d, AFS_F_STATUS, AFS_ASSET_ACTIVE))
      (*docs)[(*n)++] = bson_copy(d);
  }
  return true;
}

static int fb_path_used(void *ctx, enum afs_bcoll coll, const bson_value_t *id,
                        const char *const *paths, size_t n, const char *parent,
                        struct afs_error *err) {
  struct fake_bstore *f = ctx;
  if (!fb_enter(f, FB_PATH_USED, err))
    return -1;
  for (int i = 0; i < FB_MAX; i++) {
    bson_t *d = f->rec[coll][i];
    const char *p = d ? fb_str(d, AFS_F_PATH) : NULL;
    if (!p || (id && fb_id_is(d, id)))
      continue;
    for (size_t j = 0; j < n; j++)
      if (!strcmp(p, paths[j]))
        return 1;
    size_t pl = parent ? strlen(parent) : 0;
    if (parent && !strncmp(p, parent, pl) && (!p[pl] || (p[pl] == '.' && !strchr(p + pl, '/'))))
      return 1;
  }
  return 0;
}

/* ---- key claims ---- */

static int fb_claim_of(struct fake_bstore *f, const char *key) {
  for (int i = 0; i < f->nclaims; i++)
    if (!strcmp(f->claim[i].key, key))
      return i;
  return -1;
}

static void fb_claims_release(void *ctx, const bson_value_t *rec, const char *const *keys,
                              size_t n) {
  struct fake_bstore *f = ctx;
  struct afs_error err = {0};
  if (!fb_enter(f, FB_CLAIMS_RELEASE, &err))
    return;
  for (size_t j = 0; j < n; j++) {
    int i = fb_claim_of(f, keys[j]);
    if (i < 0 || !afs_rec_id_equal(&f->claim[i].rec, rec))
      continue;
    free(f->claim[i].key);
    bson_value_destroy(&f->claim[i].rec);
    f->claim[i] = f->claim[--f->nclaims];
  }
}

static int fb_claims_take(void *ctx, const bson_value_t *rec, const char *const *keys, size_t n,
                          struct afs_error *err) {
  struct fake_bstore *f = ctx;
  if (!fb_enter(f, FB_CLAIMS_TAKE, err))
    return -1;
  const char *made[AFS_PART_COUNT];
  size_t m = 0;
  for (size_t j = 0; j < n; j++) {
    int i = fb_claim_of(f, keys[j]);
    if (i >= 0 && afs_rec_id_equal(&f->claim[i].rec, rec))
      continue;
    if (i >= 0) {
      f->calls[FB_CLAIMS_RELEASE]--; /* not the broker's own release */
      fb_claims_release(f, rec, made, m);
      afs_error_set(err, EEXIST, "a key is claimed by another record");
      return 0;
    }
    f->claim[f->nclaims].key = afs_xstrdup(keys[j]);
    bson_value_copy(rec, &f->claim[f->nclaims++].rec);
    made[m++] = keys[j];
  }
  return 1;
}

static int fb_claims_held(void *ctx, const bson_value_t *rec, char ***keys, size_t *n,
                          struct afs_error *err) {
  struct fake_bstore *f = ctx;
  *keys = NULL;
  *n = 0;
  if (!fb_enter(f, FB_CLAIMS_HELD, err))
    return -1;
  for (int i = 0; i < f->nclaims; i++)
    if (afs_rec_id_equal(&f->claim[i].rec, rec)) {
      *keys = afs_xrealloc(*keys, (*n + 1) * sizeof **keys);
      (*keys)[(*n)++] = afs_xstrdup(f->claim[i].key);
    }
  return *n ? 1 : 0;
}

/* ---- objects ---- */

static int fb_obj_of(struct fake_bstore *f, const char *key) {
  for (int i = 0; i < f->nobj; i++)
    if (!strcmp(f->obj[i].key, key))
      return i;
  return -1;
}

/* Puts an object of `size` bytes at key (as a client's PUT would). */
static inline void fb_put(struct fake_bstore *f, const char *key, int64_t size) {
  int i = fb_obj_of(f, key);
  if (i < 0) {
    i = f->nobj++;
    f->obj[i].key = afs_xstrdup(key);
  }
  f->obj[i].size = size;
  f->obj[i].etag[0] = '\0';
}

static bool fb_obj_head(void *ctx, const char *key, struct afs_s3_object_info *info,
                        struct afs_error *err) {
  struct fake_bstore *f = ctx;
  memset(info, 0, sizeof *info);
  if (!fb_enter(f, FB_OBJ_HEAD, err))
    return false;
  int i = fb_obj_of(f, key);
  if (i >= 0) {
    info->exists = true;
    info->size = f->obj[i].size;
    if (f->obj[i].etag[0])
      snprintf(info->etag, sizeof info->etag, "%s", f->obj[i].etag);
    else
      snprintf(info->etag, sizeof info->etag, "etag-%lld", (long long)f->obj[i].size);
  }
  return true;
}

static bool fb_obj_delete(void *ctx, const char *const *keys, size_t n, struct afs_error *err) {
  struct fake_bstore *f = ctx;
  if (!fb_enter(f, FB_OBJ_DELETE, err))
    return false;
  for (size_t j = 0; j < n; j++) {
    int i = fb_obj_of(f, keys[j]);
    if (i >= 0) {
      free(f->obj[i].key);
      f->obj[i] = f->obj[--f->nobj];
    }
  }
  return true;
}

/* ---- multipart ---- */

static bool fb_upload_set(void *ctx, const bson_value_t *id, const struct afs_bcond *cond,
                          const bson_t *set, bool *matched, struct afs_error *err) {
  return fb_set_where(ctx, FB_UPLOAD_SET, AFS_BC_UPLOAD, id, cond, set, matched, err);
}

static struct fb_mpu *fb_mpu_of(struct fake_bstore *f, const char *id) {
  for (int i = 0; i < f->nmpu; i++)
    if (!strcmp(f->mpu[i].id, id))
      return &f->mpu[i];
  return NULL;
}

static bool fb_mp_create(void *ctx, const char *key, const char *content_type, char **upload_id,
                         struct afs_error *err) {
  struct fake_bstore *f = ctx;
  (void)content_type;
  if (!fb_enter(f, FB_MP_CREATE, err))
    return false;
  struct fb_mpu *u = &f->mpu[f->nmpu++];
  memset(u, 0, sizeof *u);
  u->key = afs_xstrdup(key);
  snprintf(u->id, sizeof u->id, "mpu-%d", f->nmpu);
  *upload_id = afs_xstrdup(u->id);
  return true;
}

static bool fb_mp_complete(void *ctx, const char *key, const char *upload_id,
                           const struct afs_s3_part *parts, size_t n, char *etag_out,
                           struct afs_error *err) {
  struct fake_bstore *f = ctx;
  if (!fb_enter(f, FB_MP_COMPLETE, err))
    return false;
  struct fb_mpu *u = fb_mpu_of(f, upload_id);
  if (!u || u->aborted || u->completed || strcmp(u->key, key) || f->complete_fails == ENOENT)
    return afs_error_set(err, ENOENT, "S3 CompleteMultipartUpload %s: HTTP 404 NoSuchUpload", key);
  if (f->complete_fails)
    return afs_error_set(err, f->complete_fails, "S3 CompleteMultipartUpload %s: HTTP %s", key,
                         f->complete_fails == EIO ? "400 InvalidPart" : "503 SlowDown");
  u->completed = true;
  u->nparts = n;
  for (size_t i = 0; i < n && i < 8; i++)
    snprintf(u->etags[i], sizeof u->etags[i], "%s", parts[i].etag);
  fb_put(f, key, (int64_t)n * 100);
  snprintf(f->obj[fb_obj_of(f, key)].etag, sizeof f->obj[0].etag, "mp-%zu", n);
  snprintf(etag_out, 130, "mp-%zu", n);
  return true;
}

static bool fb_mp_abort(void *ctx, const char *key, const char *upload_id, struct afs_error *err) {
  struct fake_bstore *f = ctx;
  (void)key;
  if (!fb_enter(f, FB_MP_ABORT, err))
    return false;
  struct fb_mpu *u = fb_mpu_of(f, upload_id);
  if (u)
    u->aborted = true;
  return true;
}

static bool fb_mp_copy(void *ctx, const char *key, const char *upload_id, int number,
                       const char *src_key, int64_t off, int64_t len, char *etag_out,
                       struct afs_error *err) {
  struct fake_bstore *f = ctx;
  if (!fb_enter(f, FB_MP_COPY, err))
    return false;
  struct fb_mpu *u = fb_mpu_of(f, upload_id);
  if (!u || u->aborted || u->completed || strcmp(u->key, key))
    return afs_error_set(err, ENOENT, "S3 UploadPartCopy %s: HTTP 404 NoSuchUpload", key);
  int i = fb_obj_of(f, src_key);
  if (i < 0)
    return afs_error_set(err, ENOENT, "S3 UploadPartCopy %s: HTTP 404 NoSuchKey", key);
  if (off + len > f->obj[i].size)
    return afs_error_set(err, EIO, "S3 UploadPartCopy %s: HTTP 416 InvalidRange", key);
  u->ncopies++;
  snprintf(u->copy_src, sizeof u->copy_src, "%s", src_key);
  u->copy_off = off;
  u->copy_len = len;
  snprintf(etag_out, 130, "copy-%d", number);
  return true;
}

static const struct afs_bstore_ops fake_bstore_ops = {
    .finish = fb_finish,
    .renew = fb_renew,
    .release = fb_release,
    .remove = fb_remove,
    .get = fb_get,
    .asset_set = fb_asset_set,
    .asset_upsert = fb_asset_upsert,
    .assets_at = fb_assets_at,
    .path_used = fb_path_used,
    .claims_take = fb_claims_take,
    .claims_release = fb_claims_release,
    .claims_held = fb_claims_held,
    .obj_head = fb_obj_head,
    .obj_delete = fb_obj_delete,
    .upload_set = fb_upload_set,
    .mp_create = fb_mp_create,
    .mp_complete = fb_mp_complete,
    .mp_abort = fb_mp_abort,
    .mp_copy = fb_mp_copy,
};

/* A broker for handlers on the fake: settings as defaults, an S3 target that is never
 * contacted (URLs are signed locally), a fixed seal key. Free with afs_config_free(&b->cfg). */
static inline bool fake_broker_init(struct afs_broker *b) {
  struct afs_error err = {0};
  memset(b, 0, sizeof *b);
  afs_config_defaults(&b->cfg);
  bool ok = afs_config_set(&b->cfg, "s3_endpoint", "http://127.0.0.1:9", &err) &&
            afs_config_set(&b->cfg, "s3_region", "us-east-1", &err) &&
            afs_config_set(&b->cfg, "s3_bucket", "b", &err) &&
            afs_config_set(&b->cfg, "s3_access_key", "AKIDEXAMPLE", &err) &&
            afs_config_set(&b->cfg, "s3_secret_key", "secret", &err);
  afs_s3_target_from_config(&b->s3, &b->cfg);
  memset(b->seal_key, 9, sizeof b->seal_key);
  return ok;
}

/* A store over f (zeroed by the caller). */
static inline struct afs_bstore fake_bstore(struct fake_bstore *f) {
  return (struct afs_bstore){.ops = &fake_bstore_ops, .ctx = f};
}

/* The record id of coll as stored now (NULL: none); owned by the fake. */
static inline const bson_t *fb_rec(struct fake_bstore *f, enum afs_bcoll coll,
                                   const bson_value_t *id) {
  int i = fb_slot(f, coll, id);
  return i < 0 ? NULL : f->rec[coll][i];
}

/* Changes record id of coll as a client (or another broker) would: $set set, $unset unset
 * (either may be NULL). */
static inline void fb_edit(struct fake_bstore *f, enum afs_bcoll coll, const bson_value_t *id,
                           const bson_t *set, const bson_t *unset) {
  for (int i = 0; i < FB_MAX; i++)
    if (f->rec[coll][i] && fb_id_is(f->rec[coll][i], id))
      f->rec[coll][i] = fb_apply(f->rec[coll][i], set, unset, NULL);
}

/* The broker's record handlers, and one run of them as the dispatcher makes it: record id
 * of coll read once, claimed under the lease token "tok" first when claim (else read
 * without a claim, token NULL). */
enum fb_handler { FB_H_INIT, FB_H_COMPLETE, FB_H_STALE, FB_H_PURGE };
static inline enum afs_outcome fb_run(struct fake_bstore *f, struct afs_broker *b,
                                      struct afs_bstore *st, enum fb_handler h, enum afs_bcoll coll,
                                      const bson_value_t *id, bool claim) {
  if (claim) {
    bson_t *set =
        BCON_NEW(AFS_F_LEASE_OWNER, "tok", AFS_F_LEASE_UNTIL, BCON_DATE_TIME(afs_now_ms() + 60000));
    fb_edit(f, coll, id, set, NULL);
    bson_destroy(set);
  }
  bson_t *doc = bson_copy(fb_rec(f, coll, id));
  struct afs_record r;
  afs_record_read(doc, &r);
  const char *tok = claim ? "tok" : NULL;
  enum afs_outcome out = h == FB_H_INIT       ? afs_upload_init(b, st, &r, tok)
                         : h == FB_H_COMPLETE ? afs_upload_complete(b, st, &r, tok)
                         : h == FB_H_STALE    ? afs_upload_stale(b, st, &r, tok)
                                              : afs_asset_purge(b, st, &r, tok);
  afs_record_done(&r);
  bson_destroy(doc);
  return out;
}

static inline bool fb_has_obj(struct fake_bstore *f, const char *key) {
  return fb_obj_of(f, key) >= 0;
}

static inline void fb_free(struct fake_bstore *f) {
  for (int c = 0; c < AFS_BC_COUNT; c++)
    for (int i = 0; i < FB_MAX; i++)
      if (f->rec[c][i])
        bson_destroy(f->rec[c][i]);
  for (int i = 0; i < f->nclaims; i++) {
    free(f->claim[i].key);
    bson_value_destroy(&f->claim[i].rec);
  }
  for (int i = 0; i < f->nobj; i++)
    free(f->obj[i].key);
  for (int i = 0; i < f->nmpu; i++)
    free(f->mpu[i].key);
  memset(f, 0, sizeof *f);
}

#endif
