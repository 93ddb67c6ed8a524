#include "assetfs/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

void afs_config_defaults(struct afs_config *c) {
  memset(c, 0, sizeof *c);
  c->mongo_uri = strdup("mongodb://127.0.0.1:27017");
  c->database = strdup("assetfs");
  c->s3_region = strdup("us-east-1");
  c->write_url_seconds = 86400;
  c->stale_upload_seconds = 86400;
  c->lease_seconds = 60;
  c->call_keep_seconds = 86400;
  c->max_object_size = 5497558138880L; /* S3's limit for one object (multipart) */
  c->multipart_sweep_seconds = 600;
  c->multipart_grace_seconds = 3600;
  c->log_level = strdup("info");
}

static void set_str(char **dst, const char *v) {
  free(*dst);
  *dst = v ? strdup(v) : NULL;
}

static bool parse_long(const char *v, long min, long max, long *out) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || end == v || *end || n < min || n > max)
    return false;
  *out = n;
  return true;
}

static bool parse_bool(const char *v, bool *out) {
  if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
      !strcasecmp(v, "on")) {
    *out = true;
    return true;
  }
  if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
      !strcasecmp(v, "off")) {
    *out = false;
    return true;
  }
  return false;
}

bool afs_config_set(struct afs_config *c, const char *key, const char *v, struct afs_error *err) {
  struct {
    const char *name;
    char **field;
  } strs[] = {
      {"mongo_uri", &c->mongo_uri},
      {"database", &c->database},
      {"s3_endpoint", &c->s3_endpoint},
      {"s3_region", &c->s3_region},
      {"s3_bucket", &c->s3_bucket},
      {"s3_access_key", &c->s3_access_key},
      {"s3_secret_key", &c->s3_secret_key},
      {"public_base_url", &c->public_base_url},
      {"log_level", &c->log_level},
      {"clients_file", &c->clients_file},
      {"signing_key_file", &c->signing_key_file},
  };
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
    if (!strcmp(key, strs[i].name)) {
      set_str(strs[i].field, *v ? v : NULL);
      if (!strcmp(key, "s3_endpoint"))
        c->s3_path_style = *v != '\0';
      return true;
    }
  struct {
    const char *name;
    long *field, min, max;
  } nums[] = {
      {"write_url_seconds", &c->write_url_seconds, 1, 604800},
      {"stale_upload_seconds", &c->stale_upload_seconds, 1, 365L * 86400},
      {"lease_seconds", &c->lease_seconds, 1, 86400},
      {"call_keep_seconds", &c->call_keep_seconds, 0, 365L * 86400},
      {"max_object_size", &c->max_object_size, 1, 5497558138880L},
      {"multipart_sweep_seconds", &c->multipart_sweep_seconds, 0, 86400},
      {"multipart_grace_seconds", &c->multipart_grace_seconds, 1, 7L * 86400},
  };
  for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
    if (!strcmp(key, nums[i].name)) {
      if (!parse_long(v, nums[i].min, nums[i].max, nums[i].field))
        return afs_error_set(err, EINVAL, "%s: '%s' is not a number in %ld..%ld", key, v,
                             nums[i].min, nums[i].max);
      return true;
    }
  if (!strcmp(key, "s3_path_style") || !strcmp(key, "keep_versions")) {
    bool *f = !strcmp(key, "keep_versions") ? &c->keep_versions : &c->s3_path_style;
    if (!parse_bool(v, f))
      return afs_error_set(err, EINVAL, "%s: '%s' is not a boolean", key, v);
    return true;
  }
  if (!strcmp(key, "auth")) {
    if (strcmp(v, "off") && strcmp(v, "required"))
      return afs_error_set(err, EINVAL, "auth: '%s' is neither off nor required", v);
    c->auth_required = !strcmp(v, "required");
    return true;
  }
  return afs_error_set(err, EINVAL, "unknown setting '%s'", key);
}

bool afs_config_from_env(struct afs_config *c, struct afs_error *err) {
  static const char *keys[] = {"mongo_uri",
                               "database",
                               "s3_endpoint",
                               "s3_region",
                               "s3_bucket",
                               "s3_access_key",
                               "s3_secret_key",
                               "public_base_url",
                               "log_level",
                               "write_url_seconds",
                               "stale_upload_seconds",
                               "lease_seconds",
                               "call_keep_seconds",
                               "keep_versions",
                               "s3_path_style",
                               "max_object_size",
                               "multipart_sweep_seconds",
                               "multipart_grace_seconds",
                               "auth",
                               "clients_file",
                               "signing_key_file"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    char name[64] = "ASSETFS_";
    for (size_t j = 0; keys[i][j]; j++)
      name[8 + j] = (char)toupper((unsigned char)keys[i][j]);
    const char *v = getenv(name);
    struct afs_error why = {0};
    if (v && !afs_config_set(c, keys[i], v, &why))
      /* Never ignored: ASSETFS_KEEP_VERSIONS=y read as "not set" deleted old versions. */
      return afs_error_set(err, why.code, "%s: %s", name, why.msg);
  }
  return true;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s))
    s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1]))
    *--e = '\0';
  return s;
}

bool afs_config_from_file(struct afs_config *c, const char *path, struct afs_error *err) {
  bool ok = false;
  char line[4096];
  int lineno = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return afs_error_set(err, errno, "cannot open config %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0) {
    afs_error_set(err, errno, "cannot stat config %s: %s", path, strerror(errno));
    close(fd);
    return false;
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    afs_error_set(err, EPERM,
                  "config %s is accessible by group or others (mode %03o); it may hold the S3 "
                  "secret: chmod 600 it",
                  path, st.st_mode & 0777);
    close(fd);
    return false;
  }
  FILE *f = fdopen(fd, "r");
  if (!f) {
    close(fd);
    return afs_error_set(err, errno, "cannot read config %s", path);
  }
  while (fgets(line, sizeof line, f)) {
    lineno++;
    char *s = trim(line);
    if (!*s || *s == '#' || *s == ';')
      continue;
    char *eq = strchr(s, '=');
    if (!eq) {
      afs_error_set(err, EINVAL, "%s:%d: expected key = value", path, lineno);
      goto done;
    }
    *eq = '\0';
    char *k = trim(s), *v = trim(eq + 1);
    size_t vl = strlen(v);
    if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
      v[vl - 1] = '\0';
      v++;
    }
    if (!afs_config_set(c, k, v, err)) {
      afs_error_wrap(err, "%s:%d", path, lineno);
      goto done;
    }
  }
  ok = true;
done:
  fclose(f);
  return ok;
}

bool afs_config_check_broker(const struct afs_config *c, struct afs_error *err) {
  if (!c->s3_bucket || !*c->s3_bucket)
    return afs_error_set(err, EINVAL, "no S3 bucket configured (ASSETFS_S3_BUCKET / s3_bucket)");
  if (!c->s3_access_key || !c->s3_secret_key)
    return afs_error_set(err, EINVAL,
                         "no S3 credentials configured (ASSETFS_S3_ACCESS_KEY and "
                         "ASSETFS_S3_SECRET_KEY, or s3_access_key/s3_secret_key)");
  if (!c->mongo_uri || !c->database)
    return afs_error_set(err, EINVAL, "no MongoDB URI or database configured");
  if (c->auth_required && (!c->clients_file || !c->signing_key_file))
    return afs_error_set(err, EINVAL,
                         "auth=required needs clients_file (ASSETFS_CLIENTS_FILE) and "
                         "signing_key_file (ASSETFS_SIGNING_KEY_FILE)");
  return true;
}

void afs_config_free(struct afs_config *c) {
  char **strs[] = {&c->mongo_uri, &c->database,      &c->s3_endpoint,     &c->s3_region,
                   &c->s3_bucket, &c->s3_access_key, &c->s3_secret_key,   &c->public_base_url,
                   &c->log_level, &c->clients_file,  &c->signing_key_file};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    free(*strs[i]);
    *strs[i] = NULL;
  }
}
