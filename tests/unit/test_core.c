#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/config.h"
#include "assetfs/db.h"
#include "assetfs/error.h"
#include "assetfs/log.h"
#include "assetfs/strutil.h"

static void test_redaction(void) {
  char out[512];
  afs_log_redact("GET http://h/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature="
                 "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404&a=b",
                 out, sizeof out);
  CHECK(strstr(out, "aeeed9bb") == NULL);
  CHECK(strstr(out, "X-Amz-Signature=REDACTED&a=b") != NULL);
  afs_log_add_secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
  afs_log_redact("secret is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY!", out, sizeof out);
  CHECK(strstr(out, "wJalr") == NULL);
  CHECK(strstr(out, "secret is ") == out);
  /* a record's newline or terminal escape cannot forge a log line or colour a terminal */
  afs_log_redact("partition 'a\n2026-12-07T00:00:00Z assetfs[error] forged' \x1b[31mred\x7f", out,
                 sizeof out);
  CHECK_STREQ(out,
              "partition 'a\\x0a2026-12-07T00:00:00Z assetfs[error] forged' \\x1b[31mred\\x7f");
  afs_log_redact("tab\tand UTF-8 é stay", out, sizeof out);
  CHECK_STREQ(out, "tab\\x09and UTF-8 é stay");
}

/* A MongoDB URI's password is registered as a secret when the pool is made (no server
 * is contacted for that). */
static void test_mongo_password_redacted(void) {
  struct afs_db db;
  struct afs_error e = {0};
  CHECK(afs_db_open(&db, "mongodb://broker:Pa55-w0rd-xyz@127.0.0.1:1/?serverSelectionTimeoutMS=10",
                    "t", "test", &e));
  char out[256];
  afs_log_redact("connecting as broker:Pa55-w0rd-xyz@127.0.0.1:1", out, sizeof out);
  CHECK(strstr(out, "Pa55") == NULL);
  CHECK(strstr(out, "connecting as broker:") == out);
  afs_db_close(&db);
}

static void test_error(void) {
  struct afs_error e = {0};
  CHECK(!afs_error_set(&e, ENOENT, "no %s", "thing"));
  CHECK(e.code == ENOENT);
  CHECK_STREQ(e.msg, "no thing");
  afs_error_wrap(&e, "loading %d", 3);
  CHECK_STREQ(e.msg, "loading 3: no thing");
  CHECK(!afs_error_set(NULL, EIO, "ignored"));
}

static void test_config_file(void) {
  char path[] = "/tmp/afs-test-config-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  const char *text = "# comment\ns3_bucket = media\ns3_secret_key = \"s3cr3t\"\n"
                     "write_url_seconds=3600\nkeep_versions = yes\n";
  CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
  close(fd);
  struct afs_config c;
  struct afs_error e = {0};
  afs_config_defaults(&c);
  chmod(path, 0644);
  CHECK(!afs_config_from_file(&c, path, &e));
  CHECK(e.code == EPERM);
  CHECK(strstr(e.msg, "chmod 600") != NULL);
  chmod(path, 0600);
  CHECK(afs_config_from_file(&c, path, &e));
  CHECK_STREQ(c.s3_bucket, "media");
  CHECK_STREQ(c.s3_secret_key, "s3cr3t");
  CHECK(c.write_url_seconds == 3600);
  CHECK(c.keep_versions);
  CHECK(!afs_config_set(&c, "write_url_seconds", "9999999", &e));
  CHECK(!afs_config_set(&c, "nonsense", "1", &e));
  CHECK(strstr(e.msg, "unknown setting") != NULL);
  afs_config_free(&c);
  unlink(path);
}

/* A bad ASSETFS_* value stops the broker with the variable's name: it used to be
 * skipped, and ASSETFS_KEEP_VERSIONS=y meant "delete old versions". */
static void test_config_env(void) {
  struct afs_config c;
  struct afs_error e = {0};
  afs_config_defaults(&c);
  setenv("ASSETFS_KEEP_VERSIONS", "yes", 1);
  setenv("ASSETFS_LEASE_SECONDS", "30", 1);
  CHECK(afs_config_from_env(&c, &e) && c.keep_versions && c.lease_seconds == 30);
  setenv("ASSETFS_KEEP_VERSIONS", "y", 1);
  CHECK(!afs_config_from_env(&c, &e));
  CHECK(strstr(e.msg, "ASSETFS_KEEP_VERSIONS") && strstr(e.msg, "not a boolean"));
  setenv("ASSETFS_KEEP_VERSIONS", "no", 1);
  setenv("ASSETFS_LEASE_SECONDS", "30s", 1);
  CHECK(!afs_config_from_env(&c, &e) && strstr(e.msg, "ASSETFS_LEASE_SECONDS"));
  unsetenv("ASSETFS_KEEP_VERSIONS");
  unsetenv("ASSETFS_LEASE_SECONDS");
  afs_config_free(&c);
}

/* Passwords in URIs on a command line are masked in place, and nothing else is. */
static void test_scrub_argv(void) {
  static const struct {
    const char *in, *out;
    int n;
  } cases[] = {
      {"mongodb://u:pw@h:1/db", "mongodb://u:**@h:1/db", 1},
      {"uid=x,mongo_uri=mongodb://u:p%40w@h1,h2:2/?replicaSet=r,cache_dir=/c",
       "uid=x,mongo_uri=mongodb://u:*****@h1,h2:2/?replicaSet=r,cache_dir=/c", 1},
      {"--mongo-uri=mongodb://a:1@x mongodb://b:22@y",
       "--mongo-uri=mongodb://a:*@x mongodb://b:**@y", 2},
      {"mongodb://user@h/db", "mongodb://user@h/db", 0},
      {"http://host:80/a@b", "http://host:80/a@b", 0},
      {"mongodb://u:@h", "mongodb://u:@h", 0},
      {"plain", "plain", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char buf[200];
    snprintf(buf, sizeof buf, "%s", cases[i].in);
    CHECK(afs_scrub_uri_passwords(buf) == cases[i].n);
    CHECK_STREQ(buf, cases[i].out);
  }
}

int main(void) {
  test_scrub_argv();
  test_config_env();
  test_redaction();
  test_mongo_password_redacted();
  test_error();
  test_config_file();
  TEST_MAIN_END();
}
