/* The staging table's indexes (src/fs/staging/staging_index.c): lookups by name, and "is this a
 * directory / has it children", must follow every insert, replace, rename, directory
 * rename and removal exactly as the linear walk they replace did. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "afs_test.h"
#include "staging/staging.h"

static struct afs_wfile *mk(struct afs_staging *st, const char *p, const char *path) {
  struct afs_error err = {0};
  struct afs_wfile *replaced = NULL;
  struct afs_wfile *wf = afs_staging_create(st, p, path, "text/plain", &replaced, &err);
  CHECK(wf != NULL);
  afs_staging_unref(st, replaced);
  return wf;
}

static bool has(struct afs_staging *st, const char *p, const char *path) {
  struct afs_wfile *wf = afs_staging_get(st, p, path);
  afs_staging_unref(st, wf);
  return wf != NULL;
}

int main(void) {
  char dir[] = "/tmp/test_staging.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  struct afs_error err = {0};
  struct afs_staging *st = afs_staging_new(dir, &err);
  CHECK(st != NULL);

  /* Enough files to grow both hash tables several times. */
  struct afs_wfile *keep[3000];
  char path[256];
  for (int i = 0; i < 3000; i++) {
    snprintf(path, sizeof path, "d%d/sub%d/f%04d.txt", i % 7, i % 3, i);
    keep[i] = mk(st, i % 2 ? "user_id=a" : "user_id=b", path);
  }
  CHECK(has(st, "user_id=a", "d1/sub1/f0001.txt"));
  CHECK(!has(st, "user_id=b", "d1/sub1/f0001.txt")); /* other partition */
  CHECK(!has(st, "user_id=a", "d1/sub1"));
  CHECK(afs_staging_is_dir(st, "user_id=a", "d1"));
  CHECK(afs_staging_is_dir(st, "user_id=a", "d1/sub1"));
  CHECK(afs_staging_is_dir(st, "user_id=a", ""));
  CHECK(!afs_staging_is_dir(st, "user_id=a", "d1/sub1/f0001.txt"));
  CHECK(!afs_staging_is_dir(st, "user_id=a", "d")); /* a prefix is not a directory */
  CHECK(!afs_staging_is_dir(st, "user_id=c", ""));
  CHECK(afs_staging_dir_has_children(st, "user_id=b", "d0/sub0"));

  /* Replacing a path keeps one entry there. */
  struct afs_wfile *again = mk(st, "user_id=a", "d1/sub1/f0001.txt");
  CHECK(has(st, "user_id=a", "d1/sub1/f0001.txt"));

  /* A rename moves the entry and the directory counts. */
  struct afs_wfile *solo = mk(st, "user_id=c", "only/one.txt");
  CHECK(afs_staging_is_dir(st, "user_id=c", "only"));
  struct afs_wfile *displaced = afs_staging_move(st, solo, "user_id=c", "other/one.txt");
  CHECK(displaced == NULL);
  CHECK(!afs_staging_is_dir(st, "user_id=c", "only"));
  CHECK(afs_staging_is_dir(st, "user_id=c", "other"));
  CHECK(has(st, "user_id=c", "other/one.txt") && !has(st, "user_id=c", "only/one.txt"));

  /* A directory rename moves every file under it. */
  struct afs_wfile **moved = NULL;
  int n = afs_staging_move_dir(st, "user_id=b", "d0", "e0", &moved);
  CHECK(n > 0);
  for (int i = 0; i < n; i++)
    afs_staging_unref(st, moved[i]);
  free(moved);
  CHECK(!afs_staging_is_dir(st, "user_id=b", "d0"));
  CHECK(afs_staging_is_dir(st, "user_id=b", "e0/sub0"));
  CHECK(has(st, "user_id=b", "e0/sub0/f0000.txt") && !has(st, "user_id=b", "d0/sub0/f0000.txt"));

  /* Removal, including the last file of a directory. */
  afs_staging_remove(st, solo);
  CHECK(!has(st, "user_id=c", "other/one.txt"));
  CHECK(!afs_staging_is_dir(st, "user_id=c", "other"));
  CHECK(!afs_staging_dir_has_children(st, "user_id=c", ""));
  for (int i = 0; i < 3000; i++)
    afs_staging_remove(st, keep[i]);
  afs_staging_remove(st, again);
  CHECK(!afs_staging_is_dir(st, "user_id=a", "d1"));
  CHECK(!afs_staging_is_dir(st, "user_id=b", ""));
  for (int i = 0; i < 3000; i++)
    afs_staging_unref(st, keep[i]);
  afs_staging_unref(st, again);
  afs_staging_unref(st, solo);
  afs_staging_free(st);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  TEST_MAIN_END();
}
