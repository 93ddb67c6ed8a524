/* An in-memory broker record store (src/broker/bstore.h) for unit tests: assets as BSON
 * documents, the last answer written to a call, and injectable MongoDB outages. Header
 * only; one per test program. */
#ifndef FAKE_BSTORE_H
#define FAKE_BSTORE_H

#include <errno.h>
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/records.h"
#include "bstore.h"

#define FB_MAX 32

enum fb_op { FB_ASSET_GET, FB_ASSET_SET, FB_CALL_FINISH, FB_OPS };

struct fake_bstore {
  bson_t *asset[FB_MAX];
  int n;
  bool down[FB_OPS];   /* this operation fails as an unreachable MongoDB would */
  int calls[FB_OPS];   /* how often each ran */
  bson_t *call_set;    /* what the last call_finish wrote (owned) */
  int released;        /* call_release count */
  long released_delay; /* its last delay */
};

static bool fb_down(struct fake_bstore *f, enum fb_op op, struct afs_error *err) {
  f->calls[op]++;
  return f->down[op] &&
         !afs_error_set(err, AFS_E_UNREACHABLE, "MongoDB: no suitable servers (fake outage)");
}

static int fb_find(struct fake_bstore *f, const bson_value_t *id) {
  for (int i = 0; i < f->n; i++) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, f->asset[i], AFS_F_ID) &&
        afs_rec_id_equal(bson_iter_value(&it), id))
      return i;
  }
  return -1;
}

static bool fb_asset_get(void *ctx, const bson_value_t *id, bool for_result, bson_t **out,
                         struct afs_error *err) {
  struct fake_bstore *f = ctx;
  *out = NULL;
  if (fb_down(f, FB_ASSET_GET, err))
    return false;
  int i = fb_find(f, id);
  if (i < 0)
    return true;
  if (!for_result) {
    *out = bson_copy(f->asset[i]);
    return true;
  }
  *out = bson_new();
  bson_copy_to_excluding_noinit(f->asset[i], *out, AFS_F_LEASE_OWNER, AFS_F_LEASE_UNTIL, AFS_F_SEAL,
                                NULL);
  return true;
}

static bool fb_asset_set(void *ctx, const bson_value_t *id, const char *status_is,
                         const char *status_not, const bson_t *set, bool *matched,
                         struct afs_error *err) {
  struct fake_bstore *f = ctx;
  *matched = false;
  if (fb_down(f, FB_ASSET_SET, err))
    return false;
  int i = fb_find(f, id);
  if (i < 0)
    return true;
  struct afs_record r;
  afs_record_read(f->asset[i], &r);
  bool ok = (!status_is || (r.status && !strcmp(r.status, status_is))) &&
            (!status_not || !r.status || strcmp(r.status, status_not));
  afs_record_done(&r);
  if (!ok)
    return true;
  /* $set: the fields of `set` replace or join the document's. */
  bson_t *d = bson_new();
  bson_iter_t it;
  bson_iter_init(&it, f->asset[i]);
  while (bson_iter_next(&it))
    if (!bson_has_field(set, bson_iter_key(&it)))
      bson_append_value(d, bson_iter_key(&it), -1, bson_iter_value(&it));
  bson_iter_init(&it, set);
  while (bson_iter_next(&it))
    bson_append_value(d, bson_iter_key(&it), -1, bson_iter_value(&it));
  bson_destroy(f->asset[i]);
  f->asset[i] = d;
  *matched = true;
  return true;
}

static int fb_call_finish(void *ctx, const bson_value_t *id, const char *token, const bson_t *set,
                          struct afs_error *err) {
  struct fake_bstore *f = ctx;
  (void)id;
  (void)token;
  if (fb_down(f, FB_CALL_FINISH, err))
    return -1;
  if (f->call_set)
    bson_destroy(f->call_set);
  f->call_set = bson_copy(set);
  return 1;
}

static void fb_call_release(void *ctx, const bson_value_t *id, const char *token, long delay_ms) {
  struct fake_bstore *f = ctx;
  (void)id;
  (void)token;
  f->released++;
  f->released_delay = delay_ms;
}

static const struct afs_bstore_ops fake_bstore_ops = {
    .asset_get = fb_asset_get,
    .asset_set = fb_asset_set,
    .call_finish = fb_call_finish,
    .call_release = fb_call_release,
};

/* A store over f (zeroed by the caller). */
static inline struct afs_bstore fake_bstore(struct fake_bstore *f) {
  return (struct afs_bstore){.ops = &fake_bstore_ops, .ctx = f};
}

/* Adds a copy of doc as an asset. */
static inline void fb_add(struct fake_bstore *f, const bson_t *doc) {
  f->asset[f->n++] = bson_copy(doc);
}

static inline void fb_free(struct fake_bstore *f) {
  for (int i = 0; i < f->n; i++)
    bson_destroy(f->asset[i]);
  if (f->call_set)
    bson_destroy(f->call_set);
  memset(f, 0, sizeof *f);
}

#endif
