/* Small string helpers shared across modules.
 *
 * Out of memory is treated as fatal here (abort), as in the rest of the filesystem's
 * in-memory bookkeeping: callers never check these for NULL.
 */
#ifndef ASSETFS_STRUTIL_H
#define ASSETFS_STRUTIL_H

/* strdup that aborts on OOM; NULL is copied as "". Caller frees. */
char *afs_xstrdup(const char *s);

/* s with every POSIX/PCRE regex metacharacter escaped, so that it matches literally.
 * Caller frees. */
char *afs_regex_quote(const char *s);

#endif
