/* State changes as atomic conditional updates with leases, so several brokers can share
 * one database and a broker that dies mid-way loses nothing.
 *
 * A record is claimable when it matches the caller's filter and has no live lease
 * (leaseUntil missing, not a date, or in the past). Claiming writes a unique token into
 * `leaseOwner` and a deadline into `leaseUntil`; every later write is conditional on the
 * token, so a broker whose lease expired (and whose work was taken over) cannot write
 * over its successor. Finishing clears both fields. Works on FerretDB: plain
 * find/updateMany/updateOne, no transactions, no $currentDate.
 */
#ifndef ASSETFS_LEASE_H
#define ASSETFS_LEASE_H

#include <mongoc/mongoc.h>
#include <stdbool.h>

#include "assetfs/clock.h"
#include "assetfs/error.h"

#define AFS_LEASE_TOKEN_MAX 96

struct afs_lease_batch {
  bson_t **docs; /* the claimed records, as read after the claim */
  size_t n;
  char token[AFS_LEASE_TOKEN_MAX];
};

/* Sets the broker identity used in tokens ("host:pid:random"); call once at start-up. */
void afs_lease_set_owner(const char *owner);
const char *afs_lease_owner(void);

/* Appends {$or: [{leaseUntil: {$not: {$type: "date"}}}, {leaseUntil: {$lt: now}}]}'s
 * clause to `filter` (as key "$or"; the filter must not already use "$or"). */
void afs_lease_append_claimable(bson_t *filter, int64_t now_ms);

/* Claims up to `limit` records matching `filter`, oldest _id first, for lease_ms.
 * 0 claimed is success with out->n == 0. Free with afs_lease_batch_free.
 * Round trips: limit 1 is one findAndModify (claims and reads). Otherwise one query for
 * candidates, then nothing more when there are none, one findAndModify for a single
 * candidate, or an updateMany (plus a read of what this claim owns only when it did not
 * get every candidate: another broker was quicker). Plain top-level
 * equalities in `filter` let FerretDB push the query down to its backend. */
bool afs_lease_claim(mongoc_collection_t *coll, const bson_t *filter, int limit, long lease_ms,
                     struct afs_lease_batch *out, struct afs_error *err);
void afs_lease_batch_free(struct afs_lease_batch *b);

/* The _ids of up to `limit` claimable records matching `filter`, in natural (about
 * insertion) order, unsorted because FerretDB sorts every match before the limit,
 * without claiming them (one query): *ids (caller frees with afs_lease_ids_free) and *n. Whoever
 * works on one claims it with afs_lease_claim_id, so a burst is claimed by many threads
 * at once instead of one multi-record update that FerretDB answers with a scan. */
bool afs_lease_candidates(mongoc_collection_t *coll, const bson_t *filter, int limit,
                          bson_value_t **ids, size_t *n, struct afs_error *err);
void afs_lease_ids_free(bson_value_t *ids, size_t n);

/* Up to `limit` claimable records matching `filter`, whole, in natural order (as
 * afs_lease_candidates), without claiming them (one query): *docs (caller frees with
 * afs_lease_docs_free) and *n. For work that needs no lease because doing it twice is
 * harmless and its finish is conditional on the record's state (initialization: see
 * afs_lease_finish_from with a NULL token), this read is the only command before that
 * finish. */
bool afs_lease_peek(mongoc_collection_t *coll, const bson_t *filter, int limit, bson_t ***docs,
                    size_t *n, struct afs_error *err);
void afs_lease_docs_free(bson_t **docs, size_t n);

/* Claims record `id` if it still matches `filter` and is claimable, and reads it, in one
 * findAndModify by _id: out->n is 1 with the record, or 0 when another broker has it or
 * it moved on. */
bool afs_lease_claim_id(mongoc_collection_t *coll, const bson_t *filter, const bson_value_t *id,
                        long lease_ms, struct afs_lease_batch *out, struct afs_error *err);

/* Ends the lease on record `id` held under `token`, applying $set `set` (may be NULL) and
 * $unset of the fields in `unset` (may be NULL; values ignored). Returns 1 if applied,
 * 0 if the lease was lost (someone else owns the record now), -1 on error. */
int afs_lease_finish(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                     const bson_t *set, const bson_t *unset, struct afs_error *err);

/* Like afs_lease_finish, applied only while the record's status is still `status`: a
 * record that a stale read let us claim after it moved on (FerretDB's lost updates; a
 * duplicate claim of a record another worker just finished, whose client has already
 * marked it uploaded) is left as it is, and its lease is released. Returns 1 applied, 0
 * not (lease lost or status moved on), -1 on error.
 * token NULL: the record was read without a claim (afs_lease_peek); the finish applies
 * while it is in `status` and nobody holds a live lease on it (a broker that claimed it,
 * e.g. to abandon it as stale, wins), and there is nothing to release. */
int afs_lease_finish_from(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                          const char *status, const bson_t *set, const bson_t *unset,
                          struct afs_error *err);

/* Like afs_lease_finish, in one findAndModify that also returns the record as it is
 * after the update in *after (caller destroys; left empty when rc != 1), so a caller can
 * see what a client changed while it held the lease without another round trip. */
int afs_lease_finish_doc(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                         const bson_t *set, const bson_t *unset, bson_t *after,
                         struct afs_error *err);

/* Extends the lease on record `id` held under `token` by lease_ms from now, only while
 * the record is still in `status` (NULL: any), in one findAndModify that returns the
 * record as it is now in *after (caller destroys; empty unless 1). Work that writes
 * somewhere else on the record's behalf (the asset of an upload) renews first, so that
 * write happens while the record is still ours and still in that state: a broker
 * whose lease ran out during slow work learns it here and writes nothing. Returns 1
 * renewed, 0 lost (or status moved on; NULL token: never claimed), -1 on error. */
int afs_lease_renew_doc(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                        const char *status, long lease_ms, bson_t *after, struct afs_error *err);

/* Gives the record back without changing its state; nobody claims it again for
 * retry_ms (0 = at once). Same return values as afs_lease_finish; a NULL token (never
 * claimed) sends nothing and returns 0. */
int afs_lease_release(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                      long retry_ms, struct afs_error *err);

/* For a record read without a claim: nobody claims it for retry_ms, if it is still in
 * `status` and nobody's lease on it is live (a transient failure; the unclaimed
 * counterpart of afs_lease_release with retry_ms). Same return values. */
int afs_lease_defer(mongoc_collection_t *coll, const bson_value_t *id, const char *status,
                    long retry_ms, struct afs_error *err);

/* Deletes record `id` if still held under `token`. Same return values. */
int afs_lease_delete(mongoc_collection_t *coll, const bson_value_t *id, const char *token,
                     struct afs_error *err);

#endif
