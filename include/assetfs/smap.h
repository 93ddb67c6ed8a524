/* The one string-keyed hash map of both programs (the shape of redis's dict and curl's
 * hash, minus what we do not use).
 *
 * Chained: an array of nb buckets (a power of two, or none while the map is empty),
 * each a singly linked list of entries. An entry holds its own copy of the key (the map
 * owns keys: put copies, del and clear free them), the key's hash (so growing never
 * rehashes a string and a lookup compares strings only on equal hashes) and a void*
 * value that the map never touches: values belong to the caller, who frees them after
 * del or through clear's callback. Values must not be NULL (get returns NULL for
 * "absent").
 *
 * The hash is afs_hash_fnv1a64_str (hash.h). The bucket array (64 at the first put) grows
 * fourfold when the count reaches the number of buckets (load factor 1; after growing
 * it is 1/4), so get, put and del take O(1) on average; it never shrinks (clear gives
 * it back). Out of memory aborts, as the
 * x-allocators do.
 *
 * Not thread-safe: callers hold their own lock. A zeroed struct afs_smap (or
 * AFS_SMAP_INIT) is an empty map; nothing is allocated before the first put. */
#ifndef ASSETFS_SMAP_H
#define ASSETFS_SMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct afs_smap_ent {
  char *key; /* the map's copy */
  void *val;
  uint64_t hash;
  struct afs_smap_ent *next;
};

struct afs_smap {
  struct afs_smap_ent **b; /* nb buckets, NULL while nb == 0 */
  size_t nb, n;            /* buckets, entries */
};

#define AFS_SMAP_INIT                                                                              \
  { 0 }

/* Makes *m an empty map. Only on a zeroed, new or cleared map: it leaks any entries. */
void afs_smap_init(struct afs_smap *m);

/* The number of entries. */
size_t afs_smap_count(const struct afs_smap *m);

/* The value stored under key, NULL if there is none. */
void *afs_smap_get(const struct afs_smap *m, const char *key);

/* Stores val (not NULL) under key: the map copies key when it is new; when key is
 * already there its value is replaced and the old value returned (the caller frees it
 * if it owns it). Returns NULL when key was new. May grow the map. */
void *afs_smap_put(struct afs_smap *m, const char *key, void *val);

/* Removes key and returns its value (the caller frees it if it owns it), NULL if key
 * was not there. Frees the map's copy of the key, so key may be the pointer an iterator
 * returned, which is no longer valid after the call. */
void *afs_smap_del(struct afs_smap *m, const char *key);

/* Removes every entry, calling free_val (if not NULL) on each value, and frees the
 * buckets: *m is an empty map again, ready for reuse. */
void afs_smap_clear(struct afs_smap *m, void (*free_val)(void *));

/* Iteration over every entry once, in no particular order:
 *
 *   struct afs_smap_iter it;
 *   const char *key;
 *   void *val;
 *   afs_smap_iter_init(&it, m);
 *   while (afs_smap_next(&it, &key, &val))
 *     ...
 *
 * While iterating, the caller may delete the entry just returned (afs_smap_del(m, key))
 * and may replace values of existing keys (afs_smap_put of a key that is there). Any
 * other put or del invalidates the iterator (a new key may grow the map; deleting
 * another entry may free the one the iterator goes to next). */
struct afs_smap_iter {
  const struct afs_smap *m;
  size_t i;                  /* next bucket to start */
  struct afs_smap_ent *next; /* next entry to return, NULL: look from bucket i */
};

void afs_smap_iter_init(struct afs_smap_iter *it, const struct afs_smap *m);

/* The next entry's key (the map's copy, valid until that entry is deleted) and value;
 * false (and *key, *val untouched) when every entry has been returned. key or val may be
 * NULL when not wanted. */
bool afs_smap_next(struct afs_smap_iter *it, const char **key, void **val);

#endif
