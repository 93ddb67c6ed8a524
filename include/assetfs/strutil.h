/* Small string helpers shared across modules. Out of memory aborts (alloc.h). */
#ifndef ASSETFS_STRUTIL_H
#define ASSETFS_STRUTIL_H

#include "assetfs/alloc.h" /* afs_xstrdup */

/* s with every POSIX/PCRE regex metacharacter escaped, so that it matches literally.
 * Caller frees. */
char *afs_regex_quote(const char *s);

/* Overwrites, in place, the password of every "scheme://user:password@" in s with '*'
 * (a command line others can read in ps or /proc/PID/cmdline). The number of passwords
 * found. */
int afs_scrub_uri_passwords(char *s);

#endif
