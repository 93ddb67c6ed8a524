/* Small string helpers shared across modules (see strutil.h). */
#include "assetfs/strutil.h"

#include <stdlib.h>
#include <string.h>

char *afs_xstrdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d)
    abort();
  return d;
}

char *afs_regex_quote(const char *s) {
  char *out = malloc(strlen(s) * 2 + 1), *o = out;
  if (!out)
    abort();
  for (; *s; s++) {
    if (strchr("\\^$.|?*+()[]{}", *s))
      *o++ = '\\';
    *o++ = *s;
  }
  *o = 0;
  return out;
}
