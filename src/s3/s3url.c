/* S3 addressing and S3's URI encoding: endpoint parsing, path-style and virtual-hosted
 * URLs, the canonical URI the signer signs, unsigned object and public URLs, and the
 * SigV4 time format. Stateless. */
#include "s3url.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_KEY_BYTES 1024 /* S3's limit on object key length */

static bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

char *afs_s3_uri_encode(const char *s, bool keep_slash) {
  size_t n = strlen(s);
  char *out = malloc(3 * n + 1), *p = out;
  if (!out)
    return NULL;
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (unreserved(*c) || (keep_slash && *c == '/')) {
      *p++ = (char)*c;
    } else {
      *p++ = '%';
      *p++ = "0123456789ABCDEF"[*c >> 4];
      *p++ = "0123456789ABCDEF"[*c & 15];
    }
  }
  *p = '\0';
  return out;
}

void afs_sigv4_format_time(time_t now, char out[17]) {
  struct tm tm;
  out[0] = '\0'; /* stays empty for a time SigV4 cannot name (before 1970, after 9999) */
  if (now < 0 || !gmtime_r(&now, &tm) || tm.tm_year + 1900 > 9999)
    return;
  if (strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
    out[0] = '\0';
}

bool afs_sigv4_parse_time(const char *s, time_t *out) {
  struct tm tm = {0};
  if (!s || strlen(s) != 16)
    return false;
  const char *end = strptime(s, "%Y%m%dT%H%M%SZ", &tm);
  if (!end || *end)
    return false;
  time_t t = timegm(&tm);
  char back[17];
  afs_sigv4_format_time(t, back);
  if (strcmp(back, s) != 0) /* rejects 20130231 and other normalised dates */
    return false;
  *out = t;
  return true;
}

/* ---- endpoint and addressing ---- */

void afs_s3_endpoint_free(struct afs_s3_endpoint *e) {
  free(e->base);
  free(e->host);
  free(e->path);
}

static bool dns_bucket(const char *b) {
  size_t n = strlen(b);
  if (n < 3 || n > 63)
    return false;
  for (const char *c = b; *c; c++)
    if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '-' || *c == '.'))
      return false;
  return b[0] != '.' && b[0] != '-' && b[n - 1] != '.' && b[n - 1] != '-';
}

/* Builds base URL, Host and canonical URI of KEY (NULL = the bucket itself). */
bool afs_s3_endpoint_build(const struct afs_s3_target *t, const char *key,
                           struct afs_s3_endpoint *e, struct afs_error *err) {
  char *deflt = NULL, *ekey = NULL, *ebucket = NULL;
  bool ok = false;
  memset(e, 0, sizeof *e);
  if (!t || !t->bucket || !*t->bucket) {
    afs_error_set(err, EINVAL, "S3 bucket is not set");
    goto done;
  }
  if (!t->region || !*t->region || strpbrk(t->region, "/ \t\r\n")) {
    afs_error_set(err, EINVAL, "S3 region is not set or invalid");
    goto done;
  }
  const char *ep = t->endpoint;
  if (!ep || !*ep) {
    /* botocore's choice too: the legacy global name for us-east-1, regional otherwise */
    if (!strcmp(t->region, "us-east-1"))
      deflt = strdup("https://s3.amazonaws.com");
    else if (asprintf(&deflt, "https://s3.%s.amazonaws.com", t->region) < 0)
      deflt = NULL;
    if (!deflt) {
      afs_error_set(err, ENOMEM, "out of memory");
      goto done;
    }
    ep = deflt;
  }
  const char *scheme_end = strstr(ep, "://");
  bool https;
  if (scheme_end && scheme_end - ep == 5 && !strncasecmp(ep, "https", 5))
    https = true;
  else if (scheme_end && scheme_end - ep == 4 && !strncasecmp(ep, "http", 4))
    https = false;
  else {
    afs_error_set(err, EINVAL, "S3 endpoint '%s' must start with http:// or https://", ep);
    goto done;
  }
  const char *hp = scheme_end + 3;
  size_t hl = strcspn(hp, "/?#");
  if (hl == 0 || (hp[hl] && strcmp(hp + hl, "/") != 0) || memchr(hp, '@', hl) ||
      strpbrk(hp, " \t\r\n")) {
    afs_error_set(err, EINVAL, "S3 endpoint '%s' must be scheme://host[:port] without path or user",
                  ep);
    goto done;
  }
  /* host[:port]; the port is dropped from Host when it is the scheme's default, as
   * curl and botocore do. */
  char hostport[512];
  if (hl >= sizeof hostport) {
    afs_error_set(err, EINVAL, "S3 endpoint host is too long");
    goto done;
  }
  memcpy(hostport, hp, hl);
  hostport[hl] = '\0';
  char *colon = strrchr(hostport, ':');
  char *bracket = strrchr(hostport, ']');
  char hostonly[512];
  snprintf(hostonly, sizeof hostonly, "%s", hostport);
  if (colon && (!bracket || colon > bracket)) {
    const char *port = colon + 1;
    if (!*port || strspn(port, "0123456789") != strlen(port)) {
      afs_error_set(err, EINVAL, "S3 endpoint '%s' has an invalid port", ep);
      goto done;
    }
    if ((https && !strcmp(port, "443")) || (!https && !strcmp(port, "80")))
      hostonly[colon - hostport] = '\0';
  }
  const char *scheme = https ? "https" : "http";
  if (key && !*key) {
    afs_error_set(err, EINVAL, "empty S3 key");
    goto done;
  }
  if (key && strlen(key) > MAX_KEY_BYTES) {
    afs_error_set(err, EINVAL, "S3 key is longer than %d bytes", MAX_KEY_BYTES);
    goto done;
  }
  ekey = key ? afs_s3_uri_encode(key, true) : strdup("");
  ebucket = afs_s3_uri_encode(t->bucket, false);
  if (!ekey || !ebucket) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  int r1, r2, r3;
  if (t->path_style) {
    r1 = asprintf(&e->base, "%s://%s", scheme, hostport);
    r2 = asprintf(&e->host, "%s", hostonly);
    r3 = key ? asprintf(&e->path, "/%s/%s", ebucket, ekey) : asprintf(&e->path, "/%s", ebucket);
  } else {
    if (!dns_bucket(t->bucket)) {
      afs_error_set(err, EINVAL,
                    "bucket '%s' cannot be used in a host name: use path-style addressing",
                    t->bucket);
      goto done;
    }
    r1 = asprintf(&e->base, "%s://%s.%s", scheme, t->bucket, hostport);
    r2 = asprintf(&e->host, "%s.%s", t->bucket, hostonly);
    r3 = asprintf(&e->path, "/%s", ekey);
  }
  if (r1 < 0 || r2 < 0 || r3 < 0) {
    e->base = e->host = e->path = NULL; /* asprintf leaves them undefined on failure */
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  ok = true;
done:
  if (!ok)
    afs_s3_endpoint_free(e);
  free(deflt);
  free(ekey);
  free(ebucket);
  return ok;
}

char *afs_s3_object_url(const struct afs_s3_target *t, const char *key) {
  struct afs_s3_endpoint e;
  char *url = NULL;
  if (!key || !afs_s3_endpoint_build(t, key, &e, NULL))
    return NULL;
  if (asprintf(&url, "%s%s", e.base, e.path) < 0)
    url = NULL;
  afs_s3_endpoint_free(&e);
  return url;
}

char *afs_s3_public_url(const char *base, const char *key) {
  if (!base || !*base || !key || !*key)
    return NULL;
  if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
    return NULL;
  size_t bl = strlen(base);
  while (bl > 0 && base[bl - 1] == '/')
    bl--;
  char *ekey = afs_s3_uri_encode(key, true), *url = NULL;
  if (ekey && asprintf(&url, "%.*s/%s", (int)bl, base, ekey) < 0)
    url = NULL;
  free(ekey);
  return url;
}
