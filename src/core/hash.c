/* The one hash (hash.h): 64-bit FNV-1a with the project's offset basis. */
#include "assetfs/hash.h"

uint64_t afs_hash_fnv1a64_add(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * AFS_HASH_FNV1A64_PRIME;
  return h;
}

uint64_t afs_hash_fnv1a64(const void *p, size_t n) {
  return afs_hash_fnv1a64_add(AFS_HASH_FNV1A64_BASIS, p, n);
}

uint64_t afs_hash_fnv1a64_str(const char *s) {
  uint64_t h = AFS_HASH_FNV1A64_BASIS;
  for (const unsigned char *b = (const unsigned char *)s; *b; b++)
    h = (h ^ *b) * AFS_HASH_FNV1A64_PRIME;
  return h;
}
