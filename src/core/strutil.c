/* Small string helpers shared across modules (see strutil.h). */
#include "assetfs/strutil.h"
#include "assetfs/alloc.h"

#include <stdlib.h>
#include <string.h>

char *afs_regex_quote(const char *s) {
  char *out = afs_xmalloc(strlen(s) * 2 + 1), *o = out;
  for (; *s; s++) {
    if (strchr("\\^$.|?*+()[]{}", *s))
      *o++ = '\\';
    *o++ = *s;
  }
  *o = 0;
  return out;
}
