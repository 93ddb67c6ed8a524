/* The URLs the broker hands out: read URLs (signed, or plain under the public prefix)
 * and write URLs, with their lifetimes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"

long afs_broker_read_seconds(double hours) {
  if (hours > AFS_READ_HOURS_CAP)
    hours = AFS_READ_HOURS_CAP;
  long s = (long)(hours * 3600.0 + 0.5);
  if (s < 1)
    s = 1;
  if (s > AFS_SIGV4_MAX_EXPIRES)
    s = AFS_SIGV4_MAX_EXPIRES;
  return s;
}

char *afs_broker_read_url(struct afs_broker *b, const char *key, double hours,
                          struct afs_error *err) {
  if (hours == 0) {
    char *u = NULL;
    if (b->cfg.public_base_url && *b->cfg.public_base_url)
      u = afs_s3_public_url(b->cfg.public_base_url, key);
    else
      u = afs_s3_object_url(&b->s3, key);
    if (!u)
      afs_error_set(err, EINVAL, "cannot build the public URL of %s", key);
    return u;
  }
  return afs_sigv4_presign(&b->s3, "GET", key, NULL, NULL, 0, afs_broker_read_seconds(hours),
                           time(NULL), err);
}

char *afs_broker_write_url(struct afs_broker *b, const char *key, const char *content_type,
                           struct afs_error *err) {
  struct afs_sigv4_header h = {"content-type", content_type};
  return afs_sigv4_presign(&b->s3, "PUT", key, NULL, content_type ? &h : NULL, content_type ? 1 : 0,
                           b->cfg.write_url_seconds, time(NULL), err);
}
