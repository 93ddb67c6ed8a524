/* The catalog's in-memory partition trees (cat->mu held throughout): nodes for the
 * directories implied by filePaths and for files (a copy of their record), indexed by
 * relative path; negative knowledge (listings that found a directory empty, and how far
 * a complete listing covers a name that is not in the tree); ghosts (invalidated files
 * that must be confirmed by MongoDB before they are believed either way) and the nodes
 * invalidated while a query ran, which that query's result must not overwrite; and the
 * public invalidation calls.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/log.h"
#include "assetfs/strutil.h"
#include "catalog/catalog_int.h"

static void node_free(struct node *n) {
  if (!n)
    return;
  afs_asset_free(&n->a);
  free(n->kids);
  free(n->rel);
  free(n);
}

static void node_free_v(void *v) {
  node_free(v);
}

void afs_cat_part_free(void *v) {
  struct part *p = v;
  if (!p)
    return;
  afs_smap_clear(&p->nodes, node_free_v);
  afs_smap_clear(&p->absent, free);
  free(p->name);
  free(p);
}

/* ---- tree (cat->mu held) ---- */

struct part *afs_cat_part_get(struct afs_catalog *cat, const char *name, bool create) {
  struct part *p = afs_smap_get(&cat->parts, name);
  if (p || !create)
    return p;
  p = afs_xcalloc(1, sizeof *p);
  p->name = afs_xstrdup(name);
  afs_smap_init(&p->nodes);
  afs_smap_init(&p->absent);
  p->root = afs_xcalloc(1, sizeof *p->root);
  p->root->rel = afs_xstrdup("");
  p->root->name = p->root->rel;
  p->root->is_dir = true;
  afs_smap_put(&p->nodes, "", p->root);
  afs_smap_put(&cat->parts, name, p);
  return p;
}

static void kid_add(struct node *parent, struct node *n) {
  if (parent->nkids == parent->kcap) {
    parent->kcap = parent->kcap ? parent->kcap * 2 : 8;
    parent->kids = afs_xrealloc(parent->kids, parent->kcap * sizeof *parent->kids);
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
void afs_cat_subtree_drop(struct part *p, struct node *n, bool keep_self) {
  while (n->nkids > 0) {
    struct node *k = n->kids[n->nkids - 1];
    afs_cat_subtree_drop(p, k, false);
  }
  if (keep_self)
    return;
  kid_remove(n);
  afs_smap_del(&p->nodes, n->rel);
  node_free(n);
}

static struct node *node_new(struct part *p, const char *rel, bool is_dir, double now) {
  struct node *n = afs_xcalloc(1, sizeof *n);
  n->rel = afs_xstrdup(rel);
  const char *slash = strrchr(n->rel, '/');
  n->name = slash ? slash + 1 : n->rel;
  n->is_dir = is_dir;
  n->stamp = now;
  afs_smap_put(&p->nodes, rel, n);
  return n;
}

char *afs_cat_dirname(const char *rel) {
  const char *slash = strrchr(rel, '/');
  if (!slash)
    return afs_xstrdup("");
  char *d = afs_xstrdup(rel);
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
  char *dir = afs_cat_dirname(rel);
  struct node *parent = *rel ? ensure_dir_at(p, dir, now, listed) : NULL;
  free(dir);
  if (n)
    afs_cat_subtree_drop(p, n, false);
  n = node_new(p, rel, true, now);
  n->listed = listed;
  if (parent)
    kid_add(parent, n);
  return n;
}

struct node *afs_cat_ensure_dir(struct part *p, const char *rel, double now) {
  return ensure_dir_at(p, rel, now, 0);
}

/* ---- negative knowledge (mu held) ---- */

#define ABSENT_MAX 4096 /* empty listings remembered per partition (then forgotten) */

double afs_cat_absent_at(struct part *p, const char *rel) {
  double *t = afs_smap_get(&p->absent, rel);
  return t ? *t : 0;
}

void afs_cat_absent_set(struct part *p, const char *rel, double t) {
  double *v = afs_smap_get(&p->absent, rel);
  if (!v) {
    if (p->absent.n >= ABSENT_MAX) {
      afs_smap_clear(&p->absent, free);
      afs_smap_init(&p->absent);
    }
    v = afs_xmalloc(sizeof *v);
    afs_smap_put(&p->absent, rel, v);
  }
  *v = t;
}

/* Forgets the empty listings at dir and below it. */
void afs_cat_absent_drop_under(struct part *p, const char *dir) {
  size_t dl = strlen(dir);
  struct afs_smap_iter it;
  const char *key;
  afs_smap_iter_init(&it, &p->absent);
  while (afs_smap_next(&it, &key, NULL))
    if (!dl || !strcmp(key, dir) || (!strncmp(key, dir, dl) && key[dl] == '/'))
      free(afs_smap_del(&p->absent, key)); /* the entry just returned: allowed */
}

/* Steps *anc (owned) up to its parent directory; false, unchanged, at the top. */
static bool anc_up(char **anc) {
  if (!**anc)
    return false;
  char *up = afs_cat_dirname(*anc);
  free(*anc);
  *anc = up;
  return true;
}

/* When the cache last knew everything under rel's parent: the newest complete listing
 * among rel's ancestors (a listing covers its whole subtree) or empty listing recorded
 * for one of them, up to the first file in the way. 0 when nothing covers rel. A name
 * that is not in the tree is absent as of that time. */
double afs_cat_coverage(struct part *p, const char *rel) {
  double best = 0;
  char *anc = afs_cat_dirname(rel);
  do {
    struct node *a = afs_smap_get(&p->nodes, anc);
    if (a && !a->is_dir)
      break;
    if (a && a->listed > best)
      best = a->listed;
    double t = afs_cat_absent_at(p, anc);
    if (t > best)
      best = t;
  } while (anc_up(&anc));
  free(anc);
  return best;
}

/* Something under dir changed in a way no listing saw: no ancestor's listing may answer
 * for it any more. */
static void uncover(struct part *p, const char *dir) {
  char *anc = afs_xstrdup(dir);
  do {
    struct node *a = afs_smap_get(&p->nodes, anc);
    if (a && a->is_dir)
      a->listed = 0;
    free(afs_smap_del(&p->absent, anc));
  } while (anc_up(&anc));
  free(anc);
}

/* Marks rel a ghost (the next lookup asks MongoDB), creating it if unknown. Missing
 * directories above it are created as covered as rel was, so that lookups of its
 * siblings still answer from the cache. */
static void ghost_put(struct afs_catalog *cat, struct part *p, const char *rel) {
  struct node *n = afs_smap_get(&p->nodes, rel);
  if (!n) {
    double cov = afs_cat_coverage(p, rel);
    char *dir = afs_cat_dirname(rel);
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

/* A node invalidated after a query started: what the query found there is older. */
struct late {
  char *rel;
  bool ghost;         /* still to be asked for */
  struct afs_asset a; /* else: the record confirmed since (file nodes only) */
  double stamp;
  uint64_t seq;
};

/* Nodes under d invalidated after sequence number seq: ghosts, and files confirmed by
 * MongoDB since their invalidation (an upload that completed meanwhile: a listing whose
 * query started before it must not hide it). Terminated by rel == NULL; caller frees
 * with late_restore. */
struct late *afs_cat_late_nodes(struct part *p, struct node *d, uint64_t seq) {
  size_t n = 0, cap = 4;
  struct late *out = afs_xcalloc(cap, sizeof *out);
  struct node **stack = afs_xmalloc(sizeof *stack * (p->nodes.n + 1));
  size_t sp = 0;
  stack[sp++] = d;
  while (sp) {
    struct node *x = stack[--sp];
    if (!x->is_dir && x->inval_seq > seq) {
      if (n + 1 >= cap) {
        out = afs_xrealloc(out, (cap *= 2) * sizeof *out);
      }
      memset(&out[n], 0, sizeof out[n]);
      out[n].rel = afs_xstrdup(x->rel);
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

void afs_cat_late_restore(struct afs_catalog *cat, struct part *p, struct late *v) {
  for (struct late *l = v; l->rel; l++) {
    struct node *n = afs_smap_get(&p->nodes, l->rel);
    if (l->ghost && (!n || !n->is_dir)) {
      ghost_put(cat, p, l->rel);
    } else if (!l->ghost) {
      n = afs_cat_file_put(p, l->rel, &l->a, l->stamp);
      if (n)
        n->inval_seq = l->seq;
    }
    afs_asset_free(&l->a);
    free(l->rel);
  }
  free(v);
}

/* Installs a file node for asset a (stolen). NULL (a freed) if a directory is there. */
struct node *afs_cat_file_put(struct part *p, const char *rel, struct afs_asset *a, double now) {
  struct node *n = afs_smap_get(&p->nodes, rel);
  if (n && n->is_dir) {
    afs_asset_free(a);
    return NULL;
  }
  if (!n) {
    char *dir = afs_cat_dirname(rel);
    struct node *parent = afs_cat_ensure_dir(p, dir, now);
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

/* ---- invalidation ---- */

void afs_catalog_invalidate_path(struct afs_catalog *cat, const char *partition, const char *path) {
  while (*path == '/')
    path++;
  pthread_mutex_lock(&cat->mu);
  struct part *p = afs_cat_part_get(cat, partition, false);
  struct node *n = p ? afs_smap_get(&p->nodes, path) : NULL;
  if (p && !p->exists)
    p->checked = 0; /* a first asset may have made the partition */
  if (n && n->is_dir) {
    n->stamp = 0;
    uncover(p, path);
    cat->dir_inval_seq = ++cat->inval_seq;
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
  struct part *p = afs_cat_part_get(cat, partition, false);
  cat->dir_inval_seq = ++cat->inval_seq;
  if (p) {
    struct node *n = afs_smap_get(&p->nodes, dirpath);
    if (n && n != p->root)
      afs_cat_subtree_drop(p, n, false);
    else if (n)
      afs_cat_subtree_drop(p, n, true);
    char *dir = afs_cat_dirname(dirpath);
    struct node *parent = *dirpath ? afs_smap_get(&p->nodes, dir) : p->root;
    if (parent)
      parent->stamp = 0;
    /* No listing above it may answer for the subtree any more. */
    uncover(p, dir);
    free(dir);
    afs_cat_absent_drop_under(p, dirpath);
    p->root->listed = *dirpath ? p->root->listed : 0;
  }
  pthread_mutex_unlock(&cat->mu);
}

void afs_catalog_note_new_dir(struct afs_catalog *cat, const char *partition, const char *dirpath) {
  while (*dirpath == '/')
    dirpath++;
  if (!*dirpath)
    return;
  pthread_mutex_lock(&cat->mu);
  struct part *p = afs_cat_part_get(cat, partition, true);
  struct node *n = afs_smap_get(&p->nodes, dirpath);
  if (!n)
    afs_cat_absent_set(p, dirpath, afs_cat_now());
  pthread_mutex_unlock(&cat->mu);
}

void afs_catalog_invalidate_partition(struct afs_catalog *cat, const char *partition) {
  pthread_mutex_lock(&cat->mu);
  struct part *p = afs_smap_del(&cat->parts, partition);
  cat->dir_inval_seq = ++cat->inval_seq;
  pthread_mutex_unlock(&cat->mu);
  afs_cat_part_free(p);
}

void afs_catalog_invalidate_all(struct afs_catalog *cat) {
  pthread_mutex_lock(&cat->mu);
  afs_smap_clear(&cat->parts, afs_cat_part_free);
  afs_smap_init(&cat->parts);
  cat->disc_at = 0;
  cat->dir_inval_seq = ++cat->inval_seq;
  pthread_mutex_unlock(&cat->mu);
}
