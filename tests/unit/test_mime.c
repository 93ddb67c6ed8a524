/* Content types from extensions, against the system table and a private one. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/mime.h"

int main(void) {
  if (access(AFS_MIME_TYPES_PATH, R_OK) != 0) {
    printf("no %s (install media-types): skipped\n", AFS_MIME_TYPES_PATH);
    return 77;
  }
  CHECK_STREQ(afs_mime_from_path("a/b/photo.jpg"), "image/jpeg");
  CHECK_STREQ(afs_mime_from_path("PHOTO.JPEG"), "image/jpeg");
  CHECK_STREQ(afs_mime_from_path("x.png"), "image/png");
  CHECK_STREQ(afs_mime_from_path("clip.mp4"), "video/mp4");
  CHECK_STREQ(afs_mime_from_path("clip.mov"), "video/quicktime");
  CHECK_STREQ(afs_mime_from_path("doc.pdf"), "application/pdf");
  CHECK_STREQ(afs_mime_from_path("noext"), AFS_MIME_DEFAULT);
  CHECK_STREQ(afs_mime_from_path(".hidden"), AFS_MIME_DEFAULT);
  CHECK_STREQ(afs_mime_from_path("dir.jpg/file"), AFS_MIME_DEFAULT);
  CHECK_STREQ(afs_mime_from_path("trailing."), AFS_MIME_DEFAULT);
  CHECK_STREQ(afs_mime_from_path("x.unknownextension"), AFS_MIME_DEFAULT);
  CHECK_STREQ(afs_mime_from_path(NULL), AFS_MIME_DEFAULT);
  TEST_MAIN_END();
}
