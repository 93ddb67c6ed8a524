/* URL origins: strict parsing, normalisation and comparison (see origin.h). Stateless.
 * Used by src/http to confine the filesystem's transfers to the bucket's endpoints and
 * by both programs to read and write the list of those endpoints. */
#include "assetfs/origin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Printable ASCII without space and backslash: what a presigned URL is made of. A
 * backslash is a path separator to WHATWG parsers and a plain byte to curl, so it is
 * one of the ways to make two parsers see two hosts. */
static bool url_char_ok(unsigned char c) {
  return c > 0x20 && c < 0x7f && c != '\\';
}

static bool host_char_ok(unsigned char c) {
  return isalnum(c) || c == '-' || c == '.' || c == '_';
}

/* The last dot-separated label of h is all digits (e.g. "1.2.3.4.5"): a number that is
 * not a valid IPv4 address; parsers disagree on such hosts, so they are refused. */
static bool ends_numeric(const char *h) {
  const char *last = strrchr(h, '.');
  last = last ? last + 1 : h;
  return *last && strspn(last, "0123456789") == strlen(last);
}

bool afs_origin_parse(const char *url, struct afs_origin *o, struct afs_error *err) {
  memset(o, 0, sizeof *o);
  if (!url || !*url)
    return afs_error_set(err, EINVAL, "empty URL");
  for (const unsigned char *p = (const unsigned char *)url; *p; p++)
    if (!url_char_ok(*p))
      return afs_error_set(err, EINVAL,
                           "URL has a space, control, backslash or non-ASCII "
                           "character");
  const char *sep = strstr(url, "://");
  size_t sl = sep ? (size_t)(sep - url) : 0;
  if (sep && sl == 4 && !strncasecmp(url, "http", 4))
    snprintf(o->scheme, sizeof o->scheme, "http");
  else if (sep && sl == 5 && !strncasecmp(url, "https", 5))
    snprintf(o->scheme, sizeof o->scheme, "https");
  else
    return afs_error_set(err, EINVAL, "not an http or https URL");
  const char *auth = sep + 3;
  size_t al = strcspn(auth, "/?#");
  if (memchr(auth, '@', al))
    return afs_error_set(err, EINVAL, "URL has user info (name@host)");
  if (al == 0)
    return afs_error_set(err, EINVAL, "URL has no host");
  const char *port = NULL;
  size_t hl;
  char host[256];
  if (auth[0] == '[') {
    const char *close = memchr(auth, ']', al);
    if (!close)
      return afs_error_set(err, EINVAL, "unterminated IPv6 literal");
    hl = (size_t)(close - auth - 1);
    if (hl == 0 || hl >= sizeof host)
      return afs_error_set(err, EINVAL, "bad IPv6 literal");
    memcpy(host, auth + 1, hl);
    host[hl] = '\0';
    struct in6_addr a6;
    /* inet_pton refuses zone ids ("%25eth0"): a link-local zone is not an S3 endpoint. */
    if (inet_pton(AF_INET6, host, &a6) != 1 || !inet_ntop(AF_INET6, &a6, o->host, sizeof o->host))
      return afs_error_set(err, EINVAL, "bad IPv6 literal");
    size_t rest = al - (size_t)(close + 1 - auth);
    if (rest > 0) {
      if (close[1] != ':')
        return afs_error_set(err, EINVAL, "junk after the IPv6 literal");
      port = close + 2;
    }
  } else {
    const char *colon = memchr(auth, ':', al);
    hl = colon ? (size_t)(colon - auth) : al;
    if (colon)
      port = colon + 1;
    if (hl == 0 || hl >= sizeof host)
      return afs_error_set(err, EINVAL, "URL has no host or an overlong one");
    for (size_t i = 0; i < hl; i++) {
      unsigned char c = (unsigned char)auth[i];
      if (!host_char_ok(c))
        return afs_error_set(err, EINVAL,
                             "host has a character other than letters, digits, "
                             "'-', '.' and '_' (percent-encoded?)");
      host[i] = (char)tolower(c);
    }
    host[hl] = '\0';
    if (hl > 1 && host[hl - 1] == '.')
      host[--hl] = '\0'; /* "example.com." is "example.com" */
    if (host[0] == '.' || host[hl - 1] == '.' || strstr(host, ".."))
      return afs_error_set(err, EINVAL, "host has an empty label");
    struct in_addr a4;
    if (inet_aton(host, &a4)) { /* 127.1, 0x7f000001, 2130706433: all 127.0.0.1 */
      if (!inet_ntop(AF_INET, &a4, o->host, sizeof o->host))
        return afs_error_set(err, EINVAL, "bad IPv4 address");
    } else if (ends_numeric(host))
      return afs_error_set(err, EINVAL, "host looks like an IP address but is not one");
    else
      snprintf(o->host, sizeof o->host, "%s", host);
  }
  int dflt = !strcmp(o->scheme, "https") ? 443 : 80;
  o->port = dflt;
  if (port) {
    size_t pl = (size_t)(auth + al - port);
    if (pl == 0 || pl > 5 || strspn(port, "0123456789") < pl)
      return afs_error_set(err, EINVAL, "URL has an empty or non-numeric port");
    long v = strtol(port, NULL, 10);
    if (v < 1 || v > 65535)
      return afs_error_set(err, EINVAL, "URL port is out of range");
    o->port = (int)v;
  }
  return true;
}

bool afs_origin_equal(const struct afs_origin *a, const struct afs_origin *b) {
  return a->port == b->port && !strcmp(a->scheme, b->scheme) && !strcmp(a->host, b->host);
}

void afs_origin_format(const struct afs_origin *o, char *out, size_t n) {
  bool v6 = strchr(o->host, ':') != NULL;
  bool dflt = o->port == (!strcmp(o->scheme, "https") ? 443 : 80);
  char port[8] = "";
  if (!dflt)
    snprintf(port, sizeof port, ":%d", o->port);
  snprintf(out, n, "%s://%s%s%s%s", o->scheme, v6 ? "[" : "", o->host, v6 ? "]" : "", port);
}

void afs_origin_describe(const char *url, char *out, size_t n) {
  struct afs_origin o;
  if (n == 0)
    return;
  if (!url) {
    snprintf(out, n, "(none)");
    return;
  }
  if (afs_origin_parse(url, &o, NULL)) {
    afs_origin_format(&o, out, n);
    return;
  }
  /* Scheme and authority as written: up to the path, query or fragment. */
  const char *sep = strstr(url, "://");
  size_t end = sep ? (size_t)(sep - url) + 3 : 0;
  end += strcspn(url + end, "/?#");
  if (!sep)
    end = strcspn(url, "/?#");
  const char *at = NULL;
  for (size_t i = sep ? (size_t)(sep - url) + 3 : 0; i < end; i++)
    if (url[i] == '@')
      at = url + i;
  size_t k = 0, cap = n - 1 < 120 ? n - 1 : 120;
  for (size_t i = 0; i < end && k < cap; i++) {
    if (at && sep && url + i == sep + 3) {
      /* user info may be a password: name none of it */
      const char *mask = "***@";
      for (; *mask && k < cap; mask++)
        out[k++] = *mask;
      i = (size_t)(at - url);
      continue;
    }
    unsigned char c = (unsigned char)url[i];
    out[k++] = c > 0x20 && c < 0x7f ? (char)c : '?';
  }
  out[k] = '\0';
  if (k == 0)
    snprintf(out, n, "(empty)");
}
