/* `assetfs-broker sign` through afs_sign_cmd: AWS's published query-string example as
 * output, option parsing, and exit codes (2 for usage errors, 1 for missing config). */
#include <stdlib.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/config.h"
#include "assetfs/sign_cmd.h"

static char out_buf[8192], err_buf[8192];

/* Runs afs_sign_cmd with stdout/stderr captured into out_buf/err_buf. */
static int run(const struct afs_config *cfg, int argc, const char **argv) {
  fflush(stdout);
  fflush(stderr);
  FILE *o = tmpfile(), *e = tmpfile();
  int so = dup(1), se = dup(2);
  dup2(fileno(o), 1);
  dup2(fileno(e), 2);
  int rc = afs_sign_cmd(argc, (char **)argv, cfg);
  fflush(stdout);
  fflush(stderr);
  dup2(so, 1);
  dup2(se, 2);
  close(so);
  close(se);
  rewind(o);
  rewind(e);
  size_t n = fread(out_buf, 1, sizeof out_buf - 1, o);
  out_buf[n] = '\0';
  n = fread(err_buf, 1, sizeof err_buf - 1, e);
  err_buf[n] = '\0';
  fclose(o);
  fclose(e);
  return rc;
}

#define RUN(cfg, ...)                                                                              \
  ({                                                                                               \
    const char *a_[] = {"sign", __VA_ARGS__};                                                      \
    run(cfg, (int)(sizeof a_ / sizeof *a_), a_);                                                   \
  })

int main(void) {
  struct afs_config cfg;
  afs_config_defaults(&cfg);
  struct afs_error err = {0};
  CHECK(afs_config_set(&cfg, "s3_endpoint", "https://s3.amazonaws.com", &err));
  CHECK(afs_config_set(&cfg, "s3_region", "us-east-1", &err));
  CHECK(afs_config_set(&cfg, "s3_bucket", "examplebucket", &err));
  CHECK(afs_config_set(&cfg, "s3_access_key", "AKIAIOSFODNN7EXAMPLE", &err));
  CHECK(afs_config_set(&cfg, "s3_secret_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", &err));
  cfg.s3_path_style = false;

  CHECK(RUN(&cfg, "--method", "GET", "--key", "test.txt", "--expires", "86400", "--time",
            "20130524T000000Z") == 0);
  CHECK_STREQ(out_buf,
              "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
              "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
              "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
              "&X-Amz-Signature="
              "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404\n");
  CHECK(RUN(&cfg, "--method=GET", "--key=test.txt", "--expires=86400", "--time=20130524T000000Z") ==
        0);
  CHECK(strstr(out_buf, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"));

  CHECK(RUN(&cfg, "--method", "PUT", "--key", "a b.jpg", "--content-type", "image/jpeg") == 0);
  CHECK(strstr(out_buf, "/a%20b.jpg?") &&
        strstr(out_buf, "X-Amz-SignedHeaders=content-type%3Bhost"));
  CHECK(strstr(out_buf, "X-Amz-Expires=3600&"));
  CHECK(RUN(&cfg, "--method", "PUT", "--key", "k", "--upload-id", "u+1", "--part-number", "7") ==
        0);
  CHECK(strstr(out_buf, "&partNumber=7&uploadId=u%2B1&X-Amz-Signature="));
  CHECK(RUN(&cfg, "--help") == 0 && strstr(out_buf, "usage:"));

  const char *bad[][8] = {
      {"--method", "GET"},
      {"--key", "k"},
      {"--method", "POST", "--key", "k"},
      {"--method", "GET", "--key", "k", "--expires", "0"},
      {"--method", "GET", "--key", "k", "--expires", "604801"},
      {"--method", "GET", "--key", "k", "--expires", "60s"},
      {"--method", "GET", "--key", "k", "--time", "20130524"},
      {"--method", "GET", "--key", "k", "--bogus"},
      {"--method"},
      {"--method", "GET", "--method", "PUT", "--key", "k"},
      {"--method", "GET", "--key", "k", "--content-type", "a/b"},
      {"--method", "PUT", "--key", "k", "--upload-id", "u"},
      {"--method", "PUT", "--key", "k", "--upload-id", "u", "--part-number", "10001"},
      {"--method", "GET", "--key", ""},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const char *argv[10] = {"sign"};
    int argc = 1;
    for (int j = 0; j < 8 && bad[i][j]; j++)
      argv[argc++] = bad[i][j];
    int rc = run(&cfg, argc, argv);
    CHECK(rc == 2);
    CHECK(out_buf[0] == '\0');
    CHECK(strstr(err_buf, "assetfs-broker sign: ") && strstr(err_buf, "usage:"));
    if (rc != 2)
      fprintf(stderr, "case %zu: rc %d\n", i, rc);
  }
  CHECK(RUN(&cfg, "--method", "GET", "--key", "k", "--expires", "604801") == 2 &&
        strstr(err_buf, "604800"));

  struct afs_config empty;
  afs_config_defaults(&empty);
  CHECK(RUN(&empty, "--method", "GET", "--key", "k") == 1 && strstr(err_buf, "ASSETFS_S3_BUCKET"));
  afs_config_free(&empty);
  CHECK(afs_config_set(&cfg, "s3_endpoint", "ftp://nope", &err));
  CHECK(RUN(&cfg, "--method", "GET", "--key", "k") == 1 && strstr(err_buf, "http://"));
  afs_config_free(&cfg);
  TEST_MAIN_END();
}
