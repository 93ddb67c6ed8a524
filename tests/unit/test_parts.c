/* The multipart part schedule and the table of what the bucket holds (staging/parts.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "afs_test.h"
#include "staging/parts.h"

static void test_schedule(void) {
  const int64_t MiB = 1 << 20;
  CHECK(afs_mp_part_off(1) == 0 && afs_mp_part_size(1) == 8 * MiB);
  CHECK(afs_mp_part_off(2) == 8 * MiB);
  CHECK(afs_mp_part_size(1000) == 8 * MiB && afs_mp_part_size(1001) == 16 * MiB);
  CHECK(afs_mp_part_off(1001) == 8000 * MiB);
  CHECK(afs_mp_part_off(2001) == 8000 * MiB + 16000 * MiB);
  /* Boundaries are contiguous and part_at inverts them, across the tiers. */
  for (int n = 1; n <= AFS_MP_MAX_PARTS; n++) {
    int64_t off = afs_mp_part_off(n), size = afs_mp_part_size(n);
    if (afs_mp_part_at(off) != n || afs_mp_part_at(off + size - 1) != n ||
        (n < AFS_MP_MAX_PARTS && afs_mp_part_off(n + 1) != off + size)) {
      CHECK(!"part boundaries");
      break;
    }
  }
  CHECK(afs_mp_part_off(AFS_MP_MAX_PARTS) + afs_mp_part_size(AFS_MP_MAX_PARTS) >= AFS_MP_MAX_FILE);
  CHECK(afs_mp_part_size(AFS_MP_MAX_PARTS) <= (5LL << 30)); /* S3's largest part */
  CHECK(afs_mp_part_count(0) == 1 && afs_mp_part_count(1) == 1);
  CHECK(afs_mp_part_count(8 * MiB) == 1 && afs_mp_part_count(8 * MiB + 1) == 2);
  CHECK(afs_mp_part_count(6LL << 30) == 768);
  CHECK(afs_mp_part_count(AFS_MP_MAX_FILE) <= AFS_MP_MAX_PARTS);
}

static void test_table(void) {
  const int64_t MiB = 1 << 20;
  struct afs_mp *mp = NULL;
  struct afs_mp *m = afs_mp_for(&mp, "aaaaaaaaaaaaaaaaaaaaaaaa");
  CHECK(m == mp && !afs_mp_clean(m, 1));
  afs_mp_dirty(m, 0, 20 * MiB); /* parts 1..3 */
  for (int n = 1; n <= 3; n++) {
    struct afs_mp_part *p = afs_mp_part(m, n);
    strcpy(p->etag, "e");
    p->sent_gen = p->gen;
  }
  CHECK(afs_mp_clean(m, 1) && afs_mp_clean(m, 3) && !afs_mp_clean(m, 4));
  afs_mp_dirty(m, 8 * MiB - 1, 2); /* the boundary of 1 and 2 */
  CHECK(!afs_mp_clean(m, 1) && !afs_mp_clean(m, 2) && afs_mp_clean(m, 3));
  afs_mp_dirty(m, 17 * MiB, -1); /* truncated inside part 3 */
  CHECK(!afs_mp_clean(m, 3));
  /* URLs: a batch, then not past its time */
  char **urls = calloc(2, sizeof *urls);
  urls[0] = strdup("u5");
  urls[1] = strdup("u6");
  afs_mp_set_urls(m, 5, urls, 2, 1000);
  CHECK(afs_mp_url(m, 4, 0) == NULL && !strcmp(afs_mp_url(m, 6, 0), "u6"));
  CHECK(afs_mp_url(m, 7, 0) == NULL && afs_mp_url(m, 5, 1000) == NULL);
  m->upload_id = strdup("up");
  /* Another record: everything starts over. */
  afs_mp_part(m, 3)->sent_gen = afs_mp_part(m, 3)->gen;
  CHECK(afs_mp_clean(m, 3));
  CHECK(afs_mp_for(&mp, "bbbbbbbbbbbbbbbbbbbbbbbb") == m);
  CHECK(!afs_mp_clean(m, 3) && m->upload_id == NULL && afs_mp_url(m, 5, 0) == NULL);
  afs_mp_free(mp);
}

int main(void) {
  test_schedule();
  test_table();
  TEST_MAIN_END();
}
