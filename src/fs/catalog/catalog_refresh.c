/* Read URLs that stay usable: expiry check, CosyncRefreshAsset through
 * CosyncFunctionCall with one flight per asset, cut sizes, and caption updates.
 *
 * Locking: cat->ref_mu protects cat->refs and every struct ref; cat->ref_cv is signalled
 * when a flight ends. The thread that sets ref->in_flight is the only one that talks to
 * MongoDB for that asset until it clears it; everyone else waits for its result.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/auth.h"
#include "assetfs/calls.h"
#include "assetfs/clock.h"
#include "assetfs/cosync.h"
#include "assetfs/http_get.h"
#include "assetfs/log.h"
#include "assetfs/strutil.h"
#include "catalog/catalog_int.h"

static void ref_free(void *v) {
  struct ref *r = v;
  if (!r)
    return;
  for (int p = 0; p < AFS_PART_COUNT; p++)
    free(r->url[p]);
  free(r);
}

void afs_cat_refs_free(struct afs_catalog *cat) {
  afs_smap_clear(&cat->refs, ref_free);
}

static struct ref *ref_get(struct afs_catalog *cat, const char *id) {
  struct ref *r = afs_smap_get(&cat->refs, id);
  if (r)
    return r;
  r = afs_xcalloc(1, sizeof *r);
  snprintf(r->id, sizeof r->id, "%s", id);
  for (int p = 0; p < AFS_PART_COUNT; p++)
    r->part_size[p] = -1;
  afs_smap_put(&cat->refs, id, r);
  return r;
}

static void ref_load(struct ref *r, const struct afs_asset *a) {
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    free(r->url[p]);
    r->url[p] = afs_xstrdup(a->url_part[p]);
  }
  r->expiration_ms = a->expiration_ms;
  r->expiration_hours = a->expiration_hours;
  r->have = true;
}

double afs_catalog_url_margin(const struct afs_catalog *cat, double expiration_hours) {
  double m = cat->refresh_margin;
  double life = expiration_hours * 3600.0;
  if (life > 0 && m > life * 0.1)
    m = life * 0.1;
  return m;
}

/* Public (0 hours) or without expiration: never needs a refresh. */
static bool never_expires(double hours, int64_t exp_ms) {
  return hours <= 0 || exp_ms <= 0;
}

static bool usable(const struct afs_catalog *cat, double hours, int64_t exp_ms) {
  if (never_expires(hours, exp_ms))
    return true;
  return exp_ms - afs_now_ms() > afs_catalog_url_margin(cat, hours) * 1000.0;
}

/* CosyncRefreshAsset for id through the broker (calls.h), signed with key_file. A
 * refusal is EIO (the URL stays unusable), no answer within refresh_timeout
 * AFS_E_DEADLINE. */
static bool refresh_call(struct afs_catalog *cat, const char *id, struct afs_error *err) {
  struct afs_caller cl = {
      .db = cat->db, .key = cat->key, .uid = cat->uid, .session = cat->session_id};
  bson_t *args = BCON_NEW("0", BCON_UTF8(id));
  afs_cat_count(cat, AFS_CATQ_CALL);
  bool ok = afs_call_run(&cl, "CosyncRefreshAsset", args, cat->refresh_timeout, NULL, err);
  bson_destroy(args);
  if (!ok && err->code == ETIMEDOUT)
    afs_error_set(err, AFS_E_DEADLINE,
                  "cannot refresh the read URL of asset %s: assetfs-broker did not answer "
                  "CosyncRefreshAsset within %.0f s (is the broker running?)",
                  id, cat->refresh_timeout);
  else if (!ok)
    err->code = EIO;
  return ok;
}

static bool active_or_stale(int found, const struct afs_asset *a, const char *id,
                            struct afs_error *err) {
  if (found < 0)
    return false;
  if (found == 0)
    return afs_error_set(err, AFS_E_RECORD_GONE, "asset %s no longer exists", id);
  if (strcmp(a->status, AFS_ASSET_ACTIVE) != 0)
    return afs_error_set(err, AFS_E_RECORD_GONE, "asset %s is %s", id, a->status);
  return true;
}

/* Gets a usable record for id into *out (owned by caller on success). */
static bool do_refresh(struct afs_catalog *cat, const char *id, enum afs_part part,
                       const char *failed_url, struct afs_asset *out, struct afs_error *err) {
  struct afs_asset a;
  int found = afs_cat_fetch_by_id(cat, id, &a, err);
  if (!active_or_stale(found, &a, id, err)) {
    if (found > 0)
      afs_asset_free(&a);
    return false;
  }
  /* Someone (another mount, the app, a previous flight) may have refreshed it. */
  bool newer = !failed_url || strcmp(a.url_part[part], failed_url) != 0;
  if (newer && usable(cat, a.expiration_hours, a.expiration_ms)) {
    *out = a;
    return true;
  }
  if (never_expires(a.expiration_hours, a.expiration_ms)) {
    afs_asset_free(&a);
    return afs_error_set(err, EIO,
                         "S3 refused the public URL of asset %s (403): a public asset cannot "
                         "be refreshed; check the bucket's public-read policy",
                         id);
  }
  double t0 = afs_cat_now();
  if (!refresh_call(cat, id, err))
    goto fail;
  struct afs_asset b;
  found = afs_cat_fetch_by_id(cat, id, &b, err);
  if (!active_or_stale(found, &b, id, err)) {
    if (found > 0)
      afs_asset_free(&b);
    goto fail;
  }
  afs_asset_free(&a);
  afs_debug("asset %s: read URL refreshed in %.0f ms", id, (afs_cat_now() - t0) * 1000);
  *out = b;
  return true;
fail:
  /* An old URL that has not expired yet still works for a while: use it. */
  if (!failed_url && err->code != AFS_E_RECORD_GONE && a.expiration_ms - afs_now_ms() > 2000) {
    afs_warn("%s; using the current URL until it expires", err->msg);
    *out = a;
    return true;
  }
  afs_err("%s", err->msg);
  afs_asset_free(&a);
  return false;
}

bool afs_catalog_fresh_url(struct afs_catalog *cat, const char *id, enum afs_part part,
                           const char *failed_url, char **url, int64_t *expires_ms,
                           struct afs_error *err) {
  *url = NULL;
  if (part < 0 || part >= AFS_PART_COUNT)
    return afs_error_set(err, EINVAL, "bad part %d", (int)part);
  pthread_mutex_lock(&cat->ref_mu);
  struct ref *r = ref_get(cat, id);
  for (;;) {
    if (r->in_flight) {
      unsigned gen = r->gen;
      while (r->in_flight)
        pthread_cond_wait(&cat->ref_cv, &cat->ref_mu);
      if (r->gen != gen && !r->last_ok) {
        if (err)
          *err = r->last_err;
        pthread_mutex_unlock(&cat->ref_mu);
        return false;
      }
      continue;
    }
    if (!r->last_ok && r->fail_at > 0 && afs_cat_now() - r->fail_at < 3.0) {
      if (err)
        *err = r->last_err;
      pthread_mutex_unlock(&cat->ref_mu);
      return false;
    }
    if (r->have) {
      const char *u = r->url[part];
      bool ok = failed_url ? strcmp(u, failed_url) != 0 &&
                                 (never_expires(r->expiration_hours, r->expiration_ms) ||
                                  r->expiration_ms > afs_now_ms())
                           : usable(cat, r->expiration_hours, r->expiration_ms);
      if (ok) {
        *url = afs_xstrdup(u);
        if (expires_ms)
          *expires_ms = never_expires(r->expiration_hours, r->expiration_ms) ? 0 : r->expiration_ms;
        pthread_mutex_unlock(&cat->ref_mu);
        return true;
      }
    }
    break;
  }
  r->in_flight = true;
  pthread_mutex_unlock(&cat->ref_mu);

  struct afs_asset a;
  struct afs_error ferr = {0};
  bool ok = do_refresh(cat, id, part, failed_url, &a, &ferr);

  pthread_mutex_lock(&cat->ref_mu);
  if (ok) {
    ref_load(r, &a);
    *url = afs_xstrdup(r->url[part]);
    if (expires_ms)
      *expires_ms = never_expires(r->expiration_hours, r->expiration_ms) ? 0 : r->expiration_ms;
    afs_asset_free(&a);
  }
  r->last_ok = ok;
  r->last_err = ferr;
  r->fail_at = ok ? 0 : afs_cat_now();
  r->gen++;
  r->in_flight = false;
  pthread_cond_broadcast(&cat->ref_cv);
  pthread_mutex_unlock(&cat->ref_mu);
  if (!ok && err)
    *err = ferr;
  if (ok && !**url) {
    free(*url);
    *url = NULL;
    return afs_error_set(err, ENOENT, "asset %s has no %s", id, afs_part_name(part));
  }
  return ok;
}

bool afs_cat_part_size(struct afs_catalog *cat, const struct afs_asset *a, enum afs_part part,
                       int64_t *size, struct afs_error *err) {
  pthread_mutex_lock(&cat->ref_mu);
  struct ref *r = ref_get(cat, a->id);
  if (!r->have && !r->in_flight)
    ref_load(r, a);
  int64_t known = r->part_size[part];
  pthread_mutex_unlock(&cat->ref_mu);
  if (known >= 0) {
    *size = known;
    return true;
  }
  char *url = NULL;
  bool ok = false;
  long status = 0;
  struct afs_http_conn *c = afs_http_conn_new(5, 15);
  if (!c)
    return afs_error_set(err, ENOMEM, "out of memory");
  for (int attempt = 0; attempt < 2 && !ok; attempt++) {
    char *failed = url;
    url = NULL;
    if (!afs_catalog_fresh_url(cat, a->id, part, failed, &url, NULL, err)) {
      free(failed);
      break;
    }
    free(failed);
    ok = afs_http_probe_size(c, url, size, &status, err);
    if (!ok && status != 403)
      break;
  }
  free(url);
  afs_http_conn_free(c);
  if (!ok) {
    if (err && err->code == ENOENT)
      err->code = AFS_E_RECORD_GONE;
    return false;
  }
  pthread_mutex_lock(&cat->ref_mu);
  r->part_size[part] = *size;
  pthread_mutex_unlock(&cat->ref_mu);
  return true;
}

static void drop_id_nodes(struct afs_catalog *cat, const char *id) {
  pthread_mutex_lock(&cat->mu);
  struct afs_smap_iter pi, ni;
  void *pv, *nv;
  afs_smap_iter_init(&pi, &cat->parts);
  while (afs_smap_next(&pi, NULL, &pv)) {
    struct part *p = pv;
    afs_smap_iter_init(&ni, &p->nodes);
    while (afs_smap_next(&ni, NULL, &nv)) {
      struct node *n = nv;
      if (!n->is_dir && !n->ghost && n->a.id[0] && !strcmp(n->a.id, id))
        n->stamp = 0; /* the next lookup re-reads it */
    }
  }
  pthread_mutex_unlock(&cat->mu);
}

/* $set caption (and updatedAt) on the record _id id of coll. *matched: 0 or 1. */
static bool caption_update(struct afs_catalog *cat, const char *coll_name, const char *id,
                           const char *caption, int64_t *matched, struct afs_error *err) {
  bson_error_t berr;
  bson_oid_t oid;
  bson_t reply;
  *matched = 0;
  if (!bson_oid_is_valid(id, strlen(id)))
    return afs_error_set(err, EINVAL, "bad record id '%s'", id);
  bson_oid_init_from_string(&oid, id);
  /* _id alone: the one filter FerretDB answers from its index. */
  bson_t *sel = BCON_NEW(AFS_F_ID, BCON_OID(&oid));
  bson_t *upd = BCON_NEW("$set", "{", AFS_F_CAPTION, BCON_UTF8(caption), AFS_F_UPDATED,
                         BCON_DATE_TIME(afs_now_ms()), "}");
  mongoc_client_t *c = afs_db_pop(cat->db);
  mongoc_collection_t *coll = afs_db_coll(cat->db, c, coll_name);
  bool ok = mongoc_collection_update_one(coll, sel, upd, NULL, &reply, &berr);
  mongoc_collection_destroy(coll);
  afs_db_push(cat->db, c);
  bson_destroy(sel);
  bson_destroy(upd);
  bson_iter_t it;
  if (ok && bson_iter_init_find(&it, &reply, "matchedCount"))
    *matched = bson_iter_as_int64(&it);
  bson_destroy(&reply);
  if (!ok) {
    afs_db_error(err, &berr, "setting a caption");
    err->code = EIO;
  }
  return ok;
}

/* With a key: AssetfsSetCaption through the broker (clients do not write assets). */
static bool caption_call(struct afs_catalog *cat, const char *id, const char *caption,
                         int64_t *matched, struct afs_error *err) {
  struct afs_caller cl = {
      .db = cat->db, .key = cat->key, .uid = cat->uid, .session = cat->session_id};
  bson_t *args = BCON_NEW("0", BCON_UTF8(id), "1", BCON_UTF8(caption));
  afs_cat_count(cat, AFS_CATQ_CALL);
  bool ok = afs_call_run(&cl, "AssetfsSetCaption", args, cat->refresh_timeout, NULL, err);
  bson_destroy(args);
  *matched = ok;
  if (!ok && err->code == ENOENT)
    return true; /* no active asset (yet) */
  return ok;
}

bool afs_catalog_set_caption(struct afs_catalog *cat, const char *id, const char *caption,
                             struct afs_error *err) {
  int64_t matched = 0;
  if (!(cat->key ? caption_call(cat, id, caption, &matched, err)
                 : caption_update(cat, AFS_COLL_ASSET, id, caption, &matched, err)))
    return false;
  drop_id_nodes(cat, id);
  if (matched == 0)
    return afs_error_set(err, ENOENT, "no asset %s", id);
  return true;
}

/* The status of upload record id ("" when it is gone); false when the query failed. */
static bool upload_status(struct afs_catalog *cat, const char *id, char status[32],
                          struct afs_error *err) {
  bson_error_t berr;
  bson_oid_t oid;
  const bson_t *doc;
  status[0] = 0;
  bson_oid_init_from_string(&oid, id);
  bson_t *q = BCON_NEW(AFS_F_ID, BCON_OID(&oid));
  bson_t *opts = BCON_NEW("projection", "{", AFS_F_STATUS, BCON_INT32(1), "}");
  mongoc_client_t *c = afs_db_pop(cat->db);
  mongoc_collection_t *coll = afs_db_coll(cat->db, c, AFS_COLL_UPLOAD);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, q, opts, NULL);
  bson_iter_t it;
  if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, AFS_F_STATUS) &&
      BSON_ITER_HOLDS_UTF8(&it))
    snprintf(status, 32, "%s", bson_iter_utf8(&it, NULL));
  bool ok = !mongoc_cursor_error(cur, &berr);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  afs_db_push(cat->db, c);
  bson_destroy(q);
  bson_destroy(opts);
  if (!ok) {
    afs_db_error(err, &berr, "reading an upload record");
    err->code = EIO;
  }
  return ok;
}

bool afs_catalog_set_upload_caption(struct afs_catalog *cat, const char *id, const char *caption,
                                    double wait_s, struct afs_error *err) {
  int64_t matched = 0;
  /* With a key the upload record keeps what its client signed: the caption waits for
   * the asset. */
  if (!cat->key && !caption_update(cat, AFS_COLL_UPLOAD, id, caption, &matched, err))
    return false;
  double deadline = afs_cat_now() + wait_s;
  useconds_t pause = 50000;
  for (;;) {
    /* The asset's _id is its upload's. */
    if (!(cat->key ? caption_call(cat, id, caption, &matched, err)
                   : caption_update(cat, AFS_COLL_ASSET, id, caption, &matched, err)))
      return false;
    if (matched) {
      drop_id_nodes(cat, id);
      return true;
    }
    /* No asset yet. If the broker read the record before our update, it creates the
     * asset without the caption: wait for the completion, then write it there. */
    char st[32];
    if (!upload_status(cat, id, st, err))
      return false;
    if (!strcmp(st, AFS_UPLOAD_ERROR) || !st[0])
      return true; /* no asset will come of it (or it is gone): the record has it */
    if (!strcmp(st, AFS_UPLOAD_COMPLETED))
      continue; /* the asset exists now (or was removed): one more try */
    if (afs_cat_now() >= deadline) {
      afs_warn("upload %s: the broker has not completed it within %.0f s; the caption is "
               "on its record only",
               id, wait_s);
      return true;
    }
    usleep(pause);
    pause = pause < 400000 ? pause * 2 : pause;
  }
}
