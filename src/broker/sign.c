/* `assetfs-broker sign` (see sign_cmd.h). Hand-parsed options rather than getopt, so the
 * broker's own option parsing keeps its state. */
#include "assetfs/sign_cmd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/s3.h"
#include "assetfs/sigv4.h"

static const char usage[] =
    "usage: assetfs-broker sign --method GET|PUT|HEAD|DELETE --key KEY [--expires SECONDS]\n"
    "                           [--time YYYYMMDDTHHMMSSZ] [--content-type TYPE]\n"
    "                           [--upload-id ID --part-number N]\n"
    "Prints one presigned URL for KEY in the configured bucket. --expires is 1..604800\n"
    "(default 3600); --time signs as of that UTC time instead of now; --content-type is\n"
    "signed, so the request must send that Content-Type; --upload-id with --part-number\n"
    "signs an UploadPart (method PUT).\n";

static int fail_usage(const char *fmt, const char *arg) {
  fputs("assetfs-broker sign: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs("\n", stderr);
  fputs(usage, stderr);
  return 2;
}

/* Strict decimal in [lo, hi]. */
static bool parse_long(const char *s, long lo, long hi, long *out) {
  if (!s || !*s)
    return false;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi)
    return false;
  *out = v;
  return true;
}

int afs_sign_cmd(int argc, char **argv, const struct afs_config *cfg) {
  const char *method = NULL, *key = NULL, *expires_s = NULL, *time_s = NULL, *ctype = NULL;
  const char *upload_id = NULL, *part_s = NULL;
  struct {
    const char *name;
    const char **dst;
  } opts[] = {{"--method", &method},      {"--key", &key},
              {"--expires", &expires_s},  {"--time", &time_s},
              {"--content-type", &ctype}, {"--upload-id", &upload_id},
              {"--part-number", &part_s}};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage, stdout);
      return 0;
    }
    bool matched = false;
    for (size_t o = 0; o < sizeof opts / sizeof *opts && !matched; o++) {
      size_t nl = strlen(opts[o].name);
      if (strncmp(a, opts[o].name, nl) != 0 || (a[nl] != '\0' && a[nl] != '='))
        continue;
      matched = true;
      const char *v = a[nl] == '=' ? a + nl + 1 : NULL;
      if (!v) {
        if (i + 1 >= argc)
          return fail_usage("%s needs a value", opts[o].name);
        v = argv[++i];
      }
      if (*opts[o].dst)
        return fail_usage("%s given twice", opts[o].name);
      *opts[o].dst = v;
    }
    if (!matched)
      return fail_usage("unknown argument '%s'", a);
  }
  if (!method)
    return fail_usage("%s", "--method is required");
  if (strcmp(method, "GET") && strcmp(method, "PUT") && strcmp(method, "HEAD") &&
      strcmp(method, "DELETE"))
    return fail_usage("--method must be GET, PUT, HEAD or DELETE, not '%s'", method);
  if (!key || !*key)
    return fail_usage("%s", "--key is required and must not be empty");
  if (strlen(key) > 1024)
    return fail_usage("%s", "--key is longer than S3's 1024 bytes");
  long expires = AFS_SIGN_DEFAULT_EXPIRES, part = 0;
  if (expires_s && !parse_long(expires_s, 1, AFS_SIGV4_MAX_EXPIRES, &expires))
    return fail_usage("--expires must be a whole number of seconds from 1 to 604800 (7 days), "
                      "not '%s'",
                      expires_s);
  time_t now = time(NULL);
  if (time_s && !afs_sigv4_parse_time(time_s, &now))
    return fail_usage("--time must be YYYYMMDDTHHMMSSZ (UTC), not '%s'", time_s);
  if (!upload_id != !part_s)
    return fail_usage("%s", "--upload-id and --part-number go together");
  if (part_s && !parse_long(part_s, 1, 10000, &part))
    return fail_usage("--part-number must be 1..10000, not '%s'", part_s);
  if (upload_id && (strcmp(method, "PUT") != 0 || !*upload_id))
    return fail_usage("%s", "an UploadPart URL (--upload-id) needs --method PUT and an id");
  if (ctype && (strcmp(method, "PUT") != 0 || !*ctype))
    return fail_usage("%s", "--content-type applies to --method PUT and must not be empty");

  if (!cfg || !cfg->s3_bucket || !*cfg->s3_bucket || !cfg->s3_access_key || !*cfg->s3_access_key ||
      !cfg->s3_secret_key || !*cfg->s3_secret_key) {
    fputs("assetfs-broker sign: S3 bucket and credentials are not configured "
          "(ASSETFS_S3_BUCKET, ASSETFS_S3_ACCESS_KEY, ASSETFS_S3_SECRET_KEY or --config)\n",
          stderr);
    return 1;
  }
  struct afs_s3_target t;
  afs_s3_target_from_config(&t, cfg);
  if (!t.region || !*t.region)
    t.region = "us-east-1";

  struct afs_sigv4_header h = {"content-type", ctype};
  char part_buf[16];
  snprintf(part_buf, sizeof part_buf, "%ld", part);
  struct afs_sigv4_param p[] = {{"partNumber", part_buf}, {"uploadId", upload_id}};
  struct afs_error err = {0};
  char *url = afs_sigv4_presign_params(&t, method, key, p, upload_id ? 2 : 0, &h, ctype ? 1 : 0,
                                       expires, now, &err);
  if (!url) {
    fprintf(stderr, "assetfs-broker sign: %s\n", err.msg);
    return 1;
  }
  printf("%s\n", url);
  free(url);
  return fflush(stdout) == 0 ? 0 : 1;
}
