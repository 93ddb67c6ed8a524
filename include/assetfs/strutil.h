/* Small string helpers shared across modules. Out of memory aborts (alloc.h). */
#ifndef ASSETFS_STRUTIL_H
#define ASSETFS_STRUTIL_H

#include "assetfs/alloc.h" /* afs_xstrdup */

/* s with every POSIX/PCRE regex metacharacter escaped, so that it matches literally.
 * Caller frees. */
char *afs_regex_quote(const char *s);

#endif
