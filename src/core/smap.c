/* The one string map (smap.h): chained buckets, map-owned keys, cached hashes, growing
 * fourfold at load factor 1. */
#include "assetfs/smap.h"

#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/hash.h"

#define SMAP_MIN_BUCKETS 64

/* The bucket of hash h among nb (a power of two): FNV-1a's low bits, as they are. They
 * depend on every byte and spread names that differ in a few characters (file-1,
 * file-2, ...) better than random; folding the high half in made misses 1.5x slower on
 * 100k such names. */
static size_t bucket(uint64_t h, size_t nb) {
  return (size_t)h & (nb - 1);
}

void afs_smap_init(struct afs_smap *m) {
  m->b = NULL;
  m->nb = m->n = 0;
}

size_t afs_smap_count(const struct afs_smap *m) {
  return m->n;
}

static struct afs_smap_ent *find(const struct afs_smap *m, const char *key, uint64_t h) {
  if (!m->nb)
    return NULL;
  for (struct afs_smap_ent *e = m->b[bucket(h, m->nb)]; e; e = e->next)
    if (e->hash == h && !strcmp(e->key, key))
      return e;
  return NULL;
}

void *afs_smap_get(const struct afs_smap *m, const char *key) {
  struct afs_smap_ent *e = find(m, key, afs_hash_fnv1a64_str(key));
  return e ? e->val : NULL;
}

/* Moves every entry into a bucket array of nb buckets. */
static void rehash(struct afs_smap *m, size_t nb) {
  struct afs_smap_ent **b = afs_xcalloc(nb, sizeof *b);
  for (size_t i = 0; i < m->nb; i++) {
    struct afs_smap_ent *e = m->b[i], *next;
    for (; e; e = next) {
      next = e->next;
      size_t k = bucket(e->hash, nb);
      e->next = b[k];
      b[k] = e;
    }
  }
  free(m->b);
  m->b = b;
  m->nb = nb;
}

void *afs_smap_put(struct afs_smap *m, const char *key, void *val) {
  uint64_t h = afs_hash_fnv1a64_str(key);
  struct afs_smap_ent *e = find(m, key, h);
  if (e) {
    void *old = e->val;
    e->val = val;
    return old;
  }
  if (!m->nb)
    rehash(m, SMAP_MIN_BUCKETS);
  else if (m->n >= m->nb)
    rehash(m, m->nb * 4);
  e = afs_xmalloc(sizeof *e);
  e->key = afs_xstrdup(key);
  e->val = val;
  e->hash = h;
  size_t k = bucket(h, m->nb);
  e->next = m->b[k];
  m->b[k] = e;
  m->n++;
  return NULL;
}

void *afs_smap_del(struct afs_smap *m, const char *key) {
  if (!m->nb)
    return NULL;
  uint64_t h = afs_hash_fnv1a64_str(key);
  for (struct afs_smap_ent **pp = &m->b[bucket(h, m->nb)]; *pp; pp = &(*pp)->next) {
    struct afs_smap_ent *e = *pp;
    if (e->hash == h && !strcmp(e->key, key)) {
      void *v = e->val;
      *pp = e->next;
      free(e->key); /* may be key itself: not read after this */
      free(e);
      m->n--;
      return v;
    }
  }
  return NULL;
}

void afs_smap_clear(struct afs_smap *m, void (*free_val)(void *)) {
  for (size_t i = 0; i < m->nb; i++) {
    struct afs_smap_ent *e = m->b[i], *next;
    for (; e; e = next) {
      next = e->next;
      if (free_val)
        free_val(e->val);
      free(e->key);
      free(e);
    }
  }
  free(m->b);
  afs_smap_init(m);
}

void afs_smap_iter_init(struct afs_smap_iter *it, const struct afs_smap *m) {
  it->m = m;
  it->i = 0;
  it->next = NULL;
}

bool afs_smap_next(struct afs_smap_iter *it, const char **key, void **val) {
  struct afs_smap_ent *e = it->next;
  while (!e && it->i < it->m->nb)
    e = it->m->b[it->i++];
  if (!e)
    return false;
  it->next = e->next; /* read now: the caller may delete e */
  if (key)
    *key = e->key;
  if (val)
    *val = e->val;
  return true;
}
