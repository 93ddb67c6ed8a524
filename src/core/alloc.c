/* The one allocation policy: out of memory aborts (alloc.h says why). */
#include "assetfs/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *or_die(void *p) {
  if (!p)
    abort();
  return p;
}

void *afs_xmalloc(size_t n) {
  return or_die(malloc(n ? n : 1));
}

void *afs_xcalloc(size_t count, size_t size) {
  return or_die(calloc(count ? count : 1, size ? size : 1));
}

void *afs_xrealloc(void *p, size_t n) {
  return or_die(realloc(p, n ? n : 1));
}

char *afs_xstrdup(const char *s) {
  size_t n = strlen(s ? s : "") + 1;
  return memcpy(afs_xmalloc(n), s ? s : "", n);
}

char *afs_xstrndup(const char *s, size_t n) {
  size_t len = strnlen(s, n);
  char *o = memcpy(afs_xmalloc(len + 1), s, len);
  o[len] = '\0';
  return o;
}

void afs_xasprintf(char **out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vasprintf(out, fmt, ap);
  va_end(ap);
  if (r < 0)
    abort();
}
