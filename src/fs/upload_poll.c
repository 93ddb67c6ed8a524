/* After `uploaded`: one thread polls the records of uploaded files (and of orphans,
 * files removed or replaced whose asset must be deleted once it exists) by _id until the
 * broker completes or refuses them, fixes up the new asset (filePath, mtime), and drops
 * the staged copy once the catalog shows the asset at its path. */
#include "upload_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/http_put.h" /* afs_monotonic_ms */
#include "assetfs/image.h"
#include "assetfs/log.h"

void afs_up_add_orphan(struct afs_uploader *up, struct afs_wfile *wf) {
  afs_staging_ref(up->fs->st, wf);
  pthread_mutex_lock(&up->mu);
  if (up->n_orphans == up->cap_orphans) {
    up->cap_orphans = up->cap_orphans ? up->cap_orphans * 2 : 16;
    void *grown = realloc(up->orphans, up->cap_orphans * sizeof *up->orphans);
    if (!grown)
      abort(); /* as the rest of the allocation paths: no way to go on without losing track */
    up->orphans = grown;
  }
  up->orphans[up->n_orphans++] = wf;
  up->wake = true;
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
}


static void on_completed(struct afs_uploader *up, struct afs_wfile *wf, const char *polled_id) {
  struct afs_error err = {0};
  char id[25];
  char *partition = NULL, *file_path = NULL;
  pthread_mutex_lock(&wf->mu);
  if (strcmp(wf->id, polled_id) != 0 ||
      (wf->state != AFS_W_UPLOADED && !(wf->unlinked && wf->state != AFS_W_UPLOADING))) {
    /* Written again since: that older upload's asset will be superseded by the next. */
    pthread_mutex_unlock(&wf->mu);
    return;
  }
  wf->state = AFS_W_COMPLETED;
  memcpy(id, wf->id, sizeof id);
  int64_t mtime = wf->mtime_ms;
  bool unlinked = wf->unlinked;
  char *caption = wf->caption ? strdup(wf->caption) : NULL;
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  pthread_mutex_lock(&up->mu);
  up->n_completed++;
  pthread_mutex_unlock(&up->mu);
  if (unlinked) {
    if (!afs_asset_mark_deleted(up, id, &err))
      afs_warn("cannot mark asset %s deleted: %s", id, err.msg);
    free(caption);
    return;
  }
  /* A rename may have raced with the broker copying filePath: write the current one. */
  afs_staging_ref(up->fs->st, wf);
  afs_staging_names(up->fs->st, wf, &partition, &file_path);
  if (!afs_asset_set_file_path(up, id, file_path, &err))
    afs_warn("cannot update filePath of %s: %s", id, err.msg);
  if (mtime && !afs_asset_set_mtime(up, id, mtime, &err))
    afs_warn("cannot set mtime of %s: %s", id, err.msg);
  /* A caption set after `uploaded` went on the record, which the broker copies only if
   * it read it in time, and setxattr waits for completion only so long: set it again. */
  if (caption && up->fs->cat && !afs_catalog_set_caption(up->fs->cat, id, caption, &err))
    afs_warn("cannot set the caption of %s: %s", id, err.msg);
  free(caption);
  if (up->fs->cat)
    afs_catalog_invalidate_path(up->fs->cat, partition, file_path);
  afs_debug("%s/%s completed as asset %s", partition, file_path, id);
  afs_staging_unref(up->fs->st, wf);
  free(partition);
  free(file_path);
}

/* Drops the staged copy of a completed file once the catalog serves that asset at its
 * path: until the broker has retired the asset it supersedes, a lookup could still
 * answer with the old one, and reads must not go back in time. */
static void drop_when_shown(struct afs_uploader *up, struct afs_wfile *wf) {
  char id[25], *partition, *file_path;
  struct afs_error err = {0};
  struct afs_asset a;
  memset(&a, 0, sizeof a);
  pthread_mutex_lock(&wf->mu);
  bool check = wf->state == AFS_W_COMPLETED && !wf->shown && !wf->unlinked;
  memcpy(id, wf->id, sizeof id);
  pthread_mutex_unlock(&wf->mu);
  if (!check || !up->fs->cat)
    return;
  afs_staging_names(up->fs->st, wf, &partition, &file_path);
  /* By _id: one indexed query, and no lookup by path (a scan on FerretDB). */
  int k = afs_catalog_confirm(up->fs->cat, partition, file_path, id, &a, &err);
  bool ours = k == AFS_CAT_FILE && !strcmp(a.id, id);
  if (k == AFS_CAT_FILE)
    afs_asset_free(&a);
  free(partition);
  free(file_path);
  if (!ours)
    return;
  pthread_mutex_lock(&wf->mu);
  wf->shown = wf->state == AFS_W_COMPLETED && !strcmp(wf->id, id);
  pthread_mutex_unlock(&wf->mu);
  /* The final check is made under the locks that open takes: a file opened (and maybe
   * written) since the lookup keeps its staged copy; its release drops it later. */
  afs_staging_drop_if_idle(up->fs->st, wf, id);
}

/* An uploaded file whose record is gone (the broker deletes it with a superseded or
 * deleted asset; a resumed file may find it so): completed if its asset is active,
 * otherwise there is nothing of it left to wait for. */
static void lost_record(struct afs_uploader *up, struct afs_wfile *wf, const char *id) {
  struct afs_error err = {0};
  bool active = false;
  if (!afs_rec_asset_active(up, id, &active, &err))
    return;
  if (active) {
    on_completed(up, wf, id);
    return;
  }
  pthread_mutex_lock(&wf->mu);
  bool gone = !strcmp(wf->id, id) && wf->state == AFS_W_UPLOADED;
  pthread_mutex_unlock(&wf->mu);
  if (gone) {
    char *label = afs_up_label(up, wf);
    afs_info("%s: upload %s was superseded; dropping the staged copy", label, id);
    free(label);
    afs_staging_remove(up->fs->st, wf);
  }
}

/* An uploaded file whose record is back at pending/initialized: FerretDB applies an
 * update as read-modify-write of the whole document, so a broker write that raced ours
 * (a duplicate claim, a late initialization) can drop our `uploaded`. Nobody would ever
 * complete it: upload again on the same record (same keys, same bytes), which also sets
 * `uploaded` again. The grace period keeps a read that raced our own update harmless. */
static void record_regressed(struct afs_uploader *up, struct afs_wfile *wf, const char *id,
                             const char *status, int64_t now) {
  pthread_mutex_lock(&wf->mu);
  bool heal = !strcmp(wf->id, id) && wf->state == AFS_W_UPLOADED && !wf->busy &&
              !wf->unlinked && now - wf->uploaded_ms > 1000;
  if (heal) {
    wf->state = AFS_W_RETRYING;
    wf->record_used = false;
    wf->next_try_ms = now;
  }
  pthread_mutex_unlock(&wf->mu);
  if (!heal)
    return;
  char *label = afs_up_label(up, wf);
  afs_warn("%s: upload record %s went back to '%s' after it was marked uploaded (an update "
           "lost by the database); uploading again on the same record",
           label, id, status);
  free(label);
  afs_up_pool_kick(up);
}

/* One pass: completions, errors and retries. Returns true if something is in flight
 * (poll again soon). */
static bool worker_pass(struct afs_uploader *up) {
  struct afs_wfile **all;
  int n = afs_staging_snapshot(up->fs->st, &all);
  /* orphans join the poll */
  pthread_mutex_lock(&up->mu);
  size_t no = up->n_orphans;
  struct afs_wfile **orphans = up->orphans;
  up->orphans = NULL;
  up->n_orphans = up->cap_orphans = 0;
  pthread_mutex_unlock(&up->mu);
  int total = n + (int)no;
  void *grown = realloc(all, (total ? total : 1) * sizeof *all);
  if (!grown)
    abort();
  all = grown;
  for (size_t i = 0; i < no; i++)
    all[n + i] = orphans[i];
  free(orphans);

  char(*ids)[25] = calloc(total ? total : 1, sizeof *ids);
  char(*status)[32] = calloc(total ? total : 1, sizeof *status);
  int *idx = calloc(total ? total : 1, sizeof *idx);
  int polled = 0;
  bool active = false;
  int64_t now = afs_monotonic_ms();
  for (int i = 0; i < total; i++) {
    struct afs_wfile *wf = all[i];
    pthread_mutex_lock(&wf->mu);
    enum afs_wstate s = wf->state;
    bool busy = wf->busy;
    /* Retries are the upload workers' (pool_main); this pass only watches records. */
    bool retry_pending = !busy && !wf->unlinked &&
                         (s == AFS_W_QUEUED || (s == AFS_W_RETRYING && now >= wf->next_try_ms));
    if ((s == AFS_W_UPLOADED || (i >= n && s != AFS_W_COMPLETED)) && wf->id[0] && !busy &&
        now >= wf->next_poll_ms) {
      memcpy(ids[polled], wf->id, sizeof ids[polled]);
      idx[polled++] = i;
      /* One find per record and pass: with hundreds waiting for the broker, polling each
       * as often as a fresh one would load the database the broker needs. A record is
       * asked again after a quarter of its age (100 ms to 2 s). */
      int64_t age = now - wf->uploaded_ms;
      wf->next_poll_ms = now + (age / 4 < 100 ? 100 : age / 4 > 2000 ? 2000 : age / 4);
    }
    pthread_mutex_unlock(&wf->mu);
    active |= s == AFS_W_UPLOADED || s == AFS_W_UPLOADING || busy;
    if (retry_pending)
      afs_up_pool_kick(up);
  }
  if (polled > 0 && afs_rec_batch_status(up, ids, polled, status)) {
    for (int k = 0; k < polled; k++) {
      struct afs_wfile *wf = all[idx[k]];
      if (!strcmp(status[k], ST_COMPLETED)) {
        on_completed(up, wf, ids[k]);
      } else if (!strcmp(status[k], ST_ERROR)) {
        pthread_mutex_lock(&wf->mu);
        if (!strcmp(wf->id, ids[k]) && wf->state == AFS_W_UPLOADED) {
          wf->state = AFS_W_FAILED;
          afs_error_set(&wf->last_err, EPROTO, "the broker rejected the upload");
        }
        pthread_mutex_unlock(&wf->mu);
        afs_warn("the broker rejected the upload of %s (record %s)", wf->staging_path, ids[k]);
      } else if (idx[k] < n && !status[k][0]) {
        lost_record(up, wf, ids[k]);
      } else if (idx[k] < n &&
                 (!strcmp(status[k], ST_PENDING) || !strcmp(status[k], ST_INITIALIZED))) {
        record_regressed(up, wf, ids[k], status[k], now);
      } else if (idx[k] >= n && !status[k][0]) {
        /* An orphan whose record vanished: nothing left to delete. */
        pthread_mutex_lock(&wf->mu);
        wf->state = AFS_W_COMPLETED;
        pthread_mutex_unlock(&wf->mu);
      } else if (idx[k] >= n) {
        afs_up_add_orphan(up, wf); /* keep watching */
      }
    }
  } else {
    for (int k = 0; k < polled; k++)
      if (idx[k] >= n)
        afs_up_add_orphan(up, all[idx[k]]);
  }
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&all[i]->mu);
    bool waiting = all[i]->state == AFS_W_COMPLETED && !all[i]->shown;
    pthread_mutex_unlock(&all[i]->mu);
    if (waiting) {
      drop_when_shown(up, all[i]);
      active = true;
    }
  }
  for (int i = 0; i < total; i++)
    afs_staging_unref(up->fs->st, all[i]);
  free(all);
  free(ids);
  free(status);
  free(idx);
  return active || polled > 0;
}

void *afs_up_poll_main(void *arg) {
  struct afs_uploader *up = arg;
  long interval_ms = 20;
  for (;;) {
    pthread_mutex_lock(&up->mu);
    bool stop = up->stop;
    pthread_mutex_unlock(&up->mu);
    if (stop)
      break;
    bool active = worker_pass(up);
    interval_ms = active ? (interval_ms < 200 ? interval_ms + 20 : 200) : 1000;
    pthread_mutex_lock(&up->mu);
    if (!up->wake && !up->stop)
      afs_up_timedwait(&up->cond, &up->mu, interval_ms);
    if (up->wake)
      interval_ms = 20;
    up->wake = false;
    pthread_mutex_unlock(&up->mu);
  }
  afs_image_thread_done();
  return NULL;
}

