/* The uploader's record operations, each one call into its store (store.h): what the
 * pipeline, the poller and the FUSE operations call, whichever store is behind. */
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/log.h"
#include "upload/upload_int.h"

#define STORE(up) ((up)->store.ops)

void afs_rec_state_free(struct record_state *rs) {
  for (int i = 0; i < AFS_PART_COUNT; i++)
    free(rs->write_url[i]);
  memset(rs, 0, sizeof *rs);
}

bool afs_upload_begin(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  return afs_upload_begin_many(up, &wf, 1, err);
}

/* One insert command for all n: one round trip instead of n, and the broker then signs
 * them as one burst. */
bool afs_upload_begin_many(struct afs_uploader *up, struct afs_wfile **wfs, int n,
                           struct afs_error *err) {
  struct afs_pending_rec *recs = afs_xcalloc(n, sizeof *recs);
  char(*ids)[AFS_OID_HEX] = afs_xcalloc(n, sizeof *ids);
  char **names = afs_xcalloc(2 * (size_t)n, sizeof *names);
  char(*types)[128] = afs_xcalloc(n, sizeof *types);
  for (int i = 0; i < n; i++) {
    afs_staging_names(up->st, wfs[i], &names[2 * i], &names[2 * i + 1]);
    pthread_mutex_lock(&wfs[i]->mu);
    memcpy(types[i], wfs[i]->content_type, sizeof types[i]);
    pthread_mutex_unlock(&wfs[i]->mu);
    recs[i] = (struct afs_pending_rec){names[2 * i], names[2 * i + 1], types[i]};
  }
  bool ok = STORE(up)->insert_pending(up->store.ctx, recs, n, ids, err);
  for (int i = 0; ok && i < n; i++) {
    afs_wf_record_made(wfs[i], ids[i]);
    /* Removed while the insert ran: the unlink saw no id to drop or mark abandoned, and
     * nobody else knows this one. */
    char id[AFS_OID_HEX];
    if (!afs_wf_record_of(wfs[i], id))
      afs_rec_forget(up, id);
  }
  for (int i = 0; i < 2 * n; i++)
    free(names[i]);
  free(names);
  free(types);
  free(ids);
  free(recs);
  return ok;
}

bool afs_rec_delete_unused(struct afs_uploader *up, const char *id, bool *gone,
                           struct afs_error *err) {
  return STORE(up)->delete_unused(up->store.ctx, id, gone, err);
}

bool afs_rec_abandon(struct afs_uploader *up, const char *id, struct afs_error *err) {
  return STORE(up)->abandon(up->store.ctx, id, err);
}

void afs_rec_forget(struct afs_uploader *up, const char *id) {
  struct afs_error e = {0};
  bool gone = false;
  if (afs_rec_delete_unused(up, id, &gone, &e) && gone)
    return;
  if (!afs_rec_abandon(up, id, &e))
    afs_warn("cannot mark upload %s abandoned: %s", id, e.msg);
}

bool afs_rec_fetch(struct afs_uploader *up, const char *id, struct record_state *rs,
                   struct afs_error *err) {
  memset(rs, 0, sizeof *rs);
  return STORE(up)->fetch(up->store.ctx, id, rs, err);
}

bool afs_rec_batch_status(struct afs_uploader *up, char (*ids)[AFS_OID_HEX], int n,
                          enum afs_upload_status *out) {
  return STORE(up)->batch_status(up->store.ctx, ids, n, out);
}

bool afs_rec_session_scan(struct afs_uploader *up, const char *status,
                          void (*fn)(void *ctx, const char *id), void *ctx, struct afs_error *err) {
  return STORE(up)->session_scan(up->store.ctx, status, fn, ctx, err);
}

bool afs_rec_set_uploaded(struct afs_uploader *up, const char *id, const struct meta *m,
                          const char *caption, int64_t mtime, struct afs_error *err) {
  return STORE(up)->set_uploaded(up->store.ctx, id, m, caption, mtime, err);
}

bool afs_rec_asset_active(struct afs_uploader *up, const char *id, bool *active,
                          struct afs_error *err) {
  *active = false;
  return STORE(up)->asset_active(up->store.ctx, id, active, err);
}

bool afs_asset_set_file_path(struct afs_uploader *up, const char *id, const char *file_path,
                             struct afs_error *err) {
  return STORE(up)->set_file_path(up->store.ctx, id, file_path, false, true, err);
}

bool afs_asset_mark_deleted(struct afs_uploader *up, const char *id, struct afs_error *err) {
  return STORE(up)->asset_mark_deleted(up->store.ctx, id, err);
}

bool afs_asset_delete_at(struct afs_uploader *up, const char *partition, const char *file_path,
                         const char *keep_id, struct afs_error *err) {
  return STORE(up)->asset_delete_at(up->store.ctx, partition, file_path, keep_id, err);
}

bool afs_asset_set_mtime(struct afs_uploader *up, const char *id, int64_t mtime_ms,
                         struct afs_error *err) {
  return STORE(up)->asset_set_mtime(up->store.ctx, id, mtime_ms, err);
}

int afs_asset_rename_dir(struct afs_uploader *up, const char *partition, const char *from_dir,
                         const char *to_dir, struct afs_error *err) {
  return STORE(up)->asset_rename_dir(up->store.ctx, partition, from_dir, to_dir, err);
}

bool afs_upload_renamed(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  char id[AFS_OID_HEX], *partition, *file_path;
  enum afs_wstate state;
  afs_wf_renamed(wf, id, &state);
  if (!id[0])
    return true;
  afs_staging_names(up->st, wf, &partition, &file_path);
  /* The broker may have created the asset from the old filePath meanwhile; the poller
   * checks again when it sees the completion. */
  bool asset = state == AFS_W_UPLOADED || state == AFS_W_COMPLETED;
  bool ok = STORE(up)->set_file_path(up->store.ctx, id, file_path, true, asset, err);
  free(partition);
  free(file_path);
  return ok;
}

bool afs_upload_stopping(struct afs_uploader *up) {
  pthread_mutex_lock(&up->mu);
  bool s = up->stop;
  pthread_mutex_unlock(&up->mu);
  return s;
}
