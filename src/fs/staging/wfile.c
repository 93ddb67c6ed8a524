/* A written file's upload state, changed only here: see wfile.h for the transitions.
 * Each event is one critical section on wf->mu; nothing here does I/O but the local
 * truncation of a removed file's staged bytes. */
#include "staging/wfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/naming.h" /* afs_content_kind */

#define BACKOFF_MAX_SHIFT 6 /* retries back off 2 s, 4 s, ... 64 s */
#define RESUME_RETRY_MS 2000
#define HEAL_GRACE_MS 1000 /* a read racing our own `uploaded` update is not a regression */

static char *dup_or_null(const char *s) {
  return s ? afs_xstrdup(s) : NULL;
}

void afs_wf_opened(struct afs_wfile *wf, bool writable) {
  pthread_mutex_lock(&wf->mu);
  wf->handles++;
  if (writable)
    wf->writers++;
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_closed(struct afs_wfile *wf, bool writable, struct afs_wf_closing *out) {
  pthread_mutex_lock(&wf->mu);
  wf->handles--;
  if (writable)
    wf->writers--;
  out->queue = wf->writers == 0 && wf->dirty && wf->state == AFS_W_WRITING;
  out->drop = wf->handles == 0 && wf->state == AFS_W_COMPLETED && wf->shown;
  memcpy(out->id, wf->id, sizeof out->id);
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_written(struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  wf->dirty = true;
  /* New bytes: what a killed mount's record got to no longer matters (if it was used,
   * the upload fails with AFS_E_RECORD_GONE and takes a new record). */
  wf->resumed = false;
  wf->generation++;
  wf->shown = false; /* the completed asset no longer holds these bytes */
  if (wf->state != AFS_W_UPLOADING)
    wf->state = AFS_W_WRITING;
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_queue(struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  if (wf->dirty && wf->state == AFS_W_WRITING)
    wf->state = AFS_W_QUEUED;
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_retyped(struct afs_wfile *wf, const char *ct, struct afs_wf_retype *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&wf->mu);
  bool same_kind = afs_content_kind(wf->content_type) == afs_content_kind(ct);
  enum afs_wstate s = wf->state;
  bool ran = wf->busy || s == AFS_W_UPLOADING || s == AFS_W_UPLOADED || s == AFS_W_COMPLETED;
  if (!strcmp(wf->content_type, ct) || (ran && same_kind) || wf->unlinked) {
    pthread_mutex_unlock(&wf->mu);
    return;
  }
  out->changed = true;
  out->ran = ran;
  snprintf(out->old_type, sizeof out->old_type, "%s", wf->content_type);
  snprintf(wf->content_type, sizeof wf->content_type, "%s", ct);
  /* The broker signs a record for its contentType: a record made for the old type
   * cannot take this upload. */
  if (!ran && wf->id[0] && !wf->record_used) {
    memcpy(out->stale_id, wf->id, sizeof out->stale_id);
    wf->record_used = true;
  }
  if (ran) {
    wf->dirty = true;
    wf->generation++;
    wf->shown = false;
    /* A running upload requeues it when it ends (it sees `dirty`); otherwise queue it. */
    if (!wf->busy && s != AFS_W_UPLOADING)
      wf->state = wf->writers > 0 ? AFS_W_WRITING : AFS_W_QUEUED;
  }
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_restaged(struct afs_wfile *wf, int64_t mtime_ms, const char *caption) {
  pthread_mutex_lock(&wf->mu);
  wf->mtime_ms = mtime_ms;
  wf->dirty = true;
  wf->generation++;
  wf->state = AFS_W_QUEUED;
  if (caption && *caption && !wf->caption)
    wf->caption = dup_or_null(caption);
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_renamed(struct afs_wfile *wf, char id[AFS_OID_HEX], enum afs_wstate *state) {
  pthread_mutex_lock(&wf->mu);
  memcpy(id, wf->id, 25);
  *state = wf->state;
  wf->name_seq++;
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_unlinked(struct afs_wfile *wf, struct afs_wf_unlink *out) {
  pthread_mutex_lock(&wf->mu);
  wf->unlinked = true;
  memcpy(out->id, wf->id, sizeof out->id);
  out->state = wf->state;
  out->busy = wf->busy;
  /* Nobody reads the bytes any more (no handle, no upload): give the space back now,
   * not when the broker is done with the record (a full cache_dir needs it). */
  out->release = !wf->busy && wf->handles == 0 && wf->fd >= 0 && ftruncate(wf->fd, 0) == 0;
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_superseded(struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  wf->unlinked = true;
  pthread_mutex_unlock(&wf->mu);
}

enum afs_wf_claim afs_wf_attempt_claim(struct afs_wfile *wf, int64_t deadline_ms, bool *resumed,
                                       struct afs_error *err) {
  pthread_mutex_lock(&wf->mu);
  while (wf->busy) {
    afs_cond_timedwait_ms(&wf->cond, &wf->mu, 1000);
    if (afs_monotonic_ms() >= deadline_ms && wf->busy) {
      pthread_mutex_unlock(&wf->mu);
      afs_error_set(err, AFS_E_DEADLINE, "an earlier upload of this file is still running");
      return AFS_WF_BUSY;
    }
  }
  bool needed = !wf->unlinked && (wf->dirty || wf->state == AFS_W_RETRYING ||
                                  wf->state == AFS_W_WRITING || wf->state == AFS_W_QUEUED);
  if (!needed) {
    bool failed = wf->state == AFS_W_FAILED && !wf->unlinked;
    if (failed)
      *err = wf->last_err;
    pthread_mutex_unlock(&wf->mu);
    return failed ? AFS_WF_FAILED : AFS_WF_NOTHING;
  }
  wf->busy = true;
  wf->claim_generation = wf->generation;
  *resumed = wf->resumed;
  wf->resumed = false;
  pthread_mutex_unlock(&wf->mu);
  return AFS_WF_GO;
}

bool afs_wf_resume_uploaded(struct afs_wfile *wf, bool record_said) {
  pthread_mutex_lock(&wf->mu);
  wf->record_used = true;
  bool unchanged = wf->generation == wf->claim_generation;
  if (unchanged) {
    wf->dirty = false;
    wf->state = AFS_W_UPLOADED;
    /* the poller's first look at it: soon when the record says `uploaded` */
    if (record_said)
      wf->uploaded_ms = afs_monotonic_ms();
  }
  pthread_mutex_unlock(&wf->mu);
  return unchanged;
}

void afs_wf_resume_record_spent(struct afs_wfile *wf) {
  afs_wf_record_spent(wf);
}

void afs_wf_resume_settled(struct afs_wfile *wf, bool transient, const struct afs_error *err) {
  pthread_mutex_lock(&wf->mu);
  wf->busy = false;
  if (transient) {
    wf->resumed = true;
    wf->state = AFS_W_RETRYING;
    wf->last_err = *err;
    wf->next_try_ms = afs_monotonic_ms() + RESUME_RETRY_MS;
  }
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_attempt_start(struct afs_wfile *wf, struct afs_wf_attempt *a) {
  pthread_mutex_lock(&wf->mu);
  wf->dirty = false;
  wf->state = AFS_W_UPLOADING;
  a->need_record = !wf->id[0] || wf->record_used;
  memcpy(a->content_type, wf->content_type, sizeof a->content_type);
  a->caption = dup_or_null(wf->caption);
  a->mtime_ms = wf->mtime_ms;
  a->name_seq = wf->name_seq;
  a->staging_path = wf->staging_path;
  a->have_stat = fstat(wf->fd, &a->st) == 0;
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_record_made(struct afs_wfile *wf, const char *id) {
  pthread_mutex_lock(&wf->mu);
  snprintf(wf->id, sizeof wf->id, "%s", id);
  wf->record_used = false;
  pthread_mutex_unlock(&wf->mu);
}

bool afs_wf_record_of(struct afs_wfile *wf, char id[AFS_OID_HEX]) {
  pthread_mutex_lock(&wf->mu);
  memcpy(id, wf->id, 25);
  bool live = !wf->unlinked;
  pthread_mutex_unlock(&wf->mu);
  return live;
}

void afs_wf_record_spent(struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  wf->record_used = true;
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_uploaded_with(struct afs_wfile *wf, uint64_t name_seq, int64_t mtime_ms) {
  pthread_mutex_lock(&wf->mu);
  wf->uploaded_name_seq = name_seq;
  wf->uploaded_mtime = mtime_ms;
  pthread_mutex_unlock(&wf->mu);
}

void afs_wf_attempt_done(struct afs_wfile *wf, bool ok, const struct afs_error *err, bool permanent,
                         struct afs_wf_outcome *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&wf->mu);
  wf->busy = false;
  if (ok) {
    wf->record_used = true;
    /* Written again while this upload ran: once nobody writes any more, nobody else will
     * start the next upload (the writer's flush may have come and gone). */
    out->requeued = wf->dirty && wf->writers == 0;
    wf->state = out->requeued ? AFS_W_QUEUED : wf->dirty ? AFS_W_WRITING : AFS_W_UPLOADED;
    wf->uploaded_ms = afs_monotonic_ms();
    wf->attempts = 0;
    afs_error_clear(&wf->last_err);
    out->orphan = wf->unlinked;
  } else {
    wf->last_err = *err;
    wf->attempts++;
    if (permanent) {
      wf->state = AFS_W_FAILED;
    } else {
      wf->state = AFS_W_RETRYING;
      out->retry = true;
      long backoff = 1000L << (wf->attempts < BACKOFF_MAX_SHIFT ? wf->attempts : BACKOFF_MAX_SHIFT);
      wf->next_try_ms = afs_monotonic_ms() + backoff;
    }
  }
  /* Removed while it uploaded: the bytes are nobody's any more. */
  out->release = wf->unlinked && wf->handles == 0 && wf->fd >= 0 && ftruncate(wf->fd, 0) == 0;
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
}

bool afs_wf_completed(struct afs_wfile *wf, const char *id, struct afs_wf_completion *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&wf->mu);
  if (strcmp(wf->id, id) != 0 ||
      (wf->state != AFS_W_UPLOADED && !(wf->unlinked && wf->state != AFS_W_UPLOADING))) {
    /* Written again since: that older upload's asset will be superseded by the next. */
    pthread_mutex_unlock(&wf->mu);
    return false;
  }
  wf->state = AFS_W_COMPLETED;
  /* A new version starts unshown: an earlier version's mark (kept while a reader held
   * the staged copy) must neither drop this one before the catalog serves it nor keep
   * the poller from asking. */
  wf->shown = false;
  out->mtime_ms = wf->mtime_ms;
  /* The broker copied filePath and mtime from the record: they need writing only if
   * they changed after `uploaded` (a rename may have raced with the broker's copy). */
  out->renamed = wf->name_seq != wf->uploaded_name_seq;
  out->touched = wf->mtime_ms && wf->mtime_ms != wf->uploaded_mtime;
  out->unlinked = wf->unlinked;
  out->caption = dup_or_null(wf->caption);
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  return true;
}

bool afs_wf_refused(struct afs_wfile *wf, const char *id) {
  pthread_mutex_lock(&wf->mu);
  bool ours = !strcmp(wf->id, id) && wf->state == AFS_W_UPLOADED;
  if (ours) {
    wf->state = AFS_W_FAILED;
    afs_error_set(&wf->last_err, AFS_E_BROKER_REFUSED, "the broker rejected the upload");
  }
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  return ours;
}

bool afs_wf_regressed(struct afs_wfile *wf, const char *id, int64_t now_ms) {
  pthread_mutex_lock(&wf->mu);
  bool heal = !strcmp(wf->id, id) && wf->state == AFS_W_UPLOADED && !wf->busy && !wf->unlinked &&
              now_ms - wf->uploaded_ms > HEAL_GRACE_MS;
  if (heal) {
    wf->state = AFS_W_RETRYING;
    wf->record_used = false;
    wf->next_try_ms = now_ms;
  }
  pthread_mutex_unlock(&wf->mu);
  return heal;
}

bool afs_wf_waits_for(struct afs_wfile *wf, const char *id) {
  pthread_mutex_lock(&wf->mu);
  bool waits = !strcmp(wf->id, id) && wf->state == AFS_W_UPLOADED;
  pthread_mutex_unlock(&wf->mu);
  return waits;
}

void afs_wf_orphan_settled(struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  wf->state = AFS_W_COMPLETED;
  pthread_mutex_unlock(&wf->mu);
}

bool afs_wf_shown(struct afs_wfile *wf, const char *id) {
  pthread_mutex_lock(&wf->mu);
  wf->shown = wf->state == AFS_W_COMPLETED && !strcmp(wf->id, id);
  bool shown = wf->shown;
  pthread_mutex_unlock(&wf->mu);
  return shown;
}
