/* afs_catalog_list: a directory's entries from its cached listing while that is fresh
 * (and has no ghosts), else from one subtree query (catalog_query.c; single flight:
 * concurrent callers share one); the last listing however old when MongoDB fails. Also
 * the virtual .cuts/<part>/ directories, which show the cut of each file that has one (a
 * video's as "<name>.png").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/log.h"
#include "assetfs/strutil.h"
#include "catalog/catalog_int.h"

/* ---- single flight ---- */

struct list_flight {
  uint64_t seq; /* cat->inval_seq when it started */
  bool done;
  int ret; /* afs_cat_list_query's */
  struct afs_error err;
  int waiters; /* the last one out frees it (the owner if none) */
};

int afs_cat_list_fetch(struct afs_catalog *cat, const char *partition, const char *dirpath,
                       struct afs_error *err) {
  size_t kl = strlen(partition) + strlen(dirpath) + 2;
  char *key = afs_xmalloc(kl);
  snprintf(key, kl, "%s\x1f%s", partition, dirpath);
  pthread_mutex_lock(&cat->mu);
  struct list_flight *f = afs_smap_get(&cat->flights, key);
  if (f && f->seq == cat->inval_seq) {
    /* Asked after this mount changed nothing since: that answer is as good as ours,
     * and a listing of a big directory costs the database seconds. */
    f->waiters++;
    while (!f->done)
      pthread_cond_wait(&cat->flight_cv, &cat->mu);
    int ret = f->ret;
    if (ret < 0)
      *err = f->err;
    if (--f->waiters == 0)
      free(f);
    pthread_mutex_unlock(&cat->mu);
    free(key);
    return ret;
  }
  struct list_flight *mine = NULL;
  if (!f) {
    mine = afs_xcalloc(1, sizeof *mine);
    mine->seq = cat->inval_seq;
    afs_smap_put(&cat->flights, key, mine);
  }
  pthread_mutex_unlock(&cat->mu);

  int ret = afs_cat_list_query(cat, partition, dirpath, err);

  if (mine) {
    pthread_mutex_lock(&cat->mu);
    afs_smap_del(&cat->flights, key);
    mine->done = true;
    mine->ret = ret;
    if (ret < 0)
      mine->err = *err;
    if (mine->waiters > 0)
      pthread_cond_broadcast(&cat->flight_cv);
    else
      free(mine);
    pthread_mutex_unlock(&cat->mu);
  }
  free(key);
  return ret;
}

/* ---- list ---- */

struct snap_ent {
  char *name;
  bool is_dir;
  struct afs_asset a;
};

/* Copies the listing of d (mu held). */
static struct snap_ent *snapshot(struct node *d, size_t *n) {
  struct snap_ent *v = afs_xcalloc(d->nkids + 1, sizeof *v);
  size_t k = 0;
  for (size_t i = 0; i < d->nkids; i++) {
    struct node *c = d->kids[i];
    if (c->ghost)
      continue;
    v[k].name = afs_xstrdup(c->name);
    v[k].is_dir = c->is_dir;
    if (!c->is_dir)
      afs_asset_copy(&v[k].a, &c->a);
    k++;
  }
  *n = k;
  return v;
}

static void snap_free(struct snap_ent *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i].name);
    if (!v[i].is_dir)
      afs_asset_free(&v[i].a);
  }
  free(v);
}

static bool has_ghosts(const struct node *d) {
  for (size_t i = 0; i < d->nkids; i++)
    if (d->kids[i]->ghost)
      return true;
  return false;
}

/* The cached listing of dirpath: 1 got it, 0 none usable, -1 not a dir (fresh). */
static int cached_listing(struct afs_catalog *cat, const char *partition, const char *dirpath,
                          bool any_age, struct snap_ent **v, size_t *n) {
  int ret = 0;
  pthread_mutex_lock(&cat->mu);
  struct part *p = afs_cat_part_get(cat, partition, false);
  struct node *d = p ? afs_smap_get(&p->nodes, dirpath) : NULL;
  double now = afs_cat_now();
  if (d && d->is_dir && d->listed > 0 &&
      (any_age || (afs_cat_fresh(d->listed, cat->list_ttl, now) && !has_ghosts(d)))) {
    *v = snapshot(d, n);
    ret = 1;
  } else if (!any_age && *dirpath && (!d || !d->is_dir) &&
             (afs_cat_cache_answer(cat, p, dirpath, now, false, NULL) == C_NOENT ||
              (p && afs_cat_fresh(afs_cat_absent_at(p, dirpath), cat->list_ttl, now)))) {
    ret = -1;
  }
  pthread_mutex_unlock(&cat->mu);
  return ret;
}

static bool list_plain(struct afs_catalog *cat, const char *partition, const char *dirpath,
                       struct snap_ent **v, size_t *n, struct afs_error *err) {
  int c = cached_listing(cat, partition, dirpath, false, v, n);
  if (c == 1)
    return true;
  if (c == -1)
    return afs_error_set(err, ENOENT, "%s:/%s: no such directory", partition, dirpath);
  struct afs_error qerr = {0};
  int r = afs_cat_list_fetch(cat, partition, dirpath, &qerr);
  if (r == 0 && *dirpath)
    return afs_error_set(err, ENOENT, "%s:/%s: no such directory", partition, dirpath);
  if (r < 0) {
    if (cached_listing(cat, partition, dirpath, true, v, n) == 1) {
      afs_debug("%s; serving the listing of %s:/%s from cache", qerr.msg, partition, dirpath);
      return true;
    }
    if (!*dirpath) {
      struct afs_error perr = {0};
      if (!afs_cat_partition_exists(cat, partition, &perr) && perr.code == ENOENT)
        return afs_error_set(err, ENOENT, "no partition %s", partition);
    }
    afs_warn("listing %s:/%s: %s", partition, dirpath, qerr.msg);
    *err = qerr;
    return false;
  }
  if (cached_listing(cat, partition, dirpath, true, v, n) == 1)
    return true;
  *v = NULL; /* the subtree was replaced between install and copy: empty is honest */
  *n = 0;
  return true;
}

bool afs_catalog_list(struct afs_catalog *cat, const char *partition, const char *dirpath,
                      afs_catalog_list_cb cb, void *ctx, struct afs_error *err) {
  int part;
  const char *rest;
  struct snap_ent *v = NULL;
  size_t n = 0;
  while (*dirpath == '/')
    dirpath++;
  if (afs_cat_cuts_split(dirpath, &part, &rest)) {
    if (part == -2)
      return afs_error_set(err, ENOENT, "no such directory %s", dirpath);
    if (part == -1) {
      for (int p = AFS_PART_SMALL; p < AFS_PART_COUNT; p++)
        if (cb(ctx, afs_part_name(p), NULL))
          break;
      return true;
    }
    if (!list_plain(cat, partition, rest, &v, &n, err))
      return false;
    for (size_t i = 0; i < n; i++) {
      if (v[i].is_dir) {
        if (cb(ctx, v[i].name, NULL))
          break;
        continue;
      }
      struct afs_asset *a = &v[i].a;
      if (!afs_cat_part_shown(a, part))
        continue;
      bool video = afs_content_kind(a->content_type) == AFS_KIND_VIDEO;
      struct afs_error serr = {0};
      a->part = part;
      if (!afs_cat_part_size(cat, a, part, &a->size, &serr)) {
        afs_warn("%s: size of its %s cut unknown: %s", a->file_path, afs_part_name(part), serr.msg);
        continue;
      }
      char *name = video ? malloc(strlen(v[i].name) + 5) : NULL;
      if (video)
        sprintf(name, "%s.png", v[i].name);
      int stop = cb(ctx, video ? name : v[i].name, a);
      free(name);
      if (stop)
        break;
    }
    snap_free(v, n);
    return true;
  }
  if (!list_plain(cat, partition, dirpath, &v, &n, err))
    return false;
  for (size_t i = 0; i < n; i++)
    if (cb(ctx, v[i].name, v[i].is_dir ? NULL : &v[i].a))
      break;
  snap_free(v, n);
  return true;
}
