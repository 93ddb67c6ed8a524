/* The uploader's life and its upload workers: a pool of threads that take queued files
 * (write-back, resume, release without flush) and due retries from the staging table
 * and run the pipeline on them; the counts of what is still to upload (status file,
 * unmount); and unmount, which waits for uploads to drain while they make progress. */
#include "upload/upload_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/http_put.h"
#include "assetfs/image.h"
#include "assetfs/log.h"

void afs_up_pool_kick(struct afs_uploader *up) {
  pthread_mutex_lock(&up->mu);
  up->pool_seq++;
  up->wake = true;
  pthread_cond_broadcast(&up->pool_cond);
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
}

void afs_up_poll_wake(struct afs_uploader *up) {
  pthread_mutex_lock(&up->mu);
  up->wake = true;
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
}

void afs_up_pool_wake_all(struct afs_uploader *up) {
  pthread_mutex_lock(&up->mu);
  up->pool_seq++;
  pthread_cond_broadcast(&up->pool_cond);
  pthread_mutex_unlock(&up->mu);
}

void afs_upload_need_room(struct afs_uploader *up) {
  pthread_mutex_lock(&up->mu);
  up->room_wanted = true;
  up->wake = true;
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
}

void afs_up_pool_signal(struct afs_uploader *up) {
  pthread_mutex_lock(&up->mu);
  up->pool_seq++;
  pthread_cond_signal(&up->pool_cond);
  pthread_mutex_unlock(&up->mu);
}

static int count_busy(struct afs_uploader *up, bool with_uploaded) {
  struct afs_wfile **all;
  int n = afs_staging_snapshot(up->st, &all), busy = 0;
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&all[i]->mu);
    enum afs_wstate s = all[i]->state;
    bool pending_upload = s == AFS_W_UPLOADING || s == AFS_W_RETRYING || s == AFS_W_QUEUED ||
                          (s == AFS_W_WRITING && all[i]->handles == 0 && all[i]->dirty) ||
                          (with_uploaded && s == AFS_W_UPLOADED && !all[i]->unlinked);
    pthread_mutex_unlock(&all[i]->mu);
    busy += pending_upload;
    afs_staging_unref(up->st, all[i]);
  }
  free(all);
  pthread_mutex_lock(&up->mu);
  busy += up->running;
  pthread_mutex_unlock(&up->mu);
  return busy;
}

int afs_upload_busy_count(struct afs_uploader *up) {
  return count_busy(up, false);
}

/* Makes the pending records of wf (claimed by the caller) and of up to
 * AFS_UP_RECORD_BATCH - 1 other queued files that have none, in one insert: write-back
 * queues files faster than the database takes single inserts, and the broker signs a
 * batch as one burst. The others are claimed meanwhile (and stay in the queue) so that
 * no worker inserts a second record for them. */
static void begin_batch(struct afs_uploader *up, struct afs_wfile *wf) {
  struct afs_wfile *batch[AFS_UP_RECORD_BATCH];
  int nb = 1;
  batch[0] = wf;
  nb += afs_up_queue_claim_unrecorded(up, wf, batch + 1, AFS_UP_RECORD_BATCH - 1);
  struct afs_error err = {0};
  if (!afs_upload_begin_many(up, batch, nb, &err))
    afs_debug("pending records for %d file(s): %s (each upload makes its own)", nb, err.msg);
  for (int i = 0; i < nb; i++) {
    struct afs_wfile *b = batch[i];
    struct afs_error je = {0};
    char id[AFS_OID_HEX];
    /* one removed while its record was made: afs_upload_begin_many dropped the record */
    if (afs_wf_record_of(b, id) && id[0] && !afs_staging_journal(up->st, b, false, &je))
      afs_warn("%s", je.msg);
    if (i > 0)
      afs_up_queue_unclaim(b);
  }
  if (nb > 1)
    afs_up_pool_kick(up);
}

static void *pool_main(void *arg) {
  struct afs_uploader *up = arg;
  for (;;) {
    pthread_mutex_lock(&up->mu);
    bool stop = up->stop;
    uint64_t seq = up->pool_seq;
    pthread_mutex_unlock(&up->mu);
    if (stop)
      break;
    int64_t now = afs_monotonic_ms(), next_due;
    struct afs_wfile *wf = afs_up_queue_pick(up, now, &next_due);
    if (wf) {
      struct afs_error err = {0};
      pthread_mutex_lock(&wf->mu);
      bool retry = wf->state == AFS_W_RETRYING;
      bool no_record = !wf->id[0] && !wf->resumed && wf->state == AFS_W_QUEUED;
      pthread_mutex_unlock(&wf->mu);
      if (no_record)
        begin_batch(up, wf);
      char *label = retry ? afs_up_label(up, wf) : NULL;
      if (retry)
        afs_info("retrying the upload of %s", label);
      if (afs_up_run_pipeline(up, wf, afs_monotonic_ms() + 120000, &err) && retry)
        afs_info("upload of %s succeeded on retry", label);
      free(label);
      afs_up_queue_unclaim(wf);
      afs_staging_unref(up->st, wf);
      continue;
    }
    /* Nothing due: sleep until something is queued or the next retry is due, and at most
     * a second (a queued file whose last handle closed without writing is due again
     * without an event of its own). */
    long wait_ms = next_due - now < 1000 ? (long)(next_due - now) : 1000;
    pthread_mutex_lock(&up->mu);
    if (!up->stop && up->pool_seq == seq && wait_ms > 0)
      afs_cond_timedwait_ms(&up->pool_cond, &up->mu, wait_ms);
    pthread_mutex_unlock(&up->mu);
  }
  afs_image_thread_done();
  return NULL;
}

static struct afs_uploader *uploader_new(struct afs_staging *st, struct afs_catalog *cat,
                                         const struct afs_fs_options *opt, struct afs_db *db,
                                         const struct afs_upload_store *store,
                                         struct afs_error *err);

/* The files adopted from journals that still have to go up join the queue. */
static void queue_resumed(struct afs_uploader *up) {
  struct afs_wfile **all;
  int n = afs_staging_snapshot(up->st, &all);
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&all[i]->mu);
    bool queued = all[i]->state == AFS_W_QUEUED;
    pthread_mutex_unlock(&all[i]->mu);
    if (queued)
      afs_up_queue_push(up, all[i]);
    afs_staging_unref(up->st, all[i]);
  }
  free(all);
}

struct afs_uploader *afs_uploader_new(struct afs_staging *st, struct afs_catalog *cat,
                                      const struct afs_fs_options *opt, struct afs_db *db,
                                      struct afs_error *err) {
  return uploader_new(st, cat, opt, db, NULL, err);
}

struct afs_uploader *afs_uploader_new_on(struct afs_staging *st, struct afs_catalog *cat,
                                         const struct afs_fs_options *opt,
                                         const struct afs_upload_store *store,
                                         struct afs_error *err) {
  return uploader_new(st, cat, opt, NULL, store, err);
}

static struct afs_uploader *uploader_new(struct afs_staging *st, struct afs_catalog *cat,
                                         const struct afs_fs_options *opt, struct afs_db *db,
                                         const struct afs_upload_store *store,
                                         struct afs_error *err) {
  struct afs_uploader *up = afs_xcalloc(1, sizeof *up);
  up->st = st;
  up->cat = cat;
  up->opt = opt;
  up->db = db;
  if (store)
    up->store = *store;
  else
    up->store = (struct afs_upload_store){&afs_upload_store_mongo, up};
  pthread_mutex_init(&up->mu, NULL);
  pthread_mutex_init(&up->q_mu, NULL);
  afs_cond_init(&up->cond);
  afs_cond_init(&up->pool_cond);
  up->n_resumed = afs_staging_resume(st);
  if (up->n_resumed > 0) {
    afs_info("resuming %lld file(s) left by an earlier mount of this session",
             (long long)up->n_resumed);
    queue_resumed(up);
  }
  if (pthread_create(&up->worker, NULL, afs_up_poll_main, up) != 0) {
    afs_error_set(err, EAGAIN, "cannot start the upload worker");
    afs_up_queue_free(up);
    free(up);
    return NULL;
  }
  up->worker_started = true;
  afs_up_streams_start(up);
  int n = opt->upload_workers > 0 ? opt->upload_workers : 4;
  up->pool = calloc(n, sizeof *up->pool);
  for (int i = 0; i < n; i++) {
    if (pthread_create(&up->pool[up->n_pool], NULL, pool_main, up) != 0) {
      afs_warn("cannot start upload worker %d of %d", i + 1, n);
      break;
    }
    up->n_pool++;
  }
  afs_up_pool_kick(up);
  return up;
}

/* Bytes of files that still have to go up (for the unmount count and the status file). */
int64_t afs_upload_pending_bytes(struct afs_uploader *up, int *files) {
  struct afs_wfile **all;
  int n = afs_staging_snapshot(up->st, &all), cnt = 0;
  int64_t bytes = 0;
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&all[i]->mu);
    enum afs_wstate s = all[i]->state;
    if (!all[i]->unlinked && (s == AFS_W_QUEUED || s == AFS_W_UPLOADING || s == AFS_W_RETRYING ||
                              (s == AFS_W_WRITING && all[i]->handles == 0))) {
      bytes += all[i]->acct_size - all[i]->acct_absent;
      cnt++;
    }
    pthread_mutex_unlock(&all[i]->mu);
    afs_staging_unref(up->st, all[i]);
  }
  free(all);
  if (files)
    *files = cnt;
  return bytes;
}

void afs_upload_counters(struct afs_uploader *up, int64_t *completed, int64_t *resumed) {
  pthread_mutex_lock(&up->mu);
  *completed = up->n_completed;
  *resumed = up->n_resumed;
  pthread_mutex_unlock(&up->mu);
}

void afs_uploader_free(struct afs_uploader *up, double timeout_s) {
  if (!up)
    return;
  /* The bound is on time without progress: a long queue that drains steadily is waited
   * for, a dead S3 or broker is not (the journals keep the rest for the next mount). */
  int64_t now = afs_monotonic_ms(), deadline = now + (int64_t)(timeout_s * 1000);
  int64_t next_log = now, progress_ms = now;
  int busy, last_busy = -1;
  /* Uploaded files are waited for too: their staged copies can go once completed, and
   * the broker usually completes within a second. When only those are left, their bytes
   * are in S3 already: 10 s without a completion is enough waiting (the journals make
   * the next mount watch them). */
  while ((busy = count_busy(up, true)) > 0 && (now = afs_monotonic_ms()) < deadline) {
    if (last_busy >= 0 && busy < last_busy) {
      deadline = now + (int64_t)(timeout_s * 1000);
      progress_ms = now;
    }
    last_busy = busy;
    if (now - progress_ms > 10000 && count_busy(up, false) == 0)
      break;
    if (now >= next_log) {
      int files = 0;
      int64_t bytes = afs_upload_pending_bytes(up, &files);
      afs_info("unmounting: waiting for %d upload(s), %lld bytes", files > busy ? files : busy,
               (long long)bytes);
      next_log = now + 5000;
    }
    usleep(50000);
  }
  afs_info("MongoDB commands of the upload path: %lld (of which %lld session queries "
           "returning %lld records); %lld files completed",
           (long long)up->n_commands, (long long)up->n_scans, (long long)up->n_scan_docs,
           (long long)up->n_completed);
  if (busy > 0)
    afs_warn("unmounting with %d upload(s) not completed; their data stays in %s for the "
             "next mount with this session_id",
             busy, afs_staging_dir(up->st));
  pthread_mutex_lock(&up->mu);
  up->stop = true;
  pthread_cond_broadcast(&up->cond);
  pthread_cond_broadcast(&up->pool_cond);
  pthread_mutex_unlock(&up->mu);
  for (int i = 0; i < up->n_pool; i++)
    pthread_join(up->pool[i], NULL);
  free(up->pool);
  afs_up_streams_stop(up);
  if (up->worker_started)
    pthread_join(up->worker, NULL);
  afs_up_queue_free(up);
  for (size_t i = 0; i < up->n_orphans; i++)
    afs_staging_unref(up->st, up->orphans[i]);
  free(up->orphans);
  pthread_mutex_destroy(&up->mu);
  pthread_mutex_destroy(&up->q_mu);
  pthread_cond_destroy(&up->cond);
  pthread_cond_destroy(&up->pool_cond);
  free(up);
}
