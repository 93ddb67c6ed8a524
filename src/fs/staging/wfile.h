/* The one owner of a written file's upload state: every change to a struct afs_wfile's
 * state, dirty, busy, shown, record_used, resumed, attempts, backoff, handle counts and
 * unlinked mark is an event here. Each event takes wf->mu itself (the caller holds no
 * lock of wf; st->mu may be held, as the lock order allows), applies one transition,
 * and returns what the caller has to do next. The I/O around an event (records, PUTs,
 * journals, dropping the staged copy) stays with the caller, outside every lock.
 *
 *   created/written --------> WRITING --last writer closes / queue--> QUEUED
 *   WRITING, QUEUED, RETRYING --attempt starts--> UPLOADING
 *   UPLOADING --ok--> UPLOADED (QUEUED or WRITING when written meanwhile)
 *             --transient failure--> RETRYING (backoff) --permanent--> FAILED
 *   UPLOADED --record completed--> COMPLETED --catalog shows this asset--> shown
 *            --record error--> FAILED --record back at pending--> RETRYING (heal)
 *   any state but UPLOADING --written--> WRITING (a running attempt requeues at its end)
 *
 * `shown` belongs to the asset of wf->id: every new version starts unshown, so a staged
 * copy goes only once the catalog serves the version it holds.
 *
 * An entry's first state is set where it is made, before anyone else can see it:
 * WRITING for a new file (staging.c), QUEUED or UPLOADED for one adopted from a journal
 * (staging_resume.c). */
#ifndef ASSETFS_WFILE_H
#define ASSETFS_WFILE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "assetfs/cosync.h"
#include "assetfs/error.h"
#include "staging/staging.h"

/* ---- handles (FUSE open/release) ---- */

void afs_wf_opened(struct afs_wfile *wf, bool writable);

struct afs_wf_closing {
  bool queue; /* the last writer closed dirty data: queue it for upload */
  bool drop;  /* nobody holds it and its version is completed and shown: drop the copy */
  char id[AFS_OID_HEX];
};
void afs_wf_closed(struct afs_wfile *wf, bool writable, struct afs_wf_closing *out);

/* ---- the data and the name ---- */

/* The bytes changed (write, truncate). */
void afs_wf_written(struct afs_wfile *wf);
/* Closed and on disk: WRITING with dirty data becomes QUEUED. */
void afs_wf_queue(struct afs_wfile *wf);

struct afs_wf_retype {
  bool changed;               /* the content type was changed to the new one */
  bool ran;                   /* an upload ran under the old type: upload again */
  char stale_id[AFS_OID_HEX]; /* a record made for the old type, unused: to delete ("" if none) */
  char old_type[128];         /* for the log */
};
/* Renamed to a name of content type ct. */
void afs_wf_retyped(struct afs_wfile *wf, const char *ct, struct afs_wf_retype *out);
/* Filled from an asset's bytes (copy-on-write at a retype): queued for upload. */
void afs_wf_restaged(struct afs_wfile *wf, int64_t mtime_ms, const char *caption);
/* Renamed (filePath changes): *id and *state as they were, for the record updates. */
void afs_wf_renamed(struct afs_wfile *wf, char id[AFS_OID_HEX], enum afs_wstate *state);

struct afs_wf_unlink {
  char id[AFS_OID_HEX];
  enum afs_wstate state;
  bool busy;    /* an attempt runs: it sees `unlinked` when it ends */
  bool release; /* the staged bytes were truncated: give their room back */
};
/* Removed by the user (unlink, or replaced by a rename). */
void afs_wf_unlinked(struct afs_wfile *wf, struct afs_wf_unlink *out);
/* A resumed journal's file was written again later at the same path: never uploaded. */
void afs_wf_superseded(struct afs_wfile *wf);

/* ---- one upload attempt (the pipeline) ---- */

enum afs_wf_claim {
  AFS_WF_GO,      /* claimed (busy): run the attempt; *resumed says to check the record */
  AFS_WF_NOTHING, /* nothing to upload: success */
  AFS_WF_FAILED,  /* refused for good earlier: *err is why */
  AFS_WF_BUSY,    /* an earlier attempt still runs past deadline_ms: *err set */
};
/* Waits (until deadline_ms, monotonic) for a running attempt to end, then claims wf. */
enum afs_wf_claim afs_wf_attempt_claim(struct afs_wfile *wf, int64_t deadline_ms, bool *resumed,
                                       struct afs_error *err);

/* A resumed file's record is past `uploaded` (record_said; else its asset is active):
 * nothing to send. False when the file was written since the claim: those bytes go up
 * on a new record (the old one is marked spent). */
bool afs_wf_resume_uploaded(struct afs_wfile *wf, bool record_said);
/* A resumed file's record is refused or gone: its next upload takes a new record. */
void afs_wf_resume_record_spent(struct afs_wfile *wf);
/* The resume check ended the claim without an upload; transient: *err, retried later. */
void afs_wf_resume_settled(struct afs_wfile *wf, bool transient, const struct afs_error *err);

struct afs_wf_attempt {
  bool need_record; /* no usable record: make one first */
  char content_type[128];
  char *caption; /* caller frees */
  int64_t mtime_ms;
  uint64_t name_seq;
  const char *staging_path; /* wf's; valid while the caller holds its reference */
  bool have_stat;
  struct stat st;
};
/* The claimed attempt starts: the bytes as they are now are what it uploads. */
void afs_wf_attempt_start(struct afs_wfile *wf, struct afs_wf_attempt *a);
/* The record was made: wf->id (attempts use it until it is spent). */
void afs_wf_record_made(struct afs_wfile *wf, const char *id);
/* Copies wf->id to id; false when wf was removed (unlinked or replaced). */
bool afs_wf_record_of(struct afs_wfile *wf, char id[AFS_OID_HEX]);
/* The current record cannot take another upload (gone, used, URLs expired). */
void afs_wf_record_spent(struct afs_wfile *wf);
/* `uploaded` was set with this name and mtime (the broker copies both). */
void afs_wf_uploaded_with(struct afs_wfile *wf, uint64_t name_seq, int64_t mtime_ms);

struct afs_wf_outcome {
  bool requeued; /* written again meanwhile and closed: queued again */
  bool retry;    /* failed transiently: RETRYING, due at wf->next_try_ms */
  bool orphan;   /* removed while it uploaded: its asset must go once completed */
  bool release;  /* removed: the staged bytes were truncated, give their room back */
};
/* The claimed attempt ended (ok, or failed with *err; permanent: not retried). */
void afs_wf_attempt_done(struct afs_wfile *wf, bool ok, const struct afs_error *err, bool permanent,
                         struct afs_wf_outcome *out);

/* ---- what the records say (the poller) ---- */

struct afs_wf_completion {
  int64_t mtime_ms;
  bool renamed; /* renamed after `uploaded`: the asset needs the new filePath */
  bool touched; /* utimens after `uploaded`: the asset needs the new mtime */
  bool unlinked;
  char *caption; /* caller frees */
};
/* Record id is completed. False when wf moved on (written again, or not this record). */
bool afs_wf_completed(struct afs_wfile *wf, const char *id, struct afs_wf_completion *out);
/* Record id was refused by the broker: FAILED. False when wf moved on. */
bool afs_wf_refused(struct afs_wfile *wf, const char *id);
/* Record id went back to pending/initialized after `uploaded` (an update the database
 * lost): upload again on the same record. False when not (yet) to be healed. */
bool afs_wf_regressed(struct afs_wfile *wf, const char *id, int64_t now_ms);
/* wf still waits for the broker to complete record id. */
bool afs_wf_waits_for(struct afs_wfile *wf, const char *id);
/* An orphan's record is gone: nothing of it left to watch. */
void afs_wf_orphan_settled(struct afs_wfile *wf);
/* The catalog serves asset id at wf's path: true when that is wf's completed version. */
bool afs_wf_shown(struct afs_wfile *wf, const char *id);

#endif
