/* The per-file upload pipeline: from a staged file to an `uploaded` record (new record
 * if needed, metadata and cuts, wait for the broker's signature, parallel PUTs, status
 * `uploaded`), the resume check of a file adopted from an earlier mount, and what a
 * finished attempt leaves behind (next state, backoff, requeue, orphan). Also the entry
 * points a FUSE thread calls: flush (default mode: upload now), queue, unlinked.
 * Who runs the pipeline in the background is upload_pool.c; what happens after
 * `uploaded` is upload_poll.c. */
#include "upload/upload_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assetfs/clock.h"
#include "assetfs/http_put.h"
#include "assetfs/image.h"
#include "assetfs/log.h"
#include "assetfs/naming.h"
#include "assetfs/video.h"

static void meta_cleanup(struct meta *m) {
  for (int i = 0; i < U_COUNT; i++) {
    if (i != U_ORIG && m->part_file[i])
      unlink(m->part_file[i]);
    free(m->part_file[i]);
  }
}

static char *sibling(const char *staging, const char *tag, const char *ext) {
  char *p;
  if (asprintf(&p, "%s.%s%s", staging, tag, ext) < 0)
    abort();
  return p;
}

/* Metadata and derived parts. Failures to cut are warnings: the original still goes up
 * (the broker only presigns what it expects; a cut that cannot be made is left out). */
static void make_parts(const char *staging, const char *label, const char *content_type,
                       struct meta *m) {
  static const int sizes[3] = {AFS_CUT_SMALL, AFS_CUT_MEDIUM, AFS_CUT_LARGE};
  static const char *const tags[3] = {"small", "medium", "large"};
  enum afs_kind kind = afs_content_kind(content_type);
  struct afs_error e = {0};
  const char *dot = strrchr(staging, '.');
  const char *slash = strrchr(staging, '/');
  const char *ext = dot && (!slash || dot > slash) ? dot : "";
  const char *cut_src = NULL, *cut_ext = ext, *cut_type = content_type;
  if (kind == AFS_KIND_IMAGE) {
    struct afs_image_info ii;
    if (afs_image_probe(staging, &ii, &e)) {
      m->x_res = ii.width;
      m->y_res = ii.height;
      memcpy(m->color, ii.color, sizeof m->color);
      m->has_dims = true;
      cut_src = staging;
    } else {
      afs_warn("%s: no image metadata or cuts: %s", label, e.msg);
    }
  } else if (kind == AFS_KIND_VIDEO) {
    struct afs_video_info vi;
    char *png = sibling(staging, "preview", ".png");
    if (afs_video_probe_preview(staging, &vi, png, &e)) {
      m->x_res = vi.width;
      m->y_res = vi.height;
      m->duration = vi.duration;
      m->has_dims = m->has_duration = true;
      m->part_file[U_PREVIEW] = png;
      m->part_type[U_PREVIEW] = "image/png";
      cut_src = png;
      cut_ext = ".png";
      cut_type = "image/png";
    } else {
      afs_warn("%s: uploaded without preview: %s", label, e.msg);
      free(png);
    }
  }
  for (int i = 0; cut_src && i < 3; i++) {
    char *dst = sibling(staging, tags[i], cut_ext);
    afs_error_clear(&e);
    if (afs_image_cut(cut_src, dst, sizes[i], NULL, NULL, &e)) {
      m->part_file[U_SMALL + i] = dst;
      m->part_type[U_SMALL + i] = cut_type;
    } else {
      afs_warn("%s: no %s cut: %s", label, tags[i], e.msg);
      unlink(dst);
      free(dst);
    }
  }
  afs_image_thread_done();
}

static void running_add(struct afs_uploader *up, int d) {
  pthread_mutex_lock(&up->mu);
  up->running += d;
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
}

char *afs_up_label(struct afs_uploader *up, struct afs_wfile *wf) {
  char *partition, *file_path, *out;
  afs_staging_names(up->st, wf, &partition, &file_path);
  if (asprintf(&out, "%s/%s", partition, file_path) < 0)
    abort();
  free(partition);
  free(file_path);
  return out;
}

/* A file adopted from an earlier mount: where did its record get to? Returns 1 to
 * upload (with wf->id, or a new record if that one cannot be used), 0 when nothing is
 * left to upload (state set), -1 on a transient error. Never makes a second asset for
 * bytes whose record was already marked uploaded. */
static int resume_check(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  char ids[1][25], status[1][32];
  bool active = false;
  pthread_mutex_lock(&wf->mu);
  memcpy(ids[0], wf->id, sizeof ids[0]);
  pthread_mutex_unlock(&wf->mu);
  if (!ids[0][0])
    return 1;
  if (!afs_rec_batch_status(up, ids, 1, status)) {
    afs_error_set(err, EIO, "cannot read upload record %s", ids[0]);
    return -1;
  }
  const char *st = status[0];
  if (!strcmp(st, ST_PENDING) || !strcmp(st, ST_INITIALIZED))
    return 1;
  if (!strcmp(st, ST_UPLOADED) || !strcmp(st, ST_COMPLETED)) {
    pthread_mutex_lock(&wf->mu);
    wf->record_used = true;
    wf->dirty = false;
    wf->state = AFS_W_UPLOADED;
    wf->uploaded_ms = afs_monotonic_ms();
    pthread_mutex_unlock(&wf->mu);
    return 0;
  }
  if (!st[0] && !afs_rec_asset_active(up, ids[0], &active, err))
    return -1;
  pthread_mutex_lock(&wf->mu);
  wf->record_used = true; /* refused, or gone: a new record if we upload */
  if (active) {
    /* Completed, and its upload record cleaned up since: nothing to send again. */
    wf->dirty = false;
    wf->state = AFS_W_UPLOADED;
  }
  pthread_mutex_unlock(&wf->mu);
  return active ? 0 : 1;
}

/* The next upload of wf needs a new record (the current one is gone, used or expired). */
static void mark_record_used(struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  wf->record_used = true;
  pthread_mutex_unlock(&wf->mu);
}

/* Transient failures are retried in the background; these are not. */
static bool is_permanent(int code) {
  return code == AFS_E_TOO_BIG || code == AFS_E_BROKER_REFUSED || code == AFS_E_URL_REFUSED ||
         code == EINVAL;
}

bool afs_up_run_pipeline(struct afs_uploader *up, struct afs_wfile *wf, int64_t deadline_ms,
                         struct afs_error *err) {
  struct meta m;
  struct record_state rs;
  char id[25], content_type[128], *caption = NULL;
  int64_t mtime;
  bool ok = false, need_record;
  memset(&m, 0, sizeof m);
  memset(&rs, 0, sizeof rs);

  pthread_mutex_lock(&wf->mu);
  while (wf->busy) {
    afs_cond_timedwait_ms(&wf->cond, &wf->mu, 1000);
    if (afs_monotonic_ms() >= deadline_ms && wf->busy) {
      pthread_mutex_unlock(&wf->mu);
      return afs_error_set(err, AFS_E_DEADLINE, "an earlier upload of this file is still running");
    }
  }
  bool needed = !wf->unlinked && (wf->dirty || wf->state == AFS_W_RETRYING ||
                                  wf->state == AFS_W_WRITING || wf->state == AFS_W_QUEUED);
  if (!needed) {
    bool failed = wf->state == AFS_W_FAILED && !wf->unlinked;
    if (failed)
      *err = wf->last_err;
    pthread_mutex_unlock(&wf->mu);
    return !failed;
  }
  wf->busy = true;
  bool resumed = wf->resumed;
  wf->resumed = false;
  pthread_mutex_unlock(&wf->mu);
  if (resumed) {
    int r = resume_check(up, wf, err);
    if (r <= 0) {
      pthread_mutex_lock(&wf->mu);
      wf->busy = false;
      if (r < 0) {
        wf->resumed = true;
        wf->state = AFS_W_RETRYING;
        wf->last_err = *err;
        wf->next_try_ms = afs_monotonic_ms() + 2000;
      }
      pthread_cond_broadcast(&wf->cond);
      pthread_mutex_unlock(&wf->mu);
      if (r == 0) {
        struct afs_error je = {0};
        afs_staging_journal(up->st, wf, false, &je);
        afs_up_pool_kick(up);
      }
      return r == 0;
    }
  }
  pthread_mutex_lock(&wf->mu);
  wf->dirty = false;
  wf->state = AFS_W_UPLOADING;
  need_record = !wf->id[0] || wf->record_used;
  memcpy(content_type, wf->content_type, sizeof content_type);
  caption = wf->caption ? strdup(wf->caption) : NULL;
  mtime = wf->mtime_ms;
  uint64_t name_seq = wf->name_seq;
  const char *staging = wf->staging_path;
  char *label = NULL;
  struct stat sst;
  bool have_stat = fstat(wf->fd, &sst) == 0;
  pthread_mutex_unlock(&wf->mu);
  running_add(up, 1);

  if (!have_stat) {
    afs_error_set(err, EIO, "cannot stat the staging file: %s", strerror(errno));
    goto done;
  }
  m.size = sst.st_size;
  if (m.size > AFS_PUT_MAX_SIZE) {
    afs_err("upload %s: %lld bytes is over the 5 GiB single-PUT limit of S3; not uploaded "
            "(multipart uploads are not supported yet)",
            staging, (long long)m.size);
    afs_error_set(err, AFS_E_TOO_BIG, "file larger than 5 GiB");
    goto done;
  }
  if (need_record) {
    if (!afs_upload_begin(up, wf, err))
      goto done;
    struct afs_error je = {0};
    if (!afs_staging_journal(up->st, wf, false, &je))
      afs_warn("%s", je.msg);
  }
  pthread_mutex_lock(&wf->mu);
  memcpy(id, wf->id, sizeof id);
  pthread_mutex_unlock(&wf->mu);

  int64_t t0 = afs_monotonic_ms();
  label = afs_up_label(up, wf);
  make_parts(staging, label, content_type, &m);
  int64_t t1 = afs_monotonic_ms();
  if (!afs_rec_wait_initialized(up, id, deadline_ms, &rs, err)) {
    if (err->code == AFS_E_RECORD_GONE)
      mark_record_used(wf); /* the next attempt starts from a new record */
    goto done;
  }
  int64_t t15 = afs_monotonic_ms();
  struct afs_put_job jobs[U_COUNT];
  int n = 0;
  memset(jobs, 0, sizeof jobs);
  static const char *const names[U_COUNT] = {"original", "small", "medium", "large", "preview"};
  for (int i = 0; i < U_COUNT; i++) {
    const char *file = i == U_ORIG ? staging : m.part_file[i];
    if (!rs.write_url[i] || !file)
      continue;
    jobs[n++] = (struct afs_put_job){.url = rs.write_url[i],
                                     .path = file,
                                     .content_type = i == U_ORIG ? content_type : m.part_type[i],
                                     .what = names[i]};
  }
  struct afs_put_opts po;
  afs_put_opts_default(&po);
  po.deadline_ms = deadline_ms;
  if (!afs_http_put_all(jobs, n, &po, err)) {
    if (err->code == AFS_E_URL_EXPIRED)
      mark_record_used(wf);
    goto done;
  }
  int64_t t2 = afs_monotonic_ms();
  if (!afs_rec_set_uploaded(up, id, &m, caption, mtime, err)) {
    if (err->code == AFS_E_RECORD_GONE)
      mark_record_used(wf);
    goto done;
  }
  pthread_mutex_lock(&wf->mu);
  wf->uploaded_name_seq = name_seq;
  wf->uploaded_mtime = mtime;
  pthread_mutex_unlock(&wf->mu);
  afs_debug("upload %s: parts %lld ms, broker %lld ms, PUT %lld ms, record %lld ms", id,
            (long long)(t1 - t0), (long long)(t15 - t1), (long long)(t2 - t15),
            (long long)(afs_monotonic_ms() - t2));
  ok = true;
done:
  meta_cleanup(&m);
  afs_rec_state_free(&rs);
  free(caption);
  pthread_mutex_lock(&wf->mu);
  wf->busy = false;
  bool orphan = false, requeued = false;
  if (ok) {
    wf->record_used = true;
    /* Written again while this upload ran: once nobody writes any more, nobody else will
     * start the next upload (the writer's flush may have come and gone). */
    requeued = wf->dirty && wf->writers == 0;
    wf->state = requeued ? AFS_W_QUEUED : wf->dirty ? AFS_W_WRITING : AFS_W_UPLOADED;
    wf->uploaded_ms = afs_monotonic_ms();
    wf->attempts = 0;
    afs_error_clear(&wf->last_err);
    orphan = wf->unlinked;
  } else {
    wf->last_err = *err;
    wf->attempts++;
    if (is_permanent(err->code)) {
      wf->state = AFS_W_FAILED;
    } else {
      wf->state = AFS_W_RETRYING;
      long backoff = 1000L << (wf->attempts < 6 ? wf->attempts : 6);
      wf->next_try_ms = afs_monotonic_ms() + backoff;
    }
  }
  /* Removed while it uploaded: the bytes are nobody's any more (see afs_upload_unlinked). */
  bool release = wf->unlinked && wf->handles == 0 && wf->fd >= 0 && ftruncate(wf->fd, 0) == 0;
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  if (release)
    afs_staging_account(up->st, wf, 0, false);
  if (orphan)
    afs_up_add_orphan(up, wf);
  if (ok && !orphan) {
    struct afs_error je = {0};
    if (!afs_staging_journal(up->st, wf, false, &je))
      afs_warn("%s", je.msg);
  }
  running_add(up, -1);
  /* The polling thread watches it from now on; a worker takes it again if it was
   * written meanwhile (or failed and waits for a retry). */
  afs_up_poll_wake(up);
  afs_up_pool_signal(up);
  if (!ok) {
    if (!label)
      label = afs_up_label(up, wf);
    afs_warn("upload of %s failed: %s%s", label, err->msg,
             is_permanent(err->code) ? "" : " (will retry)");
  } else if (requeued) {
    afs_debug("upload of %s: written again meanwhile; queued again", label);
  }
  free(label);
  return ok;
}

bool afs_upload_flush(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  int64_t deadline = afs_monotonic_ms() + (int64_t)(up->opt->close_timeout * 1000);
  return afs_up_run_pipeline(up, wf, deadline, err);
}

void afs_upload_queue(struct afs_uploader *up, struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  if (wf->dirty && wf->state == AFS_W_WRITING)
    wf->state = AFS_W_QUEUED;
  pthread_mutex_unlock(&wf->mu);
  afs_up_pool_signal(up);
}

void afs_upload_unlinked(struct afs_uploader *up, struct afs_wfile *wf) {
  struct afs_error err = {0};
  char id[25];
  pthread_mutex_lock(&wf->mu);
  wf->unlinked = true;
  memcpy(id, wf->id, sizeof id);
  enum afs_wstate state = wf->state;
  bool busy = wf->busy;
  /* Nobody reads the bytes any more (no handle, no upload): give the space back now,
   * not when the broker is done with the record (a full cache_dir needs it). */
  bool release = !busy && wf->handles == 0 && wf->fd >= 0 && ftruncate(wf->fd, 0) == 0;
  pthread_mutex_unlock(&wf->mu);
  if (release)
    afs_staging_account(up->st, wf, 0, false);
  afs_staging_forget(up->st, wf);
  if (!id[0])
    return;
  if (state == AFS_W_COMPLETED) {
    if (!afs_asset_mark_deleted(up, id, &err))
      afs_warn("cannot mark asset %s deleted: %s", id, err.msg);
    return;
  }
  bool gone = false;
  if (!busy && state != AFS_W_UPLOADED && !afs_rec_delete_unused(up, id, &gone, &err))
    afs_warn("cannot drop upload record %s: %s", id, err.msg);
  if (gone)
    return;
  /* In flight (uploading, uploaded, or not deletable): the broker may complete it any
   * moment, and the caller may move another file to this path next (rename over it).
   * Say so on the record first, so that completion neither supersedes that file nor
   * leaves this one active. */
  if (!afs_rec_abandon(up, id, &err))
    afs_warn("cannot mark upload %s abandoned: %s (its asset is removed once completed)", id,
             err.msg);
  if (busy)
    return;                  /* a running pipeline sees `unlinked` when it ends */
  afs_up_add_orphan(up, wf); /* the asset is (about to be) created: delete it when it is */
}
