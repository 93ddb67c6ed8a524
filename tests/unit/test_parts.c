/* The multipart part schedule and the table of what the bucket holds (staging/parts.h),
 * and which parts of a file based on an asset are still the asset's (staging/base.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afs_test.h"
#include "staging/base.h"
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
  CHECK(m == mp && !afs_mp_clean(m, 1, -1));
  afs_mp_dirty(m, 0, 20 * MiB); /* parts 1..3 */
  for (int n = 1; n <= 3; n++) {
    struct afs_mp_part *p = afs_mp_part(m, n);
    strcpy(p->etag, "e");
    p->sent_gen = p->gen;
    p->sent_len = n < 3 ? 8 * MiB : 4 * MiB; /* 20 MiB: part 3 is short */
  }
  /* a short last part is clean only at the size it was sent for */
  CHECK(afs_mp_clean(m, 3, 20 * MiB) && !afs_mp_clean(m, 3, 21 * MiB) && !afs_mp_clean(m, 3, -1));
  CHECK(!afs_mp_clean(m, 3, 30 * MiB) && afs_mp_clean(m, 2, 30 * MiB));
  CHECK(afs_mp_clean(m, 1, -1) && afs_mp_clean(m, 3, 20 * MiB) && !afs_mp_clean(m, 4, -1));
  afs_mp_dirty(m, 8 * MiB - 1, 2); /* the boundary of 1 and 2 */
  CHECK(!afs_mp_clean(m, 1, -1) && !afs_mp_clean(m, 2, -1) && afs_mp_clean(m, 3, 20 * MiB));
  afs_mp_dirty(m, 17 * MiB, -1); /* truncated inside part 3 */
  CHECK(!afs_mp_clean(m, 3, 17 * MiB));
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
  CHECK(afs_mp_clean(m, 3, 20 * MiB));
  CHECK(afs_mp_for(&mp, "bbbbbbbbbbbbbbbbbbbbbbbb") == m);
  CHECK(!afs_mp_clean(m, 3, 20 * MiB) && m->upload_id == NULL && afs_mp_url(m, 5, 0) == NULL);
  afs_mp_free(mp);
}

/* The parts log: only parts whose bytes still match their ETag (MD5) come back, and
 * only for the record it names. */
static void test_log(void) {
  char dir[] = "/tmp/afs-parts-XXXXXX", path[64], cmd[96];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/0001", dir);
  const int64_t part = AFS_MP_BASE_PART, size = 2 * part + 100;
  FILE *f = fopen(path, "w");
  for (int64_t i = 0; i < size; i++)
    fputc((int)(i % 251), f);
  fclose(f);
  /* md5 of the first part, the second part and the 100-byte tail, by md5sum(1) */
  char etag[3][40];
  for (int n = 0; n < 3; n++) {
    snprintf(cmd, sizeof cmd, "dd if=%s bs=8M skip=%d count=1 2>/dev/null | md5sum", path, n);
    FILE *p = popen(cmd, "r");
    CHECK(p && fscanf(p, "%32s", etag[n]) == 1);
    pclose(p);
  }
  struct afs_mp *mp = NULL;
  afs_mp_for(&mp, "cccccccccccccccccccccccc");
  afs_mp_log_part(path, mp, 1, part, etag[0]);
  afs_mp_log_part(path, mp, 2, part, "0123456789abcdef0123456789abcdef"); /* changed since */
  afs_mp_log_part(path, mp, 3, 100, etag[2]);
  struct afs_mp_logged *l = NULL;
  CHECK(afs_mp_restore(path, "cccccccccccccccccccccccc", size, NULL, &l) == 2);
  CHECK(l && l[0].n == 1 && l[1].n == 3 && l[1].len == 100);
  free(l);
  /* the file grew: the old tail is no longer part 3 as it is now */
  CHECK(afs_mp_restore(path, "cccccccccccccccccccccccc", size + 1, NULL, &l) == 1);
  free(l);
  CHECK(afs_mp_restore(path, "dddddddddddddddddddddddd", size, NULL, &l) == 0);
  /* a new record starts a new log */
  afs_mp_for(&mp, "dddddddddddddddddddddddd");
  afs_mp_log_part(path, mp, 2, part, etag[1]);
  CHECK(afs_mp_restore(path, "cccccccccccccccccccccccc", size, NULL, &l) == 0);
  CHECK(afs_mp_restore(path, "dddddddddddddddddddddddd", size, NULL, &l) == 1);
  free(l);
  afs_mp_free(mp);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

static void test_base(void) {
  const int64_t MiB = 1 << 20;
  const char *A = "aaaaaaaaaaaaaaaaaaaaaaaa", *B = "bbbbbbbbbbbbbbbbbbbbbbbb";
  struct afs_base *b = afs_base_new(A, 20 * MiB + 3, false);
  CHECK(b->nparts == 3 && afs_base_absent(b, 1) && afs_base_absent(b, 3) && !afs_base_absent(b, 4));
  CHECK(afs_base_absent_bytes(b) == 20 * MiB + 3);
  /* The last part is copied with the asset's length; once appended to, it is not. */
  CHECK(afs_base_copyable(b, 3, 20 * MiB + 3) && !afs_base_copyable(b, 3, 30 * MiB));
  CHECK(afs_base_copyable(b, 1, 30 * MiB) && !afs_base_copyable(b, 4, 30 * MiB));
  b->present[0] = 1; /* staged, not written: still copied */
  CHECK(!afs_base_absent(b, 1) && afs_base_copyable(b, 1, 30 * MiB));
  CHECK(afs_base_absent_bytes(b) == 12 * MiB + 3);
  b->same[1] = 0; /* written: sent */
  CHECK(!afs_base_same(b, 2) && !afs_base_copyable(b, 2, 30 * MiB) && !afs_base_absent(b, 2));
  /* A cut: bytes past it are never the asset's again. */
  b->size = 10 * MiB;
  CHECK(!afs_base_absent(b, 3) && !afs_base_copyable(b, 3, 20 * MiB));
  b->same[1] = 1;
  CHECK(afs_base_copyable(b, 2, 10 * MiB) && !afs_base_copyable(b, 2, 12 * MiB));
  afs_base_free(NULL, b);

  /* The sidecar, as the changes append to it; a torn last line is left out. */
  char dir[] = "/tmp/afs-base-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[128], side[160];
  snprintf(path, sizeof path, "%s/1", dir);
  snprintf(side, sizeof side, "%s%s", path, AFS_BASE_SUFFIX);
  struct afs_error err = {0};
  CHECK(afs_base_log_read(path, &err) == NULL && err.code == 0); /* none */
  b = afs_base_new(A, 30 * MiB, false);
  CHECK(afs_base_log_begin(path, b, &err));
  afs_base_free(NULL, b);
  FILE *f = fopen(side, "a");
  fprintf(f, "p 1\np 2\nw 2\nc %lld\nb %s\nu %s\nc 7", (long long)(20 * MiB), B, A);
  fclose(f);
  b = afs_base_log_read(path, &err);
  CHECK(b && !strcmp(b->id, B) && b->asset_size == 30 * MiB && b->size == 20 * MiB);
  CHECK(b && !strcmp(b->next, A)); /* and the torn "c 7" said nothing */
  CHECK(b && b->present[0] && b->present[1] && !b->present[2] && b->same[0] && !b->same[1]);
  afs_base_free(NULL, b);
  struct stat sb;
  CHECK(stat(side, &sb) == 0 && truncate(side, sb.st_size - 3) == 0); /* the torn line */
  f = fopen(side, "a");
  fprintf(f, "x\n"); /* the asset cannot be copied from: staged parts are sent */
  fclose(f);
  b = afs_base_log_read(path, &err);
  CHECK(b && !b->same[0] && !b->same[1] && afs_base_absent(b, 3)); /* only the asset has it */
  afs_base_free(NULL, b);
  /* Every part staged (a completed copy opened again). */
  b = afs_base_new(A, 30 * MiB, true);
  CHECK(afs_base_log_begin(path, b, &err));
  afs_base_free(NULL, b);
  b = afs_base_log_read(path, &err);
  CHECK(b && b->present[3] && afs_base_absent_bytes(b) == 0 && afs_base_copyable(b, 2, 40 * MiB));
  afs_base_free(NULL, b);
  f = fopen(side, "w");
  fprintf(f, "assetfs-base 2 %s 5 0\n", A);
  fclose(f);
  CHECK(afs_base_log_read(path, &err) == NULL && err.code == EINVAL);
  afs_base_log_remove(path);
  rmdir(dir);
}

int main(void) {
  test_schedule();
  test_table();
  test_log();
  test_base();
  TEST_MAIN_END();
}
