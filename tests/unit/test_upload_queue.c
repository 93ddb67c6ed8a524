/* The upload queue (src/fs/upload/upload_queue.c): what the upload workers take next,
 * without a database or FUSE. Files are driven into QUEUED/RETRYING by the state
 * machine's own events (staging/wfile.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/clock.h"
#include "upload/upload_int.h"

static struct afs_staging *st;

static struct afs_wfile *queued(const char *path, const char *id) {
  struct afs_error err = {0};
  struct afs_wfile *wf = afs_staging_create(st, "user_id=t", path, "text/plain", NULL, &err);
  CHECK(wf != NULL);
  afs_wf_written(wf);
  afs_wf_queue(wf);
  if (id)
    afs_wf_record_made(wf, id);
  CHECK(wf->state == AFS_W_QUEUED);
  return wf;
}

/* A transient failure: RETRYING, due after its backoff. */
static void fail_once(struct afs_wfile *wf) {
  struct afs_error err = {0}, why = {0};
  bool resumed;
  struct afs_wf_attempt a;
  struct afs_wf_outcome o;
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_GO);
  afs_wf_attempt_start(wf, &a);
  free(a.caption);
  afs_error_set(&why, AFS_E_TRANSIENT, "S3 answered 503");
  afs_wf_attempt_done(wf, false, &why, false, &o);
  CHECK(o.retry && wf->state == AFS_W_RETRYING);
}

static struct afs_wfile *pick(struct afs_uploader *up, int64_t now, int64_t *due) {
  struct afs_wfile *wf = afs_up_queue_pick(up, now, due);
  if (wf) {
    CHECK(wf->claimed && !wf->in_queue);
    afs_up_queue_unclaim(wf);
  }
  return wf;
}

int main(void) {
  char dir[] = "/tmp/test_upload_queue.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  struct afs_error err = {0};
  st = afs_staging_new(dir, &err);
  CHECK(st != NULL);
  struct afs_uploader up;
  memset(&up, 0, sizeof up);
  up.st = st;
  pthread_mutex_init(&up.mu, NULL);
  pthread_mutex_init(&up.q_mu, NULL);
  afs_cond_init(&up.pool_cond);
  int64_t now = afs_monotonic_ms(), due;

  /* Oldest record first; a file pushed twice is in the queue once. */
  struct afs_wfile *b = queued("b.txt", "000000000000000000000002");
  struct afs_wfile *a = queued("a.txt", "000000000000000000000001");
  afs_up_queue_push(&up, b);
  afs_up_queue_push(&up, a);
  afs_up_queue_push(&up, b);
  CHECK(afs_up_queue_length(&up) == 2);
  CHECK(pick(&up, now, &due) == a);
  CHECK(due == INT64_MAX);
  CHECK(pick(&up, now, &due) == b);
  CHECK(pick(&up, now, &due) == NULL && afs_up_queue_length(&up) == 0);
  afs_staging_unref(st, a); /* the queue's references, handed over by the picks */
  afs_staging_unref(st, b);

  /* A file without a record goes first while few queued files have one; its worker
   * makes the records of the other unrecorded ones (claimed, kept in the queue). */
  struct afs_wfile *r = queued("r.txt", "000000000000000000000003");
  struct afs_wfile *n1 = queued("n1.txt", NULL), *n2 = queued("n2.txt", NULL);
  afs_up_queue_push(&up, r);
  afs_up_queue_push(&up, n1);
  afs_up_queue_push(&up, n2);
  struct afs_wfile *w = afs_up_queue_pick(&up, now, &due);
  CHECK(w == n1);
  struct afs_wfile *batch[4];
  CHECK(afs_up_queue_claim_unrecorded(&up, w, batch, 4) == 1 && batch[0] == n2);
  CHECK(n2->claimed && afs_up_queue_length(&up) == 2);
  CHECK(pick(&up, now, &due) == r); /* n2 is claimed by the batch: not picked, not dropped */
  CHECK(afs_up_queue_length(&up) == 1);
  afs_up_queue_unclaim(n2);
  afs_up_queue_unclaim(w);
  CHECK(pick(&up, now, &due) == n2);
  afs_staging_unref(st, w);
  afs_staging_unref(st, r);
  afs_staging_unref(st, n2);

  /* A retry waits for its time, and the queue says when that is. */
  struct afs_wfile *f = queued("f.txt", "000000000000000000000004");
  int64_t t0 = afs_monotonic_ms();
  fail_once(f);
  afs_up_queue_push(&up, f);
  now = afs_monotonic_ms();
  CHECK(pick(&up, now, &due) == NULL || now >= t0 + 2000);
  CHECK(due == f->next_try_ms && due >= t0 + 2000);
  CHECK(afs_up_queue_length(&up) == 1);
  CHECK(pick(&up, due, &due) == f);
  afs_staging_unref(st, f);

  /* Entries that cannot become due by waiting leave the queue: removed, written again
   * (its close pushes it again), or being uploaded by a flush. A queued file reopened for
   * writing stays: due again once closed. */
  struct afs_wfile *gone = queued("gone.txt", NULL), *rew = queued("rew.txt", NULL);
  struct afs_wfile *open_w = queued("open.txt", NULL);
  afs_up_queue_push(&up, gone);
  afs_up_queue_push(&up, rew);
  afs_up_queue_push(&up, open_w);
  struct afs_wf_unlink u;
  afs_wf_unlinked(gone, &u);
  afs_wf_written(rew);
  afs_wf_opened(open_w, true);
  CHECK(pick(&up, now, &due) == NULL);
  CHECK(afs_up_queue_length(&up) == 1);
  struct afs_wf_closing c;
  afs_wf_closed(open_w, true, &c);
  CHECK(pick(&up, now, &due) == open_w);
  afs_staging_unref(st, open_w);

  /* Unmount empties the queue and gives back its references. */
  struct afs_wfile *left = queued("left.txt", NULL);
  afs_up_queue_push(&up, left);
  afs_up_queue_free(&up);
  CHECK(afs_up_queue_length(&up) == 0 && !left->in_queue);

  for (struct afs_wfile **p =
           (struct afs_wfile *[]){a, b, r, n1, n2, f, gone, rew, open_w, left, NULL};
       *p; p++)
    afs_staging_unref(st, *p); /* the creators' references */
  afs_staging_free(st);
  char cmd[80];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  TEST_MAIN_END();
}
