/* The one allocation policy of both programs: running out of memory is fatal (abort),
 * as in redis's zmalloc and curl's tool code. A filesystem that went on without the
 * entry it failed to allocate would lose track of a file or an upload; dying loudly
 * lets the next mount of the session resume from its journals. Callers never check
 * these for NULL. */
#ifndef ASSETFS_ALLOC_H
#define ASSETFS_ALLOC_H

#include <stddef.h>

void *afs_xmalloc(size_t n);
/* Zeroed. */
void *afs_xcalloc(size_t count, size_t size);
/* realloc(p, n); p may be NULL. */
void *afs_xrealloc(void *p, size_t n);
/* strdup; NULL is copied as "". */
char *afs_xstrdup(const char *s);
/* The first n bytes of s (fewer at a NUL), NUL-terminated. */
char *afs_xstrndup(const char *s, size_t n);
/* asprintf(out, fmt, ...). */
void afs_xasprintf(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
