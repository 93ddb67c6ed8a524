/* After `uploaded`: one thread polls the records of uploaded files (and of orphans,
 * files removed or replaced whose asset must be deleted once it exists) by _id until the
 * broker completes or refuses them, fixes up the new asset (filePath, mtime), and drops
 * the staged copy once the catalog shows the asset at its path. */
#include "upload/upload_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/http_put.h" /* afs_monotonic_ms */
#include "assetfs/image.h"
#include "assetfs/log.h"
#include "staging/base.h"

/* wake: look at it at once (a new orphan); a kept one waits for its next poll time. */
static void add_orphan(struct afs_uploader *up, struct afs_wfile *wf, bool wake) {
  afs_staging_ref(up->st, wf);
  pthread_mutex_lock(&up->mu);
  if (up->n_orphans == up->cap_orphans) {
    up->cap_orphans = up->cap_orphans ? up->cap_orphans * 2 : 16;
    up->orphans = afs_xrealloc(up->orphans, up->cap_orphans * sizeof *up->orphans);
  }
  up->orphans[up->n_orphans++] = wf;
  if (wake) {
    up->wake = true;
    pthread_cond_broadcast(&up->cond);
  }
  pthread_mutex_unlock(&up->mu);
}

void afs_up_add_orphan(struct afs_uploader *up, struct afs_wfile *wf) {
  add_orphan(up, wf, true);
}

static void on_completed(struct afs_uploader *up, struct afs_wfile *wf, const char *polled_id) {
  struct afs_error err = {0};
  const char *id = polled_id;
  char *partition = NULL, *file_path = NULL;
  struct afs_wf_completion c;
  /* false: written again since; that older upload's asset is superseded by the next */
  if (!afs_wf_completed(wf, polled_id, &c))
    return;
  int64_t mtime = c.mtime_ms;
  bool renamed = c.renamed, touched = c.touched, unlinked = c.unlinked;
  char *caption = c.caption;
  pthread_mutex_lock(&up->mu);
  up->n_completed++;
  pthread_mutex_unlock(&up->mu);
  if (unlinked) {
    if (!afs_asset_mark_deleted(up, id, &err))
      afs_warn("cannot mark asset %s deleted: %s", id, err.msg);
    free(caption);
    return;
  }
  afs_staging_ref(up->st, wf);
  /* The asset this version completed as holds every byte the file still reads from its
   * old one (those parts were copied at the same offsets): read them there from now on. */
  afs_base_moved(up->st, wf, id);
  afs_staging_names(up->st, wf, &partition, &file_path);
  if (renamed && !afs_asset_set_file_path(up, id, file_path, &err))
    afs_warn("cannot update filePath of %s: %s", id, err.msg);
  if (touched && !afs_asset_set_mtime(up, id, mtime, &err))
    afs_warn("cannot set mtime of %s: %s", id, err.msg);
  /* A caption set after `uploaded` went on the record, which the broker copies only if
   * it read it in time, and setxattr waits for completion only so long: set it again. */
  if (caption && up->cat && !afs_catalog_set_caption(up->cat, id, caption, &err))
    afs_warn("cannot set the caption of %s: %s", id, err.msg);
  free(caption);
  if (up->cat)
    afs_catalog_invalidate_path(up->cat, partition, file_path);
  afs_debug("%s/%s completed as asset %s", partition, file_path, id);
  afs_staging_unref(up->st, wf);
  free(partition);
  free(file_path);
}

/* Drops the staged copy of a completed file once the catalog serves that asset at its
 * path: until the broker has retired the asset it supersedes, a lookup could still
 * answer with the old one, and reads must not go back in time. */
static void drop_when_shown(struct afs_uploader *up, struct afs_wfile *wf) {
  char id[AFS_OID_HEX], *partition, *file_path;
  struct afs_error err = {0};
  struct afs_asset a;
  memset(&a, 0, sizeof a);
  pthread_mutex_lock(&wf->mu);
  bool check = wf->state == AFS_W_COMPLETED && !wf->shown && !wf->unlinked;
  memcpy(id, wf->id, sizeof id);
  pthread_mutex_unlock(&wf->mu);
  if (!check || !up->cat)
    return;
  afs_staging_names(up->st, wf, &partition, &file_path);
  /* By _id: one query on the primary key, and no lookup by path. */
  int k = afs_catalog_confirm(up->cat, partition, file_path, id, &a, &err);
  bool ours = k == AFS_CAT_FILE && !strcmp(a.id, id);
  if (k == AFS_CAT_FILE)
    afs_asset_free(&a);
  free(partition);
  free(file_path);
  if (!ours)
    return;
  afs_wf_shown(wf, id);
  /* Only now, with the asset in the catalog's tree, may the staged copy go: readdir
   * lists staging before the catalog and relies on this order (fuse/ops.c). The final
   * check is made under the locks that open takes: a file opened (and maybe written)
   * since the lookup keeps its staged copy; its release drops it later. */
  afs_staging_drop_if_idle(up->st, wf, id);
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
  if (afs_wf_waits_for(wf, id)) {
    char *label = afs_up_label(up, wf);
    afs_info("%s: upload %s was superseded; dropping the staged copy", label, id);
    free(label);
    afs_staging_remove(up->st, wf);
  }
}

/* An uploaded file whose record is back at pending/initialized: a server that applies an
 * update as read-modify-write of the whole document (the test stack's FerretDB does)
 * lets a broker write that raced ours
 * (a duplicate claim, a late initialization) can drop our `uploaded`. Nobody would ever
 * complete it: upload again on the same record (same keys, same bytes), which also sets
 * `uploaded` again. The grace period keeps a read that raced our own update harmless. */
static void record_regressed(struct afs_uploader *up, struct afs_wfile *wf, const char *id,
                             enum afs_upload_status status, int64_t now) {
  if (!afs_wf_regressed(wf, id, now))
    return;
  char *label = afs_up_label(up, wf);
  afs_warn("%s: upload record %s went back to '%s' after it was marked uploaded (an update "
           "lost by the database); uploading again on the same record",
           label, id, afs_upload_status_name(status));
  free(label);
  afs_up_queue_push(up, wf);
}

#define SCAN_MIN 8 /* uploaded files from which one session query beats a read each */

static int id_cmp(const void *a, const void *b) {
  return strcmp(a, b);
}

struct idset {
  char (*v)[AFS_OID_HEX];
  size_t n, cap;
};

static void idset_add(void *ctx, const char *id) {
  struct idset *set = ctx;
  if (set->n == set->cap) {
    set->cap = set->cap ? set->cap * 2 : 64;
    set->v = afs_xrealloc(set->v, set->cap * sizeof *set->v);
  }
  memcpy(set->v[set->n++], id, 25);
}

/* The ids of this session's records still `uploaded`, sorted, in *set (caller frees
 * set->v); false when the query failed or is not due. One query for every file waiting
 * for the broker's completion: the files not in it are looked at by _id, once each.
 * The result can hold every file of a burst, so it runs at most every 3 s and at most
 * a twentieth of the time: nothing waits for it (close waits for `uploaded` at most,
 * and the staged copies can stay a little longer). */
static bool still_uploaded(struct afs_uploader *up, struct idset *set, int64_t now) {
  memset(set, 0, sizeof *set);
  if (now < up->c_next_ms)
    return false;
  struct afs_error err = {0};
  bool ok = afs_rec_session_scan(up, AFS_UPLOAD_UPLOADED, idset_add, set, &err);
  int64_t cost = afs_monotonic_ms() - now;
  up->c_next_ms = now + (20 * cost > 3000 ? 20 * cost : 3000);
  if (!ok) {
    afs_debug("watching uploaded records: %s", err.msg);
    free(set->v);
    memset(set, 0, sizeof *set);
    return false;
  }
  if (set->n) /* qsort of a NULL array is undefined even for no elements */
    qsort(set->v, set->n, sizeof *set->v, id_cmp);
  return true;
}

/* One pass: completions, errors and retries. Returns true if something is in flight
 * (poll again soon). */
static bool worker_pass(struct afs_uploader *up) {
  struct afs_wfile **all;
  int n = afs_staging_snapshot(up->st, &all);
  /* orphans join the poll */
  pthread_mutex_lock(&up->mu);
  size_t no = up->n_orphans;
  struct afs_wfile **orphans = up->orphans;
  up->orphans = NULL;
  up->n_orphans = up->cap_orphans = 0;
  pthread_mutex_unlock(&up->mu);
  int total = n + (int)no;
  all = afs_xrealloc(all, (total ? total : 1) * sizeof *all);
  for (size_t i = 0; i < no; i++)
    all[n + i] = orphans[i];
  free(orphans);

  /* Uploaded files: one shared query says which are still waiting for the broker. */
  int64_t now = afs_monotonic_ms();
  int n_uploaded = 0;
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&all[i]->mu);
    n_uploaded += all[i]->state == AFS_W_UPLOADED && all[i]->id[0] && !all[i]->busy;
    pthread_mutex_unlock(&all[i]->mu);
  }
  /* A write waits for room in cache_max: look now, at every uploaded file. */
  pthread_mutex_lock(&up->mu);
  bool urgent = up->room_wanted;
  up->room_wanted = false;
  pthread_mutex_unlock(&up->mu);
  if (urgent)
    up->c_next_ms = 0;
  /* A few files are cheaper to look at one by one (and sooner). */
  struct idset still = {0};
  bool scanned = n_uploaded > SCAN_MIN && still_uploaded(up, &still, now);
  bool one_by_one = !scanned && (n_uploaded <= SCAN_MIN || now >= up->c_next_ms);

  char(*ids)[AFS_OID_HEX] = calloc(total ? total : 1, sizeof *ids);
  enum afs_upload_status *status = calloc(total ? total : 1, sizeof *status);
  int *idx = calloc(total ? total : 1, sizeof *idx);
  int polled = 0;
  bool active = false, any_retry = false;
  for (int i = 0; i < total; i++) {
    struct afs_wfile *wf = all[i];
    pthread_mutex_lock(&wf->mu);
    enum afs_wstate s = wf->state;
    bool busy = wf->busy;
    /* Retries are the upload workers' (pool_main); this pass only watches records. */
    bool retry_pending = !busy && !wf->unlinked &&
                         (s == AFS_W_QUEUED || (s == AFS_W_RETRYING && now >= wf->next_try_ms));
    bool own_look;
    if (i < n && s == AFS_W_UPLOADED && scanned)
      own_look = wf->id[0] && !busy && !bsearch(wf->id, still.v, still.n, sizeof *still.v, id_cmp);
    else if (i < n && s == AFS_W_UPLOADED)
      own_look = one_by_one && wf->id[0] && !busy && (urgent || now >= wf->next_poll_ms);
    else
      own_look = i >= n && s != AFS_W_COMPLETED && wf->id[0] && !busy && now >= wf->next_poll_ms;
    /* An orphan not due yet (or still uploading) stays watched: each pass takes the list
     * whole, and one dropped here would leave its asset active for good. */
    bool orphan_waits = i >= n && !own_look && s != AFS_W_COMPLETED && wf->id[0];
    if (own_look) {
      memcpy(ids[polled], wf->id, sizeof ids[polled]);
      idx[polled++] = i;
      /* One find per record and pass: with hundreds waiting for the broker, polling each
       * as often as a fresh one would load the database the broker needs. A record is
       * asked again after a quarter of its age (100 ms to 2 s). */
      int64_t age = now - wf->uploaded_ms;
      wf->next_poll_ms = now + (age / 4 < 100 ? 100 : age / 4 > 2000 ? 2000 : age / 4);
    }
    pthread_mutex_unlock(&wf->mu);
    if (orphan_waits)
      add_orphan(up, wf, false);
    active |= s == AFS_W_UPLOADED || s == AFS_W_UPLOADING || busy || orphan_waits;
    any_retry |= retry_pending;
  }
  /* Once per pass, and only the workers: waking this thread again for files that merely
   * wait for a worker made a pass per file, each scanning the whole table. */
  if (any_retry)
    afs_up_pool_wake_all(up);
  if (polled > 0 && afs_rec_batch_status(up, ids, polled, status)) {
    for (int k = 0; k < polled; k++) {
      struct afs_wfile *wf = all[idx[k]];
      if (status[k] == AFS_US_COMPLETED) {
        on_completed(up, wf, ids[k]);
      } else if (status[k] == AFS_US_ERROR) {
        afs_wf_refused(wf, ids[k]);
        afs_warn("the broker rejected the upload of %s (record %s)", wf->staging_path, ids[k]);
      } else if (idx[k] < n && status[k] == AFS_US_NONE) {
        lost_record(up, wf, ids[k]);
      } else if (idx[k] < n && (status[k] == AFS_US_PENDING || status[k] == AFS_US_INITIALIZED)) {
        record_regressed(up, wf, ids[k], status[k], now);
      } else if (idx[k] >= n && status[k] == AFS_US_NONE) {
        /* An orphan whose record vanished: nothing left to delete. */
        afs_wf_orphan_settled(wf);
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
    afs_staging_unref(up->st, all[i]);
  free(all);
  free(ids);
  free(status);
  free(idx);
  free(still.v);
  return active || polled > 0;
}

#define MIN_PASS_MS 20

void *afs_up_poll_main(void *arg) {
  struct afs_uploader *up = arg;
  long interval_ms = MIN_PASS_MS;
  int64_t last_pass = 0;
  for (;;) {
    pthread_mutex_lock(&up->mu);
    /* Wake-ups come per file in a burst; a pass scans every file: coalesce them. */
    int64_t gap;
    while (!up->stop && (gap = afs_monotonic_ms() - last_pass) < MIN_PASS_MS)
      afs_cond_timedwait_ms(&up->cond, &up->mu, (long)(MIN_PASS_MS - gap));
    bool stop = up->stop;
    pthread_mutex_unlock(&up->mu);
    if (stop)
      break;
    last_pass = afs_monotonic_ms();
    bool active = worker_pass(up);
    interval_ms = active ? (interval_ms < 200 ? interval_ms + 20 : 200) : 1000;
    pthread_mutex_lock(&up->mu);
    if (!up->wake && !up->stop)
      afs_cond_timedwait_ms(&up->cond, &up->mu, interval_ms);
    if (up->wake)
      interval_ms = MIN_PASS_MS;
    up->wake = false;
    pthread_mutex_unlock(&up->mu);
  }
  afs_image_thread_done();
  return NULL;
}
