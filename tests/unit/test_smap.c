/* The one hash (include/assetfs/hash.h) and the one string map (include/assetfs/smap.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "afs_test.h"
#include "assetfs/clock.h"
#include "assetfs/hash.h"
#include "assetfs/smap.h"

/* Values computed with the five copies of FNV-1a before core/hash.c. The staging folder
 * of a session is "session-%016llx" of afs_hash_fnv1a64_str(session_id) and the broker's
 * key timestamp of a non-ObjectId id is 1e12 + hash(id) % 1e12: both are persisted. */
static void test_hash_pinned(void) {
  CHECK(afs_hash_fnv1a64_str("") == 0x14650fb0739d0383ULL);
  CHECK(afs_hash_fnv1a64_str("a") == 0x44bd8ad473cd9906ULL);
  CHECK(afs_hash_fnv1a64_str("foobar") == 0x88fad7c0a8ff07f2ULL);
  CHECK(afs_hash_fnv1a64_str("session-1") == 0x4d10e391942d5843ULL);
  CHECK(afs_hash_fnv1a64_str("mount-42") == 0x5323cad284d58235ULL);
  CHECK(afs_hash_fnv1a64_str("1d2c3b4a-0000-4000-8000-00000000beef") == 0x18e2ec8d03cf0945ULL);
  CHECK(1000000000000LL + (int64_t)(afs_hash_fnv1a64_str("abc") % 1000000000000ULL) ==
        1503745875709LL);
  CHECK(1000000000000LL + (int64_t)(afs_hash_fnv1a64_str("record-1") % 1000000000000ULL) ==
        1983783972340LL);
  CHECK(1000000000000LL + (int64_t)(afs_hash_fnv1a64_str("42") % 1000000000000ULL) ==
        1576941854501LL);
  /* Not the published FNV-1a basis (see hash.h): "" would be 0xcbf29ce484222325. */
  CHECK(afs_hash_fnv1a64_str("") != 0xcbf29ce484222325ULL);
  /* The byte and string forms agree; add continues a hash. */
  CHECK(afs_hash_fnv1a64("foobar", 6) == afs_hash_fnv1a64_str("foobar"));
  CHECK(afs_hash_fnv1a64(NULL, 0) == AFS_HASH_FNV1A64_BASIS);
  CHECK(afs_hash_fnv1a64_add(afs_hash_fnv1a64("foo", 3), "bar", 3) ==
        afs_hash_fnv1a64_str("foobar"));
  /* The staging index's (partition, 0xff, path) hash, as it was. */
  uint64_t h = afs_hash_fnv1a64_add(afs_hash_fnv1a64_str("p"), "\xff", 1);
  CHECK(afs_hash_fnv1a64_add(h, "a/b", 3) == 0xeeca947ab849b9e0ULL);
}

static void test_basic(void) {
  struct afs_smap m = AFS_SMAP_INIT;
  int a = 1, b = 2, c = 3;
  CHECK(afs_smap_count(&m) == 0);
  CHECK(afs_smap_get(&m, "x") == NULL);
  CHECK(afs_smap_del(&m, "x") == NULL);
  CHECK(afs_smap_put(&m, "x", &a) == NULL);
  CHECK(afs_smap_put(&m, "", &b) == NULL); /* the empty key is a key */
  CHECK(afs_smap_count(&m) == 2);
  CHECK(afs_smap_get(&m, "x") == &a);
  CHECK(afs_smap_get(&m, "") == &b);
  CHECK(afs_smap_get(&m, "xx") == NULL);
  CHECK(afs_smap_put(&m, "x", &c) == &a); /* replace returns the old value */
  CHECK(afs_smap_count(&m) == 2);
  CHECK(afs_smap_get(&m, "x") == &c);
  /* The map owns its keys: the caller's buffer may change after put. */
  char buf[8] = "key";
  afs_smap_put(&m, buf, &a);
  strcpy(buf, "zzz");
  CHECK(afs_smap_get(&m, "key") == &a);
  CHECK(afs_smap_get(&m, "zzz") == NULL);
  CHECK(afs_smap_del(&m, "x") == &c);
  CHECK(afs_smap_del(&m, "x") == NULL);
  CHECK(afs_smap_get(&m, "x") == NULL);
  CHECK(afs_smap_count(&m) == 2);
  afs_smap_clear(&m, NULL);
  CHECK(afs_smap_count(&m) == 0 && m.nb == 0 && m.b == NULL);
  /* Reusable after clear, and init on a cleared map is harmless. */
  afs_smap_init(&m);
  afs_smap_put(&m, "again", &b);
  CHECK(afs_smap_get(&m, "again") == &b);
  afs_smap_clear(&m, NULL);
  afs_smap_clear(&m, NULL); /* clearing an empty map */
}

static int freed;
static void count_free(void *v) {
  freed++;
  free(v);
}

#define BIG 100000

static void key_of(char *buf, size_t n, int i) {
  /* Long common prefixes and suffixes, one differing part: the worst case for a weak
   * hash. */
  snprintf(buf, n, "partition/dir/sub/file-%d.jpg", i);
}

static void test_big(void) {
  struct afs_smap m = AFS_SMAP_INIT;
  char k[64];
  int64_t t0 = afs_monotonic_ns();
  for (int i = 0; i < BIG; i++) {
    int *v = malloc(sizeof *v);
    *v = i;
    key_of(k, sizeof k, i);
    CHECK(afs_smap_put(&m, k, v) == NULL);
  }
  int64_t t1 = afs_monotonic_ns();
  CHECK(afs_smap_count(&m) == BIG);
  CHECK(m.nb >= m.n && (m.nb & (m.nb - 1)) == 0); /* grew, load factor <= 1 */
  int bad = 0;
  for (int r = 0; r < 10; r++)
    for (int i = 0; i < BIG; i++) {
      key_of(k, sizeof k, i);
      int *v = afs_smap_get(&m, k);
      bad += !v || *v != i;
    }
  int64_t t2 = afs_monotonic_ns();
  CHECK(bad == 0);
  printf("smap: %d puts in %.1f ms, %d gets in %.1f ms (%.0f ns each, with its snprintf), %zu "
         "buckets\n",
         BIG, (t1 - t0) / 1e6, 10 * BIG, (t2 - t1) / 1e6, (double)(t2 - t1) / (10.0 * BIG), m.nb);

  /* Collisions: chains of several entries exist, and every entry of every chain is
   * found. */
  size_t longest = 0, chained = 0;
  for (size_t i = 0; i < m.nb; i++) {
    size_t len = 0;
    for (struct afs_smap_ent *e = m.b[i]; e; e = e->next) {
      len++;
      bad += afs_smap_get(&m, e->key) != e->val;
    }
    if (len > longest)
      longest = len;
    chained += len > 1;
  }
  CHECK(chained > 0 && bad == 0);
  CHECK(longest < 16); /* a spread hash: FNV-1a chains stay short at load factor <= 1 */
  printf("smap: %zu buckets hold more than one entry, longest chain %zu\n", chained, longest);

  /* Misses, near-misses and prefixes. */
  CHECK(afs_smap_get(&m, "partition/dir/sub/file-.jpg") == NULL);
  CHECK(afs_smap_get(&m, "partition/dir/sub/file-1.jp") == NULL);
  CHECK(afs_smap_get(&m, "partition/dir/sub/file-100000.jpg") == NULL);

  /* Delete the even keys. */
  for (int i = 0; i < BIG; i += 2) {
    key_of(k, sizeof k, i);
    int *v = afs_smap_del(&m, k);
    bad += !v || *v != i;
    free(v);
  }
  CHECK(bad == 0);
  CHECK(afs_smap_count(&m) == BIG / 2);
  for (int i = 0; i < BIG; i++) {
    key_of(k, sizeof k, i);
    int *v = afs_smap_get(&m, k);
    bad += (i % 2) ? (!v || *v != i) : (v != NULL);
  }
  CHECK(bad == 0);

  freed = 0;
  afs_smap_clear(&m, count_free);
  CHECK(freed == BIG / 2);
  CHECK(afs_smap_count(&m) == 0);
}

static void test_iterate(void) {
  struct afs_smap m = AFS_SMAP_INIT;
  struct afs_smap_iter it;
  const char *key;
  void *val;
  afs_smap_iter_init(&it, &m);
  CHECK(!afs_smap_next(&it, &key, &val)); /* empty, nothing allocated */

  enum { N = 5000 };
  static int vals[N];
  static unsigned char seen[N];
  char k[32];
  for (int i = 0; i < N; i++) {
    vals[i] = i;
    snprintf(k, sizeof k, "k%d", i);
    afs_smap_put(&m, k, &vals[i]);
  }
  /* Every entry exactly once, its key matching its value. */
  memset(seen, 0, sizeof seen);
  int n = 0, bad = 0;
  afs_smap_iter_init(&it, &m);
  while (afs_smap_next(&it, &key, &val)) {
    int i = *(int *)val;
    snprintf(k, sizeof k, "k%d", i);
    bad += strcmp(k, key) != 0 || seen[i]++;
    n++;
  }
  CHECK(n == N && bad == 0);

  /* Deleting the entry just returned, and replacing values, while iterating. */
  memset(seen, 0, sizeof seen);
  n = 0;
  afs_smap_iter_init(&it, &m);
  while (afs_smap_next(&it, &key, &val)) {
    int i = *(int *)val;
    bad += seen[i]++;
    n++;
    if (i % 3 == 0)
      afs_smap_del(&m, key); /* key is freed here */
    else
      afs_smap_put(&m, key, &vals[(i + 1) % N]);
  }
  CHECK(n == N && bad == 0);
  CHECK(afs_smap_count(&m) == N - (N + 2) / 3);
  for (int i = 0; i < N; i++) {
    snprintf(k, sizeof k, "k%d", i);
    int *v = afs_smap_get(&m, k);
    bad += (i % 3 == 0) ? v != NULL : (!v || *v != (i + 1) % N);
  }
  CHECK(bad == 0);

  /* Deleting everything while iterating leaves an empty map. */
  afs_smap_iter_init(&it, &m);
  while (afs_smap_next(&it, &key, NULL))
    afs_smap_del(&m, key);
  CHECK(afs_smap_count(&m) == 0);
  afs_smap_iter_init(&it, &m);
  CHECK(!afs_smap_next(&it, NULL, NULL));
  afs_smap_clear(&m, NULL);
}

int main(void) {
  test_hash_pinned();
  test_basic();
  test_big();
  test_iterate();
  TEST_MAIN_END();
}
