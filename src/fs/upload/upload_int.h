/* Private to the upload module: upload.c (the per-file pipeline), upload_pool.c (the
 * uploader, its upload workers, unmount draining), upload_poll.c (polling uploaded
 * records until completed), upload_records.c (the MongoDB side of uploads and of
 * namespace changes). Locks: up->mu is a leaf; the staging locks are as in staging.h. */
#ifndef ASSETFS_UPLOAD_INT_H
#define ASSETFS_UPLOAD_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <bson/bson.h>

#include "assetfs/auth.h"
#include "assetfs/cosync.h"
#include "staging/wfile.h"
#include "upload/store.h"
#include "upload/upload.h"

struct afs_uploader {
  struct afs_staging *st;           /* the files it uploads */
  struct afs_catalog *cat;          /* told about completions, renames, captions */
  const struct afs_fs_options *opt; /* the mount's options */
  struct afs_db *db;                /* the records' database (NULL with another store) */
  struct afs_upload_store store;    /* the records (store.h): MongoDB, or a test's fake */
  pthread_t worker;
  bool worker_started;
  pthread_t *pool; /* upload workers: take QUEUED and due RETRYING files from q */
  int n_pool;
  pthread_mutex_t q_mu; /* the upload queue (upload_queue.c): q and every wf->in_queue;
                         * order q_mu -> wf->mu; never held with st->mu or mu */
  struct afs_wfile **q; /* files waiting for a worker, in arrival order, a ref each */
  size_t q_n, q_cap;
  pthread_mutex_t mu; /* protects stop, orphans, running, wake, pool_seq, the counters;
                       * leaf lock (never held with st->mu or a wf->mu) */
  pthread_cond_t cond;
  pthread_cond_t pool_cond; /* signalled when pool_seq changes (something was queued) */
  uint64_t pool_seq;
  int64_t n_completed; /* files completed since the mount */
  int64_t n_resumed;   /* files adopted from an earlier mount of the session */
  bool stop;
  bool wake;
  bool room_wanted;           /* a write waits for cache_max room: poll completions now */
  int running;                /* pipelines running now (flushes and the worker's) */
  struct afs_wfile **orphans; /* unlinked/replaced files whose asset must go once completed */
  size_t n_orphans, cap_orphans;
  int64_t sign_lag_ms;          /* upload_watch.c: moving average of the broker's
                                 * signing lag as seen by waiting files (under mu) */
  int64_t n_commands;           /* MongoDB commands of the upload path (atomic), */
  int64_t n_scans, n_scan_docs; /* of which session queries, and what they returned */
  int64_t c_next_ms;            /* upload_poll.c (its thread only): next query of the
                                 * session's uploaded records */
  /* multipart.c: the stream workers and their queue of parts. s_mu protects s_q, s_head,
   * s_n, s_cap and s_stop; a leaf lock (never held with a wf->mu). */
  pthread_mutex_t s_mu;
  pthread_cond_t s_cond;
  struct stream_task *s_q;
  size_t s_head, s_n, s_cap;
  bool s_stop;
  pthread_t *streams;
  int n_streams;
};

/* multipart.c: the stream workers (none with write-back or multipart_threshold=0). */
void afs_up_streams_start(struct afs_uploader *up);
void afs_up_streams_stop(struct afs_uploader *up);
/* Sends every part of record rec's multipart upload that the bucket does not hold as the
 * file (path, size bytes) is now, and fills m->mp_etags/mp_n (the caller frees
 * mp_etags). */
bool afs_up_mp_finish(struct afs_uploader *up, struct afs_wfile *wf, const char *rec,
                      const char *path, int64_t size, int64_t deadline_ms, struct meta *m,
                      struct afs_error *err);

/* upload_signed.c: with key_file, requests are signed (auth.h) and asset changes are
 * function calls the broker carries out. */
bool afs_up_signed(const struct afs_uploader *up);
/* Signs doc as request `kind` and appends the signature to it. */
bool afs_up_sign(struct afs_uploader *up, enum afs_auth_req kind, bson_t *doc,
                 struct afs_error *err);
/* Signs {_id: id, uid, fields...} as request `kind`; the signature goes into set (the
 * update that writes those fields). */
bool afs_up_sign_into(struct afs_uploader *up, enum afs_auth_req kind, const bson_oid_t *id,
                      const bson_t *fields, bson_t *set, struct afs_error *err);
/* CosyncRemoveAsset; an asset already gone counts as removed. at (may be NULL): only
 * while the asset is at that filePath in partition. */
bool afs_up_call_remove(struct afs_uploader *up, const char *id, const char *partition,
                        const char *at, struct afs_error *err);
/* AssetfsRenameAsset [id, from, to, replace]. */
bool afs_up_call_rename(struct afs_uploader *up, const char *id, const char *from, const char *to,
                        const char *replace, struct afs_error *err);
bool afs_up_call_mtime(struct afs_uploader *up, const char *id, int64_t mtime_ms,
                       struct afs_error *err);
/* AssetfsSignParts, as the MongoDB store's sign_parts (ctx: the uploader). */
bool afs_up_call_sign_parts(void *ctx, const char *id, int first, int count, char **upload_id,
                            char ***urls, int *n, long *expires_s, struct afs_error *err);
bool afs_up_call_copy_parts(void *ctx, const char *id, const char *src, const int *part,
                            const int64_t *off, const int64_t *len, int n, char (*etag)[130],
                            struct afs_error *err);

/* Rename (signed_set_file_path) and removal at a path (signed_delete_matching) as a
 * signing mount does them: the store's set_file_path and asset_delete_at with a key. */
bool afs_up_signed_set_file_path(struct afs_uploader *up, const char *id, const char *file_path,
                                 bool upload, bool asset, struct afs_error *err);
bool afs_up_signed_delete_matching(struct afs_uploader *up, const bson_t *filter,
                                   const char *partition, const char *file_path,
                                   struct afs_error *err);

/* upload_records.c: helpers the signing code shares. Record id of coll, whole, into *doc
 * (caller destroys; empty when !*found); $set on record id of coll (*matched may be NULL);
 * the ObjectId _ids (hex) of the records of coll filter finds (*ids: free). */
bool afs_up_read_by_id(struct afs_uploader *up, const char *coll, const char *id, bson_t *doc,
                       bool *found, struct afs_error *err);
bool afs_up_set_by_id(struct afs_uploader *up, const char *coll, const char *id, const bson_t *set,
                      int64_t *matched, struct afs_error *err);
bool afs_up_find_ids(struct afs_uploader *up, const char *coll, const bson_t *filter,
                     char (**ids)[AFS_OID_HEX], size_t *n, struct afs_error *err);

/* upload.c: one upload of wf's current data. deadline_ms bounds the waits (monotonic).
 * Returns true when "uploaded" is set (or nothing needed uploading); on failure sets
 * the file's next state (retrying with a backoff, or error) and returns false + err. */
bool afs_up_run_pipeline(struct afs_uploader *up, struct afs_wfile *wf, int64_t deadline_ms,
                         struct afs_error *err);
/* "partition/filePath" of wf, for messages (caller frees). */
char *afs_up_label(struct afs_uploader *up, struct afs_wfile *wf);

/* upload_queue.c: the files waiting for an upload worker. */
#define AFS_UP_RECORD_BATCH 64 /* pending records made in one insert */
/* wf entered QUEUED or RETRYING: into the queue (once; with a reference of the queue's)
 * and one worker woken. */
void afs_up_queue_push(struct afs_uploader *up, struct afs_wfile *wf);
/* The next due file, claimed (wf->claimed), out of the queue, with the queue's reference
 * (the caller unclaims and unrefs it); NULL if none is due. *next_due_ms: the earliest
 * retry still to come (INT64_MAX if none). Drops entries that can no longer be due. */
struct afs_wfile *afs_up_queue_pick(struct afs_uploader *up, int64_t now, int64_t *next_due_ms);
/* Claims up to max queued files other than `except` that have no record yet, for one
 * insert of their records; they stay in the queue (which keeps them alive) until
 * unclaimed. Returns how many are in out. */
int afs_up_queue_claim_unrecorded(struct afs_uploader *up, const struct afs_wfile *except,
                                  struct afs_wfile **out, int max);
void afs_up_queue_unclaim(struct afs_wfile *wf);
size_t afs_up_queue_length(struct afs_uploader *up);
/* Empties the queue (unmount, after the workers stopped). */
void afs_up_queue_free(struct afs_uploader *up);

/* upload_pool.c: wakes the upload workers (something was queued or is due) and the
 * polling thread. */
void afs_up_pool_kick(struct afs_uploader *up);
/* Wakes one upload worker (one file was queued): every wake-up scans the staging table,
 * and with a burst of closes a broadcast per file would scan it workers x files times. */
void afs_up_pool_signal(struct afs_uploader *up);
/* Wakes every upload worker, not the polling thread (retries came due). */
void afs_up_pool_wake_all(struct afs_uploader *up);
/* Wakes the polling thread (a file was marked uploaded); passes stay MIN_PASS_MS apart. */
void afs_up_poll_wake(struct afs_uploader *up);

/* upload_records.c: the MongoDB store (ctx: the uploader, for its database, options
 * and command counters). */
extern const struct afs_upload_store_ops afs_upload_store_mongo;

/* upload_poll.c: the polling thread (arg: the uploader). */
void *afs_up_poll_main(void *arg);
/* Watches wf's record (with a reference of its own) until its asset exists, then marks
 * the asset deleted: wf was removed or replaced after its record was used. */
void afs_up_add_orphan(struct afs_uploader *up, struct afs_wfile *wf);

/* True once afs_uploader_free started stopping the worker. */
bool afs_upload_stopping(struct afs_uploader *up);

/* Marks upload record `id` abandoned: its file was removed or replaced through the mount
 * while the upload was in flight. The broker then makes no active asset of it and
 * supersedes nothing with it (complete_int.h), so whatever the user moves to that path
 * next is safe. Must be written before anything else moves there. */
bool afs_rec_abandon(struct afs_uploader *up, const char *id, struct afs_error *err);

/* Deletes the upload record if nobody uploaded to it yet; *gone: deleted or absent. */
bool afs_rec_delete_unused(struct afs_uploader *up, const char *id, bool *gone,
                           struct afs_error *err);
/* A record nobody may upload to (its file was removed): deleted while unused, otherwise
 * marked abandoned, so that the broker neither supersedes with it nor leaves its asset
 * active. Failures are logged. */
void afs_rec_forget(struct afs_uploader *up, const char *id);
/* upload_watch.c: waits until the broker signed the record, polling it by _id (no
 * change streams) from a learnt estimate of the broker's lag. AFS_E_DEADLINE past
 * deadline_ms (monotonic); AFS_E_RECORD_GONE when the record is gone or
 * already used (the caller makes a new one); AFS_E_BROKER_REFUSED when the broker refused it;
 * AFS_E_UNMOUNTING when unmounting. rs filled on success (free with afs_rec_state_free). */
bool afs_rec_wait_initialized(struct afs_uploader *up, const char *id, int64_t deadline_ms,
                              struct record_state *rs, struct afs_error *err);
/* One read of the record by _id (rs->exists false when there is none). */
bool afs_rec_fetch(struct afs_uploader *up, const char *id, struct record_state *rs,
                   struct afs_error *err);
/* Every upload record of this mount's session in status, each id passed to fn. One
 * query on {sessionId, status}, which an index answers: one round trip however many
 * files wait on the broker. */
bool afs_rec_session_scan(struct afs_uploader *up, const char *status,
                          void (*fn)(void *ctx, const char *id), void *ctx, struct afs_error *err);
/* status "uploaded" with the metadata (AFS_E_RECORD_GONE if the record is gone). */
bool afs_rec_set_uploaded(struct afs_uploader *up, const char *id, const struct meta *m,
                          const char *caption, int64_t mtime, struct afs_error *err);
/* Whether the CosyncAsset with this _id exists and is active (*active). */
bool afs_rec_asset_active(struct afs_uploader *up, const char *id, bool *active,
                          struct afs_error *err);
/* Statuses of upload records by id: out[i] AFS_US_NONE when not found. */
bool afs_rec_batch_status(struct afs_uploader *up, char (*ids)[AFS_OID_HEX], int n,
                          enum afs_upload_status *out);

#endif
