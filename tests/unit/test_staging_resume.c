/* Resume of a killed mount's staged files (src/fs/staging/staging_resume.c): a file with
 * a good journal is adopted; one whose journal cannot be read is never deleted (its
 * bytes may be the only copy) but moved with its journal to the cache's recovered/
 * folder; debris without a journal goes. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afs_test.h"
#include "staging/journal.h"
#include "staging/staging.h"

static void put(const char *dir, const char *name, const char *text) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
  close(fd);
}

static bool exists(const char *dir, const char *name) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return access(p, F_OK) == 0;
}

static char *slurp(const char *dir, const char *name) {
  static char buf[256];
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "r");
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  buf[n] = '\0';
  if (f)
    fclose(f);
  return buf;
}

int main(void) {
  char dir[] = "/tmp/test_staging_resume.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  struct afs_error err = {0};

  /* 1.jpg: a good journal. 2.txt: an empty journal (what a failed encoding once wrote).
   * 3.txt: a torn one. 4.tmp: debris of an interrupted upload, no journal. */
  char jpath[512];
  snprintf(jpath, sizeof jpath, "%s/1.jpg%s", dir, AFS_JOURNAL_SUFFIX);
  struct afs_journal j = {.partition = "user_id=a",
                          .file_path = "ok.jpg",
                          .content_type = "image/jpeg",
                          .id = "",
                          .mtime_ms = 1000};
  put(dir, "1.jpg", "good bytes");
  CHECK(afs_journal_write(jpath, &j, true, &err));
  put(dir, "2.txt", "only copy of a user's words");
  put(dir, "2.txt" AFS_JOURNAL_SUFFIX, "");
  put(dir, "3.txt", "more words");
  put(dir, "3.txt" AFS_JOURNAL_SUFFIX, "{\"partition\": \"p\", \"fileP");
  put(dir, "4.tmp", "debris");

  struct afs_staging *st = afs_staging_new(dir, &err);
  CHECK(st != NULL);
  CHECK(afs_staging_resume(st) == 1);
  struct afs_wfile *wf = afs_staging_get(st, "user_id=a", "ok.jpg");
  CHECK(wf != NULL);
  afs_staging_unref(st, wf);

  char rec[600];
  snprintf(rec, sizeof rec, "%s/%s", dir, AFS_RECOVERED_DIR);
  CHECK(!exists(dir, "2.txt") && !exists(dir, "3.txt"));
  CHECK_STREQ(slurp(rec, "2.txt"), "only copy of a user's words");
  CHECK_STREQ(slurp(rec, "3.txt"), "more words");
  CHECK(exists(rec, "2.txt" AFS_JOURNAL_SUFFIX) && exists(rec, "3.txt" AFS_JOURNAL_SUFFIX));
  CHECK(!exists(dir, "4.tmp"));
  struct stat sb;
  CHECK(stat(rec, &sb) == 0 && (sb.st_mode & 0777) == 0700);
  afs_staging_free(st);

  /* A second resume leaves recovered/ alone. */
  st = afs_staging_new(dir, &err);
  CHECK(st != NULL);
  afs_staging_resume(st);
  CHECK_STREQ(slurp(rec, "2.txt"), "only copy of a user's words");
  afs_staging_free(st);

  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
  TEST_MAIN_END();
}
