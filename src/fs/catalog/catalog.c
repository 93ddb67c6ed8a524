/* The namespace cache: partition trees filled from CosyncAsset queries (see catalog.h).
 * This file: the catalog's lifetime and afs_catalog_lookup/confirm, i.e. when a cached
 * answer may be believed (attr_ttl, list_ttl, covering listings), which query to make
 * when it may not, stale-while-revalidate for big directories, serving the cache when
 * MongoDB fails, and the virtual .cuts/ paths.
 *
 * The other parts: catalog_tree.c (the trees, negative knowledge, ghosts, invalidation),
 * catalog_query.c (the MongoDB queries and name placement), catalog_list.c (listings),
 * catalog_record.c (records <-> struct afs_asset), catalog_refresh.c (read URLs, cut
 * sizes); their shared internals are in catalog_int.h.
 *
 * A directory listing is one query for the whole subtree under it, which replaces that
 * subtree in the cache; a lookup of a stale file is one query by (partition, filePath).
 *
 * Locking: cat->mu protects the trees and the partition list. It is never held during a
 * MongoDB round trip or a callback; results are installed in one critical section.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/cosync.h"
#include "assetfs/log.h"
#include "assetfs/strutil.h"
#include "catalog/catalog_int.h"

/* ---- options, lifetime ---- */

void afs_catalog_opts_default(struct afs_catalog_opts *o) {
  memset(o, 0, sizeof *o);
  o->attr_ttl = 1.0;
  o->list_ttl = 3.0;
  o->refresh_margin = 60.0;
  o->refresh_timeout = 15.0;
}

struct afs_catalog *afs_catalog_new(struct afs_db *db, const struct afs_catalog_opts *o,
                                    struct afs_error *err) {
  struct afs_catalog_opts def;
  if (!o) {
    afs_catalog_opts_default(&def);
    o = &def;
  }
  struct afs_catalog *cat = calloc(1, sizeof *cat);
  if (!cat) {
    afs_error_set(err, ENOMEM, "out of memory");
    return NULL;
  }
  cat->db = db;
  cat->upload_partition = o->upload_partition ? afs_xstrdup(o->upload_partition) : NULL;
  if (o->partitions) {
    size_t n = 0;
    while (o->partitions[n])
      n++;
    cat->partitions = afs_xcalloc(n + 1, sizeof *cat->partitions);
    for (size_t i = 0; i < n; i++)
      cat->partitions[i] = afs_xstrdup(o->partitions[i]);
  }
  cat->uid = afs_xstrdup(o->uid);
  cat->session_id = afs_xstrdup(o->session_id);
  cat->key = o->key;
  if (o->broker_pub) {
    memcpy(cat->broker_pub, o->broker_pub, sizeof cat->broker_pub);
    cat->has_broker_pub = true;
  }
  cat->attr_ttl = o->attr_ttl >= 0 ? o->attr_ttl : 1.0;
  cat->list_ttl = o->list_ttl >= 0 ? o->list_ttl : 3.0;
  cat->refresh_margin = o->refresh_margin >= 0 ? o->refresh_margin : 60.0;
  cat->refresh_timeout = o->refresh_timeout > 0 ? o->refresh_timeout : 15.0;
  pthread_mutex_init(&cat->mu, NULL);
  pthread_mutex_init(&cat->seal_mu, NULL);
  pthread_mutex_init(&cat->ref_mu, NULL);
  pthread_cond_init(&cat->ref_cv, NULL);
  afs_smap_init(&cat->parts);
  afs_smap_init(&cat->refs);
  afs_smap_init(&cat->relisting);
  pthread_cond_init(&cat->bg_cv, NULL);
  afs_smap_init(&cat->flights);
  pthread_cond_init(&cat->flight_cv, NULL);
  return cat;
}

char *afs_catalog_query_stats(struct afs_catalog *cat) {
  uint64_t v[AFS_CATQ_COUNT], total = 0;
  for (int i = 0; i < AFS_CATQ_COUNT; i++)
    total += v[i] = __atomic_load_n(&cat->nq[i], __ATOMIC_RELAXED);
  char *out = NULL;
  afs_xasprintf(&out,
                "total=%llu file=%llu list=%llu id=%llu partition=%llu distinct=%llu "
                "call=%llu",
                (unsigned long long)total, (unsigned long long)v[AFS_CATQ_FILE],
                (unsigned long long)v[AFS_CATQ_LIST], (unsigned long long)v[AFS_CATQ_ID],
                (unsigned long long)v[AFS_CATQ_PARTITION], (unsigned long long)v[AFS_CATQ_DISTINCT],
                (unsigned long long)v[AFS_CATQ_CALL]);
  return out;
}

void afs_catalog_free(struct afs_catalog *cat) {
  if (!cat)
    return;
  char *stats = afs_catalog_query_stats(cat);
  afs_info("catalog queries: %s", stats);
  free(stats);
  pthread_mutex_lock(&cat->mu);
  while (cat->bg_running > 0)
    pthread_cond_wait(&cat->bg_cv, &cat->mu);
  pthread_mutex_unlock(&cat->mu);
  afs_smap_clear(&cat->relisting, NULL);
  pthread_cond_destroy(&cat->bg_cv);
  afs_smap_clear(&cat->flights, NULL); /* empty: every flight ends before its caller returns */
  pthread_cond_destroy(&cat->flight_cv);
  afs_smap_clear(&cat->parts, afs_cat_part_free);
  afs_cat_refs_free(cat);
  afs_cat_strv_free(cat->partitions);
  afs_cat_strv_free(cat->disc);
  free(cat->upload_partition);
  free(cat->uid);
  free(cat->session_id);
  pthread_mutex_destroy(&cat->mu);
  afs_smap_clear(&cat->sealed_ok, NULL);
  pthread_mutex_destroy(&cat->seal_mu);
  pthread_mutex_destroy(&cat->ref_mu);
  pthread_cond_destroy(&cat->ref_cv);
  free(cat);
}

/* ---- lookup ---- */

/* What the cache says about rel, and whether it may be believed now (mu held). */
enum cached afs_cat_cache_answer(struct afs_catalog *cat, struct part *p, const char *rel,
                                 double now, bool any_age, struct afs_asset *out) {
  if (!p)
    return C_MISS;
  struct node *n = afs_smap_get(&p->nodes, rel);
  if (n && !n->ghost) {
    /* A file seen in a listing is as fresh as that listing: `ls -l` of a big directory
     * then needs one query, not one per entry once attr_ttl has run out. */
    double ttl = n->is_dir || (n->from_listing && cat->list_ttl > cat->attr_ttl) ? cat->list_ttl
                                                                                 : cat->attr_ttl;
    if (any_age || afs_cat_fresh(n->stamp, ttl, now)) {
      if (n->is_dir)
        return C_DIR;
      if (out)
        afs_asset_copy(out, &n->a);
      return C_FILE;
    }
    return C_MISS;
  }
  if (n) /* ghost */
    return C_MISS;
  /* Unknown name: absent if a listing that covers it is fresh (so creating many new
   * files costs a listing per directory per list_ttl, not a query per name). */
  double cov = afs_cat_coverage(p, rel);
  if (any_age ? cov > 0 : afs_cat_fresh(cov, cat->list_ttl, now))
    return C_NOENT;
  return C_MISS;
}

static int to_kind(enum cached c) {
  return c == C_FILE ? AFS_CAT_FILE : c == C_DIR ? AFS_CAT_DIR : AFS_CAT_NOENT;
}

/* ---- stale-while-revalidate for big directories ---- */

#define BIG_DIR 64     /* entries from which a stale entry triggers a re-listing */
#define STALE_MAX 30.0 /* seconds past list_ttl a stale entry may still be served */

struct relist {
  struct afs_catalog *cat;
  char *partition, *dir, *key;
};

static void *relist_main(void *arg) {
  struct relist *rl = arg;
  struct afs_error err = {0};
  if (afs_cat_list_fetch(rl->cat, rl->partition, rl->dir, &err) < 0)
    afs_debug("background listing of %s:/%s: %s", rl->partition, rl->dir, err.msg);
  pthread_mutex_lock(&rl->cat->mu);
  afs_smap_del(&rl->cat->relisting, rl->key);
  if (--rl->cat->bg_running == 0)
    pthread_cond_broadcast(&rl->cat->bg_cv);
  pthread_mutex_unlock(&rl->cat->mu);
  free(rl->partition);
  free(rl->dir);
  free(rl->key);
  free(rl);
  return NULL;
}

static char *relist_key(const char *partition, const char *dir) {
  size_t kl = strlen(partition) + strlen(dir) + 2;
  char *key = afs_xmalloc(kl);
  snprintf(key, kl, "%s\x1f%s", partition, dir);
  return key;
}

/* Is a listing of d or of one of its ancestors (which covers d) running in the
 * background? mu held. */
static bool relist_running(struct afs_catalog *cat, struct part *p, const struct node *d) {
  for (; d; d = d->parent) {
    char *key = relist_key(p->name, d->rel);
    bool running = afs_smap_get(&cat->relisting, key) != NULL;
    free(key);
    if (running)
      return true;
  }
  return false;
}

/* A stale entry of a big directory, learnt from a listing: answer from the cache and
 * re-list in the background (once), so `ls -l` of 10,000 files never turns into 10,000
 * queries, or into a listing in the foreground, when MongoDB is slow. A file is served
 * while its directory is re-listed; a directory (the kernel looks it up again every
 * entry_timeout while `ls -l` stats its entries) while it is re-listed itself. mu held;
 * C_MISS when it does not apply. */
static enum cached serve_stale(struct afs_catalog *cat, struct part *p, struct node *n, double now,
                               struct afs_asset *out) {
  if (!n || n->ghost || !n->parent)
    return C_MISS;
  struct node *d = n->is_dir ? n : n->parent;
  if (n->is_dir ? n->listed <= 0 || (n->nkids < BIG_DIR && n->parent->nkids < BIG_DIR)
                : !n->from_listing || d->nkids < BIG_DIR)
    return C_MISS;
  if (now - d->listed > cat->list_ttl + STALE_MAX)
    return C_MISS;
  if (!relist_running(cat, p, d)) {
    struct relist *rl = afs_xcalloc(1, sizeof *rl);
    pthread_t th;
    pthread_attr_t attr;
    rl->cat = cat;
    rl->partition = afs_xstrdup(p->name);
    rl->dir = afs_xstrdup(d->rel);
    rl->key = relist_key(p->name, d->rel);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, relist_main, rl) == 0) {
      afs_smap_put(&cat->relisting, rl->key, rl);
      cat->bg_running++;
    } else {
      free(rl->partition);
      free(rl->dir);
      free(rl->key);
      free(rl);
    }
    pthread_attr_destroy(&attr);
  }
  if (n->is_dir)
    return C_DIR;
  if (out)
    afs_asset_copy(out, &n->a);
  return C_FILE;
}

static int lookup_plain(struct afs_catalog *cat, const char *partition, const char *rel,
                        struct afs_asset *out, struct afs_error *err) {
  if (!*rel) {
    struct afs_error perr = {0};
    if (afs_cat_partition_exists(cat, partition, &perr))
      return AFS_CAT_DIR;
    if (perr.code == ENOENT)
      return AFS_CAT_NOENT;
    /* MongoDB down: a partition we have cached is still a directory. */
    pthread_mutex_lock(&cat->mu);
    struct part *kp = afs_cat_part_get(cat, partition, false);
    bool known = kp && (kp->exists || kp->root->nkids > 0);
    pthread_mutex_unlock(&cat->mu);
    if (known)
      return AFS_CAT_DIR;
    *err = perr;
    return -1;
  }
  pthread_mutex_lock(&cat->mu);
  struct part *p = afs_cat_part_get(cat, partition, false);
  double now = afs_cat_now();
  enum cached c = afs_cat_cache_answer(cat, p, rel, now, false, out);
  struct node *n = p ? afs_smap_get(&p->nodes, rel) : NULL;
  bool try_file = !n || (!n->is_dir && !n->a.derived_name && !n->was_derived);
  if (c == C_MISS)
    c = serve_stale(cat, p, n, now, out);
  if (c == C_MISS && p && try_file && !n) {
    /* A name not known at all, in a parent known to be small (or empty): its listing
     * answers this name and its siblings' in one query, where asking for the name first
     * costs two when it does not exist. Big or unknown parents, known files gone stale
     * and ghosts (most often an upload that just completed): one record first (on
     * FerretDB/PostgreSQL that query is indexed; a listing's prefix match is not). */
    char *dir = afs_cat_dirname(rel);
    struct node *pn = afs_smap_get(&p->nodes, dir);
    try_file = !((pn && pn->is_dir && pn->listed > 0 && pn->nkids < BIG_DIR) ||
                 (!pn && afs_cat_absent_at(p, dir) > 0));
    free(dir);
  }
  pthread_mutex_unlock(&cat->mu);
  if (c != C_MISS)
    return to_kind(c);

  struct afs_error qerr = {0};
  int r = try_file ? afs_cat_file_fetch(cat, partition, rel, &qerr) : 0;
  if (r == 0) {
    /* Not a file: a fresh parent listing settles it without another query. */
    pthread_mutex_lock(&cat->mu);
    c = afs_cat_cache_answer(cat, afs_cat_part_get(cat, partition, false), rel, afs_cat_now(),
                             false, out);
    pthread_mutex_unlock(&cat->mu);
    if (c == C_NOENT || c == C_DIR)
      return to_kind(c);
  }
  if (r == 0) {
    char *dir = afs_cat_dirname(rel);
    r = afs_cat_list_fetch(cat, partition, dir, &qerr);
    free(dir);
  }
  pthread_mutex_lock(&cat->mu);
  p = afs_cat_part_get(cat, partition, false);
  if (r >= 0) {
    c = afs_cat_cache_answer(cat, p, rel, afs_cat_now(), true, out);
    pthread_mutex_unlock(&cat->mu);
    return c == C_MISS ? AFS_CAT_NOENT : to_kind(c);
  }
  /* MongoDB failed: serve whatever is cached, however old. */
  c = afs_cat_cache_answer(cat, p, rel, now, true, out);
  pthread_mutex_unlock(&cat->mu);
  if (c == C_FILE || c == C_DIR) {
    afs_debug("%s; serving %s:/%s from cache", qerr.msg, partition, rel);
    return to_kind(c);
  }
  afs_warn("%s:/%s: %s", partition, rel, qerr.msg);
  *err = qerr;
  return -1;
}

int afs_catalog_confirm(struct afs_catalog *cat, const char *partition, const char *path,
                        const char *id, struct afs_asset *out, struct afs_error *err) {
  while (*path == '/')
    path++;
  struct afs_asset a;
  pthread_mutex_lock(&cat->mu);
  uint64_t seq = cat->inval_seq;
  pthread_mutex_unlock(&cat->mu);
  int k = afs_cat_fetch_by_id(cat, id, &a, err);
  if (k < 0)
    return -1;
  bool match = k == 1 && !strcmp(a.status, AFS_ASSET_ACTIVE) && !strcmp(a.partition, partition) &&
               afs_cat_place(&a) && !a.derived_name && !strcmp(a.file_path, path);
  if (!match) {
    if (k == 1)
      afs_asset_free(&a);
    return afs_catalog_lookup(cat, partition, path, out, err);
  }
  pthread_mutex_lock(&cat->mu);
  struct part *p = afs_cat_part_get(cat, partition, true);
  struct node *n = afs_smap_get(&p->nodes, path);
  bool late = n && n->ghost && n->inval_seq > seq;
  /* A newer asset for the path may be known already: the newest one shows. */
  if (n && !n->is_dir && !n->ghost && n->a.id[0] && strcmp(n->a.id, a.id) != 0 &&
      n->a.created_ms > a.created_ms) {
    afs_asset_free(&a);
    pthread_mutex_unlock(&cat->mu);
    return afs_catalog_lookup(cat, partition, path, out, err);
  }
  if (out)
    afs_asset_copy(out, &a);
  n = afs_cat_file_put(p, path, &a, afs_cat_now());
  if (n && late)
    n->stamp = 0;
  pthread_mutex_unlock(&cat->mu);
  if (!n) { /* a directory is there */
    if (out)
      afs_asset_free(out);
    return AFS_CAT_DIR;
  }
  return AFS_CAT_FILE;
}

/* ".cuts/<part>/<rest>" parsing. Returns false if rel is not under .cuts. */
bool afs_cat_cuts_split(const char *rel, int *part, const char **rest) {
  if (strncmp(rel, ".cuts", 5) != 0 || (rel[5] && rel[5] != '/'))
    return false;
  *part = -1;
  *rest = NULL;
  if (!rel[5])
    return true;
  const char *s = rel + 6;
  const char *slash = strchr(s, '/');
  size_t len = slash ? (size_t)(slash - s) : strlen(s);
  for (int p = AFS_PART_SMALL; p < AFS_PART_COUNT; p++)
    if (strlen(afs_part_name(p)) == len && !strncmp(s, afs_part_name(p), len))
      *part = p;
  if (*part < 0) {
    *part = -2; /* unknown part name */
    return true;
  }
  *rest = slash ? slash + 1 : "";
  return true;
}

bool afs_cat_part_shown(const struct afs_asset *a, enum afs_part part) {
  return afs_part_applies(afs_content_kind(a->content_type), part) && *a->url_part[part];
}

static int lookup_cut(struct afs_catalog *cat, const char *partition, int part, const char *rest,
                      struct afs_asset *out, struct afs_error *err) {
  if (part == -2)
    return AFS_CAT_NOENT;
  if (part == -1 || !*rest)
    return AFS_CAT_DIR;
  struct afs_asset a;
  int k = lookup_plain(cat, partition, rest, &a, err);
  if (k == AFS_CAT_DIR || k < 0)
    return k;
  bool video = false;
  if (k == AFS_CAT_FILE) {
    video = afs_content_kind(a.content_type) == AFS_KIND_VIDEO;
    if (!video && afs_cat_part_shown(&a, part))
      goto found;
    afs_asset_free(&a);
  }
  size_t rl = strlen(rest);
  if (rl <= 4 || strcmp(rest + rl - 4, ".png") != 0)
    return AFS_CAT_NOENT;
  char *base = afs_xstrdup(rest);
  base[rl - 4] = 0;
  k = lookup_plain(cat, partition, base, &a, err);
  free(base);
  if (k != AFS_CAT_FILE)
    return k == AFS_CAT_DIR ? AFS_CAT_NOENT : k;
  if (afs_content_kind(a.content_type) != AFS_KIND_VIDEO || !afs_cat_part_shown(&a, part)) {
    afs_asset_free(&a);
    return AFS_CAT_NOENT;
  }
found:
  a.part = part;
  if (!afs_cat_part_size(cat, &a, part, &a.size, err)) {
    afs_asset_free(&a);
    return -1;
  }
  if (out)
    *out = a;
  else
    afs_asset_free(&a);
  return AFS_CAT_FILE;
}

int afs_catalog_lookup(struct afs_catalog *cat, const char *partition, const char *path,
                       struct afs_asset *out, struct afs_error *err) {
  int part;
  const char *rest;
  while (*path == '/')
    path++;
  if (afs_cat_cuts_split(path, &part, &rest))
    return lookup_cut(cat, partition, part, rest, out, err);
  return lookup_plain(cat, partition, path, out, err);
}
