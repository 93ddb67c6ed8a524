/* The journal of a staged file (src/fs/staging/journal.c): what a killed mount leaves for the
 * next one must read back exactly, and a torn or foreign file must be refused. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "afs_test.h"
#include "staging/journal.h"

int main(void) {
  char dir[] = "/tmp/test_journal.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[512];
  snprintf(path, sizeof path, "%s/7.jpg.journal", dir);
  struct afs_error err = {0};

  struct afs_journal j = {.partition = "user_id=al\"ice",
                          .file_path = "dir/été \\ \"quoted\".jpg",
                          .content_type = "image/jpeg",
                          .caption = "a\ncaption",
                          .id = "65a1b2c3d4e5f60718293a4b",
                          .uploaded = false,
                          .mtime_ms = 1732600000123LL};
  CHECK(afs_journal_write(path, &j, true, &err));
  struct afs_journal r;
  CHECK(afs_journal_read(path, &r, &err));
  CHECK_STREQ(r.partition, j.partition);
  CHECK_STREQ(r.file_path, j.file_path);
  CHECK_STREQ(r.content_type, "image/jpeg");
  CHECK_STREQ(r.caption, "a\ncaption");
  CHECK_STREQ(r.id, j.id);
  CHECK(!r.uploaded);
  CHECK(r.mtime_ms == 1732600000123LL);
  afs_journal_free(&r);

  /* rewritten in place (no caption, uploaded): the newer state wins, no temporary left */
  j.caption = NULL;
  j.uploaded = true;
  CHECK(afs_journal_write(path, &j, false, &err));
  CHECK(afs_journal_read(path, &r, &err));
  CHECK(r.uploaded);
  CHECK(r.caption == NULL);
  afs_journal_free(&r);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  CHECK(access(tmp, F_OK) != 0);

  /* missing, torn, or lacking the fields: refused with an error */
  char other[512];
  snprintf(other, sizeof other, "%s/missing.journal", dir);
  CHECK(!afs_journal_read(other, &r, &err));
  snprintf(other, sizeof other, "%s/torn.journal", dir);
  int fd = open(other, O_WRONLY | O_CREAT, 0600);
  CHECK(write(fd, "{\"partition\": \"p\", \"filePa", 26) == 26);
  close(fd);
  afs_error_clear(&err);
  CHECK(!afs_journal_read(other, &r, &err));
  CHECK(err.msg[0] != '\0');
  fd = open(other, O_WRONLY | O_TRUNC, 0600);
  CHECK(write(fd, "{\"v\": 1}", 8) == 8);
  close(fd);
  CHECK(!afs_journal_read(other, &r, &err));

  /* A field JSON cannot carry (a caption that is not UTF-8): an error, and the journal
   * already there is kept as it was (an empty one would lose the staged data at the next
   * mount). */
  struct afs_journal good = j;
  good.caption = "kept";
  CHECK(afs_journal_write(path, &good, true, &err));
  struct afs_journal badj = j;
  badj.caption = "caf\xc3";
  afs_error_clear(&err);
  CHECK(!afs_journal_write(path, &badj, true, &err) && strstr(err.msg, "UTF-8"));
  CHECK(afs_journal_read(path, &r, &err));
  CHECK_STREQ(r.caption, "kept");
  afs_journal_free(&r);
  CHECK(access(tmp, F_OK) != 0);

  /* a folder that cannot be written: an error, not a crash */
  snprintf(other, sizeof other, "%s/no/such/dir/x.journal", dir);
  afs_error_clear(&err);
  CHECK(!afs_journal_write(other, &j, true, &err));
  CHECK(err.code != 0);

  unlink(path);
  snprintf(other, sizeof other, "%s/torn.journal", dir);
  unlink(other);
  rmdir(dir);
  TEST_MAIN_END();
}
