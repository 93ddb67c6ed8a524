/* A written file's upload state machine (src/fs/staging/wfile.c), driven by its events
 * alone: no FUSE, no database. Each case is a path a file takes through the mount. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/clock.h"
#include "staging/wfile.h"

static struct afs_staging *st;

static struct afs_wfile *mk(const char *path) {
  struct afs_error err = {0};
  struct afs_wfile *replaced = NULL;
  struct afs_wfile *wf = afs_staging_create(st, "user_id=t", path, "text/plain", &replaced, &err);
  CHECK(wf != NULL);
  afs_staging_unref(st, replaced);
  return wf;
}

/* One successful attempt: claim, start, record, `uploaded`. */
static void upload(struct afs_wfile *wf, const char *id, struct afs_wf_outcome *out) {
  struct afs_error err = {0};
  bool resumed = true;
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_GO);
  CHECK(!resumed);
  struct afs_wf_attempt a;
  afs_wf_attempt_start(wf, &a);
  CHECK(wf->state == AFS_W_UPLOADING && wf->busy && !wf->dirty);
  CHECK(a.have_stat);
  if (a.need_record)
    afs_wf_record_made(wf, id);
  char got[AFS_OID_HEX];
  CHECK(afs_wf_record_of(wf, got));
  CHECK_STREQ(got, id);
  afs_wf_uploaded_with(wf, a.name_seq, a.mtime_ms);
  free(a.caption);
  afs_wf_attempt_done(wf, true, NULL, false, out);
}

/* Written, closed, uploaded, completed, shown: the staged copy may go when idle. */
static void test_life(void) {
  struct afs_wfile *wf = mk("life.txt");
  CHECK(wf->state == AFS_W_WRITING);
  afs_wf_opened(wf, true);
  afs_wf_written(wf);
  struct afs_wf_closing c;
  afs_wf_closed(wf, true, &c);
  CHECK(c.queue && !c.drop);
  afs_wf_queue(wf);
  CHECK(wf->state == AFS_W_QUEUED);
  struct afs_wf_outcome o;
  upload(wf, "000000000000000000000001", &o);
  CHECK(!o.requeued && !o.orphan && !o.release);
  CHECK(wf->state == AFS_W_UPLOADED && wf->record_used && !wf->busy);
  /* a record that is not this file's current one changes nothing */
  struct afs_wf_completion done;
  CHECK(!afs_wf_completed(wf, "000000000000000000000009", &done));
  CHECK(afs_wf_completed(wf, "000000000000000000000001", &done));
  CHECK(!done.renamed && !done.touched && !done.unlinked && !done.caption);
  CHECK(wf->state == AFS_W_COMPLETED && !wf->shown);
  CHECK(!afs_wf_shown(wf, "000000000000000000000009"));
  CHECK(afs_wf_shown(wf, "000000000000000000000001"));
  CHECK(afs_staging_drop_if_idle(st, wf, "000000000000000000000001"));
  afs_staging_unref(st, wf);
}

/* The CI flake: a reader holds version 1's staged copy while it is completed and shown,
 * then the file is appended to. Version 2 must start unshown, so that the poller asks the
 * catalog about it and its copy goes once the catalog serves it. */
static void test_shown_belongs_to_one_version(void) {
  struct afs_wfile *wf = mk("held.txt");
  struct afs_wf_outcome o;
  struct afs_wf_completion done;
  struct afs_wf_closing c;
  afs_wf_written(wf);
  upload(wf, "000000000000000000000011", &o);
  CHECK(afs_wf_completed(wf, "000000000000000000000011", &done));
  afs_wf_opened(wf, false); /* the reader */
  CHECK(afs_wf_shown(wf, "000000000000000000000011"));
  CHECK(!afs_staging_drop_if_idle(st, wf, "000000000000000000000011")); /* held */
  afs_wf_opened(wf, true); /* the appender, before the reader's release */
  afs_wf_written(wf);
  CHECK(wf->state == AFS_W_WRITING && !wf->shown);
  afs_wf_closed(wf, false, &c); /* the reader's release */
  CHECK(!c.drop && !c.queue);
  afs_wf_closed(wf, true, &c);
  CHECK(c.queue);
  afs_wf_queue(wf);
  upload(wf, "000000000000000000000012", &o); /* a used record: a new one */
  CHECK(afs_wf_completed(wf, "000000000000000000000012", &done));
  CHECK(wf->state == AFS_W_COMPLETED && !wf->shown); /* the poller will look */
  CHECK(!afs_staging_drop_if_idle(st, wf, "000000000000000000000012"));
  CHECK(afs_wf_shown(wf, "000000000000000000000012"));
  CHECK(afs_staging_drop_if_idle(st, wf, "000000000000000000000012"));
  afs_staging_unref(st, wf);
}

/* Written again while the attempt ran: requeued when nobody writes, WRITING while
 * somebody still does; a completion of the older record changes nothing. */
static void test_written_during_upload(void) {
  struct afs_wfile *wf = mk("busy.txt");
  struct afs_error err = {0};
  bool resumed;
  afs_wf_written(wf);
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_GO);
  struct afs_wf_attempt a;
  afs_wf_attempt_start(wf, &a);
  afs_wf_record_made(wf, "000000000000000000000021");
  afs_wf_written(wf);
  CHECK(wf->state == AFS_W_UPLOADING && wf->dirty); /* the running attempt keeps its state */
  /* a second flush meanwhile waits for the first, then gives up at its deadline */
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 50, &resumed, &err) == AFS_WF_BUSY);
  CHECK(err.code == AFS_E_DEADLINE);
  struct afs_wf_outcome o;
  afs_wf_attempt_done(wf, true, NULL, false, &o);
  free(a.caption);
  CHECK(o.requeued && wf->state == AFS_W_QUEUED);
  struct afs_wf_completion done;
  CHECK(!afs_wf_completed(wf, "000000000000000000000021", &done)); /* not UPLOADED */
  /* with a writer still open, the next close queues it instead */
  afs_wf_opened(wf, true);
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_GO);
  afs_wf_attempt_start(wf, &a);
  free(a.caption);
  CHECK(a.need_record); /* the last record was used */
  afs_wf_record_made(wf, "000000000000000000000022");
  afs_wf_written(wf);
  afs_wf_attempt_done(wf, true, NULL, false, &o);
  CHECK(!o.requeued && wf->state == AFS_W_WRITING);
  struct afs_wf_closing c;
  afs_wf_closed(wf, true, &c);
  CHECK(c.queue);
  afs_staging_unref(st, wf);
}

/* Failures: transient ones back off and retry, permanent ones stay FAILED and report
 * their reason to the next flush; a refused or regressed record is seen from the poller. */
static void test_failures(void) {
  struct afs_wfile *wf = mk("fail.txt");
  struct afs_error err = {0}, why = {0};
  bool resumed;
  struct afs_wf_attempt a;
  struct afs_wf_outcome o;
  afs_wf_written(wf);
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_GO);
  afs_wf_attempt_start(wf, &a);
  free(a.caption);
  afs_error_set(&why, AFS_E_TRANSIENT, "S3 answered 503");
  int64_t t0 = afs_monotonic_ms();
  afs_wf_attempt_done(wf, false, &why, false, &o);
  CHECK(wf->state == AFS_W_RETRYING && wf->attempts == 1);
  CHECK(wf->next_try_ms >= t0 + 2000);
  /* the retry claims it; this time the broker refuses for good */
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_GO);
  afs_wf_attempt_start(wf, &a);
  free(a.caption);
  afs_error_set(&why, AFS_E_BROKER_REFUSED, "the broker refused the upload: bad name");
  afs_wf_attempt_done(wf, false, &why, true, &o);
  CHECK(wf->state == AFS_W_FAILED);
  memset(&err, 0, sizeof err);
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_FAILED);
  CHECK(err.code == AFS_E_BROKER_REFUSED && strstr(err.msg, "bad name"));
  /* written again: a new attempt */
  afs_wf_written(wf);
  upload(wf, "000000000000000000000031", &o);
  CHECK(!afs_wf_refused(wf, "000000000000000000000039"));
  int64_t now = afs_monotonic_ms();
  CHECK(!afs_wf_regressed(wf, "000000000000000000000031", now)); /* within the grace */
  CHECK(afs_wf_regressed(wf, "000000000000000000000031", now + 5000));
  CHECK(wf->state == AFS_W_RETRYING && !wf->record_used); /* same record, same keys */
  upload(wf, "000000000000000000000031", &o);
  CHECK(afs_wf_waits_for(wf, "000000000000000000000031"));
  CHECK(afs_wf_refused(wf, "000000000000000000000031"));
  CHECK(wf->state == AFS_W_FAILED && wf->last_err.code == AFS_E_BROKER_REFUSED);
  afs_staging_unref(st, wf);
}

/* Removed while its record was being made: the unlink saw no id, so the pipeline must
 * see the removal once the record exists (and upload nothing on it). Removed while the
 * upload ran: the attempt reports an orphan and gives the bytes back. */
static void test_unlinked_in_flight(void) {
  struct afs_wfile *wf = mk("gone.txt");
  struct afs_error err = {0};
  bool resumed;
  struct afs_wf_attempt a;
  struct afs_wf_unlink u;
  struct afs_wf_outcome o;
  CHECK(write(wf->fd, "data", 4) == 4);
  afs_wf_written(wf);
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_GO);
  afs_wf_attempt_start(wf, &a);
  free(a.caption);
  afs_wf_unlinked(wf, &u);
  CHECK(!u.id[0] && u.busy && !u.release);
  afs_wf_record_made(wf, "000000000000000000000041");
  char id[AFS_OID_HEX];
  CHECK(!afs_wf_record_of(wf, id));
  CHECK_STREQ(id, "000000000000000000000041");
  afs_wf_attempt_done(wf, true, NULL, false, &o);
  CHECK(o.orphan && o.release);
  struct stat sb;
  CHECK(fstat(wf->fd, &sb) == 0 && sb.st_size == 0);
  /* nothing more to upload for a removed file */
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_NOTHING);
  /* its completion is seen once, so that the orphan's asset is deleted */
  struct afs_wf_completion done;
  CHECK(afs_wf_completed(wf, "000000000000000000000041", &done) && done.unlinked);
  afs_staging_remove(st, wf);
  afs_staging_unref(st, wf);
}

/* A rename to another type after an upload ran: uploaded again as the new type; before
 * any upload: the unused record made for the old type is to be deleted. */
static void test_retype(void) {
  struct afs_wfile *wf = mk("clip.tmp");
  struct afs_wf_retype rt;
  struct afs_wf_outcome o;
  afs_wf_written(wf);
  afs_wf_record_made(wf, "000000000000000000000051");
  afs_wf_retyped(wf, "video/mp4", &rt);
  CHECK(rt.changed && !rt.ran);
  CHECK_STREQ(rt.stale_id, "000000000000000000000051");
  CHECK_STREQ(rt.old_type, "text/plain");
  CHECK(wf->record_used);
  afs_wf_retyped(wf, "video/mp4", &rt);
  CHECK(!rt.changed);
  upload(wf, "000000000000000000000052", &o);
  afs_wf_retyped(wf, "image/png", &rt);
  CHECK(rt.changed && rt.ran && !rt.stale_id[0]);
  CHECK(wf->state == AFS_W_QUEUED && wf->dirty);
  afs_staging_unref(st, wf);
}

/* A file adopted from a journal whose record is already `uploaded`: nothing to send,
 * unless it was written while the record was being read (then those bytes go up on a
 * new record, never lost under the old one's `uploaded`). */
static void test_resumed(void) {
  struct afs_error err = {0};
  bool resumed = false;
  struct afs_wfile *wf = mk("resumed.txt");
  afs_wf_record_made(wf, "000000000000000000000061");
  pthread_mutex_lock(&wf->mu);
  wf->state = AFS_W_QUEUED; /* as staging_resume adopts it */
  wf->resumed = true;
  pthread_mutex_unlock(&wf->mu);
  CHECK(afs_wf_attempt_claim(wf, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_GO);
  CHECK(resumed);
  CHECK(afs_wf_resume_uploaded(wf, true));
  CHECK(wf->state == AFS_W_UPLOADED && !wf->dirty && wf->record_used);
  afs_wf_resume_settled(wf, false, NULL);
  CHECK(!wf->busy);

  struct afs_wfile *w2 = mk("resumed2.txt");
  afs_wf_record_made(w2, "000000000000000000000062");
  pthread_mutex_lock(&w2->mu);
  w2->state = AFS_W_QUEUED;
  w2->resumed = true;
  pthread_mutex_unlock(&w2->mu);
  CHECK(afs_wf_attempt_claim(w2, afs_monotonic_ms() + 1000, &resumed, &err) == AFS_WF_GO);
  afs_wf_written(w2); /* while the record is read */
  CHECK(!afs_wf_resume_uploaded(w2, true));
  CHECK(w2->state == AFS_W_WRITING && w2->dirty && w2->record_used);
  struct afs_wf_attempt a;
  afs_wf_attempt_start(w2, &a);
  free(a.caption);
  CHECK(a.need_record);
  afs_staging_unref(st, wf);
  afs_staging_unref(st, w2);
}

int main(void) {
  char dir[] = "/tmp/test_wfile.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  struct afs_error err = {0};
  st = afs_staging_new(dir, &err);
  CHECK(st != NULL);
  test_life();
  test_shown_belongs_to_one_version();
  test_written_during_upload();
  test_failures();
  test_unlinked_in_flight();
  test_retype();
  test_resumed();
  afs_staging_free(st);
  char cmd[64];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  TEST_MAIN_END();
}
