/* Waiting for the broker's signatures. A file's upload cannot start before the broker
 * has moved its record from pending to initialized (with presigned URLs); change streams
 * are not everywhere (not on FerretDB), so the record is polled by _id (the cheapest
 * query there is).
 * How soon to look is learnt: the first look comes after most of the time recent
 * records took to be signed (a moving average), and looks then come quickly, so that a
 * burst of files waiting seconds for the broker costs about two reads each instead of
 * a dozen, and a lone file still goes on within milliseconds of being signed. (A shared
 * query for the whole session's initialized records was tried: its result grows with
 * the burst, and is decoded whole on every query.) */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/http_put.h" /* afs_monotonic_ms */
#include "upload/upload_int.h"

#define FIRST_MIN_MS 5
#define FIRST_MAX_MS 2000
#define STEP_MAX_MS 250

/* The verdict of one look: 1 signed (rs kept), 0 still pending, -1 failed for good. */
static int look(struct afs_uploader *up, const char *id, struct record_state *rs,
                struct afs_error *err) {
  if (!afs_rec_fetch(up, id, rs, err))
    return 0; /* the database's trouble: keep trying until the deadline */
  int r = 0;
  if (!rs->exists)
    r = -1, afs_error_set(err, AFS_E_RECORD_GONE, "the upload record %s disappeared", id);
  else if (rs->status == AFS_US_INITIALIZED)
    r = rs->write_url[AFS_PART_ORIGINAL]
            ? 1
            : (afs_error_set(err, AFS_E_BROKER_REFUSED,
                             "the broker initialized %s without a writeUrl", id),
               -1);
  else if (rs->status == AFS_US_ERROR)
    r = -1, afs_error_set(err, AFS_E_BROKER_REFUSED, "the broker refused the upload: %s",
                          rs->error[0] ? rs->error : "(no reason given)");
  else if (rs->status != AFS_US_PENDING)
    r = -1, afs_error_set(err, AFS_E_RECORD_GONE, "the upload record %s is already %s", id,
                          afs_upload_status_name(rs->status));
  if (r != 1)
    afs_rec_state_free(rs);
  return r;
}

/* How long a file waited for its signature: a moving average of it is the broker's lag
 * that the next waits start from. */
static void learn(struct afs_uploader *up, int64_t waited_ms) {
  pthread_mutex_lock(&up->mu);
  up->sign_lag_ms = up->sign_lag_ms ? (up->sign_lag_ms * 7 + waited_ms) / 8 : waited_ms;
  pthread_mutex_unlock(&up->mu);
}

static bool not_signed(const char *id, struct afs_error *err) {
  return afs_error_set(err, AFS_E_DEADLINE,
                       "the broker did not sign upload %s in time (is assetfs-broker running?)",
                       id);
}

bool afs_rec_wait_initialized(struct afs_uploader *up, const char *id, int64_t deadline_ms,
                              struct record_state *rs, struct afs_error *err) {
  int64_t t0 = afs_monotonic_ms();
  pthread_mutex_lock(&up->mu);
  long first = (long)(up->sign_lag_ms * 3 / 4);
  pthread_mutex_unlock(&up->mu);
  /* A record made long before this wait (write-back queues) may be signed already. */
  char hex[9];
  memcpy(hex, id, 8);
  hex[8] = '\0';
  int64_t age_ms = (int64_t)time(NULL) * 1000 - (int64_t)strtoul(hex, NULL, 16) * 1000;
  if (age_ms > 1000)
    first -= (long)(age_ms - 1000);
  first = first < FIRST_MIN_MS ? FIRST_MIN_MS : first > FIRST_MAX_MS ? FIRST_MAX_MS : first;
  long step = 5;
  long wait_ms = first;
  int looks = 0;
  memset(rs, 0, sizeof *rs);
  for (;;) {
    if (afs_upload_stopping(up))
      return afs_error_set(err, AFS_E_UNMOUNTING, "unmounting");
    if (afs_monotonic_ms() + wait_ms >= deadline_ms)
      return not_signed(id, err);
    usleep((useconds_t)wait_ms * 1000);
    looks++;
    int r = look(up, id, rs, err);
    if (r > 0) {
      int64_t waited = afs_monotonic_ms() - t0;
      /* Signed at the first look: it may have been much sooner; learn from a guess. */
      learn(up, looks == 1 ? waited / 2 : waited);
      return true;
    }
    if (r < 0)
      return false;
    if (afs_monotonic_ms() >= deadline_ms) /* a late wake-up: the same reason */
      return not_signed(id, err);
    wait_ms = step;
    step = step * 3 / 2 + 1;
    if (step > STEP_MAX_MS)
      step = STEP_MAX_MS;
  }
}
