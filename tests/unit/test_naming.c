/* filePath rules and Cosync key naming (include/assetfs/naming.h). */
#include <errno.h>
#include <stdlib.h>

#include "afs_test.h"
#include "assetfs/naming.h"

static bool fp_ok(const char *p) { return afs_filepath_check(p, strlen(p), NULL); }

static void test_filepath(void) {
  struct afs_error e = {0};
  CHECK(fp_ok("a.jpg"));
  CHECK(fp_ok("dir/sub/Café photo (1).jpg"));
  CHECK(fp_ok("...")); /* a legal name, not a traversal */
  CHECK(fp_ok(".hidden"));
  CHECK(!fp_ok(""));
  CHECK(!afs_filepath_check("/etc/passwd", 11, &e));
  CHECK(e.code == EINVAL && strstr(e.msg, "absolute"));
  CHECK(!fp_ok("../x"));
  CHECK(!fp_ok("a/../x"));
  CHECK(!fp_ok("a/.."));
  CHECK(!fp_ok("./a"));
  CHECK(!fp_ok("a//b"));
  CHECK(!fp_ok("a/"));
  CHECK(!fp_ok("a\tb"));
  CHECK(!fp_ok("a\x7f"));
  CHECK(!afs_filepath_check("a\0b", 3, &e));
  CHECK(strstr(e.msg, "NUL"));
  CHECK(!afs_filepath_check("caf\xc3", 4, &e));
  CHECK(strstr(e.msg, "UTF-8"));
  CHECK(!fp_ok("\xc0\xaf"));         /* overlong '/' */
  CHECK(!fp_ok("\xed\xa0\x80"));     /* surrogate */
  CHECK(!fp_ok("\xf4\x90\x80\x80")); /* > U+10FFFF */
  CHECK(fp_ok("\xf0\x9f\x98\x80.png"));
  char big[AFS_FILEPATH_MAX + 2];
  memset(big, 'a', sizeof big);
  for (int i = 100; i < (int)sizeof big; i += 101)
    big[i] = '/';
  big[AFS_FILEPATH_MAX + 1] = '\0';
  CHECK(!afs_filepath_check(big, strlen(big), &e));
  CHECK(e.code == ENAMETOOLONG);
  big[AFS_FILEPATH_MAX] = '\0';
  CHECK(afs_filepath_check(big, strlen(big), &e));
  char comp[AFS_NAME_MAX + 2];
  memset(comp, 'b', sizeof comp);
  comp[AFS_NAME_MAX + 1] = '\0';
  CHECK(!afs_filepath_check(comp, strlen(comp), &e));
  CHECK(e.code == ENAMETOOLONG);
  comp[AFS_NAME_MAX] = '\0';
  CHECK(afs_name_check(comp, strlen(comp), &e));
  CHECK(!afs_name_check("a/b", 3, &e));
  CHECK(!afs_name_check("..", 2, &e));
}

static void test_uid(void) {
  CHECK(afs_uid_check("5fa0c1d2e3b4a59687766554", 24, NULL));
  CHECK(afs_uid_check("user@example.com", 16, NULL));
  CHECK(!afs_uid_check("", 0, NULL));
  CHECK(!afs_uid_check("a/b", 3, NULL));
  CHECK(!afs_uid_check("..", 2, NULL));
  CHECK(!afs_uid_check("public", 6, NULL));
  CHECK(!afs_uid_check("a b", 3, NULL));
}

static void test_keys(void) {
  struct afs_keys k;
  struct afs_error e = {0};
  CHECK(afs_naming_make_keys("u1", "images/My Photo.JPG", "image/jpeg", false, 1700000000123, &k,
                             &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/images/My-Photo-1700000000123.JPG");
  CHECK_STREQ(k.key[AFS_PART_SMALL], "u1/images/My-Photo-small-1700000000123.JPG");
  CHECK_STREQ(k.key[AFS_PART_MEDIUM], "u1/images/My-Photo-medium-1700000000123.JPG");
  CHECK_STREQ(k.key[AFS_PART_LARGE], "u1/images/My-Photo-large-1700000000123.JPG");
  CHECK(k.key[AFS_PART_PREVIEW] == NULL);
  afs_keys_free(&k);

  CHECK(afs_naming_make_keys("u1", "v/clip.final.mp4", "video/mp4", true, 42, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "public/u1/v/clip.final-42.mp4");
  CHECK_STREQ(k.key[AFS_PART_PREVIEW], "public/u1/v/clip.final-videopreview-42.png");
  CHECK_STREQ(k.key[AFS_PART_SMALL], "public/u1/v/clip.final-small-42.png");
  CHECK_STREQ(k.key[AFS_PART_LARGE], "public/u1/v/clip.final-large-42.png");
  CHECK(!strcmp(afs_part_content_type(AFS_KIND_VIDEO, AFS_PART_SMALL, "video/mp4"), "image/png"));
  CHECK(!strcmp(afs_part_content_type(AFS_KIND_IMAGE, AFS_PART_SMALL, "image/gif"), "image/gif"));
  afs_keys_free(&k);

  CHECK(afs_naming_make_keys("u1", "doc/README", "text/plain", false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/doc/README-7");
  CHECK(k.key[AFS_PART_SMALL] == NULL);
  afs_keys_free(&k);

  CHECK(afs_naming_make_keys("u1", ".bashrc", NULL, false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/.bashrc-7");
  afs_keys_free(&k);

  CHECK(afs_naming_make_keys("u1", "a+b%c~d=é.p g", "image/x", false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/a-b-c-d-7.p-g");
  afs_keys_free(&k);

  CHECK(!afs_naming_make_keys("u1", "../escape.jpg", "image/jpeg", false, 7, &k, &e));
  CHECK(k.key[0] == NULL);
  CHECK(!afs_naming_make_keys("../u", "a.jpg", "image/jpeg", false, 7, &k, &e));
  CHECK(!afs_naming_make_keys("public", "a.jpg", "image/jpeg", false, 7, &k, &e));

  /* Longest accepted inputs still make keys S3 accepts. */
  char uid[AFS_UID_MAX + 1], fp[AFS_FILEPATH_MAX + 1];
  memset(uid, 'u', AFS_UID_MAX);
  uid[AFS_UID_MAX] = '\0';
  memset(fp, 'f', AFS_FILEPATH_MAX);
  for (int i = 200; i < AFS_FILEPATH_MAX; i += 201)
    fp[i] = '/';
  fp[AFS_FILEPATH_MAX] = '\0';
  CHECK(afs_naming_make_keys(uid, fp, "video/mp4", true, 9999999999999LL, &k, &e));
  for (int p = 0; p < AFS_PART_COUNT; p++)
    CHECK(k.key[p] && strlen(k.key[p]) <= AFS_KEY_MAX);
  afs_keys_free(&k);
}

static void test_keys_from_path(void) {
  struct afs_keys k;
  CHECK(afs_naming_keys_from_path("u1/images/My-Photo-1700000000123.JPG", "image/jpeg", &k));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/images/My-Photo-1700000000123.JPG");
  CHECK_STREQ(k.key[AFS_PART_MEDIUM], "u1/images/My-Photo-medium-1700000000123.JPG");
  afs_keys_free(&k);
  CHECK(afs_naming_keys_from_path("public/u1/v/clip-42.mp4", "video/mp4", &k));
  CHECK_STREQ(k.key[AFS_PART_PREVIEW], "public/u1/v/clip-videopreview-42.png");
  CHECK_STREQ(k.key[AFS_PART_SMALL], "public/u1/v/clip-small-42.png");
  afs_keys_free(&k);
  CHECK(!afs_naming_keys_from_path("u1/noTimestamp.jpg", "image/jpeg", &k));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/noTimestamp.jpg");
  CHECK(k.key[AFS_PART_SMALL] == NULL);
  afs_keys_free(&k);
  CHECK(afs_naming_keys_from_path("u1/x-5.bin", "application/octet-stream", &k));
  CHECK(k.key[AFS_PART_SMALL] == NULL);
  afs_keys_free(&k);
}

static void test_display_name(void) {
  char *n;
  n = afs_naming_display_name("u1/images/IMG-0002-1623456789000.jpg", "u1");
  CHECK_STREQ(n, "images/IMG-0002.jpg");
  free(n);
  n = afs_naming_display_name("public/u1/a-1623456789000.png", "u1");
  CHECK_STREQ(n, "a.png");
  free(n);
  n = afs_naming_display_name("u1/doc-1623456789000", NULL);
  CHECK_STREQ(n, "doc");
  free(n);
  n = afs_naming_display_name("other/x-12.jpg", "u1"); /* short number: not a timestamp */
  CHECK_STREQ(n, "other/x-12.jpg");
  free(n);
  n = afs_naming_display_name("u1//../a\x01\xff.jpg", "u1");
  CHECK_STREQ(n, "a__.jpg");
  free(n);
  CHECK(afs_naming_display_name("u1/..", "u1") == NULL);
  CHECK(afs_naming_display_name(NULL, "u1") == NULL);
}

static void test_now_ms(void) {
  int64_t a = afs_naming_now_ms(), b = afs_naming_now_ms();
  CHECK(b > a);
  CHECK(a > 1600000000000LL);
}

int main(void) {
  test_filepath();
  test_uid();
  test_keys();
  test_keys_from_path();
  test_display_name();
  test_now_ms();
  TEST_MAIN_END();
}
