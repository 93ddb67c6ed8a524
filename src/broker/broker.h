/* assetfs-broker internals shared by its modules (private to src/broker): the process
 * context, the handlers of each state change, and the helpers they share: handlers.c
 * (collections, failing a record, warnings, test pauses), urls.c, seal.c, objects.c
 * (whose objects, removal), asset_keys.c, key_claims.c.
 *
 * Flow: the dispatcher (dispatch.c) polls MongoDB with adaptive intervals, claims
 * batches of records under a lease (lease.h) and queues them; worker threads run the
 * handlers below, each of which ends the lease with a conditional update. Handlers
 * return AFS_DONE when the record moved on (or was given up), AFS_RETRY when a
 * transient failure (MongoDB or S3 unreachable) means it should be tried again later.
 */
#ifndef ASSETFS_BROKER_H
#define ASSETFS_BROKER_H

#include <mongoc/mongoc.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "assetfs/auth.h"
#include "assetfs/config.h"
#include "assetfs/db.h"
#include "assetfs/naming.h"
#include "assetfs/records.h"
#include "assetfs/s3.h"
#include "assetfs/sigv4.h"

#define AFS_READ_HOURS_DEFAULT 24.0
#define AFS_READ_HOURS_CAP 168.0       /* S3's 7-day presign limit, as Cosync */
#define AFS_READ_HOURS_ABSURD 876000.0 /* above this (100 years) it is an error, not a cap */
#define AFS_RETRY_MS 2000              /* a record that met a transient failure waits this */
/* An upload whose ObjectId _id is further ahead of the broker's clock than this is
 * refused (its keys' timestamp would be in the future: a client clock that is wrong). */
#define AFS_ID_AHEAD_MAX_MS (10 * 60 * 1000)
struct afs_broker {
  struct afs_config cfg;
  struct afs_db db;
  struct afs_s3_target s3;  /* presigning */
  struct afs_s3_client s3c; /* HEAD/DELETE; its target is a copy of s3 */
  unsigned char seal_key[32];
  struct afs_authz *authz; /* auth=required: the clients (authz.c); NULL with auth=off */
  afs_auth_key *sign_key;  /* auth=required: signing_key_file, the broker's Ed25519 key */
  uint8_t sign_pub[AFS_AUTH_PUB_LEN]; /* its public half */
  int workers;                        /* worker threads */
  int batch;                          /* records claimed per poll */
  int poll_min_ms;                    /* poll interval right after work was found */
  int poll_max_ms;                    /* poll interval when idle */
  atomic_bool stop;
};

enum afs_outcome { AFS_DONE, AFS_RETRY };

struct afs_bstore; /* what handlers read and change: bstore.h */

/* ---- who may ask (authz.c); every check passes with auth=off (b->authz NULL) ---- */
/* Reads clients_file when auth=required; false (err) when it cannot be used. */
bool afs_authz_open(struct afs_broker *b, struct afs_error *err);
/* Reads clients_file again if it changed (always when force: SIGHUP). A file that does
 * not parse is reported and not applied. */
void afs_authz_reload(struct afs_broker *b, bool force);
void afs_authz_close(struct afs_broker *b);
/* Request `kind` in doc is signed by a key of uid, and uid may use each of
 * partitions[0..n). false with err (the reason for the record's `error`). */
bool afs_authz_check(struct afs_broker *b, enum afs_auth_req kind, const bson_t *doc,
                     const char *uid, const char *const *partitions, size_t n,
                     struct afs_error *err);
/* An upload record's own signature (AFS_REQ_UPLOAD) and both of its partitions; at_init
 * also that no asset has its _id (a record put back after completing). 1 allowed, 0
 * refused (err), -1 transient (err). */
int afs_authz_upload(struct afs_broker *b, struct afs_bstore *st, const struct afs_record *r,
                     bool at_init, struct afs_error *err);
/* The caller of a function may act on asset (its partition is one of the caller's);
 * false with EPERM in err. */
bool afs_authz_may_change(struct afs_broker *b, const char *caller, const struct afs_record *asset,
                          struct afs_error *err);
/* The function calls that change an asset for its client (asset_calls.c). */
bool afs_asset_call_known(const char *name);
/* Runs one of them on the call document; the answer goes to result's `result`. */
bool afs_asset_call(struct afs_broker *b, struct afs_bstore *st, const bson_t *call,
                    const char *name, const char *caller, bson_t *result, struct afs_error *err);
/* The broker's seal on an asset (bstore_sealed.c): signs `after` (the asset as it will
 * be) and appends assetfsSeal and the sealed copy (assetfsSealed) to set. */
#define AFS_F_SEALED_COPY "assetfsSealed"
bool afs_asset_seal_into(struct afs_broker *b, const bson_t *after, bson_t *set,
                         struct afs_error *err);
/* doc carries a valid seal of this broker's key. */
bool afs_asset_seal_ok(const struct afs_broker *b, const bson_t *doc);
/* uid may use partition. */
bool afs_authz_allows(struct afs_broker *b, const char *uid, const char *partition);

/* The broker's mark on an asset it made `deleted` (assetfsDeletedBy: an HMAC over its
 * _id). With auth=required the janitor purges only assets carrying a valid mark, so a
 * `deleted` status written by anyone else removes nothing. */
#define AFS_F_DELETED_BY "assetfsDeletedBy"
void afs_broker_deletion_mark(const struct afs_broker *b, const bson_value_t *id, char hex[65]);
bool afs_broker_deletion_mark_ok(const struct afs_broker *b, const bson_t *doc);
/* The broker's mark on the time it initialized an upload (assetfsInitMark: an HMAC over
 * _id and initializedAt): with auth=required a version's place in time is taken from
 * initializedAt only when it carries a valid mark, since nothing else protects it. */
#define AFS_F_INIT_MARK "assetfsInitMark"
void afs_broker_init_mark(const struct afs_broker *b, const bson_value_t *id, int64_t at_ms,
                          char hex[65]);
bool afs_broker_init_mark_ok(const struct afs_broker *b, const struct afs_record *r);
/* Appends the mark for asset id to an update's $set (one that makes it `deleted`). */
void afs_broker_append_deletion_mark(const struct afs_broker *b, const bson_value_t *id,
                                     bson_t *set);

/* What a valid upload record asks for: `rec` is the record as read (its strings point
 * into the document); keys are built deterministically from the record, so planning
 * twice gives the same keys. */
struct afs_upload_plan {
  const struct afs_record *rec;
  const bson_value_t *id; /* rec->id */
  const char *uid, *file_path, *content_type, *partition, *asset_partition;
  double hours;
  bool hours_defaulted;
  struct afs_keys keys;
};

/* The fields of an upload record the broker copies or builds keys from: an upload with
 * any of them bad is refused, naming the first (at initialization, so nothing is signed
 * for a record that could not complete). */
#define AFS_UPLOAD_FIELDS                                                                          \
  (AFS_RF_BIT(AFS_RF_UID) | AFS_RF_BIT(AFS_RF_FILE_PATH) | AFS_RF_BIT(AFS_RF_CONTENT_TYPE) |       \
   AFS_RF_BIT(AFS_RF_PARTITION) | AFS_RF_BIT(AFS_RF_ASSET_PARTITION) |                             \
   AFS_RF_BIT(AFS_RF_SESSION) | AFS_RF_BIT(AFS_RF_HOURS) |                                         \
   (((UINT64_C(1) << AFS_META_COUNT) - 1) << AFS_RF_META))

/* Validates an upload record and builds its keys; false with the reason in err (for
 * the record's `error`). Free with afs_upload_plan_free even on failure. */
bool afs_upload_plan(const struct afs_record *rec, struct afs_upload_plan *plan,
                     struct afs_error *err);
void afs_upload_plan_free(struct afs_upload_plan *plan);

/* afs_upload_plan, then the keys this record holds claims on (the keys a lost
 * initialization handed to the client), else freshly claimed keys (re-planned past keys
 * of other records, as at initialization). For completing a record that was never
 * (keepably) initialized. 1 planned (plan->keys set), 0 refused (err is the record's
 * reason), -1 transient (MongoDB or S3 unreachable; retry later). Free the plan with
 * afs_upload_plan_free whatever the result. */
int afs_upload_plan_claimed(struct afs_broker *b, struct afs_bstore *st,
                            const struct afs_record *rec, struct afs_upload_plan *plan,
                            struct afs_error *err);

/* Key claims (key_claims.c). A key is handed to a record only while a claim document
 * whose _id is the key names that record: _id uniqueness, which every MongoDB and
 * FerretDB enforces, makes two records' keys differ by construction. */
/* Claims every key of k for record `rec` (one insertMany, unordered). 1 all held by rec
 * (now or from before), 0 some key held by another record (the claims this call made are
 * released), -1 transient (err). */
int afs_key_claims_take(struct afs_bstore *st, const bson_value_t *rec, const struct afs_keys *k,
                        struct afs_error *err);
/* Releases rec's claims on the keys of k except those in keep (NULL-terminated, may be
 * NULL); best effort (one delete command; failures logged: a leftover claim is only a
 * small document that keeps one key out of use). */
void afs_key_claims_release(struct afs_bstore *st, const bson_value_t *rec,
                            const struct afs_keys *k, const char *const *keep);
/* The keys rec holds claims on: 1 with *keys (n of them, free with afs_key_claims_free),
 * 0 none, -1 transient (err). */
int afs_key_claims_held(struct afs_bstore *st, const bson_value_t *rec, char ***keys, size_t *n,
                        struct afs_error *err);
void afs_key_claims_free(char **keys, size_t n);
/* Releases the claims of a record whose objects were deleted: its _id's claims on the
 * keys afs_broker_asset_keys gives for it. Best effort. */
void afs_broker_release_claims(struct afs_broker *b, struct afs_bstore *st,
                               const struct afs_record *rec);

/* Handlers; `rec` is the claimed record as read once (afs_record_read), `token` its lease
 * token. afs_upload_init also takes a pending record read without a claim (token NULL;
 * see upload_init.c). */
enum afs_outcome afs_upload_init(struct afs_broker *b, struct afs_bstore *st,
                                 const struct afs_record *rec, const char *token);
enum afs_outcome afs_upload_complete(struct afs_broker *b, struct afs_bstore *st,
                                     const struct afs_record *rec, const char *token);
enum afs_outcome afs_upload_stale(struct afs_broker *b, struct afs_bstore *st,
                                  const struct afs_record *rec, const char *token);
enum afs_outcome afs_asset_purge(struct afs_broker *b, struct afs_bstore *st,
                                 const struct afs_record *rec, const char *token);
/* Deletes answered (done/error) CosyncFunctionCall records older than
 * call_keep_seconds; failures are logged (the next round retries). */
void afs_calls_purge(struct afs_broker *b, mongoc_client_t *c);
/* auth=required: checks the seals of the n assets after *from (by _id; from the start when
 * EOD, and again from the start after the last), restoring tampered ones from their
 * sealed copies; *from moves on. Failures are logged (the next round goes on). */
void afs_assets_scrub(struct afs_broker *b, mongoc_client_t *c, bson_value_t *from, int n);

/* multipart.c. AssetfsSignParts: the answer goes to result's `result`. */
bool afs_mp_sign_call(struct afs_broker *b, struct afs_bstore *st, const bson_t *call,
                      const char *caller, bson_t *result, struct afs_error *err);
/* AssetfsCopyParts: the parts' ETags go to result's `result`. */
bool afs_mp_copy_call(struct afs_broker *b, struct afs_bstore *st, const bson_t *call,
                      const char *caller, bson_t *result, struct afs_error *err);
enum afs_mp_result {
  AFS_MP_NONE,   /* not a multipart upload (or the client went back to one PUT) */
  AFS_MP_DONE,   /* the parts are assembled at the key */
  AFS_MP_RETRY,  /* S3 away: give the record back */
  AFS_MP_FAILED, /* the parts cannot make the object: *why (the upload was aborted) */
};
/* Completion: assembles the parts rec lists at key (ids: the record's id for messages).
 * etag (130 bytes): the assembled object's ETag ("" when S3 did not say). */
enum afs_mp_result afs_mp_assemble(struct afs_bstore *st, const struct afs_record *rec,
                                   const char *key, const char *ids, char *etag, char *why,
                                   size_t why_len);
/* The janitor: aborts multipart uploads older than multipart_grace_seconds that no upload
 * record wants any more (gone, completed, refused, or using another one). */
void afs_mp_sweep(struct afs_broker *b, mongoc_client_t *c);
/* A CosyncFunctionCall (functions.c), through the record store (bstore.h). */
enum afs_outcome afs_function_call(struct afs_broker *b, struct afs_bstore *st, const bson_t *doc,
                                   const char *token);

/* Ends the lease of upload record `id` with status "error" and `why` as its error
 * (token NULL: a pending record read without a claim, failed only while still pending
 * and unleased). AFS_RETRY when MongoDB could not be written. */
enum afs_outcome afs_upload_fail(struct afs_bstore *st, const bson_value_t *id, const char *token,
                                 const char *why);

/* Read URL of KEY: public (unsigned, under public_base_url or the plain object URL) when
 * hours == 0, else presigned GET valid hours (capped). Caller frees. */
char *afs_broker_read_url(struct afs_broker *b, const char *key, double hours,
                          struct afs_error *err);
/* Presigned PUT of KEY with content_type signed (NULL: unsigned type). Caller frees. */
char *afs_broker_write_url(struct afs_broker *b, const char *key, const char *content_type,
                           struct afs_error *err);
/* Seconds a read URL for `hours` lasts (1..604800). */
long afs_broker_read_seconds(double hours);

/* HMAC over the fields that fix where a record's objects live (_id, uid, path,
 * contentType, expirationHours), stored as `brokerSeal` when the broker sets them, so a
 * client that edits them afterwards cannot make the broker verify or delete another
 * user's objects. hex: 65 bytes. */
void afs_broker_seal(const struct afs_broker *b, const bson_value_t *id, const char *uid,
                     const char *path, const char *content_type, double hours, char hex[65]);
/* true if the record carries a valid seal for its current fields. */
bool afs_broker_seal_ok(const struct afs_broker *b, const struct afs_record *rec);

/* true if the record's path may be acted on: a valid seal, or, without a seal (records
 * made by Cosync itself), a path under "<uid>/" or "public/<uid>/". */
bool afs_broker_path_trusted(const struct afs_broker *b, const struct afs_record *rec);

/* Keys of the objects of an existing record with a `path` (false without one; NULL
 * entries where a part does not apply). Sealed records: from `path` by our naming.
 * Unsealed records under their uid's prefix (made by Cosync): the cuts' and preview's
 * keys from their stored URLs when those name a key under the same uid prefix (Cosync's
 * "-videopreview-<ts>-.png" and "uid//dir" keys), else by naming. The caller checks that
 * the record is trusted (afs_broker_path_trusted). Free with afs_keys_free. */
bool afs_broker_asset_keys(const struct afs_broker *b, const struct afs_record *rec,
                           struct afs_keys *out);

/* Deletes every object of an asset/upload record whose `path` is set (original, cuts,
 * preview). Refuses (false, AFS_E_UNTRUSTED) when the record's seal is invalid, or, for records
 * without a seal (made by Cosync), when path is outside "<uid>/" and "public/<uid>/".
 * Keys in `keep` (NULL-terminated, may be NULL) are left alone. false with a transient
 * error (EAGAIN/EHOSTUNREACH) when S3 failed. */
bool afs_broker_delete_objects(struct afs_broker *b, struct afs_bstore *st,
                               const struct afs_record *rec, const char *const *keep,
                               struct afs_error *err);

/* Deletes the keys of k (NULL entries skipped, keys in `keep` left alone) in one
 * DeleteObjects request. Missing objects count as deleted; false with err otherwise
 * (afs_s3_error_transient(err) tells an outage from a refusal). */
bool afs_broker_delete_keys(struct afs_bstore *st, const struct afs_keys *k,
                            const char *const *keep, struct afs_error *err);

/* True at most once per 10 s across the process: transient-failure warnings (S3 or
 * MongoDB away) are logged at warn level that often, the rest at debug, so an outage
 * does not flood the log with one line per record per retry. */
bool afs_broker_warn_due(void);
#define afs_transient(...)                                                                         \
  afs_log(afs_broker_warn_due() ? AFS_LOG_WARN : AFS_LOG_DEBUG, __VA_ARGS__)

/* True if an asset record other than `id` (NULL: any) has `path` as its key, or when
 * that cannot be told (MongoDB error): its objects must then be kept. */
bool afs_broker_path_shared(struct afs_bstore *st, const bson_value_t *id, const char *path);

/* The record's `path` under the one rule every reader of it follows: a string of
 * 1..AFS_KEY_MAX bytes (S3's key limit: no object can live at a longer key). 1 with
 * *path set (points into the document), 0 when absent or empty, -1 when present but not
 * a valid key (wrong type, too long, NUL, bad UTF-8). */
int afs_broker_record_path(const struct afs_record *rec, const char **path);

/* TEST ONLY: afs_test_pause (test_pause.h, variable ASSETFS_BROKER_TEST_PAUSE) with the
 * record's id. Points: init_claimed, complete_claimed, complete_checked,
 * complete_upserted. */
void afs_broker_test_pause(const char *point, const bson_value_t *id);

/* Counting of the MongoDB commands sent (dbstats.c): install on the pool before any
 * client is popped; worker threads mark themselves so claims and handlers are counted
 * apart; the log line at stop gives the totals since start. */
bool afs_broker_dbstats_install(mongoc_client_pool_t *pool);
void afs_broker_dbstats_role(bool worker);
void afs_broker_dbstats_log(void);
/* Commands the calling thread has sent so far; a claim's cost (its commands) and what it
 * found, to tell the round trips per record from those of idle polling. */
long long afs_broker_dbstats_sent(void);
void afs_broker_dbstats_claim(long long cmds, int found);

/* Collection helper: caller destroys. */
mongoc_collection_t *afs_broker_coll(struct afs_broker *b, mongoc_client_t *c, const char *name);

/* Runs the dispatcher and workers until b->stop; returns the exit status. */
int afs_broker_run(struct afs_broker *b);

/* True if KEY is "<uid>/..." or "public/<uid>/..." with no empty, "." or ".." component:
 * a key that names one object under the uid's prefix on any S3 and any HTTP client.
 * Every key the broker signs or deletes for an unsealed record must pass this. */
bool afs_broker_key_confined(const char *key, const char *uid);

#endif
