/* The upload queue: the files that wait for an upload worker. A file enters it on every
 * transition into QUEUED (closed in write-back mode, released without flush, truncated
 * while closed, retyped, resumed at mount) or RETRYING (a transient failure, due at
 * wf->next_try_ms; a record the database lost), once (wf->in_queue). Workers take the
 * next due file from here, in arrival order, and sleep until the earliest retry is due;
 * nothing scans the staging table to find work.
 *
 * The pick keeps the pipeline's order: files whose record is oldest go first (the broker
 * signs in that order, so theirs are likely signed), but a file without a record goes
 * first while fewer than AFS_UP_RECORD_BATCH queued files have one, because its worker
 * makes the records of up to that many queued files in one insert (so the broker signs
 * ahead of the uploads).
 *
 * Lock: up->q_mu guards the array and every wf->in_queue; order up->q_mu -> wf->mu. It is
 * never held with st->mu: the queue's reference to a file is taken before it goes in
 * and dropped after it comes out. */
#include "upload/upload_int.h"

#include "assetfs/alloc.h"
#include <stdlib.h>
#include <string.h>

/* True if entry wf (wf->mu held) can no longer become due by waiting: the event that
 * makes it due again pushes it again. Batch companions (claimed) stay. */
static bool stale_locked(const struct afs_wfile *wf) {
  if (wf->claimed)
    return false;
  return wf->unlinked || wf->busy || (wf->state != AFS_W_QUEUED && wf->state != AFS_W_RETRYING);
}

void afs_up_queue_push(struct afs_uploader *up, struct afs_wfile *wf) {
  afs_staging_ref(up->st, wf);
  pthread_mutex_lock(&up->q_mu);
  bool added = !wf->in_queue;
  if (added) {
    if (up->q_n == up->q_cap) {
      up->q_cap = up->q_cap ? up->q_cap * 2 : 64;
      up->q = afs_xrealloc(up->q, up->q_cap * sizeof *up->q);
    }
    up->q[up->q_n++] = wf;
    wf->in_queue = true;
  }
  pthread_mutex_unlock(&up->q_mu);
  if (!added)
    afs_staging_unref(up->st, wf);
  afs_up_pool_signal(up);
}

struct afs_wfile *afs_up_queue_pick(struct afs_uploader *up, int64_t now, int64_t *next_due_ms) {
  struct afs_wfile *oldest = NULL, *no_record = NULL, *pick = NULL;
  struct afs_wfile **stale = NULL;
  size_t n_stale = 0;
  int with_record = 0;
  *next_due_ms = INT64_MAX;
  pthread_mutex_lock(&up->q_mu);
  size_t kept = 0;
  for (size_t i = 0; i < up->q_n; i++) {
    struct afs_wfile *wf = up->q[i];
    pthread_mutex_lock(&wf->mu);
    bool drop = stale_locked(wf);
    if (!drop && !wf->claimed) {
      /* QUEUED with a writer: reopened meanwhile; due again once it is closed. */
      bool due = (wf->state == AFS_W_QUEUED && wf->writers == 0) ||
                 (wf->state == AFS_W_RETRYING && now >= wf->next_try_ms);
      if (wf->state == AFS_W_RETRYING && !due && wf->next_try_ms < *next_due_ms)
        *next_due_ms = wf->next_try_ms;
      if (due && wf->id[0] && !wf->record_used) {
        with_record++;
        if (!oldest || strcmp(wf->id, oldest->id) < 0)
          oldest = wf;
      } else if (due && !no_record) {
        no_record = wf;
      }
    }
    if (drop) {
      wf->in_queue = false;
      if (!stale)
        stale = afs_xmalloc(up->q_n * sizeof *stale);
      stale[n_stale++] = wf;
    } else {
      up->q[kept++] = wf;
    }
    pthread_mutex_unlock(&wf->mu);
  }
  up->q_n = kept;
  pick = no_record && (with_record < AFS_UP_RECORD_BATCH || !oldest) ? no_record : oldest;
  if (pick) {
    for (size_t i = 0; i < up->q_n; i++) {
      if (up->q[i] == pick) {
        memmove(&up->q[i], &up->q[i + 1], (up->q_n - i - 1) * sizeof *up->q);
        up->q_n--;
        break;
      }
    }
    pthread_mutex_lock(&pick->mu);
    pick->in_queue = false;
    pick->claimed = true;
    pthread_mutex_unlock(&pick->mu);
  }
  pthread_mutex_unlock(&up->q_mu);
  for (size_t i = 0; i < n_stale; i++)
    afs_staging_unref(up->st, stale[i]);
  free(stale);
  return pick;
}

int afs_up_queue_claim_unrecorded(struct afs_uploader *up, const struct afs_wfile *except,
                                  struct afs_wfile **out, int max) {
  int n = 0;
  pthread_mutex_lock(&up->q_mu);
  for (size_t i = 0; i < up->q_n && n < max; i++) {
    struct afs_wfile *o = up->q[i];
    if (o == except)
      continue;
    pthread_mutex_lock(&o->mu);
    bool take = !o->busy && !o->claimed && !o->unlinked && !o->resumed && !o->id[0] &&
                o->state == AFS_W_QUEUED && o->writers == 0;
    if (take)
      o->claimed = true;
    pthread_mutex_unlock(&o->mu);
    if (take)
      out[n++] = o;
  }
  pthread_mutex_unlock(&up->q_mu);
  return n;
}

void afs_up_queue_unclaim(struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  wf->claimed = false;
  pthread_mutex_unlock(&wf->mu);
}

size_t afs_up_queue_length(struct afs_uploader *up) {
  pthread_mutex_lock(&up->q_mu);
  size_t n = up->q_n;
  pthread_mutex_unlock(&up->q_mu);
  return n;
}

void afs_up_queue_free(struct afs_uploader *up) {
  pthread_mutex_lock(&up->q_mu);
  struct afs_wfile **q = up->q;
  size_t n = up->q_n;
  for (size_t i = 0; i < n; i++) {
    pthread_mutex_lock(&q[i]->mu);
    q[i]->in_queue = false;
    pthread_mutex_unlock(&q[i]->mu);
  }
  up->q = NULL;
  up->q_n = up->q_cap = 0;
  pthread_mutex_unlock(&up->q_mu);
  for (size_t i = 0; i < n; i++)
    afs_staging_unref(up->st, q[i]);
  free(q);
}
