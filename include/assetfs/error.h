/* Error reporting below the FUSE layer.
 *
 * Functions return bool (or int) and fill a struct afs_error: an errno-style code
 * that the FUSE boundary maps to a negative errno in one place, and a message for
 * logs and for the `error` field that the broker writes into records.
 */
#ifndef ASSETFS_ERROR_H
#define ASSETFS_ERROR_H

#include <stdbool.h>
#include <stddef.h>

#define AFS_ERROR_MSG_MAX 512

struct afs_error {
  int code; /* errno value (EIO, ENOENT, EINVAL, …); 0 when no error is set */
  char msg[AFS_ERROR_MSG_MAX];
};

/* Sets the error (err may be NULL) and returns false, so callers can write
 * `return afs_error_set(err, EINVAL, "bad %s", what);`. */
bool afs_error_set(struct afs_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with context ("while doing X: <old message>"). */
bool afs_error_wrap(struct afs_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void afs_error_clear(struct afs_error *err);

#endif
