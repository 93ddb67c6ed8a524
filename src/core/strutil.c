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

int afs_scrub_uri_passwords(char *s) {
  int n = 0;
  for (char *p = s ? strstr(s, "://") : NULL; p; p = strstr(p, "://")) {
    p += 3;
    /* the authority ends at the first '/', '?', '#' or ','; its userinfo before the last
     * '@' in it */
    size_t alen = strcspn(p, "/?#,");
    char *at = NULL;
    for (char *q = p; q < p + alen; q++)
      if (*q == '@')
        at = q;
    char *colon = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
    if (colon && colon + 1 < at) {
      memset(colon + 1, '*', (size_t)(at - colon - 1));
      n++;
    }
  }
  return n;
}
