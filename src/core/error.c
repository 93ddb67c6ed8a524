#include "assetfs/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool afs_error_set(struct afs_error *err, int code, const char *fmt, ...) {
  if (!err)
    return false;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  err->code = code ? code : EIO;
  return false;
}

bool afs_error_wrap(struct afs_error *err, const char *fmt, ...) {
  if (!err)
    return false;
  char prefix[AFS_ERROR_MSG_MAX], old[AFS_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
  if (!err->code)
    err->code = EIO;
  return false;
}

void afs_error_clear(struct afs_error *err) {
  if (err) {
    err->code = 0;
    err->msg[0] = '\0';
  }
}
