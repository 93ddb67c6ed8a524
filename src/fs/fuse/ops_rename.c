/* rename(2) through the mount. Files: a record update (filePath), never a copy, because
 * the S3 key does not depend on the path. Directories: every staged file and every
 * asset under it gets its new filePath, one update each; that is NOT atomic: another
 * client listing during a rename of a large directory can see part of it moved, and a
 * failure halfway leaves the rest under the old name (the error is reported and a
 * second rename finishes the job). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/log.h"
#include "fuse/ops_int.h"
#include "fuse/retype.h"
#include "staging/base.h"
#include "upload/upload.h"

/* What the target path holds is replaced: its staged file and its assets go, before
 * anything is moved there. An upload of the staged file still in flight is marked
 * abandoned first (afs_upload_unlinked), so its completion cannot supersede the file
 * moved in. */
static int drop_target(struct afs_fs *fs, const struct afs_fpath *to, const char *keep_id) {
  struct afs_error e = {0};
  struct afs_wfile *old = afs_staging_get(fs->st, to->partition, to->rel);
  if (old) {
    afs_staging_remove(fs->st, old);
    bool marked = afs_upload_unlinked(fs->up, old, &e);
    afs_staging_unref(fs->st, old);
    if (!marked) /* nothing moves over an upload that could still supersede it */
      return afs_fs_errno(&e);
  }
  struct afs_asset a;
  memset(&a, 0, sizeof a);
  int k = afs_catalog_lookup(fs->cat, to->partition, to->rel, &a, &e);
  if (k == AFS_CAT_FILE)
    afs_asset_free(&a);
  if ((old || k == AFS_CAT_FILE) &&
      !afs_asset_delete_at(fs->up, to->partition, to->rel, keep_id, &e))
    return afs_fs_errno(&e);
  return 0;
}

static int rename_file(struct afs_fs *fs, const struct afs_fpath *from, const struct afs_fpath *to,
                       struct afs_wfile *wf, const struct afs_asset *a) {
  struct afs_error e = {0};
  char id[AFS_OID_HEX] = "";
  if (wf) {
    /* The asset at the old name is removed below; what the file still reads from it
     * (staging/base.h) is staged first. */
    if (!afs_base_fill(fs->st, wf, 0, -1, &e)) {
      afs_err("cannot rename %s/%s: %s", from->partition, from->rel, e.msg);
      return afs_fs_errno(&e);
    }
    pthread_mutex_lock(&wf->mu);
    memcpy(id, wf->id, sizeof id);
    pthread_mutex_unlock(&wf->mu);
  } else {
    memcpy(id, a->id, sizeof id);
  }
  int rc = drop_target(fs, to, id);
  if (rc)
    return rc;
  if (wf) {
    struct afs_wfile *displaced = afs_staging_move(fs->st, wf, to->partition, to->rel);
    afs_staging_unref(fs->st, displaced); /* drop_target took it out already */
    if (!afs_upload_renamed(fs->up, wf, &e))
      rc = afs_fs_errno(&e);
    /* An older asset of the same path as wf (the catalog's) goes with the old name. */
    struct afs_asset old;
    memset(&old, 0, sizeof old);
    if (afs_catalog_lookup(fs->cat, from->partition, from->rel, &old, &e) == AFS_CAT_FILE) {
      if (strcmp(old.id, id) != 0)
        afs_asset_mark_deleted(fs->up, old.id, &e);
      else if (!afs_asset_set_file_path(fs->up, id, to->rel, &e))
        rc = afs_fs_errno(&e);
      afs_asset_free(&old);
    }
  } else if (!afs_asset_set_file_path(fs->up, a->id, to->rel, &e)) {
    rc = afs_fs_errno(&e);
  }
  afs_catalog_invalidate_path(fs->cat, from->partition, from->rel);
  afs_catalog_invalidate_path(fs->cat, to->partition, to->rel);
  /* rsync's ".name.mp4.XXXXXX" -> "name.mp4": the file becomes a proper video. */
  if (!rc)
    afs_retype_after_rename(fs, to->partition, to->rel, wf, wf ? NULL : a);
  return rc;
}

/* Like afs_fs_resolve (an enum afs_node or a negative errno), staged files included,
 * nothing returned. */
static int kind_at(struct afs_fs *fs, const struct afs_fpath *p) {
  struct afs_wfile *wf = NULL;
  int k = afs_fs_resolve(fs, p, &wf, NULL);
  afs_staging_unref(fs->st, wf);
  return k;
}

static int empty_cb(void *ctx, const char *name, const struct afs_asset *a) {
  (void)name;
  (void)a;
  *(bool *)ctx = true;
  return 1;
}

static int rename_dir(struct afs_fs *fs, const struct afs_fpath *from, const struct afs_fpath *to) {
  struct afs_error e = {0};
  size_t n = strlen(from->rel);
  if (!strncmp(to->rel, from->rel, n) && to->rel[n] == '/')
    return -EINVAL; /* into itself */
  int k = kind_at(fs, to);
  if (k == AFS_NODE_ASSET || k == AFS_NODE_STAGED)
    return -ENOTDIR;
  if (k == AFS_NODE_DIR) {
    bool any = afs_staging_dir_has_children(fs->st, to->partition, to->rel);
    if (!any)
      afs_catalog_list(fs->cat, to->partition, to->rel, empty_cb, &any, &e);
    if (any)
      return -ENOTEMPTY;
    afs_staging_remove_dir(fs->st, to->partition, to->rel);
  }
  struct afs_wfile **moved = NULL;
  int nm = afs_staging_move_dir(fs->st, from->partition, from->rel, to->rel, &moved);
  int rc = 0;
  for (int i = 0; i < nm; i++) {
    if (!afs_upload_renamed(fs->up, moved[i], &e))
      rc = afs_fs_errno(&e);
    afs_staging_unref(fs->st, moved[i]);
  }
  free(moved);
  if (afs_asset_rename_dir(fs->up, from->partition, from->rel, to->rel, &e) < 0) {
    afs_err("renaming %s to %s stopped halfway: %s", from->rel, to->rel, e.msg);
    rc = afs_fs_errno(&e);
  }
  /* A directory that held only local subdirectories moves as such. */
  if (afs_staging_remove_dir(fs->st, from->partition, from->rel) ||
      !afs_staging_is_dir(fs->st, to->partition, to->rel))
    afs_staging_add_dir(fs->st, to->partition, to->rel);
  afs_catalog_invalidate_dir(fs->cat, from->partition, from->rel);
  afs_catalog_invalidate_dir(fs->cat, to->partition, to->rel);
  return rc;
}

int afs_op_rename(const char *from_path, const char *to_path, unsigned int flags) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fpath from, to;
  struct afs_wfile *wf = NULL;
  struct afs_asset a;
  memset(&a, 0, sizeof a);
  int rc = afs_fpath_parse(from_path, &from);
  if (rc)
    return rc;
  if ((rc = afs_fpath_parse(to_path, &to))) {
    afs_fpath_free(&from);
    return rc == -ENOENT ? -EINVAL : rc;
  }
  int k = AFS_NODE_NONE;
  if (fs->opt.ro)
    rc = -EROFS;
  else if (flags & RENAME_EXCHANGE)
    rc = -EINVAL;
  else if (from.depth < 2 || to.depth < 2)
    rc = -EPERM; /* partitions are not renamed */
  else if (strcmp(from.partition, to.partition) != 0)
    rc = -EXDEV; /* mv falls back to copy + unlink */
  else if (afs_fs_is_cuts_path(from.rel))
    rc = -EPERM;
  else if ((rc = afs_fs_check_name(&to)))
    ;
  else if (!strcmp(from.rel, to.rel))
    rc = 0;
  else if ((k = afs_fs_resolve(fs, &from, &wf, &a)) <= AFS_NODE_NONE)
    rc = k < 0 ? k : -ENOENT;
  else {
    int tk = kind_at(fs, &to);
    if ((flags & RENAME_NOREPLACE) && tk > AFS_NODE_NONE)
      rc = -EEXIST;
    else if (tk < 0)
      rc = tk;
    else if (k == AFS_NODE_DIR)
      rc = rename_dir(fs, &from, &to);
    else if (tk == AFS_NODE_DIR)
      rc = -EISDIR;
    else
      rc = rename_file(fs, &from, &to, k == AFS_NODE_STAGED ? wf : NULL, &a);
  }
  if (k == AFS_NODE_ASSET)
    afs_asset_free(&a);
  afs_staging_unref(fs->st, wf);
  afs_fpath_free(&from);
  afs_fpath_free(&to);
  return rc;
}
