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

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/http_put.h"
#include "assetfs/image.h"
#include "assetfs/log.h"
#include "assetfs/naming.h"
#include "assetfs/video.h"
#include "staging/base.h"
#include "staging/parts.h"

static void meta_cleanup(struct meta *m) {
  free(m->mp_etags);
  for (int i = 0; i < AFS_PART_COUNT; i++) {
    if (i != AFS_PART_ORIGINAL && m->part_file[i])
      unlink(m->part_file[i]);
    free(m->part_file[i]);
  }
}

static char *sibling(const char *staging, const char *tag, const char *ext) {
  char *p;
  afs_xasprintf(&p, "%s.%s%s", staging, tag, ext);
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
      m->part_file[AFS_PART_PREVIEW] = png;
      m->part_type[AFS_PART_PREVIEW] = "image/png";
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
      m->part_file[AFS_PART_SMALL + i] = dst;
      m->part_type[AFS_PART_SMALL + i] = cut_type;
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
  afs_xasprintf(&out, "%s/%s", partition, file_path);
  free(partition);
  free(file_path);
  return out;
}

/* A file adopted from an earlier mount: where did its record get to? Returns 1 to
 * upload (with wf->id, or a new record if that one cannot be used), 0 when nothing is
 * left to upload (state set), -1 on a transient error. Never makes a second asset for
 * bytes whose record was already marked uploaded. */
static int resume_check(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  char ids[1][AFS_OID_HEX];
  enum afs_upload_status st;
  bool active = false;
  pthread_mutex_lock(&wf->mu);
  memcpy(ids[0], wf->id, sizeof ids[0]);
  pthread_mutex_unlock(&wf->mu);
  if (!ids[0][0])
    return 1;
  if (!afs_rec_batch_status(up, ids, 1, &st)) {
    afs_error_set(err, EIO, "cannot read upload record %s", ids[0]);
    return -1;
  }
  if (st == AFS_US_PENDING || st == AFS_US_INITIALIZED)
    return 1;
  if (st == AFS_US_UPLOADED || st == AFS_US_COMPLETED)
    return afs_wf_resume_uploaded(wf, true) ? 0 : 1;
  if (st == AFS_US_NONE && !afs_rec_asset_active(up, ids[0], &active, err))
    return -1;
  /* Completed, and its upload record cleaned up since: nothing to send again. Refused,
   * or gone: a new record if we upload. */
  if (active)
    return afs_wf_resume_uploaded(wf, false) ? 0 : 1;
  afs_wf_resume_record_spent(wf);
  return 1;
}

/* Transient failures are retried in the background; these are not. */
static bool is_permanent(int code) {
  return code == AFS_E_TOO_BIG || code == AFS_E_BROKER_REFUSED || code == AFS_E_URL_REFUSED ||
         code == EINVAL;
}

/* A resumed file whose record says it needs no upload now (resume_check r <= 0):
 * uploaded already (r 0: journaled, the poller watches it) or the record could not be
 * read (r -1: queued for a retry). The pipeline's result. */
static bool resume_settled(struct afs_uploader *up, struct afs_wfile *wf, int r,
                           struct afs_error *err) {
  afs_wf_resume_settled(wf, r < 0, err);
  if (r == 0) {
    struct afs_error je = {0};
    afs_staging_journal(up->st, wf, false, &je);
    afs_up_poll_wake(up);
  } else {
    afs_up_queue_push(up, wf);
  }
  return r == 0;
}

/* PUTs the original (the staging file) and each part the record has a write URL for. */
static bool put_parts(const char *staging, const char *content_type, struct meta *m,
                      const struct record_state *rs, int64_t deadline_ms, struct afs_error *err) {
  struct afs_put_job jobs[AFS_PART_COUNT];
  int n = 0;
  memset(jobs, 0, sizeof jobs);
  for (int i = 0; i < AFS_PART_COUNT; i++) {
    const char *file = i == AFS_PART_ORIGINAL ? staging : m->part_file[i];
    if (!rs->write_url[i] || !file)
      continue;
    jobs[n++] = (struct afs_put_job){.url = rs->write_url[i],
                                     .path = file,
                                     .content_type =
                                         i == AFS_PART_ORIGINAL ? content_type : m->part_type[i],
                                     .what = afs_part_name((enum afs_part)i)};
  }
  struct afs_put_opts po;
  afs_put_opts_default(&po);
  po.deadline_ms = deadline_ms;
  bool ok = afs_http_put_all(jobs, n, &po, err);
  if (ok && n > 0 && rs->write_url[AFS_PART_ORIGINAL])
    snprintf(m->etag, sizeof m->etag, "%s", jobs[0].etag);
  return ok;
}

/* The end of an attempt, whatever its result: the file's state learns it (wfile.c), and
 * what that asks for follows: the staged copy's accounting, the orphan watch, the
 * journal, the poller, the queue again. Frees label. */
static void attempt_end(struct afs_uploader *up, struct afs_wfile *wf, bool ok,
                        struct afs_error *err, char *label) {
  struct afs_wf_outcome out;
  afs_wf_attempt_done(wf, ok, err, !ok && is_permanent(err->code), &out);
  if (out.release) /* removed while it uploaded (see afs_upload_unlinked) */
    afs_staging_account(up->st, wf, 0, false);
  if (out.orphan)
    afs_up_add_orphan(up, wf);
  if (ok && !out.orphan) {
    struct afs_error je = {0};
    if (!afs_staging_journal(up->st, wf, false, &je))
      afs_warn("%s", je.msg);
  }
  running_add(up, -1);
  /* The polling thread watches it from now on; a worker takes it again if it was
   * written meanwhile (or failed and waits for a retry). */
  afs_up_poll_wake(up);
  if (out.requeued || out.retry)
    afs_up_queue_push(up, wf);
  if (!ok) {
    if (!label)
      label = afs_up_label(up, wf);
    afs_warn("upload of %s failed: %s%s", label, err->msg,
             is_permanent(err->code) ? "" : " (will retry)");
  } else if (out.requeued) {
    afs_debug("upload of %s: written again meanwhile; queued again", label);
  }
  free(label);
}

bool afs_up_run_pipeline(struct afs_uploader *up, struct afs_wfile *wf, int64_t deadline_ms,
                         struct afs_error *err) {
  struct meta m;
  struct record_state rs;
  struct afs_wf_attempt a;
  char id[AFS_OID_HEX];
  bool ok = false, resumed = false;
  memset(&m, 0, sizeof m);
  memset(&rs, 0, sizeof rs);
  memset(&a, 0, sizeof a);

  switch (afs_wf_attempt_claim(wf, deadline_ms, &resumed, err)) {
  case AFS_WF_NOTHING:
    return true;
  case AFS_WF_FAILED:
  case AFS_WF_BUSY:
    return false;
  case AFS_WF_GO:
    break;
  }
  if (resumed) {
    int r = resume_check(up, wf, err);
    if (r <= 0)
      return resume_settled(up, wf, r, err);
  }
  afs_wf_attempt_start(wf, &a);
  const char *staging = a.staging_path, *content_type = a.content_type;
  char *label = NULL;
  running_add(up, 1);

  if (!a.have_stat) {
    afs_error_set(err, EIO, "cannot stat the staging file: %s", strerror(errno));
    goto done;
  }
  m.size = a.st.st_size;
  bool multipart = up->opt->multipart_threshold > 0 && m.size > up->opt->multipart_threshold;
  if (m.size > (multipart ? AFS_MP_MAX_FILE : AFS_PUT_MAX_SIZE)) {
    afs_err("upload %s: %lld bytes is over S3's limit of %s; not uploaded", staging,
            (long long)m.size, multipart ? "5 TiB for one object" : "5 GiB for one PUT");
    afs_error_set(err, AFS_E_TOO_BIG, "file too large for S3");
    goto done;
  }
  /* A file begun as a big asset (staging/base.h) sends the parts it never fetched as S3
   * copies, which only a multipart upload can take; a single PUT, and cuts and previews
   * made from the staged bytes, need those bytes here first. */
  enum afs_kind kind = afs_content_kind(content_type);
  if ((!multipart || kind != AFS_KIND_OTHER) && !afs_base_fill(up->st, wf, 0, -1, err))
    goto done;
  if (a.need_record && !afs_upload_begin(up, wf, err))
    goto done;
  if (!afs_wf_record_of(wf, id)) {
    /* Removed (or replaced by a rename) since the claim: nothing may be uploaded on its
     * record (afs_upload_begin_many dropped one made meanwhile; the unlink marked an
     * older one abandoned, and an abandoned record is also dropped while unused). */
    afs_rec_forget(up, id);
    ok = true; /* nothing left to upload; the orphan watch sees the record gone */
    goto done;
  }
  if (a.need_record) {
    struct afs_error je = {0};
    if (!afs_staging_journal(up->st, wf, false, &je))
      afs_warn("%s", je.msg);
  }

  int64_t t0 = afs_monotonic_ms();
  label = afs_up_label(up, wf);
  make_parts(staging, label, content_type, &m);
  int64_t t1 = afs_monotonic_ms();
  if (!afs_rec_wait_initialized(up, id, deadline_ms, &rs, err)) {
    if (err->code == AFS_E_RECORD_GONE)
      afs_wf_record_spent(wf); /* the next attempt starts from a new record */
    goto done;
  }
  int64_t t15 = afs_monotonic_ms();
  if (multipart) {
    /* The cuts and the preview still go in one PUT each; the original in parts. */
    char *orig = rs.write_url[AFS_PART_ORIGINAL];
    rs.write_url[AFS_PART_ORIGINAL] = NULL;
    bool pok = put_parts(staging, content_type, &m, &rs, deadline_ms, err) &&
               afs_up_mp_finish(up, wf, id, staging, m.size, deadline_ms, &m, err);
    rs.write_url[AFS_PART_ORIGINAL] = orig;
    if (!pok) {
      /* An expired part URL is signed again on the same record: not spent. */
      if (err->code == AFS_E_RECORD_GONE || err->code == ESTALE)
        afs_wf_record_spent(wf);
      goto done;
    }
  } else if (!put_parts(staging, content_type, &m, &rs, deadline_ms, err)) {
    if (err->code == AFS_E_URL_EXPIRED)
      afs_wf_record_spent(wf);
    goto done;
  }
  int64_t t2 = afs_monotonic_ms();
  if (!afs_rec_set_uploaded(up, id, &m, a.caption, a.mtime_ms, err)) {
    if (err->code == AFS_E_RECORD_GONE)
      afs_wf_record_spent(wf);
    goto done;
  }
  afs_wf_uploaded_with(wf, a.name_seq, a.mtime_ms);
  afs_base_uploaded(up->st, wf, id); /* its copies may come from this version next */
  afs_debug("upload %s: parts %lld ms, broker %lld ms, PUT %lld ms, record %lld ms", id,
            (long long)(t1 - t0), (long long)(t15 - t1), (long long)(t2 - t15),
            (long long)(afs_monotonic_ms() - t2));
  ok = true;
done:
  meta_cleanup(&m);
  afs_rec_state_free(&rs);
  free(a.caption);
  attempt_end(up, wf, ok, err, label);
  return ok;
}

bool afs_upload_flush(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  int64_t deadline = afs_monotonic_ms() + (int64_t)(up->opt->close_timeout * 1000);
  return afs_up_run_pipeline(up, wf, deadline, err);
}

void afs_upload_queue(struct afs_uploader *up, struct afs_wfile *wf) {
  afs_wf_queue(wf);
  afs_up_queue_push(up, wf);
}

bool afs_upload_unlinked(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *out) {
  struct afs_error err = {0};
  struct afs_wf_unlink u;
  afs_wf_unlinked(wf, &u);
  const char *id = u.id;
  enum afs_wstate state = u.state;
  bool busy = u.busy;
  if (u.release)
    afs_staging_account(up->st, wf, 0, false);
  afs_staging_forget(up->st, wf);
  if (!id[0])
    return true;
  if (state == AFS_W_COMPLETED) {
    if (!afs_asset_mark_deleted(up, id, &err))
      afs_warn("cannot mark asset %s deleted: %s", id, err.msg);
    return true;
  }
  bool gone = false;
  if (!busy && state != AFS_W_UPLOADED && !afs_rec_delete_unused(up, id, &gone, &err))
    afs_warn("cannot drop upload record %s: %s", id, err.msg);
  if (gone)
    return true;
  /* In flight (uploading, uploaded, or not deletable): the broker may complete it any
   * moment, and the caller may move another file to this path next (rename over it).
   * Say so on the record first, so that completion neither supersedes that file nor
   * leaves this one active. */
  bool marked = afs_rec_abandon(up, id, &err);
  if (!marked) {
    afs_warn("cannot mark upload %s abandoned: %s (its asset is removed once completed)", id,
             err.msg);
    if (out)
      *out = err;
  }
  /* A running pipeline sees `unlinked` when it ends; otherwise the asset is (about to
   * be) created: delete it when it is. */
  if (!busy)
    afs_up_add_orphan(up, wf);
  return marked;
}
