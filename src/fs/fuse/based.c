/* Opening a big asset to change it without downloading it (staging/base.h): the staged
 * copy starts sparse, based on the asset, and this is where its absent bytes are read
 * from (the asset's original, through a reader on its read URLs). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/log.h"
#include "fuse/ops_int.h"
#include "reader/reader.h"
#include "staging/base.h"

/* A reader on asset b->id's original, kept in b->src while b lives. */
static struct afs_reader *source(struct afs_fs *fs, struct afs_base *b, struct afs_error *err) {
  if (b->src)
    return b->src;
  char *url = NULL;
  int64_t expires_ms = 0;
  if (!afs_catalog_fresh_url(fs->cat, b->id, AFS_PART_ORIGINAL, NULL, &url, &expires_ms, err))
    return NULL;
  struct afs_asset a;
  memset(&a, 0, sizeof a);
  snprintf(a.id, sizeof a.id, "%s", b->id);
  a.size = b->asset_size;
  a.part = AFS_PART_ORIGINAL;
  a.url_part[AFS_PART_ORIGINAL] = url;
  a.expiration_ms = expires_ms;
  a.expiration_hours = expires_ms > 0 ? 1 : 0; /* only the refresh margin depends on it */
  b->src = afs_reader_open_asset(fs->rc, fs->cat, &a, err);
  free(url);
  return b->src;
}

bool afs_fs_base_fetch(void *ctx, struct afs_base *b, char *buf, size_t len, int64_t off,
                       struct afs_error *err) {
  struct afs_fs *fs = ctx;
  struct afs_reader *r = source(fs, b, err);
  size_t done = 0;
  while (r && done < len) {
    ssize_t n = afs_reader_read(r, buf + done, len - done, off + (int64_t)done, err);
    if (n < 0)
      break;
    if (n == 0) {
      afs_error_set(err, EIO, "asset %s ends at %lld bytes, before the %lld it had", b->id,
                    (long long)(off + (int64_t)done), (long long)b->asset_size);
      break;
    }
    done += (size_t)n;
  }
  if (done < len)
    afs_err("cannot read bytes of asset %s that a changed copy of it keeps there: %s", b->id,
            err->msg);
  return done == len;
}

void afs_fs_base_src_free(void *src) {
  afs_reader_close(src);
}

bool afs_fs_may_base(const struct afs_fs *fs, const struct afs_asset *a) {
  return fs->opt.multipart_threshold > 0 && a->part == AFS_PART_ORIGINAL &&
         a->size > fs->opt.multipart_threshold;
}
