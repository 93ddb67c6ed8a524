/* The broker's clients file (auth.h): who may ask, with which keys, in which partitions.
 * Parsed whole or not at all: a file with one bad line is refused, so a typo never
 * silently drops a client's restrictions. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/auth.h"
#include "assetfs/naming.h"

#define CLIENTS_FILE_MAX (4 << 20) /* bytes: thousands of clients */

bool afs_auth_pattern_match(const char *p, const char *s) {
  /* Iterative glob with one backtrack point: linear in practice, no recursion. */
  const char *star = NULL, *resume = NULL;
  while (*s) {
    if (*p == '*') {
      star = p++;
      resume = s;
    } else if (*p == *s) {
      p++;
      s++;
    } else if (star) {
      p = star + 1;
      s = ++resume;
    } else {
      return false;
    }
  }
  while (*p == '*')
    p++;
  return *p == '\0';
}

void afs_clients_free(struct afs_clients *c) {
  for (size_t i = 0; i < c->n; i++) {
    free(c->v[i].uid);
    for (size_t j = 0; j < c->v[i].npatterns; j++)
      free(c->v[i].patterns[j]);
    free(c->v[i].patterns);
  }
  free(c->v);
  c->v = NULL;
  c->n = 0;
}

/* The next blank-separated word of line [*at, end): its start and length (0 at the end). */
static size_t word(const char **at, const char *end, const char **w) {
  const char *p = *at;
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  *w = p;
  while (p < end && *p != ' ' && *p != '\t')
    p++;
  *at = p;
  return (size_t)(p - *w);
}

/* One line's client into *cl; false with err (without the line number). */
static bool parse_line(const char *p, const char *end, struct afs_client *cl,
                       struct afs_error *err) {
  const char *uid, *key, *pats, *extra;
  size_t ul = word(&p, end, &uid), kl = word(&p, end, &key), pl = word(&p, end, &pats);
  if (!ul || !kl || !pl)
    return afs_error_set(err, EINVAL, "want UID PUBLIC_KEY PATTERN[,PATTERN...]");
  if (word(&p, end, &extra))
    return afs_error_set(err, EINVAL,
                         "unexpected text after the patterns (no blanks in a "
                         "pattern list)");
  if (!afs_uid_check(uid, ul, err))
    return false;
  if (!afs_auth_pub_parse(key, kl, cl->pub, err))
    return false;
  cl->uid = afs_xstrndup(uid, ul);
  for (const char *s = pats, *pe = pats + pl; s <= pe;) {
    const char *comma = memchr(s, ',', (size_t)(pe - s));
    const char *e = comma ? comma : pe;
    if (e == s)
      return afs_error_set(err, EINVAL, "an empty pattern in '%.*s'", (int)pl, pats);
    for (const char *q = s; q < e; q++)
      if ((unsigned char)*q < 0x20 || *q == 0x7f)
        return afs_error_set(err, EINVAL, "a control character in a pattern");
    cl->patterns = afs_xrealloc(cl->patterns, (cl->npatterns + 1) * sizeof *cl->patterns);
    cl->patterns[cl->npatterns++] = afs_xstrndup(s, (size_t)(e - s));
    s = e + 1;
  }
  return true;
}

bool afs_clients_parse(const char *text, size_t len, struct afs_clients *out,
                       struct afs_error *err) {
  memset(out, 0, sizeof *out);
  if (memchr(text, '\0', len))
    return afs_error_set(err, EINVAL, "the clients file contains a NUL byte");
  const char *p = text, *end = text + len;
  for (int lineno = 1; p < end; lineno++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end, *q = p;
    if (le > p && le[-1] == '\r')
      le--;
    while (q < le && (*q == ' ' || *q == '\t'))
      q++;
    if (q < le && *q != '#') {
      struct afs_client cl = {0};
      out->v = afs_xrealloc(out->v, (out->n + 1) * sizeof *out->v);
      bool ok = parse_line(q, le, &cl, err);
      out->v[out->n++] = cl; /* freed with the rest on failure */
      if (!ok) {
        struct afs_error why = *err;
        afs_error_set(err, why.code, "line %d: %s", lineno, why.msg);
        afs_clients_free(out);
        return false;
      }
    }
    p = nl ? nl + 1 : end;
  }
  return true;
}

bool afs_clients_load(const char *path, struct afs_clients *out, struct afs_error *err) {
  memset(out, 0, sizeof *out);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return afs_error_set(err, errno, "cannot open the clients file %s: %s", path, strerror(errno));
  struct stat st;
  bool ok = false;
  char *text = NULL;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    afs_error_set(err, EINVAL, "the clients file %s is not a regular file", path);
  } else if (st.st_mode & 022) {
    afs_error_set(err, EPERM,
                  "the clients file %s is writable by group or others (mode %03o): whoever "
                  "can edit it can make any key a client; chmod go-w it",
                  path, (unsigned)(st.st_mode & 0777));
  } else if (st.st_size > CLIENTS_FILE_MAX) {
    afs_error_set(err, EFBIG, "the clients file %s is over %d bytes", path, CLIENTS_FILE_MAX);
  } else {
    size_t n = (size_t)st.st_size, got = 0;
    text = afs_xmalloc(n + 1);
    while (got < n) {
      ssize_t r = read(fd, text + got, n - got);
      if (r <= 0)
        break;
      got += (size_t)r;
    }
    if (got != n)
      afs_error_set(err, EIO, "cannot read the clients file %s", path);
    else if (afs_clients_parse(text, n, out, err))
      ok = true;
    else {
      struct afs_error why = *err;
      afs_error_set(err, why.code, "%s: %s", path, why.msg);
    }
  }
  free(text);
  close(fd);
  return ok;
}

bool afs_clients_verify(const struct afs_clients *c, const char *uid, const void *msg, size_t len,
                        const char *sig_b64) {
  for (size_t i = 0; uid && i < c->n; i++)
    if (!strcmp(c->v[i].uid, uid) && afs_auth_verify(c->v[i].pub, msg, len, sig_b64))
      return true;
  return false;
}

bool afs_clients_allows(const struct afs_clients *c, const char *uid, const char *partition) {
  for (size_t i = 0; uid && partition && i < c->n; i++) {
    if (strcmp(c->v[i].uid, uid))
      continue;
    for (size_t j = 0; j < c->v[i].npatterns; j++)
      if (afs_auth_pattern_match(c->v[i].patterns[j], partition))
        return true;
  }
  return false;
}
