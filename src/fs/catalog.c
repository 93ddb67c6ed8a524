/* The namespace cache: partition trees filled from CosyncAsset queries (see catalog.h).
 *
 * Each partition has a tree of nodes (directories implied by filePaths, files holding a
 * copy of their record) indexed by relative path. A directory listing is one query for
 * the whole subtree under it, which replaces that subtree in the cache; a lookup of a
 * stale file is one query by (partition, filePath). Invalidated files become "ghosts"
 * that must be confirmed by MongoDB before they are believed either way.
 *
 * Locking: cat->mu protects the trees and the partition list. It is never held during a
 * MongoDB round trip or a callback; results are installed in one critical section.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/log.h"
#include "catalog_int.h"

static char *xstrdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d)
    abort();
  return d;
}

static bool fresh(double stamp, double ttl, double now) { return stamp > 0 && now - stamp < ttl; }

/* ---- options, lifetime ---- */

void afs_catalog_opts_default(struct afs_catalog_opts *o) {
  memset(o, 0, sizeof *o);
  o->attr_ttl = 1.0;
  o->list_ttl = 3.0;
  o->refresh_margin = 60.0;
  o->refresh_timeout = 15.0;
}

static void node_free(struct node *n) {
  if (!n)
    return;
  afs_asset_free(&n->a);
  free(n->kids);
  free(n->rel);
  free(n);
}

static void node_free_v(void *v) { node_free(v); }

static void part_free(void *v) {
  struct part *p = v;
  if (!p)
    return;
  afs_smap_clear(&p->nodes, node_free_v);
  afs_smap_clear(&p->absent, free);
  free(p->name);
  free(p);
}

static void strv_free(char **v) {
  if (!v)
    return;
  for (char **s = v; *s; s++)
    free(*s);
  free(v);
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
  cat->upload_partition = o->upload_partition ? xstrdup(o->upload_partition) : NULL;
  if (o->partitions) {
    size_t n = 0;
    while (o->partitions[n])
      n++;
    cat->partitions = calloc(n + 1, sizeof *cat->partitions);
    if (!cat->partitions)
      abort();
    for (size_t i = 0; i < n; i++)
      cat->partitions[i] = xstrdup(o->partitions[i]);
  }
  cat->uid = xstrdup(o->uid);
  cat->session_id = xstrdup(o->session_id);
  cat->attr_ttl = o->attr_ttl >= 0 ? o->attr_ttl : 1.0;
  cat->list_ttl = o->list_ttl >= 0 ? o->list_ttl : 3.0;
  cat->refresh_margin = o->refresh_margin >= 0 ? o->refresh_margin : 60.0;
  cat->refresh_timeout = o->refresh_timeout > 0 ? o->refresh_timeout : 15.0;
  pthread_mutex_init(&cat->mu, NULL);
  pthread_mutex_init(&cat->ref_mu, NULL);
  pthread_cond_init(&cat->ref_cv, NULL);
  afs_smap_init(&cat->parts);
  afs_smap_init(&cat->refs);
  afs_smap_init(&cat->relisting);
  pthread_cond_init(&cat->bg_cv, NULL);
  return cat;
}

char *afs_catalog_query_stats(struct afs_catalog *cat) {
  uint64_t v[AFS_CATQ_COUNT], total = 0;
  for (int i = 0; i < AFS_CATQ_COUNT; i++)
    total += v[i] = __atomic_load_n(&cat->nq[i], __ATOMIC_RELAXED);
  char *out = NULL;
  if (asprintf(&out, "total=%llu file=%llu list=%llu id=%llu partition=%llu distinct=%llu "
               "call=%llu", (unsigned long long)total, (unsigned long long)v[AFS_CATQ_FILE],
               (unsigned long long)v[AFS_CATQ_LIST], (unsigned long long)v[AFS_CATQ_ID],
               (unsigned long long)v[AFS_CATQ_PARTITION],
               (unsigned long long)v[AFS_CATQ_DISTINCT],
               (unsigned long long)v[AFS_CATQ_CALL]) < 0)
    abort();
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
  afs_smap_clear(&cat->parts, part_free);
  afs_cat_refs_free(cat);
  strv_free(cat->partitions);
  strv_free(cat->disc);
  free(cat->upload_partition);
  free(cat->uid);
  free(cat->session_id);
  pthread_mutex_destroy(&cat->mu);
  pthread_mutex_destroy(&cat->ref_mu);
  pthread_cond_destroy(&cat->ref_cv);
  free(cat);
}

/* ---- tree (cat->mu held) ---- */

static struct part *part_get(struct afs_catalog *cat, const char *name, bool create) {
  struct part *p = afs_smap_get(&cat->parts, name);
  if (p || !create)
    return p;
  p = calloc(1, sizeof *p);
  if (!p)
    abort();
  p->name = xstrdup(name);
  afs_smap_init(&p->nodes);
  afs_smap_init(&p->absent);
  p->root = calloc(1, sizeof *p->root);
  if (!p->root)
    abort();
  p->root->rel = xstrdup("");
  p->root->name = p->root->rel;
  p->root->is_dir = true;
  afs_smap_put(&p->nodes, "", p->root);
  afs_smap_put(&cat->parts, name, p);
  return p;
}

static void kid_add(struct node *parent, struct node *n) {
  if (parent->nkids == parent->kcap) {
    parent->kcap = parent->kcap ? parent->kcap * 2 : 8;
    parent->kids = realloc(parent->kids, parent->kcap * sizeof *parent->kids);
    if (!parent->kids)
      abort();
  }
  n->parent = parent;
  n->slot = parent->nkids;
  parent->kids[parent->nkids++] = n;
}

static void kid_remove(struct node *n) {
  struct node *p = n->parent;
  if (!p)
    return;
  struct node *last = p->kids[--p->nkids];
  p->kids[n->slot] = last;
  last->slot = n->slot;
  n->parent = NULL;
}

/* Frees n's descendants (and n itself unless keep_self). */
static void subtree_drop(struct part *p, struct node *n, bool keep_self) {
  while (n->nkids > 0) {
    struct node *k = n->kids[n->nkids - 1];
    subtree_drop(p, k, false);
  }
  if (keep_self)
    return;
  kid_remove(n);
  afs_smap_del(&p->nodes, n->rel);
  node_free(n);
}

static struct node *node_new(struct part *p, const char *rel, bool is_dir, double now) {
  struct node *n = calloc(1, sizeof *n);
  if (!n)
    abort();
  n->rel = xstrdup(rel);
  const char *slash = strrchr(n->rel, '/');
  n->name = slash ? slash + 1 : n->rel;
  n->is_dir = is_dir;
  n->stamp = now;
  afs_smap_put(&p->nodes, rel, n);
  return n;
}

static char *dirname_of(const char *rel) {
  const char *slash = strrchr(rel, '/');
  if (!slash)
    return xstrdup("");
  char *d = xstrdup(rel);
  d[slash - rel] = 0;
  return d;
}

/* The directory node at rel, creating it and its ancestors (a file in the way is
 * replaced: a directory implied by a deeper path wins over a file of the same name).
 * New nodes get stamp `now` and listing time `listed`. */
static struct node *ensure_dir_at(struct part *p, const char *rel, double now, double listed) {
  struct node *n = afs_smap_get(&p->nodes, rel);
  if (n && n->is_dir)
    return n;
  char *dir = dirname_of(rel);
  struct node *parent = *rel ? ensure_dir_at(p, dir, now, listed) : NULL;
  free(dir);
  if (n)
    subtree_drop(p, n, false);
  n = node_new(p, rel, true, now);
  n->listed = listed;
  if (parent)
    kid_add(parent, n);
  return n;
}

static struct node *ensure_dir(struct part *p, const char *rel, double now) {
  return ensure_dir_at(p, rel, now, 0);
}

/* ---- negative knowledge (mu held) ---- */

#define ABSENT_MAX 4096 /* empty listings remembered per partition (then forgotten) */

static double absent_at(struct part *p, const char *rel) {
  double *t = afs_smap_get(&p->absent, rel);
  return t ? *t : 0;
}

static void absent_set(struct part *p, const char *rel, double t) {
  double *v = afs_smap_get(&p->absent, rel);
  if (!v) {
    if (p->absent.n >= ABSENT_MAX) {
      afs_smap_clear(&p->absent, free);
      afs_smap_init(&p->absent);
    }
    if (!(v = malloc(sizeof *v)))
      abort();
    afs_smap_put(&p->absent, rel, v);
  }
  *v = t;
}

/* Forgets the empty listings at dir and below it. */
static void absent_drop_under(struct part *p, const char *dir) {
  size_t dl = strlen(dir), nk = 0;
  char **keys = malloc((p->absent.n + 1) * sizeof *keys);
  if (!keys)
    abort();
  for (size_t i = 0; i < p->absent.nb; i++)
    for (struct smap_ent *e = p->absent.b[i]; e; e = e->next)
      if (!dl || !strcmp(e->key, dir) || (!strncmp(e->key, dir, dl) && e->key[dl] == '/'))
        keys[nk++] = xstrdup(e->key);
  for (size_t i = 0; i < nk; i++) {
    free(afs_smap_del(&p->absent, keys[i]));
    free(keys[i]);
  }
  free(keys);
}

/* When the cache last knew everything under rel's parent: the newest complete listing
 * among rel's ancestors (a listing covers its whole subtree) or empty listing recorded
 * for one of them, up to the first file in the way. 0 when nothing covers rel. A name
 * that is not in the tree is absent as of that time. */
static double coverage(struct part *p, const char *rel) {
  double best = 0;
  char *anc = dirname_of(rel);
  for (;;) {
    struct node *a = afs_smap_get(&p->nodes, anc);
    if (a && !a->is_dir)
      break;
    if (a && a->listed > best)
      best = a->listed;
    double t = absent_at(p, anc);
    if (t > best)
      best = t;
    if (!*anc)
      break;
    char *up = dirname_of(anc);
    free(anc);
    anc = up;
  }
  free(anc);
  return best;
}

/* Something under dir changed in a way no listing saw: no ancestor's listing may answer
 * for it any more. */
static void uncover(struct part *p, const char *dir) {
  char *anc = xstrdup(dir);
  for (;;) {
    struct node *a = afs_smap_get(&p->nodes, anc);
    if (a && a->is_dir)
      a->listed = 0;
    free(afs_smap_del(&p->absent, anc));
    if (!*anc)
      break;
    char *up = dirname_of(anc);
    free(anc);
    anc = up;
  }
  free(anc);
}

/* Marks rel a ghost (the next lookup asks MongoDB), creating it if unknown. Missing
 * directories above it are created as covered as rel was, so that lookups of its
 * siblings still answer from the cache. */
static void ghost_put(struct afs_catalog *cat, struct part *p, const char *rel) {
  struct node *n = afs_smap_get(&p->nodes, rel);
  if (!n) {
    double cov = coverage(p, rel);
    char *dir = dirname_of(rel);
    struct node *parent = ensure_dir_at(p, dir, 0, cov);
    free(dir);
    n = node_new(p, rel, false, 0);
    kid_add(parent, n);
  } else if (!n->ghost) {
    n->was_derived = n->a.derived_name;
  }
  n->ghost = true;
  n->stamp = 0;
  n->inval_seq = ++cat->inval_seq;
}

static struct node *file_put(struct part *p, const char *rel, struct afs_asset *a, double now);

/* A node invalidated after a query started: what the query found there is older. */
struct late {
  char *rel;
  bool ghost;          /* still to be asked for */
  struct afs_asset a;  /* else: the record confirmed since (file nodes only) */
  double stamp;
  uint64_t seq;
};

/* Nodes under d invalidated after sequence number seq: ghosts, and files confirmed by
 * MongoDB since their invalidation (an upload that completed meanwhile: a listing whose
 * query started before it must not hide it). Terminated by rel == NULL; caller frees
 * with late_restore. */
static struct late *late_nodes(struct part *p, struct node *d, uint64_t seq) {
  size_t n = 0, cap = 4;
  struct late *out = calloc(cap, sizeof *out);
  struct node **stack = malloc(sizeof *stack * (p->nodes.n + 1));
  size_t sp = 0;
  if (!out || !stack)
    abort();
  stack[sp++] = d;
  while (sp) {
    struct node *x = stack[--sp];
    if (!x->is_dir && x->inval_seq > seq) {
      if (n + 1 >= cap) {
        if (!(out = realloc(out, (cap *= 2) * sizeof *out)))
          abort();
      }
      memset(&out[n], 0, sizeof out[n]);
      out[n].rel = xstrdup(x->rel);
      out[n].ghost = x->ghost;
      out[n].stamp = x->stamp;
      out[n].seq = x->inval_seq;
      if (!x->ghost)
        afs_asset_copy(&out[n].a, &x->a);
      n++;
    }
    for (size_t k = 0; k < x->nkids; k++)
      stack[sp++] = x->kids[k];
  }
  free(stack);
  out[n].rel = NULL;
  return out;
}

static void late_restore(struct afs_catalog *cat, struct part *p, struct late *v) {
  for (struct late *l = v; l->rel; l++) {
    struct node *n = afs_smap_get(&p->nodes, l->rel);
    if (l->ghost && (!n || !n->is_dir)) {
      ghost_put(cat, p, l->rel);
    } else if (!l->ghost) {
      n = file_put(p, l->rel, &l->a, l->stamp);
      if (n)
        n->inval_seq = l->seq;
    }
    afs_asset_free(&l->a);
    free(l->rel);
  }
  free(v);
}

/* Installs a file node for asset a (stolen). NULL (a freed) if a directory is there. */
static struct node *file_put(struct part *p, const char *rel, struct afs_asset *a, double now) {
  struct node *n = afs_smap_get(&p->nodes, rel);
  if (n && n->is_dir) {
    afs_asset_free(a);
    return NULL;
  }
  if (!n) {
    char *dir = dirname_of(rel);
    struct node *parent = ensure_dir(p, dir, now);
    free(dir);
    n = node_new(p, rel, false, now);
    kid_add(parent, n);
  } else {
    afs_asset_free(&n->a);
  }
  n->a = *a;
  memset(a, 0, sizeof *a);
  n->ghost = false;
  n->from_listing = false;
  n->stamp = now;
  return n;
}

/* ---- queries (no lock held) ---- */

typedef void (*each_doc_fn)(void *ctx, const bson_t *doc);

#define DB_BACKOFF_MS 3000

bool afs_cat_db_gate(struct afs_catalog *cat, struct afs_error *err) {
  int64_t until = __atomic_load_n(&cat->db_down_until_ms, __ATOMIC_RELAXED);
  if (until && (int64_t)(afs_cat_now() * 1000) < until)
    return afs_error_set(err, EIO, "MongoDB is unreachable (failed moments ago)");
  return true;
}

void afs_cat_db_result(struct afs_catalog *cat, bool ok, const struct afs_error *err) {
  int64_t v = 0;
  /* Only connection trouble trips the breaker, not a bad query. */
  if (!ok && err && err->code == EHOSTUNREACH)
    v = (int64_t)(afs_cat_now() * 1000) + DB_BACKOFF_MS;
  if (ok || v)
    __atomic_store_n(&cat->db_down_until_ms, v, __ATOMIC_RELAXED);
}

static bool run_find(struct afs_catalog *cat, enum afs_catq kind, const bson_t *filter,
                     const bson_t *opts, each_doc_fn each, void *ctx, struct afs_error *err) {
  bson_error_t berr;
  const bson_t *doc;
  if (!afs_cat_db_gate(cat, err))
    return false;
  afs_cat_count(cat, kind);
  mongoc_client_t *c = afs_db_pop(cat->db);
  if (!c)
    return afs_error_set(err, EIO, "no MongoDB client available");
  mongoc_collection_t *coll = afs_db_coll(cat->db, c, AFS_COLL_ASSET);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
  while (mongoc_cursor_next(cur, &doc))
    each(ctx, doc);
  bool ok = !mongoc_cursor_error(cur, &berr);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  afs_db_push(cat->db, c);
  if (!ok) {
    afs_db_error(err, &berr, "CosyncAsset query");
    afs_cat_db_result(cat, false, err);
    err->code = EIO;
    return false;
  }
  afs_cat_db_result(cat, true, NULL);
  return true;
}

int afs_cat_fetch_by_id(struct afs_catalog *cat, const char *id, struct afs_asset *out,
                        struct afs_error *err);

struct asset_vec {
  struct afs_asset *v;
  size_t n, cap;
};

static void collect(void *ctx, const bson_t *doc) {
  struct asset_vec *av = ctx;
  struct afs_asset a;
  if (!afs_asset_from_bson(doc, &a))
    return;
  if (av->n == av->cap) {
    av->cap = av->cap ? av->cap * 2 : 64;
    av->v = realloc(av->v, av->cap * sizeof *av->v);
    if (!av->v)
      abort();
  }
  av->v[av->n++] = a;
}

static void vec_free(struct asset_vec *av) {
  for (size_t i = 0; i < av->n; i++)
    afs_asset_free(&av->v[i]);
  free(av->v);
}

int afs_cat_fetch_by_id(struct afs_catalog *cat, const char *id, struct afs_asset *out,
                        struct afs_error *err) {
  bson_oid_t oid;
  if (!bson_oid_is_valid(id, strlen(id))) {
    afs_error_set(err, EINVAL, "bad asset id '%s'", id);
    return -1;
  }
  bson_oid_init_from_string(&oid, id);
  bson_t *q = BCON_NEW("_id", BCON_OID(&oid));
  struct asset_vec av = {0};
  bool ok = run_find(cat, AFS_CATQ_ID, q, NULL, collect, &av, err);
  bson_destroy(q);
  int ret = !ok ? -1 : av.n > 0 ? 1 : 0;
  if (ret == 1) {
    *out = av.v[0];
    memset(&av.v[0], 0, sizeof av.v[0]);
  }
  vec_free(&av);
  return ret;
}

/* Turns a record's filePath into a usable relative path, or derives one (sets
 * derived_name). False if the asset cannot be shown. */
static bool place(struct afs_asset *a) {
  const char *fp = a->file_path;
  while (*fp == '/')
    fp++;
  if (*fp && afs_filepath_check(fp, strlen(fp), NULL)) {
    if (fp != a->file_path) {
      char *t = xstrdup(fp);
      free(a->file_path);
      a->file_path = t;
    }
    a->derived_name = false;
    return true;
  }
  if (*a->file_path)
    afs_debug("asset %s: unusable filePath, deriving a name from its key", a->id);
  char *d = afs_naming_display_name(a->path, a->uid);
  if (!d)
    return false;
  free(a->file_path);
  a->file_path = d;
  a->derived_name = true;
  return true;
}

/* Order for clash resolution: by path; a real filePath first (newest first, the others
 * are about to be superseded); then derived names, oldest first. */
static int clash_cmp(const void *x, const void *y) {
  const struct afs_asset *a = x, *b = y;
  int c = strcmp(a->file_path, b->file_path);
  if (c)
    return c;
  if (a->derived_name != b->derived_name)
    return a->derived_name ? 1 : -1;
  if (a->created_ms != b->created_ms) {
    bool older_first = a->derived_name;
    return (a->created_ms < b->created_ms) == older_first ? -1 : 1;
  }
  return strcmp(a->id, b->id);
}

/* "dir/name.ext" -> "dir/name (abcdef).ext" with the last 6 hex digits of the id. */
static char *suffixed(const char *rel, const char *id) {
  const char *base = strrchr(rel, '/');
  base = base ? base + 1 : rel;
  const char *dot = strrchr(base, '.');
  if (!dot || dot == base)
    dot = rel + strlen(rel);
  size_t idl = strlen(id);
  const char *tail = id + (idl > 6 ? idl - 6 : 0);
  size_t n = strlen(rel) + 16;
  char *out = malloc(n);
  if (!out)
    abort();
  snprintf(out, n, "%.*s (%s)%s", (int)(dot - rel), rel, tail, dot);
  return out;
}

/* Escapes regex metacharacters. Caller frees. */
static char *regex_quote(const char *s) {
  char *out = malloc(strlen(s) * 2 + 1), *o = out;
  if (!out)
    abort();
  for (; *s; s++) {
    if (strchr("\\^$.|?*+()[]{}", *s))
      *o++ = '\\';
    *o++ = *s;
  }
  *o = 0;
  return out;
}

/* One query for the subtree under dirpath; replaces it in the cache. Returns 1 when
 * dirpath is a directory, 0 when it is not, -1 on error. */
static int list_fetch(struct afs_catalog *cat, const char *partition, const char *dirpath,
                      struct afs_error *err) {
  bson_t q = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&q, "_partition", partition);
  BSON_APPEND_UTF8(&q, "status", "active");
  char *prefix = NULL;
  if (*dirpath) {
    /* The subtree, plus every record without filePath: their derived names may fall
     * anywhere, and clashes need all of them. */
    size_t pl = strlen(dirpath) + 2;
    prefix = malloc(pl);
    if (!prefix)
      abort();
    snprintf(prefix, pl, "%s/", dirpath);
    char *quoted = regex_quote(prefix);
    size_t rl = strlen(quoted) + 2;
    char *re = malloc(rl);
    if (!re)
      abort();
    snprintf(re, rl, "^%s", quoted);
    bson_t or, alt;
    BSON_APPEND_ARRAY_BEGIN(&q, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &alt);
    BSON_APPEND_REGEX(&alt, "filePath", re, "");
    bson_append_document_end(&or, &alt);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &alt);
    BSON_APPEND_NULL(&alt, "filePath");
    bson_append_document_end(&or, &alt);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "2", &alt);
    BSON_APPEND_UTF8(&alt, "filePath", "");
    bson_append_document_end(&or, &alt);
    bson_append_array_end(&q, &or);
    free(quoted);
    free(re);
  }
  struct asset_vec av = {0};
  pthread_mutex_lock(&cat->mu);
  uint64_t seq = cat->inval_seq;
  pthread_mutex_unlock(&cat->mu);
  double t0 = afs_cat_now();
  bool ok = run_find(cat, AFS_CATQ_LIST, &q, NULL, collect, &av, err);
  bson_destroy(&q);
  if (!ok) {
    free(prefix);
    vec_free(&av);
    return -1;
  }
  afs_debug("listed %s:/%s: %zu records in %.0f ms", partition, dirpath, av.n,
            (afs_cat_now() - t0) * 1000);

  /* Names, filtered to the subtree, then clashes resolved. */
  size_t keep = 0;
  for (size_t i = 0; i < av.n; i++) {
    struct afs_asset *a = &av.v[i];
    if (!place(a) || (prefix && strncmp(a->file_path, prefix, strlen(prefix)) != 0)) {
      afs_asset_free(a);
      continue;
    }
    av.v[keep++] = *a;
  }
  av.n = keep;
  if (av.n > 1)
    qsort(av.v, av.n, sizeof *av.v, clash_cmp);
  for (size_t i = 1, first = 0; i < av.n; i++) {
    if (strcmp(av.v[i].file_path, av.v[first].file_path) != 0) {
      first = i;
      continue;
    }
    if (av.v[i].derived_name) {
      char *s = suffixed(av.v[i].file_path, av.v[i].id);
      free(av.v[i].file_path);
      av.v[i].file_path = s;
    } else {
      afs_debug("asset %s hidden: %s also has a newer record", av.v[i].id, av.v[i].file_path);
      free(av.v[i].file_path);
      av.v[i].file_path = xstrdup("");
    }
  }

  pthread_mutex_lock(&cat->mu);
  /* Staleness is counted from when the query started. */
  double now = t0;
  struct part *p = part_get(cat, partition, true);
  size_t shown = 0;
  for (size_t i = 0; i < av.n; i++)
    shown += *av.v[i].file_path != 0;
  absent_drop_under(p, dirpath);
  if (*dirpath && shown == 0) {
    /* Not a directory (any more): remember that nothing is under it, without making
     * up its ancestors. */
    struct node *gone = afs_smap_get(&p->nodes, dirpath);
    struct late *late = gone ? late_nodes(p, gone, seq) : NULL;
    if (gone && gone != p->root)
      subtree_drop(p, gone, false);
    absent_set(p, dirpath, now);
    if (late)
      late_restore(cat, p, late);
    pthread_mutex_unlock(&cat->mu);
    vec_free(&av);
    free(prefix);
    return 0;
  }
  struct node *d = ensure_dir(p, dirpath, now);
  struct late *late = late_nodes(p, d, seq);
  subtree_drop(p, d, true);
  size_t installed = 0;
  for (size_t i = 0; i < av.n; i++) {
    if (!*av.v[i].file_path) {
      afs_asset_free(&av.v[i]);
      continue;
    }
    char *rel = xstrdup(av.v[i].file_path);
    struct node *fn = file_put(p, rel, &av.v[i], now);
    if (fn) {
      fn->from_listing = true;
      installed++;
    }
    free(rel);
  }
  /* Every directory in the subtree is now completely known. */
  struct node **stack = malloc(sizeof *stack * (p->nodes.n + 1));
  size_t sp = 0;
  if (!stack)
    abort();
  stack[sp++] = d;
  while (sp) {
    struct node *n = stack[--sp];
    n->listed = now;
    n->stamp = now;
    for (size_t k = 0; k < n->nkids; k++)
      if (n->kids[k]->is_dir)
        stack[sp++] = n->kids[k];
  }
  free(stack);
  int ret = 1;
  if (*dirpath && installed == 0) {
    subtree_drop(p, d, false);
    absent_set(p, dirpath, now);
    ret = 0;
  }
  late_restore(cat, p, late);
  pthread_mutex_unlock(&cat->mu);
  free(av.v);
  free(prefix);
  return ret;
}

/* One query by (partition, filePath). 1 found (installed), 0 not found, -1 error. */
static int file_fetch(struct afs_catalog *cat, const char *partition, const char *rel,
                      struct afs_error *err) {
  bson_t *q = BCON_NEW("_partition", BCON_UTF8(partition), "status", BCON_UTF8("active"),
                       "filePath", BCON_UTF8(rel));
  struct asset_vec av = {0};
  pthread_mutex_lock(&cat->mu);
  uint64_t seq = cat->inval_seq;
  pthread_mutex_unlock(&cat->mu);
  bool ok = run_find(cat, AFS_CATQ_FILE, q, NULL, collect, &av, err);
  bson_destroy(q);
  if (!ok) {
    vec_free(&av);
    return -1;
  }
  size_t best = 0;
  for (size_t i = 1; i < av.n; i++)
    if (av.v[i].created_ms > av.v[best].created_ms)
      best = i;
  int ret = 0;
  pthread_mutex_lock(&cat->mu);
  struct part *p = part_get(cat, partition, true);
  struct node *n = afs_smap_get(&p->nodes, rel);
  bool late = n && !n->is_dir && n->inval_seq > seq; /* invalidated while we asked */
  if (av.n > 0 && place(&av.v[best]) && !av.v[best].derived_name) {
    n = file_put(p, rel, &av.v[best], afs_cat_now());
    ret = n ? 1 : 0;
    if (n && late)
      n->stamp = 0; /* this answer is served, the next lookup asks again */
  } else if (n && !late && !n->is_dir && !n->a.derived_name && !n->was_derived) {
    subtree_drop(p, n, false);
  }
  pthread_mutex_unlock(&cat->mu);
  vec_free(&av);
  return ret;
}

/* ---- partitions ---- */

static void strv_push(char ***v, size_t *n, const char *s) {
  for (size_t i = 0; i < *n; i++)
    if (!strcmp((*v)[i], s))
      return;
  *v = realloc(*v, (*n + 2) * sizeof **v);
  if (!*v)
    abort();
  (*v)[(*n)++] = xstrdup(s);
  (*v)[*n] = NULL;
}

static bool discover(struct afs_catalog *cat, char ***out, struct afs_error *err) {
  bson_error_t berr;
  bson_t reply;
  if (!afs_cat_db_gate(cat, err))
    return false;
  bson_t *cmd = BCON_NEW("distinct", BCON_UTF8(AFS_COLL_ASSET), "key", BCON_UTF8("_partition"),
                         "query", "{", "status", BCON_UTF8("active"), "}");
  afs_cat_count(cat, AFS_CATQ_DISTINCT);
  mongoc_client_t *c = afs_db_pop(cat->db);
  mongoc_database_t *d = mongoc_client_get_database(c, cat->db->dbname);
  bool ok = mongoc_database_command_simple(d, cmd, NULL, &reply, &berr);
  mongoc_database_destroy(d);
  afs_db_push(cat->db, c);
  bson_destroy(cmd);
  char **v = NULL;
  size_t n = 0;
  if (ok) {
    bson_iter_t it, arr;
    if (bson_iter_init_find(&it, &reply, "values") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
      while (bson_iter_next(&arr))
        if (BSON_ITER_HOLDS_UTF8(&arr) && *bson_iter_utf8(&arr, NULL))
          strv_push(&v, &n, bson_iter_utf8(&arr, NULL));
    }
  } else {
    afs_db_error(err, &berr, "listing partitions");
    afs_cat_db_result(cat, false, err);
    err->code = EIO;
  }
  bson_destroy(&reply);
  if (!ok)
    return false;
  if (!v) {
    v = calloc(1, sizeof *v);
    if (!v)
      abort();
  }
  *out = v;
  return true;
}

bool afs_catalog_partitions(struct afs_catalog *cat, afs_catalog_partition_cb cb, void *ctx,
                            struct afs_error *err) {
  char **list = NULL;
  size_t n = 0;
  if (cat->partitions) {
    for (char **s = cat->partitions; *s; s++)
      strv_push(&list, &n, *s);
  } else {
    pthread_mutex_lock(&cat->mu);
    bool have = cat->disc && fresh(cat->disc_at, cat->list_ttl, afs_cat_now());
    if (have)
      for (char **s = cat->disc; *s; s++)
        strv_push(&list, &n, *s);
    pthread_mutex_unlock(&cat->mu);
    if (!have) {
      char **found = NULL;
      struct afs_error derr = {0};
      bool ok = discover(cat, &found, &derr);
      pthread_mutex_lock(&cat->mu);
      if (ok) {
        strv_free(cat->disc);
        cat->disc = found;
        cat->disc_at = afs_cat_now();
      } else if (cat->disc) {
        afs_warn("%s; showing the partitions known before", derr.msg);
      }
      if (cat->disc)
        for (char **s = cat->disc; *s; s++)
          strv_push(&list, &n, *s);
      bool none = !cat->disc;
      pthread_mutex_unlock(&cat->mu);
      if (none && !cat->upload_partition) {
        *err = derr;
        return false;
      }
    }
  }
  if (cat->upload_partition && *cat->upload_partition)
    strv_push(&list, &n, cat->upload_partition);
  for (size_t i = 0; i < n; i++)
    if (cb(ctx, list[i]))
      break;
  strv_free(list);
  return true;
}

static int find_part_cb(void *ctx, const char *p) {
  const char **want = ctx;
  if (!strcmp(*want, p)) {
    *want = NULL;
    return 1;
  }
  return 0;
}

static void count_doc(void *ctx, const bson_t *doc) {
  (void)doc;
  (*(int *)ctx)++;
}

/* Is partition a top-level directory? Configured ones are; otherwise one indexed
 * find-one (not the partition discovery, which scans), cached for list_ttl. */
static bool partition_exists(struct afs_catalog *cat, const char *partition,
                             struct afs_error *err) {
  if (cat->upload_partition && !strcmp(partition, cat->upload_partition))
    return true;
  if (cat->partitions) {
    for (char **s = cat->partitions; *s; s++)
      if (!strcmp(*s, partition))
        return true;
    return afs_error_set(err, ENOENT, "no partition %s", partition);
  }
  pthread_mutex_lock(&cat->mu);
  struct part *p = part_get(cat, partition, false);
  double now = afs_cat_now();
  int known = -1;
  if (p && fresh(p->checked, cat->list_ttl, now))
    known = p->exists;
  else if (p && fresh(p->root->listed, cat->list_ttl, now) && p->root->nkids > 0)
    known = 1;
  else if (cat->disc && fresh(cat->disc_at, cat->list_ttl, now)) {
    const char *want = partition;
    for (char **s = cat->disc; *s; s++)
      find_part_cb(&want, *s);
    known = want == NULL;
  }
  pthread_mutex_unlock(&cat->mu);
  if (known < 0) {
    int n = 0;
    bson_t *q = BCON_NEW("_partition", BCON_UTF8(partition), "status", BCON_UTF8("active"));
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1), "projection", "{", "_id", BCON_INT32(1), "}");
    bool ok = run_find(cat, AFS_CATQ_PARTITION, q, opts, count_doc, &n, err);
    bson_destroy(q);
    bson_destroy(opts);
    if (!ok)
      return false;
    pthread_mutex_lock(&cat->mu);
    p = part_get(cat, partition, true);
    p->checked = afs_cat_now();
    p->exists = n > 0;
    pthread_mutex_unlock(&cat->mu);
    known = n > 0;
  }
  if (!known)
    return afs_error_set(err, ENOENT, "no partition %s", partition);
  return true;
}

/* ---- lookup ---- */

enum cached { C_MISS, C_FILE, C_DIR, C_NOENT };

/* What the cache says about rel, and whether it may be believed now (mu held). */
static enum cached cache_answer(struct afs_catalog *cat, struct part *p, const char *rel,
                                double now, bool any_age, struct afs_asset *out) {
  if (!p)
    return C_MISS;
  struct node *n = afs_smap_get(&p->nodes, rel);
  if (n && !n->ghost) {
    /* A file seen in a listing is as fresh as that listing: `ls -l` of a big directory
     * then needs one query, not one per entry once attr_ttl has run out. */
    double ttl = n->is_dir || (n->from_listing && cat->list_ttl > cat->attr_ttl)
                     ? cat->list_ttl
                     : cat->attr_ttl;
    if (any_age || fresh(n->stamp, ttl, now)) {
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
  double cov = coverage(p, rel);
  if (any_age ? cov > 0 : fresh(cov, cat->list_ttl, now))
    return C_NOENT;
  return C_MISS;
}

static int to_kind(enum cached c) {
  return c == C_FILE ? AFS_CAT_FILE : c == C_DIR ? AFS_CAT_DIR : AFS_CAT_NOENT;
}

/* ---- stale-while-revalidate for big directories ---- */

#define BIG_DIR 64        /* entries from which a stale entry triggers a re-listing */
#define STALE_MAX 30.0    /* seconds past list_ttl a stale entry may still be served */

struct relist {
  struct afs_catalog *cat;
  char *partition, *dir, *key;
};

static void *relist_main(void *arg) {
  struct relist *rl = arg;
  struct afs_error err = {0};
  if (list_fetch(rl->cat, rl->partition, rl->dir, &err) < 0)
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

/* A stale file learnt from the listing of a big directory: answer from the cache and
 * re-list the directory in the background (once), so `ls -l` of 10,000 files never
 * turns into 10,000 queries when MongoDB is slow. mu held; true if answered. */
static bool serve_stale(struct afs_catalog *cat, struct part *p, struct node *n, double now,
                        struct afs_asset *out) {
  if (!n || n->is_dir || n->ghost || !n->from_listing || !n->parent)
    return false;
  struct node *d = n->parent;
  if (d->nkids < BIG_DIR || now - d->listed > cat->list_ttl + STALE_MAX)
    return false;
  size_t kl = strlen(p->name) + strlen(d->rel) + 2;
  char *key = malloc(kl);
  if (!key)
    abort();
  snprintf(key, kl, "%s\x1f%s", p->name, d->rel);
  if (!afs_smap_get(&cat->relisting, key)) {
    struct relist *rl = calloc(1, sizeof *rl);
    pthread_t th;
    pthread_attr_t attr;
    if (!rl)
      abort();
    rl->cat = cat;
    rl->partition = xstrdup(p->name);
    rl->dir = xstrdup(d->rel);
    rl->key = xstrdup(key);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, relist_main, rl) == 0) {
      afs_smap_put(&cat->relisting, key, rl);
      cat->bg_running++;
    } else {
      free(rl->partition);
      free(rl->dir);
      free(rl->key);
      free(rl);
    }
    pthread_attr_destroy(&attr);
  }
  free(key);
  if (out)
    afs_asset_copy(out, &n->a);
  return true;
}

static int lookup_plain(struct afs_catalog *cat, const char *partition, const char *rel,
                        struct afs_asset *out, struct afs_error *err) {
  if (!*rel) {
    struct afs_error perr = {0};
    if (partition_exists(cat, partition, &perr))
      return AFS_CAT_DIR;
    if (perr.code == ENOENT)
      return AFS_CAT_NOENT;
    /* MongoDB down: a partition we have cached is still a directory. */
    pthread_mutex_lock(&cat->mu);
    struct part *kp = part_get(cat, partition, false);
    bool known = kp && (kp->exists || kp->root->nkids > 0);
    pthread_mutex_unlock(&cat->mu);
    if (known)
      return AFS_CAT_DIR;
    *err = perr;
    return -1;
  }
  pthread_mutex_lock(&cat->mu);
  struct part *p = part_get(cat, partition, false);
  double now = afs_cat_now();
  enum cached c = cache_answer(cat, p, rel, now, false, out);
  struct node *n = p ? afs_smap_get(&p->nodes, rel) : NULL;
  bool try_file = !n || (!n->is_dir && !n->a.derived_name && !n->was_derived);
  if (c == C_MISS && serve_stale(cat, p, n, now, out))
    c = C_FILE;
  if (c == C_MISS && p && try_file && !n) {
    /* A name not known at all, in a parent known to be small (or empty): its listing
     * answers this name and its siblings' in one query, where asking for the name first
     * costs two when it does not exist. Big or unknown parents, known files gone stale
     * and ghosts (most often an upload that just completed): one record first (on
     * FerretDB/PostgreSQL that query is indexed; a listing's prefix match is not). */
    char *dir = dirname_of(rel);
    struct node *pn = afs_smap_get(&p->nodes, dir);
    try_file = !((pn && pn->is_dir && pn->listed > 0 && pn->nkids < BIG_DIR) ||
                 (!pn && absent_at(p, dir) > 0));
    free(dir);
  }
  pthread_mutex_unlock(&cat->mu);
  if (c != C_MISS)
    return to_kind(c);

  struct afs_error qerr = {0};
  int r = try_file ? file_fetch(cat, partition, rel, &qerr) : 0;
  if (r == 0) {
    /* Not a file: a fresh parent listing settles it without another query. */
    pthread_mutex_lock(&cat->mu);
    c = cache_answer(cat, part_get(cat, partition, false), rel, afs_cat_now(), false, out);
    pthread_mutex_unlock(&cat->mu);
    if (c == C_NOENT || c == C_DIR)
      return to_kind(c);
  }
  if (r == 0) {
    char *dir = dirname_of(rel);
    r = list_fetch(cat, partition, dir, &qerr);
    free(dir);
  }
  pthread_mutex_lock(&cat->mu);
  p = part_get(cat, partition, false);
  if (r >= 0) {
    c = cache_answer(cat, p, rel, afs_cat_now(), true, out);
    pthread_mutex_unlock(&cat->mu);
    return c == C_MISS ? AFS_CAT_NOENT : to_kind(c);
  }
  /* MongoDB failed: serve whatever is cached, however old. */
  c = cache_answer(cat, p, rel, now, true, out);
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
  bool match = k == 1 && !strcmp(a.status, "active") && !strcmp(a.partition, partition) &&
               place(&a) && !a.derived_name && !strcmp(a.file_path, path);
  if (!match) {
    if (k == 1)
      afs_asset_free(&a);
    return afs_catalog_lookup(cat, partition, path, out, err);
  }
  pthread_mutex_lock(&cat->mu);
  struct part *p = part_get(cat, partition, true);
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
  n = file_put(p, path, &a, afs_cat_now());
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
static bool cuts_split(const char *rel, int *part, const char **rest) {
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

static bool part_shown(const struct afs_asset *a, enum afs_part part) {
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
    if (!video && part_shown(&a, part))
      goto found;
    afs_asset_free(&a);
  }
  size_t rl = strlen(rest);
  if (rl <= 4 || strcmp(rest + rl - 4, ".png") != 0)
    return AFS_CAT_NOENT;
  char *base = xstrdup(rest);
  base[rl - 4] = 0;
  k = lookup_plain(cat, partition, base, &a, err);
  free(base);
  if (k != AFS_CAT_FILE)
    return k == AFS_CAT_DIR ? AFS_CAT_NOENT : k;
  if (afs_content_kind(a.content_type) != AFS_KIND_VIDEO || !part_shown(&a, part)) {
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
  if (cuts_split(path, &part, &rest))
    return lookup_cut(cat, partition, part, rest, out, err);
  return lookup_plain(cat, partition, path, out, err);
}

/* ---- list ---- */

struct snap_ent {
  char *name;
  bool is_dir;
  struct afs_asset a;
};

/* Copies the listing of d (mu held). */
static struct snap_ent *snapshot(struct node *d, size_t *n) {
  struct snap_ent *v = calloc(d->nkids + 1, sizeof *v);
  size_t k = 0;
  if (!v)
    abort();
  for (size_t i = 0; i < d->nkids; i++) {
    struct node *c = d->kids[i];
    if (c->ghost)
      continue;
    v[k].name = xstrdup(c->name);
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
  struct part *p = part_get(cat, partition, false);
  struct node *d = p ? afs_smap_get(&p->nodes, dirpath) : NULL;
  double now = afs_cat_now();
  if (d && d->is_dir && d->listed > 0 &&
      (any_age || (fresh(d->listed, cat->list_ttl, now) && !has_ghosts(d)))) {
    *v = snapshot(d, n);
    ret = 1;
  } else if (!any_age && *dirpath && (!d || !d->is_dir) &&
             (cache_answer(cat, p, dirpath, now, false, NULL) == C_NOENT ||
              (p && fresh(absent_at(p, dirpath), cat->list_ttl, now)))) {
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
    return afs_error_set(err, ENOENT, "%s:/%s: no such directory",
                         partition, dirpath);
  struct afs_error qerr = {0};
  int r = list_fetch(cat, partition, dirpath, &qerr);
  if (r == 0 && *dirpath)
    return afs_error_set(err, ENOENT, "%s:/%s: no such directory", partition, dirpath);
  if (r < 0) {
    if (cached_listing(cat, partition, dirpath, true, v, n) == 1) {
      afs_debug("%s; serving the listing of %s:/%s from cache", qerr.msg, partition, dirpath);
      return true;
    }
    if (!*dirpath) {
      struct afs_error perr = {0};
      if (!partition_exists(cat, partition, &perr) && perr.code == ENOENT)
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
  if (cuts_split(dirpath, &part, &rest)) {
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
      if (!part_shown(a, part))
        continue;
      bool video = afs_content_kind(a->content_type) == AFS_KIND_VIDEO;
      struct afs_error serr = {0};
      a->part = part;
      if (!afs_cat_part_size(cat, a, part, &a->size, &serr)) {
        afs_warn("%s: size of its %s cut unknown: %s", a->file_path, afs_part_name(part),
                 serr.msg);
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

/* ---- invalidation ---- */

void afs_catalog_invalidate_path(struct afs_catalog *cat, const char *partition,
                                 const char *path) {
  while (*path == '/')
    path++;
  pthread_mutex_lock(&cat->mu);
  struct part *p = part_get(cat, partition, false);
  struct node *n = p ? afs_smap_get(&p->nodes, path) : NULL;
  if (p && !p->exists)
    p->checked = 0; /* a first asset may have made the partition */
  if (n && n->is_dir) {
    n->stamp = 0;
    uncover(p, path);
  } else if (p && *path) {
    /* A ghost makes the next lookup of this name ask MongoDB even if a listing that
     * covers it is fresh, and makes the parent's listing stale; other names of the
     * directory still answer from that listing. */
    ghost_put(cat, p, path);
  }
  pthread_mutex_unlock(&cat->mu);
}

void afs_catalog_invalidate_dir(struct afs_catalog *cat, const char *partition,
                                const char *dirpath) {
  while (*dirpath == '/')
    dirpath++;
  pthread_mutex_lock(&cat->mu);
  struct part *p = part_get(cat, partition, false);
  if (p) {
    struct node *n = afs_smap_get(&p->nodes, dirpath);
    if (n && n != p->root)
      subtree_drop(p, n, false);
    else if (n)
      subtree_drop(p, n, true);
    char *dir = dirname_of(dirpath);
    struct node *parent = *dirpath ? afs_smap_get(&p->nodes, dir) : p->root;
    if (parent)
      parent->stamp = 0;
    /* No listing above it may answer for the subtree any more. */
    uncover(p, dir);
    free(dir);
    absent_drop_under(p, dirpath);
    p->root->listed = *dirpath ? p->root->listed : 0;
  }
  pthread_mutex_unlock(&cat->mu);
}

void afs_catalog_note_new_dir(struct afs_catalog *cat, const char *partition,
                              const char *dirpath) {
  while (*dirpath == '/')
    dirpath++;
  if (!*dirpath)
    return;
  pthread_mutex_lock(&cat->mu);
  struct part *p = part_get(cat, partition, true);
  struct node *n = afs_smap_get(&p->nodes, dirpath);
  if (!n)
    absent_set(p, dirpath, afs_cat_now());
  pthread_mutex_unlock(&cat->mu);
}

void afs_catalog_invalidate_partition(struct afs_catalog *cat, const char *partition) {
  pthread_mutex_lock(&cat->mu);
  struct part *p = afs_smap_del(&cat->parts, partition);
  pthread_mutex_unlock(&cat->mu);
  part_free(p);
}

void afs_catalog_invalidate_all(struct afs_catalog *cat) {
  pthread_mutex_lock(&cat->mu);
  afs_smap_clear(&cat->parts, part_free);
  afs_smap_init(&cat->parts);
  cat->disc_at = 0;
  pthread_mutex_unlock(&cat->mu);
}
