#include "upload_int.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/http_put.h"
#include "assetfs/image.h"
#include "assetfs/log.h"
#include "assetfs/naming.h"
#include "assetfs/video.h"

/* ---------------------------------------------------------------- the pipeline */



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

static void add_orphan(struct afs_uploader *up, struct afs_wfile *wf) {
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

static void pool_kick(struct afs_uploader *up) {
  pthread_mutex_lock(&up->mu);
  up->pool_seq++;
  up->wake = true;
  pthread_cond_broadcast(&up->pool_cond);
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
}

/* "partition/filePath" of wf, for messages (caller frees). */
static char *label_of(struct afs_uploader *up, struct afs_wfile *wf) {
  char *partition, *file_path, *out;
  afs_staging_names(up->fs->st, wf, &partition, &file_path);
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
  if (!afs_rec_batch_status(up, ids, 1, status))
  {
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

/* Transient failures are retried in the background; these are not. */
static bool is_permanent(int code) {
  return code == EFBIG || code == EPROTO || code == EACCES || code == EINVAL;
}

/* One upload of wf's current data. deadline_ms bounds the waits (monotonic). Returns
 * true when "uploaded" is set (or nothing needed uploading). */
static bool run_pipeline(struct afs_uploader *up, struct afs_wfile *wf, int64_t deadline_ms,
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
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&wf->cond, &wf->mu, &ts);
    if (afs_monotonic_ms() >= deadline_ms && wf->busy) {
      pthread_mutex_unlock(&wf->mu);
      return afs_error_set(err, ETIMEDOUT, "an earlier upload of this file is still running");
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
        afs_staging_journal(up->fs->st, wf, false, &je);
        pool_kick(up);
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
            "(multipart uploads are not supported yet)", staging, (long long)m.size);
    afs_error_set(err, EFBIG, "file larger than 5 GiB");
    goto done;
  }
  if (need_record) {
    if (!afs_upload_begin(up, wf, err))
      goto done;
    struct afs_error je = {0};
    if (!afs_staging_journal(up->fs->st, wf, false, &je))
      afs_warn("%s", je.msg);
  }
  pthread_mutex_lock(&wf->mu);
  memcpy(id, wf->id, sizeof id);
  pthread_mutex_unlock(&wf->mu);

  int64_t t0 = afs_monotonic_ms();
  label = label_of(up, wf);
  make_parts(staging, label, content_type, &m);
  int64_t t1 = afs_monotonic_ms();
  if (!afs_rec_wait_initialized(up, id, deadline_ms, &rs, err)) {
    if (err->code == ESTALE) {
      pthread_mutex_lock(&wf->mu);
      wf->record_used = true; /* the next attempt starts from a new record */
      pthread_mutex_unlock(&wf->mu);
    }
    goto done;
  }
  int64_t t15 = afs_monotonic_ms();
  struct afs_put_job jobs[U_COUNT];
  int n = 0;
  memset(jobs, 0, sizeof jobs);
  static const char *const names[U_COUNT] = {"original", "small", "medium", "large",
                                             "preview"};
  for (int i = 0; i < U_COUNT; i++) {
    const char *file = i == U_ORIG ? staging : m.part_file[i];
    if (!rs.write_url[i] || !file)
      continue;
    jobs[n++] = (struct afs_put_job){.url = rs.write_url[i], .path = file,
                                     .content_type = i == U_ORIG ? content_type
                                                                 : m.part_type[i],
                                     .what = names[i]};
  }
  struct afs_put_opts po;
  afs_put_opts_default(&po);
  po.deadline_ms = deadline_ms;
  if (!afs_http_put_all(jobs, n, &po, err)) {
    if (err->code == EKEYEXPIRED) {
      pthread_mutex_lock(&wf->mu);
      wf->record_used = true;
      pthread_mutex_unlock(&wf->mu);
    }
    goto done;
  }
  int64_t t2 = afs_monotonic_ms();
  if (!afs_rec_set_uploaded(up, id, &m, caption, mtime, err)) {
    if (err->code == ESTALE) {
      pthread_mutex_lock(&wf->mu);
      wf->record_used = true;
      pthread_mutex_unlock(&wf->mu);
    }
    goto done;
  }
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
    afs_staging_account(up->fs->st, wf, 0, false);
  if (orphan)
    add_orphan(up, wf);
  if (ok && !orphan) {
    struct afs_error je = {0};
    if (!afs_staging_journal(up->fs->st, wf, false, &je))
      afs_warn("%s", je.msg);
  }
  running_add(up, -1);
  pool_kick(up);
  if (!ok) {
    if (!label)
      label = label_of(up, wf);
    afs_warn("upload of %s failed: %s%s", label, err->msg,
             is_permanent(err->code) ? "" : " (will retry)");
  } else if (requeued) {
    afs_debug("upload of %s: written again meanwhile; queued again", label);
  }
  free(label);
  return ok;
}

bool afs_upload_flush(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  int64_t deadline = afs_monotonic_ms() + (int64_t)(up->fs->opt.close_timeout * 1000);
  return run_pipeline(up, wf, deadline, err);
}

void afs_upload_queue(struct afs_uploader *up, struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  if (wf->dirty && wf->state == AFS_W_WRITING)
    wf->state = AFS_W_QUEUED;
  pthread_mutex_unlock(&wf->mu);
  pool_kick(up);
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
    afs_staging_account(up->fs->st, wf, 0, false);
  afs_staging_forget(up->fs->st, wf);
  if (!id[0] || busy)
    return; /* a running pipeline sees `unlinked` when it ends */
  if (state == AFS_W_COMPLETED) {
    if (!afs_asset_mark_deleted(up, id, &err))
      afs_warn("cannot mark asset %s deleted: %s", id, err.msg);
    return;
  }
  bool gone = true;
  if (state != AFS_W_UPLOADED && !afs_rec_delete_unused(up, id, &gone, &err))
    afs_warn("cannot drop upload record %s: %s", id, err.msg);
  if (state == AFS_W_UPLOADED || !gone)
    add_orphan(up, wf); /* the asset is (about to be) created: delete it when it is */
}

static int count_busy(struct afs_uploader *up, bool with_uploaded) {
  struct afs_wfile **all;
  int n = afs_staging_snapshot(up->fs->st, &all), busy = 0;
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&all[i]->mu);
    enum afs_wstate s = all[i]->state;
    bool pending_upload = s == AFS_W_UPLOADING || s == AFS_W_RETRYING || s == AFS_W_QUEUED ||
                          (s == AFS_W_WRITING && all[i]->handles == 0 && all[i]->dirty) ||
                          (with_uploaded && s == AFS_W_UPLOADED && !all[i]->unlinked);
    pthread_mutex_unlock(&all[i]->mu);
    busy += pending_upload;
    afs_staging_unref(up->fs->st, all[i]);
  }
  free(all);
  pthread_mutex_lock(&up->mu);
  busy += up->running;
  pthread_mutex_unlock(&up->mu);
  return busy;
}

int afs_upload_busy_count(struct afs_uploader *up) { return count_busy(up, false); }

/* ---------------------------------------------------------------- the worker */

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
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  pthread_mutex_lock(&up->mu);
  up->n_completed++;
  pthread_mutex_unlock(&up->mu);
  if (unlinked) {
    if (!afs_asset_mark_deleted(up, id, &err))
      afs_warn("cannot mark asset %s deleted: %s", id, err.msg);
    return;
  }
  /* A rename may have raced with the broker copying filePath: write the current one. */
  afs_staging_ref(up->fs->st, wf);
  afs_staging_names(up->fs->st, wf, &partition, &file_path);
  if (!afs_asset_set_file_path(up, id, file_path, &err))
    afs_warn("cannot update filePath of %s: %s", id, err.msg);
  if (mtime && !afs_asset_set_mtime(up, id, mtime, &err))
    afs_warn("cannot set mtime of %s: %s", id, err.msg);
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
    char *label = label_of(up, wf);
    afs_info("%s: upload %s was superseded; dropping the staged copy", label, id);
    free(label);
    afs_staging_remove(up->fs->st, wf);
  }
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
      pool_kick(up);
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
      } else if (idx[k] >= n && !status[k][0]) {
        /* An orphan whose record vanished: nothing left to delete. */
        pthread_mutex_lock(&wf->mu);
        wf->state = AFS_W_COMPLETED;
        pthread_mutex_unlock(&wf->mu);
      } else if (idx[k] >= n) {
        add_orphan(up, wf); /* keep watching */
      }
    }
  } else {
    for (int k = 0; k < polled; k++)
      if (idx[k] >= n)
        add_orphan(up, all[idx[k]]);
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

static void *worker_main(void *arg) {
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
    if (!up->wake && !up->stop) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += interval_ms * 1000000L;
      ts.tv_sec += ts.tv_nsec / 1000000000L;
      ts.tv_nsec %= 1000000000L;
      pthread_cond_timedwait(&up->cond, &up->mu, &ts);
    }
    if (up->wake)
      interval_ms = 20;
    up->wake = false;
    pthread_mutex_unlock(&up->mu);
  }
  afs_image_thread_done();
  return NULL;
}

/* The next file to upload, claimed, with a reference; NULL if none. */
static struct afs_wfile *pool_pick(struct afs_uploader *up) {
  struct afs_wfile **all, *pick = NULL;
  int n = afs_staging_snapshot(up->fs->st, &all);
  int64_t now = afs_monotonic_ms();
  for (int i = 0; i < n; i++) {
    struct afs_wfile *wf = all[i];
    if (!pick) {
      pthread_mutex_lock(&wf->mu);
      /* QUEUED with a writer: reopened meanwhile, its next close queues it again. */
      bool due = !wf->busy && !wf->claimed && !wf->unlinked &&
                 ((wf->state == AFS_W_QUEUED && wf->writers == 0) ||
                  (wf->state == AFS_W_RETRYING && now >= wf->next_try_ms));
      if (due)
        wf->claimed = true;
      pthread_mutex_unlock(&wf->mu);
      if (due) {
        pick = wf;
        continue;
      }
    }
    afs_staging_unref(up->fs->st, wf);
  }
  free(all);
  return pick;
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
    struct afs_wfile *wf = pool_pick(up);
    if (wf) {
      struct afs_error err = {0};
      pthread_mutex_lock(&wf->mu);
      bool retry = wf->state == AFS_W_RETRYING;
      pthread_mutex_unlock(&wf->mu);
      char *label = retry ? label_of(up, wf) : NULL;
      if (retry)
        afs_info("retrying the upload of %s", label);
      if (run_pipeline(up, wf, afs_monotonic_ms() + 120000, &err) && retry)
        afs_info("upload of %s succeeded on retry", label);
      free(label);
      pthread_mutex_lock(&wf->mu);
      wf->claimed = false;
      pthread_mutex_unlock(&wf->mu);
      afs_staging_unref(up->fs->st, wf);
      continue;
    }
    /* Nothing due: sleep until something is queued, or a second (retries come due). */
    pthread_mutex_lock(&up->mu);
    if (!up->stop && up->pool_seq == seq) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_sec += 1;
      pthread_cond_timedwait(&up->pool_cond, &up->mu, &ts);
    }
    pthread_mutex_unlock(&up->mu);
  }
  afs_image_thread_done();
  return NULL;
}

struct afs_uploader *afs_uploader_new(struct afs_fs *fs, struct afs_error *err) {
  struct afs_uploader *up = calloc(1, sizeof *up);
  up->fs = fs;
  pthread_mutex_init(&up->mu, NULL);
  pthread_cond_init(&up->cond, NULL);
  pthread_cond_init(&up->pool_cond, NULL);
  up->n_resumed = afs_staging_resume(fs->st);
  if (up->n_resumed > 0)
    afs_info("resuming %lld file(s) left by an earlier mount of this session",
             (long long)up->n_resumed);
  if (pthread_create(&up->worker, NULL, worker_main, up) != 0) {
    afs_error_set(err, EAGAIN, "cannot start the upload worker");
    free(up);
    return NULL;
  }
  up->worker_started = true;
  int n = fs->opt.upload_workers > 0 ? fs->opt.upload_workers : 4;
  up->pool = calloc(n, sizeof *up->pool);
  for (int i = 0; i < n; i++) {
    if (pthread_create(&up->pool[up->n_pool], NULL, pool_main, up) != 0) {
      afs_warn("cannot start upload worker %d of %d", i + 1, n);
      break;
    }
    up->n_pool++;
  }
  pool_kick(up);
  return up;
}

/* Bytes of files that still have to go up (for the unmount count and the status file). */
int64_t afs_upload_pending_bytes(struct afs_uploader *up, int *files) {
  struct afs_wfile **all;
  int n = afs_staging_snapshot(up->fs->st, &all), cnt = 0;
  int64_t bytes = 0;
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&all[i]->mu);
    enum afs_wstate s = all[i]->state;
    if (!all[i]->unlinked && (s == AFS_W_QUEUED || s == AFS_W_UPLOADING ||
                              s == AFS_W_RETRYING ||
                              (s == AFS_W_WRITING && all[i]->handles == 0))) {
      bytes += all[i]->acct_size;
      cnt++;
    }
    pthread_mutex_unlock(&all[i]->mu);
    afs_staging_unref(up->fs->st, all[i]);
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
  if (busy > 0)
    afs_warn("unmounting with %d upload(s) not completed; their data stays in %s for the "
             "next mount with this session_id", busy, afs_staging_dir(up->fs->st));
  pthread_mutex_lock(&up->mu);
  up->stop = true;
  pthread_cond_broadcast(&up->cond);
  pthread_cond_broadcast(&up->pool_cond);
  pthread_mutex_unlock(&up->mu);
  for (int i = 0; i < up->n_pool; i++)
    pthread_join(up->pool[i], NULL);
  free(up->pool);
  if (up->worker_started)
    pthread_join(up->worker, NULL);
  for (size_t i = 0; i < up->n_orphans; i++)
    afs_staging_unref(up->fs->st, up->orphans[i]);
  free(up->orphans);
  pthread_mutex_destroy(&up->mu);
  pthread_cond_destroy(&up->cond);
  pthread_cond_destroy(&up->pool_cond);
  free(up);
}
