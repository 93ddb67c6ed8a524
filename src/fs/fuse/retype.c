/* A rename that changes a file's type: upload it again as its new type (retype.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assetfs/log.h"
#include "assetfs/mime.h"
#include "assetfs/naming.h"
#include "fuse/ops_int.h"
#include "fuse/retype.h"
#include "staging/wfile.h"
#include "upload/upload.h"
#include "upload/upload_int.h" /* afs_rec_delete_unused */

/* The staged file's type becomes ct; queued again if an upload of the old type ran. */
static int retype_staged(struct afs_fs *fs, const char *partition, const char *rel,
                         struct afs_wfile *wf, const char *ct, bool *restage_asset) {
  struct afs_error e = {0};
  *restage_asset = false;
  struct afs_wf_retype rt;
  afs_wf_retyped(wf, ct, &rt);
  if (!rt.changed)
    return 0;
  afs_debug("%s/%s: renamed from a %s to a %s name%s", partition, rel, rt.old_type, ct,
            rt.ran ? "; uploading it again" : "");
  if (!afs_staging_journal(fs->st, wf, false, &e))
    afs_warn("%s", e.msg);
  bool gone;
  if (rt.stale_id[0] && !afs_rec_delete_unused(fs->up, rt.stale_id, &gone, &e))
    afs_warn("cannot drop upload record %s: %s", rt.stale_id, e.msg);
  if (rt.ran)
    afs_upload_queue(fs->up, wf);
  /* The staged copy of a completed file may have been dropped meanwhile (the catalog
   * served the old asset): then the asset's bytes are the ones to upload again. */
  struct afs_wfile *now = afs_staging_get(fs->st, partition, rel);
  *restage_asset = rt.ran && now != wf;
  afs_staging_unref(fs->st, now);
  return 0;
}

/* Copy-on-write of asset a (now at partition/rel) into a new staged file of type ct,
 * queued for upload. */
static int restage(struct afs_fs *fs, const char *partition, const char *rel,
                   const struct afs_asset *a, const char *ct) {
  struct afs_error e = {0};
  struct afs_wfile *replaced = NULL, *wf = NULL;
  char *buf = NULL;
  int rc = 0;
  struct afs_reader *r = afs_reader_open_asset(fs->rc, fs->cat, a, &e);
  if (!r)
    return afs_fs_errno(&e);
  wf = afs_staging_create(fs->st, partition, rel, ct, &replaced, &e);
  if (!wf) {
    rc = afs_fs_errno(&e);
    goto done;
  }
  if (!afs_upload_begin(fs->up, wf, &e)) {
    rc = afs_fs_errno(&e);
    goto fail;
  }
  size_t bufsz = 1 << 20;
  if (!(buf = malloc(bufsz))) {
    rc = -ENOMEM;
    goto fail;
  }
  for (int64_t off = 0;;) {
    ssize_t n = afs_reader_read(r, buf, bufsz, off, &e);
    if (n < 0) {
      rc = afs_fs_errno(&e);
      goto fail;
    }
    if (n == 0)
      break;
    if (pwrite(wf->fd, buf, (size_t)n, off) != n) {
      rc = errno ? -errno : -ENOSPC;
      goto fail;
    }
    off += n;
    afs_staging_account(fs->st, wf, off, true);
  }
  afs_wf_restaged(wf, a->mtime_ms, a->caption);
  if (!afs_staging_journal(fs->st, wf, false, &e))
    afs_warn("%s", e.msg);
  afs_upload_queue(fs->up, wf);
  afs_catalog_invalidate_path(fs->cat, partition, rel);
  goto done;
fail:
  afs_upload_unlinked(fs->up, wf, NULL);
  afs_staging_remove(fs->st, wf);
done:
  if (replaced) /* nothing was staged at the new name: rename dropped the target */
    afs_staging_unref(fs->st, replaced);
  afs_staging_unref(fs->st, wf);
  free(buf);
  afs_reader_close(r);
  return rc;
}

int afs_retype_after_rename(struct afs_fs *fs, const char *partition, const char *rel,
                            struct afs_wfile *wf, const struct afs_asset *a) {
  const char *ct = afs_mime_from_path(rel);
  bool from_asset = !wf;
  int rc = 0;
  if (wf && (rc = retype_staged(fs, partition, rel, wf, ct, &from_asset)))
    return rc;
  if (!from_asset)
    return 0;
  struct afs_asset found;
  memset(&found, 0, sizeof found);
  if (!a) {
    struct afs_error e = {0};
    afs_catalog_invalidate_path(fs->cat, partition, rel);
    if (afs_catalog_lookup(fs->cat, partition, rel, &found, &e) != AFS_CAT_FILE)
      return 0;
    a = &found;
  }
  enum afs_kind nk = afs_content_kind(ct);
  if (!a->id[0] || nk == AFS_KIND_OTHER || nk == afs_content_kind(a->content_type)) {
    afs_asset_free(&found);
    return 0;
  }
  afs_info("%s/%s: renamed from a %s to a %s name; uploading it again as such", partition, rel,
           a->content_type, ct);
  rc = restage(fs, partition, rel, a, ct);
  if (rc)
    afs_warn("%s/%s keeps its type %s: %s", partition, rel, a->content_type, strerror(-rc));
  afs_asset_free(&found);
  return rc;
}
